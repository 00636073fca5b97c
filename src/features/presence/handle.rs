//! RFC 6121 §4: presence broadcast, probes, directed presence, and the unavailable
//! presence of a session that ends — to and from contacts on this server or others.
//!
//! Inbound available and unavailable presence from another server (§4.2.3, §4.4.3,
//! §4.5.3; from someone not in the roster it is directed presence, §4.6.4) is delivered by
//! the §8 rules whatever the roster says: to a bare JID, to every available resource
//! (§8.5.2.1.1); to a full JID, to that resource (§8.5.3.1). The sender's server is the
//! one that checks subscriptions before broadcasting (§4.2.2); the receiving server is not
//! asked to check them again, and Prosody and ejabberd do not. Whoever a user wants none of
//! is blocked (XEP-0191), and the filters drop that before it gets here. Inbound probes
//! (§4.3.2) are answered only to contacts with a `from` subscription; another server's
//! prober without one gets `unsubscribed`, so that server can put its roster right.

use crate::features::last::LastActivity as _;
use crate::features::presence;
use crate::features::subscription::{PresenceFlow, SubType};
use crate::features::{Hook, HookCx};
use crate::jid::{BareJid, FullJid, Jid};
use crate::ns;
use crate::router::im::{Im, Routed, Sender, on_pool};
use crate::router::{Domain, Ended, Origin};
use crate::stanza::{Kind, Stanza, StanzaCondition};
use crate::storage::StorageError;
use crate::xml::Element;

impl Im<'_> {
    /// A connection ended: if its session was available, it goes unavailable for
    /// everyone who saw it (RFC 6121 §4.5.2, also for a dropped connection).
    pub async fn session_ended(&self, jid: &FullJid, session: u64) {
        let Some(ended) = self.router.unbind(jid, session) else {
            return;
        };
        self.session_replaced(jid, ended).await
    }

    /// A session is gone (ended, or its resource taken over by a new connection, RFC 6120
    /// §7.7.2.2): unavailable to everyone who saw it available.
    pub async fn session_replaced(&self, jid: &FullJid, ended: Ended) {
        if !ended.was_available {
            // §4.6.3: those it sent directed presence to (a XEP-0045 room joined by a
            // client that never went available to its contacts) still hear it left.
            for to in ended.directed {
                let el = Element::new("presence", ns::CLIENT)
                    .with_attr("type", "unavailable")
                    .with_attr("from", jid.as_str())
                    .with_attr("to", to.as_str());
                let stanza = Stanza {
                    kind: Kind::Presence,
                    el,
                    to: Some(to),
                };
                let _ = self.router.route(Origin::Local(jid), stanza);
            }
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

    /// Presence from a client: broadcast (no `to`), subscription (§3), probe (§4.3),
    /// directed (§4.6) or an error.
    pub(crate) async fn presence(
        &self,
        from: &FullJid,
        mut stanza: Stanza,
        out: &mut String,
    ) -> Routed {
        let ty = stanza.el.attr("type").map(str::to_owned);
        if ty.is_none() {
            let cx = HookCx {
                im: *self,
                from: Sender::Local(from),
            };
            for m in self.modules.hooked(Hook::PresenceOut) {
                m.presence_out(&cx, &mut stanza).await;
            }
        }
        let to_self = match &stanza.to {
            None => true,
            Some(to) => to.bare() == from.bare(),
        };
        // No 'to', or the user's own bare JID: a broadcast (§4.2.1, §4.4.1, §4.5.1).
        // (XEP-0191 blocking of subscriptions, directed presence and probes happened
        // before, in the blocking module's filter.)
        let is_broadcast = to_self && stanza.to.as_ref().is_none_or(Jid::is_bare);
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
                let to = to.bare();
                self.outbound_subscription(from, to, sub, stanza.el).await
            }
            Some("probe") => {
                // §4.3: probes are the server's business; for a client that insists,
                // a local contact's is answered as if the server had sent it, and a
                // remote contact's server is sent the probe as the client wrote it
                // (answered to that resource, as Prosody does).
                if let Some(to) = &stanza.to {
                    match self.router.domain_kind(to.domain()) {
                        Domain::Host => self.answer_probe(&to.bare(), from, out).await,
                        _ => {
                            let _ = self.router.route(Origin::Local(from), stanza);
                        }
                    }
                }
            }
            None | Some("unavailable") => {
                // §4.6: directed presence; remembered so it is ended at logout.
                if let Some(to) = &stanza.to {
                    self.router.track_directed(from, to, ty.is_none());
                }
                let _ = self.router.route(Origin::Local(from), stanza);
            }
            Some("error") => {
                let _ = self.router.route(Origin::Local(from), stanza);
            }
            Some(_) => self
                .router
                .bounce_to(from, &stanza, StanzaCondition::BadRequest),
        }
        Routed::default()
    }

    /// §4.2 and §4.4 (available) or §4.5 (unavailable) broadcast by `from`.
    pub(crate) async fn broadcast(
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
        // §4.2.2 / §4.5.2: the sender's own copy, first of everything this presence brings
        // back (other resources, probe answers, waiting requests, then offline messages
        // from the connection), as Prosody and ejabberd order them: scripted clients wait
        // for the echo and then read what follows.
        el.write_to(out, ns::CLIENT);
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
        // The roster view: stored items and the household (features::household), whose
        // members are contacts with `both` here.
        let items = match self.roster_view(&user).await {
            Ok((_, items)) => items,
            Err(e) => {
                log::error!("storage: {e}");
                Vec::new()
            }
        };
        // §4.2.2 / §4.4.2: to every contact with a subscription from the user, one
        // stanza per contact, to its bare JID, wherever it is.
        let mut reached = vec![from.bare()];
        for item in items.iter().filter(|i| i.state.subscription.has_from()) {
            if self.presence_allowed(&user, &item.jid).await {
                self.send_to_contact(&item.jid, presence::addressed(&el, item.jid.as_str()));
                if self.local_user(&item.jid).is_some() {
                    reached.push(item.jid.clone());
                }
            }
        }
        self.presence_seen(Sender::Local(from), &reached, &el).await;
        let initial = !change.was_available;
        if initial {
            // §4.2.2 / §4.4.2: a new resource learns about the account's others.
            for p in self.router.available_presences(&user) {
                if p.attr("from") != Some(from.as_str()) {
                    presence::addressed(&p, from.as_str()).write_to(out, ns::CLIENT);
                }
            }
            // Initial presence (§4.2.2, §4.3.1): probe the contacts the user is subscribed
            // to, and show the requests still waiting for an answer (§3.1.3). A local
            // contact's presence is known here and written at once; another server is
            // sent a probe from the user's bare JID, and its answers come back to the
            // bare JID (so to every available resource: the server keeps no copy of
            // remote contacts' presence to hand the new resource alone).
            let bare = from.bare();
            for item in items.iter().filter(|i| i.state.subscription.has_to()) {
                if !self.presence_allowed(&user, &item.jid).await {
                    continue;
                }
                if self.local_user(&item.jid).is_some() {
                    self.answer_probe(&item.jid, from, out).await;
                } else {
                    let probe = presence::probe(bare.as_str(), item.jid.as_str());
                    self.send_as_server(Jid::from(item.jid.clone()), probe);
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
    pub(crate) async fn broadcast_unavailable(
        &self,
        from: &FullJid,
        el: &Element,
        directed: Vec<Jid>,
        others_available: bool,
    ) {
        let Some(user) = from.local().map(str::to_owned) else {
            return;
        };
        let cx = HookCx {
            im: *self,
            from: Sender::Local(from),
        };
        // What modules add (a device's last reading) goes to everyone below.
        let mut added = None;
        for m in self.modules.hooked(Hook::PresenceUnavailable) {
            let el = added.get_or_insert_with(|| el.clone());
            m.presence_unavailable(&cx, el, others_available).await;
        }
        let el = added.as_ref().unwrap_or(el);
        for m in self.modules.hooked(Hook::ResourceUnavailable) {
            m.resource_unavailable(&cx, el, others_available).await;
        }
        let items = self
            .roster_view(&user)
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
            self.send_to_contact(&item.jid, presence::addressed(el, item.jid.as_str()));
            sent.push(item.jid.clone());
        }
        let mut reached: Vec<BareJid> = vec![from.bare()];
        reached.extend(
            sent.iter()
                .filter(|j| self.local_user(j).is_some())
                .cloned(),
        );
        self.presence_seen(Sender::Local(from), &reached, el).await;
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
            let _ = self.router.route(Origin::Local(from), stanza);
        }
    }

    /// §4.3.2: the presence of `contact` for the local user at `to`, if the user is
    /// subscribed to it (nothing otherwise: both rosters are here, nothing to put right).
    pub(crate) async fn answer_probe(&self, contact: &BareJid, to: &FullJid, out: &mut String) {
        match self.probe_answer(contact, &to.bare(), to.as_str()).await {
            Ok(Some(answer)) => {
                for el in answer {
                    el.write_to(out, ns::CLIENT);
                }
            }
            Ok(None) => {}
            Err(e) => log::error!("storage: {e}"),
        }
    }

    /// §4.3.2: what the local account `contact` shows a probe from `prober`, addressed
    /// to `to` (the probe's `from`): the last presence of each available resource, or
    /// unavailable from the bare JID with the time of the last logout (XEP-0203
    /// `<delay/>`) and its status when there is none. `None` when the prober may not see
    /// it: no `from` subscription (or no such account, which looks the same).
    async fn probe_answer(
        &self,
        contact: &BareJid,
        prober: &BareJid,
        to: &str,
    ) -> Result<Option<Vec<Element>>, StorageError> {
        let Some(owner) = self.local_user(contact).map(str::to_owned) else {
            return Ok(None);
        };
        let state = self.sub_state_view(&owner, prober).await?;
        let o = owner.clone();
        let last = on_pool(self.storage, move |s| s.last_activity(&o)).await?;
        if !state.subscription.has_from() {
            return Ok(None);
        }
        let presences = self.router.available_presences(&owner);
        if presences.is_empty() {
            let mut el = presence::unavailable(contact.as_str(), to);
            if let Some((at, status)) = last {
                if !status.is_empty() {
                    el.push_child(Element::new("status", ns::CLIENT).with_text(status));
                }
                el.push_child(presence::delay(self.domain(), at));
            }
            for m in self.modules.hooked(Hook::OfflinePresence) {
                m.offline_presence(*self, &owner, &mut el).await;
            }
            return Ok(Some(vec![el]));
        }
        Ok(Some(
            presences
                .iter()
                .map(|p| presence::addressed(p, to))
                .collect(),
        ))
    }

    /// Presence from another server for a local address (`to` is on this host; the
    /// filters have passed it): available, unavailable and errors are delivered (see the
    /// module's doc), probes answered (§4.3.2), subscription stanzas go through the state
    /// machine from the contact's side (§3.1.3, §3.1.6, §3.2.3, §3.3.3).
    pub(crate) async fn inbound_presence(&self, from: &Jid, stanza: Stanza) {
        let Some(to) = stanza.to.clone() else {
            return;
        };
        let ty = stanza.el.attr("type").map(str::to_owned);
        match ty.as_deref() {
            None | Some("unavailable") => {
                if to.is_bare() && self.local_user(&to.bare()).is_some() {
                    self.presence_seen(Sender::Remote(from), &[to.bare()], &stanza.el)
                        .await;
                }
                let _ = self.router.route(Origin::Remote(from), stanza);
            }
            Some("error") => {
                let _ = self.router.route(Origin::Remote(from), stanza);
            }
            Some("probe") => self.inbound_probe(from, &to).await,
            Some(t) => match SubType::parse(t) {
                Some(sub) => {
                    // §3.1.3: subscription stanzas are between bare JIDs, whatever
                    // the other server wrote.
                    let (owner, sender) = (to.bare(), from.bare());
                    let mut el = stanza.el;
                    el.set_attr("from", sender.as_str());
                    el.set_attr("to", owner.as_str());
                    self.inbound_subscription(&owner, &sender, sub, el).await
                }
                None => {
                    self.router
                        .bounce(Origin::Remote(from), &stanza, StanzaCondition::BadRequest)
                }
            },
        }
    }

    /// §4.3.2: a probe from another server for the local account at `to`: answered
    /// there with the account's presence (see [`Im::probe_answer`]) if the prober has a
    /// `from` subscription; otherwise (no subscription, or no such account) with
    /// `unsubscribed` from the account's bare JID (§4.3.2 #1: so the prober's server
    /// cancels a subscription it wrongly thinks it has; from the bare JID, since a full
    /// one would leak presence).
    async fn inbound_probe(&self, from: &Jid, to: &Jid) {
        let contact = to.bare();
        let prober = from.bare();
        match self.probe_answer(&contact, &prober, from.as_str()).await {
            Ok(Some(answer)) => {
                for el in answer {
                    self.send_as_server(from.clone(), el);
                }
            }
            Ok(None) => {
                if self.local_user(&contact).is_some() {
                    let el =
                        presence::subscription("unsubscribed", contact.as_str(), prober.as_str());
                    self.send_as_server(Jid::from(prober), el);
                }
            }
            // Unknown: nothing is said (an `unsubscribed` might cancel a real
            // subscription); the prober's server asks again at its user's next login.
            Err(e) => log::error!(
                "s2s{}: storage: probe from {from} unanswered: {e}",
                self.conn
            ),
        }
    }

    /// [`Hook::PresenceIn`]: broadcast presence from `from` reached the local accounts
    /// `owners` (its own account's, its local contacts', or a remote contact's).
    async fn presence_seen(&self, from: Sender<'_>, owners: &[BareJid], el: &Element) {
        let cx = HookCx { im: *self, from };
        for m in self.modules.hooked(Hook::PresenceIn) {
            m.presence_in(&cx, owners, el).await;
        }
    }

    /// Presence for a contact's bare JID, on its way: to the available resources of a
    /// local contact (§8.5.2.1.1), through the router to a remote one (sent by the server
    /// on the user's behalf: an error about it is not the user's to read).
    pub(crate) fn send_to_contact(&self, contact: &BareJid, el: Element) {
        match self.local_user(contact) {
            Some(user) => self.router.deliver_to_available(user, &el),
            None => self.send_as_server(Jid::from(contact.clone()), el),
        }
    }

    /// Sends the user's presence (or its end) to a contact whose subscription started or
    /// stopped (§3.1.5, §3.2.2, §3.3.3), on this server or another. A local contact's
    /// account is reached like by a broadcast ([`Hook::PresenceIn`]): its PEP service
    /// learns (or forgets) the user's resources and their caps at once (XEP-0163 §4.3),
    /// not only at the user's next presence change.
    pub(crate) async fn presence_flow(&self, owner: &str, contact: &BareJid, flow: PresenceFlow) {
        let local = self.local_user(contact).is_some();
        let reached = std::slice::from_ref(contact);
        match flow {
            PresenceFlow::Start => {
                let presences = self.router.available_presences(owner);
                if presences.is_empty() {
                    // Offline: nothing to send (§3.1.5), unless a module has something
                    // to show for the account (a device's last reading, with when it
                    // was taken), as it would to a probe.
                    let bare = format!("{owner}@{}", self.domain());
                    let plain = presence::unavailable(&bare, contact.as_str());
                    let mut el = plain.clone();
                    for m in self.modules.hooked(Hook::OfflinePresence) {
                        m.offline_presence(*self, owner, &mut el).await;
                    }
                    if el != plain {
                        self.send_to_contact(contact, el);
                    }
                }
                for p in presences {
                    let el = presence::addressed(&p, contact.as_str());
                    self.send_to_contact(contact, el.clone());
                    let from = p.attr("from").and_then(|f| FullJid::parse(f).ok());
                    if let (true, Some(from)) = (local, from) {
                        self.presence_seen(Sender::Local(&from), reached, &el).await;
                    }
                }
            }
            PresenceFlow::Stop => {
                for r in self.router.available_resources(owner) {
                    let el = presence::unavailable(r.as_str(), contact.as_str());
                    self.send_to_contact(contact, el.clone());
                    if local {
                        self.presence_seen(Sender::Local(&r), reached, &el).await;
                    }
                }
            }
        }
    }
}
