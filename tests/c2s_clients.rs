//! Real clients against a real hearth: slixmpp (Python, tests/clients/xmpp_client.py),
//! go-sendxmpp, and xmpp-rs's SCRAM-*-PLUS over a real TLS 1.3 session.
//!
//! RFC 6120 §5 (STARTTLS), §6 (SASL), §7 (bind); XEP-0368 (direct TLS); RFC 6121 §8.5
//! (message delivery); XEP-0199, XEP-0030, XEP-0092, XEP-0202 served by the server.

mod common;

use common::client::Conn;
use common::clients::{Transport, go_sendxmpp, slixmpp};
use common::sasl::{self, Hash, XmppRs};
use common::{Server, ServerOpts};
use std::time::Duration;

const ALICE_PW: &str = "alice's secret, with spaces";
const BOB_PW: &str = "b0b-pa$$word";

fn server_with_users() -> Server {
    let server = Server::start(ServerOpts::default());
    server.add_user("alice", ALICE_PW);
    server.add_user("bob", BOB_PW);
    server
}

/// Logs in with slixmpp forcing `mech` and checks the bound JID is alice's.
fn login_with(mech: &str, transport: Transport) {
    let server = server_with_users();
    let run = slixmpp(&server, "alice", ALICE_PW, mech)
        .transport(transport)
        .run(&["login"]);
    run.assert_ok();
    let jid = run.expect_event("session_start")["jid"]
        .as_str()
        .unwrap()
        .to_string();
    let prefix = format!("{}/", server.jid("alice"));
    assert!(
        jid.starts_with(&prefix) && jid.len() > prefix.len(),
        "bound JID {jid:?} is not a full JID of alice\n{run}"
    );
}

#[test]
fn login_scram_sha_256() {
    login_with("SCRAM-SHA-256", Transport::StartTls);
}

#[test]
fn login_scram_sha_1() {
    login_with("SCRAM-SHA-1", Transport::StartTls);
}

#[test]
fn login_plain() {
    login_with("PLAIN", Transport::StartTls);
}

#[test]
fn login_over_direct_tls() {
    login_with("SCRAM-SHA-256", Transport::DirectTls);
}

/// SCRAM-*-PLUS as tokio-xmpp does it: xmpp-rs's `sasl` crate with the RFC 9266
/// tls-exporter binding of a TLS 1.3 session. (No Python or Go client here can: see
/// README, "Real clients".)
fn login_plus_xmpp_rs(hash: Hash) {
    let server = server_with_users();
    let mut conn = Conn::connect_starttls(server.c2s_addr(), server.domain(), &server.cert_path());
    assert_eq!(
        conn.tls_version(),
        Some(futures_rustls::rustls::ProtocolVersion::TLSv1_3),
        "tls-exporter needs TLS 1.3"
    );
    let mut mech = XmppRs::scram(hash, "alice", ALICE_PW, Some(conn.tls_exporter()));
    let name = sasl::Mechanism::name(&mech);
    assert!(
        conn.mechanisms().contains(&name),
        "{name} not offered: {:?}",
        conn.mechanisms()
    );
    conn.authenticate(&mut mech)
        .unwrap_or_else(|e| panic!("{name} with tls-exporter failed: {e:?}"));
    let jid = conn.bind(Some("plus"));
    assert_eq!(jid, format!("{}/plus", server.jid("alice")));
    conn.assert_alive();
    conn.close();
}

#[test]
fn login_scram_sha_256_plus_tls_exporter_xmpp_rs() {
    login_plus_xmpp_rs(Hash::Sha256);
}

#[test]
fn login_scram_sha_1_plus_tls_exporter_xmpp_rs() {
    login_plus_xmpp_rs(Hash::Sha1);
}

/// RFC 6121 §8.5.3.1 delivery to a full JID, §8.1.2.1 of RFC 6120 `from` stamping:
/// each side sees the other's full JID.
#[test]
fn message_round_trip_has_correct_from() {
    let server = server_with_users();
    let alice_full = format!("{}/laptop", server.jid("alice"));
    let bob_full = format!("{}/phone", server.jid("bob"));
    let mut receiver = slixmpp(&server, "bob", BOB_PW, "SCRAM-SHA-256")
        .resource("phone")
        .spawn(&[
            "receive",
            "--expect-from",
            &alice_full,
            "--expect-body",
            "hello bob",
            "--echo",
        ]);
    receiver.wait_for_event("ready", Duration::from_secs(30));
    let sender = slixmpp(&server, "alice", ALICE_PW, "SCRAM-SHA-256")
        .resource("laptop")
        .run(&[
            "send",
            "--to",
            &bob_full,
            "--body",
            "hello bob",
            "--expect-reply",
        ]);
    let received = receiver.finish();
    received.assert_ok();
    sender.assert_ok();
    assert_eq!(
        received.expect_event("message")["sender"],
        alice_full.as_str()
    );
    let reply = sender.expect_event("message");
    assert_eq!(reply["sender"], bob_full.as_str(), "{sender}");
    assert_eq!(reply["body"], "echo: hello bob");
}

/// Runs one server-query action and returns its event.
fn query(action: &str, event: &str) -> serde_json::Value {
    let server = server_with_users();
    let run = slixmpp(&server, "alice", ALICE_PW, "SCRAM-SHA-256").run(&[action]);
    run.assert_ok();
    run.expect_event(event).clone()
}

#[test]
fn ping_server() {
    let pong = query("ping", "pong");
    assert_eq!(pong["target"], "test.local");
}

#[test]
fn disco_info_of_server() {
    let info = query("disco", "disco_info");
    let identities = info["identities"].as_array().unwrap();
    assert!(
        identities
            .iter()
            .any(|i| i["category"] == "server" && i["type"] == "im"),
        "no server/im identity (XEP-0030 §3.1, registry): {info}"
    );
    let features: Vec<&str> = info["features"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f.as_str())
        .collect();
    for needed in [
        "http://jabber.org/protocol/disco#info",
        "urn:xmpp:ping",
        "jabber:iq:version",
        "urn:xmpp:time",
    ] {
        assert!(
            features.contains(&needed),
            "{needed} not advertised: {features:?}"
        );
    }
}

#[test]
fn software_version_of_server() {
    let version = query("version", "version");
    assert!(
        !version["name"].as_str().unwrap_or("").is_empty(),
        "XEP-0092 <name/> is required: {version}"
    );
    assert!(
        !version["version"].as_str().unwrap_or("").is_empty(),
        "XEP-0092 <version/> is required: {version}"
    );
}

#[test]
fn entity_time_of_server() {
    // The script checks the XEP-0082 shapes of <tzo/> and <utc/>.
    let time = query("time", "time");
    assert!(time["utc"].as_str().unwrap().ends_with('Z'), "{time}");
}

/// RFC 6120 §6.5.10: a wrong password is `<not-authorized/>`; the account is not
/// locked and the right password works right after.
fn wrong_then_right_password(mech: &str) {
    let server = server_with_users();
    let wrong = slixmpp(&server, "alice", "not the password", mech).run(&["login"]);
    assert_eq!(
        wrong.code(),
        Some(2),
        "wrong password must fail SASL:\n{wrong}"
    );
    assert_eq!(
        wrong.expect_event("auth_failed")["condition"],
        "not-authorized",
        "{wrong}"
    );
    assert!(wrong.event("session_start").is_none(), "{wrong}");
    slixmpp(&server, "alice", ALICE_PW, mech)
        .run(&["login"])
        .assert_ok();
}

#[test]
fn wrong_password_scram_sha_256_then_right() {
    wrong_then_right_password("SCRAM-SHA-256");
}

#[test]
fn wrong_password_plain_then_right() {
    wrong_then_right_password("PLAIN");
}

#[test]
fn unknown_user_is_not_authorized() {
    let server = server_with_users();
    let run = slixmpp(&server, "nobody", "whatever", "SCRAM-SHA-256").run(&["login"]);
    assert_eq!(run.code(), Some(2), "{run}");
    assert_eq!(
        run.expect_event("auth_failed")["condition"],
        "not-authorized",
        "{run}"
    );
}

/// A shell script's way in: go-sendxmpp (PLAIN over STARTTLS or direct TLS) messages
/// the bare JID of a user whose slixmpp client is online (RFC 6121 §8.5.2.1.1).
fn go_sendxmpp_to_slixmpp(transport: Transport) {
    let server = server_with_users();
    let body = "21.5 °C in the living room";
    let mut receiver = slixmpp(&server, "bob", BOB_PW, "SCRAM-SHA-1").spawn(&[
        "receive",
        "--expect-from",
        &server.jid("alice"),
        "--expect-body",
        body,
    ]);
    receiver.wait_for_event("ready", Duration::from_secs(30));
    let sent = go_sendxmpp(
        &server,
        "alice",
        ALICE_PW,
        &server.jid("bob"),
        body,
        transport,
    );
    let received = receiver.finish();
    assert!(sent.succeeded(), "go-sendxmpp failed:\n{sent}");
    received.assert_ok();
    let message = received.expect_event("message");
    let from = message["sender"].as_str().unwrap();
    assert!(
        from.starts_with(&format!("{}/", server.jid("alice"))),
        "from {from:?} is not alice's full JID"
    );
}

#[test]
fn go_sendxmpp_starttls_to_online_user() {
    go_sendxmpp_to_slixmpp(Transport::StartTls);
}

#[test]
fn go_sendxmpp_direct_tls_to_online_user() {
    go_sendxmpp_to_slixmpp(Transport::DirectTls);
}
