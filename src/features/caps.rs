//! XEP-0115: Entity Capabilities, for the server itself — a `<c/>` in the stream
//! features after login (§6.3: clients learn the server's features there, without a
//! disco#info round trip when they have seen the same verification string before) and
//! the answer to disco#info for its `node#ver` (§6.2). The verification string is
//! computed (§5.1) from what disco#info for the domain says, which the registry derives
//! from the modules' declarations: nothing here is typed by hand, and a new module
//! changes the string.

use base64::Engine as _;
use sha1::{Digest, Sha1};

use super::disco::{self, SERVER_IDENTITY};
use super::forms::NS_DATA;
use super::{Doc, IqCx, IqOutcome, Module, Registry, Spec, Status, Target};
use crate::ns;
use crate::xml::Element;

/// XEP-0115's namespace.
pub const NS: &str = "http://jabber.org/protocol/caps";
/// The `node`: a URI naming the software (§4). hearth has no web address of its own yet;
/// `.invalid` (RFC 2606) says so, and clients key their caches by `ver`, not by this.
pub const NODE: &str = "https://hearth.invalid/caps";

/// An identity as §5.1 sorts and writes it: category, type, `xml:lang`, name.
pub type Identity<'a> = (&'a str, &'a str, &'a str, &'a str);

/// The verification string of §5.1 with SHA-1 (§5.1 step 7, the hash every client
/// supports), for an entity with `identities` and `features` and no XEP-0128 forms
/// ([`ver_with_forms`] for those): identities sorted by category, type, `xml:lang` and
/// name, each `category/type/lang/name<`; features sorted, each `feature<`; the SHA-1
/// of those UTF-8 bytes in Base64 (RFC 4648 §4, padded). Sorting is by octets
/// ("i;octet", RFC 4790 §9.3), which is `str`'s order.
pub fn ver(identities: &[Identity<'_>], features: &[&str]) -> String {
    ver_with_forms(identities, features, &[])
}

/// [`ver`] for an entity whose disco#info also carries XEP-0128 `forms` (§5.1 step 6):
/// after the features, each form sorted by its `FORM_TYPE` value, that value and `<`,
/// then its other fields sorted by `var`, each `var<` and its values sorted, each
/// `value<`. A form with no `FORM_TYPE` is left out, as §5.4 tells the receiver to.
pub fn ver_with_forms(identities: &[Identity<'_>], features: &[&str], forms: &[Element]) -> String {
    let mut ids: Vec<Identity<'_>> = identities.to_vec();
    ids.sort_unstable();
    let mut fs: Vec<&str> = features.to_vec();
    fs.sort_unstable();
    let mut s = String::new();
    for (category, ty, lang, name) in ids {
        s.push_str(&format!("{category}/{ty}/{lang}/{name}<"));
    }
    for f in fs {
        s.push_str(f);
        s.push('<');
    }
    let value = |field: &Element| -> Vec<String> {
        let mut v: Vec<String> = field
            .children()
            .filter(|c| c.is("value", NS_DATA))
            .map(Element::text)
            .collect();
        v.sort_unstable();
        v
    };
    let mut typed: Vec<(String, &Element)> = forms
        .iter()
        .filter_map(|x| {
            let ft = x
                .children()
                .find(|f| f.is("field", NS_DATA) && f.attr("var") == Some("FORM_TYPE"))?;
            Some((value(ft).concat(), x))
        })
        .collect();
    typed.sort_by(|a, b| a.0.cmp(&b.0));
    for (form_type, x) in typed {
        s.push_str(&form_type);
        s.push('<');
        let mut fields: Vec<&Element> = x
            .children()
            .filter(|f| f.is("field", NS_DATA) && f.attr("var") != Some("FORM_TYPE"))
            .collect();
        fields.sort_by_key(|f| f.attr("var").unwrap_or(""));
        for f in fields {
            s.push_str(f.attr("var").unwrap_or(""));
            s.push('<');
            for v in value(f) {
                s.push_str(&v);
                s.push('<');
            }
        }
    }
    base64::engine::general_purpose::STANDARD.encode(Sha1::digest(s.as_bytes()))
}

/// The server's verification string, from the disco#info the registry gives for the
/// domain.
pub fn server_ver(registry: &Registry) -> String {
    let id = SERVER_IDENTITY;
    ver_with_forms(
        &[(id.category, id.ty, "", id.name)],
        registry.disco_features(&Target::Server),
        registry.disco_forms(&Target::Server),
    )
}

pub struct Caps;

impl Module for Caps {
    fn name(&self) -> &'static str {
        "caps"
    }

    fn specs(&self) -> &'static [Spec] {
        &[Spec {
            doc: Doc::Xep(115),
            title: "Entity Capabilities",
            version: "1.6.0",
            status: Status::Partial,
            note: "the server's own: sha-1 `<c/>` in the stream features, its node answered; \
                   clients' caps in presence are passed on untouched, not cached",
        }]
    }

    fn stream_features_in(&self, registry: &Registry) -> Vec<Element> {
        // §6.3: hash, node and ver, as in presence.
        vec![
            Element::new("c", NS)
                .with_attr("hash", "sha-1")
                .with_attr("node", NODE)
                .with_attr("ver", server_ver(registry)),
        ]
    }

    fn disco_node(&self, cx: &IqCx<'_>, node: &str, is_info: bool) -> Option<IqOutcome> {
        // §6.2: the server's node#ver is the server's disco#info, with the node.
        if *cx.target != Target::Server {
            return None;
        }
        let ver = node.strip_prefix(NODE)?.strip_prefix('#')?;
        if ver != server_ver(cx.registry) {
            return None;
        }
        Some(Ok(Some(if is_info {
            let mut q = disco::info_query(
                SERVER_IDENTITY,
                cx.registry.disco_features(&Target::Server),
                Some(node),
            );
            for form in cx.registry.disco_forms(&Target::Server) {
                q.push_child(form.clone());
            }
            q
        } else {
            Element::new("query", ns::DISCO_ITEMS).with_attr("node", node)
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// XEP-0115 §5.2, the simple example: Exodus 0.9.1.
    #[test]
    fn the_simple_example_of_section_5_2() {
        let ver = ver(
            &[("client", "pc", "", "Exodus 0.9.1")],
            &[
                "http://jabber.org/protocol/disco#info",
                "http://jabber.org/protocol/disco#items",
                "http://jabber.org/protocol/muc",
                "http://jabber.org/protocol/caps",
            ],
        );
        assert_eq!(ver, "QgayPKawpkPSDYmwT/WM94uAlu0=");
    }

    /// XEP-0115 §5.3, the complex example: Psi 0.11 with a software-info form. Identities
    /// in two languages are beyond hearth's [`Identity`] tuples' use here but not their
    /// shape; the form is the part under test.
    #[test]
    fn the_complex_example_of_section_5_3() {
        use crate::features::forms::{Field, Form, FormType};
        let form = Form::new(FormType::Result, "urn:xmpp:dataforms:softwareinfo")
            .field(
                Field::new("ip_version", "text-multi")
                    .value("ipv4")
                    .value("ipv6"),
            )
            .field(Field::new("os", "text-single").value("Mac"))
            .field(Field::new("os_version", "text-single").value("10.5.1"))
            .field(Field::new("software", "text-single").value("Psi"))
            .field(Field::new("software_version", "text-single").value("0.11"))
            .to_element();
        let ver = ver_with_forms(
            &[
                ("client", "pc", "en", "Psi 0.11"),
                ("client", "pc", "el", "Ψ 0.11"),
            ],
            &[
                "http://jabber.org/protocol/caps",
                "http://jabber.org/protocol/disco#info",
                "http://jabber.org/protocol/disco#items",
                "http://jabber.org/protocol/muc",
            ],
            &[form],
        );
        assert_eq!(ver, "q07IKJEyjvHSyhy//CH0CxmKi8w=");
    }

    #[test]
    fn order_of_input_does_not_matter_but_content_does() {
        let a = ver(&[("server", "im", "", "hearth")], &["b", "a"]);
        let b = ver(&[("server", "im", "", "hearth")], &["a", "b"]);
        assert_eq!(a, b);
        assert_ne!(a, ver(&[("server", "im", "", "hearth")], &["a"]));
        assert_ne!(a, ver(&[("server", "im", "", "other")], &["a", "b"]));
    }

    #[test]
    fn the_stream_feature_carries_the_hash_of_the_registry_disco() {
        let r = Registry::standard();
        let features = r.stream_features();
        let c = features
            .iter()
            .find(|f| f.is("c", NS))
            .expect("a caps stream feature");
        assert_eq!(c.attr("hash"), Some("sha-1"));
        assert_eq!(c.attr("node"), Some(NODE));
        let mut disco: Vec<&str> = r.disco_features(&Target::Server).to_vec();
        disco.reverse();
        assert_eq!(
            c.attr("ver"),
            Some(ver(&[("server", "im", "", "hearth")], &disco).as_str())
        );
    }

    #[test]
    fn the_node_is_answered_with_the_server_disco() {
        use crate::router::im::tests::{DOMAIN, World};
        let w = World::new(&["alice"]);
        let a = w.bind("alice", "phone");
        let ver = server_ver(&Registry::standard());
        let ask = |node: &str| {
            w.send(
                &a,
                &format!(
                    "<iq type='get' id='n' to='{DOMAIN}'>\
                     <query xmlns='http://jabber.org/protocol/disco#info' node='{node}'/></iq>"
                ),
            )
            .0
        };
        let out = ask(&format!("{NODE}#{ver}"));
        assert!(out.contains("type='result'"), "{out}");
        assert!(out.contains(&format!("node='{NODE}#{ver}'")), "{out}");
        assert!(
            out.contains("category='server'") && out.contains("disco#items"),
            "{out}"
        );
        // An old or made-up verification string is no node of ours.
        let out = ask(&format!("{NODE}#AAAA"));
        assert!(out.contains("item-not-found"), "{out}");
    }
}
