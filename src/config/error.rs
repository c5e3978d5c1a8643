//! Configuration mistakes, and where each setting came from.
//!
//! Every value carries its `Origin` from the moment it is read, so that a mistake is
//! reported where it was made: a Chorefile's line, or the command line. A value given on the
//! command line is never blamed on a Chorefile line, whatever the Chorefile says about the
//! same key. Several mistakes are reported together, one line each
//! (docs/decisions/0015-errors-at-start-and-at-run-time.md).

use std::fmt;
use std::path::{Path, PathBuf};

/// Where a setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Nobody gave it: the built-in default.
    Default,
    CommandLine,
    /// A Chorefile, at this line when known.
    File {
        path: PathBuf,
        line: Option<usize>,
    },
}

impl Origin {
    pub fn file(path: &Path, line: Option<usize>) -> Origin {
        Origin::File {
            path: path.to_path_buf(),
            line,
        }
    }

    /// The directory a Chorefile's relative paths are taken from (absolute, so that handlers
    /// find their programs whatever directory they run in); the working directory for a
    /// value from the command line.
    pub fn base_dir(&self) -> PathBuf {
        let cwd = || std::path::absolute(".").unwrap_or_else(|_| PathBuf::from("."));
        match self {
            Origin::File { path, .. } => std::path::absolute(path)
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .unwrap_or_else(cwd),
            _ => cwd(),
        }
    }
}

/// Shown after a value in `check-config`'s printout.
impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => write!(f, "default"),
            Origin::CommandLine => write!(f, "command line"),
            Origin::File { path, line: None } => write!(f, "{}", path.display()),
            Origin::File {
                path,
                line: Some(n),
            } => write!(f, "{}:{n}", path.display()),
        }
    }
}

/// A configuration mistake, printed as a single line: `FILE:LINE: key `KEY`: MESSAGE`,
/// `command line: key `KEY`: MESSAGE`, or `key `KEY`: MESSAGE` for a mistake that spans
/// several sources.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// None: no single place (a combination of settings, or no setting at all).
    pub origin: Option<Origin>,
    pub key: Option<String>,
    pub message: String,
}

impl ConfigError {
    #[cfg(test)]
    pub fn new(message: impl Into<String>) -> Self {
        ConfigError {
            origin: None,
            key: None,
            message: message.into(),
        }
    }

    /// A mistake in `key`, which came from `origin`.
    pub fn at(origin: &Origin, key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            // A default is nobody's mistake: name the key only.
            origin: (*origin != Origin::Default).then(|| origin.clone()),
            key: Some(key.into()),
            message: message.into(),
        }
    }

    /// The Chorefile line, when the mistake has one.
    pub fn line(&self) -> Option<usize> {
        match &self.origin {
            Some(Origin::File { line, .. }) => *line,
            _ => None,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Some(o @ (Origin::File { .. } | Origin::CommandLine)) => write!(f, "{o}: ")?,
            Some(Origin::Default) | None => {}
        }
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        // Keep the promise of one line, whatever a library put in its message.
        let one_line: Vec<&str> = self
            .message
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        write!(f, "{}", one_line.join(" "))
    }
}

impl std::error::Error for ConfigError {}

/// Every mistake found, in the order of the files and lines they are on.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// `errors` in reading order: the Chorefiles in the order given (`files`), each line by
    /// line, then the command line, then what has no single place.
    pub fn in_order(mut errors: Vec<ConfigError>, files: &[PathBuf]) -> Self {
        errors.sort_by_key(|e| match &e.origin {
            Some(Origin::File { path, line }) => (0, files.iter().position(|f| f == path), *line),
            Some(Origin::CommandLine) => (1, None, None),
            _ => (2, None, None),
        });
        ConfigErrors(errors)
    }
}

impl std::ops::Deref for ConfigErrors {
    type Target = [ConfigError];
    fn deref(&self) -> &[ConfigError] {
        &self.0
    }
}

/// One line per mistake. Callers print `chore: {errors}`, so every line after the first
/// gets the same `chore: ` prefix here: each line reads on its own.
impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, "\nchore: ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_origin_reads_as_a_place() {
        let e = ConfigError::at(
            &Origin::file(Path::new("Chorefile"), Some(3)),
            "concurrency",
            "must be\n at least 1",
        );
        assert_eq!(
            e.to_string(),
            "Chorefile:3: key `concurrency`: must be at least 1"
        );
        let e = ConfigError::at(&Origin::CommandLine, "concurrency", "no");
        assert_eq!(e.to_string(), "command line: key `concurrency`: no");
        let e = ConfigError::at(&Origin::Default, "queues", "no");
        assert_eq!(e.to_string(), "key `queues`: no");
        let all = ConfigErrors(vec![ConfigError::new("a"), ConfigError::new("b")]);
        assert_eq!(format!("chore: {all}"), "chore: a\nchore: b");
    }
}
