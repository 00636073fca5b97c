//! XEP-0045 group chat end to end with slixmpp's own xep_0045 plugin
//! (tests/clients/muc_slixmpp.py): a room created and configured with the owner form,
//! joins with history, groupchat to all, nick conflicts, members-only and password
//! rooms, kick and ban, voice in a moderated room, the subject, a room that survives a
//! restart, a destroyed room.

mod common;

use common::clients::{ClientRun, RunningClient, check_slixmpp, python};
use common::{Server, ServerOpts};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const PW: &str = "a fine password";
const WAIT: Duration = Duration::from_secs(25);

fn server() -> Server {
    let server = Server::start(ServerOpts::default());
    for u in ["alice", "bob", "carol"] {
        server.add_user(u, PW);
    }
    server
}

fn room(server: &Server, name: &str) -> String {
    format!("{name}@conference.{}", server.domain())
}

/// The slixmpp MUC client as `user`, running `steps`.
fn client(server: &Server, user: &str, steps: Value) -> RunningClient {
    check_slixmpp();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/muc_slixmpp.py");
    let addr = server.c2s_addr();
    let mut cmd = Command::new(python());
    cmd.arg(script)
        .args(["--host", &addr.ip().to_string()])
        .args(["--port", &addr.port().to_string()])
        .arg("--cafile")
        .arg(server.cert_path())
        .args(["--jid", &format!("{}/{user}-res", server.jid(user))])
        .args(["--password", PW])
        .args(["--steps", &steps.to_string()]);
    RunningClient::command(cmd)
}

fn run(server: &Server, user: &str, steps: Value) -> ClientRun {
    let run = client(server, user, steps).finish();
    assert!(run.succeeded(), "{user} failed:\n{run}");
    run
}

fn events<'a>(run: &'a ClientRun, name: &str) -> Vec<&'a Value> {
    run.events.iter().filter(|e| e["event"] == name).collect()
}

#[test]
fn create_configure_join_with_history_and_talk() {
    let server = server();
    let r = room(&server, "family");
    let mut alice = client(
        &server,
        "alice",
        json!([
            {"do": "join", "room": r, "nick": "alice"},
            {"do": "configure", "room": r, "fields": {
                "muc#roomconfig_roomname": "Family",
                "muc#roomconfig_persistentroom": "1",
                "muc#roomconfig_whois": "anyone"}},
            {"do": "subject", "room": r, "subject": "Sunday lunch"},
            {"do": "say", "room": r, "body": "first"},
            {"do": "say", "room": r, "body": "second"},
            {"do": "wait_body", "room": r, "body": "second"},
            {"do": "ready"},
            {"do": "wait_body", "room": r, "body": "hello from bob"},
            {"do": "say", "room": r, "body": "welcome bob"},
            {"do": "sleep", "s": 1},
        ]),
    );
    alice.wait_for_event("ready", WAIT);
    let bob = run(
        &server,
        "bob",
        json!([
            {"do": "disco_items", "to": format!("conference.{}", server.domain())},
            {"do": "disco_info", "to": r},
            {"do": "join", "room": r, "nick": "bob", "maxstanzas": 5},
            {"do": "say", "room": r, "body": "hello from bob"},
            {"do": "wait_body", "room": r, "body": "welcome bob"},
        ]),
    );
    let alice = alice.finish();
    assert!(alice.succeeded(), "{alice}");
    let joined = alice.expect_event("joined");
    assert!(
        joined["codes"].as_array().unwrap().contains(&json!(201)),
        "{alice}"
    );
    // Bob: the room is listed, described, and he gets the history and the subject.
    let items = bob.expect_event("disco_items");
    assert!(items["items"].to_string().contains(&r), "{bob}");
    let info = bob.expect_event("disco_info")["features"].to_string();
    assert!(
        info.contains("muc_persistent") && info.contains("muc_nonanonymous"),
        "{info}"
    );
    let joined = bob.expect_event("joined");
    assert_eq!(joined["history"], json!(["first", "second"]), "{bob}");
    assert_eq!(joined["subject"], "Sunday lunch");
    assert_eq!(joined["occupants"], json!(["alice", "bob"]));
    let codes = joined["codes"].as_array().unwrap();
    assert!(
        codes.contains(&json!(110)) && codes.contains(&json!(100)),
        "{bob}"
    );
    // Live messages carry the room's stanza-id; history is delayed from the room.
    let live: Vec<_> = events(&bob, "groupchat")
        .into_iter()
        .filter(|m| m["body"] == "welcome bob")
        .collect();
    assert_eq!(live.len(), 1, "{bob}");
    assert_eq!(live[0]["stanza_id_by"], json!(r));
    assert_eq!(live[0]["delayed"], false);
    // alice saw bob's message: groupchat goes to every occupant.
    assert!(
        events(&alice, "groupchat")
            .iter()
            .any(|m| m["body"] == "hello from bob" && m["nick"] == "bob")
    );
}

#[test]
fn nick_conflict_members_only_and_password() {
    let server = server();
    let (open, members, secret) = (
        room(&server, "open"),
        room(&server, "club"),
        room(&server, "vault"),
    );
    let mut alice = client(
        &server,
        "alice",
        json!([
            {"do": "join", "room": open, "nick": "alice"},
            {"do": "instant", "room": open},
            {"do": "join", "room": members, "nick": "alice"},
            {"do": "configure", "room": members, "fields": {"muc#roomconfig_membersonly": "1"}},
            {"do": "join", "room": secret, "nick": "alice"},
            {"do": "configure", "room": secret, "fields": {
                "muc#roomconfig_passwordprotectedroom": "1",
                "muc#roomconfig_roomsecret": "open sesame"}},
            {"do": "ready"},
            {"do": "sleep", "s": 6},
        ]),
    );
    alice.wait_for_event("ready", WAIT);
    let bob = run(
        &server,
        "bob",
        json!([
            {"do": "join", "room": open, "nick": "alice"},
            {"do": "join", "room": members, "nick": "bob"},
            {"do": "join", "room": secret, "nick": "bob"},
            {"do": "join", "room": secret, "nick": "bob", "password": "open sesame"},
        ]),
    );
    let errors: Vec<_> = events(&bob, "join_error")
        .iter()
        .map(|e| e["condition"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        errors,
        ["conflict", "registration-required", "not-authorized"],
        "{bob}"
    );
    assert_eq!(events(&bob, "joined").len(), 1, "{bob}");
    drop(alice);
}

#[test]
fn kick_ban_and_voice() {
    let server = server();
    let r = room(&server, "mod");
    let cj = server.jid("carol");
    let mut alice = client(
        &server,
        "alice",
        json!([
            {"do": "join", "room": r, "nick": "alice"},
            {"do": "configure", "room": r, "fields": {"muc#roomconfig_moderatedroom": "1"}},
            {"do": "ready"},
            {"do": "wait_event", "name": "muc_presence", "count": 3},
            // carol is a visitor: she speaks only once she has voice.
            {"do": "role", "room": r, "nick": "carol", "role": "participant"},
            {"do": "wait_body", "room": r, "body": "now I may speak"},
            {"do": "role", "room": r, "nick": "bob", "role": "none", "reason": "time out"},
            {"do": "affiliation", "room": r, "jid": cj, "affiliation": "outcast"},
            {"do": "sleep", "s": 1},
        ]),
    );
    alice.wait_for_event("ready", WAIT);
    let mut bob = client(
        &server,
        "bob",
        json!([
            {"do": "join", "room": r, "nick": "bob"},
            {"do": "say", "room": r, "body": "visitor speaking"},
            {"do": "wait_event", "name": "message_error"},
            // Bob may not kick: he is no moderator.
            {"do": "role", "room": r, "nick": "alice", "role": "none"},
            {"do": "wait_event", "name": "removed"},
            {"do": "join", "room": r, "nick": "bob"},
        ]),
    );
    std::thread::sleep(Duration::from_millis(1500));
    let carol = run(
        &server,
        "carol",
        json!([
            {"do": "join", "room": r, "nick": "carol"},
            {"do": "wait_event", "name": "muc_presence", "count": 4},
            {"do": "say", "room": r, "body": "now I may speak"},
            {"do": "wait_event", "name": "removed"},
            {"do": "join", "room": r, "nick": "carol"},
        ]),
    );
    let bob_run = {
        bob.wait_for_event("exit", WAIT);
        bob.finish()
    };
    let alice = alice.finish();
    assert!(alice.succeeded(), "{alice}");
    // The visitor's message was refused, the participant's went through.
    assert_eq!(
        bob_run.expect_event("message_error")["condition"],
        "forbidden",
        "{bob_run}"
    );
    assert_eq!(
        bob_run.expect_event("admin_error")["condition"],
        "forbidden",
        "{bob_run}"
    );
    // Bob was kicked (307) and may come back; carol was banned (301) and may not.
    let bob_out = events(&bob_run, "muc_presence")
        .into_iter()
        .find(|p| p["nick"] == "bob" && p["type"] == "unavailable")
        .unwrap_or_else(|| panic!("{bob_run}"))
        .clone();
    assert!(bob_out["codes"].as_array().unwrap().contains(&json!(307)));
    assert_eq!(events(&bob_run, "joined").len(), 2, "{bob_run}");
    let carol_out = events(&carol, "muc_presence")
        .into_iter()
        .find(|p| p["nick"] == "carol" && p["type"] == "unavailable")
        .unwrap_or_else(|| panic!("{carol}"))
        .clone();
    assert!(carol_out["codes"].as_array().unwrap().contains(&json!(301)));
    assert_eq!(carol.expect_event("join_error")["condition"], "forbidden");
}

#[test]
fn a_persistent_room_survives_a_restart_and_a_destroyed_room_is_gone() {
    let mut server = server();
    let r = room(&server, "keep");
    let bj = server.jid("bob");
    run(
        &server,
        "alice",
        json!([
            {"do": "join", "room": r, "nick": "alice"},
            {"do": "configure", "room": r, "fields": {
                "muc#roomconfig_persistentroom": "1",
                "muc#roomconfig_membersonly": "1",
                "muc#roomconfig_roomname": "Kept"}},
            {"do": "affiliation", "room": r, "jid": bj, "affiliation": "member"},
            {"do": "subject", "room": r, "subject": "still here"},
            {"do": "say", "room": r, "body": "before the restart"},
            {"do": "wait_body", "room": r, "body": "before the restart"},
        ]),
    );
    // At once: what the room queued for the disk is committed before the server exits.
    server.stop();
    server.restart();
    // Bob is still a member of the members-only room; history and subject are back.
    let bob = run(
        &server,
        "bob",
        json!([
            {"do": "disco_info", "to": r},
            {"do": "join", "room": r, "nick": "bob"},
        ]),
    );
    let joined = bob.expect_event("joined");
    assert_eq!(joined["history"], json!(["before the restart"]), "{bob}");
    assert_eq!(joined["subject"], "still here");
    assert!(
        bob.expect_event("disco_info")["identities"]
            .to_string()
            .contains("Kept")
    );
    // The owner destroys it: occupants are told, and it is gone after another restart.
    let mut bob = client(
        &server,
        "bob",
        json!([
            {"do": "join", "room": r, "nick": "bob"},
            {"do": "ready"},
            {"do": "wait_event", "name": "removed"},
        ]),
    );
    bob.wait_for_event("ready", WAIT);
    let alice = run(
        &server,
        "alice",
        json!([
            {"do": "join", "room": r, "nick": "alice"},
            {"do": "destroy", "room": r, "reason": "done"},
        ]),
    );
    alice.expect_event("destroyed");
    let bob = bob.finish();
    assert!(bob.succeeded(), "{bob}");
    assert!(
        events(&bob, "muc_presence")
            .iter()
            .any(|p| p["nick"] == "bob" && p["destroyed"] == true),
        "{bob}"
    );
    server.stop();
    server.restart();
    let carol = run(&server, "carol", json!([{"do": "disco_info", "to": r}]));
    assert_eq!(
        carol.expect_event("disco_error")["condition"],
        "item-not-found"
    );
}

#[test]
fn invitations_reach_the_invitee() {
    let server = server();
    let r = room(&server, "party");
    let bj = server.jid("bob");
    let mut bob = client(
        &server,
        "bob",
        json!([{"do": "ready"}, {"do": "wait_event", "name": "invite"}]),
    );
    bob.wait_for_event("ready", WAIT);
    run(
        &server,
        "alice",
        json!([
            {"do": "join", "room": r, "nick": "alice"},
            {"do": "instant", "room": r},
            {"do": "invite", "room": r, "jid": bj, "reason": "cake"},
            {"do": "sleep", "s": 1},
        ]),
    );
    let bob = bob.finish();
    assert!(bob.succeeded(), "{bob}");
    assert_eq!(bob.expect_event("invite")["room"], json!(r));
}

/// aioxmpp's MUC client as `user` (tests/clients/muc_aioxmpp.py) with `args`.
fn aioxmpp(server: &Server, user: &str, args: &[&str]) -> RunningClient {
    let python = common::clients::aioxmpp_python();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/muc_aioxmpp.py");
    let mut cmd = Command::new(&python);
    cmd.arg(script)
        .args(["--port", &server.c2s_port().to_string()])
        .args(["--jid", &format!("{}/{user}-aio", server.jid(user))])
        .args(["--password", PW])
        .args(args);
    RunningClient::command(cmd)
}

#[test]
fn aioxmpp_owner_and_guest() {
    let server = server();
    let r = room(&server, "aio");
    let mut owner = aioxmpp(
        &server,
        "alice",
        &[
            "--as-owner",
            "--room",
            &r,
            "--nick",
            "alice",
            "--expect",
            "hi owner",
            "--kick",
            "bob",
        ],
    );
    owner.wait_for_event("ready", WAIT);
    let guest = aioxmpp(
        &server,
        "bob",
        &["--room", &r, "--nick", "bob", "--say", "hi owner"],
    )
    .finish();
    let owner = owner.finish();
    assert!(owner.succeeded(), "{owner}");
    assert!(guest.succeeded(), "{guest}");
    let joined = guest.expect_event("joined");
    assert_eq!(joined["history"], json!(["hello from aioxmpp"]), "{guest}");
    assert_eq!(joined["topic"], "set by aioxmpp", "{guest}");
    let exit = guest.expect_event("exit_room");
    assert!(exit["mode"].as_str().unwrap().contains("KICKED"), "{guest}");
    assert!(
        owner.expect_event("kicked")["mode"]
            .as_str()
            .unwrap()
            .contains("KICKED")
    );
    // The configuration aioxmpp submitted took: a persistent room named by it.
    let info = run(&server, "carol", json!([{"do": "disco_info", "to": r}]));
    let info = info.expect_event("disco_info").to_string();
    assert!(
        info.contains("aioxmpp room") && info.contains("muc_persistent"),
        "{info}"
    );
}

#[test]
fn room_archive_and_moderation_with_slixmpp() {
    let server = server();
    let r = room(&server, "archive");
    let mut alice = client(
        &server,
        "alice",
        json!([
            {"do": "join", "room": r, "nick": "alice"},
            {"do": "instant", "room": r},
            {"do": "say", "room": r, "body": "one"},
            {"do": "say", "room": r, "body": "two"},
            {"do": "say", "room": r, "body": "spam"},
            {"do": "say", "room": r, "body": "three"},
            {"do": "wait_body", "room": r, "body": "three"},
            {"do": "ready"},
            {"do": "wait_event", "name": "muc_presence", "count": 2},
            {"do": "moderate", "room": r, "body": "spam", "reason": "no spam"},
            {"do": "sleep", "s": 1},
        ]),
    );
    alice.wait_for_event("ready", WAIT);
    let bob = run(
        &server,
        "bob",
        json!([
            {"do": "join", "room": r, "nick": "bob"},
            {"do": "mam", "room": r, "max": 2},
            // A participant may not moderate.
            {"do": "moderate", "room": r, "body": "one"},
            {"do": "wait_event", "name": "moderated"},
            {"do": "mam", "room": r, "max": 10},
        ]),
    );
    let alice = alice.finish();
    assert!(alice.succeeded(), "{alice}");
    alice.expect_event("moderate_ok");
    let pages: Vec<_> = events(&bob, "mam");
    assert_eq!(
        pages[0]["bodies"],
        json!(["one", "two", "spam", "three"]),
        "{bob}"
    );
    assert_eq!(pages[0]["pages"], 2, "{bob}");
    assert_eq!(bob.expect_event("moderate_error")["condition"], "forbidden");
    let moderated = bob.expect_event("moderated");
    assert_eq!(moderated["reason"], "no spam", "{bob}");
    assert_eq!(moderated["by"], format!("{r}/alice"));
    // The tombstone replaced the message: no body left in the archive.
    let after = &pages[1]["bodies"];
    assert_eq!(after[0], "one", "{bob}");
    assert!(!after.to_string().contains("spam"), "{bob}");
}

/// `hearth household …` on the test server's configuration.
fn household(server: &Server, args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .arg("household")
        .args(args)
        .arg("--config")
        .arg(server.config_path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

fn wait_for_log(server: &Server, needle: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    while !server.log().contains(needle) {
        assert!(
            std::time::Instant::now() < deadline,
            "no {needle:?} in the log"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The household's room (issue 20): made on the household's first use as
/// household@conference.<domain>, members-only with the household as its members. With
/// slixmpp's plugin: members talk, someone outside is refused, a member who leaves the
/// household is removed from the room (321), and the room and its members last across a
/// restart.
#[test]
fn the_household_room_follows_the_household() {
    let mut server = server();
    let r = room(&server, "household");
    household(&server, &["add", "alice"]);
    household(&server, &["add", "bob"]);
    // A device account in the household is not made a member: it does not chat.
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["device", "add", "thermo", "--household", "--password-file"])
        .arg(server.scratch_dir().join("thermo.pw"))
        .arg("--config")
        .arg(server.config_path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    wait_for_log(&server, "household: 3 joined");
    wait_for_log(&server, "muc: room household@");
    assert!(
        server
            .log()
            .contains("muc: household room: 2 joined, 0 left"),
        "{}",
        server.log()
    );
    let mut alice = client(
        &server,
        "alice",
        json!([
            {"do": "bookmarks"},
            {"do": "disco_info", "to": r},
            {"do": "join", "room": r, "nick": "alice"},
            {"do": "say", "room": r, "body": "dinner at seven"},
            {"do": "ready"},
            {"do": "wait_body", "room": r, "body": "coming"},
        ]),
    );
    alice.wait_for_event("ready", WAIT);
    let mut bob = client(
        &server,
        "bob",
        json!([
            {"do": "join", "room": r, "nick": "bob"},
            {"do": "say", "room": r, "body": "coming"},
            {"do": "ready"},
            {"do": "wait_event", "name": "removed"},
        ]),
    );
    bob.wait_for_event("ready", WAIT);
    let carol = run(
        &server,
        "carol",
        json!([{"do": "join", "room": r, "nick": "carol"}]),
    );
    assert_eq!(
        carol.expect_event("join_error")["condition"],
        "registration-required",
        "{carol}"
    );
    let alice = alice.finish();
    assert!(alice.succeeded(), "{alice}");
    // The room is in her bookmarks (XEP-0402, read by slixmpp's xep_0048 through
    // XEP-0049), to be joined on its own.
    assert_eq!(
        alice.expect_event("bookmarks")["conferences"],
        json!([{"jid": r, "name": "Household", "autojoin": true, "nick": "alice"}]),
        "{alice}"
    );
    let info = alice.expect_event("disco_info")["features"].to_string();
    assert!(
        info.contains("muc_membersonly") && info.contains("muc_persistent"),
        "{info}"
    );
    // bob leaves the household: the room removes him, saying why (§9.4, 321).
    household(&server, &["remove", "bob"]);
    let bob = bob.finish();
    assert!(bob.succeeded(), "{bob}");
    let gone = events(&bob, "muc_presence")
        .into_iter()
        .find(|p| p["type"] == "unavailable" && p["nick"] == "bob")
        .cloned()
        .expect("bob's own unavailable");
    assert!(gone["codes"].to_string().contains("321"), "{bob}");
    // After a restart: alice is still a member (and gets the history), bob is not.
    server.stop();
    server.restart();
    let alice = run(
        &server,
        "alice",
        json!([{"do": "join", "room": r, "nick": "alice"}]),
    );
    let joined = alice.expect_event("joined");
    assert!(
        joined["history"].to_string().contains("dinner at seven"),
        "{alice}"
    );
    let bob = run(
        &server,
        "bob",
        json!([{"do": "join", "room": r, "nick": "bob"}]),
    );
    assert_eq!(
        bob.expect_event("join_error")["condition"],
        "registration-required",
        "{bob}"
    );
}
