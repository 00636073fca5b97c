//! XEP-0191 (Blocking Command) and XEP-0012 (Last Activity) against a real hearth with
//! the raw test client.

mod common;

use common::client::{Conn, NS_CLIENT, NS_STANZA_ERRORS, new_id};
use common::im::*;
use common::xml::Node;

const NS_BLOCKING: &str = "urn:xmpp:blocking";
const NS_BLOCKING_ERRORS: &str = "urn:xmpp:blocking:errors";
const NS_LAST: &str = "jabber:iq:last";

fn block_iq(c: &mut Conn, ty: &str, inner: &str) -> Node {
    let id = new_id("block");
    c.send(&format!("<iq type='{ty}' id='{id}'>{inner}</iq>"));
    c.expect_iq_reply(&id)
}

fn blocklist(c: &mut Conn) -> Vec<String> {
    let r = block_iq(c, "get", &format!("<blocklist xmlns='{NS_BLOCKING}'/>"));
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    r.child("blocklist", NS_BLOCKING)
        .expect("blocklist")
        .children
        .iter()
        .filter_map(|i| i.attr("jid").map(str::to_owned))
        .collect()
}

fn expect_block_push(c: &mut Conn, name: &str) -> Node {
    let push = c.expect_matching(&format!("a {name} push"), |el| {
        el.name == "iq" && el.attr("type") == Some("set") && el.has_child(name, NS_BLOCKING)
    });
    push.child(name, NS_BLOCKING).unwrap().clone()
}

fn last(c: &mut Conn, to: &str) -> Node {
    let id = new_id("last");
    c.send(&format!(
        "<iq type='get' id='{id}' to='{to}'><query xmlns='{NS_LAST}'/></iq>"
    ));
    c.expect_iq_reply(&id)
}

#[test]
fn block_and_unblock() {
    let server = server();
    let (aj, bj) = (server.jid("alice"), server.jid("bob"));
    let mut phone = login(&server, "alice", "phone");
    let mut laptop = login(&server, "alice", "laptop");
    let mut b = login(&server, "bob", "desk");
    for c in [&mut phone, &mut laptop, &mut b] {
        roster_get(c, None);
        presence(c, "");
    }
    befriend(&server, &mut phone, "alice", &mut b, "bob");
    drain(&mut laptop);
    assert!(blocklist(&mut phone).is_empty());
    assert!(blocklist(&mut laptop).is_empty());

    // §3.2: block; the result, a push to each resource that asked for the list, and
    // bob sees alice go offline.
    let r = block_iq(
        &mut phone,
        "set",
        &format!("<block xmlns='{NS_BLOCKING}'><item jid='{bj}'/></block>"),
    );
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    for c in [&mut phone, &mut laptop] {
        let push = expect_block_push(c, "block");
        assert_eq!(push.children[0].attr("jid"), Some(bj.as_str()));
    }
    expect_presence(&mut b, &format!("{aj}/phone"), Some("unavailable"));
    assert_eq!(blocklist(&mut laptop), [bj.as_str()]);

    // §3.5: bob's message bounces as if alice did not exist; alice sees nothing.
    chat(&mut b, &aj, "let me in");
    let err = b.expect_matching("the bounce", |e| e.name == "message");
    assert_eq!(error_condition(&err), "service-unavailable");
    // So does an iq to her resource.
    let id = b.send_ping(&format!("{aj}/phone"));
    assert_eq!(
        error_condition(&b.expect_iq_reply(&id)),
        "service-unavailable"
    );
    // And his presence no longer reaches her.
    presence(&mut b, "<status>knocking</status>");
    drain(&mut b);
    let seen = drain(&mut phone);
    assert!(
        seen.iter()
            .all(|e| e.name != "message" && e.name != "presence"),
        "{seen:?}"
    );

    // §3.6: alice writing to bob is refused with <blocked/>.
    chat(&mut phone, &bj, "hello?");
    let err = phone.expect_matching("the error", |e| e.name == "message");
    assert_eq!(error_condition(&err), "not-acceptable");
    let e = err.child("error", NS_CLIENT).unwrap();
    assert!(e.has_child("blocked", NS_BLOCKING_ERRORS), "{err}");
    // `cancel`, as in the XEP's example (and Prosody, ejabberd): retrying will not help.
    assert_eq!(e.attr("type"), Some("cancel"), "{err}");
    assert!(drain(&mut b).iter().all(|e| e.name != "message"));

    // §3.3: unblock everyone; presence flows again.
    let r = block_iq(
        &mut laptop,
        "set",
        &format!("<unblock xmlns='{NS_BLOCKING}'/>"),
    );
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    for c in [&mut phone, &mut laptop] {
        assert!(expect_block_push(c, "unblock").children.is_empty());
    }
    expect_presence(&mut b, &format!("{aj}/phone"), None);
    chat(&mut b, &aj, "back again");
    expect_message(&mut phone, "back again");
    assert!(blocklist(&mut phone).is_empty());

    // Bad requests.
    let r = block_iq(
        &mut phone,
        "set",
        &format!("<block xmlns='{NS_BLOCKING}'/>"),
    );
    assert_eq!(error_condition(&r), "bad-request");
    let r = block_iq(
        &mut phone,
        "set",
        &format!("<block xmlns='{NS_BLOCKING}'><item jid='@@'/></block>"),
    );
    assert_eq!(error_condition(&r), "jid-malformed");

    // Blocking survives a restart of the session: carol blocked, then a new login.
    block_iq(
        &mut phone,
        "set",
        &format!(
            "<block xmlns='{NS_BLOCKING}'><item jid='{}'/></block>",
            server.jid("carol")
        ),
    );
    phone.close();
    let mut c = login(&server, "carol", "pc");
    chat(&mut c, &aj, "hi");
    let err = c.expect_matching("the bounce", |e| e.name == "message");
    assert_eq!(
        err.child("error", NS_CLIENT)
            .and_then(|e| e.condition(NS_STANZA_ERRORS)),
        Some("service-unavailable")
    );
}

/// An account deleted and made again with `hearth user` while the server runs starts
/// with an empty blocklist: the old one is not kept in the server's memory.
#[test]
fn a_recreated_account_does_not_inherit_the_old_blocklist() {
    let server = server();
    let (aj, bj) = (server.jid("alice"), server.jid("bob"));
    let mut a = login(&server, "alice", "phone");
    let r = block_iq(
        &mut a,
        "set",
        &format!("<block xmlns='{NS_BLOCKING}'><item jid='{bj}'/></block>"),
    );
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    a.close();
    let hearth = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hearth"))
            .args(args)
            .arg("--config")
            .arg(server.config_path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    };
    hearth(&["user", "del", "alice"]);
    server.add_user("alice", "a fine password");
    // bob's message to the new, offline alice is stored, not refused as blocked.
    let mut b = login(&server, "bob", "desk");
    chat(&mut b, &aj, "hello again");
    assert!(drain(&mut b).is_empty(), "the message was refused");
    let mut a = login(&server, "alice", "phone");
    assert!(blocklist(&mut a).is_empty());
    presence(&mut a, "");
    expect_message(&mut a, "hello again");
}

#[test]
fn last_activity_of_contacts() {
    let server = server();
    let (aj, bj) = (server.jid("alice"), server.jid("bob"));
    let mut a = login(&server, "alice", "phone");
    let mut b = login(&server, "bob", "sensor");
    for c in [&mut a, &mut b] {
        roster_get(c, None);
        presence(c, "");
    }
    befriend(&server, &mut a, "alice", &mut b, "bob");

    // Online: seconds='0' (XEP-0012 §4).
    let r = last(&mut a, &bj);
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    assert_eq!(r.attr("from"), Some(bj.as_str()));
    assert_eq!(
        r.child("query", NS_LAST).unwrap().attr("seconds"),
        Some("0")
    );

    // Offline: seconds since, and the last status.
    b.send("<presence type='unavailable'><status>21.5 °C</status></presence>");
    expect_presence(&mut a, &format!("{bj}/sensor"), Some("unavailable"));
    let r = last(&mut a, &bj);
    let q = r.child("query", NS_LAST).expect("query");
    let secs: u64 = q.attr("seconds").unwrap().parse().unwrap();
    assert!(secs < 60, "{r}");
    assert_eq!(q.text, "21.5 °C");

    // Someone not subscribed may not know; nobody learns about made-up accounts.
    let mut c = login(&server, "carol", "pc");
    assert_eq!(error_condition(&last(&mut c, &bj)), "forbidden");
    assert_eq!(
        error_condition(&last(&mut c, &server.jid("nobody"))),
        "service-unavailable"
    );
    // One's own account is fine.
    let r = last(&mut a, &aj);
    assert_eq!(
        r.child("query", NS_LAST).unwrap().attr("seconds"),
        Some("0")
    );
}

/// Issue 14: a blocklist that cannot be read must not turn blocking off. Alice blocked
/// mallory and went offline; then her blocklist cannot be read (the table is renamed
/// behind the server's back, as a damaged file would behave). Mallory's message to her is
/// not stored: he gets `internal-server-error` of type `wait`, the log names the
/// session, and once the list is readable again alice's offline messages hold nothing
/// from him.
#[test]
fn unreadable_blocklist_fails_closed() {
    let server = server();
    let mj = server.jid("mallory");
    server.add_user("mallory", "mallory's password");
    let mut alice = login(&server, "alice", "phone");
    let r = block_iq(
        &mut alice,
        "set",
        &format!("<block xmlns='{NS_BLOCKING}'><item jid='{mj}'/></block>"),
    );
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    alice.close();
    // Alice's last session is gone, and with it the cached list.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let db = rusqlite::Connection::open(server.data_dir().join("hearth.db")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    db.execute_batch("ALTER TABLE blocklist RENAME TO blocklist_away")
        .unwrap();

    let mut mallory = Conn::login(
        server.c2s_addr(),
        server.domain(),
        &server.cert_path(),
        "mallory",
        "mallory's password",
        Some("x"),
    );
    let id = new_id("m");
    mallory.send(&format!(
        "<message to='{}' id='{id}' type='chat'><body>let me in</body></message>",
        server.jid("alice")
    ));
    let err = mallory.expect_matching("the error", |el| el.attr("id") == Some(id.as_str()));
    assert_eq!(err.attr("type"), Some("error"), "{err}");
    let e = err.child("error", NS_CLIENT).expect("<error/>");
    assert_eq!(e.attr("type"), Some("wait"), "{err}");
    assert!(
        e.has_child("internal-server-error", NS_STANZA_ERRORS),
        "{err}"
    );
    let log = server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("blocking status is unknown") && l.contains("c2s")),
        "{log}"
    );

    db.execute_batch("ALTER TABLE blocklist_away RENAME TO blocklist")
        .unwrap();
    let mut alice = login(&server, "alice", "phone");
    presence(&mut alice, "");
    let got = drain(&mut alice);
    assert!(
        !got.iter().any(|el| el.to_string().contains("let me in")),
        "the blocked sender's message got through: {got:?}"
    );
}
