//! Server-rendered HTML (maud escapes every value it is given). One inline
//! stylesheet, no scripts, no external assets: a Pi is often offline.

use maud::{DOCTYPE, Markup, PreEscaped, html};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use pulldown_cmark::{Alignment, CowStr, Event, Options, Parser, Tag, TagEnd};

use super::data::{
    CheckState, FailureBrief, FailurePage, Overview, PatchBrief, PatchPage, ProjectPage,
    ProjectRow, UnitPage, UnitRow, UnitState,
};
use crate::text::{self, DiffLine};
use crate::time;

/// The only stylesheet; its SHA-256 is in the Content-Security-Policy.
pub const STYLE: &str = "\
:root{color-scheme:light dark;--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--mute:#6e7781;--line:#d0d7de}\
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:62rem;padding:.5rem 1rem 2rem}\
header{display:flex;flex-wrap:wrap;gap:.2rem 1rem;align-items:baseline;border-bottom:1px solid var(--line);margin-bottom:.8rem}\
header a{font-weight:600;font-size:1.2rem;text-decoration:none;color:inherit}\
h1{font-size:1.3rem}h2{font-size:1.1rem;margin-top:1.6rem}\
table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid var(--line);vertical-align:top}\
th{font-weight:600;white-space:nowrap}\
code,pre{font:13px/1.4 ui-monospace,monospace}\
pre{overflow-x:auto;padding:.5rem;border:1px solid var(--line);border-radius:4px}\
.ok{color:var(--ok)}.bad{color:var(--bad)}.warn{color:var(--warn)}.mute{color:var(--mute)}\
.add{color:var(--ok)}.del{color:var(--bad)}.hunk{color:#0969da}.file{font-weight:600}\
.md{border-left:3px solid var(--line);padding-left:1rem}\
dl{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:.2rem 1rem}dt{font-weight:600}dd{margin:0;overflow-wrap:anywhere}\
td{overflow-wrap:anywhere}\
@media(max-width:40rem){thead{display:none}tr{display:block;border-bottom:1px solid var(--line);padding:.3rem 0}\
td{display:block;border:0;padding:.1rem .3rem}td[data-label]::before{content:attr(data-label) \": \";font-weight:600}}";

/// Characters kept in a path segment; everything else is percent-encoded
/// (unit names hold `@`, `\` and `.`).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

pub fn link(kind: &str, id: &str) -> String {
    // A record id is `<owner>/<time key>`: both parts encoded, the slash kept.
    let parts: Vec<String> = id
        .split('/')
        .map(|p| utf8_percent_encode(p, SEGMENT).to_string())
        .collect();
    format!("/{kind}/{}", parts.join("/"))
}

/// Context every page needs.
pub struct Frame<'a> {
    pub host: &'a str,
    pub now_ms: u64,
}

fn layout(frame: &Frame, title: &str, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // No favicon request (it would 404 on every page).
                link rel="icon" href="data:,";
                title { (title) " · PiMainteno on " (frame.host) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    a href="/" { "PiMainteno" }
                    span.mute { (frame.host) " · " (time::rfc3339(frame.now_ms)) }
                }
                main { (body) }
            }
        }
    }
    .into_string()
}

/// "3 h ago" for a timestamp shown next to its RFC 3339 form.
fn ago(now_ms: u64, then: &str, then_ms: u64) -> Markup {
    let secs = now_ms.saturating_sub(then_ms) / 1000;
    let rel = match secs {
        0..=59 => format!("{secs} s ago"),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=172_799 => format!("{} h ago", secs / 3600),
        _ => format!("{} days ago", secs / 86_400),
    };
    html! { time datetime=(then) title=(then) { (rel) } }
}

fn when(now_ms: u64, rfc: &Option<String>, ms: u64) -> Markup {
    match rfc {
        Some(t) => ago(now_ms, t, ms),
        None => html! { span.mute { "never" } },
    }
}

fn word_class(word: &str) -> &'static str {
    match word {
        "summarized" | "committed" | "merged" | "done" | "passed" | "ok" | "active" => "ok",
        "summarized_blind" | "dry_run" | "pending" | "skipped" | "new" | "activating"
        | "reloading" | "inactive" => "warn",
        "" | "unknown" => "mute",
        _ => "bad",
    }
}

fn outcome(word: &str) -> Markup {
    html! { span class=(word_class(word)) { (word) } }
}

fn passed_word(passed: bool) -> &'static str {
    if passed { "passed" } else { "failed" }
}

/// The check at the HEAD pm-patch last ran it on.
fn check_state(c: &CheckState) -> Markup {
    html! { (outcome(passed_word(c.passed))) " at " code { (c.commit) } }
}

fn unit_state(state: &Option<UnitState>) -> Markup {
    match state {
        Some(s) if s.load == "not-found" => html! { span.bad { "not found" } },
        // Not loaded: inactive and unreferenced, or no such unit.
        Some(s) if s.load == "not-loaded" => html! { span.mute { "inactive" } },
        Some(s) => html! {
            span class=(word_class(&s.active)) { (s.active) }
            " " span.mute { (s.sub) }
        },
        None => html! { span.mute { "unknown" } },
    }
}

fn store_notice(store: &str) -> Markup {
    html! {
        @if store != "ok" {
            @if store.starts_with("pimainteno-repair.service") {
                p.warn { (store) }
            } @else {
                p.warn { "No data yet: " (store) }
            }
        }
    }
}

fn project_cells(now: u64, p: &ProjectRow) -> Markup {
    html! {
        td data-label="Project" { a href=(link("project", &p.name)) { (p.name) }
            @if !p.configured { " " span.mute { "(no longer configured)" } }
            @else if !p.enabled { " " span.mute { "(disabled)" } } }
        td data-label="Last summary" {
            @match &p.summary {
                Some(s) => { (ago(now, &s.created, s.created_ms)) br;
                    code { (s.commit.as_deref().unwrap_or("no commit")) }
                    @if s.dirty { " " span.warn { "+ changes" } } },
                None => span.mute { "none yet" },
            }
        }
        td data-label="Last run" { (outcome(&p.outcome)) @if let Some(e) = &p.error { br; span.mute { (text::shorten(e, 120)) } } }
        td data-label="Check" {
            @match (&p.check, &p.check_command) {
                (Some(c), _) => (check_state(c)),
                (None, Some(_)) => span.mute { "not run yet" },
                (None, None) => span.mute { "no check" },
            }
        }
        td data-label="Last patch" {
            @match &p.last_patch {
                Some(b) => { a href=(link("patch", &b.id)) { (outcome(&b.outcome)) } br; (ago(now, &b.time, b.time_ms)) },
                None => span.mute { "none" },
            }
        }
    }
}

fn unit_head() -> Markup {
    html! { thead { tr { th { "Unit" } th { "State" } th { "Last failure" } th { "Repairs" } } } }
}

fn unit_cells(u: &UnitRow) -> Markup {
    html! {
        td data-label="Unit" { a href=(link("unit", &u.name)) { (u.name) }
            @if let Some(p) = &u.project { br; span.mute { "project " a href=(link("project", p)) { (p) } } } }
        td data-label="State" { (unit_state(&u.state)) }
        td data-label="Last failure" {
            @match &u.last_failure {
                Some(f) => { a href=(link("failure", &f.id)) { (f.time) } br; (text::shorten(&f.cause, 100)) },
                None => span.mute { "none recorded" },
            }
        }
        td data-label="Repairs" { (u.repairs) " of " (u.failures) }
    }
}

pub fn overview(frame: &Frame, o: &Overview) -> String {
    let now = frame.now_ms;
    let body = html! {
        (store_notice(&o.store))
        h2 { "Projects" }
        @if o.projects.is_empty() {
            p.mute { "No project is configured: add a [[project]] to /etc/pimainteno/pimainteno.toml." }
        } @else {
            table {
                thead { tr { th { "Project" } th { "Last summary" } th { "Last run" } th { "Check" } th { "Last patch" } } }
                tbody { @for p in &o.projects { tr { (project_cells(now, p)) } } }
            }
        }
        h2 { "Watched units" }
        @if o.units.is_empty() {
            p.mute { "No unit is watched: `pimainteno watch UNIT` hooks one up." }
        } @else {
            table {
                (unit_head())
                tbody { @for u in &o.units { tr { (unit_cells(u)) } } }
            }
        }
        h2 { "Schedule" }
        dl {
            dt { (o.timer.unit) }
            dd { (o.timer.active.as_deref().unwrap_or("unknown")) @if let Some(e) = &o.timer.enabled { ", " (e) } }
            dt { "Last run" } dd { (when(now, &o.timer.last, o.timer.last_ms.unwrap_or(0))) }
            dt { "Next run" } dd { (o.timer.next.as_deref().unwrap_or("not scheduled")) }
            dt { "LLM tokens today" } dd { (o.tokens_today) }
        }
    };
    layout(frame, "Overview", body)
}

fn patch_rows(patches: &[PatchBrief]) -> Markup {
    html! {
        table {
            thead { tr { th { "When" } th { "Outcome" } th { "Why" } th { "Branch" } th { "Attempts" } th { "Tokens" } } }
            tbody {
                @for b in patches {
                    tr {
                        td data-label="When" { a href=(link("patch", &b.id)) { (b.time) } }
                        td data-label="Outcome" { (outcome(&b.outcome)) }
                        td data-label="Why" { (text::shorten(&b.reason, 100)) }
                        td data-label="Branch" { code { (b.branch) } }
                        td data-label="Attempts" { (b.attempts) }
                        td data-label="Tokens" { (b.tokens) }
                    }
                }
            }
        }
    }
}

pub fn project(frame: &Frame, page: &ProjectPage) -> String {
    let p = &page.project;
    let body = html! {
        h1 { "Project " (p.name) }
        dl {
            dt { "Path" } dd { code { (p.path) } }
            dt { "Last run" } dd { (when(frame.now_ms, &p.last_run, p.last_run_ms)) " " (outcome(&p.outcome)) }
            @if let Some(e) = &p.error { dt { "Error" } dd { (e) } }
            @if let Some(c) = &p.check_command { dt { "Check" } dd { code { (c) } } }
            @if let Some(c) = &p.check { dt { "Check at HEAD" } dd { (check_state(c)) } }
            @if let Some(m) = &p.patch_mode { dt { "Patches" } dd { (m) } }
        }
        h2 { "Summary" }
        @match (&page.summary_text, &p.summary) {
            (Some(text), Some(s)) => {
                p.mute { (s.created) " · " (s.provider) @if !s.model.is_empty() { " " (s.model) }
                    " · commit " code { (s.commit.as_deref().unwrap_or("none")) }
                    @if let Some(b) = &s.branch { " on " (b) } }
                div.md { (markdown(text)) }
            },
            _ => p.mute { "No summary yet." },
        }
        @if !page.units.is_empty() {
            h2 { "Units" }
            table {
                (unit_head())
                tbody { @for u in &page.units { tr { (unit_cells(u)) } } }
            }
        }
        h2 { "Patches" }
        @if page.patches.is_empty() { p.mute { "None." } } @else { (patch_rows(&page.patches)) }
        h2 { "Summaries" }
        @if page.summaries.is_empty() { p.mute { "None." } } @else {
            table {
                thead { tr { th { "When" } th { "Commit" } th { "Provider" } th { "Tokens" } } }
                tbody { @for s in &page.summaries { tr {
                    td data-label="When" { (s.created) }
                    td data-label="Commit" { code { (s.commit.as_deref().unwrap_or("-")) } @if s.dirty { " +" } }
                    td data-label="Provider" { (s.provider) " " (s.model) } td data-label="Tokens" { (s.tokens) } } } }
            }
        }
        h2 { "LLM calls" }
        @if page.llm_calls.is_empty() { p.mute { "None." } } @else {
            table {
                thead { tr { th { "When" } th { "For" } th { "Provider" } th { "Time" } th { "Tokens" } th { "Outcome" } } }
                tbody { @for c in &page.llm_calls { tr {
                    td data-label="When" { (c.time) } td data-label="For" { (c.purpose) }
                    td data-label="Provider" { (c.provider) " " (c.model) }
                    td data-label="Time" { (c.duration_ms) " ms" } td data-label="Tokens" { (c.tokens) }
                    td data-label="Outcome" { (outcome(&c.outcome)) @if let Some(e) = &c.error { br; span.mute { (text::shorten(e, 120)) } } } } } }
            }
        }
    };
    layout(frame, &format!("Project {}", p.name), body)
}

fn failure_rows(failures: &[FailureBrief]) -> Markup {
    html! {
        table {
            thead { tr { th { "When" } th { "Result" } th { "Cause" } th { "Repair" } } }
            tbody { @for f in failures { tr {
                td data-label="When" { a href=(link("failure", &f.id)) { (f.time) } }
                td data-label="Result" { (f.result) } td data-label="Cause" { (text::shorten(&f.cause, 140)) }
                td data-label="Repair" { (f.repair) " " (outcome(&f.repair_outcome)) } } } }
        }
    }
}

pub fn unit(frame: &Frame, page: &UnitPage) -> String {
    let u = &page.unit;
    let body = html! {
        h1 { "Unit " (u.name) }
        dl {
            dt { "State" } dd { (unit_state(&u.state)) }
            dt { "Watched" } dd { @if u.watched { "yes: a failure starts pm-onfailure" } @else { "no" } }
            @if let Some(p) = &u.project { dt { "Project" } dd { a href=(link("project", p)) { (p) } } }
            dt { "Repairs" } dd { (u.repairs) " of " (u.failures) " failures recorded" }
        }
        h2 { "Failures" }
        @if page.failures.is_empty() { p.mute { "None recorded." } } @else { (failure_rows(&page.failures)) }
    };
    layout(frame, &format!("Unit {}", u.name), body)
}

pub fn failure(frame: &Frame, page: &FailurePage) -> String {
    let f = &page.failure;
    let d = &f.diagnosis;
    let body = html! {
        h1 { "Failure of " a href=(link("unit", &f.unit)) { (f.unit) } }
        dl {
            dt { "When" } dd { (page.time) }
            dt { "Result" } dd { (f.result)
                @if let Some(c) = &f.exit_code { ", " (c) } @if let Some(s) = &f.exit_status { " " (s) } }
            @if let Some(e) = &f.exec_start { dt { "ExecStart" } dd { code { (e) } } }
            @if let Some(p) = &f.project { dt { "Project" } dd { a href=(link("project", p)) { (p) } } }
            @if let Some(i) = &f.invocation_id { dt { "Invocation" } dd { code { (i) } } }
        }
        h2 { "Diagnosis" }
        dl {
            dt { "Cause" } dd { (d.cause) }
            dt { "By" } dd { (d.source) " (" (d.kind) "), " (d.confidence_pct) "% sure" }
            dt { "Action" } dd { (d.action) }
            @if let Some(l) = &f.llm { dt { "LLM" } dd { (l.provider) ", " (l.tokens) " tokens, " (outcome(&l.outcome))
                @if let Some(e) = &l.error { br; span.mute { (e) } } } }
        }
        @if !d.evidence.is_empty() {
            h2 { "Evidence" }
            pre { @for line in &d.evidence { (line) "\n" } }
        }
        h2 { "Repair" }
        dl {
            dt { "Action" } dd { (f.repair.action) " " (outcome(&f.repair.outcome)) }
            dt { "Why" } dd { (f.repair.reason) }
            @if let Some(s) = &f.repair.state_after { dt { "State after" } dd { (s) } }
        }
        h2 { "Journal" @if f.journal_truncated { " " span.mute { "(the end of it)" } } }
        pre { @for line in &f.journal { (line) "\n" } }
    };
    layout(frame, &format!("Failure of {}", f.unit), body)
}

fn diff(text: &str) -> Markup {
    html! {
        pre { @for line in text.lines() {
            @match text::diff_line(line) {
                DiffLine::Added => span.add { (line) },
                DiffLine::Removed => span.del { (line) },
                DiffLine::Hunk => span.hunk { (line) },
                DiffLine::File => span.file { (line) },
                DiffLine::Context => (line),
            }
            "\n"
        } }
    }
}

pub fn patch(frame: &Frame, page: &PatchPage) -> String {
    let p = &page.patch;
    let body = html! {
        h1 { "Patch for " a href=(link("project", &p.project)) { (p.project) } }
        dl {
            dt { "When" } dd { (page.time) }
            dt { "Outcome" } dd { (outcome(&p.outcome)) @if let Some(n) = &p.note { br; span.mute { (n) } } }
            dt { "Trigger" } dd { (p.trigger) }
            dt { "Why" } dd { (p.reason) }
            dt { "Branch" } dd { code { (p.branch) } }
            dt { "Base" } dd { code { (p.base) } }
            @if let Some(c) = &p.commit { dt { "Commit" } dd { code { (c) } } }
            dt { "LLM" } dd { (p.provider) ", " (p.tokens) " tokens" }
        }
        @for a in p.attempts.iter().rev() {
            h2 { "Attempt " (a.n) ": " (outcome(&a.outcome)) }
            @if let Some(d) = &a.detail { p { (d) } }
            @if !a.files.is_empty() { p { "Files: " @for (i, f) in a.files.iter().enumerate() { @if i > 0 { ", " } code { (f) } } } }
            @if !a.diff.is_empty() { (diff(&a.diff)) }
            @if let Some(c) = &a.check {
                p { "Check " code { (c.command) } ": " span class=(word_class(passed_word(c.passed))) { (c.verdict()) } }
                @if !c.output_tail.is_empty() { pre { (c.output_tail) } }
            }
        }
    };
    layout(frame, &format!("Patch for {}", p.project), body)
}

/// A page for 404s and errors, in the same frame.
pub fn message(frame: &Frame, title: &str, text: &str) -> String {
    layout(
        frame,
        title,
        html! { h1 { (title) } p { (text) } p { a href="/" { "Overview" } } },
    )
}

/// Markdown from the LLM as HTML. Raw HTML in it is shown as text, and a
/// link whose target is not http(s), mailto or on this site becomes text:
/// the summary is untrusted input.
pub fn markdown(text: &str) -> Markup {
    let mut skipping_link = Vec::new();
    let events = Parser::new_ext(text, Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH)
        .filter_map(|ev| match ev {
            Event::Html(h) | Event::InlineHtml(h) => Some(Event::Text(h)),
            Event::Start(Tag::Link { dest_url, .. }) if !safe_url(&dest_url) => {
                skipping_link.push(true);
                None
            }
            Event::Start(Tag::Link { .. }) => {
                skipping_link.push(false);
                Some(ev)
            }
            Event::End(TagEnd::Link) => (!skipping_link.pop().unwrap_or(false)).then_some(ev),
            // No images: no external assets, and CSP would block them.
            Event::Start(Tag::Image { dest_url, .. }) => {
                Some(Event::Text(CowStr::from(format!("[image: {dest_url}] "))))
            }
            Event::End(TagEnd::Image) => None,
            // Aligned columns would be `style` attributes, which the CSP
            // refuses (the browser logs a violation per cell): no alignment.
            Event::Start(Tag::Table(columns)) => Some(Event::Start(Tag::Table(vec![
                Alignment::None;
                columns.len()
            ]))),
            other => Some(other),
        });
    let mut out = String::new();
    pulldown_cmark::html::push_html(&mut out, events);
    PreEscaped(out)
}

fn safe_url(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    lower.starts_with("http://")
        || lower.starts_with("https://")
        || lower.starts_with("mailto:")
        || lower.starts_with('#')
        || (!lower.contains(':') && !lower.starts_with("//"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_shows_raw_html_as_text() {
        let html = markdown(
            "# Title\n\n<script>alert(1)</script>\n\nText <img src=x onerror=alert(2)> and **bold**.\n",
        )
        .into_string();
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(
            html.contains("&lt;img src=x onerror=alert(2)&gt;"),
            "{html}"
        );
        assert!(html.contains("<strong>bold</strong>"), "{html}");
        assert!(html.contains("<h1>Title</h1>"), "{html}");
    }

    #[test]
    fn markdown_tables_have_no_style_attributes() {
        let html = markdown("| a | b | c |\n|:--|:-:|--:|\n| 1 | 2 | 3 |\n").into_string();
        assert!(!html.contains("style="), "{html}");
        assert!(html.contains("<td>3</td>"), "{html}");
    }

    #[test]
    fn markdown_drops_script_links_but_keeps_their_text() {
        let html = markdown(
            "[click](javascript:alert(1)) [ok](https://example.org/) [rel](docs/x.md) [data](DATA:text/html,x)",
        )
        .into_string();
        assert!(!html.to_lowercase().contains("javascript:"), "{html}");
        assert!(!html.to_lowercase().contains("data:"), "{html}");
        assert!(html.contains("click"), "{html}");
        assert!(
            html.contains(r#"<a href="https://example.org/">ok</a>"#),
            "{html}"
        );
        assert!(html.contains(r#"<a href="docs/x.md">rel</a>"#), "{html}");
    }

    #[test]
    fn links_encode_names_but_keep_the_id_slash() {
        assert_eq!(
            link("failure", "foo@a\\x2db.service/00ab"),
            "/failure/foo%40a%5Cx2db.service/00ab"
        );
        assert_eq!(link("project", "demo"), "/project/demo");
    }
}
