//! `chore queue create [QUEUE…]` and `chore queue delete QUEUE [--yes]`.
//!
//! Create makes the queues the Chorefile declares as they are declared. Filesystem: `new/`,
//! `inprogress/`, `dead/`, and `config/timeout` when the queue sets a `timeout` (Ruby
//! Chore and every other consumer read it). SQS: the dead-letter queue first, then the
//! queue with its visibility timeout (the queue's `timeout`), `FifoQueue` for a `.fifo`
//! name, and, when both `dead-letter-queue` and `max-attempts` are set, a redrive policy
//! moving a message that was received more than `max-attempts` times (a message chore
//! could not settle) to the dead-letter queue. Delete asks first, then removes the queue
//! and everything in it.

use super::confirm::confirm;
use super::place::{self, Place};
use super::{Ctx, Fail, Outcome, fs};
use crate::config::{Backend, QueueConfig, SqsQueueOptions};
use crate::queue::sqs::Sqs;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::QueueAttributeName;
use std::collections::HashMap;

pub fn create(ctx: &mut Ctx, names: &[String]) -> Outcome {
    let queues: Vec<QueueConfig> = if names.is_empty() {
        ctx.config.declared.clone()
    } else {
        names
            .iter()
            .map(|n| {
                ctx.config.queue(n).cloned().ok_or_else(|| {
                    Fail::Usage(format!(
                        "unknown queue `{n}`: create makes the queues a Chorefile (-c) declares"
                    ))
                })
            })
            .collect::<Outcome<_>>()?
    };
    if queues.is_empty() {
        return Err(Fail::Usage("no queue declared (give -c Chorefile)".into()));
    }
    for q in &queues {
        match q.backend {
            Backend::Filesystem => create_dir(ctx, q)?,
            Backend::Sqs => {
                let sqs = ctx.sqs()?;
                create_sqs(&sqs, q)?;
            }
        }
    }
    Ok(())
}

fn create_dir(ctx: &Ctx, q: &QueueConfig) -> Outcome {
    use crate::queue::filesystem::files;
    let dir = ctx.config.fs_queue_root.join(&q.full_name);
    let existed = dir.join("new").is_dir();
    if let Some(t) = q.timeout {
        let secs = t.as_secs() + u64::from(t.subsec_nanos() > 0);
        let config = dir.join("config");
        files::create_dirs(&config)
            .and_then(|()| {
                files::write_replacing(&config.join("timeout"), format!("{secs}\n").as_bytes())
            })
            .map_err(|e| Fail::Failed(format!("{}: {e}", config.display())))?;
    }
    // As the master makes them: modes 0750 whatever the umask, nothing through a link
    // (after the timeout file, which opening the queue reads).
    crate::queue::open_filesystem(&ctx.config, &q.full_name, q.timeout)
        .map_err(|e| Fail::Failed(e.to_string()))?;
    println!(
        "{} {}",
        if existed { "exists:" } else { "created:" },
        dir.display()
    );
    Ok(())
}

fn create_sqs(sqs: &Sqs, q: &QueueConfig) -> Outcome {
    if q.url.is_some() {
        println!(
            "skipped: {} is given by URL; create it where it lives",
            q.name
        );
        return Ok(());
    }
    let dlq_url = match &q.sqs.dead_letter_queue {
        Some(dlq) if dlq.starts_with("http") => Some(dlq.clone()),
        Some(dlq) => {
            let attrs = sqs
                .declared_attributes(dlq, &SqsQueueOptions::plain(), None)
                .map_err(Fail::Failed)?;
            Some(create_one(sqs, dlq, attrs)?)
        }
        None => None,
    };
    // The same attributes as the master gives a queue it creates (`create = true`).
    let attrs = sqs
        .declared_attributes(&q.full_name, &q.sqs, dlq_url.as_deref())
        .map_err(Fail::Failed)?;
    create_one(sqs, &q.full_name, attrs)?;
    Ok(())
}

fn create_one(
    sqs: &Sqs,
    name: &str,
    attrs: HashMap<QueueAttributeName, String>,
) -> Outcome<String> {
    let url = sqs.create_queue(name, attrs).map_err(Fail::Failed)?;
    println!("created: {url}");
    Ok(url)
}

pub fn delete(ctx: &mut Ctx, queue: &str, yes: bool) -> Outcome {
    match place::resolve(ctx, queue)? {
        Place::Fs(f) => {
            let now = super::now();
            let count = |sub| fs::list(&f, sub, now).map(|v| v.len()).unwrap_or(0);
            confirm(
                &format!(
                    "delete {} and everything in it ({} waiting, {} in progress or delayed, {} dead)?",
                    f.dir.display(),
                    count("new"),
                    count("inprogress"),
                    count("dead")
                ),
                yes,
            )?;
            std::fs::remove_dir_all(&f.dir)
                .map_err(|e| Fail::Failed(format!("{}: {e}", f.dir.display())))?;
            crate::logging::stderr_line(&format!("deleted {}", f.dir.display()));
            Ok(())
        }
        Place::Sqs(s) => {
            let (v, i, d) = super::sqs::counts(&s.sqs, &s.url)?;
            confirm(
                &format!(
                    "delete {} and everything in it (about {} message(s))?",
                    s.url,
                    v + i + d
                ),
                yes,
            )?;
            s.sqs
                .block_on(s.sqs.client.delete_queue().queue_url(&s.url).send())
                .map_err(|e| {
                    Fail::Failed(format!(
                        "DeleteQueue {}: {}",
                        s.url,
                        DisplayErrorContext(&e)
                    ))
                })?;
            crate::logging::stderr_line(&format!("deleted {}", s.url));
            Ok(())
        }
    }
}
