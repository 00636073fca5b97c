//! RFC 6121 §2: roster get/set/remove against storage, and pushes.

use crate::features::presence;
use crate::features::roster::{self, RosterRequest};
use crate::features::roster::{Roster as _, RosterItem};
use crate::features::subscription::{PresenceFlow, SubType};
use crate::jid::{BareJid, FullJid};
use crate::router::im::{Im, on_pool, push_id};
use crate::router::{Interest, Origin};
use crate::stanza::{StanzaCondition, StanzaError};
use crate::storage::{OverQuota, StorageError};
use crate::xml::Element;

/// What follows a roster result: the push of the change (§2.1.6), and for a removal the
/// subscriptions it cancels (§2.5.2).
pub(crate) enum AfterReply {
    Push(u64, Element),
    Removed(u64, RosterItem),
}

impl Im<'_> {
    /// A roster iq from the account's own client (RFC 6121 §2): the result, after the
    /// change is pushed to the account's interested resources (§2.1.6) and, for a removal,
    /// the subscriptions it cancels (§2.5.2). The pushes are queued, the result written
    /// straight to the client, so the client that made the change reads its answer first
    /// (§2.3.2).
    pub(crate) async fn roster_iq(
        &self,
        from: &FullJid,
        req: RosterRequest,
    ) -> Result<Option<Element>, StanzaError> {
        let (payload, then) = self.roster_request(from, req).await?;
        let Some(user) = from.local() else {
            return Ok(payload);
        };
        match then {
            None => {}
            Some(AfterReply::Push(version, item)) => self.push(user, version, item),
            Some(AfterReply::Removed(version, item)) => {
                self.push(user, version, roster::removed_element(&item.jid));
                self.after_removal(&from.bare(), &item).await;
            }
        }
        Ok(payload)
    }

    pub(crate) async fn roster_request(
        &self,
        from: &FullJid,
        req: RosterRequest,
    ) -> Result<(Option<Element>, Option<AfterReply>), StanzaError> {
        let Some(user) = from.local().map(str::to_owned) else {
            return Err(StanzaError::new(StanzaCondition::Forbidden));
        };
        let internal = |e: StorageError| {
            log::error!("storage: {e}");
            StanzaError::new(StanzaCondition::InternalServerError)
        };
        match req {
            RosterRequest::Get { ver } => {
                self.router.set_interested(from, Interest::Roster);
                let u = user.clone();
                let (version, items) = on_pool(self.storage, move |s| s.roster(&u))
                    .await
                    .map_err(internal)?;
                // §2.6.3: a client whose cached version is current gets an empty
                // result; changes reach it as pushes.
                if ver
                    .as_deref()
                    .is_some_and(|v| roster::is_current(v, version))
                {
                    return Ok((None, None));
                }
                let query = roster::roster_query(version, &items);
                Ok((Some(query), None))
            }
            RosterRequest::Set { jid, name, groups } => {
                let u = user.clone();
                let j = jid.clone();
                let quota = *self.router.quota();
                let change = on_pool(self.storage, move |s| {
                    s.set_roster_item(&u, &j, name.as_deref(), &groups, &quota)
                })
                .await
                .map_err(internal)?;
                let change = match change {
                    Ok(change) => change,
                    Err(OverQuota::Items) => {
                        return Err(StanzaError::new(StanzaCondition::NotAllowed)
                            .with_text("the roster is full"));
                    }
                    Err(OverQuota::Bytes) => {
                        return Err(StanzaError::new(StanzaCondition::ResourceConstraint)
                            .with_text("the account's storage is full"));
                    }
                };
                let item = roster::item_element(&change.item);
                Ok((None, Some(AfterReply::Push(change.version, item))))
            }
            RosterRequest::Remove { jid } => {
                let u = user.clone();
                let j = jid.clone();
                let removed = on_pool(self.storage, move |s| s.remove_roster_item(&u, &j))
                    .await
                    .map_err(internal)?;
                let Some(removed) = removed else {
                    // §2.5.3: removing what is not there.
                    return Err(StanzaError::new(StanzaCondition::ItemNotFound));
                };
                Ok((
                    None,
                    Some(AfterReply::Removed(removed.version, removed.item)),
                ))
            }
        }
    }

    /// §2.5.2: removing an item cancels the subscriptions both ways: `unsubscribe` if the
    /// user was subscribed (or asking), `unsubscribed` if the contact was (or asking),
    /// sent by the server on the user's behalf to a contact here or on another server.
    pub(crate) async fn after_removal(&self, bare: &BareJid, item: &RosterItem) {
        let s = item.state;
        if s.subscription.has_from() {
            if let Some(user) = bare.local() {
                self.presence_flow(user, &item.jid, PresenceFlow::Stop);
            }
        }
        if s.subscription.has_to() || s.pending_out {
            let el = presence::subscription("unsubscribe", bare.as_str(), item.jid.as_str());
            self.send_subscription(Origin::Server, bare, &item.jid, SubType::Unsubscribe, el)
                .await;
        }
        if s.subscription.has_from() || s.pending_in {
            let el = presence::subscription("unsubscribed", bare.as_str(), item.jid.as_str());
            self.send_subscription(Origin::Server, bare, &item.jid, SubType::Unsubscribed, el)
                .await;
        }
    }

    /// XEP-0077 §3.2 (`Hook::AccountRemoved`): before `account`'s rows go, its contacts
    /// here and on other servers are told as if each roster item were removed (§2.5.2:
    /// `unavailable` from its available resources to those who saw them, `unsubscribe`
    /// and `unsubscribed`; requests it never answered are refused), and every local
    /// roster that still lists it loses the item,
    /// with a push (§2.1.6), so a later account of the same name inherits nothing.
    pub(crate) async fn account_removed(&self, account: &BareJid) {
        let Some(user) = self.local_user(account).map(str::to_owned) else {
            return;
        };
        let u = user.clone();
        let items = match on_pool(self.storage, move |s| s.roster(&u)).await {
            Ok((_, items)) => items,
            Err(e) => {
                log::error!("storage: {e}");
                Vec::new()
            }
        };
        for item in &items {
            self.after_removal(account, item).await;
        }
        // Requests waiting with no roster item: refused (§3.2.1).
        let u = user.clone();
        let waiting = on_pool(self.storage, move |s| {
            crate::features::register::RemovalStore::requests_without_item(s, &u)
        })
        .await
        .unwrap_or_else(|e| {
            log::error!("storage: {e}");
            Vec::new()
        });
        for jid in waiting.iter().filter_map(|j| BareJid::parse(j).ok()) {
            let el = presence::subscription("unsubscribed", account.as_str(), jid.as_str());
            self.send_subscription(Origin::Server, account, &jid, SubType::Unsubscribed, el)
                .await;
        }
        let jid = account.clone();
        let owners = on_pool(self.storage, move |s| {
            crate::features::register::RemovalStore::rosters_listing(s, &jid)
        })
        .await
        .unwrap_or_else(|e| {
            log::error!("storage: {e}");
            Vec::new()
        });
        for owner in owners.into_iter().filter(|o| *o != user) {
            let (o, jid) = (owner.clone(), account.clone());
            match on_pool(self.storage, move |s| s.remove_roster_item(&o, &jid)).await {
                Ok(Some(change)) => {
                    self.push(&owner, change.version, roster::removed_element(account))
                }
                Ok(None) => {}
                Err(e) => log::error!("storage: {e}"),
            }
        }
    }

    /// A roster push of `item` to every interested resource of `user` (§2.1.6).
    pub(crate) fn push(&self, user: &str, version: u64, item: Element) {
        self.router
            .push_to_interested(user, Interest::Roster, |to| {
                roster::push(to, &push_id(), version, item.clone())
            });
    }
}
