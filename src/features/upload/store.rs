//! XEP-0363 storage: the `uploads` table (migration 0012), one row per slot.

use rusqlite::{OptionalExtension as _, params};

use crate::storage::{Storage, StorageError};

/// One slot as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadRow {
    pub token: String,
    pub localpart: String,
    pub filename: String,
    pub size: u64,
    pub content_type: String,
    /// Unix seconds of the completed PUT; `None` while the slot waits.
    pub stored: Option<i64>,
    /// Unix seconds after which the file goes; `None`: never.
    pub expires: Option<i64>,
    /// Unix seconds the slot was given.
    pub created: i64,
}

/// The least a file counts for in the quota: a file takes at least a block on disk, and
/// empty files must not be free (so the quota also bounds how many rows one account has).
pub const MIN_CHARGE: u64 = 4096;

/// Slots one account may have waiting for their PUT at once.
pub const MAX_OPEN_SLOTS: i64 = 32;

/// What a new slot asks of storage.
pub enum NewSlot {
    /// Stored: the account's quota allowed it.
    Given,
    /// Refused: the account keeps this many bytes already, and the slot would pass the
    /// quota.
    OverQuota { used: u64 },
    /// No such account (removed meanwhile).
    NoAccount,
}

/// The slots and files per account.
pub trait UploadStore {
    /// Stores a slot for `row.localpart` unless its files and open slots plus
    /// `row.size` would pass `quota` bytes (each counted at least [`MIN_CHARGE`]) or it
    /// has [`MAX_OPEN_SLOTS`] waiting: checked and written in one transaction.
    fn upload_new_slot(&self, row: &UploadRow, quota: u64) -> Result<NewSlot, StorageError>;
    /// The slot `token`.
    fn upload_get(&self, token: &str) -> Result<Option<UploadRow>, StorageError>;
    /// Marks the slot `token` as uploaded at `now` (expiring at `expires`); false if it
    /// is gone or already uploaded.
    fn upload_stored(
        &self,
        token: &str,
        now: i64,
        expires: Option<i64>,
    ) -> Result<bool, StorageError>;
    /// Deletes the files past their expiry and the slots given before `slots_before`
    /// and never used, except those in `keep` (a PUT in progress); returns their tokens.
    fn upload_expire(
        &self,
        now: i64,
        slots_before: i64,
        keep: &[String],
    ) -> Result<Vec<String>, StorageError>;
    /// Deletes every row of `user`, returning the tokens.
    fn upload_delete_account(&self, user: &str) -> Result<Vec<String>, StorageError>;
    /// Whether a row names `token` (the sweep removes files no row names).
    fn upload_exists(&self, token: &str) -> Result<bool, StorageError>;
    /// The bytes `user` keeps: files and open slots, each at least [`MIN_CHARGE`].
    fn upload_used(&self, user: &str) -> Result<u64, StorageError>;
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl UploadStore for Storage {
    fn upload_new_slot(&self, row: &UploadRow, quota: u64) -> Result<NewSlot, StorageError> {
        let mut conn = self.conn();
        let err = self.sqlite_err("store an upload slot");
        let tx = conn
            .transaction()
            .map_err(self.sqlite_err("store an upload slot"))?;
        let exists: bool = match tx
            .query_row(
                "SELECT 1 FROM accounts WHERE localpart = ?1",
                [&row.localpart],
                |_| Ok(()),
            )
            .optional()
        {
            Ok(o) => o.is_some(),
            Err(e) => return Err(err(e)),
        };
        if !exists {
            return Ok(NewSlot::NoAccount);
        }
        let (used, open): (i64, i64) = match tx.query_row(
            "SELECT COALESCE(SUM(MAX(size, ?2)), 0), COUNT(*) FILTER (WHERE stored IS NULL) \
             FROM uploads WHERE localpart = ?1",
            params![row.localpart, to_i64(MIN_CHARGE)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        ) {
            Ok(u) => u,
            Err(e) => return Err(err(e)),
        };
        let used = to_u64(used);
        if used.saturating_add(row.size.max(MIN_CHARGE)) > quota || open >= MAX_OPEN_SLOTS {
            return Ok(NewSlot::OverQuota { used });
        }
        if let Err(e) = tx.execute(
            "INSERT INTO uploads (token, localpart, filename, size, content_type, created) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                row.token,
                row.localpart,
                row.filename,
                to_i64(row.size),
                row.content_type,
                row.created
            ],
        ) {
            return Err(err(e));
        }
        tx.commit().map_err(err)?;
        Ok(NewSlot::Given)
    }

    fn upload_get(&self, token: &str) -> Result<Option<UploadRow>, StorageError> {
        let conn = self.conn();
        conn.prepare_cached(
            "SELECT token, localpart, filename, size, content_type, stored, expires, created \
             FROM uploads WHERE token = ?1",
        )
        .and_then(|mut s| {
            s.query_row([token], |r| {
                Ok(UploadRow {
                    token: r.get(0)?,
                    localpart: r.get(1)?,
                    filename: r.get(2)?,
                    size: to_u64(r.get(3)?),
                    content_type: r.get(4)?,
                    stored: r.get(5)?,
                    expires: r.get(6)?,
                    created: r.get(7)?,
                })
            })
            .optional()
        })
        .map_err(self.sqlite_err("read an upload slot"))
    }

    fn upload_stored(
        &self,
        token: &str,
        now: i64,
        expires: Option<i64>,
    ) -> Result<bool, StorageError> {
        let conn = self.conn();
        let n = conn
            .execute(
                "UPDATE uploads SET stored = ?2, expires = ?3 \
                 WHERE token = ?1 AND stored IS NULL",
                params![token, now, expires],
            )
            .map_err(self.sqlite_err("mark an upload complete"))?;
        Ok(n == 1)
    }

    fn upload_expire(
        &self,
        now: i64,
        slots_before: i64,
        keep: &[String],
    ) -> Result<Vec<String>, StorageError> {
        let mut conn = self.conn();
        let err = || self.sqlite_err("expire uploads");
        let tx = conn.transaction().map_err(err())?;
        let mut tokens: Vec<String> = {
            let mut stmt = tx
                .prepare(
                    "SELECT token FROM uploads WHERE (stored IS NOT NULL AND expires <= ?1) \
                     OR (stored IS NULL AND created < ?2)",
                )
                .map_err(err())?;
            let rows = stmt
                .query_map(params![now, slots_before], |r| r.get(0))
                .map_err(err())?;
            rows.collect::<Result<_, _>>().map_err(err())?
        };
        tokens.retain(|t| !keep.contains(t));
        for t in &tokens {
            tx.execute("DELETE FROM uploads WHERE token = ?1", [t])
                .map_err(err())?;
        }
        tx.commit().map_err(err())?;
        Ok(tokens)
    }

    fn upload_delete_account(&self, user: &str) -> Result<Vec<String>, StorageError> {
        let mut conn = self.conn();
        let err = || self.sqlite_err("delete an account's uploads");
        let tx = conn.transaction().map_err(err())?;
        let tokens: Vec<String> = {
            let mut stmt = tx
                .prepare("SELECT token FROM uploads WHERE localpart = ?1")
                .map_err(err())?;
            let rows = stmt.query_map([user], |r| r.get(0)).map_err(err())?;
            rows.collect::<Result<_, _>>().map_err(err())?
        };
        tx.execute("DELETE FROM uploads WHERE localpart = ?1", [user])
            .map_err(err())?;
        tx.commit().map_err(err())?;
        Ok(tokens)
    }

    fn upload_exists(&self, token: &str) -> Result<bool, StorageError> {
        let conn = self.conn();
        conn.query_row(
            "SELECT 1 FROM uploads WHERE token = ?1",
            [token],
            |_| Ok(()),
        )
        .optional()
        .map(|o| o.is_some())
        .map_err(self.sqlite_err("look up an upload"))
    }

    fn upload_used(&self, user: &str) -> Result<u64, StorageError> {
        let conn = self.conn();
        conn.query_row(
            "SELECT COALESCE(SUM(MAX(size, ?2)), 0) FROM uploads WHERE localpart = ?1",
            params![user, to_i64(MIN_CHARGE)],
            |r| r.get::<_, i64>(0),
        )
        .map(to_u64)
        .map_err(self.sqlite_err("count an account's uploads"))
    }
}
