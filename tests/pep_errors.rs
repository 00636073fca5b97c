//! XEP-0163 PEP on the XEP-0060 subset: what a client that asks for the wrong thing gets,
//! in raw XML (the third-party clients of tests/pep_clients.rs never send these). Each
//! test names the XEP-0060 section whose answer it expects: the stanza error condition and
//! the `pubsub#errors` condition beside it, the account's nodes untouched afterwards.
//!
//! Against Prosody 0.12 (`HEARTH_TEST_SERVER=prosody`) the tests marked "Prosody differs"
//! fail on purpose: Prosody answers `forbidden` where XEP-0060 asks for `not-authorized`
//! (presence access) and `not-allowed` (whitelist), and leaves
//! out the `invalid-payload` that §7.1.3.6 says it SHOULD add; the others pass there too.

mod common;

use common::client::{Conn, NS_CLIENT, NS_STANZA_ERRORS, new_id};
use common::im::{befriend, drain, login, presence, roster_get};
use common::xml::Node;
use common::{Server, ServerOpts};

const PW: &str = "a fine password";
const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const NS_PUBSUB_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
const NS_NICK: &str = "http://jabber.org/protocol/nick";

fn server() -> Server {
    let server = Server::start(ServerOpts::default());
    for u in ["alice", "bob", "mallory"] {
        server.add_user(u, PW);
    }
    server
}

/// `user` logged in as `resource`, with its roster and an initial presence (so that roster
/// pushes and subscription requests reach it).
fn online(server: &Server, user: &str, resource: &str) -> Conn {
    let mut c = login(server, user, resource);
    roster_get(&mut c, None);
    presence(&mut c, "");
    c
}

/// alice/phone and bob/pc online, subscribed to each other both ways.
fn friends(server: &Server) -> (Conn, Conn) {
    let mut a = online(server, "alice", "phone");
    let mut b = online(server, "bob", "pc");
    befriend(server, &mut a, "alice", &mut b, "bob");
    (a, b)
}

/// Sends an iq of `ty` to `to` with `<pubsub>inner</pubsub>` and returns the reply.
fn pubsub(c: &mut Conn, ty: &str, to: Option<&str>, inner: &str) -> Node {
    let id = new_id("ps");
    let to = to.map(|t| format!(" to='{t}'")).unwrap_or_default();
    c.send(&format!(
        "<iq type='{ty}' id='{id}'{to}><pubsub xmlns='{NS_PUBSUB}'>{inner}</pubsub></iq>"
    ));
    c.expect_iq_reply(&id)
}

/// A publish-options form (XEP-0060 §7.1.5) with `fields`.
fn options(fields: &[(&str, &str)]) -> String {
    let mut form = String::from(
        "<publish-options><x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'>\
         <value>http://jabber.org/protocol/pubsub#publish-options</value></field>",
    );
    for (var, value) in fields {
        form.push_str(&format!(
            "<field var='{var}'><value>{value}</value></field>"
        ));
    }
    form.push_str("</x></publish-options>");
    form
}

fn publish_nick(c: &mut Conn, nick: &str, extra: &str) -> Node {
    pubsub(
        c,
        "set",
        None,
        &format!(
            "<publish node='{NS_NICK}'><item id='current'>\
             <nick xmlns='{NS_NICK}'>{nick}</nick></item></publish>{extra}"
        ),
    )
}

/// The stanza error condition and the `pubsub#errors` one of an error reply.
fn conditions(reply: &Node) -> (String, Option<String>) {
    assert_eq!(reply.attr("type"), Some("error"), "{reply}");
    let error = reply
        .child("error", NS_CLIENT)
        .unwrap_or_else(|| panic!("no <error/> in {reply}"));
    let stanza = error
        .condition(NS_STANZA_ERRORS)
        .unwrap_or_else(|| panic!("no condition in {reply}"))
        .to_string();
    let pubsub = error
        .children
        .iter()
        .find(|c| c.ns == NS_PUBSUB_ERRORS)
        .map(|c| c.name.clone());
    (stanza, pubsub)
}

/// The nicks in alice's nick node as `reader` sees them.
fn nicks(server: &Server, reader: &mut Conn) -> Vec<String> {
    let reply = pubsub(
        reader,
        "get",
        Some(&server.jid("alice")),
        &format!("<items node='{NS_NICK}'/>"),
    );
    assert_eq!(reply.attr("type"), Some("result"), "{reply}");
    let items = reply
        .child("pubsub", NS_PUBSUB)
        .and_then(|p| p.child("items", NS_PUBSUB))
        .unwrap_or_else(|| panic!("no items in {reply}"));
    items
        .children
        .iter()
        .filter_map(|i| i.child("nick", NS_NICK))
        .map(|n| n.text.clone())
        .collect()
}

fn ok(reply: &Node) {
    assert_eq!(reply.attr("type"), Some("result"), "{reply}");
}

/// §7.1.3.1: only the owner publishes to a PEP service; a contact gets `forbidden`, and
/// the node keeps the owner's item.
#[test]
fn publishing_to_another_accounts_pep_service_is_forbidden() {
    let server = server();
    let (mut a, mut b) = friends(&server);
    ok(&publish_nick(&mut a, "Alice", ""));
    let reply = pubsub(
        &mut b,
        "set",
        Some(&server.jid("alice")),
        &format!(
            "<publish node='{NS_NICK}'><item id='current'>\
             <nick xmlns='{NS_NICK}'>Mallory</nick></item></publish>"
        ),
    );
    assert_eq!(conditions(&reply).0, "forbidden", "{reply}");
    assert_eq!(nicks(&server, &mut b), ["Alice"]);
}

/// §7.2.3.1: retracting an item of someone else's node is `forbidden`.
#[test]
fn retracting_from_another_accounts_node_is_forbidden() {
    let server = server();
    let (mut a, mut b) = friends(&server);
    ok(&publish_nick(&mut a, "Alice", ""));
    let reply = pubsub(
        &mut b,
        "set",
        Some(&server.jid("alice")),
        &format!("<retract node='{NS_NICK}'><item id='current'/></retract>"),
    );
    assert_eq!(conditions(&reply).0, "forbidden", "{reply}");
    assert_eq!(nicks(&server, &mut b), ["Alice"]);
}

/// §7.1.5: a publish whose publish-options contradict the existing node's configuration
/// is refused with `conflict` + `precondition-not-met`, and the item is not stored; the
/// same options matching the configuration publish fine.
#[test]
fn publish_options_that_do_not_match_the_node_are_precondition_not_met() {
    let server = server();
    let mut a = login(&server, "alice", "phone");
    ok(&publish_nick(
        &mut a,
        "Alice",
        &options(&[("pubsub#access_model", "presence")]),
    ));
    let reply = publish_nick(
        &mut a,
        "Changed",
        &options(&[("pubsub#access_model", "open")]),
    );
    assert_eq!(
        conditions(&reply),
        ("conflict".into(), Some("precondition-not-met".into())),
        "{reply}"
    );
    assert_eq!(nicks(&server, &mut a), ["Alice"]);
    ok(&publish_nick(
        &mut a,
        "Again",
        &options(&[("pubsub#access_model", "presence")]),
    ));
    assert_eq!(nicks(&server, &mut a), ["Again"]);
}

/// §7.1.3.6: an item carries exactly one payload; two is `bad-request` + `invalid-payload`.
/// Prosody differs (no `invalid-payload`).
#[test]
fn an_item_with_two_payloads_is_invalid_payload() {
    let server = server();
    let mut a = login(&server, "alice", "phone");
    let reply = pubsub(
        &mut a,
        "set",
        None,
        &format!(
            "<publish node='{NS_NICK}'><item id='current'>\
             <nick xmlns='{NS_NICK}'>One</nick><nick xmlns='{NS_NICK}'>Two</nick>\
             </item></publish>"
        ),
    );
    assert_eq!(
        conditions(&reply),
        ("bad-request".into(), Some("invalid-payload".into())),
        "{reply}"
    );
    a.assert_alive();
}

/// §7.1.3.5: an item larger than `[pep] max_item_bytes` (200 KiB by default) but inside
/// the stanza limit is `not-acceptable` + `payload-too-big`; the session goes on and the
/// node keeps what it had. (Prosody has no such limit: this one fails there.)
#[test]
fn an_item_over_the_size_limit_is_payload_too_big() {
    let server = server();
    let mut a = login(&server, "alice", "phone");
    ok(&publish_nick(&mut a, "Alice", ""));
    let big = "x".repeat(210 * 1024);
    let reply = publish_nick(&mut a, &big, "");
    assert_eq!(
        conditions(&reply),
        ("not-acceptable".into(), Some("payload-too-big".into())),
        "{}",
        reply
            .attrs
            .iter()
            .map(|(k, v)| format!("{k}={v} "))
            .collect::<String>()
    );
    a.assert_alive();
    assert_eq!(nicks(&server, &mut a), ["Alice"]);
}

/// §6.5.9.11: items of a node that does not exist: `item-not-found`.
#[test]
fn items_of_a_node_that_does_not_exist_are_item_not_found() {
    let server = server();
    let mut a = login(&server, "alice", "phone");
    let reply = pubsub(
        &mut a,
        "get",
        Some(&server.jid("alice")),
        "<items node='urn:example:hearth:never-published'/>",
    );
    assert_eq!(conditions(&reply).0, "item-not-found", "{reply}");
}

/// §6.5.9.6 (and §6.1.3.2 for subscribing): a node with the `presence` access model is
/// closed to an account without a presence subscription: `not-authorized` +
/// `presence-subscription-required`. Prosody differs (`forbidden`).
#[test]
fn a_stranger_gets_presence_subscription_required() {
    let server = server();
    let mut a = login(&server, "alice", "phone");
    let mut m = online(&server, "mallory", "pc");
    ok(&publish_nick(&mut a, "Alice", ""));
    let alice = server.jid("alice");
    let read = pubsub(
        &mut m,
        "get",
        Some(&alice),
        &format!("<items node='{NS_NICK}'/>"),
    );
    assert_eq!(
        conditions(&read),
        (
            "not-authorized".into(),
            Some("presence-subscription-required".into())
        ),
        "{read}"
    );
    let mallory = m.full_jid().to_string();
    let subscribe = pubsub(
        &mut m,
        "set",
        Some(&alice),
        &format!("<subscribe node='{NS_NICK}' jid='{mallory}'/>"),
    );
    assert_eq!(
        conditions(&subscribe),
        (
            "not-authorized".into(),
            Some("presence-subscription-required".into())
        ),
        "{subscribe}"
    );
    // And a later publish does not reach her.
    ok(&publish_nick(&mut a, "Alice again", ""));
    let seen = drain(&mut m);
    assert!(
        seen.iter().all(|el| el.name != "message"),
        "a stranger got {seen:?}"
    );
}

/// §6.5.9.8 ("Not on Whitelist"; §6.1.3.4 for subscribing): a contact reading a
/// `whitelist` node (XEP-0223 private data, XEP-0402 bookmarks) gets `not-allowed` +
/// `closed-node`, and never the item. Prosody differs (`forbidden`).
#[test]
fn a_contact_reading_a_whitelist_node_gets_closed_node() {
    let server = server();
    let (mut a, mut b) = friends(&server);
    let node = "urn:xmpp:bookmarks:1";
    let reply = pubsub(
        &mut a,
        "set",
        None,
        &format!(
            "<publish node='{node}'><item id='family@conference.{domain}'>\
             <conference xmlns='{node}' name='Family' autojoin='true'><nick>alice</nick>\
             </conference></item></publish>{}",
            options(&[
                ("pubsub#persist_items", "true"),
                ("pubsub#max_items", "max"),
                ("pubsub#send_last_published_item", "never"),
                ("pubsub#access_model", "whitelist"),
            ]),
            domain = server.domain(),
        ),
    );
    ok(&reply);
    let read = pubsub(
        &mut b,
        "get",
        Some(&server.jid("alice")),
        &format!("<items node='{node}'/>"),
    );
    assert_eq!(
        conditions(&read),
        ("not-allowed".into(), Some("closed-node".into())),
        "{read}"
    );
    // The owner still reads it.
    let own = pubsub(&mut a, "get", None, &format!("<items node='{node}'/>"));
    ok(&own);
    assert!(format!("{own}").contains("Family"), "{own}");
}
