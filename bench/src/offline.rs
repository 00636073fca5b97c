//! Scenario `offline`: M messages to users who are offline, stored by the server, then
//! delivered when the users log in (RFC 6121 §8.5.2.2.1 and §4.2.2 / XEP-0160) → stored/s,
//! delivered/s, exactly-once delivery, server CPU and disk writes per stored message.
//!
//! Accounts `0..S` send, accounts `S..S+N` receive; message `m` goes to recipient
//! `m mod N` from sender `m mod S`. Each message has an id and body starting with a run
//! nonce and `m`, so leftovers of an earlier run are told apart and duplicates are seen.
//!
//! 1. Purge (not timed): each recipient logs in once, so anything stored before this run
//!    is delivered and counted as stale, and logs out.
//! 2. Store: the senders (already logged in) send their messages to the recipients' bare
//!    JIDs, in batches each followed by an XEP-0199 ping, at most two batches unanswered
//!    per sender. A ping's answer means everything the sender wrote before it was
//!    processed, so the phase ends at the last sender's last answer.
//! 3. Deliver: the recipients log in (initial presence triggers delivery) and read until
//!    every expected message arrived; then one more ping round trip catches late
//!    duplicates. The phase runs from the first login to the last expected message.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use smol::Timer;

use crate::report::{Report, show};
use crate::session::{Session, SessionError, iq_reply, timeout};
use crate::xml::{Element, escape};
use crate::{Ctx, Failures, login_all, login_many, procstat, server_cpu};

/// Offline parameters from the command line.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub senders: usize,
    pub recipients: usize,
    pub messages: usize,
    /// Messages per sender not yet confirmed by a ping answer.
    pub window: usize,
    pub concurrency: usize,
    pub body_bytes: usize,
}

/// Lets the server finish writing (group commits, file appends) before disk bytes and CPU
/// of the store phase are read.
const SETTLE: Duration = Duration::from_secs(1);

/// What recipients saw, shared by their tasks.
#[derive(Default)]
struct Tally {
    /// Distinct expected messages received.
    delivered: AtomicU64,
    duplicates: AtomicU64,
    /// Messages from an earlier run (another nonce, or no nonce at all).
    stale: AtomicU64,
    /// This run's messages that reached the wrong recipient.
    misrouted: AtomicU64,
    /// Expected messages that never arrived.
    missing: AtomicU64,
    /// Latest arrival of a recipient's last expected message, µs since the phase start.
    last_us: AtomicU64,
}

/// The message number in an id of this run (`{nonce}-{m}`), or `None` for someone else's.
fn message_number(nonce: &str, el: &Element) -> Option<usize> {
    let from_id = el.attr("id").and_then(|id| parse_id(nonce, id));
    from_id.or_else(|| {
        let body = el.child("body")?;
        parse_id(nonce, body.text.split(' ').next()?)
    })
}

fn parse_id(nonce: &str, id: &str) -> Option<usize> {
    id.strip_prefix(nonce)?.strip_prefix('-')?.parse().ok()
}

pub async fn run(ctx: &Arc<Ctx>, p: Params, report: &mut Report) {
    let nonce = {
        let mut raw = [0u8; 6];
        if getrandom::fill(&mut raw).is_err() {
            let t = procstat::own_cpu_seconds().to_bits().to_le_bytes();
            raw.copy_from_slice(&t[..6]);
        }
        format!(
            "hl{}",
            raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
        )
    };
    let (s_count, n) = (p.senders, p.recipients);
    let t = ctx.cfg.timeout;

    // 1. Purge earlier leftovers.
    let purge = Arc::new(Tally::default());
    let purge_start = Instant::now();
    let purge_failures = {
        let (purge, nonce) = (purge.clone(), nonce.clone());
        login_many(
            ctx,
            n,
            p.concurrency,
            move |i| s_count + i,
            move |_, s| receive(s, nonce.clone(), Vec::new(), purge.clone(), None, t),
        )
        .await
    };
    let stale_before = purge.stale.load(Ordering::Relaxed);
    println!(
        "offline: purge: {n} recipients logged in and out in {:.3} s, {stale_before} old \
         messages delivered, {} failed",
        purge_start.elapsed().as_secs_f64(),
        purge_failures.count()
    );

    // 2. Store.
    let (senders, sender_failures) = login_all(ctx, s_count, p.concurrency).await;
    let recipient_jid = |r: usize| format!("{}@{}", ctx.args.user(s_count + r), ctx.args.domain);
    let pid = ctx.args.server_pid;
    let io0 = pid.and_then(|p| procstat::write_bytes(p).ok());
    let cpu0 = server_cpu(&ctx.args);
    let gen0 = procstat::own_cpu_seconds();
    let start = Instant::now();
    let bounced = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let mut planned_ok = 0usize;
    for (si, slot) in senders.into_iter().enumerate() {
        let Some(s) = slot else { continue };
        let msgs: Vec<String> = (si..p.messages)
            .step_by(s_count)
            .map(|m| message(&recipient_jid(m % n), &nonce, m, p.body_bytes))
            .collect();
        planned_ok += msgs.len();
        let batch = (p.window / 2).max(1);
        let job = send_all(s, msgs, batch, ctx.args.domain.clone(), bounced.clone(), t);
        tasks.push(ctx.ex.spawn(job));
    }
    let store_failures = Failures::default();
    let mut store_s: f64 = 0.0;
    let mut sessions = Vec::new();
    for task in tasks {
        match task.await {
            Ok((s, done)) => {
                store_s = store_s.max(done.duration_since(start).as_secs_f64());
                sessions.push(s);
            }
            Err(e) => store_failures.record(&e),
        }
    }
    let gen_store = procstat::own_cpu_seconds() - gen0;
    Timer::after(SETTLE).await;
    let cpu1 = server_cpu(&ctx.args);
    let io1 = pid.and_then(|p| procstat::write_bytes(p).ok());
    for s in sessions {
        let _ = s.close(t).await;
    }
    let bounced = bounced.load(Ordering::Relaxed);
    let stored = (planned_ok as u64).saturating_sub(bounced);
    let store_cpu = cpu1.zip(cpu0).map(|(b, a)| b - a);
    let store_io = io1.zip(io0).map(|(b, a)| b.saturating_sub(a));
    let stored_per_s = stored as f64 / store_s;

    // 3. Deliver.
    let tally = Arc::new(Tally::default());
    let io2 = pid.and_then(|p| procstat::write_bytes(p).ok());
    let cpu2 = server_cpu(&ctx.args);
    let gen2 = procstat::own_cpu_seconds();
    let deliver_start = Instant::now();
    let deliver_failures = {
        let (tally, nonce) = (tally.clone(), nonce.clone());
        let per_recipient: Arc<Vec<Vec<usize>>> = Arc::new(
            (0..n)
                .map(|r| (r..p.messages).step_by(n).collect())
                .collect(),
        );
        login_many(
            ctx,
            n,
            p.concurrency,
            move |i| s_count + i,
            move |i, s| {
                let expected = per_recipient.get(i).cloned().unwrap_or_default();
                receive(
                    s,
                    nonce.clone(),
                    expected,
                    tally.clone(),
                    Some(deliver_start),
                    t,
                )
            },
        )
        .await
    };
    let deliver_wall = deliver_start.elapsed().as_secs_f64();
    let cpu3 = server_cpu(&ctx.args);
    let io3 = pid.and_then(|p| procstat::write_bytes(p).ok());
    let gen_cpu = procstat::own_cpu_seconds() - gen2;
    let delivered = tally.delivered.load(Ordering::Relaxed);
    let deliver_s = tally.last_us.load(Ordering::Relaxed) as f64 / 1e6;
    let delivered_per_s = (delivered > 0).then(|| delivered as f64 / deliver_s);
    let deliver_cpu = cpu3.zip(cpu2).map(|(b, a)| b - a);
    let deliver_io = io3.zip(io2).map(|(b, a)| b.saturating_sub(a));
    let [duplicates, stale, misrouted, missing] = [
        &tally.duplicates,
        &tally.stale,
        &tally.misrouted,
        &tally.missing,
    ]
    .map(|a| a.load(Ordering::Relaxed));
    let exactly_once = delivered == stored && duplicates == 0 && misrouted == 0 && missing == 0;

    let per_msg = |v: Option<f64>, count: u64| v.filter(|_| count > 0).map(|v| v / count as f64);
    let store_cpu_10k = per_msg(store_cpu, stored).map(|c| c * 10_000.0);
    let deliver_cpu_10k = per_msg(deliver_cpu, delivered).map(|c| c * 10_000.0);
    let bytes_per_msg = per_msg(store_io.map(|b| b as f64), stored);

    println!(
        "  {} messages ({}-byte bodies) from {s_count} senders to {n} recipients, \
         {} unanswered per sender",
        p.messages,
        p.body_bytes,
        p.window.max(2)
    );
    println!(
        "  stored                {stored} in {store_s:.3} s = {stored_per_s:.1}/s ({bounced} bounced)"
    );
    println!(
        "  store: server CPU     {}  ({} per 10k)",
        show(store_cpu, " s"),
        show(store_cpu_10k, " s")
    );
    println!(
        "  store: disk writes    {}  ({} per message)",
        store_io.map_or_else(|| "n/a".to_owned(), |b| format!("{b} bytes")),
        show(bytes_per_msg, " bytes")
    );
    println!(
        "  delivered             {delivered} in {deliver_s:.3} s = {}/s (all logins done in {deliver_wall:.3} s)",
        show(delivered_per_s, "")
    );
    println!(
        "  deliver: server CPU   {}  ({} per 10k); disk writes {}",
        show(deliver_cpu, " s"),
        show(deliver_cpu_10k, " s"),
        deliver_io.map_or_else(|| "n/a".to_owned(), |b| format!("{b} bytes"))
    );
    println!(
        "  exactly once: {}  (duplicates {duplicates}, missing {missing}, misrouted {misrouted}, stale {stale})",
        if exactly_once { "yes" } else { "NO" }
    );
    println!(
        "  generator CPU: store {gen_store:.3} s = {:.2} cores, delivery {gen_cpu:.3} s = {:.2} cores",
        gen_store / store_s,
        gen_cpu / deliver_wall
    );

    report.set("senders", s_count);
    report.set("recipients", n);
    report.set("messages", p.messages);
    report.set("window", p.window);
    report.set("body_bytes", p.body_bytes);
    report.set("purge_stale", stale_before);
    report.set("purge_failed", purge_failures.count());
    report.set("sender_failed", sender_failures.count());
    report.set("store_failed", store_failures.count());
    let all = Failures::default();
    for f in [&sender_failures, &deliver_failures] {
        all.merge(f);
    }
    all.merge(&store_failures);
    all.report(report);
    report.set("stored", stored);
    report.set("bounced", bounced);
    report.set("store_s", store_s);
    report.set("stored_per_s", stored_per_s);
    report.set("store_server_cpu_s", store_cpu);
    report.set("store_server_cpu_s_per_10k", store_cpu_10k);
    report.set("store_write_bytes", store_io);
    report.set("write_bytes_per_stored_msg", bytes_per_msg);
    report.set("delivered", delivered);
    report.set("deliver_s", deliver_s);
    report.set("delivered_per_s", delivered_per_s);
    report.set("deliver_wall_s", deliver_wall);
    report.set("deliver_server_cpu_s", deliver_cpu);
    report.set("deliver_server_cpu_s_per_10k", deliver_cpu_10k);
    report.set("deliver_write_bytes", deliver_io);
    report.set("duplicates", duplicates);
    report.set("missing", missing);
    report.set("misrouted", misrouted);
    report.set("stale", stale);
    report.set("exactly_once", if exactly_once { "yes" } else { "no" });
    report.set("gen_cpu_store_s", gen_store);
    report.set("gen_cpu_store_share", gen_store / store_s);
    report.set("gen_cpu_deliver_s", gen_cpu);
    report.set("gen_cpu_deliver_share", gen_cpu / deliver_wall);
}

/// One message of about `body_bytes` to a recipient's bare JID (RFC 6121 §8.5.2.2.1: no
/// available resource, so the server stores it).
fn message(to: &str, nonce: &str, m: usize, body_bytes: usize) -> String {
    let id = format!("{nonce}-{m}");
    let pad = "x".repeat(body_bytes.saturating_sub(id.len() + 1));
    format!(
        "<message to='{}' type='chat' id='{id}'><body>{id} {pad}</body></message>",
        escape(to)
    )
}

/// Sends `msgs` in batches of `batch`, each followed by a ping (XEP-0199 §4.2) to the
/// server, with at most two pings unanswered. Returns the session and when the last ping
/// was answered.
async fn send_all(
    mut s: Session,
    msgs: Vec<String>,
    batch: usize,
    domain: String,
    bounced: Arc<AtomicU64>,
    t: Duration,
) -> Result<(Session, Instant), SessionError> {
    let mut next = 0;
    let mut pings = 0usize;
    let mut unanswered = 0usize;
    let mut buf = String::new();
    loop {
        while unanswered < 2 && next < msgs.len() {
            buf.clear();
            let end = (next + batch).min(msgs.len());
            for m in &msgs[next..end] {
                buf.push_str(m);
            }
            next = end;
            pings += 1;
            buf.push_str(&format!(
                "<iq type='get' id='hl-ping{pings}' to='{}'><ping xmlns='urn:xmpp:ping'/></iq>",
                escape(&domain)
            ));
            s.conn.send("store", &buf).await?;
            unanswered += 1;
        }
        if unanswered == 0 {
            return Ok((s, Instant::now()));
        }
        let el = timeout(t, "store ping", s.conn.next_element("store ping")).await?;
        match el.name.as_str() {
            "iq" if el.attr("id").is_some_and(|id| id.starts_with("hl-ping")) => {
                unanswered -= 1;
            }
            "message" if el.attr("type") == Some("error") => {
                bounced.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                if let Some(reply) = iq_reply(&el) {
                    s.conn.send("iq reply", &reply).await?;
                }
            }
        }
    }
}

/// A recipient after login: reads until every message in `expected` arrived, then one
/// ping round trip for late duplicates, then closes. With `expected` empty (the purge) it
/// only does the ping round trip. Arrival times count from `start`.
async fn receive(
    mut s: Session,
    nonce: String,
    expected: Vec<usize>,
    tally: Arc<Tally>,
    start: Option<Instant>,
    t: Duration,
) -> Result<(), SessionError> {
    let mut seen = vec![false; expected.len()];
    let mut got = 0usize;
    let mut pinged = false;
    let result = async {
        loop {
            if got == expected.len() && !pinged {
                if let Some(start) = start
                    && !expected.is_empty()
                {
                    let us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
                    tally.last_us.fetch_max(us, Ordering::Relaxed);
                }
                s.conn
                    .send(
                        "receive",
                        "<iq type='get' id='hl-last'><ping xmlns='urn:xmpp:ping'/></iq>",
                    )
                    .await?;
                pinged = true;
            }
            let el = timeout(
                t,
                "offline delivery",
                s.conn.next_element("offline delivery"),
            )
            .await?;
            match el.name.as_str() {
                "message" if el.child("body").is_some() => {
                    let Some(m) = message_number(&nonce, &el) else {
                        tally.stale.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    match expected.binary_search(&m) {
                        Ok(k) if seen[k] => {
                            tally.duplicates.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(k) => {
                            seen[k] = true;
                            got += 1;
                            tally.delivered.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            tally.misrouted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                "iq" if el.attr("id") == Some("hl-last") => return Ok(()),
                _ => {
                    if let Some(reply) = iq_reply(&el) {
                        s.conn.send("iq reply", &reply).await?;
                    }
                }
            }
        }
    }
    .await;
    if let Err(e) = result {
        tally
            .missing
            .fetch_add((expected.len() - got) as u64, Ordering::Relaxed);
        return Err(e);
    }
    s.close(t).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_this_run_only() {
        let el = Element::parse("<message id='hlab-12'><body>hlab-12 xx</body></message>").unwrap();
        assert_eq!(message_number("hlab", &el), Some(12));
        assert_eq!(message_number("hlcd", &el), None);
        // A server that rewrote the id: the body still tells.
        let el = Element::parse("<message id='srv1'><body>hlab-3 xx</body></message>").unwrap();
        assert_eq!(message_number("hlab", &el), Some(3));
    }

    #[test]
    fn message_size() {
        let m = message("r@h", "hlab", 7, 100);
        let body = Element::parse(&m)
            .unwrap()
            .child("body")
            .unwrap()
            .text
            .clone();
        assert_eq!(body.len(), 100);
        assert!(body.starts_with("hlab-7 "));
    }
}
