//! Confinement: what a change may touch. Checked on the tree the change
//! makes (the base tree plus the change) before anything is run or
//! committed, on codex's edits as on an HTTP model's diff; one violation
//! refuses the whole change.
//!
//! - only relative paths inside the repository, nothing under `.git/`;
//! - links resolved for real, in the trees, chains included: no path
//!   beneath a link, no new link that leads outside the repository or into
//!   `.git`, and no link of the base redirected outside by the change;
//! - no path matching a protected pattern: the check's own definition by
//!   default ([`DEFAULT_PROTECT`] and the files the check command names),
//!   plus the project's `protect`;
//! - no binary file unless `[patch] allow_binary`;
//! - at most `[patch] max_files` files, `max_lines` changed lines and
//!   `max_bytes` written (a 3 MB file of one line is one line);
//! - no control character in a path (a line break would split it in the
//!   commit's and the history's listing; an escape would reach a terminal);
//! - the user's repository's git files (`config`, `hooks/`, refs)
//!   unchanged after the model's code ran ([`GitFiles`]: nothing should
//!   reach them, since the worktree has a git directory of its own; this
//!   catches a containment that failed).

use std::collections::{BTreeMap, VecDeque};
use std::path::{Component, Path, PathBuf};

use git2::{FileMode, ObjectType, Pathspec, PathspecFlags, Repository, Tree, TreeWalkMode};

use super::change::Change;
use crate::config::PatchSettings;

/// Protected unless the project sets `protect_defaults = false`: CI
/// definitions and git's own files. A fix that edits how it is checked is
/// no fix.
pub const DEFAULT_PROTECT: [&str; 16] = [
    ".git*",
    "*/.git*",
    ".github/**",
    ".gitlab-ci.yml",
    ".gitlab/**",
    ".circleci/**",
    ".travis.yml",
    "Jenkinsfile",
    ".drone.yml",
    ".woodpecker.yml",
    ".woodpecker/**",
    ".forgejo/**",
    ".gitea/**",
    "azure-pipelines.yml",
    ".buildkite/**",
    "bitbucket-pipelines.yml",
];

/// Links followed in one resolution before it counts as a loop (the
/// kernel's limit).
const MAX_HOPS: usize = 40;

/// A path as a change names it: relative, inside, not git's.
pub fn check_path(path: &str) -> Result<(), String> {
    let p = Path::new(path);
    if path.is_empty() || p.is_absolute() {
        return Err(format!("{path:?}: an absolute path"));
    }
    // `{:?}` shows the path with its controls escaped.
    if path.contains('\n') || path.contains('\r') {
        return Err(format!("{path:?}: a line break in a file name"));
    }
    if path.contains(char::is_control) {
        return Err(format!("{path:?}: a control character in a file name"));
    }
    for c in p.components() {
        match c {
            Component::ParentDir => {
                return Err(format!("{path}: goes outside the repository (..)"));
            }
            Component::Normal(n) if n.eq_ignore_ascii_case(".git") => {
                return Err(format!("{path}: inside .git"));
            }
            Component::Prefix(_) | Component::RootDir => {
                return Err(format!("{path}: an absolute path"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Where a path leads in a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Resolved {
    /// Inside the repository, at this path (links followed).
    Inside(PathBuf),
    Outside,
    IntoGit,
}

/// Resolve `path` in `tree` the way the kernel would once the tree is
/// checked out: component by component, following every link (its target
/// read from the tree), `..` popping. Lexical, never the disk.
fn resolve(repo: &Repository, tree: &Tree<'_>, path: &Path) -> Resolved {
    let mut pending: VecDeque<PathBuf> = path
        .components()
        .map(|c| PathBuf::from(c.as_os_str()))
        .collect();
    let mut out = PathBuf::new();
    let mut hops = 0;
    while let Some(c) = pending.pop_front() {
        match c.to_str() {
            Some("..") => {
                if !out.pop() {
                    return Resolved::Outside;
                }
                continue;
            }
            Some(".") | Some("") => continue,
            _ => {}
        }
        out.push(&c);
        if out
            .components()
            .next()
            .is_some_and(|f| f.as_os_str().eq_ignore_ascii_case(".git"))
        {
            return Resolved::IntoGit;
        }
        let Ok(entry) = tree.get_path(&out) else {
            // Not in the tree (yet): a plain name.
            continue;
        };
        if entry.filemode() != i32::from(FileMode::Link) {
            continue;
        }
        hops += 1;
        if hops > MAX_HOPS {
            return Resolved::Outside;
        }
        let Ok(target) = repo.find_blob(entry.id()) else {
            return Resolved::Outside;
        };
        let target = PathBuf::from(String::from_utf8_lossy(target.content()).into_owned());
        if target.is_absolute() {
            return Resolved::Outside;
        }
        out.pop();
        for t in target.components().rev() {
            pending.push_front(PathBuf::from(t.as_os_str()));
        }
    }
    Resolved::Inside(out)
}

/// Every link in `tree`: its path.
fn links(tree: &Tree<'_>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let _ = tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        if entry.kind() == Some(ObjectType::Blob) && entry.filemode() == i32::from(FileMode::Link) {
            out.push(Path::new(dir).join(entry.name().unwrap_or("")));
        }
        git2::TreeWalkResult::Ok
    });
    out
}

/// The patterns a change may not touch.
pub struct Protect {
    patterns: Vec<String>,
    spec: Option<Pathspec>,
}

impl Protect {
    /// The project's `protect`, plus (with `defaults`) [`DEFAULT_PROTECT`]
    /// and the files the check command names that exist in `base`.
    pub fn new(
        project: &[String],
        defaults: bool,
        check_command: Option<&str>,
        base: &Tree<'_>,
    ) -> Result<Protect, String> {
        let mut patterns: Vec<String> = project.to_vec();
        if defaults {
            patterns.extend(DEFAULT_PROTECT.iter().map(|s| s.to_string()));
            if let Some(cmd) = check_command {
                patterns.extend(files_of_check(cmd, base));
            }
        }
        let spec = if patterns.is_empty() {
            None
        } else {
            Some(
                Pathspec::new(patterns.iter())
                    .map_err(|e| format!("bad protect pattern: {}", e.message()))?,
            )
        };
        Ok(Protect { patterns, spec })
    }

    fn matches(&self, path: &str) -> bool {
        self.spec
            .as_ref()
            .is_some_and(|s| s.matches_path(Path::new(path), PathspecFlags::DEFAULT))
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

/// The files a check command names: its words that are files of `base`
/// (`sh test.sh`, `./run-tests`, `python -m pytest tests/test_x.py`), and
/// the files its tool reads its definition from (`make`: the makefile;
/// `npm`/`yarn`/`pnpm`: `package.json`; `tox`: `tox.ini`; `pytest`:
/// `pytest.ini`, `conftest.py`).
pub fn files_of_check(command: &str, base: &Tree<'_>) -> Vec<String> {
    let mut out = Vec::new();
    let words: Vec<String> = command
        .split(|c: char| c.is_whitespace() || ";&|()<>`".contains(c))
        .map(|w| w.trim_matches(|c| c == '\'' || c == '"'))
        .map(|w| w.strip_prefix("./").unwrap_or(w).to_string())
        .filter(|w| !w.is_empty() && !w.starts_with('-'))
        .collect();
    let mut wanted: Vec<String> = words.clone();
    for w in &words {
        let tool = Path::new(w)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let extra: &[&str] = match tool.as_str() {
            "make" => &["Makefile", "makefile", "GNUmakefile"],
            "npm" | "yarn" | "pnpm" => &["package.json"],
            "tox" => &["tox.ini"],
            "pytest" | "py.test" => &["pytest.ini", "conftest.py"],
            _ => &[],
        };
        wanted.extend(extra.iter().map(|s| s.to_string()));
    }
    for w in wanted {
        let is_file = check_path(&w).is_ok()
            && base
                .get_path(Path::new(&w))
                .is_ok_and(|e| e.kind() == Some(ObjectType::Blob));
        if is_file && !out.contains(&w) {
            out.push(w);
        }
    }
    out
}

/// Check a change (from `base` to `new`, trees of `repo`) against the
/// rules and the protected patterns.
pub fn check(
    repo: &Repository,
    base: &Tree<'_>,
    new: &Tree<'_>,
    change: &Change,
    protect: &Protect,
    limits: &PatchSettings,
) -> Result<(), String> {
    if change.files.len() > limits.max_files as usize {
        return Err(format!(
            "{} files changed, more than [patch] max_files = {}",
            change.files.len(),
            limits.max_files
        ));
    }
    if change.lines() > limits.max_lines as usize {
        return Err(format!(
            "{} lines changed, more than [patch] max_lines = {}",
            change.lines(),
            limits.max_lines
        ));
    }
    if change.bytes() as u64 > limits.max_bytes {
        return Err(format!(
            "{} bytes written, more than [patch] max_bytes = {}",
            change.bytes(),
            crate::config::values::format_size(limits.max_bytes)
        ));
    }
    for f in &change.files {
        check_path(&f.path)?;
        if protect.matches(&f.path) {
            return Err(format!(
                "{}: protected (the check's own definition, CI and git files are protected by \
                 default; protect = {:?})",
                f.path,
                protect.patterns()
            ));
        }
        // Nothing beneath a link, the base's included: on disk it would be
        // written through the link (libgit2's apply quietly replaces such
        // a link by a directory; a patch that means to do so is refused
        // too, it is rare enough).
        let mut prefix = PathBuf::new();
        let parts: Vec<_> = Path::new(&f.path).components().collect();
        for c in &parts[..parts.len().saturating_sub(1)] {
            prefix.push(c.as_os_str());
            if [base, new].iter().any(|t| {
                t.get_path(&prefix)
                    .is_ok_and(|e| e.filemode() == i32::from(FileMode::Link))
            }) {
                return Err(format!(
                    "{}: beneath the symbolic link {}",
                    f.path,
                    prefix.display()
                ));
            }
        }
        if f.binary && !limits.allow_binary {
            return Err(format!(
                "{}: a binary file ([patch] allow_binary = false)",
                f.path
            ));
        }
    }
    // Every link of the new tree, resolved in it: a new or changed one must
    // stay inside; one of the base must not be led outside by the change.
    let changed: Vec<&str> = change.files.iter().map(|f| f.path.as_str()).collect();
    for link in links(new) {
        let name = link.to_string_lossy().into_owned();
        let verdict = resolve(repo, new, &link);
        let why = match verdict {
            Resolved::Inside(_) => continue,
            Resolved::Outside => "outside the repository",
            Resolved::IntoGit => "into .git",
        };
        let target = new
            .get_path(&link)
            .ok()
            .and_then(|e| repo.find_blob(e.id()).ok())
            .map(|b| String::from_utf8_lossy(b.content()).into_owned())
            .unwrap_or_default();
        if changed.contains(&name.as_str()) {
            return Err(format!("{name}: a symbolic link to {target}, leads {why}"));
        }
        if resolve(repo, base, &link) != verdict {
            return Err(format!(
                "{name}: a symbolic link of the repository ({target}) that the change leads {why}"
            ));
        }
    }
    Ok(())
}

/// The repository's own git files: their contents before the model's
/// code ran, to see that it left them alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitFiles(BTreeMap<PathBuf, Vec<u8>>);

const WATCHED: [&str; 6] = [
    "config",
    "HEAD",
    "packed-refs",
    "hooks",
    "refs/heads",
    "info",
];

impl GitFiles {
    pub fn snapshot(common: &Path) -> GitFiles {
        let mut files = BTreeMap::new();
        for name in WATCHED {
            collect(&common.join(name), &mut files);
        }
        GitFiles(files)
    }

    /// The paths that differ from `self` now, and put back what was there.
    pub fn restore_changes(&self, common: &Path) -> Vec<PathBuf> {
        let now = GitFiles::snapshot(common);
        let mut changed = Vec::new();
        for (path, content) in &self.0 {
            if now.0.get(path) != Some(content) {
                changed.push(path.clone());
                let _ = std::fs::remove_file(path);
                let _ = std::fs::write(path, content);
            }
        }
        for path in now.0.keys() {
            if !self.0.contains_key(path) {
                changed.push(path.clone());
                let _ = std::fs::remove_file(path);
            }
        }
        changed
    }
}

fn collect(path: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_dir() {
        if let Ok(entries) = std::fs::read_dir(path) {
            for e in entries.flatten() {
                collect(&e.path(), out);
            }
        }
    } else if meta.file_type().is_symlink() {
        // A link is recorded as its target, never read through.
        let target = std::fs::read_link(path).unwrap_or_default();
        out.insert(
            path.to_path_buf(),
            format!("link:{}", target.display()).into_bytes(),
        );
    } else if let Ok(bytes) = std::fs::read(path) {
        out.insert(path.to_path_buf(), bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert!(check_path("src/main.rs").is_ok());
        for bad in [
            "../etc/passwd",
            "/etc/passwd",
            ".git/hooks/pre-commit",
            ".GIT/config",
            "a/../../b",
            "sub/.git/config",
            "a\nb",
            "a\rb",
            "a\x1b[2Jb",
            "a\x07",
            "a\tb",
            "a\x7fb",
            "a\u{9b}b",
            "",
        ] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
    }

    /// A repository whose tree holds `links` (path, target) and `files`.
    fn tree_with<'r>(repo: &'r Repository, files: &[&str], links: &[(&str, &str)]) -> Tree<'r> {
        let mut index = git2::Index::new().unwrap();
        let mut add = |path: &str, mode: FileMode, data: &[u8]| {
            let id = repo.blob(data).unwrap();
            index
                .add(&git2::IndexEntry {
                    ctime: git2::IndexTime::new(0, 0),
                    mtime: git2::IndexTime::new(0, 0),
                    dev: 0,
                    ino: 0,
                    mode: u32::from(mode),
                    uid: 0,
                    gid: 0,
                    file_size: data.len() as u32,
                    id,
                    flags: path.len() as u16,
                    flags_extended: 0,
                    path: path.as_bytes().to_vec(),
                })
                .unwrap();
        };
        for f in files {
            add(f, FileMode::Blob, b"x\n");
        }
        for (l, t) in links {
            add(l, FileMode::Link, t.as_bytes());
        }
        let id = index.write_tree_to(repo).unwrap();
        repo.find_tree(id).unwrap()
    }

    #[test]
    fn links_are_resolved_in_the_tree_chains_included() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let t = tree_with(
            &repo,
            &["a/f", "d/up/keep"],
            &[
                ("a/l", "../b"),
                ("out", "../x"),
                ("abs", "/etc"),
                ("g", "a/../.git/config"),
                ("loop1", "loop2"),
                ("loop2", "loop1"),
            ],
        );
        let r = |p: &str| resolve(&repo, &t, Path::new(p));
        assert_eq!(r("a/l"), Resolved::Inside(PathBuf::from("b")));
        assert_eq!(r("out"), Resolved::Outside);
        assert_eq!(r("abs"), Resolved::Outside);
        assert_eq!(r("g"), Resolved::IntoGit);
        assert_eq!(r("loop1"), Resolved::Outside);
        // `d/up -> ..` and `esc -> d/up/..`: each looks harmless alone.
        let t = tree_with(&repo, &[], &[("d/up", ".."), ("esc", "d/up/..")]);
        assert_eq!(
            resolve(&repo, &t, Path::new("d/up")),
            Resolved::Inside(PathBuf::new())
        );
        assert_eq!(resolve(&repo, &t, Path::new("esc")), Resolved::Outside);
    }

    #[test]
    fn default_protection_covers_ci_git_files_and_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let base = tree_with(
            &repo,
            &["test.sh", "Makefile", "src/lib.rs", "tests/run.sh"],
            &[],
        );
        let p = Protect::new(
            &["*.lock".into()],
            true,
            Some("sh test.sh && make check"),
            &base,
        )
        .unwrap();
        for path in [
            "test.sh",
            "Makefile",
            ".gitattributes",
            ".gitmodules",
            "sub/.gitignore",
            ".github/workflows/ci.yml",
            ".gitlab-ci.yml",
            "Cargo.lock",
        ] {
            assert!(p.matches(path), "{path} is protected");
        }
        for path in ["src/lib.rs", "tests/run.sh", "README.md", "github.txt"] {
            assert!(!p.matches(path), "{path} is not protected");
        }
        let off = Protect::new(&[], false, Some("sh test.sh"), &base).unwrap();
        assert!(!off.matches("test.sh") && !off.matches(".github/x.yml"));
        assert_eq!(
            files_of_check("./tests/run.sh --fast; pytest -q", &base),
            ["tests/run.sh"]
        );
    }
}
