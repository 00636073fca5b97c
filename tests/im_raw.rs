//! RFC 6121 with the raw test client: rosters (§2), subscriptions (§3), presence (§4),
//! delivery by priority (§8.5) and offline messages (XEP-0160), across several resources,
//! restarts and a SIGKILL.

mod common;

use common::client::{Conn, NS_CLIENT, new_id};
use common::im::*;
use common::{Server, ServerOpts};

#[test]
fn roster_set_get_remove_with_pushes_and_versions() {
    let server = server();
    let mut phone = login(&server, "alice", "phone");
    let mut laptop = login(&server, "alice", "laptop");
    let mut other = login(&server, "alice", "tv"); // never asks for the roster
    let r = roster_get(&mut phone, Some(""));
    let q = r.child("query", NS_ROSTER).expect("full roster");
    assert!(q.children.is_empty());
    let v0 = q.attr("ver").expect("ver").to_string();
    roster_get(&mut laptop, None);

    // §2.3: set with a name and groups; the result, then a push to each interested
    // resource (the one that asked included).
    let bob = server.jid("bob");
    let reply = roster_set(
        &mut phone,
        &format!("<item jid='{bob}' name='Bob'><group>Family</group><group>Chess</group></item>"),
    );
    assert_eq!(reply.attr("type"), Some("result"), "{reply}");
    for c in [&mut phone, &mut laptop] {
        let item = expect_push(c);
        assert_eq!(item.attr("jid"), Some(bob.as_str()));
        assert_eq!(item.attr("name"), Some("Bob"));
        assert_eq!(item.attr("subscription"), Some("none"));
        let groups: Vec<&str> = item.children.iter().map(|g| g.text.as_str()).collect();
        assert_eq!(groups, ["Chess", "Family"]);
    }
    assert!(
        drain(&mut other).iter().all(|e| e.name != "iq"),
        "a resource that never asked for the roster got a push"
    );

    // §2.6.3: the current version gets an empty result; an old one the full roster.
    let full = roster_get(&mut laptop, Some(&v0));
    let q = full
        .child("query", NS_ROSTER)
        .expect("full roster for an old version");
    assert_eq!(q.children.len(), 1);
    let v1 = q.attr("ver").unwrap().to_string();
    assert_ne!(v0, v1);
    let empty = roster_get(&mut laptop, Some(&v1));
    assert!(empty.children.is_empty(), "{empty}");

    // Errors (§2.3.3, §2.5.3).
    let two = format!("<item jid='{bob}'/><item jid='{}'/>", server.jid("carol"));
    assert_eq!(
        error_condition(&roster_set(&mut phone, &two)),
        "bad-request"
    );
    let dup = format!("<item jid='{bob}'><group>A</group><group>A</group></item>");
    assert_eq!(
        error_condition(&roster_set(&mut phone, &dup)),
        "bad-request"
    );
    let empty_group = format!("<item jid='{bob}'><group></group></item>");
    assert_eq!(
        error_condition(&roster_set(&mut phone, &empty_group)),
        "not-acceptable"
    );
    let long = format!("<item jid='{bob}' name='{}'/>", "n".repeat(2000));
    assert_eq!(
        error_condition(&roster_set(&mut phone, &long)),
        "not-acceptable"
    );
    let full_jid = format!("<item jid='{bob}/res'/>");
    assert_eq!(
        error_condition(&roster_set(&mut phone, &full_jid)),
        "jid-malformed"
    );
    let missing = format!(
        "<item jid='{}' subscription='remove'/>",
        server.jid("carol")
    );
    assert_eq!(
        error_condition(&roster_set(&mut phone, &missing)),
        "item-not-found"
    );
    // Someone else's roster is not ours to read.
    let id = new_id("other");
    phone.send(&format!(
        "<iq type='get' id='{id}' to='{bob}'><query xmlns='{NS_ROSTER}'/></iq>"
    ));
    assert_eq!(error_condition(&phone.expect_iq_reply(&id)), "forbidden");

    // §2.5: remove, pushed as subscription='remove'.
    let reply = roster_set(
        &mut laptop,
        &format!("<item jid='{bob}' subscription='remove'/>"),
    );
    assert_eq!(reply.attr("type"), Some("result"), "{reply}");
    for c in [&mut phone, &mut laptop] {
        let item = expect_push(c);
        assert_eq!(item.attr("subscription"), Some("remove"));
    }
    // §2.6: versioning is on, so every roster result carries `ver`, also to a get that
    // had none (Prosody and ejabberd do the same): the client can cache what it got.
    let r = roster_get(&mut phone, None);
    let q = r.child("query", NS_ROSTER).unwrap();
    assert!(q.children.is_empty());
    let ver = q.attr("ver").expect("ver on a result to a get without ver");
    assert_ne!(ver, v0);
    // And that version is current: asked with it, the result is empty (§2.6.3).
    let r = roster_get(&mut laptop, Some(ver));
    assert!(r.child("query", NS_ROSTER).is_none(), "{r}");
}

#[test]
fn roster_survives_a_restart() {
    let mut server = server();
    let mut a = login(&server, "alice", "phone");
    roster_get(&mut a, None);
    let bob = server.jid("bob");
    roster_set(
        &mut a,
        &format!("<item jid='{bob}' name='Bobby'><group>G</group></item>"),
    );
    drop(a);
    server.kill();
    server.restart();
    let mut a = login(&server, "alice", "phone");
    let r = roster_get(&mut a, None);
    let item = r
        .child("query", NS_ROSTER)
        .unwrap()
        .child("item", NS_ROSTER)
        .unwrap()
        .clone();
    assert_eq!(item.attr("name"), Some("Bobby"));
    assert_eq!(item.children[0].text, "G");
}

#[test]
fn mutual_subscription_presence_and_status() {
    let server = server();
    let (aj, bj) = (server.jid("alice"), server.jid("bob"));
    let mut a = login(&server, "alice", "phone");
    let mut b = login(&server, "bob", "desk");
    roster_get(&mut a, None);
    roster_get(&mut b, None);
    presence(&mut a, "");
    presence(&mut b, "");
    drain(&mut a);
    drain(&mut b);

    // §3.1: alice asks; her item shows ask='subscribe'; bob gets the request from her
    // bare JID, and no roster item (pending-in is not shown).
    a.send(&format!("<presence type='subscribe' to='{bj}'/>"));
    let item = expect_push(&mut a);
    assert_eq!(item.attr("ask"), Some("subscribe"));
    assert_eq!(item.attr("subscription"), Some("none"));
    let req = expect_presence(&mut b, &aj, Some("subscribe"));
    assert_eq!(req.attr("from"), Some(aj.as_str()));
    assert!(
        drain(&mut b).iter().all(|e| e.name != "iq"),
        "pending-in was pushed"
    );

    // §3.1.5: bob approves: his item becomes from, hers to, and she sees his presence.
    b.send(&format!("<presence type='subscribed' to='{aj}'/>"));
    let item = expect_push(&mut b);
    assert_eq!(item.attr("subscription"), Some("from"));
    let item = expect_push(&mut a);
    assert_eq!(item.attr("subscription"), Some("to"));
    assert_eq!(item.attr("ask"), None);
    expect_presence(&mut a, &bj, Some("subscribed"));
    let p = expect_presence(&mut a, &format!("{bj}/desk"), None);
    // XEP-0203: presence shown later says when it was sent.
    let d = p
        .child("delay", NS_DELAY)
        .expect("delay on a replayed presence");
    assert_eq!(d.attr("from"), Some(server.domain()));

    // And the other way round.
    b.send(&format!("<presence type='subscribe' to='{aj}'/>"));
    expect_push(&mut b);
    expect_presence(&mut a, &bj, Some("subscribe"));
    a.send(&format!("<presence type='subscribed' to='{bj}'/>"));
    assert_eq!(expect_push(&mut a).attr("subscription"), Some("both"));
    assert_eq!(expect_push(&mut b).attr("subscription"), Some("both"));
    expect_presence(&mut b, &format!("{aj}/phone"), None);

    // §4.4: a status change reaches the contact.
    presence(&mut a, "<show>away</show><status>at the market</status>");
    let p = expect_presence(&mut b, &format!("{aj}/phone"), None);
    assert_eq!(p.child("status", NS_CLIENT).unwrap().text, "at the market");

    // §3.1.3: asking again for what one has is answered by the server, not delivered
    // (and the answer, changing nothing for bob, is not delivered either: A.3.3).
    b.send(&format!("<presence type='subscribe' to='{aj}'/>"));
    assert!(
        drain(&mut a)
            .iter()
            .all(|e| e.attr("type") != Some("subscribe"))
    );

    // §4.5: logging out tells the contact.
    a.close();
    expect_presence(&mut b, &format!("{aj}/phone"), Some("unavailable"));

    // §4.3.2: a probe for an offline contact: unavailable, with when and the last status.
    presence(&mut b, "<status>bye</status>");
    b.send("<presence type='unavailable'><status>gone fishing</status></presence>");
    drain(&mut b);
    let mut a = login(&server, "alice", "phone");
    presence(&mut a, "");
    let p = expect_presence(&mut a, &bj, Some("unavailable"));
    assert!(p.has_child("delay", NS_DELAY), "{p}");
    assert_eq!(p.child("status", NS_CLIENT).unwrap().text, "gone fishing");
}

#[test]
fn unsubscribe_and_revoke_stop_presence() {
    let server = server();
    let (aj, bj) = (server.jid("alice"), server.jid("bob"));
    let mut a = login(&server, "alice", "phone");
    let mut b = login(&server, "bob", "desk");
    roster_get(&mut a, None);
    roster_get(&mut b, None);
    presence(&mut a, "");
    presence(&mut b, "");
    befriend(&server, &mut a, "alice", &mut b, "bob");

    // §3.2: bob revokes alice's subscription to him: she gets unavailable from him.
    b.send(&format!("<presence type='unsubscribed' to='{aj}'/>"));
    assert_eq!(expect_push(&mut b).attr("subscription"), Some("to"));
    assert_eq!(expect_push(&mut a).attr("subscription"), Some("from"));
    expect_presence(&mut a, &bj, Some("unsubscribed"));
    expect_presence(&mut a, &format!("{bj}/desk"), Some("unavailable"));
    // Bob's presence no longer reaches alice.
    presence(&mut b, "<status>hidden</status>");
    drain(&mut b);
    assert!(
        drain(&mut a)
            .iter()
            .all(|e| !(e.name == "presence" && e.attr("type").is_none()))
    );

    // §2.5.2: alice removes bob: he loses his subscription to her.
    roster_set(&mut a, &format!("<item jid='{bj}' subscription='remove'/>"));
    assert_eq!(expect_push(&mut a).attr("subscription"), Some("remove"));
    expect_presence(&mut b, &format!("{aj}/phone"), Some("unavailable"));
    assert_eq!(expect_push(&mut b).attr("subscription"), Some("none"));
    expect_presence(&mut b, &aj, Some("unsubscribed"));
}

#[test]
fn requests_wait_for_login_and_pre_approval() {
    let server = server();
    let (aj, bj, cj) = (server.jid("alice"), server.jid("bob"), server.jid("carol"));
    let mut a = login(&server, "alice", "phone");
    roster_get(&mut a, None);
    presence(&mut a, "");
    // §3.1.3: bob is offline; the request waits for him, with what alice said.
    a.send(&format!(
        "<presence type='subscribe' to='{bj}/desk'><status>it is alice</status></presence>"
    ));
    expect_push(&mut a);
    let mut b = login(&server, "bob", "desk");
    presence(&mut b, "");
    let req = expect_presence(&mut b, &aj, Some("subscribe"));
    // Bare JIDs both ways (§3.1.2), the status kept.
    assert_eq!(req.attr("from"), Some(aj.as_str()));
    assert_eq!(req.attr("to"), Some(bj.as_str()));
    assert_eq!(req.child("status", NS_CLIENT).unwrap().text, "it is alice");
    // And again at the next login, until he answers.
    b.close();
    let mut b = login(&server, "bob", "desk");
    presence(&mut b, "");
    expect_presence(&mut b, &aj, Some("subscribe"));
    b.send(&format!("<presence type='unsubscribed' to='{aj}'/>"));
    // Denied: alice's ask goes away.
    let item = expect_push(&mut a);
    assert_eq!(item.attr("ask"), None);
    expect_presence(&mut a, &bj, Some("unsubscribed"));
    b.close();
    let mut b = login(&server, "bob", "desk");
    presence(&mut b, "");
    assert!(
        drain(&mut b)
            .iter()
            .all(|e| e.attr("type") != Some("subscribe"))
    );

    // §3.4: alice pre-approves carol; carol's request is accepted without asking alice.
    a.send(&format!("<presence type='subscribed' to='{cj}'/>"));
    let item = expect_push(&mut a);
    assert_eq!(item.attr("approved"), Some("true"));
    assert_eq!(item.attr("subscription"), Some("none"));
    let mut c = login(&server, "carol", "pc");
    roster_get(&mut c, None);
    presence(&mut c, "");
    drain(&mut a);
    c.send(&format!("<presence type='subscribe' to='{aj}'/>"));
    expect_push(&mut c);
    expect_presence(&mut c, &aj, Some("subscribed"));
    expect_presence(&mut c, &format!("{aj}/phone"), None);
    let item = expect_push(&mut a);
    assert_eq!(item.attr("subscription"), Some("from"));
    assert_eq!(item.attr("approved"), None);
    assert!(
        drain(&mut a)
            .iter()
            .all(|e| e.attr("type") != Some("subscribe"))
    );
    // A request for an account that does not exist is refused.
    c.send(&format!(
        "<presence type='subscribe' to='{}'/>",
        server.jid("nobody")
    ));
    expect_push(&mut c);
    expect_presence(&mut c, &server.jid("nobody"), Some("unsubscribed"));
}

#[test]
fn resources_priorities_and_bare_jid_delivery() {
    let server = server();
    let aj = server.jid("alice");
    let mut phone = login(&server, "alice", "phone");
    let mut laptop = login(&server, "alice", "laptop");
    let mut b = login(&server, "bob", "desk");
    presence(&mut phone, "<priority>5</priority>");
    presence(&mut laptop, "<priority>1</priority>");
    // §4.2.2: each resource sees the other's presence.
    expect_presence(&mut laptop, &format!("{aj}/phone"), None);
    expect_presence(&mut phone, &format!("{aj}/laptop"), None);
    drain(&mut phone);
    drain(&mut laptop);

    // §8.5.2.1.1: chat to the bare JID goes to the highest priority only.
    chat(&mut b, &aj, "to the phone");
    expect_message(&mut phone, "to the phone");
    assert!(drain(&mut laptop).iter().all(|e| e.name != "message"));
    // Headline goes to every non-negative resource.
    b.send(&format!(
        "<message type='headline' to='{aj}'><body>news</body></message>"
    ));
    expect_message(&mut phone, "news");
    expect_message(&mut laptop, "news");
    // A full JID reaches that resource whatever its priority.
    chat(&mut b, &format!("{aj}/laptop"), "to the laptop");
    expect_message(&mut laptop, "to the laptop");
    // §8.5.3.2.1: a gone resource: chat falls back to the bare JID.
    chat(&mut b, &format!("{aj}/tablet"), "fallback");
    expect_message(&mut phone, "fallback");

    // The phone's connection drops without a goodbye: the laptop is told and takes over.
    drop(phone);
    expect_presence(&mut laptop, &format!("{aj}/phone"), Some("unavailable"));
    chat(&mut b, &aj, "now the laptop");
    expect_message(&mut laptop, "now the laptop");

    // Directed presence (§4.6) to someone not subscribed ends with the session.
    let bj = server.jid("bob");
    presence(&mut b, "");
    // The round trip makes sure bob is available before the laptop writes to him.
    drain(&mut b);
    laptop.send(&format!(
        "<presence to='{bj}'><status>hi bob</status></presence>"
    ));
    let p = expect_presence(&mut b, &format!("{aj}/laptop"), None);
    assert_eq!(p.child("status", NS_CLIENT).unwrap().text, "hi bob");
    laptop.close();
    expect_presence(&mut b, &format!("{aj}/laptop"), Some("unavailable"));
}

#[test]
fn offline_messages_in_order_with_delay() {
    let server = server();
    let aj = server.jid("alice");
    let mut b = login(&server, "bob", "desk");
    for i in 1..=3 {
        chat(&mut b, &aj, &format!("offline {i}"));
    }
    // Normal messages too; headline is not stored.
    b.send(&format!(
        "<message to='{aj}'><body>offline 4</body></message>"
    ));
    b.send(&format!(
        "<message type='headline' to='{aj}'><body>lost</body></message>"
    ));
    // No error came back to bob.
    assert!(drain(&mut b).is_empty());
    // An account that does not exist still gets service-unavailable.
    chat(&mut b, &server.jid("nobody"), "hello?");
    let err = b.expect_matching("the error", |e| e.name == "message");
    assert_eq!(error_condition(&err), "service-unavailable");

    // Online with a negative priority: still not delivered (§8.5.2.2.1).
    let mut a = login(&server, "alice", "phone");
    presence(&mut a, "<priority>-1</priority>");
    chat(&mut b, &aj, "offline 5");
    // Both round trips: bob's message handled (stored), alice's presence too.
    drain(&mut b);
    assert!(drain(&mut a).iter().all(|e| e.name != "message"));
    // Non-negative priority: everything, in order, with the server's <delay/>.
    presence(&mut a, "<priority>0</priority>");
    for i in 1..=5 {
        let m = expect_message(&mut a, &format!("offline {i}"));
        let d = m.child("delay", NS_DELAY).expect("delay");
        assert_eq!(d.attr("from"), Some(server.domain()));
        assert!(d.attr("stamp").is_some_and(|s| s.ends_with('Z')));
    }
    assert!(drain(&mut a).iter().all(|e| e.name != "message"));
    // Delivered once only.
    a.close();
    let mut a = login(&server, "alice", "phone");
    presence(&mut a, "");
    assert!(drain(&mut a).iter().all(|e| e.name != "message"));
}

#[test]
fn offline_quota_is_resource_constraint() {
    let server = server();
    let aj = server.jid("alice");
    let mut b = login(&server, "bob", "desk");
    // The default quota is 1000 messages (limits.max_offline_messages_per_account).
    let mut batch = String::new();
    for i in 0..1000 {
        batch.push_str(&format!(
            "<message type='chat' to='{aj}'><body>m{i}</body></message>"
        ));
    }
    b.send(&batch);
    assert!(drain(&mut b).is_empty());
    chat(&mut b, &aj, "one too many");
    let err = b.expect_matching("the error", |e| e.name == "message");
    assert_eq!(error_condition(&err), "resource-constraint");

    // The whole backlog, far more than a session's queue holds, arrives in order and
    // the session stays up.
    let mut a = login(&server, "alice", "phone");
    presence(&mut a, "");
    for i in 0..1000 {
        expect_message(&mut a, &format!("m{i}"));
    }
    a.assert_alive();
}

/// XEP-0205 per-account limits, each set in `[limits]`: roster items (`not-allowed`,
/// RFC 6121 §2.3.3), offline messages and blocklist entries (`resource-constraint`), and
/// the account's stored bytes across all of them. A refused write leaves nothing behind.
#[test]
fn per_account_quotas_come_from_the_config() {
    let server = Server::start(ServerOpts {
        extra_toml: "\n[limits]\nmax_roster_items_per_account = 2\n\
                     max_offline_messages_per_account = 2\nmax_blocked_jids_per_account = 1\n\
                     max_stored_bytes_per_account = 4096\n"
            .into(),
        ..ServerOpts::default()
    });
    for u in ["alice", "bob", "carol"] {
        server.add_user(u, "a fine password");
    }
    let (bj, cj) = (server.jid("bob"), server.jid("carol"));
    let mut a = login(&server, "alice", "desk");
    roster_get(&mut a, None);
    // Roster items: two, then not-allowed; a rename at the limit is still fine.
    for n in ["x1", "x2"] {
        let r = roster_set(&mut a, &format!("<item jid='{n}@elsewhere.example'/>"));
        assert_eq!(r.attr("type"), Some("result"), "{r}");
        expect_push(&mut a);
    }
    let r = roster_set(&mut a, "<item jid='x3@elsewhere.example'/>");
    assert_eq!(error_condition(&r), "not-allowed");
    let r = roster_set(&mut a, "<item jid='x1@elsewhere.example' name='One'/>");
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    expect_push(&mut a);
    // A name that would take alice past 4096 stored bytes: resource-constraint.
    // (Names and groups are at most 1024 bytes each: a long name and four long groups.)
    let big = "n".repeat(1000);
    let groups: String = (0..4).map(|i| format!("<group>{i}{big}</group>")).collect();
    let r = roster_set(
        &mut a,
        &format!("<item jid='x2@elsewhere.example' name='{big}'>{groups}</item>"),
    );
    assert_eq!(error_condition(&r), "resource-constraint");
    let roster = roster_get(&mut a, None);
    assert!(!roster.to_string().contains(&big), "{roster}");

    // Offline messages: bob (offline) takes two, the third bounces.
    for body in ["b1", "b2", "b3"] {
        chat(&mut a, &bj, body);
    }
    let err = a.expect_matching("the bounce", |e| e.name == "message");
    assert_eq!(error_condition(&err), "resource-constraint");
    // Stored bytes: carol takes one 3000-byte message, not a second.
    let long = |c: char| c.to_string().repeat(3000);
    chat(&mut a, &cj, &long('p'));
    chat(&mut a, &cj, &long('q'));
    let err = a.expect_matching("the bounce", |e| e.name == "message");
    assert_eq!(error_condition(&err), "resource-constraint");
    assert!(drain(&mut a).is_empty());

    // Blocklist: one entry, then resource-constraint, and the list is unchanged.
    let block = |c: &mut Conn, jid: &str| {
        let id = new_id("block");
        c.send(&format!(
            "<iq type='set' id='{id}'><block xmlns='urn:xmpp:blocking'><item jid='{jid}'/></block></iq>"
        ));
        c.expect_iq_reply(&id)
    };
    let r = block(&mut a, "spam1@elsewhere.example");
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let r = block(&mut a, "spam2@elsewhere.example");
    assert_eq!(error_condition(&r), "resource-constraint");

    // What was accepted arrives, exactly once each.
    let mut b = login(&server, "bob", "phone");
    presence(&mut b, "");
    expect_message(&mut b, "b1");
    expect_message(&mut b, "b2");
    assert!(drain(&mut b).iter().all(|e| e.name != "message"));
    let mut c = login(&server, "carol", "phone");
    presence(&mut c, "");
    expect_message(&mut c, &long('p'));
    assert!(drain(&mut c).iter().all(|e| e.name != "message"));
}

#[test]
fn offline_messages_survive_restart_and_sigkill() {
    let mut server = server();
    let aj = server.jid("alice");
    let mut b = login(&server, "bob", "desk");
    chat(&mut b, &aj, "before the restart");
    drain(&mut b);
    drop(b);
    server.stop();
    server.restart();
    let mut b = login(&server, "bob", "desk");
    chat(&mut b, &aj, "before the crash");
    // The round trip proves the server handled (and stored) the message.
    drain(&mut b);
    drop(b);
    server.kill();
    server.restart();
    let mut a = login(&server, "alice", "phone");
    presence(&mut a, "");
    expect_message(&mut a, "before the restart");
    expect_message(&mut a, "before the crash");
}

#[test]
fn taken_over_resource_goes_unavailable() {
    let server = server();
    let aj = server.jid("alice");
    let mut a = login(&server, "alice", "phone");
    let mut b = login(&server, "bob", "desk");
    for c in [&mut a, &mut b] {
        roster_get(c, None);
        presence(c, "");
    }
    befriend(&server, &mut a, "alice", &mut b, "bob");
    // The phone reconnects before the server noticed the old connection was dead
    // (RFC 6120 §7.7.2.2): the old session's contacts hear it went away.
    let _again = login(&server, "alice", "phone");
    expect_presence(&mut b, &format!("{aj}/phone"), Some("unavailable"));
    drop(a);
}

#[test]
fn bad_presence_types() {
    let server = server();
    let (aj, bj) = (server.jid("alice"), server.jid("bob"));
    let mut a = login(&server, "alice", "phone");
    roster_get(&mut a, None);
    // RFC 6120 §8.3.3.1: an unknown type is a bad request.
    a.send(&format!("<presence type='bogus' to='{bj}'/>"));
    let err = a.expect_matching("the error", |e| e.name == "presence");
    assert_eq!(error_condition(&err), "bad-request");
    // Subscribing to oneself changes nothing and is not answered.
    a.send(&format!("<presence type='subscribe' to='{aj}'/>"));
    let seen = drain(&mut a);
    assert!(seen.iter().all(|e| e.name != "iq"), "{seen:?}");
    let r = roster_get(&mut a, None);
    assert!(r.child("query", NS_ROSTER).unwrap().children.is_empty());
}

#[test]
fn initial_presence_echo_comes_before_waiting_requests_and_offline_messages() {
    let server = server();
    let aj = server.jid("alice");
    let bj = server.jid("bob");
    // While alice is offline: a subscription request (§3.1.3) and a message (XEP-0160).
    let mut b = login(&server, "bob", "desk");
    b.send(&format!("<presence type='subscribe' to='{aj}'/>"));
    chat(&mut b, &aj, "while you were out");
    drain(&mut b);

    let mut a = login(&server, "alice", "phone");
    let me = a.full_jid().to_string();
    presence(&mut a, "<status>home</status>");
    let seen = drain(&mut a);
    let names: Vec<String> = seen
        .iter()
        .map(|e| format!("{} {:?} {:?}", e.name, e.attr("type"), e.attr("from")))
        .collect();
    // §4.2.2: the server's echo of the initial presence first (as Prosody and ejabberd
    // send it; scripted clients wait for it), then what was waiting.
    let first = seen
        .first()
        .unwrap_or_else(|| panic!("nothing came: {names:?}"));
    assert!(
        first.name == "presence" && first.attr("type").is_none(),
        "{names:?}"
    );
    assert_eq!(first.attr("from"), Some(me.as_str()), "{names:?}");
    let request = seen
        .iter()
        .position(|e| e.name == "presence" && e.attr("type") == Some("subscribe"))
        .unwrap_or_else(|| panic!("no subscription request: {names:?}"));
    assert_eq!(seen[request].attr("from"), Some(bj.as_str()));
    let message = seen
        .iter()
        .position(|e| e.name == "message")
        .unwrap_or_else(|| panic!("no offline message: {names:?}"));
    assert!(request > 0 && message > 0, "{names:?}");
}

/// Issue 14 (disk full): when storage cannot delete what it delivers (a full disk makes
/// every write fail; a trigger does the same here, on the real file), offline messages
/// were delivered and then delivered again at the next login. Now they are taken out of
/// storage before they are written: with the delete failing they wait, and once the disk
/// has room they arrive exactly once.
#[test]
fn offline_messages_are_never_delivered_twice_when_deleting_fails() {
    let server = server();
    let aj = server.jid("alice");
    let mut b = login(&server, "bob", "desk");
    for i in 1..=3 {
        chat(&mut b, &aj, &format!("kept {i}"));
    }
    assert!(drain(&mut b).is_empty());
    let db = rusqlite::Connection::open(server.data_dir().join("hearth.db")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    db.execute_batch(
        "CREATE TRIGGER disk_full BEFORE DELETE ON offline_messages
         BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END;",
    )
    .unwrap();
    let count = |seen: &[common::xml::Node]| {
        seen.iter()
            .filter(|e| {
                e.name == "message"
                    && e.child("body", "jabber:client")
                        .is_some_and(|b| b.text.starts_with("kept "))
            })
            .count()
    };
    let mut total = 0;
    let mut a = login(&server, "alice", "phone");
    presence(&mut a, "");
    total += count(&drain(&mut a));
    a.close();
    db.execute_batch("DROP TRIGGER disk_full").unwrap();
    for _ in 0..2 {
        let mut a = login(&server, "alice", "phone");
        presence(&mut a, "");
        total += count(&drain(&mut a));
        a.close();
    }
    assert_eq!(total, 3, "3 messages, delivered {total} times in all");
}
