//! Federation's connections (RFC 6120 §2.5, §3.2): the links to other servers.
//!
//! - [`S2s`] is the router's [`Remote`]: stanzas for another server's domain go to that
//!   domain's outgoing link, made on demand. While the link is set up they wait in its
//!   queue (bounded like a session's); when it cannot be set up they bounce to their
//!   senders with `remote-server-not-found` or `remote-server-timeout` (RFC 6120
//!   §8.3.3.15/16), and new stanzas bounce at once for a while (backing off, doubling up
//!   to [`MAX_BACKOFF`]), so nothing is silently lost and a dead domain costs nothing.
//! - An outgoing link ([`OutDriver`]) runs the [`S2sOut`] machine: STARTTLS or direct TLS
//!   (XEP-0368), then SASL EXTERNAL (XEP-0178) or dialback (XEP-0220). Idle links close.
//! - An incoming link ([`serve_incoming`], [`InDriver`]) runs [`S2sIn`]: its
//!   certificate is judged once the header names the peer's domain; a dialback key is
//!   checked with the peer's authoritative server on a connection of its own
//!   ([`verify_dialback`]); its stanzas enter the same routing as local ones.
//! - Where a domain's server is: `[s2s] routes` first, else DNS (SRV records, then the
//!   domain's addresses, RFC 6120 §3.2).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use futures_rustls::pki_types::{CertificateDer, ServerName};
use smol::future::FutureExt as _;
use smol::{Async, Executor, Timer};

use super::conn::{self, Allowance, Driver, Effect, Link, Step, Transport};
use crate::jid::Jid;
use crate::net::Shared;
use crate::net::dns::{Candidate, DnsError, Resolver};
use crate::net::limits::Rate;
use crate::net::liveness::{Liveness, LivenessConfig};
use crate::router::{self, Origin, Outgoing, Remote, Router, SessionRx, SessionTx, ToSession};
use crate::stanza::{Kind, Stanza, StanzaCondition, StanzaError};
use crate::stream::s2s::{
    InAction, InInput, OutAction, OutInput, Purpose, S2sIn, S2sOut, S2sPolicy,
};
use crate::xml::{Element, Limits};

/// Links to other domains at once; past it, stanzas for a new domain bounce. A home
/// server talks to a handful.
const MAX_LINKS: usize = 256;
/// How long a TCP connection to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a dialback verification may take, connection included (XEP-0220 §2.1.3).
const VERIFY_TIMEOUT: Duration = Duration::from_secs(30);
/// Addresses tried for one domain before giving up.
const MAX_ADDRESSES: usize = 8;
/// The first wait after a domain could not be reached; it doubles each time.
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
/// The longest wait between attempts to reach a domain.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Elements per first-level element before a peer is authenticated: dialback and SASL
/// elements are one or two each.
const MAX_ELEMENTS_UNAUTHENTICATED: usize = 16;
/// Bytes of a first-level element before authentication: a header, features, a key.
const MAX_STANZA_BYTES_UNAUTHENTICATED: usize = 10 * 1024;

/// What federation needs besides the rest of the server: policy, routes, links.
pub struct S2s {
    pub policy: Arc<S2sPolicy>,
    /// `[s2s] routes`: fixed addresses (STARTTLS) instead of DNS.
    routes: HashMap<String, SocketAddr>,
    /// Finds a domain's server (RFC 6120 §3.2): `[s2s] resolvers`, else
    /// /etc/resolv.conf's.
    resolver: Resolver,
    /// A link with no traffic for this long closes.
    idle_timeout: Duration,
    /// Framer limits of an authenticated incoming link.
    limits: Limits,
    /// Bytes queued per outgoing link before its senders are slowed.
    max_queued_bytes: usize,
    /// The outgoing link to each domain, being set up or up.
    links: Mutex<HashMap<Box<str>, LinkEntry>>,
    /// Domains that could not be reached lately.
    failures: Mutex<HashMap<Box<str>, Failure>>,
    /// The server, set once it is built (it holds the router that holds us).
    shared: OnceLock<Weak<Shared>>,
    /// Where outgoing links run.
    ex: OnceLock<Weak<Executor<'static>>>,
    /// Numbers outgoing connections for the log (`s2s-out3: …`).
    next_id: AtomicU64,
}

/// One domain's outgoing link, as the router sees it.
struct LinkEntry {
    /// Which connection attempt owns it (a late end of an old one must not remove a
    /// newer link).
    id: u64,
    tx: SessionTx,
}

/// A domain that could not be reached: new stanzas bounce until `until`.
#[derive(Clone, Copy)]
struct Failure {
    until: Instant,
    /// The wait that led to `until`, doubled at the next failure.
    delay: Duration,
    cond: StanzaCondition,
}

/// The settings [`S2s::new`] takes from `[s2s]` and `[limits]`.
pub struct S2sSettings {
    pub policy: Arc<S2sPolicy>,
    pub routes: Vec<(String, SocketAddr)>,
    pub resolvers: Vec<SocketAddr>,
    pub idle_timeout: Duration,
    pub max_stanza_bytes: usize,
    pub max_elements: usize,
    pub max_queued_bytes: usize,
}

impl S2s {
    pub fn new(s: S2sSettings) -> S2s {
        S2s {
            policy: s.policy,
            routes: s.routes.into_iter().collect(),
            resolver: if s.resolvers.is_empty() {
                Resolver::system().unwrap_or_else(|e| {
                    log::warn!("s2s: {e}; asking 127.0.0.1 for DNS");
                    Resolver::with_servers(Vec::new())
                })
            } else {
                Resolver::with_servers(s.resolvers)
            },
            idle_timeout: s.idle_timeout,
            limits: Limits {
                max_stanza_bytes: s.max_stanza_bytes,
                max_elements: s.max_elements,
                ..Limits::default()
            },
            max_queued_bytes: s.max_queued_bytes,
            links: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            shared: OnceLock::new(),
            ex: OnceLock::new(),
            next_id: AtomicU64::new(1),
        }
    }

    /// Completes the wiring once the server and its executor exist.
    pub fn start(&self, shared: &Arc<Shared>, ex: &Arc<Executor<'static>>) {
        let _ = self.shared.set(Arc::downgrade(shared));
        let _ = self.ex.set(Arc::downgrade(ex));
    }

    fn links(&self) -> MutexGuard<'_, HashMap<Box<str>, LinkEntry>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn failures(&self) -> MutexGuard<'_, HashMap<Box<str>, Failure>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The condition to bounce with while `domain` is backed off.
    fn backing_off(&self, domain: &str) -> Option<StanzaCondition> {
        let mut f = self.failures();
        let failure = *f.get(domain)?;
        if Instant::now() < failure.until {
            return Some(failure.cond);
        }
        // The wait is over: the next stanza tries again (the delay is kept, to double
        // if it fails again, until a link succeeds).
        if f.len() > MAX_LINKS {
            f.remove(domain);
        }
        None
    }

    fn record_failure(&self, domain: &str, cond: StanzaCondition) {
        let mut f = self.failures();
        let delay = f
            .get(domain)
            .map_or(FIRST_BACKOFF, |p| (p.delay * 2).min(MAX_BACKOFF));
        if f.len() >= MAX_LINKS * 4 {
            // Bounded: forget the domains whose wait is over.
            let now = Instant::now();
            f.retain(|_, v| v.until > now);
        }
        f.insert(
            domain.into(),
            Failure {
                until: Instant::now() + delay,
                delay,
                cond,
            },
        );
    }

    /// The link to `domain` ended (or never came up): it is forgotten, and what is
    /// still queued bounces (`cond`) or, when the link had worked, goes out on a new one.
    fn link_ended(
        &self,
        router: &Router,
        domain: &str,
        id: u64,
        rx: Option<SessionRx>,
        cond: Option<StanzaCondition>,
    ) {
        {
            let mut links = self.links();
            if links.get(domain).is_some_and(|l| l.id == id) {
                // Dropping the sender closes the queue: later sends start a new link.
                links.remove(domain);
            }
        }
        match cond {
            Some(cond) => self.record_failure(domain, cond),
            None => {
                self.failures().remove(domain);
            }
        }
        let Some(rx) = rx else { return };
        while let Ok(item) = rx.try_recv() {
            let ToSession::Stanza(out) = item else {
                continue;
            };
            let el = Arc::try_unwrap(out).map_or_else(|o| o.el.clone(), |o| o.el);
            let Some(stanza) = stanza_of(el) else {
                continue;
            };
            match cond {
                Some(cond) => bounce(router, &stanza, cond),
                None => self.send(router, split_key(domain).1, stanza),
            }
        }
    }

    /// Starts the outgoing link `id` to `domain`, which takes its stanzas from `rx`.
    fn spawn_link(&self, domain: Arc<str>, rx: SessionRx, id: u64) -> bool {
        let (Some(shared), Some(ex)) = (
            self.shared.get().and_then(Weak::upgrade),
            self.ex.get().and_then(Weak::upgrade),
        ) else {
            return false;
        };
        ex.spawn(run_link(shared, domain, rx, id)).detach();
        true
    }
}

/// The key of an outgoing link: the peer's domain for the server's own links, or
/// `service>peer` for a link from one of its service domains ([`S2sPolicy::services`]),
/// which authenticates on its own.
fn link_key(policy: &S2sPolicy, stanza: &Stanza, peer: &str) -> Box<str> {
    let local = stanza
        .el
        .attr("from")
        .and_then(|f| Jid::parse(f).ok())
        .map(|j| j.domain().to_owned());
    match local {
        Some(l) if policy.services.iter().any(|s| **s == *l) => format!("{l}>{peer}").into(),
        _ => peer.into(),
    }
}

/// The (local domain, peer domain) of a link key ([`link_key`]); `None` for the server's
/// own domain.
fn split_key(key: &str) -> (Option<&str>, &str) {
    match key.split_once('>') {
        Some((local, peer)) => (Some(local), peer),
        None => (None, key),
    }
}

impl Remote for S2s {
    fn send(&self, router: &Router, peer: &str, stanza: Stanza) {
        let key = link_key(&self.policy, &stanza, peer);
        let domain: &str = &key;
        if let Some(cond) = self.backing_off(domain) {
            return bounce(router, &stanza, cond);
        }
        let Stanza { kind, el, to } = stanza;
        let out = Outgoing::new(el);
        let mut links = self.links();
        if let Some(link) = links.get(domain) {
            if router::deliver_to_queue(&link.tx, &out) {
                return;
            }
            drop(links);
            // The link is far behind: the sender hears it, like a slow session's.
            let el = Arc::try_unwrap(out).map_or_else(|o| o.el.clone(), |o| o.el);
            return bounce(
                router,
                &Stanza { kind, el, to },
                StanzaCondition::ResourceConstraint,
            );
        }
        if links.len() >= MAX_LINKS {
            drop(links);
            log::warn!("s2s: {MAX_LINKS} links open; a stanza for {domain} bounces");
            let el = Arc::try_unwrap(out).map_or_else(|o| o.el.clone(), |o| o.el);
            return bounce(
                router,
                &Stanza { kind, el, to },
                StanzaCondition::ResourceConstraint,
            );
        }
        let (tx, rx) = router::session_queue(self.max_queued_bytes);
        router::deliver_to_queue(&tx, &out);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        links.insert(domain.into(), LinkEntry { id, tx });
        drop(links);
        if !self.spawn_link(domain.into(), rx.clone(), id) {
            // The server is stopping: nothing will carry it.
            self.link_ended(
                router,
                domain,
                id,
                Some(rx),
                Some(StanzaCondition::RemoteServerNotFound),
            );
        }
    }
}

/// A stanza element from a queue, back as a stanza (for a bounce or a new link).
fn stanza_of(el: Element) -> Option<Stanza> {
    let kind = match el.name() {
        "message" => Kind::Message,
        "presence" => Kind::Presence,
        "iq" => Kind::Iq,
        _ => return None,
    };
    let to = el.attr("to").and_then(|t| Jid::parse(t).ok());
    Some(Stanza { kind, el, to })
}

/// RFC 6120 §8.3.1: the error for `stanza` goes back to its (local) sender, from the
/// address it was for. Never for an error or an iq result, and not for presence: most of
/// it is the server's own (broadcasts, probes, answers on a user's behalf), and a user's
/// clients would show an error for every contact on a server that is down (Prosody
/// does not bounce presence either).
fn bounce(router: &Router, stanza: &Stanza, cond: StanzaCondition) {
    if stanza.kind == Kind::Presence {
        log::debug!("s2s: presence for {:?} dropped: {}", stanza.to, cond.name());
        return;
    }
    let Some(reply) = StanzaError::new(cond).reply_to(&stanza.el) else {
        return;
    };
    let Some(to) = reply.attr("to").and_then(|t| Jid::parse(t).ok()) else {
        return;
    };
    let reply = Stanza {
        kind: stanza.kind,
        el: reply,
        to: Some(to),
    };
    if let Some(undelivered) = router.route(Origin::Server, reply) {
        log::debug!("s2s: error for {:?} not delivered", undelivered.to);
    }
}

/// Where a peer connection ended up: the transport (TLS already for direct TLS, with
/// whether the certificate is valid for the domain) and the address.
struct Connected {
    io: Transport,
    peer: SocketAddr,
    tls: Option<bool>,
}

/// Connects to `domain`'s server: `[s2s] routes`, else the DNS candidates (RFC 6120
/// §3.2, XEP-0368) in order, each candidate's addresses in turn, at most
/// [`MAX_ADDRESSES`] tries. The error says why, and with which condition its stanzas
/// bounce.
async fn connect(
    shared: &Shared,
    s2s: &S2s,
    domain: &str,
) -> Result<Connected, (String, StanzaCondition)> {
    let not_found = |why: String| (why, StanzaCondition::RemoteServerNotFound);
    let candidates = match s2s.routes.get(domain) {
        Some(addr) => vec![(
            Candidate {
                host: addr.ip().to_string(),
                port: addr.port(),
                direct_tls: false,
            },
            Some(*addr),
        )],
        None => match s2s.resolver.s2s_candidates(domain).await {
            Ok(list) => list.into_iter().map(|c| (c, None)).collect(),
            Err(DnsError::Timeout) => {
                return Err((
                    format!("{domain}: DNS: {}", DnsError::Timeout),
                    StanzaCondition::RemoteServerTimeout,
                ));
            }
            Err(e) => return Err(not_found(format!("{domain}: DNS: {e}"))),
        },
    };
    let mut last = not_found(format!("no address for {domain}"));
    let mut tries = 0;
    for (candidate, fixed) in candidates {
        let addrs = match fixed {
            Some(a) => vec![a],
            None => match s2s.resolver.addrs(&candidate).await {
                Ok(a) => a,
                Err(e) => {
                    last = not_found(format!("{candidate}: {e}"));
                    continue;
                }
            },
        };
        for addr in addrs {
            if tries == MAX_ADDRESSES {
                return Err(last);
            }
            tries += 1;
            match try_address(shared, domain, addr, candidate.direct_tls).await {
                Ok(c) => return Ok(c),
                Err(e) => last = e,
            }
        }
    }
    Err(last)
}

/// One address of a domain's server: TCP, and TLS at once for a direct TLS candidate.
async fn try_address(
    shared: &Shared,
    domain: &str,
    addr: SocketAddr,
    direct: bool,
) -> Result<Connected, (String, StanzaCondition)> {
    let tcp = Async::<TcpStream>::connect(addr)
        .or(async {
            Timer::after(CONNECT_TIMEOUT).await;
            Err(std::io::ErrorKind::TimedOut.into())
        })
        .await;
    let tcp = match tcp {
        Ok(t) => t,
        Err(e) => {
            let cond = if e.kind() == std::io::ErrorKind::TimedOut {
                StanzaCondition::RemoteServerTimeout
            } else {
                StanzaCondition::RemoteServerNotFound
            };
            return Err((format!("{addr}: {e}"), cond));
        }
    };
    let _ = tcp.get_ref().set_nodelay(true);
    if !direct {
        return Ok(Connected {
            io: Transport::Plain(tcp),
            peer: addr,
            tls: None,
        });
    }
    let tls = shared.tls();
    let (Some(s2s_tls), Ok(name)) = (tls.s2s(), ServerName::try_from(domain.to_owned())) else {
        return Err((
            format!("{domain}: no TLS client"),
            StanzaCondition::RemoteServerNotFound,
        ));
    };
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    match conn::direct_tls_client(tcp, s2s_tls.client(true).clone(), name, deadline).await {
        Ok((io, certs)) => {
            let valid = s2s_tls.is_valid_for(&certs, domain);
            Ok(Connected {
                io,
                peer: addr,
                tls: Some(valid),
            })
        }
        Err(e) => Err((
            format!("{addr}: TLS: {e}"),
            StanzaCondition::RemoteServerNotFound,
        )),
    }
}

/// What an incoming link may send before it proves a domain.
fn unauthenticated(shared: &Shared) -> Allowance {
    Allowance {
        limits: Limits {
            max_stanza_bytes: MAX_STANZA_BYTES_UNAUTHENTICATED,
            max_elements: MAX_ELEMENTS_UNAUTHENTICATED,
            ..Limits::default()
        },
        rate: Rate {
            bytes_per_sec: shared.limits.rate_bytes_per_sec_unauthenticated,
            burst_bytes: shared.limits.rate_burst_bytes_unauthenticated,
        },
    }
}

/// What an authenticated link may send: `[s2s] max_stanza_bytes`, and the byte rate of
/// an authenticated client (a peer flooding is slowed like one).
fn authenticated(shared: &Shared, s2s: &S2s) -> Allowance {
    Allowance {
        limits: s2s.limits,
        rate: Rate {
            bytes_per_sec: shared.limits.rate_bytes_per_sec,
            burst_bytes: shared.limits.rate_burst_bytes,
        },
    }
}

/// Pings are not sent on links (they are one-way: the answer would come on another
/// connection); the idle timeout ends quiet links first.
fn liveness(shared: &Shared, s2s: &S2s, now: Instant) -> Liveness {
    Liveness::new(
        LivenessConfig {
            ping_after_idle: s2s.idle_timeout * 2,
            ping_timeout: Duration::from_secs(60),
        },
        shared.negotiation_timeout,
        now,
    )
}

// ---------------------------------------------------------------------------------------
// Outgoing links

/// One outgoing link's task: connect, negotiate, carry stanzas until idle.
async fn run_link(shared: Arc<Shared>, domain: Arc<str>, rx: SessionRx, id: u64) {
    let Some(s2s) = shared.s2s.clone() else {
        return;
    };
    // `domain` is the link's key: the peer, or `service>peer`.
    let (local, peer) = split_key(&domain);
    let (local, peer): (Option<Arc<str>>, Arc<str>) = (local.map(Arc::from), Arc::from(peer));
    log::info!("s2s-out{id}: connecting to {domain}");
    let connected = match connect(&shared, &s2s, &peer).await {
        Ok(c) => c,
        Err((why, cond)) => {
            log::info!("s2s-out{id}: cannot reach {domain}: {why}");
            s2s.link_ended(&shared.router, &domain, id, Some(rx), Some(cond));
            return;
        }
    };
    log::info!("s2s-out{id}: connected to {domain} at {}", connected.peer);
    let now = Instant::now();
    let allowance = authenticated(&shared, &s2s);
    let link = out_link(
        &shared,
        &s2s,
        id,
        (&peer, local),
        connected,
        Purpose::Deliver,
        allowance,
    );
    let driver = OutDriver {
        s2s,
        domain,
        rx: Some(rx),
        ready: false,
        failed: None,
        verdict: None,
        last_activity: now,
    };
    conn::serve(link, driver).await;
}

/// The connection loop's side of a new outgoing stream to `domain` (from `local`, one of
/// the service domains, when given; else from the server's), with our header
/// (RFC 6120 §4.2: the initiating side speaks first) already in its output.
fn out_link(
    shared: &Arc<Shared>,
    s2s: &S2s,
    id: u64,
    (domain, local): (&Arc<str>, Option<Arc<str>>),
    connected: Connected,
    purpose: Purpose,
    allowance: Allowance,
) -> Link<OutDriver> {
    let now = Instant::now();
    let mut machine = S2sOut::new(s2s.policy.clone(), domain.clone(), purpose, connected.tls);
    if let Some(local) = local {
        // A link from a service domain (`conference.<domain>`) names it throughout.
        machine = machine.from_local(local);
    }
    let opening = machine.open();
    let mut link = Link::new(
        id,
        shared.clone(),
        connected.peer,
        connected.io,
        machine,
        allowance,
        now,
    );
    link.liveness = liveness(shared, s2s, now);
    for a in opening {
        if let OutAction::Send(s) = a {
            link.out.push_str(&s);
        }
    }
    link
}

/// XEP-0220 §2.1.3: asks `domain`'s authoritative server, on a connection of its own,
/// whether `key` is what it issued for its stream `id` to us. `None` when it could not
/// be asked or did not answer in time.
pub(super) async fn verify_dialback(
    shared: &Arc<Shared>,
    domain: Arc<str>,
    local: Option<Arc<str>>,
    id: String,
    key: String,
) -> Option<bool> {
    let s2s = shared.s2s.clone()?;
    let work = async {
        let connected = match connect(shared, &s2s, &domain).await {
            Ok(c) => c,
            Err((why, _)) => {
                log::info!("s2s: cannot reach {domain} to verify its dialback key: {why}");
                return None;
            }
        };
        let vid = s2s.next_id.fetch_add(1, Ordering::Relaxed);
        log::info!("s2s-out{vid}: verifying a dialback key with {domain}");
        let now = Instant::now();
        let purpose = Purpose::Verify { id, key };
        let allowance = unauthenticated(shared);
        let link = out_link(
            shared,
            &s2s,
            vid,
            (&domain, local),
            connected,
            purpose,
            allowance,
        );
        let (tx, rx) = async_channel::bounded(1);
        let driver = OutDriver {
            s2s: s2s.clone(),
            domain: domain.clone(),
            rx: None,
            ready: false,
            failed: None,
            verdict: Some(tx),
            last_activity: now,
        };
        // The answer is what matters; the connection closes on its own (the closing
        // handshake may take the peer a while), so it runs as a task of its own.
        match s2s.ex.get().and_then(Weak::upgrade) {
            Some(ex) => ex.spawn(conn::serve(link, driver)).detach(),
            None => return None,
        }
        // The driver drops its sender when the connection ends without an answer.
        rx.recv().await.ok()
    };
    Box::pin(work)
        .or(async {
            Timer::after(VERIFY_TIMEOUT).await;
            log::info!("s2s: verifying a dialback key with {domain} took too long");
            None
        })
        .await
}

/// What an outgoing link adds to the connection loop.
struct OutDriver {
    s2s: Arc<S2s>,
    domain: Arc<str>,
    /// The link's queue (none for a verification stream).
    rx: Option<SessionRx>,
    /// The peer accepted us: stanzas flow.
    ready: bool,
    /// Why the negotiation failed, for the log.
    failed: Option<String>,
    /// Where a verification stream's answer goes.
    verdict: Option<async_channel::Sender<bool>>,
    /// The last stanza written: the idle timeout counts from it.
    last_activity: Instant,
}

/// Something for an outgoing link.
enum OutQueued {
    Item(Result<ToSession, router::Closed>),
    Idle,
}

impl Driver for OutDriver {
    type Machine = S2sOut;
    type Queued = OutQueued;
    const KIND: &'static str = "s2s-out";

    async fn queued(&self) -> OutQueued {
        match (&self.rx, self.ready) {
            (Some(rx), true) => {
                let idle_at = self.last_activity + self.s2s.idle_timeout;
                async { OutQueued::Item(rx.recv().await) }
                    .or(async {
                        Timer::at(idle_at).await;
                        OutQueued::Idle
                    })
                    .await
            }
            _ => std::future::pending().await,
        }
    }

    fn on_queued(&mut self, link: &mut Link<Self>, item: OutQueued) -> Step<OutAction> {
        match item {
            OutQueued::Item(Ok(ToSession::Stanza(stanza))) => {
                // In this stream's namespace: jabber:server is its default (§4.8.3).
                let _ = conn::write_batch(&mut link.out, &stanza, self.rx.as_ref());
                let now = Instant::now();
                self.last_activity = now;
                // Written is alive enough: a one-way link hears little from its peer.
                link.liveness.heard(now);
                Step::Wait
            }
            OutQueued::Item(Ok(ToSession::Close(_))) | OutQueued::Item(Err(_)) => {
                Step::End(link.machine.close(), "link closed".into())
            }
            OutQueued::Idle => Step::End(link.machine.close(), "idle".into()),
        }
    }

    async fn effect(&mut self, link: &mut Link<Self>, action: OutAction) -> Effect<OutInput> {
        match action {
            OutAction::StartTls => {
                let peer = split_key(&self.domain).1.to_owned();
                Box::pin(out_start_tls(link, &peer)).await
            }
            OutAction::Ready => {
                log::info!("s2s-out{}: ready to {}", link.id, self.domain);
                self.ready = true;
                let now = Instant::now();
                self.last_activity = now;
                link.liveness.bound(now);
                Effect::Done
            }
            OutAction::Verified(valid) => {
                if let Some(tx) = &self.verdict {
                    let _ = tx.try_send(valid);
                }
                Effect::Done
            }
            OutAction::Failed(why) => {
                log::info!(
                    "s2s-out{}: {} refused the link: {why}",
                    link.id,
                    self.domain
                );
                self.failed = Some(why);
                Effect::Done
            }
            OutAction::Send(_) | OutAction::ResetFramer | OutAction::Close => Effect::Close,
        }
    }

    fn ping(&self, _link: &Link<Self>, _n: u64) -> Option<String> {
        None
    }

    async fn finish(&mut self, link: &mut Link<Self>, reason: &str) {
        log::info!(
            "s2s-out{}: link to {} ended: {reason}",
            link.id,
            self.domain
        );
        if self.verdict.is_some() {
            return;
        }
        // Never up: the domain is unreachable for now; up and then ended: what is left
        // goes out on a new link.
        let cond = (!self.ready).then_some(StanzaCondition::RemoteServerNotFound);
        if let Some(why) = &self.failed {
            log::debug!("s2s-out{}: {why}", link.id);
        }
        self.s2s.link_ended(
            &link.shared.router,
            &self.domain,
            link.id,
            self.rx.take(),
            cond,
        );
    }
}

/// STARTTLS as the initiating server, then the peer's certificate judged for its domain.
async fn out_start_tls(link: &mut Link<OutDriver>, domain: &str) -> Effect<OutInput> {
    let tls = link.shared.tls();
    let (Some(s2s_tls), Ok(name)) = (tls.s2s(), ServerName::try_from(domain.to_owned())) else {
        return Effect::Close;
    };
    match link
        .start_tls_client(s2s_tls.client(false).clone(), name)
        .await
    {
        Ok(certs) => {
            let cert_valid = s2s_tls.is_valid_for(&certs, domain);
            log::info!(
                "s2s-out{}: certificate of {domain} {}",
                link.id,
                if cert_valid {
                    "valid"
                } else {
                    "not valid (dialback may still prove it)"
                }
            );
            Effect::Feed(OutInput::TlsEstablished { cert_valid })
        }
        Err(e) => {
            log::info!("s2s-out{}: TLS with {domain} failed: {e}", link.id);
            Effect::Close
        }
    }
}

// ---------------------------------------------------------------------------------------
// Incoming links

/// Serves one connection another server opened to us; `direct_tls` for the XEP-0368
/// port.
pub async fn serve_incoming(
    shared: Arc<Shared>,
    tcp: Async<TcpStream>,
    peer: SocketAddr,
    direct_tls: bool,
    id: u64,
) {
    let Some(s2s) = shared.s2s.clone() else {
        return;
    };
    let now = Instant::now();
    let io = if direct_tls {
        let deadline = now + shared.negotiation_timeout;
        let Some(config) = shared.tls().s2s().map(|t| t.direct_server().clone()) else {
            return;
        };
        match conn::direct_tls::<InDriver>(&shared, tcp, config, peer, id, deadline).await {
            Some((io, _)) => io,
            None => return,
        }
    } else {
        Transport::Plain(tcp)
    };
    let machine = S2sIn::new(s2s.policy.clone(), direct_tls);
    let allowance = unauthenticated(&shared);
    let mut link = Link::new(id, shared.clone(), peer, io, machine, allowance, now);
    link.liveness = liveness(&shared, &s2s, now);
    let certs = link.peer_certificates();
    let driver = InDriver {
        s2s,
        certs,
        last_activity: now,
        authenticated: false,
    };
    conn::serve(link, driver).await;
}

/// What an incoming link adds to the connection loop.
struct InDriver {
    s2s: Arc<S2s>,
    /// The chain the peer presented in the TLS handshake.
    certs: Vec<CertificateDer<'static>>,
    /// The last stanza received: the idle timeout counts from it.
    last_activity: Instant,
    /// A domain was proved (larger limits are set once).
    authenticated: bool,
}

impl Driver for InDriver {
    type Machine = S2sIn;
    /// Only the idle timeout: an incoming link carries nothing from us.
    type Queued = ();
    const KIND: &'static str = "s2s-in";

    async fn queued(&self) {
        if self.authenticated {
            Timer::at(self.last_activity + self.s2s.idle_timeout).await;
        } else {
            // The negotiation deadline ends a link that never proves anything.
            std::future::pending::<()>().await
        }
    }

    fn on_queued(&mut self, link: &mut Link<Self>, _idle: ()) -> Step<InAction> {
        let mut out = Vec::new();
        link.machine.fail(
            crate::stanza::StreamError::new(crate::stanza::StreamCondition::ConnectionTimeout)
                .with_text("idle"),
            &mut out,
        );
        Step::End(out, "idle".into())
    }

    async fn effect(&mut self, link: &mut Link<Self>, action: InAction) -> Effect<InInput> {
        match action {
            InAction::StartTls => {
                let Some(config) = link.shared.tls().s2s().map(|t| t.server().clone()) else {
                    return Effect::Close;
                };
                match Box::pin(link.start_tls(config)).await {
                    Ok(_) => {
                        self.certs = link.peer_certificates();
                        Effect::Feed(InInput::TlsEstablished)
                    }
                    Err(e) => {
                        log::info!("s2s-in{}: {} TLS handshake failed: {e}", link.id, link.peer);
                        Effect::Close
                    }
                }
            }
            InAction::CheckCertificate(domain) => {
                let valid = link
                    .shared
                    .tls()
                    .s2s()
                    .is_some_and(|t| t.is_valid_for(&self.certs, &domain));
                log::info!(
                    "s2s-in{}: certificate {} for {domain}",
                    link.id,
                    if valid { "valid" } else { "not valid" }
                );
                Effect::Feed(InInput::CertificateChecked { domain, valid })
            }
            InAction::VerifyDialback { domain, id, key } => {
                let shared = link.shared.clone();
                // XEP-0220 §2.1.3: asked as the domain the peer's stream came to (the
                // server's, or a service's such as conference.<domain>).
                let local = link.machine.local().clone();
                let local = (*local != *self.s2s.policy.domain).then_some(local);
                let valid =
                    Box::pin(verify_dialback(&shared, domain.clone(), local, id, key)).await;
                let verdict = match valid {
                    Some(true) => "valid",
                    Some(false) => "invalid",
                    None => "not checked: its server could not be asked",
                };
                log::info!("s2s-in{}: dialback key for {domain} {verdict}", link.id);
                Effect::Feed(InInput::DialbackVerified { domain, valid })
            }
            InAction::Authenticated(domain) => {
                log::info!("s2s-in{}: {} authenticated as {domain}", link.id, link.peer);
                if !self.authenticated {
                    self.authenticated = true;
                    let allowance = authenticated(&link.shared, &self.s2s);
                    link.raise_limits(allowance);
                    let now = Instant::now();
                    self.last_activity = now;
                    link.liveness.bound(now);
                }
                Effect::Done
            }
            InAction::Route(stanza) => {
                self.last_activity = Instant::now();
                let Some(from) = stanza.el.attr("from").and_then(|f| Jid::parse(f).ok()) else {
                    return Effect::Done;
                };
                log::debug!("s2s-in{}: {} from {from}", link.id, stanza.el.name());
                let shared = link.shared.clone();
                let id = link.id;
                let route = async move {
                    let im = router::im::Im {
                        router: &shared.router,
                        storage: &shared.storage,
                        modules: &shared.modules,
                        conn: id,
                    };
                    // RFC 6121 from the contact's side: presence and subscriptions,
                    // offline storage, blocking, iqs answered by the modules.
                    im.route_remote(&from, stanza).await;
                };
                let ((), pressure) = router::with_backpressure(route).await;
                if !pressure.is_empty() {
                    link.press(pressure);
                }
                Effect::Done
            }
            InAction::Bounce(reply) => {
                if let Some(to) = reply.attr("to").and_then(|t| Jid::parse(t).ok()) {
                    let kind = match reply.name() {
                        "message" => Kind::Message,
                        "presence" => Kind::Presence,
                        _ => Kind::Iq,
                    };
                    let reply = Stanza {
                        kind,
                        el: reply,
                        to: Some(to),
                    };
                    let _ = link.shared.router.route(Origin::Server, reply);
                }
                Effect::Done
            }
            InAction::Send(_) | InAction::ResetFramer | InAction::Close => Effect::Close,
        }
    }

    fn ping(&self, _link: &Link<Self>, _n: u64) -> Option<String> {
        None
    }

    async fn finish(&mut self, link: &mut Link<Self>, reason: &str) {
        let who = match link.machine.authenticated().first() {
            Some(d) => d.to_string(),
            None => link.peer.to_string(),
        };
        log::info!("s2s-in{}: {who} disconnected: {reason}", link.id);
    }
}
