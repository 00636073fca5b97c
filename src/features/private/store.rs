//! XEP-0049 storage: each account's private elements by (namespace, name), as XML.

use super::Item;
use crate::storage::{OverQuota, Quota, Storage, StorageError, stored_bytes_in};

/// Private XML per account (XEP-0049).
pub trait PrivateStore {
    /// The element stored under `ns` and `name`, serialized standalone.
    fn private_get(&self, user: &str, ns: &str, name: &str)
    -> Result<Option<String>, StorageError>;
    /// Stores or removes every item in one transaction; refused (nothing written) when the
    /// account's stored bytes would pass `quota.stored_bytes` (a write that shrinks them is
    /// always let through).
    fn private_set(
        &self,
        user: &str,
        items: &[Item],
        quota: &Quota,
    ) -> Result<Result<(), OverQuota>, StorageError>;
}

impl PrivateStore for Storage {
    fn private_get(
        &self,
        user: &str,
        ns: &str,
        name: &str,
    ) -> Result<Option<String>, StorageError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT xml FROM private_xml WHERE localpart = ?1 AND ns = ?2 AND name = ?3",
            )
            .map_err(self.sqlite_err("read private XML"))?;
        let mut rows = stmt
            .query([user, ns, name])
            .map_err(self.sqlite_err("read private XML"))?;
        match rows.next().map_err(self.sqlite_err("read private XML"))? {
            Some(row) => Ok(Some(
                row.get(0).map_err(self.sqlite_err("read private XML"))?,
            )),
            None => Ok(None),
        }
    }

    fn private_set(
        &self,
        user: &str,
        items: &[Item],
        quota: &Quota,
    ) -> Result<Result<(), OverQuota>, StorageError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(self.sqlite_err("start a transaction"))?;
        let used_before =
            stored_bytes_in(&tx, user).map_err(self.sqlite_err("count stored bytes"))?;
        for item in items {
            match &item.xml {
                Some(xml) => tx.execute(
                    "INSERT INTO private_xml (localpart, ns, name, xml) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (localpart, ns, name) DO UPDATE SET xml = excluded.xml",
                    [user, &item.ns, &item.name, xml],
                ),
                None => tx.execute(
                    "DELETE FROM private_xml WHERE localpart = ?1 AND ns = ?2 AND name = ?3",
                    [user, &item.ns, &item.name],
                ),
            }
            .map_err(self.sqlite_err("store private XML"))?;
        }
        // Checked after writing, so a replaced element counts once; dropping the
        // transaction undoes a refused set.
        let used = stored_bytes_in(&tx, user).map_err(self.sqlite_err("count stored bytes"))?;
        if used > quota.stored_bytes && used > used_before {
            return Ok(Err(OverQuota::Bytes));
        }
        tx.commit().map_err(self.sqlite_err("commit private XML"))?;
        Ok(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Accounts as _, test_store};

    fn item(name: &str, xml: Option<&str>) -> Item {
        Item {
            ns: "urn:example:prefs".into(),
            name: name.into(),
            xml: xml.map(str::to_owned),
        }
    }

    #[test]
    fn stores_replaces_and_removes_counting_bytes() {
        let (_d, s) = test_store(&["alice", "bob"]);
        let q = Quota::DEFAULT;
        let base = s.stored_bytes("alice").unwrap();
        let a = "<prefs xmlns=\"urn:example:prefs\">a</prefs>";
        s.private_set("alice", &[item("prefs", Some(a))], &q)
            .unwrap()
            .unwrap();
        assert_eq!(s.stored_bytes("alice").unwrap(), base + a.len() as u64);
        assert_eq!(
            s.private_get("alice", "urn:example:prefs", "prefs")
                .unwrap(),
            Some(a.to_owned())
        );
        // Another account's data is its own.
        assert_eq!(
            s.private_get("bob", "urn:example:prefs", "prefs").unwrap(),
            None
        );
        let b = "<prefs xmlns=\"urn:example:prefs\">bbbb</prefs>";
        s.private_set("alice", &[item("prefs", Some(b))], &q)
            .unwrap()
            .unwrap();
        assert_eq!(s.stored_bytes("alice").unwrap(), base + b.len() as u64);
        s.private_set("alice", &[item("prefs", None)], &q)
            .unwrap()
            .unwrap();
        assert_eq!(s.stored_bytes("alice").unwrap(), base);
        assert_eq!(
            s.private_get("alice", "urn:example:prefs", "prefs")
                .unwrap(),
            None
        );
    }

    #[test]
    fn over_quota_writes_nothing_and_shrinking_is_allowed() {
        let (_d, s) = test_store(&["alice"]);
        let base = s.stored_bytes("alice").unwrap();
        let big = format!("<a xmlns=\"urn:example:prefs\">{}</a>", "x".repeat(100));
        let q = Quota {
            stored_bytes: base + 150,
            ..Quota::DEFAULT
        };
        s.private_set("alice", &[item("a", Some(&big))], &q)
            .unwrap()
            .unwrap();
        // Two more in one set: the whole set is refused.
        assert_eq!(
            s.private_set(
                "alice",
                &[
                    item("b", Some("<b xmlns=\"urn:example:prefs\"/>")),
                    item("c", Some(&big))
                ],
                &q
            )
            .unwrap(),
            Err(OverQuota::Bytes)
        );
        assert_eq!(
            s.private_get("alice", "urn:example:prefs", "b").unwrap(),
            None
        );
        // With the quota lowered under what is kept, replacing by less still works.
        let q = Quota {
            stored_bytes: base,
            ..Quota::DEFAULT
        };
        s.private_set(
            "alice",
            &[item("a", Some("<a xmlns=\"urn:example:prefs\">y</a>"))],
            &q,
        )
        .unwrap()
        .unwrap();
    }

    #[test]
    fn an_account_takes_its_data_with_it() {
        let (_d, s) = test_store(&["alice"]);
        s.private_set(
            "alice",
            &[item("a", Some("<a xmlns=\"urn:example:prefs\">1</a>"))],
            &Quota::DEFAULT,
        )
        .unwrap()
        .unwrap();
        s.delete_account("alice").unwrap();
        s.create_account("alice", "pw").unwrap();
        assert_eq!(
            s.private_get("alice", "urn:example:prefs", "a").unwrap(),
            None
        );
    }
}
