//! Start-up: from a resolved `Config` to a master ready to run, or one typed error.
//!
//! Everything that can refuse to start happens here, before the first consumer thread
//! receives anything: every queue opened (`queue::open`), the signal thread, the consumer
//! threads. A configuration mistake exits 2, anything else 1
//! (docs/decisions/0015-errors-at-start-and-at-run-time.md).

use super::pool::Pool;
use super::posts::Posts;
use super::preloaders::Preloaders;
use super::process::Processes;
use super::{Master, signals};
use crate::config::cli::Flags;
use crate::config::{Config, HttpTarget, QueueConfig};
use crate::consumer::{self, Batchlet, Gate};
use crate::dedupe::Dedupe;
use crate::hooks::Hooks;
use crate::logging::LogHandle;
use crate::poster::Health;
use crate::queue::{self, OpenFailure, Queue, Stop};
use crate::settle::Settler;
use crossbeam_channel::unbounded;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;

/// Why the master did not start.
#[derive(Debug)]
pub enum StartError {
    /// The configuration cannot work (exit 2).
    Config(String),
    /// The machine would not let it start (exit 1).
    System(String),
}

impl StartError {
    pub fn exit_status(&self) -> i32 {
        match self {
            StartError::Config(_) => 2,
            StartError::System(_) => 1,
        }
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(m) | StartError::System(m) => f.write_str(m),
        }
    }
}

/// Keep the master's AWS secrets from its children, who know its pid: hide them from its
/// environment and its `/proc/<pid>/environ` (the SQS client and `pass-aws-credentials`
/// use the copy `launch` keeps), and make the master non-dumpable, so that a process of the
/// same user can neither attach to it nor read its memory (its `/proc` files then belong to
/// root). Workers regain dumpability: they are executed afresh. Runs first, while the
/// master has one thread.
fn protect_secrets() {
    match crate::secrets::hide_secrets() {
        Ok(names) if !names.is_empty() => {
            tracing::debug!(variables = %names.join(","), "AWS secrets hidden from the environment");
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "could not blank AWS secrets in the original environment block")
        }
    }
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %e, "could not make the master non-dumpable");
    }
}

/// Open the queues and start the consumers and the signal thread.
pub fn start(config: Config, log: LogHandle, flags: Flags) -> Result<Master, StartError> {
    give_large_buffers_back();
    protect_secrets();
    if let Some(addr) = config.metrics_listen {
        serve_metrics(addr)?;
    }
    let qconfigs: Vec<_> = config.selected_queues().cloned().collect();
    if qconfigs.is_empty() {
        return Err(StartError::Config(
            "no queues to consume: declare [queues.NAME] tables in the Chorefile (see Chorefile.example)".into(),
        ));
    }
    let queues = open_queues(&config, &qconfigs)?;
    // After the queue root is made, before any thread that writes files starts (the
    // bind sets the umask for a moment; the SQS client's threads write none).
    let control = bind_control(&config)?;

    let targets = http_targets(&qconfigs);
    let Credits {
        capacity,
        http: http_credits,
        polling_size,
    } = credits(&config, &qconfigs, &targets);
    let gate = Gate::new(capacity);
    let stop = Arc::new(Stop::new().map_err(|e| StartError::System(e.to_string()))?);
    let (signal_tx, signal_rx) = unbounded();
    signals::spawn(signal_tx)
        .map_err(|e| StartError::System(format!("cannot handle signals: {e}")))?;
    // One memcached client for every queue that dedupes (it connects lazily).
    let dedupe = qconfigs
        .iter()
        .any(|q| q.dedupe)
        .then(|| Dedupe::new(&config.dedupe));
    let hooks = Hooks::new(config.log_file.clone());
    let settlers: Vec<Settler> = queues
        .into_iter()
        .zip(&qconfigs)
        .map(|(queue, qc)| Settler {
            queue,
            on_permanent_failure: crate::settle::FailureHook::new(qc.on_permanent_failure.clone()),
            hooks: hooks.clone(),
            dedupe: dedupe.clone(),
        })
        .collect();

    let (batch_tx, batch_rx) = crossbeam_channel::bounded::<Batchlet>(256);
    let shared = consumer::Shared {
        gate: gate.clone(),
        stop: stop.clone(),
        to_master: batch_tx,
        polling_size,
        dedupe: dedupe.clone(),
        retired: Default::default(),
    };
    // One health gate per HTTP target: a queue whose handler is one receives only while
    // the application accepts connections.
    let health: Vec<(Arc<HttpTarget>, Arc<Health>)> = targets
        .iter()
        .map(|t| (t.clone(), Arc::new(Health::new(t))))
        .collect();
    // Without HTTP handlers the loop waits on a channel that never delivers (a
    // disconnected one would wake it at once, for ever).
    let (posts, post_rx) = if targets.is_empty() {
        (Posts::none(), crossbeam_channel::never())
    } else {
        let (post_tx, post_rx) = unbounded();
        let posts = Posts::start(post_tx)
            .map_err(|e| StartError::System(format!("cannot start the HTTP client: {e}")))?;
        (posts, post_rx)
    };
    // Preloaders boot while the consumers wait for them.
    let mut preloaders = Preloaders::new(&qconfigs, &std::env::temp_dir(), config.log_file.clone())
        .map_err(|e| StartError::System(format!("cannot make the preloaders' directory: {e}")))?;
    preloaders.start_all(std::time::Instant::now());
    // Periodic tasks first: if the consumers then fail to start, their stop ends it too.
    let scheduled: Vec<(&QueueConfig, Arc<dyn Queue>)> = qconfigs
        .iter()
        .zip(settlers.iter().map(|s| s.queue.clone()))
        .collect();
    let periodic = crate::periodic::spawn(&config, &scheduled, dedupe.clone(), stop.clone())
        .map_err(StartError::System)?;
    let (mut consumers, retire) = start_consumers(
        &config,
        &qconfigs,
        &settlers,
        &health,
        &preloaders,
        shared.clone(),
    )?;
    // Joined with the consumers at exit.
    consumers.extend(periodic);
    log_start(&config, &qconfigs);

    let (observe_tx, observe_rx) = unbounded();
    let sampled: super::observing::Sampled = Arc::new(std::sync::Mutex::new(
        settlers.iter().map(|s| Some(s.queue.clone())).collect(),
    ));
    let served = config.metrics_listen.is_some();
    super::observing::spawn_sampler(sampled.clone(), served, stop.clone(), observe_tx.clone())
        .map_err(|e| StartError::System(format!("cannot start the depth sampler: {e}")))?;
    let control = match control {
        Some(mut bound) => match bound.serve(observe_tx, super::observing::Observed::Ask) {
            Ok(()) => Some(bound),
            Err(e) => {
                return Err(StartError::System(format!(
                    "cannot serve the control socket: {e}"
                )));
            }
        },
        None => None,
    };

    let (worker_tx, worker_rx) = unbounded();
    let mut master = Master::new(
        config,
        qconfigs,
        settlers,
        gate,
        stop,
        Pool::new(Box::new(Processes::new(worker_tx))),
    );
    master.log = log;
    master.dedupe = dedupe;
    master.posts = posts;
    master.preload_wake = Some(std::time::Instant::now());
    master.preloaders = preloaders;
    master.health = health;
    master.obs.control = control;
    master.obs.sampled = sampled;
    // From here the consumers hold the batch channel's senders, and `Reload` one more
    // until a drain begins: the channel disconnects once both have let go.
    master.reload = super::reload::Reload::new(flags, shared, retire, http_credits);
    master.inputs = super::Inputs {
        batch_rx,
        worker_rx,
        post_rx,
        signal_rx,
        observe_rx,
        consumers,
    };
    Ok(master)
}

/// Bind the control socket `chore status` asks. One that was asked for by name must bind;
/// the default one (its directory created when missing) is skipped with a warning when it
/// cannot be (another master answering on it: masters sharing a queue root).
fn bind_control(config: &Config) -> Result<Option<crate::control::server::Bound>, StartError> {
    let path = config.control_path();
    let explicit = config.control_socket.is_some();
    if !explicit && let Some(dir) = path.parent() {
        // The default's directory is the queue root, which a master of SQS queues alone
        // has no other reason to create: `chore status` must reach it all the same.
        use std::os::unix::fs::DirBuilderExt;
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir);
    }
    match crate::control::server::bind(&path) {
        Ok(Some(b)) => {
            tracing::debug!(path = %path.display(), "control socket bound");
            Ok(Some(b))
        }
        Ok(None) if explicit => Err(StartError::System(format!(
            "control-socket {}: another master answers on it (or another user's socket is there)",
            path.display()
        ))),
        Ok(None) => {
            tracing::warn!(path = %path.display(), "another master answers on the control socket (or another user's socket is there); `chore status` will not reach this one (set control-socket)");
            Ok(None)
        }
        Err(e) if explicit => Err(StartError::System(format!(
            "control-socket {}: {e}",
            path.display()
        ))),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot make the control socket; `chore status` will not reach this master (set control-socket)");
            Ok(None)
        }
    }
}

/// Every HTTP handler of the consumed queues, once each.
/// Large message bodies (up to 64 MiB each) are allocated in memory of their own and given
/// back to the system when freed.
///
/// glibc's default raises its threshold for that to the size of the largest block freed so
/// far (up to 32 MiB), after which such bodies come from the heap, which is not given back:
/// after a burst of forty 20 MB messages the idle master kept about 400 MB here, and 9 MB
/// with a fixed 1 MiB threshold. A body of 1 MiB or more costs one `mmap` and `munmap`.
fn give_large_buffers_back() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes glibc's allocation policy; no thread has started yet.
    unsafe {
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

fn serve_metrics(addr: std::net::SocketAddr) -> Result<(), StartError> {
    let handle = crate::observe::metrics::install().map_err(StartError::System)?;
    crate::observe::exporter::serve(addr, handle)
        .map_err(|e| StartError::System(format!("metrics-listen: cannot listen on {addr}: {e}")))?;
    tracing::info!(address = %addr, "metrics served at http://{addr}/metrics");
    Ok(())
}

/// How many messages the master may hold, and how many a consumer asks for at once.
#[derive(Debug, PartialEq)]
pub(super) struct Credits {
    /// The gate's credits in all.
    pub capacity: usize,
    /// The part of them HTTP handlers hold.
    pub http: usize,
    /// The most one receive asks for.
    pub polling_size: usize,
}

/// Pure: the running batches plus one batch ahead, so a worker that finishes finds its
/// next batch ready and nothing waits long in the buffer; for HTTP handlers, their
/// connections plus a receive ahead, so no message waits long for its post.
///
/// Each consumer thread waits for a whole receive's worth of credits; that stays within
/// its share (counting one share for what is running), so an idle thread can never sit on
/// credits another queue needs, and a small pool still receives a batch ahead.
pub(super) fn credits(
    config: &Config,
    qconfigs: &[QueueConfig],
    targets: &[Arc<HttpTarget>],
) -> Credits {
    let runs_commands = qconfigs
        .iter()
        .any(|q| q.handler.is_some() || !q.classes.is_empty());
    let http = targets
        .iter()
        .map(|t| t.connections + t.connections.min(10))
        .sum::<usize>();
    let batches = if runs_commands {
        (config.concurrency + 1) * config.batch_size
    } else {
        0
    };
    let capacity = batches + http;
    let consumer_threads = qconfigs.len() * config.threads_per_queue;
    let polling_size = config
        .queue_polling_size
        .min((capacity / (consumer_threads + 1)).max(1));
    Credits {
        capacity,
        http,
        polling_size,
    }
}

fn http_targets(qconfigs: &[QueueConfig]) -> Vec<Arc<HttpTarget>> {
    let mut targets: Vec<Arc<HttpTarget>> = Vec::new();
    let all = qconfigs
        .iter()
        .flat_map(|q| q.http.iter().chain(q.http_classes.values()));
    for t in all {
        if !targets.iter().any(|k| Arc::ptr_eq(k, t)) {
            targets.push(t.clone());
        }
    }
    targets
}

/// Open every consumed queue, sharing one SQS client.
fn open_queues(
    config: &Config,
    qconfigs: &[QueueConfig],
) -> Result<Vec<Arc<dyn Queue>>, StartError> {
    let mut sqs = None;
    qconfigs
        .iter()
        .map(|qc| {
            queue::open(config, qc, &mut sqs).map_err(|e| match e {
                OpenFailure::Config(e) => StartError::Config(format!("queue `{}`: {e}", qc.name)),
                OpenFailure::Client(e) => StartError::System(e),
            })
        })
        .collect()
}

/// The consumer threads, and per queue the flag that retires its threads (a reload).
type Consumers = (Vec<JoinHandle<()>>, Vec<Arc<AtomicBool>>);

/// Start `threads-per-queue` consumer threads per queue; if one cannot start, stop those
/// already running.
fn start_consumers(
    config: &Config,
    qconfigs: &[QueueConfig],
    settlers: &[Settler],
    health: &[(Arc<HttpTarget>, Arc<Health>)],
    preloaders: &Preloaders,
    shared: consumer::Shared,
) -> Result<Consumers, StartError> {
    let mut consumers = Vec::new();
    let mut retire = Vec::new();
    for (i, (settler, qc)) in settlers.iter().zip(qconfigs).enumerate() {
        let waits = readiness(qc, health, preloaders);
        let flag = Arc::new(AtomicBool::new(false));
        let shared = consumer::Shared {
            retired: flag.clone(),
            ..shared.clone()
        };
        match consumer::spawn(i, qc, settler, config.threads_per_queue, waits, &shared) {
            Ok(handles) => {
                consumers.extend(handles);
                retire.push(flag);
            }
            Err(e) => {
                shared.stop.trigger();
                shared.gate.stop();
                return Err(StartError::System(format!(
                    "queue `{}`: cannot start its consumer: {e}",
                    qc.name
                )));
            }
        }
    }
    Ok((consumers, retire))
}

/// What a queue's consumers wait for before receiving: the application its default handler
/// posts to, and the preloaders its handlers fork from.
pub(super) fn readiness(
    qc: &QueueConfig,
    health: &[(Arc<HttpTarget>, Arc<Health>)],
    preloaders: &Preloaders,
) -> Vec<Arc<dyn consumer::Ready>> {
    let mut waits: Vec<Arc<dyn consumer::Ready>> = Vec::new();
    if let Some(t) = &qc.http
        && let Some((_, h)) = health.iter().find(|(k, _)| Arc::ptr_eq(k, t))
    {
        waits.push(h.clone());
    }
    for h in qc.handler.iter().chain(qc.classes.values()) {
        if let Some(flag) = preloaders.ready_flag(h) {
            waits.push(Arc::new(consumer::Flag(flag)));
        }
    }
    waits
}

fn log_start(config: &Config, qconfigs: &[QueueConfig]) {
    for opt in &config.ignored_options {
        tracing::warn!(
            option = opt,
            "Ruby Chore option has no effect in chore; ignored"
        );
    }
    for word in &config.ignored_words {
        tracing::warn!(
            "{word} is not an option of the Chorefile; ignored, as Ruby Chore ignores it"
        );
    }
    tracing::info!(
        version = env!("CHORE_VERSION"),
        pid = std::process::id(),
        queues = %qconfigs.iter().map(|q| q.full_name.as_str()).collect::<Vec<_>>().join(","),
        concurrency = config.concurrency,
        batch_size = config.batch_size,
        "chore master started"
    );
}
