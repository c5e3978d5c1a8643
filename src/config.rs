//! Configuration: the Chorefile(s) and the command line, resolved into one `Config`.
//!
//! Precedence is defaults < Chorefile < command line (design decision 6). A Chorefile is
//! TOML, where every top-level key is a long flag name and `[queues.NAME]` tables declare
//! the queues; or Ruby Chore's own format (one `--flag value` per line), recognised by its
//! first meaningful character being `-`, read for the flags that still apply.
//!
//! Every mistake becomes one `ConfigError` line naming the file, the line and the key, and
//! the binary exits 2 before anything starts. Keys are deserialised one at a time so that a
//! bad value is always pinned to its own key and line.

use crate::backoff::Backoff;
use crate::cli::Flags;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration mistake, printed as a single line.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl ConfigError {
    pub fn new(message: impl Into<String>) -> Self {
        ConfigError {
            file: None,
            line: None,
            key: None,
            message: message.into(),
        }
    }
    fn at(file: &Path, line: Option<usize>, key: Option<&str>, message: impl Into<String>) -> Self {
        ConfigError {
            file: Some(file.to_path_buf()),
            line,
            key: key.map(str::to_owned),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
            }
            write!(f, ": ")?;
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

/// How a log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
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
    /// Handlers by Ruby Chore job class (design decision 5). Empty means no routing.
    pub classes: BTreeMap<String, Handler>,
    /// How long one message may run; None = ask the backend (config/timeout, default).
    pub timeout: Option<Duration>,
    pub backoff: Backoff,
    /// None = unlimited.
    pub max_attempts: Option<u32>,
    /// SQS: the queue's URL, when given instead of looking the name up.
    pub url: Option<String>,
    /// SQS: creation, long-poll wait and dead-letter queue.
    pub sqs: crate::queue::sqs::SqsQueueOptions,
    /// Let this queue's workers see the AWS credentials in the environment.
    pub pass_aws_credentials: bool,
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
    pub max_attempts: Option<u32>,
    pub default_queue_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub fs_queue_root: PathBuf,
    pub fs_claim_lease: Duration,
    pub sqs: crate::queue::sqs::SqsSettings,
    pub dedupe: crate::dedupe::DedupeSettings,
    pub log_file: Option<PathBuf>,
    pub log_format: LogFormat,
    pub log_level: tracing::Level,
    /// Every declared queue (enqueue may name any of them).
    pub declared: Vec<QueueConfig>,
    /// Indexes into `declared` of the queues this run consumes (after --queues/--except).
    pub selected: Vec<usize>,
    /// The Chorefiles read, in order.
    pub files: Vec<PathBuf>,
    /// Ruby Chore options given that do nothing here (logged as ignored at start).
    pub ignored_options: Vec<&'static str>,
}

impl Config {
    pub fn selected_queues(&self) -> impl Iterator<Item = &QueueConfig> {
        self.selected.iter().map(|&i| &self.declared[i])
    }
    pub fn queue(&self, name: &str) -> Option<&QueueConfig> {
        self.declared.iter().find(|q| q.name == name)
    }
}

/// The longest any duration setting may be (30 days): deadlines add timeouts up, and
/// absurd values must fail at start, not overflow a clock in production.
pub const MAX_SECONDS: f64 = 30.0 * 86_400.0;

pub const DEFAULT_CONCURRENCY: usize = 4;
pub const DEFAULT_BATCH_SIZE: usize = 50;
pub const DEFAULT_BATCH_TIMEOUT: f64 = 20.0;
pub const DEFAULT_QUEUE_TIMEOUT: f64 = 43_200.0;
pub const DEFAULT_SHUTDOWN_TIMEOUT: f64 = 120.0;
pub const DEFAULT_FS_ROOT: &str = "./chore-queues";
pub const DEFAULT_FS_CLAIM_LEASE: f64 = 60.0;

/// A queue table as written, before resolution. Each key is read on its own.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct QueueFile {
    backend: Option<String>,
    #[serde(skip)]
    handler: Option<Handler>,
    #[serde(skip)]
    classes: Option<BTreeMap<String, Handler>>,
    timeout: Option<f64>,
    #[serde(skip)]
    backoff: Option<Backoff>,
    max_attempts: Option<u32>,
    url: Option<String>,
    create: Option<bool>,
    wait_time: Option<f64>,
    dead_letter_queue: Option<String>,
    pass_aws_credentials: Option<bool>,
    #[serde(skip)]
    on_permanent_failure: Option<Handler>,
    dedupe: Option<bool>,
    dedupe_key: Option<String>,
}

/// What one Chorefile contributes.
#[derive(Debug, Default)]
struct FileContribution {
    flags: Flags,
    queues: Vec<(String, QueueFile, (PathBuf, Option<usize>))>,
}

/// Resolve the command line, reading every Chorefile it names.
pub fn load(cli: Flags) -> Result<Config, ConfigError> {
    let mut merged = Flags::default();
    let mut queues: Vec<(String, QueueFile, (PathBuf, Option<usize>))> = Vec::new();
    for file in &cli.config_file {
        let text = std::fs::read_to_string(file).map_err(|e| {
            ConfigError::at(file, None, None, format!("cannot read Chorefile: {e}"))
        })?;
        let contribution = parse_file(file, &text)?;
        merged.overlay(contribution.flags);
        for (name, q, dir) in contribution.queues {
            match queues.iter_mut().find(|(n, _, _)| *n == name) {
                Some(existing) => overlay_queue(&mut existing.1, q),
                None => queues.push((name, q, dir)),
            }
        }
    }
    let files = cli.config_file.clone();
    // The command line's selection replaces the Chorefile's, whichever form each used.
    if cli.queues.is_some() {
        merged.except_queues = None;
    }
    if cli.except_queues.is_some() {
        merged.queues = None;
    }
    merged.overlay(cli);
    resolve(merged, queues, files)
}

fn overlay_queue(base: &mut QueueFile, top: QueueFile) {
    macro_rules! take {
        ($($f:ident),*) => { $( if top.$f.is_some() { base.$f = top.$f; } )* };
    }
    take!(
        backend,
        handler,
        classes,
        timeout,
        backoff,
        max_attempts,
        url,
        create,
        wait_time,
        dead_letter_queue,
        pass_aws_credentials,
        on_permanent_failure,
        dedupe,
        dedupe_key
    );
}

fn parse_file(file: &Path, text: &str) -> Result<FileContribution, ConfigError> {
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'));
    if first.is_some_and(|l| l.starts_with('-')) {
        parse_ruby_file(file, text)
    } else {
        parse_toml_file(file, text)
    }
}

/// Ruby Chore's Chorefile: command-line options, one per line (or several on a line).
/// Each line is parsed on its own so that a mistake names its line.
fn parse_ruby_file(file: &Path, text: &str) -> Result<FileContribution, ConfigError> {
    use clap::Parser;
    #[derive(Parser)]
    #[command(
        name = "chore",
        no_binary_name = true,
        disable_help_flag = true,
        disable_version_flag = true
    )]
    struct Line {
        #[command(flatten)]
        flags: Flags,
    }
    let mut flags = Flags::default();
    for (n, line) in text.lines().enumerate() {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        if tokens.is_empty() || tokens[0].starts_with('#') {
            continue;
        }
        if line.contains("<%") {
            return Err(ConfigError::at(
                file,
                Some(n + 1),
                None,
                "ERB templates are not supported; expand the file before starting chore",
            ));
        }
        let parsed = Line::try_parse_from(&tokens).map_err(|e| {
            let msg = e.to_string();
            let first = msg
                .lines()
                .next()
                .unwrap_or("invalid option")
                .trim_start_matches("error: ");
            ConfigError::at(
                file,
                Some(n + 1),
                Some(tokens[0].trim_start_matches('-')),
                first.to_string(),
            )
        })?;
        if !parsed.flags.config_file.is_empty() {
            return Err(ConfigError::at(
                file,
                Some(n + 1),
                Some("config-file"),
                "a Chorefile cannot name another Chorefile",
            ));
        }
        check_flags(&parsed.flags)
            .map_err(|(key, m)| ConfigError::at(file, Some(n + 1), Some(key), m))?;
        flags.overlay(parsed.flags);
    }
    Ok(FileContribution {
        flags,
        queues: Vec::new(),
    })
}

fn parse_toml_file(file: &Path, text: &str) -> Result<FileContribution, ConfigError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of_offset(text, s.start));
        ConfigError::at(file, line, None, e.message().to_string())
    })?;
    // Absolute, so that handlers find their programs whatever directory they run in.
    let dir = std::path::absolute(file)
        .ok()
        .and_then(|f| f.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    let mut out = FileContribution::default();
    for (key, value) in table {
        if key == "queues" {
            let toml::Value::Table(queues) = value else {
                return Err(ConfigError::at(
                    file,
                    locate(text, None, "queues"),
                    Some("queues"),
                    "declare queues as [queues.NAME] tables; choose among them with --queues on the command line",
                ));
            };
            for (name, q) in queues {
                let section = format!("queues.{name}");
                let toml::Value::Table(q) = q else {
                    return Err(ConfigError::at(
                        file,
                        locate(text, None, &section),
                        Some(&section),
                        "a queue must be a table",
                    ));
                };
                out.queues.push((
                    name.clone(),
                    parse_queue(file, text, &section, q, &dir)?,
                    (file.to_path_buf(), header_line(text, &name)),
                ));
            }
            continue;
        }
        let line = locate(text, None, &key);
        let flags = flag_from_toml(&key, value)
            .and_then(|f| check_flags(&f).map(|()| f).map_err(|(_, m)| m))
            .map_err(|m| ConfigError::at(file, line, Some(&key), m))?;
        out.flags.overlay(flags);
    }
    Ok(out)
}

/// Deserialise one top-level key as the flag of the same name.
fn flag_from_toml(key: &str, value: toml::Value) -> Result<Flags, String> {
    let mut f = Flags::default();
    fn num(v: &toml::Value) -> Result<f64, String> {
        match v {
            toml::Value::Integer(i) => Ok(*i as f64),
            toml::Value::Float(x) => Ok(*x),
            other => Err(format!(
                "expected a number of seconds, found {}",
                other.type_str()
            )),
        }
    }
    fn count<T: TryFrom<i64>>(v: &toml::Value) -> Result<T, String> {
        match v {
            toml::Value::Integer(i) => T::try_from(*i).map_err(|_| format!("{i} is out of range")),
            other => Err(format!(
                "expected a whole number, found {}",
                other.type_str()
            )),
        }
    }
    fn string(v: &toml::Value) -> Result<String, String> {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("expected a string, found {}", v.type_str()))
    }
    fn names(v: &toml::Value) -> Result<Vec<String>, String> {
        match v {
            toml::Value::String(s) => Ok(s.split(',').map(|s| s.trim().to_owned()).collect()),
            toml::Value::Array(a) => a.iter().map(string).collect(),
            other => Err(format!(
                "expected a list of queue names, found {}",
                other.type_str()
            )),
        }
    }
    match key {
        "concurrency" => f.concurrency = Some(count(&value)?),
        "batch-size" => f.batch_size = Some(count(&value)?),
        "batch-timeout" => f.batch_timeout = Some(num(&value)?),
        "strict-batching" => {
            f.strict_batching = Some(
                value
                    .as_bool()
                    .ok_or_else(|| format!("expected true or false, found {}", value.type_str()))?,
            )
        }
        "threads-per-queue" => f.threads_per_queue = Some(count(&value)?),
        "queue-polling-size" => f.queue_polling_size = Some(count(&value)?),
        "consumer-sleep-interval" => f.consumer_sleep_interval = Some(num(&value)?),
        "queue-prefix" => f.queue_prefix = Some(string(&value)?),
        "max-attempts" => f.max_attempts = Some(count(&value)?),
        "default-queue-timeout" => f.default_queue_timeout = Some(num(&value)?),
        "shutdown-timeout" => f.shutdown_timeout = Some(num(&value)?),
        "fs-queue-root" => f.fs_queue_root = Some(PathBuf::from(string(&value)?)),
        "fs-claim-lease" => f.fs_claim_lease = Some(num(&value)?),
        "except-queues" | "except" => f.except_queues = Some(names(&value)?),
        "log-file" => f.log_file = Some(PathBuf::from(string(&value)?)),
        "sqs-endpoint" => f.sqs_endpoint = Some(string(&value)?),
        "dedupe-servers" => f.dedupe_servers = Some(names(&value)?.join(",")),
        "dupe-on-cache-failure" => {
            f.dupe_on_cache_failure = Some(
                value
                    .as_bool()
                    .ok_or_else(|| format!("expected true or false, found {}", value.type_str()))?,
            )
        }
        "dedupe-prefix" => f.dedupe_prefix = Some(string(&value)?),
        "aws-region" => f.aws_region = Some(string(&value)?),
        "aws-access-key" => f.aws_access_key = Some(string(&value)?),
        "aws-secret-key" => f.aws_secret_key = Some(string(&value)?),
        "log-format" => f.log_format = Some(string(&value)?),
        "log-level" => f.log_level = Some(string(&value)?),
        "verbose" => f.verbose = count(&value)?,
        "config-file" => return Err("a Chorefile cannot name another Chorefile".into()),
        _ => {
            let hint = match key.replace('_', "-").as_str() {
                k if k != key && flag_from_toml(k, value.clone()).is_ok() => {
                    format!(" (did you mean `{k}`?)")
                }
                _ => String::new(),
            };
            return Err(format!("unknown key{hint}"));
        }
    }
    Ok(f)
}

fn parse_queue(
    file: &Path,
    text: &str,
    section: &str,
    table: toml::Table,
    chorefile_dir: &Path,
) -> Result<QueueFile, ConfigError> {
    let mut q = QueueFile::default();
    for (key, value) in table {
        let line = locate(text, Some(section), &key);
        let err = |m: String| ConfigError::at(file, line, Some(&format!("{section}.{key}")), m);
        match key.as_str() {
            "handler" => q.handler = Some(parse_handler(&value, chorefile_dir).map_err(err)?),
            "classes" => {
                let toml::Value::Table(classes) = value else {
                    return Err(err("expected a table of class = handler".into()));
                };
                let mut map = BTreeMap::new();
                for (class, h) in classes {
                    let line = locate(text, Some(&format!("{section}.classes")), &class).or(line);
                    let h = parse_handler(&h, chorefile_dir).map_err(|m| {
                        ConfigError::at(file, line, Some(&format!("{section}.classes.{class}")), m)
                    })?;
                    map.insert(class, h);
                }
                q.classes = Some(map);
            }
            "backoff" => q.backoff = Some(Backoff::from_toml(&value).map_err(err)?),
            "on-permanent-failure" => {
                q.on_permanent_failure = Some(parse_handler(&value, chorefile_dir).map_err(err)?)
            }
            _ => {
                let mut one = toml::Table::new();
                one.insert(key.clone(), value);
                let parsed: QueueFile = one.try_into().map_err(|e: toml::de::Error| {
                    let m = e.message().to_string();
                    err(if m.starts_with("unknown field") {
                        "unknown key".into()
                    } else {
                        m
                    })
                })?;
                check_queue(&parsed).map_err(err)?;
                overlay_queue(&mut q, parsed);
            }
        }
    }
    Ok(q)
}

/// `handler = ["cmd", "arg"]` (per-message mode) or
/// `handler = { command = [...], mode = "batch", env = {...}, dir = "..." }`.
fn parse_handler(value: &toml::Value, chorefile_dir: &Path) -> Result<Handler, String> {
    fn argv(v: &toml::Value) -> Result<Vec<String>, String> {
        let toml::Value::Array(items) = v else {
            return Err(format!(
                "expected the command as a list of strings (argv; no shell is used), found {}",
                v.type_str()
            ));
        };
        let argv: Vec<String> = items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .ok_or("every element of the command must be a string")
            })
            .collect::<Result<_, _>>()?;
        if argv.is_empty() {
            return Err("the command is empty".into());
        }
        Ok(argv)
    }
    let mut h = Handler {
        command: Vec::new(),
        mode: HandlerMode::Message,
        env: BTreeMap::new(),
        dir: None,
    };
    match value {
        toml::Value::Array(_) => h.command = argv(value)?,
        toml::Value::Table(t) => {
            for (k, v) in t {
                match k.as_str() {
                    "command" => h.command = argv(v)?,
                    "mode" => {
                        h.mode = match v.as_str() {
                            Some("message") => HandlerMode::Message,
                            Some("batch") => HandlerMode::Batch,
                            _ => {
                                return Err(format!(
                                    "mode must be \"message\" or \"batch\", found {v}"
                                ));
                            }
                        }
                    }
                    "env" => {
                        let toml::Value::Table(env) = v else {
                            return Err("env must be a table of strings".into());
                        };
                        for (name, val) in env {
                            let val = val
                                .as_str()
                                .ok_or_else(|| format!("env.{name} must be a string"))?;
                            h.env.insert(name.clone(), val.to_owned());
                        }
                    }
                    "dir" => h.dir = Some(PathBuf::from(v.as_str().ok_or("dir must be a string")?)),
                    other => {
                        return Err(format!(
                            "unknown handler key `{other}` (known: command, mode, env, dir)"
                        ));
                    }
                }
            }
            if h.command.is_empty() {
                return Err("the handler table needs a command".into());
            }
        }
        other => {
            return Err(format!(
                "expected the command as a list of strings (argv; no shell is used) or a handler table, found {}",
                other.type_str()
            ));
        }
    }
    // Relative directories are relative to the Chorefile, as is the default.
    h.dir = Some(match h.dir.take() {
        Some(d) if d.is_absolute() => d,
        Some(d) => chorefile_dir.join(d),
        None => chorefile_dir.to_path_buf(),
    });
    Ok(h)
}

/// Values that parse but make no sense, caught where they are written (a Chorefile line,
/// or the command line in `resolve`). Returns the offending key and why.
fn check_flags(f: &Flags) -> Result<(), (&'static str, String)> {
    let at_least_one = [
        ("concurrency", f.concurrency),
        ("batch-size", f.batch_size),
        ("threads-per-queue", f.threads_per_queue),
        ("queue-polling-size", f.queue_polling_size),
        ("max-attempts", f.max_attempts.map(|m| m as usize)),
    ];
    for (key, v) in at_least_one {
        if v == Some(0) {
            return Err((key, "must be at least 1".into()));
        }
    }
    let seconds = [
        ("batch-timeout", f.batch_timeout, 0.0),
        ("consumer-sleep-interval", f.consumer_sleep_interval, 0.0),
        ("shutdown-timeout", f.shutdown_timeout, 0.0),
        (
            "default-queue-timeout",
            f.default_queue_timeout,
            f64::MIN_POSITIVE,
        ),
        ("fs-claim-lease", f.fs_claim_lease, 2.0),
    ];
    for (key, v, min) in seconds {
        if let Some(v) = v
            && v > MAX_SECONDS
        {
            return Err((key, format!("{v} is more than 30 days")));
        }
        if let Some(v) = v
            && (Duration::try_from_secs_f64(v).is_err() || v < min)
        {
            let floor = if min >= 1.0 {
                format!("at least {min} seconds")
            } else {
                "a number of seconds ≥ 0".into()
            };
            let floor = if min > 0.0 && min < 1.0 {
                "more than 0 seconds".into()
            } else {
                floor
            };
            return Err((key, format!("{v} is not valid: must be {floor}")));
        }
    }
    if let Some(fmt) = f
        .log_format
        .as_deref()
        .filter(|f| !["text", "json"].contains(f))
    {
        return Err(("log-format", format!("`{fmt}` is not text or json")));
    }
    if let Some(level) = &f.log_level
        && !["error", "warn", "warning", "info", "debug", "trace"]
            .contains(&level.to_ascii_lowercase().as_str())
    {
        return Err((
            "log-level",
            format!("`{level}` is not one of error, warn, info, debug, trace"),
        ));
    }
    Ok(())
}

/// The same for one key of a queue table.
fn check_queue(q: &QueueFile) -> Result<(), String> {
    if q.max_attempts == Some(0) {
        return Err("must be at least 1".into());
    }
    if let Some(t) = q.timeout
        && !(t > 0.0 && t <= MAX_SECONDS)
    {
        return Err(format!(
            "{t} must be more than 0 seconds and at most 30 days"
        ));
    }
    if let Some(w) = q.wait_time
        && !(0.0..=20.0).contains(&w)
    {
        return Err(format!(
            "{w} is not a long-poll wait between 0 and 20 seconds"
        ));
    }
    if let Some(b) = q.backend.as_deref()
        && !["filesystem", "fs", "sqs"].contains(&b)
    {
        return Err(format!("unknown backend `{b}` (known: filesystem, sqs)"));
    }
    Ok(())
}

fn resolve(
    flags: Flags,
    queues: Vec<(String, QueueFile, (PathBuf, Option<usize>))>,
    files: Vec<PathBuf>,
) -> Result<Config, ConfigError> {
    let positive = |name: &str, v: Option<usize>, d: usize| -> Result<usize, ConfigError> {
        match v.unwrap_or(d) {
            0 => Err(ConfigError {
                key: Some(name.into()),
                ..ConfigError::new("must be at least 1")
            }),
            n => Ok(n),
        }
    };
    let seconds = |name: &str, v: Option<f64>, d: f64| -> Result<Duration, ConfigError> {
        let s = v.unwrap_or(d);
        Duration::try_from_secs_f64(s).map_err(|_| ConfigError {
            key: Some(name.into()),
            ..ConfigError::new(format!("{s} is not a number of seconds ≥ 0"))
        })
    };
    check_flags(&flags).map_err(|(key, m)| ConfigError {
        key: Some(key.into()),
        ..ConfigError::new(m)
    })?;
    let queue_polling_size = positive("queue-polling-size", flags.queue_polling_size, 10)?;
    let max_attempts = match flags.max_attempts {
        Some(0) => {
            return Err(ConfigError {
                key: Some("max-attempts".into()),
                ..ConfigError::new("must be at least 1")
            });
        }
        m => m,
    };
    let log_format = match flags.log_format.as_deref().unwrap_or("text") {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Err(ConfigError {
                key: Some("log-format".into()),
                ..ConfigError::new(format!("`{other}` is not text or json"))
            });
        }
    };
    let base_level = match flags
        .log_level
        .as_deref()
        .unwrap_or("info")
        .to_ascii_lowercase()
        .as_str()
    {
        "error" => 0,
        "warn" | "warning" => 1,
        "info" => 2,
        "debug" => 3,
        "trace" => 4,
        other => {
            return Err(ConfigError {
                key: Some("log-level".into()),
                ..ConfigError::new(format!(
                    "`{other}` is not one of error, warn, info, debug, trace"
                ))
            });
        }
    };
    let log_level = match (base_level + flags.verbose as usize).min(4) {
        0 => tracing::Level::ERROR,
        1 => tracing::Level::WARN,
        2 => tracing::Level::INFO,
        3 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    // Ruby Chore lower-cases the prefix (reference §1.2); so do we, so both find one queue.
    let queue_prefix = flags
        .queue_prefix
        .clone()
        .unwrap_or_default()
        .to_lowercase();
    let default_max = max_attempts;

    let mut declared = Vec::new();
    for (name, q, origin) in queues {
        // Problems found here span keys: point at the queue's table.
        let resolved = (|| -> Result<QueueConfig, ConfigError> {
        let err = |key: &str, m: String| ConfigError {
            key: Some(format!("queues.{name}.{key}")),
            ..ConfigError::new(m)
        };
        let backend = match q.backend.as_deref().unwrap_or("filesystem") {
            "filesystem" | "fs" => Backend::Filesystem,
            "sqs" => Backend::Sqs,
            other => {
                return Err(err(
                    "backend",
                    format!("unknown backend `{other}` (known: filesystem, sqs)"),
                ));
            }
        };
        match backend {
            Backend::Filesystem => {
                // The prefix is part of every file name too.
                let full = format!("{queue_prefix}{name}");
                if name.is_empty() || full.contains(['.', '/']) || full.starts_with('-') {
                    return Err(ConfigError {
                        key: Some(format!("queues.{name}")),
                        ..ConfigError::new(
                            "a filesystem queue name (with its queue-prefix) may not be empty, start with `-`, or contain `.` or `/` (Ruby Chore's file names split on `.`)",
                        )
                    });
                }
                for (key, set) in [
                    ("url", q.url.is_some()),
                    ("create", q.create.is_some()),
                    ("wait-time", q.wait_time.is_some()),
                    ("dead-letter-queue", q.dead_letter_queue.is_some()),
                ] {
                    if set {
                        return Err(err(
                            key,
                            "only SQS queues (backend = \"sqs\") take this key".into(),
                        ));
                    }
                }
            }
            Backend::Sqs => {
                let ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
                let stem = name.strip_suffix(".fifo").unwrap_or(&name);
                if q.url.is_none() && (stem.is_empty() || !stem.chars().all(ok) || name.len() > 80)
                {
                    return Err(ConfigError {
                        key: Some(format!("queues.{name}")),
                        ..ConfigError::new(
                            "an SQS queue name has 1 to 80 letters, digits, `-` or `_` (and may end in `.fifo`); or give its `url`",
                        )
                    });
                }
            }
        }
        let wait = match q.wait_time {
            None => None,
            Some(w) if (0.0..=20.0).contains(&w) => Some(Duration::from_secs_f64(w)),
            Some(w) => {
                return Err(err(
                    "wait-time",
                    format!("{w} is not a long-poll wait between 0 and 20 seconds"),
                ));
            }
        };
        let timeout = match q.timeout {
            None => None,
            Some(t) if t > 0.0 => Some(
                Duration::try_from_secs_f64(t)
                    .map_err(|_| err("timeout", format!("{t} is not a number of seconds")))?,
            ),
            Some(t) => return Err(err("timeout", format!("{t} must be more than 0 seconds"))),
        };
        let classes = q.classes.unwrap_or_default();
        if q.handler.is_none() && classes.is_empty() {
            return Err(ConfigError {
                key: Some(format!("queues.{name}")),
                ..ConfigError::new(
                    "the queue has no handler (set `handler`, or `classes` to route by job class)",
                )
            });
        }
        if q.max_attempts == Some(0) {
            return Err(err("max-attempts", "must be at least 1".into()));
        }
        let dedupe = match (q.dedupe, &q.dedupe_key) {
            (Some(false), Some(_)) => {
                return Err(err("dedupe-key", "a dedupe key needs dedupe; remove `dedupe = false`".into()));
            }
            (d, key) => d.unwrap_or(backend == Backend::Sqs) || key.is_some(),
        };
        Ok(QueueConfig {
            full_name: format!("{queue_prefix}{name}"),
            name,
            backend,
            handler: q.handler,
            classes,
            timeout,
            backoff: q.backoff.unwrap_or_default(),
            max_attempts: q.max_attempts.or(default_max),
            url: q.url,
            sqs: crate::queue::sqs::SqsQueueOptions {
                create: q.create.unwrap_or(false),
                wait,
                dead_letter_queue: q.dead_letter_queue,
            },
            pass_aws_credentials: q.pass_aws_credentials.unwrap_or(false),
            on_permanent_failure: q.on_permanent_failure,
            dedupe,
            dedupe_key: q.dedupe_key,
        })
        })()
        .map_err(|mut e| {
            if e.file.is_none() {
                e.file = Some(origin.0.clone());
                e.line = origin.1;
            }
            e
        })?;
        declared.push(resolved);
    }

    let selected = select_queues(
        &declared,
        flags.queues.as_deref(),
        flags.except_queues.as_deref(),
    )?;

    Ok(Config {
        concurrency: positive("concurrency", flags.concurrency, DEFAULT_CONCURRENCY)?,
        batch_size: positive("batch-size", flags.batch_size, DEFAULT_BATCH_SIZE)?,
        batch_timeout: seconds("batch-timeout", flags.batch_timeout, DEFAULT_BATCH_TIMEOUT)?,
        strict_batching: flags.strict_batching.unwrap_or(false),
        threads_per_queue: positive("threads-per-queue", flags.threads_per_queue, 1)?,
        queue_polling_size,
        consumer_sleep_interval: seconds(
            "consumer-sleep-interval",
            flags.consumer_sleep_interval,
            1.0,
        )?,
        queue_prefix,
        max_attempts,
        default_queue_timeout: match seconds(
            "default-queue-timeout",
            flags.default_queue_timeout,
            DEFAULT_QUEUE_TIMEOUT,
        )? {
            d if d.is_zero() => {
                return Err(ConfigError {
                    key: Some("default-queue-timeout".into()),
                    ..ConfigError::new("must be more than 0")
                });
            }
            d => d,
        },
        shutdown_timeout: seconds(
            "shutdown-timeout",
            flags.shutdown_timeout,
            DEFAULT_SHUTDOWN_TIMEOUT,
        )?,
        fs_queue_root: flags
            .fs_queue_root
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_FS_ROOT)),
        fs_claim_lease: match seconds(
            "fs-claim-lease",
            flags.fs_claim_lease,
            DEFAULT_FS_CLAIM_LEASE,
        )? {
            d if d < Duration::from_secs(2) => {
                return Err(ConfigError {
                    key: Some("fs-claim-lease".into()),
                    ..ConfigError::new("must be at least 2 seconds")
                });
            }
            d => d,
        },
        sqs: crate::queue::sqs::SqsSettings {
            endpoint: flags.sqs_endpoint.clone(),
            region: flags.aws_region.clone(),
            credentials: match (&flags.aws_access_key, &flags.aws_secret_key) {
                (Some(k), Some(s)) => Some((k.clone(), s.clone())),
                (None, None) => None,
                _ => {
                    return Err(ConfigError {
                        key: Some("aws-access-key".into()),
                        ..ConfigError::new(
                            "give both --aws-access-key and --aws-secret-key, or neither",
                        )
                    });
                }
            },
        },
        dedupe: crate::dedupe::DedupeSettings {
            servers: match flags.dedupe_servers.as_deref() {
                Some(list) => {
                    let servers: Vec<String> = list
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect();
                    if servers.is_empty() {
                        return Err(ConfigError {
                            key: Some("dedupe-servers".into()),
                            ..ConfigError::new("no server given")
                        });
                    }
                    servers
                }
                // Dalli's own fallback, then its default.
                None => match std::env::var("MEMCACHE_SERVERS") {
                    Ok(list) if !list.trim().is_empty() => list
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect(),
                    _ => vec!["localhost:11211".into()],
                },
            },
            dupe_on_cache_failure: flags.dupe_on_cache_failure.unwrap_or(false),
            prefix: flags.dedupe_prefix.clone().unwrap_or_default(),
        },
        log_file: flags.log_file.clone(),
        log_format,
        log_level,
        declared,
        selected,
        files,
        ignored_options: flags.ignored_ruby_options(),
    })
}

/// Apply `--queues` / `--except-queues` (both take unprefixed names, as in Ruby Chore).
fn select_queues(
    declared: &[QueueConfig],
    only: Option<&[String]>,
    except: Option<&[String]>,
) -> Result<Vec<usize>, ConfigError> {
    let known = |n: &String, flag: &str| -> Result<usize, ConfigError> {
        declared
            .iter()
            .position(|q| &q.name == n)
            .ok_or_else(|| ConfigError {
                key: Some(flag.into()),
                ..ConfigError::new(format!(
                    "unknown queue `{n}` (declared: {})",
                    if declared.is_empty() {
                        "none".to_string()
                    } else {
                        declared
                            .iter()
                            .map(|q| q.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ))
            })
    };
    let mut selected: Vec<usize> = match (only, except) {
        (Some(_), Some(_)) => {
            return Err(ConfigError {
                key: Some("queues".into()),
                ..ConfigError::new("cannot specify both --queues and --except-queues")
            });
        }
        (Some(only), None) => {
            let mut v = Vec::new();
            for n in only.iter().filter(|n| !n.is_empty()) {
                let i = known(n, "queues")?;
                if !v.contains(&i) {
                    v.push(i);
                }
            }
            v
        }
        (None, except) => {
            let mut skip = Vec::new();
            for n in except.unwrap_or_default().iter().filter(|n| !n.is_empty()) {
                skip.push(known(n, "except-queues")?);
            }
            (0..declared.len()).filter(|i| !skip.contains(i)).collect()
        }
    };
    selected.sort_unstable();
    Ok(selected)
}

/// The line of a queue's `[queues.NAME]` header (or of its first key, when it is
/// written inline).
fn header_line(text: &str, name: &str) -> Option<usize> {
    let plain = |l: &str| l.replace(['"', '\'', ' '], "");
    text.lines()
        .position(|l| {
            plain(l) == format!("[queues.{name}]")
                || plain(l).starts_with(&format!("queues.{name}."))
        })
        .map(|n| n + 1)
}

/// 1-based line of a byte offset.
fn line_of_offset(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Best-effort line of `key` inside `[section]` (or at the top level): good enough to point
/// an operator at the right line, which is all it is used for.
fn locate(text: &str, section: Option<&str>, key: &str) -> Option<usize> {
    let mut current: Option<String> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with('[') {
            let header = line
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim();
            current = Some(header.replace(['"', '\'', ' '], ""));
            // `[queues.NAME]` itself is where a whole-table problem is.
            if section.is_some_and(|s| s == key || s.ends_with(&format!(".{key}")))
                && current.as_deref() == section
            {
                return Some(n + 1);
            }
            continue;
        }
        let Some((lhs, _)) = line.split_once('=') else {
            continue;
        };
        let lhs = lhs.trim().replace(['"', '\'', ' '], "");
        let full = match &current {
            Some(c) => format!("{c}.{lhs}"),
            None => lhs.clone(),
        };
        let want = match section {
            Some(s) => format!("{s}.{key}"),
            None => key.to_string(),
        };
        if full == want || (current.is_none() && section.is_none() && lhs == key) {
            return Some(n + 1);
        }
        // `queues.NAME.key = ...` or `[queues]` + `NAME.key = ...` forms.
        if full.ends_with(&want)
            && full.len() > want.len()
            && full.as_bytes()[full.len() - want.len() - 1] == b'.'
        {
            return Some(n + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str, cli: Flags) -> Result<Config, ConfigError> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("chore-config-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("Chorefile");
        std::fs::write(&file, text).unwrap();
        let mut flags = cli;
        flags.config_file = vec![file];
        load(flags)
    }

    const BASIC: &str = r#"
concurrency = 3
batch-timeout = 0.5

[queues.mail]
handler = ["./send.sh", "--fast"]
backoff = "min(2 ^ attempt, 900)"
max-attempts = 5

[queues.report]
handler = { command = ["report"], mode = "batch" }
timeout = 30
"#;

    #[test]
    fn file_beats_defaults_and_flags_beat_file() {
        let c = load_text(BASIC, Flags::default()).unwrap();
        assert_eq!(c.concurrency, 3);
        assert_eq!(c.batch_size, DEFAULT_BATCH_SIZE);
        assert_eq!(c.batch_timeout, Duration::from_millis(500));
        let c = load_text(
            BASIC,
            Flags {
                concurrency: Some(9),
                ..Flags::default()
            },
        )
        .unwrap();
        assert_eq!(c.concurrency, 9);
        assert_eq!(c.declared.len(), 2);
        let mail = c.queue("mail").unwrap();
        assert_eq!(mail.max_attempts, Some(5));
        assert_eq!(mail.handler.as_ref().unwrap().mode, HandlerMode::Message);
        assert_eq!(
            c.queue("report").unwrap().handler.as_ref().unwrap().mode,
            HandlerMode::Batch
        );
        assert_eq!(
            c.queue("report").unwrap().timeout,
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = load_text("concurrency = 2\nconcurency = 3\n", Flags::default()).unwrap_err();
        assert_eq!(e.line, Some(2));
        assert_eq!(e.key.as_deref(), Some("concurency"));
        let shown = e.to_string();
        assert!(
            shown.contains("Chorefile:2: key `concurency`: unknown key"),
            "{shown}"
        );
        assert!(!shown.contains('\n'));
    }

    #[test]
    fn bad_value_in_queue_table_is_pinned_to_its_line() {
        let text = "[queues.a]\nhandler = [\"x\"]\nbackoff = \"attempt ^^ 2\"\n";
        let e = load_text(text, Flags::default()).unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert_eq!(e.key.as_deref(), Some("queues.a.backoff"));
        let e = load_text("[queues.a]\nhandler = \"x y\"\n", Flags::default()).unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("list of strings"));
        let e = load_text(
            "[queues.a]\nhandler = [\"x\"]\ntimeout = \"soon\"\n",
            Flags::default(),
        )
        .unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        let e = load_text(
            "[queues.a]\nhandler = [\"x\"]\nretries = 3\n",
            Flags::default(),
        )
        .unwrap_err();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(3), Some("queues.a.retries")),
            "{e}"
        );
    }

    #[test]
    fn toml_syntax_error_has_a_line() {
        let e = load_text("concurrency = 2\n[queues.a\n", Flags::default()).unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
    }

    #[test]
    fn queues_and_except_are_exclusive_and_checked() {
        let both = Flags {
            queues: Some(vec!["mail".into()]),
            except_queues: Some(vec!["report".into()]),
            ..Flags::default()
        };
        assert!(load_text(BASIC, both).unwrap_err().message.contains("both"));
        let unknown = Flags {
            queues: Some(vec!["nope".into()]),
            ..Flags::default()
        };
        assert!(
            load_text(BASIC, unknown)
                .unwrap_err()
                .message
                .contains("unknown queue `nope`")
        );
        let except = Flags {
            except_queues: Some(vec!["mail".into()]),
            ..Flags::default()
        };
        let c = load_text(BASIC, except).unwrap();
        assert_eq!(
            c.selected_queues()
                .map(|q| q.name.as_str())
                .collect::<Vec<_>>(),
            ["report"]
        );
    }

    #[test]
    fn ruby_chorefile_is_read() {
        let text = "--concurrency 7\n--batch-size=20\n--queue_polling_size 5\n--queue-prefix Staging_\n-v\n--require ./app.rb\n";
        let c = load_text(text, Flags::default()).unwrap();
        assert_eq!(
            (c.concurrency, c.batch_size, c.queue_polling_size),
            (7, 20, 5)
        );
        assert_eq!(c.queue_prefix, "staging_");
        assert_eq!(c.log_level, tracing::Level::DEBUG);
        assert_eq!(c.ignored_options, vec!["--require"]);
        let e = load_text("--concurrency 2\n--frobnicate 3\n", Flags::default()).unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        let e = load_text("--concurrency many\n", Flags::default()).unwrap_err();
        assert_eq!(e.line, Some(1), "{e}");
    }

    #[test]
    fn queue_prefix_applies_to_full_name() {
        let c = load_text(
            BASIC,
            Flags {
                queue_prefix: Some("Prod-".into()),
                ..Flags::default()
            },
        )
        .unwrap();
        assert_eq!(c.queue("mail").unwrap().full_name, "prod-mail");
    }

    #[test]
    fn handler_dir_defaults_to_chorefile_dir() {
        let c = load_text(BASIC, Flags::default()).unwrap();
        let h = c.queue("mail").unwrap().handler.clone().unwrap();
        assert_eq!(h.dir.as_deref(), c.files[0].parent());
    }
}
