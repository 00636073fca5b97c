//! Issue 14, item 2: SASL PLAIN (RFC 4616) attempts from a stranger must not exhaust the
//! server's memory. Every PLAIN check costs an argon2id run over 19 MiB, also for accounts
//! that do not exist; hearth runs at most `[auth] password_checks_at_once` of them, lets
//! `[auth] password_check_queue` more wait, and answers the rest
//! `<temporary-auth-failure/>` (RFC 6120 §6.5.8) without hashing.
//!
//! The bounds here are numbers, not timings: the server's RSS (VmRSS) and thread count
//! (Threads, from /proc) while many wrong-password logins for unknown accounts arrive at
//! once, with the connection limits and the failure throttle raised so they do not hide
//! the cost of hashing.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::client::{AuthError, Conn};
use common::sasl::Plain;
use common::{Server, ServerOpts};

/// Logins sent at once. Above the default queue (32) plus checks at once (at most 2), so
/// some must be refused; below the throttle's raised free attempts (100 per address).
const ATTEMPTS: usize = 64;

/// argon2id's work area (m = 19456 KiB).
const ARGON2_KIB: u64 = 19 * 1024;

/// RSS allowed over the idle level during the flood: two argon2 work areas (the default
/// checks at once on this machine's cores, at most 2), plus 10 MiB for 64 TLS
/// connections mid-handshake and the allocator's slack.
const RSS_BOUND_KIB: u64 = 2 * ARGON2_KIB + 10 * 1024;

/// Threads allowed: main and executor workers (at most 4 by default), async-io's,
/// storage's 16 and password checks' 2, and one to spare. The old code ran one per
/// waiting check (67 for this test's 64 attempts).
const THREADS_BOUND: u64 = 24;

/// A field of /proc/PID/status, as a number (kB for the memory ones).
fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

fn rss_kib(pid: u32) -> u64 {
    proc_status(pid, "VmRSS:")
}

fn threads(pid: u32) -> u64 {
    proc_status(pid, "Threads:")
}

/// The flood's outcome: each attempt's SASL failure condition.
fn flood(server: &Server, attempts: usize) -> Vec<String> {
    let start = Arc::new(Barrier::new(attempts));
    let handles: Vec<_> = (0..attempts)
        .map(|i| {
            let addr = server.c2s_addr();
            let domain = server.domain().to_owned();
            let cert = server.cert_path();
            let start = start.clone();
            thread::spawn(move || {
                let mut c = Conn::connect_starttls(addr, &domain, &cert);
                // Every connection is ready for SASL before any sends its <auth/>, so
                // the checks arrive together.
                start.wait();
                let mut plain = Plain {
                    username: format!("nobody{i}"),
                    password: "wrong".into(),
                };
                match c.authenticate(&mut plain) {
                    Err(AuthError::Failure(condition, _)) => condition,
                    other => panic!("attempt {i}: expected a SASL failure, got {other:?}"),
                }
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Many concurrent wrong-password PLAIN logins for accounts that do not exist, with the
/// default `[auth]` settings: memory and threads stay bounded during the flood, the
/// over-queue attempts get `<temporary-auth-failure/>`, and the memory goes back.
#[test]
fn plain_flood_for_unknown_accounts_stays_bounded() {
    let server = Server::start(ServerOpts {
        extra_toml: "max_failures_before_delay = 100\n\n[limits]\n\
                     max_connections_per_address = 1000\n\
                     connection_burst_per_address = 1000\n\
                     connections_per_minute_per_address = 100000\n"
            .into(),
        ..ServerOpts::default()
    });
    let pid = server.pid().unwrap();
    // One login checked first, so the idle level includes what any server keeps after
    // its first connection (TLS set-up, the database's pages).
    server.add_user("alice", "correct horse");
    drop(Conn::login(
        server.c2s_addr(),
        server.domain(),
        &server.cert_path(),
        "alice",
        "correct horse",
        None,
    ));
    thread::sleep(Duration::from_millis(200));
    let idle = rss_kib(pid);

    let done = Arc::new(AtomicBool::new(false));
    let max_rss = Arc::new(AtomicU64::new(0));
    let max_threads = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (done, max_rss, max_threads) = (done.clone(), max_rss.clone(), max_threads.clone());
        thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                max_rss.fetch_max(rss_kib(pid), Ordering::SeqCst);
                max_threads.fetch_max(threads(pid), Ordering::SeqCst);
                thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let outcomes = flood(&server, ATTEMPTS);
    done.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    let (max_rss, max_threads) = (
        max_rss.load(Ordering::SeqCst),
        max_threads.load(Ordering::SeqCst),
    );

    let refused = outcomes
        .iter()
        .filter(|c| *c == "temporary-auth-failure")
        .count();
    let wrong = outcomes.iter().filter(|c| *c == "not-authorized").count();
    eprintln!(
        "{ATTEMPTS} wrong PLAIN logins: {wrong} not-authorized, {refused} temporary-auth-failure; \
         RSS idle {idle} KiB, peak {max_rss} KiB; peak threads {max_threads}"
    );
    assert_eq!(wrong + refused, ATTEMPTS, "{outcomes:?}");
    assert!(wrong >= 1, "some attempts must be checked: {outcomes:?}");
    assert!(
        refused >= 1,
        "{ATTEMPTS} at once exceed the default queue, so some must be refused: {outcomes:?}"
    );
    assert!(
        max_threads <= THREADS_BOUND,
        "{max_threads} threads, more than {THREADS_BOUND}"
    );
    assert!(
        max_rss <= idle + RSS_BOUND_KIB,
        "RSS peaked at {max_rss} KiB, more than {RSS_BOUND_KIB} KiB over the idle {idle} KiB"
    );

    // The checking threads end when idle, and their work areas go back to the OS.
    let until = Instant::now() + Duration::from_secs(30);
    let mut rss = rss_kib(pid);
    while rss > idle + 8 * 1024 && Instant::now() < until {
        thread::sleep(Duration::from_millis(200));
        rss = rss_kib(pid);
    }
    eprintln!("RSS after the flood: {rss} KiB");
    assert!(
        rss <= idle + 8 * 1024,
        "RSS stayed at {rss} KiB after the flood, idle was {idle} KiB"
    );
}

/// With one check at once and no queue, a second PLAIN login arriving while the first is
/// checked gets `<temporary-auth-failure/>`, and a retry afterwards succeeds.
#[test]
fn plain_past_the_queue_gets_temporary_auth_failure() {
    let server = Server::start(ServerOpts {
        extra_toml: "password_checks_at_once = 1\npassword_check_queue = 0\n\
                     max_failures_before_delay = 100\n\n[limits]\n\
                     connection_burst_per_address = 1000\n"
            .into(),
        ..ServerOpts::default()
    });
    server.add_user("alice", "correct horse");
    let outcomes = flood(&server, 8);
    let refused = outcomes
        .iter()
        .filter(|c| *c == "temporary-auth-failure")
        .count();
    assert!(refused >= 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|c| c == "temporary-auth-failure" || c == "not-authorized"),
        "{outcomes:?}"
    );
    // Nothing is left waiting or running: the owner logs in.
    let c = Conn::login(
        server.c2s_addr(),
        server.domain(),
        &server.cert_path(),
        "alice",
        "correct horse",
        None,
    );
    drop(c);
}

/// A client that hangs up while its PLAIN check waits is not checked: with one check at
/// a time, logins sent and abandoned at once are dropped from the queue (the server logs
/// each), and the owner still logs in afterwards.
#[test]
fn abandoned_plain_checks_are_skipped() {
    let server = Server::start(ServerOpts {
        extra_toml: "password_checks_at_once = 1\nmax_failures_before_delay = 100\n\n\
                     [limits]\nconnection_burst_per_address = 1000\n"
            .into(),
        ..ServerOpts::default()
    });
    server.add_user("alice", "correct horse");
    let mut conns: Vec<Conn> = (0..12)
        .map(|_| Conn::connect_starttls(server.c2s_addr(), server.domain(), &server.cert_path()))
        .collect();
    for (i, c) in conns.iter_mut().enumerate() {
        // RFC 4616: authzid NUL authcid NUL password, base64 as RFC 6120 §6.4.2 says.
        let payload = base64_plain(&format!("nobody{i}"), "wrong");
        c.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{payload}</auth>"
        ));
    }
    // Closed without a TLS close_notify: the server sees the TCP FIN.
    drop(conns);
    let until = Instant::now() + Duration::from_secs(20);
    while !server.log().contains("left before its password check") {
        assert!(Instant::now() < until, "no abandoned check was skipped");
        thread::sleep(Duration::from_millis(50));
    }
    drop(Conn::login(
        server.c2s_addr(),
        server.domain(),
        &server.cert_path(),
        "alice",
        "correct horse",
        None,
    ));
}

/// The SASL PLAIN initial response (RFC 4616 §2) for `user`, base64-encoded.
fn base64_plain(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"))
}
