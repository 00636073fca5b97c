//! Scenario `csi`: what an idle phone receives from chatty contacts, with XEP-0352 Client
//! State Indication on (the phone says `<inactive/>`) or off (it says nothing).
//!
//! Account 0 is the *phone*, accounts 1..=N its contacts, each subscribed both ways with
//! the phone only (RFC 6121 §3.1, set up like `presence` does and reused on a re-run). The
//! phone logs in through a counting TCP relay of the generator's own, sends initial
//! presence, waits for its contacts' presence, says `<inactive xmlns='urn:xmpp:csi:0'/>`
//! when CSI is on, and then only reads (answering iqs, as any client must). For D seconds
//! each contact, at its own rhythm (start offsets spread evenly), changes its presence
//! every `--presence-every` seconds (away / back, with a status text), sends the phone a
//! `composing` then, 3 s later, a `paused` chat state (XEP-0085) every
//! `--chatstate-every`, and a message with a body every `--message-every` (0: never).
//!
//! Counted on the relay, server → phone, over the D seconds: bytes (TLS records as they
//! cross the wire, without TCP/IP headers), reads (each time the relay's socket to the
//! server was readable: one per burst the server wrote; what wakes a phone's radio), and
//! reads after 10 s or more of silence (a rough count of cellular radio wake-ups, whose
//! tail is several seconds), and the seconds the radio would be on if each read kept it
//! up for 10 s (without CSI a steady trickle keeps it on all the time). Then, with CSI on, the phone says `<active/>` and a ping: the
//! bytes before the pong are what was still held.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};
use smol::{Timer, future};

use crate::presence::subscribe_all;
use crate::report::{Report, show};
use crate::session::{self, Session, SessionError, iq_reply, timeout};
use crate::xml::{Event, escape};
use crate::{Ctx, login_all};

/// The CSI namespace (XEP-0352 §4).
const NS_CSI: &str = "urn:xmpp:csi:0";
/// Silence after which a read counts as a radio wake-up.
const RADIO_TAIL: Duration = Duration::from_secs(10);

/// CSI parameters from the command line.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub contacts: usize,
    pub duration: Duration,
    /// The phone says `<inactive/>`.
    pub csi: bool,
    pub presence_every: Duration,
    pub chatstate_every: Duration,
    pub message_every: Option<Duration>,
    pub concurrency: usize,
}

/// What the relay saw, server → phone.
#[derive(Default)]
struct Tap {
    counting: AtomicBool,
    bytes: AtomicU64,
    /// Instants of each read while counting, µs since `epoch`.
    reads_us: Mutex<Vec<u64>>,
    /// Bytes read at all (counting or not), to tell the flush on `<active/>` apart.
    total: AtomicU64,
}

impl Tap {
    fn record(&self, n: usize, epoch: Instant) {
        let n = n as u64;
        self.total.fetch_add(n, Ordering::Relaxed);
        if self.counting.load(Ordering::Relaxed) {
            self.bytes.fetch_add(n, Ordering::Relaxed);
            let us = u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
            if let Ok(mut v) = self.reads_us.lock() {
                v.push(us);
            }
        }
    }
}

/// Reads preceded by at least `gap` of silence (the first read counts).
fn wakeups(reads_us: &[u64], gap: Duration) -> usize {
    let gap = u64::try_from(gap.as_micros()).unwrap_or(u64::MAX);
    let mut last: Option<u64> = None;
    let mut n = 0;
    for &t in reads_us {
        if last.is_none_or(|l| t.saturating_sub(l) >= gap) {
            n += 1;
        }
        last = Some(t);
    }
    n
}

/// Seconds a phone's radio would stay on if each read kept it up for `tail` after it (the
/// time to the next read when that comes sooner; the window's end, `end_us`, for the
/// last): a rough energy measure.
fn radio_on(reads_us: &[u64], tail: Duration, end_us: u64) -> f64 {
    let tail = u64::try_from(tail.as_micros()).unwrap_or(u64::MAX);
    let mut on = 0u64;
    for (i, &t) in reads_us.iter().enumerate() {
        let next = reads_us.get(i + 1).copied().unwrap_or(end_us.max(t));
        let next = next.saturating_sub(t);
        on = on.saturating_add(next.min(tail));
    }
    on as f64 / 1e6
}

/// What the phone's reader counted.
#[derive(Default)]
struct Seen {
    presence: AtomicU64,
    chat_states: AtomicU64,
    bodies: AtomicU64,
    other: AtomicU64,
}

/// A relay on a loopback port of its own for one connection to `host:port`, counting what
/// comes back into `tap`.
async fn relay(
    listener: TcpListener,
    host: String,
    port: u16,
    tap: Arc<Tap>,
    epoch: Instant,
) -> std::io::Result<()> {
    let (phone, _) = listener.accept().await?;
    let server = TcpStream::connect((host.as_str(), port)).await?;
    phone.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (mut up_from, mut up_to) = (phone.clone(), server.clone());
    let up = async move {
        smol::io::copy(&mut up_from, &mut up_to).await?;
        Ok::<(), std::io::Error>(())
    };
    let (mut down_from, mut down_to) = (server, phone);
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = down_from.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            tap.record(n, epoch);
            down_to.write_all(&buf[..n]).await?;
        }
    };
    future::or(up, down).await
}

pub async fn run(ctx: &Arc<Ctx>, p: Params, report: &mut Report) {
    let t = ctx.cfg.timeout;
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
        tasks.push((i, ctx.ex.spawn(subscribe_all(s, contacts, t))));
    }
    for (i, task) in tasks {
        match task.await {
            Ok((s, _)) => sessions[i] = Some(s),
            Err(e) => failures.record(&e),
        }
    }
    if let Some(s) = sessions[0].take() {
        let _ = s.close(t).await;
    }
    let setup_s = setup_start.elapsed().as_secs_f64();
    let contacts: Vec<(usize, Session)> = sessions
        .into_iter()
        .enumerate()
        .filter_map(|(i, s)| Some((i, s?)))
        .collect();
    println!(
        "csi: set-up of the phone and {} contacts in {setup_s:.3} s ({} failed)",
        contacts.len(),
        failures.count()
    );

    // The phone, through the counting relay.
    let epoch = Instant::now();
    let tap = Arc::new(Tap::default());
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("csi: cannot listen for the relay: {e}");
            return;
        }
    };
    let relay_port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let relay_task = ctx.ex.spawn(relay(
        listener,
        ctx.cfg.host.clone(),
        ctx.cfg.port,
        tap.clone(),
        epoch,
    ));
    let Some(phone_cfg) = ctx
        .cfg
        .for_server("127.0.0.1", relay_port, &ctx.args.domain)
    else {
        return;
    };
    let mut phone = match session::login(&phone_cfg, &ctx.args.user(0), "phone").await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("csi: the phone cannot log in: {e}");
            failures.record(&e);
            failures.report(report);
            return;
        }
    };
    // Its contacts' presence (probe answers, RFC 6121 §4.2.2).
    let mut online = 0;
    let settle = Instant::now() + t;
    while online < contacts.len() && Instant::now() < settle {
        let el = match timeout(t, "contacts", phone.conn.next_element("contacts")).await {
            Ok(el) => el,
            Err(e) => {
                failures.record(&e);
                break;
            }
        };
        if el.name == "presence" && el.attr("type").is_none() {
            online += 1;
        } else if let Some(reply) = iq_reply(&el) {
            let _ = phone.conn.send("iq reply", &reply).await;
        }
    }
    if p.csi {
        let _ = phone
            .conn
            .send("inactive", &format!("<inactive xmlns='{NS_CSI}'/>"))
            .await;
    }

    // The phone reads until told to stop; iqs are answered.
    let seen = Arc::new(Seen::default());
    let (stop_phone_tx, stop_phone_rx) = smol::channel::bounded::<()>(1);
    let phone_task = {
        let seen = seen.clone();
        ctx.ex.spawn(async move {
            loop {
                let ev = future::or(
                    async { Some(phone.conn.next_event("phone").await) },
                    async {
                        let _ = stop_phone_rx.recv().await;
                        None
                    },
                )
                .await;
                let el = match ev {
                    None => return Ok(phone),
                    Some(Ok(Event::Element(el))) => el,
                    Some(Ok(_)) => return Err(SessionError::Closed("phone")),
                    Some(Err(e)) => return Err(e),
                };
                let counter = match el.name.as_str() {
                    "presence" => &seen.presence,
                    "message" if el.child("body").is_some() => &seen.bodies,
                    "message" => &seen.chat_states,
                    _ => &seen.other,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if let Some(reply) = iq_reply(&el) {
                    phone.conn.send("iq reply", &reply).await?;
                }
            }
        })
    };
    Timer::after(Duration::from_secs(1)).await;

    // The measured window.
    let start = Instant::now();
    let end = start + p.duration;
    tap.counting.store(true, Ordering::Relaxed);
    let sent = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let n = contacts.len().max(1);
    let phone_jid = jid(0);
    let contact_tasks: Vec<_> = contacts
        .into_iter()
        .enumerate()
        .map(|(k, (_, s))| {
            let sent = sent.clone();
            let phone_jid = phone_jid.clone();
            let offset = move |every: Duration| every.mul_f64(k as f64 / n as f64);
            ctx.ex
                .spawn(chatter(s, p, start, end, phone_jid, sent, offset, t))
        })
        .collect();
    let mut contact_failures = 0usize;
    let mut contact_sessions = Vec::new();
    for task in contact_tasks {
        match task.await {
            Ok(s) => contact_sessions.push(s),
            Err(e) => {
                contact_failures += 1;
                failures.record(&e);
            }
        }
    }
    Timer::at(end).await;
    tap.counting.store(false, Ordering::Relaxed);
    let bytes = tap.bytes.load(Ordering::Relaxed);
    let reads_us = tap.reads_us.lock().map(|v| v.clone()).unwrap_or_default();
    let got = [
        seen.presence.load(Ordering::Relaxed),
        seen.chat_states.load(Ordering::Relaxed),
        seen.bodies.load(Ordering::Relaxed),
        seen.other.load(Ordering::Relaxed),
    ];

    // What was still held: <active/> and a ping; the bytes before the pong.
    let _ = stop_phone_tx.send(()).await;
    let mut held_bytes = None;
    match phone_task.await {
        Ok(mut phone) => {
            let before = tap.total.load(Ordering::Relaxed);
            let ping = "<iq type='get' id='csi-flush'><ping xmlns='urn:xmpp:ping'/></iq>";
            let active = if p.csi {
                format!("<active xmlns='{NS_CSI}'/>{ping}")
            } else {
                ping.to_owned()
            };
            if phone.conn.send("active", &active).await.is_ok() {
                loop {
                    match timeout(t, "flush", phone.conn.next_element("flush")).await {
                        Ok(el) if el.name == "iq" && el.attr("id") == Some("csi-flush") => {
                            // The pong's own bytes are read by now; close enough: it is
                            // one small record.
                            let after = tap.total.load(Ordering::Relaxed);
                            held_bytes = Some(after.saturating_sub(before));
                            break;
                        }
                        Ok(el) => {
                            if let Some(reply) = iq_reply(&el) {
                                let _ = phone.conn.send("iq reply", &reply).await;
                            }
                        }
                        Err(e) => {
                            failures.record(&e);
                            break;
                        }
                    }
                }
            }
            let _ = phone.close(t).await;
        }
        Err(e) => failures.record(&e),
    }
    for s in contact_sessions {
        let _ = s.close(t).await;
    }
    relay_task.cancel().await;

    let secs = p.duration.as_secs_f64();
    let per_hour = |v: f64| v * 3600.0 / secs;
    let reads = reads_us.len();
    let radio = wakeups(&reads_us, RADIO_TAIL);
    let end_us = u64::try_from(end.duration_since(epoch).as_micros()).unwrap_or(u64::MAX);
    let radio_s = radio_on(&reads_us, RADIO_TAIL, end_us);
    let [s_presence, s_chat, s_body] = [0, 1, 2].map(|i| sent[i].load(Ordering::Relaxed));
    println!(
        "  phone {} CSI, {} contacts, {secs:.0} s: contacts sent {s_presence} presence, \
         {s_chat} chat states, {s_body} messages",
        if p.csi { "with" } else { "without" },
        n
    );
    println!(
        "  phone received {bytes} bytes ({:.0}/hour) in {reads} reads ({:.0}/hour), \
         {radio} after {}s of silence ({:.0}/hour)",
        per_hour(bytes as f64),
        per_hour(reads as f64),
        RADIO_TAIL.as_secs(),
        per_hour(radio as f64)
    );
    println!(
        "  radio on {radio_s:.0} s of {secs:.0} s ({:.0}%) if each read keeps it up {} s",
        100.0 * radio_s / secs,
        RADIO_TAIL.as_secs()
    );
    println!(
        "  stanzas: {} presence, {} chat states, {} bodies, {} other; held at the end: {}",
        got[0],
        got[1],
        got[2],
        got[3],
        show(held_bytes.map(|b| b as f64), " bytes")
    );
    report.set("csi", if p.csi { "on" } else { "off" });
    report.set("contacts", n);
    report.set("duration_s", secs);
    report.set("setup_s", setup_s);
    failures.report(report);
    report.set("contact_failures", contact_failures);
    report.set("sent_presence", s_presence);
    report.set("sent_chat_states", s_chat);
    report.set("sent_messages", s_body);
    report.set("phone_bytes", bytes);
    report.set("phone_bytes_per_hour", per_hour(bytes as f64));
    report.set("phone_reads", reads);
    report.set("phone_reads_per_hour", per_hour(reads as f64));
    report.set("phone_wakeups_10s", radio);
    report.set("phone_wakeups_10s_per_hour", per_hour(radio as f64));
    report.set("phone_radio_on_s", radio_s);
    report.set("phone_radio_on_share", radio_s / secs);
    report.set("phone_presence", got[0]);
    report.set("phone_chat_states", got[1]);
    report.set("phone_bodies", got[2]);
    report.set("phone_other", got[3]);
    report.set("held_bytes_at_end", held_bytes);
}

/// One contact until `end`: presence changes, chat states and messages to the phone at
/// their rhythms (the first of each at `offset(every)` after `start`); iqs answered.
#[allow(clippy::too_many_arguments)]
async fn chatter(
    mut s: Session,
    p: Params,
    start: Instant,
    end: Instant,
    phone: String,
    sent: Arc<[AtomicU64; 3]>,
    offset: impl Fn(Duration) -> Duration,
    t: Duration,
) -> Result<Session, SessionError> {
    let phone = escape(&phone).into_owned();
    let mut next_presence = start + offset(p.presence_every);
    let mut next_chat = start + offset(p.chatstate_every);
    let mut paused_at: Option<Instant> = None;
    let mut next_message = p.message_every.map(|e| start + offset(e));
    let mut away = false;
    let mut n = 0u64;
    loop {
        let due = [
            Some(next_presence),
            Some(next_chat),
            paused_at,
            next_message,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(end);
        if due >= end {
            return Ok(s);
        }
        // Wait for it, answering what the server asks meanwhile.
        let ev = future::or(async { Some(s.conn.next_event("contact").await) }, async {
            Timer::at(due).await;
            None
        })
        .await;
        match ev {
            Some(Ok(Event::Element(el))) => {
                if let Some(reply) = iq_reply(&el) {
                    timeout(t, "iq reply", s.conn.send("iq reply", &reply)).await?;
                }
                continue;
            }
            Some(Ok(_)) => return Err(SessionError::Closed("contact")),
            Some(Err(e)) => return Err(e),
            None => {}
        }
        let now = Instant::now();
        n += 1;
        let stanza = if now >= next_presence {
            next_presence += p.presence_every;
            away = !away;
            sent[0].fetch_add(1, Ordering::Relaxed);
            if away {
                format!(
                    "<presence><show>away</show><status>out for a bit ({n})</status></presence>"
                )
            } else {
                format!("<presence><status>around ({n})</status></presence>")
            }
        } else if paused_at.is_some_and(|at| now >= at) {
            paused_at = None;
            sent[1].fetch_add(1, Ordering::Relaxed);
            format!(
                "<message to='{phone}' type='chat'><paused xmlns='http://jabber.org/protocol/chatstates'/></message>"
            )
        } else if now >= next_chat {
            next_chat += p.chatstate_every;
            paused_at = Some(now + Duration::from_secs(3));
            sent[1].fetch_add(1, Ordering::Relaxed);
            format!(
                "<message to='{phone}' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
            )
        } else if let Some(at) = next_message.filter(|at| now >= *at) {
            next_message = p.message_every.map(|e| at + e);
            sent[2].fetch_add(1, Ordering::Relaxed);
            format!(
                "<message to='{phone}' type='chat' id='m{n}'><body>see you at dinner? ({n})</body>\
                 <active xmlns='http://jabber.org/protocol/chatstates'/></message>"
            )
        } else {
            continue;
        };
        timeout(t, "chatter", s.conn.send("chatter", &stanza)).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wakeups_count_reads_after_silence() {
        let s = 1_000_000;
        assert_eq!(wakeups(&[], RADIO_TAIL), 0);
        assert_eq!(wakeups(&[5], RADIO_TAIL), 1);
        assert_eq!(
            wakeups(&[0, s, 2 * s, 20 * s, 21 * s, 40 * s], RADIO_TAIL),
            3
        );
    }

    #[test]
    fn radio_time_is_capped_by_the_tail() {
        let s = 1_000_000;
        assert_eq!(radio_on(&[], RADIO_TAIL, 60 * s), 0.0);
        assert_eq!(radio_on(&[0], RADIO_TAIL, 60 * s), 10.0);
        assert_eq!(
            radio_on(&[0, 2 * s, 30 * s], RADIO_TAIL, 60 * s),
            2.0 + 10.0 + 10.0
        );
        // The window ends 4 s after the last read.
        assert_eq!(radio_on(&[0, 56 * s], RADIO_TAIL, 60 * s), 10.0 + 4.0);
    }
}
