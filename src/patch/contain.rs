//! What pm-patch contains and how: the project's check (which runs code
//! the model wrote) goes through [`crate::sandbox`] with a policy made
//! from the settings and the worktree. It may write the worktree and a
//! private /tmp only; it cannot read the home (toolchains and the
//! project's `check_readable` aside), the store, the state and runtime
//! directories (other projects' worktrees), the configuration or the LLM
//! key; it has no network unless the project's `check_network`.
//!
//! Where nothing can contain it (no bubblewrap, no user namespaces), no
//! model code runs, unless `[patch] unsandboxed_check = true` says so on
//! purpose.

use std::path::PathBuf;

use crate::config::{ProjectSettings, Settings};
use crate::sandbox::{self, Capabilities, Contained, Policy};

use super::worktree::Worktree;

/// How this run contains the model's code.
pub struct Containment {
    /// `None`: no containment, on purpose (`unsandboxed_check`).
    caps: Option<Capabilities>,
    landlock: bool,
}

impl Containment {
    /// Probe this machine once. `Err` says why the model's code cannot be
    /// contained and what to do, when `unsandboxed_check` is not set.
    pub fn probe(settings: &Settings) -> Result<Containment, String> {
        let caps = sandbox::probe();
        match caps.missing() {
            None => Ok(Containment {
                caps: Some(caps),
                landlock: settings.patch.landlock,
            }),
            Some(why) if settings.patch.unsandboxed_check => {
                tracing::warn!(
                    "the model's code runs WITHOUT containment ([patch] unsandboxed_check = \
                     true): {why}"
                );
                Ok(Containment {
                    caps: None,
                    landlock: false,
                })
            }
            Some(why) => Err(format!(
                "pm-patch runs no code of the model here: nothing can contain it ({why}); \
                 set [patch] unsandboxed_check = true to run it anyway, as the service's account"
            )),
        }
    }

    /// One line: what protects the user from the check of `project`.
    pub fn describe(&self, project: &ProjectSettings) -> String {
        match &self.caps {
            Some(c) => c.describe(project.check_network, self.landlock),
            None => "NONE ([patch] unsandboxed_check = true): the check runs as the account".into(),
        }
    }

    /// The policy for `project`'s check in `wt`; `None` when unsandboxed.
    pub fn for_check(
        &self,
        settings: &Settings,
        project: &ProjectSettings,
        wt: &Worktree,
    ) -> Option<Contained<'_>> {
        let caps = self.caps.as_ref()?;
        let home = crate::config::validate::home_dir();
        let mut policy = Policy::new(&wt.path, home.as_deref());
        policy.network = project.check_network;
        policy.landlock = self.landlock;
        // git works in the worktree: its own git directory and the
        // objects it borrows, read-only.
        policy.readable.push(wt.gitdir.clone());
        policy.readable.push(wt.user_objects.clone());
        policy
            .readable
            .extend(project.check_readable.iter().cloned());
        policy.hidden = hidden(settings);
        Some(Contained { policy, caps })
    }

    /// The policy for codex making a patch in `wt` (its commands are the
    /// model's; codex runs them in its own bubblewrap sandbox inside this
    /// one): it may write the worktree and its CODEX_HOME, reach the
    /// network (the model; codex's sandbox keeps its commands off it),
    /// make namespaces of its own, and read its program's files. No
    /// Landlock: it would forbid codex's own sandbox its mounts. `None`
    /// when unsandboxed.
    pub fn for_codex(
        &self,
        settings: &Settings,
        project: &ProjectSettings,
        wt: &Worktree,
    ) -> Option<Contained<'_>> {
        let mut c = self.for_check(settings, project, wt)?;
        c.policy.network = true;
        c.policy.landlock = false;
        c.policy.nested_namespaces = true;
        c.policy.writable.push(settings.llm.codex_home.clone());
        c.policy
            .readable
            .extend(program_dirs(&settings.llm.command));
        Some(c)
    }
}

/// The files a program needs when it lies under a hidden directory (codex
/// installed with npm under the home): the directory of the program as
/// found on PATH and two levels above its real path (an npm package's
/// `bin/` and vendored binaries), and node's when codex's launcher is it.
fn program_dirs(command: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let path = std::env::var_os("PATH").unwrap_or_default();
    for program in [command, "node"] {
        let Some(found) = crate::process::which(program, &path) else {
            continue;
        };
        if let Some(dir) = found.parent() {
            out.push(dir.to_path_buf());
        }
        if let Ok(real) = std::fs::canonicalize(&found)
            && let Some(pkg) = real.parent().and_then(|p| p.parent())
        {
            out.push(pkg.to_path_buf());
        }
    }
    out
}

/// What the model's code must not read: the state directory (the store,
/// locks, other projects' worktrees), the runtime directories of our
/// units, the configuration and the LLM key (systemd credentials are
/// always hidden by the sandbox).
fn hidden(settings: &Settings) -> Vec<PathBuf> {
    let mut out = vec![
        settings.cache.path.clone(),
        PathBuf::from("/run/pimainteno"),
    ];
    if let Some(state) = settings.cache.path.parent() {
        out.push(state.to_path_buf());
    }
    out.extend(settings.files.iter().cloned());
    out.extend(settings.llm.api_key_file.iter().cloned());
    out.push(settings.web.password_file.clone());
    out
}
