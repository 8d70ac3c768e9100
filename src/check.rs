//! The project's `check` command (`cargo test`, `make check`, ...): run by
//! `sh -c` in the project directory, killed with its children on timeout.
//! The offline digest reports it; pm-patch uses it to accept a fix.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::config::CheckSettings;
use crate::process::{self, Limits};

/// Lines of output kept: the end of a test run is where the verdict is.
const TAIL_LINES: usize = 40;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOutcome {
    pub command: String,
    pub passed: bool,
    /// `None` when killed by the timeout.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub duration_ms: u64,
    /// The last lines of stdout and stderr, interleaved as captured.
    pub output_tail: String,
}

/// Run the check in `dir`.
pub fn run(dir: &Path, check: &CheckSettings) -> anyhow::Result<CheckOutcome> {
    let mut cmd = Command::new("sh");
    // 2>&1 keeps the order of stdout and stderr as the user would see it.
    cmd.arg("-c")
        .arg(format!("exec 2>&1\n{}", check.command))
        .current_dir(dir);
    let done = process::run(
        &mut cmd,
        Limits {
            timeout: check.timeout,
            max_capture: 256 * 1024,
        },
    )
    .with_context(|| {
        format!(
            "cannot start the check `{}` in {}",
            check.command,
            dir.display()
        )
    })?;
    let text = String::from_utf8_lossy(&done.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n");
    Ok(CheckOutcome {
        command: check.command.clone(),
        passed: done.success(),
        exit_code: if done.timed_out { None } else { done.code() },
        timed_out: done.timed_out,
        duration_ms: done.elapsed.as_millis() as u64,
        output_tail: tail,
    })
}

impl CheckOutcome {
    /// One line for a report: `passed in 1.2s`, `failed (exit 101) in 3.4s`.
    pub fn verdict(&self) -> String {
        let secs = Duration::from_millis(self.duration_ms).as_secs_f64();
        match (self.passed, self.timed_out, self.exit_code) {
            (true, _, _) => format!("passed in {secs:.1}s"),
            (false, true, _) => format!("timed out after {secs:.1}s"),
            (false, false, Some(code)) => format!("failed (exit {code}) in {secs:.1}s"),
            (false, false, None) => format!("failed in {secs:.1}s"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(cmd: &str, ms: u64) -> CheckSettings {
        CheckSettings {
            command: cmd.into(),
            timeout: Duration::from_millis(ms),
        }
    }

    #[test]
    fn passes_fails_and_times_out() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "x").unwrap();
        let ok = run(dir.path(), &check("test -f f && echo fine", 5000)).unwrap();
        assert!(ok.passed, "{ok:?}");
        assert_eq!(ok.output_tail, "fine");
        let bad = run(dir.path(), &check("echo boom >&2; exit 4", 5000)).unwrap();
        assert!(!bad.passed);
        assert_eq!(bad.exit_code, Some(4));
        assert_eq!(bad.output_tail, "boom");
        assert!(bad.verdict().starts_with("failed (exit 4)"));
        let slow = run(dir.path(), &check("sleep 30", 200)).unwrap();
        assert!(slow.timed_out && !slow.passed);
        assert!(slow.verdict().starts_with("timed out"));
    }

    #[test]
    fn keeps_only_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let out = run(dir.path(), &check("seq 1 100", 5000)).unwrap();
        assert_eq!(out.output_tail.lines().count(), TAIL_LINES);
        assert!(out.output_tail.ends_with("100"));
    }
}
