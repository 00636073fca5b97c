//! Group commit: concurrent writes share one transaction, and so one disk sync.
//!
//! With `synchronous=FULL` every commit syncs the WAL to the disk before it returns, and on
//! an SD card that sync, not SQLite, is what bounds how many writes per second the server
//! can accept (and how quickly the card wears). Writes that arrive while another commit is
//! syncing therefore wait in a queue; whoever takes the connection next runs everything
//! queued in one `BEGIN IMMEDIATE … COMMIT`, each write in a savepoint of its own, and only
//! then answers each writer. No writer hears "done" before its write is on the disk, so
//! durability is exactly that of one transaction per write.
//!
//! There is no writer thread and no timer: the caller that gets the connection lock leads
//! the batch (the others are already blocked on that lock, on the other storage threads:
//! `sqlite.rs`'s `POOL`). A write with nothing else queued is committed at once, so
//! grouping never adds latency; under load the batch is whatever piled up during the
//! previous sync.

use super::{Storage, StorageError};
use rusqlite::{Connection, TransactionBehavior};
use std::sync::mpsc::{SyncSender, TryRecvError, sync_channel};

/// One queued write, type-erased so writes of different result types share a batch.
pub(super) trait Job: Send {
    /// Runs the write inside the batch's transaction (in its own savepoint) and keeps its
    /// outcome; `true` if it succeeded, so its savepoint is kept.
    fn run(&mut self, conn: &Connection, storage: &Storage) -> bool;
    /// Answers the writer once the batch is committed (`Ok`) or failed (the error).
    fn finish(self: Box<Self>, storage: &Storage, committed: Result<(), &rusqlite::Error>);
}

/// A write and the channel its caller waits on.
struct Pending<T, F> {
    work: Option<F>,
    outcome: Option<Result<T, StorageError>>,
    reply: SyncSender<Result<T, StorageError>>,
}

impl<T, F> Job for Pending<T, F>
where
    T: Send,
    F: FnOnce(&Storage, &Connection) -> Result<T, StorageError> + Send,
{
    fn run(&mut self, conn: &Connection, storage: &Storage) -> bool {
        let outcome = self.work.take().map(|work| work(storage, conn));
        let ok = matches!(outcome, Some(Ok(_)));
        self.outcome = outcome;
        ok
    }

    fn finish(self: Box<Self>, storage: &Storage, committed: Result<(), &rusqlite::Error>) {
        let answer = match (self.outcome, committed) {
            // Its own failure was rolled back to its savepoint; say what it was.
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (Some(Ok(_)), Err(e)) => Err(storage.sqlite_err("commit a batch of writes")(
                copy_error(e),
            )),
            // The batch failed before reaching this write.
            (None, Err(e)) => Err(storage.sqlite_err("run a batch of writes")(copy_error(e))),
            (None, Ok(())) => Err(not_run(storage)),
        };
        // The writer may have given up (its thread panicked); nothing to tell then.
        let _ = self.reply.send(answer);
    }
}

/// The error for a write dropped unanswered (its batch's leader panicked).
fn not_run(storage: &Storage) -> StorageError {
    storage.sqlite_err("commit a batch of writes")(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
        Some("the write was abandoned".to_owned()),
    ))
}

/// `rusqlite::Error` is not `Clone`, and every writer of a failed batch needs its own copy.
fn copy_error(e: &rusqlite::Error) -> rusqlite::Error {
    match e {
        rusqlite::Error::SqliteFailure(code, msg) => {
            rusqlite::Error::SqliteFailure(*code, msg.clone())
        }
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    }
}

/// A write nobody waits for ([`Storage::write_deferred`]): its outcome is only logged.
struct Later<F> {
    work: Option<F>,
}

impl<F> Job for Later<F>
where
    F: FnOnce(&Storage, &Connection) -> Result<(), StorageError> + Send,
{
    fn run(&mut self, conn: &Connection, storage: &Storage) -> bool {
        match self.work.take().map(|work| work(storage, conn)) {
            Some(Err(e)) => {
                log::error!("storage: a deferred write failed: {e}");
                false
            }
            _ => true,
        }
    }

    fn finish(self: Box<Self>, _storage: &Storage, committed: Result<(), &rusqlite::Error>) {
        if let Err(e) = committed {
            log::error!("storage: a batch with deferred writes failed: {e}");
        }
    }
}

/// What deferred writes need: a wake-up for the task that commits them, and whether one
/// runs.
#[derive(Default)]
pub(crate) struct Deferred {
    queued: event_listener::Event,
    has_flusher: std::sync::atomic::AtomicBool,
    /// Bytes the deferred writes waiting in the queue carry (their callers' estimate),
    /// zeroed whenever the queue is taken for a batch.
    bytes: std::sync::atomic::AtomicUsize,
}

/// How long the flusher lets deferred writes gather before it commits them: at most this
/// many disk syncs a second for them, whatever the message rate (an SD card wears with
/// each), and at most this much of them lost in a crash.
const GATHER: std::time::Duration = std::time::Duration::from_millis(20);

/// Writes waiting past which a deferred writer waits for the disk like any other (about
/// 2 MB of archived messages).
pub(crate) const MAX_QUEUED: usize = 4096;

/// Bytes of deferred writes waiting past which a deferred writer waits for the disk: a
/// sender of large messages cannot make the queue hold much (the archive keeps a copy of
/// each message until its row is written).
pub(crate) const MAX_QUEUED_BYTES: usize = 1024 * 1024;

impl Storage {
    /// Queues `work` to run in the next group commit, whoever leads it (another writer, or
    /// the task of [`Storage::flush_deferred_forever`]), and returns at once: for writes
    /// whose loss in a crash of the last few milliseconds is acceptable (the message
    /// archive, XEP-0313), so the caller does not wait for a disk sync. Writes stay in
    /// order with every other write. Returns whether a flushing task will commit it; if
    /// not (no task runs, or [`MAX_QUEUED`] writes wait: a slow disk), the caller should
    /// call [`Storage::flush_deferred`] itself and wait, so memory stays bounded.
    ///
    /// `bytes` is about how much memory the write holds until it runs (its data): past
    /// [`MAX_QUEUED_BYTES`] queued, the caller waits too.
    pub(crate) fn write_deferred<F>(&self, bytes: usize, work: F) -> bool
    where
        F: FnOnce(&Storage, &Connection) -> Result<(), StorageError> + Send + 'static,
    {
        use std::sync::atomic::Ordering;
        let d = self.deferred();
        let (queued, held) = {
            let mut q = self.queue();
            q.push(Box::new(Later { work: Some(work) }));
            // Counted under the queue's lock, so a batch taking the queue zeroes it after.
            let held = d.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
            (q.len(), held)
        };
        d.queued.notify(1);
        d.has_flusher.load(Ordering::Relaxed) && queued <= MAX_QUEUED && held <= MAX_QUEUED_BYTES
    }

    /// Takes every queued write for a batch.
    fn take_queue(&self) -> Vec<Box<dyn Job>> {
        let mut q = self.queue();
        self.deferred()
            .bytes
            .store(0, std::sync::atomic::Ordering::Relaxed);
        std::mem::take(&mut *q)
    }

    /// Completes once every write queued before the call, deferred ones included, is
    /// committed: what a client is told was handled (XEP-0198 `<a/>`) is then on the disk,
    /// even if the server is killed a moment later. At once when nothing is queued.
    pub async fn barrier(&self) {
        if self.queue().is_empty() {
            return;
        }
        if let Err(e) = self
            .run_blocking(|s| {
                s.flush_deferred();
                Ok(())
            })
            .await
        {
            log::error!("storage: deferred writes: {e}");
        }
    }

    /// Commits whatever writes are queued, if any (blocking: on a storage thread).
    pub(crate) fn flush_deferred(&self) {
        let mut conn = self.conn();
        let jobs = self.take_queue();
        if !jobs.is_empty() {
            self.commit_batch(&mut conn, jobs);
        }
    }

    /// Commits deferred writes as they come, a few milliseconds' worth at a time, on the
    /// storage threads; never returns (the server runs it as a task). Idle, it waits
    /// without waking up.
    pub async fn flush_deferred_forever(&self) {
        let d = self.deferred();
        d.has_flusher
            .store(true, std::sync::atomic::Ordering::Relaxed);
        loop {
            let listener = d.queued.listen();
            if self.queue().is_empty() {
                listener.await;
            }
            smol::Timer::after(GATHER).await;
            if let Err(e) = self
                .run_blocking(|s| {
                    s.flush_deferred();
                    Ok(())
                })
                .await
            {
                log::error!("storage: deferred writes: {e}");
            }
        }
    }

    /// Runs `work` as part of a group commit (see the module docs) and returns its result
    /// once the transaction holding it is committed with `synchronous=FULL`. An `Err` from
    /// `work` undoes only its own changes.
    ///
    /// `work` gets this handle (for [`Storage::sqlite_err`]) and the connection, inside a
    /// transaction: it must not start one of its own.
    pub(crate) fn write<T, F>(&self, work: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Storage, &Connection) -> Result<T, StorageError> + Send + 'static,
    {
        let (reply, answer) = sync_channel(1);
        self.queue().push(Box::new(Pending {
            work: Some(work),
            outcome: None,
            reply,
        }));
        let mut conn = self.conn();
        match answer.try_recv() {
            // A batch led by another writer included this write.
            Ok(result) => return result,
            // Still queued: this writer leads the next batch.
            Err(TryRecvError::Empty) => {}
            // Dropped unanswered: its batch's leader panicked mid-way (the transaction
            // rolled back as it unwound).
            Err(TryRecvError::Disconnected) => return Err(not_run(self)),
        }
        let jobs = self.take_queue();
        self.commit_batch(&mut conn, jobs);
        drop(conn);
        answer.try_recv().unwrap_or_else(|_| Err(not_run(self)))
    }

    /// Runs `jobs` in one transaction, each in a savepoint, commits, and answers them all.
    fn commit_batch(&self, conn: &mut Connection, mut jobs: Vec<Box<dyn Job>>) {
        if jobs.len() > 1 {
            log::trace!("storage: committing {} writes together", jobs.len());
        }
        let result = (|| {
            let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for job in &mut jobs {
                let sp = tx.savepoint()?;
                if job.run(&sp, self) {
                    sp.commit()?;
                    continue;
                }
                // Dropping the savepoint rolls it back: only this write is undone.
                drop(sp);
                // But some errors (disk full, I/O) make SQLite roll back the whole
                // transaction; running the rest outside it would commit them one by one
                // while telling their writers the batch failed.
                if tx.is_autocommit() {
                    return Err(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                        Some("SQLite rolled the batch back".to_owned()),
                    ));
                }
            }
            tx.commit()
        })();
        for job in jobs {
            job.finish(self, result.as_ref().map(|_| ()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::offline::{OfflineStore, Stored};
    use crate::storage::{Accounts, Quota};

    #[test]
    fn a_failed_write_undoes_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path()).unwrap();
        s.create_account("alice", "pw").unwrap();
        // Queue three writes, then lead them as one batch: the middle one fails halfway.
        let insert = |body: &'static str| {
            move |_: &Storage, c: &Connection| {
                c.execute(
                    "INSERT INTO offline_messages (localpart, stanza, stored_at) \
                     VALUES ('alice', ?1, 0)",
                    [body],
                )
                .map_err(|e| StorageError::Crypto(e.to_string()))
            }
        };
        let (r1, a1) = sync_channel(1);
        let (r2, a2) = sync_channel(1);
        let (r3, a3) = sync_channel(1);
        let jobs: Vec<Box<dyn Job>> = vec![
            Box::new(Pending {
                work: Some(insert("<one/>")),
                outcome: None,
                reply: r1,
            }),
            Box::new(Pending {
                work: Some(move |s: &Storage, c: &Connection| {
                    insert("<half/>")(s, c)?;
                    Err::<usize, _>(StorageError::Crypto("refused".into()))
                }),
                outcome: None,
                reply: r2,
            }),
            Box::new(Pending {
                work: Some(insert("<three/>")),
                outcome: None,
                reply: r3,
            }),
        ];
        s.commit_batch(&mut s.conn(), jobs);
        assert_eq!(a1.try_recv().unwrap().unwrap(), 1);
        assert!(matches!(
            a2.try_recv().unwrap(),
            Err(StorageError::Crypto(m)) if m == "refused"
        ));
        assert_eq!(a3.try_recv().unwrap().unwrap(), 1);
        let bodies: Vec<String> = s
            .offline_messages("alice", 10)
            .unwrap()
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        assert_eq!(bodies, ["<one/>", "<three/>"]);
    }

    #[test]
    fn concurrent_writers_all_land_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path()).unwrap();
        s.create_account("alice", "pw").unwrap();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        let m = format!("<m t='{t}' i='{i}'/>");
                        assert_eq!(
                            s.store_offline("alice", &m, &Quota::DEFAULT).unwrap(),
                            Stored::Stored
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let all = s.offline_messages("alice", 1000).unwrap();
        assert_eq!(all.len(), 200);
        // Each writer's messages are stored once each, in the order it wrote them.
        for t in 0..8 {
            let mine: Vec<String> = all
                .iter()
                .filter(|(_, m)| m.contains(&format!("t='{t}'")))
                .map(|(_, m)| m.clone())
                .collect();
            let want: Vec<String> = (0..25).map(|i| format!("<m t='{t}' i='{i}'/>")).collect();
            assert_eq!(mine, want);
        }
    }

    #[test]
    fn quota_counts_writes_earlier_in_the_same_batch() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path()).unwrap();
        s.create_account("alice", "pw").unwrap();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    let q = Quota {
                        offline_messages: 50,
                        ..Quota::DEFAULT
                    };
                    (0..10)
                        .filter(|_| s.store_offline("alice", "<m/>", &q).unwrap() == Stored::Stored)
                        .count()
                })
            })
            .collect();
        let stored: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(stored, 50);
        assert_eq!(s.offline_messages("alice", 1000).unwrap().len(), 50);
    }
}
