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
//! fetched page by page by the connection ([`Im::offline_page`]) and deleted once written.
//!
//! - `mod.rs`: dispatch by stanza kind and iq payload;
//! - `roster.rs`, `subscription.rs`, `presence.rs`: RFC 6121 §2, §3, §4;
//! - `offline.rs`, `blocking.rs`, `last.rs`: XEP-0160, XEP-0191, XEP-0012.
//!
//! Every contact here is local: with no federation yet, a subscription or presence for
//! another domain goes no further (the router bounces what it can't deliver).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::features::{blocking as xep0191, last as xep0012, roster as rfc6121_roster};
use crate::jid::{BareJid, FullJid, Jid};
use crate::ns;
use crate::stanza::{Kind, Stanza, StanzaCondition};
use crate::storage::{Storage, StorageError};

use super::Router;

mod blocking;
mod last;
mod offline;
mod presence;
mod roster;
mod subscription;

use self::roster::AfterReply;

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

    async fn iq(&self, from: &FullJid, stanza: Stanza, out: &mut String) {
        let is_request = stanza.iq_type().is_some_and(|t| t.is_request());
        let payload = stanza.iq_payload().filter(|_| is_request);
        let is_roster = payload.is_some_and(|p| p.is("query", rfc6121_roster::NS_ROSTER));
        let is_blocking = payload.is_some_and(xep0191::is_blocking_payload);
        let is_last = payload.is_some_and(|p| p.is("query", xep0012::NS_LAST))
            && stanza.iq_type() == Some(crate::stanza::IqType::Get)
            && stanza
                .to
                .as_ref()
                .is_some_and(|t| t.is_bare() && t.local().is_some() && t.domain() == self.domain());
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
            let reply = match xep0191::parse(&stanza) {
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
        let result = match rfc6121_roster::parse(&stanza) {
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
                self.push(user, version, rfc6121_roster::removed_element(&item.jid));
                self.after_removal(from, &item).await;
            }
        }
    }
}
