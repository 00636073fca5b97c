//! A tiny, blocking, test-only XMPP client over a real TLS socket (rustls, ring),
//! for the raw-protocol tests: it says exactly what a test tells it to, including
//! things no real client would (auth before TLS, spoofed `from`, broken XML).
//!
//! It trusts the server's certificate by pinning: the end-entity certificate must be
//! byte-for-byte the one in a PEM file (hearth's self-signed `data_dir/tls/cert.pem`).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_rustls::rustls;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};
use sha2::Digest;

use super::sasl::{self, Mechanism};
use super::xml::{Item, Node, Reader, escape};

pub const NS_CLIENT: &str = "jabber:client";
pub const NS_STREAM: &str = "http://etherx.jabber.org/streams";
pub const NS_STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
pub const NS_STANZA_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
pub const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
pub const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
pub const NS_SASL_CB: &str = "urn:xmpp:sasl-cb:0";
pub const NS_PING: &str = "urn:xmpp:ping";

/// How long a test waits for one expected reply before failing.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the first certificate of a PEM file as DER.
pub fn read_pem_cert(path: &Path) -> Vec<u8> {
    let pem = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read certificate {}: {e}", path.display()));
    let body: String = pem
        .split("-----BEGIN CERTIFICATE-----")
        .nth(1)
        .and_then(|rest| rest.split("-----END CERTIFICATE-----").next())
        .unwrap_or_else(|| panic!("no CERTIFICATE block in {}", path.display()))
        .split_whitespace()
        .collect();
    B64.decode(body).expect("certificate PEM is not base64")
}

/// Accepts exactly one certificate, whatever its names or issuer: trust on first use,
/// as a family's phone would pin the home server's self-signed certificate.
#[derive(Debug)]
struct PinnedCert {
    der: Vec<u8>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.der.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "server certificate is not the pinned one".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

pub fn tls_config(pinned_der: Vec<u8>) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = PinnedCert {
        der: pinned_der,
        algorithms: provider.signature_verification_algorithms,
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Arc::new(config)
}

enum Io {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    Gone,
}

/// What [`Conn::recv`] found.
#[derive(Debug)]
pub enum Event {
    Item(Item),
    /// The server closed the TCP connection (or TLS ended).
    Closed,
    Timeout,
}

/// The outcome of a failed SASL exchange.
#[derive(Debug)]
pub enum AuthError {
    /// `<failure/>` with this defined condition (RFC 6120 §6.5).
    Failure(String, Box<Node>),
    /// Something else came back: a stream error, another element, a close, a timeout.
    Unexpected(Box<Event>),
    /// Our own mechanism rejected the server's data (e.g. a bad server signature).
    Mechanism(String),
}

/// One client connection.
pub struct Conn {
    io: Io,
    reader: Reader,
    pinned: Vec<u8>,
    pub domain: String,
    /// The server's last stream header.
    pub header: Option<Node>,
    /// The last `<stream:features/>`.
    pub features: Node,
    /// The full JID after resource binding.
    pub jid: Option<String>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh stanza id, unique within the test process.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

impl Conn {
    /// Opens TCP and the stream, without TLS: the caller decides what to do next.
    pub fn connect_plain(addr: SocketAddr, domain: &str, pinned_cert: &Path) -> Conn {
        let tcp = TcpStream::connect_timeout(&addr, REPLY_TIMEOUT)
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        Conn::plain_over(tcp, domain, pinned_cert)
    }

    /// [`Conn::connect_plain`] from the loopback address `source` (e.g. 127.0.0.2), so a
    /// test can be several hosts as the server's per-address limits see them.
    pub fn connect_plain_from(
        addr: SocketAddr,
        source: std::net::IpAddr,
        domain: &str,
        pinned_cert: &Path,
    ) -> Conn {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .unwrap();
        socket
            .bind(&SocketAddr::new(source, 0).into())
            .unwrap_or_else(|e| panic!("cannot bind {source}: {e}"));
        socket
            .connect_timeout(&addr.into(), REPLY_TIMEOUT)
            .unwrap_or_else(|e| panic!("cannot connect to {addr} from {source}: {e}"));
        Conn::plain_over(socket.into(), domain, pinned_cert)
    }

    fn plain_over(tcp: TcpStream, domain: &str, pinned_cert: &Path) -> Conn {
        tcp.set_nodelay(true).unwrap();
        let mut conn = Conn {
            io: Io::Plain(tcp),
            reader: Reader::new(),
            pinned: read_pem_cert(pinned_cert),
            domain: domain.into(),
            header: None,
            features: empty_node(),
            jid: None,
        };
        conn.open_stream();
        conn
    }

    /// TCP, stream, STARTTLS (RFC 6120 §5), new stream: ready for SASL.
    pub fn connect_starttls(addr: SocketAddr, domain: &str, pinned_cert: &Path) -> Conn {
        let mut conn = Conn::connect_plain(addr, domain, pinned_cert);
        conn.starttls();
        conn
    }

    /// TLS from the first byte (XEP-0368 direct TLS), then the stream.
    pub fn connect_direct_tls(addr: SocketAddr, domain: &str, pinned_cert: &Path) -> Conn {
        let tcp = TcpStream::connect_timeout(&addr, REPLY_TIMEOUT)
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        tcp.set_nodelay(true).unwrap();
        let mut conn = Conn {
            io: Io::Gone,
            reader: Reader::new(),
            pinned: read_pem_cert(pinned_cert),
            domain: domain.into(),
            header: None,
            features: empty_node(),
            jid: None,
        };
        conn.wrap_tls(tcp);
        conn.open_stream();
        conn
    }

    fn wrap_tls(&mut self, tcp: TcpStream) {
        let name = ServerName::try_from(self.domain.clone()).unwrap();
        let tls = ClientConnection::new(tls_config(self.pinned.clone()), name).unwrap();
        let mut stream = StreamOwned::new(tls, tcp);
        stream.sock.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .unwrap_or_else(|e| panic!("TLS handshake with {} failed: {e}", self.domain));
        }
        self.io = Io::Tls(Box::new(stream));
    }

    /// Sends `<starttls/>`, expects `<proceed/>`, does the handshake, restarts the stream.
    pub fn starttls(&mut self) {
        assert!(
            self.features.has_child("starttls", NS_TLS),
            "server does not offer STARTTLS: {}",
            self.features
        );
        self.send(&format!("<starttls xmlns='{NS_TLS}'/>"));
        let reply = self.expect_element("<proceed/>");
        assert!(
            reply.is("proceed", NS_TLS),
            "expected <proceed/>, got {reply}"
        );
        let Io::Plain(tcp) = std::mem::replace(&mut self.io, Io::Gone) else {
            panic!("STARTTLS on a connection that is already TLS");
        };
        self.wrap_tls(tcp);
        self.reader.reset();
        self.open_stream();
    }

    /// Sends a stream header and reads the server's header and features.
    pub fn open_stream(&mut self) {
        self.send(&format!(
            "<?xml version='1.0'?><stream:stream xmlns='{NS_CLIENT}' \
             xmlns:stream='{NS_STREAM}' to='{}' version='1.0' xml:lang='en'>",
            escape(&self.domain)
        ));
        match self.recv(REPLY_TIMEOUT) {
            Event::Item(Item::StreamOpen(header)) => self.header = Some(header),
            other => panic!(
                "expected the server's stream header, got {other:?}{}",
                self.pending()
            ),
        }
        let features = self.expect_element("<stream:features/>");
        assert!(
            features.is("features", NS_STREAM),
            "expected <stream:features/>, got {features}"
        );
        self.features = features;
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.io, Io::Tls(_))
    }

    fn tls(&self) -> &ClientConnection {
        match &self.io {
            Io::Tls(s) => &s.conn,
            _ => panic!("not a TLS connection"),
        }
    }

    pub fn tls_version(&self) -> Option<rustls::ProtocolVersion> {
        self.tls().protocol_version()
    }

    /// RFC 9266 §2: 32 bytes exported with label "EXPORTER-Channel-Binding", no context.
    pub fn tls_exporter(&self) -> Vec<u8> {
        self.tls()
            .export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
            .unwrap()
    }

    /// RFC 5929 §4.1: the hash of the server's certificate, with the certificate's
    /// signature hash, except that MD5 and SHA-1 are replaced by SHA-256.
    pub fn tls_server_end_point(&self) -> Vec<u8> {
        let certs = self
            .tls()
            .peer_certificates()
            .expect("no server certificate");
        let der = certs[0].as_ref();
        match signature_hash(der) {
            SigHash::Sha384 => sha2::Sha384::digest(der).to_vec(),
            SigHash::Sha512 => sha2::Sha512::digest(der).to_vec(),
            SigHash::Sha256OrWeaker => sha2::Sha256::digest(der).to_vec(),
        }
    }

    /// The SASL mechanisms offered in the current features.
    pub fn mechanisms(&self) -> Vec<String> {
        self.features
            .child("mechanisms", NS_SASL)
            .map(|m| {
                m.children
                    .iter()
                    .filter(|c| c.name == "mechanism")
                    .map(|c| c.text.trim().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The XEP-0440 channel-binding types the server advertises.
    pub fn channel_binding_types(&self) -> Vec<String> {
        self.features
            .child("sasl-channel-binding", NS_SASL_CB)
            .map(|cb| {
                cb.children
                    .iter()
                    .filter_map(|c| c.attr("type").map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Runs one SASL exchange (RFC 6120 §6.4); on success restarts the stream.
    pub fn authenticate(&mut self, mech: &mut dyn Mechanism) -> Result<(), AuthError> {
        let initial = mech.initial();
        let payload = if initial.is_empty() {
            "=".to_string()
        } else {
            B64.encode(&initial)
        };
        self.send(&format!(
            "<auth xmlns='{NS_SASL}' mechanism='{}'>{payload}</auth>",
            mech.name()
        ));
        loop {
            let el = match self.recv(REPLY_TIMEOUT) {
                Event::Item(Item::Element(el)) => el,
                other => return Err(AuthError::Unexpected(Box::new(other))),
            };
            let data = || B64.decode(el.text.trim()).unwrap_or_default();
            if el.is("challenge", NS_SASL) {
                match mech.response(&data()) {
                    Ok(resp) => self.send(&format!(
                        "<response xmlns='{NS_SASL}'>{}</response>",
                        B64.encode(resp)
                    )),
                    Err(e) => {
                        self.send(&format!("<abort xmlns='{NS_SASL}'/>"));
                        return Err(AuthError::Mechanism(e));
                    }
                }
            } else if el.is("success", NS_SASL) {
                mech.success(&data()).map_err(AuthError::Mechanism)?;
                self.reader.reset();
                self.open_stream();
                return Ok(());
            } else if el.is("failure", NS_SASL) {
                let condition = el.condition(NS_SASL).unwrap_or("").to_string();
                return Err(AuthError::Failure(condition, Box::new(el)));
            } else {
                return Err(AuthError::Unexpected(Box::new(Event::Item(Item::Element(
                    el,
                )))));
            }
        }
    }

    /// Authenticates with the best mechanism both sides have: SCRAM-SHA-256, then
    /// SCRAM-SHA-1, then PLAIN (no channel binding), and panics on failure.
    pub fn login_any(&mut self, username: &str, password: &str) {
        let offered = self.mechanisms();
        let has = |m: &str| offered.iter().any(|o| o == m);
        let mut mech: Box<dyn Mechanism> = if has("SCRAM-SHA-256") {
            Box::new(sasl::Scram::new(
                sasl::Hash::Sha256,
                username,
                password,
                sasl::Binding::None,
            ))
        } else if has("SCRAM-SHA-1") {
            Box::new(sasl::Scram::new(
                sasl::Hash::Sha1,
                username,
                password,
                sasl::Binding::None,
            ))
        } else if has("PLAIN") {
            Box::new(sasl::Plain {
                username: username.into(),
                password: password.into(),
            })
        } else {
            panic!("no usable SASL mechanism offered: {offered:?}");
        };
        if let Err(e) = self.authenticate(mech.as_mut()) {
            panic!("login as {username} with {} failed: {e:?}", mech.name());
        }
    }

    /// RFC 6120 §7: binds `resource` (or asks the server for one) and returns the full JID.
    pub fn bind(&mut self, resource: Option<&str>) -> String {
        assert!(
            self.features.has_child("bind", NS_BIND),
            "no <bind/> in features: {}",
            self.features
        );
        let id = new_id("bind");
        let inner = match resource {
            Some(r) => format!("<resource>{}</resource>", escape(r)),
            None => String::new(),
        };
        self.send(&format!(
            "<iq type='set' id='{id}'><bind xmlns='{NS_BIND}'>{inner}</bind></iq>"
        ));
        let reply = self.expect_iq_reply(&id);
        assert_eq!(reply.attr("type"), Some("result"), "bind failed: {reply}");
        let jid = reply
            .child("bind", NS_BIND)
            .and_then(|b| b.child("jid", NS_BIND))
            .map(|j| j.text.trim().to_string())
            .unwrap_or_else(|| panic!("bind result without <jid/>: {reply}"));
        self.jid = Some(jid.clone());
        jid
    }

    /// STARTTLS, SASL (see [`Conn::login_any`]) and bind in one call.
    pub fn login(
        addr: SocketAddr,
        domain: &str,
        pinned_cert: &Path,
        username: &str,
        password: &str,
        resource: Option<&str>,
    ) -> Conn {
        let mut conn = Conn::connect_starttls(addr, domain, pinned_cert);
        conn.login_any(username, password);
        conn.bind(resource);
        conn
    }

    /// The bound full JID.
    pub fn full_jid(&self) -> &str {
        self.jid.as_deref().expect("not bound yet")
    }

    pub fn send(&mut self, xml: &str) {
        self.try_send(xml.as_bytes())
            .unwrap_or_else(|e| panic!("write failed: {e}"));
    }

    /// Writes raw bytes; an error (the server closed) is returned, not a panic.
    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match &mut self.io {
            Io::Plain(s) => s.write_all(bytes).and_then(|_| s.flush()),
            Io::Tls(s) => s.write_all(bytes).and_then(|_| s.flush()),
            Io::Gone => Err(ErrorKind::NotConnected.into()),
        }
    }

    /// Makes writes fail after `timeout` instead of blocking while the server does not
    /// read (e.g. when it slows a flood down).
    pub fn set_write_timeout(&self, timeout: Duration) {
        let tcp = match &self.io {
            Io::Plain(s) => s,
            Io::Tls(s) => &s.sock,
            Io::Gone => return,
        };
        tcp.set_write_timeout(Some(timeout)).unwrap();
    }

    /// The next item, or `Closed`/`Timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Event {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 16 * 1024];
        loop {
            if let Some(item) = self.reader.next_item() {
                return Event::Item(item);
            }
            let now = Instant::now();
            if now >= deadline {
                return Event::Timeout;
            }
            let wait = Some((deadline - now).max(Duration::from_millis(1)));
            let read = match &mut self.io {
                Io::Plain(s) => {
                    s.set_read_timeout(wait).unwrap();
                    s.read(&mut buf)
                }
                Io::Tls(s) => {
                    s.sock.set_read_timeout(wait).unwrap();
                    s.read(&mut buf)
                }
                Io::Gone => return Event::Closed,
            };
            match read {
                Ok(0) => {
                    self.io = Io::Gone;
                    return Event::Closed;
                }
                Ok(n) => self.reader.push(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    // Reset, or TLS ended without close_notify: the peer is gone.
                    self.io = Io::Gone;
                    return Event::Closed;
                }
            }
        }
    }

    fn pending(&self) -> String {
        let p = self.reader.pending();
        if p.trim().is_empty() {
            String::new()
        } else {
            format!(" (unparsed input: {p:?})")
        }
    }

    /// The next first-level element; panics (naming `what`) on anything else.
    pub fn expect_element(&mut self, what: &str) -> Node {
        match self.recv(REPLY_TIMEOUT) {
            Event::Item(Item::Element(el)) => el,
            other => panic!("waiting for {what}: got {other:?}{}", self.pending()),
        }
    }

    /// Skips elements until one satisfies `pred` (e.g. ignores presence broadcasts).
    pub fn expect_matching(&mut self, what: &str, pred: impl Fn(&Node) -> bool) -> Node {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Event::Item(Item::Element(el)) if pred(&el) => return el,
                Event::Item(Item::Element(_)) => {}
                other => panic!("waiting for {what}: got {other:?}{}", self.pending()),
            }
        }
    }

    /// The iq of type result or error with this id (other stanzas are skipped).
    pub fn expect_iq_reply(&mut self, id: &str) -> Node {
        self.expect_matching(&format!("the reply to iq {id}"), |el| {
            el.name == "iq"
                && el.attr("id") == Some(id)
                && matches!(el.attr("type"), Some("result" | "error"))
        })
    }

    /// Sends an XEP-0199 ping to `to` and returns its id, without waiting.
    pub fn send_ping(&mut self, to: &str) -> String {
        let id = new_id("ping");
        self.send(&format!(
            "<iq type='get' id='{id}' to='{}'><ping xmlns='{NS_PING}'/></iq>",
            escape(to)
        ));
        id
    }

    /// Sends an XEP-0199 ping to `to` and returns the reply.
    pub fn ping(&mut self, to: &str) -> Node {
        let id = self.send_ping(to);
        self.expect_iq_reply(&id)
    }

    /// Pings the server and asserts a result: proves this session still works.
    pub fn assert_alive(&mut self) {
        let domain = self.domain.clone();
        let reply = self.ping(&domain);
        assert_eq!(
            reply.attr("type"),
            Some("result"),
            "ping to the server failed: {reply}"
        );
    }

    /// Reads until the server closes; returns the elements seen and whether
    /// `</stream:stream>` came before the close.
    pub fn read_until_closed(&mut self, timeout: Duration) -> (Vec<Node>, bool) {
        let deadline = Instant::now() + timeout;
        let mut elements = Vec::new();
        let mut stream_closed = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Event::Item(Item::Element(el)) => elements.push(el),
                Event::Item(Item::StreamClose) => stream_closed = true,
                Event::Item(Item::StreamOpen(h)) => panic!("unexpected stream header {h}"),
                Event::Closed => return (elements, stream_closed),
                Event::Timeout => panic!(
                    "server did not close the connection within {timeout:?}; saw {} element(s): {}{}",
                    elements.len(),
                    elements
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join(" "),
                    self.pending()
                ),
            }
        }
    }

    /// Sends `</stream:stream>` and waits (bounded) for the server to close too.
    pub fn close(mut self) {
        if self.try_send(b"</stream:stream>").is_ok() {
            let _ = self.read_until_closed(REPLY_TIMEOUT);
        }
    }
}

fn empty_node() -> Node {
    Node {
        name: String::new(),
        ns: String::new(),
        attrs: Vec::new(),
        children: Vec::new(),
        text: String::new(),
    }
}

enum SigHash {
    Sha256OrWeaker,
    Sha384,
    Sha512,
}

/// Finds the certificate's signatureAlgorithm OID (RFC 5280 §4.1.1.2) with a minimal
/// DER walk: Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, … }.
fn signature_hash(der: &[u8]) -> SigHash {
    // Returns (content start, content length) of the TLV at `pos`.
    fn tlv(der: &[u8], pos: usize) -> Option<(usize, usize)> {
        let len0 = *der.get(pos + 1)? as usize;
        if len0 < 0x80 {
            return Some((pos + 2, len0));
        }
        let n = len0 & 0x7f;
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *der.get(pos + 2 + i)? as usize;
        }
        Some((pos + 2 + n, len))
    }
    let oid = (|| {
        let (cert, _) = tlv(der, 0)?;
        let (tbs, tbs_len) = tlv(der, cert)?;
        let alg_seq = tbs + tbs_len;
        let (alg, _) = tlv(der, alg_seq)?;
        let (oid, oid_len) = tlv(der, alg)?;
        der.get(oid..oid + oid_len)
    })();
    // sha384WithRSAEncryption 1.2.840.113549.1.1.12, ecdsa-with-SHA384 1.2.840.10045.4.3.3,
    // sha512WithRSAEncryption 1.2.840.113549.1.1.13, ecdsa-with-SHA512 1.2.840.10045.4.3.4.
    match oid {
        Some([0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c])
        | Some([0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03]) => SigHash::Sha384,
        Some([0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d])
        | Some([0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04]) => SigHash::Sha512,
        _ => SigHash::Sha256OrWeaker,
    }
}
