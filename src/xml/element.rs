//! The element tree every layer above the framer works with, and the
//! serializer that escapes everything it writes.
//!
//! Namespaces are resolved by the framer: an [`Element`] carries the
//! namespace URI of its name, never a prefix. Attribute names are stored as
//! written when unprefixed (`to`, `type`) or in the XML namespace
//! (`xml:lang`); an attribute in any other namespace is stored in Clark
//! notation, `{uri}local`, and the writer declares a prefix for it.

use std::fmt;

/// A child of an element: another element or character data (unescaped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
}

/// An XML element with its namespace resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    /// Local name, without prefix.
    name: String,
    /// Namespace URI of the name; empty for no namespace.
    ns: String,
    /// Attributes in document order; see the module docs for how names are kept.
    attrs: Vec<(String, String)>,
    /// Child elements and text, in document order.
    children: Vec<Node>,
}

impl Element {
    /// A new element `name` in namespace `ns`, with no attributes or children.
    pub fn new(name: impl Into<String>, ns: impl Into<String>) -> Self {
        Element {
            name: name.into(),
            ns: ns.into(),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Builder: sets attribute `key` to `value`.
    pub fn with_attr(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.set_attr(key, value);
        self
    }

    /// Builder: appends a child element.
    pub fn with_child(mut self, child: Element) -> Self {
        self.children.push(Node::Element(child));
        self
    }

    /// Builder: appends character data.
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.push_text(text);
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// True when this element is `name` in namespace `ns`.
    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn attrs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.attrs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Sets (or replaces) attribute `key`.
    pub fn set_attr(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        let value = value.into();
        match self.attrs.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.attrs.push((key, value)),
        }
    }

    /// Removes attribute `key`, returning its value if it was present.
    pub fn remove_attr(&mut self, key: &str) -> Option<String> {
        let i = self.attrs.iter().position(|(k, _)| k == key)?;
        Some(self.attrs.remove(i).1)
    }

    /// All child nodes, elements and text.
    pub fn nodes(&self) -> &[Node] {
        &self.children
    }

    /// Child elements only.
    pub fn children(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The first child element `name` in namespace `ns`.
    pub fn get_child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.children().find(|e| e.is(name, ns))
    }

    /// True when a child element `name` in namespace `ns` exists.
    pub fn has_child(&self, name: &str, ns: &str) -> bool {
        self.get_child(name, ns).is_some()
    }

    pub fn push_child(&mut self, child: Element) {
        self.children.push(Node::Element(child));
    }

    /// Inserts `child` as the `index`th node (at the end when there are fewer).
    pub fn insert_child(&mut self, index: usize, child: Element) {
        let at = index.min(self.children.len());
        self.children.insert(at, Node::Element(child));
    }

    pub fn push_text(&mut self, text: impl Into<String>) {
        let text = text.into();
        if text.is_empty() {
            return;
        }
        if let Some(Node::Text(last)) = self.children.last_mut() {
            last.push_str(&text);
        } else {
            self.children.push(Node::Text(text));
        }
    }

    /// Moves this element and every descendant in namespace `from` to namespace `to`.
    /// A stanza from a server stream (`jabber:server`) becomes the same stanza as the
    /// rest of the server handles it (`jabber:client`), RFC 6120 §4.8.3: only the
    /// stream's content namespace differs.
    pub fn rename_ns(&mut self, from: &str, to: &str) {
        if self.ns == from {
            self.ns = to.to_owned();
        }
        for n in &mut self.children {
            if let Node::Element(e) = n {
                e.rename_ns(from, to);
            }
        }
    }

    /// Removes every child element `name` in namespace `ns`.
    pub fn remove_children(&mut self, name: &str, ns: &str) {
        self.children
            .retain(|n| !matches!(n, Node::Element(e) if e.is(name, ns)));
    }

    /// The concatenated character data directly inside this element.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for n in &self.children {
            if let Node::Text(t) = n {
                s.push_str(t);
            }
        }
        s
    }

    /// Serializes this element as it appears inside a parent whose default
    /// namespace is `parent_ns` (for a stanza: `jabber:client`), so the
    /// default namespace is declared only where it changes.
    pub fn write_to<S: XmlSink + ?Sized>(&self, out: &mut S, parent_ns: &str) {
        out.push('<');
        out.push_str(&self.name);
        if self.ns != parent_ns {
            out.push_str(" xmlns=\"");
            escape_attr(&self.ns, out);
            out.push('"');
        }
        let mut prefix_n = 0;
        for (k, v) in &self.attrs {
            out.push(' ');
            if let Some(rest) = k.strip_prefix('{') {
                // {uri}local: declare a prefix of our own for it.
                let (uri, local) = rest.split_once('}').unwrap_or(("", rest));
                out.push_str(&format!("xmlns:a{prefix_n}=\""));
                escape_attr(uri, out);
                out.push_str(&format!("\" a{prefix_n}:{local}"));
                prefix_n += 1;
            } else {
                out.push_str(k);
            }
            out.push_str("=\"");
            escape_attr(v, out);
            out.push('"');
        }
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for n in &self.children {
            match n {
                Node::Element(e) => e.write_to(out, &self.ns),
                Node::Text(t) => escape_text(t, out),
            }
        }
        out.push_str("</");
        out.push_str(&self.name);
        out.push('>');
    }

    /// The length in bytes of [`Element::write_to`]'s output, without writing it.
    pub fn xml_len_in(&self, parent_ns: &str) -> usize {
        let mut n = ByteCount(0);
        self.write_to(&mut n, parent_ns);
        n.0
    }

    /// Serializes with `parent_ns` as the surrounding default namespace.
    pub fn to_xml_in(&self, parent_ns: &str) -> String {
        let mut s = String::with_capacity(128);
        self.write_to(&mut s, parent_ns);
        s
    }
}

impl fmt::Display for Element {
    /// Standalone serialization: the element always declares its namespace.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_xml_in(""))
    }
}

/// Where serialized XML goes: a `String`, or a [`ByteCount`] that only measures it.
pub trait XmlSink {
    fn push(&mut self, c: char);
    fn push_str(&mut self, s: &str);
}

impl XmlSink for String {
    fn push(&mut self, c: char) {
        String::push(self, c)
    }

    fn push_str(&mut self, s: &str) {
        String::push_str(self, s)
    }
}

/// Counts the bytes that would be written.
pub struct ByteCount(pub usize);

impl XmlSink for ByteCount {
    fn push(&mut self, c: char) {
        self.0 += c.len_utf8();
    }

    fn push_str(&mut self, s: &str) {
        self.0 += s.len();
    }
}

/// Is `c` allowed in an XML 1.0 document (the `Char` production)?
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Escapes character data. Characters XML cannot carry at all are dropped
/// rather than written, so the output is always well-formed. A carriage
/// return is written as a reference: written raw, the reader's end-of-line
/// handling (XML 1.0 §2.11) would turn it into a line feed, so a `&#13;`
/// a client sent would not reach the recipient as sent (found by the
/// `stanza` fuzz target).
pub fn escape_text<S: XmlSink + ?Sized>(s: &str, out: &mut S) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            c if is_xml_char(c) => out.push(c),
            _ => {}
        }
    }
}

/// Escapes an attribute value for use between double quotes. Whitespace
/// other than space is written as a character reference so that attribute
/// value normalization does not change it on the other side.
pub fn escape_attr<S: XmlSink + ?Sized>(s: &str, out: &mut S) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if is_xml_char(c) => out.push(c),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_namespace_only_where_it_changes() {
        let e = Element::new("iq", "jabber:client")
            .with_attr("type", "result")
            .with_child(Element::new("ping", "urn:xmpp:ping"));
        assert_eq!(
            e.to_xml_in("jabber:client"),
            r#"<iq type="result"><ping xmlns="urn:xmpp:ping"/></iq>"#
        );
        assert_eq!(
            e.to_string(),
            r#"<iq xmlns="jabber:client" type="result"><ping xmlns="urn:xmpp:ping"/></iq>"#
        );
    }

    #[test]
    fn escapes_text_and_attributes() {
        let e = Element::new("body", "jabber:client")
            .with_attr("a", "x\"'<>&\n")
            .with_text("<script>&amp;</script>\u{0}");
        assert_eq!(
            e.to_xml_in("jabber:client"),
            "<body a=\"x&quot;&apos;&lt;&gt;&amp;&#10;\">&lt;script&gt;&amp;amp;&lt;/script&gt;</body>"
        );
    }

    /// Regression (fuzz target `stanza`): a carriage return in text must
    /// survive being written and read again.
    #[test]
    fn carriage_return_in_text_round_trips() {
        let e = Element::new("body", "jabber:client").with_text("a\r\nb\rc");
        let xml = e.to_xml_in("jabber:client");
        assert_eq!(xml, "<body>a&#13;\nb&#13;c</body>");
        let mut f = crate::xml::Framer::default();
        f.feed(
            b"<stream:stream xmlns='jabber:client' \
              xmlns:stream='http://etherx.jabber.org/streams'>",
        )
        .unwrap();
        f.feed(xml.as_bytes()).unwrap();
        assert!(matches!(
            f.next_event(),
            Ok(Some(crate::xml::Event::Open(_)))
        ));
        assert_eq!(f.next_event(), Ok(Some(crate::xml::Event::Stanza(e))));
    }

    #[test]
    fn clark_attributes_get_a_prefix() {
        let e = Element::new("x", "").with_attr("{urn:a}b", "1");
        assert_eq!(e.to_xml_in(""), r#"<x xmlns:a0="urn:a" a0:b="1"/>"#);
    }

    #[test]
    fn attribute_set_replaces_and_remove_returns() {
        let mut e = Element::new("m", "jabber:client").with_attr("from", "a");
        e.set_attr("from", "b");
        assert_eq!(e.attr("from"), Some("b"));
        assert_eq!(e.remove_attr("from").as_deref(), Some("b"));
        assert_eq!(e.attr("from"), None);
    }

    #[test]
    fn measured_length_is_the_written_length() {
        let e = Element::new("message", "jabber:client")
            .with_attr("to", "a@b/c'\"<")
            .with_attr("{urn:x}k", "v")
            .with_child(Element::new("body", "jabber:client").with_text("caf\u{e9} & \r\n<x>"))
            .with_child(Element::new("x", "urn:y"));
        for ns in ["jabber:client", ""] {
            assert_eq!(e.xml_len_in(ns), e.to_xml_in(ns).len());
        }
    }
}
