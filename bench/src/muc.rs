//! Scenario `muc`: a group chat room's fan-out (XEP-0045 §7.4): every occupant gets every
//! message sent to the room, the sender its own copy back.
//!
//! Account 0 logs in and joins a new room `<nonce>@<room domain>` (its own run's name, so
//! the room is always new and temporary); when the service says the room was created and
//! is locked (status 201, §10.1.2) it accepts the default configuration with an empty
//! submit form, the "instant room". Then accounts 1..N join, C at a time, each asking for
//! no history (`<history maxstanzas='0'/>`, §7.2.15); an occupant counts as joined when its
//! own presence (status 110) comes back. A warm-up message from occupant 0 goes round
//! until every occupant has it.
//!
//! Timed phase: S senders (occupants 0..S) send M messages in all, each sender at most W
//! without its own copy back yet (W = 1: each message sent when the previous one came back
//! from the room; not paced). A message's body starts `<nonce>-<k>`. Measured: deliveries
//! (first receipts, the sender's own copy included) per second from the first send to the
//! last receipt, the latency from writing message k to each occupant reading it (p50/p99),
//! server CPU per 10,000 deliveries, server RSS before and after; every occupant must get
//! every message exactly once (`missing`, `duplicates`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use smol::{Timer, future};

use crate::report::{Report, percentile, show};
use crate::session::{self, Session, SessionError, iq_reply, stanza_error, timeout};
use crate::xml::{Element, Event};
use crate::{Ctx, Failures, procstat, server_cpu, server_rss};

const NS_MUC: &str = "http://jabber.org/protocol/muc";
const NS_MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";

/// MUC parameters from the command line.
#[derive(Debug, Clone)]
pub struct Params {
    pub occupants: usize,
    pub messages: usize,
    pub senders: usize,
    /// Messages per sender without their own copy back yet, at most.
    pub window: usize,
    pub body_bytes: usize,
    /// The MUC service's domain; `conference.<domain>` when not given.
    pub room_domain: Option<String>,
    pub concurrency: usize,
}

/// The status codes of a MUC presence (`<x xmlns='…muc#user'><status code=…/>`, §7.2.2).
fn status_codes(el: &Element) -> Vec<&str> {
    el.children
        .iter()
        .filter(|c| c.name == "x")
        .flat_map(|x| x.children.iter().filter(|s| s.name == "status"))
        .filter_map(|s| s.attr("code"))
        .collect()
}

/// Which message of this run `el` carries: `Some(Some(k))` for timed message k,
/// `Some(None)` for the warm-up, `None` for anything else.
fn message_index(el: &Element, nonce: &str) -> Option<Option<usize>> {
    if el.name != "message" || el.attr("type") != Some("groupchat") {
        return None;
    }
    let body = &el.child("body")?.text;
    let rest = body.strip_prefix(nonce)?.strip_prefix('-')?;
    let head = rest.split(' ').next().unwrap_or("");
    if head == "warmup" {
        return Some(None);
    }
    head.parse().ok().map(Some)
}

fn groupchat(room: &str, nonce: &str, k: &str, pad: &str) -> String {
    format!(
        "<message to='{room}' type='groupchat' id='{nonce}-{k}'><body>{nonce}-{k} {pad}</body>\
         </message>"
    )
}

/// Joins `room` as `nick` (§7.2.2) and waits for the own presence (status 110); when the
/// room is new and locked (201), accepts the default configuration (§10.1.2). Returns
/// whether this join created the room.
async fn join(s: &mut Session, room: &str, nick: &str, t: Duration) -> Result<bool, SessionError> {
    s.conn
        .send(
            "join",
            &format!(
                "<presence to='{room}/{nick}'><x xmlns='{NS_MUC}'><history maxstanzas='0'/>\
                 </x></presence>"
            ),
        )
        .await?;
    let own = format!("{room}/{nick}");
    let created = timeout(t, "join", async {
        loop {
            let el = s.conn.next_element("join").await?;
            if el.name == "presence" && el.attr("from") == Some(own.as_str()) {
                if el.attr("type") == Some("error") {
                    return Err(SessionError::Unexpected(
                        "join",
                        format!("refused: {}", stanza_error(&el)),
                    ));
                }
                let codes = status_codes(&el);
                if codes.contains(&"110") {
                    return Ok(codes.contains(&"201"));
                }
            } else if let Some(reply) = iq_reply(&el) {
                s.conn.send("iq reply", &reply).await?;
            }
        }
    })
    .await?;
    if created {
        s.conn
            .send(
                "instant room",
                &format!(
                    "<iq type='set' to='{room}' id='instant'><query xmlns='{NS_MUC_OWNER}'>\
                     <x xmlns='jabber:x:data' type='submit'/></query></iq>"
                ),
            )
            .await?;
        timeout(t, "instant room", async {
            loop {
                let el = s.conn.next_element("instant room").await?;
                if el.name == "iq" && el.attr("id") == Some("instant") {
                    if el.attr("type") == Some("result") {
                        return Ok(());
                    }
                    return Err(SessionError::Unexpected(
                        "instant room",
                        format!("refused: {}", stanza_error(&el)),
                    ));
                }
                if let Some(reply) = iq_reply(&el) {
                    s.conn.send("iq reply", &reply).await?;
                }
            }
        })
        .await?;
    }
    Ok(created)
}

/// What the occupants share with the main task.
struct Shared {
    epoch: Instant,
    nonce: String,
    room: String,
    messages: usize,
    /// When message k was written (µs since `epoch`, 0 = not yet).
    sent_us: Vec<AtomicU64>,
    /// Occupants that got the warm-up message.
    warm: AtomicUsize,
    /// First receipts of timed messages, over all occupants.
    received: AtomicU64,
    /// When the latest first receipt was read (µs since `epoch`).
    last_us: AtomicU64,
    /// Senders start when this is set (after the warm-up).
    started: std::sync::atomic::AtomicBool,
    pad: String,
}

impl Shared {
    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

/// What one occupant saw.
#[derive(Default)]
struct Tally {
    counts: Vec<u16>,
    latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

/// An occupant: counts the room's messages until stopped; a sender (when `send` holds its
/// message numbers) also sends them, at most `window` without its own copy back.
async fn occupant(
    mut s: Session,
    shared: Arc<Shared>,
    stop: smol::channel::Receiver<()>,
    go: smol::channel::Receiver<()>,
    send: Vec<usize>,
    window: usize,
) -> (Option<Session>, Tally, Option<SessionError>) {
    let mut tally = Tally {
        counts: vec![0; shared.messages],
        ..Tally::default()
    };
    let mut warm = false;
    let mut next = 0usize;
    let mut in_flight = 0usize;
    loop {
        // Send while the window allows, once the timed phase has begun.
        while next < send.len() && in_flight < window && shared.started.load(Ordering::Acquire) {
            let k = send[next];
            shared.sent_us[k].store(shared.now_us(), Ordering::Relaxed);
            let msg = groupchat(&shared.room, &shared.nonce, &k.to_string(), &shared.pad);
            if let Err(e) = s.conn.send("groupchat", &msg).await {
                return (None, tally, Some(e));
            }
            next += 1;
            in_flight += 1;
        }
        let waiting_to_start = next < send.len() && !shared.started.load(Ordering::Acquire);
        let ev = future::or(
            async { Some(Some(s.conn.next_event("occupant").await)) },
            async {
                if waiting_to_start {
                    // `go` is closed when the timed phase begins.
                    future::or(
                        async {
                            let _ = go.recv().await;
                            Some(None)
                        },
                        async {
                            let _ = stop.recv().await;
                            None
                        },
                    )
                    .await
                } else {
                    let _ = stop.recv().await;
                    None
                }
            },
        )
        .await;
        let el = match ev {
            None => return (Some(s), tally, None),
            Some(None) => continue,
            Some(Some(Ok(Event::Element(el)))) => el,
            Some(Some(Ok(Event::StreamOpen(_)))) => continue,
            Some(Some(Ok(Event::StreamClose))) => {
                return (None, tally, Some(SessionError::Closed("occupant")));
            }
            Some(Some(Err(e))) => return (None, tally, Some(e)),
        };
        if el.name == "message" && el.attr("type") == Some("error") {
            tally.errors += 1;
            tally.first_error.get_or_insert_with(|| stanza_error(&el));
            // The room refused one of ours: it will not come back.
            in_flight = in_flight.saturating_sub(1);
            continue;
        }
        if let Some(reply) = iq_reply(&el) {
            if let Err(e) = s.conn.send("iq reply", &reply).await {
                return (None, tally, Some(e));
            }
            continue;
        }
        match message_index(&el, &shared.nonce) {
            Some(Some(k)) if k < shared.messages => {
                if send.binary_search(&k).is_ok() {
                    in_flight = in_flight.saturating_sub(1);
                }
                tally.counts[k] = tally.counts[k].saturating_add(1);
                if tally.counts[k] == 1 {
                    let now = shared.now_us();
                    let sent = shared.sent_us[k].load(Ordering::Relaxed);
                    if sent != 0 {
                        let lat = u32::try_from(now.saturating_sub(sent)).unwrap_or(u32::MAX);
                        tally.latencies_us.push(lat);
                    }
                    shared.last_us.fetch_max(now, Ordering::Relaxed);
                    shared.received.fetch_add(1, Ordering::Relaxed);
                }
            }
            Some(None) if !warm => {
                warm = true;
                shared.warm.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

fn make_nonce() -> String {
    let mut raw = [0u8; 6];
    if getrandom::fill(&mut raw).is_err() {
        let t = procstat::own_cpu_seconds().to_bits().to_le_bytes();
        raw.copy_from_slice(&t[..6]);
    }
    format!(
        "hl{}",
        raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// Message numbers of sender `i` of `senders`: every `senders`-th from `i`.
fn share_of(i: usize, senders: usize, messages: usize) -> Vec<usize> {
    (i..messages).step_by(senders.max(1)).collect()
}

pub async fn run(ctx: &Arc<Ctx>, p: Params, report: &mut Report) {
    let t = ctx.cfg.timeout;
    let nonce = make_nonce();
    let room_domain = p
        .room_domain
        .clone()
        .unwrap_or_else(|| format!("conference.{}", ctx.args.domain));
    let room = format!("{nonce}@{room_domain}");
    let rss_start = server_rss(&ctx.args);
    let failures = Failures::default();
    let setup_start = Instant::now();

    // The room's creator first, then the others, C at a time.
    let mut first = match session::login(&ctx.cfg, &ctx.args.user(0), "hl0").await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("muc: occupant 0 cannot log in: {e}");
            failures.record(&e);
            failures.report(report);
            return;
        }
    };
    let created = match join(&mut first, &room, "o0", t).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("muc: cannot create {room}: {e}");
            failures.record(&e);
            failures.report(report);
            return;
        }
    };
    let mut joined: Vec<(usize, Session)> = vec![(0, first)];
    let others: Vec<usize> = (1..p.occupants).collect();
    for chunk in others.chunks(p.concurrency.max(1)) {
        let joins: Vec<_> = chunk
            .iter()
            .map(|&i| {
                let (ctx2, room) = (ctx.clone(), room.clone());
                ctx.ex.spawn(async move {
                    let mut s =
                        session::login(&ctx2.cfg, &ctx2.args.user(i), &format!("hl{i}")).await?;
                    join(&mut s, &room, &format!("o{i}"), ctx2.cfg.timeout).await?;
                    Ok::<_, SessionError>(s)
                })
            })
            .collect();
        for (&i, j) in chunk.iter().zip(joins) {
            match j.await {
                Ok(s) => joined.push((i, s)),
                Err(e) => failures.record(&e),
            }
        }
    }
    let online = joined.len();
    let setup_s = setup_start.elapsed().as_secs_f64();
    println!(
        "muc: {online} of {} occupants in {room} (created: {created}) in {setup_s:.3} s",
        p.occupants
    );

    let pad_len = p.body_bytes.saturating_sub(nonce.len() + 8);
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        nonce: nonce.clone(),
        room: room.clone(),
        messages: p.messages,
        sent_us: (0..p.messages).map(|_| AtomicU64::new(0)).collect(),
        warm: AtomicUsize::new(0),
        received: AtomicU64::new(0),
        last_us: AtomicU64::new(0),
        started: std::sync::atomic::AtomicBool::new(false),
        pad: "x".repeat(pad_len),
    });

    // Warm-up: occupant 0 sends one message a second until every occupant got one. It is
    // sent before the occupant tasks start, so occupant 0's task reads its own copy.
    let (stop_tx, stop_rx) = smol::channel::unbounded::<()>();
    let (go_tx, go_rx) = smol::channel::unbounded::<()>();
    let mut tasks = Vec::new();
    let mut warm_msgs = 0;
    let warm_start = Instant::now();
    for (n, (i, mut s)) in joined.into_iter().enumerate() {
        if n == 0
            && let Err(e) = s
                .conn
                .send("warm-up", &groupchat(&room, &nonce, "warmup", "first"))
                .await
        {
            failures.record(&e);
            continue;
        }
        let send = if i < p.senders {
            share_of(i, p.senders, p.messages)
        } else {
            Vec::new()
        };
        let job = occupant(
            s,
            shared.clone(),
            stop_rx.clone(),
            go_rx.clone(),
            send,
            p.window,
        );
        tasks.push((i, ctx.ex.spawn(job)));
    }
    warm_msgs += 1;
    while shared.warm.load(Ordering::Relaxed) < online && warm_start.elapsed() < t {
        Timer::after(Duration::from_millis(20)).await;
    }
    let ready = shared.warm.load(Ordering::Relaxed);
    let warmup_s = warm_start.elapsed().as_secs_f64();
    println!(
        "  warm-up: {warm_msgs} message, {ready} of {online} occupants got it in {warmup_s:.3} s"
    );
    Timer::after(Duration::from_millis(500)).await;

    // The timed phase.
    let rss_before = server_rss(&ctx.args);
    let (cpu0, gen0) = (server_cpu(&ctx.args), procstat::own_cpu_seconds());
    let start_us = shared.now_us();
    shared.started.store(true, Ordering::Release);
    drop(go_tx);
    let expected = (online * p.messages) as u64;
    let mut last_seen = (shared.received.load(Ordering::Relaxed), Instant::now());
    let quiet = Duration::from_secs(5).min(t);
    loop {
        let got = shared.received.load(Ordering::Relaxed);
        if got >= expected {
            break;
        }
        if got != last_seen.0 {
            last_seen = (got, Instant::now());
        } else if last_seen.1.elapsed() >= quiet {
            break;
        }
        Timer::after(Duration::from_millis(10)).await;
    }
    let (cpu1, gen1) = (server_cpu(&ctx.args), procstat::own_cpu_seconds());
    // Late duplicates.
    Timer::after(Duration::from_secs(1)).await;
    let rss_after = server_rss(&ctx.args);
    drop(stop_tx);

    let mut tallies = Vec::new();
    let mut sessions = Vec::new();
    let mut occupant_failures = 0usize;
    for (_, task) in tasks {
        let (s, tally, err) = task.await;
        if let Some(e) = err {
            occupant_failures += 1;
            failures.record(&e);
        }
        if let Some(s) = s {
            sessions.push(s);
        }
        tallies.push(tally);
    }
    let closes: Vec<_> = sessions
        .into_iter()
        .map(|s| ctx.ex.spawn(s.close(t)))
        .collect();
    for c in closes {
        let _ = c.await;
    }

    // Figures.
    let mut latencies: Vec<u32> = Vec::new();
    let (mut missing, mut duplicates, mut errors) = (0u64, 0u64, 0u64);
    let mut first_error = None;
    for tally in &tallies {
        latencies.extend_from_slice(&tally.latencies_us);
        for &c in &tally.counts {
            match c {
                0 => missing += 1,
                1 => {}
                c => duplicates += u64::from(c - 1),
            }
        }
        errors += tally.errors;
        if first_error.is_none() {
            first_error.clone_from(&tally.first_error);
        }
    }
    let delivered = shared.received.load(Ordering::Relaxed);
    latencies.sort_unstable();
    let ms = |v: Option<u32>| v.map(|us| f64::from(us) / 1000.0);
    let lat = [50.0, 99.0].map(|q| ms(percentile(&latencies, q)));
    let end_us = shared.last_us.load(Ordering::Relaxed);
    let secs = (end_us.saturating_sub(start_us)) as f64 / 1e6;
    let rate = |n: f64, s: f64| (s > 0.0).then(|| n / s);
    let server_cpu_s = cpu1.zip(cpu0).map(|(b, a)| b - a);
    let per_10k = server_cpu_s
        .filter(|_| delivered > 0)
        .map(|c| c * 10_000.0 / delivered as f64);
    let gen_cpu = gen1 - gen0;
    let exactly_once = missing == 0 && duplicates == 0 && online == p.occupants;

    println!(
        "  {} messages from {} senders, window {} (sent as the room echoes them, not paced)",
        p.messages, p.senders, p.window
    );
    println!(
        "  deliveries {delivered} of {expected} = {}/s over {secs:.3} s ({} messages/s)",
        show(rate(delivered as f64, secs), ""),
        show(rate(p.messages as f64, secs), "")
    );
    println!(
        "  latency p50 / p99                {} / {}",
        show(lat[0], " ms"),
        show(lat[1], " ms")
    );
    println!(
        "  exactly once: {} (missing {missing}, duplicates {duplicates}, errors {errors}{}, \
         occupants {online} of {})",
        if exactly_once { "yes" } else { "no" },
        first_error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default(),
        p.occupants
    );
    println!(
        "  server CPU {} = {} per 10k deliveries; generator CPU {gen_cpu:.3} s",
        show(server_cpu_s, " s"),
        show(per_10k, " s")
    );
    let mib = |k: Option<u64>| k.map(|k| k as f64 / 1024.0);
    println!(
        "  server RSS at start / before / after  {} / {} / {}",
        show(mib(rss_start), " MiB"),
        show(mib(rss_before), " MiB"),
        show(mib(rss_after), " MiB")
    );

    report.set("occupants", p.occupants);
    report.set("messages", p.messages);
    report.set("senders", p.senders);
    report.set("window", p.window);
    report.set("room", room.as_str());
    report.set("setup_s", setup_s);
    report.set("occupants_joined", online);
    report.set("occupant_failures", occupant_failures);
    report.set("warmup_s", warmup_s);
    report.set("occupants_warm", ready);
    failures.report(report);
    report.set("deliveries_expected", expected);
    report.set("deliveries", delivered);
    report.set("deliveries_per_s", rate(delivered as f64, secs));
    report.set("messages_per_s", rate(p.messages as f64, secs));
    report.set("latency_p50_ms", lat[0]);
    report.set("latency_p99_ms", lat[1]);
    report.set("missing", missing);
    report.set("duplicates", duplicates);
    report.set("message_errors", errors);
    report.set("first_message_error", first_error.as_deref());
    report.set("exactly_once", if exactly_once { "yes" } else { "no" });
    report.set("duration_s", secs);
    report.set("server_cpu_s", server_cpu_s);
    report.set("server_cpu_s_per_10k_deliveries", per_10k);
    report.set("gen_cpu_s", gen_cpu);
    report.set("rss_start_kib", rss_start);
    report.set("rss_before_kib", rss_before);
    report.set("rss_after_kib", rss_after);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_room_messages_and_status_codes() {
        let m = Element::parse(
            "<message from='r@c/o1' type='groupchat'><body>hlab-7 xxx</body></message>",
        )
        .unwrap();
        assert_eq!(message_index(&m, "hlab"), Some(Some(7)));
        let w = Element::parse(
            "<message from='r@c/o0' type='groupchat'><body>hlab-warmup first</body></message>",
        )
        .unwrap();
        assert_eq!(message_index(&w, "hlab"), Some(None));
        let chat =
            Element::parse("<message type='chat'><body>hlab-7 xxx</body></message>").unwrap();
        assert_eq!(message_index(&chat, "hlab"), None);
        assert_eq!(message_index(&m, "hlcd"), None);
        let p = Element::parse(
            "<presence from='r@c/o0'><x xmlns='http://jabber.org/protocol/muc#user'>\
             <item affiliation='owner' role='moderator'/><status code='110'/>\
             <status code='201'/></x></presence>",
        )
        .unwrap();
        assert_eq!(status_codes(&p), vec!["110", "201"]);
    }

    #[test]
    fn senders_share_the_messages() {
        assert_eq!(share_of(0, 3, 7), vec![0, 3, 6]);
        assert_eq!(share_of(2, 3, 7), vec![2, 5]);
        let all: usize = (0..3).map(|i| share_of(i, 3, 7).len()).sum();
        assert_eq!(all, 7);
    }
}
