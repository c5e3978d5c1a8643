//! What the master does with each event: messages from a consumer, a worker's report or
//! exit, a signal, and the timers (deadlines, claim renewals).

use super::pool::{WorkerEvent, WorkerId};
use super::{Master, Phase, signals};
use crate::consumer::{Batchlet, Held};
use crate::launch::describe_exit;
use crate::protocol::{PRELOADER_UNAVAILABLE, Report, Verdict};
use crate::settle::{Settlement, decide};
use signal_hook::consts::{
    SIGCONT, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGTSTP, SIGTTIN, SIGUSR1, SIGUSR2,
};
use std::time::{Duration, Instant};

impl Master {
    pub(super) fn on_batchlet(&mut self, b: Batchlet) {
        let q = b.queue;
        if self.reload.is_removed(q) {
            return self.refuse_removed(q, b.messages);
        }
        if matches!(self.phase, Phase::Draining { .. } | Phase::Quiet) {
            // Received while the consumers were stopping or pausing (a receive already
            // under way when the signal came): never held, never started, so given back.
            for h in b.messages {
                self.settlers[q].apply(&h.delivery, &Settlement::GiveBack, Some("not running"));
            }
            return;
        }
        self.obs.received(q, b.messages.len());
        for id in self.holding.receive(q, b.messages, b.short) {
            tracing::warn!(queue = %self.qconfigs[q].full_name, id = %id, "a second copy arrived while the first is still held (its claim was recovered elsewhere); it waits for the first to settle");
        }
    }

    /// Every consumer ended: nothing more will be received.
    pub(super) fn on_consumers_gone(&mut self, now: Instant) {
        if !matches!(self.phase, Phase::Draining { .. }) {
            // They ended by themselves (a panic): finish what is held and exit non-zero,
            // for the supervisor to restart chore.
            tracing::error!("every consumer thread has stopped; draining and exiting");
            self.begin_drain(SIGTERM, now);
            self.exit_status = 1;
        }
    }

    pub(super) fn on_worker_event(&mut self, event: WorkerEvent, now: Instant) {
        match event {
            WorkerEvent::Report(id, report) => self.on_report(id, report, now),
            WorkerEvent::Garbled(id, line) => {
                let pid = self.pool.get(id).map(|w| w.pid);
                tracing::warn!(pid, line = %line, "worker wrote a line that is not a report; ignored");
            }
            WorkerEvent::Exited(id, status) => {
                let Some(w) = self.pool.remove(id, &status) else {
                    return;
                };
                let (q, unreported) = self
                    .holding
                    .worker_gone(id)
                    .unwrap_or((w.queue, Vec::new()));
                let name = &self.qconfigs[q].full_name;
                let how = describe_exit(&status);
                let mut reason = match (w.killed, w.unfinished) {
                    (Some(why), _) => format!("worker killed: {why}"),
                    // The worker ended well; its batch handler did not.
                    (None, Some(why)) => why,
                    (None, None) => format!("worker {how} before reporting a result"),
                };
                if let Some(limit) = self.qconfigs[q].memory_limit
                    && w.killed.is_none()
                    && !status.success()
                {
                    // The worker runs under the limit too (worker::memory::apply).
                    let mib = limit >> 20;
                    reason.push_str(&format!("; memory-limit ({mib} MiB) may have been hit"));
                }
                if !unreported.is_empty() || !status.success() {
                    let ids: Vec<&str> =
                        unreported.iter().map(|h| h.delivery.id.as_str()).collect();
                    tracing::warn!(pid = w.pid, queue = %name, unreported = unreported.len(), ids = %ids.join(","), "worker {how}");
                } else {
                    tracing::debug!(pid = w.pid, queue = %name, "worker finished");
                }
                let draining = matches!(self.phase, Phase::Draining { .. });
                if unreported.len() > 1 && !draining {
                    // Which of them ended the batch is not known: none is charged an
                    // attempt; they run again in halves until the one that crashes its
                    // batch runs alone (docs/decisions/0022-a-crashed-batch-is-bisected.md).
                    tracing::warn!(queue = %name, messages = unreported.len(), reason = %reason, "batch ended without results for several messages; running them again in two smaller batches to find the one that ends it (no attempt counted)");
                    self.holding.isolate(q, unreported);
                    return;
                }
                for h in unreported {
                    self.settle(q, h, Verdict::Fail, None, Some(&reason));
                }
            }
        }
    }

    fn on_report(&mut self, id: WorkerId, r: Report, now: Instant) {
        if r.verdict == Verdict::Unfinished && !matches!(self.phase, Phase::Draining { .. }) {
            // Left in its batch: when the worker is gone, it is isolated with the rest
            // of what the batch did not finish.
            tracing::debug!(
                index = r.i,
                error = r.error.as_deref().unwrap_or(""),
                "unfinished in its batch"
            );
            self.pool.note_unfinished(id, r.error);
            return;
        }
        if let Some(w) = self.pool.get(id) {
            let ran = now.saturating_duration_since(w.started).as_secs_f64();
            self.obs.metrics[w.queue].run_seconds.record(ran);
        }
        let Some((q, h)) = self.holding.report(id, r.i) else {
            let pid = self.pool.get(id).map(|w| w.pid);
            tracing::warn!(
                pid,
                index = r.i,
                "worker reported on a message it does not hold; ignored"
            );
            return;
        };
        if r.verdict == Verdict::Skip
            && let Some(why) = r
                .error
                .as_deref()
                .and_then(|e| e.strip_prefix(PRELOADER_UNAVAILABLE))
            && let Some(w) = self.pool.get(id)
        {
            // A preloader that is alive but cannot fork would have every batch given back,
            // again and again: it is replaced, and its queues wait for the new one.
            let qc = &self.qconfigs[q];
            let handler = h
                .delivery
                .class
                .as_ref()
                .and_then(|c| qc.classes.get(c))
                .or(qc.handler.as_ref());
            if let Some(handler) = handler {
                self.preloaders.fork_failed(handler, w.started, why, now);
            }
        }
        self.settle(q, h, r.verdict, r.delay, r.error.as_deref());
    }

    /// Apply the outcome of one attempt.
    fn settle(
        &mut self,
        q: usize,
        h: Held,
        verdict: Verdict,
        delay: Option<f64>,
        error: Option<&str>,
    ) {
        let qc = &self.qconfigs[q];
        let d = &h.delivery;
        let settlement = decide(
            verdict,
            d.attempt,
            qc.max_attempts,
            &qc.backoff,
            delay,
            error,
        );
        self.settle_as(q, h, settlement, error);
    }

    /// Carry out `settlement` for a message that ran (or was posted).
    pub(super) fn settle_as(
        &mut self,
        q: usize,
        h: Held,
        settlement: Settlement,
        error: Option<&str>,
    ) {
        let d = &h.delivery;
        self.settlers[q].apply(d, &settlement, error);
        match &settlement {
            Settlement::Complete => self.obs.settled(q, true, false),
            Settlement::Retry { .. } => self.obs.settled(q, false, true),
            Settlement::DeadLetter { .. } => self.obs.settled(q, false, false),
            Settlement::GiveBack => {}
        }
        let held_back_group = match &settlement {
            Settlement::Retry { .. } if self.settlers[q].queue.ordered() => d.group.clone(),
            _ => None,
        };
        self.release(q, h, Some(&settlement));
        // FIFO: a retried message holds back the rest of its group, so that the group
        // keeps its order: what waits here goes back to the queue behind it.
        if let Some(g) = held_back_group {
            for h in self.holding.take_group(q, &g) {
                self.give_back(
                    q,
                    h,
                    "held back: an earlier message of its group is retried",
                );
            }
        }
    }

    pub(super) fn kill_expired(&mut self, now: Instant) {
        for id in self.pool.expired(now) {
            if let Some(w) = self.pool.get(id) {
                tracing::error!(
                    pid = w.pid,
                    queue = %self.qconfigs[w.queue].full_name,
                    ids = %self.holding.ids_of(id).join(","),
                    ran_secs = now.duration_since(w.started).as_secs_f64(),
                    "worker passed its deadline; killed with SIGKILL"
                );
            }
            if let Some(w) = self.pool.get(id) {
                self.obs.metrics[w.queue].workers_killed.increment(1);
            }
            self.pool.kill(id, "it passed its deadline");
        }
        self.abort_expired(now);
    }

    pub(super) fn kill_all(&mut self, why: &'static str) {
        let ids: Vec<WorkerId> = self.pool.workers().iter().map(|w| w.id).collect();
        if !ids.is_empty() {
            tracing::error!(workers = ids.len(), "{why}; killing the remaining workers");
        }
        for id in ids {
            self.pool.kill(id, why);
        }
        self.abort_all(why);
        if let Phase::Draining { deadline, .. } = self.phase {
            self.phase = Phase::Draining {
                deadline,
                killed: true,
            };
        }
    }

    /// Renew every held claim that is due, buffered, deferred or running.
    pub(super) fn renew_claims(&mut self, now: Instant) {
        if self.holding.next_renewal().is_none_or(|t| t > now) {
            return;
        }
        let settlers = &self.settlers;
        self.holding.each_mut(|q, d| {
            if d.renew_at > now {
                return;
            }
            let queue = &settlers[q].queue;
            match queue.renew(d, now) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // Recovered by another consumer: there is nothing left to renew, and
                    // the settlement will say the claim was gone.
                    tracing::warn!(queue = %queue.name(), id = %d.id, "claim lost (recovered by another consumer); no longer renewed");
                    d.renew_at = now + Duration::from_secs(86_400);
                }
                Err(e) => {
                    tracing::warn!(queue = %queue.name(), id = %d.id, error = %e, "could not renew claim");
                    // Do not retry in a hot loop.
                    d.renew_at = now + Duration::from_secs(1);
                }
            }
        });
    }

    pub(super) fn on_signal(&mut self, sig: i32, now: Instant) {
        match sig {
            SIGINT | SIGTERM | SIGQUIT => match self.phase {
                Phase::Draining { .. } => {
                    tracing::warn!(
                        signal = signals::name(sig),
                        "second signal during the drain: killing workers and exiting"
                    );
                    self.kill_all("a second shutdown signal arrived");
                }
                _ => self.begin_drain(sig, now),
            },
            SIGUSR1 => match self.log.reopen() {
                Ok(()) => tracing::info!("log file reopened"),
                Err(e) => tracing::error!(error = %e, "could not reopen the log file"),
            },
            SIGUSR2 if !self.preloaders.is_empty() => {
                tracing::info!("SIGUSR2: replacing every preloader (batches keep running)");
                self.preloaders.recycle_all();
                self.preload_wake = Some(now);
            }
            SIGTSTP if self.phase == Phase::Running => {
                self.gate.pause(true);
                self.phase = Phase::Quiet;
                tracing::info!("quiet: receiving paused (SIGCONT resumes)");
            }
            SIGCONT if self.phase == Phase::Quiet => {
                self.gate.pause(false);
                self.phase = Phase::Running;
                tracing::info!("receiving resumed");
            }
            SIGTTIN => self.status_dump(now),
            SIGHUP => self.reload(),
            _ => {}
        }
    }

    fn begin_drain(&mut self, sig: i32, now: Instant) {
        self.stop.trigger();
        self.reload.end();
        self.preloaders.drain();
        self.gate.stop();
        let waiting = self.holding.take_buffered();
        tracing::info!(
            signal = signals::name(sig),
            workers = self.pool.len(),
            given_back = waiting.len(),
            shutdown_timeout_secs = self.config.shutdown_timeout.as_secs_f64(),
            posts = self.posts.len(),
            "draining: receiving stopped, waiting for running workers and posts"
        );
        self.phase = Phase::Draining {
            deadline: now + self.config.shutdown_timeout,
            killed: false,
        };
        crate::queue::sqs::set_exit_deadline(now + self.config.shutdown_timeout);
        self.observe_drain(now);
        for (q, h) in waiting {
            self.give_back(q, h, "draining");
        }
        for (q, h) in self.holding.take_deferred() {
            self.settlers[q].apply(&h.delivery, &Settlement::GiveBack, Some("draining"));
        }
    }

    fn status_dump(&self, now: Instant) {
        tracing::info!(
            phase = ?self.phase,
            workers = self.pool.len(),
            posts = self.posts.len(),
            buffered = self.holding.buffered(),
            waiting_to_post = self.holding.waiting_to_post(),
            deferred = self.holding.deferred(),
            isolating = self.holding.isolating(),
            free_credits = self.gate.free(),
            "status"
        );
        if let Some(d) = &self.dedupe {
            use std::sync::atomic::Ordering::Relaxed;
            tracing::info!(
                checks = d.counters.checks.load(Relaxed),
                duplicates = d.counters.duplicates.load(Relaxed),
                cache_failures = d.counters.failures.load(Relaxed),
                "status: dedupe"
            );
        }
        for w in self.pool.workers() {
            tracing::info!(
                pid = w.pid,
                queue = %self.qconfigs[w.queue].full_name,
                ids = %self.holding.ids_of(w.id).join(","),
                age_secs = now.duration_since(w.started).as_secs_f64(),
                deadline_in_secs = w.deadline.saturating_duration_since(now).as_secs_f64(),
                "status: worker"
            );
        }
        self.status_posts(now);
    }
}
