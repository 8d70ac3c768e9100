//! `pimainteno watch UNIT` / `unwatch UNIT`: a `conf.d/` fragment of their
//! own holds the units added this way (`[systemd_monitor] units`, merged
//! with the rest of the configuration), then systemd is reloaded so that
//! the generator writes the unit's `OnFailure=` drop-in.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::config::validate::{
    HANDLER_PREFIX, WATCHED_UNIT_MAX, is_template, unit_name, watched_unit_name,
};
use crate::config::{self, LoadOptions};
use crate::exit::{Coded, Exit};
use crate::text::printable_line;

/// The fragment's name: late in `conf.d/`, so it adds to what the files
/// before it say.
pub const FRAGMENT: &str = "90-watch.toml";

fn fragment_path(opts: &LoadOptions) -> PathBuf {
    let (main, _) = config::load::main_path(opts.path.as_deref());
    main.parent()
        .unwrap_or(Path::new("."))
        .join("conf.d")
        .join(FRAGMENT)
}

/// The units in the fragment (empty when it does not exist).
fn read_units(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Fragment {
        systemd_monitor: Monitor,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Monitor {
        units: Vec<String>,
    }
    let f: Fragment = toml::from_str(&text).with_context(|| {
        format!(
            "{} is not what `pimainteno watch` writes (only [systemd_monitor] units); \
             move other settings to another file",
            path.display()
        )
    })?;
    Ok(f.systemd_monitor.units)
}

/// Write the fragment atomically, or remove it when no unit is left.
fn write_units(path: &Path, units: &[String]) -> anyhow::Result<()> {
    if units.is_empty() {
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("cannot remove {}", path.display()))
            }
            _ => Ok(()),
        };
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let list: Vec<String> = units
        .iter()
        .map(|u| toml::Value::String(u.clone()).to_string())
        .collect();
    let text = format!(
        "# Written by `pimainteno watch` and `pimainteno unwatch`: use them to change it.\n\
         [systemd_monitor]\nunits = [{}]\n",
        list.join(", ")
    );
    let tmp = dir.join(format!(".{FRAGMENT}.tmp"));
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

fn reload() -> anyhow::Result<()> {
    let status = Command::new("systemctl")
        .arg("daemon-reload")
        .status()
        .context("cannot run systemctl daemon-reload")?;
    if !status.success() {
        bail!("systemctl daemon-reload failed ({status}); run it as root");
    }
    Ok(())
}

/// Load the configuration with the fragment changed; on an error put the
/// old fragment back, so a watch never leaves a configuration that fails.
fn change(opts: &LoadOptions, path: &Path, old: &[String], new: &[String]) -> anyhow::Result<()> {
    write_units(path, new)?;
    if let Err(e) = config::load(opts) {
        write_units(path, old)?;
        return Err(e).context("the configuration does not load with this change; nothing changed");
    }
    Ok(())
}

/// Warn about the names the configuration holds that systemd would refuse:
/// they are left out, so they are not watched.
fn warn_bad_units(settings: &config::Settings) {
    for e in &settings.bad_units {
        eprintln!(
            "warning: {}; this unit is not watched until it is fixed",
            printable_line(&e.to_string())
        );
    }
}

pub fn watch(opts: &LoadOptions, unit: &str, reload_systemd: bool) -> anyhow::Result<Exit> {
    // A bad argument is refused before anything is written, with the same
    // exit code as the other arguments the configuration cannot take.
    let unit = watched_unit_name(unit).map_err(|e| Coded::new(Exit::Config, e))?;
    if unit.starts_with(HANDLER_PREFIX) {
        bail!(Coded::new(
            Exit::Config,
            format!("{unit}: pm-onfailure does not watch itself")
        ));
    }
    let settings = config::load(opts)?;
    warn_bad_units(&settings);
    if let Some(entry) = settings.watch_entry(&unit) {
        let mut how = Vec::new();
        if entry != unit {
            how.push(format!("as an instance of {entry}"));
        }
        if let Some(p) = settings.project_of_unit(&unit) {
            how.push(format!("project {}", p.name));
        }
        println!(
            "{unit} is already watched{}",
            if how.is_empty() {
                String::new()
            } else {
                format!(" ({})", how.join(", "))
            }
        );
        return Ok(Exit::Ok);
    }
    let path = fragment_path(opts);
    let old = read_units(&path)?;
    let mut new = old.clone();
    new.push(unit.clone());
    change(opts, &path, &old, &new)?;
    println!("{unit}: watched ({} updated)", path.display());
    if is_template(&unit) {
        println!(
            "{unit} is a template: each of its instances is watched (an instance's name may \
             have at most {WATCHED_UNIT_MAX} characters)"
        );
    }
    if !settings.systemd_monitor.enabled {
        eprintln!(
            "warning: [systemd_monitor] enabled = false: no unit gets an OnFailure= hook until it is true"
        );
    }
    if reload_systemd {
        reload()?;
        println!(
            "systemd reloaded: a failure of {unit} now starts {HANDLER_PREFIX}{}.service",
            if is_template(&unit) {
                "<instance>"
            } else {
                &unit
            }
        );
    }
    Ok(Exit::Ok)
}

pub fn unwatch(opts: &LoadOptions, unit: &str, reload_systemd: bool) -> anyhow::Result<Exit> {
    let path = fragment_path(opts);
    let old = read_units(&path)?;
    // A name put into the fragment by hand that systemd refuses can still
    // be taken out by its exact text.
    let unit = if old.iter().any(|u| u == unit) {
        unit.to_string()
    } else {
        unit_name(unit).map_err(|e| Coded::new(Exit::Config, e))?
    };
    if !old.contains(&unit) {
        let settings = config::load(opts)?;
        let Some(entry) = settings.watch_entry(&unit) else {
            println!("{} is not watched", printable_line(&unit));
            return Ok(Exit::Ok);
        };
        if entry != unit {
            bail!(
                "{unit} is watched as an instance of the template {entry}; `pimainteno unwatch \
                 {entry}` stops watching all of its instances"
            );
        }
        match settings.projects.iter().find(|p| p.units.contains(&unit)) {
            Some(project) => bail!(
                "{unit} is watched because project {} lists it in its units; remove it there",
                project.name
            ),
            None => bail!(
                "{unit} is in [systemd_monitor] units of {}, not added by `pimainteno watch`; \
                 remove it there",
                settings
                    .files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        }
    }
    let new: Vec<String> = old.iter().filter(|u| **u != unit).cloned().collect();
    change(opts, &path, &old, &new)?;
    // A name written by hand into the fragment may hold anything.
    println!(
        "{}: no longer watched ({} updated)",
        printable_line(&unit),
        path.display()
    );
    if reload_systemd {
        reload()?;
        println!("systemd reloaded: its OnFailure= hook is gone");
    }
    Ok(Exit::Ok)
}
