//! XEP-0160: storing messages for users with no available resource, and handing them
//! to the connection page by page.

use super::{Im, on_pool};
use crate::features::offline;
use crate::jid::FullJid;
use crate::ns;
use crate::stanza::{Stanza, StanzaCondition};
use crate::storage::{OfflineStore as _, Stored, unix_now};

impl Im<'_> {
    /// Up to `limit` of `user`'s offline messages, oldest first, with their ids.
    pub async fn offline_page(&self, user: &str, limit: usize) -> Vec<(i64, String)> {
        let u = user.to_owned();
        on_pool(self.storage, move |s| s.offline_messages(&u, limit))
            .await
            .unwrap_or_else(|e| {
                log::error!("storage: {e}");
                Vec::new()
            })
    }

    /// Forgets `user`'s offline messages up to id `through`, once written to the client.
    pub async fn offline_delivered(&self, user: &str, through: i64) {
        let u = user.to_owned();
        if let Err(e) = on_pool(self.storage, move |s| s.delete_offline(&u, through)).await {
            log::error!("storage: {e}");
        }
    }

    /// XEP-0160 §3: a chat or normal message for a local account with no available
    /// resource is stored with a `<delay/>`; a full store gets `resource-constraint`, an
    /// unknown account `service-unavailable` (RFC 6121 §8.5.2.2.1).
    pub(super) async fn store_offline(&self, from: &FullJid, stanza: Stanza) {
        let Some(user) = stanza
            .to
            .as_ref()
            .and_then(|t| t.local())
            .map(str::to_owned)
        else {
            return;
        };
        let xml =
            offline::stamp(stanza.el.clone(), self.domain(), unix_now()).to_xml_in(ns::CLIENT);
        let quota = *self.router.quota();
        let stored = on_pool(self.storage, move |s| s.store_offline(&user, &xml, &quota)).await;
        let cond = match stored {
            Ok(Stored::Stored) => return,
            Ok(Stored::Full(_)) => StanzaCondition::ResourceConstraint,
            Ok(Stored::NoAccount) => StanzaCondition::ServiceUnavailable,
            Err(e) => {
                log::error!("storage: {e}");
                StanzaCondition::InternalServerError
            }
        };
        self.router.bounce_to(from, &stanza, cond);
    }
}
