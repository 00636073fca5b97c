//! XEP-0030: Service Discovery — disco#info and disco#items for the server
//! and, on their behalf, for accounts (XEP-0030 §3, RFC 6121 §8.5.2.1.3).

use super::{Ctx, Feature, IqOutcome, Target};
use crate::ns;
use crate::stanza::{IqType, Stanza, StanzaCondition, StanzaError};
use crate::xml::Element;

pub struct Disco;

/// What an account's bare JID answers, through the server (RFC 6121 §8.5.2.1.3): disco
/// itself, ping (answered by any target), and last activity (XEP-0012 §4, which `router::im`
/// answers for bare JIDs only, hence announced here and not on the server, which
/// tells no uptime). Kept by hand until disco comes from the module registry.
pub const ACCOUNT_FEATURES: &[&str] = &[
    ns::DISCO_INFO,
    ns::DISCO_ITEMS,
    ns::PING,
    super::last::NS_LAST,
];

impl Feature for Disco {
    fn disco_features(&self) -> &'static [&'static str] {
        &[ns::DISCO_INFO, ns::DISCO_ITEMS]
    }

    fn handle_iq(&self, ctx: &Ctx, iq: &Stanza, payload: &Element) -> Option<IqOutcome> {
        let is_info = payload.is("query", ns::DISCO_INFO);
        if !(is_info || payload.is("query", ns::DISCO_ITEMS)) {
            return None;
        }
        if iq.iq_type() != Some(IqType::Get) {
            return Some(Err(StanzaError::new(StanzaCondition::NotAllowed)));
        }
        if payload.attr("node").is_some() {
            // No nodes are published here (XEP-0030 §3.2 / §4.2).
            return Some(Err(StanzaError::new(StanzaCondition::ItemNotFound)));
        }
        let ns = if is_info {
            ns::DISCO_INFO
        } else {
            ns::DISCO_ITEMS
        };
        let mut q = Element::new("query", ns);
        if is_info {
            let (category, ty, name) = match ctx.target {
                Target::Server => ("server", "im", "hearth"),
                Target::Account(_) => ("account", "registered", ""),
            };
            let mut identity = Element::new("identity", ns)
                .with_attr("category", category)
                .with_attr("type", ty);
            if !name.is_empty() {
                identity.set_attr("name", name);
            }
            q.push_child(identity);
            match ctx.target {
                Target::Server => {
                    for f in ctx.disco_features {
                        q.push_child(Element::new("feature", ns).with_attr("var", *f));
                    }
                }
                Target::Account(_) => {
                    for f in ACCOUNT_FEATURES {
                        q.push_child(Element::new("feature", ns).with_attr("var", *f));
                    }
                }
            }
        }
        Some(Ok(Some(q)))
    }
}
