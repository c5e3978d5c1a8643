//! What a reload (SIGHUP) changes: the running configuration against a freshly loaded one,
//! as a list of changes, pure (docs/decisions/0028-reload-semantics.md).
//!
//! Each difference is sorted into what the master applies at once (concurrency, batching,
//! the log level, a queue's handlers and retry policy, queues added or removed) and what
//! keeps its old value until a restart (where a queue lives and its timeout, the log's
//! destination and format, the dedupe servers, the consumer threads' shape, HTTP
//! handlers, preloaded handlers, periodic tasks). The master reports the second kind, one line each.

use super::{Config, QueueConfig};
use std::fmt::Debug;

/// The changes from the running configuration to a new one.
#[derive(Debug, Default, PartialEq)]
pub struct Diff {
    /// Settings applied at once, each as "key: old → new".
    pub live: Vec<String>,
    /// Settings that keep their old value until a restart: key (or queue and key).
    pub restart: Vec<String>,
    /// Queues to open and consume, by name (in the new configuration).
    pub added: Vec<String>,
    /// Queues to stop consuming and drain, by name.
    pub removed: Vec<String>,
    /// Queues whose live settings changed, by name, and whether their handlers did (their
    /// consumers then restart, to route by the new handlers).
    pub changed: Vec<(String, bool)>,
}

/// Settings compared through their `Debug` text: the resolved types hold `Duration`s,
/// `Arc`s and maps, and `Debug` is how they all say what they hold.
fn same<T: Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

/// Compare the running `old` (its global settings), whose consumed queues are `running`,
/// with `new`. `can_dedupe` says whether the running master has a memcached client (one
/// of its queues dedupes): without one, a new queue that dedupes needs a restart.
pub fn diff(old: &Config, running: &[&QueueConfig], new: &Config, can_dedupe: bool) -> Diff {
    let mut d = Diff::default();
    globals(old, new, &mut d);
    for q in running {
        match new.selected_queues().find(|n| n.name == q.name) {
            None if q.cron.is_some() || has_http(q) => d.restart.push(format!(
                "queue `{}` removed (periodic tasks or HTTP handlers)",
                q.name
            )),
            None => d.removed.push(q.name.clone()),
            Some(n) => queue(q, n, &mut d),
        }
    }
    for n in new.selected_queues() {
        if running.iter().any(|q| q.name == n.name) {
            continue;
        }
        let why = if has_http(n) {
            Some("HTTP handlers")
        } else if preloads(n) {
            Some("preloaded handlers")
        } else if n.cron.is_some() {
            Some("periodic tasks")
        } else if n.dedupe && !can_dedupe {
            Some("dedupe, and no running queue dedupes")
        } else {
            None
        };
        match why {
            Some(why) => d.restart.push(format!("queue `{}` added ({why})", n.name)),
            None => d.added.push(n.name.clone()),
        }
    }
    d
}

fn has_http(q: &QueueConfig) -> bool {
    q.http.is_some() || !q.http_classes.is_empty()
}

fn preloads(q: &QueueConfig) -> bool {
    q.handler
        .iter()
        .chain(q.classes.values())
        .any(|h| h.preload.is_some())
}

fn globals(old: &Config, new: &Config, d: &mut Diff) {
    macro_rules! live {
        ($key:literal, $field:ident) => {
            if !same(&old.$field, &new.$field) {
                d.live
                    .push(format!("{}: {:?} → {:?}", $key, old.$field, new.$field));
            }
        };
    }
    macro_rules! restart {
        ($key:literal, $field:ident) => {
            if !same(&old.$field, &new.$field) {
                d.restart.push($key.to_string());
            }
        };
    }
    live!("concurrency", concurrency);
    live!("batch-size", batch_size);
    live!("batch-timeout", batch_timeout);
    live!("strict-batching", strict_batching);
    live!("shutdown-timeout", shutdown_timeout);
    if old.log_level != new.log_level {
        d.live
            .push(format!("log-level: {} → {}", old.log_level, new.log_level));
    }
    live!("log-settlements", log_settlements);
    restart!("threads-per-queue", threads_per_queue);
    restart!("queue-polling-size", queue_polling_size);
    restart!("consumer-sleep-interval", consumer_sleep_interval);
    restart!("queue-prefix", queue_prefix);
    restart!("default-queue-timeout", default_queue_timeout);
    restart!("fs-queue-root", fs_queue_root);
    restart!("fs-claim-lease", fs_claim_lease);
    restart!("sqs settings", sqs);
    restart!("dedupe settings", dedupe);
    restart!("log-file", log_file);
    restart!("log-format", log_format);
    restart!("stall-timeout", stall_timeout);
    restart!("metrics-listen", metrics_listen);
    restart!("control-socket", control_socket);
}

fn queue(old: &QueueConfig, new: &QueueConfig, d: &mut Diff) {
    let mut restart = |key: &str| d.restart.push(format!("queue `{}`: {key}", old.name));
    if old.backend != new.backend || old.full_name != new.full_name || old.url != new.url {
        restart("where it lives (backend, name or url)");
    }
    // What the Chorefile says of the SQS queue itself; the attributes a queue is created
    // with follow `timeout` and `max-attempts`, which have rules of their own.
    let sqs = |q: &QueueConfig| (q.sqs.create, q.sqs.wait, q.sqs.dead_letter_queue.clone());
    if sqs(old) != sqs(new) {
        restart("sqs options");
    }
    if !same(&old.http, &new.http) || !same(&old.http_classes, &new.http_classes) {
        restart("HTTP handlers");
    }
    if !same(&old.cron, &new.cron) {
        restart("cron-file");
    }
    // A filesystem queue reads its claims against the timeout it was opened with: the
    // deadlines must keep to the same one.
    if !same(&old.timeout, &new.timeout) {
        restart("timeout");
    }
    if old.dedupe != new.dedupe || old.dedupe_key != new.dedupe_key {
        restart("dedupe");
    }
    let handlers_differ = !same(&old.handler, &new.handler) || !same(&old.classes, &new.classes);
    let rerouted = handlers_differ && !preloads(old) && !preloads(new);
    if handlers_differ && !rerouted {
        restart("preloaded handlers");
    }
    let policy_differs = !same(&old.backoff, &new.backoff)
        || old.max_attempts != new.max_attempts
        || !same(&old.on_permanent_failure, &new.on_permanent_failure)
        || old.pass_aws_credentials != new.pass_aws_credentials
        || old.memory_limit != new.memory_limit;
    if rerouted || policy_differs {
        d.changed.push((old.name.clone(), rerouted));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cli::Flags;

    /// A configuration from Chorefile text, the way the master loads it.
    fn load(dir: &std::path::Path, text: &str) -> Config {
        let file = dir.join("Chorefile");
        std::fs::write(&file, text).unwrap();
        let mut flags = Flags::from_words(["--fs-queue-root", dir.to_str().unwrap()]).unwrap();
        flags.config_file.push(file);
        crate::config::load(flags).unwrap()
    }

    fn check(old: &str, new: &str) -> Diff {
        let dir = std::env::temp_dir().join(format!(
            "chore-diff-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (old, new) = (load(&dir, old), load(&dir, new));
        let running: Vec<&QueueConfig> = old.selected_queues().collect();
        let can_dedupe = running.iter().any(|q| q.dedupe);
        let d = diff(&old, &running, &new, can_dedupe);
        let _ = std::fs::remove_dir_all(&dir);
        d
    }

    const BASE: &str = "concurrency = 2\n[queues.a]\nhandler = [\"/bin/true\"]\n";

    #[test]
    fn the_same_file_changes_nothing() {
        assert_eq!(check(BASE, BASE), Diff::default());
    }

    #[test]
    fn globals_are_live_or_wait_for_a_restart() {
        let new = "concurrency = 5\nlog-level = \"debug\"\nlog-format = \"json\"\n\
                   threads-per-queue = 3\n[queues.a]\nhandler = [\"/bin/true\"]\n";
        let d = check(BASE, new);
        assert_eq!(d.live, ["concurrency: 2 → 5", "log-level: INFO → DEBUG"]);
        assert_eq!(d.restart, ["threads-per-queue", "log-format"]);
        assert!(d.added.is_empty() && d.removed.is_empty() && d.changed.is_empty());
    }

    #[test]
    fn every_global_that_differs_is_live_or_named() {
        let new = "concurrency = 2\nstall-timeout = 60\nmetrics-listen = \"127.0.0.1:9\"\n\
                   control-socket = \"/tmp/elsewhere.sock\"\n[queues.a]\nhandler = [\"/bin/true\"]\n";
        let d = check(BASE, new);
        assert_eq!(
            d.restart,
            ["stall-timeout", "metrics-listen", "control-socket"]
        );
        // A queue's memory-limit applies to its next batch.
        let limited =
            "concurrency = 2\n[queues.a]\nhandler = [\"/bin/true\"]\nmemory-limit = \"64MiB\"\n";
        let d = check(BASE, limited);
        assert_eq!(d.changed, [("a".to_string(), false)]);
        assert!(d.restart.is_empty(), "{:?}", d.restart);
    }

    #[test]
    fn queues_added_removed_and_changed() {
        let new = "concurrency = 2\n[queues.a]\nhandler = [\"/bin/echo\"]\nmax-attempts = 3\n\
                   [queues.b]\nhandler = [\"/bin/true\"]\n";
        let d = check(BASE, new);
        assert_eq!(d.added, ["b"]);
        assert_eq!(d.changed, [("a".to_string(), true)]);
        let d = check(new, BASE);
        assert_eq!(d.removed, ["b"]);
        assert_eq!(d.changed, [("a".to_string(), true)]);
        // A policy change alone leaves the consumers as they are.
        let policy = "concurrency = 2\n[queues.a]\nhandler = [\"/bin/true\"]\nmax-attempts = 3\n";
        assert_eq!(check(BASE, policy).changed, [("a".to_string(), false)]);
    }

    #[test]
    fn what_cannot_change_live_is_reported_and_not_applied() {
        let moved = "concurrency = 2\n[queues.a]\nhandler = [\"/bin/true\"]\nbackend = \"sqs\"\n";
        let d = check(BASE, moved);
        assert_eq!(
            d.restart,
            [
                "queue `a`: where it lives (backend, name or url)",
                "queue `a`: dedupe"
            ]
        );
        let timed = "concurrency = 2\n[queues.a]\nhandler = [\"/bin/true\"]\ntimeout = 30\n";
        let d = check(BASE, timed);
        assert_eq!(d.restart, ["queue `a`: timeout"]);
        assert!(d.changed.is_empty());
        let http = "concurrency = 2\n[queues.a]\nhandler = [\"/bin/true\"]\n\
                    [queues.web]\nhandler = \"http://127.0.0.1:9/\"\n";
        let d = check(BASE, http);
        assert!(d.added.is_empty());
        assert_eq!(d.restart, ["queue `web` added (HTTP handlers)"]);
        let deduping = "concurrency = 2\n[queues.a]\nhandler = [\"/bin/true\"]\n\
                        [queues.b]\nhandler = [\"/bin/true\"]\ndedupe = true\n";
        assert_eq!(
            check(BASE, deduping).restart,
            ["queue `b` added (dedupe, and no running queue dedupes)"]
        );
    }
}
