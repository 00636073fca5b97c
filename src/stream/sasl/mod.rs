//! TEMPORARY STAND-IN written by the storage branch only so that it compiles.
//! The real SASL module (RFC 5802 / RFC 7677 SCRAM) comes from the sasl branch; drop this file in
//! favour of it at merge. Same names and signatures as agreed in the briefs.
#![allow(missing_docs)]

use hmac::{Hmac, KeyInit, Mac};
use precis_profiles::OpaqueString;
use precis_profiles::precis_core::profile::PrecisFastInvocation;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::fmt;

/// The SCRAM hash functions hearth stores keys for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScramHash {
    Sha1,
    Sha256,
}

/// What a server keeps for SCRAM (RFC 5802 §3): never the password, never SaltedPassword.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramCredentials {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordError(String);

impl fmt::Display for PasswordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the password is not allowed: {}", self.0)
    }
}

impl std::error::Error for PasswordError {}

/// PRECIS OpaqueString (RFC 8265 §4.2) enforcement.
pub fn prepare_password(password: &str) -> Result<String, PasswordError> {
    OpaqueString::enforce(password)
        .map(|p| p.into_owned())
        .map_err(|e| PasswordError(e.to_string()))
}

impl ScramCredentials {
    pub fn derive(
        hash: ScramHash,
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Result<ScramCredentials, PasswordError> {
        let prepared = prepare_password(password)?;
        let (stored_key, server_key) = match hash {
            ScramHash::Sha1 => {
                let salted: [u8; 20] =
                    pbkdf2::pbkdf2_hmac_array::<Sha1, 20>(prepared.as_bytes(), salt, iterations);
                let client_key = hmac::<Hmac<Sha1>>(&salted, b"Client Key");
                let server_key = hmac::<Hmac<Sha1>>(&salted, b"Server Key");
                (Sha1::digest(&client_key).to_vec(), server_key)
            }
            ScramHash::Sha256 => {
                let salted: [u8; 32] =
                    pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(prepared.as_bytes(), salt, iterations);
                let client_key = hmac::<Hmac<Sha256>>(&salted, b"Client Key");
                let server_key = hmac::<Hmac<Sha256>>(&salted, b"Server Key");
                (Sha256::digest(&client_key).to_vec(), server_key)
            }
        };
        Ok(ScramCredentials {
            salt: salt.to_vec(),
            iterations,
            stored_key,
            server_key,
        })
    }
}

fn hmac<M: Mac + KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <M as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}
