//! Durable state: one SQLite file, `hearth.db`, in the data directory (DESIGN.md "Storage").
//!
//! The rest of the server sees storage only through narrow traits, one per shape of data
//! (STYLE.md habit 4): for now [`Accounts`]. [`Storage`] is the single implementation, on
//! rusqlite; its methods are synchronous, so async code calls them through `smol::unblock`.
//!
//! - `sqlite.rs`: opening the file (mode 0600, WAL, `synchronous=FULL`, foreign keys, busy
//!   timeout) and the [`Storage`] handle;
//! - `migrations.rs` and `migrations/*.sql`: the schema, versioned by `PRAGMA user_version`;
//! - `accounts.rs`: accounts and credentials (argon2id for PLAIN, SCRAM keys for SCRAM).

mod accounts;
mod migrations;
mod sqlite;

use crate::stream::sasl::{ScramCredentials, ScramHash};
use std::fmt;
use std::path::PathBuf;

pub use accounts::{ARGON2_M_COST_KIB, ARGON2_P_COST, ARGON2_T_COST, SCRAM_ITERATIONS};
pub use migrations::SCHEMA_VERSION;
pub use sqlite::{DB_FILE_NAME, Storage};

/// User accounts and their credentials.
///
/// `user` is always an already-normalized JID localpart (RFC 7622 §3.3): the callers run
/// `crate::jid::normalize_localpart` first, so storage compares plain strings.
pub trait Accounts {
    /// Creates an account; [`StorageError::AlreadyExists`] if the name is taken.
    fn create_account(&self, user: &str, password: &str) -> Result<(), StorageError>;
    /// Replaces the password (and the SCRAM keys); [`StorageError::NotFound`] if there is no
    /// such account.
    fn set_password(&self, user: &str, password: &str) -> Result<(), StorageError>;
    /// Deletes an account and everything stored for it; [`StorageError::NotFound`] if there is
    /// no such account.
    fn delete_account(&self, user: &str) -> Result<(), StorageError>;
    /// All account names, sorted.
    fn list_accounts(&self) -> Result<Vec<String>, StorageError>;
    /// Whether an account of that name exists.
    fn account_exists(&self, user: &str) -> Result<bool, StorageError>;
    /// Checks a password against the stored argon2id hash (SASL PLAIN, RFC 4616). Takes about
    /// as long for an unknown user as for a known one, so timing does not tell which names
    /// exist.
    fn verify_password(&self, user: &str, password: &str) -> Result<bool, StorageError>;
    /// The stored SCRAM keys (RFC 5802 §3) for one hash, or `None` if the user is unknown,
    /// has no keys for that hash, or SCRAM keys are turned off.
    fn scram_credentials(
        &self,
        user: &str,
        hash: ScramHash,
    ) -> Result<Option<ScramCredentials>, StorageError>;
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
