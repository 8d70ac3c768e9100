//! The project's `check` command (`cargo test`, `make check`, ...): run by
//! `sh -c` in the project directory, killed with its children on timeout.
//! The offline digest reports it; pm-patch uses it to accept a fix, run
//! contained ([`run_contained`]) and with the tests its output names
//! ([`crate::testrun`]).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::config::CheckSettings;
use crate::process::{self, Limits};
use crate::testrun::{self, TestRun};

/// Lines of output kept: the end of a test run is where the verdict is.
const TAIL_LINES: usize = 40;
/// Output read to find the tests (the whole of it, up to this).
const MAX_OUTPUT: usize = 1 << 20;
/// Output kept when only its end is wanted.
const TAIL_CAPTURE: usize = 256 * 1024;

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
    /// The tests the output names and how each ended (`None`: it names
    /// none, or the output was cut). Not stored: the record keeps the
    /// verdict made from it.
    #[serde(skip)]
    pub tests: Option<TestRun>,
}

/// Run the check in `dir`, as the account, as the user would (the offline
/// digest, in the user's own checkout): its output as it is, not read for
/// tests.
pub fn run(dir: &Path, check: &CheckSettings) -> anyhow::Result<CheckOutcome> {
    run_with(dir, check, None, false)
}

/// Run the check in `dir` for pm-patch: through the sandbox when
/// `contained` is given (the code may be the model's), with the runners
/// asked to name every test, and the tests read from the output.
pub fn run_contained(
    dir: &Path,
    check: &CheckSettings,
    contained: Option<&crate::sandbox::Contained<'_>>,
) -> anyhow::Result<CheckOutcome> {
    run_with(dir, check, contained, true)
}

fn run_with(
    dir: &Path,
    check: &CheckSettings,
    contained: Option<&crate::sandbox::Contained<'_>>,
    name_tests: bool,
) -> anyhow::Result<CheckOutcome> {
    // 2>&1 keeps the order of stdout and stderr as the user would see it.
    let script = format!("exec 2>&1\n{}", check.command);
    let mut cmd = match contained {
        Some(c) => crate::sandbox::command(
            &c.policy,
            c.caps,
            "sh".as_ref(),
            &["-c".into(), script.into()],
        )?,
        None => {
            let mut cmd = Command::new("sh");
            cmd.arg("-c").arg(script).current_dir(dir);
            cmd
        }
    };
    if name_tests {
        // Runners that would leave passing tests unnamed are asked to.
        cmd.envs(testrun::env_for_names(|k| std::env::var(k).ok()));
    }
    let done = process::run(
        &mut cmd,
        Limits {
            timeout: check.timeout,
            max_capture: if name_tests { MAX_OUTPUT } else { TAIL_CAPTURE },
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
        // Cut output would name only some of the tests: all the others
        // would look gone.
        tests: (name_tests && !done.truncated)
            .then(|| testrun::parse(&text))
            .flatten(),
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
