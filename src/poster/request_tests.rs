//! Unit tests of the request builder: the daemon's headers, attribute filtering, periodic
//! tasks' messages.

use super::*;
use crate::poster::fixtures::{attr, delivery, target, with_meta};

fn built(t: &HttpTarget, d: &Delivery) -> Built {
    build(&Template::new(t).unwrap(), "work-queue", d).unwrap()
}

fn header<'a>(b: &'a Built, name: &str) -> Option<&'a str> {
    b.headers.get(name).map(|v| v.to_str().unwrap())
}

fn names(b: &Built) -> Vec<&str> {
    b.headers.keys().map(|k| k.as_str()).collect()
}

#[test]
fn an_ordinary_message_carries_the_daemons_headers() {
    let d = with_meta(delivery("4c3f0f50-4c28", "{\"job\":1}"), vec![]);
    let d = Delivery { attempt: 16, ..d };
    let b = built(&target("localhost", 80, "/"), &d);
    assert_eq!(b.uri.to_string(), "http://localhost/");
    assert_eq!(&b.body[..], b"{\"job\":1}");
    let expected = [
        ("host", "localhost"),
        ("user-agent", "aws-sqsd/3.0.4"),
        ("content-type", "application/json"),
        ("content-length", "9"),
        ("x-aws-sqsd-msgid", "4c3f0f50-4c28"),
        ("x-aws-sqsd-receive-count", "16"),
        ("x-aws-sqsd-first-received-at", "2023-08-15T13:57:54Z"),
        ("x-aws-sqsd-sent-at", "2023-08-15T13:57:53Z"),
        ("x-aws-sqsd-queue", "work-queue"),
        ("x-aws-sqsd-path", "/"),
        (
            "x-aws-sqsd-sender-id",
            "AROA4IQUC33B3Q35DSTBL:i-0879d7966a857453a",
        ),
    ];
    let got: Vec<(&str, &str)> = b
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn the_host_names_the_port_unless_it_is_80() {
    let t = target("127.0.0.1", 3000, "/jobs?x=1");
    let b = built(&t, &delivery("m", "{}"));
    assert_eq!(header(&b, "host"), Some("127.0.0.1:3000"));
    assert_eq!(b.uri.to_string(), "http://127.0.0.1:3000/jobs?x=1");
    assert_eq!(header(&b, "x-aws-sqsd-path"), Some("/jobs?x=1"));
    let mut t = target("localhost", 80, "/");
    t.url = "http://localhost:80/".into();
    assert_eq!(
        header(&built(&t, &delivery("m", "{}")), "host"),
        Some("localhost")
    );
}

#[test]
fn without_metadata_unknown_headers_are_left_out() {
    let b = built(&target("localhost", 80, "/"), &delivery("m", "body"));
    assert_eq!(
        names(&b),
        [
            "host",
            "user-agent",
            "content-type",
            "content-length",
            "x-aws-sqsd-msgid",
            "x-aws-sqsd-receive-count",
            "x-aws-sqsd-queue",
            "x-aws-sqsd-path",
        ]
    );
}

#[test]
fn the_body_is_sent_byte_for_byte() {
    let body = "not json \u{e9}\t\r\n\u{0} trailing  ";
    let b = built(&target("localhost", 80, "/"), &delivery("m", body));
    assert_eq!(&b.body[..], body.as_bytes());
    assert_eq!(header(&b, "content-length"), Some(&*body.len().to_string()));
}

#[test]
fn string_and_number_attributes_become_headers() {
    let d = with_meta(
        delivery("m", "{}"),
        vec![
            attr("message-digest", "String", Some("025eec28")),
            attr("origin", "String", Some("AEJ")),
            attr("count", "Number", Some("3")),
            attr("ratio", "Number.float", Some("0.5")),
            attr("kind", "String.custom", Some("x")),
            attr("blob", "Binary", None),
            attr("blob2", "Binary.gz", Some("ignored")),
            attr("under_score", "String", Some("kept")),
            attr("caf\u{e9}", "String", Some("bad name")),
            attr("with space", "String", Some("bad name")),
            attr("beanstalk.sqsd.other", "String", Some("never")),
            attr("crlf", "String", Some("a\r\nX-Injected: 1")),
            attr("nul", "String", Some("a\u{0}b")),
            attr("utf8", "String", Some("caf\u{e9}")),
            attr("Origin", "String", Some("second spelling")),
        ],
    );
    let b = built(&target("localhost", 80, "/"), &d);
    let attrs: Vec<(&str, &[u8])> = b
        .headers
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("x-aws-sqsd-attr-"))
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .collect();
    assert_eq!(
        attrs,
        [
            ("x-aws-sqsd-attr-message-digest", &b"025eec28"[..]),
            ("x-aws-sqsd-attr-origin", b"AEJ"),
            ("x-aws-sqsd-attr-count", b"3"),
            ("x-aws-sqsd-attr-ratio", b"0.5"),
            ("x-aws-sqsd-attr-kind", b"x"),
            ("x-aws-sqsd-attr-under_score", b"kept"),
            ("x-aws-sqsd-attr-utf8", "caf\u{e9}".as_bytes()),
        ]
    );
    assert!(b.headers.get("x-injected").is_none());
}

#[test]
fn a_bad_id_or_sender_is_left_out_not_sent() {
    let mut d = with_meta(delivery("bad\nid", "{}"), vec![]);
    d.meta.as_mut().unwrap().sender_id = Some("x\r\ny".into());
    let b = built(&target("localhost", 80, "/"), &d);
    assert_eq!(header(&b, "x-aws-sqsd-msgid"), None);
    assert_eq!(header(&b, "x-aws-sqsd-sender-id"), None);
    assert_eq!(header(&b, "x-aws-sqsd-receive-count"), Some("1"));
}

fn periodic_attrs(path: &str) -> Vec<crate::queue::Attribute> {
    vec![
        attr("beanstalk.sqsd.path", "String", Some(path)),
        attr("beanstalk.sqsd.task_name", "String", Some("testjob")),
        attr(
            "beanstalk.sqsd.scheduled_time",
            "String",
            Some("2019-11-14 00:47:00 UTC"),
        ),
    ]
}

#[test]
fn a_periodic_message_is_posted_empty_to_its_path() {
    let mut attrs = periodic_attrs("/testjob");
    attrs.push(attr("origin", "String", Some("cron")));
    let d = with_meta(delivery("m", "elasticbeanstalk scheduled job"), attrs);
    let b = built(&target("localhost", 80, "/jobs"), &d);
    assert_eq!(b.uri.to_string(), "http://localhost/testjob");
    assert!(b.body.is_empty());
    assert_eq!(header(&b, "host"), Some("localhost"));
    assert_eq!(header(&b, "content-length"), Some("0"));
    assert_eq!(header(&b, "content-type"), Some("application/json"));
    assert_eq!(header(&b, "x-aws-sqsd-path"), Some("/testjob"));
    assert_eq!(header(&b, "x-aws-sqsd-taskname"), Some("testjob"));
    assert_eq!(
        header(&b, "x-aws-sqsd-scheduled-at"),
        Some("2019-11-14T00:47:00Z")
    );
    assert_eq!(header(&b, "x-aws-sqsd-msgid"), Some("m"));
    assert_eq!(header(&b, "x-aws-sqsd-attr-origin"), Some("cron"));
    assert!(!names(&b).iter().any(|n| n.contains("beanstalk")));
}

#[test]
fn a_periodic_path_goes_to_the_targets_host_and_port() {
    let t = target("127.0.0.1", 3000, "/jobs");
    let d = with_meta(delivery("m", ""), periodic_attrs("periodic_tasks?x=1"));
    let b = built(&t, &d);
    assert_eq!(
        b.uri.to_string(),
        "http://127.0.0.1:3000/periodic_tasks?x=1"
    );
    assert_eq!(header(&b, "x-aws-sqsd-path"), Some("/periodic_tasks?x=1"));
    let d = with_meta(delivery("m", ""), periodic_attrs("/has space"));
    assert!(build(&Template::new(&t).unwrap(), "q", &d).is_err());
    // Only the scheduled time makes it periodic; with no path it goes to the target's.
    let d = with_meta(delivery("m", ""), periodic_attrs("/x").split_off(2));
    let b = built(&t, &d);
    assert_eq!(b.uri.to_string(), "http://127.0.0.1:3000/jobs");
    assert_eq!(header(&b, "x-aws-sqsd-taskname"), None);
}

#[test]
fn the_filesystem_form_of_a_periodic_message_is_its_json_body() {
    let body = r#"{"beanstalk.sqsd.path":"/x","beanstalk.sqsd.task_name":"n","beanstalk.sqsd.scheduled_time":"2026-11-29 17:00:00 UTC"}"#;
    let p = periodic(&delivery("m", body)).unwrap();
    assert_eq!(
        p,
        Periodic {
            path: Some("/x".into()),
            task: Some("n".into()),
            scheduled: "2026-11-29 17:00:00 UTC".into()
        }
    );
    let b = built(&target("localhost", 8080, "/"), &delivery("m", body));
    assert_eq!(b.uri.to_string(), "http://localhost:8080/x");
    assert!(b.body.is_empty());
    assert_eq!(
        header(&b, "x-aws-sqsd-scheduled-at"),
        Some("2026-11-29T17:00:00Z")
    );
    for not_periodic in [
        r#"{"beanstalk.sqsd.path":"/x","beanstalk.sqsd.scheduled_time":"2026-11-29 17:00:00 UTC"}"#,
        r#"{"beanstalk.sqsd.path":"/x","beanstalk.sqsd.task_name":"n","beanstalk.sqsd.scheduled_time":"2026-11-29 17:00:00 UTC","class":"Job"}"#,
        r#"{"beanstalk.sqsd.path":"/x","beanstalk.sqsd.task_name":1,"beanstalk.sqsd.scheduled_time":"2026-11-29 17:00:00 UTC"}"#,
        r#"["beanstalk.sqsd.scheduled_time"]"#,
        "elasticbeanstalk scheduled job",
        r#"{"class":"Job","args":["beanstalk.sqsd.scheduled_time"]}"#,
    ] {
        assert_eq!(
            periodic(&delivery("m", not_periodic)),
            None,
            "{not_periodic}"
        );
    }
}

#[test]
fn an_unparsable_scheduled_time_is_passed_on_as_it_is() {
    let mut attrs = periodic_attrs("/t");
    attrs[2].string_value = Some("2019-11-14T00:47:00Z".into());
    let b = built(
        &target("localhost", 80, "/"),
        &with_meta(delivery("m", ""), attrs),
    );
    assert_eq!(
        header(&b, "x-aws-sqsd-scheduled-at"),
        Some("2019-11-14T00:47:00Z")
    );
}

#[test]
fn a_target_that_cannot_be_a_header_is_refused_up_front() {
    let mut t = target("localhost", 80, "/");
    t.user_agent = "bad\nagent".into();
    assert!(Template::new(&t).unwrap_err().contains("user-agent"));
}
