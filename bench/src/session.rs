//! An XMPP client session as a standard client makes it (RFC 6120): TCP, STARTTLS (§5) or
//! direct TLS (XEP-0368), SASL (§6) with SCRAM-SHA-1/256 or PLAIN, resource binding (§7),
//! the legacy session iq when a server still requires it (RFC 3921 §3), and initial
//! presence (RFC 6121 §4.2). Nothing here is specific to one server.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_rustls::TlsConnector;
use futures_rustls::client::TlsStream;
use futures_rustls::rustls::pki_types::ServerName;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use smol::net::TcpStream;
use smol::{Timer, future};

use crate::scram::{ScramClient, ScramError, ScramHash};
use crate::xml::{Element, Event, Framer, XmlError, escape};

const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
const NS_SM: &str = "urn:xmpp:sm:3";

/// The SASL mechanism to use (RFC 6120 §6.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mech {
    ScramSha1,
    ScramSha256,
    Plain,
}

impl Mech {
    pub fn name(self) -> &'static str {
        match self {
            Mech::ScramSha1 => "SCRAM-SHA-1",
            Mech::ScramSha256 => "SCRAM-SHA-256",
            Mech::Plain => "PLAIN",
        }
    }

    pub fn parse(s: &str) -> Option<Mech> {
        [Mech::ScramSha1, Mech::ScramSha256, Mech::Plain]
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s))
    }
}

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// RFC 6120 §5: plain TCP, then `<starttls/>` (the usual port 5222).
    StartTls,
    /// XEP-0368: TLS from the first byte (port 5223).
    Direct,
    /// No TLS at all, for servers configured to allow it.
    None,
}

/// Everything needed to log a session in; shared by all sessions of a run.
pub struct ClientConfig {
    pub host: String,
    pub port: u16,
    pub domain: String,
    pub password: String,
    pub mech: Mech,
    pub tls: TlsMode,
    pub connector: TlsConnector,
    pub server_name: ServerName<'static>,
    /// Bound on every single wait (connect, each reply).
    pub timeout: Duration,
}

impl ClientConfig {
    /// The same client settings for another server: `domain` (also the TLS SNI name) at
    /// `host:port`. `None` when `domain` is not usable as a TLS server name.
    pub fn for_server(&self, host: &str, port: u16, domain: &str) -> Option<ClientConfig> {
        Some(ClientConfig {
            host: host.to_owned(),
            port,
            domain: domain.to_owned(),
            password: self.password.clone(),
            mech: self.mech,
            tls: self.tls,
            connector: self.connector.clone(),
            server_name: crate::tls::server_name(domain)?,
            timeout: self.timeout,
        })
    }
}

/// Why a session failed; the stage says where.
#[derive(Debug)]
pub enum SessionError {
    Io(&'static str, io::Error),
    Xml(XmlError),
    Timeout(&'static str),
    /// The server closed the stream or connection while we waited for something.
    Closed(&'static str),
    /// `<stream:error>` (RFC 6120 §4.9) with its condition.
    StreamError(String),
    NoStartTls,
    /// The wanted mechanism is not offered; the offered ones are listed.
    MechanismNotOffered(String),
    /// `<failure>` (RFC 6120 §6.5) with its condition.
    AuthFailed(String),
    Scram(ScramError),
    /// The bind or session iq returned an error, or no JID.
    BindFailed(String),
    /// A message of ours came back as `type='error'` (RFC 6120 §8.3) with this condition.
    Bounced(String),
    /// XEP-0198 `<failed/>` (to `<enable/>` or `<resume/>`) with its condition.
    SmFailed(&'static str, String),
    Unexpected(&'static str, String),
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Io(stage, e) => write!(f, "{stage}: {e}"),
            SessionError::Xml(e) => write!(f, "{e}"),
            SessionError::Timeout(stage) => write!(f, "{stage}: timed out"),
            SessionError::Closed(stage) => write!(f, "{stage}: server closed the stream"),
            SessionError::StreamError(c) => write!(f, "stream error: {c}"),
            SessionError::NoStartTls => write!(f, "server offers no STARTTLS"),
            SessionError::MechanismNotOffered(m) => write!(f, "mechanism not offered (got: {m})"),
            SessionError::AuthFailed(c) => write!(f, "authentication failed: {c}"),
            SessionError::Scram(e) => write!(f, "SCRAM: {e}"),
            SessionError::BindFailed(c) => write!(f, "bind failed: {c}"),
            SessionError::Bounced(c) => write!(f, "message bounced: {c}"),
            SessionError::SmFailed(stage, c) => write!(f, "{stage}: <failed/> {c}"),
            SessionError::Unexpected(stage, name) => write!(f, "{stage}: unexpected <{name}>"),
        }
    }
}

impl From<XmlError> for SessionError {
    fn from(e: XmlError) -> Self {
        SessionError::Xml(e)
    }
}

impl From<ScramError> for SessionError {
    fn from(e: ScramError) -> Self {
        SessionError::Scram(e)
    }
}

/// Runs `fut` for at most `d`.
pub async fn timeout<T>(
    d: Duration,
    stage: &'static str,
    fut: impl Future<Output = Result<T, SessionError>>,
) -> Result<T, SessionError> {
    future::or(fut, async {
        Timer::after(d).await;
        Err(SessionError::Timeout(stage))
    })
    .await
}

/// The byte stream under the XML: plain TCP or TLS over TCP.
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
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
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_close(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

/// An XML stream over `S`: reads events, writes text.
pub struct Conn<S> {
    pub io: S,
    pub framer: Framer,
    /// Separate from the framer's buffer so a read cancelled by a timeout loses nothing.
    rbuf: Vec<u8>,
}

impl<S> Conn<S> {
    pub fn new(io: S) -> Self {
        Conn {
            io,
            framer: Framer::new(),
            rbuf: vec![0; 4096],
        }
    }

    /// The byte stream, leaving the XML state behind (STARTTLS restarts the stream).
    fn into_io(self) -> S {
        self.io
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// A reading half that keeps the XML state and a writing half, for a reader task and
    /// a writer task on one session.
    pub fn split(self) -> (Conn<smol::io::ReadHalf<S>>, smol::io::WriteHalf<S>) {
        let (r, w) = smol::io::split(self.io);
        (
            Conn {
                io: r,
                framer: self.framer,
                rbuf: self.rbuf,
            },
            w,
        )
    }
}

impl<S: AsyncRead + Unpin> Conn<S> {
    /// The next XML event; EOF is [`SessionError::Closed`].
    pub async fn next_event(&mut self, stage: &'static str) -> Result<Event, SessionError> {
        loop {
            if let Some(ev) = self.framer.next_event()? {
                return Ok(ev);
            }
            let n = self
                .io
                .read(&mut self.rbuf)
                .await
                .map_err(|e| SessionError::Io(stage, e))?;
            if n == 0 {
                return Err(SessionError::Closed(stage));
            }
            self.framer.push(&self.rbuf[..n]);
        }
    }

    /// The next top-level element; a stream error or close ends the session.
    pub async fn next_element(&mut self, stage: &'static str) -> Result<Element, SessionError> {
        match self.next_event(stage).await? {
            Event::Element(el) if el.name == "error" => Err(SessionError::StreamError(
                el.children
                    .iter()
                    .find(|c| c.name != "text")
                    .map_or_else(|| "undefined".to_owned(), |c| c.name.clone()),
            )),
            Event::Element(el) => Ok(el),
            Event::StreamClose => Err(SessionError::Closed(stage)),
            Event::StreamOpen(_) => Err(SessionError::Unexpected(stage, "stream:stream".into())),
        }
    }

    /// Reads until the server closes the stream or the connection (RFC 6120 §4.4).
    pub async fn drain_until_close(&mut self) -> Result<(), SessionError> {
        loop {
            match self.next_event("close").await {
                Ok(Event::StreamClose) | Err(SessionError::Closed(_)) => return Ok(()),
                Ok(_) => {}
                // A server may reset the connection right after its own close tag.
                Err(SessionError::Io(_, e)) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> Conn<S> {
    pub async fn send(&mut self, stage: &'static str, data: &str) -> Result<(), SessionError> {
        send(&mut self.io, stage, data).await
    }
}

/// Writes and flushes.
pub async fn send<W: AsyncWrite + Unpin>(
    io: &mut W,
    stage: &'static str,
    data: &str,
) -> Result<(), SessionError> {
    io.write_all(data.as_bytes())
        .await
        .map_err(|e| SessionError::Io(stage, e))?;
    io.flush().await.map_err(|e| SessionError::Io(stage, e))
}

/// A logged-in, bound, available session.
pub struct Session {
    pub conn: Conn<Transport>,
    /// The full JID the server bound (RFC 6120 §7.6.1).
    pub jid: String,
    /// Stream management, once enabled (XEP-0198).
    pub sm: Option<Sm>,
}

/// A client's side of XEP-0198 stream management: what it needs to answer `<r/>` and to
/// resume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sm {
    /// The id to resume by (`<enabled id=…/>`, §5); `None` when the server did not offer
    /// resumption.
    pub id: Option<String>,
    /// Stanzas received since `<enabled/>` (§4: `<message/>`, `<presence/>`, `<iq/>`,
    /// wrapping at 2^32).
    pub h: u32,
}

impl Sm {
    /// Counts `el` if it is a stanza (§4) and returns the answer it needs: `<a h=…/>` for
    /// the server's `<r/>` (the count includes every stanza read before it).
    pub fn on_element(&mut self, el: &Element) -> Option<String> {
        match el.name.as_str() {
            "message" | "presence" | "iq" => {
                self.h = self.h.wrapping_add(1);
                None
            }
            // The framer keeps local names only; a client sees no other top-level <r/>.
            "r" => Some(self.ack()),
            _ => None,
        }
    }

    /// `<a h=…/>` (§4) with the current count.
    pub fn ack(&self) -> String {
        format!("<a xmlns='{NS_SM}' h='{}'/>", self.h)
    }
}

/// The defined condition of a XEP-0198 `<failed/>` (§3, §5), or `undefined-condition`.
fn sm_condition(el: &Element) -> String {
    el.children
        .iter()
        .find(|c| c.name != "text")
        .map_or_else(|| "undefined-condition".to_owned(), |c| c.name.clone())
}

/// Opens a stream (RFC 6120 §4.7) and returns the features that follow it.
async fn open_stream<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    domain: &str,
) -> Result<Element, SessionError> {
    conn.framer.reset();
    let header = format!(
        "<?xml version='1.0'?><stream:stream to='{}' version='1.0' xml:lang='en' \
         xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
        escape(domain)
    );
    conn.send("stream header", &header).await?;
    match conn.next_event("stream header").await? {
        Event::StreamOpen(_) => {}
        Event::StreamClose => return Err(SessionError::Closed("stream header")),
        Event::Element(el) => return Err(SessionError::Unexpected("stream header", el.name)),
    }
    let features = conn.next_element("features").await?;
    if features.name != "features" {
        return Err(SessionError::Unexpected("features", features.name));
    }
    Ok(features)
}

/// Logs `user` in with `resource`, sends initial presence, and returns the session.
pub async fn login(
    cfg: &ClientConfig,
    user: &str,
    resource: &str,
) -> Result<Session, SessionError> {
    let mut session = login_bound(cfg, user, resource).await?;
    // RFC 6121 §4.2.1: initial presence makes the resource available.
    session.conn.send("presence", "<presence/>").await?;
    Ok(session)
}

/// Logs `user` in with `resource` up to resource binding, without initial presence: the
/// caller decides when the resource becomes available (and can time it).
pub async fn login_bound(
    cfg: &ClientConfig,
    user: &str,
    resource: &str,
) -> Result<Session, SessionError> {
    let t = cfg.timeout;
    let mut conn = connect(cfg, None).await?;
    timeout(t, "sasl", authenticate(&mut conn, cfg, user, &cfg.password)).await?;
    let jid = timeout(t, "bind", bind(&mut conn, &cfg.domain, resource)).await?;
    Ok(Session {
        conn,
        jid,
        sm: None,
    })
}

/// XEP-0198 §5 resumption on a new connection: TCP, TLS and SASL as for a login, then on
/// the restarted stream `<resume previd=… h=…/>` instead of binding. Returns the session
/// (its count carried on from `h`) and the server's `h` from `<resumed/>` (the stanzas it
/// had handled from the old connection); a `<failed/>` is [`SessionError::SmFailed`].
/// The stanzas the server sends again after `<resumed/>` are left unread.
pub async fn resume(
    cfg: &ClientConfig,
    user: &str,
    previd: &str,
    h: u32,
) -> Result<(Session, u32), SessionError> {
    let t = cfg.timeout;
    let mut conn = connect(cfg, None).await?;
    timeout(t, "sasl", authenticate(&mut conn, cfg, user, &cfg.password)).await?;
    let server_h = timeout(t, "resume", async {
        let features = open_stream(&mut conn, &cfg.domain).await?;
        if features.child("sm").is_none() {
            return Err(SessionError::SmFailed(
                "resume",
                "stream management not offered".into(),
            ));
        }
        conn.send(
            "resume",
            &format!(
                "<resume xmlns='{NS_SM}' previd='{}' h='{h}'/>",
                escape(previd)
            ),
        )
        .await?;
        let el = conn.next_element("resume").await?;
        match el.name.as_str() {
            "resumed" => el
                .attr("h")
                .and_then(|v| v.parse::<u32>().ok())
                .ok_or_else(|| SessionError::Unexpected("resume", "resumed without h".into())),
            "failed" => Err(SessionError::SmFailed("resume", sm_condition(&el))),
            _ => Err(SessionError::Unexpected("resume", el.name)),
        }
    })
    .await?;
    let session = Session {
        conn,
        jid: String::new(),
        sm: Some(Sm {
            id: Some(previd.to_owned()),
            h,
        }),
    };
    Ok((session, server_h))
}

/// One SASL attempt as `user` with `password` (any outcome counts, no resource bound), from
/// the local address `source` when given, so many attempts can come from many loopback
/// addresses (127.0.0.0/8) and per-address limits do not hide the server's own costs.
/// `Ok(())` on `<success/>`; the stream is then closed.
pub async fn sasl_attempt(
    cfg: &ClientConfig,
    user: &str,
    password: &str,
    source: Option<Ipv4Addr>,
) -> Result<(), SessionError> {
    let t = cfg.timeout;
    let mut conn = connect(cfg, source).await?;
    timeout(t, "sasl", authenticate(&mut conn, cfg, user, password)).await?;
    conn.send("close", "</stream:stream>").await
}

/// TCP (from `source` if given), then STARTTLS or direct TLS as configured: a stream
/// ready for SASL.
async fn connect(
    cfg: &ClientConfig,
    source: Option<Ipv4Addr>,
) -> Result<Conn<Transport>, SessionError> {
    let t = cfg.timeout;
    let tcp = timeout(t, "connect", async {
        let tcp = match source {
            None => TcpStream::connect((cfg.host.as_str(), cfg.port)).await,
            Some(src) => {
                let (host, port) = (cfg.host.clone(), cfg.port);
                smol::unblock(move || connect_from(src, &host, port))
                    .await
                    .and_then(TcpStream::try_from)
            }
        };
        tcp.map_err(|e| SessionError::Io("connect", e))
    })
    .await?;
    // Stanzas are small and latency is measured: do not let Nagle hold them back.
    tcp.set_nodelay(true)
        .map_err(|e| SessionError::Io("connect", e))?;

    let transport = match cfg.tls {
        TlsMode::None => Transport::Plain(tcp),
        TlsMode::Direct => Transport::Tls(Box::new(handshake(cfg, tcp).await?)),
        TlsMode::StartTls => {
            let mut conn = Conn::new(tcp);
            timeout(t, "starttls", async {
                let features = open_stream(&mut conn, &cfg.domain).await?;
                if features.child("starttls").is_none() {
                    return Err(SessionError::NoStartTls);
                }
                conn.send("starttls", &format!("<starttls xmlns='{NS_TLS}'/>"))
                    .await?;
                let reply = conn.next_element("starttls").await?;
                if reply.name != "proceed" {
                    return Err(SessionError::Unexpected("starttls", reply.name));
                }
                Ok(())
            })
            .await?;
            Transport::Tls(Box::new(handshake(cfg, conn.into_io()).await?))
        }
    };

    Ok(Conn::new(transport))
}

/// A blocking TCP connect from `source` (port chosen by the kernel) to an IPv4 `host`.
fn connect_from(source: Ipv4Addr, host: &str, port: u16) -> io::Result<std::net::TcpStream> {
    use rustix::net::{AddressFamily, SocketType, bind, connect, socket};
    let dest: Ipv4Addr = host
        .parse()
        .map_err(|_| io::Error::other("a source address needs an IPv4 --host"))?;
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None)?;
    bind(&fd, &SocketAddrV4::new(source, 0))?;
    connect(&fd, &SocketAddrV4::new(dest, port))?;
    Ok(std::net::TcpStream::from(fd))
}

async fn handshake(
    cfg: &ClientConfig,
    tcp: TcpStream,
) -> Result<TlsStream<TcpStream>, SessionError> {
    timeout(cfg.timeout, "tls handshake", async {
        cfg.connector
            .connect(cfg.server_name.clone(), tcp)
            .await
            .map_err(|e| SessionError::Io("tls handshake", e))
    })
    .await
}

/// RFC 6120 §6.4: SASL negotiation, then the stream restart.
async fn authenticate(
    conn: &mut Conn<Transport>,
    cfg: &ClientConfig,
    user: &str,
    password: &str,
) -> Result<(), SessionError> {
    let features = open_stream(conn, &cfg.domain).await?;
    let offered: Vec<&str> = features
        .child("mechanisms")
        .map(|m| m.children.iter().map(|c| c.text.trim()).collect())
        .unwrap_or_default();
    if !offered.contains(&cfg.mech.name()) {
        return Err(SessionError::MechanismNotOffered(offered.join(" ")));
    }

    let mut scram = None;
    let initial = match cfg.mech {
        // RFC 4616 §2: message = [authzid] NUL authcid NUL passwd.
        Mech::Plain => format!("\0{user}\0{password}"),
        Mech::ScramSha1 | Mech::ScramSha256 => {
            let hash = if cfg.mech == Mech::ScramSha1 {
                ScramHash::Sha1
            } else {
                ScramHash::Sha256
            };
            let client = ScramClient::new(hash, user, password, ScramClient::random_nonce());
            let first = client.client_first();
            scram = Some(client);
            first
        }
    };
    conn.send(
        "sasl",
        &format!(
            "<auth xmlns='{NS_SASL}' mechanism='{}'>{}</auth>",
            cfg.mech.name(),
            BASE64.encode(initial)
        ),
    )
    .await?;

    let mut is_verified = scram.is_none();
    loop {
        let el = conn.next_element("sasl").await?;
        let data = BASE64.decode(el.text.trim()).unwrap_or_default();
        match el.name.as_str() {
            "challenge" => {
                let Some(client) = scram.as_mut() else {
                    return Err(SessionError::Unexpected("sasl", el.name));
                };
                let reply = if is_verified {
                    String::new()
                } else if data.starts_with(b"v=") || data.starts_with(b"e=") {
                    // RFC 6120 §6.3.10 allows the server-final-message as a challenge
                    // followed by an empty response.
                    client.verify_server_final(&data)?;
                    is_verified = true;
                    String::new()
                } else {
                    client.handle_server_first(&data)?
                };
                conn.send(
                    "sasl",
                    &format!(
                        "<response xmlns='{NS_SASL}'>{}</response>",
                        BASE64.encode(reply)
                    ),
                )
                .await?;
            }
            "success" => {
                if let Some(client) = &scram
                    && !is_verified
                {
                    client.verify_server_final(&data)?;
                }
                return Ok(());
            }
            "failure" => {
                let condition = el
                    .children
                    .iter()
                    .find(|c| c.name != "text")
                    .map_or_else(|| "not-authorized".to_owned(), |c| c.name.clone());
                return Err(SessionError::AuthFailed(condition));
            }
            _ => return Err(SessionError::Unexpected("sasl", el.name)),
        }
    }
}

/// RFC 6120 §7: bind `resource` after the post-SASL stream restart; returns the full JID.
async fn bind(
    conn: &mut Conn<Transport>,
    domain: &str,
    resource: &str,
) -> Result<String, SessionError> {
    let features = open_stream(conn, domain).await?;
    if features.child("bind").is_none() {
        return Err(SessionError::BindFailed("no bind feature".into()));
    }
    conn.send(
        "bind",
        &format!(
            "<iq type='set' id='bind1'><bind xmlns='{NS_BIND}'><resource>{}</resource></bind></iq>",
            escape(resource)
        ),
    )
    .await?;
    let jid = loop {
        let el = conn.next_element("bind").await?;
        if el.name != "iq" || el.attr("id") != Some("bind1") {
            continue; // e.g. a stanza pushed early; nothing else may come before (§7.1)
        }
        if el.attr("type") != Some("result") {
            return Err(SessionError::BindFailed(stanza_error(&el)));
        }
        match el.child("bind").and_then(|b| b.child("jid")) {
            Some(j) if !j.text.trim().is_empty() => break j.text.trim().to_owned(),
            _ => return Err(SessionError::BindFailed("no jid in result".into())),
        }
    };

    // RFC 3921 §3 session establishment, only when the server does not mark it optional
    // (RFC 6121 Appendix E).
    if let Some(s) = features.child("session")
        && s.child("optional").is_none()
    {
        conn.send(
            "session",
            &format!("<iq type='set' id='sess1'><session xmlns='{NS_SESSION}'/></iq>"),
        )
        .await?;
        loop {
            let el = conn.next_element("session").await?;
            if el.name == "iq" && el.attr("id") == Some("sess1") {
                if el.attr("type") != Some("result") {
                    return Err(SessionError::BindFailed(stanza_error(&el)));
                }
                break;
            }
        }
    }
    Ok(jid)
}

/// The defined condition of a stanza error (RFC 6120 §8.3).
pub fn stanza_error(el: &Element) -> String {
    el.child("error")
        .and_then(|e| e.children.iter().find(|c| c.name != "text"))
        .map_or_else(|| "unknown error".to_owned(), |c| c.name.clone())
}

/// The reply a client owes an iq get/set from the server (RFC 6120 §8.2.3): a result for
/// XEP-0199 pings, `service-unavailable` for anything else. `None` for other stanzas.
pub fn iq_reply(el: &Element) -> Option<String> {
    if el.name != "iq" || !matches!(el.attr("type"), Some("get" | "set")) {
        return None;
    }
    let id = escape(el.attr("id").unwrap_or(""));
    let to = el
        .attr("from")
        .map(|f| format!(" to='{}'", escape(f)))
        .unwrap_or_default();
    Some(if el.child("ping").is_some() {
        format!("<iq type='result' id='{id}'{to}/>")
    } else {
        format!(
            "<iq type='error' id='{id}'{to}><error type='cancel'><service-unavailable \
             xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
        )
    })
}

impl Session {
    /// XEP-0198 §3: `<enable/>` (with `resume='true'` when `resume`), waiting for
    /// `<enabled/>`. Stanzas read meanwhile came before it and are not counted.
    pub async fn enable_sm(&mut self, resume: bool, t: Duration) -> Result<(), SessionError> {
        let attr = if resume { " resume='true'" } else { "" };
        self.conn
            .send("enable", &format!("<enable xmlns='{NS_SM}'{attr}/>"))
            .await?;
        let conn = &mut self.conn;
        let sm = timeout(t, "enable", async {
            loop {
                let el = conn.next_element("enable").await?;
                match el.name.as_str() {
                    "enabled" => {
                        let id = el.attr("id").map(str::to_owned);
                        let resumable = matches!(el.attr("resume"), Some("true" | "1"));
                        if resume && (id.is_none() || !resumable) {
                            return Err(SessionError::SmFailed(
                                "enable",
                                "enabled without resumption".into(),
                            ));
                        }
                        return Ok(Sm { id, h: 0 });
                    }
                    "failed" => return Err(SessionError::SmFailed("enable", sm_condition(&el))),
                    _ => {
                        if let Some(reply) = iq_reply(&el) {
                            conn.send("enable", &reply).await?;
                        }
                    }
                }
            }
        })
        .await?;
        self.sm = Some(sm);
        Ok(())
    }

    /// Reads one element, counting it for stream management and answering `<r/>` and
    /// server iqs (pings) as a client must.
    pub async fn next_counted(&mut self, stage: &'static str) -> Result<Element, SessionError> {
        let el = self.conn.next_element(stage).await?;
        self.answer(stage, &el).await?;
        Ok(el)
    }

    /// What a client owes for `el`: `<a/>` for `<r/>` (counting stanzas first) and the
    /// answer to a server's iq.
    async fn answer(&mut self, stage: &'static str, el: &Element) -> Result<(), SessionError> {
        let ack = self.sm.as_mut().and_then(|sm| sm.on_element(el));
        if let Some(a) = ack {
            self.conn.send(stage, &a).await?;
        }
        if let Some(reply) = iq_reply(el) {
            self.conn.send(stage, &reply).await?;
        }
        Ok(())
    }

    /// Sends `<r/>` (XEP-0198 §4) and reads until the server's `<a/>`, counting and
    /// answering what comes before it; returns the server's `h`.
    pub async fn request_ack(&mut self, t: Duration) -> Result<u32, SessionError> {
        self.conn
            .send("ack", &format!("<r xmlns='{NS_SM}'/>"))
            .await?;
        timeout(t, "ack", async {
            loop {
                let el = self.next_counted("ack").await?;
                if el.name == "a" {
                    return el
                        .attr("h")
                        .and_then(|v| v.parse::<u32>().ok())
                        .ok_or_else(|| SessionError::Unexpected("ack", "a without h".into()));
                }
            }
        })
        .await
    }

    /// Drops the TCP connection without closing the stream or TLS: what a phone losing
    /// its network looks like to the server (XEP-0198 §5).
    pub fn drop_connection(self) {
        drop(self);
    }

    /// Ends the stream politely (RFC 6120 §4.4) and waits for the server's close.
    pub async fn close(mut self, t: Duration) -> Result<(), SessionError> {
        self.conn.send("close", "</stream:stream>").await?;
        timeout(t, "close", self.conn.drain_until_close()).await
    }

    /// Stays connected answering pings until `stop` is closed, then closes. Returns
    /// `Ok(true)` when the session lived until told to stop, `Ok(false)` if the server ended it.
    pub async fn idle(
        mut self,
        stop: smol::channel::Receiver<()>,
        t: Duration,
    ) -> Result<bool, SessionError> {
        enum Step {
            Stop,
            Event(Result<Event, SessionError>),
        }
        loop {
            let step = future::or(
                async { Step::Event(self.conn.next_event("idle").await) },
                async {
                    let _ = stop.recv().await;
                    Step::Stop
                },
            )
            .await;
            match step {
                Step::Stop => break,
                Step::Event(Ok(Event::Element(el))) => {
                    if el.name == "error" {
                        return Err(SessionError::StreamError(sm_condition(&el)));
                    }
                    self.answer("idle", &el).await?;
                }
                Step::Event(Ok(Event::StreamClose) | Err(SessionError::Closed(_))) => {
                    return Ok(false);
                }
                Step::Event(Ok(Event::StreamOpen(_))) => {}
                Step::Event(Err(e)) => return Err(e),
            }
        }
        self.close(t).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(src: &str) -> Element {
        Element::parse(src).unwrap()
    }

    #[test]
    fn counts_stanzas_and_answers_requests() {
        let mut sm = Sm {
            id: Some("x".into()),
            h: 0,
        };
        assert_eq!(sm.on_element(&el("<presence from='a@b/c'/>")), None);
        assert_eq!(
            sm.on_element(&el("<message><body>hi</body></message>")),
            None
        );
        assert_eq!(sm.on_element(&el("<iq type='get' id='1'/>")), None);
        // Nonzas are not stanzas (XEP-0198 §4).
        assert_eq!(sm.on_element(&el("<a xmlns='urn:xmpp:sm:3' h='0'/>")), None);
        assert_eq!(
            sm.on_element(&el("<r xmlns='urn:xmpp:sm:3'/>")),
            Some("<a xmlns='urn:xmpp:sm:3' h='3'/>".to_owned())
        );
        assert_eq!(sm.h, 3);
    }

    #[test]
    fn count_wraps() {
        let mut sm = Sm {
            id: None,
            h: u32::MAX,
        };
        sm.on_element(&el("<message/>"));
        assert_eq!(sm.h, 0);
    }

    #[test]
    fn failed_condition() {
        let f = el("<failed xmlns='urn:xmpp:sm:3'><item-not-found \
             xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>");
        assert_eq!(sm_condition(&f), "item-not-found");
        assert_eq!(
            sm_condition(&el("<failed xmlns='urn:xmpp:sm:3'/>")),
            "undefined-condition"
        );
    }
}
