//! Child processes with a wall-clock limit.
//!
//! Every child runs in its own process group so that a timeout kills the
//! whole tree: `codex` and `sh -c "cargo test"` both start grandchildren
//! that would otherwise keep the pipes open and outlive us.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// What a finished (or killed) child left behind.
#[derive(Debug)]
pub struct Finished {
    /// `None` when the child was killed by our timeout.
    pub status: Option<ExitStatus>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed: Duration,
    /// True when the timeout fired and the process group was killed.
    pub timed_out: bool,
    /// True when stdout or stderr went over the capture limit (the
    /// beginning of stdout and the end of stderr are kept).
    pub truncated: bool,
}

impl Finished {
    /// The exit code, or the signal number + 128 as a shell would report it.
    pub fn code(&self) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        let status = self.status?;
        status.code().or_else(|| status.signal().map(|s| 128 + s))
    }

    pub fn success(&self) -> bool {
        !self.timed_out && self.status.is_some_and(|s| s.success())
    }
}

/// A program on `path` (or `cmd` itself when it names a file), as the
/// shell would find it.
pub fn which(cmd: &str, path: &std::ffi::OsStr) -> Option<std::path::PathBuf> {
    if cmd.contains('/') {
        return std::path::Path::new(cmd).is_file().then(|| cmd.into());
    }
    std::env::split_paths(path)
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

/// The standard output of a quick command (`systemctl show`, `systemctl
/// start --no-block`); an error names the command and quotes its stderr.
pub fn output(program: &str, args: &[&str]) -> anyhow::Result<String> {
    use anyhow::Context;
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// [`output`] for facts that are optional: `None` when it cannot run or
/// fails.
pub fn query(program: &str, args: &[&str]) -> Option<String> {
    output(program, args).ok()
}

/// Limits for [`run`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    /// Bytes kept per stream; the rest is read and dropped so the child
    /// never blocks on a full pipe.
    pub max_capture: usize,
}

/// Spawn `cmd` (stdin from /dev/null, stdout/stderr captured) in a new
/// process group and wait at most `limits.timeout`. On timeout the whole
/// group gets SIGTERM, then SIGKILL after a short grace period.
pub fn run(cmd: &mut Command, limits: Limits) -> std::io::Result<Finished> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let start = Instant::now();
    let mut child = cmd.spawn()?;
    let out = reader(child.stdout.take(), limits.max_capture, false);
    let err = reader(child.stderr.take(), limits.max_capture, true);

    let deadline = crate::time::deadline(start, limits.timeout);
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        let now = Instant::now();
        if now >= deadline {
            timed_out = true;
            kill_group(&mut child);
            break None;
        }
        // Short sleeps keep a fast child fast without a busy loop.
        let waited = now - start;
        let step = if waited < Duration::from_millis(50) {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(20)
        };
        thread::sleep(step.min(deadline - now));
    };
    // A grandchild that escaped the group could keep a pipe open forever:
    // the readers are joined only for a bounded time after the kill.
    let (stdout, t1) = out.join().unwrap_or_default();
    let (stderr, t2) = err.join().unwrap_or_default();
    Ok(Finished {
        status,
        stdout,
        stderr,
        elapsed: start.elapsed(),
        timed_out,
        truncated: t1 || t2,
    })
}

fn reader<R: Read + Send + 'static>(
    pipe: Option<R>,
    max: usize,
    keep_tail: bool,
) -> thread::JoinHandle<(Vec<u8>, bool)> {
    thread::spawn(move || {
        let Some(mut pipe) = pipe else {
            return (Vec::new(), false);
        };
        let mut kept = Vec::new();
        let mut truncated = false;
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    kept.extend_from_slice(&buf[..n]);
                    if kept.len() > max {
                        truncated = true;
                        if keep_tail {
                            let cut = kept.len() - max;
                            kept.drain(..cut);
                        } else {
                            kept.truncate(max);
                        }
                    }
                }
            }
        }
        (kept, truncated)
    })
}

/// SIGTERM to the group, then SIGKILL if it is still there after 2 s.
fn kill_group(child: &mut Child) {
    let pgid = child.id() as libc::pid_t;
    // SAFETY: plain syscalls on a process group we created with
    // `process_group(0)`; the pid cannot be reused before we reap it.
    unsafe {
        libc::killpg(pgid, libc::SIGTERM);
    }
    let grace = Instant::now() + Duration::from_secs(2);
    while Instant::now() < grace {
        if let Ok(Some(_)) = child.try_wait() {
            // The leader is gone; make sure the rest of the group is too.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    unsafe {
        libc::killpg(pgid, libc::SIGKILL);
    }
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(ms: u64) -> Limits {
        Limits {
            timeout: Duration::from_millis(ms),
            max_capture: 1024,
        }
    }

    #[test]
    fn captures_output_and_status() {
        let f = run(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            limits(5000),
        )
        .unwrap();
        assert_eq!(f.stdout, b"out\n");
        assert_eq!(f.stderr, b"err\n");
        assert_eq!(f.code(), Some(3));
        assert!(!f.timed_out && !f.success());
    }

    #[test]
    fn timeout_kills_the_whole_group() {
        // The grandchild `sleep` holds stdout open: without the group kill
        // the reader would wait 60 s.
        let f = run(
            Command::new("sh").args(["-c", "sleep 60 & sleep 60; echo never"]),
            limits(300),
        )
        .unwrap();
        assert!(f.timed_out);
        assert!(f.elapsed < Duration::from_secs(10), "{:?}", f.elapsed);
        assert!(f.stdout.is_empty());
    }

    #[test]
    fn output_is_bounded() {
        let f = run(
            Command::new("sh").args([
                "-c",
                "head -c 100000 /dev/zero; head -c 5000 /dev/zero | tr '\\0' e >&2; echo END >&2",
            ]),
            limits(5000),
        )
        .unwrap();
        assert!(f.truncated);
        assert_eq!(f.stdout.len(), 1024);
        assert!(f.stderr.ends_with(b"END\n"));
    }
}
