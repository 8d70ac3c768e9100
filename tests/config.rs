//! Configuration: every error kind, through the real `pimainteno
//! check-config` (exit code 78, `file:line: key: message`), the seed's
//! format, and conf.d merging.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pimainteno::config::{self, LoadOptions, ProviderKind};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(rel)
}

fn check_config(path: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pimainteno"))
        .arg("check-config")
        .arg("--config")
        .arg(path)
        .env_remove("PIMAINTENO_CONFIG")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("INVOCATION_ID")
        .env_remove("JOURNAL_STREAM")
        .output()
        .expect("run pimainteno")
}

/// Each fixture holds one mistake; the message must point at its line.
#[test]
fn every_error_kind_names_file_line_and_key() {
    let cases: &[(&str, usize, &str)] = &[
        ("syntax.toml", 3, "string"),
        ("unknown_key.toml", 5, "[cache] size: unknown field `size`"),
        ("wrong_type.toml", 3, "[web] port: invalid type"),
        (
            "bad_duration.toml",
            4,
            "[llm] timeout: \"15 fortnights\" is not a duration",
        ),
        (
            "bad_size.toml",
            3,
            "[cache] max_size: \"lots\" is not a size",
        ),
        (
            "too_small.toml",
            2,
            "[cache] max_size: must be at least 1MiB",
        ),
        (
            "bad_cron.toml",
            3,
            "[scheduler] cron: \"61 * * * *\" is not a cron schedule: minute: 61 is out of range",
        ),
        ("bad_on_calendar.toml", 2, "[scheduler] on_calendar:"),
        (
            "cron_and_calendar.toml",
            3,
            "set either cron or on_calendar, not both",
        ),
        (
            "duplicate_name.toml",
            7,
            "a second project named \"weather\" (the first is at",
        ),
        (
            "duplicate_path.toml",
            7,
            "/srv/same is already configured as project \"one\" (the first is at ",
        ),
        ("missing_path.toml", 5, "[[project]] #2 path: is missing"),
        (
            "bad_name.toml",
            2,
            "\"my project!\" cannot be a project name",
        ),
        (
            "unknown_provider.toml",
            2,
            "[llm] provider: unknown provider \"chatgpt\"",
        ),
        (
            "bad_endpoint.toml",
            4,
            "[llm] endpoint: \"127.0.0.1:11434\" is not an http(s) URL",
        ),
        (
            "openai_no_model.toml",
            2,
            "the openai provider needs [llm] model",
        ),
        (
            "bad_summary_file.toml",
            3,
            "[[project]] #1 summary_file: \"../outside.md\" must be a relative path inside the project",
        ),
        ("bad_patch_mode.toml", 3, "unknown mode \"yolo\""),
        (
            "bad_max_bytes.toml",
            3,
            "[patch] max_bytes: \"16MiB\" is more than the maximum, 8MiB",
        ),
        ("bad_unit.toml", 2, "\"bad unit name\" is not a unit name"),
        (
            "bad_host.toml",
            2,
            "[web] host: \"my pi\" is not an IP address",
        ),
        (
            "bad_allowed_hosts.toml",
            5,
            "[web] allowed_hosts: \"https://pi.example.org:8443/\" is not a host name or IP address",
        ),
        (
            "missing_key_file.toml",
            3,
            "[llm] api_key_file: cannot read",
        ),
        (
            "bad_retries.toml",
            2,
            "[llm] retries: 99 is out of range: use 0 to 10",
        ),
        (
            "huge_duration.toml",
            3,
            "[llm] timeout: \"99999999999999999999999w\" is more than the maximum, 1d",
        ),
        (
            "huge_check_timeout.toml",
            3,
            "[[project]] #1 check_timeout: 9223372036854775807 (seconds) is more than the maximum, 1d",
        ),
        (
            "negative_count.toml",
            2,
            "[systemd_monitor] max_repairs_per_hour: -1 is out of range: use 0 to 1000",
        ),
        (
            "fraction.toml",
            3,
            "[patch] max_files: 2.5 is not a whole number: use 1 to 10000",
        ),
        (
            "big_size.toml",
            2,
            "[cache] max_size: \"2GiB\" is more than the maximum, 1GiB",
        ),
        (
            "control_path.toml",
            4,
            "[[project]] #1 path: \"/srv/evil\\nExecStartPre=/bin/rm\" has a control character (\\n)",
        ),
        (
            "huge_number.json",
            3,
            "[cache] history: 1e300 is out of range: use 1 to 1000",
        ),
        (
            "bad_redact.toml",
            6,
            "[llm] redact: \"token=(unclosed\" is not a usable pattern:",
        ),
        ("syntax.json", 4, "trailing comma"),
        (
            "bad_duration.json",
            5,
            "[web] idle_exit: \"soon\" is not a duration",
        ),
    ];
    let mut failures = Vec::new();
    for (name, line, needle) in cases {
        let path = fixture(&format!("errors/{name}"));
        let out = check_config(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let located = format!("{}:{line}: ", path.display());
        if out.status.code() != Some(78) || !stderr.contains(&located) || !stderr.contains(needle) {
            failures.push(format!(
                "{name}: exit {:?}, expected `{located}` and `{needle}` in:\n{stderr}",
                out.status.code()
            ));
        }
        assert!(
            out.stdout.is_empty(),
            "{name}: nothing on stdout when invalid"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn all_errors_of_a_file_are_reported_together() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("many.toml");
    std::fs::write(
        &path,
        "[llm]\ntimeout = \"x\"\nretries = 50\n\n[web]\nhost = \"nowhere\"\n",
    )
    .unwrap();
    let out = check_config(&path);
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in [2, 3, 6] {
        assert!(
            stderr.contains(&format!("{}:{line}: ", path.display())),
            "{stderr}"
        );
    }
}

#[test]
fn a_missing_file_is_a_configuration_error() {
    let out = check_config(Path::new("/nonexistent/pimainteno.toml"));
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/pimainteno.toml: no configuration file here"),
        "{stderr}"
    );
}

#[test]
fn the_shipped_example_is_valid_and_prints_resolved() {
    let out = check_config(&Path::new(env!("CARGO_MANIFEST_DIR")).join("pimainteno.toml"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("provider = \"none\""), "{stdout}");
    assert!(stdout.contains("max_size = \"256MiB\""), "{stdout}");
    assert!(
        stdout.contains("on_calendar = [\"*-*-* 03:00:00\"]"),
        "{stdout}"
    );
}

/// The seed's format (a list of project paths, `cron`, inline key, web
/// host/port) keeps working, in TOML and JSON alike.
#[test]
fn the_seed_format_loads() {
    for name in ["seed.toml", "seed.json"] {
        let s = config::load(&LoadOptions {
            path: Some(fixture(name)),
            defaults_if_missing: false,
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let home = std::env::var("HOME").unwrap();
        let names: Vec<_> = s.projects.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["weather", "garden"], "{name}");
        assert_eq!(s.projects[0].path, Path::new(&home).join("weather"));
        assert_eq!(
            s.projects[0].summary_file.as_deref(),
            Some(Path::new("codex.md"))
        );
        assert_eq!(s.scheduler.on_calendar, ["Mon..Fri *-*-* 02:30:00"]);
        assert_eq!(s.llm.provider, ProviderKind::Codex);
        assert_eq!(s.llm.args, ["--skip-git-repo-check"]);
        assert_eq!(
            s.llm.api_key.as_ref().unwrap().expose(),
            "sk-seed-secret-123"
        );
        assert_eq!(s.systemd_monitor.units, ["nginx.service", "garden.service"]);
        assert_eq!((s.web.host.as_str(), s.web.port), ("0.0.0.0", 9000));
        assert_eq!(s.cache.path, Path::new("/tmp/pm-seed-store"));
        // The inline key is accepted with a warning that points at it.
        assert!(
            s.warnings
                .iter()
                .any(|w| w.to_string().contains("[llm] api_key: an inline key")),
            "{name}: {:?}",
            s.warnings
        );
    }
}

#[test]
fn secrets_never_appear_in_check_config_output() {
    let out = check_config(&fixture("seed.toml"));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(!all.contains("sk-seed-secret-123"), "{all}");
    assert!(all.contains("api_key = \"********\""), "{all}");
    // Missing project directories are warnings, not errors.
    assert!(
        all.contains("warning: ") && all.contains("/srv/garden does not exist (yet)"),
        "{all}"
    );
}

#[test]
fn conf_d_fragments_merge_in_name_order() {
    let s = config::load(&LoadOptions {
        path: Some(fixture("merged/pimainteno.toml")),
        defaults_if_missing: false,
    })
    .unwrap();
    assert_eq!(s.files.len(), 3, "{:?}", s.files);
    assert_eq!(s.llm.timeout.as_secs(), 300, "the later fragment wins");
    assert_eq!(s.llm.retries, 1);
    // cron in a later file replaces the main file's on_calendar.
    assert_eq!(s.scheduler.on_calendar, ["*-*-* *:00/5:00"]);
    let names: Vec<_> = s.projects.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["first", "second"], "projects are appended");
    // Relative paths are relative to the file that holds them.
    assert_eq!(s.projects[0].path, fixture("merged/first"));
    assert_eq!(s.projects[1].check.as_ref().unwrap().command, "make check");
    assert_eq!(s.systemd_monitor.units, ["nginx.service"]);
}

#[test]
fn an_error_in_a_fragment_names_the_fragment() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    let main = dir.path().join("pimainteno.toml");
    std::fs::write(&main, "[llm]\nprovider = \"none\"\n").unwrap();
    let frag = dir.path().join("conf.d/50-web.toml");
    std::fs::write(&frag, "# web\n\n[web]\nport = 70000\n").unwrap();
    let out = check_config(&main);
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:4: ", frag.display())),
        "{stderr}"
    );
}

#[test]
fn the_environment_variable_names_the_file() {
    let out = Command::new(env!("CARGO_BIN_EXE_pimainteno"))
        .arg("check-config")
        .env("PIMAINTENO_CONFIG", fixture("errors/bad_host.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad_host.toml:2: "));
}

/// Every `[patch]` key set in a file reaches the settings (the merge
/// lists the keys of each table: a key left out would be dropped without
/// a word).
#[test]
fn every_patch_and_project_key_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pimainteno.toml");
    std::fs::write(
        &file,
        "[patch]\nmax_attempts = 2\nmax_files = 3\nmax_lines = 4\nmax_bytes = \"1KiB\"\nallow_binary = true\n\
         author_name = \"A\"\nauthor_email = \"a@b\"\nunsandboxed_check = true\nlandlock = false\n\n\
         [[project]]\nname = \"w\"\npath = \"/srv/w\"\nprotect = [\"x\"]\nprotect_defaults = false\n\
         check_network = true\ncheck_readable = [\"/opt/sdk\", \"tools\"]\n",
    )
    .unwrap();
    let s = config::load(&LoadOptions {
        path: Some(file),
        defaults_if_missing: false,
    })
    .unwrap();
    let p = &s.patch;
    assert_eq!(
        (p.max_attempts, p.max_files, p.max_lines, p.allow_binary),
        (2, 3, 4, true)
    );
    assert_eq!(p.max_bytes, 1024);
    assert_eq!(
        (p.author_name.as_str(), p.author_email.as_str()),
        ("A", "a@b")
    );
    assert!(p.unsandboxed_check && !p.landlock);
    let w = &s.projects[0];
    assert_eq!(w.protect, ["x"]);
    assert!(!w.protect_defaults && w.check_network);
    assert_eq!(
        w.check_readable,
        [PathBuf::from("/opt/sdk"), dir.path().join("tools")]
    );
}

#[test]
fn redact_patterns_of_every_fragment_add_up_and_a_bad_one_names_its_fragment() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    let main = dir.path().join("pimainteno.toml");
    std::fs::write(&main, "[llm]\nredact = [\"ACME-[0-9]{6}\"]\n").unwrap();
    let frag = dir.path().join("conf.d/50-more.toml");
    std::fs::write(&frag, "[llm]\nredact = [\"serial=\\\\w+\"]\n").unwrap();
    let s = config::load(&LoadOptions {
        path: Some(main.clone()),
        defaults_if_missing: false,
    })
    .unwrap();
    assert_eq!(s.llm.redact, ["ACME-[0-9]{6}", "serial=\\w+"]);
    let redacted = s.llm.redactor().unwrap().redact("ACME-123456 serial=XYZ");
    assert!(
        !redacted.text.contains("ACME-123456") && !redacted.text.contains("XYZ"),
        "{}",
        redacted.text
    );
    // A pattern that matches everything empty is refused where it is written.
    std::fs::write(&frag, "# more\n[llm]\nredact = [\n  \"x*\",\n]\n").unwrap();
    let out = check_config(&main);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:4: [llm] redact: \"x*\" is not a usable pattern",
            frag.display()
        )),
        "{stderr}"
    );
}

#[test]
fn codex_is_said_to_see_the_secret_files_git_does_not_ignore() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("weather");
    std::fs::create_dir_all(repo.join("deploy")).unwrap();
    let git = |args: &[&str]| common::git(&repo, args);
    git(&["init", "-q"]);
    for (name, text) in [
        (".env", "A=1\n"),
        (".env.example", "A=\n"),
        (".gitignore", "secrets.yaml\n"),
        ("secrets.yaml", "a: 1\n"),
        ("main.py", "print(1)\n"),
    ] {
        std::fs::write(repo.join(name), text).unwrap();
    }
    git(&["add", "."]);
    git(&["commit", "-qm", "first"]);
    // Not committed, not ignored: codex sees it all the same.
    std::fs::write(repo.join("deploy/id_rsa"), "key\n").unwrap();
    let config = dir.path().join("pimainteno.toml");
    let write = |provider: &str| {
        std::fs::write(
            &config,
            format!(
                "[llm]\nprovider = \"{provider}\"\nmodel = \"m\"\ncommand = \"/bin/true\"\n\n[cache]\npath = \"{}\"\n\n\
                 [[project]]\npath = \"{}\"\nsummary_file = \"\"\n",
                dir.path().join("store").display(),
                repo.display()
            ),
        )
        .unwrap();
    };
    write("codex");
    let out = check_config(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("cannot redact"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning:\n{stderr}");
    assert!(warnings[0].starts_with("warning: "), "{stderr}");
    assert!(
        warnings[0].contains("weather (.env, deploy/id_rsa)"),
        "{stderr}"
    );
    write("openai");
    let out = check_config(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("cannot redact"),
        "openai prompts are redacted:\n{stderr}"
    );
}

/// How a number is written in the configuration.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Count,
    Duration,
    Size,
}

/// Every number in the configuration: its table, its key, its kind, and
/// whether 0 is a value it takes.
const NUMERIC_KEYS: &[(&str, &str, Kind, bool)] = &[
    ("llm", "timeout", Kind::Duration, false),
    ("llm", "connect_timeout", Kind::Duration, false),
    ("llm", "retries", Kind::Count, true),
    ("llm", "daily_token_budget", Kind::Count, true),
    ("cache", "max_size", Kind::Size, false),
    ("cache", "history", Kind::Count, false),
    ("scheduler", "randomized_delay", Kind::Duration, true),
    ("systemd_monitor", "max_repairs_per_hour", Kind::Count, true),
    ("web", "port", Kind::Count, false),
    ("web", "idle_exit", Kind::Duration, false),
    ("patch", "max_attempts", Kind::Count, false),
    ("patch", "max_files", Kind::Count, false),
    ("patch", "max_lines", Kind::Count, false),
    ("patch", "max_bytes", Kind::Size, false),
    ("project", "check_timeout", Kind::Duration, false),
];

/// A configuration with `value(kind)` for every numeric key that has one,
/// in TOML or JSON, one key per line; with the `file:line: key: ` each
/// refused key must be reported at.
fn extreme_config(
    dir: &Path,
    name: &str,
    value: &dyn Fn(Kind) -> Option<&'static str>,
    zero: bool,
) -> (PathBuf, Vec<String>) {
    let path = dir.join(name);
    let json = name.ends_with(".json");
    let mut lines: Vec<String> = Vec::new();
    let mut expected = Vec::new();
    if json {
        lines.push("{".into());
    }
    let mut tables: Vec<&str> = NUMERIC_KEYS.iter().map(|k| k.0).collect();
    tables.dedup();
    for (t, table) in tables.iter().enumerate() {
        let project = *table == "project";
        let mut entries = Vec::new();
        if project {
            entries.push(("path", format!("{:?}", dir.display().to_string())));
        }
        for &(_, key, kind, zero_ok) in NUMERIC_KEYS.iter().filter(|k| k.0 == *table) {
            let Some(v) = value(kind) else { continue };
            entries.push((key, v.to_string()));
            if !(zero && zero_ok) {
                let shown = if project {
                    format!("[[project]] #1 {key}")
                } else {
                    format!("[{table}] {key}")
                };
                // The line this entry will be on (1-based), filled in below.
                expected.push((lines.len() + entries.len() + 1, shown));
            }
        }
        if json {
            let open = if project { "[{" } else { "{" };
            lines.push(format!("  \"{table}\": {open}"));
            let n = entries.len();
            for (i, (k, v)) in entries.into_iter().enumerate() {
                let comma = if i + 1 < n { "," } else { "" };
                lines.push(format!("    \"{k}\": {v}{comma}"));
            }
            let close = if project { "}]" } else { "}" };
            let comma = if t + 1 < tables.len() { "," } else { "" };
            lines.push(format!("  {close}{comma}"));
        } else {
            lines.push(if project {
                "[[project]]".into()
            } else {
                format!("[{table}]")
            });
            for (k, v) in entries {
                lines.push(format!("{k} = {v}"));
            }
        }
    }
    if json {
        lines.push("}".into());
    }
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let expected = expected
        .into_iter()
        .map(|(line, key)| format!("{}:{line}: {key}: ", path.display()))
        .collect();
    (path, expected)
}

/// The extreme values of every numeric key, given to every binary: each
/// refuses the configuration (78; the generator reports and exits 0), names
/// file, line and key of every value out of its documented range, and none
/// panics.
#[test]
fn extreme_numbers_are_refused_by_every_binary_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    type Round = (&'static str, [Option<&'static str>; 3]);
    // (file name, [count, duration, size]); strings only where a string is
    // a valid type (a count given a string stops at the first one).
    let rounds: &[Round] = &[
        ("zero.toml", [Some("0"), Some("0"), Some("0")]),
        ("minus_one.toml", [Some("-1"), Some("-1"), Some("-1")]),
        ("i64_min.toml", [Some("-9223372036854775808"); 3]),
        ("i64_max.toml", [Some("9223372036854775807"); 3]),
        ("fraction.toml", [Some("1.5"), Some("1.5"), Some("1.5")]),
        ("float.toml", [Some("1e300"), Some("1e300"), Some("1e300")]),
        ("nan.toml", [Some("nan"), Some("-inf"), Some("inf")]),
        (
            "huge_text.toml",
            [
                None,
                Some("\"99999999999999999999999w\""),
                Some("\"99999999999999999999TiB\""),
            ],
        ),
        (
            "exponent.toml",
            [None, Some("\"1e300s\""), Some("\"1e300GiB\"")],
        ),
        (
            "negative_text.toml",
            [None, Some("\"-1s\""), Some("\"-1MiB\"")],
        ),
        (
            "u64_overflow.toml",
            [
                None,
                Some("\"18446744073709551616\""),
                Some("\"18446744073709551616\""),
            ],
        ),
        (
            "extreme.json",
            [
                Some("18446744073709551616"),
                Some("1e300"),
                Some("18446744073709551615"),
            ],
        ),
        ("negative.json", [Some("-1e300"), Some("-0.5"), Some("-1")]),
    ];
    let mut failures = Vec::new();
    for (name, values) in rounds {
        let value = |kind: Kind| match kind {
            Kind::Count => values[0],
            Kind::Duration => values[1],
            Kind::Size => values[2],
        };
        let (config, expected) = extreme_config(dir.path(), name, &value, *name == "zero.toml");
        assert!(!expected.is_empty(), "{name}");
        let bin = |exe: &str, args: &[&str]| {
            let mut c = Command::new(exe);
            c.args(args)
                .arg("--config")
                .arg(&config)
                .env_remove("PIMAINTENO_CONFIG")
                .env_remove("PIMAINTENO_STORE")
                .env_remove("CREDENTIALS_DIRECTORY")
                .env_remove("INVOCATION_ID")
                .env_remove("JOURNAL_STREAM")
                .env_remove("LISTEN_FDS")
                .env_remove("LISTEN_PID");
            c
        };
        let runs = [
            (
                "check-config",
                bin(env!("CARGO_BIN_EXE_pimainteno"), &["check-config"]),
            ),
            ("pm-summarize", bin(env!("CARGO_BIN_EXE_pm-summarize"), &[])),
            ("pm-patch", bin(env!("CARGO_BIN_EXE_pm-patch"), &[])),
            (
                "pm-onfailure",
                bin(env!("CARGO_BIN_EXE_pm-onfailure"), &["x.service"]),
            ),
            (
                "pm-dashboard",
                bin(
                    env!("CARGO_BIN_EXE_pm-dashboard"),
                    &["--listen", "127.0.0.1:0"],
                ),
            ),
        ];
        for (what, mut cmd) in runs {
            let out = cmd.output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let missing: Vec<&String> = expected.iter().filter(|e| !stderr.contains(*e)).collect();
            if out.status.code() != Some(78) || !missing.is_empty() || stderr.contains("panicked") {
                failures.push(format!(
                    "{what} on {name}: exit {:?}, missing {missing:?} in:\n{stderr}",
                    out.status
                ));
            }
        }

        // The generator: reports and exits 0, writing nothing. As root its
        // report goes to the kernel log, so its text is checked in-process.
        let out_dir = dir.path().join(format!("generated-{name}"));
        std::fs::create_dir(&out_dir).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_pimainteno-system-generator"))
            .arg(&out_dir)
            .env("PIMAINTENO_CONFIG", &config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let written = std::fs::read_dir(&out_dir).unwrap().count();
        if out.status.code() != Some(0) || stderr.contains("panicked") || written != 0 {
            failures.push(format!(
                "generator on {name}: exit {:?}, {written} files written:\n{stderr}",
                out.status
            ));
        }
        let mut report = String::new();
        pimainteno::generator::run(
            &[out_dir.clone().into_os_string()],
            Some(config.clone()),
            &mut |_, message| report.push_str(message),
        );
        let missing: Vec<&String> = expected.iter().filter(|e| !report.contains(*e)).collect();
        if !report.contains("bad configuration, nothing generated") || !missing.is_empty() {
            failures.push(format!(
                "generator report on {name}: missing {missing:?} in:\n{report}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A control character in any path of the configuration is refused where
/// it is written: a newline in a project's path would otherwise become a
/// line of its own in the drop-in the generator writes.
#[test]
fn paths_with_control_characters_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pimainteno.toml");
    let bad = "/srv/a\\nExecStartPre=/bin/sh";
    let lines = [
        "[llm]".to_string(),
        "command = \"/usr/bin/co\\tdex\"".to_string(),
        format!("api_key_file = \"{bad}\""),
        format!("codex_home = \"{bad}\""),
        "[cache]".into(),
        format!("path = \"{bad}\""),
        "[web]".into(),
        "password_file = \"/etc/pw\\u001b[2J\"".to_string(),
        "[scheduler]".into(),
        format!("projects = [\"{bad}\"]"),
        "[[project]]".into(),
        "name = \"w\"".into(),
        format!("path = \"{bad}2\""),
        "summary_file = \"docs/\\rsummary.md\"".into(),
        "check_readable = [\"/opt/ok\", \"/opt/\\u007f\"]".into(),
    ];
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let out = check_config(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    for (line, key) in [
        (2, "[llm] command"),
        (3, "[llm] api_key_file"),
        (4, "[llm] codex_home"),
        (6, "[cache] path"),
        (8, "[web] password_file"),
        (10, "[scheduler] projects"),
        (13, "[[project]] #1 path"),
        (14, "[[project]] #1 summary_file"),
        (15, "[[project]] #1 check_readable"),
    ] {
        let want = format!("{}:{line}: {key}: ", path.display());
        let found = stderr
            .lines()
            .any(|l| l.contains(&want) && l.contains("has a control character"));
        assert!(found, "{want} in:\n{stderr}");
    }
    // Reported escaped: the message itself is one line each.
    assert_eq!(stderr.lines().count(), 9, "{stderr}");
}
