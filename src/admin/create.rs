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
use crate::config::{Backend, QueueConfig};
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
    let fifo = q.full_name.ends_with(".fifo");
    let mut attrs = HashMap::new();
    if fifo {
        attrs.insert(QueueAttributeName::FifoQueue, "true".to_string());
    }
    if let Some(t) = q.timeout {
        attrs.insert(
            QueueAttributeName::VisibilityTimeout,
            t.as_secs().to_string(),
        );
    }
    if let Some(dlq) = &q.sqs.dead_letter_queue {
        let dlq_url = if dlq.starts_with("http") {
            dlq.clone()
        } else {
            let mut dattrs = HashMap::new();
            if dlq.ends_with(".fifo") {
                dattrs.insert(QueueAttributeName::FifoQueue, "true".to_string());
            }
            create_one(sqs, dlq, dattrs)?
        };
        if let Some(max) = q.max_attempts {
            let arn = queue_arn(sqs, &dlq_url)?;
            let policy = serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": max});
            attrs.insert(QueueAttributeName::RedrivePolicy, policy.to_string());
        }
    }
    create_one(sqs, &q.full_name, attrs)?;
    Ok(())
}

fn create_one(
    sqs: &Sqs,
    name: &str,
    attrs: HashMap<QueueAttributeName, String>,
) -> Outcome<String> {
    let out = sqs
        .block_on(
            sqs.client
                .create_queue()
                .queue_name(name)
                .set_attributes(Some(attrs))
                .send(),
        )
        .map_err(|e| Fail::Failed(format!("CreateQueue {name}: {}", DisplayErrorContext(&e))))?;
    let url = out.queue_url().unwrap_or_default().to_string();
    println!("created: {url}");
    Ok(url)
}

fn queue_arn(sqs: &Sqs, url: &str) -> Outcome<String> {
    let out = sqs
        .block_on(
            sqs.client
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(QueueAttributeName::QueueArn)
                .send(),
        )
        .map_err(|e| {
            Fail::Failed(format!(
                "GetQueueAttributes {url}: {}",
                DisplayErrorContext(&e)
            ))
        })?;
    out.attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| Fail::Failed(format!("{url}: SQS did not give its ARN")))
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
