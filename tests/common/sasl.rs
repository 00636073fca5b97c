//! The client side of SASL for the raw test client, written from the RFCs and
//! independent of hearth's server side: PLAIN (RFC 4616) and SCRAM (RFC 5802 with
//! SHA-1, RFC 7677 with SHA-256), with channel binding `tls-exporter` (RFC 9266) or
//! `tls-server-end-point` (RFC 5929 §4).
//!
//! [`XmppRs`] wraps the SCRAM client of xmpp-rs's `sasl` crate, the one the Rust XMPP
//! clients (tokio-xmpp) use for SCRAM-*-PLUS with tls-exporter: logging in with a
//! second, third-party implementation catches a misreading that hearth and this file
//! might share.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// One SASL mechanism, client side: the shape of RFC 6120 §6.4's exchange.
pub trait Mechanism {
    /// The name sent in `<auth mechanism='…'/>`.
    fn name(&self) -> String;
    /// The initial response (empty is sent as `=`, RFC 6120 §6.4.2).
    fn initial(&mut self) -> Vec<u8>;
    /// The answer to a `<challenge/>`.
    fn response(&mut self, challenge: &[u8]) -> Result<Vec<u8>, String>;
    /// Checks the additional data of `<success/>` (SCRAM's server signature).
    fn success(&mut self, data: &[u8]) -> Result<(), String>;
}

/// RFC 4616 PLAIN: `authzid NUL authcid NUL password`, with an empty authzid.
pub struct Plain {
    pub username: String,
    pub password: String,
}

impl Mechanism for Plain {
    fn name(&self) -> String {
        "PLAIN".into()
    }
    fn initial(&mut self) -> Vec<u8> {
        format!("\0{}\0{}", self.username, self.password).into_bytes()
    }
    fn response(&mut self, _challenge: &[u8]) -> Result<Vec<u8>, String> {
        Err("PLAIN expects no challenge".into())
    }
    fn success(&mut self, _data: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hash {
    Sha1,
    Sha256,
}

impl Hash {
    fn name(self) -> &'static str {
        match self {
            Hash::Sha1 => "SHA-1",
            Hash::Sha256 => "SHA-256",
        }
    }

    fn hmac(self, key: &[u8], msg: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha1 => {
                let mut m = Hmac::<Sha1>::new_from_slice(key).unwrap();
                m.update(msg);
                m.finalize().into_bytes().to_vec()
            }
            Hash::Sha256 => {
                let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
                m.update(msg);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha1 => Sha1::digest(data).to_vec(),
            Hash::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    /// RFC 5802 §2.2 Hi() is PBKDF2 with HMAC as the PRF.
    fn hi(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Hash::Sha1 => {
                let mut out = vec![0; 20];
                pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out);
                out
            }
            Hash::Sha256 => {
                let mut out = vec![0; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out
            }
        }
    }
}

/// The GS2 channel-binding flag a SCRAM client sends (RFC 5802 §6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Binding {
    /// `n`: the client does not support channel binding.
    None,
    /// `y`: the client supports it but thinks the server does not. A server that
    /// offers -PLUS must then fail the exchange (a downgrade, RFC 5802 §6).
    SupportedNotUsed,
    /// `p=<type>` with the binding data: the -PLUS mechanism.
    Use { kind: &'static str, data: Vec<u8> },
}

/// The RFC 9266 / RFC 5929 channel-binding type names.
pub const TLS_EXPORTER: &str = "tls-exporter";
pub const TLS_SERVER_END_POINT: &str = "tls-server-end-point";

enum ScramState {
    Start,
    SentFirst { bare: String },
    SentFinal { server_signature: Vec<u8> },
    Done,
}

/// A SCRAM client. The name is `SCRAM-<hash>` plus `-PLUS` exactly when the binding
/// is [`Binding::Use`].
pub struct Scram {
    hash: Hash,
    binding: Binding,
    username: String,
    password: String,
    nonce: String,
    state: ScramState,
}

impl Scram {
    pub fn new(hash: Hash, username: &str, password: &str, binding: Binding) -> Scram {
        let mut raw = [0u8; 18];
        getrandom::fill(&mut raw).unwrap();
        Scram::with_nonce(hash, username, password, binding, &B64.encode(raw))
    }

    /// A fixed client nonce, for the RFC test vectors.
    pub fn with_nonce(
        hash: Hash,
        username: &str,
        password: &str,
        binding: Binding,
        nonce: &str,
    ) -> Scram {
        Scram {
            hash,
            binding,
            username: username.into(),
            password: password.into(),
            nonce: nonce.into(),
            state: ScramState::Start,
        }
    }

    fn gs2_header(&self) -> String {
        match &self.binding {
            Binding::None => "n,,".into(),
            Binding::SupportedNotUsed => "y,,".into(),
            Binding::Use { kind, .. } => format!("p={kind},,"),
        }
    }

    /// RFC 5802 §5.1: `=` and `,` in a username are escaped as `=3D` and `=2C`.
    fn saslname(name: &str) -> String {
        name.replace('=', "=3D").replace(',', "=2C")
    }
}

fn scram_attrs(msg: &str) -> Vec<(char, &str)> {
    msg.split(',')
        .filter_map(|kv| {
            let mut chars = kv.chars();
            let k = chars.next()?;
            kv.get(2..)
                .filter(|_| kv.as_bytes().get(1) == Some(&b'='))
                .map(|v| (k, v))
        })
        .collect()
}

impl Mechanism for Scram {
    fn name(&self) -> String {
        match self.binding {
            Binding::Use { .. } => format!("SCRAM-{}-PLUS", self.hash.name()),
            _ => format!("SCRAM-{}", self.hash.name()),
        }
    }

    fn initial(&mut self) -> Vec<u8> {
        let bare = format!("n={},r={}", Scram::saslname(&self.username), self.nonce);
        let first = format!("{}{}", self.gs2_header(), bare);
        self.state = ScramState::SentFirst { bare };
        first.into_bytes()
    }

    fn response(&mut self, challenge: &[u8]) -> Result<Vec<u8>, String> {
        let ScramState::SentFirst { bare } = &self.state else {
            return Err("unexpected challenge".into());
        };
        let server_first =
            std::str::from_utf8(challenge).map_err(|_| "server-first is not UTF-8")?;
        let attrs = scram_attrs(server_first);
        let get = |k: char| attrs.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
        let nonce = get('r').ok_or("server-first without r=")?;
        let salt = B64
            .decode(get('s').ok_or("server-first without s=")?)
            .map_err(|e| format!("bad salt: {e}"))?;
        let iterations: u32 = get('i')
            .ok_or("server-first without i=")?
            .parse()
            .map_err(|e| format!("bad i=: {e}"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() <= self.nonce.len() {
            return Err(format!("server nonce {nonce:?} does not extend ours"));
        }
        let mut cbind_input = self.gs2_header().into_bytes();
        if let Binding::Use { data, .. } = &self.binding {
            cbind_input.extend_from_slice(data);
        }
        let without_proof = format!("c={},r={}", B64.encode(&cbind_input), nonce);
        let h = self.hash;
        let salted = h.hi(self.password.as_bytes(), &salt, iterations);
        let client_key = h.hmac(&salted, b"Client Key");
        let stored_key = h.digest(&client_key);
        let auth_message = format!("{bare},{server_first},{without_proof}");
        let client_signature = h.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = h.hmac(&salted, b"Server Key");
        let server_signature = h.hmac(&server_key, auth_message.as_bytes());
        self.state = ScramState::SentFinal { server_signature };
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    fn success(&mut self, data: &[u8]) -> Result<(), String> {
        let ScramState::SentFinal { server_signature } = &self.state else {
            return Err("<success/> before the SCRAM exchange finished".into());
        };
        let text = std::str::from_utf8(data).map_err(|_| "server-final is not UTF-8")?;
        let attrs = scram_attrs(text);
        let v = attrs
            .iter()
            .find(|(k, _)| *k == 'v')
            .map(|(_, v)| *v)
            .ok_or_else(|| format!("server-final without v=: {text:?}"))?;
        if B64.decode(v).ok().as_deref() != Some(server_signature.as_slice()) {
            return Err("server signature mismatch: the server does not know the key".into());
        }
        self.state = ScramState::Done;
        Ok(())
    }
}

/// xmpp-rs's SCRAM client (crate `sasl`), as used by tokio-xmpp.
pub struct XmppRs(Box<dyn sasl::client::Mechanism + Send>);

impl XmppRs {
    /// SCRAM with `hash`; -PLUS with tls-exporter when `exporter` is given, which is
    /// how tokio-xmpp binds on TLS 1.3.
    pub fn scram(hash: Hash, username: &str, password: &str, exporter: Option<Vec<u8>>) -> Self {
        use sasl::client::mechanisms::Scram as S;
        use sasl::common::ChannelBinding;
        let cb = match exporter {
            Some(data) => ChannelBinding::TlsExporter(data),
            None => ChannelBinding::None,
        };
        XmppRs(match hash {
            Hash::Sha1 => Box::new(
                S::<sasl::common::scram::Sha1>::new(username, password.to_string(), cb).unwrap(),
            ),
            Hash::Sha256 => Box::new(
                S::<sasl::common::scram::Sha256>::new(username, password.to_string(), cb).unwrap(),
            ),
        })
    }
}

impl Mechanism for XmppRs {
    fn name(&self) -> String {
        self.0.name().to_string()
    }
    fn initial(&mut self) -> Vec<u8> {
        self.0.initial()
    }
    fn response(&mut self, challenge: &[u8]) -> Result<Vec<u8>, String> {
        self.0.response(challenge).map_err(|e| e.to_string())
    }
    fn success(&mut self, data: &[u8]) -> Result<(), String> {
        self.0.success(data).map_err(|e| e.to_string())
    }
}
