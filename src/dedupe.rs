//! Duplicate deliveries caught through memcached
//! (docs/decisions/0011-dedupe-through-memcached.md).
//!
//! The only module that talks to memcached. A consumer asks `check` for every message of a
//! queue that dedupes: memcached `add(key, "1", ttl)` succeeds for the first delivery and
//! fails (the key exists) for a duplicate, which is then not run. Keys are Ruby Chore's:
//! the raw SQS MessageId (or a field of the body the queue names), with an optional prefix,
//! value `1`, TTL = visibility timeout − whole seconds since receipt − 10, never below 1
//! (a TTL of 0 would mean "never expires"). With several servers, keys are placed on
//! Dalli's consistent-hash ring (SHA-1 points, CRC32 keys), so Ruby Chore and chore
//! sharing the same memcached servers see each other's keys, and adding a server moves
//! few keys.
//!
//! A cache error never blocks consumption for long and never crashes anything: the server
//! is marked down (logged once per outage), checks fail fast while it is down and follow
//! `dupe-on-cache-failure`, and one probe a second reconnects when it comes back. When an
//! attempt fails and will be retried, the master `forget`s the key (on a background
//! thread) so the retry is not mistaken for a duplicate.

use crate::config::DedupeSettings;
use crossbeam_channel::Sender;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Dalli's points per server on the ring (libmemcached's default).
const POINTS_PER_SERVER: usize = 160;
/// The offset Ruby Chore takes off the TTL (since its 4.4.0).
const TTL_OFFSET: u64 = 10;
/// How long one connection attempt or request may take.
const TIMEOUT: Duration = Duration::from_millis(500);
/// How often a server that is down is probed.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// memcached's longest key.
const MAX_KEY: usize = 250;

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First delivery: the key is now stored; run it.
    New,
    /// The key was already there: a duplicate; do not run it.
    Duplicate,
    /// memcached could not be asked; `dupe-on-cache-failure` decided (true = duplicate).
    Unknown { duplicate: bool },
}

/// The TTL of a key: the visibility timeout, less whole seconds since receipt, less 10,
/// never below 1.
pub fn ttl(visibility: Duration, received_at: Instant, now: Instant) -> u32 {
    let waited = now.saturating_duration_since(received_at).as_secs();
    visibility
        .as_secs()
        .saturating_sub(waited)
        .saturating_sub(TTL_OFFSET)
        .clamp(1, u32::MAX as u64) as u32
}

/// A `host:port` the way Dalli names a server.
fn server_name(s: &str) -> String {
    let s = s.trim();
    let s = s.strip_prefix("memcache://").unwrap_or(s);
    if s.rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        s.to_string()
    } else {
        format!("{s}:11211")
    }
}

/// Dalli's ring: for each server, `POINTS_PER_SERVER` points, each the first four bytes of
/// SHA-1("name:index"); a key (its CRC32) belongs to the greatest point not above it,
/// wrapping to the last point.
#[derive(Debug)]
struct Ring {
    points: Vec<(u32, usize)>,
}

impl Ring {
    fn new(names: &[String]) -> Ring {
        let mut points = Vec::with_capacity(names.len() * POINTS_PER_SERVER);
        if names.len() > 1 {
            for (server, name) in names.iter().enumerate() {
                for idx in 0..POINTS_PER_SERVER {
                    let digest = sha1_smol::Sha1::from(format!("{name}:{idx}"))
                        .digest()
                        .bytes();
                    points.push((
                        u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]),
                        server,
                    ));
                }
            }
            points.sort_by_key(|&(value, _)| value);
        }
        Ring { points }
    }

    fn server_for(&self, key: &str) -> usize {
        if self.points.is_empty() {
            return 0;
        }
        let hash = crc32fast::hash(key.as_bytes());
        let above = self.points.partition_point(|&(value, _)| value <= hash);
        let idx = if above == 0 {
            self.points.len() - 1
        } else {
            above - 1
        };
        self.points[idx].1
    }
}

#[derive(Default)]
struct ServerState {
    client: Option<Arc<memcache::Client>>,
    /// Set while the server is unreachable (so the outage is logged once).
    down_since: Option<Instant>,
    next_probe: Option<Instant>,
}

struct Server {
    name: String,
    state: Mutex<ServerState>,
}

/// Counters for the status dump and the benchmark.
#[derive(Debug, Default)]
pub struct Counters {
    pub checks: AtomicU64,
    pub duplicates: AtomicU64,
    pub failures: AtomicU64,
}

pub struct Dedupe {
    servers: Vec<Server>,
    ring: Ring,
    dupe_on_cache_failure: bool,
    prefix: String,
    forget_tx: Sender<Forget>,
    pub counters: Counters,
}

impl Dedupe {
    /// Set up (connecting lazily: a memcached that is down does not stop chore starting).
    pub fn new(settings: &DedupeSettings) -> Arc<Dedupe> {
        let names: Vec<String> = settings.servers.iter().map(|s| server_name(s)).collect();
        let (forget_tx, forget_rx) = crossbeam_channel::unbounded::<Forget>();
        let dedupe = Arc::new(Dedupe {
            ring: Ring::new(&names),
            servers: names
                .into_iter()
                .map(|name| Server {
                    name,
                    state: Mutex::new(ServerState::default()),
                })
                .collect(),
            dupe_on_cache_failure: settings.dupe_on_cache_failure,
            prefix: settings.prefix.clone(),
            forget_tx,
            counters: Counters::default(),
        });
        let weak = Arc::downgrade(&dedupe);
        let _ = std::thread::Builder::new()
            .name("dedupe-forget".into())
            .spawn(move || {
                for msg in forget_rx {
                    match msg {
                        Forget::Key(key) => {
                            let Some(d) = weak.upgrade() else { break };
                            // A key that cannot be deleted expires on its own; the retry may then
                            // be held back as a duplicate until it does.
                            let _ = d.call(&key, |c, k| c.delete(k).map(|_| ()));
                        }
                        Forget::Flush(ack) => {
                            let _ = ack.send(());
                        }
                    }
                }
            });
        dedupe
    }

    /// The full memcached key for `key`.
    pub fn key(&self, key: &str) -> String {
        let full = format!("{}{key}", self.prefix);
        if full.len() <= MAX_KEY && !full.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return full;
        }
        // Too long, or with bytes memcached keys cannot hold: a digest stands in.
        let digest = sha1_smol::Sha1::from(&full).digest().to_string();
        format!("{}sha1:{digest}", self.prefix)
    }

    /// Record a delivery of `key` (already a full key from `key()`); say whether it is new.
    pub fn check(&self, key: &str, ttl: u32) -> Seen {
        self.counters.checks.fetch_add(1, Ordering::Relaxed);
        let seen = match self.call(key, |c, k| c.add(k, "1", ttl)) {
            Ok(()) => Seen::New,
            Err(Outcome::Exists) => Seen::Duplicate,
            Err(Outcome::Unavailable) => {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                Seen::Unknown {
                    duplicate: self.dupe_on_cache_failure,
                }
            }
        };
        if seen == Seen::Duplicate {
            self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
        }
        seen
    }

    /// Store `key` (a full key from `key()`) for `ttl` seconds unless someone has: Some(true)
    /// when this caller was first, Some(false) when not, None when memcached could not be
    /// asked. For claims that are not deliveries (a periodic task's tick,
    /// docs/decisions/0017-periodic-tasks-without-a-leader.md): the delivery counters and
    /// `dupe-on-cache-failure` stay out of it; the caller decides what an outage means.
    pub fn claim(&self, key: &str, ttl: u32) -> Option<bool> {
        match self.call(key, |c, k| c.add(k, "1", ttl.max(1))) {
            Ok(()) => Some(true),
            Err(Outcome::Exists) => Some(false),
            Err(Outcome::Unavailable) => None,
        }
    }

    /// Remove `key` (a full key) soon, without waiting: a retry must not look like a
    /// duplicate.
    pub fn forget(&self, key: String) {
        let _ = self.forget_tx.send(Forget::Key(key));
    }

    /// Wait (up to `timeout`) until every key given to `forget` is deleted: at exit, so
    /// that messages given back are not taken for duplicates after a restart.
    pub fn flush(&self, timeout: Duration) {
        let (ack, done) = crossbeam_channel::bounded(1);
        if self.forget_tx.send(Forget::Flush(ack)).is_ok() {
            let _ = done.recv_timeout(timeout);
        }
    }

    /// Run one request against the server that owns `key`, managing its outages.
    fn call(
        &self,
        key: &str,
        op: impl Fn(&memcache::Client, &str) -> Result<(), memcache::MemcacheError>,
    ) -> Result<(), Outcome> {
        let server = &self.servers[self.ring.server_for(key)];
        // A pooled connection may have died with a server that has since come back: the
        // first failure on an old connection earns one retry on a new one.
        let mut reused = true;
        loop {
            let client = self.client_for(server, !reused)?;
            match op(&client.0, key) {
                Ok(()) => {
                    let mut s = server.state.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(since) = s.down_since.take() {
                        tracing::info!(server = %server.name, down_secs = since.elapsed().as_secs_f64(), "memcached is back; dedupe resumed");
                    }
                    return Ok(());
                }
                Err(memcache::MemcacheError::CommandError(memcache::CommandError::KeyExists)) => {
                    return Err(Outcome::Exists);
                }
                // A delete of a key that is not there is not an outage.
                Err(memcache::MemcacheError::CommandError(memcache::CommandError::KeyNotFound)) => {
                    return Ok(());
                }
                Err(e) => {
                    let mut s = server.state.lock().unwrap_or_else(|e| e.into_inner());
                    s.client = None;
                    if client.1 && reused {
                        reused = false;
                        continue;
                    }
                    s.next_probe = Some(Instant::now() + PROBE_EVERY);
                    self.went_down(server, &mut s, &e.to_string());
                    return Err(Outcome::Unavailable);
                }
            }
        }
    }

    /// The server's client (and whether it was already connected), connecting when there
    /// is none: at once when `now` is set, else at most once per probe interval.
    fn client_for(
        &self,
        server: &Server,
        now: bool,
    ) -> Result<(Arc<memcache::Client>, bool), Outcome> {
        let mut s = server.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = &s.client {
            return Ok((c.clone(), true));
        }
        let t = Instant::now();
        if !now && s.next_probe.is_some_and(|p| t < p) {
            return Err(Outcome::Unavailable);
        }
        s.next_probe = Some(t + PROBE_EVERY);
        match connect(&server.name) {
            Ok(c) => {
                let c = Arc::new(c);
                s.client = Some(c.clone());
                Ok((c, false))
            }
            Err(e) => {
                self.went_down(server, &mut s, &e);
                Err(Outcome::Unavailable)
            }
        }
    }

    /// Log an outage once, when it starts.
    fn went_down(&self, server: &Server, s: &mut ServerState, error: &str) {
        if s.down_since.is_none() {
            s.down_since = Some(Instant::now());
            tracing::error!(server = %server.name, error, dupe_on_cache_failure = self.dupe_on_cache_failure, "memcached unavailable; dedupe follows dupe-on-cache-failure until it is back");
        }
    }
}

/// Work for the thread that deletes keys.
enum Forget {
    Key(String),
    Flush(Sender<()>),
}

enum Outcome {
    Exists,
    Unavailable,
}

/// A pooled client for one server (binary protocol: its `add` reports an existing key,
/// which the crate's ASCII mode does not), with short timeouts everywhere.
fn connect(name: &str) -> Result<memcache::Client, String> {
    // A quick TCP probe first: the pool would otherwise spend its whole connection
    // timeout retrying a server that refuses at once.
    use std::net::ToSocketAddrs;
    let addr = name
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    std::net::TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| e.to_string())?;
    pool(name).map_err(|e| e.to_string())
}

fn pool(name: &str) -> Result<memcache::Client, memcache::MemcacheError> {
    let url = format!(
        "memcache://{name}?timeout={}&tcp_nodelay=true",
        TIMEOUT.as_secs_f64()
    );
    let url =
        memcache::Url::parse(&url).map_err(|e| memcache::MemcacheError::BadURL(e.to_string()))?;
    let pool = r2d2::Pool::builder()
        .max_size(4)
        .min_idle(Some(1))
        .connection_timeout(TIMEOUT)
        .test_on_check_out(false)
        .error_handler(Box::new(r2d2::NopErrorHandler))
        .build(memcache::ConnectionManager::new(url))
        .map_err(memcache::MemcacheError::PoolError)?;
    let client = memcache::Client::with_pool(pool)?;
    client.set_read_timeout(Some(TIMEOUT))?;
    client.set_write_timeout(Some(TIMEOUT))?;
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_is_ruby_chores_and_never_zero() {
        let t0 = Instant::now();
        assert_eq!(ttl(Duration::from_secs(20), t0, t0), 10);
        assert_eq!(
            ttl(
                Duration::from_secs(30),
                t0,
                t0 + Duration::from_millis(4_900)
            ),
            16
        );
        assert_eq!(ttl(Duration::from_secs(10), t0, t0), 1);
        assert_eq!(
            ttl(Duration::from_secs(5), t0, t0 + Duration::from_secs(60)),
            1
        );
    }

    #[test]
    fn server_names_default_the_port() {
        assert_eq!(server_name("cache1"), "cache1:11211");
        assert_eq!(server_name(" 10.0.0.1:11311 "), "10.0.0.1:11311");
        assert_eq!(server_name("memcache://h:1"), "h:1");
    }

    #[test]
    fn ring_spreads_keys_and_moves_few_when_a_server_joins() {
        let three: Vec<String> = ["a:11211", "b:11211", "c:11211"].map(String::from).to_vec();
        let four: Vec<String> = ["a:11211", "b:11211", "c:11211", "d:11211"]
            .map(String::from)
            .to_vec();
        let (r3, r4) = (Ring::new(&three), Ring::new(&four));
        let keys: Vec<String> = (0..3000).map(|i| format!("msg-{i}")).collect();
        let mut per = [0usize; 3];
        let mut moved = 0;
        for k in &keys {
            let s = r3.server_for(k);
            per[s] += 1;
            let s4 = r4.server_for(k);
            if s4 != s {
                assert_eq!(s4, 3, "a key moves only to the new server");
                moved += 1;
            }
        }
        assert!(per.iter().all(|&n| n > 600), "{per:?}");
        assert!(
            moved < 1200,
            "adding one of four servers moved {moved} of 3000 keys"
        );
        // One server: no ring at all.
        assert_eq!(Ring::new(&three[..1]).server_for("x"), 0);
    }

    #[test]
    fn ring_points_are_dallis() {
        // Dalli: the first eight hex digits of SHA-1("a:11211:0") as a number.
        let ring = Ring::new(&["a:11211".to_string(), "b:11211".to_string()]);
        let hex = sha1_smol::Sha1::from("a:11211:0").digest().to_string();
        let expected = u32::from_str_radix(&hex[..8], 16).unwrap();
        assert!(ring.points.iter().any(|&(v, s)| v == expected && s == 0));
        assert_eq!(ring.points.len(), 2 * POINTS_PER_SERVER);
    }

    #[test]
    fn keys_are_raw_with_the_prefix_and_safe() {
        let d = Dedupe::new(&DedupeSettings {
            servers: vec!["127.0.0.1:1".into()],
            dupe_on_cache_failure: false,
            prefix: "p-".into(),
        });
        assert_eq!(d.key("0e1f-uuid"), "p-0e1f-uuid");
        assert!(d.key("has space").starts_with("p-sha1:"));
        assert!(d.key(&"x".repeat(300)).len() <= MAX_KEY);
    }

    #[test]
    fn a_claim_on_an_unreachable_server_says_it_could_not_ask() {
        let d = Dedupe::new(&DedupeSettings {
            servers: vec!["127.0.0.1:1".into()],
            dupe_on_cache_failure: true,
            prefix: String::new(),
        });
        assert_eq!(d.claim("chore-cron:q:t:1", 3600), None);
        // Claims are not deliveries: the status dump's counters do not move.
        assert_eq!(d.counters.checks.load(Ordering::Relaxed), 0);
        assert_eq!(d.counters.failures.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn an_unreachable_server_fails_fast_and_follows_the_setting() {
        // Port 1 on loopback refuses at once.
        let settings = DedupeSettings {
            servers: vec!["127.0.0.1:1".into()],
            dupe_on_cache_failure: true,
            prefix: String::new(),
        };
        let d = Dedupe::new(&settings);
        let t0 = Instant::now();
        assert_eq!(d.check("k", 10), Seen::Unknown { duplicate: true });
        for _ in 0..100 {
            assert_eq!(d.check("k", 10), Seen::Unknown { duplicate: true });
        }
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "checks while down must not wait"
        );
        assert_eq!(d.counters.failures.load(Ordering::Relaxed), 101);
    }
}
