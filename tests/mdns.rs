//! hearth found on a LAN by mDNS/DNS-SD (RFC 6762, RFC 6763) and logged in to with only
//! what was found. Two network namespaces made by the test and joined by a veth pair
//! play the Pi and a phone: hearth serves in one, and python-zeroconf (an independent
//! implementation, `tests/clients/mdns_browse.py`) browses in the other, resolves the
//! host, and has slixmpp log in at the discovered address, port and domain. Then an
//! address is added to the Pi's interface (the browser must see it announced) and hearth
//! is stopped (the browser must see the goodbyes).
//!
//! Creating namespaces needs root (CI has it); elsewhere the test prints why it skips.
//! No packet leaves the two namespaces.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const PI_ADDR: &str = "10.77.0.1";
const PHONE_ADDR: &str = "10.77.0.2";
const LATE_ADDR: &str = "10.77.0.3";
const PASSWORD: &str = "found on the lan";

/// Runs `ip ARGS`; the error text if it fails.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Two namespaces joined by a veth pair; deleted on drop.
struct Lan {
    pi: String,
    phone: String,
    pi_if: String,
}

impl Lan {
    fn create() -> Result<Lan, String> {
        let id = std::process::id();
        let lan = Lan {
            pi: format!("hearth-pi-{id}"),
            phone: format!("hearth-phone-{id}"),
            pi_if: "lan0".into(),
        };
        ip(&["netns", "add", &lan.pi])?;
        ip(&["netns", "add", &lan.phone])?;
        // Created inside the Pi's namespace, the peer moved straight to the phone's:
        // the host's own interfaces are never touched.
        ip(&[
            "-n", &lan.pi, "link", "add", &lan.pi_if, "type", "veth", "peer", "name", "lan0",
            "netns", &lan.phone,
        ])?;
        for (ns, addr) in [(&lan.pi, PI_ADDR), (&lan.phone, PHONE_ADDR)] {
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "lan0",
            ])?;
            ip(&["-n", ns, "link", "set", "lan0", "multicast", "on", "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            // No default route in a fresh namespace: say where multicast goes.
            ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", "lan0"])?;
        }
        Ok(lan)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.pi]);
        let _ = ip(&["netns", "del", &self.phone]);
    }
}

/// Why this machine cannot run the test, if it cannot.
fn missing_prerequisite() -> Option<String> {
    let python = Command::new("/usr/bin/python3")
        .args(["-c", "import zeroconf, slixmpp"])
        .output();
    match python {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return Some(format!(
                "python3-zeroconf or python3-slixmpp missing: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        Err(e) => return Some(format!("no /usr/bin/python3: {e}")),
    }
    None
}

/// A child process killed on drop, with its log printed if the test failed.
struct Proc {
    child: Child,
    log: Option<PathBuf>,
    name: &'static str,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            if let Some(log) = &self.log {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                eprintln!("---- {} log ----\n{text}---- end ----", self.name);
            }
        }
    }
}

fn wait_for_log(p: &mut Proc, needle: &str, timeout: Duration) {
    let log = p.log.clone().unwrap();
    let deadline = Instant::now() + timeout;
    loop {
        if std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(needle)
        {
            return;
        }
        if let Some(s) = p.child.try_wait().unwrap() {
            panic!("{} exited with {s} before logging {needle:?}", p.name);
        }
        assert!(Instant::now() < deadline, "no {needle:?} in the log");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// JSON lines from the browser, by a reader thread.
struct Events {
    rx: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Events {
    fn next_matching(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        // Services may be found in either order: look at what came already first.
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return v.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(_) => panic!(
                    "no {what} within {timeout:?}; browser said: {:#?}",
                    self.seen
                ),
            }
        }
    }
}

fn field<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

#[test]
fn found_on_the_lan_and_logged_in_to_with_what_was_found() {
    if let Some(why) = missing_prerequisite() {
        println!("SKIPPED: {why}");
        return;
    }
    let lan = match Lan::create() {
        Ok(lan) => lan,
        Err(e) => {
            println!("SKIPPED: cannot create network namespaces here ({e})");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let config = dir.join("hearth.toml");
    // The well-known ports: the namespace is the Pi's own network.
    std::fs::write(
        &config,
        format!(
            "domain = \"pi.local\"\ndata_dir = \"data\"\nallow_root = true\n\
             mdns_interfaces = [\"{}\"]\n[c2s]\nlisten = [\"0.0.0.0:5222\"]\n\
             direct_tls_listen = [\"0.0.0.0:5223\"]\n",
            lan.pi_if
        ),
    )
    .unwrap();
    let hearth = env!("CARGO_BIN_EXE_hearth");
    let pw = dir.join("pw");
    std::fs::write(&pw, PASSWORD).unwrap();
    let out = Command::new(hearth)
        .args(["user", "add", "alice", "--password-file"])
        .arg(&pw)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let log = dir.join("hearth.log");
    // `ip netns exec` enters the namespace and execs hearth: same pid, so SIGTERM
    // reaches hearth itself.
    let mut server = Proc {
        child: Command::new("ip")
            .args(["netns", "exec", &lan.pi, hearth, "serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info,mdns_sd=debug")
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
        log: Some(log),
        name: "hearth",
    };
    wait_for_log(&mut server, "mDNS: advertising", Duration::from_secs(20));
    let cert = dir.join("data/tls/cert.pem");

    let browser_script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/mdns_browse.py");
    let mut browser = Proc {
        child: Command::new("ip")
            .args([
                "netns",
                "exec",
                &lan.phone,
                "/usr/bin/python3",
                browser_script,
            ])
            .args(["--user", "alice", "--timeout", "90", "--password-file"])
            .arg(&pw)
            .arg("--cafile")
            .arg(&cert)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        log: None,
        name: "browser",
    };
    let (tx, rx) = mpsc::channel();
    let stdout = browser.child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if tx.send(v).is_err() {
                    break;
                }
            }
        }
    });
    let mut events = Events { rx, seen: vec![] };

    // Both services, each with its port, the host name and the domain from TXT; and a
    // login through each using only that.
    for (stype, port) in [
        ("_xmpp-client._tcp.local.", 5222),
        ("_xmpps-client._tcp.local.", 5223),
    ] {
        let found = events.next_matching(&format!("{stype} found"), Duration::from_secs(30), |v| {
            field(v, "event") == "found" && field(v, "type") == stype
        });
        assert_eq!(found["port"], port, "{found}");
        assert_eq!(field(&found, "host"), "pi.local.", "{found}");
        assert_eq!(field(&found, "domain"), "pi.local", "{found}");
        assert_eq!(found["addresses"], serde_json::json!([PI_ADDR]), "{found}");
        let login = events.next_matching(&format!("{stype} login"), Duration::from_secs(60), |v| {
            field(v, "event") == "login" && field(v, "type") == stype
        });
        assert_eq!(login["ok"], true, "{login}");
        assert!(
            field(&login, "jid").starts_with("alice@pi.local/"),
            "{login}"
        );
    }

    // An address that appears later (DHCP, Wi-Fi) is announced without a restart.
    ip(&[
        "-n",
        &lan.pi,
        "addr",
        "add",
        &format!("{LATE_ADDR}/24"),
        "dev",
        &lan.pi_if,
    ])
    .unwrap();
    events.next_matching("the new address", Duration::from_secs(30), |v| {
        field(v, "event") == "addresses"
            && v["addresses"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == LATE_ADDR))
    });

    // Stopping hearth withdraws both services (goodbye packets).
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    for stype in ["_xmpp-client._tcp.local.", "_xmpps-client._tcp.local."] {
        events.next_matching(&format!("{stype} goodbye"), Duration::from_secs(15), |v| {
            field(v, "event") == "removed" && field(v, "type") == stype
        });
    }
    let status = server.child.wait().unwrap();
    assert!(status.success(), "hearth exited with {status}");
    let _ = browser.child.wait();
}

/// A network where mDNS has nothing to work with (no multicast interface at all, and
/// the configured interface does not exist): hearth says so at most once and serves.
#[test]
fn serves_on_when_mdns_has_no_network() {
    let ns = format!("hearth-nomc-{}", std::process::id());
    if let Err(e) = ip(&["netns", "add", &ns]) {
        println!("SKIPPED: cannot create network namespaces here ({e})");
        return;
    }
    struct Ns(String);
    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = ip(&["netns", "del", &self.0]);
        }
    }
    let ns = Ns(ns);
    ip(&["-n", &ns.0, "link", "set", "lo", "up"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hearth.toml");
    std::fs::write(
        &config,
        "domain = \"pi.local\"\ndata_dir = \"data\"\nallow_root = true\n\
         mdns_interfaces = [\"lan9\"]\n[c2s]\nlisten = [\"0.0.0.0:5222\"]\n\
         direct_tls_listen = []\n",
    )
    .unwrap();
    let log = dir.path().join("hearth.log");
    let mut server = Proc {
        child: Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.0,
                env!("CARGO_BIN_EXE_hearth"),
                "serve",
                "--config",
            ])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
        log: Some(log.clone()),
        name: "hearth",
    };
    wait_for_log(&mut server, "serving pi.local", Duration::from_secs(20));
    // Let mdns-sd look for interfaces a few times (every 5 s), then talk to hearth.
    std::thread::sleep(Duration::from_secs(6));
    let probe = Command::new("ip")
        .args(["netns", "exec", &ns.0, "/usr/bin/python3", "-c"])
        .arg(
            "import socket; s = socket.create_connection(('127.0.0.1', 5222), timeout=5); \
             s.sendall(b\"<?xml version='1.0'?><stream:stream to='pi.local' version='1.0' \
             xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>\"); \
             print(s.recv(4096).decode())",
        )
        .output()
        .unwrap();
    let reply = String::from_utf8_lossy(&probe.stdout);
    assert!(
        reply.contains("<stream:stream"),
        "no stream header: {reply} {probe:?}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let warnings = text
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("mDNS"))
        .count();
    assert!(warnings <= 1, "mDNS warned {warnings} times:\n{text}");
    assert!(
        Command::new("kill")
            .args(["-TERM", &server.child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert!(server.child.wait().unwrap().success());
}
