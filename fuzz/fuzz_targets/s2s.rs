//! The incoming s2s state machine (RFC 6120, XEP-0220 dialback, XEP-0178 EXTERNAL) driven
//! by arbitrary sequences of inputs, in orders no real peer produces: headers, dialback
//! and SASL elements, stanzas with arbitrary addresses, TLS completions, certificate and
//! dialback verdicts for any domain. Anyone on the internet reaches this machine. It must
//! never panic, never route a stanza from a domain the stream did not prove or to a
//! domain this server does not serve, and never prove a domain without TLS when TLS is
//! required.
#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use hearth::ns;
use hearth::stream::s2s::{DIALBACK, DialbackSecret, InAction, InInput, S2sIn, S2sPolicy};
use hearth::xml::{Element, Event, StreamHeader};
use libfuzzer_sys::fuzz_target;

const SERVICE: &str = "conference.home.example";
const OURS: &str = "home.example";

#[derive(Arbitrary, Debug)]
enum Name {
    Starttls,
    Auth,
    Result,
    Verify,
    Message,
    Presence,
    Iq,
    Error,
    Other,
}

#[derive(Arbitrary, Debug)]
enum Domain {
    Ours,
    Service,
    Peer,
    Other,
    Raw(String),
}

fn domain(d: &Domain) -> String {
    match d {
        Domain::Ours => OURS.into(),
        Domain::Service => SERVICE.into(),
        Domain::Peer => "peer.example".into(),
        Domain::Other => "evil.example".into(),
        Domain::Raw(s) => s.clone(),
    }
}

#[derive(Arbitrary, Debug)]
struct El {
    name: Name,
    from: Option<(Option<String>, Domain)>,
    to: Option<(Option<String>, Domain)>,
    ty: Option<String>,
    id: Option<String>,
    mechanism: Option<String>,
    text: String,
}

#[derive(Arbitrary, Debug)]
enum In {
    Open { from: Option<Domain>, to: Option<Domain>, version: Option<String>, server_ns: bool },
    Element(El),
    Close,
    TlsEstablished,
    Certificate(Domain, bool),
    Verified(Domain, Option<bool>),
    Shutdown,
}

fn address(a: &(Option<String>, Domain)) -> String {
    match &a.0 {
        Some(local) => format!("{local}@{}", domain(&a.1)),
        None => domain(&a.1),
    }
}

fn element(e: &El) -> Element {
    let (n, namespace) = match e.name {
        Name::Starttls => ("starttls", ns::TLS),
        Name::Auth => ("auth", ns::SASL),
        Name::Result => ("result", DIALBACK),
        Name::Verify => ("verify", DIALBACK),
        Name::Message => ("message", ns::SERVER),
        Name::Presence => ("presence", ns::SERVER),
        Name::Iq => ("iq", ns::SERVER),
        Name::Error => ("error", ns::STREAM),
        Name::Other => ("x", "urn:example"),
    };
    let mut el = Element::new(n, namespace);
    if let Some(f) = &e.from {
        el.set_attr("from", address(f));
    }
    if let Some(t) = &e.to {
        el.set_attr("to", address(t));
    }
    if let Some(ty) = &e.ty {
        el.set_attr("type", ty.as_str());
    }
    if let Some(id) = &e.id {
        el.set_attr("id", id.as_str());
    }
    if let Some(m) = &e.mechanism {
        el.set_attr("mechanism", m.as_str());
    }
    el.push_text(e.text.as_str());
    el
}

fuzz_target!(|inputs: (bool, Vec<In>)| {
    let (direct_tls, inputs) = inputs;
    let policy = Arc::new(S2sPolicy {
        domain: Arc::from(OURS),
        require_tls: true,
        require_valid_certificates: false,
        secret: DialbackSecret::from_bytes([3; 32]),
        // A group chat service beside the domain, as a server with [muc] on has.
        services: vec![Arc::from(SERVICE)],
    });
    let mut m = S2sIn::new(policy, direct_tls);
    let mut tls = direct_tls;
    for input in inputs.into_iter().take(64) {
        let actions = match input {
            In::Open { from, to, version, server_ns } => {
                let mut attrs = Vec::new();
                if let Some(f) = from {
                    attrs.push(("from".to_owned(), domain(&f)));
                }
                if let Some(t) = to {
                    attrs.push(("to".to_owned(), domain(&t)));
                }
                if let Some(v) = version {
                    attrs.push(("version".to_owned(), v));
                }
                let default_ns = if server_ns { ns::SERVER } else { ns::CLIENT };
                m.handle(InInput::Xml(Event::Open(StreamHeader {
                    attrs,
                    default_ns: default_ns.to_owned(),
                })))
            }
            In::Element(e) => m.handle(InInput::Xml(Event::Stanza(element(&e)))),
            In::Close => m.handle(InInput::Xml(Event::Close)),
            In::TlsEstablished => m.handle(InInput::TlsEstablished),
            In::Certificate(d, valid) => m.handle(InInput::CertificateChecked {
                domain: domain(&d).into(),
                valid,
            }),
            In::Verified(d, valid) => m.handle(InInput::DialbackVerified {
                domain: domain(&d).into(),
                valid,
            }),
            In::Shutdown => m.shutdown(),
        };
        for a in &actions {
            match a {
                InAction::StartTls => tls = true,
                InAction::Authenticated(_) => assert!(tls, "a domain proved without TLS"),
                InAction::Route(s) => {
                    let from = s.el.attr("from").unwrap_or_default();
                    let jid = hearth::jid::Jid::parse(from).expect("routed with a bad from");
                    assert!(
                        m.authenticated().iter().any(|d| **d == *jid.domain()),
                        "routed from {from:?}, not proved ({:?})",
                        m.authenticated()
                    );
                    let to = s.to.as_ref().map(|t| t.domain().to_owned());
                    assert_eq!(to.as_deref(), Some(OURS), "routed to another domain");
                }
                _ => {}
            }
        }
    }
});
