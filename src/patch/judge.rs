//! A check that passes is not yet a fix. Where its output names the tests
//! ([`crate::testrun`]), the tests that failed at the base must now run and
//! pass, every test that passed must still pass, and no fewer may run
//! (SWE-bench's FAIL_TO_PASS and PASS_TO_PASS). A change that skips,
//! ignores or deletes tests is refused, whatever the output names, unless
//! a `--task` asks for exactly that. Where the output names no tests, the
//! exit code and the protected files ([`super::confine`]) are all there is.

use super::change::Change;
use crate::check::CheckOutcome;
use crate::testrun::{self, TestRun};

/// What a passing check of a change amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// A fix: the tests' verdict (when the output names tests), and the
    /// tests that went from failing to passing.
    Fix {
        tests: Option<String>,
        fixed: Vec<String>,
    },
    /// Not yet: some test fails or broke (the model is told which).
    NotYet(String),
    /// The change weakens the tests: refused.
    Weakened(String),
}

/// Markers that skip or ignore a test, by language; a change that adds
/// more of one than it removes skips tests.
const SKIP_MARKERS: [&str; 19] = [
    "#[ignore",
    "@pytest.mark.skip",
    "@pytest.mark.xfail",
    "pytest.skip(",
    "pytest.xfail(",
    "@unittest.skip",
    "self.skipTest(",
    "unittest.SkipTest",
    "t.Skip(",
    "t.SkipNow(",
    "t.Skipf(",
    ".skip(",
    "test.todo(",
    "xit(",
    "xdescribe(",
    "xtest(",
    "skip: true",
    "@Disabled",
    "@Ignore",
];

/// Whether a path is a test file by the usual conventions.
fn is_test_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let in_test_dir = path
        .split('/')
        .rev()
        .skip(1)
        .any(|d| matches!(d, "tests" | "test" | "__tests__" | "spec"));
    in_test_dir
        || (name.starts_with("test_") && name.ends_with(".py"))
        || name.ends_with("_test.py")
        || name.ends_with("_test.go")
        || name.ends_with("_spec.rb")
        || name.ends_with(".bats")
        || [".test.", ".spec."].iter().any(|m| name.contains(m))
}

/// Why the change itself weakens the tests, from its diff alone: test
/// files deleted, skip markers added.
fn weakens(change: &Change) -> Option<String> {
    let deleted: Vec<&str> = change
        .files
        .iter()
        .filter(|f| f.delta == git2::Delta::Deleted && is_test_file(&f.path))
        .map(|f| f.path.as_str())
        .collect();
    if !deleted.is_empty() {
        return Some(format!("it deletes test files ({})", deleted.join(", ")));
    }
    for f in &change.files {
        for marker in SKIP_MARKERS {
            let count = |sign: char| {
                f.diff
                    .lines()
                    .filter(|l| {
                        l.starts_with(sign)
                            && !l.starts_with("+++")
                            && !l.starts_with("---")
                            && l.contains(marker)
                    })
                    .count()
            };
            if count('+') > count('-') {
                return Some(format!(
                    "{}: it adds `{marker}`, which skips a test",
                    f.path
                ));
            }
        }
    }
    None
}

/// Whether a task's text asks for tests to be skipped or removed.
pub fn task_allows_weakening(task: &str) -> bool {
    let t = task.to_lowercase();
    t.contains("test")
        && ["skip", "ignore", "disable", "remove", "delete", "drop"]
            .iter()
            .any(|w| t.contains(w))
}

/// Judge a change whose check passed (`after`), against the tests named
/// at the base (`before`).
pub fn judge(
    before: Option<&TestRun>,
    after: &CheckOutcome,
    change: &Change,
    weakening_allowed: bool,
) -> Judgement {
    if !weakening_allowed && let Some(why) = weakens(change) {
        return Judgement::Weakened(why);
    }
    let (Some(before), Some(after)) = (before, after.tests.as_ref()) else {
        return Judgement::Fix {
            tests: None,
            fixed: Vec::new(),
        };
    };
    let v = testrun::compare(before, after);
    let fewer = !v.newly_skipped.is_empty() || !v.missing.is_empty() || v.ran_after < v.ran_before;
    if fewer && !weakening_allowed {
        return Judgement::Weakened(format!(
            "fewer tests run ({} before, {} after): {}",
            v.ran_before,
            v.ran_after,
            v.summary()
        ));
    }
    // Fewer tests here means the task asked for it.
    if !v.is_fix() && !fewer {
        return Judgement::NotYet(v.summary());
    }
    Judgement::Fix {
        tests: Some(v.summary()),
        fixed: v.fixed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::change::ChangedFile;

    fn file(path: &str, delta: git2::Delta, diff: &str) -> ChangedFile {
        ChangedFile {
            path: path.into(),
            delta,
            binary: false,
            symlink_target: None,
            added: 1,
            removed: 0,
            bytes: diff.len(),
            diff: diff.into(),
        }
    }

    fn outcome(tests: Option<TestRun>) -> CheckOutcome {
        CheckOutcome {
            command: "cargo test".into(),
            passed: true,
            exit_code: Some(0),
            timed_out: false,
            duration_ms: 1,
            output_tail: String::new(),
            tests,
        }
    }

    fn run(tests: &[(&str, testrun::Status)]) -> TestRun {
        TestRun {
            format: "libtest".into(),
            tests: tests.iter().map(|(n, s)| (n.to_string(), *s)).collect(),
        }
    }

    #[test]
    fn skip_markers_and_deleted_tests_weaken() {
        use git2::Delta::{Deleted, Modified};
        let ignore = Change {
            files: vec![file(
                "src/lib.rs",
                Modified,
                "--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -1 +1,2 @@\n+    #[ignore]\n     #[test]\n",
            )],
        };
        let j = judge(None, &outcome(None), &ignore, false);
        assert!(
            matches!(&j, Judgement::Weakened(w) if w.contains("#[ignore")),
            "{j:?}"
        );
        // A task that asks for it.
        assert!(task_allows_weakening(
            "Skip the flaky network test on the Pi"
        ));
        assert!(matches!(
            judge(None, &outcome(None), &ignore, true),
            Judgement::Fix { .. }
        ));
        // Moving a marker is no new skip.
        let moved = Change {
            files: vec![file(
                "t.py",
                Modified,
                "@@ -1,3 +1,3 @@\n-@pytest.mark.skip\n def a(): pass\n+@pytest.mark.skip\n",
            )],
        };
        assert!(matches!(
            judge(None, &outcome(None), &moved, false),
            Judgement::Fix { .. }
        ));
        let deleted = Change {
            files: vec![file("tests/test_calc.py", Deleted, "")],
        };
        assert!(matches!(
            judge(None, &outcome(None), &deleted, false),
            Judgement::Weakened(_)
        ));
        assert!(is_test_file("pkg/calc_test.go") && is_test_file("web/a.spec.ts"));
        assert!(!is_test_file("src/testing.rs") && !is_test_file("contest.py"));
    }

    #[test]
    fn the_tests_decide_when_the_output_names_them() {
        use testrun::Status::{Failed, Passed, Skipped};
        let none = Change::default();
        let before = run(&[("a", Failed), ("b", Passed), ("c", Passed)]);
        let fixed = run(&[("a", Passed), ("b", Passed), ("c", Passed)]);
        match judge(Some(&before), &outcome(Some(fixed)), &none, false) {
            Judgement::Fix { fixed, tests } => {
                assert_eq!(fixed, ["a"]);
                assert!(tests.unwrap().contains("fixed"));
            }
            other => panic!("{other:?}"),
        }
        let skipped = run(&[("a", Skipped), ("b", Passed), ("c", Passed)]);
        assert!(matches!(
            judge(Some(&before), &outcome(Some(skipped)), &none, false),
            Judgement::Weakened(_)
        ));
        let gone = run(&[("b", Passed), ("c", Passed)]);
        assert!(matches!(
            judge(Some(&before), &outcome(Some(gone)), &none, false),
            Judgement::Weakened(_)
        ));
        let broke = run(&[("a", Passed), ("b", Failed), ("c", Passed)]);
        assert!(matches!(
            judge(Some(&before), &outcome(Some(broke)), &none, false),
            Judgement::NotYet(_)
        ));
        // No names after (or before): the exit code stands.
        assert!(matches!(
            judge(Some(&before), &outcome(None), &none, false),
            Judgement::Fix { tests: None, .. }
        ));
    }
}
