//! Configuration: the Chorefile(s) and the command line, resolved into one `Config`.
//!
//! Precedence is defaults < Chorefiles (in the order given) < command line
//! (docs/decisions/0009-the-chorefile-is-toml.md). The parts, by role:
//!
//! * `options` — the table of every option (name, type, bounds, default, help), which the
//!   command line, the reader, `resolve`, `check-config` and the documentation follow
//!   (`value` reads and checks a value, `doc_tables` holds the documentation to the table);
//! * `chorefile` — reading one Chorefile (TOML; `ruby` for Ruby Chore's `--flag value`
//!   lines), each value with its line;
//! * `cli` — the command line's subcommands and flags (`queue_cli` for `chore queue VERB`);
//! * `resolve` (with `queue` for one queue table, `handler` for a command handler, `http`
//!   for an HTTP one, `cron` for a `cron.yaml`, `backends` for what SQS and memcached are
//!   told) — checking every value once and building the `Config`;
//! * `error` — a mistake and where each value came from; `suggest` — "did you mean …?";
//! * `check` (with `probe` and `printout`) — `chore check-config`, which also looks at the
//!   filesystem the way the master and its workers will;
//! * `diff` — pure: what a reload (SIGHUP) changes.
//!
//! Every mistake is one `ConfigError` line naming the file, the line and the key (or the
//! command line), all of them are reported, and the binary exits 2 before anything starts.

mod backends;
mod check;
mod chorefile;
pub mod cli;
mod cron;
pub mod diff;
#[cfg(test)]
mod doc_tables;
mod error;
mod handler;
mod http;
pub mod options;
mod printout;
mod probe;
#[cfg(test)]
mod proptests;
mod queue;
pub mod queue_cli;
mod resolve;
mod ruby;
mod suggest;
mod value;

pub use backends::{DedupeSettings, SqsQueueOptions, SqsSettings};
pub use check::{check_config, undeclared_queue};
pub use cron::{CronTable, CronTask};
pub use error::{ConfigErrors, Origin};
#[cfg(test)]
pub use http::http_of as http_target;
pub use options::MAX_SECONDS;
pub use probe::{Occupant, occupant, program as find_program};
pub use queue::check_name as check_queue_name;

use crate::backoff::Backoff;
use crate::config::cli::Flags;
use chorefile::QueueTable;
use options::Value;
use resolve::Setting;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How a log line is written (workers are told it by name in their batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
    /// Ruby Chore's line: `[<time> (<pid>)] <SEVERITY> : <message>`.
    Ruby,
}

/// Where a queue lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Filesystem,
    Sqs,
}

/// How a handler command is run for a batch (see docs/handlers.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HandlerMode {
    /// One process per message: body on stdin, outcome in the exit status.
    Message,
    /// One process per batch: JSON Lines in, one result line per message out.
    Batch,
    /// A long-lived preloader forks a child per batch, which speaks batch mode
    /// (docs/handlers.md, "Preloaded mode").
    Preload,
}

/// A preloaded handler's lifecycle settings, and (filled in by the master for each batch)
/// where its ready preloader listens.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Preload {
    /// Recycle after this many batches.
    pub max_batches: Option<u64>,
    /// Recycle after this long.
    pub max_age: Option<Duration>,
    /// Recycle when the resident memory passes this many bytes.
    pub max_memory: Option<u64>,
    /// How long it may take to become ready.
    pub boot_timeout: Duration,
    /// The ready preloader's socket, for the worker; None in the configuration.
    #[serde(default)]
    pub socket: Option<PathBuf>,
}

/// A command that runs jobs. No shell stands between chore and it: `command` is the argv.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Handler {
    pub command: Vec<String>,
    pub mode: HandlerMode,
    /// Extra environment variables for the command.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory of the command (defaults to the Chorefile's directory).
    pub dir: Option<PathBuf>,
    /// `mode = "preload"`: the preloader's settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preload: Option<Preload>,
}

/// An application that takes one POST per message, as Elastic Beanstalk's SQS daemon
/// sends them (docs/elastic-beanstalk.md). Read by `config::http`.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpTarget {
    /// `http://host:port/path`, as posted to.
    pub url: String,
    pub host: String,
    pub port: u16,
    /// The path (and query) ordinary messages are posted to.
    pub path: String,
    pub mime_type: String,
    pub user_agent: String,
    pub connect_timeout: Duration,
    /// No response byte for this long aborts the request.
    pub inactivity_timeout: Duration,
    /// Most requests in flight to this target.
    pub connections: usize,
    /// How long a message that did not get a 200 stays hidden (the `sqsd` retry rule).
    pub error_visibility_timeout: Duration,
    pub retry: HttpRetry,
    /// A message first received longer ago than this is deleted unposted.
    pub retention_period: Duration,
    pub health: HttpHealth,
    /// Also log non-200 results in the daemon's `http-err:` form.
    pub sqsd_log: bool,
}

/// What a message that did not get a 200 becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpRetry {
    /// The daemon's rule: retried after `error-visibility-timeout`, for ever (the queue's
    /// redrive policy ends it); no dead letter from chore.
    Sqsd,
    /// chore's rule: the queue's backoff and `max-attempts`, then the dead-letter queue.
    Chore,
}

/// How chore learns the application is up, so it receives only while it can post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpHealth {
    /// A TCP connect to the target's host and port.
    Tcp,
    /// A GET of this URL answering 2xx or 3xx.
    Url(String),
    Off,
}

/// One declared queue, resolved.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// The name it was declared under (`[queues.NAME]`), unprefixed.
    pub name: String,
    /// `queue-prefix` + name: the name on disk or in SQS.
    pub full_name: String,
    pub backend: Backend,
    /// The queue's handler, used for bodies with no class or a class not in `classes`.
    pub handler: Option<Handler>,
    /// Handlers by Ruby Chore job class (docs/decisions/0008-message-bodies-are-json.md).
    /// Empty means no routing.
    pub classes: BTreeMap<String, Handler>,
    /// The queue's HTTP handler, when its `handler` is one (then `handler` is None).
    pub http: Option<Arc<HttpTarget>>,
    /// HTTP handlers by job class; a class is in `classes` or here, never both.
    pub http_classes: BTreeMap<String, Arc<HttpTarget>>,
    /// Periodic tasks from the queue's `cron-file`.
    pub cron: Option<Arc<CronTable>>,
    /// How long one message may run; None = ask the backend (config/timeout, default).
    pub timeout: Option<Duration>,
    pub backoff: Backoff,
    /// None = unlimited.
    pub max_attempts: Option<u32>,
    /// SQS: the queue's URL, when given instead of looking the name up.
    pub url: Option<String>,
    /// SQS: creation, long-poll wait and dead-letter queue.
    pub sqs: crate::config::SqsQueueOptions,
    /// Let this queue's workers see the AWS credentials in the environment.
    pub pass_aws_credentials: bool,
    /// The most data memory (RLIMIT_DATA, bytes) each handler process may use.
    pub memory_limit: Option<u64>,
    /// A command told about each message that is dead-lettered (body on stdin).
    pub on_permanent_failure: Option<Handler>,
    /// Catch duplicate deliveries through memcached (on by default for SQS queues).
    pub dedupe: bool,
    /// Dedupe on this top-level field of the body instead of the message id.
    pub dedupe_key: Option<String>,
}

/// Everything the master runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub concurrency: usize,
    pub batch_size: usize,
    pub batch_timeout: Duration,
    pub strict_batching: bool,
    pub threads_per_queue: usize,
    pub queue_polling_size: usize,
    pub consumer_sleep_interval: Duration,
    pub queue_prefix: String,
    pub default_queue_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub fs_queue_root: PathBuf,
    pub fs_claim_lease: Duration,
    /// How long a queue may wait with nothing started before the master is unhealthy
    /// (zero: never).
    pub stall_timeout: Duration,
    /// Where Prometheus metrics are served; None: off.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The control socket `chore status` asks, when given (else `control_path` chooses).
    pub control_socket: Option<PathBuf>,
    pub sqs: crate::config::SqsSettings,
    pub dedupe: crate::config::DedupeSettings,
    pub log_file: Option<PathBuf>,
    pub log_format: LogFormat,
    pub log_level: tracing::Level,
    /// One info line per completed message (`log-settlements`); retries and dead letters
    /// are logged either way.
    pub log_settlements: bool,
    /// Every declared queue (enqueue may name any of them).
    pub declared: Vec<QueueConfig>,
    /// Indexes into `declared` of the queues this run consumes (after --queues/--except).
    pub selected: Vec<usize>,
    /// The Chorefiles read, in order.
    pub files: Vec<PathBuf>,
    /// Ruby Chore options given that do nothing here (logged as ignored at start).
    pub ignored_options: Vec<&'static str>,
    /// Words of a Ruby-format Chorefile that are not options, `file:line: \`word\``
    /// (logged as ignored at start).
    pub ignored_words: Vec<String>,
}

impl Config {
    pub fn selected_queues(&self) -> impl Iterator<Item = &QueueConfig> {
        self.selected.iter().map(|&i| &self.declared[i])
    }
    pub fn queue(&self, name: &str) -> Option<&QueueConfig> {
        self.declared.iter().find(|q| q.name == name)
    }
    /// The control socket's path: `control-socket` when given, else
    /// `$RUNTIME_DIRECTORY/chore.sock` when systemd sets it (the first, when it names
    /// several), else `chore.sock` in the queue root.
    pub fn control_path(&self) -> PathBuf {
        if let Some(p) = &self.control_socket {
            return p.clone();
        }
        let runtime = std::env::var_os("RUNTIME_DIRECTORY");
        match runtime
            .as_ref()
            .and_then(|r| std::env::split_paths(r).next())
        {
            Some(dir) if !dir.as_os_str().is_empty() => dir.join("chore.sock"),
            _ => self.fs_queue_root.join("chore.sock"),
        }
    }
}

/// Resolve the command line, reading every Chorefile it names.
pub fn load(cli: Flags) -> Result<Config, ConfigErrors> {
    load_traced(cli).map(|l| l.config)
}

/// `load` for a command about to start: its mistakes on stderr, each a line; None then,
/// and the command exits 2 before anything starts.
pub fn load_or_say(cli: Flags) -> Option<Config> {
    load(cli).map_err(|e| eprintln!("chore: {e}")).ok()
}

/// A `Config`, and where each of its settings came from (for `check-config`).
struct Loaded {
    config: Config,
    settings: BTreeMap<&'static str, Setting>,
    tables: Vec<QueueTable>,
}

impl Loaded {
    /// The queue tables by name (one look-up per queue, not one scan: thousands of queues
    /// load in linear time).
    fn tables_by_name(&self) -> std::collections::HashMap<&str, &QueueTable> {
        self.tables.iter().map(|t| (t.name.as_str(), t)).collect()
    }
}

fn load_traced(cli: Flags) -> Result<Loaded, ConfigErrors> {
    let mut settings = BTreeMap::new();
    let mut tables: Vec<QueueTable> = Vec::new();
    // Where each name is in `tables`: merging is a look-up, not a scan.
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let (mut errors, mut unreadable) = (Vec::new(), false);
    let mut ignored_words = Vec::new();
    for file in &cli.config_file {
        let (layer, e) = chorefile::read(file);
        errors.extend(e);
        unreadable |= layer.unreadable;
        ignored_words.extend(layer.ignored_words);
        for (key, value, origin) in layer.options {
            set(&mut settings, key, value, origin);
        }
        for t in layer.queues {
            match index.get(&t.name) {
                // A queue declared in two files gets the keys of both, the later file
                // winning for a key set in both.
                Some(&i) => {
                    tables[i].keys.extend(t.keys);
                    tables[i].unknown.extend(t.unknown);
                }
                None => {
                    index.insert(t.name.clone(), tables.len());
                    tables.push(t);
                }
            }
        }
    }
    // Nothing more can be said of a configuration whose files could not all be read.
    if unreadable {
        return Err(ConfigErrors(errors));
    }
    // The command line's selection replaces the Chorefile's, whichever form each used.
    if cli.values.contains_key("queues") {
        settings.remove("except-queues");
    }
    if cli.values.contains_key("except-queues") {
        settings.remove("queues");
    }
    for (key, value) in cli.values {
        set(&mut settings, key, value, Origin::CommandLine);
    }
    let files = cli.config_file.clone();
    match resolve::resolve(&settings, &tables, cli.config_file) {
        Ok(config) if errors.is_empty() => Ok(Loaded {
            config: Config {
                ignored_words,
                ..config
            },
            settings,
            tables,
        }),
        result => {
            errors.extend(result.err().unwrap_or_default());
            Err(ConfigErrors::in_order(errors, &files))
        }
    }
}

/// Put a setting over what an earlier source said; `-v` counts add up instead.
fn set(
    settings: &mut BTreeMap<&'static str, Setting>,
    key: &'static str,
    value: Value,
    origin: Origin,
) {
    let value = match (key, &value, settings.get(key)) {
        (
            "verbose",
            Value::Count(n),
            Some(Setting {
                value: Value::Count(m),
                ..
            }),
        ) => Value::Count(n.saturating_add(*m)),
        _ => value,
    };
    settings.insert(key, Setting { value, origin });
}

#[cfg(test)]
mod tests;
