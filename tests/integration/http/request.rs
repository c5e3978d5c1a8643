//! The request chore sends for a message: one HTTP/1.1 POST to the handler's URL with the
//! body byte for byte, the daemon's headers and defaults (or the configured MIME type and
//! User-Agent), from loopback, with nothing a proxy would add.

use super::{assert_daemon_headers, fs_queue, put_raw, target};
use crate::harness::*;
use crate::support::app::App;
use serde_json::json;

#[test]
fn http_each_message_is_one_post_with_the_daemons_request_shape() {
    let sb = Sandbox::new("http-shape");
    let app = App::start(sb.path(), "app", json!({}));
    sb.chorefile(&format!(
        "{}{}",
        fs_queue("shape", &target(&app, "/jobs", ""), ""),
        fs_queue(
            "custom",
            &target(
                &app,
                "/custom",
                ", mime-type = \"text/plain; charset=utf-8\", user-agent = \"aws-sqsd/2.4\""
            ),
            ""
        )
    ));
    let json_body = r#"{"job":"a","n":1}"#;
    let unicode_body = r#"{"text":"héllo wörld ✓ 日本語 😀","quote":"\"x\""}"#;
    let raw_body: &[u8] = b"plain text, not JSON\n\twith a tab, a \\ and trailing spaces  ";
    let json_id = sb.enqueue_id("shape", json_body);
    let unicode_id = sb.enqueue_id("shape", unicode_body);
    let raw_id = put_raw(&sb, "shape", raw_body);
    let custom_id = sb.enqueue_id("custom", r#"{"to":"custom"}"#);
    let mut master = sb.start(&[]);
    master.wait("four requests, and both queues emptied by the 200s", || {
        app.requests().len() >= 4 && sb.queue("shape").is_idle() && sb.queue("custom").is_idle()
    });
    let host = format!("127.0.0.1:{}", app.port);
    for (id, body) in [
        (&json_id, json_body.as_bytes()),
        (&unicode_id, unicode_body.as_bytes()),
        (&raw_id, raw_body),
    ] {
        let rs = app.requests_for(id);
        assert_eq!(rs.len(), 1, "one POST for {id}: {rs:?}");
        let r = &rs[0];
        assert_eq!(r.path, "/jobs");
        assert_eq!(r.body, body, "the body byte for byte: {r:?}");
        assert_daemon_headers(r, id, "shape", 1, "/jobs");
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        assert_eq!(r.header("User-Agent"), Some("aws-sqsd/3.0.4"));
        assert_eq!(r.header("Host"), Some(host.as_str()));
    }
    let rs = app.requests_for(&custom_id);
    assert_eq!(rs.len(), 1, "{rs:?}");
    let r = &rs[0];
    assert_eq!(r.path, "/custom");
    assert_daemon_headers(r, &custom_id, "custom", 1, "/custom");
    assert_eq!(
        r.header("Content-Type"),
        Some("text/plain; charset=utf-8"),
        "the configured mime-type"
    );
    assert_eq!(
        r.header("User-Agent"),
        Some("aws-sqsd/2.4"),
        "the configured user-agent"
    );
    assert_eq!(app.requests().len(), 4, "nothing posted twice");
    assert!(sb.queue("shape").dead().is_empty());
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn http_a_localhost_target_is_reached_and_named_in_host() {
    // The daemon's own target is http://localhost:80/; localhost may resolve to ::1 first,
    // where this app (like many) does not listen.
    let sb = Sandbox::new("http-localhost");
    let app = App::start(sb.path(), "app", json!({}));
    let url = format!("http://localhost:{}", app.port);
    sb.chorefile(&fs_queue("local", &format!("{url:?}"), ""));
    let id = sb.enqueue_id("local", "{}");
    let mut master = sb.start(&[]);
    master.wait("the post, and the message completed", || {
        !app.requests().is_empty() && sb.queue("local").is_idle()
    });
    let r = &app.requests_for(&id)[0];
    assert_eq!(r.path, "/", "a URL without a path posts to /");
    assert_daemon_headers(r, &id, "local", 1, "/");
    let host = r.header("Host").unwrap();
    assert!(
        host == "localhost" || host == format!("localhost:{}", app.port),
        "Host names localhost (and the port): {host:?}"
    );
    assert_eq!(master.stop().code(), Some(0));
}
