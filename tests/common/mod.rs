//! Helpers shared by the integration tests (and the benchmark): real git
//! repositories in temporary directories.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;

/// `git` without the user's or the system's configuration, committing as a
/// fixed author, at `date` (RFC 2822 or ISO 8601) when given. Returns
/// stdout, trimmed; panics with git's stderr on failure.
pub fn git_at(dir: &Path, date: Option<&str>, args: &[&str]) -> String {
    let mut cmd = Command::new("git");
    cmd.args([
        "-c",
        "user.name=Tester",
        "-c",
        "user.email=t@example.invalid",
    ])
    .args([
        "-c",
        "commit.gpgsign=false",
        "-c",
        "init.defaultBranch=main",
    ])
    .args(args)
    .current_dir(dir)
    .env("GIT_CONFIG_GLOBAL", "/dev/null")
    .env("GIT_CONFIG_NOSYSTEM", "1");
    if let Some(d) = date {
        cmd.env("GIT_AUTHOR_DATE", d).env("GIT_COMMITTER_DATE", d);
    }
    let out = cmd.output().expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The middle of the measured times (the benchmarks' figure).
pub fn median(mut v: Vec<std::time::Duration>) -> std::time::Duration {
    v.sort();
    v[v.len() / 2]
}

/// [`git_at`] at the current time.
pub fn git(dir: &Path, args: &[&str]) -> String {
    git_at(dir, None, args)
}

/// `parent/name`: a git repository on branch `main` holding `files`
/// (path, contents), all in one commit "first commit".
pub fn repo_with(parent: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = parent.join(name);
    for (path, contents) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, contents).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    git(&dir, &["init", "-q"]);
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-qm", "first commit"]);
    dir
}

/// A small project: a README and a Python file with a TODO.
pub fn repo(parent: &Path, name: &str) -> PathBuf {
    let readme = format!("# {name}\n\nA test project.\n");
    repo_with(
        parent,
        name,
        &[
            ("README.md", &readme),
            ("main.py", "print('hi')  # TODO: greet properly\n"),
        ],
    )
}

/// The handler's /run directory for a test configuration: beside its store.
pub fn run_dir(settings: &pimainteno::config::Settings) -> pimainteno::onfailure::rundir::RunDir {
    pimainteno::onfailure::rundir::RunDir::new(settings.cache.path.with_file_name("run"))
}
