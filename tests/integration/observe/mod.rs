//! Observing a running master through the real binary: `/metrics` scraped during and after
//! a backlog (`metrics`), `chore status` while a batch hangs and its control socket
//! (`status`), and systemd's notifications with the watchdog stopping when a queue is
//! stuck (`systemd`); an SQS queue's calls, depth and dedupe against moto and memcached
//! (`sqs`).

mod metrics;
mod sqs;
mod status;
mod systemd;

use crate::harness::Sandbox;

/// A loopback address with a port nobody listens on now.
pub fn free_address() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// The page at `http://addr/metrics`.
pub fn scrape(addr: &str) -> String {
    let (status, body) = crate::support::http::exchange(addr, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200, "GET /metrics");
    String::from_utf8(body).unwrap()
}

/// The value of the series written exactly `series` (name and labels) on a page.
pub fn value(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .filter_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
}

/// `chore status -c Chorefile ARGS`: exit status and standard output.
pub fn status(sb: &Sandbox, args: &[&str]) -> (Option<i32>, String) {
    let cf = sb.chorefile_path();
    let mut all = vec!["status", "-c", cf.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = sb.run(&all);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}
