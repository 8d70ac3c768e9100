//! The queue of failures not handled yet, under `/run/pimainteno/queue`.
//!
//! `OnFailure=` starts `pm-onfailure@<unit>.service`, and systemd merges a
//! start request into a run of that unit already under way: a failure
//! during a handler's run would be lost. So that run only writes the
//! failure here, first and in milliseconds, and ends;
//! `pimainteno-repair.path` starts `pimainteno-repair.service` while the
//! directory is not empty, and systemd checks it again whenever that
//! service stops: nothing written here waits for a trigger that was merged
//! away. Anything that finds a failure (the repair's own check for a
//! failure it has not seen, a crash hook) adds it with [`push`].
//!
//! An entry is `<boot ms>-<pid>-<n>.json`. The worker renames it to
//! `….taken` before it handles it, and removes it after: an entry still
//! `.taken` when a worker starts is one a previous worker died on, and is
//! handled the careful way (no journal, no store) rather than again.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::evidence::Monitor;
use super::rundir::{self, QUEUE, RunDir};

/// One failure to handle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub unit: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<String>,
    /// `$MONITOR_SERVICE_RESULT` or the unit's `Result` property.
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<String>,
    /// When it was queued: boot-relative (limits) and wall-clock (shown).
    pub boot_ms: u64,
    pub time_ms: u64,
    /// Who queued it: `on_failure` (the unit's hook), `check` (the repair
    /// found the unit failed again with a run it had not seen).
    pub source: String,
}

impl Pending {
    pub fn new(monitor: &Monitor, source: &str) -> Pending {
        Pending {
            unit: monitor.unit.clone(),
            invocation_id: monitor.invocation_id.clone(),
            result: monitor.result.clone(),
            exit_code: monitor.exit_code.clone(),
            exit_status: monitor.exit_status.clone(),
            boot_ms: crate::time::boot_ms(),
            time_ms: crate::time::now_ms(),
            source: source.to_string(),
        }
    }

    pub fn monitor(&self) -> Monitor {
        Monitor {
            unit: self.unit.clone(),
            result: self.result.clone(),
            exit_code: self.exit_code.clone(),
            exit_status: self.exit_status.clone(),
            invocation_id: self.invocation_id.clone(),
        }
    }
}

const ENTRY: &str = ".json";
const TAKEN: &str = ".taken";

/// Queue a failure. Returns the entry's path.
pub fn push(run: &RunDir, pending: &Pending) -> anyhow::Result<PathBuf> {
    let dir = run.dir(QUEUE)?;
    let path = dir.join(rundir::entry_name(pending.boot_ms, ENTRY));
    rundir::write_atomic(&path, &serde_json::to_vec(pending)?)?;
    Ok(path)
}

/// An entry being handled: remove it with [`Taken::done`].
#[derive(Debug)]
pub struct Taken {
    pub path: PathBuf,
    /// `None`: the entry cannot be read (what it was is in its name only).
    pub pending: Option<Pending>,
}

impl Taken {
    pub fn done(&self) -> anyhow::Result<()> {
        rundir::remove(&self.path)
    }
}

fn read(path: &Path) -> Option<Pending> {
    let text = std::fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Entries a previous worker took and did not finish: it died on them.
pub fn abandoned(run: &RunDir) -> Vec<Taken> {
    abandoned_in(&run.path(QUEUE))
        .into_iter()
        .map(|path| Taken {
            pending: read(&path),
            path,
        })
        .collect()
}

/// Take every queued entry, oldest first.
pub fn take(run: &RunDir) -> anyhow::Result<Vec<Taken>> {
    Ok(take_in(&run.path(QUEUE))?
        .into_iter()
        .map(|path| Taken {
            pending: read(&path),
            path,
        })
        .collect())
}

/// The entries of a queue directory taken and never finished.
pub fn abandoned_in(dir: &Path) -> Vec<PathBuf> {
    rundir::files(dir, TAKEN)
}

/// Take the entries of a queue directory (renamed `.taken`), oldest first.
pub fn take_in(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for path in rundir::files(dir, ENTRY) {
        let taken = path.with_extension("taken");
        std::fs::rename(&path, &taken)
            .with_context(|| format!("cannot take {}", path.display()))?;
        out.push(taken);
    }
    Ok(out)
}

/// The queued failures (not taken), oldest first, left where they are.
pub fn peek(run: &RunDir) -> Vec<Pending> {
    rundir::files(&run.path(QUEUE), ENTRY)
        .iter()
        .filter_map(|p| read(p))
        .collect()
}

/// Whether a run of `unit` is queued (not taken yet).
pub fn holds(run: &RunDir, unit: &str, invocation_id: &str) -> bool {
    peek(run)
        .iter()
        .any(|p| p.unit == unit && p.invocation_id.as_deref() == Some(invocation_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn monitor(unit: &str, id: &str) -> Monitor {
        Monitor {
            unit: unit.into(),
            result: "exit-code".into(),
            exit_code: Some("exited".into()),
            exit_status: Some("3".into()),
            invocation_id: Some(id.into()),
        }
    }

    #[test]
    fn entries_are_taken_oldest_first_and_a_dead_workers_are_found() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::new(tmp.path());
        let mut a = Pending::new(&monitor("a.service", "1"), "on_failure");
        a.boot_ms = 2000;
        let mut b = Pending::new(&monitor("b.service", "2"), "on_failure");
        b.boot_ms = 1000;
        push(&run, &a).unwrap();
        push(&run, &b).unwrap();
        assert!(holds(&run, "a.service", "1"));
        assert!(!holds(&run, "a.service", "2"));

        let taken = take(&run).unwrap();
        let units: Vec<_> = taken
            .iter()
            .map(|t| t.pending.as_ref().unwrap().unit.as_str())
            .collect();
        assert_eq!(units, ["b.service", "a.service"]);
        assert!(!holds(&run, "a.service", "1"), "taken, no longer queued");
        // A worker that died leaves them taken: the next one finds them.
        assert_eq!(abandoned(&run).len(), 2);
        taken[0].done().unwrap();
        assert_eq!(abandoned(&run).len(), 1);
        assert!(take(&run).unwrap().is_empty());
    }
}
