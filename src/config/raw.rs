//! Raw configuration fragments: what one file says, before merge and
//! validation. Every field is optional so that `conf.d/` fragments can set
//! one key; unknown keys are rejected by serde and reported with file:line.

use serde::Deserialize;

/// A duration as written: `"15m"`, `"1h30m"`, or an integer (seconds).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum DurationText {
    Seconds(u64),
    Text(String),
}

/// A size as written: `"256MiB"` or an integer (bytes).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SizeText {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub llm: Option<RawLlm>,
    pub cache: Option<RawCache>,
    pub scheduler: Option<RawScheduler>,
    /// `[[project]]` tables; fragments append to the list.
    pub project: Option<Vec<RawProject>>,
    pub systemd_monitor: Option<RawMonitor>,
    pub web: Option<RawWeb>,
    pub service: Option<RawService>,
    pub patch: Option<RawPatch>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLlm {
    pub provider: Option<String>,
    pub command: Option<String>,
    pub args: Option<Vec<String>>,
    pub model: Option<String>,
    pub endpoint: Option<String>,
    pub api_key: Option<String>,
    pub api_key_file: Option<String>,
    pub timeout: Option<DurationText>,
    pub connect_timeout: Option<DurationText>,
    pub retries: Option<u32>,
    pub daily_token_budget: Option<u64>,
    pub codex_home: Option<String>,
    /// The user's own secret patterns (regexes). Fragments append.
    pub redact: Option<Vec<String>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub path: Option<String>,
    pub max_size: Option<SizeText>,
    pub history: Option<u32>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScheduler {
    pub enabled: Option<bool>,
    pub cron: Option<String>,
    pub on_calendar: Option<String>,
    pub randomized_delay: Option<DurationText>,
    /// The seed's format: a list of project directories. Fragments append.
    pub projects: Option<Vec<String>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProject {
    pub name: Option<String>,
    pub path: Option<String>,
    pub enabled: Option<bool>,
    pub summary_file: Option<String>,
    pub check: Option<String>,
    pub check_timeout: Option<DurationText>,
    pub patch: Option<String>,
    pub units: Option<Vec<String>>,
    pub protect: Option<Vec<String>>,
    pub protect_defaults: Option<bool>,
    pub check_network: Option<bool>,
    pub check_readable: Option<Vec<String>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMonitor {
    pub enabled: Option<bool>,
    /// Fragments append (duplicates removed).
    pub units: Option<Vec<String>>,
    pub restart: Option<bool>,
    pub max_repairs_per_hour: Option<u32>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWeb {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub idle_exit: Option<DurationText>,
    pub user: Option<String>,
    pub password_file: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub user: Option<String>,
    pub group: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPatch {
    pub max_attempts: Option<u32>,
    pub max_files: Option<u32>,
    pub max_lines: Option<u32>,
    pub max_bytes: Option<SizeText>,
    pub allow_binary: Option<bool>,
    pub author_name: Option<String>,
    pub author_email: Option<String>,
    pub unsandboxed_check: Option<bool>,
    pub landlock: Option<bool>,
}
