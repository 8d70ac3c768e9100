//! `cargo bench --bench config`: loading and validating configurations of
//! 1,000 to 8,000 `[[project]]` tables (TOML, and JSON at 8,000), whose
//! directories and `check_readable` paths do not exist, so that every
//! project gets warnings located at their line: the slowest valid case.
//! Then `pimainteno check-config` on the 8,000 as a process, as a user
//! runs it. Targets: 8,000 projects validated in under 2 s, and growth
//! close to linear (8x the projects: at most 16x the time; quadratic would
//! be 64x).
//!
//! A plain `main` (harness = false): prints the figures, exits non-zero
//! when a target is missed.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pimainteno::config::{self, LoadOptions};

const SIZES: [usize; 4] = [1000, 2000, 4000, 8000];
const ROUNDS: usize = 5;
const TARGET: Duration = Duration::from_secs(2);
const MAX_GROWTH: f64 = 16.0;

fn toml(n: usize) -> String {
    let mut s =
        String::from("[llm]\nprovider = \"none\"\n\n[systemd_monitor]\nunits = [\"nginx\"]\n\n");
    for i in 0..n {
        s.push_str(&format!(
            "[[project]]\nname = \"p{i}\"\npath = \"/nonexistent/bench/p{i}\"\n\
             check = \"make test\"\ncheck_timeout = \"10m\"\nunits = [\"app{i}.service\"]\n\
             check_readable = [\"/nonexistent/sdk{i}\"]\n\n"
        ));
    }
    s
}

fn json(n: usize) -> String {
    let projects: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "    {{\n      \"name\": \"p{i}\",\n      \"path\": \"/nonexistent/bench/p{i}\",\n      \
                 \"check\": \"make test\",\n      \"check_timeout\": \"10m\",\n      \
                 \"units\": [\"app{i}.service\"],\n      \"check_readable\": [\"/nonexistent/sdk{i}\"]\n    }}"
            )
        })
        .collect();
    format!(
        "{{\n  \"llm\": {{\"provider\": \"none\"}},\n  \"project\": [\n{}\n  ]\n}}\n",
        projects.join(",\n")
    )
}

/// Median time of loading `path`; checks every project came through with
/// its warnings.
fn time_load(path: &Path, n: usize) -> Duration {
    let mut times = Vec::new();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let settings = config::load(&LoadOptions {
            path: Some(path.to_path_buf()),
            defaults_if_missing: false,
        })
        .expect("the generated configuration is valid");
        times.push(start.elapsed());
        assert_eq!(settings.projects.len(), n);
        // A missing directory and a missing readable path per project.
        assert_eq!(settings.warnings.len(), 2 * n);
        assert!(settings.warnings[2 * n - 1].line.is_some());
    }
    times.sort();
    times[ROUNDS / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let mut failed = false;
    let mut by_size = Vec::new();
    println!("projects  load+validate (median of {ROUNDS})");
    for n in SIZES {
        let path = dir.path().join(format!("p{n}.toml"));
        std::fs::write(&path, toml(n)).unwrap();
        let t = time_load(&path, n);
        println!("{n:>8}  {:>8.1} ms", ms(t));
        by_size.push(t);
    }
    let largest = *by_size.last().unwrap();
    let growth = largest.as_secs_f64() / by_size[0].as_secs_f64();
    println!("growth 1,000 -> 8,000: {growth:.1}x (linear: 8x; target <= {MAX_GROWTH}x)");
    if largest > TARGET || growth > MAX_GROWTH {
        failed = true;
    }

    let path = dir.path().join("p8000.json");
    std::fs::write(&path, json(8000)).unwrap();
    let t = time_load(&path, 8000);
    println!("    8000  {:>8.1} ms (JSON)", ms(t));
    failed |= t > TARGET;

    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_pimainteno"))
        .arg("check-config")
        .arg("--config")
        .arg(dir.path().join("p8000.toml"))
        .env_remove("PIMAINTENO_CONFIG")
        .env_remove("INVOCATION_ID")
        .env_remove("JOURNAL_STREAM")
        .output()
        .unwrap();
    let t = start.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "`pimainteno check-config`, 8000 projects (process, warnings and resolved output): {:.1} ms",
        ms(t)
    );
    failed |= t > TARGET;

    if failed {
        eprintln!(
            "FAILED: a target was missed (8,000 projects in under {TARGET:?}, growth <= {MAX_GROWTH}x)"
        );
        std::process::exit(1);
    }
}
