//! Receiving: one `SqsConsumer` per consumer thread long-polls its queue, gives the poll up
//! when the master stops, and turns each SQS message into a `Delivery` (`delivery`, pure:
//! the attempt from `ApproximateReceiveCount`, the FIFO group, the first heartbeat, and the
//! times, sender and message attributes an HTTP handler forwards as headers).
//!
//! After a receive that came back full, the next one is a short poll (`poll_wait`): the
//! master may be holding a partial batch that starts only once a receive says the queue has
//! nothing more (docs/decisions/0013-when-a-batch-flushes.md), and a long poll would say so
//! only after its whole wait. A short poll costs no more calls than the long one it
//! replaces (under a backlog it returns messages; when the backlog ends it is the one empty
//! receive), and a queue that is idle still sees only long polls.

use super::{MAX_BATCH, Sqs};
use crate::queue::{Attribute, Consume, Delivery, Meta, Received, Stop};
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use std::io;
use std::time::{Duration, Instant, SystemTime};

/// Receives for one consumer thread.
pub(super) struct SqsConsumer {
    pub sqs: Sqs,
    pub url: String,
    /// The long poll's wait (≤ 20 s).
    pub wait: Duration,
    /// The queue's visibility timeout: the first heartbeat is due at half of it.
    pub visibility: Duration,
    /// Ask for each message's group.
    pub fifo: bool,
    /// The last receive came back full: the queue may have more right now.
    pub more: bool,
}

/// How long a receive waits for messages: nothing when the last receive came back full
/// (the queue had more to give a moment ago, and a partial batch may be waiting to learn
/// whether it has more), else the long poll's `wait`.
fn poll_wait(last_was_full: bool, wait: Duration) -> Duration {
    if last_was_full { Duration::ZERO } else { wait }
}

impl Consume for SqsConsumer {
    fn receive(&mut self, max: usize, stop: &Stop) -> io::Result<Received> {
        let max = max.clamp(1, MAX_BATCH);
        let mut req = self
            .sqs
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max as i32)
            .wait_time_seconds(poll_wait(self.more, self.wait).as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            // What an HTTP handler forwards (the SQS daemon's headers); no extra calls.
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_system_attribute_names(
                MessageSystemAttributeName::ApproximateFirstReceiveTimestamp,
            )
            .message_system_attribute_names(MessageSystemAttributeName::SenderId)
            .message_attribute_names("All");
        if self.fifo {
            req = req.message_system_attribute_names(MessageSystemAttributeName::MessageGroupId);
        }
        let outcome = self.sqs.block_on(async {
            tokio::select! {
                r = req.send() => Some(r),
                _ = stopped(stop) => None,
            }
        });
        // Abandoned because chore is stopping. (Should SQS have answered at that very
        // moment, those messages reappear after their visibility timeout.)
        let Some(result) = outcome else {
            self.more = false;
            return Ok(Received {
                short: true,
                ..Received::default()
            });
        };
        let out = result.map_err(|e| {
            io::Error::other(format!(
                "ReceiveMessage failed: {}",
                DisplayErrorContext(&e)
            ))
        });
        // A failed receive is followed by a long poll: errors are not retried in a spin.
        self.more = false;
        let out = out?;
        let now = Instant::now();
        let deliveries: Vec<Delivery> = out
            .messages()
            .iter()
            .filter_map(|m| delivery(m, now, self.visibility))
            .collect();
        // Counted before filtering, which drops only what SQS sent malformed.
        let short = out.messages().len() < max;
        self.more = !short;
        Ok(Received {
            deliveries,
            short,
            ..Received::default()
        })
    }
}

/// Resolves once `stop` has fired (checked every 50 ms).
async fn stopped(stop: &Stop) {
    while !stop.fired() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The delivery of message `m`, received at `now` from a queue whose visibility timeout is
/// `visibility`; None for a message without an id or receipt handle (it cannot be settled).
fn delivery(m: &Message, now: Instant, visibility: Duration) -> Option<Delivery> {
    let (Some(id), Some(receipt)) = (m.message_id(), m.receipt_handle()) else {
        return None;
    };
    let attr = |k: MessageSystemAttributeName| m.attributes().and_then(|a| a.get(&k));
    // SQS counts every receive, so its count is the attempt (1 when it is missing or
    // garbled).
    let attempt = attr(MessageSystemAttributeName::ApproximateReceiveCount)
        .and_then(|c| c.parse().ok())
        .unwrap_or(1);
    Some(Delivery {
        id: id.to_string(),
        receipt: receipt.to_string(),
        body: m.body().unwrap_or_default().to_string(),
        attempt,
        received_at: now,
        renew_at: now + visibility / 2,
        class: None,
        group: attr(MessageSystemAttributeName::MessageGroupId).cloned(),
        dedupe_key: None,
        meta: Some(Box::new(meta(m))),
        post_to: None,
    })
}

/// Times, sender and message attributes (sorted by name, as SQS returns a map).
fn meta(m: &Message) -> Meta {
    let attr = |k: MessageSystemAttributeName| m.attributes().and_then(|a| a.get(&k));
    let time = |k| {
        let ms: u64 = attr(k)?.parse().ok()?;
        SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(ms))
    };
    let mut attributes: Vec<Attribute> = m
        .message_attributes()
        .into_iter()
        .flatten()
        .map(|(name, v)| Attribute {
            name: name.clone(),
            data_type: v.data_type().to_owned(),
            string_value: v.string_value().map(str::to_owned),
            binary_value: v.binary_value().map(|b| b.as_ref().to_vec()),
        })
        .collect();
    attributes.sort_by(|a, b| a.name.cmp(&b.name));
    Meta {
        sent_at: time(MessageSystemAttributeName::SentTimestamp),
        first_received_at: time(MessageSystemAttributeName::ApproximateFirstReceiveTimestamp),
        sender_id: attr(MessageSystemAttributeName::SenderId).cloned(),
        attributes,
        unread_bytes: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sqs::types::MessageSystemAttributeName as A;

    fn message() -> aws_sdk_sqs::types::builders::MessageBuilder {
        Message::builder()
            .message_id("m-1")
            .receipt_handle("r-1")
            .body("{\"class\":\"Job\",\"args\":[]}")
    }

    #[test]
    fn a_message_becomes_a_delivery_with_its_attempt_and_group() {
        let now = Instant::now();
        let m = message()
            .attributes(A::ApproximateReceiveCount, "3")
            .attributes(A::MessageGroupId, "g-7")
            .attributes(A::SentTimestamp, "1700000000000")
            .build();
        let d = delivery(&m, now, Duration::from_secs(30)).unwrap();
        assert_eq!(d.id, "m-1");
        assert_eq!(d.receipt, "r-1");
        assert_eq!(d.body, "{\"class\":\"Job\",\"args\":[]}");
        assert_eq!(d.attempt, 3);
        assert_eq!(d.group.as_deref(), Some("g-7"));
        assert_eq!(d.received_at, now);
        assert_eq!(d.renew_at, now + Duration::from_secs(15));
        assert_eq!(d.class, None);
        assert_eq!(d.dedupe_key, None);
    }

    #[test]
    fn times_sender_and_attributes_are_kept_for_http_handlers() {
        use aws_sdk_sqs::types::MessageAttributeValue;
        let value = |t: &str, v: &str| {
            MessageAttributeValue::builder()
                .data_type(t)
                .string_value(v)
                .build()
                .unwrap()
        };
        let m = message()
            .attributes(A::SentTimestamp, "1700000000123")
            .attributes(A::ApproximateFirstReceiveTimestamp, "1700000001000")
            .attributes(A::SenderId, "AROA:i-1")
            .message_attributes("origin", value("String", "AEJ"))
            .message_attributes("count", value("Number.float", "1.5"))
            .build();
        let d = delivery(&m, Instant::now(), Duration::from_secs(30)).unwrap();
        let meta = d.meta.unwrap();
        let secs = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_millis()
        };
        assert_eq!(meta.sent_at.map(secs), Some(1_700_000_000_123));
        assert_eq!(meta.first_received_at.map(secs), Some(1_700_000_001_000));
        assert_eq!(meta.sender_id.as_deref(), Some("AROA:i-1"));
        let names: Vec<_> = meta
            .attributes
            .iter()
            .map(|a| (a.name.as_str(), a.data_type.as_str()))
            .collect();
        assert_eq!(names, [("count", "Number.float"), ("origin", "String")]);
        assert_eq!(meta.attributes[1].string_value.as_deref(), Some("AEJ"));
    }

    #[test]
    fn without_a_receive_count_the_attempt_is_the_first() {
        let now = Instant::now();
        let plain = delivery(&message().build(), now, Duration::from_secs(30)).unwrap();
        assert_eq!(plain.attempt, 1);
        assert_eq!(plain.group, None);
        let garbled = message()
            .attributes(A::ApproximateReceiveCount, "many")
            .build();
        assert_eq!(
            delivery(&garbled, now, Duration::from_secs(30))
                .unwrap()
                .attempt,
            1
        );
    }

    #[test]
    fn a_missing_body_is_an_empty_one() {
        let m = Message::builder()
            .message_id("m")
            .receipt_handle("r")
            .build();
        let d = delivery(&m, Instant::now(), Duration::from_secs(30)).unwrap();
        assert_eq!(d.body, "");
    }

    #[test]
    fn a_message_without_id_or_receipt_is_skipped() {
        let now = Instant::now();
        let v = Duration::from_secs(30);
        let no_id = Message::builder().receipt_handle("r").body("{}").build();
        let no_receipt = Message::builder().message_id("m").body("{}").build();
        assert!(delivery(&no_id, now, v).is_none());
        assert!(delivery(&no_receipt, now, v).is_none());
    }

    #[test]
    fn a_full_receive_is_followed_by_a_short_poll_anything_else_by_a_long_one() {
        let wait = Duration::from_secs(20);
        assert_eq!(poll_wait(true, wait), Duration::ZERO);
        assert_eq!(poll_wait(false, wait), wait);
    }

    #[test]
    fn the_first_heartbeat_is_due_at_half_the_visibility_timeout() {
        let now = Instant::now();
        let d = delivery(&message().build(), now, Duration::from_secs(1)).unwrap();
        assert_eq!(d.renew_at, now + Duration::from_millis(500));
    }
}
