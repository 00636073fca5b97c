//! Removing an account while the server runs: its stored rows and its sessions.
//!
//! A minimal shared helper: XEP-0133 §4.2 (delete-user) uses it today; XEP-0077 §3.2
//! (a user cancelling their own registration) needs the same two steps and should call
//! this rather than grow its own.

use super::{Im, on_pool};
use crate::stanza::{StreamCondition, StreamError};
use crate::storage::{Accounts as _, StorageError};

impl Im<'_> {
    /// Deletes the account `user` (a normalized localpart) and everything stored for it
    /// (every table references `accounts` with `ON DELETE CASCADE`), then closes each of
    /// its sessions with `<not-authorized/>` (RFC 6120 §4.9.3.12: the stream's
    /// credentials no longer hold); each connection then unbinds and tells the contacts
    /// it went offline as for any disconnect. Storage first, so a session cannot write
    /// anything new for the account between the two. `Ok(false)`: no such account.
    pub(crate) async fn remove_account(&self, user: &str) -> Result<bool, StorageError> {
        let u = user.to_owned();
        match on_pool(self.storage, move |s| s.delete_account(&u)).await {
            Ok(()) => {}
            Err(StorageError::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e),
        }
        let err = StreamError::new(StreamCondition::NotAuthorized).with_text("account deleted");
        let closed = self.router.close_sessions(user, &err);
        log::info!(
            "c2s{}: account {user} deleted, {closed} session(s) closed",
            self.conn
        );
        Ok(true)
    }
}
