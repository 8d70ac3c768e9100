//! What the store holds. Values are JSON with a version field `v`, so a
//! later PiMainteno can read (and migrate) what an earlier one wrote.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::llm::Usage;

/// Current version of every record type below.
pub const RECORD_VERSION: u32 = 1;

fn v1() -> u32 {
    RECORD_VERSION
}

/// The last known state of one project (`projects` database, key = name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectRecord {
    #[serde(default = "v1")]
    pub v: u32,
    pub name: String,
    pub path: String,
    /// Fingerprint the last stored summary was made from.
    pub fingerprint: Option<String>,
    /// Key of the last summary in `summaries`.
    pub last_summary: Option<String>,
    /// When a run last did work on this project (ms since the epoch).
    pub last_run_ms: u64,
    /// `summarized`, `summarized_blind` (codex could not read the project),
    /// or a failure: `failed`, `unavailable`, `timeout`, `invalid`,
    /// `sandbox`, `over_budget`.
    pub last_outcome: String,
    pub last_error: Option<String>,
}

impl ProjectRecord {
    pub fn new(name: &str, path: &str) -> Self {
        ProjectRecord {
            v: RECORD_VERSION,
            name: name.into(),
            path: path.into(),
            fingerprint: None,
            last_summary: None,
            last_run_ms: 0,
            last_outcome: "new".into(),
            last_error: None,
        }
    }
}

/// One summary (`summaries` database, key = `<project>/<time key>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryRecord {
    #[serde(default = "v1")]
    pub v: u32,
    pub project: String,
    pub created_ms: u64,
    /// HEAD when the summary was made (`None` in a repository without commits).
    pub commit: Option<String>,
    pub branch: Option<String>,
    /// True when uncommitted changes were part of what was summarized.
    pub dirty: bool,
    pub fingerprint: String,
    pub provider: String,
    pub model: String,
    pub text: String,
    pub duration_ms: u64,
    pub usage: Usage,
    /// Where it was written, relative to the project (`None`: store only).
    pub file: Option<String>,
    /// codex's sandbox error when the model's commands could not run: the
    /// summary was made without reading the project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_error: Option<String>,
}

/// One call to a provider (`llm_calls` database, key = `<project>/<time key>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LlmCallRecord {
    #[serde(default = "v1")]
    pub v: u32,
    pub time_ms: u64,
    pub project: String,
    pub purpose: String,
    pub provider: String,
    pub model: String,
    pub duration_ms: u64,
    pub usage: Usage,
    /// `ok`, or an [`crate::llm::LlmError::outcome`] word.
    pub outcome: String,
    pub error: Option<String>,
    /// Secret values replaced by placeholders in the prompt, by kind
    /// (`aws-key` → 2). The prompt as sent is in the store's `prompts`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub redacted: BTreeMap<String, u32>,
}

/// What the handler decided to do about a failure, and what came of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairRecord {
    /// `restart`, `reset_restart` (after start-limit-hit), `patch` (pending
    /// work stored for the project), or `none` (recorded only).
    pub action: String,
    /// Why this action (or why not more): the limit, the analyzer, the cache.
    pub reason: String,
    /// `pending` (decided, not carried out yet), `done`, `failed`,
    /// `skipped`.
    pub outcome: String,
    /// The unit's state after the repair (`active`, `failed`...), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_after: Option<String>,
}

/// A diagnosis: why a unit failed and what to do. Made by an analyzer, by
/// the LLM (validated), or reused from an earlier identical failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiagnosisRecord {
    /// Short machine word of the analyzer that matched (`exec`, `oom`...),
    /// `llm`, or `unknown`.
    pub kind: String,
    pub cause: String,
    /// 0.0 to 1.0, in hundredths (kept integral so records compare exactly).
    pub confidence_pct: u8,
    /// The journal lines the diagnosis rests on (copied from the excerpt).
    pub evidence: Vec<String>,
    /// One of the allow-list: `restart`, `patch`, `none`.
    pub action: String,
    /// `analyzer`, `llm`, or `cache` (an identical failure's diagnosis).
    pub source: String,
}

/// One failure of a watched unit (`failures` database, key = `<unit>/<time key>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRecord {
    #[serde(default = "v1")]
    pub v: u32,
    pub unit: String,
    /// The project the unit belongs to (`[[project]] units`), if any.
    pub project: Option<String>,
    pub time_ms: u64,
    pub invocation_id: Option<String>,
    /// `$MONITOR_SERVICE_RESULT`: `exit-code`, `signal`, `oom-kill`...
    pub result: String,
    /// `$MONITOR_EXIT_CODE` (`exited`, `killed`, `dumped`) and
    /// `$MONITOR_EXIT_STATUS` (a number or a signal name).
    pub exit_code: Option<String>,
    pub exit_status: Option<String>,
    /// The unit's `ExecStart=` and its `NRestarts` when it failed.
    pub exec_start: Option<String>,
    pub n_restarts: Option<u64>,
    /// The journal lines of that invocation, bounded.
    pub journal: Vec<String>,
    /// True when lines were left out to stay within the bounds.
    pub journal_truncated: bool,
    pub signature: String,
    pub diagnosis: DiagnosisRecord,
    /// Set when the LLM was asked (`None`: analyzer or cache only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmNote>,
    pub repair: RepairRecord,
}

/// What asking the LLM about a failure cost and gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LlmNote {
    pub provider: String,
    pub tokens: u64,
    /// `ok`, `invalid` (the reply did not validate: the analyzer's answer
    /// stands), or an [`crate::llm::LlmError::outcome`] word.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A known failure (`signatures` database, key = the signature).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureRecord {
    #[serde(default = "v1")]
    pub v: u32,
    pub unit: String,
    pub diagnosis: DiagnosisRecord,
    pub first_ms: u64,
    pub last_ms: u64,
    pub count: u64,
}

/// Work for pm-patch: a failure of a project's unit (`pending` database,
/// key = `<project>/<time key>`). pm-patch deletes it when it has run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRecord {
    #[serde(default = "v1")]
    pub v: u32,
    pub project: String,
    pub unit: String,
    /// Key of the failure in `failures` (journal excerpt, diagnosis).
    pub failure: String,
    pub created_ms: u64,
}

/// One LLM attempt of a patch run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchAttempt {
    pub n: u32,
    /// The change as a unified diff (rendered with `similar`), `""` when
    /// there was none.
    pub diff: String,
    pub files: Vec<String>,
    /// The check in the worktree (`None`: not run, the change was refused).
    pub check: Option<crate::check::CheckOutcome>,
    pub tokens: u64,
    /// `passed`, `check_failed`, `refused` (confinement), `no_change`,
    /// `llm_failed`, `not_applied` (a diff that does not apply).
    pub outcome: String,
    /// Why it was refused, or the LLM's error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Files the check created or changed in the worktree: never part of
    /// the commit, which is the confined change alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_by_check: Vec<String>,
    /// What the tests the check's output names say of the change (`2 tests
    /// fixed (a, b); 40 still pass`), when it names them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<String>,
    /// The tests that went from failing at the base to passing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fixed_tests: Vec<String>,
}

/// One pm-patch run on a project (`patches` database, key = `<project>/<time key>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchRecord {
    #[serde(default = "v1")]
    pub v: u32,
    pub project: String,
    pub time_ms: u64,
    /// `check` (failing at HEAD), `failure` (pm-onfailure's pending work),
    /// `task` (`--task`).
    pub trigger: String,
    /// What was to be fixed, one line.
    pub reason: String,
    /// Same base and same failure: not attempted again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_key: Option<String>,
    pub base: String,
    pub branch: String,
    /// The commit on `branch` when the check passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    pub attempts: Vec<PatchAttempt>,
    pub provider: String,
    pub tokens: u64,
    /// `committed` (on its branch), `merged` (fast-forwarded), `failed`
    /// (no attempt passed; the branch is gone), `dry_run`, `error`.
    pub outcome: String,
    /// Why `merge` fell back to `branch`, or what went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The check's state at a HEAD (`meta`, key `patch/checked/<project>`),
/// written by pm-patch: a run at the same HEAD whose check passed (or whose
/// failure was already attempted) does nothing and writes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckedRecord {
    pub head: String,
    pub passed: bool,
    pub attempt_key: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_stored_before_sandbox_errors_were_recorded_still_reads() {
        let old = r#"{"v":1,"project":"p","created_ms":1,"commit":null,"branch":null,"dirty":false,"fingerprint":"f","provider":"codex","model":"","text":"t","duration_ms":1,"usage":{"input_tokens":1,"cached_input_tokens":0,"output_tokens":1,"reasoning_output_tokens":0},"file":"codex.md"}"#;
        let s: SummaryRecord = serde_json::from_str(old).unwrap();
        assert_eq!(s.sandbox_error, None);
        // And a summary without one is stored as before.
        assert_eq!(serde_json::to_string(&s).unwrap(), old);
    }
}
