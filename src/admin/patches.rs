//! pm-patch's runs in `pimainteno history PROJECT`: each with its
//! attempts, and the diff (made with `similar` when it was recorded),
//! coloured on a terminal. The diff, the check's output, the paths and
//! the notes are the model's or the project's text: each line is shown
//! with its control characters made visible, and colour comes only from
//! here.

use std::io::Write;

use crate::store::{PatchRecord, Store};
use crate::text::{self, DiffLine, printable_line as shown};
use crate::time;

const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";
const CYAN: &str = "\x1b[36m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

/// Write a diff, indented, coloured when `color`. Line by line: a line
/// break is the diff's own, anything else (a CR, an escape) is shown.
pub fn write_diff(out: &mut impl Write, diff: &str, color: bool) -> std::io::Result<()> {
    for line in diff.lines() {
        let line = shown(line);
        let paint = match (color, text::diff_line(&line)) {
            (false, _) | (true, DiffLine::Context) => "",
            (true, DiffLine::File) => BOLD,
            (true, DiffLine::Added) => GREEN,
            (true, DiffLine::Removed) => RED,
            (true, DiffLine::Hunk) => CYAN,
        };
        if paint.is_empty() {
            writeln!(out, "      {line}")?;
        } else {
            writeln!(out, "      {paint}{line}{RESET}")?;
        }
    }
    Ok(())
}

/// The first 12 characters of a commit id (a record's text may be anything).
fn short(id: &str) -> &str {
    id.char_indices().nth(12).map_or(id, |(i, _)| &id[..i])
}

fn summary(key: &str, p: &PatchRecord) -> String {
    format!(
        "  {}  patch    {}  {} ({})  base {}  {} tokens  [{}]",
        time::rfc3339(p.time_ms),
        shown(&p.outcome),
        shown(&p.reason),
        shown(&p.trigger),
        shown(short(&p.base)),
        p.tokens,
        shown(key)
    )
}

pub fn history(
    out: &mut impl Write,
    store: &Store,
    project: &str,
    limit: usize,
    color: bool,
) -> anyhow::Result<()> {
    for (key, p) in store.patches(project, limit)? {
        writeln!(out, "{}", summary(&key, &p))?;
        if !p.branch.is_empty() {
            writeln!(
                out,
                "    branch: {}{}",
                shown(&p.branch),
                p.commit
                    .as_deref()
                    .map(|c| format!(" (commit {})", shown(short(c))))
                    .unwrap_or_default()
            )?;
        }
        if let Some(note) = &p.note {
            writeln!(out, "    note: {}", shown(note))?;
        }
        for a in &p.attempts {
            writeln!(
                out,
                "    attempt {}: {}{}{}",
                a.n,
                shown(&a.outcome),
                a.check
                    .as_ref()
                    .map(|c| format!(", check {}", shown(&c.verdict())))
                    .unwrap_or_default(),
                a.detail
                    .as_deref()
                    .map(|d| format!(": {}", shown(d)))
                    .unwrap_or_default()
            )?;
            if let Some(t) = &a.tests {
                writeln!(out, "      tests: {}", shown(t))?;
            }
            if !a.left_by_check.is_empty() {
                const SHOWN: usize = 8;
                writeln!(
                    out,
                    "      left by the check (not committed): {}{}",
                    a.left_by_check
                        .iter()
                        .take(SHOWN)
                        .map(|p| shown(p))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if a.left_by_check.len() > SHOWN {
                        format!(" and {} more", a.left_by_check.len() - SHOWN)
                    } else {
                        String::new()
                    }
                )?;
            }
        }
        // The diff that passed, else the last one tried.
        if let Some(a) = p
            .attempts
            .iter()
            .rev()
            .find(|a| a.outcome == "passed")
            .or_else(|| p.attempts.iter().rev().find(|a| !a.diff.is_empty()))
        {
            write_diff(out, &a.diff, color)?;
            if let Some(c) = a.check.as_ref().filter(|c| !c.passed) {
                writeln!(out, "    check output (the end):")?;
                for line in c.output_tail.lines() {
                    writeln!(out, "      | {}", shown(line))?;
                }
            }
        }
    }
    Ok(())
}

/// One line of untrusted text (a reason from a journal or a model, a
/// note naming the model's paths) for a terminal.
fn one_line(s: &str, max: usize) -> String {
    text::shorten(&text::printable(s).replace(['\n', '\t'], " "), max)
}

/// `pimainteno status`, per project: the check at the HEAD pm-patch last
/// ran it on, and the last pm-patch run. A failing check and a fix refused
/// or not passing are outcomes of runs that went fine (the units ended
/// successfully): this is where they show.
pub fn status(out: &mut impl Write, store: &Store, project: &str) -> anyhow::Result<()> {
    if let Some(c) = store.checked(project)? {
        writeln!(
            out,
            "    check: {} at {}",
            if c.passed { "passed" } else { "FAILING" },
            shown(short(&c.head))
        )?;
    }
    let Some((key, p)) = store.patches(project, 1)?.into_iter().next() else {
        return Ok(());
    };
    let detail = match p.outcome.as_str() {
        "committed" | "merged" => format!("on branch {}", shown(&p.branch)),
        "failed" => format!(
            "no change passed the check in {} attempt(s)",
            p.attempts.len()
        ),
        _ => String::new(),
    };
    let note = p.note.as_deref().map(|n| one_line(n, 160));
    writeln!(
        out,
        "    last patch: {} at {}: {}{}{}  [{}]",
        shown(&p.outcome),
        time::rfc3339(p.time_ms),
        one_line(&p.reason, 100),
        if detail.is_empty() {
            String::new()
        } else {
            format!("; {detail}")
        },
        note.map(|n| format!("; {n}")).unwrap_or_default(),
        shown(&key)
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_is_coloured_only_for_a_terminal() {
        let diff = "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-old\n+new\n same\n";
        let mut plain = Vec::new();
        write_diff(&mut plain, diff, false).unwrap();
        assert!(!String::from_utf8(plain).unwrap().contains('\x1b'));
        let mut tty = Vec::new();
        write_diff(&mut tty, diff, true).unwrap();
        let tty = String::from_utf8(tty).unwrap();
        assert!(tty.contains("\x1b[31m-old\x1b[0m"), "{tty}");
        assert!(tty.contains("\x1b[32m+new\x1b[0m"), "{tty}");
        assert!(tty.contains("\x1b[36m@@ -1 +1 @@\x1b[0m"), "{tty}");
        assert!(tty.contains("      same\n"), "{tty}");
    }

    #[test]
    fn a_diff_line_cannot_colour_or_rewrite_the_terminal() {
        let diff = "+\x1b[32mok\x1b]0;title\x07\r\n-\u{9b}2J\n";
        let mut tty = Vec::new();
        write_diff(&mut tty, diff, true).unwrap();
        let tty = String::from_utf8(tty).unwrap();
        // Only PiMainteno's own colours: one to start a line, one to reset.
        assert_eq!(tty.matches('\x1b').count(), 4, "{tty:?}");
        assert!(tty.contains("+\\x1b[32mok\\x1b]0;title\\x07"), "{tty:?}");
        assert!(tty.contains("-\\x9b2J"), "{tty:?}");
        assert!(!tty.contains(['\r', '\x07', '\u{9b}']), "{tty:?}");
    }
}
