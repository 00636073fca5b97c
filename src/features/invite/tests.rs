//! XEP-0401 URIs, validities, the QR drawing, and what an invitation does at registration.

use super::*;
use crate::features::register::InviteEffects;

#[test]
fn uris_follow_xep_0401() {
    let tok = "AbC-_123";
    assert_eq!(
        invite_uri("home.local", None, tok, true),
        "xmpp:home.local?register;preauth=AbC-_123"
    );
    let alice = BareJid::new(Some("alice"), "home.local").unwrap();
    assert_eq!(
        invite_uri("home.local", Some(&alice), tok, true),
        "xmpp:alice@home.local?roster;preauth=AbC-_123;ibr=y"
    );
    // Registration closed: a roster invitation only (XEP-0401: `ibr` omitted).
    assert_eq!(
        invite_uri("home.local", Some(&alice), tok, false),
        "xmpp:alice@home.local?roster;preauth=AbC-_123"
    );
    // RFC 5122: what is not unreserved is percent-encoded (UTF-8).
    let zoe = BareJid::new(Some("zoé"), "home.local").unwrap();
    assert_eq!(
        invite_uri("home.local", Some(&zoe), tok, true),
        "xmpp:zo%C3%A9@home.local?roster;preauth=AbC-_123;ibr=y"
    );
}

#[test]
fn validities_parse() {
    assert_eq!(parse_validity("7d"), Ok(7 * 24 * 3600));
    assert_eq!(parse_validity("12h"), Ok(12 * 3600));
    assert_eq!(parse_validity("30m"), Ok(1800));
    assert_eq!(parse_validity("1s"), Ok(1));
    assert_eq!(parse_validity("2w"), Ok(14 * 24 * 3600));
    for bad in [
        "",
        "d",
        "7",
        "7x",
        "-1d",
        "0h",
        "400d",
        "1.5h",
        "99999999999999999999d",
    ] {
        assert!(parse_validity(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn qr_draws_the_uri() {
    let uri = "xmpp:alice@home.local?roster;preauth=0123456789abcdefghijABCDEFGHIJ-_;ibr=y";
    let lines = qr::render(uri).unwrap();
    let (width, dark) = qr::modules(uri).unwrap();
    // A version-N code is 17 + 4N modules wide; this URI needs more than version 1.
    assert!(width > 21 && (width - 17) % 4 == 0, "{width}");
    let size = width + 2 * qr::QUIET;
    assert_eq!(lines.len(), size.div_ceil(2));
    assert!(lines.iter().all(|l| l.chars().count() == size));
    // The picture is exactly the crate's encoding of the URI, read back module by module.
    assert_eq!(qr::read_back(&lines), Some((width, dark)));
    // Another URI is another picture.
    assert_ne!(
        qr::render("xmpp:home.local?register;preauth=x").unwrap(),
        lines
    );
    // Too long for any QR code.
    assert!(qr::render(&"x".repeat(8000)).is_err());
}

#[test]
fn preauth_is_read_from_the_stanza() {
    let el = Element::new("presence", "jabber:client")
        .with_attr("type", "subscribe")
        .with_child(Element::new("preauth", NS_PARS).with_attr("token", "t0k"));
    assert_eq!(preauth_token(&el), Some("t0k"));
    let other = Element::new("presence", "jabber:client")
        .with_child(Element::new("preauth", "urn:other").with_attr("token", "t0k"));
    assert_eq!(preauth_token(&other), None);
    let empty = Element::new("presence", "jabber:client")
        .with_child(Element::new("preauth", NS_PARS).with_attr("token", ""));
    assert_eq!(preauth_token(&empty), None);
}

#[test]
fn effects_make_contacts_and_household() {
    let (_d, s) = crate::storage::test_store(&["alice", "bob", "carol"]);
    let effects = InviteEffects {
        household: true,
        inviter: Some("alice".into()),
    };
    let v_before = s.roster_version("alice").unwrap();
    let inviter = apply_effects(&s, "home.local", "bob", &effects).unwrap();
    assert_eq!(
        inviter.as_ref().map(|j| j.as_str()),
        Some("alice@home.local")
    );
    assert!(s.is_household_member("bob").unwrap());
    let bob = BareJid::new(Some("bob"), "home.local").unwrap();
    let alice = BareJid::new(Some("alice"), "home.local").unwrap();
    for (user, contact) in [("alice", &bob), ("bob", &alice)] {
        let item = s.roster_item(user, contact).unwrap().unwrap();
        assert_eq!(item.state.subscription, Subscription::Both, "{user}");
        assert!(!item.state.pending_out && !item.state.pending_in);
    }
    assert!(s.roster_version("alice").unwrap() > v_before);

    // No inviter, no household: nothing but the account.
    assert_eq!(
        apply_effects(&s, "home.local", "carol", &InviteEffects::default()).unwrap(),
        None
    );
    assert!(!s.is_household_member("carol").unwrap());
    assert!(s.roster("carol").unwrap().1.is_empty());

    // An inviter deleted since: no contact.
    let gone = InviteEffects {
        household: false,
        inviter: Some("dave".into()),
    };
    assert_eq!(
        apply_effects(&s, "home.local", "carol", &gone).unwrap(),
        None
    );
    assert!(s.roster("carol").unwrap().1.is_empty());
}

#[test]
fn only_the_inviters_live_tokens_preapprove() {
    let (_d, s) = crate::storage::test_store(&["alice"]);
    let now = crate::storage::unix_now();
    let mine = InviteEffects {
        household: false,
        inviter: Some("alice".into()),
    };
    s.create_invite_with("alice-tok", now + 60, 1, "alice", "", &mine)
        .unwrap();
    s.create_invite("admin-tok", now + 60, 1, "admin", "")
        .unwrap();
    s.create_invite_with("old-tok", now - 1, 1, "alice", "", &mine)
        .unwrap();
    let check = |token: &str| -> bool {
        s.find_invite(token, now)
            .unwrap()
            .is_some_and(|i| i.effects.inviter.as_deref() == Some("alice"))
    };
    assert!(check("alice-tok"));
    assert!(!check("admin-tok"));
    assert!(!check("old-tok"));
    assert!(!check("nope"));
}

#[test]
fn tokens_are_redacted_for_the_log() {
    let xml = "<presence type='subscribe'><preauth xmlns='urn:xmpp:pars:0' \
               token='s3cret'/></presence><iq><preauth token=\"tok2\"/></iq>";
    let shown = redact_preauth(xml);
    assert!(
        !shown.contains("s3cret") && !shown.contains("tok2"),
        "{shown}"
    );
    assert!(shown.contains("token='[6 bytes redacted]'/>"), "{shown}");
    assert!(shown.contains("token=\"[4 bytes redacted]\"/>"), "{shown}");
    assert_eq!(redact_preauth("<presence/>"), "<presence/>");
    // Cut off mid-tag: nothing of the token shown.
    assert!(!redact_preauth("<preauth token='abc").contains("abc"));
    for cut in ["<preauth token=", "<preauth token='", "<preauth token=é"] {
        redact_preauth(cut);
    }
    let form = "<x><field var='uri'><value>xmpp:a@b?roster;preauth=zzz</value></field>\
                <field var='token'><value>yyy</value></field></x>";
    let shown = crate::features::forms::redact_password_fields(form);
    assert!(!shown.contains("zzz") && !shown.contains("yyy"), "{shown}");
}
