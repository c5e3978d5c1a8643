//! `chore generate man DIRECTORY` and `chore generate completions SHELL`: the manual pages
//! and shell completions, made from the clap definitions at run time, so they say exactly
//! what `--help` says. A hidden command rather than a build script: only the packager pays
//! for it, not every build (docs/decisions/0033-packaging.md).

use crate::config::cli::{Cli, GenerateArgs};
use clap::CommandFactory;
use std::path::Path;

/// Run the command; returns the exit status.
pub fn run(what: GenerateArgs) -> i32 {
    let result = match what {
        GenerateArgs::Man { directory } => man(&directory).map(|pages| {
            for p in pages {
                println!("{}", p.display());
            }
        }),
        GenerateArgs::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "chore", &mut std::io::stdout());
            Ok(())
        }
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("chore generate: {e}");
            1
        }
    }
}

/// Write `chore.1` and one page per visible subcommand, nested ones too (`chore-enqueue.1`,
/// `chore-queue-stats.1`, ...) into `dir`; returns the files written.
pub fn man(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Built, each subcommand knows its display name (`chore-enqueue`).
    cmd.build();
    // Every page's footer names the version, which clap gives the top command only.
    let source = format!("chore {}", env!("CHORE_VERSION"));
    let mut pages = Vec::new();
    write_pages(&cmd, dir, &source, &mut pages)?;
    Ok(pages)
}

/// `cmd`'s page, then its visible subcommands' pages, depth first.
fn write_pages(
    cmd: &clap::Command,
    dir: &Path,
    source: &str,
    pages: &mut Vec<std::path::PathBuf>,
) -> std::io::Result<()> {
    let page = clap_mangen::Man::new(cmd.clone())
        .source(source.to_string())
        .manual("chore manual");
    pages.push(page.generate_to(dir).map_err(|e| annotate(e, dir))?);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir, source, pages)?;
    }
    Ok(())
}

fn annotate(e: std::io::Error, dir: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", dir.display()))
}
