//! RFC 6120 §3.2 and XEP-0368 lookups end to end against a real name server: dnsmasq
//! (Debian package `dnsmasq-base`, installed by .ci/run) serving SRV and address records
//! from its command line on a loopback address of its own. Skips, saying so, when
//! dnsmasq is not installed.
//!
//! Each test has its own address in 127.0.53.0/24 and a free port, since the tests run
//! in parallel (as threads under `cargo test`, as processes under `cargo nextest`).

use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hearth::net::dns::{Candidate, DnsError, Resolver, Srv, SrvRecord};

/// dnsmasq's path: on PATH, or in the sbin directories a non-root PATH lacks.
fn find_dnsmasq() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("dnsmasq"))
        .find(|p| p.is_file())
}

/// A dnsmasq in the foreground, killed when dropped.
struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free for both UDP and TCP on `ip` (dnsmasq serves both).
fn free_port(ip: [u8; 4]) -> u16 {
    for _ in 0..20 {
        let udp = UdpSocket::bind(SocketAddr::from((ip, 0))).expect("bind a UDP port");
        let port = udp.local_addr().expect("local address").port();
        if TcpListener::bind(SocketAddr::from((ip, port))).is_ok() {
            return port;
        }
    }
    panic!("no free port on {ip:?}");
}

/// Starts dnsmasq on `ip` with only the records in `records` (its `--srv-host=` and
/// `--host-record=` options); every other name under `.test` is NXDOMAIN (`--local`).
/// None when dnsmasq is not installed.
fn start(ip: [u8; 4], records: &[String]) -> Option<Dnsmasq> {
    let Some(dnsmasq) = find_dnsmasq() else {
        println!("SKIPPED: dnsmasq not found (Debian package dnsmasq-base)");
        return None;
    };
    let port = free_port(ip);
    let listen = IpAddr::from(ip);
    let child = Command::new(&dnsmasq)
        .args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--bind-interfaces",
            "--pid-file=",
            "--log-facility=-",
            "--local=/test/",
        ])
        .arg(format!("--listen-address={listen}"))
        .arg(format!("--port={port}"))
        .args(records)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", dnsmasq.display()));
    let mut server = Dnsmasq {
        child,
        addr: SocketAddr::new(listen, port),
    };
    wait_ready(&mut server);
    Some(server)
}

/// Until dnsmasq answers (NXDOMAIN for a name it does not have), or it exits.
fn wait_ready(server: &mut Dnsmasq) {
    let probe =
        Resolver::with_servers(vec![server.addr]).with_timeout(Duration::from_millis(100), 1);
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            let mut log = String::new();
            if let Some(mut stderr) = server.child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut stderr, &mut log);
            }
            panic!("dnsmasq exited ({status}):\n{log}");
        }
        if smol::block_on(probe.srv("_probe._tcp.ready.test")) == Ok(Srv::NoRecords) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "dnsmasq did not answer within 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn resolver(server: &Dnsmasq) -> Resolver {
    Resolver::with_servers(vec![server.addr]).with_timeout(Duration::from_secs(2), 2)
}

fn candidate(host: &str, port: u16, direct_tls: bool) -> Candidate {
    Candidate {
        host: host.into(),
        port,
        direct_tls,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

#[test]
fn s2s_candidates_from_dnsmasq() {
    let records = [
        // Both services, mixed priorities (XEP-0368 §3): a (direct TLS) first.
        "--srv-host=_xmpps-server._tcp.example.test,a.example.test,5270,5,0",
        "--srv-host=_xmpp-server._tcp.example.test,c.example.test,5269,20,0",
        "--srv-host=_xmpp-server._tcp.example.test,b.example.test,5269,10,0",
        "--host-record=a.example.test,192.0.2.10,2001:db8::10",
        "--host-record=b.example.test,192.0.2.11",
        // No SRV at all: the domain itself on 5269.
        "--host-record=fallback.test,192.0.2.30,2001:db8::30",
        // xmpp-server decidedly not available (target "."): no fallback.
        "--srv-host=_xmpp-server._tcp.closed.test",
        "--host-record=closed.test,192.0.2.40",
        // Direct TLS only: "." for STARTTLS, records for xmpps.
        "--srv-host=_xmpp-server._tcp.tlsonly.test",
        "--srv-host=_xmpps-server._tcp.tlsonly.test,xmpp.tlsonly.test,443,0,0",
    ]
    .map(String::from);
    let Some(server) = start([127, 0, 53, 1], &records) else {
        return;
    };
    let resolver = resolver(&server);
    smol::block_on(async {
        let example = resolver.s2s_candidates("example.test").await;
        assert_eq!(
            example,
            Ok(vec![
                candidate("a.example.test", 5270, true),
                candidate("b.example.test", 5269, false),
                candidate("c.example.test", 5269, false),
            ])
        );
        let first = &example.expect("candidates")[0];
        assert_eq!(
            resolver.addrs(first).await,
            Ok(vec![
                SocketAddr::new(ip("2001:db8::10"), 5270),
                SocketAddr::new(ip("192.0.2.10"), 5270),
            ])
        );
        assert_eq!(
            resolver.ips("b.example.test").await,
            Ok(vec![ip("192.0.2.11")])
        );
        assert_eq!(
            resolver.ips("c.example.test").await,
            Err(DnsError::NoAddresses("c.example.test".into()))
        );
        assert_eq!(
            resolver.srv("_xmpp-server._tcp.example.test").await,
            Ok(Srv::Records(vec![
                SrvRecord {
                    priority: 20,
                    weight: 0,
                    port: 5269,
                    target: "c.example.test".into()
                },
                SrvRecord {
                    priority: 10,
                    weight: 0,
                    port: 5269,
                    target: "b.example.test".into()
                },
            ]))
        );

        assert_eq!(
            resolver.s2s_candidates("FALLBACK.test.").await,
            Ok(vec![candidate("fallback.test", 5269, false)])
        );
        assert_eq!(
            resolver.ips("fallback.test").await,
            Ok(vec![ip("2001:db8::30"), ip("192.0.2.30")])
        );

        assert_eq!(
            resolver.s2s_candidates("closed.test").await,
            Err(DnsError::NotOffered)
        );
        assert_eq!(
            resolver.s2s_candidates("tlsonly.test").await,
            Ok(vec![candidate("xmpp.tlsonly.test", 443, true)])
        );

        // NXDOMAIN for both services: the fallback, whose address lookup then fails.
        let nowhere = resolver.s2s_candidates("nowhere.test").await;
        assert_eq!(nowhere, Ok(vec![candidate("nowhere.test", 5269, false)]));
        assert_eq!(
            resolver.ips("nowhere.test").await,
            Err(DnsError::NoAddresses("nowhere.test".into()))
        );
    });
}

/// 60 AAAA records do not fit in the 1232 octets advertised over UDP: dnsmasq truncates,
/// the resolver asks again over TCP, and keeps 32 addresses.
#[test]
fn large_answer_over_tcp_from_dnsmasq() {
    let records: Vec<String> = (1..=60)
        .map(|i| format!("--host-record=many.example.test,192.0.2.{i},2001:db8::{i:x}"))
        .collect();
    let Some(server) = start([127, 0, 53, 2], &records) else {
        return;
    };
    let resolver = resolver(&server);
    let ips = smol::block_on(resolver.ips("many.example.test")).expect("addresses");
    assert_eq!(ips.len(), 32);
    assert_eq!(ips.iter().filter(|ip| ip.is_ipv6()).count(), 16);
    assert!(ips[0].is_ipv6() && ips[1].is_ipv4(), "{ips:?}");
}
