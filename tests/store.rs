//! XEP-0049 private XML storage, XEP-0054 vcard-temp, XEP-0157 contact addresses and
//! XEP-0215 external services against a running hearth: real client libraries' own
//! implementations (slixmpp's xep_0049, xep_0048, xep_0054 and xep_0128 plugins;
//! aioxmpp's PrivateXMLService and VCardService), and raw XML for the errors (oversize,
//! reserved namespaces, another account writing, the byte quota) and what a SIGKILL and restart keep.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::client::{Conn, NS_STANZA_ERRORS, new_id};
use common::clients::{RunningClient, aioxmpp_python, python};
use common::xml::Node;
use common::{Server, ServerOpts};

const PW: &str = "a fine password";
const NS_PRIVATE: &str = "jabber:iq:private";
const NS_VCARD: &str = "vcard-temp";
const NS_EXTDISCO: &str = "urn:xmpp:extdisco:2";
const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const NS_DATA: &str = "jabber:x:data";
const SECRET: &str = "coturn static auth secret";

/// The settings the tests run with: contact addresses, a STUN and a TURN server, small
/// size limits and a small byte quota so that the limits are quick to reach.
const EXTRA: &str = "
[private_storage]
max_item_bytes = 4096

[vcard]
max_bytes = 16384

[contact]
abuse = [\"mailto:abuse@test.local\", \"xmpp:admin@test.local\"]
security = [\"mailto:security@test.local\"]

[[external_services]]
type = \"stun\"
host = \"stun.test.local\"
port = 3478
transport = \"udp\"

[[external_services]]
type = \"turn\"
host = \"turn.test.local\"
port = 3478
transport = \"udp\"
secret = \"coturn static auth secret\"
credentials_ttl_secs = 3600

[limits]
max_stored_bytes_per_account = 24576
";

fn server() -> Server {
    let server = Server::start(ServerOpts {
        extra_toml: EXTRA.into(),
        ..ServerOpts::default()
    });
    for u in ["alice", "bob"] {
        server.add_user(u, PW);
    }
    server
}

fn login(server: &Server, user: &str) -> Conn {
    Conn::login(
        server.c2s_addr(),
        server.domain(),
        &server.cert_path(),
        user,
        PW,
        Some("raw"),
    )
}

fn iq(c: &mut Conn, ty: &str, to: Option<&str>, payload: &str) -> Node {
    let id = new_id("s");
    let to = to.map(|t| format!(" to='{t}'")).unwrap_or_default();
    c.send(&format!("<iq type='{ty}' id='{id}'{to}>{payload}</iq>"));
    c.expect_iq_reply(&id)
}

fn error_of(reply: &Node) -> Option<&str> {
    reply
        .child("error", common::client::NS_CLIENT)
        .and_then(|e| e.condition(NS_STANZA_ERRORS))
}

fn private(inner: &str) -> String {
    format!("<query xmlns='{NS_PRIVATE}'>{inner}</query>")
}

/// Runs `tests/clients/store_slixmpp.py` as `user` with `args`, to completion.
fn slixmpp_store(server: &Server, user: &str, args: &[&str]) -> common::clients::ClientRun {
    common::clients::check_slixmpp();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/store_slixmpp.py");
    let mut cmd = Command::new(python());
    cmd.arg(script)
        .args(["--port", &server.c2s_port().to_string()])
        .arg("--cafile")
        .arg(server.cert_path())
        .args(["--jid", &server.jid(user), "--password", PW])
        .args(args);
    RunningClient::command(cmd).finish()
}

fn aioxmpp_store(server: &Server, user: &str, args: &[&str]) -> common::clients::ClientRun {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/aioxmpp_store.py");
    let mut cmd = Command::new(aioxmpp_python());
    cmd.arg(script)
        .args(["--port", &server.c2s_port().to_string()])
        .args(["--jid", &server.jid(user), "--password", PW])
        .args(args);
    RunningClient::command(cmd).finish()
}

#[test]
fn slixmpp_private_storage_bookmarks_and_vcards() {
    let server = server();
    let run = slixmpp_store(
        &server,
        "alice",
        &["--do", "private", "--do", "bookmarks", "--do", "vcard-set"],
    );
    run.assert_ok();
    let p = run.expect_event("private");
    assert_eq!(p["nick"], "Hamlet", "{run}");
    assert_eq!(p["text"], "to be < or > not & to be", "{run}");
    assert_eq!(p["none"], 0, "{run}");
    let b = run.expect_event("bookmarks");
    assert_eq!(b["conferences"][0]["jid"], "family@rooms.example", "{run}");
    assert_eq!(b["conferences"][0]["nick"], "Dad", "{run}");
    assert_eq!(b["conferences"][0]["autojoin"], true, "{run}");
    let v = run.expect_event("vcard_set");
    assert_eq!(v["fn"], "Alice Liddell", "{run}");
    assert_eq!(v["photo"], true, "{run}");
    // Bob reads Alice's vCard; he cannot write it.
    let alice = server.jid("alice");
    let run = slixmpp_store(
        &server,
        "bob",
        &["--other", &alice, "--do", "vcard-of", "--do", "vcard-other"],
    );
    run.assert_ok();
    let v = run.expect_event("vcard_of");
    assert_eq!(v["fn"], "Alice Liddell", "{run}");
    assert_eq!(v["has_photo"], true, "{run}");
    assert_eq!(
        run.expect_event("vcard_other")["condition"],
        "forbidden",
        "{run}"
    );
}

#[test]
fn aioxmpp_private_xml_and_vcard_services() {
    let server = server();
    let run = aioxmpp_store(&server, "alice", &["--role", "owner"]);
    run.assert_ok();
    let o = run.expect_event("owner");
    assert_eq!(o["theme"], "dark", "{run}");
    assert_eq!(o["motto"], "home & hearth <3", "{run}");
    assert_eq!(o["empty_before"], true, "{run}");
    assert_eq!(o["photo"], true, "{run}");
    assert_eq!(o["mime"], "image/png", "{run}");
    let alice = server.jid("alice");
    let run = aioxmpp_store(&server, "bob", &["--role", "reader", "--other", &alice]);
    run.assert_ok();
    let r = run.expect_event("reader");
    assert_eq!(r["photo"], true, "{run}");
    assert_eq!(r["private_error"], "forbidden", "{run}");
}

#[test]
fn slixmpp_reads_contact_addresses_and_external_services() {
    let server = server();
    let run = slixmpp_store(
        &server,
        "alice",
        &["--do", "serverinfo", "--do", "extdisco"],
    );
    run.assert_ok();
    let info = run.expect_event("serverinfo");
    let form = &info["forms"]["http://jabber.org/network/serverinfo"];
    assert_eq!(
        form["abuse-addresses"],
        serde_json::json!(["mailto:abuse@test.local", "xmpp:admin@test.local"]),
        "{run}"
    );
    assert_eq!(
        form["security-addresses"],
        serde_json::json!(["mailto:security@test.local"]),
        "{run}"
    );
    assert!(form.get("sales-addresses").is_none(), "{run}");
    let features = info["features"].as_array().unwrap();
    for f in [NS_EXTDISCO, NS_PRIVATE, NS_VCARD] {
        assert!(features.iter().any(|x| x == f), "{f}: {run}");
    }
    let ext = run.expect_event("extdisco");
    let services = ext["services"].as_array().unwrap();
    assert_eq!(services.len(), 2, "{run}");
    assert_eq!(services[0]["type"], "stun", "{run}");
    assert!(services[0].get("username").is_none(), "{run}");
    let turn = &services[1];
    assert_eq!(turn["host"], "turn.test.local", "{run}");
    assert_eq!(turn["restricted"], "1", "{run}");
    let username = turn["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, "alice");
    let expiry: i64 = expiry.parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((expiry - now - 3600).abs() < 60, "{username}");
    // The password is coturn's: Base64 of HMAC-SHA1(secret, username), computed here with
    // openssl, not with hearth's code.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf '%s' '{username}' | openssl dgst -sha1 -hmac '{SECRET}' -binary | base64"
        ))
        .output()
        .expect("openssl");
    assert_eq!(
        turn["password"].as_str().unwrap(),
        String::from_utf8_lossy(&out.stdout).trim(),
        "{run}"
    );
    let creds = ext["credentials"].as_array().unwrap();
    assert_eq!(creds.len(), 1, "{run}");
    assert_eq!(creds[0]["host"], "turn.test.local", "{run}");
    assert!(creds[0]["password"].as_str().is_some_and(|p| !p.is_empty()));
}

#[test]
fn private_storage_errors() {
    let server = server();
    let mut a = login(&server, "alice");
    let mut b = login(&server, "bob");
    let alice = server.jid("alice");
    // §2.3: a child is required; reserved namespaces are refused.
    for (ty, inner, want) in [
        ("set", "", "not-acceptable"),
        ("get", "", "not-acceptable"),
        ("set", "<x xmlns='jabber:iq:roster'/>", "not-acceptable"),
        ("get", "<vCard xmlns='vcard-temp'/>", "not-acceptable"),
        (
            "set",
            "<x xmlns='http://jabber.org/protocol/muc'/>",
            "not-acceptable",
        ),
        ("set", "<x/>", "not-acceptable"),
        ("get", "<a xmlns='urn:a'/><b xmlns='urn:b'/>", "bad-request"),
    ] {
        let r = iq(&mut a, ty, None, &private(inner));
        assert_eq!(error_of(&r), Some(want), "{ty} {inner}: {r}");
    }
    // Over the per-element limit (4096 here): refused, with the limit in the text.
    let big = "x".repeat(5000);
    let r = iq(
        &mut a,
        "set",
        None,
        &private(&format!("<a xmlns='urn:a'>{big}</a>")),
    );
    assert_eq!(error_of(&r), Some("not-acceptable"), "{r}");
    assert!(r.to_string().contains("4096"), "{r}");
    // Alice stores something; Bob can neither read nor write it (§3: forbidden).
    let r = iq(&mut a, "set", None, &private("<a xmlns='urn:a'>mine</a>"));
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    for ty in ["get", "set"] {
        let r = iq(
            &mut b,
            ty,
            Some(&alice),
            &private("<a xmlns='urn:a'>bob's</a>"),
        );
        assert_eq!(error_of(&r), Some("forbidden"), "{r}");
    }
    let r = iq(&mut a, "get", None, &private("<a xmlns='urn:a'/>"));
    let q = r.child("query", NS_PRIVATE).unwrap();
    assert_eq!(q.child("a", "urn:a").unwrap().text, "mine", "{r}");
    // Bob's own is empty.
    let r = iq(&mut b, "get", None, &private("<a xmlns='urn:a'/>"));
    assert_eq!(
        r.child("query", NS_PRIVATE)
            .unwrap()
            .child("a", "urn:a")
            .unwrap()
            .text,
        ""
    );
    a.assert_alive();
    b.assert_alive();
}

#[test]
fn vcard_errors() {
    let server = server();
    let mut a = login(&server, "alice");
    let mut b = login(&server, "bob");
    let alice = server.jid("alice");
    let r = iq(
        &mut b,
        "set",
        Some(&alice),
        "<vCard xmlns='vcard-temp'><FN>Mallory</FN></vCard>",
    );
    assert_eq!(error_of(&r), Some("forbidden"), "{r}");
    let r = iq(&mut b, "get", Some(&alice), "<vCard xmlns='vcard-temp'/>");
    let v = r.child("vCard", NS_VCARD).unwrap();
    assert!(v.children.is_empty(), "no vCard yet: empty, {r}");
    // Too large (16384 here).
    let desc = "d".repeat(17000);
    let r = iq(
        &mut a,
        "set",
        None,
        &format!("<vCard xmlns='vcard-temp'><DESC>{desc}</DESC></vCard>"),
    );
    assert_eq!(error_of(&r), Some("not-acceptable"), "{r}");
    // An account that does not exist.
    let nobody = server.jid("nobody");
    let r = iq(&mut b, "get", Some(&nobody), "<vCard xmlns='vcard-temp'/>");
    assert_eq!(error_of(&r), Some("service-unavailable"), "{r}");
    // Not a vCard.
    let r = iq(&mut a, "get", None, "<photo xmlns='vcard-temp'/>");
    assert_eq!(error_of(&r), Some("bad-request"), "{r}");
    a.assert_alive();
    b.assert_alive();
}

/// Private XML and the vCard share the account's byte quota (24 KiB here) with
/// everything else: past it, `resource-constraint` and nothing written; after a restart
/// what was stored is still there.
#[test]
fn the_byte_quota_is_shared_and_data_survives_a_restart() {
    let mut server = server();
    let mut a = login(&server, "alice");
    let desc = "d".repeat(15000);
    let r = iq(
        &mut a,
        "set",
        None,
        &format!("<vCard xmlns='vcard-temp'><FN>Alice</FN><DESC>{desc}</DESC></vCard>"),
    );
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let part = "p".repeat(3500);
    let mut refused = None;
    for i in 0..4 {
        let r = iq(
            &mut a,
            "set",
            None,
            &private(&format!("<n{i} xmlns='urn:n'>{part}</n{i}>")),
        );
        if r.attr("type") == Some("error") {
            refused = Some((i, r));
            break;
        }
    }
    let (i, r) = refused.expect("the quota is reached");
    assert_eq!(error_of(&r), Some("resource-constraint"), "{r}");
    assert_eq!(
        r.child("error", common::client::NS_CLIENT)
            .unwrap()
            .attr("type"),
        Some("wait")
    );
    assert!(i >= 1, "the first element fits");
    let r = iq(
        &mut a,
        "get",
        None,
        &private(&format!("<n{i} xmlns='urn:n'/>")),
    );
    assert_eq!(
        r.child("query", NS_PRIVATE).unwrap().children[0].text,
        "",
        "the refused element was not stored: {r}"
    );
    // A vCard that shrinks is always let through.
    let r = iq(
        &mut a,
        "set",
        None,
        "<vCard xmlns='vcard-temp'><FN>Alice</FN></vCard>",
    );
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    drop(a);
    // SIGKILL, as a power cut would: what was acknowledged is on the disk.
    server.kill();
    server.restart();
    let mut a = login(&server, "alice");
    let r = iq(&mut a, "get", None, "<vCard xmlns='vcard-temp'/>");
    let v = r.child("vCard", NS_VCARD).unwrap();
    assert_eq!(v.child("FN", NS_VCARD).unwrap().text, "Alice", "{r}");
    let r = iq(&mut a, "get", None, &private("<n0 xmlns='urn:n'/>"));
    assert_eq!(r.child("query", NS_PRIVATE).unwrap().children[0].text, part);
}

#[test]
fn serverinfo_form_and_external_services_raw() {
    let server = server();
    let mut a = login(&server, "alice");
    let domain = server.domain().to_string();
    let r = iq(
        &mut a,
        "get",
        Some(&domain),
        &format!("<query xmlns='{NS_DISCO_INFO}'/>"),
    );
    let q = r.child("query", NS_DISCO_INFO).unwrap();
    let x = q.child("x", NS_DATA).expect("a serverinfo form");
    assert_eq!(x.attr("type"), Some("result"), "{r}");
    let field = |var: &str| x.children.iter().find(|f| f.attr("var") == Some(var));
    let ft = field("FORM_TYPE").unwrap();
    assert_eq!(ft.attr("type"), Some("hidden"));
    assert_eq!(ft.children[0].text, "http://jabber.org/network/serverinfo");
    assert_eq!(field("abuse-addresses").unwrap().children.len(), 2);
    // An account's disco#info carries no server form.
    let r = iq(
        &mut a,
        "get",
        None,
        &format!("<query xmlns='{NS_DISCO_INFO}'/>"),
    );
    assert!(
        !r.child("query", NS_DISCO_INFO)
            .unwrap()
            .has_child("x", NS_DATA),
        "{r}"
    );
    // XEP-0215: by type; credentials for an unknown service; a set.
    let r = iq(
        &mut a,
        "get",
        Some(&domain),
        &format!("<services xmlns='{NS_EXTDISCO}' type='stun'/>"),
    );
    let s = r.child("services", NS_EXTDISCO).unwrap();
    assert_eq!(s.children.len(), 1, "{r}");
    assert_eq!(s.children[0].attr("host"), Some("stun.test.local"));
    let r = iq(
        &mut a,
        "get",
        Some(&domain),
        &format!(
            "<credentials xmlns='{NS_EXTDISCO}'><service host='turn.example' type='turn'/></credentials>"
        ),
    );
    assert_eq!(error_of(&r), Some("item-not-found"), "{r}");
    let r = iq(
        &mut a,
        "set",
        Some(&domain),
        &format!("<services xmlns='{NS_EXTDISCO}'/>"),
    );
    assert_eq!(error_of(&r), Some("bad-request"), "{r}");
    a.assert_alive();
}

/// With none configured, nothing is announced and `<services/>` is not answered.
#[test]
fn no_external_services_no_extdisco() {
    let server = Server::start(ServerOpts::default());
    server.add_user("alice", PW);
    let mut a = login(&server, "alice");
    let domain = server.domain().to_string();
    let r = iq(
        &mut a,
        "get",
        Some(&domain),
        &format!("<query xmlns='{NS_DISCO_INFO}'/>"),
    );
    let s = r.to_string();
    assert!(!s.contains(NS_EXTDISCO), "{s}");
    assert!(!s.contains("serverinfo"), "{s}");
    let r = iq(
        &mut a,
        "get",
        Some(&domain),
        &format!("<services xmlns='{NS_EXTDISCO}'/>"),
    );
    assert_eq!(error_of(&r), Some("service-unavailable"), "{r}");
}

/// XEP-0115 §5.4: the server's caps hash covers the serverinfo form; slixmpp's xep_0115
/// plugin recomputes it from disco#info (the form included) and accepts it.
#[test]
fn slixmpp_verifies_caps_with_the_serverinfo_form() {
    let server = server();
    let run = common::clients::slixmpp(&server, "alice", PW, "SCRAM-SHA-256").run(&["caps"]);
    run.assert_ok();
    let caps = run.expect_event("caps");
    assert!(caps["ver"].as_str().is_some_and(|v| !v.is_empty()), "{run}");
}

fn nbxmpp_vcard(server: &Server, user: &str, other: Option<&str>) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/nbxmpp_vcard.py");
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.args([script, "--port", &server.c2s_port().to_string()])
        .args(["--jid", &server.jid(user), "--password", PW]);
    if let Some(o) = other {
        cmd.args(["--other", o]);
    }
    let out = cmd
        .output()
        .expect("run /usr/bin/python3 (apt-get install python3-nbxmpp)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "nbxmpp_vcard.py failed (is python3-nbxmpp installed?): {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "vcard")
        .unwrap_or_else(|| panic!("no vcard event in {stdout}"))
}

/// python-nbxmpp (Gajim's library) sets a vCard with an avatar and reads it back, and
/// another account reads it; the avatar's SHA-1 nbxmpp computes is the one of the PNG.
#[test]
fn nbxmpp_vcard_temp() {
    let server = server();
    // `printf <the PNG> | sha1sum`, the same 1×1 PNG as in the scripts.
    const PNG_SHA1: &str = "c1986af3c26609b8b7d8933f99c51c1a89e9ea6b";
    let own = nbxmpp_vcard(&server, "bob", None);
    assert_eq!(own["fn"], "Bob Builder", "{own}");
    assert_eq!(own["avatar_sha1"], PNG_SHA1, "{own}");
    let bob = server.jid("bob");
    let seen = nbxmpp_vcard(&server, "alice", Some(&bob));
    assert_eq!(seen["fn"], "Bob Builder", "{seen}");
    assert_eq!(seen["avatar_sha1"], PNG_SHA1, "{seen}");
}

/// Not a check but a measurement (README "Profiles…", the report): sequential round
/// trips over one TLS connection on loopback. Run with
/// `cargo test --release --test store measure -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement: run with --release --ignored --nocapture"]
fn measure_round_trips() {
    // The per-connection byte rate (32 KiB/s) would be what is measured otherwise.
    let server = Server::start(ServerOpts {
        rust_log: Some("warn".into()),
        extra_toml: "[limits]\nrate_bytes_per_sec = 1073741824\nrate_burst_bytes = 1073741824\n"
            .into(),
        ..ServerOpts::default()
    });
    for u in ["alice", "bob"] {
        server.add_user(u, PW);
    }
    let mut a = login(&server, "alice");
    let mut b = login(&server, "bob");
    let alice = server.jid("alice");
    let time = |what: &str, n: usize, f: &mut dyn FnMut(usize)| {
        let t = std::time::Instant::now();
        for i in 0..n {
            f(i);
        }
        let per = t.elapsed() / n as u32;
        println!("{what}: {n} in {:?}, {per:?} each", t.elapsed());
    };
    let prefs = "v".repeat(200);
    time("private set (200 B, 100 names)", 1000, &mut |i| {
        let r = iq(
            &mut a,
            "set",
            None,
            &private(&format!(
                "<p{} xmlns='urn:p'>{prefs}</p{}>",
                i % 100,
                i % 100
            )),
        );
        assert_eq!(r.attr("type"), Some("result"));
    });
    time("private get", 1000, &mut |i| {
        let r = iq(
            &mut a,
            "get",
            None,
            &private(&format!("<p{} xmlns='urn:p'/>", i % 100)),
        );
        assert_eq!(r.attr("type"), Some("result"));
    });
    // A 180 KiB photo, Base64 in 76-character lines as clients write it.
    let photo: String = "A"
        .repeat(180 * 1024)
        .as_bytes()
        .chunks(76)
        .map(|c| format!("{}\n", String::from_utf8_lossy(c)))
        .collect();
    let card = format!(
        "<vCard xmlns='vcard-temp'><FN>Alice</FN><PHOTO><TYPE>image/png</TYPE><BINVAL>{photo}</BINVAL></PHOTO></vCard>"
    );
    println!("vCard bytes: {}", card.len());
    time("vCard set (~183 KiB)", 50, &mut |_| {
        let r = iq(&mut a, "set", None, &card);
        assert_eq!(r.attr("type"), Some("result"), "{r}");
    });
    time("vCard get by another account (~183 KiB)", 200, &mut |_| {
        let r = iq(&mut b, "get", Some(&alice), "<vCard xmlns='vcard-temp'/>");
        assert_eq!(r.attr("type"), Some("result"));
    });
    if let Some(pid) = server.pid() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        for l in status
            .lines()
            .filter(|l| l.starts_with("VmRSS") || l.starts_with("VmHWM"))
        {
            println!("server {l}");
        }
    }
}

/// A coturn `turnserver` in the foreground on a loopback port, killed when dropped.
struct Coturn {
    child: std::process::Child,
    port: u16,
}

impl Coturn {
    fn start(secret: &str) -> Coturn {
        let port = common::free_port();
        let log = std::env::temp_dir().join(format!("hearth-coturn-{port}.log"));
        let child = Command::new("turnserver")
            .args(["-n", "--no-cli", "--no-tls", "--no-dtls", "--simple-log"])
            .args(["--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1"])
            .arg(format!("--listening-port={port}"))
            .args([
                "--use-auth-secret",
                &format!("--static-auth-secret={secret}"),
            ])
            .args(["--realm=test.local", "--allow-loopback-peers"])
            .arg(format!("--log-file={}", log.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run turnserver (apt-get install coturn; .ci/run installs it)");
        // Ready when it answers: an allocation attempt with no credentials gets a reply.
        std::thread::sleep(std::time::Duration::from_millis(500));
        Coturn { child, port }
    }

    /// Whether `turnutils_uclient` gets an allocation (and relays a few packets between
    /// two of its own clients) with these credentials.
    fn allocates(&self, username: &str, password: &str) -> bool {
        let out = Command::new("timeout")
            .args([
                "20",
                "turnutils_uclient",
                "-y",
                "-n",
                "1",
                "-m",
                "1",
                "-l",
                "100",
            ])
            .args(["-p", &self.port.to_string(), "-u", username, "-w", password])
            .args(["-r", "test.local", "127.0.0.1"])
            .output()
            .expect("run turnutils_uclient (apt-get install coturn)");
        out.status.success()
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The credentials hearth hands out (XEP-0215 `<credentials/>`) are accepted by a real
/// coturn configured with the same `static-auth-secret`; a password changed by one
/// character is refused, so the check means something.
#[test]
fn coturn_accepts_the_credentials_hearth_hands_out() {
    let secret = "a coturn secret shared with hearth";
    let coturn = Coturn::start(secret);
    let server = Server::start(ServerOpts {
        extra_toml: format!(
            "[[external_services]]\ntype = \"turn\"\nhost = \"127.0.0.1\"\nport = {}\n\
             transport = \"udp\"\nsecret = \"{secret}\"\n",
            coturn.port
        ),
        ..ServerOpts::default()
    });
    server.add_user("alice", PW);
    let mut a = login(&server, "alice");
    let domain = server.domain().to_string();
    let r = iq(
        &mut a,
        "get",
        Some(&domain),
        &format!(
            "<credentials xmlns='{NS_EXTDISCO}'><service host='127.0.0.1' type='turn'/></credentials>"
        ),
    );
    let s = r
        .child("credentials", NS_EXTDISCO)
        .and_then(|c| c.child("service", NS_EXTDISCO))
        .unwrap_or_else(|| panic!("no credentials: {r}"));
    let (user, pass) = (s.attr("username").unwrap(), s.attr("password").unwrap());
    assert!(coturn.allocates(user, pass), "coturn refused {user}");
    let first = if pass.starts_with('A') { "B" } else { "A" };
    let wrong = format!("{first}{}", &pass[1..]);
    assert!(
        !coturn.allocates(user, &wrong),
        "coturn took a wrong password"
    );
}
