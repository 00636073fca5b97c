//! RFC 6121 §4: presence — the pieces of it that are pure: reading priority and status,
//! and building the presence the server sends on a user's behalf. The broadcast, probes
//! and directed-presence bookkeeping live in `router::im` and the router's sessions.

mod handle;

use crate::ns;
use crate::xml::Element;

/// RFC 6121 §4 as a module: presence travels through `router::im` and the router's
/// sessions; this declares it.
pub struct Presence;

impl super::Module for Presence {
    fn name(&self) -> &'static str {
        "presence"
    }

    fn specs(&self) -> &'static [super::Spec] {
        &[super::Spec {
            doc: super::Doc::Rfc(6121, "§4"),
            title: "Exchanging Presence Information",
            version: "",
            status: super::Status::Complete,
            note: "broadcast, probes with the last presence and its age, directed presence",
        }]
    }
}

/// The priority of an available presence (§4.7.2.3): an integer from -128 to 127; absent
/// or unreadable means 0.
pub fn priority(el: &Element) -> i8 {
    el.get_child("priority", ns::CLIENT)
        .and_then(|p| p.text().trim().parse::<i8>().ok())
        .unwrap_or(0)
}

/// The `<status/>` text of a presence (§4.7.2.2), empty if none.
pub fn status(el: &Element) -> String {
    el.get_child("status", ns::CLIENT)
        .map(|s| s.text())
        .unwrap_or_default()
}

/// XEP-0203 `<delay/>`: when the server first saw what it is handing on late.
pub fn delay(from: &str, unix_secs: i64) -> Element {
    let secs = u64::try_from(unix_secs).unwrap_or(0);
    Element::new("delay", ns::DELAY)
        .with_attr("from", from)
        .with_attr("stamp", crate::features::time::xep0082_utc(secs))
}

/// `<presence type='unavailable'/>` from `from` to `to` (§4.5).
pub fn unavailable(from: &str, to: &str) -> Element {
    Element::new("presence", ns::CLIENT)
        .with_attr("type", "unavailable")
        .with_attr("from", from)
        .with_attr("to", to)
}

/// `<presence type='probe'/>` from the user's bare JID to a contact's (§4.3.1).
pub fn probe(from: &str, to: &str) -> Element {
    Element::new("presence", ns::CLIENT)
        .with_attr("type", "probe")
        .with_attr("from", from)
        .with_attr("to", to)
}

/// A subscription stanza (§3) the server generates: from and to are bare JIDs.
pub fn subscription(ty: &str, from: &str, to: &str) -> Element {
    Element::new("presence", ns::CLIENT)
        .with_attr("type", ty)
        .with_attr("from", from)
        .with_attr("to", to)
}

/// A copy of `el` addressed to `to`.
pub fn addressed(el: &Element, to: &str) -> Element {
    let mut el = el.clone();
    el.set_attr("to", to);
    el
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presence(children: &[(&str, &str)]) -> Element {
        let mut el = Element::new("presence", ns::CLIENT);
        for (n, t) in children {
            el.push_child(Element::new(*n, ns::CLIENT).with_text(*t));
        }
        el
    }

    #[test]
    fn priority_and_status() {
        assert_eq!(priority(&presence(&[])), 0);
        assert_eq!(priority(&presence(&[("priority", " -5 ")])), -5);
        assert_eq!(priority(&presence(&[("priority", "127")])), 127);
        // Out of range or not a number: the default.
        assert_eq!(priority(&presence(&[("priority", "128")])), 0);
        assert_eq!(priority(&presence(&[("priority", "high")])), 0);
        assert_eq!(status(&presence(&[("status", "21.5 °C")])), "21.5 °C");
        assert_eq!(status(&presence(&[])), "");
    }

    #[test]
    fn delay_stamp() {
        let d = delay("home.example", 86_400);
        assert!(d.is("delay", ns::DELAY));
        assert_eq!(d.attr("stamp"), Some("1970-01-02T00:00:00Z"));
        assert_eq!(d.attr("from"), Some("home.example"));
    }
}
