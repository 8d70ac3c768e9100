//! pm-summarize: run by pimainteno.timer; see `pm-summarize --help`.

use std::process::ExitCode;

use clap::Parser;
use pimainteno::cli::SummarizeCli;
use pimainteno::config::{self, LoadOptions, ProviderKind};
use pimainteno::exit::{self, Exit};
use pimainteno::{logging, summarize};

fn main() -> ExitCode {
    let cli = SummarizeCli::parse();
    // On a terminal the progress lines say what info events would.
    let progress = summarize::interactive() && !logging::under_systemd();
    logging::init(cli.common.verbose, cli.common.quiet + u8::from(progress));
    match run(cli, progress) {
        Ok(code) => code.into(),
        Err(e) => {
            exit::report(&e);
            exit::code_for(&e).into()
        }
    }
}

fn run(cli: SummarizeCli, progress: bool) -> anyhow::Result<Exit> {
    let mut settings = config::load(&LoadOptions {
        path: cli.common.config.clone(),
        defaults_if_missing: !cli.paths.is_empty(),
    })?;
    for w in &settings.warnings {
        tracing::warn!("{w}");
    }
    if let Some(p) = cli.provider.as_deref() {
        settings.llm.provider = match p {
            "codex" => ProviderKind::Codex,
            "openai" => ProviderKind::OpenAi,
            _ => ProviderKind::None,
        };
    }
    let mut only = cli.projects;
    for dir in &cli.paths {
        let project = summarize::adhoc_project(dir)?;
        only.push(project.name.clone());
        settings.projects.retain(|p| p.name != project.name);
        settings.projects.push(project);
    }
    let reports = summarize::run(
        &settings,
        &summarize::Options {
            only,
            force: cli.force,
            progress,
        },
    )?;
    Ok(summarize::worst(&reports))
}
