//! Server-to-server streams (RFC 6120 §4–§6 for servers) as sans-IO state machines: the
//! incoming one ([`S2sIn`], another server connected to us) and the outgoing one
//! ([`S2sOut`], we connected to deliver our stanzas, or to check a dialback key).
//!
//! Links are one-way, as RFC 6120 §4.1 and XEP-0220 describe them: stanzas from a
//! domain come over the streams *it* opened; ours go over the ones *we* opened. An
//! incoming stream only ever writes negotiation and dialback answers.
//!
//! A peer proves its domain in one of two ways:
//! - SASL EXTERNAL (XEP-0178): after TLS, when its certificate is valid for the domain in
//!   its header's `from` (checked by the driver: [`InAction::CheckCertificate`]);
//! - Server Dialback (XEP-0220): it sends a key; the server authoritative for its domain
//!   confirms the key on a connection of its own ([`InAction::VerifyDialback`]), or its
//!   certificate is already valid for the domain (XEP-0344 §2.4) and no round trip is
//!   needed. Several domains may be authenticated on one stream this way
//!   (piggy-backing, XEP-0220 §2.5).
//!
//! Keys are derived from a secret that never leaves the process (XEP-0185), so nothing is
//! stored per stream to answer a verification later ([`DialbackSecret`]).

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::jid::{self, Jid};
use crate::ns;
use crate::stanza::{Rejected, Stanza, StreamCondition, StreamError};
use crate::stream::negotiation::{Incoming, Negotiation, PeerHeader, Wire};
use crate::xml::{Element, Event};

/// XEP-0220 §2: the dialback namespace (prefix `db` on the stream).
pub const DIALBACK: &str = "jabber:server:dialback";
/// XEP-0220 §2.1.1: the stream feature that says a server does dialback.
pub const DIALBACK_FEATURE: &str = "urn:xmpp:features:dialback";

/// Domains one incoming stream may authenticate by dialback (piggy-backing): more is a
/// peer trying to make us hold state.
const MAX_DOMAINS_PER_STREAM: usize = 16;
/// Dialback verifications waiting at once on one incoming stream.
const MAX_PENDING_VERIFICATIONS: usize = 4;

/// The secret dialback keys are made from (XEP-0185 §3), random for each start of the
/// server: a key issued before a restart no longer verifies, and the peer just
/// authenticates again.
#[derive(Clone)]
pub struct DialbackSecret([u8; 32]);

impl std::fmt::Debug for DialbackSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DialbackSecret(..)")
    }
}

impl DialbackSecret {
    /// A fresh random secret.
    pub fn random() -> DialbackSecret {
        let mut b = [0u8; 32];
        if getrandom::fill(&mut b).is_err() {
            // Without randomness keys could be guessed; mix the time and address in, and
            // say so (the OS random source failing is very rare).
            log::warn!("no OS randomness for the dialback secret; using a weaker one");
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            let h = Sha256::digest(format!("{t}{:p}", &b));
            b.copy_from_slice(&h);
        }
        DialbackSecret(b)
    }

    /// A given secret (tests).
    pub fn from_bytes(b: [u8; 32]) -> DialbackSecret {
        DialbackSecret(b)
    }

    /// XEP-0185 §3: `HMAC-SHA256(hex(SHA256(secret)), "receiving originating id")`, in hex:
    /// the key that `originating` (us) gives `receiving` on the stream with id `id`.
    pub fn key(&self, receiving: &str, originating: &str, id: &str) -> String {
        let k = hex(&Sha256::digest(self.0));
        let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(k.as_bytes()) else {
            // HMAC takes keys of any length.
            return String::new();
        };
        mac.update(receiving.as_bytes());
        mac.update(b" ");
        mac.update(originating.as_bytes());
        mac.update(b" ");
        mac.update(id.as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// Whether `key` is the one we issued (compared in constant time).
    pub fn verifies(&self, key: &str, receiving: &str, originating: &str, id: &str) -> bool {
        use subtle::ConstantTimeEq as _;
        let expected = self.key(receiving, originating, id);
        expected.len() == key.len() && bool::from(expected.as_bytes().ct_eq(key.as_bytes()))
    }
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// What does not change for the streams: the server's federation policy.
#[derive(Debug)]
pub struct S2sPolicy {
    /// Our domain.
    pub domain: Arc<str>,
    /// No stream without TLS (RFC 7590 §3.2).
    pub require_tls: bool,
    /// Only peers whose certificate is valid for their domain.
    pub require_valid_certificates: bool,
    /// What dialback keys are made from.
    pub secret: DialbackSecret,
    /// The server's service domains that federate too (XEP-0045 `conference.<domain>`):
    /// peers may open streams to them, and links go out from them, each authenticated
    /// on its own like the domain (XEP-0220 per domain pair).
    pub services: Vec<Arc<str>>,
}

// ---------------------------------------------------------------------------------------
// Incoming

/// What happened, for an incoming stream.
#[derive(Debug)]
pub enum InInput {
    Xml(Event),
    /// The TLS handshake after `<proceed/>` finished.
    TlsEstablished,
    /// Answer to [`InAction::CheckCertificate`]: the peer's certificate is valid for
    /// the domain.
    CertificateChecked {
        domain: Arc<str>,
        valid: bool,
    },
    /// Answer to [`InAction::VerifyDialback`]: the authoritative server's verdict
    /// (`None`: it could not be asked, e.g. unreachable).
    DialbackVerified {
        domain: Arc<str>,
        valid: Option<bool>,
    },
}

impl From<Event> for InInput {
    fn from(ev: Event) -> InInput {
        InInput::Xml(ev)
    }
}

/// What an incoming stream asks the connection loop for.
#[derive(Debug)]
pub enum InAction {
    Send(String),
    /// `<proceed/>` was sent: run the TLS handshake, then feed [`InInput::TlsEstablished`].
    StartTls,
    ResetFramer,
    /// Check the peer's TLS certificate for `domain`; feed [`InInput::CertificateChecked`].
    CheckCertificate(Arc<str>),
    /// Ask `domain`'s authoritative server whether `key` is the one it issued for the
    /// stream `id` to us (XEP-0220 §2.1.3): feed [`InInput::DialbackVerified`].
    VerifyDialback {
        domain: Arc<str>,
        id: String,
        key: String,
    },
    /// The peer proved `domain` (for the log, and larger limits).
    Authenticated(Arc<str>),
    /// A stanza from an authenticated domain to ours, in `jabber:client` form.
    Route(Stanza),
    /// The error answering a malformed stanza (RFC 6120 §8.3), for the router to send
    /// back to its sender's server.
    Bounce(Element),
    Close,
}

impl From<Wire> for InAction {
    fn from(w: Wire) -> InAction {
        match w {
            Wire::Send(s) => InAction::Send(s),
            Wire::ResetFramer => InAction::ResetFramer,
            Wire::Close => InAction::Close,
        }
    }
}

/// Where an incoming stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InPhase {
    /// Waiting for the (re)opened header.
    Header,
    /// Waiting for the certificate check of the header's `from` before the features.
    Checking,
    /// Features sent; negotiation elements, dialback and (once a domain is
    /// authenticated) stanzas are accepted.
    Open,
    /// `<proceed/>` sent; waiting for the handshake.
    TlsStarting,
}

/// One stream another server opened to us.
#[derive(Debug)]
pub struct S2sIn {
    policy: Arc<S2sPolicy>,
    stream: Negotiation,
    phase: InPhase,
    tls: bool,
    /// The domain in the current header's `from`, normalized.
    claimed: Option<Arc<str>>,
    /// Whether the peer's certificate is valid for `claimed`.
    claimed_cert_valid: bool,
    /// Domains the peer proved, by SASL EXTERNAL or dialback.
    authenticated: Vec<Arc<str>>,
    /// Dialback requests waiting for the authoritative server.
    pending: Vec<Arc<str>>,
}

impl S2sIn {
    /// A stream on a new connection; `tls` when it came over direct TLS (XEP-0368).
    pub fn new(policy: Arc<S2sPolicy>, tls: bool) -> S2sIn {
        S2sIn {
            stream: {
                let n = Negotiation::receiving(ns::SERVER, policy.domain.clone())
                    .naming_peer()
                    .declaring("db", DIALBACK);
                if policy.services.is_empty() {
                    n
                } else {
                    let mut all = vec![policy.domain.clone()];
                    all.extend(policy.services.iter().cloned());
                    n.serving_any(all.into())
                }
            },
            policy,
            phase: InPhase::Header,
            tls,
            claimed: None,
            claimed_cert_valid: false,
            authenticated: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// The domain the peer's stream came to: the server's, or one of its services'.
    pub fn local(&self) -> &Arc<str> {
        self.stream.local()
    }

    /// The domains the peer has proved so far.
    pub fn authenticated(&self) -> &[Arc<str>] {
        &self.authenticated
    }

    pub fn handle(&mut self, input: InInput) -> Vec<InAction> {
        let mut out = Vec::new();
        match input {
            InInput::Xml(ev) => match self.stream.on_event(ev, &mut out) {
                Incoming::Opened(h) => self.on_header(h, &mut out),
                Incoming::Element(el) => self.on_element(el, &mut out),
                Incoming::Handled => {}
            },
            InInput::TlsEstablished => {
                if self.phase == InPhase::TlsStarting {
                    self.tls = true;
                    self.phase = InPhase::Header;
                    self.stream.restart(&mut out);
                }
            }
            InInput::CertificateChecked { domain, valid } => {
                if self.phase == InPhase::Checking && self.claimed.as_ref() == Some(&domain) {
                    self.claimed_cert_valid = valid;
                    self.send_features(&mut out);
                } else if self.pending.contains(&domain) {
                    // A dialback request that only a valid certificate may answer
                    // (`require_valid_certificates`).
                    self.on_verified(domain, Some(valid), &mut out);
                }
            }
            InInput::DialbackVerified { domain, valid } => {
                self.on_verified(domain, valid, &mut out)
            }
        }
        out
    }

    fn on_header(&mut self, h: PeerHeader, out: &mut Vec<InAction>) {
        self.claimed = self.stream.peer().cloned();
        self.claimed_cert_valid = false;
        let _ = h;
        match (&self.claimed, self.tls) {
            // XEP-0178 §3: EXTERNAL is offered when the certificate is valid for the
            // domain the header names; that is known only now.
            (Some(domain), true) => {
                self.phase = InPhase::Checking;
                out.push(InAction::CheckCertificate(domain.clone()));
            }
            _ => self.send_features(out),
        }
    }

    /// The features for this stage (RFC 6120 §4.3.2): STARTTLS before TLS (required
    /// when policy says so); after it, EXTERNAL when the certificate allows it, and
    /// dialback (XEP-0220 §2.1.1).
    fn send_features(&mut self, out: &mut Vec<InAction>) {
        self.phase = InPhase::Open;
        let mut features = Vec::new();
        if !self.tls {
            let mut st = Element::new("starttls", ns::TLS);
            if self.policy.require_tls {
                st.push_child(Element::new("required", ns::TLS));
            }
            features.push(st);
        }
        let proved = self
            .claimed
            .as_ref()
            .is_some_and(|d| self.authenticated.contains(d));
        if self.tls && self.claimed_cert_valid && !proved {
            features.push(
                Element::new("mechanisms", ns::SASL)
                    .with_child(Element::new("mechanism", ns::SASL).with_text("EXTERNAL")),
            );
        }
        if self.tls || !self.policy.require_tls {
            features.push(
                Element::new("dialback", DIALBACK_FEATURE)
                    .with_child(Element::new("errors", DIALBACK_FEATURE)),
            );
        }
        self.stream.send_features(&features, out);
    }

    fn on_element(&mut self, el: Element, out: &mut Vec<InAction>) {
        if self.stream.is_closing() {
            return;
        }
        if self.phase != InPhase::Open {
            return self.fail(StreamError::new(StreamCondition::NotAuthorized), out);
        }
        match (el.name(), el.ns()) {
            ("starttls", ns::TLS) if !self.tls => {
                out.push(InAction::Send(
                    "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>".into(),
                ));
                self.phase = InPhase::TlsStarting;
                out.push(InAction::StartTls);
            }
            ("auth", ns::SASL) => self.on_auth(&el, out),
            ("result", DIALBACK) => self.on_db_result(&el, out),
            ("verify", DIALBACK) => self.on_db_verify(&el, out),
            (_, ns::SERVER) => self.on_stanza(el, out),
            _ => self.fail(
                StreamError::new(StreamCondition::UnsupportedStanzaType),
                out,
            ),
        }
    }

    /// XEP-0178 §3: SASL EXTERNAL with the certificate as the credential.
    fn on_auth(&mut self, el: &Element, out: &mut Vec<InAction>) {
        let failure = |cond: &str| {
            InAction::Send(format!(
                "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><{cond}/></failure>"
            ))
        };
        if el.attr("mechanism") != Some("EXTERNAL") {
            return out.push(failure("invalid-mechanism"));
        }
        let Some(domain) = self.claimed.clone() else {
            return out.push(failure("not-authorized"));
        };
        if !self.tls || !self.claimed_cert_valid {
            return out.push(failure("not-authorized"));
        }
        // The authorization identity, if any, must be the domain the certificate names
        // (XEP-0178 §3 step 7; "=" is none).
        let text = el.text();
        let authzid = match text.trim() {
            "" | "=" => None,
            t => match B64.decode(t) {
                Ok(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                Err(_) => return out.push(failure("incorrect-encoding")),
            },
        };
        if let Some(a) = authzid
            && jid::normalize_domain(&a).ok().as_deref() != Some(&*domain)
        {
            return out.push(failure("invalid-authzid"));
        }
        out.push(InAction::Send(
            "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>".into(),
        ));
        self.prove(domain, out);
        self.phase = InPhase::Header;
        self.stream.restart(out);
    }

    fn prove(&mut self, domain: Arc<str>, out: &mut Vec<InAction>) {
        if !self.authenticated.contains(&domain) {
            self.authenticated.push(domain.clone());
            out.push(InAction::Authenticated(domain));
        }
    }

    /// XEP-0220 §2.1.2: the peer asks to send stanzas from `from`, with a key its
    /// authoritative server made.
    fn on_db_result(&mut self, el: &Element, out: &mut Vec<InAction>) {
        let (Some(from), Some(to)) = (el.attr("from"), el.attr("to")) else {
            return self.fail(
                StreamError::new(StreamCondition::ImproperAddressing)
                    .with_text("a dialback request needs 'from' and 'to'"),
                out,
            );
        };
        if el.attr("type").is_some() {
            // A verdict: we never ask for one on an incoming stream.
            return self.fail(
                StreamError::new(StreamCondition::UnsupportedStanzaType),
                out,
            );
        }
        let Ok(domain) = jid::normalize_domain(from) else {
            return self.fail(StreamError::new(StreamCondition::InvalidFrom), out);
        };
        let domain: Arc<str> = domain.into();
        if jid::normalize_domain(to).ok().as_deref() != Some(&**self.stream.local()) {
            // XEP-0220 §2.4.2: a domain we do not serve.
            return out.push(InAction::Send(db_error(
                "result",
                &self.stream.local().clone(),
                &domain,
                None,
                "item-not-found",
            )));
        }
        if self.policy.require_tls && !self.tls {
            return self.fail(
                StreamError::new(StreamCondition::PolicyViolation)
                    .with_text("TLS is required before dialback"),
                out,
            );
        }
        if self.authenticated.contains(&domain) {
            let ok = db_verdict("result", &self.stream.local().clone(), &domain, None, true);
            return out.push(InAction::Send(ok));
        }
        if self.pending.contains(&domain)
            || self.pending.len() >= MAX_PENDING_VERIFICATIONS
            || self.authenticated.len() >= MAX_DOMAINS_PER_STREAM
        {
            return self.fail(
                StreamError::new(StreamCondition::PolicyViolation)
                    .with_text("too many dialback requests on one stream"),
                out,
            );
        }
        let Some(id) = self.stream.stream_id().map(str::to_owned) else {
            return;
        };
        self.pending.push(domain.clone());
        if self.tls && self.claimed.as_ref() == Some(&domain) && self.claimed_cert_valid {
            // XEP-0344 §2.4: the certificate already proves the domain.
            return self.on_verified(domain, Some(true), out);
        }
        if self.policy.require_valid_certificates {
            // Only a valid certificate lets a peer in; the check for this domain
            // decides (the answer comes back as a dialback verdict).
            out.push(InAction::CheckCertificate(domain));
            return;
        }
        out.push(InAction::VerifyDialback {
            domain,
            id,
            key: el.text().trim().to_owned(),
        });
    }

    fn on_verified(&mut self, domain: Arc<str>, valid: Option<bool>, out: &mut Vec<InAction>) {
        let Some(i) = self.pending.iter().position(|d| *d == domain) else {
            return;
        };
        self.pending.swap_remove(i);
        if self.stream.is_closing() {
            return;
        }
        match valid {
            Some(true) => {
                let ok = db_verdict("result", &self.stream.local().clone(), &domain, None, true);
                out.push(InAction::Send(ok));
                self.prove(domain, out);
            }
            Some(false) => {
                let no = db_verdict("result", &self.stream.local().clone(), &domain, None, false);
                out.push(InAction::Send(no));
            }
            None => {
                // XEP-0220 §2.4.1: the authoritative server could not be reached.
                out.push(InAction::Send(db_error(
                    "result",
                    &self.stream.local().clone(),
                    &domain,
                    None,
                    "remote-server-not-found",
                )));
            }
        }
    }

    /// XEP-0220 §2.1.3–2.1.4: we are the authoritative server for our domain; the peer
    /// asks whether a key it was given came from us.
    fn on_db_verify(&mut self, el: &Element, out: &mut Vec<InAction>) {
        let (Some(from), Some(to), Some(id)) = (el.attr("from"), el.attr("to"), el.attr("id"))
        else {
            return self.fail(
                StreamError::new(StreamCondition::ImproperAddressing)
                    .with_text("a dialback verification needs 'from', 'to' and 'id'"),
                out,
            );
        };
        if el.attr("type").is_some() {
            return self.fail(
                StreamError::new(StreamCondition::UnsupportedStanzaType),
                out,
            );
        }
        let Ok(asker) = jid::normalize_domain(from) else {
            return self.fail(StreamError::new(StreamCondition::InvalidFrom), out);
        };
        if jid::normalize_domain(to).ok().as_deref() != Some(&**self.stream.local()) {
            return out.push(InAction::Send(db_error(
                "verify",
                &self.stream.local().clone(),
                &asker,
                Some(id),
                "item-not-found",
            )));
        }
        let key = el.text();
        let valid =
            self.policy
                .secret
                .verifies(key.trim(), &asker, &self.stream.local().clone(), id);
        out.push(InAction::Send(db_verdict(
            "verify",
            &self.stream.local().clone(),
            &asker,
            Some(id),
            valid,
        )));
    }

    /// RFC 6120 §4.9.3.10 / §4.9.3.11 / §8.1.1.1: a stanza must come from a domain the
    /// stream proved, to a domain we serve, with both addresses.
    fn on_stanza(&mut self, mut el: Element, out: &mut Vec<InAction>) {
        if !matches!(el.name(), "message" | "presence" | "iq") {
            return self.fail(
                StreamError::new(StreamCondition::UnsupportedStanzaType),
                out,
            );
        }
        if self.authenticated.is_empty() {
            return self.fail(
                StreamError::new(StreamCondition::NotAuthorized)
                    .with_text("no domain is authenticated on this stream"),
                out,
            );
        }
        let (Some(from), Some(to)) = (el.attr("from"), el.attr("to")) else {
            return self.fail(
                StreamError::new(StreamCondition::ImproperAddressing)
                    .with_text("a stanza between servers needs 'from' and 'to'"),
                out,
            );
        };
        let from = match Jid::parse(from) {
            Ok(j) if self.authenticated.iter().any(|d| **d == *j.domain()) => j,
            _ => {
                return self.fail(
                    StreamError::new(StreamCondition::InvalidFrom)
                        .with_text("'from' is not a domain this stream authenticated"),
                    out,
                );
            }
        };
        let to = match Jid::parse(to) {
            Ok(j) if j.domain() == &**self.stream.local() => j,
            _ => {
                return self.fail(
                    StreamError::new(StreamCondition::HostUnknown)
                        .with_text(format!("this server is {}", self.stream.local())),
                    out,
                );
            }
        };
        el.rename_ns(ns::SERVER, ns::CLIENT);
        // The normalized forms go on, so the rest of the server compares like with like.
        el.set_attr("from", from.as_str());
        el.set_attr("to", to.as_str());
        // The same checks as a client's stanza (RFC 6120 §8.2.3 for iqs).
        match Stanza::from_client(el) {
            Ok(stanza) => out.push(InAction::Route(stanza)),
            Err(Rejected::Stream(cond)) => self.fail(StreamError::new(cond), out),
            Err(Rejected::Stanza(err, el)) => {
                if let Some(reply) = err.reply_to(&el) {
                    out.push(InAction::Bounce(reply));
                }
            }
        }
    }

    pub fn fail(&mut self, err: StreamError, out: &mut Vec<InAction>) {
        self.stream.fail(err, out);
    }

    pub fn shutdown(&mut self) -> Vec<InAction> {
        let mut out = Vec::new();
        self.stream.shutdown(&mut out);
        out
    }

    pub fn is_closed(&self) -> bool {
        self.stream.is_closed()
    }
}

impl crate::stream::Machine for S2sIn {
    type Input = InInput;
    type Action = InAction;

    fn handle(&mut self, input: InInput) -> Vec<InAction> {
        S2sIn::handle(self, input)
    }

    fn fail(&mut self, err: StreamError, out: &mut Vec<InAction>) {
        S2sIn::fail(self, err, out)
    }

    fn shutdown(&mut self) -> Vec<InAction> {
        S2sIn::shutdown(self)
    }

    fn is_closed(&self) -> bool {
        S2sIn::is_closed(self)
    }

    fn wire(action: InAction) -> Result<Wire, InAction> {
        match action {
            InAction::Send(s) => Ok(Wire::Send(s)),
            InAction::ResetFramer => Ok(Wire::ResetFramer),
            InAction::Close => Ok(Wire::Close),
            other => Err(other),
        }
    }
}

/// `<db:result/>` or `<db:verify/>` with `type='valid'` or `'invalid'`.
fn db_verdict(name: &str, from: &str, to: &str, id: Option<&str>, valid: bool) -> String {
    let mut el = Element::new(name, DIALBACK)
        .with_attr("from", from)
        .with_attr("to", to);
    if let Some(id) = id {
        el.set_attr("id", id);
    }
    el.set_attr("type", if valid { "valid" } else { "invalid" });
    db_xml(&el)
}

/// XEP-0220 §2.4: a dialback error with a stanza error condition.
fn db_error(name: &str, from: &str, to: &str, id: Option<&str>, cond: &str) -> String {
    let mut el = Element::new(name, DIALBACK)
        .with_attr("from", from)
        .with_attr("to", to)
        .with_attr("type", "error");
    if let Some(id) = id {
        el.set_attr("id", id);
    }
    el.push_child(
        Element::new("error", ns::SERVER)
            .with_attr("type", "cancel")
            .with_child(Element::new(cond, ns::STANZA_ERRORS)),
    );
    db_xml(&el)
}

/// A dialback element with the `db:` prefix the stream header declares (XEP-0220 §2.1.1;
/// some servers match the prefix rather than the namespace).
fn db_xml(el: &Element) -> String {
    let inner = el.to_xml_in(DIALBACK);
    // `<result …` → `<db:result …`, and its closing tag if it has children.
    let name = el.name();
    let mut s = String::with_capacity(inner.len() + 8);
    s.push_str("<db:");
    s.push_str(&inner[1..]);
    let close = format!("</{name}>");
    if s.ends_with(&close) {
        s.truncate(s.len() - close.len());
        s.push_str(&format!("</db:{name}>"));
    }
    s
}

// ---------------------------------------------------------------------------------------
// Outgoing

/// What an outgoing stream is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// To carry our stanzas to the peer's domain.
    Deliver,
    /// Only to ask the peer, the authoritative server of its domain, whether `key` is
    /// the one it issued for the stream `id` it opened to us (XEP-0220 §2.1.3).
    Verify { id: String, key: String },
}

/// What happened, for an outgoing stream.
#[derive(Debug)]
pub enum OutInput {
    Xml(Event),
    /// The TLS handshake finished; `cert_valid` when the peer's certificate is valid
    /// for its domain.
    TlsEstablished {
        cert_valid: bool,
    },
}

impl From<Event> for OutInput {
    fn from(ev: Event) -> OutInput {
        OutInput::Xml(ev)
    }
}

/// What an outgoing stream asks the connection loop for.
#[derive(Debug, PartialEq, Eq)]
pub enum OutAction {
    Send(String),
    /// `<proceed/>` arrived: run the TLS handshake as client, then feed
    /// [`OutInput::TlsEstablished`].
    StartTls,
    ResetFramer,
    /// The peer accepted us (EXTERNAL or dialback): stanzas may go.
    Ready,
    /// The answer to a [`Purpose::Verify`] stream.
    Verified(bool),
    /// The link cannot be set up, for this reason (for the log and the bounces).
    Failed(String),
    Close,
}

impl From<Wire> for OutAction {
    fn from(w: Wire) -> OutAction {
        match w {
            Wire::Send(s) => OutAction::Send(s),
            Wire::ResetFramer => OutAction::ResetFramer,
            Wire::Close => OutAction::Close,
        }
    }
}

/// Where an outgoing stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutPhase {
    /// Our header is out; waiting for the peer's header and features.
    Features,
    /// `<starttls/>` sent.
    TlsRequested,
    /// Handshake running.
    TlsStarting,
    /// `<auth mechanism='EXTERNAL'/>` sent.
    Sasl,
    /// `<db:result/>` sent.
    Dialback,
    /// `<db:verify/>` sent.
    Verifying,
    /// Accepted: stanzas flow.
    Ready,
    /// Gave up (a failure was reported).
    Done,
}

/// One stream we opened to another server.
#[derive(Debug)]
pub struct S2sOut {
    policy: Arc<S2sPolicy>,
    /// Our side's domain: the server's, or one of its services'.
    local: Arc<str>,
    stream: Negotiation,
    purpose: Purpose,
    phase: OutPhase,
    tls: bool,
    cert_valid: bool,
    /// SASL EXTERNAL failed once; dialback is next.
    external_failed: bool,
    /// SASL EXTERNAL succeeded: the features of the restarted stream end the
    /// negotiation (RFC 6120 §6.4.6).
    external_done: bool,
}

impl S2sOut {
    /// A stream to `peer`; `tls` when the connection is already TLS (XEP-0368) with
    /// `cert_valid` saying whether the peer's certificate is valid for `peer`.
    pub fn new(
        policy: Arc<S2sPolicy>,
        peer: Arc<str>,
        purpose: Purpose,
        tls: Option<bool>,
    ) -> S2sOut {
        S2sOut {
            stream: Negotiation::initiating(ns::SERVER, policy.domain.clone(), peer)
                .declaring("db", DIALBACK),
            local: policy.domain.clone(),
            policy,
            purpose,
            phase: OutPhase::Features,
            tls: tls.is_some(),
            cert_valid: tls.unwrap_or(false),
            external_failed: false,
            external_done: false,
        }
    }

    /// The stream as one of the server's service domains (`local`, one of
    /// [`S2sPolicy::services`]) rather than its domain: header, SASL EXTERNAL and dialback
    /// all name it.
    pub fn from_local(mut self, local: Arc<str>) -> S2sOut {
        self.stream = Negotiation::initiating(ns::SERVER, local.clone(), self.peer())
            .declaring("db", DIALBACK);
        self.local = local;
        self
    }

    /// The first header (RFC 6120 §4.2).
    pub fn open(&mut self) -> Vec<OutAction> {
        let mut out = Vec::new();
        self.stream.open(&mut out);
        out
    }

    fn peer(&self) -> Arc<str> {
        self.stream.peer().cloned().unwrap_or_else(|| "".into())
    }

    pub fn is_ready(&self) -> bool {
        self.phase == OutPhase::Ready
    }

    pub fn handle(&mut self, input: OutInput) -> Vec<OutAction> {
        let mut out = Vec::new();
        match input {
            OutInput::Xml(ev) => match self.stream.on_event(ev, &mut out) {
                Incoming::Opened(_) => {}
                Incoming::Element(el) => self.on_element(el, &mut out),
                Incoming::Handled => {
                    if self.stream.is_closed() && self.phase != OutPhase::Ready {
                        self.give_up("the peer closed the stream", &mut out);
                    }
                }
            },
            OutInput::TlsEstablished { cert_valid } => {
                if self.phase == OutPhase::TlsStarting {
                    self.tls = true;
                    self.cert_valid = cert_valid;
                    self.phase = OutPhase::Features;
                    // The new stream's header goes first, also before a stream error.
                    self.stream.restart(&mut out);
                    if self.policy.require_valid_certificates && !cert_valid {
                        let why = format!("the certificate of {} is not valid", self.peer());
                        self.abandon(&why, StreamCondition::PolicyViolation, &mut out);
                    }
                }
            }
        }
        out
    }

    fn on_element(&mut self, el: Element, out: &mut Vec<OutAction>) {
        if self.stream.is_closing() {
            return;
        }
        match self.phase {
            OutPhase::Features if el.is("features", ns::STREAM) => self.on_features(&el, out),
            OutPhase::TlsRequested if el.is("proceed", ns::TLS) => {
                self.phase = OutPhase::TlsStarting;
                out.push(OutAction::StartTls);
            }
            OutPhase::TlsRequested if el.is("failure", ns::TLS) => {
                self.give_up("the peer refused STARTTLS", out)
            }
            OutPhase::Sasl if el.is("success", ns::SASL) => {
                // RFC 6120 §6.4.6: a new stream; its features end the negotiation.
                self.phase = OutPhase::Features;
                self.external_done = true;
                self.stream.restart(out);
            }
            OutPhase::Sasl if el.is("failure", ns::SASL) => {
                self.external_failed = true;
                if self.policy.require_valid_certificates {
                    return self.give_up("the peer refused SASL EXTERNAL", out);
                }
                self.dialback(out);
            }
            OutPhase::Dialback if el.is("result", DIALBACK) => match el.attr("type") {
                Some("valid") => self.ready(out),
                Some("invalid") => self.give_up("the peer refused our dialback key", out),
                _ => self.give_up("dialback failed at the peer", out),
            },
            OutPhase::Verifying if el.is("verify", DIALBACK) => {
                let valid = el.attr("type") == Some("valid");
                out.push(OutAction::Verified(valid));
                self.phase = OutPhase::Done;
                self.stream.close(out);
            }
            // A peer acknowledging or erring on something else (e.g. a stanza error
            // bounced on our stream) is not ours to act on.
            OutPhase::Ready => {
                log::debug!(
                    "s2s to {}: unexpected <{}/> ignored",
                    self.peer(),
                    el.name()
                );
            }
            _ => {
                let why = format!("unexpected <{}/> from the peer", el.name());
                self.abandon(&why, StreamCondition::UnsupportedStanzaType, out);
            }
        }
    }

    /// RFC 6120 §4.3: what the peer offers decides the next step.
    fn on_features(&mut self, features: &Element, out: &mut Vec<OutAction>) {
        if !self.tls {
            if features.has_child("starttls", ns::TLS) {
                out.push(OutAction::Send(
                    "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>".into(),
                ));
                self.phase = OutPhase::TlsRequested;
                return;
            }
            if self.policy.require_tls {
                let why = format!("{} does not offer TLS", self.peer());
                return self.abandon(&why, StreamCondition::PolicyViolation, out);
            }
        }
        if self.external_done {
            return self.ready(out);
        }
        if let Purpose::Verify { id, key } = &self.purpose {
            let el = Element::new("verify", DIALBACK)
                .with_attr("from", &*self.local)
                .with_attr("to", &*self.peer())
                .with_attr("id", id.as_str())
                .with_text(key.as_str());
            out.push(OutAction::Send(db_xml(&el)));
            self.phase = OutPhase::Verifying;
            return;
        }
        let external = features.get_child("mechanisms", ns::SASL).is_some_and(|m| {
            m.children()
                .any(|c| c.is("mechanism", ns::SASL) && c.text().trim() == "EXTERNAL")
        });
        if self.tls && external && !self.external_failed {
            // XEP-0178 §3: the authorization identity is our domain.
            let authzid = B64.encode(self.local.as_bytes());
            out.push(OutAction::Send(format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>{authzid}</auth>"
            )));
            self.phase = OutPhase::Sasl;
            return;
        }
        if self.policy.require_valid_certificates {
            let why = format!("{} offers no SASL EXTERNAL", self.peer());
            return self.abandon(&why, StreamCondition::PolicyViolation, out);
        }
        self.dialback(out);
    }

    /// XEP-0220 §2.1.1: our key for the stream the peer opened for us.
    fn dialback(&mut self, out: &mut Vec<OutAction>) {
        let Some(id) = self.stream.stream_id().map(str::to_owned) else {
            return self.give_up("the peer's header had no stream id", out);
        };
        let peer = self.peer();
        let key = self.policy.secret.key(&peer, &self.local, &id);
        let el = Element::new("result", DIALBACK)
            .with_attr("from", &*self.local)
            .with_attr("to", &*peer)
            .with_text(key);
        out.push(OutAction::Send(db_xml(&el)));
        self.phase = OutPhase::Dialback;
    }

    fn ready(&mut self, out: &mut Vec<OutAction>) {
        self.phase = OutPhase::Ready;
        out.push(OutAction::Ready);
    }

    /// Reports the failure (the stream is over or closing already).
    fn give_up(&mut self, why: &str, out: &mut Vec<OutAction>) {
        if self.phase == OutPhase::Done {
            return;
        }
        self.phase = OutPhase::Done;
        out.push(OutAction::Failed(why.to_owned()));
        self.stream.close(out);
    }

    /// Reports the failure and ends the stream with `cond`.
    fn abandon(&mut self, why: &str, cond: StreamCondition, out: &mut Vec<OutAction>) {
        if self.phase != OutPhase::Done {
            self.phase = OutPhase::Done;
            out.push(OutAction::Failed(why.to_owned()));
        }
        self.stream
            .fail(StreamError::new(cond).with_text(why.to_owned()), out);
    }

    pub fn fail(&mut self, err: StreamError, out: &mut Vec<OutAction>) {
        if self.phase != OutPhase::Ready && self.phase != OutPhase::Done {
            self.phase = OutPhase::Done;
            out.push(OutAction::Failed(err.condition.name().to_owned()));
        }
        self.stream.fail(err, out);
    }

    /// Closes a link that has nothing more to carry (RFC 6120 §4.4).
    pub fn close(&mut self) -> Vec<OutAction> {
        let mut out = Vec::new();
        self.stream.close(&mut out);
        out
    }

    pub fn shutdown(&mut self) -> Vec<OutAction> {
        let mut out = Vec::new();
        self.stream.shutdown(&mut out);
        out
    }

    pub fn is_closed(&self) -> bool {
        self.stream.is_closed()
    }
}

impl crate::stream::Machine for S2sOut {
    type Input = OutInput;
    type Action = OutAction;

    fn handle(&mut self, input: OutInput) -> Vec<OutAction> {
        S2sOut::handle(self, input)
    }

    fn fail(&mut self, err: StreamError, out: &mut Vec<OutAction>) {
        S2sOut::fail(self, err, out)
    }

    fn shutdown(&mut self) -> Vec<OutAction> {
        S2sOut::shutdown(self)
    }

    fn is_closed(&self) -> bool {
        S2sOut::is_closed(self)
    }

    fn wire(action: OutAction) -> Result<Wire, OutAction> {
        match action {
            OutAction::Send(s) => Ok(Wire::Send(s)),
            OutAction::ResetFramer => Ok(Wire::ResetFramer),
            OutAction::Close => Ok(Wire::Close),
            other => Err(other),
        }
    }
}

#[cfg(test)]
mod tests;
