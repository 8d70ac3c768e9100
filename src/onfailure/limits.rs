//! Each unit's restarts and handled runs, under `/run/pimainteno/units/`:
//! the limit `max_repairs_per_hour` is counted here, exactly, from its own
//! list of restart times, whatever the store holds or whether it can be
//! opened at all.
//!
//! Times are boot-relative ([`crate::time::boot_ms`]): a clock that does
//! not step. A Pi has no RTC and sets its clock when NTP answers, often
//! hours or years from where it started; a window on wall-clock time would
//! then hold every restart, or none. /run is emptied at boot, so a count
//! never mixes two boots (a reboot also gives the unit a fresh start).
//!
//! One worker handles failures at a time (a systemd unit), but a manual
//! `pm-onfailure UNIT` may run beside it: the file is read and written
//! under an exclusive lock (flock, dropped by the kernel if we die).

use std::fs::OpenOptions;
use std::path::PathBuf;

use anyhow::Context;
use fs2::FileExt;
use serde::{Deserialize, Serialize};

use super::rundir::{self, RunDir, UNITS};

/// The window of `max_repairs_per_hour`.
pub const HOUR_MS: u64 = 3_600_000;
/// Runs remembered per unit, to tell a failure already handled (queued
/// twice: by its hook and by the repair's check) from a new one.
const SEEN: usize = 64;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitState {
    /// Boot-relative times of the restarts decided (tried), oldest first,
    /// within the last hour.
    #[serde(default)]
    pub restarts_ms: Vec<u64>,
    /// Invocation ids of the runs handled, newest last.
    #[serde(default)]
    pub seen: Vec<String>,
}

impl UnitState {
    /// Restarts within the hour before `now_ms`.
    pub fn restarts_last_hour(&self, now_ms: u64) -> u32 {
        let since = now_ms.saturating_sub(HOUR_MS);
        self.restarts_ms.iter().filter(|&&t| t > since).count() as u32
    }

    pub fn note_restart(&mut self, now_ms: u64) {
        let since = now_ms.saturating_sub(HOUR_MS);
        self.restarts_ms.retain(|&t| t > since);
        self.restarts_ms.push(now_ms);
    }

    pub fn has_seen(&self, invocation_id: &str) -> bool {
        self.seen.iter().any(|s| s == invocation_id)
    }

    pub fn note_seen(&mut self, invocation_id: &str) {
        if !self.has_seen(invocation_id) {
            self.seen.push(invocation_id.to_string());
        }
        let extra = self.seen.len().saturating_sub(SEEN);
        self.seen.drain(..extra);
    }
}

/// A unit's state, locked while held; [`Locked::save`] writes it back.
pub struct Locked {
    path: PathBuf,
    _lock: std::fs::File,
    pub state: UnitState,
}

/// Lock and read `unit`'s state (empty when there is none yet).
pub fn lock(run: &RunDir, unit: &str) -> anyhow::Result<Locked> {
    let dir = run.dir(UNITS)?;
    // Unit names are valid file names (no '/', at most 255 bytes).
    let path = dir.join(unit);
    let lock_path = dir.join(".lock");
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    lock.lock_exclusive()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    let state = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(
                "{} is damaged ({e}); starting the count afresh",
                path.display()
            );
            UnitState::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => UnitState::default(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    Ok(Locked {
        path,
        _lock: lock,
        state,
    })
}

impl Locked {
    pub fn save(&self) -> anyhow::Result<()> {
        rundir::write_atomic(&self.path, &serde_json::to_vec(&self.state)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hour_is_counted_exactly_on_a_clock_that_does_not_step() {
        let mut s = UnitState::default();
        let t0 = 5 * HOUR_MS;
        for i in 0..3 {
            assert_eq!(s.restarts_last_hour(t0 + i), i as u32);
            s.note_restart(t0 + i);
        }
        assert_eq!(s.restarts_last_hour(t0 + 10), 3);
        // Whatever the wall clock did meanwhile (back a day, on a year):
        // boot-relative time only goes on, and the window with it.
        assert_eq!(s.restarts_last_hour(t0 + HOUR_MS - 1), 3);
        assert_eq!(s.restarts_last_hour(t0 + HOUR_MS + 1), 1);
        assert_eq!(s.restarts_last_hour(t0 + 2 * HOUR_MS), 0);
        s.note_restart(t0 + 2 * HOUR_MS);
        assert_eq!(
            s.restarts_ms,
            [t0 + 2 * HOUR_MS],
            "old restarts are dropped"
        );
    }

    #[test]
    fn runs_seen_are_remembered_and_bounded() {
        let mut s = UnitState::default();
        for i in 0..100 {
            s.note_seen(&format!("id{i}"));
        }
        s.note_seen("id99");
        assert_eq!(s.seen.len(), SEEN);
        assert!(s.has_seen("id99") && !s.has_seen("id0"));
    }

    #[test]
    fn the_state_survives_between_processes() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::new(tmp.path());
        let mut l = lock(&run, "a.service").unwrap();
        l.state.note_restart(1000);
        l.state.note_seen("x");
        l.save().unwrap();
        drop(l);
        let l = lock(&run, "a.service").unwrap();
        assert_eq!(l.state.restarts_last_hour(2000), 1);
        assert!(l.state.has_seen("x"));
        // A damaged file starts the count afresh rather than stopping repairs.
        drop(l);
        std::fs::write(tmp.path().join("units/a.service"), b"\0garbage").unwrap();
        assert_eq!(lock(&run, "a.service").unwrap().state, UnitState::default());
    }
}
