//! Merged fragments → typed [`Settings`]. Every check lives here, so bad
//! input fails in one place with file, line, key and what to do.

use std::collections::{HashMap, HashSet};
use std::ops::RangeInclusive;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::load::Merged;
use super::raw::{DurationText, Number, SizeText};
use super::source::{ConfigError, ConfigErrors, SourceFile, segs};
use super::values::{format_duration, format_size, parse_duration, parse_size};
use super::*;
use crate::calendar;

const DEFAULT_SUMMARY_FILE: &str = "codex.md";
const DEFAULT_ON_CALENDAR: &str = "*-*-* 03:00:00";
/// `[patch] max_bytes` by default: far more than 1000 lines of code need.
pub const PATCH_MAX_BYTES_DEFAULT: u64 = 256 << 10;
/// The most `[patch] max_bytes` may be: the largest file pm-patch reads
/// into a change.
pub const PATCH_MAX_BYTES_MAX: u64 = 8 << 20;

/// The documented range of every number in the configuration (README,
/// "Limits"; pimainteno.toml). Values beyond them are refused here, so no
/// arithmetic on them (an `Instant` plus a timeout, a map size doubled,
/// history times four) can overflow.
pub mod limits {
    use std::ops::RangeInclusive;
    use std::time::Duration;

    const DAY: u64 = 86_400;
    const fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }
    const POSITIVE: Duration = Duration::from_millis(1);

    /// `[llm] timeout`: a whole run of codex, retries included.
    pub const LLM_TIMEOUT: RangeInclusive<Duration> = POSITIVE..=secs(DAY);
    /// `[llm] connect_timeout`.
    pub const CONNECT_TIMEOUT: RangeInclusive<Duration> = POSITIVE..=secs(3600);
    /// `[llm] retries`: each waits longer than the last.
    pub const RETRIES: RangeInclusive<u64> = 0..=10;
    /// `[llm] daily_token_budget` (0 = unlimited).
    pub const DAILY_TOKEN_BUDGET: RangeInclusive<u64> = 0..=1_000_000_000;
    /// `[cache] max_size`: the map grows to twice this when full, and
    /// 2 GiB is what a 32-bit process can map; the same on every machine,
    /// so that a configuration moves between a Pi's 32- and 64-bit systems.
    pub const MAX_SIZE: RangeInclusive<u64> = 1 << 20..=1 << 30;
    /// `[cache] history`: records per project or unit.
    pub const HISTORY: RangeInclusive<u64> = 1..=1000;
    /// `[scheduler] randomized_delay` (0 = none): a weekly schedule may
    /// spread over its week.
    pub const RANDOMIZED_DELAY: RangeInclusive<Duration> = Duration::ZERO..=secs(7 * DAY);
    /// A project's `check_timeout`.
    pub const CHECK_TIMEOUT: RangeInclusive<Duration> = POSITIVE..=secs(DAY);
    /// `[systemd_monitor] max_repairs_per_hour` (0 = record only): each
    /// restart's time is kept in /run for the hour.
    pub const MAX_REPAIRS_PER_HOUR: RangeInclusive<u64> = 0..=1000;
    /// `[web] port`.
    pub const PORT: RangeInclusive<u64> = 1..=65_535;
    /// `[web] idle_exit`.
    pub const IDLE_EXIT: RangeInclusive<Duration> = secs(1)..=secs(DAY);
    /// `[patch] max_attempts`.
    pub const MAX_ATTEMPTS: RangeInclusive<u64> = 1..=10;
    /// `[patch] max_files`.
    pub const MAX_FILES: RangeInclusive<u64> = 1..=10_000;
    /// `[patch] max_lines`.
    pub const MAX_LINES: RangeInclusive<u64> = 1..=1_000_000;
    /// `[patch] max_bytes`: pm-patch reads no bigger file into a change.
    pub const MAX_BYTES: RangeInclusive<u64> = 1..=super::PATCH_MAX_BYTES_MAX;
}

/// A duration within `range`; the error says what is wrong, the range
/// included.
fn duration_in(v: &DurationText, range: &RangeInclusive<Duration>) -> Result<Duration, String> {
    let (d, shown) = match v {
        DurationText::Seconds(s) => (Duration::from_secs(*s), format!("{s} (seconds)")),
        DurationText::Text(t) => match parse_duration(t) {
            Ok(d) => (d, format!("\"{t}\"")),
            Err(why) => {
                return Err(format!(
                    "\"{t}\" is not a duration ({why}); write a number with a unit, e.g. \"90s\", \"15m\", \"1h30m\""
                ));
            }
        },
    };
    let (lo, hi) = (*range.start(), *range.end());
    if d < lo {
        return Err(if d.is_zero() {
            format!("must be more than zero (at most {})", format_duration(hi))
        } else {
            format!("{shown} is too short: at least {}", format_duration(lo))
        });
    }
    if d > hi {
        return Err(format!(
            "{shown} is more than the maximum, {}",
            format_duration(hi)
        ));
    }
    Ok(d)
}

/// A size within `range`.
fn size_in(v: &SizeText, range: &RangeInclusive<u64>) -> Result<u64, String> {
    let (n, shown) = match v {
        SizeText::Bytes(b) => (*b, format!("{b} (bytes)")),
        SizeText::Text(t) => match parse_size(t) {
            Ok(n) => (n, format!("\"{t}\"")),
            Err(why) => {
                return Err(format!(
                    "\"{t}\" is not a size ({why}); write e.g. \"256MiB\" or \"1GiB\""
                ));
            }
        },
    };
    let (lo, hi) = (*range.start(), *range.end());
    if n < lo {
        return Err(format!("must be at least {}", format_size(lo)));
    }
    if n > hi {
        return Err(format!(
            "{shown} is more than the maximum, {}",
            format_size(hi)
        ));
    }
    Ok(n)
}

/// A whole number within `range`.
fn count_in(v: Number, range: &RangeInclusive<u64>) -> Result<u64, String> {
    let (lo, hi) = (*range.start(), *range.end());
    let out_of_range = |shown: String| format!("{shown} is out of range: use {lo} to {hi}");
    match v {
        Number::Int(i) => match u64::try_from(i) {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(out_of_range(i.to_string())),
        },
        Number::Float(f) if f.is_finite() && f.fract() == 0.0 => {
            Err(out_of_range(format!("{f:?}")))
        }
        Number::Float(f) => Err(format!("{f:?} is not a whole number: use {lo} to {hi}")),
    }
}

/// The first control character (a newline, a tab, an escape) of a path: a
/// path with one would split a line of a unit drop-in the generator
/// writes, or of a log, and no real project needs one.
pub fn control_char(path: &str) -> Option<String> {
    path.chars().find(|c| c.is_control()).map(|c| {
        format!(
            "{path:?} has a control character ({}); rename it (a path with one cannot go into a unit file or a log line)",
            c.escape_debug()
        )
    })
}

struct Ctx<'a> {
    files: &'a [SourceFile],
    origins: &'a HashMap<&'static str, usize>,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
    /// Unit names systemd would refuse: left out rather than errors, so
    /// that one bad name does not unhook every other unit.
    bad_units: Vec<ConfigError>,
}

/// `"llm.timeout"` → `"[llm] timeout"`, as the user sees it in the file.
fn display_key(key: &str) -> String {
    match key.split_once('.') {
        Some((section, rest)) => format!("[{section}] {rest}"),
        None => key.to_string(),
    }
}

impl Ctx<'_> {
    fn located(&self, file: usize, path: &str, key: String, message: String) -> ConfigError {
        let f = &self.files[file];
        ConfigError {
            file: Some(f.path.clone()),
            line: f.line_of(&segs(path)),
            key: Some(key),
            message,
        }
    }

    /// An error about a scalar key, located in the file that set it last.
    fn error(&mut self, key: &'static str, message: impl Into<String>) {
        let e = match self.origins.get(key) {
            Some(&file) => self.located(file, key, display_key(key), message.into()),
            None => ConfigError {
                file: None,
                line: None,
                key: Some(display_key(key)),
                message: message.into(),
            },
        };
        self.errors.push(e);
    }

    fn warn(&mut self, key: &'static str, message: impl Into<String>) {
        if let Some(&file) = self.origins.get(key) {
            let w = self.located(file, key, display_key(key), message.into());
            self.warnings.push(w);
        }
    }

    /// Directory that relative paths in the file behind `key` are relative to.
    fn base_dir(&self, file: Option<usize>) -> PathBuf {
        file.and_then(|f| self.files[f].path.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| std::env::current_dir().unwrap_or_else(|_| "/".into()))
    }

    fn duration(
        &mut self,
        key: &'static str,
        v: Option<&DurationText>,
        default: Duration,
        range: RangeInclusive<Duration>,
    ) -> Duration {
        let Some(v) = v else { return default };
        duration_in(v, &range).unwrap_or_else(|why| {
            self.error(key, why);
            default
        })
    }

    /// A count; `T` holds every value of `range`.
    fn count<T: TryFrom<u64>>(
        &mut self,
        key: &'static str,
        v: Option<Number>,
        default: T,
        range: RangeInclusive<u64>,
    ) -> T {
        let Some(v) = v else { return default };
        match count_in(v, &range).map(T::try_from) {
            Ok(Ok(n)) => n,
            Ok(Err(_)) => default,
            Err(why) => {
                self.error(key, why);
                default
            }
        }
    }

    /// Whether a path key's text is free of control characters (else an
    /// error).
    fn path_ok(&mut self, key: &'static str, text: &str) -> bool {
        let why = control_char(text);
        let ok = why.is_none();
        if let Some(why) = why {
            self.error(key, why);
        }
        ok
    }
}

/// The user's home directory: `$HOME`, else the password database.
pub fn home_dir() -> Option<PathBuf> {
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(h));
    }
    // SAFETY: getuid cannot fail; getpwuid returns NULL or a pointer into
    // static storage, read at once by `passwd_home`.
    unsafe { passwd_home(libc::getpwuid(libc::getuid())) }
}

/// The home directory of `user` in the password database.
pub fn home_of(user: &str) -> Option<PathBuf> {
    let name = std::ffi::CString::new(user).ok()?;
    // SAFETY: as in `home_dir`, for getpwnam.
    unsafe { passwd_home(libc::getpwnam(name.as_ptr())) }
}

/// Copy the home directory out of a passwd entry.
///
/// # Safety
/// `pw` is NULL or the fresh result of a getpw* call (no other passwd call
/// in between).
unsafe fn passwd_home(pw: *const libc::passwd) -> Option<PathBuf> {
    // SAFETY: guaranteed by the caller; the string is copied before return.
    unsafe {
        if pw.is_null() || (*pw).pw_dir.is_null() {
            return None;
        }
        let dir = std::ffi::CStr::from_ptr((*pw).pw_dir);
        Some(PathBuf::from(
            std::ffi::OsStr::from_encoded_bytes_unchecked(dir.to_bytes()),
        ))
    }
}

/// `~/x` → home/x; relative → under `base`; `.` and `..` folded lexically.
pub fn expand_path(text: &str, base: &Path) -> PathBuf {
    let raw = if text == "~" {
        home_dir().unwrap_or_else(|| "/".into())
    } else if let Some(rest) = text.strip_prefix("~/") {
        home_dir().unwrap_or_else(|| "/".into()).join(rest)
    } else {
        base.join(text)
    };
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Where the store goes when `[cache] path` is not set: systemd's
/// `$STATE_DIRECTORY`, else `/var/lib/pimainteno` for root, else the
/// user's XDG state directory.
pub fn default_store_path() -> PathBuf {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
        let first = dir
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_string();
        return PathBuf::from(first).join("store");
    }
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } == 0 {
        return PathBuf::from("/var/lib/pimainteno/store");
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| home_dir().map(|h| h.join(".local/state")))
        .unwrap_or_else(|| "/tmp".into());
    state.join("pimainteno/store")
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The unit types systemd knows: a unit name ends in one of them.
const UNIT_TYPES: [&str; 11] = [
    "service",
    "socket",
    "timer",
    "mount",
    "automount",
    "path",
    "target",
    "swap",
    "device",
    "slice",
    "scope",
];

/// systemd's longest unit name (its UNIT_NAME_MAX, 256, counts the NUL).
pub const UNIT_NAME_MAX: usize = 255;

/// The instance prefix of the handler systemd starts for a watched unit.
pub const HANDLER_PREFIX: &str = "pm-onfailure@";

/// A watched unit's longest name: its handler `pm-onfailure@<unit>.service`
/// must itself be a unit name, or systemd drops the `OnFailure=` line
/// without a word.
pub const WATCHED_UNIT_MAX: usize = UNIT_NAME_MAX - HANDLER_PREFIX.len() - ".service".len();

/// A name as an error message shows it: a long one shortened, since the
/// message already says how long it is.
fn shown(name: &str) -> String {
    let n = name.chars().count();
    if n <= 60 {
        return name.to_string();
    }
    let head: String = name.chars().take(28).collect();
    let tail: String = name.chars().skip(n - 24).collect();
    format!("{head}…{tail}")
}

/// `nginx` → `nginx.service`; anything else must be a unit name as systemd
/// checks it (`unit_name_is_valid` in its src/basic/unit-name.c): a known
/// type after the last '.', a prefix of letters, digits and `:-_.\`,
/// then optionally '@' and an instance (which may hold further '@'),
/// empty for a template, and at most [`UNIT_NAME_MAX`] characters.
pub fn unit_name(u: &str) -> Result<String, String> {
    if u.is_empty() {
        return Err("a unit name is empty; write e.g. \"nginx.service\"".into());
    }
    let not = |why: String| -> Result<String, String> {
        Err(format!("\"{}\" is not a unit name: {why}", shown(u)))
    };
    // Like systemctl: a name without a type means a service.
    let name = if u.contains('.') {
        u.to_string()
    } else {
        format!("{u}.service")
    };
    let (stem, suffix) = name.rsplit_once('.').unwrap_or(("", ""));
    if !UNIT_TYPES.contains(&suffix) {
        return not(format!(
            "\".{suffix}\" is not a unit type; end it in .{} (a name without one means .service)",
            UNIT_TYPES.join(", .")
        ));
    }
    if stem.is_empty() {
        return not(format!("nothing before \".{suffix}\""));
    }
    if let Some(c) = stem
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.' | '\\' | '@')))
    {
        return not(format!(
            "{c:?} is not allowed; systemd allows letters, digits, ':', '-', '_', '.', '\\' and '@' \
             (`systemd-escape` writes other characters with these)"
        ));
    }
    if stem.starts_with('@') {
        return not("nothing before '@' (a template is e.g. \"getty@.service\")".into());
    }
    if name.len() > UNIT_NAME_MAX {
        return Err(format!(
            "\"{}\": {} characters; systemd's limit for a unit name is {UNIT_NAME_MAX}",
            shown(&name),
            name.len()
        ));
    }
    Ok(name)
}

/// [`unit_name`] for a unit to be watched: its handler's name
/// `pm-onfailure@<unit>.service` must be a unit name too.
pub fn watched_unit_name(u: &str) -> Result<String, String> {
    let name = unit_name(u)?;
    if name.len() > WATCHED_UNIT_MAX {
        return Err(format!(
            "\"{}\": {} characters; a watched unit's name may have at most {WATCHED_UNIT_MAX} \
             (systemd's limit of {UNIT_NAME_MAX} for {HANDLER_PREFIX}<unit>.service)",
            shown(&name),
            name.len()
        ));
    }
    Ok(name)
}

/// `getty@tty1.service` → `getty@.service`: the template an instance is
/// made from (`None` for a plain unit or a template).
pub fn template_of(unit: &str) -> Option<String> {
    let (prefix, rest) = unit.split_once('@')?;
    let (instance, suffix) = rest.rsplit_once('.')?;
    (!instance.is_empty()).then(|| format!("{prefix}@.{suffix}"))
}

/// `getty@.service`: a template, whose drop-ins apply to every instance.
pub fn is_template(unit: &str) -> bool {
    unit.split_once('@')
        .and_then(|(_, rest)| rest.rsplit_once('.'))
        .is_some_and(|(instance, _)| instance.is_empty())
}

pub fn validate(files: &[SourceFile], m: Merged) -> Result<Settings, ConfigErrors> {
    let mut cx = Ctx {
        files,
        origins: &m.origins,
        errors: Vec::new(),
        warnings: Vec::new(),
        bad_units: Vec::new(),
    };
    let raw = &m.raw;

    // [cache]
    let cache_raw = raw.cache.clone().unwrap_or_default();
    let cache_path = match &cache_raw.path {
        Some(p) if p.trim().is_empty() => {
            cx.error(
                "cache.path",
                "must not be empty; remove the key to use the default",
            );
            default_store_path()
        }
        Some(p) => {
            cx.path_ok("cache.path", p);
            expand_path(p, &cx.base_dir(m.origins.get("cache.path").copied()))
        }
        None => default_store_path(),
    };
    let max_size = match &cache_raw.max_size {
        None => 256 << 20,
        Some(v) => size_in(v, &limits::MAX_SIZE).unwrap_or_else(|why| {
            cx.error("cache.max_size", why);
            256 << 20
        }),
    };
    let history = cx.count("cache.history", cache_raw.history, 50u32, limits::HISTORY);

    // [llm]
    let llm_raw = raw.llm.clone().unwrap_or_default();
    let provider = match llm_raw.provider.as_deref() {
        None | Some("none") => ProviderKind::None,
        Some("codex") => ProviderKind::Codex,
        Some("openai") => ProviderKind::OpenAi,
        Some(other) => {
            cx.error("llm.provider", format!(
                "unknown provider \"{other}\"; use \"codex\", \"openai\" (any OpenAI-compatible endpoint: Ollama, llama.cpp, OpenAI) or \"none\""
            ));
            ProviderKind::None
        }
    };
    let command = llm_raw.command.clone().unwrap_or_else(|| "codex".into());
    cx.path_ok("llm.command", &command);
    if command.trim().is_empty() {
        cx.error(
            "llm.command",
            "must name the codex program, e.g. \"codex\" or \"/usr/local/bin/codex\"",
        );
    }
    let endpoint = llm_raw
        .endpoint
        .clone()
        .unwrap_or_else(|| "http://127.0.0.1:11434/v1".into());
    match endpoint.parse::<hyper::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() => {}
        _ => cx.error("llm.endpoint", format!(
            "\"{endpoint}\" is not an http(s) URL; write e.g. \"http://127.0.0.1:11434/v1\" (Ollama) or \"https://api.openai.com/v1\""
        )),
    }
    let model = llm_raw.model.clone().filter(|m| !m.trim().is_empty());
    if provider == ProviderKind::OpenAi && model.is_none() {
        cx.error(
            "llm.provider",
            "the openai provider needs [llm] model, e.g. model = \"llama3.2:1b\" (Ollama) or \"gpt-4o-mini\" (OpenAI)",
        );
    }
    let timeout = cx.duration(
        "llm.timeout",
        llm_raw.timeout.as_ref(),
        Duration::from_secs(15 * 60),
        limits::LLM_TIMEOUT,
    );
    let connect_timeout = cx.duration(
        "llm.connect_timeout",
        llm_raw.connect_timeout.as_ref(),
        Duration::from_secs(10),
        limits::CONNECT_TIMEOUT,
    );
    let retries = cx.count("llm.retries", llm_raw.retries, 3u32, limits::RETRIES);
    let daily_token_budget = cx.count(
        "llm.daily_token_budget",
        llm_raw.daily_token_budget,
        0u64,
        limits::DAILY_TOKEN_BUDGET,
    );
    let codex_home = match &llm_raw.codex_home {
        Some(p) => {
            cx.path_ok("llm.codex_home", p);
            expand_path(p, &cx.base_dir(m.origins.get("llm.codex_home").copied()))
        }
        None => cache_path.parent().unwrap_or(Path::new("/")).join("codex"),
    };

    // The key: a systemd credential wins, then a file, then inline.
    let mut api_key = None;
    let mut api_key_source = None;
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let cred = Path::new(&dir).join("llm-api-key");
        if let Ok(k) = std::fs::read_to_string(&cred) {
            api_key = Some(Secret::new(k.trim()));
            api_key_source = Some(format!("credential {}", cred.display()));
        }
    }
    let mut api_key_file = None;
    if let Some(file) = llm_raw.api_key_file.as_deref().filter(|f| !f.is_empty()) {
        let path = expand_path(
            file,
            &cx.base_dir(m.origins.get("llm.api_key_file").copied()),
        );
        api_key_file = Some(path.clone());
        // A refused path is not read: its error would print it raw.
        if cx.path_ok("llm.api_key_file", file) {
            match std::fs::read_to_string(&path) {
                Ok(k) if api_key.is_none() => {
                    if k.trim().is_empty() {
                        cx.error("llm.api_key_file", format!("{} is empty", path.display()));
                    }
                    api_key = Some(Secret::new(k.trim()));
                    api_key_source = Some(format!("file {}", path.display()));
                }
                Ok(_) => {}
                Err(e) => cx.error(
                    "llm.api_key_file",
                    format!(
                        "cannot read {}: {e}; check the path and that the service user may read it",
                        path.display()
                    ),
                ),
            }
        }
    }
    if let Some(k) = llm_raw.api_key.as_deref().filter(|k| !k.is_empty()) {
        cx.warn("llm.api_key", "an inline key is readable by anyone who can read this file; prefer api_key_file or a systemd credential (llm-api-key)");
        if api_key.is_none() {
            api_key = Some(Secret::new(k));
            api_key_source = Some("inline api_key".into());
        }
    }

    // The user's own secret patterns: a pattern that does not compile would
    // otherwise only show when the first prompt is sent.
    let mut redact = Vec::new();
    for (pattern, file, idx) in &m.redact {
        match crate::llm::redact::Redactor::check_pattern(pattern) {
            Ok(()) => redact.push(pattern.clone()),
            Err(why) => {
                let e = cx.located(
                    *file,
                    &format!("llm.redact.{idx}"),
                    "[llm] redact".into(),
                    format!("{pattern:?} is not a usable pattern: {why}"),
                );
                cx.errors.push(e);
            }
        }
    }
    // Values PiMainteno holds are redacted from every prompt, whatever
    // the patterns say.
    let mut held_secrets: Vec<Secret> = api_key.iter().cloned().collect();

    // [scheduler]
    let sched_raw = raw.scheduler.clone().unwrap_or_default();
    let mut on_calendar = vec![DEFAULT_ON_CALENDAR.to_string()];
    // Both may be set in different files (the shipped file and a conf.d
    // fragment): the later file wins. In one file, it is a mistake.
    let (mut cron, mut cal) = (sched_raw.cron.as_ref(), sched_raw.on_calendar.as_ref());
    if cron.is_some() && cal.is_some() {
        let (c, o) = (
            m.origins.get("scheduler.cron"),
            m.origins.get("scheduler.on_calendar"),
        );
        if c == o {
            cx.error(
                "scheduler.on_calendar",
                "set either cron or on_calendar, not both",
            );
        } else if c > o {
            cal = None;
        } else {
            cron = None;
        }
    }
    if let Some(cron) = cron {
        match calendar::cron_to_on_calendar(cron) {
            Ok(c) => on_calendar = c,
            Err(why) => cx.error(
                "scheduler.cron",
                format!(
                    "\"{cron}\" is not a cron schedule: {why}; write 5 fields, e.g. \"0 3 * * *\" (03:00 daily)"
                ),
            ),
        }
    } else if let Some(cal) = cal {
        match calendar::validate_on_calendar(cal) {
            Ok(()) => on_calendar = vec![cal.trim().to_string()],
            Err(why) => cx.error(
                "scheduler.on_calendar",
                format!(
                    "{why}; see `man systemd.time` and try it with `systemd-analyze calendar '{cal}'`"
                ),
            ),
        }
    }
    let randomized_delay = cx.duration(
        "scheduler.randomized_delay",
        sched_raw.randomized_delay.as_ref(),
        Duration::from_secs(30 * 60),
        limits::RANDOMIZED_DELAY,
    );

    // Projects: [[project]] tables, then the seed's plain list of paths.
    let mut projects = Projects::default();
    for (p, file, idx) in &m.projects {
        let at = |field: &str| format!("project.{idx}.{field}");
        let key = |field: &str| format!("[[project]] #{} {field}", idx + 1);
        let base = cx.base_dir(Some(*file));
        let Some(path_text) = p.path.as_deref().filter(|s| !s.trim().is_empty()) else {
            let e = cx.located(
                *file,
                &format!("project.{idx}"),
                key("path"),
                "is missing; every [[project]] needs path = \"/home/pi/myproject\"".into(),
            );
            cx.errors.push(e);
            continue;
        };
        // A located error for a path key with a control character.
        let refuse_control = |cx: &mut Ctx, text: &str, at: String, key: String| {
            if let Some(why) = control_char(text) {
                let e = cx.located(*file, &at, key, why);
                cx.errors.push(e);
            }
        };
        refuse_control(&mut cx, path_text, at("path"), key("path"));
        let path = expand_path(path_text, &base);
        let name = match &p.name {
            Some(n) => n.clone(),
            None => path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        if !valid_name(&name) {
            let e = cx.located(*file, &at(if p.name.is_some() { "name" } else { "path" }), key("name"), format!(
                "{name:?} cannot be a project name: use letters, digits, '-', '_' or '.' (set name = \"...\")"
            ));
            cx.errors.push(e);
        }
        let summary_file = match p.summary_file.as_deref() {
            None => Some(PathBuf::from(DEFAULT_SUMMARY_FILE)),
            Some("") => None,
            Some(s) => {
                refuse_control(&mut cx, s, at("summary_file"), key("summary_file"));
                let rel = Path::new(s);
                let escapes = rel.is_absolute()
                    || rel.components().any(|c| matches!(c, Component::ParentDir));
                let in_git = rel
                    .components()
                    .next()
                    .is_some_and(|c| c.as_os_str() == ".git");
                if escapes || in_git {
                    let e = cx.located(*file, &at("summary_file"), key("summary_file"), format!(
                        "\"{s}\" must be a relative path inside the project (not in .git); e.g. \"codex.md\" or \"docs/summary.md\", or \"\" for the store only"
                    ));
                    cx.errors.push(e);
                }
                Some(rel.to_path_buf())
            }
        };
        let check_timeout = match &p.check_timeout {
            None => Duration::from_secs(600),
            Some(v) => duration_in(v, &limits::CHECK_TIMEOUT).unwrap_or_else(|why| {
                let e = cx.located(*file, &at("check_timeout"), key("check_timeout"), why);
                cx.errors.push(e);
                Duration::from_secs(600)
            }),
        };
        let check = p
            .check
            .as_deref()
            .filter(|c| !c.trim().is_empty())
            .map(|c| CheckSettings {
                command: c.to_string(),
                timeout: check_timeout,
            });
        let patch = match p.patch.as_deref() {
            None | Some("branch") => PatchMode::Branch,
            Some("off") => PatchMode::Off,
            Some("merge") => PatchMode::Merge,
            Some(other) => {
                let e = cx.located(*file, &at("patch"), key("patch"), format!(
                    "unknown mode \"{other}\"; use \"off\", \"branch\" (commit fixes on a branch) or \"merge\" (also fast-forward when the check passes)"
                ));
                cx.errors.push(e);
                PatchMode::Branch
            }
        };
        let mut units = Vec::new();
        for (i, u) in p.units.clone().unwrap_or_default().iter().enumerate() {
            match watched_unit_name(u) {
                Ok(u) => units.push(u),
                Err(why) => {
                    let e = cx.located(
                        *file,
                        &format!("project.{idx}.units.{i}"),
                        key("units"),
                        why,
                    );
                    cx.bad_units.push(e);
                }
            }
        }
        let check_readable_text = p.check_readable.clone().unwrap_or_default();
        for (i, r) in check_readable_text.iter().enumerate() {
            let at = format!("project.{idx}.check_readable.{i}");
            refuse_control(&mut cx, r, at, key("check_readable"));
        }
        let check_readable: Vec<PathBuf> = check_readable_text
            .iter()
            .map(|r| expand_path(r, &base))
            .collect();
        for (i, r) in check_readable.iter().enumerate() {
            if !r.exists() {
                let w = cx.located(
                    *file,
                    &format!("project.{idx}.check_readable.{i}"),
                    key("check_readable"),
                    format!(
                        "{} does not exist (for this account): the check will not see it",
                        r.display()
                    ),
                );
                cx.warnings.push(w);
            }
        }
        let project = ProjectSettings {
            name,
            path,
            enabled: p.enabled.unwrap_or(true),
            summary_file,
            check,
            patch,
            units,
            protect: p.protect.clone().unwrap_or_default(),
            protect_defaults: p.protect_defaults.unwrap_or(true),
            check_network: p.check_network.unwrap_or(false),
            check_readable,
        };
        projects.add(&mut cx, project, *file, at("path"), key("path"));
    }
    for (path_text, file, idx) in &m.seed_projects {
        let at = format!("scheduler.projects.{idx}");
        let key = "[scheduler] projects".to_string();
        let path = expand_path(path_text, &cx.base_dir(Some(*file)));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(why) = control_char(path_text) {
            let e = cx.located(*file, &at, key.clone(), why);
            cx.errors.push(e);
        } else if !valid_name(&name) {
            let e = cx.located(*file, &at, key.clone(), format!(
                "\"{path_text}\" gives no usable project name; use a [[project]] table with name = \"...\""
            ));
            cx.errors.push(e);
        }
        let project = ProjectSettings {
            name,
            path,
            enabled: true,
            summary_file: Some(PathBuf::from(DEFAULT_SUMMARY_FILE)),
            check: None,
            patch: PatchMode::Branch,
            units: Vec::new(),
            protect: Vec::new(),
            protect_defaults: true,
            check_network: false,
            check_readable: Vec::new(),
        };
        projects.add(&mut cx, project, *file, at, key);
    }
    let projects = projects.list;

    // [systemd_monitor]
    let mon_raw = raw.systemd_monitor.clone().unwrap_or_default();
    let mut monitor_units: Vec<String> = Vec::new();
    let mut listed = HashSet::new();
    for (u, file, idx) in &m.monitor_units {
        match watched_unit_name(u) {
            Ok(u) => {
                if listed.insert(u.clone()) {
                    monitor_units.push(u);
                }
            }
            Err(why) => {
                let e = cx.located(
                    *file,
                    &format!("systemd_monitor.units.{idx}"),
                    "[systemd_monitor] units".into(),
                    why,
                );
                cx.bad_units.push(e);
            }
        }
    }

    let max_repairs_per_hour = cx.count(
        "systemd_monitor.max_repairs_per_hour",
        mon_raw.max_repairs_per_hour,
        3u32,
        limits::MAX_REPAIRS_PER_HOUR,
    );

    // [web]
    let web_raw = raw.web.clone().unwrap_or_default();
    let host = web_raw.host.clone().unwrap_or_else(|| "127.0.0.1".into());
    if host.parse::<std::net::IpAddr>().is_err() && host != "localhost" {
        cx.error("web.host", format!(
            "\"{host}\" is not an IP address; use \"127.0.0.1\" (this machine only), \"::1\" or \"0.0.0.0\" (the whole network)"
        ));
    }
    let port = cx.count("web.port", web_raw.port, 8740u16, limits::PORT);
    let idle_exit = cx.duration(
        "web.idle_exit",
        web_raw.idle_exit.as_ref(),
        Duration::from_secs(120),
        limits::IDLE_EXIT,
    );
    let web_user = web_raw.user.clone().unwrap_or_else(|| "admin".into());
    if web_user.is_empty() || web_user.contains(':') || web_user.chars().any(char::is_control) {
        cx.error(
            "web.user",
            format!("\"{web_user}\" cannot be a basic-auth user name (not empty, no ':')"),
        );
    }
    let password_file = match &web_raw.password_file {
        Some(p) => {
            cx.path_ok("web.password_file", p);
            expand_path(p, &cx.base_dir(m.origins.get("web.password_file").copied()))
        }
        None => PathBuf::from("/etc/pimainteno/web-password"),
    };
    // The dashboard's password hash, where this account may read it (a
    // leaked hash can be cracked offline).
    if let Ok(hash) = std::fs::read_to_string(&password_file) {
        held_secrets.extend(
            hash.lines()
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(Secret::new),
        );
    }

    // Names in a request's Host header the dashboard answers to (DNS
    // rebinding): compared as names, so a port or a URL here is a mistake.
    let mut allowed_hosts = Vec::new();
    for (i, name) in web_raw.allowed_hosts.iter().flatten().enumerate() {
        match crate::dashboard::host::configured_name(name) {
            Ok(n) => allowed_hosts.push(n),
            Err(why) => {
                let e = match m.origins.get("web.allowed_hosts") {
                    Some(&file) => cx.located(
                        file,
                        &format!("web.allowed_hosts.{i}"),
                        "[web] allowed_hosts".into(),
                        format!("{name:?} {why}"),
                    ),
                    None => ConfigError {
                        file: None,
                        line: None,
                        key: Some("[web] allowed_hosts".into()),
                        message: format!("{name:?} {why}"),
                    },
                };
                cx.errors.push(e);
            }
        }
    }

    // [service]
    let svc = raw.service.clone().unwrap_or_default();
    for (key, v) in [("service.user", &svc.user), ("service.group", &svc.group)] {
        if let Some(name) = v
            && (name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            cx.error(key, format!("\"{name}\" is not a user or group name"));
        }
    }

    // [patch]
    let patch_raw = raw.patch.clone().unwrap_or_default();
    let max_attempts = cx.count(
        "patch.max_attempts",
        patch_raw.max_attempts,
        3u32,
        limits::MAX_ATTEMPTS,
    );
    let max_files = cx.count(
        "patch.max_files",
        patch_raw.max_files,
        20u32,
        limits::MAX_FILES,
    );
    let max_lines = cx.count(
        "patch.max_lines",
        patch_raw.max_lines,
        1000u32,
        limits::MAX_LINES,
    );
    let max_bytes = match &patch_raw.max_bytes {
        None => PATCH_MAX_BYTES_DEFAULT,
        Some(v) => size_in(v, &limits::MAX_BYTES).unwrap_or_else(|why| {
            cx.error("patch.max_bytes", why);
            PATCH_MAX_BYTES_DEFAULT
        }),
    };
    let author_name = patch_raw
        .author_name
        .clone()
        .unwrap_or_else(|| "PiMainteno".into());
    let author_email = patch_raw
        .author_email
        .clone()
        .unwrap_or_else(|| "pimainteno@localhost".into());
    if author_name.trim().is_empty() || author_name.contains(['<', '>', '\n']) {
        cx.error(
            "patch.author_name",
            format!("\"{author_name}\" cannot be a commit author's name"),
        );
    }
    if !author_email.contains('@') || author_email.contains(['<', '>', ' ', '\n']) {
        cx.error("patch.author_email", format!(
            "\"{author_email}\" is not an e-mail address; write e.g. \"pimainteno@raspberrypi.local\""
        ));
    }

    if !cx.errors.is_empty() {
        // Nothing runs on this configuration: report every mistake at once,
        // the unit names included.
        cx.errors.append(&mut cx.bad_units);
        return Err(ConfigErrors(cx.errors));
    }
    Ok(Settings {
        files: files.iter().map(|f| f.path.clone()).collect(),
        llm: LlmSettings {
            provider,
            command,
            args: llm_raw.args.clone().unwrap_or_default(),
            model,
            endpoint,
            api_key,
            api_key_source,
            api_key_file,
            timeout,
            connect_timeout,
            retries,
            daily_token_budget,
            codex_home,
            redact,
            held_secrets,
        },
        cache: CacheSettings {
            path: cache_path,
            max_size,
            history,
        },
        scheduler: SchedulerSettings {
            enabled: sched_raw.enabled.unwrap_or(true),
            cron: cron.cloned(),
            on_calendar,
            randomized_delay,
        },
        projects,
        systemd_monitor: MonitorSettings {
            enabled: mon_raw.enabled.unwrap_or(true),
            units: monitor_units,
            restart: mon_raw.restart.unwrap_or(true),
            max_repairs_per_hour,
        },
        web: WebSettings {
            host,
            port,
            idle_exit,
            user: web_user,
            password_file,
            allowed_hosts,
        },
        service: ServiceSettings {
            user: svc.user.clone(),
            group: svc.group.clone(),
        },
        patch: PatchSettings {
            max_attempts,
            max_files,
            max_lines,
            max_bytes,
            allow_binary: patch_raw.allow_binary.unwrap_or(false),
            author_name,
            author_email,
            unsandboxed_check: patch_raw.unsandboxed_check.unwrap_or(false),
            landlock: patch_raw.landlock.unwrap_or(true),
        },
        warnings: cx.warnings,
        bad_units: cx.bad_units,
    })
}

/// The projects so far, and where each name and directory was taken.
#[derive(Default)]
struct Projects {
    list: Vec<ProjectSettings>,
    /// (file, key path) of each entry of `list`.
    defined: Vec<(usize, String)>,
    /// Name and directory → index in `list`: a long list is checked for
    /// clashes in linear time.
    by_name: HashMap<String, usize>,
    by_path: HashMap<PathBuf, usize>,
}

impl Projects {
    /// Add a project unless its name or directory is already taken; warn
    /// when the directory does not exist yet (it may be cloned later).
    fn add(
        &mut self,
        cx: &mut Ctx,
        project: ProjectSettings,
        file: usize,
        at: String,
        key: String,
    ) {
        let clash = if let Some(&i) = self.by_name.get(&project.name) {
            Some((format!("a second project named \"{}\"", project.name), i))
        } else {
            self.by_path.get(&project.path).map(|&i| {
                let what = format!(
                    "{} is already configured as project \"{}\"",
                    project.path.display(),
                    self.list[i].name
                );
                (what, i)
            })
        };
        if let Some((what, i)) = clash {
            let (of, oat) = &self.defined[i];
            let first = cx.located(*of, oat, String::new(), String::new());
            let place = match (&first.file, first.line) {
                (Some(f), Some(l)) => format!("{}:{l}", f.display()),
                (Some(f), None) => f.display().to_string(),
                _ => "built-in".into(),
            };
            let message =
                format!("{what} (the first is at {place}); give one of them another name or path");
            let e = cx.located(file, &at, key, message);
            cx.errors.push(e);
            return;
        }
        if !project.path.is_dir() {
            let message = format!(
                "{} does not exist (yet); project \"{}\" is skipped until it does",
                project.path.display(),
                project.name
            );
            let w = cx.located(file, &at, key, message);
            cx.warnings.push(w);
        }
        let i = self.list.len();
        self.by_name.insert(project.name.clone(), i);
        self.by_path.insert(project.path.clone(), i);
        self.defined.push((file, at));
        self.list.push(project);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A unit name of exactly `len` characters: `a…a.service`.
    fn of_len(len: usize) -> String {
        format!("{}.service", "a".repeat(len - ".service".len()))
    }

    #[test]
    fn the_limits_are_systemds() {
        assert_eq!(UNIT_NAME_MAX, 255);
        // pm-onfailure@<unit>.service is a unit name of at most 255.
        assert_eq!(WATCHED_UNIT_MAX, 234);
        assert_eq!(
            format!("{HANDLER_PREFIX}{}.service", of_len(WATCHED_UNIT_MAX)).len(),
            UNIT_NAME_MAX
        );
    }

    #[test]
    fn lengths_around_the_limits() {
        for len in [234, 235, 254, 255] {
            assert_eq!(unit_name(&of_len(len)), Ok(of_len(len)), "{len}");
        }
        let err = unit_name(&of_len(256)).unwrap_err();
        assert!(
            err.contains("256 characters; systemd's limit for a unit name is 255"),
            "{err}"
        );

        assert_eq!(watched_unit_name(&of_len(234)), Ok(of_len(234)));
        for len in [235, 254, 255, 256] {
            let err = watched_unit_name(&of_len(len)).unwrap_err();
            let want = if len > 255 {
                "systemd's limit for a unit name is 255".to_string()
            } else {
                format!(
                    "{len} characters; a watched unit's name may have at most 234 \
                     (systemd's limit of 255 for pm-onfailure@<unit>.service)"
                )
            };
            assert!(err.contains(&want), "{len}: {err}");
            // The name is shortened, not printed whole.
            assert!(err.len() < 200, "{err}");
        }
        // The implied .service counts.
        let bare = "a".repeat(WATCHED_UNIT_MAX - ".service".len() + 1);
        assert!(
            watched_unit_name(&bare)
                .unwrap_err()
                .contains("235 characters")
        );
    }

    #[test]
    fn names_are_checked_as_systemd_checks_them() {
        for (given, want) in [
            ("nginx", "nginx.service"),
            ("nginx.service", "nginx.service"),
            (
                "systemd-fsck@dev-disk-by\\x2duuid-1234.service",
                "systemd-fsck@dev-disk-by\\x2duuid-1234.service",
            ),
            ("getty@.service", "getty@.service"),
            ("getty@", "getty@.service"),
            ("getty@tty1", "getty@tty1.service"),
            ("a@b@c.service", "a@b@c.service"),
            ("a@.b.service", "a@.b.service"),
            ("my.app.service", "my.app.service"),
            ("backup.timer", "backup.timer"),
            ("srv-data.mount", "srv-data.mount"),
            ("dev-sda1.device", "dev-sda1.device"),
            ("user-1000.slice", "user-1000.slice"),
            ("web:8080_x.socket", "web:8080_x.socket"),
        ] {
            assert_eq!(unit_name(given), Ok(want.to_string()), "{given}");
        }
        for (given, why) in [
            ("", "is empty"),
            ("bad unit name", "' ' is not allowed"),
            ("caf\u{e9}.service", "'\u{e9}' is not allowed"),
            ("a/b.service", "'/' is not allowed"),
            ("a%i.service", "'%' is not allowed"),
            ("nginx.conf", "\".conf\" is not a unit type"),
            ("nginx.", "\".\" is not a unit type"),
            (".service", "nothing before \".service\""),
            ("@foo.service", "nothing before '@'"),
            ("@.service", "nothing before '@'"),
        ] {
            let err = unit_name(given).unwrap_err();
            assert!(err.contains(why), "{given:?}: {err}");
            if !given.is_empty() {
                assert!(err.contains("is not a unit name"), "{given:?}: {err}");
            }
        }
    }

    #[test]
    fn templates_and_instances() {
        assert!(is_template("getty@.service"));
        assert!(!is_template("getty@tty1.service"));
        assert!(!is_template("a@.b.service"), "an instance named \".b\"");
        assert!(!is_template("nginx.service"));
        assert_eq!(
            template_of("getty@tty1.service").as_deref(),
            Some("getty@.service")
        );
        assert_eq!(template_of("a@b@c.service").as_deref(), Some("a@.service"));
        assert_eq!(template_of("a@x.y.socket").as_deref(), Some("a@.socket"));
        assert_eq!(template_of("a@.b.service").as_deref(), Some("a@.service"));
        assert_eq!(template_of("getty@.service"), None);
        assert_eq!(template_of("nginx.service"), None);
    }
}
