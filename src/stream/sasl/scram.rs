//! RFC 5802 SCRAM (with RFC 7677 for SHA-256), server side: the message grammar of §7,
//! the proof check of §3 and channel binding of §6, with the `tls-exporter` type of
//! RFC 9266 and `tls-server-end-point` of RFC 5929 §4.
//!
//! The exchange:
//!
//! ```text
//! C: gs2-header client-first-bare     → LookupScram        (ScramServer::start)
//!    caller supplies credentials     → Challenge(server-first)  (provide)
//! C: client-final                     → Success(server-final) / Failure  (step)
//! ```

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{EagerHash, Hmac, KeyInit, Mac};
use sha2::Digest;
use subtle::ConstantTimeEq;

use super::{ChannelBindings, SaslAction, SaslError, SaslFailure, prepare_password};

/// The iteration count for new SCRAM credentials and for the made-up credentials of
/// unknown users. RFC 7677 §4 asks for at least 4096; more would slow every login on a
/// Raspberry Pi (DESIGN.md) while stored keys already spare us the per-login PBKDF2.
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// The salt length for new SCRAM credentials. Made-up salts for unknown users have this
/// length too, so that they look like real ones.
pub const SALT_LEN: usize = 16;

/// Random bytes in our part of the nonce (RFC 5802 §5.1 asks for a fresh, unguessable
/// value; 24 bytes encode to 32 base64 characters without padding).
const SERVER_NONCE_BYTES: usize = 24;

/// The hash function of a SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScramHash {
    /// SCRAM-SHA-1 (RFC 5802).
    Sha1,
    /// SCRAM-SHA-256 (RFC 7677).
    Sha256,
}

impl ScramHash {
    /// The hash output length, which is also the length of StoredKey, ServerKey and the
    /// client proof.
    pub fn output_len(self) -> usize {
        match self {
            ScramHash::Sha1 => 20,
            ScramHash::Sha256 => 32,
        }
    }

    /// The hash name as in the mechanism name (`SHA-1`, `SHA-256`); a stable key for
    /// storage.
    pub fn name(self) -> &'static str {
        match self {
            ScramHash::Sha1 => "SHA-1",
            ScramHash::Sha256 => "SHA-256",
        }
    }

    /// `HMAC(key, parts…)` (RFC 5802 §2.2).
    pub(super) fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => hmac::<sha1::Sha1>(key, parts),
            ScramHash::Sha256 => hmac::<sha2::Sha256>(key, parts),
        }
    }

    /// `H(data)` (RFC 5802 §2.2).
    pub(super) fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => sha1::Sha1::digest(data).to_vec(),
            ScramHash::Sha256 => sha2::Sha256::digest(data).to_vec(),
        }
    }

    /// `Hi(password, salt, i)` (RFC 5802 §2.2), which is PBKDF2 with HMAC as the PRF.
    pub(super) fn hi(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0; self.output_len()];
        match self {
            ScramHash::Sha1 => {
                pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password, salt, iterations, &mut out)
            }
            ScramHash::Sha256 => {
                pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, salt, iterations, &mut out)
            }
        }
        out
    }
}

fn hmac<D: EagerHash>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let Ok(mut mac) = <Hmac<D> as KeyInit>::new_from_slice(key) else {
        unreachable!("HMAC accepts keys of any length");
    };
    for part in parts {
        Mac::update(&mut mac, part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// What the server stores for a SCRAM user (RFC 5802 §3): enough to verify a proof and
/// sign the answer, but not to log in as the user elsewhere without a guessing attack.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredentials {
    pub salt: Vec<u8>,
    pub iterations: u32,
    /// `H(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
}

impl ScramCredentials {
    /// Derives the stored credentials from a password (RFC 5802 §3). The password is
    /// prepared with PRECIS OpaqueString ([`prepare_password`]), which replaces SASLprep
    /// (RFC 8265 §7.3).
    pub fn derive(
        hash: ScramHash,
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Result<Self, SaslError> {
        if salt.is_empty() || iterations == 0 {
            return Err(SaslError::InvalidParameters);
        }
        let password = prepare_password(password)?;
        let salted_password = hash.hi(password.as_bytes(), salt, iterations);
        let client_key = hash.hmac(&salted_password, &[b"Client Key"]);
        Ok(ScramCredentials {
            salt: salt.to_vec(),
            iterations,
            stored_key: hash.digest(&client_key),
            server_key: hash.hmac(&salted_password, &[b"Server Key"]),
        })
    }

    /// Derives credentials for a new password with a random salt of [`SALT_LEN`] bytes
    /// and [`DEFAULT_ITERATIONS`].
    pub fn generate(hash: ScramHash, password: &str) -> Result<Self, SaslError> {
        Self::derive(hash, password, &random_salt()?, DEFAULT_ITERATIONS)
    }

    /// Whether these (stored, so possibly damaged) credentials can serve `hash`.
    fn is_usable_with(&self, hash: ScramHash) -> bool {
        !self.salt.is_empty()
            && self.iterations > 0
            && self.stored_key.len() == hash.output_len()
            && self.server_key.len() == hash.output_len()
    }
}

impl std::fmt::Debug for ScramCredentials {
    // The keys are password equivalents for an attacker with time: keep them out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredentials")
            .field("salt_len", &self.salt.len())
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// A fresh random salt of [`SALT_LEN`] bytes.
pub fn random_salt() -> Result<[u8; SALT_LEN], SaslError> {
    let mut salt = [0; SALT_LEN];
    getrandom::fill(&mut salt).map_err(|_| SaslError::Random)?;
    Ok(salt)
}

/// RFC 5802 §7 `printable`: `%x21-2B / %x2D-7E`, i.e. visible ASCII except `,`; at
/// least one character, as a nonce needs.
pub(super) fn is_printable(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| matches!(b, 0x21..=0x2B | 0x2D..=0x7E))
}

/// Decodes a `saslname` (RFC 5802 §7): `=2C` is `,` and `=3D` is `=`; any other `=` or a
/// NUL is malformed.
fn decode_saslname(s: &str) -> Result<String, SaslFailure> {
    if s.is_empty() {
        return Err(SaslFailure::MalformedRequest);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find(['=', '\0']) {
        out.push_str(&rest[..at]);
        let escaped = rest.get(at..at + 3);
        out.push(match escaped {
            Some("=2C") => ',',
            Some("=3D") => '=',
            _ => return Err(SaslFailure::MalformedRequest),
        });
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Checks an optional extension `attr-val` (RFC 5802 §7: `ALPHA "=" 1*value-char`).
/// Extensions we do not know are ignored, as §5.1 allows for non-mandatory ones.
fn check_extension(attr: &str) -> Result<(), SaslFailure> {
    let bytes = attr.as_bytes();
    let is_valid = bytes.len() > 2
        && bytes[0].is_ascii_alphabetic()
        && bytes[1] == b'='
        && !bytes.contains(&0);
    if is_valid {
        Ok(())
    } else {
        Err(SaslFailure::MalformedRequest)
    }
}

/// The `gs2-cbind-flag` (RFC 5802 §7).
#[derive(Debug, PartialEq, Eq)]
enum CbFlag<'a> {
    /// `n`: the client does not support channel binding.
    No,
    /// `y`: the client supports it but thinks the server does not.
    ClientOnly,
    /// `p=<cb-name>`: the client binds to this channel-binding type.
    Bound(&'a str),
}

/// A parsed client-first-message.
#[derive(Debug)]
struct ClientFirst<'a> {
    flag: CbFlag<'a>,
    authzid: Option<String>,
    username: String,
    nonce: &'a str,
    /// `gs2-header`, repeated (base64) in the client-final `c=` attribute.
    gs2_header: &'a str,
    /// `client-first-message-bare`, the first part of AuthMessage.
    bare: &'a str,
}

fn parse_client_first(msg: &str) -> Result<ClientFirst<'_>, SaslFailure> {
    const MALFORMED: SaslFailure = SaslFailure::MalformedRequest;
    // gs2-header = gs2-cbind-flag "," [ authzid ] ","
    let (flag, rest) = msg.split_once(',').ok_or(MALFORMED)?;
    let flag = match flag {
        "n" => CbFlag::No,
        "y" => CbFlag::ClientOnly,
        _ => {
            let name = flag.strip_prefix("p=").ok_or(MALFORMED)?;
            let is_cb_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
            if !is_cb_name {
                return Err(MALFORMED);
            }
            CbFlag::Bound(name)
        }
    };
    let (authzid, bare) = rest.split_once(',').ok_or(MALFORMED)?;
    let authzid = match authzid {
        "" => None,
        a => Some(decode_saslname(a.strip_prefix("a=").ok_or(MALFORMED)?)?),
    };
    let gs2_header = &msg[..msg.len() - bare.len()];

    // client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
    let mut attrs = bare.split(',');
    let username = attrs.next().unwrap_or_default();
    // §5.1: "m" is reserved for mandatory extensions; we know none, so we must fail.
    let username = username.strip_prefix("n=").ok_or(MALFORMED)?;
    let username = decode_saslname(username)?;
    let nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .filter(|n| is_printable(n))
        .ok_or(MALFORMED)?;
    attrs.try_for_each(check_extension)?;
    Ok(ClientFirst {
        flag,
        authzid,
        username,
        nonce,
        gs2_header,
        bare,
    })
}

/// A parsed client-final-message.
#[derive(Debug)]
struct ClientFinal<'a> {
    /// `client-final-message-without-proof`, the last part of AuthMessage.
    without_proof: &'a str,
    channel_binding: Vec<u8>,
    nonce: &'a str,
    proof: Vec<u8>,
}

fn parse_client_final(msg: &str) -> Result<ClientFinal<'_>, SaslFailure> {
    const MALFORMED: SaslFailure = SaslFailure::MalformedRequest;
    // client-final-message = channel-binding "," nonce ["," extensions] "," proof
    let (without_proof, proof) = msg.rsplit_once(',').ok_or(MALFORMED)?;
    let proof = proof.strip_prefix("p=").ok_or(MALFORMED)?;
    let mut attrs = without_proof.split(',');
    let channel_binding = attrs
        .next()
        .and_then(|a| a.strip_prefix("c="))
        .ok_or(MALFORMED)?;
    let nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .filter(|n| is_printable(n))
        .ok_or(MALFORMED)?;
    attrs.try_for_each(check_extension)?;
    Ok(ClientFinal {
        without_proof,
        channel_binding: BASE64.decode(channel_binding).map_err(|_| MALFORMED)?,
        nonce,
        proof: BASE64.decode(proof).map_err(|_| MALFORMED)?,
    })
}

/// Decides what the client's `gs2-cbind-flag` means for this session (RFC 5802 §6) and
/// returns the channel-binding data its `c=` must carry, if any.
fn select_binding(
    is_plus: bool,
    flag: &CbFlag<'_>,
    cb: &ChannelBindings,
    is_downgrade_refused: bool,
) -> Result<Option<Vec<u8>>, SaslFailure> {
    match (is_plus, flag) {
        // A type we did not advertise (XEP-0440), e.g. tls-unique, which RFC 9266 §3
        // forbids on TLS 1.3.
        (true, CbFlag::Bound(name)) => cb
            .get(name)
            .map(|data| Some(data.to_vec()))
            .ok_or(SaslFailure::MalformedRequest),
        // A -PLUS mechanism without binding, or binding under a non-PLUS name: the client
        // contradicts itself (RFC 5802 §6).
        (true, _) | (false, CbFlag::Bound(_)) => Err(SaslFailure::MalformedRequest),
        // The client can bind but saw no -PLUS offer, while we made one: someone removed
        // it from our stream features. RFC 5802 §6: the server MUST fail (unless
        // the owner chose compatibility, see `SaslServer::accepting_y_flag`).
        (false, CbFlag::ClientOnly) if cb.is_available() && is_downgrade_refused => {
            Err(SaslFailure::NotAuthorized)
        }
        (false, _) => Ok(None),
    }
}

/// The per-process key that makes up stable salts for unknown users.
fn fake_salt_key() -> Option<&'static [u8; 32]> {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    if let Some(key) = KEY.get() {
        return Some(key);
    }
    let mut key = [0; 32];
    getrandom::fill(&mut key).ok()?;
    Some(KEY.get_or_init(|| key))
}

/// A salt for a user who does not exist: the same for the same name (within this
/// process), so that asking twice does not reveal that it is made up.
fn fake_salt(username: &str) -> Option<Vec<u8>> {
    let key = fake_salt_key()?;
    let mut salt = hmac::<sha2::Sha256>(key, &[b"hearth fake SCRAM salt\0", username.as_bytes()]);
    salt.truncate(SALT_LEN);
    Some(salt)
}

/// A fresh server nonce: [`SERVER_NONCE_BYTES`] random bytes in base64, which is
/// `printable` (no `,`).
fn random_nonce() -> Option<String> {
    let mut bytes = [0; SERVER_NONCE_BYTES];
    getrandom::fill(&mut bytes).ok()?;
    Some(BASE64.encode(bytes))
}

/// One SCRAM exchange after a well-formed client-first message.
pub(super) struct ScramServer {
    hash: ScramHash,
    username: String,
    authzid: Option<String>,
    /// `gs2-header` followed by the channel-binding data: what the client's `c=` must
    /// decode to (RFC 5802 §7 `cbind-input`).
    cbind_input: Vec<u8>,
    /// `client-first-message-bare`.
    client_first_bare: String,
    /// The client's nonce, then (once we have sent server-first) the whole nonce.
    nonce: String,
    phase: Phase,
}

enum Phase {
    /// We asked the caller for the user's credentials.
    AwaitingCredentials,
    /// We sent server-first and wait for client-final.
    AwaitingFinal {
        server_first: String,
        stored_key: Vec<u8>,
        server_key: Vec<u8>,
        /// False for the made-up credentials of an unknown user: the proof check then
        /// fails whatever the client sends.
        is_real_user: bool,
    },
}

impl ScramServer {
    /// Handles the client-first message (RFC 5802 §5.1) and asks for the credentials.
    pub(super) fn start(
        hash: ScramHash,
        is_plus: bool,
        cb: &ChannelBindings,
        is_downgrade_refused: bool,
        client_first: &[u8],
    ) -> Result<(Self, SaslAction), SaslFailure> {
        let msg = std::str::from_utf8(client_first).map_err(|_| SaslFailure::IncorrectEncoding)?;
        let first = parse_client_first(msg)?;
        let cb_data = select_binding(is_plus, &first.flag, cb, is_downgrade_refused)?;
        let mut cbind_input = first.gs2_header.as_bytes().to_vec();
        cbind_input.extend_from_slice(cb_data.as_deref().unwrap_or_default());
        let action = SaslAction::LookupScram {
            username: first.username.clone(),
            hash,
        };
        let server = ScramServer {
            hash,
            username: first.username,
            authzid: first.authzid,
            cbind_input,
            client_first_bare: first.bare.to_owned(),
            nonce: first.nonce.to_owned(),
            phase: Phase::AwaitingCredentials,
        };
        Ok((server, action))
    }

    /// Takes the credentials (or `None` for an unknown user) and answers with the
    /// server-first message (RFC 5802 §5.1).
    pub(super) fn provide(
        &mut self,
        creds: Option<ScramCredentials>,
        fixed_nonce: Option<Box<str>>,
    ) -> SaslAction {
        if !matches!(self.phase, Phase::AwaitingCredentials) {
            return SaslAction::Failure(SaslFailure::TemporaryAuthFailure);
        }
        let len = self.hash.output_len();
        let (salt, iterations, stored_key, server_key, is_real_user) = match creds {
            Some(c) if c.is_usable_with(self.hash) => {
                (c.salt, c.iterations, c.stored_key, c.server_key, true)
            }
            // Damaged or mismatched storage: a server-side problem, not the client's.
            Some(_) => return SaslAction::Failure(SaslFailure::TemporaryAuthFailure),
            None => match fake_salt(&self.username) {
                Some(salt) => (salt, DEFAULT_ITERATIONS, vec![0; len], vec![0; len], false),
                None => return SaslAction::Failure(SaslFailure::TemporaryAuthFailure),
            },
        };
        let server_nonce = match fixed_nonce {
            Some(nonce) => nonce.into_string(),
            None => match random_nonce() {
                Some(nonce) => nonce,
                None => return SaslAction::Failure(SaslFailure::TemporaryAuthFailure),
            },
        };
        self.nonce.push_str(&server_nonce);
        let server_first = format!(
            "r={},s={},i={}",
            self.nonce,
            BASE64.encode(&salt),
            iterations
        );
        let challenge = server_first.as_bytes().to_vec();
        self.phase = Phase::AwaitingFinal {
            server_first,
            stored_key,
            server_key,
            is_real_user,
        };
        SaslAction::Challenge(challenge)
    }

    /// Handles the client-final message (RFC 5802 §5.1, §3): checks channel binding,
    /// nonce and proof, and answers with the server signature.
    pub(super) fn step(&mut self, client_final: &[u8]) -> SaslAction {
        let Phase::AwaitingFinal {
            server_first,
            stored_key,
            server_key,
            is_real_user,
        } = &self.phase
        else {
            // A response before our challenge.
            return SaslAction::Failure(SaslFailure::MalformedRequest);
        };
        let Ok(msg) = std::str::from_utf8(client_final) else {
            return SaslAction::Failure(SaslFailure::IncorrectEncoding);
        };
        let fin = match parse_client_final(msg) {
            Ok(fin) => fin,
            Err(failure) => return SaslAction::Failure(failure),
        };
        if fin.proof.len() != self.hash.output_len() {
            return SaslAction::Failure(SaslFailure::MalformedRequest);
        }
        // The channel binding must be that of *our* TLS session: a man in the middle
        // terminating TLS sees different data (RFC 5802 §6).
        let is_bound: bool = fin.channel_binding.ct_eq(&self.cbind_input).into();
        if !is_bound || fin.nonce != self.nonce {
            return SaslAction::Failure(SaslFailure::NotAuthorized);
        }
        // AuthMessage = client-first-message-bare "," server-first-message ","
        //               client-final-message-without-proof
        let auth_message: [&[u8]; 5] = [
            self.client_first_bare.as_bytes(),
            b",",
            server_first.as_bytes(),
            b",",
            fin.without_proof.as_bytes(),
        ];
        let client_signature = self.hash.hmac(stored_key, &auth_message);
        let client_key: Vec<u8> = fin
            .proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        let is_proven: bool = self.hash.digest(&client_key).ct_eq(stored_key).into();
        if !(is_proven && *is_real_user) {
            return SaslAction::Failure(SaslFailure::NotAuthorized);
        }
        let server_signature = self.hash.hmac(server_key, &auth_message);
        let mut server_final = b"v=".to_vec();
        server_final.extend_from_slice(BASE64.encode(server_signature).as_bytes());
        SaslAction::Success {
            username: std::mem::take(&mut self.username),
            authzid: self.authzid.take(),
            additional_data: Some(server_final),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saslname_escapes_decode() {
        assert_eq!(decode_saslname("a=3Db=2Cc").unwrap(), "a=b,c");
        assert_eq!(decode_saslname("=2C").unwrap(), ",");
        assert_eq!(decode_saslname("jüliet").unwrap(), "jüliet");
        for bad in ["", "=", "=2", "=2c", "a=41", "a\0b", "=3D=", "x=="] {
            assert_eq!(
                decode_saslname(bad),
                Err(SaslFailure::MalformedRequest),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn printable_is_rfc_5802_printable() {
        assert!(is_printable("%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"));
        assert!(!is_printable(""));
        assert!(!is_printable("a,b"));
        assert!(!is_printable("a b"));
        assert!(!is_printable("é"));
    }

    #[test]
    fn client_first_parses() {
        let first =
            parse_client_first("p=tls-exporter,a=juliet@example.org,n=juliet,r=abc,x=ext").unwrap();
        assert_eq!(first.flag, CbFlag::Bound("tls-exporter"));
        assert_eq!(first.authzid.as_deref(), Some("juliet@example.org"));
        assert_eq!(first.username, "juliet");
        assert_eq!(first.nonce, "abc");
        assert_eq!(first.gs2_header, "p=tls-exporter,a=juliet@example.org,");
        assert_eq!(first.bare, "n=juliet,r=abc,x=ext");
        assert_eq!(
            parse_client_first("y,,n=u,r=x").unwrap().flag,
            CbFlag::ClientOnly
        );
    }

    #[test]
    fn client_first_rejects() {
        for bad in [
            "",
            "n",
            "n,",
            "n,,",
            "x,,n=user,r=abc",
            "p=,,n=user,r=abc",
            "p=tls_exporter,,n=user,r=abc",
            "n,b=authz,n=user,r=abc",
            "n,a=,n=user,r=abc",
            "n,,m=ext,n=user,r=abc",
            "n,,n=,r=abc",
            "n,,n=user",
            "n,,n=user,r=",
            "n,,n=user,r=a b",
            "n,,r=abc,n=user",
            "n,,n=user,r=abc,",
            "n,,n=user,r=abc,1=x",
            "n,,n=user,r=abc,x=",
            "N,,n=user,r=abc",
        ] {
            assert_eq!(
                parse_client_first(bad).unwrap_err(),
                SaslFailure::MalformedRequest,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn client_final_parses_and_rejects() {
        let fin = parse_client_final("c=biws,r=abc,x=y,p=AAAA").unwrap();
        assert_eq!(fin.without_proof, "c=biws,r=abc,x=y");
        assert_eq!(fin.channel_binding, b"n,,");
        assert_eq!(fin.nonce, "abc");
        assert_eq!(fin.proof, [0, 0, 0]);
        for bad in [
            "",
            "c=biws,r=abc",
            "c=biws,p=AAAA",
            "r=abc,c=biws,p=AAAA",
            "c=biws,r=abc,p=AAAA,x=y",
            "c=bi!s,r=abc,p=AAAA",
            "c=biws,r=abc,p=AAA",
            "c=biws,r=abc,,p=AAAA",
        ] {
            assert_eq!(
                parse_client_final(bad).unwrap_err(),
                SaslFailure::MalformedRequest,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn fake_salt_is_stable_per_name() {
        let a = fake_salt("ghost").unwrap();
        assert_eq!(a.len(), SALT_LEN);
        assert_eq!(a, fake_salt("ghost").unwrap());
        assert_ne!(a, fake_salt("phantom").unwrap());
    }
}
