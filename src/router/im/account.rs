//! Removing an account while the server runs: its stored rows and its sessions; and
//! ending an account's sessions without removing it.
//!
//! A minimal shared helper: XEP-0133 §4.2 (delete-user) and §4.5 (end-user-session) use
//! it today; XEP-0077 §3.2 (a user cancelling their own registration) needs the same
//! steps and should call [`Im::remove_account`] rather than grow its own.

use super::{Im, on_pool};
use crate::stanza::{StreamCondition, StreamError};
use crate::storage::{Accounts as _, StorageError};

impl Im<'_> {
    /// Deletes the account `user` (a normalized localpart) and everything stored for it
    /// (every table references `accounts` with `ON DELETE CASCADE`), and ends its
    /// sessions: each is closed with `<not-authorized/>` (RFC 6120 §4.9.3.12: the
    /// stream's credentials no longer hold) and its contacts get its unavailable
    /// presence (RFC 6121 §4.5.2), sent before the roster that names them is deleted.
    /// A session bound meanwhile is closed after the deletion. `Ok(false)`: no such
    /// account (nothing is touched).
    pub(crate) async fn remove_account(&self, user: &str) -> Result<bool, StorageError> {
        let u = user.to_owned();
        if !on_pool(self.storage, move |s| s.account_exists(&u)).await? {
            return Ok(false);
        }
        let err = StreamError::new(StreamCondition::NotAuthorized).with_text("account deleted");
        let closed = self.end_sessions(user, None, &err).await;
        let u = user.to_owned();
        match on_pool(self.storage, move |s| s.delete_account(&u)).await {
            Ok(()) => {}
            Err(StorageError::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e),
        }
        let late = self.router.end_sessions(user, None, &err).len();
        log::info!(
            "c2s{}: account {user} deleted, {} session(s) closed",
            self.conn,
            closed + late
        );
        Ok(true)
    }

    /// Ends `user`'s sessions (or the one bound to `resource`): each connection closes
    /// with `err`, and the contacts get its unavailable presence (RFC 6121 §4.5.2) as for
    /// any disconnect. Returns how many were ended.
    pub(crate) async fn end_sessions(
        &self,
        user: &str,
        resource: Option<&str>,
        err: &StreamError,
    ) -> usize {
        let ended = self.router.end_sessions(user, resource, err);
        let n = ended.len();
        for (jid, e) in ended {
            self.session_replaced(&jid, e).await;
        }
        n
    }
}
