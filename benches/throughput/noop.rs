//! The no-op batch handler the bench runs: `noop.c`, built once per bench run with the
//! machine's C compiler (`cc`, or `$CC`), so that a handler costs what a minimal program
//! costs and the figures show chore's own cost, not the bench binary's start-up. Without a
//! C compiler it falls back to this bench binary re-executed with `--noop-handler`, which
//! answers the same and costs about 250 µs more per batch here; the bench says which.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Noop {
    program: Vec<String>,
    /// What the bench prints about the handler.
    pub what: String,
}

impl Noop {
    pub fn new(me: &Path) -> Noop {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/throughput/noop.c");
        let built = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("noop-handler");
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let compiled = Command::new(&cc)
            .args(["-O2", "-o"])
            .arg(&built)
            .arg(&source)
            .status();
        match compiled {
            Ok(status) if status.success() => Noop {
                program: vec![built.display().to_string()],
                what: format!("a C program ({}, built with {cc})", source.display()),
            },
            other => Noop {
                program: vec![me.display().to_string(), "--noop-handler".into()],
                what: format!(
                    "this bench binary with --noop-handler ({cc} could not build {}: {}), about 250 µs more per batch",
                    source.display(),
                    match other {
                        Ok(status) => status.to_string(),
                        Err(e) => e.to_string(),
                    }
                ),
            },
        }
    }

    /// The handler's `command` for a Chorefile (a TOML array), with `extra` arguments.
    pub fn command(&self, extra: &[&str]) -> String {
        let words: Vec<String> = self
            .program
            .iter()
            .map(String::as_str)
            .chain(extra.iter().copied())
            .map(|w| format!("{w:?}"))
            .collect();
        format!("[{}]", words.join(", "))
    }
}
