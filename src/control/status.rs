//! Pure: what `chore status` reports (`Snapshot`, the JSON both ends speak) and its text
//! rendering.

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub pid: u32,
    pub version: String,
    /// `running`, `quiet` (TSTP) or `draining`.
    pub phase: String,
    pub healthy: bool,
    /// Why it is unhealthy, when it is.
    pub unhealthy: Option<String>,
    /// The Chorefiles read, in order (empty: command line and defaults only).
    pub config_files: Vec<String>,
    pub uptime_secs: f64,
    pub concurrency: usize,
    pub workers: Vec<WorkerStatus>,
    pub queues: Vec<QueueStatus>,
    /// HTTP posts in flight.
    pub posts: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub pid: u32,
    pub queue: String,
    pub ids: Vec<String>,
    pub elapsed_secs: f64,
    /// Seconds until its deadline (0 once passed).
    pub deadline_in_secs: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueStatus {
    pub name: String,
    /// Received, waiting for a worker.
    pub buffered: usize,
    /// Every message the master holds for this queue (buffered, running, deferred).
    pub held: usize,
    /// Received since the start.
    pub received: u64,
    /// Settled since the start (completed, retried or dead-lettered after a run).
    pub settled: u64,
    /// Waiting in the queue itself, at the last look (when the backend tells).
    pub depth: Option<u64>,
}

/// The text `chore status` prints.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    let health = match &s.unhealthy {
        None => "healthy".to_string(),
        Some(why) => format!("UNHEALTHY: {why}"),
    };
    let files = if s.config_files.is_empty() {
        "command line and defaults".to_string()
    } else {
        s.config_files.join(", ")
    };
    let _ = writeln!(
        out,
        "chore {} pid {}: {}, {health}",
        s.version, s.pid, s.phase
    );
    let _ = writeln!(out, "up {:.0}s; configuration: {files}", s.uptime_secs);
    let _ = writeln!(
        out,
        "workers: {} of {} busy; posts in flight: {}",
        s.workers.len(),
        s.concurrency,
        s.posts
    );
    for w in &s.workers {
        let _ = writeln!(
            out,
            "  pid {} queue {} running {:.1}s, deadline in {:.1}s: {}",
            w.pid,
            w.queue,
            w.elapsed_secs,
            w.deadline_in_secs,
            w.ids.join(",")
        );
    }
    let _ = writeln!(out, "queues:");
    for q in &s.queues {
        let depth = q.depth.map_or("-".to_string(), |d| d.to_string());
        let _ = writeln!(
            out,
            "  {}: buffered {}, held {}, received {}, settled {}, waiting in queue {depth}",
            q.name, q.buffered, q.held, q.received, q.settled
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot {
            pid: 42,
            version: "1.2.3".into(),
            phase: "running".into(),
            healthy: false,
            unhealthy: Some("queue a has had messages waiting for 61s with none started".into()),
            config_files: vec!["/etc/chore/Chorefile".into()],
            uptime_secs: 90.2,
            concurrency: 2,
            workers: vec![WorkerStatus {
                pid: 77,
                queue: "a".into(),
                ids: vec!["m1".into(), "m2".into()],
                elapsed_secs: 12.34,
                deadline_in_secs: 7.5,
            }],
            queues: vec![QueueStatus {
                name: "a".into(),
                buffered: 3,
                held: 5,
                received: 9,
                settled: 4,
                depth: Some(11),
            }],
            posts: 0,
        }
    }

    #[test]
    fn the_text_names_each_worker_and_queue_and_the_health() {
        let text = render(&snapshot());
        assert_eq!(
            text,
            "chore 1.2.3 pid 42: running, UNHEALTHY: queue a has had messages waiting for 61s with none started\n\
             up 90s; configuration: /etc/chore/Chorefile\n\
             workers: 1 of 2 busy; posts in flight: 0\n  \
             pid 77 queue a running 12.3s, deadline in 7.5s: m1,m2\n\
             queues:\n  \
             a: buffered 3, held 5, received 9, settled 4, waiting in queue 11\n"
        );
    }

    #[test]
    fn the_json_goes_both_ways() {
        let s = snapshot();
        let line = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Snapshot>(&line).unwrap(), s);
    }
}
