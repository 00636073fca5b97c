//! Just enough XML for a client of RFC 6120 §4: find the stream header and each complete
//! top-level element in a byte stream, and turn an element into a tiny tree.
//!
//! The framer only counts tag depth (servers send well-formed XML; a broken one ends the
//! session with an error). Complete elements are parsed with `xmlparser`. Names are kept as
//! local names: a load generator only needs to tell `<message>` from `<iq>` and find a few
//! children, and every server we talk to uses the standard prefixes anyway.

use std::fmt;

/// Why the byte stream could not be read as XML.
#[derive(Debug)]
pub enum XmlError {
    /// Bytes that are not UTF-8 (RFC 6120 §11.6 requires UTF-8).
    NotUtf8,
    /// `xmlparser` refused a complete element.
    Parse(String),
    /// A close tag at depth zero that is not `</stream:stream>`.
    Unbalanced,
    /// One top-level element grew beyond [`MAX_ELEMENT`].
    TooLarge,
}

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XmlError::NotUtf8 => write!(f, "stream is not UTF-8"),
            XmlError::Parse(e) => write!(f, "malformed XML: {e}"),
            XmlError::Unbalanced => write!(f, "close tag without an open element"),
            XmlError::TooLarge => write!(f, "element larger than {MAX_ELEMENT} bytes"),
        }
    }
}

/// A bound on one stanza so a misbehaving server cannot make us buffer forever.
pub const MAX_ELEMENT: usize = 1 << 20;

/// What the framer found next in the stream.
#[derive(Debug)]
pub enum Event {
    /// `<stream:stream ...>` with its attributes (RFC 6120 §4.7).
    StreamOpen(Element),
    /// One complete top-level element (a stanza, features, SASL or TLS negotiation).
    Element(Element),
    /// `</stream:stream>` (RFC 6120 §4.4).
    StreamClose,
}

/// An element with local names only, entity references resolved.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
    /// Concatenated character data directly inside this element.
    pub text: String,
}

impl Element {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Parses one complete element (`src` must hold exactly one root element).
    pub fn parse(src: &str) -> Result<Element, XmlError> {
        use xmlparser::{ElementEnd, Token, Tokenizer};
        let mut stack: Vec<Element> = Vec::new();
        let mut root = None;
        for token in Tokenizer::from(src) {
            let token = token.map_err(|e| XmlError::Parse(e.to_string()))?;
            match token {
                Token::ElementStart { local, .. } => stack.push(Element {
                    name: local.as_str().to_owned(),
                    ..Element::default()
                }),
                Token::Attribute {
                    prefix,
                    local,
                    value,
                    ..
                } => {
                    // Namespace declarations are of no use to us; skip them to stay small.
                    if prefix.as_str() == "xmlns" || (prefix.is_empty() && local == "xmlns") {
                        continue;
                    }
                    if let Some(el) = stack.last_mut() {
                        el.attrs
                            .push((local.as_str().to_owned(), unescape(value.as_str())));
                    }
                }
                Token::ElementEnd { end, .. } => match end {
                    ElementEnd::Open => {}
                    ElementEnd::Close(..) | ElementEnd::Empty => {
                        let Some(done) = stack.pop() else {
                            return Err(XmlError::Unbalanced);
                        };
                        match stack.last_mut() {
                            Some(parent) => parent.children.push(done),
                            None => root = Some(done),
                        }
                    }
                },
                Token::Text { text } => {
                    if let Some(el) = stack.last_mut() {
                        el.text.push_str(&unescape(text.as_str()));
                    }
                }
                Token::Cdata { text, .. } => {
                    if let Some(el) = stack.last_mut() {
                        el.text.push_str(text.as_str());
                    }
                }
                _ => {}
            }
        }
        root.ok_or(XmlError::Parse("no element".into()))
    }
}

/// Resolves the five predefined entities and character references (XML 1.0 §4.6, §4.1).
pub fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let ch = match entity {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "apos" => Some('\''),
            "quot" => Some('"'),
            _ => entity
                .strip_prefix("#x")
                .map(|h| u32::from_str_radix(h, 16))
                .or_else(|| entity.strip_prefix('#').map(|d| d.parse::<u32>()))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Escapes text for an attribute value or character data (XML 1.0 §2.4).
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['<', '>', '&', '\'', '"']) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out.into()
}

/// Splits a byte stream into the stream header, top-level elements and the stream close.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
    /// Where scanning resumes; everything before it belongs to the element being built.
    pos: usize,
    /// Start of the top-level element being collected.
    start: Option<usize>,
    /// Tag depth below the stream element.
    depth: u32,
    /// The stream header was seen (until the next restart).
    is_open: bool,
}

impl Framer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets everything: after STARTTLS and SASL success the stream restarts (RFC 6120
    /// §5.4.3.3, §6.4.6) and bytes from before belong to nothing.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Returns the next complete event, or `None` when more bytes are needed.
    pub fn next_event(&mut self) -> Result<Option<Event>, XmlError> {
        loop {
            if self.start.is_none() {
                // Between elements: skip whitespace keepalives (RFC 6120 §4.6.1) and text.
                match self.buf[self.pos..].iter().position(|&b| b == b'<') {
                    Some(i) => self.pos += i,
                    None => {
                        self.pos = self.buf.len();
                        self.compact();
                        return Ok(None);
                    }
                }
            }
            let Some(tag_len) = tag_end(&self.buf[self.pos..]) else {
                let pending = self.start.map_or(self.pos, |s| s);
                if self.buf.len() - pending > MAX_ELEMENT {
                    return Err(XmlError::TooLarge);
                }
                self.compact();
                return Ok(None);
            };
            let tag_start = self.pos;
            self.pos += tag_len;
            let tag = &self.buf[tag_start..self.pos];
            if tag_len < 2 || tag[0] != b'<' {
                // Character data inside an element: skip up to the next tag.
                continue;
            }
            match tag[1] {
                b'?' | b'!' => continue, // XML declaration, comment, CDATA section
                b'/' => {
                    if self.depth == 0 {
                        if self.start.is_none() {
                            self.is_open = false;
                            self.compact();
                            return Ok(Some(Event::StreamClose));
                        }
                        return Err(XmlError::Unbalanced);
                    }
                    self.depth -= 1;
                    if self.depth == 0 {
                        return self.finish();
                    }
                }
                _ => {
                    let is_empty = tag.ends_with(b"/>");
                    if !self.is_open && self.depth == 0 && !is_empty {
                        // The stream header is an open tag that never closes: parse it as
                        // an empty element to read its attributes.
                        let mut header = tag[..tag.len() - 1].to_vec();
                        header.extend_from_slice(b"/>");
                        let text = std::str::from_utf8(&header).map_err(|_| XmlError::NotUtf8)?;
                        let el = Element::parse(text)?;
                        self.is_open = true;
                        self.compact();
                        return Ok(Some(Event::StreamOpen(el)));
                    }
                    if self.depth == 0 {
                        self.start = Some(tag_start);
                    }
                    if is_empty {
                        if self.depth == 0 {
                            return self.finish();
                        }
                    } else {
                        self.depth += 1;
                    }
                }
            }
        }
    }

    /// The top-level element that started at `self.start` ended at `self.pos`.
    fn finish(&mut self) -> Result<Option<Event>, XmlError> {
        let start = self.start.take().unwrap_or(0);
        let text =
            std::str::from_utf8(&self.buf[start..self.pos]).map_err(|_| XmlError::NotUtf8)?;
        let el = Element::parse(text)?;
        self.compact();
        Ok(Some(Event::Element(el)))
    }

    /// Drops consumed bytes so the buffer does not grow with the stream.
    fn compact(&mut self) {
        let keep_from = self.start.unwrap_or(self.pos);
        if keep_from == 0 {
            return;
        }
        if keep_from == self.buf.len() {
            self.buf.clear();
        } else if keep_from > 4096 || keep_from * 2 > self.buf.len() {
            self.buf.drain(..keep_from);
        } else {
            return;
        }
        self.pos -= keep_from;
        if let Some(s) = self.start.as_mut() {
            *s -= keep_from;
        }
    }
}

/// Length of the markup or text run at the start of `b`, if it is complete: a tag up to its
/// `>` (quotes respected), a comment or CDATA section, or character data up to the next `<`.
fn tag_end(b: &[u8]) -> Option<usize> {
    if b.first() != Some(&b'<') {
        return b.iter().position(|&c| c == b'<');
    }
    if b.starts_with(b"<!--") {
        return find(b, b"-->").map(|i| i + 3);
    }
    if b.starts_with(b"<![CDATA[") {
        return find(b, b"]]>").map(|i| i + 3);
    }
    if b.len() < 9 && (b"<!--".starts_with(b) || b"<![CDATA[".starts_with(b)) {
        return None;
    }
    let mut quote = None;
    for (i, &c) in b.iter().enumerate().skip(1) {
        match (quote, c) {
            (None, b'"' | b'\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, b'>') => return Some(i + 1),
            _ => {}
        }
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' id='abc' from='x.example' version='1.0'>\
        <stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>\
        </stream:features> \n<message to='a@b/c' type='chat'><body>hi &amp; &lt;3 &#x41;</body>\
        <!-- c --><x a=\"q>p\"/></message><presence/></stream:stream>";

    fn events(chunks: &[&[u8]]) -> Vec<Event> {
        let mut f = Framer::new();
        let mut out = Vec::new();
        for c in chunks {
            f.push(c);
            while let Some(e) = f.next_event().unwrap() {
                out.push(e);
            }
        }
        out
    }

    fn check(ev: &[Event]) {
        assert_eq!(ev.len(), 5, "{ev:?}");
        let Event::StreamOpen(h) = &ev[0] else {
            panic!()
        };
        assert_eq!(h.attr("id"), Some("abc"));
        let Event::Element(f) = &ev[1] else { panic!() };
        assert_eq!(f.name, "features");
        assert!(f.child("starttls").unwrap().child("required").is_some());
        let Event::Element(m) = &ev[2] else { panic!() };
        assert_eq!(m.attr("type"), Some("chat"));
        assert_eq!(m.child("body").unwrap().text, "hi & <3 A");
        assert_eq!(m.child("x").unwrap().attr("a"), Some("q>p"));
        let Event::Element(p) = &ev[3] else { panic!() };
        assert_eq!(p.name, "presence");
        assert!(matches!(ev[4], Event::StreamClose));
    }

    #[test]
    fn whole_stream() {
        check(&events(&[STREAM.as_bytes()]));
    }

    #[test]
    fn split_at_every_byte() {
        let b = STREAM.as_bytes();
        for i in 0..b.len() {
            check(&events(&[&b[..i], &b[i..]]));
        }
    }

    #[test]
    fn byte_by_byte() {
        let b = STREAM.as_bytes();
        let chunks: Vec<&[u8]> = b.chunks(1).collect();
        check(&events(&chunks));
    }

    #[test]
    fn escape_round_trip() {
        let s = "a<b>&'\"";
        assert_eq!(unescape(&escape(s)), s);
    }
}
