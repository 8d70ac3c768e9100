//! `cargo bench --bench onfailure`: pm-onfailure handling failures whose
//! signature is already known (no LLM), as its units run it: the hook's
//! `--step enqueue`, then pimainteno-repair.service's unprivileged steps
//! `--step decide` and `--step followup`, timed from process start to exit
//! and in CPU time. Targets (README, "Benchmarks"): under 50 ms per failure
//! for the steps, and at most 50 ms of CPU per failure in a storm, where
//! one repair run takes several queued failures.
//!
//! Here the store is real (LMDB in a temp dir) and so are the processes and
//! the queue; what the build machine lacks is systemd: `systemctl show`
//! fails at once and the journal has no lines for the unit. The system
//! tests measure the whole thing in a booted container (the units' sandbox
//! and the restart included) and print those figures too.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const ROUNDS: usize = 30;
/// Failures queued before one repair run takes them (a storm).
const STORM: usize = 20;

fn step(config: &Path, run: &Path, step: &str) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pm-onfailure"));
    cmd.args(["--config"])
        .arg(config)
        .args(["--step", step])
        .env("PIMAINTENO_RUN_DIR", run)
        .env("MONITOR_SERVICE_RESULT", "exit-code")
        .env("MONITOR_EXIT_CODE", "exited")
        .env("MONITOR_EXIT_STATUS", "3")
        .env_remove("MONITOR_INVOCATION_ID")
        .env_remove("INVOCATION_ID")
        .env_remove("JOURNAL_STREAM");
    if step == "enqueue" {
        cmd.arg("bench.service");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// CPU time (user + system) of the children that have exited so far.
fn children_cpu() -> Duration {
    // SAFETY: getrusage writes one rusage through a valid pointer.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn main() {
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("pimainteno.toml");
    let run = root.path().join("run");
    std::fs::write(
        &config,
        format!(
            "[llm]\nprovider = \"none\"\n\n[cache]\npath = \"{}\"\n\n\
             [systemd_monitor]\nunits = [\"bench.service\"]\nmax_repairs_per_hour = 1000\n",
            root.path().join("store").display()
        ),
    )
    .unwrap();
    let handle = || {
        let t = Instant::now();
        step(&config, &run, "enqueue");
        step(&config, &run, "decide");
        step(&config, &run, "followup");
        t.elapsed()
    };
    let first = handle();
    let times: Vec<Duration> = (0..ROUNDS).map(|_| handle()).collect();
    let known = common::median(times);

    let cpu0 = children_cpu();
    for _ in 0..STORM {
        step(&config, &run, "enqueue");
    }
    step(&config, &run, "decide");
    step(&config, &run, "followup");
    let storm = (children_cpu() - cpu0) / STORM as u32;

    println!("pm-onfailure, steps enqueue + decide + followup, median of {ROUNDS}:");
    println!(
        "  first failure (signature new):  {:>6.1} ms",
        first.as_secs_f64() * 1000.0
    );
    println!(
        "  known signature (no LLM):       {:>6.1} ms (target < 50 ms): {}",
        known.as_secs_f64() * 1000.0,
        if known < Duration::from_millis(50) {
            "within target"
        } else {
            "OUTSIDE TARGET"
        }
    );
    println!(
        "  a storm, {STORM} queued, one repair run: {:>6.1} ms of CPU per failure (target <= 50 ms): {}",
        storm.as_secs_f64() * 1000.0,
        if storm <= Duration::from_millis(50) {
            "within target"
        } else {
            "OUTSIDE TARGET"
        }
    );
}
