//! XEP-0191 storage: each user's blocked JIDs, as normalized JID strings.

use crate::storage::{OverQuota, Quota, Storage, StorageError, stored_bytes_in};

/// Blocked JIDs per user (XEP-0191), as normalized JID strings.
pub trait BlockList {
    fn blocklist(&self, user: &str) -> Result<Vec<String>, StorageError>;
    /// Adds `jids`; refused (nothing written) when the list would pass `quota.blocked`
    /// entries or the account would pass `quota.stored_bytes`.
    fn block(
        &self,
        user: &str,
        jids: &[String],
        quota: &Quota,
    ) -> Result<Result<(), OverQuota>, StorageError>;
    /// Unblocks `jids`, or everyone with `None`.
    fn unblock(&self, user: &str, jids: Option<&[String]>) -> Result<(), StorageError>;
}

impl BlockList for Storage {
    fn blocklist(&self, user: &str) -> Result<Vec<String>, StorageError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT jid FROM blocklist WHERE localpart = ?1 ORDER BY jid")
            .map_err(self.sqlite_err("read a blocklist"))?;
        let rows = stmt
            .query_map([user], |r| r.get(0))
            .map_err(self.sqlite_err("read a blocklist"))?;
        rows.collect::<Result<Vec<String>, _>>()
            .map_err(self.sqlite_err("read a blocklist"))
    }

    fn block(
        &self,
        user: &str,
        jids: &[String],
        quota: &Quota,
    ) -> Result<Result<(), OverQuota>, StorageError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(self.sqlite_err("start a transaction"))?;
        let used_before =
            stored_bytes_in(&tx, user).map_err(self.sqlite_err("count stored bytes"))?;
        for j in jids {
            tx.execute(
                "INSERT OR IGNORE INTO blocklist (localpart, jid) VALUES (?1, ?2)",
                [user, j],
            )
            .map_err(self.sqlite_err("block a JID"))?;
        }
        let count: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM blocklist WHERE localpart = ?1",
                [user],
                |r| r.get(0),
            )
            .map_err(self.sqlite_err("count blocked JIDs"))?;
        // Checked after writing, so duplicates and JIDs already blocked count once;
        // dropping the transaction undoes a refused block.
        if usize::try_from(count).unwrap_or(usize::MAX) > quota.blocked {
            return Ok(Err(OverQuota::Items));
        }
        let used = stored_bytes_in(&tx, user).map_err(self.sqlite_err("count stored bytes"))?;
        if used > quota.stored_bytes && used > used_before {
            return Ok(Err(OverQuota::Bytes));
        }
        tx.commit().map_err(self.sqlite_err("commit a block"))?;
        Ok(Ok(()))
    }

    fn unblock(&self, user: &str, jids: Option<&[String]>) -> Result<(), StorageError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(self.sqlite_err("start a transaction"))?;
        match jids {
            None => {
                tx.execute("DELETE FROM blocklist WHERE localpart = ?1", [user])
                    .map_err(self.sqlite_err("unblock everyone"))?;
            }
            Some(jids) => {
                for j in jids {
                    tx.execute(
                        "DELETE FROM blocklist WHERE localpart = ?1 AND jid = ?2",
                        [user, j],
                    )
                    .map_err(self.sqlite_err("unblock a JID"))?;
                }
            }
        }
        tx.commit().map_err(self.sqlite_err("commit an unblock"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Storage) {
        crate::storage::test_store(&["alice"])
    }

    #[test]
    fn blocklist_round_trip() {
        let (_d, s) = store();
        s.block(
            "alice",
            &["b@x".into(), "c@x".into(), "b@x".into()],
            &Quota::DEFAULT,
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.blocklist("alice").unwrap(), ["b@x", "c@x"]);
        s.unblock("alice", Some(&["b@x".into()])).unwrap();
        assert_eq!(s.blocklist("alice").unwrap(), ["c@x"]);
        s.unblock("alice", None).unwrap();
        assert!(s.blocklist("alice").unwrap().is_empty());
    }

    #[test]
    fn blocklist_count_limit_refuses_the_whole_request() {
        let (_d, s) = store();
        let q = Quota {
            blocked: 2,
            ..Quota::DEFAULT
        };
        s.block("alice", &["a@x".into(), "a@x".into()], &q)
            .unwrap()
            .unwrap();
        // Blocking what is already blocked does not count twice.
        s.block("alice", &["a@x".into(), "b@x".into()], &q)
            .unwrap()
            .unwrap();
        assert_eq!(
            s.block("alice", &["c@x".into()], &q).unwrap(),
            Err(OverQuota::Items)
        );
        assert_eq!(s.blocklist("alice").unwrap(), ["a@x", "b@x"]);
    }
}
