//! pimainteno-system-generator: systemd runs it at boot and at every
//! `daemon-reload` as `pimainteno-system-generator NORMAL EARLY LATE`.
//! It turns the configuration into unit drop-ins; see `generator.rs`.
//!
//! It takes no options (systemd passes none) and always exits 0: a
//! generator that fails must not hold up the boot, so problems go to the
//! kernel log instead.

use std::ffi::OsString;

use pimainteno::generator;

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match args.first().and_then(|a| a.to_str()) {
        Some("--version" | "-V") => {
            println!("pimainteno-system-generator {}", env!("CARGO_PKG_VERSION"));
            return;
        }
        Some("--help" | "-h") => {
            println!(
                "usage: pimainteno-system-generator NORMAL_DIR [EARLY_DIR LATE_DIR]\n\n\
                 Run by systemd; writes unit drop-ins from /etc/pimainteno/pimainteno.toml\n\
                 ($PIMAINTENO_CONFIG) into NORMAL_DIR. See pimainteno-system-generator(8)."
            );
            return;
        }
        _ => {}
    }
    generator::run(&args, None, &mut generator::kernel_log);
}
