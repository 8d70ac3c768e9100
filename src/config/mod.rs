//! Configuration, in three steps (as Zincati does it):
//!
//! 1. [`source`]: each file read and deserialized into a [`raw::RawConfig`]
//!    fragment (syntax errors, wrong types and unknown keys stop here,
//!    with their line);
//! 2. [`load`]: the main file then `conf.d/*.toml` merged in name order,
//!    remembering which file set each key;
//! 3. [`validate`]: fragments turned into typed [`Settings`]; every error
//!    names file, line and key, and all of them are reported at once.

pub mod load;
pub mod raw;
pub mod source;
pub mod validate;
pub mod values;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use load::{DEFAULT_CONFIG, LoadOptions, load, load_for_service};
pub use source::{ConfigError, ConfigErrors};

/// The validated configuration every binary works from.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Files that were read, in merge order (empty for built-in defaults).
    #[serde(skip)]
    pub files: Vec<PathBuf>,
    pub llm: LlmSettings,
    pub cache: CacheSettings,
    pub scheduler: SchedulerSettings,
    #[serde(rename = "project")]
    pub projects: Vec<ProjectSettings>,
    pub systemd_monitor: MonitorSettings,
    pub web: WebSettings,
    pub service: ServiceSettings,
    pub patch: PatchSettings,
    /// Problems that do not stop a run (a project directory missing).
    #[serde(skip)]
    pub warnings: Vec<ConfigError>,
    /// Names in `[systemd_monitor] units` or a project's `units` that
    /// systemd would refuse, left out of those lists: one bad name must
    /// not unhook the other units. The generator logs them, check-config
    /// fails on them, status lists them.
    #[serde(skip)]
    pub bad_units: Vec<ConfigError>,
}

impl Settings {
    /// The resolved configuration as TOML, secrets masked.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    pub fn project(&self, name: &str) -> Option<&ProjectSettings> {
        self.projects.iter().find(|p| p.name == name)
    }

    /// The project whose `units` list `unit`, or else its template (a
    /// template's drop-in hooks up every instance): the unit itself wins.
    pub fn project_of_unit(&self, unit: &str) -> Option<&ProjectSettings> {
        let listing = |name: &str| {
            self.projects
                .iter()
                .find(|p| p.units.iter().any(|u| u == name))
        };
        listing(unit).or_else(|| validate::template_of(unit).and_then(|t| listing(&t)))
    }

    /// The entry of `[systemd_monitor] units` or a project's `units` that
    /// covers `unit`: the unit itself, else the template it is an instance
    /// of. Whether hooks are written at all is [`Settings::watches`].
    pub fn watch_entry(&self, unit: &str) -> Option<&str> {
        let listed = |name: &str| {
            self.systemd_monitor
                .units
                .iter()
                .chain(self.projects.iter().flat_map(|p| p.units.iter()))
                .find(|u| *u == name)
                .map(String::as_str)
        };
        listed(unit).or_else(|| validate::template_of(unit).and_then(|t| listed(&t)))
    }

    /// Whether a failure of `unit` is pm-onfailure's to handle: monitoring
    /// is on and the unit or its template is listed, as the generator hooks
    /// them up. The handler itself never is (its failure would start
    /// another handler).
    pub fn watches(&self, unit: &str) -> bool {
        self.systemd_monitor.enabled
            && !unit.starts_with(validate::HANDLER_PREFIX)
            && self.watch_entry(unit).is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Codex,
    #[serde(rename = "openai")]
    OpenAi,
    None,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Codex => "codex",
            ProviderKind::OpenAi => "openai",
            ProviderKind::None => "none",
        }
    }
}

/// An API key. Never printed: `Debug`, `Display` and serialization mask it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The only way to the clear text; call it where the key is sent.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(********)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("********")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("********")
    }
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&values::format_duration(*d))
}

fn ser_size<S: serde::Serializer>(n: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&values::format_size(*n))
}

#[derive(Debug, Clone, Serialize)]
pub struct LlmSettings {
    pub provider: ProviderKind,
    /// codex: the program to run.
    pub command: String,
    /// codex: extra arguments for `codex exec`.
    pub args: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// openai: base URL, e.g. `http://127.0.0.1:11434/v1`.
    pub endpoint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret>,
    /// Where the key came from (file path, credential, inline) for check-config.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_source: Option<String>,
    /// `api_key_file`, expanded: hidden from the model's code.
    #[serde(skip)]
    pub api_key_file: Option<PathBuf>,
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub connect_timeout: Duration,
    pub retries: u32,
    /// 0 = unlimited.
    pub daily_token_budget: u64,
    /// codex: its `CODEX_HOME` (must exist and be writable).
    pub codex_home: PathBuf,
    /// `[llm] redact`: the user's own secret patterns (checked at load).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub redact: Vec<String>,
    /// Values redacted from every prompt whatever the patterns say: the
    /// key, the dashboard's password hash.
    #[serde(skip)]
    pub held_secrets: Vec<Secret>,
}

impl LlmSettings {
    /// The redaction step in front of every call ([`crate::llm::metered`]).
    pub fn redactor(&self) -> anyhow::Result<crate::llm::redact::Redactor> {
        let held: Vec<String> = self
            .held_secrets
            .iter()
            .map(|s| s.expose().to_string())
            .collect();
        crate::llm::redact::Redactor::new(&self.redact, &held)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CacheSettings {
    /// The LMDB environment directory.
    pub path: PathBuf,
    #[serde(serialize_with = "ser_size")]
    pub max_size: u64,
    /// Records kept per project / unit.
    pub history: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct SchedulerSettings {
    pub enabled: bool,
    /// The seed's cron line, when the schedule came from one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// systemd `OnCalendar=` expressions (one or two for a cron line).
    pub on_calendar: Vec<String>,
    #[serde(serialize_with = "ser_duration")]
    pub randomized_delay: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PatchMode {
    Off,
    Branch,
    Merge,
}

/// The command that says a project is healthy, run by `sh -c` in its directory.
#[derive(Debug, Clone, Serialize)]
pub struct CheckSettings {
    #[serde(rename = "check")]
    pub command: String,
    #[serde(rename = "check_timeout", serialize_with = "ser_duration")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProjectSettings {
    pub name: String,
    pub path: PathBuf,
    pub enabled: bool,
    /// Relative to `path`; `None` keeps the summary in the store only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary_file: Option<PathBuf>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckSettings>,
    pub patch: PatchMode,
    pub units: Vec<String>,
    /// Paths a patch may never touch, on top of the defaults.
    pub protect: Vec<String>,
    /// The check's own definition, CI configuration and git's files are
    /// protected too (`patch::confine::DEFAULT_PROTECT`).
    pub protect_defaults: bool,
    /// pm-patch's check (the model's code) may use the network.
    pub check_network: bool,
    /// Paths pm-patch's check may read besides the defaults (the home is
    /// hidden but for `~/.cargo`, `~/.rustup` and `~/.local`).
    pub check_readable: Vec<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MonitorSettings {
    pub enabled: bool,
    pub units: Vec<String>,
    pub restart: bool,
    pub max_repairs_per_hour: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct WebSettings {
    pub host: String,
    pub port: u16,
    #[serde(serialize_with = "ser_duration")]
    pub idle_exit: Duration,
    /// The basic-auth user name, required when `host` is not loopback.
    pub user: String,
    /// The password's crypt hash (`openssl passwd -6`); the systemd
    /// credential `web-password` is read first.
    pub password_file: PathBuf,
    /// More names the dashboard answers to (a reverse proxy's), beside
    /// `host`, `localhost`, loopback and its own addresses: lowercase, no
    /// trailing dot.
    pub allowed_hosts: Vec<String>,
}

impl WebSettings {
    /// True when only this machine can connect (no password needed).
    pub fn is_loopback(&self) -> bool {
        self.host == "localhost"
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

/// `[patch]`: how pm-patch works for every project.
#[derive(Debug, Clone, Serialize)]
pub struct PatchSettings {
    /// LLM attempts per run and project (each proven by the check).
    pub max_attempts: u32,
    /// A change touching more files than this is refused.
    pub max_files: u32,
    /// A change adding and removing more lines than this is refused.
    pub max_lines: u32,
    /// A change writing more bytes than this (its added lines, binary
    /// files, link targets) is refused: a long line is one line.
    #[serde(serialize_with = "ser_size")]
    pub max_bytes: u64,
    /// Binary files in a change (refused by default).
    pub allow_binary: bool,
    /// The author and committer of a fix.
    pub author_name: String,
    pub author_email: String,
    /// Run the model's code without containment where none is available
    /// (bubblewrap missing, no user namespaces). Off: such a machine runs
    /// no model code at all.
    pub unsandboxed_check: bool,
    /// Landlock as the second layer of the containment, where the kernel
    /// has it. Off: the namespaces alone (what a Raspberry Pi kernel gives).
    pub landlock: bool,
}

/// The account the services run as (the generator writes `User=`/`Group=`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServiceSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(toml: &str) -> (tempfile::TempDir, Settings) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pimainteno.toml");
        std::fs::write(&path, toml).unwrap();
        let s = load(&LoadOptions {
            path: Some(path),
            defaults_if_missing: false,
        })
        .unwrap_or_else(|e| panic!("{e}"));
        (dir, s)
    }

    #[test]
    fn a_template_watches_its_instances() {
        let (_dir, s) = settings(
            "[systemd_monitor]\nunits = [\"getty@.service\", \"nginx\", \"pm-onfailure@.service\"]\n\n\
             [[project]]\nname = \"w\"\npath = \"/srv/w\"\nunits = [\"worker@.service\", \"worker@main.service\"]\n\n\
             [[project]]\nname = \"v\"\npath = \"/srv/v\"\nunits = [\"worker@special.service\"]\n",
        );
        for unit in [
            "getty@tty1.service",
            "getty@.service",
            "nginx.service",
            "worker@x.service",
            "worker@special.service",
        ] {
            assert!(s.watches(unit), "{unit}");
        }
        for unit in [
            "getty.service",
            "getty@tty1.socket",
            "nginx@x.service",
            "other@x.service",
            "pm-onfailure@nginx.service.service",
        ] {
            assert!(!s.watches(unit), "{unit}");
        }
        assert_eq!(s.watch_entry("getty@tty1.service"), Some("getty@.service"));
        assert_eq!(s.watch_entry("nginx.service"), Some("nginx.service"));
        assert_eq!(s.watch_entry("nope.service"), None);

        let project = |u: &str| s.project_of_unit(u).map(|p| p.name.as_str());
        assert_eq!(project("worker@x.service"), Some("w"));
        assert_eq!(project("worker@main.service"), Some("w"));
        // The project that lists the instance itself wins over the template's.
        assert_eq!(project("worker@special.service"), Some("v"));
        assert_eq!(project("getty@tty1.service"), None);

        // Monitoring off: nothing is watched.
        let (_dir, off) =
            settings("[systemd_monitor]\nenabled = false\nunits = [\"getty@.service\"]\n");
        assert!(!off.watches("getty@tty1.service"));
    }

    #[test]
    fn a_bad_unit_name_is_left_out_and_said_where() {
        let long = "x".repeat(246);
        let (dir, s) = settings(&format!(
            "[systemd_monitor]\nunits = [\n  \"nginx\",\n  \"{long}\",\n  \"bad name\",\n]\n\n\
             [[project]]\nname = \"w\"\npath = \"/srv/w\"\nunits = [\"worker.service\", \"w/x\"]\n"
        ));
        assert_eq!(s.systemd_monitor.units, ["nginx.service"]);
        assert_eq!(s.projects[0].units, ["worker.service"]);
        let file = dir.path().join("pimainteno.toml");
        let bad: Vec<String> = s.bad_units.iter().map(ToString::to_string).collect();
        assert_eq!(bad.len(), 3, "{bad:#?}");
        let at = |line: usize| format!("{}:{line}: ", file.display());
        let find = |needle: &str| {
            bad.iter()
                .find(|b| b.contains(needle))
                .unwrap_or_else(|| panic!("{needle} not in {bad:#?}"))
        };
        let long = find("254 characters");
        assert!(
            long.starts_with(&format!("{}[systemd_monitor] units: ", at(4))),
            "{long}"
        );
        assert!(
            long.contains("a watched unit's name may have at most 234"),
            "{long}"
        );
        let spaced = find("' ' is not allowed");
        assert!(spaced.starts_with(&at(5)), "{spaced}");
        let slash = find("'/' is not allowed");
        assert!(
            slash.starts_with(&format!("{}[[project]] #1 units: ", at(11))),
            "{slash}"
        );
        // With another error nothing runs: all are reported together.
        let path = dir.path().join("both.toml");
        std::fs::write(
            &path,
            "[scheduler]\ncron = \"61 * * * *\"\n[systemd_monitor]\nunits = [\"bad name\"]\n",
        )
        .unwrap();
        let errors = load(&LoadOptions {
            path: Some(path),
            defaults_if_missing: false,
        })
        .unwrap_err()
        .to_string();
        assert!(
            errors.contains("[scheduler] cron: ")
                && errors.contains("\"bad name\" is not a unit name"),
            "{errors}"
        );
        // Not warnings as well: each consumer says what it does about them.
        assert!(
            !s.warnings.iter().any(|w| w.message.contains("unit name")),
            "{:?}",
            s.warnings
        );
    }
}
