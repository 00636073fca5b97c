//! Is the peer still there? Timers of one connection, sans-IO.
//!
//! Before the session is bound, one deadline covers the whole negotiation
//! (slowloris: a stream must finish TLS, SASL and bind in time, however
//! slowly it trickles bytes, `<connection-timeout/>` otherwise, RFC 6120
//! §4.9.3.4). Once bound, a session that has been silent for a while gets
//! an XEP-0199 §4.2 server-to-client ping; any bytes from it (the pong, an
//! error reply from a client that does not know ping, whitespace) prove it
//! is alive. If nothing comes within the ping timeout, the connection is
//! dead: half-open TCP connections (a phone that lost its network) would
//! otherwise hold a session, and its queue, for hours.

use std::time::{Duration, Instant};

use crate::ns;
use crate::xml::escape_attr;

/// The timer settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LivenessConfig {
    /// Silence after which a bound session is pinged.
    pub ping_after_idle: Duration,
    /// How long a pinged session has to send anything.
    pub ping_timeout: Duration,
}

/// What to do when [`Liveness::deadline`] passes.
#[derive(Debug, PartialEq, Eq)]
pub enum Due {
    /// Nothing yet (the timer fired early, or input came meanwhile).
    Nothing,
    /// Send [`ping_xml`] and wait for an answer.
    Ping,
    /// Negotiation took too long: close with `<connection-timeout/>`.
    NegotiationTimeout,
    /// The pinged peer did not answer: close with `<connection-timeout/>`.
    NoAnswer,
}

/// The timers of one connection.
#[derive(Debug)]
pub struct Liveness {
    config: LivenessConfig,
    /// Until bound: the negotiation deadline.
    negotiation_deadline: Option<Instant>,
    /// The last time bytes came from the peer.
    last_heard: Instant,
    /// When the outstanding ping was sent.
    pinged_at: Option<Instant>,
}

impl Liveness {
    /// A new connection that must be bound within `negotiation_timeout`.
    pub fn new(config: LivenessConfig, negotiation_timeout: Duration, now: Instant) -> Liveness {
        Liveness {
            config,
            negotiation_deadline: Some(now + negotiation_timeout),
            last_heard: now,
            pinged_at: None,
        }
    }

    /// The negotiation deadline, while negotiating.
    pub fn negotiation_deadline(&self) -> Option<Instant> {
        self.negotiation_deadline
    }

    /// The session was bound: from now on, silence leads to pings.
    pub fn bound(&mut self, now: Instant) {
        self.negotiation_deadline = None;
        self.last_heard = now;
    }

    /// An account was just registered on this stream (XEP-0077 §3.1, once per stream):
    /// the login that follows gets a whole `negotiation_timeout` of its own, so a slow
    /// registration (a person typing into the server's form) does not leave it none.
    pub fn registered(&mut self, negotiation_timeout: Duration, now: Instant) {
        if self.negotiation_deadline.is_some() {
            self.negotiation_deadline = Some(now + negotiation_timeout);
        }
    }

    /// Bytes arrived from the peer.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = now;
        self.pinged_at = None;
    }

    /// When [`Liveness::due`] next has something to do.
    pub fn deadline(&self) -> Instant {
        if let Some(d) = self.negotiation_deadline {
            return d;
        }
        match self.pinged_at {
            Some(at) => at + self.config.ping_timeout,
            None => self.last_heard + self.config.ping_after_idle,
        }
    }

    /// What is due at `now`; a [`Due::Ping`] is taken as sent.
    pub fn due(&mut self, now: Instant) -> Due {
        if now < self.deadline() {
            return Due::Nothing;
        }
        if self.negotiation_deadline.is_some() {
            return Due::NegotiationTimeout;
        }
        if self.pinged_at.is_some() {
            return Due::NoAnswer;
        }
        self.pinged_at = Some(now);
        Due::Ping
    }
}

/// XEP-0199 §4.2: the server pings a client, from the domain to the
/// session's full JID. The reply is not routed anywhere (an iq result to
/// the server is never answered), the bytes it took are what counts.
pub fn ping_xml(domain: &str, to: &str, id: u64) -> String {
    let mut s = String::with_capacity(128);
    s.push_str("<iq type='get' id='hearth-ping-");
    s.push_str(&id.to_string());
    s.push_str("' from='");
    escape_attr(domain, &mut s);
    s.push_str("' to='");
    escape_attr(to, &mut s);
    s.push_str("'><ping xmlns='");
    s.push_str(ns::PING);
    s.push_str("'/></iq>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn config() -> LivenessConfig {
        LivenessConfig {
            ping_after_idle: 300 * SEC,
            ping_timeout: 60 * SEC,
        }
    }

    #[test]
    fn negotiation_must_finish_in_time() {
        let t0 = Instant::now();
        let mut l = Liveness::new(config(), 30 * SEC, t0);
        // Input does not move the negotiation deadline (slowloris).
        l.heard(t0 + 29 * SEC);
        assert_eq!(l.deadline(), t0 + 30 * SEC);
        assert_eq!(l.due(t0 + 29 * SEC), Due::Nothing);
        assert_eq!(l.due(t0 + 30 * SEC), Due::NegotiationTimeout);
    }

    #[test]
    fn a_registration_gives_the_login_its_own_time() {
        let t0 = Instant::now();
        let mut l = Liveness::new(config(), 30 * SEC, t0);
        l.registered(30 * SEC, t0 + 25 * SEC);
        assert_eq!(l.deadline(), t0 + 55 * SEC);
        // Once bound, there is no negotiation left to extend.
        l.bound(t0 + 26 * SEC);
        l.registered(30 * SEC, t0 + 27 * SEC);
        assert_eq!(l.negotiation_deadline(), None);
    }

    #[test]
    fn silent_session_is_pinged_then_dropped() {
        let t0 = Instant::now();
        let mut l = Liveness::new(config(), 30 * SEC, t0);
        l.bound(t0 + SEC);
        assert_eq!(l.negotiation_deadline(), None);
        assert_eq!(l.deadline(), t0 + 301 * SEC);
        assert_eq!(l.due(t0 + 300 * SEC), Due::Nothing);
        assert_eq!(l.due(t0 + 301 * SEC), Due::Ping);
        assert_eq!(l.deadline(), t0 + 361 * SEC);
        assert_eq!(l.due(t0 + 330 * SEC), Due::Nothing);
        assert_eq!(l.due(t0 + 361 * SEC), Due::NoAnswer);
    }

    #[test]
    fn any_input_answers_a_ping() {
        let t0 = Instant::now();
        let mut l = Liveness::new(config(), 30 * SEC, t0);
        l.bound(t0);
        assert_eq!(l.due(t0 + 300 * SEC), Due::Ping);
        l.heard(t0 + 310 * SEC);
        assert_eq!(l.due(t0 + 360 * SEC), Due::Nothing);
        assert_eq!(l.deadline(), t0 + 610 * SEC);
        // A busy session is never pinged.
        l.heard(t0 + 600 * SEC);
        assert_eq!(l.due(t0 + 610 * SEC), Due::Nothing);
    }

    #[test]
    fn ping_is_escaped() {
        assert_eq!(
            ping_xml("home.local", "a@home.local/x'y", 7),
            "<iq type='get' id='hearth-ping-7' from='home.local' to='a@home.local/x&apos;y'>\
             <ping xmlns='urn:xmpp:ping'/></iq>"
        );
    }
}
