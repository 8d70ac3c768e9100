//! The LMDB store (heed), shared by every binary and the dashboard.
//!
//! One environment at `[cache] path`, named databases (DESIGN.md §4):
//! `meta` (schema version, daily token counters), `projects`, `summaries`,
//! `llm_calls`, `failures` and `signatures` (pm-onfailure), `pending` (work
//! pm-onfailure leaves for pm-patch), and `patches`. Keys of time-ordered records are
//! `<owner>/<time key>`, where the time key sorts by time and is unique
//! across processes, so a prefix scan lists one project's history in order.
//!
//! Several processes use the store at once (a timer run, a failure handler,
//! the dashboard): LMDB serializes writers and lets readers run freely.
//! Writes are short transactions. A run that has nothing to do opens only
//! read transactions, so it writes nothing.

mod files;

/// Whether root is to give a file the owner of its directory: the store's
/// rule, which /run/pimainteno follows too.
pub(crate) use files::owner_to_give;
pub mod records;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};
use heed::types::{SerdeJson, Str};
use heed::{Database, Env, EnvOpenOptions, MdbError, RoTxn, RwTxn, WithoutTls};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use files::{Damaged, exists};
pub use records::{
    CheckedRecord, DiagnosisRecord, FailureRecord, LlmCallRecord, LlmNote, PatchAttempt,
    PatchRecord, PendingRecord, ProjectRecord, RepairRecord, SignatureRecord, SummaryRecord,
};

use crate::config::CacheSettings;
use crate::config::values::format_size;

/// Version of the store's layout; bumped with a migration when it changes.
pub const SCHEMA_VERSION: u32 = 1;
const SCHEMA_KEY: &str = "schema_version";
/// Daily token counters live in `meta` under `tokens/<YYYY-MM-DD>`.
const TOKENS_PREFIX: &str = "tokens/";
/// Days of token counters kept (the budget only needs today).
const TOKEN_DAYS_KEPT: usize = 31;
/// LLM calls kept per project, as a multiple of `[cache] history`.
const CALLS_PER_HISTORY: usize = 4;

const DATABASES: [&str; 9] = [
    "meta",
    "projects",
    "summaries",
    "llm_calls",
    "patches",
    "failures",
    "signatures",
    "pending",
    "prompts",
];

type Json<T> = Database<Str, SerdeJson<T>>;

/// An open store. Cheap to keep for the life of a process.
pub struct Store {
    env: Env<WithoutTls>,
    path: PathBuf,
    history: usize,
    /// The map never grows beyond this: twice the configured size.
    max_map: usize,
    /// The time new record keys start from (µs); tests set it back.
    clock: fn() -> u64,
    meta: Json<serde_json::Value>,
    projects: Json<ProjectRecord>,
    summaries: Json<SummaryRecord>,
    llm_calls: Json<LlmCallRecord>,
    failures: Json<FailureRecord>,
    signatures: Json<SignatureRecord>,
    pending: Json<PendingRecord>,
    patches: Json<PatchRecord>,
    /// The prompt of each LLM call as it was sent (key: the call's key),
    /// for the newest `[cache] history` calls of each project or unit.
    /// `None` in a store made before it existed that no writer has
    /// opened since (the dashboard opens read-only).
    prompts: Option<Database<Str, Str>>,
}

/// A key that sorts by creation time and never collides between processes:
/// microseconds, pid and a per-process counter, fixed-width hex. Records
/// get theirs from [`Store`], which also keeps them in order when the
/// clock goes back.
pub fn time_key() -> String {
    time_key_at(now_micros())
}

/// [`time_key`] for a given time (µs since the epoch).
pub fn time_key_at(micros: u64) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) & 0xffff;
    format!("{micros:016x}{:08x}{n:04x}", std::process::id())
}

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn is_map_full(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<heed::Error>(),
            Some(heed::Error::Mdb(MdbError::MapFull))
        )
    })
}

fn is_map_resized(e: &heed::Error) -> bool {
    matches!(e, heed::Error::Mdb(MdbError::MapResized))
}

impl Store {
    /// Open (creating if needed) the store described by `[cache]`.
    ///
    /// Created only on first use (neither `data.mdb` nor `lock.mdb`): a
    /// store that was there and is gone or empty is a [`Damaged`] error, as
    /// is a `data.mdb` its meta pages do not vouch for.
    pub fn open(cache: &CacheSettings) -> anyhow::Result<Store> {
        let path = &cache.path;
        files::create_dir(path).with_context(|| {
            format!(
                "cannot create the store directory {} ([cache] path)",
                path.display()
            )
        })?;
        if files::exists(path)? {
            files::check_data_file(&path.join(files::DATA_FILE))?;
        }
        let page = page_size();
        let map_size = (cache.max_size as usize).div_ceil(page) * page;
        // SAFETY: the environment is only opened through this function, the
        // files are never modified by anything but LMDB, and the store lives
        // on a local filesystem (LMDB's lock file needs shared memory).
        let opened = unsafe {
            EnvOpenOptions::new()
                .read_txn_without_tls()
                .map_size(map_size)
                .max_dbs(DATABASES.len() as u32)
                .open(path)
        };
        give_to_owner(path);
        let env = opened.map_err(|e| open_error(e, path, "cannot open the store at", true))?;

        let existing = {
            let rtxn = read_txn(&env, path)?;
            let mut found = Vec::new();
            for name in DATABASES {
                found.push(
                    env.open_database::<Str, SerdeJson<serde_json::Value>>(&rtxn, Some(name))
                        .map_err(|e| reading(e.into(), path))?
                        .is_some(),
                );
            }
            found
        };
        if existing.iter().any(|&e| !e) {
            // First use (or an older layout): create what is missing.
            let created = (|| -> anyhow::Result<()> {
                let mut wtxn = env.write_txn()?;
                for name in DATABASES {
                    env.create_database::<Str, SerdeJson<serde_json::Value>>(
                        &mut wtxn,
                        Some(name),
                    )?;
                }
                Ok(wtxn.commit()?)
            })();
            created.map_err(|e| {
                store_error(
                    e,
                    path,
                    format!("cannot initialise the store at {}", path.display()),
                )
            })?;
        }
        let (store, version) = Store::from_env(
            env,
            path,
            cache.history as usize,
            map_size.saturating_mul(2),
        )?;
        match version {
            Some(v) if v == u64::from(SCHEMA_VERSION) => {}
            Some(v) if v > u64::from(SCHEMA_VERSION) => bail!(
                "the store at {} has schema version {v}, newer than this PiMainteno understands ({SCHEMA_VERSION}); upgrade PiMainteno, or move the store away to start afresh",
                path.display()
            ),
            _ => store.write(|s, txn| {
                s.meta
                    .put(txn, SCHEMA_KEY, &serde_json::json!(SCHEMA_VERSION))?;
                Ok(())
            })?,
        }
        Ok(store)
    }

    /// Open an existing store for reading only (the dashboard): nothing is
    /// created or migrated, and the directory need not be writable. LMDB
    /// still opens `lock.mdb` read-write (its reader table) when it can;
    /// on a read-only mount it reads without it. `None`: no store yet
    /// (first use); a store that vanished or is damaged is a [`Damaged`]
    /// error.
    pub fn open_read_only(path: &Path) -> anyhow::Result<Option<Store>> {
        if !files::exists(path)? {
            return Ok(None);
        }
        let data = path.join(files::DATA_FILE);
        files::check_data_file(&data)?;
        let len = std::fs::metadata(&data)
            .with_context(|| format!("cannot read the store {}", data.display()))?
            .len() as usize;
        // The map only needs to cover the file: LMDB raises it to the size
        // the writers recorded, and a later growth is adopted in read_txn.
        let page = page_size();
        let map_size = len.max(page).div_ceil(page) * page;
        // SAFETY: as in `open`; MDB_RDONLY makes LMDB map the file read-only
        // and never write it.
        let opened = unsafe {
            let mut options = EnvOpenOptions::new().read_txn_without_tls();
            options
                .map_size(map_size)
                .max_dbs(DATABASES.len() as u32)
                .flags(heed::EnvFlags::READ_ONLY);
            options.open(path)
        };
        // Even read-only, LMDB creates lock.mdb when it is missing.
        give_to_owner(path);
        let env = opened.map_err(|e| {
            let denied = matches!(&e, heed::Error::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied);
            let e = open_error(e, path, "cannot open the store to read it at", false);
            if denied && e.downcast_ref::<Damaged>().is_none() {
                // LMDB's reader table is in lock.mdb, opened read-write even
                // to read; data.mdb is the owner's only.
                e.context("only the store's owner can read it (the account of pimainteno.service, [service] user)")
            } else {
                e
            }
        })?;
        let (store, version) = Store::from_env(env, path, 0, map_size)?;
        if version.is_some_and(|v| v > u64::from(SCHEMA_VERSION)) {
            bail!(
                "the store at {} is newer than this PiMainteno understands; upgrade PiMainteno",
                path.display()
            );
        }
        Ok(Some(store))
    }

    /// The database handles of an environment whose databases exist, and
    /// its schema version.
    fn from_env(
        env: Env<WithoutTls>,
        path: &Path,
        history: usize,
        max_map: usize,
    ) -> anyhow::Result<(Store, Option<u64>)> {
        let rtxn = read_txn(&env, path)?;
        let open = |name: &str| -> anyhow::Result<Json<serde_json::Value>> {
            let db = env
                .open_database(&rtxn, Some(name))
                .map_err(|e| reading(e.into(), path))?;
            db.with_context(|| {
                format!(
                    "database {name} missing in the store at {}: it was made by an older PiMainteno; the next pm-summarize run upgrades it",
                    path.display()
                )
            })
        };
        let meta = open("meta")?;
        let projects = open("projects")?.remap_data_type();
        let summaries = open("summaries")?.remap_data_type();
        let llm_calls = open("llm_calls")?.remap_data_type();
        let failures = open("failures")?.remap_data_type();
        let signatures = open("signatures")?.remap_data_type();
        let pending = open("pending")?.remap_data_type();
        let patches = open("patches")?.remap_data_type();
        let prompts = env
            .open_database::<Str, Str>(&rtxn, Some("prompts"))
            .map_err(|e| reading(e.into(), path))?;
        let version = meta
            .get(&rtxn, SCHEMA_KEY)
            .map_err(|e| reading(e.into(), path))?
            .and_then(|v| v.as_u64());
        // Committed, not dropped: LMDB closes the handles opened in a read
        // transaction that is aborted, and the next use fails with EINVAL.
        rtxn.commit().map_err(|e| {
            store_error(
                e.into(),
                path,
                format!("cannot open the store at {}", path.display()),
            )
        })?;
        let store = Store {
            env,
            path: path.to_path_buf(),
            history,
            max_map,
            clock: now_micros,
            meta,
            projects,
            summaries,
            llm_calls,
            failures,
            signatures,
            pending,
            patches,
            prompts,
        };
        Ok((store, version))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` in a write transaction and commit. A full map is grown once
    /// to twice `[cache] max_size` and the transaction retried; when it is
    /// full at that size too, the error says what to do. The bound matters
    /// on 32-bit systems, where the map must fit in the address space.
    fn write<T>(&self, f: impl Fn(&Self, &mut RwTxn) -> anyhow::Result<T>) -> anyhow::Result<T> {
        match self.try_write(&f) {
            Err(e) if is_map_full(&e) => {
                let old = self.env.info().map_size;
                let limit = self.max_map;
                if old < limit {
                    tracing::warn!(
                        store = %self.path.display(),
                        "the store is full at {}; growing it to {} once",
                        format_size(old as u64),
                        format_size(limit as u64)
                    );
                    // SAFETY: no transaction of ours is open here (try_write
                    // dropped its own), which is what mdb_env_set_mapsize needs.
                    unsafe { self.env.resize(limit) }.with_context(|| {
                        format!(
                            "cannot grow the map of the store at {}",
                            self.path.display()
                        )
                    })?;
                    match self.try_write(&f) {
                        Err(e) if is_map_full(&e) => {}
                        other => return other,
                    }
                }
                Err(anyhow::anyhow!(
                    "the store at {} is full even at {}: raise [cache] max_size, or lower [cache] history and move the store away to start afresh",
                    self.path.display(),
                    format_size(self.env.info().map_size as u64)
                ))
            }
            other => other,
        }
    }

    /// One attempt of [`Store::write`]. Its errors name the store: a full
    /// disk or an I/O error at commit says which files it could not write.
    fn try_write<T>(
        &self,
        f: &impl Fn(&Self, &mut RwTxn) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let attempt = || -> anyhow::Result<T> {
            let mut txn = match self.env.write_txn() {
                Err(e) if is_map_resized(&e) => {
                    // Another process grew the map: adopt its size (0 = from the file).
                    // SAFETY: no transaction is open in this process.
                    unsafe { self.env.resize(0) }?;
                    self.env.write_txn()?
                }
                other => other?,
            };
            let value = f(self, &mut txn)?;
            txn.commit()?;
            Ok(value)
        };
        attempt().map_err(|e| {
            // LMDB reports a disk that filled up during a commit (a short
            // write) as EIO: the free space says whether that was it.
            let io = e
                .chain()
                .find_map(|c| match c.downcast_ref::<heed::Error>() {
                    Some(heed::Error::Io(io)) => io.raw_os_error(),
                    _ => c.downcast_ref::<std::io::Error>()?.raw_os_error(),
                });
            let free = match io {
                Some(libc::EIO | libc::ENOSPC | libc::EFBIG) => free_space(&self.path),
                _ => None,
            };
            let what = match free {
                Some(bytes) => format!(
                    "cannot write the store at {} ({} KiB free on its filesystem)",
                    self.path.display(),
                    bytes / 1024
                ),
                None => format!("cannot write the store at {}", self.path.display()),
            };
            store_error(e, &self.path, what)
        })
    }

    /// Run `f` in a read transaction; its errors name the store.
    fn read<T>(
        &self,
        f: impl FnOnce(&RoTxn<'_, WithoutTls>) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let txn = read_txn(&self.env, &self.path)?;
        f(&txn).map_err(|e| reading(e, &self.path))
    }

    pub fn project(&self, name: &str) -> anyhow::Result<Option<ProjectRecord>> {
        self.read(|txn| Ok(self.projects.get(txn, name)?))
    }

    pub fn projects(&self) -> anyhow::Result<Vec<ProjectRecord>> {
        self.read(|txn| {
            let mut out = Vec::new();
            for item in self.projects.iter(txn)? {
                out.push(item?.1);
            }
            Ok(out)
        })
    }

    pub fn save_project(&self, project: &ProjectRecord) -> anyhow::Result<()> {
        self.write(|s, txn| Ok(s.projects.put(txn, &project.name, project)?))
    }

    /// Store a new summary and point the project at it, in one transaction;
    /// the oldest summaries beyond `[cache] history` go. Returns its key.
    pub fn save_summary(
        &self,
        project: &ProjectRecord,
        summary: &SummaryRecord,
    ) -> anyhow::Result<String> {
        let prefix = format!("{}/", summary.project);
        self.write(|s, txn| {
            let key = s.new_key(s.summaries, txn, &prefix)?;
            s.summaries.put(txn, &key, summary)?;
            let mut p = project.clone();
            p.last_summary = Some(key.clone());
            s.projects.put(txn, &p.name, &p)?;
            trim(s.summaries, txn, &prefix, s.history)?;
            Ok(key)
        })
    }

    /// Summaries of a project, newest first.
    pub fn summaries(
        &self,
        project: &str,
        limit: usize,
    ) -> anyhow::Result<Vec<(String, SummaryRecord)>> {
        self.read(|txn| newest(txn, self.summaries, &format!("{project}/"), limit))
    }

    pub fn summary(&self, key: &str) -> anyhow::Result<Option<SummaryRecord>> {
        self.read(|txn| Ok(self.summaries.get(txn, key)?))
    }

    /// Record one provider call and add its tokens to today's counter.
    /// `prompt`: the text as sent, when it left the machine; kept for the
    /// newest `[cache] history` calls of the project.
    pub fn record_llm_call(
        &self,
        call: &LlmCallRecord,
        prompt: Option<&str>,
    ) -> anyhow::Result<String> {
        let prefix = format!("{}/", call.project);
        let day_key = format!("{TOKENS_PREFIX}{}", crate::time::day(call.time_ms));
        self.write(|s, txn| {
            let key = s.new_key(s.llm_calls, txn, &prefix)?;
            s.llm_calls.put(txn, &key, call)?;
            trim(s.llm_calls, txn, &prefix, s.history * CALLS_PER_HISTORY)?;
            if let (Some(prompts), Some(text)) = (s.prompts, prompt) {
                prompts.put(txn, &key, text)?;
                trim(prompts, txn, &prefix, s.history)?;
            }
            let used = s
                .meta
                .get(txn, &day_key)?
                .and_then(|v| v.as_u64())
                .unwrap_or(0);
            s.meta
                .put(txn, &day_key, &serde_json::json!(used + call.usage.total()))?;
            trim(s.meta, txn, TOKENS_PREFIX, TOKEN_DAYS_KEPT)?;
            Ok(key)
        })
    }

    /// LLM calls of a project, newest first.
    pub fn llm_calls(
        &self,
        project: &str,
        limit: usize,
    ) -> anyhow::Result<Vec<(String, LlmCallRecord)>> {
        self.read(|txn| newest(txn, self.llm_calls, &format!("{project}/"), limit))
    }

    /// The prompt of the LLM call `key` as it was sent, while it is kept.
    pub fn prompt(&self, key: &str) -> anyhow::Result<Option<String>> {
        let Some(prompts) = self.prompts else {
            return Ok(None);
        };
        self.read(|txn| Ok(prompts.get(txn, key)?.map(str::to_string)))
    }

    /// Tokens used on a UTC day (`YYYY-MM-DD`) across all processes.
    pub fn tokens_used(&self, day: &str) -> anyhow::Result<u64> {
        let key = format!("{TOKENS_PREFIX}{day}");
        self.read(|txn| {
            Ok(self
                .meta
                .get(txn, &key)?
                .and_then(|v| v.as_u64())
                .unwrap_or(0))
        })
    }

    /// Record a failure of a unit; the oldest beyond `[cache] history` for
    /// that unit go. Returns its key.
    pub fn save_failure(&self, failure: &FailureRecord) -> anyhow::Result<String> {
        let prefix = format!("{}/", failure.unit);
        self.write(|s, txn| {
            let key = s.new_key(s.failures, txn, &prefix)?;
            s.failures.put(txn, &key, failure)?;
            trim(s.failures, txn, &prefix, s.history)?;
            Ok(key)
        })
    }

    /// Replace a failure record (the diagnosis and repair outcome come
    /// after it was first stored), and with it the signature it has.
    pub fn update_failure(
        &self,
        key: &str,
        failure: &FailureRecord,
        signature: Option<&SignatureRecord>,
    ) -> anyhow::Result<()> {
        self.write(|s, txn| {
            s.failures.put(txn, key, failure)?;
            if let Some(sig) = signature {
                s.signatures.put(txn, &failure.signature, sig)?;
            }
            Ok(())
        })
    }

    pub fn failure(&self, key: &str) -> anyhow::Result<Option<FailureRecord>> {
        self.read(|txn| Ok(self.failures.get(txn, key)?))
    }

    /// Failures of a unit, newest first.
    pub fn failures(
        &self,
        unit: &str,
        limit: usize,
    ) -> anyhow::Result<Vec<(String, FailureRecord)>> {
        self.read(|txn| newest(txn, self.failures, &format!("{unit}/"), limit))
    }

    /// The units that have failures recorded, in name order.
    pub fn failed_units(&self) -> anyhow::Result<Vec<String>> {
        self.read(|txn| {
            let mut out: Vec<String> = Vec::new();
            for item in self
                .failures
                .remap_data_type::<heed::types::DecodeIgnore>()
                .iter(txn)?
            {
                let (key, ()) = item?;
                let unit = key.rsplit_once('/').map_or(key, |(u, _)| u);
                if out.last().map(String::as_str) != Some(unit) {
                    out.push(unit.to_string());
                }
            }
            Ok(out)
        })
    }

    pub fn signature(&self, signature: &str) -> anyhow::Result<Option<SignatureRecord>> {
        self.read(|txn| Ok(self.signatures.get(txn, signature)?))
    }

    /// Leave work for pm-patch. Returns its key.
    pub fn add_pending(&self, work: &PendingRecord) -> anyhow::Result<String> {
        let prefix = format!("{}/", work.project);
        self.write(|s, txn| {
            let key = s.new_key(s.pending, txn, &prefix)?;
            s.pending.put(txn, &key, work)?;
            trim(s.pending, txn, &prefix, s.history)?;
            Ok(key)
        })
    }

    /// Work left for a project's pm-patch, newest first.
    pub fn pending(&self, project: &str) -> anyhow::Result<Vec<(String, PendingRecord)>> {
        self.read(|txn| newest(txn, self.pending, &format!("{project}/"), usize::MAX))
    }

    /// Remove pending work (pm-patch took it).
    pub fn remove_pending(&self, keys: &[String]) -> anyhow::Result<()> {
        self.write(|s, txn| {
            for k in keys {
                s.pending.delete(txn, k)?;
            }
            Ok(())
        })
    }

    /// Store a patch run (again, under the same key, as it progresses:
    /// `key` None makes a new one). Returns its key.
    pub fn save_patch(&self, key: Option<&str>, patch: &PatchRecord) -> anyhow::Result<String> {
        let prefix = format!("{}/", patch.project);
        self.write(|s, txn| {
            let key = match key {
                Some(k) => k.to_string(),
                None => s.new_key(s.patches, txn, &prefix)?,
            };
            s.patches.put(txn, &key, patch)?;
            trim(s.patches, txn, &prefix, s.history)?;
            Ok(key)
        })
    }

    pub fn patch(&self, key: &str) -> anyhow::Result<Option<PatchRecord>> {
        self.read(|txn| Ok(self.patches.get(txn, key)?))
    }

    /// Patch runs of a project, newest first.
    pub fn patches(
        &self,
        project: &str,
        limit: usize,
    ) -> anyhow::Result<Vec<(String, PatchRecord)>> {
        self.read(|txn| newest(txn, self.patches, &format!("{project}/"), limit))
    }

    /// A small JSON value in `meta` (a capability's own state).
    pub fn meta(&self, key: &str) -> anyhow::Result<Option<serde_json::Value>> {
        self.read(|txn| Ok(self.meta.get(txn, key)?))
    }

    pub fn put_meta(&self, key: &str, value: &serde_json::Value) -> anyhow::Result<()> {
        self.write(|s, txn| Ok(s.meta.put(txn, key, value)?))
    }

    /// The check's state at the HEAD pm-patch last saw.
    pub fn checked(&self, project: &str) -> anyhow::Result<Option<CheckedRecord>> {
        Ok(self
            .meta(&checked_key(project))?
            .and_then(|v| serde_json::from_value(v).ok()))
    }

    pub fn set_checked(&self, project: &str, record: &CheckedRecord) -> anyhow::Result<()> {
        self.put_meta(&checked_key(project), &serde_json::to_value(record)?)
    }

    /// The key of a new record under `prefix` (`<owner>/`), in the write
    /// transaction that stores it: after every key already there, even when
    /// the clock went back (a Pi without RTC before NTP, a manual step), so
    /// the newest record is listed first and trimming never takes it.
    fn new_key<T: 'static>(
        &self,
        db: Json<T>,
        txn: &RwTxn,
        prefix: &str,
    ) -> anyhow::Result<String> {
        let key = format!("{prefix}{}", time_key_at((self.clock)()));
        let last = db
            .remap_data_type::<heed::types::DecodeIgnore>()
            .rev_prefix_iter(txn, prefix)?
            .next()
            .transpose()?
            .map(|(k, ())| k.to_string());
        let Some(last) = last.filter(|last| *last >= key) else {
            return Ok(key);
        };
        // Fixed-width hex: the first 16 digits are the microseconds.
        match last
            .get(prefix.len()..prefix.len() + 16)
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        {
            Some(micros) => Ok(format!("{prefix}{}", time_key_at(micros.saturating_add(1)))),
            None => Ok(key),
        }
    }

    /// Map size and the bytes in use, for `pimainteno status`.
    pub fn usage(&self) -> anyhow::Result<(u64, u64)> {
        let info = self.env.info();
        let page = page_size() as u64;
        Ok((
            info.map_size as u64,
            (info.last_page_number as u64 + 1) * page,
        ))
    }
}

fn checked_key(project: &str) -> String {
    format!("patch/checked/{project}")
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as usize } else { 4096 }
}

fn read_txn<'e>(env: &'e Env<WithoutTls>, path: &Path) -> anyhow::Result<RoTxn<'e, WithoutTls>> {
    let txn = match env.read_txn() {
        Err(e) if is_map_resized(&e) => {
            // SAFETY: no transaction is open in this process.
            unsafe { env.resize(0) }.and_then(|()| env.read_txn())
        }
        other => other,
    };
    txn.map_err(|e| reading(e.into(), path))
}

/// An error of LMDB on the store at `path`, named (`what`: what was being
/// done, and where), and when LMDB found its data file inconsistent, a
/// [`Damaged`] too.
fn store_error(e: anyhow::Error, path: &Path, what: String) -> anyhow::Error {
    let corrupt = e
        .chain()
        .find_map(|c| match c.downcast_ref::<heed::Error>() {
            Some(heed::Error::Mdb(
                m @ (MdbError::Corrupted
                | MdbError::PageNotFound
                | MdbError::Invalid
                | MdbError::VersionMismatch
                | MdbError::Panic),
            )) => Some(m.to_string()),
            _ => None,
        });
    let e = e.context(what);
    match corrupt {
        Some(what) => e.context(files::Damaged::afresh(
            &path.join(files::DATA_FILE),
            format!("is damaged (LMDB: {what})"),
        )),
        None => e,
    }
}

/// [`store_error`] of a read.
fn reading(e: anyhow::Error, path: &Path) -> anyhow::Error {
    store_error(
        e,
        path,
        format!("cannot read the store at {}", path.display()),
    )
}

/// The space left to unprivileged writers on the filesystem of `path`.
fn free_space(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // statvfs64: on 32-bit ARM statvfs is the 32-bit one, whose counts
    // overflow on a large disk (packaging/build-debs.sh refuses it).
    // SAFETY: a NUL-terminated path and a zeroed struct statvfs64 fills.
    let mut st: libc::statvfs64 = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs64(c_path.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// The error of opening the environment: LMDB's own, named, or what keeps
/// this account from the store's files.
fn open_error(e: heed::Error, path: &Path, doing: &str, write: bool) -> anyhow::Error {
    let denied =
        matches!(&e, heed::Error::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied);
    let e = store_error(e.into(), path, format!("{doing} {}", path.display()));
    match denied.then(|| files::not_ours(path, write)).flatten() {
        Some(d) => e.context(d),
        None => e,
    }
}

/// Run as root, give the files LMDB may just have created to the store's
/// owner. A failure is logged: root can use the store, and the service
/// account's own error will name the file.
fn give_to_owner(path: &Path) {
    if let Err(e) = files::give_to_owner(path) {
        tracing::warn!(
            store = %path.display(),
            "cannot give the store's files to the owner of {}: {e}",
            path.display()
        );
    }
}

/// Newest `limit` records under `prefix`.
fn newest<T: DeserializeOwned + Serialize + 'static>(
    txn: &RoTxn<'_, WithoutTls>,
    db: Json<T>,
    prefix: &str,
    limit: usize,
) -> anyhow::Result<Vec<(String, T)>> {
    let mut out = Vec::new();
    for item in db.rev_prefix_iter(txn, prefix)?.take(limit) {
        let (k, v) = item?;
        out.push((k.to_string(), v));
    }
    Ok(out)
}

/// Delete the oldest records under `prefix` beyond `keep`.
fn trim<D: 'static>(
    db: Database<Str, D>,
    txn: &mut RwTxn,
    prefix: &str,
    keep: usize,
) -> anyhow::Result<()> {
    let keys: Vec<String> = db
        .remap_data_type::<heed::types::DecodeIgnore>()
        .rev_prefix_iter(txn, prefix)?
        .skip(keep)
        .map(|r| r.map(|(k, _)| k.to_string()))
        .collect::<Result<_, _>>()?;
    for k in keys {
        db.delete(txn, &k)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reopened_store_reads_what_was_written_before() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CacheSettings {
            path: dir.path().join("store"),
            max_size: 4 << 20,
            history: 5,
        };
        let store = Store::open(&cache).unwrap();
        store
            .save_project(&ProjectRecord::new("demo", "/srv/demo"))
            .unwrap();
        drop(store);
        // A later run: the databases already exist, so their handles come
        // from a read transaction only.
        let store = Store::open(&cache).unwrap();
        let read = store.project("demo").unwrap().expect("the saved project");
        assert_eq!(read.path, "/srv/demo");
    }

    const DAY_MICROS: u64 = 86_400_000_000;

    fn open(dir: &Path, history: u32) -> Store {
        Store::open(&CacheSettings {
            path: dir.to_path_buf(),
            max_size: 4 << 20,
            history,
        })
        .unwrap()
    }

    fn failure(unit: &str, result: &str) -> FailureRecord {
        FailureRecord {
            v: records::RECORD_VERSION,
            unit: unit.into(),
            project: None,
            time_ms: crate::time::now_ms(),
            invocation_id: None,
            result: result.into(),
            exit_code: None,
            exit_status: None,
            exec_start: None,
            n_restarts: None,
            journal: Vec::new(),
            journal_truncated: false,
            signature: "s".into(),
            diagnosis: DiagnosisRecord {
                kind: "unknown".into(),
                cause: String::new(),
                confidence_pct: 0,
                evidence: Vec::new(),
                action: "none".into(),
                source: "analyzer".into(),
            },
            llm: None,
            repair: RepairRecord {
                action: "none".into(),
                reason: String::new(),
                outcome: "pending".into(),
                state_after: None,
            },
        }
    }

    fn results(store: &Store, unit: &str) -> Vec<String> {
        store
            .failures(unit, 100)
            .unwrap()
            .into_iter()
            .map(|(_, f)| f.result)
            .collect()
    }

    fn micros_of(key: &str) -> u64 {
        let time = key.rsplit_once('/').unwrap().1;
        assert_eq!(time.len(), 28, "fixed width: {key}");
        u64::from_str_radix(&time[..16], 16).unwrap()
    }

    #[test]
    fn a_record_written_after_the_clock_went_back_is_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path(), 3);
        for n in ["a", "b", "c"] {
            store.save_failure(&failure("x.service", n)).unwrap();
        }
        store.clock = || now_micros() - DAY_MICROS;
        let key = store.save_failure(&failure("x.service", "d")).unwrap();
        // Listed first, and the trim to 3 took the oldest, not it.
        assert_eq!(results(&store, "x.service"), ["d", "c", "b"]);
        assert!(store.failure(&key).unwrap().is_some(), "{key} trimmed");
        let again = store.save_failure(&failure("x.service", "e")).unwrap();
        assert!(again > key, "{again} after {key}");
        assert_eq!(results(&store, "x.service"), ["e", "d", "c"]);
        // A unit without records takes the clock as it is.
        let other = store.save_failure(&failure("y.service", "a")).unwrap();
        assert!(micros_of(&other) < now_micros() - DAY_MICROS + 60_000_000);
    }

    #[test]
    fn keys_stay_ordered_when_the_clock_comes_back_from_the_future() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path(), 2);
        let project = ProjectRecord::new("p", "/p");
        let summary = |text: &str| SummaryRecord {
            v: records::RECORD_VERSION,
            project: "p".into(),
            created_ms: 0,
            commit: None,
            branch: None,
            dirty: false,
            fingerprint: "f".into(),
            provider: "none".into(),
            model: String::new(),
            text: text.into(),
            duration_ms: 0,
            usage: crate::llm::Usage::default(),
            file: None,
            sandbox_error: None,
        };
        store.clock = || now_micros() + DAY_MICROS;
        let ahead = store.save_summary(&project, &summary("ahead")).unwrap();
        store.clock = now_micros;
        let back = store.save_summary(&project, &summary("back")).unwrap();
        let last = store.save_summary(&project, &summary("last")).unwrap();
        assert!(ahead < back && back < last, "{ahead} {back} {last}");
        // Each one step after the newest, not a day before it.
        assert_eq!(micros_of(&back), micros_of(&ahead) + 1);
        let texts: Vec<String> = store
            .summaries("p", 10)
            .unwrap()
            .into_iter()
            .map(|(_, s)| s.text)
            .collect();
        assert_eq!(texts, ["last", "back"], "history 2 kept the newest");
        assert_eq!(
            store.project("p").unwrap().unwrap().last_summary.as_deref(),
            Some(last.as_str())
        );
        // The other histories follow the same rule.
        store.clock = || now_micros() + DAY_MICROS;
        let w1 = store
            .add_pending(&PendingRecord {
                v: records::RECORD_VERSION,
                project: "p".into(),
                unit: "u".into(),
                failure: "f1".into(),
                created_ms: 0,
            })
            .unwrap();
        store.clock = now_micros;
        let w2 = store
            .add_pending(&PendingRecord {
                v: records::RECORD_VERSION,
                project: "p".into(),
                unit: "u".into(),
                failure: "f2".into(),
                created_ms: 0,
            })
            .unwrap();
        let pending = store.pending("p").unwrap();
        assert_eq!(pending[0].0, w2);
        assert_eq!(pending[1].0, w1);
    }

    #[test]
    fn write_and_read_errors_name_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 3);
        // What LMDB reports when the disk is full or failing, raised inside
        // the transaction as a put or the commit would.
        for errno in [libc::ENOSPC, libc::EIO] {
            let err = store
                .write(|_, _| -> anyhow::Result<()> {
                    Err(heed::Error::Io(std::io::Error::from_raw_os_error(errno)).into())
                })
                .unwrap_err();
            let msg = format!("{err:#}");
            // With the room left, which tells a full disk from a failing one.
            let named = format!("cannot write the store at {} (", dir.path().display());
            assert!(
                msg.starts_with(&named) && msg.contains(" KiB free on its filesystem): "),
                "{msg}"
            );
            assert!(err.downcast_ref::<Damaged>().is_none(), "{msg}");
        }
        let err = store
            .read(|_| -> anyhow::Result<()> {
                Err(heed::Error::Io(std::io::Error::from_raw_os_error(libc::EIO)).into())
            })
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.starts_with(&format!(
                "cannot read the store at {}: ",
                dir.path().display()
            )) && msg.contains("os error 5"),
            "{msg}"
        );
        // LMDB finding its file inconsistent: a Damaged the callers can tell.
        let err = store
            .read(|_| -> anyhow::Result<()> { Err(heed::Error::Mdb(MdbError::Corrupted).into()) })
            .unwrap_err();
        let damaged = err.downcast_ref::<Damaged>().expect("Damaged");
        assert_eq!(damaged.path, dir.path().join("data.mdb"));
        assert!(format!("{err:#}").contains("is damaged (LMDB: "), "{err:#}");
    }
}
