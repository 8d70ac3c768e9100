//! `pimainteno history NAME --prompts`: what left the machine. Each LLM
//! call of a project or unit with the prompt exactly as it was sent
//! (secrets already replaced by placeholders) and the redaction counts.

use std::io::Write;

use crate::config::Settings;
use crate::exit::Exit;
use crate::text::{printable, printable_line};
use crate::time;

pub fn show(settings: &Settings, name: &str, limit: usize) -> anyhow::Result<Exit> {
    let mut out = std::io::stdout().lock();
    let Some(store) = super::open_store(settings)? else {
        writeln!(
            out,
            "nothing was sent yet: the store {} does not exist",
            settings.cache.path.display()
        )?;
        return Ok(Exit::Ok);
    };
    let calls = store.llm_calls(name, limit)?;
    if calls.is_empty() {
        writeln!(out, "{}: no LLM calls on record", printable_line(name))?;
        return Ok(Exit::Ok);
    }
    writeln!(
        out,
        "LLM calls of {}, newest first; prompts are kept for the newest {} calls",
        printable_line(name),
        settings.cache.history
    )?;
    for (key, call) in calls {
        writeln!(
            out,
            "\n== {}  {}  {}{}  {}  [{}]",
            time::rfc3339(call.time_ms),
            printable_line(&call.purpose),
            printable_line(&call.provider),
            if call.model.is_empty() {
                String::new()
            } else {
                format!("/{}", printable_line(&call.model))
            },
            printable_line(&call.outcome),
            printable_line(&key)
        )?;
        let total: u32 = call.redacted.values().sum();
        let kinds: Vec<String> = call
            .redacted
            .iter()
            .map(|(kind, n)| format!("{} {n}", printable_line(kind)))
            .collect();
        if total == 0 {
            writeln!(out, "redacted: nothing")?;
        } else {
            writeln!(out, "redacted: {total} values ({})", kinds.join(", "))?;
        }
        match store.prompt(&key)? {
            Some(prompt) => {
                writeln!(out, "---- prompt as sent ({} bytes) ----", prompt.len())?;
                writeln!(out, "{}", printable(prompt.trim_end()))?;
                writeln!(out, "---- end of prompt ----")?;
            }
            None if call.provider == "none" => {
                writeln!(out, "(the offline provider: nothing left the machine)")?;
            }
            None => writeln!(
                out,
                "(prompt no longer kept: only the newest {} calls keep theirs)",
                settings.cache.history
            )?,
        }
    }
    Ok(Exit::Ok)
}
