//! Repairs: what may be done about a failure, within which limits, and
//! carrying it out.
//!
//! The decision ([`decide`]) is pure: the diagnosis's action from the
//! allow-list, then the limits: `[systemd_monitor] restart`, the unit is
//! watched, systemd is not restarting it itself (`Restart=` fired: the unit
//! waits in `auto-restart`), and at most `max_repairs_per_hour` restarts
//! per unit, counted in [`super::limits`] (not the store). After
//! `start-limit-hit` a restart needs `systemctl reset-failed` first.
//!
//! Restarting another unit needs root: the repair unit runs this step alone
//! as root (`ExecStart=!`), without capabilities and in the same sandbox,
//! and it reads only the decisions the unprivileged step wrote. A decision
//! is carried out only for a unit systemd itself says is failed and hooked
//! to pm-onfailure ([`may_restart`]): the files can ask for nothing else.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::analyzers::Action;
use crate::process::{self, Limits};

/// What the privileged step is to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Restart,
    /// `systemctl reset-failed` then restart (after start-limit-hit).
    ResetRestart,
    None,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Restart => "restart",
            Step::ResetRestart => "reset_restart",
            Step::None => "none",
        }
    }
}

/// The facts a decision is made from.
#[derive(Debug, Clone)]
pub struct Situation {
    pub action: Action,
    /// systemd gave up restarting it (start limit): a restart needs a
    /// `reset-failed` first.
    pub start_limit_hit: bool,
    /// `[systemd_monitor] enabled` and the unit in its units or a project's.
    pub watched: bool,
    pub restart_allowed: bool,
    pub auto_restarting: bool,
    /// A restart for an earlier failure of the unit in the same run covers
    /// this one.
    pub covered: bool,
    pub repairs_last_hour: u32,
    pub max_repairs_per_hour: u32,
}

/// The step to take and why.
pub fn decide(s: &Situation) -> (Step, String) {
    if s.action == Action::None {
        return (
            Step::None,
            "recorded only: the diagnosis says a restart would fail the same way".into(),
        );
    }
    let refuse = |why: String| (Step::None, why);
    if !s.watched {
        return refuse(
            "not restarted: the unit is not watched ([systemd_monitor] units or a project's units)"
                .into(),
        );
    }
    if !s.restart_allowed {
        return refuse("not restarted: [systemd_monitor] restart = false".into());
    }
    if s.auto_restarting {
        return refuse("not restarted: systemd is restarting it itself (Restart=)".into());
    }
    if s.covered {
        return refuse(
            "not restarted again: the restart for its earlier failure, decided in the same run, covers it"
                .into(),
        );
    }
    if s.repairs_last_hour >= s.max_repairs_per_hour {
        return refuse(format!(
            "not restarted: {} restarts in the last hour already ([systemd_monitor] max_repairs_per_hour = {})",
            s.repairs_last_hour, s.max_repairs_per_hour
        ));
    }
    let n = s.repairs_last_hour + 1;
    let of = s.max_repairs_per_hour;
    if s.start_limit_hit {
        (
            Step::ResetRestart,
            format!("start limit reset and restarted (repair {n} of {of} this hour)"),
        )
    } else {
        (
            Step::Restart,
            format!("restarted (repair {n} of {of} this hour)"),
        )
    }
}

/// A decision of the unprivileged step, for the privileged one and the
/// later ones (`/run/pimainteno/worker/decisions.json`, the explainer's
/// queue).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub unit: String,
    pub step: Step,
    /// Key of the failure record: in the store, or (not `stored`) the name
    /// of its file under /run/pimainteno/unrecorded.
    pub failure: String,
    #[serde(default = "yes")]
    pub stored: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<String>,
}

fn yes() -> bool {
    true
}

/// Whether systemd says `unit` is failed and hooked to pm-onfailure: the
/// only units the privileged step restarts, whatever a decision says.
pub fn may_restart(unit: &str) -> anyhow::Result<()> {
    let props = super::evidence::show(unit, &["ActiveState", "OnFailure"])?;
    let state = props.get("ActiveState").map(String::as_str).unwrap_or("");
    if state != "failed" {
        anyhow::bail!("it is {state} now, not failed");
    }
    let hook = format!("pm-onfailure@{unit}.service");
    let hooked = props
        .get("OnFailure")
        .is_some_and(|v| v.split_whitespace().any(|u| u == hook));
    if !hooked {
        anyhow::bail!("it has no OnFailure={hook}: not watched");
    }
    Ok(())
}

/// A file another step wrote, as text (`None` when there is none).
pub fn read_public(dir: &Path, name: &str) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(dir.join(name)) {
        Ok(t) => Ok(Some(t.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", dir.join(name).display())),
    }
}

/// `systemctl start --no-block pimainteno-patch@<project>.service`. The
/// name is checked again: only a project name (letters, digits, - _ .)
/// makes an instance.
pub fn start_patch(project: &str) -> anyhow::Result<String> {
    if project.is_empty()
        || project.starts_with('.')
        || !project
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        anyhow::bail!("\"{project}\" is not a project name");
    }
    let unit = crate::generator::patch_instance(project);
    process::output("systemctl", &["start", "--no-block", "--", &unit])?;
    Ok(unit)
}

/// Longest a restart may take before we stop waiting for it.
const RESTART_TIMEOUT: Duration = Duration::from_secs(90);

/// Carry out a step on `unit` with systemctl. Returns what systemctl said
/// when it failed.
pub fn apply(unit: &str, step: Step) -> anyhow::Result<()> {
    let systemctl = |args: &[&str]| -> anyhow::Result<()> {
        let mut cmd = Command::new("systemctl");
        cmd.args(args).arg("--").arg(unit);
        let done = process::run(
            &mut cmd,
            Limits {
                timeout: RESTART_TIMEOUT,
                max_capture: 16 * 1024,
            },
        )
        .context("cannot run systemctl")?;
        if done.success() {
            return Ok(());
        }
        anyhow::bail!(
            "systemctl {} {unit} failed{}: {}",
            args.join(" "),
            if done.timed_out { " (timed out)" } else { "" },
            String::from_utf8_lossy(&done.stderr).trim()
        )
    };
    match step {
        Step::None => Ok(()),
        Step::Restart => systemctl(&["restart"]),
        Step::ResetRestart => {
            systemctl(&["reset-failed"])?;
            systemctl(&["restart"])
        }
    }
}

/// Whether dpkg is upgrading or removing the package that ships the unit
/// file: its stop during an upgrade is not a failure to repair. The
/// package is found with `dpkg-query -S`; its state in dpkg's status is
/// then anything but a settled "install ok installed".
pub fn package_in_flux(fragment_path: &str) -> bool {
    let query = |args: &[&str]| process::query("dpkg-query", args);
    // systemd names /lib/systemd/system/x where the package may have
    // registered /usr/lib/systemd/system/x, or the other way round
    // (merged /usr): try both spellings.
    let other = match fragment_path.strip_prefix("/usr") {
        Some(rest) if rest.starts_with("/lib/") => rest.to_string(),
        _ => format!("/usr{fragment_path}"),
    };
    let Some(owner) = query(&["-S", fragment_path]).or_else(|| query(&["-S", &other])) else {
        return false;
    };
    // `pkg[:arch]: /path` (or several, comma-separated, for diversions).
    let Some(package) = owner.lines().next().and_then(|l| l.split(':').next()) else {
        return false;
    };
    let package = package.split(',').next().unwrap_or(package).trim();
    match query(&["-W", "-f=${Status}", package]) {
        Some(status) => in_flux(&status),
        None => false,
    }
}

/// A dpkg `Status:` value that is not a settled, wanted installation:
/// `install ok half-installed`, `install ok unpacked`, `deinstall ok
/// installed` (being removed)...
pub fn in_flux(status: &str) -> bool {
    status.trim() != "install ok installed"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn situation() -> Situation {
        Situation {
            action: Action::Restart,
            start_limit_hit: false,
            watched: true,
            restart_allowed: true,
            auto_restarting: false,
            covered: false,
            repairs_last_hour: 0,
            max_repairs_per_hour: 3,
        }
    }

    #[test]
    fn limits() {
        assert_eq!(decide(&situation()).0, Step::Restart);
        assert_eq!(
            decide(&Situation {
                action: Action::Patch,
                ..situation()
            })
            .0,
            Step::Restart
        );
        assert_eq!(
            decide(&Situation {
                start_limit_hit: true,
                ..situation()
            })
            .0,
            Step::ResetRestart
        );
        for s in [
            Situation {
                action: Action::None,
                ..situation()
            },
            Situation {
                watched: false,
                ..situation()
            },
            Situation {
                restart_allowed: false,
                ..situation()
            },
            Situation {
                auto_restarting: true,
                ..situation()
            },
            Situation {
                covered: true,
                ..situation()
            },
            Situation {
                repairs_last_hour: 3,
                ..situation()
            },
            Situation {
                start_limit_hit: true,
                repairs_last_hour: 3,
                ..situation()
            },
        ] {
            assert_eq!(decide(&s).0, Step::None, "{s:?}");
        }
        assert!(
            decide(&Situation {
                repairs_last_hour: 3,
                ..situation()
            })
            .1
            .contains("max_repairs_per_hour = 3")
        );
    }

    #[test]
    fn dpkg_states() {
        assert!(!in_flux("install ok installed\n"));
        assert!(in_flux("install ok half-installed"));
        assert!(in_flux("install ok unpacked"));
        assert!(in_flux("deinstall ok installed"));
        assert!(in_flux("purge ok half-configured"));
    }

    #[test]
    fn a_decision_of_an_older_version_still_reads() {
        let d: Decision = serde_json::from_str(
            r#"{"unit":"a.service","step":"restart","failure":"a.service/01"}"#,
        )
        .unwrap();
        assert!(d.stored);
        assert_eq!(d.invocation_id, None);
    }
}
