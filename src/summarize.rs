//! pm-summarize: for each project, compare its fingerprint with the one
//! the stored summary was made from; when it changed (or `--force`), ask the
//! provider, write `<project>/<summary_file>` atomically and store the
//! summary with its history.
//!
//! Architecture invariant: an unchanged project costs a `git status`-like
//! scan and one small file read: no provider call, no journal line above
//! debug level, and no write at all. Even opening LMDB writes (its lock
//! file's reader table), so the fingerprint of the last stored summary is
//! also kept as a hint file, `<store>/fingerprints/<project>`, and the store
//! is opened only when the hint does not match. The store stays the truth:
//! a missing or stale hint only costs opening it (and the hint is mended).

use std::fs;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::config::{PatchMode, ProjectSettings, ProviderKind, Settings};
use crate::exit::{Coded, Exit};
use crate::llm::{self, LlmError, Provider, Purpose, Request, metered};
use crate::lock::lock_project;
use crate::logging::message_id;
use crate::store::{ProjectRecord, Store, SummaryRecord, records::RECORD_VERSION};
use crate::{git, time};

/// Bumped when the prompt changes meaningfully: every project then gets a
/// fresh summary on the next run.
pub const PROMPT_VERSION: u32 = 1;

/// How long a run waits for another run on the same project.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Context sent to providers that cannot read the repository (openai).
const CONTEXT_BYTES: usize = 48 * 1024;

const INSTRUCTIONS: &str = "You are PiMainteno, an agent that maintains software projects on a small Linux server. \
Write a concise, accurate Markdown summary of this repository for its maintainer: \
what the project is and does; how it is built, run and tested; its layout (main directories and files); \
its current state (recent commits, uncommitted work, the result of its check command if known, TODO/FIXME hot spots); \
and what needs attention. Do not modify any file. Answer with the Markdown summary only, starting with a level-2 heading.";

/// What the user asked for on the command line.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--project NAME` (empty: every enabled project).
    pub only: Vec<String>,
    /// `--force`: ask the provider even when nothing changed.
    pub force: bool,
    /// Print a line per project on stderr (set when stderr is a terminal).
    pub progress: bool,
}

/// How one project's run ended.
#[derive(Debug)]
pub enum Outcome {
    /// A new summary was written; its store key. `warning`: it was made
    /// without reading the project (codex's sandbox failed).
    Summarized {
        key: String,
        tokens: u64,
        warning: Option<String>,
    },
    /// Nothing changed since the stored summary.
    Unchanged,
    /// Nothing changed, but the summary file was missing: rewritten from the store.
    Restored,
    /// Not run, and that is fine (disabled, directory not there yet).
    Skipped(String),
    /// The run failed; the error says why and the exit code how badly.
    Failed(anyhow::Error),
}

#[derive(Debug)]
pub struct Report {
    pub project: String,
    pub outcome: Outcome,
    pub elapsed: Duration,
}

impl Report {
    pub fn exit(&self) -> Exit {
        match &self.outcome {
            Outcome::Failed(e) => crate::exit::code_for(e),
            _ => Exit::Ok,
        }
    }

    fn line(&self) -> String {
        let ms = self.elapsed.as_secs_f64() * 1000.0;
        match &self.outcome {
            Outcome::Summarized {
                warning: Some(w), ..
            } => format!("summarized, with a warning: {w}"),
            Outcome::Summarized { tokens, .. } if *tokens > 0 => {
                format!("summarized ({tokens} tokens, {:.1}s)", ms / 1000.0)
            }
            Outcome::Summarized { .. } => format!("summarized ({:.1}s)", ms / 1000.0),
            Outcome::Unchanged => format!("unchanged ({ms:.1} ms)"),
            Outcome::Restored => "unchanged; summary file restored from the store".into(),
            Outcome::Skipped(why) => format!("skipped: {why}"),
            Outcome::Failed(e) => format!("failed: {e:#}"),
        }
    }
}

/// The worst exit code of a run (0 when every project is fine).
pub fn worst(reports: &[Report]) -> Exit {
    reports.iter().map(Report::exit).max().unwrap_or(Exit::Ok)
}

/// A project for a directory named on the command line (`--path DIR`).
pub fn adhoc_project(dir: &Path) -> anyhow::Result<ProjectSettings> {
    // As for a configured project's path: a control character would end
    // up in the store's keys and split log lines. The real path counts too
    // (a symlink may lead to one).
    let refuse = |p: &Path| -> anyhow::Result<()> {
        match crate::config::validate::control_char(&p.to_string_lossy()) {
            Some(why) => Err(Coded::new(Exit::Config, format!("--path {why}")).into()),
            None => Ok(()),
        }
    };
    refuse(dir)?;
    let path =
        fs::canonicalize(dir).with_context(|| format!("no such directory: {}", dir.display()))?;
    refuse(&path)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "root".into());
    Ok(ProjectSettings {
        name,
        path,
        enabled: true,
        summary_file: Some(PathBuf::from("codex.md")),
        check: None,
        patch: PatchMode::Off,
        units: Vec::new(),
        protect: Vec::new(),
        protect_defaults: true,
        check_network: false,
        check_readable: Vec::new(),
    })
}

/// Summarize the selected projects. Only set-up problems (store, unknown
/// project names) are errors; each project's own failure is in its report.
pub fn run(settings: &Settings, opts: &Options) -> anyhow::Result<Vec<Report>> {
    for name in &opts.only {
        if settings.project(name).is_none() {
            let known: Vec<&str> = settings.projects.iter().map(|p| p.name.as_str()).collect();
            return Err(Coded::new(
                Exit::Config,
                format!(
                    "no project named \"{name}\" in the configuration (known: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            )
            .into());
        }
    }
    let selected: Vec<&ProjectSettings> = settings
        .projects
        .iter()
        .filter(|p| {
            if opts.only.is_empty() {
                p.enabled
            } else {
                opts.only.contains(&p.name)
            }
        })
        .collect();
    if selected.is_empty() {
        tracing::debug!("no project to summarize");
        return Ok(Vec::new());
    }
    let mut store = LazyStore {
        cache: &settings.cache,
        store: None,
    };
    let provider = llm::from_settings(&settings.llm);
    let total = selected.len();
    let mut reports = Vec::with_capacity(total);
    for (i, project) in selected.into_iter().enumerate() {
        let span = tracing::info_span!("project", pm_project = %project.name);
        let _enter = span.enter();
        if opts.progress {
            eprint!("[{}/{total}] {}: ", i + 1, project.name);
            let _ = std::io::stderr().flush();
        }
        let start = Instant::now();
        let outcome = match summarize_one(settings, &mut store, provider.as_ref(), project, opts) {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(
                    message_id = message_id::SUMMARY,
                    pm_event = "summary",
                    pm_outcome = "failed",
                    "{e:#}"
                );
                Outcome::Failed(e)
            }
        };
        let report = Report {
            project: project.name.clone(),
            outcome,
            elapsed: start.elapsed(),
        };
        if opts.progress {
            eprintln!("{}", report.line());
        }
        reports.push(report);
    }
    Ok(reports)
}

/// True when progress lines make sense (a person is watching).
pub fn interactive() -> bool {
    std::io::stderr().is_terminal()
}

fn salt(settings: &Settings, provider: &dyn Provider, project: &ProjectSettings) -> String {
    let check = project
        .check
        .as_ref()
        .map(|c| c.command.as_str())
        .unwrap_or("");
    // The offline digest includes the check's result, so the check command
    // is part of what a summary depends on.
    format!(
        "provider={} model={} prompt=v{PROMPT_VERSION} check={check} llm-args={:?}",
        provider.name(),
        provider.model(),
        if settings.llm.provider == ProviderKind::Codex {
            &settings.llm.args[..]
        } else {
            &[]
        },
    )
}

/// The store, opened on first use: a run where every project is unchanged
/// never opens it.
struct LazyStore<'a> {
    cache: &'a crate::config::CacheSettings,
    store: Option<Store>,
}

impl LazyStore<'_> {
    fn get(&mut self) -> anyhow::Result<&Store> {
        if self.store.is_none() {
            self.store = Some(Store::open(self.cache)?);
        }
        Ok(self.store.as_ref().expect("opened above"))
    }
}

fn hint_path(cache: &crate::config::CacheSettings, project: &str) -> PathBuf {
    cache.path.join("fingerprints").join(project)
}

/// Record the fingerprint of the stored summary beside the store. Not
/// synced: after a crash a missing or empty hint only means the store is
/// opened once more.
fn write_hint(cache: &crate::config::CacheSettings, project: &str, fingerprint: &str) {
    let path = hint_path(cache, project);
    if fs::read_to_string(&path).is_ok_and(|h| h == fingerprint) {
        return;
    }
    let tmp = path.with_file_name(format!(".{project}.tmp"));
    let result = fs::create_dir_all(path.parent().expect("under the store"))
        .and_then(|()| fs::write(&tmp, fingerprint))
        .and_then(|()| fs::rename(&tmp, &path));
    if let Err(e) = result {
        tracing::debug!("cannot write the fingerprint hint {}: {e}", path.display());
    }
}

fn summarize_one(
    settings: &Settings,
    store: &mut LazyStore<'_>,
    provider: &dyn Provider,
    project: &ProjectSettings,
    opts: &Options,
) -> anyhow::Result<Outcome> {
    if !project.path.is_dir() {
        if opts.only.contains(&project.name) {
            bail!(
                "the project directory {} does not exist",
                project.path.display()
            );
        }
        tracing::warn!(
            pm_event = "summary",
            pm_outcome = "skipped",
            "{} does not exist (yet); skipped",
            project.path.display()
        );
        return Ok(Outcome::Skipped(format!(
            "{} does not exist",
            project.path.display()
        )));
    }
    let _lock = lock_project(&settings.cache.path, &project.name, LOCK_WAIT)?;
    let repo = git::open(&project.path)?;
    let exclude: Vec<&Path> = project.summary_file.iter().map(PathBuf::as_path).collect();
    let fp = git::fingerprint(&repo, &exclude, &salt(settings, provider, project))?;
    drop(repo);

    let summary_present = project
        .summary_file
        .as_ref()
        .is_none_or(|f| project.path.join(f).exists());
    if !opts.force && summary_present {
        let hint =
            fs::read_to_string(hint_path(&settings.cache, &project.name)).unwrap_or_default();
        if hint == fp.value {
            tracing::debug!(
                pm_event = "summary",
                pm_outcome = "unchanged",
                "unchanged since the last summary"
            );
            return Ok(Outcome::Unchanged);
        }
    }
    let store = store.get()?;
    let previous = store.project(&project.name)?;
    let unchanged = previous.as_ref().is_some_and(|p| {
        p.fingerprint.as_deref() == Some(fp.value.as_str()) && p.last_summary.is_some()
    });
    if unchanged && !opts.force {
        let prev = previous.as_ref().expect("checked above");
        if let Some(file) = &project.summary_file
            && !project.path.join(file).exists()
        {
            // The user (or a `git clean`) removed the file: put it back
            // from the store, no provider call needed.
            let key = prev.last_summary.as_deref().unwrap_or_default();
            if let Some(summary) = store.summary(key)? {
                write_summary_file(&project.path, file, &render_file(&summary))?;
                tracing::info!(
                    message_id = message_id::SUMMARY,
                    pm_event = "summary",
                    pm_outcome = "restored",
                    pm_id = key,
                    "{} was missing; restored from the store",
                    file.display()
                );
                write_hint(&settings.cache, &project.name, &fp.value);
                return Ok(Outcome::Restored);
            }
        }
        // The store knew, the hint did not (first run of this version, or a
        // crash before the hint was written): mend it.
        write_hint(&settings.cache, &project.name, &fp.value);
        tracing::debug!(
            pm_event = "summary",
            pm_outcome = "unchanged",
            "unchanged since the last summary"
        );
        return Ok(Outcome::Unchanged);
    }

    if opts.progress {
        eprint!("asking {}... ", provider.name());
        let _ = std::io::stderr().flush();
    }
    let prompt = build_prompt(settings.llm.provider, &project.path, &exclude)?;
    let req = Request {
        purpose: Purpose::Summary,
        prompt: &prompt,
        workdir: &project.path,
        check: project.check.as_ref(),
        exclude: &exclude,
        schema: None,
        sandbox: None,
    };
    let start = Instant::now();
    let mut record = previous
        .unwrap_or_else(|| ProjectRecord::new(&project.name, &project.path.to_string_lossy()));
    record.path = project.path.to_string_lossy().into_owned();
    record.last_run_ms = time::now_ms();
    let answer = match metered::call(provider, store, &project.name, &settings.llm, &req) {
        Ok(a) => a,
        Err(e) => {
            let llm_err = e.downcast_ref::<LlmError>();
            record.last_outcome = llm_err
                .map(LlmError::outcome)
                .unwrap_or("failed")
                .to_string();
            record.last_error = Some(format!("{e:#}"));
            // Keep the old fingerprint: the next run tries again.
            if let Err(store_err) = store.save_project(&record) {
                tracing::warn!("cannot record the failure in the store: {store_err:#}");
            }
            if let Some(LlmError::BudgetExhausted { .. }) = llm_err {
                tracing::warn!(pm_event = "summary", pm_outcome = "over_budget", "{e}");
            }
            return Err(e);
        }
    };
    let text = answer.text.trim();
    if text.is_empty() {
        return Err(LlmError::Invalid {
            provider: provider.name(),
            detail: "the answer is empty".into(),
        }
        .into());
    }
    let summary = SummaryRecord {
        v: RECORD_VERSION,
        project: project.name.clone(),
        created_ms: time::now_ms(),
        commit: fp.head.clone(),
        branch: fp.branch.clone(),
        dirty: fp.dirty,
        fingerprint: fp.value.clone(),
        provider: provider.name().to_string(),
        model: provider.model().to_string(),
        text: text.to_string(),
        duration_ms: start.elapsed().as_millis() as u64,
        usage: answer.usage,
        file: project
            .summary_file
            .as_ref()
            .map(|f| f.to_string_lossy().into_owned()),
        sandbox_error: answer.sandbox_error.clone(),
    };
    // File first, then the store: a crash in between costs one more call
    // on the next run, never a stored summary without its file.
    if let Some(file) = &project.summary_file {
        write_summary_file(&project.path, file, &render_file(&summary))?;
    }
    let blind = summary.sandbox_error.as_deref().map(blind_warning);
    match &blind {
        None => {
            record.fingerprint = Some(fp.value);
            record.last_outcome = "summarized".into();
            record.last_error = None;
        }
        Some(warning) => {
            // Better than nothing, but not what the user asked for: no
            // fingerprint, so the next run asks again (once the sandbox
            // works, the summary is real).
            record.fingerprint = None;
            record.last_outcome = "summarized_blind".into();
            record.last_error = Some(warning.clone());
        }
    }
    let key = store.save_summary(&record, &summary)?;
    if let Some(warning) = &blind {
        tracing::warn!(
            message_id = message_id::CODEX_SANDBOX,
            pm_event = "codex_sandbox",
            pm_outcome = "blind",
            pm_id = %key,
            pm_provider = provider.name(),
            "{warning}"
        );
    } else {
        write_hint(&settings.cache, &project.name, &summary.fingerprint);
    }
    tracing::info!(
        message_id = message_id::SUMMARY,
        pm_event = "summary",
        pm_outcome = if blind.is_some() { "blind" } else { "summarized" },
        pm_id = %key,
        pm_provider = provider.name(),
        pm_tokens = answer.usage.total(),
        "summary written{} ({} tokens, {} ms){}",
        project.summary_file.as_ref().map(|f| format!(" to {}", f.display())).unwrap_or_default(),
        answer.usage.total(),
        summary.duration_ms,
        if blind.is_some() { ", without reading the project" } else { "" }
    );
    Ok(Outcome::Summarized {
        key,
        tokens: answer.usage.total(),
        warning: blind,
    })
}

/// What a summary made while codex's sandbox failed means for the user.
fn blind_warning(sandbox_error: &str) -> String {
    format!(
        "the summary was written without reading the project: the model's commands failed in \
         codex's sandbox ({sandbox_error}); it is asked again at the next run. {}",
        llm::codex::sandbox::explain(
            Some(sandbox_error),
            llm::codex::sandbox::current_unit().as_deref()
        )
    )
}

fn build_prompt(kind: ProviderKind, workdir: &Path, exclude: &[&Path]) -> anyhow::Result<String> {
    let mut prompt = INSTRUCTIONS.to_string();
    if kind == ProviderKind::OpenAi {
        // This provider cannot look at the files: send what matters.
        let context = llm::offline::context(workdir, exclude, CONTEXT_BYTES)?;
        prompt.push_str("\n\n# Repository context\n\n");
        prompt.push_str(&context);
    }
    Ok(prompt)
}

/// The summary file: a one-line header (tool, provider, date, commit) then
/// the text. The header is an HTML comment: invisible when rendered.
pub fn render_file(s: &SummaryRecord) -> String {
    let commit = match (&s.commit, &s.branch) {
        (Some(c), Some(b)) => format!("commit {} on {b}", &c[..c.len().min(12)]),
        (Some(c), None) => format!("commit {}", &c[..c.len().min(12)]),
        (None, _) => "no commit yet".to_string(),
    };
    let model = if s.model.is_empty() {
        String::new()
    } else {
        format!(", model {}", s.model)
    };
    // Visible, unlike the header: whoever reads the summary must know.
    let note = match &s.sandbox_error {
        Some(e) => format!(
            "> **Warning:** written without reading the project: the model's commands failed in \
             codex's sandbox (`{}`). See `pimainteno status`.\n\n",
            e.replace('`', "'")
        ),
        None => String::new(),
    };
    format!(
        "<!-- Written by PiMainteno {} (provider {}{model}) on {} from {commit}{}. Regenerated when the project changes; edits here are overwritten. -->\n\n{note}{}\n",
        env!("CARGO_PKG_VERSION"),
        s.provider,
        time::rfc3339(s.created_ms),
        if s.dirty {
            " with uncommitted changes"
        } else {
            ""
        },
        s.text.trim_end()
    )
}

/// Replace `<root>/<rel>` atomically: write a temporary file beside it,
/// fsync, rename over, fsync the directory. Readers see the old or the new
/// file, never half of one; a crash leaves at most a stray `.pm-tmp` file.
/// Only inside the project: a directory on the way that is a symbolic link
/// leading out of it, or a summary file that is a link, is refused (the
/// project's content is not ours to trust, and pm-summarize may run as
/// another account than its owner).
pub fn write_summary_file(root: &Path, rel: &Path, contents: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = root.join(rel);
    let dir = inside_dir(root, rel)
        .with_context(|| format!("cannot write the summary to {}", path.display()))?;
    let name = rel.file_name().context("summary file without a name")?;
    let target = dir.join(name);
    let meta = match fs::symlink_metadata(&target) {
        Ok(m) if m.file_type().is_symlink() => bail!(
            "cannot write the summary to {}: it is a symbolic link; the summary is written \
             only inside the project (remove the link)",
            path.display()
        ),
        Ok(m) => Some(m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot write the summary to {}", path.display()));
        }
    };
    let tmp = dir.join(format!(
        ".{}.pm-tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        // A stale one (a crash, a planted link) goes; then a new file of
        // our own, never through a link.
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(contents.as_bytes())?;
        // Keep the permissions of the file being replaced.
        if let Some(meta) = &meta {
            f.set_permissions(fs::Permissions::from_mode(meta.permissions().mode()))?;
        }
        f.sync_all()?;
        fs::rename(&tmp, &target)?;
        fs::File::open(&dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write the summary to {}", path.display()));
    }
    Ok(())
}

/// The directory of `<root>/<rel>`, made where missing, as a canonical
/// path checked to be inside the canonical `root`: each existing component
/// is looked at before anything is created beneath it, so that no
/// directory is made through a link that leads out.
fn inside_dir(root: &Path, rel: &Path) -> anyhow::Result<PathBuf> {
    let top = fs::canonicalize(root).with_context(|| format!("cannot open {}", root.display()))?;
    let outside = |p: &Path| {
        anyhow::anyhow!(
            "{} leads outside the project {} (a symbolic link); the summary is written only \
             inside the project",
            p.display(),
            top.display()
        )
    };
    let mut dir = top.clone();
    let parent = rel.parent().unwrap_or(Path::new(""));
    for c in parent.components() {
        let std::path::Component::Normal(c) = c else {
            bail!("{}: not a plain relative path", rel.display());
        };
        let next = dir.join(c);
        match fs::symlink_metadata(&next) {
            Ok(m) if m.file_type().is_symlink() => {
                let real = fs::canonicalize(&next)
                    .with_context(|| format!("{} is a broken link", next.display()))?;
                if !real.starts_with(&top) {
                    return Err(outside(&next));
                }
                dir = real;
            }
            Ok(_) => dir = next,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir(&next)
                    .with_context(|| format!("cannot create {}", next.display()))?;
                dir = next;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", next.display())),
        }
    }
    // Again as a whole, the links just followed included.
    let real = fs::canonicalize(&dir).with_context(|| format!("cannot open {}", dir.display()))?;
    if !real.starts_with(&top) {
        return Err(outside(&dir));
    }
    if !real.is_dir() {
        bail!("{} is not a directory", real.display());
    }
    Ok(real)
}
