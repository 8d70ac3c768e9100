//! The names the dashboard answers to. A page on some other site can make
//! the visitor's browser resolve the attacker's name to the Pi's address
//! (DNS rebinding) and then read the dashboard as that site: the request
//! then carries the attacker's name in `Host`, so a request is served only
//! when its host is one of ours:
//!
//! - `localhost` and loopback addresses;
//! - `[web] host`, and the address the connection arrived on (a visitor
//!   who types the Pi's IP address; no site can make a browser send that);
//! - the machine's name, and `<name>.local` (mDNS, as in `raspberrypi.local`);
//! - `[web] allowed_hosts` (a reverse proxy's name).
//!
//! Names compare without case, port and trailing dot.

use std::net::{IpAddr, Ipv6Addr};

use crate::config::WebSettings;

/// Why a request's host was not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No host, several, or not a host at all: 400.
    Malformed,
    /// Not a name of this dashboard: 421.
    Unknown,
}

/// A name or address from `[web] allowed_hosts`, the way it is compared:
/// lowercase, without the trailing dot, an IPv6 address without brackets.
pub fn configured_name(text: &str) -> Result<String, String> {
    const HOW: &str = "write a name as in the browser's address bar, without scheme, port or path: \"pi.example.org\", \"192.168.1.20\", \"::1\"";
    let t = text.trim();
    let bare = t
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(t);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    match dns_name(t) {
        Some(n) => Ok(n),
        None => Err(format!("is not a host name or IP address; {HOW}")),
    }
}

/// `text` as a DNS name (letters, digits, `-` and `_` in labels of at most
/// 63, 253 in all), lowercase and without a trailing dot.
fn dns_name(text: &str) -> Option<String> {
    let t = text.strip_suffix('.').unwrap_or(text);
    let ok = !t.is_empty()
        && t.len() <= 253
        && t.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    ok.then(|| t.to_ascii_lowercase())
}

/// The host of a `Host` header or of a request target's authority
/// (`name[:port]`, `[v6][:port]`), without the port.
enum Target {
    Ip(IpAddr),
    Name(String),
}

fn parse_authority(value: &str) -> Option<Target> {
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        let ip: Ipv6Addr = inner.parse().ok()?;
        return match after {
            "" => Some(Target::Ip(IpAddr::V6(ip))),
            p => p
                .strip_prefix(':')
                .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
                .map(|_| Target::Ip(IpAddr::V6(ip))),
        };
    } else {
        match value.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (value, None),
        }
    };
    if port.is_some_and(|p| !p.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
        return Some(Target::Ip(IpAddr::V4(ip)));
    }
    dns_name(host).map(Target::Name)
}

/// What a request may name: built once per process.
#[derive(Debug, Clone)]
pub struct Allowed {
    names: Vec<String>,
    ips: Vec<IpAddr>,
}

impl Allowed {
    /// `machine` is the machine's name (uname).
    pub fn new(web: &WebSettings, machine: &str) -> Allowed {
        let mut names = vec!["localhost".to_string()];
        let mut ips = Vec::new();
        // `0.0.0.0` and `::` are where it listens, not a name to use.
        if let Ok(n) = configured_name(&web.host) {
            match n.parse::<IpAddr>() {
                Ok(ip) if ip.is_unspecified() => {}
                Ok(ip) => ips.push(ip),
                Err(_) => names.push(n),
            }
        }
        if let Some(m) = dns_name(machine) {
            let short = m.split('.').next().unwrap_or(&m).to_string();
            names.push(format!("{short}.local"));
            names.push(short);
            names.push(m);
        }
        for n in &web.allowed_hosts {
            match n.parse::<IpAddr>() {
                Ok(ip) => ips.push(ip),
                Err(_) => names.push(n.clone()),
            }
        }
        names.dedup();
        Allowed { names, ips }
    }

    /// Whether a request for `authority` (the `Host` header, or the
    /// request target's authority), arrived on `local`, is served.
    pub fn check(&self, authority: &str, local: IpAddr) -> Result<(), Refusal> {
        let canonical = |ip: IpAddr| match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match parse_authority(authority).ok_or(Refusal::Malformed)? {
            Target::Ip(ip) => {
                let ip = canonical(ip);
                let ours = ip.is_loopback()
                    || ip == canonical(local)
                    || self.ips.iter().any(|a| canonical(*a) == ip);
                if ours { Ok(()) } else { Err(Refusal::Unknown) }
            }
            Target::Name(n) => {
                if self.names.contains(&n) {
                    Ok(())
                } else {
                    Err(Refusal::Unknown)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    fn web(host: &str, allowed: &[&str]) -> WebSettings {
        WebSettings {
            host: host.into(),
            port: 8740,
            idle_exit: Duration::from_secs(120),
            user: "admin".into(),
            password_file: PathBuf::from("/dev/null"),
            allowed_hosts: allowed
                .iter()
                .map(|a| configured_name(a).unwrap())
                .collect(),
        }
    }

    #[test]
    fn loopback_its_names_and_its_own_address_are_served() {
        let a = Allowed::new(&web("0.0.0.0", &["Pi.Example.org."]), "kitchen");
        let lan: IpAddr = "192.168.1.20".parse().unwrap();
        for ok in [
            "localhost",
            "LOCALHOST:8740",
            "localhost.",
            "127.0.0.1",
            "127.0.0.1:8740",
            "127.1.2.3",
            "[::1]",
            "[::1]:8740",
            "192.168.1.20:8740",
            "kitchen",
            "kitchen.local:8740",
            "Kitchen.Local.",
            "pi.example.org",
            "PI.EXAMPLE.ORG:443",
        ] {
            assert_eq!(a.check(ok, lan), Ok(()), "{ok}");
        }
        // A dual-stack socket sees an IPv4 visitor as ::ffff:a.b.c.d.
        let mapped: IpAddr = "::ffff:192.168.1.20".parse().unwrap();
        assert_eq!(a.check("192.168.1.20", mapped), Ok(()));
    }

    #[test]
    fn other_names_and_addresses_are_refused() {
        let a = Allowed::new(&web("127.0.0.1", &[]), "kitchen");
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        for unknown in [
            "evil.example",
            "evil.example:8740",
            "localhost.evil.example",
            "kitchen.evil.example",
            "192.168.1.99",
            "[2001:db8::1]:8740",
            "0.0.0.0",
        ] {
            assert_eq!(a.check(unknown, lo), Err(Refusal::Unknown), "{unknown}");
        }
        for malformed in [
            "",
            ":8740",
            "::1",
            "[::1",
            "[::1]x",
            "localhost:80a",
            "user@localhost",
            "local host",
            "localhost/x",
            "[fe80::1%eth0]",
        ] {
            assert_eq!(
                a.check(malformed, lo),
                Err(Refusal::Malformed),
                "{malformed}"
            );
        }
    }

    #[test]
    fn configured_names_are_names_or_addresses() {
        assert_eq!(
            configured_name("Pi.Example.ORG.").unwrap(),
            "pi.example.org"
        );
        assert_eq!(configured_name("[::1]").unwrap(), "::1");
        assert_eq!(configured_name("10.0.0.7").unwrap(), "10.0.0.7");
        for bad in [
            "",
            "pi.example.org:443",
            "https://pi.example.org",
            "a b",
            "-x.org",
            "x..org",
        ] {
            assert!(configured_name(bad).is_err(), "{bad}");
        }
    }
}
