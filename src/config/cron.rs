//! An Elastic Beanstalk `cron.yaml`, named by a queue's `cron-file`: its periodic tasks,
//! each checked when the configuration is loaded, so a mistake stops the start and names
//! the entry.
//!
//! (Skeleton: filled in by the periodic-task work.)

use std::path::{Path, PathBuf};

/// The tasks of one `cron.yaml`.
#[derive(Debug, Clone, PartialEq)]
pub struct CronTable {
    /// The file, for log lines.
    pub path: PathBuf,
    pub tasks: Vec<CronTask>,
}

/// One `cron:` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct CronTask {
    pub name: String,
    /// The path the periodic request is posted to.
    pub url: String,
    /// The schedule as written.
    pub schedule: String,
}

/// Read and check `path`. `seconds`: schedules have six fields, the first being seconds.
pub fn load(path: &Path, seconds: bool) -> Result<CronTable, String> {
    let _ = seconds;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let _ = text;
    Err(format!(
        "{}: periodic tasks are not implemented yet",
        path.display()
    ))
}
