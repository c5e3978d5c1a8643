//! The master: one loop that owns every held message from receipt to settlement.
//!
//! Each turn of `Master::run` does, in order:
//! 1. kill workers past their deadline (SIGKILL to the group, one log line);
//! 2. renew the claims of held messages before they lapse;
//! 3. start batches while worker slots are free (unless draining);
//! 4. wait for one event (messages from a consumer, a worker's report or exit, a signal)
//!    or the next timer, and handle it.
//!
//! Messages are settled here and only here (design decision 2): complete, retry after the
//! backoff, or dead-letter. A worker that dies settles its unreported messages as failed
//! attempts. A drain (INT/TERM/QUIT) stops the consumers, gives back what was received but
//! not started, waits for the workers up to `shutdown-timeout`, kills what is left, settles
//! what came back, and returns 0.

pub mod pool;
pub mod signals;

use crate::batcher::Batcher;
use crate::config::{Backend, Config, QueueConfig};
use crate::consumer::{self, Batchlet, Gate};
use crate::dedupe::Dedupe;
use crate::logging::LogHandle;
use crate::protocol::{BatchSpec, JobSpec, Report, Verdict};
use crate::queue::filesystem::FilesystemQueue;
use crate::queue::sqs::{LazySqsQueue, OpenError, Sqs, SqsQueue};
use crate::queue::{Delivery, Queue, Stop};
use crate::settle::{Settlement, decide};
use crossbeam_channel::{Receiver, never, select, unbounded};
use pool::{Pool, WorkerEvent, WorkerId, describe_exit};
use signal_hook::consts::{SIGCONT, SIGINT, SIGQUIT, SIGTERM, SIGTSTP, SIGTTIN, SIGUSR1};
use std::collections::HashSet;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The longest the loop sleeps with nothing to do; timers are usually sooner.
const IDLE_TICK: Duration = Duration::from_secs(1);
/// After a failed spawn, wait this long before trying again.
const SPAWN_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Running,
    /// TSTP: receiving paused; buffered batches still run.
    Quiet,
    /// INT/TERM/QUIT: finishing up until `deadline`.
    Draining {
        deadline: Instant,
        killed: bool,
    },
}

/// Start everything and run until drained. Returns the exit status.
pub fn run(config: Config, log: LogHandle) -> i32 {
    let _ = nix::sys::prctl::set_name(c"chore-master");
    let mut queues: Vec<Arc<dyn Queue>> = Vec::new();
    let mut qconfigs: Vec<QueueConfig> = Vec::new();
    let mut sqs: Option<Sqs> = None;
    for qc in config.selected_queues() {
        let queue: Arc<dyn Queue> = match qc.backend {
            Backend::Filesystem => match FilesystemQueue::open(
                &config.fs_queue_root,
                &qc.full_name,
                qc.timeout,
                config.default_queue_timeout,
                config.fs_claim_lease,
                config.consumer_sleep_interval,
            ) {
                Ok(q) => Arc::new(q),
                Err(e) => {
                    eprintln!("chore: queue `{}`: {e}", qc.name);
                    return 2;
                }
            },
            Backend::Sqs => {
                if sqs.is_none() {
                    match Sqs::connect(&config.sqs) {
                        Ok(c) => sqs = Some(c),
                        Err(e) => {
                            eprintln!("chore: cannot set up the SQS client: {e}");
                            return 1;
                        }
                    }
                }
                let client = sqs.as_ref().expect("connected above");
                match SqsQueue::open(client, qc.url.as_deref().unwrap_or(&qc.full_name), &qc.sqs) {
                    Ok(q) => Arc::new(q),
                    Err(e @ OpenError::Missing(_)) => {
                        eprintln!("chore: queue `{}`: {e}", qc.name);
                        return 2;
                    }
                    // Not a missing queue (credentials, network): serve the other queues and
                    // keep trying this one.
                    Err(e) => {
                        tracing::error!(queue = %qc.full_name, error = %e, "cannot open the SQS queue; the other queues are served while its consumers keep trying");
                        Arc::new(LazySqsQueue::new(
                            client,
                            qc.url.as_deref().unwrap_or(&qc.full_name),
                            &qc.sqs,
                        ))
                    }
                }
            }
        };
        queues.push(queue);
        qconfigs.push(qc.clone());
    }
    if queues.is_empty() {
        eprintln!(
            "chore: no queues to consume: declare [queues.NAME] tables in the Chorefile (see Chorefile.example)"
        );
        return 2;
    }

    // Credits: the running batches plus one batch ahead, so a worker that finishes finds
    // its next batch ready, and nothing waits long in the buffer.
    let capacity = (config.concurrency + 1) * config.batch_size;
    let gate = Arc::new(Gate::new(capacity));
    // Each consumer thread waits for a whole receive's worth of credits; keep that within
    // its share (counting one share for what is running), so an idle thread can never sit
    // on credits another queue needs, and a small pool still receives a batch ahead.
    let consumer_threads = queues.len() * config.threads_per_queue;
    let polling_size = config
        .queue_polling_size
        .min((capacity / (consumer_threads + 1)).max(1));
    let stop = match Stop::new() {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("chore: {e}");
            return 1;
        }
    };
    let (signal_tx, signal_rx) = unbounded();
    if let Err(e) = signals::spawn(signal_tx) {
        eprintln!("chore: cannot handle signals: {e}");
        return 1;
    }
    let (batch_tx, batch_rx) = crossbeam_channel::bounded::<Batchlet>(256);
    // One memcached client for every queue that dedupes (it connects lazily).
    let dedupe = qconfigs
        .iter()
        .any(|q| q.dedupe)
        .then(|| Dedupe::new(&config.dedupe));
    let mut consumers = Vec::new();
    let shared = consumer::Shared {
        gate: gate.clone(),
        stop: stop.clone(),
        to_master: batch_tx,
        polling_size,
        dedupe: dedupe.clone(),
        log_file: config.log_file.clone(),
    };
    for (i, (q, qc)) in queues.iter().zip(&qconfigs).enumerate() {
        match consumer::spawn(i, qc, q.clone(), config.threads_per_queue, &shared) {
            Ok(handles) => consumers.extend(handles),
            Err(e) => {
                eprintln!("chore: queue `{}`: cannot start its consumer: {e}", qc.name);
                stop.trigger();
                gate.stop();
                return 1;
            }
        }
    }
    // Only the consumers hold senders now: the channel disconnects when they have all ended.
    drop(shared);

    for opt in &config.ignored_options {
        tracing::warn!(
            option = opt,
            "Ruby Chore option has no effect in chore; ignored"
        );
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        pid = std::process::id(),
        queues = %qconfigs.iter().map(|q| q.full_name.as_str()).collect::<Vec<_>>().join(","),
        concurrency = config.concurrency,
        batch_size = config.batch_size,
        "chore master started"
    );

    let (worker_tx, worker_rx) = unbounded();
    let mut master = Master {
        batcher: Batcher::new(
            queues.len(),
            config.batch_size,
            config.batch_timeout,
            config.strict_batching,
        ),
        pool: Pool::new(worker_tx),
        spawn_paused_until: None,
        held: HashSet::new(),
        deferred: Vec::new(),
        phase: Phase::Running,
        config,
        queues,
        qconfigs,
        gate,
        stop,
        log,
        batch_rx,
        worker_rx,
        signal_rx,
        consumers,
        dedupe,
        exit_status: 0,
    };
    master.run()
}

struct Master {
    config: Config,
    queues: Vec<Arc<dyn Queue>>,
    qconfigs: Vec<QueueConfig>,
    /// To forget the dedupe key of a message that will be offered again.
    dedupe: Option<Arc<Dedupe>>,
    batcher: Batcher,
    pool: Pool,
    gate: Arc<Gate>,
    stop: Arc<Stop>,
    log: LogHandle,
    phase: Phase,
    spawn_paused_until: Option<Instant>,
    /// (queue, id) of every message held: buffered or running. A second copy of a held
    /// message (its claim was recovered elsewhere and came back) waits in `deferred` until
    /// the first settles, so one master never runs two copies of a message at once.
    held: HashSet<(usize, String)>,
    deferred: Vec<(usize, Delivery)>,
    batch_rx: Receiver<Batchlet>,
    worker_rx: Receiver<WorkerEvent>,
    signal_rx: Receiver<i32>,
    consumers: Vec<JoinHandle<()>>,
    /// What `run` returns: 0, or 1 when it had to stop by itself.
    exit_status: i32,
}

impl Master {
    fn run(&mut self) -> i32 {
        let mut consumers_done = false;
        loop {
            let now = Instant::now();
            self.kill_expired(now);
            self.renew_claims(now);
            if let Phase::Draining { deadline, killed } = self.phase {
                if self.pool.is_empty() && consumers_done {
                    break;
                }
                if !killed && now >= deadline {
                    self.kill_all("shutdown-timeout passed during the drain");
                }
            } else {
                self.dispatch(now);
            }

            let wake = self.next_wake(now);
            let batch_rx = if consumers_done {
                never()
            } else {
                self.batch_rx.clone()
            };
            select! {
                recv(batch_rx) -> b => match b {
                    Ok(b) => self.on_batchlet(b),
                    Err(_) => {
                        consumers_done = true;
                        if !matches!(self.phase, Phase::Draining { .. }) {
                            // Every consumer ended by itself (a panic): nothing more will be
                            // received. Finish what is held and exit non-zero, for the
                            // supervisor to restart chore.
                            tracing::error!("every consumer thread has stopped; draining and exiting");
                            self.begin_drain(signal_hook::consts::SIGTERM);
                            self.exit_status = 1;
                        }
                    }
                },
                recv(self.worker_rx) -> e => {
                    if let Ok(e) = e {
                        self.on_worker_event(e);
                    }
                },
                recv(self.signal_rx) -> s => {
                    if let Ok(s) = s {
                        self.on_signal(s);
                    }
                },
                default(wake.saturating_duration_since(now)) => {}
            }
        }
        for c in self.consumers.drain(..) {
            let _ = c.join();
        }
        // Settlements some backends batch (SQS) go out before the master exits.
        for q in &self.queues {
            q.flush();
        }
        if let Some(d) = &self.dedupe {
            d.flush(Duration::from_secs(5));
        }
        tracing::info!("chore master stopped");
        self.exit_status
    }

    /// When the loop must next look at its timers.
    fn next_wake(&mut self, now: Instant) -> Instant {
        let mut wake = now + IDLE_TICK;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                wake = wake.min(t);
            }
        };
        consider(self.pool.next_deadline());
        if self.pool.len() < self.config.concurrency
            && !matches!(self.phase, Phase::Draining { .. })
        {
            consider(self.batcher.next_timeout());
            consider(self.spawn_paused_until);
        }
        if let Phase::Draining {
            deadline,
            killed: false,
        } = self.phase
        {
            consider(Some(deadline));
        }
        let held = self.batcher.held_mut().map(|(_, d)| d.renew_at).min();
        consider(held);
        consider(self.deferred.iter().map(|(_, d)| d.renew_at).min());
        let running = self
            .pool
            .workers()
            .iter()
            .flat_map(|w| w.deliveries.iter().flatten())
            .map(|d| d.renew_at)
            .min();
        consider(running);
        wake.max(now)
    }

    /// Start batches while worker slots are free.
    fn dispatch(&mut self, now: Instant) {
        if self.spawn_paused_until.is_some_and(|t| now < t) {
            return;
        }
        self.spawn_paused_until = None;
        while self.pool.len() < self.config.concurrency {
            let busy = self.busy_groups();
            let Some((q, batch)) = self
                .batcher
                .next_batch(now, &|q, g| busy.contains(&(q, g.to_owned())))
            else {
                break;
            };
            let spec = self.batch_spec(q, &batch);
            // The Chorefile's `timeout` if set, else the queue's own (SQS: its visibility
            // timeout; filesystem: already resolved when it was opened).
            let per_message = self.qconfigs[q]
                .timeout
                .unwrap_or_else(|| self.queues[q].timeout());
            let budget = per_message.saturating_mul(batch.len() as u32);
            let n = batch.len();
            let keep_credentials = self.qconfigs[q].pass_aws_credentials;
            match self
                .pool
                .spawn(q, spec, batch, budget, now, keep_credentials)
            {
                Ok(id) => {
                    let w = self.pool.get_mut(id).expect("just spawned");
                    tracing::info!(pid = w.pid, queue = %self.qconfigs[q].full_name, messages = n, ids = %w.ids().join(","), deadline_secs = budget.as_secs(), "worker started");
                }
                Err((batch, e)) => {
                    tracing::error!(queue = %self.qconfigs[q].full_name, messages = n, error = %e, "cannot start a worker; messages given back, retrying in 1s");
                    self.give_back(q, batch);
                    self.spawn_paused_until = Some(now + SPAWN_RETRY);
                    break;
                }
            }
        }
    }

    fn batch_spec(&self, q: usize, batch: &[Delivery]) -> Vec<u8> {
        let qc = &self.qconfigs[q];
        let messages = batch
            .iter()
            .map(|d| JobSpec {
                id: d.id.clone(),
                attempt: d.attempt,
                class: d.class.clone(),
                group: d.group.clone(),
                body: std::borrow::Cow::Borrowed(&d.body),
            })
            .collect();
        let spec = BatchSpec {
            queue: qc.full_name.clone(),
            handler: qc.handler.clone(),
            classes: qc.classes.clone(),
            log_file: self.config.log_file.clone(),
            log_json: self.config.log_format == crate::config::LogFormat::Json,
            log_level: self.config.log_level.to_string(),
            messages,
        };
        let mut line = serde_json::to_vec(&spec).expect("a batch serialises");
        line.push(b'\n');
        line
    }

    fn on_batchlet(&mut self, b: Batchlet) {
        if matches!(self.phase, Phase::Draining { .. } | Phase::Quiet) {
            // Received while the consumers were stopping or pausing (a receive already
            // under way when the signal came): never held, never started, so given back.
            self.return_unheld(b.queue, b.deliveries, true);
            return;
        }
        let q = b.queue;
        let mut fresh = b.deliveries;
        fresh.retain(|d| {
            if self.held.insert((q, d.id.clone())) {
                return true;
            }
            tracing::warn!(queue = %self.qconfigs[q].full_name, id = %d.id, "a second copy arrived while the first is still held (its claim was recovered elsewhere); it waits for the first to settle");
            self.deferred.push((q, d.clone()));
            false
        });
        self.batcher.add(q, fresh, b.short);
    }

    /// A held message has been settled or given back: forget it, and let a deferred second
    /// copy take its place.
    fn release(&mut self, q: usize, id: &str, settled: Option<&Settlement>) {
        self.held.remove(&(q, id.to_owned()));
        let Some(i) = self
            .deferred
            .iter()
            .position(|(dq, d)| *dq == q && d.id == id)
        else {
            return;
        };
        let (q, d) = self.deferred.swap_remove(i);
        // The held-back copy is the same message: it shares the first copy's fate, and runs
        // only if the first was given back unrun.
        let queue = &self.queues[q];
        let result = match settled {
            Some(Settlement::Complete) => queue.complete(&d),
            Some(Settlement::Retry { delay }) => queue.retry(&d, *delay),
            Some(Settlement::DeadLetter { reason }) => queue.dead_letter(&d, reason),
            Some(Settlement::GiveBack) | None => {
                if matches!(self.phase, Phase::Draining { .. }) {
                    self.return_unheld(q, vec![d], false);
                } else {
                    self.held.insert((q, d.id.clone()));
                    self.batcher.push(q, d);
                }
                return;
            }
        };
        if let Err(e) = result {
            tracing::error!(queue = %self.qconfigs[q].full_name, id = %d.id, error = %e, "could not settle the held-back second copy; it returns when its claim lapses");
        }
        self.gate.give(1);
    }

    /// Give back messages this master never held (received while quiet or draining, or
    /// held-back second copies): unlike `give_back`, this must not release the id, which
    /// may belong to a copy still running.
    fn return_unheld(&mut self, q: usize, deliveries: Vec<Delivery>, forget_keys: bool) {
        self.gate.give(deliveries.len());
        for d in deliveries {
            if forget_keys {
                self.forget_dedupe_key(&d);
            }
            if let Err(e) = self.queues[q].give_back(&d) {
                tracing::error!(queue = %self.qconfigs[q].full_name, id = %d.id, error = %e, "could not give message back; it returns when its claim lapses");
            }
        }
    }

    fn on_worker_event(&mut self, event: WorkerEvent) {
        match event {
            WorkerEvent::Report(id, report) => self.on_report(id, report),
            WorkerEvent::Garbled(id, line) => {
                let pid = self.pool.get_mut(id).map(|w| w.pid);
                tracing::warn!(pid, line = %line, "worker wrote a line that is not a report; ignored");
            }
            WorkerEvent::Exited(id, status) => {
                let Some(mut w) = self.pool.remove(id) else {
                    return;
                };
                let unsettled = w.unsettled();
                let how = describe_exit(&status);
                let reason = match w.killed {
                    Some(why) => format!("worker killed: {why}"),
                    None => format!("worker {how} before reporting a result"),
                };
                if unsettled > 0 || !status.success() {
                    tracing::warn!(pid = w.pid, queue = %self.qconfigs[w.queue].full_name, unreported = unsettled, ids = %w.ids().join(","), "worker {how}");
                } else {
                    tracing::debug!(pid = w.pid, queue = %self.qconfigs[w.queue].full_name, "worker finished");
                }
                for d in w.deliveries.iter_mut().filter_map(Option::take) {
                    self.settle(w.queue, d, Verdict::Fail, None, Some(&reason));
                }
            }
        }
    }

    fn on_report(&mut self, id: WorkerId, r: Report) {
        let Some(w) = self.pool.get_mut(id) else {
            return;
        };
        let (q, pid) = (w.queue, w.pid);
        let Some(d) = w.deliveries.get_mut(r.i).and_then(Option::take) else {
            tracing::warn!(
                pid,
                index = r.i,
                "worker reported on a message it does not hold; ignored"
            );
            return;
        };
        self.settle(q, d, r.verdict, r.delay, r.error.as_deref());
    }

    /// Apply the outcome of one attempt, and free its credit.
    fn settle(
        &mut self,
        q: usize,
        d: Delivery,
        verdict: Verdict,
        delay: Option<f64>,
        error: Option<&str>,
    ) {
        let qc = &self.qconfigs[q];
        let queue = &self.queues[q];
        let settlement = decide(
            verdict,
            d.attempt,
            qc.max_attempts,
            &qc.backoff,
            delay,
            error,
        );
        let result = match &settlement {
            Settlement::Complete => {
                tracing::debug!(queue = %qc.full_name, id = %d.id, attempt = d.attempt, "completed");
                queue.complete(&d)
            }
            Settlement::Retry { delay } => {
                tracing::warn!(queue = %qc.full_name, id = %d.id, attempt = d.attempt, retry_in_secs = delay.as_secs_f64(), error = error.unwrap_or("retry requested"), "failed; will retry");
                queue.retry(&d, *delay)
            }
            Settlement::GiveBack => {
                tracing::debug!(queue = %qc.full_name, id = %d.id, reason = error.unwrap_or(""), "given back");
                queue.give_back(&d)
            }
            Settlement::DeadLetter { reason } => {
                tracing::error!(queue = %qc.full_name, id = %d.id, attempt = d.attempt, body_bytes = d.body.len(), reason = %reason, "dead-lettered");
                if let Some(hook) = &qc.on_permanent_failure {
                    pool::run_hook(
                        hook,
                        &qc.full_name,
                        &d,
                        reason,
                        self.config.log_file.as_deref(),
                    );
                }
                queue.dead_letter(&d, reason)
            }
        };
        // A message that will be offered again must not look like a duplicate then.
        if matches!(settlement, Settlement::Retry { .. } | Settlement::GiveBack) {
            self.forget_dedupe_key(&d);
        }
        let held_back_group = match &settlement {
            Settlement::Retry { .. } if queue.ordered() => d.group.clone(),
            _ => None,
        };
        if let Err(e) = result {
            // The claim stays where it is and lapses; the message is then offered again.
            tracing::error!(queue = %qc.full_name, id = %d.id, error = %e, "could not settle message; it will be offered again when its claim lapses");
        }
        self.gate.give(1);
        self.release(q, &d.id, Some(&settlement));
        // FIFO: a retried message holds back the rest of its group, so that the group
        // keeps its order: what waits here goes back to the queue behind it.
        if let Some(g) = held_back_group {
            let behind = self.batcher.take_group(q, &g);
            if !behind.is_empty() {
                self.give_back(q, behind);
            }
        }
    }

    fn forget_dedupe_key(&self, d: &Delivery) {
        if let (Some(dedupe), Some(key)) = (&self.dedupe, &d.dedupe_key) {
            dedupe.forget(key.clone());
        }
    }

    /// The (queue, group) pairs running in a worker right now (FIFO queues only).
    fn busy_groups(&self) -> HashSet<(usize, String)> {
        let mut busy = HashSet::new();
        for w in self.pool.workers() {
            if self.queues[w.queue].ordered() {
                busy.extend(
                    w.deliveries
                        .iter()
                        .flatten()
                        .filter_map(|d| d.group.clone())
                        .map(|g| (w.queue, g)),
                );
            }
        }
        busy
    }

    fn give_back(&mut self, q: usize, deliveries: Vec<Delivery>) {
        let n = deliveries.len();
        self.gate.give(n);
        for d in deliveries {
            self.forget_dedupe_key(&d);
            if let Err(e) = self.queues[q].give_back(&d) {
                tracing::error!(queue = %self.qconfigs[q].full_name, id = %d.id, error = %e, "could not give message back; it returns when its claim lapses");
            }
            self.release(q, &d.id, None);
        }
    }

    fn kill_expired(&mut self, now: Instant) {
        for id in self.pool.expired(now) {
            if let Some(w) = self.pool.workers().iter().find(|w| w.id == id) {
                tracing::error!(
                    pid = w.pid,
                    queue = %self.qconfigs[w.queue].full_name,
                    ids = %w.ids().join(","),
                    ran_secs = now.duration_since(w.started).as_secs_f64(),
                    "worker passed its deadline; killed with SIGKILL"
                );
            }
            self.pool.kill(id, "it passed its deadline");
        }
    }

    fn kill_all(&mut self, why: &'static str) {
        let ids: Vec<WorkerId> = self.pool.workers().iter().map(|w| w.id).collect();
        if !ids.is_empty() {
            tracing::error!(workers = ids.len(), "{why}; killing the remaining workers");
        }
        for id in ids {
            self.pool.kill(id, why);
        }
        if let Phase::Draining { deadline, .. } = self.phase {
            self.phase = Phase::Draining {
                deadline,
                killed: true,
            };
        }
    }

    /// Renew every held claim that is due, buffered or running.
    fn renew_claims(&mut self, now: Instant) {
        let queues = &self.queues;
        let renew = |q: usize, d: &mut Delivery| {
            if d.renew_at <= now
                && let Err(e) = queues[q].renew(d, now)
            {
                if e.kind() == std::io::ErrorKind::NotFound {
                    // Recovered by another consumer: there is nothing left to renew, and
                    // the settlement will say the claim was gone.
                    tracing::warn!(queue = %queues[q].name(), id = %d.id, "claim lost (recovered by another consumer); no longer renewed");
                    d.renew_at = now + Duration::from_secs(86_400);
                } else {
                    tracing::warn!(queue = %queues[q].name(), id = %d.id, error = %e, "could not renew claim");
                    // Do not retry in a hot loop.
                    d.renew_at = now + Duration::from_secs(1);
                }
            }
        };
        for (q, d) in self.batcher.held_mut() {
            renew(q, d);
        }
        for (q, d) in &mut self.deferred {
            renew(*q, d);
        }
        for w in self.pool.workers_mut() {
            let q = w.queue;
            for d in w.deliveries.iter_mut().flatten() {
                renew(q, d);
            }
        }
    }

    fn on_signal(&mut self, sig: i32) {
        match sig {
            SIGINT | SIGTERM | SIGQUIT => match self.phase {
                Phase::Draining { .. } => {
                    tracing::warn!(
                        signal = signals::name(sig),
                        "second signal during the drain: killing workers and exiting"
                    );
                    self.kill_all("a second shutdown signal arrived");
                }
                _ => self.begin_drain(sig),
            },
            SIGUSR1 => match self.log.reopen() {
                Ok(()) => tracing::info!("log file reopened"),
                Err(e) => tracing::error!(error = %e, "could not reopen the log file"),
            },
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
            SIGTTIN => self.status_dump(),
            _ => {}
        }
    }

    fn begin_drain(&mut self, sig: i32) {
        let now = Instant::now();
        self.stop.trigger();
        self.gate.stop();
        let waiting = self.batcher.take_all();
        tracing::info!(
            signal = signals::name(sig),
            workers = self.pool.len(),
            given_back = waiting.len(),
            shutdown_timeout_secs = self.config.shutdown_timeout.as_secs_f64(),
            "draining: receiving stopped, waiting for running workers"
        );
        for (q, d) in waiting {
            self.give_back(q, vec![d]);
        }
        for (q, d) in std::mem::take(&mut self.deferred) {
            self.return_unheld(q, vec![d], false);
        }
        self.phase = Phase::Draining {
            deadline: now + self.config.shutdown_timeout,
            killed: false,
        };
    }

    fn status_dump(&mut self) {
        let now = Instant::now();
        tracing::info!(
            phase = ?self.phase,
            workers = self.pool.len(),
            buffered = self.batcher.len(),
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
                ids = %w.ids().join(","),
                age_secs = now.duration_since(w.started).as_secs_f64(),
                deadline_in_secs = w.deadline.saturating_duration_since(now).as_secs_f64(),
                "status: worker"
            );
        }
    }
}
