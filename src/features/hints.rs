//! XEP-0334: Message Processing Hints — what a sender asks of the servers a message
//! crosses: not to store it (`no-store`, `no-permanent-store`), not to copy it to the
//! recipient's other resources (`no-copy`), or to store it where it would not be
//! (`store`). The hints have no iq and no disco feature (§3); the modules that store or
//! copy messages (offline storage, the archive, carbons) read them with [`has`].

use super::{Doc, Module, Spec, Status};
use crate::xml::Element;

/// XEP-0334's namespace.
pub const NS: &str = "urn:xmpp:hints";

/// One processing hint (XEP-0334 §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hint {
    /// §4.1: not to be archived, but may be kept offline for a while.
    NoPermanentStore,
    /// §4.2: not to be stored at all, offline or in an archive.
    NoStore,
    /// §4.3: not to be copied to other resources (XEP-0280 carbons).
    NoCopy,
    /// §4.4: to be stored even if it would not be otherwise (e.g. no body).
    Store,
}

impl Hint {
    /// The element name.
    pub fn name(self) -> &'static str {
        match self {
            Hint::NoPermanentStore => "no-permanent-store",
            Hint::NoStore => "no-store",
            Hint::NoCopy => "no-copy",
            Hint::Store => "store",
        }
    }
}

/// Whether the message `el` carries `hint` (a direct child in XEP-0334's namespace).
pub fn has(el: &Element, hint: Hint) -> bool {
    el.has_child(hint.name(), NS)
}

/// Whether the message may be kept in permanent storage (an archive): neither
/// `no-store` nor `no-permanent-store` (§4.1, §4.2).
pub fn may_archive(el: &Element) -> bool {
    !has(el, Hint::NoStore) && !has(el, Hint::NoPermanentStore)
}

/// The hints as a module: only a row in the table of specifications; the modules that
/// store or copy messages honour them.
pub struct Hints;

impl Module for Hints {
    fn name(&self) -> &'static str {
        "hints"
    }

    fn specs(&self) -> &'static [Spec] {
        &[Spec {
            doc: Doc::Xep(334),
            title: "Message Processing Hints",
            version: "0.3.0",
            status: Status::Complete,
            note: "honoured by offline storage, the archive and carbons",
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ns;

    fn message(hints: &[&str]) -> Element {
        let mut el = Element::new("message", ns::CLIENT)
            .with_child(Element::new("body", ns::CLIENT).with_text("hi"));
        for h in hints {
            el.push_child(Element::new(*h, NS));
        }
        el
    }

    #[test]
    fn reads_each_hint() {
        let el = message(&["no-copy", "store"]);
        assert!(has(&el, Hint::NoCopy) && has(&el, Hint::Store));
        assert!(!has(&el, Hint::NoStore) && !has(&el, Hint::NoPermanentStore));
        assert!(may_archive(&el));
        assert!(!may_archive(&message(&["no-store"])));
        assert!(!may_archive(&message(&["no-permanent-store"])));
    }

    #[test]
    fn a_hint_in_another_namespace_is_not_one() {
        let el =
            Element::new("message", ns::CLIENT).with_child(Element::new("no-store", "urn:example"));
        assert!(!has(&el, Hint::NoStore));
    }
}
