//! Stream negotiation: the core every stream shares ([`negotiation`]), the c2s
//! state machine on it, SASL, and login throttling.
//!
//! DESIGN.md "Streams": one negotiation core (header, features, restarts,
//! errors) shared by the c2s and s2s machines, sans-IO; the connection loop is
//! generic over the machine. [`Machine`] is that seam.

pub mod c2s;
pub mod component;
pub mod negotiation;
pub mod s2s;
pub mod sasl;
pub mod sm;
pub mod throttle;
pub mod websocket;

use crate::stanza::StreamError;
use crate::xml::Event;
use negotiation::Wire;

/// What a connection loop needs of a stream machine, whichever it is (c2s
/// today; incoming and outgoing s2s next): feed it framer events and the
/// answers to what it asked, have it fail or shut down, and tell the stream
/// layer's actions ([`Wire`]: write, reset the framer, close) from the
/// machine's own (authenticate, bind, route, …), which the loop hands to the
/// machine's driver (`net/conn.rs`, `Driver`; `net/c2s.rs` for this one).
pub trait Machine {
    /// What the machine reacts to; framer events are one kind.
    type Input: From<Event>;
    /// What the machine asks for; the core's [`Wire`] actions are one kind.
    type Action: From<Wire>;

    /// Reacts to one input; the actions are to be carried out in order.
    fn handle(&mut self, input: Self::Input) -> Vec<Self::Action>;

    /// Ends the stream with `err` (RFC 6120 §4.9): a framer error, a
    /// timeout, the router closing the session.
    fn fail(&mut self, err: StreamError, out: &mut Vec<Self::Action>);

    /// The server is stopping: `system-shutdown` (RFC 6120 §4.9.3.19).
    fn shutdown(&mut self) -> Vec<Self::Action>;

    /// True when the stream is over.
    fn is_closed(&self) -> bool;

    /// The action as the stream layer's, or back as the machine's own.
    fn wire(action: Self::Action) -> Result<Wire, Self::Action>;
}

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
