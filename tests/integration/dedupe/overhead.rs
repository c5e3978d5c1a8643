//! What dedupe costs: at most one memcached request per message, counted on the wire.

use crate::harness::*;
use crate::support::memcached::Memcached;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Overhead.

/// A TCP proxy in front of memcached that counts the binary-protocol requests passing
/// through it, by opcode (chore speaks the binary protocol: every request is a 24-byte
/// header, magic 0x80, then `total body length` bytes).
struct CountingProxy {
    addr: String,
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
    stop: Arc<AtomicBool>,
}

impl CountingProxy {
    fn start(upstream: String) -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let counts = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, st) = (counts.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        if let Ok(server) = TcpStream::connect(&upstream) {
                            Self::relay(client, server, c.clone());
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => break,
                }
            }
        });
        CountingProxy { addr, counts, stop }
    }

    fn relay(client: TcpStream, server: TcpStream, counts: Arc<Mutex<BTreeMap<String, u64>>>) {
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (mut from_server, mut to_client) =
            (server.try_clone().unwrap(), client.try_clone().unwrap());
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from_server, &mut to_client);
            let _ = to_client.shutdown(std::net::Shutdown::Both);
        });
        let (mut from_client, mut to_server) = (client, server);
        std::thread::spawn(move || {
            let mut pending: Vec<u8> = Vec::new();
            let mut buf = [0u8; 16384];
            loop {
                let n = match from_client.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                pending.extend_from_slice(&buf[..n]);
                loop {
                    if pending.first().is_some_and(|&m| m != 0x80) {
                        // Not the binary protocol: count the bytes as one text request.
                        *counts.lock().unwrap().entry("text".into()).or_default() += 1;
                        pending.clear();
                        break;
                    }
                    if pending.len() < 24 {
                        break;
                    }
                    let body = u32::from_be_bytes(pending[8..12].try_into().unwrap()) as usize;
                    if pending.len() < 24 + body {
                        break;
                    }
                    let op = match pending[1] {
                        0x00 => "get".to_string(),
                        0x01 => "set".to_string(),
                        0x02 => "add".to_string(),
                        0x04 => "delete".to_string(),
                        0x0a => "noop".to_string(),
                        0x0b => "version".to_string(),
                        0x1c => "touch".to_string(),
                        other => format!("opcode-{other:#04x}"),
                    };
                    *counts.lock().unwrap().entry(op).or_default() += 1;
                    pending.drain(..24 + body);
                }
                if to_server.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to_server.shutdown(std::net::Shutdown::Both);
        });
    }

    fn counts(&self) -> BTreeMap<String, u64> {
        self.counts.lock().unwrap().clone()
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[test]
fn dedupe_overhead_is_at_most_one_memcached_request_per_message() {
    // 200 messages through a fast batch handler, on a queue without dedupe and on one that
    // dedupes on a body field; each run twice, alternately, keeping the faster (figures
    // printed, not asserted). Then one more run through a proxy that counts chore's
    // requests to memcached: at most one per message (an `add`; nothing to delete here,
    // since nothing is retried).
    const JOBS: usize = 200;
    let mc = Memcached::start();
    let sb = Sandbox::new("dedupe-overhead");
    sb.ok_batch_handler(
        "batch.sh",
        "echo \"$CHORE_BATCH_SIZE\" >> \"batches-$CHORE_QUEUE.txt\"",
        "echo \"$id\" >> \"done-$CHORE_QUEUE.txt\"",
    );
    let handler = "handler = { command = [\"./batch.sh\"], mode = \"batch\" }";
    sb.chorefile(&format!(
        "dedupe-servers = {:?}\n\
         [queues.plain]\n{handler}\ndedupe = false\n\
         [queues.keyed]\n{handler}\ndedupe-key = \"k\"\n",
        mc.addr()
    ));
    let mut round = 0;
    // One run: JOBS fresh messages, then the master on that queue alone (with `extra`
    // flags); the seconds from its start to the last job done, the batches, and the
    // requests memcached counted.
    let mut run = |queue: &str, extra: &[&str]| -> (f64, usize, u64) {
        round += 1;
        let lines: String = (0..JOBS)
            .map(|n| format!("{{\"k\":\"r{round}-{n}\",\"n\":{n}}}\n"))
            .collect();
        sb.enqueue_lines(&[queue, "-"], Some(&lines), &[]);
        let _ = std::fs::remove_file(sb.file(&format!("done-{queue}.txt")));
        let _ = std::fs::remove_file(sb.file(&format!("batches-{queue}.txt")));
        let before = mc.key_requests();
        let t0 = Instant::now();
        let mut flags = vec!["-q", queue];
        flags.extend_from_slice(extra);
        let mut master = sb.start_as(&format!("master-{round}"), &flags);
        master.wait("every job", || {
            sb.lines(&format!("done-{queue}.txt")).len() >= JOBS
        });
        let secs = t0.elapsed().as_secs_f64();
        assert_eq!(master.stop().code(), Some(0));
        let requests = mc.key_requests() - before;
        assert_eq!(sb.lines(&format!("done-{queue}.txt")).len(), JOBS);
        (
            secs,
            sb.lines(&format!("batches-{queue}.txt")).len(),
            requests,
        )
    };
    let mut plain = Vec::new();
    let mut keyed = Vec::new();
    for _ in 0..2 {
        plain.push(run("plain", &[]));
        keyed.push(run("keyed", &[]));
    }
    let proxy = CountingProxy::start(mc.addr());
    let counted = run("keyed", &["--dedupe-servers", &proxy.addr]);
    let wire = proxy.counts();
    let best = |v: &[(f64, usize, u64)]| v.iter().map(|r| r.0).fold(f64::MAX, f64::min);
    let (p, k) = (best(&plain), best(&keyed));
    // memcached's own round trip from here, for scale.
    let t0 = Instant::now();
    for i in 0..JOBS {
        mc.ruby_add(&format!("scale-{i}"), 60);
    }
    let rtt_us = t0.elapsed().as_secs_f64() * 1e6 / JOBS as f64;
    let on_wire: u64 = wire.values().sum();
    eprintln!(
        "dedupe overhead: {JOBS} jobs without dedupe {p:.3}s, with dedupe-key {k:.3}s (best of \
         2; runs as (secs, batches, memcached key commands): {plain:?} / {keyed:?}); added \
         latency {:+.3} ms per message; key commands per message {:.2}; requests on the wire \
         (counting proxy, {} batches): {wire:?} = {:.2} per message, {:.1} per batch; a \
         text-protocol add from the test on a fresh connection takes {rtt_us:.0} µs",
        (k - p) * 1000.0 / JOBS as f64,
        keyed[0].2 as f64 / JOBS as f64,
        counted.1,
        on_wire as f64 / JOBS as f64,
        on_wire as f64 / counted.1.max(1) as f64,
    );
    for (secs, batches, requests) in &plain {
        assert_eq!(
            *requests, 0,
            "a queue without dedupe asked memcached ({secs:.3}s, {batches} batches)"
        );
    }
    for (secs, batches, requests) in keyed.iter().chain([&counted]) {
        assert!(
            *requests <= JOBS as u64,
            "{requests} memcached key commands for {JOBS} messages ({secs:.3}s, {batches} batches)"
        );
    }
    assert_eq!(wire.get("add").copied(), Some(JOBS as u64), "{wire:?}");
    assert!(
        on_wire <= JOBS as u64,
        "at most one memcached request per message: {on_wire} requests for {JOBS} messages \
         ({wire:?})"
    );
}
