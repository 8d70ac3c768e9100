//! Command lines of every binary (DESIGN.md §3), defined in the library so
//! that man pages and shell completions are generated from the same source.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Options every binary takes.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Configuration file [default: $PIMAINTENO_CONFIG, else /etc/pimainteno/pimainteno.toml]
    #[arg(long, value_name = "PATH", global = true)]
    pub config: Option<PathBuf>,
    /// More detail (-v debug, -vv trace)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Less detail (-q warnings only, -qq errors only)
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "verbose")]
    pub quiet: u8,
}

/// Write an up-to-date summary of each configured git project.
///
/// A project whose HEAD, uncommitted changes, provider, model and prompt are
/// the same as for its stored summary is skipped without asking the LLM.
#[derive(Debug, Parser)]
#[command(name = "pm-summarize", version)]
pub struct SummarizeCli {
    #[command(flatten)]
    pub common: Common,
    /// Only this project (repeatable)
    #[arg(long = "project", value_name = "NAME")]
    pub projects: Vec<String>,
    /// Ask the provider even when nothing changed
    #[arg(long)]
    pub force: bool,
    /// Summarize this directory as an ad-hoc project (repeatable); the
    /// configuration file is optional then
    #[arg(long = "path", value_name = "DIR")]
    pub paths: Vec<PathBuf>,
    /// Override [llm] provider for this run
    #[arg(long, value_name = "NAME", value_parser = ["codex", "openai", "none"])]
    pub provider: Option<String>,
}

/// Fix a project: an LLM's change in a worktree, proven by the project's
/// check, committed on a branch.
///
/// Per project (patch not "off"): the work is a --task, else a failure
/// pm-onfailure handed over, else the project's check failing at HEAD.
/// Nothing to do means no LLM call. The user's checkout is never touched,
/// except the final fast-forward with patch = "merge". The check and
/// codex's commands (the model's code) run contained in bubblewrap's
/// namespaces: they write only the worktree, read no secret, reach no
/// network; where nothing can contain them, no model code runs (exit 78).
/// No fix (refused, or no attempt passed) is recorded and exits 0, as the
/// units need; with --task it exits 3.
#[derive(Debug, Parser)]
#[command(name = "pm-patch", version)]
pub struct PatchCli {
    #[command(flatten)]
    pub common: Common,
    /// Only this project (repeatable)
    #[arg(long = "project", value_name = "NAME")]
    pub projects: Vec<String>,
    /// Ask for this change instead (needs one --project); proven by the check
    #[arg(long, value_name = "TEXT")]
    pub task: Option<String>,
    /// Show the diff and the check's result; commit nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// Diagnose and repair a failed systemd unit.
///
/// Started by systemd as pm-onfailure@UNIT.service through the OnFailure=
/// drop-in pimainteno-system-generator writes for each watched unit. It
/// reads the failed run's journal ($MONITOR_INVOCATION_ID), diagnoses it
/// (analyzers, then the LLM for a failure not seen before), restarts the
/// unit within [systemd_monitor] limits and records everything: see
/// `pimainteno history UNIT`.
#[derive(Debug, Parser)]
#[command(name = "pm-onfailure", version)]
pub struct OnFailureCli {
    #[command(flatten)]
    pub common: Common,
    /// The failed unit [default: $MONITOR_UNIT]
    #[arg(value_name = "UNIT")]
    pub unit: Option<String>,
    /// One step of the shipped units: enqueue (pm-onfailure@UNIT), decide,
    /// repair, followup (pimainteno-repair.service), explain, handoff
    /// (pimainteno-explain.service); all of it for UNIT when omitted (a run
    /// by hand, as root)
    #[arg(long, value_name = "STEP", value_parser = [
        "enqueue", "decide", "repair", "followup", "explain", "handoff",
    ])]
    pub step: Option<String>,
}

/// The PiMainteno web dashboard, JSON API and Prometheus metrics.
///
/// Started by pimainteno-dashboard.socket on the first connection: it takes
/// the socket from $LISTEN_FDS and exits after [web] idle_exit without a
/// connection. Run by hand it binds [web] host:port, or --listen, and runs
/// until stopped. Beyond loopback every request needs basic auth ([web]
/// user, password_file).
#[derive(Debug, Parser)]
#[command(name = "pm-dashboard", version)]
pub struct DashboardCli {
    #[command(flatten)]
    pub common: Common,
    /// Listen on ADDR (e.g. 127.0.0.1:8740) instead of [web] host:port;
    /// ignored when systemd passes the socket
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// The store to read [default: [cache] path]
    #[arg(long, value_name = "PATH", env = "PIMAINTENO_STORE")]
    pub store: Option<PathBuf>,
}

/// PiMainteno administration: configuration, state and history.
#[derive(Debug, Parser)]
#[command(name = "pimainteno", version)]
pub struct AdminCli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Validate the configuration and print it resolved (secrets masked)
    CheckConfig,
    /// Show each project's last summary and the store's state
    Status,
    /// Show the summaries and LLM calls recorded for a project, or the
    /// failures of a unit
    History {
        /// Project or unit name (all projects and units when omitted)
        name: Option<String>,
        /// How many records to show
        #[arg(short = 'n', long, default_value_t = 10)]
        limit: usize,
        /// Show what left the machine: each LLM call's prompt exactly as it
        /// was sent (secrets replaced by placeholders) and how many values
        /// of each kind were redacted. Kept for the newest `[cache] history`
        /// calls of each project or unit.
        #[arg(long, requires = "name")]
        prompts: bool,
    },
    /// Watch a unit: its failures start pm-onfailure (writes
    /// conf.d/90-watch.toml, then reloads systemd)
    ///
    /// The name is checked as systemd checks it, with at most 234
    /// characters so that pm-onfailure@UNIT.service fits systemd's limit of
    /// 255; any other name is refused with exit code 78 and nothing is
    /// written. A template (getty@.service) watches all its instances.
    Watch {
        /// The unit, e.g. nginx.service, or a template, e.g. getty@.service
        unit: String,
        /// Write the fragment only; do not run `systemctl daemon-reload`
        #[arg(long)]
        no_reload: bool,
    },
    /// Stop watching a unit added with `pimainteno watch`
    Unwatch {
        /// The unit, e.g. nginx.service
        unit: String,
        /// Write the fragment only; do not run `systemctl daemon-reload`
        #[arg(long)]
        no_reload: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_lines_are_consistent() {
        SummarizeCli::command().debug_assert();
        OnFailureCli::command().debug_assert();
        PatchCli::command().debug_assert();
        AdminCli::command().debug_assert();
    }
}
