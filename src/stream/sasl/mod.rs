//! RFC 6120 §6: SASL negotiation, server side, as a sans-IO state machine.
//!
//! The c2s stream feeds the decoded payload of each `<auth/>` and `<response/>` into a
//! [`SaslServer`] and acts on the [`SaslAction`] it gets back. The machine never touches
//! storage or sockets: when it needs a user's credentials it asks for them
//! ([`SaslAction::LookupScram`], [`SaslAction::VerifyPlain`]) and the caller answers with
//! [`SaslServer::provide_scram`] or [`SaslServer::plain_result`]. Base64 (RFC 6120 §6.4.2)
//! is the caller's job too: this module sees and produces raw bytes.
//!
//! Mechanisms: SCRAM-SHA-1 and SCRAM-SHA-256 with their `-PLUS` variants (RFC 5802,
//! RFC 7677, channel binding per RFC 9266 and RFC 5929) in `scram`, PLAIN (RFC 4616) in
//! `plain`. `<abort/>` is handled by the caller (it answers `<failure><aborted/>`,
//! [`SaslFailure::Aborted`]) and drops the machine.
//!
//! Nothing here logs: the payloads carry passwords and proofs.

mod plain;
mod scram;

use std::fmt;

use precis_profiles::OpaqueString;
use precis_profiles::precis_core::profile::PrecisFastInvocation;

pub use scram::{DEFAULT_ITERATIONS, SALT_LEN, ScramCredentials, ScramHash, random_salt};

/// The largest SASL message accepted from a client, in decoded bytes. A SCRAM
/// client-final with a SHA-256 proof and tls-exporter binding is ~150 bytes, so this
/// bounds work and memory without refusing any honest client.
pub const MAX_CLIENT_MESSAGE: usize = 4096;

/// A SASL mechanism hearth implements (RFC 6120 §6.3.3 `<mechanism/>` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// RFC 7677 with channel binding.
    ScramSha256Plus,
    /// RFC 7677.
    ScramSha256,
    /// RFC 5802 with channel binding.
    ScramSha1Plus,
    /// RFC 5802.
    ScramSha1,
    /// RFC 4616; only to be offered inside TLS (RFC 6120 §6.4.1 security notes).
    Plain,
}

impl Mechanism {
    /// Every mechanism, strongest first: the order to advertise them in (RFC 6120 §6.3.3
    /// lets the server order them by preference).
    pub const ALL: [Mechanism; 5] = [
        Mechanism::ScramSha256Plus,
        Mechanism::ScramSha256,
        Mechanism::ScramSha1Plus,
        Mechanism::ScramSha1,
        Mechanism::Plain,
    ];

    /// The IANA-registered mechanism name.
    pub fn name(&self) -> &'static str {
        match self {
            Mechanism::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha1Plus => "SCRAM-SHA-1-PLUS",
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::Plain => "PLAIN",
        }
    }

    /// Parses the `mechanism` attribute of `<auth/>`. Names are matched exactly: RFC 4422
    /// §3.1 makes them upper case, and an unknown one is `<invalid-mechanism/>`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether this is a `-PLUS` mechanism (RFC 5802 §4), which needs the TLS channel
    /// binding data of the session.
    pub fn needs_channel_binding(&self) -> bool {
        matches!(self, Mechanism::ScramSha256Plus | Mechanism::ScramSha1Plus)
    }

    /// The SCRAM hash, or `None` for PLAIN.
    pub fn scram_hash(&self) -> Option<ScramHash> {
        match self {
            Mechanism::ScramSha256Plus | Mechanism::ScramSha256 => Some(ScramHash::Sha256),
            Mechanism::ScramSha1Plus | Mechanism::ScramSha1 => Some(ScramHash::Sha1),
            Mechanism::Plain => None,
        }
    }

    /// Whether this mechanism can be offered on a session with these bindings: `-PLUS`
    /// needs at least one binding. The c2s stream must offer the `-PLUS` mechanisms
    /// exactly when this says so, because the downgrade check of RFC 5802 §6 (a client
    /// flag `y`) assumes that what [`ChannelBindings`] holds was advertised.
    pub fn is_offered_with(&self, cb: &ChannelBindings) -> bool {
        !self.needs_channel_binding() || cb.is_available()
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The channel-binding data of the TLS session, taken by the caller from the TLS layer,
/// never from the client.
///
/// - `tls_exporter` (RFC 9266): the 32-byte TLS exporter value for the label
///   `EXPORTER-Channel-Binding` with an empty context. Only sound on TLS 1.3 (or TLS 1.2
///   with extended master secret); leave it `None` otherwise.
/// - `tls_server_end_point` (RFC 5929 §4): the hash of the server certificate.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ChannelBindings {
    pub tls_exporter: Option<Vec<u8>>,
    pub tls_server_end_point: Option<Vec<u8>>,
}

impl ChannelBindings {
    /// No channel binding: a session without TLS, or one whose TLS layer cannot give any.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether any binding is available, i.e. whether `-PLUS` mechanisms are offered.
    pub fn is_available(&self) -> bool {
        self.tls_exporter.is_some() || self.tls_server_end_point.is_some()
    }

    /// The channel-binding type names available, for the XEP-0440 `<sasl-channel-binding/>`
    /// stream feature.
    pub fn types(&self) -> impl Iterator<Item = &'static str> + '_ {
        [
            ("tls-exporter", &self.tls_exporter),
            ("tls-server-end-point", &self.tls_server_end_point),
        ]
        .into_iter()
        .filter(|(_, data)| data.is_some())
        .map(|(name, _)| name)
    }

    /// The data for the channel-binding type `name`, if we have it.
    fn get(&self, name: &str) -> Option<&[u8]> {
        match name {
            "tls-exporter" => self.tls_exporter.as_deref(),
            "tls-server-end-point" => self.tls_server_end_point.as_deref(),
            _ => None,
        }
    }
}

impl fmt::Debug for ChannelBindings {
    // The exporter value is derived from the session secrets: show only what is present.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.types()).finish()
    }
}

/// A SASL failure condition (RFC 6120 §6.5), sent as `<failure><condition/></failure>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslFailure {
    /// §6.5.1: the client sent `<abort/>`.
    Aborted,
    /// §6.5.2: the account is disabled.
    AccountDisabled,
    /// §6.5.3: the credentials have expired.
    CredentialsExpired,
    /// §6.5.4: the mechanism needs TLS, and the stream has none.
    EncryptionRequired,
    /// §6.5.5: the data was not valid base64 or not valid UTF-8.
    IncorrectEncoding,
    /// §6.5.6: the authorization identity is not one the user may act as.
    InvalidAuthzid,
    /// §6.5.7: the mechanism is not offered.
    InvalidMechanism,
    /// §6.5.8: the request is malformed for the mechanism or out of sequence.
    MalformedRequest,
    /// §6.5.9: the mechanism is weaker than policy allows for this account.
    MechanismTooWeak,
    /// §6.5.10: the credentials are wrong (or the user does not exist: we do not say).
    NotAuthorized,
    /// §6.5.11: a temporary server-side problem; the client may retry later.
    TemporaryAuthFailure,
}

impl SaslFailure {
    /// The name of the condition element (RFC 6120 §6.5), in the `urn:ietf:params:xml:ns:xmpp-sasl`
    /// namespace.
    pub fn condition(&self) -> &'static str {
        match self {
            SaslFailure::Aborted => "aborted",
            SaslFailure::AccountDisabled => "account-disabled",
            SaslFailure::CredentialsExpired => "credentials-expired",
            SaslFailure::EncryptionRequired => "encryption-required",
            SaslFailure::IncorrectEncoding => "incorrect-encoding",
            SaslFailure::InvalidAuthzid => "invalid-authzid",
            SaslFailure::InvalidMechanism => "invalid-mechanism",
            SaslFailure::MalformedRequest => "malformed-request",
            SaslFailure::MechanismTooWeak => "mechanism-too-weak",
            SaslFailure::NotAuthorized => "not-authorized",
            SaslFailure::TemporaryAuthFailure => "temporary-auth-failure",
        }
    }
}

impl fmt::Display for SaslFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.condition())
    }
}

/// Errors preparing credentials (not failures of a negotiation: those are [`SaslFailure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslError {
    /// The password is empty or holds characters the PRECIS OpaqueString profile
    /// (RFC 8265 §4.2) disallows, such as control characters.
    InvalidPassword,
    /// The salt is empty or the iteration count is zero.
    InvalidParameters,
    /// The operating system's random number generator failed.
    Random,
}

impl fmt::Display for SaslError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SaslError::InvalidPassword => {
                "password is empty or contains characters not allowed by RFC 8265 OpaqueString"
            }
            SaslError::InvalidParameters => "SCRAM salt is empty or iteration count is zero",
            SaslError::Random => "the system random number generator failed",
        })
    }
}

impl std::error::Error for SaslError {}

/// Prepares a password with the PRECIS OpaqueString profile (RFC 8265 §4.2: non-ASCII
/// spaces become U+0020, then NFC), as SCRAM's `Normalize()` (RFC 5802 §2.2, updated by
/// RFC 8265 §7.3) and as PLAIN verification need. Use it before hashing a password with
/// argon2 too, so a password typed on different keyboards verifies the same.
pub fn prepare_password(password: &str) -> Result<String, SaslError> {
    OpaqueString::enforce(password)
        .map(|p| p.into_owned())
        .map_err(|_| SaslError::InvalidPassword)
}

/// What the caller must do next.
#[derive(Clone, PartialEq, Eq)]
pub enum SaslAction {
    /// Send `<challenge/>` with these bytes (base64-encoded by the caller; empty data is
    /// sent as `=`, RFC 6120 §6.4.2).
    Challenge(Vec<u8>),
    /// Look up the user's SCRAM credentials for this hash, then call
    /// [`SaslServer::provide_scram`] (with `None` if there is no such user). `username` is
    /// the decoded SCRAM saslname; the caller maps it to a JID localpart.
    LookupScram { username: String, hash: ScramHash },
    /// Verify the password (already prepared with [`prepare_password`]) against the
    /// stored hash, then call [`SaslServer::plain_result`].
    VerifyPlain {
        username: String,
        authzid: Option<String>,
        password: String,
    },
    /// Send `<success/>`, carrying `additional_data` if present (the SCRAM server-final
    /// message, RFC 6120 §6.3.10). Before doing so the caller must check `authzid`
    /// (`None` or the user's own bare JID; otherwise answer
    /// [`SaslFailure::InvalidAuthzid`] instead).
    Success {
        username: String,
        authzid: Option<String>,
        additional_data: Option<Vec<u8>>,
    },
    /// Send `<failure/>` with this condition. The exchange is over.
    Failure(SaslFailure),
}

impl fmt::Debug for SaslAction {
    // Never print a password or SASL payload, even at trace level (DESIGN.md, Logging).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SaslAction::Challenge(data) => write!(f, "Challenge({} bytes)", data.len()),
            SaslAction::LookupScram { username, hash } => f
                .debug_struct("LookupScram")
                .field("username", username)
                .field("hash", hash)
                .finish(),
            SaslAction::VerifyPlain {
                username, authzid, ..
            } => f
                .debug_struct("VerifyPlain")
                .field("username", username)
                .field("authzid", authzid)
                .finish_non_exhaustive(),
            SaslAction::Success {
                username, authzid, ..
            } => f
                .debug_struct("Success")
                .field("username", username)
                .field("authzid", authzid)
                .finish_non_exhaustive(),
            SaslAction::Failure(failure) => write!(f, "Failure({failure})"),
        }
    }
}

/// One SASL exchange, server side (RFC 6120 §6.4). Create it when `<auth/>` arrives
/// with an offered mechanism, feed it the initial response and each `<response/>`, and
/// drop it after `Success` or `Failure`.
pub struct SaslServer {
    mechanism: Mechanism,
    /// A fixed SCRAM server nonce for tests; `None` draws a random one.
    server_nonce: Option<Box<str>>,
    /// Whether a SCRAM client saying `y` (it can bind but saw no `-PLUS`
    /// offer) is refused while we offered `-PLUS` (RFC 5802 §6). See
    /// [`SaslServer::accepting_y_flag`].
    is_downgrade_refused: bool,
    state: State,
}

enum State {
    /// Waiting for the initial response. `is_asked` is set once we have answered an
    /// `<auth/>` without one with an empty challenge (RFC 6120 §6.4.2).
    Start {
        cb: ChannelBindings,
        is_asked: bool,
    },
    Scram(Box<scram::ScramServer>),
    /// PLAIN: waiting for [`SaslServer::plain_result`].
    PlainVerifying {
        username: String,
        authzid: Option<String>,
    },
    /// Success or failure was returned; anything more is out of sequence.
    Done,
}

impl SaslServer {
    /// Starts an exchange for `mechanism` on a session with these channel bindings. The
    /// SCRAM server nonce comes from the operating system's random number generator.
    ///
    /// The caller must already have checked that `mechanism` is offered on this stream
    /// (see [`Mechanism::is_offered_with`]); a `-PLUS` mechanism without bindings fails.
    pub fn new(mechanism: Mechanism, cb: ChannelBindings) -> Self {
        SaslServer {
            mechanism,
            server_nonce: None,
            is_downgrade_refused: true,
            state: State::Start {
                cb,
                is_asked: false,
            },
        }
    }

    /// Accepts the `y` flag even when `-PLUS` was offered.
    ///
    /// COMPAT: clients that only know `tls-unique` (slixmpp up to at least
    /// 1.8, anything built on CPython's `ssl`) send `y` on a TLS 1.3 stream
    /// where we offer `tls-exporter` and `tls-server-end-point`, which they
    /// cannot use; refusing `y` there locks them out of SCRAM entirely.
    /// XEP-0440's discussion gives `n` that meaning; these clients predate
    /// it. The cost is the downgrade detection of RFC 5802 §6 for clients
    /// whose `-PLUS` offer an attacker stripped.
    pub fn accepting_y_flag(mut self) -> Self {
        self.is_downgrade_refused = false;
        self
    }

    /// Like [`SaslServer::new`] with a fixed SCRAM server nonce, for reproducible
    /// conversations in tests. Never use a fixed nonce on a real session.
    ///
    /// # Panics
    /// If `server_nonce` is empty or not printable ASCII without `,` (RFC 5802 §7): that
    /// is a bug in the test, not something a client can cause.
    pub fn with_server_nonce(
        mechanism: Mechanism,
        cb: ChannelBindings,
        server_nonce: &str,
    ) -> Self {
        assert!(
            scram::is_printable(server_nonce),
            "a SCRAM nonce is printable ASCII without ','"
        );
        SaslServer {
            server_nonce: Some(server_nonce.into()),
            ..Self::new(mechanism, cb)
        }
    }

    /// The mechanism of this exchange.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Whether the exchange has ended (with success or failure).
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Feeds the client's initial response (the content of `<auth/>`, decoded) or a
    /// `<response/>`. In the first step, empty data means "no initial response" (an
    /// `<auth/>` without text): both mechanisms start with client data, so the answer is
    /// an empty challenge, once (RFC 6120 §6.4.2, RFC 4422 §5). After that, empty data,
    /// data out of sequence or more than [`MAX_CLIENT_MESSAGE`] bytes fail the exchange
    /// with [`SaslFailure::MalformedRequest`].
    pub fn step(&mut self, client_data: &[u8]) -> SaslAction {
        // Whatever happens, a failure leaves the exchange Done; success paths put a
        // state back.
        let state = std::mem::replace(&mut self.state, State::Done);
        if client_data.len() > MAX_CLIENT_MESSAGE {
            return SaslAction::Failure(SaslFailure::MalformedRequest);
        }
        match state {
            State::Start { cb, is_asked } if client_data.is_empty() => {
                if is_asked {
                    return SaslAction::Failure(SaslFailure::MalformedRequest);
                }
                self.state = State::Start { cb, is_asked: true };
                SaslAction::Challenge(Vec::new())
            }
            State::Start { cb, .. } => match self.mechanism.scram_hash() {
                Some(hash) => {
                    let plus = self.mechanism.needs_channel_binding();
                    match scram::ScramServer::start(
                        hash,
                        plus,
                        &cb,
                        self.is_downgrade_refused,
                        client_data,
                    ) {
                        Ok((server, action)) => {
                            self.state = State::Scram(Box::new(server));
                            action
                        }
                        Err(failure) => SaslAction::Failure(failure),
                    }
                }
                None => match plain::parse(client_data) {
                    Ok(request) => {
                        self.state = State::PlainVerifying {
                            username: request.authcid.clone(),
                            authzid: request.authzid.clone(),
                        };
                        SaslAction::VerifyPlain {
                            username: request.authcid,
                            authzid: request.authzid,
                            password: request.password,
                        }
                    }
                    Err(failure) => SaslAction::Failure(failure),
                },
            },
            State::Scram(mut scram) => {
                let action = scram.step(client_data);
                self.keep_if_going(scram, action)
            }
            State::PlainVerifying { .. } | State::Done => {
                SaslAction::Failure(SaslFailure::MalformedRequest)
            }
        }
    }

    /// Answers a [`SaslAction::LookupScram`]: the user's stored credentials for the hash
    /// asked for, or `None` if there is no such user (the exchange then continues with
    /// made-up credentials and fails only at the proof, so the client cannot tell).
    pub fn provide_scram(&mut self, creds: Option<ScramCredentials>) -> SaslAction {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Scram(mut scram) => {
                let action = scram.provide(creds, self.server_nonce.take());
                self.keep_if_going(scram, action)
            }
            // Called out of turn: a bug in the caller, not the client's doing.
            _ => SaslAction::Failure(SaslFailure::TemporaryAuthFailure),
        }
    }

    /// Answers a [`SaslAction::VerifyPlain`]: whether the password matched.
    pub fn plain_result(&mut self, ok: bool) -> SaslAction {
        match std::mem::replace(&mut self.state, State::Done) {
            State::PlainVerifying { username, authzid } if ok => SaslAction::Success {
                username,
                authzid,
                additional_data: None,
            },
            State::PlainVerifying { .. } => SaslAction::Failure(SaslFailure::NotAuthorized),
            // Called out of turn: a bug in the caller.
            _ => SaslAction::Failure(SaslFailure::TemporaryAuthFailure),
        }
    }

    /// Puts the SCRAM machine back unless `action` ends the exchange.
    fn keep_if_going(&mut self, scram: Box<scram::ScramServer>, action: SaslAction) -> SaslAction {
        if !matches!(action, SaslAction::Success { .. } | SaslAction::Failure(_)) {
            self.state = State::Scram(scram);
        }
        action
    }
}

impl fmt::Debug for SaslServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslServer")
            .field("mechanism", &self.mechanism)
            .field("is_done", &self.is_done())
            .finish_non_exhaustive()
    }
}

/// The SASL elements whose character data is a payload (RFC 6120 §6.4.2-§6.4.6): base64
/// of a PLAIN password, SCRAM proofs, nonces and salts.
const PAYLOAD_ELEMENTS: [(&str, &str); 8] = [
    ("auth", "auth"),
    ("response", "response"),
    ("challenge", "challenge"),
    ("success", "success"),
    // Dialback keys (XEP-0220), as written on a server stream and as parsed elements
    // print: not passwords, but proof of a stream's identity all the same.
    ("db:result", "db:result"),
    ("db:verify", "db:verify"),
    ("result xmlns=\"jabber:server:dialback\"", "result"),
    ("verify xmlns=\"jabber:server:dialback\"", "verify"),
];

/// `xml` (serialized stanzas, as logged at trace level) with the character data of every
/// SASL payload element replaced by its length, so no log level ever shows a password or
/// a SASL exchange (DESIGN.md "Logging"). Our serializer writes these elements without a
/// prefix; character data cannot contain a raw `<`, so a `<auth` inside a message body is
/// `&lt;auth` and left alone.
pub fn redact_payloads(xml: &str) -> std::borrow::Cow<'_, str> {
    if !PAYLOAD_ELEMENTS
        .iter()
        .any(|(n, _)| xml.contains(&format!("<{n}")[..]))
    {
        return std::borrow::Cow::Borrowed(xml);
    }
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    'scan: while let Some(lt) = rest.find('<') {
        out.push_str(&rest[..lt]);
        let tag = &rest[lt + 1..];
        for (open, name) in PAYLOAD_ELEMENTS {
            let Some(after) = tag.strip_prefix(open) else {
                continue;
            };
            if !after.starts_with([' ', '>', '/', '\t', '\n', '\r']) {
                continue;
            }
            let Some(gt) = after.find('>') else { break };
            let start_tag = &after[..=gt];
            out.push('<');
            out.push_str(open);
            out.push_str(start_tag);
            if start_tag.ends_with("/>") {
                rest = &after[gt + 1..];
                continue 'scan;
            }
            let body = &after[gt + 1..];
            let close = format!("</{name}>");
            let Some(end) = body.find(&close[..]) else {
                // Cut off: hide what is left.
                out.push_str(&format!("[{} bytes redacted]", body.len()));
                return std::borrow::Cow::Owned(out);
            };
            if end > 0 {
                out.push_str(&format!("[{end} bytes redacted]"));
            }
            out.push_str(&close);
            rest = &body[end + close.len()..];
            continue 'scan;
        }
        out.push('<');
        rest = tag;
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests;
