//! The offline provider. (Being written: see the helper task.)

use super::{Answer, LlmError, Provider, Request};

#[derive(Default)]
pub struct Offline;

impl Offline {
    pub fn new() -> Self {
        Offline
    }
}

impl Provider for Offline {
    fn name(&self) -> &'static str {
        "none"
    }
    fn model(&self) -> &str {
        ""
    }
    fn complete(&self, _req: &Request<'_>) -> Result<Answer, LlmError> {
        Err(LlmError::Unavailable {
            provider: "none",
            detail: "not implemented yet".into(),
        })
    }
}

/// Repository context for providers that cannot read files themselves
/// (openai): the digest plus key files, at most `max_bytes`.
pub fn context(
    _workdir: &std::path::Path,
    _exclude: &[&std::path::Path],
    _max_bytes: usize,
) -> anyhow::Result<String> {
    anyhow::bail!("not implemented yet")
}
