//! XEP-0012: last activity of an account, for those allowed to see its presence.

use super::LastActivity as _;
use crate::features::last;
use crate::jid::{BareJid, FullJid};
use crate::router::im::{Im, on_pool};
use crate::stanza::{StanzaCondition, StanzaError};
use crate::storage::{Accounts as _, unix_now};
use crate::xml::Element;

impl Im<'_> {
    /// XEP-0012 §4: the account of `from` has no resource left online: now is when it
    /// was last seen, `status` what it said then.
    pub(crate) async fn record_last_activity(&self, from: &FullJid, status: String) {
        let Some(user) = from.local().map(str::to_owned) else {
            return;
        };
        if let Err(e) = on_pool(self.storage, move |s| {
            s.set_last_activity(&user, unix_now(), &status)
        })
        .await
        {
            log::error!("c2s{}: storage: {e}", self.conn);
        }
    }

    /// XEP-0012 §4: when the account at `to` was last online, for `asker` (the bare JID
    /// of the sender, local or on another server) if it may see that account's presence
    /// (a `from` subscription, and no block either way) or is that account.
    pub(crate) async fn last_activity(
        &self,
        asker: &BareJid,
        to: &BareJid,
    ) -> Result<Element, StanzaError> {
        let Some(owner) = self.local_user(to).map(str::to_owned) else {
            return Err(StanzaError::new(StanzaCondition::ServiceUnavailable));
        };
        let me = asker.clone();
        let is_self = *to == me;
        if !is_self && !self.presence_allowed(&owner, &me).await {
            return Err(StanzaError::new(StanzaCondition::Forbidden));
        }
        let internal = |e: crate::storage::StorageError| {
            log::error!("storage: {e}");
            StanzaError::new(StanzaCondition::InternalServerError)
        };
        // The roster view: a household member sees the others' presence, so their last
        // activity too.
        let allowed = is_self
            || self
                .sub_state_view(&owner, &me)
                .await
                .map_err(internal)?
                .subscription
                .has_from();
        let o = owner.clone();
        let (exists, last) = on_pool(self.storage, move |s| {
            Ok((s.account_exists(&o)?, s.last_activity(&o)?))
        })
        .await
        .map_err(internal)?;
        if !exists {
            return Err(StanzaError::new(StanzaCondition::ServiceUnavailable));
        }
        if !allowed {
            // §4: only those allowed to see the presence learn when it was last seen.
            return Err(StanzaError::new(StanzaCondition::Forbidden));
        }
        let available = !self.router.available_resources(&owner).is_empty();
        last::answer(available, last, unix_now())
    }
}
