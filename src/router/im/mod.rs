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
//! - `mod.rs`: dispatch by stanza kind and iq payload;
//! - `roster.rs`, `subscription.rs`, `presence.rs`: RFC 6121 §2, §3, §4;
//! - `offline.rs`, `blocking.rs`, `last.rs`: XEP-0160, XEP-0191, XEP-0012.
//!
//! Every contact here is local: with no federation yet, a subscription or presence for
//! another domain goes no further (the router bounces what it can't deliver).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::features::{Access, Hook, HookCx, IqCx, Module, Registry, Target, Verdict};
use crate::jid::{BareJid, FullJid};
use crate::ns;
use crate::router::Origin;
use crate::stanza::{Kind, Stanza, StanzaCondition, StanzaError};
use crate::storage::{Storage, StorageError};

use super::Router;

#[cfg(test)]
mod tests;

/// The two things every handler here needs.
#[derive(Clone, Copy)]
pub struct Im<'a> {
    pub router: &'a Router,
    pub storage: &'a Storage,
    /// The modules that answer iqs to the server and to accounts.
    pub modules: &'a Registry,
    /// The connection's id, for log lines (`c2s<id>`).
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
    fn iq_target(&self, from: &FullJid, stanza: &Stanza) -> Option<Target> {
        match &stanza.to {
            None => Some(Target::Account(from.bare())),
            Some(to) if to.domain() == self.domain() && to.resource().is_none() => {
                Some(match to.local() {
                    None => Target::Server,
                    Some(_) => Target::Account(to.bare()),
                })
            }
            Some(_) => None,
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
        let mut route = None;
        let mut target = None;
        if stanza.kind == Kind::Iq {
            target = self.iq_target(from, &stanza);
            route = stanza.iq_payload().and_then(|p| self.modules.iq_route(p));
        }
        let access = route.map(|(_, r)| r.access);
        if stanza.kind == Kind::Iq {
            let is_request = stanza.iq_type().is_some_and(|t| t.is_request());
            let is_own = target == Some(Target::Account(from.bare()));
            if access == Some(Access::Own) && target.is_some() && !is_own && is_request {
                // §2.1.5 / §2.3.3 (roster), XEP-0191 (blocklist): the account's own,
                // whoever else is asked.
                self.router
                    .bounce_to(from, &stanza, StanzaCondition::Forbidden);
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
                    if let Some(s) = self.router.route(Origin::Local(from), stanza) {
                        // Only messages come back undelivered.
                        log::debug!("{from}: undeliverable iq dropped: {}", s.el.name());
                    }
                }
            },
            Kind::Presence => return self.presence(from, stanza, out).await,
            Kind::Message => {
                if let Some(undelivered) = self.router.route(Origin::Local(from), stanza) {
                    match self.modules.hooked(Hook::MessageUndelivered).next() {
                        Some(m) => m.message_undelivered(&cx, undelivered).await,
                        // RFC 6121 §8.5.2.2.1: no offline storage, so no such recipient.
                        None => self.router.bounce_to(
                            from,
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
    /// `service-unavailable` (RFC 6120 §8.4); the answer is written straight to the
    /// sender, from the address asked (RFC 6120 §8.1.2.1).
    async fn iq(
        &self,
        from: &FullJid,
        target: Target,
        module: Option<&dyn Module>,
        stanza: Stanza,
        out: &mut String,
    ) {
        if !stanza.iq_type().is_some_and(|t| t.is_request()) {
            // RFC 6120 §8.2.3: results and errors are never answered; for the server
            // or an account, there is nobody to hand them to.
            return;
        }
        let outcome = match module {
            Some(m) => {
                let cx = IqCx {
                    im: *self,
                    from,
                    target: &target,
                    registry: self.modules,
                };
                m.handle_iq(&cx, &stanza).await
            }
            None => Err(StanzaError::new(StanzaCondition::ServiceUnavailable)),
        };
        let reply = match outcome {
            Ok(payload) => Some(stanza.iq_result(payload)),
            Err(e) => stanza.error_reply(e),
        };
        if let Some(r) = reply {
            r.write_to(out, ns::CLIENT);
        }
    }
}
