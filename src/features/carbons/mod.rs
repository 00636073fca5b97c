//! XEP-0280: Message Carbons (`urn:xmpp:carbons:2`) — every device of an account sees
//! both sides of its conversations: a client that enabled carbons (§4) gets a copy of
//! each message another resource of its account sends (§8, "sent") and of each message
//! the account receives that went to another resource (§7, "received"), wrapped in a
//! XEP-0297 `<forwarded/>`. The copies are made in the [`Hook::MessageOut`] and
//! [`Hook::MessageIn`] hooks; which messages are copied is [`is_eligible`] (§6), which
//! resources get them [`copy_targets`] (the RFC 6121 §8.5.2.1.1 choice the router makes
//! for a bare JID decides who already has the original). The module is registered after
//! the archive, so a received copy carries the XEP-0359 `<stanza-id/>` the archive
//! stamped on the original.
//!
//! A sender keeps a message off the other devices with carbons' own `<private/>` (§9) or
//! XEP-0334's `<no-copy/>`; `<private/>` is removed before a local recipient gets the
//! message, as §9 asks of the receiving server.

use super::hints::{self, Hint};
use super::{
    Access, Announce, Doc, Hook, HookCx, HookFuture, IqCx, IqFuture, IqRoute, Module, On, Spec,
    Status, ready,
};
use crate::jid::BareJid;
use crate::ns;
use crate::router::{CarbonsView, Origin};
use crate::stanza::{IqType, Kind, MessageType, Stanza, StanzaCondition, StanzaError};
use crate::xml::Element;

#[cfg(test)]
mod tests;

/// XEP-0280's namespace (version 2).
pub const NS: &str = "urn:xmpp:carbons:2";
/// XEP-0297 Stanza Forwarding, the wrapper of a copy.
pub const NS_FORWARD: &str = "urn:xmpp:forward:0";
/// XEP-0045's user namespace: its `<x/>` marks a private message through a room.
pub const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";

/// Which way a message went, seen from the account whose devices get copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Sent by one of its resources (§8): the copies are `<sent/>`.
    Sent,
    /// Addressed to it (§7): the copies are `<received/>`.
    Received,
}

impl Direction {
    /// The wrapper element's name.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Sent => "sent",
            Direction::Received => "received",
        }
    }
}

/// XEP-0280 §6: whether the message `el` is copied to the account's other devices.
///
/// - never when its sender asked so: carbons' `<private/>` (§9) or XEP-0334's
///   `<no-copy/>` (§4.3);
/// - never a copy itself (a `<sent/>` or `<received/>` inside): §11 has clients accept
///   copies only from their own bare JID, and a copy of a copy helps nobody;
/// - `chat`: yes; `normal` with a `<body/>`: yes; `groupchat` and `headline`: no;
/// - `error`: the XEP asks for errors in reply to eligible messages, which would need
///   message tracking; as Prosody does, an error that comes back from a bare JID (the
///   address chats are sent to) is taken for one, on the way in only;
/// - a private message through a room (XEP-0045 §7.5, marked by a `muc#user` `<x/>`)
///   is copied when sent, so the user's other devices show the whole conversation, but
///   not when received at a full JID: §6 does not copy what a room sends, and the other
///   devices are not in the room (ejabberd and Prosody do the same).
///
pub fn is_eligible(stanza: &Stanza, dir: Direction) -> bool {
    let el = &stanza.el;
    let to_full = stanza.to.as_ref().is_some_and(|t| t.is_full());
    if el.has_child("private", NS) || hints::has(el, Hint::NoCopy) {
        return false;
    }
    if el.has_child("sent", NS) || el.has_child("received", NS) {
        return false;
    }
    let is_room_pm = el.has_child("x", NS_MUC_USER);
    if dir == Direction::Received && is_room_pm && to_full {
        return false;
    }
    match stanza.message_type() {
        MessageType::Chat => true,
        MessageType::Normal => el.has_child("body", ns::CLIENT),
        MessageType::Error => {
            dir == Direction::Received
                && el
                    .attr("from")
                    .and_then(|f| crate::jid::Jid::parse(f).ok())
                    .is_some_and(|j| j.is_bare() && j.local().is_some())
        }
        MessageType::Groupchat | MessageType::Headline => false,
    }
}

/// The resources of the account (as [`crate::router::Router::carbons_view`] lists them)
/// that get a copy of a message going `dir`:
///
/// - sent (§8): every carbons-enabled resource but the sender (`sender`);
/// - received (§7): every carbons-enabled available resource that does not get the
///   original: for a full JID that is bound (`to_resource`), all but that one; for a
///   bare JID (or an unbound resource, which RFC 6121 §8.5.3.2.1 treats as the bare
///   JID), those RFC 6121 §8.5.2.1.1 does not choose: a chat or normal message goes to
///   the available resources of the highest non-negative priority. `sender` is left out
///   too, when an account writes to itself.
pub fn copy_targets<'v>(
    view: &'v [CarbonsView],
    dir: Direction,
    ty: MessageType,
    to_resource: Option<&str>,
    sender: Option<&str>,
) -> Vec<&'v str> {
    let is_sender = |s: &CarbonsView| sender.is_some_and(|r| *s.resource == *r);
    let wanted = view.iter().filter(|s| s.wants_carbons && !is_sender(s));
    match dir {
        Direction::Sent => wanted.map(|s| &*s.resource).collect(),
        Direction::Received => {
            let bound = to_resource.filter(|r| view.iter().any(|s| *s.resource == **r));
            let top = view
                .iter()
                .filter(|s| s.available && s.priority >= 0)
                .map(|s| s.priority)
                .max();
            let gets_original = |s: &CarbonsView| match bound {
                Some(r) => *s.resource == *r,
                None => {
                    matches!(ty, MessageType::Chat | MessageType::Normal)
                        && s.available
                        && s.priority >= 0
                        && Some(s.priority) == top
                }
            };
            wanted
                .filter(|s| s.available && !gets_original(s))
                .map(|s| &*s.resource)
                .collect()
        }
    }
}

/// The copy of `original` for `to` (a full JID of `account`), §7 and §8: from the
/// account's bare JID, the original's type kept, the original inside `<sent/>` or
/// `<received/>` and a XEP-0297 `<forwarded/>`.
pub fn wrap(dir: Direction, account: &BareJid, to: &str, original: &Element) -> Element {
    let mut copy = Element::new("message", ns::CLIENT)
        .with_attr("from", account.as_str())
        .with_attr("to", to);
    if let Some(ty) = original.attr("type") {
        copy.set_attr("type", ty);
    }
    let mut inner = original.clone();
    if inner.attr("to").is_none() {
        // RFC 6120 §10.3.1: no `to` is the sender's own account; said outright, so the
        // copy names its peer.
        inner.set_attr("to", account.as_str());
    }
    copy.with_child(
        Element::new(dir.name(), NS)
            .with_child(Element::new("forwarded", NS_FORWARD).with_child(inner)),
    )
}

pub struct Carbons;

impl Carbons {
    /// Sends the copies of `el` going `dir` to `account`'s resources that get one.
    fn send_copies(
        &self,
        cx: &HookCx<'_>,
        dir: Direction,
        account: &BareJid,
        original: &Stanza,
        to_resource: Option<&str>,
        sender: Option<&str>,
    ) {
        let Some(user) = account.local() else { return };
        let router = cx.im.router;
        let view = router.carbons_view(user);
        if view.is_empty() {
            return;
        }
        let ty = original.message_type();
        for resource in copy_targets(&view, dir, ty, to_resource, sender) {
            let Ok(full) = account.with_resource(resource) else {
                continue;
            };
            let copy = wrap(dir, account, full.as_str(), &original.el);
            let stanza = Stanza {
                kind: Kind::Message,
                el: copy,
                to: Some(full.into()),
            };
            // From the server: a copy a full queue refuses is nobody's error to hear.
            if router.route(Origin::Server, stanza).is_some() {
                log::debug!("c2s{}: carbon copy for a resource gone dropped", cx.im.conn);
            }
        }
    }
}

impl Module for Carbons {
    fn name(&self) -> &'static str {
        "carbons"
    }

    fn specs(&self) -> &'static [Spec] {
        &[
            Spec {
                doc: Doc::Xep(280),
                title: "Message Carbons",
                version: "1.0.1",
                status: Status::Complete,
                note: "§6 rules: chat, normal with a body, errors from a bare JID, private \
                       messages through a room when sent; `private` and XEP-0334 `no-copy` \
                       honoured",
            },
            Spec {
                doc: Doc::Xep(297),
                title: "Stanza Forwarding",
                version: "1.0",
                status: Status::Complete,
                note: "the wrapper of carbon copies",
            },
        ]
    }

    fn disco(&self) -> &'static [Announce] {
        // §3: the server announces the feature (clients ask the domain).
        &[Announce {
            var: NS,
            on: On::Server,
        }]
    }

    fn iqs(&self) -> &'static [IqRoute] {
        // §4, §5: a client enables or disables carbons for its own session, with no
        // `to` (its own account).
        &[IqRoute {
            ns: NS,
            on: On::Account,
            access: Access::Own,
        }]
    }

    fn hooks(&self) -> &'static [Hook] {
        &[Hook::MessageOut, Hook::MessageIn]
    }

    fn handle_iq<'a>(&'a self, cx: &'a IqCx<'a>, iq: &'a Stanza) -> IqFuture<'a> {
        ready(toggle(cx, iq))
    }

    fn message_out<'a>(&'a self, cx: &'a HookCx<'a>, stanza: &'a mut Stanza) -> HookFuture<'a, ()> {
        Box::pin(async move {
            let Some(from) = cx.from.session() else {
                return;
            };
            let account = from.bare();
            let to = stanza.to.clone();
            // To its own account: the received copies (MessageIn) show it on the other
            // devices; a sent copy as well would show it twice.
            if to.as_ref().is_none_or(|t| t.bare() == account) {
                return;
            }
            if !is_eligible(stanza, Direction::Sent) {
                return;
            }
            self.send_copies(
                cx,
                Direction::Sent,
                &account,
                stanza,
                None,
                Some(from.resource()),
            );
        })
    }

    fn message_in<'a>(
        &'a self,
        cx: &'a HookCx<'a>,
        to: &'a BareJid,
        stanza: &'a mut Stanza,
    ) -> HookFuture<'a, ()> {
        Box::pin(async move {
            if stanza.el.has_child("private", NS) {
                // §9: not copied, and the receiving server removes the marker.
                stanza.el.remove_children("private", NS);
                return;
            }
            if !is_eligible(stanza, Direction::Received) {
                return;
            }
            let to_resource = stanza.to.as_ref().and_then(|t| t.resource());
            // An account writing to itself: its sending device has the message already.
            let sender = cx
                .from
                .session()
                .filter(|f| f.bare() == *to)
                .map(|f| f.resource());
            self.send_copies(cx, Direction::Received, to, stanza, to_resource, sender);
        })
    }
}

/// §4, §5: `<enable/>` or `<disable/>` in an iq set, for the sending session. Asking
/// again is not an error (§10.1).
fn toggle(cx: &IqCx<'_>, iq: &Stanza) -> super::IqOutcome {
    let bad = |why: &str| Err(StanzaError::new(StanzaCondition::BadRequest).with_text(why));
    let Some(payload) = iq.iq_payload() else {
        return bad("no payload");
    };
    let enabled = match payload.name() {
        "enable" => true,
        "disable" => false,
        _ => return bad("carbons takes <enable/> or <disable/>"),
    };
    if iq.iq_type() != Some(IqType::Set) {
        return bad("carbons are enabled or disabled with an iq set");
    }
    // §4.1, §5.1: only a client of this server, for its own session.
    let Some(session) = cx.from.session() else {
        return Err(StanzaError::new(StanzaCondition::NotAllowed));
    };
    if !cx.im.router.set_carbons(session, enabled) {
        return Err(StanzaError::new(StanzaCondition::ItemNotFound));
    }
    log::debug!(
        "c2s{}: carbons {}",
        cx.im.conn,
        if enabled { "enabled" } else { "disabled" }
    );
    Ok(None)
}
