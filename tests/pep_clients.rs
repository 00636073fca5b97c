//! XEP-0163 Personal Eventing Protocol with third-party client libraries (issue 19, "Tests"):
//! OMEMO (XEP-0384) end to end through hearth's PEP, between two clients of one OMEMO
//! library (slixmpp-omemo) and between two implementations (python-omemo and Gajim's
//! python-nbxmpp with python-axolotl), on one server and across federation with Prosody
//! and ejabberd (tests/common/peers.rs), and the PEP, avatar (XEP-0084), nick (XEP-0172),
//! bookmark (XEP-0048/0223/0402), private storage (XEP-0049) and vCard (XEP-0054) code of
//! slixmpp and aioxmpp.
//!
//! Each test runs one script from `tests/clients/` that logs several accounts in at once
//! and prints one JSON line per check; the test asserts each check by name, so a failure
//! says which rule broke. The scripts were first checked against Prosody 0.12 (mod_pep,
//! mod_private, mod_bookmarks, mod_vcard_legacy): `HEARTH_TEST_SERVER=prosody cargo nextest
//! run --test pep_clients -E 'not test(federation)'` runs the same tests there (the
//! federation ones need a hearth with s2s on one side).
//!
//! The Python environments: Debian's slixmpp (`/usr/bin/python3`) for pep_slixmpp.py;
//! aioxmpp 0.13 in `<target dir>/aioxmpp-venv` (`HEARTH_AIOXMPP_PYTHON`); slixmpp-omemo
//! 2.2 (slixmpp 1.17, python-omemo with the oldmemo and twomemo backends) in
//! `<target dir>/omemo-venv` (`HEARTH_OMEMO_PYTHON`); Debian's python3-nbxmpp and
//! python3-axolotl for omemo_gajim.py. `.ci/run` installs them all.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::clients::{ClientRun, RunningClient, aioxmpp_python, python};
use common::peers::{Net, Peer, PeerKind, Trust};
use common::{Server, ServerOpts};
use serde_json::Value;

const PW: &str = "a fine password";
/// Each script bounds its own run (`--timeout`); the harness waits a little longer for
/// its last line before killing it. OMEMO generates 100 pre-keys per account and both
/// namespaces' bundles, so it gets the most.
const RUN_SECS: u64 = 90;
const STEP_SECS: u64 = 20;

const NS_AXOLOTL: &str = "eu.siacs.conversations.axolotl";
const NS_OMEMO2: &str = "urn:xmpp:omemo:2";

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(name)
}

/// The Python with slixmpp-omemo: `HEARTH_OMEMO_PYTHON`, else the venv `.ci/run` makes
/// beside the build, `<target dir>/omemo-venv` (PyPI's slixmpp 1.17 there, since
/// slixmpp-omemo 2 needs more than Debian's 1.8.3).
fn omemo_python() -> PathBuf {
    if let Ok(p) = std::env::var("HEARTH_OMEMO_PYTHON") {
        return p.into();
    }
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let target = target.parent().map(PathBuf::from).unwrap_or(target);
    target.join("omemo-venv/bin/python3")
}

/// Fails with the install hint unless `python` can import `module`.
fn require(python: &std::path::Path, module: &str, hint: &str) {
    let ok = Command::new(python)
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "{} cannot import {module}: {hint}", python.display());
}

fn server(users: &[&str]) -> Server {
    let server = Server::start(ServerOpts::default());
    for u in users {
        server.add_user(u, PW);
    }
    server
}

/// Runs `cmd` to its "exit" line (or kills it past [`RUN_SECS`] plus a grace) and
/// returns the run.
fn run_script(cmd: Command) -> ClientRun {
    let mut client = RunningClient::command(cmd);
    client.wait_for_event("exit", Duration::from_secs(RUN_SECS + 15));
    client.finish()
}

/// The check named `name`: panics with the whole run unless it was reported and passed.
fn assert_check(run: &ClientRun, server: &Server, name: &str) {
    let check = run
        .events
        .iter()
        .find(|e| e["event"] == "check" && e["name"] == name)
        .unwrap_or_else(|| {
            panic!(
                "check {name:?} never reported:\n{run}\n--- server log ---\n{}",
                server.log()
            )
        });
    assert_eq!(
        check["ok"],
        true,
        "check {name:?} failed: {}\n{run}\n--- server log ---\n{}",
        check["detail"],
        server.log()
    );
}

fn assert_exit_ok(run: &ClientRun, server: &Server) {
    assert!(
        run.succeeded(),
        "script failed:\n{run}\n--- server log ---\n{}",
        server.log()
    );
}

fn events<'a>(run: &'a ClientRun, name: &'a str) -> impl Iterator<Item = &'a Value> {
    run.events.iter().filter(move |e| e["event"] == name)
}

// ------------------------------------------------------------------------------- OMEMO

/// XEP-0384 through XEP-0163: both accounts publish device lists and bundles with
/// `pubsub#access_model=open` (publish-options, XEP-0060 §7.1.5), with no presence
/// subscription between them each reads the other's device list, the sender builds a
/// session from the recipient's bundle and the recipient decrypts; the answer goes back
/// over that session; then the same with `urn:xmpp:omemo:2`.
#[test]
fn omemo_session_between_two_slixmpp_omemo_clients() {
    let py = omemo_python();
    require(
        &py,
        "slixmpp_omemo",
        "run .ci/run (it makes <target dir>/omemo-venv), or set HEARTH_OMEMO_PYTHON",
    );
    let server = server(&["alice", "bob"]);
    let mut cmd = Command::new(&py);
    cmd.arg(script("omemo_client.py"))
        .args(["--host", "127.0.0.1", "--port"])
        .arg(server.c2s_port().to_string())
        .arg("--cafile")
        .arg(server.cert_path())
        .args(["--jid", &server.jid("alice"), "--password", PW])
        .args(["--peer", &server.jid("bob"), "--peer-password", PW])
        .args(["--body", "the door code is 4711", "--omemo2"])
        .args(["--step-timeout", &STEP_SECS.to_string()])
        .args(["--timeout", &RUN_SECS.to_string()]);
    let run = run_script(cmd);
    assert_exit_ok(&run, &server);

    // Every OMEMO node was created open, as the publish-options asked.
    let configs: Vec<&Value> = events(&run, "node_config").collect();
    assert_eq!(configs.len(), 8, "{run}");
    for c in &configs {
        assert_eq!(c["access_model"], "open", "{c}");
    }
    // Each read the other's device lists (both namespaces) without a subscription.
    assert_eq!(events(&run, "devicelist").count(), 4, "{run}");
    // With no presence subscription, slixmpp-omemo subscribed to the other's device lists
    // explicitly (XEP-0060 §6.1), and the service sent the current list (§6.1.7).
    for (account, publisher) in [("alice", "bob"), ("bob", "alice")] {
        for node in [
            "eu.siacs.conversations.axolotl.devicelist",
            "urn:xmpp:omemo:2:devices",
        ] {
            assert!(
                events(&run, "devicelist_notification").any(|e| e["account"] == account
                    && e["publisher"] == server.jid(publisher)
                    && e["node"] == node),
                "{account} got no {node} notification from {publisher}:\n{run}"
            );
        }
    }

    let decrypted: Vec<(&str, &str, &str)> = events(&run, "decrypted")
        .map(|e| {
            (
                e["recipient"].as_str().unwrap_or_default(),
                e["namespace"].as_str().unwrap_or_default(),
                e["body"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        decrypted,
        [
            ("bob", NS_AXOLOTL, "the door code is 4711"),
            ("alice", NS_AXOLOTL, "re: the door code is 4711"),
            ("bob", NS_OMEMO2, "omemo2: the door code is 4711"),
        ],
        "{run}"
    );
    // The plaintext never reached the server: no message body in its log at any level
    // the test runs it with.
    assert!(
        !server.log().contains("the door code is 4711"),
        "a plaintext in the server log"
    );
}

/// Two different OMEMO implementations through hearth: python-omemo (slixmpp-omemo) and
/// Gajim's stack (python-nbxmpp's OMEMO module with python-axolotl). The Gajim side
/// publishes its bundle and device list with nbxmpp (publish-options `access_model=open`)
/// and waits; the python-omemo side reads them, sends a pre-key message; the Gajim side
/// reads the sender's device list and bundle from PEP, decrypts and answers over the
/// session; the python-omemo side decrypts the answer.
#[test]
fn omemo_between_python_omemo_and_gajims_nbxmpp_axolotl() {
    let py = omemo_python();
    require(
        &py,
        "slixmpp_omemo",
        "run .ci/run (it makes <target dir>/omemo-venv), or set HEARTH_OMEMO_PYTHON",
    );
    require(
        std::path::Path::new(&python()),
        "axolotl, nbxmpp",
        "run .ci/run, or `apt-get install python3-axolotl python3-nbxmpp`",
    );
    let server = server(&["alice", "bob"]);
    let mut gajim = Command::new(python());
    gajim
        .arg(script("omemo_gajim.py"))
        .args(["--port", &server.c2s_port().to_string()])
        .args(["--jid", &server.jid("bob"), "--password", PW])
        .args(["--timeout", &RUN_SECS.to_string()]);
    let mut gajim = RunningClient::command(gajim);
    gajim.wait_for_event("ready", Duration::from_secs(STEP_SECS));

    let mut cmd = Command::new(&py);
    cmd.arg(script("omemo_client.py"))
        .args(["--host", "127.0.0.1", "--port"])
        .arg(server.c2s_port().to_string())
        .arg("--cafile")
        .arg(server.cert_path())
        .args(["--jid", &server.jid("alice"), "--password", PW])
        .args(["--external-peer", &server.jid("bob")])
        .args(["--body", "the spare key is under the mat"])
        .args(["--step-timeout", &STEP_SECS.to_string()])
        .args(["--timeout", &RUN_SECS.to_string()]);
    let run = run_script(cmd);
    gajim.wait_for_event("exit", Duration::from_secs(RUN_SECS + 15));
    let gajim = gajim.finish();
    assert!(
        run.succeeded() && gajim.succeeded(),
        "python-omemo side:\n{run}\nGajim side:\n{gajim}\n--- server log ---\n{}",
        server.log()
    );
    let got = gajim.expect_event("decrypted");
    assert_eq!(got["body"], "the spare key is under the mat", "{gajim}");
    assert_eq!(got["prekey"], true, "{gajim}");
    // The Gajim side found the sender's device in its device list and its bundle.
    assert!(gajim.event("bundle").is_some(), "{gajim}");
    let answer = run.expect_event("decrypted");
    assert_eq!(
        answer["body"], "re: the spare key is under the mat",
        "{run}"
    );
    assert_eq!(answer["namespace"], NS_AXOLOTL, "{run}");
}

/// OMEMO across federation between hearth and Prosody 0.12, each server's PEP holding
/// its own user's keys: python-omemo (slixmpp-omemo) on one side, Gajim's nbxmpp with
/// python-axolotl on the other. The python-omemo side fetches the other's device list
/// and bundle over the s2s link and subscribes to the device list there (XEP-0060 §6.1,
/// the two have no presence subscription); the Gajim side reads the sender's device list
/// and bundle from the sender's server as a remote requester of `open` nodes; the
/// messages cross the link both ways.
fn omemo_across_federation(kind: PeerKind, python_omemo_on_hearth: bool) {
    if let Some(why) = Net::unavailable() {
        println!("SKIPPED: {why}");
        return;
    }
    let py = omemo_python();
    require(
        &py,
        "slixmpp_omemo",
        "run .ci/run (it makes <target dir>/omemo-venv), or set HEARTH_OMEMO_PYTHON",
    );
    let net = Net::new();
    let slot = net.reserve("hearth.test", Trust::SelfSigned);
    let hearth = Server::start(ServerOpts {
        domain: slot.domain.clone(),
        s2s: Some(format!(
            "listen = [\"{}\"]\nresolvers = [\"{}:53\"]\nca_file = \"{}\"\n",
            slot.s2s_addr(),
            net.dns_addr(),
            net.ca_cert_path().display()
        )),
        ..ServerOpts::default()
    });
    let peer_domain = format!("{}.test", kind.package());
    let peer = Peer::start(kind, &net, &peer_domain, net.next_addr(), Trust::SelfSigned);
    hearth.add_user("alice", PW);
    peer.add_user("bob", PW);
    // (jid, address, certificate) of each side's user.
    let on_hearth = (hearth.jid("alice"), hearth.c2s_addr(), hearth.cert_path());
    let on_peer = (
        peer.jid("bob"),
        peer.c2s_addr(),
        peer.client_cafile().to_path_buf(),
    );
    let (omemo_side, gajim_side) = if python_omemo_on_hearth {
        (on_hearth, on_peer)
    } else {
        (on_peer, on_hearth)
    };

    let mut gajim = Command::new(python());
    gajim
        .arg(script("omemo_gajim.py"))
        .args(["--host", &gajim_side.1.ip().to_string()])
        .args(["--port", &gajim_side.1.port().to_string()])
        .args(["--jid", &gajim_side.0, "--password", PW])
        .args(["--timeout", &RUN_SECS.to_string()]);
    let mut gajim = RunningClient::command(gajim);
    gajim.wait_for_event("ready", Duration::from_secs(STEP_SECS));

    let mut cmd = Command::new(&py);
    cmd.arg(script("omemo_client.py"))
        .args(["--host", &omemo_side.1.ip().to_string()])
        .args(["--port", &omemo_side.1.port().to_string()])
        .arg("--cafile")
        .arg(&omemo_side.2)
        .args(["--jid", &omemo_side.0, "--password", PW])
        .args(["--external-peer", &gajim_side.0])
        .args(["--body", "the boat leaves at six"])
        // The first request to the other server costs DNS, TCP, TLS and dialback.
        .args(["--step-timeout", &(2 * STEP_SECS).to_string()])
        .args(["--timeout", &RUN_SECS.to_string()]);
    let run = run_script(cmd);
    gajim.wait_for_event("exit", Duration::from_secs(RUN_SECS + 15));
    let gajim = gajim.finish();
    assert!(
        run.succeeded() && gajim.succeeded(),
        "python-omemo side:\n{run}\nGajim side:\n{gajim}\n--- hearth log ---\n{}\n--- peer log ---\n{}",
        hearth.log(),
        peer.log()
    );
    assert_eq!(
        gajim.expect_event("decrypted")["body"],
        "the boat leaves at six",
        "{gajim}"
    );
    assert!(gajim.event("bundle").is_some(), "{gajim}");
    assert_eq!(
        run.expect_event("decrypted")["body"],
        "re: the boat leaves at six",
        "{run}"
    );
    // The explicit subscription across the link delivered the current device list
    // (XEP-0060 §6.1.7) from the other server's PEP. Not from ejabberd's: 23.01 accepts
    // the subscription but sends no last item on it (hearth's s2s log shows nothing from
    // it but the chat message), which the XEP leaves to the node's configuration.
    let sends_last_on_subscribe = kind != PeerKind::Ejabberd || !python_omemo_on_hearth;
    assert!(
        !sends_last_on_subscribe
            || events(&run, "devicelist_notification")
                .any(|e| e["publisher"] == gajim_side.0.as_str()
                    && e["node"] == "eu.siacs.conversations.axolotl.devicelist"),
        "no device list notification from {} across the link:\n{run}",
        gajim_side.0
    );
}

/// python-omemo on hearth, Gajim's stack on Prosody.
#[test]
fn omemo_across_federation_from_hearth_to_prosody() {
    omemo_across_federation(PeerKind::Prosody, true);
}

/// python-omemo on Prosody, Gajim's stack on hearth: hearth's PEP serves a remote
/// requester and a remote explicit subscriber.
#[test]
fn omemo_across_federation_from_prosody_to_hearth() {
    omemo_across_federation(PeerKind::Prosody, false);
}

/// The same with ejabberd 23.01 (mod_pubsub's PEP) on the other side, both ways.
#[test]
fn omemo_across_federation_with_ejabberd() {
    omemo_across_federation(PeerKind::Ejabberd, true);
    omemo_across_federation(PeerKind::Ejabberd, false);
}

// ------------------------------------------------------------------------------ slixmpp

fn slixmpp_pep(server: &Server, skip: &[&str]) -> ClientRun {
    let mut cmd = Command::new(python());
    cmd.arg(script("pep_slixmpp.py"))
        .args(["--host", "127.0.0.1", "--port"])
        .arg(server.c2s_port().to_string())
        .arg("--cafile")
        .arg(server.cert_path())
        .args(["--alice", &server.jid("alice"), "--bob", &server.jid("bob")])
        .args(["--carol", &server.jid("carol")])
        .args(["--mallory", &server.jid("mallory"), "--password", PW])
        .args(["--step-timeout", &STEP_SECS.to_string()])
        .args(["--timeout", &RUN_SECS.to_string()]);
    for s in skip {
        cmd.args(["--skip", s]);
    }
    run_script(cmd)
}

/// slixmpp's xep_0163/0060/0084/0172/0115/0223/0048 plugins: avatar and nick published
/// and pushed through caps `+notify` to the owner's other resource and a contact, and as
/// last items to a contact whose caps hash hearth has never seen (XEP-0163 §4.3,
/// XEP-0115 §6.3); items by id and with max_items; a stranger refused on the default
/// `presence` access model; XEP-0223 bookmarks (`whitelist`) closed to a contact; and the
/// 100 KB avatar fetched whole; the owner's node management: `max_items` from publish-options, the configuration read and
/// changed (a stranger reads once it is `open`), retract with notify, purge, delete; and
/// beside PEP, XEP-0048 bookmarks in XEP-0049 private storage and a XEP-0054 vCard.
#[test]
fn slixmpp_pep_avatar_nick_caps_notify_and_access() {
    let server = server(&["alice", "bob", "carol", "mallory"]);
    let run = slixmpp_pep(&server, &[]);
    for check in [
        "subscribed",
        "notify-own-resource",
        "notify-contact",
        "notify-unseen-caps",
        "retrieve-avatar",
        "retrieve-max-items",
        "stranger-forbidden",
        "bookmarks-private",
        "big-avatar",
        "max-items",
        "node-config",
        "retract-notify",
        "purge",
        "delete",
        "private-storage",
        "vcard",
    ] {
        assert_check(&run, &server, check);
    }
    assert_exit_ok(&run, &server);
    // The unseen hash really was unseen: carol's caps carried the random feature.
    let caps = events(&run, "caps").next().expect("no caps event");
    assert!(
        caps["feature"]
            .as_str()
            .is_some_and(|f| f.starts_with("urn:example:hearth:unseen:")),
        "{caps}"
    );
}

// ------------------------------------------------------------------------------ aioxmpp

fn aioxmpp_pep(server: &Server, skip: &[&str]) -> ClientRun {
    let py = aioxmpp_python();
    require(
        &py,
        "aioxmpp",
        "run .ci/run (it makes <target dir>/aioxmpp-venv), or set HEARTH_AIOXMPP_PYTHON",
    );
    let mut cmd = Command::new(&py);
    cmd.arg(script("pep_aioxmpp.py"))
        .args(["--host", "127.0.0.1", "--port"])
        .arg(server.c2s_port().to_string())
        .args(["--alice", &server.jid("alice"), "--bob", &server.jid("bob")])
        .args(["--carol", &server.jid("carol")])
        .args(["--mallory", &server.jid("mallory"), "--password", PW])
        .args(["--step-timeout", &STEP_SECS.to_string()])
        .args(["--timeout", &RUN_SECS.to_string()]);
    for s in skip {
        cmd.args(["--skip", s]);
    }
    run_script(cmd)
}

/// aioxmpp's PEPClient, AvatarService (notify claimed through EntityCapsService) and
/// PubSubClient: the avatar pushed to a contact and, as the last item, to a contact with
/// an unseen caps hash; the image fetched; a stranger refused; XEP-0402 bookmarks
/// published with `access_model=whitelist` and `max_items=max` read back by the owner
/// and refused to a contact; BookmarkClient (XEP-0049) and a vCard photo (XEP-0054); the
/// PEP avatar as the vCard photo (XEP-0398) and its hash in presence (XEP-0153); the
/// XEP-0049 and XEP-0402 bookmarks as one list (XEP-0411).
#[test]
fn aioxmpp_pep_avatar_caps_notify_and_access() {
    let server = server(&["alice", "bob", "carol", "mallory"]);
    let run = aioxmpp_pep(&server, &[]);
    for check in [
        "subscribed",
        "notify-contact",
        "notify-unseen-caps",
        "retrieve-avatar",
        "stranger-forbidden",
        "avatar-vcard",
        "bookmarks-pep",
        "private-bookmarks",
        "bookmarks-compat",
        "vcard",
    ] {
        assert_check(&run, &server, check);
    }
    assert_exit_ok(&run, &server);
}
