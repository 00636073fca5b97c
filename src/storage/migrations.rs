//! Schema migrations, numbered by `PRAGMA user_version`.
//!
//! `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`. Each script runs in its own
//! `BEGIN IMMEDIATE` transaction that also bumps `user_version`, so a power cut leaves the file
//! at one version or the next, never between; and the version is read again inside that
//! transaction, so the admin CLI and the server opening the same file at once cannot apply a
//! script twice. Scripts are append-only: never edit one that has shipped, add the next.

use super::StorageError;
use rusqlite::{Connection, TransactionBehavior};
use std::path::Path;

/// The schema scripts, in order.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_accounts.sql"),
    include_str!("migrations/0002_im.sql"),
    include_str!("migrations/0003_usage.sql"),
    include_str!("migrations/0004_household.sql"),
    include_str!("migrations/0005_invites.sql"),
    include_str!("migrations/0006_invite_effects.sql"),
    include_str!("migrations/0007_archive.sql"),
    include_str!("migrations/0008_pep.sql"),
    include_str!("migrations/0009_private_vcard.sql"),
    include_str!("migrations/0010_push.sql"),
    include_str!("migrations/0011_muc.sql"),
    include_str!("migrations/0012_upload.sql"),
    include_str!("migrations/0013_device.sql"),
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Brings the database up to [`SCHEMA_VERSION`], or refuses a newer one.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StorageError> {
    apply(conn, path, MIGRATIONS)
}

/// [`migrate`] with the list of scripts as a parameter, so tests can break one.
fn apply(conn: &mut Connection, path: &Path, scripts: &[&str]) -> Result<(), StorageError> {
    // A handful of scripts: the length always fits.
    let supported = u32::try_from(scripts.len()).unwrap_or(u32::MAX);
    let sqlite = |action: &'static str| {
        move |source| StorageError::Sqlite {
            path: path.to_owned(),
            action,
            source,
        }
    };
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite("lock the database for a schema check"))?;
        let found: i64 = tx
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(sqlite("read the schema version"))?;
        let current = usize::try_from(found)
            .ok()
            .filter(|&v| v <= scripts.len())
            .ok_or_else(|| StorageError::TooNew {
                path: path.to_owned(),
                found,
                supported,
            })?;
        let Some(script) = scripts.get(current) else {
            // Up to date; the transaction only read, rolling it back is the same as committing.
            return Ok(());
        };
        // `current < scripts.len() <= u32::MAX`: no truncation.
        let version = current as u32 + 1;
        let failed = |source| StorageError::Migration {
            path: path.to_owned(),
            version,
            source,
        };
        tx.execute_batch(script).map_err(failed)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(failed)?;
        tx.commit().map_err(failed)?;
        log::info!(
            "database {}: schema migrated to version {version}",
            path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> (tempfile::TempDir, std::path::PathBuf, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.db");
        let conn = Connection::open(&path).unwrap();
        (dir, path, conn)
    }

    fn user_version(conn: &Connection) -> i64 {
        conn.pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    }

    fn has_table(conn: &Connection, name: &str) -> bool {
        conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1)",
            [name],
            |r| r.get(0),
        )
        .unwrap()
    }

    #[test]
    fn from_empty_to_current() {
        let (_dir, path, mut conn) = fresh();
        migrate(&mut conn, &path).unwrap();
        assert_eq!(user_version(&conn), i64::from(SCHEMA_VERSION));
        assert!(has_table(&conn, "accounts"));
        assert!(has_table(&conn, "scram_keys"));
        for t in [
            "roster_items",
            "roster_groups",
            "roster_versions",
            "subscription_requests",
            "offline_messages",
            "blocklist",
            "last_activity",
            "invites",
            "archive",
            "archive_prefs",
        ] {
            assert!(has_table(&conn, t), "{t}");
        }
        // Running again is a no-op.
        migrate(&mut conn, &path).unwrap();
        assert_eq!(user_version(&conn), i64::from(SCHEMA_VERSION));
    }

    #[test]
    fn usage_counts_what_a_version_2_database_already_holds() {
        let (_dir, path, mut conn) = fresh();
        apply(&mut conn, &path, &MIGRATIONS[..2]).unwrap();
        conn.execute_batch(
            "PRAGMA foreign_keys = ON;
             INSERT INTO accounts VALUES ('ann', 'x', 0), ('bo', 'x', 0);
             INSERT INTO roster_items (localpart, jid, name) VALUES ('ann', 'bo@h', 'Bö');
             INSERT INTO roster_groups VALUES ('ann', 'bo@h', 'kin');
             INSERT INTO subscription_requests VALUES ('ann', 'cy@h', '<p/>', 0);
             INSERT INTO offline_messages (localpart, stanza, stored_at) VALUES ('ann', '<m/>', 0);
             INSERT INTO blocklist VALUES ('ann', 'x@y');",
        )
        .unwrap();
        migrate(&mut conn, &path).unwrap();
        let usage = |user: &str| -> (i64, i64) {
            conn.query_row(
                "SELECT stored_bytes, (SELECT COALESCE(SUM(bytes), 0) FROM offline_messages
                  WHERE localpart = ?1) FROM accounts WHERE localpart = ?1",
                [user],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
        };
        // 4 + 3 ("Bö" is 3 bytes in UTF-8) + 3 + 4 + 3 in the account row, 4 offline.
        assert_eq!(usage("ann"), (17, 4));
        assert_eq!(usage("bo"), (0, 0));
    }

    #[test]
    fn applies_only_the_missing_steps() {
        let (_dir, path, mut conn) = fresh();
        apply(&mut conn, &path, &["CREATE TABLE a (x);"]).unwrap();
        apply(
            &mut conn,
            &path,
            &["CREATE TABLE a (x);", "CREATE TABLE b (x);"],
        )
        .unwrap();
        assert_eq!(user_version(&conn), 2);
        assert!(has_table(&conn, "b"));
    }

    #[test]
    fn newer_database_is_refused() {
        let (_dir, path, mut conn) = fresh();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let err = migrate(&mut conn, &path).unwrap_err();
        assert!(
            matches!(err, StorageError::TooNew { found, supported, .. }
                if found == i64::from(SCHEMA_VERSION + 1) && supported == SCHEMA_VERSION),
            "{err:?}"
        );
        let shown = err.to_string();
        assert!(shown.contains(&path.display().to_string()), "{shown}");
        assert!(shown.contains("newer hearth"), "{shown}");
        // Untouched.
        assert_eq!(user_version(&conn), i64::from(SCHEMA_VERSION + 1));
        assert!(!has_table(&conn, "accounts"));
    }

    #[test]
    fn negative_version_is_refused() {
        let (_dir, path, mut conn) = fresh();
        conn.pragma_update(None, "user_version", -1).unwrap();
        assert!(matches!(
            migrate(&mut conn, &path),
            Err(StorageError::TooNew { found: -1, .. })
        ));
    }

    #[test]
    fn failed_script_rolls_back_whole() {
        let (_dir, path, mut conn) = fresh();
        let scripts = ["CREATE TABLE a (x);", "CREATE TABLE b (x); NOT SQL;"];
        let err = apply(&mut conn, &path, &scripts).unwrap_err();
        assert!(
            matches!(err, StorageError::Migration { version: 2, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("version 2"), "{err}");
        assert_eq!(user_version(&conn), 1);
        assert!(has_table(&conn, "a"));
        assert!(!has_table(&conn, "b"));
    }
}
