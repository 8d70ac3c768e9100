//! pm-onfailure: started as pm-onfailure@UNIT.service by a watched unit's
//! OnFailure=, and by pimainteno-repair.service and
//! pimainteno-explain.service; see `pm-onfailure --help`.

use std::process::ExitCode;

use clap::Parser;
use pimainteno::cli::OnFailureCli;
use pimainteno::config::{self, LoadOptions};
use pimainteno::exit::{self, Exit};
use pimainteno::logging;
use pimainteno::onfailure::{self, Options, Stage, rundir::RunDir};

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
        Some("enqueue") => Stage::Enqueue,
        Some("decide") => Stage::Decide,
        Some("repair") => Stage::Repair,
        Some("followup") => Stage::Followup,
        Some("explain") => Stage::Explain,
        Some("handoff") => Stage::Handoff,
        _ => Stage::All,
    };
    let opts = Options {
        unit: cli.unit,
        stage,
        run_dir: RunDir::from_env(),
    };
    match stage {
        // Queueing and the privileged steps read no configuration: a broken
        // file must stop neither the record of a failure nor a restart.
        Stage::Enqueue => return onfailure::enqueue(&opts),
        Stage::Repair | Stage::Handoff => {
            return onfailure::privileged_step(&opts);
        }
        _ => {}
    }
    let loaded = config::load(&LoadOptions {
        path: cli.common.config.clone(),
        defaults_if_missing: false,
    });
    match loaded {
        Ok(settings) => onfailure::run(&settings, false, &opts),
        // By hand: say what is wrong (exit 78).
        Err(e) if stage == Stage::All => Err(e.into()),
        // In the units: repair all the same, with the defaults, and say so
        // loudly; the unit must not fail (its .path unit would start it
        // again and again).
        Err(e) => {
            tracing::error!(
                "the configuration cannot be read: {e:#}; failures are repaired with the default \
                 limits, not recorded and not explained until it is fixed"
            );
            let defaults = config::load(&LoadOptions {
                path: Some("/nonexistent/pimainteno.toml".into()),
                defaults_if_missing: true,
            })?;
            onfailure::run(&defaults, true, &opts)
        }
    }
}
