//! `cargo bench --bench dashboard`: pm-dashboard on a store of 5 projects
//! summarized by the real pm-summarize (offline provider).
//!
//! - cold start: process start (through `systemd-socket-activate`, the way
//!   the socket unit starts it) to the first byte of `/`, median of 20;
//! - warm requests per second on one keep-alive connection, for `/` (which
//!   also runs `systemctl show`), a project page, and `/metrics`;
//! - peak RSS (VmHWM) of the process after all of that;
//! - with 64 slow connections held open (32 silent, 32 sending a request
//!   head a byte every 200 ms), then 300 (far more than its slots): the
//!   time to a whole `/` on a new connection (median and worst of 20), and
//!   the peak RSS after that.
//!
//! Targets (README, "Benchmarks"): peak RSS under 6 MB. The cold start under
//! systemd, with the unit's sandbox and against a do-nothing floor, is
//! measured in a booted container by the system tests' benchmark; this one
//! is the same binary without systemd's share.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const COLD_ROUNDS: usize = 20;
const WARM_REQUESTS: usize = 500;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(config: &Path, port: u16) -> Child {
    Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(format!("127.0.0.1:{port}"))
        .arg(env!("CARGO_BIN_EXE_pm-dashboard"))
        .arg("--config")
        .arg(config)
        .stderr(Stdio::null())
        .spawn()
        .expect("systemd-socket-activate (Debian package systemd)")
}

fn connect(port: u16) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => {
                s.set_nodelay(true).unwrap();
                return s;
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(e) => panic!("cannot connect: {e}"),
        }
    }
}

/// One keep-alive request; the whole body is read (Content-Length).
fn get(stream: &mut BufReader<TcpStream>, path: &str) -> usize {
    // One write: a request in pieces would wait for delayed ACKs.
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stream.get_mut().write_all(request.as_bytes()).unwrap();
    let mut len = 0;
    let mut status = String::new();
    stream.read_line(&mut status).unwrap();
    assert!(status.contains(" 200 "), "{path}: {status}");
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    stream.read_exact(&mut body).unwrap();
    len
}

/// A whole `/` on a new connection, as a visitor gets it.
fn visit(port: u16) -> Duration {
    let t = Instant::now();
    let mut s = connect(port);
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    assert!(
        reply.starts_with(b"HTTP/1.1 200 "),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    t.elapsed()
}

fn peak_rss(child: &Child) -> String {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap()
        .trim_start_matches("VmHWM:")
        .trim()
        .to_string()
}

fn main() {
    let root = tempfile::tempdir().unwrap();
    let mut projects = String::new();
    for i in 0..5 {
        let sources: Vec<(String, String)> = (0..50)
            .map(|f| (format!("src/m{f}.rs"), format!("pub fn f{f}() {{}}\n")))
            .chain([("README.md".into(), "# bench\n".into())])
            .collect();
        let files: Vec<(&str, &str)> = sources
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_str()))
            .collect();
        let dir = common::repo_with(root.path(), &format!("p{i}"), &files);
        projects.push_str(&format!(
            "[[project]]\nname = \"p{i}\"\npath = \"{}\"\ncheck = \"true\"\nunits = [\"p{i}.service\"]\n\n",
            dir.display()
        ));
    }
    let config = root.path().join("pimainteno.toml");
    std::fs::write(
        &config,
        format!(
            "[llm]\nprovider = \"none\"\n\n[cache]\npath = \"{}\"\n\n[web]\nidle_exit = \"1s\"\n\n{projects}",
            root.path().join("store").display()
        ),
    )
    .unwrap();
    let summarize = Command::new(env!("CARGO_BIN_EXE_pm-summarize"))
        .arg("--config")
        .arg(&config)
        .arg("-q")
        .status()
        .unwrap();
    assert!(summarize.success());

    let mut cold = Vec::new();
    for _ in 0..COLD_ROUNDS {
        let port = free_port();
        let mut child = start(&config, port);
        let mut stream = BufReader::new(connect(port));
        let t = Instant::now();
        stream
            .get_mut()
            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut first = [0u8; 1];
        stream.read_exact(&mut first).unwrap();
        // systemd-socket-activate starts the program on the first
        // connection: this is exec, start-up and the page.
        cold.push(t.elapsed());
        let _ = child.kill();
        let _ = child.wait();
    }

    let port = free_port();
    let mut child = start(&config, port);
    let mut stream = BufReader::new(connect(port));
    let mut rates = Vec::new();
    for path in ["/", "/project/p0", "/metrics", "/api/v1/projects/p0"] {
        let t = Instant::now();
        let mut bytes = 0;
        for _ in 0..WARM_REQUESTS {
            bytes += get(&mut stream, path);
        }
        let per_sec = WARM_REQUESTS as f64 / t.elapsed().as_secs_f64();
        rates.push((path, per_sec, bytes / WARM_REQUESTS));
    }
    let hwm = peak_rss(&child);
    drop(stream);

    let mut held = Vec::new();
    for (n, dripping) in [(64, 32), (300, 100)] {
        let slow =
            common::SlowClients::start(([127, 0, 0, 1], port).into(), n - dripping, dripping);
        std::thread::sleep(Duration::from_millis(500));
        let mut times = Vec::new();
        for _ in 0..20 {
            times.push(visit(port));
            std::thread::sleep(Duration::from_millis(100));
        }
        slow.stop();
        let worst = *times.iter().max().unwrap();
        held.push((n, common::median(times), worst, peak_rss(&child)));
    }
    let _ = child.kill();
    let _ = child.wait();

    println!(
        "cold start, process start to the first byte of / (median of {COLD_ROUNDS}): {:.1} ms",
        common::median(cold).as_secs_f64() * 1000.0
    );
    for (path, per_sec, bytes) in rates {
        println!("warm {path:<22} {per_sec:>7.0} requests/s ({bytes} bytes each)");
    }
    println!("peak RSS: {hwm}");
    for (n, median, worst, rss) in held {
        println!(
            "{n} slow connections held: / on a new connection in {:.1} ms (median of 20), {:.1} ms at worst; peak RSS {rss}",
            median.as_secs_f64() * 1000.0,
            worst.as_secs_f64() * 1000.0
        );
    }
}
