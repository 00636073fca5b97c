//! The MQTT listeners and the connection loop: the only MQTT code that touches sockets,
//! TLS, timers, storage (through [`crate::auth`]) and the router.
//!
//! The limits are c2s's (DESIGN.md "What a user gets when something is wrong"): the same
//! admission per source address ([`crate::net::limits::Admission`]), CONNECT within
//! `connect_timeout_secs` (TLS handshake and password check included), packets of at most
//! `max_packet_bytes` (5.0: DISCONNECT 0x95 first), the byte-rate allowance ("karma") of
//! `[limits]`, the SASL login throttle for wrong passwords, a bounded argon2id check.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_rustls::TlsAcceptor;
use smol::future::FutureExt as _;
use smol::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use smol::{Async, Executor, Timer};

use super::codec::{self, Connect, DecodeError, Decoded, ServerLimits, Version, reason};
use super::map::MapRule;
use super::session::{self, After, Refusal, Session};
use crate::config::MqttConfig;
use crate::jid::FullJid;
use crate::net::Shared;
use crate::net::limits::{Karma, Rate};
use crate::net::listen::OpenConnection;
use crate::password::PasswordError;
use crate::router::{self, ToSession};
use crate::stanza::Stanza;
use crate::xml::Element;

/// The resource of a device's MQTT session (`thermo@home.local/mqtt`).
pub const RESOURCE: &str = "mqtt";
/// How long a write may take before the client is taken for gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes read from the socket at a time: in every idle connection's future while it
/// waits, so small (a sensor's packets are tens of bytes; a large one takes more reads).
const READ_CHUNK: usize = 1024;
/// How long a presence waits for its recipients' queues to drain.
const PRESSURE_WAIT: Duration = Duration::from_secs(5);

/// What every MQTT connection shares besides [`Shared`].
pub struct Mqtt {
    pub config: MqttConfig,
    pub rules: Arc<[MapRule]>,
    /// A device's sustained presence rate (`[devices] presence_interval_secs`): readings
    /// the device module refused as too frequent are sent again this much later.
    pub retry_after: Duration,
}

/// Starts accepting on `listeners` (address, socket, whether TLS comes first).
pub fn start(
    ex: &Arc<Executor<'static>>,
    shared: &Arc<Shared>,
    config: &MqttConfig,
    retry_after: Duration,
    listeners: Vec<(SocketAddr, Async<TcpListener>, bool)>,
    live: &Arc<AtomicUsize>,
    next_id: &Arc<AtomicU64>,
) {
    let mqtt = Arc::new(Mqtt {
        config: config.clone(),
        rules: config.map.clone().into(),
        retry_after,
    });
    for (addr, listener, tls) in listeners {
        let kind = if tls {
            "TLS"
        } else {
            "plain, passwords in clear"
        };
        log::info!("listening for MQTT devices on {addr} ({kind})");
        let (shared, mqtt, live, next_id) =
            (shared.clone(), mqtt.clone(), live.clone(), next_id.clone());
        let ex2 = ex.clone();
        ex.spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(a) => a,
                    Err(e) => {
                        log::warn!("accept on {addr} failed: {e}");
                        Timer::after(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = tcp.get_ref().set_nodelay(true);
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                let slot = match shared.admission.admit(peer.ip(), Instant::now()) {
                    Ok(slot) => slot,
                    Err(why) => {
                        // MQTT has no answer before CONNECT: the connection is closed.
                        if shared
                            .admission
                            .log_refusal(peer.ip(), Instant::now())
                            .is_some()
                        {
                            log::info!("mqtt{id}: refused {peer} on {addr}: {why}");
                        }
                        continue;
                    }
                };
                log::info!("mqtt{id}: connection from {peer} on {addr}");
                let token = OpenConnection::new(&live);
                let (shared, mqtt) = (shared.clone(), mqtt.clone());
                ex2.spawn(async move {
                    serve(shared, mqtt, tcp, peer, tls, id).await;
                    drop(slot);
                    drop(token);
                })
                .detach();
            }
        })
        .detach();
    }
}

/// Serves one connection to its end.
async fn serve(
    shared: Arc<Shared>,
    mqtt: Arc<Mqtt>,
    tcp: Async<TcpStream>,
    peer: SocketAddr,
    tls: bool,
    id: u64,
) {
    let started = Instant::now();
    let deadline = started + mqtt.config.connect_timeout;
    let reason = if tls {
        let acceptor = TlsAcceptor::from(shared.tls().config().clone());
        let handshake = async { Some(acceptor.accept(tcp).await) };
        let timeout = async {
            Timer::at(deadline).await;
            None
        };
        match Box::pin(handshake.or(timeout)).await {
            Some(Ok(stream)) => {
                log::debug!("mqtt{id}: TLS established");
                let mut c = Conn::new(&shared, &mqtt, stream, peer, id, deadline);
                Box::pin(c.run()).await
            }
            Some(Err(e)) => format!("TLS handshake failed: {e}"),
            None => "no TLS handshake in time".into(),
        }
    } else {
        let mut c = Conn::new(&shared, &mqtt, tcp, peer, id, deadline);
        Box::pin(c.run()).await
    };
    log::info!("mqtt{id}: {peer} closed: {reason}");
}

/// One connection's state in the loop.
struct Conn<'a, S> {
    shared: &'a Shared,
    mqtt: &'a Mqtt,
    stream: S,
    peer: SocketAddr,
    id: u64,
    /// CONNECT must be answered by then.
    connect_deadline: Instant,
    /// Bytes read and not yet decoded; at most a packet and a chunk.
    buf: Vec<u8>,
    /// Bytes to write.
    out: Vec<u8>,
    karma: Karma,
    /// Reading waits until then (karma in debt).
    paused_until: Option<Instant>,
    /// The protocol version, once CONNECT was read.
    version: Option<Version>,
    /// The device's session sent available presence and not unavailable since.
    available: bool,
}

/// The end of a loop: why, for the log.
type Reason = String;

enum Event {
    Read(std::io::Result<usize>),
    Queue(Result<ToSession, router::Closed>),
    Tick,
    Shutdown,
}

impl<'a, S: AsyncRead + AsyncWrite + Unpin> Conn<'a, S> {
    fn new(
        shared: &'a Shared,
        mqtt: &'a Mqtt,
        stream: S,
        peer: SocketAddr,
        id: u64,
        connect_deadline: Instant,
    ) -> Self {
        let rate = Rate {
            bytes_per_sec: shared.limits.rate_bytes_per_sec_unauthenticated,
            burst_bytes: shared.limits.rate_burst_bytes_unauthenticated,
        };
        Conn {
            shared,
            mqtt,
            stream,
            peer,
            id,
            connect_deadline,
            buf: Vec::new(),
            out: Vec::new(),
            karma: Karma::new(rate, Instant::now()),
            paused_until: None,
            version: None,
            available: false,
        }
    }

    /// Reads more bytes (after the karma pause); `Ok(false)` at the end of the stream.
    async fn read_more(&mut self, chunk: &mut [u8]) -> std::io::Result<bool> {
        // Cleared only once slept: a wait cut short by another event is not forgiven.
        if let Some(t) = self.paused_until {
            Timer::at(t).await;
            self.paused_until = None;
        }
        let n = self.stream.read(chunk).await?;
        self.absorb(&chunk[..n]);
        Ok(n > 0)
    }

    fn absorb(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        let now = Instant::now();
        self.paused_until = self.karma.charge(bytes.len(), now).map(|d| now + d);
    }

    /// The next packet from the buffer, if a whole one is there.
    fn next_packet(&mut self) -> Result<Option<codec::Packet>, DecodeError> {
        match codec::decode(&self.buf, self.version, self.mqtt.config.max_packet_bytes)? {
            Decoded::Incomplete => Ok(None),
            Decoded::Packet(p, n) => {
                self.buf.drain(..n);
                if self.buf.is_empty() {
                    // A burst's buffer is not kept for an idle device's life.
                    self.buf = Vec::new();
                }
                Ok(Some(p))
            }
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        let write = async {
            self.stream.write_all(&out).await?;
            self.stream.flush().await
        };
        let timeout = async {
            Timer::after(WRITE_TIMEOUT).await;
            Err(std::io::ErrorKind::TimedOut.into())
        };
        write.or(timeout).await
    }

    /// Ends the connection after a bad packet: 5.0 clients hear why (§4.13.1).
    async fn fail(&mut self, e: DecodeError) -> Reason {
        if self.version == Some(Version::V5) {
            codec::disconnect(&mut self.out, e.reason());
        }
        let _ = self.flush().await;
        self.close().await;
        e.to_string()
    }

    async fn close(&mut self) {
        let _ = self.stream.close().await;
    }

    /// The whole connection: CONNECT, then the session.
    async fn run(&mut self) -> Reason {
        let mut chunk = [0u8; READ_CHUNK];
        // CONNECT, within the deadline (3.1.1 §3.1: the first packet must be CONNECT).
        let connect = loop {
            // 3.1.1 §3.1: the first packet is CONNECT; anything else (an HTTP request, a
            // TLS hello on the plain port) is closed on its first byte, not at the timeout.
            if self.buf.first().is_some_and(|&b| b != 0x10) {
                self.close().await;
                return "the first packet was not CONNECT".into();
            }
            match self.next_packet() {
                Ok(Some(codec::Packet::Connect(c))) => break c,
                Ok(Some(_)) => {
                    self.close().await;
                    return "the first packet was not CONNECT".into();
                }
                Ok(None) => {}
                Err(DecodeError::UnsupportedVersion(v)) => {
                    // 3.1.1 §3.1.2.2: return code 0x01, then close.
                    codec::connack(
                        &mut self.out,
                        Version::V311,
                        reason::V311_BAD_VERSION,
                        None,
                        None,
                    );
                    let _ = self.flush().await;
                    self.close().await;
                    return format!("protocol level {v} not supported");
                }
                Err(e) => {
                    // 5.0 §3.1.4: a version 5 client learns why its CONNECT was refused.
                    if codec::connect_level(&self.buf) == Some(5) {
                        codec::connack(&mut self.out, Version::V5, e.reason(), None, None);
                        let _ = self.flush().await;
                        self.close().await;
                        return e.to_string();
                    }
                    return self.fail(e).await;
                }
            }
            let deadline = self.connect_deadline;
            let read = async { Some(self.read_more(&mut chunk).await) };
            let timeout = async {
                Timer::at(deadline).await;
                None
            };
            match read.or(timeout).await {
                Some(Ok(true)) => {}
                Some(Ok(false)) => return "closed before CONNECT".into(),
                Some(Err(e)) => return format!("read: {e}"),
                None => {
                    self.close().await;
                    return "no CONNECT in time".into();
                }
            }
        };
        self.version = Some(connect.version);
        let account = match Box::pin(self.login(&connect)).await {
            Ok(account) => account,
            Err(why) => {
                let code = session::refusal_code(connect.version, why);
                codec::connack(&mut self.out, connect.version, code, None, None);
                let _ = self.flush().await;
                self.close().await;
                return format!("login refused: {why:?}");
            }
        };
        // The device's session in the router, like a client's resource binding.
        let (tx, rx) = router::session_queue(self.shared.limits.max_queued_bytes);
        let bound = match self.shared.router.bind(&account, Some(RESOURCE.into()), tx) {
            Ok(b) => b,
            Err(e) => {
                let code = session::refusal_code(connect.version, Refusal::Unavailable);
                codec::connack(&mut self.out, connect.version, code, None, None);
                let _ = self.flush().await;
                self.close().await;
                return format!("no session: {e:?}");
            }
        };
        let jid = bound.jid;
        if let Some(old) = bound.replaced {
            // An earlier connection of the same device (it reconnected before hearth
            // noticed the old one died): its contacts hear it went away.
            Box::pin(self.im().session_replaced(&jid, old)).await;
        }
        log::info!("mqtt{}: {} logged in as {jid}", self.id, self.peer);
        let assigned = (connect.version == Version::V5 && connect.client_id.is_empty())
            .then(|| format!("hearth-{}", &crate::stream::new_stream_id()[..8]));
        let keep_alive = Session::keep_alive(connect.keep_alive, self.mqtt.config.max_keep_alive);
        let limits = ServerLimits {
            max_packet: self.mqtt.config.max_packet_bytes as u32,
            receive_max: session::RECEIVE_MAX,
            keep_alive: (keep_alive != connect.keep_alive).then_some(keep_alive),
        };
        codec::connack(
            &mut self.out,
            connect.version,
            reason::SUCCESS,
            Some(limits),
            assigned.as_deref(),
        );
        let rate = Rate {
            bytes_per_sec: self.shared.limits.rate_bytes_per_sec,
            burst_bytes: self.shared.limits.rate_burst_bytes,
        };
        self.karma.set_rate(rate, Instant::now());
        let mut s = Session::new(&connect, account, self.mqtt.rules.clone());
        let (reason, clean) =
            Box::pin(self.session(&mut s, &jid, &rx, keep_alive, &mut chunk)).await;
        // The device is gone: unavailable, to everyone who saw it (a will or an unclean
        // end: the same, 5.0 §3.1.2.5; a clean DISCONNECT too).
        if !clean && let Some(w) = &s.will {
            log::debug!("mqtt{}: will on {} applies", self.id, w.topic);
        }
        // Readings still in the coalescing window go out first: they are the last ones.
        let mut sink = String::new();
        if let Some(p) = s.telemetry.take_due(
            Instant::now() + self.mqtt.config.coalesce,
            self.mqtt.config.coalesce,
        ) {
            Box::pin(self.send_presence(&jid, p, &mut sink)).await;
        }
        if self.available {
            let unavailable =
                Element::new("presence", crate::ns::CLIENT).with_attr("type", "unavailable");
            Box::pin(self.send_presence(&jid, unavailable, &mut sink)).await;
        }
        Box::pin(self.im().session_ended(&jid, bound.id)).await;
        reason
    }

    fn im(&self) -> router::im::Im<'a> {
        router::im::Im {
            router: &self.shared.router,
            storage: &self.shared.storage,
            modules: &self.shared.modules,
            conn: self.id,
        }
    }

    /// Checks CONNECT's credentials: the account, or why not. Throttled like SASL
    /// (`crate::stream::throttle`): failures slow further attempts from the address.
    async fn login(&mut self, c: &Connect) -> Result<String, Refusal> {
        session::precheck(c)?;
        let ip = self.peer.ip();
        let username = c.username.as_deref().unwrap_or_default();
        let Some(account) = session::account_of(username, self.shared.router.domain()) else {
            log::info!(
                "mqtt{}: {} failed to log in as {username:?}",
                self.id,
                self.peer
            );
            self.shared.throttle().failed("", ip, Instant::now());
            return Err(Refusal::BadCredentials);
        };
        let now = Instant::now();
        let delay = self.shared.throttle().check(&account, ip, now);
        if let Some(d) = delay {
            if now + d >= self.connect_deadline {
                log::info!(
                    "mqtt{}: login of {account:?} from {ip} refused for now: it owes a {d:?} delay",
                    self.id
                );
                return Err(Refusal::Throttled);
            }
            Timer::after(d).await;
        }
        let Ok(password) = String::from_utf8(c.password.clone().unwrap_or_default()) else {
            self.shared.throttle().failed(&account, ip, Instant::now());
            return Err(Refusal::BadCredentials);
        };
        let check = self.shared.auth.verify_plain(account.clone(), password);
        let deadline = self.connect_deadline;
        let timeout = async {
            Timer::at(deadline).await;
            Err(PasswordError::Busy)
        };
        match check.or(timeout).await {
            Ok(true) => {}
            Ok(false) => {
                log::info!(
                    "mqtt{}: {} failed to log in as {account:?}",
                    self.id,
                    self.peer
                );
                self.shared.throttle().failed(&account, ip, Instant::now());
                return Err(Refusal::BadCredentials);
            }
            Err(e) => {
                log::warn!("mqtt{}: password check not done: {e}", self.id);
                return Err(Refusal::Unavailable);
            }
        }
        self.shared.throttle().succeeded(&account, ip);
        match super::mqtt_allowed(&self.shared.storage, &account).await {
            Ok(true) => {}
            Ok(false) => {
                log::info!(
                    "mqtt{}: {account} is not a device account; MQTT is for devices",
                    self.id
                );
                return Err(Refusal::NotAuthorized);
            }
            Err(e) => {
                log::error!("mqtt{}: storage: {e}", self.id);
                return Err(Refusal::Unavailable);
            }
        }
        Ok(account)
    }

    /// The session after CONNACK; returns why it ended and whether the client said
    /// goodbye (DISCONNECT without its will).
    async fn session(
        &mut self,
        s: &mut Session,
        jid: &FullJid,
        rx: &router::SessionRx,
        keep_alive: u16,
        chunk: &mut [u8],
    ) -> (Reason, bool) {
        let idle = Session::idle_limit(keep_alive);
        let window = self.mqtt.config.coalesce;
        let mut last_rx = Instant::now();
        let mut sink = String::new();
        let shutdown = self.shared.shutdown_rx.clone();
        loop {
            if self.flush().await.is_err() {
                return ("write failed".into(), false);
            }
            // Whole packets first.
            loop {
                let packet = match self.next_packet() {
                    Ok(Some(p)) => p,
                    Ok(None) => break,
                    Err(e) => return (self.fail(e).await, false),
                };
                let now = Instant::now();
                match s.handle(packet, now, &mut self.out) {
                    After::Continue => {}
                    After::Available => {
                        let p = s.telemetry.take_now();
                        if self.send_presence(jid, p, &mut sink).await {
                            s.telemetry.defer(now + self.mqtt.retry_after, window);
                        }
                    }
                    After::Unavailable if !self.available => {}
                    After::Unavailable => {
                        let p = Element::new("presence", crate::ns::CLIENT)
                            .with_attr("type", "unavailable");
                        self.send_presence(jid, p, &mut sink).await;
                    }
                    After::Disconnected { with_will } => {
                        let _ = self.flush().await;
                        self.close().await;
                        return ("DISCONNECT".into(), !with_will);
                    }
                    After::Close { reason, why } => {
                        if s.version == Version::V5 {
                            codec::disconnect(&mut self.out, reason);
                        }
                        let _ = self.flush().await;
                        self.close().await;
                        return (why.into(), false);
                    }
                }
            }
            if let Some(p) = s.telemetry.take_due(Instant::now(), window)
                && self.send_presence(jid, p, &mut sink).await
            {
                s.telemetry
                    .defer(Instant::now() + self.mqtt.retry_after, window);
            }
            if self.flush().await.is_err() {
                return ("write failed".into(), false);
            }
            let idle_at = idle.map(|d| last_rx + d);
            let due_at = s.telemetry.due_at(window);
            let wake = match (idle_at, due_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let event = {
                let read = async { Event::Read(self.read_more(chunk).await.map(usize::from)) };
                let queue = async { Event::Queue(rx.recv().await) };
                let tick = async {
                    match wake {
                        Some(t) => Timer::at(t).await,
                        None => Timer::never().await,
                    };
                    Event::Tick
                };
                let stop = async {
                    let _ = shutdown.recv().await;
                    Event::Shutdown
                };
                read.or(queue).or(tick).or(stop).await
            };
            match event {
                Event::Read(Ok(0)) => return ("connection closed".into(), false),
                Event::Read(Ok(_)) => last_rx = Instant::now(),
                Event::Read(Err(e)) => return (format!("read: {e}"), false),
                // What the router sends the device (its contacts' presence, messages): a
                // sensor reads nothing; dropped, so the queue stays empty.
                Event::Queue(Ok(ToSession::Stanza(st))) => {
                    if let Some(answer) = session::answer_routed(&st.el) {
                        self.route(jid, answer, &mut sink).await;
                    }
                }
                Event::Queue(Ok(ToSession::Close(_)) | Err(_)) => {
                    if s.version == Version::V5 {
                        codec::disconnect(&mut self.out, reason::SESSION_TAKEN_OVER);
                    }
                    let _ = self.flush().await;
                    self.close().await;
                    return ("session taken over".into(), false);
                }
                Event::Tick => {
                    if idle_at.is_some_and(|t| Instant::now() >= t) {
                        // 5.0 §3.1.2.10: 1.5 × the keep-alive without a packet.
                        if s.version == Version::V5 {
                            codec::disconnect(&mut self.out, reason::KEEP_ALIVE_TIMEOUT);
                        }
                        let _ = self.flush().await;
                        self.close().await;
                        return ("keep-alive timeout".into(), false);
                    }
                }
                Event::Shutdown => {
                    if s.version == Version::V5 {
                        codec::disconnect(&mut self.out, reason::SERVER_SHUTTING_DOWN);
                    }
                    let _ = self.flush().await;
                    self.close().await;
                    return ("server shutting down".into(), false);
                }
            }
        }
    }

    /// Sends `presence` from the device's session, as a client's would be (RFC 6121
    /// §4.2: broadcast to its subscribers, the modules' hooks on the way). Waits a little
    /// for recipients' queues when they are full, as a client's reads are paused.
    ///
    /// Returns whether the presence was refused as over the device's presence rate
    /// (features::device: `policy-violation` of type `wait`): the caller keeps the
    /// readings and sends them again later, so the last reading is never lost to the rate.
    async fn send_presence(&mut self, jid: &FullJid, presence: Element, sink: &mut String) -> bool {
        let available = presence.attr("type").is_none();
        let refused = self.route(jid, presence, sink).await;
        if refused {
            log::debug!(
                "mqtt{}: presence from {jid} over its rate; kept for later",
                self.id
            );
        } else {
            self.available = available;
            log::debug!("mqtt{}: presence from {jid}", self.id);
        }
        refused
    }

    /// Routes `el` from the device's session, its `from` stamped as a client's is
    /// (RFC 6120 §8.1.2.1).
    /// Returns whether a presence came back refused as over the rate.
    async fn route(&mut self, jid: &FullJid, mut el: Element, sink: &mut String) -> bool {
        el.set_attr("from", jid.as_str());
        let stanza = match Stanza::from_client(el) {
            Ok(s) => s,
            Err(_) => return false,
        };
        let im = self.im();
        let route = im.route(jid, stanza, sink);
        let (_routed, pressure) = router::with_backpressure(route).await;
        let refused = over_rate(sink);
        // Anything else "for the device itself" (e.g. its own presence echoed) is not
        // read.
        sink.clear();
        if !pressure.is_empty() {
            let wait = async {
                pressure.relieved().await;
            };
            wait.or(async {
                Timer::after(PRESSURE_WAIT).await;
            })
            .await;
        }
        refused
    }
}

/// Whether `sink` (what the server sent the device's own session) holds a presence
/// error `policy-violation` of type `wait`: the device module's answer to a presence
/// over the device's rate.
fn over_rate(sink: &str) -> bool {
    if !sink.contains("policy-violation") {
        return false;
    }
    // The sink is whole stanzas written by the server, one after another.
    let mut rest = sink;
    while let Some(start) = rest.find("<presence") {
        let tail = &rest[start..];
        // A presence ends at its start tag when that closes itself, else at its end tag
        // (presences do not nest).
        let head_end = tail.find('>').map_or(tail.len(), |e| e + 1);
        let end = if tail[..head_end].ends_with("/>") {
            head_end
        } else {
            tail.find("</presence>")
                .map_or(tail.len(), |e| e + "</presence>".len())
        };
        if let Some(p) = crate::xml::parse_fragment(&tail[..end])
            && p.attr("type") == Some("error")
            && let Some(e) = p.get_child("error", crate::ns::CLIENT)
            && e.attr("type") == Some("wait")
            && e.children().any(|c| c.name() == "policy-violation")
        {
            return true;
        }
        rest = &tail[end..];
    }
    false
}

#[cfg(test)]
mod tests {
    use super::over_rate;

    #[test]
    fn a_rate_refusal_is_told_from_other_answers() {
        let refused = "<presence type=\"error\" to=\"thermo@home/mqtt\"><error type=\"wait\">\
            <policy-violation xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/></error></presence>";
        assert!(over_rate(refused));
        // Another presence first, then the refusal.
        assert!(over_rate(&format!("<presence from=\"a@home\"/>{refused}")));
        // A policy-violation that is not about waiting (telemetry over its limits).
        assert!(!over_rate(&refused.replace("wait", "modify")));
        assert!(!over_rate(""));
        assert!(!over_rate(
            "<message><body>policy-violation</body></message>"
        ));
    }
}
