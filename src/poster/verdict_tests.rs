//! Unit tests of outcomes → settlements, the log wording and the retention rule.

use super::*;
use crate::poster::fixtures::{at, delivery, target, with_meta};

fn answered(status: u16) -> Outcome {
    Outcome::Answered {
        status,
        retry_after: None,
        excerpt: String::new(),
    }
}

fn refused() -> Outcome {
    Outcome::NoConnection {
        timed_out: false,
        error: "tcp connect error: Connection refused (os error 111)".into(),
    }
}

fn connect_timeout() -> Outcome {
    Outcome::NoConnection {
        timed_out: true,
        error: "tcp connect error: connect timeout".into(),
    }
}

fn too_many(secs: u64) -> Outcome {
    Outcome::Answered {
        status: 429,
        retry_after: Some(Duration::from_secs(secs)),
        excerpt: "slow down".into(),
    }
}

fn retry(secs: u64) -> Settlement {
    Settlement::Retry {
        delay: Duration::from_secs(secs),
    }
}

fn sqsd() -> HttpTarget {
    target("localhost", 80, "/")
}

fn chore() -> HttpTarget {
    HttpTarget {
        retry: HttpRetry::Chore,
        ..sqsd()
    }
}

#[test]
fn only_200_completes() {
    let backoff = Backoff::List(vec![Duration::from_secs(7)]);
    for t in [sqsd(), chore()] {
        assert_eq!(
            verdict(&answered(200), &t, 1, Some(1), &backoff),
            Settlement::Complete
        );
    }
    for status in [
        201, 202, 204, 301, 302, 304, 400, 403, 404, 429, 500, 502, 504,
    ] {
        let s = verdict(&answered(status), &sqsd(), 1, None, &backoff);
        assert_eq!(s, retry(2), "{status}");
        let s = verdict(&answered(status), &chore(), 1, Some(3), &backoff);
        assert_eq!(s, retry(7), "{status}");
    }
}

#[test]
fn the_daemons_rule_retries_every_failure_for_ever_after_the_error_visibility_timeout() {
    let backoff = Backoff::default();
    let t = HttpTarget {
        error_visibility_timeout: Duration::from_secs(30),
        ..sqsd()
    };
    for o in [
        answered(500),
        refused(),
        connect_timeout(),
        Outcome::Inactive,
        Outcome::Failed("connection reset".into()),
        Outcome::Aborted,
    ] {
        // Even far past max-attempts: SQS's redrive policy ends it, not chore.
        assert_eq!(verdict(&o, &t, 500, Some(3), &backoff), retry(30), "{o:?}");
    }
}

#[test]
fn chores_rule_backs_off_then_dead_letters() {
    let backoff = Backoff::List(vec![Duration::from_secs(5), Duration::from_secs(60)]);
    for o in [
        answered(503),
        refused(),
        connect_timeout(),
        Outcome::Inactive,
    ] {
        assert_eq!(verdict(&o, &chore(), 1, Some(3), &backoff), retry(5));
        assert_eq!(verdict(&o, &chore(), 2, Some(3), &backoff), retry(60));
        match verdict(&o, &chore(), 3, Some(3), &backoff) {
            Settlement::DeadLetter { reason } => {
                assert!(reason.contains("failed 3 of 3 attempts"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(verdict(&o, &chore(), 99, None, &backoff), retry(60));
    }
    match verdict(&answered(500), &chore(), 1, Some(1), &backoff) {
        Settlement::DeadLetter { reason } => {
            assert!(reason.contains("answered 500"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_429_with_retry_after_waits_what_it_asks() {
    let backoff = Backoff::List(vec![Duration::from_secs(5)]);
    assert_eq!(
        verdict(&too_many(45), &sqsd(), 1, None, &backoff),
        retry(45)
    );
    assert_eq!(
        verdict(&too_many(45), &chore(), 1, Some(3), &backoff),
        retry(45)
    );
    assert_eq!(verdict(&too_many(0), &sqsd(), 1, None, &backoff), retry(0));
    // Capped at what SQS can do.
    assert_eq!(
        verdict(&too_many(10_000_000), &sqsd(), 1, None, &backoff),
        Settlement::Retry { delay: MAX_DELAY }
    );
    // Chore's max-attempts still ends it.
    assert!(matches!(
        verdict(&too_many(45), &chore(), 3, Some(3), &backoff),
        Settlement::DeadLetter { .. }
    ));
    // A Retry-After on another status is not a request to wait.
    let o = Outcome::Answered {
        status: 503,
        retry_after: Some(Duration::from_secs(45)),
        excerpt: String::new(),
    };
    assert_eq!(verdict(&o, &sqsd(), 1, None, &backoff), retry(2));
}

#[test]
fn describe_names_the_status_or_the_timeout_and_the_time() {
    let ms = Duration::from_millis(12);
    let o = Outcome::Answered {
        status: 500,
        retry_after: None,
        excerpt: "<h1>Internal\n  Server Error</h1>\r\n".into(),
    };
    assert_eq!(
        describe(&o, ms),
        "answered 500: <h1>Internal Server Error</h1> (after 0.012 s)"
    );
    assert_eq!(
        describe(&answered(204), ms),
        "answered 204 with an empty body (after 0.012 s)"
    );
    assert_eq!(
        describe(&too_many(30), ms),
        "answered 429 (Retry-After: 30 s): slow down (after 0.012 s)"
    );
    assert_eq!(
        describe(&refused(), ms),
        "could not connect: tcp connect error: Connection refused (os error 111) (after 0.012 s)"
    );
    assert!(
        describe(&connect_timeout(), Duration::from_secs(5))
            .starts_with("no connection within connect-timeout")
    );
    assert_eq!(
        describe(&Outcome::Inactive, Duration::from_millis(299_001)),
        "no response bytes for inactivity-timeout: the request was aborted (after 299.001 s)"
    );
    assert!(describe(&Outcome::Aborted, ms).starts_with("aborted"));
    assert!(describe(&Outcome::Failed("boom".into()), ms).contains("failed: boom"));
    let long = Outcome::Answered {
        status: 502,
        retry_after: None,
        excerpt: "x".repeat(4096),
    };
    assert!(describe(&long, ms).chars().count() < 260);
}

#[test]
fn sqsd_lines_have_the_daemons_form() {
    let secs = Duration::from_millis(1_798_986);
    assert_eq!(
        sqsd_line("4c3f", 16, &answered(403), Duration::from_millis(25)),
        "http-err: 4c3f (16) 403 - 0.025"
    );
    assert_eq!(
        sqsd_line("4c3f", 2, &Outcome::Inactive, secs),
        "socket-err: 4c3f (2) Errno::ETIMEDOUT - 1798.986"
    );
    assert_eq!(
        sqsd_line("m", 1, &refused(), Duration::ZERO),
        "socket-err: m (1) Errno::ECONNREFUSED - 0.000"
    );
    assert_eq!(
        sqsd_line("m", 1, &connect_timeout(), Duration::ZERO),
        "socket-err: m (1) Errno::ETIMEDOUT - 0.000"
    );
    assert_eq!(
        sqsd_line(
            "m",
            1,
            &Outcome::Failed("read: Connection reset by peer (os error 104)".into()),
            Duration::ZERO
        ),
        "socket-err: m (1) Errno::ECONNRESET - 0.000"
    );
    assert_eq!(
        sqsd_line(
            "m",
            1,
            &Outcome::Failed("connection closed\nearly".into()),
            Duration::ZERO
        ),
        "socket-err: m (1) connection closed early - 0.000"
    );
    assert_eq!(
        sqsd_line("m", 1, &Outcome::Aborted, Duration::ZERO),
        "socket-err: m (1) aborted - 0.000"
    );
}

#[test]
fn a_message_older_than_the_retention_period_expires() {
    let t = sqsd(); // 345600 s
    let d = with_meta(delivery("m", "{}"), vec![]); // first received at 1_692_107_874
    let first = 1_692_107_874;
    assert!(!expired(&t, &d, at(first)));
    assert!(!expired(&t, &d, at(first + 345_600)));
    assert!(expired(&t, &d, at(first + 345_601)));
    // A clock behind the first receive, or no first receive known: never expired.
    assert!(!expired(&t, &d, at(first - 10)));
    assert!(!expired(&t, &delivery("m", "{}"), at(u32::MAX as u64)));
    let mut d = d;
    d.meta.as_mut().unwrap().first_received_at = None;
    assert!(!expired(&t, &d, at(u32::MAX as u64)));
}
