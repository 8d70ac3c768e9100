//! Raw configuration fragments: what one file says, before merge and
//! validation. Every field is optional so that `conf.d/` fragments can set
//! one key; unknown keys are rejected by serde and reported with file:line.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// A duration as written: `"15m"`, `"1h30m"`, or an integer (seconds).
/// Any other number (negative, fractional) is kept as text, for
/// validation to say what is wrong with it and where.
#[derive(Debug, Clone)]
pub enum DurationText {
    Seconds(u64),
    Text(String),
}

/// A size as written: `"256MiB"` or an integer (bytes); other numbers as
/// text, like [`DurationText`].
#[derive(Debug, Clone)]
pub enum SizeText {
    Bytes(u64),
    Text(String),
}

/// A whole number or a text, whatever number was written.
struct WholeOrText;

impl Visitor<'_> for WholeOrText {
    type Value = Result<u64, String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number or a string")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Ok(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(u64::try_from(v).map_err(|_| v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        // `{:?}` writes 1e300 as such, not as 301 digits.
        Ok(Err(format!("{v:?}")))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Err(v.to_string()))
    }
}

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match d.deserialize_any(WholeOrText)? {
            Ok(n) => DurationText::Seconds(n),
            Err(t) => DurationText::Text(t),
        })
    }
}

impl<'de> Deserialize<'de> for SizeText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match d.deserialize_any(WholeOrText)? {
            Ok(n) => SizeText::Bytes(n),
            Err(t) => SizeText::Text(t),
        })
    }
}

/// A count as written: any integer or float, so that validation can say
/// the key's range ("51 is out of range: use 0 to 10") instead of serde's
/// "expected u32".
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    Int(i128),
    Float(f64),
}

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Number;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Number, E> {
                Ok(Number::Int(v.into()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Number, E> {
                Ok(Number::Int(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Number, E> {
                Ok(Number::Float(v))
            }
        }
        d.deserialize_any(V)
    }
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
    pub retries: Option<Number>,
    pub daily_token_budget: Option<Number>,
    pub codex_home: Option<String>,
    /// The user's own secret patterns (regexes). Fragments append.
    pub redact: Option<Vec<String>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub path: Option<String>,
    pub max_size: Option<SizeText>,
    pub history: Option<Number>,
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
    pub max_repairs_per_hour: Option<Number>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWeb {
    pub host: Option<String>,
    pub port: Option<Number>,
    pub idle_exit: Option<DurationText>,
    pub user: Option<String>,
    pub password_file: Option<String>,
    pub allowed_hosts: Option<Vec<String>>,
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
    pub max_attempts: Option<Number>,
    pub max_files: Option<Number>,
    pub max_lines: Option<Number>,
    pub max_bytes: Option<SizeText>,
    pub allow_binary: Option<bool>,
    pub author_name: Option<String>,
    pub author_email: Option<String>,
    pub unsandboxed_check: Option<bool>,
    pub landlock: Option<bool>,
}
