//! pimainteno: the administration command; see `pimainteno --help`.

use std::process::ExitCode;

use clap::Parser;
use pimainteno::cli::AdminCli;
use pimainteno::{admin, exit, logging};

fn main() -> ExitCode {
    let cli = AdminCli::parse();
    logging::init(cli.common.verbose, cli.common.quiet);
    match admin::run(&cli) {
        Ok(code) => code.into(),
        Err(e) => {
            exit::report(&e);
            exit::code_for(&e).into()
        }
    }
}
