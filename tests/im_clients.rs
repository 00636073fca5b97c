//! RFC 6121 end to end with a real client library (slixmpp, tests/clients/xmpp_client.py):
//! two people subscribe to each other, see each other's presence and status text, chat;
//! one goes offline and gets the message sent meanwhile at the next login (XEP-0160).

mod common;

use common::clients::slixmpp;
use common::{Server, ServerOpts};
use std::time::Duration;

const ALICE_PW: &str = "alice's secret";
const BOB_PW: &str = "bob's secret";
const WAIT: Duration = Duration::from_secs(20);

#[test]
fn two_friends_with_slixmpp() {
    let server = Server::start(ServerOpts::default());
    server.add_user("alice", ALICE_PW);
    server.add_user("bob", BOB_PW);
    let (aj, bj) = (server.jid("alice"), server.jid("bob"));

    let mut alice = slixmpp(&server, "alice", ALICE_PW, "SCRAM-SHA-256")
        .resource("phone")
        .spawn(&[
            "chat-with",
            "--contact",
            &bj,
            "--status",
            "in the garden",
            "--expect-status",
            "reading",
            "--send",
            "hello bob",
            "--wait-offline",
            "--send-after-offline",
            "see you later",
        ]);
    let mut bob = slixmpp(&server, "bob", BOB_PW, "SCRAM-SHA-256")
        .resource("desk")
        .spawn(&[
            "chat-with",
            "--contact",
            &aj,
            "--status",
            "reading",
            "--expect-status",
            "in the garden",
            "--expect-body",
            "hello bob",
        ]);
    // Each sees the other subscribed both ways, with the other's status text.
    let f = alice.wait_for_event("friends", WAIT);
    assert_eq!(f["status"], "reading");
    let f = bob.wait_for_event("friends", WAIT);
    assert_eq!(f["status"], "in the garden");
    // Bob gets alice's message, then leaves.
    let m = bob.wait_for_event("message", WAIT);
    assert_eq!(m["body"], "hello bob");
    assert!(m["sender"].as_str().unwrap().starts_with(&aj));
    bob.finish().assert_ok();
    // Alice sees him go and writes anyway.
    alice.wait_for_event("contact_offline", WAIT);
    alice.finish().assert_ok();

    // The roster is kept on the server: both sides read "both".
    let run = slixmpp(&server, "bob", BOB_PW, "SCRAM-SHA-256").run(&["roster"]);
    run.assert_ok();
    assert_eq!(
        run.expect_event("roster")["items"][&aj]["subscription"],
        "both"
    );

    // Bob comes back and gets the stored message, stamped by the server.
    let run = slixmpp(&server, "bob", BOB_PW, "SCRAM-SHA-256").run(&[
        "receive",
        "--expect-from",
        &aj,
        "--expect-body",
        "see you later",
    ]);
    run.assert_ok();
    let m = run.expect_event("message");
    assert_eq!(m["delay_from"], server.domain());
    assert!(
        m["delay_stamp"].as_str().is_some_and(|s| s.ends_with('Z')),
        "{run}"
    );
}
