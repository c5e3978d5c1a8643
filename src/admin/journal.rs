//! The journal of an SQS requeue (docs/decisions/0031-requeue-without-losing-or-doubling.md):
//! `sending ID` before a dead letter's send, `sent ID` once SQS accepted it, each synced to
//! disk, so that a run that was killed is resumed by the next without sending twice.

use super::{Fail, Outcome};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;

/// What the journal knows of a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// About to be sent: sent or not, nobody knows.
    Sending,
    /// Sent: only its deletion from the dead-letter queue may be missing.
    Sent,
}

/// The journal: `sending ID` and `sent ID` lines.
pub struct Journal {
    pub path: PathBuf,
    file: std::fs::File,
    pub steps: HashMap<String, Step>,
}

impl Journal {
    pub fn open(path: PathBuf) -> Outcome<Journal> {
        let mut steps = HashMap::new();
        if let Ok(f) = std::fs::File::open(&path) {
            for line in std::io::BufReader::new(f).lines().map_while(Result::ok) {
                if let Some(id) = line.strip_prefix("sent ") {
                    steps.insert(id.to_string(), Step::Sent);
                } else if let Some(id) = line.strip_prefix("sending ") {
                    steps.entry(id.to_string()).or_insert(Step::Sending);
                }
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Fail::Usage(format!("journal {}: {e}", path.display())))?;
        Ok(Journal { path, file, steps })
    }

    /// Append `word ID` for each id, and sync: it is on disk before the next call.
    pub fn record(&mut self, word: &str, ids: &[&str]) -> Outcome {
        let text: String = ids.iter().map(|id| format!("{word} {id}\n")).collect();
        self.file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Fail::Failed(format!("journal {}: {e}", self.path.display())))
    }
}

/// The default journal: one per (dead-letter queue, queue) pair, where a second run finds it.
pub fn journal_path(dlq: &str, source: &str) -> PathBuf {
    let digest = sha1_smol::Sha1::from(format!("{dlq} {source}")).digest();
    std::env::temp_dir().join(format!("chore-requeue-{digest}.journal"))
}
