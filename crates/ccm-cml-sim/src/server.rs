//! Sockets: one listener per worker, its accept loop, and the HTTP/1.1 connections (hyper)
//! with fault injection wrapped around the shared router; with `http2` (and `tls`), HTTP/2
//! connections too when the client picks `h2` by ALPN, as CML's nginx offers it.
//!
//! Faults that belong to the transport live here: refused connections (the listener is
//! closed while a worker is down), connection resets (the socket is closed with SO_LINGER 0,
//! which sends RST), blackholes (the request future never completes; it holds no thread and
//! spins no loop), slow bodies and malformed bodies.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rand::Rng;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::cml_error::CmlError;
use crate::endpoint::Endpoint;
use crate::faults::{EndpointFaults, RedirectFault};
use crate::worker::Worker;

/// How long a closing connection may finish its in-flight request at shutdown.
const GRACE: Duration = Duration::from_millis(500);
/// TLS handshake deadline.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds a listener with SO_REUSEADDR (so that a powered-off worker can bind again at once).
pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Accepts connections for one worker until shutdown, closing the listener while the worker
/// is down and binding it again when it comes back.
pub(crate) async fn accept_loop(
    worker: Arc<Worker>,
    listener: TcpListener,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let mut power = worker.power();
    let mut listener = Some(listener);
    loop {
        let state = *power.borrow_and_update();
        if !state.up {
            listener = None;
            tokio::select! {
                changed = power.changed() => if changed.is_err() { return },
                () = shutdown.cancelled() => return,
            }
            continue;
        }
        let Some(l) = listener.as_ref() else {
            match bind(worker.addr) {
                Ok(l) => listener = Some(l),
                Err(e) => {
                    tracing::warn!(sim_worker = worker.index, addr = %worker.addr, error = %e,
                        "cannot listen again after power-on; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = shutdown.cancelled() => return,
                    }
                }
            }
            continue;
        };
        tokio::select! {
            accepted = l.accept() => match accepted {
                Ok((stream, _)) => {
                    worker.count_connection();
                    let w = worker.clone();
                    let s = shutdown.clone();
                    tracker.spawn(serve_connection(w, stream, state.epoch, s));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::debug!(sim_worker = worker.index, error = %e, "accept failed");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(50)) => {}
                        () = shutdown.cancelled() => return,
                    }
                }
            },
            changed = power.changed() => if changed.is_err() { return },
            () = shutdown.cancelled() => return,
        }
    }
}

/// A socket that can be told to die with a reset.
pub(crate) trait TcpBacked {
    fn tcp(&self) -> &TcpStream;
}

impl TcpBacked for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl TcpBacked for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// Per-connection control: a request handler sets `killed` and notifies; the connection task
/// then drops the connection, and the stream's `Drop` turns the close into a reset.
#[derive(Default)]
struct ConnCtl {
    killed: AtomicBool,
    kill: Notify,
}

impl ConnCtl {
    fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        self.kill.notify_one();
    }
}

struct KillableIo<S: TcpBacked> {
    inner: S,
    ctl: Arc<ConnCtl>,
}

impl<S: TcpBacked> Drop for KillableIo<S> {
    fn drop(&mut self) {
        if self.ctl.killed.load(Ordering::SeqCst) {
            // SO_LINGER 0: close() sends RST instead of FIN.
            let _ = self.inner.tcp().set_zero_linger();
        }
    }
}

impl<S: TcpBacked + AsyncRead + Unpin> AsyncRead for KillableIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: TcpBacked + AsyncWrite + Unpin> AsyncWrite for KillableIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
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
}

async fn serve_connection(
    worker: Arc<Worker>,
    stream: TcpStream,
    epoch: u64,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    // A flapping worker in its down half resets new connections at once.
    if let Some(f) = worker.faults()
        && worker.in_flap_down(&f)
    {
        let _ = stream.set_zero_linger();
        return;
    }
    match worker.shared.tls.clone() {
        None => serve_io(worker, stream, epoch, shutdown, false).await,
        Some(tls) => {
            let acceptor = match tls.acceptor(worker.index) {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(sim_worker = worker.index, error = %e, "no tls acceptor");
                    return;
                }
            };
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
            let (tls_stream, h2) = tokio::select! {
                r = handshake => match r {
                    Ok(Ok(s)) => {
                        let resumed = s.get_ref().1.handshake_kind()
                            == Some(rustls::HandshakeKind::Resumed);
                        worker.count_tls_handshake(resumed);
                        let h2 = s.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                        (s, h2)
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(sim_worker = worker.index, error = %e, "tls handshake failed");
                        return;
                    }
                    Err(_) => return,
                },
                () = shutdown.cancelled() => return,
            };
            if h2 {
                worker.count_h2_connection();
            }
            serve_io(worker, tls_stream, epoch, shutdown, h2).await;
        }
    }
}

async fn serve_io<S>(worker: Arc<Worker>, io: S, epoch: u64, shutdown: CancellationToken, h2: bool)
where
    S: TcpBacked + AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ctl = Arc::new(ConnCtl::default());
    let io = TokioIo::new(KillableIo {
        inner: io,
        ctl: ctl.clone(),
    });
    let service = ConnService {
        worker: worker.clone(),
        ctl: ctl.clone(),
    };
    if h2 {
        let conn = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .serve_connection(io, service);
        drive(conn, &worker, &ctl, epoch, &shutdown).await;
    } else {
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .keep_alive(true)
            .serve_connection(io, service);
        drive(conn, &worker, &ctl, epoch, &shutdown).await;
    }
}

/// A hyper server connection that can be asked to finish its requests and close.
trait Graceful: Future {
    fn graceful(self: Pin<&mut Self>);
}

impl<I, S> Graceful for http1::Connection<I, S>
where
    Self: Future,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<Incoming>,
    S::ResBody: hyper::body::Body + 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, E> Graceful for http2::Connection<I, S, E>
where
    Self: Future,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<Incoming>,
    S::ResBody: hyper::body::Body + 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Runs one connection until it ends, a handler kills it, the worker powers off or restarts,
/// or the fleet shuts down (then in-flight requests get [`GRACE`] to finish).
async fn drive<C: Graceful>(
    conn: C,
    worker: &Worker,
    ctl: &ConnCtl,
    epoch: u64,
    shutdown: &CancellationToken,
) {
    let mut conn = std::pin::pin!(conn);
    let mut power = worker.power();
    tokio::select! {
        _ = conn.as_mut() => {}
        () = ctl.kill.notified() => {}
        () = async { let _ = power.wait_for(|p| !p.up || p.epoch != epoch).await; } => ctl.kill(),
        () = shutdown.cancelled() => {
            conn.as_mut().graceful();
            let _ = tokio::time::timeout(GRACE, conn.as_mut()).await;
        }
    }
}

/// The hyper service of one connection: counts, injects faults, then calls the router.
#[derive(Clone)]
struct ConnService {
    worker: Arc<Worker>,
    ctl: Arc<ConnCtl>,
}

type BoxFut = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFut;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let worker = self.worker.clone();
        let ctl = self.ctl.clone();
        Box::pin(async move { Ok(handle(worker, ctl, req).await) })
    }
}

fn roll(rate: Option<f64>) -> bool {
    match rate {
        Some(r) if r >= 1.0 => true,
        Some(r) if r > 0.0 => rand::rng().random_bool(r),
        _ => false,
    }
}

fn jittered(base: Duration, jitter: Duration) -> Duration {
    if jitter.is_zero() {
        return base;
    }
    let extra = rand::rng().random_range(0..=jitter.as_micros().min(u128::from(u64::MAX)) as u64);
    base + Duration::from_micros(extra)
}

async fn handle(
    worker: Arc<Worker>,
    ctl: Arc<ConnCtl>,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let endpoint = Endpoint::classify(req.method(), req.uri().path());
    worker.count_request(endpoint);
    worker.count_agent(
        req.headers()
            .get(http::header::USER_AGENT)
            .map(|v| v.as_bytes()),
    );
    let _answering = worker.enter(endpoint);
    let cfg = &worker.shared.config;
    let faults = worker.faults();
    let ef: Option<EndpointFaults> = faults.as_ref().map(|f| f.for_endpoint(endpoint));

    if let Some(f) = &faults
        && worker.in_flap_down(f)
    {
        return die(&ctl).await;
    }
    let mut delay = jittered(cfg.latency, cfg.jitter);
    if let Some(l) = ef.as_ref().and_then(|e| e.latency) {
        delay += jittered(l.base, l.jitter);
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(ef) = &ef {
        if ef.older {
            return error_response(CmlError::not_found(format!(
                "Not found: this CML release has no {} endpoint",
                endpoint.name()
            )));
        }
        if roll(ef.reset) {
            return die(&ctl).await;
        }
        if roll(ef.blackhole) {
            // Never answer; the connection task drops this future at shutdown.
            return std::future::pending().await;
        }
        if let Some(e) = ef.error
            && roll(Some(e.rate))
        {
            let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let text = status.canonical_reason().unwrap_or("Simulated failure");
            return error_response(CmlError::new(status, format!("Simulated fault: {text}")));
        }
        if let Some(r) = &ef.redirect {
            return redirect_response(r);
        }
    }
    if endpoint.needs_auth() && worker.take_fail_401() {
        return error_response(CmlError::unauthorized());
    }

    req.extensions_mut().insert(worker.clone());
    let router = worker.shared.router.clone();
    let resp = match router.oneshot(req.map(Body::new)).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let close = ef.as_ref().is_some_and(|ef| roll(ef.close));
    let mut resp = match ef {
        Some(ef) if ef.malformed.is_some() || ef.slow_body.is_some() => {
            let malformed = roll(ef.malformed);
            reshape(resp, malformed, ef.slow_body).await
        }
        _ => resp,
    };
    if close {
        // hyper closes an HTTP/1.1 connection after an answer that says so (HTTP/2 has no
        // such header: the fault does nothing there).
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

async fn die(ctl: &ConnCtl) -> Response<Body> {
    ctl.kill();
    std::future::pending().await
}

fn error_response(e: CmlError) -> Response<Body> {
    axum::response::IntoResponse::into_response(e)
}

/// The `redirect` fault: the status with `Location` and, like every non-2xx answer, a
/// `{code, description}` body.
fn redirect_response(r: &RedirectFault) -> Response<Body> {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::TEMPORARY_REDIRECT);
    let mut resp = error_response(CmlError::new(status, "Simulated fault: redirect"));
    // The grammar admits visible ASCII only, so the header value is always valid.
    if let Ok(v) = HeaderValue::from_str(&r.location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Cuts the body in half (malformed JSON) and/or sends it slowly.
async fn reshape(resp: Response<Body>, malformed: bool, slow: Option<Duration>) -> Response<Body> {
    if !malformed && slow.is_none() {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(mut bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return Response::from_parts(parts, Body::empty());
    };
    if malformed && bytes.len() > 1 {
        bytes.truncate(bytes.len() / 2);
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    let Some(total) = slow else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    if let Ok(v) = HeaderValue::from_str(&bytes.len().to_string()) {
        parts.headers.insert(header::CONTENT_LENGTH, v);
    }
    const PIECES: usize = 10;
    let piece = bytes.len().div_ceil(PIECES).max(1);
    let pause = total / PIECES as u32;
    let chunks: Vec<Bytes> = (0..bytes.len())
        .step_by(piece)
        .map(|start| bytes.slice(start..(start + piece).min(bytes.len())))
        .collect();
    let stream = futures::stream::unfold(chunks.into_iter(), move |mut it| async move {
        let next = it.next()?;
        tokio::time::sleep(pause).await;
        Some((Ok::<Bytes, Infallible>(next), it))
    });
    Response::from_parts(parts, Body::from_stream(stream))
}
