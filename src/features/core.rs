//! The core protocols: streams, TLS, SASL, resource binding and the delivery rules. Not a
//! payload module (they live in `stream/`, `net/` and `router/`); declared here so the
//! README's table of specifications is whole.

use super::{Doc, Module, Spec, Status};

pub struct Core;

impl Module for Core {
    fn name(&self) -> &'static str {
        "core"
    }

    fn specs(&self) -> &'static [Spec] {
        &[
            Spec {
                doc: Doc::Rfc(6120, ""),
                title: "XMPP Core",
                version: "",
                status: Status::Complete,
                note: "client-to-server and server-to-server: STARTTLS (required), SASL, \
                       binding, stanza and stream errors, SRV lookups (§3.2)",
            },
            Spec {
                doc: Doc::Rfc(6121, "§5, §8"),
                title: "Exchanging Messages; Server Rules for Processing XML Stanzas",
                version: "",
                status: Status::Complete,
                note: "delivery to bare and full JIDs by priority",
            },
            Spec {
                doc: Doc::Rfc(7622, ""),
                title: "XMPP Address Format",
                version: "",
                status: Status::Complete,
                note: "PRECIS and IDNA normalization",
            },
            Spec {
                doc: Doc::Rfc(5802, ""),
                title: "SCRAM",
                version: "",
                status: Status::Complete,
                note: "SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 7677), with -PLUS",
            },
            Spec {
                doc: Doc::Rfc(9266, ""),
                title: "Channel Bindings for TLS 1.3",
                version: "",
                status: Status::Complete,
                note: "tls-exporter; also tls-server-end-point (RFC 5929)",
            },
            Spec {
                doc: Doc::Rfc(7395, ""),
                title: "An XMPP Subprotocol for WebSocket",
                version: "",
                status: Status::Complete,
                note: "for web clients: `/xmpp-websocket` on the HTTPS listener (port 5443), and `[websocket] listen` (wss://, or ws:// from loopback behind a proxy); one element per message, the c2s limits; no `see-other-uri`",
            },
            Spec {
                doc: Doc::Xep(368),
                title: "SRV records for XMPP over TLS",
                version: "1.1.0",
                status: Status::Complete,
                note: "direct TLS for clients and servers; `_xmpps-server` SRV records followed",
            },
            Spec {
                doc: Doc::Xep(440),
                title: "SASL Channel-Binding Type Capability",
                version: "0.4.2",
                status: Status::Complete,
                note: "",
            },
            Spec {
                doc: Doc::Xep(205),
                title: "Best Practices to Discourage Denial of Service Attacks",
                version: "1.0",
                status: Status::Partial,
                note: "connection and byte rates, stanza and XML limits, login throttling",
            },
        ]
    }
}
