//! `chore enqueue QUEUE [BODY | -]`: publish messages, one per JSON line on stdin for many.
//!
//! Filesystem queues get Ruby Chore's exact file format
//! (docs/decisions/0007-filesystem-queue-is-ruby-chore-compatible.md), written under
//! a lock so that no consumer sees half a file. SQS queues get `SendMessageBatch` calls of
//! up to ten messages. With `--class`, each body is the job's arguments, wrapped as Ruby
//! Chore's wire format `{"class":…,"args":[…]}`.

use crate::config::SqsQueueOptions;
use crate::config::cli::EnqueueArgs;
use crate::config::{self, Backend, Config};
use crate::consumer::classify;
use crate::queue::filesystem::FilesystemQueue;
use crate::queue::sqs::{MAX_BATCH, MAX_PAYLOAD, OpenError, Outgoing, Sqs};
use std::io::{self, BufRead, Write};

/// Run the command; returns the exit status (2: bad usage or configuration, 1: failure).
pub fn run(args: EnqueueArgs) -> i32 {
    let Some(config) = config::load_or_say(args.flags.clone()) else {
        return 2;
    };
    if let Some(why) = config::undeclared_queue(&config, &args) {
        eprintln!("chore enqueue: {why}");
        return 2;
    }
    let mut target = match Target::open(&config, &args) {
        Ok(t) => t,
        Err(NotOpened { status, message }) => {
            eprintln!("chore enqueue: {message}");
            return status;
        }
    };
    // A queue whose default handler is an HTTP application takes any body (the
    // application reads it, as behind the SQS daemon); every other wants JSON.
    let any_body = config.queue(&args.queue).is_some_and(|q| q.http.is_some());
    let mut out = io::stdout().lock();
    let mut publish = |raw: &str, line: Option<usize>| -> Result<(), String> {
        let at = line.map(|n| format!("line {n}: ")).unwrap_or_default();
        let body = wrap(raw, args.class.as_deref()).map_err(|e| format!("{at}{e}"))?;
        let class = match classify(&body) {
            Ok(class) => class,
            Err(_) if any_body && args.class.is_none() => None,
            Err(e) => return Err(format!("{at}the body is not valid JSON: {e}")),
        };
        target
            .publish(class.as_deref(), body, line, &mut out)
            .map_err(|e| format!("{at}{e}"))
    };
    let result = match args.body.as_deref() {
        Some(body) if body != "-" => publish(body, None),
        _ => io::stdin()
            .lock()
            .lines()
            .enumerate()
            .try_for_each(|(n, line)| {
                let line = line.map_err(|e| format!("reading standard input: {e}"))?;
                if line.trim().is_empty() {
                    Ok(())
                } else {
                    publish(&line, Some(n + 1))
                }
            }),
    };
    let result = result.and_then(|()| target.flush(&mut out));
    let published = target.published();
    match result {
        Ok(()) => {
            // Published already: a closed or full standard error must not turn it into a
            // failure (nor a panic).
            crate::logging::stderr_line(&format!(
                "enqueued {published} message(s) to {}",
                target.describe()
            ));
            0
        }
        Err(e) => {
            crate::logging::stderr_line(&format!(
                "chore enqueue: {e} ({published} message(s) enqueued before it)"
            ));
            1
        }
    }
}

/// Why the target could not be opened, and the exit status that means: 2 for a mistake
/// in the command or the configuration, 1 for SQS out of reach.
struct NotOpened {
    status: i32,
    message: String,
}

impl NotOpened {
    fn usage(message: impl std::fmt::Display) -> NotOpened {
        NotOpened {
            status: 2,
            message: message.to_string(),
        }
    }
}

/// Where the messages go.
enum Target {
    Filesystem {
        queue: FilesystemQueue,
        published: usize,
    },
    Sqs {
        sqs: Sqs,
        url: String,
        pending: Vec<Outgoing>,
        published: usize,
        template: Outgoing,
    },
}

impl Target {
    fn open(config: &Config, args: &EnqueueArgs) -> Result<Target, NotOpened> {
        let name = args.queue.as_str();
        let declared = config.queue(name);
        let sqs_queue = match declared {
            Some(q) => q.backend == Backend::Sqs,
            None => args.sqs,
        };
        if !sqs_queue {
            if args.delay.is_some() || args.group_id.is_some() || args.dedup_id.is_some() {
                return Err(NotOpened::usage(
                    "--delay, --group-id and --dedup-id apply to SQS queues only",
                ));
            }
            // A declared queue brings its timeout; any other name is a filesystem queue
            // under the root, so a producer needs no Chorefile.
            let (full_name, timeout) = match declared {
                Some(q) => (q.full_name.clone(), q.timeout),
                None => {
                    let full = format!("{}{name}", config.queue_prefix);
                    if let Err(m) =
                        config::check_queue_name(name, &full, Backend::Filesystem, false)
                    {
                        return Err(NotOpened::usage(format!("`{full}`: {m}")));
                    }
                    (full, None)
                }
            };
            let queue = crate::queue::open_filesystem(config, &full_name, timeout)
                .map_err(NotOpened::usage)?;
            return Ok(Target::Filesystem {
                queue,
                published: 0,
            });
        }
        if args.delay.is_some_and(|d| d > 900) {
            return Err(NotOpened::usage(
                "--delay is at most 900 seconds (SQS's limit)",
            ));
        }
        let sqs = Sqs::connect(&config.sqs).map_err(NotOpened::usage)?;
        let (lookup, options) = match declared {
            Some(q) => (
                q.url.clone().unwrap_or_else(|| q.full_name.clone()),
                q.sqs.clone(),
            ),
            None if name.starts_with("http") => (name.to_string(), SqsQueueOptions::default()),
            None => (
                format!("{}{name}", config.queue_prefix),
                SqsQueueOptions::default(),
            ),
        };
        // A queue that does not exist is a mistake; SQS out of reach is a failure, which a
        // producer may retry.
        let url = sqs
            .queue_url(&lookup, Some(&options))
            .map_err(|e| match e {
                OpenError::Missing(m) => NotOpened::usage(m),
                OpenError::Failed(m) => NotOpened {
                    status: 1,
                    message: m,
                },
            })?;
        if url.ends_with(".fifo") && args.group_id.is_none() {
            return Err(NotOpened::usage("a FIFO queue needs --group-id"));
        }
        let template = Outgoing {
            body: String::new(),
            group: args.group_id.clone(),
            dedup: args.dedup_id.clone(),
            delay: args.delay,
            attributes: Vec::new(),
        };
        Ok(Target::Sqs {
            sqs,
            url,
            pending: Vec::new(),
            published: 0,
            template,
        })
    }

    fn publish(
        &mut self,
        class: Option<&str>,
        body: String,
        line: Option<usize>,
        out: &mut impl Write,
    ) -> Result<(), String> {
        match self {
            Target::Filesystem { queue, published } => {
                let name = queue.publish(class, &body).map_err(|e| e.to_string())?;
                let _ = writeln!(out, "{name}");
                *published += 1;
                Ok(())
            }
            Target::Sqs {
                pending, template, ..
            } => {
                // With many messages, each gets its own deduplication id.
                let dedup = match (&template.dedup, line) {
                    (Some(d), Some(n)) => Some(format!("{d}-{n}")),
                    (d, _) => d.clone(),
                };
                // A call holds ten messages, within SQS's payload limit.
                let bytes: usize = pending.iter().map(|m| m.body.len()).sum();
                if !pending.is_empty() && bytes + body.len() > MAX_PAYLOAD {
                    self.flush(out)?;
                    return self.publish(class, body, line, out);
                }
                pending.push(Outgoing {
                    body,
                    dedup,
                    ..template.clone()
                });
                if pending.len() >= MAX_BATCH {
                    self.flush(out)?;
                }
                Ok(())
            }
        }
    }

    fn flush(&mut self, out: &mut impl Write) -> Result<(), String> {
        let Target::Sqs {
            sqs,
            url,
            pending,
            published,
            ..
        } = self
        else {
            return Ok(());
        };
        if pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(pending);
        // Every success counts (and is printed) before a refusal is reported.
        let mut refused = None;
        for result in sqs.send_batch(url, &batch)? {
            match result {
                Ok(id) => {
                    let _ = writeln!(out, "{id}");
                    *published += 1;
                }
                Err(e) => {
                    refused.get_or_insert(format!("SQS refused a message: {e}"));
                }
            }
        }
        refused.map_or(Ok(()), Err)
    }

    fn published(&self) -> usize {
        match self {
            Target::Filesystem { published, .. } | Target::Sqs { published, .. } => *published,
        }
    }

    fn describe(&self) -> String {
        match self {
            Target::Filesystem { queue, .. } => queue.dir().display().to_string(),
            Target::Sqs { url, .. } => url.clone(),
        }
    }
}

/// With `--class`, the body is the arguments: build Ruby Chore's `{"class":…,"args":…}`.
fn wrap(raw: &str, class: Option<&str>) -> Result<String, String> {
    let Some(class) = class else {
        let body = raw.trim();
        // A consumer takes an empty file for one still being written, and never runs it.
        if body.is_empty() {
            return Err("an empty body cannot be a message".into());
        }
        return Ok(body.to_string());
    };
    let args: serde_json::Value =
        serde_json::from_str(raw).map_err(|e| format!("the arguments are not valid JSON: {e}"))?;
    let args = match args {
        serde_json::Value::Array(a) => a,
        other => vec![other],
    };
    // Ruby Chore writes the class first, then the args, compact (docs/decisions/0008-message-bodies-are-json.md).
    let mut body = String::from("{\"class\":");
    body.push_str(&serde_json::to_string(class).expect("a string serialises"));
    body.push_str(",\"args\":");
    body.push_str(&serde_json::to_string(&args).expect("JSON serialises"));
    body.push('}');
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::wrap;

    #[test]
    fn wraps_like_ruby_chore() {
        assert_eq!(
            wrap("[1,\"a\"]", Some("Foo::Bar")).unwrap(),
            r#"{"class":"Foo::Bar","args":[1,"a"]}"#
        );
        assert_eq!(
            wrap("{\"k\":1}", Some("X")).unwrap(),
            r#"{"class":"X","args":[{"k":1}]}"#
        );
        assert_eq!(wrap(" {\"a\":1} ", None).unwrap(), r#"{"a":1}"#);
        assert!(wrap("  ", None).unwrap_err().contains("empty body"));
    }
}
