//! `pimainteno`: the commands an administrator types.

use std::io::Write;

use anyhow::Context;

use crate::cli::{AdminCli, AdminCommand};
use crate::config::{self, LoadOptions, ProviderKind, Settings};
use crate::exit::Exit;
use crate::store::Store;
use crate::time;

pub fn run(cli: &AdminCli) -> anyhow::Result<Exit> {
    let opts = LoadOptions {
        path: cli.common.config.clone(),
        defaults_if_missing: false,
    };
    match &cli.command {
        AdminCommand::CheckConfig => check_config(&opts),
        AdminCommand::Status => status(&config::load(&opts)?),
        AdminCommand::History { name, limit } => {
            history(&config::load(&opts)?, name.as_deref(), *limit)
        }
    }
}

fn check_config(opts: &LoadOptions) -> anyhow::Result<Exit> {
    let settings = config::load(opts)?;
    let mut warnings: Vec<String> = settings.warnings.iter().map(ToString::to_string).collect();
    if settings.llm.provider == ProviderKind::Codex && which(&settings.llm.command).is_none() {
        warnings.push(format!(
            "[llm] command: \"{}\" is not found in PATH; install it (npm install -g @openai/codex) or give its full path",
            settings.llm.command
        ));
    }
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "# Resolved configuration (secrets masked), from:")?;
    for f in &settings.files {
        writeln!(out, "#   {}", f.display())?;
    }
    if settings.files.is_empty() {
        writeln!(out, "#   built-in defaults")?;
    }
    writeln!(out, "\n{}", settings.to_toml())?;
    Ok(Exit::Ok)
}

/// A program on `$PATH` (or a path that exists).
pub fn which(cmd: &str) -> Option<std::path::PathBuf> {
    if cmd.contains('/') {
        return std::path::Path::new(cmd).is_file().then(|| cmd.into());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

fn open_store(settings: &Settings) -> anyhow::Result<Option<Store>> {
    if !settings.cache.path.join("data.mdb").exists() {
        return Ok(None);
    }
    Store::open(&settings.cache).map(Some)
}

fn status(settings: &Settings) -> anyhow::Result<Exit> {
    let mut out = std::io::stdout().lock();
    let store = open_store(settings)?;
    writeln!(
        out,
        "provider: {}{}",
        settings.llm.provider.as_str(),
        settings
            .llm
            .model
            .as_deref()
            .map(|m| format!(" (model {m})"))
            .unwrap_or_default()
    )?;
    match &store {
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
    if settings.projects.is_empty() {
        writeln!(
            out,
            "\nno projects configured: add a [[project]] table to the configuration"
        )?;
        return Ok(Exit::Ok);
    }
    writeln!(out)?;
    for p in &settings.projects {
        let record = match &store {
            Some(s) => s.project(&p.name)?,
            None => None,
        };
        let state = match &record {
            None => "never summarized".to_string(),
            Some(r) => {
                let when = if r.last_run_ms > 0 {
                    time::rfc3339(r.last_run_ms)
                } else {
                    "-".into()
                };
                let mut s = format!("{} at {when}", r.last_outcome);
                if let Some(e) = &r.last_error {
                    s.push_str(&format!(": {e}"));
                }
                s
            }
        };
        writeln!(
            out,
            "{}{}  {}\n    {state}",
            p.name,
            if p.enabled { "" } else { " (disabled)" },
            p.path.display()
        )?;
    }
    Ok(Exit::Ok)
}

fn history(settings: &Settings, name: Option<&str>, limit: usize) -> anyhow::Result<Exit> {
    let mut out = std::io::stdout().lock();
    let Some(store) = open_store(settings)? else {
        writeln!(
            out,
            "no history yet: the store {} does not exist",
            settings.cache.path.display()
        )?;
        return Ok(Exit::Ok);
    };
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
        writeln!(out, "{n}")?;
        let summaries = store
            .summaries(&n, limit)
            .with_context(|| format!("cannot read the history of {n}"))?;
        if summaries.is_empty() {
            writeln!(out, "  no summaries")?;
        }
        for (key, s) in summaries {
            writeln!(
                out,
                "  {}  summary  {}  {}{}  {} tokens  {:.1}s  [{key}]",
                time::rfc3339(s.created_ms),
                s.commit
                    .as_deref()
                    .map(|c| &c[..c.len().min(12)])
                    .unwrap_or("no-commit"),
                s.provider,
                if s.model.is_empty() {
                    String::new()
                } else {
                    format!("/{}", s.model)
                },
                s.usage.total(),
                s.duration_ms as f64 / 1000.0
            )?;
        }
        for (_, c) in store.llm_calls(&n, limit)? {
            writeln!(
                out,
                "  {}  llm_call {}  {}  {}  {} tokens  {:.1}s{}",
                time::rfc3339(c.time_ms),
                c.purpose,
                c.provider,
                c.outcome,
                c.usage.total(),
                c.duration_ms as f64 / 1000.0,
                c.error.map(|e| format!("  {e}")).unwrap_or_default()
            )?;
        }
    }
    Ok(Exit::Ok)
}
