//! The admin CLI on hostile records: journal lines, LLM replies, diffs,
//! commit ids and unit and project names carrying ESC, BEL, CR, NUL, DEL,
//! C1 controls and line breaks. What `pimainteno` prints holds no raw
//! control character but the line breaks of its own layout (and tab, which
//! only moves the cursor): each is shown as `\xNN`, and no outside text
//! starts a line of its own.

mod common;

use common::admin;
use std::path::{Path, PathBuf};

use pimainteno::check::CheckOutcome;
use pimainteno::config::CacheSettings;
use pimainteno::llm::Usage;
use pimainteno::store::records::RECORD_VERSION;
use pimainteno::store::{
    CheckedRecord, DiagnosisRecord, FailureRecord, LlmCallRecord, LlmNote, PatchAttempt,
    PatchRecord, ProjectRecord, RepairRecord, Store, SummaryRecord,
};

/// Clears the screen, sets the window title, rings, returns the cursor,
/// backspaces, CSI as a C1 control, NEL, a right-to-left override, then a
/// line break that would start a line of its own.
const EVIL: &str =
    "\x1b[2J\x1b]0;pwned\x07\r\x08\x7f\u{9b}31m\u{85}\u{202e}\u{1}\u{1f}\nFORGED repair: done";
/// For names (keys and arguments): no `/`, no NUL.
const EVIL_NAME: &str = "evil\x1b[31m\r\x07\u{9b}\nFORGED.service";
const EVIL_PROJECT: &str = "evil\x1b[31m\r\x07\u{9b}\nFORGED-project";

fn evil(what: &str) -> String {
    format!("{what}{EVIL}\0")
}

fn config(dir: &Path) -> PathBuf {
    let path = dir.join("pimainteno.toml");
    std::fs::write(
        &path,
        format!(
            "[cache]\npath = \"{}\"\n\n[llm]\nprovider = \"none\"\n\n\
             [[project]]\nname = \"p\"\npath = \"{}\"\nunits = [\"w.service\"]\n",
            dir.join("store").display(),
            dir.join("p").display()
        ),
    )
    .unwrap();
    path
}

fn failure(unit: &str) -> FailureRecord {
    FailureRecord {
        v: RECORD_VERSION,
        unit: unit.into(),
        project: Some(evil("project")),
        time_ms: pimainteno::time::now_ms(),
        invocation_id: Some(evil("id")),
        result: evil("result"),
        exit_code: Some(evil("code")),
        exit_status: Some(evil("status")),
        exec_start: Some(evil("exec")),
        n_restarts: Some(1),
        journal: vec![evil("journal one"), evil("journal two")],
        journal_truncated: false,
        signature: evil("signature"),
        diagnosis: DiagnosisRecord {
            kind: evil("kind"),
            cause: evil("cause"),
            confidence_pct: 50,
            evidence: vec![evil("evidence")],
            action: evil("action"),
            source: evil("source"),
        },
        llm: Some(LlmNote {
            provider: evil("provider"),
            tokens: 3,
            outcome: evil("outcome"),
            error: Some(evil("error")),
        }),
        repair: RepairRecord {
            action: evil("action"),
            reason: evil("reason"),
            outcome: evil("outcome"),
            state_after: Some(evil("state")),
        },
    }
}

fn fill(store: &Store) {
    let mut project = ProjectRecord::new("p", &evil("path"));
    project.last_run_ms = 1;
    project.last_outcome = evil("outcome");
    project.last_error = Some(evil("error"));
    let summary = SummaryRecord {
        v: RECORD_VERSION,
        project: "p".into(),
        created_ms: pimainteno::time::now_ms(),
        // Multi-byte characters where a 12-byte cut would fall.
        commit: Some(format!("ééééééé{EVIL}")),
        branch: Some(evil("branch")),
        dirty: false,
        fingerprint: "f".into(),
        provider: evil("provider"),
        model: evil("model"),
        text: evil("text"),
        duration_ms: 1,
        usage: Usage::default(),
        file: Some(evil("file")),
        sandbox_error: Some(evil("sandbox")),
    };
    store.save_summary(&project, &summary).unwrap();
    let mut other = ProjectRecord::new(EVIL_PROJECT, "/x");
    other.last_error = Some(evil("error"));
    store.save_project(&other).unwrap();
    let call = LlmCallRecord {
        v: RECORD_VERSION,
        time_ms: pimainteno::time::now_ms(),
        project: "p".into(),
        purpose: evil("purpose"),
        provider: evil("provider"),
        model: evil("model"),
        duration_ms: 1,
        usage: Usage::default(),
        outcome: evil("outcome"),
        error: Some(evil("error")),
        redacted: [(evil("kind"), 2)].into_iter().collect(),
    };
    store.record_llm_call(&call, Some(&evil("prompt"))).unwrap();
    let diff = format!(
        "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-{}\n+{}\n",
        evil("old"),
        evil("new")
    );
    let patch = PatchRecord {
        v: RECORD_VERSION,
        project: "p".into(),
        time_ms: pimainteno::time::now_ms(),
        trigger: evil("trigger"),
        reason: evil("reason"),
        attempt_key: None,
        base: format!("ééééééé{EVIL}"),
        branch: evil("branch"),
        commit: Some(format!("{EVIL}ééééééé")),
        attempts: vec![PatchAttempt {
            n: 1,
            diff,
            files: vec![evil("file")],
            check: Some(CheckOutcome {
                command: evil("command"),
                passed: false,
                exit_code: Some(1),
                timed_out: false,
                duration_ms: 1,
                output_tail: format!("{}\n{}", evil("out one"), evil("out two")),
                tests: None,
            }),
            tokens: 1,
            outcome: evil("outcome"),
            detail: Some(evil("detail")),
            left_by_check: vec![evil("left")],
            tests: Some(evil("tests")),
            fixed_tests: vec![],
        }],
        provider: evil("provider"),
        tokens: 1,
        outcome: evil("outcome"),
        note: Some(evil("note")),
    };
    store.save_patch(None, &patch).unwrap();
    store
        .set_checked(
            "p",
            &CheckedRecord {
                head: format!("ééééééé{EVIL}"),
                passed: false,
                attempt_key: Some(evil("attempt")),
            },
        )
        .unwrap();
    store.save_failure(&failure("w.service")).unwrap();
    store.save_failure(&failure(EVIL_NAME)).unwrap();
}

/// Nothing a terminal acts on but a line break and a tab, and no one-line
/// field broken in two (a diff or a check's output is printed line by line,
/// each line indented: the body's own line breaks stay).
fn assert_inert(what: &str, text: &str) {
    let raw: Vec<char> = text
        .chars()
        .filter(|&c| {
            (c.is_control() && c != '\n' && c != '\t')
                || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        })
        .collect();
    assert!(raw.is_empty(), "{what}: raw controls {raw:?} in\n{text}");
    assert!(
        !text.lines().any(|l| l.starts_with("FORGED")),
        "{what}: outside text starts a line:\n{text}"
    );
}

#[test]
fn outside_text_never_reaches_the_terminal_raw() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    {
        let store = Store::open(&CacheSettings {
            path: dir.path().join("store"),
            max_size: 64 << 20,
            history: 10,
        })
        .unwrap();
        fill(&store);
    }
    let runs: [&[&str]; 6] = [
        &["status"],
        &["history"],
        &["history", "p"],
        &["history", "w.service"],
        &["history", EVIL_NAME],
        &["history", "p", "--prompts"],
    ];
    for args in runs {
        let (code, out, err) = admin(&config, args);
        assert_eq!(code, 0, "{args:?}: {err}\n{out}");
        // A prompt is shown as it was sent, its own lines at column 0
        // between the markers: only its controls are checked.
        let out_checked = match out.split_once("---- prompt as sent") {
            Some((before, rest)) => format!(
                "{before}{}",
                rest.split_once("---- end of prompt ----").unwrap().1
            ),
            None => out.clone(),
        };
        assert_inert(&format!("{args:?}"), &out_checked);
        assert!(
            !out.contains(|c: char| c.is_control() && c != '\n' && c != '\t'),
            "{args:?}"
        );
        assert_inert(&format!("{args:?} (stderr)"), &err);
        // Shown, not dropped: the admin sees what the program printed.
        assert!(
            out.contains("\\x1b[2J\\x1b]0;pwned\\x07\\x0d"),
            "{args:?}:\n{out}"
        );
    }
    let (_, all, _) = admin(&config, &["history"]);
    for field in [
        "journal one",
        "evidence",
        "cause",
        "exec",
        "reason",
        "error",
        "note",
        "detail",
        "left",
        "out two",
        "+new",
        "purpose",
    ] {
        assert!(all.contains(&format!("{field}\\x1b[2J")), "{field}:\n{all}");
    }
    for name in ["FORGED.service", "FORGED-project"] {
        assert!(
            all.contains(&format!("evil\\x1b[31m\\x0d\\x07\\x9b\\x0a{name}")),
            "{all}"
        );
    }
    let (_, status, _) = admin(&config, &["status"]);
    for line in [
        "    check: FAILING at ééééééé\\x1b[2J\\x1b\n",
        "    last patch: outcome\\x1b[2J",
        "last failure: result\\x1b[2J",
        "    outcome\\x1b[2J",
    ] {
        assert!(status.contains(line), "{line:?} not in\n{status}");
    }
    let (_, prompts, _) = admin(&config, &["history", "p", "--prompts"]);
    assert!(prompts.contains("prompt\\x1b[2J"), "{prompts}");

    // An error quoting an argument (a name copied from the journal).
    let (code, out, err) = admin(&config, &["unwatch", EVIL_NAME]);
    assert_ne!(code, 0, "{out}");
    assert_inert("unwatch (stderr)", &err);
    assert!(err.contains("evil\\x1b[31m"), "{err}");
}
