//! Which tests a check's output names and how each ended, so that a fix can
//! be judged test by test rather than by the exit code alone.
//!
//! Formats: libtest (`cargo test`), pytest, `go test -v`, and TAP
//! (`node --test` on a pipe, `prove -v`, `bats`). Several may appear in one
//! output (`make check` running two suites): their tests are merged.
//!
//! The text comes from code an LLM may have written, so the parsers never
//! panic, work in time linear in the input, and when one test is reported
//! twice the worse outcome wins: printing a fake `ok` line cannot hide a
//! real failure. A runner known to leave passing tests unnamed (`cargo test
//! -q`, pytest without `-rp`, `go test` without `-v`, `prove` without `-v`)
//! makes [`parse`] return `None`: comparing names would otherwise call every
//! passing test missing. [`env_for_names`] asks the runners for names.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// Longest identifier kept, in bytes; longer ones are cut (then numbered
/// if that makes two equal).
const MAX_ID: usize = 512;
/// Deepest TAP nesting followed; deeper lines count as this deep.
const MAX_DEPTH: usize = 16;
/// Names listed per category in [`Verdict::summary`].
const SUMMARY_NAMES: usize = 3;

/// How one test ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Passed,
    Failed,
    /// Not run, or run with a failure that was expected (pytest `xfail`,
    /// TAP `# TODO`): either way it proves nothing.
    Skipped,
}

/// The tests a check's output names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestRun {
    /// The runners recognised, joined by `+` in this order: `libtest`,
    /// `pytest`, `go`, `tap` (e.g. `libtest+pytest`).
    pub format: String,
    /// Test identifier → how it ended. Identifiers are qualified so that
    /// they are unique in the output and stable between two runs:
    /// - libtest: `src/lib.rs (calc): tests::adds`, `tests/a.rs (a): smoke`
    ///   (the `Running` line, without the hash), and for doc-tests
    ///   `doc-tests calc: src/lib.rs - add` (without `(line N)`, which moves
    ///   with any edit above it; two examples on one item become `… - add`
    ///   and `… - add #2`, in line order);
    /// - pytest: the node id (`tests/test_x.py::TestY::test_z[1]`);
    /// - go: `example.com/m/pkg: TestX/sub`;
    /// - TAP: the names of the enclosing subtests, `group > inner`, after
    ///   `t/file.t: ` for `prove`. Equal names get ` #2`, ` #3`… in order.
    pub tests: BTreeMap<String, Status>,
}

impl TestRun {
    /// Tests that ran: passed or failed.
    pub fn ran(&self) -> usize {
        self.tests
            .values()
            .filter(|s| **s != Status::Skipped)
            .count()
    }
}

/// Parse a whole check output (stdout and stderr interleaved). `None` when
/// no known format names a test, or when one is recognised but leaves
/// passing tests unnamed (then the caller falls back to the exit code).
pub fn parse(output: &str) -> Option<TestRun> {
    let lines: Vec<Cow<'_, str>> = output.lines().map(clean).collect();
    let mut run = TestRun::default();
    let mut formats = Vec::new();
    for (name, found) in [
        ("libtest", libtest(&lines)),
        ("pytest", pytest(&lines)),
        ("go", go(&lines)),
        ("tap", tap(&lines)),
    ] {
        match found {
            Found::Nothing => {}
            Found::Unnamed => return None,
            Found::Tests(tests) => {
                if tests.is_empty() {
                    continue;
                }
                formats.push(name);
                for (id, status) in tests {
                    record(&mut run.tests, id, status);
                }
            }
        }
    }
    if run.tests.is_empty() {
        return None;
    }
    run.format = formats.join("+");
    Some(run)
}

/// Environment variables to set for the check so that runners name every
/// test, passing ones included; `current` reads the value the check would
/// otherwise get. Only variables that change are returned; each is
/// harmless for other commands:
/// - `PYTEST_ADDOPTS`: `-rfEsxXp` lists passed, failed, errors, xfail and
///   xpass by node id in the short summary (unlike `-rA`, without the
///   captured output of every passing test); `-v` adds one line per test,
///   the only place where skipped tests have node ids. Appended to the
///   current value (options given on pytest's command line still win).
/// - `GOFLAGS`: `-v` makes `go test` print `=== RUN` and `--- PASS:` lines;
///   other go commands only list package names on stderr.
/// - `HARNESS_VERBOSE=1`: `prove` prints each file's TAP.
///
/// Nothing for cargo (no variable undoes `-q`) nor node: `node --test`
/// prints TAP on a pipe up to Node 22 by itself, and `NODE_OPTIONS=
/// --test-reporter=tap` would make a command that names its own reporter
/// fail (Node 20: "must match the number of specified
/// '--test-reporter-destination'"). Node 23+ prints its spec format, which
/// is not parsed: `None`, the exit code decides.
pub fn env_for_names(current: impl Fn(&str) -> Option<String>) -> Vec<(String, String)> {
    let mut env = Vec::new();
    let mut append = |name: &str, flags: &[&str], present: &dyn Fn(&str, &str) -> bool| {
        let old = current(name).unwrap_or_default();
        let mut value = old.clone();
        for flag in flags {
            if old.split_whitespace().any(|o| present(o, flag)) {
                continue;
            }
            if !value.is_empty() && !value.ends_with(char::is_whitespace) {
                value.push(' ');
            }
            value.push_str(flag);
        }
        if value != old {
            env.push((name.to_string(), value));
        }
    };
    append("PYTEST_ADDOPTS", &["-rfEsxXp", "-v"], &|o, f| o == f);
    // `-v=false` is the user's explicit choice: leave it.
    append("GOFLAGS", &["-v"], &|o, f| o == f || o.starts_with("-v="));
    if current("HARNESS_VERBOSE").is_none() {
        env.push(("HARNESS_VERBOSE".to_string(), "1".to_string()));
    }
    env
}

/// How the tests of a check after a change compare with those before it.
/// Each test named before is in at most one list; the lists are sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Failed before, passed after.
    pub fixed: Vec<String>,
    /// Passed before, failed after.
    pub broken: Vec<String>,
    /// Failed before and after.
    pub still_failing: Vec<String>,
    /// Ran (passed or failed) before, skipped after.
    pub newly_skipped: Vec<String>,
    /// Named before, absent after.
    pub missing: Vec<String>,
    /// Failed after, and not named or skipped before (a test that
    /// `cargo test` did not reach before, a new test that fails...).
    pub new_failing: Vec<String>,
    /// Passed before and after.
    pub still_passing: usize,
    /// Tests that ran (passed or failed) before and after.
    pub ran_before: usize,
    pub ran_after: usize,
}

/// Compare the tests of a check before a change with those after it.
pub fn compare(before: &TestRun, after: &TestRun) -> Verdict {
    use Status::*;
    let mut v = Verdict {
        ran_before: before.ran(),
        ran_after: after.ran(),
        ..Verdict::default()
    };
    for (id, was) in &before.tests {
        let list = match (was, after.tests.get(id)) {
            (_, None) => &mut v.missing,
            (Failed, Some(Passed)) => &mut v.fixed,
            (Failed, Some(Failed)) => &mut v.still_failing,
            (Passed, Some(Failed)) => &mut v.broken,
            (Passed | Failed, Some(Skipped)) => &mut v.newly_skipped,
            (Skipped, Some(Failed)) => &mut v.new_failing,
            (Passed, Some(Passed)) => {
                v.still_passing += 1;
                continue;
            }
            (Skipped, Some(Passed | Skipped)) => continue,
        };
        list.push(id.clone());
    }
    for (id, now) in &after.tests {
        if *now == Failed && !before.tests.contains_key(id) {
            v.new_failing.push(id.clone());
        }
    }
    v.new_failing.sort();
    v
}

impl Verdict {
    /// True when every test that failed before passed after, none broke,
    /// none was skipped or went missing, no other test fails, and no fewer
    /// tests ran. With no failing test before, this only says that nothing
    /// got worse. The check's exit status should be required as well: a
    /// change can print lines that look like passing tests.
    pub fn is_fix(&self) -> bool {
        self.still_failing.is_empty()
            && self.broken.is_empty()
            && self.newly_skipped.is_empty()
            && self.missing.is_empty()
            && self.new_failing.is_empty()
            && self.ran_after >= self.ran_before
    }

    /// One line for a user: `2 tests fixed (a, b); 40 still pass`, or what
    /// is wrong: `not a fix: 1 test still failing (c); 1 test missing (d)`.
    pub fn summary(&self) -> String {
        let pass = format!("{} still pass", self.still_passing);
        if self.is_fix() {
            if self.fixed.is_empty() {
                return format!("no test was failing; {pass}");
            }
            return format!(
                "{} fixed ({}); {pass}",
                tests(self.fixed.len()),
                names(&self.fixed)
            );
        }
        let mut parts = Vec::new();
        for (list, what) in [
            (&self.still_failing, "still failing"),
            (&self.broken, "broken"),
            (&self.newly_skipped, "newly skipped"),
            (&self.missing, "missing"),
            (&self.new_failing, "newly failing"),
        ] {
            if !list.is_empty() {
                parts.push(format!("{} {what} ({})", tests(list.len()), names(list)));
            }
        }
        if self.ran_after < self.ran_before {
            parts.push(format!(
                "fewer tests ran ({} before, {} after)",
                self.ran_before, self.ran_after
            ));
        }
        if !self.fixed.is_empty() {
            parts.push(format!("{} fixed", tests(self.fixed.len())));
        }
        format!("not a fix: {}", parts.join("; "))
    }
}

fn tests(n: usize) -> String {
    if n == 1 {
        "1 test".into()
    } else {
        format!("{n} tests")
    }
}

fn names(list: &[String]) -> String {
    let shown = list[..list.len().min(SUMMARY_NAMES)].join(", ");
    match list.len().saturating_sub(SUMMARY_NAMES) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

/// What one format's parser made of the output.
enum Found {
    /// The format is not there.
    Nothing,
    /// The format is there but some tests that ran are not named.
    Unnamed,
    Tests(BTreeMap<String, Status>),
}

/// `status` for `id`, the worse one if `id` was seen already.
fn record(tests: &mut BTreeMap<String, Status>, id: String, status: Status) {
    fn rank(s: Status) -> u8 {
        match s {
            Status::Passed => 0,
            Status::Skipped => 1,
            Status::Failed => 2,
        }
    }
    tests
        .entry(id)
        .and_modify(|old| {
            if rank(status) > rank(*old) {
                *old = status;
            }
        })
        .or_insert(status);
}

/// `base`, or `base #2`, `base #3`... the first one not in `taken`.
/// `next` remembers the last number per base, so n equal names cost O(n).
fn numbered<V>(
    taken: &BTreeMap<String, V>,
    next: &mut HashMap<String, u64>,
    base: String,
) -> String {
    if !taken.contains_key(&base) {
        return base;
    }
    let n = next.entry(base.clone()).or_insert(1);
    loop {
        *n += 1;
        let id = format!("{base} #{n}");
        if !taken.contains_key(&id) {
            return id;
        }
    }
}

/// `s` cut to [`MAX_ID`] bytes at a character boundary.
fn cap(mut s: String) -> String {
    if s.len() > MAX_ID {
        let mut end = MAX_ID;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// `qualifier: name`, or `name` alone.
fn qualify(qualifier: Option<&str>, name: &str) -> String {
    match qualifier {
        Some(q) => cap(format!("{q}: {name}")),
        None => cap(name.to_string()),
    }
}

/// A line without colour escapes (CSI sequences) or a trailing `\r`.
fn clean(line: &str) -> Cow<'_, str> {
    let line = line.trim_end_matches('\r');
    if !line.contains('\x1b') {
        return Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
        } else if chars.next() == Some('[') {
            // Parameters up to the final byte, '@'..='~'.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    Cow::Owned(out)
}

/// The leading decimal number of `s` (saturating), and the rest.
fn number(s: &str) -> Option<(u64, &str)> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    let n = s[..end].bytes().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    });
    Some((n, &s[end..]))
}

// ---------------------------------------------------------------- libtest

fn libtest(lines: &[Cow<'_, str>]) -> Found {
    struct Doc {
        qualifier: Option<String>,
        name: String,
        line: u64,
        status: Status,
    }
    let mut tests = BTreeMap::new();
    let mut docs = Vec::new();
    let mut qualifiers: BTreeMap<String, ()> = BTreeMap::new();
    let mut qualifier_numbers = HashMap::new();
    let mut qualifier: Option<String> = None;
    let mut doc = false;
    // Inside `running N tests` … `test result:`.
    let mut in_block = false;
    // In the `failures:` report, where tests' own output is quoted.
    let mut in_report = false;
    let mut named: u64 = 0;
    let mut unnamed = false;
    for line in lines {
        let t = line.trim();
        // cargo indents these; a test printing them at column 0 is ignored.
        if line.starts_with(' ') {
            let running = t.strip_prefix("Running ").map(running_qualifier);
            let doc_tests = t
                .strip_prefix("Doc-tests ")
                .map(|c| format!("doc-tests {}", c.trim()));
            if let Some(q) = running.as_ref().or(doc_tests.as_ref()) {
                let q = numbered(&qualifiers, &mut qualifier_numbers, cap(q.clone()));
                qualifiers.insert(q.clone(), ());
                qualifier = Some(q);
                doc = doc_tests.is_some();
                in_block = false;
                continue;
            }
        }
        if let Some(rest) = t.strip_prefix("running ") {
            if let Some((_, unit)) = number(rest) {
                if unit == " tests" || unit == " test" {
                    in_block = true;
                    in_report = false;
                    named = 0;
                    continue;
                }
            }
        }
        if !in_block {
            continue;
        }
        if t == "failures:" || t == "successes:" {
            in_report = true;
        } else if let Some(rest) = t.strip_prefix("test result: ") {
            // `ok. 2 passed; 1 failed; 2 ignored; 0 measured; …`
            let total = rest
                .split(';')
                .filter_map(|part| {
                    let part = part
                        .trim()
                        .trim_start_matches(|c: char| !c.is_ascii_digit());
                    let (n, word) = number(part)?;
                    matches!(word.trim(), "passed" | "failed" | "ignored" | "measured").then_some(n)
                })
                .fold(0u64, u64::saturating_add);
            // `cargo test -q` prints dots for passing tests.
            if named < total {
                unnamed = true;
            }
            in_block = false;
        } else if !in_report {
            if let Some((name, status)) = line.strip_prefix("test ").and_then(libtest_line) {
                named += 1;
                match doc_line(name).filter(|_| doc) {
                    Some((base, n)) => docs.push(Doc {
                        qualifier: qualifier.clone(),
                        name: base,
                        line: n,
                        status,
                    }),
                    None => record(&mut tests, qualify(qualifier.as_deref(), name), status),
                }
            }
        }
    }
    if unnamed {
        return Found::Unnamed;
    }
    // Examples of one item are told apart by their order in the file.
    docs.sort_by(|a, b| (&a.qualifier, &a.name, a.line).cmp(&(&b.qualifier, &b.name, b.line)));
    let mut doc_numbers = HashMap::new();
    for d in docs {
        let id = numbered(
            &tests,
            &mut doc_numbers,
            qualify(d.qualifier.as_deref(), &d.name),
        );
        tests.insert(id, d.status);
    }
    if tests.is_empty() {
        Found::Nothing
    } else {
        Found::Tests(tests)
    }
}

/// `unittests src/lib.rs (target/debug/deps/calc-0123456789abcdef)` →
/// `src/lib.rs (calc)`: the crate's name tells the `src/lib.rs` of two
/// workspace members apart, and the hash changes with every build.
fn running_qualifier(rest: &str) -> String {
    let rest = rest.trim();
    let (what, path) = match rest.strip_suffix(')').and_then(|r| r.rsplit_once(" (")) {
        Some((what, path)) => (Some(what.strip_prefix("unittests ").unwrap_or(what)), path),
        // Cargo before 1.55 printed the binary alone.
        None => (None, rest),
    };
    let file = path.rsplit(['/', '\\']).next().unwrap_or(path);
    let file = file.strip_suffix(".exe").unwrap_or(file);
    let stem = match file.rsplit_once('-') {
        Some((stem, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            stem
        }
        _ => file,
    };
    match what {
        Some(what) => format!("{what} ({stem})"),
        None => stem.to_string(),
    }
}

/// `name ... ok` (after `test `) → the name and its status.
fn libtest_line(rest: &str) -> Option<(&str, Status)> {
    // Names have no ` ... `; an ignore reason may.
    let (name, result) = rest.split_once(" ... ")?;
    let status = match result.split_whitespace().next()?.trim_end_matches(',') {
        "ok" | "bench:" => Status::Passed,
        "FAILED" => Status::Failed,
        "ignored" => Status::Skipped,
        _ => return None,
    };
    // Dropping `#[should_panic]` does not make it another test.
    let name = name.strip_suffix(" - should panic").unwrap_or(name).trim();
    (!name.is_empty()).then_some((name, status))
}

/// `src/lib.rs - add (line 3)` → (`src/lib.rs - add`, 3); whatever follows
/// the line number (`- compile fail`) is kept.
fn doc_line(name: &str) -> Option<(String, u64)> {
    let at = name.rfind(" (line ")?;
    let (n, rest) = number(&name[at + " (line ".len()..])?;
    let tail = rest.strip_prefix(')')?;
    Some((format!("{}{tail}", &name[..at]), n))
}

// ---------------------------------------------------------------- pytest

fn pytest(lines: &[Cow<'_, str>]) -> Found {
    #[derive(PartialEq)]
    enum Region {
        Other,
        /// After `test session starts`: `-v` lines.
        Progress,
        /// `short test summary info`: `-r` lines.
        Summary,
    }
    /// One pytest session's tests, and how many lines named a pass or a
    /// failure in each region (a test passed then errored in teardown is
    /// counted twice by pytest too).
    #[derive(Default)]
    struct Session {
        tests: BTreeMap<String, Status>,
        progress: [u64; 2],
        summary: [u64; 2],
    }
    let mut tests = BTreeMap::new();
    let mut session = Session::default();
    let mut region = Region::Other;
    let mut seen = false;
    let mut unnamed = false;
    for line in lines {
        let t = line.trim();
        let title = banner(t);
        if title == Some("test session starts") {
            for (id, s) in std::mem::take(&mut session).tests {
                record(&mut tests, id, s);
            }
            region = Region::Progress;
            seen = true;
            continue;
        }
        if title == Some("short test summary info") {
            region = Region::Summary;
            seen = true;
            continue;
        }
        // The closing line: `=== 2 failed, 4 passed in 0.03s ===`, plain with -q.
        if let Some([passed, failed]) = title.or(seen.then_some(t)).and_then(pytest_counts) {
            let s = std::mem::take(&mut session);
            if s.progress[0].max(s.summary[0]) < passed || s.progress[1].max(s.summary[1]) < failed
            {
                unnamed = true;
            }
            for (id, status) in s.tests {
                record(&mut tests, id, status);
            }
            region = Region::Other;
            continue;
        }
        if title.is_some() {
            region = Region::Other;
            continue;
        }
        let found = match region {
            Region::Progress => pytest_verbose(t),
            Region::Summary => pytest_summary(t),
            Region::Other => None,
        };
        if let Some((id, status)) = found {
            let counts = match region {
                Region::Progress => &mut session.progress,
                _ => &mut session.summary,
            };
            match status {
                Status::Passed => counts[0] += 1,
                Status::Failed => counts[1] += 1,
                Status::Skipped => {}
            }
            record(&mut session.tests, cap(id.to_string()), status);
        }
    }
    // Output cut short: keep what was named.
    for (id, s) in session.tests {
        record(&mut tests, id, s);
    }
    if unnamed {
        Found::Unnamed
    } else if !seen || tests.is_empty() {
        Found::Nothing
    } else {
        Found::Tests(tests)
    }
}

/// `==== title ====` → `title`.
fn banner(t: &str) -> Option<&str> {
    let inner = t.strip_prefix("==")?.strip_suffix("==")?;
    let title = inner.trim_matches('=').trim();
    (!title.is_empty()).then_some(title)
}

/// `2 failed, 4 passed, 1 xpassed, 1 error in 0.03s` → [passed + xpassed,
/// failed + errors]; `None` unless every item is a known count.
fn pytest_counts(t: &str) -> Option<[u64; 2]> {
    let (items, _) = t.rsplit_once(" in ")?;
    if items == "no tests ran" {
        return Some([0, 0]);
    }
    let mut counts = [0u64; 2];
    for item in items.split(", ") {
        let (n, word) = number(item)?;
        let slot = match word.strip_prefix(' ')? {
            "passed" | "xpassed" => 0,
            "failed" | "error" | "errors" => 1,
            "skipped" | "xfailed" | "deselected" | "warning" | "warnings" | "rerun" => continue,
            _ => return None,
        };
        counts[slot] = counts[slot].saturating_add(n);
    }
    Some(counts)
}

fn pytest_status(word: &str) -> Option<Status> {
    Some(match word {
        "PASSED" | "XPASS" => Status::Passed,
        "FAILED" | "ERROR" => Status::Failed,
        // An expected failure proves nothing either.
        "SKIPPED" | "XFAIL" => Status::Skipped,
        _ => return None,
    })
}

/// A node id, up to the first space outside `[...]` (parameter ids may
/// hold spaces), and the rest.
fn node_id(t: &str) -> (&str, &str) {
    let mut depth = 0usize;
    for (i, b) in t.bytes().enumerate() {
        match b {
            b'[' => depth = depth.saturating_add(1),
            b']' => depth = depth.saturating_sub(1),
            b' ' if depth == 0 => return (&t[..i], &t[i + 1..]),
            _ => {}
        }
    }
    (t, "")
}

/// `-v`: `tests/t.py::test_a PASSED [ 50%]`, or with xdist
/// `[gw0] [ 50%] PASSED tests/t.py::test_a`.
fn pytest_verbose(t: &str) -> Option<(&str, Status)> {
    if t.starts_with("[gw") {
        let (_, rest) = t.split_once("] ")?;
        let rest = rest.trim_start();
        let rest = match rest.strip_prefix('[') {
            Some(r) => r.split_once("] ")?.1.trim_start(),
            None => rest,
        };
        let (word, rest) = rest.split_once(' ')?;
        let status = pytest_status(word)?;
        let (id, _) = node_id(rest.trim());
        return is_node_id(id).then_some((id, status));
    }
    let (id, rest) = node_id(t);
    let status = pytest_status(rest.split(' ').next()?)?;
    is_node_id(id).then_some((id, status))
}

/// `PASSED id`, `FAILED id - message`, `XPASS id reason`; not `SKIPPED
/// [1] file:line: reason`, which has no node id.
fn pytest_summary(t: &str) -> Option<(&str, Status)> {
    let (word, rest) = t.split_once(' ')?;
    let status = pytest_status(word)?;
    if rest.starts_with('[') {
        return None;
    }
    let (id, _) = node_id(rest);
    (!id.is_empty()).then_some((id, status))
}

fn is_node_id(id: &str) -> bool {
    id.contains("::") || id.ends_with(".py")
}

// ---------------------------------------------------------------- go

fn go(lines: &[Cow<'_, str>]) -> Found {
    let mut tests = BTreeMap::new();
    // Results of the package whose `ok`/`FAIL` line comes next.
    let mut pending: Vec<(&str, Status)> = Vec::new();
    // Tests started (`=== RUN`) → whether they reported an end.
    let mut started: BTreeMap<&str, bool> = BTreeMap::new();
    let (mut run_lines, mut packages) = (false, false);
    for line in lines {
        let s = line.trim_start();
        if let Some(name) = s.strip_prefix("=== RUN ") {
            let name = name.trim();
            if !name.is_empty() {
                started.entry(name).or_insert(false);
                run_lines = true;
            }
        } else if let Some((name, status)) = go_result(s) {
            pending.push((name, status));
            started.insert(name, true);
        } else if let Some((failed, package)) = go_package(line) {
            packages = true;
            for (name, status) in pending.drain(..) {
                record(&mut tests, qualify(Some(package), name), status);
            }
            // Started and never ended: the package panicked or timed out.
            for (name, ended) in std::mem::take(&mut started) {
                if failed && !ended {
                    record(&mut tests, qualify(Some(package), name), Status::Failed);
                }
            }
        }
    }
    // No package line (a test binary run directly, or output cut short).
    for (name, status) in pending {
        record(&mut tests, qualify(None, name), status);
    }
    if tests.is_empty() {
        Found::Nothing
    } else if !run_lines && packages {
        // Without -v only failures are named.
        Found::Unnamed
    } else {
        Found::Tests(tests)
    }
}

/// `--- PASS: TestX/sub (0.00s)` → (`TestX/sub`, Passed).
fn go_result(s: &str) -> Option<(&str, Status)> {
    let (status, rest) = [
        ("--- PASS: ", Status::Passed),
        ("--- FAIL: ", Status::Failed),
        ("--- SKIP: ", Status::Skipped),
    ]
    .into_iter()
    .find_map(|(p, st)| s.strip_prefix(p).map(|r| (st, r)))?;
    // Go names hold no spaces (subtest names have them as `_`).
    rest.split_whitespace().next().map(|name| (name, status))
}

/// `ok  \texample.com/m\t0.01s` → (false, `example.com/m`); `FAIL\t…` →
/// true. `?   \t… [no test files]` ran nothing.
fn go_package(line: &str) -> Option<(bool, &str)> {
    let (failed, rest) = if let Some(r) = line.strip_prefix("ok  \t") {
        (false, r)
    } else {
        (true, line.strip_prefix("FAIL\t")?)
    };
    let package = rest.split(['\t', ' ']).next()?;
    (!package.is_empty()).then_some((failed, package))
}

// ---------------------------------------------------------------- TAP

fn tap(lines: &[Cow<'_, str>]) -> Found {
    struct Node {
        name: String,
        status: Status,
        parent: Option<usize>,
        file: Option<usize>,
    }
    let mut nodes: Vec<Node> = Vec::new();
    // prove's `t/file.t ..` headers.
    let mut files: Vec<String> = Vec::new();
    // Results per depth still waiting for their parent's line, which TAP
    // prints after its subtests.
    let mut waiting: Vec<Vec<usize>> = vec![Vec::new(); MAX_DEPTH + 1];
    let mut marker = false;
    // The indentation of a result line just read, and whether we are in
    // the YAML block (`---` … `...`) that may follow it: node quotes error
    // messages there, which may hold anything.
    let mut after_result: Option<usize> = None;
    let mut yaml = false;
    for line in lines {
        let (indent, s) = indentation(line);
        let depth = (indent / 4).min(MAX_DEPTH);
        let s = s.trim_end();
        if yaml {
            yaml = s != "...";
            continue;
        }
        if s == "---" && after_result.is_some_and(|i| indent > i) {
            yaml = true;
            continue;
        }
        after_result = None;
        if s.starts_with("TAP version") || is_plan(s) {
            marker = true;
        } else if let Some(file) = (indent == 0).then(|| prove_header(s)).flatten() {
            files.push(cap(file.to_string()));
            waiting.iter_mut().for_each(Vec::clear);
        } else if s.starts_with("# Subtest:") {
            // A new subtest here: deeper results left waiting have lost
            // their parent (it crashed).
            waiting[depth + 1..].iter_mut().for_each(Vec::clear);
        } else if let Some((name, status)) = tap_result(s) {
            let me = nodes.len();
            for child in waiting[depth + 1..].iter_mut().flat_map(|w| w.drain(..)) {
                nodes[child].parent = Some(me);
            }
            waiting[depth].push(me);
            after_result = Some(indent);
            nodes.push(Node {
                name,
                status,
                parent: None,
                file: files.len().checked_sub(1),
            });
        }
    }
    if !marker || nodes.is_empty() {
        return Found::Nothing;
    }
    let mut tests = BTreeMap::new();
    let mut next = HashMap::new();
    for node in &nodes {
        // Parents are strictly shallower, so this is at most MAX_DEPTH + 1 long.
        let mut path = vec![node.name.as_str()];
        let mut up = node.parent;
        while let Some(p) = up {
            path.push(&nodes[p].name);
            up = nodes[p].parent;
        }
        let mut base = match node.file {
            Some(f) => format!("{}: ", files[f]),
            None => String::new(),
        };
        for (i, name) in path.iter().rev().enumerate() {
            if base.len() > MAX_ID {
                break;
            }
            if i > 0 {
                base.push_str(" > ");
            }
            base.push_str(name);
        }
        let id = numbered(&tests, &mut next, cap(base));
        tests.insert(id, node.status);
    }
    Found::Tests(tests)
}

/// Leading spaces (a tab counts 4) and the rest.
fn indentation(line: &str) -> (usize, &str) {
    let mut width = 0usize;
    for (i, c) in line.char_indices() {
        match c {
            ' ' => width += 1,
            '\t' => width += 4,
            _ => return (width, &line[i..]),
        }
    }
    (width, "")
}

/// `1..N`, maybe with `# reason`.
fn is_plan(s: &str) -> bool {
    s.strip_prefix("1..")
        .and_then(number)
        .is_some_and(|(_, rest)| rest.is_empty() || rest.trim_start().starts_with('#'))
}

/// prove's `t/basic.t .. ` → `t/basic.t`.
fn prove_header(s: &str) -> Option<&str> {
    let (file, dots) = s.rsplit_once(' ')?;
    (dots.len() >= 2 && dots.bytes().all(|b| b == b'.') && !file.is_empty() && !file.contains(' '))
        .then_some(file)
}

/// `ok 3 - name # SKIP why`, `not ok 2 name`, `ok 4 - name # TODO` → the
/// name (`\#` unescaped; `test N` when there is none) and its status. The
/// number is required: prove prints a bare `ok` per file.
fn tap_result(s: &str) -> Option<(String, Status)> {
    let (ok, rest) = match s.strip_prefix("not ok") {
        Some(r) => (false, r),
        None => (true, s.strip_prefix("ok")?),
    };
    let rest = rest.strip_prefix([' ', '\t'])?.trim_start();
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    if end == 0 {
        return None;
    }
    let (num, rest) = rest.split_at(end);
    if !(rest.is_empty() || rest.starts_with([' ', '\t', '#'])) {
        return None;
    }
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    let mut name = String::new();
    let mut directive = "";
    let mut chars = rest.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, e @ ('#' | '\\'))) => name.push(e),
                Some((_, e)) => {
                    name.push('\\');
                    name.push(e);
                }
                None => name.push('\\'),
            },
            '#' => {
                directive = &rest[i + 1..];
                break;
            }
            _ => name.push(c),
        }
    }
    let directive = directive.trim_start().to_ascii_lowercase();
    let status = if directive.starts_with("skip") {
        Status::Skipped
    } else if directive.starts_with("todo") {
        // A failing TODO is expected; a passing one passed.
        if ok { Status::Passed } else { Status::Skipped }
    } else if ok {
        Status::Passed
    } else {
        Status::Failed
    };
    let name = name.trim();
    let name = if name.is_empty() {
        format!("test {num}")
    } else {
        name.to_string()
    };
    Some((cap(name), status))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::*;

    /// A recorded output (see tests/fixtures/testruns/README.md).
    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/tests/fixtures/testruns/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn run(name: &str) -> TestRun {
        parse(&fixture(name)).unwrap_or_else(|| panic!("{name}: no tests found"))
    }

    fn verdict(before: &str, after: &str) -> Verdict {
        compare(&run(before), &run(after))
    }

    fn map(pairs: &[(&str, Status)]) -> BTreeMap<String, Status> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn cargo_names_every_binary_and_doc_test() {
        let before = run("cargo-before.txt");
        assert_eq!(before.format, "libtest");
        assert_eq!(
            before.tests,
            map(&[
                ("doc-tests calc: src/lib.rs - add", Failed),
                ("doc-tests calc: src/lib.rs - double", Passed),
                ("doc-tests calc: src/lib.rs - double #2", Passed),
                ("src/lib.rs (calc): tests::adds", Failed),
                ("src/lib.rs (calc): tests::doubles", Passed),
                ("src/lib.rs (calc): tests::on_pi", Skipped),
                ("src/lib.rs (calc): tests::panics", Passed),
                ("src/lib.rs (calc): tests::slow", Skipped),
                ("tests/a.rs (a): smoke", Passed),
                ("tests/a.rs (a): sums", Failed),
                ("tests/b.rs (b): smoke", Passed),
            ])
        );
    }

    #[test]
    fn cargo_fix_keeps_doc_test_names_when_lines_move() {
        // The fix adds doc lines above the examples: their line numbers move.
        assert!(fixture("cargo-before.txt").contains("src/lib.rs - double (line 12)"));
        assert!(fixture("cargo-after.txt").contains("src/lib.rs - double (line 14)"));
        let v = verdict("cargo-before.txt", "cargo-after.txt");
        assert_eq!(
            v.fixed,
            ids(&[
                "doc-tests calc: src/lib.rs - add",
                "src/lib.rs (calc): tests::adds",
                "tests/a.rs (a): sums",
            ])
        );
        assert!(v.missing.is_empty() && v.newly_skipped.is_empty(), "{v:?}");
        assert_eq!((v.ran_before, v.ran_after, v.still_passing), (9, 9, 6));
        assert!(v.is_fix());
        assert_eq!(
            v.summary(),
            "3 tests fixed (doc-tests calc: src/lib.rs - add, src/lib.rs (calc): tests::adds, \
             tests/a.rs (a): sums); 6 still pass"
        );
    }

    #[test]
    fn cargo_ignored_and_deleted_tests_are_not_a_fix() {
        let v = verdict("cargo-before.txt", "cargo-after-hiding.txt");
        assert_eq!(v.fixed.len(), 3);
        assert_eq!(v.newly_skipped, ids(&["src/lib.rs (calc): tests::doubles"]));
        assert_eq!(v.missing, ids(&["tests/b.rs (b): smoke"]));
        assert_eq!((v.ran_before, v.ran_after), (9, 7));
        assert!(!v.is_fix());
        assert_eq!(
            v.summary(),
            "not a fix: 1 test newly skipped (src/lib.rs (calc): tests::doubles); \
             1 test missing (tests/b.rs (b): smoke); fewer tests ran (9 before, 7 after); \
             3 tests fixed"
        );
    }

    #[test]
    fn cargo_fail_fast_names_fewer_tests_before() {
        // `cargo test` stops after the first failing binary.
        let v = verdict("cargo-failfast-before.txt", "cargo-after.txt");
        assert_eq!(v.fixed, ids(&["src/lib.rs (calc): tests::adds"]));
        assert_eq!((v.ran_before, v.ran_after), (3, 9));
        assert!(v.is_fix(), "{v:?}");
    }

    #[test]
    fn cargo_quiet_names_no_passing_test() {
        assert_eq!(parse(&fixture("cargo-quiet-before.txt")), None);
        assert_eq!(parse(&fixture("cargo-quiet-after.txt")), None);
    }

    #[test]
    fn cargo_workspace_members_do_not_collide() {
        let r = run("cargo-workspace.txt");
        assert_eq!(
            r.tests.keys().collect::<Vec<_>>(),
            [
                "src/lib.rs (a): t",
                "src/lib.rs (b): t",
                "tests/smoke.rs (smoke) #2: t",
                "tests/smoke.rs (smoke): t",
            ]
        );
    }

    #[test]
    fn libtest_report_and_repeated_lines_cannot_hide_a_failure() {
        let out = "\
running 2 tests
test a ... FAILED
test a ... ok
test b ... ignored, wait ... later

failures:

---- a stdout ----
test c ... ok
test result: FAILED. 0 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out
test d ... ok
";
        assert_eq!(
            parse(out).unwrap().tests,
            map(&[("a", Failed), ("b", Skipped)])
        );
    }

    fn pytest_before() -> BTreeMap<String, Status> {
        map(&[
            ("test_calc.py::TestGroup::test_in_class", Passed),
            ("test_calc.py::TestGroup::test_skip_inside", Skipped),
            ("test_calc.py::test_add", Failed),
            ("test_calc.py::test_error", Failed),
            ("test_calc.py::test_ok", Passed),
            ("test_calc.py::test_param[1]", Passed),
            ("test_calc.py::test_param[2]", Failed),
            ("test_calc.py::test_param[3]", Passed),
            ("test_calc.py::test_skipped", Skipped),
            ("test_calc.py::test_xfail", Skipped),
            ("test_calc.py::test_xpass", Passed),
        ])
    }

    #[test]
    fn pytest_versions_and_xdist_name_the_same_tests() {
        for name in [
            "pytest72-before.txt",
            "pytest8-before.txt",
            "pytest9-before.txt",
            "pytest9-xdist-before.txt",
        ] {
            let r = run(name);
            assert_eq!(r.format, "pytest", "{name}");
            assert_eq!(r.tests, pytest_before(), "{name}");
        }
    }

    #[test]
    fn pytest_partial_fix() {
        let v = verdict("pytest72-before.txt", "pytest72-after.txt");
        assert_eq!(
            v.fixed,
            ids(&["test_calc.py::test_add", "test_calc.py::test_param[2]"])
        );
        assert_eq!(v.still_failing, ids(&["test_calc.py::test_error"]));
        assert!(!v.is_fix());
        assert_eq!(
            v.summary(),
            "not a fix: 1 test still failing (test_calc.py::test_error); 2 tests fixed"
        );
    }

    #[test]
    fn pytest_full_fix() {
        let v = verdict("pytest9-before.txt", "pytest9-after.txt");
        assert_eq!(v.fixed.len(), 3);
        assert!(v.is_fix(), "{v:?}");
        assert_eq!((v.ran_before, v.ran_after), (8, 8));
    }

    #[test]
    fn pytest_skip_and_deletion_are_seen() {
        let v = verdict("pytest9-before.txt", "pytest9-after-hiding.txt");
        assert_eq!(v.fixed, ids(&["test_calc.py::test_add"]));
        assert_eq!(v.still_failing, ids(&["test_calc.py::test_error"]));
        assert_eq!(v.newly_skipped, ids(&["test_calc.py::test_param[2]"]));
        assert_eq!(v.missing, ids(&["test_calc.py::TestGroup::test_in_class"]));
        assert!(!v.is_fix());
    }

    #[test]
    fn pytest_without_verbose_lines_names_all_but_skips() {
        // `-q` on the command line cancels the `-v` of PYTEST_ADDOPTS.
        let r = run("pytest72-quiet-before.txt");
        let mut expected = pytest_before();
        expected.remove("test_calc.py::test_skipped");
        expected.remove("test_calc.py::TestGroup::test_skip_inside");
        assert_eq!(r.tests, expected);
        let v = verdict("pytest72-quiet-before.txt", "pytest72-quiet-after.txt");
        assert_eq!(v.fixed.len(), 2);
        assert_eq!(v.still_failing, ids(&["test_calc.py::test_error"]));
        assert!(v.missing.is_empty());
    }

    #[test]
    fn pytest_default_summary_names_only_failures() {
        assert_eq!(parse(&fixture("pytest72-plain-before.txt")), None);
    }

    #[test]
    fn pytest_colour_is_ignored() {
        let out = "\x1b[1m===== test session starts =====\x1b[0m\n\
                   t.py::test_a \x1b[32mPASSED\x1b[0m\x1b[32m  [100%]\x1b[0m\n\
                   \x1b[32m===== \x1b[32m\x1b[1m1 passed\x1b[0m\x1b[32m in 0.01s =====\x1b[0m\n";
        assert_eq!(parse(out).unwrap().tests, map(&[("t.py::test_a", Passed)]));
    }

    #[test]
    fn go_qualifies_by_package() {
        let r = run("go-before.txt");
        assert_eq!(r.format, "go");
        assert_eq!(r.tests["example.com/gop/calc: TestAdd"], Failed);
        assert_eq!(r.tests["example.com/gop/util: TestAdd"], Passed);
        assert_eq!(r.tests["example.com/gop/calc: TestDouble/one_two"], Passed);
        assert_eq!(
            r.tests["example.com/gop/calc: TestNested/a/skipme"],
            Skipped
        );
        assert_eq!(r.tests["example.com/gop/calc: TestSkipped"], Skipped);
        assert_eq!(r.tests.len(), 11);
        let v = verdict("go-before.txt", "go-after.txt");
        assert_eq!(v.fixed, ids(&["example.com/gop/calc: TestAdd"]));
        assert!(v.is_fix(), "{v:?}");
    }

    #[test]
    fn go_skip_and_deleted_subtest_are_seen() {
        let v = verdict("go-before.txt", "go-after-hiding.txt");
        assert_eq!(v.newly_skipped, ids(&["example.com/gop/calc: TestAdd"]));
        assert_eq!(v.missing, ids(&["example.com/gop/calc: TestNested/a/deep"]));
        assert!(v.fixed.is_empty() && !v.is_fix());
    }

    #[test]
    fn go_panic_loses_the_tests_after_it() {
        let v = verdict("go-before.txt", "go-panic.txt");
        assert_eq!(v.new_failing, ids(&["example.com/gop/util: TestPanics"]));
        assert!(
            v.missing
                .contains(&"example.com/gop/util: TestAdd".to_string())
        );
        assert!(!v.is_fix());
    }

    #[test]
    fn go_without_verbose_is_not_enough() {
        assert_eq!(parse(&fixture("go-plain-before.txt")), None);
    }

    #[test]
    fn go_started_tests_of_a_failed_package_failed() {
        let out = "=== RUN   TestA\n--- PASS: TestA (0.00s)\n=== RUN   TestB\n\
                   panic: test timed out after 1s\nFAIL\texample.com/m\t1.01s\n";
        assert_eq!(
            parse(out).unwrap().tests,
            map(&[
                ("example.com/m: TestA", Passed),
                ("example.com/m: TestB", Failed)
            ])
        );
        // A test binary run by hand prints no package line.
        let out = "=== RUN   TestA\n--- FAIL: TestA (0.00s)\nFAIL\n";
        assert_eq!(parse(out).unwrap().tests, map(&[("TestA", Failed)]));
    }

    #[test]
    fn node_tap_nests_and_numbers_equal_names() {
        let r = run("node20-before.txt");
        assert_eq!(r.format, "tap");
        assert_eq!(
            r.tests,
            map(&[
                ("adds", Failed),
                ("doubles", Passed),
                ("doubles #2", Passed),
                ("group", Passed),
                ("group > deeper", Passed),
                ("group > deeper > deep ok", Passed),
                ("group > inner # with hash", Passed),
                ("group > inner ok", Passed),
                ("parent", Passed),
                ("parent > child ok", Passed),
                ("parent > child skip", Skipped),
                ("skipped on purpose", Skipped),
                ("todo later", Skipped),
            ])
        );
        // Debian 12's node 18 prints the same names.
        assert_eq!(run("node18-before.txt").tests, r.tests);
    }

    #[test]
    fn node_fix_and_hiding() {
        let v = verdict("node20-before.txt", "node20-after.txt");
        assert_eq!(v.fixed, ids(&["adds"]));
        assert!(v.is_fix(), "{v:?}");
        let v = verdict("node20-before.txt", "node20-after-hiding.txt");
        assert_eq!(v.missing, ids(&["doubles #2"]));
        assert_eq!(v.newly_skipped, ids(&["parent > child ok"]));
        assert!(!v.is_fix());
    }

    #[test]
    fn prove_verbose_is_qualified_by_file() {
        let v = verdict("prove-before.txt", "prove-after.txt");
        assert_eq!(v.fixed, ids(&["t/basic.t: doubles"]));
        assert!(v.is_fix(), "{v:?}");
        assert_eq!(
            run("prove-after.txt").tests,
            map(&[
                ("t/basic.t: adds", Passed),
                ("t/basic.t: doubles", Passed),
                ("t/basic.t: later", Skipped),
                ("t/basic.t: on a pi", Skipped),
                ("t/more.t: adds", Passed),
                ("t/more.t: test 2", Passed),
            ])
        );
        assert_eq!(parse(&fixture("prove-plain-before.txt")), None);
    }

    #[test]
    fn bats_tap() {
        assert_eq!(
            run("bats-before.txt").tests,
            map(&[("adds", Passed), ("doubles", Failed), ("on a pi", Skipped)])
        );
    }

    #[test]
    fn tap_yaml_blocks_are_not_results() {
        let out = "TAP version 13\nnot ok 1 - a\n  ---\n  error: |-\n    ok 2 - fake\n\
                   \x20   1..1\n  ...\nok 2 - b\n  ---\n  duration_ms: 1\n  ...\n1..2\n";
        assert_eq!(
            parse(out).unwrap().tests,
            map(&[("a", Failed), ("b", Passed)])
        );
    }

    #[test]
    fn tap_needs_a_plan_or_version() {
        assert_eq!(parse("ok 1 - looks like TAP\n"), None);
        assert_eq!(
            parse("1..2\nok 1 - a # TODO later\nnot ok 2 b\\\\ # skip\n")
                .unwrap()
                .tests,
            map(&[("a", Passed), ("b\\", Skipped)])
        );
    }

    #[test]
    fn several_runners_in_one_output() {
        let out = fixture("cargo-before.txt")
            + &fixture("pytest9-before.txt")
            + &fixture("go-before.txt");
        let r = parse(&out).unwrap();
        assert_eq!(r.format, "libtest+pytest+go");
        assert_eq!(r.tests.len(), 11 + 11 + 11);
        // One runner without names makes the whole output unusable.
        let out = fixture("cargo-quiet-before.txt") + &fixture("pytest9-before.txt");
        assert_eq!(parse(&out), None);
    }

    #[test]
    fn nothing_known() {
        for out in [
            "",
            "make: Nothing to be done for 'check'.\n",
            "All good\n0 errors\n",
        ] {
            assert_eq!(parse(out), None, "{out:?}");
        }
    }

    #[test]
    fn compare_new_failures_and_summaries() {
        let before = TestRun {
            format: "tap".into(),
            tests: map(&[("a", Passed), ("b", Passed), ("s", Skipped)]),
        };
        let after = TestRun {
            format: "tap".into(),
            tests: map(&[("a", Passed), ("b", Passed), ("s", Failed), ("n", Failed)]),
        };
        let v = compare(&before, &before);
        assert!(v.is_fix());
        assert_eq!(v.summary(), "no test was failing; 2 still pass");
        let v = compare(&before, &after);
        assert_eq!(v.new_failing, ids(&["n", "s"]));
        assert!(!v.is_fix());
        let many: Vec<_> = (0..5).map(|i| (format!("t{i}"), Failed)).collect();
        let before = TestRun {
            format: "go".into(),
            tests: many.into_iter().collect(),
        };
        let v = compare(&before, &TestRun::default());
        assert_eq!(
            v.summary(),
            "not a fix: 5 tests missing (t0, t1, t2 and 2 more); fewer tests ran (5 before, 0 after)"
        );
    }

    #[test]
    fn env_asks_for_names_and_keeps_the_user_s() {
        let none = |_: &str| None;
        let env = env_for_names(none);
        assert_eq!(
            env,
            [
                ("PYTEST_ADDOPTS".to_string(), "-rfEsxXp -v".to_string()),
                ("GOFLAGS".to_string(), "-v".to_string()),
                ("HARNESS_VERBOSE".to_string(), "1".to_string()),
            ]
        );
        let user = |name: &str| match name {
            "PYTEST_ADDOPTS" => Some("-x -v".to_string()),
            "GOFLAGS" => Some("-mod=vendor".to_string()),
            "HARNESS_VERBOSE" => Some("0".to_string()),
            _ => None,
        };
        assert_eq!(
            env_for_names(user),
            [
                ("PYTEST_ADDOPTS".to_string(), "-x -v -rfEsxXp".to_string()),
                ("GOFLAGS".to_string(), "-mod=vendor -v".to_string()),
            ]
        );
        // Applying the result again changes nothing; `-v=false` is left alone.
        let applied = |name: &str| {
            env.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.replace("GOFLAGS", ""))
                .or_else(|| (name == "GOFLAGS").then(|| "-v=false".to_string()))
        };
        assert_eq!(env_for_names(applied), []);
    }

    #[test]
    fn serialises_statuses_in_lowercase() {
        let r = TestRun {
            format: "go".into(),
            tests: map(&[("m: TestA", Skipped)]),
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#"{"format":"go","tests":{"m: TestA":"skipped"}}"#);
        assert_eq!(serde_json::from_str::<TestRun>(&json).unwrap(), r);
    }

    /// Every id is at most MAX_ID bytes, plus a ` #n` suffix.
    fn assert_bounded(r: &Option<TestRun>) {
        for id in r.iter().flat_map(|r| r.tests.keys()) {
            assert!(id.len() <= MAX_ID + 22, "{} bytes", id.len());
        }
    }

    #[test]
    fn hostile_output_does_not_panic() {
        let long = "é".repeat(200_000);
        let deep = " ".repeat(100_000);
        let cases = [
            "running 99999999999999999999999999 tests\ntest a ... ok\n\
             test result: ok. 99999999999999999999999 passed; 0 failed\n"
                .to_string(),
            format!("running 1 test\ntest {long} ... ok\ntest result: ok. 1 passed;\n"),
            format!("TAP version 13\n{deep}ok 1 - {long}\n{deep}\tnot ok 2\nok 3 - p\n"),
            format!("1..1\nok 184467440737095516160000 - {long}\\"),
            "\x1b\x1b[\x1b[31\n== ==\n====\n[gw0] \n[gw0] [ 1%] PASSED\nPASSED \nok  \t\nFAIL\t\n\
             === RUN\n--- PASS:\n--- FAIL: \n1..\nnot ok\nok \n# Subtest:\n   Running \n   Doc-tests\n\
             test  ... ok\ntest result: \n===== test session starts =====\nx PASSED\n\
             in in in\n= 1 passed in =\n"
                .to_string(),
            String::from_utf8_lossy(&[0xff, b'o', b'k', b' ', b'1', 0xc3, b'\n', 0xe2, 0x82]).into_owned(),
        ];
        for out in &cases {
            assert_bounded(&parse(out));
        }
        // Splices of real outputs and garbage, from a fixed pseudo-random walk.
        let corpus: String = [
            "cargo-before.txt",
            "pytest9-xdist-before.txt",
            "go-before.txt",
            "node20-before.txt",
            "prove-before.txt",
        ]
        .iter()
        .map(|f| fixture(f))
        .collect();
        let bytes = corpus.as_bytes();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: usize| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize % n.max(1)
        };
        for _ in 0..300 {
            let mut out = Vec::new();
            for _ in 0..8 {
                let start = next(bytes.len());
                let len = next(400);
                out.extend_from_slice(&bytes[start..(start + len).min(bytes.len())]);
                let noise = b"\n \t#[]=-.:\x1b\xffok 1";
                for _ in 0..next(4) {
                    out.push(noise[next(noise.len())]);
                }
            }
            assert_bounded(&parse(&String::from_utf8_lossy(&out)));
        }
    }

    #[test]
    fn many_equal_names_and_deep_nesting() {
        let mut out = String::from("TAP version 13\n");
        for _ in 0..20_000 {
            out.push_str("ok 1 - same\n");
        }
        let r = parse(&out).unwrap();
        assert_eq!(r.tests.len(), 20_000);
        assert!(r.tests.contains_key("same #20000"));
        let mut out = String::from("TAP version 13\n");
        for d in (0..200).rev() {
            out.push_str(&format!("{}ok 1 - level{d}\n", "    ".repeat(d)));
        }
        let r = parse(&out).unwrap();
        assert_eq!(r.tests.len(), 200);
        assert_bounded(&Some(r));
    }
}
