//! Unit states from systemd, through `systemctl`.
//!
//! `systemctl show` asks systemd for every property of each unit, and for a
//! running service that means reading its cgroup's counters: milliseconds per
//! unit. `list-units` asks only for the states, for all the units in one
//! call, and the timer's times come from one `show` of the timer (no cgroup).
//! Both processes run at once. (In-process sd-bus was tried: it loads
//! libsystemd and its compression and crypto libraries into the dashboard,
//! 1.6 MiB more resident memory.)

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};

/// What the dashboard shows of one unit. Fields systemd did not give are
/// `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Props {
    pub load: Option<String>,
    pub active: Option<String>,
    pub sub: Option<String>,
    /// Timers: `enabled`, `disabled`...
    pub unit_file: Option<String>,
    /// Timers: realtime, ms since the epoch. The last is `LastTriggerUSec`,
    /// what `systemctl list-timers` shows as LAST: kept across reboots
    /// (`Persistent=true`), where the service's `ExecMainStartTimestamp`
    /// is gone after one, and it is the schedule's run, not a start by hand.
    pub last_trigger_ms: Option<u64>,
    pub next_elapse_ms: Option<u64>,
}

fn spawn(args: &[&str]) -> Option<Child> {
    Command::new("systemctl")
        .args(args)
        // `systemctl show` prints times in the local zone, whose name
        // (CET, CEST...) cannot be read back: in UTC it can.
        .env("TZ", "UTC")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

fn stdout(child: Option<Child>) -> Option<String> {
    let out = child?.wait_with_output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Each unit's state by name, and `timer`'s times. Empty when systemd
/// cannot be asked (not booted with systemd, no D-Bus for this account).
pub fn states(units: &[&str], timer: Option<&str>) -> HashMap<String, Props> {
    let list = (!units.is_empty()).then(|| {
        let mut args = vec![
            "list-units",
            "--all",
            "--plain",
            "--no-legend",
            "--full",
            "--",
        ];
        args.extend_from_slice(units);
        spawn(&args)
    });
    let show = timer.map(|t| {
        // Not `--timestamp=unix`: systemd 252 (bookworm) takes it, but
        // `show` ignores it for properties and prints
        // `Thu 2026-12-03 03:15:27 UTC`; before 251 it is an error.
        spawn(&[
            "show",
            "-p",
            "Id,LoadState,ActiveState,SubState,UnitFileState,LastTriggerUSec,NextElapseUSecRealtime",
            "--",
            t,
        ])
    });
    let mut out = HashMap::new();
    if let Some(text) = list.and_then(stdout) {
        out.extend(parse_list(&text, units));
    }
    if let Some(text) = show.and_then(stdout)
        && let Some((id, p)) = parse_show(&text)
    {
        out.insert(id, p);
    }
    out
}

/// `UNIT LOAD ACTIVE SUB DESCRIPTION` lines (a failed unit may start with
/// `●`). A unit systemd did not list is not loaded: it exists and is
/// inactive (systemd unloads inactive units nothing refers to), or it does
/// not exist; a failed unit always stays loaded.
fn parse_list(text: &str, asked: &[&str]) -> HashMap<String, Props> {
    let mut out: HashMap<String, Props> = asked
        .iter()
        .map(|u| {
            let p = Props {
                load: Some("not-loaded".into()),
                active: Some("inactive".into()),
                sub: Some("dead".into()),
                ..Props::default()
            };
            (u.to_string(), p)
        })
        .collect();
    for line in text.lines() {
        let mut cols = line
            .split_whitespace()
            .skip_while(|c| *c == "●" || *c == "*");
        let (Some(unit), Some(load), Some(active), Some(sub)) =
            (cols.next(), cols.next(), cols.next(), cols.next())
        else {
            continue;
        };
        out.insert(
            unit.to_string(),
            Props {
                load: Some(load.into()),
                active: Some(active.into()),
                sub: Some(sub.into()),
                ..Props::default()
            },
        );
    }
    out
}

/// A time as `systemctl show` prints it with `TZ=UTC`: `Thu 2026-12-03
/// 03:15:27 UTC` (`.123456` after the seconds with `--timestamp=us`), or
/// `@1764230400` (`--timestamp=unix`) → milliseconds. `n/a`, empty, and
/// any other zone → `None`.
fn timestamp_ms(value: &str) -> Option<u64> {
    if let Some(secs) = value.strip_prefix('@') {
        let secs: f64 = secs.parse().ok()?;
        return (secs > 0.0).then_some((secs * 1000.0) as u64);
    }
    let mut words = value.split(' ');
    let (_weekday, date, clock, zone) =
        (words.next()?, words.next()?, words.next()?, words.next()?);
    if zone != "UTC" || words.next().is_some() {
        return None;
    }
    let num = |t: &str| -> Option<u32> {
        t.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| t.parse().ok())
            .flatten()
    };
    let mut ymd = date.split('-');
    let (y, m, d) = (num(ymd.next()?)?, num(ymd.next()?)?, num(ymd.next()?)?);
    let (clock, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut hms = clock.split(':');
    let (h, mi, sec) = (num(hms.next()?)?, num(hms.next()?)?, num(hms.next()?)?);
    if ymd.next().is_some()
        || hms.next().is_some()
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&d)
        || h > 23
        || mi > 59
        || sec > 60
    {
        return None;
    }
    let ms = match fraction {
        "" => 0,
        f => {
            num(f)?;
            format!("{f:0<3}")[..3].parse::<u64>().ok()?
        }
    };
    let days = crate::time::days_from_civil(i64::from(y), m, d);
    let secs = days * 86_400 + i64::from(h * 3600 + mi * 60 + sec);
    u64::try_from(secs)
        .ok()
        .filter(|s| *s > 0)
        .map(|s| s * 1000 + ms)
}

/// One unit's `Key=value` lines from `systemctl show`.
fn parse_show(text: &str) -> Option<(String, Props)> {
    let props: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    let get = |k: &str| {
        props
            .get(k)
            .map(|v| v.to_string())
            .filter(|v| !v.is_empty())
    };
    Some((
        get("Id")?,
        Props {
            load: get("LoadState"),
            active: get("ActiveState"),
            sub: get("SubState"),
            unit_file: get("UnitFileState"),
            last_trigger_ms: props.get("LastTriggerUSec").and_then(|v| timestamp_ms(v)),
            next_elapse_ms: props
                .get("NextElapseUSecRealtime")
                .and_then(|v| timestamp_ms(v)),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_units_have_their_states_and_the_others_are_not_loaded() {
        let text = "web.service loaded active running Web server\n\
                    ● crashy.service loaded failed failed Crashy\n\
                    gone.service not-found inactive dead gone.service\n";
        let s = parse_list(
            text,
            &[
                "web.service",
                "crashy.service",
                "gone.service",
                "idle.service",
            ],
        );
        let state = |u: &str| {
            let p = &s[u];
            (
                p.load.clone().unwrap(),
                p.active.clone().unwrap(),
                p.sub.clone().unwrap(),
            )
        };
        assert_eq!(
            state("web.service"),
            ("loaded".into(), "active".into(), "running".into())
        );
        assert_eq!(
            state("crashy.service"),
            ("loaded".into(), "failed".into(), "failed".into())
        );
        assert_eq!(
            state("gone.service"),
            ("not-found".into(), "inactive".into(), "dead".into())
        );
        assert_eq!(
            state("idle.service"),
            ("not-loaded".into(), "inactive".into(), "dead".into())
        );
    }

    /// What systemd 252 (Debian 12) prints for an enabled timer that ran
    /// (`TZ=UTC systemctl show -p ... pimainteno.timer`, recorded in the
    /// system tests' container).
    #[test]
    fn systemd_252_times_are_read() {
        let (_, p) = parse_show(
            "Id=pimainteno.timer\nLoadState=loaded\nActiveState=active\nSubState=waiting\nUnitFileState=enabled\nLastTriggerUSec=Wed 2026-12-02 03:21:09 UTC\nNextElapseUSecRealtime=Thu 2026-12-03 03:15:27 UTC\n",
        )
        .unwrap();
        // `date -u -d '2026-12-03 03:15:27' +%s` = 1796267727
        assert_eq!(p.next_elapse_ms, Some(1_796_267_727_000));
        assert_eq!(p.last_trigger_ms, Some(1_796_181_669_000));
        assert_eq!(
            timestamp_ms("Thu 2026-12-03 03:15:27.250000 UTC"),
            Some(1_796_267_727_250)
        );
        // A zone we cannot convert is no time rather than a wrong one.
        for unreadable in [
            "Thu 2026-12-03 03:15:27 CET",
            "Thu 2026-12-03 03:15:27",
            "Thu 2026-13-03 03:15:27 UTC",
            "Thu 2026-12-03 3:15 UTC",
            "n/a",
            "",
            "0",
        ] {
            assert_eq!(timestamp_ms(unreadable), None, "{unreadable}");
        }
    }

    #[test]
    fn a_timer_shows_its_times_and_never_is_none() {
        let (id, p) = parse_show(
            "Id=pimainteno.timer\nLoadState=loaded\nActiveState=active\nSubState=waiting\nUnitFileState=enabled\nLastTriggerUSec=@1795732472\nNextElapseUSecRealtime=@1795818872\n",
        )
        .unwrap();
        assert_eq!(id, "pimainteno.timer");
        assert_eq!(p.last_trigger_ms, Some(1_795_732_472_000));
        assert_eq!(p.next_elapse_ms, Some(1_795_818_872_000));
        assert_eq!(p.unit_file.as_deref(), Some("enabled"));
        let (_, never) = parse_show(
            "Id=pimainteno.timer\nActiveState=inactive\nLastTriggerUSec=n/a\nNextElapseUSecRealtime=\n",
        )
        .unwrap();
        assert_eq!((never.last_trigger_ms, never.next_elapse_ms), (None, None));
    }
}
