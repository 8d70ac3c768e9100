//! codex's Linux sandbox, seen from outside.
//!
//! codex 0.169 runs every shell command of the model through its bundled
//! bubblewrap (`bwrap`) plus a seccomp filter of its own. A unit's
//! hardening can keep bubblewrap from starting; then every command fails,
//! the model gets the error as the command's output, and codex still ends
//! the turn with exit 0 and an answer written without reading a single
//! file. The JSONL does not reliably show it: items of commands that fail
//! fast are racy (`tests/fixtures/codex-exec/README.md`). Hence:
//!
//! 1. [`probe`]: `codex sandbox -P <profile> -C <dir> -- true` runs a
//!    command in the same sandbox without a model. It is run once per run
//!    and sandbox mode, before the first call; if it fails, no model is
//!    asked, and the error quotes bubblewrap's line and names the unit
//!    setting that blocks it ([`explain`]).
//! 2. [`failed_command_output`]: the transcript's command outputs are
//!    scanned as well, for failures the probe did not catch.
//!
//! What each failure looks like was recorded under the real hardening of
//! pimainteno.service in a booted bookworm container
//! (`tests/fixtures/codex-sandbox/`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::llm::Purpose;
use crate::process::{self, Limits};

/// The longest a probe may take. `true` in the sandbox takes about 0.2 s on
/// a PC; bubblewrap hangs, rather than failing, when `capset` is refused.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// The drop-in that pimainteno-system-generator writes for the units that
/// run codex (see `systemd/drop-ins/codex-sandbox.conf`).
pub const DROP_IN: &str = "55-pimainteno-codex.conf";

/// codex's sandbox modes, as its built-in permission profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    ReadOnly,
    WorkspaceWrite,
}

impl Mode {
    pub fn of(purpose: Purpose) -> Mode {
        match purpose {
            Purpose::Summary | Purpose::Diagnosis => Mode::ReadOnly,
            Purpose::Patch => Mode::WorkspaceWrite,
        }
    }

    /// The `--sandbox` value of `codex exec`.
    pub fn exec_flag(self) -> &'static str {
        match self {
            Mode::ReadOnly => "read-only",
            Mode::WorkspaceWrite => "workspace-write",
        }
    }

    /// The `-P` value of `codex sandbox` for the same sandbox.
    pub fn profile(self) -> &'static str {
        match self {
            Mode::ReadOnly => ":read-only",
            Mode::WorkspaceWrite => ":workspace",
        }
    }
}

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A command ran in the sandbox.
    Works,
    /// This codex has no `codex sandbox -P` (older than 0.169): nothing was
    /// learned, the calls go ahead. The text says why.
    Unsupported(String),
    /// The sandbox cannot start here; the text is the whole explanation.
    Fails(String),
}

/// Run `true` in codex's sandbox. `Err` only when codex cannot be started
/// at all (the caller reports that as for any call).
pub fn probe(
    command: &str,
    codex_home: &Path,
    mode: Mode,
    timeout: Duration,
) -> std::io::Result<Probe> {
    let args = probe_args(codex_home, mode);
    let mut cmd = Command::new(command);
    cmd.args(&args)
        .env("CODEX_HOME", codex_home)
        .current_dir(codex_home);
    let done = process::run(
        &mut cmd,
        Limits {
            timeout,
            max_capture: 64 * 1024,
        },
    )?;
    let shown = format!("`codex {}`", args.join(" "));
    if done.success() {
        return Ok(Probe::Works);
    }
    let stderr = String::from_utf8_lossy(&done.stderr);
    if done.timed_out {
        return Ok(Probe::Fails(format!(
            "{shown} did not finish within {} s. {}",
            timeout.as_secs(),
            explain(None, current_unit().as_deref())
        )));
    }
    // clap's words for a subcommand or flag this codex does not know.
    if stderr.contains("unrecognized subcommand") || stderr.contains("unexpected argument") {
        return Ok(Probe::Unsupported(format!(
            "{shown} is not supported by this codex (it is older than 0.169?), so its sandbox \
             was not checked: {}",
            super::startup_reason(&done.stderr)
        )));
    }
    let status = super::status_text(&done);
    Ok(Probe::Fails(match error_line(&stderr) {
        Some(line) => format!(
            "{shown} failed ({status}): {line}. {}",
            explain(Some(&line), current_unit().as_deref())
        ),
        None => {
            // Not a failure seen before: its words may still point somewhere.
            let reason = super::startup_reason(&done.stderr);
            let advice = explain(Some(&reason), current_unit().as_deref());
            format!("{shown} failed ({status}): {reason}. {advice}")
        }
    }))
}

fn probe_args(codex_home: &Path, mode: Mode) -> Vec<String> {
    // The directory only has to exist: the check is whether bubblewrap
    // starts, not what the project allows. CODEX_HOME always does.
    vec![
        "sandbox".into(),
        "-P".into(),
        mode.profile().into(),
        "-C".into(),
        codex_home.to_string_lossy().into_owned(),
        "--".into(),
        "true".into(),
    ]
}

/// The line that says codex's sandbox itself failed: bubblewrap's own
/// error (`bwrap: ...`), or the panic of codex's sandbox helper (whose
/// most telling line is "error applying Linux sandbox restrictions").
pub fn error_line(text: &str) -> Option<String> {
    let mut panic = None;
    for line in text.lines().map(str::trim) {
        if line.starts_with("bwrap: ") || line.contains("error applying Linux sandbox restrictions")
        {
            return Some(super::shorten(line, 300));
        }
        if panic.is_none() && line.contains("panicked at linux-sandbox/") {
            panic = Some(super::shorten(line, 300));
        }
    }
    panic
}

/// The sandbox error of one `command_execution` item, if it failed because
/// the sandbox could not start. Only a failed command whose output *begins*
/// with the error counts: bubblewrap fails before the command runs, while
/// a command that merely prints such a line (`cat` of this very file) does
/// not start with it.
pub fn failed_command_output(output: &str, exit_code: Option<i64>) -> Option<String> {
    if exit_code == Some(0) {
        return None;
    }
    let first = output.lines().map(str::trim).find(|l| !l.is_empty())?;
    if first.starts_with("bwrap: ") || first.contains("panicked at linux-sandbox/") {
        error_line(output)
    } else {
        None
    }
}

/// What bubblewrap or codex needs, and the unit setting that can refuse it.
struct Hint {
    /// Words of the error line that point to this need.
    needles: &'static [&'static str],
    need: &'static str,
    setting: &'static str,
    /// What the codex drop-in sets for it.
    drop_in: &'static str,
}

/// From the failures recorded under pimainteno.service's hardening, one
/// relaxation taken away at a time (`tests/fixtures/codex-sandbox/`).
const HINTS: &[Hint] = &[
    Hint {
        needles: &["overflowuid", "overflowgid"],
        need: "bubblewrap reads /proc/sys/kernel/overflowuid",
        setting: "ProcSubset=",
        drop_in: "ProcSubset=all",
    },
    Hint {
        needles: &["new namespace", "unshare"],
        need: "bubblewrap creates user, mount, PID, network and IPC namespaces",
        setting: "RestrictNamespaces=",
        drop_in: "RestrictNamespaces=user mnt pid net ipc",
    },
    Hint {
        needles: &["NETLINK"],
        need: "bubblewrap brings up loopback in its network namespace through a netlink socket",
        setting: "RestrictAddressFamilies=",
        drop_in: "RestrictAddressFamilies=AF_NETLINK",
    },
    Hint {
        needles: &["Seccomp", "seccomp"],
        need: "codex installs a seccomp filter of its own",
        setting: "SystemCallFilter=",
        drop_in: "seccomp in SystemCallFilter=",
    },
    Hint {
        needles: &["slave", "mount", "pivot_root", "old root"],
        need: "bubblewrap needs the mount, umount2 and pivot_root system calls",
        setting: "SystemCallFilter=",
        drop_in: "mount umount2 pivot_root in SystemCallFilter=, after ~@privileged",
    },
];

/// A probe that never ends: recorded when `capset` is refused.
const HANG: Hint = Hint {
    needles: &[],
    need: "bubblewrap hangs when the capset system call is refused",
    setting: "SystemCallFilter=",
    drop_in: "capset in SystemCallFilter=, after ~@privileged",
};

/// What to check, for an error line (`None`: the probe hung). `unit` is
/// the systemd unit we run in, if any.
pub fn explain(line: Option<&str>, unit: Option<&str>) -> String {
    let hint = match line {
        None => Some(&HANG),
        Some(l) => HINTS
            .iter()
            .find(|h| h.needles.iter().any(|n| l.contains(n))),
    };
    let Some(unit) = unit else {
        return match hint {
            Some(h) if h.setting == "RestrictNamespaces=" => format!(
                "{}: this user may not; check `sysctl user.max_user_namespaces` (must be above 0) \
                 and, where it exists, kernel.unprivileged_userns_clone=1.",
                h.need
            ),
            Some(h) => format!(
                "{}, and something around this process refuses it (a container's seccomp or \
                 namespace policy?).",
                h.need
            ),
            None => "Run `codex sandbox -P :read-only -- true` by hand to see it fail.".into(),
        };
    };
    let check = match hint {
        Some(h) => format!(
            "Check {} in {unit}: {} (the codex drop-in sets {}).",
            h.setting, h.need, h.drop_in
        ),
        None => format!("A setting of {unit} keeps bubblewrap from starting."),
    };
    format!(
        "{check} With [llm] provider = \"codex\", pimainteno-system-generator writes the \
         settings codex needs as {unit}.d/{DROP_IN}: `systemctl cat {unit}` shows whether it is \
         there (run `systemctl daemon-reload` after changing the provider) and whether a later \
         drop-in undoes it."
    )
}

/// The unit this process runs in, when systemd started it: the last
/// `*.service` component of our cgroup (`0::/system.slice/pimainteno.service`).
pub fn current_unit() -> Option<String> {
    std::env::var_os("INVOCATION_ID")?;
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    unit_of_cgroup(&cgroup)
}

fn unit_of_cgroup(cgroup: &str) -> Option<String> {
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    path.rsplit('/')
        .find(|c| c.ends_with(".service"))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines_from_the_recorded_probes() {
        let bwrap = "WARNING: proceeding, even though we could not create PATH aliases: x\n\
                     bwrap: Can't read /proc/sys/kernel/overflowuid: No such file or directory\n";
        assert_eq!(
            error_line(bwrap).unwrap(),
            "bwrap: Can't read /proc/sys/kernel/overflowuid: No such file or directory"
        );
        let panic = "\nthread 'main' (1) panicked at linux-sandbox/src/linux_run_main.rs:213:13:\n\
                     error applying Linux sandbox restrictions: Sandbox(SeccompInstall(Seccomp(Os { code: 1 })))\n\
                     note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert!(
            error_line(panic)
                .unwrap()
                .starts_with("error applying Linux sandbox restrictions: Sandbox(SeccompInstall")
        );
        assert_eq!(error_line("ls: cannot access 'x'\n"), None);
    }

    #[test]
    fn only_a_failed_command_that_starts_with_the_error_counts() {
        let out = "bwrap: loopback: Failed to create NETLINK_ROUTE socket: x\n";
        assert!(failed_command_output(out, Some(1)).is_some());
        assert!(failed_command_output(out, None).is_some());
        assert_eq!(failed_command_output(out, Some(0)), None);
        // `grep bwrap: README.md` failing for another reason.
        let quoted = "README.md:12: bwrap: Can't read /proc/sys/kernel/overflowuid\n";
        assert_eq!(failed_command_output(quoted, Some(2)), None);
    }

    #[test]
    fn every_recorded_failure_names_its_setting() {
        let unit = Some("pimainteno.service");
        for (line, setting) in [
            (
                "bwrap: Can't read /proc/sys/kernel/overflowuid: No such file or directory",
                "ProcSubset=",
            ),
            (
                "bwrap: No permissions to create a new namespace, likely because the kernel does not allow non-privileged user namespaces.",
                "RestrictNamespaces=",
            ),
            (
                "bwrap: loopback: Failed to create NETLINK_ROUTE socket: Address family not supported by protocol",
                "RestrictAddressFamilies=",
            ),
            (
                "bwrap: Failed to make / slave: Operation not permitted",
                "SystemCallFilter=",
            ),
            (
                "bwrap: pivot_root: Operation not permitted",
                "SystemCallFilter=",
            ),
            (
                "error applying Linux sandbox restrictions: Sandbox(SeccompInstall(Seccomp(Os { code: 1 })))",
                "SystemCallFilter=",
            ),
        ] {
            let text = explain(Some(line), unit);
            assert!(
                text.starts_with(&format!("Check {setting} in pimainteno.service: ")),
                "{line}: {text}"
            );
            assert!(
                text.contains("pimainteno.service.d/55-pimainteno-codex.conf"),
                "{text}"
            );
        }
        assert!(explain(None, unit).contains("capset"));
        assert!(explain(Some("bwrap: something new"), unit).starts_with("A setting of"));
        // Run by hand, there is no unit to blame.
        assert!(
            explain(
                Some("bwrap: No permissions to create a new namespace"),
                None
            )
            .contains("user.max_user_namespaces")
        );
        let by_hand = explain(Some("bwrap: Can't read /proc/sys/kernel/overflowuid"), None);
        assert!(by_hand.starts_with("bubblewrap reads /proc/sys/kernel/overflowuid, and"));
        assert!(!by_hand.contains("ProcSubset"), "{by_hand}");
    }

    #[test]
    fn unit_from_the_cgroup() {
        assert_eq!(
            unit_of_cgroup("0::/system.slice/pimainteno.service\n").as_deref(),
            Some("pimainteno.service")
        );
        assert_eq!(
            unit_of_cgroup(
                "0::/system.slice/system-pimainteno\\x2dpatch.slice/pimainteno-patch@weather.service\n"
            )
            .as_deref(),
            Some("pimainteno-patch@weather.service")
        );
        assert_eq!(
            unit_of_cgroup("0::/user.slice/user-1000.slice/session-2.scope\n"),
            None
        );
    }
}
