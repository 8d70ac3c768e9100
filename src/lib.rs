//! PiMainteno: a self-healing maintenance agent for a Raspberry Pi.
//!
//! There is no daemon. systemd starts small binaries (`src/bin/`) that parse
//! their arguments, load the configuration and call one entry point here.
//! See `ARCHITECTURE.md` for the map and its invariants.

#![deny(unused_must_use)]
#![deny(clippy::dbg_macro)]

/// The `pimainteno` administration commands.
pub mod admin;
/// Cron and systemd calendar expressions: validation and conversion.
pub mod calendar;
/// The project's `check` command: run with a timeout, output kept short.
pub mod check;
/// Command lines of every binary (clap), shared with man pages.
pub mod cli;
/// Configuration: raw fragments, merge, validation into typed settings.
pub mod config;
/// pm-dashboard: the socket-activated web dashboard, JSON API and metrics.
pub mod dashboard;
/// Exit codes (sysexits) and the mapping from errors to them.
pub mod exit;
/// pimainteno-system-generator: configuration → unit drop-ins.
pub mod generator;
/// Repository facts through git2: opening with clear errors, the fingerprint.
pub mod git;
/// LLM providers (codex CLI, OpenAI-compatible HTTP, offline) behind one trait.
pub mod llm;
/// Per-project exclusive locks (fs2) shared by every binary.
pub mod lock;
/// tracing set-up: journald when started by systemd, stderr otherwise.
pub mod logging;
/// pm-onfailure: diagnose and repair a failed unit (OnFailure=).
pub mod onfailure;
/// pm-patch: LLM fixes in a worktree, proven by the check, on a branch.
pub mod patch;
/// Child processes in their own process group, with a wall-clock timeout.
pub mod process;
/// Containment of unattended commands: bubblewrap namespaces, then Landlock.
pub mod sandbox;
/// The LMDB store (heed): projects, summaries, LLM calls and more.
pub mod store;
/// pm-summarize: fingerprint, ask the provider, write the summary.
pub mod summarize;
/// Which tests a check's output names, how each ended, and before/after verdicts.
pub mod testrun;
/// Text shared by capabilities: normalised log lines, a stable hash.
pub mod text;
/// Small time helpers (UTC dates without a date crate).
pub mod time;
