//! XEP-0045: Multi-User Chat, as the service `conference.<domain>` (`[muc]`).
//!
//! The rooms themselves are not a module of the server's domain: they are a
//! [`crate::router::Service`] with a domain of its own ([`service::MucService`]), which
//! the router hands every stanza for that domain. This module is what the server's
//! domain says about it: the service in the server's disco#items (XEP-0045 §6.1) and the
//! specifications in the README.
//!
//! - `room.rs`: one room as a pure state machine (§5 roles and affiliations, §7 occupant
//!   use cases, §8 moderator, §9 admin and §10 owner use cases, history §7.2.15);
//! - `service.rs`: the rooms of the service, disco, room creation limits, routing and
//!   the writer thread;
//! - `store.rs`: persistent rooms in SQLite (migration 0011).
//!
//! An occupant whose session ends leaves its rooms with it: the room got directed
//! presence from the session, so the router's unavailable broadcast (RFC 6121 §4.6.3)
//! reaches it.

pub mod archive;
pub mod room;
pub mod service;
pub mod store;

pub use service::MucService;

use super::{Doc, IqCx, Module, Spec, Status, Target};
use crate::xml::Element;

/// `[muc]`: the group chat service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MucConfig {
    /// Whether the service runs (on by default).
    pub enabled: bool,
    /// Its domain, `conference.<domain>` by default.
    pub domain: String,
    /// Rooms the service holds, persistent or not.
    pub max_rooms: usize,
    /// Rooms one account may own.
    pub max_rooms_per_user: usize,
    /// Occupants per room.
    pub max_occupants: usize,
    /// Messages of history a room may keep.
    pub history_length: usize,
}

impl MucConfig {
    pub const DEFAULT_MAX_ROOMS: usize = 200;
    pub const DEFAULT_MAX_ROOMS_PER_USER: usize = 20;
    pub const DEFAULT_MAX_OCCUPANTS: usize = 100;
    pub const DEFAULT_HISTORY_LENGTH: usize = 50;

    /// The defaults for a server hosting `domain`.
    pub fn for_domain(domain: &str) -> MucConfig {
        MucConfig {
            enabled: true,
            domain: format!("conference.{domain}"),
            max_rooms: Self::DEFAULT_MAX_ROOMS,
            max_rooms_per_user: Self::DEFAULT_MAX_ROOMS_PER_USER,
            max_occupants: Self::DEFAULT_MAX_OCCUPANTS,
            history_length: Self::DEFAULT_HISTORY_LENGTH,
        }
    }
}

impl Default for MucConfig {
    /// Off: a registry built without a configuration ([`super::Registry::standard`])
    /// has no service to announce.
    fn default() -> MucConfig {
        MucConfig {
            enabled: false,
            ..MucConfig::for_domain("localhost")
        }
    }
}

/// The server's side of the group chat service.
pub struct Muc {
    /// The service's domain, when it runs.
    domain: Option<String>,
}

impl Muc {
    pub fn new(config: &MucConfig) -> Muc {
        Muc {
            domain: config.enabled.then(|| config.domain.clone()),
        }
    }
}

impl Module for Muc {
    fn name(&self) -> &'static str {
        "muc"
    }

    fn specs(&self) -> &'static [Spec] {
        &[
            Spec {
                doc: Doc::Xep(45),
                title: "Multi-User Chat",
                version: "1.35",
                status: Status::Partial,
                note: "conference.<domain>: rooms, roles, affiliations, owner form, \
                       history, invitations, persistent rooms; XEP-0313 queries to a room over its kept \
                       history; voice requests (§8.6); \
                       iqs between occupants relayed to the session; users of other servers \
                       over federation; no reserved nicknames",
            },
            Spec {
                doc: Doc::Xep(421),
                title: "Occupant identifiers for semi-anonymous MUCs",
                version: "1.0.1",
                status: Status::Complete,
                note: "HMAC of the room and the person under a stored service secret",
            },
            Spec {
                doc: Doc::Xep(425),
                title: "Moderated Message Retraction",
                version: "0.3.0",
                status: Status::Complete,
                note: "within the room's kept history; the tombstone replaces the message",
            },
            Spec {
                doc: Doc::Xep(410),
                title: "MUC Self-Ping (Schrödinger's Chat)",
                version: "1.1",
                status: Status::Complete,
                note: "",
            },
            Spec {
                doc: Doc::Xep(249),
                title: "Direct MUC Invitations",
                version: "1.2",
                status: Status::Complete,
                note: "passed through between clients",
            },
        ]
    }

    fn disco_items<'a>(&'a self, cx: &'a IqCx<'a>) -> super::HookFuture<'a, Vec<Element>> {
        let item = match (&self.domain, cx.target) {
            (Some(d), Target::Server) => vec![
                Element::new("item", crate::ns::DISCO_ITEMS)
                    .with_attr("jid", d.clone())
                    .with_attr("name", "Group chats"),
            ],
            _ => Vec::new(),
        };
        Box::pin(std::future::ready(item))
    }
}
