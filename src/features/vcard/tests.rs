//! XEP-0054 through the router, with a real SQLite file and no socket.

use super::*;
use crate::router::Router;
use crate::router::im::tests::{DOMAIN, Session, World};
use crate::storage::{Accounts as _, Quota};

fn send(w: &World, s: &Session, ty: &str, to: Option<&str>, vcard: &str) -> String {
    let to = to.map(|t| format!(" to='{t}'")).unwrap_or_default();
    w.send(s, &format!("<iq type='{ty}' id='v'{to}>{vcard}</iq>"))
        .0
}

/// A 1×1 transparent PNG.
const PNG_B64: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=";

#[test]
fn own_vcard_set_read_by_anyone_and_the_photo_hash() {
    let w = World::new(&["alice", "bob"]);
    let a = w.bind("alice", "phone");
    let b = w.bind("bob", "laptop");
    // None yet: an empty vCard, for the owner and for others.
    let out = send(&w, &a, "get", None, "<vCard xmlns='vcard-temp'/>");
    assert!(out.contains("<vCard xmlns='vcard-temp'/>"), "{out}");
    let out = send(
        &w,
        &b,
        "get",
        Some(&format!("alice@{DOMAIN}")),
        "<vCard xmlns='vcard-temp'/>",
    );
    assert!(out.contains("<vCard xmlns='vcard-temp'/>"), "{out}");
    let card = format!(
        "<vCard xmlns='vcard-temp'><FN>Alice</FN><PHOTO><TYPE>image/png</TYPE>\
         <BINVAL>{}\n{}</BINVAL></PHOTO></vCard>",
        &PNG_B64[..40],
        &PNG_B64[40..]
    );
    let out = send(&w, &a, "set", None, &card);
    assert!(out.contains("type='result'"), "{out}");
    let out = send(
        &w,
        &b,
        "get",
        Some(&format!("alice@{DOMAIN}")),
        "<vCard xmlns='vcard-temp'/>",
    );
    assert!(
        out.contains("from='alice@home.example'") && out.contains("<FN>Alice</FN>"),
        "{out}"
    );
    let hash = smol::block_on(photo_sha1(&w.im(), &a.jid.bare())).unwrap();
    // sha1 of the PNG's bytes (`base64 -d | sha1sum`).
    assert_eq!(
        hash.as_deref(),
        Some("c1986af3c26609b8b7d8933f99c51c1a89e9ea6b")
    );
    // Removing it: an empty vCard.
    let out = send(
        &w,
        &a,
        "set",
        Some(&format!("alice@{DOMAIN}")),
        "<vCard xmlns='vcard-temp'/>",
    );
    assert!(out.contains("type='result'"), "{out}");
    assert_eq!(
        smol::block_on(photo_sha1(&w.im(), &a.jid.bare())).unwrap(),
        None
    );
    let out = send(
        &w,
        &b,
        "get",
        Some(&format!("alice@{DOMAIN}")),
        "<vCard xmlns='vcard-temp'/>",
    );
    assert!(out.contains("<vCard xmlns='vcard-temp'/>"), "{out}");
}

#[test]
fn only_the_account_writes_and_unknown_accounts_are_unavailable() {
    let w = World::new(&["alice", "bob"]);
    let a = w.bind("alice", "phone");
    let b = w.bind("bob", "laptop");
    send(
        &w,
        &a,
        "set",
        None,
        "<vCard xmlns='vcard-temp'><FN>Alice</FN></vCard>",
    );
    let out = send(
        &w,
        &b,
        "set",
        Some(&format!("alice@{DOMAIN}")),
        "<vCard xmlns='vcard-temp'><FN>Mallory</FN></vCard>",
    );
    assert!(out.contains("forbidden"), "{out}");
    let out = send(&w, &a, "get", None, "<vCard xmlns='vcard-temp'/>");
    assert!(out.contains("<FN>Alice</FN>"), "{out}");
    let out = send(
        &w,
        &b,
        "get",
        Some(&format!("nobody@{DOMAIN}")),
        "<vCard xmlns='vcard-temp'/>",
    );
    assert!(out.contains("service-unavailable"), "{out}");
    // Another element in the namespace is not a vCard.
    let out = send(&w, &a, "get", None, "<photo xmlns='vcard-temp'/>");
    assert!(out.contains("bad-request"), "{out}");
}

#[test]
fn size_limit_and_quota() {
    let probe = World::new(&["alice"]);
    let base = probe.storage.stored_bytes("alice").unwrap();
    drop(probe);
    let quota = Quota {
        stored_bytes: base + 1024,
        ..Quota::DEFAULT
    };
    let w = World::with_router(&["alice"], Router::new(DOMAIN.into()).with_quota(quota));
    let a = w.bind("alice", "phone");
    let out = send(
        &w,
        &a,
        "set",
        None,
        &format!(
            "<vCard xmlns='vcard-temp'><DESC>{}</DESC></vCard>",
            "d".repeat(2000)
        ),
    );
    assert!(out.contains("resource-constraint"), "{out}");
    assert_eq!(w.storage.stored_bytes("alice").unwrap(), base);
    let cfg = VcardConfig { max_bytes: 300 };
    let el = crate::router::im::tests::parse(&format!(
        "<iq type='set' id='v'><vCard xmlns='vcard-temp'><DESC>{}</DESC></vCard></iq>",
        "d".repeat(400)
    ));
    let iq = Stanza::from_client(el).unwrap();
    let e = parse(&iq, &cfg).unwrap_err();
    assert_eq!(e.condition, StanzaCondition::NotAcceptable);
}

#[test]
fn photo_hashes() {
    let v = |binval: &str| {
        crate::router::im::tests::parse(&format!(
            "<vCard xmlns='vcard-temp'><PHOTO><BINVAL>{binval}</BINVAL></PHOTO></vCard>"
        ))
    };
    // sha1("hello") = aaf4c61d…
    assert_eq!(
        photo_hash(&v("aGVsbG8=")).as_deref(),
        Some("aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d")
    );
    assert_eq!(photo_hash(&v("not base64!")), None);
    assert_eq!(photo_hash(&v("")), None);
}
