//! XML for XMPP streams: a streaming framer over `xmlparser` that enforces
//! RFC 6120 §11 restricted XML and size limits, a namespace-resolved element
//! tree, and an escaping writer.

mod element;
pub mod framer;

pub use element::{ByteCount, Element, Node, XmlSink, escape_attr, escape_text};
pub use framer::{Event, Framer, Limit, Limits, MAX_HEADER_BYTES, StreamHeader, XmlError};
