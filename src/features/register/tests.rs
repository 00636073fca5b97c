//! XEP-0077's rules without a socket: the [`Registrar`] under each policy on a temporary
//! SQLite file, and the module (password change, removal) through `Im::route` with a
//! real router, a federation outbox and the standard registry.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use super::*;
use crate::config::{RegistrationConfig, RegistrationPolicy};
use crate::features::blocking::BlockList as _;
use crate::features::last::LastActivity as _;
use crate::features::offline::OfflineStore as _;
use crate::features::roster::Roster as _;
use crate::jid::BareJid;
use crate::ns;
use crate::router::im::tests::{DOMAIN, Session, World, queued};
use crate::router::{Remote, Router, ToSession};

fn registrar(policy: RegistrationPolicy, per_hour: u32) -> Registrar {
    Registrar::new(
        RegistrationConfig {
            policy,
            per_address_per_hour: per_hour,
        },
        PasswordChecks::new(PasswordCheckConfig {
            at_once: 1,
            queue: 8,
        }),
    )
}

fn new(user: &str, token: Option<&str>) -> NewAccount {
    NewAccount {
        username: user.into(),
        password: "a long passphrase".into(),
        token: token.map(str::to_owned),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn condition<T: std::fmt::Debug>(r: Result<T, StanzaError>) -> StanzaCondition {
    r.unwrap_err().condition
}

#[test]
fn open_policy_registers_and_throttles_per_address() {
    let (_d, s) = crate::storage::test_store(&["taken"]);
    let r = registrar(RegistrationPolicy::Open, 2);
    let reg = |user: &str, from: &str| smol::block_on(r.register(&s, new(user, None), ip(from), 0));
    reg("alice", "192.0.2.1").unwrap();
    assert!(s.verify_password("alice", "a long passphrase").unwrap());
    // A taken name costs no slot and no hashing.
    assert_eq!(
        condition(reg("taken", "192.0.2.1")),
        StanzaCondition::Conflict
    );
    reg("bob", "192.0.2.1").unwrap();
    let e = smol::block_on(r.register(&s, new("carol", None), ip("192.0.2.1"), 0)).unwrap_err();
    assert_eq!(e.condition, StanzaCondition::ResourceConstraint);
    assert_eq!(e.kind, ErrorType::Wait);
    assert!(!s.account_exists("carol").unwrap());
    // Another address may; an IPv6 /64 counts as one address.
    reg("carol", "192.0.2.2").unwrap();
    reg("dan", "2001:db8::1").unwrap();
    reg("eve", "2001:db8::2").unwrap();
    assert_eq!(
        condition(reg("fay", "2001:db8::ffff")),
        StanzaCondition::ResourceConstraint
    );
    reg("fay", "2001:db8:0:1::1").unwrap();
}

/// XEP-0401 under the open policy: a valid token is used (its effects returned, the
/// address not counted); a bad one is ignored, as if none were sent.
#[test]
fn open_policy_uses_a_valid_token_for_its_effects() {
    let (_d, s) = crate::storage::test_store(&["alice"]);
    let r = registrar(RegistrationPolicy::Open, 1);
    let now = crate::storage::unix_now();
    let effects = InviteEffects {
        household: true,
        inviter: Some("alice".into()),
    };
    s.create_invite_with("tok", now + 60, 1, "alice", "", &effects)
        .unwrap();
    let reg = |user: &str, token: Option<&str>| {
        smol::block_on(r.register(&s, new(user, token), ip("192.0.2.9"), 0))
    };
    assert_eq!(reg("bob", Some("tok")).unwrap(), Some(effects));
    assert_eq!(
        reg("carol", Some("tok")).unwrap(),
        None,
        "used up: plain open"
    );
    assert_eq!(
        condition(reg("dan", Some("nope"))),
        StanzaCondition::ResourceConstraint,
        "the address's one slot went to carol"
    );
}

#[test]
fn invite_policy_needs_a_valid_unused_token() {
    let (_d, s) = crate::storage::test_store(&["taken"]);
    let r = registrar(RegistrationPolicy::Invite, 1);
    let now = crate::storage::unix_now();
    let id = s.create_invite("good", now + 3600, 1, "admin", "").unwrap();
    s.create_invite("old", now - 1, 5, "admin", "").unwrap();
    let reg = |user: &str, token: Option<&str>| {
        smol::block_on(r.register(&s, new(user, token), ip("192.0.2.1"), 0))
    };
    assert_eq!(condition(reg("alice", None)), StanzaCondition::Forbidden);
    assert_eq!(
        condition(reg("alice", Some("bad"))),
        StanzaCondition::Forbidden
    );
    assert_eq!(
        condition(reg("alice", Some("old"))),
        StanzaCondition::Forbidden
    );
    // A taken name does not spend the invitation.
    assert_eq!(
        condition(reg("taken", Some("good"))),
        StanzaCondition::Conflict
    );
    reg("alice", Some("good")).unwrap();
    // Invitations are not throttled per address, and this one is used up.
    assert_eq!(
        condition(reg("bob", Some("good"))),
        StanzaCondition::Forbidden
    );
    let listed = s.list_invites().unwrap();
    let good = listed.iter().find(|i| i.id == id).unwrap();
    assert_eq!(good.uses_left, 0);
    assert!(!s.account_exists("bob").unwrap());
}

#[test]
fn closed_policy_registers_nobody() {
    let (_d, s) = crate::storage::test_store(&[]);
    let r = registrar(RegistrationPolicy::Closed, 10);
    let got = smol::block_on(r.register(&s, new("alice", None), ip("192.0.2.1"), 0));
    assert_eq!(condition(got), StanzaCondition::ServiceUnavailable);
    assert!(!r.is_offered());
    assert!(!s.account_exists("alice").unwrap());
}

#[test]
fn a_password_that_precis_refuses_is_not_acceptable() {
    let (_d, s) = crate::storage::test_store(&[]);
    let r = registrar(RegistrationPolicy::Open, 10);
    let mut bad = new("alice", None);
    bad.password = "bell\u{7}".into();
    let got = smol::block_on(r.register(&s, bad, ip("192.0.2.1"), 0));
    assert_eq!(condition(got), StanzaCondition::NotAcceptable);
    assert!(!s.account_exists("alice").unwrap());
}

#[test]
fn logged_in_user_changes_its_own_password_only() {
    let w = World::new(&["alice", "bob"]);
    let a = w.bind("alice", "phone");
    let (out, _) = w.send(
        &a,
        "<iq type='get' id='g' to='home.example'><query xmlns='jabber:iq:register'/></iq>",
    );
    assert!(
        out.contains("<registered/><username>alice</username>"),
        "{out}"
    );
    let (out, _) = w.send(
        &a,
        "<iq type='set' id='p' to='home.example'><query xmlns='jabber:iq:register'>\
         <username>Alice</username><password>new secret</password></query></iq>",
    );
    assert!(out.contains("type='result' id='p'"), "{out}");
    assert!(w.storage.verify_password("alice", "new secret").unwrap());
    assert!(!w.storage.verify_password("alice", "pw").unwrap());
    // SCRAM keys follow when they are kept (this world keeps none: nothing to check).
    let (out, _) = w.send(
        &a,
        "<iq type='set' id='q'><query xmlns='jabber:iq:register'>\
         <username>bob</username><password>mine now</password></query></iq>",
    );
    assert!(out.contains("not-allowed"), "{out}");
    assert!(w.storage.verify_password("bob", "pw").unwrap());
    // Nobody asks on another account's behalf.
    let (out, _) = w.send(
        &a,
        "<iq type='set' id='r' to='bob@home.example'><query xmlns='jabber:iq:register'>\
         <remove/></query></iq>",
    );
    assert!(out.contains("forbidden"), "{out}");
    assert!(w.storage.account_exists("bob").unwrap());
}

/// What the server handed to its federation links, as client XML in single quotes.
#[derive(Default)]
struct Outbox(Mutex<Vec<String>>);

impl Remote for Outbox {
    fn send(&self, _router: &Router, _domain: &str, stanza: crate::stanza::Stanza) {
        let xml = stanza.el.to_xml_in(ns::CLIENT).replace('"', "'");
        self.0.lock().unwrap().push(xml);
    }
}

/// Everything queued for a session, and the stream error that closes it, if any.
fn drain(s: &Session) -> (Vec<String>, Option<String>) {
    let mut v = Vec::new();
    while let Ok(item) = s.rx.try_recv() {
        match item {
            ToSession::Stanza(x) => v.push(x.el.to_xml_in(ns::CLIENT).replace('"', "'")),
            ToSession::Close(e) => return (v, Some(e.condition.name().to_owned())),
        }
    }
    (v, None)
}

/// Rows that name `user` in each table holding per-account data.
fn rows_for(w: &World, user: &str) -> Vec<(&'static str, i64)> {
    let conn = w.storage.conn();
    [
        ("accounts", "localpart"),
        ("scram_keys", "localpart"),
        ("roster_items", "localpart"),
        ("roster_groups", "localpart"),
        ("roster_versions", "localpart"),
        ("subscription_requests", "localpart"),
        ("offline_messages", "localpart"),
        ("blocklist", "localpart"),
        ("last_activity", "localpart"),
    ]
    .into_iter()
    .map(|(table, col)| {
        let n: i64 = conn
            .query_row(
                &format!("SELECT COUNT(*) FROM {table} WHERE {col} = ?1"),
                [user],
                |r| r.get(0),
            )
            .unwrap();
        (table, n)
    })
    .collect()
}

/// §3.2: alice (friends with bob here and romeo elsewhere, known to carol's roster,
/// with offline messages, a blocklist, a waiting request and a last-activity record)
/// removes her account: the result first, contacts told, every row gone, every session
/// closed with `not-authorized`.
#[test]
fn removal_tells_contacts_deletes_every_row_and_ends_sessions() {
    let outbox = Arc::new(Outbox::default());
    let router = Router::new(DOMAIN.into()).with_remote(outbox.clone());
    let w = World::with_router(&["alice", "bob", "carol"], router);
    let alice = BareJid::parse("alice@home.example").unwrap();
    let a = w.bind("alice", "phone");
    let a2 = w.bind("alice", "laptop");
    let b = w.bind("bob", "desk");
    let c = w.bind("carol", "tablet");
    // alice and bob see each other.
    w.send(
        &a,
        "<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>",
    );
    w.send(
        &b,
        "<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>",
    );
    w.send(
        &c,
        "<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>",
    );
    w.send(&a, "<presence type='subscribe' to='bob@home.example'/>");
    w.send(&b, "<presence type='subscribed' to='alice@home.example'/>");
    w.send(&b, "<presence type='subscribe' to='alice@home.example'/>");
    w.send(&a, "<presence type='subscribed' to='bob@home.example'/>");
    // alice asks romeo on another server, and lets him see her presence; carol lists
    // alice without a subscription.
    w.send(&a, "<presence type='subscribe' to='romeo@remote.example'/>");
    let romeo = crate::jid::Jid::parse("romeo@remote.example").unwrap();
    let mut el =
        crate::router::im::tests::parse("<presence type='subscribe' to='alice@home.example'/>");
    el.set_attr("from", "romeo@remote.example");
    let stanza = crate::stanza::Stanza::from_client(el).unwrap();
    smol::block_on(w.im().route_remote(&romeo, stanza));
    w.send(
        &a,
        "<presence type='subscribed' to='romeo@remote.example'/>",
    );
    w.send(
        &c,
        "<iq type='set' id='c1'><query xmlns='jabber:iq:roster'>\
         <item jid='alice@home.example' name='Al'><group>kin</group></item></query></iq>",
    );
    w.send(&a, "<presence/>");
    w.send(&a2, "<presence/>");
    w.send(&b, "<presence/>");
    // Rows in every table.
    w.send(
        &a,
        "<iq type='set' id='bl'><block xmlns='urn:xmpp:blocking'><item jid='spam@x.example'/></block></iq>",
    );
    w.storage
        .store_offline("alice", "<message/>", &crate::storage::Quota::DEFAULT)
        .unwrap();
    w.storage.set_last_activity("alice", 1, "").unwrap();
    w.storage
        .update_subscription(
            "alice",
            &BareJid::parse("dave@remote.example").unwrap(),
            &mut |mut s| {
                s.pending_in = true;
                s
            },
            Some((
                "<presence type='subscribe'/>",
                &crate::storage::Quota::DEFAULT,
            )),
        )
        .unwrap()
        .unwrap();
    // Everything but SCRAM keys (off in this world) and groups (she set none) is there.
    for (table, n) in rows_for(&w, "alice") {
        if !matches!(table, "scram_keys" | "roster_groups") {
            assert!(n > 0, "{table}");
        }
    }
    for s in [&a, &a2, &b, &c] {
        drain(s);
    }
    outbox.0.lock().unwrap().clear();

    let (out, _) = w.send(
        &a,
        "<iq type='set' id='bye' to='home.example'><query xmlns='jabber:iq:register'>\
         <remove/></query></iq>",
    );
    assert_eq!(
        out,
        "<iq type='result' id='bye' from='home.example' to='alice@home.example/phone'/>"
    );
    // Every session of alice is closed, the one that asked included (its result is
    // already in its output, ahead of the stream error).
    for s in [&a, &a2] {
        let (_, closed) = drain(s);
        assert_eq!(closed.as_deref(), Some("not-authorized"));
    }
    // bob saw her go, lost the subscriptions both ways, and his roster item for her
    // went away with a push.
    let (to_bob, closed) = drain(&b);
    assert!(closed.is_none());
    let has =
        |list: &[String], parts: &[&str]| list.iter().any(|s| parts.iter().all(|p| s.contains(p)));
    assert!(
        has(
            &to_bob,
            &["type='unavailable'", "from='alice@home.example/phone'"]
        ),
        "{to_bob:?}"
    );
    assert!(
        has(
            &to_bob,
            &["type='unsubscribed'", "from='alice@home.example'"]
        ),
        "{to_bob:?}"
    );
    assert!(
        has(
            &to_bob,
            &[
                "jabber:iq:roster",
                "jid='alice@home.example'",
                "subscription='remove'"
            ]
        ),
        "{to_bob:?}"
    );
    assert!(w.storage.roster_item("bob", &alice).unwrap().is_none());
    // carol's roster forgets her too.
    let (to_carol, _) = drain(&c);
    assert!(
        has(
            &to_carol,
            &["subscription='remove'", "jid='alice@home.example'"]
        ),
        "{to_carol:?}"
    );
    assert!(w.storage.roster_item("carol", &alice).unwrap().is_none());
    // romeo's server is told she no longer asks; dave's request is refused.
    let sent = outbox.0.lock().unwrap().clone();
    assert!(
        has(
            &sent,
            &[
                "type='unsubscribe'",
                "to='romeo@remote.example'",
                "from='alice@home.example'"
            ]
        ),
        "{sent:?}"
    );
    assert!(
        has(&sent, &["type='unsubscribed'", "to='dave@remote.example'"]),
        "{sent:?}"
    );
    // Nothing of hers is left.
    for (table, n) in rows_for(&w, "alice") {
        assert_eq!(n, 0, "{table}");
    }
    assert!(w.storage.blocklist("alice").unwrap().is_empty());
    // A new account of the same name starts empty.
    w.storage.create_account("alice", "pw2").unwrap();
    assert!(w.storage.roster("alice").unwrap().1.is_empty());
    let _ = queued(&b);
}
