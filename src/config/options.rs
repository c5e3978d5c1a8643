//! The table of options: each setting's name, spellings, type, bounds, default and help,
//! written once.
//!
//! Every top-level option is both a long flag and a key of the TOML Chorefile
//! (docs/decisions/0009-the-chorefile-is-toml.md). The command line (`cli::Flags` builds its
//! clap arguments from `OPTIONS`), the Chorefile reader, `resolve` (which checks every value
//! against its `Kind`, once: see `value`), `check-config` and docs/configuration.md all
//! follow this table; `doc_tables` holds the documentation to it. `QUEUE_KEYS` does the
//! same for the keys of a `[queues.NAME]` table, whose values `config::queue` reads.

pub use super::value::Value;

/// The longest any duration setting may be (30 days): deadlines add timeouts up, and
/// absurd values must fail at start, not overflow a clock in production.
pub const MAX_SECONDS: f64 = 30.0 * 86_400.0;

/// What an option holds, and the bounds `check` enforces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// `-c FILE`: repeatable; never a Chorefile key.
    Files,
    /// A whole number from `min` to `max`.
    Count {
        min: i64,
        max: i64,
    },
    /// A number of seconds, at least `min` (more than `min` when `above`), at most 30 days.
    Seconds {
        min: f64,
        above: bool,
    },
    Bool,
    /// A string; the words say what it is (`"string"`, `"path"`, `"URL"`).
    Text(&'static str),
    /// Comma-separated on the command line; a list or a comma-separated string in TOML.
    List {
        what: &'static str,
        non_empty: bool,
    },
    /// One of `values` (any case); `synonyms` are accepted too but not advertised.
    Choice {
        values: &'static [&'static str],
        synonyms: &'static [&'static str],
    },
    /// `-v`, counted; the counts of every source add up.
    Verbose,
    /// A Ruby Chore option with no meaning here: accepted, reported, ignored.
    Ignored,
}

/// An option's default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Default {
    /// This value, written as on the command line (parsed by the option's `Kind`).
    Is(&'static str),
    /// No value; what happens instead, in words (Markdown allowed).
    Otherwise(&'static str),
}

/// One option.
#[derive(Debug, Clone, Copy)]
pub struct Opt {
    /// The long flag without its dashes, which is also the TOML key.
    pub key: &'static str,
    pub short: Option<char>,
    /// Another spelling, shown in `--help` and also accepted as a TOML key.
    pub alias: Option<&'static str>,
    /// Ruby Chore's spelling: command line and Ruby-format Chorefile only.
    pub ruby_spelling: Option<&'static str>,
    /// Not a TOML key; the message for whoever writes it as one.
    pub not_in_toml: Option<&'static str>,
    pub kind: Kind,
    pub default: Default,
    pub value_name: &'static str,
    /// One sentence for `--help` (the default is added to it).
    pub help: &'static str,
}

const fn opt(
    key: &'static str,
    kind: Kind,
    default: Default,
    value_name: &'static str,
    help: &'static str,
) -> Opt {
    Opt {
        key,
        short: None,
        alias: None,
        ruby_spelling: None,
        not_in_toml: None,
        kind,
        default,
        value_name,
        help,
    }
}

impl Opt {
    const fn short(self, c: char) -> Opt {
        Opt {
            short: Some(c),
            ..self
        }
    }
    const fn alias(self, a: &'static str) -> Opt {
        Opt {
            alias: Some(a),
            ..self
        }
    }
    const fn ruby_spelling(self, s: &'static str) -> Opt {
        Opt {
            ruby_spelling: Some(s),
            ..self
        }
    }
    const fn not_in_toml(self, why: &'static str) -> Opt {
        Opt {
            not_in_toml: Some(why),
            ..self
        }
    }
    /// A Ruby Chore option that means nothing here. It is hidden from `--help`, so its help
    /// is the flag as Ruby Chore spelled it, for the warning logged at start.
    const fn ruby_ignored(key: &'static str, flag: &'static str) -> Opt {
        opt(
            key,
            Kind::Ignored,
            Default::Otherwise("none"),
            "VALUE",
            flag,
        )
        .not_in_toml("a Ruby Chore option with no effect in chore; remove it")
    }
}

const fn count(min: i64, max: i64) -> Kind {
    Kind::Count { min, max }
}
const fn seconds_from(min: f64) -> Kind {
    Kind::Seconds { min, above: false }
}
const NOT_A_CHOREFILE_KEY: &str = "a Chorefile cannot name another Chorefile";
const QUEUES_ARE_TABLES: &str =
    "declare queues as [queues.NAME] tables; choose among them with --queues on the command line";

/// Every top-level option, in the order `--help` and the documentation list them.
pub const OPTIONS: &[Opt] = &[
    opt("config-file", Kind::Files, Default::Otherwise("none"), "FILE",
        "Chorefile to read (TOML, or Ruby Chore's `--flag value` format). May be repeated; later files override earlier ones")
        .short('c').not_in_toml(NOT_A_CHOREFILE_KEY),
    // Each worker is a process with a thread in the master: thousands is already a lot.
    opt("concurrency", count(1, 4096), Default::Is("4"), "NUM",
        "Largest number of worker processes running at once"),
    // A batch is one line on a worker's stdin, and (concurrency + 1) batches are held.
    opt("batch-size", count(1, 10_000), Default::Is("50"), "SIZE",
        "Most messages handed to one worker"),
    opt("batch-timeout", seconds_from(0.0), Default::Is("20"), "SECONDS",
        "Seconds the oldest message of a partial batch may wait before it is flushed"),
    opt("strict-batching", Kind::Bool, Default::Is("false"), "BOOL",
        "Flush only full batches or batches whose oldest message reached --batch-timeout, as Ruby Chore does"),
    opt("threads-per-queue", count(1, 64), Default::Is("1"), "NUM",
        "Consumer threads per queue"),
    opt("queue-polling-size", count(1, 10_000), Default::Is("10"), "NUM",
        "Most messages taken from a queue per receive (SQS: at most 10; filesystem: directory entries looked at per poll)")
        .ruby_spelling("queue_polling_size"),
    // A consumer that never waits spins a core (and, on SQS, runs up a bill).
    opt("consumer-sleep-interval", seconds_from(0.01), Default::Is("1"), "SECONDS",
        "Seconds an idle consumer waits before polling again (a filesystem consumer also wakes at once on a new file)"),
    opt("queue-prefix", Kind::Text("string"), Default::Is(""), "PREFIX",
        "Prefix joined (with no separator) to every queue name; lower-cased, as in Ruby Chore"),
    opt("max-attempts", count(1, u32::MAX as i64), Default::Otherwise("unlimited"), "NUM",
        "Attempts before a failing message is dead-lettered, for queues that set none"),
    opt("default-queue-timeout", Kind::Seconds { min: 0.0, above: true }, Default::Is("43200"), "SECONDS",
        "Seconds a filesystem queue's message may run, when the queue has neither a `timeout` key nor a config/timeout file"),
    opt("shutdown-timeout", seconds_from(0.0), Default::Is("120"), "SECONDS",
        "Seconds a drain waits for running workers before it kills them"),
    opt("stall-timeout", seconds_from(0.0), Default::Is("900"), "SECONDS",
        "Seconds a queue may have messages waiting while none starts before the master counts as unhealthy (its systemd watchdog pings stop); 0 turns the check off"),
    opt("metrics-listen", Kind::Text("address"), Default::Otherwise("off"), "ADDRESS",
        "Serve Prometheus metrics at http://ADDRESS/metrics (an IP and port, for example 127.0.0.1:9187)"),
    opt("control-socket", Kind::Text("path"), Default::Otherwise("`$RUNTIME_DIRECTORY/chore.sock` when systemd sets `RUNTIME_DIRECTORY`, else `chore.sock` in `fs-queue-root`"), "PATH",
        "Unix socket through which `chore status` asks the running master (created owner-only)"),
    opt("fs-queue-root", Kind::Text("path"), Default::Is("./chore-queues"), "DIRECTORY",
        "Directory holding the filesystem queues"),
    opt("fs-claim-lease", seconds_from(2.0), Default::Is("60"), "SECONDS",
        "Seconds a filesystem claim is leased for; the master renews it while the message is held, so a crashed master's messages come back after this long"),
    opt("queues", Kind::List { what: "list", non_empty: false }, Default::Otherwise("all declared"), "QUEUE1,QUEUE2",
        "Only consume these queues (comma-separated, unprefixed names)")
        .short('q').not_in_toml(QUEUES_ARE_TABLES),
    opt("except-queues", Kind::List { what: "list", non_empty: false }, Default::Otherwise("none"), "QUEUE1,QUEUE2",
        "Consume every declared queue except these (comma-separated, unprefixed names)")
        .short('x').alias("except"),
    opt("sqs-endpoint", Kind::Text("URL"), Default::Otherwise("`AWS_ENDPOINT_URL_SQS`, else `AWS_ENDPOINT_URL`, else AWS"), "URL",
        "SQS endpoint URL (for an emulator or a VPC endpoint)"),
    opt("aws-region", Kind::Text("string"), Default::Otherwise("the standard AWS chain (`AWS_REGION`, profile)"), "REGION",
        "AWS region of the SQS queues"),
    opt("aws-access-key", Kind::Text("string"), Default::Otherwise("the standard AWS chain"), "KEY",
        "Static AWS access key id (as in Ruby Chore); prefer the standard AWS chain"),
    opt("aws-secret-key", Kind::Text("string"), Default::Otherwise("the standard AWS chain"), "KEY",
        "Static AWS secret access key (as in Ruby Chore); prefer the standard AWS chain"),
    opt("dedupe-servers", Kind::List { what: "`host:port` list", non_empty: true }, Default::Otherwise("`$MEMCACHE_SERVERS`, else `localhost:11211`"), "SERVERS",
        "memcached servers for dedupe, comma-separated host:port"),
    opt("dupe-on-cache-failure", Kind::Bool, Default::Is("false"), "BOOL",
        "When memcached cannot be asked, treat messages as duplicates (hold them) instead of running them"),
    opt("dedupe-prefix", Kind::Text("string"), Default::Is(""), "PREFIX",
        "Prefix joined before every dedupe key"),
    opt("log-file", Kind::Text("path"), Default::Otherwise("standard error"), "FILE",
        "Log to this file (appended; reopened on SIGUSR1) instead of standard error"),
    opt("log-format", Kind::Choice { values: &["text", "json", "ruby"], synonyms: &[] }, Default::Is("text"), "FORMAT",
        "Log line format"),
    opt("log-level", Kind::Choice { values: &["error", "warn", "info", "debug", "trace"], synonyms: &["warning"] },
        Default::Is("info"), "LEVEL", "Least severe level logged"),
    opt("log-settlements", Kind::Bool, Default::Is("true"), "BOOL",
        "Log one info line per settled message; false keeps only retries and dead letters"),
    opt("verbose", Kind::Verbose, Default::Is("0"), "",
        "Log more: -v for debug, -vv for trace")
        .short('v'),
    // Ruby Chore options with no meaning here, accepted so that an existing command line or
    // Ruby-format Chorefile still starts.
    Opt::ruby_ignored("require", "--require").short('r'),
    Opt::ruby_ignored("environment", "--environment").short('e'),
    Opt::ruby_ignored("worker-strategy", "--worker-strategy"),
    Opt::ruby_ignored("consumer", "--consumer"),
    Opt::ruby_ignored("consumer-strategy", "--consumer-strategy"),
    Opt::ruby_ignored("payload_handler", "--payload_handler"),
];

/// The option written `key` in a TOML Chorefile (its name or its alias).
pub fn toml_option(key: &str) -> Option<&'static Opt> {
    OPTIONS
        .iter()
        .find(|o| o.key == key || o.alias == Some(key))
}

/// The option named `key` exactly (for code that names options).
pub fn option(key: &str) -> &'static Opt {
    OPTIONS
        .iter()
        .find(|o| o.key == key)
        .unwrap_or_else(|| panic!("`{key}` is not in the options table"))
}

/// One key of a `[queues.NAME]` table (read by `config::queue`).
#[derive(Debug, Clone, Copy)]
pub struct QueueKey {
    pub key: &'static str,
    /// The type, in the documentation's words (checked against docs/configuration.md).
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "read by the documentation test")
    )]
    pub kind: &'static str,
    /// The default, in the documentation's words (checked the same way).
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "read by the documentation test")
    )]
    pub default: &'static str,
    /// Meaningful for SQS queues only.
    pub sqs_only: bool,
}

const fn qk(key: &'static str, kind: &'static str, default: &'static str) -> QueueKey {
    QueueKey {
        key,
        kind,
        default,
        sqs_only: false,
    }
}
const fn sqs(key: &'static str, kind: &'static str, default: &'static str) -> QueueKey {
    QueueKey {
        sqs_only: true,
        ..qk(key, kind, default)
    }
}

/// SQS's longest visibility timeout: a message cannot be held longer than this.
pub const SQS_MAX_TIMEOUT: f64 = 12.0 * 3600.0;
/// SQS's longest long-poll wait.
pub const SQS_MAX_WAIT: f64 = 20.0;

/// Every key of a queue table, in the order the documentation lists them.
pub const QUEUE_KEYS: &[QueueKey] = &[
    qk(
        "backend",
        "`\"filesystem\"` (or `\"fs\"`), `\"sqs\"`",
        "`\"filesystem\"`",
    ),
    qk("handler", "handler", "none"),
    qk("classes", "table of class = handler", "none"),
    qk(
        "timeout",
        "seconds > 0; SQS: at most 43200 (12 h)",
        "filesystem: the queue's `config/timeout` file, else `default-queue-timeout`; SQS: the queue's visibility timeout",
    ),
    qk(
        "backoff",
        "expression, list or number",
        "`\"attempt ^ 4 + 15\"`",
    ),
    qk(
        "max-attempts",
        "count ≥ 1",
        "top-level `max-attempts`, else unlimited",
    ),
    qk("on-permanent-failure", "handler", "none"),
    qk(
        "dedupe",
        "`true`/`false`",
        "`true` for SQS queues, `false` for filesystem queues",
    ),
    qk("dedupe-key", "string", "none (the message id)"),
    qk("pass-aws-credentials", "`true`/`false`", "`false`"),
    qk(
        "memory-limit",
        "size: bytes, or `\"512MiB\"` (KiB, MiB, GiB, TiB); at least 16 MiB",
        "none (unlimited)",
    ),
    qk("cron-file", "path", "none"),
    qk("cron-seconds", "`true`/`false`", "`false`"),
    sqs("url", "URL", "none"),
    sqs("create", "`true`/`false`", "`false`"),
    sqs("wait-time", "seconds, 0 to 20", "`20`"),
    sqs("dead-letter-queue", "name or URL", "none"),
];

pub fn queue_key(key: &str) -> Option<&'static QueueKey> {
    QUEUE_KEYS.iter().find(|k| k.key == key)
}

/// The keys of a handler table.
pub const HANDLER_KEYS: &[&str] = &[
    "command",
    "mode",
    "env",
    "dir",
    "kind",
    "max-batches",
    "max-age",
    "max-memory",
    "boot-timeout",
];
