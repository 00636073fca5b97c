//! Stanza errors (RFC 6120 §8.3) and stream errors (RFC 6120 §4.9).

use crate::ns;
use crate::xml::{Element, XmlError};
use std::fmt;

/// The `type` attribute of a stanza error (RFC 6120 §8.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    Auth,
    Cancel,
    Continue,
    Modify,
    Wait,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Auth => "auth",
            ErrorType::Cancel => "cancel",
            ErrorType::Continue => "continue",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
        }
    }
}

/// Defined stanza error conditions (RFC 6120 §8.3.3), each with the error
/// type the RFC's examples give it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StanzaCondition {
    /// §8.3.3.1: the sender sent XML that is malformed or cannot be processed.
    BadRequest,
    /// §8.3.3.2: access cannot be granted because of an existing resource or session.
    Conflict,
    /// §8.3.3.3: the feature is not implemented by the recipient.
    FeatureNotImplemented,
    /// §8.3.3.4: the requesting entity lacks the permission.
    Forbidden,
    /// §8.3.3.6: the server has experienced a misconfiguration or other internal error.
    InternalServerError,
    /// §8.3.3.7: the addressed JID or item cannot be found.
    ItemNotFound,
    /// §8.3.3.8: the JID does not adhere to RFC 7622.
    JidMalformed,
    /// §8.3.3.9: the recipient does not allow this action.
    NotAcceptable,
    /// §8.3.3.10: nobody is allowed to perform the action.
    NotAllowed,
    /// §8.3.3.11: the sender must authenticate first.
    NotAuthorized,
    /// §8.3.3.12: the entity has violated a local policy (e.g. a size limit).
    PolicyViolation,
    /// §8.3.3.13: the intended recipient is temporarily unavailable.
    RecipientUnavailable,
    /// §8.3.3.15: a remote server does not exist or cannot be resolved.
    RemoteServerNotFound,
    /// §8.3.3.16: a remote server could not be reached in time.
    RemoteServerTimeout,
    /// §8.3.3.17: the server or recipient is busy or lacks the resources.
    ResourceConstraint,
    /// §8.3.3.18: the server or recipient does not provide the service.
    ServiceUnavailable,
    /// §8.3.3.19: a subscription is required.
    SubscriptionRequired,
    /// §8.3.3.20: a condition not covered by the others.
    UndefinedCondition,
    /// §8.3.3.21: the request was not expected at this point.
    UnexpectedRequest,
    /// §8.3.3.15: registration is required first (XEP-0045 §7.2.6: a members-only room).
    RegistrationRequired,
}

impl StanzaCondition {
    pub fn name(self) -> &'static str {
        use StanzaCondition::*;
        match self {
            BadRequest => "bad-request",
            Conflict => "conflict",
            FeatureNotImplemented => "feature-not-implemented",
            Forbidden => "forbidden",
            InternalServerError => "internal-server-error",
            ItemNotFound => "item-not-found",
            JidMalformed => "jid-malformed",
            NotAcceptable => "not-acceptable",
            NotAllowed => "not-allowed",
            NotAuthorized => "not-authorized",
            PolicyViolation => "policy-violation",
            RecipientUnavailable => "recipient-unavailable",
            RemoteServerNotFound => "remote-server-not-found",
            RemoteServerTimeout => "remote-server-timeout",
            ResourceConstraint => "resource-constraint",
            ServiceUnavailable => "service-unavailable",
            SubscriptionRequired => "subscription-required",
            UndefinedCondition => "undefined-condition",
            UnexpectedRequest => "unexpected-request",
            RegistrationRequired => "registration-required",
        }
    }

    /// The error type RFC 6120 §8.3.3 pairs with the condition.
    pub fn default_type(self) -> ErrorType {
        use StanzaCondition::*;
        match self {
            BadRequest | JidMalformed | NotAcceptable | PolicyViolation => ErrorType::Modify,
            Forbidden | NotAuthorized | SubscriptionRequired | RegistrationRequired => {
                ErrorType::Auth
            }
            InternalServerError | RecipientUnavailable | RemoteServerTimeout
            | ResourceConstraint | UnexpectedRequest => ErrorType::Wait,
            _ => ErrorType::Cancel,
        }
    }
}

/// A stanza error to send back to the sender of a stanza.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StanzaError {
    pub condition: StanzaCondition,
    pub kind: ErrorType,
    /// Human-readable text for the `<text/>` child; never shown to machines.
    pub text: Option<String>,
    /// An application-specific condition (RFC 6120 §8.3.2), as (element name,
    /// namespace), e.g. XEP-0050's `<bad-sessionid/>`.
    pub app: Option<(&'static str, &'static str)>,
}

impl StanzaError {
    pub fn new(condition: StanzaCondition) -> Self {
        StanzaError {
            condition,
            kind: condition.default_type(),
            text: None,
            app: None,
        }
    }

    /// With an application-specific condition element (RFC 6120 §8.3.2).
    pub fn with_app(mut self, name: &'static str, ns: &'static str) -> Self {
        self.app = Some((name, ns));
        self
    }

    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// The `<error/>` child element (RFC 6120 §8.3.2).
    pub fn to_element(&self) -> Element {
        let mut e = Element::new("error", ns::CLIENT)
            .with_attr("type", self.kind.as_str())
            .with_child(Element::new(self.condition.name(), ns::STANZA_ERRORS));
        if let Some(t) = &self.text {
            e.push_child(
                Element::new("text", ns::STANZA_ERRORS)
                    .with_attr("xml:lang", "en")
                    .with_text(t.clone()),
            );
        }
        if let Some((name, ns)) = self.app {
            e.push_child(Element::new(name, ns));
        }
        e
    }

    /// The error reply to `stanza` (RFC 6120 §8.3.1): the same kind and id,
    /// `to` and `from` swapped, `type="error"`. Returns `None` when the
    /// stanza is itself an error, which is never answered (§8.3.1 rule 3),
    /// or an iq result, which never gets an error.
    pub fn reply_to(&self, stanza: &Element) -> Option<Element> {
        let ty = stanza.attr("type");
        if ty == Some("error") || (stanza.name() == "iq" && ty == Some("result")) {
            return None;
        }
        let mut reply = Element::new(stanza.name(), ns::CLIENT).with_attr("type", "error");
        if let Some(id) = stanza.attr("id") {
            reply.set_attr("id", id);
        }
        if let Some(from) = stanza.attr("from") {
            reply.set_attr("to", from);
        }
        if let Some(to) = stanza.attr("to") {
            reply.set_attr("from", to);
        }
        reply.push_child(self.to_element());
        Some(reply)
    }
}

impl From<StanzaCondition> for StanzaError {
    fn from(c: StanzaCondition) -> Self {
        StanzaError::new(c)
    }
}

impl fmt::Display for StanzaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.condition.name(), self.kind.as_str())?;
        if let Some(t) = &self.text {
            write!(f, ": {t}")?;
        }
        Ok(())
    }
}

/// Stream error conditions (RFC 6120 §4.9.3). Every stream error closes the
/// stream (§4.9.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamCondition {
    /// §4.9.3.1: the entity sent XML that cannot be processed.
    BadFormat,
    /// §4.9.3.2: a namespace prefix is not supported.
    BadNamespacePrefix,
    /// §4.9.3.3: a new stream for this entity replaced this one.
    Conflict,
    /// §4.9.3.4: a dead peer or one that talks too slowly.
    ConnectionTimeout,
    /// §4.9.3.6: the `to` of the stream header is not served here.
    HostUnknown,
    /// §4.9.3.7: a stanza between servers lacks `to` or `from`, or they are malformed.
    ImproperAddressing,
    /// §4.9.3.8: the server has an internal problem.
    InternalServerError,
    /// §4.9.3.9: the `from` given does not match an authenticated JID.
    InvalidFrom,
    /// §4.9.3.10: the stream or content namespace is wrong.
    InvalidNamespace,
    /// §4.9.3.11: XML that violates the schema.
    InvalidXml,
    /// §4.9.3.12: data sent before authentication (or resource binding).
    NotAuthorized,
    /// §4.9.3.13: the XML is not well-formed.
    NotWellFormed,
    /// §4.9.3.14: a local policy was violated (e.g. stanza size).
    PolicyViolation,
    /// §4.9.3.16: resources are exhausted.
    ResourceConstraint,
    /// §4.9.3.17: restricted XML (comments, PIs, DTDs, entities) was sent.
    RestrictedXml,
    /// §4.9.3.19: the server is shutting down.
    SystemShutdown,
    /// §4.9.3.20: none of the others applies.
    UndefinedCondition,
    /// §4.9.3.21: the stream is encoded in something other than UTF-8.
    UnsupportedEncoding,
    /// §4.9.3.22: a mandatory-to-negotiate feature is not supported by the peer.
    UnsupportedFeature,
    /// §4.9.3.23: a first-level child that is not a stanza.
    UnsupportedStanzaType,
    /// §4.9.3.24: the stream version is not supported.
    UnsupportedVersion,
}

impl StreamCondition {
    pub fn name(self) -> &'static str {
        use StreamCondition::*;
        match self {
            BadFormat => "bad-format",
            BadNamespacePrefix => "bad-namespace-prefix",
            Conflict => "conflict",
            ConnectionTimeout => "connection-timeout",
            HostUnknown => "host-unknown",
            ImproperAddressing => "improper-addressing",
            InternalServerError => "internal-server-error",
            InvalidFrom => "invalid-from",
            InvalidNamespace => "invalid-namespace",
            InvalidXml => "invalid-xml",
            NotAuthorized => "not-authorized",
            NotWellFormed => "not-well-formed",
            PolicyViolation => "policy-violation",
            ResourceConstraint => "resource-constraint",
            RestrictedXml => "restricted-xml",
            SystemShutdown => "system-shutdown",
            UndefinedCondition => "undefined-condition",
            UnsupportedEncoding => "unsupported-encoding",
            UnsupportedFeature => "unsupported-feature",
            UnsupportedStanzaType => "unsupported-stanza-type",
            UnsupportedVersion => "unsupported-version",
        }
    }
}

/// A stream error with optional descriptive text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamError {
    pub condition: StreamCondition,
    pub text: Option<String>,
    /// An application-specific condition (RFC 6120 §4.9.4), e.g. XEP-0198's
    /// `<handled-count-too-high/>`.
    pub app: Option<Box<Element>>,
}

impl StreamError {
    pub fn new(condition: StreamCondition) -> Self {
        StreamError {
            condition,
            text: None,
            app: None,
        }
    }

    /// Adds an application-specific condition (RFC 6120 §4.9.4).
    pub fn with_app(mut self, el: Element) -> Self {
        self.app = Some(Box::new(el));
        self
    }

    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// `<stream:error>…</stream:error>` as written inside an open stream
    /// (RFC 6120 §4.9.2), without the closing `</stream:stream>`.
    pub fn to_xml(&self) -> String {
        let mut e = Element::new("error", ns::STREAM)
            .with_child(Element::new(self.condition.name(), ns::STREAM_ERRORS));
        if let Some(t) = &self.text {
            e.push_child(
                Element::new("text", ns::STREAM_ERRORS)
                    .with_attr("xml:lang", "en")
                    .with_text(t.clone()),
            );
        }
        if let Some(app) = &self.app {
            e.push_child((**app).clone());
        }
        // The stream namespace is bound to the `stream:` prefix by our
        // header, so the element is written with that prefix by hand.
        let inner = e.to_xml_in(ns::STREAM);
        let inner = inner
            .strip_prefix("<error>")
            .and_then(|s| s.strip_suffix("</error>"))
            .unwrap_or("");
        format!("<stream:error>{inner}</stream:error>")
    }
}

impl From<&XmlError> for StreamError {
    /// The stream error for what the framer refused; each framer error is
    /// already one RFC 6120 §4.9.3 condition.
    fn from(e: &XmlError) -> StreamError {
        let condition = match e {
            XmlError::BadFormat(_) => StreamCondition::BadFormat,
            XmlError::BadNamespacePrefix(_) => StreamCondition::BadNamespacePrefix,
            XmlError::InvalidNamespace(_) => StreamCondition::InvalidNamespace,
            XmlError::NotWellFormed(_) => StreamCondition::NotWellFormed,
            XmlError::PolicyViolation(_) => StreamCondition::PolicyViolation,
            XmlError::RestrictedXml(_) => StreamCondition::RestrictedXml,
            XmlError::UnsupportedEncoding(_) => StreamCondition::UnsupportedEncoding,
        };
        StreamError::new(condition).with_text(e.to_string())
    }
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.condition.name())?;
        if let Some(t) = &self.text {
            write!(f, ": {t}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_error_xml() {
        let e = StreamError::new(StreamCondition::NotWellFormed).with_text("bad <tag>");
        assert_eq!(
            e.to_xml(),
            "<stream:error><not-well-formed xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/>\
             <text xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\" xml:lang=\"en\">bad &lt;tag&gt;</text>\
             </stream:error>"
        );
        let from_framer = StreamError::from(&XmlError::RestrictedXml("a comment"));
        assert_eq!(from_framer.condition, StreamCondition::RestrictedXml);
    }

    #[test]
    fn error_reply_swaps_addresses_and_never_answers_errors() {
        let iq = Element::new("iq", ns::CLIENT)
            .with_attr("id", "1")
            .with_attr("type", "get")
            .with_attr("from", "a@x/r")
            .with_attr("to", "b@x/r");
        let reply = StanzaError::new(StanzaCondition::ServiceUnavailable)
            .reply_to(&iq)
            .unwrap();
        assert_eq!(
            reply.to_xml_in(ns::CLIENT),
            "<iq type=\"error\" id=\"1\" to=\"a@x/r\" from=\"b@x/r\"><error type=\"cancel\">\
             <service-unavailable xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/></error></iq>"
        );
        assert!(
            StanzaError::new(StanzaCondition::BadRequest)
                .reply_to(&reply)
                .is_none()
        );
        let result = Element::new("iq", ns::CLIENT).with_attr("type", "result");
        assert!(
            StanzaError::new(StanzaCondition::BadRequest)
                .reply_to(&result)
                .is_none()
        );
    }
}
