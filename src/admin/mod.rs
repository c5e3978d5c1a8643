//! `chore queue VERB`: what an operator needs to look into queues and move their messages,
//! the same on the filesystem queue and on SQS (docs/operations.md, "Looking into queues").
//!
//! Roles: `place` turns what was typed (a declared name, a directory, a URL) into a queue
//! to act on; `fs` reads a filesystem queue without claiming anything; `sqs` the SQS calls
//! the verbs share; `record` the JSON Lines form of a message and the pure selection rule;
//! `progress` the terminal's progress bar and Ctrl-C. One file per verb: `stats`, `peek`,
//! `dump` (and `load`), `requeue` (with its `journal` on SQS), `purge`, `create` (and `delete`), `trace`.

mod attrs;
mod confirm;
mod create;
mod dump;
mod fs;
mod journal;
mod peek;
mod place;
mod progress;
mod purge;
mod record;
mod requeue;
mod sqs;
mod stats;
mod trace;

use crate::config::cli::Flags;
use crate::config::queue_cli::{QueueArgs, Verb};
use crate::config::{self, Config};
use crate::queue::sqs::Sqs;

/// Why a verb stopped: bad input (exit 2, nothing done) or a failure on the way (exit 1).
#[derive(Debug)]
pub enum Fail {
    Usage(String),
    Failed(String),
}

pub type Outcome<T = ()> = Result<T, Fail>;

/// What every verb works with: the configuration, and the SQS client made on first need.
pub struct Ctx {
    pub config: Config,
    sqs: Option<Sqs>,
}

impl Ctx {
    /// The one SQS client (`queue::sqs`'s set-up), made on first use.
    pub fn sqs(&mut self) -> Outcome<Sqs> {
        if self.sqs.is_none() {
            let client = Sqs::connect(&self.config.sqs)
                .map_err(|e| Fail::Failed(format!("cannot set up the SQS client: {e}")))?;
            self.sqs = Some(client);
        }
        Ok(self.sqs.clone().expect("made above"))
    }
}

/// Run the verb; returns the exit status.
pub fn run(args: QueueArgs) -> i32 {
    let flags = Flags {
        config_file: args.config_file.clone(),
        ..Flags::default()
    };
    let Some(config) = config::load_or_say(flags) else {
        return 2;
    };
    let mut ctx = Ctx { config, sqs: None };
    // Ctrl-C at a confirmation question must still end the process: those verbs catch it
    // only once confirmed.
    if !matches!(args.verb, Verb::Purge { .. } | Verb::Delete { .. }) {
        progress::catch_interrupts();
    }
    // Verbs that change or copy messages one by one: stopped part-way, they did not succeed.
    let partial_on_interrupt = matches!(
        args.verb,
        Verb::Dump { .. } | Verb::Load { .. } | Verb::Requeue { .. } | Verb::Purge { .. }
    );
    let result = match args.verb {
        Verb::Stats {
            queues,
            watch,
            interval,
            json,
        } => stats::run(&mut ctx, &queues, watch, interval, json),
        Verb::Peek {
            queue,
            count,
            dead,
            json,
        } => peek::run(&mut ctx, &queue, count, dead, json),
        Verb::Dump {
            queue,
            dead,
            output,
        } => dump::run(&mut ctx, &queue, dead, output.as_deref()),
        Verb::Load {
            queue,
            file,
            group_id,
        } => dump::load(&mut ctx, &queue, file.as_deref(), group_id.as_deref()),
        Verb::Requeue {
            queue,
            select,
            dry_run,
            hold,
            journal,
        } => requeue::run(&mut ctx, &queue, &select, dry_run, hold, journal),
        Verb::Purge { queue, dead, yes } => purge::run(&mut ctx, &queue, dead, yes),
        Verb::Create { queues } => create::create(&mut ctx, &queues),
        Verb::Delete { queue, yes } => create::delete(&mut ctx, &queue, yes),
        Verb::Trace { id, queues, log } => trace::run(&mut ctx, &id, &queues, log.as_deref()),
    };
    match result {
        // Stopped part-way (its summary said how far): not a success a script may go on
        // from, as `dump && purge` would.
        Ok(()) if partial_on_interrupt && progress::interrupted() => 1,
        Ok(()) => 0,
        Err(Fail::Usage(m)) => {
            crate::logging::stderr_line(&format!("chore queue: {m}"));
            2
        }
        Err(Fail::Failed(m)) => {
            crate::logging::stderr_line(&format!("chore queue: {m}"));
            1
        }
    }
}

/// Now, Unix seconds (the clock the filesystem queue's names and mtimes use).
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
