//! Scenario `pep`: one user publishes to a Personal Eventing node and the server fans the
//! notifications out to its online contacts (XEP-0163 §4.3, XEP-0084 avatar metadata).
//!
//! Account 0 is the *publisher*, accounts 1..=N its contacts, subscribed both ways with it
//! (RFC 6121 §3.1, set up like `presence` does and reused on a re-run). After the set-up
//! everyone logs out; the publisher logs in again with plain initial presence (no caps:
//! it asks for no notifications), then each contact logs in with a XEP-0115 `<c/>` in its
//! initial presence. The hash is computed here per XEP-0115 §5.1 over one identity and
//! the features below, `urn:xmpp:avatar:metadata+notify` among them; servers that have
//! not seen it ask a contact with a disco#info iq for `node#ver` (§6.2), which the
//! contacts answer, and then send notifications for the node to every contact with that
//! hash (XEP-0163 §4.3.1 filtered notifications; no explicit subscription).
//!
//! Warm-up (untimed): the publisher publishes an item every second until every contact
//! got one, so the caps answer has landed on every server. Then the timed phase: K
//! publishes to `urn:xmpp:avatar:metadata`, at most W unanswered at a time (W = 1 by
//! default: each publish is sent when the previous one's result arrives, as fast as the
//! server acknowledges; not paced). Item ids are `<run nonce>-<k>`; the payload is a
//! XEP-0084 §4.2 `<metadata><info/></metadata>` of about 200 bytes. Measured: the publish
//! iq's round trip, the fan-out latency from writing publish k to each contact reading its
//! notification, notifications per second (from the first publish to the last
//! notification), server CPU per 10,000 notifications, server RSS before and after; and
//! every contact must get every item exactly once (`missing`, `duplicates`).
//!
//! Last item on login (XEP-0163 §4.3.3): afterwards up to L contacts, one at a time, log
//! out and in again; the time from writing initial presence (with caps) to reading the
//! notification of the last published item is reported.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::Digest;
use smol::{Timer, future};

use crate::presence::subscribe_all;
use crate::report::{Report, percentile, show};
use crate::session::{self, Session, SessionError, iq_reply, stanza_error, timeout};
use crate::xml::{Element, Event, escape};
use crate::{Ctx, login_all, procstat, server_cpu, server_rss};

/// The node published to (XEP-0084 §4.2).
pub const NODE: &str = "urn:xmpp:avatar:metadata";
const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const NS_CAPS: &str = "http://jabber.org/protocol/caps";
const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
/// The contacts' caps node (XEP-0115 §4: a URI naming the software).
const CAPS_NODE: &str = "https://hearth.invalid/hearth-load";
/// The contacts' one identity: category, type, `xml:lang`, name (XEP-0030 §3.1).
const IDENTITY: (&str, &str, &str, &str) = ("client", "pc", "", "hearth-load");
/// The contacts' features; `NODE+notify` asks for the node's notifications (XEP-0163 §4.3.1).
const FEATURES: &[&str] = &[
    NS_CAPS,
    NS_DISCO_INFO,
    "urn:xmpp:avatar:metadata+notify",
    "urn:xmpp:ping",
];

/// PEP parameters from the command line.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub contacts: usize,
    pub items: usize,
    /// Publishes without a result yet, at most.
    pub window: usize,
    /// Contacts that log in again to time the last item on login.
    pub relogins: usize,
    pub concurrency: usize,
}

/// XEP-0115 §5.1 verification string and its SHA-1, base64 (no data forms here): each
/// identity `category/type/lang/name<` sorted, then each feature `feature<` sorted.
pub fn caps_ver(identities: &[(&str, &str, &str, &str)], features: &[&str]) -> String {
    let mut ids: Vec<String> = identities
        .iter()
        .map(|(c, t, l, n)| format!("{c}/{t}/{l}/{n}<"))
        .collect();
    ids.sort_unstable();
    let mut fs: Vec<&str> = features.to_vec();
    fs.sort_unstable();
    let mut s = ids.concat();
    for f in fs {
        s.push_str(f);
        s.push('<');
    }
    BASE64.encode(sha1::Sha1::digest(s.as_bytes()))
}

/// The contacts' `ver`.
fn our_ver() -> String {
    caps_ver(&[IDENTITY], FEATURES)
}

/// Initial presence with our caps (XEP-0115 §4).
fn caps_presence(ver: &str) -> String {
    format!(
        "<presence><c xmlns='{NS_CAPS}' hash='sha-1' node='{CAPS_NODE}' ver='{ver}'/></presence>"
    )
}

/// The answer to a server's disco#info for `node#ver` (XEP-0115 §6.2, XEP-0030 §3.1), or
/// `None` if `el` is not such a query. (The tree keeps no namespaces: a `<query/>` whose
/// node is ours can only be disco#info.)
fn disco_answer(el: &Element, ver: &str) -> Option<String> {
    if el.name != "iq" || el.attr("type") != Some("get") {
        return None;
    }
    let node = el.child("query")?.attr("node")?;
    if node != format!("{CAPS_NODE}#{ver}") {
        return None;
    }
    let id = escape(el.attr("id").unwrap_or(""));
    let to = el
        .attr("from")
        .map(|f| format!(" to='{}'", escape(f)))
        .unwrap_or_default();
    let (c, t, _, n) = IDENTITY;
    let mut out = format!(
        "<iq type='result' id='{id}'{to}><query xmlns='{NS_DISCO_INFO}' node='{}'>\
         <identity category='{c}' type='{t}' name='{n}'/>",
        escape(node)
    );
    for f in FEATURES {
        out.push_str(&format!("<feature var='{f}'/>"));
    }
    out.push_str("</query></iq>");
    Some(out)
}

/// What a notification carries: the item ids published to [`NODE`] (XEP-0060 §7.1.2.1),
/// empty for anything else.
fn notified_ids(el: &Element) -> Vec<&str> {
    if el.name != "message" {
        return Vec::new();
    }
    let Some(items) = el.child("event").and_then(|e| e.child("items")) else {
        return Vec::new();
    };
    if items.attr("node") != Some(NODE) {
        return Vec::new();
    }
    items
        .children
        .iter()
        .filter(|i| i.name == "item")
        .filter_map(|i| i.attr("id"))
        .collect()
}

/// An item id of this run.
#[derive(Debug, PartialEq, Eq)]
enum ItemId {
    Timed(usize),
    Warmup,
}

fn parse_id(nonce: &str, id: &str) -> Option<ItemId> {
    let rest = id.strip_prefix(nonce)?.strip_prefix('-')?;
    if rest.starts_with('w') {
        return Some(ItemId::Warmup);
    }
    rest.parse().ok().map(ItemId::Timed)
}

fn publish_iq(nonce: &str, id: &str, item: &str) -> String {
    // XEP-0084 §4.2; `id` of <info/> would be the image's SHA-1: servers do not look.
    format!(
        "<iq type='set' id='{id}'><pubsub xmlns='{NS_PUBSUB}'><publish node='{NODE}'>\
         <item id='{nonce}-{item}'><metadata xmlns='{NODE}'><info bytes='12345' \
         height='64' width='64' type='image/png' id='{nonce}-{item}-0123456789abcdef0123'/>\
         </metadata></item></publish></pubsub></iq>"
    )
}

/// What the contacts share with the main task.
struct Shared {
    epoch: Instant,
    nonce: String,
    items: usize,
    /// When publish k was written (µs since `epoch`, 0 = not yet).
    sent_us: Vec<AtomicU64>,
    /// Contacts that got a warm-up item.
    warm: AtomicUsize,
    /// First receipts of timed items, over all contacts.
    received: AtomicU64,
    /// When the latest first receipt was read (µs since `epoch`).
    last_us: AtomicU64,
}

impl Shared {
    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

/// What one contact saw.
#[derive(Default)]
struct Tally {
    /// Receipts per timed item.
    counts: Vec<u16>,
    latencies_us: Vec<u32>,
    /// Items of an earlier run (its last item, sent on presence).
    stale: u64,
    disco_answered: u64,
    /// Notifications of timed items addressed to the bare JID rather than this resource
    /// (Prosody also sends to the bare JID of a contact whose own caps it learnt).
    to_bare: u64,
}

/// A contact: answers disco#info and pings, counts notifications until stopped.
async fn contact(
    mut s: Session,
    shared: Arc<Shared>,
    stop: smol::channel::Receiver<()>,
    ver: String,
) -> (Option<Session>, Tally, Option<SessionError>) {
    let mut tally = Tally {
        counts: vec![0; shared.items],
        ..Tally::default()
    };
    let mut warm = false;
    loop {
        let ev = future::or(async { Some(s.conn.next_event("contact").await) }, async {
            let _ = stop.recv().await;
            None
        })
        .await;
        let el = match ev {
            None => return (Some(s), tally, None),
            Some(Ok(Event::Element(el))) => el,
            Some(Ok(Event::StreamOpen(_))) => continue,
            Some(Ok(Event::StreamClose)) => {
                return (None, tally, Some(SessionError::Closed("contact")));
            }
            Some(Err(e)) => return (None, tally, Some(e)),
        };
        if let Some(answer) = disco_answer(&el, &ver) {
            tally.disco_answered += 1;
            if let Err(e) = s.conn.send("disco", &answer).await {
                return (None, tally, Some(e));
            }
            continue;
        }
        if let Some(reply) = iq_reply(&el) {
            if let Err(e) = s.conn.send("iq reply", &reply).await {
                return (None, tally, Some(e));
            }
            continue;
        }
        let to_bare = el.attr("to").is_some_and(|to| !to.contains('/'));
        for id in notified_ids(&el) {
            match parse_id(&shared.nonce, id) {
                Some(ItemId::Timed(k)) if k < shared.items => {
                    tally.to_bare += u64::from(to_bare);
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
                Some(ItemId::Warmup) => {
                    if !warm {
                        warm = true;
                        shared.warm.fetch_add(1, Ordering::Relaxed);
                    }
                }
                _ => tally.stale += 1,
            }
        }
    }
}

/// Publish results: round trips and errors.
#[derive(Default)]
struct Published {
    rtt_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
    /// Notifications the publisher itself got (it asked for none).
    own_notifications: u64,
}

/// Publishes items `from..to` (ids `{nonce}-{k}`, or warm-up ids `{nonce}-w{k}` when
/// `warmup`), at most `window` unanswered; records when each was written in `sent_us`.
async fn publish(
    s: &mut Session,
    shared: &Shared,
    range: std::ops::Range<usize>,
    window: usize,
    warmup: bool,
    out: &mut Published,
    t: Duration,
) -> Result<(), SessionError> {
    let mut next = range.start;
    let mut done = range.start;
    let mut sent_at: std::collections::HashMap<usize, u64> = std::collections::HashMap::new();
    while done < range.end {
        while next < range.end && next - done < window {
            let (iq_id, item) = if warmup {
                (format!("w{next}"), format!("w{next}"))
            } else {
                (format!("p{next}"), next.to_string())
            };
            let now = shared.now_us();
            if !warmup && let Some(a) = shared.sent_us.get(next) {
                a.store(now, Ordering::Relaxed);
            }
            sent_at.insert(next, now);
            s.conn
                .send("publish", &publish_iq(&shared.nonce, &iq_id, &item))
                .await?;
            next += 1;
        }
        let el = timeout(t, "publish result", s.conn.next_element("publish result")).await?;
        let answered = el
            .attr("id")
            .and_then(|id| id.strip_prefix(if warmup { 'w' } else { 'p' }))
            .and_then(|k| k.parse::<usize>().ok())
            .filter(|k| sent_at.contains_key(k));
        if el.name == "iq"
            && let Some(k) = answered
            && matches!(el.attr("type"), Some("result" | "error"))
        {
            let sent = sent_at.remove(&k).unwrap_or(0);
            if el.attr("type") == Some("result") {
                let rtt = shared.now_us().saturating_sub(sent);
                if !warmup {
                    out.rtt_us.push(u32::try_from(rtt).unwrap_or(u32::MAX));
                }
            } else {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| stanza_error(&el));
            }
            done += 1;
        } else if !notified_ids(&el).is_empty() {
            out.own_notifications += 1;
        } else if let Some(reply) = iq_reply(&el) {
            s.conn.send("iq reply", &reply).await?;
        }
    }
    Ok(())
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

pub async fn run(ctx: &Arc<Ctx>, p: Params, report: &mut Report) {
    let t = ctx.cfg.timeout;
    let nonce = make_nonce();
    let ver = our_ver();
    let rss_start = server_rss(&ctx.args);

    // Set-up: subscriptions both ways between the publisher and each contact.
    let setup_start = Instant::now();
    let (mut sessions, failures) = login_all(ctx, p.contacts + 1, p.concurrency).await;
    let jid = |i: usize| format!("{}@{}", ctx.args.user(i), ctx.args.domain).to_lowercase();
    let mut tasks = Vec::new();
    for (i, slot) in sessions.iter_mut().enumerate() {
        let Some(s) = slot.take() else { continue };
        let contacts: Vec<String> = if i == 0 {
            (1..=p.contacts).map(jid).collect()
        } else {
            vec![jid(0)]
        };
        tasks.push(ctx.ex.spawn(subscribe_all(s, contacts, t)));
    }
    let mut closes = Vec::new();
    for task in tasks {
        match task.await {
            Ok((s, _)) => closes.push(ctx.ex.spawn(s.close(t))),
            Err(e) => failures.record(&e),
        }
    }
    for c in closes {
        let _ = c.await;
    }

    // The publisher, without caps; then the contacts with them.
    let mut publisher = match session::login(&ctx.cfg, &ctx.args.user(0), "publisher").await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pep: the publisher cannot log in: {e}");
            failures.record(&e);
            failures.report(report);
            return;
        }
    };
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        nonce: nonce.clone(),
        items: p.items,
        sent_us: (0..p.items).map(|_| AtomicU64::new(0)).collect(),
        warm: AtomicUsize::new(0),
        received: AtomicU64::new(0),
        last_us: AtomicU64::new(0),
    });
    let (stop_tx, stop_rx) = smol::channel::unbounded::<()>();
    let mut contact_tasks = Vec::new();
    for chunk in (1..=p.contacts).collect::<Vec<_>>().chunks(p.concurrency) {
        let logins: Vec<_> = chunk
            .iter()
            .map(|&i| {
                let (ctx2, user, ver) = (ctx.clone(), ctx.args.user(i), ver.clone());
                ctx.ex.spawn(async move {
                    let mut s = session::login_bound(&ctx2.cfg, &user, &format!("hl{i}")).await?;
                    s.conn.send("presence", &caps_presence(&ver)).await?;
                    Ok::<_, SessionError>(s)
                })
            })
            .collect();
        for (&i, login) in chunk.iter().zip(logins) {
            match login.await {
                Ok(s) => {
                    let job = contact(s, shared.clone(), stop_rx.clone(), ver.clone());
                    contact_tasks.push((i, ctx.ex.spawn(job)));
                }
                Err(e) => failures.record(&e),
            }
        }
    }
    let online = contact_tasks.len();
    let setup_s = setup_start.elapsed().as_secs_f64();
    println!(
        "pep: set-up of the publisher and {online} contacts (caps ver {ver}) in {setup_s:.3} s \
         ({} failed)",
        failures.count()
    );

    // Warm-up: an item a second until every contact got one.
    let warm_start = Instant::now();
    let mut published = Published::default();
    let mut warmups = 0;
    let mut publish_failed = None;
    while shared.warm.load(Ordering::Relaxed) < online && warm_start.elapsed() < t {
        if let Err(e) = publish(
            &mut publisher,
            &shared,
            warmups..warmups + 1,
            1,
            true,
            &mut published,
            t,
        )
        .await
        {
            publish_failed = Some(e);
            break;
        }
        warmups += 1;
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until && shared.warm.load(Ordering::Relaxed) < online {
            Timer::after(Duration::from_millis(20)).await;
        }
    }
    let ready = shared.warm.load(Ordering::Relaxed);
    let warmup_s = warm_start.elapsed().as_secs_f64();
    println!(
        "  warm-up: {warmups} publishes, {ready} of {online} contacts notified in {warmup_s:.3} s"
    );
    // Stragglers of the warm-up settle before the timed phase.
    Timer::after(Duration::from_millis(500)).await;

    // The timed phase.
    let rss_before = server_rss(&ctx.args);
    let (cpu0, gen0) = (server_cpu(&ctx.args), procstat::own_cpu_seconds());
    let start_us = shared.now_us();
    if publish_failed.is_none()
        && let Err(e) = publish(
            &mut publisher,
            &shared,
            0..p.items,
            p.window,
            false,
            &mut published,
            t,
        )
        .await
    {
        publish_failed = Some(e);
    }
    let publish_end_us = shared.now_us();
    // Until every contact has every item, or nothing new came for a while.
    let expected = (online * p.items) as u64;
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
    let mut sessions: Vec<(usize, Session)> = Vec::new();
    let mut contact_failures = 0usize;
    for (i, task) in contact_tasks {
        let (s, tally, err) = task.await;
        if let Some(e) = err {
            contact_failures += 1;
            failures.record(&e);
        }
        if let Some(s) = s {
            sessions.push((i, s));
        }
        tallies.push(tally);
    }

    // Last item on login.
    let mut relogin_us: Vec<u32> = Vec::new();
    let mut relogin_failures = 0usize;
    // Caps queries during the re-logins: none if the server kept the hash (XEP-0115 §5.4).
    let mut relogin_disco = 0u64;
    let last_id = p.items.checked_sub(1).map(|k| format!("{nonce}-{k}"));
    let mut kept = Vec::new();
    for (n, (i, s)) in sessions.into_iter().enumerate() {
        let Some(last_id) = last_id.as_ref().filter(|_| n < p.relogins) else {
            kept.push(s);
            continue;
        };
        let _ = s.close(t).await;
        let one = async {
            let mut s =
                session::login_bound(&ctx.cfg, &ctx.args.user(i), &format!("hl{i}")).await?;
            let sent = Instant::now();
            s.conn.send("presence", &caps_presence(&ver)).await?;
            let got = timeout(t, "last item", async {
                loop {
                    let el = s.conn.next_element("last item").await?;
                    if notified_ids(&el).contains(&last_id.as_str()) {
                        return Ok(sent.elapsed());
                    }
                    if let Some(answer) = disco_answer(&el, &ver) {
                        relogin_disco += 1;
                        s.conn.send("disco", &answer).await?;
                    } else if let Some(reply) = iq_reply(&el) {
                        s.conn.send("iq reply", &reply).await?;
                    }
                }
            })
            .await;
            let _ = s.close(t).await;
            got
        };
        match one.await {
            Ok(d) => relogin_us.push(u32::try_from(d.as_micros()).unwrap_or(u32::MAX)),
            Err(e) => {
                relogin_failures += 1;
                failures.record(&e);
            }
        }
    }
    let closes: Vec<_> = kept.into_iter().map(|s| ctx.ex.spawn(s.close(t))).collect();
    for c in closes {
        let _ = c.await;
    }
    let _ = publisher.close(t).await;

    // Figures.
    let mut latencies: Vec<u32> = Vec::new();
    let (mut missing, mut duplicates, mut stale, mut disco) = (0u64, 0u64, 0u64, 0u64);
    let (mut to_bare, mut duplicated_contacts) = (0u64, 0usize);
    for tally in &tallies {
        latencies.extend_from_slice(&tally.latencies_us);
        let before = duplicates;
        for &c in &tally.counts {
            match c {
                0 => missing += 1,
                1 => {}
                c => duplicates += u64::from(c - 1),
            }
        }
        duplicated_contacts += usize::from(duplicates > before);
        stale += tally.stale;
        disco += tally.disco_answered;
        to_bare += tally.to_bare;
    }
    // Contacts whose session ended early count every item they did not get as missing.
    let delivered = shared.received.load(Ordering::Relaxed);
    latencies.sort_unstable();
    let mut rtts = std::mem::take(&mut published.rtt_us);
    rtts.sort_unstable();
    relogin_us.sort_unstable();
    let ms = |v: Option<u32>| v.map(|us| f64::from(us) / 1000.0);
    let fan = [50.0, 99.0].map(|q| ms(percentile(&latencies, q)));
    let rtt = [50.0, 99.0].map(|q| ms(percentile(&rtts, q)));
    let relogin = [50.0, 100.0].map(|q| ms(percentile(&relogin_us, q)));
    let end_us = shared.last_us.load(Ordering::Relaxed).max(publish_end_us);
    let secs = (end_us.saturating_sub(start_us)) as f64 / 1e6;
    let publish_secs = (publish_end_us.saturating_sub(start_us)) as f64 / 1e6;
    let rate = |n: f64, s: f64| (s > 0.0).then(|| n / s);
    let server_cpu_s = cpu1.zip(cpu0).map(|(b, a)| b - a);
    let per_10k = server_cpu_s
        .filter(|_| delivered > 0)
        .map(|c| c * 10_000.0 / delivered as f64);
    let gen_cpu = gen1 - gen0;
    let exactly_once = missing == 0 && duplicates == 0 && online == p.contacts;
    if let Some(e) = &publish_failed {
        failures.record(e);
    }

    println!(
        "  {} items to {NODE}, window {} (each publish sent as results come back, not paced)",
        p.items, p.window
    );
    println!(
        "  publish round trip p50 / p99     {} / {}  ({} results, {} errors{})",
        show(rtt[0], " ms"),
        show(rtt[1], " ms"),
        rtts.len(),
        published.errors,
        published
            .first_error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default()
    );
    println!(
        "  publishes/s                      {}",
        show(rate(rtts.len() as f64, publish_secs), "")
    );
    println!(
        "  notifications {delivered} of {expected} = {}/s over {secs:.3} s",
        show(rate(delivered as f64, secs), "")
    );
    println!(
        "  fan-out latency p50 / p99        {} / {}",
        show(fan[0], " ms"),
        show(fan[1], " ms")
    );
    println!(
        "  exactly once: {} (missing {missing}, duplicates {duplicates} at \
         {duplicated_contacts} contacts, stale {stale}, contacts online {online} of {}); \
         {to_bare} notifications addressed to a bare JID",
        if exactly_once { "yes" } else { "no" },
        p.contacts
    );
    println!(
        "  server CPU {} = {} per 10k notifications; generator CPU {gen_cpu:.3} s",
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
    println!(
        "  last item on login p50 / max     {} / {}  ({} logins, {relogin_failures} failed, \
         {relogin_disco} caps queries)",
        show(relogin[0], " ms"),
        show(relogin[1], " ms"),
        relogin_us.len()
    );

    report.set("contacts", p.contacts);
    report.set("items", p.items);
    report.set("window", p.window);
    report.set("caps_ver", ver.as_str());
    report.set("setup_s", setup_s);
    report.set("contacts_online", online);
    report.set("contact_failures", contact_failures);
    report.set("warmup_publishes", warmups);
    report.set("warmup_s", warmup_s);
    report.set("contacts_notified_in_warmup", ready);
    report.set("disco_queries_answered", disco);
    failures.report(report);
    report.set("publish_results", rtts.len());
    report.set("publish_errors", published.errors);
    report.set("publish_first_error", published.first_error.as_deref());
    report.set("publish_rtt_p50_ms", rtt[0]);
    report.set("publish_rtt_p99_ms", rtt[1]);
    report.set("publishes_per_s", rate(rtts.len() as f64, publish_secs));
    report.set("publisher_own_notifications", published.own_notifications);
    report.set("notifications_expected", expected);
    report.set("notifications", delivered);
    report.set("notifications_per_s", rate(delivered as f64, secs));
    report.set("fanout_p50_ms", fan[0]);
    report.set("fanout_p99_ms", fan[1]);
    report.set("fanout_samples", latencies.len());
    report.set("missing", missing);
    report.set("duplicates", duplicates);
    report.set("contacts_with_duplicates", duplicated_contacts);
    report.set("notifications_to_bare_jid", to_bare);
    report.set("stale", stale);
    report.set("exactly_once", if exactly_once { "yes" } else { "no" });
    report.set("duration_s", secs);
    report.set("server_cpu_s", server_cpu_s);
    report.set("server_cpu_s_per_10k_notifications", per_10k);
    report.set("gen_cpu_s", gen_cpu);
    report.set("rss_start_kib", rss_start);
    report.set("rss_before_kib", rss_before);
    report.set("rss_after_kib", rss_after);
    report.set("last_item_logins", relogin_us.len());
    report.set("last_item_failed", relogin_failures);
    report.set("last_item_disco_queries", relogin_disco);
    report.set("last_item_p50_ms", relogin[0]);
    report.set("last_item_max_ms", relogin[1]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hash_of_the_xep_example() {
        // XEP-0115 §5.2, the simple example.
        let ver = caps_ver(
            &[("client", "pc", "", "Exodus 0.9.1")],
            &[
                "http://jabber.org/protocol/muc",
                "http://jabber.org/protocol/disco#info",
                "http://jabber.org/protocol/disco#items",
                "http://jabber.org/protocol/caps",
            ],
        );
        assert_eq!(ver, "QgayPKawpkPSDYmwT/WM94uAlu0=");
    }

    #[test]
    fn answers_the_caps_query_with_what_the_hash_covers() {
        let ver = our_ver();
        let q = Element::parse(&format!(
            "<iq type='get' id='d1' from='bench.local'><query \
             xmlns='http://jabber.org/protocol/disco#info' node='{CAPS_NODE}#{ver}'/></iq>"
        ))
        .unwrap();
        let a = Element::parse(&disco_answer(&q, &ver).unwrap()).unwrap();
        assert_eq!(a.attr("type"), Some("result"));
        assert_eq!(a.attr("to"), Some("bench.local"));
        let query = a.child("query").unwrap();
        let ids: Vec<(&str, &str, &str, &str)> = query
            .children
            .iter()
            .filter(|c| c.name == "identity")
            .map(|c| {
                (
                    c.attr("category").unwrap(),
                    c.attr("type").unwrap(),
                    "",
                    c.attr("name").unwrap(),
                )
            })
            .collect();
        let fs: Vec<&str> = query
            .children
            .iter()
            .filter(|c| c.name == "feature")
            .map(|c| c.attr("var").unwrap())
            .collect();
        assert!(fs.contains(&"urn:xmpp:avatar:metadata+notify"));
        assert_eq!(caps_ver(&ids, &fs), ver);
        // Another node, or no node: not ours to answer this way.
        let other = Element::parse(
            "<iq type='get' id='d2'><query xmlns='http://jabber.org/protocol/disco#info' \
             node='x#y'/></iq>",
        )
        .unwrap();
        assert_eq!(disco_answer(&other, &ver), None);
    }

    #[test]
    fn reads_notifications() {
        let m = Element::parse(
            "<message from='pep0@b'><event xmlns='http://jabber.org/protocol/pubsub#event'>\
             <items node='urn:xmpp:avatar:metadata'><item id='hlab-7'><metadata/></item>\
             </items></event></message>",
        )
        .unwrap();
        assert_eq!(notified_ids(&m), vec!["hlab-7"]);
        assert_eq!(parse_id("hlab", "hlab-7"), Some(ItemId::Timed(7)));
        assert_eq!(parse_id("hlab", "hlab-w3"), Some(ItemId::Warmup));
        assert_eq!(parse_id("hlab", "hlcd-7"), None);
        let other = Element::parse(
            "<message><event><items node='urn:xmpp:nick'><item id='hlab-1'/></items></event>\
             </message>",
        )
        .unwrap();
        assert!(notified_ids(&other).is_empty());
    }
}
