//! Confinement: what a change may touch. Checked before anything is run
//! or committed, on codex's edits as on an HTTP model's diff; one
//! violation refuses the whole change (DESIGN.md §5).
//!
//! - only relative paths inside the repository, nothing under `.git/`;
//! - no symbolic link that points outside the repository (or into `.git`);
//! - no path matching the project's `protect` patterns;
//! - no binary file unless `[patch] allow_binary`;
//! - at most `[patch] max_files` files and `max_lines` changed lines;
//! - the repository's own git files (`config`, `hooks/`, refs) unchanged:
//!   a worktree shares them, and git status does not show them.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use git2::{Pathspec, PathspecFlags};

use super::change::Change;
use crate::config::PatchSettings;

/// A path as a change names it: relative, inside, not git's.
pub fn check_path(path: &str) -> Result<(), String> {
    let p = Path::new(path);
    if path.is_empty() || p.is_absolute() {
        return Err(format!("{path:?}: an absolute path"));
    }
    for c in p.components() {
        match c {
            Component::ParentDir => {
                return Err(format!("{path}: goes outside the repository (..)"));
            }
            Component::Normal(n) if n == ".git" => {
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

/// Where a link at `link` (relative) pointing to `target` leads, folded
/// lexically; `None` when it leaves the repository.
fn resolve(link: &str, target: &str) -> Option<PathBuf> {
    if Path::new(target).is_absolute() {
        return None;
    }
    let mut out = PathBuf::new();
    let parent = Path::new(link).parent().unwrap_or(Path::new(""));
    for c in parent.join(target).components() {
        match c {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

/// Check a change against the rules and the project's `protect` patterns.
pub fn check(change: &Change, protect: &[String], limits: &PatchSettings) -> Result<(), String> {
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
    let spec = if protect.is_empty() {
        None
    } else {
        Some(
            Pathspec::new(protect.iter())
                .map_err(|e| format!("bad protect pattern: {}", e.message()))?,
        )
    };
    for f in &change.files {
        check_path(&f.path)?;
        if let Some(spec) = &spec
            && spec.matches_path(Path::new(&f.path), PathspecFlags::DEFAULT)
        {
            return Err(format!(
                "{}: protected (the project's protect = {protect:?})",
                f.path
            ));
        }
        if let Some(target) = &f.symlink_target {
            match resolve(&f.path, target) {
                None => {
                    return Err(format!(
                        "{}: a symbolic link to {target}, outside the repository",
                        f.path
                    ));
                }
                Some(p)
                    if p.components()
                        .next()
                        .is_some_and(|c| c.as_os_str() == ".git") =>
                {
                    return Err(format!("{}: a symbolic link into .git", f.path));
                }
                Some(_) => {}
            }
        }
        if f.binary && !limits.allow_binary {
            return Err(format!(
                "{}: a binary file ([patch] allow_binary = false)",
                f.path
            ));
        }
    }
    Ok(())
}

/// The repository's own git files a worktree shares: their contents
/// before an attempt, to see that the LLM left them alone.
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
            "a/../../b",
            "sub/.git/config",
            "",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn links() {
        assert_eq!(resolve("a/l", "../b"), Some(PathBuf::from("b")));
        assert_eq!(resolve("l", "../x"), None);
        assert_eq!(resolve("l", "/etc"), None);
        assert_eq!(
            resolve("a/b/l", "../../.git/config"),
            Some(PathBuf::from(".git/config"))
        );
    }
}
