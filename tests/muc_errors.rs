//! XEP-0045 edge cases with the raw client: each malformed or forbidden request gets the
//! XEP's error, nothing panics, and a session that ends leaves its rooms (RFC 6121 §4.6.3
//! directed presence reaching the room).

mod common;

use common::client::{Conn, NS_CLIENT, new_id};
use common::im::{drain, error_condition, login, server};
use common::xml::Node;

const MUC: &str = "http://jabber.org/protocol/muc";
const USER: &str = "http://jabber.org/protocol/muc#user";
const OWNER: &str = "http://jabber.org/protocol/muc#owner";
const ADMIN: &str = "http://jabber.org/protocol/muc#admin";

fn room(server: &common::Server, name: &str) -> String {
    format!("{name}@conference.{}", server.domain())
}

/// Joins `room` as `nick` and reads up to the subject; returns the self-presence.
fn join(c: &mut Conn, room: &str, nick: &str) -> Node {
    c.send(&format!(
        "<presence to='{room}/{nick}'><x xmlns='{MUC}'/></presence>"
    ));
    let own = c.expect_matching("own presence", |el| {
        el.name == "presence"
            && el.attr("from") == Some(&format!("{room}/{nick}"))
            && el
                .child("x", USER)
                .is_some_and(|x| x.children.iter().any(|s| s.attr("code") == Some("110")))
    });
    c.expect_matching("the subject", |el| el.has_child("subject", NS_CLIENT));
    own
}

/// alice's instant room (§10.1.2).
fn instant(c: &mut Conn, room: &str) {
    join(c, room, "alice");
    let reply = iq(
        c,
        "set",
        room,
        &format!("<query xmlns='{OWNER}'><x xmlns='jabber:x:data' type='submit'/></query>"),
    );
    assert_eq!(reply.attr("type"), Some("result"), "{reply}");
}

fn iq(c: &mut Conn, ty: &str, to: &str, payload: &str) -> Node {
    let id = new_id("muc");
    c.send(&format!(
        "<iq type='{ty}' id='{id}' to='{to}'>{payload}</iq>"
    ));
    c.expect_iq_reply(&id)
}

/// The next error stanza of kind `name`.
fn expect_error(c: &mut Conn, name: &str) -> String {
    let el = c.expect_matching(&format!("a {name} error"), |el| {
        el.name == name && el.attr("type") == Some("error")
    });
    error_condition(&el)
}

#[test]
fn joins_that_are_refused() {
    let server = server();
    let mut alice = login(&server, "alice", "a");
    let mut bob = login(&server, "bob", "b");
    let r = room(&server, "locked");
    // A new room is locked until configured (§10.1.1): others get item-not-found.
    join(&mut alice, &r, "alice");
    bob.send(&format!(
        "<presence to='{r}/bob'><x xmlns='{MUC}'/></presence>"
    ));
    assert_eq!(expect_error(&mut bob, "presence"), "item-not-found");
    // No nickname (§7.2.1).
    bob.send(&format!("<presence to='{r}'><x xmlns='{MUC}'/></presence>"));
    assert_eq!(expect_error(&mut bob, "presence"), "jid-malformed");
    // A nickname too long for people to read.
    let long = "n".repeat(300);
    let open = room(&server, "open");
    instant(&mut alice, &open);
    bob.send(&format!(
        "<presence to='{open}/{long}'><x xmlns='{MUC}'/></presence>"
    ));
    assert_eq!(expect_error(&mut bob, "presence"), "not-acceptable");
    // The owner form is the owner's (§10.1.3): forbidden, and item-not-found while locked.
    let reply = iq(&mut bob, "get", &open, &format!("<query xmlns='{OWNER}'/>"));
    assert_eq!(error_condition(&reply), "forbidden");
    let reply = iq(&mut bob, "get", &r, &format!("<query xmlns='{OWNER}'/>"));
    assert_eq!(error_condition(&reply), "item-not-found");
    // A bad value in the form: not-acceptable, nothing changed.
    let form = format!(
        "<query xmlns='{OWNER}'><x xmlns='jabber:x:data' type='submit'>\
         <field var='muc#roomconfig_maxusers'><value>many</value></field></x></query>"
    );
    let reply = iq(&mut alice, "set", &r, &form);
    assert_eq!(error_condition(&reply), "not-acceptable");
    alice.assert_alive();
    bob.assert_alive();
}

#[test]
fn messages_that_are_refused() {
    let server = server();
    let mut alice = login(&server, "alice", "a");
    let mut bob = login(&server, "bob", "b");
    let r = room(&server, "talk");
    instant(&mut alice, &r);
    // Not an occupant: not-acceptable (§7.4).
    bob.send(&format!(
        "<message type='groupchat' to='{r}'><body>hi</body></message>"
    ));
    assert_eq!(expect_error(&mut bob, "message"), "not-acceptable");
    // No such room.
    bob.send(&format!(
        "<message type='groupchat' to='{}'><body>hi</body></message>",
        room(&server, "nowhere")
    ));
    assert_eq!(expect_error(&mut bob, "message"), "item-not-found");
    join(&mut bob, &r, "bob");
    // A private message of type groupchat (§7.5): bad-request.
    bob.send(&format!(
        "<message type='groupchat' to='{r}/alice'><body>psst</body></message>"
    ));
    assert_eq!(expect_error(&mut bob, "message"), "bad-request");
    // To a nick that is not there: item-not-found.
    bob.send(&format!(
        "<message type='chat' to='{r}/nobody'><body>psst</body></message>"
    ));
    assert_eq!(expect_error(&mut bob, "message"), "item-not-found");
    // A subject by a participant in a room where only moderators may (§8.1).
    bob.send(&format!(
        "<message type='groupchat' to='{r}'><subject>mine</subject></message>"
    ));
    assert_eq!(expect_error(&mut bob, "message"), "forbidden");
    // A private message does reach alice, from bob's occupant JID.
    bob.send(&format!(
        "<message type='chat' to='{r}/alice'><body>psst</body></message>"
    ));
    let pm = common::im::expect_message(&mut alice, "psst");
    assert_eq!(pm.attr("from"), Some(format!("{r}/bob").as_str()));
    // A forged stanza-id claiming to be the room's is replaced by the room's own.
    bob.send(&format!(
        "<message type='groupchat' to='{r}'><body>sid</body>\
         <stanza-id xmlns='urn:xmpp:sid:0' by='{r}' id='forged'/></message>"
    ));
    let m = common::im::expect_message(&mut alice, "sid");
    let ids: Vec<_> = m
        .children
        .iter()
        .filter(|c| c.name == "stanza-id")
        .collect();
    assert_eq!(ids.len(), 1, "{m}");
    assert_ne!(ids[0].attr("id"), Some("forged"));
}

#[test]
fn admin_rules_and_self_ping() {
    let server = server();
    let mut alice = login(&server, "alice", "a");
    let mut bob = login(&server, "bob", "b");
    let r = room(&server, "rules");
    instant(&mut alice, &r);
    join(&mut bob, &r, "bob");
    // XEP-0410: a self-ping answers while joined; someone not joined gets not-acceptable.
    let reply = iq(
        &mut bob,
        "get",
        &format!("{r}/bob"),
        "<ping xmlns='urn:xmpp:ping'/>",
    );
    assert_eq!(reply.attr("type"), Some("result"), "{reply}");
    let mut carol = login(&server, "carol", "c");
    let reply = iq(
        &mut carol,
        "get",
        &format!("{r}/alice"),
        "<ping xmlns='urn:xmpp:ping'/>",
    );
    assert_eq!(error_condition(&reply), "not-acceptable");
    // An iq from one occupant to another is relayed, and its answer comes back from
    // the occupant asked, under the asker's id.
    let id = new_id("v");
    bob.send(&format!(
        "<iq type='get' id='{id}' to='{r}/alice'><query xmlns='jabber:iq:version'/></iq>"
    ));
    let relayed = alice.expect_matching("the relayed iq", |el| {
        el.name == "iq" && el.attr("type") == Some("get")
    });
    assert_eq!(relayed.attr("from"), Some(format!("{r}/bob").as_str()));
    alice.send(&format!(
        "<iq type='result' id='{}' to='{r}/bob'><query xmlns='jabber:iq:version'>\
         <name>raw</name><version>1</version></query></iq>",
        relayed.attr("id").unwrap()
    ));
    let answer = bob.expect_iq_reply(&id);
    assert_eq!(answer.attr("type"), Some("result"), "{answer}");
    assert_eq!(answer.attr("from"), Some(format!("{r}/alice").as_str()));
    // A participant may not kick; nobody may kick the owner (§8.2).
    let kick =
        |nick: &str| format!("<query xmlns='{ADMIN}'><item nick='{nick}' role='none'/></query>");
    let reply = iq(&mut bob, "set", &r, &kick("alice"));
    assert_eq!(error_condition(&reply), "forbidden");
    let reply = iq(&mut alice, "set", &r, &kick("nobody"));
    assert_eq!(error_condition(&reply), "item-not-found");
    // Unknown roles and empty queries are bad requests.
    let reply = iq(
        &mut alice,
        "set",
        &r,
        &format!("<query xmlns='{ADMIN}'><item nick='bob' role='king'/></query>"),
    );
    assert_eq!(error_condition(&reply), "bad-request");
    let reply = iq(&mut alice, "set", &r, &format!("<query xmlns='{ADMIN}'/>"));
    assert_eq!(error_condition(&reply), "bad-request");
    // The last owner cannot step down (§10.6).
    let jid = server.jid("alice");
    let reply = iq(
        &mut alice,
        "set",
        &r,
        &format!("<query xmlns='{ADMIN}'><item jid='{jid}' affiliation='member'/></query>"),
    );
    assert_eq!(error_condition(&reply), "conflict");
    // The member list is for admins.
    let reply = iq(
        &mut bob,
        "get",
        &r,
        &format!("<query xmlns='{ADMIN}'><item affiliation='member'/></query>"),
    );
    assert_eq!(error_condition(&reply), "forbidden");
    // Disco of the room lists occupants to occupants only (§6.5).
    let reply = iq(
        &mut carol,
        "get",
        &r,
        "<query xmlns='http://jabber.org/protocol/disco#items'/>",
    );
    assert!(
        reply
            .child("query", "http://jabber.org/protocol/disco#items")
            .unwrap()
            .children
            .is_empty(),
        "{reply}"
    );
    let reply = iq(
        &mut bob,
        "get",
        &r,
        "<query xmlns='http://jabber.org/protocol/disco#items'/>",
    );
    assert_eq!(
        reply
            .child("query", "http://jabber.org/protocol/disco#items")
            .unwrap()
            .children
            .len(),
        2,
        "{reply}"
    );
    alice.assert_alive();
}

#[test]
fn a_session_that_ends_leaves_its_rooms() {
    let server = server();
    let mut alice = login(&server, "alice", "a");
    let r = room(&server, "bye");
    instant(&mut alice, &r);
    let mut bob = login(&server, "bob", "b");
    join(&mut bob, &r, "bob");
    drain(&mut alice);
    // bob's connection goes without a word: the room hears his session ended.
    drop(bob);
    let gone = alice.expect_matching("bob leaving", |el| {
        el.name == "presence"
            && el.attr("type") == Some("unavailable")
            && el.attr("from") == Some(format!("{r}/bob").as_str())
    });
    assert!(gone.has_child("x", USER));
    // So his nick is free for someone else.
    let mut carol = login(&server, "carol", "c");
    join(&mut carol, &r, "bob");
}

#[test]
fn the_service_is_discoverable() {
    let server = server();
    let mut alice = login(&server, "alice", "a");
    let domain = server.domain().to_string();
    let reply = iq(
        &mut alice,
        "get",
        &domain,
        "<query xmlns='http://jabber.org/protocol/disco#items'/>",
    );
    let conference = format!("conference.{domain}");
    assert!(reply.to_string().contains(&conference), "{reply}");
    let reply = iq(
        &mut alice,
        "get",
        &conference,
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    );
    let q = reply
        .child("query", "http://jabber.org/protocol/disco#info")
        .unwrap();
    let id = q
        .child("identity", "http://jabber.org/protocol/disco#info")
        .unwrap();
    assert_eq!(
        (id.attr("category"), id.attr("type")),
        (Some("conference"), Some("text"))
    );
    assert!(reply.to_string().contains(MUC));
    // Unknown iqs to the service: service-unavailable.
    let reply = iq(
        &mut alice,
        "get",
        &conference,
        "<query xmlns='jabber:iq:version'/>",
    );
    assert_eq!(error_condition(&reply), "service-unavailable");
}

/// A measurement, not a check (run it with `--ignored`): 2,000 groupchat messages from
/// one occupant fanned out to five, each reader on its own thread; prints messages
/// delivered per second.
#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn groupchat_fanout_rate() {
    const N: usize = 2000;
    const READERS: usize = 5;
    let server = server();
    for i in 0..READERS {
        server.add_user(&format!("r{i}"), "a fine password");
    }
    let mut alice = login(&server, "alice", "a");
    let r = room(&server, "bench");
    instant(&mut alice, &r);
    let mut readers = Vec::new();
    for i in 0..READERS {
        let mut c = login(&server, &format!("r{i}"), "r");
        join(&mut c, &r, &format!("r{i}"));
        readers.push(c);
    }
    drain(&mut alice);
    let start = std::time::Instant::now();
    let threads: Vec<_> = readers
        .into_iter()
        .map(|mut c| {
            std::thread::spawn(move || {
                common::im::expect_message(&mut c, &format!("m{}", N - 1));
            })
        })
        .collect();
    for i in 0..N {
        alice.send(&format!(
            "<message type='groupchat' to='{r}'><body>m{i}</body></message>"
        ));
    }
    for t in threads {
        t.join().unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let delivered = N * (READERS + 1);
    eprintln!(
        "groupchat fan-out: {N} messages to {} occupants in {secs:.2} s: {:.0} deliveries/s",
        READERS + 1,
        delivered as f64 / secs
    );
}

/// A power cut (SIGKILL) a moment after a persistent room was configured and a member
/// added: on restart the room, its members-only setting and the member are there (its
/// writes go through the storage's group commit, on the disk within milliseconds).
#[test]
fn a_persistent_room_survives_sigkill() {
    let mut server = server();
    let mut alice = login(&server, "alice", "a");
    let r = room(&server, "kept");
    join(&mut alice, &r, "alice");
    let form = format!(
        "<query xmlns='{OWNER}'><x xmlns='jabber:x:data' type='submit'>\
         <field var='muc#roomconfig_persistentroom'><value>1</value></field>\
         <field var='muc#roomconfig_membersonly'><value>1</value></field></x></query>"
    );
    let reply = iq(&mut alice, "set", &r, &form);
    assert_eq!(reply.attr("type"), Some("result"), "{reply}");
    let bob = server.jid("bob");
    let reply = iq(
        &mut alice,
        "set",
        &r,
        &format!("<query xmlns='{ADMIN}'><item jid='{bob}' affiliation='member'/></query>"),
    );
    assert_eq!(reply.attr("type"), Some("result"), "{reply}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    server.kill();
    server.restart();
    let mut bob = login(&server, "bob", "b");
    join(&mut bob, &r, "bob");
    let mut carol = login(&server, "carol", "c");
    carol.send(&format!(
        "<presence to='{r}/carol'><x xmlns='{MUC}'/></presence>"
    ));
    assert_eq!(
        expect_error(&mut carol, "presence"),
        "registration-required"
    );
}

/// §7.8.2: an invitation for someone offline waits in their offline storage and reaches
/// them at their next login, like any message.
#[test]
fn an_invitation_waits_for_someone_offline() {
    let server = server();
    let mut alice = login(&server, "alice", "a");
    let r = room(&server, "later");
    instant(&mut alice, &r);
    let bob = server.jid("bob");
    alice.send(&format!(
        "<message to='{r}'><x xmlns='{USER}'><invite to='{bob}'><reason>tea</reason></invite></x></message>"
    ));
    drain(&mut alice);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut bob = login(&server, "bob", "b");
    bob.send("<presence/>");
    let inv = bob.expect_matching("the invitation", |el| {
        el.name == "message"
            && el
                .child("x", USER)
                .is_some_and(|x| x.has_child("invite", USER))
    });
    assert_eq!(inv.attr("from"), Some(r.as_str()));
    assert!(inv.has_child("delay", "urn:xmpp:delay"), "{inv}");
}

/// A measurement, not a check (run it with `--ignored`): the server's resident memory
/// before and after one account makes 190 rooms (200 is `max_rooms`; 20 per account by
/// default, so ten accounts make 19 each) and fills each with 20 lines of history.
#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn memory_per_room() {
    let rss = |pid: u32| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    let server = server();
    let pid = server.pid().unwrap();
    let mut owners = Vec::new();
    for i in 0..10 {
        let name = format!("o{i}");
        server.add_user(&name, "a fine password");
        owners.push((name.clone(), login(&server, &name, "r")));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let before = rss(pid);
    for (name, c) in &mut owners {
        for j in 0..19 {
            let r = room(&server, &format!("{name}-{j}"));
            join(c, &r, name);
            for k in 0..20 {
                c.send(&format!(
                    "<message type='groupchat' to='{r}'><body>line {k} of a typical chat message in a family room</body></message>"
                ));
            }
        }
        drain(c);
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let after = rss(pid);
    eprintln!(
        "muc memory: {before} kB before, {after} kB after 190 rooms with 20 messages each: \
         {:.1} kB per room",
        (after.saturating_sub(before)) as f64 / 190.0
    );
}

/// XEP-0249: a direct invitation is a message between the two people; it reaches the
/// invitee as sent.
#[test]
fn a_direct_invitation_passes_unchanged() {
    let server = server();
    let mut alice = login(&server, "alice", "a");
    let mut bob = login(&server, "bob", "b");
    bob.send("<presence/>");
    drain(&mut bob);
    let r = room(&server, "direct");
    let bob_jid = server.jid("bob");
    alice.send(&format!(
        "<message to='{bob_jid}'><x xmlns='jabber:x:conference' jid='{r}' password='pw' \
         reason='come in'/></message>"
    ));
    let m = bob.expect_matching("the direct invitation", |el| {
        el.name == "message" && el.has_child("x", "jabber:x:conference")
    });
    let x = m.child("x", "jabber:x:conference").unwrap();
    assert_eq!(x.attr("jid"), Some(r.as_str()));
    assert_eq!(x.attr("password"), Some("pw"));
    assert_eq!(x.attr("reason"), Some("come in"));
}
