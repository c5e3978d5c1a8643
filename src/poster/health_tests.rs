//! Unit tests of the health gate, against listeners on 127.0.0.1.

use super::*;
use crate::poster::fixtures::target;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::sync::mpsc;

const FAST: Duration = Duration::from_millis(20);

fn health(port: u16, check: HttpHealth) -> Health {
    let mut t = target("127.0.0.1", port, "/");
    t.health = check;
    Health::probing_every(&t, FAST)
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Answer each GET with `status`, sending the request line and Host header back.
fn http_server(status: u16) -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let mut conn = conn.unwrap();
            let mut head = String::new();
            let mut r = BufReader::new(conn.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head += &line;
            }
            let _ = tx.send(head);
            let _ = write!(conn, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
        }
    });
    (port, rx)
}

#[test]
fn off_is_always_ready() {
    let h = health(closed_port(), HttpHealth::Off);
    let stop = Stop::new().unwrap();
    assert!(h.wait_ready(&stop));
    h.mark_down();
    assert!(h.is_ready());
}

#[test]
fn a_listening_port_is_ready_after_the_first_probe() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let h = health(listener.local_addr().unwrap().port(), HttpHealth::Tcp);
    assert!(!h.is_ready(), "unknown until probed");
    assert!(h.wait_ready(&Stop::new().unwrap()));
    assert!(h.is_ready());
}

#[test]
fn a_refusing_port_holds_the_consumer_until_it_listens_or_stops() {
    let port = closed_port();
    let h = Arc::new(health(port, HttpHealth::Tcp));
    let stop = Arc::new(Stop::new().unwrap());
    let waiter = {
        let (h, stop) = (h.clone(), stop.clone());
        std::thread::spawn(move || h.wait_ready(&stop))
    };
    std::thread::sleep(Duration::from_millis(150));
    assert!(!waiter.is_finished() && !h.is_ready());
    stop.trigger();
    assert!(!waiter.join().unwrap(), "a stop ends the wait");

    // The application starts: the next probe lets receiving resume.
    let Ok(_listener) = TcpListener::bind(("127.0.0.1", port)) else {
        return; // the port was taken meanwhile; the rest cannot be checked
    };
    let started = Instant::now();
    assert!(h.wait_ready(&Stop::new().unwrap()));
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn mark_down_pauses_until_a_probe_succeeds() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let h = health(port, HttpHealth::Tcp);
    let stop = Stop::new().unwrap();
    assert!(h.wait_ready(&stop));
    // Still listening: the confirming probe finds it up at once.
    h.mark_down();
    assert!(h.wait_ready(&stop));
    drop(listener);
    h.mark_down();
    std::thread::sleep(Duration::from_millis(100));
    assert!(!h.is_ready());
    let Ok(_listener) = TcpListener::bind(("127.0.0.1", port)) else {
        return;
    };
    assert!(h.wait_ready(&stop));
}

#[test]
fn a_health_url_must_answer_2xx_or_3xx() {
    let (port, requests) = http_server(302);
    let h = health(port, HttpHealth::Url(format!("http://127.0.0.1:{port}/up")));
    assert!(h.wait_ready(&Stop::new().unwrap()));
    let head = requests.recv().unwrap();
    assert!(head.starts_with("GET /up HTTP/1.1\r\n"), "{head}");
    assert!(
        head.contains(&format!("Host: 127.0.0.1:{port}\r\n")),
        "{head}"
    );

    let (port, requests) = http_server(503);
    let h = health(port, HttpHealth::Url(format!("http://127.0.0.1:{port}/up")));
    let stop = Stop::new().unwrap();
    h.start_prober();
    // Probed more than once, never ready.
    requests.recv().unwrap();
    requests.recv().unwrap();
    assert!(!h.is_ready());
    stop.trigger();
    assert!(!h.wait_ready(&stop));
}

#[test]
fn urls_split_into_where_to_connect_and_what_to_ask() {
    let s = |u: &str| {
        let (a, h, p) = split_url(u);
        (a, h, p)
    };
    let own = |a: &str, h: &str, p: &str| (a.to_owned(), h.to_owned(), p.to_owned());
    assert_eq!(
        s("http://localhost/up"),
        own("localhost:80", "localhost", "/up")
    );
    assert_eq!(
        s("http://localhost:80/up"),
        own("localhost:80", "localhost", "/up")
    );
    assert_eq!(s("http://app:3000"), own("app:3000", "app:3000", "/"));
    assert_eq!(s("http://[::1]/h?x"), own("[::1]:80", "[::1]", "/h?x"));
    assert_eq!(s("http://[::1]:81/"), own("[::1]:81", "[::1]:81", "/"));
    assert_eq!(status_of(b"HTTP/1.1 204 No Content"), Some(204));
    assert_eq!(status_of(b"HTTP/1.0 301"), Some(301));
    assert_eq!(status_of(b"HTTP/2 200"), None);
    assert_eq!(status_of(b"SSH-2.0-OpenSSH"), None);
}
