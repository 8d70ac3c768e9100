//! pm-onfailure: started as pm-onfailure@UNIT.service by a watched unit's
//! OnFailure=; see `pm-onfailure --help`.

use std::process::ExitCode;

use clap::Parser;
use pimainteno::cli::OnFailureCli;
use pimainteno::config::{self, LoadOptions};
use pimainteno::exit::{self, Exit};
use pimainteno::logging;
use pimainteno::onfailure::{self, Options, Stage};

fn main() -> ExitCode {
    let cli = OnFailureCli::parse();
    logging::init(cli.common.verbose, cli.common.quiet);
    match run(cli) {
        Ok(code) => code.into(),
        Err(e) => {
            exit::report(&e);
            exit::code_for(&e).into()
        }
    }
}

fn run(cli: OnFailureCli) -> anyhow::Result<Exit> {
    let stage = match cli.step.as_deref() {
        Some("decide") => Stage::Decide,
        Some("repair") => Stage::Repair,
        Some("explain") => Stage::Explain,
        Some("handoff") => Stage::Handoff,
        _ => Stage::All,
    };
    let opts = Options {
        unit: cli.unit,
        stage,
        runtime_dir: std::env::var_os("RUNTIME_DIRECTORY").map(Into::into),
    };
    if matches!(stage, Stage::Repair | Stage::Handoff) {
        // The privileged steps read no configuration: a broken file must
        // not stop a restart step 1 decided.
        return onfailure::privileged_step(&opts);
    }
    let settings = config::load(&LoadOptions {
        path: cli.common.config.clone(),
        defaults_if_missing: false,
    })?;
    onfailure::run(&settings, &opts)
}
