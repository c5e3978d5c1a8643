//! The command line: what the operator typed, before any file is read.
//!
//! Every long flag here is also a top-level key of the TOML Chorefile (design decision 6),
//! so `Flags` holds only `Option`s: `config` merges flags over the file over the defaults.
//! Ruby Chore's spellings (`--except`, `--queue_polling_size`, the class-name options that
//! no longer mean anything) are accepted so that an old command line or Chorefile keeps
//! working; the obsolete ones are reported and ignored.

use clap::{ArgAction, Args, Parser, Subcommand};
use std::path::PathBuf;

/// `chore [OPTIONS]` runs the master; `chore enqueue` publishes.
#[derive(Debug, Parser)]
#[command(
    name = "chore",
    version,
    about = "A forking job processor: consumes queues, batches messages and runs each batch \
             in a fresh worker process with a deadline.",
    after_help = "Every long option is also a top-level key of the TOML Chorefile \
                  (`concurrency = 8` is `--concurrency 8`); the command line beats the \
                  Chorefile, which beats the defaults. Queues are declared in the Chorefile \
                  as [queues.NAME] tables; see docs/configuration.md.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub flags: Flags,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish messages to a queue: BODY, or JSON Lines on standard input with `-`.
    Enqueue(EnqueueArgs),
    /// Check the Chorefile and print the resolved configuration, then exit.
    CheckConfig(CheckArgs),
    /// Internal: run one batch as a worker child (spawned by the master).
    #[command(hide = true)]
    Work,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub flags: Flags,
}

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// Queue name as declared in the Chorefile (or any name, with --fs-queue-root).
    pub queue: String,

    /// The message body (JSON). `-` or nothing reads JSON Lines from standard input,
    /// one message per line.
    pub body: Option<String>,

    /// Wrap each body as Ruby Chore's wire format: {"class":CLASS,"args":BODY}.
    /// BODY must then be a JSON array of arguments.
    #[arg(long = "class", value_name = "CLASS")]
    pub class: Option<String>,

    /// The queue is an SQS queue (name or URL), for a queue the Chorefile does not declare.
    #[arg(long = "sqs")]
    pub sqs: bool,

    /// SQS: seconds before the messages become visible (0 to 900).
    #[arg(long = "delay", value_name = "SECONDS")]
    pub delay: Option<u32>,

    /// SQS FIFO: the message group of every message published.
    #[arg(long = "group-id", value_name = "GROUP")]
    pub group_id: Option<String>,

    /// SQS FIFO: the deduplication id (with many messages, `-<line number>` is appended).
    #[arg(long = "dedup-id", value_name = "ID")]
    pub dedup_id: Option<String>,

    #[command(flatten)]
    pub flags: Flags,
}

/// Options shared by every mode. All optional: absence means "ask the Chorefile, then the
/// default" (see `config::resolve`).
#[derive(Debug, Default, Clone, Args)]
pub struct Flags {
    /// Chorefile to read (TOML, or Ruby Chore's `--flag value` format). May be repeated;
    /// later files override earlier ones.
    #[arg(short = 'c', long = "config-file", value_name = "FILE")]
    pub config_file: Vec<PathBuf>,

    /// Largest number of worker processes running at once [default: 4]
    #[arg(long, value_name = "NUM")]
    pub concurrency: Option<usize>,

    /// Most messages handed to one worker [default: 50]
    #[arg(long = "batch-size", value_name = "SIZE")]
    pub batch_size: Option<usize>,

    /// Seconds the oldest message of a partial batch may wait before it is flushed
    /// [default: 20]
    #[arg(long = "batch-timeout", value_name = "SECONDS")]
    pub batch_timeout: Option<f64>,

    /// Flush only full batches or batches whose oldest message reached --batch-timeout, as
    /// Ruby Chore does. By default a partial batch also starts as soon as a worker slot is
    /// free and the queue has nothing more to give.
    #[arg(long = "strict-batching", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub strict_batching: Option<bool>,

    /// Consumer threads per queue [default: 1]
    #[arg(long = "threads-per-queue", value_name = "NUM")]
    pub threads_per_queue: Option<usize>,

    /// Most messages taken from a queue per receive (filesystem: directory entries looked
    /// at per poll) [default: 10]
    #[arg(
        long = "queue-polling-size",
        alias = "queue_polling_size",
        value_name = "NUM"
    )]
    pub queue_polling_size: Option<usize>,

    /// Seconds an idle consumer waits before polling again (a filesystem consumer also wakes
    /// at once on a new file) [default: 1]
    #[arg(long = "consumer-sleep-interval", value_name = "SECONDS")]
    pub consumer_sleep_interval: Option<f64>,

    /// Prefix joined (with no separator) to every queue name; lower-cased, as in Ruby Chore
    #[arg(long = "queue-prefix", value_name = "PREFIX")]
    pub queue_prefix: Option<String>,

    /// Attempts before a failing message is dead-lettered, for queues that set none
    /// [default: unlimited]
    #[arg(long = "max-attempts", value_name = "NUM")]
    pub max_attempts: Option<u32>,

    /// Seconds a filesystem queue's message may run, when the queue has neither a `timeout`
    /// key nor a config/timeout file [default: 43200]
    #[arg(long = "default-queue-timeout", value_name = "SECONDS")]
    pub default_queue_timeout: Option<f64>,

    /// Seconds a drain waits for running workers before it kills them [default: 120]
    #[arg(long = "shutdown-timeout", value_name = "SECONDS")]
    pub shutdown_timeout: Option<f64>,

    /// Directory holding the filesystem queues [default: ./chore-queues]
    #[arg(long = "fs-queue-root", value_name = "DIRECTORY")]
    pub fs_queue_root: Option<PathBuf>,

    /// Seconds a filesystem claim is leased for; the master renews it while the message is
    /// held, so a crashed master's messages come back after this long [default: 60]
    #[arg(long = "fs-claim-lease", value_name = "SECONDS")]
    pub fs_claim_lease: Option<f64>,

    /// Only consume these queues (comma-separated, unprefixed names)
    #[arg(
        short = 'q',
        long = "queues",
        value_delimiter = ',',
        value_name = "QUEUE1,QUEUE2"
    )]
    pub queues: Option<Vec<String>>,

    /// Consume every declared queue except these (comma-separated, unprefixed names)
    #[arg(
        short = 'x',
        long = "except-queues",
        visible_alias = "except",
        value_delimiter = ',',
        value_name = "QUEUE1,QUEUE2"
    )]
    pub except_queues: Option<Vec<String>>,

    /// SQS endpoint URL (for an emulator or a VPC endpoint) [default: AWS_ENDPOINT_URL_SQS,
    /// AWS_ENDPOINT_URL, or AWS itself]
    #[arg(long = "sqs-endpoint", value_name = "URL")]
    pub sqs_endpoint: Option<String>,

    /// AWS region of the SQS queues [default: the standard AWS chain (AWS_REGION, profile)]
    #[arg(long = "aws-region", value_name = "REGION")]
    pub aws_region: Option<String>,

    /// Static AWS access key id (as in Ruby Chore); prefer the standard AWS chain
    #[arg(long = "aws-access-key", value_name = "KEY")]
    pub aws_access_key: Option<String>,

    /// Static AWS secret access key (as in Ruby Chore); prefer the standard AWS chain
    #[arg(long = "aws-secret-key", value_name = "KEY")]
    pub aws_secret_key: Option<String>,

    /// memcached servers for dedupe, comma-separated host:port [default: $MEMCACHE_SERVERS,
    /// else localhost:11211]
    #[arg(long = "dedupe-servers", value_name = "SERVERS")]
    pub dedupe_servers: Option<String>,

    /// When memcached cannot be asked, treat messages as duplicates (hold them) instead of
    /// running them [default: false]
    #[arg(long = "dupe-on-cache-failure", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub dupe_on_cache_failure: Option<bool>,

    /// Prefix joined before every dedupe key [default: none, as Ruby Chore]
    #[arg(long = "dedupe-prefix", value_name = "PREFIX")]
    pub dedupe_prefix: Option<String>,

    /// Log to this file (appended; reopened on SIGUSR1) instead of standard error
    #[arg(long = "log-file", value_name = "FILE")]
    pub log_file: Option<PathBuf>,

    /// Log line format: text or json [default: text]
    #[arg(long = "log-format", value_name = "FORMAT")]
    pub log_format: Option<String>,

    /// Least severe level logged: error, warn, info, debug or trace [default: info]
    #[arg(long = "log-level", value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// Log more: -v for debug, -vv for trace
    #[arg(short = 'v', long = "verbose", action = ArgAction::Count)]
    pub verbose: u8,

    // Ruby Chore options with no meaning here. Accepted so that an existing command line or
    // Chorefile still starts; `config` logs each one as ignored.
    #[arg(short = 'r', long = "require", hide = true, num_args = 0..=1, default_missing_value = "")]
    pub ruby_require: Option<String>,
    #[arg(short = 'e', long = "environment", hide = true)]
    pub ruby_environment: Option<String>,
    #[arg(long = "worker-strategy", hide = true)]
    pub ruby_worker_strategy: Option<String>,
    #[arg(long = "consumer", hide = true)]
    pub ruby_consumer: Option<String>,
    #[arg(long = "consumer-strategy", hide = true)]
    pub ruby_consumer_strategy: Option<String>,
    #[arg(long = "payload_handler", hide = true)]
    pub ruby_payload_handler: Option<String>,
}

impl Flags {
    /// Ruby Chore options that were given but do nothing here, for a warning at start.
    pub fn ignored_ruby_options(&self) -> Vec<&'static str> {
        let given = [
            (self.ruby_require.is_some(), "--require"),
            (self.ruby_environment.is_some(), "--environment"),
            (self.ruby_worker_strategy.is_some(), "--worker-strategy"),
            (self.ruby_consumer.is_some(), "--consumer"),
            (self.ruby_consumer_strategy.is_some(), "--consumer-strategy"),
            (self.ruby_payload_handler.is_some(), "--payload_handler"),
        ];
        given.iter().filter(|(g, _)| *g).map(|(_, n)| *n).collect()
    }

    /// Overlay `other` on `self`: each option `other` sets wins; `-v` counts add up.
    pub fn overlay(&mut self, other: Flags) {
        macro_rules! take {
            ($($f:ident),*) => { $( if other.$f.is_some() { self.$f = other.$f; } )* };
        }
        take!(
            concurrency,
            batch_size,
            batch_timeout,
            strict_batching,
            threads_per_queue,
            queue_polling_size,
            consumer_sleep_interval,
            queue_prefix,
            max_attempts,
            default_queue_timeout,
            shutdown_timeout,
            fs_queue_root,
            fs_claim_lease,
            queues,
            except_queues,
            log_file,
            log_format,
            log_level,
            ruby_require,
            ruby_environment,
            ruby_worker_strategy,
            ruby_consumer,
            ruby_consumer_strategy,
            ruby_payload_handler,
            dedupe_servers,
            dupe_on_cache_failure,
            dedupe_prefix,
            sqs_endpoint,
            aws_region,
            aws_access_key,
            aws_secret_key
        );
        self.verbose = self.verbose.saturating_add(other.verbose);
        self.config_file.extend(other.config_file);
    }
}
