//! RFC 7395: XMPP over WebSocket, for web clients (Converse.js, xmpp.js, Strophe).
//!
//! A WebSocket connection runs the same c2s machine and connection loop as a TCP one
//! (`c2s.rs`, `conn.rs`): [`WsIo`] makes the WebSocket look like the byte stream the loop
//! reads and writes. Each text message in goes through
//! [`crate::stream::websocket::frame_in`] (one element per message, `<open/>` as the
//! stream header) and on to the framer, so the limits, timeouts, rate and login throttle
//! are those of c2s; what the machine writes is cut into one message per element by
//! [`crate::stream::websocket::Splitter`]. A message the RFC does not allow (two
//! elements, not XML, binary, too large) reaches the machine as the stream error it
//! earns (see `refused`), which then goes out as an element followed by `<close/>`
//! (RFC 7395, "Stream Errors"). Before authentication [`Metered`] keeps a stranger's
//! message as small as on TCP while it arrives.
//!
//! Two ways in: [`serve_upgraded`] takes a connection an HTTP listener already upgraded
//! (HTTP 101 sent), and `[websocket] listen` gives the WebSocket a port of its own
//! ([`serve_listener`]: TLS, then the HTTP upgrade with the `xmpp` subprotocol).
//!
//! TLS: the WebSocket carries no STARTTLS (RFC 7395, "Use of TLS": the WebSocket's TLS is
//! the stream's), so the stream counts as encrypted when the connection is wss://. A
//! plain ws:// connection is only served from a loopback address (a TLS-terminating
//! proxy on the same host); anyone else is refused, as c2s requires TLS before
//! authentication.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use async_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use async_tungstenite::tungstenite::{Error as WsError, Message, error::CapacityError};
use futures_rustls::TlsAcceptor;
use smol::future::FutureExt as _;
use smol::io::{AsyncRead, AsyncWrite};
use smol::stream::StreamExt as _;
use smol::{Async, Timer};

use crate::net::Shared;
use crate::stanza::{StreamCondition, StreamError};
use crate::stream::sasl::ChannelBindings;
use crate::stream::websocket::{self as framing, Splitter};

/// Any byte stream a WebSocket can run on: TCP, TLS, an HTTP listener's connection.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What tungstenite reads from the socket at a time, as the connection loop does
/// (`conn.rs`, `READ_CHUNK`). Its default (128 KiB) would be held by every idle
/// connection; 4 KiB cost 3 KiB more per idle session than 1 KiB (measured:
/// `tests/websocket.rs`, `idle_session_memory`); a larger message just takes more reads.
const READ_BUFFER_BYTES: usize = 1024;

/// A WebSocket as the byte stream the connection loop reads and writes (see the module
/// docs): frames in become framer input, machine output becomes frames.
pub struct WsIo {
    ws: WebSocketStream<Metered>,
    /// The current message in, as framer input, and how much of it was read.
    input: Vec<u8>,
    read_at: usize,
    /// Cuts the machine's output into elements.
    splitter: Splitter,
    /// Messages cut and not yet handed to the WebSocket.
    frames: VecDeque<String>,
    /// The WebSocket layer gave up reading (a message too large, not UTF-8): what the
    /// client still sends can only be read as raw bytes.
    is_broken: bool,
}

/// A message the RFC does not allow: the stream error it gets, carried to the connection
/// loop inside the read's `io::Error` (see [`refused`]).
#[derive(Debug)]
struct Refused(StreamError);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for Refused {}

/// The stream error a failed read from a [`WsIo`] asks for, if that is why it failed.
pub(super) fn refused(e: &io::Error) -> Option<StreamError> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<Refused>())
        .map(|r| r.0.clone())
}

fn refuse(err: StreamError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, Refused(err))
}

/// What the WebSocket layer accepts: a message no larger than the largest stanza an
/// authenticated client may send (the framer then holds the stream to the limits of its
/// stage, smaller before authentication), and small buffers.
pub fn config(max_message_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        // Every message goes out at the next flush; the loop batches already.
        .write_buffer_size(0)
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes))
}

impl WsIo {
    fn new(mut ws: WebSocketStream<Metered>) -> WsIo {
        ws.get_mut().read = 0;
        WsIo {
            ws,
            input: Vec::new(),
            read_at: 0,
            splitter: Splitter::default(),
            frames: VecDeque::new(),
            is_broken: false,
        }
    }

    /// After our close: reads and drops what the client still sends, until its close
    /// answers ours (RFC 6455 §5.5.1), `until`, or `max_bytes`; the TCP connection then
    /// ends without a reset that could lose our last messages.
    pub(super) async fn linger(&mut self, until: Instant, max_bytes: usize) {
        use smol::io::AsyncReadExt as _;
        let mut total = 0;
        if !self.is_broken {
            while total < max_bytes {
                let next = async { self.ws.next().await }
                    .or(async {
                        Timer::at(until).await;
                        None
                    })
                    .await;
                match next {
                    Some(Ok(m)) => total += m.len(),
                    Some(Err(_)) | None => return,
                }
            }
            return;
        }
        // The rest of a message that was refused while it arrived (too large): read and
        // dropped as bytes, so that the close does not reset the connection and destroy
        // the stream error in flight.
        let raw = self.ws.get_mut().io();
        let mut buf = [0u8; 1024];
        while total < max_bytes {
            let read = async { raw.read(&mut buf).await }
                .or(async {
                    Timer::at(until).await;
                    Ok(0)
                })
                .await;
            match read {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    }

    /// The stream's framer limits changed (the client authenticated): messages may be
    /// this large now.
    pub(super) fn set_max_message(&mut self, max_stanza_bytes: usize) {
        self.ws.get_mut().set_max_message(max_stanza_bytes);
    }

    /// Hands the cut messages to the WebSocket.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        use futures_sink::Sink as _;
        while !self.frames.is_empty() {
            // Room first: a message taken out of the queue is never dropped on the way.
            ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(io::Error::other)?;
            let Some(frame) = self.frames.pop_front() else {
                break;
            };
            Pin::new(&mut self.ws)
                .start_send(Message::text(frame))
                .map_err(io::Error::other)?;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for WsIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if this.read_at < this.input.len() {
                let n = buf.len().min(this.input.len() - this.read_at);
                buf[..n].copy_from_slice(&this.input[this.read_at..this.read_at + n]);
                this.read_at += n;
                if this.read_at == this.input.len() {
                    // An idle connection keeps no copy of its last message.
                    this.input = Vec::new();
                    this.read_at = 0;
                }
                return Poll::Ready(Ok(n));
            }
            let msg = match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                None => return Poll::Ready(Ok(0)),
                Some(Ok(m)) => {
                    // A whole message: the next one starts its count.
                    this.ws.get_mut().read = 0;
                    m
                }
                Some(Err(e)) => {
                    this.is_broken = true;
                    return Poll::Ready(Err(read_error(e)));
                }
            };
            match msg {
                Message::Text(text) => match framing::frame_in(text.as_str()) {
                    // A keepalive: nothing to read (zero bytes would mean the end).
                    Ok(bytes) if bytes.is_empty() => {}
                    Ok(bytes) => {
                        this.input = bytes.into_bytes();
                        this.read_at = 0;
                    }
                    Err(err) => return Poll::Ready(Err(refuse(err))),
                },
                // RFC 7395, "XMPP Framing": XMPP goes in text (UTF-8) messages only; a binary one is not
                // text in the stream's encoding (RFC 6120 §4.9.3.22).
                Message::Binary(_) => {
                    return Poll::Ready(Err(refuse(
                        StreamError::new(StreamCondition::UnsupportedEncoding)
                            .with_text("XMPP over WebSocket uses text messages, not binary"),
                    )));
                }
                // The client closed the WebSocket (tungstenite answers it): the end of
                // the connection, as a TCP FIN is.
                Message::Close(_) => return Poll::Ready(Ok(0)),
                // Pings are answered by tungstenite itself.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }
}

/// The socket under tungstenite, which reads a whole message before it hands any of it
/// over (up to the largest an authenticated client may send): this counts the bytes read
/// since the last whole message and refuses to read more than the stream's current
/// stanza limit allows for (with room for frame headers), so that before authentication
/// a stranger makes hearth hold no more than on a TCP stream (XEP-0205).
pub struct Metered {
    /// In a mutex only to be `Sync` (the connection loop's future holds the transport
    /// across awaits), never locked: reached through `&mut` ([`Mutex::get_mut`]).
    io: Mutex<Box<dyn Io>>,
    /// Bytes read since the last whole message.
    read: usize,
    /// The most that may be read without a whole message.
    max: usize,
    /// The stanza limit it comes from, for the error text.
    max_stanza_bytes: usize,
}

impl Metered {
    fn new(io: Box<dyn Io>, max_stanza_bytes: usize) -> Metered {
        let mut m = Metered {
            io: Mutex::new(io),
            read: 0,
            max: 0,
            max_stanza_bytes: 0,
        };
        m.set_max_message(max_stanza_bytes);
        m
    }

    fn io(&mut self) -> &mut Box<dyn Io> {
        self.io.get_mut().unwrap_or_else(|e| e.into_inner())
    }

    /// Twice the stanza limit and a little: a message split into fragments has a header
    /// per fragment (2 to 14 bytes), and the HTTP upgrade request is read through here too.
    fn set_max_message(&mut self, max_stanza_bytes: usize) {
        self.max_stanza_bytes = max_stanza_bytes;
        self.max = max_stanza_bytes.saturating_mul(2).saturating_add(4096);
    }
}

impl AsyncRead for Metered {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let room = this.max.saturating_sub(this.read);
        if room == 0 {
            return Poll::Ready(Err(refuse(
                StreamError::new(StreamCondition::PolicyViolation).with_text(format!(
                    "a WebSocket message larger than {} bytes",
                    this.max_stanza_bytes
                )),
            )));
        }
        let n = buf.len().min(room);
        let got = ready!(Pin::new(this.io()).poll_read(cx, &mut buf[..n]))?;
        this.read += got;
        Poll::Ready(Ok(got))
    }
}

impl AsyncWrite for Metered {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().io()).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().io()).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().io()).poll_close(cx)
    }
}

/// A WebSocket error while reading, as the loop sees it: a message over the size limit
/// is the `policy-violation` an oversized stanza gets (RFC 6120 §4.9.3.14, XEP-0205),
/// text that is not UTF-8 `not-well-formed` (§4.9.3.13); the rest ends the connection.
fn read_error(e: WsError) -> io::Error {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { max_size, .. }) => refuse(
            StreamError::new(StreamCondition::PolicyViolation)
                .with_text(format!("message larger than {max_size} bytes")),
        ),
        WsError::Utf8(_) => refuse(
            StreamError::new(StreamCondition::NotWellFormed).with_text("a message not in UTF-8"),
        ),
        WsError::Io(e) => e,
        e => io::Error::other(e),
    }
}

impl AsyncWrite for WsIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // What the machine writes is always whole characters (it is a `String`).
        let text =
            std::str::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let mut cut = Vec::new();
        this.splitter.write(text, &mut cut);
        this.frames.extend(cut);
        // Handed on now when there is room; the rest at the flush.
        let _ = this.poll_send(cx);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        use futures_sink::Sink as _;
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.ws)
            .poll_flush(cx)
            .map_err(io::Error::other)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        use futures_sink::Sink as _;
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        // A WebSocket close frame (RFC 6455 §5.5.1) after our `<close/>`.
        Pin::new(&mut this.ws)
            .poll_close(cx)
            .map_err(io::Error::other)
    }
}

/// Serves a client on a connection an HTTP listener has upgraded to a WebSocket with the
/// `xmpp` subprotocol (the 101 answer is sent; `io` carries WebSocket frames from here).
/// `tls`: the connection is wss://, with the TLS session's channel bindings if known
/// (empty ones otherwise: SCRAM's `-PLUS` is then not offered); `None` for plain ws://,
/// only served from a loopback address (see the module docs). `id` numbers the
/// connection in the log, as the c2s listeners do.
pub async fn serve_upgraded<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    shared: Arc<Shared>,
    io: S,
    peer: SocketAddr,
    tls: Option<ChannelBindings>,
    id: u64,
) {
    serve_upgraded_after(shared, io, Vec::new(), peer, tls, id).await;
}

/// [`serve_upgraded`] for a listener whose HTTP parser read past the request: `leftover`
/// is what it read of the WebSocket stream after it (frames the client sent without
/// waiting for the 101 answer).
pub async fn serve_upgraded_after<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    shared: Arc<Shared>,
    io: S,
    leftover: Vec<u8>,
    peer: SocketAddr,
    tls: Option<ChannelBindings>,
    id: u64,
) {
    let config = config(shared.limits_authenticated.max_stanza_bytes);
    let io = Metered::new(Box::new(io), shared.limits_unauthenticated.max_stanza_bytes);
    let ws = if leftover.is_empty() {
        WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await
    } else {
        WebSocketStream::from_partially_read(io, leftover, Role::Server, Some(config)).await
    };
    serve_ws(shared, ws, peer, tls, id, Instant::now()).await;
}

async fn serve_ws(
    shared: Arc<Shared>,
    ws: WebSocketStream<Metered>,
    peer: SocketAddr,
    tls: Option<ChannelBindings>,
    id: u64,
    accepted: Instant,
) {
    let mut io = WsIo::new(ws);
    let tls = match tls {
        Some(cb) => cb,
        // Plain, from this host: a proxy that did the TLS.
        None if peer.ip().is_loopback() => ChannelBindings::default(),
        None => {
            log::info!("ws{id}: {peer} refused: plain WebSocket from another host");
            refuse_plain(&shared, &mut io).await;
            return;
        }
    };
    log::info!("c2s{id}: {peer} XMPP over WebSocket");
    super::c2s::serve_websocket(shared, io, peer, tls, id, accepted).await;
}

/// `policy-violation` for a plain WebSocket from another host: the c2s machine's own
/// error (our `<open/>` first), then the close.
async fn refuse_plain(shared: &Shared, io: &mut WsIo) {
    use smol::io::AsyncWriteExt as _;
    let mut machine = crate::stream::c2s::C2s::new(shared.policy.clone(), None);
    let mut out = Vec::new();
    machine.fail(
        StreamError::new(StreamCondition::PolicyViolation)
            .with_text("XMPP over WebSocket needs TLS here: use wss://"),
        &mut out,
    );
    let mut bytes = String::new();
    for a in out {
        if let crate::stream::c2s::Action::Send(s) = a {
            bytes.push_str(&s);
        }
    }
    let send = async {
        io.write_all(bytes.as_bytes()).await?;
        io.close().await
    };
    let _ = send
        .or(async {
            Timer::after(Duration::from_secs(5)).await;
            Ok(())
        })
        .await;
}

/// One connection to a `[websocket] listen` port: TLS (unless the listener is plain),
/// the HTTP upgrade asking for the `xmpp` subprotocol (RFC 7395 §3.1; anything else is
/// refused with 400), then the session. Handshakes share the c2s negotiation deadline.
pub async fn serve_listener(
    shared: Arc<Shared>,
    tcp: Async<TcpStream>,
    peer: SocketAddr,
    tls: bool,
    id: u64,
) {
    let accepted = Instant::now();
    let deadline = accepted + shared.negotiation_timeout;
    let timeout = async {
        Timer::at(deadline).await;
        None
    };
    let (io, cb): (Box<dyn Io>, Option<ChannelBindings>) = if tls {
        // The STARTTLS port's set-up: no ALPN (the direct TLS port's `xmpp-client` would
        // make a browser asking for `http/1.1` fail the handshake).
        let setup = shared.tls();
        let accept = Box::pin(TlsAcceptor::from(setup.config().clone()).accept(tcp));
        match async { Some(accept.await) }.or(timeout).await {
            Some(Ok(s)) => {
                let cb = setup.channel_bindings(s.get_ref().1);
                (Box::new(s), Some(cb))
            }
            Some(Err(e)) => {
                log::info!("ws{id}: {peer} TLS handshake failed: {e}");
                return;
            }
            None => {
                log::info!("ws{id}: {peer} TLS handshake timed out");
                return;
            }
        }
    } else {
        if !peer.ip().is_loopback() {
            // Refused before any HTTP: a plain listener is for a proxy on this host.
            log::info!("ws{id}: {peer} refused: plain WebSocket listener, not loopback");
            return;
        }
        (Box::new(tcp), None)
    };
    let config = config(shared.limits_authenticated.max_stanza_bytes);
    let io = Metered::new(io, shared.limits_unauthenticated.max_stanza_bytes);
    let upgrade = async_tungstenite::accept_hdr_async_with_config(io, check_request, Some(config));
    let ws = match async { Some(upgrade.await) }
        .or(async {
            Timer::at(deadline).await;
            None
        })
        .await
    {
        Some(Ok(ws)) => ws,
        Some(Err(e)) => {
            log::info!("ws{id}: {peer} WebSocket handshake failed: {e}");
            return;
        }
        None => {
            log::info!("ws{id}: {peer} WebSocket handshake timed out");
            return;
        }
    };
    // The TLS and HTTP handshakes count against the stream's negotiation deadline.
    serve_ws(shared, ws, peer, cb, id, accepted).await;
}

/// RFC 7395 §3.1: the client must offer the `xmpp` subprotocol; the answer names it.
#[allow(clippy::result_large_err)] // tungstenite's callback signature
fn check_request(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    if offers_xmpp(req) {
        resp.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(framing::SUBPROTOCOL),
        );
        return Ok(resp);
    }
    let mut err = ErrorResponse::new(Some(
        "XMPP over WebSocket needs the \"xmpp\" subprotocol (RFC 7395 section 3.1)\n".into(),
    ));
    *err.status_mut() = StatusCode::BAD_REQUEST;
    Err(err)
}

/// Whether `Sec-WebSocket-Protocol` (one header or several, comma-separated) names `xmpp`.
pub fn offers_xmpp(req: &Request) -> bool {
    offers_xmpp_in(
        req.headers()
            .get_all("Sec-WebSocket-Protocol")
            .iter()
            .filter_map(|v| v.to_str().ok()),
    )
}

/// [`offers_xmpp`] for an HTTP listener with its own request type: the values of every
/// `Sec-WebSocket-Protocol` header. Its 101 answer then carries
/// `Sec-WebSocket-Protocol: xmpp` (RFC 7395 §3.1) and [`accept_key`]; without `xmpp`
/// it refuses the upgrade.
pub fn offers_xmpp_in<'a>(values: impl Iterator<Item = &'a str>) -> bool {
    values
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == framing::SUBPROTOCOL)
}

/// RFC 6455 §4.2.2: the `Sec-WebSocket-Accept` value for a request's `Sec-WebSocket-Key`.
pub fn accept_key(sec_websocket_key: &str) -> String {
    async_tungstenite::tungstenite::handshake::derive_accept_key(
        sec_websocket_key.trim().as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(protocols: &[&str]) -> Request {
        let mut b = Request::builder().uri("/xmpp-websocket");
        for p in protocols {
            b = b.header("Sec-WebSocket-Protocol", *p);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn the_xmpp_subprotocol_is_required_and_named() {
        assert!(offers_xmpp(&request(&["xmpp"])));
        assert!(offers_xmpp(&request(&["chat, xmpp"])));
        assert!(offers_xmpp(&request(&["chat", "xmpp"])));
        assert!(!offers_xmpp(&request(&[])));
        assert!(!offers_xmpp(&request(&["xmpp-over-ws"])));
        let ok = check_request(&request(&["xmpp"]), Response::new(())).unwrap();
        assert_eq!(ok.headers()["Sec-WebSocket-Protocol"], "xmpp");
        let no = check_request(&request(&["chat"]), Response::new(())).unwrap_err();
        assert_eq!(no.status(), StatusCode::BAD_REQUEST);
    }

    /// An HTTP listener's connection type need only be `Send` (not `Sync`) for the
    /// session's future to be spawned on the executor: checked by the compiler.
    #[allow(dead_code)]
    fn serve_upgraded_is_send_for_any_send_io<S>(shared: Arc<Shared>, io: S, peer: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        fn is_send<T: Send>(_: T) {}
        is_send(serve_upgraded(shared, io, peer, None, 0));
    }

    #[test]
    fn accept_key_is_rfc_6455s() {
        // RFC 6455 §1.3's example.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert!(offers_xmpp_in(["chat", " xmpp "].into_iter()));
        assert!(!offers_xmpp_in(std::iter::empty()));
    }

    #[test]
    fn a_refusal_travels_in_the_io_error() {
        let e = refuse(StreamError::new(StreamCondition::NotWellFormed));
        assert_eq!(
            refused(&e).map(|e| e.condition),
            Some(StreamCondition::NotWellFormed)
        );
        assert_eq!(refused(&io::Error::other("x")), None);
    }
}
