//! Rosters (RFC 6121 §2), their versions (§2.6) and unanswered subscription requests
//! (Pending-In, §3.1.3).
//!
//! A subscription change is read, decided and written in one transaction
//! ([`Roster::update_subscription`]), so two stanzas about the same contact arriving on two
//! connections at once cannot both act on the old state.

use crate::features::subscription::{SubState, Subscription};
use crate::jid::BareJid;
use crate::storage::{OverQuota, Quota, Storage, StorageError, stored_bytes_in};
use rusqlite::{Connection, OptionalExtension, params};

/// One roster item (RFC 6121 §2.1.2) as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RosterItem {
    /// The contact's bare JID (§2.1.2.3: roster items are bare JIDs).
    pub jid: BareJid,
    /// The user's name for the contact.
    pub name: Option<String>,
    /// Subscription, pending flags and pre-approval.
    pub state: SubState,
    /// Group names, sorted, without duplicates.
    pub groups: Vec<String>,
}

/// A roster item after a change, with the roster version that change produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RosterChange {
    pub item: RosterItem,
    pub version: u64,
}

/// The result of [`Roster::update_subscription`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionChange {
    pub before: SubState,
    pub after: SubState,
    /// The roster item afterwards, if the user has one for the contact.
    pub item: Option<RosterItem>,
    /// The new roster version when the visible item changed (a push is due).
    pub version: Option<u64>,
}

/// Users' rosters (RFC 6121 §2) and unanswered subscription requests (§3.1.3).
///
/// `user` is a normalized localpart; `jid` a contact's bare JID.
pub trait Roster {
    /// The roster version (§2.6) and every item, sorted by JID.
    fn roster(&self, user: &str) -> Result<(u64, Vec<RosterItem>), StorageError>;
    /// The current roster version (0 for a roster never changed).
    fn roster_version(&self, user: &str) -> Result<u64, StorageError>;
    fn roster_item(&self, user: &str, jid: &BareJid) -> Result<Option<RosterItem>, StorageError>;
    /// The subscription state for `jid`, also when there is only a pending request.
    fn sub_state(&self, user: &str, jid: &BareJid) -> Result<SubState, StorageError>;
    /// Adds or updates an item's name and groups (§2.3), keeping its subscription.
    /// Refused (nothing written) when a new item would pass `quota.roster_items`, or the
    /// write would take the account's stored bytes past `quota.stored_bytes`.
    fn set_roster_item(
        &self,
        user: &str,
        jid: &BareJid,
        name: Option<&str>,
        groups: &[String],
        quota: &Quota,
    ) -> Result<Result<RosterChange, OverQuota>, StorageError>;
    /// Deletes an item and any pending request from it (§2.5); `Ok(None)` if absent.
    fn remove_roster_item(
        &self,
        user: &str,
        jid: &BareJid,
    ) -> Result<Option<RosterChange>, StorageError>;
    /// Reads the subscription state for `jid`, lets `decide` compute the next one, and
    /// writes it, in one transaction. A new pending-in stores `request`'s stanza (to
    /// deliver again at login) if it fits its quota: fewer requests waiting than
    /// `quota.roster_items`, and the account's stored bytes within `quota.stored_bytes`;
    /// otherwise nothing is written. A cleared pending-in deletes the stored request.
    ///
    /// The bound matters once other servers send requests (federation): a remote server
    /// can make up any number of senders, and each waiting request is a stored row.
    fn update_subscription(
        &self,
        user: &str,
        jid: &BareJid,
        decide: &mut dyn FnMut(SubState) -> SubState,
        request: Option<(&str, &Quota)>,
    ) -> Result<Result<SubscriptionChange, OverQuota>, StorageError>;
    /// The stored subscription requests (serialized presence stanzas), oldest first.
    fn subscription_requests(&self, user: &str) -> Result<Vec<String>, StorageError>;
}

impl Storage {
    fn bump_version(&self, conn: &Connection, user: &str) -> Result<u64, StorageError> {
        let v: i64 = conn
            .query_row(
                "INSERT INTO roster_versions (localpart, version) VALUES (?1, 1)
                 ON CONFLICT (localpart) DO UPDATE SET version = version + 1
                 RETURNING version",
                [user],
                |r| r.get(0),
            )
            .map_err(self.sqlite_err("bump the roster version"))?;
        Ok(u64::try_from(v).unwrap_or(0))
    }

    fn version_in(&self, conn: &Connection, user: &str) -> Result<u64, StorageError> {
        let v: Option<i64> = conn
            .prepare_cached("SELECT version FROM roster_versions WHERE localpart = ?1")
            .and_then(|mut st| st.query_row([user], |r| r.get(0)).optional())
            .map_err(self.sqlite_err("read the roster version"))?;
        Ok(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
    }

    /// The item's row and groups, or `None`; `pending_in` filled from the requests.
    fn item_in(
        &self,
        conn: &Connection,
        user: &str,
        jid: &BareJid,
    ) -> Result<Option<RosterItem>, StorageError> {
        let row: Option<(Option<String>, String, bool, bool)> = conn
            .prepare_cached(
                "SELECT name, subscription, pending_out, approved FROM roster_items
                 WHERE localpart = ?1 AND jid = ?2",
            )
            .and_then(|mut st| {
                st.query_row([user, jid.as_str()], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()
            })
            .map_err(self.sqlite_err("read a roster item"))?;
        let pending_in = self.pending_in(conn, user, jid)?;
        let Some((name, sub, pending_out, approved)) = row else {
            return Ok(None);
        };
        Ok(Some(RosterItem {
            jid: jid.clone(),
            name,
            state: SubState {
                subscription: Subscription::parse(&sub).unwrap_or_default(),
                pending_out,
                pending_in,
                approved,
            },
            groups: self.groups_in(conn, user, jid.as_str())?,
        }))
    }

    fn pending_in(
        &self,
        conn: &Connection,
        user: &str,
        jid: &BareJid,
    ) -> Result<bool, StorageError> {
        conn.prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM subscription_requests WHERE localpart = ?1 AND jid = ?2)",
        )
        .and_then(|mut st| st.query_row([user, jid.as_str()], |r| r.get(0)))
        .map_err(self.sqlite_err("read a subscription request"))
    }

    fn groups_in(
        &self,
        conn: &Connection,
        user: &str,
        jid: &str,
    ) -> Result<Vec<String>, StorageError> {
        let mut stmt = conn
            .prepare_cached(
                "SELECT grp FROM roster_groups WHERE localpart = ?1 AND jid = ?2 ORDER BY grp",
            )
            .map_err(self.sqlite_err("read roster groups"))?;
        let rows = stmt
            .query_map([user, jid], |r| r.get(0))
            .map_err(self.sqlite_err("read roster groups"))?;
        rows.collect::<Result<Vec<String>, _>>()
            .map_err(self.sqlite_err("read roster groups"))
    }

    fn write_state(
        &self,
        conn: &Connection,
        user: &str,
        jid: &BareJid,
        s: SubState,
    ) -> Result<(), StorageError> {
        conn.execute(
            "INSERT INTO roster_items (localpart, jid, subscription, pending_out, approved)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (localpart, jid) DO UPDATE SET subscription = ?3, pending_out = ?4,
                 approved = ?5",
            params![
                user,
                jid.as_str(),
                s.subscription.as_str(),
                s.pending_out,
                s.approved
            ],
        )
        .map_err(self.sqlite_err("write a roster item"))?;
        Ok(())
    }
}

impl Roster for Storage {
    fn roster(&self, user: &str) -> Result<(u64, Vec<RosterItem>), StorageError> {
        // Three queries whatever the roster's size: it is read at every presence change.
        let conn = self.conn();
        let version = self.version_in(&conn, user)?;
        let read = self.sqlite_err("read a roster");
        let mut items: Vec<RosterItem> = Vec::new();
        {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT jid, name, subscription, pending_out, approved FROM roster_items
                     WHERE localpart = ?1 ORDER BY jid",
                )
                .map_err(self.sqlite_err("read a roster"))?;
            let rows = stmt
                .query_map([user], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, bool>(3)?,
                        r.get::<_, bool>(4)?,
                    ))
                })
                .map_err(self.sqlite_err("read a roster"))?;
            for row in rows {
                let (j, name, sub, pending_out, approved) =
                    row.map_err(self.sqlite_err("read a roster"))?;
                // Written from a parsed BareJid, so it parses; a hand-edited bad row is
                // skipped rather than failing the whole roster.
                let Ok(jid) = BareJid::parse(&j) else {
                    log::warn!("roster of {user}: skipping invalid JID {j:?}");
                    continue;
                };
                items.push(RosterItem {
                    jid,
                    name,
                    state: SubState {
                        subscription: Subscription::parse(&sub).unwrap_or_default(),
                        pending_out,
                        pending_in: false,
                        approved,
                    },
                    groups: Vec::new(),
                });
            }
        }
        let position =
            |items: &[RosterItem], j: &str| items.binary_search_by(|i| i.jid.as_str().cmp(j)).ok();
        let mut stmt = conn
            .prepare_cached(
                "SELECT jid, grp FROM roster_groups WHERE localpart = ?1 ORDER BY jid, grp",
            )
            .map_err(self.sqlite_err("read roster groups"))?;
        let rows = stmt
            .query_map([user], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(self.sqlite_err("read roster groups"))?;
        for row in rows {
            let (j, g) = row.map_err(self.sqlite_err("read roster groups"))?;
            if let Some(i) = position(&items, &j) {
                items[i].groups.push(g);
            }
        }
        let mut stmt = conn
            .prepare_cached("SELECT jid FROM subscription_requests WHERE localpart = ?1")
            .map_err(read)?;
        let rows = stmt
            .query_map([user], |r| r.get::<_, String>(0))
            .map_err(self.sqlite_err("read subscription requests"))?;
        for row in rows {
            let j = row.map_err(self.sqlite_err("read subscription requests"))?;
            if let Some(i) = position(&items, &j) {
                items[i].state.pending_in = true;
            }
        }
        Ok((version, items))
    }

    fn roster_version(&self, user: &str) -> Result<u64, StorageError> {
        self.version_in(&self.conn(), user)
    }

    fn roster_item(&self, user: &str, jid: &BareJid) -> Result<Option<RosterItem>, StorageError> {
        self.item_in(&self.conn(), user, jid)
    }

    fn sub_state(&self, user: &str, jid: &BareJid) -> Result<SubState, StorageError> {
        let conn = self.conn();
        Ok(match self.item_in(&conn, user, jid)? {
            Some(item) => item.state,
            None => SubState {
                pending_in: self.pending_in(&conn, user, jid)?,
                ..SubState::default()
            },
        })
    }

    fn set_roster_item(
        &self,
        user: &str,
        jid: &BareJid,
        name: Option<&str>,
        groups: &[String],
        quota: &Quota,
    ) -> Result<Result<RosterChange, OverQuota>, StorageError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(self.sqlite_err("start a transaction"))?;
        let used_before =
            stored_bytes_in(&tx, user).map_err(self.sqlite_err("count stored bytes"))?;
        let exists = self.item_in(&tx, user, jid)?.is_some();
        if !exists {
            let count: i64 = tx
                .query_row(
                    "SELECT COUNT(*) FROM roster_items WHERE localpart = ?1",
                    [user],
                    |r| r.get(0),
                )
                .map_err(self.sqlite_err("count roster items"))?;
            if usize::try_from(count).unwrap_or(usize::MAX) >= quota.roster_items {
                return Ok(Err(OverQuota::Items));
            }
        }
        tx.execute(
            "INSERT INTO roster_items (localpart, jid, name) VALUES (?1, ?2, ?3)
             ON CONFLICT (localpart, jid) DO UPDATE SET name = ?3",
            params![user, jid.as_str(), name],
        )
        .map_err(self.sqlite_err("write a roster item"))?;
        tx.execute(
            "DELETE FROM roster_groups WHERE localpart = ?1 AND jid = ?2",
            [user, jid.as_str()],
        )
        .map_err(self.sqlite_err("replace roster groups"))?;
        for g in groups {
            tx.execute(
                "INSERT OR IGNORE INTO roster_groups (localpart, jid, grp) VALUES (?1, ?2, ?3)",
                [user, jid.as_str(), g],
            )
            .map_err(self.sqlite_err("write a roster group"))?;
        }
        // A change that makes the account smaller (a shorter name, fewer groups) is
        // always allowed; dropping the transaction undoes a refused one.
        let used = stored_bytes_in(&tx, user).map_err(self.sqlite_err("count stored bytes"))?;
        if used > quota.stored_bytes && used > used_before {
            return Ok(Err(OverQuota::Bytes));
        }
        let version = self.bump_version(&tx, user)?;
        let item = self.item_in(&tx, user, jid)?.ok_or_else(|| {
            self.sqlite_err("read back a roster item")(rusqlite::Error::QueryReturnedNoRows)
        })?;
        tx.commit()
            .map_err(self.sqlite_err("commit a roster change"))?;
        Ok(Ok(RosterChange { item, version }))
    }

    fn remove_roster_item(
        &self,
        user: &str,
        jid: &BareJid,
    ) -> Result<Option<RosterChange>, StorageError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(self.sqlite_err("start a transaction"))?;
        let Some(item) = self.item_in(&tx, user, jid)? else {
            return Ok(None);
        };
        tx.execute(
            "DELETE FROM roster_items WHERE localpart = ?1 AND jid = ?2",
            [user, jid.as_str()],
        )
        .map_err(self.sqlite_err("delete a roster item"))?;
        tx.execute(
            "DELETE FROM subscription_requests WHERE localpart = ?1 AND jid = ?2",
            [user, jid.as_str()],
        )
        .map_err(self.sqlite_err("delete a subscription request"))?;
        let version = self.bump_version(&tx, user)?;
        tx.commit()
            .map_err(self.sqlite_err("commit a roster removal"))?;
        Ok(Some(RosterChange { item, version }))
    }

    fn update_subscription(
        &self,
        user: &str,
        jid: &BareJid,
        decide: &mut dyn FnMut(SubState) -> SubState,
        request: Option<(&str, &Quota)>,
    ) -> Result<Result<SubscriptionChange, OverQuota>, StorageError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(self.sqlite_err("start a transaction"))?;
        let existing = self.item_in(&tx, user, jid)?;
        let before = match &existing {
            Some(item) => item.state,
            None => SubState {
                pending_in: self.pending_in(&tx, user, jid)?,
                ..SubState::default()
            },
        };
        let after = decide(before);
        let is_new_request = after.pending_in && !before.pending_in;
        if let (true, Some((stanza, quota))) = (is_new_request, request) {
            let waiting: i64 = tx
                .prepare_cached("SELECT COUNT(*) FROM subscription_requests WHERE localpart = ?1")
                .and_then(|mut st| st.query_row([user], |r| r.get(0)))
                .map_err(self.sqlite_err("count subscription requests"))?;
            if usize::try_from(waiting).unwrap_or(usize::MAX) >= quota.roster_items {
                return Ok(Err(OverQuota::Items));
            }
            let used = stored_bytes_in(&tx, user).map_err(self.sqlite_err("count stored bytes"))?;
            let len = u64::try_from(stanza.len()).unwrap_or(u64::MAX);
            if used.saturating_add(len) > quota.stored_bytes {
                return Ok(Err(OverQuota::Bytes));
            }
        }
        let visible = |s: SubState| (s.subscription, s.pending_out, s.approved);
        let mut version = None;
        if visible(after) != visible(before) {
            self.write_state(&tx, user, jid, after)?;
            version = Some(self.bump_version(&tx, user)?);
        }
        if is_new_request {
            tx.execute(
                // An upsert, not INSERT OR REPLACE: REPLACE's implicit delete would skip
                // the stored-bytes trigger (migrations/0003_usage.sql).
                "INSERT INTO subscription_requests (localpart, jid, stanza, received_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (localpart, jid) DO UPDATE SET stanza = ?3, received_at = ?4",
                params![
                    user,
                    jid.as_str(),
                    request.map_or("", |(stanza, _)| stanza),
                    crate::storage::unix_now()
                ],
            )
            .map_err(self.sqlite_err("store a subscription request"))?;
        } else if !after.pending_in && before.pending_in {
            tx.execute(
                "DELETE FROM subscription_requests WHERE localpart = ?1 AND jid = ?2",
                [user, jid.as_str()],
            )
            .map_err(self.sqlite_err("delete a subscription request"))?;
        }
        let item = self.item_in(&tx, user, jid)?;
        tx.commit()
            .map_err(self.sqlite_err("commit a subscription change"))?;
        Ok(Ok(SubscriptionChange {
            before,
            after,
            item,
            version,
        }))
    }

    fn subscription_requests(&self, user: &str) -> Result<Vec<String>, StorageError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT stanza FROM subscription_requests WHERE localpart = ?1
                 ORDER BY received_at, jid",
            )
            .map_err(self.sqlite_err("read subscription requests"))?;
        let rows = stmt
            .query_map([user], |r| r.get(0))
            .map_err(self.sqlite_err("read subscription requests"))?;
        rows.collect::<Result<Vec<String>, _>>()
            .map_err(self.sqlite_err("read subscription requests"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::subscription::{Direction, SubType, apply};
    use crate::storage::Accounts;

    fn store() -> (tempfile::TempDir, Storage) {
        crate::storage::test_store(&["alice"])
    }

    fn bob() -> BareJid {
        BareJid::parse("bob@home.example").unwrap()
    }

    #[test]
    fn set_get_remove_with_groups_and_versions() {
        let (_d, s) = store();
        assert_eq!(s.roster("alice").unwrap(), (0, vec![]));
        let groups = vec!["Family".to_string(), "B".to_string()];
        let c = s
            .set_roster_item("alice", &bob(), Some("Bob"), &groups, &max_items(10))
            .unwrap()
            .unwrap();
        assert_eq!(c.version, 1);
        assert_eq!(c.item.name.as_deref(), Some("Bob"));
        assert_eq!(c.item.groups, ["B", "Family"]);
        assert_eq!(c.item.state, SubState::default());
        let (v, items) = s.roster("alice").unwrap();
        assert_eq!((v, items.len()), (1, 1));
        assert_eq!(items[0], c.item);
        // Several items, each with its own groups and pending-in, read in one go.
        let carol = BareJid::parse("carol@home.example").unwrap();
        s.set_roster_item("alice", &carol, None, &["Z".into()], &max_items(10))
            .unwrap()
            .unwrap();
        s.update_subscription(
            "alice",
            &carol,
            &mut |st| apply(st, SubType::Subscribe, Direction::Inbound).state,
            Some(("<presence/>", &Quota::DEFAULT)),
        )
        .unwrap()
        .unwrap();
        let (_, items) = s.roster("alice").unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].groups, ["B", "Family"]);
        assert!(!items[0].state.pending_in);
        assert_eq!(items[1].groups, ["Z"]);
        assert!(items[1].state.pending_in);
        for it in &items {
            assert_eq!(Some(it), s.roster_item("alice", &it.jid).unwrap().as_ref());
        }
        s.remove_roster_item("alice", &carol).unwrap();
        // Renaming keeps the subscription and replaces the groups.
        s.update_subscription(
            "alice",
            &bob(),
            &mut |st| apply(st, SubType::Subscribe, Direction::Outbound).state,
            None,
        )
        .unwrap()
        .unwrap();
        let c = s
            .set_roster_item("alice", &bob(), None, &[], &max_items(10))
            .unwrap()
            .unwrap();
        assert_eq!(c.version, 5);
        assert!(c.item.state.pending_out);
        assert_eq!(c.item.name, None);
        assert!(c.item.groups.is_empty());
        let removed = s.remove_roster_item("alice", &bob()).unwrap().unwrap();
        assert_eq!(removed.version, 6);
        assert_eq!(s.remove_roster_item("alice", &bob()).unwrap(), None);
        assert_eq!(s.roster("alice").unwrap(), (6, vec![]));
    }

    fn max_items(n: usize) -> Quota {
        Quota {
            roster_items: n,
            ..Quota::DEFAULT
        }
    }

    #[test]
    fn roster_size_limit() {
        let (_d, s) = store();
        let carol = BareJid::parse("carol@home.example").unwrap();
        let q = max_items(1);
        assert!(
            s.set_roster_item("alice", &bob(), None, &[], &q)
                .unwrap()
                .is_ok()
        );
        // Updating an existing item is fine at the limit; a new one is not.
        assert!(
            s.set_roster_item("alice", &bob(), Some("B"), &[], &q)
                .unwrap()
                .is_ok()
        );
        assert_eq!(
            s.set_roster_item("alice", &carol, None, &[], &q).unwrap(),
            Err(OverQuota::Items)
        );
    }

    #[test]
    fn roster_bytes_limit_counts_names_groups_and_requests() {
        let (_d, s) = store();
        // "bob@home.example" is 16 bytes, "Bob" 3, "Family" 6: 25.
        let q = Quota {
            stored_bytes: 30,
            ..Quota::DEFAULT
        };
        s.set_roster_item("alice", &bob(), Some("Bob"), &["Family".into()], &q)
            .unwrap()
            .unwrap();
        assert_eq!(s.stored_bytes("alice").unwrap(), 25);
        // A longer name would pass 30: refused, the old item kept as it was.
        assert_eq!(
            s.set_roster_item(
                "alice",
                &bob(),
                Some("Bobby Tables"),
                &["Family".into()],
                &q
            )
            .unwrap(),
            Err(OverQuota::Bytes)
        );
        let kept = s.roster_item("alice", &bob()).unwrap().unwrap();
        assert_eq!(
            (kept.name.as_deref(), kept.groups.as_slice()),
            (Some("Bob"), ["Family".to_string()].as_slice())
        );
        // Shrinking is always allowed, even above the limit.
        let tight = Quota {
            stored_bytes: 1,
            ..Quota::DEFAULT
        };
        s.set_roster_item("alice", &bob(), None, &[], &tight)
            .unwrap()
            .unwrap();
        assert_eq!(s.stored_bytes("alice").unwrap(), 16);
        // A stored subscription request counts, and a replaced one counts once.
        let carol = BareJid::parse("carol@home.example").unwrap();
        for req in ["<presence type='subscribe'/>", "<presence/>"] {
            s.update_subscription(
                "alice",
                &carol,
                &mut |st| SubState {
                    pending_in: true,
                    ..st
                },
                Some((req, &Quota::DEFAULT)),
            )
            .unwrap()
            .unwrap();
        }
        assert_eq!(
            s.subscription_requests("alice").unwrap(),
            ["<presence type='subscribe'/>"]
        );
        assert_eq!(s.stored_bytes("alice").unwrap(), 16 + 28);
        // Denying the request forgets it; removing the item frees the rest.
        s.update_subscription(
            "alice",
            &carol,
            &mut |st| SubState {
                pending_in: false,
                ..st
            },
            None,
        )
        .unwrap()
        .unwrap();
        s.remove_roster_item("alice", &bob()).unwrap();
        assert_eq!(s.stored_bytes("alice").unwrap(), 0);
    }

    #[test]
    fn pending_in_is_a_stored_request_not_an_item() {
        let (_d, s) = store();
        let req = "<presence type='subscribe' from='bob@home.example'/>";
        let c = s
            .update_subscription(
                "alice",
                &bob(),
                &mut |st| apply(st, SubType::Subscribe, Direction::Inbound).state,
                Some((req, &Quota::DEFAULT)),
            )
            .unwrap()
            .unwrap();
        assert!(c.after.pending_in && c.item.is_none() && c.version.is_none());
        assert_eq!(s.roster("alice").unwrap().1, vec![]);
        assert_eq!(s.subscription_requests("alice").unwrap(), [req]);
        assert!(s.sub_state("alice", &bob()).unwrap().pending_in);
        // Approving creates the item (From) and forgets the request.
        let c = s
            .update_subscription(
                "alice",
                &bob(),
                &mut |st| apply(st, SubType::Subscribed, Direction::Outbound).state,
                None,
            )
            .unwrap()
            .unwrap();
        assert_eq!(c.after.subscription, Subscription::From);
        assert_eq!(c.version, Some(1));
        assert_eq!(c.item.unwrap().state.subscription, Subscription::From);
        assert!(s.subscription_requests("alice").unwrap().is_empty());
    }

    #[test]
    fn deleted_account_takes_its_roster() {
        let (_d, s) = store();
        s.set_roster_item("alice", &bob(), None, &["G".into()], &max_items(10))
            .unwrap()
            .unwrap();
        s.delete_account("alice").unwrap();
        s.create_account("alice", "pw").unwrap();
        assert_eq!(s.roster("alice").unwrap(), (0, vec![]));
    }
}
