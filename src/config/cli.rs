//! The command line: what the operator typed, before any file is read.
//!
//! Every long flag is also a top-level key of the TOML Chorefile
//! (docs/decisions/0009-the-chorefile-is-toml.md), so the flags are not written here: `Flags`
//! builds its clap arguments from `config::options::OPTIONS`, and holds only what was typed;
//! `config` puts it over the Chorefiles over the defaults. Ruby Chore's spellings
//! (`--except`, `--queue_polling_size`, the class-name options that no longer mean anything)
//! are accepted so that an old command line or Chorefile keeps working; the obsolete ones
//! are reported and ignored.

use crate::config::options::{Kind, OPTIONS, Opt, Value};
use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches, Parser, Subcommand};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `chore [OPTIONS]` runs the master; `chore enqueue` publishes; `chore check-config`
/// checks; `chore systemd-unit` writes a unit for a Chorefile.
#[derive(Debug, Parser)]
#[command(
    name = "chore",
    // The package version and, built from a checkout, the git revision (see build.rs).
    version = env!("CHORE_VERSION"),
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
    /// Look into queues and move their messages: stats, peek, dump, load, requeue, purge,
    /// create, delete, trace.
    Queue(crate::config::queue_cli::QueueArgs),
    /// Ask the running master (over its control socket) what it is doing.
    Status(StatusArgs),
    /// Print a hardened systemd unit that runs the master with this Chorefile.
    SystemdUnit(UnitArgs),
    /// Internal, for packagers: write the man pages or a shell's completions.
    #[command(hide = true, subcommand)]
    Generate(GenerateArgs),
    /// Internal: run one batch as a worker child (spawned by the master).
    #[command(hide = true)]
    Work,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the master's answer as one JSON object.
    #[arg(long = "json")]
    pub json: bool,

    #[command(flatten)]
    pub flags: Limited<ForStatus>,
}

/// `check-config` takes every option: it checks the configuration the master would run.
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub flags: Flags,
}

#[derive(Debug, Args)]
#[command(
    after_help = "The unit runs `BINARY -c CHOREFILE`; relative paths of the Chorefile \
                  (fs-queue-root, log-file) are taken from the unit's working directory. \
                  Install it as /etc/systemd/system/chore.service, which overrides the \
                  packaged one."
)]
pub struct UnitArgs {
    /// The Chorefile the unit runs (read now for its queue root, log file and
    /// shutdown-timeout). May be repeated, as for the master.
    #[arg(
        short = 'c',
        long = "config-file",
        value_name = "FILE",
        required = true
    )]
    pub config_file: Vec<PathBuf>,

    /// The path ExecStart names for the Chorefile, when it is installed elsewhere than
    /// where -c reads it now (only with a single -c).
    #[arg(long = "chorefile-at", value_name = "PATH")]
    pub chorefile_at: Option<PathBuf>,

    /// The chore binary the unit runs [default: this binary]
    #[arg(long = "binary", value_name = "PATH")]
    pub binary: Option<PathBuf>,

    /// The unit's working directory [default: the Chorefile's directory]
    #[arg(long = "working-directory", value_name = "DIRECTORY")]
    pub working_directory: Option<PathBuf>,

    /// User the master and its handlers run as.
    #[arg(long = "user", value_name = "USER", default_value = "chore")]
    pub user: String,

    /// Group the master and its handlers run as.
    #[arg(long = "group", value_name = "GROUP", default_value = "chore")]
    pub group: String,

    /// Let handlers read /home, /root and /run/user (hidden by default).
    #[arg(long = "allow-home")]
    pub allow_home: bool,

    /// Let handlers write PATH (the file system is otherwise read-only but for the queue
    /// root, the log file's directory and /tmp). May be repeated.
    #[arg(long = "allow-write", value_name = "PATH")]
    pub allow_write: Vec<PathBuf>,

    /// Forbid writable-and-executable memory (breaks JIT runtimes: node, Ruby YJIT, the JVM).
    #[arg(long = "deny-write-execute", conflicts_with = "no_hardening")]
    pub deny_write_execute: bool,

    /// Leave out the sandboxing: for handlers that need what it takes away (devices,
    /// privileges, other address families).
    #[arg(long = "no-hardening")]
    pub no_hardening: bool,
}

#[derive(Debug, Subcommand)]
pub enum GenerateArgs {
    /// Write chore.1 and a page per subcommand (chore-enqueue.1, ...) into DIRECTORY.
    Man {
        #[arg(value_name = "DIRECTORY")]
        directory: PathBuf,
    },
    /// Print SHELL's completion script on standard output.
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
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

    /// Publish even though the Chorefile given with -c does not declare QUEUE.
    #[arg(long = "force")]
    pub force: bool,

    #[command(flatten)]
    pub flags: EnqueueFlags,
}

/// The options a subcommand that does not run the master reads: `Flags` limited to
/// `S::KEYS`, so that its `--help` offers only those and it refuses the rest. It
/// dereferences to the `Flags` it holds, which is what `config::load` takes.
#[derive(Debug, Default)]
pub struct Limited<S>(pub Flags, std::marker::PhantomData<S>);

/// Which options of `config::options::OPTIONS` a `Limited` takes.
pub trait Subset: std::fmt::Debug + Default + 'static {
    const KEYS: &'static [&'static str];
    fn takes(o: &Opt) -> bool {
        Self::KEYS.contains(&o.key)
    }
}

/// `enqueue`: where the queues are and how to reach them. The master's other options
/// (batching, concurrency, logging...) mean nothing to it.
#[derive(Debug, Default)]
pub struct ForEnqueue;

impl Subset for ForEnqueue {
    const KEYS: &'static [&'static str] = &[
        "config-file",
        "queue-prefix",
        "fs-queue-root",
        "sqs-endpoint",
        "aws-region",
        "aws-access-key",
        "aws-secret-key",
    ];
}

/// `status`: where the master's control socket is.
#[derive(Debug, Default)]
pub struct ForStatus;

impl Subset for ForStatus {
    const KEYS: &'static [&'static str] = &["config-file", "fs-queue-root", "control-socket"];
}

pub type EnqueueFlags = Limited<ForEnqueue>;

impl<S> std::ops::Deref for Limited<S> {
    type Target = Flags;
    fn deref(&self) -> &Flags {
        &self.0
    }
}

impl<S: Subset> Args for Limited<S> {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        augment(cmd, S::takes)
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl<S: Subset> FromArgMatches for Limited<S> {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut f = Limited(Flags::default(), std::marker::PhantomData);
        f.update_from_arg_matches(m)?;
        Ok(f)
    }
    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        read(&mut self.0, m, S::takes);
        Ok(())
    }
}

/// Options shared by every mode, as typed: `config_file`, and each other option given, by
/// its key in `config::options::OPTIONS`. Absence means "ask the Chorefile, then the
/// default" (see `config::resolve`).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Flags {
    pub config_file: Vec<PathBuf>,
    pub values: BTreeMap<&'static str, Value>,
}

impl Flags {
    /// Parse option words alone (no program name, no subcommand): a line of a Ruby-format
    /// Chorefile, or a test's command line.
    pub fn from_words<I, T>(words: I) -> Result<Flags, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let cmd = clap::Command::new("chore")
            .no_binary_name(true)
            .disable_help_flag(true)
            .disable_version_flag(true);
        let matches = Flags::augment_args(cmd).try_get_matches_from(words)?;
        Flags::from_arg_matches(&matches)
    }
}

/// The clap argument for one option of the table.
fn arg(o: &'static Opt) -> Arg {
    let mut a = Arg::new(o.key)
        .long(o.key)
        .help(o.help_line())
        .hide(o.kind == Kind::Ignored);
    if let Some(c) = o.short {
        a = a.short(c);
    }
    if let Some(alias) = o.alias {
        a = a.visible_alias(alias);
    }
    if let Some(s) = o.ruby_spelling {
        a = a.alias(s);
    }
    if !o.value_name.is_empty() {
        a = a.value_name(o.value_name);
    }
    let parse = move |s: &str| o.parse_str(s);
    match o.kind {
        Kind::Files => a
            .action(ArgAction::Append)
            .value_parser(clap::value_parser!(PathBuf)),
        Kind::Verbose => a.action(ArgAction::Count),
        // `--strict-batching` alone means true; Ruby Chore's `--require` may have no value.
        Kind::Bool => a
            .num_args(0..=1)
            .default_missing_value("true")
            .value_parser(parse),
        Kind::Ignored => a
            .num_args(0..=1)
            .default_missing_value("")
            .value_parser(parse),
        // `-q a -q b` is `-q a,b`.
        Kind::List { .. } => a.action(ArgAction::Append).value_parser(parse),
        // So that `--shutdown-timeout -1` is a value out of range, not an unknown flag.
        Kind::Count { .. } | Kind::Seconds { .. } => {
            a.allow_negative_numbers(true).value_parser(parse)
        }
        _ => a.value_parser(parse),
    }
}

/// `cmd` with the options of the table that `takes` keeps.
fn augment(cmd: clap::Command, takes: fn(&Opt) -> bool) -> clap::Command {
    OPTIONS
        .iter()
        .filter(|o| takes(o))
        .fold(cmd, |cmd, o| cmd.arg(arg(o)))
}

/// What was typed of the options `takes` keeps (clap refuses to look up the others).
fn read(f: &mut Flags, m: &ArgMatches, takes: fn(&Opt) -> bool) {
    for o in OPTIONS.iter().filter(|o| takes(o)) {
        match o.kind {
            Kind::Files => {
                if let Some(files) = m.get_many::<PathBuf>(o.key) {
                    f.config_file.extend(files.cloned());
                }
            }
            Kind::Verbose => match m.get_count(o.key) {
                0 => {}
                n => {
                    f.values.insert(o.key, Value::Count(n.into()));
                }
            },
            Kind::List { .. } => {
                if let Some(lists) = m.get_many::<Value>(o.key) {
                    let all = lists.flat_map(|v| match v {
                        Value::List(l) => l.clone(),
                        _ => Vec::new(),
                    });
                    f.values.insert(o.key, Value::List(all.collect()));
                }
            }
            _ => {
                if let Some(v) = m.get_one::<Value>(o.key) {
                    f.values.insert(o.key, v.clone());
                }
            }
        }
    }
}

impl Args for Flags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        augment(cmd, |_| true)
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for Flags {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut f = Flags::default();
        f.update_from_arg_matches(m)?;
        Ok(f)
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        read(self, m, |_| true);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_follow_the_table() {
        let f = Flags::from_words([
            "--concurrency",
            "3",
            "-c",
            "a",
            "--config-file=b",
            "--strict-batching",
            "--queue_polling_size",
            "5",
            "--except",
            "x,y",
            "-x",
            "z",
            "-vv",
            "-r",
        ])
        .unwrap();
        assert_eq!(f.config_file, [PathBuf::from("a"), PathBuf::from("b")]);
        assert_eq!(f.values["concurrency"], Value::Count(3));
        assert_eq!(f.values["strict-batching"], Value::Bool(true));
        assert_eq!(f.values["queue-polling-size"], Value::Count(5));
        assert_eq!(
            f.values["except-queues"],
            Value::List(vec!["x".into(), "y".into(), "z".into()])
        );
        assert_eq!(f.values["verbose"], Value::Count(2));
        assert_eq!(f.values["require"], Value::Text(String::new()));
        let e = Flags::from_words(["--concurrency", "many"]).unwrap_err();
        assert!(
            e.to_string()
                .contains("expected a whole number, found `many`"),
            "{e}"
        );
    }

    #[test]
    fn the_command_line_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["chore", "enqueue", "--force", "q", "{}"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Enqueue(a)) if a.force));
    }
}
