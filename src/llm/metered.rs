//! Every provider call goes through here: the daily token budget first,
//! then the provider's own check (codex: its sandbox starts), then the
//! prompt is redacted ([`super::redact`]): the one place every text bound
//! for a model passes, so no caller can forget it. The call is timed,
//! recorded in the store with the redaction counts and the prompt as sent,
//! and logged (`PM_EVENT=llm_call`, `PM_REDACTED`).

use std::time::Instant;

use super::{Answer, LlmError, Provider, Purpose, Request};
use crate::config::LlmSettings;
use crate::logging::message_id;
use crate::store::{LlmCallRecord, Store, records::RECORD_VERSION};
use crate::time;

/// Ask `provider`, unless the daily token budget of `llm` (0 = unlimited)
/// is spent and the provider spends tokens, or its check before the first
/// call fails ([`Provider::prepare`]). The prompt is redacted first unless
/// the provider sends it nowhere. A call that is made is recorded whatever
/// its outcome. Errors from the store come back as `anyhow` errors; the
/// provider's own as [`LlmError`] inside.
///
/// A patch's answer gets the redacted values back where the model kept a
/// placeholder: its diff must apply to the real files. Other answers keep
/// the placeholders (they are shown and stored as they are).
pub fn call(
    provider: &dyn Provider,
    store: &Store,
    project: &str,
    llm: &LlmSettings,
    req: &Request<'_>,
) -> anyhow::Result<Answer> {
    let budget = llm.daily_token_budget;
    if budget > 0 && provider.spends_tokens() {
        let used = store.tokens_used(&time::day(time::now_ms()))?;
        if used >= budget {
            return Err(LlmError::BudgetExhausted { budget, used }.into());
        }
    }
    // After the budget: a run that asks nothing need not start codex.
    provider.prepare(req.purpose)?;
    let redacted = if provider.sends_prompt() {
        // Patterns were checked at load; a failure here means no call
        // rather than an unredacted one.
        Some(llm.redactor()?.redact(req.prompt))
    } else {
        None
    };
    let sent = Request {
        prompt: redacted.as_ref().map_or(req.prompt, |r| r.text.as_str()),
        ..req.clone()
    };
    let started_ms = time::now_ms();
    let start = Instant::now();
    let mut result = provider.complete(&sent);
    let duration_ms = start.elapsed().as_millis() as u64;
    let (usage, outcome, error) = match &result {
        Ok(a) => (a.usage, "ok", None),
        Err(e) => (Default::default(), e.outcome(), Some(e.to_string())),
    };
    let record = LlmCallRecord {
        v: RECORD_VERSION,
        time_ms: started_ms,
        project: project.to_string(),
        purpose: req.purpose.as_str().to_string(),
        provider: provider.name().to_string(),
        model: provider.model().to_string(),
        duration_ms,
        usage,
        outcome: outcome.to_string(),
        error: error.clone(),
        redacted: redacted
            .as_ref()
            .map(|r| r.counts.clone())
            .unwrap_or_default(),
    };
    // The prompt is kept only when it left the machine.
    let key = store.record_llm_call(&record, redacted.is_some().then_some(sent.prompt))?;
    let redacted_total = redacted.as_ref().map_or(0, |r| r.total());
    let kinds = record
        .redacted
        .iter()
        .map(|(kind, n)| format!("{kind}={n}"))
        .collect::<Vec<_>>()
        .join(",");
    tracing::info!(
        message_id = message_id::LLM_CALL,
        pm_event = "llm_call",
        pm_outcome = outcome,
        pm_id = %key,
        pm_provider = provider.name(),
        pm_tokens = usage.total(),
        pm_duration_ms = duration_ms,
        pm_redacted = redacted_total,
        pm_redacted_kinds = kinds.as_str(),
        "{} call for {}: {outcome} in {duration_ms} ms, {} tokens, {redacted_total} secret values redacted{}",
        provider.name(),
        req.purpose.as_str(),
        usage.total(),
        error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
    );
    if let (Ok(answer), Some(r), Purpose::Patch) = (&mut result, &redacted, req.purpose) {
        answer.text = r.restore(&answer.text);
    }
    Ok(result?)
}
