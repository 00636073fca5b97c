//! Client connections (RFC 6120, RFC 6121): what a c2s stream adds to the connection loop
//! (`conn.rs`). The loop reads, frames, times and writes; this driver carries out the
//! c2s machine's own actions: the STARTTLS handshake, SASL credential checks through
//! [`crate::auth`] behind the login throttle, the limits of an authenticated stream,
//! resource binding with the router's session queue, routing through [`router::im`] with
//! backpressure, offline delivery, and the unbind at the end.

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::future::FutureExt as _;
use smol::{Async, Timer};

use super::conn::{self, Allowance, Driver, Effect, Link, Step, Transport};
use crate::features::csi;
use crate::jid::FullJid;
use crate::net::Shared;
use crate::net::limits::{Rate, Refused};
use crate::net::liveness::ping_xml;
use crate::net::sm;
use crate::password::PasswordError;
use crate::router::{self, ToSession};
use crate::stanza::{StreamCondition, StreamError};
use crate::stream::c2s::{Action, C2s, Input, ResumeFailed, Resumed};
use crate::stream::sasl::{ChannelBindings, ScramHash};
use crate::stream::sm::{Outbound, TooHigh, Unacked};
use crate::xml::Element;

/// What must be left of the negotiation deadline after a throttle delay for the login to
/// go on (see [`wait_for_throttle`]).
const THROTTLE_MARGIN: Duration = Duration::from_secs(5);

/// The c2s side of one client connection.
struct C2sDriver {
    /// The router's queue for this session, once bound.
    rx: Option<router::SessionRx>,
    /// The bound session, to unbind on the way out.
    bound: Option<(FullJid, u64)>,
    /// XEP-0198: the resumable session this connection serves, when the client asked
    /// for resumption.
    resumable: Option<Arc<sm::Resumable>>,
    /// A `<resume/>` on another connection took the session: it is parked for it, not
    /// ended.
    is_kicked: bool,
    /// After `<resumed/>`: what the client did not acknowledge and what waited for it,
    /// written on [`Action::SmResend`].
    resend: Option<Box<Resend>>,
    /// Offline delivery paused for acknowledgements (XEP-0198) after this message id.
    offline_after: Option<i64>,
    /// XEP-0352: what is held back while the client says it is inactive; `None` while
    /// it is active (the default, §5), so an active session pays one word for it.
    csi: Option<Box<csi::Held>>,
}

/// After `<resumed/>` (XEP-0198 §5): the stanzas to send again, then those that waited.
type Resend = (Vec<Unacked>, VecDeque<Arc<router::Outgoing>>);

/// What the rest of the server has for a client connection.
enum Queued {
    /// From the session's router queue.
    Item(Result<ToSession, router::Closed>),
    /// A `<resume/>` elsewhere asks this connection to let go of its session.
    Kicked,
}

/// What a client may send before authentication: small stanzas, a low byte rate.
fn unauthenticated(shared: &Shared) -> Allowance {
    Allowance {
        limits: shared.limits_unauthenticated,
        rate: Rate {
            bytes_per_sec: shared.limits.rate_bytes_per_sec_unauthenticated,
            burst_bytes: shared.limits.rate_burst_bytes_unauthenticated,
        },
    }
}

/// What an authenticated client may send (`[limits]`).
fn authenticated(shared: &Shared) -> Allowance {
    Allowance {
        limits: shared.limits_authenticated,
        rate: Rate {
            bytes_per_sec: shared.limits.rate_bytes_per_sec,
            burst_bytes: shared.limits.rate_burst_bytes,
        },
    }
}

/// A connection over the limits of [`crate::net::limits::Admission`]: on
/// the STARTTLS port it gets our stream header and a stream error at once
/// (RFC 6120 §4.9.1.1 allows the error before the peer's header); on the
/// direct TLS port nothing, since a TLS handshake just to say no would
/// cost more than the connection. Never waits: one non-blocking write
/// into an empty socket buffer, then close.
pub fn refuse(shared: &Shared, tcp: Async<TcpStream>, direct_tls: bool, why: Refused) {
    if direct_tls {
        return;
    }
    let cond = match why {
        // §4.9.3.17: the server as a whole is out of room.
        Refused::Total(_) => StreamCondition::ResourceConstraint,
        // §4.9.3.14: this peer broke the local policy.
        Refused::PerAddress(_) | Refused::Rate => StreamCondition::PolicyViolation,
    };
    let mut c2s = C2s::new(shared.policy.clone(), None);
    let mut out = Vec::new();
    c2s.fail(StreamError::new(cond).with_text(why.to_string()), &mut out);
    let mut bytes = String::new();
    for a in out {
        if let Action::Send(s) = a {
            bytes.push_str(&s);
        }
    }
    let mut sock = tcp.get_ref();
    let _ = std::io::Write::write(&mut sock, bytes.as_bytes());
    // Closing with unread input makes the kernel send a reset that can
    // destroy the error in flight; read what is there and send FIN first.
    let mut sink = [0u8; 1024];
    let _ = std::io::Read::read(&mut sock, &mut sink);
    let _ = sock.shutdown(std::net::Shutdown::Write);
}

/// Serves one accepted client connection to its end. `direct_tls` is true
/// for the XEP-0368 port, where TLS starts before any XML.
pub async fn serve_client(
    shared: Arc<Shared>,
    tcp: Async<TcpStream>,
    peer: SocketAddr,
    direct_tls: bool,
    id: u64,
) {
    let now = Instant::now();
    let (io, tls) = if direct_tls {
        let deadline = now + shared.negotiation_timeout;
        let config = shared.tls().direct_config().clone();
        match conn::direct_tls::<C2sDriver>(&shared, tcp, config, peer, id, deadline).await {
            Some((io, cb)) => (io, Some(cb)),
            None => return,
        }
    } else {
        (Transport::Plain(tcp), None)
    };
    serve_transport(shared, io, peer, tls, id, now).await;
}

/// RFC 7395: serves a client over a WebSocket, which is already encrypted (`tls`, maybe
/// without channel bindings) or plain from a trusted proxy on this host: the stream
/// starts past STARTTLS, as on the direct TLS port. Its negotiation deadline counts from
/// `accepted`.
pub(super) async fn serve_websocket(
    shared: Arc<Shared>,
    io: super::websocket::WsIo,
    peer: SocketAddr,
    tls: ChannelBindings,
    id: u64,
    accepted: Instant,
) {
    let io = Transport::WebSocket(Box::new(io));
    serve_transport(shared, io, peer, Some(tls), id, accepted).await;
}

/// The c2s session on a connection whose transport is set up (`tls` when it is
/// encrypted already), accepted at `now`.
async fn serve_transport(
    shared: Arc<Shared>,
    io: Transport,
    peer: SocketAddr,
    tls: Option<ChannelBindings>,
    id: u64,
    now: Instant,
) {
    let machine = C2s::new(shared.policy.clone(), tls);
    let allowance = unauthenticated(&shared);
    let link = Link::new(id, shared, peer, io, machine, allowance, now);
    let driver = C2sDriver {
        rx: None,
        bound: None,
        resumable: None,
        is_kicked: false,
        resend: None,
        offline_after: None,
        csi: None,
    };
    conn::serve(link, driver).await;
}

impl Driver for C2sDriver {
    type Machine = C2s;
    type Queued = Queued;
    const KIND: &'static str = "c2s";

    async fn queued(&self) -> Self::Queued {
        let Some(rx) = &self.rx else {
            return std::future::pending().await;
        };
        let item = async { Queued::Item(rx.recv().await) };
        match &self.resumable {
            Some(r) => {
                item.or(async {
                    r.kicked().await;
                    Queued::Kicked
                })
                .await
            }
            None => item.await,
        }
    }

    fn on_queued(&mut self, link: &mut Link<Self>, item: Self::Queued) -> Step<Action> {
        let item = match item {
            Queued::Item(item) => item,
            Queued::Kicked => {
                // XEP-0198 §5: the client resumed on a new connection; this one (likely
                // half-open) hears why, if it still hears anything.
                self.is_kicked = true;
                let mut out = Vec::new();
                link.machine.fail(
                    StreamError::new(StreamCondition::Conflict)
                        .with_text("the session was resumed on another connection"),
                    &mut out,
                );
                return Step::End(out, "session resumed on another connection".into());
            }
        };
        if is_over_unacked(link) {
            // A client that reads but never acknowledges would hold ever more memory.
            let mut out = Vec::new();
            link.machine.fail(
                StreamError::new(StreamCondition::ResourceConstraint)
                    .with_text("too many unacknowledged stanzas"),
                &mut out,
            );
            // The stanza goes back in front of what the session leaves behind.
            if let Ok(ToSession::Stanza(s)) = item {
                self.resend = Some(Box::new((Vec::new(), VecDeque::from([s]))));
            }
            return Step::End(out, "too many unacknowledged stanzas".into());
        }
        match item {
            Ok(ToSession::Stanza(stanza)) if self.csi.is_some() => {
                self.on_queued_inactive(link, stanza)
            }
            Ok(ToSession::Stanza(stanza)) => {
                // Serialized here, in this stream's namespace (RFC 6120 §4.8.3), with
                // whatever else is already queued in the same write.
                if let Some(err) = conn::write_batch(&mut link.out, &stanza, self.rx.as_ref()) {
                    let mut out = Vec::new();
                    link.machine.fail(err, &mut out);
                    return Step::End(out, "closed by the server".into());
                }
                Step::Wait
            }
            Ok(ToSession::Close(err)) => {
                log::info!("c2s{}: closing: {err}", link.id);
                if let Some(held) = self.csi.as_deref_mut() {
                    write_held(&mut link.out, held);
                }
                let mut out = Vec::new();
                link.machine.fail(err, &mut out);
                Step::Apply(out)
            }
            // The router dropped the queue: the session was replaced.
            Err(_) => Step::End(Vec::new(), "session queue closed".into()),
        }
    }

    async fn effect(&mut self, link: &mut Link<Self>, action: Action) -> Effect<Input> {
        match action {
            // Boxed, these three: they happen once or twice a connection, and their
            // futures (handshake, storage, password check) would otherwise widen every
            // connection's task for its whole life.
            Action::StartTls => Box::pin(start_tls(link)).await,
            Action::LookupScram { username, hash } => {
                Box::pin(lookup_scram(link, username, hash)).await
            }
            Action::VerifyPlain { username, password } => {
                Box::pin(verify_plain(link, username, password)).await
            }
            Action::Register {
                username,
                password,
                token,
            } => {
                let user = username.clone();
                let new = crate::features::register::NewAccount {
                    username,
                    password,
                    token,
                };
                // Boxed like the other password work. Not abandoned when the client hangs
                // up: an invitation's use, once taken, must end in an account or be given
                // back, and the hashing is bounded anyway.
                let (ip, id) = (link.peer.ip(), link.id);
                let result = Box::pin(link.shared.registrar.register(
                    &link.shared.storage,
                    new,
                    ip,
                    id,
                ))
                .await;
                let result = match result {
                    Ok(effects) => {
                        // XEP-0401: the household, the inviter as a contact; before the
                        // answer, so the client's first roster get shows them.
                        if let Some(effects) = effects {
                            Box::pin(crate::features::invite::welcome(
                                im(&link.shared, id),
                                &user,
                                effects,
                            ))
                            .await;
                        }
                        let timeout = link.shared.negotiation_timeout;
                        link.liveness.registered(timeout, Instant::now());
                        Ok(())
                    }
                    Err(e) => Err(e),
                };
                Effect::Feed(Input::Registered(result))
            }
            Action::AuthFailed { username } => {
                // Logged without the password; the next attempt on any
                // connection waits as long as the throttle says.
                let name = username.as_deref().unwrap_or("");
                log::info!(
                    "c2s{}: {} failed to authenticate as {name:?}",
                    link.id,
                    link.peer
                );
                link.shared
                    .throttle()
                    .failed(name, link.peer.ip(), Instant::now());
                Effect::Done
            }
            Action::Authenticated { username } => {
                log::info!("c2s{}: {} authenticated as {username}", link.id, link.peer);
                link.shared.throttle().succeeded(&username, link.peer.ip());
                let allowance = authenticated(&link.shared);
                link.raise_limits(allowance);
                Effect::Done
            }
            Action::Bind { resource } => {
                let (tx, rx) = router::session_queue(link.shared.limits.max_queued_bytes);
                let user = link.machine.user().unwrap_or_default().to_owned();
                let result = link.shared.router.bind(&user, resource, tx);
                Effect::Feed(Input::Bound(match result {
                    Ok(bound) => {
                        let jid = bound.jid;
                        log::info!("c2s{}: bound {jid}", link.id);
                        self.bound = Some((jid.clone(), bound.id));
                        self.rx = Some(rx);
                        link.liveness.bound(Instant::now());
                        if let Some(old) = bound.replaced {
                            Box::pin(im(&link.shared, link.id).session_replaced(&jid, old)).await;
                        }
                        Ok(jid)
                    }
                    Err(e) => Err(e),
                }))
            }
            Action::Route(_) if is_over_unacked(link) => {
                // Answers count too: a client that keeps asking and never acknowledges.
                let mut actions = Vec::new();
                link.machine.fail(
                    StreamError::new(StreamCondition::ResourceConstraint)
                        .with_text("too many unacknowledged stanzas"),
                    &mut actions,
                );
                write_sends(link, actions);
                Effect::Close
            }
            Action::ClientState(state) => {
                log::debug!("c2s{}: client {state:?}", link.id);
                // XEP-0357: push notifications go to an account none of whose sessions
                // is attended.
                if let Some((jid, sid)) = &self.bound {
                    let attention = match state {
                        csi::State::Active => router::Attention::Active,
                        csi::State::Inactive => router::Attention::Inactive,
                    };
                    link.shared.router.set_attention(jid, *sid, attention);
                }
                match state {
                    // §5.1: what was held goes out before anything the client sends next
                    // is handled.
                    csi::State::Active => {
                        if let Some(mut held) = self.csi.take() {
                            write_held(&mut link.out, &mut held);
                        }
                    }
                    csi::State::Inactive => {
                        self.csi.get_or_insert_with(Box::default);
                    }
                }
                Effect::Done
            }
            Action::Route(stanza) => {
                // XEP-0352: a client that sends something is awake; what it was spared
                // goes out now, before the answer to what it sent (Prosody does the same).
                if let Some(held) = self.csi.as_deref_mut() {
                    write_held(&mut link.out, held);
                }
                if let Some((jid, _)) = &self.bound {
                    log::debug!(
                        "c2s{}: {} {:?}",
                        link.id,
                        stanza.el.name(),
                        stanza.to.as_ref().map(|t| t.to_string())
                    );
                    let jid = jid.clone();
                    // Awaited: the client's stanzas are handled in order. Boxed (by
                    // `with_backpressure`), like every storage path here: their futures
                    // are large, and inline they would widen every idle connection's task
                    // (massif: ~2 KiB per session).
                    let paths = im(&link.shared, link.id);
                    let route = paths.route(&jid, stanza, &mut link.out);
                    let (routed, pressure) = router::with_backpressure(route).await;
                    if !pressure.is_empty() {
                        link.press(pressure);
                    }
                    if routed.offline {
                        self.offline_after = Box::pin(deliver_offline(link, &jid)).await;
                    }
                }
                Effect::Done
            }
            Action::SmEnable(enable) => {
                // What is buffered went out before `<enabled/>` and is not counted (§4).
                if link.flush().await.is_err() {
                    return Effect::Close;
                }
                let user = link.machine.user().unwrap_or_default().to_owned();
                let r = if enable.resume {
                    link.shared.sm.register(&user, enable.max)
                } else {
                    None
                };
                let (id, max) = match &r {
                    Some(r) => (Some(r.id.to_string()), Some(r.max_secs)),
                    None => (None, None),
                };
                log::debug!(
                    "c2s{}: stream management on{}",
                    link.id,
                    if r.is_some() { ", resumable" } else { "" }
                );
                self.resumable = r;
                link.sm = Some(Box::new(Outbound::new()));
                Effect::Feed(Input::SmEnabled { id, max })
            }
            Action::SmAck(h) => {
                let Some(out) = link.sm.as_mut() else {
                    return Effect::Done;
                };
                match out.ack(h) {
                    Ok(gone) => {
                        Box::pin(self.acknowledged(link, gone)).await;
                        // Paused offline delivery goes on once the client caught up.
                        let budget = link.shared.sm.config().max_unacked / 4;
                        if let Some(after) = self.offline_after
                            && link.sm.as_ref().is_some_and(|o| o.unacked_len() < budget)
                            && let Some(user) = link.machine.user().map(str::to_owned)
                        {
                            self.offline_after =
                                Box::pin(deliver_offline_managed(link, &user, after)).await;
                        }
                        Effect::Done
                    }
                    Err(too_high) => too_high_error(link, too_high),
                }
            }
            Action::SmAnswer(h) => {
                // What the client hears was handled is on the disk first (the archive
                // writes its rows a few milliseconds later otherwise): a server killed
                // after answering loses none of it.
                Box::pin(link.shared.storage.barrier()).await;
                link.out.push_str(&crate::stream::sm::ack_xml(h));
                Effect::Done
            }
            Action::SmResume { previd, h } => Box::pin(self.resume(link, previd, h)).await,
            Action::SmResend => {
                if let (Some(resend), Some(out)) = (self.resend.take(), link.sm.as_mut()) {
                    let (again, pending) = *resend;
                    for u in again {
                        out.push_written(&mut link.out, u);
                    }
                    for s in pending {
                        s.el.write_to(&mut link.out, crate::ns::CLIENT);
                    }
                }
                Effect::Done
            }
            // The stream layer's, carried out by the loop (`Machine::wire`): never here.
            // Were it a bug that sent one, this connection ends, not the server.
            Action::Send(_) | Action::ResetFramer | Action::Close => {
                log::error!("c2s{}: a stream action reached the c2s driver", link.id);
                Effect::Close
            }
        }
    }

    fn ping(&self, link: &Link<Self>, n: u64) -> Option<String> {
        let jid = link.machine.jid()?;
        Some(ping_xml(link.shared.router.domain(), jid.as_ref(), n))
    }

    async fn finish(&mut self, link: &mut Link<Self>, reason: &str) {
        let id = link.id;
        // XEP-0352: what was held for an inactive client goes with its session: parked
        // for a resumption (XEP-0198) or routed again like what it did not acknowledge.
        // XEP-0357: messages an inactive session got were notified as they came.
        let was_inactive = self.csi.is_some();
        let held = self.take_held();
        let Some((jid, sid)) = self.bound.take() else {
            log::info!("c2s{id}: {} disconnected: {reason}", link.peer);
            return;
        };
        // XEP-0198 §5: a connection lost (not closed by either side's stream close or
        // error), or one asked to let go, leaves a resumable session waiting.
        let is_lost = self.is_kicked || link.is_lost || !link.machine.is_closed();
        let resumable = self.resumable.take();
        if let Some(r) = resumable
            .as_ref()
            .filter(|_| is_lost && link.sm.is_some() && self.rx.is_some())
            && let (Some(rx), Some(out)) = (self.rx.take(), link.sm.take())
        {
            let mut pending = VecDeque::from(held);
            if let Some(resend) = self.resend.take() {
                pending.extend(resend.1);
            }
            let pending_bytes = pending.iter().map(|o| o.len).sum();
            let waiting = waiting_messages(&out, &pending);
            let parked = Box::new(sm::Parked {
                jid: jid.clone(),
                sid,
                rx,
                out: *out,
                handled: link.machine.sm_handled().unwrap_or(0),
                pending,
                pending_bytes,
                until: Instant::now() + Duration::from_secs(u64::from(r.max_secs)),
            });
            match link.shared.sm.park(&link.shared, r, parked) {
                Ok(()) => {
                    // XEP-0357: a hibernating session's user is not there to see what
                    // arrives.
                    link.shared
                        .router
                        .set_attention(&jid, sid, router::Attention::Hibernating);
                    if !waiting.is_empty() && !was_inactive {
                        hibernated(link, &jid, &waiting).await;
                    }
                    log::info!(
                        "c2s{id}: {jid} connection lost ({reason}); the session waits {} s to be resumed",
                        r.max_secs
                    );
                    return;
                }
                Err(p) => {
                    link.shared
                        .sm
                        .remove(r, link.machine.sm_handled().unwrap_or(0));
                    let p = *p;
                    let mut out = p.out;
                    Box::pin(sm::end_session(
                        &link.shared,
                        &jid,
                        sid,
                        out.take_unacked(),
                        p.pending,
                        Some(&p.rx),
                    ))
                    .await;
                    log::info!("c2s{id}: {jid} disconnected: {reason}");
                    return;
                }
            }
        }
        if let Some(r) = &resumable {
            link.shared
                .sm
                .remove(r, link.machine.sm_handled().unwrap_or(0));
        }
        match link.sm.take() {
            // Nothing it did not acknowledge is lost (XEP-0198 §5 for a session that is
            // not resumed).
            Some(mut out) => {
                let mut pending = VecDeque::from(held);
                pending.extend(self.resend.take().map(|r| r.1).unwrap_or_default());
                Box::pin(sm::end_session(
                    &link.shared,
                    &jid,
                    sid,
                    out.take_unacked(),
                    pending,
                    self.rx.as_ref(),
                ))
                .await
            }
            // Unbinds, and tells contacts the resource went offline (RFC 6121 §4.5.2).
            // Without acknowledgements, what was held (presence, chat states: never a
            // message with a body) goes like what was queued.
            None => {
                if !held.is_empty() {
                    log::debug!("c2s{id}: {} held stanzas not delivered", held.len());
                }
                Box::pin(im(&link.shared, id).session_ended(&jid, sid)).await
            }
        }
        log::info!("c2s{id}: {jid} disconnected: {reason}");
    }
}

impl C2sDriver {
    /// Stanzas the client acknowledged (XEP-0198 §4): offline messages among them are
    /// deleted from storage now.
    async fn acknowledged(&self, link: &Link<Self>, gone: Vec<Unacked>) {
        let ids: Vec<i64> = gone.iter().filter_map(|u| u.offline_id).collect();
        if ids.is_empty() {
            return;
        }
        if let Some(user) = link.machine.user() {
            im(&link.shared, link.id).offline_delete(user, ids).await;
        }
    }

    /// `<resume/>` (XEP-0198 §5): takes over the session `previd` of this account, drops
    /// what the client says it handled, and keeps the rest to be written after
    /// `<resumed/>`.
    async fn resume(&mut self, link: &mut Link<Self>, previd: String, h: u32) -> Effect<Input> {
        let user = link.machine.user().unwrap_or_default().to_owned();
        let taken = link.shared.sm.take(&user, &previd).await;
        let (r, parked) = match taken {
            Ok(t) => t,
            Err(e) => {
                log::info!("c2s{}: resumption of a session refused: {e:?}", link.id);
                let h = match e {
                    sm::ResumeError::Ended { handled } => Some(handled),
                    sm::ResumeError::NotFound | sm::ResumeError::Busy => None,
                };
                return Effect::Feed(Input::SmResumed(Err(ResumeFailed {
                    condition: "item-not-found",
                    h,
                })));
            }
        };
        let sm::Parked {
            jid,
            sid,
            rx,
            mut out,
            handled,
            pending,
            ..
        } = *parked;
        let (acked, again) = match out.resend(h) {
            Ok(x) => x,
            Err(too_high) => {
                // §4: the client claims what it was never sent; the session ends (its
                // stanzas go elsewhere), and so does this stream.
                link.shared.sm.remove(&r, handled);
                Box::pin(sm::end_session(
                    &link.shared,
                    &jid,
                    sid,
                    out.take_unacked(),
                    pending,
                    Some(&rx),
                ))
                .await;
                return too_high_error(link, too_high);
            }
        };
        log::info!(
            "c2s{}: {jid} resumed ({} stanzas sent again, {} waiting)",
            link.id,
            again.len(),
            pending.len()
        );
        link.sm = Some(Box::new(out));
        self.acknowledged(link, acked).await;
        // A new stream starts active (XEP-0352 §5).
        link.shared
            .router
            .set_attention(&jid, sid, router::Attention::Active);
        self.bound = Some((jid.clone(), sid));
        self.rx = Some(rx);
        self.resumable = Some(r);
        self.resend = Some(Box::new((again, pending)));
        link.liveness.bound(Instant::now());
        Effect::Feed(Input::SmResumed(Ok(Resumed {
            jid,
            previd,
            handled,
        })))
    }
}

/// §4: an `<a/>` or `<resume/>` acknowledging more than was sent ends the stream with
/// `undefined-condition` and `<handled-count-too-high/>`.
fn too_high_error(link: &mut Link<C2sDriver>, too_high: TooHigh) -> Effect<Input> {
    log::info!(
        "c2s{}: acknowledged {} stanzas of {} sent",
        link.id,
        too_high.h,
        too_high.sent
    );
    let mut actions = Vec::new();
    link.machine.fail(
        StreamError::new(StreamCondition::UndefinedCondition)
            .with_text("more stanzas acknowledged than were sent")
            .with_app(too_high.element()),
        &mut actions,
    );
    write_sends(link, actions);
    Effect::Close
}

/// Writes the bytes among `actions` (a stream error the machine made) into the output.
fn write_sends(link: &mut Link<C2sDriver>, actions: Vec<Action>) {
    for a in actions {
        if let Action::Send(s) = a {
            link.out.push_str(&s);
        }
    }
}

/// XEP-0198: the client leaves more stanzas unacknowledged than `[stream_management]
/// max_unacked` allows, or more bytes than [`sm::max_unacked_bytes`] (what one write adds
/// may go past it: the bound is that plus one batch).
fn is_over_unacked(link: &Link<C2sDriver>) -> bool {
    link.sm.as_ref().is_some_and(|o| {
        o.unacked_len() >= link.shared.sm.config().max_unacked
            || o.unacked_bytes() > sm::max_unacked_bytes(&link.shared)
    })
}

impl C2sDriver {
    /// XEP-0352: a stanza for an inactive client, and whatever else is already queued
    /// (as [`conn::write_batch`] takes it): held, or written after what its sender had
    /// held when it is urgent, or with everything held when the buffer is full.
    fn on_queued_inactive(
        &mut self,
        link: &mut Link<Self>,
        first: Arc<router::Outgoing>,
    ) -> Step<Action> {
        let Some(held) = self.csi.as_deref_mut() else {
            first.el.write_to(&mut link.out, crate::ns::CLIENT);
            return Step::Wait;
        };
        let mut next = Some(first);
        // Bounded like a write batch: the loop gets back to reading between batches.
        for _ in 0..csi::MAX_HELD {
            let Some(stanza) = next.take() else { break };
            offer(&mut link.out, held, stanza);
            match self.rx.as_ref().map(|rx| rx.try_recv()) {
                Some(Ok(ToSession::Stanza(s))) => next = Some(s),
                Some(Ok(ToSession::Close(err))) => {
                    // The client learns what it missed before the stream ends.
                    write_held(&mut link.out, held);
                    let mut out = Vec::new();
                    link.machine.fail(err, &mut out);
                    return Step::End(out, "closed by the server".into());
                }
                _ => break,
            }
        }
        if let Some(stanza) = next {
            offer(&mut link.out, held, stanza);
        }
        Step::Wait
    }

    /// What an inactive client's session holds and has not written (for XEP-0198, whose
    /// resumption must not lose it; XEP-0352 §5.2: the state itself is not resumed). The
    /// session is active afterwards.
    pub fn take_held(&mut self) -> Vec<Arc<router::Outgoing>> {
        self.csi.take().map(|mut h| h.take()).unwrap_or_default()
    }
}

/// The messages a session about to hibernate had been sent without acknowledging them
/// (not those out of offline storage: they wait there) and those waiting for it
/// (`Hook::SessionHibernated`).
fn waiting_messages(out: &Outbound, pending: &VecDeque<Arc<router::Outgoing>>) -> Vec<Element> {
    let written: String = out
        .unacked()
        .filter(|u| u.offline_id.is_none() && u.xml.starts_with("<message"))
        .map(|u| &*u.xml)
        .collect();
    let mut waiting = sm::parse_stanzas(&written);
    waiting.extend(
        pending
            .iter()
            .filter(|o| o.el.name() == "message")
            .map(|o| o.el.clone()),
    );
    waiting
}

/// Tells the modules that `jid`'s session hibernates with `waiting` (XEP-0357 pushes).
async fn hibernated(link: &Link<C2sDriver>, jid: &FullJid, waiting: &[Element]) {
    let shared = &link.shared;
    let cx = crate::features::HookCx {
        im: router::im::Im {
            router: &shared.router,
            storage: &shared.storage,
            modules: &shared.modules,
            conn: link.id,
        },
        from: router::im::Sender::Local(jid),
    };
    for m in shared
        .modules
        .hooked(crate::features::Hook::SessionHibernated)
    {
        m.session_hibernated(&cx, waiting, false).await;
    }
}

/// Offers `stanza` to what an inactive client's session holds; writes what must go now.
fn offer(out: &mut String, held: &mut csi::Held, stanza: Arc<router::Outgoing>) {
    match held.offer(stanza) {
        csi::Offered::Held => {}
        csi::Offered::Release(now) => {
            for s in now {
                s.el.write_to(out, crate::ns::CLIENT);
            }
        }
        csi::Offered::Full => write_held(out, held),
    }
}

/// Writes everything `held` has, oldest first, as queued stanzas are written.
fn write_held(out: &mut String, held: &mut csi::Held) {
    for s in held.take() {
        s.el.write_to(out, crate::ns::CLIENT);
    }
}

/// The storage-backed routing path (rosters, presence, offline messages) for
/// connection `conn`.
fn im(shared: &Shared, conn: u64) -> router::im::Im<'_> {
    router::im::Im {
        router: &shared.router,
        storage: &shared.storage,
        modules: &shared.modules,
        conn,
    }
}

/// XEP-0160: writes the user's offline messages page by page, flushing in between so
/// a long backlog never sits in memory at once, and deletes each page once written.
///
/// With stream management, see [`deliver_offline_managed`]: returns where it paused.
async fn deliver_offline(link: &mut Link<C2sDriver>, jid: &FullJid) -> Option<i64> {
    let user = jid.local()?;
    if link.sm.is_some() {
        return deliver_offline_managed(link, user, 0).await;
    }
    loop {
        // Taken out of storage (committed) before it is written: a message is never
        // handed over twice, even when the disk is full (then nothing is taken).
        let taken = im(&link.shared, link.id)
            .offline_take(user, router::im::OFFLINE_PAGE)
            .await;
        let page = taken?;
        if page.is_empty() {
            return None;
        }
        for (_, xml) in &page {
            link.out.push_str(xml);
        }
        if link.flush().await.is_err() {
            // Not written: back in storage for the next login; the read side sees
            // the end.
            im(&link.shared, link.id).offline_restore(user, page).await;
            return None;
        }
        if page.len() < router::im::OFFLINE_PAGE {
            return None;
        }
    }
}

/// XEP-0160 with XEP-0198: offline messages after id `after` are written page by page
/// but left in storage; each is deleted when the client acknowledges it
/// ([`C2sDriver::acknowledged`]), so one lost with the connection is delivered again
/// rather than lost. Pauses when half of what a client may leave unacknowledged is out,
/// returning the last id written: acknowledgements resume it, so a long backlog never
/// trips the bound.
async fn deliver_offline_managed(
    link: &mut Link<C2sDriver>,
    user: &str,
    mut after: i64,
) -> Option<i64> {
    let budget = link.shared.sm.config().max_unacked / 2;
    loop {
        let unacked = link.sm.as_ref().map_or(0, |o| o.unacked_len());
        if unacked >= budget {
            return Some(after);
        }
        let limit = (budget - unacked).min(router::im::OFFLINE_PAGE);
        let page = im(&link.shared, link.id)
            .offline_peek(user, after, limit)
            .await?;
        let n = page.len();
        for (id, xml) in page {
            after = id;
            if let Some(out) = link.sm.as_mut() {
                out.push_written(
                    &mut link.out,
                    Unacked {
                        xml: xml.into(),
                        offline_id: Some(id),
                    },
                );
            }
        }
        if n < limit || link.flush().await.is_err() {
            return None;
        }
    }
}

/// Sleeps as long as the throttle asks before a credential check. False when the
/// wait would not end well before the negotiation deadline: the attempt is then not
/// evaluated, and the client is told to try again later (`temporary-auth-failure`,
/// RFC 6120 §6.5.11) rather than kept waiting until hearth's own deadline closes the
/// stream with `connection-timeout`.
async fn wait_for_throttle(link: &Link<C2sDriver>, username: &str) -> bool {
    let now = Instant::now();
    let delay = link.shared.throttle().check(username, link.peer.ip(), now);
    let Some(d) = delay else { return true };
    let fits = match link.liveness.negotiation_deadline() {
        // Room left after the wait for the rest of the login: the answer, resource
        // binding, a slow phone's round trips.
        Some(deadline) => now + d + THROTTLE_MARGIN <= deadline,
        None => true,
    };
    if !fits {
        log::info!(
            "c2s{}: login of {username:?} from {} refused for now: it owes a {d:?} delay",
            link.id,
            link.peer.ip()
        );
        return false;
    }
    log::info!(
        "c2s{}: delaying login of {username:?} from {} by {d:?}",
        link.id,
        link.peer.ip()
    );
    Timer::after(d).await;
    true
}

/// STARTTLS (RFC 6120 §5.4): the handshake with the STARTTLS port's TLS set-up, then
/// the stream restarts over TLS with its channel bindings.
async fn start_tls(link: &mut Link<C2sDriver>) -> Effect<Input> {
    let config = link.shared.tls().config().clone();
    match link.start_tls(config).await {
        Ok(cb) => Effect::Feed(Input::TlsEstablished(cb)),
        Err(e) => {
            log::info!("c2s{}: {} TLS handshake failed: {e}", link.id, link.peer);
            Effect::Close
        }
    }
}

/// SCRAM (RFC 5802 §5): the stored keys of `username` for `hash`, after the throttle's
/// delay; storage failing is a temporary failure, not a wrong password.
async fn lookup_scram(
    link: &mut Link<C2sDriver>,
    username: String,
    hash: ScramHash,
) -> Effect<Input> {
    if !wait_for_throttle(link, &username).await {
        return Effect::Feed(Input::AuthUnavailable);
    }
    Effect::Feed(
        match link.shared.auth.scram_credentials(username, hash).await {
            Ok(creds) => Input::ScramCredentials(creds),
            Err(e) => {
                log::error!("c2s{}: storage: {e}", link.id);
                Input::AuthUnavailable
            }
        },
    )
}

/// PLAIN (RFC 4616): checks `password` after the throttle's delay, unless the client
/// hangs up while its check waits (then nothing is checked and the connection ends).
async fn verify_plain(
    link: &mut Link<C2sDriver>,
    username: String,
    password: String,
) -> Effect<Input> {
    if !wait_for_throttle(link, &username).await {
        return Effect::Feed(Input::AuthUnavailable);
    }
    let check = link.shared.auth.verify_plain(username, password);
    let ok = match async { Some(check.await) }.or(link.peer_gone()).await {
        Some(ok) => ok,
        None => {
            log::debug!("c2s{}: left before its password check", link.id);
            return Effect::Close;
        }
    };
    Effect::Feed(match ok {
        Ok(ok) => Input::PlainVerified(ok),
        Err(PasswordError::Busy) => {
            log::warn!(
                "c2s{}: {} too many password checks waiting, login refused",
                link.id,
                link.peer
            );
            Input::AuthUnavailable
        }
        Err(e) => {
            log::error!("c2s{}: {e}", link.id);
            Input::AuthUnavailable
        }
    })
}
