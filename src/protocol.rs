//! The master↔worker wire protocol (docs/decisions/0004-workers-are-re-executed.md and
//! 0005-the-master-settles-every-message.md).
//!
//! The master writes one JSON line to the worker's stdin, a `BatchSpec`: the queue, its
//! handlers and the messages, and closes it. The worker writes one `Report` line per
//! message to stdout as soon as that message finishes; the master settles each one.
//! Both ends live in this crate, so the format is private and may change between versions
//! (a master only ever talks to workers of its own binary).

use crate::config::Handler;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One batch for one worker.
#[derive(Debug, Serialize, Deserialize)]
pub struct BatchSpec<'a> {
    pub queue: String,
    pub handler: Option<Handler>,
    #[serde(default)]
    pub classes: BTreeMap<String, Handler>,
    /// Append worker (and handler) stderr here instead of the master's stderr.
    pub log_file: Option<PathBuf>,
    pub log_format: crate::config::LogFormat,
    pub log_level: String,
    /// The queue's `memory-limit` in bytes: the worker's data limit, which its handlers
    /// inherit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<u64>,
    #[serde(borrow)]
    pub messages: Vec<JobSpec<'a>>,
}

/// One message of a batch.
#[derive(Debug, Serialize, Deserialize)]
pub struct JobSpec<'a> {
    pub id: String,
    pub attempt: u32,
    pub class: Option<String>,
    /// The FIFO message group: after a failure, the rest of its group is skipped.
    #[serde(default)]
    pub group: Option<String>,
    /// The body exactly as published (the consumer checked that it is JSON), as a JSON
    /// string: a body may span lines, and this protocol is one line per batch.
    #[serde(borrow)]
    pub body: Cow<'a, str>,
    /// What the queue says about the message beyond its body, when it says anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<MessageMeta>,
}

/// A message's metadata, as handlers get it (docs/handlers.md, "Message metadata").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageMeta {
    /// When it was sent, in Unix seconds (SQS `SentTimestamp`; filesystem: its file's
    /// modification time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<f64>,
    /// When SQS first delivered it, in Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_received_at: Option<f64>,
    /// SQS `SenderId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_id: Option<String>,
    /// Message attributes, in the order received (SQS: sorted by name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<AttributeSpec>,
}

/// One message attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributeSpec {
    pub name: String,
    /// `String`, `Number`, `Binary`, or a custom subtype such as `Number.float`.
    #[serde(rename = "type")]
    pub data_type: String,
    /// The value of a String or Number attribute; absent for Binary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// How one message ended, in the worker's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Done: delete it.
    Ok,
    /// Try again later (after `delay`, or the queue's backoff); counts as an attempt.
    Retry,
    /// Failed; retried with backoff until max-attempts.
    Fail,
    /// Can never succeed: dead-letter it now.
    Permanent,
    /// Not run: an earlier message of its FIFO group failed in this batch. Given back, so
    /// the group keeps its order (SQS still counts the receive).
    Skip,
    /// Its batch process ended without a result for it and for at least one other
    /// message: which one made it end is not known yet. The master runs such messages
    /// again in smaller batches instead of charging each an attempt
    /// (docs/decisions/0022-a-crashed-batch-is-bisected.md); elsewhere it is a failure.
    Unfinished,
}

/// How the error of a `Skip` begins when the batch's preloader could not fork it: the
/// master then replaces that preloader.
pub const PRELOADER_UNAVAILABLE: &str = "preloader unavailable: ";

/// One result line from worker to master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Index of the message in the batch.
    pub i: usize,
    pub verdict: Verdict,
    /// Seconds to wait before the retry, when the handler asked for a specific delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The longest line `for_each_line` hands over whole; a longer one comes in pieces of this
/// size. Results and reports are far shorter: the bound is for a child printing without
/// newlines, which must not grow the reader's memory without end.
pub const MAX_PROTOCOL_LINE: usize = 1 << 20;

/// Call `each` with every line of `from` (without its line ending) until the end or until
/// `each` returns false. Lines are read as bytes and decoded lossily: a stray non-UTF-8
/// print from a child must not end the reading (and with it the child, by SIGPIPE) while
/// results are still to come.
pub fn for_each_line(from: impl std::io::Read, mut each: impl FnMut(&str) -> bool) {
    use std::io::{BufRead, Read};
    let mut reader = std::io::BufReader::new(from);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match (&mut reader)
            .take(MAX_PROTOCOL_LINE as u64)
            .read_until(b'\n', &mut raw)
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if !each(String::from_utf8_lossy(&raw).trim_end_matches(['\n', '\r'])) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_longer_than_the_bound_comes_in_pieces() {
        let mut input = vec![b'x'; MAX_PROTOCOL_LINE * 2 + 5];
        input.extend_from_slice(b"\n{\"i\":0}\n");
        let mut got = Vec::new();
        for_each_line(&input[..], |l| {
            got.push(l.len());
            true
        });
        assert_eq!(got, [MAX_PROTOCOL_LINE, MAX_PROTOCOL_LINE, 5, 7]);
    }
}
