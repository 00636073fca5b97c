//! XEP-0163: Personal Eventing Protocol — every account is a publish-subscribe service
//! (XEP-0060) at its bare JID, with the subset PEP needs: nodes created on first publish
//! (§3, XEP-0060 §7.1.4) or explicitly, `publish-options` preconditions (XEP-0060 §7.1.5),
//! item retrieval by id or count (§6.5), retract (§7.2), node configuration (§8.2),
//! defaults (§8.3), delete (§8.4), purge (§8.5), affiliations for whitelists (§8.9),
//! explicit subscriptions (§6.1) and the access models `presence` (the default), `open`
//! (XEP-0384 OMEMO keys) and `whitelist` (XEP-0223 private data).
//!
//! Only the owner publishes (XEP-0163 §4.2). Notifications (§4.3) go, from the owner's
//! bare JID, to the owner's own available resources and to contacts allowed by the
//! node's access model who asked for them — by listing `NODE+notify` in the disco
//! features behind their presence's XEP-0115 hash ([`interest`]: the server asks a
//! client whose hash it has not seen, checks the answer against the hash and keeps it) or
//! by subscribing explicitly. When such a client's available presence reaches the owner
//! (the owner's own, or a contact's), it is sent the last item of each node it wants
//! (§4.3.3). Contacts on other servers are served the same way, their presence and
//! caps answers arriving over federation.
//!
//! Nodes, items, affiliations and subscriptions live in SQLite (migration 8) and count in
//! the account's `limits.max_stored_bytes_per_account`; nodes per account, items per node
//! and an item's size are bounded by `[pep]`.

pub mod interest;
pub mod node;
mod store;

pub use node::{AccessModel, NodeConfig};
pub use store::{Bounds, Item, PepStore, Publish, Refused};

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use interest::{CapsRef, Interest, Next};
use node::{ConfigError, PUBLISH_OPTIONS};

use super::disco::Identity;
use super::forms::{FormType, Submitted};
use super::{
    Access, Announce, Doc, Hook, HookCx, HookFuture, IqCx, IqFuture, IqRoute, Module, On, Spec,
    Status, Target,
};
use crate::jid::{BareJid, FullJid, Jid};
use crate::ns;
use crate::router::im::{Im, Sender, on_pool};
use crate::stanza::{IqType, Kind, Stanza, StanzaCondition, StanzaError};
use crate::storage::StorageError;
use crate::xml::{Element, parse_fragment};

/// XEP-0060's namespaces.
pub const NS: &str = "http://jabber.org/protocol/pubsub";
pub const NS_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
pub const NS_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
pub const NS_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";

/// Bytes of items one retrieval returns at most (XEP-0060 §6.5.7 lets the service return
/// fewer than asked); the newest are kept.
pub const MAX_RESULT_BYTES: usize = 1024 * 1024;

/// `[pep]`: how much each account may keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PepConfig {
    pub max_nodes_per_account: usize,
    /// The most items a node keeps (`pubsub#max_items=max`).
    pub max_items_per_node: u32,
    /// The largest item payload, serialized.
    pub max_item_bytes: usize,
}

impl Default for PepConfig {
    /// Room for what the common clients publish (Conversations: about a dozen nodes, one
    /// OMEMO bundle per device; bookmarks as one item per room), with items up to an
    /// avatar's size.
    fn default() -> PepConfig {
        PepConfig {
            max_nodes_per_account: 128,
            max_items_per_node: 256,
            max_item_bytes: 200 * 1024,
        }
    }
}

/// The PEP module.
pub struct Pep {
    cfg: PepConfig,
    interest: Mutex<Interest>,
}

impl Pep {
    pub fn new(cfg: &PepConfig) -> Pep {
        Pep {
            cfg: *cfg,
            interest: Mutex::default(),
        }
    }

    fn interest(&self) -> std::sync::MutexGuard<'_, Interest> {
        self.interest.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bounds(&self, im: &Im<'_>, cfg: &NodeConfig) -> Bounds {
        Bounds {
            nodes: self.cfg.max_nodes_per_account,
            items: cfg.max_items.effective(self.cfg.max_items_per_node),
            stored_bytes: im.router.quota().stored_bytes,
        }
    }
}

/// A XEP-0060 error: a stanza condition with a `pubsub#errors` condition (§7.1.3 and the
/// others).
fn pubsub_error(condition: StanzaCondition, app: &'static str) -> StanzaError {
    StanzaError::new(condition).with_app(app, NS_ERRORS)
}

fn storage_error(e: StorageError) -> StanzaError {
    log::error!("storage: {e}");
    StanzaError::new(StanzaCondition::InternalServerError)
}

fn node_attr(el: &Element) -> Result<&str, StanzaError> {
    match el.attr("node") {
        Some(n) if !n.is_empty() => Ok(n),
        _ => Err(pubsub_error(StanzaCondition::BadRequest, "nodeid-required")),
    }
}

/// A fresh item id (XEP-0060 §7.1.2: the service makes one up when none is given).
fn item_id() -> String {
    let mut bytes = [0u8; 12];
    if getrandom::fill(&mut bytes).is_err() {
        // Unique enough within a node for the few items published without an id.
        return format!("{:x}", crate::storage::unix_now());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The one form inside `el` (`<publish-options/>`, `<configure/>`), if any; a form that
/// cannot be read is `bad-request`.
fn form_in(el: Option<&Element>) -> Result<Option<Submitted>, StanzaError> {
    let Some(x) = el.and_then(|e| e.get_child("x", "jabber:x:data")) else {
        return Ok(None);
    };
    Submitted::parse(x)
        .map(Some)
        .map_err(|e| StanzaError::new(StanzaCondition::BadRequest).with_text(e.to_string()))
}

/// Sends `pubsub` (a `<pubsub/>` set request) as the local session `from`, through the
/// stanza path, so the PEP module stores it and notifies as for the client's own request:
/// what XEP-0398 and XEP-0402's compatibility do on a user's behalf. Whether it
/// succeeded.
pub(crate) async fn as_owner(im: &Im<'_>, from: &FullJid, pubsub: Element) -> bool {
    let stanza = Stanza {
        kind: Kind::Iq,
        el: Element::new("iq", ns::CLIENT)
            .with_attr("type", "set")
            .with_attr("id", "pep-as-owner")
            .with_attr("from", from.as_str())
            .with_child(pubsub),
        to: None,
    };
    let mut answer = String::new();
    let _ = Box::pin(im.route(from, stanza, &mut answer)).await;
    answer.contains("type=\"result\"")
}

/// The `<event/>` message of a notification (XEP-0060 §7.1.2.1) for `to`.
fn event_message(owner: &str, to: &str, cfg: &NodeConfig, child: Element) -> Element {
    let mut msg = Element::new("message", ns::CLIENT)
        .with_attr("from", owner)
        .with_attr("to", to)
        .with_attr("id", item_id());
    if cfg.headline {
        msg.set_attr("type", "headline");
    }
    msg.with_child(Element::new("event", NS_EVENT).with_child(child))
}

/// `<items node=…>` of an event or a retrieval, `payload` or not.
fn items_element(ns_: &str, node: &str, items: &[Item], payload: bool) -> Element {
    let mut el = Element::new("items", ns_).with_attr("node", node);
    for item in items {
        let mut it = Element::new("item", ns_).with_attr("id", item.id.as_str());
        if payload {
            match parse_fragment(&item.payload) {
                Some(p) => it.push_child(p),
                None => log::warn!("pep: stored item {} of {node} unreadable", item.id),
            }
        }
        el.push_child(it);
    }
    el
}

/// Whether `who` may read `owner`'s node with `cfg`, as XEP-0060 §6.1.3 and §6.5.x
/// answer: the owner always; someone blocked never; an outcast never; then the access
/// model.
async fn may_read(
    im: Im<'_>,
    user: &str,
    owner: &BareJid,
    node: &str,
    cfg: &NodeConfig,
    who: &BareJid,
) -> Result<(), StanzaError> {
    if who == owner {
        return Ok(());
    }
    // XEP-0191 §3.5: someone the owner blocked (or who blocked the owner) is not told
    // the node exists.
    if !im.presence_allowed(user, who).await {
        return Err(StanzaError::new(StanzaCondition::ServiceUnavailable));
    }
    let (u, n) = (user.to_owned(), node.to_owned());
    let affiliation = on_pool(im.storage, move |s| s.pep_affiliations(&u, &n))
        .await
        .map_err(storage_error)?
        .into_iter()
        .find(|(j, _)| j == who.as_str())
        .map(|(_, a)| a);
    let subscribed = cfg.access == AccessModel::Presence
        && im
            .sub_state_view(user, who)
            .await
            .map_err(storage_error)?
            .subscription
            .has_from();
    access_answer(cfg.access, affiliation.as_deref(), subscribed)
}

/// XEP-0060 §6.1.3 and §6.5.x: what the access model answers someone who is neither the
/// owner nor blocked, from their affiliation and (for `presence`) whether they are
/// subscribed to the owner's presence.
fn access_answer(
    access: AccessModel,
    affiliation: Option<&str>,
    subscribed: bool,
) -> Result<(), StanzaError> {
    if affiliation == Some("outcast") {
        return Err(StanzaError::new(StanzaCondition::Forbidden));
    }
    match access {
        AccessModel::Open => Ok(()),
        AccessModel::Presence if subscribed => Ok(()),
        AccessModel::Presence => Err(pubsub_error(
            StanzaCondition::NotAuthorized,
            "presence-subscription-required",
        )),
        AccessModel::Whitelist => match affiliation {
            Some("member" | "publisher") => Ok(()),
            _ => Err(pubsub_error(StanzaCondition::NotAllowed, "closed-node")),
        },
    }
}

/// [`may_read`] for the many recipients of one notification: the node's affiliations
/// and, for the `presence` model, the owner's contacts with a `from` subscription, read
/// once (blocklists are cached by the router).
struct Readers {
    access: AccessModel,
    affiliations: Vec<(String, String)>,
    /// Bare JIDs subscribed to the owner's presence (the roster as the server sees it,
    /// the household included).
    subscribed: Option<HashSet<BareJid>>,
}

impl Readers {
    async fn of(
        im: Im<'_>,
        user: &str,
        node: &str,
        cfg: &NodeConfig,
    ) -> Result<Readers, StorageError> {
        let (u, n) = (user.to_owned(), node.to_owned());
        let affiliations = on_pool(im.storage, move |s| s.pep_affiliations(&u, &n)).await?;
        let subscribed = match cfg.access {
            AccessModel::Presence => Some(
                im.roster_view(user)
                    .await?
                    .1
                    .into_iter()
                    .filter(|i| i.state.subscription.has_from())
                    .map(|i| i.jid)
                    .collect(),
            ),
            _ => None,
        };
        Ok(Readers {
            access: cfg.access,
            affiliations,
            subscribed,
        })
    }

    /// [`may_read`]'s answer for `who`, without storage.
    async fn allow(&self, im: Im<'_>, user: &str, owner: &BareJid, who: &BareJid) -> bool {
        if who == owner {
            return true;
        }
        if !im.presence_allowed(user, who).await {
            return false;
        }
        let affiliation = self
            .affiliations
            .iter()
            .find(|(j, _)| j == who.as_str())
            .map(|(_, a)| a.as_str());
        let subscribed = self.subscribed.as_ref().is_some_and(|s| s.contains(who));
        access_answer(self.access, affiliation, subscribed).is_ok()
    }
}

/// What an iq asked: who, about which account.
struct Ask<'a> {
    im: Im<'a>,
    from: Sender<'a>,
    owner: BareJid,
    user: String,
    /// The asker's bare JID.
    who: BareJid,
}

impl Ask<'_> {
    fn is_owner(&self) -> bool {
        self.from.is_local() && self.who == self.owner
    }

    fn owner_only(&self) -> Result<(), StanzaError> {
        if self.is_owner() {
            Ok(())
        } else {
            Err(StanzaError::new(StanzaCondition::Forbidden))
        }
    }

    async fn config(&self, node: &str) -> Result<NodeConfig, StanzaError> {
        let (u, n) = (self.user.clone(), node.to_owned());
        match on_pool(self.im.storage, move |s| s.pep_node(&u, &n))
            .await
            .map_err(storage_error)?
        {
            Some(c) => Ok(NodeConfig::from_stored(&c)),
            None => Err(StanzaError::new(StanzaCondition::ItemNotFound)),
        }
    }
}

impl Pep {
    /// XEP-0060 §7.1: publish, creating the node if needed (§7.1.4) with the
    /// `publish-options` (§7.1.5).
    async fn publish(&self, a: &Ask<'_>, pubsub: &Element, el: &Element) -> super::IqOutcome {
        a.owner_only()?;
        let node = node_attr(el)?;
        let items: Vec<&Element> = el.children().filter(|c| c.is("item", NS)).collect();
        if items.len() > 1 {
            return Err(pubsub_error(StanzaCondition::BadRequest, "invalid-payload"));
        }
        let Some(item) = items.first() else {
            return Err(pubsub_error(StanzaCondition::BadRequest, "item-required"));
        };
        let payloads: Vec<&Element> = item.children().collect();
        let payload = match payloads.as_slice() {
            [p] => *p,
            [] => {
                return Err(pubsub_error(
                    StanzaCondition::BadRequest,
                    "payload-required",
                ));
            }
            _ => return Err(pubsub_error(StanzaCondition::BadRequest, "invalid-payload")),
        };
        let serialized = payload.to_xml_in("");
        if serialized.len() > self.cfg.max_item_bytes {
            return Err(pubsub_error(
                StanzaCondition::NotAcceptable,
                "payload-too-big",
            ));
        }
        let options = form_in(pubsub.get_child("publish-options", NS))?;
        if let Some(f) = &options {
            if f.form_type().is_some_and(|t| t != PUBLISH_OPTIONS) {
                return Err(StanzaError::new(StanzaCondition::BadRequest)
                    .with_text("publish-options must be a pubsub#publish-options form"));
            }
        }
        let limit = self.cfg.max_items_per_node;
        let precondition_failed = |e: ConfigError| {
            let text = match e {
                ConfigError::PreconditionNotMet(t) | ConfigError::Unsupported(t) => t,
            };
            pubsub_error(StanzaCondition::Conflict, "precondition-not-met").with_text(text)
        };
        let cfg = match self.existing(a, node).await? {
            Some(cfg) => {
                if let Some(f) = &options {
                    cfg.check(f, limit).map_err(precondition_failed)?;
                }
                cfg
            }
            None => {
                let mut cfg = NodeConfig::default();
                if let Some(f) = &options {
                    cfg.apply(f, limit).map_err(precondition_failed)?;
                }
                cfg
            }
        };
        let id = item
            .attr("id")
            .filter(|i| !i.is_empty())
            .map_or_else(item_id, str::to_owned);
        let stored = Item {
            id: id.clone(),
            payload: serialized,
        };
        let bounds = self.bounds(&a.im, &cfg);
        let (u, n, create) = (a.user.clone(), node.to_owned(), cfg.to_stored());
        let keep = cfg.persist_items.then(|| stored.clone());
        let outcome = on_pool(a.im.storage, move |s| {
            let publish = Publish {
                node: &n,
                create: &create,
                item: keep.as_ref(),
            };
            s.pep_publish(&u, &publish, &bounds)
        })
        .await
        .map_err(storage_error)?;
        match outcome {
            Ok(_) => {}
            Err(Refused::TooManyNodes) => {
                return Err(pubsub_error(
                    StanzaCondition::NotAllowed,
                    "max-nodes-exceeded",
                ));
            }
            Err(_) => {
                return Err(StanzaError::new(StanzaCondition::ResourceConstraint)
                    .with_text("the account's storage is full"));
            }
        }
        if cfg.deliver_notifications {
            let child = items_element(
                NS_EVENT,
                node,
                std::slice::from_ref(&stored),
                cfg.deliver_payloads,
            );
            self.notify(a.im, &a.owner, &a.user, node, &cfg, child)
                .await;
        }
        Ok(Some(
            Element::new("pubsub", NS).with_child(
                Element::new("publish", NS)
                    .with_attr("node", node)
                    .with_child(Element::new("item", NS).with_attr("id", id)),
            ),
        ))
    }

    async fn existing(&self, a: &Ask<'_>, node: &str) -> Result<Option<NodeConfig>, StanzaError> {
        match a.config(node).await {
            Ok(c) => Ok(Some(c)),
            Err(e) if e.condition == StanzaCondition::ItemNotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// §6.5: items by id, the newest `max_items`, or all (up to [`MAX_RESULT_BYTES`]).
    async fn items(&self, a: &Ask<'_>, el: &Element) -> super::IqOutcome {
        let node = node_attr(el)?;
        let cfg = a.config(node).await?;
        may_read(a.im, &a.user, &a.owner, node, &cfg, &a.who).await?;
        let max = match el.attr("max_items") {
            None => None,
            Some(m) => Some(
                m.parse::<u32>()
                    .map_err(|_| StanzaError::new(StanzaCondition::BadRequest))?,
            ),
        };
        let ids: Vec<String> = el
            .children()
            .filter(|c| c.is("item", NS))
            .filter_map(|c| c.attr("id").map(str::to_owned))
            .take(self.cfg.max_items_per_node as usize)
            .collect();
        let (u, n) = (a.user.clone(), node.to_owned());
        let mut items = on_pool(a.im.storage, move |s| s.pep_items(&u, &n, &ids, max))
            .await
            .map_err(storage_error)?;
        // The newest that fit.
        let mut total = 0;
        let mut keep = items.len();
        for (i, item) in items.iter().enumerate().rev() {
            total += item.payload.len();
            if total > MAX_RESULT_BYTES {
                break;
            }
            keep = i;
        }
        items.drain(..keep);
        Ok(Some(
            Element::new("pubsub", NS).with_child(items_element(NS, node, &items, true)),
        ))
    }

    /// §7.2: retract an item, notifying with `<retract/>` when the node or the request
    /// says so.
    async fn retract(&self, a: &Ask<'_>, el: &Element) -> super::IqOutcome {
        a.owner_only()?;
        let node = node_attr(el)?;
        let Some(id) = el
            .get_child("item", NS)
            .and_then(|i| i.attr("id"))
            .filter(|i| !i.is_empty())
        else {
            return Err(pubsub_error(StanzaCondition::BadRequest, "item-required"));
        };
        let cfg = a.config(node).await?;
        let (u, n, i) = (a.user.clone(), node.to_owned(), id.to_owned());
        let removed = on_pool(a.im.storage, move |s| s.pep_retract(&u, &n, &i))
            .await
            .map_err(storage_error)?;
        if !removed {
            return Err(StanzaError::new(StanzaCondition::ItemNotFound));
        }
        let asked = matches!(el.attr("notify"), Some("1" | "true"));
        if cfg.deliver_notifications && (cfg.notify_retract || asked) {
            let child = Element::new("items", NS_EVENT)
                .with_attr("node", node)
                .with_child(Element::new("retract", NS_EVENT).with_attr("id", id));
            self.notify(a.im, &a.owner, &a.user, node, &cfg, child)
                .await;
        }
        Ok(None)
    }

    /// §8.1: create a node, configured by the `<configure/>` beside it (§8.1.3).
    async fn create(&self, a: &Ask<'_>, pubsub: &Element, el: &Element) -> super::IqOutcome {
        a.owner_only()?;
        // §8.1.2 instant nodes: a PEP node is named by its namespace; none are made up.
        let node = match el.attr("node") {
            Some(n) if !n.is_empty() => n,
            _ => {
                return Err(pubsub_error(
                    StanzaCondition::NotAcceptable,
                    "nodeid-required",
                ));
            }
        };
        let mut cfg = NodeConfig::default();
        if let Some(f) = form_in(pubsub.get_child("configure", NS))? {
            cfg.apply(&f, self.cfg.max_items_per_node)
                .map_err(|_| StanzaError::new(StanzaCondition::NotAcceptable))?;
        }
        let bounds = self.bounds(&a.im, &cfg);
        let (u, n, c) = (a.user.clone(), node.to_owned(), cfg.to_stored());
        match on_pool(a.im.storage, move |s| s.pep_create(&u, &n, &c, &bounds))
            .await
            .map_err(storage_error)?
        {
            Ok(()) => Ok(None),
            Err(Refused::Exists) => Err(StanzaError::new(StanzaCondition::Conflict)),
            Err(Refused::TooManyNodes) => Err(pubsub_error(
                StanzaCondition::NotAllowed,
                "max-nodes-exceeded",
            )),
            Err(_) => Err(StanzaError::new(StanzaCondition::ResourceConstraint)),
        }
    }

    /// §6.1: an explicit subscription, for the asker's own JID; the last item follows
    /// (§6.1.7) unless the node says never.
    async fn subscribe(&self, a: &Ask<'_>, el: &Element) -> super::IqOutcome {
        let node = node_attr(el)?;
        let jid = el
            .attr("jid")
            .and_then(|j| Jid::parse(j).ok())
            .ok_or_else(|| pubsub_error(StanzaCondition::BadRequest, "jid-required"))?;
        if jid.bare() != a.who {
            return Err(pubsub_error(StanzaCondition::BadRequest, "invalid-jid"));
        }
        let cfg = a.config(node).await?;
        may_read(a.im, &a.user, &a.owner, node, &cfg, &a.who).await?;
        let bounds = self.bounds(&a.im, &cfg);
        let (u, n, j) = (a.user.clone(), node.to_owned(), jid.as_str().to_owned());
        let subid = match on_pool(a.im.storage, move |s| s.pep_subscribe(&u, &n, &j, &bounds))
            .await
            .map_err(storage_error)?
        {
            Ok(subid) => subid,
            Err(Refused::NoNode) => return Err(StanzaError::new(StanzaCondition::ItemNotFound)),
            Err(_) => return Err(StanzaError::new(StanzaCondition::ResourceConstraint)),
        };
        if cfg.send_last != node::SendLast::Never {
            self.send_last_item(a.im, &a.owner, &a.user, node, &cfg, jid.as_str())
                .await;
        }
        Ok(Some(
            Element::new("pubsub", NS).with_child(
                Element::new("subscription", NS)
                    .with_attr("node", node)
                    .with_attr("jid", jid.as_str())
                    .with_attr("subid", subid)
                    .with_attr("subscription", "subscribed"),
            ),
        ))
    }

    /// §6.2: unsubscribe (the asker's own JID).
    async fn unsubscribe(&self, a: &Ask<'_>, el: &Element) -> super::IqOutcome {
        let node = node_attr(el)?;
        let jid = el
            .attr("jid")
            .and_then(|j| Jid::parse(j).ok())
            .ok_or_else(|| pubsub_error(StanzaCondition::BadRequest, "jid-required"))?;
        if jid.bare() != a.who {
            return Err(pubsub_error(StanzaCondition::BadRequest, "invalid-jid"));
        }
        a.config(node).await?;
        let (u, n, j) = (a.user.clone(), node.to_owned(), jid.as_str().to_owned());
        let removed = on_pool(a.im.storage, move |s| s.pep_unsubscribe(&u, &n, &j))
            .await
            .map_err(storage_error)?;
        if removed {
            Ok(None)
        } else {
            Err(pubsub_error(
                StanzaCondition::UnexpectedRequest,
                "not-subscribed",
            ))
        }
    }

    /// §5.6: the asker's subscriptions (bare and full JIDs).
    async fn subscriptions(&self, a: &Ask<'_>, el: &Element) -> super::IqOutcome {
        let only = el.attr("node").map(str::to_owned);
        let (u, bare, full) = (
            a.user.clone(),
            a.who.as_str().to_owned(),
            a.from.as_str().to_owned(),
        );
        let mut subs = on_pool(a.im.storage, move |s| {
            let mut v: Vec<(String, String, String)> = s
                .pep_subscriptions_of(&u, &bare)?
                .into_iter()
                .map(|(n, id)| (n, bare.clone(), id))
                .collect();
            if full != bare {
                v.extend(
                    s.pep_subscriptions_of(&u, &full)?
                        .into_iter()
                        .map(|(n, id)| (n, full.clone(), id)),
                );
            }
            Ok(v)
        })
        .await
        .map_err(storage_error)?;
        if let Some(n) = &only {
            subs.retain(|(node, _, _)| node == n);
        }
        let mut list = Element::new("subscriptions", NS);
        if let Some(n) = &only {
            list.set_attr("node", n.as_str());
        }
        for (node, jid, subid) in subs {
            list.push_child(
                Element::new("subscription", NS)
                    .with_attr("node", node)
                    .with_attr("jid", jid)
                    .with_attr("subid", subid)
                    .with_attr("subscription", "subscribed"),
            );
        }
        Ok(Some(Element::new("pubsub", NS).with_child(list)))
    }

    /// §5.7: the asker's affiliations: `owner` of every node for the owner; nothing listed
    /// for others (what they were given is the owner's to tell).
    async fn affiliations(&self, a: &Ask<'_>, el: &Element) -> super::IqOutcome {
        let mut list = Element::new("affiliations", NS);
        if a.is_owner() {
            let u = a.user.clone();
            let nodes = on_pool(a.im.storage, move |s| s.pep_nodes(&u))
                .await
                .map_err(storage_error)?;
            let only = el.attr("node");
            for (node, _) in nodes {
                if only.is_none_or(|o| o == node) {
                    list.push_child(
                        Element::new("affiliation", NS)
                            .with_attr("node", node)
                            .with_attr("affiliation", "owner"),
                    );
                }
            }
        }
        Ok(Some(Element::new("pubsub", NS).with_child(list)))
    }

    /// The `pubsub#owner` requests (§8): configure, default, delete, purge,
    /// affiliations, subscriptions.
    async fn owner_request(&self, a: &Ask<'_>, ty: IqType, el: &Element) -> super::IqOutcome {
        a.owner_only()?;
        let limit = self.cfg.max_items_per_node;
        match (el.name(), ty) {
            ("default", IqType::Get) => Ok(Some(
                Element::new("pubsub", NS_OWNER).with_child(
                    Element::new("default", NS_OWNER)
                        .with_child(NodeConfig::default().to_form(limit).to_element()),
                ),
            )),
            ("configure", IqType::Get) => {
                let node = node_attr(el)?;
                let cfg = a.config(node).await?;
                Ok(Some(
                    Element::new("pubsub", NS_OWNER).with_child(
                        Element::new("configure", NS_OWNER)
                            .with_attr("node", node)
                            .with_child(cfg.to_form(limit).to_element()),
                    ),
                ))
            }
            ("configure", IqType::Set) => {
                let node = node_attr(el)?;
                let mut cfg = a.config(node).await?;
                let Some(form) = form_in(Some(el))? else {
                    return Err(StanzaError::new(StanzaCondition::BadRequest));
                };
                if form.kind == FormType::Cancel {
                    return Ok(None);
                }
                cfg.apply(&form, limit)
                    .map_err(|_| StanzaError::new(StanzaCondition::NotAcceptable))?;
                let keep = if cfg.persist_items {
                    cfg.max_items.effective(limit)
                } else {
                    0
                };
                let (u, n, c) = (a.user.clone(), node.to_owned(), cfg.to_stored());
                on_pool(a.im.storage, move |s| s.pep_configure(&u, &n, &c, keep))
                    .await
                    .map_err(storage_error)?;
                Ok(None)
            }
            ("delete", IqType::Set) => {
                let node = node_attr(el)?;
                let cfg = a.config(node).await?;
                let (u, n) = (a.user.clone(), node.to_owned());
                let deleted = on_pool(a.im.storage, move |s| s.pep_delete(&u, &n))
                    .await
                    .map_err(storage_error)?;
                let Some(subscribers) = deleted else {
                    return Err(StanzaError::new(StanzaCondition::ItemNotFound));
                };
                if cfg.notify_delete {
                    let child = Element::new("delete", NS_EVENT).with_attr("node", node);
                    self.notify_to(a.im, &a.owner, &a.user, node, &cfg, child, subscribers)
                        .await;
                }
                Ok(None)
            }
            ("purge", IqType::Set) => {
                let node = node_attr(el)?;
                let cfg = a.config(node).await?;
                let (u, n) = (a.user.clone(), node.to_owned());
                on_pool(a.im.storage, move |s| s.pep_purge(&u, &n))
                    .await
                    .map_err(storage_error)?;
                if cfg.deliver_notifications && cfg.notify_retract {
                    let child = Element::new("purge", NS_EVENT).with_attr("node", node);
                    self.notify(a.im, &a.owner, &a.user, node, &cfg, child)
                        .await;
                }
                Ok(None)
            }
            ("affiliations", IqType::Get) => {
                let node = node_attr(el)?;
                a.config(node).await?;
                let (u, n) = (a.user.clone(), node.to_owned());
                let list = on_pool(a.im.storage, move |s| s.pep_affiliations(&u, &n))
                    .await
                    .map_err(storage_error)?;
                let mut out = Element::new("affiliations", NS_OWNER).with_attr("node", node);
                out.push_child(
                    Element::new("affiliation", NS_OWNER)
                        .with_attr("jid", a.owner.as_str())
                        .with_attr("affiliation", "owner"),
                );
                for (jid, affiliation) in list {
                    out.push_child(
                        Element::new("affiliation", NS_OWNER)
                            .with_attr("jid", jid)
                            .with_attr("affiliation", affiliation),
                    );
                }
                Ok(Some(Element::new("pubsub", NS_OWNER).with_child(out)))
            }
            ("affiliations", IqType::Set) => {
                let node = node_attr(el)?;
                let cfg = a.config(node).await?;
                let mut changes = Vec::new();
                for c in el.children().filter(|c| c.is("affiliation", NS_OWNER)) {
                    let jid = c
                        .attr("jid")
                        .and_then(|j| Jid::parse(j).ok())
                        .ok_or_else(|| StanzaError::new(StanzaCondition::JidMalformed))?
                        .bare();
                    let affiliation = c.attr("affiliation").unwrap_or_default();
                    if !matches!(affiliation, "member" | "publisher" | "outcast" | "none")
                        || jid == a.owner
                    {
                        return Err(StanzaError::new(StanzaCondition::NotAcceptable));
                    }
                    changes.push((jid.as_str().to_owned(), affiliation.to_owned()));
                }
                if changes.len() > 256 {
                    return Err(StanzaError::new(StanzaCondition::PolicyViolation)
                        .with_text("at most 256 affiliations at once"));
                }
                let bounds = self.bounds(&a.im, &cfg);
                let (u, n) = (a.user.clone(), node.to_owned());
                match on_pool(a.im.storage, move |s| {
                    s.pep_set_affiliations(&u, &n, &changes, &bounds)
                })
                .await
                .map_err(storage_error)?
                {
                    Ok(()) => Ok(None),
                    Err(_) => Err(StanzaError::new(StanzaCondition::ResourceConstraint)),
                }
            }
            ("subscriptions", IqType::Get) => {
                let node = node_attr(el)?;
                a.config(node).await?;
                let (u, n) = (a.user.clone(), node.to_owned());
                let list = on_pool(a.im.storage, move |s| s.pep_subscribers(&u, &n))
                    .await
                    .map_err(storage_error)?;
                let mut out = Element::new("subscriptions", NS_OWNER).with_attr("node", node);
                for jid in list {
                    out.push_child(
                        Element::new("subscription", NS_OWNER)
                            .with_attr("jid", jid)
                            .with_attr("subscription", "subscribed"),
                    );
                }
                Ok(Some(Element::new("pubsub", NS_OWNER).with_child(out)))
            }
            ("subscriptions", IqType::Set) => {
                let node = node_attr(el)?;
                a.config(node).await?;
                for c in el.children().filter(|c| c.is("subscription", NS_OWNER)) {
                    // §8.8.2: the owner may end subscriptions; making them for others
                    // would send them notifications they did not ask for.
                    if c.attr("subscription") != Some("none") {
                        return Err(StanzaError::new(StanzaCondition::NotAcceptable));
                    }
                    let jid = c
                        .attr("jid")
                        .ok_or_else(|| StanzaError::new(StanzaCondition::BadRequest))?
                        .to_owned();
                    let (u, n) = (a.user.clone(), node.to_owned());
                    on_pool(a.im.storage, move |s| s.pep_unsubscribe(&u, &n, &jid))
                        .await
                        .map_err(storage_error)?;
                }
                Ok(None)
            }
            _ => Err(StanzaError::new(StanzaCondition::FeatureNotImplemented)),
        }
    }

    /// Sends a notification for `node` to everyone who should get it (XEP-0163 §4.3):
    /// explicit subscribers and the clients whose caps ask for it, if the access model
    /// lets them read it.
    async fn notify(
        &self,
        im: Im<'_>,
        owner: &BareJid,
        user: &str,
        node: &str,
        cfg: &NodeConfig,
        child: Element,
    ) {
        let (u, n) = (user.to_owned(), node.to_owned());
        let subscribers = match on_pool(im.storage, move |s| s.pep_subscribers(&u, &n)).await {
            Ok(s) => s,
            Err(e) => {
                log::error!("storage: {e}");
                Vec::new()
            }
        };
        self.notify_to(im, owner, user, node, cfg, child, subscribers)
            .await;
    }

    /// [`Pep::notify`] with the explicit subscribers given (a deleted node's).
    #[allow(clippy::too_many_arguments)]
    async fn notify_to(
        &self,
        im: Im<'_>,
        owner: &BareJid,
        user: &str,
        node: &str,
        cfg: &NodeConfig,
        child: Element,
        subscribers: Vec<String>,
    ) {
        let interested = self.interest().interested(user, node);
        // Explicit subscriptions first; a full JID of someone subscribed by bare JID is
        // reached through the bare one.
        let mut targets: Vec<Jid> = Vec::new();
        for j in subscribers.iter().chain(interested.iter()) {
            let Ok(jid) = Jid::parse(j) else { continue };
            let covered = targets
                .iter()
                .any(|t| *t == jid || (t.is_bare() && t.bare() == jid.bare()));
            if !covered {
                targets.push(jid);
            }
        }
        if targets.is_empty() {
            return;
        }
        let readers = match Readers::of(im, user, node, cfg).await {
            Ok(r) => r,
            Err(e) => return log::error!("storage: {e}; notifications for {node} not sent"),
        };
        let mut allowed: HashMap<BareJid, bool> = HashMap::new();
        for to in targets {
            let bare = to.bare();
            let ok = match allowed.get(&bare) {
                Some(ok) => *ok,
                None => {
                    let ok = readers.allow(im, user, owner, &bare).await;
                    allowed.insert(bare, ok);
                    ok
                }
            };
            if ok {
                let msg = event_message(owner.as_str(), to.as_str(), cfg, child.clone());
                im.send_as_server(to, msg);
            }
        }
    }

    /// The newest item of `node` to `to` (§6.1.7, XEP-0163 §4.3.3), if any.
    async fn send_last_item(
        &self,
        im: Im<'_>,
        owner: &BareJid,
        user: &str,
        node: &str,
        cfg: &NodeConfig,
        to: &str,
    ) {
        let Ok(to_jid) = Jid::parse(to) else { return };
        let (u, n) = (user.to_owned(), node.to_owned());
        let items = match on_pool(im.storage, move |s| s.pep_items(&u, &n, &[], Some(1))).await {
            Ok(items) => items,
            Err(e) => {
                log::error!("storage: {e}");
                return;
            }
        };
        if items.is_empty() {
            return;
        }
        let child = items_element(NS_EVENT, node, &items, cfg.deliver_payloads);
        let mut msg = event_message(owner.as_str(), to, cfg, child);
        msg.push_child(crate::features::presence::delay(
            owner.as_str(),
            crate::storage::unix_now(),
        ));
        im.send_as_server(to_jid, msg);
    }

    /// What [`Interest`] decided for a presence from `jid` reaching `user`'s account.
    async fn act(&self, cx: &HookCx<'_>, user: &str, jid: &str, next: Next) {
        match next {
            Next::Nothing => {}
            Next::SendLast(wants) => self.send_last_items(cx.im, user, jid, &wants).await,
            Next::Ask { id, node_ver } => {
                let Ok(to) = Jid::parse(jid) else { return };
                let iq = Element::new("iq", ns::CLIENT)
                    .with_attr("type", "get")
                    .with_attr("id", id)
                    .with_attr("from", cx.im.router.domain())
                    .with_attr("to", jid)
                    .with_child(Element::new("query", ns::DISCO_INFO).with_attr("node", node_ver));
                cx.im.send_as_server(to, iq);
            }
        }
    }

    /// XEP-0163 §4.3.3: a client that came online (and wants `wants`) gets the last item
    /// of each of `user`'s nodes it wants and may read.
    async fn send_last_items(&self, im: Im<'_>, user: &str, to: &str, wants: &[String]) {
        if wants.is_empty() {
            return;
        }
        let Ok(owner) = BareJid::new(Some(user), im.router.domain()) else {
            return;
        };
        let Ok(to_jid) = Jid::parse(to) else { return };
        let u = user.to_owned();
        let nodes = match on_pool(im.storage, move |s| s.pep_nodes(&u)).await {
            Ok(n) => n,
            Err(e) => {
                log::error!("storage: {e}");
                return;
            }
        };
        for (node, stored) in nodes {
            if !wants.contains(&node) {
                continue;
            }
            let cfg = NodeConfig::from_stored(&stored);
            if cfg.send_last != node::SendLast::OnSubAndPresence || !cfg.persist_items {
                continue;
            }
            if may_read(im, user, &owner, &node, &cfg, &to_jid.bare())
                .await
                .is_err()
            {
                continue;
            }
            self.send_last_item(im, &owner, user, &node, &cfg, to).await;
        }
    }
}

/// XEP-0060 §10 features, announced on accounts (XEP-0163 §9).
static ANNOUNCE: &[Announce] = &[
    Announce {
        var: NS,
        on: On::Account,
    },
    Announce {
        var: "http://jabber.org/protocol/pubsub#access-open",
        on: On::Account,
    },
    Announce {
        var: "http://jabber.org/protocol/pubsub#access-presence",
        on: On::Account,
    },
    Announce {
        var: "http://jabber.org/protocol/pubsub#access-whitelist",
        on: On::Account,
    },
    Announce {
        var: "http://jabber.org/protocol/pubsub#auto-create",
        on: On::Account,
    },
    Announce {
        var: "http://jabber.org/protocol/pubsub#auto-subscribe",
        on: On::Account,
    },
    Announce {
        var: "http://jabber.org/protocol/pubsub#config-node",
        on: On::Account,
    },
    Announce {
        var: "http://jabber.org/protocol/pubsub#config-node-max",
        on: On::Account,
    },
    Announce {
        var: "http://jabber.org/protocol/pubsub#create-and-configure",
        on: On::Account,
    },
    Announce {
        var: "http://jabber.org/protocol/pubsub#create-nodes",
        on: On::Account,
    },
    Announce {
        var: "http://jabber.org/protocol/pubsub#delete-items",
        on: On::Account,
    },
    Announce {
        var: "http://jabber.org/protocol/pubsub#delete-nodes",
        on: On::Account,
    },
    Announce {
        var: "http://jabber.org/protocol/pubsub#filtered-notifications",
        on: On::Account,
    },
    Announce {
        var: "http://jabber.org/protocol/pubsub#item-ids",
        on: On::Account,
    },
    Announce {
        var: "http://jabber.org/protocol/pubsub#last-published",
        on: On::Account,
    },
    Announce {
        var: "http://jabber.org/protocol/pubsub#modify-affiliations",
        on: On::Account,
    },
    Announce {
        var: "http://jabber.org/protocol/pubsub#persistent-items",
        on: On::Account,
    },
    Announce {
        var: "http://jabber.org/protocol/pubsub#presence-notifications",
        on: On::Account,
    },
    Announce {
        var: "http://jabber.org/protocol/pubsub#publish",
        on: On::Account,
    },
    Announce {
        var: "http://jabber.org/protocol/pubsub#publish-options",
        on: On::Account,
    },
    Announce {
        var: "http://jabber.org/protocol/pubsub#purge-nodes",
        on: On::Account,
    },
    Announce {
        var: "http://jabber.org/protocol/pubsub#retract-items",
        on: On::Account,
    },
    Announce {
        var: "http://jabber.org/protocol/pubsub#retrieve-affiliations",
        on: On::Account,
    },
    Announce {
        var: "http://jabber.org/protocol/pubsub#retrieve-items",
        on: On::Account,
    },
    Announce {
        var: "http://jabber.org/protocol/pubsub#subscribe",
        on: On::Account,
    },
    Announce {
        var: "http://jabber.org/protocol/pubsub#retrieve-subscriptions",
        on: On::Account,
    },
];

impl Module for Pep {
    fn name(&self) -> &'static str {
        "pep"
    }

    fn specs(&self) -> &'static [Spec] {
        &[
            Spec {
                doc: Doc::Xep(163),
                title: "Personal Eventing Protocol",
                version: "1.2.2",
                status: Status::Complete,
                note: "notifications by +notify (caps hashes verified and cached) and by \
                       subscription; last items on presence",
            },
            Spec {
                doc: Doc::Xep(60),
                title: "Publish-Subscribe",
                version: "1.26.0",
                status: Status::Partial,
                note: "the subset PEP needs, on accounts: publish with publish-options, \
                       items, retract, create, configure, default, delete, purge, \
                       subscribe, affiliations; access open, presence, whitelist; no \
                       pubsub service of its own, no collections, no subscription options",
            },
            Spec {
                doc: Doc::Xep(223),
                title: "Persistent Storage of Private Data via PubSub",
                version: "1.1.1",
                status: Status::Complete,
                note: "whitelist nodes with persistent items",
            },
        ]
    }

    fn disco(&self) -> &'static [Announce] {
        ANNOUNCE
    }

    fn identities(&self) -> &'static [(On, Identity)] {
        &[(
            On::Account,
            Identity {
                category: "pubsub",
                ty: "pep",
                name: "",
            },
        )]
    }

    fn iqs(&self) -> &'static [IqRoute] {
        &[
            IqRoute {
                ns: NS,
                on: On::Account,
                access: Access::Module,
            },
            IqRoute {
                ns: NS_OWNER,
                on: On::Account,
                access: Access::Own,
            },
        ]
    }

    fn hooks(&self) -> &'static [Hook] {
        &[Hook::PresenceIn, Hook::IqResponse, Hook::AccountRemoved]
    }

    fn handle_iq<'a>(&'a self, cx: &'a IqCx<'a>, iq: &'a Stanza) -> IqFuture<'a> {
        Box::pin(async move {
            let Target::Account(owner) = cx.target else {
                return Err(StanzaError::new(StanzaCondition::ServiceUnavailable));
            };
            let Some(user) = cx.im.local_user(owner).map(str::to_owned) else {
                return Err(StanzaError::new(StanzaCondition::ServiceUnavailable));
            };
            let (Some(payload), Some(ty)) = (iq.iq_payload(), iq.iq_type()) else {
                return Err(StanzaError::new(StanzaCondition::BadRequest));
            };
            if cx.from.is_local() && !cx.im.exists(owner).await {
                return Err(StanzaError::new(StanzaCondition::ItemNotFound));
            }
            let a = Ask {
                im: cx.im,
                from: cx.from,
                owner: owner.clone(),
                user,
                who: cx.from.bare(),
            };
            // The request is the payload's first element (XEP-0060 §7.1: `publish` may
            // come with `publish-options`, `create` with `configure`).
            let Some(el) = payload.children().next() else {
                return Err(StanzaError::new(StanzaCondition::BadRequest));
            };
            if payload.ns() == NS_OWNER {
                return self.owner_request(&a, ty, el).await;
            }
            if el.ns() != NS {
                return Err(StanzaError::new(StanzaCondition::BadRequest));
            }
            match (el.name(), ty) {
                ("publish", IqType::Set) => self.publish(&a, payload, el).await,
                ("items", IqType::Get) => self.items(&a, el).await,
                ("retract", IqType::Set) => self.retract(&a, el).await,
                ("create", IqType::Set) => self.create(&a, payload, el).await,
                ("subscribe", IqType::Set) => self.subscribe(&a, el).await,
                ("unsubscribe", IqType::Set) => self.unsubscribe(&a, el).await,
                ("subscriptions", IqType::Get) => self.subscriptions(&a, el).await,
                ("affiliations", IqType::Get) => self.affiliations(&a, el).await,
                ("options", _) => Err(pubsub_error(
                    StanzaCondition::FeatureNotImplemented,
                    "subscription-options",
                )),
                ("publish" | "retract" | "create" | "subscribe" | "unsubscribe", _)
                | ("items" | "subscriptions" | "affiliations", _) => {
                    Err(StanzaError::new(StanzaCondition::BadRequest))
                }
                _ => Err(StanzaError::new(StanzaCondition::FeatureNotImplemented)),
            }
        })
    }

    fn disco_items<'a>(&'a self, cx: &'a IqCx<'a>) -> HookFuture<'a, Vec<Element>> {
        Box::pin(async move {
            let Target::Account(owner) = cx.target else {
                return Vec::new();
            };
            let Some(user) = cx.im.local_user(owner).map(str::to_owned) else {
                return Vec::new();
            };
            let u = user.clone();
            let nodes = match on_pool(cx.im.storage, move |s| s.pep_nodes(&u)).await {
                Ok(n) => n,
                Err(e) => {
                    log::error!("storage: {e}");
                    return Vec::new();
                }
            };
            let who = cx.from.bare();
            let mut items = Vec::new();
            for (node, stored) in nodes {
                let cfg = NodeConfig::from_stored(&stored);
                // XEP-0060 §5.2: only the nodes the asker may see.
                if may_read(cx.im, &user, owner, &node, &cfg, &who)
                    .await
                    .is_ok()
                {
                    items.push(
                        Element::new("item", ns::DISCO_ITEMS)
                            .with_attr("jid", owner.as_str())
                            .with_attr("node", node),
                    );
                }
            }
            items
        })
    }

    fn presence_in<'a>(
        &'a self,
        cx: &'a HookCx<'a>,
        owners: &'a [BareJid],
        presence: &'a Element,
    ) -> HookFuture<'a, ()> {
        Box::pin(async move {
            let jid = cx.from.as_str();
            if !jid.contains('/') {
                return;
            }
            let caps = CapsRef::of(presence);
            // Decided for every owner under one lock; acted on after it.
            let nexts: Vec<(&str, Next)> = {
                let mut interest = self.interest();
                owners
                    .iter()
                    .filter_map(|o| cx.im.local_user(o))
                    .map(|user| {
                        let next = match presence.attr("type") {
                            None => interest.available(user, jid, caps.clone()),
                            Some("unavailable") => {
                                interest.unavailable(user, jid);
                                Next::Nothing
                            }
                            Some(_) => Next::Nothing,
                        };
                        (user, next)
                    })
                    .collect()
            };
            for (user, next) in nexts {
                self.act(cx, user, jid, next).await;
            }
        })
    }

    fn iq_response<'a>(&'a self, cx: &'a HookCx<'a>, stanza: &'a Stanza) -> HookFuture<'a, bool> {
        Box::pin(async move {
            let Some(id) = stanza.el.attr("id") else {
                return false;
            };
            if !self.interest().is_query(id) {
                return false;
            }
            let answer = match stanza.iq_type() {
                Some(IqType::Result) => stanza
                    .iq_payload()
                    .filter(|p| p.is("query", ns::DISCO_INFO)),
                _ => None,
            };
            let woken = self.interest().answered(id, cx.from.as_str(), answer);
            for (owner, jid, wants) in woken {
                self.send_last_items(cx.im, &owner, &jid, &wants).await;
            }
            true
        })
    }

    fn account_removed<'a>(
        &'a self,
        _cx: &'a HookCx<'a>,
        account: &'a BareJid,
    ) -> HookFuture<'a, ()> {
        Box::pin(async move {
            if let Some(user) = account.local() {
                self.interest().forget_account(user, account.as_str());
            }
        })
    }
}

#[cfg(test)]
mod tests;
