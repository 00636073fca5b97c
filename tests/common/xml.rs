//! A small, test-only reader for an XMPP stream (RFC 6120 §4): it turns the bytes a
//! server sends into the stream header, one complete first-level element at a time,
//! and the closing `</stream:stream>`.
//!
//! It is deliberately independent of hearth's own framer (`src/xml/`): a test that
//! parsed the server's output with the server's parser could not catch the parser's
//! mistakes. It resolves namespaces (a server may write `<stream:features>` or
//! `<features xmlns='http://etherx.jabber.org/streams'>`), unescapes text and
//! attribute values, and is lenient about everything else: it only has to read what
//! a server writes.

use std::fmt;

/// A parsed element: local name, resolved namespace, attributes, children, text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub ns: String,
    /// Attributes as written (`xml:lang` keeps its prefix), `xmlns` declarations left out.
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Node>,
    /// All character data directly inside this element, concatenated.
    pub text: String,
}

impl Node {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first child with this local name and namespace.
    pub fn child(&self, name: &str, ns: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name && c.ns == ns)
    }

    pub fn has_child(&self, name: &str, ns: &str) -> bool {
        self.child(name, ns).is_some()
    }

    /// True for `name` in `ns`.
    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    /// The defined condition of a stream error, SASL failure or stanza `<error/>`: the
    /// name of the first child in `ns` other than `<text/>`.
    pub fn condition(&self, ns: &str) -> Option<&str> {
        self.children
            .iter()
            .find(|c| c.ns == ns && c.name != "text")
            .map(|c| c.name.as_str())
    }
}

impl fmt::Display for Node {
    /// A compact serialization for assertion messages (namespaces shown as `xmlns`
    /// on every element, so it is unambiguous rather than pretty).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} xmlns='{}'", self.name, self.ns)?;
        for (k, v) in &self.attrs {
            write!(f, " {k}='{}'", escape(v))?;
        }
        if self.children.is_empty() && self.text.is_empty() {
            return write!(f, "/>");
        }
        write!(f, ">{}", escape(&self.text))?;
        for c in &self.children {
            write!(f, "{c}")?;
        }
        write!(f, "</{}>", self.name)
    }
}

/// What the reader found next in the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// `<stream:stream …>`: its attributes (`from`, `id`, `version`, …).
    StreamOpen(Node),
    /// A complete first-level element (stanza, features, SASL or TLS element, error).
    Element(Node),
    /// `</stream:stream>`.
    StreamClose,
}

/// Escapes text for an attribute value or character data (both quote kinds).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// Resolves the five predefined entities and character references.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let Some(semi) = after.find(';') else {
            out.push_str(&rest[amp..]);
            return out;
        };
        let entity = &after[..semi];
        let decoded = match entity {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "apos" => Some('\''),
            "quot" => Some('"'),
            _ if entity.starts_with("#x") => u32::from_str_radix(&entity[2..], 16)
                .ok()
                .and_then(char::from_u32),
            _ if entity.starts_with('#') => entity[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) => out.push(c),
            None => out.push_str(&rest[amp..amp + semi + 2]),
        }
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    out
}

const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

/// An element being built: its node plus the prefixes it declared.
struct Open {
    node: Node,
    decls: Vec<(String, String)>,
}

/// Accumulates bytes and yields [`Item`]s. Incomplete input simply yields nothing yet.
#[derive(Default)]
pub struct Reader {
    buf: Vec<u8>,
    /// Namespace declarations of the open `<stream:stream>` (prefix "" = default).
    stream_scope: Vec<(String, String)>,
    in_stream: bool,
}

impl Reader {
    pub fn new() -> Reader {
        Reader::default()
    }

    /// Forgets everything: used after STARTTLS and SASL success, where RFC 6120
    /// §5.4.3.3 and §6.4.6 restart the stream.
    pub fn reset(&mut self) {
        *self = Reader::default();
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet part of a complete item (for failure messages).
    pub fn pending(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }

    /// The next complete item, if the buffer holds one.
    pub fn next_item(&mut self) -> Option<Item> {
        // Only the valid UTF-8 prefix: a character may be split across two reads.
        let valid = match std::str::from_utf8(&self.buf) {
            Ok(s) => s.len(),
            Err(e) => e.valid_up_to(),
        };
        let text = std::str::from_utf8(&self.buf[..valid]).ok()?.to_owned();
        let trimmed = text.trim_start();
        let mut start = text.len() - trimmed.len();
        if trimmed.starts_with("<?xml") {
            let end = trimmed.find("?>")?;
            start += end + 2;
        }
        let (item, consumed) = self.parse_at(&text, start)?;
        self.buf.drain(..consumed);
        Some(item)
    }

    fn resolve(&self, stack: &[Open], decls: &[(String, String)], prefix: &str) -> String {
        if prefix == "xml" {
            return XML_NS.to_string();
        }
        let found = decls
            .iter()
            .rev()
            .chain(stack.iter().rev().flat_map(|o| o.decls.iter().rev()))
            .chain(self.stream_scope.iter().rev())
            .find(|(p, _)| p == prefix);
        found.map(|(_, ns)| ns.clone()).unwrap_or_default()
    }

    /// Parses one item starting at byte `start` of `text`; returns it and the number
    /// of bytes it used, or `None` when the input is incomplete (or not XML: the
    /// caller's timeout then reports the unparsed bytes).
    fn parse_at(&mut self, text: &str, start: usize) -> Option<(Item, usize)> {
        if start >= text.len() {
            return None;
        }
        let mut stack: Vec<Open> = Vec::new();
        // Attributes of the element whose start tag is being read.
        let mut pending_attrs: Vec<(String, String, String)> = Vec::new();
        let mut pending: Option<(String, String)> = None; // (prefix, local)
        for token in xmlparser::Tokenizer::from_fragment(text, start..text.len()) {
            let token = token.ok()?;
            match token {
                xmlparser::Token::ElementStart { prefix, local, .. } => {
                    pending = Some((prefix.as_str().to_string(), local.as_str().to_string()));
                    pending_attrs.clear();
                }
                xmlparser::Token::Attribute {
                    prefix,
                    local,
                    value,
                    ..
                } => pending_attrs.push((
                    prefix.as_str().to_string(),
                    local.as_str().to_string(),
                    unescape(value.as_str()),
                )),
                xmlparser::Token::ElementEnd { end, span } => {
                    let end_offset = span.start() + span.as_str().len();
                    match end {
                        xmlparser::ElementEnd::Open | xmlparser::ElementEnd::Empty => {
                            let (prefix, local) = pending.take()?;
                            let mut decls = Vec::new();
                            let mut attrs = Vec::new();
                            for (p, l, v) in pending_attrs.drain(..) {
                                if p.is_empty() && l == "xmlns" {
                                    decls.push((String::new(), v));
                                } else if p == "xmlns" {
                                    decls.push((l, v));
                                } else if p.is_empty() {
                                    attrs.push((l, v));
                                } else {
                                    attrs.push((format!("{p}:{l}"), v));
                                }
                            }
                            let ns = self.resolve(&stack, &decls, &prefix);
                            let node = Node {
                                name: local,
                                ns,
                                attrs,
                                children: Vec::new(),
                                text: String::new(),
                            };
                            let is_open = matches!(end, xmlparser::ElementEnd::Open);
                            if stack.is_empty() && !self.in_stream && is_open {
                                // The stream header: an element that stays open.
                                self.in_stream = true;
                                self.stream_scope = decls;
                                return Some((Item::StreamOpen(node), end_offset));
                            }
                            if is_open {
                                stack.push(Open { node, decls });
                            } else if let Some(parent) = stack.last_mut() {
                                parent.node.children.push(node);
                            } else {
                                return Some((Item::Element(node), end_offset));
                            }
                        }
                        xmlparser::ElementEnd::Close(_, _) => match stack.pop() {
                            None => {
                                self.in_stream = false;
                                return Some((Item::StreamClose, end_offset));
                            }
                            Some(done) => match stack.last_mut() {
                                Some(parent) => parent.node.children.push(done.node),
                                None => return Some((Item::Element(done.node), end_offset)),
                            },
                        },
                    }
                }
                xmlparser::Token::Text { text: t } => {
                    if let Some(open) = stack.last_mut() {
                        open.node.text.push_str(&unescape(t.as_str()));
                    }
                }
                xmlparser::Token::Cdata { text: t, .. } => {
                    if let Some(open) = stack.last_mut() {
                        open.node.text.push_str(t.as_str());
                    }
                }
                _ => {}
            }
        }
        None
    }
}
