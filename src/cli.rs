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
    /// Show the summaries and LLM calls recorded for a project
    History {
        /// Project name (all projects when omitted)
        name: Option<String>,
        /// How many records to show
        #[arg(short = 'n', long, default_value_t = 10)]
        limit: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_lines_are_consistent() {
        SummarizeCli::command().debug_assert();
        AdminCli::command().debug_assert();
    }
}
