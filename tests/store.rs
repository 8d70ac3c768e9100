//! The LMDB store: concurrent writers in separate processes, bounded
//! history, the map growing once when full, schema versions, no write
//! when a run only reads; damaged, vanished and foreign stores reported,
//! failed writes named, and root's files given to the store's owner.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pimainteno::config::CacheSettings;
use pimainteno::llm::Usage;
use pimainteno::store::records::RECORD_VERSION;
use pimainteno::store::{Damaged, LlmCallRecord, ProjectRecord, Store, SummaryRecord};

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
        redacted: Default::default(),
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
        store.record_llm_call(&call("shared", 3), None).unwrap();
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
        store.record_llm_call(&call("a", 1), None).unwrap();
    }
    assert_eq!(
        store.llm_calls("a", 100).unwrap().len(),
        12,
        "4 x history calls kept"
    );
}

#[test]
fn the_prompts_as_sent_are_kept_for_the_newest_history_calls() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&cache(dir.path(), 4 << 20, 3)).unwrap();
    let mut keys = Vec::new();
    for i in 0..6 {
        let mut c = call("p", 1);
        c.redacted.insert("password".into(), i);
        keys.push(
            store
                .record_llm_call(&c, Some(&format!("prompt {i}")))
                .unwrap(),
        );
    }
    // A call whose prompt went nowhere (the offline provider) keeps none.
    let offline = store.record_llm_call(&call("p", 0), None).unwrap();
    assert_eq!(store.prompt(&offline).unwrap(), None);
    let kept: Vec<Option<String>> = keys.iter().map(|k| store.prompt(k).unwrap()).collect();
    assert_eq!(
        kept,
        [
            None,
            None,
            None,
            Some("prompt 3".into()),
            Some("prompt 4".into()),
            Some("prompt 5".into())
        ],
        "history = 3: the three newest prompts are kept"
    );
    let calls = store.llm_calls("p", 10).unwrap();
    assert_eq!(calls.len(), 7, "the calls themselves are kept longer");
    assert_eq!(
        calls[1].1.redacted["password"], 5,
        "counts are stored with the call"
    );
    drop(store);
    // The dashboard's read-only view reads them too.
    let ro = Store::open_read_only(dir.path()).unwrap().unwrap();
    assert_eq!(ro.prompt(&keys[5]).unwrap().as_deref(), Some("prompt 5"));
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

// ---- A damaged, vanished or foreign store is reported, never mapped or
// ---- made anew (issue 16).

fn damaged(err: &anyhow::Error) -> &Damaged {
    err.downcast_ref::<Damaged>()
        .unwrap_or_else(|| panic!("not a Damaged: {err:#}"))
}

/// A store with about 1 MiB of summaries, closed.
fn filled_store(dir: &Path) {
    let store = Store::open(&cache(dir, 16 << 20, 100)).unwrap();
    let project = ProjectRecord::new("p", "/p");
    for i in 0..10 {
        let text = format!("{i}").repeat(100 * 1024);
        store.save_summary(&project, &summary("p", &text)).unwrap();
    }
}

fn truncate(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Not a test on its own: reads every summary with heed alone, without
/// the store's checks, as PiMainteno did before (see
/// `a_truncated_store_is_reported_not_mapped`).
#[test]
fn raw_lmdb_reader_child() {
    let Ok(dir) = std::env::var("PM_TEST_RAW_READER") else {
        return;
    };
    // SAFETY: nothing else uses this copy of the store.
    let env = unsafe {
        heed::EnvOpenOptions::new()
            .max_dbs(8)
            .open(Path::new(&dir))
            .unwrap()
    };
    let txn = env.read_txn().unwrap();
    let db: heed::Database<heed::types::Str, heed::types::Bytes> =
        env.open_database(&txn, Some("summaries")).unwrap().unwrap();
    let mut bytes = 0;
    for item in db.iter(&txn).unwrap() {
        bytes += item.unwrap().1.len();
    }
    println!("read {bytes} bytes");
}

#[test]
fn a_truncated_store_is_reported_not_mapped() {
    let dir = tempfile::tempdir().unwrap();
    filled_store(dir.path());
    let data = dir.path().join("data.mdb");
    let full = std::fs::metadata(&data).unwrap().len();
    assert!(full > 1 << 20, "{full}");
    truncate(&data, 40960);

    // The bug: LMDB maps the short file, and the first page past its end
    // kills the reader with SIGBUS.
    let raw = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "raw_lmdb_reader_child", "--test-threads=1"])
        .env("PM_TEST_RAW_READER", dir.path())
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(raw.status.signal(), Some(libc::SIGBUS), "{:?}", raw.status);

    // The store says what is wrong instead, writing or reading.
    for err in [
        Store::open(&cache(dir.path(), 16 << 20, 100))
            .err()
            .unwrap(),
        Store::open_read_only(dir.path()).err().unwrap(),
    ] {
        let d = damaged(&err);
        assert_eq!(d.path, data);
        assert!(
            d.what
                .starts_with("is truncated: 40960 bytes, its last page ends at "),
            "{d}"
        );
        let msg = format!("{err:#}");
        assert!(
            msg.starts_with(&format!("{} is truncated", data.display())),
            "{msg}"
        );
        assert!(
            msg.contains(&format!(
                "move it away (mv {0} {0}.damaged)",
                dir.path().display()
            )),
            "{msg}"
        );
    }
    assert_eq!(
        std::fs::metadata(&data).unwrap().len(),
        40960,
        "left as it was"
    );
}

#[test]
fn garbage_is_not_an_lmdb_store() {
    let dir = tempfile::tempdir().unwrap();
    filled_store(dir.path());
    let data = dir.path().join("data.mdb");
    std::fs::write(&data, vec![0xab; 64 * 1024]).unwrap();
    for err in [
        Store::open(&cache(dir.path(), 16 << 20, 100))
            .err()
            .unwrap(),
        Store::open_read_only(dir.path()).err().unwrap(),
    ] {
        let d = damaged(&err);
        assert_eq!(d.path, data);
        assert_eq!(d.what, "is not an LMDB store (bad magic)");
    }
}

#[test]
fn a_store_cut_to_nothing_is_not_made_anew() {
    let dir = tempfile::tempdir().unwrap();
    filled_store(dir.path());
    let data = dir.path().join("data.mdb");
    truncate(&data, 0);
    // With its lock file, and without (a directory restored without it).
    for remove_lock in [false, true] {
        if remove_lock {
            std::fs::remove_file(dir.path().join("lock.mdb")).unwrap();
        }
        for err in [
            Store::open(&cache(dir.path(), 16 << 20, 100))
                .err()
                .unwrap(),
            Store::open_read_only(dir.path()).err().unwrap(),
        ] {
            let d = damaged(&err);
            assert_eq!(d.path, data);
            assert!(d.what.starts_with("is empty (0 bytes)"), "{d}");
            assert!(d.remedy.contains("start afresh"), "{d}");
        }
        assert_eq!(std::fs::metadata(&data).unwrap().len(), 0, "not made anew");
    }
    // Starting afresh, as the error says: an empty store again.
    std::fs::remove_file(&data).unwrap();
    let store = Store::open(&cache(dir.path(), 16 << 20, 100)).unwrap();
    assert!(store.summaries("p", 10).unwrap().is_empty());
}

#[test]
fn a_store_that_vanished_is_reported_and_first_use_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    // First use: nothing there, nothing to read, nothing created by reading.
    assert!(Store::open_read_only(&path).unwrap().is_none());
    assert!(!pimainteno::store::exists(&path).unwrap());
    assert!(!path.exists());
    filled_store(&path);
    assert!(pimainteno::store::exists(&path).unwrap());

    let data = path.join("data.mdb");
    std::fs::remove_file(&data).unwrap();
    let errs = [
        Store::open(&cache(&path, 16 << 20, 100)).err().unwrap(),
        Store::open_read_only(&path).err().unwrap(),
        pimainteno::store::exists(&path).unwrap_err().into(),
    ];
    for err in errs {
        let d = damaged(&err);
        assert_eq!(d.path, data);
        assert!(
            d.what.starts_with("is missing, but lock.mdb is there"),
            "{d}"
        );
    }
    assert!(!data.exists(), "not made anew");
}

const FULL_CHILD: &str = "PM_TEST_STORE_FULL";

/// Not a test on its own: fills the store at `$PM_TEST_STORE_FULL`
/// (`<dir>|rlimit` or `<dir>|tmpfs`) until a write fails, checks the error
/// and prints `saved <n>`.
#[test]
fn store_full_child() {
    let Ok(spec) = std::env::var(FULL_CHILD) else {
        return;
    };
    let (dir, how) = spec.split_once('|').unwrap();
    let dir = Path::new(dir);
    let store = Store::open(&cache(dir, 16 << 20, 1000)).unwrap();
    if how == "rlimit" {
        // A file size limit just above the store: LMDB's next writes past
        // it fail with EFBIG, as they would with ENOSPC on a full disk.
        let len = std::fs::metadata(dir.join("data.mdb")).unwrap().len();
        // SAFETY: plain libc calls on this process.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let mut lim: libc::rlimit = std::mem::zeroed();
            assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim), 0);
            lim.rlim_cur = (len + (256 << 10)) as libc::rlim_t;
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
        }
    }
    let project = ProjectRecord::new("p", "/p");
    let text = "z".repeat(64 << 10);
    let mut saved = 0;
    let err = loop {
        match store.save_summary(&project, &summary("p", &text)) {
            Ok(_) => saved += 1,
            Err(e) => break e,
        }
        assert!(saved < 200, "the limit never bit");
    };
    // LMDB turns a short write into EIO (mdb_page_flush): the message
    // names the store and says how much room its filesystem has left.
    let msg = format!("{err:#}");
    let rest = msg
        .strip_prefix(&format!("cannot write the store at {} (", dir.display()))
        .expect(&msg);
    let (free, cause) = rest
        .split_once(" KiB free on its filesystem): ")
        .expect(&msg);
    let free: u64 = free.parse().unwrap();
    assert!(
        ["os error 5)", "os error 27)", "os error 28)"]
            .iter()
            .any(|e| cause.ends_with(e)),
        "{msg}"
    );
    if how == "tmpfs" {
        assert!(free < 64, "{msg}");
    }
    eprintln!("{msg}");
    // What was written before is intact.
    assert_eq!(store.summaries("p", 1000).unwrap().len(), saved);
    println!("saved {saved}");
}

fn run_full_child(mut cmd: Command, dir: &Path, how: &str) -> usize {
    let out = cmd
        .env(FULL_CHILD, format!("{}|{how}", dir.display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The harness prints the test's name on the same line.
    stdout
        .split("saved ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no count from the child: {stdout}"))
        .parse()
        .unwrap()
}

fn child_args(cmd: &mut Command) {
    cmd.args([
        "--exact",
        "store_full_child",
        "--nocapture",
        "--test-threads=1",
    ]);
}

#[test]
fn a_failed_write_names_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    child_args(&mut cmd);
    let saved = run_full_child(cmd, dir.path(), "rlimit");
    assert!(saved > 0);
    // Without the limit the store opens, sound, with what was saved.
    let store = Store::open(&cache(dir.path(), 16 << 20, 1000)).unwrap();
    assert_eq!(store.summaries("p", 1000).unwrap().len(), saved);
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn a_full_filesystem_names_the_store() {
    if !is_root() {
        println!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A private mount namespace: the tmpfs is gone with the child.
    let mount = "mount -t tmpfs -o size=1m pm-test \"$0\" && exec \"$@\"";
    let probe = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(mount)
        .arg(dir.path())
        .arg("true")
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        println!("skipped: cannot mount a tmpfs in a private namespace here: {probe:?}");
        return;
    }
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(mount)
        .arg(dir.path())
        .arg(std::env::current_exe().unwrap());
    child_args(&mut cmd);
    let saved = run_full_child(cmd, dir.path(), "tmpfs");
    assert!(saved > 0);
    assert!(
        !dir.path().join("data.mdb").exists(),
        "the store was on the tmpfs"
    );
}

/// The owner of a path.
fn owner(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap();
    (m.uid(), m.gid())
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// An account that is not root and owns nothing here.
const SERVICE: (u32, u32) = (54321, 54320);

#[test]
fn run_as_root_the_store_stays_the_service_accounts() {
    if !is_root() {
        println!("skipped: giving files to another account needs root");
        return;
    }
    use std::os::unix::fs::{PermissionsExt, chown};
    let top = tempfile::tempdir().unwrap();
    std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The state directory systemd made for the service account.
    let state = top.path().join("state");
    std::fs::create_dir(&state).unwrap();
    chown(&state, Some(SERVICE.0), Some(SERVICE.1)).unwrap();
    let path = state.join("store");

    // `sudo pimainteno ...` before any run: everything it creates is the
    // account's, the directory too.
    filled_store(&path);
    for p in [&path, &path.join("data.mdb"), &path.join("lock.mdb")] {
        assert_eq!(owner(p), SERVICE, "{}", p.display());
    }
    assert_eq!(mode(&path.join("lock.mdb")) & 0o600, 0o600);

    // Files root made before this fix: given back on the next open.
    chown(path.join("lock.mdb"), Some(0), Some(0)).unwrap();
    chown(path.join("data.mdb"), Some(0), Some(0)).unwrap();
    drop(Store::open(&cache(&path, 16 << 20, 100)).unwrap());
    assert_eq!(owner(&path.join("lock.mdb")), SERVICE);
    assert_eq!(owner(&path.join("data.mdb")), SERVICE);

    // Read-only too: LMDB makes a missing lock.mdb even then.
    std::fs::remove_file(path.join("lock.mdb")).unwrap();
    drop(Store::open_read_only(&path).unwrap().unwrap());
    assert_eq!(owner(&path.join("lock.mdb")), SERVICE);

    // And the account can use them: a process of its own writes.
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    std::os::unix::process::CommandExt::uid(&mut cmd, SERVICE.0);
    std::os::unix::process::CommandExt::gid(&mut cmd, SERVICE.1);
    cmd.args([
        "--exact",
        "store_writer_child",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("PM_TEST_STORE_CHILD", format!("{}|9", path.display()));
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A directory root owns keeps root's files root's.
    let rooted = top.path().join("rooted");
    filled_store(&rooted);
    assert_eq!(owner(&rooted.join("data.mdb")), (0, 0));
}

#[test]
fn a_store_another_account_owns_names_the_file_and_the_fix() {
    if !is_root() {
        println!("skipped: making files of another account needs root");
        return;
    }
    use std::os::unix::fs::{PermissionsExt, chown};
    let top = tempfile::tempdir().unwrap();
    std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = top.path().join("store");
    // Root's store in root's directory (an older PiMainteno run with sudo
    // first), opened by the service account.
    filled_store(&path);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let open_as_service = || {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        std::os::unix::process::CommandExt::uid(&mut cmd, SERVICE.0);
        std::os::unix::process::CommandExt::gid(&mut cmd, SERVICE.1);
        cmd.args([
            "--exact",
            "store_writer_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PM_TEST_STORE_CHILD", format!("{}|9", path.display()));
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let owned_by_root = format!(
        "{}/lock.mdb belongs to uid 0 (mode 0600) and this process runs as uid {}",
        path.display(),
        SERVICE.0
    );
    let stderr = open_as_service();
    assert!(
        stderr.contains(&owned_by_root)
            && stderr.contains(&format!("sudo chown -R USER: {}", path.display())),
        "{stderr}"
    );
    // The directory is the account's, the files are not: they go to it.
    chown(&path, Some(SERVICE.0), Some(SERVICE.1)).unwrap();
    let stderr = open_as_service();
    assert!(
        stderr.contains(&owned_by_root)
            && stderr.contains(&format!(
                "sudo chown --reference={0} {0}/lock.mdb",
                path.display()
            )),
        "{stderr}"
    );
}

/// Not a test on its own: opens the store at `$PM_TEST_FIRST_USE`
/// (`<dir>|<start ms>`) at the given time and writes one project.
#[test]
fn store_first_use_child() {
    let Ok(spec) = std::env::var("PM_TEST_FIRST_USE") else {
        return;
    };
    let (dir, start) = spec.split_once('|').unwrap();
    let start: u64 = start.parse().unwrap();
    while pimainteno::time::now_ms() < start {
        std::hint::spin_loop();
    }
    let store = Store::open(&cache(Path::new(dir), 16 << 20, 10)).unwrap();
    let name = format!("p{}", std::process::id());
    store
        .save_project(&ProjectRecord::new(&name, "/p"))
        .unwrap();
}

#[test]
fn processes_creating_the_store_at_once_all_succeed() {
    // While one creates the store, the others see lock.mdb before data.mdb
    // has its meta pages: that is first use, not a store that vanished.
    for _ in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let start = pimainteno::time::now_ms() + 300;
        let children: Vec<_> = (0..6)
            .map(|_| {
                Command::new(std::env::current_exe().unwrap())
                    .args([
                        "--exact",
                        "store_first_use_child",
                        "--nocapture",
                        "--test-threads=1",
                    ])
                    .env(
                        "PM_TEST_FIRST_USE",
                        format!("{}|{start}", dir.path().display()),
                    )
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let store = Store::open(&cache(dir.path(), 16 << 20, 10)).unwrap();
        assert_eq!(store.projects().unwrap().len(), 6);
    }
}
