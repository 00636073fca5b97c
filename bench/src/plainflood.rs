//! Scenario `plainflood` (issue 14, item 2): K SASL PLAIN attempts (RFC 4616), C at a
//! time, every other one with the right password for an existing account and the rest
//! with a wrong password for an account that does not exist, each from its own loopback
//! address (so per-address limits and failure throttles stay out of the way) → the
//! server's RSS before, at its peak during the attempts, right after them and `--after`
//! seconds later, its peak thread count, and its CPU seconds per 1000 attempts.
//!
//! A PLAIN check is the expensive step a stranger can trigger (hearth: argon2id over
//! 19 MiB), so this is what shows whether its memory is bounded and given back.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use smol::Timer;

use crate::report::{Report, show};
use crate::session::{self, SessionError};
use crate::{Ctx, Failures, procstat, server_cpu, server_rss};

/// The wrong password (never an account's: those are random per run).
const WRONG: &str = "not-the-password";

/// How often RSS and threads are read during the attempts.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);

/// Attempt `i`'s own source address: 127.1.0.1, 127.1.0.2, … (no .0 or .255 octets).
fn source(i: usize) -> Ipv4Addr {
    let hi = (i / 254) % 254;
    let lo = i % 254 + 1;
    Ipv4Addr::new(127, 1, hi as u8, lo as u8)
}

/// What came back, counted.
#[derive(Default)]
struct Outcomes {
    success: AtomicUsize,
    not_authorized: AtomicUsize,
    temporary: AtomicUsize,
    /// A right password refused, or a wrong one accepted: must stay 0.
    wrong_answer: AtomicUsize,
}

pub async fn run(
    ctx: &Arc<Ctx>,
    k: usize,
    concurrency: usize,
    users: usize,
    after: Duration,
    report: &mut Report,
) {
    let pid = ctx.args.server_pid;
    let rss_idle = server_rss(&ctx.args);
    let threads_idle = pid.and_then(|p| procstat::threads(p).ok());
    let cpu0 = server_cpu(&ctx.args);
    let start = Instant::now();

    // Sampler: peak RSS and threads while the attempts run.
    let done = Arc::new(AtomicBool::new(false));
    let peak_rss = Arc::new(AtomicU64::new(rss_idle.unwrap_or(0)));
    let peak_threads = Arc::new(AtomicU64::new(threads_idle.unwrap_or(0)));
    let sampler = {
        let (done, peak_rss, peak_threads) = (done.clone(), peak_rss.clone(), peak_threads.clone());
        ctx.ex.spawn(async move {
            let Some(pid) = pid else { return };
            while !done.load(Ordering::Relaxed) {
                if let Ok(r) = procstat::rss_kib(pid) {
                    peak_rss.fetch_max(r, Ordering::Relaxed);
                }
                if let Ok(t) = procstat::threads(pid) {
                    peak_threads.fetch_max(t, Ordering::Relaxed);
                }
                Timer::after(SAMPLE_EVERY).await;
            }
        })
    };

    let next = Arc::new(AtomicUsize::new(0));
    let outcomes = Arc::new(Outcomes::default());
    let failures = Arc::new(Failures::default());
    let workers: Vec<_> = (0..concurrency.min(k))
        .map(|_| {
            let (ctx, next, outcomes, failures) = (
                ctx.clone(),
                next.clone(),
                outcomes.clone(),
                failures.clone(),
            );
            ctx.ex.clone().spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= k {
                        break;
                    }
                    let right = i % 2 == 0;
                    let (user, password) = if right {
                        (ctx.args.user((i / 2) % users), ctx.cfg.password.as_str())
                    } else {
                        (format!("nosuch{i}"), WRONG)
                    };
                    let r = session::sasl_attempt(&ctx.cfg, &user, password, Some(source(i)));
                    let counter = match r.await {
                        Ok(()) if right => &outcomes.success,
                        Err(SessionError::AuthFailed(c)) if c == "not-authorized" && !right => {
                            &outcomes.not_authorized
                        }
                        Err(SessionError::AuthFailed(c)) if c == "temporary-auth-failure" => {
                            &outcomes.temporary
                        }
                        Ok(()) | Err(SessionError::AuthFailed(_)) => &outcomes.wrong_answer,
                        Err(e) => {
                            failures.record(&e);
                            continue;
                        }
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for w in workers {
        w.await;
    }
    let wall = start.elapsed().as_secs_f64();
    let server_cpu_s = server_cpu(&ctx.args).zip(cpu0).map(|(b, a)| b - a);
    done.store(true, Ordering::Relaxed);
    sampler.await;
    let rss_end = server_rss(&ctx.args);

    // Afterwards: is the memory given back? Sampled each second, the last one reported.
    let mut rss_after = rss_end;
    let until = Instant::now() + after;
    while Instant::now() < until {
        Timer::after(Duration::from_secs(1)).await;
        rss_after = server_rss(&ctx.args);
    }
    let threads_after = pid.and_then(|p| procstat::threads(p).ok());

    let get = |a: &AtomicUsize| a.load(Ordering::Relaxed);
    let per_1k = server_cpu_s.map(|c| c * 1000.0 / k as f64);
    let rss_peak = pid.map(|_| peak_rss.load(Ordering::Relaxed));
    let peak_over_idle = rss_peak.zip(rss_idle).map(|(p, i)| p.saturating_sub(i));
    let mib = |v: Option<u64>| v.map(|k| k as f64 / 1024.0);
    println!(
        "plainflood: {k} PLAIN attempts (half right, half wrong for unknown accounts) at \
         concurrency {concurrency} in {wall:.2} s"
    );
    println!(
        "  success {} | not-authorized {} | temporary-auth-failure {} | wrong answers {} | errors {}",
        get(&outcomes.success),
        get(&outcomes.not_authorized),
        get(&outcomes.temporary),
        get(&outcomes.wrong_answer),
        failures.count()
    );
    println!("  server RSS idle          {}", show(mib(rss_idle), " MiB"));
    println!("  server RSS peak          {}", show(mib(rss_peak), " MiB"));
    println!("  server RSS at the end    {}", show(mib(rss_end), " MiB"));
    println!(
        "  server RSS {:.0} s after    {}",
        after.as_secs_f64(),
        show(mib(rss_after), " MiB")
    );
    let count = |v: Option<u64>| v.map_or_else(|| "n/a".to_owned(), |v| v.to_string());
    println!(
        "  server threads idle/peak/after {}/{}/{}",
        count(threads_idle),
        count(pid.map(|_| peak_threads.load(Ordering::Relaxed))),
        count(threads_after)
    );
    println!("  server CPU / 1000        {}", show(per_1k, " s"));

    report.set("k", k);
    report.set("concurrency", concurrency);
    report.set("accounts", users);
    report.set("success", get(&outcomes.success));
    report.set("not_authorized", get(&outcomes.not_authorized));
    report.set("temporary_auth_failure", get(&outcomes.temporary));
    report.set("wrong_answers", get(&outcomes.wrong_answer));
    failures.report(report);
    report.set("wall_s", wall);
    report.set("server_rss_idle_kib", rss_idle);
    report.set("server_rss_peak_kib", rss_peak);
    report.set("server_rss_peak_over_idle_kib", peak_over_idle);
    report.set("server_rss_end_kib", rss_end);
    report.set("after_s", after.as_secs_f64());
    report.set("server_rss_after_kib", rss_after);
    report.set("server_threads_idle", threads_idle);
    report.set(
        "server_threads_peak",
        pid.map(|_| peak_threads.load(Ordering::Relaxed)),
    );
    report.set("server_threads_after", threads_after);
    report.set("server_cpu_s", server_cpu_s);
    report.set("server_cpu_s_per_1k_attempts", per_1k);
}
