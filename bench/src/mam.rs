//! Scenario `mam`: XEP-0313 queries on an archive filled beforehand (the caller fills it,
//! e.g. with direct SQL inserts for a million messages) → latency of a page of `--max`
//! results from the newest (XEP-0059 `<before/>`) and from the middle (`<after>ID</after>`,
//! the id given with `--after-id`), server RSS before and after, server CPU per query.
//!
//! Account 0 logs in (no initial presence, so nothing offline is delivered) and runs the
//! queries one after another, each timed from writing the iq to reading its answer, all
//! results (which come before it) read and counted.

use std::sync::Arc;
use std::time::Instant;

use crate::report::{Report, show};
use crate::session::{Session, SessionError, login_bound, stanza_error, timeout};
use crate::xml::escape;
use crate::{Ctx, procstat, server_cpu, server_rss};

/// Mam parameters from the command line.
#[derive(Debug, Clone)]
pub struct Params {
    /// Queries of each kind.
    pub queries: usize,
    /// Results per page asked.
    pub max: usize,
    /// The archive id to page after for "the middle"; without it only newest pages run.
    pub after_id: Option<String>,
}

/// One query: (results read, seconds).
async fn query(s: &mut Session, n: usize, set: &str) -> Result<(usize, f64), SessionError> {
    let id = format!("mam{n}");
    let start = Instant::now();
    s.conn
        .send(
            "mam query",
            &format!(
                "<iq type='set' id='{id}'><query xmlns='urn:xmpp:mam:2' queryid='{id}'>\
                 <set xmlns='http://jabber.org/protocol/rsm'>{set}</set></query></iq>"
            ),
        )
        .await?;
    let mut results = 0;
    loop {
        let el = s.conn.next_element("mam results").await?;
        if el.name == "message" && el.child("result").is_some() {
            results += 1;
        } else if el.name == "iq" && el.attr("id") == Some(id.as_str()) {
            if el.attr("type") != Some("result") {
                return Err(SessionError::Unexpected("mam answer", stanza_error(&el)));
            }
            return Ok((results, start.elapsed().as_secs_f64()));
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied()
}

pub async fn run(ctx: &Arc<Ctx>, p: Params, report: &mut Report) {
    let t = ctx.cfg.timeout;
    let user = ctx.args.user(0);
    let rss0 = server_rss(&ctx.args);
    let mut s = match timeout(t, "login", login_bound(&ctx.cfg, &user, "mam")).await {
        Ok(s) => s,
        Err(e) => {
            println!("mam: login failed: {e}");
            report.set("error", e.to_string().as_str());
            return;
        }
    };
    let cpu0 = server_cpu(&ctx.args);
    let gen0 = procstat::own_cpu_seconds();
    let mut kinds = vec![("newest", format!("<max>{}</max><before/>", p.max))];
    if let Some(a) = &p.after_id {
        kinds.push((
            "middle",
            format!("<max>{}</max><after>{}</after>", p.max, escape(a)),
        ));
    }
    let mut n = 0;
    let mut total = 0usize;
    let mut rss_peak = rss0.unwrap_or(0);
    for (kind, set) in &kinds {
        let mut lat = Vec::with_capacity(p.queries);
        let mut results = 0;
        for _ in 0..p.queries {
            n += 1;
            match timeout(t, "mam query", query(&mut s, n, set)).await {
                Ok((r, secs)) => {
                    results = r;
                    lat.push(secs * 1000.0);
                }
                Err(e) => {
                    println!("mam: {kind} query failed: {e}");
                    report.set("error", e.to_string().as_str());
                    return;
                }
            }
            if let Some(r) = server_rss(&ctx.args) {
                rss_peak = rss_peak.max(r);
            }
        }
        total += lat.len();
        lat.sort_by(f64::total_cmp);
        let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
        println!(
            "mam: {kind}: {} queries, {results} results each, p50 {} ms, p99 {} ms, max {} ms",
            lat.len(),
            show(p50, ""),
            show(p99, ""),
            show(lat.last().copied(), "")
        );
        report.set(&format!("{kind}_results"), results as u64);
        report.set(&format!("{kind}_p50_ms"), p50);
        report.set(&format!("{kind}_p99_ms"), p99);
        report.set(&format!("{kind}_max_ms"), lat.last().copied());
    }
    let cpu = cpu0.zip(server_cpu(&ctx.args)).map(|(a, b)| b - a);
    let per_query = cpu.map(|c| c / total.max(1) as f64 * 1000.0);
    report.set("queries", total as u64);
    report.set("server_cpu_ms_per_query", per_query);
    report.set("gen_cpu_s", procstat::own_cpu_seconds() - gen0);
    report.set("server_rss_before_kib", rss0);
    report.set(
        "server_rss_peak_kib",
        server_rss(&ctx.args).map(|_| rss_peak),
    );
    report.set("server_rss_after_kib", server_rss(&ctx.args));
    println!(
        "mam: server CPU {} ms per query, RSS {} KiB before, {} KiB peak",
        show(per_query, ""),
        show(rss0.map(|r| r as f64), ""),
        rss_peak
    );
    let _ = s.close(t).await;
}
