//! The floor of the dashboard's cold-start benchmark (README "Benchmarks",
//! tests/system/bench_dashboard.py): a do-nothing HTTP responder that is
//! started exactly like pm-dashboard, by `pimainteno-dashboard.socket`,
//! under the same unit and its hardening (a drop-in only replaces
//! `ExecStart=`). What it measures is then what systemd, the sandbox and
//! the kernel cost before any code of ours runs; pm-dashboard's cold start
//! is compared with it.
//!
//! Standard library only, and it does what pm-dashboard does around a
//! request and nothing else: takes the listening socket from `$LISTEN_FDS`
//! (fd 3), sends `READY=1` to `$NOTIFY_SOCKET` (the unit is `Type=notify`),
//! answers every request with a fixed `200` (keep-alive, so the warm
//! requests/second compare too), and exits 0 after an idle time with no
//! connection.
//!
//! `floor-responder [--listen ADDR] [--idle-exit SECONDS]` (defaults:
//! 127.0.0.1:8740 when not socket-activated, 120 s).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::FromRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const BODY: &str = "floor\n";
/// The first fd systemd passes (sd_listen_fds(3)).
const LISTEN_FDS_START: i32 = 3;

fn main() {
    let mut listen = "127.0.0.1:8740".to_string();
    let mut idle = Duration::from_secs(120);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--listen", Some(v)) => listen = v,
            ("--idle-exit", Some(v)) => {
                idle = Duration::from_secs_f64(v.parse().expect("--idle-exit SECONDS"))
            }
            _ => {
                eprintln!("usage: floor-responder [--listen ADDR] [--idle-exit SECONDS]");
                std::process::exit(2);
            }
        }
    }
    let listener = match activated() {
        // SAFETY: systemd passed this fd to this very process (LISTEN_PID
        // checked) as a listening stream socket; nothing else owns it.
        true => unsafe { TcpListener::from_raw_fd(LISTEN_FDS_START) },
        false => TcpListener::bind(&listen).unwrap_or_else(|e| {
            eprintln!("floor-responder: cannot listen on {listen}: {e}");
            std::process::exit(1)
        }),
    };
    notify_ready();

    // Idle exit: a watcher thread, because a blocking accept() has no timeout.
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let busy = Arc::new(AtomicU64::new(0));
    {
        let (last, busy) = (Arc::clone(&last), Arc::clone(&busy));
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(200));
                let quiet = start.elapsed() - Duration::from_millis(last.load(Ordering::Relaxed));
                if busy.load(Ordering::Relaxed) == 0 && quiet >= idle {
                    std::process::exit(0);
                }
            }
        });
    }
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let (last, busy) = (Arc::clone(&last), Arc::clone(&busy));
        busy.fetch_add(1, Ordering::Relaxed);
        std::thread::spawn(move || {
            let _ = serve(stream);
            last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
            busy.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// `$LISTEN_FDS` is for this process (sd_listen_fds(3)).
fn activated() -> bool {
    let pid_ok = std::env::var("LISTEN_PID").is_ok_and(|p| p == std::process::id().to_string());
    pid_ok && std::env::var("LISTEN_FDS").is_ok_and(|n| n == "1")
}

/// `READY=1` to `$NOTIFY_SOCKET` (a path, or `@` for the abstract namespace).
fn notify_ready() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let target = target.to_string_lossy().into_owned();
    let addr = match target.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(&target),
    };
    if let (Ok(sock), Ok(addr)) = (UnixDatagram::unbound(), addr) {
        let _ = sock.send_to_addr(b"READY=1", &addr);
    }
}

/// Requests without a body (GET, HEAD) until the client closes.
fn serve(stream: TcpStream) -> std::io::Result<()> {
    let mut out = stream.try_clone()?;
    let mut input = BufReader::new(stream);
    let mut line = String::new();
    loop {
        // The request line and the headers, up to the empty line.
        let mut lines = 0;
        loop {
            line.clear();
            if input.read_line(&mut line)? == 0 {
                return Ok(());
            }
            lines += 1;
            if line == "\r\n" || line == "\n" || lines > 100 {
                break;
            }
        }
        // One write per answer: a second small one would wait for the
        // client's delayed ACK (Nagle), 40 ms per keep-alive request.
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{BODY}",
            BODY.len()
        );
        out.write_all(answer.as_bytes())?;
    }
}
