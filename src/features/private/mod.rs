//! XEP-0049: Private XML Storage (`jabber:iq:private`, version 1.2) — any XML fragment a
//! client keeps on the server for itself, one element per (name, namespace): client
//! preferences, and XEP-0048 bookmarks for clients that predate PEP.
//!
//! Only the account itself reads or writes (§3: anyone else gets `forbidden`, which the
//! registry answers for [`Access::Own`]). A query without a child gets `not-acceptable`
//! (§2.3: "MUST"), a get that asks for more than one element `bad-request` (§2.3: "MUST
//! NOT query for more than one namespace"), and an element in a reserved namespace
//! (`jabber:…`, `http://jabber.org/…`, `vcard-temp`, §2.3 and §3) `not-acceptable`, as
//! historical servers answer. A set may carry several elements, stored together or not at
//! all (at most [`MAX_ELEMENTS_PER_SET`]); an empty element (no attributes, no children)
//! removes what was stored, as in Prosody, so it stops counting in the account's quota.
//! Each element is bounded in bytes
//! (`[private_storage] max_item_bytes`) and all of them count in
//! `limits.max_stored_bytes_per_account` (`resource-constraint` past it).

mod store;

pub use store::PrivateStore;

use super::{Access, Announce, Doc, IqCx, IqFuture, IqRoute, Module, On, Spec, Status, Target};
use crate::ns;
use crate::router::im::on_pool;
use crate::stanza::{IqType, Stanza, StanzaCondition, StanzaError};
use crate::storage::OverQuota;
use crate::xml::{Element, Event, Framer, Limits};

/// XEP-0049's namespace.
pub const NS: &str = "jabber:iq:private";

/// `[private_storage]`: how large one stored element may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrivateConfig {
    /// Bytes of one element as stored (its XML, namespace declared).
    pub max_item_bytes: usize,
}

impl PrivateConfig {
    /// 64 KiB: a client's preferences, or bookmarks of a few hundred rooms.
    pub const DEFAULT_MAX_ITEM_BYTES: usize = 64 * 1024;
}

impl Default for PrivateConfig {
    fn default() -> PrivateConfig {
        PrivateConfig {
            max_item_bytes: PrivateConfig::DEFAULT_MAX_ITEM_BYTES,
        }
    }
}

/// What a client asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// §2.3: the element stored under this name and namespace, answered empty when
    /// nothing is stored.
    Get { ns: String, name: String },
    /// §2.3: store each element (its XML) or, for `None` (an empty element), remove it.
    Set(Vec<Item>),
}

/// One element of a set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub ns: String,
    pub name: String,
    /// The element serialized standalone; `None` removes what is stored.
    pub xml: Option<String>,
}

/// Elements one set may carry: far more than a client stores at once (one, usually), and
/// few enough that a set's work stays small however it is written.
pub const MAX_ELEMENTS_PER_SET: usize = 64;

/// Namespaces §2.3 calls reserved: a client cannot keep data under them.
pub fn is_reserved(ns: &str) -> bool {
    ns.is_empty()
        || ns.starts_with("jabber:")
        || ns.starts_with("http://jabber.org/")
        || ns == "vcard-temp"
}

fn refuse(cond: StanzaCondition, text: impl Into<String>) -> StanzaError {
    StanzaError::new(cond).with_text(text)
}

/// Reads a `jabber:iq:private` get or set; every bad input gets the XEP's error.
pub fn parse(iq: &Stanza, cfg: &PrivateConfig) -> Result<Request, StanzaError> {
    let Some(q) = iq.iq_payload().filter(|p| p.is("query", NS)) else {
        return Err(refuse(StanzaCondition::BadRequest, "expected <query/>"));
    };
    let children: Vec<&Element> = q.children().collect();
    if children.is_empty() {
        // §2.3: "At least one child element with a proper namespace MUST be included".
        return Err(refuse(
            StanzaCondition::NotAcceptable,
            "the query names no element to get or set",
        ));
    }
    if let Some(c) = children.iter().find(|c| is_reserved(c.ns())) {
        return Err(refuse(
            StanzaCondition::NotAcceptable,
            format!("the namespace {:?} is reserved", c.ns()),
        ));
    }
    match iq.iq_type() {
        Some(IqType::Get) => {
            let [one] = children.as_slice() else {
                return Err(refuse(
                    StanzaCondition::BadRequest,
                    "a get asks for one element",
                ));
            };
            Ok(Request::Get {
                ns: one.ns().to_owned(),
                name: one.name().to_owned(),
            })
        }
        Some(IqType::Set) => {
            if children.len() > MAX_ELEMENTS_PER_SET {
                return Err(refuse(
                    StanzaCondition::NotAcceptable,
                    format!("at most {MAX_ELEMENTS_PER_SET} elements in one set"),
                ));
            }
            let mut items = Vec::with_capacity(children.len());
            for c in children {
                let is_empty = c.nodes().is_empty() && c.attrs().next().is_none();
                let xml = if is_empty {
                    None
                } else {
                    let xml = c.to_xml_in("");
                    if xml.len() > cfg.max_item_bytes {
                        return Err(refuse(
                            StanzaCondition::NotAcceptable,
                            format!(
                                "<{}/> is {} bytes; this server keeps at most {} per element",
                                c.name(),
                                xml.len(),
                                cfg.max_item_bytes
                            ),
                        ));
                    }
                    Some(xml)
                };
                // The last of two elements with the same name and namespace wins.
                items.retain(|i: &Item| !(i.ns == c.ns() && i.name == c.name()));
                items.push(Item {
                    ns: c.ns().to_owned(),
                    name: c.name().to_owned(),
                    xml,
                });
            }
            Ok(Request::Set(items))
        }
        _ => Err(refuse(StanzaCondition::BadRequest, "not a get or set")),
    }
}

/// An element the server wrote itself (standalone, namespace declared) read back; `None`
/// if it does not parse, which only a damaged database gives.
pub(crate) fn parse_stored(xml: &str) -> Option<Element> {
    let mut framer = Framer::new(Limits {
        max_stanza_bytes: usize::MAX,
        max_depth: 1024,
        max_attrs: 1024,
        max_elements: usize::MAX,
    });
    let head = format!(
        "<stream:stream xmlns='{}' xmlns:stream='{}'>",
        ns::CLIENT,
        ns::STREAM
    );
    framer.feed(head.as_bytes()).ok()?;
    framer.feed(xml.as_bytes()).ok()?;
    loop {
        match framer.next_event() {
            Ok(Some(Event::Stanza(el))) => return Some(el),
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return None,
        }
    }
}

/// The module.
pub struct Private {
    cfg: PrivateConfig,
}

impl Private {
    pub fn new(cfg: &PrivateConfig) -> Private {
        Private { cfg: *cfg }
    }
}

impl Module for Private {
    fn name(&self) -> &'static str {
        "private"
    }

    fn specs(&self) -> &'static [Spec] {
        &[Spec {
            doc: Doc::Xep(49),
            title: "Private XML Storage",
            version: "1.2",
            status: Status::Complete,
            note: "reserved namespaces refused; an empty element removes; per-element size \
                   limit and the account's byte quota",
        }]
    }

    fn disco(&self) -> &'static [Announce] {
        // Clients find it by asking; Prosody and ejabberd announce it on the server.
        &[Announce {
            var: NS,
            on: On::Server,
        }]
    }

    fn iqs(&self) -> &'static [IqRoute] {
        &[IqRoute {
            ns: NS,
            on: On::Account,
            access: Access::Own,
        }]
    }

    fn handle_iq<'a>(&'a self, cx: &'a IqCx<'a>, iq: &'a Stanza) -> IqFuture<'a> {
        Box::pin(async move {
            // Access::Own: only the account's own sessions get here.
            let (Some(from), Target::Account(to)) = (cx.from.session(), cx.target) else {
                return Err(StanzaError::new(StanzaCondition::Forbidden));
            };
            if from.bare() != *to {
                return Err(StanzaError::new(StanzaCondition::Forbidden));
            }
            let Some(user) = to.local().map(str::to_owned) else {
                return Err(StanzaError::new(StanzaCondition::Forbidden));
            };
            let internal = |e: crate::storage::StorageError| {
                log::warn!("c2s{}: private storage: {e}", cx.im.conn);
                StanzaError::new(StanzaCondition::InternalServerError)
            };
            match parse(iq, &self.cfg)? {
                Request::Get { ns, name } => {
                    let (n, m) = (ns.clone(), name.clone());
                    let stored = on_pool(cx.im.storage, move |s| s.private_get(&user, &n, &m))
                        .await
                        .map_err(internal)?;
                    let el = stored
                        .as_deref()
                        .and_then(parse_stored)
                        .unwrap_or_else(|| Element::new(name, ns));
                    Ok(Some(Element::new("query", NS).with_child(el)))
                }
                Request::Set(items) => {
                    let quota = *cx.im.router.quota();
                    let n = items.len();
                    let stored =
                        on_pool(cx.im.storage, move |s| s.private_set(&user, &items, &quota))
                            .await
                            .map_err(internal)?;
                    match stored {
                        Ok(()) => {
                            log::debug!("c2s{}: stored {n} private element(s)", cx.im.conn);
                            Ok(None)
                        }
                        Err(OverQuota::Bytes | OverQuota::Items) => Err(refuse(
                            StanzaCondition::ResourceConstraint,
                            "the account's storage is full",
                        )),
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests;
