//! Scenario `chat`: P pairs of sessions send each other `type='chat'` messages (RFC 6121
//! §5) to the peer's full JID, with W messages in flight per pair, for D seconds after a
//! warm-up → messages/s, latency p50/p99/max, server CPU seconds per 10k messages, and the
//! generator's own CPU use (to tell which side was the bottleneck).
//!
//! The window is a semaphore per pair: a sender takes a permit per message, the receiving
//! side gives it back when the message arrives, so both directions together never have
//! more than W messages in flight. The body starts with the send time (microseconds since
//! the run's epoch, same process, monotonic clock), so latency needs no clock sync.
//!
//! [`exchange`] is the measured part alone, for pairs logged in anywhere: the `s2s-chat`
//! scenario (`s2s.rs`) runs it one way, from sessions on one server to sessions on
//! another.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use smol::channel::{Receiver, Sender};
use smol::io::WriteHalf;
use smol::lock::Semaphore;
use smol::{Timer, future};

use crate::report::{Report, percentile, show};
use crate::session::{self, Conn, Session, SessionError, Transport, iq_reply, timeout};
use crate::xml::{Event, escape};
use crate::{Ctx, login_all, procstat};

/// Chat parameters from the command line.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub pairs: usize,
    pub window: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub concurrency: usize,
    pub body_bytes: usize,
}

/// At most this many messages go out in one write when several permits are free.
const MAX_BATCH: usize = 16;
/// Width of the zero-padded timestamp at the start of each body.
const TS_DIGITS: usize = 20;

/// The length of a message body for `--body-bytes B`: at least the timestamp and a space.
pub fn body_len(body_bytes: usize) -> usize {
    body_bytes.max(TS_DIGITS + 1)
}

/// Counters all session tasks share.
struct Shared {
    epoch: Instant,
    /// Measurement window, in microseconds since `epoch`.
    window_us: (u64, u64),
    sent: AtomicU64,
    received: AtomicU64,
    /// Messages that came back as `type='error'`.
    errors: AtomicU64,
}

impl Shared {
    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// What one session's reader measured.
#[derive(Default)]
struct Stats {
    /// Latency of each message received inside the window, in microseconds.
    latencies_us: Vec<u32>,
    failure: Option<String>,
}

pub async fn run(ctx: &Arc<Ctx>, p: Params, report: &mut Report) {
    let n = 2 * p.pairs;
    let login_start = Instant::now();
    let (mut sessions, failures) = login_all(ctx, n, p.concurrency).await;
    println!(
        "chat: {}/{n} sessions logged in in {:.3} s",
        n - failures.count(),
        login_start.elapsed().as_secs_f64()
    );
    let pairs = (0..p.pairs)
        .filter_map(|i| sessions[2 * i].take().zip(sessions[2 * i + 1].take()))
        .collect();
    let x = exchange(ctx, &p, pairs, Direction::Both, &[ctx.args.server_pid]).await;

    let secs = p.duration.as_secs_f64();
    let server_cpu_s = x.server_cpu_s[0];
    let per_10k = x.per_10k(server_cpu_s);
    println!(
        "  {} pairs, window {} per pair, {secs:.1} s measured after {:.1} s warm-up, {}-byte bodies",
        x.active_pairs,
        p.window,
        p.warmup.as_secs_f64(),
        body_len(p.body_bytes)
    );
    x.print_rate_and_latency();
    println!("  server CPU               {}", show(server_cpu_s, " s"));
    println!("  server CPU / 10k msgs    {}", show(per_10k, " s"));
    x.print_generator_and_counts(ctx.args.threads);

    report.set("pairs", p.pairs);
    report.set("active_pairs", x.active_pairs);
    report.set("window", p.window);
    report.set("duration_s", secs);
    report.set("warmup_s", p.warmup.as_secs_f64());
    report.set("body_bytes", body_len(p.body_bytes));
    failures.report(report);
    x.report_counts(report);
    report.set("server_cpu_s", server_cpu_s);
    report.set("server_cpu_s_per_10k_msgs", per_10k);
}

/// Which way messages go within a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Both sessions send to each other (the `chat` scenario).
    Both,
    /// Only the first session of each pair sends; the second only receives.
    FirstToSecond,
}

/// What [`exchange`] measured over the window.
pub struct Exchange {
    pub active_pairs: usize,
    /// Latency of each message received inside the window, in microseconds, sorted.
    pub latencies_us: Vec<u32>,
    pub session_failures: Vec<String>,
    /// CPU seconds each server of `pids` used over the window (`None`: no PID, or
    /// /proc could not be read).
    pub server_cpu_s: Vec<Option<f64>>,
    /// The generator's own CPU seconds over the window.
    pub gen_cpu_s: f64,
    /// Length of the window in seconds.
    pub secs: f64,
    pub sent: u64,
    pub received: u64,
    /// Messages that came back as `type='error'`.
    pub errors: u64,
}

impl Exchange {
    /// Messages received inside the window.
    pub fn messages(&self) -> u64 {
        self.latencies_us.len() as u64
    }

    pub fn rate(&self) -> f64 {
        self.messages() as f64 / self.secs
    }

    /// CPU seconds per 10,000 messages received in the window.
    pub fn per_10k(&self, cpu_s: Option<f64>) -> Option<f64> {
        let n = self.messages();
        cpu_s.filter(|_| n > 0).map(|c| c * 10_000.0 / n as f64)
    }

    /// Latency percentile in milliseconds.
    pub fn latency_ms(&self, p: f64) -> Option<f64> {
        percentile(&self.latencies_us, p).map(|us| f64::from(us) / 1000.0)
    }

    fn latency_max_ms(&self) -> Option<f64> {
        self.latencies_us.last().map(|&us| f64::from(us) / 1000.0)
    }

    pub fn print_rate_and_latency(&self) {
        println!(
            "  messages/s               {:.1}  ({} in the window)",
            self.rate(),
            self.messages()
        );
        println!(
            "  latency p50 / p99 / max  {} / {} / {}",
            show(self.latency_ms(50.0), " ms"),
            show(self.latency_ms(99.0), " ms"),
            show(self.latency_max_ms(), " ms")
        );
    }

    pub fn print_generator_and_counts(&self, threads: usize) {
        println!(
            "  generator CPU            {:.3} s = {:.2} cores over the window ({threads} threads)",
            self.gen_cpu_s,
            self.gen_cpu_s / self.secs,
        );
        println!(
            "  sent {}, received {}, bounced as errors {}",
            self.sent, self.received, self.errors
        );
        for f in self.session_failures.iter().take(5) {
            eprintln!("  session failure: {f}");
        }
    }

    /// The figures every chat-like scenario reports.
    pub fn report_counts(&self, report: &mut Report) {
        report.set("session_failures", self.session_failures.len());
        report.set("messages", self.messages());
        report.set("messages_per_s", self.rate());
        report.set("latency_p50_ms", self.latency_ms(50.0));
        report.set("latency_p99_ms", self.latency_ms(99.0));
        report.set("latency_max_ms", self.latency_max_ms());
        report.set("gen_cpu_s", self.gen_cpu_s);
        report.set("gen_cpu_share", self.gen_cpu_s / self.secs);
        report.set("sent", self.sent);
        report.set("received", self.received);
        report.set("errors", self.errors);
    }
}

/// Runs the exchange on logged-in `pairs` for the warm-up and the window of `p`, then
/// drains what is in flight and closes every session. Server CPU is read for each of
/// `pids` at both ends of the window.
pub async fn exchange(
    ctx: &Arc<Ctx>,
    p: &Params,
    pairs: Vec<(Session, Session)>,
    direction: Direction,
    pids: &[Option<u32>],
) -> Exchange {
    let (stop_tx, stop_rx) = smol::channel::unbounded::<()>();
    let (shutdown_tx, shutdown_rx) = smol::channel::unbounded::<()>();
    let epoch = Instant::now();
    let window_start = p.warmup;
    let window_end = p.warmup + p.duration;
    let shared = Arc::new(Shared {
        epoch,
        window_us: (
            u64::try_from(window_start.as_micros()).unwrap_or(u64::MAX),
            u64::try_from(window_end.as_micros()).unwrap_or(u64::MAX),
        ),
        sent: AtomicU64::new(0),
        received: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });

    let active_pairs = pairs.len();
    let mut tasks = Vec::with_capacity(2 * active_pairs);
    for (a, b) in pairs {
        let sem = Arc::new(Semaphore::new(p.window));
        let (jid_a, jid_b) = (a.jid.clone(), b.jid.clone());
        let b_sends = direction == Direction::Both;
        for (s, peer) in [(a, Some(jid_b)), (b, Some(jid_a).filter(|_| b_sends))] {
            let job = SessionJob {
                session: s,
                peer,
                sem: sem.clone(),
                shared: shared.clone(),
                stop: stop_rx.clone(),
                shutdown: shutdown_rx.clone(),
                body_bytes: p.body_bytes,
                timeout: ctx.cfg.timeout,
            };
            tasks.push(ctx.ex.spawn(job.run()));
        }
    }
    drop((stop_rx, shutdown_rx));

    let cpu = || -> Vec<Option<f64>> {
        pids.iter()
            .map(|pid| pid.and_then(|p| procstat::cpu_seconds(p).ok()))
            .collect()
    };
    Timer::at(epoch + window_start).await;
    let (cpu0, gen0) = (cpu(), procstat::own_cpu_seconds());
    Timer::at(epoch + window_end).await;
    let (cpu1, gen1) = (cpu(), procstat::own_cpu_seconds());

    // Stop sending, let what is in flight arrive, then stop reading.
    drop(stop_tx);
    let drain_deadline = Instant::now() + ctx.cfg.timeout.min(Duration::from_secs(10));
    while shared.sent.load(Ordering::Relaxed)
        > shared.received.load(Ordering::Relaxed) + shared.errors.load(Ordering::Relaxed)
        && Instant::now() < drain_deadline
    {
        Timer::after(Duration::from_millis(20)).await;
    }
    drop(shutdown_tx);
    let mut latencies_us = Vec::new();
    let mut session_failures = Vec::new();
    for t in tasks {
        let stats = t.await;
        latencies_us.extend_from_slice(&stats.latencies_us);
        if let Some(f) = stats.failure {
            session_failures.push(f);
        }
    }
    latencies_us.sort_unstable();

    Exchange {
        active_pairs,
        latencies_us,
        session_failures,
        server_cpu_s: cpu1
            .iter()
            .zip(&cpu0)
            .map(|(b, a)| b.zip(*a).map(|(b, a)| b - a))
            .collect(),
        gen_cpu_s: gen1 - gen0,
        secs: p.duration.as_secs_f64(),
        sent: shared.sent.load(Ordering::Relaxed),
        received: shared.received.load(Ordering::Relaxed),
        errors: shared.errors.load(Ordering::Relaxed),
    }
}

/// One session's part in the chat: a writer and a reader over the same stream.
struct SessionJob {
    session: Session,
    /// The full JID this session sends to; `None` when it only receives.
    peer: Option<String>,
    sem: Arc<Semaphore>,
    shared: Arc<Shared>,
    /// Closed when senders must stop.
    stop: Receiver<()>,
    /// Closed when readers must stop (after in-flight messages have drained).
    shutdown: Receiver<()>,
    body_bytes: usize,
    timeout: Duration,
}

impl SessionJob {
    async fn run(self) -> Stats {
        let (mut reader, writer) = self.session.conn.split();
        // iq replies the reader owes the server go out through the writer.
        let (reply_tx, reply_rx) = smol::channel::unbounded();
        let write = write_loop(
            writer,
            self.peer.as_deref(),
            &self.sem,
            &self.shared,
            &self.stop,
            reply_rx,
            self.body_bytes,
        );
        let read = read_loop(
            &mut reader,
            &self.sem,
            &self.shared,
            &self.shutdown,
            reply_tx,
        );
        let ((mut writer, write_err), mut stats) = future::zip(write, read).await;
        if stats.failure.is_none() {
            stats.failure = write_err.map(|e| e.to_string());
        }
        if stats.failure.is_none() {
            let close = async {
                session::send(&mut writer, "close", "</stream:stream>").await?;
                reader.drain_until_close().await
            };
            if let Err(e) = timeout(self.timeout, "close", close).await {
                stats.failure = Some(e.to_string());
            }
        }
        stats
    }
}

async fn write_loop(
    mut w: WriteHalf<Transport>,
    peer: Option<&str>,
    sem: &Semaphore,
    shared: &Shared,
    stop: &Receiver<()>,
    replies: Receiver<String>,
    body_bytes: usize,
) -> (WriteHalf<Transport>, Option<SessionError>) {
    enum Step {
        Stop,
        Reply(String),
        Send,
    }
    let head = format!(
        "<message to='{}' type='chat'><body>",
        escape(peer.unwrap_or_default())
    );
    let pad = "x".repeat(body_bytes.saturating_sub(TS_DIGITS + 1));
    let mut buf = String::with_capacity(MAX_BATCH * (head.len() + body_bytes + 20));
    loop {
        let step = future::or(
            async {
                let _ = stop.recv().await;
                Step::Stop
            },
            future::or(
                async {
                    match replies.recv().await {
                        Ok(r) => Step::Reply(r),
                        Err(_) => future::pending().await,
                    }
                },
                async {
                    if peer.is_none() {
                        return future::pending().await; // a receiver only
                    }
                    sem.acquire().await.forget();
                    Step::Send
                },
            ),
        )
        .await;
        buf.clear();
        let mut count = 0;
        match step {
            Step::Stop => return (w, None),
            Step::Reply(r) => buf.push_str(&r),
            Step::Send => {
                count = 1;
                while count < MAX_BATCH {
                    match sem.try_acquire() {
                        Some(g) => {
                            g.forget();
                            count += 1;
                        }
                        None => break,
                    }
                }
                for _ in 0..count {
                    let ts = shared.now_us();
                    buf.push_str(&head);
                    buf.push_str(&format!("{ts:0width$} ", width = TS_DIGITS));
                    buf.push_str(&pad);
                    buf.push_str("</body></message>");
                }
            }
        }
        if let Err(e) = session::send(&mut w, "chat send", &buf).await {
            return (w, Some(e));
        }
        shared.sent.fetch_add(count as u64, Ordering::Relaxed);
    }
}

async fn read_loop(
    conn: &mut Conn<smol::io::ReadHalf<Transport>>,
    sem: &Semaphore,
    shared: &Shared,
    shutdown: &Receiver<()>,
    replies: Sender<String>,
) -> Stats {
    let mut stats = Stats::default();
    loop {
        let event = future::or(
            async { Some(conn.next_event("chat receive").await) },
            async {
                let _ = shutdown.recv().await;
                None
            },
        )
        .await;
        let el = match event {
            None => return stats,
            Some(Ok(Event::Element(el))) => el,
            Some(Ok(Event::StreamOpen(_))) => continue,
            Some(Ok(Event::StreamClose)) => {
                stats.failure = Some("server closed the stream".into());
                return stats;
            }
            Some(Err(e)) => {
                stats.failure = Some(e.to_string());
                return stats;
            }
        };
        if el.name == "message" {
            if el.attr("type") == Some("error") {
                // Our own message bounced (RFC 6120 §8.3): its permit is free again.
                shared.errors.fetch_add(1, Ordering::Relaxed);
                sem.add_permits(1);
                continue;
            }
            let Some(sent_us) = el
                .child("body")
                .and_then(|b| b.text.get(..TS_DIGITS))
                .and_then(|t| t.parse::<u64>().ok())
            else {
                continue; // not one of ours (e.g. a server notice)
            };
            let now = shared.now_us();
            shared.received.fetch_add(1, Ordering::Relaxed);
            sem.add_permits(1);
            if (shared.window_us.0..shared.window_us.1).contains(&now) {
                let lat = u32::try_from(now.saturating_sub(sent_us)).unwrap_or(u32::MAX);
                stats.latencies_us.push(lat);
            }
        } else if let Some(reply) = iq_reply(&el) {
            let _ = replies.send(reply).await;
        }
    }
}
