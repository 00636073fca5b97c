//! XEP-0357 storage: the app servers each account enabled (§5), with the publish-options
//! form it gave, in the `push_registrations` table (migration 0010).

use rusqlite::params;

use crate::ns;
use crate::storage::{OverQuota, Quota, Storage, StorageError, stored_bytes_in, unix_now};
use crate::xml::{Element, Event, Framer, Limits};

/// One registration: notifications go to `node` at the app server `jid` (XEP-0357 §5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// The app server's JID, normalized.
    pub jid: String,
    /// The node at the app server that identifies this device.
    pub node: String,
    /// The publish-options form (`<x xmlns='jabber:x:data' type='submit'/>`) to send
    /// back with every notification (§7), as the server rebuilt it from what the client
    /// gave.
    pub options: Option<Element>,
}

/// The registrations per account.
pub trait PushStore {
    /// `user`'s registrations, oldest first.
    fn push_registrations(&self, user: &str) -> Result<Vec<Registration>, StorageError>;
    /// Adds `reg`, or replaces the form of the registration with the same JID and node;
    /// refused (nothing written) past `max` registrations or `quota.stored_bytes`.
    fn push_enable(
        &self,
        user: &str,
        reg: &Registration,
        max: usize,
        quota: &Quota,
    ) -> Result<Result<(), OverQuota>, StorageError>;
    /// Removes `user`'s registrations at `jid`: the one for `node`, or all of them with
    /// `None` (§6). Returns how many went.
    fn push_disable(
        &self,
        user: &str,
        jid: &str,
        node: Option<&str>,
    ) -> Result<usize, StorageError>;
}

impl PushStore for Storage {
    fn push_registrations(&self, user: &str) -> Result<Vec<Registration>, StorageError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT jid, node, options FROM push_registrations WHERE localpart = ?1 \
                 ORDER BY at, jid, node",
            )
            .map_err(self.sqlite_err("read push registrations"))?;
        let rows = stmt
            .query_map([user], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(self.sqlite_err("read push registrations"))?;
        let mut out = Vec::new();
        for row in rows {
            let (jid, node, options) = row.map_err(self.sqlite_err("read push registrations"))?;
            out.push(Registration {
                jid,
                node,
                options: parse_form(&options),
            });
        }
        Ok(out)
    }

    fn push_enable(
        &self,
        user: &str,
        reg: &Registration,
        max: usize,
        quota: &Quota,
    ) -> Result<Result<(), OverQuota>, StorageError> {
        let options = reg
            .options
            .as_ref()
            .map(|x| x.to_xml_in(ns::CLIENT))
            .unwrap_or_default();
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(self.sqlite_err("start a transaction"))?;
        let used_before =
            stored_bytes_in(&tx, user).map_err(self.sqlite_err("count stored bytes"))?;
        tx.execute(
            "INSERT INTO push_registrations (localpart, jid, node, options, at) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (localpart, jid, node) DO UPDATE SET options = excluded.options",
            params![user, reg.jid, reg.node, options, unix_now()],
        )
        .map_err(self.sqlite_err("enable push notifications"))?;
        let count: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM push_registrations WHERE localpart = ?1",
                [user],
                |r| r.get(0),
            )
            .map_err(self.sqlite_err("count push registrations"))?;
        // Checked after writing, so enabling again what is there counts once; dropping
        // the transaction undoes a refused one.
        if usize::try_from(count).unwrap_or(usize::MAX) > max {
            return Ok(Err(OverQuota::Items));
        }
        let used = stored_bytes_in(&tx, user).map_err(self.sqlite_err("count stored bytes"))?;
        if used > quota.stored_bytes && used > used_before {
            return Ok(Err(OverQuota::Bytes));
        }
        tx.commit()
            .map_err(self.sqlite_err("commit a push registration"))?;
        Ok(Ok(()))
    }

    fn push_disable(
        &self,
        user: &str,
        jid: &str,
        node: Option<&str>,
    ) -> Result<usize, StorageError> {
        let conn = self.conn();
        match node {
            Some(node) => conn.execute(
                "DELETE FROM push_registrations WHERE localpart = ?1 AND jid = ?2 AND node = ?3",
                [user, jid, node],
            ),
            None => conn.execute(
                "DELETE FROM push_registrations WHERE localpart = ?1 AND jid = ?2",
                [user, jid],
            ),
        }
        .map_err(self.sqlite_err("disable push notifications"))
    }
}

/// The stored form, read back (it declares its own namespace); `None` for none, or for
/// anything that does not read as one element.
fn parse_form(xml: &str) -> Option<Element> {
    if xml.is_empty() {
        return None;
    }
    let mut framer = Framer::new(Limits::default());
    let head = format!(
        "<stream:stream xmlns='{}' xmlns:stream='{}'>",
        ns::CLIENT,
        ns::STREAM
    );
    framer.feed(head.as_bytes()).ok()?;
    framer.feed(xml.as_bytes()).ok()?;
    loop {
        match framer.next_event() {
            Ok(Some(Event::Stanza(el))) => return Some(el),
            Ok(Some(_)) => continue,
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::forms::NS_DATA;
    use crate::storage::{Accounts as _, test_store};

    fn reg(jid: &str, node: &str, secret: Option<&str>) -> Registration {
        Registration {
            jid: jid.into(),
            node: node.into(),
            options: secret.map(|s| {
                Element::new("x", NS_DATA)
                    .with_attr("type", "submit")
                    .with_child(
                        Element::new("field", NS_DATA)
                            .with_attr("var", "secret")
                            .with_child(Element::new("value", NS_DATA).with_text(s)),
                    )
            }),
        }
    }

    #[test]
    fn registrations_round_trip_and_replace() {
        let (_d, s) = test_store(&["alice"]);
        let q = Quota::DEFAULT;
        s.push_enable("alice", &reg("push.example", "n1", Some("s<1>")), 5, &q)
            .unwrap()
            .unwrap();
        s.push_enable("alice", &reg("push.example", "n1", Some("s2")), 5, &q)
            .unwrap()
            .unwrap();
        s.push_enable("alice", &reg("push.example", "n2", None), 5, &q)
            .unwrap()
            .unwrap();
        let got = s.push_registrations("alice").unwrap();
        assert_eq!(got.len(), 2);
        let n1 = got.iter().find(|r| r.node == "n1").unwrap();
        assert_eq!(n1, &reg("push.example", "n1", Some("s2")));
        assert_eq!(got.iter().find(|r| r.node == "n2").unwrap().options, None);
        assert!(s.push_registrations("bob").unwrap().is_empty());
    }

    #[test]
    fn bounded_in_count_and_bytes_and_counted() {
        let (_d, s) = test_store(&["alice"]);
        let q = Quota::DEFAULT;
        for i in 0..2 {
            s.push_enable("alice", &reg("p.example", &format!("n{i}"), None), 2, &q)
                .unwrap()
                .unwrap();
        }
        assert_eq!(
            s.push_enable("alice", &reg("p.example", "n9", None), 2, &q)
                .unwrap(),
            Err(OverQuota::Items)
        );
        // The same one again is no new registration.
        s.push_enable("alice", &reg("p.example", "n1", None), 2, &q)
            .unwrap()
            .unwrap();
        assert_eq!(s.stored_bytes("alice").unwrap(), 2 * (9 + 2));
        let small = Quota {
            stored_bytes: 30,
            ..Quota::DEFAULT
        };
        assert_eq!(
            s.push_enable(
                "alice",
                &reg("p.example", "n1", Some("a long secret")),
                5,
                &small
            )
            .unwrap(),
            Err(OverQuota::Bytes)
        );
        assert_eq!(s.push_disable("alice", "p.example", Some("n0")).unwrap(), 1);
        assert_eq!(s.push_disable("alice", "p.example", None).unwrap(), 1);
        assert_eq!(s.stored_bytes("alice").unwrap(), 0);
    }
}
