//! The worktree an attempt works in: a git worktree of the user's
//! repository, under PiMainteno's state directory, detached at the base
//! commit.
//!
//! Detached on purpose: no branch exists until a fix has passed the check
//! and is committed (the branch is then created in one ref write), so a
//! kill at any moment leaves the user's branches as they were. What a kill
//! can leave is the worktree itself and its entry in `.git/worktrees/`,
//! which `git status` and `git branch` do not show; the next run removes
//! them ([`clean_stale`]).
//!
//! libgit2's `git_worktree_add` always creates or takes a branch, so the
//! worktree's administrative files (`gitdir`, `commondir`, `HEAD`) are
//! written here, in git's documented layout, and git2 then checks it out.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use git2::{Oid, Repository, build::CheckoutBuilder};

/// Names of our worktrees start with this, in `.git/worktrees/` too.
const PREFIX: &str = "pimainteno-";

/// A worktree of one attempt. Removed by [`Worktree::remove`].
pub struct Worktree {
    /// The checked-out files.
    pub path: PathBuf,
    /// `.git/worktrees/<name>` in the user's repository.
    admin: PathBuf,
    pub repo: Repository,
    pub base: Oid,
}

/// The user's repository's common git directory (`.git`).
fn common_dir(user: &Repository) -> PathBuf {
    user.commondir().to_path_buf()
}

/// Make a worktree at the user's HEAD under `root`.
pub fn create(user: &Repository, root: &Path, project: &str) -> anyhow::Result<Worktree> {
    let base = user
        .head()
        .ok()
        .and_then(|h| h.target())
        .context("the repository has no commit yet: there is nothing to patch")?;
    let name = format!("{PREFIX}{project}-{}", &crate::store::time_key()[8..]);
    let path = root.join(&name);
    let admin = common_dir(user).join("worktrees").join(&name);
    std::fs::create_dir_all(&admin).with_context(|| {
        format!(
            "cannot create {} (is the repository writable?)",
            admin.display()
        )
    })?;
    std::fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
    let write = |file: PathBuf, text: String| {
        std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))
    };
    write(
        admin.join("gitdir"),
        format!("{}\n", path.join(".git").display()),
    )?;
    write(admin.join("commondir"), "../..\n".into())?;
    write(admin.join("HEAD"), format!("{base}\n"))?;
    write(path.join(".git"), format!("gitdir: {}\n", admin.display()))?;
    let repo = Repository::open(&path)
        .with_context(|| format!("cannot open the worktree {}", path.display()))?;
    if !repo.is_worktree() {
        bail!(
            "{} is not a worktree of {}",
            path.display(),
            user.path().display()
        );
    }
    repo.checkout_head(Some(CheckoutBuilder::new().force()))
        .with_context(|| format!("cannot check out {base} in {}", path.display()))?;
    Ok(Worktree {
        path,
        admin,
        repo,
        base,
    })
}

impl Worktree {
    /// Delete the files and git's entry for the worktree.
    pub fn remove(self) -> anyhow::Result<()> {
        let Worktree {
            path, admin, repo, ..
        } = self;
        drop(repo);
        remove_dir(&path)?;
        remove_dir(&admin)
    }
}

fn remove_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// Remove what an interrupted run left: this project's entries in
/// `.git/worktrees/` and the worktrees they point to. Runs under the
/// project's lock, so no live run uses them. Only directories named like
/// ours, in a directory named `worktrees`, are deleted. Returns how many.
pub fn clean_stale(user: &Repository, roots: &[&Path], project: &str) -> anyhow::Result<usize> {
    let ours = format!("{PREFIX}{project}-");
    let is_ours = |dir: &Path| {
        dir.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(&ours))
            && dir
                .parent()
                .and_then(|p| p.file_name())
                .is_some_and(|n| n == "worktrees")
    };
    let mut n = 0;
    if let Ok(entries) = std::fs::read_dir(common_dir(user).join("worktrees")) {
        for e in entries.flatten() {
            if !e.file_name().to_string_lossy().starts_with(&ours) {
                continue;
            }
            let gitdir = std::fs::read_to_string(e.path().join("gitdir")).unwrap_or_default();
            if let Some(wt) = Path::new(gitdir.trim()).parent().filter(|d| is_ours(d)) {
                remove_dir(wt)?;
            }
            remove_dir(&e.path())?;
            n += 1;
        }
    }
    // A worktree whose git entry was never written (killed in between).
    for root in roots {
        if let Ok(entries) = std::fs::read_dir(root) {
            for e in entries.flatten() {
                if is_ours(&e.path()) {
                    remove_dir(&e.path())?;
                    n += 1;
                }
            }
        }
    }
    Ok(n)
}

/// Where this project's worktrees go: a tmpfs runtime directory
/// (`$RUNTIME_DIRECTORY` of the unit, else `$XDG_RUNTIME_DIR`) when it has
/// room for twice the checked-out files, else `state/worktrees` on disk. A
/// worktree is a full checkout: in RAM it costs no SD card writes and is
/// many times faster to make (README, "Benchmarks"); a project too big
/// for the RAM disk goes to disk.
pub fn location(user: &Repository, state_dir: &Path) -> PathBuf {
    let needed = user
        .index()
        .map(|i| i.iter().map(|e| u64::from(e.file_size)).sum::<u64>())
        .unwrap_or(u64::MAX / 4)
        .saturating_mul(2)
        .saturating_add(8 << 20);
    for var in ["RUNTIME_DIRECTORY", "XDG_RUNTIME_DIR"] {
        let Some(dir) = std::env::var_os(var).map(PathBuf::from) else {
            continue;
        };
        // $RUNTIME_DIRECTORY may list several, separated by ':'.
        let dir = PathBuf::from(dir.to_string_lossy().split(':').next().unwrap_or_default());
        if free_bytes(&dir).is_some_and(|free| free >= needed) {
            return dir.join("worktrees");
        }
    }
    state_dir.join("worktrees")
}

fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // statvfs64: the 64-bit-offset call on 32-bit ARM too (the armhf
    // package check refuses the old one).
    // SAFETY: statvfs64 writes into the zeroed struct; the path is a valid C string.
    unsafe {
        let mut st: libc::statvfs64 = std::mem::zeroed();
        if libc::statvfs64(c.as_ptr(), &mut st) != 0 {
            return None;
        }
        Some(st.f_bavail as u64 * st.f_frsize as u64)
    }
}
