//! The LMDB store: concurrent writers in separate processes, bounded
//! history, the map growing once when full, schema versions, and no write
//! when a run only reads.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pimainteno::config::CacheSettings;
use pimainteno::llm::Usage;
use pimainteno::store::records::RECORD_VERSION;
use pimainteno::store::{LlmCallRecord, ProjectRecord, Store, SummaryRecord};

fn cache(path: &Path, max_size: u64, history: u32) -> CacheSettings {
    CacheSettings {
        path: path.to_path_buf(),
        max_size,
        history,
    }
}

fn call(project: &str, tokens: u64) -> LlmCallRecord {
    LlmCallRecord {
        v: RECORD_VERSION,
        time_ms: pimainteno::time::now_ms(),
        project: project.into(),
        purpose: "summary".into(),
        provider: "none".into(),
        model: String::new(),
        duration_ms: 1,
        usage: Usage {
            input_tokens: tokens,
            ..Usage::default()
        },
        outcome: "ok".into(),
        error: None,
    }
}

fn summary(project: &str, text: &str) -> SummaryRecord {
    SummaryRecord {
        v: RECORD_VERSION,
        project: project.into(),
        created_ms: pimainteno::time::now_ms(),
        commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        branch: Some("main".into()),
        dirty: false,
        fingerprint: "f".into(),
        provider: "none".into(),
        model: String::new(),
        text: text.into(),
        duration_ms: 1,
        usage: Usage::default(),
        file: Some("codex.md".into()),
        sandbox_error: None,
    }
}

const CALLS_PER_CHILD: usize = 150;
const SUMMARIES_PER_CHILD: usize = 40;

/// Not a test on its own: the body of a child process started by
/// `two_processes_write_at_once` (it does nothing without its variable).
#[test]
fn store_writer_child() {
    let Ok(spec) = std::env::var("PM_TEST_STORE_CHILD") else {
        return;
    };
    let (dir, id) = spec.split_once('|').unwrap();
    let store = Store::open(&cache(Path::new(dir), 64 << 20, 1000)).unwrap();
    let project = ProjectRecord::new(&format!("child{id}"), "/tmp/x");
    for i in 0..CALLS_PER_CHILD {
        store.record_llm_call(&call("shared", 3)).unwrap();
        if i < SUMMARIES_PER_CHILD {
            store
                .save_summary(&project, &summary(&project.name, &format!("{id}:{i}")))
                .unwrap();
        }
    }
}

#[test]
fn two_processes_write_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // Create it first so both children race on records, not on creation.
    drop(Store::open(&cache(dir.path(), 64 << 20, 1000)).unwrap());
    let children: Vec<_> = (0..2)
        .map(|id| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "store_writer_child",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(
                    "PM_TEST_STORE_CHILD",
                    format!("{}|{id}", dir.path().display()),
                )
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let store = Store::open(&cache(dir.path(), 64 << 20, 1000)).unwrap();
    let calls = store.llm_calls("shared", usize::MAX).unwrap();
    assert_eq!(calls.len(), 2 * CALLS_PER_CHILD, "no lost llm_calls");
    let today = pimainteno::time::day(pimainteno::time::now_ms());
    assert_eq!(
        store.tokens_used(&today).unwrap(),
        2 * CALLS_PER_CHILD as u64 * 3,
        "no lost token counts"
    );
    for id in 0..2 {
        let name = format!("child{id}");
        let s = store.summaries(&name, usize::MAX).unwrap();
        assert_eq!(s.len(), SUMMARIES_PER_CHILD, "no lost summaries for {name}");
        // Newest first, and the project points at the newest.
        assert_eq!(s[0].1.text, format!("{id}:{}", SUMMARIES_PER_CHILD - 1));
        let p = store.project(&name).unwrap().unwrap();
        assert_eq!(p.last_summary.as_deref(), Some(s[0].0.as_str()));
    }
}

#[test]
fn history_is_bounded_per_project() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&cache(dir.path(), 16 << 20, 3)).unwrap();
    let a = ProjectRecord::new("a", "/a");
    let b = ProjectRecord::new("b", "/b");
    for i in 0..5 {
        store
            .save_summary(&a, &summary("a", &format!("a{i}")))
            .unwrap();
    }
    store.save_summary(&b, &summary("b", "b0")).unwrap();
    let texts: Vec<String> = store
        .summaries("a", 10)
        .unwrap()
        .into_iter()
        .map(|(_, s)| s.text)
        .collect();
    assert_eq!(texts, ["a4", "a3", "a2"]);
    assert_eq!(
        store.summaries("b", 10).unwrap().len(),
        1,
        "other projects untouched"
    );
    for _ in 0..20 {
        store.record_llm_call(&call("a", 1)).unwrap();
    }
    assert_eq!(
        store.llm_calls("a", 100).unwrap().len(),
        12,
        "4 x history calls kept"
    );
}

#[test]
fn a_full_map_grows_once_then_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&cache(dir.path(), 1 << 20, 1000)).unwrap();
    let project = ProjectRecord::new("big", "/big");
    let text = "x".repeat(100 * 1024);
    let mut saved = 0;
    let err = loop {
        match store.save_summary(&project, &summary("big", &text)) {
            Ok(_) => saved += 1,
            Err(e) => break e,
        }
        assert!(saved < 100, "a 1MiB map cannot hold 10MiB");
    };
    // More than fits in 1MiB went in: the map was doubled once.
    assert!(saved > 10, "saved {saved}");
    assert_eq!(store.usage().unwrap().0, 2 << 20);
    let msg = format!("{err:#}");
    assert!(
        msg.contains("is full even at 2MiB") && msg.contains("[cache] max_size"),
        "{msg}"
    );
    // What was stored before is intact, also for the next process, which
    // finds the map at its grown size and does not grow it again.
    assert_eq!(store.summaries("big", 1000).unwrap().len(), saved);
    drop(store);
    let store = Store::open(&cache(dir.path(), 1 << 20, 1000)).unwrap();
    assert_eq!(store.summaries("big", 1000).unwrap().len(), saved);
    let again = store
        .save_summary(&project, &summary("big", &text))
        .expect_err("still full");
    assert!(
        format!("{again:#}").contains("is full even at 2MiB"),
        "{again:#}"
    );
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(&cache(dir.path(), 16 << 20, 10)).unwrap());
    {
        // Simulate a store written by a future PiMainteno.
        let env = unsafe {
            heed::EnvOpenOptions::new()
                .max_dbs(8)
                .open(dir.path())
                .unwrap()
        };
        let mut txn = env.write_txn().unwrap();
        let meta: heed::Database<heed::types::Str, heed::types::SerdeJson<serde_json::Value>> =
            env.open_database(&txn, Some("meta")).unwrap().unwrap();
        meta.put(&mut txn, "schema_version", &serde_json::json!(99))
            .unwrap();
        txn.commit().unwrap();
    }
    let err = Store::open(&cache(dir.path(), 16 << 20, 10))
        .err()
        .expect("refused");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("schema version 99, newer than this PiMainteno"),
        "{msg}"
    );
}

#[test]
fn reading_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(&cache(dir.path(), 16 << 20, 10)).unwrap();
        store
            .save_summary(&ProjectRecord::new("p", "/p"), &summary("p", "t"))
            .unwrap();
    }
    let data = dir.path().join("data.mdb");
    let before = (
        std::fs::read(&data).unwrap(),
        std::fs::metadata(&data).unwrap().modified().unwrap(),
    );
    std::thread::sleep(Duration::from_millis(20));
    let store = Store::open(&cache(dir.path(), 16 << 20, 10)).unwrap();
    assert!(store.project("p").unwrap().is_some());
    assert_eq!(store.summaries("p", 5).unwrap().len(), 1);
    store.tokens_used("2026-01-01").unwrap();
    drop(store);
    let after = (
        std::fs::read(&data).unwrap(),
        std::fs::metadata(&data).unwrap().modified().unwrap(),
    );
    assert!(before == after, "data.mdb changed on a read-only use");
}
