//! XML for XMPP streams: a streaming framer over `xmlparser` that enforces
//! RFC 6120 §11 restricted XML and size limits, a namespace-resolved element
//! tree, and an escaping writer.

mod element;
pub mod framer;

pub use element::{ByteCount, Element, Node, XmlSink, escape_attr, escape_text};
pub use framer::{Event, Framer, Limit, Limits, MAX_HEADER_BYTES, StreamHeader, XmlError};

/// Reads one element serialized standalone (it declares its own namespace, as
/// `Element::to_xml_in("")` writes it): what storage kept of an element, read back. The
/// same framer and limits as a stream's, so a stored value is held to the rules it was
/// accepted under; `None` if it is not one well-formed element.
pub fn parse_fragment(xml: &str) -> Option<Element> {
    // Stored values were accepted from streams whose stanza size is configurable.
    let mut f = Framer::new(Limits {
        max_stanza_bytes: 16 * 1024 * 1024,
        ..Limits::default()
    });
    let header = "<stream:stream xmlns='jabber:client' \
                  xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";
    f.feed(header.as_bytes()).ok()?;
    f.feed(xml.as_bytes()).ok()?;
    loop {
        match f.next_event().ok()? {
            Some(Event::Stanza(el)) => return Some(el),
            Some(_) => continue,
            None => return None,
        }
    }
}

#[cfg(test)]
mod fragment_tests {
    use super::*;

    #[test]
    fn a_stored_element_reads_back() {
        let el = Element::new("data", "urn:xmpp:avatar:data").with_text("a<b");
        let back = parse_fragment(&el.to_xml_in("")).unwrap();
        assert_eq!(back, el);
        assert_eq!(parse_fragment("<unclosed xmlns='x'>"), None);
        assert_eq!(parse_fragment("not xml"), None);
    }
}
