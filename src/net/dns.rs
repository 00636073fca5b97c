//! DNS for server-to-server federation: where a remote domain's XMPP server listens
//! (RFC 6120 §3.2, XEP-0368) and the addresses of those hosts.
//!
//! [`Resolver::s2s_candidates`] looks up `_xmpps-server._tcp.<domain>` (direct TLS,
//! XEP-0368) and `_xmpp-server._tcp.<domain>` (STARTTLS, RFC 6120 §3.2.1) together, orders
//! both services' records as one list by priority and weight (RFC 2782), and falls back
//! to the domain itself on port 5269 when there are no SRV records (RFC 6120 §3.2.2). The
//! caller then resolves each candidate with [`Resolver::addrs`] (or [`Resolver::ips`]),
//! only when the one before it could not be reached.
//!
//! A stub resolver: it asks the recursive name servers of `/etc/resolv.conf` (or those
//! configured) and caches nothing, since they cache. It speaks UDP with EDNS0 (RFC 6891)
//! and TCP when an answer is truncated (RFC 7766 §5), on smol's own sockets; messages are
//! encoded and decoded by `simple-dns`. Whoever runs a remote domain controls what its
//! DNS says, and anyone on the path can send us datagrams, so every answer is checked
//! (id, question, sender), every wait has a deadline, and what is kept is bounded.
//!
//! The decisions are pure functions ([`rfc2782_order`], [`plan_candidates`], and the
//! checks of a received message), tested without a network; the socket code around them
//! is tested against a fake name server here and against dnsmasq in `tests/dns_dnsmasq.rs`.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use simple_dns::rdata::{OPT, RData};
use simple_dns::{CLASS, Name, OPCODE, Packet, PacketFlag, QCLASS, QTYPE, Question, RCODE, TYPE};
use smol::Timer;
use smol::future::{self, FutureExt};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpStream, UdpSocket};

/// The port of the fallback process (RFC 6120 §3.2.2, §14.7: `xmpp-server`).
pub const XMPP_SERVER_PORT: u16 = 5269;

/// At most this many SRV records per service and addresses per host are kept: enough
/// for any real deployment, and a stranger's zone cannot make us hold or try more.
pub const MAX_RECORDS: usize = 32;

/// Where the system's name servers are listed.
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// glibc's defaults and limits for resolv.conf (resolv.conf(5): `timeout:n` is capped at
/// 30 s, `attempts:n` at 5, and at most three `nameserver` lines are used).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_ATTEMPTS: u32 = 2;
const MAX_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_ATTEMPTS: u32 = 5;
const MAX_SERVERS: usize = 3;

/// The UDP payload size advertised with EDNS0: the DNS Flag Day 2020 value, which fits
/// an IPv6 packet on any path without fragmentation (fragments are what spoofers use).
const EDNS_UDP_SIZE: usize = 1232;

/// CNAMEs followed within one answer; a loop in a hostile answer ends here.
const MAX_CNAME_HOPS: usize = 8;

/// Longest domain name in text form, without the trailing dot (RFC 1035 §2.3.4: 255
/// octets on the wire).
const MAX_NAME_BYTES: usize = 253;

/// Longest label (RFC 1035 §2.3.4).
const MAX_LABEL_BYTES: usize = 63;

/// Header bits (RFC 1035 §4.1.1).
const FLAG_QR: u16 = 0x8000;
const FLAG_TC: u16 = 0x0200;

/// Why a lookup gave no usable answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsError {
    /// Not a domain name we will ask about: an empty label, a label over 63 octets, a
    /// name over 253, a character other than letters, digits, '-' and '_'.
    InvalidName(String),
    /// No name server answered within the timeout, after every attempt.
    Timeout,
    /// A socket error talking to the name servers (e.g. connection refused).
    Io(std::io::ErrorKind),
    /// The name servers answered with this error code (RFC 1035 §4.1.1: 2 is SERVFAIL,
    /// 5 REFUSED…).
    Server(u16),
    /// An answer over TCP that was not one (no parse, another id or question).
    Malformed,
    /// The domain's only SRV record has the target "." (RFC 2782; RFC 6120 §3.2.1 step 3):
    /// the service is decidedly not available there, and no fallback is allowed.
    NotOffered,
    /// The host exists but has no usable IPv4 or IPv6 address, or does not exist.
    NoAddresses(String),
    /// /etc/resolv.conf could not be read.
    Config(String),
    /// The system's random source failed, so no query id can be drawn.
    Random,
}

impl DnsError {
    /// True when a name server did answer, only not usefully: RFC 6120 §3.2.1 then has
    /// the fallback process tried.
    fn got_answer(&self) -> bool {
        matches!(self, DnsError::Server(_) | DnsError::Malformed)
    }
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsError::InvalidName(n) => write!(f, "{n:?} is not a valid domain name"),
            DnsError::Timeout => f.write_str("no name server answered in time"),
            DnsError::Io(kind) => write!(f, "talking to the name servers failed: {kind}"),
            DnsError::Server(code) => {
                write!(f, "the name server answered {} ({code})", rcode_name(*code))
            }
            DnsError::Malformed => f.write_str("the name server's answer could not be read"),
            DnsError::NotOffered => {
                f.write_str("the domain offers no XMPP server service (SRV target \".\")")
            }
            DnsError::NoAddresses(host) => write!(f, "{host} has no IPv4 or IPv6 address"),
            DnsError::Config(e) => write!(f, "reading the resolver configuration: {e}"),
            DnsError::Random => f.write_str("the system's random source failed"),
        }
    }
}

impl std::error::Error for DnsError {}

impl From<std::io::Error> for DnsError {
    fn from(e: std::io::Error) -> DnsError {
        DnsError::Io(e.kind())
    }
}

/// RFC 1035 §4.1.1 and RFC 6895 §2.3 names of the codes a resolver sends.
fn rcode_name(code: u16) -> &'static str {
    match code {
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        _ => "an error",
    }
}

/// One SRV record (RFC 2782), its target as a lowercase name without the trailing dot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// Empty for the root, ".".
    pub target: String,
}

/// What an SRV lookup found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Srv {
    /// The records, in the answer's order (not yet ordered), at most [`MAX_RECORDS`];
    /// none has the target "." or port 0.
    Records(Vec<SrvRecord>),
    /// There are none: the name does not exist (NXDOMAIN) or has no SRV records (NODATA).
    NoRecords,
    /// The only record's target is "." (RFC 2782): decidedly not available.
    NotOffered,
}

/// A host and port to try for a remote domain, in the order [`Resolver::s2s_candidates`]
/// gives them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The SRV target (or the domain itself, in the fallback), for [`Resolver::ips`].
    pub host: String,
    pub port: u16,
    /// From an `_xmpps-server` record: TLS from the first byte, SNI set to the remote
    /// domain (XEP-0368 §3); otherwise STARTTLS.
    pub direct_tls: bool,
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = if self.direct_tls {
            "direct TLS"
        } else {
            "STARTTLS"
        };
        write!(f, "{}:{} ({how})", self.host, self.port)
    }
}

/// A stub resolver: the recursive name servers to ask and how patiently.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolver {
    /// Asked in order; the next one when one fails (glibc's order without `rotate`).
    servers: Vec<SocketAddr>,
    /// How long one query to one server may take (UDP, then TCP if truncated, each).
    timeout: Duration,
    /// Rounds over all the servers before giving up.
    attempts: u32,
}

impl Resolver {
    /// The system's resolver, from /etc/resolv.conf, read once here. A missing file means
    /// a name server on this host, as glibc assumes.
    pub fn system() -> Result<Resolver, DnsError> {
        match std::fs::read_to_string(RESOLV_CONF) {
            Ok(text) => Ok(Resolver::from_resolv_conf(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(Resolver::from_resolv_conf(""))
            }
            Err(e) => Err(DnsError::Config(format!("{RESOLV_CONF}: {e}"))),
        }
    }

    /// From the text of a resolv.conf(5): the `nameserver` lines (IPv4 or IPv6, at most
    /// three, port 53) and `options timeout:n attempts:n` within glibc's bounds; the rest
    /// (`search`, `ndots`, `rotate`…) does not apply to the fully qualified names of
    /// federation. With no usable `nameserver`, 127.0.0.1 as glibc does.
    pub fn from_resolv_conf(text: &str) -> Resolver {
        let mut servers = Vec::new();
        let mut resolver = Resolver::with_servers(Vec::new());
        for line in text.lines() {
            // Comments start with '#' or ';' (resolv.conf(5)); neither occurs in an address.
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => match words.next().and_then(nameserver_addr) {
                    Some(addr) if servers.len() < MAX_SERVERS => servers.push(addr),
                    Some(addr) => log::debug!("dns: resolv.conf: {addr} is past the third"),
                    None => log::warn!("dns: resolv.conf: unusable line {line:?}"),
                },
                Some("options") => {
                    for option in words {
                        let (key, value) = option.split_once(':').unwrap_or((option, ""));
                        let Ok(n) = value.parse::<u32>() else {
                            continue;
                        };
                        match key {
                            "timeout" => {
                                resolver.timeout = Duration::from_secs(n.into())
                                    .clamp(Duration::from_secs(1), MAX_TIMEOUT);
                            }
                            "attempts" => resolver.attempts = n.clamp(1, MAX_ATTEMPTS),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if !servers.is_empty() {
            resolver.servers = servers;
        }
        resolver
    }

    /// These name servers (a configuration's `[s2s] resolvers`), with the default timeout
    /// and attempts; none means 127.0.0.1:53.
    pub fn with_servers(servers: Vec<SocketAddr>) -> Resolver {
        let servers = if servers.is_empty() {
            vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 53))]
        } else {
            servers
        };
        Resolver {
            servers,
            timeout: DEFAULT_TIMEOUT,
            attempts: DEFAULT_ATTEMPTS,
        }
    }

    /// The same servers, with another per-query timeout and number of rounds (at least
    /// one, at most five; the timeout at most 30 s).
    pub fn with_timeout(mut self, timeout: Duration, attempts: u32) -> Resolver {
        self.timeout = timeout.min(MAX_TIMEOUT);
        self.attempts = attempts.clamp(1, MAX_ATTEMPTS);
        self
    }

    /// The name servers asked, in order.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// The SRV records at `name` (e.g. `_xmpp-server._tcp.example.com`).
    pub async fn srv(&self, name: &str) -> Result<Srv, DnsError> {
        let name = normalize_name(name)?;
        Ok(srv_found(self.query(&name, TYPE::SRV).await?))
    }

    /// The addresses of `host`, at most [`MAX_RECORDS`], never empty: its AAAA and A
    /// records, asked for at once, interleaved starting with IPv6 (RFC 8305 §4), so that
    /// a host whose IPv6 is broken (common behind home routers) reaches IPv4 on the
    /// second try rather than after every IPv6 address has timed out. An IP literal
    /// (`192.0.2.1`, `::1`, `[::1]` as in a JID) is returned as it is, without a query.
    pub async fn ips(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        if let Some(ip) = ip_literal(host) {
            return Ok(vec![ip]);
        }
        let host = normalize_name(host)?;
        let (v6, v4) = future::zip(self.query(&host, TYPE::AAAA), self.query(&host, TYPE::A)).await;
        let mut error = None;
        let mut family = |result: Result<Vec<Record>, DnsError>| match result {
            Ok(records) => records
                .into_iter()
                .filter_map(|r| match r {
                    // Nothing listens on these: a zone that says so is wrong or hostile.
                    Record::Addr(ip) if !ip.is_unspecified() && !ip.is_multicast() => Some(ip),
                    _ => None,
                })
                .filter(|ip| *ip != IpAddr::V4(Ipv4Addr::BROADCAST))
                .collect(),
            Err(e) => {
                error.get_or_insert(e);
                Vec::new()
            }
        };
        let (v6, v4) = (family(v6), family(v4));
        let mut ips = interleave(v6, v4);
        ips.truncate(MAX_RECORDS);
        match (ips.is_empty(), error) {
            (false, _) => Ok(ips),
            // One family failed and the other has none: the failure is the news.
            (true, Some(e)) => Err(e),
            (true, None) => Err(DnsError::NoAddresses(host)),
        }
    }

    /// The addresses of a candidate with its port, for connecting.
    pub async fn addrs(&self, candidate: &Candidate) -> Result<Vec<SocketAddr>, DnsError> {
        let ips = self.ips(&candidate.host).await?;
        Ok(ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, candidate.port))
            .collect())
    }

    /// Where to connect for `domain`'s XMPP server, in the order to try (RFC 6120 §3.2,
    /// XEP-0368); see [`plan_candidates`] for the rules. An IP literal domain is its own
    /// only candidate, STARTTLS on 5269. Internationalized domains are looked up by their
    /// A-labels.
    pub async fn s2s_candidates(&self, domain: &str) -> Result<Vec<Candidate>, DnsError> {
        if let Some(ip) = ip_literal(domain) {
            return Ok(vec![Candidate {
                host: ip.to_string(),
                port: XMPP_SERVER_PORT,
                direct_tls: false,
            }]);
        }
        let domain = normalize_name(domain)?;
        let (xmpps, xmpp) = future::zip(
            self.srv(&format!("_xmpps-server._tcp.{domain}")),
            self.srv(&format!("_xmpp-server._tcp.{domain}")),
        )
        .await;
        log::debug!("dns: SRV for {domain}: xmpps-server {xmpps:?}, xmpp-server {xmpp:?}");
        plan_candidates(&domain, xmpps, xmpp, system_random)
    }

    /// One question to the servers in turn, `attempts` rounds: the records of type
    /// `qtype` at `name` (after the CNAMEs the answer gives), empty for NXDOMAIN or NODATA.
    async fn query(&self, name: &str, qtype: TYPE) -> Result<Vec<Record>, DnsError> {
        let qname = Name::new(name).map_err(|_| DnsError::InvalidName(name.to_owned()))?;
        let mut last = DnsError::Timeout;
        for _ in 0..self.attempts {
            for &server in &self.servers {
                // A fresh id and source port for every try (RFC 5452 §9.2): a try that
                // timed out may have been watched.
                let id = random_id()?;
                let query = build_query(id, &qname, qtype)?;
                match self.exchange(server, &query, id, &qname, qtype).await {
                    Ok(records) => return Ok(records),
                    Err(e) => {
                        log::debug!("dns: {name} {qtype:?} at {server}: {e}");
                        // An answer (SERVFAIL…) says more than a silence after it.
                        if e.got_answer() || !last.got_answer() {
                            last = e;
                        }
                    }
                }
            }
        }
        Err(last)
    }

    /// One query to one server: over UDP, and again over TCP if the answer was truncated.
    async fn exchange(
        &self,
        server: SocketAddr,
        query: &[u8],
        id: u16,
        qname: &Name<'_>,
        qtype: TYPE,
    ) -> Result<Vec<Record>, DnsError> {
        match within(self.timeout, udp_exchange(server, query, id, qname, qtype)).await? {
            Verdict::Answer(result) => result,
            Verdict::Truncated | Verdict::NotOurs => {
                log::debug!("dns: {qname} {qtype:?} truncated, asking {server} over TCP");
                let message = within(self.timeout, tcp_exchange(server, query)).await?;
                match judge(&message, false, id, qname, qtype) {
                    Verdict::Answer(result) => result,
                    Verdict::Truncated | Verdict::NotOurs => Err(DnsError::Malformed),
                }
            }
        }
    }
}

/// RFC 2782's order: by priority, lowest first; within a priority, repeatedly pick one
/// at random with probability proportional to its weight, the weight-0 ones placed
/// first so that they are picked only when the draw is 0 (all weight 0: answer order).
/// `random(n)` returns a number in `0..=n` (other values are reduced modulo `n + 1`).
pub fn rfc2782_order<T>(
    mut items: Vec<T>,
    priority_weight: impl Fn(&T) -> (u16, u16),
    mut random: impl FnMut(u64) -> u64,
) -> Vec<T> {
    // Stable sorts: equal keys keep the answer's order, which tests can rely on.
    items.sort_by_key(|t| priority_weight(t).0);
    let mut ordered = Vec::with_capacity(items.len());
    while let Some(first) = items.first() {
        let priority = priority_weight(first).0;
        let end = items
            .iter()
            .position(|t| priority_weight(t).0 != priority)
            .unwrap_or(items.len());
        let mut level: Vec<T> = items.drain(..end).collect();
        level.sort_by_key(|t| priority_weight(t).1 != 0);
        while !level.is_empty() {
            let total: u64 = level.iter().map(|t| u64::from(priority_weight(t).1)).sum();
            let draw = random(total) % (total + 1);
            let mut running = 0;
            let pick = level
                .iter()
                .position(|t| {
                    running += u64::from(priority_weight(t).1);
                    running >= draw
                })
                .unwrap_or(0);
            ordered.push(level.remove(pick));
        }
    }
    ordered
}

/// The candidates for `domain` from its two SRV lookups (`domain` already normalized):
///
/// - the records of both services are ordered together (XEP-0368 §3 rule 1: the
///   domain's operator chooses between direct TLS and STARTTLS through priorities);
/// - a service whose only record is "." is not offered (RFC 2782); if neither service
///   has records, then no fallback: [`DnsError::NotOffered`] (RFC 6120 §3.2.1 step 3;
///   XEP-0368 §5 for `_xmpps-server`);
/// - neither has records, the name servers answered (no records, NXDOMAIN, or an error
///   such as SERVFAIL, which is how a recursive resolver reports that the domain's own
///   servers did not answer): the fallback, the domain on 5269 with STARTTLS (RFC 6120
///   §3.2.1 "If the initiating entity does not receive a response…", §3.2.2);
/// - neither has records and our own name servers could not be reached: that error,
///   since an A/AAAA query through them would fail the same way.
pub fn plan_candidates(
    domain: &str,
    xmpps: Result<Srv, DnsError>,
    xmpp: Result<Srv, DnsError>,
    random: impl FnMut(u64) -> u64,
) -> Result<Vec<Candidate>, DnsError> {
    let mut records = Vec::new();
    let mut not_offered = false;
    let mut unreachable = None;
    for (result, direct_tls) in [(xmpps, true), (xmpp, false)] {
        match result {
            Ok(Srv::Records(found)) => {
                records.extend(found.into_iter().take(MAX_RECORDS).map(|r| (r, direct_tls)));
            }
            Ok(Srv::NotOffered) => not_offered = true,
            Ok(Srv::NoRecords) => {}
            Err(e) if e.got_answer() => {}
            Err(e) => {
                unreachable.get_or_insert(e);
            }
        }
    }
    if !records.is_empty() {
        let ordered = rfc2782_order(records, |(r, _)| (r.priority, r.weight), random);
        return Ok(ordered
            .into_iter()
            .map(|(r, direct_tls)| Candidate {
                host: r.target,
                port: r.port,
                direct_tls,
            })
            .collect());
    }
    if not_offered {
        return Err(DnsError::NotOffered);
    }
    if let Some(e) = unreachable {
        return Err(e);
    }
    Ok(vec![Candidate {
        host: domain.to_owned(),
        port: XMPP_SERVER_PORT,
        direct_tls: false,
    }])
}

/// `name` as queries use it: A-labels for an internationalized name (RFC 5890), ASCII
/// lowercase, without a trailing dot; labels of 1 to 63 letters, digits, '-' or '_' (SRV
/// owner names start with '_'), 253 octets at most.
pub fn normalize_name(name: &str) -> Result<String, DnsError> {
    let invalid = || DnsError::InvalidName(name.chars().take(MAX_NAME_BYTES).collect());
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    let ascii = if trimmed.is_ascii() {
        trimmed.to_ascii_lowercase()
    } else if trimmed.len() <= 4 * MAX_NAME_BYTES {
        idna::domain_to_ascii(trimmed).map_err(|_| invalid())?
    } else {
        return Err(invalid());
    };
    let labels_ok = ascii.split('.').all(|label| label_ok(label.as_bytes()));
    if ascii.len() > MAX_NAME_BYTES || !labels_ok {
        return Err(invalid());
    }
    Ok(ascii)
}

fn label_ok(label: &[u8]) -> bool {
    (1..=MAX_LABEL_BYTES).contains(&label.len())
        && label
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
}

/// A name from a message as text (empty for the root), if it passes [`normalize_name`]'s
/// rules; anything else (a label with a dot or a control character in it) is refused
/// rather than escaped, since it can name no host we would connect to.
fn wire_name(name: &Name<'_>) -> Option<String> {
    let mut text = String::new();
    for label in name.as_bytes() {
        if !label_ok(label) {
            return None;
        }
        if !text.is_empty() {
            text.push('.');
        }
        text.extend(label.iter().map(|b| char::from(b.to_ascii_lowercase())));
    }
    (text.len() <= MAX_NAME_BYTES).then_some(text)
}

/// `192.0.2.1`, `2001:db8::1` or a JID's bracketed IPv6 literal `[2001:db8::1]`
/// (RFC 7622 §3.2).
fn ip_literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// A `nameserver` address: IPv4, IPv6, or link-local IPv6 with a numeric scope
/// (`fe80::1%2`). A scope by interface name would need a system call to turn into a
/// number; such a line is skipped.
fn nameserver_addr(word: &str) -> Option<SocketAddr> {
    if let Ok(ip) = word.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 53));
    }
    let (ip, scope) = word.split_once('%')?;
    Some(SocketAddr::V6(SocketAddrV6::new(
        ip.parse().ok()?,
        53,
        0,
        scope.parse().ok()?,
    )))
}

fn interleave(v6: Vec<IpAddr>, v4: Vec<IpAddr>) -> Vec<IpAddr> {
    let mut out = Vec::with_capacity(v6.len() + v4.len());
    let (mut v6, mut v4) = (v6.into_iter(), v4.into_iter());
    loop {
        match (v6.next(), v4.next()) {
            (None, None) => return out,
            (a, b) => out.extend(a.into_iter().chain(b)),
        }
    }
}

/// A number in `0..=n` from the system's random source, for the weighted order; if that
/// fails, 0 (the answer's order), which is still a correct order.
fn system_random(n: u64) -> u64 {
    getrandom::u64()
        .map(|r| r % (n.saturating_add(1)))
        .unwrap_or(0)
}

fn random_id() -> Result<u16, DnsError> {
    let mut bytes = [0u8; 2];
    getrandom::fill(&mut bytes).map_err(|_| DnsError::Random)?;
    Ok(u16::from_be_bytes(bytes))
}

/// A record of the type asked for, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Record {
    Srv(SrvRecord),
    Addr(IpAddr),
}

/// The SRV lookup's result from the records of its answer.
fn srv_found(found: Vec<Record>) -> Srv {
    let mut records = Vec::new();
    let mut root_seen = false;
    for record in found {
        match record {
            Record::Srv(r) if r.target.is_empty() => root_seen = true,
            // Port 0 cannot be connected to: as good as absent.
            Record::Srv(r) if r.port != 0 => records.push(r),
            _ => {}
        }
    }
    // RFC 2782 speaks of exactly one record with target "."; more than one of them, or
    // "." beside real targets (then ignored), is a zone error read the same way.
    match (records.is_empty(), root_seen) {
        (false, _) => Srv::Records(records),
        (true, true) => Srv::NotOffered,
        (true, false) => Srv::NoRecords,
    }
}

/// A recursive query (RD) for `qname`, with an EDNS0 OPT record (RFC 6891 §6).
fn build_query(id: u16, qname: &Name<'_>, qtype: TYPE) -> Result<Vec<u8>, DnsError> {
    let mut packet = Packet::new_query(id);
    packet.set_flags(PacketFlag::RECURSION_DESIRED);
    packet.questions.push(Question::new(
        qname.clone(),
        QTYPE::TYPE(qtype),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    *packet.opt_mut() = Some(OPT {
        opt_codes: Vec::new(),
        udp_packet_size: EDNS_UDP_SIZE as u16,
        version: 0,
    });
    packet
        .build_bytes_vec()
        .map_err(|_| DnsError::InvalidName(qname.to_string()))
}

/// What a received message is to the query `id` for (`qname`, `qtype`).
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Not the answer: another id, not a response, another question, not a DNS message.
    /// Ignored (RFC 5452 §9.1); the real answer may still come.
    NotOurs,
    /// The answer, cut short (TC, RFC 1035 §4.1.1, or longer than we asked for): ask
    /// again over TCP.
    Truncated,
    Answer(Result<Vec<Record>, DnsError>),
}

/// Checks a received message against the query. `cut`: it filled the receive buffer,
/// so the kernel may have dropped its end.
fn judge(msg: &[u8], cut: bool, id: u16, qname: &Name<'_>, qtype: TYPE) -> Verdict {
    let Some(header) = msg.get(..12) else {
        return Verdict::NotOurs;
    };
    let word = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    if word(0) != id || word(2) & FLAG_QR == 0 {
        return Verdict::NotOurs;
    }
    // Before parsing, which could fail on a cut message: a spoofer who guessed the id
    // only sends us to TCP, where it cannot follow.
    if cut || word(2) & FLAG_TC != 0 {
        return Verdict::Truncated;
    }
    // simple-dns reserves room for as many records as the header claims; no record is
    // shorter than 11 octets (a pointer or root name, type, class, TTL, length), no
    // question than 5, so a header claiming more than fit is refused before it can make
    // us allocate megabytes for a 1 kB datagram.
    let claimed = 5 * usize::from(word(4))
        + 11 * (usize::from(word(6)) + usize::from(word(8)) + usize::from(word(10)));
    if claimed > msg.len() - 12 {
        return Verdict::NotOurs;
    }
    let Ok(packet) = Packet::parse(msg) else {
        return Verdict::NotOurs;
    };
    let ours = match packet.questions.as_slice() {
        [q] => {
            q.qname == *qname
                && q.qtype == QTYPE::TYPE(qtype)
                && q.qclass == QCLASS::CLASS(CLASS::IN)
                && !q.unicast_response
        }
        _ => false,
    };
    if !ours || packet.opcode() != OPCODE::StandardQuery {
        return Verdict::NotOurs;
    }
    Verdict::Answer(answers(&packet, qname, qtype))
}

/// The records of the answer: of type `qtype` and class IN, owned by `qname` or by the
/// end of the CNAME chain the answer section gives from it (RFC 1034 §3.6.2; a chain
/// that leaves the answer is not followed further), at most [`MAX_RECORDS`].
fn answers(packet: &Packet<'_>, qname: &Name<'_>, qtype: TYPE) -> Result<Vec<Record>, DnsError> {
    match packet.rcode() {
        RCODE::NoError => {}
        RCODE::NameError => return Ok(Vec::new()),
        other => return Err(DnsError::Server(other as u16)),
    }
    let mut owner = qname.clone();
    for _ in 0..MAX_CNAME_HOPS {
        let alias = packet.answers.iter().find_map(|rr| match &rr.rdata {
            RData::CNAME(cname) if rr.name == owner && rr.class == CLASS::IN => {
                Some(cname.0.clone())
            }
            _ => None,
        });
        match alias {
            Some(target) => owner = target,
            None => break,
        }
    }
    let mut found = Vec::new();
    for rr in packet
        .answers
        .iter()
        .filter(|rr| rr.name == owner && rr.class == CLASS::IN)
    {
        let record = match (&rr.rdata, qtype) {
            (RData::A(a), TYPE::A) => Record::Addr(IpAddr::V4(Ipv4Addr::from(a.address))),
            (RData::AAAA(a), TYPE::AAAA) => Record::Addr(IpAddr::V6(Ipv6Addr::from(a.address))),
            (RData::SRV(srv), TYPE::SRV) => match wire_name(&srv.target) {
                Some(target) => Record::Srv(SrvRecord {
                    priority: srv.priority,
                    weight: srv.weight,
                    port: srv.port,
                    target,
                }),
                None => {
                    log::debug!(
                        "dns: SRV target {:?} is not a host name",
                        srv.target.to_string()
                    );
                    continue;
                }
            },
            _ => continue,
        };
        if found.len() == MAX_RECORDS {
            log::debug!("dns: {qname} {qtype:?}: keeping the first {MAX_RECORDS} records");
            break;
        }
        found.push(record);
    }
    Ok(found)
}

/// `fut`, or [`DnsError::Timeout`] after `limit`.
async fn within<T>(
    limit: Duration,
    fut: impl Future<Output = Result<T, DnsError>>,
) -> Result<T, DnsError> {
    fut.or(async {
        Timer::after(limit).await;
        Err(DnsError::Timeout)
    })
    .await
}

/// Sends the query from a new socket on a random port (the kernel's choice, RFC 5452
/// §9.2) and waits for the answer. The socket is connected, so the kernel drops datagrams
/// from any other address and reports an ICMP "port unreachable" as an error at once.
async fn udp_exchange(
    server: SocketAddr,
    query: &[u8],
    id: u16,
    qname: &Name<'_>,
    qtype: TYPE,
) -> Result<Verdict, DnsError> {
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    socket.send(query).await?;
    // One octet more than advertised: a datagram that fills it was longer than asked for.
    let mut buf = vec![0u8; EDNS_UDP_SIZE + 1];
    loop {
        let n = socket.recv(&mut buf).await?;
        let msg = buf.get(..n).unwrap_or_default();
        match judge(msg, n == buf.len(), id, qname, qtype) {
            Verdict::NotOurs => {
                log::debug!("dns: ignoring a datagram from {server} that is not the answer")
            }
            verdict => return Ok(verdict),
        }
    }
}

/// The query over TCP (RFC 1035 §4.2.2, RFC 7766): a two-octet length, then the message;
/// the answer's length prefix bounds what is read to 64 KiB.
async fn tcp_exchange(server: SocketAddr, query: &[u8]) -> Result<Vec<u8>, DnsError> {
    let len = u16::try_from(query.len()).map_err(|_| DnsError::Malformed)?;
    let mut stream = TcpStream::connect(server).await?;
    let mut framed = Vec::with_capacity(2 + query.len());
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    stream.flush().await?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut answer).await?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;
    use std::time::Instant;

    use simple_dns::rdata::{A, AAAA, CNAME, SRV};
    use simple_dns::{Label, ResourceRecord};
    use smol::net::TcpListener;

    use super::*;

    /// splitmix64: a seeded source for the weighted order, `0..=n`.
    struct Seeded(u64);

    impl Seeded {
        fn up_to(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) % (n + 1)
        }
    }

    fn name(s: &str) -> Name<'_> {
        Name::new(s).expect("test name")
    }

    fn rr(owner: &str, rdata: RData<'static>) -> ResourceRecord<'static> {
        ResourceRecord::new(name(owner).into_owned(), CLASS::IN, 60, rdata)
    }

    fn srv_rr(
        owner: &str,
        priority: u16,
        weight: u16,
        port: u16,
        target: &str,
    ) -> ResourceRecord<'static> {
        let target = if target == "." {
            Name::new_with_labels(&[])
        } else {
            name(target).into_owned()
        };
        rr(
            owner,
            RData::SRV(SRV {
                priority,
                weight,
                port,
                target,
            }),
        )
    }

    fn a_rr(owner: &str, ip: [u8; 4]) -> ResourceRecord<'static> {
        rr(
            owner,
            RData::A(A {
                address: u32::from(Ipv4Addr::from(ip)),
            }),
        )
    }

    fn aaaa_rr(owner: &str, ip: &str) -> ResourceRecord<'static> {
        let ip: Ipv6Addr = ip.parse().expect("test address");
        rr(
            owner,
            RData::AAAA(AAAA {
                address: u128::from(ip),
            }),
        )
    }

    fn cname_rr(owner: &str, target: &str) -> ResourceRecord<'static> {
        rr(owner, RData::CNAME(CNAME(name(target).into_owned())))
    }

    /// A reply to `query` (its id and question) with this code and these answers.
    fn reply(query: &Packet<'_>, rcode: RCODE, answers: Vec<ResourceRecord<'static>>) -> Vec<u8> {
        let mut packet = Packet::new_reply(query.id());
        packet.questions = query.questions.clone();
        packet.answers = answers;
        *packet.rcode_mut() = rcode;
        packet.build_bytes_vec_compressed().expect("test reply")
    }

    fn srv_record(priority: u16, weight: u16, port: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port,
            target: target.to_owned(),
        }
    }

    fn candidate(host: &str, port: u16, direct_tls: bool) -> Candidate {
        Candidate {
            host: host.to_owned(),
            port,
            direct_tls,
        }
    }

    fn query_bytes(id: u16, qname: &str, qtype: TYPE) -> Vec<u8> {
        build_query(id, &name(qname), qtype).expect("test query")
    }

    fn parse(bytes: &[u8]) -> Packet<'_> {
        Packet::parse(bytes).expect("test packet")
    }

    // resolv.conf

    #[test]
    fn resolv_conf_nameservers_and_options() {
        let r = Resolver::from_resolv_conf(
            "# a comment\n; another\nsearch home.arpa\nnameserver 192.0.2.53 # inline\n\
             nameserver 2001:db8::53\nnameserver fe80::1%2\nnameserver 192.0.2.54\n\
             options ndots:2 timeout:3 attempts:4 rotate\n",
        );
        let v6: SocketAddr = "[2001:db8::53]:53".parse().expect("literal");
        let link_local = SocketAddr::V6(SocketAddrV6::new(
            "fe80::1".parse().expect("literal"),
            53,
            0,
            2,
        ));
        assert_eq!(
            r.servers(),
            &[SocketAddr::from(([192, 0, 2, 53], 53)), v6, link_local]
        );
        assert_eq!((r.timeout, r.attempts), (Duration::from_secs(3), 4));
    }

    #[test]
    fn resolv_conf_defaults_bounds_and_garbage() {
        let localhost = [SocketAddr::from((Ipv4Addr::LOCALHOST, 53))];
        let r = Resolver::from_resolv_conf("");
        assert_eq!(
            (r.servers(), r.timeout, r.attempts),
            (&localhost[..], DEFAULT_TIMEOUT, DEFAULT_ATTEMPTS)
        );
        let r = Resolver::from_resolv_conf(
            "nameserver\nnameserver not-an-address\nnameserver fe80::1%eth0\n\
             options timeout:99999 attempts:0\noptions timeout:x attempts:-1 timeout\n\u{0}\u{ff}",
        );
        assert_eq!(
            (r.servers(), r.timeout, r.attempts),
            (&localhost[..], MAX_TIMEOUT, 1)
        );
        let r = Resolver::from_resolv_conf("options timeout:0 attempts:99");
        assert_eq!(
            (r.timeout, r.attempts),
            (Duration::from_secs(1), MAX_ATTEMPTS)
        );
    }

    #[test]
    fn with_servers_and_timeout() {
        let r = Resolver::with_servers(vec![SocketAddr::from(([127, 0, 53, 1], 53))])
            .with_timeout(Duration::from_secs(600), 0);
        assert_eq!(r.servers(), &[SocketAddr::from(([127, 0, 53, 1], 53))]);
        assert_eq!((r.timeout, r.attempts), (MAX_TIMEOUT, 1));
        assert_eq!(Resolver::with_servers(Vec::new()).servers().len(), 1);
    }

    // names

    #[test]
    fn names_are_normalized_and_checked() {
        assert_eq!(normalize_name("Example.COM.").as_deref(), Ok("example.com"));
        assert_eq!(
            normalize_name("_xmpp-server._tcp.example.com").as_deref(),
            Ok("_xmpp-server._tcp.example.com")
        );
        assert_eq!(
            normalize_name("bücher.example").as_deref(),
            Ok("xn--bcher-kva.example")
        );
        let long_label = "a".repeat(64);
        let long_name = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(62),
        ]
        .join(".");
        assert_eq!(long_name.len(), 254);
        for bad in [
            "",
            ".",
            "a..b",
            ".a",
            "a b",
            "a/b",
            "a\u{0}b",
            &long_label,
            &long_name,
            "a.b..",
        ] {
            assert!(
                matches!(normalize_name(bad), Err(DnsError::InvalidName(_))),
                "{bad:?}"
            );
        }
        assert!(normalize_name(&long_name[1..]).is_ok());
        assert!(normalize_name(&"é".repeat(5000)).is_err());
    }

    #[test]
    fn ip_literals() {
        assert_eq!(ip_literal("[::1]"), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(ip_literal("2001:db8::1"), "2001:db8::1".parse().ok());
        assert_eq!(
            ip_literal("192.0.2.1"),
            Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)))
        );
        assert_eq!(ip_literal("example.com"), None);
        assert_eq!(ip_literal("[192.0.2.1"), None);
    }

    #[test]
    fn interleaves_starting_with_ipv6() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("literal");
        let v6 = vec![ip("2001:db8::1"), ip("2001:db8::2"), ip("2001:db8::3")];
        let v4 = vec![ip("192.0.2.1")];
        assert_eq!(
            interleave(v6, v4),
            vec![
                ip("2001:db8::1"),
                ip("192.0.2.1"),
                ip("2001:db8::2"),
                ip("2001:db8::3")
            ]
        );
    }

    // ordering (RFC 2782) and the plan (RFC 6120 §3.2, XEP-0368)

    fn targets(records: &[SrvRecord]) -> Vec<&str> {
        records.iter().map(|r| r.target.as_str()).collect()
    }

    #[test]
    fn order_is_by_priority_then_answer_order_for_weight_zero() {
        let records = vec![
            srv_record(20, 0, 1, "d"),
            srv_record(10, 0, 1, "b"),
            srv_record(5, 0, 1, "a"),
            srv_record(10, 0, 1, "c"),
        ];
        let mut rng = Seeded(1);
        let ordered = rfc2782_order(records, |r| (r.priority, r.weight), |n| rng.up_to(n));
        assert_eq!(targets(&ordered), ["a", "b", "c", "d"]);
    }

    #[test]
    fn weights_share_the_first_place_in_proportion() {
        let mut rng = Seeded(42);
        let mut first = std::collections::HashMap::new();
        for _ in 0..4000 {
            let records = vec![
                srv_record(1, 0, 1, "zero"),
                srv_record(1, 1, 1, "one"),
                srv_record(1, 3, 1, "three"),
            ];
            let ordered = rfc2782_order(records, |r| (r.priority, r.weight), |n| rng.up_to(n));
            assert_eq!(ordered.len(), 3);
            *first.entry(ordered[0].target.clone()).or_insert(0u32) += 1;
        }
        // Draws 0..=4: "zero" takes 0, "one" 1, "three" 2..=4.
        let share = |t: &str| f64::from(first.get(t).copied().unwrap_or(0)) / 4000.0;
        assert!((share("zero") - 0.2).abs() < 0.03, "{first:?}");
        assert!((share("one") - 0.2).abs() < 0.03, "{first:?}");
        assert!((share("three") - 0.6).abs() < 0.03, "{first:?}");
    }

    #[test]
    fn a_random_source_out_of_range_cannot_break_the_order() {
        let records = vec![
            srv_record(1, 5, 1, "a"),
            srv_record(1, 5, 1, "b"),
            srv_record(0, 0, 1, "c"),
        ];
        let ordered = rfc2782_order(records, |r| (r.priority, r.weight), |_| u64::MAX);
        assert_eq!(ordered.len(), 3);
        assert_eq!(ordered[0].target, "c");
        assert!(
            rfc2782_order(Vec::<SrvRecord>::new(), |r| (r.priority, r.weight), |_| 0).is_empty()
        );
    }

    #[test]
    fn both_services_are_ordered_together() {
        let xmpps = Srv::Records(vec![
            srv_record(10, 0, 443, "tls.example.com"),
            srv_record(30, 0, 5270, "tls2.example.com"),
        ]);
        let xmpp = Srv::Records(vec![
            srv_record(20, 0, 5269, "plain.example.com"),
            srv_record(5, 0, 5269, "first.example.com"),
        ]);
        let plan = plan_candidates("example.com", Ok(xmpps), Ok(xmpp), |_| 0);
        assert_eq!(
            plan,
            Ok(vec![
                candidate("first.example.com", 5269, false),
                candidate("tls.example.com", 443, true),
                candidate("plain.example.com", 5269, false),
                candidate("tls2.example.com", 5270, true),
            ])
        );
    }

    #[test]
    fn fallback_only_without_records_and_without_dot() {
        let fallback = Ok(vec![candidate("example.com", 5269, false)]);
        let plan = |xmpps, xmpp| plan_candidates("example.com", xmpps, xmpp, |_| 0);
        assert_eq!(plan(Ok(Srv::NoRecords), Ok(Srv::NoRecords)), fallback);
        // SERVFAIL from the recursive resolver: the domain's servers did not answer.
        assert_eq!(plan(Err(DnsError::Server(2)), Ok(Srv::NoRecords)), fallback);
        assert_eq!(plan(Ok(Srv::NoRecords), Err(DnsError::Server(2))), fallback);
        // "." for either service forbids the fallback (RFC 6120 §3.2.1, XEP-0368 §5).
        assert_eq!(
            plan(Ok(Srv::NoRecords), Ok(Srv::NotOffered)),
            Err(DnsError::NotOffered)
        );
        assert_eq!(
            plan(Ok(Srv::NotOffered), Ok(Srv::NoRecords)),
            Err(DnsError::NotOffered)
        );
        assert_eq!(
            plan(Ok(Srv::NotOffered), Ok(Srv::NotOffered)),
            Err(DnsError::NotOffered)
        );
        // …but the other service's records are used.
        let one =
            |tls| Ok(Srv::Records(vec![srv_record(0, 0, 5269, "x.example.com")])).map(|s| (s, tls));
        assert_eq!(
            plan(Ok(Srv::NotOffered), one(false).map(|(s, _)| s)),
            Ok(vec![candidate("x.example.com", 5269, false)])
        );
        assert_eq!(
            plan(one(true).map(|(s, _)| s), Ok(Srv::NotOffered)),
            Ok(vec![candidate("x.example.com", 5269, true)])
        );
        // Our own resolver unreachable: no guessing.
        assert_eq!(
            plan(Err(DnsError::Timeout), Ok(Srv::NoRecords)),
            Err(DnsError::Timeout)
        );
        let refused = DnsError::Io(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(plan(Ok(Srv::NoRecords), Err(refused.clone())), Err(refused));
        assert_eq!(
            plan(Err(DnsError::Timeout), one(false).map(|(s, _)| s)),
            Ok(vec![candidate("x.example.com", 5269, false)])
        );
    }

    #[test]
    fn srv_answers_with_dot_and_port_zero() {
        let srv = |port, target: &str| Record::Srv(srv_record(0, 0, port, target));
        assert_eq!(srv_found(vec![srv(5269, "")]), Srv::NotOffered);
        assert_eq!(srv_found(vec![srv(5269, ""), srv(0, "a")]), Srv::NotOffered);
        assert_eq!(srv_found(vec![]), Srv::NoRecords);
        assert_eq!(srv_found(vec![srv(0, "a")]), Srv::NoRecords);
        assert_eq!(
            srv_found(vec![srv(5269, ""), srv(5269, "a")]),
            Srv::Records(vec![srv_record(0, 0, 5269, "a")])
        );
    }

    // matching answers to queries

    const ID: u16 = 0x4a17;

    fn judge_reply(msg: &[u8], qname: &str, qtype: TYPE) -> Verdict {
        judge(msg, false, ID, &name(qname), qtype)
    }

    #[test]
    fn the_answer_must_match_id_and_question() {
        let q = query_bytes(ID, "xmpp.example.com", TYPE::A);
        let query = parse(&q);
        let good = reply(
            &query,
            RCODE::NoError,
            vec![a_rr("xmpp.example.com", [192, 0, 2, 1])],
        );
        let addr = Record::Addr(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(
            judge_reply(&good, "xmpp.example.com", TYPE::A),
            Verdict::Answer(Ok(vec![addr.clone()]))
        );
        // DNS names compare without case.
        assert_eq!(
            judge_reply(&good, "XMPP.example.com", TYPE::A),
            Verdict::Answer(Ok(vec![addr]))
        );
        assert_eq!(
            judge(&good, false, ID ^ 1, &name("xmpp.example.com"), TYPE::A),
            Verdict::NotOurs
        );
        assert_eq!(
            judge_reply(&good, "other.example.com", TYPE::A),
            Verdict::NotOurs
        );
        assert_eq!(
            judge_reply(&good, "xmpp.example.com", TYPE::AAAA),
            Verdict::NotOurs
        );
        // Our own query echoed back is not a response.
        assert_eq!(
            judge_reply(&q, "xmpp.example.com", TYPE::A),
            Verdict::NotOurs
        );
        // No question, or two.
        let mut packet = parse(&good).clone();
        packet.questions.clear();
        let bytes = packet.build_bytes_vec().expect("packet");
        assert_eq!(
            judge_reply(&bytes, "xmpp.example.com", TYPE::A),
            Verdict::NotOurs
        );
        let mut packet = parse(&good).clone();
        packet.questions.push(packet.questions[0].clone());
        let bytes = packet.build_bytes_vec().expect("packet");
        assert_eq!(
            judge_reply(&bytes, "xmpp.example.com", TYPE::A),
            Verdict::NotOurs
        );
    }

    #[test]
    fn truncated_answers_and_codes() {
        let q = query_bytes(ID, "example.com", TYPE::A);
        let query = parse(&q);
        let mut tc = reply(&query, RCODE::NoError, vec![]);
        tc[2] |= 0x02;
        assert_eq!(judge_reply(&tc, "example.com", TYPE::A), Verdict::Truncated);
        // Cut, even unparseable, once id and QR match.
        let full = reply(
            &query,
            RCODE::NoError,
            vec![a_rr("example.com", [192, 0, 2, 1])],
        );
        assert_eq!(
            judge(&full[..20], true, ID, &name("example.com"), TYPE::A),
            Verdict::Truncated
        );
        let nx = reply(&query, RCODE::NameError, vec![]);
        assert_eq!(
            judge_reply(&nx, "example.com", TYPE::A),
            Verdict::Answer(Ok(vec![]))
        );
        let nodata = reply(
            &query,
            RCODE::NoError,
            vec![aaaa_rr("example.com", "2001:db8::1")],
        );
        assert_eq!(
            judge_reply(&nodata, "example.com", TYPE::A),
            Verdict::Answer(Ok(vec![]))
        );
        let servfail = reply(&query, RCODE::ServerFailure, vec![]);
        assert_eq!(
            judge_reply(&servfail, "example.com", TYPE::A),
            Verdict::Answer(Err(DnsError::Server(2)))
        );
        assert_eq!(
            DnsError::Server(2).to_string(),
            "the name server answered SERVFAIL (2)"
        );
    }

    #[test]
    fn cnames_in_the_answer_are_followed_and_others_ignored() {
        let q = query_bytes(ID, "xmpp.example.com", TYPE::A);
        let query = parse(&q);
        let answer = reply(
            &query,
            RCODE::NoError,
            vec![
                a_rr("elsewhere.example.net", [198, 51, 100, 1]),
                cname_rr("xmpp.example.com", "host.example.net"),
                cname_rr("host.example.net", "final.example.org"),
                a_rr("final.example.org", [192, 0, 2, 7]),
                a_rr("xmpp.example.com", [198, 51, 100, 2]),
            ],
        );
        let want = vec![Record::Addr(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)))];
        assert_eq!(
            judge_reply(&answer, "xmpp.example.com", TYPE::A),
            Verdict::Answer(Ok(want))
        );
        // A CNAME loop ends after MAX_CNAME_HOPS with nothing.
        let looped = reply(
            &query,
            RCODE::NoError,
            vec![
                cname_rr("xmpp.example.com", "b.example.com"),
                cname_rr("b.example.com", "xmpp.example.com"),
            ],
        );
        assert_eq!(
            judge_reply(&looped, "xmpp.example.com", TYPE::A),
            Verdict::Answer(Ok(vec![]))
        );
    }

    #[test]
    fn srv_targets_are_checked_and_records_capped() {
        let owner = "_xmpp-server._tcp.example.com";
        let q = query_bytes(ID, owner, TYPE::SRV);
        let query = parse(&q);
        let mut answers = vec![
            srv_rr(owner, 1, 2, 5269, "Xmpp.Example.com."),
            srv_rr(owner, 0, 0, 0, "."),
            rr(
                owner,
                RData::SRV(SRV {
                    priority: 0,
                    weight: 0,
                    port: 5269,
                    target: Name::new_with_labels(&[Label::new_unchecked(b"evil.com\0")]),
                }),
            ),
        ];
        answers.extend((0..40).map(|i| srv_rr(owner, 9, 0, 5269, &format!("h{i}.example.com"))));
        let bytes = reply(&query, RCODE::NoError, answers);
        let Verdict::Answer(Ok(found)) = judge_reply(&bytes, owner, TYPE::SRV) else {
            panic!("not an answer");
        };
        assert_eq!(found.len(), MAX_RECORDS);
        assert_eq!(
            found[0],
            Record::Srv(srv_record(1, 2, 5269, "xmpp.example.com"))
        );
        assert_eq!(found[1], Record::Srv(srv_record(0, 0, 0, "")));
        assert_eq!(
            found[2],
            Record::Srv(srv_record(9, 0, 5269, "h0.example.com"))
        );
    }

    #[test]
    fn headers_claiming_more_than_fits_are_refused_before_parsing() {
        let q = query_bytes(ID, "example.com", TYPE::A);
        let mut bytes = reply(
            &parse(&q),
            RCODE::NoError,
            vec![a_rr("example.com", [192, 0, 2, 1])],
        );
        bytes[6] = 0xff;
        bytes[7] = 0xff;
        assert_eq!(
            judge_reply(&bytes, "example.com", TYPE::A),
            Verdict::NotOurs
        );
    }

    /// Garbage, every prefix, and every byte changed: never a panic, and nothing that is
    /// not the answer is taken for one.
    #[test]
    fn no_input_panics() {
        let owner = "_xmpps-server._tcp.example.com";
        let q = query_bytes(ID, owner, TYPE::SRV);
        let query = parse(&q);
        let good = reply(
            &query,
            RCODE::NoError,
            vec![
                srv_rr(owner, 1, 1, 5223, "a.example.com"),
                cname_rr("x.example.com", "y.example.com"),
                srv_rr(owner, 2, 1, 5223, "b.example.com"),
            ],
        );
        let qname = name(owner);
        for cut in 0..good.len() {
            judge(&good[..cut], cut % 2 == 0, ID, &qname, TYPE::SRV);
        }
        for i in 0..good.len() {
            for value in [0x00, 0x01, 0x3f, 0x40, 0x7f, 0xc0, 0xc1, 0xff] {
                let mut bad = good.clone();
                bad[i] = value;
                judge(&bad, false, ID, &qname, TYPE::SRV);
            }
        }
        let mut rng = Seeded(7);
        for _ in 0..5000 {
            let len = rng.up_to(300) as usize;
            let mut junk: Vec<u8> = (0..len).map(|_| rng.up_to(255) as u8).collect();
            if junk.len() >= 4 {
                // Past the id and QR checks, to reach the parser.
                junk[..2].copy_from_slice(&ID.to_be_bytes());
                junk[2] = (junk[2] | 0x80) & !0x02;
            }
            let verdict = judge(&junk, false, ID, &qname, TYPE::SRV);
            assert!(!matches!(verdict, Verdict::Truncated));
        }
        // Compression pointers to themselves and to each other.
        let mut looped = good[..12].to_vec();
        looped[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        looped.extend_from_slice(&[0xc0, 12, 0, 33, 0, 1]);
        assert_eq!(
            judge(&looped, false, ID, &qname, TYPE::SRV),
            Verdict::NotOurs
        );
    }

    // against a fake name server on loopback

    type Respond = Rc<dyn Fn(&Packet<'_>) -> Vec<Vec<u8>>>;

    /// A name server on `ip`, port 0, over UDP and TCP (the same port); for each query,
    /// `udp` or `tcp` gives the messages to send back (over TCP, only the first).
    async fn fake_server(
        ip: [u8; 4],
        udp: Respond,
        tcp: Respond,
    ) -> (SocketAddr, impl Future<Output = ()>) {
        let socket = UdpSocket::bind((Ipv4Addr::from(ip), 0))
            .await
            .expect("bind udp");
        let addr = socket.local_addr().expect("udp address");
        let listener = TcpListener::bind(addr).await.expect("bind tcp");
        let udp_loop = async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let Ok(query) = Packet::parse(&buf[..n]) else {
                    continue;
                };
                for msg in udp(&query) {
                    let _ = socket.send_to(&msg, from).await;
                }
            }
        };
        let tcp_loop = async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut len = [0u8; 2];
                if stream.read_exact(&mut len).await.is_err() {
                    continue;
                }
                let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if stream.read_exact(&mut buf).await.is_err() {
                    continue;
                }
                let Ok(query) = Packet::parse(&buf) else {
                    continue;
                };
                if let Some(msg) = tcp(&query).into_iter().next() {
                    let mut framed = (msg.len() as u16).to_be_bytes().to_vec();
                    framed.extend_from_slice(&msg);
                    let _ = stream.write_all(&framed).await;
                }
            }
        };
        (addr, async move {
            future::zip(udp_loop, tcp_loop).await;
        })
    }

    /// Runs `client` while `server` serves.
    async fn run<T>(server: impl Future<Output = ()>, client: impl Future<Output = T>) -> T {
        client
            .or(async {
                server.await;
                std::future::pending().await
            })
            .await
    }

    fn qname_of(query: &Packet<'_>) -> String {
        query
            .questions
            .first()
            .map(|q| q.qname.to_string().to_ascii_lowercase())
            .unwrap_or_default()
    }

    fn qtype_of(query: &Packet<'_>) -> Option<QTYPE> {
        query.questions.first().map(|q| q.qtype)
    }

    /// A small zone: example.test has both services and hosts with A/AAAA.
    fn zone(query: &Packet<'_>) -> Vec<Vec<u8>> {
        let owner = qname_of(query);
        let answers = match (owner.as_str(), qtype_of(query)) {
            ("_xmpps-server._tcp.example.test", Some(QTYPE::TYPE(TYPE::SRV))) => {
                vec![srv_rr(&owner, 5, 0, 5270, "a.example.test")]
            }
            ("_xmpp-server._tcp.example.test", Some(QTYPE::TYPE(TYPE::SRV))) => vec![
                srv_rr(&owner, 20, 0, 5269, "c.example.test"),
                srv_rr(&owner, 10, 0, 5269, "b.example.test"),
            ],
            ("a.example.test", Some(QTYPE::TYPE(TYPE::A))) => vec![a_rr(&owner, [192, 0, 2, 1])],
            ("a.example.test", Some(QTYPE::TYPE(TYPE::AAAA))) => {
                vec![aaaa_rr(&owner, "2001:db8::1")]
            }
            ("b.example.test", Some(QTYPE::TYPE(TYPE::A))) => vec![a_rr(&owner, [192, 0, 2, 2])],
            ("alias.example.test", Some(QTYPE::TYPE(TYPE::A))) => {
                vec![
                    cname_rr(&owner, "a.example.test"),
                    a_rr("a.example.test", [192, 0, 2, 1]),
                ]
            }
            ("b.example.test" | "alias.example.test", _) => vec![],
            _ => return vec![reply(query, RCODE::NameError, vec![])],
        };
        vec![reply(query, RCODE::NoError, answers)]
    }

    fn quick(servers: Vec<SocketAddr>) -> Resolver {
        Resolver::with_servers(servers).with_timeout(Duration::from_millis(300), 1)
    }

    #[test]
    fn candidates_and_addresses_from_a_server() {
        smol::block_on(async {
            let (addr, server) = fake_server([127, 0, 0, 2], Rc::new(zone), Rc::new(zone)).await;
            let resolver = quick(vec![addr]);
            run(server, async {
                assert_eq!(
                    resolver.s2s_candidates("Example.Test.").await,
                    Ok(vec![
                        candidate("a.example.test", 5270, true),
                        candidate("b.example.test", 5269, false),
                        candidate("c.example.test", 5269, false),
                    ])
                );
                let a = resolver.ips("a.example.test").await;
                assert_eq!(
                    a,
                    Ok(vec![
                        "2001:db8::1".parse().expect("ip"),
                        "192.0.2.1".parse().expect("ip")
                    ])
                );
                let b = resolver
                    .addrs(&candidate("b.example.test", 5269, false))
                    .await;
                assert_eq!(b, Ok(vec![SocketAddr::from(([192, 0, 2, 2], 5269))]));
                assert_eq!(
                    resolver.ips("alias.example.test").await,
                    Ok(vec!["192.0.2.1".parse().expect("ip")])
                );
                assert_eq!(
                    resolver.ips("c.example.test").await,
                    Err(DnsError::NoAddresses("c.example.test".into()))
                );
                assert_eq!(
                    resolver.srv("_xmpp-server._tcp.nowhere.test").await,
                    Ok(Srv::NoRecords)
                );
            })
            .await;
        });
    }

    #[test]
    fn nxdomain_falls_back_to_the_domain_and_dot_forbids_it() {
        let respond: Respond = Rc::new(|query| {
            let owner = qname_of(query);
            if owner == "_xmpp-server._tcp.closed.test" {
                return vec![reply(
                    query,
                    RCODE::NoError,
                    vec![srv_rr(&owner, 0, 0, 0, ".")],
                )];
            }
            if owner == "_xmpp-server._tcp.broken.test" {
                return vec![reply(query, RCODE::ServerFailure, vec![])];
            }
            vec![reply(query, RCODE::NameError, vec![])]
        });
        smol::block_on(async {
            let (addr, server) = fake_server([127, 0, 0, 3], respond.clone(), respond).await;
            let resolver = quick(vec![addr]);
            run(server, async {
                let fallback = |d: &str| Ok(vec![candidate(d, 5269, false)]);
                assert_eq!(
                    resolver.s2s_candidates("open.test").await,
                    fallback("open.test")
                );
                assert_eq!(
                    resolver.s2s_candidates("broken.test").await,
                    fallback("broken.test")
                );
                assert_eq!(
                    resolver.s2s_candidates("closed.test").await,
                    Err(DnsError::NotOffered)
                );
                assert_eq!(
                    resolver.ips("open.test").await,
                    Err(DnsError::NoAddresses("open.test".into()))
                );
            })
            .await;
        });
    }

    #[test]
    fn a_silent_server_times_out() {
        smol::block_on(async {
            let (addr, server) =
                fake_server([127, 0, 0, 4], Rc::new(|_| vec![]), Rc::new(|_| vec![])).await;
            let resolver =
                Resolver::with_servers(vec![addr]).with_timeout(Duration::from_millis(150), 2);
            run(server, async {
                let start = Instant::now();
                assert_eq!(resolver.ips("example.test").await, Err(DnsError::Timeout));
                assert_eq!(
                    resolver.s2s_candidates("example.test").await,
                    Err(DnsError::Timeout)
                );
                // Two rounds of 150 ms for each, the lookups of a call at once.
                assert!(
                    start.elapsed() < Duration::from_secs(3),
                    "{:?}",
                    start.elapsed()
                );
            })
            .await;
        });
    }

    #[test]
    fn the_next_server_answers_when_one_is_silent() {
        smol::block_on(async {
            let (silent, quiet) =
                fake_server([127, 0, 0, 9], Rc::new(|_| vec![]), Rc::new(|_| vec![])).await;
            let (good, serving) = fake_server([127, 0, 0, 10], Rc::new(zone), Rc::new(zone)).await;
            let resolver = quick(vec![silent, good]);
            let servers = future::zip(quiet, serving);
            run(
                async {
                    servers.await;
                },
                async {
                    assert_eq!(
                        resolver.ips("b.example.test").await,
                        Ok(vec!["192.0.2.2".parse().expect("ip")])
                    );
                },
            )
            .await;
        });
    }

    #[test]
    fn wrong_answers_are_ignored_until_the_right_one() {
        let respond: Respond = Rc::new(|query| {
            let spoof = |ip| vec![a_rr(&qname_of(query), ip)];
            let mut wrong_id = reply(query, RCODE::NoError, spoof([6, 6, 6, 6]));
            wrong_id[..2].copy_from_slice(&query.id().wrapping_add(1).to_be_bytes());
            let mut other_question = query.clone();
            other_question.questions[0].qname = name("other.example.test").into_owned();
            let not_a_response = query.clone().into_reply();
            let mut not_a_response_bytes =
                reply(&not_a_response, RCODE::NoError, spoof([6, 6, 6, 8]));
            not_a_response_bytes[2] &= 0x7f;
            vec![
                wrong_id,
                reply(
                    &other_question,
                    RCODE::NoError,
                    vec![a_rr("other.example.test", [6, 6, 6, 7])],
                ),
                not_a_response_bytes,
                vec![0xff; 3],
                reply(query, RCODE::NoError, spoof([192, 0, 2, 9])),
            ]
        });
        smol::block_on(async {
            let (addr, server) = fake_server([127, 0, 0, 5], respond.clone(), respond).await;
            let resolver = quick(vec![addr]);
            run(server, async {
                // (The AAAA query gets A records back, which are not what it asked for.)
                assert_eq!(
                    resolver.ips("spoofed.example.test").await,
                    Ok(vec!["192.0.2.9".parse().expect("ip")])
                );
            })
            .await;
        });
    }

    /// An answer with the right id and question from another address (an off-path
    /// spoofer who guessed the id) is not taken.
    #[test]
    fn answers_from_another_address_are_ignored() {
        smol::block_on(async {
            let socket = UdpSocket::bind(SocketAddr::from(([127, 0, 0, 6], 0)))
                .await
                .expect("bind");
            let spoofer = UdpSocket::bind(SocketAddr::from(([127, 0, 0, 7], 0)))
                .await
                .expect("bind");
            let addr = socket.local_addr().expect("address");
            let server = async move {
                let mut buf = vec![0u8; 4096];
                while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                    let Ok(query) = Packet::parse(&buf[..n]) else {
                        continue;
                    };
                    let owner = qname_of(&query);
                    let _ = spoofer
                        .send_to(
                            &reply(&query, RCODE::NoError, vec![a_rr(&owner, [6, 6, 6, 6])]),
                            from,
                        )
                        .await;
                    Timer::after(Duration::from_millis(30)).await;
                    let _ = socket
                        .send_to(
                            &reply(&query, RCODE::NoError, vec![a_rr(&owner, [192, 0, 2, 6])]),
                            from,
                        )
                        .await;
                }
            };
            let resolver = quick(vec![addr]);
            run(server, async {
                assert_eq!(
                    resolver.ips("host.example.test").await,
                    Ok(vec!["192.0.2.6".parse().expect("ip")])
                );
            })
            .await;
        });
    }

    #[test]
    fn truncated_and_oversized_answers_are_asked_again_over_tcp() {
        let many = |query: &Packet<'_>| -> Vec<ResourceRecord<'static>> {
            let owner = qname_of(query);
            match qtype_of(query) {
                Some(QTYPE::TYPE(TYPE::A)) => {
                    (0..40).map(|i| a_rr(&owner, [192, 0, 2, i])).collect()
                }
                _ => (0..100)
                    .map(|i| aaaa_rr(&owner, &format!("2001:db8::{i:x}")))
                    .collect(),
            }
        };
        let udp: Respond = Rc::new(move |query| match qtype_of(query) {
            // A: an empty answer with TC set, as a server that knows it cannot fit them.
            Some(QTYPE::TYPE(TYPE::A)) => {
                let mut msg = reply(query, RCODE::NoError, vec![aaaa_rr("x.test", "::1")]);
                msg[2] |= 0x02;
                vec![msg]
            }
            // AAAA: 100 records in one datagram of 2.8 kB, more than the 1232 we asked for.
            _ => vec![reply(query, RCODE::NoError, many(query))],
        });
        let tcp: Respond = Rc::new(move |query| vec![reply(query, RCODE::NoError, many(query))]);
        smol::block_on(async {
            let (addr, server) = fake_server([127, 0, 0, 8], udp, tcp).await;
            let resolver = quick(vec![addr]);
            run(server, async {
                let ips = resolver.ips("big.example.test").await.expect("addresses");
                assert_eq!(ips.len(), MAX_RECORDS);
                let v4 = ips.iter().filter(|ip| ip.is_ipv4()).count();
                assert_eq!(v4, MAX_RECORDS / 2, "interleaved, IPv6 first");
                assert!(ips[0].is_ipv6() && ips[1].is_ipv4());
            })
            .await;
        });
    }

    #[test]
    fn ip_literals_need_no_name_server() {
        // Nothing listens on port 9 of 127.0.0.11; a query would fail.
        let resolver = quick(vec![SocketAddr::from(([127, 0, 0, 11], 9))]);
        smol::block_on(async {
            assert_eq!(
                resolver.ips("[::1]").await,
                Ok(vec![IpAddr::V6(Ipv6Addr::LOCALHOST)])
            );
            assert_eq!(
                resolver.s2s_candidates("192.0.2.1").await,
                Ok(vec![candidate("192.0.2.1", 5269, false)])
            );
            assert!(resolver.ips("example.test").await.is_err());
            assert!(matches!(
                resolver.ips("bad..name").await,
                Err(DnsError::InvalidName(_))
            ));
        });
    }
}
