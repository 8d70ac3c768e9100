//! The worktree an attempt works in: the base commit checked out under
//! PiMainteno's state directory, with a git directory of its own.
//!
//! Not a linked worktree (`git worktree add`): a linked worktree shares
//! the user's `.git` (hooks, config, refs, objects), and code the model
//! wrote runs in it. Here the worktree's git directory is a sibling of the
//! checked-out files (`<name>.git`, outside what the check may write), and
//! it borrows the user's objects read-only through `objects/info/alternates`,
//! so making it copies no object. The finished commit is brought into the
//! user's repository by pm-patch itself ([`super::deliver::bring_in`]).
//!
//! Detached at the base: no branch exists until a fix has passed the check
//! and is committed (the branch is then created in one ref write), so a
//! kill at any moment leaves the user's repository as it was. What a kill
//! can leave is the worktree and its git directory, which the next run
//! removes ([`clean_stale`]).

use std::path::{Path, PathBuf};

use anyhow::Context;
use git2::{Oid, Repository, RepositoryInitOptions, build::CheckoutBuilder};

/// Names of our worktrees start with this.
const PREFIX: &str = "pimainteno-";

/// A worktree of one run. Removed by [`Worktree::remove`].
pub struct Worktree {
    /// The checked-out files: all the check may write.
    pub path: PathBuf,
    /// Its git directory, beside `path`.
    pub gitdir: PathBuf,
    /// Opened on `gitdir` (never through the `.git` file in `path`, which
    /// code in the worktree could rewrite).
    pub repo: Repository,
    pub base: Oid,
    /// The user's object directory, borrowed read-only.
    pub user_objects: PathBuf,
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
    let gitdir = root.join(format!("{name}.git"));
    std::fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut opts = RepositoryInitOptions::new();
    opts.no_reinit(true)
        .no_dotgit_dir(true)
        .mkdir(true)
        .external_template(false)
        .workdir_path(&path);
    Repository::init_opts(&gitdir, &opts)
        .with_context(|| format!("cannot create the git directory {}", gitdir.display()))?;
    let user_objects = user.commondir().join("objects");
    let user_objects = user_objects.canonicalize().with_context(|| {
        format!(
            "cannot read the repository's objects in {}",
            user_objects.display()
        )
    })?;
    let alternates = gitdir.join("objects/info/alternates");
    std::fs::create_dir_all(gitdir.join("objects/info"))
        .and_then(|()| std::fs::write(&alternates, format!("{}\n", user_objects.display())))
        .with_context(|| format!("cannot write {}", alternates.display()))?;
    // Opened again: the object database reads its alternates when opened.
    let repo = open(&gitdir, &path)?;
    repo.set_head_detached(base)
        .with_context(|| format!("cannot point {} at {base}", gitdir.display()))?;
    let wt = Worktree {
        path,
        gitdir,
        repo,
        base,
        user_objects,
    };
    wt.checkout_base()?;
    Ok(wt)
}

/// Our git directory with `workdir` as its working tree.
fn open(gitdir: &Path, workdir: &Path) -> anyhow::Result<Repository> {
    let repo = Repository::open_bare(gitdir)
        .with_context(|| format!("cannot open {}", gitdir.display()))?;
    repo.set_workdir(workdir, false)
        .with_context(|| format!("cannot use {} as the worktree", workdir.display()))?;
    Ok(repo)
}

impl Worktree {
    /// The base commit's files, in a directory emptied first: nothing the
    /// last attempt left (links included) is written through or kept.
    pub fn checkout_base(&self) -> anyhow::Result<()> {
        let tree = self.repo.find_commit(self.base)?.tree()?;
        self.checkout_tree(&tree)
    }

    /// `tree`'s files in the emptied directory, and the index to match.
    pub fn checkout_tree(&self, tree: &git2::Tree<'_>) -> anyhow::Result<()> {
        empty_dir(&self.path)?;
        std::fs::write(
            self.path.join(".git"),
            format!("gitdir: {}\n", self.gitdir.display()),
        )
        .with_context(|| format!("cannot write {}/.git", self.path.display()))?;
        let mut index = self.repo.index()?;
        index.read_tree(tree)?;
        index.write()?;
        self.repo
            .checkout_index(Some(&mut index), Some(CheckoutBuilder::new().force()))
            .with_context(|| format!("cannot check out the files in {}", self.path.display()))?;
        Ok(())
    }

    /// Bring the base's own checkout (nothing else ran in it since) to
    /// `tree`: only the files that differ are written, by libgit2.
    pub fn update_to(&self, tree: &git2::Tree<'_>) -> anyhow::Result<()> {
        self.repo
            .checkout_tree(tree.as_object(), Some(CheckoutBuilder::new().force()))
            .with_context(|| format!("cannot write the change in {}", self.path.display()))?;
        let mut index = self.repo.index()?;
        index.read_tree(tree)?;
        index.write()?;
        Ok(())
    }

    /// Delete the files and the git directory.
    pub fn remove(self) -> anyhow::Result<()> {
        let Worktree {
            path, gitdir, repo, ..
        } = self;
        drop(repo);
        remove_dir(&path)?;
        remove_dir(&gitdir)
    }
}

/// Remove everything in `dir` (made again if missing), links as links.
/// What the check left may be read-only: write permission is given back
/// to directories first (never following a link).
fn empty_dir(dir: &Path) -> anyhow::Result<()> {
    if std::fs::symlink_metadata(dir).is_ok() {
        make_removable(dir);
        remove_dir(dir)?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

fn make_removable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let _ = std::fs::set_permissions(
        dir,
        std::fs::Permissions::from_mode(meta.permissions().mode() | 0o700),
    );
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            make_removable(&e.path());
        }
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

/// Remove what an interrupted run left: this project's worktrees and their
/// git directories under `roots`, and the linked worktrees that earlier
/// builds registered in the user's `.git/worktrees/`. Runs under the
/// project's lock, so no live run uses them. Only entries named like ours,
/// in a directory named `worktrees`, are deleted. Returns how many.
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
    if let Ok(entries) = std::fs::read_dir(user.commondir().join("worktrees")) {
        for e in entries.flatten() {
            if !e.file_name().to_string_lossy().starts_with(&ours) {
                continue;
            }
            let gitdir = std::fs::read_to_string(e.path().join("gitdir")).unwrap_or_default();
            if let Some(wt) = Path::new(gitdir.trim()).parent().filter(|d| is_ours(d)) {
                make_removable(wt);
                remove_dir(wt)?;
            }
            remove_dir(&e.path())?;
            n += 1;
        }
    }
    for root in roots {
        if let Ok(entries) = std::fs::read_dir(root) {
            for e in entries.flatten() {
                let p = e.path();
                if is_ours(&p) {
                    make_removable(&p);
                    remove_dir(&p)?;
                    // A worktree and its git directory are one leftover.
                    if !p.to_string_lossy().ends_with(".git") {
                        n += 1;
                    }
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
