//! Helpers shared by the integration tests (and the benchmark): real git
//! repositories in temporary directories.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;

/// `git` without the user's or the system's configuration, committing as a
/// fixed author, at `date` (RFC 2822 or ISO 8601) when given. Returns
/// stdout, trimmed; panics with git's stderr on failure.
pub fn git_at(dir: &Path, date: Option<&str>, args: &[&str]) -> String {
    let mut cmd = Command::new("git");
    cmd.args([
        "-c",
        "user.name=Tester",
        "-c",
        "user.email=t@example.invalid",
    ])
    .args([
        "-c",
        "commit.gpgsign=false",
        "-c",
        "init.defaultBranch=main",
    ])
    .args(args)
    .current_dir(dir)
    .env("GIT_CONFIG_GLOBAL", "/dev/null")
    .env("GIT_CONFIG_NOSYSTEM", "1");
    if let Some(d) = date {
        cmd.env("GIT_AUTHOR_DATE", d).env("GIT_COMMITTER_DATE", d);
    }
    let out = cmd.output().expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The middle of the measured times (the benchmarks' figure).
pub fn median(mut v: Vec<std::time::Duration>) -> std::time::Duration {
    v.sort();
    v[v.len() / 2]
}

/// [`git_at`] at the current time.
pub fn git(dir: &Path, args: &[&str]) -> String {
    git_at(dir, None, args)
}

/// `parent/name`: a git repository on branch `main` holding `files`
/// (path, contents), all in one commit "first commit".
pub fn repo_with(parent: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = parent.join(name);
    for (path, contents) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, contents).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    git(&dir, &["init", "-q"]);
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-qm", "first commit"]);
    dir
}

/// A small project: a README and a Python file with a TODO.
pub fn repo(parent: &Path, name: &str) -> PathBuf {
    let readme = format!("# {name}\n\nA test project.\n");
    repo_with(
        parent,
        name,
        &[
            ("README.md", &readme),
            ("main.py", "print('hi')  # TODO: greet properly\n"),
        ],
    )
}

/// The handler's /run directory for a test configuration: beside its store.
pub fn run_dir(settings: &pimainteno::config::Settings) -> pimainteno::onfailure::rundir::RunDir {
    pimainteno::onfailure::rundir::RunDir::new(settings.cache.path.with_file_name("run"))
}

/// Realistic fake secrets in the formats the redaction rules catch, each
/// inside the kind of line that carries it in real logs. Built at run time
/// so that no token-shaped literal sits in the source.
pub struct FakeSecrets {
    /// (the secret value, a log line holding it)
    pub items: Vec<(String, String)>,
}

impl FakeSecrets {
    pub fn new() -> FakeSecrets {
        let alnum =
            |seed: &str, n: usize| -> String { seed.repeat(n / seed.len() + 1)[..n].to_string() };
        let db_password = format!("hunter2{}", alnum("Qx7", 9));
        let bearer = alnum("Tk4mZ0p", 40);
        let aws_id = format!("AKIA{}", alnum("Q7W2E4R6", 16));
        let aws_secret = alnum("wJalrXUtnFEMI/K7MDENG+bPxRfiCY", 40);
        let github = format!("ghp_{}", alnum("a1B2c3D4e5", 36));
        let openai = format!("sk-proj-{}", alnum("Xy12Ab34Cd56", 48));
        let json_password = format!("s3cr3t{}", alnum("Pw9", 10));
        let py_api_key = alnum("k3yZ9", 32);
        let key_body = alnum(
            "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV9ffLM",
            64,
        );
        let items = vec![
            (
                db_password.clone(),
                format!(
                    "psycopg2.OperationalError: connection to postgres://app:{db_password}@db.lan:5432/weather failed"
                ),
            ),
            (
                bearer.clone(),
                format!(
                    "curl: (22) The requested URL returned error: 401; ran curl -H \"Authorization: Bearer {bearer}\" https://api.example.invalid/v1"
                ),
            ),
            (
                aws_id.clone(),
                format!("botocore: using aws_access_key_id={aws_id}"),
            ),
            (
                aws_secret.clone(),
                format!("AWS_SECRET_ACCESS_KEY={aws_secret}"),
            ),
            (
                github.clone(),
                format!("git push failed with GITHUB_TOKEN {github}"),
            ),
            (
                openai.clone(),
                format!("openai.AuthenticationError: Incorrect API key provided: {openai}"),
            ),
            (
                json_password.clone(),
                format!(
                    "{{\"level\":\"error\",\"msg\":\"login failed\",\"password\":\"{json_password}\"}}"
                ),
            ),
            (
                py_api_key.clone(),
                format!("    settings = {{'api_key': '{py_api_key}', 'debug': True}}"),
            ),
            (
                key_body.clone(),
                format!(
                    "-----BEGIN RSA PRIVATE KEY-----\n{key_body}\n-----END RSA PRIVATE KEY-----"
                ),
            ),
        ];
        FakeSecrets { items }
    }

    /// Every line, one after the other.
    pub fn lines(&self) -> Vec<String> {
        self.items
            .iter()
            .flat_map(|(_, line)| line.lines().map(str::to_string).collect::<Vec<_>>())
            .collect()
    }

    /// The values of the secrets that `text` holds (none, to pass).
    pub fn found_in(&self, text: &str) -> Vec<&str> {
        self.items
            .iter()
            .map(|(value, _)| value.as_str())
            .filter(|v| text.contains(v))
            .collect()
    }
}

/// Connections that never finish a request: `silent` ones send nothing,
/// `dripping` ones send a request head a byte every 200 ms. Like an
/// attacker, it opens a new one for each the server closes. Stopped when
/// dropped (the dashboard's tests and benchmark).
pub struct SlowClients {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl SlowClients {
    pub fn start(addr: std::net::SocketAddr, silent: usize, dripping: usize) -> SlowClients {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let open = move || {
            let s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))
                .ok()?;
            s.set_nonblocking(true).unwrap();
            Some(s)
        };
        let mut conns: Vec<(Option<std::net::TcpStream>, bool)> = (0..silent + dripping)
            .map(|i| (open(), i >= silent))
            .collect();
        let thread = std::thread::spawn(move || {
            const HEAD: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            let mut reopened = 0;
            let mut tick = 0usize;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                for (conn, drip) in conns.iter_mut() {
                    use std::io::{Read, Write};
                    let alive = conn.as_mut().is_some_and(|s| {
                        let mut b = [0u8; 512];
                        match s.read(&mut b) {
                            Ok(0) => false,
                            Ok(_) => true,
                            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                        }
                    });
                    if !alive {
                        *conn = open();
                        reopened += 1;
                    }
                    if *drip && let Some(s) = conn.as_mut() {
                        let _ = s.write(&HEAD[tick % HEAD.len()..][..1]);
                    }
                }
                tick += 1;
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            reopened
        });
        SlowClients {
            stop,
            thread: Some(thread),
        }
    }

    /// Stop, and say how many connections the server closed meanwhile.
    pub fn stop(mut self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for SlowClients {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `pimainteno --config CONFIG ARGS`, with its run directory beside the
/// configuration and nothing of this shell's systemd context: (exit code,
/// stdout, stderr).
pub fn admin(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pimainteno"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("PIMAINTENO_CONFIG")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("INVOCATION_ID")
        .env_remove("JOURNAL_STREAM")
        .env("PIMAINTENO_RUN_DIR", config.with_file_name("run"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).expect("pimainteno prints UTF-8"),
        String::from_utf8(out.stderr).expect("pimainteno prints UTF-8"),
    )
}
