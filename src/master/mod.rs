//! The master: one loop that owns every held message from receipt to settlement.
//!
//! Each turn of `Master::run` does, in order:
//! 1. update what the master tells the world when its time has come (`observing`), and
//!    start, replace or retire preloaders when theirs has (`preloaders`);
//! 2. kill workers past their deadline (SIGKILL to the group, one log line);
//! 3. renew the claims of held messages before they lapse;
//! 4. start batches while worker slots are free, and posts while HTTP handlers have free
//!    connections (unless draining);
//! 5. wait for one event (messages from a consumer, a worker's report or exit, a post's
//!    outcome, a signal) or the next timer, and handle it (`master::events`,
//!    `master::posting`).
//!
//! Every message a worker ran is settled here
//! (docs/decisions/0005-the-master-settles-every-message.md): complete, retry after the
//! backoff, or dead-letter. A worker that dies without reporting on one message settles it
//! as a failed attempt; several are run again in halves until the one that kills its batch
//! runs alone (docs/decisions/0022-a-crashed-batch-is-bisected.md). A drain (INT/TERM/QUIT) stops the consumers, gives back what was received but
//! not started, waits for the workers up to `shutdown-timeout`, kills what is left, settles
//! what came back, and returns 0.
//!
//! The state is split by owner: `held::Holding` owns the messages, `pool::Pool` the
//! worker processes, `posts::Posts` the HTTP requests in flight, `Phase` the lifecycle,
//! `observing::Observing` what the master tells the world (metrics, liveness, systemd,
//! `chore status`). No turn and no event handler reads the clock: `run` reads
//! it once per turn and per event and passes it in as `now`, so the logic is unit-tested
//! without processes (`tests`).

mod events;
mod held;
mod observing;
mod pool;
mod posting;
mod posts;
mod preloaders;
mod process;
mod reload;
mod signals;
mod startup;
#[cfg(test)]
mod tests;
mod watchers;

use crate::batcher::Batcher;
use crate::config::HttpTarget;
use crate::config::{Config, QueueConfig};
use crate::consumer::{Batchlet, Gate, Held};
use crate::dedupe::Dedupe;
use crate::logging::LogHandle;
use crate::poster::{Health, Posted};
use crate::protocol::{BatchSpec, JobSpec};
use crate::queue::Stop;
use crate::settle::{Settlement, Settler};
use crossbeam_channel::{Receiver, never, select};
use held::Holding;
use pool::{Pool, WorkerEvent};
use posts::Posts;
use preloaders::Preloaders;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The longest the loop sleeps with nothing to do; timers are usually sooner.
const IDLE_TICK: Duration = Duration::from_secs(1);
/// After a failed spawn, wait this long before trying again.
const SPAWN_RETRY: Duration = Duration::from_secs(1);
/// At most this many more post outcomes are settled in one turn after the one that woke
/// the loop, so that signals and worker events wait for no long burst.
const POSTED_PER_TURN: usize = 255;

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
pub fn run(config: Config, log: LogHandle, flags: crate::config::cli::Flags) -> i32 {
    match startup::start(config, log, flags) {
        Ok(mut master) => master.run(),
        Err(e) => {
            eprintln!("chore: {e}");
            e.exit_status()
        }
    }
}

/// Where the loop's events come from.
struct Inputs {
    batch_rx: Receiver<Batchlet>,
    worker_rx: Receiver<WorkerEvent>,
    post_rx: Receiver<Posted>,
    signal_rx: Receiver<i32>,
    /// Questions from the control socket, and the queues' depths.
    observe_rx: Receiver<observing::Observed>,
    consumers: Vec<JoinHandle<()>>,
}

struct Master {
    config: Config,
    qconfigs: Vec<QueueConfig>,
    /// One per queue, in `qconfigs` order: the queue and how to settle its messages.
    settlers: Vec<Settler>,
    holding: Holding,
    pool: Pool,
    posts: Posts,
    /// Each HTTP target's health gate, which a refused connection closes.
    health: Vec<(Arc<HttpTarget>, Arc<Health>)>,
    /// The preloaded handlers' preloaders, and when they next need a look.
    preloaders: Preloaders,
    preload_wake: Option<Instant>,
    gate: Arc<Gate>,
    stop: Arc<Stop>,
    log: LogHandle,
    phase: Phase,
    spawn_paused_until: Option<Instant>,
    /// For the status dump's counters.
    dedupe: Option<Arc<Dedupe>>,
    inputs: Inputs,
    /// What SIGHUP needs (`reload`).
    reload: reload::Reload,
    /// What `run` returns: 0, or 1 when it had to stop by itself.
    exit_status: i32,
    /// Metrics, liveness, systemd notifications, `chore status`.
    obs: observing::Observing,
}

impl Master {
    fn new(
        config: Config,
        qconfigs: Vec<QueueConfig>,
        settlers: Vec<Settler>,
        gate: Arc<Gate>,
        stop: Arc<Stop>,
        pool: Pool,
    ) -> Master {
        let batcher = Batcher::new(
            qconfigs.len(),
            config.batch_size,
            config.batch_timeout,
            config.strict_batching,
        );
        let names: Vec<&str> = qconfigs.iter().map(|q| q.full_name.as_str()).collect();
        let obs = observing::Observing::new(&names, config.stall_timeout, Instant::now());
        Master {
            obs,
            holding: Holding::new(batcher),
            pool,
            posts: Posts::none(),
            health: Vec::new(),
            preloaders: Preloaders::none(),
            preload_wake: None,
            config,
            qconfigs,
            settlers,
            gate,
            stop,
            log: LogHandle::default(),
            phase: Phase::Running,
            spawn_paused_until: None,
            dedupe: None,
            inputs: Inputs {
                batch_rx: never(),
                worker_rx: never(),
                post_rx: never(),
                signal_rx: never(),
                observe_rx: never(),
                consumers: Vec::new(),
            },
            reload: Default::default(),
            exit_status: 0,
        }
    }

    fn run(&mut self) -> i32 {
        let mut consumers_done = false;
        self.observe_ready();
        loop {
            let now = Instant::now();
            if self.turn(now, consumers_done) {
                break;
            }
            let wake = self.next_wake(now);
            let batch_rx = if consumers_done {
                never()
            } else {
                self.inputs.batch_rx.clone()
            };
            select! {
                recv(batch_rx) -> b => match b {
                    Ok(b) => self.on_batchlet(b),
                    Err(_) => {
                        consumers_done = true;
                        self.on_consumers_gone(Instant::now());
                    }
                },
                recv(self.inputs.worker_rx) -> e => {
                    if let Ok(e) = e {
                        self.on_worker_event(e, Instant::now());
                    }
                },
                recv(self.inputs.post_rx) -> p => {
                    if let Ok(p) = p {
                        self.on_posted(p);
                        // Posts end in bursts: settle every outcome already here before
                        // the next turn, which then starts their successors at once
                        // (one pass over the held messages and timers, not one per post).
                        for _ in 0..POSTED_PER_TURN {
                            let Ok(p) = self.inputs.post_rx.try_recv() else {
                                break;
                            };
                            self.on_posted(p);
                        }
                    }
                },
                recv(self.inputs.signal_rx) -> s => {
                    if let Ok(s) = s {
                        self.on_signal(s, Instant::now());
                    }
                },
                recv(self.inputs.observe_rx) -> o => {
                    if let Ok(o) = o {
                        self.on_observed(o, Instant::now());
                    }
                },
                default(wake.saturating_duration_since(now)) => {}
            }
        }
        for c in self.inputs.consumers.drain(..) {
            let _ = c.join();
        }
        for c in self.reload.retiring.drain(..) {
            let _ = c.join();
        }
        self.preloaders.stop_all();
        // Settlements some backends batch (SQS) go out before the master exits.
        for s in &self.settlers {
            s.queue.flush();
        }
        if let Some(d) = &self.dedupe {
            d.flush(Duration::from_secs(5));
        }
        tracing::info!("chore master stopped");
        self.exit_status
    }

    /// The timed part of one turn: observe, tend the preloaders, kill, renew, start. True
    /// when a drain is complete.
    fn turn(&mut self, now: Instant, consumers_done: bool) -> bool {
        self.observe_tick(now);
        if self.preload_wake.is_some_and(|t| now >= t) {
            self.preload_wake = self.preloaders.tick(now);
        }
        self.kill_expired(now);
        self.renew_claims(now);
        if let Phase::Draining { deadline, killed } = self.phase {
            if self.pool.is_empty() && self.posts.is_empty() && consumers_done {
                return true;
            }
            if !killed && now >= deadline {
                self.kill_all("shutdown-timeout passed during the drain");
            }
        } else {
            self.dispatch(now);
        }
        false
    }

    /// When the loop must next look at its timers.
    fn next_wake(&self, now: Instant) -> Instant {
        let draining = matches!(self.phase, Phase::Draining { .. });
        let can_start = self.pool.len() < self.config.concurrency && !draining;
        let drain_deadline = match self.phase {
            Phase::Draining {
                deadline,
                killed: false,
            } => Some(deadline),
            _ => None,
        };
        [
            self.pool.next_deadline(),
            self.posts.next_deadline(),
            self.preload_wake,
            can_start.then(|| self.holding.next_timeout()).flatten(),
            can_start.then_some(self.spawn_paused_until).flatten(),
            drain_deadline,
            self.holding.next_renewal(),
            Some(self.obs.next_wake()),
        ]
        .into_iter()
        .flatten()
        .fold(now + IDLE_TICK, Instant::min)
        .max(now)
    }

    /// Start posts while their targets have free connections, and batches while worker
    /// slots are free.
    fn dispatch(&mut self, now: Instant) {
        self.start_posts(now);
        if self.spawn_paused_until.is_some_and(|t| now < t) {
            return;
        }
        self.spawn_paused_until = None;
        while self.pool.len() < self.config.concurrency {
            let settlers = &self.settlers;
            let Some((q, batch)) = self
                .holding
                .next_batch(now, &|q| settlers[q].queue.ordered())
            else {
                break;
            };
            let spec = self.batch_spec(q, &batch);
            let per_message = self.message_timeout(q);
            let budget = per_message.saturating_mul(batch.len() as u32);
            let keep_credentials = self.qconfigs[q].pass_aws_credentials;
            let name = &self.qconfigs[q].full_name;
            match self.pool.spawn(q, spec, budget, now, keep_credentials) {
                Ok(id) => {
                    let pid = self.pool.get(id).map(|w| w.pid);
                    let ids: Vec<&str> = batch.iter().map(|h| h.delivery.id.as_str()).collect();
                    tracing::info!(pid, queue = %name, messages = batch.len(), ids = %ids.join(","), deadline_secs = budget.as_secs(), "worker started");
                    self.obs.metrics[q].workers_started.increment(1);
                    for h in &batch {
                        self.obs.started(q, h.delivery.received_at, now);
                    }
                    self.holding.start(id, q, batch);
                }
                Err(e) => {
                    tracing::error!(queue = %name, messages = batch.len(), error = %e, "cannot start a worker; messages given back, retrying in 1s");
                    for h in batch {
                        self.give_back(q, h, "the worker could not start");
                    }
                    self.spawn_paused_until = Some(now + SPAWN_RETRY);
                    break;
                }
            }
        }
    }

    /// How long one message of queue `q` may run: the Chorefile's `timeout` if set, else
    /// the queue's own (SQS: its visibility timeout; filesystem: already resolved when it
    /// was opened).
    fn message_timeout(&self, q: usize) -> Duration {
        self.qconfigs[q]
            .timeout
            .unwrap_or_else(|| self.settlers[q].queue.timeout())
    }

    /// The batch line a worker reads on its stdin.
    fn batch_spec(&mut self, q: usize, batch: &[Held]) -> Vec<u8> {
        let qc = &self.qconfigs[q];
        let messages = batch
            .iter()
            .map(|h| &h.delivery)
            .map(|d| JobSpec {
                id: d.id.clone(),
                attempt: d.attempt,
                class: d.class.clone(),
                group: d.group.clone(),
                body: std::borrow::Cow::Borrowed(&d.body),
                meta: d.meta.as_deref().map(message_meta),
            })
            .collect();
        let mut spec = BatchSpec {
            queue: qc.full_name.clone(),
            handler: qc.handler.clone(),
            classes: qc.classes.clone(),
            log_file: self.config.log_file.clone(),
            log_format: self.config.log_format,
            log_level: self.config.log_level.to_string(),
            memory_limit: qc.memory_limit,
            messages,
        };
        // A preloaded handler's batch goes to its serving preloader.
        let handlers = spec.handler.iter_mut().chain(spec.classes.values_mut());
        self.preloaders.assign(handlers);
        let mut line = serde_json::to_vec(&spec).expect("a batch serialises");
        line.push(b'\n');
        line
    }

    /// A held message goes back to its queue unrun (its attempt does not count), and its
    /// place in `holding` is released.
    fn give_back(&mut self, q: usize, h: Held, why: &str) {
        self.settlers[q].apply(&h.delivery, &Settlement::GiveBack, Some(why));
        self.release(q, h, None);
    }

    /// A held message has been settled (`fate`) or given back (None): drop it, which
    /// returns its credit, and let a deferred second copy follow. The copy is the same
    /// message: it shares the first copy's fate, and runs only if the first was given back
    /// unrun.
    fn release(&mut self, q: usize, h: Held, fate: Option<&Settlement>) {
        let id = h.delivery.id.clone();
        drop(h);
        let Some(copy) = self.holding.release(q, &id) else {
            return;
        };
        match fate {
            Some(
                s @ (Settlement::Complete
                | Settlement::Retry { .. }
                | Settlement::DeadLetter { .. }),
            ) => {
                self.settlers[q].apply_to_copy(&copy.delivery, s);
            }
            Some(Settlement::GiveBack) | None => {
                if matches!(self.phase, Phase::Draining { .. }) || self.reload.is_removed(q) {
                    self.settlers[q].apply(&copy.delivery, &Settlement::GiveBack, Some("draining"));
                } else {
                    self.holding.hold(q, copy);
                }
            }
        }
    }
}

/// A delivery's metadata as the worker passes it on to handlers.
fn message_meta(m: &crate::queue::Meta) -> crate::protocol::MessageMeta {
    let unix = |t: std::time::SystemTime| {
        let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
        // Milliseconds are all SQS gives; more digits would only be noise.
        Some((d.as_millis() as f64) / 1000.0)
    };
    crate::protocol::MessageMeta {
        sent_at: m.sent_at.and_then(unix),
        first_received_at: m.first_received_at.and_then(unix),
        sender_id: m.sender_id.clone(),
        attributes: m
            .attributes
            .iter()
            .map(|a| crate::protocol::AttributeSpec {
                name: a.name.clone(),
                data_type: a.data_type.clone(),
                value: a.string_value.clone(),
            })
            .collect(),
    }
}
