//! Serving the router ([`serve`]): an accept loop over hyper's HTTP/1 connection builder, with
//! the limits of `[server]` ([`crate::ServerConfig`]) and the write-stall guard of `[api]`.
//!
//! - **Header read timeout** (hyper's, on tokio's timer): a connection must deliver a complete
//!   request header within `header_read_timeout` of waiting for one — at connect, and again
//!   after every response on a kept-alive connection. The TLS handshake has the same bound.
//! - **Body timeout** ([`DeadlineBody`]): the whole body must arrive within
//!   `body_read_timeout` of the header, or the read fails and the request is answered 408.
//!   (tower-http's `TimeoutBody` restarts its timer on every frame, so a client trickling one
//!   byte at a time would never hit it.)
//! - **Keep-alive timeout**: a connection with no request in flight and nothing read for
//!   `keep_alive_timeout` after its last response is closed.
//! - **Write stalls** ([`StallGuard`]): a client that stops reading (an event stream nobody
//!   consumes) is disconnected after `api.write_stall_timeout`.
//! - **Connection limit**: at most `max_connections` at once; one more is closed at once
//!   (plain HTTP: after a best-effort `503`).
//! - **Graceful shutdown with a deadline**: stop accepting, end the event streams, close
//!   connections with no request in flight (idle, or half a header) at once, let the requests
//!   in flight finish; whatever is still open after `shutdown_timeout` (a request whose body
//!   trickles in, say) is closed.
//!
//! Hand-written rather than `axum::serve`, which exposes none of these limits.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use crate::config::ServerConfig;
use crate::state::ApiState;

/// The peer address of a connection (the `ConnectInfo` of requests served by [`serve`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// A stream whose writes fail with `TimedOut` when they make no progress for `limit`.
pub struct StallGuard<S> {
    inner: S,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> std::fmt::Debug for StallGuard<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StallGuard")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl<S> StallGuard<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
        }
    }

    fn on_write<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(v) => {
                self.stalled = None;
                Poll::Ready(v)
            }
            Poll::Pending => {
                let limit = self.limit;
                let timer = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        metrics::counter!(crate::metrics::HTTP_WRITE_STALLS).increment(1);
                        tracing::info!("closing a connection whose client stopped reading");
                        Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the client stopped reading",
                        )))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.on_write(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.on_write(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.on_write(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What a connection is doing, for its keep-alive timeout: requests in flight, whether one
/// was answered, and when it last read a byte or finished a request.
#[derive(Debug)]
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
    answered: AtomicBool,
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            answered: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// When the connection counts as idle for `limit`, if it has nothing in flight and
    /// answered at least one request (before the first, the header timeout rules).
    fn idle_deadline(&self, limit: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 || !self.answered.load(Ordering::Acquire) {
            return None;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        Some(self.start + last + limit)
    }
}

/// A request in flight on a connection (dropped when its response body ends or is dropped).
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.answered.store(true, Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_one();
    }
}

/// A stream that records its reads in an [`Activity`].
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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

/// The request body did not arrive within `server.body_read_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimeout(pub Duration);

/// A request body that fails with [`BodyTimeout`] once its deadline passes — a deadline for
/// the whole body, not per frame.
#[derive(Debug)]
pub struct DeadlineBody<B> {
    inner: B,
    limit: Duration,
    deadline: Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<B> DeadlineBody<B> {
    /// Wraps `inner`: it must end within `limit` from now.
    pub fn new(inner: B, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            deadline: Instant::now() + limit,
            timer: None,
        }
    }
}

impl<B> hyper::body::Body for DeadlineBody<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        let deadline = self.deadline;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                metrics::counter!(crate::metrics::HTTP_TIMEOUTS, "kind" => "body").increment(1);
                Poll::Ready(Some(Err(Box::new(BodyTimeout(self.limit)))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that holds its request's [`InFlight`] until it ends.
struct Answer {
    inner: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The service of one connection: the router, with the peer address, the body deadline and
/// the in-flight count.
#[derive(Clone)]
struct ConnService {
    router: Router,
    peer: SocketAddr,
    body_timeout: Duration,
    activity: Arc<Activity>,
}

impl hyper::service::Service<http::Request<Incoming>> for ConnService {
    type Response = http::Response<Answer>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.begin();
        let limit = self.body_timeout;
        let mut req = req.map(|b| {
            if hyper::body::Body::is_end_stream(&b) {
                Body::new(b)
            } else {
                Body::new(DeadlineBody::new(b, limit))
            }
        });
        req.extensions_mut()
            .insert(ConnectInfo(ClientAddr(self.peer)));
        let router = self.router.clone();
        Box::pin(async move {
            let res = router.oneshot(req).await?;
            Ok(res.map(|inner| Answer {
                inner,
                _in_flight: in_flight,
            }))
        })
    }
}

/// What every connection task shares.
struct Shared {
    router: Router,
    http: hyper::server::conn::http1::Builder,
    tls: Option<tokio_rustls::TlsAcceptor>,
    server: ServerConfig,
    write_stall: Duration,
    /// Finish what is in flight, then close.
    drain: CancellationToken,
    /// Close now.
    abort: CancellationToken,
}

/// An open connection: holds its slot of `max_connections` and counts itself in a gauge.
struct Open {
    _slot: OwnedSemaphorePermit,
    count: Arc<AtomicUsize>,
}

impl Open {
    fn new(slot: OwnedSemaphorePermit, count: Arc<AtomicUsize>) -> Self {
        let n = count.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!(crate::metrics::HTTP_CONNECTIONS).set(n as f64);
        Self { _slot: slot, count }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let n = self.count.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        metrics::gauge!(crate::metrics::HTTP_CONNECTIONS).set(n as f64);
    }
}

/// A connection over the limit: a best-effort 503 (plain HTTP only; never waits), then
/// closed.
fn refuse(tcp: TcpStream, plain: bool) {
    metrics::counter!(crate::metrics::HTTP_CONNECTIONS_REFUSED).increment(1);
    tracing::debug!("connection refused: server.max_connections reached");
    if plain {
        const BODY: &str = "too many connections; try again later\n";
        let head = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nretry-after: 5\r\nconnection: close\r\n\r\n{BODY}",
            BODY.len()
        );
        let _ = tcp.try_write(head.as_bytes());
    }
}

async fn connection(tcp: TcpStream, peer: SocketAddr, open: Open, shared: Arc<Shared>) {
    let _open = open;
    let activity = Arc::new(Activity::new());
    let io = Tracked {
        inner: StallGuard::new(tcp, shared.write_stall),
        activity: activity.clone(),
    };
    match &shared.tls {
        None => http(io, peer, activity, &shared).await,
        Some(acceptor) => {
            let handshake =
                tokio::time::timeout(shared.server.header_read_timeout, acceptor.accept(io));
            let tls = tokio::select! {
                r = handshake => r,
                () = shared.drain.cancelled() => return,
            };
            match tls {
                Ok(Ok(tls)) => http(tls, peer, activity, &shared).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => {
                    metrics::counter!(crate::metrics::HTTP_TIMEOUTS, "kind" => "tls_handshake")
                        .increment(1);
                    tracing::debug!(%peer, "TLS handshake timed out");
                }
            }
        }
    }
}

async fn http<I>(io: I, peer: SocketAddr, activity: Arc<Activity>, shared: &Shared)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = ConnService {
        router: shared.router.clone(),
        peer,
        body_timeout: shared.server.body_read_timeout,
        activity: activity.clone(),
    };
    let conn = shared.http.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let keep_alive = shared.server.keep_alive_timeout;
    let mut closing = false;
    loop {
        let idle = if closing {
            None
        } else {
            activity.idle_deadline(keep_alive)
        };
        let idle_timer = async move {
            match idle {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    if e.is_timeout() {
                        metrics::counter!(crate::metrics::HTTP_TIMEOUTS, "kind" => "header").increment(1);
                        tracing::debug!(%peer, "closed a connection that sent no complete request header in time");
                    } else {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
                return;
            }
            () = shared.abort.cancelled() => return,
            () = shared.drain.cancelled(), if !closing => {
                // No request in flight (idle, or half a header): nothing to finish.
                if activity.in_flight.load(Ordering::Acquire) == 0 {
                    return;
                }
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = activity.changed.notified() => {}
            () = idle_timer => {
                if activity.idle_deadline(keep_alive).is_some_and(|at| at <= Instant::now()) {
                    metrics::counter!(crate::metrics::HTTP_TIMEOUTS, "kind" => "keep_alive").increment(1);
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Serves the API on `listener` until `shutdown` resolves; then stops accepting, ends the
/// event streams, lets requests in flight finish and closes whatever is still open after
/// `server.shutdown_timeout`. The limits come from the state's `[server]` section.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let server = state.server().clone();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
        .keep_alive(true);
    let shared = Arc::new(Shared {
        router: crate::routes::router(state.clone()),
        http,
        tls: state.tls().cloned(),
        server: server.clone(),
        write_stall: state.config().write_stall_timeout,
        drain: CancellationToken::new(),
        abort: CancellationToken::new(),
    });
    let permits = Arc::new(Semaphore::new(server.max_connections));
    let open = Arc::new(AtomicUsize::new(0));
    let tasks = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => r,
        };
        let (tcp, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refuse(tcp, shared.tls.is_none());
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let open = Open::new(permit, open.clone());
        tasks.spawn(connection(tcp, peer, open, shared.clone()));
    }
    drop(listener);
    state.close_streams();
    shared.drain.cancel();
    tasks.close();
    if tokio::time::timeout(server.shutdown_timeout, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = tasks.len(),
            "closing the connections still open at the shutdown deadline"
        );
        shared.abort.cancel();
        tasks.wait().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    /// A writer that never accepts a byte.
    struct Stuck;

    impl AsyncWrite for Stuck {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Pending
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Pending
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_write_should_fail_after_the_limit() {
        let mut w = StallGuard::new(Stuck, Duration::from_secs(5));
        let started = tokio::time::Instant::now();
        let err = w.write_all(b"hello").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn progressing_writes_should_never_time_out() {
        let (mut a, mut b) = tokio::io::duplex(4);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 1];
            let mut n = 0;
            while n < 64 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                n += tokio::io::AsyncReadExt::read(&mut b, &mut buf)
                    .await
                    .unwrap();
            }
        });
        let mut w = StallGuard::new(&mut a, Duration::from_secs(3));
        // Each byte waits ~1 s for the reader: slower than the limit in total, never stalled
        // for the limit at once.
        w.write_all(&[7u8; 64]).await.unwrap();
        reader.await.unwrap();
    }

    /// A body that yields one byte per second, forever.
    struct Trickle(Option<Pin<Box<Sleep>>>);

    impl hyper::body::Body for Trickle {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            let t = self
                .0
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::from_secs(1))));
            match t.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.0 = None;
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))))
                }
                Poll::Pending => Poll::Pending,
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickling_body_should_fail_at_its_deadline_though_every_frame_is_on_time() {
        let started = Instant::now();
        let body = Body::new(DeadlineBody::new(
            Trickle(None),
            Duration::from_millis(5500),
        ));
        let err = axum::body::to_bytes(body, 1 << 20).await.unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_millis(5500));
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&err);
        let mut found = false;
        while let Some(c) = cause {
            found |= c.is::<BodyTimeout>();
            cause = c.source();
        }
        assert!(found, "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_keep_alive_clock_should_start_only_after_an_answer() {
        let a = Arc::new(Activity::new());
        let limit = Duration::from_secs(5);
        assert_eq!(a.idle_deadline(limit), None, "before the first request");
        let req = a.begin();
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(a.idle_deadline(limit), None, "a request is in flight");
        drop(req);
        assert_eq!(
            a.idle_deadline(limit),
            Some(Instant::now() + limit),
            "idle from the end of the answer"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        a.touch();
        assert_eq!(a.idle_deadline(limit), Some(Instant::now() + limit));
    }
}
