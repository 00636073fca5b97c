//! The per-connection loop: the only place where a client's bytes meet a
//! socket. It reads into the framer, feeds the c2s state machine, carries
//! out its actions (writing, TLS, storage, router) and writes what the
//! router queues for the session. Its limits (XEP-0205): a byte rate
//! ([`Karma`]), the negotiation deadline and pings ([`Liveness`]), and the
//! session queue's bound (the router's).

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_rustls::TlsAcceptor;
use futures_rustls::server::TlsStream;
use smol::future::FutureExt as _;
use smol::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use smol::{Async, Timer};

use crate::jid::FullJid;
use crate::net::Shared;
use crate::net::limits::{Karma, Rate, Refused};
use crate::net::liveness::{Due, Liveness, LivenessConfig, ping_xml};
use crate::password::PasswordError;
use crate::router::{self, ToSession};
use crate::stanza::{StreamCondition, StreamError};
use crate::stream::c2s::{Action, C2s, Input};
use crate::xml::{Event, Framer, XmlError};

/// Bytes read at a time. Small, because every idle connection holds this
/// buffer while it waits (rustls keeps its own 4 KiB record buffer
/// underneath); a large stanza just takes more reads.
const READ_CHUNK: usize = 1024;

/// How long a write may take before the peer counts as dead.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest a client's reading pauses for recipients to catch up with what it sent;
/// then it is read again, and what finds a queue at its hard bound is refused to it.
const PRESSURE_WAIT: Duration = Duration::from_secs(10);

/// What must be left of the negotiation deadline after a throttle delay for the login to
/// go on (see [`Conn::wait_for_throttle`]).
const THROTTLE_MARGIN: Duration = Duration::from_secs(5);

/// After our side of a connection is closed, how long and how much of what
/// the peer still sends is read and dropped (see [`linger`]).
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

/// A client connection: plain TCP until STARTTLS, then TLS.
enum Transport {
    Plain(Async<TcpStream>),
    Tls(Box<TlsStream<Async<TcpStream>>>),
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
            Transport::Taken => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Transport::Taken => Poll::Ready(Ok(())),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_close(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
            Transport::Taken => Poll::Ready(Ok(())),
        }
    }
}

/// What woke the connection up.
enum Wake {
    Read(io::Result<usize>),
    Queued(Result<ToSession, router::Closed>),
    Shutdown,
    Deadline,
    /// A read pause ([`Karma`]) is over.
    Resume,
    /// The queues this client's stanzas filled have drained (or the wait is over).
    Relieved,
}

/// Whether the loop goes on after carrying out actions.
#[derive(PartialEq)]
enum Flow {
    Continue,
    Close,
}

/// One client connection.
struct Conn {
    /// Short id for log lines about this connection.
    id: u64,
    shared: Arc<Shared>,
    peer: SocketAddr,
    io: Transport,
    framer: Framer,
    c2s: C2s,
    /// Bytes waiting to be written at the next flush.
    out: String,
    /// The router's queue for this session, once bound.
    rx: Option<router::SessionRx>,
    /// The bound session, to unbind on the way out.
    bound: Option<(FullJid, u64)>,
    /// The negotiation deadline, then pings while bound.
    liveness: Liveness,
    /// The byte rate this stream may send at.
    karma: Karma,
    /// Reading is paused until then because the stream is over its rate.
    paused_until: Option<Instant>,
    /// Reading is paused because this client's stanzas filled other sessions' queues:
    /// until they drain, or until the instant given (DESIGN.md "Router": a sender that
    /// outpaces a recipient is slowed, the recipient is not punished).
    pressed: Option<(router::Backpressure, Instant)>,
    /// Server-to-client pings sent, for their ids.
    pings: u64,
    shutdown: async_channel::Receiver<()>,
}

/// The byte rate before authentication.
fn unauthenticated_rate(shared: &Shared) -> Rate {
    Rate {
        bytes_per_sec: shared.limits.rate_bytes_per_sec_unauthenticated,
        burst_bytes: shared.limits.rate_burst_bytes_unauthenticated,
    }
}

/// A connection over the limits of [`crate::net::limits::Admission`]: on
/// the STARTTLS port it gets our stream header and a stream error at once
/// (RFC 6120 §4.9.1.1 allows the error before the peer's header); on the
/// direct TLS port nothing, since a TLS handshake just to say no would
/// cost more than the connection. Never waits: one non-blocking write
/// into an empty socket buffer, then close.
pub fn refuse(shared: &Shared, tcp: Async<TcpStream>, direct_tls: bool, why: Refused) {
    if direct_tls {
        return;
    }
    let cond = match why {
        // §4.9.3.17: the server as a whole is out of room.
        Refused::Total(_) => StreamCondition::ResourceConstraint,
        // §4.9.3.14: this peer broke the local policy.
        Refused::PerAddress(_) | Refused::Rate => StreamCondition::PolicyViolation,
    };
    let mut c2s = C2s::new(shared.policy.clone(), None);
    let mut out = Vec::new();
    c2s.fail(StreamError::new(cond).with_text(why.to_string()), &mut out);
    let mut bytes = String::new();
    for a in out {
        if let Action::Send(s) = a {
            bytes.push_str(&s);
        }
    }
    let mut sock = tcp.get_ref();
    let _ = io::Write::write(&mut sock, bytes.as_bytes());
    // Closing with unread input makes the kernel send a reset that can
    // destroy the error in flight; read what is there and send FIN first.
    let mut sink = [0u8; 1024];
    let _ = io::Read::read(&mut sock, &mut sink);
    let _ = sock.shutdown(std::net::Shutdown::Write);
}

/// Serves one accepted client connection to its end. `direct_tls` is true
/// for the XEP-0368 port, where TLS starts before any XML.
pub async fn serve_client(
    shared: Arc<Shared>,
    tcp: Async<TcpStream>,
    peer: SocketAddr,
    direct_tls: bool,
    id: u64,
) {
    let now = Instant::now();
    let liveness = Liveness::new(
        LivenessConfig {
            ping_after_idle: shared.limits.ping_after_idle,
            ping_timeout: shared.limits.ping_timeout,
        },
        shared.negotiation_timeout,
        now,
    );
    let deadline = now + shared.negotiation_timeout;
    let (io, tls) = if direct_tls {
        let acceptor = TlsAcceptor::from(shared.tls().direct_config().clone());
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
                log::info!("c2s{id}: {peer} direct TLS {}", tls_version(&s));
                (Transport::Tls(Box::new(s)), Some(cb))
            }
            Some(Err(e)) => {
                log::info!("c2s{id}: {peer} TLS handshake failed: {e}");
                return;
            }
            None => {
                log::info!("c2s{id}: {peer} TLS handshake timed out");
                return;
            }
        }
    } else {
        (Transport::Plain(tcp), None)
    };
    let mut conn = Conn {
        id,
        framer: Framer::new(shared.limits_unauthenticated),
        c2s: C2s::new(shared.policy.clone(), tls),
        shutdown: shared.shutdown_rx.clone(),
        karma: Karma::new(unauthenticated_rate(&shared), now),
        shared,
        peer,
        io,
        out: String::new(),
        rx: None,
        bound: None,
        liveness,
        paused_until: None,
        pressed: None,
        pings: 0,
    };
    let reason = conn.run().await;
    if let Some((jid, sid)) = conn.bound.take() {
        // Unbinds, and tells contacts the resource went offline (RFC 6121 §4.5.2).
        Box::pin(conn.im().session_ended(&jid, sid)).await;
        log::info!("c2s{id}: {jid} disconnected: {reason}");
    } else {
        log::info!("c2s{id}: {peer} disconnected: {reason}");
    }
    let _ = conn.io.close().await;
    linger(&conn.io).await;
}

/// Reads and drops what the peer still sends after we closed our side,
/// briefly. Closing a socket with unread input makes the kernel answer with
/// a reset, and a reset makes the peer's kernel discard what it had not yet
/// handed to the client: the stream error explaining the close would be
/// lost exactly when a client was sending too much.
async fn linger(io: &Transport) {
    let tcp = match io {
        Transport::Plain(s) => s,
        Transport::Tls(s) => s.get_ref().0,
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

/// Completes (with `None`) when the peer closes its side of the TCP connection; never
/// completes if it sends anything else (which stays unread for the connection loop). For
/// racing a long wait, such as a queued password check, against the client going away.
async fn peer_gone<T>(io: &Transport) -> Option<T> {
    let tcp = match io {
        Transport::Plain(s) => Some(s),
        Transport::Tls(s) => Some(s.get_ref().0),
        Transport::Taken => None,
    };
    if let Some(tcp) = tcp
        && let Ok(0) | Err(_) = tcp.peek(&mut [0u8; 1]).await
    {
        return None;
    }
    std::future::pending().await
}

fn tls_version(s: &TlsStream<Async<TcpStream>>) -> &'static str {
    match s.get_ref().1.protocol_version() {
        Some(futures_rustls::rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(futures_rustls::rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "TLS",
    }
}

impl Conn {
    /// The main loop; returns why the connection ended, for the log.
    async fn run(&mut self) -> String {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            // Everything the framer can give before waiting again (none while the
            // client's earlier stanzas wait for room in a recipient's queue).
            while self.pressed.is_none() {
                let actions = match self.framer.next_event() {
                    Ok(Some(ev)) => {
                        if let Event::Stanza(el) = &ev {
                            log::trace!(
                                "c2s{}: in {}",
                                self.id,
                                crate::stream::sasl::redact_payloads(&el.to_string())
                            );
                        }
                        self.c2s.handle(Input::Xml(ev))
                    }
                    Ok(None) => break,
                    Err(e) => self.xml_failed(&e),
                };
                if self.apply(actions).await == Flow::Close {
                    let _ = self.flush().await;
                    return "stream closed".into();
                }
            }
            if self.flush().await.is_err() {
                return "write failed".into();
            }
            let deadline = self.liveness.deadline();
            let paused_until = self.paused_until;
            let pressed = self.pressed.clone();
            let rx = self.rx.clone();
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
                    (None, None) => Wake::Read(self.io.read(&mut buf).await),
                }
            }
            .or(async {
                match &rx {
                    Some(rx) => Wake::Queued(rx.recv().await),
                    None => std::future::pending().await,
                }
            })
            .or(async {
                let _ = self.shutdown.recv().await;
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
                    log::trace!("c2s{}: read {n} bytes", self.id);
                    let now = Instant::now();
                    self.liveness.heard(now);
                    if let Some(pause) = self.karma.charge(n, now) {
                        // Over its rate: stop reading; TCP's flow control
                        // slows the sender down meanwhile.
                        log::debug!("c2s{}: over its byte rate, pausing {pause:?}", self.id);
                        self.paused_until = Some(now + pause);
                    }
                    match self.framer.feed(&buf[..n]) {
                        Ok(()) => continue,
                        Err(e) => self.xml_failed(&e),
                    }
                }
                Wake::Read(Err(e)) => return format!("read failed: {e}"),
                Wake::Queued(Ok(ToSession::Stanza(xml))) => {
                    self.out.push_str(&xml);
                    // Batch whatever else is already queued into this write.
                    if let Some(rx) = &self.rx {
                        while self.out.len() < 16 * 1024 {
                            match rx.try_recv() {
                                Ok(ToSession::Stanza(xml)) => self.out.push_str(&xml),
                                Ok(ToSession::Close(err)) => {
                                    let mut out = Vec::new();
                                    self.c2s.fail(err, &mut out);
                                    let _ = self.apply(out).await;
                                    let _ = self.flush().await;
                                    return "closed by the server".into();
                                }
                                Err(_) => break,
                            }
                        }
                    }
                    continue;
                }
                Wake::Queued(Ok(ToSession::Close(err))) => {
                    log::info!("c2s{}: closing: {err}", self.id);
                    let mut out = Vec::new();
                    self.c2s.fail(err, &mut out);
                    out
                }
                // The router dropped the queue: the session was replaced.
                Wake::Queued(Err(_)) => return "session queue closed".into(),
                Wake::Shutdown => self.c2s.shutdown(),
                Wake::Resume => {
                    self.paused_until = None;
                    continue;
                }
                Wake::Relieved => {
                    self.pressed = None;
                    continue;
                }
                Wake::Deadline => {
                    let text = match self.liveness.due(Instant::now()) {
                        Due::Nothing => continue,
                        Due::Ping => {
                            self.send_ping();
                            continue;
                        }
                        Due::NegotiationTimeout => "stream negotiation took too long",
                        Due::NoAnswer => "no answer to a ping",
                    };
                    log::info!("c2s{}: {text}", self.id);
                    let mut out = Vec::new();
                    self.c2s.fail(
                        StreamError::new(StreamCondition::ConnectionTimeout).with_text(text),
                        &mut out,
                    );
                    out
                }
            };
            if self.apply(actions).await == Flow::Close {
                let _ = self.flush().await;
                return "stream closed".into();
            }
        }
    }

    /// The framer refused the input: the stream ends with its error.
    fn xml_failed(&mut self, e: &XmlError) -> Vec<Action> {
        let err = StreamError::from(e);
        log::info!("c2s{}: stream error {err}", self.id);
        let mut out = Vec::new();
        self.c2s.fail(err, &mut out);
        out
    }

    /// XEP-0199 §4.2: asks a silent session whether it is still there.
    fn send_ping(&mut self) {
        let Some(jid) = self.c2s.jid() else { return };
        self.pings += 1;
        log::debug!("c2s{}: silent, pinging", self.id);
        let xml = ping_xml(self.shared.router.domain(), jid.as_ref(), self.pings);
        self.out.push_str(&xml);
    }

    /// Writes what is buffered.
    async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        log::trace!(
            "c2s{}: out {}",
            self.id,
            crate::stream::sasl::redact_payloads(&self.out)
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

    /// Carries out the state machine's actions, in order; actions that ask
    /// something of the outside feed the answer straight back.
    async fn apply(&mut self, actions: Vec<Action>) -> Flow {
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            let next = match action {
                Action::Send(s) => {
                    self.out.push_str(&s);
                    None
                }
                Action::Close => return Flow::Close,
                Action::ResetFramer => {
                    self.framer.reset();
                    None
                }
                Action::StartTls => match self.start_tls().await {
                    Ok(cb) => Some(Input::TlsEstablished(cb)),
                    Err(e) => {
                        log::info!("c2s{}: {} TLS handshake failed: {e}", self.id, self.peer);
                        return Flow::Close;
                    }
                },
                Action::LookupScram { username, hash } => {
                    if !self.wait_for_throttle(&username).await {
                        self.queue_input(Input::AuthUnavailable, &mut queue);
                        continue;
                    }
                    Some(
                        match self.shared.auth.scram_credentials(username, hash).await {
                            Ok(creds) => Input::ScramCredentials(creds),
                            Err(e) => {
                                log::error!("c2s{}: storage: {e}", self.id);
                                Input::AuthUnavailable
                            }
                        },
                    )
                }
                Action::VerifyPlain { username, password } => {
                    if !self.wait_for_throttle(&username).await {
                        self.queue_input(Input::AuthUnavailable, &mut queue);
                        continue;
                    }
                    // A client that hangs up while its check waits is not checked.
                    let check = self.shared.auth.verify_plain(username, password);
                    let ok = match async { Some(check.await) }.or(peer_gone(&self.io)).await {
                        Some(ok) => ok,
                        None => {
                            log::debug!("c2s{}: left before its password check", self.id);
                            return Flow::Close;
                        }
                    };
                    Some(match ok {
                        Ok(ok) => Input::PlainVerified(ok),
                        Err(PasswordError::Busy) => {
                            log::warn!(
                                "c2s{}: {} too many password checks waiting, login refused",
                                self.id,
                                self.peer
                            );
                            Input::AuthUnavailable
                        }
                        Err(e) => {
                            log::error!("c2s{}: {e}", self.id);
                            Input::AuthUnavailable
                        }
                    })
                }
                Action::AuthFailed { username } => {
                    // Logged without the password; the next attempt on any
                    // connection waits as long as the throttle says.
                    let name = username.as_deref().unwrap_or("");
                    log::info!(
                        "c2s{}: {} failed to authenticate as {name:?}",
                        self.id,
                        self.peer
                    );
                    self.shared
                        .throttle()
                        .failed(name, self.peer.ip(), Instant::now());
                    None
                }
                Action::Authenticated { username } => {
                    log::info!("c2s{}: {} authenticated as {username}", self.id, self.peer);
                    self.shared.throttle().succeeded(&username, self.peer.ip());
                    self.framer.set_limits(self.shared.limits_authenticated);
                    let rate = Rate {
                        bytes_per_sec: self.shared.limits.rate_bytes_per_sec,
                        burst_bytes: self.shared.limits.rate_burst_bytes,
                    };
                    self.karma.set_rate(rate, Instant::now());
                    self.paused_until = None;
                    None
                }
                Action::Bind { resource } => {
                    let (tx, rx) = router::session_queue(self.shared.limits.max_queued_bytes);
                    let user = self.c2s_user();
                    let result = self.shared.router.bind(&user, resource, tx);
                    Some(Input::Bound(match result {
                        Ok(bound) => {
                            let jid = bound.jid;
                            log::info!("c2s{}: bound {jid}", self.id);
                            self.bound = Some((jid.clone(), bound.id));
                            self.rx = Some(rx);
                            self.liveness.bound(Instant::now());
                            if let Some(old) = bound.replaced {
                                Box::pin(self.im().session_replaced(&jid, old)).await;
                            }
                            Ok(jid)
                        }
                        Err(e) => Err(e),
                    }))
                }
                Action::Route(stanza) => {
                    if let Some((jid, _)) = &self.bound {
                        log::debug!(
                            "c2s{}: {} {:?}",
                            self.id,
                            stanza.el.name(),
                            stanza.to.as_ref().map(|t| t.to_string())
                        );
                        let jid = jid.clone();
                        let im = router::im::Im {
                            router: &self.shared.router,
                            storage: &self.shared.storage,
                            modules: &self.shared.modules,
                            conn: self.id,
                        };
                        // Awaited: the client's stanzas are handled in order.
                        // Boxed, like every storage path here: their futures are
                        // large, and inline they would widen every idle
                        // connection's task (massif: ~2 KiB per session).
                        let (routed, pressure) =
                            router::with_backpressure(im.route(&jid, stanza, &mut self.out)).await;
                        if !pressure.is_empty() {
                            log::debug!("c2s{}: recipients are behind, pausing reads", self.id);
                            self.pressed = Some((pressure, Instant::now() + PRESSURE_WAIT));
                        }
                        if routed.offline {
                            Box::pin(self.deliver_offline(&jid)).await;
                        }
                    }
                    None
                }
            };
            if let Some(input) = next {
                self.queue_input(input, &mut queue);
            }
        }
        Flow::Continue
    }

    /// Feeds `input` to the state machine; its actions go first in `queue`.
    fn queue_input(&mut self, input: Input, queue: &mut VecDeque<Action>) {
        for a in self.c2s.handle(input).into_iter().rev() {
            queue.push_front(a);
        }
    }

    /// The storage-backed routing path (rosters, presence, offline messages).
    fn im(&self) -> router::im::Im<'_> {
        router::im::Im {
            router: &self.shared.router,
            storage: &self.shared.storage,
            modules: &self.shared.modules,
            conn: self.id,
        }
    }

    /// XEP-0160: writes the user's offline messages page by page, flushing in between so
    /// a long backlog never sits in memory at once, and deletes each page once written.
    async fn deliver_offline(&mut self, jid: &FullJid) {
        let Some(user) = jid.local() else { return };
        loop {
            // Taken out of storage (committed) before it is written: a message is never
            // handed over twice, even when the disk is full (then nothing is taken).
            let Some(page) = self.im().offline_take(user, router::im::OFFLINE_PAGE).await else {
                return;
            };
            if page.is_empty() {
                return;
            }
            for (_, xml) in &page {
                self.out.push_str(xml);
            }
            if self.flush().await.is_err() {
                // Not written: back in storage for the next login; the read side sees
                // the end.
                self.im().offline_restore(user, page).await;
                return;
            }
            if page.len() < router::im::OFFLINE_PAGE {
                return;
            }
        }
    }

    fn c2s_user(&self) -> String {
        self.c2s.user().unwrap_or_default().to_owned()
    }

    /// Sleeps as long as the throttle asks before a credential check. False when the
    /// wait would not end well before the negotiation deadline: the attempt is then not
    /// evaluated, and the client is told to try again later (`temporary-auth-failure`,
    /// RFC 6120 §6.5.11) rather than kept waiting until hearth's own deadline closes the
    /// stream with `connection-timeout`.
    async fn wait_for_throttle(&mut self, username: &str) -> bool {
        let now = Instant::now();
        let delay = self.shared.throttle().check(username, self.peer.ip(), now);
        let Some(d) = delay else { return true };
        let fits = match self.liveness.negotiation_deadline() {
            // Room left after the wait for the rest of the login: the answer, resource
            // binding, a slow phone's round trips.
            Some(deadline) => now + d + THROTTLE_MARGIN <= deadline,
            None => true,
        };
        if !fits {
            log::info!(
                "c2s{}: login of {username:?} from {} refused for now: it owes a {d:?} delay",
                self.id,
                self.peer.ip()
            );
            return false;
        }
        log::info!(
            "c2s{}: delaying login of {username:?} from {} by {d:?}",
            self.id,
            self.peer.ip()
        );
        Timer::after(d).await;
        true
    }

    /// STARTTLS (RFC 6120 §5.4.3.3): `<proceed/>` is written first, then the
    /// handshake; the framer's plaintext leftovers are dropped with the reset.
    async fn start_tls(&mut self) -> io::Result<crate::stream::sasl::ChannelBindings> {
        self.flush().await?;
        self.framer.reset();
        let Transport::Plain(tcp) = std::mem::replace(&mut self.io, Transport::Taken) else {
            return Err(io::ErrorKind::InvalidInput.into());
        };
        let acceptor = TlsAcceptor::from(self.shared.tls().config().clone());
        let deadline = self
            .liveness
            .negotiation_deadline()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(30));
        let accept = Box::pin(acceptor.accept(tcp));
        let s = accept
            .or(async {
                Timer::at(deadline).await;
                Err(io::ErrorKind::TimedOut.into())
            })
            .await?;
        log::info!("c2s{}: {} STARTTLS {}", self.id, self.peer, tls_version(&s));
        let cb = self.shared.tls().channel_bindings(s.get_ref().1);
        self.io = Transport::Tls(Box::new(s));
        Ok(cb)
    }
}
