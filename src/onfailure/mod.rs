//! pm-onfailure: a watched unit failed; systemd started
//! `pm-onfailure@<unit>.service` through the `OnFailure=` drop-in the
//! generator wrote. Read that run's evidence, diagnose, repair within the
//! limits, record.
//!
//! No failure may be lost, and repair comes first, explanation after
//! (DESIGN.md §5). systemd merges a start of `pm-onfailure@X` into a run of
//! it already under way, so that run does nothing slow: it writes the
//! failure to the [`queue`] under /run and ends (`--step enqueue`). Three
//! units do the rest, each this binary with `--step`:
//!
//! - `pimainteno-repair.service`, started by its .path unit while the queue
//!   is not empty:
//!   1. `decide` (the service account): for each queued failure, the
//!      [`evidence`] of its run (fields journald and PID 1 stamp only), the
//!      [`signature`], the [`analyzers`] or the stored diagnosis of an
//!      identical failure, and the [`repair`] limits, counted in [`limits`]
//!      on a clock that does not step and without the store. The failure is
//!      recorded in the store, or under /run while the store cannot be
//!      used ([`rundir::UNRECORDED`]), and the decisions written.
//!   2. `repair` (root without capabilities, `ExecStart=-!`): restart the
//!      units decided, each only while systemd says it is failed and hooked
//!      to pm-onfailure.
//!   3. `followup` (the service account): each unit's state after the
//!      repair; a failure to explain is queued for the LLM, anything else
//!      concluded at once; a unit that failed again in a run not handled
//!      yet is queued (its start of pm-onfailure@ may have been merged).
//!   4. `handoff` (root again): start `pimainteno-patch@<project>` when step
//!      3 left work.
//! - `pimainteno-explain.service`, started by its .path unit: the LLM's
//!   [`diagnosis`] of new failures (`explain`), then `explain-handoff`.
//!
//! Run by hand (`sudo pm-onfailure UNIT`), all of it runs in one process.

pub mod analyzers;
pub mod diagnosis;
pub mod evidence;
pub mod limits;
pub mod queue;
pub mod repair;
pub mod rundir;
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
use queue::Pending;
use repair::{Decision, Step};
use rundir::RunDir;

/// The handler's own template: it never handles its own failures.
pub const TEMPLATE: &str = "pm-onfailure@.service";

/// Which part of the handling this process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// All of it for one unit in one process (a manual run, as root).
    All,
    /// pm-onfailure@UNIT: queue the failure.
    Enqueue,
    Decide,
    Repair,
    Followup,
    Explain,
    /// Root: start pm-patch for the projects `explain` left work for.
    Handoff,
}

#[derive(Debug, Clone)]
pub struct Options {
    /// The failed unit (else `$MONITOR_UNIT`): `enqueue` and a manual run.
    pub unit: Option<String>,
    pub stage: Stage,
    pub run_dir: RunDir,
}

/// What the steps work with.
pub struct Handler<'a> {
    pub settings: &'a Settings,
    /// `None`: the store cannot be used now (reported; failures are kept
    /// under /run until it can).
    pub store: Option<&'a Store>,
    pub run: &'a RunDir,
    /// The configuration cannot be read: every unit hooked to pm-onfailure
    /// counts as watched (the generator hooked it from a good one), with the
    /// default limits and no LLM.
    pub config_broken: bool,
}

impl<'a> Handler<'a> {
    /// With a working store and configuration.
    pub fn new(settings: &'a Settings, store: &'a Store, run: &'a RunDir) -> Handler<'a> {
        Handler {
            settings,
            store: Some(store),
            run,
            config_broken: false,
        }
    }
}

/// The failed unit, from the argument or `$MONITOR_*`, checked.
fn monitor(opts: &Options) -> anyhow::Result<Monitor> {
    let monitor = Monitor::from_env(opts.unit.as_deref())?;
    let unit = checked_unit(&monitor.unit)?;
    Ok(Monitor { unit, ..monitor })
}

fn checked_unit(unit: &str) -> anyhow::Result<String> {
    let unit = crate::config::validate::unit_name(unit).map_err(|e| anyhow::anyhow!("{e}"))?;
    if unit.starts_with("pm-onfailure@") {
        anyhow::bail!("{unit}: pm-onfailure does not handle its own failures (see its journal)");
    }
    Ok(unit)
}

/// `pm-onfailure@UNIT`'s only step: queue the failure, nothing else (no
/// configuration, no store, no journal): it must end before the unit can
/// fail again.
pub fn enqueue(opts: &Options) -> anyhow::Result<Exit> {
    let monitor = monitor(opts)?;
    let pending = Pending::new(&monitor, "on_failure");
    let path = queue::push(&opts.run_dir, &pending)?;
    tracing::debug!(pm_unit = %monitor.unit, "queued as {}", path.display());
    Ok(Exit::Ok)
}

/// Open the store for a step; when it cannot be used, say so loudly (the
/// journal, `status` and the dashboard read the fault file) and go on
/// without it. When it works again, the failures kept meanwhile are stored.
pub fn open_store(settings: &Settings, run: &RunDir) -> Option<Store> {
    match Store::open(&settings.cache) {
        Ok(store) => {
            flush_unrecorded(&store, run);
            Some(store)
        }
        Err(e) => {
            report_store_fault(run, &e);
            None
        }
    }
}

fn report_store_fault(run: &RunDir, e: &anyhow::Error) {
    tracing::error!(
        pm_event = "store",
        pm_outcome = "failed",
        "the store cannot be used: {e:#}; failures are still repaired within \
         max_repairs_per_hour and kept under {} until it works again",
        run.path(rundir::UNRECORDED).display()
    );
    let text = format!("{}\n{e:#}\n", time::rfc3339(time::now_ms()));
    if let Err(w) = run
        .create()
        .and_then(|_| rundir::write_atomic(&run.path(rundir::STORE_FAULT), text.as_bytes()))
    {
        tracing::error!("cannot report the store's fault under /run either: {w:#}");
    }
}

/// A write went through: the fault reported before is over. (Opening alone
/// proves nothing: a full disk lets the store open and refuses the write.)
fn clear_store_fault(store: &Store, run: &RunDir) {
    let fault = run.path(rundir::STORE_FAULT);
    if fault.exists() {
        tracing::info!(
            pm_event = "store",
            pm_outcome = "ok",
            "the store at {} works again",
            store.path().display()
        );
        let _ = rundir::remove(&fault);
    }
}

/// The store's fault while it has one (`status`, the dashboard): the time
/// it was seen and the error.
pub fn store_fault(run: &RunDir) -> Option<String> {
    std::fs::read_to_string(run.path(rundir::STORE_FAULT))
        .ok()
        .map(|t| t.trim().to_string())
}

/// Store the failures kept under /run while the store could not be used.
fn flush_unrecorded(store: &Store, run: &RunDir) {
    let dir = run.path(rundir::UNRECORDED);
    let files = rundir::files(&dir, ".json");
    if files.is_empty() {
        return;
    }
    let mut stored = 0;
    for path in &files {
        let record: FailureRecord = match std::fs::read(path)
            .map_err(anyhow::Error::from)
            .and_then(|b| Ok(serde_json::from_slice(&b)?))
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("{} is not a failure record ({e}): removed", path.display());
                let _ = rundir::remove(path);
                continue;
            }
        };
        match store.save_failure(&record) {
            Ok(_) => {
                stored += 1;
                let _ = rundir::remove(path);
            }
            Err(e) => {
                report_store_fault(run, &e);
                return;
            }
        }
    }
    clear_store_fault(store, run);
    tracing::info!(
        "{stored} failure(s) that came while the store could not be used are recorded now"
    );
}

/// Run one stage; problems with one failure are logged and the exit code
/// stays 0: the worker units must not end failed (their .path units would
/// start them again and again).
pub fn run(settings: &Settings, config_broken: bool, opts: &Options) -> anyhow::Result<Exit> {
    let run = &opts.run_dir;
    match opts.stage {
        Stage::Enqueue => return enqueue(opts),
        Stage::Repair | Stage::Handoff => return privileged_step(opts),
        Stage::Decide | Stage::Followup | Stage::Explain => {
            let store = if config_broken {
                None
            } else {
                open_store(settings, run)
            };
            let h = Handler {
                settings,
                store: store.as_ref(),
                run,
                config_broken,
            };
            match opts.stage {
                Stage::Decide => decide_queued(&h)?,
                Stage::Followup => followup(&h)?,
                _ => explain_queued(&h)?,
            }
        }
        Stage::All => {
            let monitor = monitor(opts)?;
            let span = tracing::info_span!("unit", pm_unit = %monitor.unit);
            let _enter = span.enter();
            let store = open_store(settings, run);
            let h = Handler {
                settings,
                store: store.as_ref(),
                run,
                config_broken,
            };
            if let Some(d) = decide_one(&h, &Pending::new(&monitor, "manual"), &[])? {
                let applied = carry_out(&d);
                note_outcome(&h, &d, applied)?;
                if let Some(project) = explain(&h, &d)? {
                    start_patch(&project);
                }
            }
        }
    }
    Ok(Exit::Ok)
}

const DECISIONS_FILE: &str = "decisions.json";
const HANDOFF_FILE: &str = "handoff";

fn read_decisions(dir: &Path) -> Vec<Decision> {
    let path = dir.join(DECISIONS_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::error!("{} is not a list of decisions: {e}", path.display());
            Vec::new()
        }),
        Err(_) => Vec::new(),
    }
}

/// Step 1 of pimainteno-repair.service: decide on every queued failure.
pub fn decide_queued(h: &Handler<'_>) -> anyhow::Result<()> {
    let worker = h.run.dir(rundir::WORKER)?;
    // Decisions a run that died left behind are carried out with these.
    let mut decisions = read_decisions(&worker);
    wait_for_more(h);
    let save = |decisions: &Vec<Decision>| {
        rundir::write_atomic(
            &worker.join(DECISIONS_FILE),
            &serde_json::to_vec(decisions).unwrap_or_default(),
        )
    };
    for taken in queue::abandoned(h.run) {
        tracing::error!(
            "a previous run died while handling {}: handled now without its journal or the store",
            taken.path.display()
        );
        if let Some(p) = &taken.pending
            && let Some(d) = careful(h, p)
        {
            decisions.push(d);
            save(&decisions)?;
        }
        taken.done()?;
    }
    for taken in queue::take(h.run)? {
        match &taken.pending {
            None => tracing::error!("{} cannot be read: removed", taken.path.display()),
            Some(p) => match decide_one(h, p, &decisions) {
                Ok(Some(d)) => {
                    decisions.push(d);
                    save(&decisions)?;
                }
                Ok(None) => {}
                Err(e) => tracing::error!(pm_unit = %p.unit, "{}: {e:#}", p.unit),
            },
        }
        taken.done()?;
    }
    if decisions.is_empty() {
        let _ = rundir::remove(&worker.join(DECISIONS_FILE));
    }
    Ok(())
}

/// How long a run waits for more failures when nothing queued can be
/// restarted (a storm: every unit at its limit), and how often it looks.
const BATCH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
const BATCH_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// In a storm, take failures in batches: while every queued failure is of a
/// unit that has used up `max_repairs_per_hour` (nothing to restart, only
/// to record), wait up to [`BATCH_WAIT`] for more, so that one run (its
/// units' starts and sandboxes, most of the cost) handles many. A failure
/// that may be restarted ends the wait at once: the repair never waits.
fn wait_for_more(h: &Handler<'_>) {
    let started = std::time::Instant::now();
    let max = h.settings.systemd_monitor.max_repairs_per_hour;
    loop {
        let queued = queue::peek(h.run);
        if queued.is_empty() || started.elapsed() >= BATCH_WAIT {
            return;
        }
        let all_spent = queued.iter().all(|p| {
            limits::lock(h.run, &p.unit)
                .is_ok_and(|l| l.state.restarts_last_hour(time::boot_ms()) >= max)
        });
        if !all_spent {
            return;
        }
        std::thread::sleep(BATCH_POLL);
    }
}

/// A failure a previous run died on: no journal, no store, nothing but the
/// limits, so that the same cause cannot kill this run too.
fn careful(h: &Handler<'_>, p: &Pending) -> Option<Decision> {
    let unit = checked_unit(&p.unit).ok()?;
    let monitor = Monitor {
        unit,
        ..p.monitor()
    };
    let careful = Handler { store: None, ..*h };
    handle_failure(
        &careful,
        &monitor,
        &UnitFacts::default(),
        Excerpt::default(),
        &[],
    )
    .map_err(|e| tracing::error!("{}: {e:#}", monitor.unit))
    .ok()
}

/// Decide on one failure: the evidence, then [`handle_failure`]. `None`:
/// nothing to do (a run already handled, a package upgrade).
pub fn decide_one(
    h: &Handler<'_>,
    p: &Pending,
    batch: &[Decision],
) -> anyhow::Result<Option<Decision>> {
    let unit = checked_unit(&p.unit)?;
    let monitor = Monitor {
        unit: unit.clone(),
        ..p.monitor()
    };
    let span = tracing::info_span!("unit", pm_unit = %unit);
    let _enter = span.enter();
    if let Some(id) = &monitor.invocation_id
        && limits::lock(h.run, &unit)?.state.has_seen(id)
    {
        tracing::debug!("{unit}: run {id} is handled already");
        return Ok(None);
    }
    let facts = evidence::unit_facts(&unit).unwrap_or_else(|e| {
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
            "no invocation id (a dependency failed, or not started by OnFailure=): \
             the journal of the last ten minutes of {unit} is read instead"
        );
    }
    let excerpt = match evidence::read_journal(&unit, monitor.invocation_id.as_deref()) {
        Ok(e) => {
            warn_if_blind(&unit, &e);
            e
        }
        Err(e) => {
            tracing::warn!("cannot read the journal of {unit}: {e:#}");
            Excerpt::default()
        }
    };
    Ok(Some(handle_failure(h, &monitor, &facts, excerpt, batch)?))
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

/// Decide on one failure whose evidence is gathered (tests call it with
/// recorded evidence): diagnosis, limits, record. `batch`: the decisions
/// made before it in the same run (one restart covers a unit's failures).
pub fn handle_failure(
    h: &Handler<'_>,
    monitor: &Monitor,
    facts: &UnitFacts,
    excerpt: Excerpt,
    batch: &[Decision],
) -> anyhow::Result<Decision> {
    let settings = h.settings;
    let unit = monitor.unit.as_str();
    let now = time::now_ms();
    let boot = time::boot_ms();
    let project = settings.project_of_unit(unit);
    let allowed = allowed(project);
    let sig = signature::of(monitor, &excerpt);
    let finding = analyzers::analyze(&analyzers::Input {
        monitor,
        excerpt: &excerpt,
        facts,
        patchable: allowed.contains(&Action::Patch),
    });
    let known = match h.store.map(|s| s.signature(&sig.key)) {
        Some(Ok(known)) => known,
        Some(Err(e)) => {
            tracing::warn!("cannot read the stored diagnoses: {e:#}");
            None
        }
        None => None,
    };
    let diagnosis = match known {
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
    let watched = h.config_broken || settings.watches(unit);
    let mut limit = limits::lock(h.run, unit)?;
    let (step, reason) = repair::decide(&repair::Situation {
        action,
        start_limit_hit: analyzers::start_limit_hit(monitor, &excerpt),
        watched,
        restart_allowed: mon.restart || h.config_broken,
        auto_restarting: facts.auto_restarting(),
        covered: batch.iter().any(|d| d.unit == unit && d.step != Step::None),
        repairs_last_hour: limit.state.restarts_last_hour(boot),
        max_repairs_per_hour: mon.max_repairs_per_hour,
    });
    if step != Step::None {
        limit.state.note_restart(boot);
    }
    if let Some(id) = &monitor.invocation_id {
        limit.state.note_seen(id);
    }
    // Counted before anything can fail: the limit holds even when the
    // record cannot be written.
    limit.save()?;
    drop(limit);
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
    let (key, stored) = save_record(h, &record)?;
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
        stored,
        invocation_id: monitor.invocation_id.clone(),
    })
}

/// Store a new record, or keep it under /run when the store cannot take
/// it. Returns its key (the file's name when kept) and whether it is stored.
fn save_record(h: &Handler<'_>, record: &FailureRecord) -> anyhow::Result<(String, bool)> {
    if let Some(store) = h.store {
        match store.save_failure(record) {
            Ok(key) => {
                clear_store_fault(store, h.run);
                return Ok((key, true));
            }
            Err(e) => report_store_fault(h.run, &e),
        }
    }
    let dir = h.run.dir(rundir::UNRECORDED)?;
    let name = rundir::entry_name(time::boot_ms(), ".json");
    rundir::write_atomic(&dir.join(&name), &serde_json::to_vec(record)?)?;
    Ok((name, false))
}

/// A decision's record, from the store or /run.
fn load_record(h: &Handler<'_>, d: &Decision) -> anyhow::Result<Option<FailureRecord>> {
    if d.stored {
        return match h.store {
            Some(store) => store.failure(&d.failure),
            None => Ok(None),
        };
    }
    match std::fs::read(h.run.path(rundir::UNRECORDED).join(&d.failure)) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        // Stored meanwhile (the store works again): it is there.
        Err(_) => Ok(None),
    }
}

/// Write back a decision's record where it is.
fn update_record(
    h: &Handler<'_>,
    d: &Decision,
    record: &FailureRecord,
    signature: Option<&SignatureRecord>,
) -> anyhow::Result<()> {
    if d.stored {
        if let Some(store) = h.store {
            store.update_failure(&d.failure, record, signature)?;
        }
        return Ok(());
    }
    let path = h.run.path(rundir::UNRECORDED).join(&d.failure);
    if path.exists() {
        rundir::write_atomic(&path, &serde_json::to_vec(record)?)?;
    }
    Ok(())
}

/// A stored diagnosis answers for an identical failure within the window,
/// unless it was the analyzer's alone and an LLM could now say more. One
/// from the future (a clock that ran ahead, then was set right) is not
/// taken as fresh.
fn reusable(settings: &Settings, known: &SignatureRecord, now_ms: u64) -> bool {
    let window = signature::WINDOW.as_millis() as u64;
    let fresh = known.last_ms <= now_ms.saturating_add(60_000)
        && now_ms.saturating_sub(known.last_ms) <= window;
    fresh && (known.diagnosis.source != "analyzer" || settings.llm.provider == ProviderKind::None)
}

/// Steps 2 and 4 (and the explainer's handoff), as root: carry out the
/// decisions of step 1, or start pm-patch for the projects a step left work
/// for. They need neither the configuration nor the store, so that nothing
/// but the files of the unprivileged steps steers them, and what those can
/// ask is checked against systemd itself.
pub fn privileged_step(opts: &Options) -> anyhow::Result<Exit> {
    let run = &opts.run_dir;
    match opts.stage {
        Stage::Handoff => {
            let dir = run.path(rundir::EXPLAINER);
            if let Some(list) = repair::read_public(&dir, HANDOFF_FILE)? {
                for project in list.lines().filter(|l| !l.is_empty()) {
                    start_patch(project);
                }
            }
        }
        _ => {
            let mut done: Vec<&str> = Vec::new();
            let decisions = read_decisions(&run.path(rundir::WORKER));
            for d in &decisions {
                // One restart per unit and run, whatever its failures.
                if d.step == Step::None || done.contains(&d.unit.as_str()) {
                    continue;
                }
                done.push(&d.unit);
                let span = tracing::info_span!("unit", pm_unit = %d.unit);
                let _enter = span.enter();
                carry_out(d);
            }
        }
    }
    Ok(Exit::Ok)
}

/// Restart (as root) when systemd says the unit is failed and hooked to
/// pm-onfailure: a decision file can ask for nothing else. Returns the
/// outcome when it was tried; errors are logged, never returned.
fn carry_out(d: &Decision) -> Option<bool> {
    if d.step == Step::None {
        return None;
    }
    if let Err(why) = checked_unit(&d.unit).and_then(|u| repair::may_restart(&u)) {
        tracing::warn!(
            message_id = message_id::REPAIR,
            pm_event = "repair",
            pm_outcome = "skipped",
            pm_id = %d.failure,
            "{}: not restarted: {why:#}",
            d.unit
        );
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

/// Step 3 of pimainteno-repair.service: the repairs' outcomes; failures to
/// explain (or to hand to pm-patch) go to the explainer's queue, the
/// others are concluded here; a unit that failed again in a run nobody
/// queued is queued.
pub fn followup(h: &Handler<'_>) -> anyhow::Result<()> {
    let worker = h.run.dir(rundir::WORKER)?;
    let decisions = read_decisions(&worker);
    // One `systemctl show` per unit: its state after the repair, and
    // whether it failed again since.
    let mut units: Vec<&str> = decisions.iter().map(|d| d.unit.as_str()).collect();
    units.sort_unstable();
    units.dedup();
    let mut states = std::collections::BTreeMap::new();
    for unit in units {
        match evidence::show(unit, &FOLLOWUP_PROPS) {
            Ok(props) => {
                states.insert(unit, props);
            }
            Err(e) => tracing::warn!(pm_unit = %unit, "cannot read the state of {unit}: {e:#}"),
        }
    }
    for d in &decisions {
        let span = tracing::info_span!("unit", pm_unit = %d.unit);
        let _enter = span.enter();
        let state = states
            .get(d.unit.as_str())
            .and_then(|p| p.get("ActiveState"))
            .filter(|s| !s.is_empty())
            .cloned();
        let result = record_outcome(h, d, None, state).and_then(|_| {
            if for_explainer(h, d)? {
                let dir = h.run.dir(rundir::EXPLAIN)?;
                let name = rundir::entry_name(time::boot_ms(), ".json");
                rundir::write_atomic(&dir.join(name), &serde_json::to_vec(d)?)
            } else {
                explain(h, d).map(|_| ())
            }
        });
        if let Err(e) = result {
            tracing::error!("{}: {e:#}", d.unit);
        }
    }
    for (unit, props) in &states {
        if let Err(e) = queue_if_failed_again(h.run, unit, props) {
            tracing::warn!(pm_unit = %unit, "cannot check {unit} for a newer failure: {e:#}");
        }
    }
    rundir::remove(&worker.join(DECISIONS_FILE))
}

/// What followup reads of each unit.
const FOLLOWUP_PROPS: [&str; 5] = [
    "ActiveState",
    "InvocationID",
    "Result",
    "ExecMainCode",
    "ExecMainStatus",
];

/// Whether a decision's failure goes to pimainteno-explain.service: the
/// LLM is to be asked (never in the repair's path), or pm-patch is to be
/// started for it (a request to systemd, the explainer's last step).
fn for_explainer(h: &Handler<'_>, d: &Decision) -> anyhow::Result<bool> {
    if !d.stored || h.config_broken {
        return Ok(false);
    }
    let Some(record) = load_record(h, d)? else {
        return Ok(false);
    };
    let llm =
        record.diagnosis.source == "analyzer" && h.settings.llm.provider != ProviderKind::None;
    let patch = record.diagnosis.action == Action::Patch.as_str()
        && h.settings
            .project_of_unit(&d.unit)
            .is_some_and(|p| p.patch != PatchMode::Off);
    Ok(llm || patch)
}

/// A unit found failed in a run that is neither handled nor queued: its
/// start of pm-onfailure@ was merged into a run under way, or came while
/// this one was deciding. Queued, so that the next run handles it.
fn queue_if_failed_again(
    run: &RunDir,
    unit: &str,
    props: &std::collections::BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let get = |k: &str| props.get(k).map(String::as_str).unwrap_or("");
    let id = get("InvocationID");
    if get("ActiveState") != "failed" || id.is_empty() {
        return Ok(());
    }
    let limit = limits::lock(run, unit)?;
    if limit.state.has_seen(id) || queue::holds(run, unit, id) {
        return Ok(());
    }
    let (exit_code, exit_status) = evidence::exec_main(get("ExecMainCode"), get("ExecMainStatus"));
    let monitor = Monitor {
        unit: unit.to_string(),
        result: Some(get("Result").to_string())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "unknown".into()),
        exit_code,
        exit_status,
        invocation_id: Some(id.to_string()),
    };
    queue::push(run, &Pending::new(&monitor, "check"))?;
    tracing::info!(
        "{unit} failed again (run {id}) while an earlier failure was being handled: queued"
    );
    Ok(())
}

/// The repair's outcome in the record: what the privileged step said when
/// it ran in this process (`applied`), and the unit's state now.
pub fn note_outcome(h: &Handler<'_>, d: &Decision, applied: Option<bool>) -> anyhow::Result<()> {
    let state = evidence::unit_facts(&d.unit)
        .ok()
        .and_then(|f| f.active_state);
    record_outcome(h, d, applied, state)
}

fn record_outcome(
    h: &Handler<'_>,
    d: &Decision,
    applied: Option<bool>,
    state: Option<String>,
) -> anyhow::Result<()> {
    if d.step == Step::None {
        return Ok(());
    }
    let Some(mut record) = load_record(h, d)? else {
        return Ok(());
    };
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
    update_record(h, d, &record, None)
}

/// pimainteno-explain.service's first step: the LLM's diagnosis of each
/// queued decision's failure. Entries a previous run died on are dropped
/// (logged): asking again could kill this run too.
pub fn explain_queued(h: &Handler<'_>) -> anyhow::Result<()> {
    let explainer = h.run.dir(rundir::EXPLAINER)?;
    let _ = rundir::remove(&explainer.join(HANDOFF_FILE));
    let dir = h.run.path(rundir::EXPLAIN);
    for taken in queue::abandoned_in(&dir) {
        tracing::error!(
            "a previous run died while explaining {}: not asked again",
            taken.display()
        );
        rundir::remove(&taken)?;
    }
    let mut handoff = Vec::new();
    for taken in queue::take_in(&dir)? {
        let decision: Option<Decision> = std::fs::read(&taken)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        match decision {
            None => tracing::error!("{} cannot be read: removed", taken.display()),
            Some(_) if h.config_broken => tracing::error!(
                "the configuration cannot be read: the failure in {} is not explained",
                taken.display()
            ),
            Some(d) => {
                let span = tracing::info_span!("unit", pm_unit = %d.unit);
                let _enter = span.enter();
                match explain(h, &d) {
                    Ok(Some(project)) if !handoff.contains(&project) => handoff.push(project),
                    Ok(_) => {}
                    Err(e) => tracing::error!("{}: {e:#}", d.unit),
                }
            }
        }
        rundir::remove(&taken)?;
    }
    if !handoff.is_empty() {
        rundir::write_atomic(&explainer.join(HANDOFF_FILE), handoff.join("\n").as_bytes())?;
    }
    Ok(())
}

/// The LLM's diagnosis of a new failure (unless the analyzer's answer is
/// all there is to have), pending work for pm-patch; the record and its
/// signature completed. Returns the project whose pm-patch is to be
/// started (pending work was stored for it).
pub fn explain(h: &Handler<'_>, d: &Decision) -> anyhow::Result<Option<String>> {
    let settings = h.settings;
    let Some(store) = h.store.filter(|_| d.stored) else {
        // Kept under /run: recorded as decided once the store works.
        return Ok(None);
    };
    let Some(mut record) = store.failure(&d.failure)? else {
        tracing::warn!("the failure record {} is gone (trimmed?)", d.failure);
        return Ok(None);
    };
    let unit = d.unit.as_str();
    let project = settings.project_of_unit(unit);
    let allowed = allowed(project);
    let known = store
        .signature(&record.signature)?
        .filter(|k| k.diagnosis.source == "llm" && reusable(settings, k, time::now_ms()));
    if record.diagnosis.source == "analyzer"
        && let Some(known) = known
    {
        // An identical failure was explained meanwhile (the explainer takes
        // them one after another): its diagnosis, not a second call.
        record.diagnosis = DiagnosisRecord {
            source: "cache".into(),
            ..known.diagnosis
        };
    } else if record.diagnosis.source == "analyzer"
        && settings.llm.provider != ProviderKind::None
        && !h.config_broken
    {
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
    match metered::call(provider.as_ref(), store, &record.unit, &settings.llm, &req) {
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
