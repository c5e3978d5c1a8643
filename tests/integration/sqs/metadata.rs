//! A message's metadata reaches handlers: SQS message attributes, sent time, first receive
//! and sender, in the batch input and in per-message variables.

use super::{sqs_chorefile, start, wait_empty};
use crate::harness::*;
use crate::support::moto::Moto;
use serde_json::{Value, json};

fn send_with_attributes(moto: &Moto, url: &str, body: &str) -> String {
    let attributes = json!({
        "trace-id": {"DataType": "String", "StringValue": "abc-123"},
        "priority": {"DataType": "Number", "StringValue": "7"},
        "blob": {"DataType": "Binary", "BinaryValue": "AAEC"},
    });
    moto.send_with_attributes(url, body, &attributes)
}

#[test]
fn sqs_message_attributes_and_times_reach_both_kinds_of_handler() {
    let moto = Moto::start();
    let single = moto.create("single", json!({}));
    let batched = moto.create("batched", json!({}));
    let sb = Sandbox::new("sqs-metadata");
    let per_message = sb.script(
        "one.sh",
        "cat > /dev/null\nenv | grep '^CHORE_' | sort > env.tmp\nmv env.tmp env.txt",
    );
    let batch = sb.script(
        "batch.sh",
        "while IFS= read -r line; do\n\
           printf '%s\\n' \"$line\" >> lines.txt\n\
           id=${line#*\\\"id\\\":\\\"}; id=${id%%\\\"*}\n\
           printf '{\"id\":\"%s\",\"result\":\"ok\"}\\n' \"$id\"\n\
         done",
    );
    sqs_chorefile(
        &sb,
        &moto,
        &format!(
            "[queues.single]\nbackend = \"sqs\"\nwait-time = 1\nhandler = [{per_message:?}]\n\
             [queues.batched]\nbackend = \"sqs\"\nwait-time = 1\n\
             handler = {{ command = [{batch:?}], mode = \"batch\" }}\n"
        ),
    );
    let before = unix_now();
    send_with_attributes(&moto, &single, "{\"n\":1}");
    let id = send_with_attributes(&moto, &batched, "{\"n\":2}");
    let mut master = start(&sb);
    master.wait("both handlers", || {
        sb.file("env.txt").exists() && !sb.lines("lines.txt").is_empty()
    });
    wait_empty(&master, &moto, &single);
    wait_empty(&master, &moto, &batched);

    let env = sb.read("env.txt");
    let var = |k: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::to_owned)
    };
    assert_eq!(
        var("CHORE_ATTR_TRACE_ID").as_deref(),
        Some("abc-123"),
        "{env}"
    );
    assert_eq!(var("CHORE_ATTR_PRIORITY").as_deref(), Some("7"), "{env}");
    assert_eq!(
        var("CHORE_ATTR_BLOB"),
        None,
        "binary values are not variables"
    );
    let attrs: Value = serde_json::from_str(&var("CHORE_ATTRIBUTES").unwrap()).unwrap();
    assert_eq!(
        attrs["trace-id"],
        json!({"type": "String", "value": "abc-123"})
    );
    assert_eq!(attrs["blob"], json!({"type": "Binary"}));
    let sent: f64 = var("CHORE_SENT_AT").unwrap().parse().unwrap();
    assert!(
        (sent - before).abs() < 120.0,
        "sent at {sent}, test began {before}"
    );
    assert!(var("CHORE_FIRST_RECEIVED_AT").is_some(), "{env}");
    assert!(var("CHORE_SENDER_ID").is_some(), "{env}");

    let line: Value = serde_json::from_str(&sb.lines("lines.txt")[0]).unwrap();
    assert_eq!(line["id"], id.as_str());
    assert_eq!(line["body"], json!({"n": 2}));
    assert_eq!(line["attempt"], 1);
    assert_eq!(
        line["attributes"]["priority"],
        json!({"type": "Number", "value": "7"})
    );
    assert_eq!(line["attributes"]["trace-id"]["value"], "abc-123");
    assert!(
        line["sent_at"]
            .as_f64()
            .is_some_and(|t| (t - before).abs() < 120.0),
        "{line}"
    );
    assert!(line["sender_id"].is_string(), "{line}");
    assert_eq!(master.stop().code(), Some(0));
}
