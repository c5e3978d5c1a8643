//! moto, an SQS emulator, on loopback: one server per test (so no test sees another's
//! queues, calls or recordings, and one can stop and restart its own), and a small SQS
//! client for what a test does besides chore: create queues with the attributes it needs,
//! publish as another producer would, look at what is left, count chore's calls.
//!
//! The client speaks SQS's AWS JSON 1.0 protocol over `http::exchange`: a POST with an
//! `X-Amz-Target: AmazonSQS.<Action>` header. moto checks no signature, but routes a
//! request without an `Authorization` header elsewhere, so one is sent.
//!
//! The program is `CHORE_TEST_MOTO_SERVER` (set by `scripts/test.sh`), else
//! `.venv/bin/moto_server`.
//!
//! How moto differs from SQS, so that what the tests assert holds on SQS too:
//! - its receive takes no lock, so concurrent receivers on one queue now and then both get
//!   the same message (SQS is at-least-once anyway): exactly-once delivery is asserted
//!   only where a single receiver (one consumer thread) reads the queue;
//! - a receive returns min(visible, asked for) messages, where SQS may return fewer;
//! - a stale receipt handle still deletes a message, where SQS may refuse it.

use super::http::{base64_decode, exchange};
use super::service::{Service, Spec, program_path};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The environment chore needs to talk to moto: credentials through the standard AWS
/// chain (moto checks no signature), a region, and no instance-metadata lookups.
pub const AWS_ENV: [(&str, &str); 4] = [
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_REGION", "us-east-1"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

const INSTALL_HINT: &str = "install it with `python3 -m venv .venv && .venv/bin/pip install \
     'moto[server]'` or run scripts/test.sh";

/// Stock moto's cost per call grows with the queue's depth: every SendMessage recomputes
/// the queue's attributes (three scans of the queue, for the one it reads:
/// `ContentBasedDeduplication`), every message a ReceiveMessage returns gets a retention
/// check that recomputes them again, and its clocks (`unix_time`, `unix_time_millis`,
/// asked for each message a scan looks at) are slow. At a thousand messages deep a receive
/// takes most of a second, and filling a queue 10,000 deep takes many minutes. This launch
/// replaces the clocks with `time.time`, the retention check with one that reads the
/// retention period directly, and, while a message is being sent, the queue's attributes
/// with the one a send reads; all with the same meaning. A deep queue stays fast: what a
/// benchmark needs.
const FAST_AT_DEPTH: &str = r#"
import sys, time, threading
import moto.sqs.models as m
m.unix_time = time.time
_millis = m.unix_time_millis
m.unix_time_millis = lambda dt=None: time.time() * 1000.0 if dt is None else _millis(dt)
def valid(self, queue_name, message):
    q = self.queues[queue_name]
    keep = int(getattr(q, "message_retention_period", 345600) or 345600)
    return keep + message.sent_timestamp / 1000 > time.time()
m.SQSBackend.is_message_valid_based_on_retention_period = valid
_sending = threading.local()
_attributes = m.Queue.attributes.fget
def attributes(self):
    if getattr(_sending, "on", False):
        v = getattr(self, "content_based_deduplication", False)
        return {"ContentBasedDeduplication": str(v).lower()}
    return _attributes(self)
m.Queue.attributes = property(attributes)
_send = m.SQSBackend.send_message
def send_message(self, *args, **kwargs):
    _sending.on = True
    try:
        return _send(self, *args, **kwargs)
    finally:
        _sending.on = False
m.SQSBackend.send_message = send_message
from moto.server import main
main(["-H", "127.0.0.1", "-p", sys.argv[1]])
"#;

/// A message as a receive returns it.
#[derive(Debug, Clone)]
pub struct Msg {
    pub id: String,
    pub body: String,
    pub receive_count: u32,
}

/// One request moto's recorder kept.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `ReceiveMessage`, … (`(none)` for requests outside SQS's API).
    pub action: String,
    pub headers: serde_json::Map<String, Value>,
    /// The request's JSON body (Null when it had none).
    pub input: Value,
}

/// One moto server; killed when dropped.
pub struct Moto {
    svc: Service,
}

fn moto_server() -> PathBuf {
    program_path(
        "CHORE_TEST_MOTO_SERVER",
        None,
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server"),
    )
}

/// moto_server; its request recorder writing to `recording` when given.
fn spec(recording: Option<&Path>) -> Spec {
    Spec {
        name: "moto_server",
        program: moto_server(),
        args: ["-H", "127.0.0.1", "-p", "{port}"]
            .map(str::to_owned)
            .to_vec(),
        env: recording
            .map(|f| ("MOTO_RECORDER_FILEPATH".into(), f.display().to_string()))
            .into_iter()
            .collect(),
        patience: Duration::from_secs(60),
        install_hint: INSTALL_HINT,
    }
}

impl Moto {
    /// On a free loopback port.
    pub fn start() -> Moto {
        Moto {
            svc: Service::start(spec(None)),
        }
    }

    /// On `port`: a restart where chore expects it (moto keeps no state across restarts).
    pub fn start_on(port: u16) -> Moto {
        Moto {
            svc: Service::start_on(spec(None), port),
        }
    }

    /// With its request recorder writing to `file` (switched on by `record`).
    pub fn start_recording(file: &Path) -> Moto {
        Moto {
            svc: Service::start(spec(Some(file))),
        }
    }

    /// Recording, and fast on deep queues (see `FAST_AT_DEPTH`): for the bench. None when
    /// moto's Python (beside moto_server) is not there.
    pub fn start_fast_recording(file: &Path) -> Option<Moto> {
        let python = moto_server().parent()?.join("python");
        if !python.exists() {
            return None;
        }
        let spec = Spec {
            program: python,
            args: vec!["-c".into(), FAST_AT_DEPTH.into(), "{port}".into()],
            ..spec(Some(file))
        };
        Some(Moto {
            svc: Service::start(spec),
        })
    }

    /// The AWS endpoint URL.
    pub fn endpoint(&self) -> String {
        self.svc.url()
    }

    pub fn port(&self) -> u16 {
        self.svc.port
    }

    fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, Vec<u8>) {
        exchange(&self.svc.addr(), method, path, headers, body)
    }

    /// An SQS action; Err carries moto's error reply.
    pub fn try_call(&self, action: &str, input: Value) -> Result<Value, String> {
        let target = format!("AmazonSQS.{action}");
        let (status, body) = self.http(
            "POST",
            "/",
            &[
                ("X-Amz-Target", &target),
                ("Content-Type", "application/x-amz-json-1.0"),
                (
                    "Authorization",
                    "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/sqs/aws4_request, \
                     SignedHeaders=host;x-amz-date, Signature=0",
                ),
            ],
            input.to_string().as_bytes(),
        );
        let text = String::from_utf8_lossy(&body).to_string();
        if status != 200 {
            return Err(format!("{action}: HTTP {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("{action}: {e} in {text:?}"))
    }

    pub fn call(&self, action: &str, input: Value) -> Value {
        self.try_call(action, input)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Create a queue with these attributes (strings, as SQS wants them); its URL.
    pub fn create(&self, name: &str, attributes: Value) -> String {
        let out = self.call(
            "CreateQueue",
            json!({"QueueName": name, "Attributes": attributes}),
        );
        out["QueueUrl"].as_str().unwrap().to_string()
    }

    pub fn queue_url(&self, name: &str) -> Result<String, String> {
        self.try_call("GetQueueUrl", json!({ "QueueName": name }))
            .map(|v| v["QueueUrl"].as_str().unwrap().to_string())
    }

    /// SendMessage, as Ruby Chore's publisher does; the message id.
    pub fn send(&self, url: &str, body: &str) -> String {
        let out = self.call("SendMessage", json!({"QueueUrl": url, "MessageBody": body}));
        out["MessageId"].as_str().unwrap().to_string()
    }

    /// SendMessage with message attributes (in SQS's JSON form); the message id.
    pub fn send_with_attributes(&self, url: &str, body: &str, attributes: &Value) -> String {
        let out = self.call(
            "SendMessage",
            json!({"QueueUrl": url, "MessageBody": body, "MessageAttributes": attributes}),
        );
        out["MessageId"].as_str().unwrap().to_string()
    }

    /// Publish many bodies in SendMessageBatch calls of ten; their ids, in order.
    pub fn send_all(&self, url: &str, bodies: &[String]) -> Vec<String> {
        let mut ids = Vec::new();
        for chunk in bodies.chunks(10) {
            let entries: Vec<Value> = chunk
                .iter()
                .enumerate()
                .map(|(i, b)| json!({"Id": i.to_string(), "MessageBody": b}))
                .collect();
            let out = self.call(
                "SendMessageBatch",
                json!({"QueueUrl": url, "Entries": entries}),
            );
            assert!(
                out["Failed"].as_array().is_none_or(|f| f.is_empty()),
                "moto refused some: {out}"
            );
            let mut ok: Vec<(usize, String)> = out["Successful"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    (
                        s["Id"].as_str().unwrap().parse().unwrap(),
                        s["MessageId"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            ok.sort();
            assert_eq!(ok.len(), chunk.len());
            ids.extend(ok.into_iter().map(|(_, id)| id));
        }
        ids
    }

    /// (visible, in flight, delayed) messages.
    /// One attribute of a queue, as SQS gives it ("" when it has none).
    pub fn attribute(&self, url: &str, name: &str) -> String {
        let out = self.call(
            "GetQueueAttributes",
            json!({"QueueUrl": url, "AttributeNames": [name]}),
        );
        out["Attributes"][name]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn counts(&self, url: &str) -> (u64, u64, u64) {
        let out = self.call(
            "GetQueueAttributes",
            json!({"QueueUrl": url, "AttributeNames": [
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed"
            ]}),
        );
        let n = |k: &str| -> u64 {
            out["Attributes"][k]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {k} in {out}"))
        };
        (
            n("ApproximateNumberOfMessages"),
            n("ApproximateNumberOfMessagesNotVisible"),
            n("ApproximateNumberOfMessagesDelayed"),
        )
    }

    /// Does the queue hold nothing: no visible, in-flight or delayed messages?
    pub fn is_empty(&self, url: &str) -> bool {
        self.counts(url) == (0, 0, 0)
    }

    /// One receive, no wait; what it returns stays invisible for `visibility` seconds.
    pub fn receive(&self, url: &str, visibility: u32) -> Vec<Msg> {
        let out = self.call(
            "ReceiveMessage",
            json!({
                "QueueUrl": url,
                "MaxNumberOfMessages": 10,
                "WaitTimeSeconds": 0,
                "VisibilityTimeout": visibility,
                "MessageSystemAttributeNames": ["ApproximateReceiveCount"]
            }),
        );
        out["Messages"]
            .as_array()
            .map(|ms| {
                ms.iter()
                    .map(|m| Msg {
                        id: m["MessageId"].as_str().unwrap().to_string(),
                        body: m["Body"].as_str().unwrap().to_string(),
                        receive_count: m["Attributes"]["ApproximateReceiveCount"]
                            .as_str()
                            .and_then(|c| c.parse().ok())
                            .unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Receive everything visible now (hidden for a minute, so each is seen once).
    pub fn drain(&self, url: &str) -> Vec<Msg> {
        let mut all = Vec::new();
        loop {
            let got = self.receive(url, 60);
            if got.is_empty() {
                return all;
            }
            all.extend(got);
        }
    }

    fn recorder(&self, method: &str, step: &str) -> Vec<u8> {
        let (status, body) = self.http(method, &format!("/moto-api/recorder/{step}"), &[], b"");
        assert_eq!(status, 200, "{step}: {}", String::from_utf8_lossy(&body));
        body
    }

    /// Recorder: forget what was recorded and record from now on.
    pub fn record(&self) {
        self.recorder("POST", "reset-recording");
        self.recorder("POST", "start-recording");
    }

    /// Recorder: every request recorded so far (a request is recorded when it starts: a
    /// long poll shows at once). Recording goes on.
    pub fn recording(&self) -> Vec<Recorded> {
        let body = self.recorder("GET", "download-recording");
        String::from_utf8_lossy(&body)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(parse_recorded)
            .collect()
    }

    /// Recorder: stop, and every recorded request's input, by action.
    pub fn recorded(&self) -> BTreeMap<String, Vec<Value>> {
        self.recorder("POST", "stop-recording");
        let mut calls: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for r in self.recording() {
            calls.entry(r.action).or_default().push(r.input);
        }
        calls
    }
}

/// One line of the recording: a JSON object with the request's headers and its body
/// (base64 when `body_encoded`).
fn parse_recorded(line: &str) -> Recorded {
    let entry: Value = serde_json::from_str(line).expect("a recorder line is JSON");
    let headers = entry["headers"].as_object().cloned().unwrap_or_default();
    let target = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-amz-target"))
        .and_then(|(_, v)| v.as_str())
        .unwrap_or("(none)");
    let action = target
        .strip_prefix("AmazonSQS.")
        .unwrap_or(target)
        .to_string();
    let raw = entry["body"].as_str().unwrap_or("");
    let text = if entry["body_encoded"].as_bool() == Some(true) {
        String::from_utf8(base64_decode(raw)).unwrap()
    } else {
        raw.to_string()
    };
    Recorded {
        action,
        headers,
        input: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_request_gives_its_action_headers_and_input() {
        let line = r#"{"module": "moto.core", "headers": {"x-amz-target": "AmazonSQS.DeleteMessageBatch", "X-Amz-Date": "20260101T120000Z"}, "body": "eyJhIjoxfQ==", "body_encoded": true}"#;
        let r = parse_recorded(line);
        assert_eq!(r.action, "DeleteMessageBatch");
        assert_eq!(r.input, json!({"a": 1}));
        assert_eq!(r.headers["X-Amz-Date"], "20260101T120000Z");
        let r = parse_recorded(r#"{"headers": {}, "body": "", "body_encoded": false}"#);
        assert_eq!((r.action.as_str(), &r.input), ("(none)", &Value::Null));
    }

    #[test]
    fn moto_server_starts_and_answers() {
        let moto = Moto::start();
        let (status, _) = moto.http("GET", "/moto-api/", &[], b"");
        assert_eq!(status, 200);
        let url = moto.create("smoke", json!({}));
        assert!(moto.is_empty(&url));
        let id = moto.send(&url, "{}");
        let got = moto.drain(&url);
        assert_eq!((got.len(), got[0].id.as_str()), (1, id.as_str()));
    }
}
