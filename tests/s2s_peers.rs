//! Federation between hearth and the servers people run beside it — Prosody 0.12,
//! ejabberd 23.01 and jabberd2 2.7 from Debian 12, started by `tests/common/peers.rs`
//! on loopback, each with its own domain, certificate and DNS (a private dnsmasq that
//! hearth asks through `[s2s] resolvers`, and the peers through their own resolv.conf).
//!
//! In each `friends_with` test a slixmpp user on hearth and one on the peer subscribe to
//! each other (RFC 6121 §3), each sees the other's presence and status (§4), and a
//! message goes each way (tests/clients/xmpp_client.py `chat-with`). With CA-signed
//! certificates the link is authenticated with SASL EXTERNAL (XEP-0178) both ways; with
//! self-signed ones with dialback (XEP-0220). Both sides' logs say which.

mod common;

use std::time::{Duration, Instant};

use common::clients::{RunningClient, slixmpp, slixmpp_at};
use common::peers::{Net, Peer, PeerKind, S2sAuth, Slot, Trust};
use common::{Server, ServerOpts};

const ALICE_PW: &str = "alice's secret";
const BOB_PW: &str = "bob's secret";
/// One step of a conversation: the first one costs DNS, TCP, TLS and authentication on
/// two links.
const WAIT: Duration = Duration::from_secs(20);

/// hearth as `slot.domain`, listening for servers on the slot's address, asking the
/// test's DNS, trusting the test CA, and with the slot's CA-signed certificate in the CA
/// modes (its own generated one otherwise).
fn start_hearth(net: &Net, slot: &Slot, trust: Trust) -> Server {
    let server = Server::start(ServerOpts {
        domain: slot.domain.clone(),
        s2s: Some(format!(
            "listen = [\"{}\"]\nresolvers = [\"{}:53\"]\nca_file = \"{}\"\n",
            slot.s2s_addr(),
            net.dns_addr(),
            net.ca_cert_path().display()
        )),
        tls: trust
            .is_ca()
            .then(|| (slot.creds.cert.clone(), slot.creds.key.clone())),
        ..ServerOpts::default()
    });
    server.add_user("alice", ALICE_PW);
    server
}

/// The log line hearth writes when a peer's incoming link proves its domain, and
/// whether it came with a valid certificate (EXTERNAL, or dialback's shortcut).
fn hearth_authenticated(server: &Server, peer: &str) -> bool {
    server.log().contains(&format!("authenticated as {peer}"))
}

fn friends_with(kind: PeerKind, trust: Trust) {
    if let Some(why) = Net::unavailable() {
        println!("SKIPPED: {why}");
        return;
    }
    let t0 = Instant::now();
    let net = Net::new();
    let slot = net.reserve("hearth.test", trust);
    let hearth = start_hearth(&net, &slot, trust);
    let peer_domain = format!("{}.test", kind.package());
    let peer = Peer::start(kind, &net, &peer_domain, net.next_addr(), trust);
    peer.add_user("bob", BOB_PW);
    let alice_jid = hearth.jid("alice");
    let bob_jid = peer.jid("bob");

    let alice_client = if trust.is_ca() {
        slixmpp_at(
            hearth.c2s_addr(),
            &slot.creds.trust_anchor,
            &alice_jid,
            ALICE_PW,
            "SCRAM-SHA-1",
        )
    } else {
        slixmpp(&hearth, "alice", ALICE_PW, "SCRAM-SHA-1")
    };
    // XEP-0163 across the link where the peer has PEP (jabberd2 has none): each
    // publishes a nick (XEP-0172) and gets the other's through its server's PEP, which
    // learnt its +notify from its caps hash over the link.
    let pep = kind != PeerKind::Jabberd2;
    let nicks = |publish: &'static str, expect: &'static str| -> Vec<&'static str> {
        if pep {
            vec!["--publish-nick", publish, "--expect-nick", expect]
        } else {
            Vec::new()
        }
    };
    let mut args = vec![
        "chat-with",
        "--contact",
        &bob_jid,
        "--status",
        "in the garden",
        "--expect-status",
        "reading",
        "--send",
        "hello bob",
        "--expect-body",
        "hello alice",
    ];
    args.extend(nicks("Alice", "Bob"));
    let mut alice = alice_client.resource("phone").spawn(&args);
    let mut args = vec![
        "chat-with",
        "--contact",
        &alice_jid,
        "--status",
        "reading",
        "--expect-status",
        "in the garden",
        "--send",
        "hello alice",
        "--expect-body",
        "hello bob",
    ];
    args.extend(nicks("Bob", "Alice"));
    let mut bob = peer.slixmpp("bob", BOB_PW).resource("desk").spawn(&args);
    let f = wait(&mut alice, "friends", &hearth, &peer);
    assert_eq!(f["status"], "reading");
    let f = wait(&mut bob, "friends", &hearth, &peer);
    assert_eq!(f["status"], "in the garden");
    let m = wait(&mut alice, "message", &hearth, &peer);
    assert_eq!(m["body"], "hello alice");
    let m = wait(&mut bob, "message", &hearth, &peer);
    assert_eq!(m["body"], "hello bob");
    if pep {
        let n = wait(&mut alice, "nick", &hearth, &peer);
        assert_eq!(n["nick"], "Bob", "{n}");
        let n = wait(&mut bob, "nick", &hearth, &peer);
        assert_eq!(n["nick"], "Alice", "{n}");
    }
    alice.finish().assert_ok();
    bob.finish().assert_ok();

    // The peer found hearth through the test's DNS, and hearth the peer.
    net.assert_srv_queried("hearth.test");
    net.assert_srv_queried(&peer_domain);
    let auth = if trust.is_ca() {
        S2sAuth::External
    } else {
        S2sAuth::Dialback
    };
    peer.wait_authenticated("hearth.test", auth, WAIT);
    assert!(
        hearth_authenticated(&hearth, &peer_domain),
        "{}",
        hearth.log()
    );
    eprintln!(
        "hearth <-> {kind:?} ({trust:?}): done after {:?}",
        t0.elapsed()
    );
}

fn wait(
    client: &mut RunningClient,
    event: &str,
    hearth: &Server,
    peer: &Peer,
) -> serde_json::Value {
    let v = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        client.wait_for_event(event, WAIT)
    }));
    match v {
        Ok(v) => v,
        Err(e) => {
            eprintln!(
                "---- hearth log ----\n{}\n---- peer log ----\n{}",
                hearth.log(),
                peer.log()
            );
            std::panic::resume_unwind(e)
        }
    }
}

#[test]
fn prosody_with_sasl_external() {
    friends_with(PeerKind::Prosody, Trust::Ca);
}

#[test]
fn prosody_with_dialback() {
    friends_with(PeerKind::Prosody, Trust::SelfSigned);
}

#[test]
fn ejabberd_with_sasl_external() {
    // ejabberd 23.01 refuses serverAuth-only client certificates (tests/federation_peers.rs).
    friends_with(PeerKind::Ejabberd, Trust::CaClientAuth);
}

#[test]
fn ejabberd_with_dialback() {
    friends_with(PeerKind::Ejabberd, Trust::SelfSigned);
}

#[test]
fn jabberd2_with_dialback() {
    friends_with(PeerKind::Jabberd2, Trust::SelfSigned);
}

/// XEP-0160 across servers, both ways, and XEP-0199 pings of the other server: after
/// the two users are friends, one logs off, the other sends a message, and it waits on
/// the offline user's server until they log in again.
fn offline_across(kind: PeerKind) {
    if let Some(why) = Net::unavailable() {
        println!("SKIPPED: {why}");
        return;
    }
    let net = Net::new();
    let slot = net.reserve("hearth.test", Trust::SelfSigned);
    let hearth = start_hearth(&net, &slot, Trust::SelfSigned);
    let peer_domain = format!("{}.test", kind.package());
    let peer = Peer::start(kind, &net, &peer_domain, net.next_addr(), Trust::SelfSigned);
    peer.add_user("bob", BOB_PW);
    let (alice_jid, bob_jid) = (hearth.jid("alice"), peer.jid("bob"));
    let alice_client = || slixmpp(&hearth, "alice", ALICE_PW, "SCRAM-SHA-1");

    // alice stays and writes to bob once he is gone; bob leaves after the chat.
    let alice = alice_client().resource("phone").spawn(&[
        "chat-with",
        "--contact",
        &bob_jid,
        "--status",
        "home",
        "--expect-status",
        "out",
        "--send",
        "hi bob",
        "--expect-body",
        "hi alice",
        "--wait-offline",
        "--send-after-offline",
        "kept for you on your server",
    ]);
    let mut bob = peer.slixmpp("bob", BOB_PW).resource("desk").spawn(&[
        "chat-with",
        "--contact",
        &alice_jid,
        "--status",
        "out",
        "--expect-status",
        "home",
        "--send",
        "hi alice",
        "--expect-body",
        "hi bob",
    ]);
    wait(&mut bob, "message", &hearth, &peer);
    bob.finish().assert_ok();
    alice.finish().assert_ok();
    // bob comes back and finds alice's message, stored by his server.
    let run = peer.slixmpp("bob", BOB_PW).run(&[
        "receive",
        "--expect-from",
        &alice_jid,
        "--expect-body",
        "kept for you on your server",
    ]);
    run.assert_ok();

    // The other way: bob writes while alice is away; hearth keeps it.
    let run = peer.slixmpp("bob", BOB_PW).run(&[
        "send",
        "--to",
        &alice_jid,
        "--body",
        "kept for you on hearth",
    ]);
    run.assert_ok();
    let run = alice_client().run(&[
        "receive",
        "--expect-from",
        &bob_jid,
        "--expect-body",
        "kept for you on hearth",
    ]);
    run.assert_ok();

    // Each user pings the other's server over the links (XEP-0199 §4.3).
    alice_client()
        .run(&["ping", "--to", &peer_domain])
        .assert_ok();
    peer.slixmpp("bob", BOB_PW)
        .run(&["ping", "--to", "hearth.test"])
        .assert_ok();
}

#[test]
fn prosody_offline_messages_and_pings() {
    offline_across(PeerKind::Prosody);
}

#[test]
fn ejabberd_offline_messages_and_pings() {
    offline_across(PeerKind::Ejabberd);
}
