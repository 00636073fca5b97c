//! Stanzas (RFC 6120 §8): the three kinds, their types, and validation of
//! what a client sends before the router sees it.

pub mod error;

pub use error::{ErrorType, StanzaCondition, StanzaError, StreamCondition, StreamError};

use crate::jid::Jid;
use crate::ns;
use crate::xml::Element;

/// The three stanza kinds (RFC 6120 §8.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Message,
    Presence,
    Iq,
}

/// The `type` of an iq (RFC 6120 §8.2.3): a request (`get`/`set`) must be
/// answered, a response (`result`/`error`) never is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IqType {
    Get,
    Set,
    Result,
    Error,
}

impl IqType {
    pub fn is_request(self) -> bool {
        matches!(self, IqType::Get | IqType::Set)
    }
}

/// The `type` of a message (RFC 6121 §5.2.2); absent means `normal`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageType {
    Chat,
    Error,
    Groupchat,
    Headline,
    Normal,
}

impl MessageType {
    /// The type of a `<message/>` element (RFC 6121 §5.2.2: none or unknown is normal).
    pub fn of(el: &crate::xml::Element) -> MessageType {
        match el.attr("type") {
            Some("chat") => MessageType::Chat,
            Some("error") => MessageType::Error,
            Some("groupchat") => MessageType::Groupchat,
            Some("headline") => MessageType::Headline,
            _ => MessageType::Normal,
        }
    }
}

/// A stanza as the router handles it: the element (with `from` already
/// stamped), its kind and its parsed `to`.
#[derive(Clone, Debug)]
pub struct Stanza {
    pub kind: Kind,
    pub el: Element,
    /// The parsed `to`; `None` when absent (addressed to the sender's own
    /// account, RFC 6120 §10.3).
    pub to: Option<Jid>,
}

impl Stanza {
    /// Validates a first-level element from a client stream and wraps it.
    ///
    /// Errors: a non-stanza element is a stream error
    /// (`unsupported-stanza-type`, RFC 6120 §4.9.3.23); a stanza with a bad
    /// `to` or a malformed iq gets a stanza error the caller sends back.
    pub fn from_client(el: Element) -> Result<Stanza, Rejected> {
        let kind = match (el.name(), el.ns()) {
            ("message", ns::CLIENT) => Kind::Message,
            ("presence", ns::CLIENT) => Kind::Presence,
            ("iq", ns::CLIENT) => Kind::Iq,
            _ => return Err(Rejected::Stream(StreamCondition::UnsupportedStanzaType)),
        };
        let to = match el.attr("to") {
            None => None,
            Some(s) => match Jid::parse(s) {
                Ok(j) => Some(j),
                Err(e) => {
                    let err = StanzaError::new(StanzaCondition::JidMalformed)
                        .with_text(format!("the 'to' address is not valid: {e}"));
                    return Err(Rejected::Stanza(err, Box::new(el)));
                }
            },
        };
        let stanza = Stanza { kind, el, to };
        if kind == Kind::Iq {
            // RFC 6120 §8.2.3: an iq must carry an id and a known type, and
            // a get/set exactly one child element.
            let bad = |s: Stanza, why: &str| {
                Err(Rejected::Stanza(
                    StanzaError::new(StanzaCondition::BadRequest).with_text(why),
                    Box::new(s.el),
                ))
            };
            if stanza.el.attr("id").is_none() {
                return bad(stanza, "an iq needs an id");
            }
            match stanza.iq_type() {
                None => return bad(stanza, "an iq needs a type of get, set, result or error"),
                Some(t) if t.is_request() && stanza.el.children().count() != 1 => {
                    return bad(stanza, "a get or set iq carries exactly one child element");
                }
                _ => {}
            }
        }
        Ok(stanza)
    }

    pub fn iq_type(&self) -> Option<IqType> {
        match self.el.attr("type") {
            Some("get") => Some(IqType::Get),
            Some("set") => Some(IqType::Set),
            Some("result") => Some(IqType::Result),
            Some("error") => Some(IqType::Error),
            _ => None,
        }
    }

    pub fn message_type(&self) -> MessageType {
        MessageType::of(&self.el)
    }

    /// The payload of an iq get/set: its only child.
    pub fn iq_payload(&self) -> Option<&Element> {
        self.el.children().next()
    }

    /// An iq result answering this request, from `from`, with an optional payload.
    pub fn iq_result(&self, payload: Option<Element>) -> Element {
        let mut r = Element::new("iq", ns::CLIENT).with_attr("type", "result");
        if let Some(id) = self.el.attr("id") {
            r.set_attr("id", id);
        }
        if let Some(to) = self.el.attr("to") {
            r.set_attr("from", to);
        }
        if let Some(from) = self.el.attr("from") {
            r.set_attr("to", from);
        }
        if let Some(p) = payload {
            r.push_child(p);
        }
        r
    }

    /// The error reply to this stanza, if one may be sent (never to an
    /// error, never to an iq result).
    pub fn error_reply(&self, err: impl Into<StanzaError>) -> Option<Element> {
        err.into().reply_to(&self.el)
    }
}

/// Why a client's first-level element was not accepted.
#[derive(Debug)]
pub enum Rejected {
    /// Close the stream with this condition.
    Stream(StreamCondition),
    /// Bounce this error to the sender; the element it answers comes along.
    Stanza(StanzaError, Box<Element>),
}
