//! Scenario `mamfill`: fills account 0's XEP-0313 archive over XMPP, the same way on any
//! server, so the `mam` scenario can time queries on Prosody and ejabberd too (their
//! archives have schemas of their own; hearth's can also be filled with SQL,
//! `bench/mam-fill.sql`, for a million messages).
//!
//! Account 0 logs in with initial presence (so messages to its bare JID are delivered, and
//! archived, rather than stored offline: RFC 6121 §8.5.2.1.1) and only reads. Senders
//! `1..=S` send M `type='chat'` messages with ~100-byte bodies to its bare JID, message *m*
//! from sender *m* mod S, at most W per sender not yet received by account 0 (a
//! semaphore per sender: account 0 gives a permit back for each message it reads). The
//! fill ends when account 0 has read all M → messages/s, server CPU per 1000 messages.
//! A server archives a message before or while delivering it; a `mam` run afterwards
//! pages through the archive anyway (`--middle-at`), which shows any shortfall.

use std::sync::Arc;
use std::time::Instant;

use smol::lock::Semaphore;

use crate::report::{Report, show};
use crate::session::{Session, SessionError, iq_reply, login, stanza_error, timeout};
use crate::{Ctx, procstat, server_cpu};

/// Mamfill parameters from the command line.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub messages: usize,
    pub senders: usize,
    pub window: usize,
    pub body_bytes: usize,
}

/// The body of message `m` from sender `s`: `"<s> <m> "` padded with letters to
/// `body_bytes` (at least the prefix).
fn body(s: usize, m: usize, body_bytes: usize) -> String {
    let mut b = format!("{s} {m} ");
    let pad = body_bytes.saturating_sub(b.len());
    b.extend((0..pad).map(|i| char::from(b'a' + (i % 26) as u8)));
    b
}

/// The sender index a body starts with.
fn sender_of(body: &str) -> Option<usize> {
    body.split(' ').next()?.parse().ok()
}

/// Sender `s` (1-based) sends its share of the M messages.
async fn send_all(
    mut session: Session,
    s: usize,
    p: Params,
    to: String,
    sem: Arc<Semaphore>,
) -> Result<Session, SessionError> {
    let mut m = s - 1;
    while m < p.messages {
        sem.acquire().await.forget();
        let stanza = format!(
            "<message type='chat' to='{to}' id='f{m}'><body>{}</body></message>",
            body(s, m, p.body_bytes)
        );
        session.conn.send("mamfill message", &stanza).await?;
        m += p.senders;
    }
    Ok(session)
}

/// Account 0 reads until `total` messages arrived, giving each sender's permits back.
async fn receive_all(
    session: &mut Session,
    total: usize,
    sems: &[Arc<Semaphore>],
    t: std::time::Duration,
) -> Result<usize, SessionError> {
    let mut got = 0;
    while got < total {
        let el = timeout(
            t,
            "mamfill receive",
            session.conn.next_element("mamfill receive"),
        )
        .await?;
        if let Some(reply) = iq_reply(&el) {
            session.conn.send("ping reply", &reply).await?;
            continue;
        }
        if el.name != "message" {
            continue;
        }
        if el.attr("type") == Some("error") {
            return Err(SessionError::Bounced(stanza_error(&el)));
        }
        let Some(b) = el.child("body") else { continue };
        if let Some(sem) = sender_of(&b.text).and_then(|s| sems.get(s.wrapping_sub(1))) {
            sem.add_permits(1);
            got += 1;
        }
    }
    Ok(got)
}

pub async fn run(ctx: &Arc<Ctx>, p: Params, report: &mut Report) {
    let t = ctx.cfg.timeout;
    report.set("messages", p.messages);
    report.set("senders", p.senders);
    report.set("window", p.window);
    report.set("body_bytes", p.body_bytes);
    let mut receiver = match login(&ctx.cfg, &ctx.args.user(0), "mamfill").await {
        Ok(s) => s,
        Err(e) => {
            println!("mamfill: receiver login failed: {e}");
            report.set("error", e.to_string().as_str());
            return;
        }
    };
    let mut senders = Vec::with_capacity(p.senders);
    for s in 1..=p.senders {
        match login(&ctx.cfg, &ctx.args.user(s), "mamfill").await {
            Ok(x) => senders.push(x),
            Err(e) => {
                println!("mamfill: sender {s} login failed: {e}");
                report.set("error", e.to_string().as_str());
                return;
            }
        }
    }
    let to = format!("{}@{}", ctx.args.user(0), ctx.args.domain);
    // A ping round trip: the receiver's presence is processed before the first message.
    if let Err(e) = ping(&mut receiver, t).await {
        println!("mamfill: receiver ping failed: {e}");
        report.set("error", e.to_string().as_str());
        return;
    }
    let sems: Vec<_> = (0..p.senders)
        .map(|_| Arc::new(Semaphore::new(p.window)))
        .collect();
    let cpu0 = server_cpu(&ctx.args);
    let gen0 = procstat::own_cpu_seconds();
    let start = Instant::now();
    let tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            ctx.ex
                .spawn(send_all(s, i + 1, p, to.clone(), sems[i].clone()))
        })
        .collect();
    let got = receive_all(&mut receiver, p.messages, &sems, t).await;
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu0.zip(server_cpu(&ctx.args)).map(|(a, b)| b - a);
    let gen_cpu = procstat::own_cpu_seconds() - gen0;
    let mut sessions = Vec::new();
    for task in tasks {
        match task.await {
            Ok(s) => sessions.push(s),
            Err(e) => {
                println!("mamfill: sender failed: {e}");
                report.set("error", e.to_string().as_str());
            }
        }
    }
    match got {
        Ok(n) => {
            let rate = n as f64 / secs;
            let per_1k = cpu.map(|c| c / n.max(1) as f64 * 1000.0);
            println!(
                "mamfill: {n} messages from {} senders (window {}) in {secs:.2} s: {rate:.0}/s, \
                 server CPU {} per 1000",
                p.senders,
                p.window,
                show(per_1k, " s")
            );
            report.set("received", n);
            report.set("fill_s", secs);
            report.set("fill_per_s", rate);
            report.set("server_cpu_s_per_1k_msgs", per_1k);
            report.set("gen_cpu_s", gen_cpu);
        }
        Err(e) => {
            println!("mamfill: receiving failed: {e}");
            report.set("error", e.to_string().as_str());
        }
    }
    for s in sessions {
        let _ = s.close(t).await;
    }
    let _ = receiver.close(t).await;
}

/// One XEP-0199 ping to the server, answered.
async fn ping(s: &mut Session, t: std::time::Duration) -> Result<(), SessionError> {
    s.conn
        .send(
            "ping",
            "<iq type='get' id='mamfill-ping'><ping xmlns='urn:xmpp:ping'/></iq>",
        )
        .await?;
    loop {
        let el = timeout(t, "ping", s.conn.next_element("ping")).await?;
        if let Some(reply) = iq_reply(&el) {
            s.conn.send("ping reply", &reply).await?;
        } else if el.name == "iq" && el.attr("id") == Some("mamfill-ping") {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_size_and_say_the_sender() {
        let b = body(3, 1234, 100);
        assert_eq!(b.len(), 100);
        assert_eq!(sender_of(&b), Some(3));
        assert_eq!(body(12, 5, 2), "12 5 ");
        assert_eq!(sender_of("x 1"), None);
    }
}
