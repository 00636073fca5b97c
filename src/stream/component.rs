//! XEP-0114: Jabber Component Protocol, the accepting side, as a sans-IO state machine.
//!
//! A bridge or a bot runs beside hearth and connects to the component port with a
//! shared secret; it then owns a domain of its own (`bot.example.org`) and exchanges
//! stanzas with the server's users as any other address would:
//!
//! header (`jabber:component:accept`, `to` = its domain) → our header with a stream id →
//! `<handshake>` hex(SHA-1(id ‖ secret)) → `<handshake/>` → stanzas both ways.
//!
//! Its stanzas must come from its domain (`<invalid-from/>` otherwise) and carry a `to`.

use std::sync::Arc;

use sha1::{Digest, Sha1};

use crate::jid::Jid;
use crate::ns;
use crate::stanza::{Kind, Stanza, StreamCondition, StreamError};
use crate::stream::negotiation::{Incoming, Negotiation, Wire};
use crate::xml::{Element, Event};

/// XEP-0114 §3: the content namespace of a component stream.
pub const ACCEPT: &str = "jabber:component:accept";

/// The components this server accepts: their domains and secrets.
pub struct ComponentPolicy {
    /// Domain → shared secret.
    pub secrets: Vec<(Arc<str>, String)>,
    /// The domains, for the stream header's `to`.
    pub domains: Arc<[Arc<str>]>,
}

impl std::fmt::Debug for ComponentPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets.
        f.debug_struct("ComponentPolicy")
            .field("domains", &self.domains)
            .finish_non_exhaustive()
    }
}

impl ComponentPolicy {
    pub fn new(secrets: Vec<(String, String)>) -> ComponentPolicy {
        let secrets: Vec<(Arc<str>, String)> =
            secrets.into_iter().map(|(d, s)| (d.into(), s)).collect();
        let domains = secrets.iter().map(|(d, _)| d.clone()).collect();
        ComponentPolicy { secrets, domains }
    }

    fn secret(&self, domain: &str) -> Option<&str> {
        self.secrets
            .iter()
            .find(|(d, _)| **d == *domain)
            .map(|(_, s)| s.as_str())
    }
}

/// What happened, for a component stream.
#[derive(Debug)]
pub enum Input {
    Xml(Event),
}

impl From<Event> for Input {
    fn from(ev: Event) -> Input {
        Input::Xml(ev)
    }
}

/// What a component stream asks the connection loop for.
#[derive(Debug)]
pub enum Action {
    Send(String),
    ResetFramer,
    /// The component proved its secret for this domain.
    Authenticated(Arc<str>),
    /// A stanza from the component, in `jabber:client` form.
    Route(Stanza),
    Close,
}

impl From<Wire> for Action {
    fn from(w: Wire) -> Action {
        match w {
            Wire::Send(s) => Action::Send(s),
            Wire::ResetFramer => Action::ResetFramer,
            Wire::Close => Action::Close,
        }
    }
}

/// One component's stream.
#[derive(Debug)]
pub struct Component {
    policy: Arc<ComponentPolicy>,
    stream: Negotiation,
    /// The domain it named in its header.
    domain: Option<Arc<str>>,
    is_authenticated: bool,
}

impl Component {
    pub fn new(policy: Arc<ComponentPolicy>) -> Component {
        let first = policy.domains.first().cloned().unwrap_or_else(|| "".into());
        Component {
            stream: Negotiation::receiving(ACCEPT, first)
                .serving_any(policy.domains.clone())
                .versionless(),
            policy,
            domain: None,
            is_authenticated: false,
        }
    }

    /// The domain it authenticated for.
    pub fn domain(&self) -> Option<&Arc<str>> {
        self.domain.as_ref().filter(|_| self.is_authenticated)
    }

    pub fn handle(&mut self, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        let Input::Xml(ev) = input;
        match self.stream.on_event(ev, &mut out) {
            Incoming::Opened(_) => self.domain = Some(self.stream.local().clone()),
            Incoming::Element(el) => self.on_element(el, &mut out),
            Incoming::Handled => {}
        }
        out
    }

    fn on_element(&mut self, el: Element, out: &mut Vec<Action>) {
        if self.stream.is_closing() {
            return;
        }
        if !self.is_authenticated {
            if !el.is("handshake", ACCEPT) {
                return self.fail(StreamError::new(StreamCondition::NotAuthorized), out);
            }
            return self.on_handshake(&el, out);
        }
        self.on_stanza(el, out)
    }

    /// XEP-0114 §3: the handshake proves the secret without sending it.
    fn on_handshake(&mut self, el: &Element, out: &mut Vec<Action>) {
        let (Some(domain), Some(id)) = (self.domain.clone(), self.stream.stream_id()) else {
            return self.fail(StreamError::new(StreamCondition::NotAuthorized), out);
        };
        let Some(secret) = self.policy.secret(&domain) else {
            return self.fail(StreamError::new(StreamCondition::NotAuthorized), out);
        };
        let expected = handshake_digest(id, secret);
        let given = el.text().trim().to_ascii_lowercase();
        use subtle::ConstantTimeEq as _;
        let ok = expected.len() == given.len()
            && bool::from(expected.as_bytes().ct_eq(given.as_bytes()));
        if !ok {
            return self.fail(
                StreamError::new(StreamCondition::NotAuthorized).with_text("wrong handshake"),
                out,
            );
        }
        self.is_authenticated = true;
        out.push(Action::Send("<handshake/>".into()));
        out.push(Action::Authenticated(domain));
    }

    fn on_stanza(&mut self, mut el: Element, out: &mut Vec<Action>) {
        let kind = match (el.name(), el.ns()) {
            ("message", ACCEPT) => Kind::Message,
            ("presence", ACCEPT) => Kind::Presence,
            ("iq", ACCEPT) => Kind::Iq,
            _ => {
                return self.fail(
                    StreamError::new(StreamCondition::UnsupportedStanzaType),
                    out,
                );
            }
        };
        let Some(domain) = self.domain.clone() else {
            return;
        };
        let from = match el.attr("from").map(Jid::parse) {
            // A component speaks for its own domain only.
            Some(Ok(j)) if j.domain() == &*domain => j,
            Some(_) => {
                return self.fail(
                    StreamError::new(StreamCondition::InvalidFrom)
                        .with_text(format!("'from' must be at {domain}")),
                    out,
                );
            }
            None => {
                return self.fail(
                    StreamError::new(StreamCondition::ImproperAddressing)
                        .with_text("a component's stanza needs 'from'"),
                    out,
                );
            }
        };
        let to = match el.attr("to").map(Jid::parse) {
            Some(Ok(j)) => j,
            _ => {
                return self.fail(
                    StreamError::new(StreamCondition::ImproperAddressing)
                        .with_text("a component's stanza needs a valid 'to'"),
                    out,
                );
            }
        };
        el.rename_ns(ACCEPT, ns::CLIENT);
        el.set_attr("from", from.as_str());
        el.set_attr("to", to.as_str());
        out.push(Action::Route(Stanza {
            kind,
            el,
            to: Some(to),
        }));
    }

    pub fn fail(&mut self, err: StreamError, out: &mut Vec<Action>) {
        self.stream.fail(err, out);
    }

    pub fn shutdown(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        self.stream.shutdown(&mut out);
        out
    }

    pub fn is_closed(&self) -> bool {
        self.stream.is_closed()
    }
}

/// hex(SHA-1(stream id ‖ secret)), lowercase (XEP-0114 §3).
pub fn handshake_digest(id: &str, secret: &str) -> String {
    let mut h = Sha1::new();
    h.update(id.as_bytes());
    h.update(secret.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl crate::stream::Machine for Component {
    type Input = Input;
    type Action = Action;

    fn handle(&mut self, input: Input) -> Vec<Action> {
        Component::handle(self, input)
    }

    fn fail(&mut self, err: StreamError, out: &mut Vec<Action>) {
        Component::fail(self, err, out)
    }

    fn shutdown(&mut self) -> Vec<Action> {
        Component::shutdown(self)
    }

    fn is_closed(&self) -> bool {
        Component::is_closed(self)
    }

    fn wire(action: Action) -> Result<Wire, Action> {
        match action {
            Action::Send(s) => Ok(Wire::Send(s)),
            Action::ResetFramer => Ok(Wire::ResetFramer),
            Action::Close => Ok(Wire::Close),
            other => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{Framer, Limits};

    struct T {
        m: Component,
        framer: Framer,
    }

    impl T {
        fn new() -> T {
            let policy = ComponentPolicy::new(vec![("bot.home.example".into(), "s3cret".into())]);
            T {
                m: Component::new(Arc::new(policy)),
                framer: Framer::new(Limits::default()),
            }
        }

        fn send(&mut self, xml: &str) -> Vec<Action> {
            self.framer.feed(xml.as_bytes()).unwrap();
            let mut all = Vec::new();
            while let Ok(Some(ev)) = self.framer.next_event() {
                all.extend(self.m.handle(Input::Xml(ev)));
            }
            all
        }
    }

    fn sent(a: &[Action]) -> String {
        a.iter()
            .filter_map(|a| match a {
                Action::Send(s) => Some(s.as_str()),
                _ => None,
            })
            .collect()
    }

    const HEADER: &str = "<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='bot.home.example'>";

    fn id_of(xml: &str) -> String {
        let start = xml.find(" id='").unwrap() + 5;
        xml[start..].split('\'').next().unwrap().to_owned()
    }

    fn logged_in() -> T {
        let mut t = T::new();
        let id = id_of(&sent(&t.send(HEADER)));
        let a = t.send(&format!(
            "<handshake>{}</handshake>",
            handshake_digest(&id, "s3cret").to_uppercase()
        ));
        assert_eq!(sent(&a), "<handshake/>");
        assert!(matches!(&a[1], Action::Authenticated(d) if &**d == "bot.home.example"));
        t
    }

    #[test]
    fn the_handshake_digest_is_sha1_of_id_and_secret_in_hex() {
        // Computed independently (Python's hashlib) for the XEP's example id.
        assert_eq!(
            handshake_digest("3BF96D32", "sesame"),
            "7a98dc4c9e92493d7fd66a25364c862637789c45"
        );
    }

    #[test]
    fn header_answer_has_an_id_and_no_version() {
        let mut t = T::new();
        let a = sent(&t.send(HEADER));
        assert!(a.contains("from='bot.home.example'"), "{a}");
        assert!(!a.contains("' version="), "{a}");
        assert!(!a.contains("<stream:features"), "{a}");
    }

    #[test]
    fn an_unknown_domain_is_host_unknown() {
        let mut t = T::new();
        let a = sent(&t.send("<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='other.example'>"));
        assert!(a.contains("host-unknown"), "{a}");
    }

    #[test]
    fn a_wrong_handshake_is_not_authorized() {
        let mut t = T::new();
        t.send(HEADER);
        let a = sent(&t.send("<handshake>0000</handshake>"));
        assert!(a.contains("<not-authorized"), "{a}");
        assert!(t.m.is_closed());
    }

    #[test]
    fn stanzas_before_the_handshake_are_not_authorized() {
        let mut t = T::new();
        t.send(HEADER);
        let a = sent(&t.send("<message from='bot.home.example' to='alice@home.example'/>"));
        assert!(a.contains("<not-authorized"), "{a}");
    }

    #[test]
    fn stanzas_from_its_domain_are_routed_as_client_stanzas() {
        let mut t = logged_in();
        let a = t.send("<message from='echo@bot.home.example/x' to='alice@home.example'><body>hi</body></message>");
        let [Action::Route(s)] = &a[..] else {
            panic!("{a:?}")
        };
        assert_eq!(s.el.ns(), ns::CLIENT);
        assert!(s.el.get_child("body", ns::CLIENT).is_some());
    }

    #[test]
    fn a_spoofed_from_is_invalid_from() {
        let mut t = logged_in();
        let a = sent(&t.send("<message from='alice@home.example' to='bob@home.example'/>"));
        assert!(a.contains("<invalid-from"), "{a}");
        assert!(t.m.is_closed());
    }
}
