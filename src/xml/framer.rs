//! Streaming XML framer: bytes in, XMPP stream events out (RFC 6120 §4
//! streams, §11 XML usage).
//!
//! The framer is sans-IO. The connection task hands it whatever the socket
//! produced ([`Framer::feed`]) and then drains [`Framer::next_event`] until
//! it answers `Ok(None)`. Input may be cut anywhere (mid-tag, mid-attribute,
//! mid-reference, mid-UTF-8 character): an unfinished piece is kept and
//! reported as "not yet", never as an error.
//!
//! # How it works
//!
//! `feed` does all the work in one pass over the new bytes:
//!
//! 1. A small scanner finds where the next piece of markup (`<…>`, a CDATA
//!    section, the XML declaration) ends, remembering how far it got and
//!    whether it is inside a quoted attribute value, so a tag that arrives
//!    in many chunks is never scanned twice. Restricted markup (comments,
//!    processing instructions, DTDs) is refused as soon as its first bytes
//!    are seen, before it is buffered.
//! 2. Each complete piece of markup is tokenized by `xmlparser`, which
//!    checks names, attribute syntax and characters. Since it only ever sees
//!    complete tokens, any error it reports is a real one.
//! 3. Namespaces are resolved with a scoped stack of declarations, and the
//!    stanza is built as an [`Element`] tree on a stack of open elements.
//!    Character data is decoded and appended as it arrives, so a large body
//!    does not sit in the byte buffer waiting for its closing tag.
//!
//! What is left in the byte buffer is at most one unfinished piece of
//! markup or a few bytes of an unfinished character or reference. Finished
//! events wait in a queue for `next_event`.
//!
//! # Limits ([`Limits`], XEP-0205)
//!
//! Every byte of a stanza, from its `<` to the end of its closing tag, is
//! counted as it arrives, including the unfinished piece still buffered, so
//! an oversized stanza fails while it is still arriving and the framer
//! never holds more than `max_stanza_bytes` of it (plus at most one input
//! chunk while that chunk is being looked at). Nesting depth is checked
//! before each start tag is parsed, attributes are counted while they are
//! tokenized, and everything before and including the stream header is
//! bounded by [`MAX_HEADER_BYTES`]. A broken limit is a `<policy-violation/>`.
//!
//! The element tree is larger than the XML it came from (an empty `<a/>`
//! costs about 150 bytes of tree, ~40 times its 4 bytes of XML), so
//! `max_stanza_bytes` alone would let a 256 KiB stanza of tiny elements
//! cost ~10 MB. [`Limits::max_elements`] caps the elements per stanza, and
//! with them the tree (adjacent text is merged, so text nodes only sit
//! next to elements: at most about as many of them as elements).
//!
//! # Choices where RFC 6120 leaves room
//!
//! - Non-whitespace character data between stanzas is `<bad-format/>`: it
//!   is well-formed XML, but XMPP cannot process it (§4.9.3.1). Before the
//!   stream header it is `<not-well-formed/>` (XML allows no text there).
//! - A reference to any entity other than the five predefined ones is
//!   `<restricted-xml/>` (§11.1) whether or not it is terminated with `;`;
//!   nothing is ever expanded. A malformed reference (`& `, `&#0;`,
//!   `&amp` without `;`) is `<not-well-formed/>`.
//! - Invalid UTF-8 is `<not-well-formed/>` (a fatal error in XML 1.0 §4.3.3);
//!   an XML declaration naming another encoding is `<unsupported-encoding/>`
//!   (§11.6).
//! - A root element in the streams namespace but not named `stream` is
//!   `<bad-format/>`; a root in any other namespace is `<invalid-namespace/>`
//!   (§4.8.1).
//! - Whether the content namespace ([`StreamHeader::default_ns`]) is
//!   acceptable (`jabber:client` for c2s, `jabber:server` for s2s) is for
//!   the stream layer to decide: it knows which kind of stream it serves.
//! - Input after `</stream:stream>` is ignored: the stream is over.

use std::collections::VecDeque;
use std::fmt;
use std::mem;

use xmlparser::{ElementEnd, Token, Tokenizer, XmlCharExt};

use super::Element;
use crate::ns;

/// The namespace the `xml` prefix is bound to (XML Namespaces 1.0 §3).
const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";
/// The namespace of `xmlns` declarations themselves; never declarable.
const XMLNS_NS: &str = "http://www.w3.org/2000/xmlns/";

/// Bound on everything up to and including the stream header: the XML
/// declaration, whitespace and the `<stream:stream …>` tag. Real headers are
/// a few hundred bytes; this is checked before authentication, when nobody
/// has earned a larger buffer.
pub const MAX_HEADER_BYTES: usize = 4096;

/// Longest run of digits accepted in a numeric character reference. XML
/// allows any number of leading zeros; nobody needs more than this.
const MAX_REF_DIGITS: usize = 16;

/// Byte-buffer capacity that may stay allocated while a small piece is
/// pending; more than that (left over from a big read) is given back.
const IDLE_BUF_CAPACITY: usize = 1024;

/// Stack capacities kept between stanzas (open elements, namespace
/// declarations, finished events). Nothing: an idle session should hold no
/// per-stanza memory, and one allocation per stanza is cheap next to TLS.
const IDLE_STACK_CAPACITY: usize = 0;

/// Hard limits on what a peer may send (XEP-0205: Best Practices to
/// Discourage Denial of Service Attacks). Breaking one is a
/// `<policy-violation/>` stream error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest stanza in bytes as sent, from its `<` to the end of its
    /// closing tag. Enforced while the stanza arrives.
    pub max_stanza_bytes: usize,
    /// Deepest element nesting inside a stanza; the stanza element itself
    /// is depth 1 (the stream element is not counted).
    pub max_depth: usize,
    /// Most attributes on one element, namespace declarations included.
    pub max_attrs: usize,
    /// Most elements in one stanza, the stanza element included: what
    /// bounds the tree built from many tiny elements (see the module docs).
    pub max_elements: usize,
}

impl Default for Limits {
    /// 256 KiB per stanza (room for inline images and large rosters), depth
    /// 32 (the deepest common payloads, a MAM result wrapping a forwarded
    /// message with XHTML-IM, stay under 16), 32 attributes (a Jingle ICE
    /// candidate, among the widest, has 12), 4096 elements (an OMEMO
    /// bundle with 100 pre-keys has about 110; a roster push or vCard a few
    /// dozen), which caps a stanza's tree near 1 MB however it is written.
    fn default() -> Self {
        Limits {
            max_stanza_bytes: 256 * 1024,
            max_depth: 32,
            max_attrs: 32,
            max_elements: 4096,
        }
    }
}

/// The opening `<stream:stream>` tag (RFC 6120 §4.7): its attributes and the
/// content namespace it declares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamHeader {
    /// `to`, `from`, `version`, `id`, `xml:lang` and whatever else was sent,
    /// named as in [`Element`]; namespace declarations are not included.
    pub attrs: Vec<(String, String)>,
    /// The default namespace declared on the stream element (§4.8.2), empty
    /// when none was declared. Stanzas without a prefix inherit it.
    pub default_ns: String,
}

impl StreamHeader {
    /// The value of attribute `key` (`"to"`, `"xml:lang"`, …).
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The content namespace (`jabber:client`, `jabber:server`), or `""`.
    pub fn default_ns(&self) -> &str {
        &self.default_ns
    }
}

/// What the framer hands up, in stream order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The stream header arrived (§4.2 initial stream, or after a restart).
    Open(StreamHeader),
    /// A complete first-level child of the stream: a stanza, or a stream
    /// negotiation element such as `<starttls/>` or `<auth/>`.
    Stanza(Element),
    /// `</stream:stream>` (§4.4). Input after it is ignored.
    Close,
}

/// Which limit was broken, with its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// [`Limits::max_stanza_bytes`].
    StanzaBytes(usize),
    /// [`MAX_HEADER_BYTES`].
    HeaderBytes(usize),
    /// [`Limits::max_depth`].
    Depth(usize),
    /// [`Limits::max_attrs`].
    Attributes(usize),
    /// [`Limits::max_elements`].
    Elements(usize),
}

/// Why the stream must be closed: one variant per RFC 6120 §4.9.3 stream
/// error condition the framer can produce. [`XmlError::condition`] names the
/// element to send; `Display` gives the human-readable `<text/>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XmlError {
    /// §4.9.3.1 `<bad-format/>`: well-formed XML that XMPP cannot process
    /// (text between stanzas, a root element other than `<stream/>`).
    BadFormat(&'static str),
    /// §4.9.3.2 `<bad-namespace-prefix/>`: a prefix that was never declared.
    BadNamespacePrefix(String),
    /// §4.9.3.10 `<invalid-namespace/>`: the root element is not in the
    /// streams namespace; holds the namespace it was in.
    InvalidNamespace(String),
    /// §4.9.3.13 `<not-well-formed/>`: a violation of XML 1.0 or XML
    /// Namespaces well-formedness, including invalid UTF-8.
    NotWellFormed(String),
    /// §4.9.3.14 `<policy-violation/>`: a [`Limits`] bound was broken
    /// (XEP-0205).
    PolicyViolation(Limit),
    /// §4.9.3.18 `<restricted-xml/>`: a comment, processing instruction,
    /// DTD or entity reference (§11.1).
    RestrictedXml(&'static str),
    /// §4.9.3.22 `<unsupported-encoding/>`: the XML declaration names an
    /// encoding other than UTF-8 (§11.6); holds the name (clipped).
    UnsupportedEncoding(String),
}

impl XmlError {
    /// The RFC 6120 §4.9.3 condition element name, e.g. `"not-well-formed"`.
    pub fn condition(&self) -> &'static str {
        match self {
            XmlError::BadFormat(_) => "bad-format",
            XmlError::BadNamespacePrefix(_) => "bad-namespace-prefix",
            XmlError::InvalidNamespace(_) => "invalid-namespace",
            XmlError::NotWellFormed(_) => "not-well-formed",
            XmlError::PolicyViolation(_) => "policy-violation",
            XmlError::RestrictedXml(_) => "restricted-xml",
            XmlError::UnsupportedEncoding(_) => "unsupported-encoding",
        }
    }
}

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XmlError::BadFormat(what) => write!(f, "{what}"),
            XmlError::BadNamespacePrefix(p) => write!(f, "undeclared namespace prefix '{p}'"),
            XmlError::InvalidNamespace(ns) => write!(
                f,
                "the stream element must be in namespace {}, not '{ns}'",
                ns::STREAM
            ),
            XmlError::NotWellFormed(why) => write!(f, "XML not well-formed: {why}"),
            XmlError::PolicyViolation(limit) => match limit {
                Limit::StanzaBytes(n) => write!(f, "stanza larger than {n} bytes"),
                Limit::HeaderBytes(n) => write!(f, "stream header larger than {n} bytes"),
                Limit::Depth(n) => write!(f, "elements nested deeper than {n}"),
                Limit::Attributes(n) => write!(f, "more than {n} attributes on one element"),
                Limit::Elements(n) => write!(f, "more than {n} elements in one stanza"),
            },
            XmlError::RestrictedXml(what) => write!(f, "XMPP does not allow {what}"),
            XmlError::UnsupportedEncoding(enc) => {
                write!(f, "encoding '{enc}' is not supported, only UTF-8")
            }
        }
    }
}

impl std::error::Error for XmlError {}

/// Where the framer is in the stream.
#[derive(Clone, Debug)]
enum Phase {
    /// Before the stream header. `at_start` while nothing at all has been
    /// consumed, the only place an XML declaration may appear.
    Prolog { at_start: bool },
    /// After the stream header: stanzas, whitespace, the closing tag.
    Open,
    /// After `</stream:stream>`: input is ignored until `reset`.
    Closed,
    /// After an error: the framer only repeats it.
    Failed(XmlError),
}

/// How far the scanner got in the unfinished piece of markup at the start
/// of the buffer, so the next `feed` resumes instead of starting over.
#[derive(Clone, Copy, Debug, Default)]
struct Resume {
    /// Bytes of the piece already scanned.
    scanned: usize,
    /// The quote character of the attribute value the scan stopped in, or 0.
    quote: u8,
}

/// An element whose closing tag has not arrived yet.
#[derive(Debug)]
struct Frame {
    element: Element,
    /// The prefix as written, since the closing tag must repeat the same
    /// qualified name (XML 1.0 §3 WFC: Element Type Match).
    prefix: String,
    /// Length of the namespace stack before this element's declarations,
    /// to drop them when it closes.
    ns_mark: usize,
}

/// The streaming framer: see the module docs.
#[derive(Debug)]
pub struct Framer {
    /// Current bounds; may be raised after authentication.
    limits: Limits,
    /// Where we are in the stream, or the error that ended it.
    phase: Phase,
    /// Bytes received but not yet consumed: one unfinished piece at most.
    buf: Vec<u8>,
    /// Scanner progress through the unfinished markup in `buf`.
    resume: Resume,
    /// Bytes consumed so far of the current unit: the prolog and header
    /// while in `Prolog`, the current stanza while `Open`.
    unit_bytes: usize,
    /// Open elements of the stanza being built; empty between stanzas.
    stack: Vec<Frame>,
    /// Elements started so far in the current stanza.
    elements: usize,
    /// Namespace declarations in scope as (prefix, uri), innermost last;
    /// `""` is the default namespace. The header's are at the bottom.
    ns: Vec<(String, String)>,
    /// The prefix the stream element used, to recognize its closing tag.
    stream_prefix: String,
    /// Finished events not yet taken by `next_event`.
    events: VecDeque<Event>,
}

impl Default for Framer {
    fn default() -> Self {
        Framer::new(Limits::default())
    }
}

impl Framer {
    /// A framer waiting for a stream header. Allocates nothing until fed.
    pub fn new(limits: Limits) -> Self {
        Framer {
            limits,
            phase: Phase::Prolog { at_start: true },
            buf: Vec::new(),
            resume: Resume::default(),
            unit_bytes: 0,
            stack: Vec::new(),
            elements: 0,
            ns: Vec::new(),
            stream_prefix: String::new(),
            events: VecDeque::new(),
        }
    }

    /// Replaces the limits (e.g. larger stanzas once authenticated). They
    /// apply to bytes fed from now on, including the rest of a stanza that
    /// is half-way through.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Takes the next chunk of the stream. Fails as soon as the input is
    /// known to be bad, including when the stanza still arriving is already
    /// over [`Limits::max_stanza_bytes`]; the framer is then dead, and
    /// events completed earlier in the same chunk are dropped with it (the
    /// stream is being closed with an error anyway). After `Ok`, call
    /// [`Framer::next_event`] until it answers `Ok(None)`.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), XmlError> {
        match &self.phase {
            Phase::Failed(e) => return Err(e.clone()),
            Phase::Closed => return Ok(()),
            Phase::Prolog { .. } | Phase::Open => {}
        }
        let result = if self.buf.is_empty() {
            // Nothing pending: parse straight from the caller's bytes and
            // copy only the unfinished tail.
            self.resume = Resume::default();
            self.process(bytes)
                .map(|used| self.buf.extend_from_slice(&bytes[used..]))
        } else {
            let mut buf = mem::take(&mut self.buf);
            buf.extend_from_slice(bytes);
            let result = self.process(&buf).map(|used| {
                buf.drain(..used);
            });
            self.buf = buf;
            result
        };
        if let Err(e) = result.and_then(|()| self.check_pending()) {
            return Err(self.fail(e));
        }
        self.trim_buffer();
        Ok(())
    }

    /// The next finished event; `Ok(None)` when more bytes are needed.
    /// After an error, returns that error forever.
    pub fn next_event(&mut self) -> Result<Option<Event>, XmlError> {
        if let Some(event) = self.events.pop_front() {
            if self.events.is_empty() && self.events.capacity() > IDLE_STACK_CAPACITY {
                self.events = VecDeque::new();
            }
            return Ok(Some(event));
        }
        match &self.phase {
            Phase::Failed(e) => Err(e.clone()),
            _ => Ok(None),
        }
    }

    /// Forgets everything, buffered bytes included, and waits for a new
    /// stream header: the stream restart after STARTTLS (RFC 6120 §5.4.3.3,
    /// where plaintext sent after `<starttls/>` must not be processed) and
    /// after SASL success (§6.4.6). The limits are kept.
    pub fn reset(&mut self) {
        *self = Framer::new(self.limits);
    }

    /// Bytes held for an unfinished piece of input.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Parses as much of `data` as forms complete pieces and returns how
    /// many bytes were consumed; the rest is an unfinished piece.
    fn process(&mut self, data: &[u8]) -> Result<usize, XmlError> {
        let mut resume = mem::take(&mut self.resume);
        let mut pos = 0;
        while pos < data.len() {
            let at_start = match self.phase {
                Phase::Prolog { at_start } => at_start,
                Phase::Open => false,
                Phase::Closed | Phase::Failed(_) => return Ok(data.len()),
            };
            if data[pos] != b'<' {
                let end = data[pos..]
                    .iter()
                    .position(|&b| b == b'<')
                    .map_or(data.len(), |i| pos + i);
                if self.stack.is_empty() {
                    self.text_outside_stanza(&data[pos..end])?;
                    pos = end;
                } else {
                    let used = self.text_in_stanza(&data[pos..end], end < data.len())?;
                    pos += used;
                    if pos < end {
                        // The rest may be the start of a character or a
                        // reference: wait for the bytes that finish it.
                        break;
                    }
                }
                continue;
            }
            // Only an unfinished piece carried over from the previous feed
            // starts at 0 with scanner progress to resume.
            let from = if pos == 0 {
                mem::take(&mut resume)
            } else {
                Resume::default()
            };
            match scan_markup(&data[pos..], from, at_start)? {
                Scan::Incomplete(progress) => {
                    self.resume = progress;
                    break;
                }
                Scan::Complete(len, kind) => {
                    self.markup(&data[pos..pos + len], kind)?;
                    pos += len;
                }
            }
        }
        Ok(pos)
    }

    /// Counts `n` consumed bytes against the current unit's limit.
    fn count(&mut self, n: usize) -> Result<(), XmlError> {
        self.unit_bytes += n;
        self.check_unit(self.unit_bytes)
    }

    /// The unfinished tail counts too: that is what keeps the buffer bounded
    /// while a stanza (or header) is still arriving.
    fn check_pending(&self) -> Result<(), XmlError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.check_unit(self.unit_bytes + self.buf.len())
    }

    fn check_unit(&self, bytes: usize) -> Result<(), XmlError> {
        match self.phase {
            Phase::Prolog { .. } if bytes > MAX_HEADER_BYTES => Err(XmlError::PolicyViolation(
                Limit::HeaderBytes(MAX_HEADER_BYTES),
            )),
            Phase::Open if bytes > self.limits.max_stanza_bytes => Err(XmlError::PolicyViolation(
                Limit::StanzaBytes(self.limits.max_stanza_bytes),
            )),
            _ => Ok(()),
        }
    }

    /// Marks the framer dead and frees what it held.
    fn fail(&mut self, e: XmlError) -> XmlError {
        let limits = self.limits;
        *self = Framer::new(limits);
        self.phase = Phase::Failed(e.clone());
        e
    }

    /// Gives back buffer capacity: all of it when nothing is pending (the
    /// usual state of an idle session), and what a large read or stanza
    /// left over otherwise.
    fn trim_buffer(&mut self) {
        let cap = self.buf.capacity();
        if self.buf.is_empty() {
            if cap > 0 {
                self.buf = Vec::new();
            }
        } else if cap > IDLE_BUF_CAPACITY && cap > 4 * self.buf.len() {
            self.buf.shrink_to(self.buf.len().max(IDLE_BUF_CAPACITY));
        }
    }

    /// Character data before the header or between stanzas: whitespace
    /// (keepalives, RFC 6120 §4.6.1) is dropped, anything else is refused.
    fn text_outside_stanza(&mut self, raw: &[u8]) -> Result<(), XmlError> {
        if !raw.iter().all(|&b| is_space(b)) {
            return Err(match self.phase {
                Phase::Prolog { .. } => not_well_formed("text before the stream header"),
                _ => XmlError::BadFormat("text between stanzas"),
            });
        }
        if let Phase::Prolog { at_start } = &mut self.phase {
            *at_start = false;
            self.count(raw.len())?;
        }
        Ok(())
    }

    /// Character data inside a stanza, appended to the innermost element.
    /// Returns how much of `raw` was used; less than all only when
    /// `is_final` is false and `raw` ends inside a character or reference.
    fn text_in_stanza(&mut self, raw: &[u8], is_final: bool) -> Result<usize, XmlError> {
        let mut text = String::new();
        let used = decode_text(raw, is_final, &mut text)?;
        self.count(used)?;
        if let Some(top) = self.stack.last_mut() {
            top.element.push_text(text);
        }
        Ok(used)
    }

    /// Handles one complete piece of markup.
    fn markup(&mut self, raw: &[u8], kind: Markup) -> Result<(), XmlError> {
        self.count(raw.len())?;
        let s = std::str::from_utf8(raw).map_err(|_| not_well_formed("invalid UTF-8"))?;
        match kind {
            Markup::Declaration => self.declaration(s),
            Markup::Cdata => self.cdata(s),
            Markup::EndTag => self.end_tag(s),
            Markup::StartTag => self.start_tag(s),
        }
    }

    /// `<?xml version='1.0' encoding='UTF-8'?>` (RFC 6120 §11.5, §11.6).
    fn declaration(&mut self, s: &str) -> Result<(), XmlError> {
        match Tokenizer::from(s).next() {
            Some(Ok(Token::Declaration { encoding, span, .. })) if span.end() == s.len() => {
                if let Some(enc) = encoding {
                    if !enc.as_str().eq_ignore_ascii_case("UTF-8") {
                        return Err(XmlError::UnsupportedEncoding(clip(enc.as_str())));
                    }
                }
            }
            Some(Err(e)) => return Err(parse_error(e)),
            _ => return Err(not_well_formed("malformed XML declaration")),
        }
        self.phase = Phase::Prolog { at_start: false };
        Ok(())
    }

    /// `<![CDATA[…]]>`: plain text inside a stanza (RFC 6120 §11.1 does not
    /// restrict it).
    fn cdata(&mut self, s: &str) -> Result<(), XmlError> {
        let Some(top) = self.stack.last_mut() else {
            return Err(match self.phase {
                Phase::Prolog { .. } => not_well_formed("CDATA before the stream header"),
                _ => XmlError::BadFormat("CDATA between stanzas"),
            });
        };
        let content = s
            .get("<![CDATA[".len()..s.len() - "]]>".len())
            .ok_or_else(|| not_well_formed("malformed CDATA section"))?;
        if let Some(c) = content.chars().find(|c| !c.is_xml_char()) {
            return Err(not_well_formed(&format!(
                "character U+{:04X} is not allowed in XML",
                u32::from(c)
            )));
        }
        let mut text = String::with_capacity(content.len());
        push_normalized_newlines(content, &mut text);
        top.element.push_text(text);
        Ok(())
    }

    /// `</name>`: closes the innermost element, or the stream.
    fn end_tag(&mut self, s: &str) -> Result<(), XmlError> {
        let (prefix, local) = parse_end_tag(s)?;
        let Some(frame) = self.stack.pop() else {
            if matches!(self.phase, Phase::Open)
                && prefix == self.stream_prefix
                && local == "stream"
            {
                // RFC 6120 §4.4: the peer closes its stream.
                self.events.push_back(Event::Close);
                self.phase = Phase::Closed;
                self.unit_bytes = 0;
                return Ok(());
            }
            return Err(not_well_formed(&format!(
                "closing tag </{}> with no open element",
                clip(&qname(prefix, local))
            )));
        };
        if frame.prefix != prefix || frame.element.name() != local {
            return Err(not_well_formed(&format!(
                "closing tag </{}> does not match <{}>",
                clip(&qname(prefix, local)),
                clip(&qname(&frame.prefix, frame.element.name()))
            )));
        }
        self.ns.truncate(frame.ns_mark);
        self.finish(frame.element);
        Ok(())
    }

    /// `<name attr='v' …>` or `<name …/>`: the stream header in the prolog,
    /// otherwise a stanza or a child of one.
    fn start_tag(&mut self, s: &str) -> Result<(), XmlError> {
        let is_header = matches!(self.phase, Phase::Prolog { .. });
        // Checked before parsing anything, so a depth bomb costs one
        // comparison per tag up to the limit, then ends the stream.
        if !is_header && self.stack.len() >= self.limits.max_depth {
            return Err(XmlError::PolicyViolation(Limit::Depth(
                self.limits.max_depth,
            )));
        }
        if !is_header {
            if self.stack.is_empty() {
                self.elements = 0;
            }
            self.elements += 1;
            if self.elements > self.limits.max_elements {
                return Err(XmlError::PolicyViolation(Limit::Elements(
                    self.limits.max_elements,
                )));
            }
        }
        let tag = parse_start_tag(s, self.limits.max_attrs)?;

        // XML 1.0 §3.1 WFC: Unique Att Spec, on the names as written.
        for (i, a) in tag.attrs.iter().enumerate() {
            if tag.attrs[..i]
                .iter()
                .any(|b| b.prefix == a.prefix && b.local == a.local)
            {
                return Err(not_well_formed(&format!(
                    "duplicate attribute '{}'",
                    clip(&qname(a.prefix, a.local))
                )));
            }
        }

        // Declarations first: they apply to the element's own name and
        // attributes (XML Namespaces 1.0 §6.1).
        let ns_mark = self.ns.len();
        for a in &tag.attrs {
            if a.prefix.is_empty() && a.local == "xmlns" {
                self.declare("", a.value)?;
            } else if a.prefix == "xmlns" {
                self.declare(a.local, a.value)?;
            }
        }

        if tag.prefix == "xmlns" {
            return Err(not_well_formed("element names cannot use the xmlns prefix"));
        }
        let ns = self.lookup(tag.prefix)?.to_owned();

        let mut attrs: Vec<(String, String)> = Vec::with_capacity(tag.attrs.len());
        for a in &tag.attrs {
            let name = match a.prefix {
                "" if a.local == "xmlns" => continue,
                "xmlns" => continue,
                "" => a.local.to_owned(),
                "xml" => format!("xml:{}", a.local),
                prefix => format!("{{{}}}{}", self.lookup(prefix)?, a.local),
            };
            // XML Namespaces 1.0 §6.3: no two attributes with the same
            // expanded name, even under different prefixes.
            if attrs.iter().any(|(k, _)| *k == name) {
                return Err(not_well_formed(&format!(
                    "duplicate attribute '{}'",
                    clip(&name)
                )));
            }
            attrs.push((name, decode_attr(a.value)?));
        }

        if is_header {
            return self.open_stream(&tag, &ns, attrs);
        }
        let mut element = Element::new(tag.local, ns);
        for (k, v) in attrs {
            element.set_attr(k, v);
        }
        if tag.empty {
            self.ns.truncate(ns_mark);
            self.finish(element);
        } else {
            self.stack.push(Frame {
                element,
                prefix: tag.prefix.to_owned(),
                ns_mark,
            });
        }
        Ok(())
    }

    /// The stream header: RFC 6120 §4.7 attributes, §4.8.1 namespace.
    fn open_stream(
        &mut self,
        tag: &RawTag<'_>,
        ns: &str,
        attrs: Vec<(String, String)>,
    ) -> Result<(), XmlError> {
        if ns != ns::STREAM {
            return Err(XmlError::InvalidNamespace(clip(ns)));
        }
        if tag.local != "stream" {
            return Err(XmlError::BadFormat("the root element must be <stream/>"));
        }
        let default_ns = self.lookup("")?.to_owned();
        self.stream_prefix = tag.prefix.to_owned();
        self.events
            .push_back(Event::Open(StreamHeader { attrs, default_ns }));
        self.phase = Phase::Open;
        self.unit_bytes = 0;
        if tag.empty {
            // `<stream:stream …/>`: opened and closed at once.
            self.events.push_back(Event::Close);
            self.phase = Phase::Closed;
        }
        Ok(())
    }

    /// Adds a finished element to its parent, or hands it up as a stanza.
    fn finish(&mut self, element: Element) {
        if let Some(parent) = self.stack.last_mut() {
            parent.element.push_child(element);
            return;
        }
        self.events.push_back(Event::Stanza(element));
        self.unit_bytes = 0;
        self.stack.shrink_to(IDLE_STACK_CAPACITY);
        self.ns.shrink_to(IDLE_STACK_CAPACITY);
    }

    /// Records `xmlns[:prefix]='value'`, enforcing XML Namespaces 1.0 §3.
    fn declare(&mut self, prefix: &str, raw_value: &str) -> Result<(), XmlError> {
        let uri = decode_attr(raw_value)?;
        if uri == XMLNS_NS {
            return Err(not_well_formed("the xmlns namespace cannot be declared"));
        }
        if prefix.is_empty() {
            if uri == XML_NS {
                return Err(not_well_formed(
                    "the XML namespace cannot be the default namespace",
                ));
            }
        } else if prefix == "xmlns" {
            return Err(not_well_formed("the xmlns prefix cannot be declared"));
        } else if uri.is_empty() {
            return Err(not_well_formed(&format!(
                "prefix '{}' bound to the empty namespace",
                clip(prefix)
            )));
        } else if (prefix == "xml") != (uri == XML_NS) {
            return Err(not_well_formed(
                "only the xml prefix may be bound to the XML namespace",
            ));
        }
        self.ns.push((prefix.to_owned(), uri));
        Ok(())
    }

    /// The namespace `prefix` is bound to; `""` finds the default namespace
    /// (empty when none is declared).
    fn lookup(&self, prefix: &str) -> Result<&str, XmlError> {
        if prefix == "xml" {
            return Ok(XML_NS);
        }
        match self.ns.iter().rev().find(|(p, _)| p == prefix) {
            Some((_, uri)) => Ok(uri),
            None if prefix.is_empty() => Ok(""),
            None => Err(XmlError::BadNamespacePrefix(clip(prefix))),
        }
    }
}

/// The kinds of markup the scanner lets through to the parser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Markup {
    Declaration,
    StartTag,
    EndTag,
    Cdata,
}

enum Scan {
    /// The piece is complete and this many bytes long.
    Complete(usize, Markup),
    /// The piece continues past the input; resume from here.
    Incomplete(Resume),
}

/// Finds the end of the markup starting at `d[0] == b'<'`, refusing
/// restricted markup (RFC 6120 §11.1) from its first bytes.
fn scan_markup(d: &[u8], from: Resume, decl_allowed: bool) -> Result<Scan, XmlError> {
    const XML_DECL: &[u8] = b"<?xml";
    const CDATA: &[u8] = b"<![CDATA[";
    let wait = Ok(Scan::Incomplete(Resume::default()));
    let Some(&second) = d.get(1) else {
        return wait;
    };
    match second {
        b'?' => {
            let n = d.len().min(XML_DECL.len());
            if !decl_allowed || d[..n] != XML_DECL[..n] {
                return Err(XmlError::RestrictedXml("processing instructions"));
            }
            match d.get(XML_DECL.len()) {
                None => wait,
                Some(&b) if is_space(b) => Ok(find_end(d, b"?>", XML_DECL.len() + 1, from)
                    .map_or_else(Scan::Incomplete, |end| {
                        Scan::Complete(end, Markup::Declaration)
                    })),
                // `<?xml-stylesheet …?>` and the like.
                Some(_) => Err(XmlError::RestrictedXml("processing instructions")),
            }
        }
        b'!' => match d.get(2) {
            None => wait,
            Some(b'-') => Err(XmlError::RestrictedXml("comments")),
            Some(b'[') => {
                let n = d.len().min(CDATA.len());
                if d[..n] != CDATA[..n] {
                    return Err(not_well_formed("malformed CDATA section"));
                }
                if d.len() < CDATA.len() {
                    return wait;
                }
                Ok(find_end(d, b"]]>", CDATA.len(), from)
                    .map_or_else(Scan::Incomplete, |end| Scan::Complete(end, Markup::Cdata)))
            }
            // <!DOCTYPE, <!ENTITY, <!ELEMENT, <!ATTLIST, <!NOTATION
            Some(b'D' | b'E' | b'A' | b'N') => {
                Err(XmlError::RestrictedXml("DTDs or entity declarations"))
            }
            Some(_) => Err(not_well_formed("unknown markup after '<!'")),
        },
        b'/' => {
            for (i, &b) in d.iter().enumerate().skip(from.scanned.max(2)) {
                match b {
                    b'>' => return Ok(Scan::Complete(i + 1, Markup::EndTag)),
                    b'<' => return Err(not_well_formed("'<' inside a closing tag")),
                    _ => {}
                }
            }
            Ok(Scan::Incomplete(Resume {
                scanned: d.len(),
                quote: 0,
            }))
        }
        _ => {
            // A start tag ends at the first '>' outside a quoted value;
            // '<' may not appear anywhere in it (XML 1.0 §3.1 AttValue).
            let mut quote = from.quote;
            for (i, &b) in d.iter().enumerate().skip(from.scanned.max(1)) {
                if b == b'<' {
                    return Err(not_well_formed("'<' inside a tag"));
                }
                if quote != 0 {
                    if b == quote {
                        quote = 0;
                    }
                } else if b == b'"' || b == b'\'' {
                    quote = b;
                } else if b == b'>' {
                    return Ok(Scan::Complete(i + 1, Markup::StartTag));
                }
            }
            Ok(Scan::Incomplete(Resume {
                scanned: d.len(),
                quote,
            }))
        }
    }
}

/// The end (exclusive) of the first `pat` in `d` at or after `min_start`,
/// skipping what an earlier scan already covered.
fn find_end(d: &[u8], pat: &[u8], min_start: usize, from: Resume) -> Result<usize, Resume> {
    let start = from.scanned.saturating_sub(pat.len() - 1).max(min_start);
    match d
        .get(start..)
        .and_then(|rest| rest.windows(pat.len()).position(|w| w == pat))
    {
        Some(i) => Ok(start + i + pat.len()),
        None => Err(Resume {
            scanned: d.len(),
            quote: 0,
        }),
    }
}

/// An attribute as written.
struct RawAttr<'a> {
    prefix: &'a str,
    local: &'a str,
    /// Between the quotes, references not yet decoded.
    value: &'a str,
}

/// A start tag as written.
struct RawTag<'a> {
    prefix: &'a str,
    local: &'a str,
    attrs: Vec<RawAttr<'a>>,
    /// `<…/>`
    empty: bool,
}

/// Tokenizes one complete start tag with xmlparser.
fn parse_start_tag(s: &str, max_attrs: usize) -> Result<RawTag<'_>, XmlError> {
    // xmlparser reads `<:a>` as an unprefixed `a`; XML Namespaces does not.
    if s.as_bytes().get(1) == Some(&b':') {
        return Err(not_well_formed("a name cannot start with ':'"));
    }
    let mut tag = RawTag {
        prefix: "",
        local: "",
        attrs: Vec::new(),
        empty: false,
    };
    let mut ended = false;
    for token in Tokenizer::from_fragment(s, 0..s.len()) {
        match token.map_err(parse_error)? {
            Token::ElementStart { prefix, local, .. } => {
                tag.prefix = prefix.as_str();
                tag.local = local.as_str();
            }
            Token::Attribute {
                prefix,
                local,
                value,
                span,
            } => {
                if tag.attrs.len() >= max_attrs {
                    return Err(XmlError::PolicyViolation(Limit::Attributes(max_attrs)));
                }
                if span.as_str().starts_with(':') {
                    return Err(not_well_formed("a name cannot start with ':'"));
                }
                tag.attrs.push(RawAttr {
                    prefix: prefix.as_str(),
                    local: local.as_str(),
                    value: value.as_str(),
                });
            }
            Token::ElementEnd {
                end: ElementEnd::Open,
                ..
            } => ended = true,
            Token::ElementEnd {
                end: ElementEnd::Empty,
                ..
            } => {
                ended = true;
                tag.empty = true;
            }
            _ => return Err(not_well_formed("unexpected markup in a start tag")),
        }
    }
    if !ended || tag.local.is_empty() {
        return Err(not_well_formed("malformed start tag"));
    }
    Ok(tag)
}

/// Tokenizes one complete closing tag; returns (prefix, local name).
fn parse_end_tag(s: &str) -> Result<(&str, &str), XmlError> {
    if s.as_bytes().get(2) == Some(&b':') {
        return Err(not_well_formed("a name cannot start with ':'"));
    }
    let mut tokens = Tokenizer::from_fragment(s, 0..s.len());
    match tokens.next() {
        Some(Ok(Token::ElementEnd {
            end: ElementEnd::Close(prefix, local),
            span,
        })) if span.end() == s.len() => Ok((prefix.as_str(), local.as_str())),
        Some(Err(e)) => Err(parse_error(e)),
        _ => Err(not_well_formed("malformed closing tag")),
    }
}

/// Decodes character data (no `<` inside) into `out`: references resolved,
/// line ends normalized (XML 1.0 §2.11), characters checked (§2.2). When
/// `is_final` is false, `raw` may stop inside a UTF-8 sequence, a reference,
/// a `\r\n` pair or a `]]>`; decoding then stops before that piece and the
/// bytes used are returned.
fn decode_text(raw: &[u8], is_final: bool, out: &mut String) -> Result<usize, XmlError> {
    let s = match std::str::from_utf8(raw) {
        Ok(s) => s,
        Err(e) if !is_final && e.error_len().is_none() => {
            std::str::from_utf8(&raw[..e.valid_up_to()])
                .map_err(|_| not_well_formed("invalid UTF-8"))?
        }
        Err(_) => return Err(not_well_formed("invalid UTF-8")),
    };
    let b = s.as_bytes();
    out.reserve(b.len());
    let mut run = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'&' => {
                out.push_str(&s[run..i]);
                match parse_reference(&s[i..], is_final)? {
                    Some((c, len)) => {
                        out.push(c);
                        i += len;
                        run = i;
                    }
                    None => return Ok(i),
                }
            }
            b'\r' => {
                out.push_str(&s[run..i]);
                match b.get(i + 1) {
                    Some(b'\n') => i += 2,
                    Some(_) => i += 1,
                    None if is_final => i += 1,
                    None => return Ok(i),
                }
                out.push('\n');
                run = i;
            }
            b']' => {
                let rest = &b[i..];
                if rest.starts_with(b"]]>") {
                    return Err(not_well_formed("']]>' in character data"));
                }
                if !is_final && (rest == b"]" || rest == b"]]") {
                    out.push_str(&s[run..i]);
                    return Ok(i);
                }
                i += 1;
            }
            b'\t' | b'\n' => i += 1,
            c if c < 0x20 => {
                return Err(not_well_formed(&format!(
                    "control character U+{c:04X} is not allowed in XML"
                )));
            }
            // U+FFFE and U+FFFF (EF BF BE, EF BF BF) are not XML characters.
            0xEF if b.get(i + 1) == Some(&0xBF) && matches!(b.get(i + 2), Some(0xBE | 0xBF)) => {
                return Err(not_well_formed("U+FFFE and U+FFFF are not allowed in XML"));
            }
            _ => i += 1,
        }
    }
    out.push_str(&s[run..]);
    Ok(b.len())
}

/// Decodes an attribute value as xmlparser delimited it (characters already
/// checked, no `<`): references resolved, whitespace normalized as XML 1.0
/// §3.3.3 says for CDATA attributes.
fn decode_attr(raw: &str) -> Result<String, XmlError> {
    let b = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut run = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'&' => {
                out.push_str(&raw[run..i]);
                let (c, len) = parse_reference(&raw[i..], true)?
                    .ok_or_else(|| not_well_formed("unterminated reference"))?;
                out.push(c);
                i += len;
                run = i;
            }
            b'\r' | b'\n' | b'\t' => {
                out.push_str(&raw[run..i]);
                out.push(' ');
                // A literal \r\n is one line end, hence one space.
                i += if b[i] == b'\r' && b.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                run = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&raw[run..]);
    Ok(out)
}

/// The five entities XML predefines (XML 1.0 §4.6), the only ones XMPP
/// allows (RFC 6120 §11.1).
const PREDEFINED: [(&str, char); 5] = [
    ("amp", '&'),
    ("lt", '<'),
    ("gt", '>'),
    ("quot", '"'),
    ("apos", '\''),
];

/// Parses the reference at the start of `s` (which begins with `&`) into
/// the character and the bytes it spans. `Ok(None)`: `s` ends before the
/// reference does and more input may finish it (only when `!is_final`).
/// The outcome never depends on where the input was cut.
fn parse_reference(s: &str, is_final: bool) -> Result<Option<(char, usize)>, XmlError> {
    let wait = |why: &str| {
        if is_final {
            Err(not_well_formed(why))
        } else {
            Ok(None)
        }
    };
    let b = s.as_bytes();
    match b.get(1) {
        None => wait("'&' at the end of character data"),
        Some(b'#') => {
            // XML 1.0 §4.1 CharRef: '&#' [0-9]+ ';' | '&#x' [0-9a-fA-F]+ ';'
            let (radix, first) = if b.get(2) == Some(&b'x') {
                (16, 3)
            } else {
                (10, 2)
            };
            let mut value: u32 = 0;
            let mut i = first;
            loop {
                match b.get(i) {
                    None => return wait("unterminated character reference"),
                    Some(b';') if i > first => break,
                    Some(&d) => {
                        let digit = char::from(d)
                            .to_digit(radix)
                            .ok_or_else(|| not_well_formed("malformed character reference"))?;
                        if i - first >= MAX_REF_DIGITS {
                            return Err(not_well_formed("character reference too long"));
                        }
                        value = value.saturating_mul(radix).saturating_add(digit);
                        i += 1;
                    }
                }
            }
            // WFC: Legal Character.
            match char::from_u32(value).filter(|c| c.is_xml_char()) {
                Some(c) => Ok(Some((c, i + 1))),
                None => Err(not_well_formed(&format!(
                    "character reference to U+{value:04X}, which XML does not allow"
                ))),
            }
        }
        Some(_) => {
            let rest = &s[1..];
            let mut name_len = 0;
            for (i, c) in rest.char_indices() {
                let ok = if i == 0 {
                    c.is_xml_name_start()
                } else {
                    c.is_xml_name()
                };
                // Past four characters it cannot be a predefined entity.
                if !ok || name_len > 4 {
                    break;
                }
                name_len = i + c.len_utf8();
            }
            if name_len == 0 {
                return Err(not_well_formed("'&' not followed by a reference"));
            }
            let name = &rest[..name_len];
            let known = PREDEFINED.iter().find(|(n, _)| *n == name);
            let could_be = PREDEFINED
                .iter()
                .any(|(n, _)| n.len() > name.len() && n.starts_with(name));
            if known.is_none() && !could_be {
                return Err(XmlError::RestrictedXml("entity references"));
            }
            match (rest.as_bytes().get(name_len), known) {
                (None, _) => wait("unterminated entity reference"),
                (Some(b';'), Some((_, c))) => Ok(Some((*c, name_len + 2))),
                (Some(b';'), None) => Err(XmlError::RestrictedXml("entity references")),
                (Some(_), _) => Err(not_well_formed("entity reference without ';'")),
            }
        }
    }
}

/// Appends `s` with `\r\n` and lone `\r` turned into `\n` (XML 1.0 §2.11).
fn push_normalized_newlines(s: &str, out: &mut String) {
    let mut rest = s;
    while let Some(i) = rest.find('\r') {
        out.push_str(&rest[..i]);
        out.push('\n');
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('\n') {
            rest = r;
        }
    }
    out.push_str(rest);
}

/// XML 1.0 §2.3 S.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn not_well_formed(why: &str) -> XmlError {
    XmlError::NotWellFormed(why.to_owned())
}

fn parse_error(e: xmlparser::Error) -> XmlError {
    XmlError::NotWellFormed(e.to_string())
}

fn qname(prefix: &str, local: &str) -> String {
    if prefix.is_empty() {
        local.to_owned()
    } else {
        format!("{prefix}:{local}")
    }
}

/// Peer-supplied text quoted in an error, cut to a sane length.
fn clip(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "<stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>";

    /// Feeds `chunks` one after another, draining events after each, as the
    /// connection loop does.
    fn run<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Result<Vec<Event>, XmlError> {
        let mut framer = Framer::default();
        let mut events = Vec::new();
        for chunk in chunks {
            framer.feed(chunk)?;
            while let Some(e) = framer.next_event()? {
                events.push(e);
            }
        }
        Ok(events)
    }

    fn whole(input: &[u8]) -> Result<Vec<Event>, XmlError> {
        run([input])
    }

    fn byte_by_byte(input: &[u8]) -> Result<Vec<Event>, XmlError> {
        run(input.chunks(1))
    }

    /// The stream error for `input`, checked to be the same whether it
    /// arrives whole or byte by byte.
    fn error(input: &str) -> XmlError {
        let e = whole(input.as_bytes()).expect_err("input should be refused");
        let e1 = byte_by_byte(input.as_bytes()).expect_err("refused byte by byte too");
        assert_eq!(e.condition(), e1.condition(), "{input}: {e} vs {e1}");
        e
    }

    fn stream(body: &str) -> String {
        format!("{HEADER}{body}")
    }

    const CLIENT_STREAM: &str = concat!(
        "<?xml version='1.0' encoding='UTF-8'?>\n",
        "<stream:stream to='example.com' xmlns='jabber:client' ",
        "xmlns:stream='http://etherx.jabber.org/streams' version='1.0' xml:lang='en'>",
        "<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>",
        " \n\t ",
        "<message to='romeo@example.net' id=\"m&amp;1\" type='chat'>",
        "<body>Wherefore art thou, Rom\u{e9}o? \u{1F339} &amp; &lt;3 &#x1F600;&#65;\r\nx</body>",
        "<x:data xmlns:x='urn:example:x' x:attr='v\u{e9}' xml:lang='fr'>",
        "<x:item>1</x:item><plain/></x:data>",
        "<![CDATA[<raw> & ]]]]><![CDATA[>]]>",
        "</message>",
        " ",
        "<presence/>",
        "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>",
        "<iq type='set' id='b' xmlns=''><q:query xmlns:q='jabber:iq:roster' ver='1'/></iq>",
        "\n",
        "</stream:stream>",
    );

    fn client_stream_events() -> Vec<Event> {
        let header = StreamHeader {
            attrs: vec![
                ("to".into(), "example.com".into()),
                ("version".into(), "1.0".into()),
                ("xml:lang".into(), "en".into()),
            ],
            default_ns: "jabber:client".into(),
        };
        let iq = Element::new("iq", "jabber:client")
            .with_attr("type", "get")
            .with_attr("id", "p1")
            .with_child(Element::new("ping", "urn:xmpp:ping"));
        let message = Element::new("message", "jabber:client")
            .with_attr("to", "romeo@example.net")
            .with_attr("id", "m&1")
            .with_attr("type", "chat")
            .with_child(
                Element::new("body", "jabber:client")
                    .with_text("Wherefore art thou, Rom\u{e9}o? \u{1F339} & <3 \u{1F600}A\nx"),
            )
            .with_child(
                Element::new("data", "urn:example:x")
                    .with_attr("{urn:example:x}attr", "v\u{e9}")
                    .with_attr("xml:lang", "fr")
                    .with_child(Element::new("item", "urn:example:x").with_text("1"))
                    .with_child(Element::new("plain", "jabber:client")),
            )
            .with_text("<raw> & ]]>");
        let features = Element::new("features", ns::STREAM)
            .with_child(Element::new("bind", "urn:ietf:params:xml:ns:xmpp-bind"));
        let roster = Element::new("iq", "")
            .with_attr("type", "set")
            .with_attr("id", "b")
            .with_child(Element::new("query", "jabber:iq:roster").with_attr("ver", "1"));
        vec![
            Event::Open(header),
            Event::Stanza(iq),
            Event::Stanza(message),
            Event::Stanza(Element::new("presence", "jabber:client")),
            Event::Stanza(features),
            Event::Stanza(roster),
            Event::Close,
        ]
    }

    #[test]
    fn client_stream() {
        let events = whole(CLIENT_STREAM.as_bytes()).unwrap();
        assert_eq!(events, client_stream_events());
        let Event::Open(header) = &events[0] else {
            panic!("no header")
        };
        assert_eq!(header.attr("to"), Some("example.com"));
        assert_eq!(header.attr("xml:lang"), Some("en"));
        assert_eq!(header.attr("xmlns"), None);
        assert_eq!(header.default_ns(), "jabber:client");
    }

    #[test]
    fn same_events_at_every_split() {
        let input = CLIENT_STREAM.as_bytes();
        let expected = client_stream_events();
        for i in 0..=input.len() {
            let events = run([&input[..i], &input[i..]]).unwrap();
            assert_eq!(events, expected, "split at {i}");
        }
        assert_eq!(byte_by_byte(input).unwrap(), expected);
        // Uneven chunks, so tails carried over meet chunk ends too.
        for size in [2, 3, 7, 64] {
            assert_eq!(
                run(input.chunks(size)).unwrap(),
                expected,
                "chunks of {size}"
            );
        }
    }

    #[test]
    fn waits_mid_utf8_character() {
        let mut f = Framer::default();
        f.feed(stream("<message><body>\u{e9}").as_bytes()).unwrap();
        let rose = "\u{1F339}".as_bytes();
        assert_eq!(rose.len(), 4);
        f.feed(&rose[..1]).unwrap();
        f.feed(&rose[1..3]).unwrap();
        assert!(matches!(f.next_event(), Ok(Some(Event::Open(_)))));
        assert_eq!(f.next_event(), Ok(None));
        assert_eq!(f.buffered(), 3);
        f.feed(&rose[3..]).unwrap();
        assert_eq!(f.buffered(), 0);
        f.feed(b"</body></message>").unwrap();
        let Ok(Some(Event::Stanza(m))) = f.next_event() else {
            panic!("no stanza")
        };
        assert_eq!(
            m.get_child("body", "jabber:client").unwrap().text(),
            "\u{e9}\u{1F339}"
        );
    }

    #[test]
    fn waits_mid_tag_attribute_and_reference() {
        let mut f = Framer::default();
        for piece in [
            HEADER,
            "<mess",
            "age to='a>b",
            "' ty",
            "pe=\"x'y\"",
            ">a &a",
            "m",
            "p",
            "; &#x",
            "41",
            ";]]",
            "</message>",
        ] {
            f.feed(piece.as_bytes()).unwrap();
        }
        let mut events = Vec::new();
        while let Some(e) = f.next_event().unwrap() {
            events.push(e);
        }
        let expected = Element::new("message", "jabber:client")
            .with_attr("to", "a>b")
            .with_attr("type", "x'y")
            .with_text("a & A]]");
        assert_eq!(events[1], Event::Stanza(expected));
    }

    #[test]
    fn attribute_values_are_normalized() {
        let input = stream("<m a='x\r\ny\tz&#10;' b=\"&quot;&apos;&gt;\"/>");
        let events = whole(input.as_bytes()).unwrap();
        let Event::Stanza(m) = &events[1] else {
            panic!()
        };
        assert_eq!(m.attr("a"), Some("x y z\n"));
        assert_eq!(m.attr("b"), Some("\"'>"));
    }

    #[test]
    fn namespaces_are_scoped() {
        let input = stream(concat!(
            "<a xmlns:p='urn:p'><p:b><c xmlns='urn:c'><d/></c><e/></p:b></a>",
            "<p:x xmlns:p='urn:other'/>",
        ));
        let events = whole(input.as_bytes()).unwrap();
        let expected = Element::new("a", "jabber:client").with_child(
            Element::new("b", "urn:p")
                .with_child(Element::new("c", "urn:c").with_child(Element::new("d", "urn:c")))
                .with_child(Element::new("e", "jabber:client")),
        );
        assert_eq!(events[1], Event::Stanza(expected));
        assert_eq!(events[2], Event::Stanza(Element::new("x", "urn:other")));
        // The declaration of p on <a> went out of scope with it.
        let e = error(&stream("<a xmlns:p='urn:p'/><p:b/>"));
        assert_eq!(e, XmlError::BadNamespacePrefix("p".into()));
    }

    #[test]
    fn prefixed_stream_and_no_declaration() {
        let input = "<?xml version=\"1.0\"?><s:stream xmlns:s='http://etherx.jabber.org/streams'>\
                     <s:features/><message/></s:stream>";
        let events = whole(input.as_bytes()).unwrap();
        let Event::Open(h) = &events[0] else { panic!() };
        assert_eq!(h.default_ns(), "");
        assert_eq!(
            events[1],
            Event::Stanza(Element::new("features", ns::STREAM))
        );
        assert_eq!(events[2], Event::Stanza(Element::new("message", "")));
        assert_eq!(events[3], Event::Close);
        // The closing tag must use the stream's own prefix.
        let e = error(&input.replace("</s:stream>", "</stream:stream>"));
        assert_eq!(e.condition(), "not-well-formed");
    }

    #[test]
    fn input_after_close_is_ignored() {
        let input = stream("</stream:stream> junk <<<");
        let events = whole(input.as_bytes()).unwrap();
        assert_eq!(events.last(), Some(&Event::Close));
        let events = byte_by_byte(input.as_bytes()).unwrap();
        assert_eq!(events.last(), Some(&Event::Close));
    }

    #[test]
    fn reset_then_new_header() {
        let mut f = Framer::default();
        f.feed(stream("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>garbage <a").as_bytes())
            .unwrap_err(); // garbage at stream level
        f.reset();
        let mut f2 = Framer::default();
        for framer in [&mut f, &mut f2] {
            framer
                .feed(stream("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><pre").as_bytes())
                .unwrap();
            assert!(matches!(framer.next_event(), Ok(Some(Event::Open(_)))));
            assert!(matches!(framer.next_event(), Ok(Some(Event::Stanza(_)))));
            assert!(framer.buffered() > 0);
            framer.reset();
            assert_eq!(framer.buffered(), 0);
            assert_eq!(framer.next_event(), Ok(None));
            // A declaration is allowed again at the start of the new stream.
            framer
                .feed(format!("<?xml version='1.0'?>{HEADER}<presence/>").as_bytes())
                .unwrap();
            assert!(matches!(framer.next_event(), Ok(Some(Event::Open(_)))));
            assert_eq!(
                framer.next_event(),
                Ok(Some(Event::Stanza(Element::new(
                    "presence",
                    "jabber:client"
                ))))
            );
        }
    }

    #[test]
    fn limits_can_be_raised() {
        let mut f = Framer::new(Limits {
            max_stanza_bytes: 100,
            ..Limits::default()
        });
        f.feed(HEADER.as_bytes()).unwrap();
        f.set_limits(Limits::default());
        let body = "x".repeat(1000);
        f.feed(format!("<message><body>{body}</body></message>").as_bytes())
            .unwrap();
        assert!(matches!(f.next_event(), Ok(Some(Event::Open(_)))));
        assert!(matches!(f.next_event(), Ok(Some(Event::Stanza(_)))));
    }

    #[test]
    fn elements_per_stanza_are_bounded() {
        let limits = Limits {
            max_elements: 10,
            ..Limits::default()
        };
        // The stanza element and 9 children: allowed, and the count starts
        // over with the next stanza.
        let mut f = Framer::new(limits);
        f.feed(HEADER.as_bytes()).unwrap();
        let ok = format!("<message>{}</message>", "<a/>".repeat(9));
        f.feed(ok.as_bytes()).unwrap();
        f.feed(ok.as_bytes()).unwrap();
        assert!(matches!(f.next_event(), Ok(Some(Event::Open(_)))));
        assert!(matches!(f.next_event(), Ok(Some(Event::Stanza(_)))));
        assert!(matches!(f.next_event(), Ok(Some(Event::Stanza(_)))));
        // One more, nested or not, is a policy violation.
        for bad in [
            format!("<message>{}</message>", "<a/>".repeat(10)),
            format!("<message>{}{}</message>", "<a>".repeat(5), "<b/>".repeat(5)),
        ] {
            let mut f = Framer::new(limits);
            f.feed(HEADER.as_bytes()).unwrap();
            let e = f.feed(bad.as_bytes()).unwrap_err();
            assert_eq!(e, XmlError::PolicyViolation(Limit::Elements(10)), "{bad}");
            assert_eq!(e.condition(), "policy-violation");
            assert_eq!(e.to_string(), "more than 10 elements in one stanza");
        }
    }

    #[test]
    fn many_small_stanzas_in_one_large_chunk() {
        // The limit is per stanza, not per read.
        let mut f = Framer::new(Limits {
            max_stanza_bytes: 64,
            ..Limits::default()
        });
        f.feed(HEADER.as_bytes()).unwrap();
        f.feed("<presence/>".repeat(1000).as_bytes()).unwrap();
        let mut n = 0;
        while let Some(e) = f.next_event().unwrap() {
            n += usize::from(matches!(e, Event::Stanza(_)));
        }
        assert_eq!(n, 1000);
    }

    #[test]
    fn buffer_shrinks_after_big_stanza() {
        let mut f = Framer::default();
        f.feed(HEADER.as_bytes()).unwrap();
        // A big start tag has to be buffered whole before it is parsed.
        let big = format!("<message to='{}'>", "a".repeat(100_000));
        for chunk in big.as_bytes().chunks(4096) {
            f.feed(chunk).unwrap();
        }
        assert_eq!(f.buffered(), 0);
        f.feed(b"</message><pres").unwrap();
        assert_eq!(f.buffered(), 5);
        assert!(f.buf.capacity() <= IDLE_BUF_CAPACITY);
        f.feed(b"ence/>").unwrap();
        assert_eq!(f.buf.capacity(), 0);
    }

    #[test]
    fn hostile_input_fails_the_same_at_every_split() {
        let cases = [
            "<?xml version='1.0' encoding='latin1'?>",
            "<!DOCTYPE x [<!ENTITY a 'b'>]>",
            "<!-- c -->",
            "<?php ?>",
            "<stream:stream xmlns:stream='urn:wrong'>",
        ]
        .map(String::from)
        .into_iter()
        .chain(
            [
                "<a>&foo;</a>",
                "<a>&amx;</a>",
                "<a>&#0;</a>",
                "<a>&#00000000000000065;</a>",
                "<a b='1' b='2'/>",
                "<p:a/>",
                "<a></b>",
                "<a>]]></a>",
                "<a>\r\u{FFFE}</a>",
                "<a><![CDATA[x]]x]]></b>",
                "text",
            ]
            .map(stream),
        );
        for input in cases {
            let expected = whole(input.as_bytes()).unwrap_err().condition();
            for i in 0..=input.len() {
                let (a, b) = input.as_bytes().split_at(i);
                let e = run([a, b]).expect_err(&input);
                assert_eq!(e.condition(), expected, "{input} split at {i}: {e}");
            }
        }
    }

    #[test]
    fn largest_stanza_byte_by_byte_is_linear() {
        // Quadratic rescanning would make this take minutes.
        let limit = Limits::default().max_stanza_bytes;
        let half = "a".repeat(limit / 2 - 100);
        let input = stream(&format!(
            "<message to='{half}'><body>{half}</body><![CDATA[{}]]></message>",
            "b".repeat(50)
        ));
        let events = byte_by_byte(input.as_bytes()).unwrap();
        let Event::Stanza(m) = &events[1] else {
            panic!()
        };
        assert_eq!(m.attr("to").map(str::len), Some(half.len()));
    }

    #[test]
    fn framer_is_small() {
        let size = std::mem::size_of::<Framer>();
        assert!(size <= 256, "Framer is {size} bytes");
    }

    // Hostile input.

    #[test]
    fn doctype_and_entities_are_restricted() {
        let e = error("<?xml version='1.0'?><!DOCTYPE stream><stream:stream/>");
        assert_eq!(e.condition(), "restricted-xml");
        assert_eq!(
            error(&stream("<!ENTITY x 'y'>")).condition(),
            "restricted-xml"
        );
        assert_eq!(
            error(&stream("<message><!DOCTYPE x></message>")).condition(),
            "restricted-xml"
        );
    }

    #[test]
    fn billion_laughs_is_refused_unexpanded() {
        let mut doc =
            String::from("<?xml version='1.0'?>\n<!DOCTYPE lolz [\n<!ENTITY lol 'lol'>\n");
        for i in 1..10 {
            let prev = if i == 1 {
                "lol".to_string()
            } else {
                format!("lol{}", i - 1)
            };
            doc.push_str(&format!(
                "<!ENTITY lol{i} '{}'>\n",
                format!("&{prev};").repeat(10)
            ));
        }
        doc.push_str("]>\n<lolz>&lol9;</lolz>");
        assert_eq!(error(&doc).condition(), "restricted-xml");
        // The same reference inside a stream is refused too, never expanded.
        assert_eq!(
            error(&stream("<message><body>&lol9;</body></message>")).condition(),
            "restricted-xml"
        );
    }

    #[test]
    fn comments_are_restricted_everywhere() {
        assert_eq!(
            error("<!-- hi --><stream:stream/>").condition(),
            "restricted-xml"
        );
        assert_eq!(
            error(&stream("<!-- keepalive -->")).condition(),
            "restricted-xml"
        );
        assert_eq!(
            error(&stream("<message><!-- x --></message>")).condition(),
            "restricted-xml"
        );
    }

    #[test]
    fn processing_instructions_are_restricted() {
        assert_eq!(error(&stream("<?foo bar?>")).condition(), "restricted-xml");
        assert_eq!(
            error(&stream("<a><?php x ?></a>")).condition(),
            "restricted-xml"
        );
        // A declaration anywhere but at the very start is a PI too.
        assert_eq!(
            error(&format!(" <?xml version='1.0'?>{HEADER}")).condition(),
            "restricted-xml"
        );
        assert_eq!(
            error(&format!("<?xml-stylesheet href='x'?>{HEADER}")).condition(),
            "restricted-xml"
        );
    }

    #[test]
    fn references() {
        assert_eq!(error(&stream("<a>&foo;</a>")).condition(), "restricted-xml");
        assert_eq!(error(&stream("<a>&am;</a>")).condition(), "restricted-xml");
        assert_eq!(
            error(&stream("<a b='&foo;'/>")).condition(),
            "restricted-xml"
        );
        for bad in [
            "&#0;",
            "&#x0;",
            "&#xD800;",
            "&#xFFFE;",
            "&#1114112;",
            "&#;",
            "&#x;",
            "&#12a;",
            "&amp",
            "& ",
            "&#00000000000000065;",
        ] {
            let e = error(&stream(&format!("<a>{bad}</a>")));
            assert_eq!(e.condition(), "not-well-formed", "{bad}: {e}");
        }
        assert_eq!(
            error(&stream("<a b='&#1;'/>")).condition(),
            "not-well-formed"
        );
        let ok = whole(stream("<a>&#0000000000000065;&#x10FFFF;</a>").as_bytes()).unwrap();
        assert_eq!(
            ok[1],
            Event::Stanza(Element::new("a", "jabber:client").with_text("A\u{10FFFF}"))
        );
    }

    #[test]
    fn oversized_stanza_fails_while_arriving() {
        let limit = 4096;
        let limits = Limits {
            max_stanza_bytes: limit,
            ..Limits::default()
        };
        // Text (consumed as it comes) and a start tag (which has to be held
        // whole): both must fail before much more than the limit was fed.
        for start in ["<message><body>", "<message to='"] {
            let mut f = Framer::new(limits);
            f.feed(HEADER.as_bytes()).unwrap();
            f.feed(start.as_bytes()).unwrap();
            let mut fed = start.len();
            let chunk = [b'a'; 100];
            let err = loop {
                match f.feed(&chunk) {
                    Ok(()) => {
                        fed += chunk.len();
                        assert!(f.buffered() <= limit);
                        assert!(fed < 10 * limit, "never failed");
                        while f.next_event().unwrap().is_some() {}
                    }
                    Err(e) => break e,
                }
            };
            assert!(fed <= limit, "{start}: fed {fed} before failing");
            assert_eq!(err, XmlError::PolicyViolation(Limit::StanzaBytes(limit)));
            assert_eq!(err.condition(), "policy-violation");
            assert_eq!(f.buffered(), 0);
            // Dead from now on.
            assert_eq!(f.next_event(), Err(err.clone()));
            assert_eq!(f.feed(b"<presence/>"), Err(err));
        }
        // A complete stanza over the limit in one chunk fails too.
        let mut f = Framer::new(limits);
        f.feed(HEADER.as_bytes()).unwrap();
        let big = format!("<message><body>{}</body></message>", "a".repeat(limit));
        assert!(f.feed(big.as_bytes()).is_err());
    }

    #[test]
    fn oversized_header_fails() {
        let header = format!(
            "<stream:stream xmlns:stream='{}' to='{}'",
            ns::STREAM,
            "a".repeat(5000)
        );
        let e = error(&header);
        assert_eq!(
            e,
            XmlError::PolicyViolation(Limit::HeaderBytes(MAX_HEADER_BYTES))
        );
        let e = error(&" ".repeat(MAX_HEADER_BYTES + 1));
        assert_eq!(e.condition(), "policy-violation");
    }

    #[test]
    fn depth_bomb_costs_nothing() {
        let bomb = stream(&"<a>".repeat(100_000));
        let mut f = Framer::default();
        let e = f.feed(bomb.as_bytes()).unwrap_err();
        assert_eq!(e, XmlError::PolicyViolation(Limit::Depth(32)));
        assert_eq!(f.buffered(), 0);
        assert_eq!(run(bomb.as_bytes().chunks(1000)).unwrap_err(), e);
        // Exactly at the limit is fine.
        let ok = stream(&format!("{}{}", "<a>".repeat(32), "</a>".repeat(32)));
        assert_eq!(whole(ok.as_bytes()).unwrap().len(), 2);
    }

    #[test]
    fn too_many_attributes() {
        let attrs: String = (0..33).map(|i| format!(" a{i}='x'")).collect();
        let e = error(&stream(&format!("<message{attrs}/>")));
        assert_eq!(e, XmlError::PolicyViolation(Limit::Attributes(32)));
        let attrs: String = (0..32).map(|i| format!(" a{i}='x'")).collect();
        assert!(whole(stream(&format!("<message{attrs}/>")).as_bytes()).is_ok());
    }

    #[test]
    fn duplicate_attributes() {
        assert_eq!(
            error(&stream("<m to='a' to='b'/>")).condition(),
            "not-well-formed"
        );
        assert_eq!(
            error(&stream("<m xmlns:a='u' xmlns:b='u' a:x='1' b:x='2'/>")).condition(),
            "not-well-formed"
        );
        assert_eq!(
            error(&stream("<m xmlns:a='u' xmlns:a='v'/>")).condition(),
            "not-well-formed"
        );
    }

    #[test]
    fn undeclared_prefixes() {
        assert_eq!(
            error(&stream("<foo:bar/>")),
            XmlError::BadNamespacePrefix("foo".into())
        );
        assert_eq!(
            error(&stream("<message foo:x='1'/>")),
            XmlError::BadNamespacePrefix("foo".into())
        );
        assert_eq!(
            error("<stream:stream xmlns='jabber:client'>"),
            XmlError::BadNamespacePrefix("stream".into())
        );
    }

    #[test]
    fn namespace_misuse() {
        for bad in [
            "<m xmlns:p=''/>",
            "<m xmlns:xmlns='urn:x'/>",
            "<m xmlns:xml='urn:x'/>",
            "<m xmlns:p='http://www.w3.org/XML/1998/namespace'/>",
            "<xmlns:m/>",
            "<:m/>",
        ] {
            assert_eq!(error(&stream(bad)).condition(), "not-well-formed", "{bad}");
        }
    }

    #[test]
    fn wrong_root() {
        let e = error("<stream:stream xmlns:stream='urn:wrong' xmlns='jabber:client'>");
        assert_eq!(e, XmlError::InvalidNamespace("urn:wrong".into()));
        assert_eq!(
            error("<stream xmlns='jabber:client'>").condition(),
            "invalid-namespace"
        );
        assert_eq!(error("<html>").condition(), "invalid-namespace");
        let e = error("<stream:features xmlns:stream='http://etherx.jabber.org/streams'>");
        assert_eq!(e.condition(), "bad-format");
        assert_eq!(error("GET / HTTP/1.1\r\n").condition(), "not-well-formed");
    }

    #[test]
    fn mismatched_close_tag() {
        let e = error(&stream("<message><body></message>"));
        assert_eq!(e.condition(), "not-well-formed");
        assert!(e.to_string().contains("</message>"), "{e}");
        assert_eq!(error(&stream("</message>")).condition(), "not-well-formed");
        assert_eq!(error("</stream:stream>").condition(), "not-well-formed");
    }

    #[test]
    fn text_at_stream_level() {
        assert_eq!(
            error(&stream("<presence/> hello")),
            XmlError::BadFormat("text between stanzas")
        );
        assert_eq!(error(&stream("<![CDATA[x]]>")).condition(), "bad-format");
        assert_eq!(error("hello").condition(), "not-well-formed");
    }

    #[test]
    fn invalid_utf8() {
        for bad in [
            &b"<a>\xff</a>"[..],
            b"<a>\xe2\x82</a>",
            b"<a\xc3\x28/>",
            b"<a b='\xed\xa0\x80'/>",
            b"<a><![CDATA[\xff]]></a>",
        ] {
            let input = [HEADER.as_bytes(), bad].concat();
            let e = whole(&input).unwrap_err();
            assert_eq!(e.condition(), "not-well-formed", "{bad:?}");
            assert_eq!(
                byte_by_byte(&input).unwrap_err().condition(),
                "not-well-formed"
            );
        }
    }

    #[test]
    fn characters_xml_forbids() {
        assert_eq!(
            error(&stream("<a>\u{1}</a>")).condition(),
            "not-well-formed"
        );
        assert_eq!(
            error(&stream("<a>\u{FFFF}</a>")).condition(),
            "not-well-formed"
        );
        assert_eq!(error(&stream("<a>]]></a>")).condition(), "not-well-formed");
        assert_eq!(
            error(&stream("<a b='\u{1}'/>")).condition(),
            "not-well-formed"
        );
    }

    #[test]
    fn encoding_other_than_utf8() {
        let e = error("<?xml version='1.0' encoding='ISO-8859-1'?><stream:stream>");
        assert_eq!(e, XmlError::UnsupportedEncoding("ISO-8859-1".into()));
        assert_eq!(e.condition(), "unsupported-encoding");
        assert!(
            whole(format!("<?xml version='1.0' encoding='utf-8'?>{HEADER}").as_bytes()).is_ok()
        );
    }

    #[test]
    fn malformed_markup() {
        for bad in [
            "<a b='1'c='2'/>",
            "<a b/>",
            "<a b='1></a>",
            "<a/ >",
            "<a></a b>",
            "<a><![CDAT[x]]></a>",
            "<a><!x></a>",
            "<a <b/>",
            "<1a/>",
        ] {
            assert_eq!(error(&stream(bad)).condition(), "not-well-formed", "{bad}");
        }
    }
}
