//! RFC 6121 §2: roster get/set/remove against storage, and pushes.

use crate::features::Hook;
use crate::features::presence;
use crate::features::roster::{self, RosterRequest};
use crate::features::roster::{Roster as _, RosterItem};
use crate::features::subscription::{PresenceFlow, SubState, SubType};
use crate::jid::{BareJid, FullJid};
use crate::router::im::{Im, on_pool, push_id};
use crate::router::{Interest, Origin};
use crate::stanza::{StanzaCondition, StanzaError};
use crate::storage::{OverQuota, StorageError};
use crate::xml::Element;

/// What follows a roster result: the push of the change (§2.1.6), and for a removal the
/// subscriptions it cancels (§2.5.2).
pub(crate) enum AfterReply {
    /// The item for this contact changed.
    Push(BareJid),
    /// The stored item was deleted.
    Removed(RosterItem),
}

impl Im<'_> {
    /// `user`'s roster as the server shows it and acts on it (RFC 6121 §2 gets and
    /// pushes, §4 presence): the stored version and items, then what the
    /// [`Hook::RosterView`] modules add (the household). The version is read before
    /// anything the modules read, so a change another process commits in between (the
    /// admin CLI) can only leave newer items under an older version, which a client
    /// fetches again, never older items under the new version it would keep.
    pub(crate) async fn roster_view(
        &self,
        user: &str,
    ) -> Result<(u64, Vec<RosterItem>), StorageError> {
        let u = user.to_owned();
        let (version, mut items) = on_pool(self.storage, move |s| s.roster(&u)).await?;
        for m in self.modules.hooked(Hook::RosterView) {
            m.roster_view(*self, user, &mut items).await?;
        }
        Ok((version, items))
    }

    /// `user`'s subscription state with `contact` as [`Im::roster_view`] shows it.
    pub(crate) async fn sub_state_view(
        &self,
        user: &str,
        contact: &BareJid,
    ) -> Result<SubState, StorageError> {
        let (u, c) = (user.to_owned(), contact.clone());
        let mut state = on_pool(self.storage, move |s| s.sub_state(&u, &c)).await?;
        for m in self.modules.hooked(Hook::RosterView) {
            m.subscription_view(*self, user, contact, &mut state)
                .await?;
        }
        Ok(state)
    }

    /// The roster push (§2.1.6) announcing `user`'s item for `contact` as
    /// [`Im::roster_view`] now shows it: the item, or its removal (§2.5.2) when the roster
    /// no longer has one. Not sent when storage fails (logged; the client learns at its
    /// next roster get, whose version has changed).
    pub(crate) async fn push_view(&self, user: &str, contact: &BareJid) {
        match self.roster_view(user).await {
            Ok((version, items)) => {
                let el = match items.iter().find(|i| i.jid == *contact) {
                    Some(item) => roster::item_element(item),
                    None => roster::removed_element(contact),
                };
                self.push(user, version, el);
            }
            Err(e) => log::error!("storage: roster push to {user} not sent: {e}"),
        }
    }

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
        // Pushed as the roster view shows the item: a household member's stays, with
        // `subscription='both'`, whatever the stored item says (features::household).
        match then {
            None => {}
            Some(AfterReply::Push(jid)) => self.push_view(user, &jid).await,
            Some(AfterReply::Removed(item)) => {
                self.push_view(user, &item.jid).await;
                self.after_removal(&from.bare(), &item, false).await;
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
                let (version, items) = self.roster_view(&user).await.map_err(internal)?;
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
                Ok((None, Some(AfterReply::Push(change.item.jid))))
            }
            RosterRequest::Remove { jid } => {
                let u = user.clone();
                let j = jid.clone();
                let removed = on_pool(self.storage, move |s| s.remove_roster_item(&u, &j))
                    .await
                    .map_err(internal)?;
                let Some(removed) = removed else {
                    // An item only the roster view adds (a household member, with no item
                    // of the user's own) is not the user's to remove: the household's
                    // owner takes people out of it.
                    let state = self.sub_state_view(&user, &jid).await.map_err(internal)?;
                    if state.subscription.has_from() || state.subscription.has_to() {
                        return Err(StanzaError::new(StanzaCondition::NotAllowed).with_text(
                            "a member of the household, which the server's owner manages",
                        ));
                    }
                    // §2.5.3: removing what is not there.
                    return Err(StanzaError::new(StanzaCondition::ItemNotFound));
                };
                Ok((None, Some(AfterReply::Removed(removed.item))))
            }
        }
    }

    /// §2.5.2: removing an item cancels the subscriptions both ways: `unsubscribe` if the
    /// user was subscribed (or asking), `unsubscribed` if the contact was (or asking),
    /// sent by the server on the user's behalf to a contact here or on another server.
    /// `account_gone`: the whole account is being removed (XEP-0077 §3.2), so its
    /// presence stops for everyone, household members included.
    pub(crate) async fn after_removal(
        &self,
        bare: &BareJid,
        item: &RosterItem,
        account_gone: bool,
    ) {
        let s = item.state;
        if s.subscription.has_from() {
            if let Some(user) = bare.local() {
                if account_gone || !self.still_sees(user, &item.jid).await {
                    self.presence_flow(user, &item.jid, PresenceFlow::Stop)
                        .await;
                }
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

    /// Whether `contact` still has a `from` subscription to `user`'s presence in the
    /// roster view once the stored one is gone (a household member keeps seeing the
    /// user), so that its presence is not stopped (§3.2.2, §3.3.3); not when storage
    /// cannot tell.
    pub(crate) async fn still_sees(&self, user: &str, contact: &BareJid) -> bool {
        self.sub_state_view(user, contact)
            .await
            .map(|s| s.subscription.has_from())
            .unwrap_or_else(|e| {
                log::error!("storage: {e}");
                false
            })
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
            self.after_removal(account, item, true).await;
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
