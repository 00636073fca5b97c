//! XEP-0160 storage: messages kept for users who are offline, in arrival order.
//!
//! An offline message is committed (WAL, `synchronous=FULL`) before
//! [`OfflineStore::store_offline`] returns, so once the server has decided to keep a
//! message, a crash or power cut cannot lose it. Concurrent stores (and deletes) are
//! grouped into one transaction per disk sync (`storage/group.rs`).

use crate::storage::{OverQuota, Quota, Storage, StorageError, usage_in};
use rusqlite::params;

/// What [`OfflineStore::store_offline`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// Committed to disk.
    Stored,
    /// The user's quota is used up; nothing stored.
    Full(OverQuota),
    /// There is no such account; nothing stored.
    NoAccount,
}

/// Messages kept for users who are offline (XEP-0160), in arrival order.
pub trait OfflineStore {
    /// Stores a serialized message for `user` unless `quota.offline_messages` are already
    /// waiting or it would take the account past `quota.stored_bytes`.
    fn store_offline(
        &self,
        user: &str,
        stanza: &str,
        quota: &Quota,
    ) -> Result<Stored, StorageError>;
    /// Stores, for `user`, a reference to the message they archived as `archive_id`
    /// (XEP-0313) and `suffix`, what delivery adds to it (its `<stanza-id/>` and
    /// `<delay/>`), under the same quota as [`OfflineStore::store_offline`]: the message is
    /// not written twice. `None` when `archive_id` is not in `user`'s archive (the caller
    /// then stores the whole message).
    fn store_offline_archived(
        &self,
        user: &str,
        archive_id: i64,
        suffix: &str,
        quota: &Quota,
    ) -> Result<Option<Stored>, StorageError>;
    /// The `limit` oldest waiting messages with their ids, oldest first.
    fn offline_messages(
        &self,
        user: &str,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StorageError>;
    /// Takes the `limit` oldest waiting messages out of storage, oldest first with their
    /// ids: read and deleted in one committed transaction, so messages about to be handed
    /// to a client can never be handed over again, even if the disk is full afterwards
    /// (an error means nothing was taken).
    fn take_offline(&self, user: &str, limit: usize) -> Result<Vec<(i64, String)>, StorageError>;
    /// Puts back messages [`OfflineStore::take_offline`] took but that could not be
    /// written to the client, with their ids (so in their place in the order). Outside
    /// the quota: they were within it when stored. A message that pointed at the archive
    /// comes back whole (it is rare: a write to the client failed), not as a reference.
    fn restore_offline(&self, user: &str, messages: &[(i64, String)]) -> Result<(), StorageError>;
    /// Up to `limit` waiting messages after id `after`, oldest first, left in storage: a
    /// stream-managed session (XEP-0198) deletes each only once its client acknowledged
    /// it ([`OfflineStore::delete_offline`]).
    fn offline_after(
        &self,
        user: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StorageError>;
    /// Deletes the messages with these ids (acknowledged by the client).
    fn delete_offline(&self, user: &str, ids: &[i64]) -> Result<(), StorageError>;
}

/// A page of waiting messages: a row that points at the archive (schema version 7) takes
/// the message from there.
const SELECT_PAGE: &str = "SELECT o.id, o.stanza, a.stanza FROM offline_messages o
      LEFT JOIN archive a ON a.id = o.archive_id
     WHERE o.localpart = ?1 ORDER BY o.id LIMIT ?2";

/// [`SELECT_PAGE`] after an offline id (`?3`), for a delivery that leaves the messages in
/// storage until they are acknowledged (XEP-0198).
const SELECT_PAGE_AFTER: &str = "SELECT o.id, o.stanza, a.stanza FROM offline_messages o
      LEFT JOIN archive a ON a.id = o.archive_id
     WHERE o.localpart = ?1 AND o.id > ?3 ORDER BY o.id LIMIT ?2";

/// A row of [`SELECT_PAGE`] as the message to deliver: the archived message with the
/// offline row's additions put inside it, before its end tag, or the offline row's own.
fn whole(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, String)> {
    let id = r.get(0)?;
    let own: String = r.get(1)?;
    let archived: Option<String> = r.get(2)?;
    Ok((
        id,
        match archived {
            Some(m) => insert_before_end(m, &own),
            None => own,
        },
    ))
}

/// `message` (a serialized `<message>`, as the archive keeps it) with `inner` added as
/// its last children.
pub(crate) fn insert_before_end(mut message: String, inner: &str) -> String {
    if let Some(open) = message.strip_suffix("/>") {
        // No children yet: `<message …/>` becomes `<message …>inner</message>`.
        let mut m = open.to_owned();
        m.push('>');
        m.push_str(inner);
        m.push_str("</message>");
        return m;
    }
    match message.rfind("</") {
        Some(end) => message.insert_str(end, inner),
        None => message.push_str(inner),
    }
    message
}

/// [`OfflineStore::store_offline`] on a connection inside a group commit's transaction
/// (`Storage::write`, or `Storage::write_deferred` for a writer that must not wait: the
/// group chat service storing an invitation for someone offline).
pub(crate) fn store_offline_in(
    s: &Storage,
    conn: &rusqlite::Connection,
    user: &str,
    stanza: &str,
    quota: &Quota,
) -> Result<Stored, StorageError> {
    let Some(usage) = usage_in(conn, user).map_err(s.sqlite_err("count an account's storage"))?
    else {
        return Ok(Stored::NoAccount);
    };
    if usize::try_from(usage.offline_messages).unwrap_or(usize::MAX) >= quota.offline_messages {
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
    .and_then(|mut st| {
        st.execute(params![
            user,
            stanza,
            crate::storage::unix_now(),
            size as i64
        ])
    })
    .map_err(s.sqlite_err("store an offline message"))?;
    Ok(Stored::Stored)
}

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
        self.write(move |s, conn| store_offline_in(s, conn, &user, &stanza, &quota))
    }

    fn store_offline_archived(
        &self,
        user: &str,
        archive_id: i64,
        suffix: &str,
        quota: &Quota,
    ) -> Result<Option<Stored>, StorageError> {
        let (user, suffix, quota) = (user.to_owned(), suffix.to_owned(), *quota);
        self.write(move |s, conn| {
            let err = |e| s.sqlite_err("store an offline message")(e);
            let Some(usage) = usage_in(conn, &user).map_err(&err)? else {
                return Ok(Some(Stored::NoAccount));
            };
            let archived: bool = conn
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM archive WHERE id = ?1 AND localpart = ?2)",
                )
                .and_then(|mut st| st.query_row(params![archive_id, user], |r| r.get(0)))
                .map_err(&err)?;
            if !archived {
                return Ok(None);
            }
            if usize::try_from(usage.offline_messages).unwrap_or(usize::MAX)
                >= quota.offline_messages
            {
                return Ok(Some(Stored::Full(OverQuota::Items)));
            }
            // The archived copy is already counted; only what is added here counts again.
            let size = suffix.len() as u64;
            if usage.bytes.saturating_add(size) > quota.stored_bytes {
                return Ok(Some(Stored::Full(OverQuota::Bytes)));
            }
            conn.prepare_cached(
                "INSERT INTO offline_messages (localpart, stanza, stored_at, bytes, archive_id)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    user,
                    suffix,
                    crate::storage::unix_now(),
                    size as i64,
                    archive_id
                ])
            })
            .map_err(&err)?;
            Ok(Some(Stored::Stored))
        })
    }

    fn offline_messages(
        &self,
        user: &str,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StorageError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(SELECT_PAGE)
            .map_err(self.sqlite_err("read offline messages"))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![user, limit], whole)
            .map_err(self.sqlite_err("read offline messages"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(self.sqlite_err("read offline messages"))
    }

    fn offline_after(
        &self,
        user: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StorageError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(SELECT_PAGE_AFTER)
            .map_err(self.sqlite_err("read offline messages"))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![user, limit, after], whole)
            .map_err(self.sqlite_err("read offline messages"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(self.sqlite_err("read offline messages"))
    }

    fn delete_offline(&self, user: &str, ids: &[i64]) -> Result<(), StorageError> {
        let (user, ids) = (user.to_owned(), ids.to_vec());
        self.write(move |s, conn| {
            let mut st = conn
                .prepare_cached("DELETE FROM offline_messages WHERE localpart = ?1 AND id = ?2")
                .map_err(s.sqlite_err("delete offline messages"))?;
            for id in &ids {
                st.execute(params![user, id])
                    .map_err(s.sqlite_err("delete offline messages"))?;
            }
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
                .prepare_cached(SELECT_PAGE)
                .and_then(|mut st| {
                    st.query_map(params![user, limit], whole)?
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
                    crate::storage::unix_now(),
                    stanza.len() as i64
                ])
                .map_err(s.sqlite_err("restore offline messages"))?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::blocking::BlockList as _;
    use crate::storage::Accounts;
    fn store() -> (tempfile::TempDir, Storage) {
        crate::storage::test_store(&["alice"])
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
        assert_eq!(again.take_offline("alice", 1).unwrap(), msgs[..1]);
        assert_eq!(s.offline_messages("alice", 10).unwrap().len(), 1);
        assert_eq!(again.take_offline("alice", 1).unwrap(), msgs[1..]);
        assert!(s.offline_messages("alice", 10).unwrap().is_empty());
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
        assert_eq!(s.take_offline("alice", 10).unwrap().len(), 2);
        s.unblock("alice", None).unwrap();
        assert_eq!(s.stored_bytes("alice").unwrap(), 0);
        assert_eq!(s.stored_bytes("nobody").unwrap(), 0);
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
