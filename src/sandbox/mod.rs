//! Containment for commands that run unattended code (the project's check
//! after an LLM's fix): they may write only in the worktree and a private
//! /tmp, cannot read the account's secrets, have no network, and leave no
//! process behind.
//!
//! Two layers:
//! 1. bubblewrap (`bwrap`, Debian package `bubblewrap`): new user, PID,
//!    IPC, UTS, cgroup and (unless allowed) network namespaces; the root
//!    read-only; the home, the hidden paths and `/run/user` replaced by
//!    empty read-only tmpfs; private /tmp and /var/tmp; the writable paths
//!    bound back read-write; all capabilities dropped, no further user
//!    namespace. This is the layer a Raspberry Pi has: its kernels lack
//!    Landlock but allow unprivileged user namespaces.
//! 2. Landlock ([`landlock`]), where the kernel has it: the `pm-sandbox`
//!    helper, run by bwrap inside the namespaces, restricts itself (writes
//!    only beneath the writable paths, /tmp, /var/tmp, /dev; scoped abstract
//!    sockets and signals) and runs the program.
//!
//! The helper is the PID namespace's init (`bwrap --as-pid-1`): it reaps
//! orphans and exits as soon as the program does, and the kernel then kills
//! everything left inside (daemons, double forks) before bwrap returns.
//! The home is read-only: a check that wants a writable cache gets one
//! under /tmp through `Command::env` (e.g. `XDG_CACHE_HOME=/tmp/cache`).
//!
//! The helper is found next to the running executable (or one directory up
//! for test binaries in `target/*/deps/`), then at
//! [`HELPER_INSTALLED`]; the environment variable [`HELPER_ENV`], when
//! set, names it instead (tests that copy binaries around).
//!
//! The environment is not inherited: only [`INHERITED_ENV`] (and `LC_*`)
//! passes, plus `HOME` (the policy's) and `TMPDIR=/tmp`, so that an API key
//! in the caller's environment stays outside. Add what a check needs with
//! `Command::env` on the returned command.
//!
//! Exit status: the program's; 127 when it is not found, 126 when it
//! cannot be executed or Landlock cannot be applied (the helper), 1 with
//! `bwrap: ...` on stderr when bubblewrap cannot set the sandbox up.
//!
//! Not covered: pathname UNIX sockets on the read-only root (connecting
//! needs no write access: the D-Bus system bus, `/run/docker.sock`; hide
//! them, or Landlock ABI 9+ refuses them); CPU, memory and disk use
//! (the caller's timeout; a cgroup would be the next step); what is
//! readable on the root outside the home and the hidden paths.

mod bwrap;
pub mod landlock;

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Overrides where the helper is looked for (tests).
pub const HELPER_ENV: &str = "PIMAINTENO_SANDBOX_HELPER";
/// Where the Debian package installs the helper.
pub const HELPER_INSTALLED: &str = "/usr/lib/pimainteno/pm-sandbox";
/// The helper's file name next to the other binaries.
pub const HELPER_NAME: &str = "pm-sandbox";
/// The toolchains under the home that stay readable by default.
pub const DEFAULT_HOME_READABLE: [&str; 3] = [".cargo", ".rustup", ".local"];
/// Environment variables passed in (with any `LC_*`).
pub const INHERITED_ENV: [&str; 12] = [
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "TERM",
    "TZ",
    "CARGO_HOME",
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
    "NO_COLOR",
];

/// What a contained command may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Bound read-write (the worktree): existing directories. Everything
    /// else is read-only.
    pub writable: Vec<PathBuf>,
    /// Hidden: an empty read-only tmpfs over a directory, /dev/null over a
    /// file (on a `nodev` mount: opening it fails) (secrets, the store,
    /// configuration with keys). Missing paths are skipped. `/run/credentials` and `~/.cargo/credentials.toml` are
    /// always hidden.
    pub hidden: Vec<PathBuf>,
    /// The account's home: hidden as a whole (empty read-only tmpfs) except
    /// the `home_readable` entries (relative to it, or absolute), which are
    /// bound back read-only. `HOME` inside is this path.
    pub home: Option<PathBuf>,
    pub home_readable: Vec<PathBuf>,
    /// Extra read-only paths visible even under a hidden one.
    pub readable: Vec<PathBuf>,
    pub network: bool,
    /// Use the Landlock layer when the kernel has it (false: namespaces
    /// only, as on a Raspberry Pi).
    pub landlock: bool,
    /// Let the program make namespaces of its own (codex runs its commands
    /// in its own bubblewrap sandbox). The mounts made here stay locked
    /// for it all the same.
    pub nested_namespaces: bool,
    /// Working directory inside.
    pub cwd: PathBuf,
}

impl Policy {
    /// Write in `worktree` only (and work there), the home hidden but its
    /// toolchains ([`DEFAULT_HOME_READABLE`]), no network, both layers.
    pub fn new(worktree: &Path, home: Option<&Path>) -> Policy {
        Policy {
            writable: vec![worktree.to_path_buf()],
            hidden: Vec::new(),
            home: home.map(Path::to_path_buf),
            home_readable: DEFAULT_HOME_READABLE.iter().map(PathBuf::from).collect(),
            readable: Vec::new(),
            network: false,
            landlock: true,
            nested_namespaces: false,
            cwd: worktree.to_path_buf(),
        }
    }
}

/// A policy with the capabilities to carry it out: what a caller hands on
/// to run a command contained.
#[derive(Debug)]
pub struct Contained<'a> {
    pub policy: Policy,
    pub caps: &'a Capabilities,
}

/// What this machine offers, probed once ([`probe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// bubblewrap's version ("0.8.0"), `None` when it is not installed.
    pub bwrap: Option<String>,
    /// A trivial run with the sandbox's namespaces works here.
    pub namespaces: bool,
    /// Why not, in bwrap's words (inside a container, with
    /// `kernel.unprivileged_userns_clone=0`, under AppArmor's restriction).
    pub namespaces_error: Option<String>,
    /// bwrap's `--disable-userns` works here: no user namespace can be
    /// made inside (defence in depth; bwrap's mounts stay locked anyway).
    pub disable_userns: bool,
    /// The kernel's Landlock ABI, `None` without Landlock.
    pub landlock_abi: Option<i32>,
    /// The `pm-sandbox` helper ([`helper_path`]).
    pub helper: Option<PathBuf>,
}

/// Probe bubblewrap (version, a trivial run), Landlock and the helper. A
/// few milliseconds: once per run, not per command.
pub fn probe() -> Capabilities {
    let bwrap = Command::new("bwrap")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| bwrap::parse_version(&String::from_utf8_lossy(&o.stdout)));
    // With nested user namespaces disabled if this machine allows it (not
    // under ProtectKernelTunables=), else without: the mounts made here
    // are locked for a nested namespace all the same.
    let (namespaces, namespaces_error, disable_userns) = match &bwrap {
        None => (false, None, false),
        Some(v) => match bwrap::try_namespaces(v, true) {
            Ok(()) => (true, None, true),
            Err(first) => match bwrap::try_namespaces(v, false) {
                Ok(()) => (true, None, false),
                Err(_) => (false, Some(first), false),
            },
        },
    };
    Capabilities {
        bwrap,
        namespaces,
        namespaces_error,
        disable_userns,
        landlock_abi: landlock_abi(),
        helper: helper_path(),
    }
}

/// The kernel's Landlock ABI version (what `landlock_create_ruleset` says
/// with `LANDLOCK_CREATE_RULESET_VERSION`).
pub fn landlock_abi() -> Option<i32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute pointer and size 0 the kernel reads
    // nothing; it returns the ABI version or -1 (ENOSYS, EOPNOTSUPP).
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    (v > 0).then_some(v as i32)
}

/// Where the helper is: [`HELPER_ENV`] if set (and nothing else then), the
/// running executable's directory, its parent for `deps/`, then
/// [`HELPER_INSTALLED`].
pub fn helper_path() -> Option<PathBuf> {
    fn executable(p: &Path) -> bool {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    let found = |p: PathBuf| executable(&p).then(|| std::fs::canonicalize(&p).unwrap_or(p));
    if let Some(p) = std::env::var_os(HELPER_ENV).filter(|p| !p.is_empty()) {
        return found(PathBuf::from(p));
    }
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        candidates.push(dir.join(HELPER_NAME));
        if dir.file_name() == Some(OsStr::new("deps")) {
            if let Some(up) = dir.parent() {
                candidates.push(up.join(HELPER_NAME));
            }
        }
    }
    candidates.push(PathBuf::from(HELPER_INSTALLED));
    candidates.into_iter().find_map(found)
}

impl Capabilities {
    /// Why nothing can be contained here, with what to do; `None` when it
    /// can.
    pub fn missing(&self) -> Option<String> {
        let Some(version) = &self.bwrap else {
            return Some("bubblewrap is not installed (apt install bubblewrap)".into());
        };
        if !self.namespaces {
            return Some(format!(
                "bubblewrap {version} cannot create namespaces here: {} (unprivileged user \
                 namespaces are needed: sysctl kernel.unprivileged_userns_clone=1 and \
                 user.max_user_namespaces > 0; on Ubuntu 24.04+ \
                 kernel.apparmor_restrict_unprivileged_userns=1 blocks them; a container may \
                 forbid them)",
                self.namespaces_error.as_deref().unwrap_or("unknown error")
            ));
        }
        if self.helper.is_none() {
            return Some(format!(
                "the helper {HELPER_NAME} is missing (not next to this program nor at \
                 {HELPER_INSTALLED}: reinstall pimainteno, or set {HELPER_ENV})"
            ));
        }
        None
    }

    pub fn can_contain(&self) -> bool {
        self.missing().is_none()
    }

    /// One line for logs and `pimainteno doctor`-like reports, e.g.
    /// "namespaces (bubblewrap 0.8.0), landlock ABI 7, network isolated",
    /// "namespaces (bubblewrap 0.8.0), no landlock (the kernel has none),
    /// network allowed", "NONE: bubblewrap is not installed (apt install
    /// bubblewrap)".
    pub fn describe(&self, policy_network: bool, use_landlock: bool) -> String {
        if let Some(why) = self.missing() {
            return format!("NONE: {why}");
        }
        let version = self.bwrap.as_deref().unwrap_or_default();
        let landlock = match (self.landlock_abi, use_landlock) {
            (Some(abi), true) => format!("landlock ABI {abi}"),
            (Some(abi), false) => format!("landlock off (the kernel has ABI {abi})"),
            (None, _) => "no landlock (the kernel has none)".into(),
        };
        let network = if policy_network {
            "network allowed"
        } else {
            "network isolated"
        };
        format!("namespaces (bubblewrap {version}), {landlock}, {network}")
    }
}

/// The environment passed in: the allowed names of `vars`.
pub fn inherited_env(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Vec<(OsString, OsString)> {
    vars.into_iter()
        .filter(|(k, _)| {
            k.to_str()
                .is_some_and(|k| INHERITED_ENV.contains(&k) || k.starts_with("LC_"))
        })
        .collect()
}

/// The contained form of `program args`: a [`Command`] that runs bwrap,
/// which runs the helper inside the namespaces, which applies Landlock
/// (when asked and available) and executes the program (PATH lookup). The
/// caller sets stdin/stdout/stderr and runs it, e.g. with
/// [`crate::process::run`] (a timeout kills bwrap, and with it the whole
/// PID namespace). Spawn it from a thread that outlives the child:
/// `--die-with-parent` follows the spawning thread.
///
/// `Err` when containment is impossible here (why, and what to install) or
/// the policy is unusable (a relative path, a missing writable directory).
pub fn command(
    policy: &Policy,
    caps: &Capabilities,
    program: &OsStr,
    args: &[OsString],
) -> anyhow::Result<Command> {
    if let Some(why) = caps.missing() {
        anyhow::bail!("cannot contain `{}`: {why}", program.to_string_lossy());
    }
    let version = caps.bwrap.as_deref().unwrap_or_default();
    let helper = caps
        .helper
        .as_deref()
        .unwrap_or(Path::new(HELPER_INSTALLED));
    let landlock = policy.landlock && caps.landlock_abi.is_some();
    let argv = bwrap::args(
        policy,
        version,
        caps.disable_userns && !policy.nested_namespaces,
        landlock,
        helper,
        program,
        args,
    )?;
    let mut cmd = Command::new("bwrap");
    cmd.env_clear()
        .envs(inherited_env(std::env::vars_os()))
        .current_dir("/")
        .args(argv);
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps() -> Capabilities {
        Capabilities {
            bwrap: Some("0.8.0".into()),
            namespaces: true,
            namespaces_error: None,
            disable_userns: true,
            landlock_abi: Some(7),
            helper: Some("/usr/lib/pimainteno/pm-sandbox".into()),
        }
    }

    fn os(items: &[&str]) -> Vec<OsString> {
        items.iter().map(OsString::from).collect()
    }

    #[test]
    fn describes_what_the_machine_has() {
        let c = caps();
        assert!(c.can_contain());
        assert_eq!(
            c.describe(false, true),
            "namespaces (bubblewrap 0.8.0), landlock ABI 7, network isolated"
        );
        assert_eq!(
            c.describe(true, false),
            "namespaces (bubblewrap 0.8.0), landlock off (the kernel has ABI 7), network allowed"
        );
        let pi = Capabilities {
            landlock_abi: None,
            ..caps()
        };
        assert_eq!(
            pi.describe(true, true),
            "namespaces (bubblewrap 0.8.0), no landlock (the kernel has none), network allowed"
        );
        let none = Capabilities {
            bwrap: None,
            namespaces: false,
            ..caps()
        };
        assert!(!none.can_contain());
        assert_eq!(
            none.describe(false, true),
            "NONE: bubblewrap is not installed (apt install bubblewrap)"
        );
        let blocked = Capabilities {
            namespaces: false,
            namespaces_error: Some("bwrap: No permissions to create new namespace".into()),
            ..caps()
        };
        let text = blocked.describe(false, true);
        assert!(
            text.starts_with(
                "NONE: bubblewrap 0.8.0 cannot create namespaces here: bwrap: No permissions"
            ),
            "{text}"
        );
        assert!(text.contains("unprivileged_userns_clone"), "{text}");
        let no_helper = Capabilities {
            helper: None,
            ..caps()
        };
        assert!(
            no_helper
                .describe(false, true)
                .contains("pm-sandbox is missing")
        );
    }

    #[test]
    fn command_refuses_without_bubblewrap() {
        let dir = tempfile::tempdir().unwrap();
        let policy = Policy::new(dir.path(), None);
        let none = Capabilities {
            bwrap: None,
            namespaces: false,
            ..caps()
        };
        let err = command(&policy, &none, "sh".as_ref(), &[]).unwrap_err();
        assert!(err.to_string().contains("apt install bubblewrap"), "{err}");
    }

    #[test]
    fn parses_the_version() {
        assert_eq!(
            bwrap::parse_version("bubblewrap 0.8.0\n").as_deref(),
            Some("0.8.0")
        );
        assert_eq!(bwrap::parse_version("something else"), None);
        assert_eq!(bwrap::parse_version("bubblewrap"), None);
    }

    #[test]
    fn passes_only_the_allowed_environment() {
        let vars = [
            ("PATH", "/usr/bin:/bin"),
            ("LC_ALL", "C.UTF-8"),
            ("OPENAI_API_KEY", "sk-secret"),
            ("SSH_AUTH_SOCK", "/run/user/1000/ssh"),
            ("DBUS_SESSION_BUS_ADDRESS", "unix:path=/run/user/1000/bus"),
            ("CREDENTIALS_DIRECTORY", "/run/credentials/x"),
        ];
        let kept = inherited_env(vars.iter().map(|(k, v)| (k.into(), v.into())));
        let names: Vec<_> = kept.iter().map(|(k, _)| k.to_str().unwrap()).collect();
        assert_eq!(names, ["PATH", "LC_ALL"]);
    }

    /// The exact list for a typical policy: a worktree inside a hidden
    /// state directory, a hidden file inside the worktree, the home with
    /// one readable toolchain and a hidden key file.
    #[test]
    fn the_argument_list_of_a_typical_policy() {
        let base = tempfile::tempdir().unwrap();
        let b = std::fs::canonicalize(base.path()).unwrap();
        let state = b.join("state");
        let wt = state.join("worktrees/w 1");
        let home = b.join("home");
        for d in [&wt, &home.join(".cargo"), &home.join(".ssh")] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(wt.join(".env"), "k").unwrap();
        let key = b.join("pimainteno.toml");
        std::fs::write(&key, "api_key").unwrap();
        let policy = Policy {
            hidden: vec![
                state.clone(),
                key.clone(),
                wt.join(".env"),
                b.join("missing"),
            ],
            ..Policy::new(&wt, Some(&home))
        };
        let helper = Path::new("/usr/lib/pimainteno/pm-sandbox");
        let got = bwrap::args(
            &policy,
            "0.8.0",
            true,
            true,
            helper,
            "sh".as_ref(),
            &os(&["-c", "cargo test"]),
        )
        .unwrap();
        // SAFETY: plain getters.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let p = |p: &Path| p.to_str().unwrap().to_string();
        let mut want: Vec<String> = [
            "--die-with-parent",
            "--new-session",
            "--unshare-user",
            "--uid",
            &uid.to_string(),
            "--gid",
            &gid.to_string(),
            "--disable-userns",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--as-pid-1",
            "--unshare-net",
            "--cap-drop",
            "ALL",
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--tmpfs",
            "/tmp",
            "--tmpfs",
            "/var/tmp",
            "--tmpfs",
            "/run/user",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // By depth: the run credentials only if this machine has them.
        // In the code's order of insertion (the sort below is stable).
        let mut mounts: Vec<(usize, Vec<String>)> = vec![
            (depth(&wt), vec!["--bind".into(), p(&wt), p(&wt)]),
            (depth(&home), vec!["--tmpfs".into(), p(&home)]),
        ];
        for e in DEFAULT_HOME_READABLE {
            let e = home.join(e);
            mounts.push((depth(&e), vec!["--ro-bind-try".into(), p(&e), p(&e)]));
        }
        // The run credentials only if this machine has them.
        if Path::new("/run/credentials").is_dir() {
            mounts.push((3, vec!["--tmpfs".into(), "/run/credentials".into()]));
        }
        mounts.extend([
            (depth(&state), vec!["--tmpfs".into(), p(&state)]),
            (
                depth(&key),
                vec!["--ro-bind".into(), "/dev/null".into(), p(&key)],
            ),
            (
                depth(&wt) + 1,
                vec!["--ro-bind".into(), "/dev/null".into(), p(&wt.join(".env"))],
            ),
            (
                depth(helper),
                vec!["--ro-bind-try".into(), p(helper), p(helper)],
            ),
        ]);
        // Same order rule as the code: depth, then tmpfs < ro < rw < null.
        let rank = |v: &Vec<String>| match v[0].as_str() {
            "--tmpfs" => 0,
            "--ro-bind-try" => 1,
            "--bind" => 2,
            _ => 3,
        };
        mounts.sort_by_key(|(d, v)| (*d, rank(v)));
        for (_, m) in &mounts {
            want.extend(m.iter().cloned());
        }
        for (_, m) in &mounts {
            if m[0] == "--tmpfs" {
                want.extend(["--remount-ro".to_string(), m[1].clone()]);
            }
        }
        want.extend(
            [
                "--chdir",
                &p(&wt),
                "--setenv",
                "HOME",
                &p(&home),
                "--setenv",
                "TMPDIR",
                "/tmp",
                "--",
                &p(helper),
                "--landlock",
                "--landlock-write",
                &p(&wt),
                "--",
                "sh",
                "-c",
                "cargo test",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        let got: Vec<String> = got
            .iter()
            .map(|s| s.to_str().unwrap().to_string())
            .collect();
        assert_eq!(got, want);
    }

    fn depth(p: &Path) -> usize {
        p.components().count()
    }

    #[test]
    fn rejects_unusable_policies() {
        let dir = tempfile::tempdir().unwrap();
        let helper = Path::new("/h");
        let run = |p: &Policy| bwrap::args(p, "0.8.0", true, false, helper, "true".as_ref(), &[]);
        let relative = Policy::new(Path::new("rel"), None);
        assert!(
            run(&relative)
                .unwrap_err()
                .to_string()
                .contains("not an absolute path")
        );
        let missing = Policy::new(&dir.path().join("nope"), None);
        assert!(run(&missing).is_err());
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        let not_dir = Policy {
            cwd: dir.path().to_path_buf(),
            ..Policy::new(&file, None)
        };
        assert!(
            run(&not_dir)
                .unwrap_err()
                .to_string()
                .contains("not a directory")
        );
        // Without Landlock and with the network: no helper flags, no --unshare-net.
        let open = Policy {
            network: true,
            landlock: false,
            ..Policy::new(dir.path(), None)
        };
        let a = run(&open).unwrap();
        assert!(!a.iter().any(|s| s == "--unshare-net" || s == "--landlock"));
        let tail: Vec<_> = a.iter().rev().take(3).collect();
        assert_eq!(tail, ["true", "--", "/h"]);
    }
}
