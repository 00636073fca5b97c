//! Login throttling: a brake on online password guessing (RFC 6120 §13.8 leaves the
//! policy to the server; RFC 4422 §7 asks servers to resist brute-force attacks).
//!
//! After a few free failures, each further attempt from the same source address, or for
//! the same account from the same address, waits a delay that doubles with every failure up
//! to a cap. Delays are keyed so that a guesser only slows itself: the address key stops
//! one host guessing across many accounts, the (account, address) key one host guessing
//! one account, and nothing a guesser does delays the account's owner logging in from
//! another address. There is deliberately no per-account key: with one, anybody who knows
//! a name could keep its owner waiting (that lockout is what the per-account delay of
//! earlier versions allowed). A botnet guessing one password from many addresses is
//! slowed per address (and by the admission limits on new connections per address).
//! Sans-IO: the caller passes the clock.
//!
//! How c2s uses it: once SASL names the account (`LookupScram` / `VerifyPlain`), call
//! [`Throttle::check`]; if it returns a wait, sleep that long before evaluating the
//! attempt (keeping the stream open, so a client simply sees a slow answer). Then report
//! the outcome with [`Throttle::failed`] or [`Throttle::succeeded`].
//!
//! Memory is bounded: entries are forgotten after a quiet period, and each table holds at
//! most [`ThrottleConfig::max_entries`], evicting the longest-quiet entry when full.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Throttling policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Failures allowed without any delay: enough for a person fumbling a phone keyboard.
    pub free_attempts: u32,
    /// The delay once the free failures are used up; it doubles with each further
    /// failure.
    pub base_delay: Duration,
    /// The longest delay: a guesser's own attempts are spaced at most this far apart.
    pub max_delay: Duration,
    /// An entry with no failure for this long is forgotten (never sooner than twice
    /// `max_delay`).
    pub forget_after: Duration,
    /// The most entries kept per table (accounts, addresses).
    pub max_entries: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            free_attempts: 3,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            forget_after: Duration::from_secs(15 * 60),
            max_entries: 1024,
        }
    }
}

impl ThrottleConfig {
    /// The delay owed after `failures` failures.
    fn delay(&self, failures: u32) -> Duration {
        let Some(beyond_free) = failures.checked_sub(self.free_attempts) else {
            return Duration::ZERO;
        };
        let factor = 1u32 << beyond_free.min(31);
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// The quiet period actually used: well beyond the longest wait, or an attacker who
    /// waits out each delay would find the entry forgotten when he comes back.
    fn forget_after(&self) -> Duration {
        self.forget_after.max(self.max_delay.saturating_mul(2))
    }
}

/// What we remember about one account or one address.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Failures since the last success (or since the entry was made).
    failures: u32,
    /// The earliest time the next attempt may be evaluated. Each throttled attempt moves
    /// it on by the current delay, so attempts made in parallel on several connections
    /// are spaced out rather than all evaluated together after one wait.
    ready_at: Instant,
    /// The last failure or throttled attempt, for forgetting and eviction.
    last_seen: Instant,
}

/// Failure counts keyed by one kind of key, with the size bound.
#[derive(Debug)]
struct Table<K> {
    entries: HashMap<K, Entry>,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new() -> Self {
        Table {
            entries: HashMap::new(),
        }
    }

    /// The live entry for `key`, dropping it if it has gone quiet.
    fn live<Q>(&mut self, key: &Q, now: Instant, config: &ThrottleConfig) -> Option<&mut Entry>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let is_stale = now.saturating_duration_since(self.entries.get(key)?.last_seen)
            >= config.forget_after();
        if is_stale {
            self.entries.remove(key);
            return None;
        }
        self.entries.get_mut(key)
    }

    /// Takes a throttled attempt into account and says how long it must wait.
    fn reserve<Q>(&mut self, key: &Q, now: Instant, config: &ThrottleConfig) -> Duration
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let Some(entry) = self.live(key, now, config) else {
            return Duration::ZERO;
        };
        let delay = config.delay(entry.failures);
        if delay.is_zero() {
            return Duration::ZERO;
        }
        let start = entry.ready_at.max(now);
        // Never book further ahead than max_delay: attackers must not be able to lock
        // the owner out for hours by queueing attempts.
        entry.ready_at = (start + delay).min(now + config.max_delay);
        entry.last_seen = now;
        start - now
    }

    fn fail(&mut self, key: K, now: Instant, config: &ThrottleConfig) {
        if self.live(&key, now, config).is_none() && self.entries.len() >= config.max_entries {
            self.make_room(now, config);
        }
        let entry = self.entries.entry(key).or_insert(Entry {
            failures: 0,
            ready_at: now,
            last_seen: now,
        });
        entry.failures = entry.failures.saturating_add(1);
        entry.last_seen = now;
        let next = now + config.delay(entry.failures);
        entry.ready_at = entry.ready_at.max(next).min(now + config.max_delay);
    }

    /// Frees at least one slot: forgets quiet entries, or else the longest-quiet one.
    fn make_room(&mut self, now: Instant, config: &ThrottleConfig) {
        let forget_after = config.forget_after();
        self.entries
            .retain(|_, e| now.saturating_duration_since(e.last_seen) < forget_after);
        while self.entries.len() >= config.max_entries.max(1) {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_seen)
                .map(|(k, _)| k.clone());
            let Some(oldest) = oldest else { break };
            self.entries.remove(&oldest);
        }
    }
}

/// The source-address key: IPv4 as is (IPv4-mapped IPv6 counts as IPv4), IPv6 by its
/// /64 prefix, since one host usually holds a whole /64 and could otherwise step through
/// addresses to escape the brake.
pub(crate) fn address_key(addr: IpAddr) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
        v4 => v4,
    }
}

/// The upper bound on any configured delay or quiet period.
const MAX_DELAY_LIMIT: Duration = Duration::from_secs(24 * 60 * 60);

/// Per-address and per-(account, address) login throttling state.
#[derive(Debug)]
pub struct Throttle {
    config: ThrottleConfig,
    /// Keyed by the normalized account name (the caller's choice: localpart or bare JID)
    /// and the [`address_key`] the attempts came from.
    accounts: Table<(Box<str>, IpAddr)>,
    /// Keyed by [`address_key`].
    addresses: Table<IpAddr>,
}

impl Throttle {
    /// Starts with nothing remembered. Delays are clamped to a day, which keeps the
    /// clock arithmetic far from overflow whatever the configuration says.
    pub fn new(mut config: ThrottleConfig) -> Self {
        config.max_delay = config.max_delay.min(MAX_DELAY_LIMIT);
        config.base_delay = config.base_delay.min(config.max_delay);
        config.forget_after = config.forget_after.min(MAX_DELAY_LIMIT);
        Throttle {
            config,
            accounts: Table::new(),
            addresses: Table::new(),
        }
    }

    /// How long to wait before this attempt to log in to `account` from `addr` may be
    /// evaluated, or `None` to go ahead now. A throttled attempt books its slot, so call
    /// this once per attempt.
    pub fn check(&mut self, account: &str, addr: IpAddr, now: Instant) -> Option<Duration> {
        let by_account =
            self.accounts
                .reserve(&(Box::from(account), address_key(addr)), now, &self.config);
        let by_address = self.check_addr_inner(addr, now);
        let wait = by_account.max(by_address);
        (!wait.is_zero()).then_some(wait)
    }

    /// Like [`Throttle::check`] for the address alone, for use before the account is
    /// known (e.g. when `<auth/>` arrives).
    pub fn check_addr(&mut self, addr: IpAddr, now: Instant) -> Option<Duration> {
        let wait = self.check_addr_inner(addr, now);
        (!wait.is_zero()).then_some(wait)
    }

    fn check_addr_inner(&mut self, addr: IpAddr, now: Instant) -> Duration {
        self.addresses
            .reserve(&address_key(addr), now, &self.config)
    }

    /// Records a failed attempt (wrong password or unknown account).
    pub fn failed(&mut self, account: &str, addr: IpAddr, now: Instant) {
        self.accounts
            .fail((Box::from(account), address_key(addr)), now, &self.config);
        self.addresses.fail(address_key(addr), now, &self.config);
    }

    /// Records a successful login: the account starts afresh from that address. The
    /// address only loses its pending delay (its count drops to the free allowance), so an
    /// attacker who owns one account cannot log in to it between guesses at others to earn
    /// new free tries.
    pub fn succeeded(&mut self, account: &str, addr: IpAddr) {
        self.accounts
            .entries
            .remove(&(Box::<str>::from(account), address_key(addr)));
        if let Some(entry) = self.addresses.entries.get_mut(&address_key(addr)) {
            entry.failures = entry.failures.min(self.config.free_attempts);
            entry.ready_at = entry.last_seen;
        }
    }

    /// The number of remembered accounts and addresses.
    pub fn len(&self) -> usize {
        self.accounts.entries.len() + self.addresses.entries.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const SEC: Duration = Duration::from_secs(1);

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    /// Fails `n` times, each attempt after waiting what `check` asked; returns the clock.
    fn fail_n(t: &mut Throttle, account: &str, addr: IpAddr, mut now: Instant, n: u32) -> Instant {
        for _ in 0..n {
            if let Some(wait) = t.check(account, addr, now) {
                now += wait;
            }
            t.failed(account, addr, now);
        }
        now
    }

    #[test]
    fn free_attempts_then_doubling_delays_up_to_the_cap() {
        let mut t = Throttle::new(ThrottleConfig::default());
        let now = Instant::now();
        for _ in 0..3 {
            assert_eq!(
                t.check("juliet", ip(1), now),
                None,
                "three failures are free"
            );
            t.failed("juliet", ip(1), now);
        }
        let mut now = now;
        let mut waits = Vec::new();
        for _ in 0..9 {
            let wait = t.check("juliet", ip(1), now).unwrap();
            waits.push(wait.as_secs());
            now += wait;
            t.failed("juliet", ip(1), now);
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn delay_counts_from_the_last_failure() {
        let mut t = Throttle::new(ThrottleConfig::default());
        let now = Instant::now();
        for _ in 0..5 {
            t.failed("juliet", ip(1), now);
        }
        // Five failures owe 4 s after the last one.
        assert_eq!(t.check("juliet", ip(1), now + SEC), Some(3 * SEC));
        let mut t = Throttle::new(ThrottleConfig::default());
        for _ in 0..5 {
            t.failed("juliet", ip(1), now);
        }
        assert_eq!(t.check("juliet", ip(1), now + 5 * SEC), None);
    }

    #[test]
    fn a_guesser_never_delays_the_owner_elsewhere() {
        let mut t = Throttle::new(ThrottleConfig::default());
        // A guesser hammers juliet's account from one address until the cap.
        let now = fail_n(&mut t, "juliet", ip(1), Instant::now(), 20);
        assert_eq!(t.check("juliet", ip(1), now), Some(60 * SEC));
        // Juliet herself, from another address, goes ahead at once, every time.
        for _ in 0..5 {
            assert_eq!(t.check("juliet", ip(2), now), None);
            t.succeeded("juliet", ip(2));
        }
        // Her success elsewhere does not free the guesser.
        assert!(t.check("juliet", ip(1), now).is_some());
        // Guesses spread over addresses are slowed per address.
        let mut now = now;
        for i in 10..15 {
            now = fail_n(&mut t, "juliet", ip(i), now, 4);
            assert!(t.check("juliet", ip(i), now).is_some());
        }
    }

    #[test]
    fn one_account_from_one_address() {
        let mut t = Throttle::new(ThrottleConfig::default());
        // Failures for one account from one address count towards that pair...
        let now = fail_n(&mut t, "juliet", ip(1), Instant::now(), 4);
        assert_eq!(t.check("juliet", ip(1), now), Some(2 * SEC));
        // ...and towards the address, for any account.
        let mut t2 = Throttle::new(ThrottleConfig::default());
        let now = fail_n(&mut t2, "juliet", ip(1), Instant::now(), 4);
        assert!(t2.check("romeo", ip(1), now).is_some());
        assert_eq!(t2.check("romeo", ip(2), now), None);
    }

    #[test]
    fn per_address_across_accounts() {
        let mut t = Throttle::new(ThrottleConfig::default());
        let mut now = Instant::now();
        for i in 0..5 {
            now = fail_n(&mut t, &format!("user{i}"), ip(7), now, 1);
        }
        assert!(t.check("someone-else", ip(7), now).is_some());
        assert!(t.check_addr(ip(7), now).is_some());
        assert_eq!(t.check("someone-else", ip(8), now), None);
    }

    #[test]
    fn ipv6_is_throttled_per_64() {
        let mut t = Throttle::new(ThrottleConfig::default());
        let mut now = Instant::now();
        for i in 0..5u16 {
            let addr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, i));
            now = fail_n(&mut t, &format!("user{i}"), addr, now, 1);
        }
        let same_64 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 9, 9, 9, 9));
        let other_64 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1));
        assert!(t.check("x", same_64, now).is_some());
        assert_eq!(t.check("y", other_64, now), None);
        // IPv4-mapped IPv6 is the IPv4 address.
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert_eq!(address_key(mapped), ip(1));
    }

    #[test]
    fn parallel_attempts_are_spaced_out() {
        let mut t = Throttle::new(ThrottleConfig::default());
        let now = fail_n(&mut t, "juliet", ip(1), Instant::now(), 6);
        // Six failures: the delay is 8 s. Three connections trying at once queue up
        // (the address and the account book the same slots).
        let waits: Vec<_> = (0..3)
            .map(|_| t.check("juliet", ip(1), now).unwrap().as_secs())
            .collect();
        assert_eq!(waits, [8, 16, 24]);
        // But never booked beyond max_delay.
        let waits: Vec<_> = (0..30)
            .map(|_| t.check("juliet", ip(1), now).unwrap())
            .collect();
        assert!(waits.iter().all(|w| *w <= 60 * SEC));
    }

    #[test]
    fn success_resets_the_account_and_the_address_delay() {
        let mut t = Throttle::new(ThrottleConfig::default());
        let now = fail_n(&mut t, "juliet", ip(1), Instant::now(), 6);
        t.succeeded("juliet", ip(1));
        assert_eq!(t.check("juliet", ip(1), now), None);
        // The address keeps its count at the free allowance: the next failure from it
        // is delayed at once.
        t.failed("romeo", ip(1), now);
        assert_eq!(t.check("tybalt", ip(1), now), Some(2 * SEC));
    }

    #[test]
    fn quiet_entries_are_forgotten() {
        let config = ThrottleConfig::default();
        let mut t = Throttle::new(config.clone());
        let now = fail_n(&mut t, "juliet", ip(1), Instant::now(), 8);
        let later = now + config.forget_after;
        assert_eq!(t.check("juliet", ip(1), later), None);
        assert!(t.is_empty());
    }

    #[test]
    fn table_size_is_bounded() {
        let config = ThrottleConfig {
            max_entries: 4,
            ..ThrottleConfig::default()
        };
        let mut t = Throttle::new(config);
        let start = Instant::now();
        for i in 0..10u8 {
            t.failed(&format!("user{i}"), ip(i), start + SEC * u32::from(i));
        }
        assert_eq!(t.accounts.entries.len(), 4);
        assert_eq!(t.addresses.entries.len(), 4);
        // The most recent survive.
        assert!(t.accounts.entries.contains_key(&("user9".into(), ip(9))));
        assert!(!t.accounts.entries.contains_key(&("user0".into(), ip(0))));
    }

    #[test]
    fn delays_do_not_overflow() {
        let config = ThrottleConfig {
            max_delay: Duration::MAX,
            ..ThrottleConfig::default()
        };
        assert_eq!(config.delay(2), Duration::ZERO);
        assert_eq!(config.delay(3), SEC);
        assert_eq!(config.delay(u32::MAX), SEC * (1 << 31));
        // The throttle clamps what the clock arithmetic sees.
        let mut t = Throttle::new(config);
        let now = fail_n(&mut t, "juliet", ip(1), Instant::now(), 100);
        assert_eq!(t.check("juliet", ip(1), now), Some(MAX_DELAY_LIMIT));
    }
}
