//! Connection and traffic limits (XEP-0205: Best Practices to Discourage
//! Denial of Service Attacks, §3 "Recommended Defenses"): how many
//! connections in total and per source address, how fast one address may
//! open them, and how many bytes per second one stream may send ("karma").
//!
//! Sans-IO: every decision takes the clock as a parameter. The accept loop
//! asks [`Admission::admit`] and holds the returned [`Slot`] for the life of
//! the connection; the connection loop charges what it reads to its
//! [`Karma`] and pauses reading (TCP then slows the sender down) for as long
//! as it says.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::stream::throttle::address_key;

/// A token bucket: `rate` tokens per second, holding at most `burst`.
/// Tokens here are connections or bytes.
#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    /// Tokens at `at`; negative after [`TokenBucket::spend`] overdrew it.
    level: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_sec: f64, burst: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            rate: rate_per_sec.max(f64::MIN_POSITIVE),
            burst: burst.max(0.0),
            level: burst.max(0.0),
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        // A clock that went backwards (it cannot with `Instant`, but the
        // caller passes it) refills nothing rather than panicking.
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + dt * self.rate).min(self.burst);
        self.at = self.at.max(now);
    }

    /// Takes `n` tokens if there are that many; otherwise takes none.
    pub fn try_take(&mut self, n: f64, now: Instant) -> bool {
        self.refill(now);
        if self.level >= n {
            self.level -= n;
            true
        } else {
            false
        }
    }

    /// Takes `n` tokens even if that overdraws the bucket, and says how
    /// long until it is out of debt (`None` when it is not in debt).
    pub fn spend(&mut self, n: f64, now: Instant) -> Option<Duration> {
        self.refill(now);
        self.level -= n;
        (self.level < 0.0).then(|| Duration::from_secs_f64(-self.level / self.rate))
    }

    /// True when the bucket would be full at `now` (nothing to remember).
    pub fn is_full(&self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.level + dt * self.rate >= self.burst
    }
}

/// A byte rate with a burst allowance, from the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub bytes_per_sec: u32,
    pub burst_bytes: u32,
}

/// A stream's traffic allowance ("karma"): bytes read cost tokens; a
/// stream in debt is not read from until it is out of it. Stricter before
/// authentication, when anybody can be on the other end.
#[derive(Debug)]
pub struct Karma {
    bucket: TokenBucket,
}

impl Karma {
    pub fn new(rate: Rate, now: Instant) -> Karma {
        Karma {
            bucket: TokenBucket::new(
                f64::from(rate.bytes_per_sec),
                f64::from(rate.burst_bytes),
                now,
            ),
        }
    }

    /// Switches to another allowance (after authentication), starting full.
    pub fn set_rate(&mut self, rate: Rate, now: Instant) {
        *self = Karma::new(rate, now);
    }

    /// Charges `n` bytes read; returns how long to stop reading, if at all.
    pub fn charge(&mut self, n: usize, now: Instant) -> Option<Duration> {
        self.bucket.spend(n as f64, now)
    }
}

/// Connection limits, from the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections in total.
    pub max_total: usize,
    /// Open connections per source address (IPv6 per /64).
    pub max_per_address: usize,
    /// New connections per address per minute, sustained.
    pub per_address_per_minute: u32,
    /// New connections per address allowed at once (a household's devices
    /// all reconnecting after the router restarts).
    pub burst_per_address: u32,
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// [`ConnectionLimits::max_total`] connections are open.
    Total(usize),
    /// [`ConnectionLimits::max_per_address`] connections from this address.
    PerAddress(usize),
    /// The address opened connections faster than allowed.
    Rate,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Total(n) => write!(f, "the server has {n} connections open, its limit"),
            Refused::PerAddress(n) => write!(f, "{n} connections from this address already"),
            Refused::Rate => write!(f, "too many new connections from this address"),
        }
    }
}

/// What is known about one address.
#[derive(Debug)]
struct Peer {
    open: usize,
    accepts: TokenBucket,
}

#[derive(Debug)]
struct Table {
    limits: ConnectionLimits,
    open: usize,
    peers: HashMap<IpAddr, Peer>,
    /// Addresses whose last refusal was logged, and refusals not logged since.
    refusals_logged: HashMap<IpAddr, (Instant, u32)>,
}

/// How often a refused address is named in the log at info level: an owner sees why a
/// phone is turned away, a flood does not flood the log.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Most addresses remembered; connections hold entries, so this only ever
/// drops rate memory about addresses with nothing open.
const MAX_PEERS: usize = 4096;

/// The server's open connections, by source address. Cheap to share.
#[derive(Clone, Debug)]
pub struct Admission {
    table: Arc<Mutex<Table>>,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Slot {
    table: Arc<Mutex<Table>>,
    key: IpAddr,
}

impl Admission {
    pub fn new(limits: ConnectionLimits) -> Admission {
        Admission {
            table: Arc::new(Mutex::new(Table {
                limits,
                open: 0,
                peers: HashMap::new(),
                refusals_logged: HashMap::new(),
            })),
        }
    }

    fn lock(table: &Mutex<Table>) -> MutexGuard<'_, Table> {
        // Nothing in the table can be left half-updated by a panic.
        table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides on a connection from `addr` accepted at `now`.
    pub fn admit(&self, addr: IpAddr, now: Instant) -> Result<Slot, Refused> {
        let key = address_key(addr);
        let mut t = Admission::lock(&self.table);
        let limits = t.limits;
        if t.open >= limits.max_total {
            return Err(Refused::Total(limits.max_total));
        }
        if !t.peers.contains_key(&key) && t.peers.len() >= MAX_PEERS {
            t.peers.retain(|_, p| p.open > 0 || !p.accepts.is_full(now));
            if t.peers.len() >= MAX_PEERS {
                // Still full of recently busy addresses: forget their rate,
                // never their open count (that would break the per-address cap).
                t.peers.retain(|_, p| p.open > 0);
            }
        }
        let peer = t.peers.entry(key).or_insert_with(|| Peer {
            open: 0,
            accepts: TokenBucket::new(
                f64::from(limits.per_address_per_minute) / 60.0,
                f64::from(limits.burst_per_address.max(1)),
                now,
            ),
        });
        if peer.open >= limits.max_per_address {
            return Err(Refused::PerAddress(limits.max_per_address));
        }
        if !peer.accepts.try_take(1.0, now) {
            return Err(Refused::Rate);
        }
        peer.open += 1;
        t.open += 1;
        Ok(Slot {
            table: self.table.clone(),
            key,
        })
    }

    /// Whether a refusal of `addr` at `now` should be logged: the first one, then at
    /// most one per [`REFUSAL_LOG_INTERVAL`] per address (IPv6 per /64). `Some(n)`: log
    /// it, and say that `n` more were refused since the last line.
    pub fn log_refusal(&self, addr: IpAddr, now: Instant) -> Option<u32> {
        let key = address_key(addr);
        let mut t = Admission::lock(&self.table);
        let log = &mut t.refusals_logged;
        if let Some((at, skipped)) = log.get_mut(&key) {
            if now.saturating_duration_since(*at) < REFUSAL_LOG_INTERVAL {
                *skipped = skipped.saturating_add(1);
                return None;
            }
            let n = *skipped;
            *at = now;
            *skipped = 0;
            return Some(n);
        }
        if log.len() >= MAX_PEERS {
            log.retain(|_, (at, _)| now.saturating_duration_since(*at) < REFUSAL_LOG_INTERVAL);
            if log.len() >= MAX_PEERS {
                // A flood from very many addresses: stay quiet rather than grow.
                return None;
            }
        }
        log.insert(key, (now, 0));
        Some(0)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        Admission::lock(&self.table).open
    }

    /// Addresses remembered now.
    pub fn remembered(&self) -> usize {
        Admission::lock(&self.table).peers.len()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = Admission::lock(&self.table);
        t.open = t.open.saturating_sub(1);
        if let Some(p) = t.peers.get_mut(&self.key) {
            p.open = p.open.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const SEC: Duration = Duration::from_secs(1);

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            max_total: 5,
            max_per_address: 3,
            per_address_per_minute: 6,
            burst_per_address: 4,
        }
    }

    #[test]
    fn bucket_refills_at_its_rate_up_to_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2.0, 4.0, t0);
        assert!((0..4).all(|_| b.try_take(1.0, t0)));
        assert!(!b.try_take(1.0, t0));
        assert!(b.try_take(1.0, t0 + SEC / 2));
        assert!(!b.try_take(1.0, t0 + SEC / 2));
        // Long idle: back to the burst, not beyond.
        assert!(b.is_full(t0 + 100 * SEC));
        let later = t0 + 100 * SEC;
        assert!((0..4).all(|_| b.try_take(1.0, later)));
        assert!(!b.try_take(1.0, later));
    }

    #[test]
    fn spending_beyond_the_burst_owes_time() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000.0, 2000.0, t0);
        assert_eq!(b.spend(2000.0, t0), None);
        assert_eq!(b.spend(500.0, t0), Some(SEC / 2));
        // Half a second later the debt is paid.
        assert_eq!(b.spend(0.0, t0 + SEC / 2), None);
        // A clock from the past changes nothing.
        assert_eq!(b.spend(0.0, t0), None);
    }

    #[test]
    fn karma_pauses_a_flood_and_is_raised_after_login() {
        let t0 = Instant::now();
        let strict = Rate {
            bytes_per_sec: 1024,
            burst_bytes: 4096,
        };
        let mut k = Karma::new(strict, t0);
        assert_eq!(k.charge(4096, t0), None);
        assert_eq!(k.charge(1024, t0), Some(SEC));
        k.set_rate(
            Rate {
                bytes_per_sec: 1 << 20,
                burst_bytes: 1 << 20,
            },
            t0,
        );
        assert_eq!(k.charge(100_000, t0), None);
    }

    #[test]
    fn caps_per_address_and_in_total() {
        let t0 = Instant::now();
        let a = Admission::new(limits());
        let s1: Vec<Slot> = (0..3).map(|_| a.admit(v4(1), t0).unwrap()).collect();
        assert_eq!(a.admit(v4(1), t0).unwrap_err(), Refused::PerAddress(3));
        let s2: Vec<Slot> = (0..2).map(|_| a.admit(v4(2), t0).unwrap()).collect();
        assert_eq!(a.open(), 5);
        assert_eq!(a.admit(v4(3), t0).unwrap_err(), Refused::Total(5));
        drop(s2);
        assert_eq!(a.open(), 3);
        let _s3 = a.admit(v4(3), t0).unwrap();
        drop(s1);
        assert_eq!(a.open(), 1);
    }

    #[test]
    fn accept_rate_per_address() {
        let t0 = Instant::now();
        let a = Admission::new(limits());
        // A burst of 4, then one every 10 s (6 per minute).
        for _ in 0..4 {
            drop(a.admit(v4(1), t0).unwrap());
        }
        assert_eq!(a.admit(v4(1), t0).unwrap_err(), Refused::Rate);
        assert_eq!(a.admit(v4(1), t0 + 5 * SEC).unwrap_err(), Refused::Rate);
        drop(a.admit(v4(1), t0 + 10 * SEC).unwrap());
        // Another address is not affected.
        drop(a.admit(v4(2), t0).unwrap());
        // A refused attempt does not hold a place.
        assert_eq!(a.open(), 0);
    }

    #[test]
    fn ipv6_counts_per_64() {
        let t0 = Instant::now();
        let a = Admission::new(limits());
        let host = |last: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, last));
        let _s: Vec<Slot> = (1..=3).map(|i| a.admit(host(i), t0).unwrap()).collect();
        assert_eq!(a.admit(host(4), t0).unwrap_err(), Refused::PerAddress(3));
        let other = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1));
        assert!(a.admit(other, t0).is_ok());
    }

    #[test]
    fn remembered_addresses_are_bounded() {
        let t0 = Instant::now();
        let a = Admission::new(ConnectionLimits {
            max_total: 10,
            max_per_address: 1,
            per_address_per_minute: 1,
            burst_per_address: 1,
        });
        let held = a.admit(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), t0).unwrap();
        for i in 0..(MAX_PEERS as u32 + 100) {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i));
            drop(a.admit(ip, t0).unwrap());
        }
        assert!(a.remembered() <= MAX_PEERS);
        // The open connection's entry survived the eviction.
        assert_eq!(
            a.admit(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), t0 + 3600 * SEC)
                .unwrap_err(),
            Refused::PerAddress(1)
        );
        drop(held);
    }

    #[test]
    fn refusals_are_logged_once_a_minute_per_address() {
        let adm = Admission::new(ConnectionLimits {
            max_total: 10,
            max_per_address: 1,
            per_address_per_minute: 60,
            burst_per_address: 10,
        });
        let now = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(adm.log_refusal(a, now), Some(0));
        assert_eq!(adm.log_refusal(a, now + Duration::from_secs(1)), None);
        assert_eq!(adm.log_refusal(a, now + Duration::from_secs(59)), None);
        // Another address has its own minute.
        assert_eq!(adm.log_refusal(b, now + Duration::from_secs(2)), Some(0));
        // A minute on: logged again, with the count of those not logged.
        assert_eq!(adm.log_refusal(a, now + REFUSAL_LOG_INTERVAL), Some(2));
        assert_eq!(adm.log_refusal(a, now + REFUSAL_LOG_INTERVAL), None);
    }
}
