//! XEP-0049 through the router, with a real SQLite file and no socket.

use crate::router::Router;
use crate::router::im::tests::{DOMAIN, World};
use crate::storage::{Accounts as _, Quota};

fn set(w: &World, s: &crate::router::im::tests::Session, payload: &str) -> String {
    w.send(
        s,
        &format!("<iq type='set' id='s'><query xmlns='jabber:iq:private'>{payload}</query></iq>"),
    )
    .0
}

fn get(w: &World, s: &crate::router::im::tests::Session, payload: &str) -> String {
    w.send(
        s,
        &format!("<iq type='get' id='g'><query xmlns='jabber:iq:private'>{payload}</query></iq>"),
    )
    .0
}

#[test]
fn set_then_get_several_elements_and_an_empty_one_removes() {
    let w = World::new(&["alice"]);
    let a = w.bind("alice", "phone");
    let out = set(
        &w,
        &a,
        "<exodus xmlns='exodus:prefs'><defaultnick>Hamlet</defaultnick></exodus>\
         <storage xmlns='storage:bookmarks'><conference jid='r@muc.x' autojoin='true'/></storage>",
    );
    assert!(out.contains("type='result'"), "{out}");
    let out = get(&w, &a, "<exodus xmlns='exodus:prefs'/>");
    assert!(
        out.contains("<exodus xmlns='exodus:prefs'><defaultnick>Hamlet</defaultnick></exodus>"),
        "{out}"
    );
    let out = get(&w, &a, "<storage xmlns='storage:bookmarks'/>");
    assert!(out.contains("jid='r@muc.x'"), "{out}");
    // Nothing stored: the element asked, empty.
    let out = get(&w, &a, "<other xmlns='urn:example:none'/>");
    assert!(
        out.contains("type='result'") && out.contains("<other xmlns='urn:example:none'/>"),
        "{out}"
    );
    // The same name in another namespace is another element.
    let out = get(&w, &a, "<exodus xmlns='exodus:other'/>");
    assert!(out.contains("<exodus xmlns='exodus:other'/>"), "{out}");
    let before = w.storage.stored_bytes("alice").unwrap();
    let out = set(&w, &a, "<exodus xmlns='exodus:prefs'/>");
    assert!(out.contains("type='result'"), "{out}");
    assert!(w.storage.stored_bytes("alice").unwrap() < before);
    let out = get(&w, &a, "<exodus xmlns='exodus:prefs'/>");
    assert!(out.contains("<exodus xmlns='exodus:prefs'/>"), "{out}");
}

#[test]
fn bad_requests_get_the_xep_errors() {
    let w = World::new(&["alice"]);
    let a = w.bind("alice", "phone");
    for (payload, cond) in [
        // §2.3: a child is required.
        ("", "not-acceptable"),
        // §2.3: reserved namespaces, including a child in the query's own.
        ("<x xmlns='jabber:iq:roster'/>", "not-acceptable"),
        ("<vCard xmlns='vcard-temp'/>", "not-acceptable"),
        (
            "<x xmlns='http://jabber.org/protocol/muc'/>",
            "not-acceptable",
        ),
        ("<x/>", "not-acceptable"),
    ] {
        for out in [set(&w, &a, payload), get(&w, &a, payload)] {
            assert!(
                out.contains("type='error'") && out.contains(cond),
                "{payload}: {out}"
            );
        }
    }
    // §2.3: one element per get.
    let out = get(&w, &a, "<a xmlns='urn:a'/><b xmlns='urn:b'/>");
    assert!(out.contains("bad-request"), "{out}");
    // Too many elements in one set.
    let many: String = (0..65)
        .map(|i| format!("<e{i} xmlns='urn:e'>x</e{i}>"))
        .collect();
    let out = set(&w, &a, &many);
    assert!(
        out.contains("not-acceptable") && out.contains("at most 64"),
        "{out}"
    );
    let out = get(&w, &a, "<e0 xmlns='urn:e'/>");
    assert!(out.contains("<e0 xmlns='urn:e'/>"), "{out}");
    // A set with one reserved element stores none of the others.
    let out = set(&w, &a, "<a xmlns='urn:a'>1</a><x xmlns='jabber:x:data'/>");
    assert!(out.contains("not-acceptable"), "{out}");
    let out = get(&w, &a, "<a xmlns='urn:a'/>");
    assert!(out.contains("<a xmlns='urn:a'/>"), "{out}");
}

#[test]
fn another_account_is_forbidden_and_reads_nothing() {
    let w = World::new(&["alice", "bob"]);
    let a = w.bind("alice", "phone");
    let b = w.bind("bob", "laptop");
    set(&w, &a, "<a xmlns='urn:a'>secret</a>");
    for ty in ["get", "set"] {
        let (out, _) = w.send(
            &b,
            &format!(
                "<iq type='{ty}' id='x' to='alice@{DOMAIN}'>\
                 <query xmlns='jabber:iq:private'><a xmlns='urn:a'>mine</a></query></iq>"
            ),
        );
        // The registry refuses it (Access::Own) through the router: queued for Bob.
        let answer = format!("{out}{}", crate::router::im::tests::queued(&b).concat());
        assert!(
            answer.contains("forbidden") && !answer.contains("secret"),
            "{answer}"
        );
    }
    // Bob's own space is his.
    let out = get(&w, &b, "<a xmlns='urn:a'/>");
    assert!(!out.contains("secret"), "{out}");
    let out = get(&w, &a, "<a xmlns='urn:a'/>");
    assert!(out.contains("secret"), "{out}");
    // To the server itself: it is not the account, so refused too.
    let (out, _) = w.send(
        &a,
        &format!(
            "<iq type='get' id='y' to='{DOMAIN}'><query xmlns='jabber:iq:private'><a xmlns='urn:a'/></query></iq>"
        ),
    );
    let answer = format!("{out}{}", crate::router::im::tests::queued(&a).concat());
    assert!(
        answer.contains("forbidden") && !answer.contains("secret"),
        "{answer}"
    );
}

#[test]
fn size_limit_and_quota() {
    let probe = World::new(&["alice"]);
    let base = probe.storage.stored_bytes("alice").unwrap();
    drop(probe);
    let quota = Quota {
        stored_bytes: base + 40 * 1024,
        ..Quota::DEFAULT
    };
    let w = World::with_router(&["alice"], Router::new(DOMAIN.into()).with_quota(quota));
    let a = w.bind("alice", "phone");
    // Over the per-element limit (64 KiB by default): not-acceptable, nothing stored.
    let big = "x".repeat(70 * 1024);
    let out = set(&w, &a, &format!("<a xmlns='urn:a'>{big}</a>"));
    assert!(
        out.contains("not-acceptable") && out.contains("65536"),
        "{out}"
    );
    assert_eq!(w.storage.stored_bytes("alice").unwrap(), base);
    // Under it, but past the account's quota together.
    let part = "y".repeat(30 * 1024);
    let out = set(&w, &a, &format!("<a xmlns='urn:a'>{part}</a>"));
    assert!(out.contains("type='result'"), "{out}");
    let out = set(&w, &a, &format!("<b xmlns='urn:b'>{part}</b>"));
    assert!(
        out.contains("resource-constraint") && out.contains("type='wait'"),
        "{out}"
    );
    let out = get(&w, &a, "<b xmlns='urn:b'/>");
    assert!(out.contains("<b xmlns='urn:b'/>"), "{out}");
}
