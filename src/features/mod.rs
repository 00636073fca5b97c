//! Payloads the server handles itself, one module per RFC part or XEP.
//!
//! Each module implements [`Feature`]: the disco features it announces and
//! the iq payloads it answers. Adding a XEP means adding a file here and a
//! line in [`Features::standard`]; the router asks the registry, and an iq
//! nobody answers gets `service-unavailable` (RFC 6120 §8.4).

pub mod blocking;
pub mod disco;
pub mod last;
pub mod offline;
pub mod ping;
pub mod presence;
pub mod roster;
pub mod subscription;
pub mod time;
pub mod version;

use crate::jid::{BareJid, FullJid};
use crate::stanza::{Stanza, StanzaError};
use crate::xml::Element;

/// Whom an iq is addressed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The server's domain itself.
    Server,
    /// An account's bare JID; the server answers on its behalf (RFC 6121 §8.5.2.1.3).
    Account(BareJid),
}

/// What a handler needs to know about the request besides the payload.
pub struct Ctx<'a> {
    pub domain: &'a str,
    pub from: &'a FullJid,
    pub target: &'a Target,
    /// Every disco feature the registry announces (for disco#info).
    pub disco_features: &'a [&'static str],
}

/// An iq answer: a result with an optional payload, or an error.
pub type IqOutcome = Result<Option<Element>, StanzaError>;

/// A server feature.
pub trait Feature: Send + Sync {
    /// Disco features (XEP-0030 `<feature var=…/>`) this module adds to the
    /// server's disco#info.
    fn disco_features(&self) -> &'static [&'static str] {
        &[]
    }

    /// Answers an iq get/set whose only child is `payload`; `None` when the
    /// payload is not this module's.
    fn handle_iq(&self, ctx: &Ctx, iq: &Stanza, payload: &Element) -> Option<IqOutcome>;
}

/// The registered features, asked in order.
pub struct Features {
    list: Vec<Box<dyn Feature>>,
    disco: Vec<&'static str>,
}

impl Features {
    pub fn new(list: Vec<Box<dyn Feature>>) -> Features {
        let mut disco: Vec<&'static str> = list
            .iter()
            .flat_map(|f| f.disco_features())
            .copied()
            .collect();
        disco.sort_unstable();
        disco.dedup();
        Features { list, disco }
    }

    /// Everything hearth handles today.
    pub fn standard() -> Features {
        Features::new(vec![
            Box::new(disco::Disco),
            Box::new(ping::Ping),
            Box::new(version::Version),
            Box::new(time::Time),
            Box::new(blocking::Blocking),
            Box::new(offline::Offline),
        ])
    }

    pub fn handle_iq(
        &self,
        domain: &str,
        from: &FullJid,
        target: &Target,
        iq: &Stanza,
    ) -> Option<IqOutcome> {
        let payload = iq.iq_payload()?;
        let ctx = Ctx {
            domain,
            from,
            target,
            disco_features: &self.disco,
        };
        self.list
            .iter()
            .find_map(|f| f.handle_iq(&ctx, iq, payload))
    }
}
