//! Offline messages (XEP-0160), blocklists (XEP-0191) and last activity (XEP-0012).
//!
//! An offline message is committed (WAL, `synchronous=FULL`) before
//! [`OfflineStore::store_offline`] returns, so once the server has decided to keep a
//! message, a crash or power cut cannot lose it. Concurrent stores (and deletes) are
//! grouped into one transaction per disk sync (`group.rs`).

use super::accounts::{stored_bytes_in, usage_in};
use super::{
    BlockList, LastActivity, OfflineStore, OverQuota, Quota, Storage, StorageError, Stored,
};
use rusqlite::{OptionalExtension, params};

impl OfflineStore for Storage {
    fn store_offline(
        &self,
        user: &str,
        stanza: &str,
        quota: &Quota,
    ) -> Result<Stored, StorageError> {
        let (user, stanza, quota) = (user.to_owned(), stanza.to_owned(), *quota);
        // Many senders writing to offline users at once share one disk sync (`group.rs`).
        // Every statement here runs once per stored message: cached, so SQLite parses
        // and plans each only once per connection.
        self.write(move |s, conn| {
            let Some(usage) =
                usage_in(conn, &user).map_err(s.sqlite_err("count an account's storage"))?
            else {
                return Ok(Stored::NoAccount);
            };
            if usize::try_from(usage.offline_messages).unwrap_or(usize::MAX)
                >= quota.offline_messages
            {
                return Ok(Stored::Full(OverQuota::Items));
            }
            let size = stanza.len() as u64;
            if usage.bytes.saturating_add(size) > quota.stored_bytes {
                return Ok(Stored::Full(OverQuota::Bytes));
            }
            conn.prepare_cached(
                "INSERT INTO offline_messages (localpart, stanza, stored_at, bytes)
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut st| st.execute(params![user, stanza, super::unix_now(), size as i64]))
            .map_err(s.sqlite_err("store an offline message"))?;
            Ok(Stored::Stored)
        })
    }

    fn offline_messages(
        &self,
        user: &str,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StorageError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, stanza FROM offline_messages WHERE localpart = ?1 ORDER BY id
                 LIMIT ?2",
            )
            .map_err(self.sqlite_err("read offline messages"))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![user, limit], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(self.sqlite_err("read offline messages"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(self.sqlite_err("read offline messages"))
    }

    fn delete_offline(&self, user: &str, through: i64) -> Result<(), StorageError> {
        let user = user.to_owned();
        self.write(move |s, conn| {
            conn.prepare_cached("DELETE FROM offline_messages WHERE localpart = ?1 AND id <= ?2")
                .and_then(|mut st| st.execute(params![user, through]))
                .map_err(s.sqlite_err("delete offline messages"))?;
            Ok(())
        })
    }

    fn take_offline(&self, user: &str, limit: usize) -> Result<Vec<(i64, String)>, StorageError> {
        let user = user.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // A write job: the read and the delete commit together (group commit), and the
        // caller hears of the messages only once the delete is on the disk.
        self.write(move |s, conn| {
            let page = conn
                .prepare_cached(
                    "SELECT id, stanza FROM offline_messages WHERE localpart = ?1 ORDER BY id
                     LIMIT ?2",
                )
                .and_then(|mut st| {
                    st.query_map(params![user, limit], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<Result<Vec<(i64, String)>, _>>()
                })
                .map_err(s.sqlite_err("read offline messages"))?;
            if let Some(&(last, _)) = page.last() {
                conn.prepare_cached(
                    "DELETE FROM offline_messages WHERE localpart = ?1 AND id <= ?2",
                )
                .and_then(|mut st| st.execute(params![user, last]))
                .map_err(s.sqlite_err("delete offline messages"))?;
            }
            Ok(page)
        })
    }

    fn restore_offline(&self, user: &str, messages: &[(i64, String)]) -> Result<(), StorageError> {
        let (user, messages) = (user.to_owned(), messages.to_vec());
        self.write(move |s, conn| {
            let mut st = conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO offline_messages (id, localpart, stanza, stored_at, bytes)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(s.sqlite_err("restore offline messages"))?;
            for (id, stanza) in &messages {
                st.execute(params![
                    id,
                    user,
                    stanza,
                    super::unix_now(),
                    stanza.len() as i64
                ])
                .map_err(s.sqlite_err("restore offline messages"))?;
            }
            Ok(())
        })
    }
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
    use crate::storage::Accounts;

    fn store() -> (tempfile::TempDir, Storage) {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path()).unwrap();
        s.create_account("alice", "pw").unwrap();
        (dir, s)
    }

    fn messages(n: usize) -> Quota {
        Quota {
            offline_messages: n,
            ..Quota::DEFAULT
        }
    }

    #[test]
    fn offline_in_order_with_quota() {
        let (dir, s) = store();
        let q = messages(2);
        assert_eq!(
            s.store_offline("alice", "<m1/>", &q).unwrap(),
            Stored::Stored
        );
        assert_eq!(
            s.store_offline("alice", "<m2/>", &q).unwrap(),
            Stored::Stored
        );
        assert_eq!(
            s.store_offline("alice", "<m3/>", &q).unwrap(),
            Stored::Full(OverQuota::Items)
        );
        assert_eq!(
            s.store_offline("nobody", "<m/>", &q).unwrap(),
            Stored::NoAccount
        );
        // Another handle (as after a restart) sees them, in order.
        let again = Storage::open(dir.path()).unwrap();
        assert_eq!(again.offline_messages("alice", 1).unwrap().len(), 1);
        let msgs = again.offline_messages("alice", 10).unwrap();
        let bodies: Vec<&str> = msgs.iter().map(|(_, m)| m.as_str()).collect();
        assert_eq!(bodies, ["<m1/>", "<m2/>"]);
        again.delete_offline("alice", msgs[0].0).unwrap();
        assert_eq!(s.offline_messages("alice", 10).unwrap().len(), 1);
        again.delete_offline("alice", msgs[1].0).unwrap();
        assert!(s.offline_messages("alice", 10).unwrap().is_empty());
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

    #[test]
    fn stored_bytes_count_every_kind_and_bound_writes() {
        let (_d, s) = store();
        assert_eq!(s.stored_bytes("alice").unwrap(), 0);
        let q = Quota {
            stored_bytes: 20,
            ..Quota::DEFAULT
        };
        // 10 bytes of message, then 6 of blocklist: 16.
        assert_eq!(
            s.store_offline("alice", "0123456789", &q).unwrap(),
            Stored::Stored
        );
        s.block("alice", &["bob@x".into()], &q).unwrap().unwrap();
        assert_eq!(s.stored_bytes("alice").unwrap(), 15);
        // 15 + 6 > 20: refused, nothing written.
        assert_eq!(
            s.store_offline("alice", "012345", &q).unwrap(),
            Stored::Full(OverQuota::Bytes)
        );
        assert_eq!(
            s.block("alice", &["carol@x".into()], &q).unwrap(),
            Err(OverQuota::Bytes)
        );
        assert_eq!(s.blocklist("alice").unwrap(), ["bob@x"]);
        assert_eq!(s.stored_bytes("alice").unwrap(), 15);
        // Exactly at the limit is allowed; multi-byte characters count as UTF-8 bytes.
        assert_eq!(s.store_offline("alice", "é€", &q).unwrap(), Stored::Stored);
        assert_eq!(s.stored_bytes("alice").unwrap(), 20);
        // Deleting gives the bytes back.
        let msgs = s.offline_messages("alice", 10).unwrap();
        s.delete_offline("alice", msgs[1].0).unwrap();
        s.unblock("alice", None).unwrap();
        assert_eq!(s.stored_bytes("alice").unwrap(), 0);
        assert_eq!(s.stored_bytes("nobody").unwrap(), 0);
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

    #[test]
    fn take_removes_what_it_returns_and_restore_puts_it_back_in_order() {
        let (_dir, s) = store();
        for i in 0..5 {
            s.store_offline("alice", &format!("<m>{i}</m>"), &Quota::DEFAULT)
                .unwrap();
        }
        let first = s.take_offline("alice", 2).unwrap();
        assert_eq!(first.len(), 2);
        assert_eq!(first[0].1, "<m>0</m>");
        assert_eq!(s.offline_messages("alice", 10).unwrap().len(), 3);
        let second = s.take_offline("alice", 2).unwrap();
        assert_eq!(second[0].1, "<m>2</m>");
        // The second page could not be written: back in its place, before the rest.
        s.restore_offline("alice", &second).unwrap();
        let all: Vec<String> = s
            .take_offline("alice", 10)
            .unwrap()
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        assert_eq!(all, ["<m>2</m>", "<m>3</m>", "<m>4</m>"]);
        assert!(s.take_offline("alice", 10).unwrap().is_empty());
        assert_eq!(s.stored_bytes("alice").unwrap(), 0);
    }

    /// A delete that fails (a full disk) takes nothing: the messages are neither lost nor
    /// handed out twice.
    #[test]
    fn a_failed_take_leaves_everything_in_place() {
        let (_dir, s) = store();
        s.store_offline("alice", "<m/>", &Quota::DEFAULT).unwrap();
        s.conn()
            .execute_batch(
                "CREATE TRIGGER full BEFORE DELETE ON offline_messages
                 BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END;",
            )
            .unwrap();
        assert!(s.take_offline("alice", 10).is_err());
        s.conn().execute_batch("DROP TRIGGER full").unwrap();
        assert_eq!(s.take_offline("alice", 10).unwrap().len(), 1);
    }
}
