//! Credential checks for SASL (RFC 6120 §6), as a service the stream drivers call: the
//! network layer asks for an answer and never touches storage or argon2 itself.
//!
//! - SCRAM (RFC 5802, RFC 7677): the stored keys are looked up on storage's threads
//!   ([`crate::storage::Storage::run_blocking`]); the proof is checked by the sans-IO
//!   machine, a few HMACs.
//! - PLAIN (RFC 4616): the stored argon2id hash is looked up the same way, then checked by
//!   [`PasswordChecks`], which bounds how many checks run and wait (DESIGN.md "Numbers it
//!   is built to") and refuses at once with [`PasswordError::Busy`] when its queue is full.
//!
//! The login throttle stays with the caller: how long a client may wait depends on its
//! stream's negotiation deadline, which only the connection knows.

use crate::password::{PasswordCheckConfig, PasswordChecks, PasswordError};
use crate::storage::{Accounts as _, Storage, StorageError};
use crate::stream::sasl::{ScramCredentials, ScramHash};

/// Answers credential questions from storage and the bounded password checks; cheap to
/// clone (both are handles).
#[derive(Clone)]
pub struct Auth {
    /// Where the SCRAM keys and argon2id hashes are.
    storage: Storage,
    /// The argon2id checks for PLAIN: bounded threads, queue and memory (`[auth]`).
    passwords: PasswordChecks,
}

impl Auth {
    /// `checks` sizes the PLAIN password checks (`[auth] password_checks_at_once` and
    /// `password_check_queue`).
    pub fn new(storage: Storage, checks: PasswordCheckConfig) -> Auth {
        Auth {
            storage,
            passwords: PasswordChecks::new(checks),
        }
    }

    /// The bounded argon2id service, for modules that set passwords (a handle).
    pub fn password_checks(&self) -> PasswordChecks {
        self.passwords.clone()
    }

    /// The bounded argon2id threads, for the other work that hashes a password (a new
    /// account or password, XEP-0077).
    pub fn passwords(&self) -> &PasswordChecks {
        &self.passwords
    }

    /// The stored SCRAM keys of `user` (a normalized localpart) for `hash`, or `None` if
    /// there are none (no such user, no keys for that hash, SCRAM keys turned off): the
    /// machine then fails the exchange as it would for a wrong password (RFC 5802 §5.1
    /// lets the server go on with made-up values, so names are not revealed).
    pub async fn scram_credentials(
        &self,
        user: String,
        hash: ScramHash,
    ) -> Result<Option<ScramCredentials>, StorageError> {
        self.storage
            .run_blocking(move |s| s.scram_credentials(&user, hash))
            .await
    }

    /// Whether `password` is `user`'s (a normalized localpart): `Ok(false)` for a wrong
    /// password or an unknown user (checked against a dummy hash, same cost). Storage only
    /// looks the hash up; the argon2id work is bounded by [`PasswordChecks`] (issue 14),
    /// which answers [`PasswordError::Busy`] at once when its queue is full. A storage
    /// failure comes back as [`PasswordError::Crypto`]: either way the login cannot be
    /// decided now (`temporary-auth-failure`, RFC 6120 §6.5.8). Dropping the future before
    /// the check's turn means no hashing is done for it.
    pub async fn verify_plain(
        &self,
        user: String,
        password: String,
    ) -> Result<bool, PasswordError> {
        let stored = self
            .storage
            .run_blocking(move |s| s.password_hash(&user))
            .await
            .map_err(|e| PasswordError::Crypto(e.to_string()))?;
        self.passwords.check(stored, password).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> (tempfile::TempDir, Auth) {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        storage.create_account("alice", "correct horse").unwrap();
        let checks = PasswordCheckConfig {
            at_once: 1,
            queue: 1,
        };
        (dir, Auth::new(storage, checks))
    }

    #[test]
    fn plain_passwords_are_checked_and_unknown_users_refused() {
        let (_dir, auth) = auth();
        smol::block_on(async {
            let check = |u: &str, p: &str| auth.verify_plain(u.into(), p.into());
            assert_eq!(check("alice", "correct horse").await, Ok(true));
            assert_eq!(check("alice", "wrong").await, Ok(false));
            assert_eq!(check("nobody", "correct horse").await, Ok(false));
        });
    }

    #[test]
    fn scram_keys_are_served_for_known_users_only() {
        let (_dir, auth) = auth();
        smol::block_on(async {
            for hash in crate::password::SCRAM_HASHES {
                let alice = auth.scram_credentials("alice".into(), hash).await.unwrap();
                assert!(alice.is_some(), "{hash:?}");
                let nobody = auth.scram_credentials("nobody".into(), hash).await.unwrap();
                assert!(nobody.is_none(), "{hash:?}");
            }
        });
    }
}
