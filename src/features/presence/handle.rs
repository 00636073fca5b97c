//! RFC 6121 §4: presence broadcast, probes, directed presence, and the unavailable
//! presence of a session that ends.

use crate::features::last::LastActivity as _;
use crate::features::presence;
use crate::features::roster::Roster as _;
use crate::features::subscription::{PresenceFlow, SubType};
use crate::features::{Hook, HookCx};
use crate::jid::{BareJid, FullJid, Jid};
use crate::ns;
use crate::router::Ended;
use crate::router::Origin;
use crate::router::im::{Im, Routed, on_pool};
use crate::stanza::{Kind, Stanza, StanzaCondition};
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
        stanza: Stanza,
        out: &mut String,
    ) -> Routed {
        let ty = stanza.el.attr("type").map(str::to_owned);
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
        let u = user.clone();
        let items = match on_pool(self.storage, move |s| s.roster(&u)).await {
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
        let cx = HookCx { im: *self, from };
        for m in self.modules.hooked(Hook::ResourceUnavailable) {
            m.resource_unavailable(&cx, el, others_available).await;
        }
        let u = user.clone();
        let items = on_pool(self.storage, move |s| s.roster(&u))
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
            let _ = self.router.route(Origin::Local(from), stanza);
        }
    }

    /// §4.3.2: the presence of `contact` for the (local) user at `to`, if the user is
    /// subscribed to it: the last presence of each available resource, or unavailable
    /// with the time of the last logout (XEP-0203 `<delay/>`) when there is none.
    pub(crate) async fn answer_probe(&self, contact: &BareJid, to: &FullJid, out: &mut String) {
        let Some(owner) = self.local_user(contact).map(str::to_owned) else {
            return;
        };
        let prober = to.bare();
        let o = owner.clone();
        let p = prober.clone();
        let looked_up = on_pool(self.storage, move |s| {
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
    pub(crate) fn presence_flow(&self, owner: &str, contact: &BareJid, flow: PresenceFlow) {
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
}
