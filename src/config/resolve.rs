//! Settings, merged and each with its origin, to a checked `Config`.
//!
//! Pure: no file is read here (the environment is read only for `MEMCACHE_SERVERS`). Each
//! value is checked once, against its option's `Kind` (`Opt::check`) or, for a queue table,
//! in `config::queue`; then the few rules that involve several keys. Every mistake is
//! collected, each at the origin of the value that is wrong.

use super::chorefile::QueueTable;
use super::error::{ConfigError, Origin};
use super::options::{Kind, OPTIONS, Value, option};
use super::queue::{self, QueueDefaults};
use super::{Config, LogFormat, QueueConfig, suggest};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// A value given on the command line or in a Chorefile, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    pub value: Value,
    pub origin: Origin,
}

/// The settings given, by option key, after the bad ones were reported.
struct Settings<'a> {
    given: &'a BTreeMap<&'static str, Setting>,
    bad: Vec<&'static str>,
}

impl Settings<'_> {
    /// The value given, else the default.
    fn value(&self, key: &'static str) -> Option<Value> {
        match self.given.get(key) {
            Some(s) if !self.bad.contains(&key) => Some(s.value.clone()),
            _ => option(key).default_value(),
        }
    }
    fn origin(&self, key: &str) -> Origin {
        self.given
            .get(key)
            .map_or(Origin::Default, |s| s.origin.clone())
    }
    fn count(&self, key: &'static str) -> Option<i64> {
        match self.value(key) {
            Some(Value::Count(n)) => Some(n),
            _ => None,
        }
    }
    /// A checked count (the table's bounds fit in a usize).
    fn size(&self, key: &'static str) -> usize {
        self.count(key).map_or(1, |n| n as usize)
    }
    /// A checked number of seconds (finite, ≥ 0, at most 30 days).
    fn secs(&self, key: &'static str) -> Duration {
        match self.value(key) {
            Some(Value::Seconds(s)) => Duration::from_secs_f64(s),
            _ => Duration::ZERO,
        }
    }
    fn flag(&self, key: &'static str) -> bool {
        matches!(self.value(key), Some(Value::Bool(true)))
    }
    fn text(&self, key: &'static str) -> Option<String> {
        match self.value(key) {
            Some(Value::Text(t)) => Some(t),
            _ => None,
        }
    }
    fn list(&self, key: &'static str) -> Option<Vec<String>> {
        match self.value(key) {
            Some(Value::List(l)) => Some(l),
            _ => None,
        }
    }
}

/// Resolve merged settings and queue tables (`files`: the Chorefiles read, in order).
pub fn resolve(
    given: &BTreeMap<&'static str, Setting>,
    tables: &[QueueTable],
    files: Vec<PathBuf>,
) -> Result<Config, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut bad = Vec::new();
    for (&key, s) in given {
        if let Err(m) = option(key).check(&s.value) {
            errors.push(ConfigError::at(&s.origin, key, m));
            bad.push(key);
        }
    }
    let s = Settings { given, bad };

    // Ruby Chore lower-cases the prefix; so do we, so that both find one queue.
    let mut queue_prefix = s.text("queue-prefix").unwrap_or_default().to_lowercase();
    if let Err(m) = queue::check_prefix(&queue_prefix) {
        errors.push(ConfigError::at(
            &s.origin("queue-prefix"),
            "queue-prefix",
            m,
        ));
        // Reported once, here: each queue is then checked on its own name.
        queue_prefix.clear();
    }
    let max_attempts = s.count("max-attempts").map(|n| n as u32);
    let defaults = QueueDefaults {
        prefix: &queue_prefix,
        prefix_origin: &s.origin("queue-prefix"),
        max_attempts,
    };
    let mut declared = Vec::new();
    for t in tables {
        match queue::resolve(t, &defaults) {
            Ok(q) => declared.push(q),
            Err(e) => errors.extend(e),
        }
    }
    let selected = select_queues(&declared, &s).unwrap_or_else(|e| {
        errors.push(e);
        Vec::new()
    });
    let metrics_listen = match s.text("metrics-listen") {
        Some(a) => a
            .parse::<std::net::SocketAddr>()
            .map(Some)
            .unwrap_or_else(|e| {
                let m = format!(
                    "`{a}` is not an IP address and port (for example 127.0.0.1:9187): {e}"
                );
                errors.push(ConfigError::at(
                    &s.origin("metrics-listen"),
                    "metrics-listen",
                    m,
                ));
                None
            }),
        None => None,
    };
    let credentials = credentials(&s).unwrap_or_else(|e| {
        errors.push(e);
        None
    });
    if !errors.is_empty() {
        return Err(errors);
    }

    Ok(Config {
        concurrency: s.size("concurrency"),
        batch_size: s.size("batch-size"),
        batch_timeout: s.secs("batch-timeout"),
        strict_batching: s.flag("strict-batching"),
        threads_per_queue: s.size("threads-per-queue"),
        queue_polling_size: s.size("queue-polling-size"),
        consumer_sleep_interval: s.secs("consumer-sleep-interval"),
        queue_prefix,
        default_queue_timeout: s.secs("default-queue-timeout"),
        shutdown_timeout: s.secs("shutdown-timeout"),
        fs_queue_root: home_expanded(&s.text("fs-queue-root").unwrap_or_default()),
        fs_claim_lease: s.secs("fs-claim-lease"),
        stall_timeout: s.secs("stall-timeout"),
        metrics_listen,
        control_socket: s.text("control-socket").map(|p| home_expanded(&p)),
        sqs: crate::config::SqsSettings {
            endpoint: s.text("sqs-endpoint"),
            region: s.text("aws-region"),
            credentials,
        },
        dedupe: crate::config::DedupeSettings {
            servers: s.list("dedupe-servers").unwrap_or_else(memcache_servers),
            dupe_on_cache_failure: s.flag("dupe-on-cache-failure"),
            prefix: s.text("dedupe-prefix").unwrap_or_default(),
        },
        log_file: s.text("log-file").map(|p| home_expanded(&p)),
        log_format: match s
            .text("log-format")
            .map(|f| f.to_ascii_lowercase())
            .as_deref()
        {
            Some("json") => LogFormat::Json,
            Some("ruby") => LogFormat::Ruby,
            _ => LogFormat::Text,
        },
        log_level: log_level(&s),
        log_settlements: !matches!(s.value("log-settlements"), Some(Value::Bool(false))),
        declared,
        selected,
        files,
        ignored_options: OPTIONS
            .iter()
            .filter(|o| o.kind == Kind::Ignored && given.contains_key(o.key))
            .map(|o| o.help)
            .collect(),
        ignored_words: Vec::new(),
    })
}

/// A path with a leading `~` or `~/` taken from `$HOME`, as Ruby Chore's `File.expand_path`
/// takes it (a Chorefile's words reach chore without a shell to expand them).
fn home_expanded(path: &str) -> PathBuf {
    let home = || std::env::var_os("HOME").map(PathBuf::from);
    match (path, path.strip_prefix("~/")) {
        ("~", _) => home().unwrap_or_else(|| PathBuf::from(path)),
        (_, Some(rest)) => home().map_or_else(|| PathBuf::from(path), |h| h.join(rest)),
        _ => PathBuf::from(path),
    }
}

/// Static AWS credentials: both keys, or neither.
fn credentials(s: &Settings) -> Result<Option<(String, String)>, ConfigError> {
    match (s.text("aws-access-key"), s.text("aws-secret-key")) {
        (Some(k), Some(secret)) => Ok(Some((k, secret))),
        (None, None) => Ok(None),
        (k, _) => {
            let key = match k {
                Some(_) => "aws-access-key",
                None => "aws-secret-key",
            };
            let message = "give both --aws-access-key and --aws-secret-key, or neither";
            Err(ConfigError::at(&s.origin(key), key, message))
        }
    }
}

/// Dalli's own fallback, then its default.
fn memcache_servers() -> Vec<String> {
    let from_env = std::env::var("MEMCACHE_SERVERS").unwrap_or_default();
    let servers: Vec<String> = from_env
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if servers.is_empty() {
        vec!["localhost:11211".into()]
    } else {
        servers
    }
}

/// `log-level`, made more verbose by each `-v`.
fn log_level(s: &Settings) -> tracing::Level {
    let base = match s
        .text("log-level")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "error" => 0,
        "warn" | "warning" => 1,
        "debug" => 3,
        "trace" => 4,
        _ => 2,
    };
    let verbose = s.count("verbose").unwrap_or(0).max(0) as usize;
    match base + verbose.min(4) {
        0 => tracing::Level::ERROR,
        1 => tracing::Level::WARN,
        2 => tracing::Level::INFO,
        3 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    }
}

/// Apply `--queues` / `--except-queues` (both take unprefixed names, as in Ruby Chore).
fn select_queues(declared: &[QueueConfig], s: &Settings) -> Result<Vec<usize>, ConfigError> {
    let names: Vec<&str> = declared.iter().map(|q| q.name.as_str()).collect();
    let index: std::collections::HashMap<&str, usize> =
        names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let find = |n: &String, key: &'static str| -> Result<usize, ConfigError> {
        index.get(n.as_str()).copied().ok_or_else(|| {
            let listed = if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            };
            ConfigError::at(
                &s.origin(key),
                key,
                format!(
                    "unknown queue `{n}`{} (declared: {listed})",
                    suggest::hint(n, names.iter().copied())
                ),
            )
        })
    };
    let mut selected: Vec<usize> = match (s.list("queues"), s.list("except-queues")) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::at(
                &s.origin("queues"),
                "queues",
                "cannot specify both --queues and --except-queues",
            ));
        }
        (Some(only), None) => {
            let mut v = Vec::new();
            for n in &only {
                v.push(find(n, "queues")?);
            }
            v.sort_unstable();
            v.dedup();
            v
        }
        (None, except) => {
            let mut skip = std::collections::HashSet::new();
            for n in except.unwrap_or_default().iter() {
                skip.insert(find(n, "except-queues")?);
            }
            (0..declared.len()).filter(|i| !skip.contains(i)).collect()
        }
    };
    selected.sort_unstable();
    Ok(selected)
}
