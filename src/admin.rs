//! `pimainteno`: the commands an administrator types.

use std::ffi::OsStr;
use std::io::Write;

use anyhow::Context;

use crate::cli::{AdminCli, AdminCommand};
use crate::config::{self, LoadOptions, ProviderKind, Settings};
use crate::exit::Exit;
use crate::generator::SERVICE;
use crate::llm::codex;
use crate::logging::message_id;
use crate::store::{ProjectRecord, Store};
use crate::text::{printable, printable_line as shown};
use crate::time;

mod patches;
mod prompts;
mod units;
mod watch;

pub fn run(cli: &AdminCli) -> anyhow::Result<Exit> {
    let opts = LoadOptions {
        path: cli.common.config.clone(),
        defaults_if_missing: false,
    };
    match &cli.command {
        AdminCommand::CheckConfig => check_config(&opts),
        AdminCommand::Status => status(&load(&opts)?),
        AdminCommand::History {
            name: Some(name),
            limit,
            prompts: true,
        } => prompts::show(&load(&opts)?, name, *limit),
        AdminCommand::History { name, limit, .. } => {
            history(&load(&opts)?, name.as_deref(), *limit)
        }
        AdminCommand::Watch { unit, no_reload } => watch::watch(&opts, unit, !no_reload),
        AdminCommand::Unwatch { unit, no_reload } => watch::unwatch(&opts, unit, !no_reload),
    }
}

/// The configuration as the services see it. Run by root (`sudo
/// pimainteno ...`), `~/` means the service account's home, not root's.
fn load(opts: &LoadOptions) -> Result<Settings, config::ConfigErrors> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        config::load_for_service(opts, crate::generator::DEFAULT_USER)
    } else {
        config::load(opts)
    }
}

fn check_config(opts: &LoadOptions) -> anyhow::Result<Exit> {
    let settings = load(opts)?;
    if !settings.bad_units.is_empty() {
        // The services run without these units; check-config is where the
        // mistake must not pass unnoticed, so it fails like any other.
        let errors = settings
            .bad_units
            .iter()
            .map(|e| config::ConfigError {
                message: format!("{}; this unit is not watched until it is fixed", e.message),
                ..e.clone()
            })
            .collect();
        return Err(config::ConfigErrors(errors).into());
    }
    let mut warnings: Vec<String> = settings.warnings.iter().map(ToString::to_string).collect();
    if settings.llm.provider == ProviderKind::Codex {
        warnings.extend(check_codex(&settings.llm.command));
        warnings.extend(codex_sees_secrets(&settings));
    }
    let containment = containment_lines(&settings);
    if let Some(why) = containment
        .iter()
        .find(|l| l.contains("runs no code of the model"))
    {
        warnings.push(why.clone());
    }
    for w in &warnings {
        // File names of the projects, codex's output: outside text.
        eprintln!("warning: {}", printable(w));
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "# Resolved configuration (secrets masked), from:")?;
    for f in &settings.files {
        writeln!(out, "#   {}", shown(&f.display().to_string()))?;
    }
    if settings.files.is_empty() {
        writeln!(out, "#   built-in defaults")?;
    }
    writeln!(out, "\n{}", printable(&settings.to_toml()))?;
    for line in containment {
        writeln!(out, "# {}", shown(&line))?;
    }
    Ok(Exit::Ok)
}

/// Files that hold secrets by their name (`.env`, `id_rsa`, `*.pem`…) and
/// are not ignored by git, in each project: codex reads the project
/// itself, so redaction cannot reach them. One warning for all projects.
fn codex_sees_secrets(settings: &Settings) -> Option<String> {
    const LISTED: usize = 5;
    let mut found = Vec::new();
    for p in settings.projects.iter().filter(|p| p.enabled) {
        let Ok(repo) = crate::git::open(&p.path) else {
            continue;
        };
        let tracked = crate::git::tracked(&repo, &[]).unwrap_or_default();
        let untracked = crate::git::changes(&repo, &[]).unwrap_or_default();
        let mut files: Vec<String> = tracked
            .into_iter()
            .map(|(path, _)| path)
            .chain(untracked.into_iter().map(|(path, _)| path))
            .filter(|path| crate::llm::redact::is_secret_file(std::path::Path::new(path)))
            .collect();
        files.sort();
        files.dedup();
        if files.is_empty() {
            continue;
        }
        let more = files.len().saturating_sub(LISTED);
        files.truncate(LISTED);
        found.push(format!(
            "{} ({}{})",
            p.name,
            files.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ));
    }
    if found.is_empty() {
        return None;
    }
    Some(format!(
        "provider = \"codex\" reads the projects itself, so PiMainteno cannot redact what it \
         reads, and these files hold secrets by their name and are not ignored by git: {}. \
         Move the secrets out of the project (e.g. to a systemd credential), or at least add \
         them to .gitignore (a patch's work tree then lacks them; a summary's codex can still \
         open them by name); or use provider = \"openai\", whose prompts are redacted",
        found.join("; ")
    ))
}

/// How pm-patch would contain the model's code of each patching project,
/// as probed here (bubblewrap, user namespaces, Landlock); the units add
/// their own limits on top (the system tests run it under them).
fn containment_lines(settings: &Settings) -> Vec<String> {
    let patching: Vec<_> = settings
        .projects
        .iter()
        .filter(|p| p.patch != config::PatchMode::Off && p.check.is_some())
        .collect();
    if patching.is_empty() {
        return Vec::new();
    }
    match crate::patch::contain::Containment::probe(settings) {
        Ok(c) => patching
            .iter()
            .map(|p| {
                format!(
                    "pm-patch, project {}: the check runs contained: {}",
                    p.name,
                    c.describe(p)
                )
            })
            .collect(),
        Err(why) => vec![why],
    }
}

/// systemd's PATH for system services (systemd 252 on Debian 12; the same
/// on Raspberry Pi OS), used when systemctl cannot tell.
const SYSTEMD_DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The PATH pimainteno.service runs with: an `Environment=PATH=` of the
/// unit, else the service manager's, else systemd's default. Not the PATH
/// of the shell check-config runs in: codex installed under `~/.npm-global`
/// or by nvm works by hand and is missing under systemd.
fn service_path() -> (String, &'static str) {
    let systemctl = |args: &[&str]| crate::process::query("systemctl", args);
    let find = |text: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix("PATH="))
            .map(str::to_string)
    };
    if let Some(p) = systemctl(&["show", "-p", "Environment", "--value", SERVICE])
        .as_deref()
        .and_then(find)
    {
        return (p, "the Environment= of pimainteno.service");
    }
    if let Some(p) = systemctl(&["show-environment"]).as_deref().and_then(find) {
        return (p, "systemd's environment");
    }
    (SYSTEMD_DEFAULT_PATH.to_string(), "systemd's default")
}

/// Warnings about the codex program: not where the service finds it, or
/// older than the version PiMainteno was tested with.
fn check_codex(command: &str) -> Vec<String> {
    let (path, source) = service_path();
    let Some(program) = crate::process::which(command, OsStr::new(&path)) else {
        return vec![format!(
            "[llm] command: \"{command}\" is not found in the PATH pimainteno.service runs with \
             ({path}, {source}); install it system-wide (sudo npm install -g @openai/codex) or give \
             its full path"
        )];
    };
    let (a, b, c) = codex::TESTED_VERSION;
    match codex::installed_version(&program, OsStr::new(&path)) {
        Ok(v) if v < codex::TESTED_VERSION => vec![format!(
            "[llm] command: {} is codex {}.{}.{}, older than {a}.{b}.{c}, the version PiMainteno \
             was tested with (its events and `codex sandbox` may differ); upgrade it: sudo npm \
             install -g @openai/codex",
            program.display(),
            v.0,
            v.1,
            v.2
        )],
        Ok(_) => Vec::new(),
        Err(e) => vec![format!(
            "[llm] command: cannot tell the version of {}: {e}",
            program.display()
        )],
    }
}

fn open_store(settings: &Settings) -> anyhow::Result<Option<Store>> {
    // No store yet is no error; one that vanished is.
    if !crate::store::exists(&settings.cache.path)? {
        return Ok(None);
    }
    Store::open(&settings.cache).map(Some)
}

fn status(settings: &Settings) -> anyhow::Result<Exit> {
    let mut out = std::io::stdout().lock();
    // A store that cannot be used is reported, and the rest shown: the
    // repairs go on without it (pimainteno-repair.service).
    let (store, broken) = match open_store(settings) {
        Ok(s) => (s, None),
        Err(e) => (None, Some(e)),
    };
    writeln!(
        out,
        "provider: {}{}",
        settings.llm.provider.as_str(),
        settings
            .llm
            .model
            .as_deref()
            .map(|m| format!(" (model {})", shown(m)))
            .unwrap_or_default()
    )?;
    match &store {
        None if broken.is_some() => writeln!(
            out,
            "store: {} CANNOT BE USED: {}\n  failures are still repaired (within max_repairs_per_hour) and kept \
             under {} until it works again",
            settings.cache.path.display(),
            shown(&format!("{:#}", broken.as_ref().expect("checked"))),
            crate::onfailure::rundir::RunDir::from_env()
                .root()
                .display()
        )?,
        None => writeln!(
            out,
            "store: {} (not created yet: no run so far)",
            settings.cache.path.display()
        )?,
        Some(s) => {
            let (map, used) = s.usage()?;
            writeln!(
                out,
                "store: {} ({} of {} used)",
                s.path().display(),
                config::values::format_size(used),
                config::values::format_size(map)
            )?;
            let today = time::day(time::now_ms());
            let budget = settings.llm.daily_token_budget;
            writeln!(
                out,
                "tokens today: {}{}",
                s.tokens_used(&today)?,
                if budget > 0 {
                    format!(" of {budget}")
                } else {
                    String::new()
                }
            )?;
        }
    }
    let run = crate::onfailure::rundir::RunDir::from_env();
    let kept =
        crate::onfailure::rundir::files(&run.path(crate::onfailure::rundir::UNRECORDED), ".json")
            .len();
    if kept > 0 {
        writeln!(
            out,
            "{kept} failure(s) kept under {} until the store can record them",
            run.path(crate::onfailure::rundir::UNRECORDED).display()
        )?;
    }
    if let Some(fault) = crate::onfailure::store_fault(&run) {
        writeln!(
            out,
            "store fault seen by pimainteno-repair.service at {}",
            printable(&fault).replace('\n', "\n  ")
        )?;
    }
    units::status(&mut out, settings, store.as_ref())?;
    if broken.is_some() {
        return Ok(Exit::Failed);
    }
    if settings.projects.is_empty() {
        writeln!(
            out,
            "\nno projects configured: add a [[project]] table to the configuration"
        )?;
        return Ok(Exit::Ok);
    }
    let mut records = Vec::with_capacity(settings.projects.len());
    for p in &settings.projects {
        records.push(match &store {
            Some(s) => s.project(&p.name)?,
            None => None,
        });
    }
    if let Some(line) = sandbox_status(&records) {
        writeln!(out, "{}", shown(&line))?;
    }
    for line in containment_lines(settings) {
        writeln!(out, "{}", shown(&line))?;
    }
    writeln!(out)?;
    for (p, record) in settings.projects.iter().zip(&records) {
        let state = match record {
            None => "never summarized".to_string(),
            Some(r) => {
                let when = if r.last_run_ms > 0 {
                    time::rfc3339(r.last_run_ms)
                } else {
                    "-".into()
                };
                // The last error may quote a model's or a server's reply.
                let mut s = format!("{} at {when}", shown(&r.last_outcome));
                if let Some(e) = &r.last_error {
                    s.push_str(&format!(": {}", shown(e)));
                }
                s
            }
        };
        writeln!(
            out,
            "{}{}  {}\n    {state}",
            shown(&p.name),
            if p.enabled { "" } else { " (disabled)" },
            shown(&p.path.display().to_string())
        )?;
        if let Some(s) = &store {
            patches::status(&mut out, s, &p.name)?;
        }
    }
    Ok(Exit::Ok)
}

/// One line when the last run of some project found codex's sandbox
/// broken (the details are in that project's state).
fn sandbox_status(records: &[Option<ProjectRecord>]) -> Option<String> {
    let latest = records
        .iter()
        .flatten()
        .filter(|r| matches!(r.last_outcome.as_str(), "sandbox" | "summarized_blind"))
        .max_by_key(|r| r.last_run_ms)?;
    Some(format!(
        "codex sandbox: FAILING at the last run ({}, project {}): see below, and \
         `journalctl MESSAGE_ID={}`",
        time::rfc3339(latest.last_run_ms),
        latest.name,
        message_id::CODEX_SANDBOX
    ))
}

fn history(settings: &Settings, name: Option<&str>, limit: usize) -> anyhow::Result<Exit> {
    use std::io::IsTerminal;
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut out = std::io::stdout().lock();
    let Some(store) = open_store(settings)? else {
        writeln!(
            out,
            "no history yet: the store {} does not exist",
            settings.cache.path.display()
        )?;
        return Ok(Exit::Ok);
    };
    if let Some(n) = name
        && units::is_unit(settings, &store, n)?
    {
        units::history(&mut out, &store, n, limit)?;
        return Ok(Exit::Ok);
    }
    let names: Vec<String> = match name {
        Some(n) => vec![n.to_string()],
        None => {
            let mut v: Vec<String> = store.projects()?.into_iter().map(|p| p.name).collect();
            for p in &settings.projects {
                if !v.contains(&p.name) {
                    v.push(p.name.clone());
                }
            }
            v
        }
    };
    for n in names {
        writeln!(out, "{}", shown(&n))?;
        let summaries = store
            .summaries(&n, limit)
            .with_context(|| format!("cannot read the history of {}", shown(&n)))?;
        if summaries.is_empty() {
            writeln!(out, "  no summaries")?;
        }
        for (key, s) in summaries {
            writeln!(
                out,
                "  {}  summary  {}  {}{}  {} tokens  {:.1}s  [{}]{}",
                time::rfc3339(s.created_ms),
                shown(
                    s.commit
                        .as_deref()
                        .map(|c| c.get(..12).unwrap_or(c))
                        .unwrap_or("no-commit")
                ),
                shown(&s.provider),
                if s.model.is_empty() {
                    String::new()
                } else {
                    format!("/{}", shown(&s.model))
                },
                s.usage.total(),
                s.duration_ms as f64 / 1000.0,
                shown(&key),
                if s.sandbox_error.is_some() {
                    "  (written without reading the project: codex's sandbox failed)"
                } else {
                    ""
                }
            )?;
        }
        patches::history(&mut out, &store, &n, limit, color)?;
        for (_, c) in store.llm_calls(&n, limit)? {
            writeln!(
                out,
                "  {}  llm_call {}  {}  {}  {} tokens  {:.1}s{}{}",
                time::rfc3339(c.time_ms),
                shown(&c.purpose),
                shown(&c.provider),
                shown(&c.outcome),
                c.usage.total(),
                c.duration_ms as f64 / 1000.0,
                match c.redacted.values().sum::<u32>() {
                    0 => String::new(),
                    n => format!("  {n} secrets redacted"),
                },
                c.error
                    .map(|e| format!("  {}", shown(&e)))
                    .unwrap_or_default()
            )?;
        }
    }
    if name.is_none() {
        for unit in store.failed_units()? {
            units::history(&mut out, &store, &unit, limit)?;
        }
    }
    Ok(Exit::Ok)
}
