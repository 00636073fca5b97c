//! XEP-0313: Message Archive Management for users, with XEP-0059 paging and XEP-0359
//! stanza ids.
//!
//! Every chat message (and normal message with a body) an account sends or receives is
//! archived for it ([`Hook::MessageOut`] for the sender, [`Hook::MessageIn`] for the
//! recipient), unless its preferences (§6) or the sender's XEP-0334 hints say not. The
//! recipient's copy gets a `<stanza-id by='user@domain' id=…/>` (XEP-0359 §3) before it is
//! delivered or stored offline, so every client of the account, and the offline store,
//! know its archive id; a `<stanza-id/>` the sender put there claiming to be the
//! recipient's is removed first (XEP-0359 §3.3). Groupchat messages are a room's to
//! archive, errors and headlines nobody's (§5.1.1).
//!
//! Queries (§4) page with XEP-0059: a page is at most [`query::MAX_PAGE`] messages and
//! [`query::MAX_PAGE_BYTES`], each result written to the client ahead of the iq result
//! that ends the query (§4.2, `IqCx::send_ahead`).
//!
//! The archive lives in the account's byte quota (`limits.max_stored_bytes_per_account`),
//! in SQLite beside everything else. When it would pass 7/8 of the quota the oldest
//! archived messages are dropped: a phone's history losing its oldest lines is what users
//! of every chat app expect, where refusing new messages would silently stop the archive
//! (or, worse, offline storage). The last eighth stays free for the roster and offline
//! messages; an archived message an offline message still points at is never dropped.
//! Rows older than `[archive] retention_days` are expired by [`expire`], a task that
//! wakes once an hour.

pub(crate) mod query;
mod store;

pub use query::{MAX_PAGE, MAX_PAGE_BYTES, NS_RSM, parse_datetime};
pub use store::{ArchiveStore, Filter, Page, QueryError, Row};

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::forms::{Field, Form, FormType};
use super::hints::{self, Hint};
use super::{
    Access, Announce, Doc, Hook, HookCx, HookFuture, IqCx, IqFuture, IqRoute, Module, On, Spec,
    Status,
};
use crate::jid::BareJid;
use crate::ns;
use crate::router::im::{Im, on_pool};
use crate::stanza::{IqType, MessageType, Stanza, StanzaCondition, StanzaError};
use crate::storage::StorageError;
use crate::xml::{Element, escape_attr};

/// XEP-0313's namespace (version 2).
pub const NS: &str = "urn:xmpp:mam:2";
/// §7.1: the extended query fields (`before-id`, `after-id`) are understood.
pub const NS_EXTENDED: &str = "urn:xmpp:mam:2#extended";
/// XEP-0359's namespace.
pub const NS_SID: &str = "urn:xmpp:sid:0";
/// XEP-0297's namespace, around each result.
pub const NS_FORWARD: &str = "urn:xmpp:forward:0";

/// Whose messages an account archives (XEP-0313 §6.1 `default`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Everyone's.
    Always,
    /// Nobody's, except the `always` list.
    Never,
    /// Those in the account's roster.
    Roster,
}

impl Policy {
    pub fn parse(s: &str) -> Option<Policy> {
        Some(match s {
            "always" => Policy::Always,
            "never" => Policy::Never,
            "roster" => Policy::Roster,
            _ => return None,
        })
    }
}

/// An account's archiving preferences (§6.1): bare JIDs, `never` winning over `always`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prefs {
    pub default: Policy,
    pub always: Vec<String>,
    pub never: Vec<String>,
}

/// `[archive]`: whether accounts' messages are archived, whose by default, and how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArchiveConfig {
    pub enabled: bool,
    /// The policy of an account that has set no preferences.
    pub default_policy: Policy,
    /// Days an archived message is kept; 0 keeps them until the quota makes room.
    pub retention_days: u32,
}

impl Default for ArchiveConfig {
    /// On, everyone's messages (as Prosody's `default_archive_policy = true`), a year.
    fn default() -> ArchiveConfig {
        ArchiveConfig {
            enabled: true,
            default_policy: Policy::Always,
            retention_days: 365,
        }
    }
}

/// The archive module.
pub struct Mam {
    cfg: ArchiveConfig,
    state: Mutex<State>,
}

/// What the module keeps in memory so that archiving a message needs no disk sync and,
/// usually, no storage read: the message's id is known at once, its row written later
/// (`Storage::write_deferred`).
#[derive(Default)]
struct State {
    /// The last archive id handed out; read from storage at the first message. This
    /// server is the only writer of archive rows.
    last_id: Option<i64>,
    /// Each account's stored preferences (`None`: the server's default), read at its first
    /// message and kept up to date by the preferences iq; only existing accounts.
    prefs: HashMap<String, Option<Prefs>>,
}

impl Mam {
    pub fn new(cfg: &ArchiveConfig) -> Mam {
        Mam {
            cfg: *cfg,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether a message is archived at all (§5.1.1, XEP-0334 §4): chat and normal messages
/// with a body, or any with a `<store/>` hint, unless hinted not to be kept.
pub fn is_archived(stanza: &Stanza) -> bool {
    let el = &stanza.el;
    let kept_type = matches!(
        stanza.message_type(),
        MessageType::Chat | MessageType::Normal
    );
    kept_type
        && hints::may_archive(el)
        && (el.has_child("body", ns::CLIENT) || hints::has(el, Hint::Store))
}

/// XEP-0359 §3.3: `<stanza-id/>`s that claim to be `by` this account or this server,
/// which only this server may write, are removed from what someone else sent.
pub fn strip_stanza_ids(el: &mut Element, account: &str, domain: &str) {
    let ours = |c: &Element| matches!(c.attr("by"), Some(b) if b == account || b == domain);
    let forged = el
        .children()
        .filter(|c| c.is("stanza-id", NS_SID))
        .any(ours);
    if forged {
        // Remove them all, then put back those by others (another server's ids are theirs).
        let keep: Vec<Element> = el
            .children()
            .filter(|c| c.is("stanza-id", NS_SID) && !ours(c))
            .cloned()
            .collect();
        el.remove_children("stanza-id", NS_SID);
        for k in keep {
            el.push_child(k);
        }
    }
}

/// The `<stanza-id/>` of archive row `id` in `by`'s archive (XEP-0359 §3).
pub fn stanza_id(by: &str, id: i64) -> Element {
    Element::new("stanza-id", NS_SID)
        .with_attr("by", by)
        .with_attr("id", id.to_string())
}

/// The archive id `by`'s server stamped on `el`, if any: what an offline row points at.
pub fn archived_id(el: &Element, by: &str) -> Option<i64> {
    el.children()
        .filter(|c| c.is("stanza-id", NS_SID))
        .find(|c| c.attr("by") == Some(by))
        .and_then(|c| c.attr("id"))
        .and_then(|id| id.parse().ok())
}

/// One result (§4.2) as written to the client: `row` of `owner`'s archive, for the query
/// `queryid`, to the session `to`.
pub fn result_xml(out: &mut String, to: &str, owner: &str, queryid: Option<&str>, row: &Row) {
    out.push_str("<message to=\"");
    escape_attr(to, out);
    out.push_str("\" from=\"");
    escape_attr(owner, out);
    out.push_str("\"><result xmlns=\"");
    out.push_str(NS);
    out.push('"');
    if let Some(q) = queryid {
        out.push_str(" queryid=\"");
        escape_attr(q, out);
        out.push('"');
    }
    out.push_str(&format!(
        " id=\"{}\"><forwarded xmlns=\"{NS_FORWARD}\">",
        row.id
    ));
    let stamp = crate::features::time::xep0082_utc(u64::try_from(row.at).unwrap_or(0));
    out.push_str(&format!(
        "<delay xmlns=\"{}\" stamp=\"{stamp}\"/>",
        ns::DELAY
    ));
    // Stored standalone: it declares jabber:client itself inside <forwarded/>.
    out.push_str(&row.stanza);
    out.push_str("</forwarded></result></message>");
}

/// `<fin/>` ending a query (§4.3), with the page's XEP-0059 `<set/>`.
pub fn fin(page: &Page) -> Element {
    let mut set = Element::new("set", NS_RSM);
    if let (Some(first), Some(last)) = (page.rows.first(), page.rows.last()) {
        set.push_child(Element::new("first", NS_RSM).with_text(first.id.to_string()));
        set.push_child(Element::new("last", NS_RSM).with_text(last.id.to_string()));
    }
    let mut fin = Element::new("fin", NS).with_child(set);
    if page.complete {
        fin.set_attr("complete", "true");
    }
    fin
}

/// The query form (§4.1.5): the fields a query may carry.
fn query_form() -> Element {
    let mut form = Form::new(FormType::Form, NS);
    for (var, kind) in [
        ("with", "jid-single"),
        ("start", "text-single"),
        ("end", "text-single"),
        ("after-id", "text-single"),
        ("before-id", "text-single"),
    ] {
        form = form.field(Field::new(var, kind));
    }
    Element::new("query", NS).with_child(form.to_element())
}

fn internal(e: impl std::fmt::Display) -> StanzaError {
    log::error!("storage: {e}");
    StanzaError::new(StanzaCondition::InternalServerError)
}

impl Mam {
    /// Archives `stanza` for local account `owner`, the other party being `with`, if the
    /// account exists and its preferences keep messages with `with` (§6.1): its archive id.
    /// The row is written after the message goes on (`Storage::write_deferred`, committed
    /// within milliseconds and always before a later write such as an offline reference),
    /// so a chat message waits for no disk sync.
    async fn archive(
        &self,
        im: Im<'_>,
        owner: &BareJid,
        with: &BareJid,
        el: &Element,
    ) -> Option<i64> {
        let log_err = |e: StorageError| log::error!("c2s{}: storage: archive: {e}", im.conn);
        let user = im.local_user(owner)?.to_owned();
        let with = with.as_str().to_owned();
        let cached = self.state().prefs.get(&user).cloned();
        let prefs = match cached {
            Some(p) => p,
            None => {
                let u = user.clone();
                // No account: nothing archived (and nothing cached: it may be created).
                let p = on_pool(im.storage, move |s| s.archive_settings(&u))
                    .await
                    .map_err(log_err)
                    .ok()??;
                self.state().prefs.insert(user.clone(), p.clone());
                p
            }
        };
        let policy = match &prefs {
            None => self.cfg.default_policy,
            Some(p) if p.never.contains(&with) => return None,
            Some(p) if p.always.contains(&with) => Policy::Always,
            Some(p) => p.default,
        };
        match policy {
            Policy::Always => {}
            Policy::Never => return None,
            Policy::Roster => {
                let (u, w) = (user.clone(), with.clone());
                if !on_pool(im.storage, move |s| s.in_roster(&u, &w))
                    .await
                    .map_err(log_err)
                    .ok()?
                {
                    return None;
                }
            }
        }
        if self.state().last_id.is_none() {
            let max = on_pool(im.storage, |s| s.max_archive_id())
                .await
                .map_err(log_err)
                .ok()?;
            self.state().last_id.get_or_insert(max);
        }
        let id = {
            let mut st = self.state();
            let id = st.last_id.unwrap_or(0) + 1;
            st.last_id = Some(id);
            id
        };
        let quota = *im.router.quota();
        if !im
            .storage
            .archive_deferred(id, &user, &with, el.to_xml_in(""), &quota)
        {
            // No task commits deferred writes (a server without one, unit tests): now.
            let flushed = on_pool(im.storage, |s| {
                s.flush_deferred();
                Ok(())
            });
            flushed.await.map_err(log_err).ok()?;
        }
        Some(id)
    }

    async fn query(
        &self,
        cx: &IqCx<'_>,
        owner: &BareJid,
        q: &Element,
    ) -> Result<Element, StanzaError> {
        let query = query::parse_query(q)?;
        let user = cx
            .im
            .local_user(owner)
            .ok_or_else(|| StanzaError::new(StanzaCondition::ItemNotFound))?
            .to_owned();
        let filter = query.filter.clone();
        // Rows still waiting to be written first: every message delivered before the
        // query is in its answer.
        let page = on_pool(cx.im.storage, move |s| {
            s.flush_deferred();
            Ok(s.archive_query(&user, &filter))
        })
        .await
        .map_err(internal)?
        .map_err(|e| match e {
            QueryError::UnknownId => StanzaError::new(StanzaCondition::ItemNotFound)
                .with_text("no such message in the archive"),
            QueryError::Storage(e) => internal(e),
        })?;
        let to = cx.from.as_str();
        let mut ahead = String::new();
        for row in &page.rows {
            result_xml(
                &mut ahead,
                to,
                owner.as_str(),
                query.queryid.as_deref(),
                row,
            );
        }
        cx.send_ahead(&ahead);
        Ok(fin(&page))
    }

    async fn prefs(
        &self,
        cx: &IqCx<'_>,
        owner: &BareJid,
        set: Option<&Element>,
    ) -> Result<Element, StanzaError> {
        let user = cx
            .im
            .local_user(owner)
            .ok_or_else(|| StanzaError::new(StanzaCondition::ItemNotFound))?
            .to_owned();
        let prefs = match set {
            Some(el) => {
                let prefs = query::parse_prefs(el)?;
                let (u, p) = (user.clone(), prefs.clone());
                on_pool(cx.im.storage, move |s| s.set_archive_prefs(&u, &p))
                    .await
                    .map_err(internal)?;
                self.state().prefs.insert(user, Some(prefs.clone()));
                prefs
            }
            None => on_pool(cx.im.storage, move |s| s.archive_prefs(&user))
                .await
                .map_err(internal)?
                .unwrap_or(Prefs {
                    default: self.cfg.default_policy,
                    always: Vec::new(),
                    never: Vec::new(),
                }),
        };
        Ok(query::prefs_element(&prefs))
    }
}

impl Module for Mam {
    fn name(&self) -> &'static str {
        "mam"
    }

    fn specs(&self) -> &'static [Spec] {
        &[
            Spec {
                doc: Doc::Xep(313),
                title: "Message Archive Management",
                version: "1.1.1",
                status: Status::Partial,
                note: "users' archives (urn:xmpp:mam:2 and #extended's before-id/after-id) \
                       with preferences, retention and a byte quota; no MUC archives, no \
                       `ids` field, no metadata query, `with` a full JID matches its bare JID",
            },
            Spec {
                doc: Doc::Xep(59),
                title: "Result Set Management",
                version: "1.0",
                status: Status::Partial,
                note: "archive queries: max, after, before; no index, no count",
            },
            Spec {
                doc: Doc::Xep(359),
                title: "Unique and Stable Stanza IDs",
                version: "0.7.0",
                status: Status::Complete,
                note: "<stanza-id/> on archived messages; forged ones removed",
            },
        ]
    }

    fn disco(&self) -> &'static [Announce] {
        if !self.cfg.enabled {
            return &[];
        }
        &[
            Announce {
                var: NS,
                on: On::Account,
            },
            Announce {
                var: NS_EXTENDED,
                on: On::Account,
            },
            Announce {
                var: NS_SID,
                on: On::Account,
            },
        ]
    }

    fn iqs(&self) -> &'static [IqRoute] {
        if !self.cfg.enabled {
            return &[];
        }
        &[IqRoute {
            ns: NS,
            on: On::Account,
            access: Access::Own,
        }]
    }

    fn hooks(&self) -> &'static [Hook] {
        &[Hook::MessageOut, Hook::MessageIn, Hook::AccountRemoved]
    }

    /// The account's cached preferences go with it (its rows go by cascade).
    fn account_removed<'a>(
        &'a self,
        cx: &'a HookCx<'a>,
        account: &'a BareJid,
    ) -> HookFuture<'a, ()> {
        if let Some(user) = cx.im.local_user(account) {
            self.state().prefs.remove(user);
        }
        Box::pin(std::future::ready(()))
    }

    /// §5.1.1: what a local user sends is archived for them, unless it is to their own
    /// account (then [`Module::message_in`] archives it, once).
    fn message_out<'a>(&'a self, cx: &'a HookCx<'a>, stanza: &'a mut Stanza) -> HookFuture<'a, ()> {
        Box::pin(async move {
            let Some(session) = cx.from.session() else {
                return;
            };
            if !self.cfg.enabled || !is_archived(stanza) {
                return;
            }
            let owner = session.bare();
            let with = stanza
                .to
                .as_ref()
                .map_or_else(|| owner.clone(), |t| t.bare());
            if with == owner {
                return;
            }
            self.archive(cx.im, &owner, &with, &stanza.el).await;
        })
    }

    /// §5.1.1, XEP-0359 §3: what a local account receives is archived for it and stamped.
    fn message_in<'a>(
        &'a self,
        cx: &'a HookCx<'a>,
        to: &'a BareJid,
        stanza: &'a mut Stanza,
    ) -> HookFuture<'a, ()> {
        Box::pin(async move {
            strip_stanza_ids(&mut stanza.el, to.as_str(), cx.im.router.domain());
            if !self.cfg.enabled || !is_archived(stanza) {
                return;
            }
            let with = cx.from.bare();
            if let Some(id) = self.archive(cx.im, to, &with, &stanza.el).await {
                stanza.el.push_child(stanza_id(to.as_str(), id));
            }
        })
    }

    fn handle_iq<'a>(&'a self, cx: &'a IqCx<'a>, iq: &'a Stanza) -> IqFuture<'a> {
        Box::pin(async move {
            let (Some(payload), Some(ty), super::Target::Account(owner)) =
                (iq.iq_payload(), iq.iq_type(), cx.target)
            else {
                return Err(StanzaError::new(StanzaCondition::ServiceUnavailable));
            };
            match (ty, payload.name()) {
                (IqType::Set, "query") => self.query(cx, owner, payload).await.map(Some),
                // §4.1.5: the fields a query may use.
                (IqType::Get, "query") => Ok(Some(query_form())),
                (IqType::Get, "prefs") => self.prefs(cx, owner, None).await.map(Some),
                (IqType::Set, "prefs") => self.prefs(cx, owner, Some(payload)).await.map(Some),
                (_, "metadata") => Err(StanzaError::new(StanzaCondition::FeatureNotImplemented)),
                _ => Err(StanzaError::new(StanzaCondition::BadRequest)),
            }
        })
    }
}

/// Every archived message older than `[archive] retention_days` is deleted, a batch at a
/// time with pauses between, once an hour (and a minute after start): the storage
/// threads are never held for long and nothing runs in between.
pub async fn expire(im: Im<'_>, cfg: ArchiveConfig) {
    const BATCH: usize = 500;
    if !cfg.enabled || cfg.retention_days == 0 {
        return;
    }
    let mut wait = Duration::from_secs(60);
    loop {
        smol::Timer::after(wait).await;
        wait = Duration::from_secs(3600);
        let cutoff = crate::storage::unix_now() - i64::from(cfg.retention_days) * 86_400;
        let mut total = 0;
        loop {
            match on_pool(im.storage, move |s| s.expire_archive(cutoff, BATCH)).await {
                Ok(n) => {
                    total += n;
                    if n < BATCH {
                        break;
                    }
                }
                Err(e) => {
                    log::error!("storage: expiring the archive: {e}");
                    break;
                }
            }
            smol::Timer::after(Duration::from_millis(100)).await;
        }
        if total > 0 {
            log::info!(
                "archive: {total} messages older than {} days expired",
                cfg.retention_days
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jid::Jid;

    fn message(ty: Option<&str>, children: &[(&str, &str)]) -> Stanza {
        let mut el = Element::new("message", ns::CLIENT).with_attr("to", "bob@h");
        if let Some(t) = ty {
            el.set_attr("type", t);
        }
        for (name, ns) in children {
            el.push_child(Element::new(*name, *ns).with_text("x"));
        }
        Stanza {
            kind: crate::stanza::Kind::Message,
            el,
            to: Jid::parse("bob@h").ok(),
        }
    }

    #[test]
    fn which_messages_are_archived() {
        let body = ("body", ns::CLIENT);
        assert!(is_archived(&message(Some("chat"), &[body])));
        assert!(is_archived(&message(None, &[body])));
        assert!(!is_archived(&message(Some("groupchat"), &[body])));
        assert!(!is_archived(&message(Some("error"), &[body])));
        assert!(!is_archived(&message(Some("headline"), &[body])));
        // A chat state alone is not; with a store hint it is.
        assert!(!is_archived(&message(Some("chat"), &[("active", "x")])));
        assert!(is_archived(&message(
            Some("chat"),
            &[("active", "x"), ("store", hints::NS)]
        )));
        assert!(!is_archived(&message(
            Some("chat"),
            &[body, ("no-store", hints::NS)]
        )));
        assert!(!is_archived(&message(
            Some("chat"),
            &[body, ("no-permanent-store", hints::NS)]
        )));
    }

    #[test]
    fn forged_stanza_ids_are_removed() {
        let mut el = Element::new("message", ns::CLIENT)
            .with_child(stanza_id("bob@h", 1))
            .with_child(stanza_id("h", 3))
            .with_child(stanza_id("other@x", 2));
        strip_stanza_ids(&mut el, "bob@h", "h");
        assert_eq!(archived_id(&el, "bob@h"), None);
        assert_eq!(archived_id(&el, "h"), None);
        assert_eq!(archived_id(&el, "other@x"), Some(2));
        el.push_child(stanza_id("bob@h", 9));
        assert_eq!(archived_id(&el, "bob@h"), Some(9));
    }

    #[test]
    fn a_result_wraps_the_stored_message() {
        let row = Row {
            id: 7,
            at: 0,
            stanza: "<message xmlns=\"jabber:client\"><body>hi</body></message>".into(),
        };
        let mut out = String::new();
        result_xml(&mut out, "a@h/r", "a@h", Some("q\"1"), &row);
        assert_eq!(
            out,
            "<message to=\"a@h/r\" from=\"a@h\"><result xmlns=\"urn:xmpp:mam:2\" \
             queryid=\"q&quot;1\" id=\"7\"><forwarded xmlns=\"urn:xmpp:forward:0\">\
             <delay xmlns=\"urn:xmpp:delay\" stamp=\"1970-01-01T00:00:00Z\"/>\
             <message xmlns=\"jabber:client\"><body>hi</body></message></forwarded>\
             </result></message>"
        );
        let f = fin(&Page {
            rows: vec![row],
            complete: true,
        });
        assert_eq!(f.attr("complete"), Some("true"));
        let set = f.get_child("set", NS_RSM).unwrap();
        assert_eq!(set.get_child("first", NS_RSM).unwrap().text(), "7");
        let empty = fin(&Page::default());
        assert!(
            !empty
                .get_child("set", NS_RSM)
                .unwrap()
                .has_child("first", NS_RSM)
        );
    }
}
