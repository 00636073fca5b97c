//! XEP-0191: Blocking Command — the sans-IO part: parsing block/unblock/blocklist
//! requests, matching a JID against a blocklist (§3.4, with the XEP-0016 §2.1 order:
//! full JID, bare JID, domain/resource, domain), and the stanzas and errors it produces.
//! Storing the list, caching it and enforcing it on traffic is `router::im`'s job.

mod enforce;
mod store;

pub use store::BlockList;

use crate::jid::Jid;
use crate::ns;
use crate::stanza::{ErrorType, IqType, Stanza, StanzaCondition, StanzaError};
use crate::xml::Element;

/// The blocking namespace (XEP-0191 §3).
pub const NS_BLOCKING: &str = "urn:xmpp:blocking";
/// Application error saying the sender itself blocked the recipient (XEP-0191 §3.6).
pub const NS_BLOCKING_ERRORS: &str = "urn:xmpp:blocking:errors";

/// A blocking iq from the account's own client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockRequest {
    /// §3.1: the current list.
    Get,
    /// §3.2: add these JIDs (at least one).
    Block(Vec<Jid>),
    /// §3.3: remove these JIDs, or everyone (`None`, an empty `<unblock/>`).
    Unblock(Option<Vec<Jid>>),
}

/// XEP-0191, announced in the server's disco#info (§2); the requests are answered
/// against storage by `router::im`, which also enforces the lists on traffic.
pub struct Blocking;

impl super::Module for Blocking {
    fn name(&self) -> &'static str {
        "blocking"
    }

    fn specs(&self) -> &'static [super::Spec] {
        &[super::Spec {
            doc: super::Doc::Xep(191),
            title: "Blocking Command",
            version: "1.3",
            status: super::Status::Complete,
            note: "enforced on messages, presence and iqs both ways; pushes to every resource",
        }]
    }

    fn disco(&self) -> &'static [super::Announce] {
        &[super::Announce {
            var: NS_BLOCKING,
            on: super::On::Server,
        }]
    }

    fn iqs(&self) -> &'static [super::IqRoute] {
        &[super::IqRoute {
            ns: NS_BLOCKING,
            on: super::On::Account,
            access: super::Access::Own,
        }]
    }

    fn hooks(&self) -> &'static [super::Hook] {
        &[super::Hook::StanzaIn]
    }

    /// §3.5 / §3.6: nothing passes between an account and someone it blocked, or who
    /// blocked it — messages, presence (subscriptions, directed presence, probes) and iqs
    /// alike, whether the other is local or on another server; broadcasts and what the
    /// account sends itself or the server are not concerned. An iq whose module decides
    /// who may ask (XEP-0012) is left to it.
    fn filter_in<'a>(
        &'a self,
        cx: &'a super::HookCx<'a>,
        stanza: &'a Stanza,
        access: Option<super::Access>,
        out: &'a mut String,
    ) -> super::HookFuture<'a, super::Verdict> {
        Box::pin(async move {
            if access == Some(super::Access::Module)
                || !cx.im.refused_for_blocking(cx.from, stanza, out).await
            {
                super::Verdict::Pass
            } else {
                super::Verdict::Stop
            }
        })
    }

    fn handle_iq<'a>(&'a self, cx: &'a super::IqCx<'a>, iq: &'a Stanza) -> super::IqFuture<'a> {
        Box::pin(async move {
            // Access::Own: only the account's own sessions get here.
            let Some(from) = cx.from.session() else {
                return Err(StanzaError::new(StanzaCondition::Forbidden));
            };
            let req = parse(iq)?;
            cx.im.blocking_request(from, req).await
        })
    }
}

/// Whether `payload` belongs to this XEP.
pub fn is_blocking_payload(payload: &Element) -> bool {
    payload.ns() == NS_BLOCKING && matches!(payload.name(), "blocklist" | "block" | "unblock")
}

fn bad(cond: StanzaCondition, text: &str) -> StanzaError {
    StanzaError::new(cond).with_text(text)
}

/// Parses a blocking request; every bad input gets the XEP's error.
pub fn parse(iq: &Stanza) -> Result<BlockRequest, StanzaError> {
    let Some(p) = iq.iq_payload() else {
        return Err(bad(StanzaCondition::BadRequest, "no payload"));
    };
    let items = || -> Result<Vec<Jid>, StanzaError> {
        p.children()
            .filter(|c| c.is("item", NS_BLOCKING))
            .map(|c| {
                let jid = c
                    .attr("jid")
                    .ok_or_else(|| bad(StanzaCondition::BadRequest, "an item has no jid"))?;
                Jid::parse(jid).map_err(|e| {
                    bad(
                        StanzaCondition::JidMalformed,
                        &format!("bad jid {jid:?}: {e}"),
                    )
                })
            })
            .collect()
    };
    match (iq.iq_type(), p.name()) {
        (Some(IqType::Get), "blocklist") => Ok(BlockRequest::Get),
        (Some(IqType::Set), "block") => {
            let list = items()?;
            if list.is_empty() {
                // §3.2: a block without items is a bad request.
                return Err(bad(StanzaCondition::BadRequest, "nothing to block"));
            }
            Ok(BlockRequest::Block(list))
        }
        (Some(IqType::Set), "unblock") => {
            let list = items()?;
            Ok(BlockRequest::Unblock((!list.is_empty()).then_some(list)))
        }
        _ => Err(bad(StanzaCondition::BadRequest, "not a blocking request")),
    }
}

/// Whether a stanza from or to `addr` is blocked by a list of normalized JIDs (§3.4).
pub fn is_blocked(list: &[String], addr: &Jid) -> bool {
    if list.is_empty() {
        return false;
    }
    let bare = addr.bare();
    let domain = addr.domain();
    let domain_resource = addr.resource().map(|r| format!("{domain}/{r}"));
    list.iter().any(|b| {
        b == addr.as_str()
            || b == bare.as_str()
            || b == domain
            || domain_resource.as_deref() == Some(b.as_str())
    })
}

/// `<blocklist/>` with the items (§3.1).
pub fn blocklist(items: &[String]) -> Element {
    with_items(
        Element::new("blocklist", NS_BLOCKING),
        items.iter().map(String::as_str),
    )
}

/// The push announcing a change to every interested resource (§3.2, §3.3): `block` or
/// `unblock` with the items; an empty `unblock` means everyone.
pub fn push(to: &str, id: &str, block: bool, items: &[String]) -> Element {
    let name = if block { "block" } else { "unblock" };
    let payload = with_items(
        Element::new(name, NS_BLOCKING),
        items.iter().map(String::as_str),
    );
    Element::new("iq", ns::CLIENT)
        .with_attr("type", "set")
        .with_attr("id", id)
        .with_attr("to", to)
        .with_child(payload)
}

fn with_items<'a>(mut el: Element, items: impl Iterator<Item = &'a str>) -> Element {
    for j in items {
        el.push_child(Element::new("item", NS_BLOCKING).with_attr("jid", j));
    }
    el
}

/// The error for a stanza the sender sends to someone it blocked (§3.6): `not-acceptable`
/// with `<blocked xmlns='urn:xmpp:blocking:errors'/>`, of type `cancel` as in the XEP's
/// example (and Prosody, ejabberd) rather than `not-acceptable`'s usual `modify`: nothing
/// the sender changes in the stanza gets it through while the block stands.
pub fn blocked_error(stanza: &Element) -> Option<Element> {
    let err = StanzaError {
        kind: ErrorType::Cancel,
        ..StanzaError::new(StanzaCondition::NotAcceptable)
    };
    let mut reply = err.reply_to(stanza)?;
    reply.remove_children("error", ns::CLIENT);
    let mut e = err.to_element();
    e.push_child(Element::new("blocked", NS_BLOCKING_ERRORS));
    reply.push_child(e);
    Some(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iq(ty: &str, payload: Element) -> Stanza {
        let el = Element::new("iq", ns::CLIENT)
            .with_attr("type", ty)
            .with_attr("id", "b1")
            .with_child(payload);
        Stanza::from_client(el).unwrap()
    }

    fn item(j: &str) -> Element {
        Element::new("item", NS_BLOCKING).with_attr("jid", j)
    }

    #[test]
    fn parses_requests() {
        let get = iq("get", Element::new("blocklist", NS_BLOCKING));
        assert_eq!(parse(&get), Ok(BlockRequest::Get));
        let b = iq(
            "set",
            Element::new("block", NS_BLOCKING).with_child(item("Bad@X")),
        );
        assert_eq!(
            parse(&b),
            Ok(BlockRequest::Block(vec![Jid::parse("bad@x").unwrap()]))
        );
        let all = iq("set", Element::new("unblock", NS_BLOCKING));
        assert_eq!(parse(&all), Ok(BlockRequest::Unblock(None)));
        let one = iq(
            "set",
            Element::new("unblock", NS_BLOCKING).with_child(item("a@x")),
        );
        assert!(matches!(parse(&one), Ok(BlockRequest::Unblock(Some(v))) if v.len() == 1));
    }

    #[test]
    fn rejects_bad_requests() {
        let empty = iq("set", Element::new("block", NS_BLOCKING));
        assert_eq!(
            parse(&empty).unwrap_err().condition,
            StanzaCondition::BadRequest
        );
        let bad_jid = iq(
            "set",
            Element::new("block", NS_BLOCKING).with_child(item("@@")),
        );
        assert_eq!(
            parse(&bad_jid).unwrap_err().condition,
            StanzaCondition::JidMalformed
        );
        let no_jid = iq(
            "set",
            Element::new("block", NS_BLOCKING).with_child(Element::new("item", NS_BLOCKING)),
        );
        assert_eq!(
            parse(&no_jid).unwrap_err().condition,
            StanzaCondition::BadRequest
        );
        let get_block = iq(
            "get",
            Element::new("block", NS_BLOCKING).with_child(item("a@x")),
        );
        assert_eq!(
            parse(&get_block).unwrap_err().condition,
            StanzaCondition::BadRequest
        );
    }

    #[test]
    fn matching_order() {
        let j = |s: &str| Jid::parse(s).unwrap();
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // A bare JID blocks every resource of it.
        assert!(is_blocked(&list(&["a@x"]), &j("a@x/phone")));
        assert!(is_blocked(&list(&["a@x"]), &j("a@x")));
        // A full JID blocks only that resource.
        assert!(is_blocked(&list(&["a@x/phone"]), &j("a@x/phone")));
        assert!(!is_blocked(&list(&["a@x/phone"]), &j("a@x/laptop")));
        assert!(!is_blocked(&list(&["a@x/phone"]), &j("a@x")));
        // A domain blocks everyone there; domain/resource that resource of anyone.
        assert!(is_blocked(&list(&["x"]), &j("b@x/r")));
        assert!(is_blocked(&list(&["x/r"]), &j("b@x/r")));
        assert!(!is_blocked(&list(&["x/r"]), &j("b@x/s")));
        assert!(!is_blocked(&list(&["y"]), &j("b@x")));
        assert!(!is_blocked(&[], &j("b@x")));
    }

    #[test]
    fn error_and_push_shapes() {
        let msg = Element::new("message", ns::CLIENT)
            .with_attr("from", "a@x/r")
            .with_attr("to", "b@x");
        let e = blocked_error(&msg).unwrap();
        let err = e.get_child("error", ns::CLIENT).unwrap();
        assert_eq!(err.attr("type"), Some("cancel"));
        assert!(err.has_child("not-acceptable", ns::STANZA_ERRORS));
        assert!(err.has_child("blocked", NS_BLOCKING_ERRORS));
        assert_eq!(e.children().count(), 1);
        let p = push("a@x/r", "p1", false, &[]);
        assert!(
            p.get_child("unblock", NS_BLOCKING)
                .unwrap()
                .children()
                .next()
                .is_none()
        );
        let l = blocklist(&["b@x".into()]);
        assert_eq!(l.children().count(), 1);
    }
}
