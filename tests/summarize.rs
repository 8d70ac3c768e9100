//! pm-summarize end to end with the offline provider: real git
//! repositories, the real binary, a real store.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

use common::repo;
use pimainteno::config::CacheSettings;
use pimainteno::store::Store;

struct Env {
    root: tempfile::TempDir,
    config: PathBuf,
}

impl Env {
    /// A configuration with the offline provider and `extra` appended.
    fn new(extra: &str) -> Env {
        Env::with_llm("provider = \"none\"\n", extra)
    }

    /// The same with another `[llm]` section body.
    fn with_llm(llm: &str, extra: &str) -> Env {
        let root = tempfile::tempdir().unwrap();
        let config = root.path().join("pimainteno.toml");
        std::fs::write(
            &config,
            format!(
                "[llm]\n{llm}\n[cache]\npath = \"{}\"\nhistory = 10\n{extra}",
                root.path().join("store").display()
            ),
        )
        .unwrap();
        Env { root, config }
    }

    fn path(&self) -> &Path {
        self.root.path()
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_pm-summarize"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("INVOCATION_ID")
            .env_remove("JOURNAL_STREAM")
            .output()
            .unwrap()
    }

    fn store(&self) -> Store {
        Store::open(&CacheSettings {
            path: self.path().join("store"),
            max_size: 16 << 20,
            history: 10,
        })
        .unwrap()
    }
}

/// Every file under `dir` with its modification time and contents.
fn snapshot(dir: &Path) -> Vec<(PathBuf, std::time::SystemTime, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let m = std::fs::metadata(&p).unwrap().modified().unwrap();
                out.push((p.clone(), m, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn project(path: &Path) -> String {
    format!("\n[[project]]\npath = \"{}\"\n", path.display())
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn first_run_writes_then_an_unchanged_run_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let weather = repo(tmp.path(), "weather");
    let env = Env::new(&project(&weather));

    let out = env.run(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let summary = std::fs::read_to_string(weather.join("codex.md")).unwrap();
    assert!(
        summary.starts_with("<!-- Written by PiMainteno "),
        "{summary}"
    );
    assert!(
        summary.contains("(provider none)") && summary.contains(" on main."),
        "{summary}"
    );
    assert!(summary.contains("## weather"), "{summary}");
    assert!(summary.contains("first commit"), "{summary}");
    {
        let store = env.store();
        assert_eq!(store.summaries("weather", 10).unwrap().len(), 1);
        assert_eq!(store.llm_calls("weather", 10).unwrap().len(), 1);
    }
    // No temporary file left beside the summary.
    let leftovers: Vec<_> = std::fs::read_dir(&weather)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("pm-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Second run: nothing changed, so nothing is written anywhere: not the
    // store's data, not even LMDB's lock file (the store is not opened).
    let before = snapshot(&env.path().join("store"));
    let file_before = std::fs::metadata(weather.join("codex.md"))
        .unwrap()
        .modified()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let out = env.run(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stderr(&out), "", "no log line when nothing changed");
    assert!(
        before == snapshot(&env.path().join("store")),
        "the store directory changed"
    );
    assert_eq!(
        file_before,
        std::fs::metadata(weather.join("codex.md"))
            .unwrap()
            .modified()
            .unwrap()
    );
    assert_eq!(
        env.store().llm_calls("weather", 10).unwrap().len(),
        1,
        "zero provider calls"
    );
}

#[test]
fn edits_make_a_new_summary_but_the_summary_file_does_not() {
    let tmp = tempfile::tempdir().unwrap();
    let p = repo(tmp.path(), "garden");
    let env = Env::new(&project(&p));
    assert_eq!(code(&env.run(&[])), 0);

    // Touching the summary file itself changes nothing.
    std::fs::write(p.join("codex.md"), "my own notes\n").unwrap();
    assert_eq!(code(&env.run(&[])), 0);
    assert_eq!(env.store().summaries("garden", 10).unwrap().len(), 1);

    // An edit to the project does.
    std::fs::write(p.join("main.py"), "print('hello')\n").unwrap();
    assert_eq!(code(&env.run(&[])), 0);
    let s = env.store().summaries("garden", 10).unwrap();
    assert_eq!(s.len(), 2);
    assert!(s[0].1.dirty);
    let file = std::fs::read_to_string(p.join("codex.md")).unwrap();
    assert!(file.contains("with uncommitted changes"), "{file}");

    // --force asks again without a change.
    assert_eq!(code(&env.run(&["--force"])), 0);
    assert_eq!(env.store().summaries("garden", 10).unwrap().len(), 3);
}

#[test]
fn a_deleted_summary_file_is_restored_from_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let p = repo(tmp.path(), "restore");
    let env = Env::new(&project(&p));
    assert_eq!(code(&env.run(&[])), 0);
    let original = std::fs::read_to_string(p.join("codex.md")).unwrap();
    std::fs::remove_file(p.join("codex.md")).unwrap();
    let out = env.run(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(p.join("codex.md")).unwrap(),
        original
    );
    assert_eq!(
        env.store().llm_calls("restore", 10).unwrap().len(),
        1,
        "no new call"
    );
}

#[test]
fn one_failing_project_does_not_stop_the_others() {
    let tmp = tempfile::tempdir().unwrap();
    let good = repo(tmp.path(), "good");
    let not_git = tmp.path().join("notgit");
    std::fs::create_dir(&not_git).unwrap();
    let missing = tmp.path().join("later");
    let env = Env::new(&format!(
        "{}{}{}",
        project(&not_git),
        project(&missing),
        project(&good)
    ));
    let out = env.run(&[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("not the top of a git work tree"), "{err}");
    assert!(err.contains("does not exist (yet)"), "{err}");
    assert!(
        good.join("codex.md").exists(),
        "the good project still got its summary"
    );
    let rec = env.store().project("notgit").unwrap();
    assert!(rec.is_none(), "no provider was asked for a broken project");
}

#[test]
fn the_project_option_selects_and_unknown_names_are_config_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let a = repo(tmp.path(), "a");
    let b = repo(tmp.path(), "b");
    let env = Env::new(&format!("{}{}", project(&a), project(&b)));
    assert_eq!(code(&env.run(&["--project", "b"])), 0);
    assert!(b.join("codex.md").exists() && !a.join("codex.md").exists());
    let out = env.run(&["--project", "c"]);
    assert_eq!(code(&out), 78);
    assert!(stderr(&out).contains("no project named \"c\" in the configuration (known: a, b)"));
}

#[test]
fn a_held_lock_means_try_again_later() {
    use fs2::FileExt;
    let tmp = tempfile::tempdir().unwrap();
    let p = repo(tmp.path(), "busy");
    let env = Env::new(&project(&p));
    let locks = env.path().join("store/locks");
    std::fs::create_dir_all(&locks).unwrap();
    let held = std::fs::File::create(locks.join("busy.lock")).unwrap();
    held.lock_exclusive().unwrap();
    let start = std::time::Instant::now();
    let out = env.run(&[]);
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(
        start.elapsed() >= std::time::Duration::from_secs(5),
        "it waited briefly first"
    );
    assert!(
        stderr(&out).contains("project \"busy\" is busy"),
        "{}",
        stderr(&out)
    );
    assert!(!p.join("codex.md").exists());
}

#[test]
fn a_spent_budget_skips_the_call() {
    let tmp = tempfile::tempdir().unwrap();
    let p = repo(tmp.path(), "thrifty");
    // Nobody listens on the endpoint: the budget stops the run before any
    // connection is tried.
    let env = Env::with_llm(
        "provider = \"openai\"\nendpoint = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\ndaily_token_budget = 100\n",
        &project(&p),
    );
    // Another project already spent 150 tokens today.
    let store = env.store();
    let mut call = pimainteno::store::LlmCallRecord {
        v: 1,
        time_ms: pimainteno::time::now_ms(),
        project: "other".into(),
        purpose: "summary".into(),
        provider: "openai".into(),
        model: "m".into(),
        duration_ms: 1,
        usage: Default::default(),
        outcome: "ok".into(),
        error: None,
        redacted: Default::default(),
    };
    call.usage.input_tokens = 150;
    store.record_llm_call(&call, None).unwrap();
    drop(store);
    let out = env.run(&[]);
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("daily token budget of 100 tokens is spent (150 used today)"),
        "{}",
        stderr(&out)
    );
    assert!(!p.join("codex.md").exists());
    let rec = env.store().project("thrifty").unwrap().unwrap();
    assert_eq!(rec.last_outcome, "over_budget");
}

#[test]
fn the_check_result_is_part_of_the_offline_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let p = repo(tmp.path(), "checked");
    let env = Env::new(&format!(
        "{}check = \"echo all 3 tests passed\"\n",
        project(&p)
    ));
    let out = env.run(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let file = std::fs::read_to_string(p.join("codex.md")).unwrap();
    assert!(file.contains("all 3 tests passed"), "{file}");
}

#[test]
fn a_terminal_gets_a_progress_line_per_project() {
    // `script` gives the child a pseudo-terminal, as a person would.
    if Command::new("script").arg("--version").output().is_err() {
        panic!("`script` (bsdutils) is needed for this test");
    }
    let tmp = tempfile::tempdir().unwrap();
    let a = repo(tmp.path(), "one");
    let b = repo(tmp.path(), "two");
    let env = Env::new(&format!("{}{}", project(&a), project(&b)));
    let cmd = format!(
        "{} --config {}",
        env!("CARGO_BIN_EXE_pm-summarize"),
        env.config.display()
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env_remove("INVOCATION_ID")
        .env_remove("JOURNAL_STREAM")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("[1/2] one: asking none... summarized"),
        "{text}"
    );
    assert!(
        text.contains("[2/2] two: asking none... summarized"),
        "{text}"
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("[1/2] one: unchanged ("), "{text}");
}

#[test]
fn a_lost_fingerprint_hint_costs_only_a_store_lookup() {
    let tmp = tempfile::tempdir().unwrap();
    let p = repo(tmp.path(), "hinted");
    let env = Env::new(&project(&p));
    assert_eq!(code(&env.run(&[])), 0);
    let hint = env.path().join("store/fingerprints/hinted");
    let fingerprint = std::fs::read_to_string(&hint).unwrap();
    assert_eq!(
        fingerprint,
        env.store().summaries("hinted", 1).unwrap()[0].1.fingerprint
    );
    std::fs::remove_file(&hint).unwrap();
    let out = env.run(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        env.store().llm_calls("hinted", 10).unwrap().len(),
        1,
        "no new call"
    );
    assert_eq!(
        std::fs::read_to_string(&hint).unwrap(),
        fingerprint,
        "mended"
    );
}

/// The summary file is written only inside the project: a directory on
/// the way that is a link leading out, or a summary file that is a link,
/// is refused with the path named, and nothing outside changes. A link
/// that stays inside the project is followed.
#[test]
fn the_summary_is_never_written_through_a_link_out_of_the_project() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("target.md"), "mine\n").unwrap();
    let with = |name: &str, summary_file: &str, links: &[(&str, &str)]| {
        let p = repo(tmp.path(), name);
        for (path, target) in links {
            std::os::unix::fs::symlink(target, p.join(path)).unwrap();
        }
        let env = Env::new(&format!(
            "\n[[project]]\npath = \"{}\"\nsummary_file = \"{summary_file}\"\n",
            p.display()
        ));
        (p, env.run(&[]))
    };
    let before = snapshot(&outside);
    let cases = [
        (
            "dirlink",
            "docs/summary.md",
            "docs",
            "leads outside the project",
        ),
        (
            "deeper",
            "docs/new/summary.md",
            "docs",
            "leads outside the project",
        ),
        ("filelink", "codex.md", "codex.md", "is a symbolic link"),
    ];
    for (name, file, link, why) in cases {
        let target = if link == "codex.md" {
            "../outside/target.md"
        } else {
            "../outside"
        };
        let (p, out) = with(name, file, &[(link, target)]);
        let err = stderr(&out);
        assert_eq!(code(&out), 1, "{name}: {err}");
        assert!(
            err.contains(&p.join(file).display().to_string()) && err.contains(why),
            "{name}: {err}"
        );
        assert_eq!(snapshot(&outside), before, "{name}: outside changed");
        assert!(!outside.join("new").exists(), "{name}");
    }
    // A link inside the project to a directory of the project is fine.
    let (p, out) = with("inside", "docs/summary.md", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    std::fs::rename(p.join("docs"), p.join("real-docs")).unwrap();
    std::os::unix::fs::symlink("real-docs", p.join("docs")).unwrap();
    std::fs::remove_file(p.join("real-docs/summary.md")).unwrap();
    let out = Env::new(&format!(
        "\n[[project]]\npath = \"{}\"\nsummary_file = \"docs/summary.md\"\n",
        p.display()
    ))
    .run(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(p.join("real-docs/summary.md").is_file());
}

/// A directory whose name holds a newline (here behind a symlink, too) is
/// refused as an ad-hoc project, and nothing is written in it.
#[test]
fn an_adhoc_path_with_a_control_character_is_refused() {
    let env = Env::new("");
    let odd = env.path().join("we\nather");
    common::repo(env.path(), "we\nather");
    let link = env.path().join("plain");
    std::os::unix::fs::symlink(&odd, &link).unwrap();
    for given in [&odd, &link] {
        let out = env.run(&["--path", given.to_str().unwrap()]);
        let err = stderr(&out);
        assert_eq!(code(&out), 78, "{err}");
        assert!(
            err.contains("has a control character (\\n); rename it"),
            "{err}"
        );
        // One line: the name is shown escaped.
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    assert!(!odd.join("codex.md").exists());
    assert!(!env.path().join("store").exists());
}
