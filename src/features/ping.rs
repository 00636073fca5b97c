//! XEP-0199: XMPP Ping — the server answers pings to itself and, on their
//! behalf, to accounts' bare JIDs (§4.3 client-to-server ping).

use super::{Ctx, Feature, IqOutcome};
use crate::ns;
use crate::stanza::{IqType, Stanza};
use crate::xml::Element;

pub struct Ping;

impl Feature for Ping {
    fn disco_features(&self) -> &'static [&'static str] {
        &[ns::PING]
    }

    fn handle_iq(&self, _ctx: &Ctx, iq: &Stanza, payload: &Element) -> Option<IqOutcome> {
        if !payload.is("ping", ns::PING) || iq.iq_type() != Some(IqType::Get) {
            return None;
        }
        // §4.3: an empty result is the pong.
        Some(Ok(None))
    }
}
