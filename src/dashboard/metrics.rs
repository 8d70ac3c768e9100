//! `/metrics` in the OpenMetrics text format (prometheus-client), so a fleet
//! of Pis is watched by an existing Prometheus.
//!
//! The store keeps a bounded history (`[cache] history` records per project
//! and unit), so the record counts are gauges of what is on record, not
//! counters since boot; the `*_timestamp_seconds` gauges say when things
//! last happened, which is what alerts are written on.
//!
//! Label values are names from the store (an ad-hoc `pm-summarize --path`
//! project is named after its directory: quotes, backslashes; a store
//! written before control characters were refused may hold a newline):
//! prometheus-client escapes them all (since 0.25.2), and the names here are
//! constants that `promtool check metrics` accepts without a finding
//! (tests/dashboard.rs).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::TypedMetric;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry};

use super::data::{Counts, Overview};

type Labels = Vec<(&'static str, String)>;
type Floats = Family<Labels, Gauge<f64, AtomicU64>>;
type Ints = Family<Labels, Gauge>;

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn family<M>(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, M>
where
    M: Metric + TypedMetric + Default + Clone,
{
    let f = Family::<Labels, M>::default();
    registry.register(name, help, f.clone());
    f
}

/// A metric without labels.
fn single<M: Metric + Default + Clone>(registry: &mut Registry, name: &str, help: &str) -> M {
    let m = M::default();
    registry.register(name, help, m.clone());
    m
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

pub fn render(o: &Overview, c: &Counts) -> anyhow::Result<String> {
    let mut r = Registry::with_prefix("pimainteno");

    let store_ok: Gauge = single(&mut r, "store_ok", "1 when the store could be read");
    store_ok.set(i64::from(o.store == "ok"));

    let last_run: Floats = family(
        &mut r,
        "project_last_run_timestamp_seconds",
        "When pm-summarize last did work on the project",
    );
    let last_summary: Floats = family(
        &mut r,
        // Not `..._summary_...`: promtool's lint takes that for the metric
        // type (it was `project_last_summary_timestamp_seconds`).
        "project_last_summarized_timestamp_seconds",
        "When the project's newest summary was made",
    );
    let outcome: Ints = family(
        &mut r,
        "project_outcome",
        "1 for the outcome of the project's last run (summarized, failed, unavailable...)",
    );
    let check: Ints = family(
        &mut r,
        "project_check_passed",
        "1 when the project's check passed at the HEAD pm-patch last ran it on, 0 when it failed",
    );
    // A failing check and a fix refused or not passing end the units
    // successfully: these say so, for alerts.
    let last_patch: Floats = family(
        &mut r,
        "project_last_patch_timestamp_seconds",
        "When pm-patch last recorded a run for the project",
    );
    let patch_outcome: Ints = family(
        &mut r,
        "project_last_patch_outcome",
        "1 for the outcome of the project's last pm-patch run (committed, merged, refused, failed: no change passed the check, error...)",
    );
    for p in &o.projects {
        let project = vec![("project", p.name.clone())];
        if let Some(b) = &p.last_patch {
            last_patch.get_or_create(&project).set(secs(b.time_ms));
            patch_outcome
                .get_or_create(&vec![
                    ("project", p.name.clone()),
                    ("outcome", b.outcome.clone()),
                ])
                .set(1);
        }
        if p.last_run_ms > 0 {
            last_run.get_or_create(&project).set(secs(p.last_run_ms));
        }
        if let Some(s) = &p.summary {
            last_summary.get_or_create(&project).set(secs(s.created_ms));
        }
        outcome
            .get_or_create(&vec![
                ("project", p.name.clone()),
                ("outcome", p.outcome.clone()),
            ])
            .set(1);
        if let Some(k) = &p.check {
            check.get_or_create(&project).set(i64::from(k.passed));
        }
    }

    let summaries: Ints = family(&mut r, "summaries", "Summaries on record per project");
    for (project, n) in &c.summaries {
        summaries
            .get_or_create(&vec![("project", project.clone())])
            .set(*n as i64);
    }
    let patches: Ints = family(&mut r, "patches", "pm-patch runs on record by outcome");
    for ((project, out), n) in &c.patches {
        patches
            .get_or_create(&vec![
                ("project", project.clone()),
                ("outcome", out.clone()),
            ])
            .set(*n as i64);
    }
    let failures: Ints = family(
        &mut r,
        "failures",
        "Failures of watched units on record by result",
    );
    for ((unit, result), n) in &c.failures {
        failures
            .get_or_create(&vec![("unit", unit.clone()), ("result", result.clone())])
            .set(*n as i64);
    }
    let repairs: Ints = family(
        &mut r,
        "repairs",
        "pm-onfailure's repairs on record by action and outcome",
    );
    for ((unit, action, out), n) in &c.repairs {
        repairs
            .get_or_create(&vec![
                ("unit", unit.clone()),
                ("action", action.clone()),
                ("outcome", out.clone()),
            ])
            .set(*n as i64);
    }
    let calls: Ints = family(
        &mut r,
        "llm_calls",
        "LLM calls on record by provider and outcome",
    );
    for ((project, provider, out), n) in &c.llm_calls {
        calls
            .get_or_create(&vec![
                ("project", project.clone()),
                ("provider", provider.clone()),
                ("outcome", out.clone()),
            ])
            .set(*n as i64);
    }
    let tokens: Ints = family(&mut r, "llm_tokens", "Tokens of the LLM calls on record");
    for ((project, provider), n) in &c.llm_tokens {
        tokens
            .get_or_create(&vec![
                ("project", project.clone()),
                ("provider", provider.clone()),
            ])
            .set(*n as i64);
    }
    let today: Gauge = single(
        &mut r,
        "llm_tokens_today",
        "Tokens used today (UTC) by every PiMainteno process",
    );
    today.set(o.tokens_today as i64);

    let unit_active: Ints = family(
        &mut r,
        "unit_active",
        "1 when the watched unit is active, 0 otherwise (absent when systemd could not be asked)",
    );
    let unit_failed: Ints = family(
        &mut r,
        "unit_failed",
        "1 when the watched unit is in the failed state",
    );
    for u in &o.units {
        if let Some(s) = &u.state {
            let unit = vec![("unit", u.name.clone())];
            unit_active
                .get_or_create(&unit)
                .set(i64::from(s.active == "active"));
            unit_failed
                .get_or_create(&unit)
                .set(i64::from(s.active == "failed"));
        }
    }
    // Absent rather than 0 when the timer never ran or is not scheduled.
    if let Some(ms) = o.timer.last_ms {
        let g: Gauge<f64, AtomicU64> = single(
            &mut r,
            "timer_last_trigger_timestamp_seconds",
            "When pimainteno.timer last started a run",
        );
        g.set(secs(ms));
    }
    if let Some(ms) = o.timer.next_ms {
        let g: Gauge<f64, AtomicU64> = single(
            &mut r,
            "timer_next_elapse_timestamp_seconds",
            "When pimainteno.timer starts the next run",
        );
        g.set(secs(ms));
    }

    let mut out = String::new();
    encode(&mut out, &r)?;
    Ok(out)
}
