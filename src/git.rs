//! Facts about a project's repository, through git2 (never the `git` CLI):
//! opening it with errors a user can act on, and its fingerprint.
//!
//! Architecture invariant: nothing here writes to the repository. Status is
//! computed without refreshing the index, so even `git status`'s index
//! rewrite does not happen.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use git2::{ErrorCode, ObjectType, Oid, Repository, RepositoryOpenFlags, Status, StatusOptions};

/// Files above this size are fingerprinted by size and mtime, not content.
const HASH_LIMIT: u64 = 1 << 20;

/// Open the work tree at `dir` (its top level: no search upwards).
pub fn open(dir: &Path) -> anyhow::Result<Repository> {
    let none: [&std::ffi::OsStr; 0] = [];
    match Repository::open_ext(dir, RepositoryOpenFlags::NO_SEARCH, none) {
        Ok(repo) if repo.is_bare() => anyhow::bail!(
            "{} is a bare repository; configure the path of a checkout (work tree)",
            dir.display()
        ),
        Ok(repo) => Ok(repo),
        Err(e) if e.code() == ErrorCode::NotFound => anyhow::bail!(
            "{} is not the top of a git work tree; run `git init` there, or point [[project]] path at the repository's top directory",
            dir.display()
        ),
        Err(e) if e.code() == ErrorCode::Owner => {
            use std::os::unix::fs::MetadataExt;
            let owner = std::fs::metadata(dir).map(|m| m.uid()).unwrap_or(u32::MAX);
            // SAFETY: getuid cannot fail.
            let me = unsafe { libc::getuid() };
            anyhow::bail!(
                "git refuses {}: it belongs to uid {owner} but PiMainteno runs as uid {me} (\"dubious ownership\"); run PiMainteno as the owner ([service] user = \"...\" in the configuration) or add the path to git's safe.directory",
                dir.display()
            )
        }
        Err(e) => {
            Err(e).with_context(|| format!("cannot open the git repository at {}", dir.display()))
        }
    }
}

/// What identifies the state of a work tree for summarizing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// Hex digest of HEAD, the uncommitted changes and the salt.
    pub value: String,
    /// HEAD's commit, `None` before the first commit.
    pub head: Option<String>,
    /// Checked-out branch, `None` when detached or unborn.
    pub branch: Option<String>,
    /// Uncommitted changes (outside the excluded paths) exist.
    pub dirty: bool,
}

/// Fingerprint the work tree: HEAD, plus every changed or untracked file
/// (path, status and content) except `exclude` (e.g. the summary file, or
/// writing it would change the fingerprint), plus `salt` (provider, model,
/// prompt version: a new prompt deserves a new summary).
pub fn fingerprint(
    repo: &Repository,
    exclude: &[&Path],
    salt: &str,
) -> anyhow::Result<Fingerprint> {
    let workdir = repo
        .workdir()
        .context("the repository has no work tree")?
        .to_path_buf();
    let (head, branch) = head_and_branch(repo)?;
    let mut manifest = String::with_capacity(256);
    let _ = writeln!(manifest, "salt {salt}");
    let _ = writeln!(manifest, "head {}", head.as_deref().unwrap_or("unborn"));

    let entries = changes(repo, exclude)?;
    let dirty = !entries.is_empty();
    for (path, status) in entries {
        let _ = write!(manifest, "{:x} {path} ", status.bits());
        let full = workdir.join(&path);
        match std::fs::symlink_metadata(&full) {
            Err(_) => manifest.push_str("absent"),
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&full).unwrap_or_default();
                let _ = write!(manifest, "link {}", target.display());
            }
            Ok(m) if m.is_file() && m.len() <= HASH_LIMIT => {
                let oid = Oid::hash_file(ObjectType::Blob, &full)
                    .with_context(|| format!("cannot read {}", full.display()))?;
                let _ = write!(manifest, "{oid}");
            }
            Ok(m) => {
                use std::os::unix::fs::MetadataExt;
                let _ = write!(
                    manifest,
                    "size {} mtime {}.{}",
                    m.len(),
                    m.mtime(),
                    m.mtime_nsec()
                );
            }
        }
        manifest.push('\n');
    }
    let value = Oid::hash_object(ObjectType::Blob, manifest.as_bytes())?.to_string();
    Ok(Fingerprint {
        value,
        head,
        branch,
        dirty,
    })
}

/// True when `path` (relative to the work tree) is, or is inside, one of
/// `exclude`.
pub fn is_excluded(path: &str, exclude: &[&Path]) -> bool {
    let path = Path::new(path);
    exclude.iter().any(|x| path.starts_with(x))
}

/// Changed and untracked files (not ignored ones), sorted by path, with
/// their status, outside `exclude`. The index is not refreshed: unlike
/// `git status`, nothing is written.
pub fn changes(repo: &Repository, exclude: &[&Path]) -> anyhow::Result<Vec<(String, Status)>> {
    let mut opts = StatusOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false)
        .exclude_submodules(false)
        .renames_head_to_index(false);
    let statuses = repo.statuses(Some(&mut opts)).with_context(|| {
        format!(
            "cannot read the status of {}",
            repo.workdir().unwrap_or(repo.path()).display()
        )
    })?;
    let mut entries: Vec<(String, Status)> = statuses
        .iter()
        .filter(|e| !e.status().is_ignored() && e.status() != Status::CURRENT)
        .map(|e| {
            (
                String::from_utf8_lossy(e.path_bytes()).into_owned(),
                e.status(),
            )
        })
        .filter(|(p, _)| !is_excluded(p, exclude))
        .collect();
    entries.sort();
    entries.dedup();
    Ok(entries)
}

/// Tracked paths (from the index, conflicts counted once) outside
/// `exclude`, in index order, with their git file mode.
pub fn tracked(repo: &Repository, exclude: &[&Path]) -> anyhow::Result<Vec<(String, u32)>> {
    let index = repo.index().with_context(|| {
        format!(
            "cannot read the git index of {}",
            repo.workdir().unwrap_or(repo.path()).display()
        )
    })?;
    let mut out: Vec<(String, u32)> = Vec::with_capacity(index.len());
    for entry in index.iter() {
        let path = String::from_utf8_lossy(&entry.path).into_owned();
        // A conflict has up to three entries for one path.
        if out.last().is_some_and(|(last, _)| *last == path) || is_excluded(&path, exclude) {
            continue;
        }
        out.push((path, entry.mode));
    }
    Ok(out)
}

/// HEAD's commit and branch name; both `None` in a fresh `git init`.
pub fn head_and_branch(repo: &Repository) -> anyhow::Result<(Option<String>, Option<String>)> {
    match repo.head() {
        Ok(head) => {
            let commit = head.peel_to_commit().ok().map(|c| c.id().to_string());
            let branch = if head.is_branch() {
                head.shorthand().ok().map(str::to_string)
            } else {
                None
            };
            Ok((commit, branch))
        }
        Err(e) if matches!(e.code(), ErrorCode::UnbornBranch | ErrorCode::NotFound) => {
            Ok((None, None))
        }
        Err(e) => Err(e).context("cannot read HEAD"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) {
        let ok = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
            .args(args)
            .current_dir(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    }

    fn repo() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        git(d.path(), &["init", "-q", "-b", "main"]);
        std::fs::write(d.path().join("a.txt"), "one\n").unwrap();
        git(d.path(), &["add", "."]);
        git(d.path(), &["commit", "-qm", "first"]);
        d
    }

    #[test]
    fn stable_changed_by_edits_not_by_excluded_file() {
        let d = repo();
        let r = open(d.path()).unwrap();
        let summary = Path::new("codex.md");
        let f1 = fingerprint(&r, &[summary], "s").unwrap();
        assert_eq!(f1, fingerprint(&r, &[summary], "s").unwrap());
        assert_eq!(f1.branch.as_deref(), Some("main"));
        assert!(!f1.dirty);

        std::fs::write(d.path().join("codex.md"), "# summary\n").unwrap();
        assert_eq!(f1, fingerprint(&r, &[summary], "s").unwrap());

        std::fs::write(d.path().join("a.txt"), "two\n").unwrap();
        let f2 = fingerprint(&r, &[summary], "s").unwrap();
        assert_ne!(f1.value, f2.value);
        assert!(f2.dirty);
        // A second edit of the same file is a new state too.
        std::fs::write(d.path().join("a.txt"), "three\n").unwrap();
        assert_ne!(f2.value, fingerprint(&r, &[summary], "s").unwrap().value);

        // Committing moves HEAD; the salt matters.
        git(d.path(), &["commit", "-qam", "second"]);
        let f3 = fingerprint(&r, &[summary], "s").unwrap();
        assert_ne!(f3.head, f1.head);
        assert_ne!(f3.value, fingerprint(&r, &[summary], "t").unwrap().value);
    }

    #[test]
    fn unborn_and_non_repositories() {
        let d = tempfile::tempdir().unwrap();
        let err = open(d.path()).err().expect("not a repository").to_string();
        assert!(err.contains("not the top of a git work tree"), "{err}");
        git(d.path(), &["init", "-q"]);
        let f = fingerprint(&open(d.path()).unwrap(), &[], "s").unwrap();
        assert_eq!(f.head, None);
    }
}
