//! XEP-0050 Ad-Hoc Commands with the XEP-0133 administration set, run by a real client
//! library's XEP-0050 implementation (slixmpp's `xep_0050`: `get_commands`,
//! `start_command`, `complete_command`) against a real hearth, and the effects checked
//! with real logins: a user added can log in, a changed password is the one that works, a
//! deleted user cannot log in and is logged out, a device can be logged out, an
//! announcement reaches everyone online.

mod common;

use std::time::Duration;

use common::clients::{ClientRun, slixmpp};
use common::{Server, ServerOpts};
use serde_json::Value;

const ALICE_PW: &str = "alice's admin passphrase";
const BOB_PW: &str = "bob's passphrase";
const MECH: &str = "SCRAM-SHA-256";
const ADMIN: &str = "http://jabber.org/protocol/admin";

/// A hearth whose admin is alice; bob is an ordinary user.
fn server() -> Server {
    let server = Server::start(ServerOpts {
        admins: vec!["alice@test.local".into()],
        // Every stanza in the log, to check that no password is.
        rust_log: Some("trace".into()),
        ..ServerOpts::default()
    });
    server.add_user("alice", ALICE_PW);
    server.add_user("bob", BOB_PW);
    server
}

/// Runs the command `node` as alice with these form values.
fn admin(server: &Server, node: &str, fields: &[(&str, &str)]) -> ClientRun {
    let node = format!("{ADMIN}#{node}");
    let mut action = vec!["adhoc".to_owned(), "--node".into(), node];
    for (var, value) in fields {
        action.push("--field".into());
        action.push(format!("{var}={value}"));
    }
    let action: Vec<&str> = action.iter().map(String::as_str).collect();
    slixmpp(server, "alice", ALICE_PW, MECH).run(&action)
}

/// The completed command's notes, each "type: text".
fn notes(run: &ClientRun) -> Vec<String> {
    let done = run.expect_event("command_done");
    assert_eq!(done["status"], "completed", "{run}");
    done["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            format!(
                "{}: {}",
                n["type"].as_str().unwrap(),
                n["text"].as_str().unwrap()
            )
        })
        .collect()
}

/// The values of `var` in the completed command's result form.
fn result(run: &ClientRun, var: &str) -> Vec<String> {
    let done = run.expect_event("command_done");
    done["result"][var]
        .as_array()
        .unwrap_or_else(|| panic!("no {var} in the result:\n{run}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

fn logs_in(server: &Server, user: &str, password: &str) -> bool {
    let run = slixmpp(server, user, password, MECH).run(&["login"]);
    match run.code() {
        Some(0) => true,
        Some(2) => false,
        _ => panic!("login neither succeeded nor failed authentication:\n{run}"),
    }
}

#[test]
fn admin_lists_the_commands_and_a_user_sees_only_invite_and_is_refused() {
    let server = server();
    let run = slixmpp(&server, "alice", ALICE_PW, MECH).run(&["adhoc"]);
    run.assert_ok();
    let nodes = run.expect_event("commands")["nodes"].clone();
    for n in [
        "add-user",
        "delete-user",
        "end-user-session",
        "change-user-password",
        "get-registered-users-num",
        "get-registered-users-list",
        "get-online-users-num",
        "get-online-users-list",
        "announce",
    ] {
        let node = Value::from(format!("{ADMIN}#{n}"));
        assert!(nodes.as_array().unwrap().contains(&node), "{n}:\n{run}");
    }

    for n in ["urn:xmpp:invite#create-account", "urn:xmpp:invite#invite"] {
        assert!(
            nodes.as_array().unwrap().contains(&Value::from(n)),
            "{n}:\n{run}"
        );
    }

    // A user who is not an admin sees only inviting (XEP-0401, tests/invite.rs).
    let run = slixmpp(&server, "bob", BOB_PW, MECH).run(&["adhoc"]);
    run.assert_ok();
    assert_eq!(
        run.expect_event("commands")["nodes"],
        Value::from(vec!["urn:xmpp:invite#invite"])
    );
    let run = slixmpp(&server, "bob", BOB_PW, MECH).run(&[
        "adhoc",
        "--node",
        &format!("{ADMIN}#add-user"),
    ]);
    assert_eq!(run.code(), Some(1), "{run}");
    assert_eq!(
        run.expect_event("command_error")["condition"],
        "forbidden",
        "{run}"
    );
    assert!(run.event("command_form").is_none(), "{run}");
}

#[test]
fn add_user_change_password_delete_user() {
    let server = server();
    let run = admin(
        &server,
        "add-user",
        &[
            ("accountjid", "carol@test.local"),
            ("password", "carol-first-pw"),
            ("password-verify", "carol-first-pw"),
        ],
    );
    run.assert_ok();
    // The form as XEP-0133 §4.1 has it, with its FORM_TYPE.
    let form = run.expect_event("command_form");
    assert_eq!(form["status"], "executing", "{run}");
    assert_eq!(
        form["hidden"]["FORM_TYPE"],
        Value::from(vec![ADMIN]),
        "{run}"
    );
    assert_eq!(form["fields"]["password"], "text-private", "{run}");
    assert_eq!(form["fields"]["accountjid"], "jid-single", "{run}");
    assert_eq!(notes(&run), ["info: Added carol@test.local."], "{run}");
    assert!(logs_in(&server, "carol", "carol-first-pw"));
    let run = admin(
        &server,
        "get-registered-users-list",
        &[("max_items", "none")],
    );
    run.assert_ok();
    assert_eq!(
        result(&run, "registereduserjids"),
        ["alice@test.local", "bob@test.local", "carol@test.local"],
        "{run}"
    );

    let run = admin(
        &server,
        "change-user-password",
        &[
            ("accountjid", "carol@test.local"),
            ("password", "carol-second-pw"),
        ],
    );
    run.assert_ok();
    assert_eq!(
        notes(&run),
        ["info: Changed the password of carol@test.local."]
    );
    assert!(!logs_in(&server, "carol", "carol-first-pw"));
    assert!(logs_in(&server, "carol", "carol-second-pw"));

    // A taken name is an error note, and changes nothing.
    let run = admin(
        &server,
        "add-user",
        &[
            ("accountjid", "bob@test.local"),
            ("password", "x"),
            ("password-verify", "x"),
        ],
    );
    assert_eq!(
        notes(&run),
        ["error: bob@test.local already exists."],
        "{run}"
    );
    assert!(logs_in(&server, "bob", BOB_PW));

    // Deleting a user who is online logs them out.
    let mut carol = slixmpp(&server, "carol", "carol-second-pw", MECH).spawn(&["receive"]);
    carol.wait_for_event("ready", Duration::from_secs(20));
    let run = admin(
        &server,
        "delete-user",
        &[("accountjids", "carol@test.local")],
    );
    run.assert_ok();
    assert_eq!(notes(&run), ["info: Deleted carol@test.local."], "{run}");
    let ended = carol.finish();
    assert_eq!(
        ended.expect_event("stream_error")["condition"],
        "not-authorized",
        "{ended}"
    );
    assert!(!logs_in(&server, "carol", "carol-second-pw"));
    // Not even at trace level (DESIGN.md "Logging").
    let log = server.log();
    assert!(
        log.contains("bytes redacted]</field>"),
        "the forms are logged at trace, their passwords redacted"
    );
    assert!(
        !log.contains("carol-first-pw") && !log.contains("carol-second-pw"),
        "a password is in the log"
    );
}

#[test]
fn online_users_and_an_announcement_to_them() {
    let server = server();
    server.add_user("carol", "carol's passphrase");
    let body = "The Pi restarts at nine";
    let receive = [
        "receive",
        "--headline",
        "--expect-from",
        "test.local",
        "--expect-body",
        body,
    ];
    let mut bob = slixmpp(&server, "bob", BOB_PW, MECH).spawn(&receive);
    let mut carol = slixmpp(&server, "carol", "carol's passphrase", MECH).spawn(&receive);
    bob.wait_for_event("ready", Duration::from_secs(20));
    carol.wait_for_event("ready", Duration::from_secs(20));

    let run = admin(&server, "get-online-users-list", &[("max_items", "none")]);
    run.assert_ok();
    // Alice's own session is online too, running the command.
    assert_eq!(
        result(&run, "onlineuserjids"),
        ["alice@test.local", "bob@test.local", "carol@test.local"],
        "{run}"
    );
    let run = admin(&server, "get-online-users-num", &[]);
    run.assert_ok();
    assert!(
        run.event("command_form").is_none(),
        "nothing to ask:\n{run}"
    );
    assert_eq!(result(&run, "onlineusersnum"), ["3"], "{run}");

    let run = admin(
        &server,
        "announce",
        &[("subject", "Power cut"), ("announcement", body)],
    );
    run.assert_ok();
    assert_eq!(notes(&run), ["info: Sent to 3 online session(s)."], "{run}");
    for client in [bob, carol] {
        let got = client.finish();
        got.assert_ok();
        let m = got.expect_event("message");
        assert_eq!(m["type"], "headline", "{got}");
        assert_eq!(m["subject"], "Power cut", "{got}");
    }
}

#[test]
fn an_admin_logs_a_device_out() {
    let server = server();
    let mut bob = slixmpp(&server, "bob", BOB_PW, MECH)
        .resource("lost-phone")
        .spawn(&["receive"]);
    bob.wait_for_event("ready", Duration::from_secs(20));
    let run = admin(
        &server,
        "end-user-session",
        &[("accountjids", "bob@test.local/lost-phone")],
    );
    run.assert_ok();
    assert_eq!(notes(&run), ["info: Ended 1 session(s)."], "{run}");
    let ended = bob.finish();
    assert_eq!(
        ended.expect_event("stream_error")["condition"],
        "policy-violation",
        "{ended}"
    );
    // The account stays.
    assert!(logs_in(&server, "bob", BOB_PW));
}
