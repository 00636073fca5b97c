//! XEP-0157: Contact Addresses for XMPP Services (version 1.1.1) — whom to write about
//! abuse, security problems or help, from `[contact]` in the configuration, as the
//! `http://jabber.org/network/serverinfo` form (XEP-0128) in the server's disco#info.
//!
//! §2: one `list-multi` field per kind of address that is configured, each value a URI
//! (`mailto:`, `xmpp:`, `https:`…); kinds with no address are left out, and with none at
//! all there is no form. The form is computed from the settings when the server starts
//! (and so is part of the XEP-0115 hash clients cache).

use super::forms::{Field, Form, FormType};
use super::{Doc, Module, Spec, Status};
use crate::xml::Element;

/// The form's `FORM_TYPE` (§2, registered with the XMPP Registrar).
pub const FORM_TYPE: &str = "http://jabber.org/network/serverinfo";

/// The kinds of address §2 registers, in the order the form lists them: `<kind>` in
/// `[contact]`, the field `<kind>-addresses`.
pub const KINDS: [&str; 6] = ["abuse", "admin", "feedback", "sales", "security", "support"];

/// `[contact]`: the addresses of each kind that has any, in [`KINDS`] order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContactAddresses {
    pub lists: Vec<(&'static str, Vec<String>)>,
}

/// Whether `s` looks like an absolute URI (RFC 3986 §3.1 scheme, a colon, something
/// after it, no white space): what §2 asks each value to be.
pub fn is_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
        && !s.chars().any(char::is_whitespace)
}

/// The serverinfo form (§2), or `None` when no address is configured.
pub fn form(addresses: &ContactAddresses) -> Option<Element> {
    if addresses.lists.is_empty() {
        return None;
    }
    let mut form = Form::new(FormType::Result, FORM_TYPE);
    for (kind, list) in &addresses.lists {
        let mut field = Field::new(format!("{kind}-addresses"), "list-multi");
        for a in list {
            field = field.value(a.clone());
        }
        form = form.field(field);
    }
    Some(form.to_element())
}

/// The module: no iq of its own, only the form in the server's disco#info.
pub struct Contact {
    form: Option<Element>,
}

impl Contact {
    pub fn new(addresses: &ContactAddresses) -> Contact {
        Contact {
            form: form(addresses),
        }
    }
}

impl Module for Contact {
    fn name(&self) -> &'static str {
        "contact"
    }

    fn specs(&self) -> &'static [Spec] {
        &[Spec {
            doc: Doc::Xep(157),
            title: "Contact Addresses for XMPP Services",
            version: "1.1.1",
            status: Status::Complete,
            note: "from `[contact]`; the kinds with an address",
        }]
    }

    fn disco_forms(&self) -> Vec<Element> {
        self.form.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::forms::NS_DATA;

    /// The registry carries the form into the server's disco#info only.
    #[test]
    fn the_registry_puts_the_form_on_the_server() {
        use crate::features::{Registry, Target};
        use crate::jid::BareJid;
        let r = Registry::new(vec![Box::new(Contact::new(&ContactAddresses {
            lists: vec![("support", vec!["https://example.org/help".into()])],
        }))]);
        assert_eq!(r.disco_forms(&Target::Server).len(), 1);
        let account = Target::Account(BareJid::new(Some("alice"), "example.org").unwrap());
        assert!(r.disco_forms(&account).is_empty());
        let none = Registry::new(vec![Box::new(Contact::new(&ContactAddresses::default()))]);
        assert!(none.disco_forms(&Target::Server).is_empty());
    }

    #[test]
    fn uris() {
        for ok in [
            "mailto:abuse@example.org",
            "xmpp:admin@example.org",
            "https://x.org/help",
        ] {
            assert!(is_uri(ok), "{ok}");
        }
        for bad in [
            "abuse@example.org",
            ":x",
            "1x:y",
            "mailto:",
            "mailto:a b",
            "",
        ] {
            assert!(!is_uri(bad), "{bad}");
        }
    }

    #[test]
    fn the_form_lists_configured_kinds_only() {
        assert_eq!(form(&ContactAddresses::default()), None);
        let f = form(&ContactAddresses {
            lists: vec![
                ("abuse", vec!["mailto:a@x".into(), "xmpp:a@x".into()]),
                ("security", vec!["mailto:s@x".into()]),
            ],
        })
        .unwrap();
        assert_eq!(f.attr("type"), Some("result"));
        let fields: Vec<&Element> = f.children().filter(|c| c.is("field", NS_DATA)).collect();
        assert_eq!(fields.len(), 3);
        assert_eq!(fields[0].attr("var"), Some("FORM_TYPE"));
        assert_eq!(fields[0].attr("type"), Some("hidden"));
        assert_eq!(fields[0].text(), "");
        assert_eq!(
            fields[0].get_child("value", NS_DATA).unwrap().text(),
            FORM_TYPE
        );
        assert_eq!(fields[1].attr("var"), Some("abuse-addresses"));
        assert_eq!(fields[1].attr("type"), Some("list-multi"));
        assert_eq!(fields[1].children().count(), 2);
        assert_eq!(fields[2].attr("var"), Some("security-addresses"));
    }
}
