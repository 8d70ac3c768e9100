//! The attempt loop: ask the LLM for a change, confine it, prove it with
//! the project's check; feed a failed check back for another attempt, at
//! most `[patch] max_attempts`, stopping early when the same failure comes
//! back.

use std::path::Path;

use git2::build::CheckoutBuilder;

use super::change::{self, Change};
use super::confine::{self, GitFiles};
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
    /// The change that passed the check, with that check's outcome.
    pub passed: Option<(Change, CheckOutcome)>,
    /// Why the whole patch was refused (confinement), if it was.
    pub refused: Option<String>,
    /// The LLM failed (unavailable, timed out, over budget...) and ended
    /// the run: its exit code. Such a run is not an attempt at the work.
    pub llm_error: Option<Exit>,
    pub tokens: u64,
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
    pub provider: &'a dyn Provider,
    pub reason: &'a str,
    /// The failure, task or check output the fix is for.
    pub context: &'a str,
    /// The check at the base, when it was run.
    pub first_check: Option<&'a CheckOutcome>,
}

pub fn run(job: &Job<'_>, wt: &Worktree, common: &Path) -> anyhow::Result<Attempts> {
    let check = job
        .project
        .check
        .as_ref()
        .expect("pm-patch only attempts projects with a check");
    let limits = &job.settings.patch;
    let mut out = Attempts {
        attempts: Vec::new(),
        passed: None,
        refused: None,
        llm_error: None,
        tokens: 0,
    };
    let mut feedback = Feedback::None;
    let mut last_failure: Option<String> = None;
    for n in 1..=limits.max_attempts {
        if n > 1 {
            reset(wt)?;
        }
        let prompt = prompt(job, wt, &feedback);
        let before = GitFiles::snapshot(common);
        let req = Request {
            purpose: Purpose::Patch,
            prompt: &prompt,
            workdir: &wt.path,
            check: Some(check),
            exclude: &[],
            schema: None,
        };
        let mut attempt = PatchAttempt {
            n,
            diff: String::new(),
            files: Vec::new(),
            check: None,
            tokens: 0,
            outcome: String::new(),
            detail: None,
        };
        let answer = match metered::call(
            job.provider,
            job.store,
            &job.project.name,
            job.settings.llm.daily_token_budget,
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
        // The repository's own git files: a worktree shares them.
        let touched = before.restore_changes(common);
        if !touched.is_empty() {
            let why = format!(
                "the LLM changed the repository's git files ({}); they were put back",
                touched
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            attempt.outcome = "refused".into();
            attempt.detail = Some(why.clone());
            out.attempts.push(attempt);
            out.refused = Some(why);
            break;
        }
        if job.settings.llm.provider != ProviderKind::Codex {
            let applied = match change::extract_diff(&answer.text) {
                None => Err("the reply holds no unified diff".to_string()),
                Some(d) => change::apply(&wt.repo, &d),
            };
            if let Err(why) = applied {
                // A path outside the repository is a refusal, not a slip.
                let refusal = why.contains(": inside .git")
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
        }
        let change = change::collect(&wt.repo, wt.base)?;
        attempt.diff = change.diff();
        attempt.files = change.paths();
        if change.is_empty() {
            attempt.outcome = "no_change".into();
            attempt.detail = Some("nothing in the worktree changed".into());
            out.attempts.push(attempt);
            feedback = Feedback::Unusable("your reply changed no file".into());
            continue;
        }
        if let Err(why) = confine::check(&change, &job.project.protect, limits) {
            attempt.outcome = "refused".into();
            attempt.detail = Some(why.clone());
            out.attempts.push(attempt);
            out.refused = Some(why);
            break;
        }
        super::pause_point("check");
        let result = check::run(&wt.path, check)?;
        attempt.check = Some(result.clone());
        if result.passed {
            attempt.outcome = "passed".into();
            out.attempts.push(attempt);
            out.passed = Some((change, result));
            break;
        }
        attempt.outcome = "check_failed".into();
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
            output: result.output_tail,
        };
    }
    Ok(out)
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

/// Back to the base commit: files, index, no untracked files.
fn reset(wt: &Worktree) -> anyhow::Result<()> {
    let commit = wt.repo.find_commit(wt.base)?;
    wt.repo.reset(
        commit.as_object(),
        git2::ResetType::Hard,
        Some(CheckoutBuilder::new().force().remove_untracked(true)),
    )?;
    Ok(())
}

fn prompt(job: &Job<'_>, wt: &Worktree, feedback: &Feedback) -> String {
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
    let tracked = tracked(&wt.repo);
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
    for (path, body) in change::read_files(&wt.path, &wanted, FILES_BUDGET) {
        p.push_str(&format!("\n--- {path}\n```\n{body}\n```\n"));
    }
    p.push_str(
        "\nReply with the fix as ONE unified diff in git format (--- a/PATH, +++ b/PATH, @@ \
         hunks whose context lines match the files exactly) inside a ```diff fence.\n",
    );
    p
}

fn tracked(repo: &git2::Repository) -> Vec<String> {
    let Ok(index) = repo.index() else {
        return Vec::new();
    };
    index
        .iter()
        .map(|e| String::from_utf8_lossy(&e.path).into_owned())
        .collect()
}

/// Whether the provider can write patches at all.
pub fn can_patch(provider: &dyn llm::Provider) -> bool {
    provider.name() != "none"
}
