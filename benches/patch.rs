//! `cargo bench --bench patch`: what one pm-patch attempt costs outside
//! the LLM and the check, on a 10,000-file repository: the worktree (a
//! full checkout into a git directory of its own), the change as a tree
//! and its confinement, the commit, bringing it into the repository and
//! the branch, removing the worktree. Target (README, "Benchmarks"): under 1 s.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pimainteno::config::PatchSettings;
use pimainteno::patch::{change, confine, deliver, worktree};

const FILES: usize = 10_000;
const ROUNDS: usize = 7;

fn main() {
    let root = tempfile::tempdir().unwrap();
    let repo_dir = root.path().join("big");
    for i in 0..FILES {
        let p = repo_dir.join(format!("src/m{:02}/f{i:05}.rs", i % 100));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, format!("pub fn f{i}() -> u32 {{\n    {i}\n}}\n")).unwrap();
    }
    common::git(&repo_dir, &["init", "-q"]);
    common::git(&repo_dir, &["add", "-A"]);
    common::git(&repo_dir, &["commit", "-qm", "10,000 files"]);
    let user = git2::Repository::open(&repo_dir).unwrap();
    let limits = PatchSettings {
        max_attempts: 3,
        max_files: 20,
        max_lines: 1000,
        max_bytes: pimainteno::config::validate::PATCH_MAX_BYTES_DEFAULT,
        allow_binary: false,
        author_name: "Bench".into(),
        author_email: "bench@example.invalid".into(),
        unsandboxed_check: false,
        landlock: true,
    };
    let on_disk = root.path().join("worktrees");
    let in_ram = PathBuf::from("/dev/shm").join(format!("pm-bench-{}", std::process::id()));
    println!("one attempt's overhead on a {FILES}-file repository, median of {ROUNDS}:");
    for (what, wt_root) in [
        ("in RAM (tmpfs, the default when it has room)", &in_ram),
        ("on disk (the state directory)", &on_disk),
    ] {
        if what.starts_with("in RAM") && !Path::new("/dev/shm").is_dir() {
            continue;
        }
        let mut times = Vec::new();
        let mut parts = [Duration::ZERO; 4];
        for round in 0..ROUNDS {
            let t = Instant::now();
            let wt = worktree::create(&user, wt_root, "big").unwrap();
            let made = t.elapsed();
            std::fs::write(
                wt.path.join("src/m07/f00007.rs"),
                "pub fn f7() -> u32 {\n    8\n}\n",
            )
            .unwrap();
            let tree = change::tree_from_workdir(&wt).unwrap();
            {
                let base = wt.repo.find_commit(wt.base).unwrap().tree().unwrap();
                let new = wt.repo.find_tree(tree).unwrap();
                let c = change::between(&wt.repo, &base, &new).unwrap();
                let protect =
                    confine::Protect::new(&["*.lock".to_string()], true, Some("cargo test"), &base)
                        .unwrap();
                confine::check(&wt.repo, &base, &new, &c, &protect, &limits).unwrap();
                assert_eq!(c.files.len(), 1);
            }
            let checked = t.elapsed();
            let commit =
                deliver::commit(&wt, tree, &limits, "bench\n\nGenerated-by: pimainteno\n").unwrap();
            deliver::bring_in(&user, &wt, commit).unwrap();
            let name = format!(
                "pimainteno/bench-{}-{round}",
                if wt_root == &in_ram { "ram" } else { "disk" }
            );
            deliver::create_branch(&user, &name, commit).unwrap();
            let committed = t.elapsed();
            wt.remove().unwrap();
            let total = t.elapsed();
            parts[0] += made;
            parts[1] += checked - made;
            parts[2] += committed - checked;
            parts[3] += total - committed;
            times.push(total);
        }
        let median = common::median(times);
        let avg = |d: Duration| d.as_secs_f64() * 1000.0 / ROUNDS as f64;
        println!(
            "  {what}: {:.0} ms (target < 1000 ms): {}",
            median.as_secs_f64() * 1000.0,
            if median < Duration::from_secs(1) {
                "within target"
            } else {
                "OUTSIDE TARGET"
            }
        );
        println!(
            "    mean parts: worktree {:.0} ms, change + confinement {:.0} ms, commit + branch {:.0} ms, removal {:.0} ms",
            avg(parts[0]),
            avg(parts[1]),
            avg(parts[2]),
            avg(parts[3])
        );
    }
    let _ = std::fs::remove_dir_all(&in_ram);
    containment_cost();
}

/// What containment adds to each run of the check: a check that does
/// nothing (`true`), run as the account and through the sandbox (both
/// layers, then the namespaces alone), in a worktree of the repository.
fn containment_cost() {
    use pimainteno::check;
    use pimainteno::config::CheckSettings;
    use pimainteno::sandbox::{self, Contained, Policy};
    let caps = sandbox::probe();
    if let Some(why) = caps.missing() {
        println!("containment: not measured ({why})");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let check = CheckSettings {
        command: "true".into(),
        timeout: Duration::from_secs(30),
    };
    let time = |contained: Option<&Contained<'_>>| {
        let times: Vec<Duration> = (0..20)
            .map(|_| {
                let t = Instant::now();
                let out = check::run_contained(dir.path(), &check, contained).unwrap();
                assert!(out.passed, "{out:?}");
                t.elapsed()
            })
            .collect();
        common::median(times).as_secs_f64() * 1000.0
    };
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let policy = |landlock: bool| Policy {
        landlock,
        ..Policy::new(dir.path(), home.as_deref())
    };
    let plain = time(None);
    let both = time(Some(&Contained {
        policy: policy(true),
        caps: &caps,
    }));
    let namespaces = time(Some(&Contained {
        policy: policy(false),
        caps: &caps,
    }));
    println!("a check that does nothing (`true`), median of 20:");
    println!("  as the account:                 {plain:>6.1} ms");
    println!("  contained (namespaces+landlock): {both:>6.1} ms");
    println!("  contained (namespaces alone):    {namespaces:>6.1} ms");
}
