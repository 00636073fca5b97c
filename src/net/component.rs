//! XEP-0114 external components: the listener's side. Each configured component domain
//! is a service in the router's domain table ([`ComponentSlot`]); while its component is
//! connected, stanzas for the domain go to its connection, otherwise they bounce with
//! `service-unavailable` (RFC 6120 §8.3.3.19). One connection per domain: a second one
//! for a domain already connected is refused with `<conflict/>`.
//!
//! Components reach this server's users; their traffic to other servers is not carried
//! (a federation link authenticates only the server's own domain).

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use smol::Async;

use super::conn::{self, Allowance, Driver, Effect, Link, Step, Transport};
use crate::jid::Jid;
use crate::net::Shared;
use crate::net::limits::Rate;
use crate::router::{self, Origin, Outgoing, Router, Service, SessionRx, SessionTx, ToSession};
use crate::stanza::{Stanza, StanzaCondition, StreamCondition, StreamError};
use crate::stream::component::{Action, Component, Input};
use crate::xml::Limits;

/// One configured component domain, as the router sees it.
pub struct ComponentSlot {
    domain: Arc<str>,
    /// The connected component's queue, with the connection's id.
    conn: Mutex<Option<(u64, SessionTx)>>,
    /// Numbers connections, so an old one's end does not detach a newer one.
    next: AtomicU64,
    /// Bytes queued for the component before its senders are slowed.
    max_queued_bytes: usize,
}

impl ComponentSlot {
    pub fn new(domain: Arc<str>, max_queued_bytes: usize) -> ComponentSlot {
        ComponentSlot {
            domain,
            conn: Mutex::new(None),
            next: AtomicU64::new(1),
            max_queued_bytes,
        }
    }

    /// The component domain.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    fn conn(&self) -> MutexGuard<'_, Option<(u64, SessionTx)>> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Attaches a new connection; `None` when one is connected already.
    fn attach(&self) -> Option<(u64, SessionRx)> {
        let mut c = self.conn();
        if c.is_some() {
            return None;
        }
        let (tx, rx) = router::session_queue(self.max_queued_bytes);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        *c = Some((id, tx));
        Some((id, rx))
    }

    fn detach(&self, id: u64) {
        let mut c = self.conn();
        if c.as_ref().is_some_and(|(i, _)| *i == id) {
            *c = None;
        }
    }
}

impl Service for ComponentSlot {
    fn receive(&self, router: &Router, origin: Origin<'_>, stanza: Stanza) {
        let Stanza { kind, el, to } = stanza;
        let out = Outgoing::new(el);
        let delivered = match &*self.conn() {
            Some((_, tx)) => router::deliver_to_queue(tx, &out),
            None => false,
        };
        if !delivered {
            let el = Arc::try_unwrap(out).map_or_else(|o| o.el.clone(), |o| o.el);
            log::debug!("component {}: not connected, stanza bounced", self.domain);
            router.bounce(
                origin,
                &Stanza { kind, el, to },
                StanzaCondition::ServiceUnavailable,
            );
        }
    }
}

/// What a component may send before its handshake: a header and the handshake.
fn unauthenticated(shared: &Shared) -> Allowance {
    Allowance {
        limits: shared.limits_unauthenticated,
        rate: Rate {
            bytes_per_sec: shared.limits.rate_bytes_per_sec_unauthenticated,
            burst_bytes: shared.limits.rate_burst_bytes_unauthenticated,
        },
    }
}

/// What a connected component may send: a client's stanza size, and a bridge's rate
/// (it speaks for many users), like a server link's.
fn authenticated(shared: &Shared) -> Allowance {
    Allowance {
        limits: Limits {
            ..shared.limits_authenticated
        },
        rate: Rate {
            bytes_per_sec: shared.limits.rate_bytes_per_sec.saturating_mul(4),
            burst_bytes: shared.limits.rate_burst_bytes.saturating_mul(4),
        },
    }
}

/// Serves one connection to the component port.
pub async fn serve_component(
    shared: Arc<Shared>,
    tcp: Async<TcpStream>,
    peer: SocketAddr,
    id: u64,
) {
    let Some(policy) = shared.components.clone() else {
        return;
    };
    let now = Instant::now();
    let machine = Component::new(policy);
    let link = Link::new(
        id,
        shared.clone(),
        peer,
        Transport::Plain(tcp),
        machine,
        unauthenticated(&shared),
        now,
    );
    conn::serve(
        link,
        ComponentDriver {
            slot: None,
            rx: None,
            conn_id: 0,
        },
    )
    .await;
}

/// What a component connection adds to the connection loop.
struct ComponentDriver {
    /// Its domain's slot, once the handshake succeeded.
    slot: Option<Arc<ComponentSlot>>,
    rx: Option<SessionRx>,
    /// Its id in the slot.
    conn_id: u64,
}

impl Driver for ComponentDriver {
    type Machine = Component;
    type Queued = Result<ToSession, router::Closed>;
    const KIND: &'static str = "component";

    async fn queued(&self) -> Self::Queued {
        match &self.rx {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        }
    }

    fn on_queued(&mut self, link: &mut Link<Self>, item: Self::Queued) -> Step<Action> {
        match item {
            Ok(ToSession::Stanza(s)) => {
                // In the component's namespace (its stream's default), XEP-0114 §3.
                let _ = conn::write_batch(&mut link.out, &s, self.rx.as_ref());
                Step::Wait
            }
            Ok(ToSession::Close(err)) => {
                let mut out = Vec::new();
                link.machine.fail(err, &mut out);
                Step::Apply(out)
            }
            Err(_) => Step::End(Vec::new(), "queue closed".into()),
        }
    }

    async fn effect(&mut self, link: &mut Link<Self>, action: Action) -> Effect<Input> {
        match action {
            Action::Authenticated(domain) => {
                let Some(slot) = link.shared.component_slot(&domain) else {
                    return Effect::Close;
                };
                match slot.attach() {
                    Some((id, rx)) => {
                        log::info!("component{}: {} connected as {domain}", link.id, link.peer);
                        self.slot = Some(slot);
                        self.rx = Some(rx);
                        self.conn_id = id;
                        link.raise_limits(authenticated(&link.shared));
                        link.liveness.bound(Instant::now());
                        Effect::Done
                    }
                    None => {
                        log::info!("component{}: {domain} is connected already", link.id);
                        let mut out = Vec::new();
                        link.machine.fail(
                            StreamError::new(StreamCondition::Conflict)
                                .with_text(format!("{domain} is connected already")),
                            &mut out,
                        );
                        for a in out {
                            if let Action::Send(s) = a {
                                link.out.push_str(&s);
                            }
                        }
                        Effect::Close
                    }
                }
            }
            Action::Route(stanza) => {
                let Some(from) = stanza.el.attr("from").and_then(|f| Jid::parse(f).ok()) else {
                    return Effect::Done;
                };
                let shared = link.shared.clone();
                let route = async move {
                    // Only this server's users: a federation link could not vouch for
                    // the component's domain.
                    let is_local = stanza
                        .to
                        .as_ref()
                        .is_some_and(|t| shared.router.is_served(t.domain()));
                    if !is_local {
                        shared.router.bounce(
                            Origin::Service(&from),
                            &stanza,
                            StanzaCondition::RemoteServerNotFound,
                        );
                        return;
                    }
                    let im = router::im::Im {
                        router: &shared.router,
                        storage: &shared.storage,
                        modules: &shared.modules,
                        conn: 0,
                    };
                    // Like a remote sender's: the modules answer its iqs, messages for
                    // someone offline are stored, blocking applies.
                    im.route_service(&from, stanza).await;
                };
                let ((), pressure) = router::with_backpressure(route).await;
                if !pressure.is_empty() {
                    link.press(pressure);
                }
                Effect::Done
            }
            Action::Send(_) | Action::ResetFramer | Action::Close => Effect::Close,
        }
    }

    fn ping(&self, _link: &Link<Self>, _n: u64) -> Option<String> {
        None
    }

    async fn finish(&mut self, link: &mut Link<Self>, reason: &str) {
        match &self.slot {
            Some(slot) => {
                slot.detach(self.conn_id);
                log::info!(
                    "component{}: {} disconnected: {reason}",
                    link.id,
                    slot.domain
                );
            }
            None => log::info!("component{}: {} disconnected: {reason}", link.id, link.peer),
        }
    }
}
