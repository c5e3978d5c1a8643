//! What the master tells the world about itself: metric gauges and counts, systemd
//! notifications (READY, STATUS, STOPPING, EXTEND_TIMEOUT, WATCHDOG), the liveness verdict
//! and `chore status`'s snapshot. The master owns all of it; the control thread and the
//! depth sampler only send it `Observed` events.
//!
//! `Master::observe_tick` runs from the loop's `turn` once a second (sooner when the
//! watchdog asks): gauges set, liveness judged, the watchdog pinged only while
//! consumption is live (or a drain is under way, which the stop timeout covers).

use super::{Master, Phase};
use crate::control::Ask;
use crate::control::status::{QueueStatus, Snapshot, WorkerStatus};
use crate::observe::liveness::Liveness;
use crate::observe::metrics::{Global, QueueMetrics};
use crate::observe::notify::Notifier;
use crate::queue::{Depth, Queue, Stop};
use crossbeam_channel::Sender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The loop looks at liveness and gauges this often.
const TICK: Duration = Duration::from_secs(1);
/// systemd's STATUS= line is refreshed this often, not per message.
const STATUS_EVERY: Duration = Duration::from_secs(10);
/// What EXTEND_TIMEOUT_USEC adds beyond the drain's own deadline: time to kill, reap and
/// flush.
const DRAIN_MARGIN: Duration = Duration::from_secs(15);
/// How often each queue's depth is looked at (SQS queues ask at most once a minute).
const SAMPLE_EVERY: Duration = Duration::from_secs(15);

/// What reaches the loop from outside for observing.
pub enum Observed {
    Ask(Ask),
    Depth(usize, std::io::Result<Depth>),
}

/// The master's observing state, one per master.
pub struct Observing {
    pub metrics: Vec<QueueMetrics>,
    global: Global,
    liveness: Liveness,
    notifier: Notifier,
    received: Vec<u64>,
    settled: Vec<u64>,
    depth: Vec<Option<u64>>,
    /// The oldest waiting message's age at the last look, and when that was.
    oldest: Vec<Option<(Duration, Instant)>>,
    unhealthy: Option<String>,
    started_at: Instant,
    next_tick: Instant,
    next_status: Instant,
    /// The control socket, removed when the master goes.
    pub control: Option<crate::control::server::Bound>,
    /// The queues the depth sampler looks at, by number; a reload adds and removes them.
    pub sampled: Sampled,
}

/// The depth sampler's queues, by queue number: None for a queue a reload removed.
pub type Sampled = Arc<Mutex<Vec<Option<Arc<dyn Queue>>>>>;

impl Observing {
    pub fn new(names: &[&str], stall_timeout: Duration, now: Instant) -> Observing {
        let n = names.len();
        Observing {
            metrics: names.iter().map(|q| QueueMetrics::new(q)).collect(),
            global: Global::new(),
            liveness: Liveness::new(n, stall_timeout),
            notifier: Notifier::from_env(),
            received: vec![0; n],
            settled: vec![0; n],
            depth: vec![None; n],
            oldest: vec![None; n],
            unhealthy: None,
            started_at: now,
            next_tick: now,
            next_status: now + STATUS_EVERY,
            control: None,
            sampled: Sampled::default(),
        }
    }

    /// A queue added by a reload, numbered next.
    pub fn add_queue(&mut self, name: &str, queue: Arc<dyn Queue>) {
        lock(&self.sampled).push(Some(queue));
        self.metrics.push(QueueMetrics::new(name));
        self.liveness.add_queue();
        self.received.push(0);
        self.settled.push(0);
        self.depth.push(None);
        self.oldest.push(None);
    }

    /// Queue `q` was removed by a reload: its depth is no longer looked at, and what was
    /// last seen of it no longer counts (its backlog waits for another consumer).
    pub fn remove_queue(&mut self, q: usize) {
        if let Some(slot) = lock(&self.sampled).get_mut(q) {
            *slot = None;
        }
        self.depth[q] = None;
        self.oldest[q] = None;
        self.liveness.broken(q, None);
        // No longer looked at: no figure rather than a stale one.
        self.metrics[q].depth.set(0.0);
        self.metrics[q].oldest_age.set(0.0);
    }

    /// `n` messages of queue `q` arrived.
    pub fn received(&mut self, q: usize, n: usize) {
        self.received[q] += n as u64;
    }

    /// A message of queue `q`, received at `received_at`, starts at `now`.
    pub fn started(&mut self, q: usize, received_at: Instant, now: Instant) {
        let m = &self.metrics[q];
        m.started.increment(1);
        m.wait_seconds
            .record(now.saturating_duration_since(received_at).as_secs_f64());
        self.liveness.started(q, now);
    }

    /// A message of queue `q` that ran was settled: `ok` completed, else `retried` or
    /// dead-lettered.
    pub fn settled(&mut self, q: usize, ok: bool, retried: bool) {
        self.settled[q] += 1;
        let m = &self.metrics[q];
        if ok {
            m.succeeded.increment(1);
        } else {
            m.failed.increment(1);
            if retried {
                m.retried.increment(1);
            } else {
                m.dead_lettered.increment(1);
            }
        }
    }

    /// When the loop must next call `observe_tick`.
    pub fn next_wake(&self) -> Instant {
        self.next_tick
    }

    pub fn watchdog_period(&self) -> Option<Duration> {
        self.notifier.watchdog_period
    }
}

/// The sampler's list, locked (a poisoned lock is taken all the same: the list stays whole).
fn lock(sampled: &Sampled) -> MutexGuard<'_, Vec<Option<Arc<dyn Queue>>>> {
    sampled.lock().unwrap_or_else(|e| e.into_inner())
}

/// Look at each queue's depth every `SAMPLE_EVERY`, from a thread of its own (a listing or
/// an SQS call never blocks the loop), until `stop` fires. `served`: metrics are served, so
/// the costly figures are looked up too (see `Queue::depth`).
pub fn spawn_sampler(
    queues: Sampled,
    served: bool,
    stop: Arc<Stop>,
    to_master: Sender<Observed>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("depth".into())
        .spawn(move || {
            loop {
                // A copy of the list: a look may take a while, and a reload must not wait.
                let now_sampled = lock(&queues).clone();
                for (q, queue) in now_sampled.iter().enumerate() {
                    let Some(queue) = queue else { continue };
                    if let Some(d) = queue.depth(served)
                        && to_master.send(Observed::Depth(q, d)).is_err()
                    {
                        return;
                    }
                }
                if stop.sleep(SAMPLE_EVERY) {
                    return;
                }
            }
        })?;
    Ok(())
}

impl Master {
    /// Queues open, consumers running: tell systemd.
    pub(super) fn observe_ready(&mut self) {
        self.obs.global.healthy.set(1.0);
        let line = self.status_line();
        self.obs.notifier.ready(&line);
        tracing::debug!(status = %line, "ready");
    }

    pub(super) fn on_observed(&mut self, o: Observed, now: Instant) {
        match o {
            Observed::Ask(ask) => {
                let _ = ask.reply.send(self.snapshot(now));
            }
            // Looked at just before a reload removed it.
            Observed::Depth(q, _) if self.reload.is_removed(q) => {}
            Observed::Depth(q, Ok(d)) => {
                let m = &self.obs.metrics[q];
                m.depth.set(d.messages as f64);
                m.oldest_age
                    .set(d.oldest_age.map_or(0.0, |a| a.as_secs_f64()));
                self.obs.oldest[q] = d.oldest_age.map(|a| (a, now));
                self.obs.depth[q] = Some(d.messages);
                self.obs.liveness.broken(q, None);
            }
            Observed::Depth(q, Err(e)) => {
                self.obs.depth[q] = None;
                self.obs.oldest[q] = None;
                self.obs.liveness.broken(q, Some(e.to_string()));
            }
        }
    }

    /// The drain began: systemd waits for it, up to `shutdown-timeout` and a margin.
    pub(super) fn observe_drain(&mut self, now: Instant) {
        self.obs
            .notifier
            .stopping(self.config.shutdown_timeout + DRAIN_MARGIN);
        self.obs.next_status = now;
    }

    /// Gauges, liveness, watchdog and STATUS, when their time has come.
    pub(super) fn observe_tick(&mut self, now: Instant) {
        if now < self.obs.next_tick {
            return;
        }
        let period = self.obs.watchdog_period().map_or(TICK, |p| p.min(TICK));
        self.obs.next_tick = now + period;
        let counts = self.holding.per_queue(self.qconfigs.len());
        for (q, (waiting, _)) in counts.iter().enumerate() {
            // A queue removed by a reload and added back has two numbers and one series:
            // the last number sets it, with both numbers' messages.
            let name = &self.qconfigs[q].full_name;
            if !self.qconfigs[q + 1..].iter().any(|l| &l.full_name == name) {
                let same = (0..=q).filter(|&p| &self.qconfigs[p].full_name == name);
                let (all_waiting, all_held) =
                    same.fold((0, 0), |(w, h), p| (w + counts[p].0, h + counts[p].1));
                let m = &self.obs.metrics[q];
                m.buffered.set(all_waiting as f64);
                m.held.set(all_held as f64);
            }
            // The oldest message ages between two looks at the queue.
            if let Some((age, at)) = self.obs.oldest[q] {
                self.obs.metrics[q]
                    .oldest_age
                    .set((age + now.saturating_duration_since(at)).as_secs_f64());
            }
            let in_queue = self.obs.depth[q].is_some_and(|d| d > 0);
            // Paused or draining, nothing is expected to start: the wait counts afresh
            // from the resume.
            let running = self.phase == Phase::Running;
            self.obs
                .liveness
                .waiting(q, running && (*waiting > 0 || in_queue), now);
        }
        self.obs.global.workers_busy.set(self.pool.len() as f64);
        if let Some(d) = &self.dedupe {
            use std::sync::atomic::Ordering::Relaxed;
            let g = &self.obs.global;
            g.dedupe_checks.absolute(d.counters.checks.load(Relaxed));
            g.dedupe_hits.absolute(d.counters.duplicates.load(Relaxed));
            g.dedupe_errors.absolute(d.counters.failures.load(Relaxed));
        }
        let draining = matches!(self.phase, Phase::Draining { .. });
        if !draining {
            // Consumer threads are named `consume-<queue>-<n>` (the others in the list,
            // periodic schedulers, are not consumers).
            let dead = self.inputs.consumers.iter().filter(|c| c.is_finished());
            let names = dead.filter_map(|c| c.thread().name()?.strip_prefix("consume-"));
            if let Some(name) = names.map(str::to_string).next() {
                self.obs.liveness.consumer_died(&name);
            }
        }
        let verdict = match self.phase {
            Phase::Running => {
                let names: Vec<&str> = self.qconfigs.iter().map(|q| q.full_name.as_str()).collect();
                self.obs.liveness.verdict(now, &names)
            }
            // Receiving is paused or ending on purpose: nothing can stall.
            Phase::Quiet | Phase::Draining { .. } => None,
        };
        if verdict != self.obs.unhealthy {
            match &verdict {
                Some(why) => {
                    tracing::error!(reason = %why, "unhealthy: consumption has stopped; watchdog pings stop")
                }
                None if !draining => tracing::warn!("healthy again: consumption is live"),
                None => {}
            }
            self.obs
                .global
                .healthy
                .set(if verdict.is_none() { 1.0 } else { 0.0 });
            self.obs.unhealthy = verdict;
            self.obs.next_status = now;
        }
        if self.obs.unhealthy.is_none() && self.obs.watchdog_period().is_some() {
            self.obs.notifier.watchdog();
        }
        if now >= self.obs.next_status {
            self.obs.next_status = now + STATUS_EVERY;
            let line = self.status_line();
            self.obs.notifier.status(&line);
            if let Phase::Draining {
                deadline,
                killed: false,
            } = self.phase
            {
                self.obs
                    .notifier
                    .extend(deadline.saturating_duration_since(now) + DRAIN_MARGIN);
            }
        }
    }

    fn phase_name(&self) -> &'static str {
        match self.phase {
            Phase::Running => "running",
            Phase::Quiet => "quiet",
            Phase::Draining { .. } => "draining",
        }
    }

    /// systemd's one-line STATUS=.
    fn status_line(&self) -> String {
        let settled: u64 = self.obs.settled.iter().sum();
        let mut line = format!(
            "{}: {}/{} workers busy, {} waiting, {} settled",
            self.phase_name(),
            self.pool.len(),
            self.config.concurrency,
            self.holding.buffered() + self.holding.waiting_to_post(),
            settled
        );
        if let Some(why) = &self.obs.unhealthy {
            line.push_str("; UNHEALTHY: ");
            line.push_str(why);
        }
        line
    }

    /// What `chore status` prints.
    pub(super) fn snapshot(&self, now: Instant) -> Snapshot {
        let workers = self
            .pool
            .workers()
            .iter()
            .map(|w| WorkerStatus {
                pid: w.pid,
                queue: self.qconfigs[w.queue].full_name.clone(),
                ids: self
                    .holding
                    .ids_of(w.id)
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                elapsed_secs: now.saturating_duration_since(w.started).as_secs_f64(),
                deadline_in_secs: w.deadline.saturating_duration_since(now).as_secs_f64(),
            })
            .collect();
        let counts = self.holding.per_queue(self.qconfigs.len());
        // A queue a reload removed shows while its batches still run, marked so.
        let queues = self
            .qconfigs
            .iter()
            .enumerate()
            .filter(|&(q, _)| !self.reload.is_removed(q) || counts[q].1 > 0)
            .map(|(q, qc)| QueueStatus {
                name: if self.reload.is_removed(q) {
                    format!("{} (removed)", qc.full_name)
                } else {
                    qc.full_name.clone()
                },
                buffered: counts[q].0,
                held: counts[q].1,
                received: self.obs.received[q],
                settled: self.obs.settled[q],
                depth: self.obs.depth[q],
            })
            .collect();
        Snapshot {
            pid: std::process::id(),
            version: env!("CHORE_VERSION").to_string(),
            phase: self.phase_name().to_string(),
            healthy: self.obs.unhealthy.is_none(),
            unhealthy: self.obs.unhealthy.clone(),
            config_files: self
                .config
                .files
                .iter()
                .map(|f| f.display().to_string())
                .collect(),
            uptime_secs: now
                .saturating_duration_since(self.obs.started_at)
                .as_secs_f64(),
            concurrency: self.config.concurrency,
            workers,
            queues,
            posts: self.posts.len(),
        }
    }
}
