//! XEP-0198 §5 resumption: sessions whose connection was lost, kept for their client to
//! resume on a new connection, and what becomes of a session's unacknowledged stanzas
//! when it ends for good.
//!
//! A resumable session is a [`Resumable`] in the [`SmTable`], held by exactly one of: the
//! connection serving it, or — once that connection is lost — a small task of its own
//! ([`hibernate`]) that keeps taking what the router queues for it, until a `<resume/>`
//! takes the session over or its window ends. The router knows nothing of this: the
//! session stays bound (contacts still see it available, as with Prosody and ejabberd)
//! and its queue stays the same.
//!
//! When a session ends without being resumed, its unacknowledged messages and those
//! still waiting are routed again to its account's bare JID (another available resource
//! gets them, else offline storage, XEP-0160), stanzas that asked for an answer get
//! `service-unavailable` (RFC 6120 §8.3.3.19's "recipient-unavailable" is for a session
//! that may come back; this one will not), and presence is dropped: nothing a person
//! wrote is lost.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use smol::future::FutureExt as _;
use smol::{Executor, Timer};

use crate::config::StreamManagementConfig;
use crate::features::offline;
use crate::jid::{FullJid, Jid};
use crate::net::Shared;
use crate::ns;
use crate::router::im::{Im, Sender};
use crate::router::{Domain, Origin, Outgoing, SessionRx, ToSession};
use crate::stanza::{Kind, MessageType, Stanza, StanzaCondition};
use crate::stream::sm::{Outbound, Unacked};
use crate::xml::{Element, Event, Framer, Limits};

/// The resumable sessions, by id.
pub struct SmTable {
    map: Mutex<HashMap<Box<str>, Arc<Resumable>>>,
    /// Sessions that ended recently: (id, account, stanzas handled from the client), the
    /// newest last, at most [`ENDED_KEPT`]. A late `<resume/>` for one is told how many of
    /// its stanzas the server handled (XEP-0198 §5 `<failed h=…/>`), so the client sends
    /// again only what was lost.
    ended: Mutex<VecDeque<Ended>>,
    config: StreamManagementConfig,
    /// Where hibernating sessions' tasks run; set once the server is up.
    ex: OnceLock<Weak<Executor<'static>>>,
}

/// A session that ended: its id, its account, the stanzas it handled from its client.
type Ended = (Box<str>, Box<str>, u32);

/// One resumable session.
pub struct Resumable {
    /// The id the client resumes it by (`<enabled id=…/>`): random, unguessable.
    pub id: Box<str>,
    /// Its account: only that account may resume it.
    pub user: Box<str>,
    /// Its longest window, in seconds (`<enabled max=…/>`).
    pub max_secs: u32,
    state: Mutex<Holder>,
    /// Wakes whoever waits on the state: the connection asked to let go, the hibernating
    /// task, a resuming connection waiting for the old one to let go.
    changed: event_listener::Event,
}

/// Who holds a resumable session.
enum Holder {
    /// A connection serves it; `is_kicked` once a `<resume/>` on another connection asked
    /// it to let go (the old TCP connection may be half-open, XEP-0198 §5).
    Live { is_kicked: bool },
    /// Its connection was lost: waiting to be resumed.
    Parked(Box<Parked>),
    /// Resumed by a new connection, or ended: nothing left here.
    Gone,
}

/// A session between connections: everything a resuming connection takes over.
pub struct Parked {
    pub jid: FullJid,
    /// The router's session id, for the unbind at the very end.
    pub sid: u64,
    pub rx: SessionRx,
    /// What was sent and not acknowledged.
    pub out: Outbound,
    /// Stanzas handled from the client, for `<resumed h=…/>`.
    pub handled: u32,
    /// Stanzas queued for it since (and held back before) the connection was lost.
    pub pending: VecDeque<Arc<Outgoing>>,
    /// Bytes of `pending` as client XML.
    pub pending_bytes: usize,
    /// When its window ends.
    pub until: Instant,
}

/// Why a `<resume/>` found nothing (XEP-0198 §5 `<failed/>`).
#[derive(Debug)]
pub enum ResumeError {
    /// No such session (never was, or another account's): `item-not-found`.
    NotFound,
    /// It ended (its window passed, the server restarted it…): `item-not-found`, with how
    /// many of the client's stanzas the server had handled.
    Ended { handled: u32 },
    /// The old connection did not let go in time: `item-not-found` too, after which the
    /// client binds anew.
    Busy,
}

/// Ended sessions remembered for a late `<resume/>`: about 60 KiB at most.
const ENDED_KEPT: usize = 512;

/// How long a resuming connection waits for the old one to let go.
const LET_GO_WAIT: Duration = Duration::from_secs(10);

impl SmTable {
    pub fn new(config: StreamManagementConfig) -> SmTable {
        SmTable {
            map: Mutex::new(HashMap::new()),
            ended: Mutex::new(VecDeque::new()),
            config,
            ex: OnceLock::new(),
        }
    }

    /// Completes the wiring once the executor exists.
    pub fn start(&self, ex: &Arc<Executor<'static>>) {
        let _ = self.ex.set(Arc::downgrade(ex));
    }

    pub fn config(&self) -> &StreamManagementConfig {
        &self.config
    }

    fn map(&self) -> MutexGuard<'_, HashMap<Box<str>, Arc<Resumable>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sessions waiting to be resumed or served (for logs and tests).
    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A new resumable session for `user`, served by the calling connection, with the
    /// window the client asked for (`max`) within the configured one. `None` when
    /// resumption is off (a zero window).
    pub fn register(&self, user: &str, max: Option<u32>) -> Option<Arc<Resumable>> {
        let limit = self.config.resume_timeout_secs;
        let max_secs = max.map_or(limit, |m| m.min(limit));
        if max_secs == 0 {
            return None;
        }
        let r = Arc::new(Resumable {
            id: format!(
                "{}{}",
                crate::stream::new_stream_id(),
                crate::stream::new_stream_id()
            )
            .into(),
            user: user.into(),
            max_secs,
            state: Mutex::new(Holder::Live { is_kicked: false }),
            changed: event_listener::Event::new(),
        });
        self.map().insert(r.id.clone(), r.clone());
        Some(r)
    }

    /// Forgets `r`: its session ended, having handled `handled` stanzas from its client.
    pub fn remove(&self, r: &Resumable, handled: u32) {
        self.map().remove(&r.id);
        *r.state() = Holder::Gone;
        r.changed.notify(usize::MAX);
        self.remember_ended(r, handled);
    }

    fn remember_ended(&self, r: &Resumable, handled: u32) {
        let mut ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        if ended.len() >= ENDED_KEPT {
            ended.pop_front();
        }
        ended.push_back((r.id.clone(), r.user.clone(), handled));
    }

    /// How many stanzas the ended session `id` of `user` had handled, if it is remembered.
    fn ended_handled(&self, user: &str, id: &str) -> Option<u32> {
        let ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        ended
            .iter()
            .rev()
            .find(|(i, u, _)| &**i == id && &**u == user)
            .map(|(_, _, h)| *h)
    }

    /// Takes over session `id` of `user` for a resuming connection (XEP-0198 §5): at
    /// once if it is parked; if a connection still serves it (half-open), that connection
    /// is asked to let go and parks it, within [`LET_GO_WAIT`].
    pub async fn take(
        &self,
        user: &str,
        id: &str,
    ) -> Result<(Arc<Resumable>, Box<Parked>), ResumeError> {
        let found = self.map().get(id).filter(|r| &*r.user == user).cloned();
        let Some(r) = found else {
            return Err(match self.ended_handled(user, id) {
                Some(handled) => ResumeError::Ended { handled },
                None => ResumeError::NotFound,
            });
        };
        let deadline = Instant::now() + LET_GO_WAIT;
        loop {
            let listener = {
                let mut st = r.state();
                match std::mem::replace(&mut *st, Holder::Gone) {
                    Holder::Parked(p) => {
                        *st = Holder::Live { is_kicked: false };
                        drop(st);
                        r.changed.notify(usize::MAX);
                        return Ok((r, p));
                    }
                    Holder::Live { .. } => {
                        *st = Holder::Live { is_kicked: true };
                        drop(st);
                        let l = r.changed.listen();
                        r.changed.notify(usize::MAX);
                        l
                    }
                    Holder::Gone => {
                        return Err(match self.ended_handled(user, id) {
                            Some(handled) => ResumeError::Ended { handled },
                            None => ResumeError::NotFound,
                        });
                    }
                }
            };
            let woke = async {
                listener.await;
                true
            }
            .or(async {
                Timer::at(deadline).await;
                false
            })
            .await;
            if !woke {
                return Err(ResumeError::Busy);
            }
        }
    }

    /// Ends every session waiting to be resumed (the server is stopping): what they hold
    /// goes to offline storage, for the next login after the restart.
    pub async fn end_all(&self, shared: &Shared) {
        let waiting: Vec<Arc<Resumable>> = self.map().drain().map(|(_, r)| r).collect();
        for r in waiting {
            let parked = match std::mem::replace(&mut *r.state(), Holder::Gone) {
                Holder::Parked(p) => p,
                _ => continue,
            };
            r.changed.notify(usize::MAX);
            self.remember_ended(&r, parked.handled);
            let Parked {
                jid,
                sid,
                rx,
                mut out,
                pending,
                ..
            } = *parked;
            end_session(shared, &jid, sid, out.take_unacked(), pending, Some(&rx)).await;
        }
    }

    /// Parks `r`'s session, whose connection was lost (or asked to let go), and starts
    /// the task that keeps it until it is resumed or its window ends. False when it
    /// cannot be kept (the session was ended meanwhile, or the server is stopping): the
    /// caller ends it.
    pub fn park(
        &self,
        shared: &Arc<Shared>,
        r: &Arc<Resumable>,
        parked: Box<Parked>,
    ) -> Result<(), Box<Parked>> {
        let Some(ex) = self.ex.get().and_then(Weak::upgrade) else {
            return Err(parked);
        };
        {
            let mut st = r.state();
            if !matches!(*st, Holder::Live { .. }) {
                return Err(parked);
            }
            *st = Holder::Parked(parked);
        }
        r.changed.notify(usize::MAX);
        ex.spawn(hibernate(shared.clone(), r.clone())).detach();
        Ok(())
    }
}

impl Resumable {
    fn state(&self) -> MutexGuard<'_, Holder> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Completes when a `<resume/>` elsewhere asks the serving connection to let go.
    pub async fn kicked(&self) {
        loop {
            let listener = self.changed.listen();
            if matches!(*self.state(), Holder::Live { is_kicked: true }) {
                return;
            }
            listener.await;
        }
    }
}

/// Bytes of stanzas a session may leave unacknowledged (sent, or waiting while its
/// connection is gone): four times what a session queue may hold before its senders are
/// slowed. Past it, as past `[stream_management] max_unacked`, the session ends and what it
/// holds goes to offline storage, bounded by the account's quota: another user sending
/// large messages to a sleeping phone cannot make the server hold more.
pub fn max_unacked_bytes(shared: &Shared) -> usize {
    shared.limits.max_queued_bytes.saturating_mul(4)
}

/// What a hibernating session's task woke up for.
enum Wake {
    Queued,
    Expired,
    Changed,
}

/// Keeps a parked session: takes what the router queues for it (so its senders are never
/// slowed by a sleeping phone), and ends it when its window is over, when it holds more
/// than a connection may leave unacknowledged, or when the router closes its queue (its
/// resource was taken by a new login, its account removed).
async fn hibernate(shared: Arc<Shared>, r: Arc<Resumable>) {
    let max = shared.sm.config.max_unacked;
    let max_bytes = max_unacked_bytes(&shared);
    loop {
        let listener = r.changed.listen();
        let (rx, until) = match &*r.state() {
            Holder::Parked(p) => (p.rx.clone(), p.until),
            // Resumed, or ended: nothing to keep.
            _ => return,
        };
        let wake = async {
            rx.ready().await;
            Wake::Queued
        }
        .or(async {
            Timer::at(until).await;
            Wake::Expired
        })
        .or(async {
            listener.await;
            Wake::Changed
        })
        .await;
        let is_over = match wake {
            Wake::Changed => false,
            Wake::Expired => true,
            Wake::Queued => {
                let mut st = r.state();
                let Holder::Parked(p) = &mut *st else { return };
                let mut is_closed = false;
                loop {
                    match p.rx.try_recv() {
                        Ok(ToSession::Stanza(s)) => {
                            p.pending_bytes += s.len;
                            p.pending.push_back(s);
                        }
                        Ok(ToSession::Close(_)) | Err(Some(_)) => {
                            is_closed = true;
                            break;
                        }
                        Err(None) => break,
                    }
                }
                is_closed
                    || p.pending.len() + p.out.unacked_len() > max
                    || p.pending_bytes + p.out.unacked_bytes() > max_bytes
            }
        };
        if is_over {
            let parked = {
                let mut st = r.state();
                match std::mem::replace(&mut *st, Holder::Gone) {
                    Holder::Parked(p) => p,
                    other => {
                        *st = other;
                        return;
                    }
                }
            };
            shared.sm.map().remove(&r.id);
            shared.sm.remember_ended(&r, parked.handled);
            log::info!(
                "c2s: {} not resumed in time, session ended ({} stanzas unacknowledged, {} waiting)",
                parked.jid,
                parked.out.unacked_len(),
                parked.pending.len()
            );
            let Parked {
                jid,
                sid,
                rx,
                mut out,
                pending,
                ..
            } = *parked;
            end_session(&shared, &jid, sid, out.take_unacked(), pending, Some(&rx)).await;
            return;
        }
    }
}

/// Ends a stream-managed session for good: unbinds it (its contacts see it go, RFC 6121
/// §4.5.2), then routes again what it did not acknowledge, what waited for it, and what
/// is still queued (see the module docs).
pub async fn end_session(
    shared: &Shared,
    jid: &FullJid,
    sid: u64,
    unacked: Vec<Unacked>,
    pending: VecDeque<Arc<Outgoing>>,
    rx: Option<&SessionRx>,
) {
    let im = Im {
        router: &shared.router,
        storage: &shared.storage,
        modules: &shared.modules,
        conn: 0,
    };
    im.session_ended(jid, sid).await;
    let mut stanzas: Vec<Element> = Vec::new();
    // Offline messages not acknowledged are still in storage (they are deleted on
    // acknowledgement): they wait for the next login there.
    let written: String = unacked
        .iter()
        .filter(|u| u.offline_id.is_none())
        .map(|u| &*u.xml)
        .collect();
    stanzas.extend(parse_stanzas(&written));
    stanzas.extend(pending.iter().map(|o| o.el.clone()));
    if let Some(rx) = rx {
        while let Ok(ToSession::Stanza(s)) = rx.try_recv() {
            stanzas.push(s.el.clone());
        }
    }
    let mut rerouted = 0;
    for el in stanzas {
        if reroute(&im, jid, el, shared.shutdown_rx.is_closed()).await {
            rerouted += 1;
        }
    }
    if rerouted > 0 {
        log::info!("c2s: {jid}: {rerouted} unacknowledged messages routed again");
    }
}

/// One stanza a session did not acknowledge: a message is routed again to the account
/// (another resource, else offline storage), a request answered with an error, anything
/// else dropped. True for a message routed again.
async fn reroute(im: &Im<'_>, jid: &FullJid, mut el: Element, is_stopping: bool) -> bool {
    let kind = match el.name() {
        "message" => Kind::Message,
        "iq" => Kind::Iq,
        _ => return false,
    };
    let Some(from) = el.attr("from").and_then(|f| Jid::parse(f).ok()) else {
        return false;
    };
    let local_from = FullJid::parse(from.as_str())
        .ok()
        .filter(|_| from.domain() == im.router.domain());
    let origin = match (&local_from, im.router.domain_kind(from.domain())) {
        (Some(f), _) => Origin::Local(f),
        (None, Domain::Host) => Origin::Server,
        (None, Domain::Service(_)) => Origin::Service(&from),
        (None, Domain::Remote) => Origin::Remote(&from),
    };
    if kind == Kind::Iq {
        let stanza = Stanza {
            kind,
            to: Some(Jid::from(jid.clone())),
            el,
        };
        if stanza.iq_type().is_some_and(|t| t.is_request()) {
            im.router
                .bounce(origin, &stanza, StanzaCondition::ServiceUnavailable);
        }
        return false;
    }
    let ty = MessageType::of(&el);
    // Copies of messages that were delivered elsewhere (XEP-0280 carbons) and archive
    // query results (XEP-0313) are not messages to this account.
    let is_copy = el
        .children()
        .any(|c| c.ns() == "urn:xmpp:carbons:2" || c.ns().starts_with("urn:xmpp:mam:"));
    if is_copy || !offline::is_stored(ty) {
        return false;
    }
    let bare = jid.bare();
    el.set_attr("to", bare.as_str());
    let stanza = Stanza {
        kind,
        el,
        to: Some(Jid::from(bare)),
    };
    let sender = match (&local_from, origin) {
        (Some(f), _) => Sender::Local(f),
        (None, Origin::Service(j)) => Sender::Service(j),
        _ => Sender::Remote(&from),
    };
    // While the server stops, the other devices' sessions are ending too: straight to
    // offline storage.
    let undelivered = if is_stopping {
        Some(stanza)
    } else {
        im.router.route(origin, stanza)
    };
    if let Some(undelivered) = undelivered {
        im.store_offline(sender, undelivered).await;
    }
    true
}

/// The stanzas in XML we wrote ourselves (unacknowledged stanzas as they were sent).
pub(crate) fn parse_stanzas(xml: &str) -> Vec<Element> {
    if xml.is_empty() {
        return Vec::new();
    }
    let mut framer = Framer::new(Limits {
        max_stanza_bytes: usize::MAX,
        max_depth: 1024,
        max_attrs: 1024,
        max_elements: usize::MAX,
    });
    let head = format!(
        "<stream:stream xmlns='{}' xmlns:stream='{}'>",
        ns::CLIENT,
        ns::STREAM
    );
    let mut out = Vec::new();
    if framer.feed(head.as_bytes()).is_err() || framer.feed(xml.as_bytes()).is_err() {
        return out;
    }
    while let Ok(Some(ev)) = framer.next_event() {
        if let Event::Stanza(el) = ev {
            out.push(el);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_was_written() {
        let m = Element::new("message", ns::CLIENT)
            .with_attr("to", "a@b/c")
            .with_child(Element::new("body", ns::CLIENT).with_text("x < y"));
        let xml = format!("{}{}", m.to_xml_in(ns::CLIENT), m.to_xml_in(ns::CLIENT));
        let v = parse_stanzas(&xml);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0], m);
    }

    #[test]
    fn a_window_is_the_shorter_of_asked_and_allowed() {
        let t = SmTable::new(StreamManagementConfig {
            resume_timeout_secs: 600,
            ..StreamManagementConfig::default()
        });
        assert_eq!(t.register("alice", Some(3600)).unwrap().max_secs, 600);
        assert_eq!(t.register("alice", Some(60)).unwrap().max_secs, 60);
        assert_eq!(t.register("alice", None).unwrap().max_secs, 600);
        assert!(t.register("alice", Some(0)).is_none());
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn only_its_account_resumes_a_session() {
        let t = SmTable::new(StreamManagementConfig::default());
        let r = t.register("alice", None).unwrap();
        let got = smol::block_on(t.take("bob", &r.id));
        assert!(matches!(got, Err(ResumeError::NotFound)));
        let got = smol::block_on(t.take("alice", "nope"));
        assert!(matches!(got, Err(ResumeError::NotFound)));
    }
}
