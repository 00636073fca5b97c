//! Scenarios across two servers: federation (RFC 6120 §2.5, server-to-server) measured
//! from the clients' side. Server A is `--host/--port/--domain/--server-pid`, server B
//! `--host-b/--port-b/--domain-b/--server-pid-b`; both hold the same accounts.
//!
//! - `s2s-chat`: P senders on A (accounts `0..P`, resource `hl{i}`) send `type='chat'`
//!   messages to the full JIDs of P receivers on B (the same accounts there), one way:
//!   `chat`'s [`exchange`] with only the first session of each pair sending. A chat
//!   message to a full JID of another server needs no subscription (RFC 6121 §5.2.2,
//!   §8.5.3.1): A carries it over its link to B, B delivers it. The receivers give the
//!   window back in-process, so nothing travels from B to A but the links' own traffic.
//!   → messages/s, latency p50/p99/max (write at A's client to read at B's), and each
//!   server's CPU seconds per 10k messages.
//! - `s2s-idle`: account 0 on A stays online and answers every chat message it gets.
//!   Account 0 of each domain `v0`, `v1`, … `vN` of B (`--domain-b 'v{}.test'`, one
//!   server hosting many domains) logs in, sends it one message and waits for the
//!   answer, then logs out; each domain thus leaves A with an incoming link (B's domain
//!   connects to A) and an outgoing one (A's answer), plus whatever dialback
//!   verification connections are still open. Domain `v0` goes first and alone, so the
//!   first link's one-time costs (code paged in, TLS and DNS state) stay out of the
//!   per-link figure. → A's RSS and established TCP connections after `v0` and after
//!   `v1..=vN` (each read after `--settle` seconds), bytes per domain and per TCP
//!   connection, A's CPU per domain for setting the links up. The server should be a
//!   fresh process.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use smol::{Timer, future};

use crate::args::{ServerB, user_name};
use crate::chat::{self, Direction, exchange};
use crate::report::{Report, show};
use crate::session::{self, ClientConfig, Session, SessionError, iq_reply, stanza_error, timeout};
use crate::xml::{Event, escape};
use crate::{Ctx, Failures, login_all, procstat, server_cpu, server_rss};

/// The same run context for server B: its address, domain and PID in place of A's.
/// `None` (with the reason printed) when no server B was given or its domain is not
/// usable as a TLS name.
fn ctx_b(ctx: &Arc<Ctx>, domain: &str) -> Option<Arc<Ctx>> {
    let b = ctx.args.server_b.as_ref()?;
    let Some(cfg) = ctx.cfg.for_server(&b.host, b.port, domain) else {
        eprintln!("--domain-b {domain} is not usable as a TLS server name");
        return None;
    };
    let mut args = ctx.args.clone();
    args.host = b.host.clone();
    args.port = b.port;
    args.domain = domain.to_owned();
    args.server_pid = b.server_pid;
    Some(Arc::new(Ctx {
        args,
        cfg,
        ex: ctx.ex.clone(),
    }))
}

/// Fields that say which servers a federation run measured.
fn server_b_fields(ctx: &Ctx, report: &mut Report) {
    if let Some(b) = &ctx.args.server_b {
        report.set("host_b", b.host.as_str());
        report.set("port_b", u64::from(b.port));
        report.set("domain_b", b.domain.as_str());
        report.set("server_pid_b", b.server_pid.map(u64::from));
    }
}

pub async fn run_chat(ctx: &Arc<Ctx>, p: chat::Params, report: &mut Report) {
    server_b_fields(ctx, report);
    let Some(b) = ctx
        .args
        .server_b
        .as_ref()
        .and_then(|b| ctx_b(ctx, &b.domain))
    else {
        return;
    };
    let login_start = Instant::now();
    let (login_a, login_b) = future::zip(
        login_all(ctx, p.pairs, p.concurrency),
        login_all(&b, p.pairs, p.concurrency),
    )
    .await;
    let ((mut senders, failures), (mut receivers, failures_b)) = (login_a, login_b);
    failures.merge(&failures_b);
    println!(
        "s2s-chat: {}/{} sessions on {} and {} logged in in {:.3} s",
        2 * p.pairs - failures.count(),
        2 * p.pairs,
        ctx.args.domain,
        b.args.domain,
        login_start.elapsed().as_secs_f64()
    );
    let pairs: Vec<(Session, Session)> = (0..p.pairs)
        .filter_map(|i| senders[i].take().zip(receivers[i].take()))
        .collect();
    let pids = [ctx.args.server_pid, b.args.server_pid];
    let x = exchange(ctx, &p, pairs, Direction::FirstToSecond, &pids).await;

    let (cpu_a, cpu_b) = (x.server_cpu_s[0], x.server_cpu_s[1]);
    let cpu_sum = cpu_a.zip(cpu_b).map(|(a, b)| a + b);
    let secs = p.duration.as_secs_f64();
    println!(
        "  {} pairs {} -> {}, window {} per pair, {secs:.1} s measured after {:.1} s warm-up, {}-byte bodies",
        x.active_pairs,
        ctx.args.domain,
        b.args.domain,
        p.window,
        p.warmup.as_secs_f64(),
        chat::body_len(p.body_bytes)
    );
    x.print_rate_and_latency();
    println!(
        "  server CPU A / B / both  {} / {} / {}",
        show(cpu_a, " s"),
        show(cpu_b, " s"),
        show(cpu_sum, " s")
    );
    println!(
        "  per 10k msgs A / B / both {} / {} / {}",
        show(x.per_10k(cpu_a), " s"),
        show(x.per_10k(cpu_b), " s"),
        show(x.per_10k(cpu_sum), " s")
    );
    x.print_generator_and_counts(ctx.args.threads);

    report.set("pairs", p.pairs);
    report.set("active_pairs", x.active_pairs);
    report.set("window", p.window);
    report.set("duration_s", secs);
    report.set("warmup_s", p.warmup.as_secs_f64());
    report.set("body_bytes", chat::body_len(p.body_bytes));
    failures.report(report);
    x.report_counts(report);
    report.set("server_cpu_a_s", cpu_a);
    report.set("server_cpu_b_s", cpu_b);
    report.set("server_cpu_a_s_per_10k_msgs", x.per_10k(cpu_a));
    report.set("server_cpu_b_s_per_10k_msgs", x.per_10k(cpu_b));
    report.set("server_cpu_s_per_10k_msgs", x.per_10k(cpu_sum));
}

/// What `s2s-idle` reads from server A at each step.
#[derive(Clone, Copy)]
struct Reading {
    rss_kib: Option<u64>,
    tcp: Option<u64>,
    cpu_s: Option<f64>,
}

fn read_a(ctx: &Ctx) -> Reading {
    Reading {
        rss_kib: server_rss(&ctx.args),
        tcp: ctx
            .args
            .server_pid
            .and_then(|p| procstat::tcp_established(p).ok()),
        cpu_s: server_cpu(&ctx.args),
    }
}

pub async fn run_idle(
    ctx: &Arc<Ctx>,
    links: usize,
    concurrency: usize,
    settle: Duration,
    report: &mut Report,
) {
    server_b_fields(ctx, report);
    let Some(b) = ctx.args.server_b.clone() else {
        return;
    };
    let t = ctx.cfg.timeout;
    let start = read_a(ctx);

    // The receiver on A: answers every chat message until told to stop.
    let receiver = match session::login(&ctx.cfg, &ctx.args.user(0), "hl0").await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("s2s-idle: the receiver could not log in to A: {e}");
            report.set("failed", 1u64);
            report.set("first_failure", e.to_string().as_str());
            return;
        }
    };
    let target = receiver.jid.clone();
    let answered = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = smol::channel::unbounded::<()>();
    let answering = ctx
        .ex
        .spawn(answer_all(receiver, stop_rx, answered.clone(), t));
    let with_receiver = read_a(ctx);

    // v0 alone, then v1..=vN at `concurrency` at a time.
    let failures = Arc::new(Failures::default());
    let warm_start = Instant::now();
    if let Err(e) = greet(ctx, &b, 0, &target).await {
        failures.record(&e);
    }
    let warm_s = warm_start.elapsed().as_secs_f64();
    let warm_failed = failures.count();
    Timer::after(settle).await;
    let before = read_a(ctx);

    let next = Arc::new(AtomicUsize::new(1));
    let links_start = Instant::now();
    let workers: Vec<_> = (0..concurrency.min(links))
        .map(|_| {
            let (ctx, b, next, failures) = (ctx.clone(), b.clone(), next.clone(), failures.clone());
            let target = target.clone();
            ctx.ex.clone().spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i > links {
                        break;
                    }
                    if let Err(e) = greet(&ctx, &b, i, &target).await {
                        failures.record(&e);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await;
    }
    let links_s = links_start.elapsed().as_secs_f64();
    let setup = read_a(ctx);
    Timer::after(settle).await;
    let after = read_a(ctx);

    drop(stop_tx);
    let receiver_failure = answering.await.err();

    let up = links - (failures.count() - warm_failed);
    let rss_delta = after
        .rss_kib
        .zip(before.rss_kib)
        .map(|(a, b)| a as f64 - b as f64);
    let tcp_delta = after.tcp.zip(before.tcp).map(|(a, b)| a as f64 - b as f64);
    let per_domain = rss_delta.filter(|_| up > 0).map(|d| d * 1024.0 / up as f64);
    let per_tcp = rss_delta
        .zip(tcp_delta)
        .filter(|(_, n)| *n > 0.0)
        .map(|(d, n)| d * 1024.0 / n);
    let cpu_per_domain = setup
        .cpu_s
        .zip(before.cpu_s)
        .filter(|_| up > 0)
        .map(|(a, b)| (a - b) / up as f64);

    let kib = |v: Option<u64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v} KiB"));
    let count = |v: Option<u64>| v.map_or_else(|| "n/a".to_owned(), |v| v.to_string());
    println!(
        "s2s-idle: {} <- {} (domains 0..={links}, {up}/{links} answered after the warm-up)",
        ctx.args.domain, b.domain
    );
    println!("  warm-up domain answered in    {warm_s:.3} s");
    println!("  {links} domains answered in     {links_s:.3} s at concurrency {concurrency}");
    println!(
        "  server RSS: start / receiver / after v0 / after all   {} / {} / {} / {}",
        kib(start.rss_kib),
        kib(with_receiver.rss_kib),
        kib(before.rss_kib),
        kib(after.rss_kib)
    );
    println!(
        "  server TCP established: after v0 / after all         {} / {}",
        count(before.tcp),
        count(after.tcp)
    );
    println!(
        "  per domain (in + out link)    {}",
        per_domain.map_or_else(
            || "n/a".to_owned(),
            |b| format!("{b:.0} bytes ({:.1} KiB)", b / 1024.0)
        )
    );
    println!(
        "  per TCP connection            {}",
        per_tcp.map_or_else(
            || "n/a".to_owned(),
            |b| format!("{b:.0} bytes ({:.1} KiB)", b / 1024.0)
        )
    );
    println!(
        "  server CPU per domain set-up  {}",
        show(cpu_per_domain.map(|s| s * 1000.0), " ms")
    );
    println!(
        "  messages answered            {}",
        answered.load(Ordering::Relaxed)
    );
    if let Some(e) = &receiver_failure {
        eprintln!("  receiver failure: {e}");
    }

    report.set("links", links);
    report.set("concurrency", concurrency);
    report.set("settle_s", settle.as_secs_f64());
    report.set("up", up);
    failures.report(report);
    report.set(
        "receiver_failure",
        receiver_failure.map(|e| e.to_string()).as_deref(),
    );
    report.set("answered", answered.load(Ordering::Relaxed));
    report.set("warmup_s", warm_s);
    report.set("links_wall_s", links_s);
    report.set("server_rss_start_kib", start.rss_kib);
    report.set("server_rss_receiver_kib", with_receiver.rss_kib);
    report.set("server_rss_before_kib", before.rss_kib);
    report.set("server_rss_after_kib", after.rss_kib);
    report.set("server_tcp_before", before.tcp);
    report.set("server_tcp_after", after.tcp);
    report.set("server_tcp_setup", setup.tcp);
    report.set("server_bytes_per_domain", per_domain);
    report.set("server_bytes_per_tcp", per_tcp);
    report.set("server_cpu_s_per_domain", cpu_per_domain);
}

/// Account 0 of B's domain number `i` logs in, sends `target` one chat message, waits
/// for the answer and logs out.
async fn greet(ctx: &Ctx, b: &ServerB, i: usize, target: &str) -> Result<(), SessionError> {
    let t = ctx.cfg.timeout;
    let domain = user_name(&b.domain, i);
    let cfg: ClientConfig = ctx
        .cfg
        .for_server(&b.host, b.port, &domain)
        .ok_or_else(|| SessionError::Unexpected("domain", domain.clone()))?;
    let mut s = session::login(&cfg, &ctx.args.user(0), "hl0").await?;
    s.conn
        .send(
            "s2s greet",
            &format!(
                "<message to='{}' type='chat' id='g{i}'><body>hello from {}</body></message>",
                escape(target),
                escape(&domain)
            ),
        )
        .await?;
    timeout(t, "s2s answer", async {
        loop {
            let el = s.conn.next_element("s2s answer").await?;
            if el.name == "message" {
                if el.attr("type") == Some("error") {
                    return Err(SessionError::Bounced(stanza_error(&el)));
                }
                if el.child("body").is_some() {
                    return Ok(());
                }
            } else if let Some(reply) = iq_reply(&el) {
                s.conn.send("s2s answer", &reply).await?;
            }
        }
    })
    .await?;
    s.close(t).await
}

/// The receiver's loop: answers each chat message with a body to its sender, answers
/// iqs, and closes the stream once `stop` is closed.
async fn answer_all(
    mut s: Session,
    stop: smol::channel::Receiver<()>,
    answered: Arc<AtomicU64>,
    t: Duration,
) -> Result<(), SessionError> {
    loop {
        let event = future::or(
            async { Some(s.conn.next_event("s2s receiver").await) },
            async {
                let _ = stop.recv().await;
                None
            },
        )
        .await;
        let el = match event {
            None => break,
            Some(Ok(Event::Element(el))) => el,
            Some(Ok(Event::StreamOpen(_))) => continue,
            Some(Ok(Event::StreamClose)) => return Err(SessionError::Closed("s2s receiver")),
            Some(Err(e)) => return Err(e),
        };
        if el.name == "message" && el.attr("type") == Some("chat") && el.child("body").is_some() {
            let Some(from) = el.attr("from") else {
                continue;
            };
            let reply = format!(
                "<message to='{}' type='chat'><body>hello back</body></message>",
                escape(from)
            );
            s.conn.send("s2s receiver", &reply).await?;
            answered.fetch_add(1, Ordering::Relaxed);
        } else if let Some(reply) = iq_reply(&el) {
            s.conn.send("s2s receiver", &reply).await?;
        }
    }
    s.close(t).await
}
