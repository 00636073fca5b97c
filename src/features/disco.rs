//! XEP-0030: Service Discovery — disco#info and disco#items for the server and, on their
//! behalf, for accounts (XEP-0030 §3, RFC 6121 §8.5.2.1.3). The features listed are those
//! the modules declare for the entity asked ([`super::Registry::disco_features`]).

use super::{
    Access, Announce, Doc, IqCx, IqFuture, IqRoute, Module, On, Spec, Status, Target, ready,
};
use crate::ns;
use crate::stanza::{IqType, Stanza, StanzaCondition, StanzaError};
use crate::xml::Element;

pub struct Disco;

/// The server's one identity (XEP-0030 §3.1, the registry's `server/im`): what
/// disco#info says and what XEP-0115's verification string is computed from.
pub const SERVER_IDENTITY: Identity = Identity {
    category: "server",
    ty: "im",
    name: "hearth",
};

/// A XEP-0030 identity (no `xml:lang`: hearth names itself in one language).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub category: &'static str,
    pub ty: &'static str,
    /// `""` for none.
    pub name: &'static str,
}

/// A disco#info `<query/>` with `identity` and `features`, for `node` when given
/// (XEP-0030 §3.1, §3.2).
pub fn info_query(identity: Identity, features: &[&str], node: Option<&str>) -> Element {
    let mut q = Element::new("query", ns::DISCO_INFO);
    if let Some(node) = node {
        q.set_attr("node", node);
    }
    let mut el = Element::new("identity", ns::DISCO_INFO)
        .with_attr("category", identity.category)
        .with_attr("type", identity.ty);
    if !identity.name.is_empty() {
        el.set_attr("name", identity.name);
    }
    q.push_child(el);
    for f in features {
        q.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", *f));
    }
    q
}

impl Module for Disco {
    fn name(&self) -> &'static str {
        "disco"
    }

    fn specs(&self) -> &'static [Spec] {
        &[Spec {
            doc: Doc::Xep(30),
            title: "Service Discovery",
            version: "2.5rc3",
            status: Status::Complete,
            note: "the server and accounts; the nodes of ad-hoc commands; no other items",
        }]
    }

    fn disco(&self) -> &'static [Announce] {
        &[
            Announce {
                var: ns::DISCO_INFO,
                on: On::Both,
            },
            Announce {
                var: ns::DISCO_ITEMS,
                on: On::Both,
            },
        ]
    }

    fn iqs(&self) -> &'static [IqRoute] {
        &[
            IqRoute {
                ns: ns::DISCO_INFO,
                on: On::Both,
                access: Access::Anyone,
            },
            IqRoute {
                ns: ns::DISCO_ITEMS,
                on: On::Both,
                access: Access::Anyone,
            },
        ]
    }

    fn handle_iq<'a>(&'a self, cx: &'a IqCx<'a>, iq: &'a Stanza) -> IqFuture<'a> {
        let plain = iq.iq_payload().is_some_and(|p| p.attr("node").is_none());
        let items = iq
            .iq_payload()
            .is_some_and(|p| p.is("query", ns::DISCO_ITEMS));
        if !(plain && items && iq.iq_type() == Some(IqType::Get)) {
            return ready(answer(cx, iq));
        }
        // §4.1: the entity's items, from the modules that have some (XEP-0060 §5.2: an
        // account's PEP nodes).
        Box::pin(async move {
            let mut q = Element::new("query", ns::DISCO_ITEMS);
            for m in cx.registry.modules() {
                for item in m.disco_items(cx).await {
                    q.push_child(item);
                }
            }
            Ok(Some(q))
        })
    }
}

fn answer(cx: &IqCx, iq: &Stanza) -> super::IqOutcome {
    let Some(payload) = iq.iq_payload() else {
        return Err(StanzaError::new(StanzaCondition::ServiceUnavailable));
    };
    let is_info = payload.is("query", ns::DISCO_INFO);
    if !(is_info || payload.is("query", ns::DISCO_ITEMS)) {
        return Err(StanzaError::new(StanzaCondition::ServiceUnavailable));
    }
    if iq.iq_type() != Some(IqType::Get) {
        return Err(StanzaError::new(StanzaCondition::NotAllowed));
    }
    if let Some(node) = payload.attr("node") {
        // XEP-0030 §3.2 / §4.2: the module whose node it is answers (ad-hoc commands).
        return cx
            .registry
            .modules()
            .find_map(|m| m.disco_node(cx, node, is_info))
            .unwrap_or_else(|| Err(StanzaError::new(StanzaCondition::ItemNotFound)));
    }
    if !is_info {
        return Ok(Some(Element::new("query", ns::DISCO_ITEMS)));
    }
    let identity = match cx.target {
        Target::Server => SERVER_IDENTITY,
        Target::Account(_) => Identity {
            category: "account",
            ty: "registered",
            name: "",
        },
    };
    let mut q = info_query(identity, cx.registry.disco_features(cx.target), None);
    // The modules' identities (XEP-0163 §9: `pubsub/pep` on accounts), after the
    // entity's own.
    let extra = cx
        .registry
        .modules()
        .flat_map(|m| m.identities())
        .filter(|(on, _)| on.covers(cx.target));
    for (i, (_, id)) in extra.enumerate() {
        let mut el = Element::new("identity", ns::DISCO_INFO)
            .with_attr("category", id.category)
            .with_attr("type", id.ty);
        if !id.name.is_empty() {
            el.set_attr("name", id.name);
        }
        q.insert_child(1 + i, el);
    }
    // XEP-0128 §2: extended information as data forms after the features.
    for form in cx.registry.disco_forms(cx.target) {
        q.push_child(form.clone());
    }
    Ok(Some(q))
}
