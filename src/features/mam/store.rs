//! XEP-0313 storage: each account's archive of the messages it sent and received, its
//! archiving preferences, and the two ways rows leave (retention and the byte quota).
//!
//! Archiving is on every chat message's way, so [`ArchiveStore::archive`] is one write job
//! (group commit, `storage/group.rs`) of cached statements: the account's usage, its
//! preferences (a primary-key lookup), the roster when the policy asks, one insert.

use rusqlite::{Connection, OptionalExtension, params};

use super::{Policy, Prefs};
use crate::storage::{Quota, Storage, StorageError, usage_in};

/// Rows the archive may keep before others' writes (roster, offline messages) are refused:
/// the archive evicts its oldest rows to stay under 7/8 of the account's byte quota, so the
/// last eighth is always free for the rest (XEP-0313 does not say; see `mod.rs`).
fn archive_budget(quota: &Quota) -> u64 {
    quota.stored_bytes / 8 * 7
}

/// Rows evicted at once when the archive is over its budget.
const EVICT_BATCH: i64 = 64;

/// An archive query as storage runs it (built and bounded by `query.rs`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only messages with this bare JID (XEP-0313 §4.1.1).
    pub with: Option<String>,
    /// Archived at or after, Unix seconds (§4.1.2).
    pub start: Option<i64>,
    /// Archived at or before (§4.1.2).
    pub end: Option<i64>,
    /// Only ids after this one (RSM `<after/>`, §4.1.4 `after-id`).
    pub after: Option<i64>,
    /// Only ids before this one (RSM `<before/>` with an id, `before-id`).
    pub before: Option<i64>,
    /// The page nearest the end (RSM `<before/>`, given or empty): newest first.
    pub from_end: bool,
    /// Rows in the page.
    pub max: usize,
    /// Serialized bytes in the page at most (the last row may pass it): a page of large
    /// messages stays bounded in memory.
    pub max_bytes: usize,
}

/// One archived message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// The message, serialized standalone (`xmlns='jabber:client'`).
    pub stanza: String,
}

/// A page of results, oldest first, and whether it reaches the end of the query in the
/// direction it was read (XEP-0313 §4.3 `complete`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page {
    pub rows: Vec<Row>,
    pub complete: bool,
}

/// Why a query was not run.
#[derive(Debug)]
pub enum QueryError {
    /// An `after`/`before` id that is not in the account's archive (XEP-0313 §4.1.4:
    /// `item-not-found`).
    UnknownId,
    Storage(StorageError),
}

impl From<StorageError> for QueryError {
    fn from(e: StorageError) -> QueryError {
        QueryError::Storage(e)
    }
}

/// Each account's message archive (XEP-0313).
pub trait ArchiveStore {
    /// Archives `stanza` for `user` (a message exchanged with `with`, a bare JID) if the
    /// account exists and its preferences (or `default` when it has none) keep messages
    /// with `with`; the archive id, or `None` when not archived. Over the archive's share
    /// of the byte quota the oldest rows no offline message needs go first; if none can,
    /// the message is not archived (it is still delivered).
    fn archive(
        &self,
        user: &str,
        with: &str,
        stanza: &str,
        default: Policy,
        quota: &Quota,
    ) -> Result<Option<i64>, StorageError>;
    /// Queues, without waiting for the disk ([`Storage::write_deferred`]), the archive row
    /// `id` (allocated by the caller, above every id in the archive) of `user`'s message
    /// with `with`, archived now; made room for as [`ArchiveStore::archive`] does (when no
    /// room can be made, or the account is gone, the row is left out). Returns whether a
    /// task commits it; if not, the caller runs `Storage::flush_deferred`.
    fn archive_deferred(
        &self,
        id: i64,
        user: &str,
        with: &str,
        stanza: String,
        quota: &Quota,
    ) -> bool;
    /// Whether `user` exists, and its stored preferences: `None` for no account.
    fn archive_settings(&self, user: &str) -> Result<Option<Option<Prefs>>, StorageError>;
    /// Whether `jid` is in `user`'s roster (the `roster` policy, XEP-0313 §6.1).
    fn in_roster(&self, user: &str, jid: &str) -> Result<bool, StorageError>;
    /// The highest archive id in use (0 for none).
    fn max_archive_id(&self) -> Result<i64, StorageError>;
    /// A page of `user`'s archive.
    fn archive_query(&self, user: &str, filter: &Filter) -> Result<Page, QueryError>;
    /// `user`'s stored preferences, if any.
    fn archive_prefs(&self, user: &str) -> Result<Option<Prefs>, StorageError>;
    /// Stores `user`'s preferences; `false` if there is no such account.
    fn set_archive_prefs(&self, user: &str, prefs: &Prefs) -> Result<bool, StorageError>;
    /// Deletes up to `batch` rows, of any account, archived before `before` (Unix
    /// seconds), oldest first, skipping those an offline message points at; how many went.
    fn expire_archive(&self, before: i64, batch: usize) -> Result<usize, StorageError>;
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Always => "always",
            Policy::Never => "never",
            Policy::Roster => "roster",
        }
    }
}

fn join(jids: &[String]) -> String {
    jids.join("\n")
}

fn split(s: &str) -> Vec<String> {
    s.split('\n')
        .filter(|j| !j.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Whether `user`'s preferences (or `default`) keep messages with `with` (XEP-0313 §6.1:
/// `never` wins over `always`, both over the default).
fn keeps(conn: &Connection, user: &str, with: &str, default: Policy) -> rusqlite::Result<bool> {
    let prefs = conn
        .prepare_cached(
            "SELECT default_policy, always, never FROM archive_prefs WHERE localpart = ?1",
        )?
        .query_row([user], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .optional()?;
    let policy = match &prefs {
        None => default,
        Some((_, _, never)) if never.split('\n').any(|j| j == with) => return Ok(false),
        Some((_, always, _)) if always.split('\n').any(|j| j == with) => return Ok(true),
        Some((p, _, _)) => Policy::parse(p).unwrap_or(default),
    };
    match policy {
        Policy::Always => Ok(true),
        Policy::Never => Ok(false),
        Policy::Roster => conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM roster_items WHERE localpart = ?1 AND jid = ?2)",
            )?
            .query_row(params![user, with], |r| r.get(0)),
    }
}

/// Deletes `user`'s oldest archived rows that no offline message points at; how many.
fn evict_oldest(conn: &Connection, user: &str) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "DELETE FROM archive WHERE id IN (
             SELECT a.id FROM archive a WHERE a.localpart = ?1
                AND NOT EXISTS (SELECT 1 FROM offline_messages o WHERE o.archive_id = a.id)
              ORDER BY a.id LIMIT ?2)",
    )?
    .execute(params![user, EVICT_BATCH])
}

/// Inserts one archive row unless the account is gone, after making room under the
/// archive's share of the quota; whether it was inserted. `id` `None`: the next rowid.
fn insert_row(
    conn: &Connection,
    err: &dyn Fn(rusqlite::Error) -> StorageError,
    row: (Option<i64>, &str, &str, i64, &str),
    quota: &Quota,
) -> Result<bool, StorageError> {
    let (id, user, with, at, stanza) = row;
    let Some(mut usage) = usage_in(conn, user).map_err(err)? else {
        return Ok(false);
    };
    let size = stanza.len() as u64;
    let budget = archive_budget(quota);
    // Over budget: the oldest go first (what a user of a phone's chat history expects), a
    // few at a time; a bounded number of rounds per message.
    let mut rounds = 0;
    while usage.bytes.saturating_add(size) > budget {
        rounds += 1;
        if rounds > 16 || evict_oldest(conn, user).map_err(err)? == 0 {
            return Ok(false);
        }
        usage = usage_in(conn, user).map_err(err)?.unwrap_or(usage);
    }
    conn.prepare_cached(
        "INSERT INTO archive (id, localpart, with_jid, at, stanza) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut st| st.execute(params![id, user, with, at, stanza]))
    .map_err(err)?;
    Ok(true)
}

impl ArchiveStore for Storage {
    fn archive_deferred(
        &self,
        id: i64,
        user: &str,
        with: &str,
        stanza: String,
        quota: &Quota,
    ) -> bool {
        let (user, with, quota) = (user.to_owned(), with.to_owned(), *quota);
        let at = crate::storage::unix_now();
        let bytes = stanza.len() + user.len() + with.len();
        self.write_deferred(bytes, move |s, conn| {
            let err = |e| s.sqlite_err("archive a message")(e);
            let kept = insert_row(conn, &err, (Some(id), &user, &with, at, &stanza), &quota)?;
            if !kept {
                log::debug!("archive: message {id} of {user:?} not kept (no room or no account)");
            }
            Ok(())
        })
    }

    fn archive_settings(&self, user: &str) -> Result<Option<Option<Prefs>>, StorageError> {
        let conn = self.conn();
        let row = conn
            .prepare_cached(
                "SELECT p.default_policy, p.always, p.never FROM accounts a
                   LEFT JOIN archive_prefs p ON p.localpart = a.localpart
                  WHERE a.localpart = ?1",
            )
            .and_then(|mut st| {
                st.query_row([user], |r| {
                    Ok((
                        r.get::<_, Option<String>>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, Option<String>>(2)?,
                    ))
                })
                .optional()
            })
            .map_err(self.sqlite_err("read archive preferences"))?;
        Ok(row.map(|(d, always, never)| {
            d.map(|d| Prefs {
                default: Policy::parse(&d).unwrap_or(Policy::Always),
                always: split(&always.unwrap_or_default()),
                never: split(&never.unwrap_or_default()),
            })
        }))
    }

    fn in_roster(&self, user: &str, jid: &str) -> Result<bool, StorageError> {
        self.conn()
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM roster_items WHERE localpart = ?1 AND jid = ?2)",
            )
            .and_then(|mut st| st.query_row(params![user, jid], |r| r.get(0)))
            .map_err(self.sqlite_err("read the roster"))
    }

    fn max_archive_id(&self) -> Result<i64, StorageError> {
        self.conn()
            .query_row("SELECT COALESCE(MAX(id), 0) FROM archive", [], |r| r.get(0))
            .map_err(self.sqlite_err("read the archive"))
    }

    fn archive(
        &self,
        user: &str,
        with: &str,
        stanza: &str,
        default: Policy,
        quota: &Quota,
    ) -> Result<Option<i64>, StorageError> {
        let (user, with, stanza, quota) =
            (user.to_owned(), with.to_owned(), stanza.to_owned(), *quota);
        self.write(move |s, conn| {
            let err = |e| s.sqlite_err("archive a message")(e);
            if usage_in(conn, &user).map_err(err)?.is_none()
                || !keeps(conn, &user, &with, default).map_err(err)?
            {
                return Ok(None);
            }
            let now = crate::storage::unix_now();
            if !insert_row(conn, &err, (None, &user, &with, now, &stanza), &quota)? {
                return Ok(None);
            }
            Ok(Some(conn.last_insert_rowid()))
        })
    }

    fn archive_query(&self, user: &str, f: &Filter) -> Result<Page, QueryError> {
        let conn = self.conn();
        let err = |e| self.sqlite_err("read the archive")(e);
        for id in [f.after, f.before].into_iter().flatten() {
            let known: bool = conn
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM archive WHERE id = ?1 AND localpart = ?2)",
                )
                .and_then(|mut st| st.query_row(params![id, user], |r| r.get(0)))
                .map_err(&err)?;
            if !known {
                return Err(QueryError::UnknownId);
            }
        }
        // The id and time bounds are always bound (to the extremes when absent) so that
        // the id range is a range of the index, not a filter over every row.
        let sql = match (f.with.is_some(), f.from_end) {
            (false, false) => {
                "SELECT id, at, stanza FROM archive INDEXED BY archive_by_user
                  WHERE localpart = ?1 AND id > ?2 AND id < ?3 AND at >= ?4 AND at <= ?5
                  ORDER BY id ASC LIMIT ?6"
            }
            (false, true) => {
                "SELECT id, at, stanza FROM archive INDEXED BY archive_by_user
                  WHERE localpart = ?1 AND id > ?2 AND id < ?3 AND at >= ?4 AND at <= ?5
                  ORDER BY id DESC LIMIT ?6"
            }
            (true, false) => {
                "SELECT id, at, stanza FROM archive INDEXED BY archive_by_with
                  WHERE localpart = ?1 AND id > ?2 AND id < ?3 AND at >= ?4 AND at <= ?5
                    AND with_jid = ?7
                  ORDER BY id ASC LIMIT ?6"
            }
            (true, true) => {
                "SELECT id, at, stanza FROM archive INDEXED BY archive_by_with
                  WHERE localpart = ?1 AND id > ?2 AND id < ?3 AND at >= ?4 AND at <= ?5
                    AND with_jid = ?7
                  ORDER BY id DESC LIMIT ?6"
            }
        };
        let mut st = conn.prepare_cached(sql).map_err(&err)?;
        // One more than asked: whether the page reaches the end.
        let limit = i64::try_from(f.max.saturating_add(1)).unwrap_or(i64::MAX);
        let mut bound = vec![
            rusqlite::types::Value::from(user.to_owned()),
            f.after.unwrap_or(i64::MIN).into(),
            f.before.unwrap_or(i64::MAX).into(),
            f.start.unwrap_or(i64::MIN).into(),
            f.end.unwrap_or(i64::MAX).into(),
            limit.into(),
        ];
        if let Some(w) = &f.with {
            bound.push(w.clone().into());
        }
        let mut rows = st.query(rusqlite::params_from_iter(bound)).map_err(&err)?;
        let mut page = Page {
            rows: Vec::new(),
            complete: true,
        };
        let mut bytes = 0usize;
        while let Some(r) = rows.next().map_err(&err)? {
            if page.rows.len() >= f.max || bytes >= f.max_bytes {
                page.complete = false;
                break;
            }
            let row = Row {
                id: r.get(0).map_err(&err)?,
                at: r.get(1).map_err(&err)?,
                stanza: r.get(2).map_err(&err)?,
            };
            bytes = bytes.saturating_add(row.stanza.len());
            page.rows.push(row);
        }
        if f.from_end {
            page.rows.reverse();
        }
        Ok(page)
    }

    fn archive_prefs(&self, user: &str) -> Result<Option<Prefs>, StorageError> {
        let conn = self.conn();
        let row = conn
            .prepare_cached(
                "SELECT default_policy, always, never FROM archive_prefs WHERE localpart = ?1",
            )
            .and_then(|mut st| {
                st.query_row([user], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .optional()
            })
            .map_err(self.sqlite_err("read archive preferences"))?;
        Ok(row.map(|(d, always, never)| Prefs {
            default: Policy::parse(&d).unwrap_or(Policy::Always),
            always: split(&always),
            never: split(&never),
        }))
    }

    fn set_archive_prefs(&self, user: &str, prefs: &Prefs) -> Result<bool, StorageError> {
        let (user, prefs) = (user.to_owned(), prefs.clone());
        self.write(move |s, conn| {
            let err = |e| s.sqlite_err("store archive preferences")(e);
            if usage_in(conn, &user).map_err(&err)?.is_none() {
                return Ok(false);
            }
            conn.prepare_cached(
                "INSERT INTO archive_prefs (localpart, default_policy, always, never)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (localpart) DO UPDATE SET default_policy = excluded.default_policy,
                     always = excluded.always, never = excluded.never",
            )
            .and_then(|mut st| {
                st.execute(params![
                    user,
                    prefs.default.as_str(),
                    join(&prefs.always),
                    join(&prefs.never)
                ])
            })
            .map_err(&err)?;
            Ok(true)
        })
    }

    fn expire_archive(&self, before: i64, batch: usize) -> Result<usize, StorageError> {
        let batch = i64::try_from(batch).unwrap_or(i64::MAX);
        self.write(move |s, conn| {
            // Rows are in arrival order: the oldest `batch` by id, of which those older
            // than the cutoff go. Reading by id (the primary key) rather than by `at`
            // needs no index on the time; a clock that jumped back leaves a few rows
            // for the next round.
            conn.prepare_cached(
                "DELETE FROM archive WHERE id IN (
                     SELECT a.id FROM archive a WHERE a.at < ?1
                        AND NOT EXISTS (SELECT 1 FROM offline_messages o WHERE o.archive_id = a.id)
                      ORDER BY a.id LIMIT ?2)",
            )
            .and_then(|mut st| st.execute(params![before, batch]))
            .map_err(s.sqlite_err("expire archived messages"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::offline::OfflineStore as _;
    use crate::storage::Accounts as _;

    fn store() -> (tempfile::TempDir, Storage) {
        crate::storage::test_store(&["alice", "bob"])
    }

    fn msg(i: usize) -> String {
        format!("<message xmlns=\"jabber:client\"><body>m{i}</body></message>")
    }

    fn page(s: &Storage, f: Filter) -> Vec<String> {
        s.archive_query("alice", &f)
            .unwrap()
            .rows
            .into_iter()
            .map(|r| r.stanza)
            .collect()
    }

    fn filter(max: usize) -> Filter {
        Filter {
            max,
            max_bytes: usize::MAX,
            ..Filter::default()
        }
    }

    #[test]
    fn pages_forward_backward_and_by_with() {
        let (_d, s) = store();
        let mut ids = Vec::new();
        for i in 0..10 {
            let with = if i % 2 == 0 { "bob@h" } else { "carol@h" };
            let id = s
                .archive("alice", with, &msg(i), Policy::Always, &Quota::DEFAULT)
                .unwrap()
                .unwrap();
            ids.push(id);
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let first = s.archive_query("alice", &filter(3)).unwrap();
        assert_eq!(first.rows.len(), 3);
        assert!(!first.complete);
        assert_eq!(first.rows[0].stanza, msg(0));
        // The last page: newest three, oldest first.
        let last = page(
            &s,
            Filter {
                from_end: true,
                ..filter(3)
            },
        );
        assert_eq!(last, [msg(7), msg(8), msg(9)]);
        // After an id in the middle, and before one.
        let after = s
            .archive_query(
                "alice",
                &Filter {
                    after: Some(ids[7]),
                    ..filter(5)
                },
            )
            .unwrap();
        assert_eq!(after.rows.len(), 2);
        assert!(after.complete);
        let before = page(
            &s,
            Filter {
                before: Some(ids[3]),
                from_end: true,
                ..filter(2)
            },
        );
        assert_eq!(before, [msg(1), msg(2)]);
        let with = page(
            &s,
            Filter {
                with: Some("bob@h".into()),
                ..filter(10)
            },
        );
        assert_eq!(with, [msg(0), msg(2), msg(4), msg(6), msg(8)]);
        // bob's archive is his own.
        assert!(s.archive_query("bob", &filter(10)).unwrap().rows.is_empty());
        assert!(matches!(
            s.archive_query(
                "bob",
                &Filter {
                    after: Some(ids[0]),
                    ..filter(1)
                }
            ),
            Err(QueryError::UnknownId)
        ));
    }

    #[test]
    fn time_bounds_and_page_bytes() {
        let (_d, s) = store();
        for i in 0..4 {
            s.archive("alice", "bob@h", &msg(i), Policy::Always, &Quota::DEFAULT)
                .unwrap();
        }
        let future = crate::storage::unix_now() + 100;
        assert!(
            page(
                &s,
                Filter {
                    start: Some(future),
                    ..filter(10)
                }
            )
            .is_empty()
        );
        assert_eq!(
            page(
                &s,
                Filter {
                    end: Some(future),
                    ..filter(10)
                }
            )
            .len(),
            4
        );
        let small = s
            .archive_query(
                "alice",
                &Filter {
                    max_bytes: 1,
                    ..filter(10)
                },
            )
            .unwrap();
        assert_eq!(small.rows.len(), 1);
        assert!(!small.complete);
    }

    #[test]
    fn preferences_decide() {
        let (_d, s) = store();
        let q = Quota::DEFAULT;
        assert_eq!(
            s.archive("nobody", "bob@h", &msg(0), Policy::Always, &q)
                .unwrap(),
            None
        );
        assert_eq!(
            s.archive("alice", "bob@h", &msg(0), Policy::Never, &q)
                .unwrap(),
            None
        );
        // Roster: only contacts.
        assert_eq!(
            s.archive("alice", "bob@h", &msg(0), Policy::Roster, &q)
                .unwrap(),
            None
        );
        s.conn()
            .execute(
                "INSERT INTO roster_items (localpart, jid) VALUES ('alice', 'bob@h')",
                [],
            )
            .unwrap();
        assert!(
            s.archive("alice", "bob@h", &msg(0), Policy::Roster, &q)
                .unwrap()
                .is_some()
        );
        let prefs = Prefs {
            default: Policy::Never,
            always: vec!["carol@h".into()],
            never: vec!["bob@h".into()],
        };
        assert!(s.set_archive_prefs("alice", &prefs).unwrap());
        assert!(!s.set_archive_prefs("nobody", &prefs).unwrap());
        assert_eq!(s.archive_prefs("alice").unwrap(), Some(prefs));
        assert_eq!(s.archive_prefs("bob").unwrap(), None);
        let a = |w: &str| {
            s.archive("alice", w, &msg(1), Policy::Always, &q)
                .unwrap()
                .is_some()
        };
        assert!(a("carol@h"));
        assert!(!a("bob@h"));
        assert!(!a("dave@h"));
    }

    /// The archive counts in the account's bytes; over its share the oldest go, except
    /// what an offline message points at.
    #[test]
    fn quota_evicts_the_oldest_not_referenced() {
        let (_d, s) = store();
        let one = msg(0).len() as u64;
        // Room for 8 messages in the archive's 7/8.
        let q = Quota {
            stored_bytes: (one * 8) / 7 * 8 + 8,
            ..Quota::DEFAULT
        };
        let mut ids = Vec::new();
        for i in 0..8 {
            ids.push(
                s.archive("alice", "bob@h", &msg(i), Policy::Always, &q)
                    .unwrap()
                    .unwrap(),
            );
        }
        assert_eq!(s.stored_bytes("alice").unwrap(), one * 8);
        // The oldest is still waiting offline.
        s.store_offline_archived("alice", ids[0], "<delay/>", &q)
            .unwrap();
        s.archive("alice", "bob@h", &msg(8), Policy::Always, &q)
            .unwrap()
            .unwrap();
        let kept = page(&s, filter(100));
        assert_eq!(kept.first(), Some(&msg(0)));
        assert!(kept.len() < 9 && kept.contains(&msg(8)), "{kept:?}");
        assert!(s.stored_bytes("alice").unwrap() <= q.stored_bytes);
        // Deleting the account deletes the archive.
        s.delete_account("alice").unwrap();
        let n: i64 = s
            .conn()
            .query_row("SELECT count(*) FROM archive", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
    }

    /// Deferred rows land with the next commit, in order, with the caller's ids; a row for
    /// an account that is gone is left out, the others kept.
    #[test]
    fn deferred_rows_commit_with_the_next_write() {
        let (_d, s) = store();
        let q = Quota::DEFAULT;
        assert_eq!(s.max_archive_id().unwrap(), 0);
        assert!(!s.archive_deferred(5, "alice", "bob@h", msg(0), &q));
        assert!(!s.archive_deferred(6, "nobody", "bob@h", msg(1), &q));
        assert!(!s.archive_deferred(7, "alice", "bob@h", msg(2), &q));
        assert!(page(&s, filter(10)).is_empty());
        // Any write leads the batch, deferred rows first: a reference to one works.
        assert_eq!(
            s.store_offline_archived("alice", 7, "<delay/>", &q)
                .unwrap(),
            Some(crate::features::offline::Stored::Stored)
        );
        assert_eq!(page(&s, filter(10)), [msg(0), msg(2)]);
        assert_eq!(s.max_archive_id().unwrap(), 7);
        assert_eq!(s.archive_settings("alice").unwrap(), Some(None));
        assert_eq!(s.archive_settings("nobody").unwrap(), None);
        assert!(!s.in_roster("alice", "bob@h").unwrap());
        s.archive_deferred(8, "alice", "bob@h", msg(3), &q);
        s.flush_deferred();
        assert_eq!(page(&s, filter(10)).len(), 3);
    }

    #[test]
    fn retention_keeps_what_offline_needs() {
        let (_d, s) = store();
        let q = Quota::DEFAULT;
        let a = s
            .archive("alice", "bob@h", &msg(0), Policy::Always, &q)
            .unwrap()
            .unwrap();
        s.archive("alice", "bob@h", &msg(1), Policy::Always, &q)
            .unwrap();
        s.store_offline_archived("alice", a, "<delay/>", &q)
            .unwrap();
        let future = crate::storage::unix_now() + 10;
        assert_eq!(s.expire_archive(future, 100).unwrap(), 1);
        assert_eq!(page(&s, filter(10)), [msg(0)]);
        // Once delivered, it may go.
        assert_eq!(s.take_offline("alice", 10).unwrap().len(), 1);
        assert_eq!(s.expire_archive(future, 100).unwrap(), 1);
        assert_eq!(s.expire_archive(0, 100).unwrap(), 0);
    }
}
