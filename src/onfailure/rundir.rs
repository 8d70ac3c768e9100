//! `/run/pimainteno`: the handler's state that must not depend on the
//! store: the queue of failures not yet handled, each unit's restarts
//! (boot-relative times), failures recorded while the store was unusable,
//! the store's fault, and the hand-over files between the unit's steps.
//!
//! /run is a tmpfs a boot empties: nothing here outlives the boot, which is
//! what makes boot-relative times safe to keep in it. The directory is the
//! `RuntimeDirectory=pimainteno` (kept: `RuntimeDirectoryPreserve=yes`) of
//! the handler's units, owned by the service account. The privileged steps
//! run as root without capabilities: they can read what is world-readable
//! here and write nothing.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The default place (`$RUNTIME_DIRECTORY` of the units says the same).
pub const DEFAULT: &str = "/run/pimainteno";

/// Failures not handled yet (`pimainteno-repair.path` watches it).
pub const QUEUE: &str = "queue";
/// Decisions waiting for an LLM's explanation (`pimainteno-explain.path`).
pub const EXPLAIN: &str = "explain";
/// One file per unit: its restarts and the invocations already handled.
pub const UNITS: &str = "units";
/// Failure records kept while the store could not be written.
pub const UNRECORDED: &str = "unrecorded";
/// The hand-over files of pimainteno-repair.service's steps.
pub const WORKER: &str = "worker";
/// The hand-over file of pimainteno-explain.service's steps.
pub const EXPLAINER: &str = "explainer";
/// Why the store cannot be used, while it cannot (for status and the
/// dashboard).
pub const STORE_FAULT: &str = "store-fault";

#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> RunDir {
        RunDir { root: root.into() }
    }

    /// `$PIMAINTENO_RUN_DIR` (tests), else [`DEFAULT`], which the units'
    /// `RuntimeDirectory=pimainteno` is.
    pub fn from_env() -> RunDir {
        let dir = std::env::var_os("PIMAINTENO_RUN_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT));
        RunDir::new(dir)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory itself, created when missing (a run by hand before any
    /// unit made it).
    pub fn create(&self) -> anyhow::Result<&Path> {
        if !self.root.is_dir() {
            std::fs::create_dir_all(&self.root)
                .with_context(|| format!("cannot create {}", self.root.display()))?;
        }
        Ok(&self.root)
    }

    /// A directory in it, created when missing (world-readable: the
    /// privileged steps read as "other").
    pub fn dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.root.join(name);
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("cannot set the mode of {}", dir.display()))?;
            own_like_parent(&dir);
        }
        Ok(dir)
    }

    /// The path of a file in it, its directory not created.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

/// Write a file atomically (a temporary file renamed over it), mode 0644:
/// the privileged steps run as root without CAP_DAC_OVERRIDE and read it as
/// "other", whatever the unit's UMask=.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("a file without a directory")?;
    let name = path.file_name().context("a path without a file name")?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        f.write_all(bytes)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        own_like_parent(&tmp);
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Run as root (a manual `sudo pm-onfailure UNIT`), give what it creates the
/// owner of the directory it is in, by the store's rule
/// ([`crate::store::owner_to_give`]): the service account must go on using it.
fn own_like_parent(path: &Path) {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let (Some(parent), Ok(file)) = (path.parent(), std::fs::metadata(path)) else {
        return;
    };
    if let Ok(dir) = std::fs::metadata(parent)
        && let Some((uid, gid)) =
            crate::store::owner_to_give(euid, (dir.uid(), dir.gid()), (file.uid(), file.gid()))
    {
        let _ = std::os::unix::fs::chown(path, Some(uid), Some(gid));
    }
}

/// The files of a directory whose names end in `suffix`, in name order
/// (oldest first: the names start with a boot-relative time).
pub fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(suffix) && !n.starts_with('.'))
        })
        .collect();
    out.sort();
    out
}

/// A file name that sorts by boot-relative time and never collides
/// between processes.
pub fn entry_name(boot_ms: u64, suffix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) & 0xffff;
    format!("{boot_ms:012x}-{:08x}-{n:04x}{suffix}", std::process::id())
}

/// Remove a file; one already gone is fine.
pub fn remove(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_written_whole_and_world_readable() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::new(tmp.path().join("run"));
        let dir = run.dir(WORKER).unwrap();
        write_atomic(&dir.join("handoff"), b"weather").unwrap();
        let mode = std::fs::metadata(dir.join("handoff"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
        assert_eq!(std::fs::read(dir.join("handoff")).unwrap(), b"weather");
        assert_eq!(
            files(&dir, ""),
            [dir.join("handoff")],
            "no temporary file left"
        );
    }
}
