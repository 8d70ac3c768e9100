//! What a failure left behind: the `$MONITOR_*` variables systemd passes to
//! an `OnFailure=` unit, the journal lines of exactly that run of the unit,
//! and a few of the unit's properties.
//!
//! The journal is read through sd-journal (the `systemd` crate). Only
//! fields journald itself stamps decide whose a line is (the `_` fields: a
//! client cannot set them): a run's own lines carry
//! `_SYSTEMD_INVOCATION_ID=<id>`; the service manager's lines about it
//! (`Main process exited`, `Failed with result`) come from `_PID=1` and
//! carry `INVOCATION_ID=<id>`. `INVOCATION_ID=`, `UNIT=` and `MESSAGE_ID=`
//! alone prove nothing: any local user can log a line with them
//! (`logger --journald`). Without read access to the journal (the
//! `systemd-journal` group) sd-journal returns nothing and no error, so an
//! empty read is reported as such.
//!
//! Every journal file is read, not only the system's: with a persistent
//! journal, journald stores what a service running as a user (`User=pi`,
//! uid ≥ 1000) writes in `user-<uid>.journal` (`SplitMode=uid`, the
//! default), and only the manager's lines about it in `system.journal`
//! (recorded in `tests/fixtures/onfailure/README.md`, "User= services").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

/// Bounds on what is kept of a run's journal: the end of it, where the
/// failure is.
pub const MAX_LINES: usize = 200;
pub const MAX_BYTES: usize = 64 * 1024;
/// A longer message is cut (a dumped blob is not evidence).
const MAX_MESSAGE: usize = 2048;
/// How long to wait for the manager's "Failed with result" line: the
/// handler can start before journald has stored the last lines.
const SETTLE: Duration = Duration::from_millis(1000);
/// `SD_MESSAGE_UNIT_FAILURE_RESULT`: "Unit X failed with result Y".
const UNIT_FAILURE_RESULT: &str = "d9b373ed55a64feb8242e02dbe79a49c";

/// The `$MONITOR_*` variables (systemd ≥ 251) and the failed unit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Monitor {
    pub unit: String,
    /// `$MONITOR_SERVICE_RESULT`: `exit-code`, `signal`, `core-dump`,
    /// `timeout`, `oom-kill`, `start-limit-hit`, `resources`...
    pub result: String,
    /// `$MONITOR_EXIT_CODE`: `exited`, `killed`, `dumped`.
    pub exit_code: Option<String>,
    /// `$MONITOR_EXIT_STATUS`: a number, or a signal name (`KILL`).
    pub exit_status: Option<String>,
    pub invocation_id: Option<String>,
}

impl Monitor {
    /// From the environment systemd gives an `OnFailure=` unit. `unit` is
    /// the handler's argument (its instance name); `$MONITOR_UNIT` is used
    /// when it is absent.
    pub fn from_env(unit: Option<&str>) -> anyhow::Result<Monitor> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let unit = unit
            .map(str::to_string)
            .or_else(|| var("MONITOR_UNIT"))
            .context(
                "which unit failed? Give it as the argument (pm-onfailure nginx.service); \
                 systemd passes it as the instance name of pm-onfailure@UNIT.service",
            )?;
        Ok(Monitor {
            unit,
            result: var("MONITOR_SERVICE_RESULT").unwrap_or_else(|| "unknown".into()),
            exit_code: var("MONITOR_EXIT_CODE"),
            exit_status: var("MONITOR_EXIT_STATUS"),
            invocation_id: var("MONITOR_INVOCATION_ID"),
        })
    }
}

/// One journal entry, reduced to what a diagnosis needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalLine {
    /// `__REALTIME_TIMESTAMP`, µs since the epoch.
    pub time_us: u64,
    pub pid: Option<u32>,
    /// `SYSLOG_IDENTIFIER`, else `_COMM`.
    pub ident: String,
    pub message: String,
    /// syslog priority (3 = error).
    pub priority: Option<u8>,
    /// A line of the service manager about the unit (not the unit's own):
    /// journald says it came from PID 1.
    pub from_manager: bool,
    /// `_EXE`, the program that printed it (journald's word), when journald
    /// could still read it (a process that already exited has none).
    pub exe: Option<String>,
}

impl JournalLine {
    /// From an entry's fields, as sd-journal or `journalctl -o json` gives
    /// them. `None` for an entry without a message.
    pub fn from_fields(fields: &BTreeMap<String, String>) -> Option<JournalLine> {
        let message = fields.get("MESSAGE")?;
        let mut message: String = message.trim_end().to_string();
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        Some(JournalLine {
            time_us: fields
                .get("__REALTIME_TIMESTAMP")
                .and_then(|t| t.parse().ok())
                .unwrap_or(0),
            pid: fields.get("_PID").and_then(|p| p.parse().ok()),
            ident: fields
                .get("SYSLOG_IDENTIFIER")
                .or_else(|| fields.get("_COMM"))
                .cloned()
                .unwrap_or_default(),
            message,
            priority: fields.get("PRIORITY").and_then(|p| p.parse().ok()),
            // `_PID` is journald's: no client can claim to be PID 1. The
            // INVOCATION_ID= or UNIT= a line carries is the client's word.
            from_manager: fields.get("_PID").map(String::as_str) == Some("1"),
            exe: fields.get("_EXE").cloned(),
        })
    }

    /// The basename of the program that printed it.
    pub fn program(&self) -> Option<&str> {
        self.exe
            .as_deref()
            .map(|e| e.rsplit('/').next().unwrap_or(e))
    }

    /// `HH:MM:SS ident[pid]: message`, the way the excerpt is shown and stored.
    pub fn display(&self) -> String {
        let secs = self.time_us / 1_000_000;
        let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
        let pid = self.pid.map(|p| format!("[{p}]")).unwrap_or_default();
        format!("{h:02}:{m:02}:{s:02} {}{pid}: {}", self.ident, self.message)
    }

    /// Whether the manager's "failed with result" line for the run.
    fn is_failure_result(&self, fields: &BTreeMap<String, String>) -> bool {
        self.from_manager
            && fields.get("MESSAGE_ID").map(String::as_str) == Some(UNIT_FAILURE_RESULT)
    }
}

/// The end of one run's journal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Excerpt {
    /// Oldest first.
    pub lines: Vec<JournalLine>,
    /// True when older lines were left out (bounds).
    pub truncated: bool,
}

impl Excerpt {
    /// Keep the newest entries within [`MAX_LINES`] and [`MAX_BYTES`];
    /// `entries` come newest first.
    pub fn from_newest(entries: impl IntoIterator<Item = JournalLine>) -> Excerpt {
        let mut lines = Vec::new();
        let mut bytes = 0;
        let mut truncated = false;
        for line in entries {
            if lines.len() == MAX_LINES || bytes + line.message.len() > MAX_BYTES {
                truncated = true;
                break;
            }
            bytes += line.message.len();
            lines.push(line);
        }
        lines.reverse();
        Excerpt { lines, truncated }
    }

    /// The excerpt of a `journalctl -o json` export (one entry per line),
    /// as recorded in `tests/fixtures/onfailure/`.
    pub fn from_export(text: &str) -> anyhow::Result<Excerpt> {
        let mut entries = Vec::new();
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let fields = export_fields(line).with_context(|| format!("entry {}", i + 1))?;
            entries.extend(JournalLine::from_fields(&fields));
        }
        entries.sort_by_key(|l| l.time_us);
        entries.reverse();
        Ok(Excerpt::from_newest(entries))
    }

    pub fn display(&self) -> Vec<String> {
        self.lines.iter().map(JournalLine::display).collect()
    }
}

/// One `journalctl -o json` entry as text fields (binary fields, which
/// journalctl prints as byte arrays, are decoded lossily).
fn export_fields(line: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let value: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(line).context("not a journal entry in JSON")?;
    Ok(value
        .into_iter()
        .filter_map(|(k, v)| {
            let text = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Array(bytes) => {
                    let b: Vec<u8> = bytes
                        .iter()
                        .filter_map(|x| x.as_u64().map(|n| n as u8))
                        .collect();
                    String::from_utf8_lossy(&b).into_owned()
                }
                _ => return None,
            };
            Some((k, text))
        })
        .collect())
}

/// Fields read from each entry (sd-journal reads only these).
const FIELDS: [&str; 12] = [
    "MESSAGE",
    "__REALTIME_TIMESTAMP",
    "_PID",
    "SYSLOG_IDENTIFIER",
    "_COMM",
    "PRIORITY",
    "MESSAGE_ID",
    "_SYSTEMD_INVOCATION_ID",
    "INVOCATION_ID",
    "_EXE",
    "_SYSTEMD_UNIT",
    "UNIT",
];
/// Without an invocation id, the unit's lines of this long ago are read.
const RECENT: Duration = Duration::from_secs(600);

/// Read the end of one run of `unit`: its own lines and the manager's
/// lines about it, oldest first and bounded.
///
/// With the run's invocation id, the lines carrying it, plus the unit's
/// lines within the run's time span that carry none: journald finds a
/// line's invocation through the process's cgroup, and the last lines of a
/// process that has already exited arrive without it (seen in the
/// fixtures' `injection_racy`). Waits up to a second for the manager's
/// "failed with result" line, so that lines still on their way to journald
/// are not missed.
///
/// Without one (`OnFailure=` of a unit whose dependency failed passes
/// none), the unit's lines of the last ten minutes.
pub fn read_journal(unit: &str, invocation_id: Option<&str>) -> anyhow::Result<Excerpt> {
    read_journal_in(Journals::Local, unit, invocation_id)
}

/// Which journal files [`read_journal_in`] reads.
#[derive(Debug, Clone, Copy)]
pub enum Journals<'a> {
    /// This machine's: `/var/log/journal` and `/run/log/journal`.
    Local,
    /// The files in one directory, like `journalctl -D` (tests).
    Directory(&'a Path),
}

/// [`read_journal`] on the given files.
pub fn read_journal_in(
    journals: Journals<'_>,
    unit: &str,
    invocation_id: Option<&str>,
) -> anyhow::Result<Excerpt> {
    let Some(id) = invocation_id else {
        return recent(journals, unit);
    };
    let started = Instant::now();
    loop {
        let (excerpt, complete) = of_invocation(journals, unit, id)?;
        if complete || started.elapsed() >= SETTLE {
            return Ok(excerpt);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Open the journal: every file of it this process may read. Neither
/// `SD_JOURNAL_SYSTEM` nor `SD_JOURNAL_CURRENT_USER`: either would leave
/// out the `user-<uid>.journal` files of other users, where the output of
/// `User=` services is.
fn open(journals: Journals<'_>) -> anyhow::Result<systemd::journal::Journal> {
    let mut j = match journals {
        Journals::Local => systemd::journal::OpenOptions::default()
            .system(false)
            .current_user(false)
            .local_only(true)
            .open()
            .context("cannot open the journal (sd_journal_open)")?,
        Journals::Directory(dir) => systemd::journal::OpenDirectoryOptions::default()
            .system(false)
            .current_user(false)
            .open_directory(dir.as_os_str().as_encoded_bytes())
            .with_context(|| format!("cannot open the journal in {}", dir.display()))?,
    };
    // Field values longer than this are cut by sd-journal itself.
    let _ = j.set_data_threshold(MAX_MESSAGE + 64);
    Ok(j)
}

/// This machine's journal files that this process cannot read: sd-journal
/// skips them without an error, so a missing `systemd-journal` group shows
/// only as missing lines. Looked at when a run's own lines are missing.
pub fn unreadable_journal_files() -> Vec<PathBuf> {
    let Ok(id) = std::fs::read_to_string("/etc/machine-id") else {
        return Vec::new();
    };
    let mut unreadable = Vec::new();
    for root in ["/var/log/journal", "/run/log/journal"] {
        let Ok(entries) = std::fs::read_dir(Path::new(root).join(id.trim())) else {
            continue;
        };
        for path in entries.flatten().map(|e| e.path()) {
            if path.extension().is_some_and(|e| e == "journal")
                && std::fs::File::open(&path).is_err()
            {
                unreadable.push(path);
            }
        }
    }
    unreadable.sort();
    unreadable
}

/// The fields of the current entry.
fn fields(j: &mut systemd::journal::Journal) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    for name in FIELDS {
        if let Ok(Some(f)) = j.get_data(name)
            && let Some(v) = f.value()
        {
            fields.insert(name.to_string(), String::from_utf8_lossy(v).into_owned());
        }
    }
    if !fields.contains_key("__REALTIME_TIMESTAMP")
        && let Ok(t) = j.timestamp_usec()
    {
        fields.insert("__REALTIME_TIMESTAMP".into(), t.to_string());
    }
    fields
}

fn of_invocation(journals: Journals<'_>, unit: &str, id: &str) -> anyhow::Result<(Excerpt, bool)> {
    let mut j = open(journals)?;
    // The run's own lines, or PID 1's about the run: `(A) OR (B AND C)`,
    // terms of different fields being ANDed by sd-journal.
    j.match_add("_SYSTEMD_INVOCATION_ID", id)?;
    j.match_or()?;
    j.match_add("INVOCATION_ID", id)?;
    j.match_add("_PID", "1")?;
    j.seek_tail().context("cannot read the journal")?;
    let mut lines = Vec::new();
    let mut complete = false;
    let mut bytes = 0;
    while lines.len() <= MAX_LINES && bytes <= MAX_BYTES && j.previous()? > 0 {
        let f = fields(&mut j);
        if !of_run(&f, id) {
            continue;
        }
        if let Some(line) = JournalLine::from_fields(&f) {
            complete |= line.is_failure_result(&f);
            bytes += line.message.len();
            lines.push(line);
        }
    }
    // Oldest first from here on: the journal's own order, which the sort
    // below keeps for lines of one time (a program's last lines often
    // reach journald in one read and share their timestamp).
    lines.reverse();
    // The unit's lines without an invocation id, within the run's span.
    if let (Some(first), Some(last)) = (
        lines.first().map(|l| l.time_us),
        lines.last().map(|l| l.time_us),
    ) {
        j.match_flush()?;
        j.match_add("_SYSTEMD_UNIT", unit)?;
        j.seek_realtime_usec(first)?;
        let mut extra = 0;
        while extra < MAX_LINES && j.next()? > 0 {
            let f = fields(&mut j);
            let t: u64 = f
                .get("__REALTIME_TIMESTAMP")
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            if t > last {
                break;
            }
            // journald stamped it with an invocation: read above if it
            // was this run's, another run's otherwise.
            if f.contains_key("_SYSTEMD_INVOCATION_ID") {
                continue;
            }
            if let Some(line) = JournalLine::from_fields(&f) {
                lines.push(line);
                extra += 1;
            }
        }
    }
    lines.sort_by_key(|l| l.time_us);
    lines.reverse();
    Ok((Excerpt::from_newest(lines), complete))
}

/// Whether an entry the invocation query returned is evidence of the run:
/// stamped by journald with its invocation, or PID 1's line about it. The
/// query says the same; this holds when the files are read another way.
fn of_run(f: &BTreeMap<String, String>, id: &str) -> bool {
    let field = |k: &str| f.get(k).map(String::as_str);
    field("_SYSTEMD_INVOCATION_ID") == Some(id)
        || (field("_PID") == Some("1") && field("INVOCATION_ID") == Some(id))
}

fn recent(journals: Journals<'_>, unit: &str) -> anyhow::Result<Excerpt> {
    let mut j = open(journals)?;
    // The unit's processes (journald's cgroup field), or PID 1 about it.
    j.match_add("_SYSTEMD_UNIT", unit)?;
    j.match_or()?;
    j.match_add("UNIT", unit)?;
    j.match_add("_PID", "1")?;
    j.seek_tail().context("cannot read the journal")?;
    let since = crate::time::now_ms().saturating_sub(RECENT.as_millis() as u64) * 1000;
    let mut lines = Vec::new();
    while lines.len() < MAX_LINES && j.previous()? > 0 {
        let f = fields(&mut j);
        let field = |k: &str| f.get(k).map(String::as_str);
        if field("_SYSTEMD_UNIT") != Some(unit)
            && !(field("_PID") == Some("1") && field("UNIT") == Some(unit))
        {
            continue;
        }
        match JournalLine::from_fields(&f) {
            Some(line) if line.time_us < since => break,
            Some(line) => lines.push(line),
            None => {}
        }
    }
    Ok(Excerpt::from_newest(lines))
}

/// The unit's properties a diagnosis and a repair look at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitFacts {
    /// The command line of `ExecStart=` (its `argv[]`).
    pub exec_start: Option<String>,
    pub fragment_path: Option<String>,
    pub n_restarts: Option<u64>,
    pub result: Option<String>,
    /// `Restart=`: `no`, `on-failure`, `always`...
    pub restart: Option<String>,
    pub active_state: Option<String>,
    pub sub_state: Option<String>,
    /// The interpreter of a script `ExecStart=` runs (its `#!` line):
    /// `python3` for `#!/usr/bin/env python3`. Who printed a line when
    /// journald could not say (the process had exited).
    pub interpreter: Option<String>,
}

impl UnitFacts {
    /// Parse `systemctl show -p ...` output (`Key=value` lines).
    pub fn parse(text: &str) -> UnitFacts {
        let mut f = UnitFacts::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = Some(v.trim().to_string()).filter(|v| !v.is_empty());
            match k {
                "ExecStart" => f.exec_start = v.as_deref().and_then(exec_argv),
                "FragmentPath" => f.fragment_path = v,
                "NRestarts" => f.n_restarts = v.and_then(|n| n.parse().ok()),
                "Result" => f.result = v,
                "Restart" => f.restart = v,
                "ActiveState" => f.active_state = v,
                "SubState" => f.sub_state = v,
                _ => {}
            }
        }
        f
    }

    /// True while systemd is about to restart the unit by itself
    /// (`Restart=` fired: the unit waits in `auto-restart`).
    pub fn auto_restarting(&self) -> bool {
        self.sub_state.as_deref() == Some("auto-restart")
    }
}

/// `{ path=/usr/bin/x ; argv[]=/usr/bin/x -v ; ignore_errors=no ; ... }` →
/// `/usr/bin/x -v`.
fn exec_argv(value: &str) -> Option<String> {
    let start = value.find("argv[]=")? + "argv[]=".len();
    let rest = &value[start..];
    let end = rest.find(" ; ").unwrap_or(rest.len());
    Some(rest[..end].trim().to_string())
}

/// `systemctl show -p A,B -- unit` as a map.
pub fn show(unit: &str, props: &[&str]) -> anyhow::Result<BTreeMap<String, String>> {
    let text = crate::process::output("systemctl", &["show", "-p", &props.join(","), "--", unit])?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// `ExecMainCode`/`ExecMainStatus` (a `CLD_*` number and an exit status or
/// signal number) as the `$MONITOR_EXIT_CODE`/`$MONITOR_EXIT_STATUS` an
/// `OnFailure=` unit would have been given.
pub fn exec_main(code: &str, status: &str) -> (Option<String>, Option<String>) {
    let status: Option<i32> = status.parse().ok();
    let signal = |n: i32| {
        const NAMES: [&str; 32] = [
            "0", "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV",
            "USR2", "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN",
            "TTOU", "URG", "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
        ];
        NAMES
            .get(n as usize)
            .map_or_else(|| n.to_string(), |s| s.to_string())
    };
    match (code, status) {
        ("1", Some(s)) => (Some("exited".into()), Some(s.to_string())),
        ("2", Some(s)) => (Some("killed".into()), Some(signal(s))),
        ("3", Some(s)) => (Some("dumped".into()), Some(signal(s))),
        _ => (None, None),
    }
}

/// The interpreter a script's `#!` line names (`/usr/bin/env python3` and
/// `/usr/bin/python3 -u` alike give `python3`); `None` for anything else.
pub fn interpreter(first_line: &[u8]) -> Option<String> {
    let line = std::str::from_utf8(first_line.strip_prefix(b"#!")?)
        .ok()?
        .lines()
        .next()?;
    let mut words = line.split_whitespace();
    let mut program = words.next()?;
    if program.rsplit('/').next() == Some("env") {
        program = words.find(|w| !w.starts_with('-'))?;
    }
    Some(program.rsplit('/').next()?.to_string()).filter(|p| !p.is_empty())
}

/// The first bytes of the program `ExecStart=` runs, for its `#!` line.
fn script_interpreter(exec_start: &str) -> Option<String> {
    use std::io::Read;
    let path = exec_start.split_whitespace().next()?;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(path).ok()?.read(&mut head).ok()?;
    interpreter(&head[..n])
}

/// `systemctl show` for the properties in [`UnitFacts`].
pub fn unit_facts(unit: &str) -> anyhow::Result<UnitFacts> {
    let text = crate::process::output(
        "systemctl",
        &[
            "show",
            "-p",
            "ExecStart,FragmentPath,NRestarts,Result,Restart,ActiveState,SubState",
            "--",
            unit,
        ],
    )?;
    let mut facts = UnitFacts::parse(&text);
    facts.interpreter = facts.exec_start.as_deref().and_then(script_interpreter);
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_start_is_its_command_line() {
        let f = UnitFacts::parse(
            "ExecStart={ path=/usr/bin/python3 ; argv[]=/usr/bin/python3 /srv/w.py --once ; ignore_errors=no ; start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }\nNRestarts=4\nRestart=on-failure\nSubState=auto-restart\nFragmentPath=\n",
        );
        assert_eq!(
            f.exec_start.as_deref(),
            Some("/usr/bin/python3 /srv/w.py --once")
        );
        assert_eq!(f.n_restarts, Some(4));
        assert_eq!(f.fragment_path, None);
        assert!(f.auto_restarting());
    }

    #[test]
    fn a_scripts_interpreter_is_read_from_its_first_line() {
        assert_eq!(
            interpreter(b"#!/usr/bin/python3\nimport os\n").as_deref(),
            Some("python3")
        );
        assert_eq!(
            interpreter(b"#!/usr/bin/env -S python3 -u\n").as_deref(),
            Some("python3")
        );
        assert_eq!(interpreter(b"#! /bin/sh -e\n").as_deref(), Some("sh"));
        assert_eq!(interpreter(b"\x7fELF\x02\x01"), None);
        assert_eq!(interpreter(b"#!\n"), None);
    }

    #[test]
    fn exec_main_reads_like_monitor_variables() {
        assert_eq!(
            exec_main("1", "3"),
            (Some("exited".into()), Some("3".into()))
        );
        assert_eq!(
            exec_main("2", "9"),
            (Some("killed".into()), Some("KILL".into()))
        );
        assert_eq!(
            exec_main("3", "11"),
            (Some("dumped".into()), Some("SEGV".into()))
        );
        assert_eq!(exec_main("0", "0"), (None, None));
    }

    #[test]
    fn the_excerpt_keeps_the_end_within_bounds() {
        let line = |i: u64| JournalLine {
            time_us: i,
            pid: Some(7),
            ident: "x".into(),
            message: format!("line {i}"),
            priority: None,
            from_manager: false,
            exe: None,
        };
        let e = Excerpt::from_newest((0..500u64).rev().map(line));
        assert!(e.truncated);
        assert_eq!(e.lines.len(), MAX_LINES);
        assert_eq!(e.lines.last().unwrap().message, "line 499");
        assert_eq!(e.lines[0].message, format!("line {}", 500 - MAX_LINES));
    }
}
