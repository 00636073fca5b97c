//! Scenario `presence`: users with rosters of R contacts log in and out while their
//! contacts watch → presence stanzas fanned out per second (RFC 6121 §4).
//!
//! Accounts are organised in G groups of R+1 whose members all have each other on their
//! rosters with `subscription='both'`. In each group member 0 is the *cycler*, the other R
//! are *observers*. The set-up phase (not timed) creates the subscriptions with the
//! standard flow of RFC 6121 §3.1: every member sends `<presence type='subscribe'/>` to each
//! group mate not yet `both` on its roster and approves every request it receives, until
//! its roster pushes (§2.1.6) show `both` for all of them. A member whose roster is already
//! complete (a second run on the same server) sends nothing, so the set-up is reusable.
//!
//! The timed phase keeps the observers online (they stay on from the set-up, with their
//! initial presence) while each cycler logs in, sends initial presence, waits for the R
//! probe answers (§4.2.2: the server sends the cycler its contacts' presence), and closes
//! its stream (§4.5.2: the server broadcasts unavailable presence), over and over. Counted
//! over D seconds after a warm-up: presence stanzas from cyclers received by observers
//! (available + unavailable), probe answers received by cyclers, cycles; latency is the
//! time from a cycler writing its initial presence to the first observer reading it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smol::{Timer, future};

use crate::report::{Report, percentile, show};
use crate::session::{self, Session, SessionError, iq_reply, timeout};
use crate::xml::{Element, Event, escape};
use crate::{Ctx, Failures, login_all, procstat, server_cpu};

/// Presence parameters from the command line.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub groups: usize,
    pub roster: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// Logins at a time during the set-up.
    pub concurrency: usize,
}

impl Params {
    fn group_size(&self) -> usize {
        self.roster + 1
    }

    fn accounts(&self) -> usize {
        self.groups * self.group_size()
    }

    fn is_cycler(&self, account: usize) -> bool {
        account % self.group_size() == 0
    }
}

/// The account number in a JID built from `pattern` (`load{}@host/res` → 7 for `load7`).
pub fn account_of(pattern: &str, jid: &str) -> Option<usize> {
    let local = jid.split('/').next()?.split_once('@')?.0;
    let (prefix, suffix) = pattern.split_once("{}")?;
    local
        .strip_prefix(prefix)?
        .strip_suffix(suffix)?
        .parse()
        .ok()
}

/// The bare JID without a resource (RFC 6120 §1.4).
fn bare(jid: &str) -> &str {
    jid.split('/').next().unwrap_or(jid)
}

/// Counters the timed phase shares.
struct Shared {
    epoch: Instant,
    window_us: (u64, u64),
    /// Available presence from a cycler, read by an observer.
    available: AtomicU64,
    /// Unavailable presence from a cycler, read by an observer.
    unavailable: AtomicU64,
    /// Contacts' presence read by a cycler after its login (probe answers).
    probes: AtomicU64,
    cycles: AtomicU64,
    /// Per group: when the cycler wrote its initial presence (µs since `epoch`, 0 = taken).
    sent_us: Vec<AtomicU64>,
    latencies_us: Mutex<Vec<u32>>,
    stop: AtomicBool,
}

impl Shared {
    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn snapshot(&self) -> [u64; 4] {
        [
            self.available.load(Ordering::Relaxed),
            self.unavailable.load(Ordering::Relaxed),
            self.probes.load(Ordering::Relaxed),
            self.cycles.load(Ordering::Relaxed),
        ]
    }
}

pub async fn run(ctx: &Arc<Ctx>, p: Params, report: &mut Report) {
    let n = p.accounts();
    let setup_start = Instant::now();
    let (mut sessions, setup_failures, subscribed) = setup(ctx, p).await;
    let setup_s = setup_start.elapsed().as_secs_f64();
    println!(
        "presence: set-up of {} groups x {} accounts in {setup_s:.3} s ({subscribed} accounts \
         had to subscribe, {} failed)",
        p.groups,
        p.group_size(),
        setup_failures.count()
    );

    // Cyclers start from a logged-out state.
    let mut closes = Vec::new();
    for (i, slot) in sessions.iter_mut().enumerate() {
        if p.is_cycler(i)
            && let Some(s) = slot.take()
        {
            closes.push(ctx.ex.spawn(s.close(ctx.cfg.timeout)));
        }
    }
    for c in closes {
        let _ = c.await;
    }

    let epoch = Instant::now();
    let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    let shared = Arc::new(Shared {
        epoch,
        window_us: (us(p.warmup), us(p.warmup + p.duration)),
        available: AtomicU64::new(0),
        unavailable: AtomicU64::new(0),
        probes: AtomicU64::new(0),
        cycles: AtomicU64::new(0),
        sent_us: (0..p.groups).map(|_| AtomicU64::new(0)).collect(),
        latencies_us: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    });
    let run_failures = Arc::new(Failures::default());
    let (shutdown_tx, shutdown_rx) = smol::channel::unbounded::<()>();

    let mut observers_up = vec![0usize; p.groups];
    let mut observer_tasks = Vec::new();
    for (i, slot) in sessions.iter_mut().enumerate() {
        if let Some(s) = slot.take() {
            observers_up[i / p.group_size()] += 1;
            let job = observe(
                s,
                ctx.args.user_pattern.clone(),
                p,
                shared.clone(),
                shutdown_rx.clone(),
                ctx.cfg.timeout,
            );
            observer_tasks.push(ctx.ex.spawn(job));
        }
    }
    drop(shutdown_rx);
    let observers: usize = observers_up.iter().sum();
    let cycler_tasks: Vec<_> = (0..p.groups)
        .map(|g| {
            let job = cycle(
                ctx.clone(),
                g,
                p,
                observers_up[g],
                shared.clone(),
                run_failures.clone(),
            );
            ctx.ex.spawn(job)
        })
        .collect();

    Timer::at(epoch + p.warmup).await;
    let (cpu0, gen0, c0) = (
        server_cpu(&ctx.args),
        procstat::own_cpu_seconds(),
        shared.snapshot(),
    );
    Timer::at(epoch + p.warmup + p.duration).await;
    let (cpu1, gen1, c1) = (
        server_cpu(&ctx.args),
        procstat::own_cpu_seconds(),
        shared.snapshot(),
    );

    shared.stop.store(true, Ordering::Relaxed);
    for t in cycler_tasks {
        t.await;
    }
    drop(shutdown_tx);
    let mut observer_failures = 0usize;
    for t in observer_tasks {
        if let Err(e) = t.await {
            observer_failures += 1;
            run_failures.record(&e);
        }
    }

    let secs = p.duration.as_secs_f64();
    let [available, unavailable, probes, cycles] = [0, 1, 2, 3].map(|i| c1[i] - c0[i]);
    let fanout = available + unavailable;
    let delivered = fanout + probes;
    let server_cpu_s = cpu1.zip(cpu0).map(|(b, a)| b - a);
    let per_10k = server_cpu_s
        .filter(|_| delivered > 0)
        .map(|c| c * 10_000.0 / delivered as f64);
    let gen_cpu = gen1 - gen0;
    let mut latencies = shared
        .latencies_us
        .lock()
        .map(|mut v| std::mem::take(&mut *v))
        .unwrap_or_default();
    latencies.sort_unstable();
    let ms = |v: Option<u32>| v.map(|us| f64::from(us) / 1000.0);
    let (p50, p99) = (
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
    );

    println!(
        "  {} groups, roster {} each: {observers} observers online, {} cyclers; \
         {secs:.1} s measured after {:.1} s warm-up",
        p.groups,
        p.roster,
        p.groups,
        p.warmup.as_secs_f64()
    );
    println!(
        "  cycles (login + presence + close)   {cycles} = {:.1}/s",
        cycles as f64 / secs
    );
    println!(
        "  fan-out to observers  {fanout} = {:.1}/s  ({available} available, {unavailable} unavailable)",
        fanout as f64 / secs
    );
    println!(
        "  probe answers         {probes} = {:.1}/s",
        probes as f64 / secs
    );
    println!(
        "  presence delivered    {delivered} = {:.1}/s",
        delivered as f64 / secs
    );
    println!(
        "  latency to first observer p50 / p99  {} / {}  ({} samples)",
        show(p50, " ms"),
        show(p99, " ms"),
        latencies.len()
    );
    println!("  server CPU            {}", show(server_cpu_s, " s"));
    println!(
        "  server CPU / 10k presence delivered  {}",
        show(per_10k, " s")
    );
    println!(
        "  generator CPU         {gen_cpu:.3} s = {:.2} cores ({} threads)",
        gen_cpu / secs,
        ctx.args.threads
    );

    report.set("groups", p.groups);
    report.set("roster", p.roster);
    report.set("accounts", n);
    report.set("duration_s", secs);
    report.set("warmup_s", p.warmup.as_secs_f64());
    report.set("setup_s", setup_s);
    report.set("setup_subscribed_accounts", subscribed);
    report.set("setup_failed", setup_failures.count());
    report.set("observers", observers);
    run_failures.report(report);
    report.set("observer_failures", observer_failures);
    report.set("cycles", cycles);
    report.set("cycles_per_s", cycles as f64 / secs);
    report.set("fanout_available", available);
    report.set("fanout_unavailable", unavailable);
    report.set("fanout_per_s", fanout as f64 / secs);
    report.set("probe_answers", probes);
    report.set("probe_answers_per_s", probes as f64 / secs);
    report.set("presence_delivered_per_s", delivered as f64 / secs);
    report.set("latency_p50_ms", p50);
    report.set("latency_p99_ms", p99);
    report.set("latency_samples", latencies.len());
    report.set("server_cpu_s", server_cpu_s);
    report.set("server_cpu_s_per_10k_presence", per_10k);
    report.set("gen_cpu_s", gen_cpu);
    report.set("gen_cpu_share", gen_cpu / secs);
}

/// Logs every account in and completes the groups' subscriptions. Returns the sessions
/// (None where login or set-up failed), the failures and how many accounts had to
/// subscribe (0 when every roster was already complete).
async fn setup(ctx: &Arc<Ctx>, p: Params) -> (Vec<Option<Session>>, Arc<Failures>, usize) {
    let n = p.accounts();
    let (mut sessions, failures) = login_all(ctx, n, p.concurrency).await;

    // All members are online before anyone subscribes, so requests arrive live.
    let size = p.group_size();
    let mut tasks = Vec::new();
    for (i, slot) in sessions.iter_mut().enumerate() {
        let Some(s) = slot.take() else { continue };
        let g = i / size;
        let contacts: Vec<String> = (g * size..(g + 1) * size)
            .filter(|&j| j != i)
            .map(|j| format!("{}@{}", ctx.args.user(j), ctx.args.domain).to_lowercase())
            .collect();
        let t = ctx.cfg.timeout;
        tasks.push((i, ctx.ex.spawn(subscribe_all(s, contacts, t))));
    }
    let mut subscribed = 0;
    for (i, task) in tasks {
        match task.await {
            Ok((s, worked)) => {
                subscribed += usize::from(worked);
                sessions[i] = Some(s);
            }
            Err(e) => failures.record(&e),
        }
    }
    (sessions, failures, subscribed)
}

/// RFC 6121 §3.1 for one member: fetch the roster (§2.1.3), ask every contact not yet
/// `both` for a subscription, approve every request, acknowledge roster pushes (§2.1.6)
/// and return once every contact is `both`. `true` if anything had to be sent.
pub(crate) async fn subscribe_all(
    mut s: Session,
    contacts: Vec<String>,
    t: Duration,
) -> Result<(Session, bool), SessionError> {
    let mut both: HashMap<String, bool> = contacts.into_iter().map(|c| (c, false)).collect();
    s.conn
        .send(
            "roster",
            "<iq type='get' id='hl-roster'><query xmlns='jabber:iq:roster'/></iq>",
        )
        .await?;
    let mut has_roster = false;
    let mut worked = false;
    // Subscription only grows in this flow, so an item once `both` stays so.
    let apply = |both: &mut HashMap<String, bool>, query: Option<&Element>| {
        for item in query.map(|q| q.children.as_slice()).unwrap_or_default() {
            let jid = item.attr("jid").unwrap_or("").to_lowercase();
            if let Some(b) = both.get_mut(&jid) {
                *b |= item.attr("subscription") == Some("both");
            }
        }
    };
    loop {
        if has_roster && both.values().all(|b| *b) {
            return Ok((s, worked));
        }
        let el = timeout(t, "roster set-up", s.conn.next_element("roster set-up")).await?;
        match el.name.as_str() {
            "iq" if el.attr("id") == Some("hl-roster") => {
                if el.attr("type") != Some("result") {
                    return Err(SessionError::Unexpected(
                        "roster get",
                        session::stanza_error(&el),
                    ));
                }
                has_roster = true;
                apply(&mut both, el.child("query"));
                let mut out = String::new();
                for (jid, _) in both.iter().filter(|(_, b)| !**b) {
                    out.push_str(&format!(
                        "<presence to='{}' type='subscribe'/>",
                        escape(jid)
                    ));
                }
                if !out.is_empty() {
                    worked = true;
                    s.conn.send("subscribe", &out).await?;
                }
            }
            "iq" if el.attr("type") == Some("set") && el.child("query").is_some() => {
                // A roster push: acknowledge it (RFC 6121 §2.1.6).
                apply(&mut both, el.child("query"));
                let id = escape(el.attr("id").unwrap_or(""));
                s.conn
                    .send("roster push", &format!("<iq type='result' id='{id}'/>"))
                    .await?;
            }
            "presence" if el.attr("type") == Some("subscribe") => {
                let from = bare(el.attr("from").unwrap_or(""));
                s.conn
                    .send(
                        "subscribed",
                        &format!("<presence to='{}' type='subscribed'/>", escape(from)),
                    )
                    .await?;
            }
            _ => {
                if let Some(reply) = iq_reply(&el) {
                    s.conn.send("iq reply", &reply).await?;
                }
            }
        }
    }
}

/// An observer: counts presence from its group's cycler until shut down, then closes.
async fn observe(
    mut s: Session,
    pattern: String,
    p: Params,
    shared: Arc<Shared>,
    shutdown: smol::channel::Receiver<()>,
    t: Duration,
) -> Result<(), SessionError> {
    loop {
        let event = future::or(async { Some(s.conn.next_event("observe").await) }, async {
            let _ = shutdown.recv().await;
            None
        })
        .await;
        let el = match event {
            None => break,
            Some(Ok(Event::Element(el))) => el,
            Some(Ok(Event::StreamOpen(_))) => continue,
            Some(Ok(Event::StreamClose)) => return Err(SessionError::Closed("observe")),
            Some(Err(e)) => return Err(e),
        };
        if el.name == "presence" {
            let Some(from) = el.attr("from").and_then(|f| account_of(&pattern, f)) else {
                continue;
            };
            if !p.is_cycler(from) {
                continue;
            }
            match el.attr("type") {
                None => {
                    shared.available.fetch_add(1, Ordering::Relaxed);
                    let g = from / p.group_size();
                    let sent = shared
                        .sent_us
                        .get(g)
                        .map_or(0, |a| a.swap(0, Ordering::Relaxed));
                    let now = shared.now_us();
                    if sent != 0 && (shared.window_us.0..shared.window_us.1).contains(&now) {
                        let lat = u32::try_from(now.saturating_sub(sent)).unwrap_or(u32::MAX);
                        if let Ok(mut v) = shared.latencies_us.lock() {
                            v.push(lat);
                        }
                    }
                }
                Some("unavailable") => {
                    shared.unavailable.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        } else if let Some(reply) = iq_reply(&el) {
            s.conn.send("iq reply", &reply).await?;
        }
    }
    s.close(t).await
}

/// A cycler: log in, initial presence, wait for the probe answers, close; until stopped.
async fn cycle(
    ctx: Arc<Ctx>,
    g: usize,
    p: Params,
    observers: usize,
    shared: Arc<Shared>,
    failures: Arc<Failures>,
) {
    let account = g * p.group_size();
    let user = ctx.args.user(account);
    let t = ctx.cfg.timeout;
    while !shared.stop.load(Ordering::Relaxed) {
        let one = async {
            let mut s = session::login_bound(&ctx.cfg, &user, "cycler").await?;
            if let Some(a) = shared.sent_us.get(g) {
                a.store(shared.now_us(), Ordering::Relaxed);
            }
            s.conn.send("presence", "<presence/>").await?;
            let mut answers = 0;
            while answers < observers {
                let el = timeout(t, "probe answers", s.conn.next_element("probe answers")).await?;
                if el.name == "presence" && el.attr("type").is_none() {
                    let from = el
                        .attr("from")
                        .and_then(|f| account_of(&ctx.args.user_pattern, f));
                    if from.is_some_and(|a| a != account && a / p.group_size() == g) {
                        answers += 1;
                        shared.probes.fetch_add(1, Ordering::Relaxed);
                    }
                } else if let Some(reply) = iq_reply(&el) {
                    s.conn.send("iq reply", &reply).await?;
                }
            }
            s.close(t).await
        };
        match one.await {
            Ok(()) => {
                shared.cycles.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                failures.record(&e);
                // Do not spin on a server that refuses us.
                Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_numbers_from_jids() {
        assert_eq!(account_of("load{}", "load7@bench.local/x"), Some(7));
        assert_eq!(account_of("load{}", "load12@bench.local"), Some(12));
        assert_eq!(account_of("p{}x", "p3x@h/r"), Some(3));
        assert_eq!(account_of("load{}", "other@h"), None);
        assert_eq!(account_of("load{}", "bench.local"), None);
    }

    #[test]
    fn layout() {
        let p = Params {
            groups: 3,
            roster: 4,
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            concurrency: 1,
        };
        assert_eq!(p.accounts(), 15);
        assert!(p.is_cycler(0) && p.is_cycler(5) && !p.is_cycler(4));
    }
}
