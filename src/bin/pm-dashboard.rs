//! pm-dashboard: started by pimainteno-dashboard.socket; see
//! `pm-dashboard --help`.

use std::process::ExitCode;

use clap::Parser;
use pimainteno::cli::DashboardCli;
use pimainteno::exit;
use pimainteno::{dashboard, logging};

fn main() -> ExitCode {
    let cli = DashboardCli::parse();
    logging::init(cli.common.verbose, cli.common.quiet);
    match dashboard::run(dashboard::Options {
        config: cli.common.config,
        listen: cli.listen,
        store: cli.store,
    }) {
        Ok(code) => code.into(),
        Err(e) => {
            exit::report(&e);
            exit::code_for(&e).into()
        }
    }
}
