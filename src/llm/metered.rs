//! Every provider call goes through here: the daily token budget first,
//! then the provider's own check (codex: its sandbox starts), then the
//! call is timed, recorded in the store and logged (`PM_EVENT=llm_call`).

use std::time::Instant;

use super::{Answer, LlmError, Provider, Request};
use crate::logging::message_id;
use crate::store::{LlmCallRecord, Store, records::RECORD_VERSION};
use crate::time;

/// Ask `provider`, unless `budget` (tokens per UTC day, 0 = unlimited) is
/// spent and the provider spends tokens, or its check before the first
/// call fails ([`Provider::prepare`]). A call that is made is recorded
/// whatever its outcome. Errors from the store come back as `anyhow`
/// errors; the provider's own as [`LlmError`] inside.
pub fn call(
    provider: &dyn Provider,
    store: &Store,
    project: &str,
    budget: u64,
    req: &Request<'_>,
) -> anyhow::Result<Answer> {
    if budget > 0 && provider.spends_tokens() {
        let used = store.tokens_used(&time::day(time::now_ms()))?;
        if used >= budget {
            return Err(LlmError::BudgetExhausted { budget, used }.into());
        }
    }
    // After the budget: a run that asks nothing need not start codex.
    provider.prepare(req.purpose)?;
    let started_ms = time::now_ms();
    let start = Instant::now();
    let result = provider.complete(req);
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
    };
    let key = store.record_llm_call(&record)?;
    tracing::info!(
        message_id = message_id::LLM_CALL,
        pm_event = "llm_call",
        pm_outcome = outcome,
        pm_id = %key,
        pm_provider = provider.name(),
        pm_tokens = usage.total(),
        pm_duration_ms = duration_ms,
        "{} call for {}: {outcome} in {duration_ms} ms, {} tokens{}",
        provider.name(),
        req.purpose.as_str(),
        usage.total(),
        error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
    );
    Ok(result?)
}
