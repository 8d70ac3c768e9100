//! The offline (`none`) provider on real git repositories: the digest's
//! content, the check, determinism, the empty repository, the context for
//! openai, and `pm-summarize --provider none` end to end.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pimainteno::config::CheckSettings;
use pimainteno::llm::offline::{self, Offline};
use pimainteno::llm::{LlmError, Provider, Purpose, Request, Usage};

const SUMMARY: &str = "codex.md";

use common::git_at as git;

fn write(dir: &Path, rel: &str, contents: impl AsRef<[u8]>) {
    let path = dir.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, contents).unwrap();
}

fn commit(dir: &Path, date: &str, message: &str) -> String {
    git(dir, None, &["add", "-A"]);
    git(dir, Some(date), &["commit", "-q", "-m", message]);
    git(dir, None, &["rev-parse", "HEAD"])[..7].to_string()
}

/// A project directory named `demo` inside a temporary directory.
struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    /// Short hashes of the five commits, oldest first.
    commits: Vec<String>,
}

/// Several languages, a binary file, markers, five dated commits (one
/// touching only the summary file), a staged new file, an edit, an
/// untracked file, and a committed-then-edited `codex.md` full of markers
/// that must count nowhere.
fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    fs::create_dir(&dir).unwrap();
    git(&dir, None, &["init", "-q", "-b", "main"]);
    let noise: String = (0..50).map(|i| format!("TODO FIXME {i}\n")).collect();
    let mut commits = Vec::new();

    write(
        &dir,
        "README.md",
        "# Demo\n\nA demo project for the offline digest.\n",
    );
    write(&dir, "src/main.rs", "fn main() {\n}\n");
    write(
        &dir,
        "Makefile",
        "all:\n\tcargo build\ncheck:\n\tcargo test\n",
    );
    write(
        &dir,
        "Cargo.toml",
        "[package]\nname = \"demo\"\nversion = \"0.1.0\"\n",
    );
    write(&dir, SUMMARY, &noise);
    commits.push(commit(&dir, "2024-01-01T10:00:00+00:00", "Initial import"));

    write(
        &dir,
        "src/lib.rs",
        "pub fn value() -> u32 {\n    42 // TODO: compute it\n}\n",
    );
    write(
        &dir,
        "src/main.rs",
        "fn main() {\n    println!(\"{}\", demo::value());\n}\n",
    );
    commits.push(commit(&dir, "2024-01-05T23:30:00+00:00", "Add the library"));

    write(
        &dir,
        "tools/build.py",
        "#!/usr/bin/env python3\n# TODO: port to meson\nprint(\"build\")\n",
    );
    write(&dir, "scripts/run", "#!/bin/sh\nset -e\nexec ./build\n");
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    png.extend(std::iter::repeat_n(0u8, 300));
    write(&dir, "logo.png", png);
    commits.push(commit(
        &dir,
        "2024-02-10T08:00:00+00:00",
        "Add build tooling",
    ));

    write(&dir, SUMMARY, format!("{noise}more\n"));
    commits.push(commit(
        &dir,
        "2024-02-11T08:00:00+00:00",
        "Refresh the summary",
    ));

    write(
        &dir,
        "src/main.rs",
        "// TODO: handle errors\nfn main() {\n    // FIXME: this is slow\n    let x = demo::value();\n    println!(\"{x}\");\n}\n",
    );
    // A UTC+2 evening: the digest's dates are UTC (2024-03-02).
    commits.push(commit(
        &dir,
        "2024-03-03T01:00:00+02:00",
        "Fix the main loop",
    ));

    // Uncommitted: an edit, a staged new file, an untracked file, and the
    // summary file edited (excluded).
    write(
        &dir,
        "src/lib.rs",
        "pub fn value() -> u32 {\n    42 // TODO: compute it\n}\n\n// FIXME: document\npub fn other() {}\n",
    );
    write(
        &dir,
        "docs/guide.md",
        "# Guide\n\nTODO and FIXME here: TODO\n",
    );
    git(&dir, None, &["add", "docs/guide.md"]);
    write(&dir, "notes.txt", "TODO untracked, not counted\n");
    write(&dir, SUMMARY, "# a stale summary\n");
    Fixture {
        _tmp: tmp,
        dir,
        commits,
    }
}

fn expected_digest(c: &[String]) -> String {
    format!(
        "## demo

### Overview

- Branch: `main`
- HEAD: `{c4}` Fix the main loop (2024-03-02)
- Commits: 5
- Tracked files: 9
- Uncommitted changes: 1 added, 1 modified, 1 untracked

### Languages

| Language | Files | Lines |
| --- | ---: | ---: |
| Rust | 2 | 12 |
| Markdown | 2 | 6 |
| Makefile | 1 | 4 |
| Python | 1 | 3 |
| Shell | 1 | 3 |
| TOML | 1 | 3 |

Binary files (not counted): 1.

### Recent commits

- `{c4}` 2024-03-02 Fix the main loop
- `{c3}` 2024-02-11 Refresh the summary
- `{c2}` 2024-02-10 Add build tooling
- `{c1}` 2024-01-05 Add the library
- `{c0}` 2024-01-01 Initial import

### Recently changed files

Files touched by the last 5 commits:

- `src/main.rs`: 3 commits
- `Cargo.toml`: 1 commit
- `Makefile`: 1 commit
- `README.md`: 1 commit
- `logo.png`: 1 commit
- `scripts/run`: 1 commit
- `src/lib.rs`: 1 commit
- `tools/build.py`: 1 commit

### Uncommitted changes

- `docs/guide.md`: added
- `notes.txt`: untracked
- `src/lib.rs`: modified

### TODO/FIXME

- TODO: 5
- FIXME: 3

Most markers:

- `docs/guide.md`: 2 TODO, 1 FIXME
- `src/lib.rs`: 1 TODO, 1 FIXME
- `src/main.rs`: 1 TODO, 1 FIXME
- `tools/build.py`: 1 TODO
",
        c0 = c[0],
        c1 = c[1],
        c2 = c[2],
        c3 = c[3],
        c4 = c[4],
    )
}

fn exclude() -> Vec<&'static Path> {
    vec![Path::new(SUMMARY)]
}

#[test]
fn digest_reports_what_the_repository_holds() {
    let f = fixture();
    let text = offline::digest(&f.dir, None, &exclude()).unwrap();
    assert_eq!(text, expected_digest(&f.commits));
    // Same state, same bytes.
    assert_eq!(text, offline::digest(&f.dir, None, &exclude()).unwrap());
}

#[test]
fn the_summary_file_counts_when_not_excluded() {
    // The contrast that shows the exclusion above is real.
    let f = fixture();
    let text = offline::digest(&f.dir, None, &[]).unwrap();
    assert!(text.contains("- Tracked files: 10\n"), "{text}");
    assert!(text.contains("| Markdown | 3 | 7 |"), "{text}");
    assert!(text.contains("- `codex.md`: 2 commits\n"), "{text}");
    assert!(text.contains("- `codex.md`: modified\n"), "{text}");
    assert!(text.contains("- TODO: 5\n"), "{text}"); // the edited codex.md has none
    assert!(
        text.contains("- Uncommitted changes: 1 added, 2 modified, 1 untracked\n"),
        "{text}"
    );
}

#[test]
fn digest_reports_the_check_passing_and_failing() {
    let f = fixture();
    let check = |command: &str| CheckSettings {
        command: command.into(),
        timeout: Duration::from_secs(30),
    };
    // Runs in the project directory.
    let ok = check("test -f Makefile && echo building && echo 'test result: ok. 3 passed'");
    let text = offline::digest(&f.dir, Some(&ok), &exclude()).unwrap();
    let (before, section) = text.split_once("\n### Check\n\n").expect(&text);
    assert_eq!(before, expected_digest(&f.commits));
    let (verdict, rest) = section.split_once('\n').unwrap();
    assert!(
        verdict.starts_with(&format!("`{}`: passed in ", ok.command)),
        "{section}"
    );
    assert_eq!(
        rest,
        "\n```text\nbuilding\ntest result: ok. 3 passed\n```\n"
    );

    let bad = check(
        "echo compiling; printf '\\033[31mtest result: FAILED. 1 failed\\033[0m\\n' >&2; exit 101",
    );
    let text = offline::digest(&f.dir, Some(&bad), &exclude()).unwrap();
    let section = text.split_once("\n### Check\n\n").expect(&text).1;
    assert!(
        section.starts_with(&format!("`{}`: failed (exit 101) in ", bad.command)),
        "{section}"
    );
    assert!(
        section.ends_with("\n\n```text\ncompiling\ntest result: FAILED. 1 failed\n```\n"),
        "{section}"
    );

    let silent = check("true");
    let text = offline::digest(&f.dir, Some(&silent), &exclude()).unwrap();
    assert!(text.ends_with("\n\nNo output.\n"), "{text}");
}

#[test]
fn the_provider_answers_summaries_only() {
    let f = fixture();
    let ex = exclude();
    let req = |purpose| Request {
        purpose,
        prompt: "ignored",
        workdir: &f.dir,
        check: None,
        exclude: &ex,
        schema: None,
        sandbox: None,
    };
    let answer = Offline::new().complete(&req(Purpose::Summary)).unwrap();
    assert_eq!(answer.text, expected_digest(&f.commits));
    assert_eq!(answer.usage, Usage::default());

    for purpose in [Purpose::Patch, Purpose::Diagnosis] {
        match Offline::new().complete(&req(purpose)) {
            Err(e @ LlmError::Failed { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("cannot write patches or diagnoses")
                        && msg.contains("codex")
                        && msg.contains("openai"),
                    "{msg}"
                );
            }
            other => panic!("{purpose:?}: {other:?}"),
        }
    }

    // Not a repository: a failure that says so.
    let plain = tempfile::tempdir().unwrap();
    let req = Request {
        purpose: Purpose::Summary,
        prompt: "",
        workdir: plain.path(),
        check: None,
        exclude: &[],
        schema: None,
        sandbox: None,
    };
    match Offline::new().complete(&req) {
        Err(e @ LlmError::Failed { .. }) => {
            assert!(e.to_string().contains("git work tree"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn empty_repository_and_untracked_files_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fresh");
    fs::create_dir(&dir).unwrap();
    git(&dir, None, &["init", "-q", "-b", "trunk"]);
    let text = offline::digest(&dir, None, &exclude()).unwrap();
    assert_eq!(
        text,
        "## fresh

### Overview

- Branch: `trunk` (no commits yet)
- HEAD: none
- Commits: 0
- Tracked files: 0
- Uncommitted changes: none

### Languages

No tracked text files.

### Recent commits

No commits yet.

### Recently changed files

No commits yet.

### Uncommitted changes

None: the work tree matches HEAD.

### TODO/FIXME

No TODO or FIXME markers in tracked files.
"
    );

    write(&dir, "a.py", "# TODO\n");
    write(&dir, "lib/b.rs", "fn b() {}\n");
    write(&dir, SUMMARY, "excluded\n");
    let text = offline::digest(&dir, None, &exclude()).unwrap();
    assert!(
        text.contains("- Uncommitted changes: 2 untracked\n"),
        "{text}"
    );
    assert!(
        text.contains("- `a.py`: untracked\n- `lib/b.rs`: untracked\n\n"),
        "{text}"
    );
    assert!(text.contains("No tracked text files."), "{text}");
    assert!(!text.contains(SUMMARY), "{text}");

    let ctx = offline::context(&dir, &exclude(), 10_000).unwrap();
    assert!(ctx.starts_with(&text), "{ctx}");
    assert!(ctx.contains("### Tracked files (0)\n\nNone.\n"), "{ctx}");
}

#[test]
fn detached_head_is_named_so() {
    let f = fixture();
    git(&f.dir, None, &["checkout", "-q", "--detach", "HEAD~1"]);
    let text = offline::digest(&f.dir, None, &exclude()).unwrap();
    assert!(
        text.contains(&format!(
            "- Branch: none (detached HEAD)\n- HEAD: `{}` Refresh the summary (2024-02-11)\n- Commits: 4\n",
            f.commits[3]
        )),
        "{text}"
    );
}

/// Code fences opened and closed in pairs.
fn fences_balanced(text: &str) -> bool {
    text.lines().filter(|l| l.starts_with("```")).count() % 2 == 0
}

#[test]
fn context_has_the_digest_readme_manifests_and_paths() {
    let f = fixture();
    let digest = offline::digest(&f.dir, None, &exclude()).unwrap();
    let ctx = offline::context(&f.dir, &exclude(), 48 * 1024).unwrap();
    assert!(ctx.starts_with(&digest), "{ctx}");
    assert!(
        ctx.contains(
            "### File: README.md\n\n```\n# Demo\n\nA demo project for the offline digest.\n```\n"
        ),
        "{ctx}"
    );
    assert!(
        ctx.contains("### File: Cargo.toml\n\n```\n[package]\nname = \"demo\""),
        "{ctx}"
    );
    assert!(ctx.contains("### File: Makefile\n"), "{ctx}");
    assert!(!ctx.contains("### File: package.json"), "{ctx}");
    assert!(
        ctx.ends_with(
            "### Tracked files (9)\n\n```\nCargo.toml\nMakefile\nREADME.md\ndocs/guide.md\nlogo.png\nscripts/run\nsrc/lib.rs\nsrc/main.rs\ntools/build.py\n```\n"
        ),
        "{ctx}"
    );
    assert!(!ctx.contains("stale summary") && !ctx.contains("codex.md"));
    assert!(!ctx.contains("[Context truncated"));

    // Every bound is respected, and a cut is a clean one.
    assert_eq!(
        offline::context(&f.dir, &exclude(), ctx.len()).unwrap(),
        ctx
    );
    for max in [
        0,
        40,
        100,
        500,
        digest.len() - 10,
        digest.len() + 100,
        ctx.len() - 60,
        ctx.len() - 1,
    ] {
        let cut = offline::context(&f.dir, &exclude(), max).unwrap();
        assert!(cut.len() <= max, "{max}: {} bytes", cut.len());
        assert!(fences_balanced(&cut), "{max}: {cut}");
        if max >= 100 && max < ctx.len() - 60 {
            assert!(
                cut.ends_with(&format!("\n[Context truncated to {max} bytes.]\n")),
                "{max}: {cut}"
            );
        }
    }
    // Near the end, the listing itself gives way, path by path.
    let cut = offline::context(&f.dir, &exclude(), ctx.len() - 1).unwrap();
    assert!(
        cut.ends_with("\nsrc/main.rs\n```\n\n(and 1 more)\n"),
        "{cut}"
    );
    let cut = offline::context(&f.dir, &exclude(), ctx.len() - 60).unwrap();
    assert!(
        cut.ends_with("\nCargo.toml\nMakefile\n```\n\n(and 7 more)\n"),
        "{cut}"
    );
    let cut = offline::context(&f.dir, &exclude(), digest.len() + 100).unwrap();
    assert!(cut.starts_with(&digest), "{cut}");
}

#[test]
fn context_keeps_only_the_start_of_a_long_readme() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("long");
    fs::create_dir(&dir).unwrap();
    git(&dir, None, &["init", "-q", "-b", "main"]);
    let readme: String = (1..=1000).map(|i| format!("line {i:04}\n")).collect();
    write(&dir, "README.md", &readme);
    commit(&dir, "2024-05-01T00:00:00+00:00", "Docs");
    let ctx = offline::context(&dir, &exclude(), 48 * 1024).unwrap();
    assert!(ctx.contains("```\nline 0001\n"), "{ctx}");
    // 4 KiB of 10-byte lines: 409 whole lines.
    assert!(
        ctx.contains("line 0409\n```\n\n(first 4090 of 10000 bytes)\n"),
        "{ctx}"
    );
    assert!(!ctx.contains("line 0410"), "{ctx}");
}

/// Every regular file under `dir`, by relative path.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

fn pm_summarize(home: &Path, config: &Path, repo: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pm-summarize"))
        .arg("--config")
        .arg(config)
        .arg("--path")
        .arg(repo)
        .args(["--provider", "none"])
        .env("HOME", home)
        .env("XDG_STATE_HOME", home.join("state"))
        .env_remove("PIMAINTENO_CONFIG")
        .env_remove("STATE_DIRECTORY")
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .expect("pm-summarize runs")
}

#[test]
fn pm_summarize_with_provider_none_writes_the_digest_once() {
    let f = fixture();
    let home = tempfile::tempdir().unwrap();
    let store = home.path().join("store");
    let config = home.path().join("pimainteno.toml");
    fs::write(
        &config,
        format!("[cache]\npath = \"{}\"\n", store.display()),
    )
    .unwrap();

    let out = pm_summarize(home.path(), &config, &f.dir);
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let file = fs::read_to_string(f.dir.join(SUMMARY)).unwrap();
    let (header, body) = file.split_once('\n').unwrap();
    assert!(
        header.starts_with("<!-- Written by PiMainteno "),
        "{header}"
    );
    assert!(header.contains("(provider none)"), "{header}");
    assert!(
        header.contains(&format!("from commit {}", f.commits[4])),
        "{header}"
    );
    assert!(header.contains("with uncommitted changes"), "{header}");
    assert_eq!(body, format!("\n{}", expected_digest(&f.commits)));
    assert!(snapshot(&store).keys().any(|k| k.ends_with("data.mdb")));

    // Nothing changed (writing codex.md does not count): no new digest,
    // nothing written.
    let before_repo = fs::read(f.dir.join(SUMMARY)).unwrap();
    let before_store = snapshot(&store);
    let out = pm_summarize(home.path(), &config, &f.dir);
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(f.dir.join(SUMMARY)).unwrap(), before_repo);
    let after_store = snapshot(&store);
    // lock.mdb is LMDB's shared-memory reader table, not data: any
    // reader registers its pid there.
    let changed: Vec<&PathBuf> = after_store
        .keys()
        .filter(|k| !k.ends_with("lock.mdb") && after_store.get(*k) != before_store.get(*k))
        .collect();
    assert_eq!(
        after_store.keys().collect::<Vec<_>>(),
        before_store.keys().collect::<Vec<_>>()
    );
    assert!(changed.is_empty(), "store files written: {changed:?}");
}

#[test]
fn symlinks_and_fifos_are_not_read() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("secret.txt"), "TODO secret password\n").unwrap();
    let dir = tmp.path().join("links");
    fs::create_dir(&dir).unwrap();
    git(&dir, None, &["init", "-q", "-b", "main"]);
    std::os::unix::fs::symlink("../secret.txt", dir.join("README.md")).unwrap();
    std::os::unix::fs::symlink("../secret.txt", dir.join("Makefile")).unwrap();
    write(&dir, "data.txt", "one\n");
    commit(&dir, "2024-06-01T00:00:00+00:00", "Links");
    // A tracked file replaced by a FIFO: opening it would block forever.
    fs::remove_file(dir.join("data.txt")).unwrap();
    let made = Command::new("mkfifo")
        .arg(dir.join("data.txt"))
        .status()
        .unwrap();
    assert!(made.success());

    let text = offline::digest(&dir, None, &[]).unwrap();
    assert!(text.contains("- Tracked files: 3\n"), "{text}");
    assert!(text.contains("No tracked text files."), "{text}");
    assert!(text.contains("No TODO or FIXME markers"), "{text}");
    let ctx = offline::context(&dir, &[], 48 * 1024).unwrap();
    assert!(!ctx.contains("secret"), "{ctx}");
    assert!(!ctx.contains("### File:"), "{ctx}");
}

#[test]
fn long_histories_are_capped() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("long");
    fs::create_dir(&dir).unwrap();
    git(&dir, None, &["init", "-q", "-b", "main"]);
    // 1001 commits, each adding its own file, one minute apart.
    let mut stream = Vec::new();
    for i in 0..1001u64 {
        let msg = format!("commit {i:04}");
        let body = format!("{i}\n");
        write!(
            stream,
            "commit refs/heads/main\ncommitter T <t@example.invalid> {} +0000\ndata {}\n{msg}\nM 644 inline f{i:04}.txt\ndata {}\n{body}\n",
            1_700_000_000 + i * 60,
            msg.len(),
            body.len()
        )
        .unwrap();
    }
    let mut child = Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(&dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&stream).unwrap();
    assert!(child.wait().unwrap().success());
    git(&dir, None, &["reset", "-q", "--hard", "main"]);

    let text = offline::digest(&dir, None, &[]).unwrap();
    assert!(text.contains("- Commits: 1000+\n"), "{text}");
    assert!(text.contains("- Tracked files: 1001\n"), "{text}");
    assert!(text.contains("| Text | 1001 | 1001 |"), "{text}");
    let recent: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != "### Recent commits")
        .skip(2)
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(recent.len(), 10, "{text}");
    assert!(recent[0].ends_with(" commit 1000"), "{text}");
    assert!(recent[9].ends_with(" commit 0991"), "{text}");
    assert!(
        text.contains("Files touched by the last 20 commits:\n\n- `f0981.txt`: 1 commit\n"),
        "{text}"
    );
    assert!(
        text.contains("- `f0995.txt`: 1 commit\n- … and 5 more files\n"),
        "{text}"
    );
}
