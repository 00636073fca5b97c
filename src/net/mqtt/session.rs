//! The broker's side of one MQTT connection, sans-IO: what a CONNECT is answered, and what
//! each packet after it does (acknowledgements written, readings taken, presence changes
//! and closes asked of the driver in [`super::conn`]).
//!
//! hearth is a broker that only listens: publishes become the device's presence
//! ([`super::map`]); subscriptions are granted (stock firmware subscribes to its command
//! topics, e.g. Tasmota's `cmnd/<topic>/#`, and reconnects in a loop when refused) but
//! nothing is ever delivered to them; no session state outlives a connection (CONNACK's
//! session present is always 0, 5.0 §3.2.2.1.1).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::codec::{self, Connect, Packet, Publish, Version, Will, reason};
use super::map::{self, MapRule, Mapped, Telemetry};
use crate::stanza::{StanzaCondition, StanzaError};
use crate::xml::Element;

/// QoS 2 flows a client may have open at once (5.0 Receive Maximum, §3.2.2.3.3).
pub const RECEIVE_MAX: u16 = 16;

/// The CONNACK code for a refusal, a bad password, or "try later".
pub fn refusal_code(version: Version, why: Refusal) -> u8 {
    match (version, why) {
        (Version::V311, Refusal::BadCredentials) => reason::V311_BAD_USER_OR_PASSWORD,
        (Version::V311, Refusal::NotAuthorized) => reason::V311_NOT_AUTHORIZED,
        (Version::V311, Refusal::Unavailable | Refusal::Throttled) => reason::V311_UNAVAILABLE,
        (Version::V311, Refusal::IdRejected) => reason::V311_ID_REJECTED,
        (Version::V311, Refusal::AuthMethod) => reason::V311_NOT_AUTHORIZED,
        (Version::V5, Refusal::BadCredentials) => reason::BAD_USER_OR_PASSWORD,
        (Version::V5, Refusal::NotAuthorized) => reason::NOT_AUTHORIZED,
        (Version::V5, Refusal::Unavailable) => reason::SERVER_UNAVAILABLE,
        (Version::V5, Refusal::Throttled) => reason::CONNECTION_RATE_EXCEEDED,
        (Version::V5, Refusal::IdRejected) => reason::CLIENT_ID_INVALID,
        (Version::V5, Refusal::AuthMethod) => reason::BAD_AUTH_METHOD,
    }
}

/// Every way a CONNECT ends without a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Unknown account, wrong password, no user name.
    BadCredentials,
    /// The account may not use MQTT (`mqtt_allowed`).
    NotAuthorized,
    /// Storage or the password checks could not answer now.
    Unavailable,
    /// The login throttle owes a delay longer than the connection may wait.
    Throttled,
    /// 3.1.1 §3.1.3.1: an empty client id needs a clean session (0x02; 5.0 0x85).
    IdRejected,
    /// 5.0 enhanced authentication asked for (0x8C), which hearth does not offer.
    AuthMethod,
}

/// Checks a CONNECT before credentials: `Err` is answered at once.
pub fn precheck(c: &Connect) -> Result<(), Refusal> {
    if c.auth_method.is_some() {
        return Err(Refusal::AuthMethod);
    }
    if c.version == Version::V311 && c.client_id.is_empty() && !c.clean_start {
        return Err(Refusal::IdRejected);
    }
    match (&c.username, &c.password) {
        (Some(_), Some(_)) => Ok(()),
        // 3.1.1 0x04, 5.0 0x86: hearth needs a user name and a password.
        _ => Err(Refusal::BadCredentials),
    }
}

/// The account a CONNECT's user name names: a localpart, or a bare JID of this `domain`.
/// `None` for anything else (then the answer is "bad user name or password").
pub fn account_of(username: &str, domain: &str) -> Option<String> {
    let (local, dom) = match username.split_once('@') {
        Some((l, d)) => (l, Some(d)),
        None => (username, None),
    };
    if let Some(d) = dom
        && !d.eq_ignore_ascii_case(domain)
    {
        return None;
    }
    let jid = crate::jid::BareJid::new(Some(local), domain).ok()?;
    jid.local().map(str::to_owned)
}

/// The answer the device's XMPP session gives to a stanza routed to it, if any. A sensor
/// reads nothing: an iq request gets `service-unavailable` (RFC 6120 §8.2.3: every request
/// is answered), and so does a chat or normal message with a body, so that a person
/// writing to the thermometer learns it was not read rather than losing the message
/// (RFC 6121 §8.5.3.1 lets a resource refuse messages this way). Presence, headlines,
/// group chat and errors go unanswered.
pub fn answer_routed(el: &Element) -> Option<Element> {
    let ty = el.attr("type");
    let answer = match el.name() {
        "iq" => matches!(ty, Some("get" | "set")),
        "message" => {
            !matches!(ty, Some("error" | "groupchat" | "headline"))
                && el.has_child("body", crate::ns::CLIENT)
        }
        _ => false,
    };
    if !answer {
        return None;
    }
    StanzaError::new(StanzaCondition::ServiceUnavailable)
        .with_text("this is a sensor: it reports over MQTT and reads nothing")
        .reply_to(el)
}

/// What the driver does after a packet.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    Continue,
    /// Send available presence now (a birth message).
    Available,
    /// Send unavailable presence now (an "offline" publish); the connection stays.
    Unavailable,
    /// The client said goodbye (DISCONNECT): `with_will` for 5.0's reason 0x04.
    Disconnected {
        with_will: bool,
    },
    /// Close the connection; version 5 clients first get DISCONNECT with this reason.
    Close {
        reason: u8,
        why: &'static str,
    },
}

/// An accepted connection's state.
pub struct Session {
    pub version: Version,
    /// The device's account (normalized localpart).
    pub account: String,
    rules: Arc<[MapRule]>,
    /// QoS 2 packet ids received and not yet released (PUBREL), at most
    /// [`RECEIVE_MAX`].
    qos2: Vec<u16>,
    /// The will, published (mapped) when the connection ends without DISCONNECT.
    pub will: Option<Will>,
    /// The device's readings, coalesced into presence.
    pub telemetry: Telemetry,
    /// Publishes for other devices' topics: logged once at debug, counted.
    pub foreign: u64,
}

impl Session {
    pub fn new(c: &Connect, account: String, rules: Arc<[MapRule]>) -> Session {
        Session {
            version: c.version,
            account,
            rules,
            qos2: Vec::new(),
            will: c.will.clone(),
            telemetry: Telemetry::default(),
            foreign: 0,
        }
    }

    /// Handles one packet after CONNECT; writes the answer to `out`.
    pub fn handle(&mut self, packet: Packet, now: Instant, out: &mut Vec<u8>) -> After {
        let v = self.version;
        match packet {
            Packet::Connect(_) => After::Close {
                // 3.1.1 §3.1.0, 5.0 §3.1: a second CONNECT is a protocol error.
                reason: reason::PROTOCOL_ERROR,
                why: "a second CONNECT",
            },
            Packet::Publish(p) => self.publish(p, now, out),
            Packet::PubRel { packet_id } => {
                let code = match self.qos2.iter().position(|&id| id == packet_id) {
                    Some(i) => {
                        self.qos2.swap_remove(i);
                        reason::SUCCESS
                    }
                    None => reason::PACKET_ID_NOT_FOUND,
                };
                codec::pubcomp(out, v, packet_id, code);
                After::Continue
            }
            // Answers to publishes hearth never sends: nothing to do.
            Packet::Ack { .. } => After::Continue,
            Packet::Subscribe { packet_id, subs } => {
                let codes: Vec<u8> = subs
                    .iter()
                    .map(|s| {
                        if super::topic::check_filter(&s.filter).is_err() {
                            match v {
                                Version::V311 => 0x80,
                                Version::V5 => reason::TOPIC_FILTER_INVALID,
                            }
                        } else if v == Version::V5 && s.filter.starts_with("$share/") {
                            reason::SHARED_SUBS_NOT_SUPPORTED
                        } else {
                            // Granted as asked: nothing is ever delivered, at any QoS.
                            s.qos
                        }
                    })
                    .collect();
                codec::suback(out, v, packet_id, &codes);
                After::Continue
            }
            Packet::Unsubscribe { packet_id, filters } => {
                codec::unsuback(out, v, packet_id, filters.len());
                After::Continue
            }
            Packet::PingReq => {
                codec::pingresp(out);
                After::Continue
            }
            Packet::Disconnect { reason } => After::Disconnected {
                with_will: v == Version::V5 && reason == 0x04,
            },
            Packet::Auth => After::Close {
                // 5.0 §4.12: AUTH without an authentication method in CONNECT.
                reason: reason::PROTOCOL_ERROR,
                why: "AUTH without enhanced authentication",
            },
        }
    }

    fn publish(&mut self, p: Publish, now: Instant, out: &mut Vec<u8>) -> After {
        let v = self.version;
        if p.qos == 2
            && let Some(id) = p.packet_id
        {
            if self.qos2.contains(&id) {
                // §4.3.3: a resent PUBLISH of an unreleased flow is not handled again.
                codec::pubrec(out, v, id, reason::SUCCESS);
                return After::Continue;
            }
            if self.qos2.len() >= usize::from(RECEIVE_MAX) {
                return After::Close {
                    reason: reason::RECEIVE_MAX_EXCEEDED,
                    why: "too many QoS 2 publishes unreleased",
                };
            }
        }
        let mapped = map::map_publish(&self.rules, &self.account, &p.topic, &p.payload);
        let (code, after) = match mapped {
            Mapped::Readings(r) => {
                let dropped = self.telemetry.update(r, now);
                if dropped > 0 {
                    log::debug!("mqtt: {}: {dropped} values over the limit", self.account);
                }
                (reason::SUCCESS, After::Continue)
            }
            Mapped::Unit { name, unit } => {
                self.telemetry.set_unit(name, unit);
                (reason::SUCCESS, After::Continue)
            }
            Mapped::Available => (reason::SUCCESS, After::Available),
            Mapped::Unavailable => (reason::SUCCESS, After::Unavailable),
            Mapped::Ignored => (reason::SUCCESS, After::Continue),
            Mapped::NotTheirs => {
                if self.foreign == 0 {
                    log::debug!(
                        "mqtt: {} published for another device's topic; ignored",
                        self.account
                    );
                }
                self.foreign += 1;
                (reason::NOT_AUTHORIZED, After::Continue)
            }
        };
        match (p.qos, p.packet_id) {
            (1, Some(id)) => codec::puback(out, v, id, code),
            (2, Some(id)) => {
                // A refused flow ends at PUBREC (5.0 §4.3.3: a reason of 0x80 or more).
                if code < 0x80 {
                    self.qos2.push(id);
                }
                codec::pubrec(out, v, id, code);
            }
            _ => {}
        }
        after
    }

    /// How long without a packet before the client is gone: 1.5 × its keep-alive
    /// (3.1.1 §3.1.2.10, 5.0 §3.1.2.10); `None` when it turned keep-alive off.
    pub fn idle_limit(keep_alive: u16) -> Option<Duration> {
        (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500))
    }

    /// The keep-alive hearth holds a client to: what it asked, but never off (0) and
    /// never over `max`, so a device whose connection died silently (power cut, Wi-Fi
    /// gone) does not stay "available" for ever. 5.0 tells the client (Server Keep Alive,
    /// §3.2.2.3.14); a 3.1.1 client is simply closed after 1.5 × `max` of silence, as
    /// mosquitto's `max_keepalive` does.
    pub fn keep_alive(asked: u16, max: u16) -> u16 {
        if asked == 0 || asked > max {
            max
        } else {
            asked
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(v: Version) -> Session {
        let c = Connect {
            version: v,
            clean_start: true,
            keep_alive: 60,
            client_id: "x".into(),
            will: None,
            username: Some("thermo".into()),
            password: Some(b"pw".to_vec()),
            auth_method: None,
            max_packet: 0,
        };
        Session::new(&c, "thermo".into(), Arc::from(Vec::new()))
    }

    fn publish(topic: &str, qos: u8, id: Option<u16>, payload: &[u8]) -> Packet {
        Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic: topic.into(),
            packet_id: id,
            payload: payload.to_vec(),
        })
    }

    #[test]
    fn qos_flows_are_acknowledged() {
        let mut s = session(Version::V311);
        let now = Instant::now();
        let mut out = Vec::new();
        let p = publish("thermo/sensor/t/state", 1, Some(5), b"20");
        assert_eq!(s.handle(p, now, &mut out), After::Continue);
        assert_eq!(out, [0x40, 2, 0, 5]);
        out.clear();
        let p = publish("thermo/sensor/t/state", 2, Some(6), b"21");
        s.handle(p.clone(), now, &mut out);
        assert_eq!(out, [0x50, 2, 0, 6]);
        out.clear();
        // Resent before PUBREL: acknowledged, not handled again.
        s.handle(p, now, &mut out);
        assert_eq!(out, [0x50, 2, 0, 6]);
        out.clear();
        s.handle(Packet::PubRel { packet_id: 6 }, now, &mut out);
        assert_eq!(out, [0x70, 2, 0, 6]);
        out.clear();
        let mut s5 = session(Version::V5);
        s5.handle(Packet::PubRel { packet_id: 9 }, now, &mut out);
        assert_eq!(out, [0x70, 3, 0, 9, 0x92]);
    }

    #[test]
    fn other_devices_topics_are_refused_in_v5() {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut s = session(Version::V5);
        s.handle(
            publish("tele/oven/SENSOR", 1, Some(1), b"{}"),
            now,
            &mut out,
        );
        assert_eq!(out, [0x40, 3, 0, 1, 0x87]);
        let mut s = session(Version::V311);
        out.clear();
        s.handle(
            publish("tele/oven/SENSOR", 1, Some(1), b"{}"),
            now,
            &mut out,
        );
        assert_eq!(out, [0x40, 2, 0, 1]);
        assert_eq!(s.foreign, 1);
    }

    #[test]
    fn too_many_open_qos2_flows_close() {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut s = session(Version::V5);
        for id in 1..=RECEIVE_MAX {
            let p = publish("thermo/sensor/t/state", 2, Some(id), b"1");
            assert_eq!(s.handle(p, now, &mut out), After::Continue);
        }
        let p = publish("thermo/sensor/t/state", 2, Some(999), b"1");
        assert!(matches!(
            s.handle(p, now, &mut out),
            After::Close {
                reason: reason::RECEIVE_MAX_EXCEEDED,
                ..
            }
        ));
    }

    #[test]
    fn subscriptions_are_granted_bad_filters_refused() {
        let now = Instant::now();
        let mut out = Vec::new();
        let subs = vec![
            codec::Subscription {
                filter: "cmnd/thermo/#".into(),
                qos: 1,
            },
            codec::Subscription {
                filter: "a/#/b".into(),
                qos: 0,
            },
        ];
        let mut s = session(Version::V311);
        s.handle(
            Packet::Subscribe {
                packet_id: 3,
                subs: subs.clone(),
            },
            now,
            &mut out,
        );
        assert_eq!(out, [0x90, 4, 0, 3, 1, 0x80]);
        out.clear();
        let mut s = session(Version::V5);
        s.handle(Packet::Subscribe { packet_id: 3, subs }, now, &mut out);
        assert_eq!(out, [0x90, 5, 0, 3, 0, 1, 0x8f]);
    }

    #[test]
    fn lifecycle_packets() {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut s = session(Version::V5);
        assert_eq!(s.handle(Packet::PingReq, now, &mut out), After::Continue);
        assert_eq!(out, [0xd0, 0]);
        assert_eq!(
            s.handle(publish("thermo/status", 0, None, b"online"), now, &mut out),
            After::Available
        );
        assert_eq!(
            s.handle(Packet::Disconnect { reason: 4 }, now, &mut out),
            After::Disconnected { with_will: true }
        );
        assert!(matches!(
            s.handle(Packet::Auth, now, &mut out),
            After::Close { .. }
        ));
    }

    #[test]
    fn what_is_routed_to_a_sensor_is_answered_or_dropped() {
        let el = |xml: &str| crate::xml::parse_fragment(xml).unwrap();
        let iq = el(
            "<iq xmlns='jabber:client' type='get' id='p1' from='alice@h/x' to='thermo@h/mqtt'><ping xmlns='urn:xmpp:ping'/></iq>",
        );
        let reply = answer_routed(&iq).expect("an error");
        assert_eq!(reply.attr("type"), Some("error"));
        assert_eq!(reply.attr("to"), Some("alice@h/x"));
        assert_eq!(reply.attr("id"), Some("p1"));
        let chat = el(
            "<message xmlns='jabber:client' type='chat' from='alice@h/x'><body>hi</body></message>",
        );
        assert!(answer_routed(&chat).is_some());
        for quiet in [
            "<iq xmlns='jabber:client' type='result' id='x'/>",
            "<message xmlns='jabber:client' type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
            "<message xmlns='jabber:client' type='headline'><body>x</body></message>",
            "<message xmlns='jabber:client' type='error'><body>x</body></message>",
            "<presence xmlns='jabber:client'/>",
        ] {
            assert!(answer_routed(&el(quiet)).is_none(), "{quiet}");
        }
    }

    #[test]
    fn keep_alive_is_never_off_nor_over_the_maximum() {
        assert_eq!(Session::keep_alive(30, 600), 30);
        assert_eq!(Session::keep_alive(0, 600), 600);
        assert_eq!(Session::keep_alive(3600, 600), 600);
        assert_eq!(Session::idle_limit(10), Some(Duration::from_secs(15)));
    }

    #[test]
    fn user_names_and_prechecks() {
        assert_eq!(
            account_of("Thermo", "home.local").as_deref(),
            Some("thermo")
        );
        assert_eq!(
            account_of("thermo@HOME.local", "home.local").as_deref(),
            Some("thermo")
        );
        assert_eq!(account_of("thermo@elsewhere.org", "home.local"), None);
        assert_eq!(account_of("", "home.local"), None);
        assert_eq!(account_of("a b@c", "home.local"), None);
        let mut c = Connect {
            version: Version::V311,
            clean_start: false,
            keep_alive: 0,
            client_id: String::new(),
            will: None,
            username: Some("x".into()),
            password: Some(Vec::new()),
            auth_method: None,
            max_packet: 0,
        };
        assert_eq!(precheck(&c), Err(Refusal::IdRejected));
        c.clean_start = true;
        assert_eq!(precheck(&c), Ok(()));
        c.password = None;
        assert_eq!(precheck(&c), Err(Refusal::BadCredentials));
        c.version = Version::V5;
        c.auth_method = Some("SCRAM-SHA-1".into());
        assert_eq!(precheck(&c), Err(Refusal::AuthMethod));
        assert_eq!(
            refusal_code(Version::V311, Refusal::BadCredentials),
            reason::V311_BAD_USER_OR_PASSWORD
        );
        assert_eq!(
            refusal_code(Version::V5, Refusal::NotAuthorized),
            reason::NOT_AUTHORIZED
        );
    }
}
