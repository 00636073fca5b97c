//! Helpers for the RFC 6121 tests (tests/im_*.rs): logging users in, roster requests,
//! waiting for pushes, presence and messages, and proving by a ping round trip what was
//! (not) delivered meanwhile.

use super::client::{Conn, NS_CLIENT, NS_STANZA_ERRORS, new_id};
use super::xml::Node;
use super::{Server, ServerOpts};

pub const NS_ROSTER: &str = "jabber:iq:roster";
pub const NS_DELAY: &str = "urn:xmpp:delay";
const PW: &str = "a fine password";

pub fn server() -> Server {
    let server = Server::start(ServerOpts::default());
    for u in ["alice", "bob", "carol"] {
        server.add_user(u, PW);
    }
    server
}

pub fn login(server: &Server, user: &str, resource: &str) -> Conn {
    Conn::login(
        server.c2s_addr(),
        server.domain(),
        &server.cert_path(),
        user,
        PW,
        Some(resource),
    )
}

/// Roster get (§2.1.3), optionally with a cached version; returns the reply.
pub fn roster_get(c: &mut Conn, ver: Option<&str>) -> Node {
    let id = new_id("roster");
    let ver = ver.map(|v| format!(" ver='{v}'")).unwrap_or_default();
    c.send(&format!(
        "<iq type='get' id='{id}'><query xmlns='{NS_ROSTER}'{ver}/></iq>"
    ));
    let reply = c.expect_iq_reply(&id);
    assert_eq!(reply.attr("type"), Some("result"), "{reply}");
    reply
}

/// Sends a roster set with `item` (inner XML of the query) and returns the reply.
pub fn roster_set(c: &mut Conn, items: &str) -> Node {
    let id = new_id("set");
    c.send(&format!(
        "<iq type='set' id='{id}'><query xmlns='{NS_ROSTER}'>{items}</query></iq>"
    ));
    c.expect_iq_reply(&id)
}

pub fn error_condition(reply: &Node) -> String {
    assert_eq!(reply.attr("type"), Some("error"), "{reply}");
    reply
        .child("error", NS_CLIENT)
        .and_then(|e| e.condition(NS_STANZA_ERRORS))
        .unwrap_or_else(|| panic!("no condition in {reply}"))
        .to_string()
}

/// The next roster push; answers it as a client must (RFC 6121 §2.1.6).
pub fn expect_push(c: &mut Conn) -> Node {
    let push = c.expect_matching("a roster push", |el| {
        el.name == "iq" && el.attr("type") == Some("set") && el.has_child("query", NS_ROSTER)
    });
    let id = push.attr("id").unwrap().to_string();
    c.send(&format!("<iq type='result' id='{id}'/>"));
    push.child("query", NS_ROSTER)
        .and_then(|q| q.child("item", NS_ROSTER))
        .cloned()
        .unwrap_or_else(|| panic!("push without an item: {push}"))
}

pub fn expect_presence(c: &mut Conn, from_prefix: &str, ty: Option<&str>) -> Node {
    let what = format!("presence type {ty:?} from {from_prefix}");
    c.expect_matching(&what, |el| {
        el.name == "presence"
            && el.attr("type") == ty
            && el.attr("from").is_some_and(|f| f.starts_with(from_prefix))
    })
}

pub fn expect_message(c: &mut Conn, body: &str) -> Node {
    c.expect_matching(&format!("message {body:?}"), |el| {
        el.name == "message" && el.child("body", NS_CLIENT).is_some_and(|b| b.text == body)
    })
}

/// Reads up to a ping reply and returns everything that came before it: proves by a
/// round trip what was (not) delivered meanwhile.
pub fn drain(c: &mut Conn) -> Vec<Node> {
    let id = c.send_ping(&c.domain.clone());
    let mut seen = Vec::new();
    loop {
        let el = c.expect_element("anything before the ping reply");
        if el.name == "iq" && el.attr("id") == Some(id.as_str()) {
            return seen;
        }
        seen.push(el);
    }
}

pub fn chat(c: &mut Conn, to: &str, body: &str) {
    c.send(&format!(
        "<message type='chat' to='{to}'><body>{body}</body></message>"
    ));
}

pub fn presence(c: &mut Conn, inner: &str) {
    c.send(&format!("<presence>{inner}</presence>"));
}

/// Makes `a` and `b` (both online, both with their rosters) subscribed both ways.
pub fn befriend(server: &Server, a: &mut Conn, an: &str, b: &mut Conn, bn: &str) {
    let (aj, bj) = (server.jid(an), server.jid(bn));
    one_way(a, &aj, b, &bj);
    one_way(b, &bj, a, &aj);
    drain(a);
    drain(b);
}

/// `x` subscribes to `y`'s presence and `y` approves.
pub fn one_way(x: &mut Conn, xj: &str, y: &mut Conn, yj: &str) {
    x.send(&format!("<presence type='subscribe' to='{yj}'/>"));
    expect_push(x);
    expect_presence(y, xj, Some("subscribe"));
    y.send(&format!("<presence type='subscribed' to='{xj}'/>"));
    expect_push(y);
    expect_presence(x, yj, Some("subscribed"));
}
