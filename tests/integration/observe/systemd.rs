//! systemd's notification protocol, received on a `NOTIFY_SOCKET` datagram socket the test
//! binds: READY, STATUS, WATCHDOG, then (a queue stuck) the pings stop and STATUS says
//! why, then STOPPING with EXTEND_TIMEOUT_USEC at the drain.

use super::{free_address, scrape, status, value};
use crate::harness::*;
use nix::sys::signal::Signal;
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Every datagram received so far, in order.
fn listen(sock: &UnixDatagram) -> Arc<Mutex<Vec<String>>> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let sock = sock.try_clone().unwrap();
    let into = got.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf) {
            into.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    });
    got
}

fn position(got: &[String], what: &str) -> Option<usize> {
    got.iter()
        .position(|m| m.lines().any(|l| l.starts_with(what)))
}

#[test]
fn ready_status_watchdog_then_the_pings_stop_when_a_queue_is_stuck_then_stopping() {
    let sb = Sandbox::new("systemd-notify");
    let path = sb.file("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let got = listen(&sock);
    // One worker hangs on the first message; the rest of the backlog waits behind it.
    let h = sb.script("hang.sh", "cat > /dev/null\nsleep 600\n");
    let addr = free_address();
    sb.chorefile(&format!(
        "concurrency = 1\nbatch-size = 1\nstall-timeout = 3\nshutdown-timeout = 1\n\
         metrics-listen = {addr:?}\n[queues.jobs]\nhandler = [{h:?}]\n"
    ));
    for i in 0..4 {
        sb.enqueue("jobs", &format!("[{i}]"));
    }
    let env = [
        ("NOTIFY_SOCKET", path.to_str().unwrap()),
        ("WATCHDOG_USEC", "1000000"),
    ];
    let mut master = sb.start_with_env("master", &[], &env);
    master.wait_log("metrics served at");
    let seen = |what: &str| position(&got.lock().unwrap(), what);
    master.wait("READY and a watchdog ping", || {
        seen("READY=1").is_some() && seen("WATCHDOG=1").is_some()
    });
    master.wait("the stall to be noticed", || {
        let g = got.lock().unwrap();
        g.iter()
            .any(|m| m.starts_with("STATUS=") && m.contains("UNHEALTHY"))
    });
    let stalled_at = got
        .lock()
        .unwrap()
        .iter()
        .position(|m| m.contains("UNHEALTHY"))
        .unwrap();
    // No ping while it stays stuck (a ping is due every half second when live).
    std::thread::sleep(Duration::from_secs(3));
    {
        let g = got.lock().unwrap();
        let late: Vec<&String> = g[stalled_at..]
            .iter()
            .filter(|m| m.contains("WATCHDOG=1"))
            .collect();
        assert!(late.is_empty(), "pings after the stall: {late:?} in {g:?}");
    }
    // The stall is in `chore status` (exit 3) and in /metrics too.
    let (code, text) = status(&sb, &[]);
    assert_eq!(code, Some(3), "{text}");
    assert!(
        text.contains("UNHEALTHY: queue jobs has had messages waiting"),
        "{text}"
    );
    assert_eq!(value(&scrape(&addr), "chore_healthy"), Some(0.0));
    assert!(
        master
            .log_text()
            .contains("unhealthy: consumption has stopped")
    );

    master.signal(Signal::SIGTERM);
    master.wait("STOPPING", || seen("STOPPING=1").is_some());
    assert_eq!(master.wait_exit(PATIENCE).code(), Some(0));
    let g = got.lock().unwrap();
    let ready = position(&g, "READY=1").unwrap();
    let status_line = position(&g, "STATUS=").unwrap();
    let ping = position(&g, "WATCHDOG=1").unwrap();
    let stopping = position(&g, "STOPPING=1").unwrap();
    assert!(
        ready <= status_line && status_line < ping && ping < stalled_at && stalled_at < stopping,
        "{g:?}"
    );
    let extend = &g[stopping];
    let usec: u64 = extend
        .lines()
        .find_map(|l| l.strip_prefix("EXTEND_TIMEOUT_USEC="))
        .unwrap_or_else(|| panic!("EXTEND_TIMEOUT_USEC with STOPPING: {extend:?}"))
        .parse()
        .unwrap();
    assert!(usec >= 1_000_000, "covers shutdown-timeout: {usec}");
    assert!(g[0].starts_with("READY=1"), "READY first: {g:?}");
}
