//! XEP-0077 In-Band Registration against a real hearth, under each `[registration]
//! policy`: slixmpp's own `xep_0077` plugin (Debian's python3-slixmpp 1.8) registering,
//! changing its password and removing its account; the raw client for the edges
//! (before TLS, reserved and taken names, one account per stream, XEP-0401 tokens sent
//! ahead, throttling per address); and after a removal, the database file holds no row
//! of the account.

mod common;

use std::time::Duration;

use common::client::{Conn, new_id};
use common::clients::slixmpp;
use common::xml::Node;
use common::{Server, ServerOpts};
use hearth::features::register::InviteStore as _;

const NS_REGISTER: &str = "jabber:iq:register";
const NS_FEATURE: &str = "http://jabber.org/features/iq-register";
const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
const NS_STREAMS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
const PW: &str = "a long passphrase";

fn server(policy: &str, extra: &str) -> Server {
    Server::start(ServerOpts {
        extra_toml: format!("[registration]\npolicy = \"{policy}\"\n{extra}"),
        ..ServerOpts::default()
    })
}

/// Stores an invitation in the running server's database, as the admin CLI would.
fn invite(server: &Server, token: &str, valid_secs: i64, uses: u32) {
    let storage = hearth::storage::Storage::open(&server.data_dir()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    storage
        .create_invite(token, now + valid_secs, uses, "test", "")
        .unwrap();
}

/// A raw client's register set for `user`, with `extra` inside the query; the reply.
fn register(conn: &mut Conn, user: &str, extra: &str) -> Node {
    let id = new_id("reg");
    conn.send(&format!(
        "<iq type='set' id='{id}'><query xmlns='{NS_REGISTER}'><username>{user}</username>\
         <password>{PW}</password>{extra}</query></iq>"
    ));
    conn.expect_iq_reply(&id)
}

fn error_condition(reply: &Node) -> Option<String> {
    assert_eq!(reply.attr("type"), Some("error"), "{reply}");
    reply
        .child("error", "jabber:client")
        .and_then(|e| e.condition(NS_STANZAS))
        .map(str::to_owned)
}

fn starttls(server: &Server) -> Conn {
    Conn::connect_starttls(server.c2s_addr(), server.domain(), &server.cert_path())
}

// -- slixmpp's xep_0077 plugin -------------------------------------------------------

/// Open policy: slixmpp registers, logs in to the new account, changes its password,
/// and removes the account; each step as the next login sees it.
#[test]
fn slixmpp_registers_changes_password_and_unregisters() {
    let server = server("open", "");
    let client = |pw: &str| slixmpp(&server, "newbie", pw, "SCRAM-SHA-256");
    let run = client(PW).run(&["register"]);
    run.assert_ok();
    run.expect_event("registered");
    let form = run.expect_event("register_form");
    assert_eq!(
        form["legacy"],
        serde_json::json!(["username", "password"]),
        "{run}"
    );
    run.expect_event("session_start");

    let run = client(PW).run(&["passwd", "--new-password", "the new one"]);
    run.assert_ok();
    run.expect_event("password_changed");
    assert_eq!(client(PW).run(&["login"]).code(), Some(2), "old password");
    client("the new one").run(&["login"]).assert_ok();
    // PLAIN checks the argon2id hash, SCRAM the keys: both were replaced.
    slixmpp(&server, "newbie", "the new one", "PLAIN")
        .run(&["login"])
        .assert_ok();

    let run = client("the new one").run(&["unregister"]);
    run.assert_ok();
    run.expect_event("unregistered");
    let run = client("the new one").run(&["login"]);
    assert_eq!(run.code(), Some(2), "the account is gone:\n{run}");
}

/// Closed policy: nothing offered, so slixmpp does not register, and cannot log in.
#[test]
fn slixmpp_cannot_register_when_closed() {
    let server = server("closed", "");
    let run = slixmpp(&server, "newbie", PW, "SCRAM-SHA-256").run(&["register"]);
    assert!(run.event("registered").is_none(), "{run}");
    assert!(run.event("register_form").is_none(), "{run}");
    assert_eq!(run.code(), Some(2), "{run}");
}

/// Invite policy: no token, a wrong one, a used one and an expired one are refused;
/// a valid one works once.
#[test]
fn slixmpp_registers_by_invitation_only() {
    let server = server("invite", "");
    invite(&server, "good-token", 3600, 1);
    invite(&server, "old-token", -10, 5);
    let client = |user: &str| slixmpp(&server, user, PW, "SCRAM-SHA-256");
    let refused = |user: &str, args: &[&str]| {
        let run = client(user).run(args);
        assert_eq!(run.code(), Some(1), "{run}");
        assert_eq!(
            run.expect_event("register_failed")["condition"],
            "forbidden",
            "{run}"
        );
    };
    refused("ann", &["register"]);
    let run = client("ann").run(&["register"]);
    let fields = &run.expect_event("register_form")["form_fields"];
    assert!(
        fields.as_array().unwrap().iter().any(|f| f == "token"),
        "{run}"
    );
    refused("ann", &["register", "--token", "wrong-token"]);
    refused("ann", &["register", "--token", "old-token"]);
    let run = client("ann").run(&["register", "--token", "good-token"]);
    run.assert_ok();
    run.expect_event("registered");
    refused("bea", &["register", "--token", "good-token"]);
    client("ann").run(&["login"]).assert_ok();
}

// -- the raw client --------------------------------------------------------------------

/// XEP-0077 §8: never before TLS; an iq there is a stanza before authentication.
#[test]
fn no_registration_before_tls() {
    let server = server("open", "");
    let mut conn = Conn::connect_plain(server.c2s_addr(), server.domain(), &server.cert_path());
    assert!(
        !conn.features.has_child("register", NS_FEATURE),
        "{}",
        conn.features
    );
    conn.send(&format!(
        "<iq type='set' id='r'><query xmlns='{NS_REGISTER}'><username>early</username>\
         <password>{PW}</password></query></iq>"
    ));
    let (elements, _) = conn.read_until_closed(Duration::from_secs(5));
    let error = elements
        .iter()
        .find(|e| e.name == "error")
        .unwrap_or_else(|| panic!("no stream error: {elements:?}"));
    assert_eq!(error.condition(NS_STREAMS), Some("not-authorized"));
    let conn = starttls(&server);
    assert!(
        conn.features.has_child("register", NS_FEATURE),
        "{}",
        conn.features
    );
}

/// Open policy, on one stream: the form, a reserved name, a name that cannot be one,
/// the account, a second one refused, then a login to the new account on the same
/// stream; on another stream the taken name is a conflict.
#[test]
fn raw_registration_edges() {
    let server = server("open", "per_address_per_hour = 10");
    let mut conn = starttls(&server);
    let id = new_id("form");
    conn.send(&format!(
        "<iq type='get' id='{id}'><query xmlns='{NS_REGISTER}'/></iq>"
    ));
    let form = conn.expect_iq_reply(&id);
    let query = form.child("query", NS_REGISTER).unwrap();
    assert!(query.has_child("username", NS_REGISTER) && query.has_child("password", NS_REGISTER));
    assert!(query.has_child("x", "jabber:x:data"), "{form}");

    for bad in ["admin", "Postmaster", "a b", "a@b"] {
        let reply = register(&mut conn, bad, "");
        assert_eq!(
            error_condition(&reply).as_deref(),
            Some("not-acceptable"),
            "{bad}"
        );
    }
    let reply = register(&mut conn, "Zoe", "");
    assert_eq!(reply.attr("type"), Some("result"), "{reply}");
    let reply = register(&mut conn, "zed", "");
    assert_eq!(
        error_condition(&reply).as_deref(),
        Some("not-allowed"),
        "{reply}"
    );
    // The name was normalized (PRECIS UsernameCaseMapped): log in as "zoe".
    conn.login_any("zoe", PW);
    conn.bind(Some("phone"));
    conn.assert_alive();

    let mut other = starttls(&server);
    let reply = register(&mut other, "ZOE", "");
    assert_eq!(
        error_condition(&reply).as_deref(),
        Some("conflict"),
        "{reply}"
    );
}

/// Closed policy: no feature, and a registration iq before login gets
/// `service-unavailable` (§3.1) on a stream that stays open.
#[test]
fn raw_closed_policy() {
    let server = server("closed", "");
    let mut conn = starttls(&server);
    assert!(
        !conn.features.has_child("register", NS_FEATURE),
        "{}",
        conn.features
    );
    let reply = register(&mut conn, "newbie", "");
    assert_eq!(
        error_condition(&reply).as_deref(),
        Some("service-unavailable")
    );
    server.add_user("alice", PW);
    conn.login_any("alice", PW);
    conn.bind(None);
    conn.assert_alive();
}

/// XEP-0401: the token inside the register set, or sent ahead in its own iq.
#[test]
fn raw_invitation_tokens() {
    let server = server("invite", "");
    invite(&server, "inside", 3600, 1);
    invite(&server, "ahead", 3600, 1);
    let mut conn = starttls(&server);
    let reply = register(&mut conn, "ann", "");
    assert_eq!(error_condition(&reply).as_deref(), Some("forbidden"));
    let reply = register(
        &mut conn,
        "ann",
        "<preauth xmlns='urn:xmpp:pars:0' token='inside'/>",
    );
    assert_eq!(reply.attr("type"), Some("result"), "{reply}");

    let mut conn = starttls(&server);
    conn.send("<iq type='set' id='pa'><preauth xmlns='urn:xmpp:pars:0' token='ahead'/></iq>");
    assert_eq!(conn.expect_iq_reply("pa").attr("type"), Some("result"));
    let reply = register(&mut conn, "bea", "");
    assert_eq!(reply.attr("type"), Some("result"), "{reply}");
    let mut conn = starttls(&server);
    let reply = register(
        &mut conn,
        "cy",
        "<preauth xmlns='urn:xmpp:pars:0' token='ahead'/>",
    );
    assert_eq!(
        error_condition(&reply).as_deref(),
        Some("forbidden"),
        "used up"
    );
    // The tokens are not in the file, only their hashes.
    let db = std::fs::read(server.data_dir().join("hearth.db")).unwrap();
    assert!(!db.windows(6).any(|w| w == b"inside"));
}

/// Open policy: a flood of registrations from one address is cut at the hourly
/// allowance (`resource-constraint`, type `wait`); another address still registers.
#[test]
fn registration_flood_from_one_address_is_throttled() {
    let server = server("open", "per_address_per_hour = 3");
    let mut refused = 0;
    for i in 0..6 {
        let mut conn = starttls(&server);
        let reply = register(&mut conn, &format!("flood{i}"), "");
        if reply.attr("type") == Some("error") {
            assert_eq!(
                error_condition(&reply).as_deref(),
                Some("resource-constraint")
            );
            let error = reply.child("error", "jabber:client").unwrap();
            assert_eq!(error.attr("type"), Some("wait"), "{reply}");
            refused += 1;
        }
    }
    assert_eq!(refused, 3);
    let mut conn = Conn::connect_plain_from(
        server.c2s_addr(),
        "127.0.0.2".parse().unwrap(),
        server.domain(),
        &server.cert_path(),
    );
    conn.starttls();
    let reply = register(&mut conn, "neighbour", "");
    assert_eq!(reply.attr("type"), Some("result"), "{reply}");
}

/// §3.2 end to end: ann registers, befriends bob, blocks someone, gets an offline
/// message and a waiting request, then removes her account while a second session is
/// open: she reads the result, both sessions get `not-authorized`, bob is told, and
/// the stopped server's file has no row of hers in any table.
#[test]
fn removal_leaves_no_row_behind() {
    let mut server = server("open", "");
    server.add_user("bob", PW);
    server.add_user("cy", PW);
    let mut reg = starttls(&server);
    assert_eq!(register(&mut reg, "ann", "").attr("type"), Some("result"));
    reg.login_any("ann", PW);
    reg.bind(Some("phone"));
    let mut ann = reg;
    let mut bob = Conn::login(
        server.c2s_addr(),
        server.domain(),
        &server.cert_path(),
        "bob",
        PW,
        Some("desk"),
    );
    let domain = server.domain().to_owned();
    for c in [&mut ann, &mut bob] {
        c.send("<iq type='get' id='r0'><query xmlns='jabber:iq:roster'/></iq>");
        c.expect_iq_reply("r0");
        c.send("<presence/>");
    }
    ann.send(&format!("<presence type='subscribe' to='bob@{domain}'/>"));
    bob.expect_matching("ann's request", |e| e.attr("type") == Some("subscribe"));
    bob.send(&format!("<presence type='subscribed' to='ann@{domain}'/>"));
    ann.expect_matching("bob's presence", |e| {
        e.name == "presence" && e.attr("from") == Some(&*format!("bob@{domain}/desk"))
    });
    ann.send(
        "<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='spam@example.org'/></block></iq>",
    );
    ann.expect_iq_reply("b1");
    // While she is offline (only the second session, not available): a message waits
    // and cy asks to see her presence.
    let mut ann2 = Conn::login(
        server.c2s_addr(),
        server.domain(),
        &server.cert_path(),
        "ann",
        PW,
        Some("tablet"),
    );
    ann.send("<presence type='unavailable'/>");
    let mut cy = Conn::login(
        server.c2s_addr(),
        server.domain(),
        &server.cert_path(),
        "cy",
        PW,
        None,
    );
    cy.send("<presence/>");
    cy.send(&format!("<presence type='subscribe' to='ann@{domain}'/>"));
    bob.send(&format!(
        "<message type='chat' to='ann@{domain}'><body>for later</body></message>"
    ));
    bob.assert_alive();
    cy.assert_alive();

    ann.send(&format!(
        "<iq type='set' id='bye' to='{domain}'><query xmlns='{NS_REGISTER}'><remove/></query></iq>"
    ));
    let reply = ann.expect_iq_reply("bye");
    assert_eq!(reply.attr("type"), Some("result"), "{reply}");
    for c in [&mut ann, &mut ann2] {
        let (elements, _) = c.read_until_closed(Duration::from_secs(5));
        let error = elements.iter().find(|e| e.name == "error");
        assert_eq!(
            error.and_then(|e| e.condition(NS_STREAMS)),
            Some("not-authorized"),
            "{elements:?}"
        );
    }
    // She saw bob's presence (RFC 6121 §2.5.2 as for a removed item): `unsubscribe`.
    bob.expect_matching("ann's unsubscribe", |e| {
        e.name == "presence" && e.attr("type") == Some("unsubscribe")
    });
    bob.expect_matching("the roster push removing ann", |e| {
        e.name == "iq"
            && e.child("query", "jabber:iq:roster")
                .and_then(|q| q.child("item", "jabber:iq:roster"))
                .is_some_and(|i| i.attr("subscription") == Some("remove"))
    });
    cy.expect_matching("the refusal", |e| {
        e.name == "presence" && e.attr("type") == Some("unsubscribed")
    });
    // She cannot log in any more.
    let mut again = starttls(&server);
    assert!(
        again
            .authenticate(&mut common::sasl::Plain {
                username: "ann".into(),
                password: PW.into(),
            })
            .is_err()
    );
    drop(again);
    for c in [bob, cy] {
        c.close();
    }
    server.stop();

    let db = rusqlite::Connection::open(server.data_dir().join("hearth.db")).unwrap();
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut checked = 0;
    for table in &tables {
        let columns: Vec<String> = db
            .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for (column, value) in [
            ("localpart", "ann".to_owned()),
            ("jid", format!("ann@{domain}")),
        ] {
            if columns.iter().any(|c| c == column) {
                let n: i64 = db
                    .query_row(
                        &format!("SELECT COUNT(*) FROM {table} WHERE {column} = ?1"),
                        [&value],
                        |r| r.get(0),
                    )
                    .unwrap();
                assert_eq!(n, 0, "{table}.{column} = {value}");
                checked += 1;
            }
        }
    }
    // accounts, scram_keys, roster_items (twice), roster_groups (twice), roster_versions,
    // subscription_requests (twice), offline_messages, blocklist (twice), last_activity.
    assert!(checked >= 13, "{checked} columns checked in {tables:?}");
    // bob and cy are still there.
    let n: i64 = db
        .query_row("SELECT COUNT(*) FROM accounts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);
}
