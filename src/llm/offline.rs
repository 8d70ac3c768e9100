//! The `none` provider: no LLM at all. The "summary" is a digest of the
//! repository built from git2 and the work tree: branch and HEAD, recent
//! commits, files and lines by language, recently changed files,
//! uncommitted changes, TODO/FIXME counts and the project's check.
//!
//! The same digest (without the check) is the repository context sent to
//! providers that cannot read files themselves ([`context`], openai).
//!
//! Architecture invariants:
//! - Deterministic: the same repository state gives byte-identical text
//!   (no clock, stable sort orders). The only exception is the duration in
//!   the check's verdict, which only appears when a check is configured.
//! - Nothing here writes to the repository; repository facts come from
//!   git2, never the `git` CLI.
//! - Bounded memory on a small Pi: files are read one at a time, at most
//!   [`READ_LIMIT`] bytes each, into one reused buffer.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::Context;
use git2::{DiffOptions, ErrorCode, Repository, Sort, Status};

use super::{Answer, LlmError, Provider, Purpose, Request, Usage};
use crate::config::CheckSettings;
use crate::git::{self, is_excluded};

/// Commits counted before the overview says "1000+".
const COMMIT_COUNT_LIMIT: usize = 1000;
/// Commits listed under "Recent commits".
const RECENT_COMMITS: usize = 10;
/// Commits whose changed files are tallied.
const CHANGED_COMMITS: usize = 20;
/// Files listed under "Recently changed files".
const CHANGED_FILES_SHOWN: usize = 15;
/// Entries listed under "Uncommitted changes".
const UNCOMMITTED_SHOWN: usize = 30;
/// Files listed under "TODO/FIXME".
const MARKER_FILES_SHOWN: usize = 10;
/// A NUL byte in this many first bytes makes a file binary (git's rule).
const BINARY_SNIFF: usize = 8 * 1024;
/// Bytes of one file read for lines and markers: a huge data file or
/// minified bundle must not cost a Pi its memory or the run its time.
const READ_LIMIT: u64 = 4 << 20;
/// The markers counted, in report order.
const MARKERS: [&str; 2] = ["TODO", "FIXME"];

/// Context for providers that cannot read the repository: the README's
/// first bytes, each manifest's first bytes, and at most this many paths.
const README_BYTES: usize = 4 * 1024;
const MANIFEST_BYTES: usize = 2 * 1024;
const LISTED_PATHS: usize = 500;
/// Build and dependency files worth showing a model, in this order.
const MANIFESTS: [&str; 16] = [
    "Cargo.toml",
    "package.json",
    "pyproject.toml",
    "setup.py",
    "setup.cfg",
    "requirements.txt",
    "go.mod",
    "Makefile",
    "CMakeLists.txt",
    "meson.build",
    "Gemfile",
    "pom.xml",
    "build.gradle",
    "composer.json",
    "Dockerfile",
    "docker-compose.yml",
];

#[derive(Default)]
pub struct Offline;

impl Offline {
    pub fn new() -> Self {
        Offline
    }
}

impl Provider for Offline {
    fn name(&self) -> &'static str {
        "none"
    }
    fn model(&self) -> &str {
        ""
    }

    fn spends_tokens(&self) -> bool {
        false
    }
    /// The digest is made here and goes nowhere: nothing to redact.
    fn sends_prompt(&self) -> bool {
        false
    }
    fn complete(&self, req: &Request<'_>) -> Result<Answer, LlmError> {
        match req.purpose {
            Purpose::Summary => match digest(req.workdir, req.check, req.exclude) {
                Ok(text) => Ok(Answer {
                    text,
                    usage: Usage::default(),
                    sandbox_error: None,
                }),
                Err(e) => Err(LlmError::Failed {
                    provider: "none",
                    detail: format!("cannot digest {}: {e:#}", req.workdir.display()),
                }),
            },
            other => Err(LlmError::Failed {
                provider: "none",
                detail: format!(
                    "the offline provider cannot write patches or diagnoses (asked for a {}); \
                     set [llm] provider = \"codex\" or \"openai\" in the configuration",
                    other.as_str()
                ),
            }),
        }
    }
}

/// A Markdown digest of the work tree at `workdir`, starting with
/// `## <directory name>`. `exclude` (relative to `workdir`, e.g. the
/// summary file) is left out of every count and list. When `check` is set
/// it is run in `workdir` and its verdict and output tail reported.
pub fn digest(
    workdir: &Path,
    check: Option<&CheckSettings>,
    exclude: &[&Path],
) -> anyhow::Result<String> {
    let repo = crate::git::open(workdir)?;
    let facts = Facts::gather(&repo, workdir, exclude)?;
    drop(repo);
    let mut out = facts.render();
    if let Some(check) = check {
        render_check(&mut out, workdir, check);
    }
    Ok(out)
}

/// Repository context for providers that cannot read files themselves
/// (openai): the digest (without running the check), the README, key
/// manifests and the tracked paths, at most `max_bytes` in all.
pub fn context(workdir: &Path, exclude: &[&Path], max_bytes: usize) -> anyhow::Result<String> {
    let repo = crate::git::open(workdir)?;
    let facts = Facts::gather(&repo, workdir, exclude)?;
    let mut out = Bounded::new(max_bytes);
    out.push(&facts.render());

    if let Some(name) = readme_name(workdir, exclude) {
        out.push(&file_excerpt(workdir, &name, README_BYTES));
    }
    for name in MANIFESTS {
        if !out.is_full() && !is_excluded(name, exclude) && is_regular(&workdir.join(name)) {
            out.push(&file_excerpt(workdir, name, MANIFEST_BYTES));
        }
    }
    if !out.is_full() {
        out.push(&tracked_listing(&repo, exclude, out.room_for_next())?);
    }
    Ok(out.finish())
}

// ---------------------------------------------------------------------------
// Gathering

/// What HEAD points at.
enum Head {
    /// No commit yet; the branch the first commit will create.
    Unborn(Option<String>),
    Branch(String, CommitLine),
    Detached(CommitLine),
}

struct CommitLine {
    short: String,
    date: String,
    subject: String,
}

#[derive(Default, Clone, Copy)]
struct LangStats {
    files: usize,
    lines: u64,
}

/// Everything the digest reports, gathered once.
struct Facts {
    name: String,
    head: Head,
    /// Commits reachable from HEAD, up to [`COMMIT_COUNT_LIMIT`].
    commits: usize,
    commits_capped: bool,
    recent: Vec<CommitLine>,
    /// Commits whose changed files were tallied (≤ [`CHANGED_COMMITS`]).
    changed_commits: usize,
    /// Path and number of those commits touching it, most touched first.
    changed: Vec<(String, usize)>,
    tracked: usize,
    languages: BTreeMap<&'static str, LangStats>,
    binary_files: usize,
    /// Text files longer than [`READ_LIMIT`], counted in their first part.
    capped_files: usize,
    markers: [usize; MARKERS.len()],
    /// Files with markers, most markers first.
    marker_files: Vec<(String, [usize; MARKERS.len()])>,
    /// Uncommitted changes: path and label, sorted by path.
    uncommitted: Vec<(String, &'static str)>,
}

impl Facts {
    fn gather(repo: &Repository, workdir: &Path, exclude: &[&Path]) -> anyhow::Result<Facts> {
        let name = project_name(workdir);
        let head = read_head(repo)?;
        let mut facts = Facts {
            name,
            head,
            commits: 0,
            commits_capped: false,
            recent: Vec::new(),
            changed_commits: 0,
            changed: Vec::new(),
            tracked: 0,
            languages: BTreeMap::new(),
            binary_files: 0,
            capped_files: 0,
            markers: [0; MARKERS.len()],
            marker_files: Vec::new(),
            uncommitted: Vec::new(),
        };
        if !matches!(facts.head, Head::Unborn(_)) {
            facts.walk_history(repo, exclude)?;
        }
        facts.scan_files(repo, workdir, exclude)?;
        facts.uncommitted = uncommitted(repo, exclude)?;
        Ok(facts)
    }

    /// Count commits, keep the latest ones and tally the files they touched.
    fn walk_history(&mut self, repo: &Repository, exclude: &[&Path]) -> anyhow::Result<()> {
        let mut walk = repo.revwalk().context("cannot walk the history")?;
        // Children before parents, then newest first: `git log`'s order,
        // and stable for a given repository.
        walk.set_sorting(Sort::TOPOLOGICAL | Sort::TIME)?;
        walk.push_head()
            .context("cannot walk the history from HEAD")?;
        let mut touched: HashMap<String, usize> = HashMap::new();
        let mut diff_opts = DiffOptions::new();
        diff_opts.skip_binary_check(true).ignore_submodules(true);
        for oid in walk {
            let oid = oid.context("cannot walk the history")?;
            if self.commits == COMMIT_COUNT_LIMIT {
                self.commits_capped = true;
                break;
            }
            self.commits += 1;
            if self.commits > RECENT_COMMITS.max(CHANGED_COMMITS) {
                continue;
            }
            let commit = repo
                .find_commit(oid)
                .with_context(|| format!("cannot read commit {oid}"))?;
            if self.recent.len() < RECENT_COMMITS {
                self.recent.push(commit_line(&commit));
            }
            if self.changed_commits < CHANGED_COMMITS {
                self.changed_commits += 1;
                let tree = commit.tree()?;
                // First parent: a merge counts what it brought in.
                let parent = match commit.parent(0) {
                    Ok(p) => Some(p.tree()?),
                    Err(_) => None,
                };
                let diff = repo
                    .diff_tree_to_tree(parent.as_ref(), Some(&tree), Some(&mut diff_opts))
                    .with_context(|| format!("cannot diff commit {oid}"))?;
                let mut paths: Vec<String> = diff
                    .deltas()
                    .filter_map(|d| d.new_file().path().or(d.old_file().path()).map(lossy))
                    .filter(|p| !is_excluded(p, exclude))
                    .collect();
                paths.sort();
                paths.dedup();
                for p in paths {
                    *touched.entry(p).or_default() += 1;
                }
            }
        }
        let mut changed: Vec<(String, usize)> = touched.into_iter().collect();
        changed.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        self.changed = changed;
        Ok(())
    }

    /// Lines by language and markers in the tracked files, as they are in
    /// the work tree (uncommitted edits included).
    fn scan_files(
        &mut self,
        repo: &Repository,
        workdir: &Path,
        exclude: &[&Path],
    ) -> anyhow::Result<()> {
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut marker_files = Vec::new();
        for (path, mode) in git::tracked(repo, exclude)? {
            self.tracked += 1;
            // Regular files only: not symlinks (0o120000), not submodules
            // (0o160000).
            if mode & 0o170000 != 0o100000 {
                continue;
            }
            let Some(scan) = read_text(&workdir.join(&path), &mut buf) else {
                continue;
            };
            match scan {
                Scan::Binary => self.binary_files += 1,
                Scan::Text { capped } => {
                    if capped {
                        self.capped_files += 1;
                    }
                    let lang = language(&path, &buf);
                    let stats = self.languages.entry(lang).or_default();
                    stats.files += 1;
                    stats.lines += count_lines(&buf);
                    let counts = count_markers(&buf);
                    if counts.iter().any(|&c| c > 0) {
                        for (total, c) in self.markers.iter_mut().zip(counts) {
                            *total += c;
                        }
                        marker_files.push((path, counts));
                    }
                }
            }
        }
        let total = |c: &[usize; MARKERS.len()]| c.iter().sum::<usize>();
        marker_files.sort_by(|a, b| total(&b.1).cmp(&total(&a.1)).then_with(|| a.0.cmp(&b.0)));
        self.marker_files = marker_files;
        Ok(())
    }

    fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(out, "## {}\n", self.name);
        self.render_overview(&mut out);
        self.render_languages(&mut out);
        self.render_history(&mut out);
        self.render_uncommitted(&mut out);
        self.render_markers(&mut out);
        out
    }

    fn render_overview(&self, out: &mut String) {
        out.push_str("### Overview\n\n");
        match &self.head {
            Head::Unborn(branch) => {
                match branch {
                    Some(b) => {
                        let _ = writeln!(out, "- Branch: {} (no commits yet)", code(b));
                    }
                    None => out.push_str("- Branch: none (no commits yet)\n"),
                }
                out.push_str("- HEAD: none\n");
            }
            Head::Branch(b, c) => {
                let _ = writeln!(out, "- Branch: {}", code(b));
                let _ = writeln!(out, "- HEAD: `{}` {} ({})", c.short, c.subject, c.date);
            }
            Head::Detached(c) => {
                let _ = writeln!(out, "- Branch: none (detached HEAD)");
                let _ = writeln!(out, "- HEAD: `{}` {} ({})", c.short, c.subject, c.date);
            }
        }
        let _ = writeln!(
            out,
            "- Commits: {}{}",
            self.commits,
            if self.commits_capped { "+" } else { "" }
        );
        let _ = writeln!(out, "- Tracked files: {}", self.tracked);
        let _ = writeln!(
            out,
            "- Uncommitted changes: {}\n",
            self.uncommitted_summary()
        );
    }

    /// `1 added, 2 modified, 1 untracked`, or `none`.
    fn uncommitted_summary(&self) -> String {
        let parts: Vec<String> = STATUS_LABELS
            .iter()
            .filter_map(|label| {
                let n = self.uncommitted.iter().filter(|(_, l)| l == label).count();
                (n > 0).then(|| format!("{n} {label}"))
            })
            .collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }

    fn render_languages(&self, out: &mut String) {
        out.push_str("### Languages\n\n");
        if self.languages.is_empty() {
            out.push_str("No tracked text files.\n");
        } else {
            let mut rows: Vec<(&str, LangStats)> =
                self.languages.iter().map(|(l, s)| (*l, *s)).collect();
            rows.sort_by(|a, b| b.1.lines.cmp(&a.1.lines).then_with(|| a.0.cmp(b.0)));
            out.push_str("| Language | Files | Lines |\n| --- | ---: | ---: |\n");
            for (lang, s) in rows {
                let _ = writeln!(out, "| {lang} | {} | {} |", s.files, s.lines);
            }
        }
        if self.binary_files > 0 {
            let _ = writeln!(out, "\nBinary files (not counted): {}.", self.binary_files);
        }
        if self.capped_files > 0 {
            let _ = writeln!(
                out,
                "\nFiles over {} MiB, counted in their first {} MiB only: {}.",
                READ_LIMIT >> 20,
                READ_LIMIT >> 20,
                self.capped_files
            );
        }
        out.push('\n');
    }

    fn render_history(&self, out: &mut String) {
        out.push_str("### Recent commits\n\n");
        if self.recent.is_empty() {
            out.push_str("No commits yet.\n\n");
        } else {
            for c in &self.recent {
                let _ = writeln!(out, "- `{}` {} {}", c.short, c.date, c.subject);
            }
            out.push('\n');
        }

        out.push_str("### Recently changed files\n\n");
        if self.changed_commits == 0 {
            out.push_str("No commits yet.\n\n");
            return;
        }
        if self.changed.is_empty() {
            let _ = writeln!(
                out,
                "The last {} touched no file counted here.\n",
                plural(self.changed_commits, "commit")
            );
            return;
        }
        let _ = writeln!(
            out,
            "Files touched by the last {}:\n",
            plural(self.changed_commits, "commit")
        );
        for (path, n) in self.changed.iter().take(CHANGED_FILES_SHOWN) {
            let _ = writeln!(out, "- {}: {}", code(path), plural(*n, "commit"));
        }
        more(out, self.changed.len(), CHANGED_FILES_SHOWN, "file");
        out.push('\n');
    }

    fn render_uncommitted(&self, out: &mut String) {
        out.push_str("### Uncommitted changes\n\n");
        if self.uncommitted.is_empty() {
            out.push_str("None: the work tree matches HEAD.\n\n");
            return;
        }
        for (path, label) in self.uncommitted.iter().take(UNCOMMITTED_SHOWN) {
            let _ = writeln!(out, "- {}: {label}", code(path));
        }
        more(out, self.uncommitted.len(), UNCOMMITTED_SHOWN, "file");
        out.push('\n');
    }

    fn render_markers(&self, out: &mut String) {
        out.push_str("### TODO/FIXME\n\n");
        if self.marker_files.is_empty() {
            out.push_str("No TODO or FIXME markers in tracked files.\n");
            return;
        }
        for (marker, n) in MARKERS.iter().zip(self.markers) {
            let _ = writeln!(out, "- {marker}: {n}");
        }
        out.push_str("\nMost markers:\n\n");
        for (path, counts) in self.marker_files.iter().take(MARKER_FILES_SHOWN) {
            let parts: Vec<String> = MARKERS
                .iter()
                .zip(counts)
                .filter(|(_, n)| **n > 0)
                .map(|(m, n)| format!("{n} {m}"))
                .collect();
            let _ = writeln!(out, "- {}: {}", code(path), parts.join(", "));
        }
        more(out, self.marker_files.len(), MARKER_FILES_SHOWN, "file");
    }
}

/// The work tree's directory name (`root` for `/`).
fn project_name(workdir: &Path) -> String {
    let abs = std::fs::canonicalize(workdir).unwrap_or_else(|_| workdir.to_path_buf());
    abs.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "root".into())
}

fn read_head(repo: &Repository) -> anyhow::Result<Head> {
    match repo.head() {
        Ok(head) => {
            let commit = head
                .peel_to_commit()
                .context("HEAD does not point at a commit")?;
            let line = commit_line(&commit);
            match head.is_branch().then(|| head.shorthand().ok()).flatten() {
                Some(b) => Ok(Head::Branch(b.to_string(), line)),
                None => Ok(Head::Detached(line)),
            }
        }
        Err(e) if matches!(e.code(), ErrorCode::UnbornBranch | ErrorCode::NotFound) => {
            // HEAD names the branch the first commit will create.
            let branch = repo
                .find_reference("HEAD")
                .ok()
                .and_then(|r| r.symbolic_target().ok().flatten().map(str::to_string))
                .map(|t| t.strip_prefix("refs/heads/").unwrap_or(&t).to_string());
            Ok(Head::Unborn(branch))
        }
        Err(e) => Err(e).context("cannot read HEAD"),
    }
}

fn commit_line(commit: &git2::Commit<'_>) -> CommitLine {
    let hex = commit.id().to_string();
    CommitLine {
        short: hex[..7].to_string(),
        // The author date, as `git log` shows it, in UTC.
        date: crate::time::day_of_secs(commit.author().when().seconds()),
        subject: String::from_utf8_lossy(commit.summary_bytes().unwrap_or(b"")).into_owned(),
    }
}

/// Labels of uncommitted changes, in the order the overview lists them.
const STATUS_LABELS: [&str; 7] = [
    "added",
    "modified",
    "deleted",
    "renamed",
    "type changed",
    "conflicted",
    "untracked",
];

fn status_label(s: Status) -> &'static str {
    let index = Status::INDEX_NEW
        | Status::INDEX_MODIFIED
        | Status::INDEX_DELETED
        | Status::INDEX_RENAMED
        | Status::INDEX_TYPECHANGE;
    if s.is_conflicted() {
        "conflicted"
    } else if s.is_wt_new() && !s.intersects(index) {
        "untracked"
    } else if s.intersects(Status::INDEX_DELETED | Status::WT_DELETED) {
        "deleted"
    } else if s.intersects(Status::INDEX_RENAMED | Status::WT_RENAMED) {
        "renamed"
    } else if s.is_index_new() {
        "added"
    } else if s.intersects(Status::INDEX_TYPECHANGE | Status::WT_TYPECHANGE) {
        "type changed"
    } else {
        "modified"
    }
}

/// Changed and untracked files with a word for their state, sorted by path.
fn uncommitted(
    repo: &Repository,
    exclude: &[&Path],
) -> anyhow::Result<Vec<(String, &'static str)>> {
    Ok(git::changes(repo, exclude)?
        .into_iter()
        .map(|(p, s)| (p, status_label(s)))
        .collect())
}

// ---------------------------------------------------------------------------
// Reading files

enum Scan {
    Binary,
    /// The text is in the buffer; `capped` when the file was longer.
    Text {
        capped: bool,
    },
}

/// Read at most [`READ_LIMIT`] bytes of `path` into `buf`. `None` when the
/// file is gone or unreadable (deleted in the work tree: the uncommitted
/// changes say so).
fn read_text(path: &Path, buf: &mut Vec<u8>) -> Option<Scan> {
    buf.clear();
    // Checked before opening: opening a FIFO would block, and a symlink
    // may point anywhere.
    if !is_regular(path) {
        return None;
    }
    let file = File::open(path).ok()?;
    let mut limited = file.take(READ_LIMIT + 1);
    limited.read_to_end(buf).ok()?;
    let capped = buf.len() as u64 > READ_LIMIT;
    buf.truncate(READ_LIMIT as usize);
    if buf[..buf.len().min(BINARY_SNIFF)].contains(&0) {
        return Some(Scan::Binary);
    }
    Some(Scan::Text { capped })
}

/// Lines as `wc -l` counts them, plus a last line without newline.
fn count_lines(text: &[u8]) -> u64 {
    let newlines = text.iter().filter(|&&b| b == b'\n').count() as u64;
    newlines + u64::from(text.last().is_some_and(|&b| b != b'\n'))
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Occurrences of each marker as a whole word (`TODO:` and `(TODO)` count,
/// `TODOS`, `MY_TODO` and lowercase `todo` do not).
fn count_markers(text: &[u8]) -> [usize; MARKERS.len()] {
    let mut counts = [0; MARKERS.len()];
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        // Cheap first-byte filter: every marker starts with T or F.
        if b == b'T' || b == b'F' {
            for (k, m) in MARKERS.iter().enumerate() {
                let m = m.as_bytes();
                if text[i..].starts_with(m)
                    && (i == 0 || !is_word_byte(text[i - 1]))
                    && text.get(i + m.len()).is_none_or(|&n| !is_word_byte(n))
                {
                    counts[k] += 1;
                    i += m.len() - 1;
                    break;
                }
            }
        }
        i += 1;
    }
    counts
}

/// The language of a file, from its name, its extension, or its `#!` line.
fn language(path: &str, text: &[u8]) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path);
    let by_name = match name {
        "Makefile" | "makefile" | "GNUmakefile" => Some("Makefile"),
        "Dockerfile" | "Containerfile" => Some("Dockerfile"),
        "CMakeLists.txt" => Some("CMake"),
        "Cargo.lock" => Some("TOML"),
        "Gemfile" | "Rakefile" => Some("Ruby"),
        "Jenkinsfile" => Some("Groovy"),
        "meson.build" => Some("Meson"),
        "justfile" | "Justfile" => Some("Just"),
        "LICENSE" | "LICENCE" | "COPYING" | "NOTICE" | "AUTHORS" => Some("Text"),
        n if n.starts_with("Dockerfile.") => Some("Dockerfile"),
        _ => None,
    };
    if let Some(lang) = by_name {
        return lang;
    }
    // `.gitignore` has no extension: the dot only starts a hidden name.
    if let Some((stem, ext)) = name.rsplit_once('.')
        && !stem.is_empty()
        && let Some(lang) = by_extension(&ext.to_ascii_lowercase())
    {
        return lang;
    }
    shebang(text).unwrap_or("Other")
}

fn by_extension(ext: &str) -> Option<&'static str> {
    Some(match ext {
        "rs" => "Rust",
        "c" | "h" => "C",
        "cc" | "cpp" | "cxx" | "c++" | "hh" | "hpp" | "hxx" | "ino" => "C++",
        "py" | "pyi" | "pyw" => "Python",
        "js" | "mjs" | "cjs" | "jsx" => "JavaScript",
        "ts" | "tsx" | "mts" | "cts" => "TypeScript",
        "go" => "Go",
        "java" => "Java",
        "kt" | "kts" => "Kotlin",
        "scala" | "sc" => "Scala",
        "swift" => "Swift",
        "m" | "mm" => "Objective-C",
        "cs" => "C#",
        "fs" | "fsx" => "F#",
        "rb" => "Ruby",
        "php" => "PHP",
        "pl" | "pm" => "Perl",
        "lua" => "Lua",
        "sh" | "bash" | "zsh" | "ksh" | "dash" => "Shell",
        "fish" => "Fish",
        "ps1" | "psm1" => "PowerShell",
        "hs" => "Haskell",
        "ml" | "mli" => "OCaml",
        "ex" | "exs" => "Elixir",
        "erl" | "hrl" => "Erlang",
        "clj" | "cljs" | "cljc" => "Clojure",
        "el" => "Emacs Lisp",
        "lisp" | "lsp" => "Lisp",
        "scm" | "ss" => "Scheme",
        "dart" => "Dart",
        "r" => "R",
        "jl" => "Julia",
        "zig" => "Zig",
        "nim" => "Nim",
        "d" => "D",
        "v" | "sv" | "vhd" | "vhdl" => "HDL",
        "s" | "asm" => "Assembly",
        "sql" => "SQL",
        "html" | "htm" | "xhtml" => "HTML",
        "css" => "CSS",
        "scss" | "sass" => "Sass",
        "less" => "Less",
        "vue" => "Vue",
        "svelte" => "Svelte",
        "md" | "markdown" | "mdx" => "Markdown",
        "rst" => "reStructuredText",
        "adoc" | "asciidoc" => "AsciiDoc",
        "tex" | "sty" | "cls" => "TeX",
        "txt" => "Text",
        "toml" => "TOML",
        "yaml" | "yml" => "YAML",
        "json" | "jsonc" | "json5" => "JSON",
        "xml" | "xsd" | "xsl" => "XML",
        "svg" => "SVG",
        "ini" | "cfg" | "conf" => "INI",
        "csv" | "tsv" => "CSV",
        "mk" | "mak" => "Makefile",
        "cmake" => "CMake",
        "gradle" => "Gradle",
        "groovy" => "Groovy",
        "nix" => "Nix",
        "proto" => "Protocol Buffers",
        "tf" | "hcl" => "HCL",
        "vim" => "Vim script",
        "j2" | "jinja" | "jinja2" => "Jinja",
        "service" | "timer" | "socket" | "mount" | "path" | "target" | "slice" => "systemd",
        "dts" | "dtsi" => "Device Tree",
        _ => return None,
    })
}

/// `#!/bin/sh`, `#!/usr/bin/env python3` and the like.
fn shebang(text: &[u8]) -> Option<&'static str> {
    let rest = text.strip_prefix(b"#!")?;
    let line = &rest[..rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len())];
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_whitespace();
    let mut prog = words.next()?.rsplit('/').next()?;
    if prog == "env" {
        prog = words.find(|w| !w.starts_with('-'))?;
    }
    let prog = prog.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    Some(match prog {
        "sh" | "bash" | "dash" | "zsh" | "ksh" | "ash" => "Shell",
        "python" => "Python",
        "perl" => "Perl",
        "ruby" => "Ruby",
        "node" | "nodejs" => "JavaScript",
        "lua" => "Lua",
        "fish" => "Fish",
        "php" => "PHP",
        _ => return None,
    })
}

// ---------------------------------------------------------------------------
// Check

fn render_check(out: &mut String, workdir: &Path, check: &CheckSettings) {
    out.push_str("\n### Check\n\n");
    match crate::check::run(workdir, check) {
        Ok(outcome) => {
            let _ = writeln!(out, "{}: {}\n", code(&check.command), outcome.verdict());
            let tail = clean_output(&outcome.output_tail);
            if tail.trim().is_empty() {
                out.push_str("No output.\n");
            } else {
                let fence = fence_for(&tail);
                let _ = writeln!(out, "{fence}text\n{}\n{fence}", tail.trim_end());
            }
        }
        Err(e) => {
            let _ = writeln!(out, "{}: could not run: {e:#}", code(&check.command));
        }
    }
}

/// Output as a reader should see it in Markdown: no terminal colour
/// sequences, no carriage returns or other control characters.
fn clean_output(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte (0x40..=0x7e).
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
        } else if c == '\n' || c == '\t' || !c.is_control() {
            out.push(c);
        }
    }
    out
}

/// A backtick fence longer than any backtick run in `text`, so the text
/// cannot close it.
fn fence_for(text: &str) -> String {
    let (mut longest, mut run) = (0, 0);
    for c in text.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    "`".repeat(longest.max(2) + 1)
}

// ---------------------------------------------------------------------------
// Context

/// A String that never grows past `max` bytes: the first piece that does
/// not fit is cut at a line boundary, any open code fence closed, and a
/// note says the context was truncated. Later pieces are dropped.
struct Bounded {
    text: String,
    max: usize,
    full: bool,
}

impl Bounded {
    fn new(max: usize) -> Bounded {
        Bounded {
            text: String::new(),
            max,
            full: false,
        }
    }

    fn is_full(&self) -> bool {
        self.full
    }

    /// Bytes the next piece may have to fit whole.
    fn room_for_next(&self) -> usize {
        self.max
            .saturating_sub(self.text.len() + self.separator().len())
    }

    /// What goes between the text so far and the next piece: a blank line.
    fn separator(&self) -> &'static str {
        if self.text.is_empty() || self.text.ends_with("\n\n") {
            ""
        } else if self.text.ends_with('\n') {
            "\n"
        } else {
            "\n\n"
        }
    }

    /// Append `piece` (separated from the previous one by a blank line).
    fn push(&mut self, piece: &str) {
        if self.full {
            return;
        }
        let sep = self.separator();
        if self.text.len() + sep.len() + piece.len() <= self.max {
            self.text.push_str(sep);
            self.text.push_str(piece);
            return;
        }
        self.full = true;
        let mut all = std::mem::take(&mut self.text);
        all.push_str(sep);
        all.push_str(piece);
        let note = format!("\n[Context truncated to {} bytes.]\n", self.max);
        if note.len() > self.max {
            // Too small even for the note: a plain cut at a char boundary.
            all.truncate(floor_char_boundary(&all, self.max));
            self.text = all;
            return;
        }
        let room = self.max - note.len();
        // Whole lines only, leaving room to close a fence left open.
        let mut end = floor_char_boundary(&all, room);
        end = all[..end].rfind('\n').map_or(0, |i| i + 1);
        loop {
            let kept = all[..end].trim_end();
            let closing = open_fence(kept).map(|f| f + "\n").unwrap_or_default();
            let newline = usize::from(!kept.is_empty());
            if kept.len() + newline + closing.len() <= room {
                all.truncate(kept.len());
                if newline == 1 {
                    all.push('\n');
                }
                all.push_str(&closing);
                break;
            }
            // A fence is open, so `kept` has at least one line to drop.
            end = kept.rfind('\n').map_or(0, |i| i + 1);
        }
        all.push_str(&note);
        self.text = all;
    }

    fn finish(self) -> String {
        self.text
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The fence left open at the end of `text`, if any.
fn open_fence(text: &str) -> Option<String> {
    let mut open: Option<usize> = None;
    for line in text.lines() {
        let ticks = line.bytes().take_while(|&b| b == b'`').count();
        match open {
            None if ticks >= 3 => open = Some(ticks),
            Some(n) if ticks >= n && line[ticks..].trim().is_empty() => open = None,
            _ => {}
        }
    }
    open.map(|n| "`".repeat(n))
}

/// The root's README (README.md preferred, any case), unless excluded.
fn readme_name(workdir: &Path, exclude: &[&Path]) -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir(workdir)
        .ok()?
        .filter_map(|e| e.ok())
        // Not through symlinks: the context may leave the machine.
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.to_ascii_lowercase().starts_with("readme") && !is_excluded(n, exclude))
        .collect();
    // Stable choice whatever the directory order: README.md first, then
    // shorter names, then by name.
    names.sort_by_key(|n| (!n.eq_ignore_ascii_case("README.md"), n.len(), n.clone()));
    names.into_iter().next()
}

/// `### File: NAME` and the file's first `limit` bytes (whole lines) in a
/// fence; a note when it was longer or is binary.
fn file_excerpt(workdir: &Path, name: &str, limit: usize) -> String {
    let path = workdir.join(name);
    if super::redact::is_secret_file(&path) {
        // Whatever it is called in a manifest list: never read.
        return format!("### File: {name}\n\n(not read: its name says it holds secrets)\n");
    }
    let mut buf = Vec::new();
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let read = File::open(&path).and_then(|f| f.take(limit as u64).read_to_end(&mut buf));
    let mut out = format!("### File: {name}\n\n");
    if let Err(e) = read {
        let _ = writeln!(out, "(cannot read it: {e})");
        return out;
    }
    if buf.contains(&0) {
        out.push_str("(binary file)\n");
        return out;
    }
    let text = String::from_utf8_lossy(&buf);
    let mut text: &str = &text;
    let truncated = size > limit as u64;
    if truncated && let Some(i) = text.rfind('\n') {
        // Cut mid-file: drop the partial last line.
        text = &text[..=i];
    }
    let fence = fence_for(text);
    let _ = writeln!(out, "{fence}\n{}\n{fence}", text.trim_end());
    if truncated {
        let _ = writeln!(out, "\n(first {} of {size} bytes)", text.len());
    }
    out
}

/// `### Tracked files (N)` and as many paths as fit in `budget` bytes (at
/// most [`LISTED_PATHS`]), in a fence, then how many were left out.
fn tracked_listing(repo: &Repository, exclude: &[&Path], budget: usize) -> anyhow::Result<String> {
    let mut paths: Vec<String> = Vec::new();
    let mut total = 0usize;
    for (path, _) in git::tracked(repo, exclude)? {
        total += 1;
        if paths.len() < LISTED_PATHS {
            paths.push(path);
        }
    }
    let heading = format!("### Tracked files ({total})\n\n");
    if total == 0 {
        return Ok(heading + "None.\n");
    }
    let fence = fence_for(&paths.join("\n"));
    let more = |shown: usize| {
        if total > shown {
            format!("\n(and {} more)\n", total - shown)
        } else {
            String::new()
        }
    };
    // The longest prefix of the paths whose rendering fits.
    let frame = heading.len() + 2 * (fence.len() + 1);
    let mut body_len = 0;
    let mut shown = 0;
    for p in &paths {
        if frame + body_len + p.len() + 1 + more(shown + 1).len() > budget {
            break;
        }
        body_len += p.len() + 1;
        shown += 1;
    }
    let mut out = heading;
    if shown > 0 {
        let _ = writeln!(out, "{fence}\n{}\n{fence}", paths[..shown].join("\n"));
    }
    if shown > 0 {
        out.push_str(&more(shown));
    } else {
        out.push_str(more(shown).trim_start_matches('\n'));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Small helpers

/// A git path (always `/`-separated, relative) as text.
fn lossy(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// A regular file, not a symlink, FIFO or directory.
fn is_regular(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
}

/// `text` as a Markdown code span, whatever backticks it holds.
fn code(text: &str) -> String {
    let (mut longest, mut run) = (0, 0);
    for c in text.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    if longest == 0 {
        format!("`{text}`")
    } else {
        let ticks = "`".repeat(longest + 1);
        format!("{ticks} {text} {ticks}")
    }
}

/// True when `path` is one of `exclude` or inside one of them.
fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// `- … and 3 more files` when a list was cut at `shown`.
fn more(out: &mut String, total: usize, shown: usize, word: &str) {
    if total > shown {
        let n = total - shown;
        let _ = writeln!(
            out,
            "- … and {n} more {word}{}",
            if n == 1 { "" } else { "s" }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_whole_uppercase_words() {
        let text =
            b"TODO: a\n// FIXME b TODO\nTODOS MY_TODO todo xTODO (TODO) FIXME_LATER FIXME\nTODO";
        assert_eq!(count_markers(text), [4, 2]);
        assert_eq!(count_markers(b""), [0, 0]);
        assert_eq!(count_markers(b"TOD"), [0, 0]);
    }

    #[test]
    fn lines_count_a_last_line_without_newline() {
        assert_eq!(count_lines(b""), 0);
        assert_eq!(count_lines(b"a"), 1);
        assert_eq!(count_lines(b"a\n"), 1);
        assert_eq!(count_lines(b"a\n\nb"), 3);
    }

    #[test]
    fn languages_by_name_extension_and_shebang() {
        assert_eq!(language("src/main.rs", b""), "Rust");
        assert_eq!(language("Makefile", b""), "Makefile");
        assert_eq!(language("a/CMakeLists.txt", b""), "CMake");
        assert_eq!(language("notes.TXT", b""), "Text");
        assert_eq!(language("bin/run", b"#!/bin/sh\necho"), "Shell");
        assert_eq!(
            language("tool", b"#!/usr/bin/env -S python3 -u\n"),
            "Python"
        );
        assert_eq!(language(".gitignore", b"target\n"), "Other");
        assert_eq!(language("data.weird", b"x"), "Other");
        assert_eq!(language("Dockerfile.arm", b""), "Dockerfile");
    }

    #[test]
    fn code_spans_survive_backticks() {
        assert_eq!(code("make check"), "`make check`");
        assert_eq!(code("echo `date`"), "`` echo `date` ``");
    }

    #[test]
    fn fences_outgrow_backticks_in_the_text() {
        assert_eq!(fence_for("plain"), "```");
        assert_eq!(fence_for("a ```rust\nx\n``` b"), "````");
    }

    #[test]
    fn output_loses_colours_and_control_characters() {
        assert_eq!(
            clean_output("\u{1b}[31mFAILED\u{1b}[0m\r\nok\tdone\u{7}"),
            "FAILED\nok\tdone"
        );
    }

    #[test]
    fn bounded_cuts_at_lines_and_closes_fences() {
        let mut b = Bounded::new(120);
        b.push("## head\n");
        let body: String = (1..=20).map(|i| format!("line {i}\n")).collect();
        b.push(&format!("```\n{body}```\n"));
        b.push("dropped\n");
        let text = b.finish();
        assert!(text.len() <= 120, "{} bytes: {text}", text.len());
        assert!(
            text.starts_with("## head\n\n```\nline 1\nline 2\n"),
            "{text}"
        );
        assert!(
            !text.contains("line 20") && !text.contains("dropped"),
            "{text}"
        );
        assert!(
            text.ends_with("```\n\n[Context truncated to 120 bytes.]\n"),
            "{text}"
        );
        assert_eq!(open_fence(&text), None);

        // Too small for the note: a clean cut anyway.
        let mut b = Bounded::new(5);
        b.push("été et hiver\n");
        assert_eq!(b.finish(), "été");
    }

    #[test]
    fn labels_of_status_flags() {
        assert_eq!(status_label(Status::WT_NEW), "untracked");
        assert_eq!(status_label(Status::INDEX_NEW), "added");
        assert_eq!(
            status_label(Status::INDEX_NEW | Status::WT_MODIFIED),
            "added"
        );
        assert_eq!(status_label(Status::WT_MODIFIED), "modified");
        assert_eq!(status_label(Status::WT_DELETED), "deleted");
        assert_eq!(status_label(Status::CONFLICTED), "conflicted");
    }
}
