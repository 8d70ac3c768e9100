//! pm-onfailure on evidence recorded from real units in a booted bookworm
//! container (`tests/fixtures/onfailure/`, README there): the analyzers on
//! every recorded failure, then the handling (record, signature cache,
//! repair limits, LLM diagnosis and its validation, pending work) on a real
//! LMDB store, with the openai provider against the in-test HTTP server.

mod common;
mod openai_server;

use common::admin;
use std::path::{Path, PathBuf};

use common::run_dir;
use openai_server::{Server, Step};
use pimainteno::config::{LoadOptions, Settings};
use pimainteno::onfailure::analyzers::{self, Action, Input};
use pimainteno::onfailure::evidence::{self, Excerpt, Journals, Monitor, UnitFacts};
use pimainteno::onfailure::repair::Step as RepairStep;
use pimainteno::onfailure::{Handler, explain, handle_failure, note_outcome, signature};
use pimainteno::store::Store;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onfailure")
}

/// A recorded failure: `$MONITOR_*`, the unit's properties, its journal.
struct Recorded {
    monitor: Monitor,
    facts: UnitFacts,
    excerpt: Excerpt,
}

fn recorded(case: &str) -> Recorded {
    let read = |ext: &str| {
        std::fs::read_to_string(fixtures().join(format!("{case}.{ext}")))
            .unwrap_or_else(|e| panic!("{case}.{ext}: {e}"))
    };
    let env = read("env");
    let var = |name: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .map(str::to_string)
    };
    Recorded {
        monitor: Monitor {
            unit: var("MONITOR_UNIT").expect("MONITOR_UNIT"),
            result: var("MONITOR_SERVICE_RESULT").expect("MONITOR_SERVICE_RESULT"),
            exit_code: var("MONITOR_EXIT_CODE"),
            exit_status: var("MONITOR_EXIT_STATUS"),
            invocation_id: var("MONITOR_INVOCATION_ID"),
        },
        facts: UnitFacts::parse(&read("props")),
        excerpt: Excerpt::from_export(&read("journal.json")).unwrap(),
    }
}

fn analyze(case: &str, patchable: bool) -> analyzers::Finding {
    let r = recorded(case);
    analyzers::analyze(&Input {
        monitor: &r.monitor,
        excerpt: &r.excerpt,
        facts: &r.facts,
        patchable,
    })
}

#[test]
fn the_recorded_journals_are_read_whole() {
    let r = recorded("exit_status");
    let shown = r.excerpt.display();
    assert!(
        shown.iter().any(|l| l.ends_with(
            "weather-sync[77]: error: cannot read /etc/weather/config.toml: expected `=` at line 3"
        )),
        "{shown:#?}"
    );
    // The manager's lines about the run are there too, marked as such.
    assert!(
        r.excerpt
            .lines
            .iter()
            .any(|l| l.from_manager && l.message.contains("Failed with result 'exit-code'"))
    );
    assert_eq!(r.monitor.exit_status.as_deref(), Some("3"));
    assert_eq!(
        r.facts.exec_start.as_deref(),
        Some("/usr/local/bin/weather-sync")
    );
}

#[test]
fn every_recorded_failure_gets_its_analyzer() {
    // (case, kind, action when the unit's project does not patch)
    let cases = [
        ("exec_203", "exec", Action::None),
        ("user_217", "user", Action::None),
        ("namespace_226", "namespace", Action::None),
        ("signal", "signal", Action::Restart),
        ("start_limit_hit", "start_limit", Action::Restart),
        ("start_limit_hit_clean_exit", "start_limit", Action::Restart),
        ("timeout", "timeout", Action::Restart),
        ("address_in_use", "address_in_use", Action::Restart),
        // The unit's own words name the cause, but only systemd's word or
        // the exit status may stop a restart.
        ("permission_denied", "permission", Action::Restart),
        ("no_such_file", "no_such_file", Action::Restart),
        ("connection_refused", "connection_refused", Action::Restart),
        ("dependency_failed", "dependency", Action::None),
        ("disk_full", "disk_full", Action::Restart),
        ("python_traceback", "python", Action::Restart),
        ("rust_panic", "rust_panic", Action::Restart),
        ("exit_status", "exit_status", Action::Restart),
        ("injection", "exit_status", Action::Restart),
        // Services with User=pi: their output is in user-1000.journal.
        ("as_user_python_nan", "python", Action::Restart),
        ("as_user_python_value", "python", Action::Restart),
        ("as_user_rust_panic", "rust_panic", Action::Restart),
        ("as_user_shell_error", "exit_status", Action::Restart),
    ];
    let mut wrong = Vec::new();
    for (case, kind, action) in cases {
        let f = analyze(case, false);
        if f.kind != kind || f.action != action {
            wrong.push(format!(
                "{case}: got {} / {:?} ({}), want {kind} / {action:?}",
                f.kind, f.action, f.cause
            ));
        }
        if kind != "exit_status" && f.evidence.is_empty() {
            wrong.push(format!("{case}: no evidence line for {}", f.kind));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn code_errors_go_to_pm_patch_when_the_project_patches() {
    for case in ["python_traceback", "rust_panic"] {
        assert_eq!(analyze(case, true).action, Action::Patch, "{case}");
    }
    let py = analyze("python_traceback", true);
    assert!(py.cause.contains("KeyError"), "{}", py.cause);
    let rs = analyze("rust_panic", false);
    assert!(
        rs.cause.contains("called `Result::unwrap()`"),
        "{}",
        rs.cause
    );
    let exec = analyze("exec_203", false);
    assert!(exec.cause.contains("203/EXEC"), "{}", exec.cause);
}

#[test]
fn a_user_services_own_words_name_its_failure() {
    for (case, words) in [
        (
            "as_user_python_nan",
            "RuntimeError: sensor returned NaN (File \"/usr/local/bin/weather-station\", line 14, in read_temperature)",
        ),
        (
            "as_user_python_value",
            "ValueError: could not convert string to float: 'ERR'",
        ),
        (
            "as_user_rust_panic",
            "called `Result::unwrap()` on an `Err` value",
        ),
        (
            "as_user_shell_error",
            "after reporting: backup-photos: cannot write /home/pi/usb-backup/2026-11: Read-only file system",
        ),
    ] {
        let cause = analyze(case, false).cause;
        assert!(cause.contains(words), "{case}: {cause}");
    }
}

#[test]
fn a_user_services_signature_depends_on_its_error() {
    let sig = |case: &str| {
        let r = recorded(case);
        signature::of(&r.monitor, &r.excerpt)
    };
    let nan = sig("as_user_python_nan");
    let value = sig("as_user_python_value");
    // Same unit, same exit status 1: only the program's words differ.
    assert_eq!(
        recorded("as_user_python_nan").monitor.exit_status,
        recorded("as_user_python_value").monitor.exit_status
    );
    assert_ne!(nan.key, value.key);
    assert!(
        nan.lines
            .iter()
            .any(|l| l == "RuntimeError: sensor returned NaN"),
        "{:#?}",
        nan.lines
    );
    // The same failure again (another run, PID and time; the runtime
    // journal this time): the same signature.
    assert_eq!(sig("as_user_python_nan_volatile").key, nan.key);
}

/// systemd-journal-remote, which writes real journal files from journal
/// export data (Debian package systemd-journal-remote).
fn journal_remote() -> PathBuf {
    ["/usr/lib/systemd", "/lib/systemd"]
        .iter()
        .map(|d| Path::new(d).join("systemd-journal-remote"))
        .find(|p| p.exists())
        .expect(
            "systemd-journal-remote is missing; install it: sudo apt-get install systemd-journal-remote",
        )
}

/// The journal export format of one recorded entry (`journalctl -o
/// export`): `NAME=value`, or the name, a little-endian length and the
/// bytes for a value with a newline; a blank line ends the entry.
fn export_entry(entry: &serde_json::Map<String, serde_json::Value>, out: &mut Vec<u8>) {
    for (name, value) in entry {
        // Cursors and sequence numbers are the writer's own.
        if name.starts_with("__")
            && name != "__REALTIME_TIMESTAMP"
            && name != "__MONOTONIC_TIMESTAMP"
        {
            continue;
        }
        let bytes: Vec<u8> = match value {
            serde_json::Value::String(s) => s.clone().into_bytes(),
            serde_json::Value::Array(a) => a.iter().map(|b| b.as_u64().unwrap() as u8).collect(),
            _ => continue,
        };
        out.extend_from_slice(name.as_bytes());
        if bytes.contains(&b'\n') {
            out.push(b'\n');
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        } else {
            out.push(b'=');
        }
        out.extend_from_slice(&bytes);
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// A journal directory holding the recorded entries of `cases`, split the
/// way journald splits a persistent journal (`SplitMode=uid`): the lines of
/// a uid ≥ 1000 in `user-<uid>.journal`, the rest in `system.journal`.
/// Written by systemd-journal-remote, so that sd-journal reads real files.
/// `extra` entries (JSON objects) are added to the recorded ones.
fn journal_dir(parent: &Path, cases: &[&str], extra: &[serde_json::Value]) -> PathBuf {
    let dir = parent.join("journal");
    std::fs::create_dir_all(&dir).unwrap();
    let mut files: std::collections::BTreeMap<String, Vec<(u64, serde_json::Map<_, _>)>> =
        Default::default();
    let mut lines: Vec<String> = Vec::new();
    for case in cases {
        let text =
            std::fs::read_to_string(fixtures().join(format!("{case}.journal.json"))).unwrap();
        lines.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(String::from),
        );
    }
    lines.extend(extra.iter().map(|e| e.to_string()));
    {
        for line in &lines {
            let entry: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(line).unwrap();
            let field = |n: &str| entry[n].as_str().unwrap().parse::<u64>().unwrap();
            let uid = field("_UID");
            let file = if uid >= 1000 && uid != 65534 {
                format!("user-{uid}.journal")
            } else {
                "system.journal".into()
            };
            let time = field("__REALTIME_TIMESTAMP");
            files.entry(file).or_default().push((time, entry));
        }
    }
    for (file, mut entries) in files {
        entries.sort_by_key(|(t, _)| *t);
        let mut export = Vec::new();
        for (_, e) in &entries {
            export_entry(e, &mut export);
        }
        let input = parent.join(format!("{file}.export"));
        std::fs::write(&input, export).unwrap();
        let out = std::process::Command::new(journal_remote())
            .arg("--split-mode=none")
            .arg(format!("--output={}", dir.join(&file).display()))
            .arg(&input)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "systemd-journal-remote: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dir
}

/// What the handler's reader (sd-journal) finds in `dir` of the recorded
/// run `case`.
fn read_back(dir: &Path, case: &str) -> Excerpt {
    let r = recorded(case);
    evidence::read_journal_in(
        Journals::Directory(dir),
        &r.monitor.unit,
        r.monitor.invocation_id.as_deref(),
    )
    .unwrap()
}

#[test]
fn a_user_services_output_is_read_from_its_own_journal_file() {
    let cases = [
        "as_user_python_nan",
        "as_user_python_value",
        "as_user_shell_error",
        "as_user_rust_panic",
    ];
    let tmp = tempfile::tempdir().unwrap();
    let dir = journal_dir(tmp.path(), &cases, &[]);
    assert!(dir.join("user-1000.journal").exists());
    assert!(dir.join("system.journal").exists());
    for case in cases {
        let read = read_back(&dir, case);
        // Exactly what `journalctl` as root recorded of that run: the
        // manager's lines from system.journal, the program's from
        // user-1000.journal (weatherd's in as_user_rust_panic without an
        // invocation id: found by unit within the run's span, in their
        // order though they share one timestamp), and nothing of the other
        // runs of the same unit.
        assert_eq!(read.display(), recorded(case).excerpt.display(), "{case}");
        assert!(read.lines.iter().any(|l| !l.from_manager), "{case}");
    }
    let nan = read_back(&dir, "as_user_python_nan").display().join("\n");
    assert!(nan.contains("RuntimeError: sensor returned NaN"), "{nan}");
    assert!(!nan.contains("ValueError"), "{nan}");
}

/// A line any local user could have logged about the run of
/// `no_such_file`: `logger --journald` lets a client set every field that
/// does not start with `_`, so journald stamps its own `_PID` and `_UID`.
fn forged(message: &str, extra: &[(&str, &str)]) -> serde_json::Value {
    let r = recorded("no_such_file");
    let start: u64 = std::fs::read_to_string(fixtures().join("no_such_file.journal.json"))
        .unwrap()
        .lines()
        .next()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["__REALTIME_TIMESTAMP"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .unwrap();
    let mut e = serde_json::json!({
        "MESSAGE": message,
        "INVOCATION_ID": r.monitor.invocation_id.clone().unwrap(),
        "UNIT": r.monitor.unit,
        "SYSLOG_IDENTIFIER": "systemd",
        "PRIORITY": "3",
        "_PID": "4242",
        "_UID": "65534",
        "_GID": "65534",
        "_COMM": "logger",
        "_BOOT_ID": "0123456789abcdef0123456789abcdef",
        "__REALTIME_TIMESTAMP": (start + 1000).to_string(),
        "__MONOTONIC_TIMESTAMP": "5000000",
    });
    for (k, v) in extra {
        e[*k] = serde_json::Value::String(v.to_string());
    }
    e
}

#[test]
fn lines_a_client_can_forge_are_never_evidence() {
    let tmp = tempfile::tempdir().unwrap();
    let unit = recorded("no_such_file").monitor.unit;
    let dir = journal_dir(
        tmp.path(),
        &["no_such_file"],
        &[
            forged(&format!("Dependency failed for {unit}."), &[]),
            // The manager's "failed with result" message id, claimed by a
            // client, does not end the wait for the real one either.
            forged(
                &format!("{unit}: Failed with result 'dependency'."),
                &[("MESSAGE_ID", "d9b373ed55a64feb8242e02dbe79a49c")],
            ),
        ],
    );
    let read = read_back(&dir, "no_such_file");
    let shown = read.display().join("\n");
    assert!(!shown.contains("Dependency failed"), "{shown}");
    assert!(!shown.contains("'dependency'"), "{shown}");
    // What was recorded of the run is all there, PID 1's lines as such.
    assert_eq!(
        read.display(),
        recorded("no_such_file").excerpt.display(),
        "{shown}"
    );
    assert!(read.lines.iter().any(|l| l.from_manager));

    // Without an invocation id (a dependency's failure passes none) the
    // unit's lines are read by unit: a forged UNIT= line is not one.
    let recent = evidence::read_journal_in(Journals::Directory(&dir), &unit, None).unwrap();
    assert!(
        !recent.display().join("\n").contains("Dependency failed"),
        "{:#?}",
        recent.display()
    );
}

/// An excerpt of the unit's own lines (`exe` printed them) then systemd's
/// two lines about the exit.
fn excerpt(exe: &str, own: &[&str], unit: &str, status: &str) -> Excerpt {
    let line = |i: usize, pid: u32, exe: &str, message: String| evidence::JournalLine {
        time_us: 1_000_000 + i as u64,
        pid: Some(pid),
        ident: exe.rsplit('/').next().unwrap().into(),
        message,
        priority: None,
        from_manager: pid == 1,
        exe: Some(exe.into()),
    };
    let mut lines: Vec<_> = own
        .iter()
        .enumerate()
        .map(|(i, m)| line(i, 77, exe, m.to_string()))
        .collect();
    lines.push(line(
        90,
        1,
        "/usr/lib/systemd/systemd",
        format!("{unit}: Main process exited, code=exited, status={status}"),
    ));
    lines.push(line(
        91,
        1,
        "/usr/lib/systemd/systemd",
        format!("{unit}: Failed with result 'exit-code'."),
    ));
    Excerpt {
        lines,
        truncated: false,
    }
}

fn analyze_excerpt(excerpt: &Excerpt, status: &str) -> analyzers::Finding {
    analyzers::analyze(&Input {
        monitor: &Monitor {
            unit: "app.service".into(),
            result: "exit-code".into(),
            exit_code: Some("exited".into()),
            exit_status: Some(status.into()),
            invocation_id: None,
        },
        excerpt,
        facts: &UnitFacts::default(),
        patchable: false,
    })
}

#[test]
fn the_units_own_words_inform_but_never_veto_a_restart() {
    // A harmless line early on, then a transient crash.
    let harmless = excerpt(
        "/usr/bin/app",
        &[
            "config.yaml: No such file or directory; using defaults",
            "listening on :8080",
            "serving",
            "upstream reset the connection",
            "worker 1 stopped",
            "worker 2 stopped",
            "fatal: lost the upstream",
        ],
        "app.service",
        "1/FAILURE",
    );
    let f = analyze_excerpt(&harmless, "1");
    assert_eq!(f.action, Action::Restart, "{f:?}");
    assert_ne!(f.kind, "no_such_file", "{f:?}");

    // The unit's last words name a missing file: the cause, but still a
    // restart; with a sysexits status that says "configuration", no restart.
    let missing = excerpt(
        "/usr/bin/app",
        &["cannot open /etc/app.conf: No such file or directory"],
        "app.service",
        "1/FAILURE",
    );
    let f = analyze_excerpt(&missing, "1");
    assert_eq!(
        (f.kind, f.action),
        ("no_such_file", Action::Restart),
        "{f:?}"
    );
    let f = analyze_excerpt(&missing, "78");
    assert_eq!((f.kind, f.action), ("no_such_file", Action::None), "{f:?}");

    // The unit printing systemd's words is not systemd.
    let says_dependency = excerpt(
        "/usr/bin/app",
        &["Dependency failed for app.service."],
        "app.service",
        "1/FAILURE",
    );
    let f = analyze_excerpt(&says_dependency, "1");
    assert_ne!(f.kind, "dependency", "{f:?}");
    assert_eq!(f.action, Action::Restart);
}

#[test]
fn a_language_error_counts_only_from_that_languages_program() {
    let traceback = [
        "Traceback (most recent call last):",
        "  File \"/srv/app.py\", line 3, in <module>",
        "ValueError: bad reading",
    ];
    let from_python = excerpt(
        "/usr/bin/python3.11",
        &traceback,
        "app.service",
        "1/FAILURE",
    );
    assert_eq!(analyze_excerpt(&from_python, "1").kind, "python");
    let from_shell = excerpt("/usr/bin/bash", &traceback, "app.service", "1/FAILURE");
    let f = analyze_excerpt(&from_shell, "1");
    assert_ne!(f.kind, "python", "{f:?}");
    // A process that exited before journald could read its _EXE: the
    // interpreter of the script ExecStart= runs says who it was.
    let mut gone = from_python.clone();
    for l in gone.lines.iter_mut().filter(|l| !l.from_manager) {
        l.exe = None;
    }
    let with = |interpreter: &str| {
        analyzers::analyze(&Input {
            monitor: &Monitor {
                unit: "app.service".into(),
                result: "exit-code".into(),
                exit_code: Some("exited".into()),
                exit_status: Some("1".into()),
                invocation_id: None,
            },
            excerpt: &gone,
            facts: &UnitFacts {
                exec_start: Some("/usr/local/bin/app".into()),
                interpreter: Some(interpreter.into()),
                ..UnitFacts::default()
            },
            patchable: false,
        })
        .kind
    };
    assert_eq!(with("python3"), "python");
    assert_ne!(with("sh"), "python");

    let panic = [
        "thread 'main' panicked at src/main.rs:3:5:",
        "called `Option::unwrap()` on a `None` value",
    ];
    assert_eq!(
        analyze_excerpt(
            &excerpt("/usr/local/bin/weatherd", &panic, "app.service", "101"),
            "101"
        )
        .kind,
        "rust_panic"
    );
    assert_ne!(
        analyze_excerpt(
            &excerpt("/usr/bin/dash", &panic, "app.service", "101"),
            "101"
        )
        .kind,
        "rust_panic"
    );
}

/// The model's fix of the weather station's project, whose check fails
/// while `sensor.txt` says `nan`, as the service does.
const SENSOR_FIX: &str =
    "```diff\n--- a/sensor.txt\n+++ b/sensor.txt\n@@ -1 +1 @@\n-nan\n+21.5\n```\n";

#[test]
fn a_user_services_traceback_reaches_the_llm_the_record_and_pm_patch() {
    let diagnosis = r#"{"cause":"read_temperature raises on a NaN reading instead of retrying.","confidence":0.8,"evidence":["RuntimeError: sensor returned NaN"],"action":"patch"}"#;
    let other = r#"{"cause":"the sensor file holds ERR.","confidence":0.7,"evidence":["ValueError: could not convert string to float: 'ERR'"],"action":"restart"}"#;
    let server = Server::start(vec![
        Step::answer(diagnosis),
        Step::answer(other),
        Step::answer(SENSOR_FIX),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let project = common::repo_with(
        tmp.path(),
        "weather",
        &[
            ("sensor.txt", "nan\n"),
            (
                "test.sh",
                "grep -qx nan sensor.txt && { echo 'FAIL: the sensor reads NaN'; exit 1; }\necho ok\n",
            ),
        ],
    );
    let extra = format!(
        "\n[[project]]\nname = \"weather\"\npath = \"{}\"\nsummary_file = \"\"\ncheck = \"sh test.sh\"\n\
         patch = \"branch\"\nunits = [\"pmfx-as_user_weather.service\"]\n",
        project.display()
    );
    let s = settings(
        tmp.path(),
        &format!("{}\nretries = 0", openai(&server)),
        &extra,
    );
    let dir = journal_dir(
        tmp.path(),
        &[
            "as_user_python_nan",
            "as_user_python_value",
            "as_user_python_nan_volatile",
        ],
        &[],
    );
    // Step 1 and 3 of the handler on what sd-journal reads from the files.
    let handle_read = |store: &Store, case: &str| {
        let r = recorded(case);
        let d = handle_failure(
            &Handler::new(&s, store, &run_dir(&s)),
            &r.monitor,
            &r.facts,
            read_back(&dir, case),
            &[],
        )
        .unwrap();
        let handoff = explain(&Handler::new(&s, store, &run_dir(&s)), &d).unwrap();
        (store.failure(&d.failure).unwrap().unwrap(), handoff)
    };
    let store = Store::open(&s.cache).unwrap();
    let (nan, handoff) = handle_read(&store, "as_user_python_nan");
    // The record: the traceback, the Python analyzer's kind, the model's
    // diagnosis resting on the exception line.
    assert!(
        nan.journal
            .iter()
            .any(|l| l.ends_with("weather-station[69]: RuntimeError: sensor returned NaN")),
        "{:#?}",
        nan.journal
    );
    assert!(
        nan.journal
            .iter()
            .any(|l| l.contains("raise RuntimeError(\"sensor returned NaN\")"))
    );
    assert_eq!(nan.diagnosis.kind, "python");
    assert_eq!(nan.diagnosis.source, "llm");
    assert_eq!(nan.diagnosis.action, "patch");
    assert!(nan.diagnosis.evidence[0].ends_with("RuntimeError: sensor returned NaN"));
    // The prompt held the program's own lines.
    let prompt = server.seen()[0].json()["messages"][1]["content"]
        .as_str()
        .unwrap()
        .to_string();
    for want in [
        "Traceback (most recent call last):",
        "line 14, in read_temperature",
        "RuntimeError: sensor returned NaN",
    ] {
        assert!(
            prompt.contains(want),
            "{want:?} not in the prompt:\n{prompt}"
        );
    }
    assert_eq!(handoff.as_deref(), Some("weather"));

    // Another Python error of the same unit (same exit status): another
    // signature, another question to the model.
    let (value, _) = handle_read(&store, "as_user_python_value");
    assert_ne!(value.signature, nan.signature);
    assert_eq!(value.diagnosis.source, "llm");
    assert_eq!(server.requests(), 2);
    // The first error again: the stored diagnosis, no request.
    let (again, _) = handle_read(&store, "as_user_python_nan_volatile");
    assert_eq!(again.signature, nan.signature);
    assert_eq!(again.diagnosis.source, "cache");
    assert_eq!(server.requests(), 2);
    drop(store);

    // pimainteno-patch@weather.service: the model gets the traceback.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pm-patch"))
        .arg("--config")
        .arg(&s.files[0])
        .args(["--project", "weather"])
        .env_remove("INVOCATION_ID")
        .env_remove("JOURNAL_STREAM")
        .env_remove("PIMAINTENO_TEST_PAUSE")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pm-patch: {err}");
    assert!(err.contains("fixed on branch pimainteno/"), "{err}");
    let prompt = server.seen()[2].json()["messages"][1]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        prompt.contains("RuntimeError: sensor returned NaN")
            && prompt.contains("line 14, in read_temperature"),
        "the hand-off carries the traceback: {prompt}"
    );
}

/// A configuration with a store in `dir`, the given `[llm]` and extra text.
fn settings(dir: &Path, llm: &str, extra: &str) -> Settings {
    let file = dir.join("pimainteno.toml");
    std::fs::write(
        &file,
        format!(
            "[llm]\n{llm}\n[cache]\npath = \"{}\"\n\n[systemd_monitor]\nunits = [\"pmfx-exit_status.service\", \
             \"pmfx-injection.service\", \"pmfx-exec_203.service\"]\nmax_repairs_per_hour = 3\n{extra}",
            dir.join("store").display()
        ),
    )
    .unwrap();
    pimainteno::config::load(&LoadOptions {
        path: Some(file),
        defaults_if_missing: false,
    })
    .unwrap_or_else(|e| panic!("test config: {e}"))
}

/// The repair unit's decision on a failure (a fresh handler each time).
fn decide(
    s: &Settings,
    store: &Store,
    monitor: &Monitor,
    facts: &UnitFacts,
    excerpt: Excerpt,
) -> pimainteno::onfailure::repair::Decision {
    handle_failure(
        &Handler::new(s, store, &run_dir(s)),
        monitor,
        facts,
        excerpt,
        &[],
    )
    .unwrap()
}

/// The handler's decide, followup and explain on a recorded failure (the
/// restart needs systemd: the system tests do it).
fn handle(settings: &Settings, store: &Store, case: &str) -> String {
    let r = recorded(case);
    let run = run_dir(settings);
    let h = Handler::new(settings, store, &run);
    let d = handle_failure(&h, &r.monitor, &r.facts, r.excerpt, &[]).unwrap();
    note_outcome(&h, &d, None).unwrap();
    explain(&h, &d).unwrap();
    d.failure
}

#[test]
fn offline_the_analyzer_decides_and_a_repeat_reuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), "provider = \"none\"", "");
    let store = Store::open(&s.cache).unwrap();
    let first = handle(&s, &store, "exec_203");
    let f = store.failure(&first).unwrap().unwrap();
    assert_eq!(f.diagnosis.kind, "exec");
    assert_eq!(f.diagnosis.source, "analyzer");
    assert_eq!(f.repair.action, "none", "a missing binary is not restarted");
    assert!(f.llm.is_none());
    assert!(
        f.journal
            .iter()
            .any(|l| l.contains("/usr/local/bin/does-not-exist") || l.contains("203/EXEC")),
        "{:#?}",
        f.journal
    );

    let second = handle(&s, &store, "exec_203");
    let g = store.failure(&second).unwrap().unwrap();
    assert_eq!(g.signature, f.signature);
    assert_eq!(g.diagnosis.source, "cache");
    let sig = store.signature(&f.signature).unwrap().unwrap();
    assert_eq!(sig.count, 2);
}

#[test]
fn the_limit_is_counted_exactly_whatever_the_history_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path(), "provider = \"none\"", "");
    // Fewer records kept than the limit: the count is not taken from them.
    s.cache.history = 2;
    let store = Store::open(&s.cache).unwrap();
    let run = run_dir(&s);
    let r = recorded("exit_status");
    let restarts = (0..8)
        .map(|_| {
            handle_failure(
                &Handler::new(&s, &store, &run),
                &r.monitor,
                &r.facts,
                r.excerpt.clone(),
                &[],
            )
            .unwrap()
            .step
        })
        .filter(|s| *s != RepairStep::None)
        .count();
    assert_eq!(restarts, 3);
    assert_eq!(
        store
            .failures("pmfx-exit_status.service", 100)
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn a_broken_store_never_stops_a_restart_and_the_failure_is_recorded_later() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), "provider = \"none\"", "");
    let run = run_dir(&s);
    // A store overwritten with garbage.
    std::fs::create_dir_all(&s.cache.path).unwrap();
    std::fs::write(s.cache.path.join("data.mdb"), vec![0x5a; 64 * 1024]).unwrap();
    assert!(pimainteno::onfailure::open_store(&s, &run).is_none());
    let fault = pimainteno::onfailure::store_fault(&run).expect("the fault is reported");
    assert!(
        fault.contains(&s.cache.path.display().to_string()),
        "the fault names the store: {fault}"
    );
    let h = Handler {
        settings: &s,
        store: None,
        run: &run,
        config_broken: false,
    };
    let r = recorded("exit_status");
    let steps: Vec<_> = (0..4)
        .map(|_| {
            handle_failure(&h, &r.monitor, &r.facts, r.excerpt.clone(), &[])
                .unwrap()
                .step
        })
        .collect();
    assert_eq!(
        steps,
        [
            RepairStep::Restart,
            RepairStep::Restart,
            RepairStep::Restart,
            RepairStep::None
        ],
        "restarted within the limit, without the store"
    );
    // `status` says so, names the store, and shows the units all the same.
    let (code, out, err) = admin(&dir.path().join("pimainteno.toml"), &["status"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("CANNOT BE USED"), "{out}");
    assert!(
        out.contains("store fault seen by pimainteno-repair.service"),
        "{out}"
    );
    assert!(out.contains(&s.cache.path.display().to_string()), "{out}");
    assert!(out.contains("pmfx-exit_status.service"), "{out}");
    assert!(out.contains("4 failure(s) kept under"), "{out}");
    // Kept under /run meanwhile; the store works again (moved away and
    // made afresh): the four failures are stored, and the fault is gone.
    assert_eq!(
        std::fs::read_dir(run.root().join("unrecorded"))
            .unwrap()
            .count(),
        4
    );
    std::fs::remove_dir_all(&s.cache.path).unwrap();
    let store = pimainteno::onfailure::open_store(&s, &run).expect("a working store");
    assert!(pimainteno::onfailure::store_fault(&run).is_none());
    let stored = store.failures("pmfx-exit_status.service", 10).unwrap();
    assert_eq!(stored.len(), 4);
    assert_eq!(
        std::fs::read_dir(run.root().join("unrecorded"))
            .unwrap()
            .count(),
        0
    );
    let restarted = stored
        .iter()
        .filter(|(_, f)| f.repair.action == "restart")
        .count();
    assert_eq!(restarted, 3);
}

#[test]
fn a_truncated_store_is_reported_and_the_unit_still_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), "provider = \"none\"", "");
    let run = run_dir(&s);
    let r = recorded("exit_status");
    {
        let store = Store::open(&s.cache).unwrap();
        for _ in 0..30 {
            handle(&s, &store, "exit_status");
        }
    }
    let data = s.cache.path.join("data.mdb");
    let len = std::fs::metadata(&data).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&data).unwrap();
    f.set_len(len / 2).unwrap();
    // No SIGBUS: the map is checked against the file before it is trusted.
    assert!(pimainteno::onfailure::open_store(&s, &run).is_none());
    let fault = pimainteno::onfailure::store_fault(&run).unwrap();
    assert!(fault.contains("truncated"), "{fault}");
    let h = Handler {
        settings: &s,
        store: None,
        run: &run,
        config_broken: false,
    };
    // A fresh run directory (a reboot): the limit starts afresh.
    std::fs::remove_dir_all(run.root().join("units")).unwrap();
    let d = handle_failure(&h, &r.monitor, &r.facts, r.excerpt.clone(), &[]).unwrap();
    assert_eq!(d.step, RepairStep::Restart);
    assert!(!d.stored);
}

#[test]
fn queued_failures_are_each_handled_once_and_a_dead_runs_are_not_lost() {
    use pimainteno::onfailure::queue::{self, Pending};
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), "provider = \"none\"", "");
    let run = run_dir(&s);
    let r = recorded("exit_status");
    let failure = |id: &str| {
        Pending::new(
            &Monitor {
                invocation_id: Some(id.into()),
                ..r.monitor.clone()
            },
            "on_failure",
        )
    };
    // Two runs of one unit queued before the worker ran, one of them twice
    // (its hook and the worker's own check both saw it).
    queue::push(&run, &failure("00000000000000000000000000000001")).unwrap();
    queue::push(&run, &failure("00000000000000000000000000000002")).unwrap();
    queue::push(&run, &failure("00000000000000000000000000000002")).unwrap();
    // A previous worker died on a third.
    let dead = queue::push(&run, &failure("00000000000000000000000000000003")).unwrap();
    std::fs::rename(&dead, dead.with_extension("taken")).unwrap();
    {
        let store = pimainteno::onfailure::open_store(&s, &run).unwrap();
        pimainteno::onfailure::decide_queued(&Handler::new(&s, &store, &run)).unwrap();
    }
    assert!(
        std::fs::read_dir(run.root().join("queue"))
            .unwrap()
            .next()
            .is_none(),
        "the queue is empty"
    );
    let decisions: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(run.root().join("worker/decisions.json")).unwrap())
            .unwrap();
    let steps: Vec<&str> = decisions
        .iter()
        .map(|d| d["step"].as_str().unwrap())
        .collect();
    // The dead run's failure first (no journal, no store), then the two
    // runs: one restart for the unit, the second covered by it.
    assert_eq!(steps, ["restart", "none", "none"], "{decisions:#?}");
    // The worker's last step empties its hand-over; the dead run's failure,
    // kept under /run (decided without the store), is stored by then.
    let store = pimainteno::onfailure::open_store(&s, &run).unwrap();
    pimainteno::onfailure::followup(&Handler::new(&s, &store, &run)).unwrap();
    let records = store.failures("pmfx-exit_status.service", 10).unwrap();
    assert_eq!(records.len(), 3, "each run recorded once");
    assert!(
        records
            .iter()
            .any(|(_, f)| f.repair.reason.contains("covers it"))
    );
    assert!(!run.root().join("worker/decisions.json").exists());
}

#[test]
fn restarts_stop_at_max_repairs_per_hour() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), "provider = \"none\"", "");
    let store = Store::open(&s.cache).unwrap();
    let r = recorded("exit_status");
    let mut steps = Vec::new();
    for _ in 0..5 {
        let d = decide(&s, &store, &r.monitor, &r.facts, r.excerpt.clone());
        steps.push(d.step);
    }
    assert_eq!(
        steps,
        [
            RepairStep::Restart,
            RepairStep::Restart,
            RepairStep::Restart,
            RepairStep::None,
            RepairStep::None
        ]
    );
    let last = store
        .failures("pmfx-exit_status.service", 1)
        .unwrap()
        .remove(0)
        .1;
    assert!(
        last.repair.reason.contains("max_repairs_per_hour = 3"),
        "{}",
        last.repair.reason
    );

    // systemd restarting it itself: not touched.
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), "provider = \"none\"", "");
    let store = Store::open(&s.cache).unwrap();
    let facts = UnitFacts {
        sub_state: Some("auto-restart".into()),
        ..r.facts.clone()
    };
    let d = decide(&s, &store, &r.monitor, &facts, r.excerpt.clone());
    assert_eq!(d.step, RepairStep::None);
}

#[test]
fn a_unit_not_watched_is_recorded_but_not_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), "provider = \"none\"", "");
    let store = Store::open(&s.cache).unwrap();
    let mut r = recorded("exit_status");
    r.monitor.unit = "other.service".into();
    let d = decide(&s, &store, &r.monitor, &r.facts, r.excerpt);
    assert_eq!(d.step, RepairStep::None);
    assert_eq!(store.failures("other.service", 5).unwrap().len(), 1);
}

#[test]
fn an_instance_of_a_watched_template_is_watched() {
    let dir = tempfile::tempdir().unwrap();
    // One template in [systemd_monitor] units (through conf.d, as `pimainteno
    // watch` writes it), one in a project's units.
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    std::fs::write(
        dir.path().join("conf.d/90-watch.toml"),
        "[systemd_monitor]\nunits = [\"pmfx-worker@.service\"]\n",
    )
    .unwrap();
    let s = settings(
        dir.path(),
        "provider = \"none\"",
        &format!(
            "\n[[project]]\nname = \"sensor\"\npath = \"{}\"\npatch = \"off\"\nunits = [\"pmfx-sensor@.service\"]\n",
            dir.path().display()
        ),
    );
    let store = Store::open(&s.cache).unwrap();
    let r = recorded("exit_status");
    let run_dir = run_dir(&s);
    let run = |unit: &str| {
        let monitor = Monitor {
            unit: unit.into(),
            ..r.monitor.clone()
        };
        handle_failure(
            &Handler::new(&s, &store, &run_dir),
            &monitor,
            &r.facts,
            r.excerpt.clone(),
            &[],
        )
        .unwrap()
    };
    let d = run("pmfx-worker@1.service");
    assert_eq!(d.step, RepairStep::Restart);
    let d = run("pmfx-sensor@kitchen.service");
    assert_eq!(d.step, RepairStep::Restart);
    let f = store.failure(&d.failure).unwrap().unwrap();
    assert_eq!(f.project.as_deref(), Some("sensor"));
    // Another template's instance, and the template's own name with
    // another type, are not.
    assert_eq!(run("pmfx-other@1.service").step, RepairStep::None);
    assert_eq!(run("pmfx-worker@1.socket").step, RepairStep::None);
}

/// The `[llm]` lines for the in-test server.
fn openai(server: &Server) -> String {
    format!(
        "provider = \"openai\"\nmodel = \"m\"\nendpoint = \"{}\"",
        server.endpoint()
    )
}

const GOOD_REPLY: &str = r#"{"cause":"weather-sync cannot parse /etc/weather/config.toml: line 3 lacks an `=`.","confidence":0.9,"evidence":["error: cannot read /etc/weather/config.toml: expected `=` at line 3"],"action":"none"}"#;

#[test]
fn two_identical_failures_decided_before_either_is_explained_cost_one_call() {
    let server = Server::start(vec![Step::answer(GOOD_REPLY)]);
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), &openai(&server), "");
    let store = Store::open(&s.cache).unwrap();
    let run = run_dir(&s);
    let h = Handler::new(&s, &store, &run);
    let r = recorded("exit_status");
    // The slow LLM is the explainer's: two failures are decided (and
    // repaired) while the first is still waiting for its answer.
    let a = handle_failure(&h, &r.monitor, &r.facts, r.excerpt.clone(), &[]).unwrap();
    let b = handle_failure(&h, &r.monitor, &r.facts, r.excerpt.clone(), &[]).unwrap();
    assert_eq!((a.step, b.step), (RepairStep::Restart, RepairStep::Restart));
    explain(&h, &a).unwrap();
    explain(&h, &b).unwrap();
    assert_eq!(server.requests(), 1);
    let f = store.failure(&b.failure).unwrap().unwrap();
    assert_eq!(f.diagnosis.source, "cache");
    assert!(
        f.diagnosis.cause.contains("line 3 lacks"),
        "{}",
        f.diagnosis.cause
    );
}

#[test]
fn openai_gives_a_validated_diagnosis_once_per_signature() {
    let server = Server::start(vec![Step::answer(GOOD_REPLY)]);
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), &openai(&server), "");
    let store = Store::open(&s.cache).unwrap();
    let key = handle(&s, &store, "exit_status");
    let f = store.failure(&key).unwrap().unwrap();
    assert_eq!(f.diagnosis.source, "llm");
    assert_eq!(f.diagnosis.action, "none");
    assert_eq!(f.diagnosis.confidence_pct, 90);
    assert!(f.diagnosis.cause.contains("line 3 lacks"));
    assert_eq!(f.diagnosis.evidence.len(), 1);
    assert!(f.diagnosis.evidence[0].ends_with("expected `=` at line 3"));
    let note = f.llm.unwrap();
    assert_eq!((note.outcome.as_str(), note.tokens), ("ok", 366));
    // JSON mode was asked for, and the journal went as quoted data.
    let body = server.seen()[0].json();
    assert_eq!(body["response_format"]["type"], "json_object");
    let prompt = body["messages"][1]["content"].as_str().unwrap();
    assert!(prompt.contains("<<<JOURNAL\n["), "{prompt}");

    // The same failure again: the stored diagnosis, no second request (the
    // script has only one answer; a second request would get a 500).
    let again = handle(&s, &store, "exit_status");
    let g = store.failure(&again).unwrap().unwrap();
    assert_eq!(g.diagnosis.source, "cache");
    assert_eq!(g.diagnosis.cause, f.diagnosis.cause);
    assert!(g.llm.is_none());
    assert_eq!(server.requests(), 1);
    // The LLM said a restart would not help: the next one is not restarted.
    let r = recorded("exit_status");
    let d = decide(&s, &store, &r.monitor, &r.facts, r.excerpt);
    assert_eq!(d.step, RepairStep::None);
}

#[test]
fn secrets_in_a_failed_runs_journal_never_reach_the_model() {
    let secrets = common::FakeSecrets::new();
    let api_key = "pm-test-key-0f9e8d7c6b5a";
    let mut own = secrets.lines();
    own.push(format!(
        "weather-sync: using key {api_key} for account ACME-123456"
    ));
    own.push("weather-sync: giving up after 3 attempts".into());
    let own: Vec<&str> = own.iter().map(String::as_str).collect();
    let reply = serde_json::json!({
        "cause": "The database refuses the password [secret:url-password#1].",
        "confidence": 0.7,
        // Quoted as the model saw it: with the placeholder.
        "evidence": ["psycopg2.OperationalError: connection to postgres://app:[secret:url-password#1]@db.lan:5432/weather failed"],
        "action": "none",
    });
    let server = Server::start(vec![Step::answer(&reply.to_string())]);
    let dir = tempfile::tempdir().unwrap();
    let s = settings(
        dir.path(),
        &format!(
            "{}\napi_key = \"{api_key}\"\nredact = [\"ACME-[0-9]{{6}}\"]",
            openai(&server)
        ),
        "",
    );
    let r = recorded("exit_status");
    let excerpt = excerpt("/usr/bin/weather-sync", &own, &r.monitor.unit, "1/FAILURE");
    let store = Store::open(&s.cache).unwrap();
    let run = run_dir(&s);
    let h = Handler::new(&s, &store, &run);
    let d = handle_failure(&h, &r.monitor, &r.facts, excerpt, &[]).unwrap();
    explain(&h, &d).unwrap();
    assert_eq!(server.requests(), 1);
    let seen = &server.seen()[0];
    let body = String::from_utf8_lossy(&seen.body);
    let prompt = seen.json()["messages"][1]["content"]
        .as_str()
        .unwrap()
        .to_string();
    for text in [&body as &str, &prompt] {
        assert_eq!(
            secrets.found_in(text),
            Vec::<&str>::new(),
            "sent:\n{prompt}"
        );
        assert!(
            !text.contains(api_key),
            "the configured key was sent:\n{prompt}"
        );
        assert!(
            !text.contains("ACME-123456"),
            "the user's pattern was not applied:\n{prompt}"
        );
    }
    // The lines are still there for the model to read, secrets replaced.
    assert!(prompt.contains("postgres://app:[secret:"), "{prompt}");
    assert!(
        prompt.contains("Authorization: Bearer [secret:"),
        "{prompt}"
    );
    assert!(prompt.contains("[secret:custom#1]"), "{prompt}");
    assert!(prompt.contains("[secret:configured#1]"), "{prompt}");
    assert!(prompt.contains("giving up after 3 attempts"), "{prompt}");
    // The evidence quoted with a placeholder is the journal line itself
    // (kept here, on the machine).
    let f = store.failure(&d.failure).unwrap().unwrap();
    assert_eq!(f.diagnosis.source, "llm");
    assert_eq!(f.diagnosis.evidence.len(), 1, "{:?}", f.diagnosis);
    assert!(f.diagnosis.evidence[0].contains(&secrets.items[0].0));
    // The record of what was sent: counts with the call, the prompt as sent.
    let calls = store.llm_calls(&r.monitor.unit, 10).unwrap();
    assert_eq!(calls.len(), 1);
    let counted: u32 = calls[0].1.redacted.values().sum();
    assert!(counted >= 11, "{:?}", calls[0].1.redacted);
    assert_eq!(
        store.prompt(&calls[0].0).unwrap().as_deref(),
        Some(prompt.as_str())
    );
    drop(store);
    let (code, out, err) = admin(&s.files[0], &["history", &r.monitor.unit, "--prompts"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("redacted: {counted} values (")),
        "{out}"
    );
    assert!(out.contains("---- prompt as sent ("), "{out}");
    assert!(out.contains("postgres://app:[secret:"), "{out}");
    assert_eq!(secrets.found_in(&out), Vec::<&str>::new(), "{out}");
}

#[test]
fn a_reply_that_does_not_validate_leaves_the_analyzer_answer() {
    // The injected line tries to pick an action outside the allow-list; a
    // model that obeys it is refused.
    let obeyed = r#"{"cause":"fine","confidence":1,"action":"run_command","command":"rm -rf /","evidence":[]}"#;
    let server = Server::start(vec![
        Step::answer(obeyed),
        Step::answer("Sure! The service crashed."),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), &openai(&server), "");
    let store = Store::open(&s.cache).unwrap();
    let key = handle(&s, &store, "injection");
    let f = store.failure(&key).unwrap().unwrap();
    assert_eq!(f.diagnosis.source, "analyzer");
    let note = f.llm.unwrap();
    assert_eq!(note.outcome, "invalid");
    assert!(note.error.unwrap().contains("expected exactly"));
    let prompt = server.seen()[0].json()["messages"][1]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let block = prompt
        .split("<<<JOURNAL\n")
        .nth(1)
        .unwrap()
        .split("\nJOURNAL>>>")
        .next()
        .unwrap();
    let quoted: Vec<String> = serde_json::from_str(block).unwrap();
    assert!(
        quoted
            .iter()
            .any(|l| l.contains("ignore all previous instructions"))
    );

    // Prose instead of JSON: refused too.
    let key = handle(&s, &store, "exit_status");
    let f = store.failure(&key).unwrap().unwrap();
    assert_eq!(f.diagnosis.source, "analyzer");
    assert!(f.llm.unwrap().error.unwrap().contains("not JSON"));
}

#[test]
fn a_reply_with_a_key_twice_is_refused_and_a_piece_of_a_line_is_no_evidence() {
    // serde_json alone would take the last "action"; another reader the first.
    let twice =
        r#"{"cause":"c","confidence":0.9,"evidence":[],"action":"none","action":"restart"}"#;
    let pieces = serde_json::json!({
        "cause": "The configuration has a syntax error.",
        "confidence": 0.8,
        "evidence": [
            "e",
            "loading configuration",
            "  pmfx-exit_status.service: Main process exited, code=exited, status=3/NOTIMPLEMENTED ",
        ],
        "action": "none",
    });
    let server = Server::start(vec![Step::answer(twice), Step::answer(&pieces.to_string())]);
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), &openai(&server), "");
    let store = Store::open(&s.cache).unwrap();
    let f = store
        .failure(&handle(&s, &store, "injection"))
        .unwrap()
        .unwrap();
    assert_eq!(f.diagnosis.source, "analyzer");
    let note = f.llm.unwrap();
    assert_eq!(note.outcome, "invalid");
    assert!(note.error.unwrap().contains("appears twice"));

    let f = store
        .failure(&handle(&s, &store, "exit_status"))
        .unwrap()
        .unwrap();
    assert_eq!(f.diagnosis.source, "llm");
    // Only the line quoted whole (trimmed) is evidence, stored as recorded.
    assert_eq!(f.diagnosis.evidence.len(), 1, "{:?}", f.diagnosis.evidence);
    assert!(
        f.diagnosis.evidence[0].ends_with(
            "systemd[1]: pmfx-exit_status.service: Main process exited, code=exited, status=3/NOTIMPLEMENTED"
        ),
        "{:?}",
        f.diagnosis.evidence
    );
    assert_eq!(server.requests(), 2);
}

#[test]
fn a_project_unit_with_a_code_error_leaves_work_for_pm_patch() {
    let dir = tempfile::tempdir().unwrap();
    let project = common::repo(dir.path(), "sensor");
    let extra = format!(
        "\n[[project]]\nname = \"sensor\"\npath = \"{}\"\npatch = \"branch\"\nunits = [\"pmfx-python_traceback.service\"]\n",
        project.display()
    );
    let s = settings(dir.path(), "provider = \"none\"", &extra);
    let store = Store::open(&s.cache).unwrap();
    let key = handle(&s, &store, "python_traceback");
    let f = store.failure(&key).unwrap().unwrap();
    assert_eq!(f.project.as_deref(), Some("sensor"));
    assert_eq!(f.diagnosis.action, "patch");
    assert_eq!(f.repair.action, "restart", "restarted meanwhile");
    let pending = store.pending("sensor").unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].1.failure, key);
    assert!(f.repair.reason.contains("handed to pm-patch"));

    // patch = "off": restarted, nothing pending.
    let dir = tempfile::tempdir().unwrap();
    let project = common::repo(dir.path(), "sensor");
    let s = settings(
        dir.path(),
        "provider = \"none\"",
        &format!(
            "\n[[project]]\nname = \"sensor\"\npath = \"{}\"\npatch = \"off\"\nunits = [\"pmfx-python_traceback.service\"]\n",
            project.display()
        ),
    );
    let store = Store::open(&s.cache).unwrap();
    handle(&s, &store, "python_traceback");
    assert!(store.pending("sensor").unwrap().is_empty());
}

#[test]
fn watch_and_unwatch_keep_their_own_fragment() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), "provider = \"none\"", "");
    let config = s.files[0].clone();
    let fragment = dir.path().join("conf.d/90-watch.toml");

    let (code, out, err) = admin(&config, &["watch", "nginx", "--no-reload"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("nginx.service: watched"), "{out}");
    let text = std::fs::read_to_string(&fragment).unwrap();
    assert!(text.contains("units = [\"nginx.service\"]"), "{text}");
    let (_, out, _) = admin(&config, &["watch", "nginx.service", "--no-reload"]);
    assert!(out.contains("already watched"), "{out}");
    admin(&config, &["watch", "redis.service", "--no-reload"]);
    let (_, status, _) = admin(&config, &["status"]);
    for unit in ["nginx.service", "redis.service", "pmfx-exit_status.service"] {
        assert!(status.contains(unit), "{unit} not in {status}");
    }

    // A unit of the main file is not unwatch's to remove: it says where.
    let (code, _, err) = admin(
        &config,
        &["unwatch", "pmfx-exec_203.service", "--no-reload"],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("not added by `pimainteno watch`") && err.contains("pimainteno.toml"),
        "{err}"
    );
    let (code, _, err) = admin(&config, &["watch", "not a unit!", "--no-reload"]);
    assert_ne!(code, 0);
    assert!(err.contains("is not a unit name"), "{err}");

    admin(&config, &["unwatch", "nginx.service", "--no-reload"]);
    assert!(
        std::fs::read_to_string(&fragment)
            .unwrap()
            .contains("[\"redis.service\"]")
    );
    let (code, out, err) = admin(&config, &["unwatch", "redis", "--no-reload"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no longer watched"), "{out}");
    assert!(!fragment.exists(), "the empty fragment is removed");
}

#[test]
fn history_and_status_show_a_units_failures() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), "provider = \"none\"", "");
    {
        let store = Store::open(&s.cache).unwrap();
        handle(&s, &store, "exit_status");
    }
    let config = s.files[0].clone();
    let (code, out, err) = admin(&config, &["history", "pmfx-exit_status.service"]);
    assert_eq!(code, 0, "{err}");
    for want in [
        "failure  exit-code (exited, status 3)",
        "command: /usr/local/bin/weather-sync",
        "| 07:25:00 weather-sync[77]: error: cannot read /etc/weather/config.toml: expected `=` at line 3",
        "diagnosis (analyzer, exit_status, 30% sure)",
        "repair: restart (unknown): restarted (repair 1 of 3 this hour)",
        "llm: not asked (0 tokens)",
    ] {
        assert!(out.contains(want), "{want:?} not in:\n{out}");
    }
    let (_, status, _) = admin(&config, &["status"]);
    assert!(
        status.contains("pmfx-exit_status.service\n    last failure: exit-code at "),
        "{status}"
    );
    assert!(
        status.contains("pmfx-injection.service\n    no failure recorded"),
        "{status}"
    );
    // Without a name: the projects, then every unit with failures.
    let (_, all, _) = admin(&config, &["history"]);
    assert!(all.contains("pmfx-exit_status.service\n  "), "{all}");
}

#[test]
fn as_root_home_means_the_service_accounts() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root (CI runs as root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pimainteno.toml");
    // `daemon` exists on every Debian system; its home is /usr/sbin.
    std::fs::write(
        &config,
        "[service]\nuser = \"daemon\"\n\n[[project]]\nname = \"w\"\npath = \"~/weather\"\n",
    )
    .unwrap();
    let (code, out, err) = admin(&config, &["check-config"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("path = \"/usr/sbin/weather\""), "{out}");
}
