//! One exchange with the application, on the poster's runtime: send the request over a
//! pooled keep-alive connection, wait for the answer under the inactivity timer, read the
//! start of the body, and say how it went as an `Outcome`.
//!
//! The timers: connecting is bounded by `connect-timeout` (the connector's); once
//! connected, every wait for response bytes (the head, then each body chunk) is bounded
//! by `inactivity-timeout`, and any byte read resets it (`clocked`: even a byte of a head
//! hyper has not finished reading), so a slow answer stays alive, as with the daemon.

use super::clocked::{ClockedConnector, clock_of, unless_silent};
use super::request::{Built, Template};
use super::{Outcome, Report, utc};
use crate::config::HttpTarget;
use http::header::RETRY_AFTER;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{HttpConnector, capture_connection};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::timeout;

type HttpClient = Client<ClockedConnector, Full<Bytes>>;
type ClientError = hyper_util::client::legacy::Error;

/// The most of a response body read: enough for the log's excerpt, and all of a small
/// body, so that its connection goes back to the pool. A larger rest is not read; its
/// connection is closed.
pub const BODY_READ: usize = 4096;

/// How long an idle pooled connection is kept: under Node's 5 s keep-alive default, so
/// chore seldom picks a connection the server is about to close.
const POOL_IDLE: Duration = Duration::from_secs(4);

/// Everything a post to one target needs.
pub struct Route {
    pub template: Result<Template, String>,
    client: HttpClient,
    inactivity: Duration,
    /// Keeps the target (and so the routes table's key, its address) alive.
    _target: Arc<HttpTarget>,
}

impl Route {
    pub fn new(target: Arc<HttpTarget>) -> Route {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(target.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(target.connections)
            // `X-Aws-Sqsd-Msgid`, as the daemon's documentation writes them (hyper would
            // send them in lower case; either is the same header).
            .http1_title_case_headers(true)
            // A pooled connection found closed before the request went out is retried
            // on a fresh one, without counting a failure (the default; kept explicit).
            .retry_canceled_requests(true)
            .build(ClockedConnector(connector));
        Route {
            template: Template::new(&target),
            client,
            inactivity: target.inactivity_timeout,
            _target: target,
        }
    }
}

/// The post's task: exchange, then report.
pub async fn run(route: Arc<Route>, built: Built, report: Report) {
    let outcome = exchange(&route.client, built, route.inactivity).await;
    report.send(outcome);
}

/// Send `built`, once more if the connection was closed before any answer: the daemon
/// re-posts at once when a keep-alive connection is closed under a request (a server
/// closing an idle connection just as the request went out).
async fn exchange(client: &HttpClient, built: Built, inactivity: Duration) -> Outcome {
    let again = built.clone();
    match attempt(client, built, inactivity).await {
        Ok(outcome) => outcome,
        Err(_closed) => match attempt(client, again, inactivity).await {
            Ok(outcome) => outcome,
            Err(e) => Outcome::Failed(causes(&e)),
        },
    }
}

/// One try. Err: the connection closed before any response byte (worth one more try).
async fn attempt(
    client: &HttpClient,
    b: Built,
    inactivity: Duration,
) -> Result<Outcome, ClientError> {
    let mut req = Request::new(Full::new(b.body));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = b.uri;
    *req.headers_mut() = b.headers;
    let mut connection = capture_connection(&mut req);
    let mut response = client.request(req);
    // Until connected, only the connect timeout applies.
    let early = tokio::select! {
        biased;
        r = &mut response => Some(r),
        _ = connection.wait_for_connection_metadata() => None,
    };
    let result = match early {
        Some(r) => r,
        None => {
            let clock = clock_of(connection.connection_metadata().as_ref());
            let since = std::time::Instant::now();
            match unless_silent(&mut response, clock.as_ref(), since, inactivity).await {
                Some(r) => r,
                None => return Ok(Outcome::Inactive),
            }
        }
    };
    match result {
        Ok(res) => Ok(answer(res, inactivity).await),
        Err(e) if closed_early(&e) => Err(e),
        Err(e) => Ok(failure(&e)),
    }
}

/// Read the status, `Retry-After` (on a 429) and the start of the body.
async fn answer(res: Response<Incoming>, inactivity: Duration) -> Outcome {
    let status = res.status().as_u16();
    let retry_after = match status {
        429 => res
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| utc::retry_after(v, SystemTime::now())),
        _ => None,
    };
    let mut body = res.into_body();
    let mut excerpt = Vec::new();
    let mut read = 0;
    while read < BODY_READ {
        let frame = match timeout(inactivity, body.frame()).await {
            Err(_) => return Outcome::Inactive,
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Outcome::Failed(format!("reading the {status} response: {}", causes(&e)));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        if let Some(data) = frame.data_ref() {
            // Only a failure is logged with its body.
            if status != 200 {
                excerpt.extend_from_slice(&data[..data.len().min(BODY_READ - read)]);
            }
            read += data.len();
        }
    }
    Outcome::Answered {
        status,
        retry_after,
        excerpt: String::from_utf8_lossy(&excerpt).into_owned(),
    }
}

/// A failed request as an outcome: no connection, or something else.
fn failure(e: &ClientError) -> Outcome {
    if e.is_connect() {
        let timed_out = io_errors(e).any(|io| io.kind() == std::io::ErrorKind::TimedOut);
        return Outcome::NoConnection {
            timed_out,
            error: causes(e),
        };
    }
    Outcome::Failed(causes(e))
}

/// Whether the connection closed (or was reset) before any answer came.
fn closed_early(e: &ClientError) -> bool {
    if e.is_connect() {
        return false;
    }
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>()
            && h.is_incomplete_message()
        {
            return true;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            )
        {
            return true;
        }
        source = s.source();
    }
    false
}

fn io_errors<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a std::io::Error> {
    std::iter::successors(Some(e), |&e| e.source()).filter_map(|e| e.downcast_ref())
}

/// The error's causes, `: `-joined, without hyper-util's own wrapper (`client error
/// (Connect)`) when there is something under it.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut next = e.source();
    while let Some(s) = next {
        if !out.is_empty() {
            out += ": ";
        }
        out += &s.to_string();
        next = s.source();
    }
    if out.is_empty() { e.to_string() } else { out }
}
