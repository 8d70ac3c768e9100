//! The Landlock layer: what the `pm-sandbox` helper applies to itself
//! inside bubblewrap's namespaces, just before it executes the contained
//! program (Landlock cannot come first: a restricted process may not change
//! its mount topology, which is all bwrap does).
//!
//! Only `std` and the `landlock` crate: the helper includes this file with
//! `#[path]`, so it links none of the library's big modules. The library
//! compiles it too, for the flag names that `sandbox::command` writes and
//! for the unit tests.
//!
//! What it restricts, best effort by the kernel's Landlock ABI:
//! - ABI 1+: the filesystem write rights (write, truncate from ABI 3,
//!   create, remove, rename/link across directories from ABI 2, device
//!   ioctls from ABI 5) only beneath the writable paths, `/tmp`,
//!   `/var/tmp` and `/dev`. Reading and executing stay allowed: hiding
//!   what must not be read is bubblewrap's job;
//! - ABI 9+: connecting to pathname UNIX sockets, also only beneath those
//!   paths (the D-Bus system bus, the Docker socket...);
//! - ABI 6+: always scoped: no abstract UNIX socket made outside (those of
//!   the host's network namespace when the network is allowed) and no
//!   signal to a process outside;
//! - with `--no-network`, ABI 4+: no TCP bind or connect at all (UDP too
//!   from ABI 10). `sandbox::command` does not pass it: the network
//!   namespace already cuts the network off, and this rule would also
//!   forbid the private loopback that test suites use for their own
//!   servers.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use ::landlock::{
    ABI, Access, AccessFs, AccessNet, LandlockStatus, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope,
};

/// Apply Landlock (implied by the two flags below).
pub const FLAG_LANDLOCK: &str = "--landlock";
/// `--landlock-write PATH`: write rights beneath PATH (repeatable).
pub const FLAG_WRITE: &str = "--landlock-write";
/// Deny TCP bind and connect (ABI 4+).
pub const FLAG_NO_NETWORK: &str = "--no-network";

/// Writable for every contained program: bwrap makes them private
/// (tmpfs) or harmless device nodes (/dev/null, /dev/tty).
pub const ALWAYS_WRITABLE: [&str; 3] = ["/tmp", "/var/tmp", "/dev"];

/// The newest ABI this code knows; older kernels get the subset they
/// have (best effort), newer ones nothing unknown.
const ABI_KNOWN: ABI = ABI::V10;

pub const USAGE: &str =
    "usage: pm-sandbox [--landlock] [--landlock-write PATH]... [--no-network] -- PROGRAM [ARG]...";

/// The helper's command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperArgs {
    pub landlock: bool,
    pub writable: Vec<PathBuf>,
    pub no_network: bool,
    pub program: OsString,
    pub args: Vec<OsString>,
}

/// Parse the arguments after the helper's name. Options come first; `--`
/// ends them and is required, so that a program's own options are never
/// mistaken for the helper's.
pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<HelperArgs, String> {
    let mut it = args.into_iter();
    let mut landlock = false;
    let mut writable = Vec::new();
    let mut no_network = false;
    loop {
        let Some(arg) = it.next() else {
            return Err("missing `-- PROGRAM`".into());
        };
        match arg.to_str() {
            Some("--") => break,
            Some(FLAG_LANDLOCK) => landlock = true,
            Some(FLAG_NO_NETWORK) => {
                landlock = true;
                no_network = true;
            }
            Some(FLAG_WRITE) => {
                let path = PathBuf::from(it.next().ok_or("--landlock-write needs a PATH")?);
                if !path.is_absolute() {
                    return Err(format!(
                        "--landlock-write {}: not an absolute path",
                        path.display()
                    ));
                }
                landlock = true;
                writable.push(path);
            }
            _ => return Err(format!("unknown option {:?}", arg)),
        }
    }
    let program = it.next().ok_or("missing the PROGRAM after `--`")?;
    Ok(HelperArgs {
        landlock,
        writable,
        no_network,
        program,
        args: it.collect(),
    })
}

/// Restrict this process (and what it executes) as described in the
/// module's documentation. `Ok` says how much the kernel enforced; `Err`
/// when nothing could be (no Landlock) or a writable path cannot be
/// opened: the helper then refuses to run the program (fail closed).
pub fn restrict(writable: &[PathBuf], no_network: bool) -> Result<String, String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("{what}: {e}");
    let write = AccessFs::from_write(ABI_KNOWN);
    let mut ruleset = Ruleset::default()
        .handle_access(write)
        .map_err(|e| fail("ruleset", &e))?
        .scope(Scope::from_all(ABI_KNOWN))
        .map_err(|e| fail("scope", &e))?;
    if no_network {
        ruleset = ruleset
            .handle_access(AccessNet::from_all(ABI_KNOWN))
            .map_err(|e| fail("network", &e))?;
    }
    let mut created = ruleset.create().map_err(|e| fail("ruleset", &e))?;
    let defaults = ALWAYS_WRITABLE.iter().map(|p| (Path::new(p), true));
    for (path, optional) in writable
        .iter()
        .map(|p| (p.as_path(), false))
        .chain(defaults)
    {
        let fd = match PathFd::new(path) {
            Ok(fd) => fd,
            Err(_) if optional => continue,
            Err(e) => return Err(fail(&path.display().to_string(), &e)),
        };
        // Directory-only rights (create, remove...) are refused on a file.
        let access = if path.is_dir() {
            write
        } else {
            write & AccessFs::from_file(ABI_KNOWN)
        };
        created = created
            .add_rule(PathBeneath::new(fd, access))
            .map_err(|e| fail(&path.display().to_string(), &e))?;
    }
    let status = created.restrict_self().map_err(|e| fail("restrict", &e))?;
    let abi = match status.landlock {
        LandlockStatus::Available { effective_abi, .. } => format!("{effective_abi:?}"),
        LandlockStatus::NotEnabled => "none (not enabled at boot)".into(),
        LandlockStatus::NotImplemented => "none (not in this kernel)".into(),
    };
    match status.ruleset {
        RulesetStatus::FullyEnforced => Ok(format!("fully enforced (ABI {abi})")),
        RulesetStatus::PartiallyEnforced => Ok(format!("partially enforced (ABI {abi})")),
        RulesetStatus::NotEnforced => Err(format!("not enforced: Landlock ABI {abi}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<HelperArgs, String> {
        parse_args(args.iter().map(OsString::from))
    }

    #[test]
    fn parses_options_then_the_program() {
        let a = parse(&[
            "--landlock-write",
            "/w t",
            "--no-network",
            "--",
            "sh",
            "-c",
            "--landlock",
        ])
        .unwrap();
        assert!(a.landlock && a.no_network);
        assert_eq!(a.writable, [PathBuf::from("/w t")]);
        assert_eq!(a.program, "sh");
        assert_eq!(a.args, ["-c", "--landlock"]);
        let plain = parse(&["--", "true"]).unwrap();
        assert!(!plain.landlock && !plain.no_network && plain.writable.is_empty());
        assert!(parse(&["--landlock"]).is_err());
        assert!(parse(&["--"]).is_err());
        assert!(parse(&["true"]).is_err());
        assert!(parse(&["--landlock-write", "rel", "--", "true"]).is_err());
        assert!(parse(&["--landlock-write"]).is_err());
    }
}
