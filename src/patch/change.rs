//! The change an attempt made, as a tree: the base tree plus what the
//! model changed, and getting one from an LLM's text.
//!
//! The change is never taken from the worktree as a whole after the check
//! ran: it is the tree built before the check, from the base tree and the
//! change alone ([`tree_from_workdir`] for codex, which edits the files
//! itself; [`apply_to_base`] for an HTTP model's diff, applied in memory).
//! Whatever the check then creates or modifies is not part of it
//! ([`left_behind`] lists it for the record). Files are read without
//! following links, and a diff is never applied through a link on disk.
//! The change is rendered as a unified diff with `similar`, for the record
//! and the user.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::Context;
use git2::{
    Delta, Diff, DiffOptions, FileMode, Index, IndexEntry, IndexTime, Oid, Repository, Tree,
};
use similar::TextDiff;

use super::worktree::Worktree;

/// A file bigger than this is not read into a change (a model's runaway
/// output must not exhaust a Pi's memory); `[patch] max_bytes` is at most
/// this, and far lower by default.
const MAX_FILE: u64 = crate::config::validate::PATCH_MAX_BYTES_MAX;

/// One changed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedFile {
    /// Relative to the worktree, `/`-separated (as git reports it).
    pub path: String,
    pub delta: Delta,
    pub binary: bool,
    /// Where a symbolic link in the change points.
    pub symlink_target: Option<String>,
    pub added: usize,
    pub removed: usize,
    /// The bytes the change writes into this file: its added lines (a
    /// 3 MB one-line file is one line), all of a binary file, a link's
    /// target; for `[patch] max_bytes`.
    pub bytes: usize,
    /// The unified diff of this file (`similar`), or a one-line note for a
    /// binary file or a link.
    pub diff: String,
}

/// Everything an attempt changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    pub files: Vec<ChangedFile>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn lines(&self) -> usize {
        self.files.iter().map(|f| f.added + f.removed).sum()
    }

    pub fn bytes(&self) -> usize {
        self.files.iter().map(|f| f.bytes).sum()
    }

    /// The whole change as one unified diff.
    pub fn diff(&self) -> String {
        self.files.iter().map(|f| f.diff.as_str()).collect()
    }

    pub fn paths(&self) -> Vec<String> {
        self.files.iter().map(|f| f.path.clone()).collect()
    }
}

fn blob(repo: &Repository, id: Oid) -> Vec<u8> {
    if id.is_zero() {
        return Vec::new();
    }
    repo.find_blob(id)
        .map(|b| b.content().to_vec())
        .unwrap_or_default()
}

/// The change from `base` to `new`, two trees of `repo`.
pub fn between(repo: &Repository, base: &Tree<'_>, new: &Tree<'_>) -> anyhow::Result<Change> {
    let mut opts = DiffOptions::new();
    opts.include_typechange(true);
    let diff = repo
        .diff_tree_to_tree(Some(base), Some(new), Some(&mut opts))
        .context("cannot compare the change with the base commit")?;
    let mut files = Vec::new();
    for delta in diff.deltas() {
        let new_file = delta.new_file();
        let old = delta.old_file();
        let path = new_file
            .path()
            .or(old.path())
            .map(|p| p.to_string_lossy().replace('\\', "/"))
            .unwrap_or_default();
        let before = blob(repo, old.id());
        let is_link = delta.status() != Delta::Deleted && new_file.mode() == FileMode::Link;
        let after = if delta.status() == Delta::Deleted {
            Vec::new()
        } else {
            blob(repo, new_file.id())
        };
        let symlink_target = is_link.then(|| String::from_utf8_lossy(&after).into_owned());
        let binary = !is_link && (before.contains(&0) || after.contains(&0));
        let (added, removed, bytes, text) = if let Some(t) = &symlink_target {
            (1, 0, after.len(), format!("symlink {path} -> {t}\n"))
        } else if binary {
            (0, 0, after.len(), format!("Binary file {path} changed\n"))
        } else {
            render(&path, delta.status(), &before, &after)
        };
        files.push(ChangedFile {
            path,
            delta: delta.status(),
            binary,
            symlink_target,
            added,
            removed,
            bytes,
            diff: text,
        });
    }
    Ok(Change { files })
}

/// The tree of the worktree's files as they are now (codex edited them):
/// the base tree with every changed, added or deleted file of the working
/// directory (files git ignores are not part of it). Files are read
/// without following any link; `Err` says what could not be taken.
pub fn tree_from_workdir(wt: &Worktree) -> Result<Oid, String> {
    let repo = &wt.repo;
    let base = repo
        .find_commit(wt.base)
        .and_then(|c| c.tree())
        .map_err(|e| format!("cannot read the base tree: {}", e.message()))?;
    let mut opts = DiffOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_typechange(true);
    let diff = repo
        .diff_tree_to_workdir_with_index(Some(&base), Some(&mut opts))
        .map_err(|e| format!("cannot compare the worktree with the base: {}", e.message()))?;
    let root = open_dir(&wt.path).map_err(|e| format!("{}: {e}", wt.path.display()))?;
    let mut removed = Vec::new();
    let mut added = Vec::new();
    for delta in diff.deltas() {
        let path = |f: git2::DiffFile<'_>| f.path().map(|p| p.to_string_lossy().into_owned());
        match delta.status() {
            Delta::Deleted => removed.extend(path(delta.old_file())),
            Delta::Added | Delta::Untracked | Delta::Modified | Delta::Typechange => {
                let Some(p) = path(delta.new_file()) else {
                    continue;
                };
                if delta.status() == Delta::Typechange {
                    removed.push(p.clone());
                }
                super::confine::check_path(&p)?;
                // None: a directory where a file was; its files come as
                // deltas of their own.
                if let Some((mode, bytes)) = read_beneath(&root, &p)? {
                    let id = repo
                        .blob(&bytes)
                        .map_err(|e| format!("{p}: cannot store it: {}", e.message()))?;
                    added.push((p, mode, id, bytes.len()));
                }
            }
            _ => {}
        }
    }
    let mut index = Index::new().map_err(|e| e.message().to_string())?;
    index
        .read_tree(&base)
        .map_err(|e| format!("cannot read the base tree: {}", e.message()))?;
    for p in &removed {
        // A file, or a whole directory a file replaced.
        let _ = index.remove_path(Path::new(p));
        let _ = index.remove_dir(Path::new(p), 0);
    }
    for (p, mode, id, len) in added {
        let _ = index.remove_dir(Path::new(&p), 0);
        index
            .add(&entry(&p, mode, id, len))
            .map_err(|e| format!("{p}: cannot be part of a tree: {}", e.message()))?;
    }
    index
        .write_tree_to(repo)
        .map_err(|e| format!("cannot build the changed tree: {}", e.message()))
}

fn entry(path: &str, mode: u32, id: Oid, len: usize) -> IndexEntry {
    IndexEntry {
        ctime: IndexTime::new(0, 0),
        mtime: IndexTime::new(0, 0),
        dev: 0,
        ino: 0,
        mode,
        uid: 0,
        gid: 0,
        file_size: len.min(u32::MAX as usize) as u32,
        id,
        flags: path.len().min(0xfff) as u16,
        flags_extended: 0,
        path: path.as_bytes().to_vec(),
    }
}

fn cstring(name: &[u8]) -> Result<CString, String> {
    CString::new(name).map_err(|_| "a path with a NUL byte".to_string())
}

/// A directory, opened for the `*at` calls below.
fn open_dir(path: &Path) -> Result<OwnedFd, String> {
    let c = cstring(path.as_os_str().as_bytes())?;
    // SAFETY: a valid C string; the result is checked.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The file `rel` beneath `root`, no component of which may be a link:
/// `Some((git file mode, bytes))` (a link's bytes are its target), `None`
/// for a directory.
fn read_beneath(root: &OwnedFd, rel: &str) -> Result<Option<(u32, Vec<u8>)>, String> {
    let parts: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    let Some((name, dirs)) = parts.split_last() else {
        return Err(format!("{rel:?}: not a file name"));
    };
    let mut dir: Option<OwnedFd> = None;
    for d in dirs {
        let at = dir.as_ref().unwrap_or(root).as_raw_fd();
        let c = cstring(d.as_bytes())?;
        // O_NOFOLLOW with O_DIRECTORY: a link here fails (ELOOP/ENOTDIR).
        // SAFETY: valid descriptor and C string; the result is checked.
        let fd = unsafe {
            libc::openat(
                at,
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(format!(
                "{rel}: {d} is not a plain directory ({})",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: fd is a fresh descriptor we own.
        dir = Some(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let at = dir.as_ref().unwrap_or(root).as_raw_fd();
    let c = cstring(name.as_bytes())?;
    // fstatat64: the 64-bit-offset call on 32-bit ARM too (the armhf
    // package check refuses the old one).
    // SAFETY: zeroed stat filled by fstatat64; valid descriptor and C string.
    let mut st: libc::stat64 = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatat64(at, c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } != 0 {
        return Err(format!("{rel}: {}", std::io::Error::last_os_error()));
    }
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => Ok(None),
        libc::S_IFLNK => {
            let mut buf = vec![0u8; 4096];
            // SAFETY: the buffer's length is passed; the result is checked.
            let n = unsafe { libc::readlinkat(at, c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                return Err(format!("{rel}: {}", std::io::Error::last_os_error()));
            }
            buf.truncate(n as usize);
            Ok(Some((u32::from(FileMode::Link), buf)))
        }
        libc::S_IFREG => {
            if st.st_size as u64 > MAX_FILE {
                return Err(format!("{rel}: larger than {} MiB", MAX_FILE >> 20));
            }
            // SAFETY: valid descriptor and C string; the result is checked.
            let fd = unsafe {
                libc::openat(
                    at,
                    c.as_ptr(),
                    libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK,
                )
            };
            if fd < 0 {
                return Err(format!("{rel}: {}", std::io::Error::last_os_error()));
            }
            // SAFETY: fd is a fresh descriptor we own.
            let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
            let mut bytes = Vec::new();
            use std::io::Read;
            file.take(MAX_FILE + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| format!("{rel}: {e}"))?;
            if bytes.len() as u64 > MAX_FILE {
                return Err(format!("{rel}: larger than {} MiB", MAX_FILE >> 20));
            }
            let mode = if st.st_mode & 0o100 != 0 {
                FileMode::BlobExecutable
            } else {
                FileMode::Blob
            };
            Ok(Some((u32::from(mode), bytes)))
        }
        _ => Err(format!(
            "{rel}: not a file, a directory or a link (a fifo, socket or device)"
        )),
    }
}

/// Paths of [`left_behind`] kept in a record.
const MAX_LEFT: usize = 50;

/// What the worktree holds that `tree` does not (files the check created
/// or changed, git-ignored ones aside), at most [`MAX_LEFT`]: for the
/// record, never committed.
pub fn left_behind(wt: &Worktree, tree: Oid) -> Vec<String> {
    let Ok(tree) = wt.repo.find_tree(tree) else {
        return Vec::new();
    };
    let mut opts = DiffOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_typechange(true);
    let Ok(diff) = wt
        .repo
        .diff_tree_to_workdir_with_index(Some(&tree), Some(&mut opts))
    else {
        return Vec::new();
    };
    diff.deltas()
        .filter_map(|d| {
            d.new_file()
                .path()
                .or(d.old_file().path())
                .map(|p| p.to_string_lossy().into_owned())
        })
        .take(MAX_LEFT)
        .collect()
}

/// A unified diff of one text file, its added and removed lines, and the
/// bytes of the added ones.
fn render(path: &str, delta: Delta, before: &[u8], after: &[u8]) -> (usize, usize, usize, String) {
    let old = String::from_utf8_lossy(before);
    let new = String::from_utf8_lossy(after);
    let diff = TextDiff::from_lines(old.as_ref(), new.as_ref());
    let (mut added, mut removed, mut bytes) = (0, 0, 0);
    for change in diff.iter_all_changes() {
        match change.tag() {
            similar::ChangeTag::Insert => {
                added += 1;
                bytes += change.value().len();
            }
            similar::ChangeTag::Delete => removed += 1,
            similar::ChangeTag::Equal => {}
        }
    }
    let a = if delta == Delta::Added || delta == Delta::Untracked {
        "/dev/null".to_string()
    } else {
        format!("a/{path}")
    };
    let b = if delta == Delta::Deleted {
        "/dev/null".to_string()
    } else {
        format!("b/{path}")
    };
    let text = diff
        .unified_diff()
        .context_radius(3)
        .header(&a, &b)
        .to_string();
    (added, removed, bytes, text)
}

/// The unified diff in an LLM's reply: the first ```diff (or ```patch)
/// fence, else any fence that holds one, else the text itself when it is a
/// diff. Models put prose around it despite being asked not to.
pub fn extract_diff(reply: &str) -> Option<String> {
    let looks_like_diff = |t: &str| {
        t.lines().any(|l| l.starts_with("--- ")) && t.lines().any(|l| l.starts_with("@@"))
    };
    let mut fences = Vec::new();
    let mut rest = reply;
    while let Some(start) = rest.find("```") {
        let after = &rest[start + 3..];
        let (lang, body) = after.split_once('\n').unwrap_or((after, ""));
        let Some(end) = body.find("\n```") else {
            break;
        };
        fences.push((lang.trim().to_string(), body[..end + 1].to_string()));
        rest = &body[end + 4..];
    }
    let pick = fences
        .iter()
        .find(|(l, b)| matches!(l.as_str(), "diff" | "patch") && looks_like_diff(b))
        .or_else(|| fences.iter().find(|(_, b)| looks_like_diff(b)))
        .map(|(_, b)| b.clone());
    pick.or_else(|| looks_like_diff(reply).then(|| reply.to_string()))
}

/// Apply a diff to the base tree, in memory, strictly: libgit2's apply
/// (as `git apply` without `--recount` or fuzz): every hunk's context and
/// line counts must match. Nothing is written to the worktree: the result
/// is a tree (confined, then checked out). The paths are confined first.
/// `Err` says why not.
pub fn apply_to_base(wt: &Worktree, text: &str) -> Result<Oid, String> {
    // The paths as written: libgit2 would quietly make `b//etc/x` relative.
    for line in text.lines() {
        if let Some(p) = line
            .strip_prefix("--- ")
            .or_else(|| line.strip_prefix("+++ "))
        {
            let p = p.split('\t').next().unwrap_or(p).trim();
            if p != "/dev/null" {
                let p = p
                    .strip_prefix("a/")
                    .or_else(|| p.strip_prefix("b/"))
                    .unwrap_or(p);
                super::confine::check_path(p)?;
            }
        }
    }
    let text = with_git_headers(text);
    let diff = Diff::from_buffer(text.as_bytes())
        .map_err(|e| format!("the reply's diff cannot be parsed: {}", e.message()))?;
    for delta in diff.deltas() {
        for f in [delta.old_file(), delta.new_file()] {
            if let Some(p) = f.path() {
                let p = p.to_string_lossy();
                if p != "/dev/null" {
                    super::confine::check_path(&p)?;
                }
            }
        }
    }
    let base = wt
        .repo
        .find_commit(wt.base)
        .and_then(|c| c.tree())
        .map_err(|e| format!("cannot read the base tree: {}", e.message()))?;
    let mut index = wt
        .repo
        .apply_to_tree(&base, &diff, None)
        .map_err(|e| format!("the diff does not apply: {}", e.message()))?;
    index
        .write_tree_to(&wt.repo)
        .map_err(|e| format!("the diff does not apply: {}", e.message()))
}

/// libgit2 parses only git's diff format: each file starts with a
/// `diff --git a/X b/Y` line, and a new or deleted file says so. Models
/// often write the plain unified format (`--- a/X`, `+++ b/X`, hunks):
/// the missing header lines are added. Nothing else is changed.
pub fn with_git_headers(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::with_capacity(text.len() + 128);
    let mut in_git_header = false;
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("diff --git ") {
            in_git_header = true;
        } else if line.starts_with("@@") {
            in_git_header = false;
        }
        if let Some(old) = line.strip_prefix("--- ")
            && !in_git_header
            && let Some(new) = lines.get(i + 1).and_then(|l| l.strip_prefix("+++ "))
        {
            let name = |p: &str| {
                let p = p.split('\t').next().unwrap_or(p).trim();
                p.strip_prefix("a/")
                    .or_else(|| p.strip_prefix("b/"))
                    .unwrap_or(p)
                    .to_string()
            };
            let (old, new) = (old.trim(), new.trim());
            let path = if new == "/dev/null" {
                name(old)
            } else {
                name(new)
            };
            out.push_str(&format!("diff --git a/{path} b/{path}\n"));
            if old == "/dev/null" {
                out.push_str("new file mode 100644\n");
            } else if new == "/dev/null" {
                out.push_str("deleted file mode 100644\n");
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The text files of `paths` in `tree`, for a prompt: read from the
/// commit, not the disk, so that a link in the repository (to a key, say)
/// shows as its target's name, never as the file it points to.
pub fn read_files(
    repo: &Repository,
    tree: &Tree<'_>,
    paths: &[String],
    budget: usize,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut used = 0;
    for p in paths {
        let Ok(entry) = tree.get_path(Path::new(p)) else {
            continue;
        };
        if !matches!(
            entry.filemode(),
            m if m == i32::from(FileMode::Blob) || m == i32::from(FileMode::BlobExecutable)
        ) {
            continue;
        }
        let Ok(b) = repo.find_blob(entry.id()) else {
            continue;
        };
        let bytes = b.content();
        if bytes.contains(&0) || used + bytes.len() > budget {
            continue;
        }
        used += bytes.len();
        out.push((p.clone(), String::from_utf8_lossy(bytes).into_owned()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_diff_is_found_in_prose_and_fences() {
        let d = "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n";
        let reply = format!("Here is the fix:\n\n```diff\n{d}```\n\nIt changes a to b.");
        assert_eq!(extract_diff(&reply).as_deref(), Some(d));
        let plain = format!("```\n{d}```");
        assert_eq!(extract_diff(&plain).as_deref(), Some(d));
        assert_eq!(extract_diff(d).as_deref(), Some(d));
        assert_eq!(extract_diff("I could not find the bug."), None);
        // Plain unified diffs get git's header lines, nothing more.
        assert_eq!(with_git_headers(d), format!("diff --git a/x b/x\n{d}"));
        assert!(
            with_git_headers("--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1 @@\n+a\n")
                .starts_with("diff --git a/new.txt b/new.txt\nnew file mode 100644\n--- /dev/null")
        );
        let git = format!("diff --git a/x b/x\nindex 1..2 100644\n{d}");
        assert_eq!(with_git_headers(&git), git);
        // A fence of code first, then the diff.
        let two = format!("```rust\nfn main() {{}}\n```\nand\n```patch\n{d}```\n");
        assert_eq!(extract_diff(&two).as_deref(), Some(d));
    }
}
