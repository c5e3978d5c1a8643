//! The health gate: queues posting to an application receive only while it accepts
//! connections, so an application that is down does not burn receive counts (each failed
//! post would count one, and the queue's redrive policy would dead-letter the message).
//!
//! One `Health` per target. It starts "unknown": the first `wait_ready` has it probed
//! before any consumer receives. A post that found no connection (`mark_down`) pauses
//! receiving until a probe succeeds. Probes run on a thread of their own, once at once and
//! then about every second while the target is down: a TCP connect, or a GET of the
//! health-check URL answering 2xx or 3xx. One log line when a target goes down, one when
//! it is back; none per probe.

use crate::config::{HttpHealth, HttpTarget};
use crate::queue::Stop;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::SeqCst};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
/// A post found no connection; the prober has not confirmed it yet.
const SUSPECT: u8 = 2;
const DOWN: u8 = 3;

/// How often a target that is down is probed.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How often a consumer waiting for a target looks again (it wakes at once on a stop).
const WAIT_POLL: Duration = Duration::from_millis(50);

/// Whether one target is accepting connections.
pub struct Health {
    inner: Arc<Inner>,
}

struct Inner {
    /// The target's URL, for the log.
    url: String,
    probe: Probe,
    every: Duration,
    state: AtomicU8,
    /// A prober thread is running.
    probing: AtomicBool,
}

enum Probe {
    Off,
    Tcp {
        authority: String,
        timeout: Duration,
    },
    Get {
        url: String,
        authority: String,
        request: String,
        timeout: Duration,
    },
}

impl Health {
    pub fn new(target: &HttpTarget) -> Health {
        Health::probing_every(target, PROBE_EVERY)
    }

    fn probing_every(target: &HttpTarget, every: Duration) -> Health {
        let probe = match &target.health {
            HttpHealth::Off => Probe::Off,
            HttpHealth::Tcp => Probe::Tcp {
                authority: target.authority(),
                timeout: target.connect_timeout,
            },
            HttpHealth::Url(url) => {
                let (authority, host, path) = split_url(url);
                Probe::Get {
                    url: url.clone(),
                    authority,
                    request: format!(
                        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {}\r\nConnection: close\r\n\r\n",
                        target.user_agent
                    ),
                    // A health URL may take a moment to answer, even when connecting may not.
                    timeout: target.connect_timeout.max(Duration::from_secs(5)),
                }
            }
        };
        let state = if matches!(probe, Probe::Off) {
            UP
        } else {
            UNKNOWN
        };
        Health {
            inner: Arc::new(Inner {
                url: target.url.clone(),
                probe,
                every,
                state: AtomicU8::new(state),
                probing: AtomicBool::new(false),
            }),
        }
    }

    /// Whether the target is known to accept connections (cheap: the consumers' hot path).
    pub fn is_ready(&self) -> bool {
        self.inner.state.load(SeqCst) == UP
    }

    /// Block until the target accepts connections (true) or `stop` fires (false).
    pub fn wait_ready(&self, stop: &Stop) -> bool {
        while !self.is_ready() {
            self.start_prober();
            if stop.sleep(WAIT_POLL) {
                return false;
            }
        }
        true
    }

    /// A post to the target found no connection: pause receiving until a probe succeeds.
    pub fn mark_down(&self) {
        if matches!(self.inner.probe, Probe::Off) {
            return;
        }
        let up = self
            .inner
            .state
            .compare_exchange(UP, SUSPECT, SeqCst, SeqCst);
        if up.is_ok() {
            self.start_prober();
        }
    }

    fn start_prober(&self) {
        if self.inner.probing.swap(true, SeqCst) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let spawned = std::thread::Builder::new()
            .name("chore-health".into())
            .spawn(move || prober(weak));
        if let Err(e) = spawned {
            // Never leave the consumers waiting on a prober that does not exist.
            tracing::error!(url = %self.inner.url, error = %e, "cannot start the health probe; receiving as if the target were up");
            self.inner.state.store(UP, SeqCst);
            self.inner.probing.store(false, SeqCst);
        }
    }
}

/// Probe until the target answers, then mark it up and end. Ends too when the `Health`
/// is gone.
fn prober(weak: Weak<Inner>) {
    let mut down_since: Option<Instant> = None;
    loop {
        let Some(inner) = weak.upgrade() else {
            return;
        };
        match inner.probe.check() {
            Ok(()) => {
                if let Some(since) = down_since {
                    tracing::info!(url = %inner.url, down_secs = since.elapsed().as_secs(), "accepting connections again; receiving resumed for queues posting to it");
                }
                // In this order: a `mark_down` that lands in between finds the state not
                // yet up and is dropped (the next failed post tells again), never left
                // without a prober.
                inner.probing.store(false, SeqCst);
                inner.state.store(UP, SeqCst);
                return;
            }
            Err(error) => {
                if down_since.is_none() {
                    tracing::warn!(url = %inner.url, %error, "not accepting connections; receiving paused for queues posting to it");
                    down_since = Some(Instant::now());
                    inner.state.store(DOWN, SeqCst);
                }
            }
        }
        let every = inner.every;
        drop(inner);
        std::thread::sleep(every);
    }
}

impl Probe {
    fn check(&self) -> Result<(), String> {
        match self {
            Probe::Off => Ok(()),
            Probe::Tcp { authority, timeout } => connect(authority, *timeout)
                .map(drop)
                .map_err(|e| format!("connecting to {authority}: {e}")),
            Probe::Get {
                url,
                authority,
                request,
                timeout,
            } => {
                let status =
                    get(authority, request, *timeout).map_err(|e| format!("GET {url}: {e}"))?;
                match status {
                    200..=399 => Ok(()),
                    _ => Err(format!("GET {url} answered {status}")),
                }
            }
        }
    }
}

/// A TCP connection to the first address of `authority` (`host:port`) that takes one.
fn connect(authority: &str, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
    for addr in authority.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Send `request` and read the status of the answer.
fn get(authority: &str, request: &str, timeout: Duration) -> io::Result<u16> {
    let mut s = connect(authority, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(request.as_bytes())?;
    let mut head = [0u8; 64];
    let mut len = 0;
    // `HTTP/1.1 200` is 12 bytes.
    while len < 12 {
        match s.read(&mut head[len..])? {
            0 => break,
            n => len += n,
        }
    }
    status_of(&head[..len])
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "the answer is not HTTP"))
}

fn status_of(head: &[u8]) -> Option<u16> {
    let rest = head.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5).filter(|_| rest.get(1) == Some(&b' '))?;
    std::str::from_utf8(code).ok()?.parse().ok()
}

/// `http://host[:port]/path` → (`host:port` to connect to, the Host header, the path).
fn split_url(url: &str) -> (String, String, String) {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (authority, path) = rest.find('/').map_or((rest, "/"), |i| rest.split_at(i));
    let has_port = match authority.strip_prefix('[') {
        Some(v6) => v6.contains("]:"),
        None => authority.contains(':'),
    };
    let connect = match has_port {
        true => authority.to_owned(),
        false => format!("{authority}:80"),
    };
    let host = authority.strip_suffix(":80").unwrap_or(authority);
    (connect, host.to_owned(), path.to_owned())
}

#[cfg(test)]
#[path = "health_tests.rs"]
mod tests;
