//! Connections that note when they last read a byte, so that the inactivity timer sees a
//! slow answer's bytes while hyper is still reading its head: hyper says nothing until
//! the whole head is in, and an application that trickles its headers is alive, not
//! silent (the daemon's inactivity timeout is reset by any byte).
//!
//! `ClockedConnector` wraps the usual `HttpConnector`; each connection it makes carries a
//! `ReadClock` in its `Connected` extras, where `exchange` finds it through hyper-util's
//! `capture_connection`.

use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// When a connection last read a byte.
#[derive(Clone, Debug)]
pub struct ReadClock(Arc<AtomicU64>);

/// The process-wide origin the clocks count from (an atomic holds a number, not an
/// `Instant`).
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

impl ReadClock {
    fn new() -> ReadClock {
        let clock = ReadClock(Arc::new(AtomicU64::new(0)));
        clock.tick();
        clock
    }

    fn tick(&self) {
        let nanos = origin().elapsed().as_nanos() as u64;
        self.0.store(nanos, Ordering::Relaxed);
    }

    /// When the last byte was read.
    pub fn last(&self) -> Instant {
        origin() + Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }
}

/// A TCP stream that ticks its clock on every read that brings bytes.
pub struct ClockedStream {
    tcp: TcpStream,
    clock: ReadClock,
}

impl AsyncRead for ClockedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.clock.tick();
        }
        polled
    }
}

impl AsyncWrite for ClockedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

impl Connection for ClockedStream {
    fn connected(&self) -> Connected {
        self.tcp.connected().extra(self.clock.clone())
    }
}

/// `HttpConnector`, with a `ReadClock` on each connection.
#[derive(Clone)]
pub struct ClockedConnector(pub HttpConnector);

type Connecting =
    Pin<Box<dyn Future<Output = Result<TokioIo<ClockedStream>, BoxError>> + Send + 'static>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for ClockedConnector {
    type Response = TokioIo<ClockedStream>;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Connecting {
        let connecting = self.0.call(uri);
        Box::pin(async move {
            let tcp = connecting.await?.into_inner();
            Ok(TokioIo::new(ClockedStream {
                tcp,
                clock: ReadClock::new(),
            }))
        })
    }
}

/// The clock of the connection `capture` was given, once it is connected.
pub fn clock_of(connected: Option<&Connected>) -> Option<ReadClock> {
    let mut extensions = http::Extensions::new();
    connected?.get_extras(&mut extensions);
    extensions.remove::<ReadClock>()
}

/// Wait for `fut` until nothing has been read for `inactivity` (counting from `since`, or
/// from the clock's last byte when that is later). None: it went silent.
pub async fn unless_silent<F: Future + Unpin>(
    fut: &mut F,
    clock: Option<&ReadClock>,
    since: Instant,
    inactivity: Duration,
) -> Option<F::Output> {
    let mut last = since;
    loop {
        let at = tokio::time::Instant::from_std(last + inactivity);
        match tokio::time::timeout_at(at, &mut *fut).await {
            Ok(out) => return Some(out),
            Err(_) => match clock.map(ReadClock::last) {
                Some(read) if read > last => last = read,
                _ => return None,
            },
        }
    }
}
