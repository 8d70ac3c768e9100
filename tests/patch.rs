//! pm-patch end to end: real temporary repositories, the real binary, a
//! real store; the LLM is the in-test OpenAI-compatible server (diffs in
//! its replies) or a fake codex that edits the worktree and replays a
//! recorded transcript (`tests/fixtures/codex-exec/`).

mod common;
mod openai_server;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use openai_server::{Server, Step};

const CODEX_FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/codex-exec");

/// The project: `add` subtracts, and the check says so.
const CALC: &str = "add() {\n\techo $(($1 - $2))\n}\n";
const TEST: &str = ". ./calc.sh\nr=$(add 2 3)\nif [ \"$r\" != 5 ]; then echo \"FAIL: add 2 3 gave $r, expected 5\"; exit 1; fi\necho ok\n";
const FIX: &str = "```diff\n--- a/calc.sh\n+++ b/calc.sh\n@@ -1,3 +1,3 @@\n add() {\n-\techo $(($1 - $2))\n+\techo $(($1 + $2))\n }\n```\n";
/// A change that keeps the check failing (another way).
const WRONG: &str = "```diff\n--- a/calc.sh\n+++ b/calc.sh\n@@ -1,3 +1,3 @@\n add() {\n-\techo $(($1 - $2))\n+\techo $(($1 * $2))\n }\n```\n";
const WRONG2: &str = "```diff\n--- a/calc.sh\n+++ b/calc.sh\n@@ -1,3 +1,3 @@\n add() {\n-\techo $(($1 - $2))\n+\techo $(($1 * $2 + 1))\n }\n```\n";

struct Project {
    dir: tempfile::TempDir,
    repo: PathBuf,
    config: PathBuf,
}

impl Project {
    /// A repository with the broken `add`, and a configuration for it.
    fn new(llm: &str, extra: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        let repo = common::repo_with(
            dir.path(),
            "calc",
            &[
                ("calc.sh", CALC),
                ("test.sh", TEST),
                ("README.md", "# calc\n"),
            ],
        );
        // A directory beside the project that nothing may change.
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        std::fs::write(dir.path().join("outside/notes.txt"), "mine\n").unwrap();
        let config = dir.path().join("pimainteno.toml");
        std::fs::write(
            &config,
            format!(
                "[llm]\n{llm}\n\n[cache]\npath = \"{}\"\n\n[patch]\nauthor_name = \"Pi Fixer\"\nauthor_email = \"fixer@pi.invalid\"\n\n\
                 [[project]]\nname = \"calc\"\npath = \"{}\"\ncheck = \"sh test.sh\"\nsummary_file = \"\"\n{extra}\n",
                dir.path().join("state/store").display(),
                repo.display()
            ),
        )
        .unwrap();
        Project { dir, repo, config }
    }

    fn openai(server: &Server, extra: &str) -> Project {
        Project::new(
            &format!(
                "provider = \"openai\"\nmodel = \"m\"\nendpoint = \"{}\"\nretries = 0",
                server.endpoint()
            ),
            extra,
        )
    }

    fn patch(&self, args: &[&str]) -> Output {
        pm_patch(&self.config, args)
    }

    fn git(&self, args: &[&str]) -> String {
        common::git(&self.repo, args)
    }

    /// Add a line to the configuration's `[patch]` table.
    fn set_patch(&self, line: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap().replace(
            "author_email = \"fixer@pi.invalid\"\n",
            &format!("author_email = \"fixer@pi.invalid\"\n{line}\n"),
        );
        std::fs::write(&self.config, text).unwrap();
    }

    fn branches(&self) -> Vec<String> {
        self.git(&["branch", "--format=%(refname:short)"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn history(&self) -> String {
        history_of(&self.config)
    }

    /// Every file of the work tree (not .git), byte for byte, plus what
    /// git says of the repository: status, branches; and its git files
    /// (config, hooks, every ref, the reachable objects), and the
    /// directory beside it (`outside/`), byte for byte.
    fn state(&self) -> (BTreeMap<PathBuf, Vec<u8>>, String, String) {
        let mut files = BTreeMap::new();
        snapshot(&self.repo, &self.repo, &mut files);
        let git = self.repo.join(".git");
        for f in ["config", "HEAD", "packed-refs"] {
            if let Ok(b) = std::fs::read(git.join(f)) {
                files.insert(PathBuf::from(".git").join(f), b);
            }
        }
        snapshot(&self.repo, &git.join("hooks"), &mut files);
        let outside = self.dir.path().join("outside");
        snapshot(self.dir.path(), &outside, &mut files);
        (
            files,
            self.git(&["status", "--porcelain=v1", "--untracked-files=all"]),
            format!(
                "{}\n{}\n{}",
                self.git(&["branch", "-a", "-v"]),
                self.git(&["for-each-ref"]),
                self.git(&["rev-list", "--all", "--objects"])
            ),
        )
    }

    /// Nothing of ours is left in the repository: no worktree.
    fn assert_no_worktrees(&self) {
        let list = self.git(&["worktree", "list", "--porcelain"]);
        assert_eq!(list.matches("worktree ").count(), 1, "{list}");
        for dir in [
            self.repo.join(".git/worktrees"),
            self.dir.path().join("state/worktrees"),
        ] {
            assert!(
                !dir.exists() || std::fs::read_dir(&dir).unwrap().next().is_none(),
                "left in {}",
                dir.display()
            );
        }
    }
}

fn snapshot(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == ".git") {
            continue;
        }
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_path_buf();
        if meta.file_type().is_symlink() {
            let t = std::fs::read_link(&p).unwrap();
            out.insert(rel, format!("-> {}", t.display()).into_bytes());
        } else if meta.is_dir() {
            snapshot(root, &p, out);
        } else {
            out.insert(rel, std::fs::read(&p).unwrap());
        }
    }
}

/// `pm-patch --config CONFIG`, as the service runs it: not under systemd
/// (no journal), the worktrees in the test's state directory, no pause
/// point; `PIMAINTENO_TEST_PAUSE` and the like added by the caller.
fn pm_patch_cmd(config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pm-patch"));
    cmd.arg("--config")
        .arg(config)
        .env_remove("INVOCATION_ID")
        .env_remove("JOURNAL_STREAM")
        .env_remove("PIMAINTENO_TEST_PAUSE")
        .env_remove("RUNTIME_DIRECTORY")
        .env_remove("XDG_RUNTIME_DIR");
    cmd
}

fn pm_patch(config: &Path, args: &[&str]) -> Output {
    pm_patch_cmd(config).args(args).output().unwrap()
}

fn ok(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "pm-patch failed ({:?}): {err}",
        out.status.code()
    );
    err
}

fn prompt_of(server: &Server, n: usize) -> String {
    server.seen()[n].json()["messages"][1]["content"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_failing_check_is_fixed_on_the_first_attempt() {
    let server = Server::start(vec![Step::answer(&format!(
        "The sign is wrong.\n\n{FIX}\nThat's all."
    ))]);
    let p = Project::openai(&server, "");
    let before = p.state();
    let err = ok(&p.patch(&[]));
    assert!(err.contains("fixed on branch pimainteno/"), "{err}");
    // The prompt had the check's output and the file.
    let prompt = prompt_of(&server, 0);
    assert!(
        prompt.contains("FAIL: add 2 3 gave -1, expected 5"),
        "{prompt}"
    );
    assert!(prompt.contains("--- calc.sh"), "{prompt}");

    let branch = p
        .branches()
        .into_iter()
        .find(|b| b.starts_with("pimainteno/"))
        .expect("a branch");
    assert!(branch.contains("-the-check-sh-test-sh-failed"), "{branch}");
    // The user's checkout is as it was; the fix is on the branch.
    assert_eq!(p.state().0, before.0);
    assert_eq!(p.git(&["rev-parse", "HEAD"]), p.git(&["rev-parse", "main"]));
    assert_eq!(
        p.git(&["show", &format!("{branch}:calc.sh")]),
        "add() {\n\techo $(($1 + $2))\n}"
    );
    let message = p.git(&["log", "-1", "--format=%an <%ae>%n%B", &branch]);
    assert!(
        message
            .starts_with("Pi Fixer <fixer@pi.invalid>\npimainteno: the check `sh test.sh` failed"),
        "{message}"
    );
    assert!(
        message.contains("The check `sh test.sh` passed"),
        "{message}"
    );
    assert!(
        message.trim_end().ends_with("Generated-by: pimainteno"),
        "{message}"
    );
    assert_eq!(
        p.git(&["rev-parse", &format!("{branch}~1")]),
        p.git(&["rev-parse", "main"])
    );
    p.assert_no_worktrees();

    let history = p.history();
    assert!(history.contains("patch    committed"), "{history}");
    assert!(history.contains(&format!("branch: {branch}")), "{history}");
    assert!(history.contains("+\techo $(($1 + $2))"), "{history}");
    assert!(
        !history.contains("\x1b["),
        "no colour when not on a terminal"
    );

    // Fixed: the next run has nothing to do (the user's HEAD still fails,
    // but that failure at that commit was attempted).
    ok(&p.patch(&[]));
    assert_eq!(server.requests(), 1);
}

#[test]
fn an_llm_outage_is_not_an_attempt_and_the_next_run_asks_again() {
    // The endpoint answers 503 (retries = 0), then comes back.
    let server = Server::start(vec![
        Step::reply(503, r#"{"error":{"message":"overloaded"}}"#),
        Step::answer(FIX),
    ]);
    let p = Project::openai(&server, "");
    let before = p.state();
    let out = p.patch(&[]);
    // A 5xx after the retries is a failed request (exit 1; unreachable
    // would be 69): either way no attempt.
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not counted as an attempt: the next run asks again"),
        "{err}"
    );
    assert_eq!(p.state(), before);
    p.assert_no_worktrees();
    // Back: the next run asks and commits the fix.
    let err = ok(&p.patch(&[]));
    assert!(err.contains("fixed on branch pimainteno/"), "{err}");
    assert_eq!(server.requests(), 2);
    let history = p.history();
    assert!(history.contains("patch    error"), "{history}");
    assert!(history.contains("patch    committed"), "{history}");
}

#[test]
fn a_second_attempt_gets_the_check_output() {
    let server = Server::start(vec![Step::answer(WRONG), Step::answer(FIX)]);
    let p = Project::openai(&server, "");
    ok(&p.patch(&[]));
    assert_eq!(server.requests(), 2);
    let second = prompt_of(&server, 1);
    assert!(second.contains("the check still failed"), "{second}");
    assert!(
        second.contains("FAIL: add 2 3 gave 6, expected 5"),
        "{second}"
    );
    assert!(
        second.contains("+\techo $(($1 * $2))"),
        "the previous diff: {second}"
    );
    let h = p.history();
    assert!(
        h.contains("attempt 1: check_failed, check failed (exit 1)"),
        "{h}"
    );
    assert!(h.contains("attempt 2: passed, check passed"), "{h}");
}

#[test]
fn a_patch_that_never_passes_leaves_nothing_and_is_not_retried() {
    let server = Server::start(vec![
        Step::answer(WRONG),
        Step::answer(WRONG2),
        Step::answer("I cannot find the bug, sorry."),
    ]);
    let p = Project::openai(&server, "");
    let before = p.state();
    // No fix is an outcome, not a fault: pimainteno-patch@calc.service
    // ends successfully, the record says what happened.
    let err = ok(&p.patch(&[]));
    assert!(
        err.contains("no fix passed the check in 3 attempt(s)"),
        "{err}"
    );
    assert_eq!(server.requests(), 3);
    assert_eq!(p.state(), before, "nothing committed, no branch");
    p.assert_no_worktrees();
    let h = p.history();
    assert!(h.contains("patch    failed"), "{h}");
    assert!(
        h.contains("attempt 3: no_change") || h.contains("attempt 3: not_applied"),
        "{h}"
    );
    // The next run: same base, same failure: no LLM call.
    let err = ok(&p.patch(&[]));
    assert_eq!(server.requests(), 3, "{err}");
    // A new commit is new work.
    std::fs::write(p.repo.join("README.md"), "# calc\n\nEdited.\n").unwrap();
    p.git(&["commit", "-qam", "edit"]);
    let _ = p.patch(&[]);
    assert_eq!(server.requests(), 4);
}

#[test]
fn the_same_failure_twice_stops_early() {
    // Two different changes, the same failure text: no third attempt.
    let same = "```diff\n--- a/calc.sh\n+++ b/calc.sh\n@@ -1,3 +1,3 @@\n add() {\n-\techo $(($1 - $2))\n+\techo $(($2 - $1 + 0))\n }\n```\n";
    let same2 = "```diff\n--- a/calc.sh\n+++ b/calc.sh\n@@ -1,3 +1,3 @@\n add() {\n-\techo $(($1 - $2))\n+\techo $((0 + $2 - $1))\n }\n```\n";
    let server = Server::start(vec![
        Step::answer(same),
        Step::answer(same2),
        Step::answer(FIX),
    ]);
    let p = Project::openai(&server, "");
    let _ = p.patch(&[]);
    assert_eq!(server.requests(), 2);
}

#[test]
fn merge_mode_fast_forwards_a_clean_tree() {
    let server = Server::start(vec![Step::answer(FIX)]);
    let p = Project::openai(&server, "patch = \"merge\"");
    let base = p.git(&["rev-parse", "HEAD"]);
    let err = ok(&p.patch(&[]));
    assert!(err.contains("fast-forwarded refs/heads/main"), "{err}");
    assert_eq!(p.git(&["rev-parse", "HEAD~1"]), base);
    assert_eq!(
        std::fs::read_to_string(p.repo.join("calc.sh")).unwrap(),
        "add() {\n\techo $(($1 + $2))\n}\n"
    );
    assert_eq!(p.git(&["status", "--porcelain"]), "");
    assert!(p.history().contains("patch    merged"));
}

#[test]
fn merge_mode_with_a_dirty_tree_falls_back_to_a_branch() {
    let server = Server::start(vec![Step::answer(FIX)]);
    let p = Project::openai(&server, "patch = \"merge\"");
    let mine = "# calc\n\nmy unsaved notes \u{1f600}\r\n\tbytes as they are\n";
    std::fs::write(p.repo.join("README.md"), mine).unwrap();
    std::fs::write(p.repo.join("scratch.txt"), [0u8, 1, 2, 255]).unwrap();
    let before = p.state();
    let base = p.git(&["rev-parse", "HEAD"]);
    let err = ok(&p.patch(&[]));
    assert!(
        err.contains("not merged: the working tree has uncommitted changes"),
        "{err}"
    );
    assert_eq!(p.git(&["rev-parse", "HEAD"]), base);
    assert_eq!(p.state().0, before.0, "the user's edits, byte for byte");
    assert_eq!(
        std::fs::read_to_string(p.repo.join("README.md")).unwrap(),
        mine
    );
    assert!(p.branches().iter().any(|b| b.starts_with("pimainteno/")));
    assert!(
        p.history()
            .contains("note: merge fell back to branch: the working tree has uncommitted changes")
    );
}

#[test]
fn a_task_is_done_and_a_dry_run_commits_nothing() {
    let server = Server::start(vec![Step::answer(FIX), Step::answer(FIX)]);
    let p = Project::openai(&server, "");
    // Pretend the check passes at HEAD: a task is work even then.
    let before = p.state();
    let out = p.patch(&["--project", "calc", "--task", "Make add add", "--dry-run"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ok(&out);
    assert!(stdout.contains("--dry-run, not committed"), "{stdout}");
    assert!(stdout.contains("+\techo $(($1 + $2))"), "{stdout}");
    assert!(prompt_of(&server, 0).contains("Make add add"));
    assert_eq!(p.state(), before);
    ok(&p.patch(&["--project", "calc", "--task", "Make add add"]));
    assert!(
        p.branches().iter().any(|b| b.contains("make-add-add")),
        "{:?}",
        p.branches()
    );
    let out = p.patch(&["--task", "x"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--task needs exactly one --project NAME")
    );
}

/// By hand, `--task` without a fix exits 3 (the units, which never pass a
/// task, end successfully: tests/dashboard.rs); PiMainteno's own faults
/// keep their codes.
#[test]
fn a_task_without_a_fix_exits_3_and_a_fault_keeps_its_code() {
    // The check's own script gutted: refused. Then a change that does not pass.
    let gut = "```diff\n--- a/test.sh\n+++ b/test.sh\n@@ -1,4 +1 @@\n-. ./calc.sh\n-r=$(add 2 3)\n-if [ \"$r\" != 5 ]; then echo \"FAIL: add 2 3 gave $r, expected 5\"; exit 1; fi\n-echo ok\n+echo ok\n```\n";
    let server = Server::start(vec![Step::answer(gut), Step::answer(WRONG)]);
    let p = Project::openai(&server, "");
    p.set_patch("max_attempts = 1");
    let before = p.state();
    let task = ["--project", "calc", "--task", "Make add add"];
    let out = p.patch(&task);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("refused: "), "{err}");
    let out = p.patch(&task);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("no fix passed the check"), "{err}");
    assert_eq!(p.state(), before);
    let h = p.history();
    assert!(h.contains("patch    refused"), "{h}");
    assert!(h.contains("patch    failed"), "{h}");

    // The LLM unreachable: 69, with a task or without.
    let p = Project::new(
        &format!(
            "provider = \"openai\"\nmodel = \"m\"\nendpoint = \"http://127.0.0.1:{}/v1\"\nretries = 0",
            openai_server::closed_port()
        ),
        "",
    );
    for args in [&task[..], &[][..]] {
        let out = p.patch(args);
        assert_eq!(
            out.status.code(),
            Some(69),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn nothing_to_do_asks_nothing_and_writes_nothing() {
    let server = Server::start(vec![]);
    let p = Project::openai(&server, "");
    // A passing check.
    std::fs::write(p.repo.join("calc.sh"), "add() {\n\techo $(($1 + $2))\n}\n").unwrap();
    p.git(&["commit", "-qam", "fix it myself"]);
    ok(&p.patch(&[]));
    assert_eq!(server.requests(), 0);
    // The second run at the same HEAD does not even run the check: the
    // store is not written.
    let data = p.dir.path().join("state/store/data.mdb");
    let modified = std::fs::metadata(&data).unwrap().modified().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    ok(&p.patch(&[]));
    assert_eq!(
        std::fs::metadata(&data).unwrap().modified().unwrap(),
        modified
    );
    p.assert_no_worktrees();
    // patch = "off" projects are skipped, the none provider says why.
    let none = Project::new("provider = \"none\"", "");
    let err = ok(&none.patch(&[]));
    assert!(err.contains("cannot write patches"), "{err}");
}

/// Each refused, with the user's tree byte-identical and no commit.
#[test]
fn hostile_patches_are_refused() {
    let diff = |body: &str| format!("```diff\n{body}```\n");
    let big: String = (0..10_000).map(|i| format!("+line {i}\n")).collect();
    let wide = "x".repeat(3 << 20);
    // git's quoting: a path holding a line break or an escape, as git
    // itself would write it (libgit2 reads it back into the real bytes).
    let quoted = |name: &str| {
        diff(&format!(
            "diff --git \"a/{name}\" \"b/{name}\"\nnew file mode 100644\n--- /dev/null\n+++ \"b/{name}\"\n@@ -0,0 +1 @@\n+x\n"
        ))
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "../ escape",
            diff("--- a/../outside.txt\n+++ b/../outside.txt\n@@ -0,0 +1 @@\n+pwned\n"),
            "outside the repository",
        ),
        (
            "absolute path",
            diff("--- /dev/null\n+++ b//etc/evil\n@@ -0,0 +1 @@\n+pwned\n"),
            "refused",
        ),
        (
            ".git/hooks",
            diff(
                "--- /dev/null\n+++ b/.git/hooks/pre-commit\n@@ -0,0 +1,2 @@\n+#!/bin/sh\n+curl evil\n",
            ),
            "inside .git",
        ),
        (
            "symlink to /etc",
            diff(
                "diff --git a/etc b/etc\nnew file mode 120000\n--- /dev/null\n+++ b/etc\n@@ -0,0 +1 @@\n+/etc\n\\ No newline at end of file\n",
            ),
            "outside the repository",
        ),
        (
            "protect",
            diff("--- a/README.md\n+++ b/README.md\n@@ -1 +1 @@\n-# calc\n+# hacked\n"),
            "protected",
        ),
        (
            "10,000 lines",
            diff(&format!(
                "--- /dev/null\n+++ b/big.txt\n@@ -0,0 +1,10000 @@\n{big}"
            )),
            "max_lines",
        ),
        (
            "a 3 MB file of one line",
            diff(&format!(
                "--- /dev/null\n+++ b/wide.txt\n@@ -0,0 +1 @@\n+{wide}\n"
            )),
            "bytes written, more than [patch] max_bytes = 256KiB",
        ),
        (
            "a line break in a path",
            quoted("a\\nb.txt"),
            "\"a\\nb.txt\": a line break in a file name",
        ),
        (
            "an escape in a path",
            quoted("a\\033[2Jb.txt"),
            "\"a\\u{1b}[2Jb.txt\": a control character in a file name",
        ),
        (
            "the check gutted (test.sh is what `sh test.sh` runs)",
            diff(
                "--- a/test.sh\n+++ b/test.sh\n@@ -1,4 +1 @@\n-. ./calc.sh\n-r=$(add 2 3)\n-if [ \"$r\" != 5 ]; then echo \"FAIL: add 2 3 gave $r, expected 5\"; exit 1; fi\n-echo ok\n+echo ok\n",
            ),
            "test.sh: protected",
        ),
        (
            "a CI workflow",
            diff("--- /dev/null\n+++ b/.github/workflows/ci.yml\n@@ -0,0 +1 @@\n+on: push\n"),
            ".github/workflows/ci.yml: protected",
        ),
        (
            ".gitattributes",
            diff("--- /dev/null\n+++ b/.gitattributes\n@@ -0,0 +1 @@\n+*.sh filter=evil\n"),
            ".gitattributes: protected",
        ),
        (
            ".gitmodules",
            diff(
                "--- /dev/null\n+++ b/.gitmodules\n@@ -0,0 +1,2 @@\n+[submodule \"x\"]\n+\turl = ../evil\n",
            ),
            ".gitmodules: protected",
        ),
        (
            "links that lead outside only together",
            diff(
                "diff --git a/d/up b/d/up\nnew file mode 120000\n--- /dev/null\n+++ b/d/up\n@@ -0,0 +1 @@\n+..\n\\ No newline at end of file\n\
                 diff --git a/esc b/esc\nnew file mode 120000\n--- /dev/null\n+++ b/esc\n@@ -0,0 +1 @@\n+d/up/..\n\\ No newline at end of file\n",
            ),
            "esc: a symbolic link to d/up/.., leads outside the repository",
        ),
        (
            "context mismatch",
            diff(
                "--- a/calc.sh\n+++ b/calc.sh\n@@ -1,3 +1,3 @@\n add() {\n-\techo $(($1 - $2 - 0))\n+\techo $(($1 + $2))\n }\n",
            ),
            "does not apply",
        ),
    ];
    for (name, reply, why) in cases {
        let server = Server::start(vec![Step::answer(&reply)]);
        let p = Project::openai(&server, "protect = [\"README.md\"]");
        p.set_patch("max_attempts = 1");
        let before = p.state();
        // Refused (or not applied): an outcome, exit 0.
        let err = ok(&p.patch(&[]));
        assert_eq!(p.state(), before, "{name}: the user's tree and branches");
        assert!(!p.dir.path().join("outside.txt").exists(), "{name}");
        p.assert_no_worktrees();
        let h = p.history();
        assert!(h.contains(why), "{name}: {why:?} not in {h}\nstderr: {err}");
    }
}

/// Commit `links` (path, target) into the project's repository.
fn commit_links(p: &Project, links: &[(&str, &str)]) {
    for (path, target) in links {
        let at = p.repo.join(path);
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, &at).unwrap();
    }
    p.git(&["add", "-A"]);
    p.git(&["commit", "-qm", "links"]);
}

/// Links already in the repository are resolved too: a diff may not write
/// through one, nor lead one into .git, and the files behind them stay.
#[test]
fn links_of_the_repository_are_followed_for_real() {
    let diff = |body: &str| format!("```diff\n{body}```\n");
    let link = |path: &str, target: &str| {
        format!(
            "diff --git a/{path} b/{path}\nnew file mode 120000\n--- /dev/null\n+++ b/{path}\n@@ -0,0 +1 @@\n+{target}\n\\ No newline at end of file\n"
        )
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "a file through `ext`, a link of the base to a directory outside",
            diff("--- /dev/null\n+++ b/ext/pwned.txt\n@@ -0,0 +1 @@\n+pwned\n"),
            "ext/pwned.txt: beneath the symbolic link ext",
        ),
        (
            "a link through `d/up -> ..` of the base into .git (the second run of a chain)",
            diff(&link("h", "d/up/.git/hooks")),
            "h: a symbolic link to d/up/.git/hooks, leads into .git",
        ),
        (
            "a link through `d/up -> ..` of the base out of the repository",
            diff(&link("esc", "d/up/..")),
            "esc: a symbolic link to d/up/.., leads outside the repository",
        ),
    ];
    for (name, reply, why) in cases {
        let server = Server::start(vec![Step::answer(&reply)]);
        let p = Project::openai(&server, "");
        p.set_patch("max_attempts = 1");
        let outside = p.dir.path().join("outside");
        commit_links(&p, &[("ext", outside.to_str().unwrap()), ("d/up", "..")]);
        let before = p.state();
        let err = ok(&p.patch(&[]));
        assert_eq!(p.state(), before, "{name}: checkout, .git, outside/");
        assert!(!outside.join("pwned.txt").exists(), "{name}");
        p.assert_no_worktrees();
        let h = p.history();
        assert!(h.contains(why), "{name}: {why:?} not in {h}\nstderr: {err}");
    }
}

/// The commit holds the confined change alone: what the check writes,
/// links, binaries and edits of tracked files included, is listed as left
/// by the check and never committed.
#[test]
fn the_commit_is_the_confined_change_and_nothing_the_check_left() {
    let server = Server::start(vec![Step::answer(FIX)]);
    let p = Project::openai(&server, "");
    let check = "sh test.sh > test-output.log; r=$?; ln -s /etc etc-link; \
                 printf \"\\000ELF\" > helper.bin; echo changed >> README.md; cat test-output.log; exit $r";
    let text = std::fs::read_to_string(&p.config)
        .unwrap()
        .replace("check = \"sh test.sh\"", &format!("check = '{check}'"));
    std::fs::write(&p.config, text).unwrap();
    let err = ok(&p.patch(&[]));
    assert!(err.contains("fixed on branch"), "{err}");
    let branch = p
        .branches()
        .into_iter()
        .find(|b| b.starts_with("pimainteno/"))
        .unwrap();
    assert_eq!(p.git(&["diff", "--name-only", "main", &branch]), "calc.sh");
    let h = p.history();
    for left in ["test-output.log", "etc-link", "helper.bin", "README.md"] {
        assert!(h.contains(left), "{left} not listed in {h}");
    }
    assert!(h.contains("left by the check (not committed)"), "{h}");
}

/// `dir/pimainteno.toml`: the openai provider at `server`, the store in
/// `dir/state`, `patch` (lines of `[patch]`) and the project `calc` at
/// `repo` with `check`.
fn config_for(dir: &Path, server: &Server, repo: &Path, check: &str, patch: &str) -> PathBuf {
    let config = dir.join("pimainteno.toml");
    std::fs::write(
        &config,
        format!(
            "[llm]\nprovider = \"openai\"\nmodel = \"m\"\nendpoint = \"{}\"\nretries = 0\n\n\
             [cache]\npath = \"{}\"\n\n[patch]\n{patch}\n\n\
             [[project]]\nname = \"calc\"\npath = \"{}\"\ncheck = \"{check}\"\nsummary_file = \"\"\n",
            server.endpoint(),
            dir.join("state/store").display(),
            repo.display()
        ),
    )
    .unwrap();
    config
}

/// A Python project without a .gitignore: its fix, not its bytecode.
#[test]
fn a_python_fix_comes_without_its_bytecode() {
    let fix = "```diff\n--- a/calc.py\n+++ b/calc.py\n@@ -1,2 +1,2 @@\n def add(a, b):\n-    return a - b\n+    return a + b\n```\n";
    let server = Server::start(vec![Step::answer(fix)]);
    let dir = tempfile::tempdir().unwrap();
    let repo = common::repo_with(
        dir.path(),
        "calc",
        &[
            ("calc.py", "def add(a, b):\n    return a - b\n"),
            (
                "test_calc.py",
                "import unittest\nimport calc\n\nclass T(unittest.TestCase):\n    def test_add(self):\n        self.assertEqual(calc.add(2, 3), 5)\n\nif __name__ == '__main__':\n    unittest.main()\n",
            ),
        ],
    );
    let config = config_for(dir.path(), &server, &repo, "python3 -m unittest -v", "");
    // Python writes __pycache__/ as on a Pi: this machine's
    // PYTHONDONTWRITEBYTECODE is not passed on.
    let out = pm_patch_cmd(&config)
        .env_remove("PYTHONDONTWRITEBYTECODE")
        .output()
        .unwrap();
    let err = ok(&out);
    assert!(err.contains("fixed on branch"), "{err}");
    let branch = fix_branch(&repo);
    assert_eq!(
        common::git(&repo, &["ls-tree", "-r", "--name-only", &branch]),
        "calc.py\ntest_calc.py"
    );
    let history = Command::new(env!("CARGO_BIN_EXE_pimainteno"))
        .arg("--config")
        .arg(&config)
        .args(["history", "calc"])
        .output()
        .unwrap();
    let h = String::from_utf8_lossy(&history.stdout);
    assert!(h.contains("__pycache__/calc.cpython-"), "{h}");
}

/// A fake `codex`: runs `$rec/edit.sh` in the directory of `--cd`, then
/// replays a recorded transcript.
struct FakeCodex {
    dir: tempfile::TempDir,
    script: PathBuf,
}

impl FakeCodex {
    fn new(edit: &str) -> FakeCodex {
        let dir = tempfile::tempdir().unwrap();
        let rec = dir.path();
        std::fs::write(rec.join("edit.sh"), edit).unwrap();
        let script = rec.join("codex");
        // The transcript beside the script: codex runs contained, and
        // everything it reads must be where its program is.
        let case = rec.join("case");
        for ext in ["last-message.md", "jsonl"] {
            std::fs::copy(
                format!("{CODEX_FIXTURES}/b_apply_patch_workspace_write.{ext}"),
                case.with_extension(ext),
            )
            .unwrap();
        }
        let case = case.display();
        // Calls are counted in CODEX_HOME, which codex may write.
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n[ \"$1\" = sandbox ] && exit 0\nprev=; cd_=; out=\nfor a in \"$@\"; do\n  [ \"$prev\" = --cd ] && cd_=$a\n  [ \"$prev\" = --output-last-message ] && out=$a\n  prev=$a\ndone\n\
                 echo $(( $(cat \"$CODEX_HOME/calls\" 2>/dev/null || echo 0) + 1 )) > \"$CODEX_HOME/calls\"\n\
                 (cd \"$cd_\" && . '{rec}/edit.sh')\ncat '{case}.last-message.md' > \"$out\"\ncat '{case}.jsonl'\n",
                rec = rec.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        FakeCodex { dir, script }
    }

    fn calls(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("home/calls"))
            .map(|s| s.trim().parse().unwrap())
            .unwrap_or(0)
    }

    fn project(&self, extra: &str) -> Project {
        Project::new(
            &format!(
                "provider = \"codex\"\ncommand = \"{}\"\ncodex_home = \"{}\"",
                self.script.display(),
                self.dir.path().join("home").display()
            ),
            extra,
        )
    }
}

#[test]
fn codex_edits_the_worktree_and_the_fix_is_committed() {
    let codex = FakeCodex::new("sed -i 's/\\$1 - \\$2/$1 + $2/' calc.sh\n");
    let p = codex.project("");
    let before = p.state();
    let err = ok(&p.patch(&[]));
    assert!(err.contains("fixed on branch"), "{err}");
    assert_eq!(codex.calls(), 1);
    assert_eq!(p.state().0, before.0);
    let branch = p
        .branches()
        .into_iter()
        .find(|b| b.starts_with("pimainteno/"))
        .unwrap();
    assert!(
        p.git(&["show", &format!("{branch}:calc.sh")])
            .contains("$1 + $2")
    );
    p.assert_no_worktrees();
}

#[test]
fn codex_that_edits_git_files_or_writes_binaries_is_refused() {
    let cases = [
        (
            "a binary blob",
            "printf '\\000\\001\\002ELF' > blob.bin\nsed -i 's/\\$1 - \\$2/$1 + $2/' calc.sh\n",
            "binary file",
        ),
        (
            "a symlink to /etc",
            "ln -s /etc etc\nsed -i 's/\\$1 - \\$2/$1 + $2/' calc.sh\n",
            "outside the repository",
        ),
    ];
    for (name, edit, why) in cases {
        let codex = FakeCodex::new(edit);
        let p = codex.project("");
        let config_before = std::fs::read(p.repo.join(".git/config")).unwrap();
        let before = p.state();
        let err = ok(&p.patch(&[]));
        assert!(err.contains("refused: "), "{name}: {err}");
        assert_eq!(p.state(), before, "{name}");
        assert_eq!(
            std::fs::read(p.repo.join(".git/config")).unwrap(),
            config_before,
            "{name}: .git/config put back"
        );
        assert!(
            !p.repo.join(".git/hooks/post-checkout").exists(),
            "{name}: the hook was removed"
        );
        let h = p.history();
        assert!(h.contains(why), "{name}: {why:?} not in {h}");
        p.assert_no_worktrees();
    }
}

/// codex runs contained: its commands cannot reach the user's hooks (found
/// through the worktree's alternates) nor its home.
#[test]
fn codex_and_its_commands_run_contained() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
    std::fs::write(home.path().join(".ssh/id_ed25519"), KEY_MARKER).unwrap();
    let codex = FakeCodex::new(&format!(
        "hooks=$(sed 's|/objects$|/hooks|' \"$(git rev-parse --git-dir)/objects/info/alternates\")\n\
         printf '#!/bin/sh\\necho pwned\\n' > \"$hooks/post-checkout\"\n\
         cat '{}/.ssh/id_ed25519' > stolen-key.txt\n\
         sed -i 's/\\$1 - \\$2/$1 + $2/' calc.sh\n",
        home.path().display()
    ));
    let p = codex.project("");
    let before = p.state();
    let out = pm_patch_cmd(&p.config)
        .env("HOME", home.path())
        .output()
        .unwrap();
    let err = ok(&out);
    assert!(err.contains("fixed on branch"), "{err}");
    assert_eq!(codex.calls(), 1);
    assert!(!p.repo.join(".git/hooks/post-checkout").exists());
    assert_eq!(p.state().0, before.0, "checkout, .git, outside/");
    let branch = p
        .branches()
        .into_iter()
        .find(|b| b.starts_with("pimainteno/"))
        .unwrap();
    // The key was not readable: the file codex left is empty.
    let stolen = p.git(&["show", &format!("{branch}:stolen-key.txt")]);
    assert!(!stolen.contains(KEY_MARKER), "{stolen}");
}

#[test]
fn git_commands_in_the_worktree_reach_only_its_own_git_directory() {
    // `git config` in the worktree changes the worktree's own git
    // directory (the user's is not shared): the fix stands, the user's
    // configuration is untouched, and nothing of .git is committed.
    let codex = FakeCodex::new(
        "git config core.hooksPath /tmp/evil\ngit config --get core.hooksPath > hooks-path.txt\n\
         sed -i 's/\\$1 - \\$2/$1 + $2/' calc.sh\nrm hooks-path.txt\n",
    );
    let p = codex.project("");
    let config_before = std::fs::read(p.repo.join(".git/config")).unwrap();
    let err = ok(&p.patch(&[]));
    assert!(err.contains("fixed on branch"), "{err}");
    assert_eq!(
        std::fs::read(p.repo.join(".git/config")).unwrap(),
        config_before
    );
    let branch = p
        .branches()
        .into_iter()
        .find(|b| b.starts_with("pimainteno/"))
        .unwrap();
    assert_eq!(
        p.git(&["diff", "--name-only", "main", &branch]),
        "calc.sh",
        "only the fix is committed"
    );
    p.assert_no_worktrees();
}

/// Every descendant of `pid` (from /proc/PID/task/*/children), deepest
/// last.
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                out.push(c);
                todo.push(c);
            }
        }
    }
    out
}

/// Wait until `pid` is stopped (SIGSTOP: a pause point) or a file matching
/// `marker` (a path whose `*` stands for one directory name) exists.
fn wait_for(pid: u32, marker: Option<&Path>) {
    let exists = |m: &Path| {
        let Some((dir, rest)) = m.to_str().and_then(|s| s.split_once("/*/")) else {
            return m.exists();
        };
        std::fs::read_dir(dir)
            .map(|d| d.flatten().any(|e| e.path().join(rest).exists()))
            .unwrap_or(false)
    };
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if let Some(m) = marker
            && exists(m)
        {
            return;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .next()
            .unwrap_or("");
        if marker.is_none() && state == "T" {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("pm-patch did not reach the point to kill it at");
}

#[test]
fn a_kill_at_any_step_leaves_the_repository_as_it_was() {
    let fix = "sed -i 's/\\$1 - \\$2/$1 + $2/' calc.sh\n";
    // (step, pause point, edit of the fake codex, a slow check)
    let cases = [
        (
            "after the worktree is made",
            Some("worktree"),
            fix.to_string(),
            false,
        ),
        (
            "mid-edit",
            None,
            format!("{fix}touch edit-reached\nsleep 30\n"),
            false,
        ),
        ("mid-check", None, fix.to_string(), true),
        ("mid-commit", Some("commit"), fix.to_string(), false),
    ];
    for (name, pause, edit, slow_check) in cases {
        let codex = FakeCodex::new(&edit);
        let p = codex.project("");
        // codex and the check can write only in their worktree: the marks
        // are there.
        let mut mark = p.dir.path().join("state/worktrees/*/edit-reached");
        let config = std::fs::read_to_string(&p.config).unwrap();
        if slow_check {
            // Once the fix is in, the check stops half-way. It can write
            // only in its worktree: the mark is there.
            std::fs::write(
                p.repo.join("slow-check.sh"),
                "if grep -q '1 + ' calc.sh; then touch slow-check-reached; sleep 30; fi\nsh test.sh\n",
            )
            .unwrap();
            p.git(&["add", "slow-check.sh"]);
            p.git(&["commit", "-qm", "a slow check"]);
            let text = config.replace("check = \"sh test.sh\"", "check = \"sh slow-check.sh\"");
            std::fs::write(&p.config, text).unwrap();
            mark = p.dir.path().join("state/worktrees/*/slow-check-reached");
        }
        let before = (p.state(), p.git(&["fsck", "--no-dangling"]));
        let mut cmd = pm_patch_cmd(&p.config);
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if let Some(point) = pause {
            cmd.env("PIMAINTENO_TEST_PAUSE", point);
        }
        let mut child = cmd.spawn().unwrap();
        wait_for(child.id(), if pause.is_some() { None } else { Some(&mark) });
        // The fake codex sleeps on in its own process group when pm-patch
        // dies (the contained check dies with it): killed by pid.
        let below = descendants(child.id());
        child.kill().unwrap();
        child.wait().unwrap();
        for pid in below {
            // SAFETY: kill has no memory preconditions; these are our
            // own children's pids, taken a moment ago.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let after = (p.state(), p.git(&["fsck", "--no-dangling"]));
        assert_eq!(
            after, before,
            "{name}: git status, git branch, the files, git fsck"
        );
        // The next run cleans up and succeeds.
        std::fs::write(codex.dir.path().join("edit.sh"), fix).unwrap();
        std::fs::write(&p.config, &config).unwrap();
        let err = ok(&p.patch(&[]));
        assert!(err.contains("fixed on branch"), "{name}: {err}");
        p.assert_no_worktrees();
    }
}

#[test]
fn a_failure_handed_over_by_pm_onfailure_is_fixed_and_taken() {
    use pimainteno::onfailure::evidence::{Excerpt, JournalLine, Monitor, UnitFacts};
    use pimainteno::store::Store;
    let server = Server::start(vec![Step::answer(FIX)]);
    let p = Project::openai(&server, "units = [\"calc.service\"]");
    // pm-onfailure (offline) records a code error of the project's unit.
    let offline = p.dir.path().join("offline.toml");
    std::fs::write(
        &offline,
        std::fs::read_to_string(&p.config)
            .unwrap()
            .replace("provider = \"openai\"", "provider = \"none\""),
    )
    .unwrap();
    let settings = pimainteno::config::load(&pimainteno::config::LoadOptions {
        path: Some(offline),
        defaults_if_missing: false,
    })
    .unwrap();
    let line = |m: &str| JournalLine {
        time_us: 1,
        pid: Some(9),
        ident: "calc".into(),
        message: m.into(),
        priority: None,
        from_manager: false,
        exe: Some("/usr/bin/python3.11".into()),
    };
    {
        let store = Store::open(&settings.cache).unwrap();
        let monitor = Monitor {
            unit: "calc.service".into(),
            result: "exit-code".into(),
            exit_code: Some("exited".into()),
            exit_status: Some("1".into()),
            invocation_id: None,
        };
        let excerpt = Excerpt {
            lines: vec![
                line("Traceback (most recent call last):"),
                line("  File \"/srv/calc/serve.py\", line 3, in <module>"),
                line("ValueError: add(2, 3) returned -1"),
            ],
            truncated: false,
        };
        let run = common::run_dir(&settings);
        let h = pimainteno::onfailure::Handler::new(&settings, &store, &run);
        let d = pimainteno::onfailure::handle_failure(
            &h,
            &monitor,
            &UnitFacts::default(),
            excerpt,
            &[],
        )
        .unwrap();
        let handoff = pimainteno::onfailure::explain(&h, &d).unwrap();
        assert_eq!(handoff.as_deref(), Some("calc"));
        assert_eq!(store.pending("calc").unwrap().len(), 1);
    }
    // pimainteno-patch@calc.service runs `pm-patch --project calc`.
    let err = ok(&p.patch(&["--project", "calc"]));
    assert!(err.contains("fixed on branch pimainteno/"), "{err}");
    assert!(err.contains("calc-service-failed"), "{err}");
    let prompt = prompt_of(&server, 0);
    assert!(
        prompt.contains("ValueError: add(2, 3) returned -1"),
        "the journal went to the model: {prompt}"
    );
    let store = Store::open(&settings.cache).unwrap();
    assert!(
        store.pending("calc").unwrap().is_empty(),
        "the work was taken"
    );
    let h = p.history();
    assert!(h.contains("(failure)"), "{h}");
}

#[test]
fn a_project_with_patch_off_is_skipped_even_when_named() {
    let server = Server::start(vec![]);
    let p = Project::openai(&server, "patch = \"off\"");
    let err = ok(&p.patch(&["--project", "calc"]));
    assert!(err.contains("skipped"), "{err}");
    ok(&p.patch(&[]));
    assert_eq!(server.requests(), 0);
}

/// The fix of calc.sh plus code that tries to get out, as a hostile model
/// would write it (calc.sh is sourced by test.sh, so the check runs it).
/// Each probe prints `ESCAPED: what` when its action worked, else
/// `contained: what`.
fn hostile_fix(p: &Project, home: &Path, port: u16) -> String {
    let probes = [
        (
            "hooks through --git-common-dir",
            "echo pwned > \"$(git rev-parse --git-common-dir)/hooks/post-checkout\"".to_string(),
        ),
        (
            "hooks through the alternates",
            "h=$(sed 's|/objects$|/hooks|' \"$(git rev-parse --git-dir)/objects/info/alternates\"); echo pwned > \"$h/post-checkout\" && test -f \"$h/post-checkout\""
                .to_string(),
        ),
        (
            "the checkout by its absolute path",
            format!("echo pwned >> '{}/README.md'", p.repo.display()),
        ),
        ("the worktrees directory", "echo pwned > ../pwned.txt".to_string()),
        (
            "the home",
            format!("echo pwned >> '{}/.ssh/authorized_keys'", home.display()),
        ),
        (
            "the store",
            format!("echo pwned > '{}/state/store/pwned'", p.dir.path().display()),
        ),
        (
            "a directory outside",
            format!("echo pwned >> '{}/outside/notes.txt'", p.dir.path().display()),
        ),
        (
            "the key",
            format!("cat '{}/.ssh/id_ed25519'", home.display()),
        ),
        (
            "the network",
            format!(
                "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), 2)'"
            ),
        ),
    ];
    let mut body = String::from(
        "+probe() { if (eval \"$2\") 2>/dev/null; then echo \"ESCAPED: $1\"; else echo \"contained: $1\"; fi; }\n",
    );
    for (what, action) in probes {
        body.push_str(&format!(
            "+probe '{what}' '{}'\n",
            action.replace('\'', "'\\''")
        ));
    }
    let n = body.lines().count();
    format!(
        "```diff\n--- a/calc.sh\n+++ b/calc.sh\n@@ -1,3 +1,{} @@\n add() {{\n-\techo $(($1 - $2))\n+\techo $(($1 + $2))\n }}\n{body}```\n",
        3 + n
    )
}

/// A home with an SSH key whose text must never leave it.
const KEY_MARKER: &str = "PRIVATE-KEY-MARKER-5f2c";

/// The check (here: the model's code it runs) writes only its worktree,
/// reads no secret and has no network unless the project allows it; with
/// both layers and with the namespaces alone (a Pi has no Landlock).
#[test]
fn the_check_is_contained() {
    for (layers, network) in [
        ("landlock = true", false),
        ("landlock = false", false),
        ("landlock = true", true),
    ] {
        let name = format!("{layers}, check_network = {network}");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = connections.clone();
        std::thread::spawn(move || {
            for c in listener.incoming() {
                if c.is_ok() {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        });
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
        std::fs::write(home.path().join(".ssh/id_ed25519"), KEY_MARKER).unwrap();
        // The reply names the project's paths: the project first, with a
        // server that has nothing to say, then pointed at the one that
        // holds the reply.
        let silent = Server::start(vec![]);
        let p = Project::openai(&silent, &format!("check_network = {network}"));
        p.set_patch(layers);
        let reply = hostile_fix(&p, home.path(), port);
        let server = Server::start(vec![Step::answer(&reply)]);
        let text = std::fs::read_to_string(&p.config)
            .unwrap()
            .lines()
            .map(|l| {
                if l.starts_with("endpoint = ") {
                    format!("endpoint = \"{}\"", server.endpoint())
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&p.config, text).unwrap();
        let before = p.state();
        let home_before = {
            let mut m = BTreeMap::new();
            snapshot(home.path(), home.path(), &mut m);
            m
        };
        let out = pm_patch_cmd(&p.config)
            .env("HOME", home.path())
            .output()
            .unwrap();
        let err = ok(&out);
        assert!(err.contains("fixed on branch"), "{name}: {err}");
        assert!(
            err.contains("the check is contained: namespaces (bubblewrap"),
            "{name}: {err}"
        );
        // Everything of the user's as it was, but the new branch.
        let after = p.state();
        assert_eq!(after.0, before.0, "{name}: checkout, .git, outside/");
        assert_eq!(after.1, before.1, "{name}: git status");
        let mut home_after = BTreeMap::new();
        snapshot(home.path(), home.path(), &mut home_after);
        assert_eq!(home_after, home_before, "{name}: the home");
        assert!(!p.repo.join(".git/hooks/post-checkout").exists(), "{name}");
        assert!(
            !p.dir.path().join("state/store/pwned").exists(),
            "{name}: the store"
        );
        // What the check printed: nothing escaped, the key never read.
        let store = pimainteno::store::Store::open_read_only(&p.dir.path().join("state/store"))
            .unwrap()
            .unwrap();
        let (_, record) = store.patches("calc", 1).unwrap().remove(0);
        let output = record.attempts[0]
            .check
            .as_ref()
            .unwrap()
            .output_tail
            .clone();
        assert!(!output.contains(KEY_MARKER), "{name}: {output}");
        assert!(!p.history().contains(KEY_MARKER), "{name}");
        // The probes' own words (a write that "worked" may have gone to the
        // sandbox's private /tmp, which is gone: the real state above is
        // what counts).
        for want in [
            "contained: hooks through --git-common-dir",
            "contained: the worktrees directory",
            "contained: the home",
            "contained: the store",
            "contained: a directory outside",
            "contained: the key",
        ] {
            assert!(output.contains(want), "{name}: {want:?} not in\n{output}");
        }
        assert_eq!(
            output.contains("ESCAPED: the network"),
            network,
            "{name}: {output}"
        );
        let connected = connections.load(std::sync::atomic::Ordering::SeqCst);
        if network {
            assert!(connected >= 1, "{name}: check_network = true connects");
        } else {
            assert_eq!(connected, 0, "{name}: no connection: {output}");
        }
    }
}

/// Without bubblewrap, no code of the model runs, unless the configuration
/// says so on purpose.
#[test]
fn without_containment_no_model_code_runs() {
    let server = Server::start(vec![Step::answer(FIX)]);
    let p = Project::openai(&server, "");
    // A PATH with sh and git but no bwrap.
    let bin = p.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["sh", "git", "sed"] {
        let real = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap();
        std::os::unix::fs::symlink(real, bin.join(tool)).unwrap();
    }
    let run = |p: &Project| pm_patch_cmd(&p.config).env("PATH", &bin).output().unwrap();
    let before = p.state();
    let out = run(&p);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("runs no code of the model here")
            && err.contains("apt install bubblewrap")
            && err.contains("unsandboxed_check = true"),
        "{err}"
    );
    assert_eq!(server.requests(), 0, "nothing asked");
    assert_eq!(p.state(), before);
    p.assert_no_worktrees();
    // On purpose: it runs, and says so.
    p.set_patch("unsandboxed_check = true");
    let out = run(&p);
    let err = ok(&out);
    assert!(err.contains("WITHOUT containment"), "{err}");
    assert!(err.contains("fixed on branch"), "{err}");

    // Uncontained, a check that writes the user's hooks (found through the
    // worktree's alternates) is caught afterwards: the hook removed, the
    // fix refused.
    let server = Server::start(vec![Step::answer(FIX)]);
    let p = Project::openai(&server, "");
    p.set_patch("unsandboxed_check = true");
    let hostile = "sh test.sh && h=$(sed \"s|/objects$|/hooks|\" \"$(git rev-parse --git-dir)/objects/info/alternates\") && echo pwned > \"$h/post-checkout\"";
    let text = std::fs::read_to_string(&p.config)
        .unwrap()
        .replace("check = \"sh test.sh\"", &format!("check = '{hostile}'"));
    std::fs::write(&p.config, text).unwrap();
    let before = p.state();
    let err = ok(&run(&p));
    assert!(err.contains("refused: "), "{err}");
    assert!(!p.repo.join(".git/hooks/post-checkout").exists());
    assert_eq!(p.state(), before);
    let h = p.history();
    assert!(h.contains("patch    refused"), "{h}");
    assert!(h.contains("changed the repository's git files"), "{h}");
}

/// A project whose check runs TAP tests: `tests/add.sh` fails at the base,
/// `tests/mul.sh` passes.
fn tap_project(server: &Server) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let runner = "echo \"TAP version 13\"\necho 1..2\nn=0\nfor t in tests/*.sh; do\n  n=$((n+1))\n  out=$(sh \"$t\" 2>&1); rc=$?\n  case \"$out\" in SKIP*) echo \"ok $n - $t # SKIP\" ;; *) if [ $rc = 0 ]; then echo \"ok $n - $t\"; else echo \"not ok $n - $t\"; fail=1; fi ;; esac\ndone\nexit ${fail:-0}\n";
    let repo = common::repo_with(
        dir.path(),
        "calc",
        &[
            ("calc.sh", CALC),
            ("run-tests.sh", runner),
            ("tests/add.sh", ". ./calc.sh\n[ \"$(add 2 3)\" = 5 ]\n"),
            ("tests/mul.sh", "[ $((2 * 3)) = 6 ]\n"),
            (
                "src/lib.rs",
                "#[cfg(test)]\nmod tests {\n    #[test]\n    fn adds() {\n        assert_eq!(2 + 3, 5);\n    }\n}\n",
            ),
            (
                "py/test_calc.py",
                "def test_adds():\n    assert 2 + 3 == 5\n",
            ),
        ],
    );
    let config = config_for(
        dir.path(),
        server,
        &repo,
        "sh run-tests.sh",
        "max_attempts = 1",
    );
    (dir, repo, config)
}

/// `pimainteno history calc` with this configuration.
fn history_of(config: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pimainteno"))
        .arg("--config")
        .arg(config)
        .args(["history", "calc"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The fix branch pm-patch made in `repo` (the only one).
fn fix_branch(repo: &Path) -> String {
    common::git(
        repo,
        &[
            "branch",
            "--format=%(refname:short)",
            "--list",
            "pimainteno/*",
        ],
    )
}

/// The fix, and a Rust test ignored on the way.
const IGNORE: &str = "```diff\n--- a/calc.sh\n+++ b/calc.sh\n@@ -1,3 +1,3 @@\n add() {\n-\techo $(($1 - $2))\n+\techo $(($1 + $2))\n }\n\
    --- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -1,5 +1,6 @@\n #[cfg(test)]\n mod tests {\n     #[test]\n+    #[ignore]\n     fn adds() {\n         assert_eq!(2 + 3, 5);\n```\n";

/// The fix, and a Python test skipped on the way.
const PYTEST_SKIP: &str = "```diff\n--- a/calc.sh\n+++ b/calc.sh\n@@ -1,3 +1,3 @@\n add() {\n-\techo $(($1 - $2))\n+\techo $(($1 + $2))\n }\n\
    --- a/py/test_calc.py\n+++ b/py/test_calc.py\n@@ -1,2 +1,4 @@\n+import pytest\n+@pytest.mark.skip(reason=\"flaky\")\n def test_adds():\n     assert 2 + 3 == 5\n```\n";

/// The tests the check names judge a passing check: the failing one must
/// pass, and skipping or deleting it is no fix.
#[test]
fn a_fix_is_judged_by_the_tests_the_check_names() {
    // The real fix: the test that failed passes, the other still does.
    let server = Server::start(vec![Step::answer(FIX)]);
    let (_dir, repo, config) = tap_project(&server);
    let err = ok(&pm_patch(&config, &[]));
    assert!(err.contains("fixed on branch"), "{err}");
    let h = history_of(&config);
    assert!(h.contains("tests: 1 test fixed (tests/add.sh)"), "{h}");
    let branch = fix_branch(&repo);
    let message = common::git(&repo, &["log", "-1", "--format=%B", &branch]);
    assert!(message.contains("Tests fixed: tests/add.sh"), "{message}");

    // Skipping the failing test makes the check pass: refused.
    let skip = "```diff\n--- a/tests/add.sh\n+++ b/tests/add.sh\n@@ -1,2 +1 @@\n-. ./calc.sh\n-[ \"$(add 2 3)\" = 5 ]\n+echo SKIP flaky on the Pi\n```\n";
    // Deleting it: refused too.
    let delete = "```diff\n--- a/tests/add.sh\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-. ./calc.sh\n-[ \"$(add 2 3)\" = 5 ]\n```\n";
    for (name, reply, why) in [
        (
            "skipped",
            skip,
            "the change weakens the tests: fewer tests run",
        ),
        ("deleted", delete, "it deletes test files (tests/add.sh)"),
        (
            "a Rust test ignored",
            IGNORE,
            "src/lib.rs: it adds `#[ignore`",
        ),
        (
            "a Python test skipped",
            PYTEST_SKIP,
            "py/test_calc.py: it adds `@pytest.mark.skip`",
        ),
    ] {
        let server = Server::start(vec![Step::answer(reply)]);
        let (_dir, repo, config) = tap_project(&server);
        let err = ok(&pm_patch(&config, &[]));
        assert!(err.contains("refused: "), "{name}: {err}");
        assert_eq!(
            common::git(&repo, &["branch", "--list", "pimainteno/*"]),
            "",
            "{name}: no branch"
        );
        let h = history_of(&config);
        assert!(h.contains(why), "{name}: {why:?} not in {h}");
    }

    // Unless a task asks for exactly that.
    let server = Server::start(vec![Step::answer(skip)]);
    let (_dir, _repo, config) = tap_project(&server);
    let err = ok(&pm_patch(
        &config,
        &[
            "--project",
            "calc",
            "--task",
            "skip the add test: it is flaky on the Pi",
        ],
    ));
    assert!(err.contains("fixed on branch"), "{err}");
}

#[test]
fn secrets_in_the_checks_output_never_reach_the_model() {
    let secrets = common::FakeSecrets::new();
    // The check prints a log full of secrets before it fails; one secret
    // is in the code the model must change around; a tracked .env holds a
    // value no rule knows.
    let log: Vec<String> = secrets
        .lines()
        .into_iter()
        .filter(|l| !l.contains("postgres://"))
        .collect();
    let password = "Pq8-calc-pw-77x";
    let env_value = "zz-weather-serial-9f8e7d";
    let calc = format!("# API: https://calc:{password}@calc.example.invalid/\n{CALC}");
    let fix = "```diff\n--- a/calc.sh\n+++ b/calc.sh\n@@ -1,4 +1,4 @@\n \
               # API: https://calc:[secret:url-password#1]@calc.example.invalid/\n add() {\n\
               -\techo $(($1 - $2))\n+\techo $(($1 + $2))\n }\n```\n";
    let server = Server::start(vec![Step::answer(fix)]);
    let p = Project::openai(&server, "");
    std::fs::write(p.repo.join("calc.sh"), &calc).unwrap();
    std::fs::write(p.repo.join("settings.log"), log.join("\n") + "\n").unwrap();
    std::fs::write(p.repo.join(".env"), format!("WEATHER_SERIAL={env_value}\n")).unwrap();
    std::fs::write(p.repo.join("test.sh"), format!("cat settings.log\n{TEST}")).unwrap();
    p.git(&["add", "."]);
    p.git(&["commit", "-qm", "secrets"]);

    let err = ok(&p.patch(&[]));
    assert!(err.contains("fixed on branch pimainteno/"), "{err}");
    assert_eq!(server.requests(), 1);
    let body = String::from_utf8_lossy(&server.seen()[0].body).into_owned();
    let prompt = prompt_of(&server, 0);
    for text in [&body, &prompt] {
        assert_eq!(
            secrets.found_in(text),
            Vec::<&str>::new(),
            "sent:\n{prompt}"
        );
        assert!(!text.contains(password), "sent:\n{prompt}");
        assert!(!text.contains(env_value), ".env was read:\n{prompt}");
    }
    assert!(
        prompt.contains("FAIL: add 2 3 gave -1, expected 5"),
        "{prompt}"
    );
    assert!(
        prompt.contains("Authorization: Bearer [secret:"),
        "{prompt}"
    );
    assert!(
        prompt.contains("https://calc:[secret:url-password#1]@calc.example.invalid/"),
        "{prompt}"
    );
    // The model's diff kept the placeholder in a context line: it applied
    // to the real file, whose secret is back in place.
    let branch = fix_branch(&p.repo);
    assert_eq!(
        p.git(&["show", &format!("{branch}:calc.sh")]),
        format!(
            "# API: https://calc:{password}@calc.example.invalid/\nadd() {{\n\techo $(($1 + $2))\n}}"
        )
    );
    // What was sent is on record, as sent.
    let out = Command::new(env!("CARGO_BIN_EXE_pimainteno"))
        .arg("--config")
        .arg(&p.config)
        .args(["history", "calc", "--prompts"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains(prompt.trim_end()), "{shown}");
    assert!(!shown.contains(password), "{shown}");
}
