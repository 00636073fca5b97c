//! XEP-0198: Stream Management — as a module, what it declares: the `<sm/>` stream
//! feature after login. The protocol is the stream's: counting in `stream::sm` and the
//! c2s machine, resumption and the fate of unacknowledged stanzas in `net::sm`.

use super::{Doc, Module, Spec, Status};
use crate::stream::sm::NS;
use crate::xml::Element;

pub struct StreamManagement;

impl Module for StreamManagement {
    fn name(&self) -> &'static str {
        "sm"
    }

    fn specs(&self) -> &'static [Spec] {
        &[Spec {
            doc: Doc::Xep(198),
            title: "Stream Management",
            version: "1.6.3",
            status: Status::Complete,
            note: "acks and resumption for clients (an hour by default, `[stream_management]`); \
                   what a session never acknowledged goes to another resource or offline storage",
        }]
    }

    /// §2: offered once the client is authenticated (resumption takes the place of
    /// binding, enabling comes after it).
    fn stream_features(&self) -> Vec<Element> {
        vec![Element::new("sm", NS)]
    }
}
