//! XEP-0280 Message Carbons end to end: two devices of one account with slixmpp's
//! xep_0280 plugin and with aioxmpp's carbons service (tests/clients/*.py), sent and
//! received copies, `<private/>` and XEP-0334 `<no-copy/>` not copied, disabling stops
//! them; then, with the raw client, a message from another server copied to the
//! recipient's other device (two hearths federating on loopback).

mod common;

use common::client::{Conn, NS_CLIENT, new_id};
use common::clients::{aioxmpp_spawn, slixmpp};
use common::im::{drain, error_condition, expect_message};
use common::{Server, ServerOpts, free_port};
use serde_json::Value;
use std::time::Duration;

const PW: &str = "a fine password";
const WAIT: Duration = Duration::from_secs(20);
const NS_CARBONS: &str = "urn:xmpp:carbons:2";
const NS_FORWARD: &str = "urn:xmpp:forward:0";

fn server() -> Server {
    let server = Server::start(ServerOpts::default());
    server.add_user("alice", PW);
    server.add_user("bob", PW);
    server
}

fn events<'a>(run: &'a common::clients::ClientRun, name: &str) -> Vec<&'a Value> {
    run.events.iter().filter(|e| e["event"] == name).collect()
}

#[test]
fn slixmpp_devices_see_both_sides_but_not_private_messages() {
    let server = server();
    let (aj, bj) = (server.jid("alice"), server.jid("bob"));
    let alice = |res: &str| slixmpp(&server, "alice", PW, "SCRAM-SHA-256").resource(res);
    // The desk has carbons on and the lowest priority: it gets only copies.
    let mut desk = alice("desk").spawn(&["carbons", "--expect", "2", "--linger", "1.5"]);
    desk.wait_for_event("ready", WAIT);
    let to_bob = |body: &str| format!("{bj}={body}");
    let mut phone = alice("phone").spawn(&[
        "carbons",
        "--priority",
        "5",
        "--send-private",
        &to_bob("secret"),
        "--send-no-copy",
        &to_bob("quiet"),
        "--send",
        &to_bob("hello bob"),
        "--linger",
        "4",
    ]);
    phone.wait_for_event("ready", WAIT);
    let to_alice = |body: &str| format!("{aj}={body}");
    let bob = slixmpp(&server, "bob", PW, "SCRAM-SHA-256")
        .resource("laptop")
        .run(&[
            "carbons",
            "--no-enable",
            "--send-private",
            &to_alice("psst"),
            "--send",
            &to_alice("hi alice"),
            "--linger",
            "1.5",
        ]);
    bob.assert_ok();
    let desk = desk.finish();
    desk.assert_ok();
    let phone = phone.finish();
    phone.assert_ok();

    // Within each sender's stream the order is kept, so a private message copied by
    // mistake would come before the copy expected after it.
    let copies = events(&desk, "carbon");
    assert_eq!(copies.len(), 2, "{desk}");
    let sent = copies
        .iter()
        .find(|c| c["direction"] == "sent")
        .unwrap_or_else(|| panic!("no sent copy: {desk}"));
    assert_eq!(sent["body"], "hello bob", "{desk}");
    assert_eq!(sent["sender"], format!("{aj}/phone"));
    assert_eq!(sent["copy_from"], aj.as_str());
    assert_eq!(sent["copy_to"], format!("{aj}/desk"));
    assert_eq!(sent["copy_type"], "chat");
    let received = copies
        .iter()
        .find(|c| c["direction"] == "received")
        .unwrap_or_else(|| panic!("no received copy: {desk}"));
    assert_eq!(received["body"], "hi alice", "{desk}");
    assert_eq!(received["sender"], format!("{bj}/laptop"));
    assert_eq!(received["copy_from"], aj.as_str());
    // Nothing went to the desk as an original.
    assert!(events(&desk, "message").is_empty(), "{desk}");
    // The phone (priority 5) had bob's messages, the private one among them, and no copy.
    let bodies: Vec<&Value> = events(&phone, "message")
        .iter()
        .map(|m| &m["body"])
        .collect();
    assert_eq!(bodies, ["psst", "hi alice"], "{phone}");
    assert!(events(&phone, "carbon").is_empty(), "{phone}");
    let bodies: Vec<&Value> = events(&bob, "message").iter().map(|m| &m["body"]).collect();
    assert_eq!(bodies, ["secret", "quiet", "hello bob"], "{bob}");
}

#[test]
fn slixmpp_disabling_stops_the_copies() {
    let server = server();
    let (aj, bj) = (server.jid("alice"), server.jid("bob"));
    let alice = |res: &str| slixmpp(&server, "alice", PW, "SCRAM-SHA-256").resource(res);
    let mut desk = alice("desk").spawn(&["carbons", "--disable-at-once", "--linger", "4"]);
    desk.wait_for_event("carbons_disabled", WAIT);
    desk.wait_for_event("ready", WAIT);
    let mut phone = alice("phone").spawn(&[
        "carbons",
        "--no-enable",
        "--priority",
        "5",
        "--send",
        &format!("{bj}=after disabling"),
        "--linger",
        "2.5",
    ]);
    phone.wait_for_event("ready", WAIT);
    slixmpp(&server, "bob", PW, "SCRAM-SHA-256")
        .run(&[
            "carbons",
            "--no-enable",
            "--send",
            &format!("{aj}/phone=to the phone"),
            "--linger",
            "0.5",
        ])
        .assert_ok();
    let phone = phone.finish();
    phone.assert_ok();
    assert_eq!(events(&phone, "message").len(), 1, "{phone}");
    let desk = desk.finish();
    desk.assert_ok();
    assert!(events(&desk, "carbon").is_empty(), "{desk}");
    assert!(events(&desk, "message").is_empty(), "{desk}");
}

#[test]
fn aioxmpp_gets_sent_and_received_copies() {
    let server = server();
    let (aj, bj) = (server.jid("alice"), server.jid("bob"));
    let mut tablet = aioxmpp_spawn(
        &server,
        &format!("{aj}/tablet"),
        PW,
        &["--carbons", "--expect", "2", "--linger", "1"],
    );
    tablet.wait_for_event("ready", WAIT);
    let mut phone = slixmpp(&server, "alice", PW, "SCRAM-SHA-256")
        .resource("phone")
        .spawn(&[
            "carbons",
            "--no-enable",
            "--priority",
            "5",
            "--send",
            &format!("{bj}=from the phone"),
            "--linger",
            "3",
        ]);
    phone.wait_for_event("ready", WAIT);
    slixmpp(&server, "bob", PW, "SCRAM-SHA-256")
        .run(&[
            "carbons",
            "--no-enable",
            "--send",
            &format!("{aj}=hi alice"),
            "--linger",
            "0.5",
        ])
        .assert_ok();
    let tablet = tablet.finish();
    tablet.assert_ok();
    let copies: Vec<&Value> = events(&tablet, "message")
        .into_iter()
        .filter(|m| m["source"] == "carbons")
        .collect();
    assert_eq!(copies.len(), 2, "{tablet}");
    let sent = copies
        .iter()
        .find(|c| c["sent"] == true)
        .expect("a sent copy");
    assert_eq!(sent["body"], "from the phone", "{tablet}");
    assert_eq!(sent["sender"], format!("{aj}/phone"));
    let received = copies
        .iter()
        .find(|c| c["sent"] == false)
        .expect("a received copy");
    assert_eq!(received["body"], "hi alice", "{tablet}");
    phone.finish().assert_ok();
}

// --- raw: federation and refusals --------------------------------------------------

fn login(server: &Server, user: &str, resource: &str) -> Conn {
    Conn::login(
        server.c2s_addr(),
        server.domain(),
        &server.cert_path(),
        user,
        PW,
        Some(resource),
    )
}

fn enable(c: &mut Conn) {
    let id = new_id("carbons");
    c.send(&format!(
        "<iq type='set' id='{id}'><enable xmlns='{NS_CARBONS}'/></iq>"
    ));
    let reply = c.expect_iq_reply(&id);
    assert_eq!(reply.attr("type"), Some("result"), "{reply}");
}

/// Two servers, `a.test` and `b.test`, as tests/s2s_hearth.rs sets them up.
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

#[test]
fn a_message_from_another_server_is_copied() {
    let (a, b) = pair();
    let mut phone = login(&a, "alice", "phone");
    let mut desk = login(&a, "alice", "desk");
    let mut bob = login(&b, "bob", "laptop");
    phone.send("<presence><priority>5</priority></presence>");
    desk.send("<presence/>");
    bob.send("<presence/>");
    enable(&mut desk);
    drain(&mut phone);
    drain(&mut desk);

    bob.send("<message to='alice@a.test' type='chat'><body>over the wire</body></message>");
    expect_message(&mut phone, "over the wire");
    let copy = desk.expect_matching("a received copy", |e| {
        e.name == "message" && e.has_child("received", NS_CARBONS)
    });
    assert_eq!(copy.attr("from"), Some("alice@a.test"), "{copy}");
    assert_eq!(copy.attr("to"), Some("alice@a.test/desk"), "{copy}");
    let inner = copy
        .child("received", NS_CARBONS)
        .and_then(|r| r.child("forwarded", NS_FORWARD))
        .and_then(|f| f.child("message", NS_CLIENT))
        .unwrap_or_else(|| panic!("no forwarded message: {copy}"));
    assert_eq!(inner.attr("from"), Some("bob@b.test/laptop"), "{copy}");

    // The phone answers across: the desk gets the sent copy.
    phone.send("<message to='bob@b.test/laptop' type='chat'><body>and back</body></message>");
    expect_message(&mut bob, "and back");
    let copy = desk.expect_matching("a sent copy", |e| {
        e.name == "message" && e.has_child("sent", NS_CARBONS)
    });
    assert!(copy.to_string().contains("and back"), "{copy}");

    // Nobody on another server may switch alice's carbons (§4.1).
    let id = new_id("remote");
    bob.send(&format!(
        "<iq type='set' id='{id}' to='alice@a.test'><disable xmlns='{NS_CARBONS}'/></iq>"
    ));
    let reply = bob.expect_iq_reply(&id);
    assert_eq!(error_condition(&reply), "forbidden", "{reply}");
}

#[test]
fn malformed_requests_are_refused_and_the_session_lives_on() {
    let server = server();
    let mut c = login(&server, "alice", "desk");
    for (payload, ty, cond) in [
        ("<enable xmlns='urn:xmpp:carbons:2'/>", "get", "bad-request"),
        ("<sent xmlns='urn:xmpp:carbons:2'/>", "set", "bad-request"),
    ] {
        let id = new_id("bad");
        c.send(&format!("<iq type='{ty}' id='{id}'>{payload}</iq>"));
        let reply = c.expect_iq_reply(&id);
        assert_eq!(error_condition(&reply), cond, "{reply}");
    }
    let id = new_id("other");
    c.send(&format!(
        "<iq type='set' id='{id}' to='bob@{}'><enable xmlns='urn:xmpp:carbons:2'/></iq>",
        server.domain()
    ));
    let reply = c.expect_iq_reply(&id);
    assert_eq!(error_condition(&reply), "forbidden", "{reply}");
    c.assert_alive();
}
