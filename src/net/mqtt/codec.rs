//! MQTT packets, both versions a device speaks: 3.1.1 (OASIS, protocol level 4) and 5.0
//! (protocol level 5). Hand-written (mqttrs has no version 5, mqttbytes is abandoned,
//! rumqttd needs tokio): the dozen packet types a broker that only receives needs,
//! sans-IO, bounded and fuzzed (`fuzz/fuzz_targets/mqtt.rs`).
//!
//! [`decode`] takes bytes as they came and answers "not yet", one packet, or why the bytes
//! are not MQTT; the encoders write the server's packets. Nothing here allocates more than
//! the packet it was given (the caller bounds that with `max_packet`).

use std::fmt;

/// The two protocol versions hearth accepts (3.1.1 §3.1.2.2, 5.0 §3.1.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1, protocol level 4.
    V311,
    /// MQTT 5.0, protocol level 5.
    V5,
}

/// Why bytes are not a packet hearth accepts. 5.0 §4.13: the connection is closed, after a
/// DISCONNECT with [`DecodeError::reason`] once CONNECT said the client speaks version 5.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The remaining length says more than `max_packet` bytes (5.0 §3.2.2.3.6).
    TooLarge(usize),
    /// Not a well-formed packet (5.0 §1.2 "Malformed Packet").
    Malformed(&'static str),
    /// Well-formed, but not allowed here (5.0 §1.2 "Protocol Error").
    Protocol(&'static str),
    /// CONNECT for a protocol level hearth does not speak (3.1.1 §3.1.2.2).
    UnsupportedVersion(u8),
}

impl DecodeError {
    /// The version 5 reason code for a DISCONNECT (5.0 §2.4).
    pub fn reason(&self) -> u8 {
        match self {
            DecodeError::TooLarge(_) => reason::PACKET_TOO_LARGE,
            DecodeError::Malformed(_) => reason::MALFORMED,
            DecodeError::Protocol(_) => reason::PROTOCOL_ERROR,
            DecodeError::UnsupportedVersion(_) => reason::UNSUPPORTED_VERSION,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooLarge(n) => write!(f, "packet of {n} bytes is over the limit"),
            DecodeError::Malformed(why) => write!(f, "malformed packet: {why}"),
            DecodeError::Protocol(why) => write!(f, "protocol error: {why}"),
            DecodeError::UnsupportedVersion(v) => write!(f, "protocol level {v} not supported"),
        }
    }
}

/// Reason codes (5.0 §2.4) and 3.1.1's CONNACK return codes (3.1.1 §3.2.2.3) hearth sends.
pub mod reason {
    pub const SUCCESS: u8 = 0x00;
    pub const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;
    pub const UNSPECIFIED: u8 = 0x80;
    pub const MALFORMED: u8 = 0x81;
    pub const PROTOCOL_ERROR: u8 = 0x82;
    pub const UNSUPPORTED_VERSION: u8 = 0x84;
    pub const CLIENT_ID_INVALID: u8 = 0x85;
    pub const BAD_USER_OR_PASSWORD: u8 = 0x86;
    pub const NOT_AUTHORIZED: u8 = 0x87;
    pub const SERVER_UNAVAILABLE: u8 = 0x88;
    pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
    pub const BAD_AUTH_METHOD: u8 = 0x8C;
    pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
    pub const SESSION_TAKEN_OVER: u8 = 0x8E;
    pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
    pub const PACKET_ID_NOT_FOUND: u8 = 0x92;
    pub const RECEIVE_MAX_EXCEEDED: u8 = 0x93;
    pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
    pub const PACKET_TOO_LARGE: u8 = 0x95;
    pub const SHARED_SUBS_NOT_SUPPORTED: u8 = 0x9E;
    pub const CONNECTION_RATE_EXCEEDED: u8 = 0x9F;

    /// 3.1.1 §3.2.2.3 CONNACK return codes.
    pub const V311_ACCEPTED: u8 = 0x00;
    pub const V311_BAD_VERSION: u8 = 0x01;
    pub const V311_ID_REJECTED: u8 = 0x02;
    pub const V311_UNAVAILABLE: u8 = 0x03;
    pub const V311_BAD_USER_OR_PASSWORD: u8 = 0x04;
    pub const V311_NOT_AUTHORIZED: u8 = 0x05;
}

/// A last will (5.0 §3.1.2.5): published by the server when the connection ends without
/// DISCONNECT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
}

/// CONNECT (3.1.1 §3.1, 5.0 §3.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect {
    pub version: Version,
    pub clean_start: bool,
    /// Seconds; 0 turns keep-alive off (§3.1.2.10).
    pub keep_alive: u16,
    pub client_id: String,
    pub will: Option<Will>,
    pub username: Option<String>,
    pub password: Option<Vec<u8>>,
    /// 5.0 §3.1.2.11.9: enhanced authentication, which hearth does not offer.
    pub auth_method: Option<String>,
    /// 5.0 §3.1.2.11.4: the largest packet the client accepts (0: no limit given).
    pub max_packet: u32,
}

/// PUBLISH from the client (§3.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: u8,
    pub retain: bool,
    pub topic: String,
    /// Present for QoS 1 and 2.
    pub packet_id: Option<u16>,
    pub payload: Vec<u8>,
}

/// One topic filter of a SUBSCRIBE, with the QoS asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    pub filter: String,
    pub qos: u8,
}

/// A packet from a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    Connect(Box<Connect>),
    Publish(Publish),
    /// PUBACK, PUBREC, PUBCOMP from the client: answers to what hearth never sends.
    Ack {
        kind: u8,
        packet_id: u16,
    },
    PubRel {
        packet_id: u16,
    },
    Subscribe {
        packet_id: u16,
        subs: Vec<Subscription>,
    },
    Unsubscribe {
        packet_id: u16,
        filters: Vec<String>,
    },
    PingReq,
    /// With its 5.0 reason code (0 for 3.1.1). 0x04: "disconnect with will message".
    Disconnect {
        reason: u8,
    },
    /// 5.0 AUTH (§3.15).
    Auth,
}

/// What [`decode`] found at the start of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// More bytes are needed.
    Incomplete,
    /// A packet and how many bytes it took.
    Packet(Packet, usize),
}

// Packet types (§2.1.2).
const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const PUBREC: u8 = 5;
const PUBREL: u8 = 6;
const PUBCOMP: u8 = 7;
const SUBSCRIBE: u8 = 8;
const SUBACK: u8 = 9;
const UNSUBSCRIBE: u8 = 10;
const UNSUBACK: u8 = 11;
const PINGREQ: u8 = 12;
const PINGRESP: u8 = 13;
const DISCONNECT: u8 = 14;
const AUTH: u8 = 15;

/// Reads the variable byte integer (§1.5.5 / §2.2.3) at the start of `b`: `Ok(None)` when
/// more bytes are needed; at most four bytes.
fn varint(b: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for i in 0..4 {
        let Some(&byte) = b.get(i) else {
            return Ok(None);
        };
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            // §1.5.5: the shortest encoding is required in 5.0; a trailing zero byte
            // is not (0x80 0x00 encodes 0 in two bytes).
            if i > 0 && byte == 0 {
                return Err(DecodeError::Malformed("variable byte integer not minimal"));
            }
            return Ok(Some((value, i + 1)));
        }
    }
    Err(DecodeError::Malformed(
        "variable byte integer over four bytes",
    ))
}

/// Decodes the packet at the start of `buf`. `version` is the connection's once CONNECT
/// was read (`None` before: then only CONNECT is expected, but any packet decodes).
/// `max_packet` bounds the whole packet; a larger one is refused as soon as its fixed
/// header is read, before its bytes are waited for.
pub fn decode(
    buf: &[u8],
    version: Option<Version>,
    max_packet: usize,
) -> Result<Decoded, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(Decoded::Incomplete);
    };
    let Some((remaining, len_bytes)) = varint(&buf[1..])? else {
        return Ok(Decoded::Incomplete);
    };
    let total = 1 + len_bytes + remaining as usize;
    if total > max_packet {
        return Err(DecodeError::TooLarge(total));
    }
    if buf.len() < total {
        return Ok(Decoded::Incomplete);
    }
    let body = &buf[1 + len_bytes..total];
    let kind = first >> 4;
    let flags = first & 0x0f;
    let v5 = version == Some(Version::V5);
    let mut r = Reader { b: body, at: 0 };
    let packet = match kind {
        CONNECT => {
            expect_flags(flags, 0)?;
            Packet::Connect(Box::new(connect(&mut r)?))
        }
        PUBLISH => Packet::Publish(publish(&mut r, flags, v5)?),
        PUBACK | PUBREC | PUBCOMP => {
            expect_flags(flags, 0)?;
            let packet_id = r.u16()?;
            // 5.0 §3.4.2.1: a reason code and properties may follow; read and ignored.
            Packet::Ack { kind, packet_id }
        }
        PUBREL => {
            // §3.6.1: fixed header flags 0010.
            expect_flags(flags, 0b0010)?;
            let packet_id = r.u16()?;
            if v5 && !r.is_empty() {
                let _reason = r.u8()?;
                if !r.is_empty() {
                    properties(&mut r, Context::Other)?;
                }
            }
            r.end()?;
            Packet::PubRel { packet_id }
        }
        SUBSCRIBE => {
            expect_flags(flags, 0b0010)?;
            let packet_id = nonzero_id(r.u16()?)?;
            if v5 {
                properties(&mut r, Context::Other)?;
            }
            let mut subs = Vec::new();
            while !r.is_empty() {
                let filter = r.string()?;
                let options = r.u8()?;
                let qos = options & 0x03;
                // 3.1.1 §3.8.3.1: the upper six bits are reserved; 5.0 §3.8.3.1 uses
                // four of them (no local, retain as published, retain handling).
                let reserved = if v5 { options & 0xc0 } else { options & 0xfc };
                if qos > 2 || reserved != 0 || (v5 && (options >> 4) & 0x03 == 3) {
                    return Err(DecodeError::Malformed("bad subscription options"));
                }
                subs.push(Subscription { filter, qos });
            }
            // §3.8.3: at least one topic filter.
            if subs.is_empty() {
                return Err(DecodeError::Protocol("SUBSCRIBE without a topic filter"));
            }
            Packet::Subscribe { packet_id, subs }
        }
        UNSUBSCRIBE => {
            expect_flags(flags, 0b0010)?;
            let packet_id = nonzero_id(r.u16()?)?;
            if v5 {
                properties(&mut r, Context::Other)?;
            }
            let mut filters = Vec::new();
            while !r.is_empty() {
                filters.push(r.string()?);
            }
            if filters.is_empty() {
                return Err(DecodeError::Protocol("UNSUBSCRIBE without a topic filter"));
            }
            Packet::Unsubscribe { packet_id, filters }
        }
        PINGREQ => {
            expect_flags(flags, 0)?;
            r.end()?;
            Packet::PingReq
        }
        DISCONNECT => {
            expect_flags(flags, 0)?;
            let mut reason = 0;
            if v5 && !r.is_empty() {
                reason = r.u8()?;
                if !r.is_empty() {
                    properties(&mut r, Context::Other)?;
                }
            }
            r.end()?;
            Packet::Disconnect { reason }
        }
        AUTH if v5 => {
            expect_flags(flags, 0)?;
            Packet::Auth
        }
        // CONNACK, SUBACK, UNSUBACK, PINGRESP go to clients only; 0 and AUTH in 3.1.1
        // are reserved (§2.2.1).
        _ => return Err(DecodeError::Malformed("packet type not sent by clients")),
    };
    Ok(Decoded::Packet(packet, total))
}

/// The protocol level a CONNECT at the start of `buf` names, read without decoding the
/// rest: a version 5 client whose CONNECT is refused hears why in a CONNACK (5.0 §3.1.4),
/// even when the packet is too large or malformed further on.
pub fn connect_level(buf: &[u8]) -> Option<u8> {
    if buf.first() != Some(&(CONNECT << 4)) {
        return None;
    }
    let (_, n) = varint(buf.get(1..)?).ok()??;
    let head = buf.get(1 + n..1 + n + 7)?;
    (head[..6] == [0, 4, b'M', b'Q', b'T', b'T']).then_some(head[6])
}

fn expect_flags(flags: u8, want: u8) -> Result<(), DecodeError> {
    if flags == want {
        Ok(())
    } else {
        Err(DecodeError::Malformed("reserved fixed header flags"))
    }
}

fn nonzero_id(id: u16) -> Result<u16, DecodeError> {
    // §2.2.1: packet identifiers are non-zero.
    if id == 0 {
        Err(DecodeError::Malformed("packet identifier 0"))
    } else {
        Ok(id)
    }
}

fn connect(r: &mut Reader<'_>) -> Result<Connect, DecodeError> {
    let name = r.binary()?;
    let level = r.u8()?;
    let version = match (name, level) {
        (b"MQTT", 4) => Version::V311,
        (b"MQTT", 5) => Version::V5,
        // 3.1 ("MQIsdp", level 3) and anything newer: 3.1.1 §3.1.2.2 says to answer
        // with return code 0x01.
        (b"MQTT" | b"MQIsdp", level) => return Err(DecodeError::UnsupportedVersion(level)),
        _ => return Err(DecodeError::Protocol("protocol name is not MQTT")),
    };
    let v5 = version == Version::V5;
    let flags = r.u8()?;
    // §3.1.2.3: bit 0 is reserved and must be 0.
    if flags & 0x01 != 0 {
        return Err(DecodeError::Malformed("reserved CONNECT flag set"));
    }
    let clean_start = flags & 0x02 != 0;
    let has_will = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let has_password = flags & 0x40 != 0;
    let has_username = flags & 0x80 != 0;
    if will_qos == 3 {
        return Err(DecodeError::Malformed("will QoS 3"));
    }
    if !has_will && (will_qos != 0 || will_retain) {
        return Err(DecodeError::Malformed("will QoS or retain without a will"));
    }
    // 3.1.1 §3.1.2.9: a password needs a user name (5.0 allows one alone).
    if !v5 && has_password && !has_username {
        return Err(DecodeError::Malformed("password without user name"));
    }
    let keep_alive = r.u16()?;
    let mut props = Props::default();
    if v5 {
        props = properties(r, Context::Connect)?;
    }
    let client_id = r.string()?;
    let will = if has_will {
        if v5 {
            properties(r, Context::Will)?;
        }
        let topic = r.string()?;
        super::topic::check_name(&topic).map_err(DecodeError::Malformed)?;
        let payload = r.binary()?.to_vec();
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(r.string()?)
    } else {
        None
    };
    let password = if has_password {
        Some(r.binary()?.to_vec())
    } else {
        None
    };
    r.end()?;
    Ok(Connect {
        version,
        clean_start,
        keep_alive,
        client_id,
        will,
        username,
        password,
        auth_method: props.auth_method,
        max_packet: props.max_packet,
    })
}

fn publish(r: &mut Reader<'_>, flags: u8, v5: bool) -> Result<Publish, DecodeError> {
    let dup = flags & 0x08 != 0;
    let qos = (flags >> 1) & 0x03;
    let retain = flags & 0x01 != 0;
    // §3.3.1.2: QoS 3 is malformed; §3.3.1.1: DUP must be 0 for QoS 0.
    if qos == 3 {
        return Err(DecodeError::Malformed("PUBLISH QoS 3"));
    }
    if qos == 0 && dup {
        return Err(DecodeError::Malformed("DUP set on a QoS 0 PUBLISH"));
    }
    let topic = r.string()?;
    let packet_id = if qos > 0 {
        Some(nonzero_id(r.u16()?)?)
    } else {
        None
    };
    if v5 {
        let props = properties(r, Context::Publish)?;
        if props.topic_alias {
            // hearth's CONNACK gives no Topic Alias Maximum, that is 0 (§3.2.2.3.8).
            return Err(DecodeError::Protocol("topic alias not allowed"));
        }
    }
    super::topic::check_name(&topic).map_err(DecodeError::Protocol)?;
    Ok(Publish {
        dup,
        qos,
        retain,
        topic,
        packet_id,
        payload: r.rest().to_vec(),
    })
}

/// Where a property list is (5.0 §2.2.2.2 lists which property goes in which packet).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    Connect,
    Will,
    Publish,
    Other,
}

/// The properties hearth acts on.
#[derive(Default)]
struct Props {
    auth_method: Option<String>,
    max_packet: u32,
    topic_alias: bool,
}

/// Reads a 5.0 property list (§2.2.2): its length, then identifier and value pairs, each
/// of the type §2.2.2.2 gives it. Unknown identifiers are malformed; so is a property in
/// a packet it does not belong to.
fn properties(r: &mut Reader<'_>, cx: Context) -> Result<Props, DecodeError> {
    let len = r.varint()? as usize;
    let bytes = r.take(len)?;
    let mut p = Reader { b: bytes, at: 0 };
    let mut props = Props::default();
    let mut seen: u64 = 0;
    while !p.is_empty() {
        let id = p.varint()?;
        let allowed = match id {
            0x01 | 0x02 | 0x03 | 0x08 | 0x09 => matches!(cx, Context::Will | Context::Publish),
            0x18 => cx == Context::Will,
            0x23 => cx == Context::Publish,
            0x11 | 0x15 | 0x16 | 0x17 | 0x19 | 0x21 | 0x22 | 0x27 => cx == Context::Connect,
            // Reason string: DISCONNECT, PUBREL, AUTH.
            0x1f => cx == Context::Other,
            0x26 => true,
            _ => false,
        };
        if !allowed {
            return Err(DecodeError::Malformed("property not allowed here"));
        }
        // §2.2.2.2: only User Property may appear more than once.
        if id != 0x26 {
            let bit = 1u64 << (id & 0x3f);
            if seen & bit != 0 {
                return Err(DecodeError::Protocol("property repeated"));
            }
            seen |= bit;
        }
        match id {
            // Byte.
            0x01 | 0x17 | 0x19 => {
                if p.u8()? > 1 {
                    return Err(DecodeError::Protocol("property value not 0 or 1"));
                }
            }
            // Two byte integer.
            0x21 | 0x22 => {
                if p.u16()? == 0 && id == 0x21 {
                    return Err(DecodeError::Protocol("receive maximum 0"));
                }
            }
            0x23 => {
                p.u16()?;
                props.topic_alias = true;
            }
            // Four byte integer.
            0x02 | 0x11 | 0x18 => {
                p.u32()?;
            }
            0x27 => {
                let n = p.u32()?;
                if n == 0 {
                    return Err(DecodeError::Protocol("maximum packet size 0"));
                }
                props.max_packet = n;
            }
            // UTF-8 string.
            0x03 | 0x08 | 0x1f => {
                p.string()?;
            }
            0x15 => props.auth_method = Some(p.string()?),
            // Binary data.
            0x09 | 0x16 => {
                p.binary()?;
            }
            // String pair.
            0x26 => {
                p.string()?;
                p.string()?;
            }
            _ => return Err(DecodeError::Malformed("unknown property")),
        }
    }
    Ok(props)
}

/// A cursor over one packet's bytes; every read past the end is malformed.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn is_empty(&self) -> bool {
        self.at >= self.b.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or(DecodeError::Malformed("packet shorter than its fields"))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn rest(&mut self) -> &'a [u8] {
        let s = &self.b[self.at.min(self.b.len())..];
        self.at = self.b.len();
        s
    }

    fn end(&self) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed("bytes after the packet's fields"))
        }
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn varint(&mut self) -> Result<u32, DecodeError> {
        match varint(&self.b[self.at.min(self.b.len())..])? {
            Some((v, n)) => {
                self.at += n;
                Ok(v)
            }
            None => Err(DecodeError::Malformed("packet shorter than its fields")),
        }
    }

    /// Two-byte length and that many bytes (§1.5.6).
    fn binary(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u16()? as usize;
        self.take(n)
    }

    /// A UTF-8 string (§1.5.4): well-formed, no U+0000.
    fn string(&mut self) -> Result<String, DecodeError> {
        let b = self.binary()?;
        let s = std::str::from_utf8(b).map_err(|_| DecodeError::Malformed("string not UTF-8"))?;
        if s.contains('\0') {
            return Err(DecodeError::Malformed("string contains U+0000"));
        }
        Ok(s.to_owned())
    }
}

// ---- What the server writes ----

fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            break;
        }
    }
}

fn packet(out: &mut Vec<u8>, first: u8, body: &[u8]) {
    out.push(first);
    put_varint(out, body.len());
    out.extend_from_slice(body);
}

/// What a version 5 CONNACK tells the client about this server (5.0 §3.2.2.3).
#[derive(Clone, Copy, Debug)]
pub struct ServerLimits {
    /// Maximum Packet Size (§3.2.2.3.6).
    pub max_packet: u32,
    /// Receive Maximum (§3.2.2.3.3): QoS 2 flows open at once.
    pub receive_max: u16,
    /// Server Keep Alive (§3.2.2.3.14), when it differs from what the client asked.
    pub keep_alive: Option<u16>,
}

/// CONNACK (§3.2). `code` is a 3.1.1 return code or a 5.0 reason code as `version` says;
/// never a session present (hearth keeps no sessions, §3.2.2.2). `limits` and
/// `assigned_id` are version 5 properties.
pub fn connack(
    out: &mut Vec<u8>,
    version: Version,
    code: u8,
    limits: Option<ServerLimits>,
    assigned_id: Option<&str>,
) {
    let mut body = vec![0, code];
    if version == Version::V5 {
        let mut props = Vec::new();
        if let Some(l) = limits {
            props.push(0x27);
            props.extend_from_slice(&l.max_packet.to_be_bytes());
            props.push(0x21);
            props.extend_from_slice(&l.receive_max.to_be_bytes());
            // Shared subscriptions (0x2A): not available.
            props.extend_from_slice(&[0x2a, 0]);
            if let Some(k) = l.keep_alive {
                props.push(0x13);
                props.extend_from_slice(&k.to_be_bytes());
            }
        }
        if let Some(id) = assigned_id {
            props.push(0x12);
            put_string(&mut props, id);
        }
        put_varint(&mut body, props.len());
        body.extend_from_slice(&props);
    }
    packet(out, CONNACK << 4, &body);
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

/// PUBACK, PUBREC or PUBCOMP (§3.4, §3.5, §3.7): 5.0 writes a reason code other than
/// success; 3.1.1 has none.
fn ack(out: &mut Vec<u8>, first: u8, version: Version, packet_id: u16, code: u8) {
    let mut body = packet_id.to_be_bytes().to_vec();
    if version == Version::V5 && code != reason::SUCCESS {
        body.push(code);
    }
    packet(out, first, &body);
}

pub fn puback(out: &mut Vec<u8>, version: Version, packet_id: u16, code: u8) {
    ack(out, PUBACK << 4, version, packet_id, code);
}

pub fn pubrec(out: &mut Vec<u8>, version: Version, packet_id: u16, code: u8) {
    ack(out, PUBREC << 4, version, packet_id, code);
}

pub fn pubcomp(out: &mut Vec<u8>, version: Version, packet_id: u16, code: u8) {
    ack(out, PUBCOMP << 4, version, packet_id, code);
}

/// SUBACK (§3.9): one code per filter (a granted QoS, or a failure).
pub fn suback(out: &mut Vec<u8>, version: Version, packet_id: u16, codes: &[u8]) {
    let mut body = packet_id.to_be_bytes().to_vec();
    if version == Version::V5 {
        body.push(0);
    }
    body.extend_from_slice(codes);
    packet(out, SUBACK << 4, &body);
}

/// UNSUBACK (§3.11): 5.0 has one reason code per filter, 3.1.1 none.
pub fn unsuback(out: &mut Vec<u8>, version: Version, packet_id: u16, n: usize) {
    let mut body = packet_id.to_be_bytes().to_vec();
    if version == Version::V5 {
        body.push(0);
        // 0x11 "No subscription existed" would be as true; success is what brokers say.
        body.extend(std::iter::repeat_n(reason::SUCCESS, n));
    }
    packet(out, UNSUBACK << 4, &body);
}

pub fn pingresp(out: &mut Vec<u8>) {
    packet(out, PINGRESP << 4, &[]);
}

/// DISCONNECT from the server, version 5 only (§3.14; 3.1.1 just closes).
pub fn disconnect(out: &mut Vec<u8>, code: u8) {
    packet(out, DISCONNECT << 4, &[code, 0]);
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 16 * 1024;

    fn one(b: &[u8], v: Option<Version>) -> Result<Packet, DecodeError> {
        match decode(b, v, MAX)? {
            Decoded::Packet(p, n) => {
                assert_eq!(n, b.len());
                Ok(p)
            }
            Decoded::Incomplete => panic!("incomplete"),
        }
    }

    /// A 3.1.1 CONNECT as mosquitto_pub writes it (user, password, will).
    fn connect_311() -> Vec<u8> {
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0b1110_0110, 0, 60];
        for s in [
            &b"dev1"[..],
            b"tele/dev1/LWT",
            b"Offline",
            b"thermo",
            b"secret",
        ] {
            body.extend_from_slice(&(s.len() as u16).to_be_bytes());
            body.extend_from_slice(s);
        }
        let mut out = vec![0x10];
        put_varint(&mut out, body.len());
        out.extend(body);
        out
    }

    #[test]
    fn connect_311_with_will() {
        let Packet::Connect(c) = one(&connect_311(), None).unwrap() else {
            panic!()
        };
        assert_eq!(c.version, Version::V311);
        assert!(c.clean_start);
        assert_eq!(c.keep_alive, 60);
        assert_eq!(c.client_id, "dev1");
        assert_eq!(c.username.as_deref(), Some("thermo"));
        assert_eq!(c.password.as_deref(), Some(&b"secret"[..]));
        let w = c.will.unwrap();
        assert_eq!(
            (w.topic.as_str(), &w.payload[..]),
            ("tele/dev1/LWT", &b"Offline"[..])
        );
        assert_eq!((w.qos, w.retain), (0, true));
    }

    #[test]
    fn every_cut_is_incomplete() {
        let b = connect_311();
        for i in 0..b.len() {
            assert_eq!(
                decode(&b[..i], None, MAX),
                Ok(Decoded::Incomplete),
                "cut at {i}"
            );
        }
    }

    #[test]
    fn connect_5_with_properties() {
        // Session expiry 0, receive max 10, a user property; then client id "" and no
        // user.
        let props = [0x11, 0, 0, 0, 0, 0x21, 0, 10, 0x26, 0, 1, b'k', 0, 1, b'v'];
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0b0000_0010, 0, 30];
        body.push(props.len() as u8);
        body.extend_from_slice(&props);
        body.extend_from_slice(&[0, 0]);
        let mut b = vec![0x10, body.len() as u8];
        b.extend(body);
        let Packet::Connect(c) = one(&b, None).unwrap() else {
            panic!()
        };
        assert_eq!(c.version, Version::V5);
        assert_eq!(c.client_id, "");
        assert_eq!(c.username, None);
    }

    #[test]
    fn versions_other_than_4_and_5_are_refused() {
        let mut b = connect_311();
        b[8] = 3;
        assert_eq!(one(&b, None), Err(DecodeError::UnsupportedVersion(3)));
        b[8] = 6;
        assert_eq!(one(&b, None), Err(DecodeError::UnsupportedVersion(6)));
        b[4] = b'X';
        assert!(matches!(one(&b, None), Err(DecodeError::Protocol(_))));
    }

    #[test]
    fn reserved_connect_flag_and_will_qos_3_are_malformed() {
        let mut b = connect_311();
        b[9] |= 1;
        assert!(matches!(one(&b, None), Err(DecodeError::Malformed(_))));
        let mut b = connect_311();
        b[9] |= 0b0001_1000;
        assert!(matches!(one(&b, None), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn publish_qos_0_1_2() {
        let b = [0x30, 9, 0, 3, b'a', b'/', b'b', b'2', b'1', b'.', b'5'];
        let p = one(&b, Some(Version::V311)).unwrap();
        assert_eq!(
            p,
            Packet::Publish(Publish {
                dup: false,
                qos: 0,
                retain: false,
                topic: "a/b".into(),
                packet_id: None,
                payload: b"21.5".to_vec(),
            })
        );
        let b = [0x35, 7, 0, 3, b'a', b'/', b'b', 0, 7];
        let Packet::Publish(p) = one(&b, Some(Version::V311)).unwrap() else {
            panic!()
        };
        assert_eq!((p.qos, p.retain, p.packet_id), (2, true, Some(7)));
        // Version 5: an empty property list before the payload.
        let b = [0x32, 9, 0, 3, b'a', b'/', b'b', 0, 7, 0, b'x'];
        let Packet::Publish(p) = one(&b, Some(Version::V5)).unwrap() else {
            panic!()
        };
        assert_eq!((p.qos, &p.payload[..]), (1, &b"x"[..]));
    }

    #[test]
    fn publish_errors() {
        // QoS 3.
        assert!(one(&[0x36, 5, 0, 1, b'a', 0, 1], None).is_err());
        // DUP on QoS 0.
        assert!(one(&[0x38, 3, 0, 1, b'a'], None).is_err());
        // Packet id 0.
        assert!(one(&[0x32, 5, 0, 1, b'a', 0, 0], None).is_err());
        // A wildcard in a topic name.
        assert!(one(&[0x30, 3, 0, 1, b'#'], None).is_err());
        // A string running past the packet.
        assert!(one(&[0x30, 3, 0, 9, b'a'], None).is_err());
        // Invalid UTF-8.
        assert!(one(&[0x30, 4, 0, 2, 0xc3, 0x28], None).is_err());
        // A topic alias in version 5.
        let b = [0x30, 7, 0, 1, b'a', 3, 0x23, 0, 1];
        assert!(matches!(
            one(&b, Some(Version::V5)),
            Err(DecodeError::Protocol(_))
        ));
        // An unknown property.
        let b = [0x30, 5, 0, 1, b'a', 1, 0x7f];
        assert!(matches!(
            one(&b, Some(Version::V5)),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn too_large_is_refused_from_the_header() {
        // Remaining length 20000, nothing else sent yet.
        let mut b = vec![0x30];
        put_varint(&mut b, 20_000);
        assert_eq!(
            decode(&b, Some(Version::V5), MAX),
            Err(DecodeError::TooLarge(20_004))
        );
        // Five length bytes.
        assert!(decode(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x7f], None, MAX).is_err());
    }

    #[test]
    fn subscribe_unsubscribe_ping_disconnect() {
        let b = [0x82, 8, 0, 1, 0, 3, b'a', b'/', b'#', 1];
        assert_eq!(
            one(&b, Some(Version::V311)).unwrap(),
            Packet::Subscribe {
                packet_id: 1,
                subs: vec![Subscription {
                    filter: "a/#".into(),
                    qos: 1
                }]
            }
        );
        // Wrong flags on SUBSCRIBE.
        assert!(one(&[0x80, 8, 0, 1, 0, 3, b'a', b'/', b'#', 1], None).is_err());
        // Empty SUBSCRIBE.
        assert!(one(&[0x82, 2, 0, 1], None).is_err());
        let b = [0xa2, 5, 0, 2, 0, 1, b'a'];
        assert!(matches!(
            one(&b, None).unwrap(),
            Packet::Unsubscribe { packet_id: 2, .. }
        ));
        assert_eq!(one(&[0xc0, 0], None).unwrap(), Packet::PingReq);
        assert_eq!(
            one(&[0xe0, 0], None).unwrap(),
            Packet::Disconnect { reason: 0 }
        );
        assert_eq!(
            one(&[0xe0, 2, 4, 0], Some(Version::V5)).unwrap(),
            Packet::Disconnect { reason: 4 }
        );
        assert!(one(&[0xe0, 1, 4], Some(Version::V311)).is_err());
        assert!(one(&[0x20, 2, 0, 0], None).is_err());
    }

    #[test]
    fn the_level_of_a_connect_is_read_early() {
        assert_eq!(connect_level(&connect_311()), Some(4));
        let mut b = vec![0x10];
        put_varint(&mut b, 100_000);
        b.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 5]);
        assert_eq!(connect_level(&b), Some(5));
        assert_eq!(connect_level(&b[..5]), None);
        assert_eq!(connect_level(&[0x30, 0]), None);
    }

    #[test]
    fn encoders() {
        let mut out = Vec::new();
        connack(&mut out, Version::V311, 0, None, None);
        assert_eq!(out, [0x20, 2, 0, 0]);
        out.clear();
        connack(
            &mut out,
            Version::V5,
            reason::BAD_USER_OR_PASSWORD,
            None,
            None,
        );
        assert_eq!(out, [0x20, 3, 0, 0x86, 0]);
        out.clear();
        puback(&mut out, Version::V5, 9, reason::SUCCESS);
        assert_eq!(out, [0x40, 2, 0, 9]);
        out.clear();
        puback(&mut out, Version::V5, 9, reason::NOT_AUTHORIZED);
        assert_eq!(out, [0x40, 3, 0, 9, 0x87]);
        out.clear();
        suback(&mut out, Version::V311, 3, &[0, 1]);
        assert_eq!(out, [0x90, 4, 0, 3, 0, 1]);
        out.clear();
        disconnect(&mut out, reason::PACKET_TOO_LARGE);
        assert_eq!(out, [0xe0, 2, 0x95, 0]);
        let mut long = Vec::new();
        put_varint(&mut long, 16_383);
        assert_eq!(long, [0xff, 0x7f]);
        assert_eq!(varint(&long), Ok(Some((16_383, 2))));
    }
}
