//! Deterministic analyzers: known failure shapes recognised from the
//! result, the exit status and the journal lines, without any LLM. They
//! run first; their answer stands alone with the `none` provider and is
//! the fallback when an LLM reply does not validate.
//!
//! Each analyzer is one rule in [`RULES`] order: systemd's own results and
//! exit statuses first (they are certain), then error lines in the unit's
//! output, then a generic answer.
//!
//! Whose word a line is matters: the unit's output is whatever its process
//! chose to print ("config.yaml: No such file or directory; using
//! defaults" is harmless). It informs a diagnosis, but only systemd's own
//! lines (PID 1) or the exit status can say "a restart would fail the same
//! way" ([`Action::None`]). A language's error counts only when journald
//! says that language's program printed it (`_EXE`).

use super::evidence::{Excerpt, JournalLine, Monitor, UnitFacts};
use super::signature::is_error_line;

/// What a repair may do: the allow-list. Nothing else is ever carried out,
/// whatever a journal line or an LLM reply says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Restart the unit (after `reset-failed` when its start limit was hit).
    Restart,
    /// Hand the failure to pm-patch (the unit's project patches code), and
    /// restart meanwhile.
    Patch,
    /// Record only: a restart would fail the same way.
    None,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Restart, Action::Patch, Action::None];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Restart => "restart",
            Action::Patch => "patch",
            Action::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// An analyzer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The rule that matched (`exec`, `oom`, `python`...), `exit_status`
    /// for the generic answer.
    pub kind: &'static str,
    pub cause: String,
    pub confidence_pct: u8,
    /// The lines it rests on, as shown in the excerpt.
    pub evidence: Vec<String>,
    pub action: Action,
}

/// What an analyzer looks at.
pub struct Input<'a> {
    pub monitor: &'a Monitor,
    pub excerpt: &'a Excerpt,
    pub facts: &'a UnitFacts,
    /// The unit belongs to a project whose `patch` is not `off`.
    pub patchable: bool,
}

impl Input<'_> {
    fn status(&self) -> Option<&str> {
        self.monitor.exit_status.as_deref()
    }

    fn own(&self) -> impl Iterator<Item = &JournalLine> {
        self.excerpt.lines.iter().filter(|l| !l.from_manager)
    }

    /// The last line (own or the manager's) containing one of `needles`,
    /// case-insensitive: evidence shown with a finding, never its reason.
    fn last_with(&self, needles: &[&str]) -> Option<&JournalLine> {
        self.excerpt
            .lines
            .iter()
            .rev()
            .find(|l| contains(l, needles))
    }

    /// The manager's last line containing one of `needles`.
    fn manager_with(&self, needles: &[&str]) -> Option<&JournalLine> {
        self.excerpt
            .lines
            .iter()
            .rev()
            .find(|l| l.from_manager && contains(l, needles))
    }

    /// The unit's last words containing one of `needles`: its last
    /// [`LAST_WORDS`] lines, where a fatal error is; what it said earlier
    /// and carried on after was not fatal.
    fn last_words_with(&self, needles: &[&str]) -> Option<&JournalLine> {
        self.own()
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .take(LAST_WORDS)
            .find(|l| contains(l, needles))
    }

    /// The program that printed `line`: journald's `_EXE`, else that of
    /// another line of the same process (the last lines of a process that
    /// has exited come without one), else the unit's `ExecStart=` program
    /// (a script's interpreter).
    fn program_of<'l>(&'l self, line: &'l JournalLine) -> Option<&'l str> {
        line.program()
            .or_else(|| {
                self.excerpt
                    .lines
                    .iter()
                    .filter(|l| l.pid.is_some() && l.pid == line.pid)
                    .find_map(JournalLine::program)
            })
            .or(self.facts.interpreter.as_deref())
            .or_else(|| {
                let argv0 = self
                    .facts
                    .exec_start
                    .as_deref()?
                    .split_whitespace()
                    .next()?;
                argv0.rsplit('/').next()
            })
    }

    /// The exit status is one of the sysexits a program uses to say that
    /// running it again will not help (bad usage, data, input, account,
    /// permission, configuration).
    fn status_says_permanent(&self) -> bool {
        matches!(
            self.status(),
            Some("64" | "65" | "66" | "67" | "68" | "77" | "78")
        )
    }

    /// A code error goes to pm-patch when the project patches, else the
    /// unit is restarted.
    fn code_action(&self) -> Action {
        if self.patchable {
            Action::Patch
        } else {
            Action::Restart
        }
    }

    fn program(&self) -> String {
        self.facts
            .exec_start
            .as_deref()
            .and_then(|c| c.split_whitespace().next())
            .unwrap_or("its ExecStart= program")
            .to_string()
    }
}

fn contains(line: &JournalLine, needles: &[&str]) -> bool {
    let lower = line.message.to_ascii_lowercase();
    needles.iter().any(|n| lower.contains(n))
}

/// How many of the unit's last lines are its last words.
const LAST_WORDS: usize = 5;

/// Programs that are not a compiled Rust program: a "panicked at" they
/// print is text, not a panic.
fn interpreter(program: &str) -> bool {
    [
        "sh", "bash", "dash", "zsh", "busybox", "node", "perl", "ruby",
    ]
    .contains(&program)
        || program.starts_with("python")
        || program.starts_with("perl5")
        || program.starts_with("ruby")
}

type Rule = fn(&Input<'_>) -> Option<Finding>;

/// In order: the first that matches decides.
const RULES: [Rule; 16] = [
    start_limit,
    exec,
    user,
    namespace,
    setup,
    oom,
    timeout,
    dependency,
    rust_panic,
    python,
    signal,
    disk_full,
    address_in_use,
    permission,
    no_such_file,
    connection_refused,
];

/// Run the analyzers; the generic answer when none matches.
pub fn analyze(input: &Input<'_>) -> Finding {
    RULES
        .iter()
        .find_map(|rule| rule(input))
        .unwrap_or_else(|| generic(input))
}

fn finding(
    kind: &'static str,
    cause: String,
    confidence_pct: u8,
    evidence: Vec<&JournalLine>,
    action: Action,
) -> Finding {
    Finding {
        kind,
        cause,
        confidence_pct,
        evidence: evidence.into_iter().map(JournalLine::display).collect(),
        action,
    }
}

/// Whether systemd stopped restarting the unit because of its start
/// limit. systemd 252 passes `start-limit-hit` as the result only when the
/// last run itself succeeded; after a failed run the result is that run's
/// (`exit-code`) and only the manager's line tells.
pub fn start_limit_hit(monitor: &Monitor, excerpt: &Excerpt) -> bool {
    monitor.result == "start-limit-hit"
        || excerpt
            .lines
            .iter()
            .any(|l| l.from_manager && l.message.contains("Start request repeated too quickly"))
}

fn start_limit(i: &Input<'_>) -> Option<Finding> {
    if !start_limit_hit(i.monitor, i.excerpt) {
        return None;
    }
    let last_error = i
        .own()
        .filter(|l| is_error_line(&l.message, l.priority))
        .last();
    let mut evidence: Vec<&JournalLine> = last_error.into_iter().collect();
    evidence.extend(i.last_with(&["start request repeated too quickly"]));
    Some(finding(
        "start_limit",
        format!(
            "systemd gave up restarting {}: it failed too often in a short time \
             (StartLimitBurst=/StartLimitIntervalSec=){}{}",
            i.monitor.unit,
            i.facts
                .n_restarts
                .map(|n| format!(", after {n} automatic restarts"))
                .unwrap_or_default(),
            last_error
                .map(|l| format!("; the last run said: {}", l.message))
                .unwrap_or_default()
        ),
        90,
        evidence,
        Action::Restart,
    ))
}

fn exec(i: &Input<'_>) -> Option<Finding> {
    (i.status() == Some("203")).then(|| {
        finding(
            "exec",
            format!(
                "systemd could not execute {} (status 203/EXEC): the program is missing, \
                 not executable, or its interpreter (#! line) is missing; a restart fails the same way",
                i.program()
            ),
            95,
            i.last_with(&["failed to execute", "failed at step exec", "203/exec"])
                .into_iter()
                .collect(),
            Action::None,
        )
    })
}

fn user(i: &Input<'_>) -> Option<Finding> {
    (i.status() == Some("217")).then(|| {
        finding(
            "user",
            "the account in the unit's User= (or Group=) does not exist (status 217/USER); \
             create it (sysusers.d) or fix the unit"
                .into(),
            95,
            i.last_with(&[
                "failed to determine user",
                "217/user",
                "failed at step user",
            ])
            .into_iter()
            .collect(),
            Action::None,
        )
    })
}

fn namespace(i: &Input<'_>) -> Option<Finding> {
    (i.status() == Some("226")).then(|| {
        finding(
            "namespace",
            "systemd could not set up the unit's sandbox (status 226/NAMESPACE): usually a \
             directory in ReadWritePaths=/ReadOnlyPaths=/BindPaths= is missing (prefix it with \"-\" \
             to make it optional)"
                .into(),
            90,
            i.last_with(&["namespac", "226/namespace"])
                .into_iter()
                .collect(),
            Action::None,
        )
    })
}

/// Other statuses systemd uses for its own setup steps (200-243).
fn setup(i: &Input<'_>) -> Option<Finding> {
    let n: u16 = i.status()?.parse().ok()?;
    (200..=243).contains(&n).then(|| {
        finding(
            "setup",
            format!(
                "systemd failed to set up the process (status {n}, a step before the program \
                 ran); see `systemctl status {}` for the step",
                i.monitor.unit
            ),
            80,
            i.last_with(&["failed at step", "failed to"])
                .into_iter()
                .collect(),
            Action::None,
        )
    })
}

fn oom(i: &Input<'_>) -> Option<Finding> {
    (i.monitor.result == "oom-kill").then(|| {
        finding(
            "oom",
            "killed by the out-of-memory killer: it used more memory than its MemoryMax= \
             or than the machine had"
                .into(),
            90,
            i.last_with(&["oom", "out of memory", "memory"])
                .into_iter()
                .collect(),
            Action::Restart,
        )
    })
}

fn timeout(i: &Input<'_>) -> Option<Finding> {
    (i.monitor.result == "timeout").then(|| {
        finding(
            "timeout",
            format!(
                "{} did not finish starting (or stopping) within its timeout \
                 (TimeoutStartSec=/TimeoutStopSec=) and was killed",
                i.monitor.unit
            ),
            85,
            i.last_with(&["timed out", "timeout"]).into_iter().collect(),
            Action::Restart,
        )
    })
}

fn dependency(i: &Input<'_>) -> Option<Finding> {
    // systemd's word only: the unit may print these words itself.
    let line = i.manager_with(&["dependency failed"])?;
    Some(finding(
        "dependency",
        "a unit it depends on (Requires=/BindsTo=) failed, so it was not started; repair \
         that unit first"
            .into(),
        85,
        vec![line],
        Action::None,
    ))
}

/// A rule on an error the unit's files or disk give: systemd's word or a
/// permanent exit status stops restarts; the unit's own last words alone
/// name the cause but the unit is still restarted (within the limits).
fn file_error(
    i: &Input<'_>,
    kind: &'static str,
    needles: &[&str],
    cause: impl FnOnce(&JournalLine) -> String,
) -> Option<Finding> {
    if let Some(line) = i.manager_with(needles) {
        return Some(finding(kind, cause(line), 90, vec![line], Action::None));
    }
    let line = i.last_words_with(needles)?;
    let (confidence, action, why) = if i.status_says_permanent() {
        (85, Action::None, "")
    } else {
        (
            60,
            Action::Restart,
            "; restarted all the same: only systemd's own word or the exit status may stop a restart",
        )
    };
    Some(finding(
        kind,
        format!("{}{why}", cause(line)),
        confidence,
        vec![line],
        action,
    ))
}

fn disk_full(i: &Input<'_>) -> Option<Finding> {
    file_error(
        i,
        "disk_full",
        &[
            "no space left on device",
            "enospc",
            "disk full",
            "disk quota exceeded",
        ],
        |_| {
            "a file system is full (No space left on device); free space (journalctl \
             --vacuum-size, old logs, caches)"
                .into()
        },
    )
}

fn rust_panic(i: &Input<'_>) -> Option<Finding> {
    let lines: Vec<&JournalLine> = i.own().collect();
    let at = lines.iter().rposition(|l| {
        l.message.contains("panicked at") && !i.program_of(l).is_some_and(interpreter)
    })?;
    let mut evidence = vec![lines[at]];
    // Since Rust 1.73 the message is on the next line.
    let message = match lines.get(at + 1) {
        Some(next) if !next.message.starts_with("note:") => {
            evidence.push(next);
            next.message.clone()
        }
        _ => lines[at].message.clone(),
    };
    Some(finding(
        "rust_panic",
        format!("the program panicked (a bug in its code): {message}"),
        90,
        evidence,
        i.code_action(),
    ))
}

fn python(i: &Input<'_>) -> Option<Finding> {
    // The traceback of a Python process: a shell script can print one too.
    let lines: Vec<&JournalLine> = i.own().collect();
    let start = lines.iter().rposition(|l| {
        l.message.starts_with("Traceback (most recent call last)")
            && i.program_of(l).is_some_and(|p| p.starts_with("python"))
    })?;
    let pid = lines[start].pid;
    let tail: Vec<&JournalLine> = lines[start..]
        .iter()
        .copied()
        .filter(|l| l.pid == pid)
        .collect();
    // The exception is the first line after the frames that is not indented.
    let exception = tail
        .iter()
        .skip(1)
        .find(|l| !l.message.starts_with(' ') && !l.message.is_empty())?;
    let frame = tail
        .iter()
        .rfind(|l| l.message.trim_start().starts_with("File \""));
    let mut evidence = vec![tail[0]];
    evidence.extend(frame);
    evidence.push(exception);
    Some(finding(
        "python",
        format!(
            "an uncaught Python exception: {}{}",
            exception.message,
            frame
                .map(|f| format!(" ({})", f.message.trim()))
                .unwrap_or_default()
        ),
        90,
        evidence,
        i.code_action(),
    ))
}

fn address_in_use(i: &Input<'_>) -> Option<Finding> {
    let line = i.last_words_with(&["address already in use", "eaddrinuse", "address in use"])?;
    Some(finding(
        "address_in_use",
        "the address or port it listens on is taken by another process (Address already in \
         use); `ss -ltnp` shows which"
            .into(),
        85,
        vec![line],
        Action::Restart,
    ))
}

fn permission(i: &Input<'_>) -> Option<Finding> {
    file_error(
        i,
        "permission",
        &["permission denied", "eacces", "operation not permitted"],
        |line| {
            format!(
                "permission denied: the unit's account cannot read or write a file it needs: {}",
                line.message
            )
        },
    )
}

fn no_such_file(i: &Input<'_>) -> Option<Finding> {
    file_error(
        i,
        "no_such_file",
        &["no such file or directory", "enoent"],
        |line| format!("a file it needs is missing: {}", line.message),
    )
}

fn connection_refused(i: &Input<'_>) -> Option<Finding> {
    let line = i.last_words_with(&["connection refused", "econnrefused"])?;
    Some(finding(
        "connection_refused",
        "a service it connects to was not accepting connections (Connection refused); it may \
         not be up yet"
            .into(),
        80,
        vec![line],
        Action::Restart,
    ))
}

fn signal(i: &Input<'_>) -> Option<Finding> {
    if !matches!(i.monitor.result.as_str(), "signal" | "core-dump") {
        return None;
    }
    let sig = i.status().unwrap_or("?");
    let crash = matches!(sig, "SEGV" | "ABRT" | "BUS" | "ILL" | "FPE" | "SYS");
    let cause = if crash {
        format!(
            "the program crashed (SIG{sig}{})",
            if i.monitor.result == "core-dump" {
                ", core dumped"
            } else {
                ""
            }
        )
    } else {
        format!(
            "the program was killed by SIG{sig} from outside (an operator, a script, or a watchdog)"
        )
    };
    Some(finding(
        "signal",
        cause,
        85,
        i.last_with(&["signal", "core"]).into_iter().collect(),
        if crash {
            i.code_action()
        } else {
            Action::Restart
        },
    ))
}

fn generic(i: &Input<'_>) -> Finding {
    let last_error = i
        .own()
        .filter(|l| is_error_line(&l.message, l.priority))
        .last();
    let status = match (&i.monitor.exit_code, i.status()) {
        (Some(c), Some(s)) => format!("{c}, status {s}"),
        (_, Some(s)) => format!("status {s}"),
        _ => format!("result {}", i.monitor.result),
    };
    finding(
        "exit_status",
        match last_error {
            Some(l) => format!("it stopped ({status}) after reporting: {}", l.message),
            None => format!("it stopped ({status}) without saying why in its output"),
        },
        30,
        last_error.into_iter().collect(),
        Action::Restart,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The OOM killer could not be recorded (the fixtures' container has no
    /// memory controller: tests/fixtures/onfailure/README.md); systemd's
    /// result word is what the analyzer goes by.
    #[test]
    fn an_oom_kill_is_recognised_by_its_result() {
        let monitor = Monitor {
            unit: "big.service".into(),
            result: "oom-kill".into(),
            exit_code: Some("killed".into()),
            exit_status: Some("KILL".into()),
            invocation_id: None,
        };
        let excerpt = Excerpt {
            lines: vec![JournalLine {
                time_us: 0,
                pid: Some(1),
                ident: "systemd".into(),
                message: "big.service: A process of this unit has been killed by the OOM killer."
                    .into(),
                priority: Some(4),
                from_manager: true,
                exe: Some("/usr/lib/systemd/systemd".into()),
            }],
            truncated: false,
        };
        let f = analyze(&Input {
            monitor: &monitor,
            excerpt: &excerpt,
            facts: &UnitFacts::default(),
            patchable: false,
        });
        assert_eq!((f.kind, f.action), ("oom", Action::Restart));
        assert_eq!(f.evidence.len(), 1);
    }
}
