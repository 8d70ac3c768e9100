//! pm-dashboard end to end, through real sockets and real processes: started
//! the way systemd starts it (`systemd-socket-activate` passes `LISTEN_FDS`)
//! or by hand with `--listen`, reading a store filled by the real
//! pm-summarize and pm-patch on temporary repositories (the LLM is the
//! in-test OpenAI-compatible server) and by pm-onfailure's recording steps
//! on a journal recorded from a real failing unit (as `tests/onfailure.rs`
//! does: the binary itself needs a booted systemd). Pages, API, metrics,
//! escaping, hostile requests, the idle exit, basic auth off loopback, the
//! read-only store, and a real browser (headless Chromium).
//!
//! Needs `systemd-socket-activate` (package `systemd`), `openssl` and
//! `chromium` (`PM_SKIP_BROWSER=1` skips the browser test, saying so).

mod common;
mod openai_server;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use common::run_dir;
use openai_server::{Server, Step};
use pimainteno::config::LoadOptions;
use pimainteno::onfailure::evidence::{Excerpt, Monitor, UnitFacts};
use pimainteno::onfailure::{Handler, explain, handle_failure};
use pimainteno::store::Store;
use sha2::{Digest, Sha256};

const DASHBOARD: &str = env!("CARGO_BIN_EXE_pm-dashboard");
const SOCKET_ACTIVATE: &str = "systemd-socket-activate";

// ---------------------------------------------------------------------------
// The data: real runs of pm-summarize, pm-patch and pm-onfailure's steps.

/// The model's summary of `demo`: raw HTML an attacker would like run.
const EVIL_SUMMARY: &str = "## demo\n\nA weather station.\n\n<script>alert(1)</script>\n\n\
    It reads <img src=x onerror=alert(2)> sensors and **logs** them.\n\n- one\n- two\n";

/// `calc`: `add` subtracts, and the check says so (as in tests/patch.rs).
const CALC: &str = "add() {\n\techo $(($1 - $2))\n}\n";
const TEST: &str = ". ./calc.sh\nr=$(add 2 3)\nif [ \"$r\" != 5 ]; then echo \"FAIL: add 2 3 gave $r, expected 5\"; exit 1; fi\necho ok\n";
const FIX: &str = "The sign is wrong.\n\n```diff\n--- a/calc.sh\n+++ b/calc.sh\n@@ -1,3 +1,3 @@\n add() {\n-\techo $(($1 - $2))\n+\techo $(($1 + $2))\n }\n```\n";

/// The model's diagnosis of the recorded `exit_status` failure.
const DIAGNOSIS: &str = r#"{"cause":"weather-sync cannot parse /etc/weather/config.toml: line 3 lacks an `=`.","confidence":0.9,"evidence":["error: cannot read /etc/weather/config.toml: expected `=` at line 3"],"action":"none"}"#;

/// The failing unit (its journal is `tests/fixtures/onfailure/exit_status.*`).
const UNIT: &str = "pmfx-exit_status.service";

/// A directory with two projects, a store and a configuration.
struct Setup {
    dir: tempfile::TempDir,
    endpoint: String,
    demo: PathBuf,
    calc: PathBuf,
}

impl Setup {
    fn new(endpoint: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let demo = common::repo_with(
            dir.path(),
            "demo",
            &[
                ("README.md", "# demo\n\nA weather station.\n"),
                ("main.py", "print('hi')  # TODO: read the sensor\n"),
            ],
        );
        let calc = common::repo_with(
            dir.path(),
            "calc",
            &[
                ("calc.sh", CALC),
                ("test.sh", TEST),
                ("README.md", "# calc\n"),
            ],
        );
        let s = Setup {
            dir,
            endpoint: endpoint.to_string(),
            demo,
            calc,
        };
        std::fs::write(s.config_path(), s.config_text("")).unwrap();
        s
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn store(&self) -> PathBuf {
        self.path().join("state/store")
    }

    fn config_path(&self) -> PathBuf {
        self.path().join("pimainteno.toml")
    }

    /// The configuration every binary reads, with `web` as the `[web]` table.
    fn config_text(&self, web: &str) -> String {
        format!(
            "[llm]\nprovider = \"openai\"\nmodel = \"test-model\"\nendpoint = \"{}\"\nretries = 0\n\n\
             [cache]\npath = \"{}\"\n\n\
             [patch]\nauthor_name = \"Pi Fixer\"\nauthor_email = \"fixer@pi.invalid\"\n\n\
             [systemd_monitor]\nunits = [\"nginx.service\"]\n\n\
             [web]\n{web}\n\n\
             [[project]]\nname = \"demo\"\npath = \"{}\"\ncheck = \"true\"\nunits = [\"{UNIT}\"]\n\n\
             [[project]]\nname = \"calc\"\npath = \"{}\"\ncheck = \"sh test.sh\"\nsummary_file = \"\"\n",
            self.endpoint,
            self.store().display(),
            self.demo.display(),
            self.calc.display()
        )
    }

    /// Another configuration file for the same projects and store.
    fn config_with(&self, name: &str, web: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, self.config_text(web)).unwrap();
        path
    }

    fn run(&self, bin: &str, args: &[&str]) -> Output {
        let out = Command::new(bin)
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .env_remove("INVOCATION_ID")
            .env_remove("JOURNAL_STREAM")
            .env_remove("PIMAINTENO_CONFIG")
            .env_remove("PIMAINTENO_STORE")
            .env_remove("PIMAINTENO_TEST_PAUSE")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{bin} {args:?}: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

/// A store with everything the dashboard shows:
/// - `demo`: summarized by the openai provider (the model answers
///   [`EVIL_SUMMARY`]), its check (`true`) passed at HEAD, and a failure
///   of its unit diagnosed by the model;
/// - `calc`: summarized offline, its check failed at HEAD and pm-patch
///   committed a fix (diff, check output) on a branch.
fn filled() -> (Setup, Server) {
    let server = Server::start(vec![
        Step::answer(EVIL_SUMMARY),
        Step::answer(FIX),
        Step::answer(DIAGNOSIS),
    ]);
    let s = Setup::new(&server.endpoint());
    s.run(env!("CARGO_BIN_EXE_pm-summarize"), &["--project", "demo"]);
    s.run(
        env!("CARGO_BIN_EXE_pm-summarize"),
        &["--project", "calc", "--provider", "none"],
    );
    let out = s.run(env!("CARGO_BIN_EXE_pm-patch"), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fixed on branch pimainteno/"), "{err}");
    record_a_failure(&s.config_path());
    assert_eq!(server.requests(), 3, "summary, patch, diagnosis");
    (s, server)
}

/// pm-onfailure's decide and explain steps on a failure recorded from a
/// real unit, as tests/onfailure.rs runs them (the restart needs systemd).
fn record_a_failure(config: &Path) {
    let settings = pimainteno::config::load(&LoadOptions {
        path: Some(config.to_path_buf()),
        defaults_if_missing: false,
    })
    .unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onfailure");
    let read =
        |ext: &str| std::fs::read_to_string(fixtures.join(format!("exit_status.{ext}"))).unwrap();
    let env = read("env");
    let var = |name: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .map(str::to_string)
    };
    let monitor = Monitor {
        unit: var("MONITOR_UNIT").unwrap(),
        result: var("MONITOR_SERVICE_RESULT").unwrap(),
        exit_code: var("MONITOR_EXIT_CODE"),
        exit_status: var("MONITOR_EXIT_STATUS"),
        invocation_id: var("MONITOR_INVOCATION_ID"),
    };
    assert_eq!(monitor.unit, UNIT);
    let facts = UnitFacts::parse(&read("props"));
    let excerpt = Excerpt::from_export(&read("journal.json")).unwrap();
    let store = Store::open(&settings.cache).unwrap();
    let d = handle_failure(
        &Handler::new(&settings, &store, &run_dir(&settings)),
        &monitor,
        &facts,
        excerpt,
        &[],
    )
    .unwrap();
    explain(&Handler::new(&settings, &store, &run_dir(&settings)), &d).unwrap();
}

// ---------------------------------------------------------------------------
// HTTP over a plain TcpStream: what goes over the wire is exactly what the
// test wrote.

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// What became of a request.
#[derive(Debug)]
enum Outcome {
    Reply(Reply),
    /// The server closed (or reset) the connection without a reply.
    Closed,
    /// Nothing within the read timeout: the server kept it open.
    Hung,
}

fn parse_reply(buf: &[u8]) -> Option<Reply> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()?
        .strip_prefix("HTTP/1.1 ")?
        .get(..3)?
        .parse()
        .ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Some(Reply {
        status,
        headers,
        body: buf[end + 4..].to_vec(),
    })
}

/// Read until the server closes, a read error, or `timeout`.
fn read_all(stream: &mut TcpStream, timeout: Duration) -> (Vec<u8>, bool) {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return (buf, true),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                return (buf, false);
            }
            // Reset: closed.
            Err(_) => return (buf, true),
        }
    }
}

/// Send `raw` as is (write errors ignored: the server may close early) and
/// read what comes back until the server closes.
fn exchange(addr: SocketAddr, raw: &[u8]) -> Outcome {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let _ = stream.write_all(raw);
    let (buf, closed) = read_all(&mut stream, Duration::from_secs(15));
    match parse_reply(&buf) {
        Some(r) => Outcome::Reply(r),
        None if closed => Outcome::Closed,
        None => Outcome::Hung,
    }
}

fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (n, v) in headers {
        raw.push_str(&format!("{n}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    match exchange(addr, raw.as_bytes()) {
        Outcome::Reply(r) => r,
        other => panic!("{method} {path}: no reply ({other:?})"),
    }
}

fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, &[])
}

/// GET that must answer 200.
fn get_ok(addr: SocketAddr, path: &str) -> Reply {
    let r = get(addr, path);
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    r
}

fn basic(user_pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_pass)
    )
}

// ---------------------------------------------------------------------------
// The dashboard process.

/// A port free a moment ago on `host`.
fn free_port(host: &str) -> u16 {
    TcpListener::bind((host, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
}

fn require_socket_activate() {
    assert!(
        have(SOCKET_ACTIVATE),
        "{SOCKET_ACTIVATE} is not installed: `apt-get install systemd` provides /usr/bin/{SOCKET_ACTIVATE}"
    );
}

/// The environment a test must not pass on.
fn clean(cmd: &mut Command) -> &mut Command {
    for var in [
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "NOTIFY_SOCKET",
        "CREDENTIALS_DIRECTORY",
        "INVOCATION_ID",
        "JOURNAL_STREAM",
        "PIMAINTENO_CONFIG",
        "PIMAINTENO_STORE",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// A running pm-dashboard (or the systemd-socket-activate that becomes it
/// on the first connection), killed when dropped.
struct Dashboard {
    child: Child,
    /// Where a client connects (loopback, also for a 0.0.0.0 socket).
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Dashboard {
    fn spawn(mut cmd: Command) -> (Child, Arc<Mutex<String>>) {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        (child, stderr)
    }

    /// `pm-dashboard --config CONFIG --listen LISTEN` (port 0: any), as a
    /// user runs it by hand.
    fn by_hand(config: &Path, listen: &str, env: &[(&str, &str)]) -> Dashboard {
        Dashboard::by_hand_as(config, listen, env, None)
    }

    /// The same, as another user (uid, gid) when given.
    fn by_hand_as(
        config: &Path,
        listen: &str,
        env: &[(&str, &str)],
        user: Option<(u32, u32)>,
    ) -> Dashboard {
        let mut cmd = Command::new(DASHBOARD);
        clean(&mut cmd)
            .arg("--config")
            .arg(config)
            .args(["--listen", listen])
            .envs(env.iter().copied());
        if let Some((uid, gid)) = user {
            // SAFETY: only async-signal-safe system calls between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(gid) != 0
                        || libc::setuid(uid) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let (child, stderr) = Dashboard::spawn(cmd);
        let mut d = Dashboard {
            child,
            addr: "127.0.0.1:1".parse().unwrap(),
            stderr,
        };
        let line = d.wait_for_line("pm-dashboard: serving http://", Duration::from_secs(10));
        let bound: SocketAddr = line
            .trim_start_matches("pm-dashboard: serving http://")
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        d.addr = SocketAddr::from(([127, 0, 0, 1], bound.port()));
        d
    }

    /// `systemd-socket-activate -l HOST:PORT [-E VAR=VALUE...] pm-dashboard
    /// --config CONFIG`: it listens, and on the first connection execs
    /// pm-dashboard in its place with `LISTEN_FDS=1`, as systemd does.
    fn activated(config: &Path, host: &str, env: &[(&str, &str)]) -> Dashboard {
        require_socket_activate();
        for _ in 0..5 {
            let port = free_port(host);
            let mut cmd = Command::new(SOCKET_ACTIVATE);
            clean(&mut cmd).arg("-l").arg(format!("{host}:{port}"));
            for (k, v) in env {
                cmd.arg("-E").arg(format!("{k}={v}"));
            }
            cmd.arg(DASHBOARD).arg("--config").arg(config);
            let (child, stderr) = Dashboard::spawn(cmd);
            let mut d = Dashboard {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                stderr,
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if d.log().contains("Listening on") {
                    return d;
                }
                if let Some(status) = d.child.try_wait().unwrap() {
                    if d.log().contains("in use") {
                        break; // the port was taken meanwhile: another one
                    }
                    panic!("{SOCKET_ACTIVATE} exited ({status}): {}", d.log());
                }
                assert!(
                    Instant::now() < deadline,
                    "{SOCKET_ACTIVATE} does not listen: {}",
                    d.log()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        panic!("no free port for {SOCKET_ACTIVATE}");
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Its stderr once it contains `want` (the pipe is read by a thread).
    fn wait_log(&self, want: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let log = self.log();
            if log.contains(want) || Instant::now() >= deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The first stderr line starting with `prefix`.
    fn wait_for_line(&mut self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.log().lines().find(|l| l.starts_with(prefix)) {
                return l.to_string();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                // The reader thread may still be draining the pipe.
                std::thread::sleep(Duration::from_millis(100));
                panic!("exited ({status}) before {prefix:?}: {}", self.log());
            }
            assert!(Instant::now() < deadline, "no {prefix:?}: {}", self.log());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Its exit status, if it exits within `within`.
    fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the process runs now (socket-activate, then pm-dashboard).
    fn exe(&self) -> PathBuf {
        std::fs::read_link(format!("/proc/{}/exe", self.child.id())).unwrap()
    }

    /// Still running and answering.
    fn assert_serving(&mut self, after: &str) {
        assert!(
            self.alive(),
            "pm-dashboard died after {after}: {}",
            self.log()
        );
        let r = get(self.addr, "/healthz");
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "ok\n"),
            "after {after}"
        );
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// Checks on pages.

/// The security headers every answer carries, and a CSP that allows exactly
/// the page's one inline stylesheet (by its hash) and nothing else.
fn assert_headers(path: &str, r: &Reply) {
    assert_eq!(
        r.header("X-Content-Type-Options"),
        Some("nosniff"),
        "{path}"
    );
    assert_eq!(r.header("Referrer-Policy"), Some("no-referrer"), "{path}");
    let csp = r
        .header("Content-Security-Policy")
        .unwrap_or_else(|| panic!("{path}: no Content-Security-Policy"));
    assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
    assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
    assert!(!csp.contains("script-src"), "{path}: no scripts: {csp}");
    let body = r.text();
    if let Some(style) = body
        .split_once("<style>")
        .and_then(|(_, rest)| rest.split_once("</style>"))
        .map(|(s, _)| s)
    {
        let hash =
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(style.as_bytes()));
        assert!(
            csp.contains(&format!("style-src 'sha256-{hash}'")),
            "{path}: the stylesheet's hash {hash} is not in {csp}"
        );
    }
}

fn assert_html(path: &str, r: &Reply) {
    assert_headers(path, r);
    assert_eq!(
        r.header("Content-Type"),
        Some("text/html; charset=utf-8"),
        "{path}"
    );
    let body = r.text();
    assert!(body.starts_with("<!DOCTYPE html>"), "{path}: {body}");
    assert!(body.trim_end().ends_with("</html>"), "{path}");
    assert!(!body.to_lowercase().contains("<script"), "{path}: {body}");
}

/// Every `href` of a page, unescaped.
fn links(html: &str) -> Vec<String> {
    html.split("href=\"")
        .skip(1)
        .filter_map(|s| s.split_once('"').map(|(h, _)| h.replace("&amp;", "&")))
        .collect()
}

/// The tags of a page (`<...>`), for "no attribute like this in a tag".
fn tags(html: &str) -> Vec<&str> {
    html.split('<')
        .skip(1)
        .filter_map(|s| s.split_once('>').map(|(t, _)| t))
        .collect()
}

/// Each file under `dir` (relative) with its mtime and SHA-256, but
/// `lock.mdb`: LMDB readers write their slot in its reader table.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (SystemTime, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            if p.is_dir() {
                out.insert(rel, (SystemTime::UNIX_EPOCH, Vec::new()));
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "lock.mdb") {
                out.insert(rel, (SystemTime::UNIX_EPOCH, Vec::new()));
            } else {
                let m = std::fs::metadata(&p).unwrap().modified().unwrap();
                let hash = Sha256::digest(std::fs::read(&p).unwrap()).to_vec();
                out.insert(rel, (m, hash));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The tests.

#[test]
fn socket_activated_it_serves_every_page_and_route_from_the_store() {
    let (setup, _server) = filled();
    let data = setup.store().join("data.mdb");
    let before = snapshot(&setup.store());
    assert!(before.contains_key(Path::new("data.mdb")), "{before:?}");

    let mut d = Dashboard::activated(&setup.config_path(), "127.0.0.1", &[]);
    // Nothing of ours runs until somebody connects.
    assert!(
        d.exe().ends_with(SOCKET_ACTIVATE),
        "before any connection: {:?}",
        d.exe()
    );
    let addr = d.addr;

    // The overview: both projects, both units, the schedule.
    let r = get_ok(addr, "/");
    assert!(d.exe().ends_with("pm-dashboard"), "{:?}", d.exe());
    let started = d.child.id();
    assert_html("/", &r);
    assert_eq!(r.header("Cache-Control"), Some("no-store"));
    let overview = r.text();
    for want in [
        "demo",
        "calc",
        UNIT,
        "nginx.service",
        "pimainteno.timer",
        "committed",
    ] {
        assert!(overview.contains(want), "{want:?} not in {overview}");
    }
    assert!(!overview.contains("No data yet"), "{overview}");

    // Follow the links, as a user would.
    let hrefs = links(&overview);
    for want in [
        "/project/demo",
        "/project/calc",
        &format!("/unit/{UNIT}"),
        "/unit/nginx.service",
    ] {
        assert!(hrefs.iter().any(|h| h == want), "{want} not in {hrefs:?}");
    }
    let patch_link = hrefs
        .iter()
        .find(|h| h.starts_with("/patch/calc/"))
        .unwrap_or_else(|| panic!("no patch link in {hrefs:?}"))
        .clone();
    let failure_link = hrefs
        .iter()
        .find(|h| h.starts_with(&format!("/failure/{UNIT}/")))
        .unwrap_or_else(|| panic!("no failure link in {hrefs:?}"))
        .clone();
    for h in &hrefs {
        if h.starts_with('/') && !h.starts_with("//") {
            assert_html(h, &get_ok(addr, h));
        }
    }

    // demo: the model's summary (escaped: another test looks closer), its
    // check, its unit with the failure.
    let demo = get_ok(addr, "/project/demo").text();
    for want in [
        "<h1>Project demo</h1>",
        "A weather station.",
        "<strong>logs</strong>",
        "openai test-model",
        "Check at HEAD",
        UNIT,
        &failure_link,
    ] {
        assert!(demo.contains(want), "{want:?} not in {demo}");
    }
    // calc: its offline summary, the failing check, the patch.
    let calc = get_ok(addr, "/project/calc").text();
    for want in ["none", "sh test.sh", "failed", "committed", &patch_link] {
        assert!(calc.contains(want), "{want:?} not in {calc}");
    }

    // The patch page: the coloured diff, the check and its output, the branch.
    let patch = get_ok(addr, &patch_link).text();
    for want in [
        "<h1>Patch for <a href=\"/project/calc\">calc</a></h1>",
        "<span class=\"add\">+\techo $(($1 + $2))</span>",
        "<span class=\"del\">-\techo $(($1 - $2))</span>",
        "<span class=\"hunk\">@@",
        "pimainteno/",
        "sh test.sh",
        "passed",
        "<pre>ok",
    ] {
        assert!(patch.contains(want), "{want:?} not in {patch}");
    }

    // The failure page: journal, diagnosis, repair.
    let failure = get_ok(addr, &failure_link).text();
    for want in [
        "Failure of",
        "exit-code",
        "/usr/local/bin/weather-sync",
        "expected `=` at line 3",
        "line 3 lacks an `=`",
        "llm",
        "restart",
    ] {
        assert!(failure.contains(want), "{want:?} not in {failure}");
    }
    let unit = get_ok(addr, &format!("/unit/{UNIT}")).text();
    assert!(unit.contains(&failure_link), "{unit}");
    // Restarted by the repair step, which needs systemd: not done here.
    assert!(unit.contains("0 of 1 failures recorded"), "{unit}");

    // The same data as JSON.
    let o = get_ok(addr, "/api/v1/overview");
    assert_headers("/api/v1/overview", &o);
    assert_eq!(o.header("Content-Type"), Some("application/json"));
    let o = o.json();
    assert_eq!(o["store"], "ok");
    let names: Vec<&str> = o["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["demo", "calc"]);
    assert_eq!(get_ok(addr, "/api/v1/projects").json(), o["projects"]);
    assert_eq!(get_ok(addr, "/api/v1/units").json(), o["units"]);
    let units: Vec<&str> = o["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert!(
        units.contains(&UNIT) && units.contains(&"nginx.service"),
        "{units:?}"
    );

    let demo = get_ok(addr, "/api/v1/projects/demo").json();
    assert_eq!(demo["project"]["outcome"], "summarized");
    assert_eq!(demo["project"]["check"]["passed"], true);
    assert_eq!(demo["project"]["summary"]["provider"], "openai");
    assert!(
        demo["summary_text"]
            .as_str()
            .unwrap()
            .contains("<script>alert(1)</script>"),
        "JSON carries the text as it is: {demo}"
    );
    assert_eq!(demo["llm_calls"][0]["tokens"], 366);
    let calc = get_ok(addr, "/api/v1/projects/calc").json();
    assert_eq!(calc["project"]["check"]["passed"], false);
    assert_eq!(calc["patches"][0]["outcome"], "committed");
    let patch_id = calc["patches"][0]["id"].as_str().unwrap();
    assert_eq!(format!("/patch/{patch_id}"), patch_link);

    let u = get_ok(addr, &format!("/api/v1/units/{UNIT}")).json();
    assert_eq!(u["unit"]["project"], "demo");
    assert_eq!(u["unit"]["failures"], 1);
    let failure_id = u["failures"][0]["id"].as_str().unwrap();
    assert_eq!(format!("/failure/{failure_id}"), failure_link);

    let f = get_ok(addr, &format!("/api/v1/failures/{failure_id}")).json();
    assert_eq!(f["id"], failure_id);
    assert_eq!(f["failure"]["unit"], UNIT);
    assert_eq!(f["failure"]["diagnosis"]["source"], "llm");
    assert_eq!(f["failure"]["llm"]["tokens"], 366);
    let p = get_ok(addr, &format!("/api/v1/patches/{patch_id}")).json();
    assert_eq!(p["patch"]["outcome"], "committed");
    assert!(
        p["patch"]["branch"]
            .as_str()
            .unwrap()
            .starts_with("pimainteno/")
    );
    let attempt = &p["patch"]["attempts"][0];
    assert!(
        attempt["diff"]
            .as_str()
            .unwrap()
            .contains("+\techo $(($1 + $2))"),
        "{attempt}"
    );
    assert_eq!(attempt["check"]["passed"], true, "{attempt}");

    // Health and metrics.
    let h = get_ok(addr, "/healthz");
    assert_eq!(h.text(), "ok\n");
    let m = get_ok(addr, "/metrics");
    assert_headers("/metrics", &m);
    assert!(
        m.header("Content-Type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text; version=1.0.0")),
        "{:?}",
        m.header("Content-Type")
    );
    let metrics = m.text();
    for want in [
        "pimainteno_store_ok 1\n",
        "pimainteno_summaries{project=\"demo\"} 1\n",
        "pimainteno_summaries{project=\"calc\"} 1\n",
        "pimainteno_patches{project=\"calc\",outcome=\"committed\"} 1\n",
        &format!("pimainteno_failures{{unit=\"{UNIT}\",result=\"exit-code\"}} 1\n"),
        "pimainteno_llm_calls{project=\"demo\",provider=\"openai\",outcome=\"ok\"} 1\n",
        "pimainteno_llm_tokens{project=\"demo\",provider=\"openai\"} 366\n",
        "pimainteno_project_outcome{project=\"demo\",outcome=\"summarized\"} 1\n",
        "pimainteno_project_check_passed{project=\"demo\"} 1\n",
        "pimainteno_project_check_passed{project=\"calc\"} 0\n",
        "# TYPE pimainteno_project_last_summarized_timestamp_seconds gauge\n",
    ] {
        assert!(metrics.contains(want), "{want:?} not in:\n{metrics}");
    }
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
    assert_promtool_clean(promtool(), &metrics);

    // HEAD: the headers of GET, no body.
    for path in ["/", "/project/demo", "/api/v1/overview", "/metrics"] {
        let g = get_ok(addr, path);
        let h = request(addr, "HEAD", path, &[]);
        assert_eq!(h.status, 200, "HEAD {path}");
        assert!(h.body.is_empty(), "HEAD {path}: {}", h.text());
        assert_eq!(h.header("Content-Type"), g.header("Content-Type"), "{path}");
        assert!(h.header("Content-Security-Policy").is_some(), "HEAD {path}");
    }

    // Unknown routes and records: 404, HTML or JSON after the route.
    for path in [
        "/nope",
        "/project/nope",
        "/unit/nope.service",
        "/patch/calc/0000",
        "/failure/nope.service/0000",
        "/project/demo/extra",
        "/favicon.ico",
    ] {
        let r = get(addr, path);
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert_html(path, &r);
        assert!(r.text().contains("Not found"), "{path}");
    }
    for path in [
        "/api",
        "/api/v2/overview",
        "/api/v1/nope",
        "/api/v1/projects/nope",
        "/api/v1/units/nope.service",
        "/api/v1/patches/calc/0000",
        "/api/v1/failures/x/0000",
    ] {
        let r = get(addr, path);
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert!(r.json()["error"].is_string(), "{path}");
    }

    // All of it by one process, which wrote nothing to the store.
    assert!(d.alive());
    assert_eq!(d.child.id(), started);
    assert!(d.exe().ends_with("pm-dashboard"));
    let after = snapshot(&setup.store());
    assert!(
        before == after,
        "the store changed while the dashboard served it"
    );
    assert!(data.exists());
}

#[test]
fn an_llm_summary_with_html_is_shown_escaped() {
    let (setup, _server) = filled();
    let d = Dashboard::by_hand(&setup.config_path(), "127.0.0.1:0", &[]);
    let r = get_ok(d.addr, "/project/demo");
    assert_html("/project/demo", &r);
    let page = r.text();
    assert!(!page.to_lowercase().contains("<script"), "{page}");
    for tag in tags(&page) {
        let t = tag.to_lowercase();
        assert!(!t.contains("onerror"), "an event handler in <{tag}>");
        assert!(!t.starts_with("img"), "an image in <{tag}>");
    }
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(
        page.contains("&lt;img src=x onerror=alert(2)&gt;"),
        "{page}"
    );
    // The Markdown around it is rendered.
    assert!(page.contains("<strong>logs</strong>"), "{page}");
    assert!(page.contains("<li>one</li>"), "{page}");
}

#[test]
fn hostile_requests_get_4xx_or_are_closed_and_the_process_lives_on() {
    let setup = Setup::new("http://127.0.0.1:9/v1");
    let mut d = Dashboard::by_hand(&setup.config_path(), "127.0.0.1:0", &[]);
    let addr = d.addr;
    d.assert_serving("start");

    let big_header = format!(
        "GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let many_headers = format!(
        "GET / HTTP/1.1\r\nHost: localhost\r\n{}\r\n",
        (0..200)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    let huge_uri = format!(
        "GET /{} HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "a".repeat(100_000)
    );
    let mut garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
    garbage.extend_from_slice(b"\r\n\r\n");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("headers over 16 KiB", big_header.into_bytes()),
        ("200 headers", many_headers.into_bytes()),
        ("a 100 KB URI", huge_uri.into_bytes()),
        ("garbage bytes", garbage),
        ("a bad request line", b"GET\r\n\r\n".to_vec()),
        (
            "a bad request line",
            b"GET / HTTP/1.1 extra\r\nHost: localhost\r\n\r\n".to_vec(),
        ),
        (
            "not HTTP/1",
            b"GET / SPDY/9\r\nHost: localhost\r\n\r\n".to_vec(),
        ),
        (
            "a header without a colon",
            b"GET / HTTP/1.1\r\nHost x\r\n\r\n".to_vec(),
        ),
        (
            "a bad Content-Length",
            b"GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: -1\r\n\r\n".to_vec(),
        ),
        (
            "a path that is not UTF-8",
            b"GET /project/%ff%fe HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                .to_vec(),
        ),
    ];
    for (what, raw) in cases {
        match exchange(addr, &raw) {
            Outcome::Reply(r) => assert!(
                (400..500).contains(&r.status),
                "{what}: {} {}",
                r.status,
                r.text()
            ),
            Outcome::Closed => {}
            Outcome::Hung => panic!("{what}: neither answered nor closed"),
        }
        d.assert_serving(what);
    }

    // Read-only: only GET and HEAD.
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let r = request(addr, method, "/", &[("Content-Length", "0")]);
        assert_eq!(r.status, 405, "{method}: {}", r.text());
        assert_eq!(r.header("Allow"), Some("GET, HEAD"), "{method}");
        assert_headers(method, &r);
    }
    d.assert_serving("other methods");
    // A body is refused, whatever its framing.
    let r = match exchange(
        addr,
        b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
    ) {
        Outcome::Reply(r) => r,
        other => panic!("a request with a body: {other:?}"),
    };
    assert_eq!(r.status, 413, "{}", r.text());
    let r = match exchange(
        addr,
        b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ) {
        Outcome::Reply(r) => r,
        other => panic!("a chunked body: {other:?}"),
    };
    assert_eq!(r.status, 413, "{}", r.text());
    // Path tricks find nothing.
    for path in ["/project/..%2f..%2fetc%2fpasswd", "/../../etc/passwd"] {
        let r = get(addr, path);
        assert_eq!(r.status, 404, "{path}: {}", r.text());
    }
    d.assert_serving("bodies and paths");
}

#[test]
fn a_slow_client_is_cut_off_after_the_header_timeout() {
    let setup = Setup::new("http://127.0.0.1:9/v1");
    let mut d = Dashboard::by_hand(&setup.config_path(), "127.0.0.1:0", &[]);
    let mut slow = TcpStream::connect(d.addr).unwrap();
    slow.write_all(b"GET / HT").unwrap();
    let t0 = Instant::now();
    // It does not hold up anybody else meanwhile.
    d.assert_serving("a slow client connected");
    let (buf, closed) = read_all(&mut slow, Duration::from_secs(25));
    let waited = t0.elapsed();
    assert!(closed, "still open after {waited:?}");
    if let Some(r) = parse_reply(&buf) {
        assert!((400..500).contains(&r.status), "{}", r.status);
    }
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(10),
        "closed after {waited:?}, expected the 5 s header timeout"
    );
    d.assert_serving("the slow client");
}

#[test]
fn slow_and_silent_connections_do_not_lock_visitors_out() {
    let setup = Setup::new("http://127.0.0.1:9/v1");
    let mut d = Dashboard::by_hand(&setup.config_path(), "127.0.0.1:0", &[]);
    // A visitor's page while they are held: within one second on an idle
    // machine; the timeout is generous for a loaded test machine.
    let visit = |what: &str| {
        let t = Instant::now();
        let r = get(d.addr, "/");
        assert_eq!(r.status, 200, "{what}: {}", r.text());
        eprintln!("{what}: / served in {:?}", t.elapsed());
    };
    let slow = common::SlowClients::start(d.addr, 32, 32);
    std::thread::sleep(Duration::from_millis(500));
    // Across more than one header timeout (5 s), when the slow ones are
    // cut off and come back.
    for i in 0..4 {
        visit(&format!("64 slow connections, visit {i}"));
        std::thread::sleep(Duration::from_secs(2));
    }
    let reopened = slow.stop();
    assert!(
        reopened >= 64,
        "the slow connections were not cut off by the header timeout ({reopened} reopened)"
    );
    // More than there are slots: the longest waiting make room.
    let many = common::SlowClients::start(d.addr, 200, 100);
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..3 {
        visit(&format!("300 slow connections, visit {i}"));
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(many);
    d.assert_serving("slow connections");
}

#[test]
fn it_answers_only_to_its_own_host_names() {
    let setup = Setup::new("http://127.0.0.1:9/v1");
    let config = setup.config_with("hosts.toml", "allowed_hosts = [\"Dash.Example.org\"]");
    let mut d = Dashboard::by_hand(&config, "127.0.0.1:0", &[]);
    let port = d.addr.port();
    let machine = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let status = |raw: String| match exchange(d.addr, raw.as_bytes()) {
        Outcome::Reply(r) => {
            assert_headers(&raw, &r);
            (r.status, r.text())
        }
        other => panic!("{raw:?}: {other:?}"),
    };
    let with_host = |path: &str, host: &str| {
        status(format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        ))
    };
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "LocalHost.".to_string(),
        format!("[::1]:{port}"),
        "127.0.0.2".to_string(),
        "dash.example.org".to_string(),
        format!("DASH.EXAMPLE.ORG.:{port}"),
        machine.clone(),
        format!("{machine}.local:{port}"),
    ] {
        for path in ["/", "/api/v1/overview", "/metrics", "/healthz"] {
            let (code, body) = with_host(path, &host);
            assert_eq!(code, 200, "Host: {host}, {path}: {body}");
        }
    }
    // DNS rebinding: the attacker's name resolves to this machine.
    for host in [
        "evil.example".to_string(),
        format!("evil.example:{port}"),
        format!("localhost.evil.example:{port}"),
        format!("dash.example.org.evil.example:{port}"),
        "192.0.2.7".to_string(),
        format!("[2001:db8::1]:{port}"),
    ] {
        for path in ["/", "/api/v1/overview", "/metrics", "/healthz"] {
            let (code, body) = with_host(path, &host);
            assert_eq!(code, 421, "Host: {host}, {path}: {body}");
            assert!(body.contains("allowed_hosts"), "{body}");
            assert!(!body.contains("demo"), "no data for {host}: {body}");
        }
    }
    // The request target's authority overrides Host.
    let (code, _) = status(format!(
        "GET http://evil.example:{port}/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    ));
    assert_eq!(code, 421, "absolute-form for another host");
    let (code, _) = status(format!(
        "GET http://localhost:{port}/healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    ));
    assert_eq!(code, 200, "absolute-form for this one");
    // HTTP/1.1 needs exactly one Host; HTTP/1.0 may have none.
    for (what, raw) in [
        (
            "no Host",
            "GET / HTTP/1.1\r\nConnection: close\r\n\r\n".to_string(),
        ),
        (
            "two Hosts",
            "GET / HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
                .to_string(),
        ),
        (
            "an empty Host",
            "GET / HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n".to_string(),
        ),
        (
            "user info",
            "GET / HTTP/1.1\r\nHost: a@localhost\r\nConnection: close\r\n\r\n".to_string(),
        ),
    ] {
        let (code, body) = status(raw);
        assert_eq!(code, 400, "{what}: {body}");
    }
    let mut old = TcpStream::connect(d.addr).unwrap();
    old.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
    let (buf, _) = read_all(&mut old, Duration::from_secs(15));
    let reply = String::from_utf8_lossy(&buf);
    assert!(
        reply.starts_with("HTTP/1.0 200 ") && reply.ends_with("\r\n\r\nok\n"),
        "HTTP/1.0 without Host: {reply}"
    );
    d.assert_serving("other host names");
}

/// `promtool` (Prometheus's own checker; Debian's package prometheus):
/// the path, or a panic that says how to get it.
fn promtool() -> &'static str {
    assert!(
        have("promtool"),
        "promtool is not installed: `apt-get download prometheus && dpkg -x prometheus_*.deb /tmp/prom && sudo install /tmp/prom/usr/bin/promtool /usr/local/bin/` (README, \"Tests\")"
    );
    "promtool"
}

#[test]
fn metrics_of_hostile_project_names_pass_promtool() {
    let promtool = promtool();
    let dir = tempfile::tempdir().unwrap();
    // Ad-hoc projects (`pm-summarize --path`) are named after their
    // directory: anything but a control character, which it refuses.
    let names = [
        "my \"notes\"",
        "back\\slash\\",
        "ünï ☃ 雪",
        "end\"} 1 # forged",
        "plain",
    ];
    let config = dir.path().join("pimainteno.toml");
    std::fs::write(
        &config,
        format!(
            "[llm]\nprovider = \"none\"\n\n[cache]\npath = \"{}\"\n",
            dir.path().join("store").display()
        ),
    )
    .unwrap();
    let mut summarize = Command::new(env!("CARGO_BIN_EXE_pm-summarize"));
    clean(&mut summarize).arg("--config").arg(&config);
    for n in names {
        let repo = common::repo(dir.path(), n);
        summarize.arg("--path").arg(repo);
    }
    let out = summarize.output().unwrap();
    assert!(out.status.success(), "{out:?}");

    let d = Dashboard::by_hand(&config, "127.0.0.1:0", &[]);
    let projects = get_ok(d.addr, "/api/v1/projects").json();
    let shown: Vec<&str> = projects
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for n in names {
        assert!(shown.contains(&n), "{n:?} not in {shown:?}");
    }
    let metrics = get_ok(d.addr, "/metrics").text();
    for escaped in [
        r#"pimainteno_summaries{project="my \"notes\""} 1"#,
        r#"pimainteno_summaries{project="back\\slash\\"} 1"#,
        r#"pimainteno_summaries{project="ünï ☃ 雪"} 1"#,
        r#"pimainteno_summaries{project="end\"} 1 # forged"} 1"#,
    ] {
        assert!(metrics.contains(escaped), "{escaped} not in:\n{metrics}");
    }

    assert_promtool_clean(promtool, &metrics);
}

/// `promtool check metrics` finds neither a parse error nor a lint problem.
fn assert_promtool_clean(promtool: &str, metrics: &str) {
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {:?}\n{said}\n{metrics}",
        out.status
    );
}

#[test]
fn socket_activated_it_exits_after_the_idle_time_and_by_hand_it_does_not() {
    let setup = Setup::new("http://127.0.0.1:9/v1");
    let config = setup.config_with("idle.toml", "idle_exit = \"1s\"");
    let mut by_hand = Dashboard::by_hand(&config, "127.0.0.1:0", &[]);
    let hand_started = Instant::now();

    // systemd's notification socket, to see READY=1.
    let notify_path = setup.path().join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut d = Dashboard::activated(
        &config,
        "127.0.0.1",
        &[("NOTIFY_SOCKET", notify_path.to_str().unwrap())],
    );
    let r = get_ok(d.addr, "/");
    assert!(r.text().contains("demo"));
    let last = Instant::now();
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("a notification");
    assert!(
        String::from_utf8_lossy(&buf[..n]).contains("READY=1"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    let status = d
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("still running 10 s after its last request: {}", d.log()));
    let idle = last.elapsed();
    assert_eq!(status.code(), Some(0), "{status:?}: {}", d.log());
    assert!(
        idle >= Duration::from_millis(900),
        "exited {idle:?} after the last request, before idle_exit = 1s"
    );

    // By hand nobody would start it again: it stays.
    let remaining = Duration::from_secs(3).saturating_sub(hand_started.elapsed());
    assert_eq!(by_hand.wait_exit(remaining), None, "{}", by_hand.log());
    by_hand.assert_serving("3 s with idle_exit = 1s");
}

/// `openssl passwd -6 -salt SALT PASSWORD`: the hash a user makes.
fn password_hash(password: &str) -> String {
    assert!(
        have("openssl"),
        "openssl is not installed: `apt-get install openssl`"
    );
    let out = Command::new("openssl")
        .args(["passwd", "-6", "-salt", "pimainteno", password])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn off_loopback_without_a_password_it_refuses_with_503_and_exit_78() {
    let setup = Setup::new("http://127.0.0.1:9/v1");
    let missing = setup.path().join("no-such-password");
    let config = setup.config_with(
        "open.toml",
        &format!(
            "host = \"0.0.0.0\"\npassword_file = \"{}\"",
            missing.display()
        ),
    );

    // Socket-activated: the connection that started it gets a 503.
    let mut d = Dashboard::activated(&config, "0.0.0.0", &[]);
    let r = get(d.addr, "/");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("journalctl"), "{}", r.text());
    let status = d
        .wait_exit(Duration::from_secs(10))
        .expect("it exits at once");
    assert_eq!(status.code(), Some(78), "{status:?}");
    let log = d.wait_log("openssl passwd", Duration::from_secs(5));
    for want in [
        "openssl passwd -6",
        "0.0.0.0",
        "127.0.0.1",
        &missing.display().to_string(),
    ] {
        assert!(log.contains(want), "{want:?} not in {log}");
    }

    // By hand on 0.0.0.0: the same refusal.
    let out = clean(&mut Command::new(DASHBOARD))
        .arg("--config")
        .arg(&config)
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("openssl passwd"),
        "{out:?}"
    );
}

/// Basic auth: 401 with a challenge without or with wrong credentials,
/// 200 with the right ones; /healthz open.
fn assert_basic_auth(addr: SocketAddr, right: &str, wrong: &[&str]) {
    for path in ["/", "/project/demo", "/api/v1/overview", "/metrics"] {
        let r = get(addr, path);
        assert_eq!(r.status, 401, "{path} without credentials: {}", r.text());
        assert!(
            r.header("WWW-Authenticate")
                .is_some_and(|v| v.starts_with("Basic realm=")),
            "{path}: {:?}",
            r.headers
        );
        assert!(!r.text().contains("demo"), "{path}: {}", r.text());
        for w in wrong {
            let r = request(addr, "GET", path, &[("Authorization", &basic(w))]);
            assert_eq!(r.status, 401, "{path} as {w}");
        }
        let r = request(addr, "GET", path, &[("Authorization", &basic(right))]);
        assert_eq!(r.status, 200, "{path} as {right}: {}", r.text());
    }
    let r = request(addr, "GET", "/", &[("Authorization", "Bearer secret")]);
    assert_eq!(r.status, 401);
    assert_eq!(get(addr, "/healthz").status, 200);
}

#[test]
fn off_loopback_basic_auth_is_required() {
    let setup = Setup::new("http://127.0.0.1:9/v1");
    let file = setup.path().join("web-password");
    std::fs::write(&file, password_hash("secret")).unwrap();
    let config = setup.config_with(
        "auth.toml",
        &format!("host = \"0.0.0.0\"\npassword_file = \"{}\"", file.display()),
    );

    // By hand on 0.0.0.0, the hash from [web] password_file.
    let mut d = Dashboard::by_hand(&config, "0.0.0.0:0", &[]);
    assert_basic_auth(
        d.addr,
        "admin:secret",
        &["admin:wrong", "root:secret", "admin:", "admin"],
    );
    d.assert_serving("auth");

    // Socket-activated on 0.0.0.0 with the systemd credential: it wins.
    let creds = setup.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("web-password"), password_hash("other")).unwrap();
    let d = Dashboard::activated(
        &config,
        "0.0.0.0",
        &[("CREDENTIALS_DIRECTORY", creds.to_str().unwrap())],
    );
    assert_basic_auth(d.addr, "admin:other", &["admin:secret"]);

    // On loopback no password is asked.
    let d = Dashboard::by_hand(&config, "127.0.0.1:0", &[]);
    get_ok(d.addr, "/");
}

#[test]
fn the_store_is_read_without_write_access_and_left_as_it_was() {
    let setup = Setup::new("http://127.0.0.1:9/v1");
    setup.run(
        env!("CARGO_BIN_EXE_pm-summarize"),
        &["--project", "demo", "--provider", "none"],
    );
    let store = setup.store();
    let before = snapshot(&store);

    // No write access to the store directory. Root ignores permissions, so
    // as root the dashboard runs as nobody, who owns the store (as the
    // service account does) but may not write to its directory.
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let user = root.then_some((65534, 65534));
    if root {
        std::fs::set_permissions(setup.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for p in [
            store.clone(),
            store.join("data.mdb"),
            store.join("lock.mdb"),
        ] {
            std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
        }
    }
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o555)).unwrap();

    let d = Dashboard::by_hand_as(&setup.config_path(), "127.0.0.1:0", &[], user);
    let o = get_ok(d.addr, "/api/v1/overview").json();
    assert_eq!(o["store"], "ok", "{o}");
    assert_eq!(o["projects"][0]["outcome"], "summarized", "{o}");
    for path in ["/", "/project/demo", "/project/calc", "/metrics"] {
        get_ok(d.addr, path);
    }
    assert!(
        get_ok(d.addr, "/metrics")
            .text()
            .contains("pimainteno_summaries{project=\"demo\"} 1\n")
    );
    drop(d);
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(
        before == snapshot(&store),
        "the dashboard changed the store"
    );
}

#[test]
fn without_a_store_it_says_no_data_yet_and_creates_none() {
    let setup = Setup::new("http://127.0.0.1:9/v1");
    let store = setup.store();
    assert!(!store.parent().unwrap().exists());
    let d = Dashboard::by_hand(&setup.config_path(), "127.0.0.1:0", &[]);
    let r = get_ok(d.addr, "/");
    assert_html("/", &r);
    assert!(r.text().contains("No data yet"), "{}", r.text());
    assert!(r.text().contains("demo"), "configured projects are shown");
    let o = get_ok(d.addr, "/api/v1/overview").json();
    assert!(o["store"].as_str().unwrap().contains("no store"), "{o}");
    let p = get_ok(d.addr, "/project/demo").text();
    assert!(p.contains("No summary yet."), "{p}");
    let m = get_ok(d.addr, "/metrics").text();
    assert!(m.contains("pimainteno_store_ok 0\n"), "{m}");
    assert!(m.ends_with("# EOF\n"), "{m}");
    assert_eq!(get(d.addr, "/patch/calc/0000").status, 404);
    assert!(
        !store.parent().unwrap().exists(),
        "the dashboard created {}",
        store.display()
    );
}

#[test]
fn a_store_the_repair_unit_cannot_use_is_shown() {
    let setup = Setup::new("http://127.0.0.1:9/v1");
    // The store reads fine, but pimainteno-repair.service could not write
    // it (a full disk): its report under /run is shown, escaped.
    pimainteno::store::Store::open(&pimainteno::config::CacheSettings {
        path: setup.store(),
        max_size: 1 << 20,
        history: 5,
    })
    .unwrap();
    let run = setup.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(
        run.join("store-fault"),
        "2026-12-02T21:09:37Z\ncannot write the store at <state/store> (0 KiB free): No space left on device\n",
    )
    .unwrap();
    let d = Dashboard::by_hand(
        &setup.config_path(),
        "127.0.0.1:0",
        &[("PIMAINTENO_RUN_DIR", run.to_str().unwrap())],
    );
    let r = get_ok(d.addr, "/");
    assert_html("/", &r);
    let page = r.text();
    assert!(
        page.contains("pimainteno-repair.service cannot use the store"),
        "{page}"
    );
    assert!(page.contains("&lt;state/store&gt;"), "escaped: {page}");
    assert!(!page.contains("No data yet"), "{page}");
    let m = get_ok(d.addr, "/metrics").text();
    assert!(m.contains("pimainteno_store_ok 0\n"), "{m}");
}

// ---------------------------------------------------------------------------
// Outcomes are not faults.

/// What the shipped `systemd/<unit>` runs (its `ExecStart=`), `%i` being
/// `instance`, with the built binaries for `/usr/bin/...` and the
/// configuration through `$PIMAINTENO_CONFIG`, as in the unit.
fn unit_command(unit: &str, instance: &str, config: &Path) -> Command {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("systemd")
        .join(unit);
    let text = std::fs::read_to_string(&path).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap_or_else(|| panic!("no ExecStart= in {}", path.display()));
    let argv: Vec<String> = line
        .split_whitespace()
        .map(|a| a.replace("%i", instance))
        .collect();
    let bin = match argv[0].as_str() {
        "/usr/bin/pm-summarize" => env!("CARGO_BIN_EXE_pm-summarize"),
        "/usr/bin/pm-patch" => env!("CARGO_BIN_EXE_pm-patch"),
        other => panic!("{unit} runs {other}"),
    };
    let mut cmd = Command::new(bin);
    clean(&mut cmd)
        .args(&argv[1..])
        .env("PIMAINTENO_CONFIG", config)
        .env_remove("PIMAINTENO_TEST_PAUSE")
        .env_remove("RUNTIME_DIRECTORY")
        .env_remove("XDG_RUNTIME_DIR");
    cmd
}

/// The timer's run: pimainteno.service, then the pimainteno-patch@ units
/// it wants, one project after the other. Each must end successfully;
/// pm-patch's stderr for `calc` is returned.
fn timer_run(s: &Setup) -> String {
    let mut calc = String::new();
    for (unit, instance) in [
        ("pimainteno.service", ""),
        ("pimainteno-patch@.service", "demo"),
        ("pimainteno-patch@.service", "calc"),
    ] {
        let out = unit_command(unit, instance, &s.config_path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{unit} {instance} would end failed: {err}"
        );
        if instance == "calc" {
            calc = err;
        }
    }
    calc
}

fn status_of(s: &Setup) -> String {
    let out = s.run(env!("CARGO_BIN_EXE_pimainteno"), &["status"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_check_that_fails_and_a_fix_refused_or_not_passing_are_outcomes_not_failed_units() {
    // calc's check fails at HEAD. The model's first fix guts the check's
    // own script (refused); at the next HEAD its fix does not pass.
    let gut = "```diff\n--- a/test.sh\n+++ b/test.sh\n@@ -1,4 +1 @@\n-. ./calc.sh\n-r=$(add 2 3)\n-if [ \"$r\" != 5 ]; then echo \"FAIL: add 2 3 gave $r, expected 5\"; exit 1; fi\n-echo ok\n+echo ok\n```\n";
    let wrong = "```diff\n--- a/calc.sh\n+++ b/calc.sh\n@@ -1,3 +1,3 @@\n add() {\n-\techo $(($1 - $2))\n+\techo $(($1 * $2))\n }\n```\n";
    let server = Server::start(vec![
        Step::answer("demo: a weather station."),
        Step::answer("calc: adds numbers, or should."),
        Step::answer(gut),
        Step::answer("calc: adds numbers, still wrongly."),
        Step::answer(wrong),
    ]);
    let s = Setup::new(&server.endpoint());
    std::fs::write(
        s.config_path(),
        s.config_text("").replace(
            "author_email = \"fixer@pi.invalid\"\n",
            "author_email = \"fixer@pi.invalid\"\nmax_attempts = 1\n",
        ),
    )
    .unwrap();

    // Refused.
    let err = timer_run(&s);
    assert!(
        err.contains("refused: ") && err.contains("test.sh: protected"),
        "{err}"
    );
    assert_eq!(server.requests(), 3, "two summaries, one fix");
    let head = common::git(&s.calc, &["rev-parse", "HEAD"]);
    let status = status_of(&s);
    assert!(
        status.contains(&format!("    check: FAILING at {}\n", &head[..12])),
        "{status}"
    );
    assert!(status.contains("    last patch: refused at "), "{status}");
    assert!(status.contains("test.sh: protected"), "{status}");
    let d = Dashboard::activated(&s.config_path(), "127.0.0.1", &[]);
    let metrics = get_ok(d.addr, "/metrics").text();
    for want in [
        "pimainteno_project_check_passed{project=\"calc\"} 0\n",
        "pimainteno_patches{project=\"calc\",outcome=\"refused\"} 1\n",
        "pimainteno_project_last_patch_outcome{project=\"calc\",outcome=\"refused\"} 1\n",
        "# TYPE pimainteno_project_last_patch_timestamp_seconds gauge\n",
        "pimainteno_project_last_patch_timestamp_seconds{project=\"calc\"} ",
    ] {
        assert!(metrics.contains(want), "{want:?} not in:\n{metrics}");
    }
    let o = get_ok(d.addr, "/api/v1/overview").json();
    let calc = o["projects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "calc")
        .unwrap_or_else(|| panic!("{o}"));
    assert_eq!(calc["last_patch"]["outcome"], "refused", "{o}");
    assert_eq!(calc["check"]["passed"], false, "{o}");
    drop(d);

    // New work, and a fix that does not pass.
    std::fs::write(s.calc.join("README.md"), "# calc\n\nAdds.\n").unwrap();
    common::git(&s.calc, &["commit", "-qam", "readme"]);
    let err = timer_run(&s);
    assert!(
        err.contains("no fix passed the check in 1 attempt(s)"),
        "{err}"
    );
    assert_eq!(server.requests(), 5, "calc's summary, one fix");
    let status = status_of(&s);
    assert!(status.contains("    last patch: failed at "), "{status}");
    assert!(
        status.contains("no change passed the check in 1 attempt(s)"),
        "{status}"
    );
    let d = Dashboard::activated(&s.config_path(), "127.0.0.1", &[]);
    let metrics = get_ok(d.addr, "/metrics").text();
    for want in [
        "pimainteno_patches{project=\"calc\",outcome=\"refused\"} 1\n",
        "pimainteno_patches{project=\"calc\",outcome=\"failed\"} 1\n",
        "pimainteno_project_last_patch_outcome{project=\"calc\",outcome=\"failed\"} 1\n",
    ] {
        assert!(metrics.contains(want), "{want:?} not in:\n{metrics}");
    }
    assert!(
        !metrics.contains(
            "pimainteno_project_last_patch_outcome{project=\"calc\",outcome=\"refused\"}"
        ),
        "{metrics}"
    );
    let page = get_ok(d.addr, "/project/calc").text();
    assert!(
        page.contains(">refused<") && page.contains(">failed<"),
        "{page}"
    );
}

// ---------------------------------------------------------------------------
// A real browser.

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| have(c))
}

/// `target/test-artifacts/dashboard/` (next to the binaries' `debug/`).
fn artifacts() -> PathBuf {
    let dir = Path::new(DASHBOARD)
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("test-artifacts/dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Headless Chromium takes a screenshot of `url`: its stderr (with the
/// page's console messages as `CONSOLE` lines).
fn screenshot(browser: &str, url: &str, png: &Path, size: (u32, u32)) -> String {
    let profile = tempfile::tempdir().unwrap();
    let _ = std::fs::remove_file(png);
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("--window-size={},{}", size.0, size.1))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = String::new();
    let mut err = String::new();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium took over 60 s on {url}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    out.push_str(&reader.join().unwrap());
    err.push_str(&err_reader.join().unwrap());
    assert!(
        status.success() && png.exists(),
        "chromium on {url}: {status:?}\n{out}\n{err}"
    );
    err
}

/// The console messages in Chromium's log.
fn console_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(":CONSOLE") || l.contains("Refused to"))
        .collect()
}

/// A PNG of the given size with some content (not a blank page).
fn assert_png(png: &Path, size: (u32, u32)) {
    let bytes = std::fs::read(png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{}", png.display());
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((width, height), size, "{}", png.display());
    assert!(
        bytes.len() > 10_000,
        "{}: {} bytes, a blank page?",
        png.display(),
        bytes.len()
    );
}

#[test]
fn headless_chromium_renders_the_pages_without_console_errors() {
    let Some(browser) = chromium() else {
        if std::env::var("PM_SKIP_BROWSER").as_deref() == Ok("1") {
            eprintln!("SKIPPED: chromium is not installed and PM_SKIP_BROWSER=1");
            return;
        }
        panic!(
            "chromium is not installed: `apt-get install chromium` (or set PM_SKIP_BROWSER=1 to skip this test)"
        );
    };
    let (setup, _server) = filled();
    let d = Dashboard::activated(&setup.config_path(), "127.0.0.1", &[]);
    let calc = get_ok(d.addr, "/api/v1/projects/calc").json();
    let patch_id = calc["patches"][0]["id"].as_str().unwrap().to_string();
    let unit = get_ok(d.addr, &format!("/api/v1/units/{UNIT}")).json();
    let failure_id = unit["failures"][0]["id"].as_str().unwrap().to_string();
    let dir = artifacts();
    let base = format!("http://{}", d.addr);
    let desktop = (1280, 1000);
    let phone = (390, 844);
    let pages = [
        ("overview", "/".to_string(), desktop),
        ("project-demo", "/project/demo".to_string(), (1280, 1400)),
        ("project-calc", "/project/calc".to_string(), desktop),
        ("patch", format!("/patch/{patch_id}"), (1280, 1200)),
        ("failure", format!("/failure/{failure_id}"), (1280, 1400)),
        ("overview-phone", "/".to_string(), phone),
        ("patch-phone", format!("/patch/{patch_id}"), phone),
    ];

    // The probe: a console message does show in the log this way, so
    // finding none below means something.
    let probe = dir.join("probe.png");
    let threads: Vec<_> = pages
        .iter()
        .map(|(name, path, size)| {
            let (url, png, size) = (
                format!("{base}{path}"),
                dir.join(format!("{name}.png")),
                *size,
            );
            std::thread::spawn(move || {
                (
                    url.clone(),
                    screenshot(browser, &url, &png, size),
                    png,
                    size,
                )
            })
        })
        .collect();
    let log = screenshot(
        browser,
        "data:text/html,<p>probe</p><script>console.error('pm-probe')</script>",
        &probe,
        (200, 100),
    );
    assert!(
        console_lines(&log).iter().any(|l| l.contains("pm-probe")),
        "Chromium's console messages are not in its log:\n{log}"
    );
    let _ = std::fs::remove_file(&probe);

    let mut problems = Vec::new();
    for t in threads {
        let (url, log, png, size) = t.join().unwrap();
        for l in console_lines(&log) {
            problems.push(format!("{url}: {l}"));
        }
        assert_png(&png, size);
        eprintln!("screenshot: {}", png.display());
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
