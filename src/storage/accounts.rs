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
//! Hashing happens outside the connection lock, so a slow argon2 never stalls other queries.

use super::{Accounts, Storage, StorageError, unix_now};
use crate::stream::sasl::{ScramCredentials, ScramHash, prepare_password};
use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use rusqlite::{Connection, OptionalExtension, params};
use std::sync::{Condvar, Mutex, PoisonError};

/// argon2id memory cost in KiB: 19 MiB. With [`ARGON2_T_COST`] = 2 and [`ARGON2_P_COST`] = 1
/// this is OWASP's first recommended argon2id setting (Password Storage Cheat Sheet), and the
/// `argon2` crate's default. Chosen for a Raspberry Pi: a Pi Zero 2 W checks a PLAIN login in a
/// fraction of a second, and [`MAX_CONCURRENT_HASHES`] bounds the memory to ~38 MiB even when
/// every phone in the house logs in at once after a reboot. Stored hashes carry their own
/// parameters, so changing these later does not break existing accounts.
pub const ARGON2_M_COST_KIB: u32 = 19 * 1024;
/// argon2id passes over memory; see [`ARGON2_M_COST_KIB`].
pub const ARGON2_T_COST: u32 = 2;
/// argon2id lanes: one, since a Pi has few cores and they serve other logins meanwhile.
pub const ARGON2_P_COST: u32 = 1;
/// PBKDF2 iterations for new SCRAM keys: RFC 7677 §4 asks for at least 4096, and clients
/// must recompute them at every login (a phone, an ESP32), so no more.
pub const SCRAM_ITERATIONS: u32 = 4096;

/// Random salt length for both argon2 and SCRAM (RFC 4086 randomness from the OS).
const SALT_LEN: usize = 16;

/// At most this many argon2 computations at once in the process, each holding
/// [`ARGON2_M_COST_KIB`] of memory (DESIGN.md: a Pi Zero 2 W has 512 MiB for everything).
const MAX_CONCURRENT_HASHES: usize = 2;

/// Checked instead of a real hash when the user does not exist, so that a PLAIN attempt for an
/// unknown name costs the same argon2 work and does not reveal which names exist. A hash of a
/// random password nobody knows, with the current parameters (a test checks they match).
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$f7W9wxp07qjoKTRFIPBZEA$\
    LUQN0wc8zzAj7lkPonbdbQyLPm8etGdr/SA9lDAhC38";

/// The SASL mechanism name a key row is stored under (RFC 5802 §4, RFC 7677 §3).
fn mechanism(hash: ScramHash) -> &'static str {
    match hash {
        ScramHash::Sha1 => "SCRAM-SHA-1",
        ScramHash::Sha256 => "SCRAM-SHA-256",
    }
}

/// The hashes hearth keeps SCRAM keys for.
const SCRAM_HASHES: [ScramHash; 2] = [ScramHash::Sha1, ScramHash::Sha256];

/// What an account holds, as the quotas count it: `None` when there is no such account.
pub(super) struct Usage {
    /// Offline messages waiting.
    pub offline_messages: u64,
    /// Bytes stored (see `migrations/0003_usage.sql`): the trigger-kept total of roster,
    /// requests and blocklist, plus the offline messages' sizes read from their index.
    pub bytes: u64,
}

/// `user`'s [`Usage`] in one statement: the account row and one pass over the offline
/// messages' index. Cached, since it runs for every stored offline message.
pub(super) fn usage_in(conn: &Connection, user: &str) -> rusqlite::Result<Option<Usage>> {
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
pub(super) fn stored_bytes_in(conn: &Connection, user: &str) -> rusqlite::Result<u64> {
    Ok(usage_in(conn, user)?.map_or(0, |u| u.bytes))
}

impl Accounts for Storage {
    fn stored_bytes(&self, user: &str) -> Result<u64, StorageError> {
        stored_bytes_in(&self.conn(), user).map_err(self.sqlite_err("count stored bytes"))
    }

    fn create_account(&self, user: &str, password: &str) -> Result<(), StorageError> {
        // Fail before the expensive hashing if the name is taken; the INSERT below still
        // catches a race with another process.
        if self.account_exists(user)? {
            return Err(already_exists(user));
        }
        let creds = Credentials::new(password, self.scram_keys())?;
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

    fn set_password(&self, user: &str, password: &str) -> Result<(), StorageError> {
        if !self.account_exists(user)? {
            return Err(not_found(user));
        }
        let creds = Credentials::new(password, self.scram_keys())?;
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
        let deleted = self
            .conn()
            .execute("DELETE FROM accounts WHERE localpart = ?1", [user])
            .map_err(self.sqlite_err("delete an account"))?;
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

    fn verify_password(&self, user: &str, password: &str) -> Result<bool, StorageError> {
        // A password PRECIS refuses can never have been stored; refusing it early reveals
        // nothing about the user, since it is decided before the lookup.
        let Ok(prepared) = prepare_password(password) else {
            return Ok(false);
        };
        let stored: Option<String> = self
            .conn()
            .prepare_cached("SELECT password_hash FROM accounts WHERE localpart = ?1")
            .and_then(|mut st| st.query_row([user], |row| row.get(0)).optional())
            .map_err(self.sqlite_err("look up a password hash"))?;
        match stored {
            Some(phc) => verify_argon2(&phc, &prepared),
            None => {
                // Same work as a real check, result ignored: see DUMMY_HASH.
                let _ = verify_argon2(DUMMY_HASH, &prepared);
                Ok(false)
            }
        }
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

/// Everything stored for one password, computed before the database is touched.
struct Credentials {
    /// argon2id PHC string.
    phc: String,
    /// SCRAM keys per hash; empty when SCRAM keys are off.
    scram: Vec<(ScramHash, ScramCredentials)>,
}

impl Credentials {
    fn new(password: &str, scram_keys: bool) -> Result<Credentials, StorageError> {
        if password.is_empty() {
            return Err(StorageError::InvalidPassword("it is empty".into()));
        }
        let prepared =
            prepare_password(password).map_err(|e| StorageError::InvalidPassword(e.to_string()))?;
        let phc = hash_argon2(&prepared)?;
        let mut scram = Vec::new();
        if scram_keys {
            for hash in SCRAM_HASHES {
                let salt = random_salt()?;
                let creds = ScramCredentials::derive(hash, password, &salt, SCRAM_ITERATIONS)
                    .map_err(|e| StorageError::InvalidPassword(e.to_string()))?;
                scram.push((hash, creds));
            }
        }
        Ok(Credentials { phc, scram })
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

fn argon2() -> Result<Argon2<'static>, StorageError> {
    let params = Params::new(ARGON2_M_COST_KIB, ARGON2_T_COST, ARGON2_P_COST, None)
        .map_err(|e| StorageError::Crypto(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn hash_argon2(prepared: &str) -> Result<String, StorageError> {
    let salt = random_salt()?;
    let _permit = HASH_GATE.enter();
    argon2()?
        .hash_password_with_salt(prepared.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| StorageError::Crypto(e.to_string()))
}

/// Checks `prepared` against a PHC string, with the parameters the string carries.
fn verify_argon2(phc: &str, prepared: &str) -> Result<bool, StorageError> {
    let parsed = PasswordHash::new(phc)
        .map_err(|e| StorageError::Crypto(format!("stored hash unreadable: {e}")))?;
    let _permit = HASH_GATE.enter();
    match argon2()?.verify_password(prepared.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
        Err(e) => Err(StorageError::Crypto(e.to_string())),
    }
}

fn random_salt() -> Result<[u8; SALT_LEN], StorageError> {
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt)
        .map_err(|e| StorageError::Crypto(format!("no randomness from the OS: {e}")))?;
    Ok(salt)
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

/// Lets at most `limit` argon2 computations run at once; the others wait their turn.
struct HashGate {
    running: Mutex<usize>,
    finished: Condvar,
    limit: usize,
}

/// Process-wide, since the memory it guards is the process's.
static HASH_GATE: HashGate = HashGate::new(MAX_CONCURRENT_HASHES);

/// A place in the [`HashGate`], given back on drop.
struct HashPermit<'a>(&'a HashGate);

impl HashGate {
    const fn new(limit: usize) -> HashGate {
        HashGate {
            running: Mutex::new(0),
            finished: Condvar::new(),
            limit,
        }
    }

    fn enter(&self) -> HashPermit<'_> {
        // Poisoning cannot leave the count wrong: it changes only here and in `drop`, with
        // nothing that could panic in between.
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        while *running >= self.limit {
            running = self
                .finished
                .wait(running)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *running += 1;
        HashPermit(self)
    }
}

impl Drop for HashPermit<'_> {
    fn drop(&mut self) {
        let mut running = self
            .0
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *running = running.saturating_sub(1);
        self.0.finished.notify_one();
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
    fn dummy_hash_has_current_parameters() {
        // If the parameters change, regenerate DUMMY_HASH so unknown users cost the same.
        let parsed = PasswordHash::new(DUMMY_HASH).unwrap();
        assert_eq!(parsed.algorithm.as_str(), "argon2id");
        let params = Params::try_from(&parsed).unwrap();
        assert_eq!(params.m_cost(), ARGON2_M_COST_KIB);
        assert_eq!(params.t_cost(), ARGON2_T_COST);
        assert_eq!(params.p_cost(), ARGON2_P_COST);
        assert!(!verify_argon2(DUMMY_HASH, "anything").unwrap());
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

    #[test]
    fn hash_gate_holds_back_past_its_limit() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let gate = HashGate::new(1);
        let entered = AtomicBool::new(false);
        let first = gate.enter();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let _second = gate.enter();
                entered.store(true, Ordering::SeqCst);
            });
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert!(!entered.load(Ordering::SeqCst));
            drop(first);
        });
        assert!(entered.load(Ordering::SeqCst));
        assert_eq!(*gate.running.lock().unwrap(), 0);
    }
}
