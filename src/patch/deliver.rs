//! Delivery of a fix that passed: a commit of the confined tree (never of
//! what the check left in the worktree), brought into the user's
//! repository by this process, on a new branch (`branch` mode); then, in
//! `merge` mode, a fast-forward of the user's branch when the working tree
//! is clean and HEAD is still the patch's base.

use std::path::Path;

use anyhow::Context;
use git2::{ObjectType, Oid, Repository, Signature, StatusOptions, build::CheckoutBuilder};

use super::worktree::Worktree;
use crate::config::PatchSettings;

/// Commit `tree` (the base tree plus the confined change) in the
/// worktree's git directory, with the base as parent. No ref moves.
pub fn commit(
    wt: &Worktree,
    tree: Oid,
    author: &PatchSettings,
    message: &str,
) -> anyhow::Result<Oid> {
    let tree = wt.repo.find_tree(tree)?;
    let sig = Signature::now(&author.author_name, &author.author_email)
        .context("cannot make the commit's author from [patch] author_name/author_email")?;
    let parent = wt.repo.find_commit(wt.base)?;
    Ok(wt
        .repo
        .commit(None, &sig, &sig, message, &tree, &[&parent])?)
}

/// Copy `commit` and the objects it adds (new trees and blobs; what the
/// user's repository has is skipped, whole subtrees at once) into the
/// user's object database. Objects only: nothing refers to it until the
/// branch is created.
pub fn bring_in(user: &Repository, wt: &Worktree, commit: Oid) -> anyhow::Result<()> {
    let from = wt.repo.odb()?;
    let to = user.odb()?;
    let copy = |id: Oid| -> anyhow::Result<bool> {
        if to.exists(id) {
            return Ok(false);
        }
        let obj = from
            .read(id)
            .with_context(|| format!("cannot read {id} from {}", wt.gitdir.display()))?;
        to.write(obj.kind(), obj.data()).with_context(|| {
            format!(
                "cannot write {id} into {} (is the repository writable?)",
                user.path().display()
            )
        })?;
        Ok(true)
    };
    let c = wt.repo.find_commit(commit)?;
    let mut trees = vec![c.tree_id()];
    while let Some(t) = trees.pop() {
        if !copy(t)? {
            continue;
        }
        for e in wt.repo.find_tree(t)?.iter() {
            match e.kind() {
                Some(ObjectType::Tree) => trees.push(e.id()),
                Some(ObjectType::Blob) => {
                    copy(e.id())?;
                }
                _ => {}
            }
        }
    }
    copy(commit)?;
    Ok(())
}

/// `pimainteno/<date>-<words of the reason>`, made unique.
pub fn branch_name(user: &Repository, date: &str, reason: &str) -> String {
    let mut slug = String::new();
    for c in reason.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
        if slug.len() >= 40 {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    let base = format!(
        "pimainteno/{date}-{}",
        if slug.is_empty() { "fix" } else { slug }
    );
    let mut name = base.clone();
    let mut n = 2;
    while user.find_branch(&name, git2::BranchType::Local).is_ok() {
        name = format!("{base}-{n}");
        n += 1;
    }
    name
}

/// Create the branch at `commit` (one ref write).
pub fn create_branch(user: &Repository, name: &str, commit: Oid) -> anyhow::Result<()> {
    let c = user.find_commit(commit)?;
    user.branch(name, &c, false)
        .with_context(|| format!("cannot create the branch {name}"))?;
    Ok(())
}

/// Fast-forward the user's checked-out branch from `base` to `commit`.
/// `Err` says why not (the caller falls back to `branch`). `ignore` are
/// paths that do not make the tree dirty (the summary file pm-summarize
/// writes).
pub fn fast_forward(
    user: &Repository,
    base: Oid,
    commit: Oid,
    ignore: Option<&Path>,
) -> Result<String, String> {
    let head = user
        .head()
        .map_err(|e| format!("cannot read HEAD: {}", e.message()))?;
    if !head.is_branch() {
        return Err("HEAD is detached, not on a branch".into());
    }
    let name = head.name().unwrap_or_default().to_string();
    if head.target() != Some(base) {
        return Err(format!(
            "{} moved on since the patch was made (it was at {})",
            head.shorthand().unwrap_or("HEAD"),
            &base.to_string()[..12]
        ));
    }
    let mut opts = StatusOptions::new();
    opts.include_untracked(true)
        .include_ignored(false)
        .recurse_untracked_dirs(true);
    let statuses = user
        .statuses(Some(&mut opts))
        .map_err(|e| format!("cannot read the working tree's status: {}", e.message()))?;
    let dirty: Vec<String> = statuses
        .iter()
        .filter_map(|s| s.path().ok().map(str::to_string))
        .filter(|p| ignore.is_none_or(|i| Path::new(p) != i))
        .collect();
    if !dirty.is_empty() {
        return Err(format!(
            "the working tree has uncommitted changes ({}{})",
            dirty.iter().take(3).cloned().collect::<Vec<_>>().join(", "),
            if dirty.len() > 3 { ", ..." } else { "" }
        ));
    }
    let target = user
        .find_commit(commit)
        .and_then(|c| c.tree())
        .map_err(|e| e.message().to_string())?;
    // Safe checkout: it refuses to overwrite anything that changed since.
    user.checkout_tree(target.as_object(), Some(CheckoutBuilder::new().safe()))
        .map_err(|e| format!("cannot update the working tree: {}", e.message()))?;
    // Compare-and-swap: only if the branch is still at the base.
    user.reference_matching(
        &name,
        commit,
        true,
        base,
        "pimainteno: fast-forward to a checked fix",
    )
    .map_err(|e| format!("cannot move {name}: {}", e.message()))?;
    Ok(name)
}
