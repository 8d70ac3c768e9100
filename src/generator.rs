//! `pimainteno-system-generator`: the configuration turned into unit
//! drop-ins (DESIGN.md §1, §6), at boot and at every `daemon-reload`.
//!
//! What it writes into the generator's normal output directory:
//!
//! - `pimainteno.timer.d/50-pimainteno-config.conf`: the schedule. The
//!   shipped timer has a default `OnCalendar=`; the drop-in first resets the
//!   list with an empty `OnCalendar=`, then adds the configured expressions
//!   (one or two for a cron line), and `RandomizedDelaySec=`.
//! - `pimainteno.service.d/50-pimainteno-config.conf`: `User=`/`Group=` when
//!   `[service]` names them (git refuses repositories owned by another user),
//!   and `ReadWritePaths=` for the project directories and for a store or
//!   codex home configured outside `/var/lib/pimainteno`: the service runs
//!   with `ProtectSystem=strict`, so these are the only places it may write.
//! - `pimainteno.service.d/55-pimainteno-codex.conf`, only with
//!   `[llm] provider = "codex"`: the relaxations codex's own sandbox
//!   (bubblewrap) needs, from `systemd/drop-ins/codex-sandbox.conf`, where
//!   each line says why. Other providers keep the full hardening.
//! - `<unit>.d/50-pimainteno-onfailure.conf` for every watched unit
//!   (`[systemd_monitor] units` and the projects' `units`, only with
//!   `[systemd_monitor] enabled`): `OnFailure=pm-onfailure@%n.service`.
//!   `pm-onfailure@.service.d/50-pimainteno-config.conf`: its account
//!   (`User=`/`Group=`, like the service's) and a store outside the state
//!   directory. pm-onfailure itself is never watched.
//! - `pimainteno-dashboard.socket.d/50-pimainteno-config.conf`: `[web]
//!   host` and `port` as `ListenStream=` (after an empty one that clears the
//!   shipped 127.0.0.1:8740), with `FreeBind=yes` for one specific
//!   non-loopback address, which may not be configured yet at boot.
//!   `pimainteno-dashboard.service.d/50-pimainteno-config.conf`: the
//!   account, the store (`PIMAINTENO_STORE`, read-only except LMDB's
//!   `lock.mdb`), and off loopback the password hash as the credential
//!   `web-password` (`LoadCredential=`: the file may be root's alone).
//! - With `[scheduler] enabled = false`: a `/dev/null` symlink that masks
//!   `pimainteno.timer` (nothing is scheduled, `systemctl enable` says the
//!   timer is masked); `systemctl start pimainteno.service` still works.
//!   (A timer still running when it becomes masked is marked failed, so the
//!   README says to stop it first.)
//!
//! Architecture Invariant: a generator must never fail the boot. A bad
//! configuration is reported to the kernel log (where early-boot messages
//! go), nothing is written, and the process exits 0; the shipped units keep
//! their defaults, and the service itself then fails with exit 78 and the
//! same errors in its journal. A watched unit is the exception: a name
//! systemd would refuse (left out by the configuration's validation) or a
//! hook that cannot be written is logged and skipped, and every other unit
//! keeps its hook; dropping them all would unhook every watched unit for
//! one typo.
//!
//! The pure part ([`plan`]) maps [`Settings`] to files and is unit-tested;
//! [`run`] adds loading and writing.

use std::ffi::{CStr, CString, OsString};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::config::{self, LoadOptions, Settings};
use crate::llm::codex::sandbox::DROP_IN as CODEX_DROP_IN;

/// The timer the schedule belongs to.
pub const TIMER: &str = "pimainteno.timer";
/// The oneshot service the timer starts.
pub const SERVICE: &str = "pimainteno.service";
/// Name of every drop-in written. "50-" sorts before the `override.conf`
/// that `systemctl edit` writes, so a user's override still wins.
pub const DROP_IN: &str = "50-pimainteno-config.conf";
/// The template systemd starts when a watched unit fails.
pub const ONFAILURE: &str = "pm-onfailure@.service";
/// The service that repairs the failures pm-onfailure@ queued.
pub const REPAIR: &str = "pimainteno-repair.service";
/// The service that asks the LLM about them.
pub const EXPLAIN: &str = "pimainteno-explain.service";
/// The drop-in that orders one project's pimainteno-patch@ after another's.
pub const ORDER_DROP_IN: &str = "50-pimainteno-order.conf";
/// The drop-in that hooks a watched unit up to it.
pub const ONFAILURE_DROP_IN: &str = "50-pimainteno-onfailure.conf";
/// The template pm-onfailure starts when it leaves work for a project.
pub const PATCH: &str = "pimainteno-patch@.service";
/// The dashboard's socket: `[web] host` and `port`.
pub const DASHBOARD_SOCKET: &str = "pimainteno-dashboard.socket";
/// The dashboard, started by its socket.
pub const DASHBOARD: &str = "pimainteno-dashboard.service";
/// The credential pm-dashboard reads the password hash from first.
pub const WEB_PASSWORD_CREDENTIAL: &str = "web-password";
/// The units that run codex and get its sandbox drop-in.
const CODEX_UNITS: &[&str] = &[SERVICE, EXPLAIN, PATCH];
/// The drop-in with codex's relaxations (see `systemd/drop-ins/`).
const CODEX_SANDBOX: &str = include_str!("../systemd/drop-ins/codex-sandbox.conf");
/// The service's `StateDirectory=`: always writable, never listed.
pub const STATE_DIR: &str = "/var/lib/pimainteno";
/// The account the shipped service runs as (sysusers.d).
pub const DEFAULT_USER: &str = "pimainteno";

/// One file to create under the generator's output directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedFile {
    /// Relative to the output directory, e.g. `pimainteno.timer.d/50-….conf`.
    pub path: PathBuf,
    pub content: Content,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A regular file with this text.
    Text(String),
    /// A symlink to `/dev/null`: the unit is masked.
    Mask,
}

/// Everything the generator writes for these settings, and the warnings
/// to report (paths it had to leave out).
pub fn plan(settings: &Settings) -> (Vec<GeneratedFile>, Vec<String>) {
    let mut warnings = Vec::new();
    let mut files = Vec::new();
    if settings.scheduler.enabled {
        files.push(GeneratedFile {
            path: Path::new(&format!("{TIMER}.d")).join(DROP_IN),
            content: Content::Text(timer_drop_in(settings)),
        });
    } else {
        files.push(GeneratedFile {
            path: PathBuf::from(TIMER),
            content: Content::Mask,
        });
    }
    // pm-patch's template writes where the service does.
    let service = service_drop_in(settings, &mut warnings);
    files.push(GeneratedFile {
        path: Path::new(&format!("{PATCH}.d")).join(DROP_IN),
        content: Content::Text(service.clone()),
    });
    // The timer's run: the summaries, then each patching project's
    // pimainteno-patch@ unit, one after another.
    let patching = patching_projects(settings);
    let mut with_wants = service;
    if !patching.is_empty() {
        let _ = write!(
            with_wants,
            "\n[Unit]\n# pm-patch runs in a unit of its own per project (its check is contained in\n\
             # namespaces this unit may not create), after the summaries.\nWants={}\n",
            patching
                .iter()
                .map(|p| patch_instance(p))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    files.push(GeneratedFile {
        path: Path::new(&format!("{SERVICE}.d")).join(DROP_IN),
        content: Content::Text(with_wants),
    });
    for pair in patching.windows(2) {
        files.push(GeneratedFile {
            path: Path::new(&format!("{}.d", patch_instance(pair[1]))).join(ORDER_DROP_IN),
            content: Content::Text(format!(
                "{}[Unit]\n# One project at a time: a Pi runs one check well, two badly.\nAfter={}\n",
                header(settings),
                patch_instance(pair[0])
            )),
        });
    }
    // The hook's unit only queues (/run/pimainteno): the account alone.
    files.push(GeneratedFile {
        path: Path::new(&format!("{ONFAILURE}.d")).join(DROP_IN),
        content: Content::Text(account(settings)),
    });
    for unit in [REPAIR, EXPLAIN] {
        files.push(GeneratedFile {
            path: Path::new(&format!("{unit}.d")).join(DROP_IN),
            content: Content::Text(onfailure_drop_in(settings)),
        });
    }
    files.push(GeneratedFile {
        path: Path::new(&format!("{DASHBOARD_SOCKET}.d")).join(DROP_IN),
        content: Content::Text(dashboard_socket_drop_in(settings)),
    });
    files.push(GeneratedFile {
        path: Path::new(&format!("{DASHBOARD}.d")).join(DROP_IN),
        content: Content::Text(dashboard_drop_in(settings, &mut warnings)),
    });
    if settings.systemd_monitor.enabled {
        // Left out when the configuration was loaded, so that the other
        // units keep their hooks; said here, where a boot's problems go.
        for bad in &settings.bad_units {
            warnings.push(format!(
                "{bad}; this unit is not watched (no OnFailure= for it), the others are"
            ));
        }
        for unit in watched_units(settings) {
            if unit.starts_with("pm-onfailure@") {
                warnings.push(format!(
                    "{unit}: pm-onfailure never handles its own failures; no OnFailure= written for it"
                ));
                continue;
            }
            files.push(GeneratedFile {
                path: Path::new(&format!("{unit}.d")).join(ONFAILURE_DROP_IN),
                content: Content::Text(format!(
                    "{}[Unit]\n# Watched by PiMainteno: a failure starts pm-onfailure for this unit.\n\
                     OnFailure=pm-onfailure@%n.service\n",
                    header(settings)
                )),
            });
        }
    }
    if settings.llm.provider == config::ProviderKind::Codex {
        for unit in CODEX_UNITS {
            files.push(GeneratedFile {
                path: Path::new(&format!("{unit}.d")).join(CODEX_DROP_IN),
                content: Content::Text(format!("{}{CODEX_SANDBOX}", header(settings))),
            });
        }
    }
    (files, warnings)
}

/// The projects pm-patch works on: enabled, with a check, `patch` not off.
pub fn patching_projects(settings: &Settings) -> Vec<&str> {
    settings
        .projects
        .iter()
        .filter(|p| p.enabled && p.check.is_some() && p.patch != config::PatchMode::Off)
        .map(|p| p.name.as_str())
        .collect()
}

/// `pimainteno-patch@<project>.service` (project names need no escaping:
/// letters, digits, `-`, `_`, `.`).
pub fn patch_instance(project: &str) -> String {
    format!("pimainteno-patch@{project}.service")
}

/// `[systemd_monitor] units`, then each project's units, without repeats.
pub fn watched_units(settings: &Settings) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    let all = settings
        .systemd_monitor
        .units
        .iter()
        .chain(settings.projects.iter().flat_map(|p| p.units.iter()));
    for u in all {
        if !out.contains(&u.as_str()) {
            out.push(u);
        }
    }
    out
}

fn header(settings: &Settings) -> String {
    let mut h = String::from(
        "# Written by pimainteno-system-generator from the PiMainteno configuration:\n",
    );
    for f in &settings.files {
        let _ = writeln!(h, "#   {}", f.display());
    }
    h.push_str("# Do not edit: change the configuration, then run `systemctl daemon-reload`.\n\n");
    h
}

/// The timer drop-in: the schedule replaces the shipped default.
pub fn timer_drop_in(settings: &Settings) -> String {
    let sched = &settings.scheduler;
    let mut s = header(settings);
    if let Some(cron) = &sched.cron {
        let _ = writeln!(s, "# cron = \"{cron}\"");
    }
    s.push_str("[Timer]\n");
    // An empty assignment clears the shipped unit's OnCalendar= list;
    // without it the configured schedule would be added to the default.
    s.push_str("OnCalendar=\n");
    for cal in &sched.on_calendar {
        let _ = writeln!(s, "OnCalendar={}", escape_specifiers(cal));
    }
    let _ = writeln!(
        s,
        "RandomizedDelaySec={}",
        time_span(sched.randomized_delay)
    );
    s
}

/// The start of a `[Service]` drop-in: the header and the account
/// (`User=`/`Group=` from `[service]`, when set).
fn account(settings: &Settings) -> String {
    let mut s = header(settings);
    s.push_str("[Service]\n");
    if let Some(user) = &settings.service.user {
        let _ = writeln!(s, "User={user}");
    }
    if let Some(group) = &settings.service.group {
        let _ = writeln!(s, "Group={group}");
    }
    s
}

/// The service drop-in: the account and the writable paths.
pub fn service_drop_in(settings: &Settings, warnings: &mut Vec<String>) -> String {
    let mut s = account(settings);
    for path in writable_paths(settings) {
        match read_write_path(&path) {
            Some(entry) => {
                let _ = writeln!(s, "ReadWritePaths={entry}");
            }
            None => warnings.push(format!(
                "{}: a path with a line break cannot go into a unit file; the service cannot write there",
                path.display()
            )),
        }
    }
    s
}

/// The drop-in of pm-onfailure's repair and explain units: the account,
/// and the store when it is outside the state directory (they only read
/// the projects).
pub fn onfailure_drop_in(settings: &Settings) -> String {
    let mut s = account(settings);
    if !settings.cache.path.starts_with(STATE_DIR)
        && let Some(entry) = read_write_path(&settings.cache.path)
    {
        let _ = writeln!(s, "ReadWritePaths={entry}");
    }
    s
}

/// The dashboard socket's drop-in: `[web] host:port` replaces the shipped
/// address.
pub fn dashboard_socket_drop_in(settings: &Settings) -> String {
    let web = &settings.web;
    let mut s = header(settings);
    s.push_str("[Socket]\n");
    // As OnCalendar= above: without the reset, both addresses would listen.
    s.push_str("ListenStream=\n");
    let ip = match web.host.parse::<IpAddr>() {
        Ok(ip) => ip,
        // validate accepts "localhost" besides addresses: the IPv4 one, as
        // pm-dashboard binds it by hand.
        Err(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    // SocketAddr puts an IPv6 address in brackets, as ListenStream= wants it.
    let _ = writeln!(s, "ListenStream={}", SocketAddr::new(ip, web.port));
    if !ip.is_loopback() && !ip.is_unspecified() {
        s.push_str(
            "# One address of this machine's: bind it even before the network has\n\
             # configured it (the socket starts early at boot).\nFreeBind=yes\n",
        );
    }
    s
}

/// The dashboard's drop-in: the account (the store belongs to it), the
/// store, and off loopback the password hash as a credential.
pub fn dashboard_drop_in(settings: &Settings, warnings: &mut Vec<String>) -> String {
    let mut s = account(settings);
    let store = &settings.cache.path;
    let lock = store.join("lock.mdb");
    match (store.to_str(), read_write_path(&lock)) {
        (Some(text), Some(entry)) => {
            let _ = writeln!(s, "Environment={}", unit_value(&format!("PIMAINTENO_STORE={text}")));
            // Read-only everywhere else: LMDB opens its lock file for writing
            // even for read-only transactions.
            let _ = writeln!(s, "ReadWritePaths={entry}");
        }
        _ => warnings.push(format!(
            "{}: a store path with a line break cannot go into a unit file; the dashboard reads the default store",
            store.display()
        )),
    }
    let web = &settings.web;
    if !web.is_loopback() {
        let file = &web.password_file;
        match file.to_str().filter(|t| !t.contains(['\n', '\r'])) {
            Some(text) if file.is_file() => {
                // Read by systemd as root, so the hash may stay root's alone.
                let _ = writeln!(
                    s,
                    "LoadCredential={WEB_PASSWORD_CREDENTIAL}:{}",
                    escape_specifiers(text)
                );
            }
            _ => warnings.push(format!(
                "[web] host = \"{}\" is not loopback and the password file {} is missing: pm-dashboard refuses to serve without a password; create it with `openssl passwd -6 | sudo install -m 600 /dev/stdin {}`, then run `sudo systemctl daemon-reload`",
                web.host,
                file.display(),
                file.display()
            )),
        }
    }
    s
}

/// Project directories, then the store and the codex home when they are
/// outside the state directory. Deduplicated, in configuration order.
pub fn writable_paths(settings: &Settings) -> Vec<PathBuf> {
    let state = Path::new(STATE_DIR);
    let mut out: Vec<PathBuf> = Vec::new();
    let mut add = |p: &Path| {
        if !out.iter().any(|q| q == p) {
            out.push(p.to_path_buf());
        }
    };
    for project in &settings.projects {
        add(&project.path);
    }
    if !settings.cache.path.starts_with(state) {
        add(&settings.cache.path);
    }
    if settings.llm.provider == config::ProviderKind::Codex
        && !settings.llm.codex_home.starts_with(state)
    {
        add(&settings.llm.codex_home);
    }
    out
}

/// One `ReadWritePaths=` value: "-" makes a missing directory harmless
/// (the service would otherwise fail to set up its namespace, status
/// 226/NAMESPACE, just because one project is gone). Quoted when needed;
/// `None` for a path that cannot be written into a unit file at all.
fn read_write_path(path: &Path) -> Option<String> {
    let text = path.to_str()?;
    if text.contains(['\n', '\r']) {
        return None;
    }
    Some(unit_value(&format!("-{text}")))
}

/// One word of a setting that splits its value into words
/// (`ReadWritePaths=`, `Environment=`): specifiers escaped, and quoted
/// when it holds a space, a quote or a backslash. No line breaks.
fn unit_value(text: &str) -> String {
    let value = escape_specifiers(text);
    if value
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\'))
    {
        let quoted = value.replace('\\', "\\\\").replace('"', "\\\"");
        format!("\"{quoted}\"")
    } else {
        value
    }
}

/// `%` starts a specifier in unit files (`%h`, `%n`): write it as `%%`.
fn escape_specifiers(s: &str) -> String {
    s.replace('%', "%%")
}

/// A systemd time span: whole seconds as `1800s`, else milliseconds.
fn time_span(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Write the planned files into `dir` (the generator's normal directory).
/// Every file is tried; those that could not be written are returned,
/// each with why.
pub fn write<'f>(
    dir: &Path,
    files: &'f [GeneratedFile],
) -> Vec<(&'f GeneratedFile, anyhow::Error)> {
    files
        .iter()
        .filter_map(|f| write_one(dir, f).err().map(|e| (f, e)))
        .collect()
}

fn write_one(dir: &Path, f: &GeneratedFile) -> anyhow::Result<()> {
    let target = dir.join(&f.path);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    match &f.content {
        Content::Text(text) => std::fs::write(&target, text)
            .with_context(|| format!("cannot write {}", target.display())),
        Content::Mask => std::os::unix::fs::symlink("/dev/null", &target)
            .with_context(|| format!("cannot create the mask {}", target.display())),
    }
}

/// A watched unit's `OnFailure=` drop-in: it stands alone, so failing to
/// write one unit's must not take the others' away.
fn is_hook(f: &GeneratedFile) -> bool {
    f.path.file_name() == Some(std::ffi::OsStr::new(ONFAILURE_DROP_IN))
}

/// Kernel log levels used here (syslog priorities).
#[derive(Debug, Clone, Copy)]
pub enum Level {
    Error = 3,
    Warning = 4,
    Info = 6,
}

/// Log one message per line to `/dev/kmsg` (generators run before
/// journald; the kernel buffer ends up in the journal). Where there is no
/// kernel log (a container), to syslog (`/dev/log`, i.e. journald), and to
/// stderr as well.
pub fn kernel_log(level: Level, message: &str) {
    const IDENT: &CStr = c"pimainteno-system-generator";
    let mut kmsg = std::fs::OpenOptions::new().write(true).open("/dev/kmsg");
    for line in message.lines().filter(|l| !l.trim().is_empty()) {
        let record = format!(
            "<{}>pimainteno-system-generator[{}]: {line}\n",
            level as u8,
            std::process::id()
        );
        // One write() per record: /dev/kmsg takes each write as one message.
        let written = match kmsg.as_mut() {
            Ok(f) => f.write_all(record.as_bytes()).is_ok(),
            Err(_) => false,
        };
        if written {
            continue;
        }
        if let Ok(text) = CString::new(line) {
            // SAFETY: IDENT is a static C string (openlog keeps the pointer);
            // the format is a literal taking exactly one C string.
            unsafe {
                libc::openlog(IDENT.as_ptr(), libc::LOG_PID, libc::LOG_DAEMON);
                libc::syslog(level as libc::c_int, c"%s".as_ptr(), text.as_ptr());
            }
        }
        eprint!("{}", &record[3..]);
    }
}

/// The generator's entry point: `ARGS` are the normal, early and late
/// output directories (only the first is used; systemd ≥ 232 passes all
/// three, a manual test run may pass one). Always returns normally: every
/// problem is logged and leaves the output directory empty.
pub fn run(args: &[OsString], config_path: Option<PathBuf>, log: &mut dyn FnMut(Level, &str)) {
    let Some(dir) = args.first().map(PathBuf::from) else {
        log(
            Level::Error,
            "usage: pimainteno-system-generator NORMAL_DIR [EARLY_DIR LATE_DIR]; nothing written",
        );
        return;
    };
    let opts = LoadOptions {
        path: config_path,
        defaults_if_missing: false,
    };
    let settings = match config::load_for_service(&opts, DEFAULT_USER) {
        Ok(s) => s,
        Err(errors) => {
            log(
                Level::Error,
                &format!(
                    "bad configuration, nothing generated (the units keep their defaults; fix it and run `systemctl daemon-reload`):\n{errors}"
                ),
            );
            return;
        }
    };
    let (files, warnings) = plan(&settings);
    for w in warnings {
        log(Level::Warning, &w);
    }
    let (hooks, rest): (Vec<_>, Vec<_>) = write(&dir, &files)
        .into_iter()
        .partition(|(f, _)| is_hook(f));
    if !rest.is_empty() {
        for (_, e) in &rest {
            log(
                Level::Error,
                &format!("{e:#}; the units keep their defaults"),
            );
        }
        // Half a plan is worse than none (a User= without its paths).
        for f in &files {
            let _ = std::fs::remove_file(dir.join(&f.path));
        }
        return;
    }
    for (f, e) in &hooks {
        let unit = f
            .path
            .parent()
            .and_then(Path::file_stem)
            .unwrap_or_default();
        log(
            Level::Warning,
            &format!(
                "{e:#}; {} is not watched (no OnFailure= for it), the others are",
                unit.to_string_lossy()
            ),
        );
    }
    if !settings.scheduler.enabled {
        log(
            Level::Info,
            "[scheduler] enabled = false: pimainteno.timer masked",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::process::Command;

    fn settings(toml: &str) -> Settings {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pimainteno.toml");
        // systemd runs generators as root, whose default store is under
        // /var/lib; `cargo test` as a user would get the user's own.
        let toml = if toml.contains("[cache]") {
            toml.to_string()
        } else {
            format!("{toml}\n[cache]\npath = \"/var/lib/pimainteno/store\"\n")
        };
        std::fs::write(&path, toml).unwrap();
        config::load(&LoadOptions {
            path: Some(path),
            defaults_if_missing: false,
        })
        .unwrap()
    }

    fn text(files: &[GeneratedFile], unit: &str) -> String {
        let path = Path::new(&format!("{unit}.d")).join(DROP_IN);
        match files.iter().find(|f| f.path == path).map(|f| &f.content) {
            Some(Content::Text(t)) => t.clone(),
            other => panic!("no drop-in for {unit}: {other:?}"),
        }
    }

    /// The `Key=value` lines of a drop-in (comments and sections dropped).
    fn assignments(text: &str) -> Vec<&str> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with('[') && !l.is_empty())
            .collect()
    }

    #[test]
    fn timer_schedule_resets_the_default_first() {
        let s = settings("[scheduler]\ncron = \"0 6 1 * mon\"\nrandomized_delay = \"5m\"\n");
        let (files, warnings) = plan(&s);
        assert!(warnings.is_empty());
        let timer = text(&files, TIMER);
        assert!(timer.contains("[Timer]\n"), "{timer}");
        assert!(timer.contains("# cron = \"0 6 1 * mon\""), "{timer}");
        assert_eq!(
            assignments(&timer),
            [
                "OnCalendar=",
                "OnCalendar=*-*-01 06:00:00",
                "OnCalendar=Mon *-*-* 06:00:00",
                "RandomizedDelaySec=300s",
            ]
        );
    }

    #[test]
    fn defaults_give_the_shipped_schedule() {
        let s = settings("");
        let (files, _) = plan(&s);
        assert_eq!(
            assignments(&text(&files, TIMER)),
            [
                "OnCalendar=",
                "OnCalendar=*-*-* 03:00:00",
                "RandomizedDelaySec=1800s"
            ]
        );
        // The shipped timer must say the same, so that a generator that
        // wrote nothing (bad configuration) leaves the documented default.
        let shipped = include_str!("../systemd/pimainteno.timer");
        assert!(
            shipped.contains("\nOnCalendar=*-*-* 03:00:00\n"),
            "{shipped}"
        );
        assert!(
            shipped.contains("\nRandomizedDelaySec=30min\n"),
            "{shipped}"
        );
        // Default account, no projects: nothing to add to the service.
        assert_eq!(assignments(&text(&files, SERVICE)), Vec::<&str>::new());
    }

    #[test]
    fn service_user_group_and_writable_paths() {
        let dir = tempfile::tempdir().unwrap();
        let weather = dir.path().join("weather");
        let spaced = dir.path().join("my 100% project");
        let s = settings(&format!(
            "[service]\nuser = \"pi\"\n\n[cache]\npath = \"/srv/pm/store\"\n\n\
             [llm]\nprovider = \"codex\"\ncodex_home = \"/srv/pm/codex\"\n\n\
             [[project]]\npath = \"{}\"\n\n[[project]]\nname = \"spaced\"\npath = \"{}\"\n",
            weather.display(),
            spaced.display(),
        ));
        let (files, warnings) = plan(&s);
        assert!(warnings.is_empty(), "{warnings:?}");
        let service = text(&files, SERVICE);
        assert!(service.contains("[Service]\n"));
        assert_eq!(
            assignments(&service),
            [
                "User=pi".to_string(),
                format!("ReadWritePaths=-{}", weather.display()),
                format!(
                    "ReadWritePaths=\"-{}\"",
                    spaced.display().to_string().replace('%', "%%")
                ),
                "ReadWritePaths=-/srv/pm/store".to_string(),
                "ReadWritePaths=-/srv/pm/codex".to_string(),
            ]
        );
        // No Group= unless configured: systemd then uses the user's primary group.
        assert!(!service.contains("Group="));
    }

    #[test]
    fn state_directory_paths_are_not_listed() {
        let s = settings(
            "[cache]\npath = \"/var/lib/pimainteno/store\"\n[llm]\nprovider = \"openai\"\nmodel = \"m\"\ncodex_home = \"/elsewhere\"\n[service]\ngroup = \"adm\"\n",
        );
        let (files, _) = plan(&s);
        assert_eq!(assignments(&text(&files, SERVICE)), ["Group=adm"]);
    }

    #[test]
    fn codex_gets_its_sandbox_drop_in_and_only_codex() {
        let codex_drop_in = Path::new("pimainteno.service.d").join(CODEX_DROP_IN);
        let s = settings("[llm]\nprovider = \"codex\"\n");
        let (files, _) = plan(&s);
        let text = match files.iter().find(|f| f.path == codex_drop_in) {
            Some(GeneratedFile {
                content: Content::Text(t),
                ..
            }) => t.clone(),
            other => panic!("no codex drop-in: {other:?} in {files:?}"),
        };
        assert!(text.starts_with("# Written by pimainteno-system-generator"));
        assert!(text.contains("\n[Service]\n"), "{text}");
        assert_eq!(
            assignments(&text),
            [
                "ProcSubset=all",
                "RestrictNamespaces=user mnt pid net ipc",
                "RestrictAddressFamilies=AF_NETLINK",
                "SystemCallFilter=mount umount2 pivot_root capset seccomp",
            ]
        );
        // Every relaxation says why, right above it.
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if !line.starts_with('#') && line.contains('=') {
                assert!(lines[i - 1].starts_with('#'), "no reason given for {line}");
            }
        }

        for other in [
            "[llm]\nprovider = \"none\"\n",
            "[llm]\nprovider = \"openai\"\nmodel = \"m\"\n",
        ] {
            let (files, _) = plan(&settings(other));
            assert!(
                !files.iter().any(|f| f.path == codex_drop_in),
                "{other}: {files:?}"
            );
        }
    }

    #[test]
    fn disabled_scheduler_masks_the_timer() {
        let s = settings("[scheduler]\nenabled = false\n");
        let (files, _) = plan(&s);
        assert!(files.contains(&GeneratedFile {
            path: PathBuf::from(TIMER),
            content: Content::Mask
        }));
        assert!(
            !files
                .iter()
                .any(|f| f.path.starts_with(format!("{TIMER}.d"))),
            "{files:?}"
        );
    }

    /// Run the generator, returning what it logged.
    fn generate(args: &[OsString], config: Option<PathBuf>) -> Vec<(u8, String)> {
        let mut logged = Vec::new();
        run(args, config, &mut |level, msg| {
            logged.push((level as u8, msg.to_string()))
        });
        logged
    }

    #[test]
    fn run_writes_drop_ins_and_the_mask() {
        let conf = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let path = conf.path().join("pimainteno.toml");
        std::fs::write(&path, "[scheduler]\ncron = \"*/5 * * * *\"\n").unwrap();
        let logged = generate(&[out.path().into()], Some(path.clone()));
        assert!(logged.is_empty(), "{logged:?}");
        let timer =
            std::fs::read_to_string(out.path().join("pimainteno.timer.d").join(DROP_IN)).unwrap();
        assert!(timer.contains("\nOnCalendar=*-*-* *:00/5:00\n"), "{timer}");
        assert!(
            out.path()
                .join("pimainteno.service.d")
                .join(DROP_IN)
                .is_file()
        );

        let out = tempfile::tempdir().unwrap();
        std::fs::write(&path, "[scheduler]\nenabled = false\n").unwrap();
        let logged = generate(&[out.path().into()], Some(path));
        assert_eq!(logged.len(), 1);
        assert!(logged[0].1.contains("timer masked"), "{logged:?}");
        let mask = out.path().join(TIMER);
        assert_eq!(std::fs::read_link(&mask).unwrap(), Path::new("/dev/null"));
    }

    #[test]
    fn bad_configuration_writes_nothing_and_says_why() {
        let conf = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let path = conf.path().join("pimainteno.toml");
        std::fs::write(&path, "[scheduler]\ncron = \"61 * * * *\"\n").unwrap();
        let logged = generate(&[out.path().into()], Some(path.clone()));
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
        assert_eq!(logged.len(), 1, "{logged:?}");
        let (level, msg) = &logged[0];
        assert_eq!(*level, Level::Error as u8);
        assert!(
            msg.contains("bad configuration, nothing generated"),
            "{msg}"
        );
        assert!(
            msg.contains("scheduler.cron") || msg.contains("cron"),
            "{msg}"
        );
        assert!(msg.contains(&path.display().to_string()), "{msg}");

        // A missing file is a bad configuration too; so are missing arguments.
        let logged = generate(&[out.path().into()], Some(conf.path().join("missing.toml")));
        assert!(logged[0].1.contains("missing.toml"), "{logged:?}");
        let logged = generate(&[], None);
        assert!(logged[0].1.starts_with("usage:"), "{logged:?}");
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
    }

    #[test]
    fn unwritable_output_leaves_nothing_behind() {
        let conf = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let path = conf.path().join("pimainteno.toml");
        std::fs::write(&path, "").unwrap();
        // The service drop-in directory is a file: the second write fails,
        // and the timer drop-in already written must be removed again.
        std::fs::write(out.path().join("pimainteno.service.d"), "").unwrap();
        let logged = generate(&[out.path().into()], Some(path));
        assert!(logged[0].1.contains("pimainteno.service.d"), "{logged:?}");
        assert!(!out.path().join("pimainteno.timer.d").join(DROP_IN).exists());
    }

    #[test]
    fn a_bad_unit_name_is_skipped_and_the_others_are_hooked() {
        let conf = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let path = conf.path().join("pimainteno.toml");
        // 254 characters made systemd drop the OnFailure= line (and the
        // drop-in directory's name was too long to create at all).
        let long = format!("{}.service", "x".repeat(246));
        std::fs::write(
            &path,
            format!(
                "[systemd_monitor]\nunits = [\"nginx\", \"{long}\", \"getty@.service\"]\n\n\
                 [[project]]\nname = \"w\"\npath = \"{}\"\nunits = [\"bad name\", \"weather.service\"]\n",
                conf.path().display()
            ),
        )
        .unwrap();
        let logged = generate(&[out.path().into()], Some(path.clone()));
        for unit in ["nginx.service", "getty@.service", "weather.service"] {
            let hook = out.path().join(format!("{unit}.d")).join(ONFAILURE_DROP_IN);
            let text = std::fs::read_to_string(&hook).unwrap_or_else(|e| panic!("{unit}: {e}"));
            assert_eq!(assignments(&text), ["OnFailure=pm-onfailure@%n.service"]);
        }
        // The rest of the plan is written too.
        assert!(
            out.path()
                .join("pimainteno.service.d")
                .join(DROP_IN)
                .is_file()
        );
        let hooked = std::fs::read_dir(out.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().join(ONFAILURE_DROP_IN).exists())
            .count();
        assert_eq!(hooked, 3, "{logged:?}");
        // Each bad name is said, with its place, as a warning.
        assert_eq!(logged.len(), 2, "{logged:?}");
        for (needle, line) in [("254 characters", 2), ("' ' is not allowed", 7)] {
            let (level, msg) = logged
                .iter()
                .find(|(_, m)| m.contains(needle))
                .unwrap_or_else(|| panic!("{needle}: {logged:?}"));
            assert_eq!(*level, Level::Warning as u8, "{msg}");
            assert!(
                msg.starts_with(&format!("{}:{line}: ", path.display())),
                "{msg}"
            );
            assert!(msg.contains("this unit is not watched"), "{msg}");
        }

        // The plan says the same; with monitoring off there is nothing to say.
        let (_, warnings) = plan(&settings(&format!(
            "[systemd_monitor]\nunits = [\"nginx\", \"{long}\"]\n"
        )));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let (files, warnings) = plan(&settings(&format!(
            "[systemd_monitor]\nenabled = false\nunits = [\"nginx\", \"{long}\"]\n"
        )));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(!files.iter().any(is_hook));
    }

    #[test]
    fn a_hook_that_cannot_be_written_leaves_the_others() {
        let conf = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let path = conf.path().join("pimainteno.toml");
        std::fs::write(
            &path,
            "[systemd_monitor]\nunits = [\"nginx\", \"redis\", \"cups\"]\n",
        )
        .unwrap();
        // redis's drop-in directory is a file: its hook cannot be written.
        std::fs::write(out.path().join("redis.service.d"), "").unwrap();
        let logged = generate(&[out.path().into()], Some(path));
        assert_eq!(logged.len(), 1, "{logged:?}");
        let (level, msg) = &logged[0];
        assert_eq!(*level, Level::Warning as u8);
        assert!(
            msg.contains("redis.service.d")
                && msg.contains(
                    "redis.service is not watched (no OnFailure= for it), the others are"
                ),
            "{msg}"
        );
        for unit in ["nginx.service", "cups.service"] {
            assert!(
                out.path()
                    .join(format!("{unit}.d"))
                    .join(ONFAILURE_DROP_IN)
                    .is_file(),
                "{unit}"
            );
        }
        assert!(
            out.path()
                .join("pimainteno.timer.d")
                .join(DROP_IN)
                .is_file()
        );
    }

    #[test]
    fn dashboard_socket_listens_on_web_host_and_port() {
        let listen = |host: &str| {
            let s = settings(&format!("[web]\nhost = \"{host}\"\nport = 9000\n"));
            let (files, warnings) = plan(&s);
            let socket = text(&files, DASHBOARD_SOCKET);
            assert!(socket.contains("\n[Socket]\n"), "{socket}");
            let lines: Vec<String> = assignments(&socket).iter().map(|l| l.to_string()).collect();
            (lines, warnings)
        };
        let reset = "ListenStream=".to_string();
        for (host, want) in [
            ("127.0.0.1", "127.0.0.1:9000"),
            ("localhost", "127.0.0.1:9000"),
            ("::1", "[::1]:9000"),
            ("0.0.0.0", "0.0.0.0:9000"),
            ("::", "[::]:9000"),
        ] {
            let (lines, _) = listen(host);
            assert_eq!(
                lines,
                [reset.clone(), format!("ListenStream={want}")],
                "{host}"
            );
        }
        // One address of the machine's: bound even before it is configured.
        for (host, want) in [
            ("192.168.1.20", "192.168.1.20:9000"),
            ("fd00::20", "[fd00::20]:9000"),
        ] {
            let (lines, _) = listen(host);
            assert_eq!(
                lines,
                [
                    reset.clone(),
                    format!("ListenStream={want}"),
                    "FreeBind=yes".to_string()
                ],
                "{host}"
            );
        }

        // The defaults are the shipped socket's: a generator that wrote
        // nothing (bad configuration) leaves the documented address.
        let (files, _) = plan(&settings(""));
        assert_eq!(
            assignments(&text(&files, DASHBOARD_SOCKET)),
            ["ListenStream=", "ListenStream=127.0.0.1:8740"]
        );
        let shipped = include_str!("../systemd/pimainteno-dashboard.socket");
        assert_eq!(
            assignments(shipped)
                .into_iter()
                .filter(|l| l.starts_with("ListenStream="))
                .collect::<Vec<_>>(),
            ["ListenStream=127.0.0.1:8740"]
        );
    }

    #[test]
    fn dashboard_reads_the_store_as_the_service_account() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("my 100% store");
        let s = settings(&format!(
            "[service]\nuser = \"pi\"\ngroup = \"adm\"\n\n[cache]\npath = \"{}\"\n",
            store.display()
        ));
        let (files, warnings) = plan(&s);
        assert!(warnings.is_empty(), "{warnings:?}");
        let dashboard = text(&files, DASHBOARD);
        assert!(dashboard.contains("\n[Service]\n"), "{dashboard}");
        let escaped = store.display().to_string().replace('%', "%%");
        assert_eq!(
            assignments(&dashboard),
            [
                "User=pi".to_string(),
                "Group=adm".to_string(),
                format!("Environment=\"PIMAINTENO_STORE={escaped}\""),
                format!("ReadWritePaths=\"-{escaped}/lock.mdb\""),
            ]
        );

        // The shipped unit's own default is the default store's lock file,
        // and it has no StateDirectory=, which would make the store writable.
        let s = settings("[cache]\npath = \"/var/lib/pimainteno/store\"\n");
        let (files, _) = plan(&s);
        let generated = text(&files, DASHBOARD);
        let shipped = include_str!("../systemd/pimainteno-dashboard.service");
        for line in assignments(&generated) {
            assert!(
                shipped.contains(&format!("\n{line}\n")),
                "{line} not in the shipped unit"
            );
        }
        assert!(shipped.contains("\nProtectSystem=strict\n"));
        assert!(
            !assignments(shipped)
                .iter()
                .any(|l| l.starts_with("StateDirectory=")),
            "{shipped}"
        );
    }

    #[test]
    fn dashboard_off_loopback_gets_the_password_as_a_credential() {
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("web-password");
        let config = |host: &str| {
            settings(&format!(
                "[cache]\npath = \"/srv/store\"\n[web]\nhost = \"{host}\"\npassword_file = \"{}\"\n",
                password.display()
            ))
        };
        let credential = format!("LoadCredential=web-password:{}", password.display());

        // Missing: nothing to load, and a warning that says what to do.
        let (files, warnings) = plan(&config("0.0.0.0"));
        assert!(!text(&files, DASHBOARD).contains("LoadCredential="));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        for needle in [
            "[web] host = \"0.0.0.0\" is not loopback",
            &password.display().to_string(),
            "openssl passwd -6",
            "systemctl daemon-reload",
        ] {
            assert!(warnings[0].contains(needle), "{needle}: {}", warnings[0]);
        }

        // Present (root's alone is fine: systemd reads it).
        std::fs::write(&password, "$6$salt$hash\n").unwrap();
        let (files, warnings) = plan(&config("0.0.0.0"));
        assert!(warnings.is_empty(), "{warnings:?}");
        let dashboard = text(&files, DASHBOARD);
        assert_eq!(
            assignments(&dashboard).last().copied(),
            Some(credential.as_str()),
            "{dashboard}"
        );

        // On loopback no password is needed, so none is handed over.
        for host in ["127.0.0.1", "::1", "localhost"] {
            let (files, warnings) = plan(&config(host));
            assert!(warnings.is_empty(), "{host}: {warnings:?}");
            assert!(
                !text(&files, DASHBOARD).contains("LoadCredential="),
                "{host}"
            );
        }
    }

    // ---- the cron conversion checked against systemd's own calendar ----

    /// Cron semantics, independently of `calendar.rs`: the set of values of
    /// one field (numbers only, as in the test lines below).
    fn cron_field(text: &str, min: u32, max: u32) -> BTreeSet<u32> {
        let mut set = BTreeSet::new();
        for part in text.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => (r, s.parse::<usize>().unwrap()),
                None => (part, 1),
            };
            let (lo, hi) = match range.split_once('-') {
                _ if range == "*" => (min, max),
                Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                None if part.contains('/') => (range.parse().unwrap(), max),
                None => (range.parse().unwrap(), range.parse().unwrap()),
            };
            set.extend((lo..=hi).step_by(step));
        }
        set
    }

    /// The first `n` minutes after `base` (Unix seconds, UTC) at which cron
    /// runs `line`, formatted as systemd-analyze prints them.
    fn cron_elapses(line: &str, base: u64, n: usize) -> Vec<String> {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (minute, hour) = (cron_field(f[0], 0, 59), cron_field(f[1], 0, 23));
        let (dom, month) = (cron_field(f[2], 1, 31), cron_field(f[3], 1, 12));
        let mut dow = cron_field(f[4], 0, 7);
        if dow.remove(&7) {
            dow.insert(0);
        }
        let (dom_any, dow_any) = (f[2].starts_with('*'), f[4].starts_with('*'));
        const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
        let mut out = Vec::new();
        let mut t = base / 60 * 60 + 60;
        while out.len() < n {
            let date = crate::time::day(t * 1000);
            let (m, d): (u32, u32) = (date[5..7].parse().unwrap(), date[8..10].parse().unwrap());
            let wd = ((t / 86_400 + 4) % 7) as u32; // 1970-01-01 was a Thursday
            let (h, mi) = (((t / 3600) % 24) as u32, ((t / 60) % 60) as u32);
            let day_ok = match (dom_any, dow_any) {
                (true, true) => true,
                (false, true) => dom.contains(&d),
                (true, false) => dow.contains(&wd),
                (false, false) => dom.contains(&d) || dow.contains(&wd),
            };
            if day_ok && month.contains(&m) && hour.contains(&h) && minute.contains(&mi) {
                out.push(format!(
                    "{} {date} {h:02}:{mi:02}:00 UTC",
                    DAYS[wd as usize]
                ));
            }
            t += 60;
        }
        out
    }

    /// The next `n` elapses of several OnCalendar= expressions, merged the
    /// way a timer with several OnCalendar= lines fires.
    fn systemd_elapses(exprs: &[String], base: &str, n: usize) -> Vec<String> {
        let out = Command::new("systemd-analyze")
            .env("TZ", "UTC")
            .args([
                "calendar",
                &format!("--iterations={n}"),
                &format!("--base-time={base}"),
            ])
            .args(exprs)
            .output()
            .expect("systemd-analyze (Debian package systemd) must be installed for this test");
        assert!(
            out.status.success(),
            "systemd-analyze calendar {exprs:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut all = BTreeSet::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let line = line.trim();
            if let Some(at) = line.strip_prefix("Next elapse: ").or_else(|| {
                line.split_once(": ")
                    .filter(|(k, _)| k.starts_with("Iter."))
                    .map(|(_, v)| v)
            }) {
                // Sortable: "2026-01-01 00:05:00" without the weekday.
                all.insert((at[4..].to_string(), at.to_string()));
            }
        }
        all.into_iter().take(n).map(|(_, v)| v).collect()
    }

    #[test]
    fn cron_schedules_fire_when_systemd_says() {
        // 2026-01-01 00:00:00 UTC, a Thursday.
        let base = 1_767_225_600;
        for line in [
            "0 3 * * *",
            "*/5 * * * *",
            "15 9-17 * * 1-5",
            "0 0 1 */3 *",
            "0,30 8 * 1,7 0",
            "0 12 * * 5-7",
            "5/15 * * * *",
            "1-10/3 * * * *",
            "0 6 1 * 1",
            "30 2 13 * 5",
            "0 */6 * * 6,0",
        ] {
            let s = settings(&format!("[scheduler]\ncron = \"{line}\"\n"));
            let want = cron_elapses(line, base, 12);
            let got = systemd_elapses(&s.scheduler.on_calendar, "2026-01-01 00:00:00 UTC", 12);
            assert_eq!(got, want, "cron \"{line}\" → {:?}", s.scheduler.on_calendar);
        }
    }

    #[test]
    fn the_timer_run_wants_each_patching_project_one_after_another() {
        let dir = tempfile::tempdir().unwrap();
        let project = |name: &str, extra: &str| {
            format!(
                "[[project]]\nname = \"{name}\"\npath = \"{}\"\n{extra}\n",
                dir.path().join(name).display()
            )
        };
        let s = settings(&format!(
            "{}{}{}{}",
            project("a", "check = \"make test\""),
            project("b", "check = \"make test\"\npatch = \"off\""),
            project("c", ""),
            project("d", "check = \"cargo test\"\npatch = \"merge\"")
        ));
        let (files, _) = plan(&s);
        let service = text(&files, SERVICE);
        assert!(service.contains("\n[Unit]\n"), "{service}");
        assert!(
            assignments(&service)
                .contains(&"Wants=pimainteno-patch@a.service pimainteno-patch@d.service"),
            "{service}"
        );
        let order: Vec<(&Path, &Content)> = files
            .iter()
            .filter(|f| f.path.ends_with(ORDER_DROP_IN))
            .map(|f| (f.path.as_path(), &f.content))
            .collect();
        assert_eq!(order.len(), 1);
        assert_eq!(
            order[0].0,
            Path::new("pimainteno-patch@d.service.d").join(ORDER_DROP_IN)
        );
        let Content::Text(t) = order[0].1 else {
            panic!()
        };
        assert_eq!(assignments(t), ["After=pimainteno-patch@a.service"]);
        // The template itself wants nothing.
        assert!(!text(&files, PATCH).contains("Wants="));
        // No patching project: no Wants=.
        let none = settings(&project("c", ""));
        assert!(!text(&plan(&none).0, SERVICE).contains("Wants="));
    }

    #[test]
    fn watched_units_get_an_on_failure_hook_and_never_the_handler() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(&format!(
            "[systemd_monitor]\nunits = [\"nginx\", \"pm-onfailure@x.service\"]\n\n\
             [service]\nuser = \"pi\"\n\n\
             [cache]\npath = \"/var/lib/pimainteno/store\"\n\n\
             [[project]]\nname = \"weather\"\npath = \"{}\"\nunits = [\"weather.service\", \"nginx.service\"]\n",
            dir.path().display()
        ));
        let (files, warnings) = plan(&s);
        let hooks: Vec<&Path> = files
            .iter()
            .filter(|f| f.path.ends_with(ONFAILURE_DROP_IN))
            .map(|f| f.path.as_path())
            .collect();
        assert_eq!(
            hooks,
            [
                Path::new("nginx.service.d").join(ONFAILURE_DROP_IN),
                Path::new("weather.service.d").join(ONFAILURE_DROP_IN)
            ]
        );
        assert!(
            warnings[0].contains("never handles its own failures"),
            "{warnings:?}"
        );
        let hook = files
            .iter()
            .find(|f| f.path.ends_with(ONFAILURE_DROP_IN))
            .unwrap();
        let Content::Text(t) = &hook.content else {
            panic!()
        };
        assert_eq!(assignments(t), ["OnFailure=pm-onfailure@%n.service"]);
        assert!(t.contains("\n[Unit]\n"));
        assert_eq!(assignments(&text(&files, ONFAILURE)), ["User=pi"]);
        assert_eq!(assignments(&text(&files, REPAIR)), ["User=pi"]);
        assert_eq!(assignments(&text(&files, EXPLAIN)), ["User=pi"]);

        let off = settings("[systemd_monitor]\nenabled = false\nunits = [\"nginx\"]\n");
        let (files, _) = plan(&off);
        assert!(
            !files.iter().any(|f| f.path.ends_with(ONFAILURE_DROP_IN)),
            "{files:?}"
        );
    }
}
