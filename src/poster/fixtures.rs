//! Test fixtures shared by the poster's unit tests: a target with the daemon's defaults
//! and a delivery with or without metadata.

use crate::config::{HttpHealth, HttpRetry, HttpTarget};
use crate::queue::{Attribute, Delivery, Meta};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A target posting to `http://host:port/path` with the daemon's defaults.
pub fn target(host: &str, port: u16, path: &str) -> HttpTarget {
    let authority = if port == 80 {
        host.to_owned()
    } else {
        format!("{host}:{port}")
    };
    HttpTarget {
        url: format!("http://{authority}{path}"),
        host: host.into(),
        port,
        path: path.into(),
        mime_type: "application/json".into(),
        user_agent: "aws-sqsd/3.0.4".into(),
        connect_timeout: Duration::from_secs(5),
        inactivity_timeout: Duration::from_secs(299),
        connections: 50,
        error_visibility_timeout: Duration::from_secs(2),
        retry: HttpRetry::Sqsd,
        retention_period: Duration::from_secs(345_600),
        health: HttpHealth::Tcp,
        sqsd_log: false,
    }
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
    }
}

/// `d` with metadata as an SQS receive fills it.
pub fn with_meta(mut d: Delivery, attributes: Vec<Attribute>) -> Delivery {
    d.meta = Some(Box::new(Meta {
        sent_at: Some(at(1_692_107_873)),
        first_received_at: Some(at(1_692_107_874)),
        sender_id: Some("AROA4IQUC33B3Q35DSTBL:i-0879d7966a857453a".into()),
        attributes,
    }));
    d
}
