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

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_rustls::TlsAcceptor;
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
    /// Connection limits of the HTTP listener (counted apart from c2s's).
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
    log::info!("listening for HTTPS on {addr} (uploads, host-meta)");
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

/// One connection: TLS, then HTTP/1.1 requests until the peer, a timeout or shutdown
/// ends it.
async fn serve(shared: &Shared, http: Arc<Http>, tcp: Async<TcpStream>, peer: SocketAddr, id: u64) {
    let acceptor = TlsAcceptor::from(shared.tls().config().clone());
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
    let io = FuturesIo::new(Tracked {
        inner: tls,
        started,
        last: last.clone(),
    });
    let bucket = Arc::new(std::sync::Mutex::new(super::limits::TokenBucket::new(
        REQUESTS_PER_SEC,
        REQUEST_BURST,
        Instant::now(),
    )));
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let http = http.clone();
        let allowed = bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_take(1.0, Instant::now());
        async move {
            if !allowed {
                let mut r = text(StatusCode::TOO_MANY_REQUESTS, "too many requests");
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return Ok::<_, Infallible>(r);
            }
            Ok::<_, Infallible>(route(&http, req, id).await)
        }
    });
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
                return;
            }
        }
    };
    let stop = async {
        let _ = shared.shutdown_rx.recv().await;
    };
    async {
        if let Err(e) = conn.await {
            log::debug!("http{id}: {peer}: {e}");
        }
    }
    .or(idle)
    .or(stop)
    .await;
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
async fn route(http: &Arc<Http>, req: Request<Incoming>, id: u64) -> Response<Body> {
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
        "/xmpp-websocket" => websocket_upgrade(req),
        p if p.starts_with("/upload/") => {
            let Some(uploads) = &http.uploads else {
                return text(StatusCode::NOT_FOUND, "uploads are off on this server");
            };
            let token = p["/upload/".len()..].split('/').next().unwrap_or("");
            let token = token.to_owned();
            with_cors(match *req.method() {
                Method::PUT => put(uploads, &token, req, id).await,
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

/// XEP-0156 §3: the WebSocket endpoint as an XRD document (host-meta) or JRD
/// (host-meta.json).
fn host_meta(http: &Http, json: bool) -> Response<Body> {
    let url = http.websocket_url();
    let (body, ty) = if json {
        let esc = url.replace('\\', "\\\\").replace('"', "\\\"");
        (
            format!("{{\"links\":[{{\"rel\":\"{REL_WEBSOCKET}\",\"href\":\"{esc}\"}}]}}\n"),
            "application/json",
        )
    } else {
        let mut esc = String::new();
        crate::xml::escape_attr(&url, &mut esc);
        (
            format!(
                "<?xml version='1.0' encoding='utf-8'?>\n\
                 <XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n  \
                 <Link rel='{REL_WEBSOCKET}' href='{esc}'/>\n</XRD>\n"
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
/// `Sec-WebSocket-Protocol: xmpp`. Not served yet: 501 (after the request was checked,
/// so a malformed one gets its 400 or 426 already).
///
/// Wiring the WebSocket worker's `crate::net::websocket::serve_upgraded(io, peer, …)`
/// here: answer `Ok(response)` from [`websocket_handshake`] (101 with
/// `Sec-WebSocket-Accept` and `Sec-WebSocket-Protocol: xmpp`), and spawn a task that
/// awaits `hyper::upgrade::on(req)`, recovers the raw TLS stream (a futures
/// `AsyncRead + AsyncWrite`) and the bytes hyper had read ahead with
/// `Upgraded::downcast::<FuturesIo<Tracked<TlsStream<Async<TcpStream>>>>>()`
/// (`Parts { io, read_buf }`: `io.into_inner().inner` is the TLS stream), and hands
/// them over. Mind that `serve` returns once hyper's connection future ends, which it
/// does at the upgrade: the admission slot, the open-connection count (shutdown waits on
/// it) and the idle timer go with it unless the upgraded session runs inside `serve`
/// (keep the `OnUpgrade` in a per-connection cell, await it after `conn`), which is the
/// way to wire it.
fn websocket_upgrade(req: Request<Incoming>) -> Response<Body> {
    match websocket_handshake(&req) {
        Ok(_) => text(
            StatusCode::NOT_IMPLEMENTED,
            "XMPP over WebSocket is not available on this server yet",
        ),
        Err(r) => r,
    }
}

/// The WebSocket GUID of RFC 6455 §1.3.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// RFC 6455 §4.2.2: `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn websocket_accept(key: &str) -> String {
    use base64::Engine as _;
    use sha1::Digest as _;
    let mut h = sha1::Sha1::new();
    h.update(key.trim().as_bytes());
    h.update(WEBSOCKET_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// RFC 6455 §4.2.1 and RFC 7395 §3.1: checks an upgrade request for the `xmpp`
/// subprotocol and builds the 101 answer; otherwise the error to send (400 for a
/// malformed request, 426 for one that is no WebSocket upgrade or another version).
/// Both are responses to send as they are, so neither is boxed.
#[allow(clippy::result_large_err)]
pub fn websocket_handshake<B>(req: &Request<B>) -> Result<Response<Body>, Response<Body>> {
    let h = req.headers();
    let has = |name: header::HeaderName, token: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    let upgrade_required = || {
        let mut r = text(
            StatusCode::UPGRADE_REQUIRED,
            "a WebSocket upgrade is expected here",
        );
        r.headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        r
    };
    if req.method() != Method::GET
        || !has(header::UPGRADE, "websocket")
        || !has(header::CONNECTION, "upgrade")
        || !has(header::SEC_WEBSOCKET_VERSION, "13")
    {
        return Err(upgrade_required());
    }
    let key = h
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|k| k.to_str().ok())
        .filter(|k| k.trim().len() == 24)
        .ok_or_else(|| text(StatusCode::BAD_REQUEST, "Sec-WebSocket-Key is missing"))?;
    // RFC 7395 §3.1: the client must ask for `xmpp`, and the server must name it back.
    if !has(header::SEC_WEBSOCKET_PROTOCOL, "xmpp") {
        return Err(text(
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Protocol must include xmpp (RFC 7395)",
        ));
    }
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, websocket_accept(key))
        .header(header::SEC_WEBSOCKET_PROTOCOL, "xmpp")
        .body(full(Bytes::new()))
        .map_err(|_| text(StatusCode::BAD_REQUEST, "bad request"))
}

/// XEP-0363 §5: the PUT of a slot's file, streamed to disk.
async fn put(
    uploads: &Arc<Uploads>,
    token: &str,
    req: Request<Incoming>,
    id: u64,
) -> Response<Body> {
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
        Err(f) => return failure(f),
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
            None => return text(StatusCode::REQUEST_TIMEOUT, "the upload stalled"),
            Some(None) => break,
            Some(Some(Err(e))) => {
                log::debug!("http{id}: upload body: {e}");
                return text(StatusCode::BAD_REQUEST, "the upload was cut short");
            }
            Some(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if let Err(f) = file.write(data).await {
                        return failure(f);
                    }
                }
            }
        }
    }
    match file.finish().await {
        Ok(()) => {
            log::info!("http{id}: upload {}… stored", token.get(..8).unwrap_or(""));
            let mut r = text(StatusCode::CREATED, "stored");
            r.headers_mut().remove(header::CONTENT_TYPE);
            r
        }
        Err(f) => failure(f),
    }
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
        assert_eq!(
            websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let req = |proto: &str, version: &str| {
            Request::builder()
                .method(Method::GET)
                .uri("/xmpp-websocket")
                .header("Upgrade", "websocket")
                .header("Connection", "keep-alive, Upgrade")
                .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
                .header("Sec-WebSocket-Version", version)
                .header("Sec-WebSocket-Protocol", proto)
                .body(())
                .unwrap()
        };
        let ok = websocket_handshake(&req("xmpp", "13")).unwrap();
        assert_eq!(ok.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(ok.headers()["sec-websocket-protocol"], "xmpp");
        assert_eq!(
            ok.headers()["sec-websocket-accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let no_xmpp = websocket_handshake(&req("chat", "13")).unwrap_err();
        assert_eq!(no_xmpp.status(), StatusCode::BAD_REQUEST);
        let old = websocket_handshake(&req("xmpp", "8")).unwrap_err();
        assert_eq!(old.status(), StatusCode::UPGRADE_REQUIRED);
        let plain = Request::builder().uri("/xmpp-websocket").body(()).unwrap();
        assert_eq!(
            websocket_handshake(&plain).unwrap_err().status(),
            StatusCode::UPGRADE_REQUIRED
        );
    }

    #[test]
    fn websocket_url_follows_the_base() {
        let ex = Arc::new(Executor::new());
        let mut http = Http {
            base_url: default_base_url("kitchen.local", 5443),
            uploads: None,
            admission: Admission::new(super::super::limits::ConnectionLimits {
                max_total: 1,
                max_per_address: 1,
                per_address_per_minute: 1,
                burst_per_address: 1,
            }),
            ex,
        };
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
