//! XEP-0280's rules without a socket: eligibility (§6) and targets (§7, §8) as pure
//! functions, then the module through a real router and the standard registry.

use super::*;
use crate::router::im::tests::{DOMAIN, World, parse, queued};

fn stanza(xml: &str) -> Stanza {
    let mut el = parse(xml);
    if el.attr("from").is_none() {
        el.set_attr("from", "romeo@home.example/phone");
    }
    Stanza::from_client(el).unwrap_or_else(|_| panic!("not a stanza: {xml}"))
}

fn eligible(xml: &str, dir: Direction) -> bool {
    is_eligible(&stanza(xml), dir)
}

#[test]
fn chat_and_normal_with_a_body_are_copied() {
    for dir in [Direction::Sent, Direction::Received] {
        assert!(eligible(
            "<message to='juliet@capulet.example' type='chat'/>",
            dir
        ));
        assert!(eligible(
            "<message to='juliet@capulet.example'><body>hi</body></message>",
            dir
        ));
        assert!(eligible(
            "<message to='juliet@capulet.example' type='normal'><body>hi</body></message>",
            dir
        ));
        // A chat state alone (type chat) is copied too (§10.2).
        assert!(eligible(
            "<message to='juliet@capulet.example' type='chat'>\
             <active xmlns='http://jabber.org/protocol/chatstates'/></message>",
            dir
        ));
        assert!(!eligible("<message to='juliet@capulet.example'/>", dir));
    }
}

#[test]
fn groupchat_and_headline_are_not() {
    for dir in [Direction::Sent, Direction::Received] {
        assert!(!eligible(
            "<message to='room@muc.example' type='groupchat'><body>hi</body></message>",
            dir
        ));
        assert!(!eligible(
            "<message to='romeo@home.example' type='headline'><body>news</body></message>",
            dir
        ));
    }
}

#[test]
fn private_and_no_copy_are_not() {
    for dir in [Direction::Sent, Direction::Received] {
        assert!(!eligible(
            "<message to='juliet@capulet.example' type='chat'><body>hi</body>\
             <private xmlns='urn:xmpp:carbons:2'/></message>",
            dir
        ));
        assert!(!eligible(
            "<message to='juliet@capulet.example' type='chat'><body>hi</body>\
             <no-copy xmlns='urn:xmpp:hints'/></message>",
            dir
        ));
        // Other hints do not stop a copy.
        assert!(eligible(
            "<message to='juliet@capulet.example' type='chat'><body>hi</body>\
             <no-store xmlns='urn:xmpp:hints'/></message>",
            dir
        ));
        // Nor does a `private` in another namespace.
        assert!(eligible(
            "<message to='juliet@capulet.example' type='chat'><body>hi</body>\
             <private xmlns='urn:example'/></message>",
            dir
        ));
    }
}

#[test]
fn a_copy_is_never_copied_again() {
    assert!(!eligible(
        "<message to='romeo@home.example/phone' type='chat'>\
         <received xmlns='urn:xmpp:carbons:2'/></message>",
        Direction::Received
    ));
    assert!(!eligible(
        "<message to='juliet@capulet.example' type='chat'>\
         <sent xmlns='urn:xmpp:carbons:2'/></message>",
        Direction::Sent
    ));
}

#[test]
fn room_private_messages_are_copied_when_sent_not_when_received() {
    let pm = "<message to='room@muc.example/nurse' type='chat'><body>psst</body>\
              <x xmlns='http://jabber.org/protocol/muc#user'/></message>";
    assert!(eligible(pm, Direction::Sent));
    let received = "<message from='room@muc.example/nurse' to='romeo@home.example/phone' \
                    type='chat'><body>psst</body>\
                    <x xmlns='http://jabber.org/protocol/muc#user'/></message>";
    assert!(!eligible(received, Direction::Received));
}

#[test]
fn errors_are_copied_only_coming_back_from_a_bare_jid() {
    let from_bare = "<message from='juliet@capulet.example' to='romeo@home.example/phone' \
                     type='error'><error type='cancel'>\
                     <service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
                     </error></message>";
    assert!(eligible(from_bare, Direction::Received));
    let from_full = from_bare.replace("capulet.example'", "capulet.example/balcony'");
    assert!(!eligible(&from_full, Direction::Received));
    let from_server = from_bare.replace("juliet@capulet.example'", "capulet.example'");
    assert!(!eligible(&from_server, Direction::Received));
    // A client's own error replies are not copied.
    assert!(!eligible(
        "<message to='juliet@capulet.example' type='error'/>",
        Direction::Sent
    ));
}

fn view(list: &[(&str, bool, i8, bool)]) -> Vec<CarbonsView> {
    list.iter()
        .map(|&(r, available, priority, wants)| CarbonsView {
            resource: r.into(),
            available,
            priority,
            wants_carbons: wants,
        })
        .collect()
}

#[test]
fn sent_copies_go_to_every_enabled_resource_but_the_sender() {
    let v = view(&[
        ("phone", true, 5, true),
        ("desk", true, 0, true),
        ("tablet", false, 0, true),
        ("old", true, 0, false),
    ]);
    let t = copy_targets(&v, Direction::Sent, MessageType::Chat, None, Some("phone"));
    assert_eq!(t, ["desk", "tablet"]);
}

#[test]
fn received_at_the_bare_jid_skips_the_resources_rfc_6121_chose() {
    let v = view(&[
        ("phone", true, 5, true),
        ("desk", true, 5, true),
        ("laptop", true, 1, true),
        ("away", true, -1, true),
        ("unavailable", false, 9, true),
        ("plain", true, 1, false),
    ]);
    // Chat to the bare JID: the two of priority 5 have it; the lower and the negative
    // ones get copies; an unavailable one nothing (it gets no bare-JID traffic).
    let t = copy_targets(&v, Direction::Received, MessageType::Chat, None, None);
    assert_eq!(t, ["laptop", "away"]);
    // An error to the bare JID reaches nobody by RFC 6121: every enabled one is copied.
    let t = copy_targets(&v, Direction::Received, MessageType::Error, None, None);
    assert_eq!(t, ["phone", "desk", "laptop", "away"]);
}

#[test]
fn received_at_a_full_jid_skips_only_that_one() {
    let v = view(&[("phone", true, 5, true), ("desk", true, 0, true)]);
    let t = copy_targets(
        &v,
        Direction::Received,
        MessageType::Chat,
        Some("phone"),
        None,
    );
    assert_eq!(t, ["desk"]);
    let t = copy_targets(
        &v,
        Direction::Received,
        MessageType::Chat,
        Some("desk"),
        None,
    );
    assert_eq!(t, ["phone"]);
    // An unbound resource is the bare JID (RFC 6121 §8.5.3.2.1): phone has it.
    let t = copy_targets(
        &v,
        Direction::Received,
        MessageType::Chat,
        Some("gone"),
        None,
    );
    assert_eq!(t, ["desk"]);
    // Writing to oneself: the sending device is not sent its own message back.
    let t = copy_targets(
        &v,
        Direction::Received,
        MessageType::Chat,
        Some("phone"),
        Some("desk"),
    );
    assert!(t.is_empty(), "{t:?}");
}

#[test]
fn the_copy_has_the_shape_of_section_7() {
    let account = BareJid::new(Some("romeo"), "home.example").unwrap();
    let original = parse(
        "<message from='juliet@capulet.example/balcony' to='romeo@home.example/garden' \
         type='chat'><body>hi</body></message>",
    );
    let copy = wrap(
        Direction::Received,
        &account,
        "romeo@home.example/home",
        &original,
    );
    assert_eq!(
        copy.to_xml_in(ns::CLIENT).replace('"', "'"),
        "<message from='romeo@home.example' to='romeo@home.example/home' type='chat'>\
         <received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>\
         <message xmlns='jabber:client' from='juliet@capulet.example/balcony' \
         to='romeo@home.example/garden' type='chat'><body>hi</body></message>\
         </forwarded></received></message>"
    );
}

// --- through the router -------------------------------------------------------------

const ENABLE: &str = "<iq type='set' id='c1'><enable xmlns='urn:xmpp:carbons:2'/></iq>";
const DISABLE: &str = "<iq type='set' id='c2'><disable xmlns='urn:xmpp:carbons:2'/></iq>";
const AVAILABLE: &str = "<presence/>";

fn setup() -> (World, [crate::router::im::tests::Session; 3]) {
    let w = World::new(&["romeo", "juliet"]);
    let phone = w.bind("romeo", "phone");
    let desk = w.bind("romeo", "desk");
    let juliet = w.bind("juliet", "balcony");
    for s in [&phone, &desk, &juliet] {
        w.send(s, AVAILABLE);
    }
    for s in [&phone, &desk, &juliet] {
        queued(s);
    }
    (w, [phone, desk, juliet])
}

#[test]
fn enable_is_answered_and_asking_twice_is_no_error() {
    let (w, [phone, ..]) = setup();
    for _ in 0..2 {
        let (out, _) = w.send(&phone, ENABLE);
        assert!(out.contains("type='result' id='c1'"), "{out}");
    }
    let (out, _) = w.send(&phone, DISABLE);
    assert!(out.contains("type='result' id='c2'"), "{out}");
    let (out, _) = w.send(&phone, DISABLE);
    assert!(out.contains("type='result' id='c2'"), "{out}");
}

#[test]
fn bad_requests_get_errors() {
    let (w, [phone, ..]) = setup();
    let (out, _) = w.send(
        &phone,
        "<iq type='get' id='g'><enable xmlns='urn:xmpp:carbons:2'/></iq>",
    );
    assert!(
        out.contains("type='error'") && out.contains("bad-request"),
        "{out}"
    );
    let (out, _) = w.send(
        &phone,
        "<iq type='set' id='p'><private xmlns='urn:xmpp:carbons:2'/></iq>",
    );
    assert!(
        out.contains("type='error'") && out.contains("bad-request"),
        "{out}"
    );
    // Someone else's carbons are not anyone's to switch (§4.1).
    let (out, _) = w.send(
        &phone,
        &format!(
            "<iq type='set' id='o' to='juliet@{DOMAIN}'><enable xmlns='urn:xmpp:carbons:2'/></iq>"
        ),
    );
    // (the refusal comes through the router, like every account-owned iq's)
    let q = queued(&phone).concat() + &out;
    assert!(q.contains("type='error'") && q.contains("forbidden"), "{q}");
}

#[test]
fn the_server_announces_carbons() {
    let (w, [phone, ..]) = setup();
    let (out, _) = w.send(
        &phone,
        &format!(
            "<iq type='get' id='d' to='{DOMAIN}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
        ),
    );
    assert!(out.contains("var='urn:xmpp:carbons:2'"), "{out}");
}

#[test]
fn sent_and_received_copies_reach_the_other_device() {
    let (w, [phone, desk, juliet]) = setup();
    w.send(&desk, ENABLE);
    // Romeo writes from his phone: the desk gets a sent copy, juliet the original.
    w.send(
        &phone,
        &format!("<message to='juliet@{DOMAIN}' type='chat' id='m1'><body>hello</body></message>"),
    );
    let d = queued(&desk);
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(
        d[0].starts_with(&format!(
            "<message from='romeo@{DOMAIN}' to='romeo@{DOMAIN}/desk' type='chat'><sent xmlns='urn:xmpp:carbons:2'>"
        )),
        "{d:?}"
    );
    assert!(d[0].contains("from='romeo@home.example/phone'") && d[0].contains("hello"));
    assert_eq!(queued(&juliet).len(), 1);
    assert!(queued(&phone).is_empty());
    // Juliet answers the phone: the desk gets a received copy.
    w.send(
        &juliet,
        &format!("<message to='romeo@{DOMAIN}/phone' type='chat'><body>hi</body></message>"),
    );
    let d = queued(&desk);
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(
        d[0].contains("<received xmlns='urn:xmpp:carbons:2'>"),
        "{d:?}"
    );
    assert!(d[0].contains("from='juliet@home.example/balcony'"), "{d:?}");
    assert_eq!(queued(&phone).len(), 1);
    // The phone never enabled carbons: nothing for it when the desk writes.
    w.send(
        &desk,
        &format!("<message to='juliet@{DOMAIN}' type='chat'><body>x</body></message>"),
    );
    assert!(queued(&phone).is_empty());
}

#[test]
fn private_no_copy_and_disable_stop_copies() {
    let (w, [phone, desk, juliet]) = setup();
    w.send(&desk, ENABLE);
    w.send(
        &phone,
        &format!(
            "<message to='juliet@{DOMAIN}' type='chat'><body>secret</body>\
             <private xmlns='urn:xmpp:carbons:2'/></message>"
        ),
    );
    assert!(queued(&desk).is_empty());
    // Juliet (a local recipient) gets it without the marker (§9).
    let j = queued(&juliet);
    assert_eq!(j.len(), 1);
    assert!(!j[0].contains("private"), "{j:?}");
    w.send(
        &phone,
        &format!(
            "<message to='juliet@{DOMAIN}' type='chat'><body>secret</body>\
             <no-copy xmlns='urn:xmpp:hints'/></message>"
        ),
    );
    assert!(queued(&desk).is_empty());
    w.send(
        &juliet,
        &format!(
            "<message to='romeo@{DOMAIN}/phone' type='chat'><body>psst</body>\
             <private xmlns='urn:xmpp:carbons:2'/></message>"
        ),
    );
    assert!(queued(&desk).is_empty());
    let p = queued(&phone);
    assert!(p.len() == 1 && !p[0].contains("private"), "{p:?}");
    w.send(&desk, DISABLE);
    w.send(
        &phone,
        &format!("<message to='juliet@{DOMAIN}' type='chat'><body>again</body></message>"),
    );
    assert!(queued(&desk).is_empty());
}

#[test]
fn a_message_to_oneself_is_copied_once() {
    let (w, [phone, desk, _]) = setup();
    w.send(&phone, ENABLE);
    w.send(&desk, ENABLE);
    // To the bare JID, both of priority 0: both get the original by RFC 6121, nobody a
    // copy.
    w.send(
        &phone,
        &format!("<message to='romeo@{DOMAIN}' type='chat'><body>note</body></message>"),
    );
    let d = queued(&desk);
    assert!(d.len() == 1 && !d[0].contains("carbons"), "{d:?}");
    let p = queued(&phone);
    assert!(p.len() == 1 && !p[0].contains("carbons"), "{p:?}");
    // To another full JID of its own: one received copy for nobody else; no sent copy.
    let tablet = w.bind("romeo", "tablet");
    w.send(&tablet, AVAILABLE);
    w.send(&tablet, ENABLE);
    queued(&phone);
    queued(&desk);
    queued(&tablet);
    w.send(
        &phone,
        &format!("<message to='romeo@{DOMAIN}/desk' type='chat'><body>note</body></message>"),
    );
    assert!(queued(&phone).is_empty());
    let d = queued(&desk);
    assert!(d.len() == 1 && !d[0].contains("carbons"), "{d:?}");
    let t = queued(&tablet);
    assert!(t.len() == 1 && t[0].contains("<received "), "{t:?}");
}

#[test]
fn groupchat_and_headlines_are_not_copied() {
    let (w, [phone, desk, juliet]) = setup();
    w.send(&desk, ENABLE);
    w.send(
        &juliet,
        &format!("<message to='romeo@{DOMAIN}/phone' type='headline'><body>n</body></message>"),
    );
    w.send(
        &juliet,
        &format!("<message to='romeo@{DOMAIN}/phone' type='groupchat'><body>n</body></message>"),
    );
    assert!(queued(&desk).is_empty());
    assert_eq!(queued(&phone).len(), 2);
}
