//! Accepting connections: the listeners, admission (XEP-0205 connection limits, see
//! [`super::limits`]) and one task per admitted connection ([`super::c2s`]).

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use smol::{Async, Executor, Timer};

use super::Shared;

/// Binds `addr`; an IPv6 wildcard on a host without IPv6 falls back to the IPv4
/// wildcard on the same port.
pub fn bind(addr: SocketAddr) -> std::io::Result<(SocketAddr, Async<TcpListener>)> {
    let l = match Async::<TcpListener>::bind(addr) {
        Ok(l) => l,
        Err(e) if addr.ip().is_unspecified() && addr.is_ipv6() => {
            let v4 = SocketAddr::from(([0, 0, 0, 0], addr.port()));
            log::info!("no IPv6 for {addr} ({e}); listening on {v4} instead");
            Async::<TcpListener>::bind(v4)?
        }
        Err(e) => return Err(e),
    };
    let local = l.get_ref().local_addr()?;
    Ok((local, l))
}

/// Binds `addr` as [`bind`] would, without the async wrapper (for `hearth check`, which
/// only asks whether the port is free).
pub fn bind_blocking(addr: SocketAddr) -> std::io::Result<TcpListener> {
    match TcpListener::bind(addr) {
        Err(e)
            if addr.ip().is_unspecified()
                && addr.is_ipv6()
                && e.kind() != std::io::ErrorKind::AddrInUse =>
        {
            TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], addr.port())))
        }
        other => other,
    }
}

/// Counts a connection as open until dropped, also when its task is
/// dropped unfinished.
pub struct OpenConnection(Arc<AtomicUsize>);

impl OpenConnection {
    pub fn new(count: &Arc<AtomicUsize>) -> OpenConnection {
        count.fetch_add(1, Ordering::AcqRel);
        OpenConnection(count.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Who connects to a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peers {
    /// Clients (c2s, RFC 6120 §3.2: port 5222).
    Clients,
    /// Other servers (s2s, port 5269).
    Servers,
    /// External components (XEP-0114, port 5347).
    Components,
    /// Clients over WebSocket (RFC 7395, `[websocket] listen`); `direct` is wss://.
    WebSockets,
}

/// Accepts connections on `listener` for as long as the executor runs: each one admitted
/// gets its own task (`c2s::serve_client` or `s2s::serve_incoming`); one over the limits
/// is told why (`c2s::refuse`) and closed. `live` counts the open connections for
/// shutdown; `next_id` numbers them for the log.
#[allow(clippy::too_many_arguments)]
pub fn accept(
    ex: &Arc<Executor<'static>>,
    listener: Async<TcpListener>,
    addr: SocketAddr,
    direct: bool,
    peers: Peers,
    shared: &Arc<Shared>,
    live: &Arc<AtomicUsize>,
    next_id: &Arc<AtomicU64>,
) {
    let kind = match (peers, direct) {
        (Peers::WebSockets, true) => "WebSocket, wss://",
        (Peers::WebSockets, false) => "WebSocket, plain ws:// from loopback only",
        (_, true) => "direct TLS",
        (_, false) => "STARTTLS",
    };
    let (who, tag) = match peers {
        Peers::Clients => ("clients", "c2s"),
        Peers::Servers => ("servers", "s2s-in"),
        Peers::Components => ("components", "component"),
        Peers::WebSockets => ("web clients", "ws"),
    };
    log::info!("listening for {who} on {addr} ({kind})");
    let shared = shared.clone();
    let ex2 = ex.clone();
    // Weak, so that only connections count as open ones at shutdown.
    let live = live.clone();
    let next_id = next_id.clone();
    ex.spawn(async move {
        loop {
            match listener.accept().await {
                Ok((tcp, peer)) => {
                    // Stanzas are small writes that must leave now: Nagle's
                    // algorithm would hold each behind the peer's delayed ACK
                    // (about 40 ms a round trip).
                    if let Err(e) = tcp.get_ref().set_nodelay(true) {
                        log::debug!("TCP_NODELAY for {peer}: {e}");
                    }
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    let slot = match shared.admission.admit(peer.ip(), Instant::now()) {
                        Ok(slot) => slot,
                        Err(why) => {
                            // At info, so an owner sees why a phone is turned away,
                            // but once a minute per address: a flood must not
                            // flood the log too.
                            match shared.admission.log_refusal(peer.ip(), Instant::now()) {
                                Some(0) => {
                                    log::info!("{tag}{id}: refused {peer} on {addr}: {why}")
                                }
                                Some(n) => log::info!(
                                    "{tag}{id}: refused {peer} on {addr}: {why} \
                                     ({n} more from this address in the last minute)"
                                ),
                                None => {
                                    log::debug!("{tag}{id}: refused {peer} on {addr}: {why}")
                                }
                            }
                            // A server is not told: it retries with backoff, and its
                            // stanzas bounce to their senders on its side.
                            if peers == Peers::Clients {
                                super::c2s::refuse(&shared, tcp, direct, why);
                            }
                            continue;
                        }
                    };
                    log::info!("{tag}{id}: connection from {peer} on {addr}");
                    let shared = shared.clone();
                    let token = OpenConnection::new(&live);
                    ex2.spawn(async move {
                        match peers {
                            Peers::Clients => {
                                super::c2s::serve_client(shared, tcp, peer, direct, id).await
                            }
                            Peers::Servers => {
                                super::s2s::serve_incoming(shared, tcp, peer, direct, id).await
                            }
                            Peers::Components => {
                                super::component::serve_component(shared, tcp, peer, id).await
                            }
                            Peers::WebSockets => {
                                super::websocket::serve_listener(shared, tcp, peer, direct, id)
                                    .await
                            }
                        }
                        drop(slot);
                        drop(token);
                    })
                    .detach();
                }
                Err(e) => {
                    // Out of file descriptors, usually: back off a little.
                    log::warn!("accept on {addr} failed: {e}");
                    Timer::after(Duration::from_millis(100)).await;
                }
            }
        }
    })
    .detach();
}
