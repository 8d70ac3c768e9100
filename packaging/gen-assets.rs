//! Generates the man pages and shell completions that the Debian package
//! ships, from the clap definitions in `src/cli.rs`:
//!
//! ```sh
//! cargo run --example gen-assets -- target/assets
//! ```
//!
//! A separate step rather than a build script: it always runs on the build
//! machine, also when the package is cross-compiled for arm64/armhf; its
//! dependencies (clap_mangen, clap_complete) are dev-dependencies and never
//! touch the shipped binaries; and cargo-deb can only package files at a
//! fixed path, not in a build script's hashed OUT_DIR.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;
use pimainteno::cli::{AdminCli, DashboardCli, OnFailureCli, PatchCli, SummarizeCli};

fn main() -> anyhow::Result<()> {
    let out = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/assets"));
    let man = out.join("man");
    let completions = out.join("completions");
    for dir in [&man, &completions] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    for cmd in [
        SummarizeCli::command(),
        OnFailureCli::command(),
        PatchCli::command(),
        AdminCli::command(),
        DashboardCli::command(),
    ] {
        write_man_pages(&man, cmd.clone(), None)?;
        write_completions(&completions, cmd)?;
    }
    println!("man pages and completions written under {}", out.display());
    Ok(())
}

/// One page per command and subcommand: `pimainteno.1`, `pimainteno-status.1`.
/// `parent` is the parent's (page name, command line).
fn write_man_pages(
    dir: &Path,
    cmd: clap::Command,
    parent: Option<(&str, &str)>,
) -> anyhow::Result<()> {
    let (name, bin) = match parent {
        Some((page, line)) => (
            format!("{page}-{}", cmd.get_name()),
            format!("{line} {}", cmd.get_name()),
        ),
        None => (cmd.get_name().to_string(), cmd.get_name().to_string()),
    };
    // Subcommand pages are named after the full command line. (clap takes
    // &'static str names without its "string" feature; this process is short.)
    let static_name: &'static str = Box::leak(name.clone().into_boxed_str());
    // NAME wants the one-line purpose: the first line of the doc comment.
    let purpose = cmd
        .get_about()
        .map(|a| a.to_string().trim_end_matches('.').to_string());
    let mut cmd = cmd
        .name(static_name)
        .bin_name(bin.clone())
        .version(env!("CARGO_PKG_VERSION"));
    if let Some(p) = purpose {
        cmd = cmd.about(p);
    }
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .source(concat!("pimainteno ", env!("CARGO_PKG_VERSION")))
        .manual("PiMainteno")
        .render(&mut buf)?;
    if parent.is_none() {
        buf.extend_from_slice(COMMON_SECTIONS.as_bytes());
    }
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, buf).with_context(|| format!("cannot write {}", path.display()))?;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        write_man_pages(dir, sub.clone(), Some((&name, &bin)))?;
    }
    Ok(())
}

/// Sections every top-level page shares (DESIGN.md §2, §3).
const COMMON_SECTIONS: &str = r#".SH FILES
.TP
\fI/etc/pimainteno/pimainteno.toml\fR
The configuration (or \fB$PIMAINTENO_CONFIG\fR, or \fB\-\-config\fR).
.TP
\fI/etc/pimainteno/conf.d/*.toml\fR
Fragments merged after it, in name order.
.TP
\fI/var/lib/pimainteno/store\fR
The LMDB store: summaries, LLM calls.
.SH EXIT STATUS
0 done (also: nothing to do, and every outcome: a check that fails, a fix
refused or not passing, a repair not allowed; recorded, see
\fBpimainteno status\fR), 1 PiMainteno itself failed (store, repository,
write error, crash), 3 \fBpm\-patch \-\-task\fR got no fix, 69 the LLM is
unavailable, 75 try again later (lock held, token budget spent), 78 bad
configuration.
.SH SEE ALSO
\fBpimainteno\fR(1), \fBpm\-summarize\fR(1), \fBpimainteno\-system\-generator\fR(8),
\fBjournalctl\fR(1) (\fBjournalctl PM_PROJECT=\fR\fIname\fR)
"#;

/// bash, zsh and fish completions, named where Debian's shells look.
fn write_completions(dir: &Path, mut cmd: clap::Command) -> anyhow::Result<()> {
    let name = cmd.get_name().to_string();
    for (shell, sub, file) in [
        (Shell::Bash, "bash", name.clone()),
        (Shell::Zsh, "zsh", format!("_{name}")),
        (Shell::Fish, "fish", format!("{name}.fish")),
    ] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d)?;
        let path = d.join(file);
        let mut f = std::fs::File::create(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        clap_complete::generate(shell, &mut cmd, &name, &mut f);
    }
    Ok(())
}
