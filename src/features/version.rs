//! XEP-0092: Software Version of the server. The operating system is left out on purpose
//! (§5 recommends care with it: it helps attackers).

use super::{Access, Announce, Doc, IqCx, IqFuture, IqRoute, Module, On, Spec, Status, ready};
use crate::ns;
use crate::stanza::{IqType, Stanza, StanzaCondition, StanzaError};
use crate::xml::Element;

pub struct Version;

impl Module for Version {
    fn name(&self) -> &'static str {
        "version"
    }

    fn specs(&self) -> &'static [Spec] {
        &[Spec {
            doc: Doc::Xep(92),
            title: "Software Version",
            version: "1.1",
            status: Status::Complete,
            note: "name and version; the operating system is not told (§5)",
        }]
    }

    fn disco(&self) -> &'static [Announce] {
        &[Announce {
            var: ns::VERSION,
            on: On::Server,
        }]
    }

    /// The server's own; an account's software is its client's to tell.
    fn iqs(&self) -> &'static [IqRoute] {
        &[IqRoute {
            ns: ns::VERSION,
            on: On::Server,
            access: Access::Anyone,
        }]
    }

    fn handle_iq<'a>(&'a self, _cx: &'a IqCx<'a>, iq: &'a Stanza) -> IqFuture<'a> {
        let is_query = iq.iq_payload().is_some_and(|p| p.is("query", ns::VERSION));
        if !is_query || iq.iq_type() != Some(IqType::Get) {
            return ready(Err(StanzaError::new(StanzaCondition::ServiceUnavailable)));
        }
        ready(Ok(Some(
            Element::new("query", ns::VERSION)
                .with_child(Element::new("name", ns::VERSION).with_text("hearth"))
                .with_child(
                    Element::new("version", ns::VERSION).with_text(env!("CARGO_PKG_VERSION")),
                ),
        )))
    }
}
