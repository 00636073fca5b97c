//! Durable state: one SQLite file, `hearth.db`, in the data directory (DESIGN.md "Storage").
//!
//! The rest of the server sees storage only through narrow traits, one per shape of data
//! (STYLE.md habit 4): [`Accounts`] here; each feature's store (rosters, offline
//! messages, blocklists, last activity) beside its module in `features/`.
//! [`Storage`] is the single implementation, on
//! rusqlite; its methods are synchronous, so async code calls them through
//! [`Storage::run_blocking`], on a few threads of storage's own (`crate::pool`).
//!
//! - `sqlite.rs`: opening the file (mode 0600, WAL, `synchronous=FULL`, foreign keys, busy
//!   timeout) and the [`Storage`] handle;
//! - `group.rs`: group commit, concurrent writes sharing one transaction and one disk sync;
//! - `migrations.rs` and `migrations/*.sql`: the schema, versioned by `PRAGMA user_version`;
//! - `accounts.rs`: accounts and credentials (argon2id for PLAIN, SCRAM keys for SCRAM);

mod accounts;
mod group;
mod migrations;
mod sqlite;

use crate::password::Credentials;
use crate::stream::sasl::{ScramCredentials, ScramHash};
use std::fmt;
use std::path::PathBuf;

pub use crate::password::{ARGON2_M_COST_KIB, ARGON2_P_COST, ARGON2_T_COST, SCRAM_ITERATIONS};
pub(crate) use accounts::{stored_bytes_in, usage_in};
pub use migrations::SCHEMA_VERSION;
pub use sqlite::{DB_FILE_NAME, Storage};

/// User accounts and their credentials.
///
/// `user` is always an already-normalized JID localpart (RFC 7622 §3.3): the callers run
/// `crate::jid::normalize_localpart` first, so storage compares plain strings.
pub trait Accounts {
    /// What `user` stores, in bytes, as [`Quota::stored_bytes`] counts it (0 for no account).
    fn stored_bytes(&self, user: &str) -> Result<u64, StorageError>;
    /// Stores a new account with credentials derived beforehand ([`Credentials::derive`]);
    /// [`StorageError::AlreadyExists`] if the name is taken.
    fn insert_account(&self, user: &str, creds: &Credentials) -> Result<(), StorageError>;
    /// Replaces the stored credentials, dropping every SCRAM key of the old password;
    /// [`StorageError::NotFound`] if there is no such account.
    fn replace_credentials(&self, user: &str, creds: &Credentials) -> Result<(), StorageError>;
    /// Whether SCRAM keys are kept and served (`[auth] scram_keys`).
    fn keeps_scram_keys(&self) -> bool;
    /// Creates an account: derives its credentials (`crate::password`) and stores them.
    /// [`StorageError::AlreadyExists`] if the name is taken, checked first so that a taken
    /// name costs no hashing. Slow (argon2id): not for an async task.
    fn create_account(&self, user: &str, password: &str) -> Result<(), StorageError> {
        if self.account_exists(user)? {
            return Err(StorageError::AlreadyExists {
                user: user.to_owned(),
            });
        }
        let creds = Credentials::derive(password, self.keeps_scram_keys())?;
        self.insert_account(user, &creds)
    }
    /// Replaces the password (and the SCRAM keys); [`StorageError::NotFound`] if there is no
    /// such account. Slow, like [`Accounts::create_account`].
    fn set_password(&self, user: &str, password: &str) -> Result<(), StorageError> {
        if !self.account_exists(user)? {
            return Err(StorageError::NotFound {
                user: user.to_owned(),
            });
        }
        let creds = Credentials::derive(password, self.keeps_scram_keys())?;
        self.replace_credentials(user, &creds)
    }
    /// Deletes an account and everything stored for it; [`StorageError::NotFound`] if there is
    /// no such account.
    fn delete_account(&self, user: &str) -> Result<(), StorageError>;
    /// All account names, sorted.
    fn list_accounts(&self) -> Result<Vec<String>, StorageError>;
    /// Whether an account of that name exists.
    fn account_exists(&self, user: &str) -> Result<bool, StorageError>;
    /// The stored argon2id PHC string that checks SASL PLAIN (RFC 4616), or `None` if there
    /// is no such account. The check itself is `crate::password`'s: the server runs it on
    /// `PasswordChecks`, which bounds how many run and wait.
    fn password_hash(&self, user: &str) -> Result<Option<String>, StorageError>;
    /// Checks a password on the calling thread, unbounded: for the admin CLI and tests.
    /// Takes about as long for an unknown user as for a known one, so timing does not tell
    /// which names exist.
    fn verify_password(&self, user: &str, password: &str) -> Result<bool, StorageError> {
        let stored = self.password_hash(user)?;
        Ok(crate::password::verify(stored.as_deref(), password)?)
    }
    /// The stored SCRAM keys (RFC 5802 §3) for one hash, or `None` if the user is unknown,
    /// has no keys for that hash, or SCRAM keys are turned off.
    fn scram_credentials(
        &self,
        user: &str,
        hash: ScramHash,
    ) -> Result<Option<ScramCredentials>, StorageError>;
}

/// How much one account may keep (`[limits]`; XEP-0205 §3 asks for storage limits per
/// account). Other users make an account's data grow (messages, subscription requests),
/// so these bound what one stranger can write to the SD card in someone's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Items in the roster (RFC 6121 §2).
    pub roster_items: usize,
    /// Offline messages waiting (XEP-0160).
    pub offline_messages: usize,
    /// Entries in the blocklist (XEP-0191).
    pub blocked: usize,
    /// UTF-8 bytes of the roster (contact JIDs, names, groups), subscription requests,
    /// offline messages and the blocklist together.
    pub stored_bytes: u64,
}

impl Quota {
    /// The defaults `[limits]` documents: far above what a family uses, small enough that
    /// a few accounts filled on purpose cannot fill a Pi's SD card.
    pub const DEFAULT: Quota = Quota {
        roster_items: 1000,
        offline_messages: 1000,
        blocked: 1000,
        stored_bytes: 16 * 1024 * 1024,
    };
}

impl Default for Quota {
    fn default() -> Quota {
        Quota::DEFAULT
    }
}

/// Which part of a [`Quota`] refused a write (nothing was written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverQuota {
    /// The count of items (roster items, messages, blocked JIDs) is at its limit.
    Items,
    /// The account's stored bytes would pass `stored_bytes`.
    Bytes,
}

/// For unit tests of the stores: a database in a new temporary directory with these
/// accounts (password "pw"); keep the directory as long as the storage.
#[cfg(test)]
pub(crate) fn test_store(users: &[&str]) -> (tempfile::TempDir, Storage) {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(dir.path()).unwrap();
    for u in users {
        s.create_account(u, "pw").unwrap();
    }
    (dir, s)
}

/// Now, in Unix seconds.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// What went wrong in storage. Display names the file and what failed.
#[derive(Debug)]
pub enum StorageError {
    /// The data directory could not be created.
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The database file could not be created (or its mode set).
    CreateFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// SQLite failed; `action` says what hearth was doing.
    Sqlite {
        path: PathBuf,
        action: &'static str,
        source: rusqlite::Error,
    },
    /// A migration script failed; the database stays at the previous version.
    Migration {
        path: PathBuf,
        version: u32,
        source: rusqlite::Error,
    },
    /// The file's schema version is one this binary does not know (written by a newer
    /// hearth): refusing to touch it.
    TooNew {
        path: PathBuf,
        found: i64,
        supported: u32,
    },
    AlreadyExists {
        user: String,
    },
    NotFound {
        user: String,
    },
    /// The password is empty or not allowed by PRECIS OpaqueString (RFC 8265 §4.2).
    InvalidPassword(String),
    /// Hashing or the system random generator failed.
    Crypto(String),
    /// The storage threads could not run the call (it panicked, or no thread could start).
    Unavailable,
}

impl From<crate::password::PasswordError> for StorageError {
    fn from(e: crate::password::PasswordError) -> StorageError {
        match e {
            crate::password::PasswordError::Crypto(why) => StorageError::Crypto(why),
            crate::password::PasswordError::Invalid(why) => StorageError::InvalidPassword(why),
            busy @ crate::password::PasswordError::Busy => StorageError::Crypto(busy.to_string()),
        }
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::CreateDir { path, source } => {
                write!(
                    f,
                    "cannot create data directory {}: {source}",
                    path.display()
                )
            }
            StorageError::CreateFile { path, source } => {
                write!(f, "cannot create database {}: {source}", path.display())
            }
            StorageError::Sqlite {
                path,
                action,
                source,
            } => write!(f, "database {}: cannot {action}: {source}", path.display()),
            StorageError::Migration {
                path,
                version,
                source,
            } => write!(
                f,
                "database {}: schema migration to version {version} failed: {source}",
                path.display()
            ),
            StorageError::TooNew {
                path,
                found,
                supported,
            } => write!(
                f,
                "database {} has schema version {found}, but this hearth knows versions 0 to \
                 {supported}: it was written by a newer hearth (or is not hearth's); upgrade \
                 hearth or restore a backup",
                path.display()
            ),
            StorageError::AlreadyExists { user } => write!(f, "account {user:?} already exists"),
            StorageError::NotFound { user } => write!(f, "no account {user:?}"),
            StorageError::InvalidPassword(why) => write!(f, "invalid password: {why}"),
            StorageError::Crypto(why) => write!(f, "password hashing failed: {why}"),
            StorageError::Unavailable => f.write_str("the storage threads could not run a call"),
        }
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StorageError::CreateDir { source, .. } | StorageError::CreateFile { source, .. } => {
                Some(source)
            }
            StorageError::Sqlite { source, .. } | StorageError::Migration { source, .. } => {
                Some(source)
            }
            _ => None,
        }
    }
}
