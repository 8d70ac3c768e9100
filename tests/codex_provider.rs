//! The codex provider against what codex-cli 0.169 really does.
//!
//! `tests/fixtures/codex-exec/` holds 25 transcripts of the real CLI (see
//! its README). Each test writes a fake `codex`: a shell script that
//! records how it was called (argv, CODEX_HOME, CODEX_API_KEY, stdin) and
//! then replays one transcript: the JSONL on stdout, the stderr, the
//! `--output-last-message` file (only when the real run wrote one) and the
//! exit code. The provider runs it as it would run codex: a real child
//! process, in its own process group, under our timeout. `codex sandbox`
//! (the check before the first call of a run) and `codex --version` are
//! answered apart, and can replay the probes recorded under a hardened
//! unit (`tests/fixtures/codex-sandbox/`).

mod common;

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pimainteno::config::{self, LlmSettings, LoadOptions};
use pimainteno::exit::{self, Exit};
use pimainteno::llm::codex::{Codex, MAX_PROMPT_BYTES};
use pimainteno::llm::{Answer, LlmError, Provider, Purpose, Request, Usage};
use tempfile::TempDir;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/codex-exec");
const SANDBOX_FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/codex-sandbox");
const PROMPT: &str = "Summarize this project in a short markdown report.";

const SUMMARY: &str = "## Demo project\n\n- `calc.py`: one function, `add(a, b)`.\n- `README.md`: one-line description.\n\nNo tests, no CI.";
const SUMMARY_USAGE: Usage = Usage {
    input_tokens: 1234,
    cached_input_tokens: 1000,
    output_tokens: 56,
    reasoning_output_tokens: 0,
};
const EDIT_USAGE: Usage = Usage {
    input_tokens: 200,
    cached_input_tokens: 0,
    output_tokens: 40,
    reasoning_output_tokens: 0,
};

/// What a replayed case must come to.
enum Expect {
    Answer(&'static str, Usage),
    /// The error kind (`LlmError::outcome`), then words the message must hold.
    Error(&'static str, &'static [&'static str]),
}

/// Every recorded case, none skipped: even the ones that look alike differ
/// in what the provider must ignore (reasoning items, commentary messages
/// before the final one, file_change/command_execution items, stderr ERROR
/// lines from refused tool calls) or in how they fail.
fn expectations() -> Vec<(&'static str, Expect)> {
    use Expect::*;
    vec![
        ("a_summary_persistent_home", Answer(SUMMARY, SUMMARY_USAGE)),
        ("a_summary_read_only", Answer(SUMMARY, SUMMARY_USAGE)),
        (
            "a_summary_with_reasoning",
            Answer(
                "## Demo project\n\nOne module, `calc.py`, with `add(a, b)`.",
                Usage {
                    input_tokens: 900,
                    cached_input_tokens: 0,
                    output_tokens: 70,
                    reasoning_output_tokens: 30,
                },
            ),
        ),
        (
            "b_apply_patch_bad_context",
            Answer("The patch did not apply; nothing changed.", EDIT_USAGE),
        ),
        // Two agent_messages: the commentary must not win. (The claim is
        // false: the sandbox refused the patch. Checking the diff is the
        // caller's job; the provider reports what codex said.)
        (
            "b_apply_patch_read_only",
            Answer("Added a docstring to `add` in `calc.py`.", EDIT_USAGE),
        ),
        (
            "b_apply_patch_workspace_write",
            Answer("Added a docstring to `add` in `calc.py`.", EDIT_USAGE),
        ),
        (
            "b_escalation_request_on_request_policy",
            Answer("Tried an escalated command.", EDIT_USAGE),
        ),
        (
            "b_escalation_request_workspace_write",
            Answer("Tried an escalated command.", EDIT_USAGE),
        ),
        (
            "b_shell_edit_read_only",
            Answer("Appended a maintenance note to `README.md`.", EDIT_USAGE),
        ),
        (
            "b_shell_edit_workspace_write",
            Answer("Appended a maintenance note to `README.md`.", EDIT_USAGE),
        ),
        (
            "c_http_500",
            Error("failed", &["high demand", "after 5 retries"]),
        ),
        ("c_http_500_no_retries", Error("failed", &["high demand"])),
        (
            "c_malformed_stream",
            Error(
                "failed",
                &["stream closed before response.completed", "5 retries"],
            ),
        ),
        (
            "c_response_failed",
            Error("failed", &["mock model crashed mid-turn"]),
        ),
        (
            "c_stream_stall_idle_timeout",
            Error("failed", &["idle timeout waiting for SSE", "1 retry"]),
        ),
        // Recorded with `timeout 600` around codex: exit 124 after endless
        // retries. Replayed, the fake exits 124 itself.
        (
            "d_unreachable",
            Error(
                "unavailable",
                &["exit status 124", "13 notices", "waiting for network"],
            ),
        ),
        (
            "d_unreachable_no_retries",
            Error("unavailable", &["exit status 124", "waiting for network"]),
        ),
        (
            "e_bad_api_key_401",
            Error("failed", &["401 Unauthorized: bad api key"]),
        ),
        (
            "e_missing_api_key_env",
            Error("failed", &["Missing environment variable: `MOCK_API_KEY`"]),
        ),
        (
            "f_not_git_repo",
            Error(
                "failed",
                &[
                    "did not start (exit status 1)",
                    "Not inside a trusted directory",
                ],
            ),
        ),
        ("f_not_git_repo_skip_check", Answer(SUMMARY, SUMMARY_USAGE)),
        // Recorded under pimainteno.service in a booted container: the
        // model ran `cat forecast.sh`, then answered.
        ("g_sandbox_blocked_bwrap", Answer(WEATHER, TOOL_USAGE)),
        ("g_sandbox_blocked_seccomp", Answer(WEATHER, TOOL_USAGE)),
        ("g_sandbox_works", Answer(WEATHER, TOOL_USAGE)),
        (
            "f_wire_api_chat",
            Error(
                "failed",
                &[
                    "did not start",
                    "`wire_api = \"chat\"` is no longer supported",
                    "set `wire_api = \"responses\"`",
                ],
            ),
        ),
    ]
}

const WEATHER: &str = "## weather\n\nA shell script, `forecast.sh`, that prints the forecast.";
const TOOL_USAGE: Usage = EDIT_USAGE;

/// What the transcript shows of codex's sandbox failing. The seccomp case
/// failed the same way for the model, but left no `command_execution`
/// item: the race the sandbox probe is there for.
fn sandbox_error_of(case: &str) -> Option<&'static str> {
    match case {
        "g_sandbox_blocked_bwrap" => {
            Some("bwrap: Can't read /proc/sys/kernel/overflowuid: No such file or directory")
        }
        _ => None,
    }
}

/// One recorded run's `meta.json`.
struct Case {
    name: String,
    exit_code: i32,
    last_message_written: bool,
    sandbox: String,
    extra_args: Vec<String>,
}

fn case(name: &str) -> Case {
    let path = format!("{FIXTURES}/{name}.meta.json");
    let meta: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).expect(&path)).expect(&path);
    Case {
        name: name.to_string(),
        exit_code: meta["exit_code"].as_i64().expect("exit_code") as i32,
        last_message_written: meta["last_message_file_written"].as_bool().unwrap(),
        sandbox: meta["sandbox"].as_str().unwrap().to_string(),
        extra_args: meta["extra_args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect(),
    }
}

/// A fake `codex` in its own temp dir, which also holds its records.
struct Fake {
    dir: TempDir,
    script: PathBuf,
}

impl Fake {
    /// `body` runs after the recording preamble, with `$out` set to the
    /// `--output-last-message` path and `$rec` to the records directory.
    fn new(body: &str) -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("codex");
        let text = format!(
            r#"#!/bin/sh
# A fake `codex` (written by tests/codex_provider.rs).
[ -n "$FAKE_PROBE" ] && exit 0
rec='{rec}'
# `codex sandbox ...`: the provider's sandbox check, counted apart from
# the calls; it works unless the test wrote $rec/sandbox.sh.
if [ "$1" = --version ]; then
  echo "$CODEX_HOME" > "$rec/version-home"
  if [ -f "$rec/version" ]; then cat "$rec/version"; else echo "codex-cli 0.169.0"; fi
  exit 0
fi
if [ "$1" = sandbox ]; then
  n=$(cat "$rec/probes" 2>/dev/null || echo 0)
  echo $((n + 1)) > "$rec/probes"
  printf '%s\0' "$@" > "$rec/probe-argv"
  if [ -f "$rec/sandbox.sh" ]; then . "$rec/sandbox.sh"; fi
  exit 0
fi
n=$(cat "$rec/calls" 2>/dev/null || echo 0)
echo $((n + 1)) > "$rec/calls"
printf '%s\0' "$@" > "$rec/argv"
{{
  echo "CODEX_HOME=${{CODEX_HOME-<unset>}}"
  if [ -d "$CODEX_HOME" ]; then echo "home_mode=$(stat -c %a "$CODEX_HOME")"; fi
  echo "CODEX_API_KEY=${{CODEX_API_KEY-<unset>}}"
  echo "stdin=$(readlink /proc/self/fd/0)"
}} > "$rec/env"
out=
prev=
for a in "$@"; do
  if [ "$prev" = --output-last-message ]; then out=$a; fi
  prev=$a
done
{body}
"#,
            rec = dir.path().display()
        );
        fs::write(&script, text).unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        wait_until_executable(&script);
        Fake { dir, script }
    }

    /// Replay a recorded case.
    fn replay(c: &Case) -> Fake {
        let base = format!("{FIXTURES}/{}", c.name);
        let write = if c.last_message_written {
            format!("cat '{base}.last-message.md' > \"$out\"")
        } else {
            String::new()
        };
        Fake::new(&format!(
            "{write}\ncat '{base}.jsonl'\ncat '{base}.stderr.txt' >&2\nexit {}",
            c.exit_code
        ))
    }

    /// Print `stdout` (JSONL written by the test), write `last` (when
    /// given) to the output file, exit with `code`.
    fn scripted(stdout: &str, last: Option<&str>, code: i32) -> Fake {
        let fake = Fake::new(&format!(
            "cat \"$rec/stdout.txt\"\n{}\nexit {code}",
            if last.is_some() {
                "cat \"$rec/last.txt\" > \"$out\""
            } else {
                ""
            }
        ));
        fs::write(fake.dir.path().join("stdout.txt"), stdout).unwrap();
        if let Some(l) = last {
            fs::write(fake.dir.path().join("last.txt"), l).unwrap();
        }
        fake
    }

    fn rec(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `codex exec` runs (the sandbox checks are not counted).
    fn calls(&self) -> usize {
        self.count("calls")
    }

    /// `codex sandbox` runs.
    fn probes(&self) -> usize {
        self.count("probes")
    }

    fn count(&self, name: &str) -> usize {
        fs::read_to_string(self.rec(name))
            .map(|s| s.trim().parse().unwrap())
            .unwrap_or(0)
    }

    /// Make `codex sandbox` run this shell code (it may `exit N`).
    fn sandbox(&self, body: &str) {
        fs::write(self.rec("sandbox.sh"), body).unwrap();
    }

    /// Make `codex sandbox` replay a probe recorded under a hardened unit
    /// (`tests/fixtures/codex-sandbox/`).
    fn sandbox_replay(&self, case: &str) {
        let meta: serde_json::Value = serde_json::from_str(
            &fs::read_to_string(format!("{SANDBOX_FIXTURES}/{case}.meta.json")).unwrap(),
        )
        .unwrap();
        self.sandbox(&format!(
            "cat '{SANDBOX_FIXTURES}/{case}.stderr.txt' >&2\nexit {}",
            meta["exit_code"]
        ));
    }

    fn argv(&self) -> Vec<String> {
        split_nul(&fs::read(self.rec("argv")).expect("the fake codex was not called"))
    }

    fn probe_argv(&self) -> Vec<String> {
        split_nul(&fs::read(self.rec("probe-argv")).expect("the sandbox was not probed"))
    }

    fn env(&self) -> HashMap<String, String> {
        fs::read_to_string(self.rec("env"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

fn split_nul(raw: &[u8]) -> Vec<String> {
    raw.split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8(a.to_vec()).unwrap())
        .collect()
}

/// A script just written may still be open for writing in a child that
/// another test thread forked at that moment (until that child's exec),
/// and exec then fails with ETXTBSY. One successful run proves the write
/// descriptor is gone everywhere.
fn wait_until_executable(script: &Path) {
    for _ in 0..200 {
        match Command::new(script).env("FAKE_PROBE", "1").status() {
            Ok(s) if s.success() => return,
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(Duration::from_millis(10))
            }
            other => panic!("cannot run the fake codex {}: {other:?}", script.display()),
        }
    }
    panic!("the fake codex {} stays busy", script.display());
}

/// A real git repository with one commit, like the recorded runs had.
fn git_repo(dir: &Path) -> PathBuf {
    common::repo_with(
        dir,
        "repo",
        &[
            ("README.md", "# Demo\n\nA tiny demo project.\n"),
            ("calc.py", "def add(a, b):\n    return a + b\n"),
        ],
    )
}

/// Settings through the real configuration loader. `llm_extra` is added to
/// the `[llm]` table.
fn settings(dir: &Path, command: &Path, llm_extra: &str) -> LlmSettings {
    let file = dir.join("pimainteno.toml");
    fs::write(
        &file,
        format!(
            "[llm]\nprovider = \"codex\"\ncommand = \"{}\"\ncodex_home = \"{}\"\n{llm_extra}\n\n[cache]\npath = \"{}\"\n",
            command.display(),
            dir.join("state/codex").display(),
            dir.join("state/store").display()
        ),
    )
    .unwrap();
    config::load(&LoadOptions {
        path: Some(file),
        defaults_if_missing: false,
    })
    .unwrap_or_else(|e| panic!("{e}"))
    .llm
}

fn ask(
    s: &LlmSettings,
    purpose: Purpose,
    workdir: &Path,
    prompt: &str,
) -> Result<Answer, LlmError> {
    Codex::new(s).complete(&Request {
        purpose,
        prompt,
        workdir,
        check: None,
        exclude: &[],
        schema: None,
        sandbox: None,
    })
}

fn exit_of(e: LlmError) -> Exit {
    let direct = e.exit();
    let through_anyhow = exit::code_for(&anyhow::Error::from(e));
    assert_eq!(direct, through_anyhow);
    direct
}

fn toml_list(args: &[String]) -> String {
    serde_json::to_string(args).unwrap()
}

#[test]
fn replays_every_recorded_case() {
    let cases = expectations();
    assert_eq!(cases.len(), 25, "every recorded case is replayed");
    for (name, expect) in cases {
        let c = case(name);
        let tmp = tempfile::tempdir().unwrap();
        let repo = git_repo(tmp.path());
        let fake = Fake::replay(&c);
        let s = settings(
            tmp.path(),
            &fake.script,
            &format!(
                "model = \"gpt-5.5\"\ntimeout = \"30s\"\nargs = {}",
                toml_list(&c.extra_args)
            ),
        );
        let purpose = match c.sandbox.as_str() {
            "read-only" => Purpose::Summary,
            "workspace-write" => Purpose::Patch,
            other => panic!("{name}: sandbox {other}"),
        };
        let result = ask(&s, purpose, &repo, PROMPT);

        // The invocation.
        assert_eq!(fake.calls(), 1, "{name}");
        let argv = fake.argv();
        let out = PathBuf::from(&argv[8]);
        let mut expected: Vec<String> = [
            "exec",
            "--json",
            "--ephemeral",
            "--sandbox",
            &c.sandbox,
            "--cd",
            repo.to_str().unwrap(),
            "--output-last-message",
            out.to_str().unwrap(),
            "-c",
            "analytics.enabled=false",
            "--disable",
            "plugins",
            "-c",
            "model=\"gpt-5.5\"",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        expected.extend(c.extra_args.iter().cloned());
        expected.extend(["--".to_string(), PROMPT.to_string()]);
        assert_eq!(argv, expected, "{name}");
        assert!(!out.starts_with(&repo), "{name}: {}", out.display());
        assert!(
            !out.exists() && !out.parent().unwrap().exists(),
            "{name}: the temporary output is removed"
        );
        let env = fake.env();
        assert_eq!(env["CODEX_HOME"], s.codex_home.to_str().unwrap(), "{name}");
        assert_eq!(env["home_mode"], "700", "{name}: created private");
        assert_eq!(env["CODEX_API_KEY"], "<unset>", "{name}");
        assert_eq!(env["stdin"], "/dev/null", "{name}");

        // The outcome.
        match (expect, result) {
            (Expect::Answer(text, usage), Ok(a)) => {
                assert_eq!(a.text, text, "{name}");
                assert_eq!(a.usage, usage, "{name}");
                assert_eq!(a.sandbox_error.as_deref(), sandbox_error_of(name), "{name}");
                if c.last_message_written {
                    let recorded =
                        fs::read_to_string(format!("{FIXTURES}/{name}.last-message.md")).unwrap();
                    assert_eq!(a.text, recorded, "{name}: same as the -o file");
                }
            }
            (Expect::Error(kind, words), Err(e)) => {
                let msg = e.to_string();
                assert_eq!(e.outcome(), kind, "{name}: {msg}");
                for w in words {
                    assert!(msg.contains(w), "{name}: {w:?} not in {msg:?}");
                }
                assert!(!msg.contains("WARNING: proceeding"), "{name}: noise: {msg}");
                let want = if kind == "unavailable" {
                    Exit::Unavailable
                } else {
                    Exit::Failed
                };
                assert_eq!(exit_of(e), want, "{name}");
            }
            (Expect::Answer(..), Err(e)) => panic!("{name}: expected an answer, got {e}"),
            (Expect::Error(kind, _), Ok(a)) => {
                panic!("{name}: expected {kind}, got an answer {:?}", a.text)
            }
        }
    }
}

#[test]
fn diagnosis_is_read_only_and_no_model_means_no_model_flag() {
    let c = case("a_summary_read_only");
    let tmp = tempfile::tempdir().unwrap();
    let repo = git_repo(tmp.path());
    let fake = Fake::replay(&c);
    let s = settings(tmp.path(), &fake.script, "");
    let a = ask(&s, Purpose::Diagnosis, &repo, PROMPT).unwrap();
    assert_eq!(a.text, SUMMARY);
    let argv = fake.argv();
    assert_eq!(argv[3..5], ["--sandbox", "read-only"]);
    assert!(!argv.iter().any(|a| a.starts_with("model=")), "{argv:?}");
    assert_eq!(argv[argv.len() - 2..], ["--", PROMPT]);
}

#[test]
fn api_key_is_passed_as_codex_api_key() {
    let c = case("a_summary_read_only");
    let tmp = tempfile::tempdir().unwrap();
    let repo = git_repo(tmp.path());
    let key_file = tmp.path().join("key");
    fs::write(&key_file, "sk-test-123\n").unwrap();
    let fake = Fake::replay(&c);
    let s = settings(
        tmp.path(),
        &fake.script,
        &format!("api_key_file = \"{}\"", key_file.display()),
    );
    ask(&s, Purpose::Summary, &repo, PROMPT).unwrap();
    assert_eq!(fake.env()["CODEX_API_KEY"], "sk-test-123");
    assert!(
        !fake.argv().iter().any(|a| a.contains("sk-test-123")),
        "the key is never an argument (visible in ps)"
    );
}

#[test]
fn an_existing_codex_home_is_used_as_it_is() {
    let c = case("a_summary_read_only");
    let tmp = tempfile::tempdir().unwrap();
    let repo = git_repo(tmp.path());
    let fake = Fake::replay(&c);
    let s = settings(tmp.path(), &fake.script, "");
    fs::create_dir_all(&s.codex_home).unwrap();
    fs::set_permissions(&s.codex_home, fs::Permissions::from_mode(0o750)).unwrap();
    ask(&s, Purpose::Summary, &repo, PROMPT).unwrap();
    assert_eq!(fake.env()["home_mode"], "750");
}

#[test]
fn a_codex_home_that_cannot_be_created_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = git_repo(tmp.path());
    let fake = Fake::replay(&case("a_summary_read_only"));
    // A regular file where a parent directory should be: even root fails.
    fs::write(tmp.path().join("blocker"), "").unwrap();
    let mut s = settings(tmp.path(), &fake.script, "");
    s.codex_home = tmp.path().join("blocker/codex");
    let e = ask(&s, Purpose::Summary, &repo, PROMPT).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, LlmError::Failed { .. }), "{msg}");
    assert!(msg.contains("cannot create [llm] codex_home"), "{msg}");
    assert!(msg.contains("blocker/codex"), "{msg}");
    assert_eq!(exit_of(e), Exit::Failed);
    assert_eq!(fake.calls(), 0);
}

#[test]
fn a_hanging_codex_is_killed_with_its_process_group() {
    // What d_unreachable does: retry notices, then nothing, forever. The
    // `sleep` grandchild stands for codex's own children.
    let base = format!("{FIXTURES}/d_unreachable");
    let fake = Fake::new(&format!(
        "cat '{base}.jsonl'\ncat '{base}.stderr.txt' >&2\n: > \"$out\"\n\
         sleep 300 &\necho $! > \"$rec/sleep.pid\"\nwait\necho never"
    ));
    let tmp = tempfile::tempdir().unwrap();
    let repo = git_repo(tmp.path());
    let s = settings(tmp.path(), &fake.script, "timeout = \"1s\"");
    let start = Instant::now();
    let e = ask(&s, Purpose::Summary, &repo, PROMPT).unwrap_err();
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(8), "{elapsed:?}");
    let msg = e.to_string();
    assert!(matches!(e, LlmError::Unavailable { .. }), "{msg}");
    assert!(msg.contains("no answer within 1s"), "{msg}");
    assert!(
        msg.contains(
            "last: Reconnecting... waiting for network (Connection failed: error sending request)"
        ),
        "{msg}"
    );
    assert_eq!(exit_of(e), Exit::Unavailable);
    let pid: i32 = fs::read_to_string(fake.rec("sleep.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!alive(pid), "the grandchild sleep {pid} survived");
}

#[test]
fn a_silent_codex_past_the_timeout_is_a_timeout() {
    let fake = Fake::new("sleep 300 &\necho $! > \"$rec/sleep.pid\"\nwait");
    let tmp = tempfile::tempdir().unwrap();
    let repo = git_repo(tmp.path());
    let s = settings(tmp.path(), &fake.script, "timeout = \"500ms\"");
    let e = ask(&s, Purpose::Summary, &repo, PROMPT).unwrap_err();
    assert!(matches!(e, LlmError::Timeout { .. }), "{e}");
    assert_eq!(exit_of(e), Exit::Unavailable);
    let pid: i32 = fs::read_to_string(fake.rec("sleep.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!alive(pid), "the grandchild sleep {pid} survived");
}

/// Gone, or a zombie waiting for a reaper (a container's PID 1 may never
/// reap): either way it runs no more.
fn alive(pid: i32) -> bool {
    // Give the kernel a moment to deliver SIGKILL after the group kill.
    for _ in 0..50 {
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return false,
            Ok(stat) => {
                let state = stat.rsplit(") ").next().and_then(|r| r.chars().next());
                if matches!(state, Some('Z' | 'X')) {
                    return false;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

#[test]
fn a_missing_program_is_unavailable_with_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = git_repo(tmp.path());
    let s = settings(tmp.path(), &tmp.path().join("no-such-codex"), "");
    let e = ask(&s, Purpose::Summary, &repo, PROMPT).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, LlmError::Unavailable { .. }), "{msg}");
    assert!(msg.contains("no-such-codex"), "{msg}");
    assert!(msg.contains("not found"), "{msg}");
    assert!(msg.contains("npm install -g @openai/codex"), "{msg}");
    assert!(msg.contains("[llm] command"), "{msg}");
    assert_eq!(exit_of(e), Exit::Unavailable);
}

#[test]
fn a_prompt_over_the_argument_limit_is_refused_before_running() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = git_repo(tmp.path());
    let fake = Fake::replay(&case("a_summary_read_only"));
    let s = settings(tmp.path(), &fake.script, "");
    let prompt = "x".repeat(130 * 1024);
    let e = ask(&s, Purpose::Summary, &repo, &prompt).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, LlmError::Failed { .. }), "{msg}");
    assert!(msg.contains("130 KiB") && msg.contains("128 KiB"), "{msg}");
    assert_eq!(exit_of(e), Exit::Failed);
    assert_eq!(fake.calls(), 0);

    // Right at the limit it goes through as one argument.
    let prompt = "y".repeat(MAX_PROMPT_BYTES);
    ask(&s, Purpose::Summary, &repo, &prompt).unwrap();
    assert_eq!(fake.argv().last().unwrap().len(), MAX_PROMPT_BYTES);
}

const COMPLETED: &str = r#"{"type":"turn.completed","usage":{"input_tokens":5,"cached_input_tokens":0,"cache_write_input_tokens":0,"output_tokens":1,"reasoning_output_tokens":0}}"#;
const MESSAGE: &str =
    r#"{"type":"item.completed","item":{"id":"item_0","type":"agent_message","text":"hello"}}"#;

fn invalid(stdout: &str, last: Option<&str>, code: i32, words: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let repo = git_repo(tmp.path());
    let fake = Fake::scripted(stdout, last, code);
    let s = settings(tmp.path(), &fake.script, "");
    let e = ask(&s, Purpose::Summary, &repo, PROMPT).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, LlmError::Invalid { .. }), "{msg}");
    for w in words {
        assert!(msg.contains(w), "{w:?} not in {msg:?}");
    }
    assert_eq!(exit_of(e), Exit::Failed);
}

#[test]
fn garbage_on_stdout_is_invalid() {
    invalid(
        "Hello, I am not JSON\n{\"half\":\n",
        None,
        0,
        &[
            "did not write its final message",
            "2 lines of stdout",
            "Hello, I am not JSON",
        ],
    );
}

#[test]
fn exit_0_without_an_agent_message_is_invalid() {
    invalid(
        &format!("{COMPLETED}\n"),
        Some("hello"),
        0,
        &["without an agent_message"],
    );
}

#[test]
fn exit_0_without_turn_completed_is_invalid() {
    invalid(
        &format!("{MESSAGE}\n"),
        Some("hello"),
        0,
        &["turn.completed"],
    );
}

#[test]
fn exit_0_with_an_empty_output_file_is_invalid() {
    invalid(
        &format!("{MESSAGE}\n{COMPLETED}\n"),
        Some(""),
        0,
        &["is empty"],
    );
}

#[test]
fn a_crash_mid_turn_is_a_failure_naming_the_status() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = git_repo(tmp.path());
    let fake = Fake::new(&format!(
        "echo '{MESSAGE}'\necho 'thread panicked at core/src/x.rs' >&2\nkill -KILL $$"
    ));
    let s = settings(tmp.path(), &fake.script, "");
    let e = ask(&s, Purpose::Summary, &repo, PROMPT).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, LlmError::Failed { .. }), "{msg}");
    assert!(msg.contains("signal 9"), "{msg}");
    assert!(msg.contains("thread panicked"), "{msg}");
}

/// pm-summarize, the real binary, with codex as the provider.
#[test]
fn pm_summarize_writes_codex_md_then_skips_an_unchanged_project() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = git_repo(tmp.path());
    let fake = Fake::replay(&case("a_summary_read_only"));
    let config = tmp.path().join("pimainteno.toml");
    fs::write(
        &config,
        format!(
            "[llm]\nprovider = \"codex\"\ncommand = \"{}\"\nmodel = \"gpt-5.5\"\ntimeout = \"30s\"\n\n\
             [cache]\npath = \"{}\"\n\n[[project]]\nname = \"demo\"\npath = \"{}\"\n",
            fake.script.display(),
            tmp.path().join("store").display(),
            repo.display()
        ),
    )
    .unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_pm-summarize"))
            .arg("--config")
            .arg(&config)
            .env_remove("PIMAINTENO_CONFIG")
            .env_remove("INVOCATION_ID")
            .env_remove("JOURNAL_STREAM")
            .output()
            .unwrap()
    };

    let first = run();
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert_eq!(first.status.code(), Some(0), "{stderr}");
    assert_eq!(fake.calls(), 1);
    let md = fs::read_to_string(repo.join("codex.md")).unwrap();
    let (header, body) = md.split_once("\n\n").unwrap();
    assert!(
        header.starts_with("<!-- Written by PiMainteno") && header.contains("provider codex"),
        "{header}"
    );
    assert!(header.contains("model gpt-5.5"), "{header}");
    assert_eq!(body, format!("{SUMMARY}\n"));
    // codex ran in the project, read-only, with its home beside the store.
    let argv = fake.argv();
    assert_eq!(
        argv[3..7],
        ["--sandbox", "read-only", "--cd", repo.to_str().unwrap()]
    );
    assert_eq!(
        fake.env()["CODEX_HOME"],
        tmp.path().join("codex").to_str().unwrap()
    );

    let second = run();
    assert_eq!(
        second.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(fake.calls(), 1, "an unchanged project costs no codex call");
    assert_eq!(fs::read_to_string(repo.join("codex.md")).unwrap(), md);
}

/// The same binary when codex cannot reach its provider: exit 69, and the
/// project is retried next time (no summary stored).
#[test]
fn pm_summarize_exits_69_when_codex_is_unreachable() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = git_repo(tmp.path());
    let base = format!("{FIXTURES}/d_unreachable");
    let fake = Fake::new(&format!(
        "cat '{base}.jsonl'\n: > \"$out\"\nsleep 300 &\nwait"
    ));
    let config = tmp.path().join("pimainteno.toml");
    fs::write(
        &config,
        format!(
            "[llm]\nprovider = \"codex\"\ncommand = \"{}\"\ntimeout = \"1s\"\n\n\
             [cache]\npath = \"{}\"\n\n[[project]]\nname = \"demo\"\npath = \"{}\"\n",
            fake.script.display(),
            tmp.path().join("store").display(),
            repo.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pm-summarize"))
        .arg("--config")
        .arg(&config)
        .env_remove("PIMAINTENO_CONFIG")
        .env_remove("INVOCATION_ID")
        .env_remove("JOURNAL_STREAM")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(stderr.contains("waiting for network"), "{stderr}");
    assert!(!repo.join("codex.md").exists());
}

// ---- codex's own sandbox (bubblewrap) under a hardened unit ----

/// Every failure recorded under pimainteno.service's hardening, one
/// relaxation of the codex drop-in taken away at a time: the check fails
/// before any model is asked, quotes bubblewrap's (or codex's) line and
/// says what to look at.
#[test]
fn a_sandbox_that_cannot_start_fails_the_check_and_says_why() {
    for (name, line, words) in [
        (
            "proc_subset",
            "bwrap: Can't read /proc/sys/kernel/overflowuid: No such file or directory",
            &["exit status 1"][..],
        ),
        (
            "namespaces",
            "bwrap: No permissions to create a new namespace",
            &["sysctl user.max_user_namespaces"][..],
        ),
        (
            "netlink",
            "bwrap: loopback: Failed to create NETLINK_ROUTE socket",
            &[][..],
        ),
        (
            "mount",
            "bwrap: Failed to make / slave: Operation not permitted",
            &[][..],
        ),
        (
            "pivot_root",
            "bwrap: pivot_root: Operation not permitted",
            &[][..],
        ),
        (
            "seccomp",
            "error applying Linux sandbox restrictions: Sandbox(SeccompInstall(",
            &["exit status 101"][..],
        ),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let fake = Fake::replay(&case("a_summary_read_only"));
        fake.sandbox_replay(name);
        let s = settings(tmp.path(), &fake.script, "");
        let codex = Codex::new(&s);
        let e = codex.prepare(Purpose::Summary).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, LlmError::Sandbox { .. }), "{name}: {msg}");
        assert_eq!(e.outcome(), "sandbox");
        assert!(msg.contains("no model was asked"), "{name}: {msg}");
        assert!(msg.contains(line), "{name}: {line:?} not in {msg}");
        assert!(
            msg.contains("`codex sandbox -P :read-only -C "),
            "{name}: {msg}"
        );
        for w in words {
            assert!(msg.contains(w), "{name}: {w:?} not in {msg}");
        }
        assert!(!msg.contains("WARNING: proceeding"), "{name}: noise: {msg}");
        assert_eq!(exit_of(e), Exit::Unavailable, "{name}");
        assert_eq!(fake.calls(), 0, "{name}: no model call");
        assert_eq!(fake.probes(), 1, "{name}");
    }
}

#[test]
fn the_sandbox_is_probed_once_per_mode_like_the_call_would_use_it() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::replay(&case("a_summary_read_only"));
    fake.sandbox_replay("ok");
    let s = settings(tmp.path(), &fake.script, "");
    let codex = Codex::new(&s);
    codex.prepare(Purpose::Summary).unwrap();
    assert_eq!(
        fake.probe_argv(),
        [
            "sandbox",
            "-P",
            ":read-only",
            "-C",
            s.codex_home.to_str().unwrap(),
            "--",
            "true"
        ]
    );
    // codex_home was created for it, private, as for a call.
    let mode = fs::metadata(&s.codex_home).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    codex.prepare(Purpose::Diagnosis).unwrap();
    codex.prepare(Purpose::Summary).unwrap();
    assert_eq!(fake.probes(), 1, "read-only is checked once");
    codex.prepare(Purpose::Patch).unwrap();
    assert_eq!(fake.probes(), 2);
    assert_eq!(fake.probe_argv()[2], ":workspace");

    // A failure is remembered too: the second project of a run gets the
    // same answer without another probe.
    let fake = Fake::replay(&case("a_summary_read_only"));
    fake.sandbox_replay("netlink");
    let s = settings(tmp.path(), &fake.script, "");
    let codex = Codex::new(&s);
    let first = codex.prepare(Purpose::Summary).unwrap_err().to_string();
    let again = codex.prepare(Purpose::Summary).unwrap_err().to_string();
    assert_eq!(first, again);
    assert_eq!(fake.probes(), 1);
}

#[test]
fn a_hanging_sandbox_is_killed_and_named() {
    // Refused `capset` makes bubblewrap hang (recorded: killed after 30 s).
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::replay(&case("a_summary_read_only"));
    fake.sandbox("sleep 300 &\necho $! > \"$rec/sleep.pid\"\nwait");
    let s = settings(tmp.path(), &fake.script, "timeout = \"1s\"");
    let start = Instant::now();
    let e = Codex::new(&s).prepare(Purpose::Summary).unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
    let msg = e.to_string();
    assert!(matches!(e, LlmError::Sandbox { .. }), "{msg}");
    assert!(msg.contains("did not finish within 1 s"), "{msg}");
    let pid: i32 = fs::read_to_string(fake.rec("sleep.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!alive(pid), "the probe's child {pid} survived");
}

#[test]
fn a_codex_without_the_sandbox_command_is_not_blocked() {
    // What clap prints in a codex that has no `sandbox -P`.
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::replay(&case("a_summary_read_only"));
    fake.sandbox(
        "echo \"error: unexpected argument '-P' found\" >&2\necho \"Usage: codex sandbox linux [OPTIONS]\" >&2\nexit 2",
    );
    let s = settings(tmp.path(), &fake.script, "");
    Codex::new(&s).prepare(Purpose::Summary).unwrap();
}

/// A configuration with two codex projects for the real binaries.
struct Setup {
    _tmp: TempDir,
    config: PathBuf,
    repos: Vec<PathBuf>,
    fake: Fake,
}

fn two_projects(fake: Fake) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let repos: Vec<PathBuf> = ["alpha", "beta"]
        .iter()
        .map(|n| {
            common::repo_with(
                tmp.path(),
                n,
                &[("README.md", "# Demo\n"), ("forecast.sh", "echo sunny\n")],
            )
        })
        .collect();
    let config = tmp.path().join("pimainteno.toml");
    let mut text = format!(
        "[llm]\nprovider = \"codex\"\ncommand = \"{}\"\nmodel = \"gpt-5.5\"\ntimeout = \"30s\"\n\n\
         [cache]\npath = \"{}\"\n",
        fake.script.display(),
        tmp.path().join("store").display(),
    );
    for r in &repos {
        text.push_str(&format!("\n[[project]]\npath = \"{}\"\n", r.display()));
    }
    fs::write(&config, text).unwrap();
    Setup {
        _tmp: tmp,
        config,
        repos,
        fake,
    }
}

impl Setup {
    /// pm-summarize with this configuration: exit code and stderr.
    fn summarize(&self, args: &[&str]) -> (Option<i32>, String) {
        let (code, _, stderr) = run_bin(env!("CARGO_BIN_EXE_pm-summarize"), &self.config, args);
        (code, stderr)
    }

    /// `pimainteno ARGS` with this configuration: its stdout.
    fn admin(&self, args: &[&str]) -> String {
        let (code, stdout, stderr) = run_bin(env!("CARGO_BIN_EXE_pimainteno"), &self.config, args);
        assert_eq!(code, Some(0), "pimainteno {args:?}: {stderr}");
        stdout
    }
}

fn run_bin(bin: &str, config: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(bin)
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("PIMAINTENO_CONFIG")
        .env_remove("INVOCATION_ID")
        .env_remove("JOURNAL_STREAM")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// pm-summarize when codex's sandbox cannot start: no model is asked for
/// any project, the run exits 69 naming the cause, nothing is written, and
/// `pimainteno status` shows it.
#[test]
fn pm_summarize_asks_no_model_when_the_sandbox_cannot_start() {
    let fake = Fake::replay(&case("a_summary_read_only"));
    fake.sandbox_replay("proc_subset");
    let setup = two_projects(fake);
    let (code, stderr) = setup.summarize(&[]);
    assert_eq!(code, Some(69), "{stderr}");
    assert_eq!(setup.fake.calls(), 0, "no model was asked");
    assert_eq!(setup.fake.probes(), 1, "one check for the whole run");
    assert!(
        stderr.contains("bwrap: Can't read /proc/sys/kernel/overflowuid"),
        "{stderr}"
    );
    assert!(stderr.contains("no model was asked"), "{stderr}");
    for r in &setup.repos {
        assert!(!r.join("codex.md").exists());
        let name = r.file_name().unwrap().to_str().unwrap();
        assert!(stderr.contains(&format!("{name}: ")), "{name}: {stderr}");
    }

    let status = setup.admin(&["status"]);
    assert!(
        status.contains("codex sandbox: FAILING at the last run"),
        "{status}"
    );
    assert!(
        status.contains("MESSAGE_ID=f20f415e6fb1426f86a106401b368927"),
        "{status}"
    );
    assert!(status.contains("sandbox at "), "{status}");
    assert!(
        status.contains("bwrap: Can't read /proc/sys/kernel/overflowuid"),
        "{status}"
    );
    // No model call, so none recorded.
    let history = setup.admin(&["history"]);
    assert!(!history.contains("llm_call"), "{history}");

    // Fixed: the next run summarizes, and status no longer complains.
    setup.fake.sandbox("exit 0");
    let (code, stderr) = setup.summarize(&[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(setup.fake.calls(), 2);
    let status = setup.admin(&["status"]);
    assert!(!status.contains("codex sandbox"), "{status}");
}

/// The check passed, yet the model's command failed in the sandbox (the
/// transcript recorded under the shipped hardening): the summary is kept,
/// but marked, warned about, and asked for again next time.
#[test]
fn a_summary_made_while_commands_failed_in_the_sandbox_is_marked() {
    let fake = Fake::replay(&case("g_sandbox_blocked_bwrap"));
    let setup = two_projects(fake);
    let (code, stderr) = setup.summarize(&["--project", "alpha"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("written without reading the project"),
        "{stderr}"
    );
    assert!(
        stderr.contains("bwrap: Can't read /proc/sys/kernel/overflowuid"),
        "{stderr}"
    );
    assert!(
        stderr.contains("it is asked again at the next run"),
        "{stderr}"
    );
    let md = fs::read_to_string(setup.repos[0].join("codex.md")).unwrap();
    assert!(
        md.contains("> **Warning:** written without reading the project"),
        "{md}"
    );
    assert!(md.contains(&format!("{WEATHER}\n")), "{md}");

    let status = setup.admin(&["status"]);
    assert!(status.contains("codex sandbox: FAILING"), "{status}");
    assert!(status.contains("summarized_blind at "), "{status}");
    let history = setup.admin(&["history", "alpha"]);
    assert!(
        history.contains("written without reading the project"),
        "{history}"
    );

    // Not a summary to keep: the unchanged project is asked again.
    let (code, stderr) = setup.summarize(&["--project", "alpha"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(setup.fake.calls(), 2);
}

#[test]
fn a_summary_made_with_a_working_sandbox_is_not_marked() {
    let fake = Fake::replay(&case("g_sandbox_works"));
    let setup = two_projects(fake);
    let (code, stderr) = setup.summarize(&["--project", "alpha"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("sandbox"), "{stderr}");
    let md = fs::read_to_string(setup.repos[0].join("codex.md")).unwrap();
    assert!(!md.contains("Warning"), "{md}");
    let (code, _) = setup.summarize(&["--project", "alpha"]);
    assert_eq!(code, Some(0));
    assert_eq!(setup.fake.calls(), 1, "unchanged: not asked again");
}

// ---- pimainteno check-config about codex ----

fn check_config(command: &str) -> (Option<i32>, String, TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("pimainteno.toml");
    fs::write(
        &config,
        format!(
            "[llm]\nprovider = \"codex\"\ncommand = \"{command}\"\ncodex_home = \"{}\"\n\n\
             [cache]\npath = \"{}\"\n",
            tmp.path().join("codex-home").display(),
            tmp.path().join("store").display()
        ),
    )
    .unwrap();
    let (code, _, stderr) = run_bin(env!("CARGO_BIN_EXE_pimainteno"), &config, &["check-config"]);
    (code, stderr, tmp)
}

#[test]
fn check_config_warns_about_a_codex_the_service_cannot_find() {
    // Not where systemd looks (this machine has no systemd: its default
    // PATH), whatever the PATH of the shell.
    let (code, stderr, _tmp) = check_config("codex-not-installed-7f3a");
    assert_eq!(code, Some(0), "a warning, not an error: {stderr}");
    assert!(
        stderr.contains(
            "warning: [llm] command: \"codex-not-installed-7f3a\" is not found in the PATH \
             pimainteno.service runs with (/usr/local/sbin:/usr/local/bin:"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("sudo npm install -g @openai/codex"),
        "{stderr}"
    );
}

#[test]
fn check_config_warns_about_a_codex_older_than_the_tested_one() {
    let fake = Fake::replay(&case("a_summary_read_only"));
    fs::write(fake.rec("version"), "codex-cli 0.150.2\n").unwrap();
    let (code, stderr, tmp) = check_config(fake.script.to_str().unwrap());
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(
            "is codex 0.150.2, older than 0.169.0, the version PiMainteno was tested with"
        ),
        "{stderr}"
    );
    // `codex --version` writes into CODEX_HOME: it got a throwaway one.
    let home = fs::read_to_string(fake.rec("version-home")).unwrap();
    assert!(!home.trim().is_empty());
    assert!(!Path::new(home.trim()).exists(), "{home} was not removed");
    assert!(!tmp.path().join("codex-home").exists());
    assert_eq!(fake.calls(), 0);

    fs::write(fake.rec("version"), "codex-cli 0.169.0\n").unwrap();
    let (_, stderr, _tmp) = check_config(fake.script.to_str().unwrap());
    assert!(!stderr.contains("warning"), "{stderr}");
    fs::write(fake.rec("version"), "codex-cli 0.171.3\n").unwrap();
    let (_, stderr, _tmp) = check_config(fake.script.to_str().unwrap());
    assert!(!stderr.contains("warning"), "{stderr}");
    fs::write(fake.rec("version"), "something else\n").unwrap();
    let (_, stderr, _tmp) = check_config(fake.script.to_str().unwrap());
    assert!(stderr.contains("cannot tell the version of"), "{stderr}");
}

#[test]
fn a_spent_budget_does_not_even_start_codex() {
    let fake = Fake::replay(&case("a_summary_read_only"));
    let setup = two_projects(fake);
    let mut text = fs::read_to_string(&setup.config).unwrap();
    text = text.replace(
        "timeout = \"30s\"\n",
        "timeout = \"30s\"\ndaily_token_budget = 100\n",
    );
    fs::write(&setup.config, text).unwrap();
    let (code, stderr) = setup.summarize(&["--project", "alpha"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!((setup.fake.probes(), setup.fake.calls()), (1, 1));
    // 1290 tokens spent of 100: beta waits for tomorrow, without a probe.
    let (code, stderr) = setup.summarize(&["--project", "beta"]);
    assert_eq!(code, Some(75), "{stderr}");
    assert_eq!((setup.fake.probes(), setup.fake.calls()), (1, 1));
}

#[test]
fn an_unknown_sandbox_failure_is_quoted_without_a_guess() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::replay(&case("a_summary_read_only"));
    fake.sandbox("echo 'WARNING: proceeding, even though x' >&2\necho 'Error: landlock went away' >&2\nexit 1");
    let s = settings(tmp.path(), &fake.script, "");
    let msg = Codex::new(&s)
        .prepare(Purpose::Summary)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("failed (exit status 1): Error: landlock went away."),
        "{msg}"
    );
    assert!(!msg.contains("capset") && !msg.contains("WARNING"), "{msg}");
    assert!(msg.contains("by hand to see it fail"), "{msg}");
}

#[test]
fn a_diagnosis_passes_its_schema_and_runs_outside_a_repository() {
    // The schema file's content as codex sees it, then a recorded answer.
    let fake = Fake::new(&format!(
        "prev=\nfor a in \"$@\"; do [ \"$prev\" = --output-schema ] && cp \"$a\" \"$rec/schema.json\"; prev=$a; done\n\
         cat '{FIXTURES}/a_summary_read_only.last-message.md' > \"$out\"\n\
         cat '{FIXTURES}/a_summary_read_only.jsonl'\nexit 0"
    ));
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), &fake.script, "");
    let empty = dir.path().join("scratch");
    fs::create_dir_all(&empty).unwrap();
    let schema = serde_json::json!({"type": "object", "required": ["cause"]});
    Codex::new(&s)
        .complete(&Request {
            purpose: Purpose::Diagnosis,
            prompt: "why did it fail?",
            workdir: &empty,
            check: None,
            exclude: &[],
            schema: Some(&schema),
            sandbox: None,
        })
        .unwrap();
    let argv = fake.argv();
    assert!(argv.contains(&"--output-schema".to_string()), "{argv:?}");
    assert!(
        argv.contains(&"--skip-git-repo-check".to_string()),
        "{argv:?}"
    );
    let sent: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(fake.rec("schema.json")).unwrap()).unwrap();
    assert_eq!(sent, schema);
    // A summary gets neither.
    ask(&s, Purpose::Summary, &empty, "summarize").ok();
    let argv = fake.argv();
    assert!(
        !argv
            .iter()
            .any(|a| a == "--output-schema" || a == "--skip-git-repo-check"),
        "{argv:?}"
    );
}
