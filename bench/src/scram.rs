//! RFC 5802: the client side of SCRAM-SHA-1 (and RFC 7677 SCRAM-SHA-256), without channel
//! binding (`n,,` GS2 header, RFC 5802 §7), as a sans-IO state machine.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, OnceLock};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{EagerHash, Hmac, KeyInit, Mac};
use sha2::Digest;

/// The hash a SCRAM mechanism is named after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScramHash {
    Sha1,
    Sha256,
}

impl ScramHash {
    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => hmac::<sha1::Sha1>(key, data),
            ScramHash::Sha256 => hmac::<sha2::Sha256>(key, data),
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => sha1::Sha1::digest(data).to_vec(),
            ScramHash::Sha256 => sha2::Sha256::digest(data).to_vec(),
        }
    }

    /// `Hi()` (RFC 5802 §2.2) is PBKDF2 with HMAC as the PRF.
    fn hi(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => {
                let mut out = vec![0; 20];
                pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password, salt, iterations, &mut out);
                out
            }
            ScramHash::Sha256 => {
                let mut out = vec![0; 32];
                pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, salt, iterations, &mut out);
                out
            }
        }
    }
}

fn hmac<D: EagerHash>(key: &[u8], data: &[u8]) -> Vec<u8> {
    let Ok(mut mac) = <Hmac<D> as KeyInit>::new_from_slice(key) else {
        unreachable!("HMAC accepts keys of any length");
    };
    Mac::update(&mut mac, data);
    mac.finalize().into_bytes().to_vec()
}

/// Why a SCRAM exchange failed on the client side.
#[derive(Debug, PartialEq)]
pub enum ScramError {
    /// The server-first-message is missing `r`, `s` or `i`, or they are malformed.
    BadServerFirst,
    /// The server's nonce does not start with ours (RFC 5802 §5.1, `r`).
    NonceMismatch,
    /// The server-final-message carried `e=` (RFC 5802 §7).
    ServerError(String),
    /// `v=` did not match the ServerSignature we computed: the server does not know the
    /// password (RFC 5802 §3).
    BadServerSignature,
    /// A message came in a state that does not expect it.
    OutOfOrder,
}

impl fmt::Display for ScramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScramError::BadServerFirst => write!(f, "malformed server-first-message"),
            ScramError::NonceMismatch => write!(f, "server nonce does not extend ours"),
            ScramError::ServerError(e) => write!(f, "server error e={e}"),
            ScramError::BadServerSignature => write!(f, "server signature mismatch"),
            ScramError::OutOfOrder => write!(f, "SCRAM message out of order"),
        }
    }
}

/// Cache key: the hash, SHA-256 of the password, the salt and the iteration count.
type CacheKey = (ScramHash, Vec<u8>, Vec<u8>, u32);

/// SaltedPassword per (hash, password, salt, iterations). RFC 5802 §5.1 lets a client keep
/// it instead of the password. PBKDF2 is most of the generator's CPU per login (the server
/// stores derived keys and skips it), so reusing it keeps the generator from becoming the
/// bottleneck of the `login` scenario; `--scram-cache FILE` keeps it across runs.
fn cache() -> &'static Mutex<HashMap<CacheKey, Vec<u8>>> {
    static CACHE: OnceLock<Mutex<HashMap<CacheKey, Vec<u8>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Entries beyond this are recomputed rather than stored.
const CACHE_MAX: usize = 200_000;

fn salted_password(hash: ScramHash, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
    let key = (
        hash,
        sha2::Sha256::digest(password.as_bytes()).to_vec(),
        salt.to_vec(),
        iterations,
    );
    if let Ok(map) = cache().lock()
        && let Some(v) = map.get(&key)
    {
        return v.clone();
    }
    let v = hash.hi(password.as_bytes(), salt, iterations);
    if let Ok(mut map) = cache().lock()
        && map.len() < CACHE_MAX
    {
        map.insert(key, v.clone());
    }
    v
}

fn hash_name(h: ScramHash) -> &'static str {
    match h {
        ScramHash::Sha1 => "sha1",
        ScramHash::Sha256 => "sha256",
    }
}

/// Loads salted passwords saved by [`save_cache`]; malformed lines are skipped. Returns
/// how many entries were read. A missing file is an empty cache.
pub fn load_cache(path: &std::path::Path) -> std::io::Result<usize> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let Ok(mut map) = cache().lock() else {
        return Ok(0);
    };
    let mut n = 0;
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let [h, iterations, pw, salt, salted] = f[..] else {
            continue;
        };
        let hash = match h {
            "sha1" => ScramHash::Sha1,
            "sha256" => ScramHash::Sha256,
            _ => continue,
        };
        let (Ok(iterations), Ok(pw), Ok(salt), Ok(salted)) = (
            iterations.parse(),
            BASE64.decode(pw),
            BASE64.decode(salt),
            BASE64.decode(salted),
        ) else {
            continue;
        };
        map.insert((hash, pw, salt, iterations), salted);
        n += 1;
    }
    Ok(n)
}

/// Writes the cache: one `hash iterations sha256(password) salt salted-password` line per
/// entry, base64. The file is password-equivalent for the test accounts: keep it to
/// benchmarks.
pub fn save_cache(path: &std::path::Path) -> std::io::Result<usize> {
    let Ok(map) = cache().lock() else {
        return Ok(0);
    };
    let mut out = String::new();
    for ((h, pw, salt, iterations), salted) in map.iter() {
        out.push_str(&format!(
            "{} {iterations} {} {} {}\n",
            hash_name(*h),
            BASE64.encode(pw),
            BASE64.encode(salt),
            BASE64.encode(salted)
        ));
    }
    std::fs::write(path, out)?;
    Ok(map.len())
}

/// One client-side SCRAM exchange.
pub struct ScramClient {
    hash: ScramHash,
    password: String,
    nonce: String,
    client_first_bare: String,
    /// The ServerSignature we expect in `v=`, once the proof was sent.
    expected_server_sig: Option<Vec<u8>>,
}

impl ScramClient {
    /// `nonce` should be random printable ASCII without `,` (RFC 5802 §5.1 `r`).
    pub fn new(hash: ScramHash, user: &str, password: &str, nonce: String) -> Self {
        // RFC 5802 §5.1: '=' and ',' in the name are escaped as =3D and =2C. SASLprep is
        // not applied: load-test names and passwords are ASCII.
        let user = user.replace('=', "=3D").replace(',', "=2C");
        ScramClient {
            hash,
            password: password.to_owned(),
            client_first_bare: format!("n={user},r={nonce}"),
            nonce,
            expected_server_sig: None,
        }
    }

    /// A fresh nonce of 24 random bytes, base64-encoded.
    pub fn random_nonce() -> String {
        let mut raw = [0u8; 24];
        // A failing OS RNG is not fatal for a load test: the nonce only has to differ.
        if getrandom::fill(&mut raw).is_err() {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            raw[..16].copy_from_slice(&t.to_le_bytes());
        }
        BASE64.encode(raw)
    }

    /// client-first-message (RFC 5802 §7): GS2 header `n,,` (no channel binding, no authzid).
    pub fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// Takes the server-first-message, returns the client-final-message with the proof.
    pub fn handle_server_first(&mut self, msg: &[u8]) -> Result<String, ScramError> {
        if self.expected_server_sig.is_some() {
            return Err(ScramError::OutOfOrder);
        }
        let msg = std::str::from_utf8(msg).map_err(|_| ScramError::BadServerFirst)?;
        let (mut r, mut s, mut i) = (None, None, None);
        for part in msg.split(',') {
            match part.split_once('=') {
                Some(("r", v)) => r = Some(v),
                Some(("s", v)) => s = Some(v),
                Some(("i", v)) => i = Some(v),
                Some(("e", v)) => return Err(ScramError::ServerError(v.to_owned())),
                _ => {}
            }
        }
        let (Some(r), Some(s), Some(i)) = (r, s, i) else {
            return Err(ScramError::BadServerFirst);
        };
        if !r.starts_with(&self.nonce) || r.len() == self.nonce.len() {
            return Err(ScramError::NonceMismatch);
        }
        let salt = BASE64.decode(s).map_err(|_| ScramError::BadServerFirst)?;
        let iterations: u32 = i.parse().map_err(|_| ScramError::BadServerFirst)?;
        if iterations == 0 {
            return Err(ScramError::BadServerFirst);
        }

        // RFC 5802 §3.
        let h = self.hash;
        let salted = salted_password(h, &self.password, &salt, iterations);
        let client_key = h.hmac(&salted, b"Client Key");
        let stored_key = h.digest(&client_key);
        // c=biws is base64("n,,"), the GS2 header echoed back.
        let without_proof = format!("c=biws,r={r}");
        let auth_message = format!("{},{msg},{without_proof}", self.client_first_bare);
        let client_sig = h.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_sig)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = h.hmac(&salted, b"Server Key");
        self.expected_server_sig = Some(h.hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)))
    }

    /// Checks the server-final-message `v=` (RFC 5802 §3: mutual authentication).
    pub fn verify_server_final(&self, msg: &[u8]) -> Result<(), ScramError> {
        let Some(expected) = &self.expected_server_sig else {
            return Err(ScramError::OutOfOrder);
        };
        let msg = std::str::from_utf8(msg).map_err(|_| ScramError::BadServerSignature)?;
        for part in msg.split(',') {
            match part.split_once('=') {
                Some(("e", v)) => return Err(ScramError::ServerError(v.to_owned())),
                Some(("v", v)) => {
                    let got = BASE64
                        .decode(v)
                        .map_err(|_| ScramError::BadServerSignature)?;
                    return if &got == expected {
                        Ok(())
                    } else {
                        Err(ScramError::BadServerSignature)
                    };
                }
                _ => {}
            }
        }
        Err(ScramError::BadServerSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5802 §5 example.
    #[test]
    fn rfc5802_sha1_vector() {
        let mut c = ScramClient::new(
            ScramHash::Sha1,
            "user",
            "pencil",
            "fyko+d2lbbFgONRv9qkxdawL".into(),
        );
        assert_eq!(c.client_first(), "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL");
        let fin = c
            .handle_server_first(
                b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
            )
            .unwrap();
        assert_eq!(
            fin,
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
        );
        c.verify_server_final(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")
            .unwrap();
        assert_eq!(
            c.verify_server_final(b"v=AAAApqV8S7suAoZWja4dJRkFsKQ="),
            Err(ScramError::BadServerSignature)
        );
    }

    /// RFC 7677 §3 example.
    #[test]
    fn rfc7677_sha256_vector() {
        let mut c = ScramClient::new(
            ScramHash::Sha256,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO".into(),
        );
        let fin = c
            .handle_server_first(
                b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            )
            .unwrap();
        assert_eq!(
            fin,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
    }

    #[test]
    fn rejects_foreign_nonce_and_server_error() {
        let mut c = ScramClient::new(ScramHash::Sha1, "u", "p", "abc".into());
        assert_eq!(
            c.handle_server_first(b"r=xyz123,s=QSXCR+Q6sek8bf92,i=4096"),
            Err(ScramError::NonceMismatch)
        );
        assert_eq!(
            c.handle_server_first(b"e=unknown-user"),
            Err(ScramError::ServerError("unknown-user".into()))
        );
    }

    #[test]
    fn cache_round_trip() {
        let dir = std::env::temp_dir().join(format!("hl-cache-{}", std::process::id()));
        let v = salted_password(ScramHash::Sha1, "pw", b"salt-rt", 64);
        save_cache(&dir).unwrap();
        cache().lock().unwrap().clear();
        assert!(load_cache(&dir).unwrap() >= 1);
        let key = (
            ScramHash::Sha1,
            sha2::Sha256::digest(b"pw").to_vec(),
            b"salt-rt".to_vec(),
            64,
        );
        assert_eq!(cache().lock().unwrap().get(&key), Some(&v));
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn escapes_username() {
        let c = ScramClient::new(ScramHash::Sha1, "a=b,c", "p", "n".into());
        assert_eq!(c.client_first(), "n,,n=a=3Db=2Cc,r=n");
    }
}
