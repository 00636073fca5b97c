//! Who the server's answers come from (RFC 6120 §8.1.2.1, §10.3.3): an iq with no `to` is
//! handled on behalf of the sender's account, and its result or error carries no `from`;
//! one to the account's bare JID is answered from that bare JID; one to the domain from
//! the domain. In general a reply's `from` is the request's `to`. Checked with the raw
//! client for the exact attributes, and with aioxmpp, a library that matches replies by
//! (`from`, `id`) and ignores any other answer. Also what disco#info announces for the
//! server and for an account (XEP-0030, XEP-0012, XEP-0160).

mod common;

use common::client::{Conn, NS_CLIENT, NS_STANZA_ERRORS, new_id};
use common::clients;
use common::im::{self, NS_ROSTER};
use common::xml::Node;

const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const NS_BLOCKING: &str = "urn:xmpp:blocking";
const NS_LAST: &str = "jabber:iq:last";
const PW: &str = "a fine password";

/// An iq type, its `to`, its payload, and the error condition expected (`None`: a result).
type Case<'a> = (&'a str, Option<&'a str>, &'a str, Option<&'a str>);

/// Sends `<iq type=ty [to=to]>payload</iq>` and returns the reply.
fn iq(c: &mut Conn, ty: &str, to: Option<&str>, payload: &str) -> Node {
    let id = new_id("iq");
    let to = to.map(|t| format!(" to='{t}'")).unwrap_or_default();
    c.send(&format!("<iq type='{ty}' id='{id}'{to}>{payload}</iq>"));
    c.expect_iq_reply(&id)
}

fn condition(reply: &Node) -> Option<&str> {
    reply
        .child("error", NS_CLIENT)
        .and_then(|e| e.condition(NS_STANZA_ERRORS))
}

fn features(reply: &Node) -> Vec<&str> {
    reply
        .child("query", NS_DISCO_INFO)
        .map(|q| {
            q.children
                .iter()
                .filter(|f| f.name == "feature")
                .filter_map(|f| f.attr("var"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn replies_come_from_the_address_asked() {
    let server = im::server();
    let domain = server.domain().to_string();
    let aj = server.jid("alice");
    let mut a = im::login(&server, "alice", "phone");
    im::presence(&mut a, "");
    let me = a.full_jid().to_string();
    let disco = format!("<query xmlns='{NS_DISCO_INFO}'/>");
    let ping = "<ping xmlns='urn:xmpp:ping'/>";
    let nothing = "<query xmlns='urn:example:nobody-handles-this'/>";
    let vcard = "<vCard xmlns='vcard-temp'/>";
    let roster = format!("<query xmlns='{NS_ROSTER}'/>");
    let blocklist = format!("<blocklist xmlns='{NS_BLOCKING}'/>");
    let last = format!("<query xmlns='{NS_LAST}'/>");

    // What is asked, of whom, and the error condition expected (`None`: a result).
    let sua = Some("service-unavailable");
    let cases: Vec<Case> = vec![
        ("get", None, &disco, None),
        ("get", None, ping, None),
        ("get", None, &roster, None),
        ("get", None, &blocklist, None),
        ("get", None, &last, None),
        ("get", None, nothing, sua),
        // XEP-0054: the account's own vCard (empty).
        ("get", None, vcard, None),
        ("get", Some(&aj), vcard, None),
        ("set", None, &disco, Some("not-allowed")),
        ("get", Some(&aj), &disco, None),
        ("get", Some(&aj), ping, None),
        ("get", Some(&aj), &roster, None),
        ("get", Some(&aj), &blocklist, None),
        ("get", Some(&aj), &last, None),
        ("get", Some(&aj), nothing, sua),
        ("set", Some(&aj), &disco, Some("not-allowed")),
        ("get", Some(&domain), &disco, None),
        ("get", Some(&domain), ping, None),
        ("get", Some(&domain), nothing, sua),
        ("get", Some(&domain), &last, sua),
    ];
    for (ty, to, payload, want_cond) in cases {
        let reply = iq(&mut a, ty, to, payload);
        let case = format!("{payload} ({ty}) to {to:?}: {reply}");
        let want_type = if want_cond.is_some() {
            "error"
        } else {
            "result"
        };
        assert_eq!(reply.attr("type"), Some(want_type), "{case}");
        assert_eq!(condition(&reply), want_cond, "{case}");
        // The reply's `from` is the request's `to`, or absent when it had none.
        assert_eq!(reply.attr("from"), to, "{case}");
        assert_eq!(reply.attr("to"), Some(me.as_str()), "{case}");
    }
}

#[test]
fn disco_announces_what_is_implemented_where_it_is() {
    let server = im::server();
    let domain = server.domain().to_string();
    let mut a = im::login(&server, "alice", "phone");
    let disco = format!("<query xmlns='{NS_DISCO_INFO}'/>");
    // The server: offline storage (XEP-0160), not last activity (it tells no uptime).
    let s = iq(&mut a, "get", Some(&domain), &disco);
    let f = features(&s);
    assert!(f.contains(&"msgoffline"), "{s}");
    assert!(f.contains(&NS_BLOCKING), "{s}");
    assert!(!f.contains(&NS_LAST), "{s}");
    // An account: last activity (XEP-0012), answered for its bare JID.
    for to in [None, Some(server.jid("bob"))] {
        let r = iq(&mut a, "get", to.as_deref(), &disco);
        let f = features(&r);
        assert!(f.contains(&NS_LAST), "{r}");
        assert!(f.contains(&NS_DISCO_INFO), "{r}");
        assert!(!f.contains(&"msgoffline"), "{r}");
    }
}

/// aioxmpp 0.13 ignores a reply whose `from` is not what it asked: before the fix, every
/// request with no `to` timed out (the library's start-up queries hang the same way).
#[test]
fn aioxmpp_accepts_results_and_errors() {
    let server = common::Server::start(common::ServerOpts::default());
    server.add_user("alice", PW);
    let run = clients::aioxmpp(&server, "alice", PW);
    let checks: Vec<_> = run
        .events
        .iter()
        .filter(|e| e["event"] == "check")
        .collect();
    let failed: Vec<_> = checks.iter().filter(|e| e["ok"] != true).collect();
    assert!(
        checks.len() == 9 && failed.is_empty() && run.succeeded(),
        "failed checks: {failed:?}\n{run}"
    );
    // What aioxmpp's own disco service read from the answers.
    let disco = |name: &str| -> Vec<String> {
        let e = run
            .events
            .iter()
            .find(|e| e["event"] == "disco" && e["name"] == name)
            .unwrap_or_else(|| panic!("no disco answer for {name}:\n{run}"));
        e["features"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let server_features = disco("disco-server");
    assert!(
        server_features.iter().any(|f| f == "msgoffline"),
        "{server_features:?}"
    );
    for account in ["disco-account-no-to", "disco-account-bare"] {
        let f = disco(account);
        assert!(f.iter().any(|f| f == NS_LAST), "{account}: {f:?}");
    }
}
