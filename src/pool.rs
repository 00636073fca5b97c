//! Bounded thread pools for blocking work (SQLite statements, argon2id), with an async
//! interface for the connection tasks.
//!
//! `smol::unblock` hands work to the `blocking` crate's pool, which starts up to 500
//! threads, one per waiting call. For hearth that was the memory hole of issue 14: every
//! PLAIN check waited for its argon2 turn on a thread of its own, and each of those threads
//! kept a glibc malloc arena with a 19 MiB hole in it. A [`Pool`] instead has
//!
//! - at most `threads` threads, started when work arrives and ended after `idle_exit`
//!   without any (so an idle server holds no threads and no thread's memory);
//! - at most `queue` more jobs waiting while all threads are busy. [`Pool::run`] waits
//!   (asynchronously, holding no thread) for room; [`Pool::try_run`] is refused at once
//!   with [`PoolError::Busy`], which is how a PLAIN check past the queue gets
//!   `<temporary-auth-failure/>` (RFC 6120 §6.5.8) without any hashing.
//!
//! A waiting job whose caller went away (the future was dropped, e.g. the connection
//! closed) is skipped when its turn comes: no work for dead connections.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use smol::lock::{Semaphore, SemaphoreGuardArc};

/// Stack of a pool thread. SQLite and argon2 need little (argon2's memory is on the heap);
/// see `server.rs` on why stacks stay under 2 MiB.
const STACK_BYTES: usize = 1 << 20;

/// Why a job did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolError {
    /// The queue was full ([`Pool::try_run`] only).
    Busy,
    /// The job started but never answered (it panicked), or no thread could be started.
    Failed,
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::Busy => f.write_str("too much work waiting"),
            PoolError::Failed => f.write_str("the work failed or no thread could run it"),
        }
    }
}

impl std::error::Error for PoolError {}

/// The size of a [`Pool`].
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Thread names are `{name}-{n}`.
    pub name: &'static str,
    /// Jobs running at once (at least 1).
    pub threads: usize,
    /// Jobs accepted and waiting for a thread when all `threads` are busy.
    pub queue: usize,
    /// A thread with nothing to do for this long ends.
    pub idle_exit: Duration,
}

/// A job as the threads see it: its place is given back when it is done.
struct Job {
    work: Box<dyn FnOnce() + Send>,
    _place: SemaphoreGuardArc,
}

/// A bounded pool of threads; cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    config: PoolConfig,
    state: Mutex<State>,
    /// Signalled when a job is queued.
    work: Condvar,
    /// One permit per job running or waiting: `threads + queue`.
    places: Arc<Semaphore>,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    /// Threads alive.
    threads: usize,
    /// Threads waiting for a job.
    idle: usize,
    /// Threads started so far, for their names.
    started: u64,
}

impl Pool {
    /// A pool with no threads yet.
    pub fn new(config: PoolConfig) -> Pool {
        let config = PoolConfig {
            threads: config.threads.max(1),
            ..config
        };
        Pool {
            inner: Arc::new(Inner {
                places: Arc::new(Semaphore::new(config.threads + config.queue)),
                config,
                state: Mutex::new(State::default()),
                work: Condvar::new(),
            }),
        }
    }

    /// Runs `f` on a pool thread, first waiting for a queue place if all are taken.
    pub fn run<T, F>(&self, f: F) -> impl Future<Output = Result<T, PoolError>> + use<T, F>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let this = self.clone();
        async move {
            let place = this.inner.places.acquire_arc().await;
            this.submit(place, f).await
        }
    }

    /// Runs `f` on a pool thread, or fails with [`PoolError::Busy`] at once if the queue is
    /// full. The returned future does the waiting; dropping it before the job started
    /// means the job never runs.
    pub fn try_run<T, F>(
        &self,
        f: F,
    ) -> Result<impl Future<Output = Result<T, PoolError>> + use<T, F>, PoolError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let place = self.inner.places.try_acquire_arc().ok_or(PoolError::Busy)?;
        let this = self.clone();
        Ok(async move { this.submit(place, f).await })
    }

    /// Threads alive now (for tests and the log).
    pub fn threads(&self) -> usize {
        self.inner.lock().threads
    }

    async fn submit<T: Send + 'static>(
        &self,
        place: SemaphoreGuardArc,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let (tx, rx) = async_channel::bounded(1);
        let work = Box::new(move || {
            // The caller is gone: nobody wants the answer.
            if tx.is_closed() {
                return;
            }
            let _ = tx.try_send(f());
        });
        self.inner.push(Job {
            work,
            _place: place,
        })?;
        rx.recv().await.map_err(|_| PoolError::Failed)
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is changed only in short sections that cannot panic halfway.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a job, starting a thread for it if none is free.
    fn push(self: &Arc<Inner>, job: Job) -> Result<(), PoolError> {
        let mut state = self.lock();
        state.jobs.push_back(job);
        if state.idle > state.jobs.len().saturating_sub(1) {
            self.work.notify_one();
            return Ok(());
        }
        if state.threads >= self.config.threads {
            return Ok(());
        }
        state.started += 1;
        let name = format!("{}-{}", self.config.name, state.started);
        let inner = self.clone();
        let spawned = std::thread::Builder::new()
            .name(name)
            .stack_size(STACK_BYTES)
            .spawn(move || inner.work_loop());
        match spawned {
            Ok(_) => state.threads += 1,
            Err(e) => {
                log::error!("{}: cannot start a thread: {e}", self.config.name);
                if state.threads == 0 {
                    // Nobody would ever run it.
                    state.jobs.pop_back();
                    return Err(PoolError::Failed);
                }
            }
        }
        Ok(())
    }

    /// A pool thread: runs jobs until none came for `idle_exit`.
    fn work_loop(&self) {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                drop(state);
                let Job {
                    work,
                    _place: place,
                } = job;
                // A panic loses this job's answer (its caller sees `Failed`), not the
                // thread. Release builds abort on panic anyway.
                let _ = catch_unwind(AssertUnwindSafe(work));
                // Its place is free once it is done.
                drop(place);
                state = self.lock();
                continue;
            }
            state.idle += 1;
            let (next, timeout) = self
                .work
                .wait_timeout(state, self.config.idle_exit)
                .unwrap_or_else(PoisonError::into_inner);
            state = next;
            state.idle -= 1;
            if timeout.timed_out() && state.jobs.is_empty() {
                state.threads -= 1;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;

    fn pool(threads: usize, queue: usize, idle_exit: Duration) -> Pool {
        Pool::new(PoolConfig {
            name: "test-pool",
            threads,
            queue,
            idle_exit,
        })
    }

    /// Blocks a pool thread until the returned sender is dropped or sent to.
    fn blocker(
        p: &Pool,
    ) -> (
        mpsc::Sender<()>,
        impl Future<Output = Result<(), PoolError>> + use<>,
    ) {
        let (tx, rx) = mpsc::channel::<()>();
        let fut = p.try_run(move || {
            let _ = rx.recv();
        });
        (tx, fut.expect("room for the blocker"))
    }

    #[test]
    fn runs_and_answers() {
        let p = pool(2, 4, Duration::from_secs(5));
        let v = smol::block_on(p.run(|| 6 * 7)).unwrap();
        assert_eq!(v, 42);
    }

    #[test]
    fn full_queue_is_refused_and_room_comes_back() {
        let p = pool(1, 1, Duration::from_secs(5));
        let (release, running) = blocker(&p);
        let running = smol::spawn(running);
        // One place in the queue…
        let queued = p.try_run(|| 1).expect("one place");
        let queued = smol::spawn(queued);
        // …and nothing more: refused at once, never run.
        let ran = Arc::new(Mutex::new(false));
        let r = ran.clone();
        assert_eq!(
            p.try_run(move || *r.lock().unwrap() = true).err(),
            Some(PoolError::Busy)
        );
        assert!(p.threads() <= 1, "threads stay bounded");
        drop(release);
        assert_eq!(smol::block_on(running), Ok(()));
        assert_eq!(smol::block_on(queued), Ok(1));
        assert!(!*ran.lock().unwrap());
        // Room again.
        assert_eq!(smol::block_on(p.try_run(|| 2).unwrap()), Ok(2));
    }

    #[test]
    fn dropped_callers_jobs_are_skipped() {
        let p = pool(1, 4, Duration::from_secs(5));
        let (release, running) = blocker(&p);
        let running = smol::spawn(running);
        let ran = Arc::new(Mutex::new(false));
        let r = ran.clone();
        let waiting = smol::spawn(p.run(move || *r.lock().unwrap() = true));
        // Let it queue, then give up on it.
        std::thread::sleep(Duration::from_millis(20));
        let _ = smol::block_on(waiting.cancel());
        drop(release);
        assert_eq!(smol::block_on(running), Ok(()));
        // A job after it runs, so the skipped one was not just late.
        assert_eq!(smol::block_on(p.run(|| 3)), Ok(3));
        assert!(!*ran.lock().unwrap());
    }

    #[test]
    fn threads_are_bounded_and_end_when_idle() {
        let p = pool(2, 64, Duration::from_millis(50));
        let jobs: Vec<_> = (0..20)
            .map(|i| {
                smol::spawn(p.run(move || {
                    std::thread::sleep(Duration::from_millis(2));
                    i
                }))
            })
            .collect();
        for (i, j) in jobs.into_iter().enumerate() {
            assert!(p.threads() <= 2);
            assert_eq!(smol::block_on(j), Ok(i));
        }
        let until = Instant::now() + Duration::from_secs(5);
        while p.threads() > 0 {
            assert!(Instant::now() < until, "idle threads never ended");
            std::thread::sleep(Duration::from_millis(10));
        }
        // And a new job starts a thread again.
        assert_eq!(smol::block_on(p.run(|| 4)), Ok(4));
    }

    #[test]
    fn a_panicking_job_fails_alone() {
        let p = pool(1, 4, Duration::from_secs(5));
        assert_eq!(
            smol::block_on(p.run(|| -> u8 { panic!("boom") })),
            Err(PoolError::Failed)
        );
        assert_eq!(smol::block_on(p.run(|| 5)), Ok(5));
    }
}
