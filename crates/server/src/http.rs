//! The HTTP server loop of `fleetscore serve`: accepting connections under a
//! limit, with timeouts, and stopping gracefully.
//!
//! `axum::serve` accepts every connection and waits forever on each: an idle
//! socket, a client that sends its headers a byte a minute, a body that never
//! ends. A few hundred of those exhaust the process's file descriptors and
//! nothing answers any more, `/healthz` included. Here every connection is
//! bounded ([`Limits`]):
//!
//! - **header timeout**: a request's headers must arrive within it, counted
//!   from when the connection starts waiting for them (so it is also the
//!   keep-alive idle time between two requests). hyper enforces it.
//! - **body timeout**: a request's whole body must arrive within it, counted
//!   from its headers ([`DeadlineBody`]); a never-ending chunked body ends
//!   with 408 (the ingest and upload endpoints say so).
//! - **idle timeout**: a connection on which no byte moves either way for
//!   this long while no handler is working on it is closed ([`IdleIo`]),
//!   e.g. a client that stops reading its answer.
//! - **connection limit**: at most `max_connections` at once, and never more
//!   than the file-descriptor limit allows (with a reserve for the log, the
//!   store and the job store). At the limit, the connection that has waited
//!   longest for a request (idle, or sending its headers slowly) is closed
//!   at once to make room; if every connection is busy with a request, the
//!   newcomer is answered `503` with `Retry-After` and closed.

// Functions that answer early return `Result<_, Response>`, as the handlers
// do; a Response is large but the error path is not hot.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Sleep;
use tracing::Instrument;

use crate::metrics::Metrics;

/// File descriptors kept for everything but client connections: log
/// segments, the store, the job store's pool, MQTT, Parquet reads.
const FD_RESERVE: u64 = 64;

/// How the server bounds its connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most connections at once (further bounded by the descriptor limit).
    pub max_connections: usize,
    /// Time for a request's headers.
    pub header_timeout: Duration,
    /// Time for a request's whole body, from its headers.
    pub body_timeout: Duration,
    /// Time without a byte moving on a connection.
    pub idle_timeout: Duration,
    /// Time given to requests in progress at shutdown.
    pub drain_timeout: Duration,
}

/// What the server loop counts, for `/metrics`.
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Connections open now.
    pub open: AtomicU64,
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections refused with 503 because every slot was busy.
    pub refused: AtomicU64,
    /// Waiting connections closed to make room for a new one.
    pub evicted: AtomicU64,
    /// Connections closed by the idle timeout.
    pub idle_closed: AtomicU64,
    /// The connection limit in force.
    pub limit: AtomicU64,
}

/// Raises the soft limit on open files to the hard limit (as Go and many
/// servers do) and returns the limit now in force, if it can be read.
pub fn raise_fd_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit write or read the struct we own.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
                return None;
            }
            if r.rlim_cur < r.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: r.rlim_max,
                    rlim_max: r.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    r.rlim_cur = r.rlim_max;
                }
            }
        }
        #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
        let limit = r.rlim_cur as u64;
        Some(limit)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The connection limit in force: the configured one, or fewer if the
/// descriptor limit `nofile` leaves room for fewer.
pub fn effective_limit(configured: usize, nofile: Option<u64>) -> usize {
    match nofile {
        Some(n) => {
            let room = n.saturating_sub(FD_RESERVE).max(8);
            configured
                .min(usize::try_from(room).unwrap_or(usize::MAX))
                .max(1)
        }
        None => configured.max(1),
    }
}

/// One open connection, as the eviction scan sees it.
struct Conn {
    /// A request is being answered (shared with its [`IdleIo`], whose idle
    /// clock does not run meanwhile).
    busy: Arc<AtomicBool>,
    /// Milliseconds since the server started when it last became idle.
    idle_since: AtomicU64,
    /// Chosen for eviction (so that it is not chosen twice).
    evicting: AtomicBool,
    /// Asks the connection to close: at once if it is waiting for a
    /// request, after its answer if it is busy.
    close: Notify,
}

/// The open connections.
struct Registry {
    started: Instant,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
}

impl Registry {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Closes the connection that has waited longest for a request; false
    /// if every connection is busy (or already being closed).
    fn evict_one(&self) -> bool {
        let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let oldest = conns
            .values()
            .filter(|c| !c.busy.load(Ordering::Acquire) && !c.evicting.load(Ordering::Relaxed))
            .min_by_key(|c| c.idle_since.load(Ordering::Relaxed));
        match oldest {
            Some(c) => {
                c.evicting.store(true, Ordering::Relaxed);
                c.close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets the
/// requests in progress finish (at most `limits.drain_timeout`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stats: Arc<ConnStats>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = limits.max_connections.max(1);
    stats.limit.store(slots as u64, Ordering::Relaxed);
    let permits = Arc::new(Semaphore::new(slots));
    let registry = Arc::new(Registry {
        started: Instant::now(),
        next_id: AtomicU64::new(0),
        conns: Mutex::new(HashMap::new()),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut accept_errors = 0u64;
    loop {
        let (stream, _peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE/ENFILE and aborted handshakes: wait a little
                    // (the descriptors of closing connections come back).
                    accept_errors += 1;
                    if accept_errors.is_power_of_two() {
                        tracing::warn!(errors = accept_errors, error = %e, "accepting a connection failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // Full: close the connection that waited longest for a
                // request (it goes at once: its task drops it), then take
                // its slot. Only a connection just evicted is waited for,
                // and only briefly, so the loop keeps accepting.
                let room = registry.evict_one();
                let waited = if room {
                    stats.evicted.fetch_add(1, Ordering::Relaxed);
                    tokio::time::timeout(
                        Duration::from_millis(250),
                        Arc::clone(&permits).acquire_owned(),
                    )
                    .await
                    .ok()
                    .and_then(Result::ok)
                } else {
                    None
                };
                match waited {
                    Some(p) => p,
                    None => {
                        stats.refused.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(refuse(stream));
                        continue;
                    }
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let id = registry.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            busy: Arc::new(AtomicBool::new(false)),
            idle_since: AtomicU64::new(registry.now_ms()),
            evicting: AtomicBool::new(false),
            close: Notify::new(),
        });
        registry
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::clone(&conn));
        stats.open.fetch_add(1, Ordering::Relaxed);
        let (router, registry, stats, mut stop_rx) = (
            router.clone(),
            Arc::clone(&registry),
            Arc::clone(&stats),
            stop_rx.clone(),
        );
        tokio::spawn(async move {
            let io = IdleIo::new(stream, limits.idle_timeout, Arc::clone(&conn.busy));
            let timed_out = Arc::clone(&io.timed_out);
            let service = {
                let (conn, registry) = (Arc::clone(&conn), Arc::clone(&registry));
                hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let router = router.clone();
                    let (conn, registry) = (Arc::clone(&conn), Arc::clone(&registry));
                    conn.busy.store(true, Ordering::Release);
                    let req = req.map(|b| Body::new(DeadlineBody::new(b, limits.body_timeout)));
                    async move {
                        let r = tower_call(router, req).await;
                        conn.idle_since.store(registry.now_ms(), Ordering::Relaxed);
                        conn.busy.store(false, Ordering::Release);
                        r
                    }
                })
            };
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .keep_alive(true);
            let mut served = std::pin::pin!(builder.serve_connection(TokioIo::new(io), service));
            let mut draining = false;
            loop {
                let close = tokio::select! {
                    r = served.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "connection ended");
                        }
                        break;
                    }
                    _ = conn.close.notified(), if !draining => true,
                    _ = stop_rx.changed(), if !draining => true,
                };
                if close {
                    // Waiting for a request (idle, or headers coming
                    // slowly): close now; hyper's graceful shutdown would
                    // keep such a connection until its header timeout.
                    // Busy: close once its answer is written.
                    if !conn.busy.load(Ordering::Acquire) {
                        break;
                    }
                    draining = true;
                    served.as_mut().graceful_shutdown();
                }
            }
            if timed_out.load(Ordering::Relaxed) {
                stats.idle_closed.fetch_add(1, Ordering::Relaxed);
            }
            registry
                .conns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            stats.open.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every slot back means every connection has ended.
    let all = u32::try_from(slots).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.drain_timeout, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            open = stats.open.load(Ordering::Relaxed),
            "requests still in progress after the drain timeout; closing them"
        );
    }
}

async fn tower_call(
    router: Router,
    req: axum::http::Request<Body>,
) -> Result<axum::response::Response, std::convert::Infallible> {
    use tower_service::Service;
    let mut router = router;
    router.call(req).await
}

/// Answers a connection that found every slot busy, and closes it.
async fn refuse(mut stream: TcpStream) {
    const BODY: &str = "{\"error\":\"too many connections; retry shortly\"}";
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// A socket that fails with `TimedOut` once no byte has moved either way
/// for `timeout`, except while `busy` (a handler is working on a request:
/// hyper may poll the socket meanwhile, and a slow handler is bounded by
/// its own limits).
pub struct IdleIo<S> {
    inner: S,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    busy: Arc<AtomicBool>,
    timed_out: Arc<AtomicBool>,
}

impl<S> IdleIo<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, timeout: Duration, busy: Arc<AtomicBool>) -> Self {
        IdleIo {
            inner,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            busy,
            timed_out: Arc::new(AtomicBool::new(false)),
        }
    }

    fn progressed(&mut self) {
        let at = tokio::time::Instant::now() + self.timeout;
        self.sleep.as_mut().reset(at);
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.sleep.as_mut().poll(cx).is_ready() {
            if self.busy.load(Ordering::Acquire) {
                // Start again; polled to register the new deadline.
                self.progressed();
                let _ = self.sleep.as_mut().poll(cx);
                return false;
            }
            self.timed_out.store(true, Ordering::Relaxed);
            return true;
        }
        false
    }
}

fn idle_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection idle too long")
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                self.progressed();
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                self.progressed();
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                self.progressed();
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The error a request body ends with when it took longer than the body
/// timeout; handlers answer it with 408.
#[derive(Debug)]
pub struct BodyTimeout(pub Duration);

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body did not arrive within {:?} (the server's body timeout)",
            self.0
        )
    }
}

impl std::error::Error for BodyTimeout {}

/// Whether `e` (or one of its sources) is a [`BodyTimeout`].
pub fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if c.is::<BodyTimeout>() {
            return true;
        }
        cur = c.source();
    }
    false
}

/// A request body that must end within a time limit from its start.
pub struct DeadlineBody {
    inner: Incoming,
    limit: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl DeadlineBody {
    /// `inner`, which must end within `limit` from now.
    pub fn new(inner: Incoming, limit: Duration) -> Self {
        DeadlineBody {
            inner,
            limit,
            deadline: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

impl hyper::body::Body for DeadlineBody {
    type Data = hyper::body::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(f) => Poll::Ready(f.map(|r| r.map_err(Into::into))),
            Poll::Pending => {
                if self.deadline.as_mut().poll(cx).is_ready() {
                    let limit = self.limit;
                    Poll::Ready(Some(Err(Box::new(BodyTimeout(limit)))))
                } else {
                    Poll::Pending
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Binds the server's address, saying what to do when it cannot: a taken
/// port is the common case (another `serve` or `demo`, or any other
/// server), and `--listen 127.0.0.1:0` always finds a free one.
pub async fn bind(listen: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| bind_error(listen, e))
}

/// Checks that `listen` can be bound now (and frees it again): for
/// commands that do long work before they serve, such as `demo`.
pub fn check_bind(listen: &str) -> anyhow::Result<()> {
    std::net::TcpListener::bind(listen)
        .map(drop)
        .map_err(|e| bind_error(listen, e))
}

fn bind_error(listen: &str, e: std::io::Error) -> anyhow::Error {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
            "cannot listen on {listen}: the address is already in use (another fleetscore serve or demo, or another server); stop it, or pick another address (--listen 127.0.0.1:0 picks a free port)"
        ),
        std::io::ErrorKind::PermissionDenied => anyhow::anyhow!(
            "cannot listen on {listen}: permission denied (ports below 1024 need privileges); pick a port above 1023, e.g. --listen 127.0.0.1:8080, or --listen 127.0.0.1:0 for a free one"
        ),
        std::io::ErrorKind::AddrNotAvailable => anyhow::anyhow!(
            "cannot listen on {listen}: no network interface of this machine has that address; use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)"
        ),
        _ => anyhow::Error::new(e).context(format!("cannot listen on {listen}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_leaves_descriptors_for_the_rest() {
        assert_eq!(effective_limit(1024, Some(128)), 64);
        assert_eq!(effective_limit(1024, Some(1 << 20)), 1024);
        assert_eq!(effective_limit(1024, Some(10)), 8);
        assert_eq!(effective_limit(100, None), 100);
    }
}

/// The `method` label of a request: the standard methods by name, any
/// other as `other`, so that no client can create series at will.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Middleware over the whole router: runs each request in a `request`
/// span (its method and route, then its status and duration once
/// answered), so that every log line of its handler carries them, and
/// counts and times it in the metrics
/// (`fleetscore_http_requests_total`, `…_request_duration_seconds`). The
/// route is the pattern it matched (`/v1/jobs/{id}`), never the path, and
/// `unmatched` for a path no route has, so the series stay few. Probes and
/// scrapes (`/healthz`, `/readyz`, `/metrics`, `/ping`) get no span.
pub async fn observe(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    // Probes and scrapes, every few seconds from Kubernetes and
    // Prometheus: counted, but no span (they would fill logs and traces).
    let quiet = matches!(
        route.as_str(),
        "/healthz" | "/readyz" | "/metrics" | "/ping"
    );
    let span = if quiet {
        tracing::Span::none()
    } else {
        request_span(&req, method, &route)
    };
    let response = next.run(req).instrument(span.clone()).await;
    let took = started.elapsed();
    let status = response.status().as_u16();
    span.record("status", status);
    span.record("duration_ms", took.as_secs_f64() * 1e3);
    metrics.request(&route, method, status, took);
    if !quiet {
        tracing::debug!(parent: &span, "request answered");
    }
    response
}

/// A request's span: its method and route now, its status and duration
/// once answered. With the `otel` feature, an OpenTelemetry server span
/// named `GET /v1/jobs/{id}`, in the trace of the client's `traceparent`
/// header if it sent one (recorded before the span is first entered,
/// when it starts).
fn request_span(req: &Request, method: &'static str, route: &str) -> tracing::Span {
    let span = tracing::info_span!(
        "request",
        method,
        route = %route,
        status = tracing::field::Empty,
        duration_ms = tracing::field::Empty,
        "otel.name" = tracing::field::Empty,
        "otel.kind" = tracing::field::Empty,
    );
    #[cfg(feature = "otel")]
    {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        span.record("otel.name", format_args!("{method} {route}"));
        span.record("otel.kind", "server");
        let parent = opentelemetry::global::get_text_map_propagator(|p| {
            p.extract(&HeaderExtractor(req.headers()))
        });
        let _ = span.set_parent(parent);
    }
    #[cfg(not(feature = "otel"))]
    let _ = req;
    span
}

/// A request's headers as OpenTelemetry's propagators read them.
#[cfg(feature = "otel")]
struct HeaderExtractor<'a>(&'a axum::http::HeaderMap);

#[cfg(feature = "otel")]
impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(axum::http::HeaderName::as_str).collect()
    }
}

/// A JSON error answer, `{"error": …}`: the shape of every error the
/// server and the API give.
pub fn answer(status: StatusCode, message: impl Into<String>) -> Response {
    let body = crate::api::types::ErrorBody {
        error: message.into(),
    };
    (status, axum::Json(body)).into_response()
}

/// An answer asking the client to come back in a second.
pub fn retry_later(status: StatusCode, message: impl Into<String>) -> Response {
    let mut r = answer(status, message);
    r.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    r
}

/// Bytes of request bodies held in memory at once, across all requests
/// (`[server] max_inflight_bytes`): a request holds room for its body from
/// before it is read until its readings are durable (or the request is
/// answered), so many large concurrent bodies wait (then get 503) instead
/// of growing the process without bound.
///
/// Only a request that holds no room yet waits for it, in arrival order; a
/// request that already holds room and needs more (a chunked body that
/// keeps coming, a body's decompressed bytes) takes it at once or gets 503.
/// So requests never wait on each other while holding room.
#[derive(Debug)]
pub struct InFlight {
    sem: Arc<Semaphore>,
    /// Capacity, in units of [`InFlight::UNIT`] bytes.
    units: u32,
    wait: Duration,
    /// Requests that waited for room.
    pub waited: AtomicU64,
    /// Requests answered 503 for want of room.
    pub refused: AtomicU64,
}

/// Room held under [`InFlight`] until dropped.
pub type Held = Vec<tokio::sync::OwnedSemaphorePermit>;

impl InFlight {
    const UNIT: usize = 1024;

    /// A budget of `max_bytes`; a request waits at most `wait` for room.
    pub fn new(max_bytes: usize, wait: Duration) -> InFlight {
        let most = Semaphore::MAX_PERMITS.min(u32::MAX as usize) as u32;
        let units = u32::try_from((max_bytes / Self::UNIT).max(1))
            .unwrap_or(most)
            .min(most);
        InFlight {
            sem: Arc::new(Semaphore::new(units as usize)),
            units,
            wait,
            waited: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// How long a request may wait for room.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// The budget, in bytes.
    pub fn capacity(&self) -> usize {
        self.units as usize * Self::UNIT
    }

    /// Bytes held now.
    pub fn held_bytes(&self) -> u64 {
        (self.units as u64 - self.sem.available_permits() as u64) * Self::UNIT as u64
    }

    fn units_for(&self, bytes: usize) -> Result<u32, Response> {
        let want = u32::try_from(bytes.div_ceil(Self::UNIT).max(1)).unwrap_or(u32::MAX);
        if want > self.units {
            return Err(answer(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the body needs {bytes} bytes in memory, more than [server] max_inflight_bytes ({}); send smaller batches",
                    self.capacity()
                ),
            ));
        }
        Ok(want)
    }

    fn full(&self) -> Response {
        self.refused.fetch_add(1, Ordering::Relaxed);
        retry_later(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server holds as many request bodies as it may ([server] max_inflight_bytes); retry shortly",
        )
    }

    /// Room for `bytes`, waiting up to the configured time. Only for a
    /// request that holds no room yet.
    pub async fn reserve(
        &self,
        bytes: usize,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, Response> {
        let want = self.units_for(bytes)?;
        if let Ok(p) = Arc::clone(&self.sem).try_acquire_many_owned(want) {
            return Ok(p);
        }
        self.waited.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(self.wait, Arc::clone(&self.sem).acquire_many_owned(want)).await
        {
            Ok(Ok(p)) => Ok(p),
            _ => Err(self.full()),
        }
    }

    /// Room for `bytes` now, or 503: for a request that already holds some.
    pub fn take_now(&self, bytes: usize) -> Result<tokio::sync::OwnedSemaphorePermit, Response> {
        let want = self.units_for(bytes)?;
        Arc::clone(&self.sem)
            .try_acquire_many_owned(want)
            .map_err(|_| self.full())
    }
}

/// A body read under the limits, with the room it holds.
pub struct Limited {
    /// The body.
    pub bytes: Bytes,
    /// Its room under [`InFlight`].
    pub held: Held,
}

/// Room first taken for a body of unknown length; more as it arrives.
const CHUNKED_STEP: usize = 256 << 10;

/// Reads a request body of at most `max` bytes within the body timeout,
/// holding room for `factor` times its bytes under `inflight` (the body,
/// and what handling it builds: the readings parsed from it, say): a
/// declared length is reserved (waiting) before anything is read; a
/// chunked body takes room as it arrives. `413` past `max`, `408` past the
/// body timeout.
pub async fn read_limited(
    inflight: &InFlight,
    body: Body,
    headers: &axum::http::HeaderMap,
    max: usize,
    factor: usize,
) -> Result<Limited, Response> {
    let factor = factor.max(1);
    use hyper::body::Body as _;
    let too_large = || {
        answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body exceeds {max} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut room = declared.map_or(CHUNKED_STEP.min(max.max(1)), |n| n as usize);
    let mut held: Held = vec![inflight.reserve(room.saturating_mul(factor)).await?];
    let mut out = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    let mut body = std::pin::pin!(body);
    loop {
        let frame = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await;
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| {
            if is_body_timeout(&e) {
                answer(StatusCode::REQUEST_TIMEOUT, e.to_string())
            } else {
                answer(StatusCode::BAD_REQUEST, format!("reading the body: {e}"))
            }
        })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if out.len() + data.len() > max {
            return Err(too_large());
        }
        out.extend_from_slice(&data);
        if out.len() > room {
            let more = (out.len() - room)
                .max(CHUNKED_STEP)
                .min(max - room.min(max))
                .max(1);
            held.push(inflight.take_now(more.saturating_mul(factor))?);
            room += more;
        }
    }
    Ok(Limited {
        bytes: Bytes::from(out),
        held,
    })
}
