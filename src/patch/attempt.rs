//! The attempt loop: ask the LLM for a change, confine it, prove it with
//! the project's check; feed a failed check back for another attempt, at
//! most `[patch] max_attempts`, stopping early when the same failure comes
//! back.

use std::path::Path;

use git2::Oid;

use super::change::{self, Change};
use super::confine::{self, GitFiles};
use super::judge::{self, Judgement};
use super::worktree::Worktree;
use crate::check::{self, CheckOutcome};
use crate::config::{ProjectSettings, ProviderKind, Settings};
use crate::exit::Exit;
use crate::llm::{self, LlmError, Provider, Purpose, Request, metered};
use crate::store::{PatchAttempt, Store};
use crate::text;

/// Bytes of project files an HTTP model is shown.
const FILES_BUDGET: usize = 48 * 1024;
/// Tracked file names listed for an HTTP model.
const MAX_LISTED: usize = 300;

/// What the attempts gave.
pub struct Attempts {
    pub attempts: Vec<PatchAttempt>,
    /// The change that passed the check.
    pub passed: Option<Passed>,
    /// Why the whole patch was refused (confinement), if it was.
    pub refused: Option<String>,
    /// The LLM failed (unavailable, timed out, over budget...) and ended
    /// the run: its exit code. Such a run is not an attempt at the work.
    pub llm_error: Option<Exit>,
    pub tokens: u64,
}

/// A change that passed the check.
pub struct Passed {
    pub change: Change,
    pub check: CheckOutcome,
    /// The base tree plus the change (in the worktree's git directory):
    /// what is committed.
    pub tree: Oid,
}

/// What the next prompt says about the attempt before.
enum Feedback {
    None,
    /// The change and the check output it got.
    CheckFailed {
        diff: String,
        output: String,
    },
    /// The reply could not be used (no diff, does not apply, no change).
    Unusable(String),
}

/// The inputs of a run's attempts.
pub struct Job<'a> {
    pub settings: &'a Settings,
    pub store: &'a Store,
    pub project: &'a ProjectSettings,
    /// How the check is contained.
    pub contain: &'a super::contain::Containment,
    pub provider: &'a dyn Provider,
    pub reason: &'a str,
    /// The failure, task or check output the fix is for.
    pub context: &'a str,
    /// The check at the base, when it was run.
    pub first_check: Option<&'a CheckOutcome>,
    /// A `--task` asks for tests to be skipped or removed.
    pub weakening_allowed: bool,
}

pub fn run(job: &Job<'_>, wt: &Worktree, common: &Path) -> anyhow::Result<Attempts> {
    let check = job
        .project
        .check
        .as_ref()
        .expect("pm-patch only attempts projects with a check");
    let limits = &job.settings.patch;
    let base_tree = wt.repo.find_commit(wt.base)?.tree()?;
    let protect = confine::Protect::new(
        &job.project.protect,
        job.project.protect_defaults,
        Some(&check.command),
        &base_tree,
    )
    .map_err(|e| anyhow::anyhow!("project {}: {e}", job.project.name))?;
    let mut out = Attempts {
        attempts: Vec::new(),
        passed: None,
        refused: None,
        llm_error: None,
        tokens: 0,
    };
    let mut feedback = Feedback::None;
    let mut last_failure: Option<String> = None;
    // The tests at the base, to judge a passing check by: the check at
    // HEAD's, else the check run here once (a failure or a task).
    let baseline = match job.first_check {
        Some(c) => c.tests.clone(),
        None => {
            let sandbox = job.contain.for_check(job.settings, job.project, wt);
            check::run_contained(&wt.path, check, sandbox.as_ref())?.tests
        }
    };
    for n in 1..=limits.max_attempts {
        // From the base's own files, every time: not what the check at the
        // base or the attempt before left (bytecode a same-size fix would
        // not renew, links).
        wt.checkout_base()?;
        let prompt = prompt(job, wt, &base_tree, &feedback);
        // The user's git files: nothing of the model's should reach them
        // (the worktree has a git directory of its own); checked after the
        // model's code ran, the check included.
        let before = GitFiles::snapshot(common);
        let codex_sandbox = match job.settings.llm.provider {
            ProviderKind::Codex => job.contain.for_codex(job.settings, job.project, wt),
            _ => None,
        };
        let req = Request {
            purpose: Purpose::Patch,
            prompt: &prompt,
            workdir: &wt.path,
            check: Some(check),
            exclude: &[],
            schema: None,
            sandbox: codex_sandbox.as_ref(),
        };
        let mut attempt = PatchAttempt {
            n,
            diff: String::new(),
            files: Vec::new(),
            check: None,
            tokens: 0,
            outcome: String::new(),
            detail: None,
            left_by_check: Vec::new(),
            tests: None,
            fixed_tests: Vec::new(),
        };
        let answer = match metered::call(
            job.provider,
            job.store,
            &job.project.name,
            &job.settings.llm,
            &req,
        ) {
            Ok(a) => a,
            Err(e) => {
                let Some(l) = e.downcast_ref::<LlmError>() else {
                    return Err(e);
                };
                attempt.outcome = "llm_failed".into();
                attempt.detail = Some(l.to_string());
                out.attempts.push(attempt);
                out.llm_error = Some(l.exit());
                // Unavailable, over budget, timed out: another try now
                // would fare no better.
                break;
            }
        };
        attempt.tokens = answer.usage.total();
        out.tokens += attempt.tokens;
        if let Some(why) = git_files_touched(&before, common) {
            attempt.outcome = "refused".into();
            attempt.detail = Some(why.clone());
            out.attempts.push(attempt);
            out.refused = Some(why);
            break;
        }
        // The change as a tree: codex edited the files, an HTTP model's
        // diff is applied to the base tree in memory.
        let codex = job.settings.llm.provider == ProviderKind::Codex;
        let made = if codex {
            change::tree_from_workdir(wt)
        } else {
            match change::extract_diff(&answer.text) {
                None => Err("the reply holds no unified diff".to_string()),
                Some(d) => change::apply_to_base(wt, &d),
            }
        };
        let tree = match made {
            Ok(t) => t,
            Err(why) => {
                // A path outside the repository is a refusal, not a slip.
                let refusal = codex
                    || why.contains(": inside .git")
                    || why.contains("outside the repository")
                    || why.contains("absolute path");
                attempt.outcome = if refusal { "refused" } else { "not_applied" }.into();
                attempt.detail = Some(why.clone());
                out.attempts.push(attempt);
                if refusal {
                    out.refused = Some(why);
                    break;
                }
                feedback = Feedback::Unusable(why);
                continue;
            }
        };
        let new_tree = wt.repo.find_tree(tree)?;
        let change = change::between(&wt.repo, &base_tree, &new_tree)?;
        attempt.diff = change.diff();
        attempt.files = change.paths();
        if change.is_empty() {
            attempt.outcome = "no_change".into();
            attempt.detail = Some("nothing in the worktree changed".into());
            out.attempts.push(attempt);
            feedback = Feedback::Unusable("your reply changed no file".into());
            continue;
        }
        if let Err(why) = confine::check(&wt.repo, &base_tree, &new_tree, &change, &protect, limits)
        {
            attempt.outcome = "refused".into();
            attempt.detail = Some(why.clone());
            out.attempts.push(attempt);
            out.refused = Some(why);
            break;
        }
        if !codex {
            // The worktree is still the base's own checkout here: only the
            // confined tree's files are written.
            wt.update_to(&new_tree)?;
        }
        super::pause_point("check");
        let sandbox = job.contain.for_check(job.settings, job.project, wt);
        let result = check::run_contained(&wt.path, check, sandbox.as_ref())?;
        attempt.check = Some(result.clone());
        attempt.left_by_check = change::left_behind(wt, tree);
        if let Some(why) = git_files_touched(&before, common) {
            attempt.outcome = "refused".into();
            attempt.detail = Some(why.clone());
            out.attempts.push(attempt);
            out.refused = Some(why);
            break;
        }
        let mut not_yet = None;
        if result.passed {
            match judge::judge(baseline.as_ref(), &result, &change, job.weakening_allowed) {
                Judgement::Fix { tests, fixed } => {
                    attempt.outcome = "passed".into();
                    attempt.tests = tests;
                    attempt.fixed_tests = fixed;
                    out.attempts.push(attempt);
                    out.passed = Some(Passed {
                        change,
                        check: result,
                        tree,
                    });
                    break;
                }
                Judgement::Weakened(why) => {
                    let why = format!("the change weakens the tests: {why}");
                    attempt.outcome = "refused".into();
                    attempt.detail = Some(why.clone());
                    out.attempts.push(attempt);
                    out.refused = Some(why);
                    break;
                }
                Judgement::NotYet(why) => {
                    attempt.tests = Some(why.clone());
                    not_yet = Some(why);
                }
            }
        }
        attempt.outcome = "check_failed".into();
        if let Some(why) = &not_yet {
            attempt.detail = Some(format!("the check passed, but not the tests: {why}"));
        }
        let failure = normalized(&result.output_tail, &wt.path);
        let repeated = last_failure.as_deref() == Some(failure.as_str());
        out.attempts.push(attempt);
        if repeated {
            // The same failure again: the model is going round in circles.
            break;
        }
        last_failure = Some(failure);
        feedback = Feedback::CheckFailed {
            diff: change.diff(),
            output: match not_yet {
                Some(why) => format!("{}\n(the tests say: {why})", result.output_tail),
                None => result.output_tail,
            },
        };
    }
    Ok(out)
}

/// Whether the user's git files changed since `before` (they are put
/// back): the reason for a refusal.
fn git_files_touched(before: &GitFiles, common: &Path) -> Option<String> {
    let touched = before.restore_changes(common);
    (!touched.is_empty()).then(|| {
        format!(
            "the model's code changed the repository's git files ({}); they were put back",
            touched
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// A check's output as it would read again for the same failure: the
/// worktree's path (new on every run), durations, times and ids
/// normalised away.
pub fn normalized(output: &str, worktree: &Path) -> String {
    let output = output.replace(&worktree.display().to_string(), "<worktree>");
    output
        .lines()
        .map(text::normalize_volatile)
        .collect::<Vec<_>>()
        .join("\n")
}

fn prompt(job: &Job<'_>, wt: &Worktree, base: &git2::Tree<'_>, feedback: &Feedback) -> String {
    let check = job
        .project
        .check
        .as_ref()
        .map(|c| c.command.as_str())
        .unwrap_or("");
    let mut p = format!(
        "You fix a software project that runs on a Raspberry Pi.\n\
         What to fix: {}\n\
         The project's check is `{check}`; it must pass after your change. Keep the change \
         small and focused; do not reformat unrelated code; never touch .git.\n\n{}\n",
        job.reason, job.context
    );
    if let (Some(c), Feedback::None) = (job.first_check, feedback) {
        p.push_str(&format!(
            "\nThe check {} at the current commit:\n```\n{}\n```\n",
            c.verdict(),
            c.output_tail
        ));
    }
    match feedback {
        Feedback::None => {}
        Feedback::CheckFailed { diff, output } => p.push_str(&format!(
            "\nA previous attempt made this change (it has been undone):\n```diff\n{diff}```\n\
             and the check still failed:\n```\n{output}\n```\nTry another way.\n"
        )),
        Feedback::Unusable(why) => p.push_str(&format!(
            "\nThe previous reply could not be used: {why}. Try again.\n"
        )),
    }
    if job.settings.llm.provider == ProviderKind::Codex {
        p.push_str(
            "\nThe project is checked out in the current directory. Edit the files there to \
             fix it. Do not commit and do not run git commands that change the repository.\n",
        );
        return p;
    }
    // An HTTP model cannot look: it is shown the file list and the files
    // the failure mentions.
    let tracked = tracked(base);
    p.push_str(&format!(
        "\nFiles of the project ({} shown):\n{}\n",
        tracked.len().min(MAX_LISTED),
        tracked
            .iter()
            .take(MAX_LISTED)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    ));
    let haystack = format!(
        "{}\n{}",
        job.context,
        job.first_check
            .map(|c| c.output_tail.as_str())
            .unwrap_or("")
    );
    let mut wanted: Vec<String> = tracked
        .iter()
        .filter(|t| {
            haystack.contains(t.as_str())
                || Path::new(t)
                    .file_name()
                    .is_some_and(|n| haystack.contains(n.to_string_lossy().as_ref()))
        })
        .cloned()
        .collect();
    if wanted.is_empty() {
        wanted = tracked.clone();
    }
    // A file that holds secrets by its name is never read into a prompt;
    // the model sees its name only.
    wanted.retain(|path| !llm::redact::is_secret_file(Path::new(path)));
    for (path, body) in change::read_files(&wt.repo, base, &wanted, FILES_BUDGET) {
        p.push_str(&format!("\n--- {path}\n```\n{body}\n```\n"));
    }
    p.push_str(
        "\nReply with the fix as ONE unified diff in git format (--- a/PATH, +++ b/PATH, @@ \
         hunks whose context lines match the files exactly) inside a ```diff fence.\n",
    );
    p
}

/// The files of the base commit, in the tree's order.
fn tracked(base: &git2::Tree<'_>) -> Vec<String> {
    let mut out = Vec::new();
    let _ = base.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        if entry.kind() == Some(git2::ObjectType::Blob) {
            out.push(format!("{dir}{}", entry.name().unwrap_or("")));
        }
        git2::TreeWalkResult::Ok
    });
    out
}

/// Whether the provider can write patches at all.
pub fn can_patch(provider: &dyn llm::Provider) -> bool {
    provider.name() != "none"
}
