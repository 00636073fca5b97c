//! XEP-0198: Stream Management — the counting, as plain data with no socket or clock.
//!
//! Two counters per direction, both unsigned 32-bit and wrapping (§4): the stanzas the
//! server has handled from its client (`h` in the server's `<a/>`, kept by the c2s machine)
//! and the stanzas it sent, kept here with the ones not yet acknowledged ([`Outbound`]).
//! Everything the server writes to a client passes through [`Outbound::record`] on its
//! way to the socket, so iq answers, offline messages, pings and routed stanzas are all
//! counted the same way: the top-level `<message/>`, `<presence/>` and `<iq/>` elements of
//! what is written (nonzas such as `<a/>` or `<r/>` are not stanzas and are not counted).

use std::collections::VecDeque;

use crate::xml::Element;

/// XEP-0198's namespace (§2).
pub const NS: &str = "urn:xmpp:sm:3";

/// A stanza written to the client and not yet acknowledged.
#[derive(Debug, PartialEq, Eq)]
pub struct Unacked {
    /// The stanza as written (our own serialization, `jabber:client`).
    pub xml: Box<str>,
    /// Its offline message id when it came out of offline storage (XEP-0160): such a
    /// message is deleted from storage only once acknowledged.
    pub offline_id: Option<i64>,
}

/// The client acknowledged more stanzas than were sent (§4): a stream error
/// `undefined-condition` with `<handled-count-too-high/>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooHigh {
    /// What the client said it handled.
    pub h: u32,
    /// What was sent.
    pub sent: u32,
}

impl TooHigh {
    /// The stream error's application condition (§4).
    pub fn element(&self) -> Element {
        Element::new("handled-count-too-high", NS)
            .with_attr("h", self.h.to_string())
            .with_attr("send-count", self.sent.to_string())
    }
}

/// The outbound half of stream management: what was sent since `<enabled/>` and what of
/// it the client has not acknowledged yet.
#[derive(Debug, Default)]
pub struct Outbound {
    /// Stanzas sent since management was enabled (mod 2^32).
    sent: u32,
    /// The stanzas after the last acknowledged one, oldest first: `sent - acked` of them.
    unacked: VecDeque<Unacked>,
    /// Bytes of `unacked`, for the bound.
    bytes: usize,
    /// An `<r/>` went out and its `<a/>` has not come back: no second one until it does.
    is_requested: bool,
    /// Bytes at the start of the output buffer already counted ([`Outbound::push_written`]).
    skip: usize,
    /// Stanzas counted since the last [`Outbound::record`].
    fresh: usize,
}

impl Outbound {
    pub fn new() -> Outbound {
        Outbound::default()
    }

    /// Stanzas sent since management was enabled (mod 2^32).
    pub fn sent(&self) -> u32 {
        self.sent
    }

    /// How many stanzas wait for an acknowledgement.
    pub fn unacked_len(&self) -> usize {
        self.unacked.len()
    }

    /// Bytes of the stanzas waiting for an acknowledgement.
    pub fn unacked_bytes(&self) -> usize {
        self.bytes
    }

    /// Counts and keeps the stanzas in `written` (the output buffer, about to go to the
    /// client) that [`Outbound::push_written`] did not already count. Returns how many
    /// stanzas were counted since the last call.
    pub fn record(&mut self, written: &str) -> usize {
        self.scan(written);
        self.skip = 0;
        std::mem::take(&mut self.fresh)
    }

    /// Counts the stanzas of `out` not counted yet; all of it is counted after.
    fn scan(&mut self, out: &str) {
        for (name, xml) in top_level(out.get(self.skip..).unwrap_or("")) {
            if matches!(name, "message" | "presence" | "iq") {
                self.push(xml.into(), None);
            }
        }
        self.skip = out.len();
    }

    /// Appends one stanza to the output buffer `out`, counted and kept now with what is
    /// known of it (an offline message's id); `out` must be written with
    /// [`Outbound::record`] called on it, as [`Outbound::record`] then skips it.
    pub fn push_written(&mut self, out: &mut String, u: Unacked) {
        // What is already in `out` went first: counted first.
        self.scan(out);
        out.push_str(&u.xml);
        self.push(u.xml, u.offline_id);
        self.skip = out.len();
    }

    /// Counts and keeps one stanza.
    fn push(&mut self, xml: Box<str>, offline_id: Option<i64>) {
        self.fresh += 1;
        self.sent = self.sent.wrapping_add(1);
        self.bytes += xml.len();
        self.unacked.push_back(Unacked { xml, offline_id });
    }

    /// An `<a h='…'/>` from the client (§4): drops what it acknowledges and hands it back
    /// (the offline messages among it are now to be deleted). `h` counts from the start
    /// and wraps; anything between the last acknowledgement and `sent` is acceptable.
    pub fn ack(&mut self, h: u32) -> Result<Vec<Unacked>, TooHigh> {
        self.is_requested = false;
        let acked_before = self.sent.wrapping_sub(self.unacked.len() as u32);
        let newly = h.wrapping_sub(acked_before) as usize;
        if newly > self.unacked.len() {
            return Err(TooHigh { h, sent: self.sent });
        }
        let gone: Vec<Unacked> = self.unacked.drain(..newly).collect();
        self.bytes -= gone
            .iter()
            .map(|u| u.xml.len())
            .sum::<usize>()
            .min(self.bytes);
        if self.unacked.is_empty() {
            self.unacked = VecDeque::new();
        }
        Ok(gone)
    }

    /// Whether to ask for an acknowledgement now: stanzas wait and no request is out.
    /// Marks one as out.
    pub fn should_request(&mut self) -> bool {
        if self.unacked.is_empty() || self.is_requested {
            return false;
        }
        self.is_requested = true;
        true
    }

    /// For a resumption (§5): after the client's `h`, what it did not get, to be sent
    /// again; the counter steps back so that sending them counts them again.
    pub fn resend(&mut self, h: u32) -> Result<(Vec<Unacked>, Vec<Unacked>), TooHigh> {
        let acked = self.ack(h)?;
        let again: Vec<Unacked> = self.unacked.drain(..).collect();
        self.sent = self.sent.wrapping_sub(again.len() as u32);
        self.bytes = 0;
        self.unacked = VecDeque::new();
        Ok((acked, again))
    }

    /// What is still unacknowledged, oldest first (a look, e.g. at a session about to
    /// hibernate: XEP-0357 tells a phone what it may have missed).
    pub fn unacked(&self) -> impl Iterator<Item = &Unacked> {
        self.unacked.iter()
    }

    /// Everything still unacknowledged, for the end of the session.
    pub fn take_unacked(&mut self) -> Vec<Unacked> {
        self.bytes = 0;
        std::mem::take(&mut self.unacked).into()
    }
}

/// The top-level elements of XML we wrote ourselves, as (name, text) pairs. Our writer
/// escapes `<` and `>` in text and attribute values and writes no comments, CDATA or
/// processing instructions, so every `<` starts a tag; anything that does not parse as
/// that (never expected) ends the scan.
pub fn top_level(xml: &str) -> impl Iterator<Item = (&str, &str)> {
    let bytes = xml.as_bytes();
    let mut pos = 0;
    std::iter::from_fn(move || {
        // Skip whitespace between elements.
        while pos < bytes.len() && bytes[pos] != b'<' {
            pos += 1;
        }
        let start = pos;
        let mut depth = 0usize;
        let mut name_end = None;
        while pos < bytes.len() {
            if bytes[pos] != b'<' {
                pos += 1;
                continue;
            }
            let close = memchr(b'>', &bytes[pos..])? + pos;
            let tag = &bytes[pos + 1..close];
            pos = close + 1;
            if tag.first() == Some(&b'/') {
                depth = depth.checked_sub(1)?;
            } else {
                if depth == 0 {
                    let n = tag
                        .iter()
                        .position(|b| b.is_ascii_whitespace() || *b == b'/')
                        .unwrap_or(tag.len());
                    name_end = Some(start + 1 + n);
                }
                if tag.last() != Some(&b'/') {
                    depth += 1;
                }
            }
            if depth == 0 {
                let name = xml.get(start + 1..name_end?)?;
                let name = name.rsplit(':').next().unwrap_or(name);
                return Some((name, xml.get(start..pos)?));
            }
        }
        None
    })
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|b| *b == needle)
}

/// What a client asked for in `<enable/>` (§3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Enable {
    /// `resume='true'` (or `1`).
    pub resume: bool,
    /// Its preferred longest time to resume, in seconds.
    pub max: Option<u32>,
}

impl Enable {
    pub fn parse(el: &Element) -> Enable {
        Enable {
            resume: matches!(el.attr("resume"), Some("true" | "1")),
            max: el.attr("max").and_then(|m| m.parse().ok()),
        }
    }
}

/// A `<resume/>` request (§5): the id it names and how many of our stanzas the client
/// handled; `None` when either is missing or malformed.
pub fn parse_resume(el: &Element) -> Option<(String, u32)> {
    let previd = el.attr("previd").filter(|p| !p.is_empty())?;
    let h = el.attr("h")?.parse().ok()?;
    Some((previd.to_owned(), h))
}

/// `<failed/>` with a stanza error condition (§3, §5) and, when known, how many of the
/// client's stanzas the server handled (§5, 1.6).
pub fn failed_xml(condition: &str, h: Option<u32>) -> String {
    let h = h.map(|h| format!(" h='{h}'")).unwrap_or_default();
    format!(
        "<failed xmlns='{NS}'{h}><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
    )
}

/// `<a h='…'/>` (§4).
pub fn ack_xml(h: u32) -> String {
    format!("<a xmlns='{NS}' h='{h}'/>")
}

/// `<r/>` (§4).
pub const REQUEST_XML: &str = "<r xmlns='urn:xmpp:sm:3'/>";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_stanzas() {
        let mut o = Outbound::new();
        let n = o.record(
            "<message to='a@b'><body>1 &lt; 2</body></message><a xmlns='urn:xmpp:sm:3' h='1'/>\
             <iq type='result' id='x'/><presence><show>away</show></presence>",
        );
        assert_eq!(n, 3);
        assert_eq!(o.sent(), 3);
        assert_eq!(o.unacked_len(), 3);
        assert!(o.unacked[1].xml.starts_with("<iq"));
        assert_eq!(&*o.unacked[1].xml, "<iq type='result' id='x'/>");
    }

    #[test]
    fn prefixed_and_nested_names() {
        let v: Vec<_> =
            top_level("<stream:error><x/></stream:error><message><a/><b></b></message>")
                .map(|(n, _)| n)
                .collect();
        assert_eq!(v, ["error", "message"]);
    }

    #[test]
    fn acks_drop_in_order() {
        let mut o = Outbound::new();
        o.record("<message id='1'/><message id='2'/><message id='3'/>");
        assert_eq!(o.ack(2).unwrap().len(), 2);
        assert_eq!(o.unacked_len(), 1);
        // The same h again acknowledges nothing new.
        assert_eq!(o.ack(2).unwrap().len(), 0);
        assert_eq!(o.ack(4), Err(TooHigh { h: 4, sent: 3 }));
        assert_eq!(o.ack(3).unwrap().len(), 1);
        assert_eq!(o.unacked_bytes(), 0);
    }

    /// §4: h wraps at 2^32.
    #[test]
    fn counters_wrap() {
        let mut o = Outbound {
            sent: u32::MAX - 1,
            ..Outbound::default()
        };
        o.record("<message/><message/><message/>");
        assert_eq!(o.sent(), 1);
        assert_eq!(o.ack(u32::MAX).unwrap().len(), 1);
        assert_eq!(o.ack(1).unwrap().len(), 2);
        assert_eq!(o.unacked_len(), 0);
    }

    #[test]
    fn one_request_at_a_time() {
        let mut o = Outbound::new();
        assert!(!o.should_request());
        o.record("<message/>");
        assert!(o.should_request());
        o.record("<message/>");
        assert!(!o.should_request());
        o.ack(1).unwrap();
        assert!(o.should_request());
    }

    #[test]
    fn resumption_resends_what_was_not_handled() {
        let mut o = Outbound::new();
        o.record("<message id='1'/><message id='2'/>");
        // Written (flushed): the next output buffer starts empty.
        let mut buf = String::new();
        o.push_written(
            &mut buf,
            Unacked {
                xml: "<message id='3'/>".into(),
                offline_id: Some(70),
            },
        );
        // What push_written counted is not counted again; what was before it is.
        assert_eq!(o.record(&buf), 1);
        let mut o2 = Outbound::new();
        let mut buf = String::from("<presence/>");
        o2.push_written(
            &mut buf,
            Unacked {
                xml: "<message/>".into(),
                offline_id: Some(1),
            },
        );
        assert_eq!(o2.record(&buf), 2);
        assert_eq!(o2.unacked[0].offline_id, None);
        assert_eq!(o2.unacked[1].offline_id, Some(1));
        assert_eq!(o.sent(), 3);
        let (acked, again) = o.resend(1).unwrap();
        assert_eq!(acked.len(), 1);
        assert_eq!(again.len(), 2);
        assert_eq!(again[1].offline_id, Some(70));
        assert_eq!(o.sent(), 1);
        // Sent again, they count again: the numbering is the old session's.
        for u in &again {
            o.record(&u.xml);
        }
        assert_eq!(o.sent(), 3);
        assert!(o.resend(5).is_err());
    }

    #[test]
    fn parses_requests() {
        let e = Element::new("enable", NS)
            .with_attr("resume", "true")
            .with_attr("max", "3600");
        assert_eq!(
            Enable::parse(&e),
            Enable {
                resume: true,
                max: Some(3600)
            }
        );
        assert!(!Enable::parse(&Element::new("enable", NS)).resume);
        let r = Element::new("resume", NS)
            .with_attr("previd", "abc")
            .with_attr("h", "7");
        assert_eq!(parse_resume(&r), Some(("abc".into(), 7)));
        let bad = Element::new("resume", NS)
            .with_attr("previd", "abc")
            .with_attr("h", "-1");
        assert_eq!(parse_resume(&bad), None);
        assert_eq!(
            parse_resume(&Element::new("resume", NS).with_attr("h", "1")),
            None
        );
    }

    #[test]
    fn failed_carries_h_when_known() {
        assert_eq!(
            failed_xml("item-not-found", Some(4)),
            "<failed xmlns='urn:xmpp:sm:3' h='4'><item-not-found \
             xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
        );
        assert!(!failed_xml("unexpected-request", None).contains(" h="));
    }
}
