//! The connection loop, whichever stream it carries: the only place where a peer's bytes
//! meet a socket. DESIGN.md "Streams": the connection loop is generic over the machine.
//!
//! It reads into the framer, feeds the stream machine ([`Machine`]), carries out the
//! stream layer's actions ([`Wire`]: write, reset the framer, close) and hands the
//! machine's own (authenticate, bind, route, …) to a [`Driver`], the one part that knows
//! what kind of stream this is: [`super::c2s`] for clients; the s2s streams next. Its
//! limits (XEP-0205): a byte rate ([`Karma`]), the negotiation deadline and pings
//! ([`Liveness`]), read pauses while the recipients of what the peer sent catch up
//! (DESIGN.md "Router"), a write timeout.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_rustls::TlsAcceptor;
use futures_rustls::TlsConnector;
use futures_rustls::client::TlsStream as ClientTlsStream;
use futures_rustls::pki_types::{CertificateDer, ServerName};
use futures_rustls::rustls::ClientConfig;
use futures_rustls::rustls::ServerConfig;
use futures_rustls::server::TlsStream;
use smol::future::FutureExt as _;
use smol::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use smol::{Async, Timer};

use crate::net::Shared;
use crate::net::limits::{Karma, Rate};
use crate::net::liveness::{Due, Liveness, LivenessConfig};
use crate::router;
use crate::stanza::{StreamCondition, StreamError};
use crate::stream::Machine;
use crate::stream::negotiation::Wire;
use crate::stream::sasl::ChannelBindings;
use crate::xml::{Event, Framer, Limits, XmlError};

/// Bytes read at a time. Small, because every idle connection holds this
/// buffer while it waits (rustls keeps its own 4 KiB record buffer
/// underneath); a large stanza just takes more reads.
const READ_CHUNK: usize = 1024;

/// How long a write may take before the peer counts as dead.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest a peer's reading pauses for recipients to catch up with what it sent;
/// then it is read again, and what finds a queue at its hard bound is refused to it.
const PRESSURE_WAIT: Duration = Duration::from_secs(10);

/// After our side of a connection is closed, how long and how much of what
/// the peer still sends is read and dropped (see [`linger`]).
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

/// What one kind of stream adds to the connection loop: the effects of its machine's own
/// actions, what the rest of the server sends it, its pings and its end. The loop owns
/// the socket, the framer, the timers and the limits ([`Link`]); a driver holds only what
/// its kind of stream needs besides (c2s: the router's session queue and the bound JID).
///
/// Generic, not `dyn`: each driver gets its own loop, with no boxing or dispatch per
/// stanza. Its futures are part of every connection's task, so a driver boxes the large
/// ones it rarely needs (storage, TLS handshakes), as [`super::c2s`] does.
pub(super) trait Driver: Sized {
    /// The sans-IO stream machine this driver's connections run.
    type Machine: Machine;
    /// What the rest of the server sends the stream (c2s: the router's session queue).
    type Queued;
    /// Prefix of this kind of stream's log lines (`c2s7: …`).
    const KIND: &'static str;

    /// Waits for the next thing the rest of the server has for the stream; never
    /// completes while there is nothing to wait on (c2s: before resource binding).
    async fn queued(&self) -> Self::Queued;

    /// Takes what [`Driver::queued`] gave: stanzas are written into [`Link::out`] (flushed
    /// by the loop before it waits again); a close becomes the machine's stream error.
    fn on_queued(&mut self, link: &mut Link<Self>, item: Self::Queued) -> Step<ActionOf<Self>>;

    /// Carries out one of the machine's own actions, those [`Machine::wire`] hands back.
    /// Its future lives in every connection's task while it runs: box what is large.
    async fn effect(
        &mut self,
        link: &mut Link<Self>,
        action: ActionOf<Self>,
    ) -> Effect<InputOf<Self>>;

    /// XEP-0199 §4.2 (c2s) or §4.3 (s2s): the `n`th ping for a silent stream, or `None`
    /// when it has no address to ping yet.
    fn ping(&self, link: &Link<Self>, n: u64) -> Option<String>;

    /// The connection is over, for `reason` (for the log): undo what the stream set up
    /// in the rest of the server (c2s: unbind, RFC 6121 §4.5.2) and log the disconnect.
    async fn finish(&mut self, link: &mut Link<Self>, reason: &str);
}

/// The actions of a driver's machine.
pub(super) type ActionOf<D> = <<D as Driver>::Machine as Machine>::Action;
/// The inputs of a driver's machine.
pub(super) type InputOf<D> = <<D as Driver>::Machine as Machine>::Input;

/// Stanzas already queued for a stream are written together, up to about this many bytes
/// a write.
const BATCH_BYTES: usize = 16 * 1024;

/// Writes `first` and what else is already queued in `rx` (about [`BATCH_BYTES`] at
/// most) into `out`. Elements are written relative to `jabber:client`, which every stream
/// here has as its content namespace or maps to it (RFC 6120 §4.8.3: on a server or
/// component stream the default namespace is its own, and the same elements need no
/// declaration). Returns a close request met in the queue (what is before it is written).
pub(super) fn write_batch(
    out: &mut String,
    first: &router::Outgoing,
    rx: Option<&router::SessionRx>,
) -> Option<StreamError> {
    first.el.write_to(out, crate::ns::CLIENT);
    let rx = rx?;
    while out.len() < BATCH_BYTES {
        match rx.try_recv() {
            Ok(router::ToSession::Stanza(s)) => s.el.write_to(out, crate::ns::CLIENT),
            Ok(router::ToSession::Close(err)) => return Some(err),
            Err(_) => break,
        }
    }
    None
}

/// What the loop does with something from the rest of the server ([`Driver::on_queued`]).
pub(super) enum Step<A> {
    /// Nothing more to do: write what is in [`Link::out`] and wait again.
    Wait,
    /// Carry out these machine actions (a stream error, say), then go on unless they close
    /// the stream.
    Apply(Vec<A>),
    /// Carry out these actions, write what is buffered, and end the connection for the
    /// reason given.
    End(Vec<A>, String),
}

/// What came of one of the machine's own actions ([`Driver::effect`]).
pub(super) enum Effect<I> {
    /// Done; the next action follows.
    Done,
    /// Feed this answer to the machine; its actions go before the remaining ones.
    Feed(I),
    /// End the connection now (after writing what is buffered).
    Close,
}

/// A peer connection: plain TCP until STARTTLS, then TLS.
pub(super) enum Transport {
    Plain(Async<TcpStream>),
    Tls(Box<TlsStream<Async<TcpStream>>>),
    /// TLS where we are the client: an outgoing s2s link.
    TlsClient(Box<ClientTlsStream<Async<TcpStream>>>),
    /// RFC 7395: XMPP over a WebSocket (wss:// or a proxy's ws://), framed by
    /// [`super::websocket::WsIo`].
    WebSocket(Box<super::websocket::WsIo>),
    /// Only while the TLS handshake owns the socket.
    Taken,
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Transport::TlsClient(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Transport::WebSocket(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Transport::Taken => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Transport::TlsClient(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Transport::WebSocket(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Transport::Taken => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Transport::TlsClient(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Transport::WebSocket(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Transport::Taken => Poll::Ready(Ok(())),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_close(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
            Transport::TlsClient(s) => Pin::new(s.as_mut()).poll_close(cx),
            Transport::WebSocket(s) => Pin::new(s.as_mut()).poll_close(cx),
            Transport::Taken => Poll::Ready(Ok(())),
        }
    }
}

/// What woke the connection up.
enum Wake<Q> {
    Read(io::Result<usize>),
    /// Something from the rest of the server ([`Driver::queued`]).
    Queued(Q),
    Shutdown,
    Deadline,
    /// A read pause ([`Karma`]) is over.
    Resume,
    /// The queues this peer's stanzas filled have drained (or the wait is over).
    Relieved,
}

/// Whether the loop goes on after carrying out actions.
#[derive(PartialEq)]
enum Flow {
    Continue,
    Close,
}

/// What a peer may send: the framer's limits and a byte rate (XEP-0205). A stranger gets
/// little; an authenticated peer more ([`Link::raise_limits`]).
pub(super) struct Allowance {
    pub(super) limits: Limits,
    pub(super) rate: Rate,
}

/// The loop's side of one connection, whatever the stream: what a [`Driver`] may use
/// and change while it carries out its machine's actions.
pub(super) struct Link<D: Driver> {
    /// Short id for log lines about this connection.
    pub(super) id: u64,
    pub(super) shared: Arc<Shared>,
    pub(super) peer: SocketAddr,
    io: Transport,
    framer: Framer,
    /// The stream's state machine.
    pub(super) machine: D::Machine,
    /// Bytes waiting to be written at the next flush.
    pub(super) out: String,
    /// The negotiation deadline, then pings once the stream is set up.
    pub(super) liveness: Liveness,
    /// The byte rate this stream may send at.
    karma: Karma,
    /// Reading is paused until then because the stream is over its rate.
    paused_until: Option<Instant>,
    /// Reading is paused because this peer's stanzas filled other sessions' queues:
    /// until they drain, or until the instant given (DESIGN.md "Router": a sender that
    /// outpaces a recipient is slowed, the recipient is not punished).
    pressed: Option<(router::Backpressure, Instant)>,
    /// Pings sent, for their ids.
    pings: u64,
    shutdown: async_channel::Receiver<()>,
    /// XEP-0198, once a client enabled stream management: every stanza written is
    /// counted and kept until acknowledged ([`Link::flush`] records them).
    pub(super) sm: Option<Box<crate::stream::sm::Outbound>>,
    /// The peer stopped answering (no answer to a ping): the connection is lost rather
    /// than closed, though the loop closed the stream.
    pub(super) is_lost: bool,
}

impl<D: Driver> Link<D> {
    /// A connection accepted at `now` (the negotiation deadline counts from then), with
    /// what it may send until [`Link::raise_limits`].
    pub(super) fn new(
        id: u64,
        shared: Arc<Shared>,
        peer: SocketAddr,
        io: Transport,
        machine: D::Machine,
        allowance: Allowance,
        now: Instant,
    ) -> Link<D> {
        let liveness = Liveness::new(
            LivenessConfig {
                ping_after_idle: shared.limits.ping_after_idle,
                ping_timeout: shared.limits.ping_timeout,
            },
            shared.negotiation_timeout,
            now,
        );
        Link {
            id,
            framer: Framer::new(allowance.limits),
            machine,
            shutdown: shared.shutdown_rx.clone(),
            karma: Karma::new(allowance.rate, now),
            shared,
            peer,
            io,
            out: String::new(),
            liveness,
            paused_until: None,
            pressed: None,
            pings: 0,
            sm: None,
            is_lost: false,
        }
    }

    /// The peer is trusted more (it authenticated): larger stanzas, a higher byte rate,
    /// and a read pause earned at the old rate is lifted.
    pub(super) fn raise_limits(&mut self, allowance: Allowance) {
        self.framer.set_limits(allowance.limits);
        if let Transport::WebSocket(ws) = &mut self.io {
            // RFC 7395: the WebSocket layer holds a whole message; it may be larger now.
            ws.set_max_message(allowance.limits.max_stanza_bytes);
        }
        self.karma.set_rate(allowance.rate, Instant::now());
        self.paused_until = None;
    }

    /// The stanzas just routed filled other sessions' queues: stop reading until they
    /// drain, or for [`PRESSURE_WAIT`] at most.
    pub(super) fn press(&mut self, pressure: router::Backpressure) {
        log::debug!(
            "{}{}: recipients are behind, pausing reads",
            D::KIND,
            self.id
        );
        self.pressed = Some((pressure, Instant::now() + PRESSURE_WAIT));
    }

    /// Writes what is buffered.
    pub(super) async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        if let Some(sm) = &mut self.sm {
            // XEP-0198 §4: counted and kept as they leave; one request for an ack rides
            // along with the write, none while one is out.
            if sm.record(&self.out) > 0 && sm.should_request() {
                self.out.push_str(crate::stream::sm::REQUEST_XML);
            }
        }
        log::trace!(
            "{}{}: out {}",
            D::KIND,
            self.id,
            crate::features::invite::redact_preauth(
                &crate::features::forms::redact_password_fields(
                    &crate::stream::sasl::redact_payloads(&self.out)
                )
            )
        );
        let data = std::mem::take(&mut self.out);
        let write = async {
            self.io.write_all(data.as_bytes()).await?;
            self.io.flush().await
        };
        let r = write
            .or(async {
                Timer::after(WRITE_TIMEOUT).await;
                Err(io::ErrorKind::TimedOut.into())
            })
            .await;
        // `data` is dropped here: an idle session keeps no write buffer.
        r
    }

    /// STARTTLS (RFC 6120 §5.4.3.3): `<proceed/>` is written first, then the handshake
    /// with `config`, within the negotiation deadline; the framer's plaintext leftovers
    /// are dropped with the reset. Answers the session's channel bindings (RFC 9266).
    pub(super) async fn start_tls(
        &mut self,
        config: Arc<ServerConfig>,
    ) -> io::Result<ChannelBindings> {
        self.flush().await?;
        self.framer.reset();
        let Transport::Plain(tcp) = std::mem::replace(&mut self.io, Transport::Taken) else {
            return Err(io::ErrorKind::InvalidInput.into());
        };
        let acceptor = TlsAcceptor::from(config);
        let deadline = self
            .liveness
            .negotiation_deadline()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(30));
        // Boxed: the handshake state is large and only needed once.
        let accept = Box::pin(acceptor.accept(tcp));
        let s = accept
            .or(async {
                Timer::at(deadline).await;
                Err(io::ErrorKind::TimedOut.into())
            })
            .await?;
        log::info!(
            "{}{}: {} STARTTLS {}",
            D::KIND,
            self.id,
            self.peer,
            tls_version(&s)
        );
        let cb = self.shared.tls().channel_bindings(s.get_ref().1);
        self.io = Transport::Tls(Box::new(s));
        Ok(cb)
    }

    /// STARTTLS as the initiating side (RFC 6120 §5.4.3.3, an outgoing s2s link): the
    /// handshake as TLS client with `config`, naming `name` (SNI), within the negotiation
    /// deadline. Answers the peer's certificate chain, for the caller to judge.
    pub(super) async fn start_tls_client(
        &mut self,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<Vec<CertificateDer<'static>>> {
        self.flush().await?;
        self.framer.reset();
        let Transport::Plain(tcp) = std::mem::replace(&mut self.io, Transport::Taken) else {
            return Err(io::ErrorKind::InvalidInput.into());
        };
        let deadline = self
            .liveness
            .negotiation_deadline()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(30));
        let connect = Box::pin(TlsConnector::from(config).connect(name, tcp));
        let s = connect
            .or(async {
                Timer::at(deadline).await;
                Err(io::ErrorKind::TimedOut.into())
            })
            .await?;
        log::info!(
            "{}{}: {} STARTTLS {}",
            D::KIND,
            self.id,
            self.peer,
            client_tls_version(&s)
        );
        let certs = owned_chain(s.get_ref().1.peer_certificates());
        self.io = Transport::TlsClient(Box::new(s));
        Ok(certs)
    }

    /// The certificate chain the peer presented in the TLS handshake (empty before TLS
    /// or when it sent none).
    pub(super) fn peer_certificates(&self) -> Vec<CertificateDer<'static>> {
        owned_chain(match &self.io {
            Transport::Tls(s) => s.get_ref().1.peer_certificates(),
            Transport::TlsClient(s) => s.get_ref().1.peer_certificates(),
            Transport::Plain(_) | Transport::WebSocket(_) | Transport::Taken => None,
        })
    }

    /// Completes (with `None`) when the peer closes its side of the TCP connection; never
    /// completes if it sends anything else (which stays unread for the loop). For racing a
    /// long wait, such as a queued password check, against the peer going away.
    pub(super) async fn peer_gone<T>(&self) -> Option<T> {
        let tcp = match &self.io {
            Transport::Plain(s) => Some(s),
            Transport::Tls(s) => Some(s.get_ref().0),
            Transport::TlsClient(s) => Some(s.get_ref().0),
            // The socket is under the WebSocket (and maybe TLS) layers.
            Transport::WebSocket(_) | Transport::Taken => None,
        };
        if let Some(tcp) = tcp
            && let Ok(0) | Err(_) = tcp.peek(&mut [0u8; 1]).await
        {
            return None;
        }
        std::future::pending().await
    }

    /// Feeds `input` to the machine; its actions go first in `queue`.
    fn feed(&mut self, input: InputOf<D>, queue: &mut VecDeque<ActionOf<D>>) {
        for a in self.machine.handle(input).into_iter().rev() {
            queue.push_front(a);
        }
    }

    /// The framer refused the input: the stream ends with its error.
    fn xml_failed(&mut self, e: &XmlError) -> Vec<ActionOf<D>> {
        let err = StreamError::from(e);
        log::info!("{}{}: stream error {err}", D::KIND, self.id);
        let mut out = Vec::new();
        self.machine.fail(err, &mut out);
        out
    }
}

/// The direct TLS handshake (XEP-0368: TLS before any XML) with `config`, until
/// `deadline`. `None` when it failed or took too long (logged); the connection is then
/// just dropped.
pub(super) async fn direct_tls<D: Driver>(
    shared: &Shared,
    tcp: Async<TcpStream>,
    config: Arc<ServerConfig>,
    peer: SocketAddr,
    id: u64,
    deadline: Instant,
) -> Option<(Transport, ChannelBindings)> {
    let acceptor = TlsAcceptor::from(config);
    // Boxed: the handshake state is large and only needed once, so it
    // should not widen every connection's future.
    let accept = Box::pin(acceptor.accept(tcp));
    let handshake = async { Some(accept.await) }.or(async {
        Timer::at(deadline).await;
        None
    });
    match handshake.await {
        Some(Ok(s)) => {
            let cb = shared.tls().channel_bindings(s.get_ref().1);
            log::info!("{}{id}: {peer} direct TLS {}", D::KIND, tls_version(&s));
            Some((Transport::Tls(Box::new(s)), cb))
        }
        Some(Err(e)) => {
            log::info!("{}{id}: {peer} TLS handshake failed: {e}", D::KIND);
            None
        }
        None => {
            log::info!("{}{id}: {peer} TLS handshake timed out", D::KIND);
            None
        }
    }
}

/// Serves one connection to its end: the loop, then the driver's [`Driver::finish`],
/// then the close.
///
/// Not an `async fn`: its arguments would stay in the future beside the [`Conn`] made
/// of them, and the link is most of a connection's memory.
pub(super) fn serve<D: Driver>(link: Link<D>, driver: D) -> impl Future<Output = ()> {
    let mut conn = Conn { link, driver };
    async move {
        let reason = conn.run().await;
        conn.driver.finish(&mut conn.link, &reason).await;
        let _ = conn.link.io.close().await;
        linger(&mut conn.link.io).await;
    }
}

/// Reads and drops what the peer still sends after we closed our side,
/// briefly. Closing a socket with unread input makes the kernel answer with
/// a reset, and a reset makes the peer's kernel discard what it had not yet
/// handed to the client: the stream error explaining the close would be
/// lost exactly when a client was sending too much.
async fn linger(io: &mut Transport) {
    let tcp = match io {
        Transport::Plain(s) => s,
        Transport::Tls(s) => s.get_ref().0,
        Transport::TlsClient(s) => s.get_ref().0,
        Transport::WebSocket(ws) => {
            return ws.linger(Instant::now() + LINGER_TIME, LINGER_BYTES).await;
        }
        Transport::Taken => return,
    };
    // Our FIN tells the peer we are done, so a well-behaved one closes too.
    let _ = tcp.get_ref().shutdown(std::net::Shutdown::Write);
    let until = Instant::now() + LINGER_TIME;
    let mut buf = [0u8; 1024];
    let mut total = 0;
    while total < LINGER_BYTES {
        let read = async { (&*tcp).read(&mut buf).await }
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

fn client_tls_version(s: &ClientTlsStream<Async<TcpStream>>) -> &'static str {
    match s.get_ref().1.protocol_version() {
        Some(futures_rustls::rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(futures_rustls::rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "TLS",
    }
}

/// Direct TLS as client (XEP-0368, an outgoing s2s link to a `_xmpps-server` target):
/// the handshake before any XML, until `deadline`. The stream and the peer's chain.
pub(super) async fn direct_tls_client(
    tcp: Async<TcpStream>,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    deadline: Instant,
) -> io::Result<(Transport, Vec<CertificateDer<'static>>)> {
    let connect = Box::pin(TlsConnector::from(config).connect(name, tcp));
    let s = connect
        .or(async {
            Timer::at(deadline).await;
            Err(io::ErrorKind::TimedOut.into())
        })
        .await?;
    let certs = owned_chain(s.get_ref().1.peer_certificates());
    Ok((Transport::TlsClient(Box::new(s)), certs))
}

/// A peer's certificate chain as the TLS session holds it, copied out.
fn owned_chain(chain: Option<&[CertificateDer<'_>]>) -> Vec<CertificateDer<'static>> {
    chain
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default()
}

fn tls_version(s: &TlsStream<Async<TcpStream>>) -> &'static str {
    match s.get_ref().1.protocol_version() {
        Some(futures_rustls::rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(futures_rustls::rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "TLS",
    }
}

/// One connection: the loop's state and the driver's, apart so that a driver can change
/// the first while it carries out an action.
struct Conn<D: Driver> {
    link: Link<D>,
    driver: D,
}

impl<D: Driver> Conn<D> {
    /// The main loop; returns why the connection ended, for the log.
    async fn run(&mut self) -> String {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            // Everything the framer can give before waiting again (none while the
            // peer's earlier stanzas wait for room in a recipient's queue).
            while self.link.pressed.is_none() {
                let actions = match self.link.framer.next_event() {
                    Ok(Some(ev)) => {
                        if let Event::Stanza(el) = &ev {
                            log::trace!(
                                "{}{}: in {}",
                                D::KIND,
                                self.link.id,
                                crate::features::invite::redact_preauth(
                                    &crate::features::forms::redact_password_fields(
                                        &crate::stream::sasl::redact_payloads(&el.to_string())
                                    )
                                )
                            );
                        }
                        self.link.machine.handle(ev.into())
                    }
                    Ok(None) => break,
                    Err(e) => self.link.xml_failed(&e),
                };
                if self.apply(actions).await == Flow::Close {
                    let _ = self.link.flush().await;
                    return "stream closed".into();
                }
            }
            if self.link.flush().await.is_err() {
                return "write failed".into();
            }
            let link = &mut self.link;
            let driver = &self.driver;
            let deadline = link.liveness.deadline();
            let paused_until = link.paused_until;
            let pressed = link.pressed.clone();
            let wake = async {
                match (paused_until, pressed) {
                    (Some(t), _) => {
                        Timer::at(t).await;
                        Wake::Resume
                    }
                    (None, Some((pressure, until))) => {
                        pressure
                            .relieved()
                            .or(async {
                                Timer::at(until).await;
                            })
                            .await;
                        Wake::Relieved
                    }
                    (None, None) => Wake::Read(link.io.read(&mut buf).await),
                }
            }
            .or(async { Wake::Queued(driver.queued().await) })
            .or(async {
                let _ = link.shutdown.recv().await;
                Wake::Shutdown
            })
            .or(async {
                Timer::at(deadline).await;
                Wake::Deadline
            })
            .await;
            let actions = match wake {
                Wake::Read(Ok(0)) => return "connection closed by peer".into(),
                Wake::Read(Ok(n)) => {
                    log::trace!("{}{}: read {n} bytes", D::KIND, self.link.id);
                    let now = Instant::now();
                    self.link.liveness.heard(now);
                    if let Some(pause) = self.link.karma.charge(n, now) {
                        // Over its rate: stop reading; TCP's flow control
                        // slows the sender down meanwhile.
                        log::debug!(
                            "{}{}: over its byte rate, pausing {pause:?}",
                            D::KIND,
                            self.link.id
                        );
                        self.link.paused_until = Some(now + pause);
                    }
                    match self.link.framer.feed(&buf[..n]) {
                        Ok(()) => continue,
                        Err(e) => self.link.xml_failed(&e),
                    }
                }
                Wake::Read(Err(e)) => match super::websocket::refused(&e) {
                    // RFC 7395: a WebSocket message it does not allow: its stream error.
                    Some(err) => {
                        log::info!("{}{}: stream error {err}", D::KIND, self.link.id);
                        let mut out = Vec::new();
                        self.link.machine.fail(err, &mut out);
                        out
                    }
                    None => return format!("read failed: {e}"),
                },
                Wake::Queued(item) => match self.driver.on_queued(&mut self.link, item) {
                    Step::Wait => continue,
                    Step::Apply(actions) => actions,
                    Step::End(actions, reason) => {
                        let _ = self.apply(actions).await;
                        let _ = self.link.flush().await;
                        return reason;
                    }
                },
                Wake::Shutdown => self.link.machine.shutdown(),
                Wake::Resume => {
                    self.link.paused_until = None;
                    continue;
                }
                Wake::Relieved => {
                    self.link.pressed = None;
                    continue;
                }
                Wake::Deadline => {
                    let text = match self.link.liveness.due(Instant::now()) {
                        Due::Nothing => continue,
                        Due::Ping => {
                            self.send_ping();
                            continue;
                        }
                        Due::NegotiationTimeout => "stream negotiation took too long",
                        Due::NoAnswer => {
                            self.link.is_lost = true;
                            "no answer to a ping"
                        }
                    };
                    log::info!("{}{}: {text}", D::KIND, self.link.id);
                    let mut out = Vec::new();
                    self.link.machine.fail(
                        StreamError::new(StreamCondition::ConnectionTimeout).with_text(text),
                        &mut out,
                    );
                    out
                }
            };
            if self.apply(actions).await == Flow::Close {
                let _ = self.link.flush().await;
                return "stream closed".into();
            }
        }
    }

    /// XEP-0199: asks a silent peer whether it is still there.
    fn send_ping(&mut self) {
        let n = self.link.pings + 1;
        let Some(xml) = self.driver.ping(&self.link, n) else {
            return;
        };
        self.link.pings = n;
        log::debug!("{}{}: silent, pinging", D::KIND, self.link.id);
        self.link.out.push_str(&xml);
    }

    /// Carries out the machine's actions, in order: the stream layer's ([`Wire`]) here,
    /// the machine's own through the driver; answers the driver gets from the outside
    /// go straight back to the machine.
    async fn apply(&mut self, actions: Vec<ActionOf<D>>) -> Flow {
        let mut queue: VecDeque<ActionOf<D>> = actions.into();
        while let Some(action) = queue.pop_front() {
            let own = match D::Machine::wire(action) {
                Ok(Wire::Send(s)) => {
                    self.link.out.push_str(&s);
                    continue;
                }
                Ok(Wire::ResetFramer) => {
                    self.link.framer.reset();
                    continue;
                }
                Ok(Wire::Close) => return Flow::Close,
                Err(own) => own,
            };
            match self.driver.effect(&mut self.link, own).await {
                Effect::Done => {}
                Effect::Feed(input) => self.link.feed(input, &mut queue),
                Effect::Close => return Flow::Close,
            }
        }
        Flow::Continue
    }
}
