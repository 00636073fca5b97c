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

use crate::features::{Access, IqCx, Registry, Target};
use crate::jid::{BareJid, FullJid};
use crate::ns;
use crate::stanza::{Kind, Stanza, StanzaCondition, StanzaError};
use crate::storage::{Storage, StorageError};

use super::Router;

mod blocking;
mod last;
mod offline;
mod presence;
mod roster;
mod subscription;

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

fn push_id() -> String {
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
async fn on_pool<T: Send + 'static>(
    storage: &Storage,
    f: impl FnOnce(&Storage) -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    storage.run_blocking(f).await
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

    /// An iq from the local session `from`. Addressed to the server's domain, or to an
    /// account's bare JID (no `to` is the sender's own account, RFC 6120 §10.3.3), it is
    /// answered by the module that routes its payload's namespace (`features::Registry`),
    /// or with `service-unavailable` (RFC 6120 §8.4); the answer is written straight to
    /// the sender, from the address asked (RFC 6120 §8.1.2.1). Anything else is routed.
    async fn iq(&self, from: &FullJid, stanza: Stanza, out: &mut String) {
        let target = match &stanza.to {
            None => Some(Target::Account(from.bare())),
            Some(to) if to.domain() == self.domain() && to.resource().is_none() => {
                Some(match to.local() {
                    None => Target::Server,
                    Some(_) => Target::Account(to.bare()),
                })
            }
            Some(_) => None,
        };
        let Some(target) = target else {
            if !self.refused_for_blocking(from, &stanza, out).await
                && let Some(s) = self.router.route(from, stanza)
            {
                // Only messages come back undelivered.
                log::debug!("{from}: undeliverable iq dropped: {}", s.el.name());
            }
            return;
        };
        let is_request = stanza.iq_type().is_some_and(|t| t.is_request());
        let route = stanza.iq_payload().and_then(|p| self.modules.iq_route(p));
        let is_own = target == Target::Account(from.bare());
        let access = route.map_or(Access::Anyone, |(_, r)| r.access);
        if !is_own {
            match access {
                // §2.1.5 / §2.3.3 (roster), XEP-0191 (blocklist): the account's own,
                // whoever else is asked.
                Access::Own if is_request => {
                    return self
                        .router
                        .bounce_to(from, &stanza, StanzaCondition::Forbidden);
                }
                // XEP-0191 §3.5/§3.6: nothing passes between blocked parties.
                Access::Anyone | Access::Own
                    if target != Target::Server
                        && self.refused_for_blocking(from, &stanza, out).await =>
                {
                    return;
                }
                _ => {}
            }
        }
        let module = route.filter(|(_, r)| r.on.covers(&target)).map(|(m, _)| m);
        if !is_request {
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
