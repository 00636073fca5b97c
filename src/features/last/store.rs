//! XEP-0012 storage: when each user's last resource went offline, and its status.

use crate::storage::{Storage, StorageError};
use rusqlite::{OptionalExtension, params};

/// When each user was last online, and with what status (XEP-0012 §4).
pub trait LastActivity {
    /// Records the time (Unix seconds) the user's last resource went offline.
    fn set_last_activity(&self, user: &str, at: i64, status: &str) -> Result<(), StorageError>;
    fn last_activity(&self, user: &str) -> Result<Option<(i64, String)>, StorageError>;
}

impl LastActivity for Storage {
    fn set_last_activity(&self, user: &str, at: i64, status: &str) -> Result<(), StorageError> {
        let conn = self.conn();
        // "Last seen" is a hint, not something a user handed us to keep: losing the
        // newest one in a power cut is harmless, while a disk sync at every logout was
        // what bounded logins per second (BENCHMARKS.md). In WAL mode `NORMAL` keeps
        // the database consistent, and the next `FULL` commit makes this one durable.
        conn.execute_batch("PRAGMA synchronous = NORMAL")
            .map_err(self.sqlite_err("relax syncing for last activity"))?;
        // An account deleted meanwhile has nothing to record: the foreign key would refuse.
        let written = conn
            .prepare_cached(
                "INSERT INTO last_activity (localpart, logout_at, status)
                 SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM accounts WHERE localpart = ?1)
                 ON CONFLICT (localpart) DO UPDATE SET logout_at = ?2, status = ?3",
            )
            .and_then(|mut st| st.execute(params![user, at, status]));
        let restored = conn.execute_batch("PRAGMA synchronous = FULL");
        written.map_err(self.sqlite_err("record last activity"))?;
        restored.map_err(self.sqlite_err("restore full syncing"))?;
        Ok(())
    }

    fn last_activity(&self, user: &str) -> Result<Option<(i64, String)>, StorageError> {
        self.conn()
            .prepare_cached("SELECT logout_at, status FROM last_activity WHERE localpart = ?1")
            .and_then(|mut st| {
                st.query_row([user], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(self.sqlite_err("read last activity"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Storage) {
        crate::storage::test_store(&["alice"])
    }

    #[test]
    fn last_activity_round_trip() {
        let (_d, s) = store();
        assert_eq!(s.last_activity("alice").unwrap(), None);
        s.set_last_activity("alice", 100, "gone").unwrap();
        s.set_last_activity("alice", 200, "").unwrap();
        assert_eq!(
            s.last_activity("alice").unwrap(),
            Some((200, String::new()))
        );
        // Unknown accounts are ignored rather than an error.
        s.set_last_activity("nobody", 1, "").unwrap();
        assert_eq!(s.last_activity("nobody").unwrap(), None);
        // Everything else is still written with full syncing (2 = FULL).
        let sync: i64 = s
            .conn()
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2);
    }
}
