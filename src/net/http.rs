//! hearth's HTTPS listener (issue 20): XEP-0363 uploads and downloads, XEP-0156
//! host-meta, and the RFC 7395 WebSocket endpoint, on port 5443 with the c2s certificate.
//!
//! HTTP/1.1 is hyper's (`http1` + `server` only; it compiles the tokio crate for its
//! `sync` primitives, no runtime) over `smol-hyper`'s adapters, so the futures-rustls
//! acceptor and the smol executor stay the only ones. What a stranger can cost is
//! bounded: connections by the same admission rules as c2s (its own counts), a request
//! head of at most [`MAX_HEAD_BYTES`] read within [`HEAD_TIMEOUT`], a connection with
//! no byte in or out for [`IDLE_TIMEOUT`] closed, an upload body that stalls for as long
//! cut, requests per connection rate-limited ([`REQUESTS_PER_SEC`], 429 beyond); and
//! nothing but a token lookup before a slot's owner is known.
//!
//! `GET /xmpp-websocket` with an RFC 7395 handshake is answered 101, and the connection
//! (with what hyper read past the request) goes to [`super::websocket`] as a `[websocket]`
//! listener's would, in the same task and admission slot. Every other connection ends
//! with a lingering close (RFC 9112 §9.6, [`linger`]), so that an answer sent before the
//! request was read to its end (431, 413) is not lost to a reset.

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_rustls::TlsAcceptor;
use futures_rustls::server::TlsStream;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use smol::future::FutureExt as _;
use smol::io::{AsyncRead, AsyncWrite};
use smol::{Async, Executor, Timer};
use smol_hyper::rt::{FuturesIo, SmolTimer};

use super::Shared;
use super::limits::Admission;
use super::listen::OpenConnection;
use crate::features::upload::files::{CHUNK_BYTES, Download, Failure, READ_AHEAD, Uploads};

/// The largest request head (request line and headers) read; hyper answers 431 past it.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// A request head must arrive within this long.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with no byte read or written for this long is closed (an upload or a
/// download that stalls included).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The TLS handshake must be done within this long.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests per second one connection may make, after a burst of [`REQUEST_BURST`]
/// (a web client loading a chat's photos); beyond, 429: each request may cost a
/// storage lookup, and keep-alive would otherwise let one connection ask without end.
pub const REQUESTS_PER_SEC: f64 = 20.0;
/// See [`REQUESTS_PER_SEC`].
pub const REQUEST_BURST: f64 = 60.0;

/// The XEP-0156 link relation of RFC 7395 WebSocket endpoints.
pub const REL_WEBSOCKET: &str = "urn:xmpp:alt-connections:websocket";

/// The response body: a small text or document, or a file streamed from disk.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// What the listener serves.
pub struct Http {
    /// URLs start with this (`https://<domain>:5443` or `[http] public_url`), no
    /// trailing slash.
    pub base_url: String,
    /// The uploads, when `[upload]` is on.
    pub uploads: Option<Arc<Uploads>>,
    /// The `[websocket]` listeners' URLs for XEP-0156 (see [`websocket_listener_url`]),
    /// announced after this listener's own `/xmpp-websocket`.
    pub websocket_listener_urls: Vec<String>,
    /// Connection limits of the HTTP listener (counted apart from c2s's); a WebSocket
    /// session upgraded here keeps its connection's slot.
    pub admission: Admission,
    /// For the tasks that read a download ahead.
    pub ex: Arc<Executor<'static>>,
}

impl Http {
    /// The WebSocket endpoint XEP-0156 announces: the base URL with `wss` (`ws` for an
    /// `http` public URL) and `/xmpp-websocket`.
    pub fn websocket_url(&self) -> String {
        let rest = self
            .base_url
            .strip_prefix("https://")
            .map(|r| format!("wss://{r}"))
            .or_else(|| {
                self.base_url
                    .strip_prefix("http://")
                    .map(|r| format!("ws://{r}"))
            })
            .unwrap_or_else(|| self.base_url.clone());
        format!("{rest}/xmpp-websocket")
    }
}

/// The default base URL: the domain on the listener's port (a `.local` domain is what
/// phones on the LAN resolve by mDNS, and what the generated certificate names).
pub fn default_base_url(domain: &str, port: u16) -> String {
    if port == 443 {
        format!("https://{domain}")
    } else {
        format!("https://{domain}:{port}")
    }
}

/// The URL XEP-0156 announces for a `[websocket]` listener on `port`: `wss://` with the
/// domain (any path serves there; RFC 7395 §3.1 leaves the path to the server). A plain
/// listener is for a TLS proxy on the same host, whose public URL hearth does not know:
/// none.
pub fn websocket_listener_url(domain: &str, port: u16, is_tls: bool) -> Option<String> {
    is_tls.then(|| format!("wss://{domain}:{port}/xmpp-websocket"))
}

/// Accepts HTTPS connections on `listener` for as long as the executor runs.
#[allow(clippy::too_many_arguments)]
pub fn accept(
    ex: &Arc<Executor<'static>>,
    listener: Async<TcpListener>,
    addr: SocketAddr,
    shared: &Arc<Shared>,
    http: &Arc<Http>,
    live: &Arc<AtomicUsize>,
    next_id: &Arc<AtomicU64>,
) {
    log::info!("listening for HTTPS on {addr} (uploads, host-meta, WebSocket)");
    let shared = shared.clone();
    let http = http.clone();
    let ex2 = ex.clone();
    let live = live.clone();
    let next_id = next_id.clone();
    ex.spawn(async move {
        loop {
            match listener.accept().await {
                Ok((tcp, peer)) => {
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    let slot = match http.admission.admit(peer.ip(), Instant::now()) {
                        Ok(slot) => slot,
                        Err(why) => {
                            if http
                                .admission
                                .log_refusal(peer.ip(), Instant::now())
                                .is_some()
                            {
                                log::info!("http{id}: refused {peer}: {why}");
                            }
                            continue;
                        }
                    };
                    log::debug!("http{id}: connection from {peer}");
                    let token = OpenConnection::new(&live);
                    let shared = shared.clone();
                    let http = http.clone();
                    ex2.spawn(async move {
                        // An upgraded WebSocket session runs inside `serve`: the slot
                        // and the count are held until it ends.
                        serve(&shared, http, tcp, peer, id).await;
                        drop(slot);
                        drop(token);
                    })
                    .detach();
                }
                Err(e) => {
                    log::warn!("accept on {addr} failed: {e}");
                    Timer::after(Duration::from_millis(100)).await;
                }
            }
        }
    })
    .detach();
}

/// What ended a connection's HTTP/1.1 part.
enum Ended {
    /// hyper's connection future returned: the peer closed, an error, a refused head (431),
    /// a response with `Connection: close`, or a 101 (see [`Pending`]).
    Served,
    /// No byte either way for [`IDLE_TIMEOUT`].
    Idle,
    /// The server is stopping.
    Stopped,
}

/// The upgrade a 101 answer promised (RFC 7395 §3.1): hyper's connection future ends
/// after the 101 is sent, and `serve` then takes the connection back from here and runs
/// the WebSocket session on it, inside the same task, so the admission slot and the
/// open-connection count stay held for as long as the session lasts.
type Pending = Arc<std::sync::Mutex<Option<hyper::upgrade::OnUpgrade>>>;

/// The transport hyper serves: TLS over TCP with its clock, in smol-hyper's adapter.
/// [`hyper::upgrade::Upgraded::downcast`] gets it back after a 101.
type Transport = FuturesIo<Tracked<TlsStream<Async<TcpStream>>>>;

/// One connection: TLS, then HTTP/1.1 requests until the peer, a timeout or shutdown
/// ends it, or an RFC 7395 WebSocket upgrade hands it to
/// [`websocket::serve_upgraded_after`](super::websocket::serve_upgraded_after).
async fn serve(
    shared: &Arc<Shared>,
    http: Arc<Http>,
    tcp: Async<TcpStream>,
    peer: SocketAddr,
    id: u64,
) {
    // A second handle on the socket, to close it gently after the last response (see
    // `linger`): hyper drops its transport when it is done with it.
    let raw = tcp.get_ref().try_clone().ok();
    // The set-up the handshake used, for the session's channel bindings after an upgrade
    // (a certificate reload in between must not change what `tls-server-end-point` hashes).
    let setup = shared.tls();
    let acceptor = TlsAcceptor::from(setup.config().clone());
    let accept = Box::pin(acceptor.accept(tcp));
    let tls = match async { Some(accept.await) }
        .or(async {
            Timer::after(HANDSHAKE_TIMEOUT).await;
            None
        })
        .await
    {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            log::debug!("http{id}: {peer} TLS handshake failed: {e}");
            return;
        }
        None => {
            log::debug!("http{id}: {peer} TLS handshake timed out");
            return;
        }
    };
    let started = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let io: Transport = FuturesIo::new(Tracked {
        inner: tls,
        started,
        last: last.clone(),
    });
    let bucket = Arc::new(std::sync::Mutex::new(super::limits::TokenBucket::new(
        REQUESTS_PER_SEC,
        REQUEST_BURST,
        Instant::now(),
    )));
    let pending: Pending = Arc::default();
    let service = {
        let pending = pending.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let http = http.clone();
            let pending = pending.clone();
            let allowed = bucket
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .try_take(1.0, Instant::now());
            async move {
                if !allowed {
                    let mut r = text(StatusCode::TOO_MANY_REQUESTS, "too many requests");
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    if has_body(&req) {
                        close_after(&mut r);
                    }
                    return Ok::<_, Infallible>(r);
                }
                Ok::<_, Infallible>(route(&http, req, &pending, id).await)
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(SmolTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(64)
        .serve_connection(io, service)
        .with_upgrades();
    let idle = async {
        loop {
            Timer::after(Duration::from_secs(5)).await;
            let now = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let idle_ms = now.saturating_sub(last.load(Ordering::Relaxed));
            if idle_ms > IDLE_TIMEOUT.as_millis() as u64 {
                log::debug!("http{id}: {peer} idle, closed");
                return Ended::Idle;
            }
        }
    };
    let stop = async {
        let _ = shared.shutdown_rx.recv().await;
        Ended::Stopped
    };
    let ended = async {
        if let Err(e) = conn.await {
            log::debug!("http{id}: {peer}: {e}");
        }
        Ended::Served
    }
    .or(idle)
    .or(stop)
    .await;
    let upgrade = pending.lock().unwrap_or_else(|e| e.into_inner()).take();
    match (ended, upgrade) {
        (Ended::Served, Some(upgrade)) => {
            serve_websocket(shared.clone(), upgrade, &setup, peer, id).await;
        }
        (Ended::Served | Ended::Idle, None) => {
            if let Some(raw) = raw {
                linger(raw).await;
            }
        }
        // Stopping, or a 101 that was never sent: the connection just closes.
        (_, _) => {}
    }
}

/// After a 101: the connection back from hyper, with the bytes it read past the request
/// (frames from a client that did not wait for the 101 as RFC 6455 §4.1 asks: not lost),
/// and the RFC 7395 session on it as the `[websocket]` listener runs it: wss://, with
/// the TLS session's channel bindings.
async fn serve_websocket(
    shared: Arc<Shared>,
    upgrade: hyper::upgrade::OnUpgrade,
    setup: &super::tls::TlsSetup,
    peer: SocketAddr,
    id: u64,
) {
    // Fulfilled (or dropped) already: hyper's connection future returned.
    let upgraded = async { Some(upgrade.await) }
        .or(async {
            Timer::after(HANDSHAKE_TIMEOUT).await;
            None
        })
        .await;
    let parts = match upgraded.map(|u| u.map(|u| u.downcast::<Transport>())) {
        Some(Ok(Ok(parts))) => parts,
        Some(Ok(Err(_))) => {
            log::warn!("http{id}: {peer} upgraded on a transport of another type");
            return;
        }
        Some(Err(e)) => {
            log::debug!("http{id}: {peer} upgrade failed: {e}");
            return;
        }
        None => {
            log::debug!("http{id}: {peer} upgrade timed out");
            return;
        }
    };
    // From here the session keeps its own clocks (c2s's): the HTTP idle clock goes.
    let tls = parts.io.into_inner().inner;
    let leftover = parts.read_buf.to_vec();
    let bindings = setup.channel_bindings(tls.get_ref().1);
    log::debug!(
        "http{id}: {peer} upgraded to XMPP over WebSocket ({} bytes read ahead)",
        leftover.len()
    );
    super::websocket::serve_upgraded_after(shared, tls, leftover, peer, Some(bindings), id).await;
}

/// How long, and how many bytes at most, [`linger`] reads after the last response.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// See [`CLOSE_GRACE`].
const CLOSE_GRACE_BYTES: usize = 256 * 1024;

/// RFC 9112 §9.6: after the last response, stop sending and read (and drop) what the
/// client still sends, for a little while ([`CLOSE_GRACE`], [`CLOSE_GRACE_BYTES`]), so
/// that closing with its input unread does not reset the connection before it has read
/// the answer (a 431 to a head too large, a 413 to an upload whose body is still on its
/// way).
async fn linger(raw: TcpStream) {
    use smol::io::AsyncReadExt as _;
    // hyper has sent TLS's close_notify and shut the write side already, unless the
    // connection failed; a second shutdown is harmless, an error means it is gone.
    if raw.shutdown(std::net::Shutdown::Write).is_err() {
        return;
    }
    let Ok(raw) = Async::new(raw) else {
        return;
    };
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut total = 0;
        while total < CLOSE_GRACE_BYTES {
            match (&raw).read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    drain
        .or(async {
            Timer::after(CLOSE_GRACE).await;
        })
        .await;
}

/// Whether a request came with a body (RFC 9112 §6.3).
fn has_body<B>(req: &Request<B>) -> bool {
    let h = req.headers();
    h.contains_key(header::TRANSFER_ENCODING)
        || h.get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
}

/// A response sent while the request's body is unread: the connection closes after it
/// (RFC 9112 §9.6), rather than read past the body to the next request; hyper honours
/// the header.
fn close_after(r: &mut Response<Body>) {
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
}

/// The TLS stream, noting when a byte last went either way (for [`IDLE_TIMEOUT`]).
struct Tracked<S> {
    inner: S,
    started: Instant,
    /// Milliseconds after `started`.
    last: Arc<AtomicU64>,
}

impl<S> Tracked<S> {
    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// A response with a short text body.
fn text(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(full(format!("{msg}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn failure(f: Failure) -> Response<Body> {
    text(
        StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        f.reason,
    )
}

/// CORS, as Prosody's `mod_http_file_share` sends it: any origin may fetch and upload
/// (the token is the capability), for web clients such as Converse.js.
fn with_cors(mut r: Response<Body>) -> Response<Body> {
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, PUT, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type, Content-Length, Authorization"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("7200"),
    );
    r
}

/// A CORS preflight (`OPTIONS`) answer.
fn preflight() -> Response<Body> {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    with_cors(r)
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here");
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// Dispatches a request by path.
async fn route(
    http: &Arc<Http>,
    req: Request<Incoming>,
    pending: &Pending,
    id: u64,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    log::debug!("http{id}: {} {}", req.method(), loggable(&path));
    match path.as_str() {
        "/.well-known/host-meta" | "/.well-known/host-meta.json" => {
            let json = path.ends_with(".json");
            match *req.method() {
                Method::GET | Method::HEAD => with_cors(host_meta(http, json)),
                Method::OPTIONS => preflight(),
                _ => with_cors(method_not_allowed("GET, HEAD, OPTIONS")),
            }
        }
        "/xmpp-websocket" => websocket_upgrade(req, pending),
        p if p.starts_with("/upload/") => {
            let Some(uploads) = &http.uploads else {
                return text(StatusCode::NOT_FOUND, "uploads are off on this server");
            };
            let token = p["/upload/".len()..].split('/').next().unwrap_or("");
            let token = token.to_owned();
            with_cors(match *req.method() {
                Method::PUT => {
                    let has_body = has_body(&req);
                    let (mut r, body) = put(uploads, &token, req, id).await;
                    if body == RequestBody::Unread && has_body {
                        close_after(&mut r);
                    }
                    r
                }
                Method::GET | Method::HEAD => get(http, uploads, &token, &req).await,
                Method::OPTIONS => return preflight(),
                _ => method_not_allowed("GET, HEAD, PUT, OPTIONS"),
            })
        }
        _ => text(StatusCode::NOT_FOUND, "not found"),
    }
}

/// A path for the log: an upload's token is a capability (whoever has it may fetch the
/// file), so only its first characters are logged, and the file name not at all.
fn loggable(path: &str) -> String {
    match path.strip_prefix("/upload/") {
        Some(rest) => format!("/upload/{}…", rest.get(..8).unwrap_or("")),
        None => path.to_owned(),
    }
}

/// XEP-0156 §3: the WebSocket endpoints as an XRD document (host-meta) or JRD
/// (host-meta.json), in order of preference: this listener's `/xmpp-websocket` first
/// (the port a web client already reached), then the `[websocket]` listeners'.
fn host_meta(http: &Http, json: bool) -> Response<Body> {
    let urls: Vec<String> = std::iter::once(http.websocket_url())
        .chain(http.websocket_listener_urls.iter().cloned())
        .collect();
    let (body, ty) = if json {
        let links: Vec<String> = urls
            .iter()
            .map(|url| {
                let esc = url.replace('\\', "\\\\").replace('"', "\\\"");
                format!("{{\"rel\":\"{REL_WEBSOCKET}\",\"href\":\"{esc}\"}}")
            })
            .collect();
        (
            format!("{{\"links\":[{}]}}\n", links.join(",")),
            "application/json",
        )
    } else {
        let mut links = String::new();
        for url in &urls {
            let mut esc = String::new();
            crate::xml::escape_attr(url, &mut esc);
            links.push_str(&format!("  <Link rel='{REL_WEBSOCKET}' href='{esc}'/>\n"));
        }
        (
            format!(
                "<?xml version='1.0' encoding='utf-8'?>\n\
                 <XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n{links}</XRD>\n"
            ),
            "application/xrd+xml",
        )
    };
    let mut r = Response::new(full(body));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ty));
    r
}

/// RFC 7395 §3.1: `GET /xmpp-websocket` with `Upgrade: websocket` and
/// `Sec-WebSocket-Protocol: xmpp` is answered 101 with `Sec-WebSocket-Accept` and
/// `Sec-WebSocket-Protocol: xmpp` (RFC 6455 §4.2.2); the upgrade is left in `pending`,
/// which `serve` takes once hyper's connection future has ended, to run the session.
/// Anything else gets the refusal of [`HandshakeRefusal`].
fn websocket_upgrade(mut req: Request<Incoming>, pending: &Pending) -> Response<Body> {
    let accept = match websocket_handshake(&req) {
        Ok(accept) => accept,
        Err(refusal) => return refusal.response(),
    };
    let Ok(accept) = HeaderValue::from_str(&accept) else {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "bad Sec-WebSocket-Accept",
        );
    };
    let upgrade = hyper::upgrade::on(&mut req);
    *pending.lock().unwrap_or_else(|e| e.into_inner()) = Some(upgrade);
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    h.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(crate::stream::websocket::SUBPROTOCOL),
    );
    r
}

/// Why a WebSocket handshake is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeRefusal {
    /// 426 with `Upgrade: websocket` and `Sec-WebSocket-Version: 13`: not a `GET` with
    /// `Upgrade: websocket` and `Connection: upgrade`, or another version than 13
    /// (RFC 6455 §4.2.2 and §4.4; RFC 9110 §15.5.22).
    UpgradeRequired,
    /// 400: no `Sec-WebSocket-Key` that is 16 bytes in base64 (RFC 6455 §4.2.1, item 5).
    NoKey,
    /// 400: `xmpp` not among the subprotocols (RFC 7395 §3.1: the server must not
    /// complete the handshake), as the `[websocket]` listener answers.
    NotXmpp,
}

impl HandshakeRefusal {
    /// The status of the answer.
    pub fn status(self) -> StatusCode {
        match self {
            Self::UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
            Self::NoKey | Self::NotXmpp => StatusCode::BAD_REQUEST,
        }
    }

    /// The answer: a short text, and for 426 what to upgrade to.
    fn response(self) -> Response<Body> {
        let msg = match self {
            Self::UpgradeRequired => "a WebSocket upgrade (version 13) is expected here",
            Self::NoKey => "Sec-WebSocket-Key is missing or malformed",
            Self::NotXmpp => {
                "XMPP over WebSocket needs the \"xmpp\" subprotocol (RFC 7395 section 3.1)"
            }
        };
        let mut r = text(self.status(), msg);
        if self == Self::UpgradeRequired {
            let h = r.headers_mut();
            h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            h.insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        r
    }
}

/// RFC 6455 §4.2.1 and RFC 7395 §3.1: checks an upgrade request for the `xmpp`
/// subprotocol; the `Sec-WebSocket-Accept` to answer with (RFC 6455 §4.2.2, from
/// [`accept_key`](super::websocket::accept_key)), or why not.
pub fn websocket_handshake<B>(req: &Request<B>) -> Result<String, HandshakeRefusal> {
    use base64::Engine as _;
    let h = req.headers();
    let values = |name: header::HeaderName| {
        h.get_all(name)
            .into_iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
    };
    let has = |name: header::HeaderName, token: &str| {
        values(name)
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if req.method() != Method::GET
        || !has(header::UPGRADE, "websocket")
        || !has(header::CONNECTION, "upgrade")
        || !has(header::SEC_WEBSOCKET_VERSION, "13")
    {
        return Err(HandshakeRefusal::UpgradeRequired);
    }
    let key = h
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|k| k.to_str().ok())
        .filter(|k| {
            base64::engine::general_purpose::STANDARD
                .decode(k.trim())
                .is_ok_and(|b| b.len() == 16)
        })
        .ok_or(HandshakeRefusal::NoKey)?;
    if !super::websocket::offers_xmpp_in(values(header::SEC_WEBSOCKET_PROTOCOL).into_iter()) {
        return Err(HandshakeRefusal::NotXmpp);
    }
    Ok(super::websocket::accept_key(key))
}

/// Whether a handler read the request body to its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RequestBody {
    Read,
    Unread,
}

/// XEP-0363 §5: the PUT of a slot's file, streamed to disk; whether its body was read
/// to the end.
async fn put(
    uploads: &Arc<Uploads>,
    token: &str,
    req: Request<Incoming>,
    id: u64,
) -> (Response<Body>, RequestBody) {
    let headers = req.headers();
    let content_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut file = match uploads
        .begin_put(token, content_length, content_type.as_deref())
        .await
    {
        Ok(f) => f,
        Err(f) => return (failure(f), RequestBody::Unread),
    };
    let mut body = req.into_body();
    loop {
        let frame = async { Some(body.frame().await) }
            .or(async {
                Timer::after(IDLE_TIMEOUT).await;
                None
            })
            .await;
        match frame {
            None => {
                let r = text(StatusCode::REQUEST_TIMEOUT, "the upload stalled");
                return (r, RequestBody::Unread);
            }
            Some(None) => break,
            Some(Some(Err(e))) => {
                log::debug!("http{id}: upload body: {e}");
                let r = text(StatusCode::BAD_REQUEST, "the upload was cut short");
                return (r, RequestBody::Unread);
            }
            Some(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if let Err(f) = file.write(data).await {
                        return (failure(f), RequestBody::Unread);
                    }
                }
            }
        }
    }
    let r = match file.finish().await {
        Ok(()) => {
            log::info!("http{id}: upload {}… stored", token.get(..8).unwrap_or(""));
            let mut r = text(StatusCode::CREATED, "stored");
            r.headers_mut().remove(header::CONTENT_TYPE);
            r
        }
        Err(f) => failure(f),
    };
    (r, RequestBody::Read)
}

/// What a `Range` header asks of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Range {
    /// No range, or a form not supported (several ranges: the whole file is sent, as
    /// RFC 9110 §14.2 allows).
    Whole,
    /// The half-open span `start..end`.
    Part(u64, u64),
    /// 416 (§15.5.17).
    Unsatisfiable,
}

/// A single `Range: bytes=…` (RFC 9110 §14.2) over a file of `len` bytes.
pub fn parse_range(value: &str, len: u64) -> Range {
    match range_span(value, len) {
        Ok(None) => Range::Whole,
        Ok(Some((s, e))) => Range::Part(s, e),
        Err(()) => Range::Unsatisfiable,
    }
}

#[allow(clippy::result_unit_err)]
fn range_span(value: &str, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let num = |s: &str| s.trim().parse::<u64>().ok();
    let span = match (a.trim().is_empty(), b.trim().is_empty()) {
        (true, false) => {
            let n = num(b).ok_or(())?;
            if n == 0 {
                return Err(());
            }
            (len.saturating_sub(n), len)
        }
        (false, true) => (num(a).ok_or(())?, len),
        (false, false) => {
            let (s, e) = (num(a).ok_or(())?, num(b).ok_or(())?);
            if e < s {
                return Err(());
            }
            (s, e.saturating_add(1).min(len))
        }
        (true, true) => return Ok(None),
    };
    if span.0 >= len {
        return Err(());
    }
    Ok(Some(span))
}

/// XEP-0363 §5: a stored file, with its type, a safe disposition and no sniffing.
async fn get(
    http: &Http,
    uploads: &Arc<Uploads>,
    token: &str,
    req: &Request<Incoming>,
) -> Response<Body> {
    let Download { file, len, row } = match uploads.open_get(token).await {
        Ok(d) => d,
        Err(f) => return failure(f),
    };
    let etag = format!("\"{token}\"");
    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, row.content_type.as_str())
        .header(
            header::CONTENT_DISPOSITION,
            crate::features::upload::files::content_disposition(&row.filename, &row.content_type),
        )
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        )
        .header(header::ETAG, etag.as_str())
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CACHE_CONTROL, "private, max-age=86400, immutable");
    if req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        return builder
            .status(StatusCode::NOT_MODIFIED)
            .body(full(Bytes::new()))
            .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "bad header"));
    }
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map_or(Range::Whole, |v| parse_range(v, len));
    let (start, end) = match range {
        Range::Part(s, e) => {
            builder = builder
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, format!("bytes {s}-{}/{len}", e - 1));
            (s, e)
        }
        Range::Whole => (0, len),
        Range::Unsatisfiable => {
            let mut r = text(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    builder = builder.header(header::CONTENT_LENGTH, end - start);
    let body = if req.method() == Method::HEAD || start == end {
        full(Bytes::new())
    } else {
        let (tx, rx) = async_channel::bounded::<Result<Frame<Bytes>, std::io::Error>>(READ_AHEAD);
        let uploads = uploads.clone();
        http.ex
            .spawn(async move {
                let mut at = start;
                while at < end {
                    let want = usize::try_from(end - at)
                        .unwrap_or(CHUNK_BYTES)
                        .min(CHUNK_BYTES);
                    let chunk = match uploads.read_at(&file, at, want).await {
                        Ok(b) if b.is_empty() => Err(std::io::ErrorKind::UnexpectedEof.into()),
                        other => other,
                    };
                    let failed = chunk.is_err();
                    if let Ok(b) = &chunk {
                        at += b.len() as u64;
                    }
                    // The connection went away: stop reading.
                    if tx
                        .send(chunk.map(|b| Frame::data(Bytes::from(b))))
                        .await
                        .is_err()
                        || failed
                    {
                        break;
                    }
                }
            })
            .detach();
        StreamBody::new(rx).boxed()
    };
    builder
        .body(body)
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "bad header"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use Range::*;
        assert_eq!(parse_range("bytes=0-9", 100), Part(0, 10));
        assert_eq!(parse_range("bytes=90-", 100), Part(90, 100));
        assert_eq!(parse_range("bytes=-10", 100), Part(90, 100));
        assert_eq!(parse_range("bytes=-1000", 100), Part(0, 100));
        assert_eq!(parse_range("bytes=50-1000", 100), Part(50, 100));
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=9-3", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=x-3", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Whole);
        assert_eq!(parse_range("items=0-1", 100), Whole);
    }

    /// RFC 6455 §1.3's example key and answer; RFC 7395 §3.1's subprotocol.
    #[test]
    fn websocket_handshake_per_rfc_6455_and_7395() {
        let req = |method: Method, key: Option<&str>, proto: &str, version: &str| {
            let mut b = Request::builder()
                .method(method)
                .uri("/xmpp-websocket")
                .header("Upgrade", "websocket")
                .header("Connection", "keep-alive, Upgrade")
                .header("Sec-WebSocket-Version", version)
                .header("Sec-WebSocket-Protocol", proto);
            if let Some(key) = key {
                b = b.header("Sec-WebSocket-Key", key);
            }
            b.body(()).unwrap()
        };
        let key = Some("dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(
            websocket_handshake(&req(Method::GET, key, "chat, xmpp", "13")).as_deref(),
            Ok("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
        for (method, key, proto, version, refusal) in [
            (Method::GET, key, "chat", "13", HandshakeRefusal::NotXmpp),
            (
                Method::GET,
                key,
                "xmpp-framing",
                "13",
                HandshakeRefusal::NotXmpp,
            ),
            (
                Method::GET,
                key,
                "xmpp",
                "8",
                HandshakeRefusal::UpgradeRequired,
            ),
            (
                Method::POST,
                key,
                "xmpp",
                "13",
                HandshakeRefusal::UpgradeRequired,
            ),
            (Method::GET, None, "xmpp", "13", HandshakeRefusal::NoKey),
            // Eight bytes, not sixteen.
            (
                Method::GET,
                Some("c2hvcnQ="),
                "xmpp",
                "13",
                HandshakeRefusal::NoKey,
            ),
            (
                Method::GET,
                Some("not base64!"),
                "xmpp",
                "13",
                HandshakeRefusal::NoKey,
            ),
        ] {
            assert_eq!(
                websocket_handshake(&req(method, key, proto, version)),
                Err(refusal),
                "{key:?} {proto} {version}"
            );
        }
        let plain = Request::builder().uri("/xmpp-websocket").body(()).unwrap();
        let refusal = websocket_handshake(&plain).unwrap_err();
        let r = refusal.response();
        assert_eq!(r.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(r.headers()["upgrade"], "websocket");
        assert_eq!(r.headers()["sec-websocket-version"], "13");
        assert_eq!(
            HandshakeRefusal::NotXmpp.response().status(),
            StatusCode::BAD_REQUEST
        );
    }

    /// XEP-0156: only TLS `[websocket]` listeners are announced.
    #[test]
    fn websocket_listener_urls_are_wss_only() {
        assert_eq!(
            websocket_listener_url("kitchen.local", 5281, true).as_deref(),
            Some("wss://kitchen.local:5281/xmpp-websocket")
        );
        assert_eq!(websocket_listener_url("kitchen.local", 5280, false), None);
    }

    /// The listener's own endpoint first, then the `[websocket]` listeners', in both
    /// documents.
    #[test]
    fn host_meta_lists_this_port_first() {
        let mut http = http("https://kitchen.local:5443");
        http.websocket_listener_urls = vec!["wss://kitchen.local:5281/xmpp-websocket".into()];
        let body = |r: Response<Body>| {
            let bytes = smol::block_on(r.into_body().collect()).unwrap().to_bytes();
            String::from_utf8(bytes.to_vec()).unwrap()
        };
        let xrd = body(host_meta(&http, false));
        let first = xrd.find("wss://kitchen.local:5443/xmpp-websocket").unwrap();
        let second = xrd.find("wss://kitchen.local:5281/xmpp-websocket").unwrap();
        assert!(first < second, "{xrd}");
        assert_eq!(xrd.matches("<Link ").count(), 2, "{xrd}");
        let json = body(host_meta(&http, true));
        assert_eq!(
            json,
            "{\"links\":[\
             {\"rel\":\"urn:xmpp:alt-connections:websocket\",\
             \"href\":\"wss://kitchen.local:5443/xmpp-websocket\"},\
             {\"rel\":\"urn:xmpp:alt-connections:websocket\",\
             \"href\":\"wss://kitchen.local:5281/xmpp-websocket\"}]}\n"
        );
    }

    fn http(base_url: &str) -> Http {
        Http {
            base_url: base_url.into(),
            uploads: None,
            websocket_listener_urls: Vec::new(),
            admission: Admission::new(super::super::limits::ConnectionLimits {
                max_total: 1,
                max_per_address: 1,
                per_address_per_minute: 1,
                burst_per_address: 1,
            }),
            ex: Arc::new(Executor::new()),
        }
    }

    #[test]
    fn websocket_url_follows_the_base() {
        let mut http = http(&default_base_url("kitchen.local", 5443));
        assert_eq!(
            http.websocket_url(),
            "wss://kitchen.local:5443/xmpp-websocket"
        );
        http.base_url = "http://chat.example.org".into();
        assert_eq!(http.websocket_url(), "ws://chat.example.org/xmpp-websocket");
        assert_eq!(
            default_base_url("chat.example.org", 443),
            "https://chat.example.org"
        );
    }
}
