//! XEP-0313 Message Archive Management (with XEP-0059 paging and XEP-0359 stanza ids):
//! a real client library (slixmpp's xep_0313 plugin) pages through 1,000 archived
//! messages in order, both ways; the raw client checks the stanza ids, the offline store
//! pointing at the archive instead of a second copy, and the errors for bad queries.

mod common;

use common::client::{Conn, NS_CLIENT, new_id};
use common::clients::slixmpp;
use common::im::*;
use common::xml::Node;

const PW: &str = "a fine password";
const NS_MAM: &str = "urn:xmpp:mam:2";
const NS_RSM: &str = "http://jabber.org/protocol/rsm";
const NS_SID: &str = "urn:xmpp:sid:0";
const NS_FORWARD: &str = "urn:xmpp:forward:0";
const NS_HINTS: &str = "urn:xmpp:hints";

/// Sends `n` chat messages `prefix0`… from `c` to `to`, then waits for a ping's answer so
/// that all have been handled.
fn send_many(c: &mut Conn, to: &str, prefix: &str, n: usize) {
    let mut batch = String::new();
    for i in 0..n {
        batch.push_str(&format!(
            "<message type='chat' to='{to}' id='m{i}'><body>{prefix}{i}</body></message>"
        ));
        if batch.len() > 16 * 1024 {
            c.send(&batch);
            batch.clear();
        }
    }
    if !batch.is_empty() {
        c.send(&batch);
    }
    let pong = c.ping(&to[to.find('@').map_or(0, |i| i + 1)..]);
    assert_eq!(pong.attr("type"), Some("result"), "{pong}");
}

/// Runs a query (the inner XML of `<query/>`) and returns the results that came before
/// the answer, and the answer.
fn query(c: &mut Conn, inner: &str) -> (Vec<Node>, Node) {
    let id = new_id("mam");
    c.send(&format!(
        "<iq type='set' id='{id}'><query xmlns='{NS_MAM}' queryid='q-{id}'>{inner}</query></iq>"
    ));
    let mut results = Vec::new();
    loop {
        let el = c.expect_element("a MAM result or the answer");
        if el.name == "iq" && el.attr("id") == Some(id.as_str()) {
            return (results, el);
        }
        if let Some(r) = el.child("result", NS_MAM) {
            assert_eq!(r.attr("queryid"), Some(format!("q-{id}").as_str()), "{el}");
            results.push(el);
        }
    }
}

fn body_of(result: &Node) -> String {
    result
        .child("result", NS_MAM)
        .and_then(|r| r.child("forwarded", NS_FORWARD))
        .and_then(|f| f.child("message", NS_CLIENT))
        .and_then(|m| m.child("body", NS_CLIENT))
        .map(|b| b.text.clone())
        .unwrap_or_else(|| panic!("no forwarded body in {result}"))
}

fn rsm(max: usize, extra: &str) -> String {
    format!("<set xmlns='{NS_RSM}'><max>{max}</max>{extra}</set>")
}

fn form(fields: &[(&str, &str)]) -> String {
    let mut x = format!(
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>\
         <value>{NS_MAM}</value></field>"
    );
    for (k, v) in fields {
        x.push_str(&format!("<field var='{k}'><value>{v}</value></field>"));
    }
    x.push_str("</x>");
    x
}

/// The test: "a MAM query pages through 1,000 archived messages in order", with
/// slixmpp's own XEP-0313 and XEP-0059 code, forward and from the newest page back; the
/// recipient was offline, so the offline store points at the archive (one copy on disk)
/// and delivers the messages stamped with their archive ids.
#[test]
fn slixmpp_pages_through_a_thousand_messages_in_order() {
    let server = server();
    let (alice, bob) = (server.jid("alice"), server.jid("bob"));
    let mut a = login(&server, "alice", "phone");
    send_many(&mut a, &bob, "m", 1000);

    let expected: Vec<String> = (0..1000).map(|i| format!("m{i}")).collect();
    let run = slixmpp(&server, "bob", PW, "SCRAM-SHA-256").run(&["mam", "--max", "50"]);
    run.assert_ok();
    let mam = run.expect_event("mam");
    let bodies: Vec<String> = serde_json::from_value(mam["bodies"].clone()).unwrap();
    assert_eq!(bodies, expected);
    // 20 full pages (then an empty answer, which tells slixmpp it is over).
    assert_eq!(mam["pages"], 20);
    let ids: Vec<String> = serde_json::from_value(mam["ids"].clone()).unwrap();

    // Alice's archive, newest page first, with a `with` filter: the same, in order.
    let run = slixmpp(&server, "alice", PW, "SCRAM-SHA-256").run(&[
        "mam",
        "--max",
        "100",
        "--reverse",
        "--with",
        &bob,
    ]);
    run.assert_ok();
    let mam = run.expect_event("mam");
    let mut back: Vec<String> = serde_json::from_value(mam["bodies"].clone()).unwrap();
    back.reverse();
    assert_eq!(back, expected);

    // On the disk: the offline rows point at bob's archive rows, whose XML is not repeated.
    {
        let db = rusqlite::Connection::open(server.data_dir().join("hearth.db")).unwrap();
        let (refs, bytes): (i64, i64) = db
            .query_row(
                "SELECT count(archive_id), COALESCE(SUM(bytes), 0) FROM offline_messages
                  WHERE localpart = 'bob'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(refs, 1000);
        let inline: i64 = db
            .query_row(
                "SELECT count(*) FROM offline_messages WHERE stanza LIKE '%<body>%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(inline, 0);
        assert!(bytes < 1000 * 200, "{bytes} bytes of offline rows");
    }

    // Bob comes online: the offline messages, in order, each with its archive id and delay.
    let mut b = login(&server, "bob", "desk");
    b.send("<presence/>");
    for (i, id) in ids.iter().enumerate() {
        let m = b.expect_matching("an offline message", |e| e.name == "message");
        assert_eq!(
            m.child("body", NS_CLIENT).map(|b| b.text.as_str()),
            Some(format!("m{i}").as_str())
        );
        let sid = m.child("stanza-id", NS_SID).expect("stanza-id");
        assert_eq!(sid.attr("by"), Some(bob.as_str()));
        assert_eq!(sid.attr("id"), Some(id.as_str()));
        assert!(m.has_child("delay", NS_DELAY), "{m}");
        assert_eq!(m.attr("from").map(|f| f.starts_with(&alice)), Some(true));
    }
    // Taken once: the archive is still whole, the offline store empty.
    let (all, fin) = query(&mut b, &rsm(250, "<before/>"));
    assert_eq!(all.len(), 250);
    assert_eq!(body_of(&all[249]), "m999");
    assert_eq!(fin.attr("type"), Some("result"));
    let db = rusqlite::Connection::open(server.data_dir().join("hearth.db")).unwrap();
    let left: i64 = db
        .query_row("SELECT count(*) FROM offline_messages", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0);
}

/// The same with a second library: python-nbxmpp (Gajim's), its MAM module paging with
/// RSM `<after/>` until `<fin complete='true'/>`.
#[test]
fn nbxmpp_pages_through_a_thousand_messages_in_order() {
    let server = server();
    let bob = server.jid("bob");
    let mut a = login(&server, "alice", "phone");
    send_many(&mut a, &bob, "n", 1000);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/nbxmpp_mam.py");
    let out = std::process::Command::new("/usr/bin/python3")
        .args([
            script,
            "--port",
            &server.c2s_port().to_string(),
            "--jid",
            &bob,
        ])
        .args(["--password", PW, "--max", "100", "--timeout", "60"])
        .output()
        .expect("run /usr/bin/python3 (apt-get install python3-nbxmpp)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "nbxmpp_mam.py failed (is python3-nbxmpp installed?): {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mam: serde_json::Value = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "mam")
        .unwrap_or_else(|| panic!("no mam event in {stdout}"));
    let bodies: Vec<String> = serde_json::from_value(mam["bodies"].clone()).unwrap();
    let expected: Vec<String> = (0..1000).map(|i| format!("n{i}")).collect();
    assert_eq!(bodies, expected);
    assert_eq!(mam["pages"], 10);
}

/// Paging by hand: RSM after/before, #extended before-id/after-id, `complete`, the
/// page-size clamp, and a live message stamped with the same id the archive gives.
#[test]
fn rsm_paging_stanza_ids_and_complete() {
    let server = server();
    let bob = server.jid("bob");
    let mut a = login(&server, "alice", "phone");
    let mut b = login(&server, "bob", "desk");
    b.send("<presence/>");
    send_many(&mut a, &bob, "x", 300);
    let mut live_ids = Vec::new();
    for _ in 0..300 {
        let m = b.expect_matching("a message", |e| e.name == "message");
        let sid = m
            .child("stanza-id", NS_SID)
            .expect("stanza-id on a live message");
        assert_eq!(sid.attr("by"), Some(bob.as_str()));
        live_ids.push(sid.attr("id").unwrap().to_string());
    }

    // More than the clamp asked: 250 at most, not complete.
    let (page, fin) = query(&mut b, &rsm(1000, ""));
    assert_eq!(page.len(), 250);
    let f = fin.child("fin", NS_MAM).expect("fin");
    assert_eq!(f.attr("complete"), None);
    let set = f.child("set", NS_RSM).unwrap();
    assert_eq!(set.child("first", NS_RSM).unwrap().text, live_ids[0]);
    let last = set.child("last", NS_RSM).unwrap().text.clone();
    assert_eq!(last, live_ids[249]);
    // Each result's id is the stanza-id the live message carried.
    for (r, id) in page.iter().zip(&live_ids) {
        assert_eq!(
            r.child("result", NS_MAM).unwrap().attr("id"),
            Some(id.as_str())
        );
        assert_eq!(r.attr("to"), Some(b.full_jid()));
    }
    // The rest, after the last: complete.
    let (rest, fin) = query(&mut b, &rsm(100, &format!("<after>{last}</after>")));
    assert_eq!(rest.len(), 50);
    assert_eq!(body_of(&rest[49]), "x299");
    assert_eq!(
        fin.child("fin", NS_MAM).unwrap().attr("complete"),
        Some("true")
    );
    // Before an id in the middle, from the #extended form.
    let (before, _) = query(
        &mut b,
        &format!("{}{}", form(&[("before-id", &live_ids[100])]), rsm(10, "")),
    );
    let bodies: Vec<String> = before.iter().map(body_of).collect();
    assert_eq!(
        bodies,
        (90..100).map(|i| format!("x{i}")).collect::<Vec<_>>()
    );
    let (after, _) = query(
        &mut b,
        &format!("{}{}", form(&[("after-id", &live_ids[10])]), rsm(2, "")),
    );
    assert_eq!(
        after.iter().map(body_of).collect::<Vec<_>>(),
        ["x11", "x12"]
    );
    // A `with` filter naming nobody they talked to: empty, complete.
    let (none, fin) = query(&mut b, &form(&[("with", "carol@nowhere.example")]));
    assert!(none.is_empty());
    let f = fin.child("fin", NS_MAM).unwrap();
    assert_eq!(f.attr("complete"), Some("true"));
    assert!(!f.child("set", NS_RSM).unwrap().has_child("first", NS_RSM));
    // A start in the future: nothing.
    let (none, _) = query(&mut b, &form(&[("start", "2999-01-01T00:00:00Z")]));
    assert!(none.is_empty());
}

/// What is not archived, forged ids, preferences, and the errors for bad queries.
#[test]
fn what_is_kept_and_bad_queries() {
    let server = server();
    let (bob, carol) = (server.jid("bob"), server.jid("carol"));
    let mut a = login(&server, "alice", "phone");
    let mut b = login(&server, "bob", "desk");
    b.send("<presence/>");
    // A forged stanza-id claiming to be bob's archive's is removed; no-store is not
    // archived; groupchat and headline are not; a chat state alone is not.
    a.send(&format!(
        "<message type='chat' to='{bob}'><body>forged</body>\
         <stanza-id xmlns='{NS_SID}' by='{bob}' id='1'/></message>\
         <message type='chat' to='{bob}'><body>secret</body><no-store xmlns='{NS_HINTS}'/></message>\
         <message type='headline' to='{bob}'><body>news</body></message>\
         <message type='chat' to='{bob}'><active xmlns='http://jabber.org/protocol/chatstates'/></message>\
         <message type='chat' to='{bob}'><body>kept</body></message>"
    ));
    let forged = b.expect_matching("forged", |e| e.name == "message");
    let sids: Vec<&Node> = forged
        .children
        .iter()
        .filter(|c| c.is("stanza-id", NS_SID))
        .collect();
    assert_eq!(sids.len(), 1, "{forged}");
    assert_ne!(sids[0].attr("id"), Some("1"));
    let body = |e: &Node, text: &str| {
        e.name == "message" && e.child("body", NS_CLIENT).is_some_and(|b| b.text == text)
    };
    let secret = b.expect_matching("secret", |e| body(e, "secret"));
    assert!(!secret.has_child("stanza-id", NS_SID), "{secret}");
    b.expect_matching("kept", |e| body(e, "kept"));
    let (page, _) = query(&mut b, "");
    let bodies: Vec<String> = page.iter().map(body_of).collect();
    assert_eq!(bodies, ["forged", "kept"]);

    // Errors, each answered and nothing else disturbed.
    let err = |c: &mut Conn, inner: &str| error_condition(&query(c, inner).1);
    assert_eq!(err(&mut b, &form(&[("colour", "blue")])), "bad-request");
    assert_eq!(
        err(&mut b, &form(&[("start", "last tuesday")])),
        "bad-request"
    );
    assert_eq!(
        err(&mut b, &rsm(10, "<after>999999999</after>")),
        "item-not-found"
    );
    assert_eq!(
        err(&mut b, &rsm(10, "<after>not-an-id</after>")),
        "item-not-found"
    );
    assert_eq!(
        err(&mut b, &rsm(10, "<index>3</index>")),
        "feature-not-implemented"
    );
    // Another user's archive is theirs (forbidden, RFC 6121 §8.5.2.1.3's server answers).
    let id = new_id("mam");
    a.send(&format!(
        "<iq type='set' id='{id}' to='{bob}'><query xmlns='{NS_MAM}'/></iq>"
    ));
    assert_eq!(error_condition(&a.expect_iq_reply(&id)), "forbidden");
    // An id from bob's archive is not in alice's.
    let (mine, _) = query(&mut b, &rsm(1, ""));
    let bob_id = mine[0]
        .child("result", NS_MAM)
        .unwrap()
        .attr("id")
        .unwrap()
        .to_string();
    let (alice_page, _) = query(&mut a, &rsm(1, ""));
    assert!(!alice_page.is_empty());
    assert_eq!(
        err(&mut a, &rsm(10, &format!("<after>{bob_id}</after>"))),
        "item-not-found"
    );

    // The query form.
    let id = new_id("form");
    b.send(&format!(
        "<iq type='get' id='{id}'><query xmlns='{NS_MAM}'/></iq>"
    ));
    let r = b.expect_iq_reply(&id);
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let x = r
        .child("query", NS_MAM)
        .and_then(|q| q.child("x", "jabber:x:data"))
        .expect("form");
    let vars: Vec<&str> = x.children.iter().filter_map(|f| f.attr("var")).collect();
    assert!(vars.contains(&"with") && vars.contains(&"before-id"), "{r}");

    // Preferences: default, then never carol (bob's contact-to-be), always roster.
    let prefs = |c: &mut Conn, body: Option<&str>| -> Node {
        let id = new_id("prefs");
        match body {
            None => c.send(&format!(
                "<iq type='get' id='{id}'><prefs xmlns='{NS_MAM}'/></iq>"
            )),
            Some(b) => c.send(&format!("<iq type='set' id='{id}'>{b}</iq>")),
        }
        c.expect_iq_reply(&id)
    };
    let p = prefs(&mut b, None);
    assert_eq!(
        p.child("prefs", NS_MAM).and_then(|p| p.attr("default")),
        Some("always")
    );
    let set = format!(
        "<prefs xmlns='{NS_MAM}' default='always'><always/><never><jid>{carol}</jid></never></prefs>"
    );
    let p = prefs(&mut b, Some(&set));
    assert_eq!(p.attr("type"), Some("result"), "{p}");
    let never = p
        .child("prefs", NS_MAM)
        .and_then(|p| p.child("never", NS_MAM))
        .and_then(|n| n.child("jid", NS_MAM))
        .map(|j| j.text.clone());
    assert_eq!(never.as_deref(), Some(carol.as_str()));
    assert_eq!(
        error_condition(&prefs(
            &mut b,
            Some(&format!("<prefs xmlns='{NS_MAM}' default='sometimes'/>"))
        )),
        "bad-request"
    );
    let mut c = login(&server, "carol", "pad");
    c.send(&format!(
        "<message type='chat' to='{bob}'><body>from carol</body></message>"
    ));
    let m = b.expect_matching("carol's", |e| e.name == "message");
    assert!(!m.has_child("stanza-id", NS_SID), "{m}");
    let (page, _) = query(&mut b, &rsm(10, "<before/>"));
    assert_eq!(body_of(page.last().unwrap()), "kept");
    // Still alive after all that.
    b.assert_alive();
    a.assert_alive();
}

/// Archive ids keep growing across a restart (the server hands them out from memory,
/// starting after the highest stored), and what was archived before the restart, also in
/// the last milliseconds before a clean stop, is still there.
#[test]
fn ids_keep_growing_across_a_restart() {
    let mut server = server();
    let bob = server.jid("bob");
    let mut a = login(&server, "alice", "phone");
    send_many(&mut a, &bob, "before", 3);
    drop(a);
    assert!(server.stop().success());
    server.restart();
    let mut a = login(&server, "alice", "phone");
    send_many(&mut a, &bob, "after", 2);
    let mut b = login(&server, "bob", "desk");
    let (page, _) = query(&mut b, "");
    let bodies: Vec<String> = page.iter().map(body_of).collect();
    assert_eq!(
        bodies,
        ["before0", "before1", "before2", "after0", "after1"]
    );
    let ids: Vec<i64> = page
        .iter()
        .map(|r| {
            r.child("result", NS_MAM)
                .unwrap()
                .attr("id")
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
}
