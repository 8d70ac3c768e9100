//! `pimainteno watch` / `unwatch` / `check-config` / `status` on unit names
//! as systemd checks them: a name systemd would refuse (or whose handler
//! `pm-onfailure@<unit>.service` it would refuse) is refused before anything
//! is written; a template watches its instances; a bad name written into the
//! configuration by hand is reported, and leaves the other units watched.

mod common;

use common::admin;
use std::path::{Path, PathBuf};

/// A configuration with its store in `dir` and `extra` appended.
fn config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("pimainteno.toml");
    std::fs::write(
        &path,
        format!(
            "[cache]\npath = \"{}\"\n\n{extra}",
            dir.join("store").display()
        ),
    )
    .unwrap();
    path
}

/// A unit name of exactly `len` characters.
fn of_len(len: usize) -> String {
    format!("{}.service", "a".repeat(len - ".service".len()))
}

#[test]
fn watch_refuses_a_name_systemd_would_refuse_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "");
    let conf_d = dir.path().join("conf.d");
    for (unit, needle) in [
        (
            of_len(254),
            "254 characters; a watched unit's name may have at most 234 (systemd's limit of 255 for pm-onfailure@<unit>.service)",
        ),
        (
            of_len(235),
            "235 characters; a watched unit's name may have at most 234",
        ),
        (
            of_len(256),
            "256 characters; systemd's limit for a unit name is 255",
        ),
        (
            "not a unit!".into(),
            "\"not a unit!\" is not a unit name: ' ' is not allowed",
        ),
        ("nginx.conf".into(), "\".conf\" is not a unit type"),
        ("@x.service".into(), "nothing before '@'"),
        (
            "pm-onfailure@x.service".into(),
            "pm-onfailure does not watch itself",
        ),
    ] {
        let (code, out, err) = admin(&config, &["watch", &unit, "--no-reload"]);
        assert_eq!(code, 78, "{unit}: {err}");
        assert!(err.contains(needle), "{unit}: {err}");
        assert!(out.is_empty(), "{unit}: {out}");
        assert!(!conf_d.exists(), "{unit}: nothing is written");
    }

    // The longest name whose handler systemd still takes.
    let longest = of_len(234);
    let (code, out, err) = admin(&config, &["watch", &longest, "--no-reload"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("{longest}: watched")), "{out}");
    let (code, _, err) = admin(&config, &["check-config"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_template_watches_its_instances() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "");
    let fragment = dir.path().join("conf.d/90-watch.toml");

    let (code, out, err) = admin(&config, &["watch", "worker@", "--no-reload"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("worker@.service: watched"), "{out}");
    assert!(out.contains("each of its instances is watched"), "{out}");
    let text = std::fs::read_to_string(&fragment).unwrap();
    assert!(text.contains("units = [\"worker@.service\"]"), "{text}");

    // An instance is watched already: nothing is added.
    let (code, out, _) = admin(&config, &["watch", "worker@1.service", "--no-reload"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("worker@1.service is already watched (as an instance of worker@.service)"),
        "{out}"
    );
    assert_eq!(std::fs::read_to_string(&fragment).unwrap(), text);

    // Status lists the template; an instance cannot be unwatched alone.
    let (code, status, err) = admin(&config, &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        status.contains("worker@.service: a template, each instance is watched"),
        "{status}"
    );
    let (code, _, err) = admin(&config, &["unwatch", "worker@1.service", "--no-reload"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("watched as an instance of the template worker@.service")
            && err.contains("pimainteno unwatch worker@.service"),
        "{err}"
    );
    let (code, out, err) = admin(&config, &["unwatch", "worker@.service", "--no-reload"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no longer watched"), "{out}");
    assert!(!fragment.exists());
}

#[test]
fn a_bad_name_by_hand_is_reported_and_the_others_stay_watched() {
    let dir = tempfile::tempdir().unwrap();
    let long = of_len(254);
    let config = config(
        dir.path(),
        &format!("[systemd_monitor]\nunits = [\"nginx\", \"{long}\", \"bad name\"]\n"),
    );

    // check-config fails on it, saying where and why.
    let (code, out, err) = admin(&config, &["check-config"]);
    assert_eq!(code, 78, "{err}");
    assert!(out.is_empty(), "{out}");
    let at = format!("{}:5: [systemd_monitor] units: ", config.display());
    for needle in [
        "254 characters; a watched unit's name may have at most 234",
        "\"bad name\" is not a unit name",
    ] {
        let line = err
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle}: {err}"));
        assert!(line.starts_with(&format!("error: {at}")), "{line}");
        assert!(
            line.ends_with("this unit is not watched until it is fixed"),
            "{line}"
        );
    }

    // Everything else works without it, and says so.
    let (code, status, err) = admin(&config, &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(status.contains("watched units: 1"), "{status}");
    assert!(status.contains("nginx.service"), "{status}");
    assert!(
        status.contains("not watched (systemd refuses the name): ")
            && status.contains("\"bad name\" is not a unit name"),
        "{status}"
    );
    let (code, out, err) = admin(&config, &["watch", "redis", "--no-reload"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("redis.service: watched"), "{out}");
    assert!(
        err.contains("warning: ") && err.contains("\"bad name\""),
        "{err}"
    );

    // A bad name put into watch's own fragment by hand is taken out by its text.
    let fragment = dir.path().join("conf.d/90-watch.toml");
    std::fs::write(
        &fragment,
        "[systemd_monitor]\nunits = [\"redis.service\", \"oops name\"]\n",
    )
    .unwrap();
    let (code, out, err) = admin(&config, &["unwatch", "oops name", "--no-reload"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("oops name: no longer watched"), "{out}");
    let text = std::fs::read_to_string(&fragment).unwrap();
    assert!(text.contains("units = [\"redis.service\"]"), "{text}");
}
