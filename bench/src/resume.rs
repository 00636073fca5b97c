//! Scenario `resume`: XEP-0198 §5 resumption after a lost connection. K sessions (accounts
//! `0..K`, C at a time) log in, enable stream management with resumption, send initial
//! presence and ask for an acknowledgement, then drop their TCP connection without closing
//! the stream (a phone changing networks). Once the server has seen every connection go
//! (`--settle`), each session reconnects and resumes, C at a time. Measured: the time from
//! starting the TCP connect to `<resumed/>` (p50/p99/max) beside the time a full login
//! took in the same run (TCP connect to the acknowledgement of the initial presence: TLS,
//! SASL, bind, `<enable/>`, presence), and the server's CPU per 1000 of each. Every
//! resumption is checked: `<failed/>` is counted, the `h` in `<resumed/>` must be the one
//! stanza (the presence) the server handled from the old connection, and the resumed
//! stream must answer an `<r/>`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smol::Timer;

use crate::report::{Report, percentile, show};
use crate::session::{self, Session, SessionError};
use crate::{Ctx, Failures, procstat, server_cpu, server_rss};

/// What a dropped session leaves the client to resume it with.
#[derive(Clone)]
pub struct Parked {
    /// The account index.
    pub user: usize,
    /// `<enabled id=…/>`.
    pub id: String,
    /// Stanzas received on the old connection.
    pub h: u32,
}

/// Logs session `i` in with stream management and resumption, sends initial presence and
/// waits for its acknowledgement, then drops the connection. Returns what resuming needs.
pub async fn login_and_drop(ctx: &Ctx, i: usize, user: usize) -> Result<Parked, SessionError> {
    let t = ctx.cfg.timeout;
    let name = ctx.args.user(user);
    let mut s = session::login_bound(&ctx.cfg, &name, &format!("hl{i}")).await?;
    enable_and_present(&mut s, t).await?;
    let parked = parked_of(&s, user)?;
    s.drop_connection();
    Ok(parked)
}

/// `<enable resume='true'/>`, initial presence (RFC 6121 §4.2.1), then `<r/>` until its
/// `<a/>`: the server has handled the presence when this returns.
pub async fn enable_and_present(s: &mut Session, t: Duration) -> Result<(), SessionError> {
    s.enable_sm(true, t).await?;
    s.conn.send("presence", "<presence/>").await?;
    s.request_ack(t).await?;
    Ok(())
}

/// What resuming `s` (account `user`) needs.
pub fn parked_of(s: &Session, user: usize) -> Result<Parked, SessionError> {
    match &s.sm {
        Some(sm) => Ok(Parked {
            user,
            id: sm.id.clone().unwrap_or_default(),
            h: sm.h,
        }),
        None => Err(SessionError::SmFailed("enable", "not enabled".into())),
    }
}

/// Resumptions of a set of parked sessions.
pub struct Resumed {
    /// The resumed sessions with the server's `h` from `<resumed/>`.
    pub sessions: Vec<(Session, u32)>,
    /// Microseconds from the TCP connect to `<resumed/>`, one per resumed session.
    pub micros: Vec<u32>,
    /// `<failed/>` answers.
    pub refused: Arc<Failures>,
    /// Anything else that went wrong.
    pub errors: Arc<Failures>,
    pub wall_s: f64,
}

/// Resumes every parked session, `concurrency` at a time.
pub async fn resume_all(ctx: &Arc<Ctx>, parked: Vec<Parked>, concurrency: usize) -> Resumed {
    let n = parked.len();
    let queue = Arc::new(Mutex::new(parked));
    let out = Arc::new(Mutex::new((Vec::with_capacity(n), Vec::with_capacity(n))));
    let (refused, errors) = (Arc::new(Failures::default()), Arc::new(Failures::default()));
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency.min(n))
        .map(|_| {
            let (ctx2, queue, out) = (ctx.clone(), queue.clone(), out.clone());
            let (refused, errors) = (refused.clone(), errors.clone());
            ctx.ex.spawn(async move {
                loop {
                    // Taken in its own statement: the queue's lock is not held while the
                    // resumption is awaited.
                    let next = queue.lock().ok().and_then(|mut q| q.pop());
                    let Some(p) = next else { break };
                    let t0 = Instant::now();
                    let user = ctx2.args.user(p.user);
                    match session::resume(&ctx2.cfg, &user, &p.id, p.h).await {
                        Ok((s, server_h)) => {
                            let us = u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX);
                            if let Ok(mut o) = out.lock() {
                                o.0.push((s, server_h));
                                o.1.push(us);
                            }
                        }
                        Err(e @ SessionError::SmFailed(..)) => refused.record(&e),
                        Err(e) => errors.record(&e),
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await;
    }
    let wall_s = start.elapsed().as_secs_f64();
    let (sessions, micros) = out
        .lock()
        .map(|mut o| (std::mem::take(&mut o.0), std::mem::take(&mut o.1)))
        .unwrap_or_default();
    Resumed {
        sessions,
        micros,
        refused,
        errors,
        wall_s,
    }
}

/// Checks resumed sessions, `concurrency` at a time: the server's `h` must be `want_h`
/// and the stream must answer `<r/>`; then each is closed politely. Returns how many
/// passed, how many had another `h`, and the failures.
pub async fn verify_and_close(
    ctx: &Arc<Ctx>,
    sessions: Vec<(Session, u32)>,
    want_h: u32,
    concurrency: usize,
) -> (usize, usize, Arc<Failures>) {
    let n = sessions.len();
    let queue = Arc::new(Mutex::new(sessions));
    let counts = Arc::new(Mutex::new((0usize, 0usize)));
    let failures = Arc::new(Failures::default());
    let t = ctx.cfg.timeout;
    let workers: Vec<_> = (0..concurrency.min(n))
        .map(|_| {
            let (queue, counts, failures) = (queue.clone(), counts.clone(), failures.clone());
            ctx.ex.spawn(async move {
                loop {
                    let Some((mut s, server_h)) = queue.lock().ok().and_then(|mut q| q.pop())
                    else {
                        break;
                    };
                    let result = async {
                        s.request_ack(t).await?;
                        s.close(t).await
                    }
                    .await;
                    match result {
                        Ok(()) => {
                            if let Ok(mut c) = counts.lock() {
                                c.0 += 1;
                                if server_h != want_h {
                                    c.1 += 1;
                                }
                            }
                        }
                        Err(e) => failures.record(&e),
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await;
    }
    let (ok, wrong_h) = counts.lock().map(|c| *c).unwrap_or_default();
    (ok, wrong_h, failures)
}

fn ms(sorted: &[u32], p: f64) -> Option<f64> {
    percentile(sorted, p).map(|us| f64::from(us) / 1000.0)
}

pub async fn run(
    ctx: &Arc<Ctx>,
    k: usize,
    concurrency: usize,
    users: usize,
    settle: Duration,
    report: &mut Report,
) {
    let gen0 = procstat::own_cpu_seconds();

    // 1. Log in, enable, present, drop.
    let cpu0 = server_cpu(&ctx.args);
    let slots: Arc<Mutex<(Vec<Parked>, Vec<u32>)>> = Arc::default();
    let login_failures = Arc::new(Failures::default());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency.min(k))
        .map(|_| {
            let (ctx2, slots, failures, next) = (
                ctx.clone(),
                slots.clone(),
                login_failures.clone(),
                next.clone(),
            );
            ctx.ex.spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= k {
                        break;
                    }
                    let t0 = Instant::now();
                    match login_and_drop(&ctx2, i, i % users).await {
                        Ok(p) => {
                            let us = u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX);
                            if let Ok(mut s) = slots.lock() {
                                s.0.push(p);
                                s.1.push(us);
                            }
                        }
                        Err(e) => failures.record(&e),
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await;
    }
    let login_wall = start.elapsed().as_secs_f64();
    let login_cpu = server_cpu(&ctx.args).zip(cpu0).map(|(b, a)| b - a);
    let (parked, mut login_us) = slots
        .lock()
        .map(|mut s| (std::mem::take(&mut s.0), std::mem::take(&mut s.1)))
        .unwrap_or_default();
    login_us.sort_unstable();
    let logged_in = parked.len();

    // 2. Let the server notice every lost connection; the sessions now hibernate.
    Timer::after(settle).await;
    let rss_hibernating = server_rss(&ctx.args);

    // 3. Resume them all.
    let cpu1 = server_cpu(&ctx.args);
    let mut r = resume_all(ctx, parked, concurrency).await;
    let resume_cpu = server_cpu(&ctx.args).zip(cpu1).map(|(b, a)| b - a);
    r.micros.sort_unstable();
    let resumed = r.sessions.len();

    // 4. Check them (not timed) and close.
    let (verified, wrong_h, verify_failures) =
        verify_and_close(ctx, std::mem::take(&mut r.sessions), 1, concurrency).await;
    let gen_cpu = procstat::own_cpu_seconds() - gen0;

    let per_1k = |cpu: Option<f64>, n: usize| cpu.filter(|_| n > 0).map(|c| c * 1000.0 / n as f64);
    let login_per_1k = per_1k(login_cpu, logged_in);
    let resume_per_1k = per_1k(resume_cpu, resumed);
    let refused = r.refused.count();
    let errors = r.errors.count();
    println!(
        "resume: {logged_in}/{k} logged in with stream management in {login_wall:.3} s, \
         then {resumed}/{logged_in} resumed in {:.3} s, at concurrency {concurrency}",
        r.wall_s
    );
    println!(
        "  login  p50 / p99 / max     {} / {} / {}",
        show(ms(&login_us, 50.0), " ms"),
        show(ms(&login_us, 99.0), " ms"),
        show(ms(&login_us, 100.0), " ms")
    );
    println!(
        "  resume p50 / p99 / max     {} / {} / {}",
        show(ms(&r.micros, 50.0), " ms"),
        show(ms(&r.micros, 99.0), " ms"),
        show(ms(&r.micros, 100.0), " ms")
    );
    println!("  server CPU / 1000 logins   {}", show(login_per_1k, " s"));
    println!("  server CPU / 1000 resumes  {}", show(resume_per_1k, " s"));
    println!(
        "  server RSS, {logged_in} hibernating  {}",
        rss_hibernating.map_or_else(|| "n/a".to_owned(), |v| format!("{v} KiB"))
    );
    println!("  <failed/> answers          {refused}");
    println!("  other resume errors        {errors}");
    println!("  verified (h and <r/>)      {verified} ({wrong_h} with another h)");
    println!("  generator CPU              {gen_cpu:.3} s");
    login_failures.print("login failure");
    r.refused.print("resume refused");
    r.errors.print("resume error");
    verify_failures.print("verification failure");
    let login_failed = login_failures.count();
    let first_failure = login_failures
        .first()
        .or_else(|| r.refused.first())
        .or_else(|| r.errors.first())
        .or_else(|| verify_failures.first());

    report.set("k", k);
    report.set("concurrency", concurrency);
    report.set("accounts", users.min(k));
    report.set("settle_s", settle.as_secs_f64());
    report.set("logged_in", logged_in);
    report.set("login_failed", login_failed);
    report.set("login_wall_s", login_wall);
    report.set("login_p50_ms", ms(&login_us, 50.0));
    report.set("login_p99_ms", ms(&login_us, 99.0));
    report.set("login_max_ms", ms(&login_us, 100.0));
    report.set("login_server_cpu_s", login_cpu);
    report.set("login_server_cpu_s_per_1k", login_per_1k);
    report.set("server_rss_hibernating_kib", rss_hibernating);
    report.set("resumed", resumed);
    report.set("resume_refused", refused);
    report.set("first_refusal", r.refused.first().as_deref());
    report.set("resume_errors", errors);
    report.set("verify_failed", verify_failures.count());
    report.set("first_resume_error", r.errors.first().as_deref());
    report.set("resume_wall_s", r.wall_s);
    report.set("resumes_per_s", resumed as f64 / r.wall_s.max(1e-9));
    report.set("resume_p50_ms", ms(&r.micros, 50.0));
    report.set("resume_p99_ms", ms(&r.micros, 99.0));
    report.set("resume_max_ms", ms(&r.micros, 100.0));
    report.set("resume_server_cpu_s", resume_cpu);
    report.set("resume_server_cpu_s_per_1k", resume_per_1k);
    report.set("verified", verified);
    report.set("resumed_h_wrong", wrong_h);
    // Everything that did not go as a client expects, for compare.sh's failure list.
    report.set(
        "failed",
        login_failed + refused + errors + wrong_h + verify_failures.count(),
    );
    report.set("first_failure", first_failure.as_deref());
    report.set("gen_cpu_s", gen_cpu);
}
