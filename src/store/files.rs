//! The store's files seen from outside LMDB, before it maps them.
//!
//! LMDB trusts `data.mdb`: a file cut short is mapped anyway, and the first
//! read of a page past its end kills the process with SIGBUS; a file cut to
//! nothing or gone is silently made anew (the history with it). So every
//! open first reads the two meta pages with plain `pread` and checks the
//! file against them, and tells first use from a store that vanished.
//! Run as root, the files LMDB creates are given to the store's owner, or
//! the service account could no longer open them.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The store's files cannot be used as they are: damaged, cut short, gone,
/// or owned by an account this process cannot act as. Callers find it in
/// an error's chain with `downcast_ref::<Damaged>()`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} {what}; {remedy}", path.display())]
pub struct Damaged {
    /// The file (or directory) at fault.
    pub path: PathBuf,
    /// What is wrong with it, after its name.
    pub what: String,
    /// What the user can do.
    pub remedy: String,
}

impl Damaged {
    /// A fault only starting afresh mends: the records are lost or unreadable.
    pub(crate) fn afresh(path: &Path, what: impl Into<String>) -> Damaged {
        let dir = path.parent().unwrap_or(path);
        Damaged {
            path: path.to_path_buf(),
            what: what.into(),
            remedy: format!(
                "the store is damaged: move it away (mv {0} {0}.damaged) or remove the files in it to start afresh with an empty store",
                dir.display()
            ),
        }
    }
}

/// The data file and the lock file of a store directory.
pub(crate) const DATA_FILE: &str = "data.mdb";
pub(crate) const LOCK_FILE: &str = "lock.mdb";

/// Whether `dir` holds a store: `Ok(false)` is first use (neither
/// `data.mdb` nor `lock.mdb`: a store may be created), `Ok(true)` a data
/// file to open, and an error a store that was there and is gone or empty.
pub fn exists(dir: &Path) -> Result<bool, Damaged> {
    let state = || -> Result<(Option<u64>, Option<u64>), Damaged> {
        Ok((
            file_size(&dir.join(DATA_FILE))?,
            file_size(&dir.join(LOCK_FILE))?,
        ))
    };
    let (data, lock) = state()?;
    let verdict = presence(&dir.join(DATA_FILE), data, lock);
    if verdict.is_ok() || lock.unwrap_or(0) == 0 {
        return verdict;
    }
    // A process creating the store holds LMDB's exclusive lock from before
    // lock.mdb has its size until data.mdb has its meta pages: wait for it
    // to let go, then look again.
    wait_for_creator(dir);
    let (data, lock) = state()?;
    presence(&dir.join(DATA_FILE), data, lock)
}

/// The decision of [`exists`] from the sizes of `data.mdb` and `lock.mdb`
/// (`None`: absent).
fn presence(data_path: &Path, data: Option<u64>, lock: Option<u64>) -> Result<bool, Damaged> {
    match (data, lock) {
        (Some(n), _) if n > 0 => Ok(true),
        // lock.mdb empty: its creator has not locked it yet (LMDB sizes it
        // under its exclusive lock, before it creates data.mdb).
        (None, None | Some(0)) => Ok(false),
        (None, Some(_)) => Err(Damaged::afresh(
            data_path,
            "is missing, but lock.mdb is there: the store was used, and its records are gone",
        )),
        (Some(_), _) => Err(Damaged::afresh(
            data_path,
            "is empty (0 bytes): the store was cut to nothing, and its records are gone",
        )),
    }
}

fn file_size(path: &Path) -> Result<Option<u64>, Damaged> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(m.len())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Damaged {
            path: path.to_path_buf(),
            what: format!("cannot be looked at: {e}"),
            remedy: "check the permissions of the store directory ([cache] path)".into(),
        }),
    }
}

/// Take and drop a shared lock on lock.mdb's first byte, where LMDB's
/// creator holds an exclusive one (waiting 5 s at most).
fn wait_for_creator(dir: &Path) {
    let lock = dir.join(LOCK_FILE);
    // POSIX locks belong to the process: closing any descriptor of
    // lock.mdb drops LMDB's own lock on it, so never while this process
    // has the store open.
    let open_here = dir
        .canonicalize()
        .is_ok_and(|canonical| heed::env_closing_event(canonical).is_some());
    if open_here {
        return;
    }
    let Ok(file) = File::open(&lock) else { return };
    // SAFETY: struct flock is plain integers, for which zero is valid.
    let mut range: libc::flock = unsafe { std::mem::zeroed() };
    range.l_type = libc::F_RDLCK as _;
    range.l_whence = libc::SEEK_SET as _;
    range.l_start = 0;
    range.l_len = 1;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // SAFETY: a valid descriptor and a fully initialised flock.
        let rc = unsafe {
            libc::fcntl(
                std::os::fd::AsRawFd::as_raw_fd(&file),
                libc::F_SETLK,
                &range,
            )
        };
        if rc == 0 || Instant::now() >= deadline {
            return; // dropping the file releases the lock
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// LMDB's on-disk layout (libraries/liblmdb/mdb.c of the vendored
// lmdb-master-sys, without MDB_VL32: pgno_t, txnid_t and mdb_size_t are
// size_t), for this target's pointer width. Offsets in bytes.
const W: usize = size_of::<usize>();
/// MDB_page header: mp_pgno (size_t), mp_pad u16, mp_flags u16, mp_lower
/// u16, mp_upper u16 (or mp_pages u32); the meta follows it (PAGEHDRSZ).
const PAGE_HEADER: usize = W + 8;
const PAGE_FLAGS: usize = W + 2;
const PAGE_LOWER: usize = W + 4;
const PAGE_OVERFLOW_PAGES: usize = W + 4;
const P_BRANCH: u16 = 0x01;
const P_LEAF: u16 = 0x02;
const P_OVERFLOW: u16 = 0x04;
const P_META: u16 = 0x08;
/// MDB_meta: mm_magic u32, mm_version u32, mm_address ptr, mm_mapsize
/// size_t, mm_dbs[2] (MDB_db: md_pad u32, md_flags u16, md_depth u16,
/// branch, leaf, overflow pages, entries, root: size_t each), mm_last_pg,
/// mm_txnid.
const META_MAGIC: usize = 0;
const META_VERSION: usize = 4;
const META_DBS: usize = 8 + 2 * W;
const DB_SIZE: usize = 8 + 5 * W;
const DB_ROOT: usize = 8 + 4 * W;
const META_LAST_PG: usize = META_DBS + 2 * DB_SIZE;
const META_TXNID: usize = META_LAST_PG + W;
const META_SIZE: usize = META_TXNID + W;
const MDB_MAGIC: u32 = 0xBEEF_C0DE;
const MDB_DATA_VERSION: u32 = 1;
/// `~(pgno_t)0`: an empty tree.
const P_INVALID: u64 = usize::MAX as u64;
/// MDB_node: mn_lo u16, mn_hi u16, mn_flags u16, mn_ksize u16, key, data.
const NODE_HEADER: usize = 8;
const F_BIGDATA: u16 = 0x01;

/// What a meta page says about the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meta {
    page_size: u64,
    last_page: u64,
    txnid: u64,
    /// Root of the free-page tree (`P_INVALID`: empty).
    free_root: u64,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn word_at(b: &[u8], at: usize) -> u64 {
    usize::from_ne_bytes(b[at..at + W].try_into().expect("a word")) as u64
}

/// Parse one meta page (its first `PAGE_HEADER + META_SIZE` bytes).
fn parse_meta(page: &[u8]) -> Result<Meta, String> {
    let m = &page[PAGE_HEADER..PAGE_HEADER + META_SIZE];
    if u16_at(page, PAGE_FLAGS) & P_META == 0 || u32_at(m, META_MAGIC) != MDB_MAGIC {
        return Err("bad magic".into());
    }
    let version = u32_at(m, META_VERSION);
    if version != MDB_DATA_VERSION {
        return Err(format!(
            "LMDB data version {version}, not {MDB_DATA_VERSION}"
        ));
    }
    // The free tree's md_pad holds the page size.
    let page_size = u64::from(u32_at(m, META_DBS));
    if !page_size.is_power_of_two() || !(512..=65536).contains(&page_size) {
        return Err(format!("a page size of {page_size} bytes"));
    }
    Ok(Meta {
        page_size,
        last_page: word_at(m, META_LAST_PG),
        txnid: word_at(m, META_TXNID),
        free_root: word_at(m, META_DBS + DB_ROOT),
    })
}

/// Check `data.mdb` against its meta pages, so that mapping it cannot
/// fault: both meta pages valid, and every page up to the last one in the
/// file, except pages the free list holds (LMDB does not write a page it
/// allocated and freed again in one transaction, so a sound file may end
/// before its last page when the pages after its end are free).
pub(crate) fn check_data_file(path: &Path) -> Result<(), Damaged> {
    let file = File::open(path).map_err(|e| {
        let dir = path.parent().unwrap_or(path);
        not_ours(dir, false).unwrap_or_else(|| Damaged {
            path: path.to_path_buf(),
            what: format!("cannot be opened: {e}"),
            remedy: "check that the store belongs to the account that uses it ([service] user)"
                .into(),
        })
    })?;
    // The check reads the file while other processes may commit: one that
    // fails while a newer transaction appeared (a meta page read as it was
    // written, free pages reused) is tried again.
    for _ in 0..3 {
        let before = newest_txnid(&file);
        match check_once(&file) {
            Ok(()) => return Ok(()),
            Err(what) if newest_txnid(&file) == before => {
                return Err(Damaged::afresh(path, what));
            }
            Err(_) => {}
        }
    }
    check_once(&file).map_err(|what| Damaged::afresh(path, what))
}

fn read_at(file: &File, at: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; len];
    file.read_exact_at(&mut buf, at)?;
    Ok(buf)
}

/// The two meta pages, or what is wrong with them.
fn metas(file: &File, len: u64) -> Result<(Meta, Meta), String> {
    let head = (PAGE_HEADER + META_SIZE) as u64;
    if len < head {
        return Err(format!(
            "is not an LMDB store (too short: {len} bytes, less than a meta page)"
        ));
    }
    let page0 = read_at(file, 0, head as usize).map_err(|e| format!("cannot be read: {e}"))?;
    let m0 = parse_meta(&page0).map_err(|w| format!("is not an LMDB store ({w})"))?;
    if len < m0.page_size + head {
        return Err(truncated(len, &m0));
    }
    let page1 =
        read_at(file, m0.page_size, head as usize).map_err(|e| format!("cannot be read: {e}"))?;
    let m1 = parse_meta(&page1).map_err(|w| format!("has a damaged second meta page ({w})"))?;
    if m1.page_size != m0.page_size {
        return Err("has meta pages that disagree on the page size".into());
    }
    Ok((m0, m1))
}

fn newest_txnid(file: &File) -> Option<u64> {
    let len = file.metadata().ok()?.len();
    let (m0, m1) = metas(file, len).ok()?;
    Some(m0.txnid.max(m1.txnid))
}

fn truncated(len: u64, meta: &Meta) -> String {
    format!(
        "is truncated: {len} bytes, its last page ends at {}",
        (meta.last_page.saturating_add(1)).saturating_mul(meta.page_size)
    )
}

fn check_once(file: &File) -> Result<(), String> {
    // The size after the metas: a meta is written after its pages.
    let len0 = file
        .metadata()
        .map_err(|e| format!("cannot be read: {e}"))?
        .len();
    if len0 == 0 {
        return Err(
            "is empty (0 bytes): the store was cut to nothing, and its records are gone".into(),
        );
    }
    let (m0, m1) = metas(file, len0)?;
    // LMDB uses the meta of the newest transaction.
    let meta = if m1.txnid > m0.txnid { m1 } else { m0 };
    let len = file
        .metadata()
        .map_err(|e| format!("cannot be read: {e}"))?
        .len();
    let pages_in_file = len / meta.page_size;
    if meta.last_page < pages_in_file {
        return Ok(());
    }
    if meta.last_page - pages_in_file >= 1 << 24 {
        return Err(truncated(len, &meta));
    }
    let missing = meta.last_page - pages_in_file + 1;
    let free = free_pages_from(file, &meta, pages_in_file).map_err(|_| truncated(len, &meta))?;
    if free.len() as u64 == missing {
        Ok(())
    } else {
        Err(truncated(len, &meta))
    }
}

/// The free pages past the file's end (`pages_in_file` on) up to the last
/// page, read from the free tree (keys: txnid; values: IDLs, a count then
/// page numbers). A page of the tree itself past the end is an error.
fn free_pages_from(file: &File, meta: &Meta, pages_in_file: u64) -> Result<HashSet<u64>, String> {
    let psize = meta.page_size;
    let mut found = HashSet::new();
    if meta.free_root == P_INVALID {
        return Ok(found);
    }
    let mut todo = vec![meta.free_root];
    let mut visited = 0u64;
    while let Some(pgno) = todo.pop() {
        visited += 1;
        if pgno >= pages_in_file || visited > pages_in_file {
            return Err("the free list is beyond the end".into());
        }
        let page = read_at(file, pgno * psize, psize as usize).map_err(|e| e.to_string())?;
        let flags = u16_at(&page, PAGE_FLAGS);
        let lower = usize::from(u16_at(&page, PAGE_LOWER));
        if lower < PAGE_HEADER || lower > page.len() {
            return Err("a bad page".into());
        }
        let keys = (lower - PAGE_HEADER) / 2;
        for i in 0..keys {
            let at = usize::from(u16_at(&page, PAGE_HEADER + 2 * i));
            if at + NODE_HEADER > page.len() {
                return Err("a bad node".into());
            }
            let lo = u64::from(u16_at(&page, at));
            let hi = u64::from(u16_at(&page, at + 2));
            let node_flags = u16_at(&page, at + 4);
            let ksize = usize::from(u16_at(&page, at + 6));
            if flags & P_BRANCH != 0 {
                let top = if W == 8 {
                    u64::from(node_flags) << 32
                } else {
                    0
                };
                todo.push(lo | hi << 16 | top);
            } else if flags & P_LEAF != 0 {
                let dsize = (lo | hi << 16) as usize;
                let data_at = at + NODE_HEADER + ksize;
                let data = if node_flags & F_BIGDATA != 0 {
                    if data_at + W > page.len() {
                        return Err("a bad node".into());
                    }
                    let over = word_at(&page, data_at);
                    if over >= pages_in_file {
                        return Err("a bad overflow page".into());
                    }
                    let head =
                        read_at(file, over * psize, PAGE_HEADER).map_err(|e| e.to_string())?;
                    let span = u64::from(u32_at(&head, PAGE_OVERFLOW_PAGES));
                    if u16_at(&head, PAGE_FLAGS) & P_OVERFLOW == 0
                        || over.saturating_add(span) > pages_in_file
                        || dsize as u64 > span * psize
                    {
                        return Err("a bad overflow page".into());
                    }
                    read_at(file, over * psize + PAGE_HEADER as u64, dsize)
                        .map_err(|e| e.to_string())?
                } else {
                    if data_at + dsize > page.len() {
                        return Err("a bad node".into());
                    }
                    page[data_at..data_at + dsize].to_vec()
                };
                let words = data.len() / W;
                if words == 0 {
                    continue;
                }
                let count = (word_at(&data, 0) as usize).min(words - 1);
                for j in 1..=count {
                    let p = word_at(&data, j * W);
                    if p >= pages_in_file && p <= meta.last_page {
                        found.insert(p);
                    }
                }
            } else {
                return Err("a page neither branch nor leaf".into());
            }
        }
    }
    Ok(found)
}

/// The owner (uid, gid) to give a store file, when one is due: only a
/// process running as root changes owners, only of a file root owns, and
/// only to a directory owner other than root (the service account that
/// systemd's StateDirectory= made it for).
pub(crate) fn owner_to_give(euid: u32, dir: (u32, u32), file: (u32, u32)) -> Option<(u32, u32)> {
    (euid == 0 && file.0 == 0 && dir.0 != 0 && file != dir).then_some(dir)
}

/// Give root's store files in `dir` to the directory's owner (see
/// [`owner_to_give`]), readable and writable by that owner: LMDB creates
/// them with the mode heed passes (0600) less the umask.
pub(crate) fn give_to_owner(dir: &Path) -> io::Result<()> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Ok(());
    }
    let d = std::fs::metadata(dir)?;
    for name in [DATA_FILE, LOCK_FILE] {
        let path = dir.join(name);
        let f = match std::fs::symlink_metadata(&path) {
            Ok(f) if f.is_file() => f,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if let Some((uid, gid)) = owner_to_give(euid, (d.uid(), d.gid()), (f.uid(), f.gid())) {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
            let mode = f.permissions().mode();
            if mode & 0o600 != 0o600 {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode | 0o600))?;
            }
        }
    }
    Ok(())
}

/// Create the store directory; run as root, the directories it creates get
/// the owner of the nearest one that existed (the service account's state
/// directory), as the files in it will.
pub(crate) fn create_dir(path: &Path) -> io::Result<()> {
    let mut created = Vec::new();
    let mut base = path;
    while !base.exists() {
        created.push(base.to_path_buf());
        match base.parent() {
            Some(p) => base = p,
            None => break,
        }
    }
    std::fs::create_dir_all(path)?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || created.is_empty() {
        return Ok(());
    }
    let parent = std::fs::metadata(base)?;
    for dir in created {
        let d = std::fs::metadata(&dir)?;
        if let Some((uid, gid)) = owner_to_give(0, (parent.uid(), parent.gid()), (d.uid(), d.gid()))
        {
            std::os::unix::fs::lchown(&dir, Some(uid), Some(gid))?;
        }
    }
    Ok(())
}

/// Why this process cannot use the store's files, when that is it: a file
/// this account may not read, or write (`write`; lock.mdb always: LMDB
/// opens it read-write even to read), because another account owns it.
pub(crate) fn not_ours(dir: &Path, write: bool) -> Option<Damaged> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    for (name, need) in [
        (LOCK_FILE, libc::R_OK | libc::W_OK),
        (
            DATA_FILE,
            if write {
                libc::R_OK | libc::W_OK
            } else {
                libc::R_OK
            },
        ),
    ] {
        let path = dir.join(name);
        let Ok(f) = std::fs::metadata(&path) else {
            continue;
        };
        let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
            continue;
        };
        // SAFETY: a NUL-terminated path; AT_EACCESS: as the effective ids.
        let usable =
            unsafe { libc::faccessat(libc::AT_FDCWD, c_path.as_ptr(), need, libc::AT_EACCESS) }
                == 0;
        if !usable && f.uid() != euid {
            // The directory's owner is the store's, unless root made that too.
            let dir_uid = std::fs::metadata(dir).map_or(f.uid(), |d| d.uid());
            let remedy = if dir_uid != f.uid() {
                format!(
                    "give it to the store's owner: sudo chown --reference={} {}",
                    dir.display(),
                    path.display()
                )
            } else {
                format!(
                    "give the store to the account of pimainteno.service ([service] user): sudo chown -R USER: {}",
                    dir.display()
                )
            };
            return Some(Damaged {
                what: format!(
                    "belongs to uid {} (mode {:04o}) and this process runs as uid {euid}",
                    f.uid(),
                    f.permissions().mode() & 0o7777
                ),
                remedy,
                path,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_gives_root_files_to_the_directory_owner() {
        let svc = (998, 997);
        // Root created the file in the service account's directory.
        assert_eq!(owner_to_give(0, svc, (0, 0)), Some(svc));
        // Not root: it could not, and need not.
        assert_eq!(owner_to_give(1000, svc, (0, 0)), None);
        // Already the owner's, or someone else's on purpose.
        assert_eq!(owner_to_give(0, svc, svc), None);
        assert_eq!(owner_to_give(0, svc, (1000, 1000)), None);
        // A directory root owns: root's files stay root's.
        assert_eq!(owner_to_give(0, (0, 0), (0, 0)), None);
        assert_eq!(owner_to_give(0, (0, 997), (0, 0)), None);
    }

    #[test]
    fn first_use_is_told_from_a_store_that_vanished() {
        let data = Path::new("/s/data.mdb");
        assert_eq!(presence(data, None, None), Ok(false), "first use");
        assert_eq!(presence(data, None, Some(0)), Ok(false), "being created");
        assert_eq!(presence(data, Some(8192), Some(8192)), Ok(true));
        assert_eq!(presence(data, Some(8192), None), Ok(true));
        for (d, l) in [(None, Some(8192)), (Some(0), Some(8192)), (Some(0), None)] {
            let e = presence(data, d, l).expect_err("vanished");
            assert_eq!(e.path, data);
            assert!(e.remedy.contains("mv /s /s.damaged"), "{e}");
        }
    }

    #[test]
    fn the_layout_matches_this_pointer_width() {
        // mdb.c's structs on 64-bit (PAGEHDRSZ 16, sizeof(MDB_meta) 136)
        // and 32-bit targets (12, 80).
        if W == 8 {
            assert_eq!(
                (PAGE_HEADER, META_LAST_PG, META_TXNID, META_SIZE),
                (16, 120, 128, 136)
            );
        } else {
            assert_eq!(
                (PAGE_HEADER, META_LAST_PG, META_TXNID, META_SIZE),
                (12, 72, 76, 80)
            );
        }
    }

    type Db = heed::Database<heed::types::Str, heed::types::Str>;

    fn env(dir: &Path) -> (heed::Env, Db) {
        // SAFETY: a fresh directory only this test uses.
        let env = unsafe {
            heed::EnvOpenOptions::new()
                .map_size(256 << 20)
                .max_dbs(1)
                .open(dir)
                .unwrap()
        };
        let mut w = env.write_txn().unwrap();
        let db: Db = env.create_database(&mut w, Some("d")).unwrap();
        w.commit().unwrap();
        (env, db)
    }

    /// One transaction that adds pages and frees most of them again: LMDB
    /// leaves such pages out of the file when they are the last ones.
    fn churn(env: &heed::Env, db: Db, round: usize) {
        let mut w = env.write_txn().unwrap();
        for i in 0..200 {
            let len = (round * 7919 + i * 104_729) % 3000;
            db.put(&mut w, &format!("{round:05}-{i:03}"), &"y".repeat(len))
                .unwrap();
        }
        for i in 0..200 {
            if (i + round) % 13 != 0 {
                db.delete(&mut w, &format!("{round:05}-{i:03}")).unwrap();
            }
        }
        w.commit().unwrap();
    }

    fn newest_meta(path: &Path) -> Meta {
        let file = File::open(path).unwrap();
        let (m0, m1) = metas(&file, file.metadata().unwrap().len()).unwrap();
        if m1.txnid > m0.txnid { m1 } else { m0 }
    }

    #[test]
    fn the_meta_pages_read_as_lmdb_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let (env, db) = env(dir.path());
        for round in 0..5 {
            churn(&env, db, round);
            let info = env.info();
            let meta = newest_meta(&dir.path().join(DATA_FILE));
            assert_eq!(meta.txnid, info.last_txn_id as u64);
            assert_eq!(meta.last_page, info.last_page_number as u64);
            // SAFETY: sysconf has no preconditions.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
            assert_eq!(meta.page_size, page);
            assert_ne!(meta.free_root, P_INVALID, "pages were freed");
        }
    }

    #[test]
    fn a_sound_file_may_end_before_its_last_page_a_cut_one_may_not() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join(DATA_FILE);
        let (env, db) = env(dir.path());
        // Until the file ends before the page its meta calls the last.
        let short = (0..300).find(|&round| {
            churn(&env, db, round);
            let meta = newest_meta(&data);
            std::fs::metadata(&data).unwrap().len() < (meta.last_page + 1) * meta.page_size
        });
        assert!(short.is_some(), "no transaction left free pages at the end");
        env.prepare_for_closing().wait();
        check_data_file(&data).expect("a sound store");

        let meta = newest_meta(&data);
        let len = std::fs::metadata(&data).unwrap().len();
        let cut = len / meta.page_size / 2 * meta.page_size;
        File::options()
            .write(true)
            .open(&data)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let e = check_data_file(&data).expect_err("pages in use are gone");
        assert_eq!(e.path, data);
        assert_eq!(
            e.what,
            format!(
                "is truncated: {cut} bytes, its last page ends at {}",
                (meta.last_page + 1) * meta.page_size
            )
        );
    }
}
