//! RFC 6121 §3: subscription stanzas through the state machine, with pushes, deliveries
//! and stored requests. Both sides are handled here when the contact is local; a remote
//! contact's side is its server's, reached through the router (the outbound stanza,
//! §3.1.2, §3.2.2, §3.3.2), and what its server sends comes in through
//! [`Im::route_remote`] to the inbound side (§3.1.3, §3.1.6, §3.2.3, §3.3.3).

use crate::features::invite;
use crate::features::presence;
use crate::features::roster::{Roster as _, RosterItem};
use crate::features::subscription::{self, Direction, Outcome, PresenceFlow, SubState, SubType};
use crate::jid::{BareJid, FullJid, Jid};
use crate::router::Origin;
use crate::router::im::{Im, on_pool};
use crate::stanza::{Kind, Stanza, StanzaCondition, StanzaError};
use crate::storage::OverQuota;
use crate::xml::Element;

impl Im<'_> {
    /// §3 from the user's side: the stanza changes the user's item for `contact`, is
    /// pushed, and (per Appendix A.2) routed to the contact, stamped with the user's
    /// bare JID (§3.1.2, §3.2.2, §3.3.2): handled at once for a local contact, sent to
    /// a remote contact's server (an error for it, e.g. federation being off, comes back
    /// to the session that sent it).
    pub(crate) async fn outbound_subscription(
        &self,
        from: &FullJid,
        contact: BareJid,
        ty: SubType,
        mut el: Element,
    ) {
        let Some(user) = from.local().map(str::to_owned) else {
            return;
        };
        let bare = from.bare();
        if ty == SubType::Subscribe && self.local_user(&contact).is_some() {
            // §3.1.3, the contact's side, when the user is already subscribed: `subscribed`
            // on the contact's behalf, nothing delivered. Here for what only the roster
            // view says (a household member, features::household), which the state
            // machine below does not see: the request would otherwise reach someone who
            // already shares presence with the user, and wait for an answer forever.
            let view = self.sub_state_view(&user, &contact).await;
            if let Ok(state) = view {
                let stored = self.sub_state_stored(&user, &contact).await;
                if state.subscription.has_to() && stored.is_some_and(|s| !s.subscription.has_to()) {
                    let reply =
                        presence::subscription("subscribed", contact.as_str(), bare.as_str());
                    self.router.deliver_to_available(&user, &reply);
                    return;
                }
            }
        }
        let (outcome, change) = match self
            .apply(&user, &contact, ty, Direction::Outbound, None, false)
            .await
        {
            Some(Ok(v)) => v,
            // No request is stored outbound, so there is no quota to pass.
            Some(Err(_)) | None => return,
        };
        if let (Some(_), Some(item)) = (change.0, &change.1) {
            // As the roster view shows it (a household member stays `both`).
            self.push_view(&user, &item.jid).await;
        }
        if outcome.deliver {
            // §3.1.2: the server stamps the bare JIDs on subscription stanzas; the rest
            // (a <status/>, a XEP-0172 nickname) goes along to the contact.
            el.set_attr("from", bare.as_str());
            el.set_attr("to", contact.as_str());
            self.send_subscription(Origin::Local(from), &bare, &contact, ty, el)
                .await;
        }
        if let Some(flow) = outcome.presence {
            // A household member keeps seeing the user whatever the stored subscription.
            if flow == PresenceFlow::Start || !self.still_sees(&user, &contact).await {
                self.presence_flow(&user, &contact, flow).await;
            }
        }
    }

    /// A subscription stanza `el` (`ty`) from the local `from` to `contact`, on its way:
    /// the contact's side is handled at once for a local contact; a remote contact's
    /// server is sent it with `origin` (the user's session for what the user sent, so it
    /// hears of a server that cannot be reached; the server for what it sends on the
    /// user's behalf, as when a roster item is removed, §2.5.2).
    pub(crate) async fn send_subscription(
        &self,
        origin: Origin<'_>,
        from: &BareJid,
        contact: &BareJid,
        ty: SubType,
        el: Element,
    ) {
        if self.local_user(contact).is_some() {
            self.inbound_subscription(contact, from, ty, el).await;
            return;
        }
        let stanza = Stanza {
            kind: Kind::Presence,
            el,
            to: Some(Jid::from(contact.clone())),
        };
        let _ = self.router.route(origin, stanza);
    }

    /// §3 from the contact's side: `owner` (local) receives `ty` from `sender`, local or
    /// on another server (then `el` is the stanza as it came, between bare JIDs). What the
    /// server answers on the owner's behalf (`unsubscribed` for an account that does not
    /// exist, §3.1.3; an automatic `subscribed`, §3.1.3 and §3.4) is handled in the same
    /// loop for a local sender and routed to a remote one.
    pub(crate) async fn inbound_subscription(
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
        // XEP-0379 §4: owners whose invitation approved a request, to subscribe back.
        let mut back: Vec<(BareJid, BareJid)> = Vec::new();
        while let Some((owner, sender, ty, el)) = next.take() {
            let Some(user) = self.local_user(&owner).map(str::to_owned) else {
                continue;
            };
            let u = user.clone();
            match on_pool(self.storage, move |s| {
                crate::storage::Accounts::account_exists(s, &u)
            })
            .await
            {
                Ok(true) => {}
                Ok(false) => {
                    // §3.1.3: no such contact: the request is refused.
                    if ty == SubType::Subscribe {
                        let refusal =
                            presence::subscription("unsubscribed", owner.as_str(), sender.as_str());
                        if self.local_user(&sender).is_some() {
                            next = Some((sender, owner, SubType::Unsubscribed, refusal));
                        } else {
                            self.send_as_server(Jid::from(sender), refusal);
                        }
                    }
                    continue;
                }
                Err(e) => {
                    log::error!("storage: {e}");
                    continue;
                }
            }
            // XEP-0379 §4: a token the owner issued approves the request as if the owner
            // had pre-approved it (§3.4). The token goes no further: not stored with a
            // waiting request, not shown to the owner's clients.
            let mut el = el;
            let preapproved = match invite::preauth_token(&el) {
                Some(token) if ty == SubType::Subscribe => {
                    invite::preapproved(*self, &user, token).await
                }
                _ => false,
            };
            el.remove_children("preauth", crate::features::register::NS_PARS);
            if preapproved {
                log::info!("{owner}: subscription request from {sender} approved by invitation");
                back.push((owner.clone(), sender.clone()));
            }
            let request = (ty == SubType::Subscribe).then(|| el.to_xml_in(crate::ns::CLIENT));
            let (outcome, change) = match self
                .apply(&user, &sender, ty, Direction::Inbound, request, preapproved)
                .await
            {
                Some(Ok(v)) => v,
                Some(Err(over)) => {
                    // Too many requests waiting (see `Roster::update_subscription`):
                    // not kept, and the sender told to try later (RFC 6120 §8.3.3.17).
                    log::info!("{owner}: subscription request from {sender} not kept: {over:?}");
                    let err = StanzaError::new(StanzaCondition::ResourceConstraint)
                        .with_text("too many subscription requests are waiting");
                    if let Some(reply) = err.reply_to(&el) {
                        self.send_as_server(Jid::from(sender), reply);
                    }
                    continue;
                }
                None => continue,
            };
            if let (Some(_), Some(item)) = (change.0, &change.1) {
                self.push_view(&user, &item.jid).await;
            }
            if outcome.deliver {
                self.router.deliver_to_available(&user, &el);
            }
            if let Some(flow) = outcome.presence {
                // The owner's presence now flows (or stops) to the sender.
                flows.push((user.clone(), sender.clone(), flow));
            }
            if outcome.auto_reply == Some(SubType::Subscribed) {
                let reply = presence::subscription("subscribed", owner.as_str(), sender.as_str());
                if self.local_user(&sender).is_some() {
                    next = Some((sender, owner, SubType::Subscribed, reply));
                } else {
                    self.send_as_server(Jid::from(sender.clone()), reply);
                    if outcome.presence.is_none() {
                        // §3.1.3, already subscribed: the other server asked again, so
                        // its roster says otherwise; with `subscribed` it gets the
                        // presence it is missing (as Prosody does). Between two local
                        // accounts both rosters are here and cannot disagree.
                        flows.push((user.clone(), sender, PresenceFlow::Start));
                    }
                }
            }
        }
        for (owner, contact, flow) in flows {
            if flow == PresenceFlow::Start || !self.still_sees(&owner, &contact).await {
                self.presence_flow(&owner, &contact, flow).await;
            }
        }
        for (owner, contact) in back {
            Box::pin(self.subscribe_back(&owner, &contact)).await;
        }
    }

    /// XEP-0379 §4: the invitation was the owner's, who wants the new contact's presence
    /// too: a `subscribe` sent on the owner's behalf (§3.1.2, as if from the owner's
    /// client), unless the owner is already subscribed or asking. A client that followed
    /// the link pre-approved the owner (§3.4, as XEP-0379 §4 asks), so the request is
    /// answered at once and the subscription is `both`; otherwise it waits for the
    /// contact like any request.
    async fn subscribe_back(&self, owner: &BareJid, contact: &BareJid) {
        let Some(user) = self.local_user(owner).map(str::to_owned) else {
            return;
        };
        match self.sub_state_stored(&user, contact).await {
            Some(s) if !s.subscription.has_to() && !s.pending_out => {}
            _ => return,
        }
        let (outcome, change) = match self
            .apply(
                &user,
                contact,
                SubType::Subscribe,
                Direction::Outbound,
                None,
                false,
            )
            .await
        {
            Some(Ok(v)) => v,
            Some(Err(_)) | None => return,
        };
        if let (Some(_), Some(item)) = (change.0, &change.1) {
            self.push_view(&user, &item.jid).await;
        }
        if outcome.deliver {
            let el = presence::subscription("subscribe", owner.as_str(), contact.as_str());
            self.send_subscription(Origin::Server, owner, contact, SubType::Subscribe, el)
                .await;
        }
    }

    /// `user`'s stored subscription state with `contact`; `None` when storage fails
    /// (logged).
    async fn sub_state_stored(&self, user: &str, contact: &BareJid) -> Option<SubState> {
        let (u, c) = (user.to_owned(), contact.clone());
        on_pool(self.storage, move |s| s.sub_state(&u, &c))
            .await
            .inspect_err(|e| log::error!("storage: {e}"))
            .ok()
    }

    /// Runs the state machine on `user`'s item for `contact` inside one storage
    /// transaction. Returns the outcome and (new version if pushed, the item); `Err` when
    /// `request` would be a new waiting request and there is no room for it (nothing
    /// changed); `None` when storage failed. `preapproved`: treat the item as approved in
    /// advance (§3.4), for a request carrying the owner's XEP-0379 token.
    pub(crate) async fn apply(
        &self,
        user: &str,
        contact: &BareJid,
        ty: SubType,
        dir: Direction,
        request: Option<String>,
        preapproved: bool,
    ) -> Option<Result<(Outcome, (Option<u64>, Option<RosterItem>)), OverQuota>> {
        let u = user.to_owned();
        let c = contact.clone();
        let quota = *self.router.quota();
        let result = on_pool(self.storage, move |s| {
            let mut outcome = None;
            let change = s.update_subscription(
                &u,
                &c,
                &mut |mut state| {
                    // Only where the approval is used up at once (§3.4): never left
                    // stored on an item whose contact is already subscribed.
                    state.approved |= preapproved && !state.subscription.has_from();
                    let o = subscription::apply(state, ty, dir);
                    outcome = Some(o);
                    o.state
                },
                request.as_deref().map(|r| (r, &quota)),
            )?;
            Ok((outcome, change))
        })
        .await;
        match result {
            Ok((Some(outcome), Ok(change))) => Some(Ok((outcome, (change.version, change.item)))),
            Ok((_, Err(over))) => Some(Err(over)),
            Ok((None, Ok(_))) => None,
            Err(e) => {
                log::error!("storage: {e}");
                None
            }
        }
    }

    /// §3.1.3: subscription requests still unanswered are shown again at login.
    pub(crate) async fn deliver_pending(&self, user: &str, out: &mut String) {
        let u = user.to_owned();
        match on_pool(self.storage, move |s| s.subscription_requests(&u)).await {
            Ok(list) => {
                for xml in list {
                    out.push_str(&xml);
                }
            }
            Err(e) => log::error!("storage: {e}"),
        }
    }
}
