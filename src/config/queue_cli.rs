//! The command line of `chore queue VERB`: the operator's verbs for looking into queues
//! and moving their messages (carried out by the `admin` module). Only what was typed is here.

use clap::{Args, Subcommand};
use std::path::PathBuf;

/// `chore queue VERB`.
#[derive(Debug, Args)]
pub struct QueueArgs {
    #[command(subcommand)]
    pub verb: Verb,

    /// A Chorefile: declared queue names, queue-prefix, fs-queue-root, SQS settings.
    /// A QUEUE may also be a queue directory (a path with a `/`) or an SQS queue URL.
    #[arg(short = 'c', long = "config-file", value_name = "FILE", global = true)]
    pub config_file: Vec<PathBuf>,
}

/// Which messages a verb takes, beyond "all of them".
#[derive(Debug, Args, Clone, Default)]
pub struct Select {
    /// Only this message id (repeat for several).
    #[arg(long = "id", value_name = "ID")]
    pub ids: Vec<String>,
    /// Only messages of this Ruby Chore job class (the body's `class`; repeat for several).
    #[arg(long = "class", value_name = "CLASS")]
    pub classes: Vec<String>,
    /// Only dead letters whose reason contains TEXT (filesystem: the `.reason` file).
    #[arg(long = "reason", value_name = "TEXT")]
    pub reason: Option<String>,
    /// Only messages sent at least SECONDS ago.
    #[arg(long = "older-than", value_name = "SECONDS")]
    pub older_than: Option<u64>,
    /// Only messages sent at most SECONDS ago.
    #[arg(long = "newer-than", value_name = "SECONDS")]
    pub newer_than: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Depth, in flight, delayed, dead and oldest age of each queue (all declared if none).
    Stats {
        queues: Vec<String>,
        /// Refresh every --interval seconds until interrupted.
        #[arg(long)]
        watch: bool,
        #[arg(long, value_name = "SECONDS", default_value_t = 2)]
        interval: u64,
        /// One JSON object per queue and refresh.
        #[arg(long)]
        json: bool,
    },
    /// Show waiting messages without consuming them (see docs/operations.md for SQS).
    Peek {
        queue: String,
        /// How many.
        #[arg(short = 'n', default_value_t = 10)]
        count: usize,
        /// Look at the dead letters instead.
        #[arg(long)]
        dead: bool,
        /// JSON Lines, as `dump` writes them.
        #[arg(long)]
        json: bool,
    },
    /// Write a queue's messages as JSON Lines (id, attributes, body), leaving them there.
    Dump {
        queue: String,
        /// Dump the dead letters instead.
        #[arg(long)]
        dead: bool,
        /// Write to FILE instead of standard output.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Publish the messages of a dump (FILE, or standard input) to QUEUE.
    Load {
        queue: String,
        file: Option<PathBuf>,
        /// SQS FIFO: the group of messages whose dump carries none.
        #[arg(long = "group-id", value_name = "GROUP")]
        group_id: Option<String>,
    },
    /// Move dead letters back to their queue, attempts reset.
    #[command(visible_alias = "redrive")]
    Requeue {
        queue: String,
        #[command(flatten)]
        select: Select,
        /// Print what would move, and move nothing.
        #[arg(long = "dry-run")]
        dry_run: bool,
        /// SQS: seconds a dead letter being moved stays hidden in the dead-letter queue.
        #[arg(long, value_name = "SECONDS", default_value_t = 120)]
        hold: u32,
        /// SQS: the journal that lets an interrupted requeue resume without doubling.
        #[arg(long, value_name = "FILE")]
        journal: Option<PathBuf>,
    },
    /// Remove every waiting message (or, with --dead, every dead letter).
    Purge {
        queue: String,
        #[arg(long)]
        dead: bool,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
    /// Create the queues the Chorefile declares (all if none named).
    Create { queues: Vec<String> },
    /// Delete a queue and everything in it.
    Delete {
        queue: String,
        #[arg(long)]
        yes: bool,
    },
    /// Where message ID is now, and (with --log) its history.
    Trace {
        id: String,
        /// Look only in this queue (all declared filesystem queues otherwise).
        #[arg(short = 'q', long = "queue", value_name = "QUEUE")]
        queues: Vec<String>,
        /// A log file (text or JSON) to read the message's history from.
        #[arg(long, value_name = "FILE")]
        log: Option<PathBuf>,
    },
}
