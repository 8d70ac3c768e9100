//! LLM providers behind one trait.
//!
//! - [`codex`]: the `codex exec --json` CLI (it reads the project itself);
//! - [`openai`]: an OpenAI-compatible `/v1/chat/completions` endpoint
//!   (Ollama, llama.cpp server, vLLM, OpenAI) over hyper;
//! - [`offline`]: no LLM at all, a deterministic digest of the repository.
//!
//! Architecture invariant: only this module spawns `codex` or talks HTTP to
//! a model. Callers go through [`metered`] so that every call is recorded
//! in the store and counted against the daily token budget.

pub mod codex;
pub mod json;
pub mod metered;
pub mod offline;
pub mod openai;
pub mod redact;

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{CheckSettings, LlmSettings, ProviderKind};
use crate::exit::Exit;

/// What the answer is for. Providers may tune their request to it (codex:
/// sandbox mode; offline: which digest to build).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    Summary,
    Patch,
    Diagnosis,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Summary => "summary",
            Purpose::Patch => "patch",
            Purpose::Diagnosis => "diagnosis",
        }
    }
}

/// One question to a provider.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub purpose: Purpose,
    /// The full prompt (instructions and any context the caller gathered).
    pub prompt: &'a str,
    /// The project directory: codex runs there (`--cd`), the offline
    /// provider digests it. A git work tree, except for a diagnosis of a
    /// unit without a project (an empty directory).
    pub workdir: &'a Path,
    /// The project's check command, for providers that run it (offline).
    pub check: Option<&'a CheckSettings>,
    /// Paths (relative to `workdir`) the provider must not read as project
    /// content, e.g. the summary file it is about to replace.
    pub exclude: &'a [&'a Path],
    /// A JSON schema the answer must follow (a JSON object is wanted):
    /// codex gets it as `--output-schema`, openai asks for JSON mode. No
    /// provider enforces it; the caller validates the answer.
    pub schema: Option<&'a serde_json::Value>,
    /// Run the provider's program contained (codex for a patch: its
    /// commands are the model's); `None`: as the account.
    pub sandbox: Option<&'a crate::sandbox::Contained<'a>>,
}

/// Tokens as reported by the provider (0 when it does not say).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_output_tokens: u64,
}

impl Usage {
    /// What counts against the budget: everything sent and received.
    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }
}

/// A provider's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The final text (markdown for summaries).
    pub text: String,
    pub usage: Usage,
    /// codex: the first sandbox error in the output of the model's commands
    /// (a `bwrap:` line): they could not run, so the answer was made
    /// without reading the project.
    pub sandbox_error: Option<String>,
}

/// Why a call failed; callers branch on it (exit code, retry, record).
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// Not reachable: program missing, connection refused, DNS.
    #[error("{provider}: the LLM is unavailable: {detail}")]
    Unavailable {
        provider: &'static str,
        detail: String,
    },
    /// Our wall-clock limit fired (the process group was killed).
    #[error("{provider}: no answer within {}", crate::config::values::format_duration(*after))]
    Timeout {
        provider: &'static str,
        after: Duration,
    },
    /// The provider answered with an error (HTTP 4xx/5xx after retries, `turn.failed`).
    #[error("{provider}: the request failed: {detail}")]
    Failed {
        provider: &'static str,
        detail: String,
    },
    /// An answer we cannot use: garbage, no final message, empty output.
    #[error("{provider}: unusable answer: {detail}")]
    Invalid {
        provider: &'static str,
        detail: String,
    },
    /// codex cannot run commands in its own sandbox here (checked before
    /// the first call of a run); no model was asked.
    #[error("{provider}: its sandbox cannot run commands here, so no model was asked: {detail}")]
    Sandbox {
        provider: &'static str,
        detail: String,
    },
    /// The daily token budget is spent; the call was not made.
    #[error(
        "the daily token budget of {budget} tokens is spent ({used} used today); skipped until tomorrow (UTC)"
    )]
    BudgetExhausted { budget: u64, used: u64 },
}

impl LlmError {
    pub fn exit(&self) -> Exit {
        match self {
            LlmError::Unavailable { .. } | LlmError::Timeout { .. } | LlmError::Sandbox { .. } => {
                Exit::Unavailable
            }
            LlmError::BudgetExhausted { .. } => Exit::Temporary,
            LlmError::Failed { .. } | LlmError::Invalid { .. } => Exit::Failed,
        }
    }

    /// Short outcome word for the store and the journal (`PM_OUTCOME`).
    pub fn outcome(&self) -> &'static str {
        match self {
            LlmError::Unavailable { .. } => "unavailable",
            LlmError::Timeout { .. } => "timeout",
            LlmError::Failed { .. } => "failed",
            LlmError::Invalid { .. } => "invalid",
            LlmError::Sandbox { .. } => "sandbox",
            LlmError::BudgetExhausted { .. } => "over_budget",
        }
    }
}

/// A way to ask an LLM (or not).
pub trait Provider {
    /// `"codex"`, `"openai"` or `"none"`.
    fn name(&self) -> &'static str;
    /// The configured model, `""` for the provider's default.
    fn model(&self) -> &str;
    /// Check that calls for `purpose` can work here before the first one of
    /// a run (codex: that its sandbox starts). The check runs once per
    /// process; later calls return its result again.
    fn prepare(&self, _purpose: Purpose) -> Result<(), LlmError> {
        Ok(())
    }
    /// Ask one question; blocks until the answer, an error or the timeout.
    fn complete(&self, req: &Request<'_>) -> Result<Answer, LlmError>;
    /// Whether calls spend tokens (and so count against the daily budget).
    fn spends_tokens(&self) -> bool {
        true
    }
    /// Whether the prompt leaves this process for a model (and so must be
    /// redacted and recorded as sent).
    fn sends_prompt(&self) -> bool {
        true
    }
}

/// The provider the configuration asks for.
pub fn from_settings(llm: &LlmSettings) -> Box<dyn Provider> {
    match llm.provider {
        ProviderKind::Codex => Box::new(codex::Codex::new(llm)),
        ProviderKind::OpenAi => Box::new(openai::OpenAi::new(llm)),
        ProviderKind::None => Box::new(offline::Offline::new()),
    }
}
