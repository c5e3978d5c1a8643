//! The settler: one thread per SQS queue that turns the master's settlements into batch
//! calls (`DeleteMessageBatch`, `ChangeMessageVisibilityBatch`, and `SendMessageBatch` to
//! the dead-letter queue), retries what failed, and answers flushes. What it gathers, how
//! it cuts calls and what their answers mean are pure (`pending`, `calls`); this file is
//! the loop and the calls.

use super::calls::{self, Fate, Outcome};
use super::client::is_fifo_name;
use super::pending::{self, Entry, Gather, Op, Pending, Waiting};
use super::{OpenError, Sqs};
use aws_sdk_sqs::error::DisplayErrorContext;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Pause between retries of failed settle calls.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

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

/// Start the settler of queue `name` (at `url`, with visibility timeout `visibility`,
/// dead-letter queue `dlq_url`); it ends once the returned sender is dropped and
/// everything sent has been settled or given up.
pub(super) fn start(
    sqs: &Sqs,
    name: &str,
    url: &str,
    fifo: bool,
    visibility: Duration,
    dlq_url: Option<String>,
) -> Result<(Sender<Op>, JoinHandle<()>), OpenError> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let settler = Settler {
        name: name.to_string(),
        url: url.to_string(),
        dlq_fifo: dlq_url.as_deref().is_some_and(is_fifo_name),
        dlq_url,
        sqs: sqs.clone(),
        delete_window: pending::delete_window(fifo, visibility),
    };
    let thread = std::thread::Builder::new()
        .name(format!("settle-{name}"))
        .spawn(move || settler.run(rx))
        .map_err(|e| OpenError::Failed(e.to_string()))?;
    Ok((tx, thread))
}

impl Settler {
    fn run(self, rx: Receiver<Op>) {
        let mut waiting = Waiting::default();
        let mut open = true;
        loop {
            if !open && waiting.is_empty() {
                break;
            }
            // Wait for work, or (with failed entries waiting) for their next try; then
            // gather what else arrives within the window, up to a full call.
            let next = if !open {
                None
            } else if waiting.is_empty() {
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
            let mut gather = Gather::new(self.delete_window);
            if let Some(op) = next {
                gather.take(op, &mut waiting, Instant::now());
            }
            while let Some(end) = gather.until(&waiting, open) {
                match rx.recv_deadline(end) {
                    Ok(op) => gather.take(op, &mut waiting, Instant::now()),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            self.send_all(&mut waiting);
            let acks = gather.acks();
            if !acks.is_empty() {
                // A flush means "the master is exiting": try until done, given up, or
                // the master's exit deadline.
                while !waiting.is_empty() {
                    let pause = match super::exit_deadline() {
                        Some(at) => at.saturating_duration_since(Instant::now()),
                        None => RETRY_PAUSE,
                    };
                    if pause.is_zero() {
                        tracing::error!(
                            queue = %self.name,
                            deletes = waiting.deletes.len(),
                            visibility_changes = waiting.changes.len(),
                            dead_letters = waiting.dead.len(),
                            "SQS settlements still failing at the shutdown timeout; not sent (their messages will be delivered again after their visibility timeout)"
                        );
                        break;
                    }
                    std::thread::sleep(pause.min(RETRY_PAUSE));
                    self.send_all(&mut waiting);
                }
                for ack in acks {
                    let _ = ack.send(());
                }
            }
        }
    }

    /// One round of calls: dead letters first (each one sent becomes a delete), then
    /// deletes, then visibility changes. What failed stays in `waiting`.
    fn send_all(&self, waiting: &mut Waiting) {
        waiting.drop_moot_changes();
        let mut sent_dead = Vec::new();
        match &self.dlq_url {
            Some(dlq) => {
                self.send(
                    &mut waiting.dead,
                    "send to the dead-letter queue",
                    |chunk| self.send_dead(dlq, chunk),
                    |d| sent_dead.push(d.entry),
                );
            }
            // No dead-letter queue: the message is deleted (the master logged it).
            None => sent_dead.extend(waiting.dead.drain(..).map(|d| d.entry)),
        }
        waiting
            .deletes
            .extend(sent_dead.into_iter().map(|e| Entry::new(e.id, e.receipt)));
        self.send(&mut waiting.deletes, "delete", |c| self.delete(c), |_| {});
        self.send(
            &mut waiting.changes,
            "visibility change",
            |c| self.change(c),
            |_| {},
        );
    }

    /// Send `items` in batch calls; keep what failed for another try (until it has failed
    /// for too long); hand each success to `done`.
    fn send<T: Pending>(
        &self,
        items: &mut Vec<T>,
        what: &str,
        call: impl Fn(&[T]) -> Result<Outcome, String>,
        mut done: impl FnMut(T),
    ) {
        let mut retry = Vec::new();
        for chunk in pending::chunks(std::mem::take(items)) {
            let outcome =
                call(&chunk).unwrap_or_else(|error| Outcome::call_failed(chunk.len(), error));
            let now = Instant::now();
            for (i, mut item) in chunk.into_iter().enumerate() {
                let e = item.entry();
                match outcome.fate(i, &mut e.failing_since, now) {
                    Fate::Done => done(item),
                    Fate::Refused(error) => {
                        tracing::warn!(queue = %self.name, id = %e.id, error, "SQS refused the {what} (receipt no longer valid?); the message may be delivered again");
                    }
                    Fate::GiveUp(error) => {
                        tracing::error!(queue = %self.name, id = %e.id, error, "{what} kept failing; giving up (SQS will deliver the message again)");
                    }
                    Fate::Retry(error) => {
                        tracing::warn!(queue = %self.name, id = %e.id, error, "{what} failed; will retry");
                        retry.push(item);
                    }
                }
            }
        }
        *items = retry;
    }

    fn delete(&self, chunk: &[Entry]) -> Result<Outcome, String> {
        let call = self
            .sqs
            .client
            .delete_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(calls::delete_entries(chunk)?));
        let out = self
            .sqs
            .block_on(call.send())
            .map_err(|e| format!("DeleteMessageBatch: {}", DisplayErrorContext(&e)))?;
        Ok(Outcome::of(out.failed()))
    }

    fn change(&self, chunk: &[pending::Change]) -> Result<Outcome, String> {
        let call = self
            .sqs
            .client
            .change_message_visibility_batch()
            .queue_url(&self.url)
            .set_entries(Some(calls::change_entries(chunk)?));
        let out = self
            .sqs
            .block_on(call.send())
            .map_err(|e| format!("ChangeMessageVisibilityBatch: {}", DisplayErrorContext(&e)))?;
        Ok(Outcome::of(out.failed()))
    }

    fn send_dead(&self, dlq: &str, chunk: &[pending::Dead]) -> Result<Outcome, String> {
        let call = self
            .sqs
            .client
            .send_message_batch()
            .queue_url(dlq)
            .set_entries(Some(calls::dead_entries(chunk, self.dlq_fifo)?));
        let out = self
            .sqs
            .block_on(call.send())
            .map_err(|e| format!("SendMessageBatch: {}", DisplayErrorContext(&e)))?;
        Ok(Outcome::of(out.failed()).retry_refused())
    }
}
