//! XEP-0160: Best Practices for Handling Offline Messages — which messages are kept for a
//! user with no available resource, and how they are marked (XEP-0203 `<delay/>`).
//! Storing and delivering them is `router::im`'s job, through `storage::OfflineStore`.

mod deliver;
mod store;

pub(crate) use store::store_offline_in;
pub use store::{OfflineStore, Stored};

use super::{Announce, Doc, Module, On, Spec, Status};
use crate::stanza::MessageType;
use crate::xml::Element;

/// The disco feature of offline storage, on the server's disco#info (XEP-0160, Service
/// Discovery: a client learns there that messages sent to offline contacts are kept).
pub const MSGOFFLINE: &str = "msgoffline";

/// Offline storage; it has no iq of its own (XEP-0013 retrieval is not offered).
pub struct Offline;

impl Module for Offline {
    fn name(&self) -> &'static str {
        "offline"
    }

    fn specs(&self) -> &'static [Spec] {
        &[
            Spec {
                doc: Doc::Xep(160),
                title: "Best Practices for Handling Offline Messages",
                version: "1.0.1",
                status: Status::Complete,
                note: "chat and normal messages kept in SQLite, delivered in order at login",
            },
            Spec {
                doc: Doc::Xep(203),
                title: "Delayed Delivery",
                version: "2.0",
                status: Status::Complete,
                note: "on offline messages and on presence shown later",
            },
        ]
    }

    fn disco(&self) -> &'static [Announce] {
        &[Announce {
            var: MSGOFFLINE,
            on: On::Server,
        }]
    }

    fn hooks(&self) -> &'static [super::Hook] {
        &[super::Hook::MessageUndelivered]
    }

    /// §3: kept, with a `<delay/>`, until the user comes online.
    fn message_undelivered<'a>(
        &'a self,
        cx: &'a super::HookCx<'a>,
        stanza: crate::stanza::Stanza,
    ) -> super::HookFuture<'a, ()> {
        Box::pin(cx.im.store_offline(cx.from, stanza))
    }
}

/// XEP-0160 §3: `normal` and `chat` messages are stored; `groupchat`, `headline` and
/// `error` are not.
pub fn is_stored(ty: MessageType) -> bool {
    matches!(ty, MessageType::Chat | MessageType::Normal)
}

/// The message as it is stored: with a `<delay/>` from the server saying when it arrived
/// (XEP-0160 §4, XEP-0203).
pub fn stamp(mut el: Element, domain: &str, now: i64) -> Element {
    el.push_child(super::presence::delay(domain, now));
    el
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ns;

    #[test]
    fn which_are_stored() {
        assert!(is_stored(MessageType::Chat) && is_stored(MessageType::Normal));
        for t in [
            MessageType::Groupchat,
            MessageType::Headline,
            MessageType::Error,
        ] {
            assert!(!is_stored(t));
        }
    }

    #[test]
    fn stamped_with_delay() {
        let el = Element::new("message", ns::CLIENT)
            .with_child(Element::new("body", ns::CLIENT).with_text("hi"));
        let el = stamp(el, "home.example", 0);
        let d = el.get_child("delay", ns::DELAY).unwrap();
        assert_eq!(d.attr("stamp"), Some("1970-01-01T00:00:00Z"));
        assert_eq!(d.attr("from"), Some("home.example"));
        assert!(el.has_child("body", ns::CLIENT));
    }
}
