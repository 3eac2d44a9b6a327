//! The hardened HTTP/1.1 server loop around the router.
//!
//! axum's `serve` exposes none of hyper's connection limits, so this module
//! drives hyper directly:
//! - a header-read timeout, which hyper silently ignores unless a timer is set
//!   (and which also bounds how long an idle keep-alive connection waits for its
//!   next request);
//! - a cap on header bytes (431 beyond it);
//! - an idle timeout: a connection with no request in flight and no bytes moving
//!   is closed (a client that stops reading its response, for instance);
//! - a connection cap: over it, a new connection gets a fast `503` envelope and
//!   is closed, without ever reaching the router;
//! - graceful shutdown: stop accepting, let in-flight requests finish within a
//!   bound, then drop whatever is left.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::error::{retry_after_value, ApiError};
use crate::request_id::RequestId;

/// Connection-level limits (from `server.*` in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Time for a client to send a complete request head.
    pub header_read_timeout: Duration,
    /// A connection with nothing in flight and no bytes moving is closed after this.
    pub idle_timeout: Duration,
    /// Open connections served at once; more are answered `503` and closed.
    pub max_connections: usize,
    /// Request line plus headers, in bytes.
    pub max_header_bytes: usize,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_header_bytes: 16 * 1024,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Over-capacity answers written at once; beyond it a connection is just closed.
const MAX_CONCURRENT_REJECTIONS: usize = 64;
/// Bound on writing a rejection and draining what the client sent.
const REJECTION_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause after an accept error such as `EMFILE`, so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` until `shutdown` resolves, then drains.
pub async fn serve_with_limits(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let limits = Arc::new(limits);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let rejections = Arc::new(Semaphore::new(MAX_CONCURRENT_REJECTIONS));
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tracing::info!(address = ?listener.local_addr().ok(), "listening");
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(error = %error, "accept failed");
                        tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                        continue;
                    }
                };
                match Arc::clone(&permits).try_acquire_owned() {
                    Ok(permit) => {
                        let connection = Connection {
                            router: router.clone(),
                            limits: Arc::clone(&limits),
                            drain: drain_rx.clone(),
                            _permit: permit,
                        };
                        connections.spawn(connection.run(stream, peer));
                    }
                    Err(_) => reject_over_capacity(stream, peer, &rejections),
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    drain(connections, &drain_tx, limits.shutdown_grace).await;
    Ok(())
}

/// Asks every connection to finish its request and close, then waits `grace`.
async fn drain(mut connections: JoinSet<()>, drain_tx: &watch::Sender<bool>, grace: Duration) {
    tracing::info!(
        connections = connections.len(),
        "shutting down: draining connections"
    );
    // Receivers all gone just means no connection is open.
    let _ = drain_tx.send(true);
    let finished = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "shutdown grace period over: closing remaining connections"
        );
        connections.shutdown().await;
    }
}

/// One accepted connection, holding its slot of the connection cap.
struct Connection {
    router: Router,
    limits: Arc<ConnectionLimits>,
    drain: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    async fn run(mut self, stream: TcpStream, peer: SocketAddr) {
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(ActivityIo {
            inner: stream,
            activity: Arc::clone(&activity),
        });
        let service = request_service(self.router.clone(), peer, Arc::clone(&activity));
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout)
            .max_header_size(self.limits.max_header_bytes)
            .keep_alive(true)
            .serve_connection(io, service)
            // WebSockets (the terminal route): once upgraded, the connection
            // future ends and the socket lives on in the handler's task.
            .with_upgrades();
        tokio::pin!(connection);
        let mut draining = *self.drain.borrow();
        if draining {
            connection.as_mut().graceful_shutdown();
        }
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(peer = %peer, error = %error, "connection ended with an error");
                    }
                    return;
                }
                changed = self.drain.changed(), if !draining => {
                    draining = true;
                    if changed.is_ok() {
                        connection.as_mut().graceful_shutdown();
                    }
                }
                () = activity.idle_for(self.limits.idle_timeout) => {
                    tracing::debug!(peer = %peer, "closing idle connection");
                    return;
                }
            }
        }
    }
}

/// The hyper service of one connection: the router, with the peer address as
/// `ConnectInfo` and the request counted as in flight while it runs.
fn request_service(
    router: Router,
    peer: SocketAddr,
    activity: Arc<Activity>,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let in_flight = InFlight::begin(Arc::clone(&activity));
        let router = router.clone();
        async move {
            let response = router.oneshot(request.map(Body::new)).await;
            drop(in_flight);
            response
        }
    })
}

/// Over the connection cap: a `503` envelope, written with a short bound, or a
/// plain close when even the rejections are saturated.
fn reject_over_capacity(stream: TcpStream, peer: SocketAddr, rejections: &Arc<Semaphore>) {
    tracing::warn!(peer = %peer, "connection cap reached: rejecting a connection");
    let Ok(permit) = Arc::clone(rejections).try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let _ = tokio::time::timeout(REJECTION_TIMEOUT, write_rejection(stream)).await;
    });
}

async fn write_rejection(mut stream: TcpStream) -> io::Result<()> {
    let retry_after = Duration::from_secs(1);
    let request_id = RequestId::generate();
    let body = ApiError::service_unavailable("the server is at its connection limit", retry_after)
        .body_bytes(Some(request_id.as_str()));
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: {}\r\nx-request-id: {}\r\nconnection: close\r\n\r\n",
        body.len(),
        retry_after_value(retry_after).to_str().unwrap_or("1"),
        request_id.as_str(),
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&body).await?;
    stream.shutdown().await?;
    // Read what the client sent so closing does not reset the connection
    // before it has read the answer.
    let mut sink = [0u8; 4096];
    while stream.read(&mut sink).await? > 0 {}
    Ok(())
}

/// When bytes last moved on a connection, and how many requests are in flight.
#[derive(Debug)]
struct Activity {
    opened: Instant,
    last_millis: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            last_millis: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_millis.store(now, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_millis.load(Ordering::Relaxed));
        self.opened.elapsed().saturating_sub(last)
    }

    /// Resolves once nothing is in flight and no byte moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let quiet = self.quiet_for();
            if self.in_flight.load(Ordering::Relaxed) > 0 {
                // A handler may legitimately be silent for long (a command);
                // the request timeout bounds it, not this one.
                tokio::time::sleep(idle).await;
            } else if quiet >= idle {
                return;
            } else {
                tokio::time::sleep(idle - quiet).await;
            }
        }
    }
}

/// Counts one request in flight until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.touch();
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream that records when bytes move, for the idle timeout.
struct ActivityIo {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for ActivityIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl AsyncWrite for ActivityIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_waits_for_in_flight_requests() {
        let activity = Arc::new(Activity::new());
        let guard = InFlight::begin(Arc::clone(&activity));
        let idle = Duration::from_secs(5);
        // With a request in flight, a long silence is not idleness.
        let waited = tokio::time::timeout(Duration::from_secs(60), activity.idle_for(idle)).await;
        assert!(waited.is_err());
        drop(guard);
        let waited = tokio::time::timeout(Duration::from_secs(60), activity.idle_for(idle)).await;
        assert!(waited.is_ok());
    }
}
