//! The modules' rules through [`Im::route`], without a socket: a real router, the
//! standard registry and a temporary SQLite file. Each session is a bound router queue;
//! what the server writes straight to the sender lands in the `out` string.

use super::Im;
use crate::features::Registry;
use crate::features::offline::OfflineStore as _;
use crate::jid::FullJid;
use crate::ns;
use crate::router::{QUEUE_BYTES, Router, SessionRx, ToSession, session_queue};
use crate::stanza::Stanza;
use crate::storage::{Accounts as _, Storage};
use crate::xml::{Element, Event, Framer, Limits};

pub(crate) const DOMAIN: &str = "home.example";

pub(crate) struct World {
    _dir: tempfile::TempDir,
    pub(crate) router: Router,
    pub(crate) storage: Storage,
    modules: Registry,
}

/// One bound session: its address and the stanzas the router queued for it.
pub(crate) struct Session {
    pub(crate) jid: FullJid,
    pub(crate) rx: SessionRx,
    /// The router's id for it, to end it.
    pub(crate) id: u64,
}

impl World {
    pub(crate) fn new(users: &[&str]) -> World {
        World::with_router(users, Router::new(DOMAIN.into()))
    }

    /// A world around `router` (one for [`DOMAIN`], e.g. with a `Remote`).
    pub(crate) fn with_router(users: &[&str], router: Router) -> World {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap().with_scram_keys(false);
        for u in users {
            storage.create_account(u, "pw").unwrap();
        }
        World {
            _dir: dir,
            router,
            storage,
            modules: Registry::standard(),
        }
    }

    pub(crate) fn im(&self) -> Im<'_> {
        Im {
            router: &self.router,
            storage: &self.storage,
            modules: &self.modules,
            conn: 0,
        }
    }

    pub(crate) fn bind(&self, user: &str, resource: &str) -> Session {
        let (tx, rx) = session_queue(QUEUE_BYTES);
        let bound = self.router.bind(user, Some(resource.into()), tx).unwrap();
        Session {
            jid: bound.jid,
            rx,
            id: bound.id,
        }
    }

    /// `xml` sent by `from` (its `from` stamped as the stream would); returns what was
    /// written straight back to it, and whether it should now collect its offline
    /// messages (`Routed::offline`).
    pub(crate) fn send(&self, from: &Session, xml: &str) -> (String, bool) {
        let mut el = parse(xml);
        el.set_attr("from", from.jid.as_str());
        let stanza = Stanza::from_client(el).unwrap_or_else(|_| panic!("not a stanza: {xml}"));
        let mut out = String::new();
        let routed = smol::block_on(self.im().route(&from.jid, stanza, &mut out));
        // Attributes in single quotes, as the expectations here are written.
        (out.replace('"', "'"), routed.offline)
    }
}

/// `a` and `b` subscribe to each other (RFC 6121 §3, both approving); what it queued
/// for them is drained.
pub(crate) fn befriend(w: &World, a: &Session, b: &Session) {
    let (ja, jb) = (a.jid.bare(), b.jid.bare());
    w.send(a, &format!("<presence type='subscribe' to='{jb}'/>"));
    w.send(b, &format!("<presence type='subscribed' to='{ja}'/>"));
    w.send(b, &format!("<presence type='subscribe' to='{ja}'/>"));
    w.send(a, &format!("<presence type='subscribed' to='{jb}'/>"));
    queued(a);
    queued(b);
}

/// Everything queued for a session so far.
pub(crate) fn queued(s: &Session) -> Vec<String> {
    let mut v = Vec::new();
    while let Ok(ToSession::Stanza(x)) = s.rx.try_recv() {
        v.push(x.el.to_xml_in(ns::CLIENT).replace('"', "'"));
    }
    v
}

/// One stanza of client XML as an element.
pub(crate) fn parse(xml: &str) -> Element {
    let mut f = Framer::new(Limits::default());
    let header = format!(
        "<stream:stream xmlns='{}' xmlns:stream='{}' to='{DOMAIN}' version='1.0'>",
        ns::CLIENT,
        ns::STREAM
    );
    f.feed(header.as_bytes()).unwrap();
    f.feed(xml.as_bytes()).unwrap();
    loop {
        match f.next_event().unwrap() {
            Some(Event::Stanza(el)) => return el,
            Some(_) => continue,
            None => panic!("no stanza in {xml}"),
        }
    }
}

#[test]
fn iq_to_the_account_is_answered_by_its_module_from_the_address_asked() {
    let w = World::new(&["alice"]);
    let a = w.bind("alice", "phone");
    let (out, _) = w.send(
        &a,
        "<iq type='get' id='d1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    );
    // RFC 6120 §8.1.2.1: no `to`, so no `from` on the answer.
    assert!(
        out.starts_with("<iq type='result' id='d1' to='alice@home.example/phone'"),
        "{out}"
    );
    assert!(!out.contains("from="), "{out}");
    assert!(
        out.contains("category='account'") && out.contains("jabber:iq:last"),
        "{out}"
    );
    let (out, _) = w.send(
        &a,
        "<iq type='get' id='d2' to='home.example'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    );
    assert!(
        out.contains("from='home.example'") && out.contains("msgoffline"),
        "{out}"
    );
    // Nobody answers an unknown namespace.
    let (out, _) = w.send(
        &a,
        "<iq type='get' id='u' to='home.example'><x xmlns='urn:none'/></iq>",
    );
    assert!(out.contains("service-unavailable"), "{out}");
    // Results are never answered.
    let (out, _) = w.send(&a, "<iq type='result' id='r' to='home.example'/>");
    assert!(out.is_empty(), "{out}");
}

#[test]
fn roster_of_another_account_is_forbidden() {
    let w = World::new(&["alice", "bob"]);
    let a = w.bind("alice", "phone");
    w.send(
        &a,
        "<iq type='get' id='r1' to='bob@home.example'><query xmlns='jabber:iq:roster'/></iq>",
    );
    let q = queued(&a);
    assert!(q.len() == 1 && q[0].contains("forbidden"), "{q:?}");
}

/// XEP-0191 through the blocking module's filter: a blocked sender's message bounces
/// as if the account did not exist; the blocker's own message gets `<blocked/>`.
#[test]
fn blocking_filters_both_ways() {
    let w = World::new(&["alice", "bob"]);
    let a = w.bind("alice", "phone");
    let b = w.bind("bob", "desk");
    let (out, _) = w.send(
        &a,
        "<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='bob@home.example'/></block></iq>",
    );
    assert!(out.contains("type='result'"), "{out}");
    w.send(&b, "<presence/>");
    queued(&b);
    w.send(
        &b,
        "<message to='alice@home.example' type='chat'><body>hi</body></message>",
    );
    let q = queued(&b);
    assert!(
        q.len() == 1 && q[0].contains("service-unavailable"),
        "{q:?}"
    );
    assert!(queued(&a).iter().all(|s| !s.contains("<body>hi")));
    let (out, _) = w.send(
        &a,
        "<message to='bob@home.example' type='chat'><body>yo</body></message>",
    );
    assert!(
        out.contains("not-acceptable") && out.contains("urn:xmpp:blocking:errors"),
        "{out}"
    );
    assert!(queued(&b).is_empty());
}

/// XEP-0160 through the offline module's hook: a message for an account with no
/// available resource is stored with a `<delay/>`, and the account's first available
/// presence says the connection should collect it.
#[test]
fn undelivered_messages_are_kept_and_collected_at_initial_presence() {
    let w = World::new(&["alice", "carol"]);
    let a = w.bind("alice", "phone");
    let (out, _) = w.send(
        &a,
        "<message to='carol@home.example' type='chat'><body>later</body></message>",
    );
    assert!(
        out.is_empty() && queued(&a).is_empty(),
        "nothing goes back to alice"
    );
    // A message to nobody is refused.
    w.send(
        &a,
        "<message to='nobody@home.example' type='chat'><body>?</body></message>",
    );
    let q = queued(&a);
    assert!(
        q.len() == 1 && q[0].contains("service-unavailable"),
        "{q:?}"
    );
    let c = w.bind("carol", "laptop");
    let (_, routed) = w.send(&c, "<presence/>");
    assert!(routed, "initial presence collects offline messages");
    let kept = w.storage.take_offline("carol", 10).unwrap();
    assert_eq!(kept.len(), 1);
    assert!(kept[0].1.contains("<body>later</body>") && kept[0].1.contains("urn:xmpp:delay"));
    // A negative priority takes none (RFC 6121 §8.5.2.2.1 … XEP-0160 §3).
    let c2 = w.bind("carol", "tv");
    let (_, routed) = w.send(&c2, "<presence><priority>-1</priority></presence>");
    assert!(!routed);
}

/// RFC 6121 §4.2: initial presence goes to contacts with a subscription from the user,
/// the user's own echo comes first, and probes of contacts it is subscribed to are
/// answered straight back.
#[test]
fn presence_fans_out_to_subscribers_and_probes_are_answered() {
    let w = World::new(&["alice", "bob", "carol"]);
    let a = w.bind("alice", "phone");
    let b = w.bind("bob", "desk");
    let c = w.bind("carol", "laptop");
    // Bob and carol available; bob and alice subscribe to each other.
    w.send(&b, "<presence/>");
    w.send(&c, "<presence/>");
    w.send(&a, "<presence type='subscribe' to='bob@home.example'/>");
    w.send(&b, "<presence type='subscribed' to='alice@home.example'/>");
    w.send(&b, "<presence type='subscribe' to='alice@home.example'/>");
    w.send(&a, "<presence type='subscribed' to='bob@home.example'/>");
    for s in [&a, &b, &c] {
        queued(s);
    }
    let (out, _) = w.send(&a, "<presence><status>here</status></presence>");
    // The echo first, then bob's presence (the probe's answer).
    let echo = out.find("<status>here</status>").expect("echo");
    let probe = out
        .find("from='bob@home.example/desk'")
        .expect("bob's presence");
    assert!(echo < probe, "{out}");
    let to_bob = queued(&b);
    assert!(
        to_bob
            .iter()
            .any(|p| p.contains("from='alice@home.example/phone'") && p.contains("here")),
        "{to_bob:?}"
    );
    assert!(queued(&c).is_empty(), "carol has no subscription");
}

/// XEP-0012 through the last-activity module's hook: "last seen" is recorded when the
/// account's last available resource goes unavailable, with its status, and not while
/// another resource is still online.
#[test]
fn last_activity_is_recorded_when_the_last_resource_goes() {
    use crate::features::last::LastActivity as _;
    let w = World::new(&["alice"]);
    let phone = w.bind("alice", "phone");
    let laptop = w.bind("alice", "laptop");
    w.send(&phone, "<presence/>");
    w.send(&laptop, "<presence/>");
    w.send(
        &phone,
        "<presence type='unavailable'><status>out</status></presence>",
    );
    assert_eq!(
        w.storage.last_activity("alice").unwrap(),
        None,
        "the laptop is online"
    );
    w.send(
        &laptop,
        "<presence type='unavailable'><status>bed</status></presence>",
    );
    let (_, status) = w.storage.last_activity("alice").unwrap().expect("recorded");
    assert_eq!(status, "bed");
}
