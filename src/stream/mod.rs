//! Stream negotiation: the core every stream shares ([`negotiation`]), the c2s
//! state machine on it, SASL, and login throttling.

pub mod c2s;
pub mod negotiation;
pub mod sasl;
pub mod throttle;

/// A fresh, unpredictable stream id (RFC 6120 §4.7.3).
pub fn new_stream_id() -> String {
    let mut b = [0u8; 12];
    // A failing OS random source leaves zeros; ids must only be unique
    // per stream, which the zero fallback would break, so mix in a counter.
    let _ = getrandom::fill(&mut b);
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut s = String::with_capacity(32);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s.push_str(&format!("{n:x}"));
    s
}
