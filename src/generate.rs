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

/// Write `chore.1` and one page per visible subcommand (`chore-enqueue.1`, ...) into
/// `dir`; returns the files written.
pub fn man(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let cmd = Cli::command().disable_help_subcommand(true);
    clap_mangen::generate_to(cmd, dir).map_err(|e| annotate(e, dir))?;
    let mut pages: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| annotate(e, dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("chore") && n.ends_with(".1"))
        })
        .collect();
    pages.sort();
    Ok(pages)
}

fn annotate(e: std::io::Error, dir: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", dir.display()))
}
