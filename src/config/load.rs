//! Finding the configuration files and merging them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::raw::{RawConfig, RawMonitor, RawProject, RawScheduler};
use super::source::{ConfigError, ConfigErrors, SourceFile};
use super::{Settings, validate};

/// Where the configuration lives when neither `--config` nor
/// `$PIMAINTENO_CONFIG` says otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/pimainteno/pimainteno.toml";

/// How a binary asks for its configuration.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `--config PATH`.
    pub path: Option<PathBuf>,
    /// When no file was named and the default file does not exist, use
    /// built-in defaults instead of failing (ad-hoc runs such as
    /// `pm-summarize --path .`).
    pub defaults_if_missing: bool,
}

/// The main file: `--config`, else `$PIMAINTENO_CONFIG`, else the default.
/// The second value says whether the user named it explicitly.
pub fn main_path(cli: Option<&Path>) -> (PathBuf, bool) {
    if let Some(p) = cli {
        return (p.to_path_buf(), true);
    }
    match std::env::var_os("PIMAINTENO_CONFIG") {
        Some(p) if !p.is_empty() => (PathBuf::from(p), true),
        _ => (PathBuf::from(DEFAULT_CONFIG), false),
    }
}

/// `conf.d/*.toml` (and `*.json`) beside the main file, in name order.
fn fragment_paths(main: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let dir = main.parent().unwrap_or(Path::new(".")).join("conf.d");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(ConfigError {
                file: Some(dir),
                line: None,
                key: None,
                message: format!("cannot list the fragment directory: {e}"),
            });
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("toml" | "json")
            ) && p.is_file()
        })
        .collect();
    paths.sort();
    Ok(paths)
}

/// Load, merge and validate. Errors are all reported together.
pub fn load(opts: &LoadOptions) -> Result<Settings, ConfigErrors> {
    let (main, explicit) = main_path(opts.path.as_deref());
    let mut files = Vec::new();
    if main.exists() || explicit || !opts.defaults_if_missing {
        if !main.exists() {
            let hint = if explicit {
                "check the path given with --config or $PIMAINTENO_CONFIG".to_string()
            } else {
                format!(
                    "install the package's example or create {DEFAULT_CONFIG}, or pass --config PATH"
                )
            };
            return Err(ConfigError {
                file: Some(main.clone()),
                line: None,
                key: None,
                message: format!("no configuration file here; {hint}"),
            }
            .into());
        }
        files.push(SourceFile::read(&main)?);
        for p in fragment_paths(&main)? {
            files.push(SourceFile::read(&p)?);
        }
    }
    from_sources(files)
}

/// Validate files already read (the first is the main file).
pub fn from_sources(files: Vec<SourceFile>) -> Result<Settings, ConfigErrors> {
    let mut errors = Vec::new();
    let mut merged = Merged::default();
    for (i, f) in files.iter().enumerate() {
        match f.parse() {
            Ok(raw) => merged.add(i, raw),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    validate::validate(&files, merged)
}

/// A list item and where it came from: (value, file index, index in that file's list).
pub type Item<T> = (T, usize, usize);

/// Fragments merged: scalars from the last file that sets them, lists of
/// projects and monitored units appended.
#[derive(Debug, Default)]
pub struct Merged {
    pub raw: RawConfig,
    /// `"llm.timeout"` → index of the file that set it last.
    pub origins: HashMap<&'static str, usize>,
    pub projects: Vec<Item<RawProject>>,
    /// The seed's `[scheduler] projects = [paths]`.
    pub seed_projects: Vec<Item<String>>,
    pub monitor_units: Vec<Item<String>>,
    /// `[llm] redact` patterns of every file, in load order.
    pub redact: Vec<Item<String>>,
}

/// Copy the fields that `src` sets into `dst`, recording their origin.
macro_rules! take {
    ($origins:expr, $file:expr, $dst:expr, $src:expr, $section:literal, [$($field:ident),* $(,)?]) => {
        if let Some(src) = $src {
            let dst = $dst.get_or_insert_with(Default::default);
            $(
                if let Some(v) = src.$field {
                    dst.$field = Some(v);
                    $origins.insert(concat!($section, ".", stringify!($field)), $file);
                }
            )*
        }
    };
}

impl Merged {
    fn add(&mut self, file: usize, mut raw: RawConfig) {
        let o = &mut self.origins;
        let m = &mut self.raw;
        if let Some(llm) = raw.llm.as_mut() {
            for (i, p) in llm
                .redact
                .take()
                .unwrap_or_default()
                .into_iter()
                .enumerate()
            {
                self.redact.push((p, file, i));
            }
        }
        take!(
            o,
            file,
            m.llm,
            raw.llm,
            "llm",
            [
                provider,
                command,
                args,
                model,
                endpoint,
                api_key,
                api_key_file,
                timeout,
                connect_timeout,
                retries,
                daily_token_budget,
                codex_home,
            ]
        );
        take!(
            o,
            file,
            m.cache,
            raw.cache,
            "cache",
            [path, max_size, history]
        );
        if let Some(mut s) = raw.scheduler {
            for (i, p) in s
                .projects
                .take()
                .unwrap_or_default()
                .into_iter()
                .enumerate()
            {
                self.seed_projects.push((p, file, i));
            }
            take!(
                o,
                file,
                m.scheduler,
                Some::<RawScheduler>(s),
                "scheduler",
                [enabled, cron, on_calendar, randomized_delay,]
            );
        }
        for (i, p) in raw.project.unwrap_or_default().into_iter().enumerate() {
            self.projects.push((p, file, i));
        }
        if let Some(mut mon) = raw.systemd_monitor {
            for (i, u) in mon.units.take().unwrap_or_default().into_iter().enumerate() {
                self.monitor_units.push((u, file, i));
            }
            take!(
                o,
                file,
                m.systemd_monitor,
                Some::<RawMonitor>(mon),
                "systemd_monitor",
                [enabled, restart, max_repairs_per_hour,]
            );
        }
        take!(
            o,
            file,
            m.web,
            raw.web,
            "web",
            [host, port, idle_exit, user, password_file, allowed_hosts]
        );
        take!(o, file, m.service, raw.service, "service", [user, group]);
        take!(
            o,
            file,
            m.patch,
            raw.patch,
            "patch",
            [
                max_attempts,
                max_files,
                max_lines,
                max_bytes,
                allow_binary,
                author_name,
                author_email,
                unsandboxed_check,
                landlock,
            ]
        );
    }
}

/// Load the configuration as the services see it: `~/` means the home of
/// the account they run as (`[service] user`, else `default_user`), not the
/// caller's. For the generator and for `sudo pimainteno ...`: root's `~/`
/// is not where the projects are.
pub fn load_for_service(opts: &LoadOptions, default_user: &str) -> Result<Settings, ConfigErrors> {
    let settings = load(opts)?;
    let user = settings.service.user.as_deref().unwrap_or(default_user);
    match validate::home_of(user) {
        Some(home) if std::env::var_os("HOME").as_deref() != Some(home.as_os_str()) => {
            // SAFETY: called before any thread is started (the generator and
            // the admin commands are single-threaded); nothing reads the
            // environment concurrently.
            unsafe { std::env::set_var("HOME", &home) };
            load(opts)
        }
        _ => Ok(settings),
    }
}
