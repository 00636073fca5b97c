//! XEP-0357: Push Notifications — an account's phone (an iPhone app that iOS suspends,
//! an Android app without a connection of its own) registers an *app server* with the
//! account (§5 `<enable/>`, §6 `<disable/>`), and when a message arrives that nobody is
//! there to see, the server publishes a short summary to that app server (§7), which
//! wakes the app through Apple's or Google's push service. The message itself is stored
//! or held as before (offline storage, a hibernating session's queue): a notification
//! only says "something is waiting", and push never drops or delays a message.
//!
//! What it does, as Prosody's `mod_cloud_notify` and ejabberd's `mod_push` do:
//! - Registrations are per account, several of them (one per device), at most
//!   [`MAX_REGISTRATIONS`], stored with the publish-options form the client gave (§5,
//!   usually the app server's `secret`) in the account's stored bytes
//!   (`limits.max_stored_bytes_per_account`). Only the account itself may enable or
//!   disable (anyone else: `forbidden`); a malformed request gets `bad-request`.
//! - A message notifies ([`is_notable`]) when it is `chat` or `normal` and carries a
//!   body, an encrypted payload (OMEMO, OpenPGP), a call (XEP-0353) or a group chat
//!   invitation; not chat states, receipts or markers alone, not headlines, not errors,
//!   and not `groupchat` (a push for every line of a busy room is not what the family
//!   wants; mentions are not tracked).
//! - It notifies every registration when the account has no *attended* session: none
//!   available, or all of them XEP-0352 inactive, or hibernating after a lost
//!   connection waiting for a XEP-0198 resumption (`Router::is_attended`).
//! - A registration remembers the session (resource) that enabled it: while that
//!   session hibernates, a message queued for it is notified to its registrations even
//!   when another device is in use (a laptop open, the phone in a pocket), as Prosody
//!   (`smacks-hibernation-stanza-queued`) and ejabberd do. And when a session starts to
//!   hibernate with messages it had been sent but had not acknowledged, those are
//!   notified then (Prosody's `smacks-hibernation-start`): the phone may never have
//!   seen them. Both through `Hook::SessionHibernated`.
//! - The notification (§7) is an iq set from the account's bare JID (as Prosody and
//!   ejabberd send it) to the app server: a pubsub `<publish/>` to the registration's
//!   node of a `<notification/>` with a `urn:xmpp:push:summary` form — `message-count`
//!   (messages since the user was last seen), `last-message-sender` (a bare JID), and
//!   `last-message-body` only when `[push] include_body` is on (off by default: the
//!   body would travel through the app server and Apple or Google) — and the stored
//!   publish-options.
//! - Throttled: at most one notification per registration every [`MIN_INTERVAL`] while
//!   the user stays away (the count keeps growing; the next one carries it). Anything
//!   the account's own client sends resets the count (someone is there) and the
//!   throttle of that device's registrations; another device's stay throttled (a laptop
//!   in use does not wake the phone more than once per interval).
//! - Answers: a result is fine; an error of type `wait` is only logged; one that means
//!   the registration is gone (`item-not-found`, `gone`, `not-authorized`, `forbidden`,
//!   `registration-required`) disables it at once (ejabberd's behaviour); any other
//!   error counts, and [`MAX_ERRORS`] in a row disable it (Prosody's `push_max_errors`).
//!   No answer within [`ANSWER_WAIT`] is forgotten: nothing was lost, the message is
//!   stored anyway. The answers reach this module through `Hook::IqResponse`.

mod store;

pub use store::{PushStore, Registration};

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::forms::{NS_DATA, Submitted};
use super::{
    Access, Announce, Doc, Hook, HookCx, HookFuture, IqCx, IqFuture, IqRoute, Module, On, Spec,
    Status, Verdict,
};
use crate::jid::{BareJid, FullJid, Jid};
use crate::ns;
use crate::router::im::{Sender, on_pool};
use crate::stanza::{IqType, MessageType, Stanza, StanzaCondition, StanzaError};
use crate::storage::OverQuota;
use crate::xml::Element;

/// XEP-0357's namespace (§4: announced on the account).
pub const NS: &str = "urn:xmpp:push:0";
/// XEP-0060's namespace, for the publish to the app server.
pub const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
/// The `FORM_TYPE` of the notification's summary (§7).
pub const SUMMARY: &str = "urn:xmpp:push:summary";
/// The `FORM_TYPE` of the publish-options a client may give (§5).
pub const PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";

/// Registrations per account: a phone, a tablet, a reinstalled app's new one.
pub const MAX_REGISTRATIONS: usize = 5;
/// The longest app server node kept (Conversations' and Monal's are under 100 bytes).
pub const MAX_NODE_BYTES: usize = 1024;
/// At most one notification per registration this often while the user stays away.
pub const MIN_INTERVAL: Duration = Duration::from_secs(30);
/// How long an app server's answer is waited for.
pub const ANSWER_WAIT: Duration = Duration::from_secs(120);
/// Errors in a row (other than `wait` ones) after which a registration is disabled
/// (Prosody's `push_max_errors` default).
pub const MAX_ERRORS: u32 = 16;
/// Notifications waiting for an answer, at most (beyond, an answer goes unclaimed).
const MAX_ASKED: usize = 1024;
/// The body sent with `include_body`, at most this many bytes (an iOS notification's
/// payload is 4 KiB in all).
pub const MAX_BODY_BYTES: usize = 512;

/// Payloads that make a message worth a notification however short its body: encrypted
/// content (OMEMO old and new, OpenPGP for XMPP, legacy OpenPGP), group chat
/// invitations (XEP-0249; XEP-0045's mediated one is below).
const NOTABLE_PAYLOADS: &[(&str, &str)] = &[
    ("encrypted", "eu.siacs.conversations.axolotl"),
    ("encrypted", "urn:xmpp:omemo:2"),
    ("openpgp", "urn:xmpp:openpgp:0"),
    ("x", "jabber:x:encrypted"),
    ("x", "jabber:x:conference"),
];
/// Encrypted payloads: their `<body/>` is a fallback text, never sent as the body.
const ENCRYPTED: &[&str] = &[
    "eu.siacs.conversations.axolotl",
    "urn:xmpp:omemo:2",
    "urn:xmpp:openpgp:0",
    "jabber:x:encrypted",
];
/// XEP-0353: a call being proposed.
const JINGLE_MESSAGE: &[&str] = &["urn:xmpp:jingle-message:0", "urn:xmpp:jingle-message:1"];

/// The module's settings (`[push]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushConfig {
    /// Send the message's body (its first [`MAX_BODY_BYTES`]) to the app server.
    pub include_body: bool,
}

/// What a client asks (§5, §6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// §5: notifications to `node` at `jid`, with these publish-options.
    Enable {
        jid: Jid,
        node: String,
        options: Option<Element>,
    },
    /// §6: no more notifications to `jid` (for `node`, or all of its nodes).
    Disable { jid: Jid, node: Option<String> },
}

fn bad(text: &str) -> StanzaError {
    StanzaError::new(StanzaCondition::BadRequest).with_text(text)
}

/// Reads an `<enable/>` or `<disable/>` (§5, §6); anything malformed is `bad-request`.
pub fn parse(payload: &Element) -> Result<Request, StanzaError> {
    let is_enable = match (payload.ns(), payload.name()) {
        (NS, "enable") => true,
        (NS, "disable") => false,
        _ => return Err(bad("expected <enable/> or <disable/>")),
    };
    let jid = payload
        .attr("jid")
        .ok_or_else(|| bad("the app server's 'jid' is missing"))?;
    let jid = Jid::parse(jid).map_err(|e| bad(&format!("the 'jid' is not a JID: {e}")))?;
    let node = match payload.attr("node") {
        Some("") => return Err(bad("the 'node' is empty")),
        Some(n) if n.len() > MAX_NODE_BYTES => return Err(bad("the 'node' is too long")),
        n => n.map(str::to_owned),
    };
    if !is_enable {
        return Ok(Request::Disable { jid, node });
    }
    // §5: the node is REQUIRED when enabling.
    let node = node.ok_or_else(|| bad("the 'node' is missing"))?;
    let mut forms = payload.children().filter(|c| c.is("x", NS_DATA));
    let options = forms.next().map(publish_options).transpose()?;
    if forms.next().is_some() {
        return Err(bad("more than one publish-options form"));
    }
    Ok(Request::Enable { jid, node, options })
}

/// §5: the publish-options form, checked (a submitted form of `FORM_TYPE`
/// [`PUBLISH_OPTIONS`]) and rebuilt with only its fields' names and values: what is
/// stored and sent back with each notification.
fn publish_options(x: &Element) -> Result<Element, StanzaError> {
    let form = Submitted::parse(x).map_err(|e| bad(&format!("publish-options: {e}")))?;
    if form.kind != super::forms::FormType::Submit {
        return Err(bad("publish-options must be a form of type 'submit'"));
    }
    if form.form_type() != Some(PUBLISH_OPTIONS) {
        return Err(bad(
            "publish-options need FORM_TYPE http://jabber.org/protocol/pubsub#publish-options",
        ));
    }
    let mut out = Element::new("x", NS_DATA).with_attr("type", "submit");
    for var in form.vars() {
        let mut field = Element::new("field", NS_DATA).with_attr("var", var);
        if var == "FORM_TYPE" {
            field.set_attr("type", "hidden");
        }
        for v in form.values(var) {
            field.push_child(Element::new("value", NS_DATA).with_text(v.clone()));
        }
        out.push_child(field);
    }
    Ok(out)
}

/// Whether `child` is the message's own `name` element (client or server namespace).
fn is_content(child: &Element, name: &str) -> bool {
    child.name() == name && (child.ns() == ns::CLIENT || child.ns() == ns::SERVER)
}

/// Whether a message for an account is worth waking its phone for (see the module
/// docs; Prosody's `is_important` without group chats).
pub fn is_notable(el: &Element) -> bool {
    if el.name() != "message" {
        return false;
    }
    match MessageType::of(el) {
        MessageType::Chat | MessageType::Normal => {}
        MessageType::Groupchat | MessageType::Headline | MessageType::Error => return false,
    }
    el.children().any(|c| {
        (is_content(c, "body") && !c.text().trim().is_empty())
            || NOTABLE_PAYLOADS
                .iter()
                .any(|(name, ns)| c.name() == *name && c.ns() == *ns)
            || (c.name() == "propose" && JINGLE_MESSAGE.contains(&c.ns()))
            || (c.is("x", "http://jabber.org/protocol/muc#user")
                && c.has_child("invite", "http://jabber.org/protocol/muc#user"))
    })
}

/// The body to send with `include_body`: none for an encrypted message (its body is a
/// fallback text), at most [`MAX_BODY_BYTES`] (cut at a character boundary).
pub fn body_of(el: &Element) -> Option<String> {
    if el.children().any(|c| ENCRYPTED.contains(&c.ns())) {
        return None;
    }
    let body = el.children().find(|c| is_content(c, "body"))?.text();
    if body.trim().is_empty() {
        return None;
    }
    let mut end = body.len().min(MAX_BODY_BYTES);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    Some(body[..end].to_owned())
}

/// What a notification tells (§7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Messages since the user was last seen.
    pub count: u32,
    /// The last sender's bare JID.
    pub sender: Option<String>,
    /// The last message's body, with `include_body`.
    pub body: Option<String>,
}

/// §7: `<notification xmlns='urn:xmpp:push:0'>` with its summary form.
pub fn notification(s: &Summary) -> Element {
    let field = |var: &str, value: &str| {
        Element::new("field", NS_DATA)
            .with_attr("var", var)
            .with_child(Element::new("value", NS_DATA).with_text(value))
    };
    let mut x = Element::new("x", NS_DATA)
        .with_attr("type", "submit")
        .with_child(field("FORM_TYPE", SUMMARY).with_attr("type", "hidden"))
        .with_child(field("message-count", &s.count.to_string()));
    if let Some(sender) = &s.sender {
        x.push_child(field("last-message-sender", sender));
    }
    if let Some(body) = &s.body {
        x.push_child(field("last-message-body", body));
    }
    Element::new("notification", NS).with_child(x)
}

/// §7: the iq that publishes `notification` to `reg`'s node, from the account `from`,
/// with the registration's publish-options.
pub fn publish_iq(from: &BareJid, reg: &Registration, notification: Element, id: &str) -> Element {
    let publish = Element::new("publish", NS_PUBSUB)
        .with_attr("node", reg.node.clone())
        .with_child(Element::new("item", NS_PUBSUB).with_child(notification));
    let mut pubsub = Element::new("pubsub", NS_PUBSUB).with_child(publish);
    if let Some(options) = &reg.options {
        pubsub.push_child(Element::new("publish-options", NS_PUBSUB).with_child(options.clone()));
    }
    Element::new("iq", ns::CLIENT)
        .with_attr("type", "set")
        .with_attr("from", from.as_str())
        .with_attr("to", reg.jid.clone())
        .with_attr("id", id)
        .with_child(pubsub)
}

/// What becomes of a registration after its app server answered with an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterError {
    /// A temporary problem (`type='wait'`): nothing changes.
    Keep,
    /// Counted; [`MAX_ERRORS`] in a row disable it.
    Count,
    /// The app server no longer knows the registration: disabled now.
    Disable,
}

/// Conditions that mean the app server forgot the registration (or never will accept it).
const GONE: &[&str] = &[
    "item-not-found",
    "gone",
    "not-authorized",
    "forbidden",
    "registration-required",
];

/// Reads an iq error's `<error/>` (RFC 6120 §8.3.2).
pub fn after_error(iq: &Element) -> AfterError {
    let Some(err) = iq.children().find(|c| is_content(c, "error")) else {
        return AfterError::Count;
    };
    if err.attr("type") == Some("wait") {
        return AfterError::Keep;
    }
    let condition = err
        .children()
        .find(|c| c.ns() == ns::STANZA_ERRORS && c.name() != "text");
    match condition {
        Some(c) if GONE.contains(&c.name()) => AfterError::Disable,
        _ => AfterError::Count,
    }
}

/// A registration's key: (app server JID, node).
type Key = (String, String);

/// One account's messages since its user was last seen.
#[derive(Debug, Default)]
struct Away {
    count: u32,
    /// When each registration (with the resource that enabled it) was last notified.
    sent: Vec<(Key, Box<str>, Instant)>,
}

/// The throttle (sans-IO: the clock is a parameter): per account away, its count and
/// when each registration was last notified.
#[derive(Debug, Default)]
pub struct Throttle {
    away: HashMap<Box<str>, Away>,
}

impl Throttle {
    /// `n` notable messages for `user`, whose registrations are `regs` (each with the
    /// resource that enabled it): the count to tell, and which registrations (indexes
    /// into `regs`) to notify now.
    pub fn message(
        &mut self,
        user: &str,
        n: u32,
        now: Instant,
        regs: &[(Key, &str)],
    ) -> (u32, Vec<usize>) {
        let away = self.away.entry(user.into()).or_default();
        away.count = away.count.saturating_add(n);
        // Registrations disabled meanwhile stay until the user is seen on their device:
        // `regs` may be only some of them (one device's).
        let mut due = Vec::new();
        for (i, (key, resource)) in regs.iter().enumerate() {
            match away.sent.iter_mut().find(|(k, _, _)| k == key) {
                Some((_, _, at)) if now.saturating_duration_since(*at) < MIN_INTERVAL => {}
                Some((_, _, at)) => {
                    *at = now;
                    due.push(i);
                }
                None => {
                    away.sent.push((key.clone(), (*resource).into(), now));
                    due.push(i);
                }
            }
        }
        (away.count, due)
    }

    /// `user`'s session `resource` did something: someone is there; counting starts
    /// again, and that device's registrations may be told at once next time. Another
    /// device's registrations stay throttled: a laptop in use does not mean the phone
    /// in the pocket was looked at (registrations of an unknown device are cleared).
    pub fn seen(&mut self, user: &str, resource: &str) {
        if self.away.is_empty() {
            return;
        }
        let Some(away) = self.away.get_mut(user) else {
            return;
        };
        away.count = 0;
        away.sent
            .retain(|(_, r, _)| !r.is_empty() && **r != *resource);
        if away.sent.is_empty() {
            self.away.remove(user);
        }
    }
}

/// A notification waiting for its answer.
#[derive(Debug)]
struct Asked {
    user: Box<str>,
    key: Key,
    at: Instant,
}

/// What the module keeps in memory.
#[derive(Debug, Default)]
struct State {
    throttle: Throttle,
    /// Notifications sent, by iq id.
    asked: HashMap<String, Asked>,
    /// Errors in a row per (account, registration); gone with a success.
    errors: HashMap<(Box<str>, Key), u32>,
    /// Accounts known to have no registration: a message for them costs no storage
    /// read (most accounts never enable push). One entry per account at most.
    unregistered: HashSet<Box<str>>,
    /// Counts enables, so a lookup that raced with one does not mark its account
    /// unregistered.
    enables: u64,
}

/// XEP-0357, on every account.
pub struct Push {
    config: PushConfig,
    state: Mutex<State>,
}

impl Push {
    pub fn new(config: &PushConfig) -> Push {
        Push {
            config: config.clone(),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// §5, §6 for the account `user`, asked by its session `from`.
    async fn request(
        &self,
        cx: &IqCx<'_>,
        user: &str,
        from: &FullJid,
        req: Request,
    ) -> super::IqOutcome {
        let im = cx.im;
        match req {
            Request::Enable { jid, node, options } => {
                let reg = Registration {
                    jid: jid.to_string(),
                    node,
                    options,
                    resource: from.resource().to_owned(),
                };
                let quota = *im.router.quota();
                {
                    let mut state = self.state();
                    state.enables += 1;
                    state.unregistered.remove(user);
                }
                let u = user.to_owned();
                let r = reg.clone();
                let done = on_pool(im.storage, move |s| {
                    s.push_enable(&u, &r, MAX_REGISTRATIONS, &quota)
                })
                .await
                .map_err(|e| {
                    log::error!("storage: {e}");
                    StanzaError::new(StanzaCondition::InternalServerError)
                })?;
                match done {
                    Ok(()) => {
                        log::info!(
                            "c2s{}: {user} enabled push notifications to {}",
                            im.conn,
                            reg.jid
                        );
                        self.state()
                            .errors
                            .remove(&(user.into(), (reg.jid, reg.node)));
                        Ok(None)
                    }
                    Err(over) => Err(StanzaError::new(StanzaCondition::ResourceConstraint)
                        .with_text(match over {
                            OverQuota::Items => "too many push registrations for this account",
                            OverQuota::Bytes => "the account's storage is full",
                        })),
                }
            }
            Request::Disable { jid, node } => {
                let (u, j, n) = (user.to_owned(), jid.to_string(), node.clone());
                let gone = on_pool(im.storage, move |s| s.push_disable(&u, &j, n.as_deref()))
                    .await
                    .map_err(|e| {
                        log::error!("storage: {e}");
                        StanzaError::new(StanzaCondition::InternalServerError)
                    })?;
                log::info!(
                    "c2s{}: {user} disabled push notifications to {jid} ({gone} registrations)",
                    im.conn
                );
                let jid = jid.to_string();
                self.state().errors.retain(|(u, (j, n)), _| {
                    !(**u == *user && *j == jid && node.as_ref().is_none_or(|node| node == n))
                });
                Ok(None)
            }
        }
    }

    /// `n` notable messages for `to` (the account `user`), the last `el`, nobody there
    /// to see them: notify its app servers (those the session with resource `only`
    /// enabled, when given) as the throttle allows.
    async fn notify(
        &self,
        cx: &HookCx<'_>,
        to: &BareJid,
        user: &str,
        n: u32,
        el: &Element,
        only: Option<&str>,
    ) {
        let enables = {
            let state = self.state();
            if state.unregistered.contains(user) {
                return;
            }
            state.enables
        };
        let u = user.to_owned();
        let mut regs = match on_pool(cx.im.storage, move |s| s.push_registrations(&u)).await {
            Ok(r) => r,
            Err(e) => {
                log::error!("storage: {e}");
                return;
            }
        };
        if regs.is_empty() {
            let mut state = self.state();
            if state.enables == enables {
                state.unregistered.insert(user.into());
            }
            return;
        }
        if let Some(resource) = only {
            regs.retain(|r| r.resource == resource);
        }
        if regs.is_empty() {
            return;
        }
        let keys: Vec<(Key, &str)> = regs
            .iter()
            .map(|r| ((r.jid.clone(), r.node.clone()), r.resource.as_str()))
            .collect();
        let now = Instant::now();
        let (count, due) = self.state().throttle.message(user, n, now, &keys);
        if due.is_empty() {
            log::debug!("{user}: push notification held back (throttled, {count} waiting)");
            return;
        }
        let summary = Summary {
            count,
            sender: el
                .attr("from")
                .and_then(|f| Jid::parse(f).ok())
                .map(|j| j.bare().to_string()),
            body: self.config.include_body.then(|| body_of(el)).flatten(),
        };
        for i in due {
            let Some(reg) = regs.get(i) else { continue };
            let Ok(app) = Jid::parse(&reg.jid) else {
                continue;
            };
            let id = format!("push-{}", crate::stream::new_stream_id());
            {
                let mut st = self.state();
                st.asked
                    .retain(|_, a| now.saturating_duration_since(a.at) < ANSWER_WAIT);
                if st.asked.len() < MAX_ASKED {
                    st.asked.insert(
                        id.clone(),
                        Asked {
                            user: user.into(),
                            key: (reg.jid.clone(), reg.node.clone()),
                            at: now,
                        },
                    );
                }
            }
            log::debug!("{user}: push notification ({count} waiting) to {app}");
            let iq = publish_iq(to, reg, notification(&summary), &id);
            cx.im.send_as_server(app, iq);
        }
    }

    /// An app server's answer to the notification `asked`.
    async fn answered(&self, cx: &HookCx<'_>, asked: Asked, iq: &Element) {
        let Asked { user, key, .. } = asked;
        let err_key = (user.clone(), key.clone());
        if iq.attr("type") != Some("error") {
            log::debug!("{user}: app server {} took a push notification", key.0);
            self.state().errors.remove(&err_key);
            return;
        }
        let what = after_error(iq);
        let is_over = match what {
            AfterError::Keep => false,
            AfterError::Disable => true,
            AfterError::Count => {
                let mut st = self.state();
                let n = st.errors.entry(err_key.clone()).or_insert(0);
                *n += 1;
                *n >= MAX_ERRORS
            }
        };
        let error = iq
            .children()
            .find(|c| is_content(c, "error"))
            .map(|e| {
                let cond = e
                    .children()
                    .find(|c| c.ns() == ns::STANZA_ERRORS && c.name() != "text")
                    .map_or("?", |c| c.name());
                format!("{} {cond}", e.attr("type").unwrap_or("?"))
            })
            .unwrap_or_default();
        log::info!(
            "{user}: app server {} answered a push with an error ({error})",
            key.0
        );
        if !is_over {
            return;
        }
        self.state().errors.remove(&err_key);
        let (u, (jid, node)) = (user.to_string(), key);
        let (j, n) = (jid.clone(), node.clone());
        match on_pool(cx.im.storage, move |s| s.push_disable(&u, &j, Some(&n))).await {
            Ok(_) => log::info!("{user}: push notifications to {jid} disabled after its error"),
            Err(e) => log::error!("storage: {e}"),
        }
    }
}

impl Module for Push {
    fn name(&self) -> &'static str {
        "push"
    }

    fn specs(&self) -> &'static [Spec] {
        &[Spec {
            doc: Doc::Xep(357),
            title: "Push Notifications",
            version: "0.4.1",
            status: Status::Complete,
            note: "summary form from the account's bare JID when no session is attended \
                   (offline, XEP-0352 inactive, XEP-0198 hibernating), and to a hibernating \
                   device's own registrations while another is in use; throttled to one \
                   per 30 s; no group chats; bodies only with `[push] include_body`",
        }]
    }

    fn disco(&self) -> &'static [Announce] {
        &[Announce {
            var: NS,
            on: On::Account,
        }]
    }

    fn iqs(&self) -> &'static [IqRoute] {
        &[IqRoute {
            ns: NS,
            on: On::Account,
            access: Access::Own,
        }]
    }

    fn hooks(&self) -> &'static [Hook] {
        &[
            Hook::StanzaIn,
            Hook::MessageIn,
            Hook::IqResponse,
            Hook::SessionHibernated,
        ]
    }

    fn filter_in<'a>(
        &'a self,
        cx: &'a HookCx<'a>,
        _stanza: &'a Stanza,
        _access: Option<Access>,
        _out: &'a mut String,
    ) -> HookFuture<'a, Verdict> {
        // The account's own client sent something: its user is there.
        if let Sender::Local(from) = cx.from
            && let Some(user) = from.local()
        {
            self.state().throttle.seen(user, from.resource());
        }
        Box::pin(std::future::ready(Verdict::Pass))
    }

    fn message_in<'a>(
        &'a self,
        cx: &'a HookCx<'a>,
        to: &'a BareJid,
        stanza: &'a mut Stanza,
    ) -> HookFuture<'a, ()> {
        Box::pin(async move {
            let Some(user) = cx.im.local_user(to) else {
                return;
            };
            if !is_notable(&stanza.el) || cx.im.router.is_attended(user) {
                return;
            }
            self.notify(cx, to, user, 1, &stanza.el, None).await;
        })
    }

    /// A hibernating session's device is not there to see what it was sent: what it
    /// had not acknowledged when its connection went (`queued` false: the phone lost its
    /// connection with messages in flight), or what is queued for it since. With nobody
    /// else there every registration is told (new messages were already, by
    /// [`Hook::MessageIn`]); with another device in use, only those this session
    /// enabled, as Prosody and ejabberd notify a hibernating session's registration.
    fn session_hibernated<'a>(
        &'a self,
        cx: &'a HookCx<'a>,
        waiting: &'a [Element],
        queued: bool,
    ) -> HookFuture<'a, ()> {
        Box::pin(async move {
            let Some(session) = cx.from.session() else {
                return;
            };
            let to = session.bare();
            let Some(user) = to.local() else { return };
            let is_attended = cx.im.router.is_attended(user);
            if queued && !is_attended {
                return;
            }
            let notable: Vec<&Element> = waiting.iter().filter(|m| is_notable(m)).collect();
            let Some(last) = notable.last() else { return };
            let n = u32::try_from(notable.len()).unwrap_or(u32::MAX);
            let only = is_attended.then(|| session.resource());
            self.notify(cx, &to, user, n, last, only).await;
        })
    }

    fn iq_response<'a>(&'a self, cx: &'a HookCx<'a>, stanza: &'a Stanza) -> HookFuture<'a, bool> {
        Box::pin(async move {
            let Some(id) = stanza.el.attr("id").filter(|id| id.starts_with("push-")) else {
                return false;
            };
            let asked = {
                let mut st = self.state();
                match st.asked.get(id) {
                    // Only the app server asked answers (RFC 6120 §8.1.2.1).
                    Some(a) if Jid::parse(&a.key.0).is_ok_and(|j| j == cx.from.jid()) => {
                        st.asked.remove(id)
                    }
                    _ => None,
                }
            };
            let Some(asked) = asked else { return false };
            self.answered(cx, asked, &stanza.el).await;
            true
        })
    }

    fn handle_iq<'a>(&'a self, cx: &'a IqCx<'a>, iq: &'a Stanza) -> IqFuture<'a> {
        Box::pin(async move {
            // Access::Own: only the account's own sessions get here.
            let Some(from) = cx.from.session() else {
                return Err(StanzaError::new(StanzaCondition::Forbidden));
            };
            let Some(user) = from.local() else {
                return Err(StanzaError::new(StanzaCondition::Forbidden));
            };
            if iq.iq_type() != Some(IqType::Set) {
                return Err(bad("enable and disable are iq sets"));
            }
            let payload = iq.iq_payload().ok_or_else(|| bad("no payload"))?;
            let req = parse(payload)?;
            self.request(cx, user, from, req).await
        })
    }
}

#[cfg(test)]
mod tests;
