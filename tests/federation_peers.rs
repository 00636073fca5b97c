//! RFC 6120 §13 federation between the peer servers themselves — Prosody, ejabberd and
//! jabberd2 from Debian 12, started by `tests/common/peers.rs` — without hearth: the proof
//! that the harness (certificates, DNS, configs, accounts) works before hearth joins it.
//!
//! In the `friends_across` tests a user on each server subscribes to the other (RFC 6121
//! §3), both see the other's presence and status, and a message goes each way, with
//! slixmpp clients (tests/clients/xmpp_client.py `chat-with`). With CA-signed
//! certificates the servers can only authenticate each other with SASL EXTERNAL
//! (XEP-0178: no dialback loaded); with self-signed ones only with dialback (XEP-0220: no
//! certificate is trusted). One more test records what Prosody and ejabberd do with a
//! certificate whose EKU is serverAuth only, presented as a TLS client certificate; the
//! last checks what a hearth test will use (`Net::reserve`, `Net::isolated_command`).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::clients::RunningClient;
use common::peers::{Net, Peer, PeerKind, S2sAuth, Trust};

const ALICE_PW: &str = "alice's secret";
const BOB_PW: &str = "bob's secret";
/// How long each step of the conversation may take: a first s2s connection costs a DNS
/// lookup, TCP, STARTTLS and authentication each way.
const WAIT: Duration = Duration::from_secs(20);

/// Starts a `left` and a `right` server with `trust`, one user on each, and has them
/// become friends and chat across the federation.
fn friends_across(left: PeerKind, right: PeerKind, trust: Trust) {
    if let Some(why) = Net::unavailable() {
        println!("SKIPPED: {why}");
        return;
    }
    let t0 = Instant::now();
    let net = Net::new();
    let a = Peer::start(left, &net, &domain(left), net.next_addr(), trust);
    let b = Peer::start(right, &net, &domain(right), net.next_addr(), trust);
    a.add_user("alice", ALICE_PW);
    b.add_user("bob", BOB_PW);
    let (alice_jid, bob_jid) = (a.jid("alice"), b.jid("bob"));
    let ready = t0.elapsed();

    let mut alice = a.slixmpp("alice", ALICE_PW).resource("phone").spawn(&[
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
    ]);
    let mut bob = b.slixmpp("bob", BOB_PW).resource("desk").spawn(&[
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
    ]);
    // Subscribed both ways, each with the other's status text…
    let f = wait(&mut alice, "friends");
    assert_eq!(f["status"], "reading");
    let f = wait(&mut bob, "friends");
    assert_eq!(f["status"], "in the garden");
    // …and a message each way.
    let m = wait(&mut alice, "message");
    assert_eq!(m["body"], "hello alice");
    assert!(
        m["sender"].as_str().unwrap_or("").starts_with(&bob_jid),
        "{m}"
    );
    let m = wait(&mut bob, "message");
    assert_eq!(m["body"], "hello bob");
    assert!(
        m["sender"].as_str().unwrap_or("").starts_with(&alice_jid),
        "{m}"
    );
    alice.finish().assert_ok();
    bob.finish().assert_ok();

    // Each server found the other through the test's DNS, not the machine's…
    net.assert_srv_queried(b.domain());
    net.assert_srv_queried(a.domain());
    // …and authenticated it the one way the trust mode leaves.
    let auth = if trust.is_ca() {
        S2sAuth::External
    } else {
        S2sAuth::Dialback
    };
    a.wait_authenticated(b.domain(), auth, WAIT);
    b.wait_authenticated(a.domain(), auth, WAIT);
    eprintln!(
        "{left:?} <-> {right:?} ({trust:?}): servers and accounts ready after {ready:?}, \
         all done after {:?}",
        t0.elapsed()
    );
}

/// Each kind's domain in a test: what one reads in the logs.
fn domain(kind: PeerKind) -> String {
    format!("{}.test", kind.package())
}

fn wait(client: &mut RunningClient, event: &str) -> serde_json::Value {
    client.wait_for_event(event, WAIT)
}

#[test]
fn prosody_and_ejabberd_with_sasl_external() {
    friends_across(PeerKind::Prosody, PeerKind::Ejabberd, Trust::CaClientAuth);
}

#[test]
fn prosody_and_ejabberd_with_dialback() {
    friends_across(PeerKind::Prosody, PeerKind::Ejabberd, Trust::SelfSigned);
}

#[test]
fn jabberd2_and_prosody_with_dialback() {
    friends_across(PeerKind::Jabberd2, PeerKind::Prosody, Trust::SelfSigned);
}

/// Certificates with the EKU serverAuth only (no clientAuth), SASL EXTERNAL only: Prosody
/// 0.12 accepts ejabberd's as a client certificate, so ejabberd → Prosody works; ejabberd
/// 23.01 refuses Prosody's ("unsupported certificate purpose"), so Prosody → ejabberd does
/// not. hearth, which must accept such certificates, will meet both behaviours. If this
/// test starts failing after a Debian update, a peer changed: update `peers.rs`' docs.
#[test]
fn server_auth_only_certificates_prosody_accepts_ejabberd_refuses() {
    if let Some(why) = Net::unavailable() {
        println!("SKIPPED: {why}");
        return;
    }
    let net = Net::new();
    let prosody = Peer::start(
        PeerKind::Prosody,
        &net,
        "prosody.test",
        net.next_addr(),
        Trust::Ca,
    );
    let ejabberd = Peer::start(
        PeerKind::Ejabberd,
        &net,
        "ejabberd.test",
        net.next_addr(),
        Trust::Ca,
    );
    prosody.add_user("alice", ALICE_PW);
    ejabberd.add_user("bob", BOB_PW);
    let (alice_jid, bob_jid) = (prosody.jid("alice"), ejabberd.jid("bob"));

    // ejabberd → Prosody: ejabberd connects, Prosody takes its certificate.
    let mut alice = prosody.slixmpp("alice", ALICE_PW).spawn(&[
        "receive",
        "--expect-from",
        &bob_jid,
        "--expect-body",
        "over ejabberd's stream",
    ]);
    wait(&mut alice, "ready");
    ejabberd
        .slixmpp("bob", BOB_PW)
        .run(&[
            "send",
            "--to",
            &alice_jid,
            "--body",
            "over ejabberd's stream",
        ])
        .assert_ok();
    let m = wait(&mut alice, "message");
    assert_eq!(m["body"], "over ejabberd's stream");
    alice.finish().assert_ok();
    ejabberd.wait_for_log(
        "Accepted outbound s2s EXTERNAL authentication ejabberd.test -> prosody.test",
        WAIT,
    );

    // Prosody → ejabberd: Prosody connects, ejabberd refuses its certificate.
    prosody
        .slixmpp("alice", ALICE_PW)
        .run(&["send", "--to", &bob_jid, "--body", "over Prosody's stream"])
        .assert_ok();
    ejabberd.wait_for_log(
        "Failed inbound s2s EXTERNAL authentication prosody.test -> ejabberd.test",
        WAIT,
    );
    assert!(
        ejabberd.log_contains("unsupported certificate purpose"),
        "ejabberd refused Prosody's certificate for another reason; logs:\n{}",
        ejabberd.log()
    );
    prosody.wait_for_log("SASL EXTERNAL with ejabberd.test failed", WAIT);
    net.assert_srv_queried("prosody.test");
    net.assert_srv_queried("ejabberd.test");
}

/// What a hearth test will use: a reserved slot resolves inside the DNS namespace (and
/// nowhere else: the machine's resolv.conf is untouched), and its certificate verifies
/// against the test CA as a server certificate — as a client certificate only with
/// [`Trust::CaClientAuth`] (OpenSSL's purpose check, the one ejabberd applies).
#[test]
fn a_reserved_slot_resolves_and_its_certificate_verifies() {
    if let Some(why) = Net::unavailable() {
        println!("SKIPPED: {why}");
        return;
    }
    let net = Net::new();
    let slot = net.reserve("hearth.test", Trust::Ca);
    let out = net
        .isolated_command("getent")
        .args(["hosts", "hearth.test"])
        .output()
        .expect("cannot run getent");
    let found = String::from_utf8_lossy(&out.stdout);
    assert!(
        found.starts_with(&format!("{} ", slot.addr)),
        "getent hosts hearth.test in the namespace: {found:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(net.dns_log().contains("query[A] hearth.test"));
    let machine = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    assert!(!machine.contains(&net.dns_addr().to_string()), "{machine}");

    let client_auth = net.credentials("both.test", Trust::CaClientAuth);
    for (cert, purpose, ok) in [
        (&slot.creds.cert, "sslserver", true),
        (&slot.creds.cert, "sslclient", false),
        (&client_auth.cert, "sslclient", true),
    ] {
        let out = Command::new("openssl")
            .args(["verify", "-purpose", purpose, "-CAfile"])
            .arg(net.ca_cert_path())
            .arg(cert)
            .output()
            .expect("cannot run openssl");
        assert_eq!(
            out.status.success(),
            ok,
            "openssl verify -purpose {purpose} {}: {}{}",
            cert.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
