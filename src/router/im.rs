//! The async path for stanzas that need storage: rosters (RFC 6121 §2), subscriptions
//! (§3), presence broadcast and probes (§4), and offline messages (XEP-0160).
//!
//! The connection task awaits [`Im::route`] for every stanza its client sends, so a
//! client's stanzas are handled in order. What is addressed to that client itself (iq
//! results, probe answers, waiting requests) is written straight into the connection's
//! output rather than its router queue: a user with many contacts online must not
//! overflow their own queue by logging in. Offline messages, possibly many, are fetched
//! page by page by the connection ([`Im::offline_page`]) and deleted once written. Decisions are made by the sans-IO modules in `features/`
//! (`roster`, `subscription`, `presence`, `offline`); storage runs on the blocking pool
//! (`smol::unblock`), never under the router's lock; the router then delivers.
//!
//! Every contact here is local: with no federation yet, a subscription or presence for
//! another domain goes no further (the router bounces what it can't deliver).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::features::blocking::{self, BlockRequest};
use crate::features::presence;
use crate::features::roster::{self, NS_ROSTER, RosterRequest};
use crate::features::subscription::{self, Direction, Outcome, PresenceFlow, SubType};
use crate::features::{last, offline};
use crate::jid::{BareJid, FullJid, Jid};
use crate::ns;
use crate::stanza::{Kind, Stanza, StanzaCondition, StanzaError};
use crate::storage::{
    Accounts as _, BlockList as _, LastActivity as _, OfflineStore as _, Roster as _, RosterItem,
    Storage, StorageError, Stored, unix_now,
};
use crate::xml::Element;

use super::{Interest, Router};

/// Who blocked whom, for a stanza between two addresses (XEP-0191 §3.5, §3.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Blocked {
    No,
    /// The sender blocked the recipient: the sender gets `not-acceptable` + `<blocked/>`.
    BySender,
    /// The recipient blocked the sender: dropped, or `service-unavailable` for messages
    /// and iq requests, as if the recipient did not exist.
    ByRecipient,
}

/// The two things every handler here needs.
#[derive(Clone, Copy)]
pub struct Im<'a> {
    pub router: &'a Router,
    pub storage: &'a Storage,
}

/// Ids for roster pushes; unique per process is enough (the client echoes them back).
static NEXT_PUSH: AtomicU64 = AtomicU64::new(1);

fn push_id() -> String {
    format!("push{}", NEXT_PUSH.fetch_add(1, Ordering::Relaxed))
}

/// What the connection does after [`Im::route`].
#[derive(Debug, Default)]
#[must_use]
pub struct Routed {
    /// The client became able to take its offline messages (XEP-0160 §3): fetch them with
    /// [`Im::offline_page`] and write them, then [`Im::offline_delivered`].
    pub offline: bool,
}

/// Messages written to a client between flushes when it collects its offline messages.
pub const OFFLINE_PAGE: usize = 64;

/// What follows a roster result: the push of the change (§2.1.6), and for a removal the
/// subscriptions it cancels (§2.5.2).
enum AfterReply {
    Push(u64, Element),
    Removed(u64, RosterItem),
}

/// Runs a storage call on the blocking pool.
async fn blocking<T: Send + 'static>(
    storage: &Storage,
    f: impl FnOnce(&Storage) -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    let storage = storage.clone();
    smol::unblock(move || f(&storage)).await
}

impl Im<'_> {
    fn domain(&self) -> &str {
        self.router.domain()
    }

    /// The local account a JID names, if it is one of ours.
    fn local_user<'j>(&self, jid: &'j BareJid) -> Option<&'j str> {
        if jid.domain() == self.domain() {
            jid.local()
        } else {
            None
        }
    }

    /// Routes one stanza from the local session `from` (its `from` already stamped).
    /// Stanzas for `from` itself are appended to `out` (serialized, `jabber:client`).
    pub async fn route(&self, from: &FullJid, stanza: Stanza, out: &mut String) -> Routed {
        match stanza.kind {
            Kind::Iq => self.iq(from, stanza, out).await,
            Kind::Presence => return self.presence(from, stanza, out).await,
            Kind::Message => {
                if self.refused_for_blocking(from, &stanza, out).await {
                    return Routed::default();
                }
                if let Some(undelivered) = self.router.route(from, stanza) {
                    self.store_offline(from, undelivered).await
                }
            }
        }
        Routed::default()
    }

    // -- blocking (XEP-0191) ------------------------------------------------------------

    /// `user`'s blocklist, from the router's cache or from storage. Cached when it is
    /// not empty or the user is online, so messages to made-up names cannot fill the cache.
    async fn blocklist(&self, user: &str) -> Arc<[String]> {
        if let Some(l) = self.router.cached_blocklist(user) {
            return l;
        }
        let u = user.to_owned();
        match blocking(self.storage, move |s| s.blocklist(&u)).await {
            Ok(v) => {
                let l: Arc<[String]> = v.into();
                if !l.is_empty() || self.router.has_sessions(user) {
                    self.router.cache_blocklist(user, l.clone());
                }
                l
            }
            Err(e) => {
                log::error!("storage: {e}");
                Arc::from(Vec::new())
            }
        }
    }

    /// Whether the local user `from` and `to` blocked each other.
    async fn blocked(&self, from: &FullJid, to: &Jid) -> Blocked {
        let Some(user) = from.local() else {
            return Blocked::No;
        };
        if blocking::is_blocked(&self.blocklist(user).await, to) {
            return Blocked::BySender;
        }
        let to_bare = to.bare();
        if let Some(recipient) = self.local_user(&to_bare) {
            let sender = Jid::from(from.clone());
            if recipient != user && blocking::is_blocked(&self.blocklist(recipient).await, &sender)
            {
                return Blocked::ByRecipient;
            }
        }
        Blocked::No
    }

    /// Applies XEP-0191 §3.5/§3.6 to a stanza for another account: true when it was
    /// refused (and the sender told, where the XEP says so).
    async fn refused_for_blocking(
        &self,
        from: &FullJid,
        stanza: &Stanza,
        out: &mut String,
    ) -> bool {
        let Some(to) = &stanza.to else { return false };
        if to.local().is_none() || to.bare() == from.bare() {
            return false;
        }
        match self.blocked(from, to).await {
            Blocked::No => false,
            Blocked::BySender => {
                if let Some(e) = blocking::blocked_error(&stanza.el) {
                    e.write_to(out, ns::CLIENT);
                }
                true
            }
            Blocked::ByRecipient => {
                let is_request = stanza.kind == Kind::Message
                    || (stanza.kind == Kind::Iq
                        && stanza.iq_type().is_some_and(|t| t.is_request()));
                if is_request {
                    self.router
                        .bounce_to(from, stanza, StanzaCondition::ServiceUnavailable);
                }
                true
            }
        }
    }

    /// Whether presence may flow between `user` and the local `contact` (neither blocked
    /// the other).
    async fn presence_allowed(&self, user: &str, contact: &BareJid) -> bool {
        let Some(contact_user) = self.local_user(contact) else {
            return true;
        };
        if blocking::is_blocked(&self.blocklist(user).await, &Jid::from(contact.clone())) {
            return false;
        }
        match BareJid::new(Some(user), self.domain()) {
            Ok(me) => !blocking::is_blocked(&self.blocklist(contact_user).await, &Jid::from(me)),
            Err(_) => false,
        }
    }

    /// A blocking request from the account's own client (XEP-0191 §3.1-§3.3).
    async fn blocking_request(
        &self,
        from: &FullJid,
        req: BlockRequest,
    ) -> Result<Option<Element>, StanzaError> {
        let Some(user) = from.local().map(str::to_owned) else {
            return Err(StanzaError::new(StanzaCondition::Forbidden));
        };
        let internal = |e: StorageError| {
            log::error!("storage: {e}");
            StanzaError::new(StanzaCondition::InternalServerError)
        };
        let before = self.blocklist(&user).await;
        let (block, items): (bool, Vec<String>) = match req {
            BlockRequest::Get => {
                self.router.set_interested(from, Interest::Blocklist);
                return Ok(Some(blocking::blocklist(&before)));
            }
            BlockRequest::Block(jids) => {
                (true, jids.iter().map(|j| j.as_str().to_owned()).collect())
            }
            BlockRequest::Unblock(Some(jids)) => {
                (false, jids.iter().map(|j| j.as_str().to_owned()).collect())
            }
            BlockRequest::Unblock(None) => (false, Vec::new()),
        };
        let new_count = items.iter().filter(|j| !before.contains(j)).count();
        if block && before.len() + new_count > blocking::MAX_ITEMS {
            return Err(StanzaError::new(StanzaCondition::ResourceConstraint)
                .with_text("the blocklist is full"));
        }
        let u = user.clone();
        let list = items.clone();
        let after = blocking(self.storage, move |s| {
            if block {
                s.block(&u, &list)?;
            } else {
                s.unblock(&u, (!list.is_empty()).then_some(list.as_slice()))?;
            }
            s.blocklist(&u)
        })
        .await
        .map_err(internal)?;
        let after: Arc<[String]> = after.into();
        self.router.cache_blocklist(&user, after.clone());
        // Pushed to every resource that asked for the list (§3.2, §3.3); an empty
        // unblock means "everyone".
        self.router
            .push_to_interested(&user, Interest::Blocklist, |to| {
                blocking::push(to.as_str(), &push_id(), block, &items)
            });
        // §3.2 / §3.3: presence stops for the newly blocked and resumes for the
        // unblocked, where a subscription lets it flow.
        let changed: Vec<String> = if block {
            items.into_iter().filter(|j| !before.contains(j)).collect()
        } else {
            before
                .iter()
                .filter(|j| !after.contains(j))
                .cloned()
                .collect()
        };
        for j in changed {
            let Ok(contact) = BareJid::parse(&j) else {
                continue;
            };
            if self.local_user(&contact).is_none() {
                continue;
            }
            let u = user.clone();
            let c = contact.clone();
            let from_sub = blocking(self.storage, move |s| s.sub_state(&u, &c))
                .await
                .map(|st| st.subscription.has_from())
                .unwrap_or(false);
            if from_sub {
                let flow = if block {
                    PresenceFlow::Stop
                } else {
                    PresenceFlow::Start
                };
                self.presence_flow(&user, &contact, flow);
            }
        }
        Ok(None)
    }

    /// XEP-0012 §4: when the account at `to` was last online, for the local user `from`
    /// if it may see that account's presence (or is that account).
    async fn last_activity(&self, from: &FullJid, to: &BareJid) -> Result<Element, StanzaError> {
        let Some(owner) = self.local_user(to).map(str::to_owned) else {
            return Err(StanzaError::new(StanzaCondition::ServiceUnavailable));
        };
        let me = from.bare();
        let is_self = *to == me;
        if !is_self && !self.presence_allowed(&owner, &me).await {
            return Err(StanzaError::new(StanzaCondition::Forbidden));
        }
        let o = owner.clone();
        let (exists, allowed, last) = blocking(self.storage, move |s| {
            let exists = s.account_exists(&o)?;
            let allowed = is_self || s.sub_state(&o, &me)?.subscription.has_from();
            Ok((exists, allowed, s.last_activity(&o)?))
        })
        .await
        .map_err(|e| {
            log::error!("storage: {e}");
            StanzaError::new(StanzaCondition::InternalServerError)
        })?;
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

    /// Up to `limit` of `user`'s offline messages, oldest first, with their ids.
    pub async fn offline_page(&self, user: &str, limit: usize) -> Vec<(i64, String)> {
        let u = user.to_owned();
        blocking(self.storage, move |s| s.offline_messages(&u, limit))
            .await
            .unwrap_or_else(|e| {
                log::error!("storage: {e}");
                Vec::new()
            })
    }

    /// Forgets `user`'s offline messages up to id `through`, once written to the client.
    pub async fn offline_delivered(&self, user: &str, through: i64) {
        let u = user.to_owned();
        if let Err(e) = blocking(self.storage, move |s| s.delete_offline(&u, through)).await {
            log::error!("storage: {e}");
        }
    }

    /// A connection ended: if its session was available, it goes unavailable for
    /// everyone who saw it (RFC 6121 §4.5.2, also for a dropped connection).
    pub async fn session_ended(&self, jid: &FullJid, session: u64) {
        let Some(ended) = self.router.unbind(jid, session) else {
            return;
        };
        if !ended.was_available {
            return;
        }
        let el = Element::new("presence", ns::CLIENT)
            .with_attr("type", "unavailable")
            .with_attr("from", jid.as_str());
        if let Some(user) = jid.local() {
            // §4.5.2: the account's other resources are told too.
            self.router.deliver_to_available(user, &el);
        }
        self.broadcast_unavailable(jid, &el, ended.directed, ended.others_available)
            .await;
    }

    // -- iq ---------------------------------------------------------------------------

    async fn iq(&self, from: &FullJid, stanza: Stanza, out: &mut String) {
        let is_request = stanza.iq_type().is_some_and(|t| t.is_request());
        let payload = stanza.iq_payload().filter(|_| is_request);
        let is_roster = payload.is_some_and(|p| p.is("query", NS_ROSTER));
        let is_blocking = payload.is_some_and(blocking::is_blocking_payload);
        let is_last = payload.is_some_and(|p| p.is("query", last::NS_LAST))
            && stanza.iq_type() == Some(crate::stanza::IqType::Get)
            && stanza
                .to
                .as_ref()
                .is_some_and(|t| t.is_bare() && t.local().is_some());
        if is_last {
            let to = stanza.to.as_ref().map(Jid::bare);
            let reply = match to {
                Some(to) => match self.last_activity(from, &to).await {
                    Ok(q) => Some(stanza.iq_result(Some(q))),
                    Err(e) => stanza.error_reply(e),
                },
                None => None,
            };
            if let Some(r) = reply {
                r.write_to(out, ns::CLIENT);
            }
            return;
        }
        if !is_roster && !is_blocking {
            if self.refused_for_blocking(from, &stanza, out).await {
                return;
            }
            if let Some(s) = self.router.route(from, stanza) {
                // Only messages come back undelivered.
                log::debug!("{from}: undeliverable iq dropped: {}", s.el.name());
            }
            return;
        }
        // §2.1.5 / §2.3.3: only the account itself manages its roster.
        let own = match &stanza.to {
            None => true,
            Some(to) => to.is_bare() && to.bare() == from.bare(),
        };
        if !own {
            return self
                .router
                .bounce_to(from, &stanza, StanzaCondition::Forbidden);
        }
        if is_blocking {
            let reply = match blocking::parse(&stanza) {
                Ok(req) => match self.blocking_request(from, req).await {
                    Ok(payload) => Some(stanza.iq_result(payload)),
                    Err(e) => stanza.error_reply(e),
                },
                Err(e) => stanza.error_reply(e),
            };
            if let Some(mut r) = reply {
                r.remove_attr("from");
                r.write_to(out, ns::CLIENT);
            }
            return;
        }
        let result = match roster::parse(&stanza) {
            Ok(req) => self.roster_request(from, req).await,
            Err(e) => Err(e),
        };
        let (reply, then) = match result {
            Ok((payload, then)) => (Some(stanza.iq_result(payload)), then),
            Err(e) => (stanza.error_reply(e), None),
        };
        if let Some(mut reply) = reply {
            // The answer comes from the account itself (RFC 6121 §2.1.4 examples).
            reply.remove_attr("from");
            reply.write_to(out, ns::CLIENT);
        }
        // The result first, then the pushes (§2.3.2), so the client that made the change
        // sees its answer before the news of it.
        let Some(user) = from.local() else { return };
        match then {
            None => {}
            Some(AfterReply::Push(version, item)) => self.push(user, version, item),
            Some(AfterReply::Removed(version, item)) => {
                self.push(user, version, roster::removed_element(&item.jid));
                self.after_removal(from, &item).await;
            }
        }
    }

    async fn roster_request(
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
                let (version, items) = blocking(self.storage, move |s| s.roster(&u))
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
                let query = roster::roster_query(ver.map(|_| version), &items);
                Ok((Some(query), None))
            }
            RosterRequest::Set { jid, name, groups } => {
                let u = user.clone();
                let j = jid.clone();
                let change = blocking(self.storage, move |s| {
                    s.set_roster_item(&u, &j, name.as_deref(), &groups, roster::MAX_ITEMS)
                })
                .await
                .map_err(internal)?;
                let Some(change) = change else {
                    return Err(StanzaError::new(StanzaCondition::NotAllowed)
                        .with_text("the roster is full"));
                };
                let item = roster::item_element(&change.item);
                Ok((None, Some(AfterReply::Push(change.version, item))))
            }
            RosterRequest::Remove { jid } => {
                let u = user.clone();
                let j = jid.clone();
                let removed = blocking(self.storage, move |s| s.remove_roster_item(&u, &j))
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
    /// user was subscribed (or asking), `unsubscribed` if the contact was (or asking).
    async fn after_removal(&self, from: &FullJid, item: &RosterItem) {
        let bare = from.bare();
        let s = item.state;
        if s.subscription.has_from() {
            if let Some(user) = from.local() {
                self.presence_flow(user, &item.jid, PresenceFlow::Stop);
            }
        }
        if s.subscription.has_to() || s.pending_out {
            let el = presence::subscription("unsubscribe", bare.as_str(), item.jid.as_str());
            self.inbound_subscription(&item.jid, &bare, SubType::Unsubscribe, el)
                .await;
        }
        if s.subscription.has_from() || s.pending_in {
            let el = presence::subscription("unsubscribed", bare.as_str(), item.jid.as_str());
            self.inbound_subscription(&item.jid, &bare, SubType::Unsubscribed, el)
                .await;
        }
    }

    /// A roster push of `item` to every interested resource of `user` (§2.1.6).
    fn push(&self, user: &str, version: u64, item: Element) {
        self.router
            .push_to_interested(user, Interest::Roster, |to| {
                roster::push(to, &push_id(), version, item.clone())
            });
    }

    // -- presence ---------------------------------------------------------------------

    async fn presence(&self, from: &FullJid, stanza: Stanza, out: &mut String) -> Routed {
        let ty = stanza.el.attr("type").map(str::to_owned);
        let to_self = match &stanza.to {
            None => true,
            Some(to) => to.bare() == from.bare(),
        };
        // No 'to', or the user's own bare JID: a broadcast (§4.2.1, §4.4.1, §4.5.1).
        let is_broadcast = to_self && stanza.to.as_ref().is_none_or(Jid::is_bare);
        // XEP-0191: nothing passes between an account and someone it blocked, or who
        // blocked it (subscriptions, directed presence and probes alike).
        if !is_broadcast && self.refused_for_blocking(from, &stanza, out).await {
            return Routed::default();
        }
        match ty.as_deref() {
            None | Some("unavailable") if is_broadcast => {
                return self.broadcast(from, stanza, ty.is_none(), out).await;
            }
            Some(t) if SubType::parse(t).is_some() => {
                let (Some(sub), Some(to)) = (SubType::parse(t), &stanza.to) else {
                    return Routed::default();
                };
                if to_self {
                    // Subscribing to oneself means nothing; dropped.
                    return Routed::default();
                }
                self.outbound_subscription(from, to.bare(), sub).await
            }
            Some("probe") => {
                // §4.3: probes are the server's business; answered as if the server
                // had sent it, for a client that insists.
                if let Some(to) = &stanza.to {
                    self.answer_probe(&to.bare(), from, out).await
                }
            }
            None | Some("unavailable") => {
                // §4.6: directed presence; remembered so it is ended at logout.
                if let Some(to) = &stanza.to {
                    self.router.track_directed(from, to, ty.is_none());
                }
                let _ = self.router.route(from, stanza);
            }
            Some("error") => {
                let _ = self.router.route(from, stanza);
            }
            Some(_) => self
                .router
                .bounce_to(from, &stanza, StanzaCondition::BadRequest),
        }
        Routed::default()
    }

    /// §4.2 and §4.4 (available) or §4.5 (unavailable) broadcast by `from`.
    async fn broadcast(
        &self,
        from: &FullJid,
        stanza: Stanza,
        available: bool,
        out: &mut String,
    ) -> Routed {
        let mut el = stanza.el;
        el.remove_attr("to");
        let Some(change) = self.router.update_presence(from, &el, available) else {
            return Routed::default();
        };
        if !available {
            if change.was_available {
                self.broadcast_unavailable(from, &el, change.directed, change.others_available)
                    .await;
            }
            return Routed::default();
        }
        let Some(user) = from.local().map(str::to_owned) else {
            return Routed::default();
        };
        let u = user.clone();
        let items = match blocking(self.storage, move |s| s.roster(&u)).await {
            Ok((_, items)) => items,
            Err(e) => {
                log::error!("storage: {e}");
                Vec::new()
            }
        };
        // §4.2.2 / §4.4.2: to every contact with a subscription from the user.
        for item in items.iter().filter(|i| i.state.subscription.has_from()) {
            if !self.presence_allowed(&user, &item.jid).await {
                continue;
            }
            if let Some(contact) = self.local_user(&item.jid) {
                self.router
                    .deliver_to_available(contact, &presence::addressed(&el, item.jid.as_str()));
            }
        }
        let initial = !change.was_available;
        if initial {
            // §4.2.2 / §4.4.2: a new resource learns about the account's others.
            for p in self.router.available_presences(&user) {
                if p.attr("from") != Some(from.as_str()) {
                    presence::addressed(&p, from.as_str()).write_to(out, ns::CLIENT);
                }
            }
            // Initial presence (§4.2): probe the contacts the user is subscribed to, and
            // show the requests still waiting for an answer (§3.1.3).
            for item in items.iter().filter(|i| i.state.subscription.has_to()) {
                if self.presence_allowed(&user, &item.jid).await {
                    self.answer_probe(&item.jid, from, out).await;
                }
            }
            self.deliver_pending(&user, out).await;
        }
        // XEP-0160 §3: stored messages go to the first resource that can take bare-JID
        // messages, i.e. available with a non-negative priority.
        Routed {
            offline: presence::priority(&el) >= 0 && (initial || change.old_priority < 0),
        }
    }

    /// Unavailable from `from` to the user's contacts and directed-presence recipients
    /// (§4.5.2, §4.6.3); records the user's last activity when no resource is left.
    async fn broadcast_unavailable(
        &self,
        from: &FullJid,
        el: &Element,
        directed: Vec<Jid>,
        others_available: bool,
    ) {
        let Some(user) = from.local().map(str::to_owned) else {
            return;
        };
        let status = presence::status(el);
        let u = user.clone();
        let items = blocking(self.storage, move |s| {
            if !others_available {
                // XEP-0012 §4: when the user was last seen, and what they said.
                s.set_last_activity(&u, unix_now(), &status)?;
            }
            s.roster(&u)
        })
        .await
        .map(|(_, items)| items)
        .unwrap_or_else(|e| {
            log::error!("storage: {e}");
            Vec::new()
        });
        let mut sent: Vec<BareJid> = Vec::new();
        for item in items.iter().filter(|i| i.state.subscription.has_from()) {
            if !self.presence_allowed(&user, &item.jid).await {
                continue;
            }
            if let Some(contact) = self.local_user(&item.jid) {
                self.router
                    .deliver_to_available(contact, &presence::addressed(el, item.jid.as_str()));
                sent.push(item.jid.clone());
            }
        }
        for to in directed {
            let bare = to.bare();
            if to.is_bare() && sent.contains(&bare) {
                continue;
            }
            let stanza = Stanza {
                kind: Kind::Presence,
                el: presence::addressed(el, to.as_str()),
                to: Some(to),
            };
            let _ = self.router.route(from, stanza);
        }
    }

    /// §4.3.2: the presence of `contact` for the (local) user at `to`, if the user is
    /// subscribed to it: the last presence of each available resource, or unavailable
    /// with the time of the last logout (XEP-0203 `<delay/>`) when there is none.
    async fn answer_probe(&self, contact: &BareJid, to: &FullJid, out: &mut String) {
        let Some(owner) = self.local_user(contact).map(str::to_owned) else {
            return;
        };
        let prober = to.bare();
        let o = owner.clone();
        let p = prober.clone();
        let looked_up = blocking(self.storage, move |s| {
            let state = s.sub_state(&o, &p)?;
            let last = s.last_activity(&o)?;
            Ok((state, last))
        })
        .await;
        let (state, last) = match looked_up {
            Ok(v) => v,
            Err(e) => return log::error!("storage: {e}"),
        };
        if !state.subscription.has_from() {
            // Not allowed to see it: nothing is said (§4.3.2).
            return;
        }
        let presences = self.router.available_presences(&owner);
        if presences.is_empty() {
            let mut el = presence::unavailable(contact.as_str(), to.as_str());
            if let Some((at, status)) = last {
                if !status.is_empty() {
                    el.push_child(Element::new("status", ns::CLIENT).with_text(status));
                }
                el.push_child(presence::delay(self.domain(), at));
            }
            el.write_to(out, ns::CLIENT);
        }
        for p in presences {
            presence::addressed(&p, to.as_str()).write_to(out, ns::CLIENT);
        }
    }

    /// Sends the user's presence (or its end) to a contact whose subscription started or
    /// stopped (§3.1.5, §3.2.2, §3.3.3).
    fn presence_flow(&self, owner: &str, contact: &BareJid, flow: PresenceFlow) {
        let Some(contact_user) = self.local_user(contact) else {
            return;
        };
        match flow {
            PresenceFlow::Start => {
                for p in self.router.available_presences(owner) {
                    self.router.deliver_to_available(
                        contact_user,
                        &presence::addressed(&p, contact.as_str()),
                    );
                }
            }
            PresenceFlow::Stop => {
                for r in self.router.available_resources(owner) {
                    self.router.deliver_to_available(
                        contact_user,
                        &presence::unavailable(r.as_str(), contact.as_str()),
                    );
                }
            }
        }
    }

    // -- subscriptions ----------------------------------------------------------------

    /// §3 from the user's side: the stanza changes the user's item for `contact`, is
    /// pushed, and (per Appendix A.2) routed to the contact.
    async fn outbound_subscription(&self, from: &FullJid, contact: BareJid, ty: SubType) {
        let Some(user) = from.local().map(str::to_owned) else {
            return;
        };
        let bare = from.bare();
        let (outcome, change) = match self
            .apply(&user, &contact, ty, Direction::Outbound, None)
            .await
        {
            Some(v) => v,
            None => return,
        };
        if let (Some(version), Some(item)) = (change.0, &change.1) {
            self.push(&user, version, roster::item_element(item));
        }
        if outcome.deliver {
            // §3.1.2: the server stamps the bare JIDs on subscription stanzas.
            let el = presence::subscription(ty.as_str(), bare.as_str(), contact.as_str());
            if self.local_user(&contact).is_some() {
                self.inbound_subscription(&contact, &bare, ty, el).await;
            }
        }
        if let Some(flow) = outcome.presence {
            self.presence_flow(&user, &contact, flow);
        }
    }

    /// §3 from the contact's side: `owner` (local) receives `ty` from `sender`. Follow-ups
    /// (an automatic `subscribed` back to a local sender) are handled in the same loop.
    async fn inbound_subscription(
        &self,
        owner: &BareJid,
        sender: &BareJid,
        ty: SubType,
        el: Element,
    ) {
        let mut next = Some((owner.clone(), sender.clone(), ty, el));
        // Presence changes wait until the subscription stanzas are through, so a contact
        // sees `subscribed` before the presence it allows (§3.1.5).
        let mut flows: Vec<(String, BareJid, PresenceFlow)> = Vec::new();
        while let Some((owner, sender, ty, el)) = next.take() {
            let Some(user) = self.local_user(&owner).map(str::to_owned) else {
                continue;
            };
            let u = user.clone();
            match blocking(self.storage, move |s| {
                crate::storage::Accounts::account_exists(s, &u)
            })
            .await
            {
                Ok(true) => {}
                Ok(false) => {
                    // §3.1.3: no such contact: the request is refused.
                    if ty == SubType::Subscribe && self.local_user(&sender).is_some() {
                        let refusal =
                            presence::subscription("unsubscribed", owner.as_str(), sender.as_str());
                        next = Some((sender, owner, SubType::Unsubscribed, refusal));
                    }
                    continue;
                }
                Err(e) => {
                    log::error!("storage: {e}");
                    continue;
                }
            }
            let request = (ty == SubType::Subscribe).then(|| super::serialize(&el).to_string());
            let Some((outcome, change)) = self
                .apply(&user, &sender, ty, Direction::Inbound, request)
                .await
            else {
                continue;
            };
            if let (Some(version), Some(item)) = (change.0, &change.1) {
                self.push(&user, version, roster::item_element(item));
            }
            if outcome.deliver {
                self.router.deliver_to_available(&user, &el);
            }
            if let Some(flow) = outcome.presence {
                // The owner's presence now flows (or stops) to the sender.
                flows.push((user.clone(), sender.clone(), flow));
            }
            if outcome.auto_reply == Some(SubType::Subscribed) && self.local_user(&sender).is_some()
            {
                let reply = presence::subscription("subscribed", owner.as_str(), sender.as_str());
                next = Some((sender, owner, SubType::Subscribed, reply));
            }
        }
        for (owner, contact, flow) in flows {
            self.presence_flow(&owner, &contact, flow);
        }
    }

    /// Runs the state machine on `user`'s item for `contact` inside one storage
    /// transaction. Returns the outcome and (new version if pushed, the item).
    async fn apply(
        &self,
        user: &str,
        contact: &BareJid,
        ty: SubType,
        dir: Direction,
        request: Option<String>,
    ) -> Option<(Outcome, (Option<u64>, Option<RosterItem>))> {
        let u = user.to_owned();
        let c = contact.clone();
        let result = blocking(self.storage, move |s| {
            let mut outcome = None;
            let change = s.update_subscription(
                &u,
                &c,
                &mut |state| {
                    let o = subscription::apply(state, ty, dir);
                    outcome = Some(o);
                    o.state
                },
                request.as_deref(),
            )?;
            Ok((outcome, change))
        })
        .await;
        match result {
            Ok((Some(outcome), change)) => Some((outcome, (change.version, change.item))),
            Ok((None, _)) => None,
            Err(e) => {
                log::error!("storage: {e}");
                None
            }
        }
    }

    /// §3.1.3: subscription requests still unanswered are shown again at login.
    async fn deliver_pending(&self, user: &str, out: &mut String) {
        let u = user.to_owned();
        match blocking(self.storage, move |s| s.subscription_requests(&u)).await {
            Ok(list) => {
                for xml in list {
                    out.push_str(&xml);
                }
            }
            Err(e) => log::error!("storage: {e}"),
        }
    }

    // -- offline messages -------------------------------------------------------------

    /// XEP-0160 §3: a chat or normal message for a local account with no available
    /// resource is stored with a `<delay/>`; a full store gets `resource-constraint`, an
    /// unknown account `service-unavailable` (RFC 6121 §8.5.2.2.1).
    async fn store_offline(&self, from: &FullJid, stanza: Stanza) {
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
        let stored = blocking(self.storage, move |s| {
            s.store_offline(&user, &xml, offline::QUOTA)
        })
        .await;
        let cond = match stored {
            Ok(Stored::Stored) => return,
            Ok(Stored::Full) => StanzaCondition::ResourceConstraint,
            Ok(Stored::NoAccount) => StanzaCondition::ServiceUnavailable,
            Err(e) => {
                log::error!("storage: {e}");
                StanzaCondition::InternalServerError
            }
        };
        self.router.bounce_to(from, &stanza, cond);
    }
}
