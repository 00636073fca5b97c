//! Federation through [`Im`], without a socket: the world of `tests.rs` with a `Remote`
//! on its router that records what leaves for other servers, and stanzas from other
//! servers handed to [`Im::route_remote`] as an s2s link would hand them over.

use std::sync::{Arc, Mutex};

use super::tests::{DOMAIN, Session, World, parse, queued};
use crate::features::roster::Roster as _;
use crate::features::subscription::{SubState, Subscription};
use crate::jid::{BareJid, Jid};
use crate::ns;
use crate::router::{Remote, Router};
use crate::stanza::Stanza;
use crate::storage::Quota;

/// The other server's domain.
const REMOTE: &str = "remote.example";
const ROMEO: &str = "romeo@remote.example";
const ROMEO_DESK: &str = "romeo@remote.example/desk";

/// What the server handed to its federation links: (domain, stanza as client XML with
/// attributes in single quotes).
#[derive(Default)]
struct Outbox(Mutex<Vec<(String, String)>>);

impl Remote for Outbox {
    fn send(&self, _router: &Router, domain: &str, stanza: Stanza) {
        let xml = stanza.el.to_xml_in(ns::CLIENT).replace('"', "'");
        self.0.lock().unwrap().push((domain.to_owned(), xml));
    }
}

impl Outbox {
    /// Everything sent so far (all of it for [`REMOTE`]), taken.
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
            .into_iter()
            .map(|(domain, xml)| {
                assert_eq!(domain, REMOTE, "{xml}");
                xml
            })
            .collect()
    }
}

/// A world whose router hands other servers' domains to an [`Outbox`].
fn federated(users: &[&str]) -> (World, Arc<Outbox>) {
    let outbox = Arc::new(Outbox::default());
    let router = Router::new(DOMAIN.into()).with_remote(outbox.clone());
    (World::with_router(users, router), outbox)
}

impl World {
    /// `xml` from `from` on another server, received as its s2s link hands it over.
    fn receive(&self, from: &str, xml: &str) {
        let mut el = parse(xml);
        el.set_attr("from", from);
        let stanza = Stanza::from_client(el).unwrap_or_else(|_| panic!("not a stanza: {xml}"));
        let from = Jid::parse(from).unwrap();
        smol::block_on(self.im().route_remote(&from, stanza));
    }

    /// `user`'s subscription state for `contact`, from storage.
    fn sub(&self, user: &str, contact: &str) -> SubState {
        let contact = BareJid::parse(contact).unwrap();
        self.storage.sub_state(user, &contact).unwrap()
    }

    /// The session's connection ends.
    fn end(&self, s: Session) {
        smol::block_on(self.im().session_ended(&s.jid, s.id));
    }
}

/// The stanzas of `list` that contain every one of `parts`.
fn with<'a>(list: &'a [String], parts: &[&str]) -> Vec<&'a String> {
    list.iter()
        .filter(|s| parts.iter().all(|p| s.contains(p)))
        .collect()
}

/// Alice (at `a`, available) and romeo on the other server subscribe to each other.
fn mutual(w: &World, out: &Outbox, a: &Session) {
    w.send(a, "<presence type='subscribe' to='romeo@remote.example'/>");
    w.receive(
        ROMEO,
        "<presence type='subscribed' to='alice@home.example'/>",
    );
    w.receive(
        ROMEO,
        "<presence type='subscribe' to='alice@home.example'/>",
    );
    w.send(a, "<presence type='subscribed' to='romeo@remote.example'/>");
    assert_eq!(w.sub("alice", ROMEO).subscription, Subscription::Both);
    out.take();
    queued(a);
}

/// RFC 6121 §3.1.2 and §3.1.6 with the contact on another server: the request leaves
/// stamped with the user's bare JID and addressed to the contact's bare JID; the approval
/// comes back over s2s, is delivered and pushed; the contact's presence follows.
#[test]
fn subscribing_to_a_remote_contact() {
    let (w, out) = federated(&["alice"]);
    let a = w.bind("alice", "phone");
    w.send(
        &a,
        "<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>",
    );
    w.send(&a, "<presence/>");
    assert!(out.take().is_empty(), "no contacts, nothing sent");
    w.send(
        &a,
        "<presence type='subscribe' to='romeo@remote.example/desk'><status>hi</status></presence>",
    );
    let sent = out.take();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        with(
            &sent,
            &[
                "type='subscribe'",
                "from='alice@home.example'",
                "to='romeo@remote.example'",
                "<status>hi</status>"
            ]
        )
        .len(),
        1,
        "{sent:?}"
    );
    let q = queued(&a);
    assert_eq!(
        with(&q, &["jabber:iq:roster", "ask='subscribe'", ROMEO]).len(),
        1,
        "{q:?}"
    );
    assert!(w.sub("alice", ROMEO).pending_out);

    w.receive(
        ROMEO,
        "<presence type='subscribed' to='alice@home.example'/>",
    );
    let q = queued(&a);
    assert_eq!(
        with(&q, &["type='subscribed'", "from='romeo@remote.example'"]).len(),
        1,
        "{q:?}"
    );
    assert_eq!(
        with(&q, &["jabber:iq:roster", "subscription='to'"]).len(),
        1,
        "{q:?}"
    );
    let state = w.sub("alice", ROMEO);
    assert!(state.subscription == Subscription::To && !state.pending_out);

    w.receive(
        ROMEO_DESK,
        "<presence to='alice@home.example'><show>away</show></presence>",
    );
    let q = queued(&a);
    assert_eq!(
        with(
            &q,
            &["from='romeo@remote.example/desk'", "<show>away</show>"]
        )
        .len(),
        1,
        "{q:?}"
    );
    assert!(out.take().is_empty());
}

/// §3.1.6 while the user is offline: the approval still updates the roster. At the next
/// login the contact is probed, from the user's bare JID (§4.3.1), and its answer (to the
/// bare JID) reaches every available resource.
#[test]
fn remote_approval_while_offline_then_probe_at_login() {
    let (w, out) = federated(&["alice"]);
    let a = w.bind("alice", "phone");
    w.send(&a, "<presence type='subscribe' to='romeo@remote.example'/>");
    w.end(a);
    assert_eq!(out.take().len(), 1);

    w.receive(
        ROMEO,
        "<presence type='subscribed' to='alice@home.example'/>",
    );
    let state = w.sub("alice", ROMEO);
    assert!(state.subscription == Subscription::To && !state.pending_out);
    assert!(out.take().is_empty(), "nothing goes back");

    let a = w.bind("alice", "laptop");
    let (echo, _) = w.send(&a, "<presence/>");
    assert!(echo.contains("from='alice@home.example/laptop'"), "{echo}");
    let sent = out.take();
    // A probe and no broadcast: romeo has no subscription to alice.
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        with(
            &sent,
            &[
                "type='probe'",
                "from='alice@home.example'",
                "to='romeo@remote.example'"
            ]
        )
        .len(),
        1,
        "{sent:?}"
    );
    w.receive(ROMEO_DESK, "<presence to='alice@home.example'/>");
    let q = queued(&a);
    assert_eq!(
        with(&q, &["from='romeo@remote.example/desk'"]).len(),
        1,
        "{q:?}"
    );
}

/// §3.1.3 from another server: a request for a user with no available resource is kept
/// and shown at the next login, after the echo. The user's approval goes back stamped
/// with its bare JID, followed by its presence (§3.1.5); from then on its broadcasts
/// (§4.4.2), its unavailable presence (§4.5.2) and the end of a session reach the
/// contact, one stanza each, to the contact's bare JID.
#[test]
fn remote_request_waits_for_login_then_presence_flows() {
    let (w, out) = federated(&["alice"]);
    w.receive(
        ROMEO,
        "<presence type='subscribe' to='alice@home.example'><status>it is I</status></presence>",
    );
    assert!(out.take().is_empty());
    assert!(w.sub("alice", ROMEO).pending_in);

    let a = w.bind("alice", "phone");
    let (got, _) = w.send(&a, "<presence><status>hi</status></presence>");
    let echo = got.find("<status>hi</status>").expect("echo");
    let request = got.find("type='subscribe'").expect("the waiting request");
    assert!(echo < request, "{got}");
    assert!(
        got.contains("from='romeo@remote.example'") && got.contains("it is I"),
        "{got}"
    );
    assert!(
        out.take().is_empty(),
        "no subscription yet: no probe, no broadcast"
    );

    w.send(
        &a,
        "<presence type='subscribed' to='romeo@remote.example'/>",
    );
    let sent = out.take();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(
        sent[0].contains("type='subscribed'")
            && sent[0].contains("from='alice@home.example'")
            && sent[0].contains("to='romeo@remote.example'"),
        "{sent:?}"
    );
    assert!(
        sent[1].contains("from='alice@home.example/phone'")
            && sent[1].contains("to='romeo@remote.example'")
            && sent[1].contains("<status>hi</status>")
            && !sent[1].contains("type="),
        "{sent:?}"
    );
    assert_eq!(w.sub("alice", ROMEO).subscription, Subscription::From);

    w.send(&a, "<presence><show>dnd</show></presence>");
    let sent = out.take();
    assert_eq!(
        with(
            &sent,
            &[
                "from='alice@home.example/phone'",
                "to='romeo@remote.example'",
                "<show>dnd</show>"
            ]
        )
        .len(),
        1,
        "{sent:?}"
    );
    assert_eq!(sent.len(), 1);
    w.send(&a, "<presence type='unavailable'/>");
    let sent = out.take();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        sent[0].contains("type='unavailable'")
            && sent[0].contains("from='alice@home.example/phone'")
            && sent[0].contains("to='romeo@remote.example'"),
        "{sent:?}"
    );

    let b = w.bind("alice", "tablet");
    w.send(&b, "<presence/>");
    assert_eq!(out.take().len(), 1, "the tablet's initial presence");
    w.end(b);
    let sent = out.take();
    assert_eq!(
        with(
            &sent,
            &["type='unavailable'", "from='alice@home.example/tablet'"]
        )
        .len(),
        1,
        "{sent:?}"
    );
}

/// §4.3.1 / §4.2.2: a new resource's initial presence probes the remote contact the
/// user is subscribed to and goes to the contact subscribed to the user; a remote request
/// for an online user is delivered at once (§3.1.3). Then the contact's `unsubscribe`
/// (§3.3.3) stops the user's presence (unavailable from each resource) and its
/// `unsubscribed` (§3.2.3) takes the user's subscription away, both pushed.
#[test]
fn remote_contact_both_ways_then_cancelled_by_its_server() {
    let (w, out) = federated(&["alice"]);
    let a = w.bind("alice", "phone");
    w.send(
        &a,
        "<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>",
    );
    w.send(&a, "<presence/>");
    w.send(&a, "<presence type='subscribe' to='romeo@remote.example'/>");
    w.receive(
        ROMEO,
        "<presence type='subscribed' to='alice@home.example'/>",
    );
    queued(&a);
    w.receive(
        ROMEO,
        "<presence type='subscribe' to='alice@home.example'/>",
    );
    let q = queued(&a);
    assert_eq!(
        with(&q, &["type='subscribe'", "from='romeo@remote.example'"]).len(),
        1,
        "delivered at once: {q:?}"
    );
    w.send(
        &a,
        "<presence type='subscribed' to='romeo@remote.example'/>",
    );
    assert_eq!(w.sub("alice", ROMEO).subscription, Subscription::Both);
    out.take();
    queued(&a);

    let b = w.bind("alice", "laptop");
    w.send(&b, "<presence/>");
    let sent = out.take();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(
        with(&sent, &["type='probe'", "from='alice@home.example'"]).len(),
        1,
        "{sent:?}"
    );
    assert_eq!(
        with(
            &sent,
            &[
                "from='alice@home.example/laptop'",
                "to='romeo@remote.example'"
            ]
        )
        .len(),
        1,
        "{sent:?}"
    );
    // The probe's answer, to the bare JID: every available resource sees it.
    w.receive(ROMEO_DESK, "<presence to='alice@home.example'/>");
    assert_eq!(with(&queued(&a), &[ROMEO_DESK]).len(), 1);
    assert_eq!(with(&queued(&b), &[ROMEO_DESK]).len(), 1);

    w.receive(
        ROMEO,
        "<presence type='unsubscribe' to='alice@home.example'/>",
    );
    assert_eq!(w.sub("alice", ROMEO).subscription, Subscription::To);
    let sent = out.take();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(
        with(&sent, &["type='unavailable'", "to='romeo@remote.example'"]).len(),
        2,
        "{sent:?}"
    );
    let q = queued(&a);
    assert_eq!(
        with(&q, &["jabber:iq:roster", "subscription='to'"]).len(),
        1,
        "{q:?}"
    );

    w.receive(
        ROMEO,
        "<presence type='unsubscribed' to='alice@home.example'/>",
    );
    assert_eq!(w.sub("alice", ROMEO).subscription, Subscription::None);
    let q = queued(&a);
    assert_eq!(
        with(&q, &["jabber:iq:roster", "subscription='none'"]).len(),
        1,
        "{q:?}"
    );
    assert!(out.take().is_empty());
}

/// §3.1.3 / §3.4 answered by the server for the user: a request from a contact the user
/// approved in advance, or from one already subscribed (whose server lost track), gets
/// `subscribed` back at once with the user's presence; a request for an account that
/// does not exist gets `unsubscribed`.
#[test]
fn remote_requests_answered_on_the_users_behalf() {
    let (w, out) = federated(&["alice"]);
    let a = w.bind("alice", "phone");
    w.send(&a, "<presence/>");
    w.send(
        &a,
        "<presence type='subscribed' to='romeo@remote.example'/>",
    );
    assert!(out.take().is_empty(), "a pre-approval is not sent (§3.4)");
    assert!(w.sub("alice", ROMEO).approved);

    for round in ["pre-approved", "already subscribed"] {
        w.receive(
            ROMEO,
            "<presence type='subscribe' to='alice@home.example'/>",
        );
        let sent = out.take();
        assert_eq!(sent.len(), 2, "{round}: {sent:?}");
        assert!(
            sent[0].contains("type='subscribed'") && sent[0].contains("from='alice@home.example'"),
            "{round}: {sent:?}"
        );
        assert!(
            sent[1].contains("from='alice@home.example/phone'") && !sent[1].contains("type="),
            "{round}: {sent:?}"
        );
        assert_eq!(w.sub("alice", ROMEO).subscription, Subscription::From);
        assert!(
            with(&queued(&a), &["type='subscribe'"]).is_empty(),
            "{round}: the user is not asked"
        );
    }

    w.receive(
        ROMEO,
        "<presence type='subscribe' to='nobody@home.example'/>",
    );
    let sent = out.take();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        sent[0].contains("type='unsubscribed'")
            && sent[0].contains("from='nobody@home.example'")
            && sent[0].contains("to='romeo@remote.example'"),
        "{sent:?}"
    );
}

/// §4.3.2: a probe from another server is answered with the last presence of each
/// available resource, or with unavailable from the bare JID carrying the last status and
/// its time, when the prober has a `from` subscription; a prober without one, and a
/// probe for an account that does not exist, get `unsubscribed` from the bare JID.
#[test]
fn remote_probes_are_answered_or_refused() {
    let (w, out) = federated(&["alice"]);
    w.receive(
        ROMEO,
        "<presence type='subscribe' to='alice@home.example'/>",
    );
    let a = w.bind("alice", "phone");
    w.send(&a, "<presence/>");
    w.send(
        &a,
        "<presence type='subscribed' to='romeo@remote.example'/>",
    );
    w.send(
        &a,
        "<presence type='unavailable'><status>gone fishing</status></presence>",
    );
    out.take();

    w.receive(ROMEO, "<presence type='probe' to='alice@home.example'/>");
    let sent = out.take();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        sent[0].contains("type='unavailable'")
            && sent[0].contains("from='alice@home.example'")
            && sent[0].contains("to='romeo@remote.example'")
            && sent[0].contains("gone fishing")
            && sent[0].contains(ns::DELAY),
        "{sent:?}"
    );

    w.send(&a, "<presence><status>back</status></presence>");
    out.take();
    w.receive(
        ROMEO_DESK,
        "<presence type='probe' to='alice@home.example'/>",
    );
    let sent = out.take();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        sent[0].contains("from='alice@home.example/phone'")
            && sent[0].contains("to='romeo@remote.example/desk'")
            && sent[0].contains("<status>back</status>"),
        "{sent:?}"
    );

    w.receive(
        "mercutio@remote.example/x",
        "<presence type='probe' to='alice@home.example'/>",
    );
    let sent = out.take();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        sent[0].contains("type='unsubscribed'")
            && sent[0].contains("from='alice@home.example'")
            && sent[0].contains("to='mercutio@remote.example'")
            && !sent[0].contains("back"),
        "{sent:?}"
    );
    w.receive(ROMEO, "<presence type='probe' to='nobody@home.example'/>");
    let sent = out.take();
    assert!(
        sent.len() == 1
            && sent[0].contains("type='unsubscribed'")
            && sent[0].contains("from='nobody@home.example'"),
        "{sent:?}"
    );
    assert!(queued(&a).is_empty(), "probes are the server's business");
}

/// XEP-0160 for a sender on another server: a chat message for a user with no available
/// resource is kept with a `<delay/>` and handed over at the next login; once online,
/// messages are delivered at once; a message for an account that does not exist goes back
/// over s2s as `service-unavailable` from the address it was sent to (RFC 6121 §8.5.2.2.1).
#[test]
fn remote_messages_are_stored_offline_or_refused() {
    let (w, out) = federated(&["alice"]);
    w.receive(
        ROMEO_DESK,
        "<message to='alice@home.example' type='chat' id='m1'><body>wherefore</body></message>",
    );
    assert!(out.take().is_empty());

    let a = w.bind("alice", "phone");
    let (_, collect) = w.send(&a, "<presence/>");
    assert!(collect, "initial presence collects offline messages");
    let kept = smol::block_on(w.im().offline_take("alice", 10)).unwrap();
    assert_eq!(kept.len(), 1);
    let xml = &kept[0].1;
    assert!(
        xml.contains("wherefore") && xml.contains(ROMEO_DESK) && xml.contains(ns::DELAY),
        "{xml}"
    );

    w.receive(
        ROMEO_DESK,
        "<message to='alice@home.example' type='chat' id='m2'><body>hark</body></message>",
    );
    assert_eq!(with(&queued(&a), &["<body>hark</body>"]).len(), 1);

    w.receive(
        ROMEO_DESK,
        "<message to='nobody@home.example' type='chat' id='m3'><body>?</body></message>",
    );
    let sent = out.take();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        sent[0].contains("type='error'")
            && sent[0].contains("id='m3'")
            && sent[0].contains("from='nobody@home.example'")
            && sent[0].contains("to='romeo@remote.example/desk'")
            && sent[0].contains("service-unavailable"),
        "{sent:?}"
    );
}

/// RFC 6120 §8.1.2.1 over s2s: iqs from another server to the server or to an account
/// are answered by the modules and the answer routed back, from the address asked to the
/// address that asked; an account that does not exist (RFC 6121 §8.5.1) and a namespace
/// nobody answers get `service-unavailable`; results are not answered.
#[test]
fn remote_iqs_are_answered_over_s2s() {
    let (w, out) = federated(&["alice"]);
    let ask = |from: &str, xml: &str| -> String {
        w.receive(from, xml);
        let sent = out.take();
        assert_eq!(sent.len(), 1, "{xml}: {sent:?}");
        sent.into_iter().next().unwrap_or_default()
    };
    let r = ask(
        ROMEO_DESK,
        "<iq type='get' id='p1' to='home.example'><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    assert!(
        r.starts_with("<iq type='result' id='p1'")
            && r.contains("from='home.example'")
            && r.contains("to='romeo@remote.example/desk'"),
        "{r}"
    );
    let r = ask(
        ROMEO_DESK,
        "<iq type='get' id='d1' to='home.example'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    );
    assert!(
        r.contains("type='result'") && r.contains("category='server'") && r.contains("msgoffline"),
        "{r}"
    );
    let r = ask(
        ROMEO_DESK,
        "<iq type='get' id='d2' to='alice@home.example'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    );
    assert!(
        r.contains("type='result'")
            && r.contains("from='alice@home.example'")
            && r.contains("to='romeo@remote.example/desk'")
            && r.contains("category='account'"),
        "{r}"
    );
    let r = ask(
        ROMEO_DESK,
        "<iq type='get' id='p2' to='alice@home.example'><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    assert!(
        r.contains("type='result'") && r.contains("from='alice@home.example'"),
        "{r}"
    );
    let r = ask(
        ROMEO_DESK,
        "<iq type='get' id='v' to='home.example'><query xmlns='jabber:iq:version'/></iq>",
    );
    assert!(r.contains("<name>hearth</name>"), "{r}");
    let r = ask(
        ROMEO_DESK,
        "<iq type='get' id='t' to='home.example'><time xmlns='urn:xmpp:time'/></iq>",
    );
    assert!(r.contains("type='result'") && r.contains("<utc>"), "{r}");
    // A server may ask too (from its bare domain).
    let r = ask(
        REMOTE,
        "<iq type='get' id='p3' to='home.example'><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    assert!(
        r.contains("type='result'") && r.contains("to='remote.example'"),
        "{r}"
    );
    let r = ask(
        ROMEO_DESK,
        "<iq type='get' id='p4' to='nobody@home.example'><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    assert!(
        r.contains("type='error'")
            && r.contains("from='nobody@home.example'")
            && r.contains("service-unavailable"),
        "{r}"
    );
    let r = ask(
        ROMEO_DESK,
        "<iq type='get' id='u' to='home.example'><x xmlns='urn:none'/></iq>",
    );
    assert!(r.contains("service-unavailable"), "{r}");
    w.receive(ROMEO_DESK, "<iq type='result' id='r' to='home.example'/>");
    w.receive(
        ROMEO_DESK,
        "<iq type='error' id='e' to='alice@home.example'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
    );
    assert!(out.take().is_empty(), "results and errors are not answered");
}

/// An iq from another server to a local full JID goes to that session, and the
/// session's answer goes back over s2s; one for a resource that is not there gets
/// `service-unavailable` (RFC 6121 §8.5.3.2.2) over s2s.
#[test]
fn remote_iq_to_a_session_and_its_answer() {
    let (w, out) = federated(&["alice"]);
    let a = w.bind("alice", "phone");
    w.receive(
        ROMEO_DESK,
        "<iq type='get' id='v1' to='alice@home.example/phone'><query xmlns='jabber:iq:version'/></iq>",
    );
    let q = queued(&a);
    assert_eq!(
        with(&q, &["id='v1'", "from='romeo@remote.example/desk'"]).len(),
        1,
        "{q:?}"
    );
    w.send(
        &a,
        "<iq type='result' id='v1' to='romeo@remote.example/desk'><query xmlns='jabber:iq:version'><name>x</name></query></iq>",
    );
    let sent = out.take();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        sent[0].contains("from='alice@home.example/phone'") && sent[0].contains("<name>x</name>"),
        "{sent:?}"
    );
    w.receive(
        ROMEO_DESK,
        "<iq type='get' id='v2' to='alice@home.example/gone'><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    let sent = out.take();
    assert!(
        sent.len() == 1
            && sent[0].contains("service-unavailable")
            && sent[0].contains("from='alice@home.example/gone'"),
        "{sent:?}"
    );
}

/// RFC 6121 §2.1.5 and XEP-0191: an account's roster and blocklist are its own, so
/// another server's users get `forbidden` (whether or not the account exists). XEP-0012:
/// last activity is told to a remote contact allowed to see the presence, and refused to
/// anyone else.
#[test]
fn remote_askers_get_what_their_subscription_allows() {
    let (w, out) = federated(&["alice"]);
    for (xml, to) in [
        (
            "<iq type='get' id='r1' to='alice@home.example'><query xmlns='jabber:iq:roster'/></iq>",
            "alice",
        ),
        (
            "<iq type='set' id='r2' to='alice@home.example'><query xmlns='jabber:iq:roster'><item jid='x@y'/></query></iq>",
            "alice",
        ),
        (
            "<iq type='get' id='b1' to='alice@home.example'><blocklist xmlns='urn:xmpp:blocking'/></iq>",
            "alice",
        ),
        (
            "<iq type='get' id='r3' to='nobody@home.example'><query xmlns='jabber:iq:roster'/></iq>",
            "nobody",
        ),
    ] {
        w.receive(ROMEO_DESK, xml);
        let sent = out.take();
        assert!(
            sent.len() == 1
                && sent[0].contains("forbidden")
                && sent[0].contains(&format!("from='{to}@home.example'")),
            "{xml}: {sent:?}"
        );
    }
    assert!(w.storage.roster("alice").unwrap().1.is_empty());

    let last = "<iq type='get' id='l' to='alice@home.example'><query xmlns='jabber:iq:last'/></iq>";
    w.receive(ROMEO_DESK, last);
    let sent = out.take();
    assert!(sent.len() == 1 && sent[0].contains("forbidden"), "{sent:?}");
    w.receive(
        ROMEO,
        "<presence type='subscribe' to='alice@home.example'/>",
    );
    let a = w.bind("alice", "phone");
    w.send(&a, "<presence/>");
    w.send(
        &a,
        "<presence type='subscribed' to='romeo@remote.example'/>",
    );
    out.take();
    w.receive(ROMEO_DESK, last);
    let sent = out.take();
    assert!(
        sent.len() == 1 && sent[0].contains("type='result'") && sent[0].contains("seconds='0'"),
        "{sent:?}"
    );
}

/// XEP-0191 §3.5 for another server's users: a local user's block holds for what their
/// server delivers — messages and iq requests refused as an unknown account's would be
/// (back over s2s), presence and probes dropped; blocking the domain blocks everyone
/// there. §3.6: the blocker's own stanzas to the blocked JID get `<blocked/>`, and its
/// broadcasts and probes skip it. §3.3: unblocking lets its presence flow again.
#[test]
fn blocked_remote_senders_are_refused() {
    let (w, out) = federated(&["alice"]);
    let a = w.bind("alice", "phone");
    w.send(&a, "<presence/>");
    mutual(&w, &out, &a);

    let (res, _) = w.send(
        &a,
        "<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='romeo@remote.example'/></block></iq>",
    );
    assert!(res.contains("type='result'"), "{res}");
    let sent = out.take();
    assert!(
        sent.len() == 1
            && sent[0].contains("type='unavailable'")
            && sent[0].contains("from='alice@home.example/phone'"),
        "§3.2: presence stops: {sent:?}"
    );
    queued(&a);

    w.receive(
        ROMEO_DESK,
        "<message to='alice@home.example' type='chat' id='m'><body>open up</body></message>",
    );
    let sent = out.take();
    assert!(
        sent.len() == 1 && sent[0].contains("id='m'") && sent[0].contains("service-unavailable"),
        "{sent:?}"
    );
    w.receive(ROMEO_DESK, "<presence to='alice@home.example'/>");
    w.receive(ROMEO_DESK, "<presence to='alice@home.example/phone'/>");
    w.receive(
        ROMEO_DESK,
        "<presence type='probe' to='alice@home.example'/>",
    );
    w.receive(
        ROMEO,
        "<presence type='subscribe' to='alice@home.example'/>",
    );
    assert!(
        out.take().is_empty(),
        "presence is dropped, probes unanswered"
    );
    for to in ["alice@home.example", "alice@home.example/phone"] {
        w.receive(
            ROMEO_DESK,
            &format!("<iq type='get' id='p' to='{to}'><ping xmlns='urn:xmpp:ping'/></iq>"),
        );
        let sent = out.take();
        assert!(
            sent.len() == 1 && sent[0].contains("service-unavailable"),
            "{to}: {sent:?}"
        );
    }
    assert!(queued(&a).is_empty(), "alice heard nothing");
    assert_eq!(w.sub("alice", ROMEO).subscription, Subscription::Both);

    let (res, _) = w.send(
        &a,
        "<message to='romeo@remote.example' type='chat'><body>go away</body></message>",
    );
    assert!(
        res.contains("not-acceptable") && res.contains("urn:xmpp:blocking:errors"),
        "{res}"
    );
    w.send(&a, "<presence><show>away</show></presence>");
    let b = w.bind("alice", "laptop");
    w.send(&b, "<presence/>");
    assert!(
        out.take().is_empty(),
        "no broadcast, no probe to a blocked contact"
    );

    w.send(
        &a,
        "<iq type='set' id='b2'><block xmlns='urn:xmpp:blocking'><item jid='remote.example'/></block></iq>",
    );
    w.receive(
        "mercutio@remote.example/x",
        "<message to='alice@home.example' type='chat' id='m2'><body>hi</body></message>",
    );
    let sent = out.take();
    assert!(
        sent.len() == 1 && sent[0].contains("service-unavailable"),
        "{sent:?}"
    );

    w.send(
        &a,
        "<iq type='set' id='u'><unblock xmlns='urn:xmpp:blocking'/></iq>",
    );
    let sent = out.take();
    assert_eq!(
        with(&sent, &["to='romeo@remote.example'", "<show>away</show>"]).len(),
        1,
        "{sent:?}"
    );
    assert_eq!(
        with(
            &sent,
            &[
                "to='romeo@remote.example'",
                "from='alice@home.example/laptop'"
            ]
        )
        .len(),
        1,
        "{sent:?}"
    );
}

/// RFC 6121 §2.5.2: removing a remote contact from the roster stops the user's presence
/// to it and cancels both subscriptions with its server, from the user's bare JID.
#[test]
fn removing_a_remote_contact_cancels_both_ways() {
    let (w, out) = federated(&["alice"]);
    let a = w.bind("alice", "phone");
    w.send(&a, "<presence/>");
    mutual(&w, &out, &a);
    w.send(
        &a,
        "<iq type='set' id='rm'><query xmlns='jabber:iq:roster'><item jid='romeo@remote.example' subscription='remove'/></query></iq>",
    );
    let sent = out.take();
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert!(
        sent[0].contains("type='unavailable'")
            && sent[0].contains("from='alice@home.example/phone'"),
        "{sent:?}"
    );
    assert!(
        sent[1].contains("type='unsubscribe'") && sent[1].contains("from='alice@home.example'"),
        "{sent:?}"
    );
    assert!(
        sent[2].contains("type='unsubscribed'") && sent[2].contains("from='alice@home.example'"),
        "{sent:?}"
    );
}

/// RFC 6121 §4.6.4 and §8.5.2.1.1: available presence from another server's user who is
/// not in the roster (directed presence) is delivered to the available resources for a
/// bare JID, to the resource named for a full JID; not to a resource that has sent no
/// presence, nor to an account with none online.
#[test]
fn presence_from_a_non_contact_is_delivered_as_directed_presence() {
    let (w, out) = federated(&["alice"]);
    let a = w.bind("alice", "phone");
    let tv = w.bind("alice", "tv");
    w.send(&a, "<presence/>");
    queued(&tv);
    w.receive(
        "mercutio@remote.example/x",
        "<presence to='alice@home.example'><status>hello</status></presence>",
    );
    assert_eq!(with(&queued(&a), &["hello"]).len(), 1);
    assert!(queued(&tv).is_empty(), "not available");
    w.receive(
        "mercutio@remote.example/x",
        "<presence type='unavailable' to='alice@home.example/phone'/>",
    );
    assert_eq!(with(&queued(&a), &["type='unavailable'"]).len(), 1);
    assert!(out.take().is_empty());
}

/// With no `Remote` on the router (federation off), what a local user sends to another
/// server bounces with `remote-server-not-found` (RFC 6120 §8.3.3.16): messages, iqs and
/// subscription requests; what the server would send on the user's behalf (broadcasts,
/// probes) is dropped without an error for the user.
#[test]
fn without_federation_remote_domains_bounce() {
    let w = World::with_router(&["alice"], Router::new(DOMAIN.into()));
    assert!(!w.router.federates());
    let a = w.bind("alice", "phone");
    for xml in [
        "<message to='romeo@remote.example' type='chat' id='m'><body>hi</body></message>",
        "<iq type='get' id='i' to='romeo@remote.example'><ping xmlns='urn:xmpp:ping'/></iq>",
        "<presence type='subscribe' to='romeo@remote.example'/>",
    ] {
        let (res, _) = w.send(&a, xml);
        let q = queued(&a);
        assert!(
            res.is_empty()
                && with(&q, &["type='error'", "remote-server-not-found"]).len() == 1
                && q.len() == 1,
            "{xml}: {res} {q:?}"
        );
    }
    // A remote contact subscribed to alice and one she is subscribed to.
    let romeo = BareJid::parse(ROMEO).unwrap();
    w.storage
        .update_subscription(
            "alice",
            &romeo,
            &mut |s| SubState {
                subscription: Subscription::Both,
                pending_out: false,
                ..s
            },
            None,
        )
        .unwrap()
        .unwrap();
    let (echo, _) = w.send(&a, "<presence/>");
    assert!(echo.contains("from='alice@home.example/phone'"), "{echo}");
    assert!(queued(&a).is_empty(), "no errors for what the server sent");
}

/// A remote server can make up any number of senders, so the subscription requests
/// waiting for an account are bounded (as many as its roster may hold items, within its
/// stored bytes): one past the bound is not kept, and its sender gets
/// `resource-constraint`; a request asked again is not a new one.
#[test]
fn waiting_requests_from_other_servers_are_bounded() {
    let outbox = Arc::new(Outbox::default());
    let quota = Quota {
        roster_items: 2,
        ..Quota::DEFAULT
    };
    let router = Router::new(DOMAIN.into())
        .with_remote(outbox.clone())
        .with_quota(quota);
    let w = World::with_router(&["alice"], router);
    let subscribe = "<presence type='subscribe' to='alice@home.example'/>";
    for n in 0..3 {
        w.receive(&format!("u{n}@remote.example"), subscribe);
    }
    let sent = outbox.take();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        sent[0].contains("type='error'")
            && sent[0].contains("resource-constraint")
            && sent[0].contains("from='alice@home.example'")
            && sent[0].contains("to='u2@remote.example'"),
        "{sent:?}"
    );
    assert_eq!(w.storage.subscription_requests("alice").unwrap().len(), 2);
    assert!(!w.sub("alice", "u2@remote.example").pending_in);
    w.receive("u0@remote.example", subscribe);
    assert!(outbox.take().is_empty());
    let a = w.bind("alice", "phone");
    let (got, _) = w.send(&a, "<presence/>");
    assert_eq!(got.matches("type='subscribe'").count(), 2, "{got}");
}

/// RFC 6120 §13.1: no link speaks for this server's own addresses. A stanza "from" a
/// local user that arrives over s2s does nothing: no subscription approved, no message
/// delivered, no iq answered.
#[test]
fn a_link_cannot_speak_for_local_users() {
    let (w, out) = federated(&["alice", "bob"]);
    let a = w.bind("alice", "phone");
    w.send(&a, "<presence/>");
    w.send(&a, "<presence type='subscribe' to='bob@home.example'/>");
    queued(&a);
    for xml in [
        "<presence type='subscribed' to='alice@home.example'/>",
        "<message to='alice@home.example' type='chat'><body>forged</body></message>",
        "<iq type='get' id='r' to='alice@home.example'><query xmlns='jabber:iq:roster'/></iq>",
    ] {
        w.receive("bob@home.example/desk", xml);
    }
    assert!(queued(&a).is_empty());
    assert!(out.take().is_empty());
    assert!(w.sub("alice", "bob@home.example").pending_out);
}

/// XEP-0054 for a user of another server: reads an account's vCard, cannot set it;
/// XEP-0049: cannot touch its private storage.
#[test]
fn remote_users_read_vcards_but_not_private_storage() {
    let (w, outbox) = federated(&["alice"]);
    let a = w.bind("alice", "phone");
    let (out, _) = w.send(
        &a,
        "<iq type='set' id='v'><vCard xmlns='vcard-temp'><FN>Alice</FN></vCard></iq>",
    );
    assert!(out.contains("type='result'"), "{out}");
    w.receive(
        ROMEO_DESK,
        "<iq type='get' id='g' to='alice@home.example'><vCard xmlns='vcard-temp'/></iq>",
    );
    w.receive(
        ROMEO_DESK,
        "<iq type='set' id='s' to='alice@home.example'><vCard xmlns='vcard-temp'><FN>R</FN></vCard></iq>",
    );
    w.receive(
        ROMEO_DESK,
        "<iq type='get' id='p' to='alice@home.example'><query xmlns='jabber:iq:private'><a xmlns='urn:a'/></query></iq>",
    );
    let sent = outbox.take();
    assert_eq!(
        with(&sent, &["id='g'", "type='result'", "<FN>Alice</FN>"]).len(),
        1,
        "{sent:?}"
    );
    assert_eq!(
        with(&sent, &["id='s'", "type='error'", "forbidden"]).len(),
        1,
        "{sent:?}"
    );
    assert_eq!(
        with(&sent, &["id='p'", "type='error'", "forbidden"]).len(),
        1,
        "{sent:?}"
    );
    assert!(queued(&a).is_empty());
}

/// A device account (features::device) takes no federation: another server's message
/// bounces as for an unknown account, its subscription request is dropped; its probe
/// is answered under the subscription check, so a subscriber from before the account
/// was a device gets the last reading with its telemetry and delay stamp.
#[test]
fn a_device_answers_only_probes_from_other_servers() {
    use crate::features::device::Devices as _;
    let (w, out) = federated(&["thermo"]);
    w.storage.mark_device("thermo").unwrap();
    // romeo subscribed before the account was a device.
    let romeo = BareJid::parse(ROMEO).unwrap();
    w.storage
        .update_subscription(
            "thermo",
            &romeo,
            &mut |s| SubState {
                subscription: Subscription::From,
                ..s
            },
            None,
        )
        .unwrap()
        .unwrap();
    let t = w.bind("thermo", "esp32");
    w.send(
        &t,
        "<presence><status>21.5 °C</status><telemetry xmlns='urn:hearth:telemetry:0'>\
         <value name='temperature' unit='°C'>21.5</value></telemetry></presence>",
    );
    w.end(t);
    out.take();
    w.receive(ROMEO, "<presence type='probe' to='thermo@home.example'/>");
    let sent = out.take();
    assert!(
        sent.len() == 1
            && sent[0].contains("type='unavailable'")
            && sent[0].contains("<status>21.5 °C</status>")
            && sent[0].contains("urn:hearth:telemetry:0")
            && sent[0].contains(ns::DELAY),
        "{sent:?}"
    );
    w.receive(
        ROMEO_DESK,
        "<message id='m' to='thermo@home.example'><body>hi</body></message>",
    );
    let sent = out.take();
    assert!(
        sent.len() == 1 && sent[0].contains("service-unavailable"),
        "{sent:?}"
    );
    w.receive(
        "mercutio@remote.example",
        "<presence type='subscribe' to='thermo@home.example'/>",
    );
    assert!(out.take().is_empty());
    assert!(
        w.storage
            .subscription_requests("thermo")
            .unwrap()
            .is_empty()
    );
}
