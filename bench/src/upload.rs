//! Scenario `upload`: XEP-0363 HTTP File Upload of one large file, the way a phone shares
//! a video: a slot asked for over XMPP, the bytes PUT over HTTPS, fetched back with GET.
//!
//! Account 0 logs in and finds the upload service in the server's disco#items (the item
//! whose disco#info has `urn:xmpp:http:upload:0`, §3) unless `--upload-domain` names it.
//! Per run it asks for a slot (§4) for a file of B bytes and PUTs them (§5) in 64 KiB
//! writes, with the headers the slot names, over a connection of its own to the PUT URL's
//! port on `--host` (TLS with the URL's host as the SNI name for https). Meanwhile the
//! server's RSS is sampled every 20 ms: a server that streams the body to disk stays
//! flat, one that holds it grows by B. Then the GET URL is fetched and every byte compared
//! with what was sent (the content is a fixed pseudo-random stream). Measured per run:
//! PUT and GET MB/s (10^6 bytes), server RSS before, at the highest during the PUT and
//! after, server CPU during the PUT and the GET, the HTTP status codes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use smol::net::TcpStream;
use smol::{Timer, future};

use crate::report::{Report, show};
use crate::session::{self, Session, SessionError, iq_reply, stanza_error, timeout};
use crate::xml::{Element, escape};
use crate::{Ctx, procstat, server_cpu, server_rss};

const NS_UPLOAD: &str = "urn:xmpp:http:upload:0";
const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const CHUNK: usize = 64 * 1024;
/// Response headers larger than this are an error.
const MAX_HEAD: usize = 64 * 1024;

/// Upload parameters from the command line.
#[derive(Debug, Clone)]
pub struct Params {
    pub bytes: u64,
    pub runs: usize,
    /// The upload service's JID; found through disco when `None`.
    pub service: Option<String>,
}

/// Sends an iq and waits for its answer, answering the server's own iqs meanwhile.
async fn iq(s: &mut Session, id: &str, xml: &str, t: Duration) -> Result<Element, SessionError> {
    s.conn.send("iq", xml).await?;
    timeout(t, "iq answer", async {
        loop {
            let el = s.conn.next_element("iq answer").await?;
            if el.name == "iq" && el.attr("id") == Some(id) {
                return Ok(el);
            }
            if let Some(reply) = iq_reply(&el) {
                s.conn.send("iq reply", &reply).await?;
            }
        }
    })
    .await
}

/// The upload service among the server's disco#items (XEP-0363 §3).
async fn find_service(s: &mut Session, domain: &str, t: Duration) -> Result<String, SessionError> {
    let items = iq(
        s,
        "items",
        &format!("<iq type='get' id='items' to='{domain}'><query xmlns='{NS_DISCO_ITEMS}'/></iq>"),
        t,
    )
    .await?;
    let jids: Vec<String> = items
        .child("query")
        .map(|q| {
            q.children
                .iter()
                .filter(|i| i.name == "item" && i.attr("node").is_none())
                .filter_map(|i| i.attr("jid").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    for (n, jid) in jids.iter().enumerate() {
        let id = format!("info{n}");
        let info = iq(
            s,
            &id,
            &format!(
                "<iq type='get' id='{id}' to='{}'><query xmlns='{NS_DISCO_INFO}'/></iq>",
                escape(jid)
            ),
            t,
        )
        .await?;
        let has = info.child("query").is_some_and(|q| {
            q.children
                .iter()
                .any(|f| f.name == "feature" && f.attr("var") == Some(NS_UPLOAD))
        });
        if has {
            return Ok(jid.clone());
        }
    }
    Err(SessionError::Unexpected(
        "disco",
        format!("no item of {domain} offers {NS_UPLOAD}"),
    ))
}

/// A slot: where to PUT (with which headers) and where the file will be.
#[derive(Debug, PartialEq)]
struct Slot {
    put: String,
    headers: Vec<(String, String)>,
    get: String,
}

fn parse_slot(el: &Element) -> Option<Slot> {
    let slot = el.child("slot")?;
    let put = slot.child("put")?;
    let headers = put
        .children
        .iter()
        .filter(|h| h.name == "header")
        .filter_map(|h| Some((h.attr("name")?.to_owned(), h.text.trim().to_owned())))
        // §5: only these may be passed on; anything else (or a line break) is dropped.
        .filter(|(n, v)| {
            ["authorization", "cookie", "expires"].contains(&n.to_ascii_lowercase().as_str())
                && !v.contains(['\r', '\n'])
        })
        .collect();
    Some(Slot {
        put: put.attr("url")?.to_owned(),
        headers,
        get: slot.child("get")?.attr("url")?.to_owned(),
    })
}

/// An http(s) URL's parts: TLS or not, host, port, path with query.
#[derive(Debug, PartialEq)]
struct Url {
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

fn parse_url(url: &str) -> Option<Url> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else {
        (false, url.strip_prefix("http://")?)
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (h, p.parse().ok()?),
        _ => (authority, if tls { 443 } else { 80 }),
    };
    Some(Url {
        tls,
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
        path: path.to_owned(),
    })
}

/// Byte `i` of the uploaded content: a fixed pseudo-random stream (xorshift per 8 bytes),
/// so the GET can be checked without keeping the file.
fn fill(buf: &mut [u8], offset: u64) {
    for (n, b) in buf.iter_mut().enumerate() {
        let i = offset + n as u64;
        let mut x = (i / 8).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x >> ((i % 8) * 8)) as u8;
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn connect(ctx: &Ctx, url: &Url) -> Result<Box<dyn Io>, SessionError> {
    let tcp = TcpStream::connect((ctx.args.host.as_str(), url.port))
        .await
        .map_err(|e| SessionError::Io("http connect", e))?;
    let _ = tcp.set_nodelay(true);
    if !url.tls {
        return Ok(Box::new(tcp));
    }
    let name = crate::tls::server_name(&url.host)
        .ok_or_else(|| SessionError::Unexpected("http tls", format!("bad host {}", url.host)))?;
    let tls = ctx
        .cfg
        .connector
        .connect(name, tcp)
        .await
        .map_err(|e| SessionError::Io("http tls", e))?;
    Ok(Box::new(tls))
}

/// A response's status and head fields (lower-case names); the rest of what was read
/// (the start of the body) is returned too.
async fn read_head(
    io: &mut Box<dyn Io>,
) -> Result<(u16, Vec<(String, String)>, Vec<u8>), SessionError> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let rest = buf[end + 4..].to_vec();
            let mut lines = head.split("\r\n");
            let status = lines
                .next()
                .and_then(|l| l.split(' ').nth(1))
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| {
                    SessionError::Unexpected("http", format!("bad status line in {head:?}"))
                })?;
            let fields = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect();
            return Ok((status, fields, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(SessionError::Unexpected(
                "http",
                "response head too large".into(),
            ));
        }
        let n = io
            .read(&mut chunk)
            .await
            .map_err(|e| SessionError::Io("http read", e))?;
        if n == 0 {
            return Err(SessionError::Closed("http response"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// PUTs `bytes` bytes of the fixed content to the slot; returns the status code.
async fn put(ctx: &Ctx, slot: &Slot, bytes: u64) -> Result<u16, SessionError> {
    let url = parse_url(&slot.put)
        .ok_or_else(|| SessionError::Unexpected("slot", format!("bad PUT URL {}", slot.put)))?;
    let mut io = connect(ctx, &url).await?;
    let mut head = format!(
        "PUT {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Length: {bytes}\r\n\
         Content-Type: application/octet-stream\r\nConnection: close\r\n",
        url.path, url.host, url.port
    );
    for (n, v) in &slot.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    io.write_all(head.as_bytes())
        .await
        .map_err(|e| SessionError::Io("http put", e))?;
    let mut buf = vec![0u8; CHUNK];
    let mut sent = 0u64;
    while sent < bytes {
        let n = usize::try_from((bytes - sent).min(CHUNK as u64)).unwrap_or(CHUNK);
        fill(&mut buf[..n], sent);
        io.write_all(&buf[..n])
            .await
            .map_err(|e| SessionError::Io("http put body", e))?;
        sent += n as u64;
    }
    io.flush()
        .await
        .map_err(|e| SessionError::Io("http put body", e))?;
    let (status, _, _) = read_head(&mut io).await?;
    Ok(status)
}

/// GETs the file; returns the status, the bytes read and whether each was the one sent.
async fn get(ctx: &Ctx, slot: &Slot) -> Result<(u16, u64, bool), SessionError> {
    let url = parse_url(&slot.get)
        .ok_or_else(|| SessionError::Unexpected("slot", format!("bad GET URL {}", slot.get)))?;
    let mut io = connect(ctx, &url).await?;
    let head = format!(
        "GET {} HTTP/1.1\r\nHost: {}:{}\r\nConnection: close\r\n\r\n",
        url.path, url.host, url.port
    );
    io.write_all(head.as_bytes())
        .await
        .map_err(|e| SessionError::Io("http get", e))?;
    let (status, fields, mut pending) = read_head(&mut io).await?;
    if field(&fields, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        return Err(SessionError::Unexpected(
            "http get",
            "chunked response (not read by this client)".into(),
        ));
    }
    let length: Option<u64> = field(&fields, "content-length").and_then(|v| v.parse().ok());
    let mut got = 0u64;
    let mut same = true;
    let mut expect = vec![0u8; CHUNK];
    let mut buf = vec![0u8; CHUNK];
    loop {
        let data: &[u8] = if pending.is_empty() {
            if length.is_some_and(|l| got >= l) {
                break;
            }
            let n = io
                .read(&mut buf)
                .await
                .map_err(|e| SessionError::Io("http get body", e))?;
            if n == 0 {
                break;
            }
            &buf[..n]
        } else {
            &pending
        };
        fill(&mut expect[..data.len()], got);
        same &= data == &expect[..data.len()];
        got += data.len() as u64;
        pending.clear();
    }
    Ok((status, got, same && length.is_none_or(|l| l == got)))
}

/// Samples the server's RSS every 20 ms until `stop`; the highest value in KiB.
async fn sample_rss(pid: Option<u32>, stop: Arc<AtomicBool>, peak: Arc<AtomicU64>) {
    let Some(pid) = pid else { return };
    while !stop.load(Ordering::Relaxed) {
        if let Ok(kib) = procstat::rss_kib(pid) {
            peak.fetch_max(kib, Ordering::Relaxed);
        }
        Timer::after(Duration::from_millis(20)).await;
    }
}

pub async fn run(ctx: &Arc<Ctx>, p: Params, report: &mut Report) {
    let t = ctx.cfg.timeout;
    let mut s = match session::login(&ctx.cfg, &ctx.args.user(0), "hl0").await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("upload: cannot log in: {e}");
            report.set("failed", 1u64);
            report.set("first_failure", e.to_string().as_str());
            return;
        }
    };
    let service = match &p.service {
        Some(s) => Ok(s.clone()),
        None => find_service(&mut s, &ctx.args.domain, t).await,
    };
    let service = match service {
        Ok(s) => s,
        Err(e) => {
            eprintln!("upload: {e}");
            report.set("failed", 1u64);
            report.set("first_failure", e.to_string().as_str());
            return;
        }
    };
    println!(
        "upload: service {service}, {} bytes, {} runs",
        p.bytes, p.runs
    );
    let mb = p.bytes as f64 / 1e6;
    let (mut put_rates, mut get_rates) = (Vec::new(), Vec::new());
    let (mut put_cpu, mut get_cpu) = (Vec::new(), Vec::new());
    let mut rss_growth = Vec::new();
    let (mut rss_before_all, mut rss_peak_all, mut rss_after_all) = (None, None, None);
    let mut failure: Option<String> = None;
    let mut statuses = Vec::new();
    let mut intact_all = true;
    for run in 0..p.runs {
        let id = format!("slot{run}");
        let req = format!(
            "<iq type='get' id='{id}' to='{}'><request xmlns='{NS_UPLOAD}' \
             filename='hl-{run}.bin' size='{}' content-type='application/octet-stream'/></iq>",
            escape(&service),
            p.bytes
        );
        let slot = match iq(&mut s, &id, &req, t).await {
            Ok(el) if el.attr("type") == Some("result") => match parse_slot(&el) {
                Some(slot) => slot,
                None => {
                    failure = Some("slot without put/get".into());
                    break;
                }
            },
            Ok(el) => {
                failure = Some(format!("slot refused: {}", stanza_error(&el)));
                break;
            }
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        };
        Timer::after(Duration::from_millis(300)).await;
        let rss_before = server_rss(&ctx.args);
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_before.unwrap_or(0)));
        let sampler = ctx
            .ex
            .spawn(sample_rss(ctx.args.server_pid, stop.clone(), peak.clone()));
        let cpu0 = server_cpu(&ctx.args);
        let start = Instant::now();
        let put_result = future::or(put(ctx, &slot, p.bytes), async {
            Timer::after(t * 10).await;
            Err(SessionError::Timeout("http put"))
        })
        .await;
        let put_s = start.elapsed().as_secs_f64();
        let cpu1 = server_cpu(&ctx.args);
        stop.store(true, Ordering::Relaxed);
        sampler.await;
        let rss_peak = Some(peak.load(Ordering::Relaxed)).filter(|&k| k > 0);
        let status = match put_result {
            Ok(st) => st,
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        };
        let start = Instant::now();
        let got = future::or(get(ctx, &slot), async {
            Timer::after(t * 10).await;
            Err(SessionError::Timeout("http get"))
        })
        .await;
        let get_s = start.elapsed().as_secs_f64();
        let cpu2 = server_cpu(&ctx.args);
        Timer::after(Duration::from_millis(300)).await;
        let rss_after = server_rss(&ctx.args);
        let (get_status, got_bytes, intact) = match got {
            Ok(g) => g,
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        };
        let ok = (200..300).contains(&status) && get_status == 200 && intact;
        intact_all &= ok;
        statuses.push(format!("{status}/{get_status}"));
        println!(
            "  run {run}: PUT {status} in {put_s:.3} s = {:.1} MB/s, GET {get_status} {got_bytes} \
             bytes in {get_s:.3} s = {:.1} MB/s, intact {intact}; server RSS {} -> peak {} -> {} \
             MiB; server CPU PUT {} GET {}",
            mb / put_s,
            got_bytes as f64 / 1e6 / get_s,
            show(rss_before.map(|k| k as f64 / 1024.0), ""),
            show(rss_peak.map(|k| k as f64 / 1024.0), ""),
            show(rss_after.map(|k| k as f64 / 1024.0), ""),
            show(cpu1.zip(cpu0).map(|(b, a)| b - a), " s"),
            show(cpu2.zip(cpu1).map(|(b, a)| b - a), " s"),
        );
        if ok {
            put_rates.push(mb / put_s);
            get_rates.push(got_bytes as f64 / 1e6 / get_s);
        }
        if let Some(c) = cpu1.zip(cpu0).map(|(b, a)| b - a) {
            put_cpu.push(c);
        }
        if let Some(c) = cpu2.zip(cpu1).map(|(b, a)| b - a) {
            get_cpu.push(c);
        }
        if let (Some(b), Some(pk)) = (rss_before, rss_peak) {
            rss_growth.push(pk.saturating_sub(b));
        }
        rss_before_all = rss_before_all.or(rss_before);
        rss_peak_all = rss_peak_all.max(rss_peak);
        rss_after_all = rss_after;
    }
    let _ = s.close(t).await;
    if let Some(f) = &failure {
        eprintln!("  failure: {f}");
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    report.set("service", service.as_str());
    report.set("bytes", p.bytes);
    report.set("runs", p.runs);
    report.set("failed", u64::from(failure.is_some()));
    report.set("first_failure", failure.as_deref());
    report.set("statuses", statuses.join(",").as_str());
    report.set(
        "intact",
        if intact_all && failure.is_none() {
            "yes"
        } else {
            "no"
        },
    );
    report.set("put_mb_per_s", median(&mut put_rates));
    report.set("get_mb_per_s", median(&mut get_rates));
    report.set("put_server_cpu_s", median(&mut put_cpu));
    report.set("get_server_cpu_s", median(&mut get_cpu));
    report.set("rss_before_kib", rss_before_all);
    report.set("rss_peak_kib", rss_peak_all);
    report.set("rss_after_kib", rss_after_all);
    report.set("rss_growth_max_kib", rss_growth.iter().copied().max());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_slots_and_urls() {
        let el = Element::parse(
            "<iq type='result' id='s'><slot xmlns='urn:xmpp:http:upload:0'>\
             <put url='https://up.example:5443/upload/abc/f.bin'>\
             <header name='Authorization'>Bearer x</header><header name='X-Evil'>y</header>\
             </put><get url='https://up.example:5443/upload/abc/f.bin'/></slot></iq>",
        )
        .unwrap();
        let slot = parse_slot(&el).unwrap();
        assert_eq!(
            slot.headers,
            vec![("Authorization".into(), "Bearer x".into())]
        );
        assert_eq!(
            parse_url(&slot.put),
            Some(Url {
                tls: true,
                host: "up.example".into(),
                port: 5443,
                path: "/upload/abc/f.bin".into()
            })
        );
        assert_eq!(
            parse_url("http://h/x?y=1"),
            Some(Url {
                tls: false,
                host: "h".into(),
                port: 80,
                path: "/x?y=1".into()
            })
        );
        assert_eq!(
            parse_url("https://[::1]:8443/p").map(|u| (u.host, u.port)),
            Some(("::1".into(), 8443))
        );
        assert_eq!(parse_url("ftp://h/x"), None);
    }

    #[test]
    fn the_content_is_the_same_whatever_the_chunking() {
        let mut whole = vec![0u8; 1000];
        fill(&mut whole, 0);
        let mut parts = vec![0u8; 1000];
        fill(&mut parts[..333], 0);
        fill(&mut parts[333..], 333);
        assert_eq!(whole, parts);
        assert!(whole.iter().any(|&b| b != whole[0]));
    }
}
