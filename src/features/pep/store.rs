//! PEP storage (migration 8): each account's nodes, items, affiliations and explicit
//! subscriptions, in the account's byte quota.

use rusqlite::{OptionalExtension, params};

use crate::storage::{Storage, StorageError, stored_bytes_in, unix_now};

/// A stored item: its id and its payload (one element, serialized standalone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub id: String,
    pub payload: String,
}

/// Limits a write is checked against.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Nodes per account.
    pub nodes: usize,
    /// Items kept in the node (its effective `max_items`).
    pub items: u32,
    /// The account's stored bytes (`limits.max_stored_bytes_per_account`).
    pub stored_bytes: u64,
}

/// Why a write was refused (nothing was written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The node exists already (§8.1.1 create).
    Exists,
    /// The node does not exist.
    NoNode,
    /// The account has as many nodes as it may.
    TooManyNodes,
    /// The account's byte quota would be passed.
    Quota,
}

/// A publish: the node (created with `create` when it does not exist) and the item.
pub struct Publish<'a> {
    pub node: &'a str,
    /// The stored configuration of a node created by this publish (§7.1.4 auto-create).
    pub create: &'a str,
    pub item: Option<&'a Item>,
}

pub trait PepStore {
    /// `user`'s node `node`: its stored configuration, if it exists.
    fn pep_node(&self, user: &str, node: &str) -> Result<Option<String>, StorageError>;
    /// All of `user`'s nodes with their stored configurations, by name.
    fn pep_nodes(&self, user: &str) -> Result<Vec<(String, String)>, StorageError>;
    /// Creates `node` if needed and stores `item` (replacing one with the same id, which
    /// then counts as the newest), then keeps only the newest `bounds.items`. Returns
    /// whether the node was created.
    fn pep_publish(
        &self,
        user: &str,
        publish: &Publish<'_>,
        bounds: &Bounds,
    ) -> Result<Result<bool, Refused>, StorageError>;
    /// Creates an empty node.
    fn pep_create(
        &self,
        user: &str,
        node: &str,
        config: &str,
        bounds: &Bounds,
    ) -> Result<Result<(), Refused>, StorageError>;
    /// Replaces a node's configuration and keeps only its newest `keep` items.
    fn pep_configure(
        &self,
        user: &str,
        node: &str,
        config: &str,
        keep: u32,
    ) -> Result<bool, StorageError>;
    /// Items of a node, oldest first: those with `ids`, or the newest `max` (all when
    /// `None`).
    fn pep_items(
        &self,
        user: &str,
        node: &str,
        ids: &[String],
        max: Option<u32>,
    ) -> Result<Vec<Item>, StorageError>;
    /// Removes one item; whether it was there.
    fn pep_retract(&self, user: &str, node: &str, id: &str) -> Result<bool, StorageError>;
    /// Removes every item; whether the node exists.
    fn pep_purge(&self, user: &str, node: &str) -> Result<bool, StorageError>;
    /// Removes the node with its items, affiliations and subscriptions; its explicit
    /// subscribers (to tell them), or `None` when there was no such node.
    fn pep_delete(&self, user: &str, node: &str) -> Result<Option<Vec<String>>, StorageError>;
    /// The affiliations the owner gave others on a node: (JID, affiliation).
    fn pep_affiliations(
        &self,
        user: &str,
        node: &str,
    ) -> Result<Vec<(String, String)>, StorageError>;
    /// Sets affiliations (`none` removes one).
    fn pep_set_affiliations(
        &self,
        user: &str,
        node: &str,
        changes: &[(String, String)],
        bounds: &Bounds,
    ) -> Result<Result<(), Refused>, StorageError>;
    /// Explicit subscribers of a node.
    fn pep_subscribers(&self, user: &str, node: &str) -> Result<Vec<String>, StorageError>;
    /// Subscribes `jid` (idempotent); the subscription id.
    fn pep_subscribe(
        &self,
        user: &str,
        node: &str,
        jid: &str,
        bounds: &Bounds,
    ) -> Result<Result<String, Refused>, StorageError>;
    /// Removes `jid`'s subscription; whether there was one.
    fn pep_unsubscribe(&self, user: &str, node: &str, jid: &str) -> Result<bool, StorageError>;
    /// The nodes of `user` `jid` is explicitly subscribed to, with subscription ids.
    fn pep_subscriptions_of(
        &self,
        user: &str,
        jid: &str,
    ) -> Result<Vec<(String, String)>, StorageError>;
}

/// Keeps only the newest `keep` items of a node.
fn trim(tx: &rusqlite::Transaction<'_>, user: &str, node: &str, keep: u32) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM pep_items WHERE localpart = ?1 AND node = ?2 AND seq NOT IN
           (SELECT seq FROM pep_items WHERE localpart = ?1 AND node = ?2
             ORDER BY seq DESC LIMIT ?3)",
        params![user, node, keep],
    )?;
    Ok(())
}

fn node_exists(tx: &rusqlite::Transaction<'_>, user: &str, node: &str) -> rusqlite::Result<bool> {
    tx.query_row(
        "SELECT 1 FROM pep_nodes WHERE localpart = ?1 AND node = ?2",
        [user, node],
        |_| Ok(()),
    )
    .optional()
    .map(|found| found.is_some())
}

fn node_count(tx: &rusqlite::Transaction<'_>, user: &str) -> rusqlite::Result<usize> {
    let n: i64 = tx.query_row(
        "SELECT COUNT(*) FROM pep_nodes WHERE localpart = ?1",
        [user],
        |r| r.get(0),
    )?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

fn random_subid() -> String {
    let mut bytes = [0u8; 8];
    // Without randomness the id is still unique per (node, jid): a fixed one does.
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a write that grew the account past its quota must be undone: only a write that
/// grew it (a smaller replacement is always allowed, so a full account can tidy up).
fn over_quota(
    tx: &rusqlite::Transaction<'_>,
    user: &str,
    before: u64,
    bounds: &Bounds,
) -> rusqlite::Result<bool> {
    let used = stored_bytes_in(tx, user)?;
    Ok(used > bounds.stored_bytes && used > before)
}

impl PepStore for Storage {
    fn pep_node(&self, user: &str, node: &str) -> Result<Option<String>, StorageError> {
        self.conn()
            .prepare_cached("SELECT config FROM pep_nodes WHERE localpart = ?1 AND node = ?2")
            .and_then(|mut s| s.query_row([user, node], |r| r.get(0)).optional())
            .map_err(self.sqlite_err("read a PEP node"))
    }

    fn pep_nodes(&self, user: &str) -> Result<Vec<(String, String)>, StorageError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT node, config FROM pep_nodes WHERE localpart = ?1 ORDER BY node")
            .map_err(self.sqlite_err("read PEP nodes"))?;
        stmt.query_map([user], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(self.sqlite_err("read PEP nodes"))
    }

    fn pep_publish(
        &self,
        user: &str,
        publish: &Publish<'_>,
        bounds: &Bounds,
    ) -> Result<Result<bool, Refused>, StorageError> {
        let mut conn = self.conn();
        let err = self.sqlite_err("publish a PEP item");
        let mut run = || -> rusqlite::Result<Result<bool, Refused>> {
            let tx = conn.transaction()?;
            let before = stored_bytes_in(&tx, user)?;
            let exists = node_exists(&tx, user, publish.node)?;
            let created = !exists;
            if created {
                if node_count(&tx, user)? >= bounds.nodes {
                    return Ok(Err(Refused::TooManyNodes));
                }
                tx.execute(
                    "INSERT INTO pep_nodes (localpart, node, config, created_at)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![user, publish.node, publish.create, unix_now()],
                )?;
            }
            if let Some(item) = publish.item {
                tx.execute(
                    "DELETE FROM pep_items WHERE localpart = ?1 AND node = ?2 AND item_id = ?3",
                    [user, publish.node, &item.id],
                )?;
                tx.execute(
                    "INSERT INTO pep_items (localpart, node, item_id, at, payload)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![user, publish.node, item.id, unix_now(), item.payload],
                )?;
            }
            trim(&tx, user, publish.node, bounds.items)?;
            if over_quota(&tx, user, before, bounds)? {
                return Ok(Err(Refused::Quota));
            }
            tx.commit()?;
            Ok(Ok(created))
        };
        run().map_err(err)
    }

    fn pep_create(
        &self,
        user: &str,
        node: &str,
        config: &str,
        bounds: &Bounds,
    ) -> Result<Result<(), Refused>, StorageError> {
        let mut conn = self.conn();
        let err = self.sqlite_err("create a PEP node");
        let mut run = || -> rusqlite::Result<Result<(), Refused>> {
            let tx = conn.transaction()?;
            let before = stored_bytes_in(&tx, user)?;
            if node_count(&tx, user)? >= bounds.nodes {
                return Ok(Err(Refused::TooManyNodes));
            }
            let inserted = tx.execute(
                "INSERT INTO pep_nodes (localpart, node, config, created_at)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                params![user, node, config, unix_now()],
            )?;
            if inserted == 0 {
                return Ok(Err(Refused::Exists));
            }
            if over_quota(&tx, user, before, bounds)? {
                return Ok(Err(Refused::Quota));
            }
            tx.commit()?;
            Ok(Ok(()))
        };
        run().map_err(err)
    }

    fn pep_configure(
        &self,
        user: &str,
        node: &str,
        config: &str,
        keep: u32,
    ) -> Result<bool, StorageError> {
        let mut conn = self.conn();
        let err = self.sqlite_err("configure a PEP node");
        let mut run = || -> rusqlite::Result<bool> {
            let tx = conn.transaction()?;
            let n = tx.execute(
                "UPDATE pep_nodes SET config = ?3 WHERE localpart = ?1 AND node = ?2",
                [user, node, config],
            )?;
            if n == 0 {
                return Ok(false);
            }
            trim(&tx, user, node, keep)?;
            tx.commit()?;
            Ok(true)
        };
        run().map_err(err)
    }

    fn pep_items(
        &self,
        user: &str,
        node: &str,
        ids: &[String],
        max: Option<u32>,
    ) -> Result<Vec<Item>, StorageError> {
        let conn = self.conn();
        let err = self.sqlite_err("read PEP items");
        let row = |r: &rusqlite::Row<'_>| {
            Ok(Item {
                id: r.get(0)?,
                payload: r.get(1)?,
            })
        };
        let run = || -> rusqlite::Result<Vec<Item>> {
            if !ids.is_empty() {
                let mut stmt = conn.prepare_cached(
                    "SELECT item_id, payload FROM pep_items
                      WHERE localpart = ?1 AND node = ?2 AND item_id = ?3",
                )?;
                let mut items = Vec::new();
                for id in ids {
                    if let Some(item) = stmt.query_row([user, node, id], row).optional()? {
                        items.push(item);
                    }
                }
                return Ok(items);
            }
            let mut stmt = conn.prepare_cached(
                "SELECT item_id, payload FROM pep_items
                  WHERE localpart = ?1 AND node = ?2 ORDER BY seq DESC LIMIT ?3",
            )?;
            let limit = max.map_or(-1, i64::from);
            let mut items: Vec<Item> = stmt
                .query_map(params![user, node, limit], row)?
                .collect::<rusqlite::Result<_>>()?;
            items.reverse();
            Ok(items)
        };
        run().map_err(err)
    }

    fn pep_retract(&self, user: &str, node: &str, id: &str) -> Result<bool, StorageError> {
        self.conn()
            .execute(
                "DELETE FROM pep_items WHERE localpart = ?1 AND node = ?2 AND item_id = ?3",
                [user, node, id],
            )
            .map(|n| n > 0)
            .map_err(self.sqlite_err("retract a PEP item"))
    }

    fn pep_purge(&self, user: &str, node: &str) -> Result<bool, StorageError> {
        let mut conn = self.conn();
        let err = self.sqlite_err("purge a PEP node");
        let mut run = || -> rusqlite::Result<bool> {
            let tx = conn.transaction()?;
            let exists = node_exists(&tx, user, node)?;
            if !exists {
                return Ok(false);
            }
            tx.execute(
                "DELETE FROM pep_items WHERE localpart = ?1 AND node = ?2",
                [user, node],
            )?;
            tx.commit()?;
            Ok(true)
        };
        run().map_err(err)
    }

    fn pep_delete(&self, user: &str, node: &str) -> Result<Option<Vec<String>>, StorageError> {
        let mut conn = self.conn();
        let err = self.sqlite_err("delete a PEP node");
        let mut run = || -> rusqlite::Result<Option<Vec<String>>> {
            let tx = conn.transaction()?;
            let subscribers: Vec<String> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT jid FROM pep_subscriptions WHERE localpart = ?1 AND node = ?2",
                )?;
                stmt.query_map([user, node], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?
            };
            let n = tx.execute(
                "DELETE FROM pep_nodes WHERE localpart = ?1 AND node = ?2",
                [user, node],
            )?;
            tx.commit()?;
            Ok((n > 0).then_some(subscribers))
        };
        run().map_err(err)
    }

    fn pep_affiliations(
        &self,
        user: &str,
        node: &str,
    ) -> Result<Vec<(String, String)>, StorageError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT jid, affiliation FROM pep_affiliations
                  WHERE localpart = ?1 AND node = ?2 ORDER BY jid",
            )
            .map_err(self.sqlite_err("read PEP affiliations"))?;
        stmt.query_map([user, node], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(self.sqlite_err("read PEP affiliations"))
    }

    fn pep_set_affiliations(
        &self,
        user: &str,
        node: &str,
        changes: &[(String, String)],
        bounds: &Bounds,
    ) -> Result<Result<(), Refused>, StorageError> {
        let mut conn = self.conn();
        let err = self.sqlite_err("set PEP affiliations");
        let mut run = || -> rusqlite::Result<Result<(), Refused>> {
            let tx = conn.transaction()?;
            let before = stored_bytes_in(&tx, user)?;
            for (jid, affiliation) in changes {
                tx.execute(
                    "DELETE FROM pep_affiliations WHERE localpart = ?1 AND node = ?2 AND jid = ?3",
                    [user, node, jid],
                )?;
                if affiliation != "none" {
                    tx.execute(
                        "INSERT INTO pep_affiliations (localpart, node, jid, affiliation)
                         VALUES (?1, ?2, ?3, ?4)",
                        [user, node, jid, affiliation],
                    )?;
                }
            }
            if over_quota(&tx, user, before, bounds)? {
                return Ok(Err(Refused::Quota));
            }
            tx.commit()?;
            Ok(Ok(()))
        };
        run().map_err(err)
    }

    fn pep_subscribers(&self, user: &str, node: &str) -> Result<Vec<String>, StorageError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT jid FROM pep_subscriptions WHERE localpart = ?1 AND node = ?2")
            .map_err(self.sqlite_err("read PEP subscribers"))?;
        stmt.query_map([user, node], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(self.sqlite_err("read PEP subscribers"))
    }

    fn pep_subscribe(
        &self,
        user: &str,
        node: &str,
        jid: &str,
        bounds: &Bounds,
    ) -> Result<Result<String, Refused>, StorageError> {
        let mut conn = self.conn();
        let err = self.sqlite_err("subscribe to a PEP node");
        let mut run = || -> rusqlite::Result<Result<String, Refused>> {
            let tx = conn.transaction()?;
            let before = stored_bytes_in(&tx, user)?;
            let exists = node_exists(&tx, user, node)?;
            if !exists {
                return Ok(Err(Refused::NoNode));
            }
            let existing: Option<String> = tx
                .query_row(
                    "SELECT subid FROM pep_subscriptions
                      WHERE localpart = ?1 AND node = ?2 AND jid = ?3",
                    [user, node, jid],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(subid) = existing {
                return Ok(Ok(subid));
            }
            let subid = random_subid();
            tx.execute(
                "INSERT INTO pep_subscriptions (localpart, node, jid, subid)
                 VALUES (?1, ?2, ?3, ?4)",
                [user, node, jid, &subid],
            )?;
            if over_quota(&tx, user, before, bounds)? {
                return Ok(Err(Refused::Quota));
            }
            tx.commit()?;
            Ok(Ok(subid))
        };
        run().map_err(err)
    }

    fn pep_unsubscribe(&self, user: &str, node: &str, jid: &str) -> Result<bool, StorageError> {
        self.conn()
            .execute(
                "DELETE FROM pep_subscriptions WHERE localpart = ?1 AND node = ?2 AND jid = ?3",
                [user, node, jid],
            )
            .map(|n| n > 0)
            .map_err(self.sqlite_err("unsubscribe from a PEP node"))
    }

    fn pep_subscriptions_of(
        &self,
        user: &str,
        jid: &str,
    ) -> Result<Vec<(String, String)>, StorageError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT node, subid FROM pep_subscriptions
                  WHERE localpart = ?1 AND jid = ?2 ORDER BY node",
            )
            .map_err(self.sqlite_err("read PEP subscriptions"))?;
        stmt.query_map([user, jid], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(self.sqlite_err("read PEP subscriptions"))
    }
}
