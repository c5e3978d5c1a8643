//! Test fixtures shared by the poster's unit tests: a target with the daemon's defaults
//! and a delivery with or without metadata.

use crate::config::HttpTarget;
use crate::queue::{Attribute, Delivery, Meta};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A target posting to `http://host:port/path` with the daemon's defaults, read the way a
/// Chorefile's `handler = "http://..."` is (so the defaults are the configuration's own).
pub fn target(host: &str, port: u16, path: &str) -> HttpTarget {
    let authority = match port {
        80 => host.to_owned(),
        _ => format!("{host}:{port}"),
    };
    let url = toml::Value::String(format!("http://{authority}{path}"));
    crate::config::http_target(&url).expect("a valid target URL")
}

pub fn delivery(id: &str, body: &str) -> Delivery {
    Delivery {
        id: id.into(),
        receipt: "r".into(),
        body: body.into(),
        attempt: 1,
        received_at: Instant::now(),
        renew_at: Instant::now(),
        class: None,
        group: None,
        dedupe_key: None,
        meta: None,
        post_to: None,
    }
}

pub fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

pub fn attr(name: &str, data_type: &str, value: Option<&str>) -> Attribute {
    Attribute {
        name: name.into(),
        data_type: data_type.into(),
        string_value: value.map(Into::into),
        binary_value: None,
    }
}

/// `d` with metadata as an SQS receive fills it.
pub fn with_meta(mut d: Delivery, attributes: Vec<Attribute>) -> Delivery {
    d.meta = Some(Box::new(Meta {
        sent_at: Some(at(1_692_107_873)),
        first_received_at: Some(at(1_692_107_874)),
        sender_id: Some("AROA4IQUC33B3Q35DSTBL:i-0879d7966a857453a".into()),
        attributes,
        unread_bytes: None,
    }));
    d
}
