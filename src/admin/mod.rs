//! Admin subcommands (`hearth user …`, `hearth household …`, `hearth device …`, `hearth invite`, `hearth backup`), run by the owner on the same
//! storage as the server.
//!
//! They open `hearth.db` with their own connection; WAL and the busy timeout make that safe
//! while `hearth serve` runs (DESIGN.md "Storage"). Each command returns the message to print,
//! so `main.rs` only prints and picks the exit code.

mod backup;
mod check;
mod device;
mod household;
mod invite;
mod user;

pub use backup::backup_command;
pub use check::{CheckReport, check};
pub use device::{
    DEVICE_USAGE, DeviceCommand, device_command, generate_password, parse_device_args,
};
pub use household::{HOUSEHOLD_USAGE, HouseholdCommand, household_command, parse_household_args};
pub use invite::{
    INVITE_USAGE, InviteRequest, InvitesCommand, Made, create as create_invite, invite_command,
    invites_command, parse_invite_args, parse_invites_args, utc_iso,
};

pub use user::{
    PasswordSource, USER_USAGE, UserCommand, localpart_of, parse_user_args, user_command,
    user_command_with,
};

use crate::storage::StorageError;
use std::fmt;
use std::path::PathBuf;

/// Why an admin command failed. Display says what is wrong in the owner's terms.
#[derive(Debug)]
pub enum AdminError {
    /// The command line does not parse; the message says how.
    Usage(String),
    /// `hearth household`'s command line does not parse.
    HouseholdUsage(String),
    /// `hearth invite`'s or `hearth invites`'s command line does not parse.
    InviteUsage(String),
    /// `hearth invites revoke ID` of an invitation that does not exist.
    UnknownInvite(i64),
    /// The user name is not a valid JID localpart (RFC 7622 §3.3).
    BadName {
        name: String,
        reason: String,
    },
    /// `alice@elsewhere`: the name is for another domain than this server's.
    WrongDomain {
        name: String,
        domain: String,
    },
    /// No account with that address.
    UnknownUser(String),
    /// An account with that address exists already.
    UserExists(String),
    /// `hearth household remove` of an account that is not a member.
    NotInHousehold(String),
    /// `--password-file FILE` could not be read.
    PasswordFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `--password-file -` could not read standard input.
    PasswordStdin(std::io::Error),
    /// Asking on the terminal failed (usually: there is no terminal).
    Prompt(std::io::Error),
    /// The two passwords typed at the prompt differ.
    PasswordMismatch,
    /// The password is empty; `from` names the file it came from, if any.
    EmptyPassword {
        from: Option<PathBuf>,
    },
    /// The password is not allowed (PRECIS OpaqueString, RFC 8265 §4.2).
    BadPassword(String),
    /// `hearth backup`: there is no database in the data directory yet.
    NoDatabase(PathBuf),
    Storage(StorageError),
    /// `hearth device`'s command line does not parse.
    DeviceUsage(String),
    /// `hearth device password|remove` of an account that is not a device.
    NotADevice(String),
    /// A device's generated password could not be written to the file given.
    PasswordOut {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminError::Usage(msg) => write!(f, "{msg} (see `hearth user help`)"),
            AdminError::HouseholdUsage(msg) => {
                write!(f, "{msg} (see `hearth household help`)")
            }
            AdminError::InviteUsage(msg) => write!(f, "{msg} (see `hearth invite help`)"),
            AdminError::UnknownInvite(id) => {
                write!(f, "no invitation #{id} (see `hearth invites`)")
            }
            AdminError::BadName { name, reason } => write!(f, "bad user name {name:?}: {reason}"),
            AdminError::WrongDomain { name, domain } => write!(
                f,
                "{name:?} is not an address on this server, whose domain is {domain}"
            ),
            AdminError::UnknownUser(jid) => write!(f, "no such user: {jid}"),
            AdminError::UserExists(jid) => write!(f, "user {jid} already exists"),
            AdminError::NotInHousehold(jid) => write!(f, "{jid} is not in the household"),
            AdminError::PasswordFile { path, source } => {
                write!(f, "cannot read password file {}: {source}", path.display())
            }
            AdminError::PasswordStdin(e) => {
                write!(f, "cannot read the password from standard input: {e}")
            }
            AdminError::Prompt(e) => write!(
                f,
                "cannot ask for the password ({e}); without a terminal, use --password-file"
            ),
            AdminError::PasswordMismatch => f.write_str("the two passwords differ"),
            AdminError::EmptyPassword { from: None } => f.write_str("the password is empty"),
            AdminError::EmptyPassword { from: Some(path) } => {
                write!(f, "the password in {} is empty", path.display())
            }
            AdminError::BadPassword(why) => write!(f, "unusable password: {why}"),
            AdminError::NoDatabase(path) => write!(
                f,
                "no database at {} (is the data directory or --config right?)",
                path.display()
            ),
            AdminError::Storage(e) => e.fmt(f),
            AdminError::DeviceUsage(msg) => write!(f, "{msg} (see `hearth device help`)"),
            AdminError::NotADevice(jid) => write!(f, "{jid} is not a device account"),
            AdminError::PasswordOut { path, source } => {
                write!(
                    f,
                    "cannot write the password to {}: {source}",
                    path.display()
                )
            }
        }
    }
}

impl std::error::Error for AdminError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AdminError::PasswordFile { source, .. } | AdminError::PasswordOut { source, .. } => {
                Some(source)
            }
            AdminError::PasswordStdin(e) | AdminError::Prompt(e) => Some(e),
            AdminError::Storage(e) => Some(e),
            _ => None,
        }
    }
}
