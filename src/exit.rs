//! Exit codes, from sysexits.h (a contract: scripts and systemd rely on them).
//!
//! Errors travel as `anyhow::Error`; the binaries map them to a code by
//! looking for a typed cause in the chain ([`code_for`]).

use std::fmt;

/// What a process tells its caller. Ordered by severity for "worst outcome"
/// reporting when several projects ran: `Ok < NoFix < Temporary <
/// Unavailable < Failed`. A bad configuration stops everything before any
/// project runs.
///
/// Only PiMainteno's own faults are non-zero in the units: a failing check,
/// a fix refused or not passing, a repair not allowed are outcomes (in the
/// store, `status`, the dashboard, `/metrics`) and end with [`Exit::Ok`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Exit {
    /// Done, or nothing to do; also a run whose outcome is "no fix".
    Ok,
    /// `pm-patch --task` (typed by a person; no unit passes a task): the
    /// task got no change that passed the check, or it was refused. An
    /// outcome, not a fault, but the shell's `&&` should not go on.
    NoFix,
    /// Try again later: lock held, token budget exhausted (EX_TEMPFAIL).
    Temporary,
    /// The LLM could not be reached or timed out (EX_UNAVAILABLE).
    Unavailable,
    /// The work itself failed.
    Failed,
    /// The configuration is invalid (EX_CONFIG).
    Config,
}

impl Exit {
    pub const fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Failed => 1,
            Exit::NoFix => 3,
            Exit::Unavailable => 69,
            Exit::Temporary => 75,
            Exit::Config => 78,
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}

/// An error that carries its own exit code. Anything else in the chain
/// is classified by [`code_for`].
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Coded {
    pub exit: Exit,
    pub message: String,
}

impl Coded {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Coded {
            exit,
            message: message.into(),
        }
    }
}

/// The exit code for an error: the first typed cause in its chain decides.
pub fn code_for(err: &anyhow::Error) -> Exit {
    // anyhow's own downcast also finds a Coded added as a context.
    if let Some(c) = err.downcast_ref::<Coded>() {
        return c.exit;
    }
    for cause in err.chain() {
        if let Some(c) = cause.downcast_ref::<Coded>() {
            return c.exit;
        }
        if cause
            .downcast_ref::<crate::config::ConfigErrors>()
            .is_some()
        {
            return Exit::Config;
        }
        if let Some(e) = cause.downcast_ref::<crate::llm::LlmError>() {
            return e.exit();
        }
        if cause.downcast_ref::<crate::lock::LockHeld>().is_some() {
            return Exit::Temporary;
        }
    }
    Exit::Failed
}

/// Print an error chain the way a user reads it: `error: top` then one
/// `  caused by: ...` per cause. Used by every binary. A message may quote
/// outside text (a unit name from the journal, a server's reply): its
/// control characters are shown, never sent to the terminal, and the lines
/// after its first are indented, so that no quoted text starts a line.
pub fn report(err: &anyhow::Error) {
    let shown = |e: &dyn fmt::Display, indent: &str| {
        crate::text::printable(&e.to_string()).replace('\n', &format!("\n{indent}"))
    };
    if let Some(all) = err.downcast_ref::<crate::config::ConfigErrors>() {
        // One line per problem, each a place to go and fix.
        for e in &all.0 {
            eprintln!("error: {}", shown(e, "  "));
        }
        return;
    }
    eprintln!("error: {}", shown(err, "  "));
    for cause in err.chain().skip(1) {
        eprintln!("  caused by: {}", shown(cause, "    "));
    }
}
