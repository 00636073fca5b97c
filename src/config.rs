//! Typed configuration: an optional TOML file, validated once into the structs below.
//!
//! Every key is optional; with no file at all the server runs on defaults (a `.local`
//! domain from the host name, data in the usual per-user or systemd directory, a
//! self-signed certificate generated on first start). The file looks like this:
//!
//! ```toml
//! domain = "kitchen.local"
//! data_dir = "/var/lib/hearth"
//! threads = 2
//! allow_root = false                 # serve even when started as root
//! mdns = true                        # advertise on the LAN (mDNS/DNS-SD)
//! mdns_interfaces = ["eth0", "wlan0"] # default: every interface
//! admins = ["alice@kitchen.local"]   # may run XEP-0133 admin commands (add users, …)
//!
//! [c2s]
//! listen = ["[::]:5222"]             # STARTTLS (RFC 6120 §5)
//! direct_tls_listen = ["[::]:5223"]  # XEP-0368 direct TLS; [] turns it off
//! max_stanza_bytes = 262144
//! max_stanza_bytes_unauthenticated = 10240
//! negotiation_timeout_secs = 30
//!
//! federation = true                  # talk to other XMPP servers (RFC 6120 §2.5); false:
//!                                    # no s2s listener, no outgoing links, and other
//!                                    # domains get remote-server-not-found
//!
//! [s2s]                              # federation's settings
//! listen = ["[::]:5269"]
//! direct_tls_listen = []             # XEP-0368, e.g. ["[::]:5270"]
//! require_tls = true                 # RFC 7590: no link without TLS
//! require_valid_certificates = false # true: no dialback for self-signed peers
//! ca_file = "/etc/ssl/certs/ca-certificates.crt"  # roots that peers' certificates chain to
//! resolvers = []                     # DNS servers ("127.0.0.53:53"); default /etc/resolv.conf
//! max_stanza_bytes = 524288
//! idle_timeout_secs = 600            # a link with no traffic closes
//! routes = { "example.org" = "192.0.2.7:5269" }  # fixed addresses instead of DNS
//!
//! [components]                       # XEP-0114 external components (bridges, bots)
//! listen = ["127.0.0.1:5347"]        # the default when any component is configured
//! secrets = { "bot.example.org" = "a long random secret" }
//!
//! [mqtt]                             # sensors over MQTT, off by default (config/mqtt.rs)
//! enabled = true
//! tls_listen = ["[::]:8883"]
//!
//! [tls]
//! cert = "/etc/letsencrypt/live/example.org/fullchain.pem"
//! key = "/etc/letsencrypt/live/example.org/privkey.pem"
//!
//! [auth]
//! scram_keys = true
//! max_failures_before_delay = 3
//! strict_channel_binding = false
//! password_checks_at_once = 2        # argon2id (PLAIN) checks at once; default min(cores, 2)
//! password_check_queue = 32          # PLAIN checks waiting; more get temporary-auth-failure
//!
//! [registration]                     # XEP-0077 in-band registration from a client
//! policy = "invite"                  # "closed", "invite" (a token is needed) or "open"
//! per_address_per_hour = 3           # open policy: accounts per source address per hour
//!
//! [limits]                            # XEP-0205 denial-of-service defences
//! max_connections = 512
//! max_connections_per_address = 32
//! connections_per_minute_per_address = 60
//! connection_burst_per_address = 60
//! rate_bytes_per_sec = 32768
//! rate_burst_bytes = 262144
//! rate_bytes_per_sec_unauthenticated = 2048
//! rate_burst_bytes_unauthenticated = 16384
//! ping_after_idle_secs = 300
//! ping_timeout_secs = 60
//! max_queued_bytes = 524288
//! max_resources_per_account = 16
//! max_elements_per_stanza = 4096
//! max_roster_items_per_account = 1000
//! max_offline_messages_per_account = 1000
//! max_blocked_jids_per_account = 1000
//! max_stored_bytes_per_account = 16777216
//!
//! [household]                        # the shared roster group (`hearth household add`)
//! group = "Household"                # the roster group its members appear in
//!
//! [archive]                          # XEP-0313 message archive, in the account's quota
//! enabled = true
//! default_policy = "always"          # whose messages: "always", "never" or "roster"
//! retention_days = 365               # 0: kept until the byte quota needs the room
//!
//! [pep]                              # XEP-0163 personal eventing (avatars, OMEMO keys)
//! max_nodes_per_account = 128
//! max_items_per_node = 256           # what pubsub#max_items = "max" means
//! max_item_bytes = 204800            # one item's payload, serialized
//!
//! [private_storage]                  # XEP-0049, in the account's quota
//! max_item_bytes = 65536             # one stored element
//!
//! [vcard]                            # XEP-0054, in the account's quota
//! max_bytes = 262144                 # one vCard, its photo included
//!
//! [contact]                          # XEP-0157 addresses in the server's disco#info
//! abuse = ["mailto:abuse@example.org"]   # also admin, feedback, sales, security, support
//! security = ["xmpp:admin@example.org"]
//!
//! [[external_services]]              # XEP-0215: STUN/TURN for calls; one table each
//! type = "turn"                      # "stun", "turn", "stuns" or "turns"
//! host = "turn.example.org"
//! port = 3478
//! transport = "udp"                  # "udp" or "tcp"
//! secret = "coturn static-auth-secret"   # time-limited credentials (TURN REST API)
//! credentials_ttl_secs = 86400
//!
//! [push]                             # XEP-0357 notifications to phones' app servers
//! include_body = false               # send the message text to the app server (and on
//!                                    # to Apple/Google): off, only "a message from …"
//!
//! [http]                             # HTTPS listener: uploads, host-meta, /xmpp-websocket
//! enabled = true
//! port = 5443                        # on the c2s listeners' addresses
//! listen = ["[::]:5443"]             # instead of port: exact addresses
//! public_url = "https://chat.example.org"  # what URLs start with (reverse proxy, public
//!                                    # name); default https://<domain>:5443
//!
//! [upload]                           # XEP-0363 photo sharing: upload.<domain>
//! enabled = true
//! max_file_size = 104857600          # bytes (100 MiB)
//! quota_bytes_per_account = 1073741824   # an account's files, in bytes (1 GiB)
//! expire_after_secs = 2592000        # files go 30 days after upload; 0 keeps them
//! allowed_types = ["image/*", "video/mp4"]   # default: any type
//! [devices]                          # device accounts (`hearth device add`)
//! presence_interval_secs = 10        # one presence per this, sustained, after
//! presence_burst = 3                 # this many at once; excess: policy-violation
//! store_interval_secs = 300          # a device online stores its last reading at most
//!                                    # this often (always when it goes offline)
//! [websocket]                        # RFC 7395 XMPP over WebSocket (browsers), off by default
//! listen = ["[::]:5281"]             # its own port; GET any path with `xmpp` subprotocol
//! tls = true                         # wss:// with the server's certificate; false: plain
//!                                    # ws:// for a TLS proxy on this host, loopback only
//! [muc]                              # XEP-0045 group chat
//! enabled = true
//! domain = "conference.example.org"  # default: conference.<domain>
//! max_rooms = 200                    # rooms the service holds
//! max_rooms_per_user = 20            # rooms one account may own
//! max_occupants = 100                # per room
//! history_length = 50                # messages a room may keep
//! ```
//!
//! Relative paths in the file are taken relative to the file's own directory, so
//! `hearth check` and `hearth serve` agree whatever directory they are started from.
//!
//! Errors name the file, the key as a dotted path and the reason, e.g.
//! `/etc/hearth/hearth.toml: c2s.max_stanza_bytes: must be between 10000 and 16777216 (got 12)`,
//! so a bad file is reported before any port is opened (DESIGN.md, "What a user gets").

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use crate::jid::BareJid;
use crate::storage::Quota;

mod mqtt;
pub use mqtt::MqttConfig;

/// The validated configuration of one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The domain this server hosts (RFC 7622 §3.2 domainpart), normalized: lowercase,
    /// no trailing dot. Every local JID ends in it.
    pub domain: String,
    /// Where the database and the generated certificate live.
    pub data_dir: PathBuf,
    /// Executor threads; a Pi has few cores and most work is I/O bound.
    pub threads: usize,
    /// Client-to-server listeners and limits.
    pub c2s: C2sConfig,
    /// Where the certificate comes from.
    pub tls: TlsConfig,
    /// Authentication policy.
    pub auth: AuthConfig,
    /// Denial-of-service limits.
    pub limits: LimitsConfig,
    /// Serve even when started as root (`hearth serve` refuses otherwise).
    pub allow_root: bool,
    /// LAN advertisement (mDNS/DNS-SD).
    pub mdns: MdnsConfig,
    /// Server-to-server federation.
    pub s2s: S2sConfig,
    /// External components (XEP-0114).
    pub components: ComponentsConfig,
    /// The household, hearth's shared roster group.
    pub household: HouseholdConfig,
    /// Accounts of this server that may run the XEP-0133 administration commands
    /// (top-level `admins`), normalized bare JIDs.
    pub admins: Vec<BareJid>,
    /// In-band registration (XEP-0077).
    pub registration: RegistrationConfig,
    /// Stream management (XEP-0198).
    pub stream_management: StreamManagementConfig,
    /// The message archive (XEP-0313).
    pub archive: crate::features::mam::ArchiveConfig,
    /// Private storage and vCards (XEP-0049, XEP-0054), the server's contact addresses
    /// and external services (XEP-0157, XEP-0215): `[private_storage]`, `[vcard]`,
    /// `[contact]`, `[[external_services]]`.
    pub modules: crate::features::ModuleSettings,
    /// The HTTPS listener (`[http]`): uploads (XEP-0363), host-meta (XEP-0156), XMPP over
    /// WebSocket at `/xmpp-websocket` (RFC 7395).
    pub http: HttpConfig,
    /// XMPP over WebSocket (RFC 7395) on a listener of its own.
    pub websocket: WebSocketConfig,
    /// The MQTT listener for sensors (`[mqtt]`, issue 21).
    pub mqtt: MqttConfig,
}

/// `[websocket]`: RFC 7395 listeners of their own (the HTTP listener may also hand its
/// upgraded connections over).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebSocketConfig {
    /// Where to listen; empty (the default) for none.
    pub listen: Vec<SocketAddr>,
    /// TLS (wss://) with the server's certificate, as on the XEP-0368 port. Without it
    /// the credentials would cross the network in clear, so a plain listener is only
    /// for a TLS-terminating proxy on the same host: it refuses every peer that is not
    /// a loopback address.
    pub tls: bool,
}

/// `[http]`: hearth's HTTPS listener, with the c2s certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    pub enabled: bool,
    /// Where it listens: `listen` if given, else the c2s listeners' addresses on `port`
    /// (default 5443).
    pub listen: Vec<SocketAddr>,
    /// What URLs handed out start with (no trailing slash), when hearth is reached by
    /// another name or port (a reverse proxy, a public domain); `None`: `https://<domain>:<port>`.
    pub public_url: Option<String>,
}

/// The HTTPS listener's default port (Prosody's `https_ports`).
pub const DEFAULT_HTTP_PORT: u16 = 5443;

/// Stream management (`[stream_management]`, XEP-0198): acknowledgements and resumption
/// for clients whose connections come and go (phones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamManagementConfig {
    /// Offered to clients at all.
    pub enabled: bool,
    /// How long a session whose connection was lost waits to be resumed, at most (a
    /// client may ask for less). Its messages are kept meanwhile; then they go to offline
    /// storage.
    pub resume_timeout_secs: u32,
    /// Stanzas sent to a client and not yet acknowledged, at most: past it the stream is
    /// closed (`resource-constraint`) and what it did not acknowledge goes to offline
    /// storage.
    pub max_unacked: usize,
}

impl Default for StreamManagementConfig {
    fn default() -> Self {
        StreamManagementConfig {
            enabled: true,
            resume_timeout_secs: defaults::SM_RESUME_TIMEOUT_SECS,
            max_unacked: defaults::SM_MAX_UNACKED,
        }
    }
}

/// The household (`[household]`): accounts that see each other with mutual presence
/// without subscribing (`features::household`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HouseholdConfig {
    /// The roster group (RFC 6121 §2.1.2.3) the members appear in, in each other's
    /// rosters; not empty, at most `roster::MAX_NAME_BYTES` bytes.
    pub group: String,
}

impl Default for HouseholdConfig {
    fn default() -> HouseholdConfig {
        HouseholdConfig {
            group: "Household".to_owned(),
        }
    }
}

/// Who may create an account from a client (`[registration]`, XEP-0077).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RegistrationPolicy {
    /// Nobody: accounts are made with `hearth user add`; no `<register/>` stream feature.
    Closed,
    /// Whoever has a valid invitation token (XEP-0401); the default.
    #[default]
    Invite,
    /// Anyone who can reach the server, throttled per source address.
    Open,
}

/// In-band registration settings (`[registration]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistrationConfig {
    pub policy: RegistrationPolicy,
    /// Accounts one source address may register per hour under the open policy (a
    /// household behind one NAT address registers a few; a spammer many).
    pub per_address_per_hour: u32,
}

impl Default for RegistrationConfig {
    fn default() -> RegistrationConfig {
        RegistrationConfig {
            policy: RegistrationPolicy::default(),
            per_address_per_hour: defaults::REGISTRATIONS_PER_ADDRESS_PER_HOUR,
        }
    }
}

/// External components (`[components]`, XEP-0114): programs beside hearth that own a
/// domain of their own and authenticate with a shared secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ComponentsConfig {
    /// Where components connect; empty when none is configured.
    pub listen: Vec<SocketAddr>,
    /// Each component's domain and secret.
    pub secrets: Vec<(String, String)>,
}

impl fmt::Debug for ComponentsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secrets stay out of logs and error messages.
        let domains: Vec<&str> = self.secrets.iter().map(|(d, _)| d.as_str()).collect();
        f.debug_struct("ComponentsConfig")
            .field("listen", &self.listen)
            .field("domains", &domains)
            .finish()
    }
}

/// Server-to-server settings (`[s2s]`): how hearth talks to other XMPP servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S2sConfig {
    /// Federation at all (top-level `federation`): off means no listener, no outgoing links, and stanzas for other
    /// domains bounce with `remote-server-not-found` (a household that wants no outside
    /// contact).
    pub enabled: bool,
    /// STARTTLS listeners for incoming links (RFC 6120 §3.2: port 5269).
    pub listen: Vec<SocketAddr>,
    /// Direct TLS listeners (XEP-0368); empty by default.
    pub direct_tls_listen: Vec<SocketAddr>,
    /// No link without TLS, either way (RFC 7590 §3.2).
    pub require_tls: bool,
    /// Only peers whose certificate is valid for their domain (SASL EXTERNAL, XEP-0178,
    /// or dialback on a valid certificate); off lets self-signed home servers in through
    /// dialback (XEP-0220).
    pub require_valid_certificates: bool,
    /// PEM file of the root certificates peers' certificates must chain to; `None` when
    /// there is none (then no certificate is valid and every peer uses dialback).
    pub ca_file: Option<PathBuf>,
    /// DNS servers to ask instead of those in /etc/resolv.conf.
    pub resolvers: Vec<SocketAddr>,
    /// Largest stanza accepted on a link (bytes of XML).
    pub max_stanza_bytes: usize,
    /// A link that carried nothing for this long is closed.
    pub idle_timeout: Duration,
    /// Fixed addresses for some domains (STARTTLS), used instead of DNS: a LAN or a test.
    pub routes: Vec<(String, SocketAddr)>,
}

/// mDNS settings (top-level `mdns` and `mdns_interfaces`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdnsConfig {
    /// Advertise the server on the LAN; on by default so a home without DNS finds it.
    pub enabled: bool,
    /// Interfaces to advertise on (e.g. `["eth0", "wlan0"]`); empty means all.
    pub interfaces: Vec<String>,
}

/// Client-to-server settings (`[c2s]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct C2sConfig {
    /// Plain TCP listeners that require STARTTLS before authentication (RFC 6120 §5).
    pub listen: Vec<SocketAddr>,
    /// Listeners where TLS starts at once (XEP-0368); may be empty.
    pub direct_tls_listen: Vec<SocketAddr>,
    /// Largest stanza accepted from an authenticated client, in bytes of XML.
    pub max_stanza_bytes: usize,
    /// Largest element accepted before authentication; small, because anyone can send it.
    pub max_stanza_bytes_unauthenticated: usize,
    /// A stream that is not authenticated and bound within this time is closed, so idle
    /// half-open connections cannot pile up.
    pub negotiation_timeout: Duration,
}

/// TLS settings (`[tls]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Where the certificate and its key come from.
    pub certificate: CertificateSource,
}

/// Where the server's certificate comes from. "Both or neither" of `tls.cert` and
/// `tls.key` is checked at load time, so a half-configured pair cannot exist here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateSource {
    /// PEM files given in the configuration (e.g. from certbot), reloaded on SIGHUP.
    Files {
        /// Certificate chain, end-entity certificate first.
        cert: PathBuf,
        /// The private key of the end-entity certificate.
        key: PathBuf,
    },
    /// A self-signed certificate kept in `<data_dir>/tls/`, generated on first start.
    SelfSigned,
}

/// Authentication settings (`[auth]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// Store SCRAM-SHA-1/-256 keys next to the argon2id hash so SCRAM (and its -PLUS
    /// variants) can be offered; without them only PLAIN over TLS is offered.
    pub scram_keys: bool,
    /// Failed authentications allowed on a connection before answers are delayed.
    pub max_failures_before_delay: u32,
    /// Refuse a SCRAM client that says it could bind to the channel but saw no
    /// `-PLUS` offer (RFC 5802 §6 downgrade detection). Off by default: clients
    /// that only know `tls-unique` say exactly that on every TLS 1.3 stream.
    pub strict_channel_binding: bool,
    /// argon2id checks (SASL PLAIN) running at once, each holding 19 MiB while it runs
    /// (`crate::password`).
    pub password_checks_at_once: usize,
    /// PLAIN checks waiting for one of those; past them a login gets
    /// `<temporary-auth-failure/>` at once (RFC 6120 §6.5.8).
    pub password_check_queue: usize,
}

/// Denial-of-service limits (`[limits]`; XEP-0205). Each one protects the
/// server as a whole from one peer; the defaults leave a household's normal
/// use far below them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Open client connections in total (each costs a file descriptor and
    /// some 10 KiB); beyond it new ones get `<resource-constraint/>`.
    pub max_connections: usize,
    /// Open connections per source address (IPv6 per /64); beyond it
    /// `<policy-violation/>`.
    pub max_connections_per_address: usize,
    /// New connections per address per minute, sustained.
    pub connections_per_minute_per_address: u32,
    /// New connections per address at once, before the rate applies.
    pub connection_burst_per_address: u32,
    /// Bytes per second an authenticated stream may send; beyond its burst
    /// hearth stops reading it for a while (TCP slows the sender).
    pub rate_bytes_per_sec: u32,
    /// Bytes an authenticated stream may send at once.
    pub rate_burst_bytes: u32,
    /// The same rate before authentication: login needs a few KiB.
    pub rate_bytes_per_sec_unauthenticated: u32,
    /// The same burst before authentication.
    pub rate_burst_bytes_unauthenticated: u32,
    /// A bound session silent this long gets an XEP-0199 ping.
    pub ping_after_idle: Duration,
    /// A pinged session silent this long is closed (`<connection-timeout/>`).
    pub ping_timeout: Duration,
    /// Bytes of stanzas waiting to be written to one session; a session
    /// that falls further behind is disconnected.
    pub max_queued_bytes: usize,
    /// Sessions one account may have at once (RFC 6120 §7.6.2.1).
    pub max_resources_per_account: usize,
    /// Elements in one stanza (the tree costs far more than the XML).
    pub max_elements_per_stanza: usize,
    /// What one account may store: roster items, offline messages, blocked JIDs and
    /// bytes in all (`max_*_per_account`).
    pub quota: Quota,
}

/// Limits that the checks below and their error messages share.
mod limits {
    use std::ops::RangeInclusive;

    pub const THREADS: RangeInclusive<i64> = 1..=64;
    /// RFC 6120 §13.12: a server's stanza size limit MUST NOT be below 10000 bytes.
    pub const MAX_STANZA_BYTES: RangeInclusive<i64> = 10_000..=16 * 1024 * 1024;
    pub const MAX_STANZA_BYTES_UNAUTHENTICATED: RangeInclusive<i64> = 1024..=16 * 1024 * 1024;
    pub const NEGOTIATION_TIMEOUT_SECS: RangeInclusive<i64> = 1..=600;
    pub const MAX_FAILURES_BEFORE_DELAY: RangeInclusive<i64> = 0..=100;
    /// Each running check holds 19 MiB: 64 of them are 1.2 GiB.
    pub const PASSWORD_CHECKS_AT_ONCE: RangeInclusive<i64> = 1..=64;
    /// 0: no waiting, only as many logins as checks can run.
    pub const PASSWORD_CHECK_QUEUE: RangeInclusive<i64> = 0..=100_000;
    pub const MAX_CONNECTIONS: RangeInclusive<i64> = 1..=1_000_000;
    pub const CONNECTION_RATE: RangeInclusive<i64> = 1..=1_000_000;
    pub const RATE_BYTES: RangeInclusive<i64> = 1024..=(1 << 30);
    pub const RATE_BYTES_UNAUTHENTICATED: RangeInclusive<i64> = 256..=(1 << 30);
    pub const PING_AFTER_IDLE_SECS: RangeInclusive<i64> = 5..=86_400;
    pub const PING_TIMEOUT_SECS: RangeInclusive<i64> = 1..=3600;
    pub const MAX_QUEUED_BYTES: RangeInclusive<i64> = 16 * 1024..=(1 << 30);
    pub const MAX_RESOURCES: RangeInclusive<i64> = 1..=1000;
    pub const MAX_ELEMENTS: RangeInclusive<i64> = 16..=1_000_000;
    pub const MAX_ROSTER_ITEMS: RangeInclusive<i64> = 1..=100_000;
    /// 0 turns offline storage (or blocking) off: such messages bounce.
    pub const MAX_STORED_ITEMS: RangeInclusive<i64> = 0..=100_000;
    pub const MAX_STORED_BYTES: RangeInclusive<i64> = 0..=(1 << 40);
    pub const IDLE_TIMEOUT_SECS: RangeInclusive<i64> = 10..=86_400;
    pub const REGISTRATIONS_PER_HOUR: RangeInclusive<i64> = 1..=10_000;
    /// Up to a week: a phone left in a drawer over a long weekend.
    pub const SM_RESUME_TIMEOUT_SECS: RangeInclusive<i64> = 0..=7 * 24 * 3600;
    pub const SM_MAX_UNACKED: RangeInclusive<i64> = 16..=100_000;
}

/// Defaults, named so the documentation and the code cannot drift apart.
mod defaults {
    pub const DOMAIN_FALLBACK: &str = "hearth.local";
    /// A family signing up its phones from home in one evening.
    pub const REGISTRATIONS_PER_ADDRESS_PER_HOUR: u32 = 3;
    /// An hour, as Monal asks: a phone asleep in a pocket, or on a train.
    pub const SM_RESUME_TIMEOUT_SECS: u32 = 3600;
    /// Twice a session queue's hard bound in stanzas: a client that reads but does not
    /// acknowledge is cut off long before it holds much memory.
    pub const SM_MAX_UNACKED: usize = 1024;
    pub const DATA_DIR_FALLBACK: &str = "hearth-data";
    pub const MAX_THREADS: usize = 4;
    pub const C2S_LISTEN: &str = "[::]:5222";
    pub const DIRECT_TLS_LISTEN: &str = "[::]:5223";
    pub const MAX_STANZA_BYTES: usize = 256 * 1024;
    /// Enough for SASL and bind exchanges with long JIDs; RFC 6120 §13.12's 10000-byte
    /// minimum is for stanzas, which only an authenticated client can send.
    pub const MAX_STANZA_BYTES_UNAUTHENTICATED: usize = 10 * 1024;
    pub const NEGOTIATION_TIMEOUT_SECS: u64 = 30;
    pub const SCRAM_KEYS: bool = true;
    pub const MAX_FAILURES_BEFORE_DELAY: u32 = 3;
    /// argon2id checks at once: one per core, at most two (38 MiB), so a flood of PLAIN
    /// attempts neither fills a Pi Zero 2 W's memory nor takes every core.
    pub const MAX_PASSWORD_CHECKS_AT_ONCE: usize = 2;
    /// A household's phones and sensors logging in at once after a reboot wait their
    /// turn (a few seconds on a Pi); a flood beyond is refused, costing nothing.
    pub const PASSWORD_CHECK_QUEUE: usize = 32;
    /// Far above a household, below the usual 1024 open-file limit.
    pub const MAX_CONNECTIONS: usize = 512;
    /// A family behind one NAT address with phones, laptops and sensors.
    pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 32;
    /// One a second, sustained: a household's devices retrying now and then.
    pub const CONNECTIONS_PER_MINUTE_PER_ADDRESS: u32 = 60;
    /// Every device of a household reconnecting after the router restarts: ten devices
    /// behind one NAT address, each making two connections per login (slixmpp tries
    /// direct TLS on 5222 first, then reconnects), and some a retry or two.
    pub const CONNECTION_BURST_PER_ADDRESS: u32 = 60;
    /// 32 KiB/s sustained is far beyond chat; the 256 KiB burst lets a
    /// largest stanza or a login's catch-up through at full speed.
    pub const RATE_BYTES_PER_SEC: u32 = 32 * 1024;
    pub const RATE_BURST_BYTES: u32 = 256 * 1024;
    /// A whole login (headers, STARTTLS, SASL, bind) is under 4 KiB.
    pub const RATE_BYTES_PER_SEC_UNAUTHENTICATED: u32 = 2 * 1024;
    pub const RATE_BURST_BYTES_UNAUTHENTICATED: u32 = 16 * 1024;
    /// Longer than home routers' usual NAT timeouts are short, so a phone
    /// is not woken more than every few minutes.
    pub const PING_AFTER_IDLE_SECS: u64 = 300;
    pub const PING_TIMEOUT_SECS: u64 = 60;
    /// Enough for a login's burst of presence and catch-up; beyond it the
    /// reader is too slow and is disconnected.
    pub const MAX_QUEUED_BYTES: usize = 512 * 1024;
    pub const MAX_RESOURCES_PER_ACCOUNT: usize = 16;
    pub const MAX_ELEMENTS_PER_STANZA: usize = 4096;
    pub const S2S_LISTEN: &str = "[::]:5269";
    /// Loopback only: a component is a program on the same machine (XEP-0114's usual port).
    pub const COMPONENTS_LISTEN: &str = "127.0.0.1:5347";
    /// A server's whole roster push or a large vCard fits; RFC 6120 §13.12 sets 10000 bytes
    /// as the floor.
    pub const S2S_MAX_STANZA_BYTES: usize = 512 * 1024;
    /// Ten minutes, as Prosody and ejabberd close idle links.
    pub const S2S_IDLE_TIMEOUT_SECS: u64 = 600;
    /// Debian's (and most distributions') bundle of the public roots.
    pub const CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";
}

impl Config {
    /// Loads `path`, or returns [`Config::defaults`] when there is no file to load.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Ok(Config::defaults());
        };
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            kind: ConfigErrorKind::Read(e),
        })?;
        Config::from_toml_str(&text, path)
    }

    /// Parses and validates `s`; `origin` is the file it came from, named in errors and
    /// used as the base of relative paths.
    pub fn from_toml_str(s: &str, origin: &Path) -> Result<Config, ConfigError> {
        let err = |kind| ConfigError {
            file: origin.to_owned(),
            kind,
        };
        let de = toml::de::Deserializer::parse(s).map_err(|e| err(syntax_error(s, &e)))?;
        let raw: RawConfig =
            serde_path_to_error::deserialize(de).map_err(|e| err(shape_error(e)))?;
        let base = origin.parent().unwrap_or(Path::new(""));
        raw.validate(base, &SystemEnv).map_err(err)
    }

    /// The configuration used when there is no file: every key at its default.
    pub fn defaults() -> Config {
        RawConfig::default()
            .validate(Path::new(""), &SystemEnv)
            // The defaults are constants and a domain that `default_domain` has already
            // validated; failing here would be a bug in this file, not bad input.
            .unwrap_or_else(|e| panic!("built-in defaults are invalid: {e:?}"))
    }
}

/// A configuration error: which file, and what is wrong in it.
#[derive(Debug)]
pub struct ConfigError {
    /// The file that was read (or would have been).
    pub file: PathBuf,
    /// What went wrong.
    pub kind: ConfigErrorKind,
}

/// What went wrong in a configuration file. Keys are dotted paths (`c2s.listen[1]`).
#[derive(Debug)]
pub enum ConfigErrorKind {
    /// The file could not be read.
    Read(io::Error),
    /// The file is not valid TOML.
    Syntax {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column (in characters) of the error.
        column: usize,
        /// The parser's description.
        message: String,
    },
    /// A key hearth does not know, usually a typo.
    UnknownKey {
        /// The dotted path of the key.
        key: String,
        /// The keys allowed at that place, as the parser lists them.
        expected: String,
    },
    /// A value of the wrong type, e.g. a string where a number belongs.
    WrongType {
        /// The dotted path of the key.
        key: String,
        /// What was found and what was expected.
        message: String,
    },
    /// A number outside its allowed range.
    OutOfRange {
        /// The dotted path of the key.
        key: &'static str,
        /// Smallest allowed value.
        min: i64,
        /// Largest allowed value.
        max: i64,
        /// The value in the file.
        got: i64,
    },
    /// A value of the right type that still makes no sense (bad address, bad domain,
    /// a certificate without its key, …).
    Invalid {
        /// The dotted path of the key.
        key: String,
        /// Why the value is rejected.
        reason: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        match &self.kind {
            ConfigErrorKind::Read(e) => write!(f, "{file}: cannot read: {e}"),
            ConfigErrorKind::Syntax {
                line,
                column,
                message,
            } => write!(f, "{file}: line {line}, column {column}: {message}"),
            ConfigErrorKind::UnknownKey { key, expected } if expected.is_empty() => {
                write!(f, "{file}: unknown key \"{key}\"")
            }
            ConfigErrorKind::UnknownKey { key, expected } => {
                write!(f, "{file}: unknown key \"{key}\" ({expected})")
            }
            ConfigErrorKind::WrongType { key, message } => write!(f, "{file}: {key}: {message}"),
            ConfigErrorKind::OutOfRange { key, min, max, got } => {
                write!(
                    f,
                    "{file}: {key}: must be between {min} and {max} (got {got})"
                )
            }
            ConfigErrorKind::Invalid { key, reason } => write!(f, "{file}: {key}: {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ConfigErrorKind::Read(e) => Some(e),
            _ => None,
        }
    }
}

/// Turns a TOML syntax error into a line and column the user can find.
fn syntax_error(source: &str, e: &toml::de::Error) -> ConfigErrorKind {
    let (line, column) = e
        .span()
        .map(|span| line_and_column(source, span.start))
        .unwrap_or((1, 1));
    ConfigErrorKind::Syntax {
        line,
        column,
        message: e.message().to_owned(),
    }
}

fn line_and_column(source: &str, offset: usize) -> (usize, usize) {
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Turns a deserialization error (unknown key, wrong type) into one naming the key.
fn shape_error(e: serde_path_to_error::Error<toml::de::Error>) -> ConfigErrorKind {
    let path = e.path().to_string();
    let message = e.into_inner().message().to_owned();
    // serde's wording for `deny_unknown_fields` is stable: "unknown field `x`, expected …".
    // The path tracker stops at the table that holds the key, so the key is appended.
    if let Some((name, expected)) = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
    {
        return ConfigErrorKind::UnknownKey {
            key: join_key(&path, name),
            expected: expected.trim_start_matches(", ").to_owned(),
        };
    }
    ConfigErrorKind::WrongType { key: path, message }
}

fn join_key(table: &str, key: &str) -> String {
    if table.is_empty() || table == "." {
        key.to_owned()
    } else if table == key || table.ends_with(&format!(".{key}")) {
        table.to_owned()
    } else {
        format!("{table}.{key}")
    }
}

// ----------------------------------------------------------------------------------------
// The file as written: every key optional, types as loose as TOML's. `validate` turns it
// into a `Config`.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table of settings")]
struct RawConfig {
    domain: Option<String>,
    data_dir: Option<String>,
    threads: Option<Int>,
    c2s: Option<RawC2s>,
    tls: Option<RawTls>,
    auth: Option<RawAuth>,
    limits: Option<RawLimits>,
    allow_root: Option<bool>,
    mdns: Option<bool>,
    mdns_interfaces: Option<Strings>,
    federation: Option<bool>,
    s2s: Option<RawS2s>,
    components: Option<RawComponents>,
    household: Option<RawHousehold>,
    admins: Option<Strings>,
    registration: Option<RawRegistration>,
    stream_management: Option<RawStreamManagement>,
    archive: Option<RawArchive>,
    private_storage: Option<RawPrivateStorage>,
    vcard: Option<RawVcard>,
    contact: Option<RawContact>,
    external_services: Option<Vec<RawExternalService>>,
    pep: Option<RawPep>,
    push: Option<RawPush>,
    http: Option<RawHttp>,
    upload: Option<RawUpload>,
    devices: Option<RawDevices>,
    websocket: Option<RawWebSocket>,
    muc: Option<RawMuc>,
    mqtt: Option<mqtt::RawMqtt>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table ([http])")]
struct RawHttp {
    enabled: Option<bool>,
    port: Option<Int>,
    listen: Option<Strings>,
    public_url: Option<String>,
}

impl RawHttp {
    fn validate(self, c2s: &[SocketAddr]) -> Result<HttpConfig, ConfigErrorKind> {
        let port = match self.port {
            Some(n) => in_range("http.port", n, 1..=65_535)? as u16,
            None => DEFAULT_HTTP_PORT,
        };
        let listen = match self.listen {
            Some(list) => addresses("http.listen", list)?,
            None => {
                let mut v: Vec<SocketAddr> = Vec::new();
                for a in c2s {
                    let a = SocketAddr::new(a.ip(), port);
                    if !v.contains(&a) {
                        v.push(a);
                    }
                }
                v
            }
        };
        let public_url = match self.public_url {
            None => None,
            Some(u) => {
                let u = u.trim_end_matches('/').to_owned();
                let host = u
                    .strip_prefix("https://")
                    .or_else(|| u.strip_prefix("http://"));
                match host {
                    Some(h)
                        if !h.is_empty()
                            && !h.chars().any(|c| c.is_whitespace() || c == '?' || c == '#') =>
                    {
                        Some(u)
                    }
                    _ => {
                        return Err(invalid(
                            "http.public_url",
                            format!("must be an https:// (or http://) URL (got {u:?})"),
                        ));
                    }
                }
            }
        };
        Ok(HttpConfig {
            enabled: self.enabled.unwrap_or(true),
            listen,
            public_url,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table ([upload])")]
struct RawUpload {
    enabled: Option<bool>,
    max_file_size: Option<Int>,
    quota_bytes_per_account: Option<Int>,
    expire_after_secs: Option<Int>,
    allowed_types: Option<Strings>,
}

impl RawUpload {
    fn validate(self) -> Result<crate::features::upload::UploadConfig, ConfigErrorKind> {
        use crate::features::upload::{UploadConfig, is_mime_type};
        let d = UploadConfig::default();
        let mut allowed_types = Vec::new();
        for t in self.allowed_types.map(|l| l.0).unwrap_or_default() {
            let t = t.to_ascii_lowercase();
            let ok = match t.strip_suffix("/*") {
                Some(top) => is_mime_type(&format!("{top}/x")),
                None => is_mime_type(&t),
            };
            if !ok {
                return Err(invalid(
                    "upload.allowed_types",
                    format!(
                        "{t:?} is not a MIME type (\"image/jpeg\") or a whole type (\"image/*\")"
                    ),
                ));
            }
            allowed_types.push(t);
        }
        Ok(UploadConfig {
            enabled: self.enabled.unwrap_or(d.enabled),
            // Up to 16 GiB.
            max_file_size: match self.max_file_size {
                Some(n) => in_range("upload.max_file_size", n, 1..=1 << 34)? as u64,
                None => d.max_file_size,
            },
            quota_bytes_per_account: match self.quota_bytes_per_account {
                Some(n) => in_range("upload.quota_bytes_per_account", n, 0..=1 << 44)? as u64,
                None => d.quota_bytes_per_account,
            },
            // Up to ten years.
            expire_after_secs: match self.expire_after_secs {
                Some(n) => in_range("upload.expire_after_secs", n, 0..=315_360_000)? as u64,
                None => d.expire_after_secs,
            },
            allowed_types,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table ([devices])")]
struct RawDevices {
    presence_interval_secs: Option<Int>,
    presence_burst: Option<Int>,
    store_interval_secs: Option<Int>,
}

impl RawDevices {
    fn validate(self) -> Result<crate::features::device::DeviceConfig, ConfigErrorKind> {
        let d = crate::features::device::DeviceConfig::default();
        let secs = |key, v: Option<Int>, range, default: Duration| match v {
            Some(n) => in_range(key, n, range).map(|n| Duration::from_secs(n as u64)),
            None => Ok(default),
        };
        Ok(crate::features::device::DeviceConfig {
            // A second to a day.
            presence_interval: secs(
                "devices.presence_interval_secs",
                self.presence_interval_secs,
                1..=86_400,
                d.presence_interval,
            )?,
            presence_burst: match self.presence_burst {
                Some(n) => in_range("devices.presence_burst", n, 1..=100)? as u32,
                None => d.presence_burst,
            },
            store_interval: secs(
                "devices.store_interval_secs",
                self.store_interval_secs,
                0..=86_400,
                d.store_interval,
            )?,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table ([websocket])")]
struct RawWebSocket {
    listen: Option<Strings>,
    tls: Option<bool>,
}

impl RawWebSocket {
    fn validate(self, c2s: &C2sConfig) -> Result<WebSocketConfig, ConfigErrorKind> {
        let listen = match self.listen {
            Some(list) => addresses("websocket.listen", list)?,
            None => Vec::new(),
        };
        if let Some(addr) = listen
            .iter()
            .find(|a| c2s.listen.contains(a) || c2s.direct_tls_listen.contains(a))
        {
            return Err(invalid(
                "websocket.listen",
                format!("{addr} is also a c2s listener; one port cannot serve both"),
            ));
        }
        Ok(WebSocketConfig {
            listen,
            tls: self.tls.unwrap_or(true),
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table ([muc])")]
struct RawMuc {
    enabled: Option<bool>,
    domain: Option<String>,
    max_rooms: Option<Int>,
    max_rooms_per_user: Option<Int>,
    max_occupants: Option<Int>,
    history_length: Option<Int>,
}

impl RawMuc {
    /// `[muc]` (XEP-0045): the service's domain must be a valid one of its own, not
    /// the server's (`host`).
    fn validate(self, host: &str) -> Result<crate::features::muc::MucConfig, ConfigErrorKind> {
        let mut c = crate::features::muc::MucConfig::for_domain(host);
        c.enabled = self.enabled.unwrap_or(true);
        if let Some(d) = self.domain {
            let d = normalize_domain(&d).map_err(|reason| invalid("muc.domain", reason))?;
            if d == host {
                return Err(invalid(
                    "muc.domain",
                    "must differ from the server's domain",
                ));
            }
            c.domain = d;
        }
        if let Some(n) = self.max_rooms {
            c.max_rooms = in_range("muc.max_rooms", n, 1..=100_000)? as usize;
        }
        if let Some(n) = self.max_rooms_per_user {
            c.max_rooms_per_user = in_range("muc.max_rooms_per_user", n, 0..=100_000)? as usize;
        }
        if let Some(n) = self.max_occupants {
            c.max_occupants = in_range("muc.max_occupants", n, 1..=10_000)? as usize;
        }
        if let Some(n) = self.history_length {
            c.history_length = in_range("muc.history_length", n, 0..=1000)? as usize;
        }
        Ok(c)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table ([push])")]
struct RawPush {
    include_body: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table ([pep])")]
struct RawPep {
    max_nodes_per_account: Option<Int>,
    max_items_per_node: Option<Int>,
    max_item_bytes: Option<Int>,
}

impl RawPep {
    fn validate(self) -> Result<crate::features::pep::PepConfig, ConfigErrorKind> {
        let d = crate::features::pep::PepConfig::default();
        Ok(crate::features::pep::PepConfig {
            max_nodes_per_account: match self.max_nodes_per_account {
                Some(n) => in_range("pep.max_nodes_per_account", n, 1..=100_000)? as usize,
                None => d.max_nodes_per_account,
            },
            max_items_per_node: match self.max_items_per_node {
                Some(n) => in_range("pep.max_items_per_node", n, 1..=100_000)? as u32,
                None => d.max_items_per_node,
            },
            // A payload travels in one stanza: at most the largest a stream accepts.
            max_item_bytes: match self.max_item_bytes {
                Some(n) => in_range("pep.max_item_bytes", n, 1024..=16_777_216)? as usize,
                None => d.max_item_bytes,
            },
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table ([archive])")]
struct RawArchive {
    enabled: Option<bool>,
    default_policy: Option<String>,
    retention_days: Option<Int>,
}

impl RawArchive {
    fn validate(self) -> Result<crate::features::mam::ArchiveConfig, ConfigErrorKind> {
        use crate::features::mam::{ArchiveConfig, Policy};
        let d = ArchiveConfig::default();
        let default_policy = match self.default_policy.as_deref() {
            None => d.default_policy,
            Some(p) => Policy::parse(p).ok_or_else(|| {
                invalid(
                    "archive.default_policy",
                    format!("must be \"always\", \"never\" or \"roster\" (got {p:?})"),
                )
            })?,
        };
        let retention_days = match self.retention_days {
            // Up to a century; 0 turns expiry off.
            Some(n) => in_range("archive.retention_days", n, 0..=36_500)? as u32,
            None => d.retention_days,
        };
        Ok(ArchiveConfig {
            enabled: self.enabled.unwrap_or(d.enabled),
            default_policy,
            retention_days,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table ([private_storage])")]
struct RawPrivateStorage {
    max_item_bytes: Option<Int>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table ([vcard])")]
struct RawVcard {
    max_bytes: Option<Int>,
}

/// XEP-0157 §2's kinds of address, each a list of URIs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table ([contact])")]
struct RawContact {
    abuse: Option<Strings>,
    admin: Option<Strings>,
    feedback: Option<Strings>,
    sales: Option<Strings>,
    security: Option<Strings>,
    support: Option<Strings>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an array of tables ([[external_services]])"
)]
struct RawExternalService {
    #[serde(rename = "type")]
    kind: String,
    host: String,
    port: Option<Int>,
    transport: Option<String>,
    name: Option<String>,
    secret: Option<String>,
    credentials_ttl_secs: Option<Int>,
}

/// `[private_storage]`, `[vcard]`, `[contact]` and `[[external_services]]`.
fn module_settings(
    private_storage: Option<RawPrivateStorage>,
    vcard: Option<RawVcard>,
    contact: Option<RawContact>,
    external: Option<Vec<RawExternalService>>,
    pep: Option<RawPep>,
    push: Option<RawPush>,
) -> Result<crate::features::ModuleSettings, ConfigErrorKind> {
    use crate::features::{contact, extdisco, private, vcard};
    let mut private_storage_cfg = private::PrivateConfig::default();
    if let Some(n) = private_storage.and_then(|p| p.max_item_bytes) {
        // Up to the largest stanza a client may send.
        private_storage_cfg.max_item_bytes = in_range(
            "private_storage.max_item_bytes",
            n,
            256..=limits::MAX_STANZA_BYTES.end().to_owned(),
        )? as usize;
    }
    let mut vcard_cfg = vcard::VcardConfig::default();
    if let Some(n) = vcard.and_then(|v| v.max_bytes) {
        vcard_cfg.max_bytes = in_range(
            "vcard.max_bytes",
            n,
            256..=limits::MAX_STANZA_BYTES.end().to_owned(),
        )? as usize;
    }
    let contact = contact.unwrap_or_default();
    let mut lists = Vec::new();
    for (kind, list) in contact::KINDS.into_iter().zip([
        contact.abuse,
        contact.admin,
        contact.feedback,
        contact.sales,
        contact.security,
        contact.support,
    ]) {
        let list = list.map(|l| l.0).unwrap_or_default();
        if let Some(bad) = list.iter().find(|a| !contact::is_uri(a)) {
            return Err(invalid(
                &format!("contact.{kind}"),
                format!(
                    "{bad:?} is not a URI (e.g. \"mailto:{kind}@example.org\" or \"xmpp:{kind}@example.org\")"
                ),
            ));
        }
        if !list.is_empty() {
            lists.push((kind, list));
        }
    }
    let mut external_services = Vec::new();
    for (i, raw) in external.unwrap_or_default().into_iter().enumerate() {
        let key = |k: &str| format!("external_services[{i}].{k}");
        let is_name = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '+' | '_'))
        };
        if !is_name(&raw.kind) {
            return Err(invalid(
                &key("type"),
                format!(
                    "{:?} is not a service type (\"stun\", \"turn\", \"stuns\", \"turns\")",
                    raw.kind
                ),
            ));
        }
        if raw.host.is_empty() || raw.host.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(invalid(
                &key("host"),
                format!("{:?} is not a host name or address", raw.host),
            ));
        }
        let port = match raw.port {
            None => None,
            Some(Int(n)) => Some(u16::try_from(n).ok().filter(|p| *p > 0).ok_or_else(|| {
                invalid(
                    &key("port"),
                    format!("must be between 1 and 65535 (got {n})"),
                )
            })?),
        };
        if let Some(t) = raw
            .transport
            .as_deref()
            .filter(|t| !matches!(*t, "udp" | "tcp"))
        {
            return Err(invalid(
                &key("transport"),
                format!("must be \"udp\" or \"tcp\" (got {t:?})"),
            ));
        }
        if raw.secret.as_deref() == Some("") {
            return Err(invalid(&key("secret"), "is empty"));
        }
        let credentials_ttl_secs = match raw.credentials_ttl_secs {
            None => extdisco::ExternalService::DEFAULT_TTL_SECS,
            // A minute to a month.
            Some(Int(n)) if (60..=30 * 86_400).contains(&n) => n as u32,
            Some(Int(n)) => {
                return Err(invalid(
                    &key("credentials_ttl_secs"),
                    format!("must be between 60 and 2592000 (got {n})"),
                ));
            }
        };
        external_services.push(extdisco::ExternalService {
            kind: raw.kind,
            host: raw.host,
            port,
            transport: raw.transport,
            name: raw.name,
            secret: raw.secret,
            credentials_ttl_secs,
        });
    }
    Ok(crate::features::ModuleSettings {
        private_storage: private_storage_cfg,
        vcard: vcard_cfg,
        contact: contact::ContactAddresses { lists },
        external_services,
        pep: pep.unwrap_or_default().validate()?,
        push: crate::features::push::PushConfig {
            include_body: push.unwrap_or_default().include_body.unwrap_or(false),
        },
        upload: Default::default(),
        // Set by the caller from `[devices]`.
        devices: Default::default(),
        muc: Default::default(),
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table ([household])")]
struct RawHousehold {
    group: Option<String>,
}

impl RawHousehold {
    fn validate(self) -> Result<HouseholdConfig, ConfigErrorKind> {
        let Some(group) = self.group else {
            return Ok(HouseholdConfig::default());
        };
        // RFC 6121 §2.3.3: an empty group name is not acceptable, nor one longer than the
        // roster accepts from a client.
        if group.trim().is_empty() {
            return Err(invalid("household.group", "must not be empty"));
        }
        if group.len() > crate::features::roster::MAX_NAME_BYTES {
            return Err(invalid(
                "household.group",
                format!(
                    "must be at most {} bytes",
                    crate::features::roster::MAX_NAME_BYTES
                ),
            ));
        }
        Ok(HouseholdConfig { group })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table ([registration])")]
struct RawRegistration {
    policy: Option<String>,
    per_address_per_hour: Option<Int>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table ([stream_management])")]
struct RawStreamManagement {
    enabled: Option<bool>,
    resume_timeout_secs: Option<Int>,
    max_unacked: Option<Int>,
}

impl RawStreamManagement {
    fn validate(self) -> Result<StreamManagementConfig, ConfigErrorKind> {
        let d = StreamManagementConfig::default();
        Ok(StreamManagementConfig {
            enabled: self.enabled.unwrap_or(d.enabled),
            resume_timeout_secs: match self.resume_timeout_secs {
                Some(n) => in_range(
                    "stream_management.resume_timeout_secs",
                    n,
                    limits::SM_RESUME_TIMEOUT_SECS,
                )? as u32,
                None => d.resume_timeout_secs,
            },
            max_unacked: match self.max_unacked {
                Some(n) => {
                    in_range("stream_management.max_unacked", n, limits::SM_MAX_UNACKED)? as usize
                }
                None => d.max_unacked,
            },
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table ([components])")]
struct RawComponents {
    listen: Option<Strings>,
    secrets: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table ([s2s])")]
struct RawS2s {
    listen: Option<Strings>,
    direct_tls_listen: Option<Strings>,
    require_tls: Option<bool>,
    require_valid_certificates: Option<bool>,
    ca_file: Option<String>,
    resolvers: Option<Strings>,
    max_stanza_bytes: Option<Int>,
    idle_timeout_secs: Option<Int>,
    routes: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table ([c2s])")]
struct RawC2s {
    listen: Option<Strings>,
    direct_tls_listen: Option<Strings>,
    max_stanza_bytes: Option<Int>,
    max_stanza_bytes_unauthenticated: Option<Int>,
    negotiation_timeout_secs: Option<Int>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table ([tls])")]
struct RawTls {
    cert: Option<String>,
    key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table ([auth])")]
struct RawAuth {
    scram_keys: Option<bool>,
    max_failures_before_delay: Option<Int>,
    strict_channel_binding: Option<bool>,
    password_checks_at_once: Option<Int>,
    password_check_queue: Option<Int>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table ([limits])")]
struct RawLimits {
    max_connections: Option<Int>,
    max_connections_per_address: Option<Int>,
    connections_per_minute_per_address: Option<Int>,
    connection_burst_per_address: Option<Int>,
    rate_bytes_per_sec: Option<Int>,
    rate_burst_bytes: Option<Int>,
    rate_bytes_per_sec_unauthenticated: Option<Int>,
    rate_burst_bytes_unauthenticated: Option<Int>,
    ping_after_idle_secs: Option<Int>,
    ping_timeout_secs: Option<Int>,
    max_queued_bytes: Option<Int>,
    max_resources_per_account: Option<Int>,
    max_elements_per_stanza: Option<Int>,
    max_roster_items_per_account: Option<Int>,
    max_offline_messages_per_account: Option<Int>,
    max_blocked_jids_per_account: Option<Int>,
    max_stored_bytes_per_account: Option<Int>,
}

/// A TOML integer, kept signed and wide so that `-1` or `1e12`-sized values reach the
/// range check (and its friendly message) instead of a serde overflow error.
#[derive(Debug, Clone, Copy)]
struct Int(i64);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct IntVisitor;
        impl Visitor<'_> for IntVisitor {
            type Value = Int;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int, E> {
                Ok(Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int, E> {
                i64::try_from(v)
                    .map(Int)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
        }
        d.deserialize_i64(IntVisitor)
    }
}

/// An array of strings; its own type only so that a wrong type reads "expected an array
/// of strings" rather than serde's "expected a sequence".
#[derive(Debug)]
struct Strings(Vec<String>);

impl<'de> Deserialize<'de> for Strings {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct StringsVisitor;
        impl<'de> Visitor<'de> for StringsVisitor {
            type Value = Strings;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of strings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strings, A::Error> {
                let mut v = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    v.push(s);
                }
                Ok(Strings(v))
            }
        }
        d.deserialize_seq(StringsVisitor)
    }
}

/// The environment defaults are read from; a trait so tests need not set variables
/// (`std::env::set_var` is unsafe in edition 2024 and the crate forbids unsafe code).
trait Env {
    fn var(&self, name: &str) -> Option<OsString>;
    fn hostname(&self) -> Option<String>;
    fn cores(&self) -> usize;
}

struct SystemEnv;

impl Env for SystemEnv {
    fn var(&self, name: &str) -> Option<OsString> {
        std::env::var_os(name)
    }
    fn hostname(&self) -> Option<String> {
        std::fs::read_to_string("/proc/sys/kernel/hostname").ok()
    }
    fn cores(&self) -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

impl RawConfig {
    fn validate(self, base: &Path, env: &dyn Env) -> Result<Config, ConfigErrorKind> {
        let domain = match self.domain {
            Some(d) => normalize_domain(&d).map_err(|reason| invalid("domain", reason))?,
            None => default_domain(env.hostname().as_deref()),
        };
        let data_dir = match self.data_dir {
            Some(p) => path_value("data_dir", &p, base)?,
            None => default_data_dir(env),
        };
        let threads = match self.threads {
            Some(n) => in_range("threads", n, limits::THREADS)? as usize,
            None => env.cores().clamp(1, defaults::MAX_THREADS),
        };
        let components = self.components.unwrap_or_default().validate(&domain)?;
        let admins = admins("admins", self.admins, &domain)?;
        let c2s = self.c2s.unwrap_or_default().validate()?;
        let http = self.http.unwrap_or_default().validate(&c2s.listen)?;
        let mut upload = self.upload.unwrap_or_default().validate()?;
        // The component hands out URLs of the HTTPS listener: without it, no component.
        upload.enabled &= http.enabled;
        let websocket = self.websocket.unwrap_or_default().validate(&c2s)?;
        let devices = self.devices.unwrap_or_default().validate()?;
        let muc = self.muc.unwrap_or_default().validate(&domain)?;
        let mut config = Config {
            domain,
            data_dir,
            threads,
            c2s,
            tls: self.tls.unwrap_or_default().validate(base)?,
            auth: self.auth.unwrap_or_default().validate(env.cores())?,
            limits: self.limits.unwrap_or_default().validate()?,
            allow_root: self.allow_root.unwrap_or(false),
            mdns: MdnsConfig {
                enabled: self.mdns.unwrap_or(true),
                interfaces: interface_names("mdns_interfaces", self.mdns_interfaces)?,
            },
            s2s: self
                .s2s
                .unwrap_or_default()
                .validate(base, self.federation.unwrap_or(true))?,
            admins,
            components,
            household: self.household.unwrap_or_default().validate()?,
            registration: self.registration.unwrap_or_default().validate()?,
            stream_management: self.stream_management.unwrap_or_default().validate()?,
            archive: self.archive.unwrap_or_default().validate()?,
            modules: module_settings(
                self.private_storage,
                self.vcard,
                self.contact,
                self.external_services,
                self.pep,
                self.push,
            )
            .map(|mut m| {
                m.upload = upload;
                m.muc = muc;
                m
            })?,
            http,
            websocket,
            mqtt: self.mqtt.unwrap_or_default().validate()?,
        };
        // `[devices]` (features::device), beside the other modules' settings.
        config.modules.devices = devices;
        Ok(config)
    }
}

impl RawRegistration {
    fn validate(self) -> Result<RegistrationConfig, ConfigErrorKind> {
        let policy = match self.policy.as_deref() {
            None => RegistrationPolicy::default(),
            Some("closed") => RegistrationPolicy::Closed,
            Some("invite") => RegistrationPolicy::Invite,
            Some("open") => RegistrationPolicy::Open,
            Some(other) => {
                return Err(invalid(
                    "registration.policy",
                    format!("{other:?} is not one of \"closed\", \"invite\", \"open\""),
                ));
            }
        };
        let per_address_per_hour = match self.per_address_per_hour {
            Some(n) => in_range(
                "registration.per_address_per_hour",
                n,
                limits::REGISTRATIONS_PER_HOUR,
            )? as u32,
            None => defaults::REGISTRATIONS_PER_ADDRESS_PER_HOUR,
        };
        Ok(RegistrationConfig {
            policy,
            per_address_per_hour,
        })
    }
}

/// The `admins` list: bare JIDs of accounts on `domain` (XEP-0133 is for this server's
/// own administrators; an address elsewhere could never log in here).
fn admins(key: &str, list: Option<Strings>, domain: &str) -> Result<Vec<BareJid>, ConfigErrorKind> {
    let mut out: Vec<BareJid> = Vec::new();
    for (i, s) in list.map(|l| l.0).unwrap_or_default().iter().enumerate() {
        let key = format!("{key}[{i}]");
        let jid = BareJid::parse(s).map_err(|e| invalid(&key, format!("{s:?}: {e}")))?;
        if jid.local().is_none() || jid.domain() != domain {
            return Err(invalid(
                &key,
                format!("{s:?}: an admin is an account of this server, user@{domain}"),
            ));
        }
        if !out.contains(&jid) {
            out.push(jid);
        }
    }
    Ok(out)
}

impl RawC2s {
    fn validate(self) -> Result<C2sConfig, ConfigErrorKind> {
        let listen = match self.listen {
            Some(list) => addresses("c2s.listen", list)?,
            None => vec![default_addr(defaults::C2S_LISTEN)],
        };
        let direct_tls_listen = match self.direct_tls_listen {
            Some(list) => addresses("c2s.direct_tls_listen", list)?,
            None => vec![default_addr(defaults::DIRECT_TLS_LISTEN)],
        };
        if listen.is_empty() && direct_tls_listen.is_empty() {
            return Err(invalid(
                "c2s.listen",
                "no listeners: c2s.listen and c2s.direct_tls_listen are both empty",
            ));
        }
        if let Some(addr) = listen.iter().find(|a| direct_tls_listen.contains(a)) {
            return Err(invalid(
                "c2s.direct_tls_listen",
                format!("{addr} is also in c2s.listen; one port cannot serve both"),
            ));
        }
        let max_stanza_bytes = match self.max_stanza_bytes {
            Some(n) => in_range("c2s.max_stanza_bytes", n, limits::MAX_STANZA_BYTES)? as usize,
            None => defaults::MAX_STANZA_BYTES,
        };
        let max_stanza_bytes_unauthenticated = match self.max_stanza_bytes_unauthenticated {
            Some(n) => in_range(
                "c2s.max_stanza_bytes_unauthenticated",
                n,
                limits::MAX_STANZA_BYTES_UNAUTHENTICATED,
            )? as usize,
            None => defaults::MAX_STANZA_BYTES_UNAUTHENTICATED.min(max_stanza_bytes),
        };
        if max_stanza_bytes_unauthenticated > max_stanza_bytes {
            return Err(invalid(
                "c2s.max_stanza_bytes_unauthenticated",
                format!(
                    "must not exceed c2s.max_stanza_bytes ({max_stanza_bytes}) (got {max_stanza_bytes_unauthenticated})"
                ),
            ));
        }
        let negotiation_timeout_secs = match self.negotiation_timeout_secs {
            Some(n) => in_range(
                "c2s.negotiation_timeout_secs",
                n,
                limits::NEGOTIATION_TIMEOUT_SECS,
            )? as u64,
            None => defaults::NEGOTIATION_TIMEOUT_SECS,
        };
        Ok(C2sConfig {
            listen,
            direct_tls_listen,
            max_stanza_bytes,
            max_stanza_bytes_unauthenticated,
            negotiation_timeout: Duration::from_secs(negotiation_timeout_secs),
        })
    }
}

impl RawComponents {
    fn validate(self, host: &str) -> Result<ComponentsConfig, ConfigErrorKind> {
        let mut secrets = Vec::new();
        for (domain, secret) in self.secrets.unwrap_or_default() {
            let key = format!("components.secrets.{domain}");
            let domain = normalize_domain(&domain).map_err(|reason| invalid(&key, reason))?;
            if domain == host {
                return Err(invalid(
                    &key,
                    "a component needs a domain of its own, not the server's",
                ));
            }
            if secret.len() < 16 {
                return Err(invalid(
                    &key,
                    "the secret must be at least 16 characters (anyone who guesses it owns the domain)",
                ));
            }
            secrets.push((domain, secret));
        }
        let listen = match self.listen {
            Some(list) => addresses("components.listen", list)?,
            None if secrets.is_empty() => Vec::new(),
            None => vec![default_addr(defaults::COMPONENTS_LISTEN)],
        };
        if !listen.is_empty() && secrets.is_empty() {
            return Err(invalid(
                "components.listen",
                "no component is configured (components.secrets)",
            ));
        }
        Ok(ComponentsConfig { listen, secrets })
    }
}

impl RawS2s {
    fn validate(self, base: &Path, enabled: bool) -> Result<S2sConfig, ConfigErrorKind> {
        let listen = match self.listen {
            Some(list) => addresses("s2s.listen", list)?,
            None => vec![default_addr(defaults::S2S_LISTEN)],
        };
        let direct_tls_listen = match self.direct_tls_listen {
            Some(list) => addresses("s2s.direct_tls_listen", list)?,
            None => Vec::new(),
        };
        if let Some(addr) = listen.iter().find(|a| direct_tls_listen.contains(a)) {
            return Err(invalid(
                "s2s.direct_tls_listen",
                format!("{addr} is also in s2s.listen; one port cannot serve both"),
            ));
        }
        let ca_file = match self.ca_file {
            Some(p) if p.is_empty() => None,
            Some(p) => Some(path_value("s2s.ca_file", &p, base)?),
            None => Some(PathBuf::from(defaults::CA_FILE)).filter(|p| p.exists()),
        };
        let resolvers = match self.resolvers {
            Some(Strings(list)) => list
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    a.parse::<SocketAddr>()
                        .or_else(|_| a.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()))
                        .map_err(|_| {
                            invalid(
                                &format!("s2s.resolvers[{i}]"),
                                format!(
                                    "{a:?} is not an address such as \"192.0.2.1\" or \"[::1]:53\""
                                ),
                            )
                        })
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        let max_stanza_bytes = match self.max_stanza_bytes {
            Some(n) => in_range("s2s.max_stanza_bytes", n, limits::MAX_STANZA_BYTES)? as usize,
            None => defaults::S2S_MAX_STANZA_BYTES,
        };
        let idle_timeout_secs = match self.idle_timeout_secs {
            Some(n) => in_range("s2s.idle_timeout_secs", n, limits::IDLE_TIMEOUT_SECS)? as u64,
            None => defaults::S2S_IDLE_TIMEOUT_SECS,
        };
        let mut routes = Vec::new();
        for (domain, addr) in self.routes.unwrap_or_default() {
            let key = format!("s2s.routes.{domain}");
            let domain = normalize_domain(&domain).map_err(|reason| invalid(&key, reason))?;
            let addr = addr.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    &key,
                    format!("{addr:?} is not an address with a port, such as \"192.0.2.7:5269\""),
                )
            })?;
            routes.push((domain, addr));
        }
        Ok(S2sConfig {
            enabled,
            listen,
            direct_tls_listen,
            require_tls: self.require_tls.unwrap_or(true),
            require_valid_certificates: self.require_valid_certificates.unwrap_or(false),
            ca_file,
            resolvers,
            max_stanza_bytes,
            idle_timeout: Duration::from_secs(idle_timeout_secs),
            routes,
        })
    }
}

impl RawTls {
    fn validate(self, base: &Path) -> Result<TlsConfig, ConfigErrorKind> {
        let certificate = match (self.cert, self.key) {
            (Some(cert), Some(key)) => CertificateSource::Files {
                cert: path_value("tls.cert", &cert, base)?,
                key: path_value("tls.key", &key, base)?,
            },
            (None, None) => CertificateSource::SelfSigned,
            (Some(_), None) => {
                return Err(invalid(
                    "tls.key",
                    "missing: tls.cert is set, and tls.cert and tls.key must be given together",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "tls.cert",
                    "missing: tls.key is set, and tls.cert and tls.key must be given together",
                ));
            }
        };
        Ok(TlsConfig { certificate })
    }
}

impl RawAuth {
    fn validate(self, cores: usize) -> Result<AuthConfig, ConfigErrorKind> {
        Ok(AuthConfig {
            scram_keys: self.scram_keys.unwrap_or(defaults::SCRAM_KEYS),
            max_failures_before_delay: match self.max_failures_before_delay {
                Some(n) => in_range(
                    "auth.max_failures_before_delay",
                    n,
                    limits::MAX_FAILURES_BEFORE_DELAY,
                )? as u32,
                None => defaults::MAX_FAILURES_BEFORE_DELAY,
            },
            strict_channel_binding: self.strict_channel_binding.unwrap_or(false),
            password_checks_at_once: match self.password_checks_at_once {
                Some(n) => in_range(
                    "auth.password_checks_at_once",
                    n,
                    limits::PASSWORD_CHECKS_AT_ONCE,
                )? as usize,
                None => cores.clamp(1, defaults::MAX_PASSWORD_CHECKS_AT_ONCE),
            },
            password_check_queue: match self.password_check_queue {
                Some(n) => {
                    in_range("auth.password_check_queue", n, limits::PASSWORD_CHECK_QUEUE)? as usize
                }
                None => defaults::PASSWORD_CHECK_QUEUE,
            },
        })
    }
}

impl RawLimits {
    fn validate(self) -> Result<LimitsConfig, ConfigErrorKind> {
        // Every range is non-negative and fits u64 (all but the byte quota fit u32).
        let get = |key: &'static str, v: Option<Int>, range, default: u64| match v {
            Some(n) => in_range(key, n, range).map(|n| n as u64),
            None => Ok(default),
        };
        use defaults as d;
        use limits as l;
        Ok(LimitsConfig {
            max_connections: get(
                "limits.max_connections",
                self.max_connections,
                l::MAX_CONNECTIONS,
                d::MAX_CONNECTIONS as u64,
            )? as usize,
            max_connections_per_address: get(
                "limits.max_connections_per_address",
                self.max_connections_per_address,
                l::MAX_CONNECTIONS,
                d::MAX_CONNECTIONS_PER_ADDRESS as u64,
            )? as usize,
            connections_per_minute_per_address: get(
                "limits.connections_per_minute_per_address",
                self.connections_per_minute_per_address,
                l::CONNECTION_RATE,
                d::CONNECTIONS_PER_MINUTE_PER_ADDRESS.into(),
            )? as u32,
            connection_burst_per_address: get(
                "limits.connection_burst_per_address",
                self.connection_burst_per_address,
                l::CONNECTION_RATE,
                d::CONNECTION_BURST_PER_ADDRESS.into(),
            )? as u32,
            rate_bytes_per_sec: get(
                "limits.rate_bytes_per_sec",
                self.rate_bytes_per_sec,
                l::RATE_BYTES,
                d::RATE_BYTES_PER_SEC.into(),
            )? as u32,
            rate_burst_bytes: get(
                "limits.rate_burst_bytes",
                self.rate_burst_bytes,
                l::RATE_BYTES,
                d::RATE_BURST_BYTES.into(),
            )? as u32,
            rate_bytes_per_sec_unauthenticated: get(
                "limits.rate_bytes_per_sec_unauthenticated",
                self.rate_bytes_per_sec_unauthenticated,
                l::RATE_BYTES_UNAUTHENTICATED,
                d::RATE_BYTES_PER_SEC_UNAUTHENTICATED.into(),
            )? as u32,
            rate_burst_bytes_unauthenticated: get(
                "limits.rate_burst_bytes_unauthenticated",
                self.rate_burst_bytes_unauthenticated,
                l::RATE_BYTES_UNAUTHENTICATED,
                d::RATE_BURST_BYTES_UNAUTHENTICATED.into(),
            )? as u32,
            ping_after_idle: Duration::from_secs(get(
                "limits.ping_after_idle_secs",
                self.ping_after_idle_secs,
                l::PING_AFTER_IDLE_SECS,
                d::PING_AFTER_IDLE_SECS,
            )?),
            ping_timeout: Duration::from_secs(get(
                "limits.ping_timeout_secs",
                self.ping_timeout_secs,
                l::PING_TIMEOUT_SECS,
                d::PING_TIMEOUT_SECS,
            )?),
            max_queued_bytes: get(
                "limits.max_queued_bytes",
                self.max_queued_bytes,
                l::MAX_QUEUED_BYTES,
                d::MAX_QUEUED_BYTES as u64,
            )? as usize,
            max_resources_per_account: get(
                "limits.max_resources_per_account",
                self.max_resources_per_account,
                l::MAX_RESOURCES,
                d::MAX_RESOURCES_PER_ACCOUNT as u64,
            )? as usize,
            max_elements_per_stanza: get(
                "limits.max_elements_per_stanza",
                self.max_elements_per_stanza,
                l::MAX_ELEMENTS,
                d::MAX_ELEMENTS_PER_STANZA as u64,
            )? as usize,
            quota: Quota {
                roster_items: get(
                    "limits.max_roster_items_per_account",
                    self.max_roster_items_per_account,
                    l::MAX_ROSTER_ITEMS,
                    Quota::DEFAULT.roster_items as u64,
                )? as usize,
                offline_messages: get(
                    "limits.max_offline_messages_per_account",
                    self.max_offline_messages_per_account,
                    l::MAX_STORED_ITEMS,
                    Quota::DEFAULT.offline_messages as u64,
                )? as usize,
                blocked: get(
                    "limits.max_blocked_jids_per_account",
                    self.max_blocked_jids_per_account,
                    l::MAX_STORED_ITEMS,
                    Quota::DEFAULT.blocked as u64,
                )? as usize,
                stored_bytes: get(
                    "limits.max_stored_bytes_per_account",
                    self.max_stored_bytes_per_account,
                    l::MAX_STORED_BYTES,
                    Quota::DEFAULT.stored_bytes,
                )?,
            },
        })
    }
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigErrorKind {
    ConfigErrorKind::Invalid {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// Checks `n` against `range`. Every range used here lies within `0..=i64::MAX` and fits a
/// `u32` or `usize`, so callers may cast the result.
fn in_range(
    key: &'static str,
    n: Int,
    range: std::ops::RangeInclusive<i64>,
) -> Result<i64, ConfigErrorKind> {
    if range.contains(&n.0) {
        Ok(n.0)
    } else {
        Err(ConfigErrorKind::OutOfRange {
            key,
            min: *range.start(),
            max: *range.end(),
            got: n.0,
        })
    }
}

fn path_value(key: &str, value: &str, base: &Path) -> Result<PathBuf, ConfigErrorKind> {
    if value.is_empty() {
        return Err(invalid(key, "must not be empty"));
    }
    Ok(base.join(value))
}

fn addresses(key: &str, list: Strings) -> Result<Vec<SocketAddr>, ConfigErrorKind> {
    let mut out: Vec<SocketAddr> = Vec::with_capacity(list.0.len());
    for (i, s) in list.0.iter().enumerate() {
        let addr: SocketAddr = s.parse().map_err(|_| {
            invalid(
                &format!("{key}[{i}]"),
                format!(
                    "\"{s}\" is not an IP address and port (e.g. \"[::]:5222\" or \"0.0.0.0:5222\")"
                ),
            )
        })?;
        if out.contains(&addr) {
            return Err(invalid(
                &format!("{key}[{i}]"),
                format!("{addr} is listed twice"),
            ));
        }
        out.push(addr);
    }
    Ok(out)
}

/// Network interface names: non-empty, at most 15 bytes (Linux's IFNAMSIZ less the
/// NUL), no '/', ':' or whitespace, no duplicates.
fn interface_names(key: &str, list: Option<Strings>) -> Result<Vec<String>, ConfigErrorKind> {
    let mut out: Vec<String> = Vec::new();
    for (i, name) in list
        .map(|l| l.0)
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let bad = name.is_empty()
            || name.len() > 15
            || name
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
        if bad {
            return Err(invalid(
                &format!("{key}[{i}]"),
                format!("\"{name}\" is not a network interface name (e.g. \"eth0\", \"wlan0\")"),
            ));
        }
        if out.contains(&name) {
            return Err(invalid(
                &format!("{key}[{i}]"),
                format!("{name} is listed twice"),
            ));
        }
        out.push(name);
    }
    Ok(out)
}

fn default_addr(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|_| panic!("built-in default address {s:?} does not parse"))
}

/// `<first label of the host name>.local`, the name mDNS answers for (RFC 6762 §3), or
/// `hearth.local` when the host name is missing or unusable.
fn default_domain(hostname: Option<&str>) -> String {
    hostname
        .map(str::trim)
        .and_then(|h| h.split('.').next())
        .filter(|label| !label.is_empty() && *label != "localhost")
        .and_then(|label| normalize_domain(&format!("{label}.local")).ok())
        .unwrap_or_else(|| defaults::DOMAIN_FALLBACK.to_owned())
}

/// systemd's `StateDirectory=` first, then the XDG data directory, then the home
/// directory, then the working directory.
fn default_data_dir(env: &dyn Env) -> PathBuf {
    let non_empty = |name| env.var(name).filter(|v| !v.is_empty());
    if let Some(dirs) = non_empty("STATE_DIRECTORY") {
        // systemd passes one path per StateDirectory= entry, colon-separated.
        if let Some(first) = std::env::split_paths(&dirs).find(|p| !p.as_os_str().is_empty()) {
            return first;
        }
    }
    if let Some(xdg) = non_empty("XDG_DATA_HOME").map(PathBuf::from) {
        // The XDG base directory spec says relative paths are invalid and to be ignored.
        if xdg.is_absolute() {
            return xdg.join("hearth");
        }
    }
    if let Some(home) = non_empty("HOME") {
        return PathBuf::from(home).join(".local/share/hearth");
    }
    PathBuf::from(defaults::DATA_DIR_FALLBACK)
}

/// RFC 7622 §3.2 domainpart normalization, with the reason as text for
/// the config error.
fn normalize_domain(raw: &str) -> Result<String, String> {
    crate::jid::normalize_domain(raw).map_err(|e| format!("\"{raw}\" is not a valid domain: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const ORIGIN: &str = "/etc/hearth/hearth.toml";

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(s, Path::new(ORIGIN))
    }

    fn error(s: &str) -> String {
        parse(s).unwrap_err().to_string()
    }

    struct FakeEnv {
        vars: HashMap<&'static str, &'static str>,
        hostname: Option<&'static str>,
        cores: usize,
    }

    impl Env for FakeEnv {
        fn var(&self, name: &str) -> Option<OsString> {
            self.vars.get(name).map(OsString::from)
        }
        fn hostname(&self) -> Option<String> {
            self.hostname.map(str::to_owned)
        }
        fn cores(&self) -> usize {
            self.cores
        }
    }

    fn fake_env(vars: &[(&'static str, &'static str)]) -> FakeEnv {
        FakeEnv {
            vars: vars.iter().copied().collect(),
            hostname: Some("Kitchen-Pi\n"),
            cores: 8,
        }
    }

    #[test]
    fn defaults_without_a_file() {
        let env = fake_env(&[("HOME", "/home/ann")]);
        let c = RawConfig::default().validate(Path::new(""), &env).unwrap();
        assert_eq!(c.domain, "kitchen-pi.local");
        assert_eq!(c.data_dir, PathBuf::from("/home/ann/.local/share/hearth"));
        assert_eq!(c.threads, 4);
        assert_eq!(c.c2s.listen, vec!["[::]:5222".parse().unwrap()]);
        assert_eq!(c.c2s.direct_tls_listen, vec!["[::]:5223".parse().unwrap()]);
        assert_eq!(c.c2s.max_stanza_bytes, 262_144);
        assert_eq!(c.c2s.max_stanza_bytes_unauthenticated, 10_240);
        assert_eq!(c.c2s.negotiation_timeout, Duration::from_secs(30));
        assert_eq!(c.tls.certificate, CertificateSource::SelfSigned);
        assert!(c.auth.scram_keys);
        assert_eq!(c.auth.max_failures_before_delay, 3);
        assert_eq!(c.auth.password_checks_at_once, 2);
        assert_eq!(c.auth.password_check_queue, 32);
        assert!(!c.allow_root);
        assert!(c.mdns.enabled);
        assert!(c.mdns.interfaces.is_empty());
        assert_eq!(c.limits, default_limits());
        assert_eq!(c.household.group, "Household");
        assert_eq!(c.registration.policy, RegistrationPolicy::Invite);
        assert_eq!(c.registration.per_address_per_hour, 3);
    }

    #[test]
    fn household_group() {
        let c = parse("[household]\ngroup = \"Home\"\n").unwrap();
        assert_eq!(c.household.group, "Home");
        for bad in ["group = \"\"", "group = \"  \""] {
            let e = parse(&format!("[household]\n{bad}\n")).unwrap_err();
            assert!(e.to_string().contains("household.group"), "{e}");
        }
        let e = parse("[household]\nname = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("name"), "{e}");
    }

    #[test]
    fn devices_settings() {
        let c = parse("domain = \"kitchen.local\"\n").unwrap();
        assert_eq!(
            c.modules.devices,
            crate::features::device::DeviceConfig::default()
        );
        let c = parse("[devices]\npresence_interval_secs = 60\npresence_burst = 1\n").unwrap();
        assert_eq!(c.modules.devices.presence_interval, Duration::from_secs(60));
        assert_eq!(c.modules.devices.presence_burst, 1);
        assert_eq!(
            error("[devices]\npresence_interval_secs = 0"),
            "/etc/hearth/hearth.toml: devices.presence_interval_secs: must be between 1 and \
             86400 (got 0)"
        );
        for bad in [
            "presence_burst = 0",
            "presence_burst = 1000",
            "store_interval_secs = -1",
            "rate = 3",
        ] {
            let e = error(&format!("[devices]\n{bad}\n"));
            assert!(e.contains("devices."), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_registration_settings() {
        assert_eq!(
            error("[registration]\npolicy = \"anyone\""),
            "/etc/hearth/hearth.toml: registration.policy: \"anyone\" is not one of \
             \"closed\", \"invite\", \"open\""
        );
        assert_eq!(
            error("[registration]\nper_address_per_hour = 0"),
            "/etc/hearth/hearth.toml: registration.per_address_per_hour: must be between 1 \
             and 10000 (got 0)"
        );
        let e = error("[registration]\ntoken = \"x\"");
        assert!(e.contains("unknown key \"registration.token\""), "{e}");
    }

    fn default_limits() -> LimitsConfig {
        LimitsConfig {
            max_connections: 512,
            max_connections_per_address: 32,
            connections_per_minute_per_address: 60,
            connection_burst_per_address: 60,
            rate_bytes_per_sec: 32768,
            rate_burst_bytes: 262_144,
            rate_bytes_per_sec_unauthenticated: 2048,
            rate_burst_bytes_unauthenticated: 16384,
            ping_after_idle: Duration::from_secs(300),
            ping_timeout: Duration::from_secs(60),
            max_queued_bytes: 524_288,
            max_resources_per_account: 16,
            max_elements_per_stanza: 4096,
            quota: Quota {
                roster_items: 1000,
                offline_messages: 1000,
                blocked: 1000,
                stored_bytes: 16 * 1024 * 1024,
            },
        }
    }

    #[test]
    fn limits_table() {
        let c = parse(
            "[limits]\nmax_connections = 100\nmax_connections_per_address = 4\n\
             connections_per_minute_per_address = 10\nconnection_burst_per_address = 2\n\
             rate_bytes_per_sec = 4096\nrate_burst_bytes = 8192\n\
             rate_bytes_per_sec_unauthenticated = 512\nrate_burst_bytes_unauthenticated = 1024\n\
             ping_after_idle_secs = 60\nping_timeout_secs = 10\nmax_queued_bytes = 65536\n\
             max_resources_per_account = 4\nmax_elements_per_stanza = 100\n\
             max_roster_items_per_account = 50\nmax_offline_messages_per_account = 0\n\
             max_blocked_jids_per_account = 7\nmax_stored_bytes_per_account = 1099511627776\n",
        )
        .unwrap();
        assert_eq!(
            c.limits,
            LimitsConfig {
                max_connections: 100,
                max_connections_per_address: 4,
                connections_per_minute_per_address: 10,
                connection_burst_per_address: 2,
                rate_bytes_per_sec: 4096,
                rate_burst_bytes: 8192,
                rate_bytes_per_sec_unauthenticated: 512,
                rate_burst_bytes_unauthenticated: 1024,
                ping_after_idle: Duration::from_secs(60),
                ping_timeout: Duration::from_secs(10),
                max_queued_bytes: 65536,
                max_resources_per_account: 4,
                max_elements_per_stanza: 100,
                quota: Quota {
                    roster_items: 50,
                    offline_messages: 0,
                    blocked: 7,
                    stored_bytes: 1 << 40,
                },
            }
        );
        assert_eq!(
            error("[limits]\nmax_roster_items_per_account = 0"),
            "/etc/hearth/hearth.toml: limits.max_roster_items_per_account: must be between 1 \
             and 100000 (got 0)"
        );
        assert_eq!(
            error("[limits]\nmax_stored_bytes_per_account = -1"),
            "/etc/hearth/hearth.toml: limits.max_stored_bytes_per_account: must be between 0 \
             and 1099511627776 (got -1)"
        );
        assert_eq!(
            error("[limits]\nmax_queued_bytes = 100"),
            "/etc/hearth/hearth.toml: limits.max_queued_bytes: must be between 16384 and \
             1073741824 (got 100)"
        );
        assert_eq!(
            error("[limits]\nmax_connections = 0"),
            "/etc/hearth/hearth.toml: limits.max_connections: must be between 1 and 1000000 (got 0)"
        );
        let e = error("[limits]\nmax_conections = 1");
        assert!(e.contains("unknown key \"limits.max_conections\""), "{e}");
    }

    #[test]
    fn bad_interface_names() {
        for bad in ["", "eth 0", "a/b", "eth0:1", "sixteen-letters!"] {
            let e = error(&format!("mdns_interfaces = [\"{bad}\"]"));
            assert!(
                e.ends_with(&format!(
                    "mdns_interfaces[0]: \"{bad}\" is not a network interface name \
                     (e.g. \"eth0\", \"wlan0\")"
                )),
                "{e}"
            );
        }
        let e = error("mdns_interfaces = [\"eth0\", \"eth0\"]");
        assert!(
            e.ends_with("mdns_interfaces[1]: eth0 is listed twice"),
            "{e}"
        );
        assert_eq!(
            error("mdns = \"no\""),
            "/etc/hearth/hearth.toml: mdns: invalid type: string \"no\", expected a boolean"
        );
    }

    #[test]
    fn defaults_on_this_machine_are_valid() {
        let c = Config::defaults();
        assert!(c.domain.ends_with(".local"), "{}", c.domain);
        assert!((1..=4).contains(&c.threads));
        assert_eq!(Config::load(None).unwrap(), c);
        // An empty file is the same as no file.
        assert_eq!(parse("").unwrap(), c);
    }

    #[test]
    fn data_dir_preference_order() {
        let dir = |vars: &[(&'static str, &'static str)]| default_data_dir(&fake_env(vars));
        assert_eq!(
            dir(&[
                ("STATE_DIRECTORY", "/var/lib/hearth:/var/lib/other"),
                ("XDG_DATA_HOME", "/x"),
                ("HOME", "/h")
            ]),
            PathBuf::from("/var/lib/hearth")
        );
        assert_eq!(
            dir(&[("XDG_DATA_HOME", "/x"), ("HOME", "/h")]),
            PathBuf::from("/x/hearth")
        );
        // A relative XDG_DATA_HOME is ignored, as the XDG spec says.
        assert_eq!(
            dir(&[("XDG_DATA_HOME", "rel"), ("HOME", "/h")]),
            PathBuf::from("/h/.local/share/hearth")
        );
        assert_eq!(
            dir(&[("STATE_DIRECTORY", ""), ("HOME", "/h")]),
            PathBuf::from("/h/.local/share/hearth")
        );
        assert_eq!(dir(&[]), PathBuf::from("hearth-data"));
    }

    #[test]
    fn domain_from_hostname() {
        assert_eq!(default_domain(Some("pi\n")), "pi.local");
        assert_eq!(default_domain(Some("Pi.example.org")), "pi.local");
        assert_eq!(default_domain(Some("")), "hearth.local");
        assert_eq!(default_domain(Some("localhost")), "hearth.local");
        assert_eq!(default_domain(Some("bad_name")), "hearth.local");
        assert_eq!(default_domain(None), "hearth.local");
    }

    #[test]
    fn threads_default_is_cores_capped_at_four() {
        let mut env = fake_env(&[]);
        env.cores = 2;
        let c = RawConfig::default().validate(Path::new(""), &env).unwrap();
        assert_eq!(c.threads, 2);
    }

    #[test]
    fn full_file() {
        let c = parse(
            r#"
            domain = "Kitchen.Local."
            data_dir = "/var/lib/hearth"
            threads = 2
            allow_root = true
            federation = true
            mdns = false
            mdns_interfaces = ["eth0", "wlan0"]
            admins = ["Alice@kitchen.local", "bob@KITCHEN.local", "alice@kitchen.local"]

            [c2s]
            listen = ["0.0.0.0:5222", "[::1]:5222"]
            direct_tls_listen = []
            max_stanza_bytes = 65536
            max_stanza_bytes_unauthenticated = 4096
            negotiation_timeout_secs = 10

            [tls]
            cert = "/etc/le/fullchain.pem"
            key = "privkey.pem"

            [auth]
            scram_keys = false
            max_failures_before_delay = 5
            strict_channel_binding = true
            password_checks_at_once = 1
            password_check_queue = 0

            [s2s]
            listen = ["[::]:5269"]
            direct_tls_listen = ["[::]:5270"]
            require_tls = false
            require_valid_certificates = true
            ca_file = "roots.pem"
            resolvers = ["127.0.0.53", "[::1]:5353"]
            max_stanza_bytes = 100000
            idle_timeout_secs = 60
            routes = { "Example.ORG" = "192.0.2.7:5269" }

            [components]
            secrets = { "Bot.kitchen.local" = "sixteen chars ok" }

            [household]
            group = "Family"

            [registration]
            policy = "open"
            per_address_per_hour = 5

            [stream_management]
            resume_timeout_secs = 600
            max_unacked = 200
            [archive]
            enabled = false
            default_policy = "roster"
            retention_days = 30

            [push]
            include_body = true

            [http]
            public_url = "https://chat.example.org/"

            [upload]
            max_file_size = 1000000
            quota_bytes_per_account = 5000000
            expire_after_secs = 0
            allowed_types = ["image/*", "Video/MP4"]
            [devices]
            presence_interval_secs = 60
            presence_burst = 1
            store_interval_secs = 0
            [websocket]
            listen = ["127.0.0.1:5281"]
            tls = false
            [muc]
            domain = "rooms.kitchen.local"
            max_rooms = 10
            max_rooms_per_user = 2
            max_occupants = 30
            history_length = 40
            [mqtt]
            enabled = true
            allow_plain = true
            listen = ["0.0.0.0:1883"]
            tls_listen = ["0.0.0.0:8883"]
            connect_timeout_secs = 5
            max_packet_bytes = 4096
            coalesce_ms = 200
            max_keep_alive_secs = 120

            [[mqtt.map]]
            topic = "home/{name}/climate"
            json = "temperature"
            name = "temperature"
            unit = "°C"
            "#,
        )
        .unwrap();
        assert_eq!(
            c,
            Config {
                domain: "kitchen.local".into(),
                data_dir: "/var/lib/hearth".into(),
                threads: 2,
                c2s: C2sConfig {
                    listen: vec![
                        "0.0.0.0:5222".parse().unwrap(),
                        "[::1]:5222".parse().unwrap()
                    ],
                    direct_tls_listen: vec![],
                    max_stanza_bytes: 65536,
                    max_stanza_bytes_unauthenticated: 4096,
                    negotiation_timeout: Duration::from_secs(10),
                },
                tls: TlsConfig {
                    certificate: CertificateSource::Files {
                        cert: "/etc/le/fullchain.pem".into(),
                        // Relative to the configuration file's directory.
                        key: "/etc/hearth/privkey.pem".into(),
                    }
                },
                auth: AuthConfig {
                    scram_keys: false,
                    max_failures_before_delay: 5,
                    strict_channel_binding: true,
                    password_checks_at_once: 1,
                    password_check_queue: 0,
                },
                limits: default_limits(),
                allow_root: true,
                mdns: MdnsConfig {
                    enabled: false,
                    interfaces: vec!["eth0".into(), "wlan0".into()],
                },
                s2s: S2sConfig {
                    enabled: true,
                    listen: vec!["[::]:5269".parse().unwrap()],
                    direct_tls_listen: vec!["[::]:5270".parse().unwrap()],
                    require_tls: false,
                    require_valid_certificates: true,
                    ca_file: Some("/etc/hearth/roots.pem".into()),
                    resolvers: vec![
                        "127.0.0.53:53".parse().unwrap(),
                        "[::1]:5353".parse().unwrap()
                    ],
                    max_stanza_bytes: 100000,
                    idle_timeout: Duration::from_secs(60),
                    routes: vec![("example.org".into(), "192.0.2.7:5269".parse().unwrap())],
                },
                components: ComponentsConfig {
                    listen: vec!["127.0.0.1:5347".parse().unwrap()],
                    secrets: vec![("bot.kitchen.local".into(), "sixteen chars ok".into())],
                },
                household: HouseholdConfig {
                    group: "Family".into(),
                },
                admins: vec![
                    BareJid::parse("alice@kitchen.local").unwrap(),
                    BareJid::parse("bob@kitchen.local").unwrap(),
                ],
                registration: RegistrationConfig {
                    policy: RegistrationPolicy::Open,
                    per_address_per_hour: 5,
                },
                stream_management: StreamManagementConfig {
                    enabled: true,
                    resume_timeout_secs: 600,
                    max_unacked: 200,
                },
                archive: crate::features::mam::ArchiveConfig {
                    enabled: false,
                    default_policy: crate::features::mam::Policy::Roster,
                    retention_days: 30,
                },
                modules: crate::features::ModuleSettings {
                    push: crate::features::push::PushConfig { include_body: true },
                    upload: crate::features::upload::UploadConfig {
                        enabled: true,
                        max_file_size: 1_000_000,
                        quota_bytes_per_account: 5_000_000,
                        expire_after_secs: 0,
                        allowed_types: vec!["image/*".into(), "video/mp4".into()],
                    },
                    devices: crate::features::device::DeviceConfig {
                        presence_interval: Duration::from_secs(60),
                        presence_burst: 1,
                        store_interval: Duration::ZERO,
                    },
                    muc: crate::features::muc::MucConfig {
                        enabled: true,
                        domain: "rooms.kitchen.local".into(),
                        max_rooms: 10,
                        max_rooms_per_user: 2,
                        max_occupants: 30,
                        history_length: 40,
                    },
                    ..Default::default()
                },
                // On the c2s addresses, port 5443.
                http: HttpConfig {
                    enabled: true,
                    listen: vec![
                        "0.0.0.0:5443".parse().unwrap(),
                        "[::1]:5443".parse().unwrap()
                    ],
                    public_url: Some("https://chat.example.org".into()),
                },
                websocket: WebSocketConfig {
                    listen: vec!["127.0.0.1:5281".parse().unwrap()],
                    tls: false,
                },
                mqtt: MqttConfig {
                    enabled: true,
                    listen: vec!["0.0.0.0:1883".parse().unwrap()],
                    tls_listen: vec!["0.0.0.0:8883".parse().unwrap()],
                    connect_timeout: Duration::from_secs(5),
                    max_packet_bytes: 4096,
                    coalesce: Duration::from_millis(200),
                    max_keep_alive: 120,
                    map: vec![crate::net::mqtt::map::MapRule {
                        topic: "home/{name}/climate".into(),
                        json: Some("temperature".into()),
                        name: "temperature".into(),
                        unit: Some("°C".into()),
                    }],
                },
            }
        );
    }

    #[test]
    fn http_and_upload_are_checked() {
        let e = |s: &str| parse(s).unwrap_err().to_string();
        assert!(e("[http]\npublic_url = \"ftp://x\"").contains("http.public_url"));
        assert!(e("[http]\nport = 0").contains("http.port"));
        assert!(e("[upload]\nallowed_types = [\"images\"]").contains("upload.allowed_types"));
        assert!(e("[upload]\nmax_file_size = 0").contains("upload.max_file_size"));
        assert!(e("[upload]\nsize = 1").contains("size"));
        // No listener, no component.
        let c = parse("[http]\nenabled = false").unwrap();
        assert!(!c.modules.upload.enabled);
        let c = parse("[http]\nport = 8443\n[c2s]\nlisten = [\"127.0.0.1:5222\"]").unwrap();
        assert_eq!(c.http.listen, vec!["127.0.0.1:8443".parse().unwrap()]);
    }

    #[test]
    fn websocket_is_off_unless_listed_and_never_on_a_c2s_port() {
        let c = parse("").unwrap();
        assert_eq!(c.websocket.listen, Vec::<SocketAddr>::new());
        assert!(c.websocket.tls);
        assert_eq!(
            error(
                "[c2s]\nlisten = [\"127.0.0.1:5222\"]\n[websocket]\nlisten = [\"127.0.0.1:5222\"]\n"
            ),
            "/etc/hearth/hearth.toml: websocket.listen: 127.0.0.1:5222 is also a c2s listener; \
             one port cannot serve both"
        );
        assert!(error("[websocket]\nlisten = [\"nowhere\"]\n").contains("websocket.listen[0]"));
        let e = error("[websocket]\nport = 5281\n");
        assert!(e.contains("websocket.port"), "{e}");
    }

    #[test]
    fn stream_management_bounds() {
        let c = parse("domain = \"kitchen.local\"\n").unwrap();
        assert_eq!(c.stream_management, StreamManagementConfig::default());
        assert_eq!(c.stream_management.resume_timeout_secs, 3600);
        for bad in [
            "[stream_management]\nmax_unacked = 1",
            "[stream_management]\nresume_timeout_secs = -1",
            "[stream_management]\nresume = true",
        ] {
            let e = parse(&format!("domain = \"kitchen.local\"\n{bad}")).unwrap_err();
            assert!(e.to_string().contains("stream_management"), "{bad}: {e}");
        }
    }

    #[test]
    fn admins_are_accounts_of_this_server() {
        for bad in [
            r#"admins = ["alice@elsewhere.example"]"#,
            r#"admins = ["kitchen.local"]"#,
            r#"admins = ["alice@kitchen.local/phone"]"#,
            r#"admins = ["a b@kitchen.local"]"#,
            r#"admins = "alice@kitchen.local""#,
        ] {
            let e = parse(&format!("domain = \"kitchen.local\"\n{bad}")).unwrap_err();
            assert!(e.to_string().contains("admins"), "{bad}: {e}");
        }
        let c = parse("domain = \"kitchen.local\"\n").unwrap();
        assert!(c.admins.is_empty());
    }

    #[test]
    fn load_reads_the_file_and_names_a_missing_one() {
        let dir = std::env::temp_dir().join(format!("hearth-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("hearth.toml");
        std::fs::write(&file, "domain = \"den.local\"\ndata_dir = \"data\"\n").unwrap();
        let c = Config::load(Some(&file)).unwrap();
        assert_eq!(c.domain, "den.local");
        assert_eq!(c.data_dir, dir.join("data"));

        let missing = dir.join("nope.toml");
        let e = Config::load(Some(&missing)).unwrap_err();
        assert!(matches!(e.kind, ConfigErrorKind::Read(_)));
        assert!(
            e.to_string()
                .starts_with(&format!("{}: cannot read: ", missing.display())),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_key_top_level() {
        assert_eq!(
            error("domian = \"x.local\""),
            "/etc/hearth/hearth.toml: unknown key \"domian\" (expected one of `domain`, \
             `data_dir`, `threads`, `c2s`, `tls`, `auth`, `limits`, `allow_root`, `mdns`, `mdns_interfaces`, `federation`, `s2s`, `components`, `household`, `admins`, `registration`, `stream_management`, `archive`, `private_storage`, `vcard`, `contact`, `external_services`, `pep`, `push`, `http`, `upload`, `devices`, `websocket`, `muc`, `mqtt`)"
        );
    }

    #[test]
    fn storage_contact_and_external_services_are_validated() {
        let c = parse(
            "[private_storage]\nmax_item_bytes = 1000\n[vcard]\nmax_bytes = 2000\n\
             [contact]\nabuse = [\"mailto:abuse@x.org\", \"xmpp:abuse@x.org\"]\n\
             support = [\"https://x.org/help\"]\n\
             [[external_services]]\ntype = \"stun\"\nhost = \"192.0.2.1\"\n\
             [[external_services]]\ntype = \"turn\"\nhost = \"turn.x.org\"\nport = 3478\n\
             transport = \"udp\"\nsecret = \"s3cret\"\ncredentials_ttl_secs = 600\n",
        )
        .unwrap();
        let m = &c.modules;
        assert_eq!(m.private_storage.max_item_bytes, 1000);
        assert_eq!(m.vcard.max_bytes, 2000);
        assert_eq!(m.contact.lists.len(), 2);
        assert_eq!(m.contact.lists[0].0, "abuse");
        assert_eq!(m.contact.lists[1].0, "support");
        assert_eq!(m.external_services.len(), 2);
        assert_eq!(m.external_services[1].port, Some(3478));
        assert_eq!(m.external_services[1].credentials_ttl_secs, 600);
        assert_eq!(m.external_services[0].secret, None);
        let d = parse("").unwrap();
        assert_eq!(
            d.modules,
            crate::features::ModuleSettings {
                muc: crate::features::muc::MucConfig::for_domain(&d.domain),
                ..Default::default()
            }
        );
        for (bad, want) in [
            (
                "[contact]\nabuse = [\"abuse@x.org\"]\n",
                "contact.abuse: \"abuse@x.org\" is not a URI",
            ),
            (
                "[contact]\nspam = [\"mailto:a@x\"]\n",
                "unknown key \"contact.spam\"",
            ),
            (
                "[vcard]\nmax_bytes = 1\n",
                "vcard.max_bytes: must be between",
            ),
            (
                "[private_storage]\nmax_item_bytes = -5\n",
                "private_storage.max_item_bytes",
            ),
            (
                "[[external_services]]\ntype = \"turn\"\nhost = \"t\"\nport = 70000\n",
                "external_services[0].port",
            ),
            (
                "[[external_services]]\ntype = \"turn\"\nhost = \"t\"\ntransport = \"sctp\"\n",
                "external_services[0].transport",
            ),
            (
                "[[external_services]]\ntype = \"turn\"\nhost = \"t\"\nsecret = \"\"\n",
                "external_services[0].secret",
            ),
            (
                "[[external_services]]\ntype = \"t u\"\nhost = \"t\"\n",
                "external_services[0].type",
            ),
            (
                "[[external_services]]\ntype = \"turn\"\nhost = \"\"\n",
                "external_services[0].host",
            ),
            (
                "[[external_services]]\ntype = \"turn\"\nhost = \"t\"\ncredentials_ttl_secs = 1\n",
                "credentials_ttl_secs",
            ),
            ("[[external_services]]\nhost = \"t\"\n", "type"),
        ] {
            let e = error(bad);
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn archive_section_is_validated() {
        let c =
            parse("[archive]\nenabled = false\ndefault_policy = \"roster\"\nretention_days = 0\n")
                .unwrap();
        assert!(!c.archive.enabled);
        assert_eq!(
            c.archive.default_policy,
            crate::features::mam::Policy::Roster
        );
        assert_eq!(c.archive.retention_days, 0);
        let d = parse("").unwrap();
        assert_eq!(d.archive, crate::features::mam::ArchiveConfig::default());
        let e = error("[archive]\ndefault_policy = \"sometimes\"\n");
        assert!(e.contains("archive.default_policy: must be"), "{e}");
        let e = error("[archive]\nretention_days = -1\n");
        assert!(e.contains("archive.retention_days"), "{e}");
        let e = error("[archive]\nretention = 3\n");
        assert!(e.contains("unknown key \"archive.retention\""), "{e}");
    }

    #[test]
    fn unknown_key_nested() {
        let e = error("[c2s]\nlisen = [\"[::]:5222\"]\n");
        assert!(
            e.starts_with(
                "/etc/hearth/hearth.toml: unknown key \"c2s.lisen\" (expected one of `listen`"
            ),
            "{e}"
        );
        let e = parse("[auth.extra]\nx = 1\n").unwrap_err();
        assert!(
            matches!(&e.kind, ConfigErrorKind::UnknownKey { key, .. } if key == "auth.extra"),
            "{e}"
        );
        let e = error("[unknown]\n");
        assert!(e.contains("unknown key \"unknown\""), "{e}");
    }

    #[test]
    fn wrong_type() {
        assert_eq!(
            error("threads = \"four\""),
            "/etc/hearth/hearth.toml: threads: invalid type: string \"four\", expected an integer"
        );
        assert_eq!(
            error("[c2s]\nlisten = \"[::]:5222\""),
            "/etc/hearth/hearth.toml: c2s.listen: invalid type: string \"[::]:5222\", \
             expected an array of strings"
        );
        assert_eq!(
            error("[c2s]\nlisten = [5222]"),
            "/etc/hearth/hearth.toml: c2s.listen[0]: invalid type: integer `5222`, expected a string"
        );
        assert_eq!(
            error("[auth]\nscram_keys = \"yes\""),
            "/etc/hearth/hearth.toml: auth.scram_keys: invalid type: string \"yes\", expected a boolean"
        );
        assert_eq!(
            error("c2s = 5"),
            "/etc/hearth/hearth.toml: c2s: invalid type: integer `5`, expected a table ([c2s])"
        );
    }

    #[test]
    fn out_of_range() {
        assert_eq!(
            error("[c2s]\nmax_stanza_bytes = 12"),
            "/etc/hearth/hearth.toml: c2s.max_stanza_bytes: must be between 10000 and 16777216 (got 12)"
        );
        assert_eq!(
            error("threads = -1"),
            "/etc/hearth/hearth.toml: threads: must be between 1 and 64 (got -1)"
        );
        assert_eq!(
            error("[c2s]\nnegotiation_timeout_secs = 0"),
            "/etc/hearth/hearth.toml: c2s.negotiation_timeout_secs: must be between 1 and 600 (got 0)"
        );
        assert_eq!(
            error("[auth]\nmax_failures_before_delay = 1000"),
            "/etc/hearth/hearth.toml: auth.max_failures_before_delay: must be between 0 and 100 (got 1000)"
        );
        assert_eq!(
            error("[c2s]\nmax_stanza_bytes = 20000\nmax_stanza_bytes_unauthenticated = 30000"),
            "/etc/hearth/hearth.toml: c2s.max_stanza_bytes_unauthenticated: must not exceed \
             c2s.max_stanza_bytes (20000) (got 30000)"
        );
    }

    #[test]
    fn small_stanza_limit_lowers_the_unauthenticated_default() {
        let c = parse("[c2s]\nmax_stanza_bytes = 10000").unwrap();
        assert_eq!(c.c2s.max_stanza_bytes_unauthenticated, 10000);
    }

    #[test]
    fn bad_address() {
        assert_eq!(
            error("[c2s]\nlisten = [\"[::]:5222\", \"localhost:5222\"]"),
            "/etc/hearth/hearth.toml: c2s.listen[1]: \"localhost:5222\" is not an IP address \
             and port (e.g. \"[::]:5222\" or \"0.0.0.0:5222\")"
        );
        let e = error("[c2s]\ndirect_tls_listen = [\"0.0.0.0:5223\", \"0.0.0.0:5223\"]");
        assert!(
            e.ends_with("c2s.direct_tls_listen[1]: 0.0.0.0:5223 is listed twice"),
            "{e}"
        );
        let e = error("[c2s]\nlisten = [\"0.0.0.0:5222\"]\ndirect_tls_listen = [\"0.0.0.0:5222\"]");
        assert!(
            e.contains("c2s.direct_tls_listen: 0.0.0.0:5222 is also in c2s.listen"),
            "{e}"
        );
        let e = error("[c2s]\nlisten = []\ndirect_tls_listen = []");
        assert!(e.contains("c2s.listen: no listeners"), "{e}");
    }

    #[test]
    fn cert_without_key() {
        assert_eq!(
            error("[tls]\ncert = \"/etc/le/fullchain.pem\""),
            "/etc/hearth/hearth.toml: tls.key: missing: tls.cert is set, and tls.cert and \
             tls.key must be given together"
        );
        let e = error("[tls]\nkey = \"/etc/le/privkey.pem\"");
        assert!(e.contains("tls.cert: missing: tls.key is set"), "{e}");
        let e = error("[tls]\ncert = \"\"\nkey = \"k.pem\"");
        assert!(e.ends_with("tls.cert: must not be empty"), "{e}");
    }

    #[test]
    fn bad_domain() {
        let e = error("domain = \"kitchen_pi.local\"");
        assert!(
            e.starts_with(
                "/etc/hearth/hearth.toml: domain: \"kitchen_pi.local\" is not a valid domain"
            ),
            "{e}"
        );
        for bad in ["", "a..b", "-a.local"] {
            let e = error(&format!("domain = \"{bad}\""));
            assert!(
                e.contains(&format!("domain: \"{bad}\" is not a valid domain: ")),
                "{e}"
            );
        }
    }

    #[test]
    fn domain_forms() {
        assert_eq!(normalize_domain("EXAMPLE.org.").unwrap(), "example.org");
        assert_eq!(normalize_domain("192.168.1.5").unwrap(), "192.168.1.5");
        assert_eq!(normalize_domain("[::1]").unwrap(), "[::1]");
        assert!(normalize_domain("[not-v6]").is_err());
        assert_eq!(normalize_domain("Küche.example").unwrap(), "küche.example");
        assert_eq!(
            normalize_domain("xn--kche-0ra.example").unwrap(),
            "küche.example"
        );
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let e = parse("domain = \"a.local\"\nthreads = = 2\n").unwrap_err();
        match &e.kind {
            ConfigErrorKind::Syntax { line, column, .. } => {
                assert_eq!((*line, *column), (2, 11), "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            e.to_string()
                .starts_with("/etc/hearth/hearth.toml: line 2, column 11: "),
            "{e}"
        );
        // Duplicate keys are a TOML error, not silently "last one wins".
        let e = error("threads = 1\nthreads = 2\n");
        assert!(e.contains("line 2"), "{e}");
    }
}
