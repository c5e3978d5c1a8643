//! The settler's batch calls, without the I/O: the request entries of one call (each
//! identified by its position), what SQS's answer means for each entry (`Outcome`), and
//! what becomes of it (`Fate`: done, refused for good, retried, or given up after two
//! minutes of failures). The clock is a parameter.

use super::pending::{Change, Dead, Entry};
use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{
    BatchResultErrorEntry, ChangeMessageVisibilityBatchRequestEntry,
    DeleteMessageBatchRequestEntry, MessageAttributeValue, SendMessageBatchRequestEntry,
};
use std::time::{Duration, Instant};

/// How long a failed settle call is retried before the message is left to SQS's
/// redelivery (it reappears after its visibility timeout: nothing is lost).
pub(super) const SETTLE_GIVE_UP: Duration = Duration::from_secs(120);

/// The group of a dead letter sent to a FIFO dead-letter queue from a standard queue
/// (SQS requires one on a FIFO queue).
const DEAD_LETTER_GROUP: &str = "chore-dead-letters";

pub(super) fn delete_entries(
    chunk: &[Entry],
) -> Result<Vec<DeleteMessageBatchRequestEntry>, String> {
    chunk
        .iter()
        .enumerate()
        .map(|(i, e)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(&e.receipt)
                .build()
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

pub(super) fn change_entries(
    chunk: &[Change],
) -> Result<Vec<ChangeMessageVisibilityBatchRequestEntry>, String> {
    chunk
        .iter()
        .enumerate()
        .map(|(i, c)| {
            ChangeMessageVisibilityBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(&c.entry.receipt)
                .visibility_timeout(c.secs)
                .build()
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

/// The entries sending `chunk` to the dead-letter queue, each with its body and message
/// attributes (so that a requeued Active Elastic Job message keeps its digest, and a
/// periodic one its path). A FIFO dead-letter queue needs a group (the message's own, else
/// a fixed one) and a deduplication id (the message id, so that a retried send does not
/// make a second copy).
pub(super) fn dead_entries(
    chunk: &[Dead],
    dlq_fifo: bool,
) -> Result<Vec<SendMessageBatchRequestEntry>, String> {
    chunk
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mut e = SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(&d.body);
            for a in &d.attributes {
                let value = MessageAttributeValue::builder()
                    .data_type(&a.data_type)
                    .set_string_value(a.string_value.clone())
                    .set_binary_value(a.binary_value.clone().map(Blob::new))
                    .build()?;
                e = e.message_attributes(&a.name, value);
            }
            if dlq_fifo {
                e = e
                    .message_group_id(d.group.clone().unwrap_or_else(|| DEAD_LETTER_GROUP.into()))
                    .message_deduplication_id(&d.entry.id);
            }
            e.build()
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

/// What a batch call said about its entries (by position in the call).
#[derive(Debug, Default, PartialEq)]
pub(super) struct Outcome {
    /// Positions SQS refused for good (the sender's fault: a stale receipt, say).
    refused: Vec<(usize, String)>,
    /// Positions that failed for a reason worth another try.
    failed: Vec<(usize, String)>,
}

/// What becomes of one entry after its call.
#[derive(Debug, PartialEq)]
pub(super) enum Fate<'a> {
    /// Settled.
    Done,
    /// Refused for good: dropped (SQS may deliver the message again).
    Refused(&'a str),
    /// Failed: kept for another try.
    Retry(&'a str),
    /// Failed for too long: dropped (SQS will deliver the message again).
    GiveUp(&'a str),
}

impl Outcome {
    /// The answer to a call that went through: the entries SQS lists as failed, by the
    /// sender's fault (refused) or not (worth a retry). Entries not listed succeeded.
    pub fn of(failed: &[BatchResultErrorEntry]) -> Outcome {
        let mut o = Outcome::default();
        for f in failed {
            let Ok(i) = f.id().parse::<usize>() else {
                continue;
            };
            let error = format!("{}: {}", f.code(), f.message().unwrap_or(""));
            if f.sender_fault() {
                o.refused.push((i, error))
            } else {
                o.failed.push((i, error))
            }
        }
        o
    }

    /// A call that failed as a whole (network, throttling): every entry is worth a retry.
    pub fn call_failed(entries: usize, error: String) -> Outcome {
        Outcome {
            refused: Vec::new(),
            failed: (0..entries).map(|i| (i, error.clone())).collect(),
        }
    }

    /// Every failure retried, refusals too: what a dead-letter send needs, since a dead
    /// letter not sent must not be deleted.
    pub fn retry_refused(mut self) -> Outcome {
        self.failed.append(&mut self.refused);
        self
    }

    /// The fate at `now` of the entry at position `i`, whose calls have been failing since
    /// `failing_since` (set here on its first failure).
    pub fn fate(&self, i: usize, failing_since: &mut Option<Instant>, now: Instant) -> Fate<'_> {
        if let Some((_, error)) = self.refused.iter().find(|(f, _)| *f == i) {
            return Fate::Refused(error);
        }
        let Some((_, error)) = self.failed.iter().find(|(f, _)| *f == i) else {
            return Fate::Done;
        };
        let since = *failing_since.get_or_insert(now);
        if now.saturating_duration_since(since) > SETTLE_GIVE_UP {
            Fate::GiveUp(error)
        } else {
            Fate::Retry(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(id: &str, code: &str, sender_fault: bool) -> BatchResultErrorEntry {
        BatchResultErrorEntry::builder()
            .id(id)
            .code(code)
            .message("why")
            .sender_fault(sender_fault)
            .build()
            .unwrap()
    }

    fn entry(n: usize) -> Entry {
        Entry::new(format!("m{n}"), format!("r{n}"))
    }

    #[test]
    fn entries_are_identified_by_position() {
        let d = delete_entries(&[entry(0), entry(1)]).unwrap();
        assert_eq!((d[1].id(), d[1].receipt_handle()), ("1", "r1"));
        let c = change_entries(&[Change {
            entry: entry(5),
            secs: 42,
        }])
        .unwrap();
        assert_eq!(
            (c[0].id(), c[0].receipt_handle(), c[0].visibility_timeout()),
            ("0", "r5", Some(42))
        );
    }

    #[test]
    fn a_dead_letter_to_a_standard_queue_is_just_its_body() {
        let d = Dead {
            entry: entry(3),
            body: "{\"class\":\"A\"}".into(),
            group: Some("g".into()),
            attributes: Vec::new(),
        };
        let e = dead_entries(&[d], false).unwrap();
        assert_eq!((e[0].id(), e[0].message_body()), ("0", "{\"class\":\"A\"}"));
        assert_eq!(e[0].message_group_id(), None);
        assert_eq!(e[0].message_deduplication_id(), None);
    }

    #[test]
    fn a_dead_letter_keeps_its_message_attributes_binary_included() {
        let attr = |name: &str, data_type: &str, s: Option<&str>, b: Option<&[u8]>| {
            crate::queue::Attribute {
                name: name.into(),
                data_type: data_type.into(),
                string_value: s.map(Into::into),
                binary_value: b.map(<[u8]>::to_vec),
            }
        };
        let d = Dead {
            entry: entry(3),
            body: "{}".into(),
            group: None,
            attributes: vec![
                attr("beanstalk.sqsd.path", "String", Some("/tasks/x"), None),
                attr("digest", "String.sha1", Some("abc"), None),
                attr("n", "Number", Some("1.5"), None),
                attr("raw", "Binary", None, Some(&[0, 255, 10])),
            ],
        };
        let e = dead_entries(&[d], false).unwrap();
        let a = e[0].message_attributes().unwrap();
        assert_eq!(a.len(), 4);
        assert_eq!(a["beanstalk.sqsd.path"].string_value(), Some("/tasks/x"));
        assert_eq!(a["digest"].data_type(), "String.sha1");
        assert_eq!(
            (a["n"].data_type(), a["n"].string_value()),
            ("Number", Some("1.5"))
        );
        assert_eq!(a["raw"].data_type(), "Binary");
        assert_eq!(a["raw"].binary_value().unwrap().as_ref(), &[0, 255, 10]);
    }

    #[test]
    fn a_dead_letter_to_a_fifo_queue_keeps_its_group_and_dedupes_on_its_id() {
        let grouped = Dead {
            entry: entry(3),
            body: "{}".into(),
            group: Some("g".into()),
            attributes: Vec::new(),
        };
        let ungrouped = Dead {
            entry: entry(4),
            body: "{}".into(),
            group: None,
            attributes: Vec::new(),
        };
        let e = dead_entries(&[grouped, ungrouped], true).unwrap();
        assert_eq!(e[0].message_group_id(), Some("g"));
        assert_eq!(e[0].message_deduplication_id(), Some("m3"));
        assert_eq!(e[1].message_group_id(), Some("chore-dead-letters"));
        assert_eq!(e[1].message_deduplication_id(), Some("m4"));
    }

    #[test]
    fn sender_faults_are_refused_and_the_rest_retried() {
        let o = Outcome::of(&[
            error("0", "ReceiptHandleIsInvalid", true),
            error("2", "InternalError", false),
            error("junk", "InternalError", false),
        ]);
        let now = Instant::now();
        let mut since = None;
        assert_eq!(
            o.fate(0, &mut since, now),
            Fate::Refused("ReceiptHandleIsInvalid: why")
        );
        assert_eq!(since, None, "a refusal is not a failure to retry");
        assert_eq!(o.fate(1, &mut since, now), Fate::Done);
        assert_eq!(
            o.fate(2, &mut since, now),
            Fate::Retry("InternalError: why")
        );
        assert_eq!(since, Some(now));
    }

    #[test]
    fn a_failed_call_retries_every_entry() {
        let o = Outcome::call_failed(3, "DeleteMessageBatch: timeout".into());
        let now = Instant::now();
        for i in 0..3 {
            assert_eq!(
                o.fate(i, &mut None, now),
                Fate::Retry("DeleteMessageBatch: timeout")
            );
        }
        assert_eq!(o.fate(3, &mut None, now), Fate::Done);
    }

    #[test]
    fn a_refused_dead_letter_is_retried() {
        let o = Outcome::of(&[error("0", "InvalidParameterValue", true)]).retry_refused();
        assert_eq!(
            o.fate(0, &mut None, Instant::now()),
            Fate::Retry("InvalidParameterValue: why")
        );
    }

    #[test]
    fn an_entry_is_given_up_after_two_minutes_of_failures() {
        let o = Outcome::call_failed(1, "down".into());
        let t0 = Instant::now();
        let mut since = None;
        assert_eq!(o.fate(0, &mut since, t0), Fate::Retry("down"));
        assert_eq!(
            o.fate(0, &mut since, t0 + SETTLE_GIVE_UP),
            Fate::Retry("down")
        );
        assert_eq!(
            o.fate(
                0,
                &mut since,
                t0 + SETTLE_GIVE_UP + Duration::from_millis(1)
            ),
            Fate::GiveUp("down")
        );
        assert_eq!(since, Some(t0), "the first failure is when it started");
    }
}
