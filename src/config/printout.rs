//! What `check-config` prints: every option and every consumed queue as resolved, each
//! value followed by where it came from.
//!
//! A queue is a `queue NAME (FULL NAME)` line followed by its settings, indented, so that a
//! script can list the consumed queues by their first word.

use super::chorefile::QueueTable;
use super::options::{Default, Kind, OPTIONS};
use super::resolve::Setting;
use super::{
    Backend, Config, Handler, HandlerMode, HttpHealth, HttpRetry, HttpTarget, Loaded, QueueConfig,
    probe,
};
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// The printout, one line per entry.
pub fn lines(l: &Loaded, path_var: Option<&OsStr>) -> Vec<String> {
    let c = &l.config;
    let mut out = Vec::new();
    for o in OPTIONS.iter().filter(|o| o.kind != Kind::Ignored) {
        let given = l.settings.get(o.key);
        let from = match (o.kind, given) {
            (Kind::Files, _) if !c.files.is_empty() => "command line".to_string(),
            (_, Some(s)) => s.origin.to_string(),
            (_, None) => "default".to_string(),
        };
        let value = match (o.key, given, o.default) {
            ("config-file", ..) => format!("{:?}", c.files),
            ("aws-secret-key", Some(_), _) => "(hidden)".into(),
            ("queue-prefix", ..) => format!("{:?}", c.queue_prefix),
            ("dedupe-servers", None, _) => {
                let from_env = std::env::var_os("MEMCACHE_SERVERS").is_some_and(|v| !v.is_empty());
                let source = if from_env {
                    "MEMCACHE_SERVERS"
                } else {
                    "default"
                };
                out.push(format!(
                    "dedupe-servers = {:?}  # {source}",
                    c.dedupe.servers
                ));
                continue;
            }
            (_, Some(Setting { value, .. }), _) => value.to_string(),
            (_, None, Default::Is(v)) => o.parse_str(v).map_or_else(|e| e, |v| v.to_string()),
            // Words, unquoted, where there is no value.
            (_, None, Default::Otherwise(words)) => words.replace('`', ""),
        };
        out.push(format!("{} = {value}  # {from}", o.key));
    }
    for word in &c.ignored_words {
        out.push(format!("# ignored (not an option): {word}"));
    }
    if !c.ignored_options.is_empty() {
        out.push(format!(
            "# ignored (Ruby Chore options with no effect in chore): {}",
            c.ignored_options.join(", ")
        ));
    }
    let tables = l.tables_by_name();
    for q in c.selected_queues() {
        let table = tables.get(q.name.as_str()).copied();
        queue_lines(c, q, table, path_var, &mut out);
    }
    let idle: Vec<&str> = (0..c.declared.len())
        // `selected` is sorted.
        .filter(|i| c.selected.binary_search(i).is_err())
        .map(|i| c.declared[i].name.as_str())
        .collect();
    if !idle.is_empty() {
        out.push(format!("# declared, not consumed: {}", idle.join(", ")));
    }
    out
}

fn secs(d: Duration) -> String {
    d.as_secs_f64().to_string()
}

/// The lines of one queue, each value with where it came from.
struct QueuePrint<'a> {
    table: Option<&'a QueueTable>,
    out: &'a mut Vec<String>,
}

impl QueuePrint<'_> {
    /// Where `key` of the queue's table was set, else "default".
    fn from(&self, key: &str) -> String {
        self.table
            .and_then(|t| t.keys.get(key))
            .map_or_else(|| "default".to_string(), |k| k.origin.to_string())
    }
    fn line(&mut self, key: &str, value: String, note: String) {
        self.out.push(format!("  {key} = {value}  # {note}"));
    }
    /// `key` with its value, noting where it was set.
    fn set(&mut self, key: &str, value: String) {
        let from = self.from(key);
        self.line(key, value, from);
    }
}

fn queue_lines(
    c: &Config,
    q: &QueueConfig,
    table: Option<&QueueTable>,
    path_var: Option<&OsStr>,
    out: &mut Vec<String>,
) {
    let header = table.map(|t| t.origin.to_string()).unwrap_or_default();
    out.push(format!("queue {} ({})  # {header}", q.name, q.full_name));
    let mut p = QueuePrint { table, out };
    match q.backend {
        Backend::Filesystem => filesystem_lines(c, q, &mut p),
        Backend::Sqs => sqs_lines(q, &mut p),
    }
    handler_lines(q, path_var, &mut p);
    p.set("backoff", q.backoff.to_string());
    let max = q.max_attempts.map_or("unlimited".into(), |m| m.to_string());
    let max_from = match table.and_then(|t| t.keys.get("max-attempts")) {
        Some(k) => k.origin.to_string(),
        None if q.max_attempts.is_some() => "top-level max-attempts".into(),
        None => "default".into(),
    };
    p.line("max-attempts", max, max_from);
    let dedupe = match (&q.dedupe, &q.dedupe_key) {
        (false, _) => "false".to_string(),
        (true, None) => "true (on the message id)".to_string(),
        (true, Some(k)) => format!("true (on the body's `{k}`)"),
    };
    let dedupe_from = match table.is_some_and(|t| t.keys.contains_key("dedupe-key")) {
        true => p.from("dedupe-key"),
        false => p.from("dedupe"),
    };
    p.line("dedupe", dedupe, dedupe_from);
    p.set("pass-aws-credentials", q.pass_aws_credentials.to_string());
    if let Some(bytes) = q.memory_limit {
        p.set("memory-limit", format!("{bytes} bytes"));
    }
}

/// Where a filesystem queue's messages are, and how long each may run.
fn filesystem_lines(c: &Config, q: &QueueConfig, p: &mut QueuePrint) {
    let root = std::path::absolute(&c.fs_queue_root).unwrap_or(c.fs_queue_root.clone());
    let dir = root.join(&q.full_name);
    p.set("backend", "filesystem".into());
    let shown = format!("{:?}", dir.display().to_string());
    p.line("directory", shown, "fs-queue-root + name".into());
    let (timeout, note) = match (q.timeout, probe::config_timeout(&dir)) {
        (Some(t), _) => (secs(t), p.from("timeout")),
        (None, Ok(Some(n))) => (n.to_string(), "config/timeout".into()),
        (None, _) => (
            secs(c.default_queue_timeout),
            "default-queue-timeout".into(),
        ),
    };
    p.line("timeout", timeout, note);
}

/// An SQS queue's settings (the queue itself is looked up when the master starts).
fn sqs_lines(q: &QueueConfig, p: &mut QueuePrint) {
    p.set("backend", "sqs".into());
    let read_at_start = "the SQS queue's visibility timeout, read at start";
    p.set("timeout", q.timeout.map_or(read_at_start.into(), secs));
    if let Some(url) = &q.url {
        p.set("url", format!("{url:?}"));
    }
    p.set("create", q.sqs.create.to_string());
    p.set("wait-time", q.sqs.wait.map_or("20".into(), secs));
    if let Some(dlq) = &q.sqs.dead_letter_queue {
        p.set("dead-letter-queue", format!("{dlq:?}"));
    }
}

/// Every command the queue runs: argv, then where it came from and how it runs.
fn handler_lines(q: &QueueConfig, path_var: Option<&OsStr>, p: &mut QueuePrint) {
    for (key, origin, h) in super::check::commands(q, p.table) {
        let note = runs(h, path_var, &origin.to_string());
        p.line(&key, argv(h), note);
    }
    if let Some(t) = &q.http {
        let note = posts(t, &p.from("handler"));
        p.line("handler", format!("{:?}", t.url), note);
    }
    for (class, t) in &q.http_classes {
        let note = posts(t, &p.from("classes"));
        p.line(&format!("classes.{class}"), format!("{:?}", t.url), note);
    }
    if let Some(cron) = &q.cron {
        let names: Vec<&str> = cron.tasks.iter().map(|t| t.name.as_str()).collect();
        let what = format!("{:?}", cron.path.display().to_string());
        let mut note = format!(
            "{}; {} task(s): {}",
            p.from("cron-file"),
            names.len(),
            names.join(", ")
        );
        // Not a mistake (a day that never comes is a way to switch a task off), but worth
        // seeing before the master's warning.
        let now = crate::calendar::Utc::from_system(std::time::SystemTime::now()).0;
        let never: Vec<&str> = (cron.tasks.iter())
            .filter(|t| t.next_after(now).is_none())
            .map(|t| t.name.as_str())
            .collect();
        if !never.is_empty() {
            note += &format!("; never due: {}", never.join(", "));
        }
        p.line("cron-file", what, note);
    }
}

/// How an HTTP handler posts: the settings an operator moving from the SQS daemon checks.
fn posts(t: &HttpTarget, from: &str) -> String {
    let retry = match t.retry {
        HttpRetry::Sqsd => format!(
            "non-200 retried after {}s",
            secs(t.error_visibility_timeout)
        ),
        HttpRetry::Chore => "non-200 retried by backoff and max-attempts".to_string(),
    };
    let health = match &t.health {
        HttpHealth::Tcp => "health: tcp connect".to_string(),
        HttpHealth::Url(u) => format!("health: GET {u}"),
        HttpHealth::Off => "health: off".to_string(),
    };
    format!(
        "{from}; POST, {} connections, {retry}, connect timeout {}s, inactivity timeout {}s, {health}",
        t.connections,
        secs(t.connect_timeout),
        secs(t.inactivity_timeout)
    )
}

fn argv(h: &Handler) -> String {
    format!("{:?}", h.command)
}

/// How a handler runs: its mode, directory, program and extra environment variables (names
/// only: their values may be secrets).
fn runs(h: &Handler, path_var: Option<&OsStr>, from: &str) -> String {
    let mode = match h.mode {
        HandlerMode::Message => "message",
        HandlerMode::Batch => "batch",
        HandlerMode::Preload => "preload",
    };
    let dir = h.dir.as_deref().unwrap_or(Path::new("."));
    let mut note = format!("{from}; {mode} mode, in {}", dir.display());
    if let Ok(p) = probe::program(h, path_var) {
        let _ = write!(note, ", runs {}", p.display());
    }
    if let Some(p) = &h.preload {
        let mut recycle = Vec::new();
        if let Some(n) = p.max_batches {
            recycle.push(format!("{n} batches"));
        }
        if let Some(d) = p.max_age {
            recycle.push(format!("{}s", secs(d)));
        }
        if let Some(b) = p.max_memory {
            recycle.push(format!("{b} bytes resident"));
        }
        let recycle = match recycle.is_empty() {
            true => "only on SIGUSR2".to_string(),
            false => format!("after {} or on SIGUSR2", recycle.join(" or ")),
        };
        let boot = secs(p.boot_timeout);
        let _ = write!(
            note,
            " (a preloader forks each batch; boot-timeout {boot}s; recycled {recycle})"
        );
    }
    if !h.env.is_empty() {
        let names: Vec<&str> = h.env.keys().map(String::as_str).collect();
        let _ = write!(note, ", env {}", names.join(" "));
    }
    note
}
