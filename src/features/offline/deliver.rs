//! XEP-0160: storing messages for users with no available resource, and handing them
//! to the connection page by page.

use super::{OfflineStore as _, Stored};
use crate::features::{mam, offline};
use crate::ns;
use crate::router::im::{Im, Sender, on_pool};
use crate::stanza::{Stanza, StanzaCondition};
use crate::storage::unix_now;

impl Im<'_> {
    /// Takes up to `limit` of `user`'s offline messages out of storage, oldest first,
    /// to write to the client. `None` when storage failed (a full disk): nothing was
    /// taken, and they wait for a later login rather than risk being delivered twice.
    pub async fn offline_take(&self, user: &str, limit: usize) -> Option<Vec<(i64, String)>> {
        let u = user.to_owned();
        on_pool(self.storage, move |s| s.take_offline(&u, limit))
            .await
            .inspect_err(|e| {
                log::error!(
                    "c2s{}: storage: offline messages of {user:?} kept for later: {e}",
                    self.conn
                )
            })
            .ok()
    }

    /// Up to `limit` of `user`'s offline messages after id `after`, left in storage until
    /// acknowledged (XEP-0198); `None` when storage failed.
    pub async fn offline_peek(
        &self,
        user: &str,
        after: i64,
        limit: usize,
    ) -> Option<Vec<(i64, String)>> {
        let u = user.to_owned();
        on_pool(self.storage, move |s| s.offline_after(&u, after, limit))
            .await
            .inspect_err(|e| log::error!("c2s{}: storage: offline messages: {e}", self.conn))
            .ok()
    }

    /// Deletes offline messages the client acknowledged (XEP-0198). A failure leaves them
    /// to be delivered again at the next login: logged, nothing lost.
    pub async fn offline_delete(&self, user: &str, ids: Vec<i64>) {
        let u = user.to_owned();
        if let Err(e) = on_pool(self.storage, move |s| s.delete_offline(&u, &ids)).await {
            log::error!(
                "c2s{}: storage: acknowledged offline messages kept: {e}",
                self.conn
            );
        }
    }

    /// Puts back messages taken with [`Im::offline_take`] that could not be written.
    pub async fn offline_restore(&self, user: &str, page: Vec<(i64, String)>) {
        let u = user.to_owned();
        let n = page.len();
        if let Err(e) = on_pool(self.storage, move |s| s.restore_offline(&u, &page)).await {
            log::error!(
                "c2s{}: storage: {n} offline messages of {user:?} could not be put back: {e}",
                self.conn
            );
        }
    }

    /// XEP-0160 §3: a chat or normal message for a local account with no available
    /// resource is stored with a `<delay/>`, whether it came from a local session or
    /// another server; a full store gets `resource-constraint`, an unknown account
    /// `service-unavailable` (RFC 6121 §8.5.2.2.1), back to the sender wherever it is.
    pub(crate) async fn store_offline(&self, from: Sender<'_>, stanza: Stanza) {
        let Some(user) = stanza
            .to
            .as_ref()
            .and_then(|t| t.local())
            .map(str::to_owned)
        else {
            return;
        };
        let quota = *self.router.quota();
        let now = unix_now();
        // Archived for the recipient (XEP-0313, its <stanza-id/> stamped): the offline row
        // points at the archived copy and keeps only what delivery adds to it.
        let by = format!("{user}@{}", self.domain());
        let archived = mam::archived_id(&stanza.el, &by);
        let stored = match archived {
            Some(id) => {
                let mut suffix = mam::stanza_id(&by, id).to_xml_in(ns::CLIENT);
                crate::features::presence::delay(self.domain(), now)
                    .write_to(&mut suffix, ns::CLIENT);
                let u = user.clone();
                on_pool(self.storage, move |s| {
                    s.store_offline_archived(&u, id, &suffix, &quota)
                })
                .await
            }
            None => Ok(None),
        };
        let stored = match stored {
            Ok(Some(done)) => Ok(done),
            // Not archived (or no longer): the whole message.
            Ok(None) => {
                let xml =
                    offline::stamp(stanza.el.clone(), self.domain(), now).to_xml_in(ns::CLIENT);
                on_pool(self.storage, move |s| s.store_offline(&user, &xml, &quota)).await
            }
            Err(e) => Err(e),
        };
        let cond = match stored {
            Ok(Stored::Stored) => return,
            Ok(Stored::Full(_)) => StanzaCondition::ResourceConstraint,
            Ok(Stored::NoAccount) => StanzaCondition::ServiceUnavailable,
            Err(e) => {
                log::error!("storage: {e}");
                StanzaCondition::InternalServerError
            }
        };
        self.router.bounce(from.origin(), &stanza, cond);
    }
}
