//! The router: which sessions are online, and where each stanza goes.
//!
//! It applies the delivery rules of RFC 6121 §8 for local addresses, hands
//! server-addressed iqs to the features, and answers what nobody handles
//! with `service-unavailable` (RFC 6120 §8.3.3.18). Every session has a
//! queue of serialized stanzas bounded in stanzas and in bytes; a session
//! whose queue is full is disconnected rather than allowed to grow memory
//! without bound.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::features::{Features, Target};
use crate::jid::{BareJid, FullJid, Jid};
use crate::ns;
use crate::stanza::{
    IqType, Kind, MessageType, Stanza, StanzaCondition, StanzaError, StreamCondition, StreamError,
};
use crate::xml::Element;

/// Stanzas a session may have queued for writing before it counts as
/// too slow and is disconnected.
pub const QUEUE_STANZAS: usize = 256;

/// Simultaneous sessions per account (RFC 6120 §7.6.2.1 `resource-constraint`),
/// unless [`Router::with_max_resources`] says otherwise.
pub const MAX_RESOURCES: usize = 16;

/// Bytes a session may have queued, unless [`session_queue`] is told otherwise.
pub const QUEUE_BYTES: usize = 512 * 1024;

/// What the router hands to a connection.
#[derive(Debug)]
pub enum ToSession {
    /// A stanza, serialized once for every recipient (in `jabber:client`).
    Stanza(Arc<str>),
    /// Close the stream with this error (e.g. `conflict` when a new session
    /// took the resource, RFC 6120 §7.7.2.2).
    Close(StreamError),
}

/// The router's end of a session queue.
#[derive(Debug)]
pub struct SessionTx {
    tx: async_channel::Sender<ToSession>,
    /// Bytes of stanzas queued and not yet taken by the connection.
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// The connection's end of a session queue.
#[derive(Clone, Debug)]
pub struct SessionRx {
    rx: async_channel::Receiver<ToSession>,
    queued: Arc<AtomicUsize>,
}

/// A new session's queue: at most [`QUEUE_STANZAS`] stanzas and
/// `max_bytes` bytes of them (one stanza always fits in an empty queue,
/// however large, so the limit never makes a stanza undeliverable).
pub fn session_queue(max_bytes: usize) -> (SessionTx, SessionRx) {
    let (tx, rx) = async_channel::bounded(QUEUE_STANZAS);
    let queued = Arc::new(AtomicUsize::new(0));
    (
        SessionTx {
            tx,
            queued: queued.clone(),
            max_bytes,
        },
        SessionRx { rx, queued },
    )
}

impl SessionTx {
    /// Queues `msg` unless the queue is full, in stanzas or in bytes.
    fn try_send(&self, msg: ToSession) -> Result<(), ToSession> {
        let len = match &msg {
            ToSession::Stanza(xml) => xml.len(),
            ToSession::Close(_) => 0,
        };
        // Senders hold the router's lock, so the check and the add below
        // cannot interleave with another sender's.
        let queued = self.queued.load(Ordering::Acquire);
        if queued > 0 && queued.saturating_add(len) > self.max_bytes {
            return Err(msg);
        }
        self.queued.fetch_add(len, Ordering::AcqRel);
        self.tx.try_send(msg).map_err(|e| {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            e.into_inner()
        })
    }

    /// Queues `msg` even when the queue is full (for the closing error).
    fn force_send(&self, msg: ToSession) {
        let _ = self.tx.force_send(msg);
    }

    fn close(&self) {
        self.tx.close();
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl SessionRx {
    fn taken(&self, msg: ToSession) -> ToSession {
        if let ToSession::Stanza(xml) = &msg {
            self.queued.fetch_sub(xml.len(), Ordering::AcqRel);
        }
        msg
    }

    /// The next message; fails when the router dropped the queue.
    pub async fn recv(&self) -> Result<ToSession, async_channel::RecvError> {
        self.rx.recv().await.map(|m| self.taken(m))
    }

    /// The next message if one is waiting.
    pub fn try_recv(&self) -> Result<ToSession, async_channel::TryRecvError> {
        self.rx.try_recv().map(|m| self.taken(m))
    }

    /// Bytes of stanzas waiting.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

/// One bound resource of an account.
#[derive(Debug)]
struct Session {
    /// Unique per process, so a stale unbind cannot remove a newer session
    /// that took over the same resource.
    id: u64,
    resource: Box<str>,
    tx: SessionTx,
    /// Set by the last broadcast presence (RFC 6121 §4.7.2.3).
    priority: i8,
    /// True once the client sent available presence (RFC 6121 §4.2):
    /// only then does bare-JID traffic reach it.
    available: bool,
}

/// Routes stanzas between local sessions and to the server's features.
pub struct Router {
    domain: Arc<str>,
    /// Bound sessions by account localpart.
    sessions: Mutex<HashMap<Box<str>, Vec<Session>>>,
    features: Features,
    next_id: AtomicU64,
    /// Sessions per account.
    max_resources: usize,
}

impl Router {
    pub fn new(domain: Arc<str>, features: Features) -> Router {
        Router {
            domain,
            sessions: Mutex::new(HashMap::new()),
            features,
            next_id: AtomicU64::new(1),
            max_resources: MAX_RESOURCES,
        }
    }

    /// Allows `n` sessions per account instead of [`MAX_RESOURCES`].
    pub fn with_max_resources(mut self, n: usize) -> Router {
        self.max_resources = n;
        self
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<Box<str>, Vec<Session>>> {
        // A panic while holding the lock is a bug that aborts the process
        // (panic = "abort"), so a poisoned lock cannot be observed in
        // release builds; in tests, keep going with the data.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of bound sessions (for logs and tests).
    pub fn session_count(&self) -> usize {
        self.sessions().values().map(Vec::len).sum()
    }

    /// Binds a resource for `user` (RFC 6120 §7). With no resource asked
    /// for, the server picks a random one (§7.6). When the resource is
    /// taken, the new session wins and the old one is closed with a
    /// `conflict` stream error (§7.7.2.2, the behaviour most clients expect
    /// when they reconnect before the server noticed the old connection died).
    pub fn bind(
        &self,
        user: &str,
        resource: Option<String>,
        tx: SessionTx,
    ) -> Result<(FullJid, u64), StanzaError> {
        let bare = BareJid::new(Some(user), &self.domain)
            .map_err(|e| StanzaError::new(StanzaCondition::BadRequest).with_text(e.to_string()))?;
        let mut map = self.sessions();
        let list = map.entry(user.into()).or_default();
        let resource = match resource {
            Some(r) => r,
            None => loop {
                let r = format!("hearth-{}", &crate::stream::new_stream_id()[..8]);
                if !list.iter().any(|s| *s.resource == *r) {
                    break r;
                }
            },
        };
        let full = bare
            .with_resource(&resource)
            .map_err(|e| StanzaError::new(StanzaCondition::BadRequest).with_text(e.to_string()))?;
        if let Some(i) = list.iter().position(|s| *s.resource == *resource) {
            let old = list.remove(i);
            let err = StreamError::new(StreamCondition::Conflict)
                .with_text("replaced by a new connection with the same resource");
            old.tx.force_send(ToSession::Close(err));
            log::info!("{full}: resource taken over by a new session");
        } else if list.len() >= self.max_resources {
            return Err(StanzaError::new(StanzaCondition::ResourceConstraint)
                .with_text("too many simultaneous sessions for this account"));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        list.push(Session {
            id,
            resource: resource.into(),
            tx,
            priority: 0,
            available: false,
        });
        Ok((full, id))
    }

    /// Removes a session when its connection ends.
    pub fn unbind(&self, jid: &FullJid, id: u64) {
        let Some(user) = jid.local() else { return };
        let mut map = self.sessions();
        if let Some(list) = map.get_mut(user) {
            list.retain(|s| s.id != id);
            if list.is_empty() {
                map.remove(user);
            }
        }
    }

    /// Routes a stanza sent by the local session `from` (its `from`
    /// attribute already stamped).
    pub fn route(&self, from: &FullJid, stanza: Stanza) {
        let to = match &stanza.to {
            // RFC 6120 §10.3: no 'to' means the sender's own account.
            None => Jid::from(from.bare()),
            Some(to) => to.clone(),
        };
        if to.domain() != &*self.domain {
            // Federation comes later; until then remote domains are unreachable.
            return self.bounce(from, &stanza, StanzaCondition::RemoteServerNotFound);
        }
        match to.local() {
            None => self.to_server(from, &to, stanza),
            Some(user) => match to.resource() {
                None => self.to_bare(from, user, stanza),
                Some(res) => self.to_full(from, user, res, stanza),
            },
        }
    }

    /// Stanzas for the server itself (RFC 6120 §10.4 / §10.5 for a
    /// domain with a resource).
    fn to_server(&self, from: &FullJid, to: &Jid, stanza: Stanza) {
        if stanza.kind != Kind::Iq {
            // Presence and messages to the server have no recipient here.
            return;
        }
        if to.resource().is_some() {
            return self.bounce(from, &stanza, StanzaCondition::ServiceUnavailable);
        }
        self.handle_iq(from, Target::Server, stanza)
    }

    fn handle_iq(&self, from: &FullJid, target: Target, stanza: Stanza) {
        let Some(ty) = stanza.iq_type() else { return };
        if !ty.is_request() {
            // §8.2.3: results and errors are never answered.
            return;
        }
        match self
            .features
            .handle_iq(&self.domain, from, &target, &stanza)
        {
            Some(Ok(payload)) => self.reply(from, stanza.iq_result(payload)),
            Some(Err(err)) => {
                if let Some(reply) = stanza.error_reply(err) {
                    self.reply(from, reply)
                }
            }
            None => self.bounce(from, &stanza, StanzaCondition::ServiceUnavailable),
        }
    }

    /// RFC 6121 §8.5.2: a local bare JID.
    fn to_bare(&self, from: &FullJid, user: &str, stanza: Stanza) {
        match stanza.kind {
            Kind::Iq => {
                // §8.5.2.1.3: the server answers on behalf of the account.
                let Ok(bare) = BareJid::new(Some(user), &self.domain) else {
                    return self.bounce(from, &stanza, StanzaCondition::JidMalformed);
                };
                self.handle_iq(from, Target::Account(bare), stanza)
            }
            Kind::Message => {
                let ty = stanza.message_type();
                let xml = serialize(&stanza.el);
                let delivered = {
                    let map = self.sessions();
                    let list = map.get(user).map(Vec::as_slice).unwrap_or(&[]);
                    // §8.5.2.1.1: chat and normal go to the available
                    // resources with the highest non-negative priority;
                    // headline to every available non-negative one.
                    let max = list
                        .iter()
                        .filter(|s| s.available && s.priority >= 0)
                        .map(|s| s.priority)
                        .max();
                    let mut n = 0;
                    for s in list.iter().filter(|s| s.available && s.priority >= 0) {
                        let wanted = match ty {
                            MessageType::Headline => true,
                            MessageType::Chat | MessageType::Normal => Some(s.priority) == max,
                            MessageType::Groupchat | MessageType::Error => false,
                        };
                        if wanted {
                            deliver(s, &xml);
                            n += 1;
                        }
                    }
                    n
                };
                if delivered == 0 {
                    match ty {
                        // §8.5.2.2.1: nobody to deliver to. Offline
                        // storage is not there yet, so say so.
                        MessageType::Chat | MessageType::Normal | MessageType::Groupchat => {
                            self.bounce(from, &stanza, StanzaCondition::ServiceUnavailable)
                        }
                        MessageType::Headline | MessageType::Error => {}
                    }
                }
            }
            Kind::Presence => {
                let is_broadcast = stanza.to.is_none()
                    || stanza.to.as_ref().is_some_and(|t| t.bare() == from.bare());
                if is_broadcast && from.local() == Some(user) {
                    self.own_presence(from, &stanza);
                } else {
                    // Directed presence (RFC 6121 §4.6) to every resource.
                    let xml = serialize(&stanza.el);
                    if let Some(list) = self.sessions().get(user) {
                        for s in list.iter().filter(|s| s.available) {
                            deliver(s, &xml);
                        }
                    }
                }
            }
        }
    }

    /// Presence a client broadcasts about itself (RFC 6121 §4.2, §4.5):
    /// records availability and priority, and shows it to the account's
    /// other available resources (§4.2.2). Contacts come with rosters.
    fn own_presence(&self, from: &FullJid, stanza: &Stanza) {
        let Some(user) = from.local() else { return };
        let ty = stanza.el.attr("type");
        if ty.is_some() && ty != Some("unavailable") {
            // Subscription types need rosters; nothing to do yet.
            return;
        }
        let available = ty.is_none();
        let priority = stanza
            .el
            .get_child("priority", ns::CLIENT)
            .and_then(|p| p.text().trim().parse::<i8>().ok())
            .unwrap_or(0);
        let mut el = stanza.el.clone();
        el.remove_attr("to");
        let xml = serialize(&el);
        let mut map = self.sessions();
        let Some(list) = map.get_mut(user) else {
            return;
        };
        for s in list.iter_mut() {
            if *s.resource == *from.resource() {
                s.available = available;
                s.priority = priority;
            } else if s.available {
                deliver(s, &xml);
            }
        }
    }

    /// RFC 6121 §8.5.3: a local full JID.
    fn to_full(&self, from: &FullJid, user: &str, resource: &str, stanza: Stanza) {
        let sent = {
            let map = self.sessions();
            match map
                .get(user)
                .and_then(|l| l.iter().find(|s| *s.resource == *resource))
            {
                Some(s) => {
                    deliver(s, &serialize(&stanza.el));
                    true
                }
                None => false,
            }
        };
        if sent {
            return;
        }
        // §8.5.3.2: no such resource.
        match stanza.kind {
            Kind::Message => match stanza.message_type() {
                MessageType::Chat | MessageType::Normal => self.to_bare(from, user, stanza),
                MessageType::Groupchat => {
                    self.bounce(from, &stanza, StanzaCondition::ServiceUnavailable)
                }
                MessageType::Headline | MessageType::Error => {}
            },
            Kind::Presence => {}
            Kind::Iq => {
                if stanza.iq_type().is_some_and(IqType::is_request) {
                    self.bounce(from, &stanza, StanzaCondition::ServiceUnavailable)
                }
            }
        }
    }

    /// Sends the error reply for `stanza` back to its sender (never for an
    /// error or an iq result, RFC 6120 §8.3.1).
    fn bounce(&self, from: &FullJid, stanza: &Stanza, cond: StanzaCondition) {
        if let Some(reply) = stanza.error_reply(StanzaError::new(cond)) {
            self.reply(from, reply);
        }
    }

    /// Delivers a server-generated stanza to the local session `to`.
    fn reply(&self, to: &FullJid, mut el: Element) {
        if el.attr("from").is_none() {
            el.set_attr("from", &*self.domain);
        }
        let Some(user) = to.local() else { return };
        let map = self.sessions();
        if let Some(s) = map
            .get(user)
            .and_then(|l| l.iter().find(|s| *s.resource == *to.resource()))
        {
            deliver(s, &serialize(&el));
        }
    }
}

fn serialize(el: &Element) -> Arc<str> {
    el.to_xml_in(ns::CLIENT).into()
}

/// Queues a stanza for a session; a session whose queue is full is too slow
/// to keep up and is closed instead (DESIGN.md "Router"), with
/// `<policy-violation/>`: RFC 6120 §4.9.3 has no condition for a reader
/// that does not read, and this is the server's policy.
fn deliver(s: &Session, xml: &Arc<str>) {
    if s.tx.try_send(ToSession::Stanza(xml.clone())).is_err() && !s.tx.is_closed() {
        let err = StreamError::new(StreamCondition::PolicyViolation)
            .with_text("too much data waiting: the connection is too slow");
        s.tx.force_send(ToSession::Close(err));
        s.tx.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stanza(n: usize) -> ToSession {
        ToSession::Stanza("x".repeat(n).into())
    }

    #[test]
    fn queue_is_bounded_in_bytes_and_counts_what_is_taken() {
        let (tx, rx) = session_queue(1000);
        tx.try_send(stanza(600)).unwrap();
        assert!(tx.try_send(stanza(600)).is_err());
        tx.try_send(stanza(400)).unwrap();
        assert_eq!(rx.queued_bytes(), 1000);
        assert!(matches!(rx.try_recv(), Ok(ToSession::Stanza(x)) if x.len() == 600));
        assert_eq!(rx.queued_bytes(), 400);
        tx.try_send(stanza(600)).unwrap();
        // An empty queue takes a stanza of any size.
        let (tx, _rx) = session_queue(1000);
        tx.try_send(stanza(5000)).unwrap();
        assert!(tx.try_send(stanza(1)).is_err());
    }

    #[test]
    fn queue_is_bounded_in_stanzas() {
        let (tx, rx) = session_queue(usize::MAX);
        for _ in 0..QUEUE_STANZAS {
            tx.try_send(stanza(1)).unwrap();
        }
        assert!(tx.try_send(stanza(1)).is_err());
        // The failed send left the byte count alone.
        assert_eq!(rx.queued_bytes(), QUEUE_STANZAS);
    }

    #[test]
    fn resources_per_account_are_capped() {
        let router = Router::new("home.local".into(), Features::standard()).with_max_resources(2);
        let mut queues = Vec::new();
        for r in ["a", "b"] {
            let (tx, rx) = session_queue(QUEUE_BYTES);
            queues.push(rx);
            router.bind("ann", Some(r.into()), tx).unwrap();
        }
        let (tx, _rx) = session_queue(QUEUE_BYTES);
        let err = router.bind("ann", Some("c".into()), tx).unwrap_err();
        assert_eq!(err.condition, StanzaCondition::ResourceConstraint);
        // Taking over an existing resource is still allowed.
        let (tx, _rx) = session_queue(QUEUE_BYTES);
        router.bind("ann", Some("a".into()), tx).unwrap();
        assert_eq!(router.session_count(), 2);
    }
}
