//! XEP-0054 storage: one vCard per account, as XML, with its photo's hash.

use super::Stored;
use crate::storage::{OverQuota, Quota, Storage, StorageError, stored_bytes_in};

/// vCards per account (XEP-0054).
pub trait VcardStore {
    /// The account's vCard, serialized standalone.
    fn vcard_get(&self, user: &str) -> Result<Option<String>, StorageError>;
    /// The lowercase hex SHA-1 of its photo (XEP-0153 §4), if it has a vCard with one.
    fn vcard_photo_sha1(&self, user: &str) -> Result<Option<String>, StorageError>;
    /// Every account's photo hash, for those with a photo (one query for all, so that
    /// XEP-0153's presence hash costs no read per account).
    fn vcard_photo_hashes(&self) -> Result<Vec<(String, String)>, StorageError>;
    /// Replaces the vCard (`None` removes it); refused (nothing written) when the
    /// account's stored bytes would grow past `quota.stored_bytes`.
    fn vcard_set(
        &self,
        user: &str,
        vcard: Option<&Stored>,
        quota: &Quota,
    ) -> Result<Result<(), OverQuota>, StorageError>;
}

impl Storage {
    fn vcard_column(&self, user: &str, sql: &str) -> Result<Option<String>, StorageError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(sql)
            .map_err(self.sqlite_err("read a vCard"))?;
        let mut rows = stmt
            .query([user])
            .map_err(self.sqlite_err("read a vCard"))?;
        match rows.next().map_err(self.sqlite_err("read a vCard"))? {
            Some(row) => row.get(0).map_err(self.sqlite_err("read a vCard")),
            None => Ok(None),
        }
    }
}

impl VcardStore for Storage {
    fn vcard_get(&self, user: &str) -> Result<Option<String>, StorageError> {
        self.vcard_column(user, "SELECT xml FROM vcards WHERE localpart = ?1")
    }

    fn vcard_photo_sha1(&self, user: &str) -> Result<Option<String>, StorageError> {
        self.vcard_column(user, "SELECT photo_sha1 FROM vcards WHERE localpart = ?1")
    }

    fn vcard_photo_hashes(&self) -> Result<Vec<(String, String)>, StorageError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT localpart, photo_sha1 FROM vcards WHERE photo_sha1 IS NOT NULL")
            .map_err(self.sqlite_err("read vCard photo hashes"))?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(self.sqlite_err("read vCard photo hashes"))
    }

    fn vcard_set(
        &self,
        user: &str,
        vcard: Option<&Stored>,
        quota: &Quota,
    ) -> Result<Result<(), OverQuota>, StorageError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(self.sqlite_err("start a transaction"))?;
        let used_before =
            stored_bytes_in(&tx, user).map_err(self.sqlite_err("count stored bytes"))?;
        match vcard {
            Some(v) => tx.execute(
                "INSERT INTO vcards (localpart, xml, photo_sha1) VALUES (?1, ?2, ?3)
                 ON CONFLICT (localpart) DO UPDATE
                 SET xml = excluded.xml, photo_sha1 = excluded.photo_sha1",
                rusqlite::params![user, v.xml, v.photo_sha1],
            ),
            None => tx.execute("DELETE FROM vcards WHERE localpart = ?1", [user]),
        }
        .map_err(self.sqlite_err("store a vCard"))?;
        let used = stored_bytes_in(&tx, user).map_err(self.sqlite_err("count stored bytes"))?;
        if used > quota.stored_bytes && used > used_before {
            return Ok(Err(OverQuota::Bytes));
        }
        tx.commit().map_err(self.sqlite_err("commit a vCard"))?;
        Ok(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Accounts as _, test_store};

    fn card(xml: &str, hash: Option<&str>) -> Stored {
        Stored {
            xml: xml.into(),
            photo_sha1: hash.map(str::to_owned),
        }
    }

    #[test]
    fn set_replace_remove_and_the_quota() {
        let (_d, s) = test_store(&["alice"]);
        let base = s.stored_bytes("alice").unwrap();
        let q = Quota::DEFAULT;
        let a = "<vCard xmlns=\"vcard-temp\"><FN>A</FN></vCard>";
        s.vcard_set("alice", Some(&card(a, Some("ab"))), &q)
            .unwrap()
            .unwrap();
        assert_eq!(s.vcard_get("alice").unwrap().as_deref(), Some(a));
        assert_eq!(s.vcard_photo_sha1("alice").unwrap().as_deref(), Some("ab"));
        assert_eq!(s.stored_bytes("alice").unwrap(), base + a.len() as u64);
        let small = Quota {
            stored_bytes: base + a.len() as u64,
            ..Quota::DEFAULT
        };
        let b = "<vCard xmlns=\"vcard-temp\"><FN>Alice Longer</FN></vCard>";
        assert_eq!(
            s.vcard_set("alice", Some(&card(b, None)), &small).unwrap(),
            Err(OverQuota::Bytes)
        );
        assert_eq!(s.vcard_get("alice").unwrap().as_deref(), Some(a));
        s.vcard_set("alice", None, &small).unwrap().unwrap();
        assert_eq!(s.vcard_get("alice").unwrap(), None);
        assert_eq!(s.vcard_photo_sha1("alice").unwrap(), None);
        assert_eq!(s.stored_bytes("alice").unwrap(), base);
        assert_eq!(s.vcard_get("nobody").unwrap(), None);
    }
}
