//! The c2s negotiation state machine (RFC 6120 §4–§7) driven by arbitrary
//! sequences of inputs, in orders no real connection produces: framer
//! events built from a small vocabulary of negotiation elements, TLS
//! completions, storage answers and bind results. It must never panic and
//! never route a stanza before a resource is bound.
#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use hearth::jid::FullJid;
use hearth::ns;
use hearth::stanza::{StanzaCondition, StanzaError};
use hearth::stream::c2s::{Action, C2s, C2sPolicy, Input};
use hearth::stream::sasl::{ChannelBindings, Mechanism, ScramCredentials, ScramHash};
use hearth::xml::{Element, Event, StreamHeader};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Name {
    Starttls,
    Auth,
    Response,
    Abort,
    Iq,
    Message,
    Presence,
    Bind,
    Resource,
    Session,
    Error,
    Other,
    /// XEP-0077 `<query xmlns='jabber:iq:register'/>`, `<username/>`, `<password/>`,
    /// `<remove/>`, and XEP-0401 `<preauth/>`.
    Register,
    Username,
    Password,
    Remove,
    Preauth,
    /// XEP-0198 `<enable/>`, `<resume/>`, `<r/>`, `<a/>`.
    SmEnable,
    SmResume,
    SmR,
    SmA,
}

#[derive(Arbitrary, Debug)]
struct El {
    name: Name,
    attrs: Vec<(u8, String)>,
    text: String,
    children: Vec<(Name, String)>,
}

#[derive(Arbitrary, Debug)]
enum In {
    Open {
        to: Option<String>,
        version: Option<String>,
        client_ns: bool,
    },
    Element(El),
    Close,
    TlsEstablished(bool),
    Scram(bool),
    Plain(bool),
    Bound(Option<String>),
    /// The driver's answer to a registration (XEP-0077).
    Registered(bool),
    /// The driver's answers to XEP-0198 `<enable/>` and `<resume/>`.
    SmEnabled(Option<String>, Option<u32>),
    SmResumed(Option<(String, u32)>),
    Fail,
    Shutdown,
}

fn name(n: &Name) -> (&'static str, &'static str) {
    match n {
        Name::Starttls => ("starttls", ns::TLS),
        Name::Auth => ("auth", ns::SASL),
        Name::Response => ("response", ns::SASL),
        Name::Abort => ("abort", ns::SASL),
        Name::Iq => ("iq", ns::CLIENT),
        Name::Message => ("message", ns::CLIENT),
        Name::Presence => ("presence", ns::CLIENT),
        Name::Bind => ("bind", ns::BIND),
        Name::Resource => ("resource", ns::BIND),
        Name::Session => ("session", ns::SESSION),
        Name::Error => ("error", ns::STREAM),
        Name::Other => ("x", "urn:example"),
        Name::Register => ("query", "jabber:iq:register"),
        Name::Username => ("username", "jabber:iq:register"),
        Name::Password => ("password", "jabber:iq:register"),
        Name::Remove => ("remove", "jabber:iq:register"),
        Name::Preauth => ("preauth", "urn:xmpp:pars:0"),
        Name::SmEnable => ("enable", "urn:xmpp:sm:3"),
        Name::SmResume => ("resume", "urn:xmpp:sm:3"),
        Name::SmR => ("r", "urn:xmpp:sm:3"),
        Name::SmA => ("a", "urn:xmpp:sm:3"),
    }
}

const ATTRS: [&str; 11] = [
    "mechanism", "type", "id", "to", "from", "xml:lang", "token", "h", "previd", "resume", "max",
];

fn element(e: &El) -> Element {
    let (n, namespace) = name(&e.name);
    let mut el = Element::new(n, namespace);
    for (k, v) in e.attrs.iter().take(4) {
        el.set_attr(ATTRS[usize::from(*k) % ATTRS.len()], v.as_str());
    }
    el.push_text(e.text.as_str());
    for (c, text) in e.children.iter().take(4) {
        let (n, namespace) = name(c);
        let child = Element::new(n, namespace).with_text(text.as_str());
        // A <bind/> with a <resource/> inside, as clients send it.
        let child = match c {
            Name::Bind => {
                child.with_child(Element::new("resource", ns::BIND).with_text(text.as_str()))
            }
            // A registration with its fields inside, as clients send it.
            Name::Register => child
                .with_child(Element::new("username", "jabber:iq:register").with_text(text.as_str()))
                .with_child(Element::new("password", "jabber:iq:register").with_text("pw")),
            _ => child,
        };
        el.push_child(child);
    }
    el
}

fuzz_target!(|inputs: Vec<In>| {
    let policy = Arc::new(C2sPolicy {
        domain: Arc::from("home.local"),
        mechanisms: Mechanism::ALL.to_vec(),
        max_auth_failures: 3,
        strict_channel_binding: false,
        module_features: hearth::features::Registry::standard().stream_features(),
        registration: hearth::config::RegistrationPolicy::Open,
        stream_management: true,
    });
    let mut c2s = C2s::new(policy, None);
    let mut bound = false;
    for input in inputs.into_iter().take(64) {
        let actions = match input {
            In::Open {
                to,
                version,
                client_ns,
            } => {
                let mut attrs = Vec::new();
                if let Some(to) = to {
                    attrs.push(("to".to_owned(), to));
                }
                if let Some(v) = version {
                    attrs.push(("version".to_owned(), v));
                }
                let default_ns = if client_ns { ns::CLIENT } else { ns::SERVER };
                c2s.handle(Input::Xml(Event::Open(StreamHeader {
                    attrs,
                    default_ns: default_ns.to_owned(),
                })))
            }
            In::Element(e) => c2s.handle(Input::Xml(Event::Stanza(element(&e)))),
            In::Close => c2s.handle(Input::Xml(Event::Close)),
            In::TlsEstablished(exporter) => c2s.handle(Input::TlsEstablished(ChannelBindings {
                tls_exporter: exporter.then(|| vec![7; 32]),
                tls_server_end_point: Some(vec![9; 32]),
            })),
            In::Scram(known) => c2s.handle(Input::ScramCredentials(known.then(|| {
                ScramCredentials::derive(ScramHash::Sha256, "pencil", b"salt", 1).unwrap()
            }))),
            In::Plain(ok) => c2s.handle(Input::PlainVerified(ok)),
            In::Bound(resource) => {
                let result = match resource
                    .as_deref()
                    .map(|r| FullJid::new(Some("ann"), "home.local", r))
                {
                    Some(Ok(jid)) => Ok(jid),
                    _ => Err(StanzaError::new(StanzaCondition::Conflict)),
                };
                c2s.handle(Input::Bound(result))
            }
            In::Registered(ok) => c2s.handle(Input::Registered(if ok {
                Ok(())
            } else {
                Err(StanzaError::new(StanzaCondition::Conflict))
            })),
            In::SmEnabled(id, max) => c2s.handle(Input::SmEnabled { id, max }),
            In::SmResumed(r) => c2s.handle(Input::SmResumed(match r {
                Some((res, handled)) => match FullJid::new(Some("ann"), "home.local", &res) {
                    Ok(jid) => Ok(hearth::stream::c2s::Resumed {
                        jid,
                        previd: "x".into(),
                        handled,
                    }),
                    Err(_) => Err(hearth::stream::c2s::ResumeFailed {
                        condition: "item-not-found",
                        h: None,
                    }),
                },
                None => Err(hearth::stream::c2s::ResumeFailed {
                    condition: "item-not-found",
                    h: Some(0),
                }),
            })),
            In::Fail => {
                let mut out = Vec::new();
                c2s.fail(
                    hearth::stanza::StreamError::new(
                        hearth::stanza::StreamCondition::PolicyViolation,
                    ),
                    &mut out,
                );
                out
            }
            In::Shutdown => c2s.shutdown(),
        };
        for a in &actions {
            match a {
                Action::Route(_) => {
                    assert!(c2s.is_established(), "routed before binding");
                    assert!(c2s.user().is_some(), "routed before authentication");
                }
                Action::Bind { .. } => assert!(c2s.user().is_some(), "bind before authentication"),
                Action::Authenticated { .. } => assert!(c2s.is_tls(), "authenticated without TLS"),
                Action::SmResume { .. } => {
                    assert!(c2s.user().is_some(), "resumption before authentication")
                }
                Action::SmEnable(_) | Action::SmAck(_) => {
                    assert!(c2s.is_established(), "stream management before binding")
                }
                Action::Register { .. } => {
                    assert!(c2s.is_tls(), "registration without TLS");
                    assert!(c2s.user().is_none(), "registration after login");
                }
                _ => {}
            }
        }
        bound |= c2s.is_established();
    }
    let _ = bound;
});
