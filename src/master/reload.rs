//! SIGHUP: read the Chorefiles again and apply what can change without a restart
//! (docs/decisions/0028-reload-semantics.md).
//!
//! The files and flags are the ones the master started with. A configuration with a
//! mistake is refused (one error line per mistake, file:line:key) and the running one
//! stays. Otherwise `config::diff` sorts the changes: what is live is applied here at
//! once, what is not keeps its old value and is named in one warning line each, and one
//! info line says what changed.
//!
//! Queue numbers never move: a removed queue keeps its slot (its settler settles what it
//! still runs), its consumers are retired, its buffered messages go back; an added queue
//! takes the next number.

use super::{Master, Phase};
use crate::config::cli::Flags;
use crate::config::{self, QueueConfig};
use crate::consumer::{self, Held};
use crate::settle::{Settlement, Settler};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What the master keeps to reload.
#[derive(Default)]
pub(super) struct Reload {
    /// How the configuration was loaded at start; None: reloading is off (unit tests).
    flags: Option<Flags>,
    /// The consumers' shared parts, to start new ones. Holds a sender of the consumers'
    /// channel, so it is dropped when a drain starts (the channel must close then).
    shared: Option<consumer::Shared>,
    /// Per queue number: the retire flag of its current consumer threads.
    retire: Vec<Arc<AtomicBool>>,
    /// Per queue number: removed by a reload (no longer consumed).
    removed: Vec<bool>,
    /// The part of the gate's credits that HTTP targets hold (fixed until a restart).
    http_credits: usize,
    /// Consumer threads retired by a reload: out of `Inputs::consumers`, so that their
    /// ending is not taken for a consumer that died; joined at exit like the others.
    pub(super) retiring: Vec<std::thread::JoinHandle<()>>,
}

impl Reload {
    pub(super) fn new(
        flags: Flags,
        shared: consumer::Shared,
        retire: Vec<Arc<AtomicBool>>,
        http_credits: usize,
    ) -> Reload {
        Reload {
            flags: Some(flags),
            shared: Some(shared),
            removed: vec![false; retire.len()],
            retire,
            http_credits,
            retiring: Vec::new(),
        }
    }

    /// A drain began: no consumer will start again.
    pub(super) fn end(&mut self) {
        self.shared = None;
    }

    /// Whether queue `q` was removed by a reload.
    pub(super) fn is_removed(&self, q: usize) -> bool {
        self.removed.get(q).copied().unwrap_or(false)
    }
}

impl Master {
    /// SIGHUP.
    pub(super) fn reload(&mut self) {
        if matches!(self.phase, Phase::Draining { .. }) {
            tracing::warn!("SIGHUP during a drain: ignored");
            return;
        }
        let Some(flags) = self.reload.flags.clone() else {
            return;
        };
        let new = match config::load(flags) {
            Ok(c) => c,
            Err(errors) => {
                for e in &errors.0 {
                    tracing::error!(error = %e, "SIGHUP: configuration refused; the running configuration stays");
                }
                return;
            }
        };
        if new.selected_queues().next().is_none() {
            tracing::error!(
                "SIGHUP: configuration refused (no queues to consume); the running configuration stays"
            );
            return;
        }
        let running: Vec<&QueueConfig> = (0..self.qconfigs.len())
            .filter(|&q| !self.reload.is_removed(q))
            .map(|q| &self.qconfigs[q])
            .collect();
        let diff = config::diff::diff(&self.config, &running, &new, self.dedupe.is_some());
        for setting in &diff.restart {
            tracing::warn!(setting = %setting, "SIGHUP: this change needs a restart; the running value stays");
        }
        self.apply_globals(&new);
        let mut changes = diff.live.clone();
        for (name, rerouted) in &diff.changed {
            let q = self.slot_of(name).expect("a running queue");
            let fresh = new.queue(name).expect("in the new configuration").clone();
            self.apply_queue(q, fresh, *rerouted);
            changes.push(format!("queue {name} changed"));
        }
        for name in &diff.removed {
            let q = self.slot_of(name).expect("a running queue");
            self.remove_queue(q);
            changes.push(format!("queue {name} removed"));
        }
        for name in &diff.added {
            let qc = new.queue(name).expect("in the new configuration").clone();
            match self.add_queue(qc) {
                Ok(()) => changes.push(format!("queue {name} added")),
                Err(e) => {
                    tracing::error!(queue = %name, error = %e, "SIGHUP: cannot add the queue")
                }
            }
        }
        let changes = if changes.is_empty() {
            "nothing".to_string()
        } else {
            changes.join("; ")
        };
        tracing::info!(changes = %changes, needs_restart = diff.restart.len(), "SIGHUP: configuration reloaded");
    }

    /// The slot of the running (not removed) queue `name`.
    fn slot_of(&self, name: &str) -> Option<usize> {
        (0..self.qconfigs.len())
            .find(|&q| self.qconfigs[q].name == name && !self.reload.is_removed(q))
    }

    fn apply_globals(&mut self, new: &config::Config) {
        let c = &mut self.config;
        c.concurrency = new.concurrency;
        c.batch_size = new.batch_size;
        c.batch_timeout = new.batch_timeout;
        c.strict_batching = new.strict_batching;
        c.shutdown_timeout = new.shutdown_timeout;
        c.log_level = new.log_level;
        c.log_settlements = new.log_settlements;
        self.log.set_filter(c.log_level, c.log_settlements);
        self.holding
            .set_policy(c.batch_size, c.batch_timeout, c.strict_batching);
        self.resize_gate();
    }

    /// Credits for the running batches plus one batch ahead (as at start), and what the
    /// HTTP targets hold.
    fn resize_gate(&self) {
        let runs_commands = (0..self.qconfigs.len()).any(|q| {
            !self.reload.is_removed(q)
                && (self.qconfigs[q].handler.is_some() || !self.qconfigs[q].classes.is_empty())
        });
        let commands = if runs_commands {
            (self.config.concurrency + 1) * self.config.batch_size
        } else {
            0
        };
        self.gate.set_capacity(commands + self.reload.http_credits);
    }

    /// Take a running queue's live settings; with new handlers, its consumers start again
    /// so that they route by them. Handlers that are not `rerouted` stay as they are: a
    /// change to a preloaded handler waits for a restart (there is no preloader for the new
    /// one), even when the same reload changes a live setting of the queue.
    fn apply_queue(&mut self, q: usize, fresh: QueueConfig, rerouted: bool) {
        let qc = &mut self.qconfigs[q];
        if rerouted {
            qc.handler = fresh.handler;
            qc.classes = fresh.classes;
        }
        qc.backoff = fresh.backoff;
        qc.max_attempts = fresh.max_attempts;
        qc.pass_aws_credentials = fresh.pass_aws_credentials;
        qc.memory_limit = fresh.memory_limit;
        qc.on_permanent_failure = fresh.on_permanent_failure.clone();
        // Shared with the consumers' copies of the settler.
        self.settlers[q]
            .on_permanent_failure
            .set(fresh.on_permanent_failure);
        if rerouted {
            self.retire_consumers(q);
            if let Err(e) = self.start_consumers(q) {
                tracing::error!(queue = %self.qconfigs[q].full_name, error = %e, "SIGHUP: cannot restart the queue's consumers");
            }
            self.resize_gate();
        }
    }

    /// Stop consuming queue `q`: its consumers end, what it has buffered goes back, what
    /// it runs finishes and is settled as usual.
    fn remove_queue(&mut self, q: usize) {
        self.retire_consumers(q);
        self.reload.removed[q] = true;
        self.obs.remove_queue(q);
        let buffered: Vec<Held> = self.holding.take_buffered_of(q);
        for h in buffered {
            self.give_back(q, h, "its queue was removed by a reload");
        }
        self.resize_gate();
    }

    fn retire_consumers(&mut self, q: usize) {
        if let Some(flag) = self.reload.retire.get(q) {
            flag.store(true, Ordering::Release);
        }
        // Consumer threads are named `consume-<queue>-<n>` (`consumer::spawn`); queue `a`'s
        // are not queue `a-b`'s.
        let prefix = format!("consume-{}-", self.qconfigs[q].name);
        let ours = |name: &str| {
            name.strip_prefix(&prefix)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        };
        let (retired, kept) = std::mem::take(&mut self.inputs.consumers)
            .into_iter()
            .partition(|c| c.thread().name().is_some_and(ours));
        self.inputs.consumers = kept;
        self.reload.retiring.extend::<Vec<_>>(retired);
    }

    /// Open a new queue and start consuming it, under the running settings (a new queue
    /// root, say, waits for a restart like the rest).
    fn add_queue(&mut self, qc: QueueConfig) -> Result<(), String> {
        let queue = crate::queue::open(&self.config, &qc, &mut None).map_err(|e| match e {
            crate::queue::OpenFailure::Config(e) | crate::queue::OpenFailure::Client(e) => e,
        })?;
        let hooks = self.settlers[0].hooks.clone();
        let settler = Settler {
            queue,
            on_permanent_failure: crate::settle::FailureHook::new(qc.on_permanent_failure.clone()),
            hooks,
            dedupe: self.dedupe.clone().filter(|_| qc.dedupe),
        };
        let q = self.holding.add_queue();
        debug_assert_eq!(q, self.qconfigs.len());
        self.obs.add_queue(&qc.full_name, settler.queue.clone());
        self.qconfigs.push(qc);
        self.settlers.push(settler);
        self.reload.removed.push(false);
        self.reload.retire.push(Arc::default());
        self.resize_gate();
        self.start_consumers(q).map_err(|e| {
            self.remove_queue(q);
            format!("cannot start its consumer: {e}")
        })
    }

    /// Start queue `q`'s consumer threads, with a fresh retire flag.
    fn start_consumers(&mut self, q: usize) -> Result<(), String> {
        let Some(shared) = &self.reload.shared else {
            return Err("the master is draining".into());
        };
        let flag = Arc::new(AtomicBool::new(false));
        let shared = consumer::Shared {
            retired: flag.clone(),
            ..shared.clone()
        };
        let threads = self.config.threads_per_queue;
        let waits = super::startup::readiness(&self.qconfigs[q], &self.health, &self.preloaders);
        let handles = consumer::spawn(
            q,
            &self.qconfigs[q],
            &self.settlers[q],
            threads,
            waits,
            &shared,
        )
        .map_err(|e| e.to_string())?;
        self.reload.retire[q] = flag;
        self.inputs.consumers.extend(handles);
        Ok(())
    }

    /// Messages a retired consumer of a removed queue passed on after all: back they go.
    pub(super) fn refuse_removed(&mut self, q: usize, messages: Vec<Held>) {
        for h in messages {
            self.settlers[q].apply(
                &h.delivery,
                &Settlement::GiveBack,
                Some("its queue was removed by a reload"),
            );
        }
    }
}
