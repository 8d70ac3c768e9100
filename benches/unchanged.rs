//! `cargo bench --bench unchanged`: pm-summarize over 100 generated
//! repositories in which nothing changed, against `git status --porcelain`
//! over the same repositories. Targets (README, "Benchmarks"): under 5 ms
//! per project, and no more than 2x the time of `git status`.
//!
//! A plain `main` (harness = false): it times whole processes, as a timer
//! run would start them, and prints the figures.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const PROJECTS: usize = 100;
const FILES_PER_PROJECT: usize = 40;
const ROUNDS: usize = 15;

fn make_repo(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    common::git(dir, &["init", "-q"]);
    for f in 0..FILES_PER_PROJECT {
        let body: String = (0..30)
            .map(|l| format!("fn f{f}_{l}() {{ /* project {n} */ }}\n"))
            .collect();
        std::fs::write(dir.join(format!("src/m{f}.rs")), body).unwrap();
    }
    std::fs::write(dir.join("README.md"), format!("# project {n}\n")).unwrap();
    common::git(dir, &["add", "."]);
    common::git(dir, &["commit", "-qm", "initial"]);
    // A little uncommitted work too: the common case on a Pi.
    std::fs::write(dir.join("src/m0.rs"), "// edited\n").unwrap();
    std::fs::write(dir.join("notes.txt"), "untracked\n").unwrap();
}

fn main() {
    let root = tempfile::tempdir().unwrap();
    let repos: Vec<PathBuf> = (0..PROJECTS)
        .map(|i| root.path().join(format!("p{i:03}")))
        .collect();
    for (i, r) in repos.iter().enumerate() {
        make_repo(r, i);
    }
    let config = root.path().join("pimainteno.toml");
    let mut text = format!(
        "[llm]\nprovider = \"none\"\n\n[cache]\npath = \"{}\"\n",
        root.path().join("store").display()
    );
    for r in &repos {
        text.push_str(&format!("\n[[project]]\npath = \"{}\"\n", r.display()));
    }
    std::fs::write(&config, text).unwrap();

    let summarize = || {
        let out = Command::new(env!("CARGO_BIN_EXE_pm-summarize"))
            .arg("--config")
            .arg(&config)
            .env_remove("INVOCATION_ID")
            .env_remove("JOURNAL_STREAM")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let git_status_all = || {
        for r in &repos {
            let out = Command::new("git")
                .args(["status", "--porcelain"])
                .current_dir(r)
                .output()
                .unwrap();
            assert!(out.status.success());
        }
    };

    // First run writes every summary; then both sides are warm.
    let first = Instant::now();
    summarize();
    let first = first.elapsed();
    summarize();
    git_status_all();

    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        summarize();
        ours.push(t.elapsed());
        let t = Instant::now();
        git_status_all();
        theirs.push(t.elapsed());
    }
    let (ours, theirs) = (common::median(ours), common::median(theirs));
    let per_project = ours.as_secs_f64() * 1000.0 / PROJECTS as f64;
    let ratio = ours.as_secs_f64() / theirs.as_secs_f64();
    println!(
        "{PROJECTS} repositories x {FILES_PER_PROJECT} files, nothing changed, median of {ROUNDS} rounds:"
    );
    println!(
        "  first run (summaries written, offline provider): {:.0} ms",
        first.as_secs_f64() * 1000.0
    );
    println!(
        "  pm-summarize, nothing changed:  {:>8.1} ms total, {per_project:.2} ms per project (target < 5 ms)",
        ours.as_secs_f64() * 1000.0
    );
    println!(
        "  git status --porcelain x {PROJECTS}:  {:>8.1} ms total, {:.2} ms per repository",
        theirs.as_secs_f64() * 1000.0,
        theirs.as_secs_f64() * 1000.0 / PROJECTS as f64
    );
    println!("  ratio pm-summarize / git status: {ratio:.2} (target <= 2.0)");
    let ok = per_project < 5.0 && ratio <= 2.0;
    println!(
        "  {}",
        if ok {
            "within targets"
        } else {
            "OUTSIDE TARGETS"
        }
    );
}
