//! XEP-0045 across federation: a user of another server (a second hearth on loopback,
//! dialback between them) joins a room of `conference.a.test`, talks there and leaves.
//! The room's domain has links of its own, authenticated like the server's.

mod common;

use common::client::{Conn, NS_CLIENT};
use common::im::{expect_message, login};
use common::{Server, ServerOpts, free_port};

const PW: &str = "a fine password";
const MUC: &str = "http://jabber.org/protocol/muc";
const USER: &str = "http://jabber.org/protocol/muc#user";

/// `a.test` (with the rooms) and `b.test`, each routing the other's domains to it.
fn pair() -> (Server, Server) {
    let (pa, pb) = (free_port(), free_port());
    let a = Server::start(ServerOpts {
        domain: "a.test".into(),
        s2s: Some(format!(
            "listen = [\"127.0.0.1:{pa}\"]\nroutes = {{ \"b.test\" = \"127.0.0.1:{pb}\" }}\n"
        )),
        ..ServerOpts::default()
    });
    let b = Server::start(ServerOpts {
        domain: "b.test".into(),
        s2s: Some(format!(
            "listen = [\"127.0.0.1:{pb}\"]\nroutes = {{ \"a.test\" = \"127.0.0.1:{pa}\", \
             \"conference.a.test\" = \"127.0.0.1:{pa}\" }}\n"
        )),
        ..ServerOpts::default()
    });
    a.add_user("alice", PW);
    b.add_user("bob", PW);
    (a, b)
}

fn join(c: &mut Conn, room: &str, nick: &str) {
    c.send(&format!(
        "<presence to='{room}/{nick}'><x xmlns='{MUC}'/></presence>"
    ));
    c.expect_matching("own room presence", |el| {
        el.name == "presence"
            && el.attr("from") == Some(&format!("{room}/{nick}"))
            && el
                .child("x", USER)
                .is_some_and(|x| x.children.iter().any(|s| s.attr("code") == Some("110")))
    });
    c.expect_matching("the subject", |el| el.has_child("subject", NS_CLIENT));
}

#[test]
fn a_remote_user_joins_talks_and_leaves() {
    let (a, b) = pair();
    let room = "lounge@conference.a.test";
    let mut alice = login(&a, "alice", "desk");
    alice.send("<presence/>");
    // No MUC <x/>: an instant room (§10.1.1).
    alice.send(&format!("<presence to='{room}/alice'/>"));
    alice.expect_matching("the subject", |el| el.has_child("subject", NS_CLIENT));
    let mut bob = login(&b, "bob", "phone");
    bob.send("<presence/>");
    join(&mut bob, room, "bob");
    alice.send(&format!(
        "<message type='groupchat' to='{room}'><body>hi bob</body></message>"
    ));
    let m = expect_message(&mut bob, "hi bob");
    assert_eq!(m.attr("from"), Some(format!("{room}/alice").as_str()));
    bob.send(&format!(
        "<message type='groupchat' to='{room}'><body>hi alice</body></message>"
    ));
    let m = expect_message(&mut alice, "hi alice");
    assert_eq!(m.attr("from"), Some(format!("{room}/bob").as_str()));
    // bob's session ends: his server tells the room, which tells alice.
    drop(bob);
    alice.expect_matching("bob leaving", |el| {
        el.name == "presence"
            && el.attr("type") == Some("unavailable")
            && el.attr("from") == Some(format!("{room}/bob").as_str())
    });
    // The room's domain has its own link, authenticated by dialback like the server's.
    let log = a.log();
    assert!(log.contains("ready to conference.a.test>b.test"), "{log}");
    assert!(
        b.log().contains("authenticated as conference.a.test"),
        "{}",
        b.log()
    );
}

#[test]
fn a_prosody_user_joins_a_hearth_room() {
    peer_user_joins(common::peers::PeerKind::Prosody);
}

#[test]
fn an_ejabberd_user_joins_a_hearth_room() {
    peer_user_joins(common::peers::PeerKind::Ejabberd);
}

/// A user of another server (Debian's Prosody 0.12 or ejabberd 23.01,
/// tests/common/peers.rs, dialback with self-signed certificates) joins a hearth room
/// with slixmpp's xep_0045 through its own server, gets the history and talks with a
/// hearth user.
fn peer_user_joins(kind: common::peers::PeerKind) {
    use common::clients::{RunningClient, check_slixmpp, python};
    use common::peers::{Net, Peer, Trust};
    use serde_json::json;
    use std::path::PathBuf;
    use std::process::Command;
    use std::time::Duration;

    if let Some(why) = Net::unavailable() {
        println!("SKIPPED: {why}");
        return;
    }
    check_slixmpp();
    let net = Net::new();
    let slot = net.reserve("hearth.test", Trust::SelfSigned);
    // The rooms' domain is found where hearth is (its SRV record).
    net.add_domain("conference.hearth.test", slot.addr, slot.s2s_port);
    let hearth = Server::start(ServerOpts {
        domain: slot.domain.clone(),
        s2s: Some(format!(
            "listen = [\"{}\"]\nresolvers = [\"{}:53\"]\nca_file = \"{}\"\n",
            slot.s2s_addr(),
            net.dns_addr(),
            net.ca_cert_path().display()
        )),
        ..ServerOpts::default()
    });
    hearth.add_user("alice", PW);
    let peer_domain = format!("{}.test", kind.package());
    let peer = Peer::start(kind, &net, &peer_domain, net.next_addr(), Trust::SelfSigned);
    peer.add_user("bob", PW);
    let room = "garden@conference.hearth.test";
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/muc_slixmpp.py");
    let muc =
        |c2s: std::net::SocketAddr, cafile: &std::path::Path, jid: &str, mech: &str, steps| {
            let mut cmd = Command::new(python());
            cmd.arg(&script)
                .args(["--host", &c2s.ip().to_string()])
                .args(["--port", &c2s.port().to_string()])
                .arg("--cafile")
                .arg(cafile)
                .args(["--jid", jid, "--password", PW, "--timeout", "40"])
                .args(["--mech", mech])
                .args(["--steps", &serde_json::Value::to_string(&steps)]);
            RunningClient::command(cmd)
        };
    let mut alice = muc(
        hearth.c2s_addr(),
        &hearth.cert_path(),
        &format!("{}/desk", hearth.jid("alice")),
        "SCRAM-SHA-256",
        json!([
            {"do": "join", "room": room, "nick": "alice"},
            {"do": "instant", "room": room},
            {"do": "say", "room": room, "body": "before bob came"},
            {"do": "ready"},
            {"do": "wait_body", "room": room, "body": "hello from prosody"},
            {"do": "say", "room": room, "body": "welcome bob"},
            {"do": "sleep", "s": 2},
        ]),
    );
    alice.wait_for_event("ready", Duration::from_secs(30));
    let bob = muc(
        peer.c2s_addr(),
        peer.client_cafile(),
        &format!("{}/phone", peer.jid("bob")),
        kind.client_mech(),
        json!([
            {"do": "join", "room": room, "nick": "bob", "maxstanzas": 5},
            {"do": "say", "room": room, "body": "hello from prosody"},
            {"do": "wait_body", "room": room, "body": "welcome bob"},
        ]),
    )
    .finish();
    let alice = alice.finish();
    assert!(bob.succeeded(), "{bob}\n{}\n{}", hearth.log(), peer.log());
    assert!(alice.succeeded(), "{alice}");
    let joined = bob.expect_event("joined");
    assert_eq!(joined["history"], json!(["before bob came"]), "{bob}");
    assert!(
        hearth
            .log()
            .contains(&format!("authenticated as {peer_domain}"))
    );
}
