//! LAN advertisement with multicast DNS (RFC 6762) and DNS-SD (RFC 6763), so phones and
//! laptops on the same network find the server with no DNS set-up.
//!
//! What is advertised:
//! - `_xmpp-client._tcp` for the STARTTLS port (RFC 6120 §3.2.1 names this SRV service)
//!   and `_xmpps-client._tcp` for the direct-TLS port (XEP-0368 §3), each with the XMPP
//!   domain in a `domain=` TXT entry (RFC 6763 §6), so a browser learns which JIDs the
//!   server hosts, not only where it is;
//! - A/AAAA answers for the SRV target host: the XMPP domain itself when it is a `.local`
//!   name (then `alice@kitchen.local` resolves on the LAN), else `<hostname>.local`.
//!
//! mdns-sd runs its own thread (sockets, probing, answering, the 5-second check for
//! address changes after a DHCP renewal, a Wi-Fi reconnect or an interface that comes
//! up late); this module adds one more that only logs what that thread reports. Nothing
//! here touches the async executor, so mDNS can never stall client traffic. When
//! multicast is unavailable hearth logs it once and serves on. [`Advertiser::stop`]
//! withdraws every record (goodbye packets with TTL 0, RFC 6762 §10.1).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mdns_sd::{DaemonEvent, IfKind, ServiceDaemon, ServiceInfo};

/// The DNS-SD service type for client connections with STARTTLS (RFC 6120 §3.2.1).
pub const SERVICE_STARTTLS: &str = "_xmpp-client._tcp.local.";
/// The DNS-SD service type for client connections with direct TLS (XEP-0368 §3).
pub const SERVICE_DIRECT_TLS: &str = "_xmpps-client._tcp.local.";
/// The TXT key carrying the XMPP domain.
pub const TXT_DOMAIN: &str = "domain";

/// How long shutdown waits for each goodbye to be sent.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);

/// What to advertise; built from the configuration and the bound listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The XMPP domain (normalized, no trailing dot).
    pub domain: String,
    /// The machine's host name, for the SRV target when the domain is not `.local`.
    pub hostname: Option<String>,
    /// Bound STARTTLS listeners.
    pub starttls: Vec<SocketAddr>,
    /// Bound direct-TLS listeners.
    pub direct_tls: Vec<SocketAddr>,
    /// Interfaces to advertise on; empty means all.
    pub interfaces: Vec<String>,
}

/// One DNS-SD service to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// `_xmpp-client._tcp.local.` or `_xmpps-client._tcp.local.`
    pub service_type: &'static str,
    /// The instance name people see in a browser.
    pub instance: String,
    /// The SRV target, ending in `.local.`.
    pub host: String,
    pub port: u16,
    /// `None`: follow the host's addresses; `Some`: exactly these (listeners bound
    /// to specific addresses).
    pub addresses: Option<Vec<IpAddr>>,
}

/// Why nothing is advertised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NothingToAdvertise {
    /// Every listener is on a loopback address: nobody on the LAN could connect.
    LoopbackOnly,
}

impl std::fmt::Display for NothingToAdvertise {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NothingToAdvertise::LoopbackOnly => {
                f.write_str("every listener is on a loopback address")
            }
        }
    }
}

/// The SRV target: the domain when it is a `.local` name (RFC 6762 §3), else the
/// first label of the host name under `.local`, else `hearth.local`.
pub fn host_name(domain: &str, hostname: Option<&str>) -> String {
    if domain.ends_with(".local") && !domain.starts_with('[') {
        return format!("{domain}.");
    }
    let label = hostname
        .map(str::trim)
        .and_then(|h| h.split('.').next())
        .filter(|l| {
            !l.is_empty()
                && *l != "localhost"
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .unwrap_or("hearth");
    format!("{}.local.", label.to_ascii_lowercase())
}

/// The services to register for `settings`: the first usable listener of each kind.
pub fn plan(settings: &Settings) -> Result<Vec<Service>, NothingToAdvertise> {
    let host = host_name(&settings.domain, settings.hostname.as_deref());
    let mut out = Vec::new();
    for (service_type, listeners) in [
        (SERVICE_STARTTLS, &settings.starttls),
        (SERVICE_DIRECT_TLS, &settings.direct_tls),
    ] {
        let usable: Vec<&SocketAddr> = listeners.iter().filter(|a| !a.ip().is_loopback()).collect();
        let Some(first) = usable.first() else {
            continue;
        };
        // DNS-SD has one port per instance: advertise the first listener's.
        let port = first.port();
        let on_port = usable.iter().filter(|a| a.port() == port);
        let addresses = if on_port.clone().any(|a| a.ip().is_unspecified()) {
            None
        } else {
            Some(on_port.map(|a| a.ip()).collect())
        };
        // Instance names are shown to people; dots in them would need escaping
        // (RFC 6763 §4.3), which some browsers mangle.
        let label = host.split('.').next().unwrap_or("hearth");
        out.push(Service {
            service_type,
            instance: format!("hearth on {label}"),
            host: host.clone(),
            port,
            addresses,
        });
    }
    if out.is_empty() {
        Err(NothingToAdvertise::LoopbackOnly)
    } else {
        Ok(out)
    }
}

/// A running advertisement. Dropping it without [`Advertiser::stop`] leaves the records
/// to expire by TTL instead of withdrawing them.
pub struct Advertiser {
    daemon: ServiceDaemon,
    /// Full DNS-SD names of the registered instances, to withdraw at stop.
    registered: Vec<String>,
}

impl Advertiser {
    /// Starts advertising, or logs why not and returns `None`; never fails the server.
    pub fn start(settings: &Settings) -> Option<Advertiser> {
        let services = match plan(settings) {
            Ok(s) => s,
            Err(why) => {
                log::info!("mDNS: not advertising: {why}");
                return None;
            }
        };
        let daemon = match ServiceDaemon::new() {
            Ok(d) => d,
            Err(e) => {
                log::warn!("mDNS unavailable ({e}); serving without LAN advertisement");
                return None;
            }
        };
        let kinds: Vec<IfKind> = settings
            .interfaces
            .iter()
            .map(|n| IfKind::Name(n.clone()))
            .collect();
        if !kinds.is_empty() {
            let r = daemon
                .disable_interface(IfKind::All)
                .and_then(|()| daemon.enable_interface(kinds.clone()));
            if let Err(e) = r {
                log::warn!("mDNS: cannot limit to {:?}: {e}", settings.interfaces);
            }
        }
        match daemon.monitor() {
            Ok(events) => {
                let t = std::thread::Builder::new()
                    .name("hearth-mdns".into())
                    .spawn(move || log_events(events));
                if let Err(e) = t {
                    log::debug!("mDNS: no thread to log its events: {e}");
                }
            }
            Err(e) => log::debug!("mDNS: no event monitor: {e}"),
        }
        let mut registered = Vec::new();
        for s in services {
            let txt = [(TXT_DOMAIN, settings.domain.as_str())];
            let addrs: Vec<IpAddr> = s.addresses.clone().unwrap_or_default();
            let info = match ServiceInfo::new(
                s.service_type,
                &s.instance,
                &s.host,
                addrs.as_slice(),
                s.port,
                &txt[..],
            ) {
                Ok(i) => i,
                Err(e) => {
                    log::warn!("mDNS: cannot describe {}: {e}", s.service_type);
                    continue;
                }
            };
            let mut info = if s.addresses.is_none() {
                info.enable_addr_auto()
            } else {
                info
            };
            if !kinds.is_empty() {
                info.set_interfaces(kinds.clone());
            }
            let fullname = info.get_fullname().to_owned();
            match daemon.register(info) {
                Ok(()) => {
                    log::info!(
                        "mDNS: advertising {fullname} on port {} (host {})",
                        s.port,
                        s.host
                    );
                    registered.push(fullname);
                }
                Err(e) => log::warn!("mDNS: cannot register {fullname}: {e}"),
            }
        }
        Some(Advertiser { daemon, registered })
    }

    /// Withdraws every record (goodbye packets) and stops mdns-sd's thread. Blocks for
    /// at most about a second per record: call it once clients are gone.
    pub fn stop(self) {
        for name in &self.registered {
            match self.daemon.unregister(name) {
                Ok(done) => {
                    if done.recv_timeout(GOODBYE_TIMEOUT).is_err() {
                        log::debug!("mDNS: no confirmation of the goodbye for {name}");
                    }
                }
                Err(e) => log::debug!("mDNS: cannot withdraw {name}: {e}"),
            }
        }
        if let Ok(done) = self.daemon.shutdown() {
            let _ = done.recv_timeout(GOODBYE_TIMEOUT);
        }
        log::info!("mDNS: records withdrawn");
    }
}

/// Logs what mdns-sd's thread reports, until it stops. Errors are logged at warn once
/// (a host without multicast would otherwise repeat them every few seconds).
fn log_events(events: mdns_sd::Receiver<DaemonEvent>) {
    let mut warned = false;
    while let Ok(ev) = events.recv() {
        match ev {
            DaemonEvent::IpAdd(a) => log::info!("mDNS: address {a} appeared; announcing it"),
            DaemonEvent::IpDel(a) => log::info!("mDNS: address {a} went away"),
            DaemonEvent::NameChange(c) => log::warn!(
                "mDNS: name conflict on the LAN: {} is now {}",
                c.original,
                c.new_name
            ),
            DaemonEvent::Error(e) if !warned => {
                warned = true;
                log::warn!("mDNS: {e}; serving on, the LAN may not find hearth");
            }
            other => log::debug!("mDNS: {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(starttls: &[&str], direct: &[&str]) -> Settings {
        Settings {
            domain: "kitchen.local".into(),
            hostname: Some("pi4\n".into()),
            starttls: starttls.iter().map(|a| a.parse().unwrap()).collect(),
            direct_tls: direct.iter().map(|a| a.parse().unwrap()).collect(),
            interfaces: vec![],
        }
    }

    #[test]
    fn host_name_is_the_local_domain_or_the_hostname() {
        assert_eq!(host_name("kitchen.local", Some("pi")), "kitchen.local.");
        assert_eq!(host_name("example.org", Some("Pi4\n")), "pi4.local.");
        assert_eq!(host_name("example.org", Some("pi.lan")), "pi.local.");
        assert_eq!(host_name("example.org", Some("localhost")), "hearth.local.");
        assert_eq!(host_name("example.org", Some("bad_name")), "hearth.local.");
        assert_eq!(host_name("example.org", None), "hearth.local.");
        assert_eq!(host_name("192.168.1.5", Some("pi")), "pi.local.");
    }

    #[test]
    fn wildcard_listeners_follow_the_hosts_addresses() {
        let p = plan(&settings(&["[::]:5222"], &["[::]:5223"])).unwrap();
        assert_eq!(
            p,
            vec![
                Service {
                    service_type: SERVICE_STARTTLS,
                    instance: "hearth on kitchen".into(),
                    host: "kitchen.local.".into(),
                    port: 5222,
                    addresses: None,
                },
                Service {
                    service_type: SERVICE_DIRECT_TLS,
                    instance: "hearth on kitchen".into(),
                    host: "kitchen.local.".into(),
                    port: 5223,
                    addresses: None,
                },
            ]
        );
    }

    #[test]
    fn specific_listeners_advertise_their_addresses() {
        let p = plan(&settings(
            &["127.0.0.1:5222", "192.0.2.7:5222", "[2001:db8::7]:5222"],
            &[],
        ))
        .unwrap();
        assert_eq!(p.len(), 1, "no direct-TLS listener, no _xmpps-client");
        assert_eq!(p[0].port, 5222);
        assert_eq!(
            p[0].addresses,
            Some(vec![
                "192.0.2.7".parse().unwrap(),
                "2001:db8::7".parse().unwrap()
            ])
        );
    }

    #[test]
    fn loopback_only_is_not_advertised() {
        assert_eq!(
            plan(&settings(&["127.0.0.1:5222"], &["[::1]:5223"])),
            Err(NothingToAdvertise::LoopbackOnly)
        );
    }

    #[test]
    fn service_types_fit_dns_sd() {
        // RFC 6763 §7.2: the service name is at most 15 characters after the underscore.
        for t in [SERVICE_STARTTLS, SERVICE_DIRECT_TLS] {
            let name = t.split('.').next().unwrap();
            assert!(name.len() <= 16, "{t}");
            assert!(t.ends_with("._tcp.local."));
        }
        let info = ServiceInfo::new(
            SERVICE_STARTTLS,
            "hearth on kitchen",
            "kitchen.local.",
            "",
            5222,
            &[(TXT_DOMAIN, "kitchen.local")][..],
        )
        .unwrap();
        assert_eq!(
            info.get_fullname(),
            "hearth on kitchen._xmpp-client._tcp.local."
        );
        assert_eq!(info.get_property_val_str(TXT_DOMAIN), Some("kitchen.local"));
    }
}
