//! RFC 7395: XMPP over WebSocket against a running hearth, with a Rust WebSocket client
//! (async-tungstenite over rustls) speaking raw XMPP frames: login, chat with a TCP
//! client, restart, close, stream management, and every kind of frame the RFC forbids.
//! The browser (Converse.js/xmpp.js) tests are in `websocket_clients.rs`.

mod common;

use std::time::Duration;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::client::IntoClientRequest as _;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use base64::Engine as _;
use common::client::{self, Conn};
use common::xml::{Item, Node, Reader};
use common::{Server, ServerOpts};
use futures_rustls::TlsConnector;
use futures_rustls::pki_types::ServerName;
use smol::future::FutureExt as _;
use smol::stream::StreamExt as _;

const FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";
const STREAMS: &str = "http://etherx.jabber.org/streams";
const STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const WAIT: Duration = Duration::from_secs(10);

trait Io: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin + Send {}
impl<T: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin + Send> Io for T {}

/// A server with a WebSocket listener (`tls`: wss://, else plain ws://).
fn server(tls: bool) -> (Server, u16) {
    let port = common::free_port();
    let server = Server::start(ServerOpts {
        extra_toml: format!("[websocket]\nlisten = [\"127.0.0.1:{port}\"]\ntls = {tls}\n"),
        ..ServerOpts::default()
    });
    (server, port)
}

/// A raw RFC 7395 client: frames out, frames in, each frame parsed on its own.
struct Ws {
    ws: WebSocketStream<Box<dyn Io>>,
}

enum In {
    El(Node),
    Binary,
    /// The WebSocket closed (a close frame or the end of the connection).
    Closed,
    Timeout,
}

impl Ws {
    /// Connects to `port`, with TLS pinned to the server's certificate when `tls`, asking
    /// for the subprotocols `protocols`.
    async fn connect(
        server: &Server,
        port: u16,
        tls: bool,
        protocols: &str,
    ) -> Result<Ws, WsError> {
        let tcp = smol::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let io: Box<dyn Io> = if tls {
            let config = client::tls_config(client::read_pem_cert(&server.cert_path()));
            let name = ServerName::try_from(server.domain().to_owned()).unwrap();
            Box::new(TlsConnector::from(config).connect(name, tcp).await.unwrap())
        } else {
            Box::new(tcp)
        };
        let scheme = if tls { "wss" } else { "ws" };
        let mut req = format!("{scheme}://{}/xmpp-websocket", server.domain())
            .into_client_request()
            .unwrap();
        if !protocols.is_empty() {
            req.headers_mut()
                .insert("Sec-WebSocket-Protocol", protocols.parse().unwrap());
        }
        let (ws, resp) = async_tungstenite::client_async(req, io).await?;
        assert_eq!(resp.headers()["Sec-WebSocket-Protocol"], "xmpp");
        Ok(Ws { ws })
    }

    async fn send(&mut self, xml: &str) {
        self.ws.send(Message::text(xml)).await.unwrap();
    }

    async fn send_msg(&mut self, msg: Message) {
        self.ws.send(msg).await.unwrap();
    }

    /// Sends what the server may refuse while it arrives: the send may fail.
    async fn send_refused(&mut self, xml: &str) {
        let _ = self.ws.send(Message::text(xml)).await;
    }

    async fn recv(&mut self) -> In {
        let next = async { Some(self.ws.next().await) }
            .or(async {
                smol::Timer::after(WAIT).await;
                None
            })
            .await;
        match next {
            None => In::Timeout,
            Some(None) | Some(Some(Err(_))) => In::Closed,
            Some(Some(Ok(Message::Text(t)))) => {
                // Every message must parse as a document of its own (RFC 7395, "XMPP Framing"):
                // read inside a root that declares nothing, as Strophe.js reads them.
                let mut r = Reader::new();
                r.push(format!("<wrapper>{t}</wrapper>").as_bytes());
                assert!(matches!(r.next_item(), Some(Item::StreamOpen(_))));
                let el = match r.next_item() {
                    Some(Item::Element(el)) => el,
                    other => panic!("not an element: {t} ({other:?})"),
                };
                assert_eq!(
                    r.next_item(),
                    Some(Item::StreamClose),
                    "more than one element in {t}"
                );
                In::El(el)
            }
            Some(Some(Ok(Message::Close(_)))) => In::Closed,
            Some(Some(Ok(Message::Binary(_)))) => In::Binary,
            Some(Some(Ok(_))) => Box::pin(self.recv()).await,
        }
    }

    async fn expect(&mut self, what: &str) -> Node {
        match self.recv().await {
            In::El(el) => el,
            In::Binary => panic!("waiting for {what}: a binary message"),
            In::Closed => panic!("waiting for {what}: closed"),
            In::Timeout => panic!("waiting for {what}: timed out"),
        }
    }

    /// Sends `<open/>` and reads the server's `<open/>` and features.
    async fn open(&mut self, domain: &str) -> Node {
        self.send(&format!(
            "<open xmlns='{FRAMING}' to='{domain}' version='1.0'/>"
        ))
        .await;
        let open = self.expect("<open/>").await;
        assert!(open.is("open", FRAMING), "{open}");
        assert_eq!(open.attr("from"), Some(domain));
        assert_eq!(open.attr("version"), Some("1.0"));
        assert!(open.attr("id").is_some_and(|id| !id.is_empty()), "{open}");
        let features = self.expect("features").await;
        assert!(features.is("features", STREAMS), "{features}");
        features
    }

    /// Opens, logs in with PLAIN, restarts, binds `resource`. The bound JID.
    async fn login(&mut self, domain: &str, user: &str, password: &str, resource: &str) -> String {
        let features = self.open(domain).await;
        assert!(
            !features.has_child("starttls", "urn:ietf:params:xml:ns:xmpp-tls"),
            "no STARTTLS over a WebSocket: {features}"
        );
        let auth =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        self.send(&format!(
            "<auth xmlns='{SASL}' mechanism='PLAIN'>{auth}</auth>"
        ))
        .await;
        let ok = self.expect("<success/>").await;
        assert!(ok.is("success", SASL), "{ok}");
        let features = self.open(domain).await;
        assert!(
            features.has_child("bind", "urn:ietf:params:xml:ns:xmpp-bind"),
            "{features}"
        );
        self.send(&format!(
            "<iq xmlns='jabber:client' type='set' id='b1'><bind \
             xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"
        ))
        .await;
        let res = self.expect("bind result").await;
        assert_eq!(res.attr("type"), Some("result"), "{res}");
        res.child("bind", "urn:ietf:params:xml:ns:xmpp-bind")
            .and_then(|b| b.child("jid", "urn:ietf:params:xml:ns:xmpp-bind"))
            .map(|j| j.text.clone())
            .unwrap_or_default()
    }

    /// Expects a stream error with `condition`, then `<close/>`, then the end. Its text.
    async fn expect_stream_error(&mut self, condition: &str) -> String {
        let mut el = self.expect("stream error").await;
        // Our <open/> comes first when the client had not opened yet.
        if el.is("open", FRAMING) {
            el = self.expect("stream error").await;
        }
        assert!(el.is("error", STREAMS), "expected a stream error, got {el}");
        assert_eq!(el.condition(STREAM_ERRORS), Some(condition), "{el}");
        let close = self.expect("<close/>").await;
        assert!(close.is("close", FRAMING), "{close}");
        assert!(
            matches!(self.recv().await, In::Closed),
            "the WebSocket stays open"
        );
        el.child("text", STREAM_ERRORS)
            .map(|t| t.text.clone())
            .unwrap_or_default()
    }
}

fn block_on<T>(f: impl Future<Output = T>) -> T {
    smol::block_on(f)
}

#[test]
fn a_websocket_client_logs_in_and_chats_with_a_tcp_client() {
    let (server, port) = server(true);
    server.add_user("alice", "alice-pw");
    server.add_user("bob", "bob-pw");
    let d = server.domain().to_owned();
    let mut bob = Conn::login(
        server.c2s_addr(),
        &d,
        &server.cert_path(),
        "bob",
        "bob-pw",
        Some("desk"),
    );
    // Available, so a message to the bare JID is delivered now (RFC 6121 §8.5.2.1.1).
    bob.send("<presence/>");
    block_on(async {
        let mut ws = Ws::connect(&server, port, true, "xmpp").await.unwrap();
        let jid = ws.login(&d, "alice", "alice-pw", "browser").await;
        assert_eq!(jid, format!("alice@{d}/browser"));
        ws.send(&format!(
            "<message xmlns='jabber:client' to='bob@{d}' type='chat' id='m1'>\
             <body>hello from the browser &amp; more</body></message>"
        ))
        .await;
        let got = bob.expect_matching("alice's message", |n| n.name == "message");
        assert_eq!(got.attr("from"), Some(jid.as_str()));
        assert_eq!(
            got.child("body", "jabber:client").map(|b| b.text.as_str()),
            Some("hello from the browser & more")
        );
        bob.send(&format!(
            "<message to='{jid}' type='chat' id='m2'><body>hi &lt;back&gt;</body></message>"
        ));
        let m = loop {
            let el = ws.expect("bob's message").await;
            if el.name == "message" {
                break el;
            }
        };
        assert!(m.is("message", "jabber:client"), "{m}");
        assert_eq!(m.attr("from"), Some(format!("bob@{d}/desk").as_str()));
        assert_eq!(
            m.child("body", "jabber:client").map(|b| b.text.as_str()),
            Some("hi <back>")
        );
        // RFC 7395, "Closing the Connection": <close/> is answered with <close/>, then the WebSocket closes.
        ws.send(&format!("<close xmlns='{FRAMING}'/>")).await;
        loop {
            match ws.recv().await {
                In::El(el) if el.is("close", FRAMING) => break,
                In::El(_) => continue,
                _ => panic!("no <close/> answered"),
            }
        }
        assert!(matches!(ws.recv().await, In::Closed));
    });
    // Alice's session is gone: bob sees her unavailable presence at most, and the server
    // still serves him.
    bob.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>");
    bob.expect_matching("ping answer", |n| n.attr("id") == Some("p1"));
}

#[test]
fn without_the_xmpp_subprotocol_the_upgrade_is_refused() {
    let (server, port) = server(true);
    block_on(async {
        match Ws::connect(&server, port, true, "").await {
            Err(WsError::Http(resp)) => assert_eq!(resp.status(), 400),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("upgraded without the xmpp subprotocol"),
        }
        match Ws::connect(&server, port, true, "chat, mqtt").await {
            Err(WsError::Http(resp)) => assert_eq!(resp.status(), 400),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("upgraded without the xmpp subprotocol"),
        }
        // Offered among others, it is chosen.
        let mut ws = Ws::connect(&server, port, true, "chat, xmpp")
            .await
            .unwrap();
        ws.open(server.domain()).await;
    });
}

/// The HTTPS port (`[http]`) serves RFC 7395 at `/xmpp-websocket`, and XEP-0156's
/// host-meta names it first, then the `[websocket]` listener.
#[test]
fn the_https_port_upgrades_at_xmpp_websocket() {
    let (server, port) = server(true);
    server.add_user("alice", "alice-pw");
    server.add_user("bob", "bob-pw");
    let d = server.domain().to_owned();
    let xrd = common::http::request(&server, "GET /.well-known/host-meta HTTP/1.1", b"").text();
    let on_https = format!(
        "<Link rel='urn:xmpp:alt-connections:websocket' href='wss://{d}:{}/xmpp-websocket'/>",
        server.http_port()
    );
    let on_listener = format!(
        "<Link rel='urn:xmpp:alt-connections:websocket' href='wss://{d}:{port}/xmpp-websocket'/>"
    );
    let (Some(a), Some(b)) = (xrd.find(&on_https), xrd.find(&on_listener)) else {
        panic!("{xrd}");
    };
    assert!(a < b, "{xrd}");
    let mut bob = Conn::login(
        server.c2s_addr(),
        &d,
        &server.cert_path(),
        "bob",
        "bob-pw",
        Some("desk"),
    );
    bob.send("<presence/>");
    block_on(async {
        let mut ws = Ws::connect(&server, server.http_port(), true, "chat, xmpp")
            .await
            .unwrap();
        let jid = ws.login(&d, "alice", "alice-pw", "https").await;
        assert_eq!(jid, format!("alice@{d}/https"));
        ws.send(&format!(
            "<message xmlns='jabber:client' to='bob@{d}' type='chat' id='m1'>\
             <body>over the HTTPS port</body></message>"
        ))
        .await;
        let got = bob.expect_matching("alice's message", |n| n.name == "message");
        assert_eq!(got.attr("from"), Some(jid.as_str()));
        bob.send(&format!(
            "<message to='{jid}' type='chat' id='m2'><body>back</body></message>"
        ));
        loop {
            let el = ws.expect("bob's message").await;
            if el.name == "message" {
                break;
            }
        }
        ws.send(&format!("<close xmlns='{FRAMING}'/>")).await;
        loop {
            match ws.recv().await {
                In::El(el) if el.is("close", FRAMING) => break,
                In::El(_) => continue,
                _ => panic!("no <close/> answered"),
            }
        }
    });
    // The HTTPS port still serves plain requests.
    let r = common::http::request(&server, "GET /.well-known/host-meta.json HTTP/1.1", b"");
    assert_eq!(r.status, 200);
}

/// The session on the HTTPS port gets the TLS session's channel bindings, as a
/// `[websocket]` listener's does (RFC 7395, "Use of TLS": the WebSocket's TLS is the
/// stream's): SCRAM's `-PLUS` mechanisms are offered (only with binding data, RFC 5802
/// §6).
#[test]
fn the_https_port_offers_channel_binding() {
    let server = Server::start(ServerOpts::default());
    block_on(async {
        let mut ws = Ws::connect(&server, server.http_port(), true, "xmpp")
            .await
            .unwrap();
        let features = ws.open(server.domain()).await;
        let mechanisms: Vec<String> = features
            .child("mechanisms", SASL)
            .map(|m| m.children.iter().map(|c| c.text.clone()).collect())
            .unwrap_or_default();
        for m in ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"] {
            assert!(mechanisms.iter().any(|x| x == m), "{m}: {features}");
        }
    });
}

/// A client frame (RFC 6455 §5.2), masked as a client's must be (§5.3): text, `payload`.
fn masked_text_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut f = vec![0x81];
    match u16::try_from(payload.len()) {
        Ok(n) if n < 126 => f.push(0x80 | n as u8),
        Ok(n) => {
            f.push(0x80 | 126);
            f.extend_from_slice(&n.to_be_bytes());
        }
        Err(_) => panic!("test frame too large"),
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// A client that sends its `<open/>` right behind the upgrade request, in the same
/// write, before the 101: the HTTPS listener read it with the request and hands it on
/// (RFC 6455 §4.1 has a client wait for the 101; one that does not loses nothing here).
#[test]
fn a_frame_sent_with_the_upgrade_request_is_not_lost() {
    use smol::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let server = Server::start(ServerOpts::default());
    let d = server.domain().to_owned();
    block_on(async {
        let tcp = smol::net::TcpStream::connect(("127.0.0.1", server.http_port()))
            .await
            .unwrap();
        let config = client::tls_config(client::read_pem_cert(&server.cert_path()));
        let name = ServerName::try_from(d.clone()).unwrap();
        let mut io: Box<dyn Io> =
            Box::new(TlsConnector::from(config).connect(name, tcp).await.unwrap());
        let mut bytes = format!(
            "GET /xmpp-websocket HTTP/1.1\r\nHost: {d}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: xmpp\r\n\r\n"
        )
        .into_bytes();
        bytes.extend(masked_text_frame(
            format!("<open xmlns='{FRAMING}' to='{d}' version='1.0'/>").as_bytes(),
        ));
        io.write_all(&bytes).await.unwrap();
        io.flush().await.unwrap();
        // The 101, read a byte at a time so that no frame is read with it.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            io.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
            assert!(head.len() < 4096);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101 "), "{head}");
        // RFC 6455 §1.3's example key and its answer.
        assert!(
            head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{head}"
        );
        assert!(head.contains("sec-websocket-protocol: xmpp"), "{head}");
        let ws = WebSocketStream::from_raw_socket(
            io,
            async_tungstenite::tungstenite::protocol::Role::Client,
            None,
        )
        .await;
        let mut ws = Ws { ws };
        let open = ws.expect("<open/>").await;
        assert!(open.is("open", FRAMING), "{open}");
        let features = ws.expect("features").await;
        assert!(features.is("features", STREAMS), "{features}");
    });
}

/// What is no RFC 7395 upgrade gets HTTP's answer on the HTTPS port: 426 naming the
/// upgrade and version 13 without `Upgrade: websocket` or with another version
/// (RFC 6455 §4.2.2, §4.4; RFC 9110 §15.5.22), 400 without a proper key (RFC 6455
/// §4.2.1) or without the `xmpp` subprotocol (RFC 7395 §3.1), and no upgrade.
#[test]
fn the_https_port_refuses_what_is_no_xmpp_websocket_upgrade() {
    let server = Server::start(ServerOpts::default());
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==";
    let upgrade = "Upgrade: websocket\r\nConnection: Upgrade";
    let ask = |lines: &str| {
        common::http::request(
            &server,
            &format!("GET /xmpp-websocket HTTP/1.1\r\n{lines}"),
            b"",
        )
    };
    let cases = [
        (
            format!("{key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: xmpp"),
            426,
        ),
        (
            format!(
                "Connection: Upgrade\r\n{key}\r\nSec-WebSocket-Version: 13\r\n\
                 Sec-WebSocket-Protocol: xmpp"
            ),
            426,
        ),
        (
            format!(
                "{upgrade}\r\n{key}\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Protocol: xmpp"
            ),
            426,
        ),
        (
            format!(
                "{upgrade}\r\n{key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt"
            ),
            400,
        ),
        (
            format!(
                "{upgrade}\r\n{key}\r\nSec-WebSocket-Version: 13\r\n\
                 Sec-WebSocket-Protocol: xmpp-framing, chat"
            ),
            400,
        ),
        (
            format!("{upgrade}\r\n{key}\r\nSec-WebSocket-Version: 13"),
            400,
        ),
        (
            format!(
                "{upgrade}\r\nSec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n\
                 Sec-WebSocket-Protocol: xmpp"
            ),
            400,
        ),
    ];
    for (lines, status) in &cases {
        let r = ask(lines);
        assert_eq!(r.status, *status, "{lines}: {r:?}");
        assert_eq!(r.header("sec-websocket-accept"), None, "{lines}: {r:?}");
        if *status == 426 {
            assert_eq!(r.header("upgrade"), Some("websocket"), "{r:?}");
            assert_eq!(r.header("sec-websocket-version"), Some("13"), "{r:?}");
        }
    }
    block_on(async {
        match Ws::connect(&server, server.http_port(), true, "chat").await {
            Err(WsError::Http(resp)) => assert_eq!(resp.status(), 400),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("upgraded without the xmpp subprotocol"),
        }
    });
}

/// A WebSocket upgraded on the HTTPS port keeps its connection's admission slot for as
/// long as the session lasts (the HTTPS listener counts its connections apart from
/// c2s's): with one connection per address, no other HTTPS connection is taken while it
/// is open, and one is once it closed.
#[test]
fn a_websocket_on_the_https_port_holds_its_connection_slot() {
    let server = Server::start(ServerOpts {
        extra_toml: "\n[limits]\nmax_connections_per_address = 1\n".into(),
        ..ServerOpts::default()
    });
    server.add_user("alice", "alice-pw");
    let d = server.domain().to_owned();
    // Whether the HTTPS port takes a connection (TLS handshake done) now.
    let https_accepts = || async {
        let tcp = smol::net::TcpStream::connect(("127.0.0.1", server.http_port()))
            .await
            .unwrap();
        let config = client::tls_config(client::read_pem_cert(&server.cert_path()));
        let name = ServerName::try_from(d.clone()).unwrap();
        TlsConnector::from(config).connect(name, tcp).await.is_ok()
    };
    block_on(async {
        let mut ws = Ws::connect(&server, server.http_port(), true, "xmpp")
            .await
            .unwrap();
        ws.login(&d, "alice", "alice-pw", "web").await;
        assert!(
            !https_accepts().await,
            "a second connection while the session is open"
        );
        // A c2s connection is counted apart.
        let mut c = Conn::login(
            server.c2s_addr(),
            &d,
            &server.cert_path(),
            "alice",
            "alice-pw",
            Some("desk"),
        );
        c.assert_alive();
        ws.send(&format!("<close xmlns='{FRAMING}'/>")).await;
        loop {
            match ws.recv().await {
                In::El(el) if el.is("close", FRAMING) => break,
                In::El(_) => continue,
                _ => panic!("no <close/> answered"),
            }
        }
        drop(ws);
        let deadline = std::time::Instant::now() + WAIT;
        while !https_accepts().await {
            assert!(
                std::time::Instant::now() < deadline,
                "the slot was not given back"
            );
            smol::Timer::after(Duration::from_millis(100)).await;
        }
    });
}

/// A WebSocket session on the HTTPS port ends with the server as a `[websocket]`
/// listener's does: `system-shutdown`, then `<close/>` (RFC 7395, "Stream Errors" and
/// "Closing the Connection").
#[test]
fn the_server_stopping_closes_https_port_websockets_with_system_shutdown() {
    let mut server = Server::start(ServerOpts::default());
    server.add_user("alice", "alice-pw");
    let mut ws = block_on(async {
        let mut ws = Ws::connect(&server, server.http_port(), true, "xmpp")
            .await
            .unwrap();
        ws.login(server.domain(), "alice", "alice-pw", "web").await;
        ws
    });
    let stopper = std::thread::spawn(move || {
        server.stop();
    });
    block_on(async {
        loop {
            let el = ws.expect("system-shutdown").await;
            if el.is("error", STREAMS) {
                assert_eq!(el.condition(STREAM_ERRORS), Some("system-shutdown"));
                break;
            }
        }
        let close = ws.expect("<close/>").await;
        assert!(close.is("close", FRAMING), "{close}");
    });
    stopper.join().unwrap();
}

#[test]
fn two_elements_in_one_frame_are_not_well_formed() {
    let (server, port) = server(true);
    block_on(async {
        let mut ws = Ws::connect(&server, port, true, "xmpp").await.unwrap();
        ws.open(server.domain()).await;
        ws.send(&format!(
            "<auth xmlns='{SASL}' mechanism='PLAIN'>AGEAYg==</auth><auth xmlns='{SASL}' mechanism='PLAIN'>AGEAYg==</auth>"
        ))
        .await;
        ws.expect_stream_error("not-well-formed").await;
    });
}

#[test]
fn a_frame_that_is_not_xml_is_not_well_formed() {
    let (server, port) = server(true);
    block_on(async {
        let mut ws = Ws::connect(&server, port, true, "xmpp").await.unwrap();
        ws.open(server.domain()).await;
        ws.send("this is not XML").await;
        ws.expect_stream_error("not-well-formed").await;
        // A partial element is no better.
        let mut ws = Ws::connect(&server, port, true, "xmpp").await.unwrap();
        ws.open(server.domain()).await;
        ws.send("<iq xmlns='jabber:client' type='get' id='1'>")
            .await;
        ws.expect_stream_error("not-well-formed").await;
        // One element, but with what XMPP forbids inside (RFC 6120 §11.1): the framer's
        // own answer, as on TCP.
        let mut ws = Ws::connect(&server, port, true, "xmpp").await.unwrap();
        ws.open(server.domain()).await;
        ws.send("<iq xmlns='jabber:client' type='get' id='1'><!-- hi --></iq>")
            .await;
        ws.expect_stream_error("restricted-xml").await;
    });
}

#[test]
fn a_binary_frame_is_refused() {
    let (server, port) = server(true);
    block_on(async {
        let mut ws = Ws::connect(&server, port, true, "xmpp").await.unwrap();
        ws.open(server.domain()).await;
        ws.send_msg(Message::binary(b"<presence/>".to_vec())).await;
        ws.expect_stream_error("unsupported-encoding").await;
    });
}

#[test]
fn an_oversized_frame_is_a_policy_violation() {
    let (server, port) = server(true);
    server.add_user("alice", "alice-pw");
    let d = server.domain().to_owned();
    let message = |to: &str, kib: usize| {
        format!(
            "<message xmlns='jabber:client' to='{to}'><body>{}</body></message>",
            "a".repeat(kib * 1024)
        )
    };
    block_on(async {
        // Before authentication a stranger may send what it may on TCP (10 KiB): a larger
        // message is refused while it arrives, never held whole.
        let mut ws = Ws::connect(&server, port, true, "xmpp").await.unwrap();
        ws.open(&d).await;
        ws.send_refused(&message("x@test.local", 100)).await;
        let text = ws.expect_stream_error("policy-violation").await;
        assert!(
            text.contains("WebSocket message larger than 10240"),
            "{text}"
        );
        // Within that, the framer's own limit for strangers.
        let mut ws = Ws::connect(&server, port, true, "xmpp").await.unwrap();
        ws.open(&d).await;
        let medium = format!(
            "<auth xmlns='{SASL}' mechanism='PLAIN'>{}</auth>",
            "A".repeat(20 * 1024)
        );
        ws.send(&medium).await;
        let text = ws.expect_stream_error("policy-violation").await;
        assert!(text.contains("stanza larger than 10240"), "{text}");
        // Logged in, 100 KiB is a fine stanza (the default limit is 256 KiB)...
        let mut ws = Ws::connect(&server, port, true, "xmpp").await.unwrap();
        let jid = ws.login(&d, "alice", "alice-pw", "web").await;
        ws.send(&message(&jid, 100)).await;
        loop {
            let el = ws.expect("the 100 KiB message back").await;
            if el.name == "message" {
                assert_eq!(
                    el.child("body", "jabber:client").map(|b| b.text.len()),
                    Some(100 * 1024)
                );
                break;
            }
        }
        // ... and more than any stanza may be is refused by the WebSocket layer.
        ws.send_refused(&message(&jid, 300)).await;
        let text = ws.expect_stream_error("policy-violation").await;
        assert!(text.contains("larger than 262144"), "{text}");
    });
}

#[test]
fn a_stanza_before_open_and_a_wrong_host_get_stream_errors() {
    let (server, port) = server(true);
    block_on(async {
        let mut ws = Ws::connect(&server, port, true, "xmpp").await.unwrap();
        ws.send("<presence xmlns='jabber:client'/>").await;
        let el = ws.expect("an answer").await;
        let el = if el.is("open", FRAMING) {
            ws.expect("stream error").await
        } else {
            el
        };
        assert!(el.is("error", STREAMS), "{el}");
        let mut ws = Ws::connect(&server, port, true, "xmpp").await.unwrap();
        ws.send(&format!(
            "<open xmlns='{FRAMING}' to='elsewhere.example' version='1.0'/>"
        ))
        .await;
        ws.expect_stream_error("host-unknown").await;
    });
}

#[test]
fn stream_management_works_over_a_websocket() {
    let (server, port) = server(true);
    server.add_user("alice", "alice-pw");
    block_on(async {
        let mut ws = Ws::connect(&server, port, true, "xmpp").await.unwrap();
        ws.login(server.domain(), "alice", "alice-pw", "web").await;
        // A whitespace keepalive out of TCP habit is let through.
        ws.send(" \n").await;
        ws.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
            .await;
        let en = ws.expect("<enabled/>").await;
        assert!(en.is("enabled", "urn:xmpp:sm:3"), "{en}");
        ws.send(
            "<iq xmlns='jabber:client' type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>",
        )
        .await;
        ws.send("<r xmlns='urn:xmpp:sm:3'/>").await;
        loop {
            let el = ws.expect("<a/>").await;
            if el.is("a", "urn:xmpp:sm:3") {
                assert_eq!(el.attr("h"), Some("1"), "{el}");
                break;
            }
        }
    });
}

#[test]
fn a_session_lost_with_its_websocket_is_resumed_on_a_new_one() {
    let (server, port) = server(true);
    server.add_user("alice", "alice-pw");
    server.add_user("bob", "bob-pw");
    let d = server.domain().to_owned();
    let mut bob = Conn::login(
        server.c2s_addr(),
        &d,
        &server.cert_path(),
        "bob",
        "bob-pw",
        Some("desk"),
    );
    let (jid, previd) = block_on(async {
        let mut ws = Ws::connect(&server, port, true, "xmpp").await.unwrap();
        let jid = ws.login(&d, "alice", "alice-pw", "web").await;
        ws.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
            .await;
        let en = ws.expect("<enabled/>").await;
        assert_eq!(en.attr("resume"), Some("true"), "{en}");
        let id = en.attr("id").unwrap().to_owned();
        // The connection is cut: no <close/>, no close frame.
        drop(ws);
        (jid, id)
    });
    // What bob sends meanwhile waits for the session.
    std::thread::sleep(Duration::from_millis(300));
    bob.send(&format!(
        "<message to='{jid}' type='chat' id='w1'><body>while you were away</body></message>"
    ));
    std::thread::sleep(Duration::from_millis(300));
    block_on(async {
        let mut ws = Ws::connect(&server, port, true, "xmpp").await.unwrap();
        ws.open(&d).await;
        let auth = base64::engine::general_purpose::STANDARD.encode("\0alice\0alice-pw");
        ws.send(&format!(
            "<auth xmlns='{SASL}' mechanism='PLAIN'>{auth}</auth>"
        ))
        .await;
        assert!(ws.expect("<success/>").await.is("success", SASL));
        ws.open(&d).await;
        ws.send(&format!(
            "<resume xmlns='urn:xmpp:sm:3' previd='{previd}' h='0'/>"
        ))
        .await;
        let resumed = ws.expect("<resumed/>").await;
        assert!(resumed.is("resumed", "urn:xmpp:sm:3"), "{resumed}");
        loop {
            let el = ws.expect("the message sent meanwhile").await;
            if el.name == "message" {
                assert_eq!(
                    el.child("body", "jabber:client").map(|b| b.text.as_str()),
                    Some("while you were away")
                );
                break;
            }
        }
    });
}

#[test]
fn a_plain_listener_serves_loopback_as_a_proxy_would() {
    let (server, port) = server(false);
    server.add_user("alice", "alice-pw");
    block_on(async {
        let mut ws = Ws::connect(&server, port, false, "xmpp").await.unwrap();
        let jid = ws
            .login(server.domain(), "alice", "alice-pw", "proxy")
            .await;
        assert_eq!(jid, format!("alice@{}/proxy", server.domain()));
    });
}

#[test]
fn a_websocket_client_that_reads_late_gets_everything_in_order() {
    const N: usize = 300;
    let port = common::free_port();
    // Bob may send fast: the test is about the WebSocket side.
    let server = Server::start(ServerOpts {
        extra_toml: format!(
            "[websocket]\nlisten = [\"127.0.0.1:{port}\"]\n[limits]\n\
             rate_bytes_per_sec = 16777216\nrate_burst_bytes = 16777216\n"
        ),
        ..ServerOpts::default()
    });
    server.add_user("alice", "alice-pw");
    server.add_user("bob", "bob-pw");
    let d = server.domain().to_owned();
    let mut ws = block_on(async {
        let mut ws = Ws::connect(&server, port, true, "xmpp").await.unwrap();
        ws.login(&d, "alice", "alice-pw", "web").await;
        ws
    });
    let mut bob = Conn::login(
        server.c2s_addr(),
        &d,
        &server.cert_path(),
        "bob",
        "bob-pw",
        Some("desk"),
    );
    // About 1.2 MB for a client that does not read yet: more than the sockets hold, so
    // the WebSocket's writes wait for room.
    let to = format!("alice@{d}/web");
    let sender = std::thread::spawn(move || {
        let filler = "x".repeat(4000);
        for i in 0..N {
            bob.send(&format!(
                "<message to='{to}' type='chat' id='n{i}'><body>{i} {filler}</body></message>"
            ));
        }
        bob
    });
    std::thread::sleep(Duration::from_secs(2));
    block_on(async {
        let mut next = 0;
        while next < N {
            let el = ws.expect("the next message").await;
            if el.name != "message" {
                continue;
            }
            let body = el.child("body", "jabber:client").map(|b| b.text.clone());
            let n: usize = body
                .as_deref()
                .and_then(|b| b.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(usize::MAX);
            assert_eq!(n, next, "messages out of order or lost");
            next += 1;
        }
    });
    sender.join().unwrap();
}

#[test]
fn a_websocket_that_never_logs_in_times_out_like_c2s() {
    let port = common::free_port();
    let server = Server::start(ServerOpts {
        negotiation_timeout_secs: Some(2),
        extra_toml: format!("[websocket]\nlisten = [\"127.0.0.1:{port}\"]\n"),
        ..ServerOpts::default()
    });
    block_on(async {
        let mut ws = Ws::connect(&server, port, true, "xmpp").await.unwrap();
        ws.open(server.domain()).await;
        ws.expect_stream_error("connection-timeout").await;
    });
}

#[test]
fn a_plain_listener_refuses_other_hosts() {
    // Another host, as far as the server can tell: this machine's own non-loopback
    // address. A machine with none (a bare network namespace) cannot show it.
    let Some(ip) = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.ip())
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
    else {
        eprintln!("no non-loopback IPv4 address here: nothing to show");
        return;
    };
    let port = common::free_port();
    let server = Server::start(ServerOpts {
        extra_toml: format!("[websocket]\nlisten = [\"0.0.0.0:{port}\"]\ntls = false\n"),
        ..ServerOpts::default()
    });
    block_on(async {
        let tcp = smol::net::TcpStream::connect((ip, port)).await.unwrap();
        let req = format!("ws://{ip}:{port}/xmpp-websocket")
            .into_client_request()
            .map(|mut r| {
                r.headers_mut()
                    .insert("Sec-WebSocket-Protocol", "xmpp".parse().unwrap());
                r
            })
            .unwrap();
        let upgrade = async { Some(async_tungstenite::client_async(req, tcp).await) }
            .or(async {
                smol::Timer::after(WAIT).await;
                None
            })
            .await;
        match upgrade {
            Some(Err(_)) => {}
            Some(Ok(_)) => panic!("a plain WebSocket from {ip} was upgraded"),
            None => panic!("neither upgraded nor refused"),
        }
    });
    assert!(
        server
            .log()
            .contains("refused: plain WebSocket listener, not loopback"),
        "{}",
        server.log()
    );
}

#[test]
fn the_server_stopping_closes_websockets_with_system_shutdown() {
    let (mut server, port) = server(true);
    server.add_user("alice", "alice-pw");
    let mut ws = block_on(async {
        let mut ws = Ws::connect(&server, port, true, "xmpp").await.unwrap();
        ws.login(server.domain(), "alice", "alice-pw", "web").await;
        ws
    });
    let stopper = std::thread::spawn(move || {
        server.stop();
    });
    block_on(async {
        loop {
            let el = ws.expect("system-shutdown").await;
            if el.is("error", STREAMS) {
                assert_eq!(el.condition(STREAM_ERRORS), Some("system-shutdown"));
                break;
            }
        }
        let close = ws.expect("<close/>").await;
        assert!(close.is("close", FRAMING), "{close}");
    });
    stopper.join().unwrap();
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A figure, not a check: the server's RSS per idle, logged-in wss:// session, beside
/// the same number of direct-TLS TCP sessions (run with `--ignored --nocapture`; the
/// test binary's hearth is a debug build, so absolute numbers are above release ones).
#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn idle_session_memory() {
    const N: usize = 100;
    let port = common::free_port();
    let server = Server::start(ServerOpts {
        extra_toml: format!(
            "[websocket]\nlisten = [\"127.0.0.1:{port}\"]\n[limits]\n\
             max_connections_per_address = 512\nconnections_per_minute_per_address = 600\n\
             connection_burst_per_address = 600\n"
        ),
        ..ServerOpts::default()
    });
    for i in 0..N {
        server.add_user(&format!("u{i}"), "pw");
    }
    let pid = server.pid().unwrap();
    // PLAIN's argon2id checks keep their memory for the next ones (two at once, 19 MiB
    // each): warmed up first, so that the figure is the sessions'.
    block_on(async {
        let login = |i: usize| {
            let server = &server;
            async move {
                let mut ws = Ws::connect(server, port, true, "xmpp").await.unwrap();
                ws.login(server.domain(), &format!("u{i}"), "pw", "warm")
                    .await;
            }
        };
        for round in 0..2 {
            // Two at once, so that both checks' memory is taken.
            smol::future::zip(login(2 * round), login(2 * round + 1)).await;
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    let base = rss_kib(pid);
    let sessions = block_on(async {
        let mut all = Vec::new();
        for i in 0..N {
            let mut ws = Ws::connect(&server, port, true, "xmpp").await.unwrap();
            ws.login(server.domain(), &format!("u{i}"), "pw", "web")
                .await;
            all.push(ws);
        }
        all
    });
    std::thread::sleep(Duration::from_secs(2));
    let with_ws = rss_kib(pid);
    let mut tcp = Vec::new();
    for i in 0..N {
        tcp.push(Conn::login(
            server.c2s_addr(),
            server.domain(),
            &server.cert_path(),
            &format!("u{i}"),
            "pw",
            Some("tcp"),
        ));
    }
    std::thread::sleep(Duration::from_secs(2));
    let with_tcp = rss_kib(pid);
    println!(
        "RSS {base} KiB idle; +{N} wss sessions: {with_ws} KiB ({:.1} KiB each); \
         +{N} STARTTLS sessions: {with_tcp} KiB ({:.1} KiB each)",
        (with_ws - base) as f64 / N as f64,
        with_tcp.saturating_sub(with_ws) as f64 / N as f64
    );
    drop(sessions);
    drop(tcp);
}

/// The server's CPU time so far (user + system), from /proc/PID/stat.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses): utime is the 12th, stime
    // the 13th of them.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// A figure, not a check: the server's CPU time for N messages a client sends to itself,
/// over wss:// and over STARTTLS (run with `--ignored --nocapture`; a debug build).
#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn message_cpu_cost() {
    const N: usize = 5000;
    let port = common::free_port();
    let server = Server::start(ServerOpts {
        extra_toml: format!(
            "[websocket]\nlisten = [\"127.0.0.1:{port}\"]\n[limits]\n\
             rate_bytes_per_sec = 16777216\nrate_burst_bytes = 16777216\n"
        ),
        ..ServerOpts::default()
    });
    server.add_user("alice", "pw");
    let pid = server.pid().unwrap();
    let d = server.domain().to_owned();
    let body = "a message of a typical length, about a hundred bytes of text for the family chat";
    let ws_cpu = block_on(async {
        let mut ws = Ws::connect(&server, port, true, "xmpp").await.unwrap();
        let jid = ws.login(&d, "alice", "pw", "web").await;
        let start = cpu_secs(pid);
        for i in 0..N {
            ws.send(&format!(
                "<message xmlns='jabber:client' to='{jid}' type='chat' id='m{i}'><body>{body}</body></message>"
            ))
            .await;
            if i % 100 == 99 {
                // Read what came back so far, so that no queue fills.
                let mut got = 0;
                while got < 100 {
                    if ws.expect("echo").await.name == "message" {
                        got += 1;
                    }
                }
            }
        }
        cpu_secs(pid) - start
    });
    let mut tcp = Conn::login(
        server.c2s_addr(),
        &d,
        &server.cert_path(),
        "alice",
        "pw",
        Some("tcp"),
    );
    let jid = tcp.full_jid().to_owned();
    let start = cpu_secs(pid);
    for i in 0..N {
        tcp.send(&format!(
            "<message to='{jid}' type='chat' id='t{i}'><body>{body}</body></message>"
        ));
        if i % 100 == 99 {
            let mut got = 0;
            while got < 100 {
                if tcp.expect_element("echo").name == "message" {
                    got += 1;
                }
            }
        }
    }
    let tcp_cpu = cpu_secs(pid) - start;
    println!(
        "server CPU for {N} messages to oneself: wss {ws_cpu:.2} s, STARTTLS {tcp_cpu:.2} s \
         ({:.2} and {:.2} s per 10k)",
        ws_cpu * 10000.0 / N as f64,
        tcp_cpu * 10000.0 / N as f64
    );
}
