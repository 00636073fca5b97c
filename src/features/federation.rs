//! Federation: the links to other servers and to external components. Not a payload
//! module (the streams live in `stream/s2s.rs`, `stream/component.rs` and
//! `net/s2s.rs`, `net/component.rs`); declared here so the README's table of
//! specifications is whole.

use super::{Doc, Module, Spec, Status};

pub struct Federation;

impl Module for Federation {
    fn name(&self) -> &'static str {
        "federation"
    }

    fn specs(&self) -> &'static [Spec] {
        &[
            Spec {
                doc: Doc::Rfc(7590, ""),
                title: "Use of TLS in XMPP",
                version: "",
                status: Status::Complete,
                note: "TLS 1.2/1.3 on every link, required by default (`[s2s] require_tls`)",
            },
            Spec {
                doc: Doc::Xep(114),
                title: "Jabber Component Protocol",
                version: "1.6",
                status: Status::Partial,
                note: "components reach this server's users; not carried to other servers",
            },
            Spec {
                doc: Doc::Xep(178),
                title: "Best Practices for Use of SASL EXTERNAL with Certificates",
                version: "1.2",
                status: Status::Complete,
                note: "server-to-server both ways; serverAuth-only certificates accepted",
            },
            Spec {
                doc: Doc::Xep(185),
                title: "Dialback Key Generation and Validation",
                version: "1.0",
                status: Status::Complete,
                note: "keys from a secret made at each start, never stored",
            },
            Spec {
                doc: Doc::Xep(220),
                title: "Server Dialback",
                version: "1.1.1",
                status: Status::Complete,
                note: "verification on a connection of its own; several domains per incoming stream",
            },
            Spec {
                doc: Doc::Xep(344),
                title: "Impact of TLS and DNSSEC on Dialback",
                version: "0.4",
                status: Status::Partial,
                note: "a certificate valid for the domain stands for the dialback round trip; no DNSSEC",
            },
        ]
    }
}
