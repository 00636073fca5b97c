//! XEP-0191 enforcement: cached blocklists, what is refused between whom, and the
//! block/unblock/blocklist requests with their pushes and presence changes.

use std::sync::Arc;

use super::BlockList as _;
use crate::features::blocking::{self, BlockRequest};
use crate::features::subscription::PresenceFlow;
use crate::jid::{BareJid, FullJid, Jid};
use crate::router::Interest;
use crate::router::im::{Im, Sender, on_pool, push_id};
use crate::stanza::{Kind, Stanza, StanzaCondition, StanzaError};
use crate::storage::{Accounts as _, OverQuota, StorageError};
use crate::xml::Element;

/// Who blocked whom, for a stanza between two addresses (XEP-0191 §3.5, §3.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Blocked {
    No,
    /// The sender blocked the recipient: the sender gets `not-acceptable` + `<blocked/>`.
    BySender,
    /// The recipient blocked the sender: dropped, or `service-unavailable` for messages
    /// and iq requests, as if the recipient did not exist.
    ByRecipient,
}

impl Im<'_> {
    /// `user`'s blocklist, from the router's cache or from storage. Cached only for
    /// accounts that exist, so messages to made-up names cannot grow the cache. An error
    /// means the list is unknown: callers fail closed (XEP-0191 §3.5 cannot be honoured,
    /// so nothing is let through on a guess).
    pub(crate) async fn blocklist(&self, user: &str) -> Result<Arc<[String]>, StorageError> {
        if let Some(l) = self.router.cached_blocklist(user) {
            return Ok(l);
        }
        let u = user.to_owned();
        let (exists, v) = on_pool(self.storage, move |s| {
            Ok((s.account_exists(&u)?, s.blocklist(&u)?))
        })
        .await
        .inspect_err(|e| {
            log::error!(
                "c2s{}: storage: cannot read the blocklist of {user:?}: {e}",
                self.conn
            )
        })?;
        let l: Arc<[String]> = v.into();
        if exists {
            self.router.cache_blocklist(user, l.clone());
        }
        Ok(l)
    }

    /// Whether `from` and `to` blocked each other: a local sender's own list, and a
    /// local recipient's list, which also holds remote addresses (a JID, or a whole
    /// server by its domain, §3.4).
    pub(crate) async fn blocked(
        &self,
        from: Sender<'_>,
        to: &Jid,
    ) -> Result<Blocked, StorageError> {
        let user = match from {
            Sender::Local(jid) => {
                let Some(user) = jid.local() else {
                    return Ok(Blocked::No);
                };
                if blocking::is_blocked(&self.blocklist(user).await?, to) {
                    return Ok(Blocked::BySender);
                }
                Some(user)
            }
            Sender::Remote(_) | Sender::Service(_) => None,
        };
        let to_bare = to.bare();
        if let Some(recipient) = self.local_user(&to_bare)
            && Some(recipient) != user
            && blocking::is_blocked(&self.blocklist(recipient).await?, &from.jid())
        {
            return Ok(Blocked::ByRecipient);
        }
        Ok(Blocked::No)
    }

    /// Applies XEP-0191 §3.5/§3.6 to a stanza for another account: true when it was
    /// refused (and the sender told, where the XEP says so: `out` is a local sender's
    /// output, see [`Im::answer`]).
    pub(crate) async fn refused_for_blocking(
        &self,
        from: Sender<'_>,
        stanza: &Stanza,
        out: &mut String,
    ) -> bool {
        let Some(to) = &stanza.to else { return false };
        if to.local().is_none() || to.bare() == from.bare() {
            return false;
        }
        let is_request = stanza.kind == Kind::Message
            || (stanza.kind == Kind::Iq && stanza.iq_type().is_some_and(|t| t.is_request()));
        match self.blocked(from, to).await {
            Ok(Blocked::No) => false,
            Err(_) => {
                // Unknown whether it is blocked: not delivered. The sender may try again
                // (`internal-server-error` is of type `wait`, RFC 6120 §8.3.3.6).
                log::warn!(
                    "c2s{}: {} to {to} not delivered: its blocking status is unknown",
                    self.conn,
                    stanza.el.name()
                );
                if is_request {
                    self.router
                        .bounce(from.origin(), stanza, StanzaCondition::InternalServerError);
                }
                true
            }
            Ok(Blocked::BySender) => {
                if let Some(e) = blocking::blocked_error(&stanza.el) {
                    self.answer(from, out, e);
                }
                true
            }
            Ok(Blocked::ByRecipient) => {
                // §3.5: as if the account did not exist; presence is dropped.
                if is_request {
                    self.router
                        .bounce(from.origin(), stanza, StanzaCondition::ServiceUnavailable);
                }
                true
            }
        }
    }

    /// Whether presence may flow between the local `user` and `contact` (neither blocked
    /// the other; a remote contact's list is its server's business). Not when a
    /// blocklist cannot be read (fail closed).
    pub(crate) async fn presence_allowed(&self, user: &str, contact: &BareJid) -> bool {
        let Ok(mine) = self.blocklist(user).await else {
            return false;
        };
        if blocking::is_blocked(&mine, &Jid::from(contact.clone())) {
            return false;
        }
        let Some(contact_user) = self.local_user(contact) else {
            return true;
        };
        let Ok(me) = BareJid::new(Some(user), self.domain()) else {
            return false;
        };
        match self.blocklist(contact_user).await {
            Ok(theirs) => !blocking::is_blocked(&theirs, &Jid::from(me)),
            Err(_) => false,
        }
    }

    /// A blocking request from the account's own client (XEP-0191 §3.1-§3.3).
    pub(crate) async fn blocking_request(
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
        let before = self.blocklist(&user).await.map_err(|_| {
            StanzaError::new(StanzaCondition::InternalServerError)
                .with_text("the blocklist cannot be read")
        })?;
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
        let u = user.clone();
        let list = items.clone();
        let quota = *self.router.quota();
        let after = on_pool(self.storage, move |s| {
            if block {
                if let Err(over) = s.block(&u, &list, &quota)? {
                    return Ok(Err(over));
                }
            } else {
                s.unblock(&u, (!list.is_empty()).then_some(list.as_slice()))?;
            }
            s.blocklist(&u).map(Ok)
        })
        .await
        .map_err(internal)?
        .map_err(|over| {
            let text = match over {
                OverQuota::Items => "the blocklist is full",
                OverQuota::Bytes => "the account's storage is full",
            };
            StanzaError::new(StanzaCondition::ResourceConstraint).with_text(text)
        })?;
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
            // A bare JID, local or remote (a domain or a full JID has no roster item).
            let Ok(contact) = BareJid::parse(&j) else {
                continue;
            };
            let from_sub = self
                .sub_state_view(&user, &contact)
                .await
                .map(|st| st.subscription.has_from())
                .unwrap_or(false);
            if from_sub {
                let flow = if block {
                    PresenceFlow::Stop
                } else {
                    PresenceFlow::Start
                };
                self.presence_flow(&user, &contact, flow).await;
            }
        }
        Ok(None)
    }
}
