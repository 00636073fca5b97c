//! RFC 6121 §3 and Appendix A: the presence subscription state machine.
//!
//! A pure function from (the state of one roster item, one subscription stanza, its
//! direction) to what the server does: the new state, whether the stanza is delivered (to
//! the user's resources, inbound) or routed (to the contact, outbound), whether the change
//! is pushed to the user's interested resources (§2.1.6), and what the server sends on its
//! own (an automatic `subscribed`, or the contact's presence when a subscription starts or
//! ends). Storage and routing happen elsewhere; the tests below walk every cell of the
//! tables in Appendix A.2 (outbound) and A.3 (inbound), plus pre-approval (§3.4).

mod handle;

use std::fmt;

use crate::xml::Element;

/// RFC 6121 §3 as a module: subscriptions travel as presence (`router::im` applies this
/// file's state machine); announced is pre-approval (§3.4.1).
pub struct Subscriptions;

impl super::Module for Subscriptions {
    fn name(&self) -> &'static str {
        "subscription"
    }

    fn specs(&self) -> &'static [super::Spec] {
        &[super::Spec {
            doc: super::Doc::Rfc(6121, "§3"),
            title: "Managing Presence Subscriptions",
            version: "",
            status: super::Status::Complete,
            note: "with pre-approval (§3.4); requests wait in storage for offline users",
        }]
    }

    fn stream_features(&self) -> Vec<Element> {
        vec![Element::new("sub", super::roster::NS_PRE_APPROVAL)]
    }

    fn hooks(&self) -> &'static [super::Hook] {
        &[super::Hook::AccountRemoved]
    }

    /// An account going away ends its subscriptions both ways, as removing each of its
    /// roster items would (§2.5.2), and leaves no item for it in local rosters.
    fn account_removed<'a>(
        &'a self,
        cx: &'a super::HookCx<'a>,
        account: &'a crate::jid::BareJid,
    ) -> super::HookFuture<'a, ()> {
        Box::pin(cx.im.account_removed(account))
    }
}

/// The `subscription` attribute of a roster item (RFC 6121 §2.1.2.5): whose presence
/// flows which way between the user and the contact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Subscription {
    /// Neither sees the other's presence.
    #[default]
    None,
    /// The user sees the contact's presence.
    To,
    /// The contact sees the user's presence.
    From,
    /// Both ways.
    Both,
}

impl Subscription {
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }

    pub fn parse(s: &str) -> Option<Subscription> {
        Some(match s {
            "none" => Subscription::None,
            "to" => Subscription::To,
            "from" => Subscription::From,
            "both" => Subscription::Both,
            _ => return None,
        })
    }

    /// The user receives the contact's presence (To or Both).
    pub fn has_to(self) -> bool {
        matches!(self, Subscription::To | Subscription::Both)
    }

    /// The contact receives the user's presence (From or Both).
    pub fn has_from(self) -> bool {
        matches!(self, Subscription::From | Subscription::Both)
    }

    fn with(to: bool, from: bool) -> Subscription {
        match (to, from) {
            (false, false) => Subscription::None,
            (true, false) => Subscription::To,
            (false, true) => Subscription::From,
            (true, true) => Subscription::Both,
        }
    }
}

/// The full subscription state of one roster item from its owner's side (RFC 6121
/// Appendix A.1): the subscription, the two pending flags, and pre-approval (§3.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SubState {
    pub subscription: Subscription,
    /// The owner asked for the contact's presence and has no answer yet (`ask='subscribe'`).
    pub pending_out: bool,
    /// The contact asked for the owner's presence and has no answer yet.
    pub pending_in: bool,
    /// The owner approved the contact in advance (`approved='true'`, §3.4).
    pub approved: bool,
}

impl SubState {
    /// The part a client sees in a roster item (§2.1.2): pending-in is not shown there,
    /// so a change to it alone is not pushed.
    fn visible(self) -> (Subscription, bool, bool) {
        (self.subscription, self.pending_out, self.approved)
    }
}

impl fmt::Display for SubState {
    /// Appendix A.1's names: `None + Pending Out`, `From`, …
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.subscription {
            Subscription::None => "None",
            Subscription::To => "To",
            Subscription::From => "From",
            Subscription::Both => "Both",
        };
        f.write_str(name)?;
        match (self.pending_out, self.pending_in) {
            (true, true) => f.write_str(" + Pending Out+In")?,
            (true, false) => f.write_str(" + Pending Out")?,
            (false, true) => f.write_str(" + Pending In")?,
            (false, false) => {}
        }
        if self.approved {
            f.write_str(" (pre-approved)")?;
        }
        Ok(())
    }
}

/// The four subscription presence types (RFC 6121 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SubType {
    /// Ask for the other's presence.
    Subscribe,
    /// Grant the other access to one's presence.
    Subscribed,
    /// Stop receiving the other's presence.
    Unsubscribe,
    /// Deny or revoke the other's access to one's presence.
    Unsubscribed,
}

impl SubType {
    pub fn as_str(self) -> &'static str {
        match self {
            SubType::Subscribe => "subscribe",
            SubType::Subscribed => "subscribed",
            SubType::Unsubscribe => "unsubscribe",
            SubType::Unsubscribed => "unsubscribed",
        }
    }

    /// The subscription type of a presence `type` attribute, if it is one.
    pub fn parse(s: &str) -> Option<SubType> {
        Some(match s {
            "subscribe" => SubType::Subscribe,
            "subscribed" => SubType::Subscribed,
            "unsubscribe" => SubType::Unsubscribe,
            "unsubscribed" => SubType::Unsubscribed,
            _ => return None,
        })
    }
}

/// Whether the owner of the roster item sent the stanza or receives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Sent by the owner to the contact (Appendix A.2).
    Outbound,
    /// Sent by the contact to the owner (Appendix A.3).
    Inbound,
}

/// What the owner's presence does towards the contact after a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresenceFlow {
    /// The contact may now see the owner: send the owner's current presence (§3.1.5).
    Start,
    /// The contact may no longer see the owner: send unavailable (§3.2.2, §3.3.3).
    Stop,
}

/// What the server does with one subscription stanza.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The item's state afterwards.
    pub state: SubState,
    /// Outbound: route the stanza to the contact. Inbound: deliver it to the owner's
    /// available resources.
    pub deliver: bool,
    /// Push the item to the owner's interested resources (§2.1.6): the visible part changed.
    pub push: bool,
    /// A stanza the owner's server sends to the contact on the owner's behalf: `subscribed`
    /// when the contact asks again for a subscription it already has (§3.1.3) or the owner
    /// pre-approved it (§3.4).
    pub auto_reply: Option<SubType>,
    /// Presence the owner's server now sends (or stops) to the contact.
    pub presence: Option<PresenceFlow>,
}

/// Applies one subscription stanza to the state of the roster item it concerns.
///
/// `before` is the owner's state for the contact (the default state when the owner has no
/// roster item for it). Outbound, the owner is the sender; inbound, the recipient.
pub fn apply(before: SubState, ty: SubType, dir: Direction) -> Outcome {
    let s = before;
    let sub = s.subscription;
    let mut after = s;
    let mut auto_reply = None;
    let deliver;
    match (dir, ty) {
        // A.2.1, §3.1.2: the owner asks for the contact's presence. Always routed, so
        // that the two servers can get back in sync (Appendix A.2).
        (Direction::Outbound, SubType::Subscribe) => {
            if !sub.has_to() {
                after.pending_out = true;
            }
            deliver = true;
        }
        // A.2.2, §3.3.2: the owner cancels its subscription to the contact. Always routed.
        (Direction::Outbound, SubType::Unsubscribe) => {
            after.pending_out = false;
            after.subscription = Subscription::with(false, sub.has_from());
            deliver = true;
        }
        // A.2.3, §3.1.5: the owner approves the contact's request; §3.4: without a
        // request, it pre-approves (not routed: there is nothing to answer yet).
        (Direction::Outbound, SubType::Subscribed) => {
            if s.pending_in {
                after.pending_in = false;
                after.approved = false;
                after.subscription = Subscription::with(sub.has_to(), true);
            } else if !sub.has_from() {
                after.approved = true;
            }
            // Appendix A.2: routed only when the subscription itself changed.
            deliver = after.subscription != sub;
        }
        // A.2.4, §3.2.2: the owner denies a request or revokes the contact's subscription;
        // it also withdraws a pre-approval (§3.4).
        (Direction::Outbound, SubType::Unsubscribed) => {
            after.pending_in = false;
            after.approved = false;
            after.subscription = Subscription::with(sub.has_to(), false);
            deliver = after.subscription != sub || s.pending_in != after.pending_in;
        }
        // A.3.1, §3.1.3: the contact asks for the owner's presence.
        (Direction::Inbound, SubType::Subscribe) => {
            if sub.has_from() {
                // Already subscribed: answer for the owner, bother nobody.
                auto_reply = Some(SubType::Subscribed);
                deliver = false;
            } else if s.approved {
                // §3.4: approved in advance, so accepted without asking the owner.
                after.approved = false;
                after.subscription = Subscription::with(sub.has_to(), true);
                auto_reply = Some(SubType::Subscribed);
                deliver = false;
            } else if s.pending_in {
                // Already asked and not yet answered: stored, shown again at login.
                deliver = false;
            } else {
                after.pending_in = true;
                deliver = true;
            }
        }
        // A.3.2, §3.3.3: the contact no longer wants the owner's presence.
        (Direction::Inbound, SubType::Unsubscribe) => {
            after.pending_in = false;
            after.subscription = Subscription::with(sub.has_to(), false);
            deliver = after.subscription != sub || s.pending_in;
        }
        // A.3.3, §3.1.6: the contact approved the owner's request. Without a pending
        // request of the owner's, it means nothing and is dropped.
        (Direction::Inbound, SubType::Subscribed) => {
            if s.pending_out && !sub.has_to() {
                after.pending_out = false;
                after.subscription = Subscription::with(true, sub.has_from());
                deliver = true;
            } else {
                deliver = false;
            }
        }
        // A.3.4, §3.2.3: the contact denied the owner's request or revoked its
        // subscription.
        (Direction::Inbound, SubType::Unsubscribed) => {
            after.pending_out = false;
            after.subscription = Subscription::with(false, sub.has_from());
            deliver = after.subscription != sub || s.pending_out;
        }
    }
    let presence = match (sub.has_from(), after.subscription.has_from()) {
        (false, true) => Some(PresenceFlow::Start),
        (true, false) => Some(PresenceFlow::Stop),
        _ => None,
    };
    Outcome {
        state: after,
        deliver,
        push: after.visible() != s.visible(),
        auto_reply,
        presence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::{Inbound, Outbound};
    use SubType::{Subscribe, Subscribed, Unsubscribe, Unsubscribed};

    /// Parses Appendix A.1's names: "None", "None+PO", "None+PI", "None+PO+PI", "To",
    /// "To+PI", "From", "From+PO", "Both"; a trailing "+A" marks a pre-approval.
    fn st(name: &str) -> SubState {
        let mut parts = name.split('+');
        let subscription = match parts.next() {
            Some("None") => Subscription::None,
            Some("To") => Subscription::To,
            Some("From") => Subscription::From,
            Some("Both") => Subscription::Both,
            other => panic!("bad state {other:?}"),
        };
        let mut s = SubState {
            subscription,
            ..SubState::default()
        };
        for p in parts {
            match p {
                "PO" => s.pending_out = true,
                "PI" => s.pending_in = true,
                "A" => s.approved = true,
                other => panic!("bad flag {other}"),
            }
        }
        s
    }

    /// The nine states of Appendix A.1, in the RFC's order.
    const STATES: [&str; 9] = [
        "None",
        "None+PO",
        "None+PI",
        "None+PO+PI",
        "To",
        "To+PI",
        "From",
        "From+PO",
        "Both",
    ];

    /// One cell: from state, stanza, direction → new state, delivered/routed, pushed.
    /// `-` as the new state means "no state change" in the RFC's words.
    type Cell = (&'static str, SubType, Direction, &'static str, bool);

    /// Appendix A.2 (outbound) and A.3 (inbound), every row of every table. The third
    /// column is whether the stanza is routed to the contact (outbound) or delivered to
    /// the user (inbound).
    const TABLE: &[Cell] = &[
        // A.2.1 outbound subscribe: always routed.
        ("None", Subscribe, Outbound, "None+PO", true),
        ("None+PO", Subscribe, Outbound, "-", true),
        ("None+PI", Subscribe, Outbound, "None+PO+PI", true),
        ("None+PO+PI", Subscribe, Outbound, "-", true),
        ("To", Subscribe, Outbound, "-", true),
        ("To+PI", Subscribe, Outbound, "-", true),
        ("From", Subscribe, Outbound, "From+PO", true),
        ("From+PO", Subscribe, Outbound, "-", true),
        ("Both", Subscribe, Outbound, "-", true),
        // A.2.2 outbound unsubscribe: always routed.
        ("None", Unsubscribe, Outbound, "-", true),
        ("None+PO", Unsubscribe, Outbound, "None", true),
        ("None+PI", Unsubscribe, Outbound, "-", true),
        ("None+PO+PI", Unsubscribe, Outbound, "None+PI", true),
        ("To", Unsubscribe, Outbound, "None", true),
        ("To+PI", Unsubscribe, Outbound, "None+PI", true),
        ("From", Unsubscribe, Outbound, "-", true),
        ("From+PO", Unsubscribe, Outbound, "From", true),
        ("Both", Unsubscribe, Outbound, "From", true),
        // A.2.3 outbound subscribed: routed only on a state change. Without a pending
        // request it is a pre-approval (§3.4), tested separately below.
        ("None+PI", Subscribed, Outbound, "From", true),
        ("None+PO+PI", Subscribed, Outbound, "From+PO", true),
        ("To+PI", Subscribed, Outbound, "Both", true),
        ("From", Subscribed, Outbound, "-", false),
        ("From+PO", Subscribed, Outbound, "-", false),
        ("Both", Subscribed, Outbound, "-", false),
        // A.2.4 outbound unsubscribed: routed only on a state change.
        ("None", Unsubscribed, Outbound, "-", false),
        ("None+PO", Unsubscribed, Outbound, "-", false),
        ("None+PI", Unsubscribed, Outbound, "None", true),
        ("None+PO+PI", Unsubscribed, Outbound, "None+PO", true),
        ("To", Unsubscribed, Outbound, "-", false),
        ("To+PI", Unsubscribed, Outbound, "To", true),
        ("From", Unsubscribed, Outbound, "None", true),
        ("From+PO", Unsubscribed, Outbound, "None+PO", true),
        ("Both", Unsubscribed, Outbound, "To", true),
        // A.3.1 inbound subscribe.
        ("None", Subscribe, Inbound, "None+PI", true),
        ("None+PO", Subscribe, Inbound, "None+PO+PI", true),
        ("None+PI", Subscribe, Inbound, "-", false),
        ("None+PO+PI", Subscribe, Inbound, "-", false),
        ("To", Subscribe, Inbound, "To+PI", true),
        ("To+PI", Subscribe, Inbound, "-", false),
        ("From", Subscribe, Inbound, "-", false),
        ("From+PO", Subscribe, Inbound, "-", false),
        ("Both", Subscribe, Inbound, "-", false),
        // A.3.2 inbound unsubscribe.
        ("None", Unsubscribe, Inbound, "-", false),
        ("None+PO", Unsubscribe, Inbound, "-", false),
        ("None+PI", Unsubscribe, Inbound, "None", true),
        ("None+PO+PI", Unsubscribe, Inbound, "None+PO", true),
        ("To", Unsubscribe, Inbound, "-", false),
        ("To+PI", Unsubscribe, Inbound, "To", true),
        ("From", Unsubscribe, Inbound, "None", true),
        ("From+PO", Unsubscribe, Inbound, "None+PO", true),
        ("Both", Unsubscribe, Inbound, "To", true),
        // A.3.3 inbound subscribed.
        ("None", Subscribed, Inbound, "-", false),
        ("None+PO", Subscribed, Inbound, "To", true),
        ("None+PI", Subscribed, Inbound, "-", false),
        ("None+PO+PI", Subscribed, Inbound, "To+PI", true),
        ("To", Subscribed, Inbound, "-", false),
        ("To+PI", Subscribed, Inbound, "-", false),
        ("From", Subscribed, Inbound, "-", false),
        ("From+PO", Subscribed, Inbound, "Both", true),
        ("Both", Subscribed, Inbound, "-", false),
        // A.3.4 inbound unsubscribed.
        ("None", Unsubscribed, Inbound, "-", false),
        ("None+PO", Unsubscribed, Inbound, "None", true),
        ("None+PI", Unsubscribed, Inbound, "-", false),
        ("None+PO+PI", Unsubscribed, Inbound, "None+PI", true),
        ("To", Unsubscribed, Inbound, "None", true),
        ("To+PI", Unsubscribed, Inbound, "None+PI", true),
        ("From", Unsubscribed, Inbound, "-", false),
        ("From+PO", Unsubscribed, Inbound, "From", true),
        ("Both", Unsubscribed, Inbound, "From", true),
    ];

    /// The visible part of a state (what a roster push shows).
    fn visible(s: SubState) -> (Subscription, bool, bool) {
        s.visible()
    }

    #[test]
    fn every_cell_of_appendix_a() {
        for &(from, ty, dir, to, deliver) in TABLE {
            let before = st(from);
            let want = if to == "-" { before } else { st(to) };
            let out = apply(before, ty, dir);
            let cell = format!("{dir:?} {} in {before}", ty.as_str());
            assert_eq!(out.state, want, "{cell}: state");
            assert_eq!(out.deliver, deliver, "{cell}: deliver/route");
            // A roster push exactly when the item as a client sees it changed.
            assert_eq!(out.push, visible(want) != visible(before), "{cell}: push");
        }
    }

    #[test]
    fn table_covers_every_state_type_and_direction() {
        for dir in [Outbound, Inbound] {
            for ty in [Subscribe, Subscribed, Unsubscribe, Unsubscribed] {
                for s in STATES {
                    let found = TABLE
                        .iter()
                        .any(|&(f, t, d, _, _)| f == s && t == ty && d == dir);
                    // The three outbound `subscribed` cells without a pending request are
                    // pre-approvals, checked in `pre_approval`.
                    let pre_approval = dir == Outbound
                        && ty == Subscribed
                        && ["None", "None+PO", "To"].contains(&s);
                    assert!(found || pre_approval, "missing cell {dir:?} {ty:?} {s}");
                }
            }
        }
    }

    #[test]
    fn pushes_and_deliveries_in_words() {
        // The RFC's prose for a few cells, as a cross-check of the table's reading.
        // §3.1.3: a first request is delivered but not pushed (pending-in is not shown).
        let o = apply(st("None"), Subscribe, Inbound);
        assert!(o.deliver && !o.push);
        // §3.1.6: an approval is delivered and pushed.
        let o = apply(st("None+PO"), Subscribed, Inbound);
        assert!(o.deliver && o.push);
        assert_eq!(o.state.subscription, Subscription::To);
        // §3.1.2: asking is pushed (ask='subscribe' appears).
        assert!(apply(st("None"), Subscribe, Outbound).push);
    }

    #[test]
    fn auto_replies() {
        // §3.1.3: a contact that already has a subscription gets `subscribed` back.
        for s in ["From", "From+PO", "Both"] {
            let o = apply(st(s), Subscribe, Inbound);
            assert_eq!(o.auto_reply, Some(Subscribed), "{s}");
            assert!(!o.deliver);
        }
        for s in ["None", "None+PO", "To"] {
            assert_eq!(apply(st(s), Subscribe, Inbound).auto_reply, None, "{s}");
        }
    }

    #[test]
    fn pre_approval() {
        // §3.4.1: `subscribed` with no pending request records a pre-approval, pushed
        // (approved='true'), not routed.
        for (from, to) in [("None", "None+A"), ("None+PO", "None+PO+A"), ("To", "To+A")] {
            let o = apply(st(from), Subscribed, Outbound);
            assert_eq!(o.state, st(to), "{from}");
            assert!(o.push && !o.deliver, "{from}");
            assert_eq!(o.presence, None);
        }
        // Pre-approving twice changes nothing.
        let o = apply(st("None+A"), Subscribed, Outbound);
        assert!(!o.push && !o.deliver);
        // §3.4: a pre-approved contact's request is accepted at once: not delivered,
        // answered with `subscribed`, the approval used up, presence starts to flow.
        for (from, to) in [
            ("None+A", "From"),
            ("None+PO+A", "From+PO"),
            ("To+A", "Both"),
        ] {
            let o = apply(st(from), Subscribe, Inbound);
            assert_eq!(o.state, st(to), "{from}");
            assert!(!o.deliver && o.push, "{from}");
            assert_eq!(o.auto_reply, Some(Subscribed), "{from}");
            assert_eq!(o.presence, Some(PresenceFlow::Start), "{from}");
        }
        // `unsubscribed` withdraws a pre-approval; nothing to tell the contact.
        let o = apply(st("None+A"), Unsubscribed, Outbound);
        assert_eq!(o.state, st("None"));
        assert!(o.push && !o.deliver);
    }

    #[test]
    fn presence_starts_and_stops_with_from() {
        // §3.1.5: approving sends the contact the owner's presence.
        assert_eq!(
            apply(st("None+PI"), Subscribed, Outbound).presence,
            Some(PresenceFlow::Start)
        );
        // §3.2.2: revoking sends unavailable.
        assert_eq!(
            apply(st("Both"), Unsubscribed, Outbound).presence,
            Some(PresenceFlow::Stop)
        );
        // §3.3.3: the contact unsubscribing: the owner's presence stops too.
        assert_eq!(
            apply(st("From"), Unsubscribe, Inbound).presence,
            Some(PresenceFlow::Stop)
        );
        // Changes on the To side do not touch the owner's outgoing presence.
        assert_eq!(apply(st("None+PO"), Subscribed, Inbound).presence, None);
        assert_eq!(apply(st("Both"), Unsubscribed, Inbound).presence, None);
    }

    #[test]
    fn names_round_trip() {
        for s in [
            Subscription::None,
            Subscription::To,
            Subscription::From,
            Subscription::Both,
        ] {
            assert_eq!(Subscription::parse(s.as_str()), Some(s));
        }
        assert_eq!(Subscription::parse("remove"), None);
        for t in [Subscribe, Subscribed, Unsubscribe, Unsubscribed] {
            assert_eq!(SubType::parse(t.as_str()), Some(t));
        }
        assert_eq!(SubType::parse("probe"), None);
        assert_eq!(st("None+PO+PI").to_string(), "None + Pending Out+In");
    }
}
