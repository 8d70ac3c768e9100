//! The `codex exec --json` provider. (Being written: see the helper task.)

use super::{Answer, LlmError, Provider, Request};
use crate::config::LlmSettings;

pub struct Codex {
    settings: LlmSettings,
}

impl Codex {
    pub fn new(settings: &LlmSettings) -> Self {
        Codex {
            settings: settings.clone(),
        }
    }
}

impl Provider for Codex {
    fn name(&self) -> &'static str {
        "codex"
    }
    fn model(&self) -> &str {
        self.settings.model.as_deref().unwrap_or("")
    }
    fn complete(&self, _req: &Request<'_>) -> Result<Answer, LlmError> {
        Err(LlmError::Unavailable {
            provider: "codex",
            detail: "not implemented yet".into(),
        })
    }
}
