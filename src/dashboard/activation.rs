//! The listening socket: passed by systemd (`$LISTEN_FDS`, read with the
//! libsystemd crate) or bound by hand with `--listen`.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::config::WebSettings;
use crate::exit::{Coded, Exit};

/// The socket systemd passed, if it passed one. More than one, or one that
/// is not a TCP listener, is a unit file mistake and says so.
pub fn inherited() -> anyhow::Result<Option<TcpListener>> {
    if std::env::var_os("LISTEN_FDS").is_none() {
        return Ok(None);
    }
    let fds = libsystemd::activation::receive_descriptors(true)
        .context("cannot take the sockets systemd passed ($LISTEN_FDS)")?;
    let mut fds = fds.into_iter();
    let (Some(fd), None) = (fds.next(), fds.next()) else {
        bail!(Coded::new(
            Exit::Config,
            "systemd must pass exactly one socket (one ListenStream= in pimainteno-dashboard.socket)"
        ));
    };
    // SAFETY: the descriptor is ours alone from here on (receive_descriptors
    // unset $LISTEN_FDS and handed over ownership).
    let listener = unsafe { TcpListener::from_raw_fd(fd.into_raw_fd()) };
    if listener.local_addr().is_err() {
        bail!(Coded::new(
            Exit::Config,
            "the socket systemd passed is not a TCP socket: ListenStream= in pimainteno-dashboard.socket takes ADDRESS:PORT"
        ));
    }
    Ok(Some(listener))
}

/// `[web] host:port` as an address to bind (IPv6 in brackets).
pub fn address(web: &WebSettings) -> String {
    let host = if web.host == "localhost" {
        "127.0.0.1"
    } else {
        &web.host
    };
    if host.contains(':') {
        format!("[{host}]:{}", web.port)
    } else {
        format!("{host}:{}", web.port)
    }
}

pub fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).with_context(|| {
        format!("cannot listen on {addr}: another program may hold the port (pimainteno-dashboard.socket?); choose another with --listen")
    })
}

/// Tell systemd the dashboard is serving (a no-op when not started by it).
pub fn ready() {
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::debug!("cannot notify systemd: {e}");
    }
}

/// Answer every connection waiting on the socket with 503 and close it.
pub fn turn_away(listener: &TcpListener) {
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    while let Ok((mut stream, _)) = listener.accept() {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let _ = stream.set_write_timeout(Some(Duration::from_millis(500)));
        // Read the request first: closing with it unread would reset the
        // connection, and the client would see no answer at all.
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf);
        let body = "The PiMainteno dashboard cannot start: see `journalctl -u pimainteno-dashboard.service`.\n";
        let _ = write!(
            stream,
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.shutdown(Shutdown::Write);
    }
}
