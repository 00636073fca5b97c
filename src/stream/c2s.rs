//! Client-to-server stream negotiation (RFC 6120 §4–§7) as a sans-IO state
//! machine.
//!
//! The connection loop feeds it [`Input`]s (framer events, TLS completion,
//! credential lookups, bind results) and carries out the [`Action`]s it
//! returns (bytes to write, TLS to start, storage to ask, stanzas to route).
//! Nothing here touches a socket, a clock or the database.
//!
//! The order a client goes through:
//! header → features(starttls, required) → `<starttls/>` → TLS →
//! header → features(mechanisms) → SASL → `<success/>` →
//! header → features(bind, session optional) → bind → established.
//! With direct TLS (XEP-0368) the first stage is skipped.
//!
//! The stream itself (headers and their checks, the features wrapper,
//! restarts, stream errors, closing) is [`Negotiation`]'s, the core it shares
//! with the s2s machines; this file decides what each stage offers and what
//! each first-level element means.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::config::RegistrationPolicy;
use crate::features::register;
use crate::jid::{self, FullJid};
use crate::ns;
use crate::stanza::{Rejected, Stanza, StanzaCondition, StanzaError, StreamCondition, StreamError};
use crate::stream::negotiation::{Incoming, Negotiation, Wire};
use crate::stream::sasl::{
    ChannelBindings, Mechanism, SaslAction, SaslFailure, SaslServer, ScramCredentials, ScramHash,
};
use crate::stream::sm;
use crate::xml::{Element, Event};

/// What does not change during a stream: the server's policy.
#[derive(Clone, Debug)]
pub struct C2sPolicy {
    /// The domain this server serves (normalized).
    pub domain: Arc<str>,
    /// Mechanisms offered once TLS is up, strongest first. `-PLUS`
    /// variants are dropped automatically when no channel binding exists.
    pub mechanisms: Vec<Mechanism>,
    /// Failed authentication attempts allowed on one stream before it is
    /// closed (RFC 6120 §6.4.5 asks for a "reasonable number", 2 to 5).
    pub max_auth_failures: u8,
    /// Refuse SCRAM's `y` flag while `-PLUS` is offered (RFC 5802 §6); see
    /// `SaslServer::accepting_y_flag` for why this is optional.
    pub strict_channel_binding: bool,
    /// Stream features the modules add after login, beside bind and session
    /// (`features::Registry::stream_features`): roster versioning, pre-approval.
    pub module_features: Vec<Element>,
    /// In-band registration before login (XEP-0077 §3.1, §8): offered after TLS unless
    /// closed; the form asks for a token under the invite policy.
    pub registration: RegistrationPolicy,
    /// XEP-0198 stream management is offered (`<sm/>` after login, `<enable/>`,
    /// `<resume/>`).
    pub stream_management: bool,
}

/// Something that happened, for the state machine to react to.
#[derive(Debug)]
pub enum Input {
    /// A stream event from the XML framer.
    Xml(Event),
    /// The TLS handshake after `<proceed/>` finished; the bindings come from
    /// the TLS session, never from the client.
    TlsEstablished(ChannelBindings),
    /// Answer to [`Action::LookupScram`]; `None` when the account does not exist.
    ScramCredentials(Option<ScramCredentials>),
    /// Answer to [`Action::VerifyPlain`].
    PlainVerified(bool),
    /// The credentials could not be read (storage failed): the client may
    /// try again later, and it is not counted as a wrong password.
    AuthUnavailable,
    /// Answer to [`Action::Bind`].
    Bound(Result<FullJid, StanzaError>),
    /// Answer to [`Action::Register`]: the account exists now, or the error to answer.
    Registered(Result<(), StanzaError>),
    /// Answer to [`Action::SmEnable`] (XEP-0198 §3): management is on; `id` and `max`
    /// when the session may be resumed, for how many seconds.
    SmEnabled {
        id: Option<String>,
        max: Option<u32>,
    },
    /// Answer to [`Action::SmResume`] (XEP-0198 §5).
    SmResumed(Result<Resumed, ResumeFailed>),
}

/// A session taken over by a `<resume/>` (XEP-0198 §5).
#[derive(Debug)]
pub struct Resumed {
    /// The session's address.
    pub jid: FullJid,
    /// The id the client resumed.
    pub previd: String,
    /// Stanzas the server had handled from the client on the old connection.
    pub handled: u32,
}

/// Why a `<resume/>` failed: `<failed/>` with this stanza error condition and, when the
/// session was found, how many of its stanzas the server handled (XEP-0198 §5).
#[derive(Debug)]
pub struct ResumeFailed {
    pub condition: &'static str,
    pub h: Option<u32>,
}

/// Something the connection loop must do, in order.
#[derive(Debug)]
pub enum Action {
    /// Write these bytes.
    Send(String),
    /// `<proceed/>` was sent: run the TLS handshake now, then feed
    /// [`Input::TlsEstablished`]. Bytes buffered so far must be discarded
    /// (no plaintext may leak into the TLS stream, RFC 6120 §5.4.3.3).
    StartTls,
    /// The stream restarts (after TLS or SASL): drop the framer's state.
    ResetFramer,
    /// Look up stored SCRAM keys of `username` (a normalized localpart).
    LookupScram { username: String, hash: ScramHash },
    /// Verify a PLAIN password for `username` (normalized localpart).
    VerifyPlain { username: String, password: String },
    /// An authentication attempt failed (for throttling and the log).
    /// `username` is the normalized localpart when one was given.
    AuthFailed { username: Option<String> },
    /// SASL succeeded for `username`; larger stanzas may now be accepted.
    Authenticated { username: String },
    /// Bind a resource for the authenticated user: `None` asks the server to
    /// pick one. Feed [`Input::Bound`] with the outcome.
    Bind { resource: Option<String> },
    /// Create an account (XEP-0077 §3.1) for a client not logged in: `username` is
    /// normalized and allowed by name ([`register::check_username`]); the policy, the
    /// token and whether the name is free are the driver's to check. Feed
    /// [`Input::Registered`].
    Register {
        username: String,
        password: String,
        token: Option<String>,
    },
    /// A validated stanza from the bound session, `from` stamped.
    Route(Stanza),
    /// `<enable/>` on a bound stream (XEP-0198 §3): feed [`Input::SmEnabled`].
    SmEnable(crate::stream::sm::Enable),
    /// `<a h='…'/>` from the client (XEP-0198 §4): drop what it acknowledges.
    SmAck(u32),
    /// `<r/>` from the client (XEP-0198 §4): answer `<a h='…'/>` with this count once
    /// what was handled is stored for good.
    SmAnswer(u32),
    /// `<resume/>` instead of binding (XEP-0198 §5): find the session `previd` of this
    /// account, take it over, and feed [`Input::SmResumed`].
    SmResume { previd: String, h: u32 },
    /// After `<resumed/>`: write again what the client did not acknowledge, then what
    /// waited for it (XEP-0198 §5).
    SmResend,
    /// XEP-0352 §4.2: the client says it is active or inactive (a nonza, not a stanza:
    /// nothing is answered, and stream management does not count it).
    ClientState(crate::features::csi::State),
    /// Close the connection (after writing what came before).
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

impl From<Event> for Input {
    fn from(ev: Event) -> Input {
        Input::Xml(ev)
    }
}

impl crate::stream::Machine for C2s {
    type Input = Input;
    type Action = Action;

    fn handle(&mut self, input: Input) -> Vec<Action> {
        C2s::handle(self, input)
    }

    fn fail(&mut self, err: StreamError, out: &mut Vec<Action>) {
        C2s::fail(self, err, out)
    }

    fn shutdown(&mut self) -> Vec<Action> {
        C2s::shutdown(self)
    }

    fn is_closed(&self) -> bool {
        C2s::is_closed(self)
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

/// Where in the negotiation the stream is. Whether it is open or closed at
/// all is the [`Negotiation`]'s.
#[derive(Debug)]
enum Phase {
    /// Waiting for the (re)opened stream header.
    Header,
    /// Features with STARTTLS sent; only `<starttls/>` moves on.
    PreTls,
    /// `<proceed/>` sent; waiting for the TLS handshake.
    TlsStarting,
    /// Mechanisms offered; waiting for `<auth/>`.
    PreAuth,
    /// A SASL exchange is in progress.
    Sasl(Box<SaslServer>),
    /// Authenticated, bind offered; waiting for the bind iq.
    PreBind,
    /// Bind requested; waiting for the router. Holds the request's id.
    Binding(String),
    /// `<resume/>` sent (XEP-0198 §5); waiting for the driver to find the session.
    Resuming,
    /// Resource bound: stanzas flow.
    Established,
}

/// The state of one client stream.
#[derive(Debug)]
pub struct C2s {
    policy: Arc<C2sPolicy>,
    phase: Phase,
    /// Channel-binding data when the stream is under TLS.
    tls: Option<ChannelBindings>,
    /// The stream layer: headers, restarts, errors, closing.
    stream: Negotiation,
    /// The authenticated account (localpart) once SASL succeeded.
    user: Option<String>,
    /// The username of an authentication attempt waiting for storage.
    pending_user: Option<String>,
    /// The bound address once established.
    jid: Option<FullJid>,
    auth_failures: u8,
    /// XEP-0077 before login: the registration iq waiting for the driver (its `id` and
    /// `to`, to answer it), whether an account was registered (one per stream), the
    /// attempts so far, and a XEP-0401 token sent ahead in `<preauth/>`.
    register: Option<Box<Registering>>,
    /// XEP-0198: stanzas handled from the client since `<enable/>` (mod 2^32), once
    /// stream management is on.
    sm_handled: Option<u32>,
}

/// A stream's in-band registration state (XEP-0077 §3.1); boxed, since few streams
/// ever register.
#[derive(Debug, Default)]
struct Registering {
    pending: Option<Element>,
    is_done: bool,
    attempts: u8,
    token: Option<String>,
}

/// Registration attempts (refused names, taken names, bad tokens) allowed on one stream.
const MAX_REGISTER_ATTEMPTS: u8 = 5;

impl C2s {
    /// A new stream on a plain TCP connection (STARTTLS will be required),
    /// or one already under TLS (direct TLS, XEP-0368) when `tls` is given.
    pub fn new(policy: Arc<C2sPolicy>, tls: Option<ChannelBindings>) -> C2s {
        C2s {
            stream: Negotiation::receiving(ns::CLIENT, policy.domain.clone()),
            policy,
            phase: Phase::Header,
            tls,
            user: None,
            pending_user: None,
            jid: None,
            auth_failures: 0,
            register: None,
            sm_handled: None,
        }
    }

    /// The bound address, once the stream is established.
    pub fn jid(&self) -> Option<&FullJid> {
        self.jid.as_ref()
    }

    /// The authenticated account (localpart), once SASL succeeded.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// XEP-0198: stanzas handled from the client (mod 2^32), once management is on.
    pub fn sm_handled(&self) -> Option<u32> {
        self.sm_handled
    }

    /// True when TLS protects the stream.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// True when the session is bound and stanzas flow.
    pub fn is_established(&self) -> bool {
        matches!(self.phase, Phase::Established) && !self.stream.is_closed()
    }

    /// True when the stream is over: nothing more is accepted.
    pub fn is_closed(&self) -> bool {
        self.stream.is_closed()
    }

    /// Reacts to one input.
    pub fn handle(&mut self, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        if self.stream.is_closed() {
            return out;
        }
        match input {
            // Headers, closes and stream errors are the core's (RFC 6120 §4).
            Input::Xml(ev) => match self.stream.on_event(ev, &mut out) {
                Incoming::Opened(_) => self.on_opened(&mut out),
                Incoming::Element(el) => self.on_element(el, &mut out),
                Incoming::Handled => {}
            },
            Input::TlsEstablished(cb) => {
                if matches!(self.phase, Phase::TlsStarting) {
                    self.tls = Some(cb);
                    self.restart(&mut out);
                }
            }
            Input::ScramCredentials(creds) => {
                if let Phase::Sasl(sasl) = &mut self.phase {
                    let a = sasl.provide_scram(creds);
                    self.on_sasl(a, &mut out);
                }
            }
            Input::AuthUnavailable => {
                if matches!(self.phase, Phase::Sasl(_)) {
                    // RFC 6120 §6.5.11: a temporary error on the server's side.
                    self.pending_user = None;
                    self.sasl_failure(SaslFailure::TemporaryAuthFailure, None, &mut out);
                }
            }
            Input::PlainVerified(ok) => {
                if let Phase::Sasl(sasl) = &mut self.phase {
                    let a = sasl.plain_result(ok);
                    self.on_sasl(a, &mut out);
                }
            }
            Input::Bound(result) => self.on_bound(result, &mut out),
            Input::Registered(result) => self.on_registered(result, &mut out),
            Input::SmEnabled { id, max } => self.on_sm_enabled(id, max, &mut out),
            Input::SmResumed(result) => self.on_sm_resumed(result, &mut out),
        }
        out
    }

    /// Closes the stream with a stream error (RFC 6120 §4.9.1): our header
    /// first if it was not yet sent, the error, then `</stream:stream>`.
    pub fn fail(&mut self, err: StreamError, out: &mut Vec<Action>) {
        self.stream.fail(err, out);
    }

    /// The stream is being shut down by the server (SIGTERM): a
    /// `system-shutdown` stream error (RFC 6120 §4.9.3.19).
    pub fn shutdown(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        self.stream.shutdown(&mut out);
        out
    }

    /// RFC 6120 §4.3.2: the client's header was accepted and ours is out
    /// (the checks are [`Negotiation`]'s); the features for the current stage.
    fn on_opened(&mut self, out: &mut Vec<Action>) {
        let features = if self.tls.is_none() {
            // §5.3.1: TLS is mandatory here, so it is the only feature.
            self.phase = Phase::PreTls;
            vec![Element::new("starttls", ns::TLS).with_child(Element::new("required", ns::TLS))]
        } else if self.user.is_none() {
            self.phase = Phase::PreAuth;
            let mut v = self.sasl_features();
            // XEP-0077 §8: only under TLS, and only when the policy lets anyone in.
            if self.policy.registration != RegistrationPolicy::Closed {
                v.push(Element::new("register", register::NS_FEATURE));
            }
            v
        } else {
            // §7.2: bind; RFC 3921's session marked optional (RFC 6121
            // Appendix E) for the clients that still ask for it.
            self.phase = Phase::PreBind;
            let mut v = vec![
                Element::new("bind", ns::BIND),
                Element::new("session", ns::SESSION)
                    .with_child(Element::new("optional", ns::SESSION)),
            ];
            v.extend(self.policy.module_features.iter().cloned());
            v
        };
        self.stream.send_features(&features, out);
    }

    /// The mechanisms usable on this stream: `-PLUS` only with channel
    /// binding data from the TLS session.
    fn offered(&self) -> impl Iterator<Item = Mechanism> + '_ {
        let cb = self.tls.as_ref();
        let has_cb =
            cb.is_some_and(|c| c.tls_exporter.is_some() || c.tls_server_end_point.is_some());
        self.policy
            .mechanisms
            .iter()
            .copied()
            .filter(move |m| !m.needs_channel_binding() || has_cb)
    }

    /// RFC 6120 §6.4.1 mechanisms, plus the channel-binding types we
    /// support (XEP-0440) so a client can pick one that works with us.
    fn sasl_features(&self) -> Vec<Element> {
        let mut mechs = Element::new("mechanisms", ns::SASL);
        for m in self.offered() {
            mechs.push_child(Element::new("mechanism", ns::SASL).with_text(m.name()));
        }
        let mut out = vec![mechs];
        if let Some(cb) = &self.tls {
            let mut types = Element::new("sasl-channel-binding", ns::SASL_CB);
            if cb.tls_exporter.is_some() {
                types.push_child(
                    Element::new("channel-binding", ns::SASL_CB).with_attr("type", "tls-exporter"),
                );
            }
            if cb.tls_server_end_point.is_some() {
                types.push_child(
                    Element::new("channel-binding", ns::SASL_CB)
                        .with_attr("type", "tls-server-end-point"),
                );
            }
            if types.children().next().is_some() {
                out.push(types);
            }
        }
        out
    }

    /// A stream restart (RFC 6120 §4.3.3) after TLS or SASL: the client
    /// sends a new header, we answer with a new one.
    fn restart(&mut self, out: &mut Vec<Action>) {
        self.phase = Phase::Header;
        self.stream.restart(out);
    }

    /// A first-level element: a negotiation element or a stanza, depending
    /// on the phase.
    fn on_element(&mut self, el: Element, out: &mut Vec<Action>) {
        match &self.phase {
            Phase::Header => self.fail(StreamError::new(StreamCondition::NotWellFormed), out),
            Phase::PreTls => {
                if el.is("starttls", ns::TLS) {
                    // §5.4.2.3: proceed, then the TLS handshake.
                    out.push(Action::Send(
                        "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>".into(),
                    ));
                    out.push(Action::StartTls);
                    self.phase = Phase::TlsStarting;
                } else if el.is("auth", ns::SASL) {
                    // §6.4.1 and §6.5.3: no SASL before TLS here.
                    self.sasl_failure(SaslFailure::EncryptionRequired, None, out);
                } else {
                    self.not_authorized(out)
                }
            }
            Phase::TlsStarting => self.fail(
                StreamError::new(StreamCondition::PolicyViolation)
                    .with_text("no data may follow <starttls/> before the TLS handshake"),
                out,
            ),
            Phase::PreAuth => {
                if el.is("auth", ns::SASL) {
                    self.on_auth(&el, out);
                } else if el.is("iq", ns::CLIENT) {
                    self.on_preauth_iq(el, out);
                } else if el.is("starttls", ns::TLS) {
                    // TLS is already up; a second STARTTLS is a protocol error.
                    self.fail(
                        StreamError::new(StreamCondition::PolicyViolation)
                            .with_text("TLS is already in place"),
                        out,
                    )
                } else {
                    self.not_authorized(out)
                }
            }
            Phase::Sasl(_) => self.on_sasl_element(&el, out),
            Phase::PreBind if el.ns() == sm::NS => self.on_sm_before_bind(&el, out),
            Phase::PreBind => self.on_bind_request(el, out),
            Phase::Established if el.ns() == sm::NS => self.on_sm(&el, out),
            Phase::Binding(_) | Phase::Resuming => {
                // The client must wait for its bind result (§7.1).
                self.not_authorized(out)
            }
            // XEP-0352 §4.2: CSI nonzas on the established stream; any other element
            // in its namespace is a first-level child we do not support (RFC 6120
            // §4.9.3.22), as `on_stanza` says for every unknown element.
            Phase::Established if el.ns() == crate::features::csi::NS => {
                match crate::features::csi::State::of(&el) {
                    Some(state) => out.push(Action::ClientState(state)),
                    None => self.on_stanza(el, out),
                }
            }
            Phase::Established => self.on_stanza(el, out),
        }
    }

    fn not_authorized(&mut self, out: &mut Vec<Action>) {
        // §4.9.3.12 / §7.1: stanzas before authentication and binding.
        self.fail(
            StreamError::new(StreamCondition::NotAuthorized)
                .with_text("authenticate and bind a resource first"),
            out,
        )
    }

    /// An iq before login: XEP-0077 registration (§3.1) and XEP-0401's `<preauth/>`;
    /// anything else is a stanza before authentication, which closes the stream.
    fn on_preauth_iq(&mut self, el: Element, out: &mut Vec<Action>) {
        let policy = self.policy.registration;
        let ty = el.attr("type");
        let (is_register, is_preauth) = match el.children().next() {
            Some(p) => (
                p.is("query", register::NS_REGISTER),
                p.is("preauth", register::NS_PARS),
            ),
            None => (false, false),
        };
        let is_offered = policy != RegistrationPolicy::Closed;
        if !(is_register || (is_preauth && is_offered)) {
            return self.not_authorized(out);
        }
        // The reply's addresses: the request's `to` as `from`, no `to` (the client has
        // no address yet).
        let mut req = Element::new("iq", ns::CLIENT);
        for key in ["id", "to", "type"] {
            if let Some(v) = el.attr(key) {
                req.set_attr(key, v);
            }
        }
        let reply_error = |err: StanzaError, out: &mut Vec<Action>| {
            if let Some(reply) = err.reply_to(&req) {
                out.push(Action::Send(reply.to_xml_in(ns::CLIENT)));
            }
        };
        if policy == RegistrationPolicy::Closed {
            // §3.1: the host does not register in band.
            return reply_error(StanzaError::new(StanzaCondition::ServiceUnavailable), out);
        }
        let state = self.register.get_or_insert_with(Default::default);
        let payload = el.children().next();
        match (ty, payload) {
            (Some("get"), Some(_)) if is_register => {
                let reply = result_for(&req).with_child(register::form(policy));
                out.push(Action::Send(reply.to_xml_in(ns::CLIENT)));
            }
            (Some("set"), Some(p)) if is_preauth => {
                // XEP-0401 §4: the token, remembered for the registration that follows;
                // checked (and used) only then.
                state.token = p.attr("token").filter(|t| !t.is_empty()).map(str::to_owned);
                out.push(Action::Send(result_for(&req).to_xml_in(ns::CLIENT)));
            }
            (Some("set"), Some(query)) => {
                if state.is_done || state.pending.is_some() {
                    return reply_error(
                        StanzaError::new(StanzaCondition::NotAllowed)
                            .with_text("one account per connection: log in to it"),
                        out,
                    );
                }
                if state.attempts >= MAX_REGISTER_ATTEMPTS {
                    return self.fail(
                        StreamError::new(StreamCondition::PolicyViolation)
                            .with_text("too many registration attempts"),
                        out,
                    );
                }
                state.attempts += 1;
                let request = register::parse_set(query).and_then(|r| match r {
                    register::Request::Remove => {
                        Err(StanzaError::new(StanzaCondition::NotAuthorized)
                            .with_text("log in to remove an account"))
                    }
                    register::Request::Account {
                        username,
                        password,
                        token,
                    } => Ok((register::check_username(&username)?, password, token)),
                });
                match request {
                    Ok((username, password, token)) => {
                        let token = token.or_else(|| state.token.clone());
                        state.pending = Some(req);
                        out.push(Action::Register {
                            username,
                            password,
                            token,
                        });
                    }
                    Err(e) => reply_error(e, out),
                }
            }
            // Results and errors are never answered (RFC 6120 §8.2.3); a request with
            // no payload is malformed.
            (Some("result" | "error"), _) => {}
            _ => reply_error(StanzaError::new(StanzaCondition::BadRequest), out),
        }
    }

    /// The driver's answer to [`Action::Register`].
    fn on_registered(&mut self, result: Result<(), StanzaError>, out: &mut Vec<Action>) {
        let Some(state) = self.register.as_mut() else {
            return;
        };
        let Some(req) = state.pending.take() else {
            return;
        };
        match result {
            Ok(()) => {
                state.is_done = true;
                out.push(Action::Send(result_for(&req).to_xml_in(ns::CLIENT)));
            }
            Err(e) => {
                if let Some(reply) = e.reply_to(&req) {
                    out.push(Action::Send(reply.to_xml_in(ns::CLIENT)));
                }
            }
        }
    }

    /// `<auth mechanism='…'>` (RFC 6120 §6.4.2).
    fn on_auth(&mut self, el: &Element, out: &mut Vec<Action>) {
        let mech = el
            .attr("mechanism")
            .and_then(Mechanism::from_name)
            .filter(|m| self.offered().any(|o| o == *m));
        let Some(mech) = mech else {
            return self.sasl_failure(SaslFailure::InvalidMechanism, None, out);
        };
        let cb = self.tls.clone().unwrap_or_default();
        let mut sasl = SaslServer::new(mech, cb);
        if !self.policy.strict_channel_binding {
            sasl = sasl.accepting_y_flag();
        }
        let mut sasl = Box::new(sasl);
        let text = el.text();
        let action = if text.is_empty() {
            // No initial response: ask for one with an empty challenge (§6.4.2).
            SaslAction::Challenge(Vec::new())
        } else {
            match decode_b64(&text) {
                Some(data) => sasl.step(&data),
                None => SaslAction::Failure(SaslFailure::IncorrectEncoding),
            }
        };
        self.phase = Phase::Sasl(sasl);
        self.on_sasl(action, out);
    }

    /// `<response/>` or `<abort/>` during an exchange (§6.4.3, §6.4.4).
    fn on_sasl_element(&mut self, el: &Element, out: &mut Vec<Action>) {
        let Phase::Sasl(sasl) = &mut self.phase else {
            return;
        };
        let action = if el.is("response", ns::SASL) {
            match decode_b64(&el.text()) {
                Some(data) => sasl.step(&data),
                None => SaslAction::Failure(SaslFailure::IncorrectEncoding),
            }
        } else if el.is("abort", ns::SASL) {
            SaslAction::Failure(SaslFailure::Aborted)
        } else if el.is("auth", ns::SASL) {
            SaslAction::Failure(SaslFailure::MalformedRequest)
        } else {
            return self.not_authorized(out);
        };
        self.on_sasl(action, out);
    }

    fn on_sasl(&mut self, action: SaslAction, out: &mut Vec<Action>) {
        match action {
            SaslAction::Challenge(data) => {
                out.push(Action::Send(sasl_xml("challenge", &data)));
            }
            SaslAction::LookupScram { username, hash } => match jid::normalize_localpart(&username)
            {
                Ok(user) => {
                    self.pending_user = Some(user.clone());
                    out.push(Action::LookupScram {
                        username: user,
                        hash,
                    });
                }
                // A name that cannot be an account is treated as an unknown
                // one, so the exchange looks the same to the client.
                Err(_) => {
                    self.pending_user = None;
                    if let Phase::Sasl(sasl) = &mut self.phase {
                        let a = sasl.provide_scram(None);
                        self.on_sasl(a, out);
                    }
                }
            },
            SaslAction::VerifyPlain {
                username,
                authzid,
                password,
            } => {
                let user = jid::normalize_localpart(&username).ok();
                match user {
                    Some(user) if self.authzid_ok(authzid.as_deref(), &user) => {
                        self.pending_user = Some(user.clone());
                        out.push(Action::VerifyPlain {
                            username: user,
                            password,
                        });
                    }
                    Some(user) => self.sasl_failure(SaslFailure::InvalidAuthzid, Some(user), out),
                    None => self.sasl_failure(SaslFailure::NotAuthorized, None, out),
                }
            }
            SaslAction::Success {
                username,
                authzid,
                additional_data,
            } => {
                let user = self
                    .pending_user
                    .take()
                    .or_else(|| jid::normalize_localpart(&username).ok());
                let Some(user) = user else {
                    return self.sasl_failure(SaslFailure::NotAuthorized, None, out);
                };
                if !self.authzid_ok(authzid.as_deref(), &user) {
                    return self.sasl_failure(SaslFailure::InvalidAuthzid, Some(user), out);
                }
                out.push(Action::Send(sasl_xml(
                    "success",
                    additional_data.as_deref().unwrap_or(&[]),
                )));
                out.push(Action::Authenticated {
                    username: user.clone(),
                });
                self.user = Some(user);
                self.restart(out);
            }
            SaslAction::Failure(f) => {
                let user = self.pending_user.take();
                self.sasl_failure(f, user, out);
            }
        }
    }

    /// An authorization identity is accepted only when it names the
    /// authenticated account itself (RFC 6120 §6.3.8): hearth does not let
    /// one account act as another.
    fn authzid_ok(&self, authzid: Option<&str>, user: &str) -> bool {
        match authzid {
            None | Some("") => true,
            Some(a) => jid::BareJid::new(Some(user), &self.policy.domain)
                .ok()
                .zip(jid::Jid::parse(a).ok())
                .is_some_and(|(mine, theirs)| theirs.is_bare() && theirs.bare() == mine),
        }
    }

    /// `<failure/>` (§6.4.5); after too many, the stream is closed.
    fn sasl_failure(&mut self, f: SaslFailure, username: Option<String>, out: &mut Vec<Action>) {
        out.push(Action::Send(format!(
            "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><{}/></failure>",
            f.condition()
        )));
        // Only a wrong password or identity is a guess worth throttling; a
        // mechanism or channel-binding mismatch is a client finding its way.
        if matches!(f, SaslFailure::NotAuthorized | SaslFailure::InvalidAuthzid) {
            out.push(Action::AuthFailed { username });
        }
        if f != SaslFailure::Aborted && f != SaslFailure::EncryptionRequired {
            self.auth_failures = self.auth_failures.saturating_add(1);
        }
        if self.tls.is_some() {
            self.phase = Phase::PreAuth;
        }
        if self.auth_failures >= self.policy.max_auth_failures {
            self.fail(
                StreamError::new(StreamCondition::PolicyViolation)
                    .with_text("too many failed authentication attempts"),
                out,
            );
        }
    }

    /// Resource binding (RFC 6120 §7.6): an iq set with `<bind/>`.
    fn on_bind_request(&mut self, el: Element, out: &mut Vec<Action>) {
        let is_bind = el.is("iq", ns::CLIENT)
            && el.attr("type") == Some("set")
            && el.get_child("bind", ns::BIND).is_some();
        let Some(id) = el.attr("id").filter(|_| is_bind).map(str::to_owned) else {
            return self.not_authorized(out);
        };
        let resource = el
            .get_child("bind", ns::BIND)
            .and_then(|b| b.get_child("resource", ns::BIND))
            .map(|r| r.text())
            .filter(|r| !r.trim().is_empty());
        let resource = match resource.map(|r| jid::normalize_resource(&r)) {
            None => None,
            Some(Ok(r)) => Some(r),
            Some(Err(e)) => {
                // §7.7.2.1: a resource we cannot process.
                let err = StanzaError::new(StanzaCondition::BadRequest)
                    .with_text(format!("bad resource: {e}"));
                if let Some(reply) = err.reply_to(&el) {
                    out.push(Action::Send(reply.to_xml_in(ns::CLIENT)));
                }
                return;
            }
        };
        self.phase = Phase::Binding(id);
        out.push(Action::Bind { resource });
    }

    fn on_bound(&mut self, result: Result<FullJid, StanzaError>, out: &mut Vec<Action>) {
        let Phase::Binding(id) = &self.phase else {
            return;
        };
        let id = id.clone();
        match result {
            Ok(full) => {
                let reply = Element::new("iq", ns::CLIENT)
                    .with_attr("type", "result")
                    .with_attr("id", id)
                    .with_child(
                        Element::new("bind", ns::BIND)
                            .with_child(Element::new("jid", ns::BIND).with_text(full.to_string())),
                    );
                out.push(Action::Send(reply.to_xml_in(ns::CLIENT)));
                self.jid = Some(full);
                self.phase = Phase::Established;
            }
            Err(err) => {
                let req = Element::new("iq", ns::CLIENT)
                    .with_attr("type", "set")
                    .with_attr("id", id);
                if let Some(reply) = err.reply_to(&req) {
                    out.push(Action::Send(reply.to_xml_in(ns::CLIENT)));
                }
                self.phase = Phase::PreBind;
            }
        }
    }

    /// XEP-0198 before binding: `<resume/>` (§5) takes the place of binding; anything
    /// else of the protocol is premature (§3: management is enabled after binding).
    fn on_sm_before_bind(&mut self, el: &Element, out: &mut Vec<Action>) {
        if !self.policy.stream_management {
            return self.not_authorized(out);
        }
        if !el.is("resume", sm::NS) {
            out.push(Action::Send(sm::failed_xml("unexpected-request", None)));
            return;
        }
        match sm::parse_resume(el) {
            Some((previd, h)) => {
                self.phase = Phase::Resuming;
                out.push(Action::SmResume { previd, h });
            }
            None => out.push(Action::Send(sm::failed_xml("bad-request", None))),
        }
    }

    /// XEP-0198 on a bound stream: `<enable/>` (§3), `<r/>` and `<a/>` (§4).
    fn on_sm(&mut self, el: &Element, out: &mut Vec<Action>) {
        if !self.policy.stream_management {
            return self.fail(
                StreamError::new(StreamCondition::UnsupportedStanzaType)
                    .with_text("stream management is not offered"),
                out,
            );
        }
        match (el.name(), self.sm_handled) {
            ("enable", None) => out.push(Action::SmEnable(sm::Enable::parse(el))),
            // §3: once per stream; §5: resumption is for a new stream before binding.
            ("enable" | "resume", _) => {
                out.push(Action::Send(sm::failed_xml("unexpected-request", None)))
            }
            ("r", Some(h)) => out.push(Action::SmAnswer(h)),
            ("a", Some(_)) => match el.attr("h").and_then(|h| h.parse::<u32>().ok()) {
                Some(h) => out.push(Action::SmAck(h)),
                None => self.fail(
                    StreamError::new(StreamCondition::InvalidXml)
                        .with_text("<a/> needs h, a 32-bit unsigned number"),
                    out,
                ),
            },
            // Acks and requests before management was enabled.
            ("r" | "a", None) => out.push(Action::Send(sm::failed_xml("unexpected-request", None))),
            _ => self.fail(
                StreamError::new(StreamCondition::UnsupportedStanzaType)
                    .with_text("unknown stream management element"),
                out,
            ),
        }
    }

    /// The driver's answer to [`Action::SmEnable`] (XEP-0198 §3): `<enabled/>`, and
    /// the client's stanzas are counted from now.
    fn on_sm_enabled(&mut self, id: Option<String>, max: Option<u32>, out: &mut Vec<Action>) {
        if !matches!(self.phase, Phase::Established) || self.sm_handled.is_some() {
            return;
        }
        let mut enabled = Element::new("enabled", sm::NS);
        if let Some(id) = id {
            enabled.set_attr("id", id);
            enabled.set_attr("resume", "true");
            if let Some(max) = max {
                enabled.set_attr("max", max.to_string());
            }
        }
        out.push(Action::Send(enabled.to_xml_in(ns::CLIENT)));
        self.sm_handled = Some(0);
    }

    /// The driver's answer to [`Action::SmResume`] (XEP-0198 §5).
    fn on_sm_resumed(&mut self, result: Result<Resumed, ResumeFailed>, out: &mut Vec<Action>) {
        if !matches!(self.phase, Phase::Resuming) {
            return;
        }
        match result {
            Ok(r) => {
                let resumed = Element::new("resumed", sm::NS)
                    .with_attr("previd", r.previd)
                    .with_attr("h", r.handled.to_string());
                out.push(Action::Send(resumed.to_xml_in(ns::CLIENT)));
                self.jid = Some(r.jid);
                self.sm_handled = Some(r.handled);
                self.phase = Phase::Established;
                out.push(Action::SmResend);
            }
            Err(f) => {
                out.push(Action::Send(sm::failed_xml(f.condition, f.h)));
                self.phase = Phase::PreBind;
            }
        }
    }

    /// A stanza on an established stream: validated, `from` stamped with
    /// the session's full JID (RFC 6120 §8.1.2.1 — whatever the client put
    /// there never passes through), then routed.
    fn on_stanza(&mut self, mut el: Element, out: &mut Vec<Action>) {
        let Some(jid) = &self.jid else { return };
        // XEP-0198 §4: every stanza received counts as handled once it is dealt with:
        // routed (the driver routes it before reading the next element), answered, or
        // refused with an error.
        if let Some(h) = &mut self.sm_handled {
            *h = h.wrapping_add(1);
        }
        el.set_attr("from", jid.to_string());
        match Stanza::from_client(el) {
            Ok(stanza) => {
                if self.is_session_request(&stanza) {
                    // RFC 3921 §3 session establishment is a no-op today
                    // (RFC 6121 Appendix E): just say yes, from whom it was asked
                    // (the domain, or no `from` when it had no `to`, RFC 6120 §8.1.2.1).
                    let reply = stanza.iq_result(None);
                    out.push(Action::Send(reply.to_xml_in(ns::CLIENT)));
                } else {
                    out.push(Action::Route(stanza));
                }
            }
            Err(Rejected::Stream(cond)) => self.fail(
                StreamError::new(cond).with_text("only message, presence and iq may be sent here"),
                out,
            ),
            Err(Rejected::Stanza(err, el)) => {
                // The reply goes back to this session; its 'from' is the
                // (possibly malformed) 'to' the client gave, so drop it.
                if let Some(mut reply) = err.reply_to(&el) {
                    reply.remove_attr("from");
                    out.push(Action::Send(reply.to_xml_in(ns::CLIENT)));
                }
            }
        }
    }

    fn is_session_request(&self, s: &Stanza) -> bool {
        s.el.name() == "iq"
            && s.el.attr("type") == Some("set")
            && s.el.has_child("session", ns::SESSION)
            && s.to.as_ref().is_none_or(|to| {
                to.local().is_none()
                    && to.resource().is_none()
                    && to.domain() == &*self.policy.domain
            })
    }
}

/// An empty iq result for a request before login: its id, from whom it was asked.
fn result_for(req: &Element) -> Element {
    let mut r = Element::new("iq", ns::CLIENT).with_attr("type", "result");
    if let Some(id) = req.attr("id") {
        r.set_attr("id", id);
    }
    if let Some(to) = req.attr("to") {
        r.set_attr("from", to);
    }
    r
}

/// A SASL element carrying base64 data; with no data the element is empty
/// (RFC 6120 §6.4.3, §6.4.6).
fn sasl_xml(name: &str, data: &[u8]) -> String {
    if data.is_empty() {
        format!("<{name} xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
    } else {
        let body = B64.encode(data);
        format!("<{name} xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{body}</{name}>")
    }
}

/// Base64 from a SASL element: `=` is the empty response (§6.4.2);
/// whitespace is tolerated; anything else invalid is `None`.
fn decode_b64(text: &str) -> Option<Vec<u8>> {
    let t: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if t == "=" {
        return Some(Vec::new());
    }
    B64.decode(t.as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{Framer, Limits};
    use hmac::{KeyInit, Mac};

    const DOMAIN: &str = "home.local";

    fn policy() -> Arc<C2sPolicy> {
        Arc::new(C2sPolicy {
            domain: DOMAIN.into(),
            mechanisms: Mechanism::ALL.to_vec(),
            max_auth_failures: 3,
            strict_channel_binding: true,
            module_features: crate::features::Registry::standard().stream_features(),
            registration: RegistrationPolicy::Open,
            stream_management: true,
        })
    }

    /// A stream under test: the machine plus a framer for the client's XML.
    struct T {
        c2s: C2s,
        framer: Framer,
    }

    impl T {
        fn plain() -> T {
            T {
                c2s: C2s::new(policy(), None),
                framer: Framer::new(Limits::default()),
            }
        }

        fn tls(cb: ChannelBindings) -> T {
            T {
                c2s: C2s::new(policy(), Some(cb)),
                framer: Framer::new(Limits::default()),
            }
        }

        /// Feeds client XML; returns every action it caused.
        fn send(&mut self, xml: &str) -> Vec<Action> {
            self.framer.feed(xml.as_bytes()).unwrap();
            let mut out = Vec::new();
            while let Some(ev) = self.framer.next_event().unwrap() {
                let actions = self.c2s.handle(Input::Xml(ev));
                if actions.iter().any(|a| matches!(a, Action::ResetFramer)) {
                    self.framer.reset();
                }
                out.extend(actions);
            }
            out
        }

        fn input(&mut self, i: Input) -> Vec<Action> {
            let actions = self.c2s.handle(i);
            if actions.iter().any(|a| matches!(a, Action::ResetFramer)) {
                self.framer.reset();
            }
            actions
        }

        fn header(&mut self) -> String {
            sent(&self.send(HEADER))
        }
    }

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' to='home.local' version='1.0'>";

    /// Everything the actions write, concatenated.
    fn sent(actions: &[Action]) -> String {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(s) => Some(s.as_str()),
                _ => None,
            })
            .collect()
    }

    fn closes(actions: &[Action]) -> bool {
        matches!(actions.last(), Some(Action::Close))
    }

    fn cb() -> ChannelBindings {
        ChannelBindings {
            tls_exporter: Some(vec![7; 32]),
            tls_server_end_point: Some(vec![9; 32]),
        }
    }

    /// A stream authenticated (PLAIN) and ready to bind.
    fn authenticated() -> T {
        let mut t = T::tls(cb());
        t.header();
        let a = t.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth>");
        assert!(
            matches!(&a[..], [Action::VerifyPlain { username, password }] if username == "alice" && password == "secret")
        );
        let a = t.input(Input::PlainVerified(true));
        assert!(sent(&a).contains("<success"));
        assert!(
            a.iter()
                .any(|x| matches!(x, Action::Authenticated { username } if username == "alice"))
        );
        t
    }

    fn established() -> T {
        let mut t = authenticated();
        let h = t.header();
        assert!(h.contains("urn:ietf:params:xml:ns:xmpp-bind"), "{h}");
        let a = t.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>Phone</resource></bind></iq>");
        assert!(matches!(&a[..], [Action::Bind { resource: Some(r) }] if r == "Phone"));
        let full = FullJid::parse("alice@home.local/Phone").unwrap();
        let a = t.input(Input::Bound(Ok(full)));
        assert!(
            sent(&a).contains("<jid>alice@home.local/Phone</jid>"),
            "{}",
            sent(&a)
        );
        assert!(t.c2s.is_established());
        t
    }

    #[test]
    fn plain_stream_offers_only_required_starttls() {
        let mut t = T::plain();
        let h = t.header();
        assert!(h.starts_with("<?xml version='1.0'?><stream:stream xmlns='jabber:client'"));
        assert!(h.contains("from='home.local'"));
        assert!(h.contains(
            "<starttls xmlns=\"urn:ietf:params:xml:ns:xmpp-tls\"><required/></starttls>"
        ));
        assert!(!h.contains("mechanisms"));
    }

    #[test]
    fn auth_before_tls_is_refused_with_encryption_required() {
        let mut t = T::plain();
        t.header();
        let a = t.send(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>",
        );
        assert!(sent(&a).contains("<encryption-required/>"));
        assert!(!a.iter().any(|x| matches!(x, Action::VerifyPlain { .. })));
    }

    #[test]
    fn stanza_before_auth_closes_with_not_authorized() {
        let mut t = T::plain();
        t.header();
        let a = t.send("<message to='bob@home.local'><body>hi</body></message>");
        assert!(
            sent(&a).contains("<not-authorized xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/>")
        );
        assert!(sent(&a).ends_with("</stream:stream>"));
        assert!(closes(&a));
    }

    #[test]
    fn starttls_then_restart_offers_plus_mechanisms() {
        let mut t = T::plain();
        t.header();
        let a = t.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        assert!(sent(&a).contains("<proceed"));
        assert!(matches!(a.last(), Some(Action::StartTls)));
        let a = t.input(Input::TlsEstablished(cb()));
        assert!(matches!(&a[..], [Action::ResetFramer]));
        let h = t.header();
        for m in [
            "SCRAM-SHA-256-PLUS",
            "SCRAM-SHA-1-PLUS",
            "SCRAM-SHA-256",
            "SCRAM-SHA-1",
            "PLAIN",
        ] {
            assert!(
                h.contains(&format!("<mechanism>{m}</mechanism>")),
                "{m} missing in {h}"
            );
        }
        assert!(h.contains("type=\"tls-exporter\""));
    }

    fn with_registration(registration: RegistrationPolicy) -> T {
        let mut p = (*policy()).clone();
        p.registration = registration;
        T {
            c2s: C2s::new(Arc::new(p), Some(cb())),
            framer: Framer::new(Limits::default()),
        }
    }

    const REGISTER: &str = "<iq type='set' id='r1' to='home.local'><query xmlns='jabber:iq:register'>\
        <username>Alice</username><password>pw</password></query></iq>";

    /// XEP-0077 §8: the feature only under TLS; §3.1 the form, the account asked for,
    /// one per stream, then the usual login.
    #[test]
    fn registration_before_login() {
        let mut plain = T::plain();
        assert!(!plain.header().contains("iq-register"));
        let a = plain.send(REGISTER);
        assert!(closes(&a), "no registration before TLS");
        assert!(!a.iter().any(|x| matches!(x, Action::Register { .. })));

        let mut t = with_registration(RegistrationPolicy::Invite);
        let h = t.header();
        assert!(
            h.contains("<register xmlns=\"http://jabber.org/features/iq-register\"/>"),
            "{h}"
        );
        let a = t.send("<iq type='get' id='f'><query xmlns='jabber:iq:register'/></iq>");
        let form = sent(&a);
        assert!(form.starts_with("<iq type=\"result\" id=\"f\">"), "{form}");
        assert!(form.contains("var=\"token\""), "{form}");
        // A token sent ahead (XEP-0401) goes with the registration.
        let a = t.send("<iq type='set' id='t'><preauth xmlns='urn:xmpp:pars:0' token='tok'/></iq>");
        assert!(sent(&a).contains("type=\"result\""));
        let a = t.send(REGISTER);
        assert!(
            matches!(&a[..], [Action::Register { username, password, token: Some(tok) }]
                if username == "alice" && password == "pw" && tok == "tok"),
            "{a:?}"
        );
        let a = t.input(Input::Registered(Ok(())));
        assert_eq!(
            sent(&a),
            "<iq type=\"result\" id=\"r1\" from=\"home.local\"/>"
        );
        // One per stream.
        let a = t.send(REGISTER);
        assert!(sent(&a).contains("<not-allowed"), "{}", sent(&a));
        assert!(!a.iter().any(|x| matches!(x, Action::Register { .. })));
        // Then the usual login.
        let a = t.send(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHB3</auth>",
        );
        assert!(matches!(&a[..], [Action::VerifyPlain { username, .. }] if username == "alice"));
    }

    #[test]
    fn registration_refusals() {
        let mut t = with_registration(RegistrationPolicy::Open);
        t.header();
        let a = t.send("<iq type='set' id='r'><query xmlns='jabber:iq:register'><username>Admin</username><password>x</password></query></iq>");
        assert!(sent(&a).contains("<not-acceptable"), "{}", sent(&a));
        let a = t
            .send("<iq type='set' id='r'><query xmlns='jabber:iq:register'><remove/></query></iq>");
        assert!(sent(&a).contains("<not-authorized"), "{}", sent(&a));
        let a = t.send(REGISTER);
        assert!(matches!(&a[..], [Action::Register { .. }]));
        let a = t.input(Input::Registered(Err(StanzaError::new(
            StanzaCondition::Conflict,
        ))));
        assert!(sent(&a).contains("<conflict"), "{}", sent(&a));
        // A refused name may be followed by another, up to a bound.
        for _ in 0..2 {
            let a = t.send(REGISTER);
            t.input(Input::Registered(Err(StanzaError::new(
                StanzaCondition::Conflict,
            ))));
            assert!(matches!(&a[..], [Action::Register { .. }]));
        }
        let a = t.send(REGISTER);
        assert!(sent(&a).contains("policy-violation"), "{}", sent(&a));
        assert!(closes(&a));

        // Closed: no feature, and §3.1's answer for a host without registration.
        let mut t = with_registration(RegistrationPolicy::Closed);
        assert!(!t.header().contains("iq-register"));
        let a = t.send(REGISTER);
        assert!(sent(&a).contains("<service-unavailable"), "{}", sent(&a));
        let a = t.send("<iq type='set' id='t'><preauth xmlns='urn:xmpp:pars:0' token='tok'/></iq>");
        assert!(closes(&a));
    }

    #[test]
    fn without_channel_binding_no_plus_is_offered_or_accepted() {
        let mut t = T::tls(ChannelBindings {
            tls_exporter: None,
            tls_server_end_point: None,
        });
        let h = t.header();
        assert!(!h.contains("PLUS"), "{h}");
        let a = t.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1-PLUS'>cD10bHMtZXhwb3J0ZXIsLG49YSxyPWFiYw==</auth>");
        assert!(sent(&a).contains("<invalid-mechanism/>"));
    }

    #[test]
    fn wrong_host_and_old_version_get_stream_errors_after_our_header() {
        let mut t = T::plain();
        let a = t.send("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='elsewhere.example' version='1.0'>");
        let s = sent(&a);
        assert!(s.starts_with("<?xml"), "{s}");
        assert!(s.contains("<host-unknown"));
        assert!(closes(&a));

        let mut t = T::plain();
        let a = t.send("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='home.local'>");
        assert!(sent(&a).contains("<unsupported-version"));

        let mut t = T::plain();
        let a = t.send("<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='home.local' version='1.0'>");
        assert!(sent(&a).contains("<invalid-namespace"));
    }

    #[test]
    fn unknown_mechanism_and_bad_base64() {
        let mut t = T::tls(cb());
        t.header();
        let a = t.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='DIGEST-MD5'/>");
        assert!(sent(&a).contains("<invalid-mechanism/>"));
        let a =
            t.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>!!!</auth>");
        assert!(sent(&a).contains("<incorrect-encoding/>"));
    }

    #[test]
    fn repeated_failures_close_the_stream() {
        let mut t = T::tls(cb());
        t.header();
        for i in 0..3 {
            let a = t.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHdyb25n</auth>");
            assert!(matches!(&a[..], [Action::VerifyPlain { .. }]));
            let a = t.input(Input::PlainVerified(false));
            assert!(sent(&a).contains("<not-authorized/>"));
            assert!(
                a.iter()
                    .any(|x| matches!(x, Action::AuthFailed { username: Some(u) } if u == "alice"))
            );
            assert_eq!(closes(&a), i == 2, "attempt {i}");
        }
        assert!(
            t.send(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>"
            )
            .is_empty()
        );
    }

    #[test]
    fn authzid_of_another_account_is_refused() {
        let mut t = T::tls(cb());
        t.header();
        // authzid bob@home.local, authcid alice.
        let a = t.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>Ym9iQGhvbWUubG9jYWwAYWxpY2UAc2VjcmV0</auth>");
        assert!(sent(&a).contains("<invalid-authzid/>"), "{}", sent(&a));
        // Her own bare JID is fine.
        let a = t.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>YWxpY2VAaG9tZS5sb2NhbABhbGljZQBzZWNyZXQ=</auth>");
        assert!(matches!(&a[..], [Action::VerifyPlain { .. }]));
    }

    #[test]
    fn storage_failure_is_a_temporary_auth_failure() {
        let mut t = T::tls(cb());
        t.header();
        let a = t.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth>");
        assert!(matches!(&a[..], [Action::VerifyPlain { .. }]));
        let a = t.input(Input::AuthUnavailable);
        assert!(
            sent(&a).contains("<temporary-auth-failure/>"),
            "{}",
            sent(&a)
        );
        assert!(!a.iter().any(|x| matches!(x, Action::AuthFailed { .. })));
        // The client may try again on the same stream.
        let a = t.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth>");
        assert!(matches!(&a[..], [Action::VerifyPlain { .. }]));
    }

    #[test]
    fn abort_gives_aborted_failure() {
        let mut t = T::tls(cb());
        t.header();
        let a = t.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'/>");
        assert_eq!(
            sent(&a),
            "<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"
        );
        let a = t.send("<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
        assert!(sent(&a).contains("<aborted/>"));
    }

    /// SCRAM-SHA-256-PLUS through the state machine, with a client written
    /// from RFC 5802 §3 and channel binding data from the "TLS layer".
    #[test]
    fn scram_sha256_plus_with_tls_exporter() {
        type H = hmac::Hmac<sha2::Sha256>;
        fn hmac(k: &[u8], m: &[u8]) -> Vec<u8> {
            let mut mac = <H as KeyInit>::new_from_slice(k).unwrap();
            mac.update(m);
            mac.finalize().into_bytes().to_vec()
        }
        let mut t = T::tls(cb());
        t.header();
        let gs2 = "p=tls-exporter,,";
        let first_bare = "n=alice,r=clientnonce123";
        let a = t.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256-PLUS'>{}</auth>",
            B64.encode(format!("{gs2}{first_bare}"))
        ));
        assert!(
            matches!(&a[..], [Action::LookupScram { username, hash: ScramHash::Sha256 }] if username == "alice")
        );
        let creds =
            ScramCredentials::derive(ScramHash::Sha256, "pencil", b"saltsaltsalt", 4096).unwrap();
        let a = t.input(Input::ScramCredentials(Some(creds)));
        let challenge = sent(&a);
        let inner = challenge
            .split('>')
            .nth(1)
            .unwrap()
            .split('<')
            .next()
            .unwrap();
        let server_first = String::from_utf8(B64.decode(inner).unwrap()).unwrap();
        let nonce = server_first
            .split(',')
            .find_map(|p| p.strip_prefix("r="))
            .unwrap();
        assert!(nonce.starts_with("clientnonce123"));
        let mut cbind = gs2.as_bytes().to_vec();
        cbind.extend_from_slice(&[7; 32]);
        let without_proof = format!("c={},r={nonce}", B64.encode(&cbind));
        let auth_message = format!("{first_bare},{server_first},{without_proof}");
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(b"pencil", b"saltsaltsalt", 4096, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key = <sha2::Sha256 as sha2::Digest>::digest(&client_key);
        let sig = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        let final_msg = format!("{without_proof},p={}", B64.encode(proof));
        let a = t.send(&format!(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
            B64.encode(final_msg)
        ));
        let s = sent(&a);
        assert!(s.starts_with("<success"), "{s}");
        let server_key = hmac(&salted, b"Server Key");
        let v = B64.encode(hmac(&server_key, auth_message.as_bytes()));
        let inner = s.split('>').nth(1).unwrap().split('<').next().unwrap();
        assert_eq!(
            String::from_utf8(B64.decode(inner).unwrap()).unwrap(),
            format!("v={v}")
        );
        assert!(
            a.iter()
                .any(|x| matches!(x, Action::Authenticated { username } if username == "alice"))
        );
    }

    #[test]
    fn stanzas_before_bind_close_with_not_authorized() {
        let mut t = authenticated();
        t.header();
        let a = t.send("<presence/>");
        assert!(sent(&a).contains("<not-authorized"));
        assert!(closes(&a));
    }

    #[test]
    fn bind_with_a_bad_resource_is_bad_request() {
        let mut t = authenticated();
        t.header();
        let long = "r".repeat(1100);
        let a = t.send(&format!("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{long}</resource></bind></iq>"));
        assert!(sent(&a).contains("<bad-request"), "{}", sent(&a));
        // Binding with no resource asks the server for one.
        let a =
            t.send("<iq type='set' id='b2'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>");
        assert!(matches!(&a[..], [Action::Bind { resource: None }]));
    }

    #[test]
    fn spoofed_from_is_replaced_with_the_session_jid() {
        let mut t = established();
        let a = t.send("<message from='bob@home.local/evil' to='carol@home.local' type='chat'><body>x</body></message>");
        let [Action::Route(s)] = &a[..] else {
            panic!("{a:?}")
        };
        assert_eq!(s.el.attr("from"), Some("alice@home.local/Phone"));
        assert_eq!(
            s.to.as_ref().map(|j| j.to_string()).as_deref(),
            Some("carol@home.local")
        );
    }

    #[test]
    fn malformed_stanzas_get_stanza_or_stream_errors() {
        let mut t = established();
        let a = t.send("<iq type='get'><ping xmlns='urn:xmpp:ping'/></iq>");
        assert!(sent(&a).contains("<bad-request"), "{}", sent(&a));
        let a = t.send("<message to='a@b@c'><body/></message>");
        assert!(sent(&a).contains("<jid-malformed"), "{}", sent(&a));
        let a = t.send("<iq type='result' id='x'/>");
        assert!(matches!(&a[..], [Action::Route(_)]));
        let a = t.send("<foo xmlns='urn:example'/>");
        assert!(sent(&a).contains("<unsupported-stanza-type"));
        assert!(closes(&a));
    }

    #[test]
    fn csi_nonzas_become_actions_and_others_in_their_namespace_close() {
        use crate::features::csi::State;
        let mut t = established();
        let a = t.send("<inactive xmlns='urn:xmpp:csi:0'/>");
        assert!(
            matches!(&a[..], [Action::ClientState(State::Inactive)]),
            "{a:?}"
        );
        let a = t.send("<active xmlns='urn:xmpp:csi:0'/>");
        assert!(
            matches!(&a[..], [Action::ClientState(State::Active)]),
            "{a:?}"
        );
        assert!(t.c2s.is_established());
        // `<csi/>` is the server's feature, not something a client says.
        let a = t.send("<csi xmlns='urn:xmpp:csi:0'/>");
        assert!(sent(&a).contains("<unsupported-stanza-type"), "{a:?}");
        assert!(closes(&a));
    }

    #[test]
    fn legacy_session_is_acknowledged() {
        let mut t = established();
        let a = t.send("<iq type='set' id='s1' to='home.local'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>");
        // From whom it was asked (RFC 6120 §8.1.2.1): the domain here, nobody below.
        assert_eq!(
            sent(&a),
            "<iq type=\"result\" id=\"s1\" from=\"home.local\" to=\"alice@home.local/Phone\"/>"
        );
        let a = t.send(
            "<iq type='set' id='s2'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>",
        );
        assert_eq!(
            sent(&a),
            "<iq type=\"result\" id=\"s2\" to=\"alice@home.local/Phone\"/>"
        );
    }

    #[test]
    fn client_close_is_answered_and_shutdown_says_system_shutdown() {
        let mut t = established();
        let a = t.send("</stream:stream>");
        assert_eq!(sent(&a), "</stream:stream>");
        assert!(closes(&a));

        let mut t = established();
        let a = t.c2s.shutdown();
        assert!(sent(&a).contains("<system-shutdown"));
        assert!(closes(&a));
    }
}
