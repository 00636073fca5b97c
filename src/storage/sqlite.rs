//! Opening `hearth.db` and the [`Storage`] handle around its connection.

use super::{StorageError, migrations};
use crate::pool::{Pool, PoolConfig};
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// The database file's name inside the data directory.
pub const DB_FILE_NAME: &str = "hearth.db";

/// How long a statement waits for another connection's write lock before failing. The admin
/// CLI and the running server share the file; their writes are short, so this is generous.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The storage threads. One at a time runs on the connection; the others wait for it and
/// bring their writes to its group commit (`group.rs`), so the thread count is also the
/// largest batch: with 4, storing offline messages (10 senders, 32 in flight each) was
/// 28% slower and wrote 45% more bytes per message than with `smol::unblock`'s pool;
/// with 16 both matched it (BENCHMARKS.md). Callers past the queue wait asynchronously,
/// holding no thread, and the threads end after 5 s idle. Unlike `smol::unblock`'s pool
/// (up to 500 threads) this bounds what a flood can start.
const POOL: PoolConfig = PoolConfig {
    name: "hearth-storage",
    threads: 16,
    queue: 1024,
    idle_exit: Duration::from_secs(5),
};

/// Prepared statements kept per connection (rusqlite's default is 16).
const STATEMENT_CACHE: usize = 32;

/// Puts the file in WAL mode and returns the journal mode it is in. Switching needs the
/// file to itself for a moment, and SQLite answers "database is locked" at once rather
/// than through the busy timeout when another process holds it (several `hearth user
/// add` starting together on a new file): retried here, within [`BUSY_TIMEOUT`].
fn switch_to_wal(conn: &Connection) -> rusqlite::Result<String> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    let mut pause = Duration::from_millis(2);
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

/// The handle to hearth's database. Cheap to clone (an `Arc` inside); every clone uses the
/// same connection, so all of a process's writes go through one owner (DESIGN.md "Storage").
///
/// Methods block: async code calls them through [`Storage::run_blocking`].
#[derive(Clone)]
pub struct Storage {
    inner: Arc<Inner>,
    /// Whether accounts get SCRAM keys and SCRAM lookups answer (DESIGN.md "Credentials").
    /// Off means only PLAIN (inside TLS) can log in, and nothing password-equivalent for
    /// SCRAM sits in the file. Per handle, so it is outside the `Arc`.
    scram_keys: bool,
}

struct Inner {
    /// The database file, for error messages and for `hearth backup`.
    path: PathBuf,
    /// One connection per process, serialized by the mutex: SQLite has one writer anyway, and
    /// the statements are short (password hashing runs outside the lock).
    conn: Mutex<Connection>,
    /// Writes waiting for the next group commit (`group.rs`). Only drained by a thread
    /// holding `conn`, so a writer that gets `conn` finds its write either answered or here.
    queue: Mutex<Vec<Box<dyn super::group::Job>>>,
    /// The threads async callers' statements run on ([`Storage::run_blocking`]).
    pool: Pool,
    /// The household's members as last read (`features::household`): the roster view
    /// every presence broadcast and probe goes through reads them here, with no storage
    /// round trip. Filled by each read of the members, emptied by each write to them in
    /// this process while it holds `conn` (so a read cannot put back what a write just
    /// changed); another process's writes (`hearth household`) arrive with the household
    /// watcher's next read.
    household: Mutex<Option<Arc<[String]>>>,
    /// Deferred writes (`group.rs`): told when one is queued, and whether a task commits
    /// them (`Storage::flush_deferred_forever`) or their writers must.
    pub(super) deferred: super::group::Deferred,
}

impl Storage {
    /// Checks `hearth.db` in `data_dir` without changing it (for `hearth check`): `None`
    /// when there is none yet; otherwise its schema version and SQLite's
    /// `quick_check` verdict ("ok", or the first problems it found).
    pub fn inspect(data_dir: &Path) -> Result<Option<(u32, String)>, StorageError> {
        let path = data_dir.join(DB_FILE_NAME);
        if !path.exists() {
            return Ok(None);
        }
        let fail = |e: rusqlite::Error| StorageError::Sqlite {
            action: "check the database",
            path: path.clone(),
            source: e,
        };
        let conn = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(fail)?;
        let version: u32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(fail)?;
        let mut stmt = conn.prepare("PRAGMA quick_check(5)").map_err(fail)?;
        let verdict: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .map_err(fail)?
            .collect::<Result<_, _>>()
            .map_err(fail)?;
        Ok(Some((version, verdict.join("; "))))
    }

    /// Opens (creating if needed) `hearth.db` in `data_dir`, creating the directory (mode
    /// 0700) and the file (mode 0600) when they are missing, and migrates the schema.
    ///
    /// The connection runs in WAL mode with `synchronous=FULL` (an accepted write survives a
    /// power cut), foreign keys enforced, and a busy timeout so that `hearth user …` can run
    /// while the server does.
    pub fn open(data_dir: &Path) -> Result<Storage, StorageError> {
        create_private_dir(data_dir).map_err(|source| StorageError::CreateDir {
            path: data_dir.to_owned(),
            source,
        })?;
        let path = data_dir.join(DB_FILE_NAME);
        create_private_file(&path).map_err(|source| StorageError::CreateFile {
            path: path.clone(),
            source,
        })?;
        let sqlite = |action: &'static str| {
            let path = path.clone();
            move |source| StorageError::Sqlite {
                path,
                action,
                source,
            }
        };
        let mut conn = Connection::open(&path).map_err(sqlite("open the file"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sqlite("set the busy timeout"))?;
        // The statements of logins, rosters, presence and offline messages are prepared
        // once and kept (`prepare_cached`): parsing and planning each per use cost a third
        // of the CPU of storing an offline message. About twenty are in use; room for more.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // WAL is a property of the file and persists; the other two are per connection.
        let mode = switch_to_wal(&conn).map_err(sqlite("switch to WAL mode"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            // Some file systems (network mounts) cannot do WAL. Still correct, just less
            // concurrent: the busy timeout covers the difference.
            log::warn!(
                "database {}: WAL mode unavailable, journal mode is {mode}",
                path.display()
            );
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sqlite("set synchronous=FULL"))?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(sqlite("turn on foreign keys"))?;
        migrations::migrate(&mut conn, &path)?;
        Ok(Storage {
            inner: Arc::new(Inner {
                path,
                conn: Mutex::new(conn),
                queue: Mutex::new(Vec::new()),
                pool: Pool::new(POOL),
                household: Mutex::new(None),
                deferred: Default::default(),
            }),
            scram_keys: true,
        })
    }

    /// Turns storing and serving SCRAM keys on (the default) or off. Off: new and changed
    /// passwords get no SCRAM keys, and [`super::Accounts::scram_credentials`] answers `None`
    /// even for keys stored earlier, so only PLAIN works.
    #[must_use]
    pub fn with_scram_keys(mut self, on: bool) -> Storage {
        self.scram_keys = on;
        self
    }

    /// Runs `f` on a storage thread: how async code calls storage.
    pub async fn run_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Storage) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let storage = self.clone();
        self.inner
            .pool
            .run(move || f(&storage))
            .await
            .map_err(|_| StorageError::Unavailable)?
    }

    /// Whether SCRAM keys are on for this handle.
    pub fn scram_keys(&self) -> bool {
        self.scram_keys
    }

    /// Writes a consistent, compacted copy of the database to `dest`, which must not exist:
    /// mode 0600, checked with `PRAGMA integrity_check` and synced to the disk before this
    /// returns its size. SQLite's `VACUUM INTO` reads one snapshot, so a running server
    /// keeps writing meanwhile (WAL) and the copy holds every write committed before it.
    pub fn backup_to(&self, dest: &Path) -> Result<u64, StorageError> {
        let created = |source| StorageError::CreateFile {
            path: dest.to_owned(),
            source,
        };
        let Some(dest_str) = dest.to_str() else {
            return Err(created(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the path is not UTF-8",
            )));
        };
        // create_new: never overwrite an older backup, or the live database by mistake.
        // VACUUM INTO accepts an empty file, so the copy is private from its first byte.
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(dest).map_err(created)?;
        let copied = self.copy_into(dest, dest_str, &file);
        if copied.is_err() {
            // Leave nothing that looks like a backup behind.
            let _ = std::fs::remove_file(dest);
        }
        copied
    }

    fn copy_into(
        &self,
        dest: &Path,
        dest_str: &str,
        file: &std::fs::File,
    ) -> Result<u64, StorageError> {
        let copy_err = |action: &'static str| {
            let path = dest.to_owned();
            move |source| StorageError::Sqlite {
                path,
                action,
                source,
            }
        };
        self.conn()
            .execute("VACUUM INTO ?1", [dest_str])
            .map_err(self.sqlite_err("copy the database"))?;
        let copy = Connection::open_with_flags(dest, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(copy_err("open the copy"))?;
        let check: String = copy
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(copy_err("check the copy"))?;
        drop(copy);
        if check != "ok" {
            return Err(copy_err("check the copy")(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                Some(check),
            )));
        }
        let io = |source| StorageError::CreateFile {
            path: dest.to_owned(),
            source,
        };
        // Syncing any descriptor of the file syncs what SQLite wrote through its own.
        file.sync_all().map_err(io)?;
        if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        file.metadata().map(|m| m.len()).map_err(io)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The connection, for this module's siblings. A panic while it was held (a bug) leaves
    /// no half-done write behind, since an unfinished rusqlite transaction rolls back on drop,
    /// so a poisoned lock is safe to take over.
    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.inner
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The household's cached members (see `Inner`); taken without `conn`, or after it.
    pub(crate) fn household_cache(&self) -> MutexGuard<'_, Option<Arc<[String]>>> {
        self.inner
            .household
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The group-commit queue. Held only to push or take, never across SQLite calls.
    pub(super) fn deferred(&self) -> &super::group::Deferred {
        &self.inner.deferred
    }

    pub(super) fn queue(&self) -> MutexGuard<'_, Vec<Box<dyn super::group::Job>>> {
        self.inner
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Maps a rusqlite error to one that names the file and `action`.
    pub(crate) fn sqlite_err(
        &self,
        action: &'static str,
    ) -> impl FnOnce(rusqlite::Error) -> StorageError {
        let path = self.inner.path.clone();
        move |source| StorageError::Sqlite {
            path,
            action,
            source,
        }
    }
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("path", &self.inner.path)
            .field("scram_keys", &self.scram_keys)
            .finish()
    }
}

/// `mkdir -p` with mode 0700 for what it creates: the directory holds credentials.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Creates the database file with mode 0600 before SQLite opens it, so it is never readable
/// by others, not even for a moment. SQLite gives the `-wal` and `-shm` files the mode of the
/// database file. An existing file is left as it is (the owner may have chosen its mode).
fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Accounts;

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn backup_is_a_checked_private_copy_that_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        storage.create_account("alice", "pw").unwrap();
        let dest = dir.path().join("copy.db");
        let size = storage.backup_to(&dest).unwrap();
        assert_eq!(size, std::fs::metadata(&dest).unwrap().len());
        #[cfg(unix)]
        assert_eq!(mode(&dest), 0o600);
        // The copy is a database of its own with the account in it.
        let copy_dir = tempfile::tempdir().unwrap();
        std::fs::copy(&dest, copy_dir.path().join(DB_FILE_NAME)).unwrap();
        let copy = Storage::open(copy_dir.path()).unwrap();
        assert!(copy.account_exists("alice").unwrap());
        // A second backup to the same file is refused and leaves the first intact.
        let err = storage.backup_to(&dest).unwrap_err();
        assert!(err.to_string().contains("copy.db"), "{err}");
        assert_eq!(std::fs::metadata(&dest).unwrap().len(), size);
        // A directory that does not exist: an error naming the path, nothing created.
        let bad = dir.path().join("no/such/dir/b.db");
        assert!(
            storage
                .backup_to(&bad)
                .unwrap_err()
                .to_string()
                .contains("no/such/dir")
        );
    }

    #[test]
    fn open_sets_up_connection() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        assert_eq!(storage.path(), dir.path().join(DB_FILE_NAME));
        assert!(storage.scram_keys());
        let conn = storage.conn();
        let journal: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(journal, "wal");
        let synchronous: i64 = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(synchronous, 2, "FULL");
        let foreign_keys: bool = conn
            .pragma_query_value(None, "foreign_keys", |r| r.get(0))
            .unwrap();
        assert!(foreign_keys);
        let version: u32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, migrations::SCHEMA_VERSION);
    }

    #[cfg(unix)]
    #[test]
    fn files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("nested").join("data");
        let storage = Storage::open(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(storage.path()), 0o600);
        // A write makes sure the WAL and shared-memory files exist.
        storage.create_account("alice", "pw").unwrap();
        for suffix in ["-wal", "-shm"] {
            let mut name = storage.path().as_os_str().to_owned();
            name.push(suffix);
            assert_eq!(mode(Path::new(&name)), 0o600, "{suffix}");
        }
    }

    #[test]
    fn reopen_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        Storage::open(dir.path())
            .unwrap()
            .create_account("alice", "secret")
            .unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        assert!(storage.verify_password("alice", "secret").unwrap());
    }

    #[test]
    fn second_handle_on_same_file_sees_changes() {
        // Like `hearth user add` while `hearth serve` runs: two connections, one file.
        let dir = tempfile::tempdir().unwrap();
        let server = Storage::open(dir.path()).unwrap();
        let cli = Storage::open(dir.path()).unwrap();
        assert!(!server.account_exists("bob").unwrap());
        cli.create_account("bob", "pw").unwrap();
        assert!(server.account_exists("bob").unwrap());
        assert!(server.verify_password("bob", "pw").unwrap());
        server.set_password("bob", "new").unwrap();
        assert!(cli.verify_password("bob", "new").unwrap());
        cli.delete_account("bob").unwrap();
        assert!(!server.account_exists("bob").unwrap());
    }

    #[test]
    fn clones_share_the_connection() {
        let dir = tempfile::tempdir().unwrap();
        let a = Storage::open(dir.path()).unwrap();
        let b = a.clone().with_scram_keys(false);
        assert!(a.scram_keys() && !b.scram_keys());
        assert!(Arc::ptr_eq(&a.inner, &b.inner));
    }

    #[test]
    fn open_error_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let not_a_dir = dir.path().join("file");
        std::fs::write(&not_a_dir, b"x").unwrap();
        let err = Storage::open(&not_a_dir).unwrap_err();
        assert!(matches!(err, StorageError::CreateDir { .. }), "{err:?}");
        assert!(err.to_string().contains(&not_a_dir.display().to_string()));
    }

    #[test]
    fn garbage_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DB_FILE_NAME), [0xffu8; 4096]).unwrap();
        let err = Storage::open(dir.path()).unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains(DB_FILE_NAME), "{shown}");
    }
}
