//! The `/metrics` page: a plain HTTP/1.1 listener on a one-thread tokio runtime of its
//! own, serving what the Prometheus recorder renders. hyper is already in the tree (the
//! HTTP handlers' client); the exporter crate's own listener would bring a second HTTP
//! server stack, so it is left out.

use super::slots::Slots;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

/// How often histograms are folded and idle series swept.
const UPKEEP: Duration = Duration::from_secs(5);
/// A scrape that sends nothing for this long is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; one more is closed at once. Scrapers need a few; without
/// a bound, idle connections could take every descriptor the master has for its queues.
const MAX_CONNECTIONS: usize = 32;

/// Bind `addr` now (so a mistake stops the start) and serve from a thread named
/// `metrics`, for the life of the process.
pub fn serve(addr: SocketAddr, handle: PrometheusHandle) -> std::io::Result<()> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || rt.block_on(accept(listener, handle)))?;
    Ok(())
}

async fn accept(listener: std::net::TcpListener, handle: PrometheusHandle) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "metrics listener failed; no metrics served");
            return;
        }
    };
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP);
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let slots = Slots::new(MAX_CONNECTIONS);
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors, most likely: wait rather than spin.
                tracing::warn!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Past the bound, the stream is dropped here: closed unserved.
        let Some(slot) = slots.take() else { continue };
        let handle = handle.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req| page(req, handle.clone()));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = conn.await;
        });
    }
}

async fn page(
    req: Request<Incoming>,
    handle: PrometheusHandle,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match (req.method(), req.uri().path()) {
        (&hyper::Method::GET, "/metrics") => (StatusCode::OK, handle.render()),
        (&hyper::Method::GET, _) => (StatusCode::NOT_FOUND, "see /metrics\n".into()),
        _ => (StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n".into()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(resp)
}
