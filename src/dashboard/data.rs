//! What the dashboard shows, read from the configuration, the store (read
//! transactions only) and systemd ([`units`]). The pages and the
//! JSON API render the same structures, so they never disagree.

use std::collections::HashMap;

use serde::Serialize;

use super::units::{self, Props};
use crate::config::Settings;
use crate::store::{FailureRecord, PatchRecord, Store, SummaryRecord};
use crate::{generator, time};

/// Rows of history shown on a project or unit page.
pub const HISTORY_SHOWN: usize = 50;

#[derive(Debug, Serialize)]
pub struct Overview {
    pub generated: String,
    /// `ok`, or why there is no data (no store yet, or it cannot be read).
    pub store: String,
    pub projects: Vec<ProjectRow>,
    pub units: Vec<UnitRow>,
    pub timer: TimerState,
    /// Tokens used today (UTC) by every PiMainteno process.
    pub tokens_today: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProjectRow {
    pub name: String,
    pub path: String,
    /// False for a project that is in the store but no longer configured.
    pub configured: bool,
    pub enabled: bool,
    pub patch_mode: Option<String>,
    pub check_command: Option<String>,
    pub last_run: Option<String>,
    #[serde(skip)]
    pub last_run_ms: u64,
    /// The last run's outcome (`summarized`, `failed`...), `new` before any.
    pub outcome: String,
    pub error: Option<String>,
    pub summary: Option<SummaryBrief>,
    pub check: Option<CheckState>,
    pub last_patch: Option<PatchBrief>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SummaryBrief {
    pub id: String,
    pub created: String,
    #[serde(skip)]
    pub created_ms: u64,
    pub commit: Option<String>,
    pub branch: Option<String>,
    pub dirty: bool,
    pub provider: String,
    pub model: String,
    pub tokens: u64,
}

/// The project's check at the HEAD pm-patch last ran it on.
#[derive(Debug, Clone, Serialize)]
pub struct CheckState {
    pub commit: String,
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PatchBrief {
    pub id: String,
    pub time: String,
    #[serde(skip)]
    pub time_ms: u64,
    pub trigger: String,
    pub reason: String,
    pub outcome: String,
    pub branch: String,
    pub attempts: usize,
    pub tokens: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct UnitRow {
    pub name: String,
    pub project: Option<String>,
    /// Hooked up to pm-onfailure by the generator.
    pub watched: bool,
    /// From systemd; `None` when it cannot be asked.
    pub state: Option<UnitState>,
    pub last_failure: Option<FailureBrief>,
    /// Failures in the store's history, and the repairs done among them.
    pub failures: usize,
    pub repairs: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct UnitState {
    pub load: String,
    pub active: String,
    pub sub: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailureBrief {
    pub id: String,
    pub time: String,
    pub result: String,
    pub cause: String,
    pub repair: String,
    pub repair_outcome: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TimerState {
    pub unit: String,
    pub active: Option<String>,
    pub enabled: Option<String>,
    pub last: Option<String>,
    pub next: Option<String>,
    #[serde(skip)]
    pub last_ms: Option<u64>,
    #[serde(skip)]
    pub next_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct ProjectPage {
    pub project: ProjectRow,
    pub units: Vec<UnitRow>,
    /// The newest summary's Markdown.
    pub summary_text: Option<String>,
    pub summaries: Vec<SummaryBrief>,
    pub patches: Vec<PatchBrief>,
    pub llm_calls: Vec<LlmCallRow>,
}

#[derive(Debug, Serialize)]
pub struct LlmCallRow {
    pub time: String,
    pub purpose: String,
    pub provider: String,
    pub model: String,
    pub duration_ms: u64,
    pub tokens: u64,
    pub outcome: String,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct UnitPage {
    pub unit: UnitRow,
    pub failures: Vec<FailureBrief>,
}

#[derive(Debug, Serialize)]
pub struct FailurePage {
    pub id: String,
    pub time: String,
    pub failure: FailureRecord,
}

#[derive(Debug, Serialize)]
pub struct PatchPage {
    pub id: String,
    pub time: String,
    pub patch: PatchRecord,
}

/// Where the data comes from for one request.
pub struct Source<'a> {
    pub settings: &'a Settings,
    /// `Err`: why there is no store to read (shown, not fatal).
    pub store: Result<&'a Store, String>,
    /// What pimainteno-repair.service reported when it could not use the
    /// store (`/run/pimainteno/store-fault`), while that lasts.
    pub store_fault: Option<String>,
}

fn short(commit: &str) -> String {
    commit.chars().take(12).collect()
}

fn summary_brief(id: String, s: &SummaryRecord) -> SummaryBrief {
    SummaryBrief {
        id,
        created: time::rfc3339(s.created_ms),
        created_ms: s.created_ms,
        commit: s.commit.as_deref().map(short),
        branch: s.branch.clone(),
        dirty: s.dirty,
        provider: s.provider.clone(),
        model: s.model.clone(),
        tokens: s.usage.total(),
    }
}

pub fn patch_brief(id: String, p: &PatchRecord) -> PatchBrief {
    PatchBrief {
        id,
        time: time::rfc3339(p.time_ms),
        time_ms: p.time_ms,
        trigger: p.trigger.clone(),
        reason: p.reason.clone(),
        outcome: p.outcome.clone(),
        branch: p.branch.clone(),
        attempts: p.attempts.len(),
        tokens: p.tokens,
    }
}

pub fn failure_brief(id: String, f: &FailureRecord) -> FailureBrief {
    FailureBrief {
        id,
        time: time::rfc3339(f.time_ms),
        result: f.result.clone(),
        cause: f.diagnosis.cause.clone(),
        repair: f.repair.action.clone(),
        repair_outcome: f.repair.outcome.clone(),
    }
}

impl Source<'_> {
    fn store(&self) -> Option<&Store> {
        self.store.as_ref().ok().copied()
    }

    fn store_state(&self) -> String {
        match (&self.store, &self.store_fault) {
            (Ok(_), None) => "ok".into(),
            (Ok(_), Some(fault)) => format!(
                "pimainteno-repair.service cannot use the store (failures are still repaired \
                 and kept under /run/pimainteno until it can): {fault}"
            ),
            (Err(why), _) => why.clone(),
        }
    }

    /// Configured projects in configuration order, then those only the
    /// store remembers.
    fn project_names(&self) -> anyhow::Result<Vec<String>> {
        let mut names: Vec<String> = self
            .settings
            .projects
            .iter()
            .map(|p| p.name.clone())
            .collect();
        if let Some(store) = self.store() {
            for p in store.projects()? {
                if !names.contains(&p.name) {
                    names.push(p.name);
                }
            }
        }
        Ok(names)
    }

    pub fn project_row(&self, name: &str) -> anyhow::Result<Option<ProjectRow>> {
        let conf = self.settings.project(name);
        let record = match self.store() {
            Some(s) => s.project(name)?,
            None => None,
        };
        if conf.is_none() && record.is_none() {
            return Ok(None);
        }
        let mut row = ProjectRow {
            name: name.to_string(),
            path: conf
                .map(|c| c.path.display().to_string())
                .or_else(|| record.as_ref().map(|r| r.path.clone()))
                .unwrap_or_default(),
            configured: conf.is_some(),
            enabled: conf.is_some_and(|c| c.enabled),
            patch_mode: conf.map(|c| format!("{:?}", c.patch).to_lowercase()),
            check_command: conf.and_then(|c| c.check.as_ref().map(|k| k.command.clone())),
            last_run: None,
            last_run_ms: 0,
            outcome: "new".into(),
            error: None,
            summary: None,
            check: None,
            last_patch: None,
        };
        let Some(store) = self.store() else {
            return Ok(Some(row));
        };
        if let Some(r) = record {
            if r.last_run_ms > 0 {
                row.last_run = Some(time::rfc3339(r.last_run_ms));
            }
            row.last_run_ms = r.last_run_ms;
            row.outcome = r.last_outcome;
            row.error = r.last_error;
            if let Some(key) = r.last_summary
                && let Some(s) = store.summary(&key)?
            {
                row.summary = Some(summary_brief(key, &s));
            }
        }
        row.check = store.checked(name)?.map(|c| CheckState {
            commit: short(&c.head),
            passed: c.passed,
        });
        row.last_patch = store
            .patches(name, 1)?
            .into_iter()
            .next()
            .map(|(k, p)| patch_brief(k, &p));
        Ok(Some(row))
    }

    /// Watched units (as the generator hooks them up), then units that only
    /// have failures on record.
    fn unit_names(&self) -> anyhow::Result<Vec<(String, bool)>> {
        let mut out: Vec<(String, bool)> = generator::watched_units(self.settings)
            .into_iter()
            .map(|u| (u.to_string(), self.settings.systemd_monitor.enabled))
            .collect();
        if let Some(store) = self.store() {
            for u in store.failed_units()? {
                if !out.iter().any(|(n, _)| *n == u) {
                    // An instance of a watched template is watched too.
                    let watched = self.settings.watches(&u);
                    out.push((u, watched));
                }
            }
        }
        Ok(out)
    }

    /// A unit's row and its failures (all the store keeps: `[cache]
    /// history`, so the counts agree on every page).
    fn unit_row(
        &self,
        name: &str,
        watched: bool,
        states: &States,
    ) -> anyhow::Result<(UnitRow, Vec<FailureBrief>)> {
        let failures = match self.store() {
            Some(s) => s.failures(name, usize::MAX)?,
            None => Vec::new(),
        };
        let project = self
            .settings
            .project_of_unit(name)
            .map(|p| p.name.clone())
            .or_else(|| failures.first().and_then(|(_, f)| f.project.clone()));
        let briefs: Vec<FailureBrief> = failures
            .iter()
            .map(|(k, f)| failure_brief(k.clone(), f))
            .collect();
        let row = UnitRow {
            name: name.to_string(),
            project,
            watched,
            state: unit_state(states, name),
            last_failure: briefs.first().cloned(),
            failures: briefs.len(),
            repairs: failures
                .iter()
                .filter(|(_, f)| f.repair.outcome == "done")
                .count(),
        };
        Ok((row, briefs))
    }

    pub fn projects(&self) -> anyhow::Result<Vec<ProjectRow>> {
        let mut projects = Vec::new();
        for name in self.project_names()? {
            projects.extend(self.project_row(&name)?);
        }
        Ok(projects)
    }

    /// The units' rows, and the timer's state when `timer` (asked of
    /// systemd together with the units).
    fn unit_rows(&self, timer: bool) -> anyhow::Result<(Vec<UnitRow>, TimerState)> {
        let units = self.unit_names()?;
        let names: Vec<&str> = units.iter().map(|(u, _)| u.as_str()).collect();
        let states = units::states(&names, timer.then_some(generator::TIMER));
        let mut rows = Vec::new();
        for (name, watched) in &units {
            rows.push(self.unit_row(name, *watched, &states)?.0);
        }
        Ok((rows, timer_state(&states)))
    }

    pub fn units(&self) -> anyhow::Result<Vec<UnitRow>> {
        Ok(self.unit_rows(false)?.0)
    }

    pub fn overview(&self) -> anyhow::Result<Overview> {
        let projects = self.projects()?;
        let (rows, timer) = self.unit_rows(true)?;
        let tokens_today = match self.store() {
            Some(s) => s.tokens_used(&time::day(time::now_ms()))?,
            None => 0,
        };
        Ok(Overview {
            generated: time::rfc3339(time::now_ms()),
            store: self.store_state(),
            projects,
            units: rows,
            timer,
            tokens_today,
        })
    }

    pub fn project_page(&self, name: &str) -> anyhow::Result<Option<ProjectPage>> {
        let Some(project) = self.project_row(name)? else {
            return Ok(None);
        };
        let unit_names: Vec<String> = self
            .settings
            .project(name)
            .map(|p| p.units.clone())
            .unwrap_or_default();
        let states = units::states(
            &unit_names.iter().map(String::as_str).collect::<Vec<_>>(),
            None,
        );
        let mut units = Vec::new();
        for u in &unit_names {
            units.push(
                self.unit_row(u, self.settings.systemd_monitor.enabled, &states)?
                    .0,
            );
        }
        let mut page = ProjectPage {
            project,
            units,
            summary_text: None,
            summaries: Vec::new(),
            patches: Vec::new(),
            llm_calls: Vec::new(),
        };
        if let Some(store) = self.store() {
            let summaries = store.summaries(name, HISTORY_SHOWN)?;
            page.summary_text = summaries.first().map(|(_, s)| s.text.clone());
            page.summaries = summaries
                .into_iter()
                .map(|(k, s)| summary_brief(k, &s))
                .collect();
            page.patches = store
                .patches(name, HISTORY_SHOWN)?
                .into_iter()
                .map(|(k, p)| patch_brief(k, &p))
                .collect();
            page.llm_calls = store
                .llm_calls(name, HISTORY_SHOWN)?
                .into_iter()
                .map(|(_, c)| LlmCallRow {
                    time: time::rfc3339(c.time_ms),
                    purpose: c.purpose,
                    provider: c.provider,
                    model: c.model,
                    duration_ms: c.duration_ms,
                    tokens: c.usage.total(),
                    outcome: c.outcome,
                    error: c.error,
                })
                .collect();
        }
        Ok(Some(page))
    }

    pub fn unit_page(&self, name: &str) -> anyhow::Result<Option<UnitPage>> {
        let Some((_, watched)) = self.unit_names()?.into_iter().find(|(u, _)| u == name) else {
            return Ok(None);
        };
        let states = units::states(&[name], None);
        let (unit, mut failures) = self.unit_row(name, watched, &states)?;
        failures.truncate(HISTORY_SHOWN);
        Ok(Some(UnitPage { unit, failures }))
    }

    pub fn failure_page(&self, id: &str) -> anyhow::Result<Option<FailurePage>> {
        let Some(store) = self.store() else {
            return Ok(None);
        };
        Ok(store.failure(id)?.map(|failure| FailurePage {
            id: id.to_string(),
            time: time::rfc3339(failure.time_ms),
            failure,
        }))
    }

    pub fn patch_page(&self, id: &str) -> anyhow::Result<Option<PatchPage>> {
        let Some(store) = self.store() else {
            return Ok(None);
        };
        Ok(store.patch(id)?.map(|patch| PatchPage {
            id: id.to_string(),
            time: time::rfc3339(patch.time_ms),
            patch,
        }))
    }

    /// Everything `/metrics` counts, per project and unit.
    pub fn counts(&self) -> anyhow::Result<Counts> {
        let mut c = Counts::default();
        let Some(store) = self.store() else {
            return Ok(c);
        };
        for name in self.project_names()? {
            c.summaries
                .push((name.clone(), store.summaries(&name, usize::MAX)?.len()));
            for (_, p) in store.patches(&name, usize::MAX)? {
                *c.patches.entry((name.clone(), p.outcome)).or_default() += 1;
            }
            for (_, call) in store.llm_calls(&name, usize::MAX)? {
                *c.llm_calls
                    .entry((name.clone(), call.provider.clone(), call.outcome))
                    .or_default() += 1;
                *c.llm_tokens
                    .entry((name.clone(), call.provider))
                    .or_default() += call.usage.total();
            }
        }
        for u in store.failed_units()? {
            for (_, f) in store.failures(&u, usize::MAX)? {
                *c.failures.entry((u.clone(), f.result)).or_default() += 1;
                *c.repairs
                    .entry((u.clone(), f.repair.action, f.repair.outcome))
                    .or_default() += 1;
            }
        }
        Ok(c)
    }
}

/// Records in the store's history (bounded by `[cache] history`), by label.
#[derive(Debug, Default)]
pub struct Counts {
    pub summaries: Vec<(String, usize)>,
    pub patches: HashMap<(String, String), u64>,
    pub failures: HashMap<(String, String), u64>,
    pub repairs: HashMap<(String, String, String), u64>,
    pub llm_calls: HashMap<(String, String, String), u64>,
    pub llm_tokens: HashMap<(String, String), u64>,
}

type States = HashMap<String, Props>;

fn unit_state(states: &States, unit: &str) -> Option<UnitState> {
    let p = states.get(unit)?;
    let get = |v: &Option<String>| v.clone().unwrap_or_default();
    Some(UnitState {
        load: get(&p.load),
        active: get(&p.active),
        sub: get(&p.sub),
    })
}

fn timer_state(states: &States) -> TimerState {
    let mut t = TimerState {
        unit: generator::TIMER.into(),
        ..TimerState::default()
    };
    if let Some(p) = states.get(generator::TIMER) {
        t.last_ms = p.last_trigger_ms;
        t.next_ms = p.next_elapse_ms;
        t.active = Some(format!(
            "{} ({})",
            p.active.as_deref().unwrap_or("unknown"),
            p.sub.as_deref().unwrap_or("-")
        ));
        t.enabled = p.unit_file.clone();
        t.last = t.last_ms.map(time::rfc3339);
        t.next = t.next_ms.map(time::rfc3339);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timer_shows_its_times_and_state() {
        let p = Props {
            load: Some("loaded".into()),
            active: Some("active".into()),
            sub: Some("waiting".into()),
            unit_file: Some("enabled".into()),
            last_trigger_ms: Some(1_795_732_472_000),
            next_elapse_ms: Some(1_795_818_872_000),
        };
        let t = timer_state(&HashMap::from([(generator::TIMER.to_string(), p)]));
        assert_eq!(t.last.as_deref(), Some("2026-11-26T22:34:32Z"));
        assert_eq!(t.next.as_deref(), Some("2026-11-27T22:34:32Z"));
        assert_eq!(t.enabled.as_deref(), Some("enabled"));
        assert_eq!(t.active.as_deref(), Some("active (waiting)"));
    }

    #[test]
    fn without_systemd_a_timer_is_unknown() {
        let t = timer_state(&HashMap::new());
        assert_eq!((t.active, t.last, t.next), (None, None, None));
    }
}
