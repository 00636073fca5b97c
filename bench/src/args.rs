//! Command line: a scenario name and `--option value` pairs, in any order.

use std::fmt;
use std::time::Duration;

use crate::session::{Mech, TlsMode};

pub const USAGE: &str = "\
hearth-load: an XMPP load generator for any server (loopback benchmarks)

USAGE:
    hearth-load <SCENARIO> [OPTIONS]

SCENARIOS:
    login   -k K -c C [--users N]     log K sessions in and out, C at a time
                                      -> sessions/s, server CPU seconds
    idle    -k K -c C --hold SECS     hold K sessions open and idle
            [--users N] [--sm MODE]                          -> server RSS before/after, RSS per session
                                      --sm on: each enables XEP-0198 stream management
                                      with resumption; --sm hibernate: each also drops
                                      its TCP connection once enabled (the server keeps
                                      the session to be resumed), RSS per hibernating
                                      session; all are resumed after the hold  [off]
    resume  -k K -c C [--users N]     XEP-0198: K sessions log in, enable resumption,
            [--settle SECS]           send presence, drop their TCP connection; after
                                      SECS [1] each reconnects and resumes, C at a time
                                      -> resume time p50/p99 beside login time, server
                                      CPU per 1000 of each, <failed/> count
    chat    -p P -w W -d SECS         P pairs exchange messages, W in flight per pair
            [--warmup SECS] [--body-bytes B] [-c C]
                                      -> messages/s, latency p50/p99/max, CPU per 10k
    presence -g G -r R -d SECS        G groups of R+1 accounts, all subscribed to each
            [--warmup SECS] [-c C]    other ('both'; set up first, reused on a re-run);
                                      one per group logs in and out, R stay online
                                      -> presence fan-out/s, probe answers, CPU per 10k
    offline -m M --senders S          M messages from S senders to N offline users
            --recipients N [-w W]     (W unanswered per sender, a ping per W/2), then
            [-c C] [--body-bytes B]   the N log in -> stored/s, delivered/s, exactly
                                      once, CPU and disk bytes per stored message
    plainflood -k K -c C [--users N]  K SASL PLAIN attempts, C at a time, half with the
            [--after SECS]            right password, half wrong for unknown accounts,
                                      each from its own 127.1.x.y address -> server RSS
                                      idle/peak/end/SECS later, threads, CPU per 1000
    s2s-chat -p P -w W -d SECS        federation, one way: P senders on server A send
            --port-b PORT --domain-b D  messages to P receivers on server B (domain D),
            [--host-b HOST] [--server-pid-b PID]  W in flight per pair; accounts 0..P
            [--warmup SECS] [--body-bytes B] [-c C]   on each -> messages/s, latency
                                      p50/p99/max, CPU of each server per 10k
    s2s-idle --links N --port-b PORT  account 0 on A gets a message from account 0 of
            --domain-b 'v{}.test'     each domain v0..vN of server B and answers it:
            [--host-b HOST] [--settle SECS] [-c C]   an incoming and an outgoing link
                                      per domain (v0 warms up) -> A's RSS and TCP
                                      connections before/after, bytes per link
    csi     -d SECS --csi on|off      a phone (account 0) and N contacts (1..=N, each
            [--contacts N] [--presence-every S] [--chatstate-every S]
            [--message-every S] [-c C]
                                      subscribed with the phone); the phone goes
                                      <inactive/> (XEP-0352) or not and only reads,
                                      the contacts change presence, type and write at
                                      their rhythms [20, 30 s, 60 s, 600 s; 0 = never]
                                      -> bytes and reads the phone received (per hour),
                                      reads after 10 s of silence, held at the end
    pep     [--contacts N] [--items K] [-w W] [--relogins L] [-c C]
                                      XEP-0163: a publisher (account 0) and N contacts
                                      (1..=N, subscribed both ways, caps with
                                      urn:xmpp:avatar:metadata+notify) [20]; K publishes
                                      to urn:xmpp:avatar:metadata [1000], W unanswered
                                      [1]; then L contacts log in again [5]
                                      -> publish round trip, fan-out latency p50/p99,
                                      notifications/s, CPU per 10k, RSS, exactly once,
                                      last item on login
    upload  [--bytes B] [--runs R] [--upload-domain D]
                                      XEP-0363: account 0 asks the upload service (found
                                      in disco#items, or D) for a slot for B bytes
                                      [100000000] and PUTs them over HTTP(S), then GETs
                                      them back and compares, R times [3]
                                      -> PUT/GET MB/s, server RSS before/peak/after,
                                      server CPU per PUT and GET
    muc     [--occupants N] [-m M] [--senders S] [-w W] [--body-bytes B]
            [--room-domain D] [-c C]  XEP-0045: N occupants (accounts 0..N) [50] join a
                                      new room at D [conference.<domain>]; S of them [5]
                                      send M groupchat messages [2000], W each without
                                      the room's echo yet [1]
                                      -> deliveries/s, latency p50/p99, CPU per 10k
                                      deliveries, RSS, exactly once
    mam     -q Q [--max M]            XEP-0313: account 0 asks Q pages of M (50) from
            [--after-id ID | --middle-at K]   the newest, and with --after-id Q pages
                                      after ID (--middle-at K: after the K-th message
                                      from the oldest, found by paging, untimed)
                                      (the archive is filled beforehand) -> latency
                                      p50/p99/max, server CPU per query, RSS
    mamfill -m M [--senders S] [-w W] [--body-bytes B]
                                      fills account 0's archive over XMPP: senders
                                      1..=S (10) send M messages to its bare JID, W (32)
                                      per sender not yet received -> messages/s,
                                      server CPU per 1000
    users   N                         print the first N user names (one per line)

CONNECTION (all scenarios):
    --host HOST            server address                  [127.0.0.1]
    --port PORT            c2s port                        [5222]
    --domain DOMAIN        XMPP domain (JIDs, SNI)         [localhost]
    --user-pattern PAT     '{}' is replaced by 0, 1, ...   [load{}]
    --password PW          password of every account       (required)
    --mech MECH            SCRAM-SHA-1 | SCRAM-SHA-256 | PLAIN   [SCRAM-SHA-1]
    --tls MODE             starttls | direct | none        [starttls]
    --timeout SECS         bound on each wait              [30]

SECOND SERVER (s2s-chat, s2s-idle; server A is --host/--port/--domain/--server-pid):
    --host-b HOST          server B's address                [--host]
    --port-b PORT          server B's c2s port               (required)
    --domain-b DOMAIN      server B's domain; for s2s-idle a pattern with {}
    --server-pid-b PID     server B's CPU, like --server-pid

MEASUREMENT:
    --server-pid PID       read the server's CPU (/proc/PID/stat) and RSS (/proc/PID/status)
    --threads N            generator threads               [number of CPUs]
    --scram-cache FILE     keep SCRAM salted passwords across runs (RFC 5802 §5.1), so
                           the generator does not spend its CPU on PBKDF2 (password-
                           equivalent for the test accounts: benchmarks only)

Accounts are not created: the caller registers them beforehand (e.g. `hearth user add`,
`prosodyctl register`, `ejabberdctl register`), with names from `hearth-load users N`.
The last line of output is one JSON object with every figure.";

/// The scenario and its own parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum Scenario {
    Users {
        n: usize,
    },
    Login {
        k: usize,
        concurrency: usize,
        /// Distinct accounts cycled through; sessions beyond it reuse accounts.
        users: usize,
    },
    Idle {
        k: usize,
        concurrency: usize,
        hold: Duration,
        /// Distinct accounts; sessions beyond it are further resources of the same ones.
        users: usize,
        sm: SmMode,
    },
    Resume {
        k: usize,
        concurrency: usize,
        users: usize,
        /// How long the server gets to notice the lost connections before the resumptions.
        settle: Duration,
    },
    Presence {
        groups: usize,
        roster: usize,
        duration: Duration,
        warmup: Duration,
        concurrency: usize,
    },
    Csi {
        contacts: usize,
        duration: Duration,
        /// The phone says `<inactive/>`.
        csi: bool,
        presence_every: Duration,
        chatstate_every: Duration,
        /// `None`: no messages with a body.
        message_every: Option<Duration>,
        concurrency: usize,
    },
    Upload {
        bytes: u64,
        runs: usize,
        /// The upload service; found through disco when `None`.
        service: Option<String>,
    },
    Muc {
        occupants: usize,
        messages: usize,
        senders: usize,
        /// Messages per sender without their own copy back yet, at most.
        window: usize,
        body_bytes: usize,
        /// The MUC service's domain; `conference.<domain>` when `None`.
        room_domain: Option<String>,
        concurrency: usize,
    },
    Pep {
        contacts: usize,
        items: usize,
        /// Publishes without a result yet, at most.
        window: usize,
        /// Contacts that log in again for the last item.
        relogins: usize,
        concurrency: usize,
    },
    Mam {
        queries: usize,
        max: usize,
        after_id: Option<String>,
        middle_at: Option<usize>,
    },
    MamFill {
        messages: usize,
        senders: usize,
        window: usize,
        body_bytes: usize,
    },
    Offline {
        senders: usize,
        recipients: usize,
        messages: usize,
        window: usize,
        concurrency: usize,
        body_bytes: usize,
    },
    PlainFlood {
        k: usize,
        concurrency: usize,
        users: usize,
        /// How long RSS is watched after the last attempt.
        after: Duration,
    },
    Chat {
        pairs: usize,
        window: usize,
        duration: Duration,
        warmup: Duration,
        concurrency: usize,
        body_bytes: usize,
    },
    S2sChat {
        pairs: usize,
        window: usize,
        duration: Duration,
        warmup: Duration,
        concurrency: usize,
        body_bytes: usize,
    },
    S2sIdle {
        /// Domains of server B beyond the warm-up one, each making two links.
        links: usize,
        concurrency: usize,
        /// How long RSS may settle before each reading.
        settle: Duration,
    },
}

/// Stream management in the `idle` scenario (XEP-0198).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmMode {
    /// Not enabled.
    Off,
    /// Enabled with resumption; the connection stays.
    On,
    /// Enabled with resumption, then the TCP connection dropped: the server keeps a
    /// hibernating session.
    Hibernate,
}

/// The second server of the federation scenarios.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerB {
    pub host: String,
    pub port: u16,
    /// A domain, or for `s2s-idle` a pattern whose `{}` is replaced by 0, 1, ...
    pub domain: String,
    pub server_pid: Option<u32>,
}

/// Everything from the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    pub scenario: Scenario,
    pub host: String,
    pub port: u16,
    pub domain: String,
    pub user_pattern: String,
    pub password: Option<String>,
    pub mech: Mech,
    pub tls: TlsMode,
    pub timeout: Duration,
    pub server_pid: Option<u32>,
    pub threads: usize,
    pub scram_cache: Option<std::path::PathBuf>,
    /// Server B of `s2s-chat` and `s2s-idle`; `None` for the other scenarios.
    pub server_b: Option<ServerB>,
}

/// A command line we cannot run.
#[derive(Debug, PartialEq)]
pub struct ArgError(pub String);

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, ArgError> {
    v.parse()
        .map_err(|_| ArgError(format!("{flag}: not a valid number: {v}")))
}

fn secs(flag: &str, v: &str) -> Result<Duration, ArgError> {
    let s: f64 = num(flag, v)?;
    if !(0.0..=1e6).contains(&s) {
        return Err(ArgError(format!("{flag}: out of range: {v}")));
    }
    Ok(Duration::from_secs_f64(s))
}

impl Args {
    pub fn user(&self, i: usize) -> String {
        user_name(&self.user_pattern, i)
    }

    pub fn parse(argv: impl IntoIterator<Item = String>) -> Result<Args, ArgError> {
        let mut positional = Vec::new();
        let mut opts: Vec<(String, String)> = Vec::new();
        let mut it = argv.into_iter();
        while let Some(a) = it.next() {
            if a == "-h" || a == "--help" {
                return Err(ArgError(USAGE.to_owned()));
            }
            if a.starts_with('-') && a.len() > 1 {
                let (flag, value) = match a.split_once('=') {
                    Some((f, v)) => (f.to_owned(), v.to_owned()),
                    None => {
                        let v = it
                            .next()
                            .ok_or_else(|| ArgError(format!("{a} needs a value")))?;
                        (a, v)
                    }
                };
                opts.push((flag, value));
            } else {
                positional.push(a);
            }
        }

        let mut args = Args {
            scenario: Scenario::Users { n: 0 },
            host: "127.0.0.1".into(),
            port: 5222,
            domain: "localhost".into(),
            user_pattern: "load{}".into(),
            password: None,
            mech: Mech::ScramSha1,
            tls: TlsMode::StartTls,
            timeout: Duration::from_secs(30),
            server_pid: None,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            scram_cache: None,
            server_b: None,
        };
        let (mut k, mut concurrency, mut users) = (100usize, 10usize, None);
        let (mut hold, mut pairs, mut window) = (Duration::from_secs(5), 10usize, 10usize);
        let (mut duration, mut warmup) = (Duration::from_secs(10), Duration::from_secs(1));
        let mut body_bytes = 100usize;
        let (mut queries, mut max, mut after_id, mut middle_at) = (20usize, 50usize, None, None);
        let (mut groups, mut roster) = (10usize, 20usize);
        let (mut senders, mut recipients, mut messages) = (10usize, 100usize, 10_000usize);
        let mut window_set = None;
        let mut after = Duration::from_secs(15);
        let (mut host_b, mut port_b, mut domain_b, mut pid_b) = (None, None, None, None);
        let (mut links, mut settle) = (50usize, None);
        let (mut contacts, mut csi) = (20usize, None);
        let (mut presence_every, mut chatstate_every, mut message_every) = (
            Duration::from_secs(30),
            Duration::from_secs(60),
            Duration::from_secs(600),
        );
        let mut sm = SmMode::Off;
        let (mut items, mut relogins) = (1000usize, 5usize);
        let (mut occupants, mut room_domain) = (50usize, None);
        let (mut upload_bytes, mut runs, mut upload_domain) = (100_000_000u64, 3usize, None);
        let (mut senders_set, mut messages_set) = (None, None);
        for (flag, v) in &opts {
            let v = v.as_str();
            match flag.as_str() {
                "--host" => args.host = v.to_owned(),
                "--port" => args.port = num(flag, v)?,
                "--domain" => args.domain = v.to_owned(),
                "--user-pattern" => args.user_pattern = v.to_owned(),
                "--password" => args.password = Some(v.to_owned()),
                "--mech" => {
                    args.mech =
                        Mech::parse(v).ok_or_else(|| ArgError(format!("unknown mechanism {v}")))?
                }
                "--tls" => {
                    args.tls = match v {
                        "starttls" => TlsMode::StartTls,
                        "direct" => TlsMode::Direct,
                        "none" => TlsMode::None,
                        _ => {
                            return Err(ArgError(format!(
                                "--tls: starttls, direct or none, not {v}"
                            )));
                        }
                    }
                }
                "--timeout" => args.timeout = secs(flag, v)?,
                "--server-pid" => args.server_pid = Some(num(flag, v)?),
                "--threads" => args.threads = num(flag, v)?,
                "--scram-cache" => args.scram_cache = Some(v.into()),
                "-k" => k = num(flag, v)?,
                "-c" | "--concurrency" => concurrency = num(flag, v)?,
                "--users" => users = Some(num(flag, v)?),
                "--hold" => hold = secs(flag, v)?,
                "--after" => after = secs(flag, v)?,
                "-p" | "--pairs" => pairs = num(flag, v)?,
                "-w" | "--window" => window_set = Some(num(flag, v)?),
                "-d" | "--duration" => duration = secs(flag, v)?,
                "--warmup" => warmup = secs(flag, v)?,
                "--body-bytes" => body_bytes = num(flag, v)?,
                "-g" | "--groups" => groups = num(flag, v)?,
                "-r" | "--roster" => roster = num(flag, v)?,
                "--senders" => {
                    senders = num(flag, v)?;
                    senders_set = Some(senders);
                }
                "--recipients" => recipients = num(flag, v)?,
                "-m" | "--messages" => {
                    messages = num(flag, v)?;
                    messages_set = Some(messages);
                }
                "--occupants" => occupants = num(flag, v)?,
                "--bytes" => upload_bytes = num(flag, v)?,
                "--runs" => runs = num(flag, v)?,
                "--upload-domain" => upload_domain = Some(v.to_owned()),
                "--room-domain" => room_domain = Some(v.to_owned()),
                "--host-b" => host_b = Some(v.to_owned()),
                "--port-b" => port_b = Some(num(flag, v)?),
                "--domain-b" => domain_b = Some(v.to_owned()),
                "--server-pid-b" => pid_b = Some(num(flag, v)?),
                "--links" => links = num(flag, v)?,
                "--settle" => settle = Some(secs(flag, v)?),
                "--contacts" => contacts = num(flag, v)?,
                "--items" => items = num(flag, v)?,
                "--relogins" => relogins = num(flag, v)?,
                "--csi" => {
                    csi = Some(match v {
                        "on" => true,
                        "off" => false,
                        _ => return Err(ArgError(format!("--csi: on or off, not {v}"))),
                    })
                }
                "--presence-every" => presence_every = secs(flag, v)?,
                "--chatstate-every" => chatstate_every = secs(flag, v)?,
                "--message-every" => message_every = secs(flag, v)?,
                "-q" | "--queries" => queries = num(flag, v)?,
                "--max" => max = num(flag, v)?,
                "--after-id" => after_id = Some(v.to_owned()),
                "--middle-at" => middle_at = Some(num(flag, v)?),
                "--sm" => {
                    sm = match v {
                        "off" => SmMode::Off,
                        "on" => SmMode::On,
                        "hibernate" => SmMode::Hibernate,
                        _ => return Err(ArgError(format!("--sm: off, on or hibernate, not {v}"))),
                    }
                }
                _ => return Err(ArgError(format!("unknown option {flag}\n\n{USAGE}"))),
            }
        }
        if !args.user_pattern.contains("{}") {
            return Err(ArgError("--user-pattern must contain {}".into()));
        }
        if args.threads == 0 || concurrency == 0 {
            return Err(ArgError("--threads and -c must be at least 1".into()));
        }
        if let Some(w) = window_set {
            window = w;
        }
        args.scenario = match positional.first().map(String::as_str) {
            Some("users") => Scenario::Users {
                n: match positional.get(1) {
                    Some(n) => num("users", n)?,
                    None => return Err(ArgError("users needs a count".into())),
                },
            },
            Some("login") => Scenario::Login {
                k,
                concurrency,
                users: users.unwrap_or(k).max(1),
            },
            Some("plainflood") => Scenario::PlainFlood {
                k,
                concurrency,
                users: users.unwrap_or(k).max(1),
                after,
            },
            Some("idle") => Scenario::Idle {
                k,
                concurrency,
                hold,
                users: users.unwrap_or(k).max(1),
                sm,
            },
            Some("resume") => {
                // Each session resumes its own account's session: one account each.
                let users = users.unwrap_or(k).max(1);
                if users < k {
                    return Err(ArgError("resume: --users must be at least -k".into()));
                }
                Scenario::Resume {
                    k,
                    concurrency,
                    users,
                    settle: settle.unwrap_or(Duration::from_secs(1)),
                }
            }
            Some("chat") => {
                if window == 0 || pairs == 0 || duration.is_zero() {
                    return Err(ArgError("chat needs -p, -w and -d above zero".into()));
                }
                Scenario::Chat {
                    pairs,
                    window,
                    duration,
                    warmup,
                    concurrency,
                    body_bytes,
                }
            }
            Some("presence") => {
                if groups == 0 || roster == 0 || duration.is_zero() {
                    return Err(ArgError("presence needs -g, -r and -d above zero".into()));
                }
                Scenario::Presence {
                    groups,
                    roster,
                    duration,
                    warmup,
                    concurrency,
                }
            }
            Some("csi") => {
                let Some(csi) = csi else {
                    return Err(ArgError("csi needs --csi on or --csi off".into()));
                };
                if contacts == 0
                    || duration.is_zero()
                    || presence_every.is_zero()
                    || chatstate_every.is_zero()
                {
                    return Err(ArgError(
                        "csi needs --contacts, -d, --presence-every and --chatstate-every \
                         above zero"
                            .into(),
                    ));
                }
                Scenario::Csi {
                    contacts,
                    duration,
                    csi,
                    presence_every,
                    chatstate_every,
                    message_every: Some(message_every).filter(|d| !d.is_zero()),
                    concurrency,
                }
            }
            Some("upload") => {
                if upload_bytes == 0 || runs == 0 {
                    return Err(ArgError(
                        "upload needs --bytes and --runs above zero".into(),
                    ));
                }
                Scenario::Upload {
                    bytes: upload_bytes,
                    runs,
                    service: upload_domain,
                }
            }
            Some("muc") => {
                let (senders, messages) = (senders_set.unwrap_or(5), messages_set.unwrap_or(2000));
                let window = window_set.unwrap_or(1);
                if occupants == 0 || messages == 0 || senders == 0 || window == 0 {
                    return Err(ArgError(
                        "muc needs --occupants, -m, --senders and -w above zero".into(),
                    ));
                }
                if senders > occupants {
                    return Err(ArgError("muc: more --senders than --occupants".into()));
                }
                Scenario::Muc {
                    occupants,
                    messages,
                    senders,
                    window,
                    body_bytes,
                    room_domain,
                    concurrency,
                }
            }
            Some("pep") => {
                let window = window_set.unwrap_or(1);
                if contacts == 0 || items == 0 || window == 0 {
                    return Err(ArgError(
                        "pep needs --contacts, --items and -w above zero".into(),
                    ));
                }
                Scenario::Pep {
                    contacts,
                    items,
                    window,
                    relogins,
                    concurrency,
                }
            }
            Some("mam") => {
                if queries == 0 || max == 0 {
                    return Err(ArgError("mam needs -q and --max above zero".into()));
                }
                if after_id.is_some() && middle_at.is_some() {
                    return Err(ArgError("mam: --after-id or --middle-at, not both".into()));
                }
                Scenario::Mam {
                    queries,
                    max,
                    after_id,
                    middle_at: middle_at.filter(|&k| k > 0),
                }
            }
            Some("mamfill") => {
                let window = window_set.unwrap_or(32);
                if senders == 0 || messages == 0 || window == 0 {
                    return Err(ArgError(
                        "mamfill needs -m, --senders and -w above zero".into(),
                    ));
                }
                Scenario::MamFill {
                    messages,
                    senders,
                    window,
                    body_bytes,
                }
            }
            Some("offline") => {
                if senders == 0 || recipients == 0 || messages == 0 {
                    return Err(ArgError(
                        "offline needs --senders, --recipients and -m above zero".into(),
                    ));
                }
                // Servers cap stored messages per account (hearth and the peer configs:
                // 1000); stay well below so no message bounces.
                if messages.div_ceil(recipients) > 500 {
                    return Err(ArgError(
                        "offline: at most 500 messages per recipient (-m / --recipients)".into(),
                    ));
                }
                Scenario::Offline {
                    senders,
                    recipients,
                    messages,
                    window: window_set.unwrap_or(32).max(1),
                    concurrency,
                    body_bytes,
                }
            }
            Some("s2s-chat") => {
                if window == 0 || pairs == 0 || duration.is_zero() {
                    return Err(ArgError("s2s-chat needs -p, -w and -d above zero".into()));
                }
                Scenario::S2sChat {
                    pairs,
                    window,
                    duration,
                    warmup,
                    concurrency,
                    body_bytes,
                }
            }
            Some("s2s-idle") => {
                if links == 0 {
                    return Err(ArgError("s2s-idle needs --links above zero".into()));
                }
                Scenario::S2sIdle {
                    links,
                    concurrency,
                    settle: settle.unwrap_or(Duration::from_secs(5)),
                }
            }
            Some(other) => return Err(ArgError(format!("unknown scenario {other}\n\n{USAGE}"))),
            None => return Err(ArgError(USAGE.to_owned())),
        };
        if positional.len() > 1 && !matches!(args.scenario, Scenario::Users { .. }) {
            return Err(ArgError(format!("unexpected argument {}", positional[1])));
        }
        if matches!(
            args.scenario,
            Scenario::S2sChat { .. } | Scenario::S2sIdle { .. }
        ) {
            let (Some(port), Some(domain)) = (port_b, domain_b) else {
                return Err(ArgError(
                    "s2s-chat and s2s-idle need --port-b and --domain-b".into(),
                ));
            };
            let is_pattern = domain.contains("{}");
            if matches!(args.scenario, Scenario::S2sIdle { .. }) != is_pattern {
                return Err(ArgError(
                    "--domain-b: a pattern with {} for s2s-idle, a domain for s2s-chat".into(),
                ));
            }
            if domain.eq_ignore_ascii_case(&args.domain) {
                return Err(ArgError(
                    "--domain-b must differ from --domain (federation)".into(),
                ));
            }
            args.server_b = Some(ServerB {
                host: host_b.unwrap_or_else(|| args.host.clone()),
                port,
                domain,
                server_pid: pid_b,
            });
        }
        if args.password.is_none() && !matches!(args.scenario, Scenario::Users { .. }) {
            return Err(ArgError("--password is required".into()));
        }
        Ok(args)
    }
}

/// The `i`-th account name: the pattern with its first `{}` replaced by `i`.
pub fn user_name(pattern: &str, i: usize) -> String {
    pattern.replacen("{}", &i.to_string(), 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Args, ArgError> {
        Args::parse(s.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn login_with_options() {
        let a = parse("--port 25222 login -k 50 -c=5 --password pw --mech plain --server-pid 7")
            .unwrap();
        assert_eq!(
            a.scenario,
            Scenario::Login {
                k: 50,
                concurrency: 5,
                users: 50
            }
        );
        assert_eq!(a.port, 25222);
        assert_eq!(a.mech, Mech::Plain);
        assert_eq!(a.server_pid, Some(7));
        assert_eq!(a.user(3), "load3");
    }

    #[test]
    fn users_needs_no_password() {
        let a = parse("users 3 --user-pattern u{}x").unwrap();
        assert_eq!(a.scenario, Scenario::Users { n: 3 });
        assert_eq!(a.user(2), "u2x");
    }

    #[test]
    fn csi() {
        let a = parse("csi -d 60 --csi on --contacts 5 --message-every 0 --password x").unwrap();
        assert_eq!(
            a.scenario,
            Scenario::Csi {
                contacts: 5,
                duration: Duration::from_secs(60),
                csi: true,
                presence_every: Duration::from_secs(30),
                chatstate_every: Duration::from_secs(60),
                message_every: None,
                concurrency: 10,
            }
        );
        assert!(parse("csi -d 60 --password x").is_err());
        assert!(parse("csi -d 60 --csi maybe --password x").is_err());
    }

    #[test]
    fn upload() {
        let a = parse("upload --password x").unwrap();
        assert_eq!(
            a.scenario,
            Scenario::Upload {
                bytes: 100_000_000,
                runs: 3,
                service: None
            }
        );
        let a = parse("upload --bytes 10 --runs 1 --upload-domain up.x --password x").unwrap();
        assert_eq!(
            a.scenario,
            Scenario::Upload {
                bytes: 10,
                runs: 1,
                service: Some("up.x".into())
            }
        );
        assert!(parse("upload --bytes 0 --password x").is_err());
    }

    #[test]
    fn muc() {
        let a = parse("muc --password x").unwrap();
        assert_eq!(
            a.scenario,
            Scenario::Muc {
                occupants: 50,
                messages: 2000,
                senders: 5,
                window: 1,
                body_bytes: 100,
                room_domain: None,
                concurrency: 10,
            }
        );
        let a =
            parse("muc --occupants 3 -m 10 --senders 2 -w 4 --room-domain rooms.x --password x")
                .unwrap();
        assert_eq!(
            a.scenario,
            Scenario::Muc {
                occupants: 3,
                messages: 10,
                senders: 2,
                window: 4,
                body_bytes: 100,
                room_domain: Some("rooms.x".into()),
                concurrency: 10,
            }
        );
        assert!(parse("muc --occupants 2 --senders 3 --password x").is_err());
        assert!(parse("muc -m 0 --password x").is_err());
    }

    #[test]
    fn pep() {
        let a = parse("pep --password x").unwrap();
        assert_eq!(
            a.scenario,
            Scenario::Pep {
                contacts: 20,
                items: 1000,
                window: 1,
                relogins: 5,
                concurrency: 10
            }
        );
        let a = parse("pep --contacts 3 --items 10 -w 4 --relogins 0 --password x").unwrap();
        assert!(matches!(
            a.scenario,
            Scenario::Pep {
                contacts: 3,
                items: 10,
                window: 4,
                relogins: 0,
                ..
            }
        ));
        assert!(parse("pep --items 0 --password x").is_err());
        assert!(parse("pep -w 0 --password x").is_err());
    }

    #[test]
    fn presence_and_offline() {
        let a = parse("presence -g 4 -r 9 -d 5 --password x").unwrap();
        assert!(matches!(
            a.scenario,
            Scenario::Presence {
                groups: 4,
                roster: 9,
                ..
            }
        ));
        let a = parse("offline -m 1000 --senders 5 --recipients 10 -w 8 --password x").unwrap();
        assert!(matches!(
            a.scenario,
            Scenario::Offline {
                senders: 5,
                recipients: 10,
                messages: 1000,
                window: 8,
                ..
            }
        ));
        assert!(parse("offline -m 1001 --recipients 2 --password x").is_err());
        assert!(parse("presence -r 0 --password x").is_err());
    }

    #[test]
    fn mam_and_mamfill() {
        let a = parse("mam -q 200 --max 50 --middle-at 5000 --password x").unwrap();
        assert_eq!(
            a.scenario,
            Scenario::Mam {
                queries: 200,
                max: 50,
                after_id: None,
                middle_at: Some(5000),
            }
        );
        assert!(parse("mam -q 5 --after-id a --middle-at 3 --password x").is_err());
        let a = parse("mamfill -m 10000 --senders 4 --password x").unwrap();
        assert_eq!(
            a.scenario,
            Scenario::MamFill {
                messages: 10000,
                senders: 4,
                window: 32,
                body_bytes: 100,
            }
        );
        assert!(parse("mamfill -m 0 --password x").is_err());
        assert!(parse("mamfill -m 10 -w 0 --password x").is_err());
    }

    #[test]
    fn s2s_scenarios_need_server_b() {
        let a = parse(
            "s2s-chat -p 4 -w 8 -d 5 --password x --domain a.test --port-b 6 --domain-b b.test \
             --server-pid-b 9",
        )
        .unwrap();
        assert!(matches!(a.scenario, Scenario::S2sChat { pairs: 4, .. }));
        assert_eq!(
            a.server_b,
            Some(ServerB {
                host: "127.0.0.1".into(),
                port: 6,
                domain: "b.test".into(),
                server_pid: Some(9),
            })
        );
        let a = parse("s2s-idle --links 3 --password x --port-b 6 --domain-b v{}.test").unwrap();
        assert!(matches!(a.scenario, Scenario::S2sIdle { links: 3, .. }));
        assert!(parse("s2s-chat --password x --domain-b b.test").is_err()); // no port
        assert!(parse("s2s-chat --password x --port-b 6 --domain-b v{}.test").is_err());
        assert!(parse("s2s-idle --password x --port-b 6 --domain-b b.test").is_err());
        assert!(parse("s2s-chat --password x --port-b 6 --domain-b localhost").is_err());
        assert!(parse("chat --password x").unwrap().server_b.is_none());
    }

    #[test]
    fn stream_management_scenarios() {
        let a = parse("resume -k 200 -c 20 --password x").unwrap();
        assert_eq!(
            a.scenario,
            Scenario::Resume {
                k: 200,
                concurrency: 20,
                users: 200,
                settle: Duration::from_secs(1)
            }
        );
        assert!(parse("resume -k 200 --users 100 --password x").is_err());
        let a = parse("idle -k 10 --sm hibernate --password x").unwrap();
        assert!(matches!(
            a.scenario,
            Scenario::Idle {
                sm: SmMode::Hibernate,
                ..
            }
        ));
        let a = parse("idle -k 10 --password x").unwrap();
        assert!(matches!(
            a.scenario,
            Scenario::Idle {
                sm: SmMode::Off,
                ..
            }
        ));
        assert!(parse("idle --sm maybe --password x").is_err());
    }

    #[test]
    fn rejects_bad_input() {
        assert!(parse("login -k 5").is_err()); // no password
        assert!(parse("chat -w 0 --password x").is_err());
        assert!(parse("login --password x --user-pattern fixed").is_err());
        assert!(parse("fly --password x").is_err());
        assert!(parse("login --password x --bogus 1").is_err());
    }
}
