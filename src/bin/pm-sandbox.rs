//! pm-sandbox: the helper that `pimainteno::sandbox::command` runs inside
//! bubblewrap's namespaces. It applies the Landlock layer when asked, then
//! executes the program (PATH lookup, like execvp).
//!
//! `pm-sandbox [--landlock] [--landlock-write PATH]... [--no-network] -- PROGRAM [ARG]...`
//!
//! As PID 1 of bubblewrap's PID namespace (`--as-pid-1`) it stays as the
//! namespace's init instead of executing the program: see [`init`].
//!
//! Exit status: the program's (128 + N when killed by signal N); 127 when
//! it cannot be found, 126 when it cannot be executed or Landlock was asked
//! for and cannot be applied, 2 for a bad command line.
//!
//! Deliberately tiny: std, libc and the `landlock` crate only, none of the
//! library (it ships in the Debian package next to the big binaries).

#[path = "../sandbox/landlock.rs"]
mod landlock_layer;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, exit};

fn main() {
    let args = match landlock_layer::parse_args(std::env::args_os().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("pm-sandbox: {e}\n{}", landlock_layer::USAGE);
            exit(2);
        }
    };
    if args.landlock {
        if let Err(e) = landlock_layer::restrict(&args.writable, args.no_network) {
            eprintln!("pm-sandbox: cannot apply Landlock, not running the command: {e}");
            exit(126);
        }
    }
    let Some(path) = find(&args.program) else {
        eprintln!(
            "pm-sandbox: cannot run {}: not found in PATH",
            args.program.to_string_lossy()
        );
        exit(127);
    };
    let mut cmd = Command::new(path);
    cmd.arg0(&args.program).args(&args.args);
    if std::process::id() == 1 {
        exit(init(cmd, &args.program));
    }
    // Only returns on failure. std restores SIGPIPE's default action.
    let err = cmd.exec();
    exit(cannot_run(&args.program, &err));
}

/// execvp's search, except that a directory on PATH that cannot be read
/// (EACCES) does not turn "not found" into "permission denied".
fn find(program: &OsStr) -> Option<PathBuf> {
    if program.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0))
}

fn cannot_run(program: &OsStr, err: &std::io::Error) -> i32 {
    eprintln!(
        "pm-sandbox: cannot run {}: {err}",
        program.to_string_lossy()
    );
    if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

/// PID 1 of the sandbox's namespace (bwrap `--as-pid-1`): run the program,
/// reap every orphan, and return the program's status as soon as it ends.
/// Our exit then makes the kernel kill whatever is left in the namespace
/// (daemons, double forks) before bwrap sees it: when bwrap returns, they
/// are gone. (bwrap's own PID 1 reports pid 2's end earlier, through an
/// eventfd, racing with that clean-up.)
fn init(mut cmd: Command, program: &OsStr) -> i32 {
    let child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return cannot_run(program, &e),
    };
    let pid = child.id() as libc::pid_t;
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only into `status`.
        let died = unsafe { libc::waitpid(-1, &mut status, 0) };
        if died == pid {
            if libc::WIFEXITED(status) {
                return libc::WEXITSTATUS(status);
            }
            if libc::WIFSIGNALED(status) {
                return 128 + libc::WTERMSIG(status);
            }
        } else if died == -1
            && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
        {
            // No child left (cannot happen while the program runs).
            return 126;
        }
    }
}
