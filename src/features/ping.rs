//! XEP-0199: XMPP Ping — the server answers pings to itself and, on their behalf, to
//! accounts' bare JIDs (§4.3 client-to-server ping). Pinging silent clients (§4.2) is the
//! connection's job (`net::liveness`).

use super::{Announce, Doc, IqCx, IqFuture, IqRoute, Module, On, Spec, Status, ready};
use crate::ns;
use crate::stanza::{IqType, Stanza, StanzaCondition, StanzaError};

pub struct Ping;

impl Module for Ping {
    fn name(&self) -> &'static str {
        "ping"
    }

    fn specs(&self) -> &'static [Spec] {
        &[Spec {
            doc: Doc::Xep(199),
            title: "XMPP Ping",
            version: "2.0.1",
            status: Status::Complete,
            note: "answered for the server and for accounts; silent clients are pinged",
        }]
    }

    fn disco(&self) -> &'static [Announce] {
        &[Announce {
            var: ns::PING,
            on: On::Both,
        }]
    }

    fn iqs(&self) -> &'static [IqRoute] {
        &[IqRoute {
            ns: ns::PING,
            on: On::Both,
            access: super::Access::Anyone,
        }]
    }

    fn handle_iq<'a>(&'a self, _cx: &'a IqCx<'a>, iq: &'a Stanza) -> IqFuture<'a> {
        let is_ping = iq.iq_payload().is_some_and(|p| p.is("ping", ns::PING));
        ready(if is_ping && iq.iq_type() == Some(IqType::Get) {
            // §4.3: an empty result is the pong.
            Ok(None)
        } else {
            Err(StanzaError::new(StanzaCondition::ServiceUnavailable))
        })
    }
}
