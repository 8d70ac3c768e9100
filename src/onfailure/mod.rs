//! pm-onfailure: a watched unit failed; systemd started
//! `pm-onfailure@<unit>.service` through the `OnFailure=` drop-in the
//! generator wrote. Read that run's evidence, diagnose, repair within the
//! limits, record.
//!
//! Repair first, explain after (DESIGN.md §5). The shipped unit runs four
//! steps, each this binary with `--step`:
//!
//! 1. `decide` (the service account, unprivileged): [`evidence`], the
//!    [`signature`], the [`analyzers`] or the stored diagnosis of an
//!    identical failure, the [`repair`] limits; the failure is recorded
//!    and the decision written to `$RUNTIME_DIRECTORY`.
//! 2. `repair` (root without capabilities, `ExecStart=-!`): restart the
//!    unit if the decision says so. Nothing else can be asked of it.
//! 3. `explain` (unprivileged): the unit's state after the repair, the
//!    LLM's [`diagnosis`] of a new failure (validated; the analyzer's
//!    answer stands otherwise), pending work for pm-patch; the record is
//!    completed.
//! 4. `handoff` (root without capabilities, like 2): start
//!    `pimainteno-patch@<project>.service` when step 3 left work.
//!
//! Run by hand (`sudo pm-onfailure UNIT`), all of them run in one process.

pub mod analyzers;
pub mod diagnosis;
pub mod evidence;
pub mod repair;
pub mod signature;

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::{PatchMode, ProjectSettings, ProviderKind, Settings};
use crate::exit::Exit;
use crate::llm::{self, Purpose, Request, metered};
use crate::logging::message_id;
use crate::store::{
    DiagnosisRecord, FailureRecord, LlmNote, PendingRecord, RepairRecord, SignatureRecord, Store,
    records::RECORD_VERSION,
};
use crate::time;
use analyzers::{Action, Finding};
use evidence::{Excerpt, Monitor, UnitFacts};
use repair::{Decision, Step};

/// The handler's own template: it never handles its own failures.
pub const TEMPLATE: &str = "pm-onfailure@.service";

/// Which part of the handling this process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// All three in one process (a manual run, as root).
    All,
    Decide,
    Repair,
    Explain,
    /// Root again: start pm-patch for the project step 3 left work for.
    Handoff,
}

#[derive(Debug, Clone)]
pub struct Options {
    /// The failed unit (else `$MONITOR_UNIT`).
    pub unit: Option<String>,
    pub stage: Stage,
    /// Where the steps hand over the decision (`$RUNTIME_DIRECTORY`).
    pub runtime_dir: Option<PathBuf>,
}

/// The failed unit, from the argument or `$MONITOR_*`, checked.
fn monitor(opts: &Options) -> anyhow::Result<Monitor> {
    let monitor = Monitor::from_env(opts.unit.as_deref())?;
    let unit =
        crate::config::validate::unit_name(&monitor.unit).map_err(|e| anyhow::anyhow!("{e}"))?;
    if unit.starts_with("pm-onfailure@") {
        anyhow::bail!("{unit}: pm-onfailure does not handle its own failures (see its journal)");
    }
    Ok(Monitor { unit, ..monitor })
}

fn handover(opts: &Options) -> anyhow::Result<&Path> {
    opts.runtime_dir.as_deref().context(
        "$RUNTIME_DIRECTORY is not set: the steps of pm-onfailure@.service hand over the \
         decision there; run `pm-onfailure UNIT` without --step by hand",
    )
}

/// Handle one failure (one stage of it; not [`Stage::Repair`], see
/// [`repair_step`]). Problems with one failure are logged and the exit code
/// stays 0, so the handler unit does not end failed; only a bad
/// configuration or an unusable store fail it.
pub fn run(settings: &Settings, opts: &Options) -> anyhow::Result<Exit> {
    let monitor = monitor(opts)?;
    let span = tracing::info_span!("unit", pm_unit = %monitor.unit);
    let _enter = span.enter();
    match opts.stage {
        Stage::Decide => {
            let store = Store::open(&settings.cache)?;
            if let Some(d) = decide(settings, &store, &monitor)? {
                d.write(handover(opts)?)?;
            }
        }
        Stage::Explain => {
            let dir = handover(opts)?;
            if dir.join(repair::DECISION_FILE).exists() {
                let d = Decision::read(dir)?;
                let store = Store::open(&settings.cache)?;
                if let Some(project) = explain(settings, &store, &d, None)? {
                    repair::write_public(dir, repair::HANDOFF_FILE, project.as_bytes())?;
                }
            }
        }
        Stage::Repair | Stage::Handoff => return privileged_step(opts),
        Stage::All => {
            let store = Store::open(&settings.cache)?;
            if let Some(d) = decide(settings, &store, &monitor)? {
                let applied = carry_out(&d);
                if let Some(project) = explain(settings, &store, &d, applied)? {
                    start_patch(&project);
                }
            }
        }
    }
    Ok(Exit::Ok)
}

/// Steps 2 and 4, as root: carry out the decision of step 1 on this unit
/// (`repair`), or start pm-patch for the project step 3 left work for
/// (`handoff`). They need neither the configuration nor the store, so that
/// nothing but the files of steps 1 and 3 (and the instance name) steers
/// them.
pub fn privileged_step(opts: &Options) -> anyhow::Result<Exit> {
    let monitor = monitor(opts)?;
    let span = tracing::info_span!("unit", pm_unit = %monitor.unit);
    let _enter = span.enter();
    let dir = handover(opts)?;
    if opts.stage == Stage::Handoff {
        if let Some(project) = repair::read_public(dir, repair::HANDOFF_FILE)? {
            start_patch(&project);
        }
        return Ok(Exit::Ok);
    }
    if dir.join(repair::DECISION_FILE).exists() {
        let d = Decision::read(dir)?;
        if d.unit != monitor.unit {
            anyhow::bail!(
                "the decision is for {}, not {}: refused",
                d.unit,
                monitor.unit
            );
        }
        carry_out(&d);
    }
    Ok(Exit::Ok)
}

/// Start `pimainteno-patch@<project>.service` without waiting for it.
fn start_patch(project: &str) {
    match repair::start_patch(project) {
        Ok(unit) => tracing::info!(
            pm_event = "handoff",
            "pending work for project {project}: {unit} started"
        ),
        Err(e) => tracing::error!(
            pm_event = "handoff",
            "cannot hand the failure to pm-patch: {e:#}"
        ),
    }
}

/// The actions a diagnosis may choose for this unit.
fn allowed(project: Option<&ProjectSettings>) -> Vec<Action> {
    match project {
        Some(p) if p.patch != PatchMode::Off => Action::ALL.to_vec(),
        _ => vec![Action::Restart, Action::None],
    }
}

fn diagnosis_record(f: &Finding, source: &str) -> DiagnosisRecord {
    DiagnosisRecord {
        kind: f.kind.to_string(),
        cause: f.cause.clone(),
        confidence_pct: f.confidence_pct,
        evidence: f.evidence.clone(),
        action: f.action.as_str().to_string(),
        source: source.to_string(),
    }
}

/// Restarts of `unit` decided in the last hour (failed ones included:
/// they were tried).
fn repairs_last_hour(store: &Store, unit: &str, now_ms: u64) -> anyhow::Result<u32> {
    let since = now_ms.saturating_sub(3_600_000);
    let mut n = 0;
    for (_, f) in store.failures(unit, usize::MAX)? {
        if f.time_ms < since {
            break;
        }
        if f.repair.action != Step::None.as_str() {
            n += 1;
        }
    }
    Ok(n)
}

/// Step 1: evidence, diagnosis from an analyzer or the cache, the repair
/// decision; the failure is recorded. `None`: nothing to do (a package
/// upgrade stopped the unit).
pub fn decide(
    settings: &Settings,
    store: &Store,
    monitor: &Monitor,
) -> anyhow::Result<Option<Decision>> {
    let unit = monitor.unit.as_str();
    let facts = evidence::unit_facts(unit).unwrap_or_else(|e| {
        tracing::warn!("cannot read the properties of {unit}: {e:#}");
        UnitFacts::default()
    });
    if monitor.result == "signal"
        && let Some(path) = &facts.fragment_path
        && repair::package_in_flux(path)
    {
        tracing::info!(
            pm_event = "failure",
            pm_outcome = "ignored",
            "{unit} was stopped by a signal while dpkg is upgrading or removing its package: ignored"
        );
        return Ok(None);
    }
    if monitor.invocation_id.is_none() {
        tracing::info!(
            "no $MONITOR_INVOCATION_ID (a dependency failed, or not started by OnFailure=): \
             the journal of the last ten minutes of {unit} is read instead"
        );
    }
    let excerpt = match evidence::read_journal(unit, monitor.invocation_id.as_deref()) {
        Ok(e) => {
            warn_if_blind(unit, &e);
            e
        }
        Err(e) => {
            tracing::warn!("cannot read the journal of {unit}: {e:#}");
            Excerpt::default()
        }
    };
    Ok(Some(record_failure(
        settings, store, monitor, &facts, excerpt,
    )?))
}

/// A run without a line of its own output: say so when the cause may be
/// ours (journal files this account cannot read, which sd-journal skips
/// silently) or journald's.
fn warn_if_blind(unit: &str, excerpt: &Excerpt) {
    if excerpt.lines.iter().any(|l| !l.from_manager) {
        return;
    }
    let unreadable = evidence::unreadable_journal_files();
    if !unreadable.is_empty() {
        let names: Vec<String> = unreadable
            .iter()
            .take(5)
            .map(|p| p.display().to_string())
            .collect();
        tracing::warn!(
            "no line of {unit}'s own output was found, and this account cannot read {} \
             journal file(s): {}{}; a service's output can be in any of them (user-<uid>.journal \
             for a User= service): pm-onfailure@.service needs SupplementaryGroups=systemd-journal",
            unreadable.len(),
            names.join(", "),
            if unreadable.len() > names.len() {
                ", …"
            } else {
                ""
            }
        );
    } else if excerpt.lines.is_empty() {
        tracing::warn!(
            "the journal has no lines of {unit}'s run: does journald keep them \
             (Storage= in journald.conf)?"
        );
    }
}

/// The part of step 1 after the evidence is gathered (tests call it with
/// recorded evidence).
pub fn record_failure(
    settings: &Settings,
    store: &Store,
    monitor: &Monitor,
    facts: &UnitFacts,
    excerpt: Excerpt,
) -> anyhow::Result<Decision> {
    let unit = monitor.unit.as_str();
    let now = time::now_ms();
    let project = settings.project_of_unit(unit);
    let allowed = allowed(project);
    let sig = signature::of(monitor, &excerpt);
    let finding = analyzers::analyze(&analyzers::Input {
        monitor,
        excerpt: &excerpt,
        facts,
        patchable: allowed.contains(&Action::Patch),
    });
    let diagnosis = match store.signature(&sig.key)? {
        Some(known) if reusable(settings, &known, now) => DiagnosisRecord {
            source: "cache".into(),
            ..known.diagnosis
        },
        _ => diagnosis_record(&finding, "analyzer"),
    };
    // An action the unit no longer allows (the project stopped patching)
    // falls back to a restart.
    let action = Action::parse(&diagnosis.action)
        .filter(|a| allowed.contains(a))
        .unwrap_or(Action::Restart);
    let mon = &settings.systemd_monitor;
    let watched = settings.watches(unit);
    let (step, reason) = repair::decide(&repair::Situation {
        action,
        start_limit_hit: analyzers::start_limit_hit(monitor, &excerpt),
        watched,
        restart_allowed: mon.restart,
        auto_restarting: facts.auto_restarting(),
        repairs_last_hour: repairs_last_hour(store, unit, now)?,
        max_repairs_per_hour: mon.max_repairs_per_hour,
    });
    let record = FailureRecord {
        v: RECORD_VERSION,
        unit: unit.to_string(),
        project: project.map(|p| p.name.clone()),
        time_ms: now,
        invocation_id: monitor.invocation_id.clone(),
        result: monitor.result.clone(),
        exit_code: monitor.exit_code.clone(),
        exit_status: monitor.exit_status.clone(),
        exec_start: facts.exec_start.clone(),
        n_restarts: facts.n_restarts,
        journal: excerpt.display(),
        journal_truncated: excerpt.truncated,
        signature: sig.key.clone(),
        diagnosis,
        llm: None,
        repair: RepairRecord {
            action: step.as_str().into(),
            reason: reason.clone(),
            outcome: if step == Step::None {
                "skipped"
            } else {
                "pending"
            }
            .into(),
            state_after: None,
        },
    };
    let key = store.save_failure(&record)?;
    tracing::warn!(
        message_id = message_id::FAILURE,
        pm_event = "failure",
        pm_outcome = %monitor.result,
        pm_id = %key,
        pm_signature = %sig.key,
        "{unit} failed ({}{}): {} [{}]; {reason}",
        monitor.result,
        monitor
            .exit_status
            .as_deref()
            .map(|s| format!(", status {s}"))
            .unwrap_or_default(),
        record.diagnosis.cause,
        record.diagnosis.source,
    );
    Ok(Decision {
        unit: unit.to_string(),
        step,
        failure: key,
    })
}

/// A stored diagnosis answers for an identical failure within the window,
/// unless it was the analyzer's alone and an LLM could now say more.
fn reusable(settings: &Settings, known: &SignatureRecord, now_ms: u64) -> bool {
    let fresh = now_ms.saturating_sub(known.last_ms) <= signature::WINDOW.as_millis() as u64;
    fresh && (known.diagnosis.source != "analyzer" || settings.llm.provider == ProviderKind::None)
}

/// Step 2: restart (as root). Returns the outcome for step 3 when it runs
/// in the same process; errors are logged, never returned: the unit must
/// not end failed because a restart failed.
fn carry_out(d: &Decision) -> Option<bool> {
    if d.step == Step::None {
        return None;
    }
    let result = repair::apply(&d.unit, d.step);
    match &result {
        Ok(()) => tracing::info!(
            message_id = message_id::REPAIR,
            pm_event = "repair",
            pm_outcome = "done",
            pm_id = %d.failure,
            "{}: {} done",
            d.unit,
            d.step.as_str()
        ),
        Err(e) => tracing::error!(
            message_id = message_id::REPAIR,
            pm_event = "repair",
            pm_outcome = "failed",
            pm_id = %d.failure,
            "{}: {} failed: {e:#}",
            d.unit,
            d.step.as_str()
        ),
    }
    Some(result.is_ok())
}

/// Step 3: the repair's outcome, the LLM's diagnosis of a new failure,
/// pending work for pm-patch; the record completed.
/// Returns the project whose pm-patch is to be started (pending work was
/// stored for it).
pub fn explain(
    settings: &Settings,
    store: &Store,
    d: &Decision,
    applied: Option<bool>,
) -> anyhow::Result<Option<String>> {
    let Some(mut record) = store.failure(&d.failure)? else {
        tracing::warn!("the failure record {} is gone (trimmed?)", d.failure);
        return Ok(None);
    };
    let unit = d.unit.as_str();
    if d.step != Step::None {
        let state = evidence::unit_facts(unit).ok().and_then(|f| f.active_state);
        let up = state
            .as_deref()
            .map(|s| matches!(s, "active" | "activating" | "reloading"));
        record.repair.outcome = match (applied, up) {
            (Some(false), _) | (_, Some(false)) => "failed",
            (_, Some(true)) | (Some(true), None) => "done",
            (None, None) => "unknown",
        }
        .into();
        record.repair.state_after = state;
    }
    let project = settings.project_of_unit(unit);
    let allowed = allowed(project);
    if record.diagnosis.source == "analyzer" && settings.llm.provider != ProviderKind::None {
        let workdir = project.map(|p| p.path.clone());
        let (diagnosis, note) = ask_llm(settings, store, &record, &allowed, workdir.as_deref())?;
        if let Some(dx) = diagnosis {
            record.diagnosis = dx;
        }
        record.llm = Some(note);
    }
    let now = time::now_ms();
    let signature = match store.signature(&record.signature)? {
        Some(mut known) if record.diagnosis.source == "cache" => {
            known.last_ms = now;
            known.count += 1;
            known
        }
        known => SignatureRecord {
            v: RECORD_VERSION,
            unit: unit.to_string(),
            diagnosis: DiagnosisRecord {
                source: record.diagnosis.source.clone(),
                ..record.diagnosis.clone()
            },
            first_ms: known.as_ref().map_or(now, |k| k.first_ms),
            last_ms: now,
            count: known.map_or(1, |k| k.count + 1),
        },
    };
    let mut handoff = None;
    if record.diagnosis.action == Action::Patch.as_str()
        && let Some(p) = project.filter(|p| p.patch != PatchMode::Off)
    {
        handoff = Some(p.name.clone());
        let key = store.add_pending(&PendingRecord {
            v: RECORD_VERSION,
            project: p.name.clone(),
            unit: unit.to_string(),
            failure: d.failure.clone(),
            created_ms: now,
        })?;
        record.repair.reason.push_str(&format!(
            "; handed to pm-patch for project {} [{key}]",
            p.name
        ));
    }
    store.update_failure(&d.failure, &record, Some(&signature))?;
    tracing::info!(
        message_id = message_id::DIAGNOSIS,
        pm_event = "diagnosis",
        pm_outcome = %record.diagnosis.source,
        pm_id = %d.failure,
        pm_tokens = record.llm.as_ref().map_or(0, |n| n.tokens),
        "{unit}: {} ({}% sure, {}); action {}; repair {}",
        record.diagnosis.cause,
        record.diagnosis.confidence_pct,
        record.diagnosis.source,
        record.diagnosis.action,
        record.repair.outcome,
    );
    Ok(handoff)
}

/// Ask the provider; a reply that does not validate leaves the analyzer's
/// diagnosis (the note says why).
fn ask_llm(
    settings: &Settings,
    store: &Store,
    record: &FailureRecord,
    allowed: &[Action],
    workdir: Option<&Path>,
) -> anyhow::Result<(Option<DiagnosisRecord>, LlmNote)> {
    let prompt = diagnosis::prompt(record, allowed);
    let schema = diagnosis::schema(allowed);
    // codex runs in a directory: the project's, else an empty one of our
    // own (the unit's PrivateTmp=).
    let mut scratch = Scratch(None);
    let workdir = match workdir {
        Some(w) => w.to_path_buf(),
        None => {
            let dir = std::env::temp_dir().join(format!("pm-onfailure-{}", std::process::id()));
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            scratch.0 = Some(dir.clone());
            dir
        }
    };
    let provider = llm::from_settings(&settings.llm);
    let req = Request {
        purpose: Purpose::Diagnosis,
        prompt: &prompt,
        workdir: &workdir,
        check: None,
        exclude: &[],
        schema: Some(&schema),
        sandbox: None,
    };
    let mut note = LlmNote {
        provider: provider.name().to_string(),
        tokens: 0,
        outcome: "ok".into(),
        error: None,
    };
    match metered::call(
        provider.as_ref(),
        store,
        &record.unit,
        settings.llm.daily_token_budget,
        &req,
    ) {
        Ok(answer) => {
            note.tokens = answer.usage.total();
            match diagnosis::validate(&answer.text, &record.journal, allowed) {
                Ok(reply) => {
                    let evidence = if reply.evidence.is_empty() {
                        record.diagnosis.evidence.clone()
                    } else {
                        reply.evidence
                    };
                    return Ok((
                        Some(DiagnosisRecord {
                            kind: record.diagnosis.kind.clone(),
                            cause: reply.cause,
                            confidence_pct: reply.confidence_pct,
                            evidence,
                            action: reply.action.as_str().into(),
                            source: "llm".into(),
                        }),
                        note,
                    ));
                }
                Err(why) => {
                    tracing::warn!(
                        "{}: the LLM's diagnosis was refused: {why}; the analyzer's stands",
                        record.unit
                    );
                    note.outcome = "invalid".into();
                    note.error = Some(why);
                }
            }
        }
        Err(e) => {
            let (outcome, text) = match e.downcast_ref::<llm::LlmError>() {
                Some(l) => (l.outcome(), l.to_string()),
                None => return Err(e),
            };
            tracing::warn!(
                "{}: no LLM diagnosis: {text}; the analyzer's stands",
                record.unit
            );
            note.outcome = outcome.into();
            note.error = Some(text);
        }
    }
    Ok((None, note))
}

/// An empty directory removed when dropped.
struct Scratch(Option<PathBuf>);

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(d) = &self.0 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
