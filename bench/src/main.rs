//! hearth-load: a load generator that speaks standard XMPP (RFC 6120/6121) to any server,
//! so one run can measure hearth, Prosody and ejabberd the same way (issue 6).
//!
//! Map: `args` (command line) → `main` (runtime, shared login pool) → one file per scenario
//! (`login`, `idle`, `chat`, `presence`, `offline`, `plainflood`, `csi`, `pep`, `muc`, `upload`, `mam`, `mamfill`, `resume`; `s2s` for the two
//! federation scenarios across two servers), each printing human lines and a final JSON
//! line (`report`).
//! `session` is the XMPP client (STARTTLS, SASL, bind, presence) over `xml` (framer and
//! tiny tree), `scram` (RFC 5802 client) and `tls` (rustls accepting self-signed
//! certificates). `procstat` reads the server's CPU and RSS from /proc.

#![forbid(unsafe_code)]

mod args;
mod chat;
mod csi;
mod idle;
mod login;
mod mam;
mod mamfill;
mod muc;
mod offline;
mod pep;
mod plainflood;
mod presence;
mod procstat;
mod report;
mod resume;
mod s2s;
mod scram;
mod session;
mod tls;
mod upload;
mod xml;

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use smol::Executor;

use args::{Args, Scenario};
use report::Report;
use session::{ClientConfig, Session, SessionError};

/// What every scenario needs.
pub struct Ctx {
    pub args: Args,
    pub cfg: ClientConfig,
    pub ex: Arc<Executor<'static>>,
}

/// Failed sessions: a count and the first few distinct reasons, so a broken setup shows
/// its cause without a flood of identical lines.
#[derive(Default)]
pub struct Failures {
    count: AtomicUsize,
    reasons: Mutex<Vec<String>>,
}

impl Failures {
    pub fn record(&self, e: &SessionError) {
        self.count.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut r) = self.reasons.lock() {
            let s = e.to_string();
            if r.len() < 5 && !r.contains(&s) {
                r.push(s);
            }
        }
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Adds another set of failures to this one.
    pub fn merge(&self, other: &Failures) {
        self.count.fetch_add(other.count(), Ordering::Relaxed);
        let theirs = other.reasons.lock().map(|r| r.clone()).unwrap_or_default();
        if let Ok(mut r) = self.reasons.lock() {
            for s in theirs {
                if r.len() < 5 && !r.contains(&s) {
                    r.push(s);
                }
            }
        }
    }

    /// The first reason, if any.
    pub fn first(&self) -> Option<String> {
        self.reasons.lock().ok().and_then(|r| r.first().cloned())
    }

    /// Prints the reasons to stderr, each after `label`.
    pub fn print(&self, label: &str) {
        for r in self.reasons.lock().map(|r| r.clone()).unwrap_or_default() {
            eprintln!("  {label}: {r}");
        }
    }

    /// Prints the reasons to stderr and stores the count and first reason in the report.
    pub fn report(&self, report: &mut Report) {
        let reasons = self.reasons.lock().map(|r| r.clone()).unwrap_or_default();
        for r in &reasons {
            eprintln!("  failure: {r}");
        }
        report.set("failed", self.count());
        report.set("first_failure", reasons.first().map(String::as_str));
    }
}

/// Logs sessions `0..n` in, at most `concurrency` at a time, and hands each to `handle`
/// (which runs inside the login slot, so a slow `handle` also limits concurrency).
/// Session `i` uses account `user_of(i)` and resource `hl{i}`.
pub async fn login_many<F, Fut>(
    ctx: &Arc<Ctx>,
    n: usize,
    concurrency: usize,
    user_of: impl Fn(usize) -> usize + Send + Sync + 'static,
    handle: F,
) -> Arc<Failures>
where
    F: Fn(usize, Session) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), SessionError>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Failures::default());
    let user_of = Arc::new(user_of);
    let handle = Arc::new(handle);
    let workers: Vec<_> = (0..concurrency.min(n))
        .map(|_| {
            let (ctx2, next, failures) = (ctx.clone(), next.clone(), failures.clone());
            let (user_of, handle) = (user_of.clone(), handle.clone());
            ctx.ex.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let user = ctx2.args.user(user_of(i));
                    let result = match session::login(&ctx2.cfg, &user, &format!("hl{i}")).await {
                        Ok(s) => handle(i, s).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = result {
                        failures.record(&e);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await;
    }
    failures
}

/// [`login_many`] for accounts `0..n` that keeps every session: slot `i` holds session
/// `i`, or `None` where its login failed.
pub async fn login_all(
    ctx: &Arc<Ctx>,
    n: usize,
    concurrency: usize,
) -> (Vec<Option<Session>>, Arc<Failures>) {
    let slots: Arc<Mutex<Vec<Option<Session>>>> =
        Arc::new(Mutex::new((0..n).map(|_| None).collect()));
    let failures = {
        let slots = slots.clone();
        login_many(
            ctx,
            n,
            concurrency,
            |i| i,
            move |i, s| {
                if let Ok(mut v) = slots.lock() {
                    v[i] = Some(s);
                }
                async { Ok(()) }
            },
        )
        .await
    };
    let sessions = slots
        .lock()
        .map(|mut v| std::mem::take(&mut *v))
        .unwrap_or_default();
    (sessions, failures)
}

/// Runs `main` on an executor driven by `threads` OS threads (this one included).
fn run_on_threads<T, Fut>(threads: usize, main: impl FnOnce(Arc<Executor<'static>>) -> Fut) -> T
where
    Fut: Future<Output = T>,
{
    let ex = Arc::new(Executor::new());
    let (stop_tx, stop_rx) = smol::channel::unbounded::<()>();
    std::thread::scope(|s| {
        for _ in 1..threads {
            let (ex, stop_rx) = (ex.clone(), stop_rx.clone());
            s.spawn(move || smol::block_on(ex.run(stop_rx.recv())));
        }
        let out = smol::block_on(ex.run(main(ex.clone())));
        drop(stop_tx);
        out
    })
}

/// Server CPU seconds, if a PID was given and /proc could be read.
pub fn server_cpu(args: &Args) -> Option<f64> {
    args.server_pid.and_then(|p| procstat::cpu_seconds(p).ok())
}

/// Server RSS in KiB, if a PID was given and /proc could be read.
pub fn server_rss(args: &Args) -> Option<u64> {
    args.server_pid.and_then(|p| procstat::rss_kib(p).ok())
}

/// Fields every report starts with, so a comparison script can tell runs apart.
fn common_fields(args: &Args, report: &mut Report, scenario: &str) {
    report.set("scenario", scenario);
    report.set("host", args.host.as_str());
    report.set("port", u64::from(args.port));
    report.set("domain", args.domain.as_str());
    report.set("mech", args.mech.name());
    report.set("server_pid", args.server_pid.map(u64::from));
    report.set("threads", args.threads);
}

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Scenario::Users { n } = args.scenario {
        for i in 0..n {
            println!("{}", args.user(i));
        }
        return ExitCode::SUCCESS;
    }

    let nofile = procstat::raise_nofile_limit();
    if let Some(path) = &args.scram_cache
        && let Err(e) = scram::load_cache(path)
    {
        eprintln!("cannot read SCRAM cache {}: {e}", path.display());
    }
    let scram_cache = args.scram_cache.clone();
    if let Some(pid) = args.server_pid
        && procstat::cpu_seconds(pid).is_err()
    {
        eprintln!("cannot read /proc/{pid}/stat: is the server running?");
        return ExitCode::from(2);
    }
    let connector = match tls::connector(args.tls == session::TlsMode::Direct) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("TLS set-up failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(server_name) = tls::server_name(&args.domain) else {
        eprintln!(
            "--domain {} is not usable as a TLS server name",
            args.domain
        );
        return ExitCode::from(2);
    };
    // The PLAIN flood is about PLAIN, whatever --mech says.
    let mech = match args.scenario {
        Scenario::PlainFlood { .. } => session::Mech::Plain,
        _ => args.mech,
    };
    let cfg = ClientConfig {
        host: args.host.clone(),
        port: args.port,
        domain: args.domain.clone(),
        password: args.password.clone().unwrap_or_default(),
        mech,
        tls: args.tls,
        connector,
        server_name,
        timeout: args.timeout,
    };
    println!(
        "target {}:{} domain {} mech {} | generator threads {} | open-file limit {}",
        args.host,
        args.port,
        args.domain,
        args.mech.name(),
        args.threads,
        nofile.map_or_else(|| "?".to_owned(), |n| n.to_string())
    );

    let threads = args.threads;
    let started = Instant::now();
    let report = run_on_threads(threads, move |ex| async move {
        let ctx = Arc::new(Ctx { args, cfg, ex });
        let mut report = Report::new();
        match ctx.args.scenario.clone() {
            Scenario::Login {
                k,
                concurrency,
                users,
            } => {
                common_fields(&ctx.args, &mut report, "login");
                login::run(&ctx, k, concurrency, users, &mut report).await;
            }
            Scenario::PlainFlood {
                k,
                concurrency,
                users,
                after,
            } => {
                common_fields(&ctx.args, &mut report, "plainflood");
                report.set("mech", "PLAIN");
                plainflood::run(&ctx, k, concurrency, users, after, &mut report).await;
            }
            Scenario::Idle {
                k,
                concurrency,
                hold,
                users,
                sm,
            } => {
                common_fields(&ctx.args, &mut report, "idle");
                idle::run(&ctx, k, concurrency, hold, users, sm, &mut report).await;
            }
            Scenario::Resume {
                k,
                concurrency,
                users,
                settle,
            } => {
                common_fields(&ctx.args, &mut report, "resume");
                resume::run(&ctx, k, concurrency, users, settle, &mut report).await;
            }
            Scenario::Chat {
                pairs,
                window,
                duration,
                warmup,
                concurrency,
                body_bytes,
            } => {
                common_fields(&ctx.args, &mut report, "chat");
                let p = chat::Params {
                    pairs,
                    window,
                    duration,
                    warmup,
                    concurrency,
                    body_bytes,
                };
                chat::run(&ctx, p, &mut report).await;
            }
            Scenario::Presence {
                groups,
                roster,
                duration,
                warmup,
                concurrency,
            } => {
                common_fields(&ctx.args, &mut report, "presence");
                let p = presence::Params {
                    groups,
                    roster,
                    duration,
                    warmup,
                    concurrency,
                };
                presence::run(&ctx, p, &mut report).await;
            }
            Scenario::Csi {
                contacts,
                duration,
                csi,
                presence_every,
                chatstate_every,
                message_every,
                concurrency,
            } => {
                common_fields(&ctx.args, &mut report, "csi");
                let p = csi::Params {
                    contacts,
                    duration,
                    csi,
                    presence_every,
                    chatstate_every,
                    message_every,
                    concurrency,
                };
                csi::run(&ctx, p, &mut report).await;
            }
            Scenario::Upload {
                bytes,
                runs,
                service,
            } => {
                common_fields(&ctx.args, &mut report, "upload");
                let p = upload::Params {
                    bytes,
                    runs,
                    service,
                };
                upload::run(&ctx, p, &mut report).await;
            }
            Scenario::Muc {
                occupants,
                messages,
                senders,
                window,
                body_bytes,
                room_domain,
                concurrency,
            } => {
                common_fields(&ctx.args, &mut report, "muc");
                let p = muc::Params {
                    occupants,
                    messages,
                    senders,
                    window,
                    body_bytes,
                    room_domain,
                    concurrency,
                };
                muc::run(&ctx, p, &mut report).await;
            }
            Scenario::Pep {
                contacts,
                items,
                window,
                relogins,
                concurrency,
            } => {
                common_fields(&ctx.args, &mut report, "pep");
                let p = pep::Params {
                    contacts,
                    items,
                    window,
                    relogins,
                    concurrency,
                };
                pep::run(&ctx, p, &mut report).await;
            }
            Scenario::Mam {
                queries,
                max,
                after_id,
                middle_at,
            } => {
                common_fields(&ctx.args, &mut report, "mam");
                let p = mam::Params {
                    queries,
                    max,
                    after_id,
                    middle_at,
                };
                mam::run(&ctx, p, &mut report).await;
            }
            Scenario::MamFill {
                messages,
                senders,
                window,
                body_bytes,
            } => {
                common_fields(&ctx.args, &mut report, "mamfill");
                let p = mamfill::Params {
                    messages,
                    senders,
                    window,
                    body_bytes,
                };
                mamfill::run(&ctx, p, &mut report).await;
            }
            Scenario::Offline {
                senders,
                recipients,
                messages,
                window,
                concurrency,
                body_bytes,
            } => {
                common_fields(&ctx.args, &mut report, "offline");
                let p = offline::Params {
                    senders,
                    recipients,
                    messages,
                    window,
                    concurrency,
                    body_bytes,
                };
                offline::run(&ctx, p, &mut report).await;
            }
            Scenario::S2sChat {
                pairs,
                window,
                duration,
                warmup,
                concurrency,
                body_bytes,
            } => {
                common_fields(&ctx.args, &mut report, "s2s-chat");
                let p = chat::Params {
                    pairs,
                    window,
                    duration,
                    warmup,
                    concurrency,
                    body_bytes,
                };
                s2s::run_chat(&ctx, p, &mut report).await;
            }
            Scenario::S2sIdle {
                links,
                concurrency,
                settle,
            } => {
                common_fields(&ctx.args, &mut report, "s2s-idle");
                s2s::run_idle(&ctx, links, concurrency, settle, &mut report).await;
            }
            Scenario::Users { .. } => {}
        }
        report
    });
    if let Some(path) = scram_cache
        && let Err(e) = scram::save_cache(&path)
    {
        eprintln!("cannot write SCRAM cache {}: {e}", path.display());
    }
    println!("total run time {:.1} s", started.elapsed().as_secs_f64());
    println!("{}", report.to_json());
    ExitCode::SUCCESS
}
