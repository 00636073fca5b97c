//! A hostile server against hearth's federation port, from raw sockets: a forged
//! dialback key, a stanza from a domain the stream never proved, an oversized stanza,
//! stanzas before authentication. The test plays the other server, and its
//! authoritative server too (hearth's `[s2s] routes` point the peer's domain at a
//! socket the test answers on). TLS is not required here (`require_tls = false`) so that
//! plain sockets can speak; every check is about what comes after TLS.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::im::{expect_message, login};
use common::{Server, ServerOpts, free_port};

const PW: &str = "a fine password";
const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
    xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
    from='evil.test' to='a.test' version='1.0'>";

/// hearth `a.test` with federation on plain sockets, and the socket where `evil.test`'s
/// authoritative server (the test) listens.
fn setup() -> (Server, SocketAddr, TcpListener) {
    let authoritative = TcpListener::bind("127.0.0.1:0").unwrap();
    let auth_addr = authoritative.local_addr().unwrap();
    let port = free_port();
    let server = Server::start(ServerOpts {
        domain: "a.test".into(),
        s2s: Some(format!(
            "listen = [\"127.0.0.1:{port}\"]\nrequire_tls = false\nmax_stanza_bytes = 20000\n\
             routes = {{ \"evil.test\" = \"{auth_addr}\" }}\n"
        )),
        ..ServerOpts::default()
    });
    server.add_user("alice", PW);
    (server, ([127, 0, 0, 1], port).into(), authoritative)
}

fn read_until(s: &mut TcpStream, needle: &str) -> String {
    let mut all = String::new();
    let mut buf = [0u8; 4096];
    for _ in 0..50 {
        if all.contains(needle) {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => all.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    all
}

fn connect(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(HEADER.as_bytes()).unwrap();
    let got = read_until(&mut s, "</stream:features>");
    assert!(got.contains("<stream:features>"), "{got}");
    s
}

/// Proves `evil.test` on a stream by dialback, answering hearth's verification as the
/// authoritative server with `valid`.
fn authenticated(addr: SocketAddr, authoritative: &TcpListener) -> TcpStream {
    let mut s = connect(addr);
    s.write_all(b"<db:result from='evil.test' to='a.test'>some-key</db:result>")
        .unwrap();
    // hearth asks the authoritative server on a connection of its own.
    let (mut verify, _) = authoritative.accept().unwrap();
    verify
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let header = read_until(&mut verify, "from='a.test'");
    assert!(header.contains("jabber:server:dialback"), "{header}");
    verify
        .write_all(
            b"<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' \
              xmlns:db='jabber:server:dialback' from='evil.test' to='a.test' id='v1' version='1.0'>\
              <stream:features/>",
        )
        .unwrap();
    let asked = read_until(&mut verify, "</db:verify>");
    assert!(asked.contains(">some-key</db:verify>"), "{asked}");
    let id_start = asked.find("id=").expect("an id") + 4;
    let quote = &asked[id_start - 1..id_start];
    let id = &asked[id_start..id_start + asked[id_start..].find(quote).unwrap()];
    verify
        .write_all(
            format!("<db:verify from='evil.test' to='a.test' id='{id}' type='valid'/>").as_bytes(),
        )
        .unwrap();
    let got = read_until(&mut s, "valid");
    assert!(
        got.contains("type=\"valid\"") || got.contains("type='valid'"),
        "{got}"
    );
    s
}

#[test]
fn a_dialback_key_hearth_never_issued_is_invalid() {
    let (_server, addr, _auth) = setup();
    let mut s = connect(addr);
    s.write_all(
        b"<db:verify from='evil.test' to='a.test' id='made-up'>0123456789abcdef</db:verify>",
    )
    .unwrap();
    let got = read_until(&mut s, "/>");
    assert!(got.contains("<db:verify"), "{got}");
    assert!(got.contains("type=\"invalid\""), "{got}");
}

#[test]
fn stanzas_before_authentication_end_the_stream() {
    let (server, addr, _auth) = setup();
    let mut alice = login(&server, "alice", "desk");
    alice.send("<presence/>");
    let mut s = connect(addr);
    s.write_all(
        b"<message from='x@evil.test' to='alice@a.test/desk'><body>sneaky</body></message>",
    )
    .unwrap();
    let got = read_until(&mut s, "</stream:stream>");
    assert!(got.contains("<not-authorized"), "{got}");
    // Nothing reached alice: her next stanza is her own presence echo, then a ping.
    let seen = common::im::drain(&mut alice);
    assert!(!seen.iter().any(|e| e.name == "message"), "{seen:?}");
}

#[test]
fn a_stanza_from_a_domain_the_stream_did_not_prove_is_cut_off() {
    let (server, addr, auth) = setup();
    let mut alice = login(&server, "alice", "desk");
    alice.send("<presence/>");
    let mut s = authenticated(addr, &auth);
    // What evil.test proved goes through …
    s.write_all(
        b"<message from='x@evil.test' to='alice@a.test/desk' type='chat'><body>hi</body></message>",
    )
    .unwrap();
    let m = expect_message(&mut alice, "hi");
    assert_eq!(m.attr("from"), Some("x@evil.test"));
    // … another domain does not, and the stream ends.
    s.write_all(b"<message from='ceo@bank.test' to='alice@a.test/desk' type='chat'><body>pay</body></message>")
        .unwrap();
    let got = read_until(&mut s, "</stream:stream>");
    assert!(got.contains("<invalid-from"), "{got}");
    let seen = common::im::drain(&mut alice);
    assert!(!seen.iter().any(|e| e.name == "message"), "{seen:?}");
    // And to a domain hearth does not serve: host-unknown.
    let mut s = authenticated(addr, &auth);
    s.write_all(b"<message from='x@evil.test' to='bob@elsewhere.test'/>")
        .unwrap();
    let got = read_until(&mut s, "</stream:stream>");
    assert!(got.contains("<host-unknown"), "{got}");
}

#[test]
fn an_oversized_stanza_is_a_policy_violation() {
    let (_server, addr, auth) = setup();
    let mut s = authenticated(addr, &auth);
    let body = "x".repeat(30_000);
    let _ = s.write_all(
        format!("<message from='x@evil.test' to='alice@a.test'><body>{body}</body></message>")
            .as_bytes(),
    );
    let got = read_until(&mut s, "</stream:stream>");
    assert!(got.contains("<policy-violation"), "{got}");
}

#[test]
fn a_flooding_server_is_slowed_like_a_client() {
    let (server, addr, auth) = setup();
    let mut alice = login(&server, "alice", "desk");
    alice.send("<presence/>");
    let mut s = authenticated(addr, &auth);
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    // 2 MiB of presence to a resource that does not exist (dropped without a trace),
    // far past the byte rate's burst: hearth stops reading the link for a while and TCP
    // pushes back on the sender.
    let stanza = "<presence from='x@evil.test' to='alice@a.test/nowhere'/>";
    let flood = stanza.repeat(2 * 1024 * 1024 / stanza.len());
    let writer = std::thread::spawn(move || {
        let _ = s.write_all(flood.as_bytes());
        s
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !server.log().contains("over its byte rate") {
        assert!(std::time::Instant::now() < deadline, "{}", server.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        server
            .log()
            .lines()
            .any(|l| l.contains("s2s-in") && l.contains("over its byte rate")),
        "{}",
        server.log()
    );
    // The household is not slowed: alice's server answers at once.
    alice.assert_alive();
    drop(writer);
}
