//! The change an attempt made, and getting one from an LLM's text.
//!
//! Whatever the provider, the change is what git2 sees in the worktree
//! against the base commit afterwards: codex edits the files itself (and
//! says nothing when its sandbox refuses an edit), an HTTP model's diff is
//! applied here first. The change is rendered as a unified diff with
//! `similar`, for the record and the user.

use std::path::Path;

use anyhow::Context;
use git2::{ApplyLocation, Delta, Diff, DiffOptions, Oid, Repository};
use similar::TextDiff;

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

/// What changed in the worktree (`repo`, including untracked files)
/// against `base`.
pub fn collect(repo: &Repository, base: Oid) -> anyhow::Result<Change> {
    let tree = repo.find_commit(base)?.tree()?;
    let mut opts = DiffOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .show_untracked_content(true)
        .include_typechange(true);
    let diff = repo
        .diff_tree_to_workdir_with_index(Some(&tree), Some(&mut opts))
        .context("cannot compare the worktree with the base commit")?;
    let root = repo
        .workdir()
        .context("the worktree has no working directory")?;
    let mut files = Vec::new();
    for delta in diff.deltas() {
        let new = delta.new_file();
        let old = delta.old_file();
        let path = new
            .path()
            .or(old.path())
            .map(|p| p.to_string_lossy().replace('\\', "/"))
            .unwrap_or_default();
        let on_disk = root.join(&path);
        let symlink_target = std::fs::symlink_metadata(&on_disk)
            .ok()
            .filter(|m| m.file_type().is_symlink())
            .and_then(|_| std::fs::read_link(&on_disk).ok())
            .map(|t| t.to_string_lossy().into_owned());
        let before = blob(repo, old.id());
        let after = if delta.status() == Delta::Deleted || symlink_target.is_some() {
            Vec::new()
        } else {
            std::fs::read(&on_disk).unwrap_or_default()
        };
        let binary = before.contains(&0) || after.contains(&0) || delta.flags().is_binary();
        let (added, removed, text) = if let Some(t) = &symlink_target {
            (1, 0, format!("symlink {path} -> {t}\n"))
        } else if binary {
            (0, 0, format!("Binary file {path} changed\n"))
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
            diff: text,
        });
    }
    Ok(Change { files })
}

/// A unified diff of one text file, and its added and removed lines.
fn render(path: &str, delta: Delta, before: &[u8], after: &[u8]) -> (usize, usize, String) {
    let old = String::from_utf8_lossy(before);
    let new = String::from_utf8_lossy(after);
    let diff = TextDiff::from_lines(old.as_ref(), new.as_ref());
    let (mut added, mut removed) = (0, 0);
    for change in diff.iter_all_changes() {
        match change.tag() {
            similar::ChangeTag::Insert => added += 1,
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
    (added, removed, text)
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

/// Apply a diff to the worktree, strictly: libgit2's apply (as `git apply`
/// without `--recount` or fuzz): every hunk's context and line counts must
/// match the file. The paths are confined first. `Err` says why not.
pub fn apply(repo: &Repository, text: &str) -> Result<(), String> {
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
    repo.apply(&diff, ApplyLocation::WorkDir, None)
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

/// Read the files of `paths` that exist in `root`, for a prompt.
pub fn read_files(root: &Path, paths: &[String], budget: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut used = 0;
    for p in paths {
        let Ok(bytes) = std::fs::read(root.join(p)) else {
            continue;
        };
        if bytes.contains(&0) || used + bytes.len() > budget {
            continue;
        }
        used += bytes.len();
        out.push((p.clone(), String::from_utf8_lossy(&bytes).into_owned()));
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
