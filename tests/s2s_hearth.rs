//! Federation between two hearth servers on loopback (RFC 6120 server-to-server, XEP-0220
//! dialback with the self-signed certificates each generates): the raw test client on
//! each side, fixed routes (`[s2s] routes`) instead of DNS. The peers Prosody, ejabberd
//! and jabberd2 are in tests/s2s_peers.rs.

mod common;

use common::client::{NS_CLIENT, NS_STANZA_ERRORS, new_id};
use common::im::{expect_message, login};
use common::{Server, ServerOpts, free_port};

const PW: &str = "a fine password";

/// Two servers, `a.test` and `b.test`, each listening for servers on its own port and
/// routing the other's domain there; `alice@a.test` and `bob@b.test`.
fn pair() -> (Server, Server) {
    let (pa, pb) = (free_port(), free_port());
    let opts = |domain: &str, port: u16, other: &str, other_port: u16| ServerOpts {
        domain: domain.into(),
        s2s: Some(format!(
            "listen = [\"127.0.0.1:{port}\"]\nroutes = {{ \"{other}\" = \"127.0.0.1:{other_port}\" }}\n\
             idle_timeout_secs = 10\n"
        )),
        ..ServerOpts::default()
    };
    let a = Server::start(opts("a.test", pa, "b.test", pb));
    let b = Server::start(opts("b.test", pb, "a.test", pa));
    a.add_user("alice", PW);
    b.add_user("bob", PW);
    (a, b)
}

fn error_of(el: &common::xml::Node) -> Option<String> {
    el.child("error", NS_CLIENT)?
        .children
        .iter()
        .find(|c| c.ns == NS_STANZA_ERRORS)
        .map(|c| c.name.clone())
}

#[test]
fn a_message_crosses_to_the_other_server_and_back() {
    let (a, b) = pair();
    let mut alice = login(&a, "alice", "desk");
    let mut bob = login(&b, "bob", "phone");
    alice.send("<presence/>");
    bob.send("<presence/>");
    alice.expect_matching("own presence", |e| e.name == "presence");
    bob.expect_matching("own presence", |e| e.name == "presence");

    alice.send("<message to='bob@b.test/phone' type='chat'><body>hello from a</body></message>");
    let m = expect_message(&mut bob, "hello from a");
    assert_eq!(m.attr("from"), Some("alice@a.test/desk"), "{m}");

    bob.send("<message to='alice@a.test/desk' type='chat'><body>hello from b</body></message>");
    let m = expect_message(&mut alice, "hello from b");
    assert_eq!(m.attr("from"), Some("bob@b.test/phone"), "{m}");

    // Both links were set up by dialback: neither certificate is valid for anyone.
    let log = a.log();
    assert!(log.contains("authenticated as b.test"), "{log}");
    assert!(log.contains("ready to b.test"), "{log}");
    if std::env::var_os("HEARTH_SHOW_LOGS").is_some() {
        eprintln!("{log}\n----\n{}", b.log());
    }
}

#[test]
fn an_iq_to_a_remote_user_gets_its_answer_back() {
    let (a, b) = pair();
    let mut alice = login(&a, "alice", "desk");
    let _bob = login(&b, "bob", "phone");
    // A ping to bob's full JID: bob's client does not answer pings, so hearth gets it to
    // bob and bob's silence shows; an iq to an offline resource comes back as an error
    // from b.test over the other link.
    let id = new_id("ping");
    alice.send(&format!(
        "<iq type='get' id='{id}' to='bob@b.test/nowhere'><ping xmlns='urn:xmpp:ping'/></iq>"
    ));
    let reply = alice.expect_iq_reply(&id);
    assert_eq!(reply.attr("type"), Some("error"), "{reply}");
    assert_eq!(
        error_of(&reply).as_deref(),
        Some("service-unavailable"),
        "{reply}"
    );
    assert_eq!(reply.attr("from"), Some("bob@b.test/nowhere"), "{reply}");
}

#[test]
fn an_unreachable_domain_bounces_with_remote_server_not_found() {
    let port = free_port(); // nobody listens there
    let a = Server::start(ServerOpts {
        domain: "a.test".into(),
        s2s: Some(format!(
            "listen = [\"127.0.0.1:{}\"]\nroutes = {{ \"gone.test\" = \"127.0.0.1:{port}\" }}\n",
            free_port()
        )),
        ..ServerOpts::default()
    });
    a.add_user("alice", PW);
    let mut alice = login(&a, "alice", "desk");
    for n in 0..3 {
        // The first waits for the connection attempt; the next bounce at once while the
        // domain is backed off. None is lost silently.
        alice.send(&format!(
            "<message to='x@gone.test' id='m{n}' type='chat'><body>{n}</body></message>"
        ));
        let e = alice.expect_matching("bounce", |e| {
            e.name == "message" && e.attr("id") == Some(&format!("m{n}"))
        });
        assert_eq!(e.attr("type"), Some("error"), "{e}");
        assert_eq!(
            error_of(&e).as_deref(),
            Some("remote-server-not-found"),
            "{e}"
        );
    }
}

#[test]
fn federation_off_bounces_other_domains() {
    let a = Server::start(ServerOpts {
        domain: "a.test".into(),
        ..ServerOpts::default()
    });
    a.add_user("alice", PW);
    let mut alice = login(&a, "alice", "desk");
    alice.send("<message to='x@elsewhere.test' id='m1'><body>hi</body></message>");
    let e = alice.expect_matching("bounce", |e| e.name == "message");
    assert_eq!(
        error_of(&e).as_deref(),
        Some("remote-server-not-found"),
        "{e}"
    );
}

/// RFC 6120 §3.2 and XEP-0368 with real DNS (the peers harness's dnsmasq): `a.test`
/// finds `b.test` only through a `_xmpps-server` SRV record (direct TLS, no STARTTLS
/// port at all), `b.test` finds `a.test` through `_xmpp-server` (STARTTLS); a message
/// crosses each way.
#[test]
fn servers_are_found_by_srv_records_with_direct_tls_and_starttls() {
    use common::peers::{Net, Trust};
    if let Some(why) = Net::unavailable() {
        println!("SKIPPED: {why}");
        return;
    }
    let net = Net::new();
    let a_slot = net.reserve("a.test", Trust::SelfSigned);
    // b.test: direct TLS only, published as _xmpps-server.
    let b_addr = net.next_addr();
    let b_port = {
        let l = std::net::TcpListener::bind((b_addr, 0)).unwrap();
        l.local_addr().unwrap().port()
    };
    net.add_records(&[
        format!("--host-record=b.test,{b_addr}"),
        format!("--srv-host=_xmpps-server._tcp.b.test,b.test,{b_port}"),
        "--local=/b.test/".to_string(),
    ]);
    let dns = format!("resolvers = [\"{}:53\"]\n", net.dns_addr());
    let a = Server::start(ServerOpts {
        domain: "a.test".into(),
        s2s: Some(format!("listen = [\"{}\"]\n{dns}", a_slot.s2s_addr())),
        ..ServerOpts::default()
    });
    let b = Server::start(ServerOpts {
        domain: "b.test".into(),
        s2s: Some(format!(
            "listen = []\ndirect_tls_listen = [\"{b_addr}:{b_port}\"]\n{dns}"
        )),
        ..ServerOpts::default()
    });
    a.add_user("alice", PW);
    b.add_user("bob", PW);
    let mut alice = login(&a, "alice", "desk");
    let mut bob = login(&b, "bob", "phone");
    alice.send("<message to='bob@b.test/phone' type='chat'><body>over direct TLS</body></message>");
    expect_message(&mut bob, "over direct TLS");
    bob.send("<message to='alice@a.test/desk' type='chat'><body>over STARTTLS</body></message>");
    expect_message(&mut alice, "over STARTTLS");
    net.assert_srv_queried("b.test");
    net.assert_srv_queried("a.test");
    // b accepted a's link with TLS from the first byte (not the listener's start line).
    let log = b.log();
    assert!(
        log.lines()
            .any(|l| l.contains("s2s-in") && l.contains("direct TLS TLSv1")),
        "{log}"
    );
}
