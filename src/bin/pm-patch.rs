//! pm-patch: run after pm-summarize by pimainteno.service, and as
//! pimainteno-patch@PROJECT.service when pm-onfailure hands a failure
//! over; see `pm-patch --help`.

use std::process::ExitCode;

use clap::Parser;
use pimainteno::cli::PatchCli;
use pimainteno::config::{self, LoadOptions};
use pimainteno::exit::{self, Exit};
use pimainteno::{logging, patch};

fn main() -> ExitCode {
    let cli = PatchCli::parse();
    logging::init(cli.common.verbose, cli.common.quiet);
    match run(cli) {
        Ok(code) => code.into(),
        Err(e) => {
            exit::report(&e);
            exit::code_for(&e).into()
        }
    }
}

fn run(cli: PatchCli) -> anyhow::Result<Exit> {
    let settings = config::load(&LoadOptions {
        path: cli.common.config.clone(),
        defaults_if_missing: false,
    })?;
    for w in &settings.warnings {
        tracing::warn!("{w}");
    }
    let opts = patch::Options {
        only: cli.projects,
        task: cli.task,
        dry_run: cli.dry_run,
    };
    let reports = patch::run(&settings, &opts)?;
    // Every project's outcome was logged as it happened (stderr on a
    // terminal, the journal under systemd) and recorded.
    Ok(patch::exit_code(&reports, opts.task.is_some()))
}
