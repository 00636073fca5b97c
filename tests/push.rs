//! XEP-0357 Push Notifications end to end. The app server is an external component on
//! slixmpp's own ComponentXMPP that reads each notification with slixmpp's xep_0060 and
//! xep_0004 plugins (tests/clients/push_app.py), or an aioxmpp client reading it with
//! aioxmpp's pubsub and forms XSOs (tests/clients/aioxmpp_push_app.py), or a raw client
//! on another hearth over s2s; the phone is slixmpp with its xep_0352 (CSI) and xep_0198
//! (stream management) plugins (tests/clients/push_client.py).
//!
//! No client library at hand implements XEP-0357's enable: slixmpp (Debian's 1.8 and
//! upstream) has no xep_0357 plugin, nor have aioxmpp 0.13 and nbxmpp; the phone builds
//! the <enable/> as the XEP's §5 example does, its form with slixmpp's xep_0004. The
//! contacts and the refusals are raw XML.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::client::{Conn, new_id};
use common::clients::{ClientRun, RunningClient, aioxmpp_python, check_slixmpp, python};
use common::im::{chat, drain, error_condition, expect_message, presence};
use common::{Server, ServerOpts, free_port};
use serde_json::Value;

const PW: &str = "a fine password";
const SECRET: &str = "a secret of sixteen+ chars";
const APP: &str = "push.test.local";
const WAIT: Duration = Duration::from_secs(20);
/// Time for the server to see a connection go (or a nonza arrive) after the client said so.
const SETTLE: Duration = Duration::from_millis(500);

fn server_with(extra: &str) -> (Server, u16) {
    let port = free_port();
    let server = Server::start(ServerOpts {
        extra_toml: format!(
            "\n[components]\nlisten = [\"127.0.0.1:{port}\"]\n\
             secrets = {{ \"{APP}\" = \"{SECRET}\" }}\n{extra}"
        ),
        ..ServerOpts::default()
    });
    for u in ["alice", "bob", "carol"] {
        server.add_user(u, PW);
    }
    (server, port)
}

fn server() -> (Server, u16) {
    server_with("")
}

/// The app server, running for `seconds`, answering `fail` (node=condition) with errors.
fn app(port: u16, seconds: u32, fail: &[&str]) -> RunningClient {
    check_slixmpp();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/push_app.py");
    let mut cmd = Command::new(python());
    cmd.arg(script)
        .args(["--jid", APP, "--secret", SECRET])
        .args([
            "--port",
            &port.to_string(),
            "--seconds",
            &seconds.to_string(),
        ]);
    for f in fail {
        cmd.args(["--fail", f]);
    }
    let mut run = RunningClient::command(cmd);
    run.wait_for_event("ready", WAIT);
    run
}

/// alice's phone: `args` are push_client.py's (--enable, --then …).
fn phone(server: &Server, resource: &str, args: &[&str]) -> RunningClient {
    phone_for(server, APP, resource, args)
}

/// [`phone`] with its app server at `app_jid`.
fn phone_for(server: &Server, app_jid: &str, resource: &str, args: &[&str]) -> RunningClient {
    check_slixmpp();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/push_client.py");
    let mut cmd = Command::new(python());
    cmd.arg(script)
        .args(["--jid", &format!("{}/{resource}", server.jid("alice"))])
        .args(["--password", PW, "--app", app_jid, "--secret", "s3cret"])
        .args(["--port", &server.c2s_port().to_string()])
        .arg("--cafile")
        .arg(server.cert_path())
        .args(args);
    RunningClient::command(cmd)
}

fn login(server: &Server, user: &str, resource: &str) -> Conn {
    Conn::login(
        server.c2s_addr(),
        server.domain(),
        &server.cert_path(),
        user,
        PW,
        Some(resource),
    )
}

fn pushes(run: &ClientRun) -> Vec<&Value> {
    run.events.iter().filter(|e| e["event"] == "push").collect()
}

/// An offline phone's app server is told (from the account's bare JID, with the
/// summary and the stored publish-options, no body), and the message waits offline.
#[test]
fn an_offline_phone_is_notified_and_gets_the_message_at_next_login() {
    let (server, port) = server();
    let mut app = app(port, 30, &[]);
    let run = phone(&server, "phone", &["--enable", "n1", "--then", "offline"]).finish();
    run.assert_ok();
    run.expect_event("enabled");
    std::thread::sleep(SETTLE);

    let mut bob = login(&server, "bob", "desk");
    chat(&mut bob, &server.jid("alice"), "are you there?");
    let push = app.wait_for_event("push", WAIT);
    assert_eq!(push["frm"], server.jid("alice"), "{push}");
    assert_eq!(push["to"], APP, "{push}");
    assert_eq!(push["node"], "n1", "{push}");
    let summary = &push["summary"];
    // slixmpp reads a hidden field as a list of values.
    assert_eq!(summary["FORM_TYPE"][0], "urn:xmpp:push:summary", "{push}");
    assert_eq!(summary["message-count"], "1", "{push}");
    assert_eq!(summary["last-message-sender"], server.jid("bob"), "{push}");
    assert!(summary.get("last-message-body").is_none(), "{push}");
    assert_eq!(push["options"]["secret"], "s3cret", "{push}");
    assert_eq!(
        push["options"]["FORM_TYPE"][0], "http://jabber.org/protocol/pubsub#publish-options",
        "{push}"
    );

    // Push never takes the message: it is there at the next login.
    let mut alice = login(&server, "alice", "phone");
    presence(&mut alice, "");
    expect_message(&mut alice, "are you there?");
    bob.assert_alive();
}

/// While the phone is online and active nothing is pushed; once it says <inactive/>
/// (slixmpp's xep_0352) the next message is, and the message still reaches it.
#[test]
fn an_active_phone_is_not_notified_an_inactive_one_is() {
    let (server, port) = server();
    let app = app(port, 16, &[]);
    let mut active = phone(
        &server,
        "phone",
        &["--enable", "n1", "--then", "stay", "--seconds", "3"],
    );
    active.wait_for_event("enabled", WAIT);
    let mut bob = login(&server, "bob", "desk");
    chat(&mut bob, &server.jid("alice"), "while active");
    active.wait_for_event("message", WAIT);
    active.finish().assert_ok();
    std::thread::sleep(SETTLE);

    let mut inactive = phone(&server, "phone", &["--then", "inactive", "--seconds", "4"]);
    inactive.wait_for_event("inactive", WAIT);
    std::thread::sleep(SETTLE);
    let mut carol = login(&server, "carol", "desk");
    chat(&mut carol, &server.jid("alice"), "while inactive");
    let got = inactive.wait_for_event("message", WAIT);
    assert_eq!(got["body"], "while inactive");
    inactive.finish().assert_ok();

    let run = app.finish();
    let p = pushes(&run);
    assert_eq!(p.len(), 1, "{run}");
    assert_eq!(
        p[0]["summary"]["last-message-sender"],
        server.jid("carol"),
        "{run}"
    );
    assert_eq!(p[0]["summary"]["message-count"], "1", "{run}");
    bob.assert_alive();
}

/// A phone whose connection drops with a resumable session (slixmpp's xep_0198): the
/// session hibernates, and a message for it is pushed.
#[test]
fn a_hibernating_session_is_notified() {
    let (server, port) = server();
    let mut app = app(port, 30, &[]);
    let mut dropped = phone(&server, "phone", &["--enable", "n1", "--then", "drop"]);
    dropped.wait_for_event("dropped", WAIT);
    dropped.finish();
    std::thread::sleep(SETTLE);
    assert!(
        server.log().contains("the session waits"),
        "the session did not hibernate:\n{}",
        server.log()
    );
    let mut bob = login(&server, "bob", "desk");
    chat(&mut bob, &server.jid("alice"), "wake up");
    let push = app.wait_for_event("push", WAIT);
    assert_eq!(push["node"], "n1", "{push}");
    assert_eq!(push["summary"]["last-message-sender"], server.jid("bob"));
}

/// §6: a disabled registration gets nothing; the other one still does.
#[test]
fn disable_stops_notifications() {
    let (server, port) = server();
    let app = app(port, 6, &[]);
    let run = phone(
        &server,
        "phone",
        &[
            "--enable",
            "n1",
            "--enable",
            "n2",
            "--disable",
            "n1",
            "--then",
            "offline",
        ],
    )
    .finish();
    run.assert_ok();
    run.expect_event("disabled");
    std::thread::sleep(SETTLE);
    let mut bob = login(&server, "bob", "desk");
    chat(&mut bob, &server.jid("alice"), "one");
    drain(&mut bob);
    let run = app.finish();
    let p = pushes(&run);
    assert_eq!(p.len(), 1, "{run}");
    assert_eq!(p[0]["node"], "n2", "{run}");
}

/// An app server that answers `item-not-found` no longer knows the device: the
/// registration is disabled (the other one stays), and the message is kept all the same.
#[test]
fn an_app_server_error_disables_the_registration() {
    let (server, port) = server();
    let app = app(port, 10, &["n1=item-not-found"]);
    phone(
        &server,
        "phone",
        &["--enable", "n1", "--enable", "n2", "--then", "offline"],
    )
    .finish()
    .assert_ok();
    std::thread::sleep(SETTLE);
    let mut bob = login(&server, "bob", "desk");
    chat(&mut bob, &server.jid("alice"), "one");
    drain(&mut bob);
    std::thread::sleep(Duration::from_secs(2));
    // alice comes and goes (seen: the throttle starts again), then a second message.
    let mut alice = login(&server, "alice", "phone");
    presence(&mut alice, "");
    expect_message(&mut alice, "one");
    alice.close();
    std::thread::sleep(SETTLE);
    chat(&mut bob, &server.jid("alice"), "two");
    drain(&mut bob);
    let run = app.finish();
    let nodes: Vec<&str> = pushes(&run)
        .iter()
        .filter_map(|p| p["node"].as_str())
        .collect();
    assert_eq!(nodes.iter().filter(|n| **n == "n1").count(), 1, "{run}");
    assert_eq!(nodes.iter().filter(|n| **n == "n2").count(), 2, "{run}");
    let mut alice = login(&server, "alice", "phone");
    presence(&mut alice, "");
    expect_message(&mut alice, "two");
}

fn enable_xml(id: &str, to: &str, node: &str, secret: &str) -> String {
    format!(
        "<iq type='set' id='{id}'{to}><enable xmlns='urn:xmpp:push:0' jid='{APP}' node='{node}'>\
         <x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
         <field var='secret'><value>{secret}</value></field></x></enable></iq>"
    )
}

fn ask(c: &mut Conn, xml_with_id: impl Fn(&str) -> String) -> common::xml::Node {
    let id = new_id("push");
    c.send(&xml_with_id(&id));
    c.expect_iq_reply(&id)
}

/// Raw XML: another account may not enable for alice, a malformed request is
/// `bad-request`, the count and the byte quota are bounded, and the account announces
/// the feature.
#[test]
fn refusals_and_limits() {
    let (server, _port) = server_with("[limits]\nmax_stored_bytes_per_account = 2000\n");
    let alice_jid = server.jid("alice");
    let mut bob = login(&server, "bob", "desk");
    let r = ask(&mut bob, |id| {
        enable_xml(id, &format!(" to='{alice_jid}'"), "evil", "x")
    });
    assert_eq!(error_condition(&r), "forbidden", "{r}");

    let mut alice = login(&server, "alice", "phone");
    for (xml, cond) in [
        ("<enable xmlns='urn:xmpp:push:0' node='n'/>", "bad-request"),
        (
            "<enable xmlns='urn:xmpp:push:0' jid='push.test.local'/>",
            "bad-request",
        ),
        (
            "<enable xmlns='urn:xmpp:push:0' jid='push.test.local' node='n'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:wrong</value></field></x></enable>",
            "bad-request",
        ),
    ] {
        let r = ask(&mut alice, |id| {
            format!("<iq type='set' id='{id}'>{xml}</iq>")
        });
        assert_eq!(error_condition(&r), cond, "{xml}: {r}");
    }
    let r = ask(&mut alice, |id| {
        format!(
            "<iq type='get' id='{id}'><enable xmlns='urn:xmpp:push:0' jid='{APP}' node='n'/></iq>"
        )
    });
    assert_eq!(error_condition(&r), "bad-request", "{r}");

    for i in 0..5 {
        let r = ask(&mut alice, |id| enable_xml(id, "", &format!("n{i}"), "s"));
        assert_eq!(r.attr("type"), Some("result"), "{r}");
    }
    let r = ask(&mut alice, |id| enable_xml(id, "", "n5", "s"));
    assert_eq!(error_condition(&r), "resource-constraint", "{r}");
    // The same one again replaces it, but a secret past the byte quota does not fit.
    let r = ask(&mut alice, |id| enable_xml(id, "", "n0", "s2"));
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let big = "x".repeat(3000);
    let r = ask(&mut alice, |id| enable_xml(id, "", "n0", &big));
    assert_eq!(error_condition(&r), "resource-constraint", "{r}");

    let r = ask(&mut alice, |id| {
        format!(
            "<iq type='get' id='{id}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
        )
    });
    assert!(r.to_string().contains("urn:xmpp:push:0"), "{r}");
    bob.assert_alive();
}

/// `[push] include_body = true`: the text goes along (off by default, see the first test).
#[test]
fn the_body_goes_along_only_when_configured() {
    let (server, port) = server_with("[push]\ninclude_body = true\n");
    let mut app = app(port, 30, &[]);
    phone(&server, "phone", &["--enable", "n1", "--then", "offline"])
        .finish()
        .assert_ok();
    std::thread::sleep(SETTLE);
    let mut bob = login(&server, "bob", "desk");
    chat(&mut bob, &server.jid("alice"), "dinner at 7");
    let push = app.wait_for_event("push", WAIT);
    assert_eq!(
        push["summary"]["last-message-body"], "dinner at 7",
        "{push}"
    );
}

/// The app server on another server (the usual case: the app's vendor runs it): the
/// notification crosses the s2s link to `b.test`, to an app server logged in there (raw
/// client: hearth's s2s accepts only its host domain, not its components', so the
/// slixmpp component cannot sit behind b), and its answer comes back over the link to
/// alice's bare JID, where the push module claims it (an unclaimed answer is logged as
/// such).
#[test]
fn an_app_server_on_another_server_is_reached_over_federation() {
    let (pa, pb) = (free_port(), free_port());
    let opts = |domain: &str, port: u16, other: &str, other_port: u16| ServerOpts {
        domain: domain.into(),
        s2s: Some(format!(
            "listen = [\"127.0.0.1:{port}\"]\nroutes = {{ \"{other}\" = \"127.0.0.1:{other_port}\" }}\n"
        )),
        ..ServerOpts::default()
    };
    let a = Server::start(opts("a.test", pa, "b.test", pb));
    let b = Server::start(opts("b.test", pb, "a.test", pa));
    for u in ["alice", "bob"] {
        a.add_user(u, PW);
    }
    b.add_user("pushbot", PW);
    let mut app = login(&b, "pushbot", "app");
    phone_for(
        &a,
        "pushbot@b.test/app",
        "phone",
        &["--enable", "n1", "--then", "offline"],
    )
    .finish()
    .assert_ok();
    std::thread::sleep(SETTLE);
    let mut bob = login(&a, "bob", "desk");
    chat(&mut bob, &a.jid("alice"), "over there");
    let iq = app.expect_matching("a push", |e| {
        e.name == "iq" && e.attr("type") == Some("set")
    });
    assert_eq!(iq.attr("from"), Some("alice@a.test"), "{iq}");
    let xml = iq.to_string();
    assert!(
        xml.contains("urn:xmpp:push:summary")
            && xml.contains("bob@a.test")
            && xml.contains("s3cret"),
        "{xml}"
    );
    let id = iq.attr("id").unwrap().to_owned();
    app.send(&format!("<iq type='result' id='{id}' to='alice@a.test'/>"));
    // The answer came back and was claimed, not dropped.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline && !a.log().contains("took a push notification") {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = a.log();
    assert!(
        log.contains("alice: app server pushbot@b.test/app took a push notification"),
        "{log}"
    );
    assert!(!log.contains("claimed by no module"), "{log}");
}

/// A phone whose connection is lost with a message it was sent but never acknowledged
/// (XEP-0198): when it was sent the phone was there, so nothing was pushed; once the
/// session hibernates, it may never have seen it, so its app server is told (as
/// Prosody does at `smacks-hibernation-start`).
#[test]
fn a_phone_cut_off_with_a_message_in_flight_is_notified() {
    const NS_SM: &str = "urn:xmpp:sm:3";
    let (server, port) = server();
    let app = app(port, 8, &[]);
    phone(&server, "setup", &["--enable", "n1", "--then", "offline"])
        .finish()
        .assert_ok();
    let mut a = Conn::connect_starttls(server.c2s_addr(), server.domain(), &server.cert_path());
    a.login_any("alice", PW);
    a.bind(Some("phone"));
    a.send(&format!("<enable xmlns='{NS_SM}' resume='true'/>"));
    let enabled = a.expect_element("<enabled/>");
    assert!(enabled.is("enabled", NS_SM), "{enabled}");
    presence(&mut a, "");
    drain(&mut a);
    let mut bob = login(&server, "bob", "desk");
    chat(&mut bob, &server.jid("alice"), "in flight");
    expect_message(&mut a, "in flight");
    // Gone without acknowledging it, and without closing the stream.
    drop(a);
    let run = app.finish();
    let p = pushes(&run);
    assert_eq!(p.len(), 1, "{run}");
    assert_eq!(p[0]["summary"]["message-count"], "1", "{run}");
    assert_eq!(
        p[0]["summary"]["last-message-sender"],
        server.jid("bob"),
        "{run}"
    );
    assert!(
        server.log().contains("the session waits"),
        "{}",
        server.log()
    );
}

/// A second library reads the notifications: an app server on aioxmpp (logged in as an
/// account here; tests/clients/aioxmpp_push_app.py), whose own pubsub and data-form
/// XSOs parse the publish, the summary and the publish-options.
#[test]
fn an_aioxmpp_app_server_reads_the_notification() {
    let (server, _port) = server();
    server.add_user("pushbot", PW);
    let mut cmd = Command::new(aioxmpp_python());
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/aioxmpp_push_app.py"))
        .args(["--port", &server.c2s_port().to_string()])
        .args(["--jid", &format!("{}/app", server.jid("pushbot"))])
        .args(["--password", PW, "--seconds", "20"]);
    let mut app = RunningClient::command(cmd);
    app.wait_for_event("ready", WAIT);
    let app_jid = format!("{}/app", server.jid("pushbot"));
    phone_for(
        &server,
        &app_jid,
        "phone",
        &["--enable", "n1", "--then", "offline"],
    )
    .finish()
    .assert_ok();
    std::thread::sleep(SETTLE);
    let mut bob = login(&server, "bob", "desk");
    chat(&mut bob, &server.jid("alice"), "hello aioxmpp");
    let push = app.wait_for_event("push", WAIT);
    assert_eq!(push["frm"], server.jid("alice"), "{push}");
    assert_eq!(push["node"], "n1", "{push}");
    let summary = &push["summary"];
    assert_eq!(summary["FORM_TYPE"][0], "urn:xmpp:push:summary", "{push}");
    assert_eq!(summary["message-count"][0], "1", "{push}");
    assert_eq!(
        summary["last-message-sender"][0],
        server.jid("bob"),
        "{push}"
    );
    assert_eq!(push["options"]["secret"][0], "s3cret", "{push}");
    // Its (empty) result came back and was taken.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline && !server.log().contains("took a push notification")
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        server.log().contains("took a push notification"),
        "{}",
        server.log()
    );
}
