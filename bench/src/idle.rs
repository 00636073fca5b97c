//! Scenario `idle`: K authenticated TLS sessions held open and idle → the server's RSS
//! before, with K sessions, and per session: (RSS_K − RSS_0) / K. The server should be a
//! fresh process: servers rarely give memory back to the OS after sessions close.
//!
//! With `--sm on` each session also enables XEP-0198 stream management with resumption
//! (after its initial presence) and answers the server's `<r/>`: RSS per idle *resumable*
//! session. With `--sm hibernate` each session, once enabled and acknowledged, drops its
//! TCP connection without closing the stream, so the server keeps it only to be resumed
//! (XEP-0198 §5): RSS per *hibernating* session, with at most C connections open at any
//! time. After the hold every hibernating session is resumed and checked, so the figure
//! is known to be of sessions the server still had.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smol::Timer;

use crate::args::SmMode;
use crate::report::{Report, show};
use crate::resume::{self, Parked};
use crate::{Ctx, login_many, procstat, server_cpu, server_rss};

/// Lets RSS settle after the last login (lazy allocations, deferred frees).
const SETTLE: Duration = Duration::from_secs(1);

pub async fn run(
    ctx: &Arc<Ctx>,
    k: usize,
    concurrency: usize,
    hold: Duration,
    users: usize,
    sm: SmMode,
    report: &mut Report,
) {
    let t = ctx.cfg.timeout;
    let rss0 = server_rss(&ctx.args);
    let cpu0 = server_cpu(&ctx.args);
    let gen_rss0 = procstat::rss_kib(std::process::id()).ok();

    let (stop_tx, stop_rx) = smol::channel::unbounded::<()>();
    let tasks = Arc::new(Mutex::new(Vec::with_capacity(k)));
    // Sessions the server ended while they should have been idle.
    let dropped = Arc::new(AtomicUsize::new(0));
    // --sm hibernate: what resuming each dropped session needs.
    let parked: Arc<Mutex<Vec<Parked>>> = Arc::default();
    let start = Instant::now();
    let failures = {
        let (ex, tasks, dropped) = (ctx.ex.clone(), tasks.clone(), dropped.clone());
        let parked = parked.clone();
        login_many(
            ctx,
            k,
            concurrency,
            move |i| i % users,
            move |i, mut session| {
                let (stop_rx, dropped) = (stop_rx.clone(), dropped.clone());
                let (ex, tasks, parked) = (ex.clone(), tasks.clone(), parked.clone());
                async move {
                    match sm {
                        SmMode::Off => {}
                        SmMode::On => session.enable_sm(true, t).await?,
                        SmMode::Hibernate => {
                            session.enable_sm(true, t).await?;
                            // Acknowledged: the server has the session in full.
                            session.request_ack(t).await?;
                            let p = resume::parked_of(&session, i % users)?;
                            session.drop_connection();
                            if let Ok(mut v) = parked.lock() {
                                v.push(p);
                            }
                            return Ok(());
                        }
                    }
                    let task = ex.spawn(async move {
                        match session.idle(stop_rx, t).await {
                            Ok(true) => {}
                            Ok(false) | Err(_) => {
                                dropped.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    });
                    if let Ok(mut v) = tasks.lock() {
                        v.push(task);
                    }
                    Ok(())
                }
            },
        )
        .await
    };
    let up_s = start.elapsed().as_secs_f64();
    let up = k - failures.count();
    println!(
        "idle: {up}/{k} sessions up in {up_s:.3} s at concurrency {concurrency} ({} accounts)",
        users.min(k)
    );

    Timer::after(SETTLE).await;
    let rss_k = server_rss(&ctx.args);
    let cpu_k = server_cpu(&ctx.args);
    let gen_rss = procstat::rss_kib(std::process::id()).ok();
    let per_session = rss0
        .zip(rss_k)
        .filter(|_| up > 0)
        .map(|(a, b)| (b as f64 - a as f64) * 1024.0 / up as f64);
    if let Some(rest) = hold.checked_sub(SETTLE) {
        Timer::after(rest).await;
    }
    let rss_end = server_rss(&ctx.args);
    let mut still_up = up - dropped.load(Ordering::Relaxed);
    let mut resume_refused = None;
    let parked = parked
        .lock()
        .map(|mut v| std::mem::take(&mut *v))
        .unwrap_or_default();
    if sm == SmMode::Hibernate {
        // Still there to be resumed? (Nothing was sent after <enable/>: h is 0 both ways.)
        let r = resume::resume_all(ctx, parked, concurrency).await;
        let (verified, wrong_h, verify_failures) =
            resume::verify_and_close(ctx, r.sessions, 0, concurrency).await;
        r.refused.print("resume refused");
        r.errors.print("resume error");
        verify_failures.print("verification failure");
        still_up = verified - wrong_h;
        resume_refused = Some(r.refused.count());
        failures.merge(&r.errors);
        failures.merge(&verify_failures);
    }

    drop(stop_tx);
    let tasks = tasks
        .lock()
        .map(|mut v| std::mem::take(&mut *v))
        .unwrap_or_default();
    for task in tasks {
        task.await;
    }

    let kib = |v: Option<u64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v} KiB"));
    println!("  server RSS idle (RSS_0)      {}", kib(rss0));
    println!("  server RSS with {up} (RSS_K)  {}", kib(rss_k));
    println!("  server RSS at end of hold    {}", kib(rss_end));
    println!(
        "  per session (RSS_K-RSS_0)/K  {}",
        per_session.map_or_else(
            || "n/a".to_owned(),
            |b| format!("{b:.0} bytes ({:.1} KiB)", b / 1024.0)
        )
    );
    println!("  stream management            {sm:?}");
    if sm == SmMode::Hibernate {
        println!("  resumed after hold           {still_up}");
        println!(
            "  resumes refused (<failed/>)  {}",
            resume_refused.unwrap_or(0)
        );
    } else {
        println!("  sessions still up after hold {still_up}");
    }
    println!(
        "  server CPU during logins     {}",
        show(cpu_k.zip(cpu0).map(|(b, a)| b - a), " s")
    );
    println!("  generator RSS                {}", kib(gen_rss));

    report.set("k", k);
    report.set("concurrency", concurrency);
    report.set("hold_s", hold.as_secs_f64());
    report.set("accounts", users.min(k));
    report.set("up", up);
    failures.report(report);
    report.set("login_wall_s", up_s);
    report.set(
        "sm",
        match sm {
            SmMode::Off => "off",
            SmMode::On => "on",
            SmMode::Hibernate => "hibernate",
        },
    );
    report.set("still_up_after_hold", still_up);
    report.set("resume_refused", resume_refused);
    report.set("server_rss0_kib", rss0);
    report.set("server_rss_k_kib", rss_k);
    report.set("server_rss_end_kib", rss_end);
    report.set("server_bytes_per_session", per_session);
    report.set("server_cpu_login_s", cpu_k.zip(cpu0).map(|(b, a)| b - a));
    report.set("gen_rss0_kib", gen_rss0);
    report.set("gen_rss_kib", gen_rss);
}
