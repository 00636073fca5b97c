//! Federation peers: the XMPP servers people run beside hearth — Prosody 0.12, ejabberd
//! 23.01 and jabberd2 2.7, from Debian 12 — each with its own domain, loopback address,
//! certificate, configuration and data, finding each other through a private DNS server,
//! so that s2s tests (RFC 6120 §13, XEP-0220 dialback, XEP-0178 SASL EXTERNAL) can run
//! them against each other and against hearth.
//!
//! ```ignore
//! let net = Net::new(); // test CA, dnsmasq, an address block
//! let prosody = Peer::start(PeerKind::Prosody, &net, "prosody.test", net.next_addr(), Trust::Ca);
//! let ejabberd = Peer::start(PeerKind::Ejabberd, &net, "ejabberd.test", net.next_addr(), Trust::Ca);
//! prosody.add_user("alice", "pw");
//! let alice = prosody.slixmpp("alice", "pw").spawn(&["chat-with", "--contact", ..]);
//!
//! // hearth joins as one more server of the same Net:
//! let slot = net.reserve("hearth.test", Trust::Ca); // address, ports, DNS records
//! // slot.creds.cert / .key: its CA-signed certificate; net.ca_cert_path(): the CA to
//! // trust (net.ca_key_path() to sign more); slot.s2s_addr(): where to listen.
//! let cmd = net.isolated_command(env!("CARGO_BIN_EXE_hearth")); // sees the test's DNS
//! // Lower level: dns_records("hearth.test", addr, port) are the dnsmasq options,
//! // net.add_domain(..) publishes them, net.credentials(..) makes a certificate.
//! ```
//!
//! # Addresses
//!
//! A [`Net`] claims one block `127.77.N.0/24` (N in 1..=250) for the whole test: the
//! claim is a TCP listener on `127.77.N.1:`[`CLAIM_PORT`] held as long as the `Net`
//! lives, so parallel tests — threads of one `cargo test` binary or processes of
//! `cargo nextest` — never share a block, and a crashed test frees its block with its
//! process. dnsmasq answers on `127.77.N.53:53`; servers get `127.77.N.10`, `.11`, …
//! ([`Net::next_addr`]), each with its own ports picked free on its own address. The
//! ports are not the standard 5222/5269: a packaged service listening on `0.0.0.0:5269`
//! would collide with any address, and the SRV records carry the ports anyway.
//!
//! # DNS
//!
//! Federation finds the other server by DNS (RFC 6120 §3.2: SRV `_xmpp-server._tcp`,
//! then A/AAAA). Each `Net` runs its own `dnsmasq` (Debian's dnsmasq-base) in the
//! foreground on `127.77.N.53`, knowing only the test's domains (`--no-resolv
//! --no-hosts`, [`dns_records`]) and answering NXDOMAIN for any other name, logging
//! every query to a file ([`Net::dns_log`]). dnsmasq cannot reload SRV records, so
//! [`Net::add_domain`] restarts it with the whole list; that takes milliseconds and
//! happens while servers start, before any of them looks a name up.
//!
//! The servers read `/etc/resolv.conf` and `/etc/hosts`, which the test must not edit.
//! Each server process runs instead in a private mount namespace where the `Net`'s own
//! `resolv.conf` (`nameserver 127.77.N.53`) and `hosts` (localhost and the machine's
//! host name only, so every test domain really goes through DNS) are bind-mounted over
//! them ([`Net::isolated_command`]: `unshare --mount` + `mount --bind`). The network
//! namespace stays the machine's, so the test process, the clients and hearth reach every
//! server on loopback. This works for all three:
//!
//! - Prosody 0.12 resolves with libunbound (lua-unbound), which reads `/etc/resolv.conf`
//!   at start; its log shows the lookups (`debug` level).
//! - ejabberd resolves SRV and A records with Erlang's `inet_res`, which reads
//!   `/etc/resolv.conf` when the VM starts — inside the namespace, since the whole VM is
//!   started there. ejabberd also needs Erlang distribution for `ejabberdctl register`:
//!   instead of epmd (one machine-wide daemon every test would share), each node gets its
//!   own distribution port (`ERL_DIST_PORT` in its own `ejabberdctl.cfg`: ejabberdctl
//!   23.01 passes `-erl_epmd_port P -start_epmd false`, and its control commands connect
//!   to that port directly), so no epmd runs at all and node names only need to match.
//! - jabberd2's s2s resolves with libudns, which reads `/etc/resolv.conf` at start; its
//!   resolver is inside the s2s process (no separate resolver component in 2.7).
//!
//! Every test that federates checks the dnsmasq log for the SRV queries, which proves the
//! servers used this DNS and not the machine's.
//!
//! # Certificates and trust
//!
//! A test CA made here with rcgen signs one certificate per domain (SAN = the domain) in
//! the `Ca*` modes of [`Trust`]; every server trusts that CA (Prosody `ssl.cafile`,
//! ejabberd `ca_file`, jabberd2 `cachain`) and requires a valid certificate from its
//! peers, and dialback is not loaded, so servers can only authenticate each other with
//! SASL EXTERNAL (XEP-0178). [`Trust::Ca`] certificates carry the EKU serverAuth only,
//! as public CAs (Let's Encrypt among them) now issue them — hearth must accept such a
//! certificate from a peer that presents it as its TLS *client* certificate on an
//! incoming s2s stream — and
//! [`Trust::CaClientAuth`] ones serverAuth and clientAuth. What the peers do with a
//! serverAuth-only client certificate (`tests/federation_peers.rs` checks both):
//!
//! - Prosody 0.12 accepts it (certmanager's default `verifyext` has
//!   `lsec_ignore_purpose`: client certificates are checked as server certificates).
//! - ejabberd 23.01 refuses it: OpenSSL's client-purpose check fails and ejabberd logs
//!   `Failed inbound s2s EXTERNAL authentication … unsupported certificate purpose`. The
//!   connecting Prosody then closes the stream ("No fallback from SASL EXTERNAL
//!   failure"): with mod_dialback loaded it would fall back to dialback instead.
//! - jabberd2 2.7 never authenticates s2s by certificate (dialback only).
//!
//! [`Trust::SelfSigned`]: each server has its own self-signed certificate, which no one
//! trusts, and authentication falls back to dialback (XEP-0220) over STARTTLS. jabberd2
//! federates only in this mode; in the `Ca*` modes it just carries a CA-signed
//! certificate (Prosody and ejabberd, loading no dialback then, cannot talk to it).
//!
//! # Processes
//!
//! Each server runs in its own process group with its logs in its own directory, and is
//! killed with its whole group on drop; if the test is panicking the logs are printed
//! (and, for the `Net`, the dnsmasq log), and the files are kept. Everything runs as root
//! (mount namespaces and port 53 need it; CI runs as root), except ejabberd, which runs
//! as the `ejabberd` user because ejabberdctl insists on it.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::clients::{Slixmpp, slixmpp_at};
use super::{unique_temp_dir, write_file};

/// The second octet of every test network: `127.77.N.0/24`.
const NET_OCTET: u8 = 77;
/// The port of the listener on `127.77.N.1` that claims block N (see the module docs).
pub const CLAIM_PORT: u16 = 47_753;
/// The host part of dnsmasq's address in each block.
const DNS_HOST: u8 = 53;
/// The host part of the first server address in each block.
const FIRST_HOST: u8 = 10;
/// How long a server may take to listen after it was started (ejabberd needs the most:
/// an Erlang VM and mnesia on a loaded 2-core machine).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long dnsmasq may take to listen.
const DNS_START_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an admin command (prosodyctl, ejabberdctl) may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The password of the jabberd2 components' router account (loopback, test only).
const JABBERD2_ROUTER_SECRET: &str = "hearth-test-router";
/// The Erlang cookie of every test ejabberd node (loopback, test only).
const ERLANG_COOKIE: &str = "hearth-test-cookie";

/// How servers authenticate each other: which certificates they get, and the s2s policy
/// that follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trust {
    /// Certificates signed by the test CA, which every server trusts, with the EKU
    /// serverAuth only (as public CAs now issue them); valid certificates
    /// required; SASL EXTERNAL only (no dialback). Between Prosody and ejabberd 23.01 this
    /// works one way only: ejabberd refuses such a certificate as a client certificate
    /// ("unsupported certificate purpose"), Prosody accepts it.
    Ca,
    /// Like [`Trust::Ca`], with the EKUs serverAuth and clientAuth: what every peer accepts
    /// for SASL EXTERNAL in both directions.
    CaClientAuth,
    /// Self-signed certificates nobody trusts; dialback over STARTTLS.
    SelfSigned,
}

impl Trust {
    /// Whether certificates are signed by the test CA (and required to be valid).
    pub fn is_ca(self) -> bool {
        matches!(self, Trust::Ca | Trust::CaClientAuth)
    }
}

/// How two servers authenticated an s2s stream ([`Peer::wait_authenticated`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum S2sAuth {
    /// SASL EXTERNAL with the certificate of the TLS layer (XEP-0178).
    External,
    /// Server dialback (XEP-0220).
    Dialback,
}

/// Which server software a [`Peer`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerKind {
    Prosody,
    Ejabberd,
    Jabberd2,
}

impl PeerKind {
    /// The SASL mechanism a client uses on it: SCRAM-SHA-1 where offered (Debian's
    /// Prosody 0.12 has no SCRAM-SHA-256), PLAIN over TLS on jabberd2 (which stores
    /// plain-text passwords and offers no SCRAM).
    pub fn client_mech(self) -> &'static str {
        match self {
            PeerKind::Prosody | PeerKind::Ejabberd => "SCRAM-SHA-1",
            PeerKind::Jabberd2 => "PLAIN",
        }
    }

    /// The Debian package that provides it.
    pub fn package(self) -> &'static str {
        match self {
            PeerKind::Prosody => "prosody",
            PeerKind::Ejabberd => "ejabberd",
            PeerKind::Jabberd2 => "jabberd2",
        }
    }

    /// A program the package installs, to tell whether it is there.
    fn program(self) -> &'static str {
        match self {
            PeerKind::Prosody => "/usr/bin/prosody",
            PeerKind::Ejabberd => "/usr/sbin/ejabberdctl",
            PeerKind::Jabberd2 => "/usr/sbin/jabberd2-router",
        }
    }
}

/// The files of one domain's TLS identity.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The certificate (PEM): signed by the test CA, or self-signed.
    pub cert: PathBuf,
    /// Its private key (PKCS#8 PEM, ECDSA P-256).
    pub key: PathBuf,
    /// Certificate then key in one PEM file (ejabberd's `certfiles`, jabberd2's `pemfile`).
    pub combined: PathBuf,
    /// What a client of this domain trusts: the CA certificate in the `Ca*` modes, the
    /// certificate itself when self-signed.
    pub trust_anchor: PathBuf,
}

/// The test CA and its key, made once per [`Net`].
struct TestCa {
    cert: PathBuf,
    key: PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    fn new(dir: &Path) -> TestCa {
        let key = rcgen::KeyPair::generate().expect("rcgen cannot make a key");
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "hearth federation test CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params);
        let cert = params.self_signed(&key).expect("rcgen cannot sign the CA");
        let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
        write_file(&cert_path, &cert.pem());
        write_file(&key_path, &key.serialize_pem());
        TestCa {
            cert: cert_path,
            key: key_path,
            issuer: rcgen::Issuer::new(params, key),
        }
    }
}

/// Valid from 2020 to 2099: clocks of test machines are never that far off.
fn validity(params: &mut rcgen::CertificateParams) {
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2099, 12, 31);
}

/// The dnsmasq options that publish `domain`'s server at `addr`, s2s port `s2s_port`:
/// the SRV record `_xmpp-server._tcp.DOMAIN` (RFC 6120 §3.2.1) pointing at DOMAIN itself,
/// its A record, and NXDOMAIN for any other name under it (e.g. `_xmpps-server._tcp`,
/// XEP-0368, which none of the peers serves), so nothing waits for an upstream server.
pub fn dns_records(domain: &str, addr: Ipv4Addr, s2s_port: u16) -> Vec<String> {
    vec![
        format!("--host-record={domain},{addr}"),
        format!("--srv-host=_xmpp-server._tcp.{domain},{domain},{s2s_port}"),
        format!("--local=/{domain}/"),
    ]
}

/// A server's place in a [`Net`], made by [`Net::reserve`] (for hearth).
#[derive(Clone, Debug)]
pub struct Slot {
    pub domain: String,
    /// Its own address in the test's block.
    pub addr: Ipv4Addr,
    /// Free on `addr` when reserved.
    pub c2s_port: u16,
    /// Free on `addr` when reserved; the SRV record points here.
    pub s2s_port: u16,
    /// Its certificate and key, and what its clients trust.
    pub creds: Credentials,
}

impl Slot {
    pub fn c2s_addr(&self) -> SocketAddr {
        SocketAddr::from((self.addr, self.c2s_port))
    }

    pub fn s2s_addr(&self) -> SocketAddr {
        SocketAddr::from((self.addr, self.s2s_port))
    }
}

/// dnsmasq and what it publishes, behind the `Net`'s lock.
#[derive(Default)]
struct Dns {
    /// The options of every published domain ([`dns_records`]).
    records: Vec<String>,
    /// The running dnsmasq (own process group).
    child: Option<Child>,
}

/// One test's private network: an address block, a CA, a DNS server, and the files that
/// make a server process use that DNS. See the module docs.
pub struct Net {
    /// N in `127.77.N.0/24`.
    block: u8,
    /// The listener that keeps the block ours (never accepted on).
    _claim: TcpListener,
    /// Everything of this test: CA, dnsmasq log, resolv.conf, hosts, one dir per server.
    dir: PathBuf,
    ca: TestCa,
    /// The host part of the next [`Net::next_addr`].
    next_host: AtomicU8,
    dns: Mutex<Dns>,
    resolv_conf: PathBuf,
    hosts: PathBuf,
    dns_log: PathBuf,
}

impl Net {
    /// Why this machine cannot run federation peers, if it cannot: not root (mount
    /// namespaces, port 53 and other users' processes need it). Tests print it and skip,
    /// like `tests/mdns.rs`; CI runs as root. A missing package is a failure, not a skip.
    pub fn unavailable() -> Option<String> {
        // /proc/self/status: "Uid:\treal\teffective\tsaved\tfs".
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let euid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .and_then(|id| id.parse::<u32>().ok());
        match euid {
            Some(0) => None,
            Some(uid) => Some(format!(
                "federation peers need root (mount namespaces, port 53); running as uid {uid}"
            )),
            None => Some("cannot read the effective uid from /proc/self/status".into()),
        }
    }

    /// Claims a free block, makes the CA, writes resolv.conf and hosts, and starts dnsmasq
    /// (with no domain yet). Fails with the install command if dnsmasq is missing.
    pub fn new() -> Net {
        require_program("/usr/sbin/dnsmasq", "dnsmasq-base");
        require_program("/usr/bin/unshare", "util-linux");
        let (block, claim) = claim_block();
        let dir = unique_temp_dir();
        let ca = TestCa::new(&dir.join("ca"));
        let dns_addr = Ipv4Addr::new(127, NET_OCTET, block, DNS_HOST);
        // One try, one second: a missing answer is a failure to read in the log, not
        // something to wait 5 s × 2 for (glibc's default).
        let resolv_conf = dir.join("resolv.conf");
        write_file(
            &resolv_conf,
            &format!("nameserver {dns_addr}\noptions timeout:1 attempts:2\n"),
        );
        // localhost for Erlang's node names (ejabberd@localhost) and the machine's name,
        // which some programs look up at start; the test domains only through DNS.
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        let hosts = dir.join("hosts");
        write_file(
            &hosts,
            &format!("127.0.0.1 localhost {hostname}\n::1 localhost ip6-localhost\n"),
        );
        let net = Net {
            block,
            _claim: claim,
            dns_log: dir.join("dnsmasq.log"),
            dir,
            ca,
            next_host: AtomicU8::new(FIRST_HOST),
            dns: Mutex::new(Dns::default()),
            resolv_conf,
            hosts,
        };
        net.restart_dns(&mut net.dns.lock().expect("dns lock poisoned"));
        net
    }

    /// A fresh server address in this test's block (`127.77.N.10`, `.11`, …).
    pub fn next_addr(&self) -> Ipv4Addr {
        let host = self.next_host.fetch_add(1, Ordering::Relaxed);
        assert!(host < DNS_HOST, "too many servers in one test network");
        Ipv4Addr::new(127, NET_OCTET, self.block, host)
    }

    /// Where dnsmasq answers (port 53).
    pub fn dns_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(127, NET_OCTET, self.block, DNS_HOST)
    }

    /// The test CA's certificate (PEM): what a server trusts in [`Trust::Ca`] and
    /// [`Trust::CaClientAuth`] modes.
    pub fn ca_cert_path(&self) -> &Path {
        &self.ca.cert
    }

    /// The test CA's private key (PEM), to sign more certificates outside the harness.
    pub fn ca_key_path(&self) -> &Path {
        &self.ca.key
    }

    /// The resolv.conf a server process sees ([`Net::isolated_command`]).
    pub fn resolv_conf_path(&self) -> &Path {
        &self.resolv_conf
    }

    /// The hosts file a server process sees ([`Net::isolated_command`]).
    pub fn hosts_path(&self) -> &Path {
        &self.hosts
    }

    /// The test's directory (kept when the test fails).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes `domain`'s certificate and key under the test directory: signed by the test
    /// CA (SAN = domain; EKU serverAuth only, or serverAuth and clientAuth, see [`Trust`])
    /// or self-signed (EKU serverAuth).
    pub fn credentials(&self, domain: &str, trust: Trust) -> Credentials {
        let dir = self.dir.join("tls");
        let key = rcgen::KeyPair::generate().expect("rcgen cannot make a key");
        let mut params = rcgen::CertificateParams::new(vec![domain.to_string()])
            .unwrap_or_else(|e| panic!("{domain:?} is not a DNS name for a certificate: {e}"));
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, domain);
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        // serverAuth only unless asked: see the module docs.
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        if trust == Trust::CaClientAuth {
            params
                .extended_key_usages
                .push(rcgen::ExtendedKeyUsagePurpose::ClientAuth);
        }
        validity(&mut params);
        let cert = if trust.is_ca() {
            params.use_authority_key_identifier_extension = true;
            params.signed_by(&key, &self.ca.issuer)
        } else {
            params.self_signed(&key)
        }
        .expect("rcgen cannot sign a certificate");
        let creds = Credentials {
            cert: dir.join(format!("{domain}.crt")),
            key: dir.join(format!("{domain}.key")),
            combined: dir.join(format!("{domain}.pem")),
            trust_anchor: if trust.is_ca() {
                self.ca.cert.clone()
            } else {
                dir.join(format!("{domain}.crt"))
            },
        };
        write_file(&creds.cert, &cert.pem());
        write_file(&creds.key, &key.serialize_pem());
        write_file(
            &creds.combined,
            &format!("{}{}", cert.pem(), key.serialize_pem()),
        );
        creds
    }

    /// Everything one more server of this network needs — for hearth: an address, free
    /// c2s and s2s ports on it, `trust`'s certificate for `domain`, and `domain`
    /// published in the DNS (SRV to the s2s port). Start the server with
    /// [`Net::isolated_command`] so that it resolves the other domains the same way.
    pub fn reserve(&self, domain: &str, trust: Trust) -> Slot {
        let addr = self.next_addr();
        let slot = Slot {
            domain: domain.to_string(),
            addr,
            c2s_port: free_port_on(addr),
            s2s_port: free_port_on(addr),
            creds: self.credentials(domain, trust),
        };
        self.add_domain(domain, addr, slot.s2s_port);
        slot
    }

    /// Publishes more dnsmasq records (its `--srv-host=`, `--host-record=` options) and
    /// restarts it: e.g. a `_xmpps-server` (XEP-0368 direct TLS) record.
    pub fn add_records(&self, records: &[String]) {
        let mut dns = self.dns.lock().expect("dns lock poisoned");
        dns.records.extend(records.iter().cloned());
        self.restart_dns(&mut dns);
    }

    /// Publishes `domain` at `addr` with s2s on `s2s_port` ([`dns_records`]) and restarts
    /// dnsmasq with it. For hearth too: give it an address from [`Net::next_addr`].
    pub fn add_domain(&self, domain: &str, addr: Ipv4Addr, s2s_port: u16) {
        let mut dns = self.dns.lock().expect("dns lock poisoned");
        dns.records.extend(dns_records(domain, addr, s2s_port));
        self.restart_dns(&mut dns);
    }

    /// Everything dnsmasq logged: one line per query and answer.
    pub fn dns_log(&self) -> String {
        std::fs::read_to_string(&self.dns_log).unwrap_or_default()
    }

    /// Panics with the DNS log unless some server asked for `domain`'s SRV record: the
    /// proof that the servers resolve through this test's dnsmasq.
    pub fn assert_srv_queried(&self, domain: &str) {
        let needle = format!("query[SRV] _xmpp-server._tcp.{domain} ");
        let log = self.dns_log();
        assert!(
            log.contains(&needle),
            "nobody asked dnsmasq for {needle:?}; its log:\n{log}"
        );
    }

    /// A command that runs `program` in a private mount namespace where `/etc/resolv.conf`
    /// and `/etc/hosts` are this test's (see the module docs); add its arguments with
    /// `.arg`. The network is the machine's. Needs root (CAP_SYS_ADMIN).
    pub fn isolated_command(&self, program: impl AsRef<OsStr>) -> Command {
        // "$1" and "$2" are the files; the rest is the program and its arguments.
        const BIND_AND_EXEC: &str = "mount --bind \"$1\" /etc/resolv.conf && \
             mount --bind \"$2\" /etc/hosts && shift 2 && exec \"$@\"";
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(BIND_AND_EXEC)
            .arg("test-dns")
            .arg(&self.resolv_conf)
            .arg(&self.hosts)
            .arg(program);
        cmd
    }

    fn restart_dns(&self, dns: &mut Dns) {
        if let Some(child) = dns.child.take() {
            kill_group(child);
        }
        let addr = self.dns_addr();
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.dns_log)
            .expect("cannot open the dnsmasq log");
        let mut cmd = Command::new("/usr/sbin/dnsmasq");
        // -k: foreground, logging to stderr (--log-facility=-); no config file, no
        // upstream, no /etc/hosts; NXDOMAIN for private reverse lookups; root stays root
        // (dropping to nobody would gain nothing here); no pid file.
        cmd.args(["-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts"])
            .args(["--bogus-priv", "--log-queries", "--log-facility=-"])
            .args([
                "--user=root",
                "--pid-file=",
                "--bind-interfaces",
                "--port=53",
            ])
            .arg(format!("--listen-address={addr}"))
            .args(&dns.records);
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("cannot dup the dnsmasq log"))
            .stderr(log)
            .process_group(0);
        let mut child = cmd.spawn().expect("cannot start dnsmasq");
        let deadline = Instant::now() + DNS_START_TIMEOUT;
        // dnsmasq listens on TCP as well as UDP: a TCP connect tells it is ready.
        while TcpStream::connect_timeout(&SocketAddr::from((addr, 53)), Duration::from_millis(100))
            .is_err()
        {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "dnsmasq exited with {status} on {addr}; its log:\n{}",
                    self.dns_log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "dnsmasq did not listen on {addr}:53 within {DNS_START_TIMEOUT:?}; log:\n{}",
                self.dns_log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        dns.child = Some(child);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if let Ok(mut dns) = self.dns.lock() {
            if let Some(child) = dns.child.take() {
                kill_group(child);
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "---- dnsmasq log ({}) ----\n{}---- end of dnsmasq log; files kept in {} ----",
                self.dns_log.display(),
                self.dns_log(),
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Finds a free block and claims it (see the module docs): the first N whose claim
/// listener binds and whose DNS address is free, starting at a place that depends on
/// the process and a counter so parallel tests rarely probe the same blocks.
fn claim_block() -> (u8, TcpListener) {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let start = std::process::id() as usize * 7 + NEXT.fetch_add(1, Ordering::Relaxed);
    for i in 0..250 {
        let block = 1 + ((start + i) % 250) as u8;
        let Ok(claim) = TcpListener::bind((Ipv4Addr::new(127, NET_OCTET, block, 1), CLAIM_PORT))
        else {
            continue;
        };
        // Someone else's DNS server there (not one of ours: we hold no claim on it)?
        if UdpSocket::bind((Ipv4Addr::new(127, NET_OCTET, block, DNS_HOST), 53)).is_err() {
            continue;
        }
        return (block, claim);
    }
    panic!("no free test network 127.{NET_OCTET}.N.0/24 (N in 1..=250)");
}

/// SIGKILL to the child's whole process group (it was started with `process_group(0)`),
/// then reaps the child. Group members other than the child are reparented and reaped
/// by init.
fn kill_group(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// Panics with the install command when `path` is missing.
fn require_program(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: run .ci/run, or `apt-get install {package}`"
    );
}

/// A free TCP port on `addr` (bind port 0, read it, close). The address is this test's
/// own, so nothing else should take the port before the server binds it.
fn free_port_on(addr: Ipv4Addr) -> u16 {
    TcpListener::bind((addr, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot bind a port on {addr}: {e}"))
}

/// Runs an admin command to completion within [`ADMIN_TIMEOUT`], killing it past that,
/// and panics with its output unless it succeeded.
fn run_admin(cmd: Command, what: &str) -> String {
    try_admin(cmd, what).unwrap_or_else(|e| panic!("{e}"))
}

/// [`run_admin`], the failure as an error.
fn try_admin(mut cmd: Command, what: &str) -> Result<String, String> {
    let dir = unique_temp_dir();
    let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
    let out = File::create(&out_path).expect("cannot create a temp file");
    let err = File::create(&err_path).expect("cannot create a temp file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what} ({:?}): {e}", cmd.get_program()));
    let deadline = Instant::now() + ADMIN_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                kill_group(child);
                break None;
            }
        }
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    match status {
        Some(s) if s.success() => Ok(stdout),
        _ => Err(format!(
            "{what} failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
            status.map_or("killed after the timeout".to_string(), |s| s.to_string())
        )),
    }
}

/// A user's numeric uid and gid, from `id` (for the files of a server that runs as its
/// own user).
fn user_ids(user: &str) -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, user])
            .output()
            .expect("cannot run id");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no system user {user:?} (is its package installed?)"))
    };
    (id("-u"), id("-g"))
}

/// chown -R.
fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("cannot chown {}: {e}", path.display()));
    if path.is_dir() {
        let entries = std::fs::read_dir(path)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", path.display()));
        for entry in entries.flatten() {
            chown_tree(&entry.path(), uid, gid);
        }
    }
}

/// Escapes text for an XML attribute or element (jabberd2's configs).
fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// A quoted Lua or YAML string (both accept this double-quoted form for paths and names).
fn quoted(s: impl AsRef<OsStr>) -> String {
    let s = s.as_ref().to_string_lossy();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// One server of a [`Net`], running. Killed with its process group on drop.
pub struct Peer {
    kind: PeerKind,
    domain: String,
    addr: Ipv4Addr,
    c2s_port: u16,
    s2s_port: u16,
    trust: Trust,
    /// Config, data and logs of this server.
    dir: PathBuf,
    creds: Credentials,
    /// The server's processes (jabberd2 has four), all in the first one's process group.
    children: Vec<(String, Child)>,
    /// The log files, each with a name for the printout.
    logs: Vec<(String, PathBuf)>,
    /// ejabberd only: the ejabberdctl options that reach this node.
    ejabberdctl: Vec<String>,
    /// jabberd2 only: its SQLite database (accounts are rows there).
    jabberd2_db: Option<PathBuf>,
    /// From start to listening.
    startup: Duration,
}

impl Peer {
    /// Starts a `kind` server for `domain` on `addr` (from [`Net::next_addr`]) with
    /// `trust`'s certificates and s2s policy, publishes it in the `Net`'s DNS, and waits
    /// until its c2s and s2s ports listen.
    pub fn start(kind: PeerKind, net: &Net, domain: &str, addr: Ipv4Addr, trust: Trust) -> Peer {
        require_program(kind.program(), kind.package());
        let dir = net.dir.join(domain);
        std::fs::create_dir_all(&dir).expect("cannot create the server's dir");
        let creds = net.credentials(domain, trust);
        let mut peer = Peer {
            kind,
            domain: domain.to_string(),
            addr,
            c2s_port: free_port_on(addr),
            s2s_port: free_port_on(addr),
            trust,
            dir,
            creds,
            children: Vec::new(),
            logs: Vec::new(),
            ejabberdctl: Vec::new(),
            jabberd2_db: None,
            startup: Duration::ZERO,
        };
        net.add_domain(domain, addr, peer.s2s_port);
        let started = Instant::now();
        match kind {
            PeerKind::Prosody => peer.start_prosody(net),
            PeerKind::Ejabberd => peer.start_ejabberd(net),
            PeerKind::Jabberd2 => peer.start_jabberd2(net),
        }
        peer.wait_ready();
        peer.startup = started.elapsed();
        eprintln!(
            "{kind:?} {domain} on {addr} (c2s {}, s2s {}) ready in {:?}",
            peer.c2s_port, peer.s2s_port, peer.startup
        );
        peer
    }

    /// Starts one process of this server: in the `Net`'s DNS namespace, output to
    /// `log_name` in the server's dir, in the process group of the server's first process.
    fn spawn(&mut self, name: &str, mut cmd: Command, log_name: &str) {
        let log_path = self.dir.join(log_name);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("cannot open a server log");
        if !self.logs.iter().any(|(_, p)| *p == log_path) {
            self.logs.push((log_name.to_string(), log_path));
        }
        let group = self.children.first().map_or(0, |(_, c)| c.id() as i32);
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("cannot dup a log file"))
            .stderr(log)
            .process_group(group);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({:?}): {e}", cmd.get_program()));
        self.children.push((name.to_string(), child));
    }

    /// Polls until the c2s and s2s ports accept connections; panics with the logs if a
    /// process exits or [`START_TIMEOUT`] passes.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let ports = [self.c2s_addr(), self.s2s_addr()];
        self.wait_listening(&ports, deadline);
    }

    fn wait_listening(&mut self, addrs: &[SocketAddr], deadline: Instant) {
        loop {
            self.assert_running();
            if addrs
                .iter()
                .all(|a| TcpStream::connect_timeout(a, Duration::from_millis(200)).is_ok())
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{:?} {} did not listen on {addrs:?} within {START_TIMEOUT:?}; logs:\n{}",
                self.kind,
                self.domain,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Panics with the logs if any of the server's processes has exited.
    pub fn assert_running(&mut self) {
        for (name, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                let name = name.clone();
                panic!(
                    "{:?} {}: {name} exited with {status}; logs:\n{}",
                    self.kind,
                    self.domain,
                    self.log()
                );
            }
        }
    }

    // ---------------------------------------------------------------- Prosody

    fn start_prosody(&mut self, net: &Net) {
        let config = self.dir.join("prosody.cfg.lua");
        write_file(&config, &self.prosody_config(net));
        let mut cmd = net.isolated_command("/usr/bin/prosody");
        cmd.arg("-F").arg("--config").arg(&config);
        self.spawn("prosody", cmd, "prosody.log");
    }

    /// Prosody 0.12's config. mod_s2s_auth_certs (always loaded) checks the peer's
    /// certificate against `ssl.cafile`; mod_saslauth offers and uses SASL EXTERNAL on s2s
    /// when the certificate is valid; mod_dialback is loaded for self-signed mode only.
    fn prosody_config(&self, net: &Net) -> String {
        let dialback = if self.trust.is_ca() {
            ""
        } else {
            " \"dialback\";"
        };
        format!(
            r#"-- Prosody peer of a federation test (tests/common/peers.rs).
run_as_root = true
daemonize = false
pidfile = {pid}
data_path = {data}
-- Everything: the test prints it when it fails. Lookups, TLS and s2s auth show at debug.
log = {{ debug = "*console" }}

interfaces = {{ {addr} }}
c2s_ports = {{ {c2s} }}
s2s_ports = {{ {s2s} }}
c2s_direct_tls_ports = {{ }}
s2s_direct_tls_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
component_ports = {{ }}

modules_enabled = {{ "roster"; "saslauth"; "tls"; "disco"; "ping"; "posix"; "pep";{dialback} }}
-- No rate limits (mod_limits is not loaded), no idle timeouts of clients.
modules_disabled = {{ "c2s_timeout" }}

authentication = "internal_hashed"
c2s_require_encryption = true
s2s_require_encryption = true
-- Ca: a valid certificate is required (no dialback is loaded, so SASL EXTERNAL).
-- SelfSigned: an invalid one is fine and dialback authenticates.
s2s_secure_auth = {secure}
-- Fail fast when a peer does not answer.
s2s_timeout = 15

-- libunbound (Prosody's resolver) answers NXDOMAIN itself for the RFC 6761 name test.
-- (a default local zone): "transparent" lets it ask the test's dnsmasq. ("nodefault"
-- would be the documented way, but libunbound ignores it when set through
-- ub_ctx_set_option, which is all lua-unbound offers.)
unbound = {{
	options = {{ ["local-zone:"] = "test. transparent" }};
}}

-- Where Prosody looks for more certificates: none there (all are given in ssl below).
certificates = {certs}
ssl = {{
	certificate = {cert};
	key = {key};
	cafile = {ca};
}}

VirtualHost {domain}
"#,
            pid = quoted(self.dir.join("prosody.pid")),
            data = quoted(self.dir.join("data")),
            addr = quoted(self.addr.to_string()),
            c2s = self.c2s_port,
            s2s = self.s2s_port,
            secure = self.trust.is_ca(),
            certs = quoted(&self.dir),
            cert = quoted(&self.creds.cert),
            key = quoted(&self.creds.key),
            ca = quoted(net.ca_cert_path()),
            domain = quoted(&self.domain),
        )
    }

    // ---------------------------------------------------------------- ejabberd

    fn start_ejabberd(&mut self, net: &Net) {
        let (uid, gid) = user_ids("ejabberd");
        let config = self.dir.join("ejabberd.yml");
        write_file(&config, &self.ejabberd_config(net));
        // The node's own distribution port instead of epmd (see the module docs).
        static NODES: AtomicUsize = AtomicUsize::new(0);
        let node = format!(
            "hearth-test-{}-{}@localhost",
            std::process::id(),
            NODES.fetch_add(1, Ordering::Relaxed)
        );
        let dist_port = free_port_on(Ipv4Addr::LOCALHOST);
        let ctl_config = self.dir.join("ejabberdctl.cfg");
        write_file(
            &ctl_config,
            &format!(
                "# ejabberdctl settings of one test node (tests/common/peers.rs).\n\
                 ERLANG_NODE={node}\n\
                 ERL_DIST_PORT={dist_port}\n\
                 # Distribution on loopback only; no busy-waiting schedulers (PEERS.md).\n\
                 ERL_OPTIONS=\"-setcookie {ERLANG_COOKIE} \
                 -kernel inet_dist_use_interface {{127,0,0,1}} \
                 +sbwt none +sbwtdcpu none +sbwtdio none\"\n\
                 EJABBERD_BYPASS_WARNINGS=true\n"
            ),
        );
        std::fs::create_dir_all(self.dir.join("spool")).expect("cannot create the spool");
        std::fs::create_dir_all(self.dir.join("logs")).expect("cannot create the log dir");
        self.ejabberdctl = vec![
            "--config-dir".into(),
            self.dir.to_string_lossy().into(),
            "--config".into(),
            config.to_string_lossy().into(),
            "--ctl-config".into(),
            ctl_config.to_string_lossy().into(),
            "--spool".into(),
            self.dir.join("spool").to_string_lossy().into(),
            "--logs".into(),
            self.dir.join("logs").to_string_lossy().into(),
        ];
        // ejabberdctl runs the VM as the ejabberd user (as root it would `su`, which
        // starts a PAM session): its files are its own.
        chown_tree(&self.dir, uid, gid);
        let mut cmd = net.isolated_command("setpriv");
        cmd.args([
            "--reuid",
            "ejabberd",
            "--regid",
            "ejabberd",
            "--init-groups",
        ])
        .arg("/usr/sbin/ejabberdctl")
        .args(&self.ejabberdctl)
        .arg("foreground")
        .env("HOME", &self.dir);
        self.spawn("ejabberd", cmd, "ejabberd.out");
        self.logs
            .push(("ejabberd.log".into(), self.dir.join("logs/ejabberd.log")));
        self.logs
            .push(("error.log".into(), self.dir.join("logs/error.log")));
    }

    /// ejabberd 23.01's config. In Ca mode mod_s2s_dialback is not loaded, so a peer must
    /// authenticate with SASL EXTERNAL and a certificate valid for `ca_file`; in
    /// SelfSigned mode dialback authenticates whatever the certificate.
    fn ejabberd_config(&self, net: &Net) -> String {
        let dialback = if self.trust.is_ca() {
            ""
        } else {
            "  mod_s2s_dialback: {}\n"
        };
        format!(
            r#"# ejabberd peer of a federation test (tests/common/peers.rs).
hosts:
  - {domain}
loglevel: info
log_rotate_count: 0
certfiles:
  - {pem}
ca_file: {ca}
acme:
  auto: false

listen:
  -
    port: {c2s}
    ip: {addr}
    module: ejabberd_c2s
    starttls_required: true
    max_stanza_size: 524288
    # The default backlog of 5 drops concurrent connects (PEERS.md).
    backlog: 128
  -
    port: {s2s}
    ip: {addr}
    module: ejabberd_s2s_in
    max_stanza_size: 524288
    backlog: 128

# TLS on every s2s stream, as Prosody and hearth require it.
s2s_use_starttls: required
s2s_access: all
# Fail fast: a few seconds per DNS try and per connection attempt.
s2s_dns_timeout: 5
s2s_dns_retries: 1
outgoing_s2s_timeout: 10
outgoing_s2s_families:
  - ipv4
s2s_max_retry_delay: 5

auth_method: internal

acl:
  local:
    user_regexp: ""

access_rules:
  local:
    allow: local
  c2s:
    allow: all

shaper_rules:
  c2s_shaper: none
  s2s_shaper: none

modules:
  mod_roster: {{}}
  mod_disco: {{}}
  mod_ping: {{}}
  mod_offline: {{}}
  mod_caps: {{}}
  mod_pubsub:
    plugins: ["flat", "pep"]
{dialback}"#,
            domain = quoted(&self.domain),
            pem = quoted(&self.creds.combined),
            ca = quoted(net.ca_cert_path()),
            c2s = self.c2s_port,
            s2s = self.s2s_port,
            addr = quoted(self.addr.to_string()),
        )
    }

    // ---------------------------------------------------------------- jabberd2

    fn start_jabberd2(&mut self, net: &Net) {
        let modules = jabberd2_module_dir();
        let router_port = free_port_on(self.addr);
        let db = self.dir.join("jabberd2.db");
        jabberd2_create_db(&db);
        self.jabberd2_db = Some(db.clone());
        let router_users = self.dir.join("router-users.xml");
        write_file(
            &router_users,
            &format!(
                "<users><user><name>jabberd</name><secret>{}</secret></user></users>\n",
                xml_escape(JABBERD2_ROUTER_SECRET)
            ),
        );
        let e = |p: &Path| xml_escape(&p.to_string_lossy());
        let addr = self.addr.to_string();
        // Each component connects to the router as `jabberd`, retrying while it starts.
        let router = format!(
            "<router><ip>{addr}</ip><port>{router_port}</port><user>jabberd</user>\
             <pass>{}</pass><retry><init>20</init><lost>20</lost><sleep>1</sleep></retry>\
             </router>",
            xml_escape(JABBERD2_ROUTER_SECRET)
        );
        let log = "<log type='stdout'/>";
        let configs = [
            (
                "router",
                format!(
                    "<router><id>router</id>{log}\
                     <local><ip>{addr}</ip><port>{router_port}</port>\
                     <users>{users}</users></local>\
                     <check><interval>60</interval><keepalive>0</keepalive></check>\
                     <io><max_fds>1024</max_fds><limits><bytes>0</bytes>\
                     <connects>0</connects></limits></io>\
                     <aci><acl type='all'><user>jabberd</user></acl></aci></router>\n",
                    users = e(&router_users),
                ),
            ),
            (
                "sm",
                format!(
                    "<sm><id>sm</id>{router}{log}<local><id>{domain}</id></local>\
                     <storage><path>{modules}</path><driver>sqlite</driver>\
                     <sqlite><dbname>{db}</dbname><busy-timeout>2000</busy-timeout></sqlite>\
                     </storage>{chains}\
                     <discovery><identity><category>server</category><type>im</type>\
                     <name>jabberd2</name></identity></discovery></sm>\n",
                    domain = xml_escape(&self.domain),
                    modules = e(&modules),
                    db = e(&db),
                    chains = JABBERD2_SM_CHAINS,
                ),
            ),
            (
                "c2s",
                format!(
                    "<c2s><id>c2s</id>{router}{log}\
                     <local><id realm='{domain}' pemfile='{pem}' require-starttls='yes'>\
                     {domain}</id><ip>{addr}</ip><port>{c2s}</port></local>\
                     <io><max_fds>1024</max_fds><limits><bytes>0</bytes><stanzas>0</stanzas>\
                     <connects>0</connects><stanzasize>0</stanzasize></limits>\
                     <check><interval>0</interval><idle>0</idle><keepalive>0</keepalive>\
                     </check></io>\
                     <authreg><path>{modules}</path><module>sqlite</module>\
                     <mechanisms><sasl><plain/></sasl></mechanisms>\
                     <ssl-mechanisms><sasl><plain/></sasl></ssl-mechanisms>\
                     <sqlite><dbname>{db}</dbname><busy-timeout>2000</busy-timeout>\
                     <password_type><plaintext/></password_type></sqlite></authreg></c2s>\n",
                    domain = xml_escape(&self.domain),
                    pem = e(&self.creds.combined),
                    c2s = self.c2s_port,
                    modules = e(&modules),
                    db = e(&db),
                ),
            ),
            (
                "s2s",
                // Dialback only (jabberd2 has no SASL EXTERNAL for s2s), over STARTTLS
                // with `pemfile`. Short DNS caching and no "bad host" memory, so a retry
                // sees the current DNS.
                format!(
                    "<s2s><id>s2s</id>{router}{log}\
                     <local><ip>{addr}</ip><port>{s2s}</port>\
                     <secret>hearth-test-dialback</secret>\
                     <pemfile>{pem}</pemfile><cachain>{ca}</cachain></local>\
                     <io><max_fds>1024</max_fds><limits><stanzasize>0</stanzasize></limits>\
                     </io>\
                     <check><interval>5</interval><queue>30</queue><retry>10</retry>\
                     <idle>86400</idle><keepalive>0</keepalive><dnscache>30</dnscache></check>\
                     <lookup><srv>xmpp-server</srv><min-ttl>0</min-ttl><max-ttl>60</max-ttl>\
                     <etc-hosts-ttl>0</etc-hosts-ttl><bad-host-timeout>0</bad-host-timeout>\
                     </lookup><out-conn-reuse/><security/></s2s>\n",
                    s2s = self.s2s_port,
                    pem = e(&self.creds.combined),
                    ca = e(net.ca_cert_path()),
                ),
            ),
        ];
        for (name, xml) in &configs {
            write_file(&self.dir.join(format!("{name}.xml")), xml);
        }
        // The router first: the others connect to it.
        for (name, _) in &configs {
            let mut cmd = net.isolated_command(format!("/usr/sbin/jabberd2-{name}"));
            cmd.arg("-c").arg(self.dir.join(format!("{name}.xml")));
            self.spawn(name, cmd, &format!("jabberd2-{name}.log"));
            if *name == "router" {
                let router_addr = SocketAddr::from((self.addr, router_port));
                self.wait_listening(&[router_addr], Instant::now() + START_TIMEOUT);
            }
        }
    }

    // ---------------------------------------------------------------- accounts

    /// Creates `name@domain` with the server's own tool: `prosodyctl register`,
    /// `ejabberdctl register` (against this node, through its distribution port), or a row
    /// in jabberd2's authreg table (jabberd2 has no admin command).
    pub fn add_user(&self, name: &str, password: &str) {
        match self.kind {
            PeerKind::Prosody => {
                let mut cmd = Command::new("prosodyctl");
                cmd.arg("--config")
                    .arg(self.dir.join("prosody.cfg.lua"))
                    .args(["register", name, &self.domain, password]);
                run_admin(cmd, "prosodyctl register");
            }
            PeerKind::Ejabberd => {
                let command = || {
                    let mut cmd = Command::new("setpriv");
                    cmd.args([
                        "--reuid",
                        "ejabberd",
                        "--regid",
                        "ejabberd",
                        "--init-groups",
                    ])
                    .arg("/usr/sbin/ejabberdctl")
                    .args(&self.ejabberdctl)
                    .args(["register", name, &self.domain, password])
                    .env("HOME", &self.dir);
                    cmd
                };
                // ejabberd listens before its database tables exist (more so with
                // mod_pubsub, on a busy machine): `{no_exists,passwd,…}` means "not yet".
                for _ in 0..20 {
                    match try_admin(command(), "ejabberdctl register") {
                        Ok(_) => return,
                        Err(e) if e.contains("no_exists") => {
                            std::thread::sleep(Duration::from_millis(500))
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                run_admin(command(), "ejabberdctl register");
            }
            PeerKind::Jabberd2 => {
                let db = self
                    .jabberd2_db
                    .as_ref()
                    .expect("jabberd2 without a database");
                jabberd2_add_user(db, name, &self.domain, password);
            }
        }
    }

    // ---------------------------------------------------------------- accessors

    pub fn kind(&self) -> PeerKind {
        self.kind
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn trust(&self) -> Trust {
        self.trust
    }

    /// `name@domain`.
    pub fn jid(&self, name: &str) -> String {
        format!("{name}@{}", self.domain)
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn c2s_addr(&self) -> SocketAddr {
        SocketAddr::from((self.addr, self.c2s_port))
    }

    pub fn s2s_addr(&self) -> SocketAddr {
        SocketAddr::from((self.addr, self.s2s_port))
    }

    pub fn credentials(&self) -> &Credentials {
        &self.creds
    }

    /// What a client trusts to connect to this server ([`Credentials::trust_anchor`]).
    pub fn client_cafile(&self) -> &Path {
        &self.creds.trust_anchor
    }

    /// From start to listening.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// A slixmpp client (tests/clients/xmpp_client.py) for `user` on this server, with
    /// the mechanism the server offers ([`PeerKind::client_mech`]).
    pub fn slixmpp(&self, user: &str, password: &str) -> Slixmpp {
        slixmpp_at(
            self.c2s_addr(),
            self.client_cafile(),
            &self.jid(user),
            password,
            self.kind.client_mech(),
        )
    }

    /// All the server's logs so far, each under a header.
    pub fn log(&self) -> String {
        let mut all = String::new();
        for (name, path) in &self.logs {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            all.push_str(&format!(
                "---- {:?} {} {name} ({}) ----\n{text}",
                self.kind,
                self.domain,
                path.display()
            ));
            if !text.ends_with('\n') {
                all.push('\n');
            }
        }
        all
    }

    /// Waits until one of the server's logs contains `needle`; panics with the logs after
    /// `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log_contains(needle) {
            assert!(
                Instant::now() < deadline,
                "{:?} {} did not log {needle:?} within {timeout:?}; logs:\n{}",
                self.kind,
                self.domain,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until this server's logs show its s2s streams to and from `remote` (one
    /// each way) authenticated with `auth`; panics with the logs after `timeout`. Each
    /// peer says it its own way:
    ///
    /// - ejabberd: `Accepted inbound|outbound s2s EXTERNAL|dialback authentication`.
    /// - jabberd2 (dialback only): `incoming|outgoing route 'me/remote' is now valid`.
    /// - Prosody: `Accepting SASL EXTERNAL identity from` (in), `SASL EXTERNAL with …
    ///   succeeded` (out); for dialback, a completed stream each way and neither of those.
    pub fn wait_authenticated(&self, remote: &str, auth: S2sAuth, timeout: Duration) {
        let me = &self.domain;
        let (must, must_not): (Vec<String>, Vec<String>) = match (self.kind, auth) {
            (PeerKind::Ejabberd, _) => {
                let how = match auth {
                    S2sAuth::External => "EXTERNAL",
                    S2sAuth::Dialback => "dialback",
                };
                (
                    vec![
                        format!("Accepted inbound s2s {how} authentication {remote} -> {me}"),
                        format!("Accepted outbound s2s {how} authentication {me} -> {remote}"),
                    ],
                    vec![],
                )
            }
            (PeerKind::Jabberd2, S2sAuth::Dialback) => (
                vec![
                    format!("incoming route '{me}/{remote}' is now valid"),
                    format!("outgoing route '{me}/{remote}' is now valid"),
                ],
                vec![],
            ),
            (PeerKind::Jabberd2, S2sAuth::External) => {
                panic!("jabberd2 has no SASL EXTERNAL for s2s")
            }
            (PeerKind::Prosody, S2sAuth::External) => (
                vec![
                    format!("Accepting SASL EXTERNAL identity from {remote}"),
                    format!("SASL EXTERNAL with {remote} succeeded"),
                ],
                vec![],
            ),
            (PeerKind::Prosody, S2sAuth::Dialback) => (
                vec![
                    format!("Incoming s2s connection {remote}->{me} complete"),
                    format!("Outgoing s2s connection {me}->{remote} complete"),
                ],
                vec![
                    format!("Accepting SASL EXTERNAL identity from {remote}"),
                    format!("SASL EXTERNAL with {remote} succeeded"),
                ],
            ),
        };
        for line in &must {
            self.wait_for_log(line, timeout);
        }
        for line in &must_not {
            assert!(
                !self.log_contains(line),
                "{:?} {me} logged {line:?}: not {auth:?}; logs:\n{}",
                self.kind,
                self.log()
            );
        }
    }

    /// Whether any of the server's logs contains `needle`.
    pub fn log_contains(&self, needle: &str) -> bool {
        self.logs.iter().any(|(_, p)| {
            std::fs::read_to_string(p)
                .map(|t| t.contains(needle))
                .unwrap_or(false)
        })
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // All processes share the first one's group.
        let mut children = std::mem::take(&mut self.children).into_iter();
        if let Some((_, first)) = children.next() {
            kill_group(first);
        }
        for (_, mut child) in children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let stderr = std::io::stderr();
            let mut err = stderr.lock();
            let _ = writeln!(
                err,
                "{}---- end of {:?} {} logs ----",
                self.log(),
                self.kind,
                self.domain
            );
        }
    }
}

// ---------------------------------------------------------------- jabberd2 storage

/// The sm module chains: Debian's defaults less what needs tables or features these
/// tests do not use (vCards, private storage, privacy lists, vacation, announcements,
/// AMP, last activity). mod_offline stays: besides storing messages, it is what delivers
/// a bare-JID message or a subscription request to the online sessions.
const JABBERD2_SM_CHAINS: &str = "<modules>\
    <chain id='sess-start'><module>status</module></chain>\
    <chain id='sess-end'><module>status</module></chain>\
    <chain id='in-sess'><module>validate</module><module>status</module>\
    <module>roster</module><module>iq-ping</module><module>disco</module>\
    <module>offline</module><module>presence</module><module>deliver</module></chain>\
    <chain id='out-sess'/>\
    <chain id='in-router'><module>session</module><module>validate</module>\
    <module>presence</module></chain>\
    <chain id='out-router'/>\
    <chain id='pkt-sm'><module>iq-ping</module><module>iq-time</module>\
    <module>iq-version</module><module>disco</module><module>status</module>\
    <module>presence</module></chain>\
    <chain id='pkt-user'><module>roster</module><module>presence</module>\
    <module>disco</module><module>deliver</module><module>offline</module></chain>\
    <chain id='pkt-router'><module>session</module><module>disco</module></chain>\
    <chain id='user-load'><module>active</module><module>roster</module></chain>\
    <chain id='user-unload'/>\
    <chain id='user-create'><module>active</module></chain>\
    <chain id='user-delete'><module>active</module><module>offline</module>\
    <module>roster</module><module>status</module></chain>\
    <chain id='disco-extend'><module>iq-version</module></chain>\
    </modules>";

/// The tables of jabberd2's `db-setup.sqlite` (shipped only as documentation, which
/// minimal images drop) that the authreg and the sm modules above use.
const JABBERD2_SCHEMA: &str = r#"
CREATE TABLE "authreg" ("username" TEXT NOT NULL, "realm" TEXT NOT NULL, "password" TEXT);
CREATE TABLE "active" ("collection-owner" TEXT NOT NULL,
    "object-sequence" INTEGER PRIMARY KEY, "time" INTEGER NOT NULL DEFAULT 0);
CREATE TABLE "roster-items" ("collection-owner" TEXT NOT NULL,
    "object-sequence" INTEGER PRIMARY KEY, "jid" TEXT NOT NULL, "name" TEXT,
    "to" BOOLEAN NOT NULL, "from" BOOLEAN NOT NULL, "ask" INTEGER NOT NULL);
CREATE TABLE "roster-groups" ("collection-owner" TEXT NOT NULL,
    "object-sequence" INTEGER PRIMARY KEY, "jid" TEXT NOT NULL, "group" TEXT NOT NULL);
CREATE TABLE "queue" ("collection-owner" TEXT NOT NULL,
    "object-sequence" INTEGER PRIMARY KEY, "xml" TEXT NOT NULL);
CREATE TABLE "status" ("collection-owner" TEXT NOT NULL,
    "object-sequence" INTEGER PRIMARY KEY, "status" TEXT NOT NULL, "show" TEXT,
    "last-login" INTEGER DEFAULT '0', "last-logout" INTEGER DEFAULT '0', "xml" TEXT);
"#;

fn jabberd2_create_db(path: &Path) {
    let db = rusqlite::Connection::open(path).expect("cannot create jabberd2's database");
    db.execute_batch(JABBERD2_SCHEMA)
        .expect("cannot create jabberd2's tables");
}

/// An account: the authreg row c2s checks the password against (plain text, as
/// configured), and the `active` row by which the sm knows the user exists.
fn jabberd2_add_user(path: &Path, name: &str, domain: &str, password: &str) {
    let db = rusqlite::Connection::open(path).expect("cannot open jabberd2's database");
    db.busy_timeout(Duration::from_secs(5))
        .expect("cannot set a busy timeout");
    db.execute(
        "INSERT INTO authreg (username, realm, password) VALUES (?1, ?2, ?3)",
        (name, domain, password),
    )
    .expect("cannot add a jabberd2 account");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    db.execute(
        "INSERT INTO active (\"collection-owner\", time) VALUES (?1, ?2)",
        (format!("{name}@{domain}"), now),
    )
    .expect("cannot mark the jabberd2 account active");
}

/// Where jabberd2's storage and authreg modules are: `/usr/lib/<multiarch>/jabberd2`.
fn jabberd2_module_dir() -> PathBuf {
    let found = std::fs::read_dir("/usr/lib").ok().and_then(|entries| {
        entries
            .flatten()
            .map(|e| e.path().join("jabberd2"))
            .find(|p| p.join("storage_sqlite.so").exists())
    });
    found.expect("no /usr/lib/*/jabberd2/storage_sqlite.so: `apt-get install jabberd2`")
}
