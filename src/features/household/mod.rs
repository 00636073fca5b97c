//! The household: hearth's shared roster group (as Prosody's `mod_groups` and ejabberd's
//! shared roster groups). Its members — the people of the home and its sensors, accounts
//! of this server — see each other with mutual presence, and nobody sends or answers a
//! subscription request for it.
//!
//! Nothing is written into anyone's roster. Through [`Hook::RosterView`] each member's
//! roster *as the server reads it* holds every other member with `subscription='both'`
//! (RFC 6121 §2.1.2.5) in the configured group (`[household] group`), merged with the
//! member's own item for that contact, whose name and groups win (a contact with no group
//! of the user's own is put in the household's) and whose subscription is raised to
//! `both`. Everything that reads a roster through that view acts on it: roster gets and
//! pushes (§2.1.3, §2.1.6), the broadcast of available and unavailable presence to
//! contacts with a `from` subscription and the probes of those with a `to` one at initial
//! presence (§4.2.2, §4.3.1, §4.5.2), the answer to a probe (§4.3.2). So a member's
//! presence reaches the other members exactly as if they had subscribed to each other
//! both ways; no `subscribe` stanza is ever generated. Blocking (XEP-0191) still wins: the
//! presence code asks it for every contact, household or not.
//!
//! What members do with their own rosters does not undo the household: a roster set for
//! a member is pushed back with `subscription='both'`; removing their own item for one
//! (§2.5) or cancelling a stored subscription (§3.2, §3.3) stops no presence the
//! household still allows; a member that has no item of the user's own cannot be
//! removed (`not-allowed`: the owner manages the household); a `subscribe` from one
//! member to another is answered at once with `subscribed`, as for a contact already
//! subscribed (§3.1.3), and never reaches the other.
//!
//! Roster versions (§2.6) stay correct because a membership change is a change to every
//! member's roster: the membership table's triggers bump each member's version, and a
//! renamed group does too ([`Household::show_household_as`], at start-up). Membership is
//! changed by `hearth household add|remove` (another process) or an invite, so the server
//! notices by reading the members every few seconds ([`watch`]) and then does what a
//! subscription change would: roster pushes to the members' interested resources
//! (§2.1.6), and presence started or stopped between the one who joined or left and the
//! others (§3.1.5, §3.2.2).
//!
//! The roster view runs for every presence broadcast and probe, so it reads the members
//! from memory ([`Household::cached_household_members`]): storage keeps the list it last
//! read, forgets it when this process changes the membership (an invite, an account's
//! removal), and the watcher's read refreshes it after another process's change. A roster
//! get reads them afresh ([`Hook::StanzaIn`]), so a client logging in right after
//! `hearth household add` sees the new member at once, and no client caches a stale view
//! under a new roster version; a presence broadcast in the watcher's poll interval after
//! such a change may still go by the members before it, as the change's pushes do.

mod store;
mod watch;

pub use store::Household;
pub use watch::{Follower, Following, POLL, Watcher, watch};

pub use crate::config::HouseholdConfig;

use std::sync::Arc;

use crate::features::roster::RosterItem;
use crate::features::subscription::{SubState, Subscription};
use crate::features::{Hook, HookFuture, Module};
use crate::jid::BareJid;
use crate::router::im::{Im, on_pool};
use crate::storage::StorageError;

/// The household as a module: declares itself and takes part in [`Hook::RosterView`].
pub struct HouseholdModule {
    /// The roster group members are shown in (`[household] group`).
    group: String,
}

impl HouseholdModule {
    pub fn new(config: &HouseholdConfig) -> HouseholdModule {
        HouseholdModule {
            group: config.group.clone(),
        }
    }
}

impl Module for HouseholdModule {
    fn name(&self) -> &'static str {
        "household"
    }

    fn specs(&self) -> &'static [super::Spec] {
        &[super::Spec {
            doc: super::Doc::Hearth("household"),
            title: "Shared roster group",
            version: "",
            status: super::Status::Complete,
            note: "members see each other with `subscription='both'` and mutual presence \
                   (RFC 6121 §2, §4) without subscribing, as Prosody's mod_groups does; \
                   `hearth household add`, `remove`, `list`",
        }]
    }

    fn hooks(&self) -> &'static [Hook] {
        &[Hook::StanzaIn, Hook::RosterView]
    }

    /// A roster get (RFC 6121 §2.1.3) reads the members afresh before it is answered:
    /// what a client caches under a roster version must not be a view the watcher has
    /// not caught up with (`hearth household add` just before a login). Everything else
    /// passes untouched.
    fn filter_in<'a>(
        &'a self,
        cx: &'a super::HookCx<'a>,
        stanza: &'a crate::stanza::Stanza,
        _access: Option<super::Access>,
        _out: &'a mut String,
    ) -> HookFuture<'a, super::Verdict> {
        Box::pin(async move {
            let is_roster_get = cx.from.is_local()
                && stanza.iq_type() == Some(crate::stanza::IqType::Get)
                && stanza
                    .iq_payload()
                    .is_some_and(|p| p.is("query", crate::features::roster::NS_ROSTER));
            if is_roster_get && let Err(e) = on_pool(cx.im.storage, |s| s.household_members()).await
            {
                // The roster get reads them again and answers the error itself.
                log::error!("household: storage: {e}");
            }
            super::Verdict::Pass
        })
    }

    fn roster_view<'a>(
        &'a self,
        im: Im<'a>,
        user: &'a str,
        items: &'a mut Vec<RosterItem>,
    ) -> HookFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            let members = members(im).await?;
            if !is_member(&members, user) {
                return Ok(());
            }
            for m in members.iter().filter(|m| *m != user) {
                // Stored localparts were normalized on the way in; one that no longer
                // makes a JID (a hand-edited row) is skipped.
                let Ok(jid) = BareJid::new(Some(m), im.router.domain()) else {
                    log::warn!("household: skipping member {m:?}, not a valid address");
                    continue;
                };
                merge_member(items, jid, &self.group);
            }
            Ok(())
        })
    }

    fn subscription_view<'a>(
        &'a self,
        im: Im<'a>,
        user: &'a str,
        contact: &'a BareJid,
        state: &'a mut SubState,
    ) -> HookFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            if state.subscription == Subscription::Both || user_of(im, contact) == Some(user) {
                return Ok(());
            }
            let Some(other) = user_of(im, contact).map(str::to_owned) else {
                return Ok(());
            };
            let members = members(im).await?;
            if is_member(&members, user) && is_member(&members, &other) {
                state.subscription = Subscription::Both;
                state.pending_out = false;
            }
            Ok(())
        })
    }
}

/// The members, sorted: as last read when storage still has them (every presence
/// broadcast and probe reads a roster view, so this is the common case), otherwise read
/// now (at start, after a change made by this process).
async fn members(im: Im<'_>) -> Result<Arc<[String]>, StorageError> {
    if let Some(members) = im.storage.cached_household_members() {
        return Ok(members);
    }
    let read = on_pool(im.storage, |s| s.household_members()).await?;
    Ok(Arc::from(read))
}

fn is_member(members: &[String], user: &str) -> bool {
    members.binary_search_by(|m| m.as_str().cmp(user)).is_ok()
}

/// The localpart of `jid` if it is an account of this server.
fn user_of<'j>(im: Im<'_>, jid: &'j BareJid) -> Option<&'j str> {
    if jid.domain() == im.router.domain() {
        jid.local()
    } else {
        None
    }
}

/// Puts the household member `contact` into `items` (sorted by JID, and kept so): the
/// user's own item for it keeps its name and groups (the household's group when it has
/// none) with its subscription raised to `both` and nothing pending out (§2.1.2.2: an
/// `ask` means no answer yet, and there is nothing left to answer); otherwise a new item
/// with `subscription='both'` in `group`.
pub fn merge_member(items: &mut Vec<RosterItem>, contact: BareJid, group: &str) {
    match items.binary_search_by(|i| i.jid.as_str().cmp(contact.as_str())) {
        Ok(i) => {
            if let Some(item) = items.get_mut(i) {
                item.state.subscription = Subscription::Both;
                item.state.pending_out = false;
                if item.groups.is_empty() {
                    item.groups.push(group.to_owned());
                }
            }
        }
        Err(i) => items.insert(
            i,
            RosterItem {
                jid: contact,
                name: None,
                state: SubState {
                    subscription: Subscription::Both,
                    ..SubState::default()
                },
                groups: vec![group.to_owned()],
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> BareJid {
        BareJid::parse(s).unwrap()
    }

    #[test]
    fn merge_adds_members_in_order_and_keeps_the_users_own_item() {
        let mut items = vec![
            RosterItem {
                jid: jid("bob@home.example"),
                name: Some("Dad".into()),
                state: SubState {
                    subscription: Subscription::To,
                    pending_out: false,
                    pending_in: false,
                    approved: true,
                },
                groups: vec!["Family".into()],
            },
            RosterItem {
                jid: jid("dave@home.example"),
                name: None,
                state: SubState {
                    pending_out: true,
                    ..SubState::default()
                },
                groups: vec![],
            },
            RosterItem {
                jid: jid("zed@elsewhere.example"),
                name: None,
                state: SubState::default(),
                groups: vec![],
            },
        ];
        for m in ["carol", "bob", "dave", "alice"] {
            merge_member(&mut items, jid(&format!("{m}@home.example")), "Household");
        }
        let jids: Vec<&str> = items.iter().map(|i| i.jid.as_str()).collect();
        assert_eq!(
            jids,
            [
                "alice@home.example",
                "bob@home.example",
                "carol@home.example",
                "dave@home.example",
                "zed@elsewhere.example"
            ]
        );
        let [alice, bob, carol, dave, zed] = items.as_slice() else {
            panic!("five items")
        };
        assert_eq!(alice.state.subscription, Subscription::Both);
        assert_eq!(alice.groups, ["Household"]);
        // The user's own name and groups win; the subscription is at least both.
        assert_eq!(bob.name.as_deref(), Some("Dad"));
        assert_eq!(bob.groups, ["Family"]);
        assert_eq!(bob.state.subscription, Subscription::Both);
        assert!(bob.state.approved);
        assert_eq!(carol.groups, ["Household"]);
        // A pending request of the user's own is answered by the household.
        assert!(!dave.state.pending_out);
        assert_eq!(dave.groups, ["Household"]);
        assert_eq!(zed.state.subscription, Subscription::None);
    }
}
