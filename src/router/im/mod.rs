//! The async path for stanzas that need storage: rosters (RFC 6121 §2), subscriptions
//! (§3), presence broadcast and probes (§4), offline messages (XEP-0160), blocking
//! (XEP-0191) and last activity (XEP-0012).
//!
//! The connection task awaits [`Im::route`] for every stanza its client sends, so a
//! client's stanzas are handled in order. Decisions are made by the sans-IO modules in
//! `features/`; storage runs on storage's own threads ([`Storage::run_blocking`]), never under the
//! router's lock; the router then delivers. What is addressed to the sending client
//! itself (iq results, probe answers, waiting requests) is written straight into the
//! connection's output rather than its router queue, so a user with many contacts online
//! cannot overflow their own queue by logging in. Offline messages, possibly many, are
//! taken out of storage page by page by the connection ([`Im::offline_take`]), each page
//! deleted before it is written, so none is ever delivered twice.
//!
//! Stanzas from other servers take the same way through [`Im::route_remote`], which an
//! s2s link awaits for each stanza it receives (so a link's stanzas are handled in
//! order too): the same filters (XEP-0191 for a remote sender), the same modules answering
//! iqs (their answers routed back over the link), inbound subscriptions and probes (RFC
//! 6121 §3, §4.3.2), and messages stored offline like a local sender's. Who sent a stanza
//! is a [`Sender`]: a local session or a remote address.
//!
//! Contacts may be on other servers: what concerns a remote contact (subscription
//! stanzas, presence broadcast, probes, the answers to its probes) leaves through the
//! router, whose domain table hands it to the federation links ([`super::Remote`]), or
//! bounces it with `remote-server-not-found` when federation is off.
//!
//! The modules' handling lives beside them in `features/`: `roster/`, `subscription/`,
//! `presence/` (RFC 6121 §2, §3, §4), `offline/`, `blocking/`, `last/` (XEP-0160,
//! XEP-0191, XEP-0012); this file dispatches by stanza kind and iq payload.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::features::{Access, Hook, HookCx, IqCx, Module, Registry, Target, Verdict};
use crate::jid::{BareJid, FullJid, Jid};
use crate::ns;
use crate::router::{Domain, Origin};
use crate::stanza::{Kind, Stanza, StanzaCondition, StanzaError};
use crate::storage::{Accounts as _, Storage, StorageError};
use crate::xml::Element;

use super::Router;

mod account;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tests_household;
#[cfg(test)]
mod tests_remote;

/// Who sent the stanza being handled (what the modules' hooks and iq handlers are told).
#[derive(Clone, Copy, Debug)]
pub enum Sender<'a> {
    /// A bound session of a local account; its stream stamped its full JID as `from`.
    Local(&'a FullJid),
    /// An address on another server, whose domain the s2s link it came over
    /// authenticated (RFC 6120 §13.1): bare, full or a bare domain.
    Remote(&'a Jid),
    /// An address at one of this server's services (an external component, XEP-0114):
    /// treated like a remote sender, but its errors go back to the service.
    Service(&'a Jid),
}

impl<'a> Sender<'a> {
    /// The address, as it is written in `from`.
    pub fn as_str(&self) -> &'a str {
        match self {
            Sender::Local(j) => j.as_str(),
            Sender::Remote(j) | Sender::Service(j) => j.as_str(),
        }
    }

    pub fn bare(&self) -> BareJid {
        match self {
            Sender::Local(j) => j.bare(),
            Sender::Remote(j) | Sender::Service(j) => j.bare(),
        }
    }

    /// The address as a [`Jid`] (a copy).
    pub fn jid(&self) -> Jid {
        match self {
            Sender::Local(j) => Jid::from((*j).clone()),
            Sender::Remote(j) | Sender::Service(j) => (*j).clone(),
        }
    }

    /// The local session, if it is one.
    pub fn session(&self) -> Option<&'a FullJid> {
        match self {
            Sender::Local(j) => Some(j),
            Sender::Remote(_) | Sender::Service(_) => None,
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self, Sender::Local(_))
    }

    /// Where the router sends errors about the stanza back to.
    pub fn origin(&self) -> Origin<'a> {
        match self {
            Sender::Local(j) => Origin::Local(j),
            Sender::Remote(j) => Origin::Remote(j),
            Sender::Service(j) => Origin::Service(j),
        }
    }
}

/// The two things every handler here needs.
#[derive(Clone, Copy)]
pub struct Im<'a> {
    pub router: &'a Router,
    pub storage: &'a Storage,
    /// The modules that answer iqs to the server and to accounts.
    pub modules: &'a Registry,
    /// The connection's id, for log lines (`c2s<id>`; an s2s link's own id when it
    /// calls [`Im::route_remote`]).
    pub conn: u64,
}

/// Ids for roster pushes; unique per process is enough (the client echoes them back).
static NEXT_PUSH: AtomicU64 = AtomicU64::new(1);

pub(crate) fn push_id() -> String {
    format!("push{}", NEXT_PUSH.fetch_add(1, Ordering::Relaxed))
}

/// What the connection does after [`Im::route`].
#[derive(Debug, Default)]
#[must_use]
pub struct Routed {
    /// The client became able to take its offline messages (XEP-0160 §3): fetch them with
    /// [`Im::offline_take`] and write them (putting back what could not be written).
    pub offline: bool,
}

/// Messages written to a client between flushes when it collects its offline messages.
pub const OFFLINE_PAGE: usize = 64;

/// Runs a storage call on the storage threads.
pub(crate) async fn on_pool<T: Send + 'static>(
    storage: &Storage,
    f: impl FnOnce(&Storage) -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    storage.run_blocking(f).await
}

impl Im<'_> {
    pub(crate) fn domain(&self) -> &str {
        self.router.domain()
    }

    /// The local account a JID names, if it is one of ours.
    pub(crate) fn local_user<'j>(&self, jid: &'j BareJid) -> Option<&'j str> {
        if jid.domain() == self.domain() {
            jid.local()
        } else {
            None
        }
    }

    /// Where an iq goes: the server's domain, or an account's bare JID answered by the
    /// server (no `to` is the sender's own account, RFC 6120 §10.3.3); `None` when it is
    /// routed to someone (a full JID, another domain).
    fn iq_target(&self, from: Sender<'_>, stanza: &Stanza) -> Option<Target> {
        match (&stanza.to, from) {
            (None, Sender::Local(from)) => Some(Target::Account(from.bare())),
            // Between servers `to` is required (RFC 6120 §8.1.1.1).
            (None, Sender::Remote(_) | Sender::Service(_)) => None,
            (Some(to), _) if to.domain() == self.domain() && to.resource().is_none() => {
                Some(match to.local() {
                    None => Target::Server,
                    Some(_) => Target::Account(to.bare()),
                })
            }
            (Some(_), _) => None,
        }
    }

    /// Routes one stanza from the local session `from` (its `from` already stamped).
    /// Stanzas for `from` itself are appended to `out` (serialized, `jabber:client`).
    ///
    /// The way of a stanza: an iq for a module that only answers the account itself is
    /// refused to anyone else; then the [`Hook::StanzaIn`] filters (XEP-0191 blocking) may
    /// stop it; then iqs for the server or an account go to their module, presence to
    /// RFC 6121 §3/§4 handling, and messages to the router, whose undeliverable ones go to
    /// the [`Hook::MessageUndelivered`] module (XEP-0160 offline storage).
    pub async fn route(&self, from: &FullJid, stanza: Stanza, out: &mut String) -> Routed {
        self.dispatch(Sender::Local(from), stanza, out).await
    }

    /// Routes one stanza that arrived over an s2s link: `from` is its sender, whose
    /// domain the link authenticated, and its `to` is one of this server's domains (the
    /// link checks both, RFC 6120 §13.1 and §8.1.1.2, and converts the stanza to the
    /// `jabber:client` shapes a client sends, e.g. with `Stanza::from_client`). The link
    /// awaits it for each stanza in turn, like a client's connection [`Im::route`]. A
    /// `from` in this server's own domains is dropped whatever the link says.
    ///
    /// The way of a stanza is the local one with the remote sender's rules: an iq for a
    /// module that only answers the account itself (roster, blocklist) is `forbidden`;
    /// the [`Hook::StanzaIn`] filters apply (XEP-0191 §3.5: a local user's block is
    /// honoured, messages and iq requests then get what an unknown account gives and
    /// presence is dropped); iqs for the server or an existing account are answered by
    /// the modules, the answer routed back from the address asked (RFC 6120 §8.1.2.1),
    /// an unknown account's with `service-unavailable` (RFC 6121 §8.5.1); presence goes to
    /// `Im::inbound_presence` (RFC 6121 §3 and §4 from the contact's side); messages
    /// are delivered, or stored offline (XEP-0160) for an account with no available
    /// resource. Errors go back over the router's [`super::Remote`].
    pub async fn route_remote(&self, from: &Jid, mut stanza: Stanza) {
        let Some(to) = &stanza.to else {
            // RFC 6120 §8.1.1.1: between servers `to` is required; nobody to answer for.
            log::debug!(
                "s2s{}: {} from {from} without 'to' dropped",
                self.conn,
                stanza.el.name()
            );
            return;
        };
        if !matches!(self.router.domain_kind(from.domain()), Domain::Remote) {
            // No link may speak for this server's own addresses (RFC 6120 §13.1): the
            // link is at fault; what it says is not taken for a local user's word.
            log::warn!(
                "s2s{}: {} from {from}, one of this server's own addresses, dropped",
                self.conn,
                stanza.el.name()
            );
            return;
        }
        if !matches!(self.router.domain_kind(to.domain()), Domain::Host) {
            // A service's domain (the service applies its own rules), or another server's
            // (not relayed: the router drops it).
            let _ = self.router.route(Origin::Remote(from), stanza);
            return;
        }
        // The link checked that `from` is what the stanza says; written as normalized.
        stanza.el.set_attr("from", from.as_str());
        let mut out = String::new();
        let _ = self.dispatch(Sender::Remote(from), stanza, &mut out).await;
        // Everything for a remote sender is routed ([`Im::answer`]), never written here.
        debug_assert!(out.is_empty(), "written for a remote sender: {out}");
    }

    /// Routes one stanza from an external component (XEP-0114) speaking for its domain,
    /// one of this server's services: the rules of a remote sender (its stream checked
    /// `from`), its errors back to the component.
    pub async fn route_service(&self, from: &Jid, mut stanza: Stanza) {
        if !matches!(self.router.domain_kind(from.domain()), Domain::Service(_)) {
            log::warn!("component: {} from {from} dropped", stanza.el.name());
            return;
        }
        let Some(to) = &stanza.to else { return };
        if !matches!(self.router.domain_kind(to.domain()), Domain::Host) {
            let _ = self.router.route(Origin::Service(from), stanza);
            return;
        }
        stanza.el.set_attr("from", from.as_str());
        let mut out = String::new();
        let _ = self.dispatch(Sender::Service(from), stanza, &mut out).await;
        debug_assert!(out.is_empty(), "written for a component: {out}");
    }

    /// [`Im::route`] and [`Im::route_remote`]: the way of one stanza from `from`.
    async fn dispatch(&self, from: Sender<'_>, stanza: Stanza, out: &mut String) -> Routed {
        let mut route = None;
        let mut target = None;
        if stanza.kind == Kind::Iq {
            target = self.iq_target(from, &stanza);
            route = stanza.iq_payload().and_then(|p| self.modules.iq_route(p));
        }
        let access = route.map(|(_, r)| r.access);
        if stanza.kind == Kind::Iq {
            let is_request = stanza.iq_type().is_some_and(|t| t.is_request());
            let is_own = from.is_local() && target == Some(Target::Account(from.bare()));
            if access == Some(Access::Own) && target.is_some() && !is_own && is_request {
                // §2.1.5 / §2.3.3 (roster), XEP-0191 (blocklist): the account's own,
                // whoever else is asked, local or remote.
                self.router
                    .bounce(from.origin(), &stanza, StanzaCondition::Forbidden);
                return Routed::default();
            }
        }
        let cx = HookCx { im: *self, from };
        for m in self.modules.hooked(Hook::StanzaIn) {
            if m.filter_in(&cx, &stanza, access, out).await == Verdict::Stop {
                return Routed::default();
            }
        }
        match stanza.kind {
            Kind::Iq => match target {
                Some(target) => {
                    let module = Registry::answering(route, &target);
                    self.iq(from, target, module, stanza, out).await
                }
                None => {
                    if let Some(s) = self.router.route(from.origin(), stanza) {
                        // Only messages come back undelivered.
                        log::debug!(
                            "{}: undeliverable iq dropped: {}",
                            from.as_str(),
                            s.el.name()
                        );
                    }
                }
            },
            Kind::Presence => match from {
                Sender::Local(from) => return self.presence(from, stanza, out).await,
                Sender::Remote(from) | Sender::Service(from) => {
                    self.inbound_presence(from, stanza).await
                }
            },
            Kind::Message => {
                let mut stanza = stanza;
                if from.is_local() {
                    for m in self.modules.hooked(Hook::MessageOut) {
                        m.message_out(&cx, &mut stanza).await;
                    }
                }
                if let Some(to) = self.local_recipient(&stanza) {
                    for m in self.modules.hooked(Hook::MessageIn) {
                        m.message_in(&cx, &to, &mut stanza).await;
                    }
                }
                if let Some(undelivered) = self.router.route(from.origin(), stanza) {
                    match self.modules.hooked(Hook::MessageUndelivered).next() {
                        Some(m) => m.message_undelivered(&cx, undelivered).await,
                        // RFC 6121 §8.5.2.2.1: no offline storage, so no such recipient.
                        None => self.router.bounce(
                            from.origin(),
                            &undelivered,
                            StanzaCondition::ServiceUnavailable,
                        ),
                    }
                }
            }
        }
        Routed::default()
    }

    /// An iq for the server's domain or an account's bare JID: answered by the module
    /// that routes its payload's namespace (`features::Registry`), or with
    /// `service-unavailable` (RFC 6120 §8.4); the answer goes to the sender
    /// ([`Im::answer`]), from the address asked (RFC 6120 §8.1.2.1).
    async fn iq(
        &self,
        from: Sender<'_>,
        target: Target,
        module: Option<&dyn Module>,
        stanza: Stanza,
        out: &mut String,
    ) {
        if !stanza.iq_type().is_some_and(|t| t.is_request()) {
            // RFC 6120 §8.2.3: results and errors are never answered. They may answer
            // an iq a module sent (`Hook::IqResponse`); otherwise there is nobody to hand
            // them to.
            let cx = HookCx { im: *self, from };
            for m in self.modules.hooked(Hook::IqResponse) {
                if m.iq_response(&cx, &stanza).await {
                    return;
                }
            }
            log::debug!(
                "{}: iq {} for {} claimed by no module, dropped",
                from.as_str(),
                stanza.el.attr("type").unwrap_or_default(),
                stanza.el.attr("to").unwrap_or_default()
            );
            return;
        }
        let outcome = match (module, &target) {
            (None, _) => Err(StanzaError::new(StanzaCondition::ServiceUnavailable)),
            // RFC 6121 §8.5.1: an account that does not exist answers nothing, for
            // a remote sender (a local sender's account iqs are answered as they were
            // before federation).
            (Some(_), Target::Account(to)) if !from.is_local() && !self.exists(to).await => {
                Err(StanzaError::new(StanzaCondition::ServiceUnavailable))
            }
            (Some(m), _) => {
                let cx = IqCx {
                    im: *self,
                    from,
                    target: &target,
                    registry: self.modules,
                    ahead: Default::default(),
                };
                let outcome = m.handle_iq(&cx, &stanza).await;
                // What the module sends ahead of its answer (`IqCx::send_ahead`).
                let ahead = cx.ahead.into_inner().unwrap_or_else(|e| e.into_inner());
                if !ahead.is_empty() {
                    match from {
                        Sender::Local(_) => out.push_str(&ahead),
                        Sender::Remote(_) | Sender::Service(_) => log::debug!(
                            "{}: {} bytes sent ahead of an iq answer dropped",
                            from.as_str(),
                            ahead.len()
                        ),
                    }
                }
                outcome
            }
        };
        let reply = match outcome {
            Ok(payload) => Some(stanza.iq_result(payload)),
            Err(e) => stanza.error_reply(e),
        };
        if let Some(r) = reply {
            self.answer(from, out, r);
        }
    }

    /// The local account a message is for (its `to` at this host, with a localpart; no
    /// `to` from a local session is the sender's own account, RFC 6120 §10.3.1).
    fn local_recipient(&self, stanza: &Stanza) -> Option<BareJid> {
        let to = match &stanza.to {
            Some(to) => to.bare(),
            None => Jid::parse(stanza.el.attr("from")?).ok()?.bare(),
        };
        self.local_user(&to)?;
        Some(to)
    }

    /// Whether `jid` is an account of this server; not when storage cannot tell.
    pub(crate) async fn exists(&self, jid: &BareJid) -> bool {
        let Some(user) = self.local_user(jid).map(str::to_owned) else {
            return false;
        };
        on_pool(self.storage, move |s| s.account_exists(&user))
            .await
            .inspect_err(|e| log::error!("storage: {e}"))
            .unwrap_or(false)
    }

    /// The server's own answer to a sender (an iq result or error, a refusal): for a
    /// local session, written straight into its connection's output, ahead of anything
    /// queued for it; for a remote sender, routed back over the s2s links.
    pub(crate) fn answer(&self, to: Sender<'_>, out: &mut String, el: Element) {
        match to {
            Sender::Local(_) => el.write_to(out, ns::CLIENT),
            Sender::Remote(jid) | Sender::Service(jid) => self.send_as_server(jid.clone(), el),
        }
    }

    /// Routes a stanza the server sends on its own or on a user's behalf (presence to
    /// remote contacts, probes and their answers, answers to remote senders) with
    /// [`Origin::Server`]: an error about it (no link to that domain, federation off) is
    /// not turned into an error for a client that never sent it.
    pub(crate) fn send_as_server(&self, to: Jid, el: Element) {
        let kind = match el.name() {
            "message" => Kind::Message,
            "presence" => Kind::Presence,
            _ => Kind::Iq,
        };
        let stanza = Stanza {
            kind,
            el,
            to: Some(to),
        };
        if let Some(s) = self.router.route(Origin::Server, stanza) {
            log::debug!("undeliverable {} from the server dropped", s.el.name());
        }
    }
}
