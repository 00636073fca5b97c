//! XEP-0092: Software Version of the server. The operating system is left
//! out on purpose (§5 recommends care with it: it helps attackers).

use super::{Ctx, Feature, IqOutcome, Target};
use crate::ns;
use crate::stanza::{IqType, Stanza};
use crate::xml::Element;

pub struct Version;

impl Feature for Version {
    fn disco_features(&self) -> &'static [&'static str] {
        &[ns::VERSION]
    }

    fn handle_iq(&self, ctx: &Ctx, iq: &Stanza, payload: &Element) -> Option<IqOutcome> {
        if !payload.is("query", ns::VERSION) || iq.iq_type() != Some(IqType::Get) {
            return None;
        }
        if *ctx.target != Target::Server {
            // An account's software is its client's to tell, not ours.
            return None;
        }
        Some(Ok(Some(
            Element::new("query", ns::VERSION)
                .with_child(Element::new("name", ns::VERSION).with_text("hearth"))
                .with_child(
                    Element::new("version", ns::VERSION).with_text(env!("CARGO_PKG_VERSION")),
                ),
        )))
    }
}
