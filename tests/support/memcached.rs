//! memcached for the dedupe tests: a server of the test's own on a free loopback port
//! (which it can stop and restart on the same port), and a client for memcached's text
//! protocol.
//!
//! The client writes keys the way Ruby Chore does: its Dalli-shaped `add(id, "1", ttl)`
//! is `add KEY 0 TTL 1` / `1` in the text protocol, so a key written here stands for
//! another consumer (Ruby Chore, or a second chore) that has already taken the message.
//! chore itself speaks the binary protocol; both see the same keys.
//!
//! The program is `CHORE_TEST_MEMCACHED` (set by `scripts/test.sh`), else `memcached` on
//! PATH, else `/usr/bin/memcached`.

use super::service::{Service, Spec, program_path};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

/// A memcached of the test's own; killed when dropped.
pub struct Memcached {
    svc: Service,
}

fn spec() -> Spec {
    let mut args = Vec::new();
    let root = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
    };
    if root {
        // memcached refuses to run as root unless told which user to be.
        args.extend(["-u", "root"]);
    }
    // UDP off, 64 MB.
    args.extend(["-l", "127.0.0.1", "-p", "{port}", "-U", "0", "-m", "64"]);
    Spec {
        name: "memcached",
        program: program_path(
            "CHORE_TEST_MEMCACHED",
            Some("memcached"),
            PathBuf::from("/usr/bin/memcached"),
        ),
        args: args.into_iter().map(str::to_owned).collect(),
        env: Vec::new(),
        patience: Duration::from_secs(10),
        install_hint: "install it with `apt-get install -y memcached` or run scripts/test.sh",
    }
}

impl Memcached {
    /// On a free loopback port.
    pub fn start() -> Memcached {
        Memcached {
            svc: Service::start(spec()),
        }
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> String {
        self.svc.addr()
    }

    /// Kill the server (an outage): connections drop, new ones are refused.
    pub fn stop(&mut self) {
        self.svc.stop();
    }

    /// Start it again on the same port, empty.
    pub fn restart(&mut self) {
        self.svc.restart();
    }

    /// Ruby Chore's `add(key, "1", ttl)`: true when stored, false when the key was
    /// already there.
    pub fn ruby_add(&self, key: &str, ttl: u32) -> bool {
        match request(&self.addr(), &format!("add {key} 0 {ttl} 1\r\n1\r\n")).as_str() {
            "STORED\r\n" => true,
            "NOT_STORED\r\n" => false,
            other => panic!("add {key}: memcached said {other:?}"),
        }
    }

    /// The value of `key` (None when it is not there).
    pub fn get(&self, key: &str) -> Option<String> {
        let reply = request(&self.addr(), &format!("get {key}\r\n"));
        if reply == "END\r\n" {
            return None;
        }
        let mut lines = reply.split("\r\n");
        let head = lines.next().unwrap_or_default();
        assert!(
            head.starts_with(&format!("VALUE {key} ")),
            "get {key}: memcached said {reply:?}"
        );
        Some(lines.next().unwrap_or_default().to_string())
    }

    /// Seconds `key` has left to live (meta get with the `t` flag); None when it is not
    /// there.
    pub fn ttl(&self, key: &str) -> Option<i64> {
        let reply = request(&self.addr(), &format!("mg {key} t\r\n"));
        if reply == "EN\r\n" {
            return None;
        }
        let t = reply
            .split_whitespace()
            .find_map(|f| f.strip_prefix('t'))
            .unwrap_or_else(|| panic!("mg {key} t: memcached said {reply:?}"));
        Some(t.parse().unwrap())
    }

    /// Requests of any kind that have touched a key so far: gets, adds/sets, touches,
    /// meta commands, deletes, increments (memcached counts an `add` in `cmd_set`).
    pub fn key_requests(&self) -> u64 {
        let stats = self.stats();
        [
            "cmd_get",
            "cmd_set",
            "cmd_touch",
            "cmd_meta",
            "delete_hits",
            "delete_misses",
            "incr_hits",
            "incr_misses",
            "decr_hits",
            "decr_misses",
            "cas_hits",
            "cas_misses",
            "cas_badval",
        ]
        .iter()
        .map(|k| stats.get(*k).copied().unwrap_or(0))
        .sum()
    }

    /// The server's counters.
    pub fn stats(&self) -> BTreeMap<String, u64> {
        request(&self.addr(), "stats\r\n")
            .lines()
            .filter_map(|l| {
                let mut f = l.strip_prefix("STAT ")?.split_whitespace();
                Some((f.next()?.to_string(), f.next()?.parse().ok()?))
            })
            .collect()
    }
}

/// Is `reply` a whole answer to one text-protocol request?
fn complete(reply: &str) -> bool {
    const ENDINGS: [&str; 5] = [
        "STORED\r\n",
        "END\r\n",
        "DELETED\r\n",
        "NOT_FOUND\r\n",
        "EN\r\n",
    ];
    let line_of = |prefix: &str| reply.starts_with(prefix) && reply.ends_with("\r\n");
    ENDINGS.iter().any(|t| reply.ends_with(t))
        || line_of("HD")
        || line_of("VERSION ")
        || (reply.contains("ERROR") && reply.ends_with("\r\n"))
}

/// Send one text-protocol request on a fresh connection; read until the reply is whole.
pub fn request(addr: &str, text: &str) -> String {
    let mut s = TcpStream::connect(addr)
        .unwrap_or_else(|e| panic!("cannot connect to memcached at {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(text.as_bytes()).unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 16384];
    while !complete(&String::from_utf8_lossy(&reply)) {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "memcached at {addr} did not answer {text:?} ({e}); so far: {:?}",
                String::from_utf8_lossy(&reply)
            ),
        }
    }
    String::from_utf8_lossy(&reply).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_whole_at_its_last_line() {
        assert!(complete("STORED\r\n") && complete("NOT_STORED\r\n"));
        assert!(complete("VALUE k 0 1\r\n1\r\nEND\r\n"));
        assert!(!complete("VALUE k 0 1\r\n1\r\n"));
        assert!(complete("VERSION 1.6.18\r\n") && !complete("VERSION 1.6"));
        assert!(complete("HD t59\r\n") && complete("EN\r\n"));
        assert!(complete("CLIENT_ERROR bad command line format\r\n"));
    }

    #[test]
    fn memcached_starts_and_answers() {
        let mc = Memcached::start();
        let reply = request(&mc.addr(), "version\r\n");
        assert!(reply.starts_with("VERSION "), "memcached said {reply:?}");
        // add: the dedupe primitive (a second add of the same key fails).
        assert!(mc.ruby_add("chore-k", 60));
        assert!(!mc.ruby_add("chore-k", 60));
        assert_eq!(mc.get("chore-k").as_deref(), Some("1"));
    }
}
