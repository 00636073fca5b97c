//! XEP-0352 Client State Indication end to end. A phone on slixmpp's own xep_0352 plugin
//! (tests/clients/csi_client.py) goes inactive while two contacts (raw clients) change
//! presence and type: it gets nothing until a message with a body comes (then what its
//! sender had held first: the latest presence and chat state; the other contact's stay
//! held), and after going active again only the latest presence of each contact. Raw-XML tests cover the rest: iqs and
//! subscription requests go at once, a stanza from the client flushes what is held, the
//! buffer is bounded, and a stray element in the CSI namespace closes only its stream.
//!
//! No second client library implements XEP-0352 here: aioxmpp 0.13 and python3-nbxmpp
//! (4.2, Debian) have no CSI; slixmpp is the one.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::client::{Conn, Event, NS_CLIENT};
use common::clients::{RunningClient, python};
use common::im::{befriend, drain, login, presence, roster_get, server};
use common::xml::{Item, Node};
use serde_json::Value;

const PW: &str = "a fine password";
const WAIT: Duration = Duration::from_secs(20);
/// Time for a routed stanza to reach the phone's connection task after the sender's
/// ping round trip proved it was queued.
const SETTLE: Duration = Duration::from_millis(300);

fn touch(dir: &Path, name: &str) {
    std::fs::write(dir.join(name), b"").expect("control file");
}

/// The stanzas of a report event.
fn log_of(ev: &Value) -> Vec<Value> {
    ev["log"].as_array().cloned().unwrap_or_default()
}

fn presences<'a>(log: &'a [Value], from_prefix: &str) -> Vec<&'a Value> {
    log.iter()
        .filter(|s| s["kind"] == "presence")
        .filter(|s| {
            s["from"]
                .as_str()
                .is_some_and(|f| f.starts_with(from_prefix))
        })
        .collect()
}

/// Phone `carol`, contacts `alice` and `bob` subscribed both ways and online.
fn contacts(server: &common::Server) -> (Conn, Conn) {
    let mut carol = login(server, "carol", "setup");
    let mut alice = login(server, "alice", "desk");
    let mut bob = login(server, "bob", "desk");
    for c in [&mut carol, &mut alice, &mut bob] {
        roster_get(c, None);
        presence(c, "");
    }
    befriend(server, &mut carol, "carol", &mut alice, "alice");
    befriend(server, &mut carol, "carol", &mut bob, "bob");
    carol.close();
    presence(&mut alice, "<status>a0</status>");
    presence(&mut bob, "<status>b0</status>");
    drain(&mut alice);
    drain(&mut bob);
    (alice, bob)
}

#[test]
fn slixmpp_inactive_gets_no_presence_until_active_then_the_latest_only() {
    let server = server();
    let (mut alice, mut bob) = contacts(&server);
    let control = server.scratch_dir().join("csi-control");
    std::fs::create_dir_all(&control).unwrap();
    let phone = format!("{}/csi", server.jid("carol"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/csi_client.py");
    let mut cmd = Command::new(python());
    cmd.arg(script)
        .args(["--jid", &phone, "--password", PW])
        .args(["--port", &server.c2s_port().to_string()])
        .arg("--cafile")
        .arg(server.cert_path())
        .args(["--contact", &server.jid("alice")])
        .args(["--contact", &server.jid("bob")])
        .arg("--control-dir")
        .arg(&control);
    let mut run = RunningClient::command(cmd);
    run.wait_for_event("ready", WAIT);
    run.wait_for_event("inactive", WAIT);
    // Give hearth the nonza before the contacts start (it is in flight on the socket).
    std::thread::sleep(SETTLE);

    // While inactive: presence changes, chat states.
    for s in ["a1", "a2", "a3"] {
        presence(
            &mut alice,
            &format!("<show>away</show><status>{s}</status>"),
        );
    }
    presence(&mut bob, "<show>dnd</show><status>b1</status>");
    bob.send("<presence type='unavailable'><status>b2</status></presence>");
    for state in ["composing", "paused"] {
        alice.send(&format!(
            "<message type='chat' to='{phone}'><{state} xmlns='http://jabber.org/protocol/chatstates'/></message>"
        ));
    }
    drain(&mut alice);
    drain(&mut bob);
    std::thread::sleep(SETTLE);
    touch(&control, "step1");
    let report1 = log_of(&run.wait_for_event("report1", WAIT));
    assert!(
        report1.is_empty(),
        "an inactive phone got stanzas: {report1:?}"
    );

    // A body goes at once, after what its sender had held: alice's latest presence and
    // her latest chat state. Bob's presence stays held.
    alice.send(&format!(
        "<message type='chat' to='{phone}'><body>wake up</body></message>"
    ));
    let body = log_of(&run.wait_for_event("body", WAIT));
    let from_alice = presences(&body, &server.jid("alice"));
    let from_bob = presences(&body, &server.jid("bob"));
    assert_eq!(from_alice.len(), 1, "{body:?}");
    assert_eq!(from_alice[0]["status"], "a3", "{body:?}");
    assert!(from_bob.is_empty(), "{body:?}");
    assert_eq!(body.len(), 3, "{body:?}");
    let messages: Vec<&Value> = body.iter().filter(|s| s["kind"] == "message").collect();
    assert_eq!(messages.len(), 2, "{body:?}");
    assert!(
        messages[0]["payload"][0]
            .as_str()
            .is_some_and(|p| p.ends_with("}paused")),
        "{body:?}"
    );
    assert_eq!(body.last().unwrap()["body"], "wake up", "{body:?}");

    // Inactive still: more presence, held again (bob's replaces his unavailable).
    presence(&mut alice, "<show>xa</show><status>a4</status>");
    presence(&mut alice, "<status>a5</status>");
    presence(&mut bob, "<status>b3</status>");
    presence(&mut bob, "<show>chat</show><status>b4</status>");
    drain(&mut alice);
    drain(&mut bob);
    std::thread::sleep(SETTLE);
    touch(&control, "step2");
    let report2 = log_of(&run.wait_for_event("report2", WAIT));
    assert!(report2.is_empty(), "an inactive phone got: {report2:?}");

    // Active: the latest of each, before the pong (§5.1).
    let active = log_of(&run.wait_for_event("active", WAIT));
    let from_alice = presences(&active, &server.jid("alice"));
    let from_bob = presences(&active, &server.jid("bob"));
    assert_eq!(from_alice.len(), 1, "{active:?}");
    assert_eq!(from_alice[0]["status"], "a5", "{active:?}");
    assert_eq!(from_bob.len(), 1, "{active:?}");
    assert_eq!(from_bob[0]["status"], "b4", "{active:?}");
    assert_eq!(from_bob[0]["show"], "chat", "{active:?}");
    assert_eq!(active.len(), 2, "{active:?}");
    run.finish().assert_ok();
    alice.assert_alive();
}

/// Everything that arrives within `wait`.
fn read_for(c: &mut Conn, wait: Duration) -> Vec<Node> {
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match c.recv(left) {
            Event::Item(Item::Element(el)) => seen.push(el),
            Event::Timeout => return seen,
            other => panic!("{other:?}"),
        }
    }
}

const INACTIVE: &str = "<inactive xmlns='urn:xmpp:csi:0'/>";

#[test]
fn urgent_stanzas_go_at_once_after_what_their_sender_had_held() {
    let server = server();
    let (mut alice, _bob) = contacts(&server);
    let mut carol = login(&server, "carol", "phone");
    presence(&mut carol, "");
    drain(&mut carol);
    carol.send(INACTIVE);
    drain(&mut carol); // the ping is an iq: answered at once, nothing held yet.
    presence(&mut alice, "<status>held</status>");
    drain(&mut alice);
    assert!(read_for(&mut carol, SETTLE).is_empty());

    // An iq to the phone's full JID is urgent: the held presence comes first.
    let phone = carol.full_jid().to_string();
    alice.send(&format!(
        "<iq type='get' id='v1' to='{phone}'><query xmlns='jabber:iq:version'/></iq>"
    ));
    let first = carol.expect_element("held presence");
    assert_eq!(first.name, "presence", "{first}");
    let iq = carol.expect_element("the iq");
    assert_eq!(iq.attr("id"), Some("v1"), "{iq}");

    // A subscription request is urgent too.
    presence(&mut alice, "<status>held again</status>");
    alice.send(&format!(
        "<presence type='unsubscribe' to='{}'/>",
        server.jid("carol")
    ));
    let got = read_for(&mut carol, Duration::from_secs(2));
    let kinds: Vec<(String, Option<String>)> = got
        .iter()
        .map(|n| (n.name.clone(), n.attr("type").map(str::to_owned)))
        .collect();
    assert!(
        kinds
            .iter()
            .any(|(n, t)| n == "presence" && t.as_deref() == Some("unsubscribe")),
        "{kinds:?}"
    );
    let held_at = got
        .iter()
        .position(|n| n.name == "presence" && n.attr("type").is_none());
    let unsub_at = got
        .iter()
        .position(|n| n.name == "presence" && n.attr("type") == Some("unsubscribe"));
    assert!(
        held_at < unsub_at,
        "held presence after the request: {kinds:?}"
    );
}

#[test]
fn a_stanza_from_the_client_flushes_what_is_held() {
    let server = server();
    let (mut alice, _bob) = contacts(&server);
    let mut carol = login(&server, "carol", "phone");
    presence(&mut carol, "");
    drain(&mut carol);
    carol.send(INACTIVE);
    for s in ["x1", "x2"] {
        presence(&mut alice, &format!("<status>{s}</status>"));
    }
    drain(&mut alice);
    std::thread::sleep(SETTLE);
    // The phone pings: it is awake, so what was held comes before the pong.
    let before = drain(&mut carol);
    let statuses: Vec<String> = before
        .iter()
        .filter(|n| n.name == "presence")
        .map(|n| {
            n.child("status", NS_CLIENT)
                .map(|s| s.text.clone())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(statuses, vec!["x2".to_string()], "{before:?}");
    // Still inactive: the next presence is held again.
    presence(&mut alice, "<status>x3</status>");
    drain(&mut alice);
    assert!(read_for(&mut carol, SETTLE).is_empty());
    carol.send("<active xmlns='urn:xmpp:csi:0'/>");
    let got = read_for(&mut carol, Duration::from_secs(1));
    assert_eq!(got.len(), 1, "{got:?}");
    // Active again: stanzas flow as they come.
    presence(&mut alice, "<status>x4</status>");
    let got = read_for(&mut carol, Duration::from_secs(1));
    assert_eq!(got.len(), 1, "{got:?}");
}

#[test]
fn what_is_held_is_bounded() {
    let server = server();
    let (mut alice, _bob) = contacts(&server);
    let mut carol = login(&server, "carol", "phone");
    presence(&mut carol, "");
    drain(&mut carol);
    carol.send(INACTIVE);
    std::thread::sleep(SETTLE);
    let phone = carol.full_jid().to_string();
    // Receipts are held and never replace each other: 127 stay held, the 128th
    // (hearth's bound) sends them all.
    let receipt = |i: usize| {
        format!(
            "<message to='{phone}' id='r{i}'><received xmlns='urn:xmpp:receipts' id='m{i}'/></message>"
        )
    };
    for i in 0..127 {
        alice.send(&receipt(i));
    }
    drain(&mut alice);
    assert!(read_for(&mut carol, SETTLE).is_empty());
    alice.send(&receipt(127));
    drain(&mut alice);
    let got = read_for(&mut carol, Duration::from_secs(2));
    assert_eq!(got.len(), 128);
    assert_eq!(got[0].attr("id"), Some("r0"));
    assert_eq!(got[127].attr("id"), Some("r127"));
}

#[test]
fn an_unknown_element_in_the_csi_namespace_closes_only_that_stream() {
    let server = server();
    let (mut alice, _bob) = contacts(&server);
    let mut carol = login(&server, "carol", "phone");
    carol.send("<csi xmlns='urn:xmpp:csi:0'/>");
    let (els, _) = carol.read_until_closed(WAIT);
    let err = els
        .iter()
        .find(|e| e.name == "error")
        .unwrap_or_else(|| panic!("no stream error: {els:?}"));
    assert!(
        err.children
            .iter()
            .any(|c| c.name == "unsupported-stanza-type"),
        "{err}"
    );
    alice.assert_alive();
}
