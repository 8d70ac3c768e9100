//! A failure's signature: what stays the same when the same failure
//! happens again. The unit, its result and exit status, and its error
//! lines with times, PIDs, addresses, hex ids and numbers replaced by `#`.
//! The same signature within [`WINDOW`] reuses the stored diagnosis
//! instead of asking the LLM again.

use std::time::Duration;

use super::evidence::{Excerpt, Monitor};
use crate::text::{Fnv, normalize};

/// How long a stored diagnosis answers for an identical failure.
pub const WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);
/// Error lines that go into a signature (the last ones).
const MAX_LINES: usize = 20;

/// Words that make a line an error line even at info priority (most
/// programs write errors to stderr, which journald stores at info).
const ERROR_WORDS: [&str; 16] = [
    "error",
    "fail",
    "fatal",
    "panic",
    "exception",
    "traceback",
    "denied",
    "refused",
    "no such",
    "cannot",
    "can't",
    "unable",
    "not found",
    "in use",
    "no space",
    "killed",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// `<unit>:<16 hex digits>`, the key in the `signatures` database.
    pub key: String,
    /// The normalised error lines it was made from.
    pub lines: Vec<String>,
}

/// Whether a line of the unit's own output reports an error.
pub fn is_error_line(message: &str, priority: Option<u8>) -> bool {
    if priority.is_some_and(|p| p <= 3) {
        return true;
    }
    let lower = message.to_ascii_lowercase();
    ERROR_WORDS.iter().any(|w| lower.contains(w))
}

/// The signature of a failure.
pub fn of(monitor: &Monitor, excerpt: &Excerpt) -> Signature {
    let own: Vec<_> = excerpt.lines.iter().filter(|l| !l.from_manager).collect();
    let mut errors: Vec<String> = own
        .iter()
        .filter(|l| is_error_line(&l.message, l.priority))
        .map(|l| normalize(&l.message))
        .collect();
    if errors.is_empty() {
        // No line says "error": the last words of the run stand for it.
        errors = own
            .iter()
            .rev()
            .take(3)
            .rev()
            .map(|l| normalize(&l.message))
            .collect();
    }
    errors.dedup();
    let skip = errors.len().saturating_sub(MAX_LINES);
    let lines: Vec<String> = errors.into_iter().skip(skip).collect();
    let mut h = Fnv::new();
    for part in [
        monitor.unit.as_str(),
        monitor.result.as_str(),
        monitor.exit_status.as_deref().unwrap_or(""),
    ] {
        h.write(part.as_bytes());
        h.write(b"\0");
    }
    for l in &lines {
        h.write(l.as_bytes());
        h.write(b"\n");
    }
    Signature {
        key: format!("{}:{:016x}", monitor.unit, h.0),
        lines,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onfailure::evidence::JournalLine;

    fn excerpt(lines: &[&str]) -> Excerpt {
        Excerpt {
            lines: lines
                .iter()
                .enumerate()
                .map(|(i, m)| JournalLine {
                    time_us: i as u64,
                    pid: Some(100 + i as u32),
                    ident: "weather".into(),
                    message: m.to_string(),
                    priority: None,
                    from_manager: false,
                    exe: None,
                })
                .collect(),
            truncated: false,
        }
    }

    fn monitor(status: &str) -> Monitor {
        Monitor {
            unit: "weather.service".into(),
            result: "exit-code".into(),
            exit_code: Some("exited".into()),
            exit_status: Some(status.into()),
            invocation_id: Some("abc".into()),
        }
    }

    #[test]
    fn variable_parts_are_normalised() {
        assert_eq!(
            normalize(
                "2026-11-27T07:21:37.123Z worker 4711 error: connect 127.0.0.1:5432 failed (id 0x7f3a9c, req 9f86d081884c7d65)"
            ),
            "# worker # error: connect # failed (id #, req #)"
        );
        assert_eq!(
            normalize("thread 'main' panicked at src/main.rs:14:9:"),
            "thread 'main' panicked at src/main.rs:14:9:"
        );
    }

    #[test]
    fn the_same_failure_with_other_pids_and_times_is_one_signature() {
        let a = of(
            &monitor("3"),
            &excerpt(&[
                "starting at 07:21:37",
                "error: cannot connect to 10.0.0.5:8080 (pid 1234)",
            ]),
        );
        let b = of(
            &monitor("3"),
            &excerpt(&[
                "starting at 09:02:11",
                "error: cannot connect to 10.0.0.7:8080 (pid 98)",
            ]),
        );
        assert_eq!(a, b);
        assert!(a.key.starts_with("weather.service:"));
    }

    #[test]
    fn a_different_error_or_status_is_another_signature() {
        let a = of(&monitor("3"), &excerpt(&["error: cannot connect to db"]));
        let b = of(&monitor("3"), &excerpt(&["error: config file missing"]));
        let c = of(&monitor("1"), &excerpt(&["error: cannot connect to db"]));
        assert_ne!(a.key, b.key);
        assert_ne!(a.key, c.key);
    }

    #[test]
    fn without_error_words_the_last_lines_count() {
        let s = of(&monitor("3"), &excerpt(&["a", "b", "c", "d"]));
        assert_eq!(s.lines, ["b", "c", "d"]);
    }
}
