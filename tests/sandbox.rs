//! The sandbox with real processes: bubblewrap, the pm-sandbox helper
//! (found next to this test binary's directory, `target/debug/`, or through
//! `PIMAINTENO_SANDBOX_HELPER`) and `sh -c`. Every scenario runs with both
//! layers (`landlock: true`) and with the namespaces only (`false`, what a
//! Raspberry Pi has).
//!
//! The fixtures live under `target/tmp` (or `$HOME` when that is not
//! writable, e.g. when an ordinary user runs a copy of this binary), never
//! under /tmp: the sandbox's private /tmp would hide them whatever the
//! policy says, and the tests would prove nothing.
//!
//! Needs bubblewrap (`apt install bubblewrap`) and unprivileged user
//! namespaces; as root and as an ordinary user.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pimainteno::sandbox::{self, Capabilities, Policy};

fn caps() -> &'static Capabilities {
    static CAPS: OnceLock<Capabilities> = OnceLock::new();
    CAPS.get_or_init(|| {
        let caps = sandbox::probe();
        assert!(
            caps.can_contain(),
            "this machine cannot contain: {}",
            caps.describe(false, true)
        );
        caps
    })
}

/// Unique per test: markers in files, in argv, in /tmp names.
fn unique(what: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{what}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn base_dir() -> tempfile::TempDir {
    let mut places = vec![PathBuf::from(env!("CARGO_TARGET_TMPDIR"))];
    places.extend(std::env::var_os("HOME").map(PathBuf::from));
    for place in places {
        if let Ok(dir) = tempfile::Builder::new()
            .prefix("sandbox-test-")
            .tempdir_in(&place)
        {
            let real = std::fs::canonicalize(dir.path()).unwrap();
            for private in ["/tmp", "/var/tmp", "/dev", "/run/user"] {
                assert!(
                    !real.starts_with(private),
                    "{} is under {private}, which the sandbox replaces anyway",
                    real.display()
                );
            }
            return dir;
        }
    }
    panic!("no writable place for the fixtures (target/tmp, $HOME)");
}

/// A worktree (with an awkward name), a home with a key and a toolchain,
/// a hidden store and configuration file, and an unrelated directory.
struct Fixture {
    _base: tempfile::TempDir,
    wt: PathBuf,
    home: PathBuf,
    store: PathBuf,
    config: PathBuf,
    outside: PathBuf,
    /// In the key, the store and the configuration: must never be read.
    secret: String,
    /// In `~/.cargo/bin/x`: must stay readable.
    tool: String,
}

impl Fixture {
    fn new() -> Fixture {
        let base = base_dir();
        let b = std::fs::canonicalize(base.path()).unwrap();
        let secret = unique("SECRET");
        let tool = unique("TOOL");
        let wt = b.join("work tree 'q' \"$(touch pwned)\" é\nline");
        let home = b.join("home");
        let store = b.join("store");
        let config = b.join("pimainteno.toml");
        let outside = b.join("outside");
        for d in [
            &wt,
            &home.join(".ssh"),
            &home.join(".cargo/bin"),
            &store,
            &outside,
        ] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(wt.join("README"), "hello\n").unwrap();
        std::fs::write(home.join(".ssh/id_ed25519"), format!("KEY {secret}\n")).unwrap();
        std::fs::write(home.join(".profile"), "PATH=$PATH\n").unwrap();
        std::fs::write(home.join(".cargo/bin/x"), format!("{tool}\n")).unwrap();
        std::fs::write(store.join("data.mdb"), format!("STORE {secret}\n")).unwrap();
        std::fs::write(&config, format!("api_key = \"{secret}\"\n")).unwrap();
        std::fs::write(outside.join("existing.txt"), "outside\n").unwrap();
        Fixture {
            _base: base,
            wt,
            home,
            store,
            config,
            outside,
            secret,
            tool,
        }
    }

    fn policy(&self, landlock: bool) -> Policy {
        Policy {
            hidden: vec![self.store.clone(), self.config.clone()],
            landlock,
            ..Policy::new(&self.wt, Some(&self.home))
        }
    }

    /// `sh -c script` contained; the script gets $1 worktree, $2 home,
    /// $3 store, $4 config, $5 outside, then `extra`.
    fn command(&self, policy: &Policy, script: &str, extra: &[&str]) -> Command {
        let mut args: Vec<OsString> = vec!["-c".into(), script.into(), "sh".into()];
        for p in [
            &self.wt,
            &self.home,
            &self.store,
            &self.config,
            &self.outside,
        ] {
            args.push(p.into());
        }
        args.extend(extra.iter().map(OsString::from));
        let mut cmd = sandbox::command(policy, caps(), "sh".as_ref(), &args).unwrap();
        cmd.stdin(Stdio::null());
        cmd
    }

    fn run(&self, policy: &Policy, script: &str, extra: &[&str]) -> Output {
        self.command(policy, script, extra).output().unwrap()
    }

    /// Everything a write could change, outside the worktree.
    fn outside_state(&self) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
        let mut all = BTreeMap::new();
        for p in [&self.home, &self.store, &self.outside, &self.config] {
            snapshot(p, &mut all);
        }
        all
    }
}

/// Path → content (`None` for a directory), recursively.
fn snapshot(p: &Path, into: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
    let meta = std::fs::symlink_metadata(p).unwrap();
    if meta.is_dir() {
        into.insert(p.to_path_buf(), None);
        for e in std::fs::read_dir(p).unwrap() {
            snapshot(&e.unwrap().path(), into);
        }
    } else {
        into.insert(p.to_path_buf(), Some(std::fs::read(p).unwrap()));
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const BOTH: [bool; 2] = [true, false];

#[test]
fn writes_only_in_the_worktree_and_a_private_tmp() {
    for landlock in BOTH {
        let f = Fixture::new();
        let before = f.outside_state();
        let tmp_name = unique("pm-sandbox-tmp");
        let script = r#"
            WT=$1 STORE=$3 CONFIG=$4 OUT=$5 TMPNAME=$6
            w() { if (eval "$2") 2>/dev/null; then echo "$1=written"; else echo "$1=refused"; fi; }
            w worktree 'echo new > "$WT/new.txt" && mkdir "$WT/dir"'
            w tmp 'echo t > "/tmp/$TMPNAME" && test -s "/tmp/$TMPNAME"'
            w outside_new 'echo x > "$OUT/new.txt"'
            w outside_overwrite 'echo x > "$OUT/existing.txt"'
            w outside_remove 'rm -f "$OUT/existing.txt"'
            w outside_mkdir 'mkdir "$OUT/d"'
            w home_new 'echo x > "$HOME/new"'
            w home_key 'echo x >> "$HOME/.ssh/id_ed25519"'
            w home_toolchain 'echo x > "$HOME/.cargo/bin/x"'
            w store_new 'echo x > "$STORE/new"'
            w store_existing 'echo x >> "$STORE/data.mdb"'
            w config 'echo x >> "$CONFIG"'
        "#;
        let out = f.run(&f.policy(landlock), script, &[&tmp_name]);
        let got = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "landlock={landlock}: {}", text(&out));
        let want = "worktree=written\ntmp=written\noutside_new=refused\n\
            outside_overwrite=refused\noutside_remove=refused\noutside_mkdir=refused\n\
            home_new=refused\nhome_key=refused\nhome_toolchain=refused\nstore_new=refused\n\
            store_existing=refused\nconfig=refused\n";
        assert_eq!(got, want, "landlock={landlock}: {}", text(&out));
        assert_eq!(
            std::fs::read_to_string(f.wt.join("new.txt")).unwrap(),
            "new\n"
        );
        assert!(f.wt.join("dir").is_dir());
        assert_eq!(f.outside_state(), before, "landlock={landlock}");
        assert!(
            !Path::new("/tmp").join(&tmp_name).exists(),
            "the sandbox's /tmp is the host's"
        );
        // The awkward worktree name was an argument, never shell text.
        assert!(!f.wt.join("pwned").exists() && !Path::new("pwned").exists());
    }
}

#[test]
fn secrets_stay_unreadable_and_the_toolchain_readable() {
    for landlock in BOTH {
        let f = Fixture::new();
        let script = r#"
            STORE=$3 CONFIG=$4
            cat "$HOME/.ssh/id_ed25519"; cat "$HOME/.profile"; cat "$CONFIG"
            cat "$STORE/data.mdb"; ls -la "$HOME" "$STORE"
            grep -r . "$HOME" "$STORE" "$CONFIG"
            echo "toolchain: $(cat "$HOME/.cargo/bin/x")"
            echo "config: $(wc -c < "$CONFIG") bytes"
        "#;
        let out = f.run(&f.policy(landlock), script, &[]);
        let all = text(&out);
        assert!(!all.contains(&f.secret), "landlock={landlock}: {all}");
        assert!(all.contains(&format!("toolchain: {}", f.tool)), "{all}");
        // /dev/null over the file, on a nodev mount: opening it fails.
        assert!(all.contains("config:  bytes"), "{all}");
        // The rest of the home is not there at all.
        assert!(!all.contains("PATH=$PATH"), "{all}");
    }
}

#[test]
fn only_a_short_list_of_the_environment_passes() {
    let f = Fixture::new();
    let out = f.run(&f.policy(false), "env", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let env = String::from_utf8_lossy(&out.stdout);
    let mut names = Vec::new();
    for line in env.lines() {
        if let Some((name, _)) = line.split_once('=') {
            names.push(name.to_string());
        }
    }
    let shell_own = ["PWD", "OLDPWD", "SHLVL", "_", "TMPDIR", "HOME"];
    for name in &names {
        assert!(
            sandbox::INHERITED_ENV.contains(&name.as_str())
                || name.starts_with("LC_")
                || shell_own.contains(&name.as_str()),
            "{name} leaked in: {env}"
        );
    }
    assert!(env.contains(&format!("HOME={}", f.home.display())), "{env}");
    assert!(env.contains("TMPDIR=/tmp"), "{env}");
}

#[test]
fn a_worktree_inside_a_hidden_directory() {
    for landlock in BOTH {
        let f = Fixture::new();
        let wt = f.store.join("worktrees/w1");
        std::fs::create_dir_all(&wt).unwrap();
        let policy = Policy {
            cwd: wt.clone(),
            writable: vec![wt.clone()],
            ..f.policy(landlock)
        };
        let script = r#"
            STORE=$3
            echo ok > fix.txt && echo worktree=written
            echo x > "$STORE/new" 2>/dev/null && echo store=written
            ls "$STORE"; cat "$STORE/data.mdb"
        "#;
        let out = f.run(&policy, script, &[]);
        let all = text(&out);
        assert!(
            all.contains("worktree=written"),
            "landlock={landlock}: {all}"
        );
        assert!(!all.contains("store=written"), "{all}");
        assert!(!all.contains(&f.secret), "{all}");
        assert_eq!(std::fs::read_to_string(wt.join("fix.txt")).unwrap(), "ok\n");
        assert!(!f.store.join("new").exists());
    }
}

/// bash's /dev/tcp: connect, send a line, say so.
const CONNECT: &str = r#"
    if bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && echo "$2" >&3' _ "$6" "$7" 2>/dev/null
    then echo connected; else echo refused; fi
"#;

fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port().to_string();
    (l, port)
}

/// What reached the listener (the connection is in its backlog: the
/// command has returned, so nothing more will come).
fn received(l: &TcpListener) -> Option<String> {
    let (mut s, _) = l.accept().ok()?;
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = String::new();
    let _ = s.read_to_string(&mut got);
    Some(got)
}

#[test]
fn the_network_is_cut_unless_allowed() {
    for landlock in BOTH {
        for network in [false, true] {
            let f = Fixture::new();
            let (l, port) = listener();
            let hello = unique("HELLO");
            let policy = Policy {
                network,
                ..f.policy(landlock)
            };
            let out = f.run(&policy, CONNECT, &[&port, &hello]);
            let all = text(&out);
            let case = format!("landlock={landlock} network={network}: {all}");
            if network {
                assert!(all.contains("connected"), "{case}");
                assert_eq!(
                    received(&l).as_deref(),
                    Some(format!("{hello}\n").as_str()),
                    "{case}"
                );
            } else {
                assert!(all.contains("refused"), "{case}");
                assert_eq!(received(&l), None, "{case}");
            }
        }
    }
}

/// Pids of processes whose command line contains `marker` (seen from the
/// host: the sandbox's PID namespace renumbers its own pids).
fn processes_with(marker: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(marker) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// Three ways to outlive a command: setsid, a double fork, nohup with
/// TERM ignored. The marker is in each one's argv.
const DAEMONS: &str = r#"
    WT=$1 M=$6
    setsid sh -c "sleep 300; : $M-setsid" </dev/null >/dev/null 2>&1 &
    ( (sh -c "sleep 300; : $M-fork" </dev/null >/dev/null 2>&1 &) & )
    nohup sh -c "trap '' TERM HUP; sleep 300; : $M-nohup" </dev/null >/dev/null 2>&1 &
    i=0
    while [ ! -e "$WT/release" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done
    echo released
"#;

fn wait_for_daemons(marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let all = processes_with(marker);
        if ["setsid", "fork", "nohup"].iter().all(|k| {
            all.iter()
                .any(|(_, c)| c.contains(&format!("{marker}-{k}")))
        }) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the daemons never showed up in /proc: {all:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn no_process_outlives_the_command() {
    for landlock in BOTH {
        let f = Fixture::new();
        let marker = unique("DAEMON");
        let mut child = f
            .command(&f.policy(landlock), DAEMONS, &[&marker])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // Seen from the host while the command runs: the scan works.
        wait_for_daemons(&marker);
        std::fs::write(f.wt.join("release"), "").unwrap();
        let status = child.wait().unwrap();
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert!(
            status.success() && out.contains("released"),
            "{status} {out}"
        );
        // No waiting: the PID namespace is torn down before bwrap returns.
        assert_eq!(processes_with(&marker), [], "landlock={landlock}");
    }
}

/// The way the program will run it: `process::run` with a timeout, which
/// kills bwrap's process group; the namespace goes with bwrap (the kernel
/// does that asynchronously, hence the bounded wait).
#[test]
fn a_timeout_leaves_no_process_either() {
    let f = Fixture::new();
    let marker = unique("TIMEOUT");
    let mut cmd = f.command(&f.policy(true), DAEMONS, &[&marker]);
    let watcher = {
        let marker = marker.clone();
        std::thread::spawn(move || wait_for_daemons(&marker))
    };
    let done = pimainteno::process::run(
        &mut cmd,
        pimainteno::process::Limits {
            timeout: Duration::from_secs(5),
            max_capture: 4096,
        },
    )
    .unwrap();
    watcher.join().expect("the daemons ran before the timeout");
    assert!(done.timed_out, "{done:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !processes_with(&marker).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(processes_with(&marker), []);
}

#[test]
fn landlock_is_a_second_layer() {
    let Some(abi) = caps().landlock_abi else {
        eprintln!("no Landlock in this kernel: only the namespaces are tested");
        return;
    };
    let f = Fixture::new();
    // /run/user is an empty tmpfs that bwrap leaves writable; only
    // Landlock (writes beneath the worktree, /tmp, /var/tmp, /dev) stops it.
    let script = "touch /run/user/probe 2>/dev/null && echo written || echo refused";
    for (landlock, want) in [(false, "written\n"), (true, "refused\n")] {
        let out = f.run(&f.policy(landlock), script, &[]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            want,
            "landlock={landlock}: {}",
            text(&out)
        );
    }

    // The helper alone, without bwrap: Landlock by itself stops the write.
    let helper = caps().helper.clone().unwrap();
    let direct = |flags: &[&str], script: &str, extra: &[&str]| {
        let out = Command::new(&helper)
            .args(flags)
            .args(["--", "sh", "-c", script, "sh"])
            .arg(&f.wt)
            .arg(&f.outside)
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let before = f.outside_state();
    let writes = r#"
        echo x > "$1/by-helper" && echo worktree=written
        echo x > "$2/by-helper" 2>/dev/null && echo outside=written
        echo done
    "#;
    let wt = f.wt.to_str().unwrap();
    assert_eq!(
        direct(&["--landlock-write", wt], writes, &[]),
        "worktree=written\ndone\n"
    );
    assert_eq!(f.outside_state(), before);
    assert!(f.wt.join("by-helper").exists());
    // Without it, the same write goes through (the test can fail).
    assert_eq!(
        direct(&[], writes, &[]),
        "worktree=written\noutside=written\ndone\n"
    );

    if abi >= 4 {
        // `--no-network` (TCP, ABI 4+), in the host's network namespace.
        let connect = r#"
            if bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$3" 2>/dev/null
            then echo connected; else echo refused; fi
        "#;
        let (l, port) = listener();
        assert_eq!(direct(&["--no-network"], connect, &[&port]), "refused\n");
        assert!(received(&l).is_none());
        assert_eq!(direct(&[], connect, &[&port]), "connected\n");
        assert!(received(&l).is_some());
    }
}

#[test]
fn exit_codes_pass_through() {
    let f = Fixture::new();
    for landlock in BOTH {
        let out = f.run(&f.policy(landlock), "exit 7", &[]);
        assert_eq!(out.status.code(), Some(7), "{}", text(&out));
        let args: Vec<OsString> = vec!["--version".into()];
        let out = sandbox::command(
            &f.policy(landlock),
            caps(),
            "no-such-program-pm".as_ref(),
            &args,
        )
        .unwrap()
        .output()
        .unwrap();
        assert_eq!(out.status.code(), Some(127), "{}", text(&out));
        assert!(
            text(&out).contains("pm-sandbox: cannot run no-such-program-pm: not found in PATH"),
            "{}",
            text(&out)
        );
    }
}

#[test]
fn probe_reports_this_machine() {
    let caps = sandbox::probe();
    let version = Command::new("bwrap")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    assert_eq!(
        caps.bwrap.as_deref().map(|v| format!("bubblewrap {v}")),
        version
    );
    let text = caps.describe(false, true);
    assert!(
        text.starts_with(&format!(
            "namespaces (bubblewrap {}), ",
            caps.bwrap.as_deref().unwrap()
        )),
        "{text}"
    );
    match caps.landlock_abi {
        Some(abi) => assert!(text.contains(&format!(", landlock ABI {abi}, ")), "{text}"),
        None => assert!(
            text.contains(", no landlock (the kernel has none), "),
            "{text}"
        ),
    }
    assert!(text.ends_with("network isolated"), "{text}");
    assert!(caps.describe(true, false).ends_with("network allowed"));
    assert!(
        caps.helper
            .as_ref()
            .is_some_and(|h| h.ends_with("pm-sandbox"))
    );
    eprintln!("{text}");
}

/// Runs this test binary again with a PATH that has no bwrap.
#[test]
fn without_bubblewrap_nothing_runs_and_the_error_says_what_to_install() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_probe_without_bwrap", "--nocapture"])
        .env("PATH", "/nonexistent")
        .env("PM_SANDBOX_TEST_CHILD", "1")
        .output()
        .unwrap();
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("describe: NONE: bubblewrap is not installed (apt install bubblewrap)"),
        "{all}"
    );
    assert!(
        all.contains(
            "command: cannot contain `sh`: bubblewrap is not installed (apt install bubblewrap)"
        ),
        "{all}"
    );
}

/// Only does something when started by the test above.
#[test]
fn child_probe_without_bwrap() {
    if std::env::var_os("PM_SANDBOX_TEST_CHILD").is_none() {
        return;
    }
    let caps = sandbox::probe();
    assert_eq!(caps.bwrap, None);
    assert!(!caps.can_contain());
    println!("describe: {}", caps.describe(false, true));
    let f = Fixture::new();
    let err = sandbox::command(&f.policy(true), &caps, "sh".as_ref(), &[]).unwrap_err();
    println!("command: {err}");
}
