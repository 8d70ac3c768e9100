//! The bubblewrap command line: the namespaces and the mount layout.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use super::Policy;
use super::landlock::{FLAG_LANDLOCK, FLAG_WRITE};

/// Always hidden, when they exist: systemd credentials of the calling
/// service (the LLM key when it comes as `llm-api-key`).
const ALWAYS_HIDDEN: [&str; 1] = ["/run/credentials"];
/// Always hidden under the home, when they exist, even when `~/.cargo` is
/// readable: the crates.io token.
const ALWAYS_HIDDEN_IN_HOME: [&str; 2] = [".cargo/credentials.toml", ".cargo/credentials"];

/// `bubblewrap 0.8.0` → `0.8.0`.
pub(crate) fn parse_version(out: &str) -> Option<String> {
    let v = out.trim().strip_prefix("bubblewrap")?.trim();
    (!v.is_empty()).then(|| v.to_string())
}

/// `--disable-userns` appeared in bubblewrap 0.8.0.
fn has_disable_userns(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (0, 8)
}

/// The namespaces and the fixed part of the layout, shared by the probe and
/// every command, so that a successful probe means these exact options work.
/// `disable_userns`: no user namespace inside (bwrap 0.8+; it needs a
/// writable /proc/sys, which systemd's ProtectKernelTunables= takes away).
fn base_args(version: &str, network: bool, disable_userns: bool) -> Vec<OsString> {
    // SAFETY: getuid/getgid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
    push(&["--die-with-parent", "--new-session"]);
    // Always a new user namespace, also as root: the caller's uid and gid
    // are kept (files in the worktree keep their owner), but root's powers
    // stay outside (with --cap-drop ALL there are none inside either).
    push(&[
        "--unshare-user",
        "--uid",
        &uid.to_string(),
        "--gid",
        &gid.to_string(),
    ]);
    if disable_userns && has_disable_userns(version) {
        push(&["--disable-userns"]);
    }
    push(&[
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
    ]);
    // The helper is the namespace's init: when it exits, the kernel kills
    // everything left inside before bwrap returns (see src/bin/pm-sandbox.rs).
    push(&["--as-pid-1"]);
    if !network {
        push(&["--unshare-net"]);
    }
    push(&["--cap-drop", "ALL"]);
    push(&["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]);
    push(&[
        "--tmpfs",
        "/tmp",
        "--tmpfs",
        "/var/tmp",
        "--tmpfs",
        "/run/user",
    ]);
    a
}

/// Run a trivial command with the base options: `Err` keeps bwrap's words
/// (no user namespaces in this container, a sysctl, AppArmor...).
pub(crate) fn try_namespaces(version: &str, disable_userns: bool) -> Result<(), String> {
    let out = Command::new("bwrap")
        .args(base_args(version, false, disable_userns))
        .args(["--", "true"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run bwrap: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Err(if err.is_empty() {
        format!("bwrap failed ({})", out.status)
    } else {
        err
    })
}

/// One mount of the policy, placed by the depth of its destination.
enum Mount {
    /// An empty tmpfs, made read-only once everything inside is mounted.
    Empty(PathBuf),
    /// `/dev/null` over a file.
    Null(PathBuf),
    /// Source, destination.
    ReadOnly(PathBuf, PathBuf),
    ReadWrite(PathBuf),
}

impl Mount {
    fn dest(&self) -> &Path {
        match self {
            Mount::Empty(p) | Mount::Null(p) | Mount::ReadWrite(p) => p,
            Mount::ReadOnly(_, p) => p,
        }
    }

    /// At the same depth (the same path twice), the later rank wins.
    fn rank(&self) -> u8 {
        match self {
            Mount::Empty(_) => 0,
            Mount::ReadOnly(..) => 1,
            Mount::ReadWrite(_) => 2,
            Mount::Null(_) => 3,
        }
    }
}

fn absolute(what: &str, p: &Path) -> anyhow::Result<()> {
    if !p.is_absolute() {
        bail!("sandbox {what} {}: not an absolute path", p.display());
    }
    Ok(())
}

/// The real path of something that exists (`None` when missing): mounts
/// go over the real directory, not over a symbolic link to it.
fn real(p: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(p).ok()
}

/// `dest` rebased from the home as given to the home as it really is.
fn in_home(home: &Path, real_home: &Path, entry: &Path) -> PathBuf {
    let entry = home.join(entry);
    match entry.strip_prefix(home) {
        Ok(rest) => real_home.join(rest),
        Err(_) => real(&entry).unwrap_or(entry),
    }
}

fn hide(path: &Path, mounts: &mut Vec<Mount>) {
    let Some(r) = real(path) else { return };
    if r == Path::new("/") {
        return;
    }
    if r.is_dir() {
        mounts.push(Mount::Empty(r));
    } else {
        mounts.push(Mount::Null(r));
    }
}

/// The complete bwrap argument list (after `bwrap`) for `program args`
/// under `policy`, through `helper`.
pub(crate) fn args(
    policy: &Policy,
    version: &str,
    disable_userns: bool,
    landlock: bool,
    helper: &Path,
    program: &OsStr,
    args: &[OsString],
) -> anyhow::Result<Vec<OsString>> {
    absolute("working directory", &policy.cwd)?;
    let mut mounts = Vec::new();
    let mut writable = Vec::new();
    for w in &policy.writable {
        absolute("writable path", w)?;
        let r = real(w).with_context(|| format!("sandbox writable path {}", w.display()))?;
        if !r.is_dir() {
            bail!("sandbox writable path {}: not a directory", w.display());
        }
        mounts.push(Mount::ReadWrite(r.clone()));
        writable.push(r);
    }
    if let Some(home) = &policy.home {
        absolute("home", home)?;
        if let Some(real_home) = real(home) {
            mounts.push(Mount::Empty(real_home.clone()));
            for entry in &policy.home_readable {
                let src = home.join(entry);
                mounts.push(Mount::ReadOnly(src, in_home(home, &real_home, entry)));
            }
            for entry in ALWAYS_HIDDEN_IN_HOME {
                hide(&real_home.join(entry), &mut mounts);
            }
        }
    }
    for h in ALWAYS_HIDDEN
        .iter()
        .map(PathBuf::from)
        .chain(policy.hidden.iter().cloned())
    {
        absolute("hidden path", &h)?;
        hide(&h, &mut mounts);
    }
    for r in &policy.readable {
        absolute("readable path", r)?;
        if let Some(real_r) = real(r) {
            mounts.push(Mount::ReadOnly(real_r.clone(), real_r));
        }
    }
    // The helper must be visible inside, even under the home or a hidden
    // directory (or /tmp, when a test copied it there).
    mounts.push(Mount::ReadOnly(helper.to_path_buf(), helper.to_path_buf()));
    // Parents before children: a deeper path is mounted later and covers
    // what is above it, whatever list it came from (a worktree inside a
    // hidden state directory is writable; a hidden file inside the
    // worktree is hidden).
    mounts.sort_by_key(|m| (m.dest().components().count(), m.rank()));

    let mut a = base_args(version, policy.network, disable_userns);
    let push = |a: &mut Vec<OsString>, items: &[&OsStr]| a.extend(items.iter().map(OsString::from));
    let mut empty = Vec::new();
    for m in &mounts {
        match m {
            Mount::Empty(p) => {
                push(&mut a, &["--tmpfs".as_ref(), p.as_os_str()]);
                empty.push(p);
            }
            Mount::Null(p) => push(
                &mut a,
                &["--ro-bind".as_ref(), "/dev/null".as_ref(), p.as_os_str()],
            ),
            Mount::ReadOnly(src, dest) => push(
                &mut a,
                &["--ro-bind-try".as_ref(), src.as_os_str(), dest.as_os_str()],
            ),
            Mount::ReadWrite(p) => push(&mut a, &["--bind".as_ref(), p.as_os_str(), p.as_os_str()]),
        }
    }
    // Last: the hiding tmpfs become read-only. Not recursive, so what is
    // mounted inside them keeps its own mode.
    for p in empty {
        push(&mut a, &["--remount-ro".as_ref(), p.as_os_str()]);
    }
    let cwd = real(&policy.cwd)
        .with_context(|| format!("sandbox working directory {}", policy.cwd.display()))?;
    push(&mut a, &["--chdir".as_ref(), cwd.as_os_str()]);
    if let Some(home) = &policy.home {
        push(
            &mut a,
            &["--setenv".as_ref(), "HOME".as_ref(), home.as_os_str()],
        );
    }
    push(
        &mut a,
        &["--setenv".as_ref(), "TMPDIR".as_ref(), "/tmp".as_ref()],
    );
    push(&mut a, &["--".as_ref(), helper.as_os_str()]);
    if landlock {
        a.push(FLAG_LANDLOCK.into());
        for w in &writable {
            push(&mut a, &[FLAG_WRITE.as_ref(), w.as_os_str()]);
        }
    }
    a.push("--".into());
    a.push(program.to_os_string());
    a.extend(args.iter().cloned());
    Ok(a)
}
