//! Logging set-up shared by every binary.
//!
//! Started by systemd (`$INVOCATION_ID` or `$JOURNAL_STREAM` set), events go
//! to journald natively, so the structured fields of DESIGN.md §7
//! (`PM_PROJECT`, `PM_UNIT`, `PM_EVENT`, `PM_OUTCOME`, `PM_ID`, `MESSAGE_ID`)
//! arrive as real journal fields: `journalctl PM_PROJECT=weather` works.
//! Otherwise they go to stderr as plain lines, `weather: summary written`,
//! without timestamps or fields (a person reads them; `-v` adds the fields).
//!
//! Convention: work on one project runs inside a `project` span carrying
//! `pm_project`; tracing-journald copies span fields onto every event, and
//! with the field prefix disabled they keep their names.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// Stable `MESSAGE_ID`s (128-bit, as journald wants), one per kind of event,
/// so that `journalctl MESSAGE_ID=...` finds every event of a kind.
pub mod message_id {
    pub const SUMMARY: &str = "3c1f6a2e9b7d4c58a0e4d2b6f1a9c7e3";
    pub const LLM_CALL: &str = "8d2b4e6f1a3c4b7d9e0f2a4c6b8d0e1f";
    pub const PATCH: &str = "5a7c9e1b3d5f4a6c8e0b2d4f6a8c0e2b";
    /// One LLM attempt of a pm-patch run (its outcome, its check).
    pub const PATCH_ATTEMPT: &str = "c83e1f0a6b2d4e97a5f1d3b7e9c20a64";
    pub const FAILURE: &str = "e4a6c8e0b2d44f6a8c0e2b4d6f8a0c2e";
    pub const REPAIR: &str = "b1d3f5a7c9e14b3d5f7a9c1e3b5d7f9a";
    /// pm-onfailure's diagnosis of a failure (analyzer, cache or LLM).
    pub const DIAGNOSIS: &str = "7e2c54a1d9b04f3e8a61c0d2b5f9e413";
    /// codex's sandbox cannot start, or a model's command failed in it.
    pub const CODEX_SANDBOX: &str = "f20f415e6fb1426f86a106401b368927";
}

/// `-v`/`-q` counts → a level: info by default.
pub fn level(verbose: u8, quiet: u8) -> LevelFilter {
    match verbose as i16 - quiet as i16 {
        i16::MIN..=-2 => LevelFilter::ERROR,
        -1 => LevelFilter::WARN,
        0 => LevelFilter::INFO,
        1 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

/// True when systemd started us with our output going to the journal.
pub fn under_systemd() -> bool {
    std::env::var_os("INVOCATION_ID").is_some() || std::env::var_os("JOURNAL_STREAM").is_some()
}

/// Install the global subscriber. Safe to call once per process; a second
/// call (tests) is ignored.
pub fn init(verbose: u8, quiet: u8) {
    let level = level(verbose, quiet);
    // Only our own crate at debug/trace: dependencies (hyper, rustls) stay at warn.
    let filter = tracing_subscriber::filter::Targets::new()
        .with_default(LevelFilter::WARN.min(level))
        .with_target("pimainteno", level)
        .with_target("pm_summarize", level);
    if under_systemd()
        && let Ok(journald) = tracing_journald::layer()
    {
        let journald = journald
            .with_field_prefix(None)
            .with_syslog_identifier("pimainteno".to_string());
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(journald)
            .try_init();
        return;
    }
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .event_format(Plain {
            fields: level >= LevelFilter::DEBUG,
        });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init();
}

/// stderr lines for people: `[level: ]project: message`, fields only at
/// debug level and below.
struct Plain {
    fields: bool,
}

impl<S, N> FormatEvent<S, N> for Plain
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        match *event.metadata().level() {
            Level::ERROR => w.write_str("error: ")?,
            Level::WARN => w.write_str("warning: ")?,
            Level::INFO => {}
            Level::DEBUG => w.write_str("debug: ")?,
            Level::TRACE => w.write_str("trace: ")?,
        }
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                if let Some(f) = ext.get::<FormattedFields<N>>() {
                    let project = f.fields.strip_prefix("pm_project=").unwrap_or(&f.fields);
                    write!(w, "{project}: ")?;
                }
            }
        }
        let mut message = MessageOnly::default();
        event.record(&mut message);
        w.write_str(&message.message)?;
        if self.fields && !message.others.is_empty() {
            write!(w, " [{}]", message.others.join(" "))?;
        }
        writeln!(w)
    }
}

/// Splits an event into its message and its other fields.
#[derive(Default)]
struct MessageOnly {
    message: String,
    others: Vec<String>,
}

impl tracing::field::Visit for MessageOnly {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.others.push(format!("{}={value:?}", field.name()));
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.others.push(format!("{}={value}", field.name()));
        }
    }
}
