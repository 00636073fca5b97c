//! XEP-0357's rules without a socket: parsing, which messages notify, the summary form,
//! the throttle and the answers; then the module through `Im::route` with a real router
//! and SQLite file, the "app server" being a local session that records what it gets.

use std::time::{Duration, Instant};

use super::*;
use crate::router::Attention;
use crate::router::im::tests::{World, parse as parse_xml, queued};
use crate::storage::Accounts as _;

fn el(xml: &str) -> Element {
    parse_xml(xml)
}

fn payload(xml: &str) -> Element {
    el(&format!("<iq type='set' id='x'>{xml}</iq>"))
        .children()
        .next()
        .unwrap()
        .clone()
}

const OPTIONS: &str = "<x xmlns='jabber:x:data' type='submit'>\
    <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
    <field var='secret'><value>s3cr&lt;t</value></field></x>";

#[test]
fn enable_and_disable_parse() {
    let r = parse(&payload(&format!(
        "<enable xmlns='urn:xmpp:push:0' jid='push.example' node='n1'>{OPTIONS}</enable>"
    )))
    .unwrap();
    let Request::Enable { jid, node, options } = r else {
        panic!("{r:?}")
    };
    assert_eq!((jid.as_str(), node.as_str()), ("push.example", "n1"));
    let options = options.unwrap();
    let form = Submitted::parse(&options).unwrap();
    assert_eq!(form.form_type(), Some(PUBLISH_OPTIONS));
    assert_eq!(form.value("secret"), Some("s3cr<t"));
    assert_eq!(
        parse(&payload(
            "<enable xmlns='urn:xmpp:push:0' jid='push.example' node='n1'/>"
        ))
        .unwrap(),
        Request::Enable {
            jid: Jid::parse("push.example").unwrap(),
            node: "n1".into(),
            options: None
        }
    );
    assert_eq!(
        parse(&payload(
            "<disable xmlns='urn:xmpp:push:0' jid='push.example'/>"
        ))
        .unwrap(),
        Request::Disable {
            jid: Jid::parse("push.example").unwrap(),
            node: None
        }
    );
}

#[test]
fn malformed_requests_are_bad_requests() {
    for xml in [
        "<enable xmlns='urn:xmpp:push:0' node='n1'/>",
        "<enable xmlns='urn:xmpp:push:0' jid='push.example'/>",
        "<enable xmlns='urn:xmpp:push:0' jid='push.example' node=''/>",
        "<enable xmlns='urn:xmpp:push:0' jid='a@@b' node='n'/>",
        "<disable xmlns='urn:xmpp:push:0'/>",
        "<other xmlns='urn:xmpp:push:0' jid='push.example' node='n'/>",
        // A form of another kind, of another type, two forms.
        "<enable xmlns='urn:xmpp:push:0' jid='push.example' node='n'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:other</value></field></x></enable>",
        "<enable xmlns='urn:xmpp:push:0' jid='push.example' node='n'><x xmlns='jabber:x:data' type='form'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field></x></enable>",
        "<enable xmlns='urn:xmpp:push:0' jid='push.example' node='n'><x xmlns='jabber:x:data' type='submit'><field><value>v</value></field></x></enable>",
    ] {
        let e = parse(&payload(xml)).expect_err(xml);
        assert_eq!(e.condition, StanzaCondition::BadRequest, "{xml}");
    }
    let two = format!(
        "<enable xmlns='urn:xmpp:push:0' jid='push.example' node='n'>{OPTIONS}{OPTIONS}</enable>"
    );
    assert!(parse(&payload(&two)).is_err());
    let long = format!(
        "<enable xmlns='urn:xmpp:push:0' jid='push.example' node='{}'/>",
        "n".repeat(MAX_NODE_BYTES + 1)
    );
    assert!(parse(&payload(&long)).is_err());
}

#[test]
fn which_messages_notify() {
    for xml in [
        "<message type='chat'><body>hi</body></message>",
        "<message><body>normal</body></message>",
        "<message type='chat'><encrypted xmlns='eu.siacs.conversations.axolotl'/></message>",
        "<message type='chat'><openpgp xmlns='urn:xmpp:openpgp:0'>x</openpgp></message>",
        "<message><propose xmlns='urn:xmpp:jingle-message:0' id='c'/></message>",
        "<message><x xmlns='jabber:x:conference' jid='room@muc.example'/></message>",
    ] {
        assert!(is_notable(&el(xml)), "{xml}");
    }
    for xml in [
        "<message type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
        "<message type='chat'><body>  </body></message>",
        "<message type='chat'><received xmlns='urn:xmpp:receipts' id='a'/></message>",
        "<message type='groupchat'><body>room talk</body></message>",
        "<message type='headline'><body>news</body></message>",
        "<message type='error'><body>bounced</body></message>",
        "<presence/>",
    ] {
        assert!(!is_notable(&el(xml)), "{xml}");
    }
}

#[test]
fn bodies_are_cut_and_never_an_encrypted_fallback() {
    assert_eq!(
        body_of(&el("<message><body>hello</body></message>")).as_deref(),
        Some("hello")
    );
    assert_eq!(
        body_of(&el(
            "<message><body>I sent you an OMEMO encrypted message</body><encrypted xmlns='eu.siacs.conversations.axolotl'/></message>"
        )),
        None
    );
    let long = format!(
        "<message><body>{}</body></message>",
        "é".repeat(MAX_BODY_BYTES)
    );
    let b = body_of(&el(&long)).unwrap();
    assert!(b.len() <= MAX_BODY_BYTES && b.chars().all(|c| c == 'é'));
}

#[test]
fn the_notification_has_the_shape_of_section_7() {
    let reg = Registration {
        jid: "push.example".into(),
        node: "n1".into(),
        options: parse(&payload(&format!(
            "<enable xmlns='urn:xmpp:push:0' jid='push.example' node='n1'>{OPTIONS}</enable>"
        )))
        .ok()
        .and_then(|r| match r {
            Request::Enable { options, .. } => options,
            Request::Disable { .. } => None,
        }),
        resource: String::new(),
    };
    let from = BareJid::new(Some("alice"), "home.example").unwrap();
    let n = notification(&Summary {
        count: 3,
        sender: Some("bob@home.example".into()),
        body: None,
    });
    let iq = publish_iq(&from, &reg, n, "push-1");
    let xml = iq.to_xml_in(ns::CLIENT).replace('"', "'");
    assert!(
        xml.starts_with("<iq type='set' from='alice@home.example' to='push.example' id='push-1'>"),
        "{xml}"
    );
    assert!(
        xml.contains(
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n1'><item>\
             <notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:push:summary</value></field>\
             <field var='message-count'><value>3</value></field>\
             <field var='last-message-sender'><value>bob@home.example</value></field>\
             </x></notification></item></publish><publish-options>"
        ),
        "{xml}"
    );
    assert!(xml.contains("<value>s3cr&lt;t</value>"), "{xml}");
    assert!(!xml.contains("last-message-body"), "{xml}");
}

#[test]
fn the_throttle_sends_once_per_interval_and_restarts_when_the_user_is_seen() {
    let mut t = Throttle::default();
    let k = |j: &str, n: &str| (j.to_owned(), n.to_owned());
    let regs = vec![(k("a", "1"), "phone"), (k("b", "2"), "tablet")];
    let t0 = Instant::now();
    assert_eq!(t.message("alice", 1, t0, &regs), (1, vec![0, 1]));
    assert_eq!(
        t.message("alice", 1, t0 + Duration::from_secs(5), &regs),
        (2, vec![])
    );
    // A registration added meanwhile is told at once.
    let three = vec![regs[0].clone(), regs[1].clone(), (k("c", "3"), "")];
    assert_eq!(
        t.message("alice", 1, t0 + Duration::from_secs(6), &three),
        (3, vec![2])
    );
    assert_eq!(
        t.message("alice", 1, t0 + MIN_INTERVAL, &regs),
        (4, vec![0, 1])
    );
    // Another account counts apart.
    assert_eq!(t.message("bob", 1, t0, &regs), (1, vec![0, 1]));
    // Seen on the phone: counting starts again, the phone's registration (and the one
    // of an unknown device) may be told at once, the tablet's stays throttled.
    let t1 = t0 + MIN_INTERVAL + Duration::from_secs(1);
    t.seen("alice", "phone");
    assert_eq!(t.message("alice", 1, t1, &three), (1, vec![0, 2]));
    t.seen("alice", "phone");
    t.seen("alice", "tablet");
    assert_eq!(t.message("alice", 1, t1, &three), (1, vec![0, 1, 2]));
}

#[test]
fn errors_keep_count_or_disable() {
    let e = |t: &str, c: &str| {
        el(&format!(
            "<iq type='error' id='push-1'><error type='{t}'><{c} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
        ))
    };
    assert_eq!(
        after_error(&e("wait", "resource-constraint")),
        AfterError::Keep
    );
    assert_eq!(
        after_error(&e("cancel", "item-not-found")),
        AfterError::Disable
    );
    assert_eq!(
        after_error(&e("auth", "not-authorized")),
        AfterError::Disable
    );
    assert_eq!(
        after_error(&e("cancel", "internal-server-error")),
        AfterError::Count
    );
    assert_eq!(
        after_error(&el("<iq type='error' id='x'/>")),
        AfterError::Count
    );
}

// Through the router: "apps" is a local account whose session plays the app server.

const APP: &str = "apps@home.example/srv";

fn enable(node: &str) -> String {
    format!(
        "<iq type='set' id='e-{node}'><enable xmlns='urn:xmpp:push:0' jid='{APP}' node='{node}'>{OPTIONS}</enable></iq>"
    )
}

/// alice enabled push to the app session, then went offline; bob and the app online.
fn world() -> (
    World,
    crate::router::im::tests::Session,
    crate::router::im::tests::Session,
) {
    let w = World::new(&["alice", "bob", "apps"]);
    let alice = w.bind("alice", "phone");
    let (out, _) = w.send(&alice, &enable("n1"));
    assert!(out.contains("type='result' id='e-n1'"), "{out}");
    w.router.unbind(&alice.jid, alice.id);
    let bob = w.bind("bob", "desk");
    let app = w.bind("apps", "srv");
    (w, bob, app)
}

fn chat(body: &str) -> String {
    format!("<message to='alice@home.example' type='chat'><body>{body}</body></message>")
}

fn pushes(app: &crate::router::im::tests::Session) -> Vec<String> {
    queued(app)
        .into_iter()
        .filter(|s| s.contains("urn:xmpp:push:0"))
        .collect()
}

fn id_of(xml: &str) -> String {
    el(xml).attr("id").unwrap().to_owned()
}

#[test]
fn an_offline_account_is_notified_and_its_message_kept() {
    let (w, bob, app) = world();
    w.send(&bob, &chat("secret words"));
    let p = pushes(&app);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].contains("from='alice@home.example' to='apps@home.example/srv'")
            && p[0].contains("<value>1</value>")
            && p[0].contains("<value>bob@home.example</value>")
            && p[0].contains("<value>s3cr&lt;t</value>")
            && !p[0].contains("secret words"),
        "{p:?}"
    );
    // Push never takes the message: it waits offline.
    use crate::features::offline::OfflineStore as _;
    let waiting = w.storage.offline_messages("alice", 10).unwrap();
    assert!(
        waiting.len() == 1 && waiting[0].1.contains("secret words"),
        "{waiting:?}"
    );
    // Chat states alone notify nobody.
    w.send(
        &bob,
        "<message to='alice@home.example' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
    );
    assert!(pushes(&app).is_empty());
}

#[test]
fn an_attended_account_is_not_notified_an_inactive_or_hibernating_one_is() {
    let (w, bob, app) = world();
    let alice = w.bind("alice", "phone");
    w.send(&alice, "<presence/>");
    w.send(&bob, &chat("one"));
    assert!(pushes(&app).is_empty());
    w.router
        .set_attention(&alice.jid, alice.id, Attention::Inactive);
    w.send(&bob, &chat("two"));
    let p = pushes(&app);
    assert_eq!(p.len(), 1, "{p:?}");
    // Both messages reached the session as before.
    assert_eq!(
        queued(&alice)
            .iter()
            .filter(|s| s.contains("<body>"))
            .count(),
        2
    );
    // Back active, then hibernating: seen in between, so notified at once again.
    w.router
        .set_attention(&alice.jid, alice.id, Attention::Active);
    w.send(&alice, "<presence/>");
    w.router
        .set_attention(&alice.jid, alice.id, Attention::Hibernating);
    w.send(&bob, &chat("three"));
    let p = pushes(&app);
    assert!(p.len() == 1 && p[0].contains("<value>1</value>"), "{p:?}");
}

/// An account with no registration costs a message no storage read once known; it is
/// notified as soon as it enables push, and again not after it disabled it all.
#[test]
fn an_account_that_enables_later_is_notified() {
    let w = World::new(&["alice", "bob", "apps"]);
    let bob = w.bind("bob", "desk");
    let app = w.bind("apps", "srv");
    w.send(&bob, &chat("before"));
    assert!(pushes(&app).is_empty());
    let alice = w.bind("alice", "phone");
    let (out, _) = w.send(&alice, &enable("n1"));
    assert!(out.contains("type='result'"), "{out}");
    w.router.unbind(&alice.jid, alice.id);
    w.send(&bob, &chat("after"));
    assert_eq!(pushes(&app).len(), 1);
}

#[test]
fn notifications_are_throttled_until_the_user_is_seen() {
    let (w, bob, app) = world();
    w.send(&bob, &chat("one"));
    w.send(&bob, &chat("two"));
    assert_eq!(pushes(&app).len(), 1);
    let alice = w.bind("alice", "phone");
    w.send(
        &alice,
        "<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    w.router.unbind(&alice.jid, alice.id);
    w.send(&bob, &chat("three"));
    let p = pushes(&app);
    assert!(
        p.len() == 1 && p[0].contains("message-count'><value>1<"),
        "{p:?}"
    );
}

#[test]
fn disable_stops_notifications() {
    let (w, bob, app) = world();
    let alice = w.bind("alice", "phone");
    let (out, _) = w.send(
        &alice,
        &format!(
            "<iq type='set' id='d'><disable xmlns='urn:xmpp:push:0' jid='{APP}' node='n1'/></iq>"
        ),
    );
    assert!(out.contains("type='result' id='d'"), "{out}");
    w.router.unbind(&alice.jid, alice.id);
    w.send(&bob, &chat("one"));
    assert!(pushes(&app).is_empty());
}

#[test]
fn an_app_server_error_meaning_gone_disables_a_wait_one_does_not() {
    let (w, bob, app) = world();
    w.send(&bob, &chat("one"));
    let id = id_of(&pushes(&app)[0]);
    // Only the app server asked may answer.
    let (out, _) = w.send(
        &bob,
        &format!("<iq type='error' id='{id}' to='alice@home.example'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"),
    );
    assert!(out.is_empty(), "{out}");
    w.send(
        &app,
        &format!("<iq type='error' id='{id}' to='alice@home.example'><error type='wait'><resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"),
    );
    use super::PushStore as _;
    assert_eq!(w.storage.push_registrations("alice").unwrap().len(), 1);
    // Seen again, so the next message is notified at once.
    let alice = w.bind("alice", "phone");
    w.send(&alice, "<presence/>");
    w.router.unbind(&alice.jid, alice.id);
    w.send(&bob, &chat("two"));
    let id = id_of(&pushes(&app)[0]);
    let (out, _) = w.send(
        &app,
        &format!("<iq type='error' id='{id}' to='alice@home.example'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"),
    );
    assert!(out.is_empty(), "{out}");
    assert!(w.storage.push_registrations("alice").unwrap().is_empty());
}

#[test]
fn only_the_account_enables_and_only_so_many_times() {
    let (w, bob, _app) = world();
    let (out, _) = w.send(
        &bob,
        &format!("<iq type='set' id='x' to='alice@home.example'><enable xmlns='urn:xmpp:push:0' jid='{APP}' node='evil'/></iq>"),
    );
    let q = queued(&bob);
    assert!((out + &q.concat()).contains("forbidden"), "{q:?}");
    let alice = w.bind("alice", "phone");
    for i in 2..=MAX_REGISTRATIONS {
        let (out, _) = w.send(&alice, &enable(&format!("n{i}")));
        assert!(out.contains("type='result'"), "{out}");
    }
    let (out, _) = w.send(&alice, &enable("one-too-many"));
    assert!(out.contains("resource-constraint"), "{out}");
    // Enabling one that is there again is fine.
    let (out, _) = w.send(&alice, &enable("n1"));
    assert!(out.contains("type='result'"), "{out}");
    let (out, _) = w.send(
        &alice,
        "<iq type='set' id='b'><enable xmlns='urn:xmpp:push:0' node='n'/></iq>",
    );
    assert!(out.contains("bad-request"), "{out}");
    let (out, _) = w.send(
        &alice,
        &format!(
            "<iq type='get' id='g'><enable xmlns='urn:xmpp:push:0' jid='{APP}' node='n1'/></iq>"
        ),
    );
    assert!(out.contains("bad-request"), "{out}");
    assert!(w.storage.stored_bytes("alice").unwrap() > 0);
}

#[test]
fn the_account_announces_push() {
    let (w, bob, _app) = world();
    let _ = bob;
    let alice = w.bind("alice", "phone");
    let (out, _) = w.send(
        &alice,
        "<iq type='get' id='d1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    );
    assert!(out.contains("urn:xmpp:push:0"), "{out}");
    let (out, _) = w.send(
        &alice,
        "<iq type='get' id='d2' to='home.example'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    );
    assert!(!out.contains("urn:xmpp:push:0"), "{out}");
}

#[test]
fn a_message_from_another_server_notifies_too() {
    let (w, _bob, app) = world();
    let from = Jid::parse("romeo@far.example/balcony").unwrap();
    let mut el =
        el("<message to='alice@home.example' type='chat'><body>from afar</body></message>");
    el.set_attr("from", from.as_str());
    let stanza = Stanza {
        kind: crate::stanza::Kind::Message,
        el,
        to: Some(Jid::parse("alice@home.example").unwrap()),
    };
    smol::block_on(w.im().route_remote(&from, stanza));
    let p = pushes(&app);
    assert!(
        p.len() == 1 && p[0].contains("<value>romeo@far.example</value>"),
        "{p:?}"
    );
}

/// What push costs a message for an offline account: `cargo test --release --lib
/// push_cost -- --ignored --nocapture` routes messages to an offline account with a
/// registration (each one reads the registrations; the throttle lets one notification
/// out) and to one without, and prints the time per message.
#[test]
#[ignore = "a measurement: run with --release --ignored --nocapture"]
fn push_cost() {
    const N: usize = 900;
    use super::PushStore as _;
    let (w, bob, app) = world();
    let time = |to: &str| {
        let t = Instant::now();
        for i in 0..N {
            w.send(
                &bob,
                &format!("<message to='{to}@home.example' type='chat'><body>m{i}</body></message>"),
            );
        }
        t.elapsed() / N as u32
    };
    // A fresh account per run keeps offline quotas apart; alternated, so neither side
    // gets the warm-up. "alice" has a registration; so do the "w" accounts.
    let reg = Registration {
        jid: APP.into(),
        node: "n".into(),
        options: None,
        resource: String::new(),
    };
    let (mut with, mut without) = (vec![time("alice")], Vec::new());
    for round in 0..4 {
        let (a, b) = (format!("w{round}"), format!("n{round}"));
        for u in [&a, &b] {
            w.storage.create_account(u, "pw").unwrap();
        }
        w.storage
            .push_enable(&a, &reg, 5, &crate::storage::Quota::DEFAULT)
            .unwrap()
            .unwrap();
        without.push(time(&b));
        with.push(time(&a));
    }
    assert_eq!(pushes(&app).len(), 5);
    with.sort();
    without.sort();
    println!(
        "per message to an offline account ({N} each, 5 and 4 runs, sorted): \
         with a push registration {with:?}; without {without:?}"
    );
}
