//! RFC 7395: XMPP over WebSocket, the framing (sans-IO).
//!
//! Over a WebSocket every message is one complete XML element that parses on its own
//! ("XMPP Framing"): `<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>` where a TCP
//! stream has its `<stream:stream>` header ("Stream Initiation"), `<close/>` where it has
//! `</stream:stream>` ("Closing the Connection"), and every other element declares its namespaces itself.
//!
//! hearth runs the same c2s machine and connection loop over both: a WebSocket
//! connection is a virtual byte stream (`net/websocket.rs`). Going in, [`frame_in`]
//! checks that a message is one element and turns `<open/>` and `<close/>` into the
//! header and closing tag the framer knows; going out, [`Splitter`] cuts what the
//! machine writes into top-level elements, one message each, turning our header into
//! `<open/>`, our closing tag into `<close/>`, and declaring on each element the
//! namespaces its stream header declared (`jabber:client`, the `stream` prefix).
//! Why here rather than a framing mode in the negotiation core: the core is not the
//! only writer (the driver writes stanzas, offline messages as stored, stream
//! management's acks and resends), and all of it must come out framed; a translation
//! at the edge catches every writer, with no change to the machines.

use xmlparser::{ElementEnd, Token, Tokenizer};

use crate::ns;
use crate::stanza::{StreamCondition, StreamError};

/// The namespace of `<open/>` and `<close/>` (RFC 7395, "Stream Initiation", "Closing the Connection").
pub const FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";

/// The WebSocket subprotocol name a client must ask for (RFC 7395 §3.1).
pub const SUBPROTOCOL: &str = "xmpp";

/// One WebSocket text message from the client (RFC 7395, "XMPP Framing") as the bytes the c2s
/// framer reads: the message itself, or the stream header for `<open/>` and the
/// closing tag for `<close/>`. A message that is not exactly one complete element
/// (two elements, a partial one, text, nothing) is `not-well-formed`: it could not be
/// parsed as a document of its own. Namespaces and limits are the framer's to check.
pub fn frame_in(text: &str) -> Result<String, StreamError> {
    if text.trim().is_empty() {
        // COMPAT: a whitespace keepalive out of TCP habit (RFC 7395 wants WebSocket
        // pings instead); nothing for the framer, and no reason to end the stream.
        return Ok(String::new());
    }
    let top = top_element(text)?;
    if top.name == "open" && top.xmlns.as_deref() == Some(FRAMING) {
        let mut s = String::with_capacity(160 + text.len());
        s.push_str("<stream:stream xmlns='");
        s.push_str(ns::CLIENT);
        s.push_str("' xmlns:stream='");
        s.push_str(ns::STREAM);
        s.push('\'');
        for (name, value) in &top.attrs {
            // Raw values, still escaped as sent: valid between the same kind of quote.
            let q = if value.contains('\'') { '"' } else { '\'' };
            s.push(' ');
            s.push_str(name);
            s.push('=');
            s.push(q);
            s.push_str(value);
            s.push(q);
        }
        s.push('>');
        return Ok(s);
    }
    if top.name == "close" && top.xmlns.as_deref() == Some(FRAMING) {
        return Ok("</stream:stream>".into());
    }
    if top.prefix == "stream" && top.name == "stream" {
        // A TCP-style header: not a complete element, so never here; kept for clarity.
        return Err(not_well_formed(
            "a stream header in a WebSocket frame; send <open/>",
        ));
    }
    Ok(text.to_owned())
}

/// What [`top_element`] learned of a message's one element.
struct Top<'a> {
    prefix: &'a str,
    name: &'a str,
    /// Its `xmlns` attribute, raw.
    xmlns: Option<String>,
    /// Its other attributes (not namespace declarations), raw.
    attrs: Vec<(String, &'a str)>,
}

/// Checks that `text` is exactly one complete element (whitespace around it allowed) and
/// returns its name and attributes. One pass of the tokenizer, no tree.
fn top_element(text: &str) -> Result<Top<'_>, StreamError> {
    let mut depth = 0usize;
    let mut top: Option<Top<'_>> = None;
    let mut done = false;
    for token in Tokenizer::from(text) {
        let token = token.map_err(|e| not_well_formed(&e.to_string()))?;
        match token {
            Token::ElementStart { prefix, local, .. } => {
                if depth == 0 {
                    if done {
                        return Err(not_well_formed("more than one element in one frame"));
                    }
                    top = Some(Top {
                        prefix: prefix.as_str(),
                        name: local.as_str(),
                        xmlns: None,
                        attrs: Vec::new(),
                    });
                }
                depth += 1;
            }
            Token::Attribute {
                prefix,
                local,
                value,
                ..
            } if depth == 1 => {
                if let Some(t) = top.as_mut() {
                    match (prefix.as_str(), local.as_str()) {
                        ("", "xmlns") => t.xmlns = Some(value.as_str().to_owned()),
                        ("xmlns", _) => {}
                        ("", name) => t.attrs.push((name.to_owned(), value.as_str())),
                        (p, name) => t.attrs.push((format!("{p}:{name}"), value.as_str())),
                    }
                }
            }
            Token::Attribute { .. } => {}
            Token::ElementEnd { end, .. } => match end {
                ElementEnd::Open => {}
                ElementEnd::Close(prefix, local) => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        // Inner tags are matched by the framer; this one decides the frame.
                        if top.as_ref().is_some_and(|t| {
                            t.prefix != prefix.as_str() || t.name != local.as_str()
                        }) {
                            return Err(not_well_formed("mismatched closing tag"));
                        }
                        done = true;
                    }
                }
                ElementEnd::Empty => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        done = true;
                    }
                }
            },
            Token::Text { text: t } if depth == 0 && !t.as_str().trim().is_empty() => {
                return Err(not_well_formed("text outside the frame's element"));
            }
            // Comments, processing instructions and the like are the framer's to refuse
            // (restricted-xml, RFC 6120 §11.1); everything inside the element is its too.
            _ => {}
        }
    }
    match top {
        Some(t) if done => Ok(t),
        Some(_) => Err(not_well_formed("the frame's element is not complete")),
        None => Err(not_well_formed("a frame without an element")),
    }
}

fn not_well_formed(why: &str) -> StreamError {
    StreamError::new(StreamCondition::NotWellFormed).with_text(why.to_owned())
}

/// Cuts what the stream machine writes (a c2s stream's bytes: our header, elements
/// written relative to `jabber:client` with the `stream` prefix declared on the header,
/// our closing tag) into WebSocket messages of one element each (RFC 7395, "XMPP Framing").
/// Input that ends inside an element is kept until the rest is written.
#[derive(Debug, Default)]
pub struct Splitter {
    /// Written and not yet a whole element.
    pending: String,
}

impl Splitter {
    /// Takes `bytes` written by the machine; appends the complete messages to `frames`.
    pub fn write(&mut self, bytes: &str, frames: &mut Vec<String>) {
        self.pending.push_str(bytes);
        let mut at = 0;
        while let Some(unit) = next_unit(&self.pending[at..]) {
            let (len, kind) = unit;
            let piece = &self.pending[at..at + len];
            match kind {
                Unit::Skip => {}
                Unit::Header => frames.push(open_frame(piece)),
                Unit::Close => frames.push(format!("<close xmlns='{FRAMING}'/>")),
                Unit::Element => frames.push(declare_namespaces(piece)),
            }
            at += len;
        }
        self.pending.drain(..at);
        if self.pending.capacity() > 4096 && self.pending.is_empty() {
            // A large stanza went out: an idle connection keeps no large buffer.
            self.pending = String::new();
        }
    }
}

/// A complete piece at the start of what was written.
#[derive(Debug, PartialEq)]
enum Unit {
    /// Whitespace or the XML declaration: nothing to send.
    Skip,
    /// Our `<stream:stream …>` header.
    Header,
    /// `</stream:stream>`.
    Close,
    /// A first-level element.
    Element,
}

/// The length and kind of the first complete piece of `s`, `None` when `s` ends before
/// one does. `s` is our own serialization: text never holds a raw `<`, and attribute
/// values are quoted with `'` or `"`.
fn next_unit(s: &str) -> Option<(usize, Unit)> {
    let b = s.as_bytes();
    if b.is_empty() {
        return None;
    }
    if b[0] != b'<' {
        // Whitespace between elements (or anything else outside one): up to the next tag.
        let n = s.find('<').unwrap_or(s.len());
        return Some((n, Unit::Skip));
    }
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'<' {
            i += s[i..].find('<').unwrap_or(s.len() - i);
            continue;
        }
        let end = tag_end(&b[i..])? + i;
        let tag = &s[i..=end];
        i = end + 1;
        if tag.starts_with("<?") {
            if depth == 0 {
                return Some((i, Unit::Skip));
            }
        } else if tag.starts_with("</") {
            if depth == 0 {
                // Only the stream's closing tag can close what was never opened here.
                return Some((i, Unit::Close));
            }
            depth -= 1;
            if depth == 0 {
                return Some((i, Unit::Element));
            }
        } else if tag.ends_with("/>") {
            if depth == 0 {
                return Some((i, Unit::Element));
            }
        } else if depth == 0 && tag.starts_with("<stream:stream") {
            return Some((i, Unit::Header));
        } else {
            depth += 1;
        }
    }
    None
}

/// The index of the `>` ending the tag that starts `b`, skipping quoted values.
fn tag_end(b: &[u8]) -> Option<usize> {
    let mut quote = 0u8;
    for (i, &c) in b.iter().enumerate().skip(1) {
        match c {
            b'\'' | b'"' if quote == 0 => quote = c,
            c if c == quote => quote = 0,
            b'>' if quote == 0 => return Some(i),
            _ => {}
        }
    }
    None
}

/// `<open/>` (RFC 7395, "Stream Initiation") with our header's attributes but its namespaces.
fn open_frame(header: &str) -> String {
    let mut s = format!("<open xmlns='{FRAMING}'");
    for (name, value) in tag_attrs(header) {
        if name == "xmlns" || name.starts_with("xmlns:") {
            continue;
        }
        s.push(' ');
        s.push_str(name);
        s.push('=');
        s.push_str(value);
    }
    s.push_str("/>");
    s
}

/// An element as a message of its own (RFC 7395, "XMPP Framing"): the namespaces the stream
/// header declared for it are declared on it.
fn declare_namespaces(el: &str) -> String {
    let Some(end) = tag_end(el.as_bytes()) else {
        return el.to_owned();
    };
    let start = &el[..=end];
    let name_len = start[1..]
        .find(|c: char| c.is_whitespace() || c == '/' || c == '>')
        .unwrap_or(0);
    let name = &start[1..=name_len];
    let names: Vec<&str> = tag_attrs(start).map(|(n, _)| n).collect();
    let decl = match name.split_once(':') {
        Some(("stream", _)) if !names.contains(&"xmlns:stream") => {
            format!(" xmlns:stream='{}'", ns::STREAM)
        }
        None if !names.contains(&"xmlns") => format!(" xmlns='{}'", ns::CLIENT),
        _ => return el.to_owned(),
    };
    let mut s = String::with_capacity(el.len() + decl.len());
    s.push_str(&el[..=name_len]);
    s.push_str(&decl);
    s.push_str(&el[name_len + 1..]);
    s
}

/// The attributes of a start tag we wrote: names and quoted values.
fn tag_attrs(tag: &str) -> impl Iterator<Item = (&str, &str)> {
    let body = tag
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim_end_matches('/');
    let mut rest = body.find(char::is_whitespace).map_or("", |i| &body[i..]);
    std::iter::from_fn(move || {
        rest = rest.trim_start();
        let eq = rest.find('=')?;
        let name = rest[..eq].trim();
        let after = &rest[eq + 1..];
        let q = after.chars().next()?;
        let close = after[1..].find(q)? + 1;
        let value = &after[..=close];
        rest = &after[close + 1..];
        Some((name, value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&str]) -> Vec<String> {
        let mut s = Splitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.write(c, &mut out);
        }
        out
    }

    #[test]
    fn open_becomes_a_stream_header() {
        let h = frame_in(
            "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='home.local' version='1.0' xml:lang='de'/>",
        )
        .unwrap();
        assert_eq!(
            h,
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' \
             to='home.local' version='1.0' xml:lang='de'>"
        );
        // Double quotes and escapes survive as sent.
        let h = frame_in(r#"<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="a&apos;b"/>"#)
            .unwrap();
        assert!(h.ends_with(" to='a&apos;b'>"), "{h}");
    }

    #[test]
    fn close_becomes_the_closing_tag() {
        assert_eq!(
            frame_in("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>").unwrap(),
            "</stream:stream>"
        );
    }

    #[test]
    fn a_stanza_passes_as_sent() {
        let m = "<message xmlns='jabber:client' to='a@b'><body>x &lt; y</body></message>";
        assert_eq!(frame_in(m).unwrap(), m);
        assert_eq!(frame_in(&format!(" {m}\n")).unwrap(), format!(" {m}\n"));
    }

    #[test]
    fn anything_but_one_element_is_not_well_formed() {
        for bad in [
            "<a xmlns='x'/><b xmlns='x'/>",
            "<message xmlns='jabber:client'>",
            "hello",
            "<a xmlns='x'/>tail",
            "<a xmlns='x'></b>",
            "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'>",
        ] {
            let e = frame_in(bad).unwrap_err();
            assert_eq!(e.condition, StreamCondition::NotWellFormed, "{bad}");
        }
    }

    #[test]
    fn a_whitespace_keepalive_is_nothing() {
        assert_eq!(frame_in("").unwrap(), "");
        assert_eq!(frame_in(" \n").unwrap(), "");
    }

    #[test]
    fn open_in_another_namespace_is_just_an_element() {
        // The machine refuses it as what it is; it is not taken for a header.
        let f = "<open xmlns='jabber:client'/>";
        assert_eq!(frame_in(f).unwrap(), f);
    }

    #[test]
    fn our_header_becomes_open_and_closing_tag_close() {
        let out = split(&[
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' id='abc' from='home.local' \
             version='1.0' xml:lang='en'>",
            "<stream:features><mechanisms xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\">\
             <mechanism>PLAIN</mechanism></mechanisms></stream:features>",
            "</stream:stream>",
        ]);
        assert_eq!(
            out,
            [
                "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' id='abc' from='home.local' \
                 version='1.0' xml:lang='en'/>",
                "<stream:features xmlns:stream='http://etherx.jabber.org/streams'>\
                 <mechanisms xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"><mechanism>PLAIN\
                 </mechanism></mechanisms></stream:features>",
                "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>",
            ]
        );
    }

    #[test]
    fn elements_written_together_go_out_one_per_message() {
        let out = split(&[
            "<message to=\"a@b\" id='1'><body>1 &gt; 0 '\"</body></message><iq type='result' id='2'/>\
             <a xmlns='urn:xmpp:sm:3' h='1'/><stream:error><conflict \
             xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>",
        ]);
        assert_eq!(
            out,
            [
                "<message xmlns='jabber:client' to=\"a@b\" id='1'><body>1 &gt; 0 '\"</body></message>",
                "<iq xmlns='jabber:client' type='result' id='2'/>",
                "<a xmlns='urn:xmpp:sm:3' h='1'/>",
                "<stream:error xmlns:stream='http://etherx.jabber.org/streams'><conflict \
                 xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
                "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>",
            ]
        );
    }

    #[test]
    fn an_element_cut_anywhere_waits_for_its_end() {
        let whole = "<message to='a@b' x='>/'><body>hi</body><x xmlns='y'/></message><r xmlns='urn:xmpp:sm:3'/>";
        let expected = split(&[whole]);
        assert_eq!(expected.len(), 2);
        for cut in 1..whole.len() {
            let out = split(&[&whole[..cut], &whole[cut..]]);
            assert_eq!(out, expected, "cut at {cut}");
        }
    }

    #[test]
    fn every_frame_out_parses_on_its_own() {
        let out = split(
            &["<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' id='x' from='h' version='1.0'>\
             <stream:features/><presence from='a@h/r'><show>away</show></presence>"],
        );
        // A root that declares nothing the frames could lean on.
        let expected = [
            (FRAMING, "open"),
            (ns::STREAM, "features"),
            (ns::CLIENT, "presence"),
        ];
        assert_eq!(out.len(), expected.len());
        for (f, (ns, name)) in out.iter().zip(expected) {
            let mut framer = crate::xml::Framer::new(crate::xml::Limits::default());
            framer
                .feed(b"<s:stream xmlns:s='http://etherx.jabber.org/streams'>")
                .unwrap();
            framer.feed(f.as_bytes()).unwrap();
            let _ = framer.next_event().unwrap();
            match framer.next_event().unwrap() {
                Some(crate::xml::Event::Stanza(el)) => assert!(el.is(name, ns), "{f}"),
                other => panic!("{f}: {other:?}"),
            }
        }
    }
}
