//! The `openai` provider against a scripted HTTP server on 127.0.0.1, and
//! `pm-summarize` end to end with it.

mod common;
mod openai_server;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use openai_server::{Seen, Server, Step, closed_port};
use pimainteno::config::{LoadOptions, Settings};
use pimainteno::exit::{Exit, code_for};
use pimainteno::llm::openai::OpenAi;
use pimainteno::llm::{Answer, LlmError, Provider, Purpose, Request, Usage};

const PROMPT: &str = "Summarize this repository.\nIt has a README.";

/// Settings loaded the way the binaries load them, from a temp file.
fn settings(dir: &Path, llm: &str) -> Settings {
    let file = dir.join("pimainteno.toml");
    std::fs::write(
        &file,
        format!(
            "[llm]\nprovider = \"openai\"\nmodel = \"test-model\"\n{llm}\n[cache]\npath = \"{}\"\n",
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

struct Case {
    dir: tempfile::TempDir,
    provider: OpenAi,
}

impl Case {
    /// A provider for `endpoint` with extra `[llm]` lines; backoff 10 ms.
    fn new(endpoint: &str, llm: &str) -> Case {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), &format!("endpoint = \"{endpoint}\"\n{llm}"));
        let provider = OpenAi::new(&s.llm).with_backoff(Duration::from_millis(10));
        Case { dir, provider }
    }

    fn ask(&self) -> Result<Answer, LlmError> {
        self.provider.complete(&Request {
            purpose: Purpose::Summary,
            prompt: PROMPT,
            workdir: self.dir.path(),
            check: None,
            exclude: &[],
            schema: None,
            sandbox: None,
        })
    }
}

fn exit_of(e: LlmError) -> Exit {
    code_for(&anyhow::Error::from(e))
}

fn assert_chat_request(seen: &Seen) {
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/v1/chat/completions");
    assert!(
        seen.header("content-type")
            .is_some_and(|v| v.starts_with("application/json")),
        "{seen:?}"
    );
    let body = seen.json();
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["stream"], false);
    let messages = body["messages"].as_array().expect("messages");
    let user = messages.last().unwrap();
    assert_eq!(user["role"], "user");
    assert_eq!(user["content"], PROMPT);
}

#[test]
fn answer_and_usage_without_a_key() {
    let server = Server::start(vec![Step::answer("## Summary\n\nAll good.")]);
    let case = Case::new(&server.endpoint(), "");
    let answer = case.ask().unwrap();
    assert_eq!(answer.text, "## Summary\n\nAll good.");
    assert_eq!(
        answer.usage,
        Usage {
            input_tokens: 321,
            cached_input_tokens: 300,
            output_tokens: 45,
            reasoning_output_tokens: 7,
        }
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_chat_request(&seen[0]);
    assert_eq!(seen[0].header("authorization"), None);
}

#[test]
fn the_key_is_sent_as_a_bearer_token_and_a_trailing_slash_is_fine() {
    let server = Server::start(vec![Step::answer("ok")]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key"), "sk-test-123\n").unwrap();
    let case = Case::new(
        &format!("{}/", server.endpoint()),
        &format!("api_key_file = \"{}\"", dir.path().join("key").display()),
    );
    assert_eq!(case.ask().unwrap().text, "ok");
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_chat_request(&seen[0]);
    assert_eq!(seen[0].header("authorization"), Some("Bearer sk-test-123"));
}

#[test]
fn a_server_error_is_retried() {
    let server = Server::start(vec![
        Step::reply(500, r#"{"error":{"message":"model is loading"}}"#),
        Step::answer("second time lucky"),
    ]);
    let case = Case::new(&server.endpoint(), "retries = 3");
    assert_eq!(case.ask().unwrap().text, "second time lucky");
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert_chat_request(&seen[1]);
}

#[test]
fn retry_after_is_honoured() {
    let server = Server::start(vec![
        Step::reply(429, r#"{"error":{"message":"Rate limit reached"}}"#)
            .header("Retry-After", "1"),
        Step::answer("after the wait"),
    ]);
    // Backoff alone would wait 10-20 ms: only Retry-After explains a second.
    let case = Case::new(&server.endpoint(), "retries = 2\ntimeout = \"30s\"");
    let start = Instant::now();
    assert_eq!(case.ask().unwrap().text, "after the wait");
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    assert_eq!(server.requests(), 2);
}

#[test]
fn a_retry_after_beyond_the_cap_gives_up_at_once() {
    let server = Server::start(vec![
        Step::reply(429, r#"{"error":{"message":"Quota exceeded"}}"#).header("Retry-After", "3600"),
    ]);
    let case = Case::new(&server.endpoint(), "retries = 3");
    let start = Instant::now();
    let err = case.ask().unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(matches!(err, LlmError::Failed { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("429") && msg.contains("Quota exceeded") && msg.contains("1h"),
        "{msg}"
    );
    assert_eq!(server.requests(), 1);
    assert_eq!(exit_of(err), Exit::Failed);
}

#[test]
fn server_errors_until_the_retries_run_out() {
    let server = Server::start(
        (0..3)
            .map(|_| Step::reply(503, "upstream overloaded"))
            .collect(),
    );
    let case = Case::new(&server.endpoint(), "retries = 2");
    let err = case.ask().unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, LlmError::Failed { .. }), "{msg}");
    assert!(
        msg.contains("503") && msg.contains("upstream overloaded") && msg.contains("3 attempts"),
        "{msg}"
    );
    assert_eq!(server.requests(), 3);
    assert_eq!(exit_of(err), Exit::Failed);
}

#[test]
fn garbage_is_invalid() {
    let server = Server::start(vec![Step::reply(200, "<html>this is not JSON</html>")]);
    let case = Case::new(&server.endpoint(), "");
    let err = case.ask().unwrap_err();
    assert!(matches!(err, LlmError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("not JSON"), "{err}");
    assert_eq!(server.requests(), 1);
    assert_eq!(exit_of(err), Exit::Failed);
}

#[test]
fn an_empty_answer_is_invalid() {
    let server = Server::start(vec![Step::answer("   ")]);
    let case = Case::new(&server.endpoint(), "");
    let err = case.ask().unwrap_err();
    assert!(matches!(err, LlmError::Invalid { .. }), "{err}");
    assert_eq!(exit_of(err), Exit::Failed);
}

#[test]
fn an_oversized_answer_is_refused() {
    let text = "x".repeat(5 * 1024 * 1024);
    let server = Server::start(vec![Step::answer(&text)]);
    let case = Case::new(&server.endpoint(), "");
    let err = case.ask().unwrap_err();
    assert!(matches!(err, LlmError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("larger than 4 MiB"), "{err}");
}

#[test]
fn a_hanging_server_times_out() {
    let server = Server::start(vec![Step::Hang, Step::Hang, Step::Hang]);
    let case = Case::new(&server.endpoint(), "timeout = \"1500ms\"\nretries = 2");
    let start = Instant::now();
    let err = case.ask().unwrap_err();
    let elapsed = start.elapsed();
    assert!(matches!(err, LlmError::Timeout { .. }), "{err}");
    assert!(elapsed >= Duration::from_millis(1500), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert!(
        err.to_string().contains("1.5s") || err.to_string().contains("1500ms"),
        "{err}"
    );
    assert_eq!(server.requests(), 1);
    assert_eq!(exit_of(err), Exit::Unavailable);
}

#[test]
fn nobody_listening_is_unavailable_after_the_retries() {
    let port = closed_port();
    let dir = tempfile::tempdir().unwrap();
    let s = settings(
        dir.path(),
        &format!("endpoint = \"http://127.0.0.1:{port}/v1\"\nretries = 2"),
    );
    let provider = OpenAi::new(&s.llm).with_backoff(Duration::from_millis(100));
    let start = Instant::now();
    let err = provider
        .complete(&Request {
            purpose: Purpose::Summary,
            prompt: PROMPT,
            workdir: dir.path(),
            check: None,
            exclude: &[],
            schema: None,
            sandbox: None,
        })
        .unwrap_err();
    let elapsed = start.elapsed();
    let msg = err.to_string();
    assert!(matches!(err, LlmError::Unavailable { .. }), "{msg}");
    assert!(msg.to_lowercase().contains("refused"), "{msg}");
    assert!(msg.contains("after 3 attempts"), "{msg}");
    // Two backoffs of at least 50 ms and 100 ms (half of 100 ms and 200 ms).
    assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
    assert_eq!(exit_of(err), Exit::Unavailable);
}

#[test]
fn a_bad_key_fails_at_once_with_the_servers_message() {
    let server = Server::start(vec![Step::reply(
        401,
        r#"{"error":{"message":"Incorrect API key provided: sk-wrong.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
    )]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key"), "sk-wrong").unwrap();
    let case = Case::new(
        &server.endpoint(),
        &format!(
            "retries = 3\napi_key_file = \"{}\"",
            dir.path().join("key").display()
        ),
    );
    let err = case.ask().unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, LlmError::Failed { .. }), "{msg}");
    assert!(msg.contains("401"), "{msg}");
    assert!(msg.contains("Incorrect API key provided"), "{msg}");
    assert_eq!(server.requests(), 1);
    assert_eq!(exit_of(err), Exit::Failed);
}

// --- pm-summarize end to end ---------------------------------------------

fn project(root: &Path) -> PathBuf {
    common::repo_with(
        root,
        "demo",
        &[
            ("README.md", "# Demo\n\nA demo project.\n"),
            ("main.sh", "#!/bin/sh\necho demo\n"),
        ],
    )
}

fn pm_summarize(config: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pm-summarize"))
        .arg("--config")
        .arg(config)
        .env_remove("PIMAINTENO_CONFIG")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env("NO_COLOR", "1")
        .output()
        .expect("pm-summarize runs")
}

#[test]
fn pm_summarize_writes_the_answer_and_skips_an_unchanged_project() {
    let server = Server::start(vec![Step::answer(
        "## Demo\n\nA demo project that echoes \"demo\".",
    )]);
    let tmp = tempfile::tempdir().unwrap();
    let repo = project(tmp.path());
    let config = tmp.path().join("pimainteno.toml");
    std::fs::write(
        &config,
        format!(
            "[llm]\nprovider = \"openai\"\nendpoint = \"{}\"\nmodel = \"test-model\"\nretries = 0\n\n\
             [cache]\npath = \"{}\"\n\n[[project]]\npath = \"{}\"\n",
            server.endpoint(),
            tmp.path().join("store").display(),
            repo.display()
        ),
    )
    .unwrap();

    let first = pm_summarize(&config);
    assert_eq!(
        first.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&first.stderr)
    );
    let summary = std::fs::read_to_string(repo.join("codex.md")).expect("codex.md written");
    assert!(
        summary.contains("A demo project that echoes \"demo\"."),
        "{summary}"
    );
    assert!(summary.contains("provider openai"), "{summary}");
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_chat_request_for_summary(&seen[0]);

    let second = pm_summarize(&config);
    assert_eq!(
        second.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(
        server.requests(),
        1,
        "an unchanged project costs no request"
    );
}

fn assert_chat_request_for_summary(seen: &Seen) {
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/v1/chat/completions");
    let body = seen.json();
    assert_eq!(body["model"], "test-model");
    let prompt = body["messages"].as_array().unwrap().last().unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string();
    // The provider cannot read files: the prompt carries the repository.
    assert!(
        prompt.contains("README.md") || prompt.contains("A demo project."),
        "{prompt}"
    );
}

#[test]
fn a_summary_sends_no_secret_of_the_repository_nor_the_key() {
    let secrets = common::FakeSecrets::new();
    let key = "pm-test-llm-key-5e4d3c2b1a";
    let env_value = "zz-only-in-dotenv-42";
    let tmp = tempfile::tempdir().unwrap();
    // A README someone pasted a log into, the LLM key included; a Makefile
    // with a token; a tracked .env; a commit subject with a token.
    let readme = format!(
        "# Demo\n\nWhen it fails it prints:\n\n```\n{}\nusing {key}\n```\n",
        secrets.lines().join("\n")
    );
    let makefile = format!(
        "deploy:\n\tcurl -u deploy:{} https://deploy.example.invalid\n",
        secrets.items[0].0
    );
    let repo = common::repo_with(
        tmp.path(),
        "demo",
        &[
            ("README.md", &readme),
            ("Makefile", &makefile),
            (".env", &format!("SERIAL={env_value}\n")),
        ],
    );
    std::fs::write(repo.join("main.sh"), "echo demo\n").unwrap();
    common::git(&repo, &["add", "."]);
    common::git(
        &repo,
        &[
            "commit",
            "-qm",
            &format!("ci: rotate GITHUB_TOKEN={}", secrets.items[4].0),
        ],
    );
    std::fs::write(tmp.path().join("key"), format!("{key}\n")).unwrap();
    let server = Server::start(vec![Step::answer("## Demo\n\nEchoes demo.")]);
    let config = tmp.path().join("pimainteno.toml");
    std::fs::write(
        &config,
        format!(
            "[llm]\nprovider = \"openai\"\nendpoint = \"{}\"\nmodel = \"test-model\"\nretries = 0\n\
             api_key_file = \"{}\"\n\n[cache]\npath = \"{}\"\n\n[[project]]\npath = \"{}\"\n",
            server.endpoint(),
            tmp.path().join("key").display(),
            tmp.path().join("store").display(),
            repo.display()
        ),
    )
    .unwrap();
    let out = pm_summarize(&config);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("authorization"),
        Some(&*format!("Bearer {key}")),
        "the key goes where it belongs"
    );
    let body = String::from_utf8_lossy(&seen[0].body).into_owned();
    let prompt = seen[0].json()["messages"][1]["content"]
        .as_str()
        .unwrap()
        .to_string();
    for text in [&body, &prompt] {
        assert_eq!(
            secrets.found_in(text),
            Vec::<&str>::new(),
            "sent:\n{prompt}"
        );
        assert!(
            !text.contains(key),
            "the LLM key was sent in the prompt:\n{prompt}"
        );
        assert!(!text.contains(env_value), ".env was read:\n{prompt}");
    }
    // What the model needs is still there.
    assert!(prompt.contains("### File: README.md"), "{prompt}");
    assert!(
        prompt.contains("ci: rotate GITHUB_TOKEN=[secret:"),
        "{prompt}"
    );
    assert!(
        prompt.contains(".env"),
        "the file's name is listed:\n{prompt}"
    );
}
