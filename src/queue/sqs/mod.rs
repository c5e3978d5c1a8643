//! Amazon SQS, used the way its cost and delivery model want (design decisions 2, 7, 8, 11).
//!
//! * Receiving: long polls (up to 20 s) of up to `queue-polling-size` (≤ 10) messages,
//!   never more than the gate allows, asking for `ApproximateReceiveCount` (the attempt)
//!   and `MessageGroupId` (FIFO order). A parked long poll is abandoned as soon as the
//!   master stops, instead of being waited out.
//! * Settling: one settler thread per queue coalesces every worker's results into
//!   `DeleteMessageBatch` and `ChangeMessageVisibilityBatch` calls of up to 10 entries,
//!   flushing when ten of a kind are waiting or after a short window. Failed entries are
//!   logged and retried; a receipt SQS no longer accepts is logged and dropped (SQS will
//!   deliver the message again: at least once).
//! * A retry is a visibility change to the backoff; giving a message back is a change to
//!   0; the heartbeat (`renew`) extends a held message's visibility by the queue's
//!   visibility timeout, at half of it, until its worker's deadline kills it.
//! * Dead-lettering sends the body to the queue's dead-letter queue (when one is
//!   configured), then deletes the original; without one, the message is deleted (the
//!   master logs its id and body size).
//!
//! All calls run on one small tokio runtime shared by every SQS queue of the process; the
//! rest of chore stays synchronous.

use super::{Consume, Delivery, Queue, Received, Stop};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::io;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most entries SQS takes in one batch call, and most messages in one receive.
pub const MAX_BATCH: usize = 10;
/// Most bytes of message bodies in one batch call (SQS's long-standing limit).
pub const MAX_PAYLOAD: usize = 256 * 1024;
/// Longest long poll SQS allows.
pub const MAX_WAIT: Duration = Duration::from_secs(20);
/// Longest visibility SQS allows (12 hours).
const MAX_VISIBILITY: i32 = 43_200;
/// How long a visibility change or dead letter waits for others to fill a batch call.
const FLUSH_WINDOW: Duration = Duration::from_millis(50);
/// How long a delete may wait for others (shortened for short visibility timeouts).
const DELETE_WINDOW: Duration = Duration::from_secs(1);
/// Pause between retries of failed settle calls.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// How long a failed settle call is retried before the message is left to SQS's
/// redelivery (it reappears after its visibility timeout: nothing is lost).
const SETTLE_GIVE_UP: Duration = Duration::from_secs(120);

/// How to reach SQS: shared by every SQS queue of the process.
#[derive(Clone)]
pub struct Sqs {
    pub client: Client,
    rt: Arc<tokio::runtime::Runtime>,
}

/// Connection settings: the standard AWS chain, optionally overridden.
#[derive(Debug, Clone, Default)]
pub struct SqsSettings {
    /// Endpoint URL; None = `AWS_ENDPOINT_URL_SQS` / `AWS_ENDPOINT_URL` / AWS.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Static credentials (Ruby Chore's `--aws-access-key` / `--aws-secret-key`).
    pub credentials: Option<(String, String)>,
}

impl Sqs {
    pub fn connect(settings: &SqsSettings) -> io::Result<Sqs> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sqs-io")
            .enable_all()
            .build()?;
        // Every call gets an attempt timeout: a connection that goes silent (a lost NAT
        // entry, a paused endpoint) must not hang a settler or a receive for ever. It
        // exceeds the longest long poll (20 s).
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(MAX_WAIT + Duration::from_secs(10))
            .build();
        let mut loader =
            aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(timeouts);
        if let Some(endpoint) = &settings.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some(region) = &settings.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some((key, secret)) = &settings.credentials {
            loader = loader.credentials_provider(aws_sdk_sqs::config::Credentials::new(
                key.clone(),
                secret.clone(),
                None,
                None,
                "chore-static",
            ));
        }
        let conf = rt.block_on(loader.load());
        Ok(Sqs {
            client: Client::new(&conf),
            rt: Arc::new(rt),
        })
    }

    /// Run one SDK future to completion.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Resolve a queue name (or URL) to its URL, creating it when asked.
    pub fn queue_url(&self, name_or_url: &str, create: bool) -> Result<String, OpenError> {
        if name_or_url.starts_with("http://") || name_or_url.starts_with("https://") {
            return Ok(name_or_url.to_string());
        }
        let got = self.block_on(self.client.get_queue_url().queue_name(name_or_url).send());
        match got {
            Ok(out) => Ok(out.queue_url().unwrap_or_default().to_string()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_queue_does_not_exist()) =>
            {
                if !create {
                    return Err(OpenError::Missing(format!(
                        "SQS queue `{name_or_url}` does not exist (create it, or set `create = true` on the queue)"
                    )));
                }
                let mut req = self.client.create_queue().queue_name(name_or_url);
                if name_or_url.ends_with(".fifo") {
                    req = req.attributes(QueueAttributeName::FifoQueue, "true");
                }
                let out = self.block_on(req.send()).map_err(|e| {
                    OpenError::Failed(format!(
                        "cannot create SQS queue `{name_or_url}`: {}",
                        DisplayErrorContext(&e)
                    ))
                })?;
                tracing::info!(queue = name_or_url, "created SQS queue");
                Ok(out.queue_url().unwrap_or_default().to_string())
            }
            Err(e) => Err(OpenError::Failed(format!(
                "cannot look up SQS queue `{name_or_url}`: {}",
                DisplayErrorContext(&e)
            ))),
        }
    }
}

/// One message to publish.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    pub body: String,
    /// FIFO message group.
    pub group: Option<String>,
    /// FIFO deduplication id.
    pub dedup: Option<String>,
    /// Seconds before it becomes visible (≤ 900).
    pub delay: Option<u32>,
}

impl Sqs {
    /// Publish up to ten messages in one `SendMessageBatch`; one result per message, in
    /// order: its MessageId, or why SQS refused it.
    pub fn send_batch(
        &self,
        url: &str,
        batch: &[Outgoing],
    ) -> Result<Vec<Result<String, String>>, String> {
        let entries = batch
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mut e = SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(&m.body);
                if let Some(g) = &m.group {
                    e = e.message_group_id(g);
                }
                if let Some(d) = &m.dedup {
                    e = e.message_deduplication_id(d);
                }
                if let Some(s) = m.delay {
                    e = e.delay_seconds(s as i32);
                }
                e.build()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let out = self
            .block_on(
                self.client
                    .send_message_batch()
                    .queue_url(url)
                    .set_entries(Some(entries))
                    .send(),
            )
            .map_err(|e| format!("SendMessageBatch failed: {}", DisplayErrorContext(&e)))?;
        let mut results: Vec<Result<String, String>> =
            vec![Err("no answer from SQS".into()); batch.len()];
        for ok in out.successful() {
            if let Some(slot) = ok
                .id()
                .parse::<usize>()
                .ok()
                .and_then(|i| results.get_mut(i))
            {
                *slot = Ok(ok.message_id().to_string());
            }
        }
        for f in out.failed() {
            if let Some(slot) = f
                .id()
                .parse::<usize>()
                .ok()
                .and_then(|i| results.get_mut(i))
            {
                *slot = Err(format!("{}: {}", f.code(), f.message().unwrap_or("")));
            }
        }
        Ok(results)
    }
}

/// Why a queue could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// It does not exist: a configuration mistake (exit 2).
    Missing(String),
    /// SQS could not be asked (network, credentials).
    Failed(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Missing(m) | OpenError::Failed(m) => f.write_str(m),
        }
    }
}

/// What the settler sends to SQS.
enum Op {
    Delete {
        id: String,
        receipt: String,
    },
    Visibility {
        id: String,
        receipt: String,
        secs: i32,
    },
    DeadLetter {
        id: String,
        receipt: String,
        body: String,
        group: Option<String>,
    },
    /// Answer once everything before this has been sent.
    Flush(Sender<()>),
}

pub struct SqsQueue {
    name: String,
    url: String,
    visibility: Duration,
    fifo: bool,
    wait: Duration,
    sqs: Sqs,
    settle: Sender<Op>,
    settler: Mutex<Option<JoinHandle<()>>>,
}

/// A queue's options from the Chorefile.
#[derive(Debug, Clone, Default)]
pub struct SqsQueueOptions {
    /// Create the queue (and its dead-letter queue) when missing.
    pub create: bool,
    /// Long-poll wait (≤ 20 s).
    pub wait: Option<Duration>,
    /// Dead-letter queue name or URL.
    pub dead_letter_queue: Option<String>,
}

impl SqsQueue {
    /// Open `name` (or a URL): look it up once, read its visibility timeout, start its
    /// settler.
    pub fn open(sqs: &Sqs, name: &str, options: &SqsQueueOptions) -> Result<SqsQueue, OpenError> {
        let url = sqs.queue_url(name, options.create)?;
        let attrs = sqs
            .block_on(
                sqs.client
                    .get_queue_attributes()
                    .queue_url(&url)
                    .attribute_names(QueueAttributeName::VisibilityTimeout)
                    .attribute_names(QueueAttributeName::FifoQueue)
                    .send(),
            )
            .map_err(|e| {
                OpenError::Failed(format!(
                    "cannot read SQS queue `{name}`: {}",
                    DisplayErrorContext(&e)
                ))
            })?;
        let attr = |k: QueueAttributeName| attrs.attributes().and_then(|a| a.get(&k)).cloned();
        let visibility = attr(QueueAttributeName::VisibilityTimeout)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(30);
        let fifo = attr(QueueAttributeName::FifoQueue).is_some_and(|v| v == "true")
            || url.ends_with(".fifo");
        let dlq_url = match &options.dead_letter_queue {
            Some(dlq) => Some(sqs.queue_url(dlq, options.create)?),
            None => None,
        };
        let (settle, rx) = crossbeam_channel::unbounded();
        let ctx = Settler {
            name: name.to_string(),
            url: url.clone(),
            dlq_fifo: dlq_url.as_deref().is_some_and(|u| u.ends_with(".fifo")),
            dlq_url,
            sqs: sqs.clone(),
            // Deletes wait to fill a call, but never long: the message is still invisible
            // (at least half its visibility timeout remains after its last heartbeat), and
            // on a FIFO queue a delete is what frees the rest of the group.
            delete_window: if fifo {
                FLUSH_WINDOW
            } else {
                DELETE_WINDOW.min(Duration::from_secs(visibility.max(1)) / 4)
            },
        };
        let settler = std::thread::Builder::new()
            .name(format!("settle-{name}"))
            .spawn(move || ctx.run(rx))
            .map_err(|e| OpenError::Failed(e.to_string()))?;
        Ok(SqsQueue {
            name: name.to_string(),
            url,
            // Zero would make every held message due for renewal at once, forever.
            visibility: Duration::from_secs(visibility.max(1)),
            fifo,
            wait: options.wait.unwrap_or(MAX_WAIT).min(MAX_WAIT),
            sqs: sqs.clone(),
            settle,
            settler: Mutex::new(Some(settler)),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn is_fifo(&self) -> bool {
        self.fifo
    }

    fn send(&self, op: Op) -> io::Result<()> {
        self.settle
            .send(op)
            .map_err(|_| io::Error::other("the SQS settler has stopped"))
    }
}

/// Seconds of visibility SQS still allows this receipt (12 hours from the receive, less a
/// margin for the call's own delay).
fn visibility_left(d: &Delivery, now: Instant) -> i32 {
    MAX_VISIBILITY - whole_secs(now.saturating_duration_since(d.received_at)) - 30
}

fn whole_secs(d: Duration) -> i32 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).min(MAX_VISIBILITY as u64) as i32
}

impl Queue for SqsQueue {
    fn name(&self) -> &str {
        &self.name
    }

    fn timeout(&self) -> Duration {
        self.visibility
    }

    fn consumer(&self) -> io::Result<Box<dyn Consume>> {
        Ok(Box::new(SqsConsumer {
            sqs: self.sqs.clone(),
            url: self.url.clone(),
            wait: self.wait,
            visibility: self.visibility,
            fifo: self.fifo,
        }))
    }

    fn complete(&self, d: &Delivery) -> io::Result<()> {
        self.send(Op::Delete {
            id: d.id.clone(),
            receipt: d.receipt.clone(),
        })
    }

    fn retry(&self, d: &Delivery, delay: Duration) -> io::Result<()> {
        // SQS refuses a visibility that ends more than 12 hours after the receive.
        let secs = whole_secs(delay).min(visibility_left(d, Instant::now()).max(0));
        self.send(Op::Visibility {
            id: d.id.clone(),
            receipt: d.receipt.clone(),
            secs,
        })
    }

    fn dead_letter(&self, d: &Delivery, _reason: &str) -> io::Result<()> {
        self.send(Op::DeadLetter {
            id: d.id.clone(),
            receipt: d.receipt.clone(),
            body: d.body.clone(),
            group: d.group.clone(),
        })
    }

    fn give_back(&self, d: &Delivery) -> io::Result<()> {
        self.send(Op::Visibility {
            id: d.id.clone(),
            receipt: d.receipt.clone(),
            secs: 0,
        })
    }

    fn renew(&self, d: &mut Delivery, now: Instant) -> io::Result<()> {
        d.renew_at = now + self.visibility / 2;
        let left = visibility_left(d, now);
        if left <= 0 {
            // Held 12 hours: SQS allows no more; it will deliver the message again.
            tracing::error!(queue = %self.name, id = %d.id, "held for SQS's 12-hour visibility limit; it can no longer be extended and will be delivered again");
            d.renew_at = now + Duration::from_secs(86_400);
            return Ok(());
        }
        let secs = whole_secs(self.visibility).min(left);
        self.send(Op::Visibility {
            id: d.id.clone(),
            receipt: d.receipt.clone(),
            secs,
        })
    }

    fn ordered(&self) -> bool {
        self.fifo
    }

    fn leave_in_flight(&self, _d: &Delivery, _hold: Duration) -> io::Result<()> {
        // Nothing to do: SQS makes it visible again when its visibility timeout ends,
        // after its key (TTL = visibility − 10 s) has expired.
        Ok(())
    }

    fn flush(&self) {
        let (ack, done) = crossbeam_channel::bounded(1);
        if self.send(Op::Flush(ack)).is_ok() {
            let _ = done.recv_timeout(SETTLE_GIVE_UP + Duration::from_secs(5));
        }
    }
}

impl Drop for SqsQueue {
    fn drop(&mut self) {
        self.flush();
        // The settler ends when its channel closes; the sender is dropped with `self`.
        let _ = self.settler.lock().map(|mut s| s.take());
    }
}

/// Receives for one consumer thread.
struct SqsConsumer {
    sqs: Sqs,
    url: String,
    wait: Duration,
    visibility: Duration,
    fifo: bool,
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
            .wait_time_seconds(self.wait.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount);
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
            return Ok(Received {
                deliveries: Vec::new(),
                short: true,
            });
        };
        let out = result.map_err(|e| {
            io::Error::other(format!(
                "ReceiveMessage failed: {}",
                DisplayErrorContext(&e)
            ))
        })?;
        let now = Instant::now();
        let messages = out.messages();
        let mut deliveries = Vec::with_capacity(messages.len());
        for m in messages {
            let (Some(id), Some(receipt)) = (m.message_id(), m.receipt_handle()) else {
                continue;
            };
            let attr = |k: MessageSystemAttributeName| m.attributes().and_then(|a| a.get(&k));
            let attempt = attr(MessageSystemAttributeName::ApproximateReceiveCount)
                .and_then(|c| c.parse().ok())
                .unwrap_or(1);
            deliveries.push(Delivery {
                id: id.to_string(),
                receipt: receipt.to_string(),
                body: m.body().unwrap_or_default().to_string(),
                attempt,
                received_at: now,
                renew_at: now + self.visibility / 2,
                class: None,
                group: attr(MessageSystemAttributeName::MessageGroupId).cloned(),
                dedupe_key: None,
            });
        }
        let short = deliveries.len() < max;
        Ok(Received { deliveries, short })
    }
}

/// Resolves once `stop` has fired (checked every 50 ms).
async fn stopped(stop: &Stop) {
    while !stop.fired() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The settler thread of one queue.
struct Settler {
    name: String,
    url: String,
    dlq_url: Option<String>,
    dlq_fifo: bool,
    sqs: Sqs,
    /// How long a delete may wait for nine more to fill its call.
    delete_window: Duration,
}

/// A message waiting to be settled, with the time its calls started failing.
struct Entry {
    id: String,
    receipt: String,
    failing_since: Option<Instant>,
}

impl Entry {
    fn new(id: String, receipt: String) -> Entry {
        Entry {
            id,
            receipt,
            failing_since: None,
        }
    }
}

/// One waiting settlement of a kind: the entry plus what that kind needs.
trait Pending {
    fn entry(&mut self) -> &mut Entry;
    /// Bytes this entry adds to a call's payload (only bodies count).
    fn payload(&self) -> usize {
        0
    }
}

impl Pending for Entry {
    fn entry(&mut self) -> &mut Entry {
        self
    }
}

/// A visibility change to `secs`.
struct Change(Entry, i32);

impl Pending for Change {
    fn entry(&mut self) -> &mut Entry {
        &mut self.0
    }
}

/// A dead letter: its body and FIFO group go to the dead-letter queue.
struct Dead(Entry, String, Option<String>);

impl Pending for Dead {
    fn entry(&mut self) -> &mut Entry {
        &mut self.0
    }
    fn payload(&self) -> usize {
        self.1.len()
    }
}

/// What a batch call said about its entries (by position in the call).
struct Outcome {
    /// Positions SQS refused for good (the sender's fault: a stale receipt, say).
    refused: Vec<(usize, String)>,
    /// Positions that failed for a reason worth another try.
    failed: Vec<(usize, String)>,
}

impl Outcome {
    fn of(failed: &[aws_sdk_sqs::types::BatchResultErrorEntry]) -> Outcome {
        let mut o = Outcome {
            refused: Vec::new(),
            failed: Vec::new(),
        };
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
}

impl Settler {
    fn run(self, rx: Receiver<Op>) {
        let mut deletes: Vec<Entry> = Vec::new();
        let mut changes: Vec<Change> = Vec::new();
        let mut dead: Vec<Dead> = Vec::new();
        let mut open = true;
        loop {
            let waiting = !(deletes.is_empty() && changes.is_empty() && dead.is_empty());
            if !open && !waiting {
                break;
            }
            // Wait for work, or (with failed entries waiting) for their next try; then
            // gather what else arrives within the window, up to a full call.
            let mut next = if !open {
                None
            } else if !waiting {
                rx.recv().map_err(|_| open = false).ok()
            } else {
                match rx.recv_timeout(RETRY_PAUSE) {
                    Ok(op) => Some(op),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => {
                        open = false;
                        None
                    }
                }
            };
            let mut acks = Vec::new();
            // The gathering ends when a call is full, or when the oldest waiting entry of
            // any kind has waited its window.
            let mut window_end: Option<Instant> = None;
            loop {
                let window = match &next {
                    Some(Op::Delete { .. }) => Some(self.delete_window),
                    Some(Op::Visibility { .. } | Op::DeadLetter { .. }) => Some(FLUSH_WINDOW),
                    _ => None,
                };
                if let Some(w) = window {
                    let end = Instant::now() + w;
                    window_end = Some(window_end.map_or(end, |e| e.min(end)));
                }
                match next.take() {
                    Some(Op::Delete { id, receipt }) => deletes.push(Entry::new(id, receipt)),
                    Some(Op::Visibility { id, receipt, secs }) => {
                        // A newer change for the same receipt replaces one still waiting.
                        changes.retain(|c| c.0.receipt != receipt);
                        changes.push(Change(Entry::new(id, receipt), secs));
                    }
                    Some(Op::DeadLetter {
                        id,
                        receipt,
                        body,
                        group,
                    }) => dead.push(Dead(Entry::new(id, receipt), body, group)),
                    Some(Op::Flush(ack)) => acks.push(ack),
                    None => {}
                }
                let full = deletes.len() >= MAX_BATCH
                    || changes.len() >= MAX_BATCH
                    || dead.len() >= MAX_BATCH;
                let Some(end) = window_end else { break };
                if !acks.is_empty() || full || !open {
                    break;
                }
                match rx.recv_deadline(end) {
                    Ok(op) => next = Some(op),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            self.send_all(&mut deletes, &mut changes, &mut dead);
            if !acks.is_empty() {
                // A flush means "the master is exiting": try until done or given up.
                while !(deletes.is_empty() && changes.is_empty() && dead.is_empty()) {
                    std::thread::sleep(RETRY_PAUSE);
                    self.send_all(&mut deletes, &mut changes, &mut dead);
                }
                for ack in acks {
                    let _ = ack.send(());
                }
            }
        }
    }

    fn send_all(&self, deletes: &mut Vec<Entry>, changes: &mut Vec<Change>, dead: &mut Vec<Dead>) {
        // A delete makes a waiting visibility change for the same receipt moot.
        changes.retain(|c| !deletes.iter().any(|d| d.receipt == c.0.receipt));
        let mut sent_dead = Vec::new();
        match &self.dlq_url {
            Some(dlq) => {
                self.send(
                    dead,
                    "send to the dead-letter queue",
                    |chunk| self.send_dead(dlq, chunk),
                    |d| sent_dead.push(d.0),
                );
            }
            // No dead-letter queue: the message is deleted (the master logged it).
            None => sent_dead.extend(dead.drain(..).map(|d| d.0)),
        }
        deletes.extend(sent_dead.into_iter().map(|e| Entry::new(e.id, e.receipt)));
        self.send(deletes, "delete", |chunk| self.delete(chunk), |_| {});
        self.send(
            changes,
            "visibility change",
            |chunk| self.change(chunk),
            |_| {},
        );
    }

    /// Send `items` in calls of ten; keep what failed for another try (until it has failed
    /// for too long); hand each success to `done`.
    fn send<T: Pending>(
        &self,
        items: &mut Vec<T>,
        what: &str,
        call: impl Fn(&[T]) -> Result<Outcome, String>,
        mut done: impl FnMut(T),
    ) {
        let mut retry = Vec::new();
        let all = std::mem::take(items);
        let mut all = all.into_iter().peekable();
        while all.peek().is_some() {
            // Ten entries at most, and within SQS's payload limit per call (one always goes).
            let mut chunk: Vec<T> = Vec::with_capacity(MAX_BATCH);
            let mut bytes = 0;
            while let Some(next) = all.peek() {
                if chunk.len() == MAX_BATCH
                    || (!chunk.is_empty() && bytes + next.payload() > MAX_PAYLOAD)
                {
                    break;
                }
                bytes += next.payload();
                chunk.push(all.next().expect("peeked"));
            }
            let outcome = call(&chunk).unwrap_or_else(|error| Outcome {
                refused: Vec::new(),
                failed: (0..chunk.len()).map(|i| (i, error.clone())).collect(),
            });
            for (i, mut item) in chunk.into_iter().enumerate() {
                if let Some((_, error)) = outcome.refused.iter().find(|(f, _)| *f == i) {
                    let e = item.entry();
                    tracing::warn!(queue = %self.name, id = %e.id, error, "SQS refused the {what} (receipt no longer valid?); the message may be delivered again");
                } else if let Some((_, error)) = outcome.failed.iter().find(|(f, _)| *f == i) {
                    let e = item.entry();
                    let since = *e.failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > SETTLE_GIVE_UP {
                        tracing::error!(queue = %self.name, id = %e.id, error, "{what} kept failing; giving up (SQS will deliver the message again)");
                    } else {
                        tracing::warn!(queue = %self.name, id = %e.id, error, "{what} failed; will retry");
                        retry.push(item);
                    }
                } else {
                    done(item);
                }
            }
        }
        *items = retry;
    }

    fn delete(&self, chunk: &[Entry]) -> Result<Outcome, String> {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, e)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(&e.receipt)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let call = self
            .sqs
            .client
            .delete_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries));
        let out = self
            .sqs
            .block_on(call.send())
            .map_err(|e| format!("DeleteMessageBatch: {}", DisplayErrorContext(&e)))?;
        Ok(Outcome::of(out.failed()))
    }

    fn change(&self, chunk: &[Change]) -> Result<Outcome, String> {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, c)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(&c.0.receipt)
                    .visibility_timeout(c.1)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let call = self
            .sqs
            .client
            .change_message_visibility_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries));
        let out = self
            .sqs
            .block_on(call.send())
            .map_err(|e| format!("ChangeMessageVisibilityBatch: {}", DisplayErrorContext(&e)))?;
        Ok(Outcome::of(out.failed()))
    }

    fn send_dead(&self, dlq: &str, chunk: &[Dead]) -> Result<Outcome, String> {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let mut e = SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(&d.1);
                if self.dlq_fifo {
                    e = e
                        .message_group_id(
                            d.2.clone().unwrap_or_else(|| "chore-dead-letters".into()),
                        )
                        .message_deduplication_id(&d.0.id);
                }
                e.build()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let call = self
            .sqs
            .client
            .send_message_batch()
            .queue_url(dlq)
            .set_entries(Some(entries));
        let out = self
            .sqs
            .block_on(call.send())
            .map_err(|e| format!("SendMessageBatch: {}", DisplayErrorContext(&e)))?;
        // A refused dead letter is retried too: it must not be deleted unsent.
        let mut o = Outcome::of(out.failed());
        o.failed.append(&mut o.refused);
        Ok(o)
    }
}

/// An SQS queue that could not be opened at start for a reason other than "it does not
/// exist" (credentials not yet valid, SQS unreachable): chore starts anyway, serves its
/// other queues, and this one's consumers keep trying to open it (logging each failure,
/// backing off), so it starts consuming as soon as SQS answers.
pub struct LazySqsQueue {
    shared: Arc<LazyShared>,
}

struct LazyShared {
    name: String,
    sqs: Sqs,
    options: SqsQueueOptions,
    queue: std::sync::OnceLock<SqsQueue>,
    opening: Mutex<()>,
}

impl LazyShared {
    fn get(&self) -> io::Result<&SqsQueue> {
        if let Some(q) = self.queue.get() {
            return Ok(q);
        }
        let _one_at_a_time = self.opening.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(q) = self.queue.get() {
            return Ok(q);
        }
        let q = SqsQueue::open(&self.sqs, &self.name, &self.options)
            .map_err(|e| io::Error::other(e.to_string()))?;
        tracing::info!(queue = %self.name, "SQS queue opened; consuming");
        Ok(self.queue.get_or_init(|| q))
    }
}

impl LazySqsQueue {
    pub fn new(sqs: &Sqs, name: &str, options: &SqsQueueOptions) -> LazySqsQueue {
        LazySqsQueue {
            shared: Arc::new(LazyShared {
                name: name.to_string(),
                sqs: sqs.clone(),
                options: options.clone(),
                queue: std::sync::OnceLock::new(),
                opening: Mutex::new(()),
            }),
        }
    }
}

/// Messages exist only once the queue is open, so settling always finds it open.
impl Queue for LazySqsQueue {
    fn name(&self) -> &str {
        &self.shared.name
    }
    fn timeout(&self) -> Duration {
        self.shared
            .queue
            .get()
            .map_or(Duration::from_secs(30), |q| q.timeout())
    }
    fn consumer(&self) -> io::Result<Box<dyn Consume>> {
        Ok(Box::new(LazyConsumer {
            shared: self.shared.clone(),
            inner: None,
        }))
    }
    fn complete(&self, d: &Delivery) -> io::Result<()> {
        self.shared.get()?.complete(d)
    }
    fn retry(&self, d: &Delivery, delay: Duration) -> io::Result<()> {
        self.shared.get()?.retry(d, delay)
    }
    fn dead_letter(&self, d: &Delivery, reason: &str) -> io::Result<()> {
        self.shared.get()?.dead_letter(d, reason)
    }
    fn give_back(&self, d: &Delivery) -> io::Result<()> {
        self.shared.get()?.give_back(d)
    }
    fn renew(&self, d: &mut Delivery, now: Instant) -> io::Result<()> {
        self.shared.get()?.renew(d, now)
    }
    fn leave_in_flight(&self, d: &Delivery, hold: Duration) -> io::Result<()> {
        self.shared.get()?.leave_in_flight(d, hold)
    }
    fn flush(&self) {
        if let Some(q) = self.shared.queue.get() {
            q.flush();
        }
    }
    fn ordered(&self) -> bool {
        self.shared.queue.get().is_some_and(|q| q.ordered())
    }
}

struct LazyConsumer {
    shared: Arc<LazyShared>,
    inner: Option<Box<dyn Consume>>,
}

impl Consume for LazyConsumer {
    fn receive(&mut self, max: usize, stop: &Stop) -> io::Result<Received> {
        if self.inner.is_none() {
            // An error here is logged by the consumer thread, which backs off and retries.
            self.inner = Some(self.shared.get()?.consumer()?);
        }
        self.inner.as_mut().expect("set above").receive(max, stop)
    }
}
