//! hearth: a small XMPP server for a home.
//!
//! How a byte travels, and where each step lives:
//!
//! ```text
//! net/        listeners, TLS, the per-connection loop (generic over the stream; c2s.rs
//!             drives client streams, s2s.rs federation's links in and out with their
//!             queues and dialback checks, component.rs XEP-0114 components; dns.rs
//!             finds other servers; http.rs the HTTPS listener: uploads, host-meta,
//!             the WebSocket upgrade;
//!             websocket.rs RFC 7395 clients over WebSocket, the same c2s loop on a
//!             framing transport; mqtt/ the MQTT listener for sensors, whose publishes
//!             become their account's presence): the only code that touches sockets
//!  └► xml/     framer (xmlparser underneath) turns bytes into stream events and elements
//!      └► stream/  sans-IO: the negotiation core every stream shares (headers, features,
//!          │        restarts, errors) and the machines on it: c2s (STARTTLS, SASL in
//!          │        sasl/, bind), s2s (incoming and outgoing: EXTERNAL, dialback),
//!          │        component (the XEP-0114 handshake); websocket.rs: RFC 7395
//!          │        framing (a message in as framer bytes, machine bytes out as messages)
//!          └► router/   local sessions by JID, RFC 6121 §8 delivery, the domain table
//!              │         (host, services, remote: the s2s links) and stanza origins
//!              │         (local, remote, service); router/im/: a stanza on its way, from a
//!              │         local session or another server: the modules' hooks, iq
//!              │         dispatch, presence, the router
//!              └► features/  the modules, one file or folder per RFC part or XEP, each
//!                            declaring its specs, disco and stream features, iq handlers
//!                            and hooks, beside its own storage trait (roster/,
//!                            subscription/, presence/, blocking/, offline/, last/,
//!                            household/: the shared roster group; register/: XEP-0077
//!                            sign-up, invitations stored, removal; invite/: XEP-0401
//!                            links, QR codes and what an invitation does, XEP-0379);
//!                            adhoc/ runs the XEP-0133 admin commands and the invite
//!                            commands, forms.rs builds and reads XEP-0004 data forms;
//!                            carbons/: XEP-0280 copies to an account's other devices;
//!                            caps.rs: the server's XEP-0115 hash and stream feature;
//!                            push/: XEP-0357 notifications to phones' app servers
//!                            private/, vcard/: XEP-0049 and XEP-0054 data per account;
//!                            contact.rs, extdisco.rs: XEP-0157 addresses and XEP-0215
//!                            STUN/TURN services in the server's disco;
//!                            upload/: XEP-0363 photo sharing (`upload.<domain>`, files
//!                            beside the database, quota and expiry)
//!                            device/: device accounts (issue 21), their restricted
//!                            role, presence as telemetry, sleepy devices' last readings
//!                            muc/: XEP-0045 group chat, a router service of its own
//!                            (room.rs the pure room, service.rs the rooms and routing,
//!                            store.rs SQLite)
//! storage/    SQLite: the connection, group commit, migrations, accounts, quotas
//! auth.rs     credential checks for SASL (SCRAM keys, PLAIN passwords) as a service the
//!             stream drivers call, so the network layer never touches storage
//! password.rs argon2id checks for SASL PLAIN: bounded threads and queue, memory reused;
//!             what is stored for a new password (argon2id hash, SCRAM keys)
//! pool.rs     bounded thread pools (storage, password checks) instead of `smol::unblock`
//! admin/      `hearth user …`, `hearth household …`, `hearth device …`, `hearth invite`
//!             subcommands on the same storage
//! config.rs   typed TOML configuration with defaults and validation
//! jid.rs      RFC 7622 addresses, normalized on construction
//! stanza/     typed stanzas, stanza errors (RFC 6120 §8.3) and stream errors (§4.9)
//! server.rs   wires it together: executor, storage, router, listeners, shutdown
//! mdns.rs     LAN advertisement (mDNS/DNS-SD) on mdns-sd's own thread
//! service.rs  systemd readiness/watchdog notifications, the refusal to serve as root
//! ```
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod config;
pub mod features;
pub mod jid;
pub mod mdns;
pub mod net;
pub mod password;
pub mod pool;
pub mod router;
pub mod server;
pub mod service;
pub mod stanza;
pub mod storage;
pub mod stream;
pub mod xml;

/// XML namespaces used across the crate.
pub mod ns {
    pub const CLIENT: &str = "jabber:client";
    pub const SERVER: &str = "jabber:server";
    pub const STREAM: &str = "http://etherx.jabber.org/streams";
    pub const STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
    pub const STANZA_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
    pub const TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
    pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
    pub const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
    pub const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
    pub const SASL_CB: &str = "urn:xmpp:sasl-cb:0";
    pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
    pub const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
    pub const PING: &str = "urn:xmpp:ping";
    pub const VERSION: &str = "jabber:iq:version";
    pub const TIME: &str = "urn:xmpp:time";
    pub const DELAY: &str = "urn:xmpp:delay";
}
