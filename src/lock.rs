//! One run per project at a time: an exclusive fs2 (flock) lock on
//! `<store>/locks/<project>.lock`. flock writes nothing to disk, and the
//! kernel drops the lock when the process dies, so a crash never leaves a
//! stale lock behind.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use fs2::FileExt;

/// Another process holds the lock (exit code 75: try again later).
#[derive(Debug, thiserror::Error)]
#[error("project \"{name}\" is busy: another PiMainteno run holds {path} (waited {waited:?})")]
pub struct LockHeld {
    pub name: String,
    pub path: PathBuf,
    pub waited: Duration,
}

/// Held until dropped.
#[derive(Debug)]
pub struct ProjectLock {
    _file: File,
}

/// Take the lock for `name`, waiting up to `wait` for another run to finish.
pub fn lock_project(store_dir: &Path, name: &str, wait: Duration) -> anyhow::Result<ProjectLock> {
    let dir = store_dir.join("locks");
    let path = dir.join(format!("{name}.lock"));
    let file = match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(f) => f,
        // Created once; later runs only open it (no disk write).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create the lock directory {}", dir.display()))?;
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .with_context(|| format!("cannot create the lock file {}", path.display()))?
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot open the lock file {}", path.display()));
        }
    };
    let start = Instant::now();
    loop {
        match file.try_lock_exclusive() {
            Ok(()) => return Ok(ProjectLock { _file: file }),
            Err(e) if e.raw_os_error() == fs2::lock_contended_error().raw_os_error() => {
                if start.elapsed() >= wait {
                    return Err(LockHeld {
                        name: name.to_string(),
                        path,
                        waited: start.elapsed(),
                    }
                    .into());
                }
                thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_waits_then_gives_up() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_project(dir.path(), "weather", Duration::ZERO).unwrap();
        let err = lock_project(dir.path(), "weather", Duration::from_millis(120)).unwrap_err();
        let held_err = err.downcast_ref::<LockHeld>().expect("LockHeld");
        assert!(held_err.waited >= Duration::from_millis(120));
        assert_eq!(crate::exit::code_for(&err).code(), 75);
        // Another project is independent.
        lock_project(dir.path(), "other", Duration::ZERO).unwrap();
        drop(held);
        lock_project(dir.path(), "weather", Duration::ZERO).unwrap();
    }
}
