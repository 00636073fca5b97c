//! XEP-0198 with third-party implementations: slixmpp's xep_0198 plugin and aioxmpp's
//! built-in stream management, each through a proxy the test cuts like a phone changing
//! networks (the client's connection closes, the server's side stays half-open). Messages
//! sent before and during the cut all arrive, each once, after the client resumes.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::client::Conn;
use common::clients::{RunningClient, aioxmpp_python, python};
use common::im::{chat, login};
use common::proxy::Proxy;
use common::{Server, ServerOpts};
use serde_json::Value;

const PW: &str = "a fine password";

fn server() -> Server {
    let server = Server::start(ServerOpts::default());
    for u in ["alice", "bob"] {
        server.add_user(u, PW);
    }
    server
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(name)
}

/// Sends `from..=to` to alice's bare JID and waits for the server to have routed them.
fn send_range(server: &Server, b: &mut Conn, from: u32, to: u32) {
    for i in from..=to {
        chat(b, &server.jid("alice"), &format!("m{i}"));
    }
    b.assert_alive();
}

/// The client's final list of bodies: all ten, in order, none twice.
fn check_all_once(events: &[Value]) {
    let done = events
        .iter()
        .find(|e| e["event"] == "done")
        .unwrap_or_else(|| panic!("no done: {events:?}"));
    let bodies: Vec<&str> = done["bodies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap())
        .collect();
    let expected: Vec<String> = (1..=10).map(|i| format!("m{i}")).collect();
    assert_eq!(bodies, expected, "lost, doubled or out of order");
}

/// The scenario for any client: five messages, the cut, five more while the server
/// still writes to the dead connection, then the client resumes and gets them all.
fn cut_and_resume(server: &Server, proxy: &Proxy, mut client: RunningClient) -> Vec<Value> {
    client.wait_for_event("ready", Duration::from_secs(20));
    let mut b = login(server, "bob", "pc");
    send_range(server, &mut b, 1, 5);
    client.wait_for_event("message", Duration::from_secs(10));
    // Let the first five arrive (and perhaps be acknowledged) before the cut.
    std::thread::sleep(Duration::from_millis(500));
    proxy.cut();
    send_range(server, &mut b, 6, 10);
    let run = client.finish();
    assert!(
        run.succeeded(),
        "client failed: {:?}\n{}\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
    assert!(proxy.connections() >= 2, "the client never reconnected");
    let log = server.log();
    assert!(
        log.contains("resumed ("),
        "the server saw no resumption:\n{log}"
    );
    // The old connection was still open on the server's side: it was told to let go.
    assert!(
        log.contains("session resumed on another connection"),
        "the half-open connection was not the one resumed from:\n{log}"
    );
    run.events
}

#[test]
fn slixmpp_resumes_after_the_connection_is_cut() {
    let server = server();
    let proxy = Proxy::start(server.c2s_addr());
    let mut cmd = Command::new(python());
    cmd.arg(script("sm_client.py"))
        .args(["--host", "127.0.0.1", "--port"])
        .arg(proxy.addr().port().to_string())
        .args(["--jid", &format!("{}/phone", server.jid("alice"))])
        .args(["--password", PW, "--count", "10", "--timeout", "25"])
        .arg("--cafile")
        .arg(server.cert_path());
    let events = cut_and_resume(&server, &proxy, RunningClient::command(cmd));
    assert!(
        events.iter().any(|e| e["event"] == "resumed"),
        "slixmpp did not resume: {events:?}"
    );
    assert!(!events.iter().any(|e| e["event"] == "resume_failed"));
    check_all_once(&events);
}

#[test]
fn aioxmpp_resumes_after_the_connection_is_cut() {
    let server = server();
    let proxy = Proxy::start(server.c2s_addr());
    let mut cmd = Command::new(aioxmpp_python());
    cmd.arg(script("aioxmpp_sm.py"))
        .args(["--host", "127.0.0.1", "--port"])
        .arg(proxy.addr().port().to_string())
        .args(["--jid", &format!("{}/tablet", server.jid("alice"))])
        .args(["--password", PW, "--count", "10", "--timeout", "25"]);
    let events = cut_and_resume(&server, &proxy, RunningClient::command(cmd));
    let ready = events.iter().find(|e| e["event"] == "ready").unwrap();
    assert_eq!(ready["sm_resumable"], true, "{ready}");
    assert!(
        events.iter().any(|e| e["event"] == "resumed"),
        "aioxmpp did not resume: {events:?}"
    );
    // Destroyed only by the clean close at the end, never before everything arrived.
    let before_done = events.iter().take_while(|e| e["event"] != "done");
    assert!(
        !before_done.into_iter().any(|e| e["event"] == "destroyed"),
        "{events:?}"
    );
    check_all_once(&events);
}
