//! The SQS calls the verbs share, on `queue::sqs`'s one client: counts, receiving with a
//! chosen visibility, letting received messages go again, deleting, and a received
//! message as a dump record.

use super::record::Record;
use super::{Fail, Outcome};
use crate::queue::sqs::Sqs;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageSystemAttributeName, QueueAttributeName,
};
use std::collections::BTreeMap;

fn failed(what: &str, url: &str, e: impl std::error::Error + ProvideErrorMetadata) -> Fail {
    // A queue that does not exist is a mistake in the command, as for a name (exit 2).
    if matches!(
        e.code(),
        Some("AWS.SimpleQueueService.NonExistentQueue" | "QueueDoesNotExist")
    ) {
        return Fail::Usage(format!("SQS queue {url} does not exist"));
    }
    Fail::Failed(format!("{what} on {url}: {}", DisplayErrorContext(&e)))
}

/// (visible, in flight, delayed) messages, as SQS approximates them.
pub fn counts(sqs: &Sqs, url: &str) -> Outcome<(u64, u64, u64)> {
    let out = sqs
        .block_on(
            sqs.client
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
                .send(),
        )
        .map_err(|e| failed("GetQueueAttributes", url, e))?;
    let n = |k: QueueAttributeName| -> u64 {
        out.attributes()
            .and_then(|a| a.get(&k))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((
        n(QueueAttributeName::ApproximateNumberOfMessages),
        n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        n(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
    ))
}

/// Up to ten messages, hidden for `visibility` seconds, with every attribute.
pub fn receive(sqs: &Sqs, url: &str, visibility: u32, wait: u32) -> Outcome<Vec<Message>> {
    let out = sqs
        .block_on(
            sqs.client
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .visibility_timeout(visibility as i32)
                .wait_time_seconds(wait as i32)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send(),
        )
        .map_err(|e| failed("ReceiveMessage", url, e))?;
    Ok(out.messages.unwrap_or_default())
}

/// Make received messages visible again now (their receipts, ten per call).
pub fn release(sqs: &Sqs, url: &str, receipts: &[String]) -> Outcome {
    for chunk in receipts.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, r)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(r)
                    .visibility_timeout(0)
                    .build()
                    .map_err(|e| Fail::Failed(e.to_string()))
            })
            .collect::<Outcome<Vec<_>>>()?;
        sqs.block_on(
            sqs.client
                .change_message_visibility_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send(),
        )
        .map_err(|e| failed("ChangeMessageVisibilityBatch", url, e))?;
    }
    Ok(())
}

/// Delete up to ten received messages; the receipts SQS refused.
pub fn delete(sqs: &Sqs, url: &str, receipts: &[String]) -> Outcome<Vec<String>> {
    let entries = receipts
        .iter()
        .enumerate()
        .map(|(i, r)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(r)
                .build()
                .map_err(|e| Fail::Failed(e.to_string()))
        })
        .collect::<Outcome<Vec<_>>>()?;
    let out = sqs
        .block_on(
            sqs.client
                .delete_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send(),
        )
        .map_err(|e| failed("DeleteMessageBatch", url, e))?;
    Ok(out
        .failed()
        .iter()
        .filter_map(|f| f.id().parse::<usize>().ok())
        .filter_map(|i| receipts.get(i).cloned())
        .collect())
}

fn system(m: &Message, k: MessageSystemAttributeName) -> Option<&str> {
    m.attributes().and_then(|a| a.get(&k)).map(String::as_str)
}

/// When it was sent, Unix seconds.
pub fn sent_at(m: &Message) -> Option<i64> {
    system(m, MessageSystemAttributeName::SentTimestamp)
        .and_then(|t| t.parse::<i64>().ok())
        .map(|ms| ms / 1000)
}

/// How many times it has been received (this receive included).
pub fn receive_count(m: &Message) -> u32 {
    system(m, MessageSystemAttributeName::ApproximateReceiveCount)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

pub fn group(m: &Message) -> Option<&str> {
    system(m, MessageSystemAttributeName::MessageGroupId)
}

/// A received message as a dump record. `attempts` counts the receives before this one
/// (the verb's own receive is not an attempt).
pub fn record(queue: &str, state: &str, m: &Message) -> Record {
    let body = m.body().unwrap_or_default().to_string();
    let mut attributes = BTreeMap::new();
    attributes.insert("queue".into(), queue.to_string());
    attributes.insert("state".into(), state.to_string());
    attributes.insert(
        "attempts".into(),
        receive_count(m).saturating_sub(1).to_string(),
    );
    if let Some(t) = sent_at(m) {
        attributes.insert("sent_at".into(), t.to_string());
    }
    if let Some(g) = group(m) {
        attributes.insert("group".into(), g.to_string());
    }
    if let Some(class) = crate::consumer::classify(&body).ok().flatten() {
        attributes.insert("class".into(), class);
    }
    for (name, v) in m.message_attributes().into_iter().flatten() {
        super::attrs::to_entries(name, v, &mut attributes);
    }
    Record {
        id: m.message_id().unwrap_or_default().to_string(),
        attributes,
        body,
    }
}
