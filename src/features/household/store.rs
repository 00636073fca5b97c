//! The household's members (migrations/0004_household.sql).
//!
//! Every membership change takes a new roster version for each member, and for the one
//! added or removed (RFC 6121 §2.6): the table's triggers do it in the same transaction,
//! whoever writes (the admin CLI, an invite, an account's deletion).

use std::sync::Arc;

use crate::storage::{Storage, StorageError};
use rusqlite::{OptionalExtension, params};

/// The household's members, by normalized localpart (RFC 7622 §3.3).
///
/// This is the API for anything that puts accounts in the household, e.g. invites:
/// [`Household::add_to_household`] right after the account is created. The running
/// server notices within a poll interval (`features::household::watch`) and tells the
/// members' online clients (roster pushes, presence).
pub trait Household {
    /// Every member, sorted, read from the database (and kept for
    /// [`Household::cached_household_members`]).
    fn household_members(&self) -> Result<Vec<String>, StorageError>;
    /// The members as last read, without touching the database: `None` when nothing was
    /// read yet or this process changed them since. What is changed by another process
    /// shows here once [`Household::household_members`] has read it (the watcher's
    /// poll).
    fn cached_household_members(&self) -> Option<Arc<[String]>>;
    /// Whether `user` is a member.
    fn is_household_member(&self, user: &str) -> Result<bool, StorageError>;
    /// Puts an existing account in the household: `Ok(true)` if it was not a member,
    /// `Ok(false)` if it already was (nothing changes); [`StorageError::NotFound`] if
    /// there is no such account.
    fn add_to_household(&self, user: &str) -> Result<bool, StorageError>;
    /// Takes `user` out of the household: `Ok(false)` if it was not a member.
    fn remove_from_household(&self, user: &str) -> Result<bool, StorageError>;
    /// Records the roster group name the household is shown under (`[household] group`);
    /// when it differs from the one recorded, every member's roster version changes, since
    /// every member's roster now reads differently (RFC 6121 §2.6). `Ok(true)` then.
    fn show_household_as(&self, group: &str) -> Result<bool, StorageError>;
}

impl Household for Storage {
    fn household_members(&self) -> Result<Vec<String>, StorageError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT localpart FROM household_members ORDER BY localpart")
            .map_err(self.sqlite_err("read the household"))?;
        let rows = stmt
            .query_map([], |r| r.get(0))
            .map_err(self.sqlite_err("read the household"))?;
        let members = rows
            .collect::<Result<Vec<String>, _>>()
            .map_err(self.sqlite_err("read the household"))?;
        // Still under `conn`: no write of this process comes between the read and this.
        *self.household_cache() = Some(Arc::from(members.as_slice()));
        Ok(members)
    }

    fn cached_household_members(&self) -> Option<Arc<[String]>> {
        self.household_cache().clone()
    }

    fn is_household_member(&self, user: &str) -> Result<bool, StorageError> {
        self.conn()
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM household_members WHERE localpart = ?1)")
            .and_then(|mut st| st.query_row([user], |r| r.get(0)))
            .map_err(self.sqlite_err("read the household"))
    }

    fn add_to_household(&self, user: &str) -> Result<bool, StorageError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(self.sqlite_err("start a transaction"))?;
        let exists: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM accounts WHERE localpart = ?1)",
                [user],
                |r| r.get(0),
            )
            .map_err(self.sqlite_err("read an account"))?;
        if !exists {
            return Err(StorageError::NotFound {
                user: user.to_owned(),
            });
        }
        let added = tx
            .execute(
                "INSERT OR IGNORE INTO household_members (localpart, added_at) VALUES (?1, ?2)",
                params![user, crate::storage::unix_now()],
            )
            .map_err(self.sqlite_err("add to the household"))?;
        tx.commit()
            .map_err(self.sqlite_err("commit a household change"))?;
        if added > 0 {
            *self.household_cache() = None;
        }
        Ok(added > 0)
    }

    fn remove_from_household(&self, user: &str) -> Result<bool, StorageError> {
        let conn = self.conn();
        let removed = conn
            .execute("DELETE FROM household_members WHERE localpart = ?1", [user])
            .map_err(self.sqlite_err("remove from the household"))?;
        if removed > 0 {
            *self.household_cache() = None;
        }
        Ok(removed > 0)
    }

    fn show_household_as(&self, group: &str) -> Result<bool, StorageError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(self.sqlite_err("start a transaction"))?;
        let shown: Option<String> = tx
            .query_row("SELECT name FROM household_group WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(self.sqlite_err("read the household's group"))?;
        if shown.as_deref() == Some(group) {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO household_group (id, name) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET name = ?1",
            [group],
        )
        .map_err(self.sqlite_err("record the household's group"))?;
        // The first time (nothing recorded) there can be no cached roster showing another
        // name, but bumping then is harmless and keeps this simple.
        tx.execute(
            "INSERT INTO roster_versions (localpart, version)
             SELECT localpart, 1 FROM household_members WHERE true
             ON CONFLICT (localpart) DO UPDATE SET version = version + 1",
            [],
        )
        .map_err(self.sqlite_err("bump the household's roster versions"))?;
        tx.commit()
            .map_err(self.sqlite_err("commit a household change"))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::roster::Roster as _;
    use crate::storage::Accounts as _;

    #[test]
    fn add_list_remove() {
        let (_d, s) = crate::storage::test_store(&["alice", "bob", "thermo"]);
        assert!(s.household_members().unwrap().is_empty());
        assert!(s.add_to_household("thermo").unwrap());
        assert!(s.add_to_household("alice").unwrap());
        assert!(!s.add_to_household("alice").unwrap(), "already a member");
        assert_eq!(s.household_members().unwrap(), ["alice", "thermo"]);
        assert!(s.is_household_member("alice").unwrap());
        assert!(!s.is_household_member("bob").unwrap());
        assert!(matches!(
            s.add_to_household("nobody"),
            Err(StorageError::NotFound { .. })
        ));
        assert!(s.remove_from_household("alice").unwrap());
        assert!(!s.remove_from_household("alice").unwrap());
        assert_eq!(s.household_members().unwrap(), ["thermo"]);
    }

    /// The members kept in memory are those last read, and go as soon as this process
    /// changes them (an account's deletion included).
    #[test]
    fn the_cached_members_follow_this_processs_changes() {
        let (_d, s) = crate::storage::test_store(&["alice", "bob", "thermo"]);
        assert_eq!(s.cached_household_members(), None);
        s.household_members().unwrap();
        assert_eq!(s.cached_household_members().as_deref(), Some(&[][..]));
        s.add_to_household("alice").unwrap();
        assert_eq!(s.cached_household_members(), None);
        s.household_members().unwrap();
        // Adding a member again changes nothing, and forgets nothing.
        s.add_to_household("alice").unwrap();
        assert_eq!(
            s.cached_household_members().as_deref(),
            Some(&["alice".to_string()][..])
        );
        s.add_to_household("thermo").unwrap();
        s.household_members().unwrap();
        s.remove_from_household("thermo").unwrap();
        assert_eq!(s.cached_household_members(), None);
        s.household_members().unwrap();
        s.delete_account("alice").unwrap();
        assert_eq!(s.cached_household_members(), None);
        assert!(s.household_members().unwrap().is_empty());
    }

    /// RFC 6121 §2.6: each membership change is a new roster version for every member,
    /// and for the one who joined or left; an account's deletion too.
    #[test]
    fn membership_changes_bump_roster_versions() {
        let (_d, s) = crate::storage::test_store(&["alice", "bob", "carol", "dave"]);
        let v = |u: &str| s.roster_version(u).unwrap();
        s.add_to_household("alice").unwrap();
        assert_eq!((v("alice"), v("bob")), (1, 0));
        s.add_to_household("bob").unwrap();
        assert_eq!((v("alice"), v("bob")), (2, 1));
        s.add_to_household("carol").unwrap();
        assert_eq!((v("alice"), v("bob"), v("carol")), (3, 2, 1));
        // Adding a member again changes nothing.
        s.add_to_household("carol").unwrap();
        assert_eq!(v("alice"), 3);
        s.remove_from_household("bob").unwrap();
        assert_eq!((v("alice"), v("bob"), v("carol")), (4, 3, 2));
        assert_eq!(v("dave"), 0, "not a member, not touched");
        // A deleted member's account takes its membership; the others' versions change.
        s.delete_account("carol").unwrap();
        assert_eq!(s.household_members().unwrap(), ["alice"]);
        assert_eq!(v("alice"), 5);
    }

    #[test]
    fn a_renamed_group_bumps_the_members_versions() {
        let (_d, s) = crate::storage::test_store(&["alice", "bob"]);
        s.add_to_household("alice").unwrap();
        assert!(s.show_household_as("Household").unwrap());
        let before = s.roster_version("alice").unwrap();
        assert!(!s.show_household_as("Household").unwrap());
        assert_eq!(s.roster_version("alice").unwrap(), before);
        assert!(s.show_household_as("Home").unwrap());
        assert_eq!(s.roster_version("alice").unwrap(), before + 1);
        assert_eq!(s.roster_version("bob").unwrap(), 0);
    }
}
