//! The router: which sessions are online, and where each stanza goes.
//!
//! It applies the delivery rules of RFC 6121 §8 for local addresses, hands
//! server-addressed iqs to the features, and answers what nobody handles
//! with `service-unavailable` (RFC 6120 §8.3.3.18). Every session has a
//! queue of stanzas, bounded in stanzas and in bytes; they stay elements until the
//! connection that writes them serializes them in its stream's namespace. A sender that
//! fills another session's queue is slowed, never the recipient punished
//! (DESIGN.md "Router"): past the queue's soft bound the stanza is still queued
//! and the sending connection stops reading its client until the queue drains
//! ([`Backpressure`]); past the hard bound (twice the soft one) the sender gets
//! `resource-constraint` back. A recipient is disconnected only for its own
//! slowness: a write to it that makes no progress for the connection's write
//! timeout.
//!
//! The router never touches storage: everything here is quick and in memory, under one
//! short lock. Stanzas whose handling needs storage (rosters, subscriptions, presence
//! broadcast, offline messages) go through [`im`], the async path the connection task
//! awaits, which calls storage off the executor and then asks the router to deliver.

pub mod im;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::features::offline;
use crate::jid::{BareJid, FullJid, Jid};
use crate::ns;
use crate::stanza::{
    IqType, Kind, MessageType, Stanza, StanzaCondition, StanzaError, StreamCondition, StreamError,
};
use crate::storage::Quota;
use crate::xml::Element;

/// Stanzas a session may have queued for writing before its senders are slowed
/// (the soft bound; the hard bound is [`HARD_FACTOR`] times it).
pub const QUEUE_STANZAS: usize = 256;

/// The hard bounds of a session queue, in stanzas and bytes, as multiples of the soft
/// ones: room for the one stanza each sender may add before its reading pauses.
pub const HARD_FACTOR: usize = 2;

/// Simultaneous sessions per account (RFC 6120 §7.6.2.1 `resource-constraint`),
/// unless [`Router::with_max_resources`] says otherwise.
pub const MAX_RESOURCES: usize = 16;

/// Bytes a session may have queued before its senders are slowed, unless
/// [`session_queue`] is told otherwise.
pub const QUEUE_BYTES: usize = 512 * 1024;

/// A stanza on its way to one or more sessions: the element, which the stream that
/// writes it serializes in its own namespace (DESIGN.md "Router"), and its size as
/// client XML, which the queues' byte bounds count.
#[derive(Debug)]
pub struct Outgoing {
    pub el: Element,
    /// Bytes of `el` as `jabber:client` XML.
    pub len: usize,
}

impl Outgoing {
    /// Measures `el` (without serializing it) for the queues.
    pub fn new(el: Element) -> Arc<Outgoing> {
        let len = el.xml_len_in(ns::CLIENT);
        Arc::new(Outgoing { el, len })
    }
}

/// What the router hands to a connection.
#[derive(Debug)]
pub enum ToSession {
    /// A stanza, shared by every recipient.
    Stanza(Arc<Outgoing>),
    /// Close the stream with this error (e.g. `conflict` when a new session
    /// took the resource, RFC 6120 §7.7.2.2).
    Close(StreamError),
}

/// The queue between the router and one connection, bounded in stanzas
/// ([`QUEUE_STANZAS`]) and in bytes.
///
/// Hand-made rather than an `async_channel`: an idle session should cost
/// next to nothing, and a channel keeps a block of slots (~1.2 KiB) plus
/// cache-padded counters (~0.7 KiB) for its whole life; this keeps a
/// `VecDeque` that is freed whenever it empties.
#[derive(Debug, Default)]
pub struct Queue {
    state: Mutex<QueueState>,
    /// Wakes the connection when something is queued or the queue closes.
    ready: event_listener::Event,
    /// Wakes senders waiting for the queue to drain below its soft bound
    /// ([`Backpressure::relieved`]).
    space: event_listener::Event,
    /// The soft bound in bytes (see [`session_queue`]).
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct QueueState {
    items: std::collections::VecDeque<ToSession>,
    /// Bytes of stanzas queued and not yet taken by the connection.
    bytes: usize,
    /// No more sending: closed by the router, or its end was dropped.
    is_closed: bool,
}

impl Queue {
    fn state(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// At or past the soft bound: senders should wait.
    fn is_pressed(&self, st: &QueueState) -> bool {
        st.items.len() >= QUEUE_STANZAS || st.bytes > self.max_bytes
    }

    /// Below the soft bound, or closed (nobody will drain it; nobody needs to wait).
    fn has_room(&self) -> bool {
        let st = self.state();
        st.is_closed || !self.is_pressed(&st)
    }
}

/// What became of a stanza handed to a session queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Queued {
    /// Queued, below the soft bound.
    Yes,
    /// Queued, but the queue is at or past its soft bound: the sender should pause.
    Pressed,
    /// Not queued: the queue is closed, or at its hard bound.
    Refused,
}

/// The queue is closed and empty: the router let go of the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed;

/// The router's end of a session queue.
#[derive(Debug)]
pub struct SessionTx {
    queue: Arc<Queue>,
}

/// The connection's end of a session queue.
#[derive(Clone, Debug)]
pub struct SessionRx {
    queue: Arc<Queue>,
}

/// A new session's queue: its senders are slowed from [`QUEUE_STANZAS`] stanzas or
/// `max_bytes` bytes on, and refused from [`HARD_FACTOR`] times that (one stanza always
/// fits in an empty queue, however large, so the bound never makes a stanza
/// undeliverable).
pub fn session_queue(max_bytes: usize) -> (SessionTx, SessionRx) {
    let queue = Arc::new(Queue {
        max_bytes,
        ..Queue::default()
    });
    (
        SessionTx {
            queue: queue.clone(),
        },
        SessionRx { queue },
    )
}

impl SessionTx {
    /// Queues `msg` unless the queue is closed or at its hard bound, in stanzas or in
    /// bytes; says whether it is now at or past its soft bound.
    fn try_send(&self, msg: ToSession) -> Queued {
        let len = match &msg {
            ToSession::Stanza(out) => out.len,
            ToSession::Close(_) => 0,
        };
        let queued = {
            let mut st = self.queue.state();
            let hard_bytes = self.queue.max_bytes.saturating_mul(HARD_FACTOR);
            let is_full = st.items.len() >= QUEUE_STANZAS * HARD_FACTOR
                || (st.bytes > 0 && st.bytes.saturating_add(len) > hard_bytes);
            if st.is_closed || is_full {
                return Queued::Refused;
            }
            st.bytes += len;
            st.items.push_back(msg);
            if self.queue.is_pressed(&st) {
                Queued::Pressed
            } else {
                Queued::Yes
            }
        };
        self.queue.ready.notify(1);
        queued
    }

    /// Queues `msg` even when the queue is full (for the closing error).
    fn force_send(&self, msg: ToSession) {
        {
            let mut st = self.queue.state();
            if st.is_closed {
                return;
            }
            st.items.push_back(msg);
        }
        self.queue.ready.notify(1);
    }

    /// No more stanzas: what is queued is still taken, then the receiver sees
    /// [`Closed`].
    pub fn close(&self) {
        self.queue.state().is_closed = true;
        self.queue.ready.notify(usize::MAX);
        self.queue.space.notify(usize::MAX);
    }
}

impl Drop for SessionTx {
    /// The router let go of the session (it was replaced or removed): the
    /// connection drains what is queued, then sees [`Closed`].
    fn drop(&mut self) {
        self.close();
    }
}

impl SessionRx {
    /// The next message if one is waiting; `Err(Some(Closed))` once closed
    /// and empty, `Err(None)` when merely empty.
    fn take(&self) -> Result<ToSession, Option<Closed>> {
        let mut st = self.queue.state();
        let was_pressed = self.queue.is_pressed(&st);
        match st.items.pop_front() {
            Some(msg) => {
                if let ToSession::Stanza(out) = &msg {
                    st.bytes -= out.len.min(st.bytes);
                }
                if st.items.is_empty() {
                    // Give the memory back: most sessions sit idle.
                    st.items = std::collections::VecDeque::new();
                }
                if was_pressed && !self.queue.is_pressed(&st) {
                    drop(st);
                    self.queue.space.notify(usize::MAX);
                }
                Ok(msg)
            }
            None if st.is_closed => Err(Some(Closed)),
            None => Err(None),
        }
    }

    /// The next message; fails once the router closed or dropped the queue
    /// and everything queued before was taken.
    pub async fn recv(&self) -> Result<ToSession, Closed> {
        loop {
            match self.take() {
                Ok(msg) => return Ok(msg),
                Err(Some(closed)) => return Err(closed),
                Err(None) => {}
            }
            // Listen, then look again, so a message queued in between is not missed.
            let listener = self.queue.ready.listen();
            match self.take() {
                Ok(msg) => return Ok(msg),
                Err(Some(closed)) => return Err(closed),
                Err(None) => listener.await,
            }
        }
    }

    /// Completes once a message is waiting or the queue is closed, taking nothing (a
    /// hibernating session's keeper, XEP-0198, takes under its own lock).
    pub async fn ready(&self) {
        loop {
            let listener = self.queue.ready.listen();
            {
                let st = self.queue.state();
                if !st.items.is_empty() || st.is_closed {
                    return;
                }
            }
            listener.await;
        }
    }

    /// The next message if one is waiting.
    pub fn try_recv(&self) -> Result<ToSession, Option<Closed>> {
        self.take()
    }

    /// Bytes of stanzas waiting.
    pub fn queued_bytes(&self) -> usize {
        self.queue.state().bytes
    }
}

/// The session queues a sender pushed to or past their soft bound: its connection stops
/// reading its client until they drain ([`Backpressure::relieved`]). Collected by
/// [`with_backpressure`] while the sender's stanza is routed.
#[derive(Clone, Debug, Default)]
pub struct Backpressure {
    queues: Vec<Arc<Queue>>,
}

impl Backpressure {
    /// Nothing to wait for.
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// Waits until every queue is below its soft bound (or closed). The caller bounds
    /// the wait: a recipient that stopped reading is cut off by its own write timeout.
    pub async fn relieved(&self) {
        for q in &self.queues {
            while !q.has_room() {
                let listener = q.space.listen();
                if q.has_room() {
                    break;
                }
                listener.await;
            }
        }
    }
}

thread_local! {
    /// Where [`deliver`] records a queue it pressed, while a [`WithBackpressure`] future
    /// is being polled on this thread (delivery is synchronous, so the stanza being
    /// routed is always that future's).
    static PRESSED: std::cell::RefCell<Option<Vec<Arc<Queue>>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `fut` (the routing of one client stanza) and returns its output with the
/// queues its deliveries pressed: the sender to slow down.
pub fn with_backpressure<F: std::future::Future>(fut: F) -> WithBackpressure<F> {
    WithBackpressure {
        fut: Box::pin(fut),
        pressed: Vec::new(),
    }
}

/// See [`with_backpressure`].
pub struct WithBackpressure<F> {
    fut: std::pin::Pin<Box<F>>,
    pressed: Vec<Arc<Queue>>,
}

impl<F: std::future::Future> std::future::Future for WithBackpressure<F> {
    type Output = (F::Output, Backpressure);

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.get_mut();
        let outer = PRESSED.with(|p| p.replace(Some(std::mem::take(&mut this.pressed))));
        let poll = this.fut.as_mut().poll(cx);
        this.pressed = PRESSED.with(|p| p.replace(outer)).unwrap_or_default();
        poll.map(|out| {
            let queues = std::mem::take(&mut this.pressed);
            (out, Backpressure { queues })
        })
    }
}

/// Where a stanza comes from (DESIGN.md "Router"): whom its errors go back to, and
/// what may be trusted about its `from`.
#[derive(Clone, Copy, Debug)]
pub enum Origin<'a> {
    /// A bound session of a local account; the stream stamped its full JID as `from`.
    Local(&'a FullJid),
    /// A remote server's stream; `from` is an address of that stream's authenticated
    /// domain (checked by the stream). Federation fills this in.
    Remote(&'a Jid),
    /// One of this server's services (the domain table's), e.g. `conference.<domain>`.
    Service(&'a Jid),
    /// The server itself (errors it makes, pushes, probes answered on someone's behalf).
    Server,
}

/// A part of the server with a domain of its own (`conference.<domain>`, `upload.…`):
/// the router hands it every stanza for that domain (DESIGN.md "Router").
pub trait Service: Send + Sync {
    /// A stanza for the service's domain, in the order its sender sent them. Called
    /// with no router lock held; must not block (queue the work).
    fn receive(&self, router: &Router, origin: Origin<'_>, stanza: Stanza);
}

/// Where stanzas for other servers' domains go: federation's outgoing links
/// (RFC 6120 §2.5, DESIGN.md "Router"). Without one, remote domains are unreachable
/// (`remote-server-not-found`, also what `federation = false` gives).
pub trait Remote: Send + Sync {
    /// Sends `stanza` (`from` one of this server's addresses, `to` in `domain`) to
    /// `domain`'s server. Must not block: a link being set up queues it. What cannot be
    /// delivered comes back to its local sender as an error stanza routed with
    /// [`Origin::Server`] (RFC 6120 §8.3, `remote-server-not-found` /
    /// `remote-server-timeout`).
    fn send(&self, router: &Router, domain: &str, stanza: Stanza);
}

/// What the domain table says about a domain.
pub enum Domain<'a> {
    /// The domain this server hosts accounts for.
    Host,
    /// One of this server's services.
    Service(&'a dyn Service),
    /// Any other domain: another server's (federation); until that exists, stanzas for
    /// it bounce with `remote-server-not-found`.
    Remote,
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
    /// The client asked for the roster, so it gets roster pushes (RFC 6121 §2.1.6).
    wants_roster: bool,
    /// The client asked for the blocklist, so it gets blocklist pushes (XEP-0191 §3.2).
    wants_blocklist: bool,
    /// The client enabled XEP-0280 carbons (§4): it gets copies of its account's
    /// messages sent and received elsewhere. One byte, in what was padding.
    wants_carbons: bool,
    /// The last available presence it broadcast (with `from`, without `to`, with a
    /// `<delay/>` of when): what a probe or a newly approved contact is shown (RFC 6121
    /// §4.3.2). Boxed: most of the
    /// session record stays small, and an unavailable session holds nothing.
    presence: Option<Box<Element>>,
    /// Addresses it sent directed available presence to (RFC 6121 §4.6.3): they get
    /// unavailable presence when it goes offline. Usually empty (no allocation).
    directed: Vec<Jid>,
    /// Whether its user can be expected to see a message now: XEP-0352 inactive, or
    /// XEP-0198 hibernating (XEP-0357 push notifications are sent when no session is).
    attention: Attention,
}

/// Whether a session's user is there to see what arrives (XEP-0357 §7's "offline"
/// includes the two kinds of sleeping session Prosody's and ejabberd's push modules
/// notify for).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Attention {
    /// Connected and not inactive.
    #[default]
    Active,
    /// Its client said `<inactive/>` (XEP-0352 §4.2).
    Inactive,
    /// Its connection was lost and it waits to be resumed (XEP-0198 §5).
    Hibernating,
}

/// One session of an account as XEP-0280 carbons need to see it: whether it gets the
/// original of a message under RFC 6121 §8.5.2.1.1 (availability and priority) and
/// whether it wants copies ([`Router::carbons_view`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CarbonsView {
    pub resource: Box<str>,
    /// It sent available presence (RFC 6121 §4.2).
    pub available: bool,
    /// Its presence priority (RFC 6121 §4.7.2.3).
    pub priority: i8,
    /// It enabled carbons (XEP-0280 §4).
    pub wants_carbons: bool,
}

/// What a client asked to be kept up to date about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interest {
    /// Roster pushes (RFC 6121 §2.1.6).
    Roster,
    /// Blocklist pushes (XEP-0191 §3.2).
    Blocklist,
}

/// A new session, from [`Router::bind`].
#[derive(Debug)]
pub struct Bound {
    pub jid: FullJid,
    /// The session's id, for [`Router::unbind`].
    pub id: u64,
    /// The session it took the resource from, if any: its contacts must hear that it
    /// went away (RFC 6121 §4.5.2), since its own connection will find nothing to unbind.
    pub replaced: Option<Ended>,
}

/// What a session left behind when it ended (for the unavailable broadcast).
#[derive(Debug)]
pub struct Ended {
    /// It had sent available presence and not yet unavailable.
    pub was_available: bool,
    /// Its directed-presence recipients.
    pub directed: Vec<Jid>,
    /// Another resource of the account is still available.
    pub others_available: bool,
}

/// What a presence broadcast changed for the sending session (RFC 6121 §4.2, §4.5).
#[derive(Debug)]
pub struct PresenceChange {
    /// Available before this presence.
    pub was_available: bool,
    /// Its priority before this presence (0 if it was not available).
    pub old_priority: i8,
    /// Another resource of the account is available.
    pub others_available: bool,
    /// When going unavailable: the directed-presence recipients, now forgotten.
    pub directed: Vec<Jid>,
}

/// Routes stanzas between local sessions and to the server's features.
pub struct Router {
    domain: Arc<str>,
    /// Bound sessions by account localpart.
    sessions: Mutex<HashMap<Box<str>, Vec<Session>>>,
    next_id: AtomicU64,
    /// Blocklists (XEP-0191) of the accounts traffic was checked for, so a message does
    /// not cost a storage read. Filled and updated by `im`; one entry per account at most,
    /// dropped with the account's last session, so a list deleted behind the server's back
    /// (`hearth user del`, then `add` again) is read afresh once its owner has logged out.
    blocklists: Mutex<HashMap<Box<str>, Arc<[String]>>>,
    /// Sessions per account.
    max_resources: usize,
    /// What each account may store (`[limits]`).
    quota: Quota,
    /// The services' domains (the domain table, besides the host and remote domains).
    services: HashMap<Box<str>, Arc<dyn Service>>,
    /// The links to other servers, when federation is on.
    remote: Option<Arc<dyn Remote>>,
}

impl Router {
    pub fn new(domain: Arc<str>) -> Router {
        Router {
            domain,
            sessions: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            blocklists: Mutex::new(HashMap::new()),
            max_resources: MAX_RESOURCES,
            quota: Quota::DEFAULT,
            services: HashMap::new(),
            remote: None,
        }
    }

    /// Registers a service under its own domain (e.g. `conference.home.example`): the
    /// router hands it everything addressed there.
    pub fn with_service(mut self, domain: &str, service: Arc<dyn Service>) -> Router {
        self.services.insert(domain.into(), service);
        self
    }

    /// Hands stanzas for other servers' domains to `remote` (federation) instead of
    /// bouncing them.
    pub fn with_remote(mut self, remote: Arc<dyn Remote>) -> Router {
        self.remote = Some(remote);
        self
    }

    /// Whether stanzas for other servers go anywhere (federation is on).
    pub fn federates(&self) -> bool {
        self.remote.is_some()
    }

    /// The domain table (DESIGN.md "Router"): this host, one of its services, or remote.
    pub fn domain_kind(&self, domain: &str) -> Domain<'_> {
        if domain == &*self.domain {
            Domain::Host
        } else if let Some(s) = self.services.get(domain) {
            Domain::Service(&**s)
        } else {
            Domain::Remote
        }
    }

    /// Whether `domain` is this server's: the host or one of its services.
    pub fn is_served(&self, domain: &str) -> bool {
        !matches!(self.domain_kind(domain), Domain::Remote)
    }

    /// Bounds what each account may store instead of [`Quota::DEFAULT`].
    pub fn with_quota(mut self, quota: Quota) -> Router {
        self.quota = quota;
        self
    }

    /// What each account may store.
    pub fn quota(&self) -> &Quota {
        &self.quota
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
    ) -> Result<Bound, StanzaError> {
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
        let mut replaced = None;
        if let Some(i) = list.iter().position(|s| *s.resource == *resource) {
            let old = list.remove(i);
            replaced = Some(Ended {
                was_available: old.available,
                directed: old.directed.clone(),
                others_available: list.iter().any(|s| s.available),
            });
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
            wants_roster: false,
            wants_blocklist: false,
            wants_carbons: false,
            presence: None,
            directed: Vec::new(),
            attention: Attention::Active,
        });
        Ok(Bound {
            jid: full,
            id,
            replaced,
        })
    }

    /// Removes a session when its connection ends; `None` if it was already gone
    /// (replaced by a newer session for the same resource).
    pub fn unbind(&self, jid: &FullJid, id: u64) -> Option<Ended> {
        let user = jid.local()?;
        let mut map = self.sessions();
        let list = map.get_mut(user)?;
        let i = list.iter().position(|s| s.id == id)?;
        let s = list.remove(i);
        let others_available = list.iter().any(|s| s.available);
        let last = list.is_empty();
        if last {
            map.remove(user);
        }
        drop(map);
        if last {
            self.blocklists
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(user);
        }
        Some(Ended {
            was_available: s.available,
            directed: s.directed,
            others_available,
        })
    }

    /// Closes every session of `user` with `err` (XEP-0077 §3.2: the account was
    /// removed). Each connection writes what it already has, then the stream error, and
    /// unbinds itself on the way out. Returns how many sessions were told.
    pub fn close_account(&self, user: &str, err: StreamError) -> usize {
        let map = self.sessions();
        let Some(list) = map.get(user) else { return 0 };
        for s in list {
            s.tx.force_send(ToSession::Close(err.clone()));
        }
        list.len()
    }

    /// Records a presence broadcast by `from` (RFC 6121 §4.2, §4.4, §4.5): availability,
    /// priority and the presence itself, and shows `el` to the account's other available
    /// resources. `el` carries `from` and no `to`. The sender's own copy (§4.2.2) is the
    /// caller's to write, straight into the connection's output, so that it comes before
    /// whatever else the presence brings back (probe answers, waiting requests, offline
    /// messages), as Prosody and ejabberd order them.
    pub fn update_presence(
        &self,
        from: &FullJid,
        el: &Element,
        available: bool,
    ) -> Option<PresenceChange> {
        let user = from.local()?;
        let xml = serialize(el);
        let mut map = self.sessions();
        let list = map.get_mut(user)?;
        let me = list.iter_mut().find(|s| *s.resource == *from.resource())?;
        let change = PresenceChange {
            was_available: me.available,
            old_priority: if me.available { me.priority } else { 0 },
            others_available: false,
            directed: if available {
                Vec::new()
            } else {
                std::mem::take(&mut me.directed)
            },
        };
        me.available = available;
        me.priority = if available {
            crate::features::presence::priority(el)
        } else {
            0
        };
        // Kept with a XEP-0203 <delay/> saying when it was sent: whoever is shown it
        // later (a probe, a new resource, a newly approved contact) learns its age.
        me.presence = available.then(|| {
            let mut kept = el.clone();
            kept.remove_children("delay", ns::DELAY);
            kept.push_child(crate::features::presence::delay(
                &self.domain,
                crate::storage::unix_now(),
            ));
            Box::new(kept)
        });
        let mut others_available = false;
        for s in list.iter() {
            let is_me = *s.resource == *from.resource();
            if s.available && !is_me {
                others_available = true;
                deliver(s, &xml);
            }
        }
        Some(PresenceChange {
            others_available,
            ..change
        })
    }

    /// Marks the session as interested in roster pushes (RFC 6121 §2.1.6) or
    /// blocklist pushes (XEP-0191 §3.2).
    pub fn set_interested(&self, jid: &FullJid, what: Interest) {
        let Some(user) = jid.local() else { return };
        if let Some(s) = self
            .sessions()
            .get_mut(user)
            .and_then(|l| l.iter_mut().find(|s| *s.resource == *jid.resource()))
        {
            match what {
                Interest::Roster => s.wants_roster = true,
                Interest::Blocklist => s.wants_blocklist = true,
            }
        }
    }

    /// Turns XEP-0280 carbons on or off for the session `jid` (§4, §5); false when it
    /// is not bound.
    pub fn set_carbons(&self, jid: &FullJid, enabled: bool) -> bool {
        let Some(user) = jid.local() else {
            return false;
        };
        match self
            .sessions()
            .get_mut(user)
            .and_then(|l| l.iter_mut().find(|s| *s.resource == *jid.resource()))
        {
            Some(s) => {
                s.wants_carbons = enabled;
                true
            }
            None => false,
        }
    }

    /// Records whether the session `jid` (the router's session `id`) is attended: its
    /// client went XEP-0352 inactive or active again, its connection was lost and it
    /// hibernates (XEP-0198), or a new connection resumed it (a new stream starts active,
    /// XEP-0352 §5).
    pub fn set_attention(&self, jid: &FullJid, id: u64, attention: Attention) {
        let Some(user) = jid.local() else { return };
        if let Some(s) = self
            .sessions()
            .get_mut(user)
            .and_then(|l| l.iter_mut().find(|s| s.id == id))
        {
            s.attention = attention;
        }
    }

    /// Whether `user` has a session that is available (RFC 6121 §4.2) and attended
    /// ([`Attention::Active`]): someone is looking, so XEP-0357 sends no notification.
    pub fn is_attended(&self, user: &str) -> bool {
        self.sessions().get(user).is_some_and(|l| {
            l.iter()
                .any(|s| s.available && s.attention == Attention::Active)
        })
    }

    /// `user`'s bound sessions as XEP-0280 carbons see them, in bind order; empty when
    /// none of them enabled carbons (the common case costs no allocation).
    pub fn carbons_view(&self, user: &str) -> Vec<CarbonsView> {
        let map = self.sessions();
        let Some(list) = map.get(user) else {
            return Vec::new();
        };
        if !list.iter().any(|s| s.wants_carbons) {
            return Vec::new();
        }
        list.iter()
            .map(|s| CarbonsView {
                resource: s.resource.clone(),
                available: s.available,
                priority: s.priority,
                wants_carbons: s.wants_carbons,
            })
            .collect()
    }

    /// `user`'s blocklist (XEP-0191) if it is cached.
    pub fn cached_blocklist(&self, user: &str) -> Option<Arc<[String]>> {
        self.blocklists
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(user)
            .cloned()
    }

    /// Caches `user`'s blocklist, as loaded from or just written to storage (the entry
    /// goes with the account's last session, see [`Router::unbind`]).
    pub fn cache_blocklist(&self, user: &str, list: Arc<[String]>) {
        self.blocklists
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(user.into(), list);
    }

    /// Remembers (available) or forgets (unavailable) a directed presence recipient
    /// (RFC 6121 §4.6.3).
    pub fn track_directed(&self, from: &FullJid, to: &Jid, available: bool) {
        let Some(user) = from.local() else { return };
        let mut map = self.sessions();
        let Some(s) = map
            .get_mut(user)
            .and_then(|l| l.iter_mut().find(|s| *s.resource == *from.resource()))
        else {
            return;
        };
        s.directed.retain(|j| j != to);
        // Bounded like everything else: a client cannot grow it without limit.
        if available && s.directed.len() < 256 {
            s.directed.push(to.clone());
        }
    }

    /// The last available presence of each available resource of `user`.
    pub fn available_presences(&self, user: &str) -> Vec<Element> {
        self.sessions()
            .get(user)
            .map(|l| {
                l.iter()
                    .filter(|s| s.available)
                    .filter_map(|s| s.presence.as_deref().cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The full JIDs of `user`'s available resources.
    pub fn available_resources(&self, user: &str) -> Vec<FullJid> {
        let map = self.sessions();
        let Some(list) = map.get(user) else {
            return Vec::new();
        };
        list.iter()
            .filter(|s| s.available)
            .filter_map(|s| FullJid::new(Some(user), &self.domain, &s.resource).ok())
            .collect()
    }

    /// Delivers `el` to every available resource of `user` (presence to a bare JID,
    /// RFC 6121 §8.5.2.1.1), serialized once.
    pub fn deliver_to_available(&self, user: &str, el: &Element) {
        let xml = serialize(el);
        if let Some(list) = self.sessions().get(user) {
            for s in list.iter().filter(|s| s.available) {
                deliver(s, &xml);
            }
        }
    }

    /// The accounts with at least one bound session, sorted (XEP-0133 §4.15, §4.20).
    pub fn online_users(&self) -> Vec<String> {
        let mut users: Vec<String> = self
            .sessions()
            .iter()
            .filter(|(_, list)| !list.is_empty())
            .map(|(user, _)| user.to_string())
            .collect();
        users.sort_unstable();
        users
    }

    /// Sends `make(full JID)` to every bound session of every account (XEP-0133 §4.23
    /// announcements); returns how many were queued.
    pub fn deliver_to_every_session(&self, make: impl Fn(&FullJid) -> Element) -> usize {
        let map = self.sessions();
        let mut queued = 0;
        for (user, list) in map.iter() {
            for s in list {
                if let Ok(jid) = FullJid::new(Some(user), &self.domain, &s.resource)
                    && deliver(s, &serialize(&make(&jid)))
                {
                    queued += 1;
                }
            }
        }
        queued
    }

    /// Ends the sessions of `user` at once — all of them, or the one bound to `resource`
    /// (its account is being deleted, or an admin ends them): each is unbound and its
    /// connection told to close its stream with `err`. Returns what each left behind, for
    /// the unavailable broadcast (`Im::session_replaced`); the connections find nothing
    /// to unbind when they finish.
    pub fn end_sessions(
        &self,
        user: &str,
        resource: Option<&str>,
        err: &StreamError,
    ) -> Vec<(FullJid, Ended)> {
        let mut map = self.sessions();
        let Some(list) = map.get_mut(user) else {
            return Vec::new();
        };
        let (gone, kept): (Vec<Session>, Vec<Session>) = std::mem::take(list)
            .into_iter()
            .partition(|s| resource.is_none_or(|r| *s.resource == *r));
        let kept_available = kept.iter().any(|s| s.available);
        let is_last = kept.is_empty();
        *list = kept;
        if is_last {
            map.remove(user);
        }
        drop(map);
        if is_last {
            self.blocklists
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(user);
        }
        let mut ended = Vec::new();
        for (i, s) in gone.iter().enumerate() {
            s.tx.force_send(ToSession::Close(err.clone()));
            let Ok(jid) = FullJid::new(Some(user), &self.domain, &s.resource) else {
                continue;
            };
            // Those not yet told of count as still available: the last one told of is
            // the account's last resource, unless some were kept.
            let others_available = kept_available
                || gone
                    .get(i + 1..)
                    .is_some_and(|r| r.iter().any(|o| o.available));
            ended.push((
                jid,
                Ended {
                    was_available: s.available,
                    directed: s.directed.clone(),
                    others_available,
                },
            ));
        }
        ended
    }

    /// Sends `make(resource)` to each resource of `user` that asked for the roster (or
    /// the blocklist).
    pub fn push_to_interested(
        &self,
        user: &str,
        what: Interest,
        make: impl Fn(&FullJid) -> Element,
    ) {
        let map = self.sessions();
        let Some(list) = map.get(user) else { return };
        let wants = |s: &Session| match what {
            Interest::Roster => s.wants_roster,
            Interest::Blocklist => s.wants_blocklist,
        };
        for s in list.iter().filter(|s| wants(s)) {
            if let Ok(full) = FullJid::new(Some(user), &self.domain, &s.resource) {
                deliver(s, &serialize(&make(&full)));
            }
        }
    }

    /// Bounces `stanza` back to its local sender with `cond`.
    pub fn bounce_to(&self, from: &FullJid, stanza: &Stanza, cond: StanzaCondition) {
        self.bounce(Origin::Local(from), stanza, cond)
    }

    /// Routes a stanza from `origin` (its `from` already set: stamped by a local
    /// stream, checked by a remote one, or set by a service) by the domain table: this
    /// host's accounts (RFC 6121 §8), a service, or a remote domain. Returns a message
    /// it could not deliver because no resource of its local recipient is available
    /// (RFC 6121 §8.5.2.2.1): the caller stores it offline or bounces it.
    #[must_use]
    pub fn route(&self, origin: Origin<'_>, stanza: Stanza) -> Option<Stanza> {
        let to = match (&stanza.to, origin) {
            (Some(to), _) => to.clone(),
            // RFC 6120 §10.3: no 'to' from a client means its own account.
            (None, Origin::Local(from)) => Jid::from(from.bare()),
            // Between servers and from services `to` is required (RFC 6120 §8.1.1.1):
            // there is nobody to deliver to.
            (None, _) => {
                log::debug!("{origin:?}: stanza without 'to' dropped");
                return None;
            }
        };
        match self.domain_kind(to.domain()) {
            Domain::Host => {}
            Domain::Service(service) => {
                service.receive(self, origin, stanza);
                return None;
            }
            Domain::Remote => {
                match (&self.remote, origin) {
                    // Only this server's own addresses go out (no relaying between
                    // remote servers: a remote stream may only send to our domains).
                    (Some(remote), Origin::Local(_) | Origin::Service(_) | Origin::Server) => {
                        remote.send(self, to.domain(), stanza)
                    }
                    (Some(_), Origin::Remote(_)) => {
                        log::debug!("{origin:?}: stanza for another remote domain dropped")
                    }
                    (None, _) => {
                        self.bounce(origin, &stanza, StanzaCondition::RemoteServerNotFound)
                    }
                }
                return None;
            }
        }
        match to.local() {
            None => {
                self.to_server(origin, stanza);
                None
            }
            Some(user) => match to.resource() {
                None => self.to_bare(origin, user, stanza),
                Some(res) => self.to_full(origin, user, res, stanza),
            },
        }
    }

    /// Stanzas for the server itself (RFC 6120 §10.4 / §10.5 for a
    /// domain with a resource).
    fn to_server(&self, from: Origin<'_>, stanza: Stanza) {
        if stanza.kind != Kind::Iq {
            // Presence and messages to the server have no recipient here.
            return;
        }
        // The modules answer iqs to the domain before routing (`im`); what reaches here
        // (a resource of the domain, RFC 6120 §10.4) has nobody to answer it.
        self.unanswered(from, &stanza)
    }

    /// An iq request nobody answers: `service-unavailable` (RFC 6120 §8.4); results and
    /// errors are never answered (§8.2.3).
    fn unanswered(&self, from: Origin<'_>, stanza: &Stanza) {
        if stanza.iq_type().is_some_and(IqType::is_request) {
            self.bounce(from, stanza, StanzaCondition::ServiceUnavailable)
        }
    }

    /// RFC 6121 §8.5.2: a local bare JID.
    fn to_bare(&self, from: Origin<'_>, user: &str, stanza: Stanza) -> Option<Stanza> {
        match stanza.kind {
            Kind::Iq => {
                // §8.5.2.1.3: the server answers on behalf of the account, through the
                // modules (`im`), before routing.
                self.unanswered(from, &stanza);
                None
            }
            Kind::Message => {
                let ty = stanza.message_type();
                // Copied for the queues only once a resource takes it: a message for
                // someone offline goes to storage as it is.
                let mut xml: Option<Arc<Outgoing>> = None;
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
                            let xml = xml.get_or_insert_with(|| serialize(&stanza.el));
                            if deliver(s, xml) {
                                n += 1;
                            }
                        }
                    }
                    n
                };
                if delivered == 0 && xml.is_some() {
                    // Online, but every chosen resource is far behind: the sender
                    // hears it (it is not stored, the recipient is online).
                    self.refused(from, &stanza);
                } else if delivered == 0 {
                    // §8.5.2.2.1: nobody to deliver to. Chat and normal go to
                    // offline storage (XEP-0160) through the caller.
                    if offline::is_stored(ty) {
                        return Some(stanza);
                    }
                    if ty == MessageType::Groupchat {
                        self.bounce(from, &stanza, StanzaCondition::ServiceUnavailable)
                    }
                }
                None
            }
            Kind::Presence => {
                // Presence about the sender itself (broadcast, subscriptions) is
                // handled in `im`; what reaches here is directed presence
                // (RFC 6121 §4.6) or a presence error: every available resource.
                self.deliver_to_available(user, &stanza.el);
                None
            }
        }
    }

    /// RFC 6121 §8.5.3: a local full JID.
    fn to_full(
        &self,
        from: Origin<'_>,
        user: &str,
        resource: &str,
        stanza: Stanza,
    ) -> Option<Stanza> {
        {
            let map = self.sessions();
            if let Some(s) = map
                .get(user)
                .and_then(|l| l.iter().find(|s| *s.resource == *resource))
            {
                // The element moves into the queue; only a refusal needs it back.
                let Stanza { kind, el, to } = stanza;
                let out = Outgoing::new(el);
                if !deliver(s, &out) {
                    drop(map);
                    let el = Arc::try_unwrap(out).map_or_else(|o| o.el.clone(), |o| o.el);
                    self.refused(from, &Stanza { kind, el, to });
                }
                return None;
            }
        }
        // §8.5.3.2: no such resource.
        match stanza.kind {
            Kind::Message => match stanza.message_type() {
                MessageType::Chat | MessageType::Normal => {
                    return self.to_bare(from, user, stanza);
                }
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
        None
    }

    /// A recipient's queue refused `stanza` (it is at its hard bound): messages and iq
    /// requests get `resource-constraint` (RFC 6120 §8.3.3.17, type `wait`: "the
    /// recipient is busy"); presence is dropped, like presence to an unavailable resource.
    fn refused(&self, from: Origin<'_>, stanza: &Stanza) {
        if stanza.kind != Kind::Presence {
            self.bounce(from, stanza, StanzaCondition::ResourceConstraint);
        }
    }

    /// Sends the error reply for `stanza` back to where it came from (never for an
    /// error or an iq result, RFC 6120 §8.3.1): a local session's queue, a service, or a
    /// remote sender's server over the [`Remote`] links.
    pub fn bounce(&self, from: Origin<'_>, stanza: &Stanza, cond: StanzaCondition) {
        let Some(reply) = stanza.error_reply(StanzaError::new(cond)) else {
            return;
        };
        match from {
            Origin::Local(jid) => self.reply(jid, reply),
            Origin::Service(jid) => {
                if let Some(service) = self.services.get(jid.domain()) {
                    let to = Some(jid.clone());
                    let kind = stanza.kind;
                    service.receive(
                        self,
                        Origin::Server,
                        Stanza {
                            kind,
                            el: reply,
                            to,
                        },
                    );
                }
            }
            // Back over the remote server's link (RFC 6120 §8.3.1: to the sender).
            Origin::Remote(jid) => match &self.remote {
                Some(remote) => {
                    let to = Some(jid.clone());
                    let kind = stanza.kind;
                    remote.send(
                        self,
                        jid.domain(),
                        Stanza {
                            kind,
                            el: reply,
                            to,
                        },
                    );
                }
                None => log::debug!("{from:?}: error {} not returned", cond.name()),
            },
            // The server itself makes no requests that could bounce.
            Origin::Server => {
                log::debug!("{from:?}: error {} not returned", cond.name());
            }
        }
    }

    /// Delivers the server's reply to a stanza to the local session `to`.
    ///
    /// Its `from` is left as the reply was built: the request's `to`, or none when the
    /// request had none. RFC 6120 §10.3.3: a stanza with no `to` is handled on behalf of
    /// the sender's account, and §8.1.2.1 has the answer then come from the account (no
    /// `from`, or its bare JID), never from the domain; clients that match replies by
    /// (`from`, `id`) (aioxmpp) ignore an answer from anywhere else.
    fn reply(&self, to: &FullJid, el: Element) {
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

/// A copy of `el` for the queues (the callers keep theirs).
fn serialize(el: &Element) -> Arc<Outgoing> {
    Outgoing::new(el.clone())
}

/// Queues a stanza for a session. Past the queue's soft bound the sender is slowed (the
/// queue is recorded for [`with_backpressure`]); false when the queue refused it (closed,
/// or at its hard bound): the caller answers the sender where the RFC lets it.
fn deliver(s: &Session, xml: &Arc<Outgoing>) -> bool {
    deliver_to_queue(&s.tx, xml)
}

/// Queues a stanza on a queue of the router's kind that is not a session's (an s2s
/// link's): senders past its soft bound are slowed like those of a slow session
/// ([`with_backpressure`]); `false` when it is closed or at its hard bound.
pub fn deliver_to_queue(tx: &SessionTx, xml: &Arc<Outgoing>) -> bool {
    match tx.try_send(ToSession::Stanza(xml.clone())) {
        Queued::Yes => true,
        Queued::Pressed => {
            PRESSED.with(|p| {
                if let Some(list) = p.borrow_mut().as_mut()
                    && !list.iter().any(|q| Arc::ptr_eq(q, &tx.queue))
                {
                    list.push(tx.queue.clone());
                }
            });
            true
        }
        Queued::Refused => {
            log::debug!("queue full, stanza refused to its sender");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router::new("home.example".into())
    }

    fn presence(from: &FullJid, priority: Option<i8>) -> Element {
        let mut el = Element::new("presence", ns::CLIENT).with_attr("from", from.as_str());
        if let Some(p) = priority {
            el.push_child(Element::new("priority", ns::CLIENT).with_text(p.to_string()));
        }
        el
    }

    fn recv_all(rx: &SessionRx) -> Vec<String> {
        let mut v = Vec::new();
        while let Ok(ToSession::Stanza(s)) = rx.try_recv() {
            let s = s.el.to_xml_in(ns::CLIENT);
            v.push(s.to_string());
        }
        v
    }

    #[test]
    fn presence_state_and_unbind() {
        let r = router();
        let (tx1, rx1) = session_queue(QUEUE_BYTES);
        let (tx2, rx2) = session_queue(QUEUE_BYTES);
        let b = r.bind("alice", Some("phone".into()), tx1).unwrap();
        let (phone, id1) = (b.jid, b.id);
        let b = r.bind("alice", Some("laptop".into()), tx2).unwrap();
        let (laptop, id2) = (b.jid, b.id);

        // The other resource is not available, so it is not shown the presence; the
        // sender's own copy is written by the caller (`im`), not queued here.
        let c = r
            .update_presence(&phone, &presence(&phone, Some(5)), true)
            .unwrap();
        assert!(!c.was_available && !c.others_available);
        assert!(recv_all(&rx1).is_empty());
        assert!(recv_all(&rx2).is_empty());
        let c = r
            .update_presence(&laptop, &presence(&laptop, Some(-1)), true)
            .unwrap();
        assert!(c.others_available);
        assert_eq!(recv_all(&rx1).len(), 1, "the phone sees the laptop");
        assert!(
            recv_all(&rx2).is_empty(),
            "the laptop's own copy is not queued"
        );

        // Kept presence carries a delay; both resources are listed.
        let kept = r.available_presences("alice");
        assert_eq!(kept.len(), 2);
        assert!(kept.iter().all(|p| p.has_child("delay", ns::DELAY)));
        assert_eq!(r.available_resources("alice").len(), 2);

        // Directed presence is remembered, once per address, and handed back when the
        // session goes unavailable.
        let bob = Jid::parse("bob@home.example").unwrap();
        r.track_directed(&phone, &bob, true);
        r.track_directed(&phone, &bob, true);
        let c = r
            .update_presence(&phone, &presence(&phone, None), false)
            .unwrap();
        assert!(c.was_available);
        assert_eq!(c.old_priority, 5);
        assert_eq!(c.directed, std::slice::from_ref(&bob));
        assert_eq!(
            r.available_resources("alice"),
            std::slice::from_ref(&laptop)
        );

        // Unbinding reports what the session left behind; a stale id finds nothing.
        r.track_directed(&laptop, &bob, true);
        r.track_directed(&laptop, &bob, false);
        let ended = r.unbind(&laptop, id2).unwrap();
        assert!(ended.was_available && ended.directed.is_empty() && !ended.others_available);
        assert!(r.unbind(&laptop, id2).is_none());
        assert!(r.unbind(&phone, id1 + 100).is_none());
        r.unbind(&phone, id1).unwrap();
        assert!(r.available_resources("alice").is_empty());
    }

    #[test]
    fn taking_over_a_resource_reports_the_old_session() {
        let r = router();
        let (tx1, rx1) = session_queue(QUEUE_BYTES);
        let (tx2, _rx2) = session_queue(QUEUE_BYTES);
        let old = r.bind("alice", Some("phone".into()), tx1).unwrap();
        assert!(old.replaced.is_none());
        r.update_presence(&old.jid, &presence(&old.jid, None), true);
        let new = r.bind("alice", Some("phone".into()), tx2).unwrap();
        assert_eq!(new.jid, old.jid);
        assert!(new.replaced.is_some_and(|e| e.was_available));
        // The old connection is told to close with conflict, and finds nothing to unbind.
        recv_all(&rx1);
        assert!(r.unbind(&old.jid, old.id).is_none());
    }

    /// XEP-0133 end-user-session and account removal: sessions unbound at once, each
    /// told to close, the last one told of reported as the account's last resource.
    #[test]
    fn ending_sessions_unbinds_and_closes_them() {
        let r = router();
        let mut rxs = Vec::new();
        let mut bound = Vec::new();
        for res in ["phone", "laptop", "tv"] {
            let (tx, rx) = session_queue(QUEUE_BYTES);
            let b = r.bind("alice", Some(res.into()), tx).unwrap();
            r.update_presence(&b.jid, &presence(&b.jid, None), true);
            rxs.push(rx);
            bound.push(b);
        }
        let err = StreamError::new(StreamCondition::PolicyViolation);
        let one = r.end_sessions("alice", Some("laptop"), &err);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].0.resource(), "laptop");
        assert!(one[0].1.was_available && one[0].1.others_available);
        // After the presences of the others, queued earlier.
        let closed = std::iter::from_fn(|| rxs[1].try_recv().ok()).any(
            |m| matches!(m, ToSession::Close(e) if e.condition == StreamCondition::PolicyViolation),
        );
        assert!(closed);
        assert!(r.unbind(&bound[1].jid, bound[1].id).is_none());
        let rest = r.end_sessions("alice", None, &err);
        let others: Vec<bool> = rest.iter().map(|(_, e)| e.others_available).collect();
        assert_eq!(others, [true, false]);
        assert_eq!(r.session_count(), 0);
        assert!(r.online_users().is_empty());
        assert!(r.end_sessions("alice", None, &err).is_empty());
    }

    #[test]
    fn pushes_go_to_interested_resources_only() {
        let r = router();
        let (tx1, rx1) = session_queue(QUEUE_BYTES);
        let (tx2, rx2) = session_queue(QUEUE_BYTES);
        let phone = r.bind("alice", Some("phone".into()), tx1).unwrap().jid;
        r.bind("alice", Some("tv".into()), tx2).unwrap();
        r.set_interested(&phone, Interest::Roster);
        let make = |to: &FullJid| Element::new("iq", ns::CLIENT).with_attr("to", to.as_str());
        r.push_to_interested("alice", Interest::Roster, make);
        r.push_to_interested("alice", Interest::Blocklist, make);
        let got = recv_all(&rx1);
        assert_eq!(got.len(), 1);
        assert!(got[0].contains("alice@home.example/phone"), "{got:?}");
        assert!(recv_all(&rx2).is_empty());
    }

    #[test]
    fn undelivered_messages_come_back_for_offline_storage() {
        let r = router();
        let (tx, _rx) = session_queue(QUEUE_BYTES);
        let bob = r.bind("bob", Some("desk".into()), tx).unwrap().jid;
        let msg = |ty: &str| {
            let el = Element::new("message", ns::CLIENT)
                .with_attr("type", ty)
                .with_attr("to", "alice@home.example/gone")
                .with_attr("from", bob.as_str());
            Stanza::from_client(el).unwrap()
        };
        // Chat and normal to an offline user (full JID falling back to bare) come back.
        assert!(r.route(Origin::Local(&bob), msg("chat")).is_some());
        assert!(r.route(Origin::Local(&bob), msg("normal")).is_some());
        // Headline and groupchat do not (XEP-0160 §3).
        assert!(r.route(Origin::Local(&bob), msg("headline")).is_none());
        assert!(r.route(Origin::Local(&bob), msg("groupchat")).is_none());
    }

    #[test]
    fn blocklist_cache_lives_with_the_sessions() {
        let r = router();
        let list = || -> Arc<[String]> { vec!["bob@home.example".to_string()].into() };
        // Cached for an account with no session (messages to offline users are checked
        // too), and replaced when a session binds and the list is loaded again.
        r.cache_blocklist("alice", list());
        assert!(r.cached_blocklist("alice").is_some());
        let (tx1, _rx1) = session_queue(QUEUE_BYTES);
        let (tx2, _rx2) = session_queue(QUEUE_BYTES);
        let phone = r.bind("alice", Some("phone".into()), tx1).unwrap();
        let laptop = r.bind("alice", Some("laptop".into()), tx2).unwrap();
        r.cache_blocklist("alice", list());
        assert_eq!(r.cached_blocklist("alice").unwrap().len(), 1);
        // Kept while a session remains, dropped with the last one.
        r.unbind(&phone.jid, phone.id).unwrap();
        assert!(r.cached_blocklist("alice").is_some());
        r.unbind(&laptop.jid, laptop.id).unwrap();
        assert!(r.cached_blocklist("alice").is_none());
    }

    fn stanza(n: usize) -> ToSession {
        ToSession::Stanza(Arc::new(Outgoing {
            el: Element::new("x", ns::CLIENT),
            len: n,
        }))
    }

    #[test]
    fn queue_presses_at_its_soft_bound_and_refuses_at_its_hard_bound() {
        let (tx, rx) = session_queue(1000);
        assert_eq!(tx.try_send(stanza(600)), Queued::Yes);
        assert_eq!(tx.try_send(stanza(600)), Queued::Pressed);
        assert_eq!(tx.try_send(stanza(600)), Queued::Pressed);
        // Past twice the soft bound: refused, and the byte count left alone.
        assert_eq!(tx.try_send(stanza(600)), Queued::Refused);
        assert_eq!(rx.queued_bytes(), 1800);
        assert!(!tx.queue.has_room());
        assert!(matches!(rx.try_recv(), Ok(ToSession::Stanza(x)) if x.len == 600));
        assert!(!tx.queue.has_room(), "1200 bytes are still over 1000");
        rx.try_recv().unwrap();
        assert!(tx.queue.has_room());
        assert_eq!(rx.queued_bytes(), 600);
        // An empty queue takes a stanza of any size.
        let (tx, _rx) = session_queue(1000);
        assert_eq!(tx.try_send(stanza(5000)), Queued::Pressed);
        assert_eq!(tx.try_send(stanza(1)), Queued::Refused);
    }

    #[test]
    fn dropped_queue_drains_then_reports_closed_and_recv_wakes() {
        let (tx, rx) = session_queue(QUEUE_BYTES);
        // A waiting receiver is woken by a send from another thread.
        let rx2 = rx.clone();
        let waiter = std::thread::spawn(move || smol::block_on(rx2.recv()));
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(tx.try_send(stanza(5)), Queued::Yes);
        assert!(matches!(waiter.join().unwrap(), Ok(ToSession::Stanza(x)) if x.len == 5));
        // What was queued before the router let go is still delivered.
        assert_eq!(tx.try_send(stanza(7)), Queued::Yes);
        drop(tx);
        assert!(matches!(rx.try_recv(), Ok(ToSession::Stanza(x)) if x.len == 7));
        assert_eq!(smol::block_on(rx.recv()).err(), Some(Closed));
        assert_eq!(rx.queued_bytes(), 0);
    }

    #[test]
    fn queue_is_bounded_in_stanzas() {
        let (tx, rx) = session_queue(usize::MAX);
        for _ in 1..QUEUE_STANZAS {
            assert_eq!(tx.try_send(stanza(1)), Queued::Yes);
        }
        for _ in QUEUE_STANZAS..=QUEUE_STANZAS * HARD_FACTOR {
            assert_eq!(tx.try_send(stanza(1)), Queued::Pressed);
        }
        assert_eq!(tx.try_send(stanza(1)), Queued::Refused);
        // The refused send left the byte count alone.
        assert_eq!(rx.queued_bytes(), QUEUE_STANZAS * HARD_FACTOR);
    }

    /// DESIGN.md "Router": a sender that fills a recipient's queue is slowed (its
    /// routing reports the queue), then answered with `resource-constraint` at the hard
    /// bound; the recipient is never closed for it.
    #[test]
    fn a_fast_sender_is_slowed_then_refused_never_the_recipient_closed() {
        let r = router();
        let (atx, arx) = session_queue(QUEUE_BYTES);
        let (btx, brx) = session_queue(300);
        let alice = r.bind("alice", Some("a".into()), atx).unwrap().jid;
        let bob = r.bind("bob", Some("b".into()), btx).unwrap().jid;
        let msg = || {
            let el = Element::new("message", ns::CLIENT)
                .with_attr("type", "chat")
                .with_attr("to", bob.as_str())
                .with_attr("from", alice.as_str())
                .with_child(Element::new("body", ns::CLIENT).with_text("x".repeat(100)));
            Stanza::from_client(el).unwrap()
        };
        let route = |r: &Router| {
            smol::block_on(with_backpressure(async {
                r.route(Origin::Local(&alice), msg())
            }))
            .1
        };
        // The first stanza fits; the one that passes 300 bytes presses.
        assert!(route(&r).is_empty());
        let pressure = route(&r);
        assert!(!pressure.is_empty());
        // Outside `with_backpressure` nothing is recorded (and nothing breaks).
        assert!(r.route(Origin::Local(&alice), msg()).is_none());
        // Past the hard bound: refused to alice, bob's session untouched.
        for _ in 0..10 {
            let _ = route(&r);
        }
        let to_alice = recv_all(&arx);
        assert!(!to_alice.is_empty(), "alice heard nothing");
        assert!(
            to_alice.iter().all(|e| e.contains("resource-constraint")),
            "{to_alice:?}"
        );
        let to_bob = recv_all(&brx);
        assert!(to_bob.len() >= 3 && to_bob.iter().all(|m| m.contains("<body>")));
        // Draining bob's queue relieves alice.
        smol::block_on(pressure.relieved());
        assert!(route(&r).is_empty());
        assert_eq!(r.session_count(), 2);
    }

    #[test]
    fn resources_per_account_are_capped() {
        let router = Router::new("home.local".into()).with_max_resources(2);
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

    /// A service records what the router hands it.
    #[derive(Default)]
    struct Recorder {
        got: Mutex<Vec<(String, String)>>,
    }

    impl Service for Recorder {
        fn receive(&self, _router: &Router, origin: Origin<'_>, stanza: Stanza) {
            let mut got = self.got.lock().unwrap();
            got.push((format!("{origin:?}"), stanza.el.to_string()));
        }
    }

    /// DESIGN.md "Router": the domain table sends a service's domain to the service,
    /// bounces other domains with `remote-server-not-found` until federation exists, and
    /// delivers what a remote server or a service sends to local accounts like anything
    /// else, its errors going back where it came from.
    #[test]
    fn the_domain_table_routes_host_services_and_remote() {
        let rooms = Arc::new(Recorder::default());
        let r = router().with_service("conference.home.example", rooms.clone());
        assert!(matches!(r.domain_kind("home.example"), Domain::Host));
        assert!(matches!(
            r.domain_kind("conference.home.example"),
            Domain::Service(_)
        ));
        assert!(matches!(r.domain_kind("example.org"), Domain::Remote));
        let (tx, rx) = session_queue(QUEUE_BYTES);
        let alice = r.bind("alice", Some("phone".into()), tx).unwrap().jid;
        let msg = |from: &str, to: &str| {
            let el = Element::new("message", ns::CLIENT)
                .with_attr("type", "chat")
                .with_attr("to", to)
                .with_attr("from", from);
            Stanza::from_client(el).unwrap()
        };
        // To a service: handed over, with its origin.
        let _ = r.route(
            Origin::Local(&alice),
            msg(alice.as_str(), "family@conference.home.example"),
        );
        let got = rooms.got.lock().unwrap().clone();
        assert_eq!(got.len(), 1);
        assert!(got[0].0.starts_with("Local"), "{got:?}");
        // To another domain: remote-server-not-found, back to alice.
        let _ = r.route(
            Origin::Local(&alice),
            msg(alice.as_str(), "bob@example.org"),
        );
        let back = recv_all(&rx);
        assert!(
            back.len() == 1 && back[0].contains("remote-server-not-found"),
            "{back:?}"
        );
        // From a remote server or a service, to alice's full JID: delivered as sent.
        let remote = Jid::parse("bob@example.org/desk").unwrap();
        let _ = r.route(
            Origin::Remote(&remote),
            msg(remote.as_str(), alice.as_str()),
        );
        let room = Jid::parse("family@conference.home.example/mum").unwrap();
        let _ = r.route(Origin::Service(&room), msg(room.as_str(), alice.as_str()));
        let got = recv_all(&rx);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].contains("bob@example.org/desk") && got[1].contains("/mum"));
        // A service's message to a resource that is not there: the error goes back to
        // the service, from the server.
        let iq = Stanza::from_client(
            Element::new("iq", ns::CLIENT)
                .with_attr("type", "get")
                .with_attr("id", "q")
                .with_attr("to", "alice@home.example/gone")
                .with_attr("from", room.as_str())
                .with_child(Element::new("ping", ns::PING)),
        )
        .unwrap();
        let _ = r.route(Origin::Service(&room), iq);
        let got = rooms.got.lock().unwrap().clone();
        assert_eq!(got.len(), 2);
        assert!(got[1].0 == "Server" && got[1].1.contains("service-unavailable"));
    }
}
