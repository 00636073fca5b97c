//! XEP-0401 Easy User Onboarding against a real hearth: `hearth invite` prints an
//! `xmpp:` URI whose token slixmpp (`xep_0077` with `<preauth/>`) registers with; the
//! invitation's effects (household, the inviter as a mutual contact) as the clients and
//! `hearth household list` see them; used up, expired and revoked tokens refused; and
//! the `urn:xmpp:invite#invite` ad-hoc command run by slixmpp's `xep_0050`.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::clients::slixmpp;
use common::{Server, ServerOpts};

const PW: &str = "a long passphrase";

fn server() -> Server {
    Server::start(ServerOpts {
        extra_toml: "[registration]\npolicy = \"invite\"\n".into(),
        ..ServerOpts::default()
    })
}

/// Runs `hearth <args>` on the server's configuration; its standard output.
fn hearth(server: &Server, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(args)
        .arg("--config")
        .arg(server.config_path())
        .stdin(Stdio::null())
        .output()
        .expect("cannot run hearth");
    assert!(
        out.status.success(),
        "hearth {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The URI line of `hearth invite`'s output.
fn uri_of(output: &str) -> String {
    output
        .lines()
        .find(|l| l.starts_with("xmpp:"))
        .unwrap_or_else(|| panic!("no URI in:\n{output}"))
        .to_owned()
}

/// The token in an XEP-0401 URI (`…;preauth=TOKEN[;…]`).
fn token_of(uri: &str) -> String {
    uri.split("preauth=")
        .nth(1)
        .and_then(|t| t.split(';').next())
        .unwrap_or_else(|| panic!("no token in {uri}"))
        .to_owned()
}

/// `user`'s roster as slixmpp reads it: JID → subscription.
fn roster(server: &Server, user: &str) -> serde_json::Map<String, serde_json::Value> {
    let run = slixmpp(server, user, PW, "SCRAM-SHA-256").run(&["roster"]);
    run.assert_ok();
    let items = run.expect_event("roster")["items"].clone();
    items
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v["subscription"].clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// (`--token=…` in one argument: a token may start with `-`, which argparse would take
/// for an option.)
fn refused(server: &Server, user: &str, token: &str) {
    let run = slixmpp(server, user, PW, "SCRAM-SHA-256")
        .run(&["register", &format!("--token={}", token)]);
    assert_eq!(run.code(), Some(1), "{run}");
    assert_eq!(
        run.expect_event("register_failed")["condition"],
        "forbidden",
        "{run}"
    );
}

/// `hearth invite --from alice --household`: the URI is a user invitation (XEP-0401 §4);
/// its token registers once; then alice and the new user have each other with
/// `subscription='both'`, and the new user is in the household.
#[test]
fn cli_invite_from_a_user_into_the_household() {
    let server = server();
    server.add_user("alice", PW);
    let out = hearth(&server, &["invite", "--from", "alice", "--household"]);
    let uri = uri_of(&out);
    let alice = server.jid("alice");
    assert!(
        uri.starts_with(&format!("xmpp:{alice}?roster;preauth=")) && uri.ends_with(";ibr=y"),
        "{uri}"
    );
    // A QR code was drawn (half blocks), and the fingerprint or how to get it said.
    assert!(out.contains('█') && out.contains('▀'), "{out}");
    assert!(out.contains("fingerprint"), "{out}");
    let token = token_of(&uri);

    let run = slixmpp(&server, "newbie", PW, "SCRAM-SHA-256")
        .run(&["register", &format!("--token={}", &token)]);
    run.assert_ok();
    run.expect_event("registered");

    let newbie = server.jid("newbie");
    let a = roster(&server, "alice");
    assert_eq!(
        a.get(&newbie),
        Some(&"both".into()),
        "alice's roster: {a:?}"
    );
    let n = roster(&server, "newbie");
    assert_eq!(
        n.get(&alice),
        Some(&"both".into()),
        "newbie's roster: {n:?}"
    );
    let members = hearth(&server, &["household", "list"]);
    assert!(members.lines().any(|l| l == newbie), "{members}");
    assert!(!members.lines().any(|l| l == alice), "{members}");

    // Used up.
    refused(&server, "second", &token);
    let listed = hearth(&server, &["invites"]);
    assert!(!listed.contains(&token), "{listed}");
    assert!(
        listed.contains("alice") && listed.contains("yes"),
        "{listed}"
    );
}

/// An expired invitation and a revoked one are refused; an account invitation without
/// effects registers an account with an empty roster, outside the household.
#[test]
fn expired_and_revoked_invitations_are_refused() {
    let server = server();
    let short = token_of(&uri_of(&hearth(&server, &["invite", "--expires", "1s"])));
    let revoked_out = hearth(&server, &["invite", "--note", "for the tablet"]);
    let revoked = token_of(&uri_of(&revoked_out));
    let plain_uri = uri_of(&hearth(&server, &["invite", "--uses", "2"]));
    assert!(
        plain_uri.starts_with(&format!("xmpp:{}?register;preauth=", server.domain())),
        "{plain_uri}"
    );
    let id = revoked_out
        .split('#')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no id in {revoked_out}"));
    let said = hearth(&server, &["invites", "revoke", id]);
    assert_eq!(said.trim(), format!("revoked invitation #{id}"));
    std::thread::sleep(Duration::from_millis(2100));
    refused(&server, "late", &short);
    refused(&server, "tablet", &revoked);

    let run = slixmpp(&server, "plain", PW, "SCRAM-SHA-256")
        .run(&["register", &format!("--token={}", token_of(&plain_uri))]);
    run.assert_ok();
    assert!(roster(&server, "plain").is_empty());
    let members = hearth(&server, &["household", "list"]);
    assert!(members.trim().is_empty(), "{members}");
}

/// The `urn:xmpp:invite#invite` ad-hoc command (XEP-0401, as Prosody's
/// mod_invites_adhoc), run by slixmpp's `xep_0050` as a user who is not an admin: the
/// result form's `uri` is a user invitation whose token registers an account, which
/// then has the user as a mutual contact.
#[test]
fn adhoc_invite_gives_a_working_uri() {
    let server = server();
    server.add_user("bob", PW);
    let run = slixmpp(&server, "bob", PW, "SCRAM-SHA-256").run(&[
        "adhoc",
        "--node",
        "urn:xmpp:invite#invite",
    ]);
    run.assert_ok();
    let done = run.expect_event("command_done");
    assert_eq!(done["status"], "completed", "{run}");
    let uri = done["result"]["uri"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no uri:\n{run}"))
        .to_owned();
    let bob = server.jid("bob");
    assert!(
        uri.starts_with(&format!("xmpp:{bob}?roster;preauth=")),
        "{uri}"
    );
    assert!(
        done["result"]["expire"][0]
            .as_str()
            .is_some_and(|e| e.ends_with('Z'))
    );

    let run = slixmpp(&server, "friend", PW, "SCRAM-SHA-256")
        .run(&["register", &format!("--token={}", token_of(&uri))]);
    run.assert_ok();
    run.expect_event("registered");
    let friend = server.jid("friend");
    assert_eq!(roster(&server, "bob").get(&friend), Some(&"both".into()));
    assert_eq!(roster(&server, "friend").get(&bob), Some(&"both".into()));
    let members = hearth(&server, &["household", "list"]);
    assert!(members.trim().is_empty(), "{members}");
}

/// `jid`'s subscription and ask in a roster get's reply.
fn item_of(reply: &common::xml::Node, jid: &str) -> (String, Option<String>) {
    let item = reply
        .children
        .iter()
        .flat_map(|q| q.children.iter())
        .find(|i| i.attr("jid") == Some(jid))
        .unwrap_or_else(|| panic!("no {jid} in {reply}"));
    (
        item.attr("subscription").unwrap_or("none").to_owned(),
        item.attr("ask").map(str::to_owned),
    )
}

/// XEP-0379: a `subscribe` carrying a token alice issued (`hearth invite --from alice`)
/// is approved on her behalf (the asker gets `subscribed` and her presence; her clients
/// get no request), and alice subscribes back: bob, who pre-approved her as XEP-0379 §4
/// asks of the client, ends with `both` both ways at once; carol, who did not, is asked.
/// A token not alice's (an account invitation) approves nothing: the request reaches
/// her as usual, without the token.
#[test]
fn preauth_subscription_is_approved_by_the_inviters_token() {
    use common::im::{drain, expect_presence, login, presence, roster_get};
    let server = common::im::server();
    let (aj, bj, cj) = (server.jid("alice"), server.jid("bob"), server.jid("carol"));
    let alices = token_of(&uri_of(&hearth(&server, &["invite", "--from", "alice"])));
    let admins = token_of(&uri_of(&hearth(&server, &["invite"])));
    let mut a = login(&server, "alice", "phone");
    let mut b = login(&server, "bob", "desk");
    let mut c = login(&server, "carol", "desk");
    for conn in [&mut a, &mut b, &mut c] {
        roster_get(conn, None);
        presence(conn, "");
        drain(conn);
    }
    let preauth = |to: &str, token: &str| {
        format!(
            "<presence type='subscribe' to='{to}'><preauth xmlns='urn:xmpp:pars:0' \
             token='{token}'/></presence>"
        )
    };

    // bob pre-approves alice (RFC 6121 §3.4), then asks with her token.
    b.send(&format!("<presence type='subscribed' to='{aj}'/>"));
    b.send(&preauth(&aj, &alices));
    expect_presence(&mut b, &aj, Some("subscribed"));
    expect_presence(&mut a, &bj, Some("subscribed"));
    let seen = drain(&mut a);
    assert!(
        seen.iter().all(|e| e.attr("type") != Some("subscribe")),
        "alice was asked: {seen:?}"
    );
    assert_eq!(
        item_of(&roster_get(&mut a, None), &bj),
        ("both".into(), None)
    );
    assert_eq!(
        item_of(&roster_get(&mut b, None), &aj),
        ("both".into(), None)
    );

    // carol asks with a token not alice's: alice is asked, without the token.
    c.send(&preauth(&aj, &admins));
    let req = expect_presence(&mut a, &cj, Some("subscribe"));
    assert!(
        !req.has_child("preauth", "urn:xmpp:pars:0"),
        "the token was passed on"
    );
    assert!(
        drain(&mut c)
            .iter()
            .all(|e| e.attr("type") != Some("subscribed")),
        "approved by a token not alice's"
    );
    // Then with alice's: approved, and carol, who pre-approved nothing, is asked back.
    c.send(&preauth(&aj, &alices));
    expect_presence(&mut c, &aj, Some("subscribed"));
    expect_presence(&mut c, &aj, Some("subscribe"));
    assert_eq!(
        item_of(&roster_get(&mut a, None), &cj),
        ("from".into(), Some("subscribe".into()))
    );
}

/// RFC 6121 §2.1.6: alice is online, with the roster fetched, when someone signs up with
/// her invitation: her client gets the roster push of the new contact, `both`, without
/// asking for the roster again; the new user's first presence reaches her, and hers
/// the new user (§4.2: broadcast and probe, as for any `both` contact).
#[test]
fn the_online_inviter_gets_the_roster_push() {
    use common::im::{drain, expect_presence, expect_push, login, presence, roster_get};
    let server = common::im::server();
    let token = token_of(&uri_of(&hearth(&server, &["invite", "--from", "alice"])));
    let mut a = login(&server, "alice", "phone");
    roster_get(&mut a, None);
    presence(&mut a, "");
    drain(&mut a);
    let run = slixmpp(&server, "newbie", PW, "SCRAM-SHA-256")
        .run(&["register", &format!("--token={}", &token)]);
    run.assert_ok();
    let item = expect_push(&mut a);
    let newbie = server.jid("newbie");
    assert_eq!(item.attr("jid"), Some(newbie.as_str()));
    assert_eq!(item.attr("subscription"), Some("both"));

    // §4.2: at the new user's first presence, presence flows both ways.
    let mut n = common::client::Conn::login(
        server.c2s_addr(),
        server.domain(),
        &server.cert_path(),
        "newbie",
        PW,
        Some("phone"),
    );
    roster_get(&mut n, None);
    presence(&mut n, "");
    expect_presence(&mut a, &newbie, None);
    expect_presence(&mut n, &server.jid("alice"), None);
}

/// The admin's `urn:xmpp:invite#create-account` command (as Prosody's mod_invites_adhoc
/// offers), run by slixmpp's `xep_0050` with its form filled: two uses, the household.
/// Both uses register accounts that join the household; a third is refused.
#[test]
fn an_admins_account_invitation_from_a_phone() {
    let server = Server::start(ServerOpts {
        admins: vec!["owner@test.local".into()],
        extra_toml: "[registration]\npolicy = \"invite\"\n".into(),
        ..ServerOpts::default()
    });
    server.add_user("owner", PW);
    let run = slixmpp(&server, "owner", PW, "SCRAM-SHA-256").run(&[
        "adhoc",
        "--node",
        "urn:xmpp:invite#create-account",
        "--field",
        "uses=2",
        "--field",
        "household=1",
        "--field",
        "note=cousins",
    ]);
    run.assert_ok();
    let done = run.expect_event("command_done");
    assert_eq!(done["status"], "completed", "{run}");
    let uri = done["result"]["uri"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no uri:\n{run}"))
        .to_owned();
    assert!(
        uri.starts_with("xmpp:test.local?register;preauth="),
        "{uri}"
    );
    let token = token_of(&uri);
    for name in ["cousin1", "cousin2"] {
        let run = slixmpp(&server, name, PW, "SCRAM-SHA-256")
            .run(&["register", &format!("--token={token}")]);
        run.assert_ok();
        run.expect_event("registered");
    }
    refused(&server, "cousin3", &token);
    let members = hearth(&server, &["household", "list"]);
    assert!(
        members.contains("cousin1") && members.contains("cousin2"),
        "{members}"
    );
    // The owner made it but is not a contact of those who used it.
    assert!(!roster(&server, "cousin1").contains_key(&server.jid("owner")));
    let listed = hearth(&server, &["invites"]);
    assert!(listed.contains("cousins"), "{listed}");
}
