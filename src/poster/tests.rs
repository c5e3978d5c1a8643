//! End-to-end tests of `Poster`: real posts to a small scripted HTTP server on 127.0.0.1,
//! checking the bytes it receives and the outcomes the master would get.

use super::fixtures::{attr, delivery, target, with_meta};
use super::*;
use crossbeam_channel::Receiver;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;

/// What the scripted server does with one request.
enum Reply {
    /// Write these bytes (a whole response) and keep the connection.
    Send(Vec<u8>),
    /// Write each piece after a pause.
    Trickle(Duration, &'static [&'static [u8]]),
    /// Say nothing for this long, then close.
    Stall(Duration),
    /// Close the connection without a word.
    Close,
}

/// One request as the server read it: on which connection (numbered from 0 in accept
/// order) and its raw bytes.
struct Seen {
    conn: usize,
    raw: Vec<u8>,
}

impl Seen {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }
}

/// Serve on 127.0.0.1; `script(n)` says what to do with the n-th request (from 0).
fn serve(script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> (u16, mpsc::Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    let script = Arc::new(script);
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    thread::spawn(move || {
        for (conn, stream) in listener.incoming().enumerate() {
            let (tx, script, count) = (tx.clone(), script.clone(), count.clone());
            let mut stream = stream.unwrap();
            thread::spawn(move || {
                while let Some(raw) = read_request(&mut stream) {
                    let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let _ = tx.send(Seen { conn, raw });
                    match script(n) {
                        Reply::Send(bytes) => stream.write_all(&bytes).unwrap(),
                        Reply::Trickle(pause, pieces) => {
                            for p in pieces {
                                thread::sleep(pause);
                                stream.write_all(p).unwrap();
                            }
                        }
                        Reply::Stall(d) => return thread::sleep(d),
                        Reply::Close => return,
                    }
                }
            });
        }
    });
    (port, rx)
}

/// A whole request: the head, then `Content-Length` bytes of body.
fn read_request(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => raw.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).ok()?;
    raw.extend(body);
    Some(raw)
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK";

fn poster() -> (Poster, Receiver<Posted>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    (Poster::start(tx).unwrap(), rx)
}

fn to(port: u16, tweak: impl FnOnce(&mut HttpTarget)) -> Arc<HttpTarget> {
    let mut t = target("127.0.0.1", port, "/jobs");
    tweak(&mut t);
    Arc::new(t)
}

fn outcome(events: &Receiver<Posted>, id: PostId) -> Posted {
    let p = events.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(p.id, id);
    p
}

fn answered(status: u16, excerpt: &str) -> Outcome {
    Outcome::Answered {
        status,
        retry_after: None,
        excerpt: excerpt.into(),
    }
}

#[test]
fn a_post_sends_the_daemons_request_byte_for_byte() {
    let (port, seen) = serve(|_| Reply::Send(OK.to_vec()));
    let (poster, events) = poster();
    let body = "{\"job_class\":\"TestJob\",\"arguments\":[\"test\"]}";
    let d = with_meta(
        delivery("msg-1", body),
        vec![attr("message-digest", "String", Some("025eec28"))],
    );
    poster.post(1, &to(port, |_| {}), "work", &d);
    assert_eq!(outcome(&events, 1).outcome, answered(200, ""));
    let raw = seen.recv().unwrap().text();
    let expected_head = format!(
        "POST /jobs HTTP/1.1\r\n\
         Host: 127.0.0.1:{port}\r\n\
         User-Agent: aws-sqsd/3.0.4\r\n\
         Content-Type: application/json\r\n\
         Content-Length: {}\r\n\
         X-Aws-Sqsd-Msgid: msg-1\r\n\
         X-Aws-Sqsd-Receive-Count: 1\r\n\
         X-Aws-Sqsd-First-Received-At: 2023-08-15T13:57:54Z\r\n\
         X-Aws-Sqsd-Sent-At: 2023-08-15T13:57:53Z\r\n\
         X-Aws-Sqsd-Queue: work\r\n\
         X-Aws-Sqsd-Path: /jobs\r\n\
         X-Aws-Sqsd-Sender-Id: AROA4IQUC33B3Q35DSTBL:i-0879d7966a857453a\r\n\
         X-Aws-Sqsd-Attr-Message-Digest: 025eec28\r\n\r\n",
        body.len()
    );
    assert_eq!(raw, format!("{expected_head}{body}"));

    // A periodic task's message: its own path, an empty body that still says so.
    let d = delivery(
        "msg-2",
        r#"{"beanstalk.sqsd.path":"/tick","beanstalk.sqsd.task_name":"n","beanstalk.sqsd.scheduled_time":"2026-11-29 17:00:00 UTC"}"#,
    );
    poster.post(2, &to(port, |_| {}), "work", &d);
    assert_eq!(outcome(&events, 2).outcome, answered(200, ""));
    let raw = seen.recv().unwrap().text();
    assert!(raw.starts_with("POST /tick HTTP/1.1\r\n"), "{raw}");
    assert!(raw.contains("\r\nContent-Length: 0\r\n"), "{raw}");
    assert!(
        raw.contains("\r\nContent-Type: application/json\r\n"),
        "{raw}"
    );
    assert!(raw.contains("\r\nX-Aws-Sqsd-Scheduled-At: 2026-11-29T17:00:00Z\r\n"));
    assert!(raw.ends_with("X-Aws-Sqsd-Taskname: n\r\n\r\n"), "{raw}");
}

#[test]
fn sequential_posts_reuse_one_connection() {
    let (port, seen) = serve(|_| Reply::Send(OK.to_vec()));
    let (poster, events) = poster();
    let t = to(port, |_| {});
    for id in 0..3 {
        poster.post(id, &t, "q", &delivery("m", "{}"));
        assert_eq!(outcome(&events, id).outcome, answered(200, ""));
    }
    let conns: Vec<usize> = seen.try_iter().map(|s| s.conn).collect();
    assert_eq!(conns, [0, 0, 0]);
}

#[test]
fn a_failure_keeps_its_status_retry_after_and_the_start_of_its_body() {
    let (port, _seen) = serve(|n| match n {
        0 => Reply::Send(
            b"HTTP/1.1 429 Too Many\r\nRetry-After: 7\r\nContent-Length: 4\r\n\r\nbusy".to_vec(),
        ),
        _ => {
            let mut big = b"HTTP/1.1 500 Oops\r\nContent-Length: 10000\r\n\r\n".to_vec();
            big.resize(big.len() + 10_000, b'x');
            Reply::Send(big)
        }
    });
    let (poster, events) = poster();
    let t = to(port, |_| {});
    poster.post(1, &t, "q", &delivery("m", "{}"));
    let expected = Outcome::Answered {
        status: 429,
        retry_after: Some(Duration::from_secs(7)),
        excerpt: "busy".into(),
    };
    assert_eq!(outcome(&events, 1).outcome, expected);
    poster.post(2, &t, "q", &delivery("m", "{}"));
    match outcome(&events, 2).outcome {
        Outcome::Answered {
            status: 500,
            excerpt,
            ..
        } => assert_eq!(excerpt, "x".repeat(exchange::BODY_READ)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn no_response_bytes_for_the_inactivity_timeout_aborts_the_request() {
    let (port, _seen) = serve(|n| match n {
        0 => Reply::Stall(Duration::from_secs(3)),
        // The head, then half the body, then nothing.
        1 => Reply::Trickle(
            Duration::ZERO,
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf"],
        ),
        // A byte every 100 ms keeps a slow answer alive past the timeout.
        _ => Reply::Trickle(
            Duration::from_millis(100),
            &[
                b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n",
                b"a",
                b"b",
                b"c",
                b"d",
            ],
        ),
    });
    let (poster, events) = poster();
    let t = to(port, |t| t.inactivity_timeout = Duration::from_millis(300));
    poster.post(1, &t, "q", &delivery("m", "{}"));
    let p = outcome(&events, 1);
    assert_eq!(p.outcome, Outcome::Inactive);
    assert!(p.elapsed >= Duration::from_millis(300) && p.elapsed < Duration::from_secs(2));
    poster.post(2, &t, "q", &delivery("m", "{}"));
    assert_eq!(outcome(&events, 2).outcome, Outcome::Inactive);
    poster.post(3, &t, "q", &delivery("m", "{}"));
    let p = outcome(&events, 3);
    assert_eq!(p.outcome, answered(200, ""));
    assert!(p.elapsed > Duration::from_millis(400), "{:?}", p.elapsed);
}

#[test]
fn a_refused_connection_is_no_connection() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (poster, events) = poster();
    poster.post(1, &to(port, |_| {}), "q", &delivery("m", "{}"));
    match outcome(&events, 1).outcome {
        Outcome::NoConnection {
            timed_out: false,
            error,
        } => {
            assert!(error.contains("refused"), "{error}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_aborted_post_reports_aborted_once() {
    let (port, seen) = serve(|_| Reply::Stall(Duration::from_secs(3)));
    let (poster, events) = poster();
    poster.post(7, &to(port, |_| {}), "q", &delivery("m", "{}"));
    seen.recv_timeout(Duration::from_secs(2)).unwrap();
    poster.abort(7);
    poster.abort(7);
    poster.abort(8);
    let p = outcome(&events, 7);
    assert_eq!(p.outcome, Outcome::Aborted);
    assert!(events.recv_timeout(Duration::from_millis(100)).is_err());
    assert!(lock(&poster.live).is_empty());
}

#[test]
fn a_connection_closed_under_a_request_is_retried_once_on_a_fresh_one() {
    // The second request meets the server closing the kept-alive connection.
    let (port, seen) = serve(|n| match n {
        1 => Reply::Close,
        _ => Reply::Send(OK.to_vec()),
    });
    let (poster, events) = poster();
    let t = to(port, |_| {});
    poster.post(1, &t, "q", &delivery("m", "{}"));
    assert_eq!(outcome(&events, 1).outcome, answered(200, ""));
    poster.post(2, &t, "q", &delivery("m", "{}"));
    assert_eq!(outcome(&events, 2).outcome, answered(200, ""));
    let conns: Vec<usize> = seen.try_iter().map(|s| s.conn).collect();
    assert_eq!(conns, [0, 0, 1]);

    // Only once: a server that always hangs up is a failure.
    let (port, seen) = serve(|_| Reply::Close);
    poster.post(3, &to(port, |_| {}), "q", &delivery("m", "{}"));
    match outcome(&events, 3).outcome {
        Outcome::Failed(e) => assert!(e.contains("closed"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(seen.try_iter().count(), 2);
}

#[test]
fn posts_in_flight_when_the_poster_goes_are_reported_aborted() {
    let (port, seen) = serve(|_| Reply::Stall(Duration::from_secs(3)));
    let (poster, events) = poster();
    poster.post(9, &to(port, |_| {}), "q", &delivery("m", "{}"));
    seen.recv_timeout(Duration::from_secs(2)).unwrap();
    drop(poster);
    assert_eq!(outcome(&events, 9).outcome, Outcome::Aborted);
}
