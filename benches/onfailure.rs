//! `cargo bench --bench onfailure`: pm-onfailure handling a failure whose
//! signature is already known (no LLM), timed from process start to exit
//! for its unprivileged steps (`--step decide`, `--step explain`), as
//! pm-onfailure@.service runs them. Target (README, "Benchmarks"): under
//! 50 ms.
//!
//! Here the store is real (LMDB in a temp dir) and so are the processes;
//! what the build machine lacks is systemd: `systemctl show` fails at once
//! and the journal has no lines for the unit. The system tests measure the
//! whole handler in a booted container (the restart included) and print
//! that figure too.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const ROUNDS: usize = 30;

fn step(config: &Path, runtime: &Path, step: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_pm-onfailure"))
        .args(["--config"])
        .arg(config)
        .args(["--step", step, "bench.service"])
        .env("RUNTIME_DIRECTORY", runtime)
        .env("MONITOR_SERVICE_RESULT", "exit-code")
        .env("MONITOR_EXIT_CODE", "exited")
        .env("MONITOR_EXIT_STATUS", "3")
        .env_remove("MONITOR_INVOCATION_ID")
        .env_remove("INVOCATION_ID")
        .env_remove("JOURNAL_STREAM")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn main() {
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("pimainteno.toml");
    let runtime = root.path().join("run");
    std::fs::create_dir_all(&runtime).unwrap();
    std::fs::write(
        &config,
        format!(
            "[llm]\nprovider = \"none\"\n\n[cache]\npath = \"{}\"\n\n\
             [systemd_monitor]\nunits = [\"bench.service\"]\nmax_repairs_per_hour = 1000000\n",
            root.path().join("store").display()
        ),
    )
    .unwrap();
    let handle = || {
        let t = Instant::now();
        step(&config, &runtime, "decide");
        step(&config, &runtime, "explain");
        t.elapsed()
    };
    let first = handle();
    let times: Vec<Duration> = (0..ROUNDS).map(|_| handle()).collect();
    let known = common::median(times);
    println!("pm-onfailure, steps decide + explain, median of {ROUNDS}:");
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
}
