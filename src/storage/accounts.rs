//! Accounts and credentials (DESIGN.md "Credentials").
//!
//! A password is never stored. What is stored per account:
//! - an argon2id PHC string of the PRECIS-prepared password (RFC 8265 §4.2), which checks
//!   SASL PLAIN (RFC 4616, offered only inside TLS);
//! - unless SCRAM keys are off, for SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802 §3, RFC 7677):
//!   salt, iteration count, StoredKey and ServerKey. These let a SCRAM login cost a few HMACs,
//!   but whoever steals them can impersonate the *server* to that user, and brute-force the
//!   password at PBKDF2 speed: that is the trade-off an owner may refuse by turning them off.
//!
//! Deriving those values is `crate::password`'s ([`Credentials::derive`]: argon2id, and
//! PBKDF2 to StoredKey and ServerKey); storage stores what it is given
//! ([`Accounts::insert_account`], [`Accounts::replace_credentials`]) and hands back the
//! stored PHC string ([`Accounts::password_hash`]), so a slow argon2 never holds the
//! connection lock or a storage thread.

use super::{Accounts, Storage, StorageError, unix_now};
use crate::password::Credentials;
#[cfg(test)]
use crate::password::{SCRAM_HASHES, SCRAM_ITERATIONS};
#[cfg(test)]
use crate::stream::sasl::SALT_LEN;
use crate::stream::sasl::{ScramCredentials, ScramHash};
use rusqlite::{Connection, OptionalExtension, params};

/// The SASL mechanism name a key row is stored under (RFC 5802 §4, RFC 7677 §3).
fn mechanism(hash: ScramHash) -> &'static str {
    match hash {
        ScramHash::Sha1 => "SCRAM-SHA-1",
        ScramHash::Sha256 => "SCRAM-SHA-256",
    }
}

/// What an account holds, as the quotas count it: `None` when there is no such account.
pub(crate) struct Usage {
    /// Offline messages waiting.
    pub offline_messages: u64,
    /// Bytes stored (see `migrations/0003_usage.sql`): the trigger-kept total of roster,
    /// requests and blocklist, plus the offline messages' sizes read from their index.
    pub bytes: u64,
}

/// `user`'s [`Usage`] in one statement: the account row and one pass over the offline
/// messages' index. Cached, since it runs for every stored offline message.
pub(crate) fn usage_in(conn: &Connection, user: &str) -> rusqlite::Result<Option<Usage>> {
    let (account_bytes, count, offline_bytes): (Option<i64>, i64, i64) = conn
        .prepare_cached(
            "SELECT (SELECT stored_bytes FROM accounts WHERE localpart = ?1),
                    COUNT(*), COALESCE(SUM(bytes), 0)
               FROM offline_messages WHERE localpart = ?1",
        )?
        .query_row([user], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    // Never negative: the triggers subtract only what they added.
    Ok(account_bytes.map(|account_bytes| Usage {
        offline_messages: u64::try_from(count).unwrap_or(0),
        bytes: u64::try_from(account_bytes.saturating_add(offline_bytes)).unwrap_or(0),
    }))
}

/// What `user` stores, in bytes ([`Usage::bytes`]; 0 for no account).
pub(crate) fn stored_bytes_in(conn: &Connection, user: &str) -> rusqlite::Result<u64> {
    Ok(usage_in(conn, user)?.map_or(0, |u| u.bytes))
}

impl Accounts for Storage {
    fn stored_bytes(&self, user: &str) -> Result<u64, StorageError> {
        stored_bytes_in(&self.conn(), user).map_err(self.sqlite_err("count stored bytes"))
    }

    fn keeps_scram_keys(&self) -> bool {
        self.scram_keys()
    }

    fn insert_account(&self, user: &str, creds: &Credentials) -> Result<(), StorageError> {
        // `create_account` checked the name before the expensive hashing; the INSERT still
        // catches a race with another process.
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(self.sqlite_err("start a transaction"))?;
        let inserted = tx
            .execute(
                "INSERT INTO accounts (localpart, password_hash, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (localpart) DO NOTHING",
                params![user, creds.phc, unix_now()],
            )
            .map_err(self.sqlite_err("insert an account"))?;
        if inserted == 0 {
            return Err(already_exists(user));
        }
        insert_scram_keys(self, &tx, user, &creds.scram)?;
        tx.commit().map_err(self.sqlite_err("commit a new account"))
    }

    fn replace_credentials(&self, user: &str, creds: &Credentials) -> Result<(), StorageError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(self.sqlite_err("start a transaction"))?;
        let updated = tx
            .execute(
                "UPDATE accounts SET password_hash = ?2 WHERE localpart = ?1",
                params![user, creds.phc],
            )
            .map_err(self.sqlite_err("update a password"))?;
        if updated == 0 {
            return Err(not_found(user));
        }
        // Keys derived from the old password must go even when SCRAM keys are now off.
        tx.execute("DELETE FROM scram_keys WHERE localpart = ?1", [user])
            .map_err(self.sqlite_err("delete old SCRAM keys"))?;
        insert_scram_keys(self, &tx, user, &creds.scram)?;
        tx.commit()
            .map_err(self.sqlite_err("commit a password change"))
    }

    fn delete_account(&self, user: &str) -> Result<(), StorageError> {
        // Everything else stored for the user references `accounts` with ON DELETE CASCADE.
        let conn = self.conn();
        let deleted = conn
            .execute("DELETE FROM accounts WHERE localpart = ?1", [user])
            .map_err(self.sqlite_err("delete an account"))?;
        // The household's members may have gone with it: read afresh next time.
        *self.household_cache() = None;
        drop(conn);
        if deleted == 0 {
            return Err(not_found(user));
        }
        Ok(())
    }

    fn list_accounts(&self) -> Result<Vec<String>, StorageError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT localpart FROM accounts ORDER BY localpart")
            .map_err(self.sqlite_err("list accounts"))?;
        let rows = stmt
            .query_map([], |row| row.get(0))
            .map_err(self.sqlite_err("list accounts"))?;
        rows.collect::<Result<Vec<String>, _>>()
            .map_err(self.sqlite_err("list accounts"))
    }

    fn account_exists(&self, user: &str) -> Result<bool, StorageError> {
        self.conn()
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM accounts WHERE localpart = ?1)")
            .and_then(|mut st| st.query_row([user], |row| row.get(0)))
            .map_err(self.sqlite_err("look up an account"))
    }

    fn password_hash(&self, user: &str) -> Result<Option<String>, StorageError> {
        self.conn()
            .prepare_cached("SELECT password_hash FROM accounts WHERE localpart = ?1")
            .and_then(|mut st| st.query_row([user], |row| row.get(0)).optional())
            .map_err(self.sqlite_err("look up a password hash"))
    }

    fn scram_credentials(
        &self,
        user: &str,
        hash: ScramHash,
    ) -> Result<Option<ScramCredentials>, StorageError> {
        if !self.scram_keys() {
            return Ok(None);
        }
        self.conn()
            .prepare_cached(
                "SELECT salt, iterations, stored_key, server_key FROM scram_keys
                 WHERE localpart = ?1 AND mechanism = ?2",
            )
            .and_then(|mut st| {
                st.query_row([user, mechanism(hash)], |row| {
                    Ok(ScramCredentials {
                        salt: row.get(0)?,
                        iterations: row.get(1)?,
                        stored_key: row.get(2)?,
                        server_key: row.get(3)?,
                    })
                })
                .optional()
            })
            .map_err(self.sqlite_err("look up SCRAM keys"))
    }
}

fn insert_scram_keys(
    storage: &Storage,
    tx: &rusqlite::Transaction<'_>,
    user: &str,
    keys: &[(ScramHash, ScramCredentials)],
) -> Result<(), StorageError> {
    for (hash, creds) in keys {
        tx.execute(
            "INSERT INTO scram_keys (localpart, mechanism, salt, iterations, stored_key, server_key)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                user,
                mechanism(*hash),
                creds.salt,
                creds.iterations,
                creds.stored_key,
                creds.server_key
            ],
        )
        .map_err(storage.sqlite_err("store SCRAM keys"))?;
    }
    Ok(())
}

fn already_exists(user: &str) -> StorageError {
    StorageError::AlreadyExists {
        user: user.to_owned(),
    }
}

fn not_found(user: &str) -> StorageError {
    StorageError::NotFound {
        user: user.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage() -> (tempfile::TempDir, Storage) {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        (dir, storage)
    }

    #[test]
    fn create_verify_list_delete() {
        let (_dir, s) = storage();
        assert_eq!(s.list_accounts().unwrap(), Vec::<String>::new());
        s.create_account("bob", "hunter2").unwrap();
        s.create_account("alice", "correct horse").unwrap();
        assert_eq!(s.list_accounts().unwrap(), ["alice", "bob"]);
        assert!(s.account_exists("alice").unwrap());
        assert!(s.verify_password("alice", "correct horse").unwrap());
        assert!(!s.verify_password("alice", "correct horse ").unwrap());
        assert!(!s.verify_password("alice", "hunter2").unwrap());
        assert!(!s.verify_password("nobody", "hunter2").unwrap());

        s.delete_account("alice").unwrap();
        assert!(!s.account_exists("alice").unwrap());
        assert!(!s.verify_password("alice", "correct horse").unwrap());
        assert_eq!(s.list_accounts().unwrap(), ["bob"]);
        assert!(matches!(
            s.delete_account("alice"),
            Err(StorageError::NotFound { user }) if user == "alice"
        ));
    }

    #[test]
    fn duplicate_is_refused() {
        let (_dir, s) = storage();
        s.create_account("alice", "one").unwrap();
        let err = s.create_account("alice", "two").unwrap_err();
        assert!(matches!(&err, StorageError::AlreadyExists { user } if user == "alice"));
        assert_eq!(err.to_string(), "account \"alice\" already exists");
        // The first password still holds.
        assert!(s.verify_password("alice", "one").unwrap());
    }

    #[test]
    fn stored_hash_is_argon2id_phc_not_the_password() {
        let (_dir, s) = storage();
        s.create_account("alice", "pässword").unwrap();
        let phc: String = s
            .conn()
            .query_row(
                "SELECT password_hash FROM accounts WHERE localpart = 'alice'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(!phc.contains("pässword"));
    }

    #[test]
    fn password_is_prepared_with_precis() {
        // OpaqueString maps non-ASCII spaces to U+0020 and applies NFC (RFC 8265 §4.2.1).
        let (_dir, s) = storage();
        s.create_account("alice", "e\u{301}t\u{e9}\u{a0}x").unwrap();
        assert!(s.verify_password("alice", "\u{e9}t\u{e9} x").unwrap());
    }

    #[test]
    fn bad_passwords_are_refused() {
        let (_dir, s) = storage();
        assert!(matches!(
            s.create_account("alice", ""),
            Err(StorageError::InvalidPassword(_))
        ));
        // A control character is not allowed in OpaqueString.
        assert!(matches!(
            s.create_account("alice", "a\u{7}b"),
            Err(StorageError::InvalidPassword(_))
        ));
        assert!(!s.account_exists("alice").unwrap());
        s.create_account("alice", "ok").unwrap();
        assert!(!s.verify_password("alice", "").unwrap());
        assert!(!s.verify_password("alice", "a\u{7}b").unwrap());
    }

    #[test]
    fn set_password_replaces_everything() {
        let (_dir, s) = storage();
        s.create_account("alice", "old").unwrap();
        let old = s
            .scram_credentials("alice", ScramHash::Sha256)
            .unwrap()
            .unwrap();
        s.set_password("alice", "new").unwrap();
        assert!(!s.verify_password("alice", "old").unwrap());
        assert!(s.verify_password("alice", "new").unwrap());
        let new = s
            .scram_credentials("alice", ScramHash::Sha256)
            .unwrap()
            .unwrap();
        assert_ne!(old, new);
        let expected =
            ScramCredentials::derive(ScramHash::Sha256, "new", &new.salt, new.iterations).unwrap();
        assert_eq!(new, expected);
        assert!(matches!(
            s.set_password("nobody", "x"),
            Err(StorageError::NotFound { .. })
        ));
    }

    #[test]
    fn scram_credentials_round_trip_and_match_derive() {
        let (_dir, s) = storage();
        s.create_account("alice", "pencil").unwrap();
        for hash in SCRAM_HASHES {
            let stored = s.scram_credentials("alice", hash).unwrap().unwrap();
            assert_eq!(stored.iterations, SCRAM_ITERATIONS);
            assert_eq!(stored.salt.len(), SALT_LEN);
            let expected =
                ScramCredentials::derive(hash, "pencil", &stored.salt, stored.iterations).unwrap();
            assert_eq!(stored, expected, "{hash:?}");
        }
        let sha1 = s
            .scram_credentials("alice", ScramHash::Sha1)
            .unwrap()
            .unwrap();
        let sha256 = s
            .scram_credentials("alice", ScramHash::Sha256)
            .unwrap()
            .unwrap();
        assert_eq!(sha1.stored_key.len(), 20);
        assert_eq!(sha256.stored_key.len(), 32);
        assert_ne!(sha1.salt, sha256.salt, "each hash gets its own salt");
        assert_eq!(
            s.scram_credentials("nobody", ScramHash::Sha1).unwrap(),
            None
        );
    }

    #[test]
    fn scram_keys_off() {
        let (dir, s) = storage();
        s.create_account("early", "pw").unwrap();
        let s = s.with_scram_keys(false);
        s.create_account("alice", "pw").unwrap();
        assert!(s.verify_password("alice", "pw").unwrap());
        // Nothing stored for the new account, and the old keys are not served.
        assert_eq!(
            s.scram_credentials("alice", ScramHash::Sha256).unwrap(),
            None
        );
        assert_eq!(
            s.scram_credentials("early", ScramHash::Sha256).unwrap(),
            None
        );
        let on = Storage::open(dir.path()).unwrap();
        assert_eq!(
            on.scram_credentials("alice", ScramHash::Sha256).unwrap(),
            None
        );
        // A password change with keys off removes the stale ones.
        assert!(
            on.scram_credentials("early", ScramHash::Sha1)
                .unwrap()
                .is_some()
        );
        s.set_password("early", "new").unwrap();
        assert_eq!(
            on.scram_credentials("early", ScramHash::Sha1).unwrap(),
            None
        );
        assert!(on.verify_password("early", "new").unwrap());
    }

    #[test]
    fn delete_removes_scram_keys() {
        let (_dir, s) = storage();
        s.create_account("alice", "pw").unwrap();
        s.delete_account("alice").unwrap();
        let rows: i64 = s
            .conn()
            .query_row("SELECT count(*) FROM scram_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 0);
    }

    #[test]
    fn corrupt_stored_hash_is_an_error_not_a_match() {
        let (_dir, s) = storage();
        s.create_account("alice", "pw").unwrap();
        s.conn()
            .execute("UPDATE accounts SET password_hash = 'garbage'", [])
            .unwrap();
        assert!(matches!(
            s.verify_password("alice", "pw"),
            Err(StorageError::Crypto(_))
        ));
    }

    #[test]
    fn concurrent_logins_all_finish() {
        let (_dir, s) = storage();
        s.create_account("alice", "pw").unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || s.verify_password("alice", "pw").unwrap())
            })
            .collect();
        for t in threads {
            assert!(t.join().unwrap());
        }
    }
}
