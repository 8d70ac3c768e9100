//! The watched units in `pimainteno status` and `pimainteno history UNIT`.

use std::io::Write;

use crate::config::Settings;
use crate::config::validate::{is_template, template_of};
use crate::store::{FailureRecord, Store};
use crate::text::printable_line as shown;
use crate::time;

/// Journal lines shown per failure in the history (the record keeps more).
const EXCERPT_SHOWN: usize = 20;

/// Every watched unit (as the generator hooks them up) and its project.
pub fn watched(settings: &Settings) -> Vec<(String, Option<String>)> {
    crate::generator::watched_units(settings)
        .into_iter()
        .map(|u| {
            let project = settings.project_of_unit(u).map(|p| p.name.clone());
            (u.to_string(), project)
        })
        .collect()
}

/// Whether `name` is a unit rather than a project: not a configured
/// project, and watched or with failures on record.
pub fn is_unit(settings: &Settings, store: &Store, name: &str) -> anyhow::Result<bool> {
    if settings.project(name).is_some() || store.project(name)?.is_some() {
        return Ok(false);
    }
    Ok(watched(settings).iter().any(|(u, _)| u == name)
        || !store.failures(name, 1)?.is_empty()
        || crate::config::validate::unit_name(name).is_ok_and(|u| u == name))
}

/// Every field of a record is outside text (the journal, a model's reply):
/// shown with its control characters made visible.
fn one_line(f: &FailureRecord) -> String {
    format!(
        "{} at {}: {}; repair: {} ({})",
        shown(&f.result),
        time::rfc3339(f.time_ms),
        shown(&f.diagnosis.cause),
        shown(&f.repair.action),
        shown(&f.repair.outcome)
    )
}

/// The "units" part of `pimainteno status`.
pub fn status(
    out: &mut impl Write,
    settings: &Settings,
    store: Option<&Store>,
) -> anyhow::Result<()> {
    let units = watched(settings);
    let mon = &settings.systemd_monitor;
    writeln!(
        out,
        "\nwatched units: {}{}",
        units.len(),
        if mon.enabled {
            format!(
                " (restart {}, at most {} repairs per hour each)",
                if mon.restart { "on" } else { "off" },
                mon.max_repairs_per_hour
            )
        } else {
            " ([systemd_monitor] enabled = false: no OnFailure= hooks)".into()
        }
    )?;
    for (unit, project) in units {
        let project = project
            .map(|p| format!(" (project {})", shown(&p)))
            .unwrap_or_default();
        let name = shown(&unit);
        if is_template(&unit) {
            // Failures are recorded under the instances' names.
            writeln!(out, "{name}{project}: a template, each instance is watched")?;
            let instances = match store {
                Some(s) => instances_of(s, &unit)?,
                None => Vec::new(),
            };
            if instances.is_empty() {
                writeln!(out, "    no failure recorded")?;
            }
            for i in instances {
                let last = last_failure(store, &i)?;
                writeln!(out, "    {}: {last}", shown(&i))?;
            }
            continue;
        }
        writeln!(out, "{name}{project}\n    {}", last_failure(store, &unit)?)?;
    }
    for e in &settings.bad_units {
        writeln!(
            out,
            "not watched (systemd refuses the name): {}",
            shown(&e.to_string())
        )?;
    }
    Ok(())
}

/// The instances of `template` with failures on record.
fn instances_of(store: &Store, template: &str) -> anyhow::Result<Vec<String>> {
    Ok(store
        .failed_units()?
        .into_iter()
        .filter(|u| template_of(u).as_deref() == Some(template))
        .collect())
}

fn last_failure(store: Option<&Store>, unit: &str) -> anyhow::Result<String> {
    let last = match store {
        Some(s) => s.failures(unit, 1)?.into_iter().next(),
        None => None,
    };
    Ok(match last {
        Some((_, f)) => format!("last failure: {}", one_line(&f)),
        None => "no failure recorded".into(),
    })
}

/// `pimainteno history UNIT`: each failure with its journal excerpt,
/// diagnosis, repair and tokens.
pub fn history(
    out: &mut impl Write,
    store: &Store,
    unit: &str,
    limit: usize,
) -> anyhow::Result<()> {
    if is_template(unit) {
        // A template never fails itself: its instances do.
        let instances = instances_of(store, unit)?;
        if instances.is_empty() {
            writeln!(
                out,
                "{}\n  no failures recorded (of any instance)",
                shown(unit)
            )?;
        }
        for i in instances {
            history(out, store, &i, limit)?;
        }
        return Ok(());
    }
    writeln!(out, "{}", shown(unit))?;
    let failures = store.failures(unit, limit)?;
    if failures.is_empty() {
        writeln!(out, "  no failures recorded")?;
    }
    for (key, f) in failures {
        writeln!(
            out,
            "  {}  failure  {}{}  [{}]",
            time::rfc3339(f.time_ms),
            shown(&f.result),
            match (&f.exit_code, &f.exit_status) {
                (Some(c), Some(s)) => format!(" ({}, status {})", shown(c), shown(s)),
                (None, Some(s)) => format!(" (status {})", shown(s)),
                _ => String::new(),
            },
            shown(&key)
        )?;
        if let Some(cmd) = &f.exec_start {
            writeln!(out, "    command: {}", shown(cmd))?;
        }
        let skip = f.journal.len().saturating_sub(EXCERPT_SHOWN);
        writeln!(
            out,
            "    journal ({} lines{}):",
            f.journal.len(),
            if skip > 0 || f.journal_truncated {
                ", the last shown"
            } else {
                ""
            }
        )?;
        for line in &f.journal[skip..] {
            writeln!(out, "      | {}", shown(line))?;
        }
        let d = &f.diagnosis;
        writeln!(
            out,
            "    diagnosis ({}, {}, {}% sure): {}",
            shown(&d.source),
            shown(&d.kind),
            d.confidence_pct,
            shown(&d.cause)
        )?;
        for e in &d.evidence {
            writeln!(out, "      evidence: {}", shown(e))?;
        }
        writeln!(
            out,
            "    repair: {} ({}{}): {}",
            shown(&f.repair.action),
            shown(&f.repair.outcome),
            f.repair
                .state_after
                .as_deref()
                .map(|s| format!(", then {}", shown(s)))
                .unwrap_or_default(),
            shown(&f.repair.reason)
        )?;
        match &f.llm {
            Some(n) => writeln!(
                out,
                "    llm: {} {}, {} tokens{}",
                shown(&n.provider),
                shown(&n.outcome),
                n.tokens,
                n.error
                    .as_deref()
                    .map(|e| format!(": {}", shown(e)))
                    .unwrap_or_default()
            )?,
            None => writeln!(out, "    llm: not asked (0 tokens)")?,
        }
    }
    Ok(())
}
