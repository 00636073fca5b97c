//! XEP-0115 for the server itself: the `<c/>` stream feature after login, checked by
//! slixmpp's xep_0115 plugin (it asks disco#info for node#ver and hashes the answer
//! itself), and by the raw client against a hash of the live disco#info.

mod common;

use common::client::{Conn, new_id};
use common::clients::slixmpp;
use common::{Server, ServerOpts};

const PW: &str = "a fine password";
const NS_CAPS: &str = "http://jabber.org/protocol/caps";
const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";

#[test]
fn slixmpp_verifies_the_servers_caps() {
    let server = Server::start(ServerOpts::default());
    server.add_user("alice", PW);
    let run = slixmpp(&server, "alice", PW, "SCRAM-SHA-256").run(&["caps"]);
    run.assert_ok();
    let caps = run.expect_event("caps");
    let features = caps["features"].as_array().expect("features");
    assert!(features.iter().any(|f| f == "urn:xmpp:ping"), "{run}");
}

#[test]
fn the_stream_feature_is_the_hash_of_the_live_disco_info() {
    let server = Server::start(ServerOpts::default());
    server.add_user("alice", PW);
    let mut c = Conn::connect_starttls(server.c2s_addr(), server.domain(), &server.cert_path());
    c.login_any("alice", PW);
    let features = c.features.clone();
    let caps = features
        .child("c", NS_CAPS)
        .unwrap_or_else(|| panic!("no caps in {features}"));
    assert_eq!(caps.attr("hash"), Some("sha-1"), "{caps}");
    let ver = caps.attr("ver").expect("ver").to_string();
    let node = caps.attr("node").expect("node").to_string();
    c.bind(Some("desk"));

    let id = new_id("disco");
    c.send(&format!(
        "<iq type='get' id='{id}' to='{}'><query xmlns='{NS_DISCO_INFO}'/></iq>",
        server.domain()
    ));
    let reply = c.expect_iq_reply(&id);
    let q = reply.child("query", NS_DISCO_INFO).expect("query");
    assert_eq!(hash(q), ver, "{reply}");

    // §6.2: node#ver answers the same.
    let id = new_id("node");
    c.send(&format!(
        "<iq type='get' id='{id}' to='{}'><query xmlns='{NS_DISCO_INFO}' node='{node}#{ver}'/></iq>",
        server.domain()
    ));
    let reply = c.expect_iq_reply(&id);
    assert_eq!(reply.attr("type"), Some("result"), "{reply}");
    let q = reply.child("query", NS_DISCO_INFO).expect("query");
    assert_eq!(hash(q), ver, "{reply}");
}

/// XEP-0115 §5.1 over a disco#info answer, written here apart from the server's.
fn hash(q: &common::xml::Node) -> String {
    use base64::Engine as _;
    use sha1::Digest as _;
    let mut ids: Vec<String> = q
        .children
        .iter()
        .filter(|c| c.name == "identity")
        .map(|c| {
            format!(
                "{}/{}/{}/{}",
                c.attr("category").unwrap_or(""),
                c.attr("type").unwrap_or(""),
                c.attr("xml:lang").unwrap_or(""),
                c.attr("name").unwrap_or("")
            )
        })
        .collect();
    ids.sort();
    let mut fs: Vec<&str> = q
        .children
        .iter()
        .filter(|c| c.name == "feature")
        .filter_map(|c| c.attr("var"))
        .collect();
    fs.sort();
    let s: String = ids
        .iter()
        .map(String::as_str)
        .chain(fs)
        .map(|x| format!("{x}<"))
        .collect();
    base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(s.as_bytes()))
}
