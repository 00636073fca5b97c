//! RFC 6121 §2: roster management — get, set and remove, with groups and names, roster
//! pushes (§2.1.6) and versioning (§2.6).
//!
//! This file is the sans-IO half: parsing a roster iq into a [`RosterRequest`] with the
//! RFC's errors, and building results and pushes. Reading and writing the roster, and
//! sending pushes to the user's interested resources, is `router::im`'s job.

use crate::jid::{BareJid, FullJid};
use crate::stanza::{IqType, Stanza, StanzaCondition, StanzaError};
mod handle;
mod store;

use crate::xml::Element;
pub use store::{Roster, RosterChange, RosterItem, SubscriptionChange};

/// The roster namespace (RFC 6121 §2.1).
pub const NS_ROSTER: &str = "jabber:iq:roster";
/// Stream feature announcing roster versioning (RFC 6121 §2.6.1).
pub const NS_ROSTERVER: &str = "urn:xmpp:features:rosterver";
/// Stream feature announcing subscription pre-approval (RFC 6121 §3.4.1).
pub const NS_PRE_APPROVAL: &str = "urn:xmpp:features:pre-approval";

/// RFC 6121 §2 as a module: roster iqs from the account's own client, and the roster
/// versioning stream feature (§2.6.1).
pub struct RosterModule;

impl super::Module for RosterModule {
    fn name(&self) -> &'static str {
        "roster"
    }

    fn specs(&self) -> &'static [super::Spec] {
        &[super::Spec {
            doc: super::Doc::Rfc(6121, "§2"),
            title: "Managing the Roster",
            version: "",
            status: super::Status::Complete,
            note: "with versioning (§2.6); 1000 items, 1024-byte names, 64 groups",
        }]
    }

    /// The roster is core protocol: announced as a stream feature, not in disco.
    fn iqs(&self) -> &'static [super::IqRoute] {
        &[super::IqRoute {
            ns: NS_ROSTER,
            on: super::On::Account,
            access: super::Access::Own,
        }]
    }

    fn stream_features(&self) -> Vec<Element> {
        vec![Element::new("ver", NS_ROSTERVER)]
    }

    fn handle_iq<'a>(&'a self, cx: &'a super::IqCx<'a>, iq: &'a Stanza) -> super::IqFuture<'a> {
        Box::pin(async move {
            // Access::Own: only the account's own sessions get here.
            let Some(from) = cx.from.session() else {
                return Err(StanzaError::new(StanzaCondition::Forbidden));
            };
            let req = parse(iq)?;
            cx.im.roster_iq(from, req).await
        })
    }
}

/// Longest item name and group name, in bytes (§2.3.3 `not-acceptable` beyond it).
pub const MAX_NAME_BYTES: usize = 1024;
/// Most groups on one item (§2.3.3 allows a server limit; `not-acceptable` beyond it).
pub const MAX_GROUPS: usize = 64;

/// A roster iq from the account's own client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RosterRequest {
    /// §2.1.3: the whole roster; `ver` is the version the client has cached (§2.6.3).
    Get { ver: Option<String> },
    /// §2.3: add or update an item.
    Set {
        jid: BareJid,
        name: Option<String>,
        groups: Vec<String>,
    },
    /// §2.5: delete an item (`subscription='remove'`).
    Remove { jid: BareJid },
}

fn err(cond: StanzaCondition, text: &str) -> StanzaError {
    StanzaError::new(cond).with_text(text)
}

/// Parses a roster get or set (its payload is already known to be `<query
/// xmlns='jabber:iq:roster'/>`).
pub fn parse(iq: &Stanza) -> Result<RosterRequest, StanzaError> {
    let Some(query) = iq.iq_payload() else {
        return Err(err(StanzaCondition::BadRequest, "no roster query"));
    };
    match iq.iq_type() {
        Some(IqType::Get) => {
            if query.children().next().is_some() {
                // §2.1.3: a get carries an empty query.
                return Err(err(
                    StanzaCondition::BadRequest,
                    "a roster get has no items",
                ));
            }
            Ok(RosterRequest::Get {
                ver: query.attr("ver").map(str::to_owned),
            })
        }
        Some(IqType::Set) => parse_set(query),
        _ => Err(err(StanzaCondition::BadRequest, "not a roster request")),
    }
}

fn parse_set(query: &Element) -> Result<RosterRequest, StanzaError> {
    let mut items = query.children().filter(|c| c.is("item", NS_ROSTER));
    let (Some(item), None) = (items.next(), items.next()) else {
        // §2.3.3: exactly one item per roster set.
        return Err(err(
            StanzaCondition::BadRequest,
            "a roster set carries exactly one item",
        ));
    };
    let Some(jid) = item.attr("jid") else {
        return Err(err(StanzaCondition::BadRequest, "the item has no jid"));
    };
    let jid = BareJid::parse(jid).map_err(|e| {
        // §2.1.2.3 / §2.3.3: roster items are bare JIDs.
        err(
            StanzaCondition::JidMalformed,
            &format!("the item's jid is not a bare JID: {e}"),
        )
    })?;
    // §2.1.2.5: `subscription` in a set is ignored unless it is `remove`; `ask` and
    // `approved` are the server's to set (§2.1.2.1, §2.1.2.2).
    if item.attr("subscription") == Some("remove") {
        return Ok(RosterRequest::Remove { jid });
    }
    let name = item
        .attr("name")
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    if name.as_ref().is_some_and(|n| n.len() > MAX_NAME_BYTES) {
        return Err(err(
            StanzaCondition::NotAcceptable,
            "the item's name is too long",
        ));
    }
    let mut groups: Vec<String> = Vec::new();
    for g in item.children().filter(|c| c.is("group", NS_ROSTER)) {
        let g = g.text();
        if g.is_empty() {
            // §2.3.3: an empty group name is not acceptable.
            return Err(err(StanzaCondition::NotAcceptable, "a group name is empty"));
        }
        if g.len() > MAX_NAME_BYTES {
            return Err(err(
                StanzaCondition::NotAcceptable,
                "a group name is too long",
            ));
        }
        if groups.contains(&g) {
            // §2.3.3: the same group twice is a bad request.
            return Err(err(StanzaCondition::BadRequest, "a group is listed twice"));
        }
        groups.push(g);
    }
    if groups.len() > MAX_GROUPS {
        return Err(err(
            StanzaCondition::NotAcceptable,
            "too many groups on one item",
        ));
    }
    Ok(RosterRequest::Set { jid, name, groups })
}

/// An `<item/>` as a client sees it (§2.1.2): pending-in is not shown.
pub fn item_element(item: &RosterItem) -> Element {
    let mut el = Element::new("item", NS_ROSTER)
        .with_attr("jid", item.jid.as_str())
        .with_attr("subscription", item.state.subscription.as_str());
    if let Some(name) = &item.name {
        el.set_attr("name", name.as_str());
    }
    if item.state.pending_out {
        el.set_attr("ask", "subscribe");
    }
    if item.state.approved {
        el.set_attr("approved", "true");
    }
    for g in &item.groups {
        el.push_child(Element::new("group", NS_ROSTER).with_text(g.as_str()));
    }
    el
}

/// The `<item subscription='remove'/>` a push announces a deletion with (§2.5.2).
pub fn removed_element(jid: &BareJid) -> Element {
    Element::new("item", NS_ROSTER)
        .with_attr("jid", jid.as_str())
        .with_attr("subscription", "remove")
}

/// The payload of a roster result (§2.1.4), always with the roster's `ver`: hearth
/// announces versioning on every stream (§2.6.1), and a result without `ver` leaves a
/// client that asked without one (a first login, a lost cache) with nothing to cache the
/// roster under, so it would fetch the whole roster again next time (§2.6.2). Prosody and
/// ejabberd send it whether or not the request had one.
pub fn roster_query(ver: u64, items: &[RosterItem]) -> Element {
    let mut q = Element::new("query", NS_ROSTER).with_attr("ver", ver.to_string());
    for i in items {
        q.push_child(item_element(i));
    }
    q
}

/// Whether a client holding version `cached` is current (§2.6.3: then the result is
/// empty and changes follow as pushes).
pub fn is_current(cached: &str, version: u64) -> bool {
    cached == version.to_string()
}

/// A roster push (§2.1.6) of one item to one resource.
pub fn push(to: &FullJid, id: &str, version: u64, item: Element) -> Element {
    let mut q = Element::new("query", NS_ROSTER).with_attr("ver", version.to_string());
    q.push_child(item);
    Element::new("iq", crate::ns::CLIENT)
        .with_attr("type", "set")
        .with_attr("id", id)
        .with_attr("to", to.as_str())
        .with_child(q)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::subscription::{SubState, Subscription};
    use crate::ns;

    fn iq(ty: &str, query: Element) -> Stanza {
        let el = Element::new("iq", ns::CLIENT)
            .with_attr("type", ty)
            .with_attr("id", "r1")
            .with_child(query);
        Stanza::from_client(el).unwrap()
    }

    fn item(jid: &str) -> Element {
        Element::new("item", NS_ROSTER).with_attr("jid", jid)
    }

    fn set(item: Element) -> Result<RosterRequest, StanzaError> {
        parse(&iq(
            "set",
            Element::new("query", NS_ROSTER).with_child(item),
        ))
    }

    fn cond(r: Result<RosterRequest, StanzaError>) -> StanzaCondition {
        r.unwrap_err().condition
    }

    #[test]
    fn get_with_and_without_ver() {
        let q = Element::new("query", NS_ROSTER);
        assert_eq!(
            parse(&iq("get", q.clone())),
            Ok(RosterRequest::Get { ver: None })
        );
        let r = parse(&iq("get", q.with_attr("ver", "7"))).unwrap();
        assert_eq!(
            r,
            RosterRequest::Get {
                ver: Some("7".into())
            }
        );
        assert!(is_current("7", 7) && !is_current("", 7) && !is_current("6", 7));
        let q = Element::new("query", NS_ROSTER).with_child(item("a@b"));
        assert_eq!(cond(parse(&iq("get", q))), StanzaCondition::BadRequest);
    }

    #[test]
    fn set_with_name_and_groups() {
        let el = item("Bob@Home.Example")
            .with_attr("name", "Bob")
            .with_attr("subscription", "both")
            .with_attr("ask", "subscribe")
            .with_child(Element::new("group", NS_ROSTER).with_text("Family"))
            .with_child(Element::new("group", NS_ROSTER).with_text("Friends"));
        let RosterRequest::Set { jid, name, groups } = set(el).unwrap() else {
            panic!("not a set")
        };
        // The JID is normalized; subscription and ask are ignored.
        assert_eq!(jid.as_str(), "bob@home.example");
        assert_eq!(name.as_deref(), Some("Bob"));
        assert_eq!(groups, ["Family", "Friends"]);
    }

    #[test]
    fn remove() {
        let r = set(item("bob@home.example").with_attr("subscription", "remove")).unwrap();
        assert!(matches!(r, RosterRequest::Remove { .. }));
    }

    #[test]
    fn bad_sets_get_the_rfc_errors() {
        // §2.3.3: two items.
        let q = Element::new("query", NS_ROSTER)
            .with_child(item("a@b"))
            .with_child(item("c@d"));
        assert_eq!(cond(parse(&iq("set", q))), StanzaCondition::BadRequest);
        // No item at all.
        assert_eq!(
            cond(parse(&iq("set", Element::new("query", NS_ROSTER)))),
            StanzaCondition::BadRequest
        );
        // A full JID or a bad one.
        assert_eq!(cond(set(item("a@b/r"))), StanzaCondition::JidMalformed);
        assert_eq!(cond(set(item("@@"))), StanzaCondition::JidMalformed);
        assert_eq!(
            cond(set(Element::new("item", NS_ROSTER))),
            StanzaCondition::BadRequest
        );
        // Empty, duplicate and over-long groups; over-long names; too many groups.
        let g = |t: &str| Element::new("group", NS_ROSTER).with_text(t);
        assert_eq!(
            cond(set(item("a@b").with_child(g("")))),
            StanzaCondition::NotAcceptable
        );
        assert_eq!(
            cond(set(item("a@b").with_child(g("x")).with_child(g("x")))),
            StanzaCondition::BadRequest
        );
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        assert_eq!(
            cond(set(item("a@b").with_child(g(&long)))),
            StanzaCondition::NotAcceptable
        );
        assert_eq!(
            cond(set(item("a@b").with_attr("name", long.as_str()))),
            StanzaCondition::NotAcceptable
        );
        let mut many = item("a@b");
        for i in 0..=MAX_GROUPS {
            many.push_child(g(&i.to_string()));
        }
        assert_eq!(cond(set(many)), StanzaCondition::NotAcceptable);
    }

    #[test]
    fn items_as_clients_see_them() {
        let it = RosterItem {
            jid: BareJid::parse("bob@home.example").unwrap(),
            name: Some("Bob".into()),
            state: SubState {
                subscription: Subscription::From,
                pending_out: true,
                pending_in: true,
                approved: false,
            },
            groups: vec!["G".into()],
        };
        let el = item_element(&it);
        assert_eq!(el.attr("subscription"), Some("from"));
        assert_eq!(el.attr("ask"), Some("subscribe"));
        assert_eq!(el.attr("approved"), None);
        assert_eq!(el.get_child("group", NS_ROSTER).unwrap().text(), "G");
        let q = roster_query(3, std::slice::from_ref(&it));
        assert_eq!(q.attr("ver"), Some("3"));
        assert_eq!(roster_query(1, &[]).attr("ver"), Some("1"));
        let to = FullJid::parse("alice@home.example/phone").unwrap();
        let p = push(&to, "push1", 4, removed_element(&it.jid));
        assert_eq!(p.attr("type"), Some("set"));
        let q = p.get_child("query", NS_ROSTER).unwrap();
        assert_eq!(q.attr("ver"), Some("4"));
        assert_eq!(
            q.get_child("item", NS_ROSTER).unwrap().attr("subscription"),
            Some("remove")
        );
    }
}
