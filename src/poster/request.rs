//! The request for one delivery, built without I/O: the URI, the headers Elastic
//! Beanstalk's SQS daemon sends (docs/elastic-beanstalk.md) and the body, byte for byte.
//!
//! What is the same for every post to a target (`Host`, `User-Agent`, `Content-Type`, the
//! path) is made once, as a `Template`; `build` adds what belongs to the message. A
//! periodic task's message (`periodic`) goes to its own path with an empty body.

use super::utc;
use crate::config::HttpTarget;
use crate::queue::{Attribute, Delivery};
use http::Uri;
use http::header::{
    CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderMap, HeaderName, HeaderValue, USER_AGENT,
};
use hyper::body::Bytes;

const MSGID: HeaderName = HeaderName::from_static("x-aws-sqsd-msgid");
const RECEIVE_COUNT: HeaderName = HeaderName::from_static("x-aws-sqsd-receive-count");
const FIRST_RECEIVED_AT: HeaderName = HeaderName::from_static("x-aws-sqsd-first-received-at");
const SENT_AT: HeaderName = HeaderName::from_static("x-aws-sqsd-sent-at");
const QUEUE: HeaderName = HeaderName::from_static("x-aws-sqsd-queue");
const PATH: HeaderName = HeaderName::from_static("x-aws-sqsd-path");
const SENDER_ID: HeaderName = HeaderName::from_static("x-aws-sqsd-sender-id");
const SCHEDULED_AT: HeaderName = HeaderName::from_static("x-aws-sqsd-scheduled-at");
const TASKNAME: HeaderName = HeaderName::from_static("x-aws-sqsd-taskname");
const ATTR_PREFIX: &str = "x-aws-sqsd-attr-";

/// The attributes of a periodic task's message (the daemon's names); never forwarded as
/// `X-Aws-Sqsd-Attr-` headers.
pub const PERIODIC_PREFIX: &str = "beanstalk.sqsd.";
pub const PERIODIC_PATH: &str = "beanstalk.sqsd.path";
pub const PERIODIC_TASK: &str = "beanstalk.sqsd.task_name";
pub const PERIODIC_TIME: &str = "beanstalk.sqsd.scheduled_time";

/// What every post to one target shares.
#[derive(Debug)]
pub struct Template {
    /// Ordinary messages are posted here.
    uri: Uri,
    /// `http://host[:port]`, which a periodic task's path is joined to.
    origin: String,
    host: HeaderValue,
    user_agent: HeaderValue,
    content_type: HeaderValue,
    path: HeaderValue,
}

impl Template {
    pub fn new(t: &HttpTarget) -> Result<Template, String> {
        let value = |what: &str, v: &str| {
            HeaderValue::from_bytes(v.as_bytes())
                .map_err(|_| format!("{what} `{v}` cannot be sent as an HTTP header"))
        };
        // The port only when it is not 80, as browsers and curl write it (the daemon's
        // requests say `Host: localhost`).
        let host = match t.port {
            80 => value("the host", &t.host)?,
            port => value("the host", &format!("{}:{port}", t.host))?,
        };
        let uri: Uri = t
            .url
            .parse()
            .map_err(|e| format!("the URL `{}`: {e}", t.url))?;
        let authority = uri
            .authority()
            .ok_or_else(|| format!("`{}` has no host", t.url))?;
        Ok(Template {
            // As the URL writes it, so that periodic posts share the connection pool.
            origin: format!("http://{authority}"),
            uri,
            host,
            user_agent: value("the user-agent", &t.user_agent)?,
            content_type: value("the mime-type", &t.mime_type)?,
            path: value("the path", &t.path)?,
        })
    }
}

/// A request ready to send.
#[derive(Debug, Clone)]
pub struct Built {
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A periodic task's message, as the scheduler (or a real Elastic Beanstalk leader) wrote it.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Periodic {
    #[serde(rename = "beanstalk.sqsd.path")]
    pub path: Option<String>,
    #[serde(rename = "beanstalk.sqsd.task_name")]
    pub task: Option<String>,
    #[serde(rename = "beanstalk.sqsd.scheduled_time")]
    pub scheduled: String,
}

/// Whether `d` is a periodic task's message: its attributes carry
/// `beanstalk.sqsd.scheduled_time` (SQS), or its body is the JSON object of the three
/// `beanstalk.sqsd.*` strings (the filesystem queue, which has no attributes).
pub fn periodic(d: &Delivery) -> Option<Periodic> {
    if let Some(meta) = &d.meta {
        let attr = |name: &str| {
            meta.attributes
                .iter()
                .find(|a| a.name == name)
                .and_then(|a| a.string_value.clone())
        };
        if let Some(scheduled) = attr(PERIODIC_TIME) {
            return Some(Periodic {
                path: attr(PERIODIC_PATH),
                task: attr(PERIODIC_TASK),
                scheduled,
            });
        }
    }
    // Cheap tests first: almost no body is one.
    if !d.body.trim_start().starts_with('{') || !d.body.contains(PERIODIC_TIME) {
        return None;
    }
    let p: Periodic = serde_json::from_str(&d.body).ok()?;
    (p.path.is_some() && p.task.is_some()).then_some(p)
}

/// The request for `d`, of queue `queue` (its name: the last segment of an SQS queue URL).
/// A header whose value cannot be sent is left out, with a warning; the request is never
/// corrupted. Fails only for a periodic path that is no URI path.
pub fn build(t: &Template, queue: &str, d: &Delivery) -> Result<Built, String> {
    let periodic = periodic(d);
    let meta = d.meta.as_deref();
    let attributes = meta.map_or(&[][..], |m| &m.attributes[..]);
    let mut h = HeaderMap::with_capacity(16 + attributes.len());
    // Puts a header, or leaves it out with a warning when the value cannot be one.
    let put = |h: &mut HeaderMap, name: HeaderName, value: &[u8], what: &dyn Fn() -> String| {
        match HeaderValue::from_bytes(value) {
            Ok(v) => {
                h.insert(name, v);
            }
            Err(_) => {
                tracing::warn!(queue, id = %d.id, "{} cannot be sent as an HTTP header value (CR, LF, NUL or another control character); left out of the request", what());
            }
        }
    };
    // In the order of the daemon's requests, for whoever reads a capture.
    h.insert(HOST, t.host.clone());
    h.insert(USER_AGENT, t.user_agent.clone());
    h.insert(CONTENT_TYPE, t.content_type.clone());
    let (uri, body) = match &periodic {
        None => (t.uri.clone(), Bytes::copy_from_slice(d.body.as_bytes())),
        Some(p) => (periodic_uri(t, p)?, Bytes::new()),
    };
    // Explicit even when 0: hyper leaves it out for an empty body, and the daemon sent it.
    h.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    put(&mut h, MSGID, d.id.as_bytes(), &|| "the message id".into());
    h.insert(RECEIVE_COUNT, HeaderValue::from(d.attempt));
    for (name, at) in [
        (FIRST_RECEIVED_AT, meta.and_then(|m| m.first_received_at)),
        (SENT_AT, meta.and_then(|m| m.sent_at)),
    ] {
        if let Some(stamp) = at.and_then(utc::iso) {
            put(&mut h, name, &stamp, &|| "a timestamp".into());
        }
    }
    put(&mut h, QUEUE, queue.as_bytes(), &|| "the queue name".into());
    match &periodic {
        None => {
            h.insert(PATH, t.path.clone());
        }
        Some(_) => {
            let path = uri.path_and_query().map_or("/", |p| p.as_str());
            put(&mut h, PATH, path.as_bytes(), &|| "the path".into());
        }
    }
    if let Some(sender) = meta.and_then(|m| m.sender_id.as_deref()) {
        put(&mut h, SENDER_ID, sender.as_bytes(), &|| {
            "the sender id".into()
        });
    }
    if let Some(p) = &periodic {
        let at = utc::scheduled_iso(&p.scheduled);
        let at = at.as_deref().unwrap_or(&p.scheduled);
        put(&mut h, SCHEDULED_AT, at.as_bytes(), &|| {
            "the scheduled time".into()
        });
        if let Some(task) = &p.task {
            put(&mut h, TASKNAME, task.as_bytes(), &|| {
                "the task name".into()
            });
        }
    }
    for a in attributes.iter().filter(|a| forwarded(a)) {
        let what = || format!("message attribute `{}`", a.name);
        let Ok(name) = HeaderName::try_from(format!("{ATTR_PREFIX}{}", a.name)) else {
            tracing::warn!(queue, id = %d.id, "{} has a name that cannot be an HTTP header name; left out of the request", what());
            continue;
        };
        // The daemon's rule: an attribute never replaces a header already there (two
        // attribute names that differ only in case). Unlike the daemon, we say so.
        if h.contains_key(&name) {
            tracing::warn!(queue, id = %d.id, "{}: another attribute's name differs from it only in case, and HTTP header names do not; left out of the request", what());
            continue;
        }
        let value = a.string_value.as_deref().unwrap_or_default();
        put(&mut h, name, value.as_bytes(), &what);
    }
    Ok(Built {
        uri,
        headers: h,
        body,
    })
}

/// Whether a message attribute becomes an `X-Aws-Sqsd-Attr-` header: String and Number
/// ones (custom subtypes too), not Binary, not the periodic tasks' own.
pub fn forwarded(a: &Attribute) -> bool {
    (a.data_type.starts_with("String") || a.data_type.starts_with("Number"))
        && a.string_value.is_some()
        && !a.name.starts_with(PERIODIC_PREFIX)
}

/// A periodic task's URL: its path on the target's host and port (a path written without
/// its leading slash is joined as the daemon joins it onto `http://localhost/`); the
/// target's own URL when the message names no path.
fn periodic_uri(t: &Template, p: &Periodic) -> Result<Uri, String> {
    let Some(path) = p.path.as_deref() else {
        return Ok(t.uri.clone());
    };
    let slash = if path.starts_with('/') { "" } else { "/" };
    // The authority cannot change: the path is joined after the origin and a slash.
    format!("{}{slash}{path}", t.origin)
        .parse()
        .map_err(|_| format!("the periodic task's path `{path}` is not a URL path"))
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
