//! The `OpenAI-compatible HTTP` provider. (Being written: see the helper task.)

use super::{Answer, LlmError, Provider, Request};
use crate::config::LlmSettings;

pub struct OpenAi {
    settings: LlmSettings,
}

impl OpenAi {
    pub fn new(settings: &LlmSettings) -> Self {
        OpenAi {
            settings: settings.clone(),
        }
    }
}

impl Provider for OpenAi {
    fn name(&self) -> &'static str {
        "openai"
    }
    fn model(&self) -> &str {
        self.settings.model.as_deref().unwrap_or("")
    }
    fn complete(&self, _req: &Request<'_>) -> Result<Answer, LlmError> {
        Err(LlmError::Unavailable {
            provider: "openai",
            detail: "not implemented yet".into(),
        })
    }
}
