//! Consumer threads: `threads-per-queue` threads per queue receive messages and hand them
//! to the master.
//!
//! A thread never receives more than the `Gate` allows: the gate holds one credit per
//! message the master can start soon (the running workers' batches plus one batch ahead),
//! so messages do not wait out their claim or visibility in chore's buffer. The gate is
//! also how the master quiets (TSTP) and stops the consumers.
//!
//! Each body is checked here, off the master's thread: it must be JSON (on a queue whose
//! default handler is HTTP, any text), and it must have a handler. A message that fails
//! either is dead-lettered with its queue and id logged; it
//! never reaches a worker and never stops the master.

mod gate;
mod supervise;

pub use gate::{Credits, Gate};

use crate::config::{HttpTarget, QueueConfig};
use crate::dedupe::{Dedupe, Seen};
use crate::poster::Health;
use crate::queue::{Delivery, Queue, Stop};
use crate::settle::{Settlement, Settler};
use crossbeam_channel::Sender;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A message on its way to a worker, with the gate credit it holds until it goes away
/// (settled, given back or dropped).
#[derive(Debug)]
pub struct Held {
    pub delivery: Delivery,
    _credit: Credits,
}

impl Held {
    pub fn new(delivery: Delivery, credit: Credits) -> Held {
        Held {
            delivery,
            _credit: credit,
        }
    }
}

impl AsRef<Delivery> for Held {
    fn as_ref(&self) -> &Delivery {
        &self.delivery
    }
}

impl AsMut<Delivery> for Held {
    fn as_mut(&mut self) -> &mut Delivery {
        &mut self.delivery
    }
}

/// What the consumers send the master.
#[derive(Debug)]
pub struct Batchlet {
    pub queue: usize,
    pub messages: Vec<Held>,
    pub short: bool,
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
    /// Raised to end one queue's threads alone (a reload removed the queue or changed its
    /// handlers); each `spawn` should get a fresh one.
    pub retired: Arc<AtomicBool>,
}

/// Start `threads` consumer threads for queue number `index`, whose settlements (a body
/// that can never run) go through `settler`.
pub fn spawn(
    index: usize,
    config: &QueueConfig,
    settler: &Settler,
    threads: usize,
    waits: Vec<Arc<dyn Ready>>,
    shared: &Shared,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    let mut handles = Vec::new();
    for t in 0..threads {
        let consume = settler.queue.consumer()?;
        let thread = Thread {
            index,
            consume,
            settler: settler.clone(),
            routes: Routes::of(config),
            metrics: crate::observe::metrics::QueueMetrics::new(&config.full_name),
            waits: waits.clone(),
            shared: shared.clone(),
        };
        let handle = std::thread::Builder::new()
            .name(format!("consume-{}-{t}", config.name))
            .spawn(move || supervise::supervise(thread))?;
        handles.push(handle);
    }
    Ok(handles)
}

/// One consumer thread's state.
struct Thread {
    index: usize,
    consume: Box<dyn crate::queue::Consume>,
    settler: Settler,
    routes: Routes,
    /// Counts of what was received, dead-lettered here, set aside as a duplicate.
    metrics: crate::observe::metrics::QueueMetrics,
    /// What must be ready before each receive: the application this queue posts to, the
    /// preloader its handler forks from.
    waits: Vec<Arc<dyn Ready>>,
    shared: Shared,
}

impl Thread {
    fn retired(&self) -> bool {
        self.shared.retired.load(Ordering::Acquire)
    }

    fn run(&mut self) {
        let Shared {
            gate,
            stop,
            polling_size,
            ..
        } = self.shared.clone();
        // Errors back off so a broken queue (a directory gone, a disk full) is logged once
        // a second, not spun on.
        let mut error_backoff = Duration::from_millis(100);
        loop {
            // Nothing is received while the application cannot take it, so receive counts
            // are not burned while it boots or restarts.
            for w in &self.waits {
                w.wait_ready(&stop);
            }
            let Some(credits) = gate.take(polling_size) else {
                break;
            };
            if stop.fired() || self.retired() {
                break;
            }
            #[cfg(debug_assertions)]
            supervise::test_panic(self.settler.queue.name());
            match self.consume.receive(credits.len(), &stop) {
                Ok(received) => {
                    error_backoff = Duration::from_millis(100);
                    if !self.pass_on(received, credits) {
                        break;
                    }
                }
                Err(e) => {
                    drop(credits);
                    tracing::error!(queue = %self.settler.queue.name(), error = %e, "receive failed; retrying");
                    stop.sleep(error_backoff);
                    error_backoff = (error_backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Check what one receive brought and send what can run to the master, each message
    /// with one of `credits` (the rest go back to the gate). False once the master is gone.
    fn pass_on(&mut self, received: crate::queue::Received, mut credits: Credits) -> bool {
        let queue = self.settler.queue.clone();
        let m = &self.metrics;
        m.received
            .increment((received.deliveries.len() + received.unreadable.len()) as u64);
        m.dead_lettered.increment(received.unreadable.len() as u64);
        for (d, reason) in received.unreadable {
            self.settler
                .apply(&d, &Settlement::DeadLetter { reason }, None);
        }
        let mut deliveries = received.deliveries;
        let before = deliveries.len();
        deliveries.retain_mut(|d| check(&self.settler, &self.routes, d));
        m.dead_lettered
            .increment((before - deliveries.len()) as u64);
        if let (Some(dedupe), true) = (&self.shared.dedupe, self.routes.dedupe) {
            let now = Instant::now();
            let field = self.routes.dedupe_key.as_deref();
            let before = deliveries.len();
            deliveries.retain_mut(|d| first_delivery(queue.as_ref(), dedupe, field, d, now));
            m.duplicates.increment((before - deliveries.len()) as u64);
        }
        let mut messages = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            match credits.split_one() {
                Some(credit) => messages.push(Held::new(d, credit)),
                // A backend gave more than it was asked for: what has no credit goes back.
                None => self.settler.apply(
                    &d,
                    &Settlement::GiveBack,
                    Some("received beyond the credits asked for"),
                ),
            }
        }
        drop(credits);
        if messages.is_empty() && !received.short {
            return true;
        }
        let batchlet = Batchlet {
            queue: self.index,
            messages,
            short: received.short,
        };
        if let Err(lost) = self.shared.to_master.send(batchlet) {
            // The master has gone (it only drops the channel on exit): give the messages
            // back rather than strand them in progress.
            for h in &lost.0.messages {
                self.settler.apply(
                    &h.delivery,
                    &Settlement::GiveBack,
                    Some("the master has gone"),
                );
            }
            return false;
        }
        true
    }
}

/// Something a queue's consumers wait for before each receive, so that nothing is received
/// that could not run (and no receive count is burned meanwhile).
pub trait Ready: Send + Sync {
    /// Block until ready, or until `stop` fires (false).
    fn wait_ready(&self, stop: &Stop) -> bool;
}

impl Ready for Health {
    fn wait_ready(&self, stop: &Stop) -> bool {
        Health::wait_ready(self, stop)
    }
}

/// A flag someone else raises (a preloader that is ready), looked at every 50 ms.
pub struct Flag(pub Arc<std::sync::atomic::AtomicBool>);

impl Ready for Flag {
    fn wait_ready(&self, stop: &Stop) -> bool {
        while !self.0.load(std::sync::atomic::Ordering::Acquire) {
            if stop.sleep(Duration::from_millis(50)) {
                return false;
            }
        }
        true
    }
}

/// Which classes have handlers, so unroutable messages are caught before batching, and
/// which go to HTTP handlers.
struct Routes {
    has_default: bool,
    classes: Vec<String>,
    /// The default handler, when it is an HTTP one.
    http: Option<Arc<HttpTarget>>,
    http_classes: BTreeMap<String, Arc<HttpTarget>>,
    dedupe: bool,
    dedupe_key: Option<String>,
}

impl Routes {
    fn of(q: &QueueConfig) -> Routes {
        Routes {
            has_default: q.handler.is_some(),
            classes: q.classes.keys().cloned().collect(),
            http: q.http.clone(),
            http_classes: q.http_classes.clone(),
            dedupe: q.dedupe,
            dedupe_key: q.dedupe_key.clone(),
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
/// JSON. A `class` key given twice is not an error: the last one counts, as it does for
/// Ruby's `JSON.parse` (which Ruby Chore's workers use) and for serde_json's own maps.
struct Envelope {
    class: Option<serde_json::Value>,
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Envelope, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = Envelope;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Envelope, A::Error> {
                let mut class = None;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "class" {
                        class = Some(map.next_value::<serde_json::Value>()?);
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(Envelope { class })
            }
        }
        d.deserialize_map(Fields)
    }
}

/// Check one delivery and route it: true to pass it on; false when it was dead-lettered
/// here. A queue whose default handler posts takes any body (the application reads it);
/// otherwise the body must be JSON, and its class picks the handler.
fn check(settler: &Settler, routes: &Routes, d: &mut Delivery) -> bool {
    let only_http = routes.classes.is_empty() && routes.http_classes.is_empty();
    if let Some(target) = &routes.http
        && (only_http || is_periodic(d))
    {
        d.post_to = Some(target.clone());
        return true;
    }
    let reason = match classify(&d.body) {
        Err(_) if routes.http.is_some() => {
            d.post_to = routes.http.clone();
            return true;
        }
        Err(e) => format!("body is not valid JSON: {e}"),
        Ok(class) => {
            let by_class = class.as_deref().and_then(|c| {
                if routes.classes.iter().any(|k| k == c) {
                    Some(None)
                } else {
                    routes.http_classes.get(c).map(|t| Some(t.clone()))
                }
            });
            let route = by_class.or_else(|| {
                if routes.has_default {
                    Some(None)
                } else {
                    routes.http.clone().map(Some)
                }
            });
            if let Some(post_to) = route {
                d.class = class;
                d.post_to = post_to;
                return true;
            }
            match class {
                Some(c) => format!("no handler for job class `{c}`"),
                None => "no handler: the body has no class and the queue has no default handler"
                    .to_string(),
            }
        }
    };
    settler.apply(d, &Settlement::DeadLetter { reason }, None);
    false
}

/// A periodic task's message (Elastic Beanstalk's `beanstalk.sqsd.*` attributes, or their
/// filesystem form): always the default HTTP handler's.
fn is_periodic(d: &Delivery) -> bool {
    const SCHEDULED: &str = "beanstalk.sqsd.scheduled_time";
    let by_attribute = d
        .meta
        .as_ref()
        .is_some_and(|m| m.attributes.iter().any(|a| a.name == SCHEDULED));
    by_attribute || (d.body.starts_with("{\"beanstalk.sqsd.") && d.body.contains(SCHEDULED))
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
    use crate::queue::memory::{MemoryQueue, Op, delivery};

    #[test]
    fn bodies_that_cannot_run_are_dead_lettered_through_the_settler_and_hold_no_credit() {
        let queue = Arc::new(MemoryQueue::new("jobs", Duration::from_secs(60), false));
        let now = Instant::now();
        let mut bad = delivery("bad", 1, None, now);
        bad.body = "{not json".into();
        let mut routed = delivery("routed", 1, None, now);
        routed.body = r#"{"class":"Known","args":[]}"#.into();
        let mut unrouted = delivery("unrouted", 1, None, now);
        unrouted.body = r#"{"class":"Other","args":[]}"#.into();
        for d in [bad, routed, unrouted] {
            queue.push(d);
        }
        let handler: crate::config::Handler =
            serde_json::from_str(r#"{"command":["true"],"mode":"message","dir":null}"#).unwrap();
        let mut qc = crate::queue::memory::queue_config();
        qc.classes.insert("Known".into(), handler);
        let gate = Gate::new(10);
        let (tx, rx) = crossbeam_channel::unbounded();
        let shared = Shared {
            gate: gate.clone(),
            stop: Arc::new(Stop::new().unwrap()),
            to_master: tx,
            polling_size: 5,
            dedupe: None,
            retired: Default::default(),
        };
        let settler = Settler {
            queue: queue.clone(),
            on_permanent_failure: Default::default(),
            hooks: Default::default(),
            dedupe: None,
        };
        let threads = spawn(0, &qc, &settler, 1, Vec::new(), &shared).unwrap();
        let b = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let ids: Vec<&str> = b.messages.iter().map(|h| h.delivery.id.as_str()).collect();
        assert_eq!(ids, ["routed"]);
        assert_eq!(b.messages[0].delivery.class.as_deref(), Some("Known"));
        let ops = queue.ops();
        assert!(
            matches!(&ops[0], Op::DeadLetter(id, why) if id == "bad" && why.contains("not valid JSON"))
        );
        assert!(
            matches!(&ops[1], Op::DeadLetter(id, why) if id == "unrouted" && why.contains("no handler for job class `Other`"))
        );
        gate.stop();
        drop(b);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(gate.free(), 10, "every credit came back");
    }

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
        // A duplicated key: the last one counts, as in Ruby's JSON.parse.
        assert_eq!(
            classify(r#"{"class":"A","args":[],"class":"B"}"#)
                .unwrap()
                .as_deref(),
            Some("B")
        );
        assert_eq!(
            classify(r#"{"cl\u0061ss":"Esc","args":{"class":"inner"}}"#)
                .unwrap()
                .as_deref(),
            Some("Esc")
        );
    }
}
