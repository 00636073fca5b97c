//! XEP-0012: Last Activity — how long ago a contact was last online, and what its status
//! said then: "last seen" for people and for sensors. Sans-IO: the answer from what the
//! router and storage know; `router::im` looks those up and checks the subscription.

mod lookup;
mod store;

pub use store::LastActivity;

use super::{Access, Announce, Doc, IqCx, IqFuture, IqRoute, Module, On, Spec, Status, Target};
use crate::stanza::{IqType, Stanza, StanzaCondition, StanzaError};
use crate::xml::Element;

/// The last-activity namespace (XEP-0012 §2).
pub const NS_LAST: &str = "jabber:iq:last";

/// XEP-0012 for accounts: the server answers for an account's bare JID (§4). The server
/// itself tells no uptime, so `jabber:iq:last` is not on the server's disco.
pub struct Last;

impl Module for Last {
    fn name(&self) -> &'static str {
        "last"
    }

    fn specs(&self) -> &'static [Spec] {
        &[Spec {
            doc: Doc::Xep(12),
            title: "Last Activity",
            version: "2.0",
            status: Status::Partial,
            note: "an account's last logout and status (§4), for those who see its presence; \
                   no server uptime",
        }]
    }

    fn disco(&self) -> &'static [Announce] {
        &[Announce {
            var: NS_LAST,
            on: On::Account,
        }]
    }

    fn iqs(&self) -> &'static [IqRoute] {
        &[IqRoute {
            ns: NS_LAST,
            on: On::Account,
            access: Access::Module,
        }]
    }

    fn hooks(&self) -> &'static [super::Hook] {
        &[super::Hook::ResourceUnavailable]
    }

    /// §4: when the account's last resource goes offline, when and with what status.
    fn resource_unavailable<'a>(
        &'a self,
        cx: &'a super::HookCx<'a>,
        presence: &'a Element,
        others_available: bool,
    ) -> super::HookFuture<'a, ()> {
        Box::pin(async move {
            if let (false, Some(from)) = (others_available, cx.from.session()) {
                cx.im
                    .record_last_activity(from, super::presence::status(presence))
                    .await;
            }
        })
    }

    fn handle_iq<'a>(&'a self, cx: &'a IqCx<'a>, iq: &'a Stanza) -> IqFuture<'a> {
        Box::pin(async move {
            let (Target::Account(to), Some(IqType::Get)) = (cx.target, iq.iq_type()) else {
                return Err(StanzaError::new(StanzaCondition::ServiceUnavailable));
            };
            cx.im.last_activity(&cx.from.bare(), to).await.map(Some)
        })
    }
}

/// The answer about an account (XEP-0012 §4): `seconds='0'` while any resource is
/// available, else the seconds since the last one went offline with its status as text.
/// Never online since records began: `item-not-found`.
pub fn answer(
    is_available: bool,
    last: Option<(i64, String)>,
    now: i64,
) -> Result<Element, StanzaError> {
    let q = Element::new("query", NS_LAST);
    if is_available {
        return Ok(q.with_attr("seconds", "0"));
    }
    let Some((at, status)) = last else {
        return Err(StanzaError::new(StanzaCondition::ItemNotFound)
            .with_text("no record of this account being online"));
    };
    let secs = now.saturating_sub(at).max(0);
    let mut q = q.with_attr("seconds", secs.to_string());
    q.push_text(status);
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn online_offline_and_unknown() {
        assert_eq!(answer(true, None, 100).unwrap().attr("seconds"), Some("0"));
        let q = answer(false, Some((40, "21.5 °C".into())), 100).unwrap();
        assert_eq!(q.attr("seconds"), Some("60"));
        assert_eq!(q.text(), "21.5 °C");
        // A clock that went backwards is not a negative duration.
        assert_eq!(
            answer(false, Some((200, String::new())), 100)
                .unwrap()
                .attr("seconds"),
            Some("0")
        );
        assert_eq!(
            answer(false, None, 100).unwrap_err().condition,
            StanzaCondition::ItemNotFound
        );
    }
}
