//! Metrics of an SQS queue against moto, with dedupe through a real memcached: SQS calls
//! by action, the depth from `GetQueueAttributes`, dedupe checks.

use super::{free_address, scrape, value};
use crate::harness::*;
use crate::support::memcached::Memcached;
use crate::support::moto::{AWS_ENV, Moto};
use serde_json::json;

#[test]
fn sqs_calls_by_action_the_depth_and_dedupe_checks_are_counted() {
    let moto = Moto::start();
    let memcached = Memcached::start();
    let url = moto.create("metered", json!({}));
    let bodies: Vec<String> = (0..12).map(|i| format!("{{\"n\":{i}}}")).collect();
    moto.send_all(&url, &bodies);
    let sb = Sandbox::new("observe-sqs");
    let h = sb.recorder("job.sh", "runs.txt", "");
    let addr = free_address();
    sb.chorefile(&format!(
        "sqs-endpoint = {:?}\ndedupe-servers = [{:?}]\nmetrics-listen = {addr:?}\n\
         concurrency = 2\nbatch-size = 5\nbatch-timeout = 0.5\n\
         [queues.metered]\nbackend = \"sqs\"\nwait-time = 1\nhandler = [{h:?}]\n",
        moto.endpoint(),
        memcached.addr()
    ));
    let master = sb.start_with_env("master", &[], &AWS_ENV);
    master.wait_log("metrics served at");
    master.wait("12 runs", || sb.runs("runs.txt").len() >= 12);
    master.wait("the queue to be empty", || moto.is_empty(&url));
    let calls = |page: &str, action: &str| {
        value(
            page,
            &format!("chore_sqs_calls_total{{action=\"{action}\"}}"),
        )
        .unwrap_or(0.0)
    };
    master.wait("the settlements to be counted", || {
        calls(&scrape(&addr), "DeleteMessageBatch") >= 1.0
    });
    let page = scrape(&addr);
    assert!(calls(&page, "ReceiveMessage") >= 2.0, "{page}");
    // The queue's look-up at start, and its depth (asked once: at most once a minute).
    assert!(calls(&page, "GetQueueUrl") >= 1.0, "{page}");
    let attrs = calls(&page, "GetQueueAttributes");
    assert!(
        (2.0..=3.0).contains(&attrs),
        "open + one depth look: {attrs}\n{page}"
    );
    assert!(
        value(&page, "chore_queue_depth{queue=\"metered\"}").is_some(),
        "{page}"
    );
    assert_eq!(
        value(&page, "chore_messages_received_total{queue=\"metered\"}"),
        Some(12.0)
    );
    assert_eq!(
        value(&page, "chore_messages_succeeded_total{queue=\"metered\"}"),
        Some(12.0)
    );
    master.wait("the dedupe counts", || {
        value(&scrape(&addr), "chore_dedupe_checks_total") == Some(12.0)
    });
    let page = scrape(&addr);
    assert_eq!(value(&page, "chore_dedupe_hits_total"), Some(0.0));
    assert_eq!(value(&page, "chore_dedupe_errors_total"), Some(0.0));
    assert!(
        !page.contains("chore_sqs_call_failures_total{"),
        "no call failed: {page}"
    );
}
