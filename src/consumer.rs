//! Consumer threads: `threads-per-queue` threads per queue receive messages and hand them
//! to the master.
//!
//! A thread never receives more than the `Gate` allows: the gate holds one credit per
//! message the master can start soon (the running workers' batches plus one batch ahead),
//! so messages do not wait out their claim or visibility in chore's buffer. The gate is
//! also how the master quiets (TSTP) and stops the consumers.
//!
//! Each body is checked here, off the master's thread: it must be JSON, and it must have a
//! handler. A message that fails either is dead-lettered with its queue and id logged; it
//! never reaches a worker and never stops the master.

use crate::config::QueueConfig;
use crate::dedupe::{Dedupe, Seen};
use crate::queue::{Delivery, Queue, Stop};
use crossbeam_channel::Sender;
use serde::Deserialize;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the consumers send the master.
#[derive(Debug)]
pub struct Batchlet {
    pub queue: usize,
    pub deliveries: Vec<Delivery>,
    pub short: bool,
}

/// Credits for receiving: one per message that may be held at once.
pub struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
    capacity: usize,
}

#[derive(Debug)]
struct GateState {
    free: usize,
    paused: bool,
    stopped: bool,
}

impl Gate {
    pub fn new(capacity: usize) -> Gate {
        Gate {
            state: Mutex::new(GateState {
                free: capacity,
                paused: false,
                stopped: false,
            }),
            changed: Condvar::new(),
            capacity,
        }
    }

    /// Take `want` credits (fewer only if the gate holds fewer in all), waiting while they
    /// are not free or the gate is paused. None once stopped.
    ///
    /// Waiting for a whole receive's worth, rather than taking what trickles back as
    /// messages settle one by one, keeps receives full and cheap.
    pub fn take(&self, want: usize) -> Option<usize> {
        let want = want.min(self.capacity).max(1);
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if s.stopped {
                return None;
            }
            if !s.paused && s.free >= want {
                s.free -= want;
                return Some(want);
            }
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    pub fn give(&self, n: usize) {
        if n == 0 {
            return;
        }
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.free += n;
        self.changed.notify_all();
    }

    pub fn pause(&self, paused: bool) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).paused = paused;
        self.changed.notify_all();
    }

    pub fn stop(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).stopped = true;
        self.changed.notify_all();
    }

    pub fn free(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).free
    }
}

/// What every consumer thread shares with the master.
#[derive(Clone)]
pub struct Shared {
    pub gate: Arc<Gate>,
    pub stop: Arc<Stop>,
    pub to_master: Sender<Batchlet>,
    /// Most messages asked for per receive (`queue-polling-size`).
    pub polling_size: usize,
    /// memcached dedupe, when any consumed queue uses it.
    pub dedupe: Option<Arc<Dedupe>>,
    /// Where an on-permanent-failure command's stderr goes.
    pub log_file: Option<std::path::PathBuf>,
}

/// Start `threads` consumer threads for queue number `index`.
pub fn spawn(
    index: usize,
    config: &QueueConfig,
    queue: Arc<dyn Queue>,
    threads: usize,
    shared: &Shared,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    let mut handles = Vec::new();
    for t in 0..threads {
        let mut consume = queue.consumer()?;
        let queue = queue.clone();
        let Shared {
            gate,
            stop,
            to_master,
            polling_size,
            dedupe,
            log_file,
        } = shared.clone();
        let routes = Routes {
            log_file,
            ..Routes::of(config)
        };
        let handle = std::thread::Builder::new().name(format!("consume-{}-{t}", config.name)).spawn(move || {
            // Errors back off so a broken queue (a directory gone, a disk full) is logged
            // once a second, not spun on.
            let mut error_backoff = Duration::from_millis(100);
            while let Some(credits) = gate.take(polling_size) {
                if stop.fired() {
                    gate.give(credits);
                    break;
                }
                match consume.receive(credits, &stop) {
                    Ok(received) => {
                        error_backoff = Duration::from_millis(100);
                        let mut deliveries = received.deliveries;
                        deliveries.retain_mut(|d| check(queue.as_ref(), &routes, d));
                        if let (Some(dedupe), true) = (&dedupe, routes.dedupe) {
                            let now = Instant::now();
                            deliveries.retain_mut(|d| first_delivery(queue.as_ref(), dedupe, routes.dedupe_key.as_deref(), d, now));
                        }
                        gate.give(credits - deliveries.len());
                        if deliveries.is_empty() && !received.short {
                            continue;
                        }
                        let batchlet = Batchlet { queue: index, deliveries, short: received.short };
                        if let Err(lost) = to_master.send(batchlet) {
                            // The master has gone (it only drops the channel on exit): give
                            // the messages back rather than strand them in-progress.
                            for d in &lost.0.deliveries {
                                let _ = queue.give_back(d);
                            }
                            break;
                        }
                    }
                    Err(e) => {
                        gate.give(credits);
                        tracing::error!(queue = %queue.name(), error = %e, "receive failed; retrying");
                        stop.sleep(error_backoff);
                        error_backoff = (error_backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        })?;
        handles.push(handle);
    }
    Ok(handles)
}

/// Which classes have handlers, so unroutable messages are caught before batching.
struct Routes {
    has_default: bool,
    classes: Vec<String>,
    dedupe: bool,
    dedupe_key: Option<String>,
    on_permanent_failure: Option<crate::config::Handler>,
    log_file: Option<std::path::PathBuf>,
}

impl Routes {
    fn of(q: &QueueConfig) -> Routes {
        Routes {
            has_default: q.handler.is_some(),
            classes: q.classes.keys().cloned().collect(),
            dedupe: q.dedupe,
            dedupe_key: q.dedupe_key.clone(),
            on_permanent_failure: q.on_permanent_failure.clone(),
            log_file: None,
        }
    }
}

/// The dedupe key of a delivery: its id, or the named top-level field of its body (a
/// missing, null or empty field means "no dedupe" for this message).
pub fn dedupe_key(d: &Delivery, field: Option<&str>) -> Option<String> {
    let Some(field) = field else {
        return Some(d.id.clone());
    };
    let body: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&d.body).ok()?;
    match body.get(field)? {
        serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Dedupe one delivery: true to pass it on. A duplicate (or, with dupe-on-cache-failure, a
/// message memcached could not vouch for) is not run: it is left in flight until its key
/// has expired, so the copy already running settles it.
fn first_delivery(
    queue: &dyn Queue,
    dedupe: &Dedupe,
    field: Option<&str>,
    d: &mut Delivery,
    now: Instant,
) -> bool {
    let Some(key) = dedupe_key(d, field) else {
        return true;
    };
    let key = dedupe.key(&key);
    let ttl = crate::dedupe::ttl(queue.timeout(), d.received_at, now);
    let why = match dedupe.check(&key, ttl) {
        Seen::New => {
            d.dedupe_key = Some(key);
            return true;
        }
        Seen::Unknown { duplicate: false } => return true,
        Seen::Duplicate => "duplicate delivery; not run",
        Seen::Unknown { duplicate: true } => {
            "memcached unavailable and dupe-on-cache-failure is set; not run"
        }
    };
    // Left in flight, not deleted, until its key has expired: the copy already running
    // settles it (a redelivery of a running message must not be deleted under it). With a
    // `dedupe-key`, a different job with the same key waits the same way.
    tracing::info!(queue = %queue.name(), id = %d.id, key, attempt = d.attempt, "{why}");
    if let Err(e) = queue.leave_in_flight(d, Duration::from_secs(ttl as u64 + 1)) {
        tracing::warn!(queue = %queue.name(), id = %d.id, error = %e, "could not set the duplicate aside; it returns when its claim lapses");
    }
    false
}

/// The part of a body that routing needs. Deserialising it also checks the whole body is
/// JSON.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    class: Option<serde_json::Value>,
}

/// Check one delivery: true to pass it on; false when it was dead-lettered here.
fn check(queue: &dyn Queue, routes: &Routes, d: &mut Delivery) -> bool {
    let reason = match classify(&d.body) {
        Err(e) => format!("body is not valid JSON: {e}"),
        Ok(class) => {
            let routed = match &class {
                Some(c) => routes.has_default || routes.classes.iter().any(|k| k == c),
                None => routes.has_default,
            };
            if routed {
                d.class = class;
                return true;
            }
            match class {
                Some(c) => format!("no handler for job class `{c}`"),
                None => "no handler: the body has no class and the queue has no default handler"
                    .to_string(),
            }
        }
    };
    tracing::error!(queue = %queue.name(), id = %d.id, attempt = d.attempt, reason = %reason, "message dead-lettered");
    if let Some(hook) = &routes.on_permanent_failure {
        crate::master::pool::run_hook(hook, queue.name(), d, &reason, routes.log_file.as_deref());
    }
    if let Err(e) = queue.dead_letter(d, &reason) {
        tracing::error!(queue = %queue.name(), id = %d.id, error = %e, "could not dead-letter message");
    }
    false
}

/// Ruby Chore's `class`, when the body is an object with a string `class`.
pub fn classify(body: &str) -> Result<Option<String>, serde_json::Error> {
    // Only objects can carry a class; any other JSON passes through untouched.
    if body.trim_start().starts_with('{') {
        let env: Envelope = serde_json::from_str(body)?;
        Ok(env.class.and_then(|c| c.as_str().map(str::to_owned)))
    } else {
        serde_json::from_str::<serde::de::IgnoredAny>(body)?;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_bodies() {
        assert_eq!(
            classify(r#"{"class":"Foo::Bar","args":[1]}"#)
                .unwrap()
                .as_deref(),
            Some("Foo::Bar")
        );
        assert_eq!(classify(r#"{"name":"x"}"#).unwrap(), None);
        assert_eq!(classify(r#"[1,2]"#).unwrap(), None);
        assert_eq!(classify(r#"{"class":5}"#).unwrap(), None);
        assert!(classify("{not json").is_err());
        assert!(classify("hello").is_err());
        assert!(classify(r#"{"class":"A"} trailing"#).is_err());
    }

    #[test]
    fn gate_hands_out_whole_receives() {
        let g = Arc::new(Gate::new(15));
        assert_eq!(g.take(10), Some(10));
        assert_eq!(g.take(5), Some(5));
        // Ten are wanted and only three have come back: the taker waits for the rest.
        g.give(3);
        let taker = {
            let g = g.clone();
            std::thread::spawn(move || g.take(10))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!taker.is_finished());
        g.give(7);
        assert_eq!(taker.join().unwrap(), Some(10));
        // Never more than the whole capacity is waited for.
        g.give(15);
        assert_eq!(g.take(100), Some(15));
        g.stop();
        assert_eq!(g.take(1), None);
    }
}
