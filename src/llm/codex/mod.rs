//! The `codex exec --json` provider: the codex CLI reads the project itself
//! (`--cd`), under a sandbox chosen from the request's purpose.
//!
//! What codex-cli 0.169 does, recorded in `tests/fixtures/codex-exec/`
//! (README there), shapes this module:
//!
//! - stdout is JSONL; the answer is the **last** `item.completed` whose item
//!   is an `agent_message`, tokens come from `turn.completed.usage`, and a
//!   failure ends with `turn.failed`. Top-level `error` events are retry
//!   notices ("Reconnecting... 2/5 (...)") and then the final error.
//! - The same answer goes to the `--output-last-message` file, which is
//!   written as 0 bytes on any failure: its presence proves nothing.
//! - Startup errors (bad `-c` value, not a git repository, CODEX_HOME
//!   missing) print no JSONL at all; the reason is on stderr among noise.
//! - An unreachable provider makes codex retry **forever**: only our own
//!   timeout ([`crate::process::run`] kills the process group) ends it.
//!
//! - Every shell command of the model runs in codex's own sandbox
//!   (bubblewrap), which a unit's hardening can break without codex saying
//!   so: [`sandbox`] checks it once per run before the first call.
//!
//! Architecture invariant: nothing here knows about summaries or patches;
//! the caller's [`Purpose`] only picks the sandbox.

pub mod sandbox;

use std::cell::RefCell;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::Deserialize;

use super::{Answer, LlmError, Provider, Purpose, Request, Usage};
use crate::config::LlmSettings;
use crate::config::values::format_duration;
use crate::logging::message_id;
use crate::process::{self, Finished, Limits};
use sandbox::{Mode, Probe};

const NAME: &str = "codex";

/// Linux refuses a single argument over MAX_ARG_STRLEN (128 KiB, NUL
/// included) with E2BIG at exec time, a confusing error; we refuse earlier
/// and leave room for the kernel's own accounting.
pub const MAX_PROMPT_BYTES: usize = 120 * 1024;

/// Bytes kept of codex's stdout and stderr. stdout keeps its beginning, so
/// a transcript longer than this loses its end (the final answer and the
/// usage): the answer is then taken from the `--output-last-message` file.
const MAX_CAPTURE: usize = 4 * 1024 * 1024;

/// The largest answer read back from the `--output-last-message` file.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// How a missing codex is fixed; part of every "cannot run" error.
const INSTALL_HINT: &str =
    "install it with `npm install -g @openai/codex` or set [llm] command to its path";

/// Every retry notice starts with this; anything else in a top-level
/// `error` event is a real error.
const RETRY_PREFIX: &str = "Reconnecting...";

pub struct Codex {
    settings: LlmSettings,
    /// Sandbox probes of this run: per mode, `Err` holds why it fails.
    probes: RefCell<Vec<(Mode, Result<(), String>)>>,
}

impl Codex {
    pub fn new(settings: &LlmSettings) -> Self {
        Codex {
            settings: settings.clone(),
            probes: RefCell::new(Vec::new()),
        }
    }

    /// Run the sandbox probe for `mode` (not cached; see `prepare`).
    fn probe(&self, mode: Mode) -> Result<Result<(), String>, LlmError> {
        let home = &self.settings.codex_home;
        ensure_codex_home(home)?;
        let timeout = sandbox::PROBE_TIMEOUT.min(self.settings.timeout);
        let probe = sandbox::probe(&self.settings.command, home, mode, timeout)
            .map_err(|e| spawn_error(&self.settings.command, &e))?;
        Ok(match probe {
            Probe::Works => {
                tracing::debug!("codex's {} sandbox works", mode.exec_flag());
                Ok(())
            }
            Probe::Unsupported(why) => {
                tracing::warn!("{why}");
                Ok(())
            }
            Probe::Fails(why) => {
                tracing::error!(
                    message_id = message_id::CODEX_SANDBOX,
                    pm_event = "codex_sandbox",
                    pm_outcome = "failed",
                    "codex cannot run commands in its {} sandbox, so it could not read the \
                     project; no model is asked until this is fixed. {why}",
                    mode.exec_flag()
                );
                Err(why)
            }
        })
    }
}

impl Provider for Codex {
    fn name(&self) -> &'static str {
        NAME
    }

    fn model(&self) -> &str {
        self.settings.model.as_deref().unwrap_or("")
    }

    fn prepare(&self, purpose: Purpose) -> Result<(), LlmError> {
        let mode = Mode::of(purpose);
        let cached = self
            .probes
            .borrow()
            .iter()
            .find(|(m, _)| *m == mode)
            .map(|(_, r)| r.clone());
        let result = match cached {
            Some(r) => r,
            None => {
                let r = self.probe(mode)?;
                self.probes.borrow_mut().push((mode, r.clone()));
                r
            }
        };
        result.map_err(|detail| LlmError::Sandbox {
            provider: NAME,
            detail,
        })
    }

    fn complete(&self, req: &Request<'_>) -> Result<Answer, LlmError> {
        check_prompt(req.prompt)?;
        let home = &self.settings.codex_home;
        ensure_codex_home(home)?;
        let out =
            PrivateDir::create(output_base(req.workdir, home)).map_err(|e| LlmError::Failed {
                provider: NAME,
                detail: format!(
                    "cannot create a private temporary directory for codex's final message \
                 (in {}): {e}; check TMPDIR",
                    std::env::temp_dir().display()
                ),
            })?;
        let last_message = out.path.join("last-message.md");
        let schema_file = match req.schema {
            Some(schema) => {
                let path = out.path.join("schema.json");
                fs::write(&path, schema.to_string()).map_err(|e| LlmError::Failed {
                    provider: NAME,
                    detail: format!(
                        "cannot write the answer's schema to {}: {e}",
                        path.display()
                    ),
                })?;
                Some(path)
            }
            None => None,
        };
        let args = arguments(&self.settings, req, &last_message, schema_file.as_deref());

        let mut cmd = match req.sandbox {
            // Contained (a patch): the output directory is written from
            // inside too.
            Some(c) => {
                let mut policy = c.policy.clone();
                policy.writable.push(out.path.clone());
                crate::sandbox::command(&policy, c.caps, self.settings.command.as_ref(), &args)
                    .map_err(|e| LlmError::Failed {
                        provider: NAME,
                        detail: format!("{e:#}"),
                    })?
            }
            None => Command::new(&self.settings.command),
        };
        if req.sandbox.is_none() {
            cmd.args(&args);
        }
        cmd.env("CODEX_HOME", home);
        if let Some(key) = &self.settings.api_key {
            // codex exec reads CODEX_API_KEY for its built-in OpenAI provider.
            cmd.env("CODEX_API_KEY", key.expose());
        }
        tracing::debug!(
            "running {} {} <prompt: {} bytes> (CODEX_HOME={}, key {})",
            self.settings.command,
            args[..args.len() - 1]
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            req.prompt.len(),
            home.display(),
            if self.settings.api_key.is_some() {
                "passed as CODEX_API_KEY"
            } else {
                "not set"
            }
        );
        let done = process::run(
            &mut cmd,
            Limits {
                timeout: self.settings.timeout,
                max_capture: MAX_CAPTURE,
            },
        )
        .map_err(|e| spawn_error(&self.settings.command, &e))?;

        let file = read_last_message(&last_message);
        drop(out);
        // `truncated` covers both streams; stdout was cut only if it is full.
        let stdout_cut = done.truncated && done.stdout.len() >= MAX_CAPTURE;
        let transcript = Transcript::parse(&done.stdout, stdout_cut);
        for line in meaningful_stderr(&done.stderr) {
            tracing::debug!("codex stderr: {line}");
        }
        interpret(&done, &transcript, file, self.settings.timeout)
    }
}

/// `codex exec` arguments, the prompt last. The user's `[llm] args` come
/// after ours, so they can override them: in codex 0.169 a later
/// `-c key=value` wins over an earlier one (checked with `model`).
pub fn arguments(
    settings: &LlmSettings,
    req: &Request<'_>,
    last_message: &Path,
    schema_file: Option<&Path>,
) -> Vec<OsString> {
    let sandbox = Mode::of(req.purpose).exec_flag();
    let mut args: Vec<OsString> = [
        "exec",
        "--json",
        // No session files: the prompt and answers stay out of CODEX_HOME.
        "--ephemeral",
        "--sandbox",
        sandbox,
        "--cd",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    args.push(req.workdir.into());
    args.push("--output-last-message".into());
    args.push(last_message.into());
    if let Some(schema) = schema_file {
        // codex sends it as the response format but does not check the
        // answer against it (fixtures' README): the caller validates.
        args.push("--output-schema".into());
        args.push(schema.into());
    }
    if req.purpose == Purpose::Diagnosis {
        // A unit without a project is diagnosed in an empty directory.
        args.push("--skip-git-repo-check".into());
    }
    // Without these two, codex looks up ab.chatgpt.com, chatgpt.com and
    // api.github.com on every run (see the fixtures' README).
    args.extend(
        ["-c", "analytics.enabled=false", "--disable", "plugins"]
            .iter()
            .map(OsString::from),
    );
    if let Some(model) = settings.model.as_deref().filter(|m| !m.is_empty()) {
        // The value is parsed as TOML: quoted, a model such as "4.1" stays
        // a string instead of becoming a float.
        args.push("-c".into());
        args.push(format!("model={}", toml_string(model)).into());
    }
    args.extend(settings.args.iter().map(OsString::from));
    // `--` keeps a prompt that starts with `-`, or is exactly `review` or
    // `resume` (codex exec subcommands), a prompt.
    args.push("--".into());
    args.push(req.prompt.into());
    args
}

/// A TOML basic string. JSON string escapes are valid TOML ones.
fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

fn check_prompt(prompt: &str) -> Result<(), LlmError> {
    if prompt.len() > MAX_PROMPT_BYTES {
        return Err(LlmError::Failed {
            provider: NAME,
            detail: format!(
                "the prompt is {} KiB; codex takes it as one command-line argument, which Linux \
                 limits to 128 KiB, so at most {} KiB are sent (shorten the prompt or the context \
                 added to it)",
                prompt.len().div_ceil(1024),
                MAX_PROMPT_BYTES / 1024
            ),
        });
    }
    if prompt.contains('\0') {
        return Err(LlmError::Failed {
            provider: NAME,
            detail: "the prompt contains a NUL byte, which cannot be passed as an argument".into(),
        });
    }
    Ok(())
}

/// codex refuses to start without its home and writes SQLite files there on
/// every run: create it, private, when it is missing.
fn ensure_codex_home(home: &Path) -> Result<(), LlmError> {
    let failed = |what: String| LlmError::Failed {
        provider: NAME,
        detail: format!(
            "{what}; codex needs it as a writable directory (CODEX_HOME): create it for this \
             user or point [llm] codex_home elsewhere"
        ),
    };
    match fs::metadata(home) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(failed(format!(
            "[llm] codex_home {} is not a directory",
            home.display()
        ))),
        // Missing, or a path through a non-directory (ENOTDIR): creating
        // it says best what is wrong.
        Err(_) => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(home)
            .map_err(|e| {
                failed(format!(
                    "cannot create [llm] codex_home {}: {e}",
                    home.display()
                ))
            }),
    }
}

/// Where the `--output-last-message` directory goes: the temporary
/// directory, unless TMPDIR points into the project, which would put our
/// file in its tree (then CODEX_HOME).
fn output_base(workdir: &Path, codex_home: &Path) -> PathBuf {
    let base = std::env::temp_dir();
    match (fs::canonicalize(&base), fs::canonicalize(workdir)) {
        (Ok(b), Ok(w)) if b.starts_with(&w) => codex_home.to_path_buf(),
        _ => base,
    }
}

/// A private directory (0700), removed with everything in it when dropped:
/// for the `--output-last-message` file (outside the project, so that
/// neither the fingerprint nor a patch ever sees it; and a fresh directory
/// rather than a pre-created file, so that "codex never wrote it" stays
/// visible), or a throwaway CODEX_HOME.
struct PrivateDir {
    path: PathBuf,
}

impl PrivateDir {
    fn create(base: PathBuf) -> io::Result<Self> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let mut last_err = None;
        for _ in 0..8 {
            let path = base.join(format!(
                "pimainteno-codex-{}-{}-{nanos:x}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            // Not recursive: an existing directory (someone else's) is an
            // error, never reused.
            match fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(PrivateDir { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("no free name")))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// The version PiMainteno was tested with: the transcripts in
/// `tests/fixtures/codex-exec/` and the sandbox probe are from it.
pub const TESTED_VERSION: (u32, u32, u32) = (0, 169, 0);

/// `codex --version` of `program`, run with `path` as its PATH (the npm
/// launcher finds `node` there) and a throwaway CODEX_HOME: even
/// `--version` writes into CODEX_HOME, and this must not touch the real one.
pub fn installed_version(program: &Path, path: &OsStr) -> Result<(u32, u32, u32), String> {
    let home = PrivateDir::create(std::env::temp_dir())
        .map_err(|e| format!("cannot create a temporary CODEX_HOME: {e}"))?;
    let mut cmd = Command::new(program);
    cmd.arg("--version")
        .env("PATH", path)
        .env("CODEX_HOME", &home.path);
    let done = process::run(
        &mut cmd,
        Limits {
            timeout: Duration::from_secs(20),
            max_capture: 64 * 1024,
        },
    )
    .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    let stdout = String::from_utf8_lossy(&done.stdout);
    if !done.success() {
        return Err(format!(
            "`{} --version` failed ({}): {}",
            program.display(),
            status_text(&done),
            startup_reason(&done.stderr)
        ));
    }
    parse_version(&stdout).ok_or_else(|| {
        format!(
            "`{} --version` printed {:?}, not \"codex-cli X.Y.Z\"",
            program.display(),
            shorten(stdout.trim(), 100)
        )
    })
}

/// `codex-cli 0.169.0` → (0, 169, 0).
fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let v = text.split_whitespace().last()?;
    let mut parts = v.split(['.', '-']).map(|p| p.parse::<u32>());
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Ok(a)), Some(Ok(b)), Some(Ok(c))) => Some((a, b, c)),
        _ => None,
    }
}

/// The `--output-last-message` file after the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LastMessage {
    /// Not written: codex stopped before its session started.
    Missing,
    /// Written empty: what codex does on every failure.
    Empty,
    Text(String),
    /// Unreadable or larger than we accept.
    Unusable(String),
}

fn read_last_message(path: &Path) -> LastMessage {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return LastMessage::Missing,
        Err(e) => return LastMessage::Unusable(format!("cannot read {}: {e}", path.display())),
    };
    let mut bytes = Vec::new();
    if let Err(e) = file
        .take(MAX_ANSWER_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
    {
        return LastMessage::Unusable(format!("cannot read {}: {e}", path.display()));
    }
    if bytes.len() > MAX_ANSWER_BYTES {
        return LastMessage::Unusable(format!(
            "the final message is over {} KiB",
            MAX_ANSWER_BYTES / 1024
        ));
    }
    if bytes.is_empty() {
        return LastMessage::Empty;
    }
    LastMessage::Text(String::from_utf8_lossy(&bytes).into_owned())
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    item: Option<Item>,
    usage: Option<RawUsage>,
    message: Option<String>,
    error: Option<ErrorBody>,
}

#[derive(Deserialize)]
struct Item {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
    message: Option<String>,
    /// `command_execution`: stdout and stderr of the command, and its code.
    aggregated_output: Option<String>,
    exit_code: Option<i64>,
}

/// `turn.completed.usage`; fields codex might leave out count as 0 rather
/// than making the whole event unreadable.
#[derive(Deserialize, Default)]
#[serde(default)]
struct RawUsage {
    input_tokens: u64,
    cached_input_tokens: u64,
    output_tokens: u64,
    reasoning_output_tokens: u64,
}

impl From<RawUsage> for Usage {
    fn from(u: RawUsage) -> Usage {
        Usage {
            input_tokens: u.input_tokens,
            cached_input_tokens: u.cached_input_tokens,
            output_tokens: u.output_tokens,
            reasoning_output_tokens: u.reasoning_output_tokens,
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    message: Option<String>,
}

/// What the JSONL on stdout said, reduced to what decides the outcome (the
/// transcript itself is not kept: command outputs can be large).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Transcript {
    /// Any event at all: codex got past its startup.
    pub started: bool,
    /// The last `agent_message` text.
    pub answer: Option<String>,
    pub agent_messages: usize,
    pub turn_completed: bool,
    /// `usage` of the last `turn.completed`.
    pub usage: Option<Usage>,
    /// `turn.failed.error.message`.
    pub turn_failed: Option<String>,
    /// The last top-level `error` that is not a retry notice.
    pub last_error: Option<String>,
    /// The last "Reconnecting..." notice, and how many there were.
    pub last_retry: Option<String>,
    pub retries: usize,
    /// Commands of the model that failed because codex's sandbox could not
    /// start, and the first such error line.
    pub sandbox_failures: usize,
    pub sandbox_error: Option<String>,
    /// Lines that are not JSON events, and the first of them (shortened).
    pub bad_lines: usize,
    pub first_bad_line: Option<String>,
}

impl Transcript {
    /// Parse codex's stdout. `truncated`: the capture limit cut it, so the
    /// last line may be incomplete and is not counted as garbage.
    pub fn parse(stdout: &[u8], truncated: bool) -> Transcript {
        let mut t = Transcript::default();
        let mut lines: Vec<&[u8]> = stdout.split(|&b| b == b'\n').collect();
        if truncated {
            lines.pop();
        }
        for line in lines {
            let line = line.trim_ascii();
            if line.is_empty() {
                continue;
            }
            let event: Event = match serde_json::from_slice(line) {
                Ok(e) => e,
                Err(_) => {
                    t.bad_lines += 1;
                    if t.first_bad_line.is_none() {
                        t.first_bad_line = Some(shorten(&String::from_utf8_lossy(line), 200));
                    }
                    continue;
                }
            };
            t.started = true;
            match event.kind.as_str() {
                "item.completed" => match event.item {
                    Some(Item {
                        kind,
                        text: Some(text),
                        ..
                    }) if kind == "agent_message" => {
                        t.agent_messages += 1;
                        t.answer = Some(text);
                    }
                    // Warnings such as "Model metadata for `x` not found"
                    // or the WebSocket fallback: the turn goes on.
                    Some(Item {
                        kind,
                        message: Some(m),
                        ..
                    }) if kind == "error" => tracing::debug!("codex warning: {m}"),
                    Some(Item {
                        kind,
                        aggregated_output: Some(output),
                        exit_code,
                        ..
                    }) if kind == "command_execution" => {
                        if let Some(line) = sandbox::failed_command_output(&output, exit_code) {
                            t.sandbox_failures += 1;
                            t.sandbox_error.get_or_insert(line);
                        }
                    }
                    _ => {}
                },
                "turn.completed" => {
                    t.turn_completed = true;
                    t.usage = event.usage.map(Usage::from);
                }
                "turn.failed" => {
                    t.turn_failed = Some(
                        event
                            .error
                            .and_then(|e| e.message)
                            .unwrap_or_else(|| "no message".into()),
                    );
                }
                "error" => {
                    let m = event.message.unwrap_or_default();
                    if m.starts_with(RETRY_PREFIX) {
                        tracing::debug!("codex: {m}");
                        t.retries += 1;
                        t.last_retry = Some(m);
                    } else {
                        t.last_error = Some(m);
                    }
                }
                _ => {}
            }
        }
        t
    }
}

/// The stderr lines worth showing: codex prints a few on every run that say
/// nothing about the outcome.
pub fn meaningful_stderr(stderr: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(stderr);
    text.lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with("WARNING: proceeding, even though")
                && !l.starts_with("Reading additional input from stdin")
                && !l.starts_with("Reading prompt from stdin")
        })
        .map(str::to_string)
        .collect()
}

/// Why codex stopped before its session started, from stderr.
fn startup_reason(stderr: &[u8]) -> String {
    let lines = meaningful_stderr(stderr);
    if lines.is_empty() {
        // Only noise: the last line is still better than nothing.
        let text = String::from_utf8_lossy(stderr);
        return match text.lines().rev().find(|l| !l.trim().is_empty()) {
            Some(l) => shorten(l.trim(), 600),
            None => "nothing on stderr".into(),
        };
    }
    shorten(
        &lines.iter().take(6).cloned().collect::<Vec<_>>().join(" "),
        600,
    )
}

fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

fn status_text(done: &Finished) -> String {
    use std::os::unix::process::ExitStatusExt;
    match done.status {
        Some(s) if s.code().is_some() => format!("exit status {}", s.code().unwrap_or_default()),
        Some(s) => format!("signal {}", s.signal().unwrap_or_default()),
        None => "no status".into(),
    }
}

fn notices(n: usize) -> String {
    if n == 1 {
        "1 notice".into()
    } else {
        format!("{n} notices")
    }
}

fn retried(t: &Transcript) -> String {
    match (t.retries, &t.last_retry) {
        (0, _) | (_, None) => String::new(),
        (1, Some(r)) => format!(" (after 1 retry: {r})"),
        (n, Some(r)) => format!(" (after {n} retries; last: {r})"),
    }
}

/// Decide what a finished run means. Pure, apart from debug/warn logging.
pub fn interpret(
    done: &Finished,
    t: &Transcript,
    file: LastMessage,
    timeout: Duration,
) -> Result<Answer, LlmError> {
    if done.timed_out {
        // codex retries an unreachable provider forever; its last notice is
        // the only trace of why there was no answer.
        return Err(match &t.last_retry {
            Some(r) => LlmError::Unavailable {
                provider: NAME,
                detail: format!(
                    "no answer within {}, codex was still retrying ({}); last: {r}",
                    format_duration(timeout),
                    notices(t.retries)
                ),
            },
            None => LlmError::Timeout {
                provider: NAME,
                after: timeout,
            },
        });
    }
    let code = done.code();
    if code == Some(0) && t.turn_failed.is_none() {
        let stdout_cut = done.truncated && done.stdout.len() >= MAX_CAPTURE;
        return success(t, file, stdout_cut);
    }

    let status = status_text(done);
    if let Some(m) = &t.turn_failed {
        return Err(LlmError::Failed {
            provider: NAME,
            detail: format!("turn failed: {m}{}", retried(t)),
        });
    }
    if let Some(m) = &t.last_error {
        return Err(LlmError::Failed {
            provider: NAME,
            detail: format!("codex stopped ({status}) after an error: {m}{}", retried(t)),
        });
    }
    if let Some(r) = &t.last_retry {
        // Killed from outside (or crashed) while it was retrying: as good
        // as unreachable.
        return Err(LlmError::Unavailable {
            provider: NAME,
            detail: format!(
                "codex stopped ({status}) while retrying ({}); last: {r}",
                notices(t.retries)
            ),
        });
    }
    if !t.started {
        return Err(LlmError::Failed {
            provider: NAME,
            detail: format!(
                "codex did not start ({status}): {}",
                startup_reason(&done.stderr)
            ),
        });
    }
    Err(LlmError::Failed {
        provider: NAME,
        detail: format!(
            "codex stopped ({status}) before finishing the turn: {}",
            startup_reason(&done.stderr)
        ),
    })
}

fn success(t: &Transcript, file: LastMessage, truncated: bool) -> Result<Answer, LlmError> {
    let invalid = |detail: String| LlmError::Invalid {
        provider: NAME,
        detail,
    };
    let garbage = match (&t.first_bad_line, t.bad_lines) {
        (Some(l), 1) => format!(" (a line of stdout was not a JSON event: {l})"),
        (Some(l), n) => format!(" ({n} lines of stdout were not JSON events, first: {l})"),
        _ => String::new(),
    };
    let from_file = match file {
        LastMessage::Text(s) => s,
        LastMessage::Empty => {
            return Err(invalid(format!(
                "codex exited 0 but its final message (--output-last-message) is empty{garbage}"
            )));
        }
        LastMessage::Missing => {
            return Err(invalid(format!(
                "codex exited 0 but did not write its final message (--output-last-message){garbage}"
            )));
        }
        LastMessage::Unusable(why) => return Err(invalid(why)),
    };
    let usage = t.usage.unwrap_or_default();
    if truncated {
        // The end of the transcript was cut by the capture limit: the file
        // is the only complete copy of the answer (and the usage is lost).
        tracing::warn!(
            "codex printed more than {} MiB of events; the answer is taken from its final-message file{}",
            MAX_CAPTURE / (1024 * 1024),
            if t.usage.is_none() {
                " and the token usage is unknown"
            } else {
                ""
            }
        );
        return Ok(Answer {
            text: from_file,
            usage,
            sandbox_error: t.sandbox_error.clone(),
        });
    }
    if !t.turn_completed {
        return Err(invalid(format!(
            "codex exited 0 without a turn.completed event{garbage}"
        )));
    }
    let Some(answer) = &t.answer else {
        return Err(invalid(format!(
            "codex finished the turn without an agent_message{garbage}"
        )));
    };
    if answer.trim_end() != from_file.trim_end() {
        // Both come from the same final message in codex 0.169; a
        // difference means a codex change. The JSONL is the documented
        // source, so it wins, loudly.
        tracing::warn!(
            "codex's last agent_message ({} bytes) differs from its final-message file ({} bytes); using the agent_message",
            answer.len(),
            from_file.len()
        );
    }
    Ok(Answer {
        text: answer.clone(),
        usage,
        sandbox_error: t.sandbox_error.clone(),
    })
}

/// `spawn` failed: the program is missing or cannot be executed.
fn spawn_error(command: &str, e: &io::Error) -> LlmError {
    let why = match e.kind() {
        io::ErrorKind::NotFound => "not found".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    };
    LlmError::Unavailable {
        provider: NAME,
        detail: format!("cannot run `{command}` ({why}); {INSTALL_HINT}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    fn finished(code: i32, stdout: &str, stderr: &str) -> Finished {
        Finished {
            status: Some(ExitStatus::from_raw(code << 8)),
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.as_bytes().to_vec(),
            elapsed: Duration::from_millis(10),
            timed_out: false,
            truncated: false,
        }
    }

    const OK: &str = concat!(
        r#"{"type":"thread.started","thread_id":"x"}"#,
        "\n",
        r#"{"type":"item.completed","item":{"id":"item_0","type":"agent_message","text":"first"}}"#,
        "\n",
        r#"{"type":"item.completed","item":{"id":"item_1","type":"agent_message","text":"final"}}"#,
        "\n",
        r#"{"type":"turn.completed","usage":{"input_tokens":10,"cached_input_tokens":4,"cache_write_input_tokens":0,"output_tokens":3,"reasoning_output_tokens":1}}"#,
        "\n"
    );

    #[test]
    fn last_agent_message_and_usage() {
        let done = finished(0, OK, "");
        let t = Transcript::parse(&done.stdout, false);
        let a = interpret(
            &done,
            &t,
            LastMessage::Text("final".into()),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(a.text, "final");
        assert_eq!(
            a.usage,
            Usage {
                input_tokens: 10,
                cached_input_tokens: 4,
                output_tokens: 3,
                reasoning_output_tokens: 1
            }
        );
    }

    #[test]
    fn a_differing_file_does_not_replace_the_jsonl_answer() {
        let done = finished(0, OK, "");
        let t = Transcript::parse(&done.stdout, false);
        let a = interpret(
            &done,
            &t,
            LastMessage::Text("other".into()),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(a.text, "final");
    }

    #[test]
    fn truncated_stdout_takes_the_answer_from_the_file() {
        // The capture limit cut the transcript in the middle of an event.
        let cut = &OK[..OK.find("final").unwrap()];
        let mut done = finished(0, cut, "");
        done.truncated = true;
        done.stdout.resize(MAX_CAPTURE, b'x');
        let t = Transcript::parse(&done.stdout, true);
        assert_eq!(t.bad_lines, 0, "the cut line is not garbage");
        let a = interpret(
            &done,
            &t,
            LastMessage::Text("final".into()),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(a.text, "final");
        assert_eq!(a.usage, Usage::default());
    }

    #[test]
    fn model_is_a_toml_string() {
        assert_eq!(toml_string("gpt-5.5"), "\"gpt-5.5\"");
        assert_eq!(toml_string("a\"b\\c"), r#""a\"b\\c""#);
    }

    #[test]
    fn prompt_guard() {
        assert!(check_prompt(&"x".repeat(MAX_PROMPT_BYTES)).is_ok());
        let e = check_prompt(&"x".repeat(MAX_PROMPT_BYTES + 1)).unwrap_err();
        assert!(e.to_string().contains("128 KiB"), "{e}");
        assert!(check_prompt("a\0b").is_err());
    }

    #[test]
    fn startup_reason_skips_noise() {
        let stderr = "WARNING: proceeding, even though we could not create PATH aliases: x\n\
                      Reading additional input from stdin...\n\
                      Not inside a trusted directory and --skip-git-repo-check was not specified.\n";
        assert_eq!(
            startup_reason(stderr.as_bytes()),
            "Not inside a trusted directory and --skip-git-repo-check was not specified."
        );
        assert_eq!(
            startup_reason(b"WARNING: proceeding, even though x\n"),
            "WARNING: proceeding, even though x"
        );
        assert_eq!(startup_reason(b""), "nothing on stderr");
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("codex-cli 0.169.0\n"), Some((0, 169, 0)));
        assert_eq!(parse_version("codex-cli 1.2.3-alpha.1"), Some((1, 2, 3)));
        assert_eq!(parse_version("codex-cli"), None);
        assert_eq!(parse_version(""), None);
    }

    #[test]
    fn shorten_respects_char_boundaries() {
        assert_eq!(shorten("ééé", 3), "é...");
        assert_eq!(shorten("abc", 3), "abc");
    }
}
