//! XEP-0114 external components, with slixmpp's own component implementation
//! (`ComponentXMPP`, tests/clients/component.py): the handshake, stanzas both ways
//! between a user and the component's domain, and what a wrong secret, a second
//! connection and a spoofed `from` get.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::client::{NS_CLIENT, NS_STANZA_ERRORS};
use common::clients::{RunningClient, check_slixmpp, python};
use common::im::{expect_message, login};
use common::{Server, ServerOpts, free_port};

const SECRET: &str = "a secret of sixteen+ chars";
const PW: &str = "a fine password";

fn server() -> (Server, u16) {
    let port = free_port();
    let server = Server::start(ServerOpts {
        extra_toml: format!(
            "\n[components]\nlisten = [\"127.0.0.1:{port}\"]\n\
             secrets = {{ \"echo.test.local\" = \"{SECRET}\" }}\n"
        ),
        ..ServerOpts::default()
    });
    server.add_user("alice", PW);
    (server, port)
}

fn component(port: u16, secret: &str) -> RunningClient {
    check_slixmpp();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/component.py");
    let mut cmd = Command::new(python());
    cmd.arg(script)
        .args(["--jid", "echo.test.local", "--secret", secret])
        .args(["--port", &port.to_string(), "--seconds", "20"]);
    RunningClient::command(cmd)
}

fn error_of(el: &common::xml::Node) -> Option<String> {
    el.child("error", NS_CLIENT)?
        .children
        .iter()
        .find(|c| c.ns == NS_STANZA_ERRORS)
        .map(|c| c.name.clone())
}

#[test]
fn a_slixmpp_component_echoes_a_users_messages() {
    let (server, port) = server();
    let mut echo = component(port, SECRET);
    echo.wait_for_event("ready", Duration::from_secs(10));
    let mut alice = login(&server, "alice", "desk");
    alice.send("<message to='bot@echo.test.local' type='chat'><body>ping me</body></message>");
    let m = expect_message(&mut alice, "echo: ping me");
    assert_eq!(m.attr("from"), Some("bot@echo.test.local"), "{m}");
    let seen = echo.wait_for_event("message", Duration::from_secs(5));
    assert_eq!(seen["frm"], "alice@test.local/desk");
}

#[test]
fn stanzas_for_a_component_that_is_not_connected_bounce() {
    let (server, _port) = server();
    let mut alice = login(&server, "alice", "desk");
    alice.send("<message to='bot@echo.test.local' id='m1' type='chat'><body>x</body></message>");
    let e = alice.expect_matching("bounce", |e| {
        e.name == "message" && e.attr("type") == Some("error")
    });
    assert_eq!(error_of(&e).as_deref(), Some("service-unavailable"), "{e}");
}

#[test]
fn a_wrong_secret_is_refused() {
    let (_server, port) = server();
    let run = component(port, "not the secret at all").finish();
    assert!(!run.succeeded(), "{run}");
    assert!(run.event("ready").is_none(), "{run}");
}

/// Raw XEP-0114 from a socket: the handshake, then what a second connection and a
/// spoofed `from` get.
fn raw_handshake(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='echo.test.local'>").unwrap();
    let header = read_some(&mut s);
    let start = header.find("id='").expect("stream id") + 4;
    let id = &header[start..start + header[start..].find('\'').unwrap()];
    let digest = sha1_hex(&format!("{id}{SECRET}"));
    s.write_all(format!("<handshake>{digest}</handshake>").as_bytes())
        .unwrap();
    s
}

fn sha1_hex(s: &str) -> String {
    let out = Command::new(python())
        .args([
            "-c",
            "import hashlib,sys; print(hashlib.sha1(sys.argv[1].encode()).hexdigest())",
            s,
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn read_some(s: &mut TcpStream) -> String {
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn read_until(s: &mut TcpStream, needle: &str) -> String {
    let mut all = String::new();
    for _ in 0..20 {
        all.push_str(&read_some(s));
        if all.contains(needle) {
            break;
        }
    }
    all
}

#[test]
fn a_second_connection_gets_conflict_and_a_spoofed_from_is_invalid_from() {
    let (server, port) = server();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut first = raw_handshake(addr);
    assert!(read_until(&mut first, "<handshake/>").contains("<handshake/>"));

    let mut second = raw_handshake(addr);
    let got = read_until(&mut second, "</stream:stream>");
    assert!(got.contains("<conflict"), "{got}");

    first
        .write_all(
            b"<message from='alice@test.local' to='alice@test.local'><body>forged</body></message>",
        )
        .unwrap();
    let got = read_until(&mut first, "</stream:stream>");
    assert!(got.contains("<invalid-from"), "{got}");
    drop(server);
}
