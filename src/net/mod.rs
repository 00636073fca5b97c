//! The network layer: listeners, TLS and the connection loop, the only code that touches sockets.
//!
//! - `listen.rs`: the listeners and admission, one task per admitted connection;
//! - `conn.rs`: the connection loop, generic over the stream machine and its driver
//!   (DESIGN.md "Streams"): I/O, framer, timers, limits, TLS upgrade;
//! - [`c2s`]: the client driver: credential checks, bind, routing, offline delivery;
//! - [`s2s`], [`s2s_tls`]: federation's links, incoming and outgoing, and their TLS;
//! - [`component`]: XEP-0114 external components on a port of their own;
//! - [`mqtt`]: the MQTT listener for sensors (issue 21), publishes to presence;
//! - [`dns`]: SRV and address lookups for server-to-server federation (RFC 6120 §3.2);
//! - [`websocket`]: RFC 7395 clients over WebSocket (`serve_upgraded` for an HTTP
//!   listener's upgraded connections, `[websocket] listen` for a port of its own);
//! - [`limits`], [`liveness`], [`tls`]: what the loop enforces and the TLS set-up;
//! - [`http`]: the HTTPS listener (XEP-0363 uploads, XEP-0156 host-meta, WebSocket).

pub mod c2s;
pub mod component;
mod conn;
pub mod dns;
pub mod http;
pub mod limits;
pub mod listen;
pub mod liveness;
pub mod mqtt;
pub mod s2s;
pub mod s2s_tls;
pub mod sm;
pub mod tls;
pub mod websocket;

use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use crate::auth::Auth;
use crate::config::LimitsConfig;
use crate::features::Registry;
use crate::router::Router;
use crate::storage::Storage;
use crate::stream::c2s::C2sPolicy;
use crate::stream::throttle::Throttle;
use crate::xml::Limits;
use limits::Admission;
use tls::TlsSetup;

/// What every connection task shares.
pub struct Shared {
    pub router: Router,
    pub storage: Storage,
    /// The modules: iq handlers, disco, stream features (DESIGN.md "Modules").
    pub modules: Registry,
    /// Replaced on SIGHUP; connections take a clone at handshake time.
    pub(crate) tls: RwLock<Arc<TlsSetup>>,
    pub policy: Arc<C2sPolicy>,
    /// Framer limits before authentication (small: strangers get little).
    pub limits_unauthenticated: Limits,
    /// Framer limits once authenticated.
    pub limits_authenticated: Limits,
    /// A stream must be bound within this long after connecting.
    pub negotiation_timeout: Duration,
    /// Connection, rate, ping and queue limits (`[limits]`).
    pub limits: LimitsConfig,
    /// Open connections by source address.
    pub admission: Admission,
    pub(crate) throttle: Mutex<Throttle>,
    /// Credential checks for SASL: SCRAM keys and PLAIN passwords, the latter bounded in
    /// threads, queue and memory (`[auth]`).
    pub auth: Auth,
    /// In-band registration (XEP-0077): the policy, hashing and per-address counts,
    /// shared with the `register` module.
    pub registrar: Arc<crate::features::register::Registrar>,
    /// Closed when the server stops; every connection listens on it.
    pub shutdown_rx: async_channel::Receiver<()>,
    /// Federation, when it is on (`[s2s] enabled`).
    pub s2s: Option<Arc<s2s::S2s>>,
    /// External components (XEP-0114), when some are configured.
    pub components: Option<Arc<crate::stream::component::ComponentPolicy>>,
    /// Their domains in the router's domain table.
    pub component_slots: Vec<Arc<component::ComponentSlot>>,
    /// Stream management (XEP-0198): the sessions that may be resumed.
    pub sm: sm::SmTable,
}

impl Shared {
    pub fn tls(&self) -> Arc<TlsSetup> {
        self.tls.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The slot of the component domain `domain`.
    pub fn component_slot(&self, domain: &str) -> Option<Arc<component::ComponentSlot>> {
        self.component_slots
            .iter()
            .find(|s| s.domain() == domain)
            .cloned()
    }

    pub fn throttle(&self) -> MutexGuard<'_, Throttle> {
        self.throttle.lock().unwrap_or_else(|e| e.into_inner())
    }
}
