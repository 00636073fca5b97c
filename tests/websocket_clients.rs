//! RFC 7395 with real web clients: Converse.js (its release bundle), xmpp.js
//! (@xmpp/client, npm) and Strophe.js inside headless Chromium (puppeteer-core), and
//! xmpp.js from Node, each logging in over wss:// with the server's
//! self-signed certificate and chatting with a slixmpp user on the STARTTLS port; and
//! xmpp.js from Node on the HTTPS port's `/xmpp-websocket`, found by XEP-0156 host-meta.
//! `tests/clients/ws_client.mjs` is the client; `.ci/run` installs Node's packages into
//! `<target dir>/web-client` and Debian's chromium.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::clients::{RunningClient, slixmpp};
use common::{Server, ServerOpts};

const WAIT: Duration = Duration::from_secs(30);

/// `<target dir>/web-client/node_modules`, or `HEARTH_WEB_CLIENT_MODULES`.
fn node_modules() -> PathBuf {
    if let Ok(p) = std::env::var("HEARTH_WEB_CLIENT_MODULES") {
        return p.into();
    }
    // CARGO_TARGET_TMPDIR is `<target dir>/tmp`, wherever CARGO_TARGET_DIR put it.
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let target = target.parent().map(PathBuf::from).unwrap_or(target);
    let dir = target.join("web-client/node_modules");
    assert!(
        dir.join("@xmpp/client/package.json").exists(),
        "{} has no @xmpp/client: run .ci/run, or `npm install --prefix {} \
         @xmpp/client@0.14.0 puppeteer-core@24.43.1 strophe.js@5.0.0` (or set HEARTH_WEB_CLIENT_MODULES)",
        dir.display(),
        target.join("web-client").display()
    );
    dir
}

/// Converse.js's release bundle, `<target dir>/web-client/converse/package/dist` (`npm pack
/// converse.js` unpacked: the bundle has all it needs, none of its npm dependencies).
fn converse_dist() -> PathBuf {
    let dist = node_modules()
        .parent()
        .map(|p| p.join("converse/package/dist"))
        .unwrap_or_default();
    assert!(
        dist.join("converse.min.js").exists(),
        "{} has no converse.min.js: run .ci/run, or `npm pack converse.js@14.0.0` and \
         unpack it into {}",
        dist.display(),
        dist.parent()
            .and_then(|p| p.parent())
            .unwrap_or(&dist)
            .display()
    );
    dist
}

/// A server with a wss:// listener on its own port; alice (the web client) and bob.
fn server() -> (Server, u16) {
    let port = common::free_port();
    let server = Server::start(ServerOpts {
        extra_toml: format!("[websocket]\nlisten = [\"127.0.0.1:{port}\"]\n"),
        ..ServerOpts::default()
    });
    server.add_user("alice", "alice-pw");
    server.add_user("bob", "bob-pw");
    (server, port)
}

/// Runs the web client in `mode` ("node" or "browser") as alice on the WebSocket URL
/// `service`: it sends `body` to bob and waits for slixmpp's echo of it.
fn web_client(
    server: &Server,
    service: &str,
    mode: &str,
    library: &str,
    body: &str,
) -> common::clients::ClientRun {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/ws_client.mjs");
    let mut cmd = Command::new("node");
    cmd.arg("--experimental-websocket")
        .arg(script)
        .arg(mode)
        .args(["--library", library])
        .arg("--converse")
        .arg(if library == "converse" {
            converse_dist()
        } else {
            PathBuf::new()
        })
        .arg("--modules")
        .arg(node_modules())
        .args(["--service", service])
        .args(["--domain", server.domain()])
        .args(["--user", "alice", "--password", "alice-pw"])
        .args(["--resource", library])
        .args(["--to", &server.jid("bob")])
        .args(["--body", body])
        .args(["--expect", &format!("echo: {body}")])
        .args(["--timeout", "25"])
        // Node's WebSocket checks certificates; the server's is self-signed for its
        // domain, and the client dials 127.0.0.1.
        .env("NODE_TLS_REJECT_UNAUTHORIZED", "0")
        .env("NODE_NO_WARNINGS", "1");
    RunningClient::command(cmd).finish()
}

/// bob on slixmpp answers alice's message with "echo: …"; alice's client must see it.
fn chat_with_slixmpp(mode: &str, library: &str) {
    let (server, port) = server();
    chat_over(
        &server,
        &format!("wss://127.0.0.1:{port}/xmpp-websocket"),
        mode,
        library,
    );
}

/// [`chat_with_slixmpp`] with the web client on the WebSocket URL `service`.
fn chat_over(server: &Server, service: &str, mode: &str, library: &str) {
    let mut bob = slixmpp(server, "bob", "bob-pw", "SCRAM-SHA-256")
        .resource("slixmpp")
        .spawn(&["receive", "--expect-from", &server.jid("alice"), "--echo"]);
    bob.wait_for_event("ready", WAIT);
    let body = format!("hello from {library} in {mode} over a WebSocket <&>");
    let run = web_client(server, service, mode, library, &body);
    run.assert_ok();
    let online = run.expect_event("online");
    assert_eq!(
        online["jid"].as_str(),
        Some(format!("alice@{}/{library}", server.domain()).as_str()),
        "{run:?}"
    );
    let message = run.expect_event("message");
    assert_eq!(
        message["body"].as_str(),
        Some(format!("echo: {body}").as_str())
    );
    assert!(
        message["from"]
            .as_str()
            .is_some_and(|f| f.starts_with(&server.jid("bob"))),
        "{run:?}"
    );
    let bob = bob.finish();
    bob.assert_ok();
    let got = bob.expect_event("message");
    assert_eq!(got["body"].as_str(), Some(body.as_str()), "{bob:?}");
    assert_eq!(
        got["sender"].as_str(),
        Some(format!("alice@{}/{library}", server.domain()).as_str())
    );
}

#[test]
fn xmppjs_from_node_chats_with_slixmpp_over_wss() {
    chat_with_slixmpp("node", "xmppjs");
}

/// XEP-0156 as a web client finds its endpoint: host-meta.json on the HTTPS port
/// (`[http]`, on by default) names `wss://<domain>:<port>/xmpp-websocket` on that same
/// port, and xmpp.js from Node logs in there and chats with slixmpp. (xmpp.js's own
/// discovery asks port 443 of the domain, which a test server cannot have; the domain,
/// `.local`, is dialled by address.)
#[test]
fn xmppjs_from_node_finds_the_https_port_by_host_meta_and_chats_with_slixmpp() {
    let server = Server::start(ServerOpts::default());
    server.add_user("alice", "alice-pw");
    server.add_user("bob", "bob-pw");
    let r = common::http::request(&server, "GET /.well-known/host-meta.json HTTP/1.1", b"");
    assert_eq!(r.status, 200, "{r:?}");
    let jrd: serde_json::Value = serde_json::from_slice(&r.body).expect("host-meta.json");
    let href = jrd["links"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["rel"] == "urn:xmpp:alt-connections:websocket")
        .and_then(|l| l["href"].as_str())
        .unwrap_or_else(|| panic!("no WebSocket link in {jrd}"))
        .to_owned();
    let host = format!("{}:{}", server.domain(), server.http_port());
    assert_eq!(href, format!("wss://{host}/xmpp-websocket"));
    let service = href.replace(&host, &format!("127.0.0.1:{}", server.http_port()));
    chat_over(&server, &service, "node", "xmppjs");
}

#[test]
fn xmppjs_in_headless_chromium_chats_with_slixmpp_over_wss() {
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "no /usr/bin/chromium: run .ci/run, or `apt-get install chromium`"
    );
    chat_with_slixmpp("browser", "xmppjs");
}

#[test]
fn converse_in_headless_chromium_chats_with_slixmpp_over_wss() {
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "no /usr/bin/chromium: run .ci/run, or `apt-get install chromium`"
    );
    chat_with_slixmpp("browser", "converse");
}

#[test]
fn strophe_in_headless_chromium_chats_with_slixmpp_over_wss() {
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "no /usr/bin/chromium: run .ci/run, or `apt-get install chromium`"
    );
    chat_with_slixmpp("browser", "strophe");
}
