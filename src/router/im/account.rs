//! Removing an account while the server runs: its stored rows and its sessions; and
//! ending an account's sessions without removing it.
//!
//! One way out for an account, whoever asks: its owner cancelling the registration
//! (XEP-0077 §3.2) or an admin deleting it (XEP-0133 §4.2); and ending an account's
//! sessions without removing it (XEP-0133 §4.5).

use super::{Im, Sender, on_pool};
use crate::features::{Hook, HookCx};
use crate::jid::BareJid;
use crate::stanza::{StreamCondition, StreamError};
use crate::storage::{Accounts as _, StorageError};

impl Im<'_> {
    /// Removes the account `user` (a normalized localpart), at the request of `by`:
    /// 1. the modules taking part in [`Hook::AccountRemoved`] act while its rows are still
    ///    there: its contacts here and on other servers get its unavailable presence and
    ///    the subscriptions end both ways (RFC 6121 §2.5.2), local rosters lose it;
    /// 2. everything stored for it goes (every table references `accounts` with
    ///    `ON DELETE CASCADE`);
    /// 3. its sessions are closed with `<not-authorized/>` (RFC 6120 §4.9.3.12: the
    ///    stream's credentials no longer hold; XEP-0077 §3.2), the one that asked after
    ///    reading its answer.
    ///
    /// `Ok(false)`: no such account (nothing is touched).
    pub(crate) async fn remove_account(
        &self,
        by: Sender<'_>,
        user: &str,
    ) -> Result<bool, StorageError> {
        let u = user.to_owned();
        if !on_pool(self.storage, move |s| s.account_exists(&u)).await? {
            return Ok(false);
        }
        if let Ok(bare) = BareJid::new(Some(user), self.domain()) {
            let cx = HookCx {
                im: *self,
                from: by,
            };
            for m in self.modules.hooked(Hook::AccountRemoved) {
                m.account_removed(&cx, &bare).await;
            }
        }
        let u = user.to_owned();
        match on_pool(self.storage, move |s| s.delete_account(&u)).await {
            Ok(()) => {}
            Err(StorageError::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e),
        }
        let err =
            StreamError::new(StreamCondition::NotAuthorized).with_text("the account was removed");
        // Out of the router at once (nothing more is delivered to them); the contacts
        // were told by the hooks, so the end of these sessions is not broadcast again.
        let closed = self.router.end_sessions(user, None, &err).len();
        log::info!(
            "c2s{}: account {user} removed by {}, {closed} session(s) closed",
            self.conn,
            by.as_str()
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
