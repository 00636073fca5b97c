//! MQTT for sensors (issue 21, "MQTT in") end to end: real MQTT clients — mosquitto_pub
//! (Debian's mosquitto-clients) and paho-mqtt (python3-paho-mqtt,
//! tests/clients/mqtt_client.py) — publish Tasmota- and ESPHome-shaped messages over TLS
//! and plain MQTT, 3.1.1 and 5, and a household member on slixmpp sees the device's
//! presence with its status and telemetry values, then `unavailable` when it leaves or
//! its will applies. Then bad input on raw sockets: wrong passwords, malformed and
//! oversized packets, silence, a flood — each answered as MQTT says and closed, while
//! another MQTT client and an XMPP user carry on.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::client::Conn;
use common::clients::{RunningClient, python, slixmpp};
use common::{Server, ServerOpts, free_port};
use serde_json::Value;

const PW: &str = "sensor password";
const WAIT: Duration = Duration::from_secs(20);

struct Mqtt {
    server: Server,
    plain: SocketAddr,
    tls: SocketAddr,
}

/// A server with MQTT on (plain and TLS), alice and the thermometer in the household.
fn start(extra: &str) -> Mqtt {
    let plain: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let tls: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let server = Server::start(ServerOpts {
        extra_toml: format!(
            "\n[mqtt]\nenabled = true\nallow_plain = true\nlisten = [\"{plain}\"]\n\
             tls_listen = [\"{tls}\"]\ncoalesce_ms = 300\n{extra}"
        ),
        ..ServerOpts::default()
    });
    server.add_user("alice", PW);
    hearth(&server, &["household", "add", "alice"], None);
    for d in ["thermo", "plug"] {
        add_device(&server, d);
    }
    // The household takes effect when the running server notices it (it polls).
    wait_for_log(&server, "household: 3 joined");
    Mqtt { server, plain, tls }
}

/// Runs `hearth ARGS --config …` against the test server, `stdin` piped in; panics on
/// failure.
fn hearth(server: &Server, args: &[&str], stdin: Option<&str>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(args)
        .arg("--config")
        .arg(server.config_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "hearth {args:?}: {out:?}");
}

/// A device account in the household (`hearth device add NAME --household`); the owner
/// then sets the tests' password on it (`hearth user passwd`), so every login here
/// uses `PW`.
fn add_device(server: &Server, name: &str) {
    let file = server.scratch_dir().join(format!("{name}.pw"));
    let file = file.to_str().unwrap().to_owned();
    hearth(
        server,
        &[
            "device",
            "add",
            name,
            "--household",
            "--password-file",
            &file,
        ],
        None,
    );
    hearth(
        server,
        &["user", "passwd", name, "--password-file", "-"],
        Some(&format!("{PW}\n")),
    );
}

fn wait_for_log(server: &Server, needle: &str) {
    let deadline = Instant::now() + WAIT;
    while !server.log().contains(needle) {
        assert!(Instant::now() < deadline, "no {needle:?} in the log");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// alice on slixmpp, watching `device`'s presence until `status` (then unavailable).
fn watch(m: &Mqtt, device: &str, status: &str) -> RunningClient {
    let contact = m.server.jid(device);
    let mut c = slixmpp(&m.server, "alice", PW, "SCRAM-SHA-256").spawn(&[
        "telemetry",
        "--contact",
        &contact,
        "--expect-status",
        status,
        "--expect-unavailable",
    ]);
    c.wait_for_event("ready", WAIT);
    c
}

fn mosquitto_pub(m: &Mqtt, args: &[&str], tls: bool) -> std::process::Output {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-q", "1"]);
    if tls {
        cmd.args(["-p", &m.tls.port().to_string(), "--cafile"])
            .arg(m.server.cert_path())
            // The certificate names test.local, not 127.0.0.1: no host name check, the
            // chain is still verified against the pinned certificate.
            .arg("--insecure");
    } else {
        cmd.args(["-p", &m.plain.port().to_string()]);
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .output()
        .expect("mosquitto_pub (apt-get install mosquitto-clients)")
}

fn paho(m: &Mqtt, tls: bool, args: &[&str]) -> RunningClient {
    let script =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/mqtt_client.py");
    let mut cmd = Command::new(python());
    cmd.arg(script).args(["--user", "thermo", "--password", PW]);
    if tls {
        cmd.args(["--tls", "--insecure", "--port", &m.tls.port().to_string()])
            .arg("--cafile")
            .arg(m.server.cert_path());
    } else {
        cmd.args(["--port", &m.plain.port().to_string()]);
    }
    cmd.args(args);
    RunningClient::command(cmd)
}

fn device_presences(run: &common::clients::ClientRun) -> Vec<&Value> {
    run.events
        .iter()
        .filter(|e| e["event"] == "device_presence")
        .collect()
}

#[test]
fn tasmota_over_tls_and_plain_v311_and_v5_reaches_a_household_member() {
    let m = start("");
    let tasmota = r#"{"Time":"2026-12-05T01:00:00","AM2301":{"Temperature":21.5,"Humidity":48.0},"TempUnit":"C"}"#;
    for (version, tls, status) in [
        ("mqttv311", true, "21.5 °C · 48 %"),
        ("mqttv5", false, "22 °C · 47.5 %"),
    ] {
        let alice = watch(&m, "thermo", status);
        let payload = if tls {
            tasmota.to_owned()
        } else {
            tasmota.replace("21.5", "22").replace("48.0", "47.5")
        };
        let out = mosquitto_pub(
            &m,
            &[
                "-V",
                version,
                "-u",
                "thermo",
                "-P",
                PW,
                "-i",
                "tasmota_ABC123",
                "-r",
                "-t",
                "tele/thermo/SENSOR",
                "-m",
                &payload,
            ],
            tls,
        );
        assert!(out.status.success(), "{version}: {out:?}");
        let run = alice.finish();
        run.assert_ok();
        let seen = run.expect_event("device_status");
        assert_eq!(
            seen["values"],
            serde_json::json!([
                {"name": "temperature", "unit": "°C", "value": status.split(' ').next().unwrap()},
                {"name": "humidity", "unit": "%", "value": if tls { "48" } else { "47.5" }},
            ]),
            "{run}"
        );
        // mosquitto_pub said DISCONNECT: unavailable, the last presence seen.
        let all = device_presences(&run);
        assert_eq!(all.last().unwrap()["type"], "unavailable", "{run}");
    }
    let log = m.server.log();
    assert!(log.contains("logged in as thermo@test.local/mqtt"), "{log}");
    // Never a payload above trace.
    assert!(!log.contains("AM2301"), "{log}");
}

#[test]
fn esphome_over_paho_v5_coalesces_and_its_will_is_unavailable() {
    let m = start("");
    let alice = watch(&m, "thermo", "21.5 °C · 48 %");
    let mqtt = paho(
        &m,
        true,
        &[
            "--v5",
            "--will",
            "thermo/status=offline",
            "--subscribe",
            "thermo/switch/relay/command",
            "--publish",
            "thermo/status=online",
            "--publish",
            r#"homeassistant/sensor/thermo/temperature/config={"unit_of_measurement":"°C","stat_t":"thermo/sensor/temperature/state"}"#,
            "--publish",
            r#"homeassistant/sensor/thermo/humidity/config={"unit_of_measurement":"%"}"#,
            "--publish",
            "thermo/sensor/temperature/state=21.5",
            "--publish",
            "thermo/sensor/humidity/state=48",
            "--linger",
            "1.5",
            "--end",
            "drop",
        ],
    );
    let run = alice.finish();
    let mqtt = mqtt.finish();
    assert_eq!(mqtt.code(), Some(0), "{mqtt}");
    assert_eq!(
        mqtt.expect_event("suback")["granted"],
        serde_json::json!([1])
    );
    run.assert_ok();
    let all = device_presences(&run);
    // The birth message (no values yet), one presence for both readings, the will.
    let with_values: Vec<_> = all
        .iter()
        .filter(|p| p["values"].as_array().is_some_and(|v| !v.is_empty()))
        .collect();
    // Both readings in every presence that carries any: none went out alone. (The same
    // presence may come twice: the household's watcher re-sends presence when it notices
    // members added just before.)
    assert!(!with_values.is_empty(), "{run}");
    for p in &with_values {
        assert_eq!(
            p["values"].as_array().unwrap().len(),
            2,
            "readings coalesce: {run}"
        );
    }
    assert_eq!(all.last().unwrap()["type"], "unavailable", "{run}");
    let log = m.server.log();
    assert!(log.contains("will on thermo/status applies"), "{log}");
}

#[test]
fn paho_v311_plain_tasmota_lwt() {
    let m = start("");
    let alice = watch(&m, "plug", "12 W · 230 V");
    let mqtt = {
        let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/clients/mqtt_client.py");
        let mut cmd = Command::new(python());
        cmd.arg(script)
            .args(["--user", "plug@test.local", "--password", PW])
            .args(["--port", &m.plain.port().to_string()])
            .args(["--will", "tele/plug/LWT=Offline"])
            .args(["--subscribe", "cmnd/plug/#"])
            .args(["--publish", "tele/plug/LWT=Online"])
            .args(["--publish", r#"tele/plug/STATE={"POWER":"ON"}"#])
            .args([
                "--publish",
                r#"tele/plug/SENSOR={"ENERGY":{"Power":12,"Voltage":230}}"#,
            ])
            .args(["--linger", "1", "--end", "drop"]);
        RunningClient::command(cmd)
    };
    let run = alice.finish();
    let mqtt = mqtt.finish();
    assert_eq!(mqtt.code(), Some(0), "{mqtt}");
    run.assert_ok();
    assert_eq!(
        device_presences(&run).last().unwrap()["type"],
        "unavailable",
        "{run}"
    );
}

// ---- raw MQTT ----

fn varint(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    varint(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

fn s(b: &[u8]) -> Vec<u8> {
    let mut v = (b.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(b);
    v
}

/// CONNECT with user and password (level 4 or 5).
fn connect(level: u8, user: &str, pw: &str, keep_alive: u16) -> Vec<u8> {
    let mut body = s(b"MQTT");
    body.extend_from_slice(&[level, 0b1100_0010]);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    if level == 5 {
        body.push(0);
    }
    body.extend(s(b"raw-client"));
    body.extend(s(user.as_bytes()));
    body.extend(s(pw.as_bytes()));
    packet(0x10, &body)
}

fn publish(level: u8, topic: &str, qos: u8, id: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = s(topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&id.to_be_bytes());
    }
    if level == 5 {
        body.push(0);
    }
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1), &body)
}

struct Raw(TcpStream);

impl Raw {
    fn open(addr: SocketAddr) -> Raw {
        let t = TcpStream::connect(addr).unwrap();
        t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Raw(t)
    }

    fn login(addr: SocketAddr, level: u8, user: &str) -> Raw {
        let mut r = Raw::open(addr);
        r.send(&connect(level, user, PW, 60));
        let (first, body) = r.read().expect("CONNACK");
        assert_eq!(first, 0x20);
        assert_eq!(body[1], 0, "accepted");
        r
    }

    fn send(&mut self, b: &[u8]) {
        self.0.write_all(b).unwrap();
    }

    /// The next packet (first byte, body), `None` at the end of the stream.
    fn read(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut first = [0u8; 1];
        match self.0.read(&mut first) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("read: {e}"),
        }
        let mut len = 0usize;
        for i in 0..4 {
            let mut b = [0u8; 1];
            self.0.read_exact(&mut b).unwrap();
            len |= usize::from(b[0] & 0x7f) << (7 * i);
            if b[0] & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0u8; len];
        self.0.read_exact(&mut body).unwrap();
        Some((first[0], body))
    }

    fn expect_closed(&mut self) {
        assert_eq!(self.read(), None, "expected the connection closed");
    }

    fn ping(&mut self) {
        self.send(&[0xc0, 0]);
        assert_eq!(self.read(), Some((0xd0, vec![])));
    }
}

/// alice over XMPP, to show an XMPP user is untouched.
fn xmpp_alice(m: &Mqtt) -> Conn {
    Conn::login(
        m.server.c2s_addr(),
        m.server.domain(),
        &m.server.cert_path(),
        "alice",
        PW,
        Some("laptop"),
    )
}

#[test]
fn wrong_passwords_get_the_connack_code_and_the_close() {
    let m = start("");
    // 3.1.1: 0x04; 5: 0x86 (with an empty property list).
    let mut r = Raw::open(m.plain);
    r.send(&connect(4, "thermo", "wrong", 60));
    assert_eq!(r.read(), Some((0x20, vec![0, 0x04])));
    r.expect_closed();
    let mut r = Raw::open(m.plain);
    r.send(&connect(5, "thermo", "wrong", 60));
    assert_eq!(r.read(), Some((0x20, vec![0, 0x86, 0])));
    r.expect_closed();
    // An account of another domain, no such account: the same answer.
    let mut r = Raw::open(m.plain);
    r.send(&connect(4, "thermo@elsewhere.example", PW, 60));
    assert_eq!(r.read(), Some((0x20, vec![0, 0x04])));
    let mut r = Raw::open(m.plain);
    r.send(&connect(4, "nobody", PW, 60));
    assert_eq!(r.read(), Some((0x20, vec![0, 0x04])));
    // A person's account, with its right password: MQTT is for device accounts only
    // (3.1.1: 0x05 not authorized; 5: 0x87), and the phone's password crossed the LAN
    // for nothing, so the log says why.
    let mut r = Raw::open(m.plain);
    r.send(&connect(4, "alice", PW, 60));
    assert_eq!(r.read(), Some((0x20, vec![0, 0x05])));
    r.expect_closed();
    let mut r = Raw::open(m.plain);
    r.send(&connect(5, "alice", PW, 60));
    assert_eq!(r.read(), Some((0x20, vec![0, 0x87, 0])));
    r.expect_closed();
    assert!(m.server.log().contains("alice is not a device account"));
    // mosquitto_pub reports it.
    let out = mosquitto_pub(
        &m,
        &[
            "-u",
            "thermo",
            "-P",
            "wrong",
            "-t",
            "tele/thermo/SENSOR",
            "-m",
            "{}",
        ],
        true,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(err.contains("bad user name or password"), "{err}");
    // The throttle: further failures from this address wait; the right password still
    // gets in (after its delay), well within the connect timeout.
    let t = Instant::now();
    let mut r = Raw::open(m.plain);
    r.send(&connect(4, "thermo", "wrong", 60));
    assert_eq!(r.read(), Some((0x20, vec![0, 0x04])));
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    let mut ok = Raw::login(m.plain, 4, "thermo");
    ok.ping();
    let log = m.server.log();
    assert!(!log.contains("wrong"), "no password in the log: {log}");
}

#[test]
fn bad_packets_close_only_their_connection() {
    let m = start("");
    let mut bystander = Raw::login(m.tls_less(), 5, "plug");
    let mut alice = xmpp_alice(&m);

    // Protocol level 3 (MQTT 3.1): CONNACK 0x01.
    let mut r = Raw::open(m.plain);
    let mut c = connect(4, "thermo", PW, 60);
    c[8] = 3;
    r.send(&c);
    assert_eq!(r.read(), Some((0x20, vec![0, 0x01])));
    r.expect_closed();

    // A version 5 CONNECT too large, or malformed: CONNACK 0x95, 0x81.
    let mut r = Raw::open(m.plain);
    let mut c = connect(5, "thermo", PW, 60);
    c[1] = 0x80;
    c.splice(2..2, [0x80, 0x01]);
    r.send(&c[..12]);
    assert_eq!(r.read(), Some((0x20, vec![0, 0x95, 0])));
    r.expect_closed();
    let mut r = Raw::open(m.plain);
    let mut c = connect(5, "thermo", PW, 60);
    c[9] |= 1;
    r.send(&c);
    assert_eq!(r.read(), Some((0x20, vec![0, 0x81, 0])));
    r.expect_closed();

    // Not CONNECT first; garbage.
    let mut r = Raw::open(m.plain);
    r.send(&[0xc0, 0]);
    r.expect_closed();
    let mut r = Raw::open(m.plain);
    r.send(b"GET / HTTP/1.1\r\n\r\n");
    r.expect_closed();

    // Version 5, after CONNECT: a QoS 3 PUBLISH is malformed (DISCONNECT 0x81).
    let mut r = Raw::login(m.plain, 5, "thermo");
    r.send(&[0x36, 5, 0, 1, b'a', 0, 1]);
    assert_eq!(r.read(), Some((0xe0, vec![0x81, 0])));
    r.expect_closed();

    // Too large: DISCONNECT 0x95 as soon as the header says so.
    let mut r = Raw::login(m.plain, 5, "thermo");
    let mut big = vec![0x30];
    varint(100_000, &mut big);
    r.send(&big);
    assert_eq!(r.read(), Some((0xe0, vec![0x95, 0])));
    r.expect_closed();
    // 3.1.1: closed without a word.
    let mut r = Raw::login(m.plain, 4, "thermo");
    r.send(&publish(
        4,
        "thermo/sensor/x/state",
        0,
        0,
        &vec![b'1'; 20_000],
    ));
    r.expect_closed();

    // A second CONNECT is a protocol error (0x82).
    let mut r = Raw::login(m.plain, 5, "thermo");
    r.send(&connect(5, "thermo", PW, 60));
    assert_eq!(r.read(), Some((0xe0, vec![0x82, 0])));
    r.expect_closed();

    // Another device's topic: v5 PUBACK 0x87, the connection stays.
    let mut r = Raw::login(m.plain, 5, "thermo");
    r.send(&publish(5, "tele/plug/SENSOR", 1, 7, b"{\"T\":1}"));
    assert_eq!(r.read(), Some((0x40, vec![0, 7, 0x87])));
    // Its own: success; a QoS 2 flow; Tasmota's command topics granted.
    r.send(&publish(5, "tele/thermo/SENSOR", 2, 8, b"{\"T\":1}"));
    assert_eq!(r.read(), Some((0x50, vec![0, 8])));
    r.send(&[0x62, 2, 0, 8]);
    assert_eq!(r.read(), Some((0x70, vec![0, 8])));
    let mut sub = vec![0, 9, 0];
    sub.extend(s(b"cmnd/thermo/#"));
    sub.push(1);
    r.send(&packet(0x82, &sub));
    assert_eq!(r.read(), Some((0x90, vec![0, 9, 0, 1])));
    r.ping();
    // DISCONNECT: closed by the server too.
    r.send(&[0xe0, 0]);
    r.expect_closed();

    bystander.ping();
    alice.assert_alive();
}

#[test]
fn silence_and_missed_keep_alives_close() {
    let m = start("connect_timeout_secs = 2\nmax_keep_alive_secs = 10\n");
    // No CONNECT within 2 s.
    let t = Instant::now();
    let mut r = Raw::open(m.plain);
    r.expect_closed();
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(6),
        "{waited:?}"
    );
    // Keep-alive off (0): version 5 is told the server's (Server Keep Alive, 0x13).
    let mut r = Raw::open(m.plain);
    r.send(&connect(5, "plug", PW, 0));
    let (first, body) = r.read().expect("CONNACK");
    assert_eq!((first, body[1]), (0x20, 0));
    assert!(body.windows(3).any(|w| w == [0x13, 0, 10]), "{body:?}");
    // Keep-alive 1 s: closed after 1.5 s without a packet, with 0x8D in version 5.
    let mut r = Raw::open(m.plain);
    r.send(&connect(5, "thermo", PW, 1));
    assert_eq!(r.read().map(|p| p.0), Some(0x20));
    let t = Instant::now();
    assert_eq!(r.read(), Some((0xe0, vec![0x8d, 0])));
    r.expect_closed();
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
}

#[test]
fn a_publish_flood_leaves_others_untouched() {
    let m = start("");
    let mut bystander = Raw::login(m.plain, 4, "plug");
    let mut alice = xmpp_alice(&m);
    let flood = Raw::login(m.plain, 4, "thermo");
    flood
        .0
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut w = flood.0.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let one = publish(4, "thermo/sensor/t/state", 0, 0, b"21.5");
        let burst: Vec<u8> = one.iter().copied().cycle().take(one.len() * 1000).collect();
        let t = Instant::now();
        let mut sent = 0usize;
        while t.elapsed() < Duration::from_secs(4) {
            if w.write_all(&burst).is_err() {
                break;
            }
            sent += burst.len();
        }
        sent
    });
    std::thread::sleep(Duration::from_millis(500));
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        let t = Instant::now();
        bystander.ping();
        alice.assert_alive();
        worst = worst.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(300));
    }
    let sent = writer.join().unwrap();
    eprintln!("flood: {sent} bytes written in 4 s; worst bystander round trip {worst:?}");
    assert!(worst < Duration::from_secs(1), "{worst:?}");
    // The flooder is slowed (its reads paused, TCP pushes back), not cut off: what it
    // wrote is still being read at the `[limits]` rate.
    let log = m.server.log();
    assert!(!log.contains("mqtt") || !log.contains("thermo@test.local/mqtt disconnected"));
}

impl Mqtt {
    /// The plain port (for raw clients; TLS is covered by the real clients).
    fn tls_less(&self) -> SocketAddr {
        self.plain
    }
}

#[test]
fn tls_port_speaks_tls_only() {
    let m = start("");
    let mut r = Raw::open(m.tls);
    r.send(&connect(4, "thermo", PW, 60));
    // The handshake fails on MQTT bytes: closed, nothing MQTT answered.
    let mut buf = [0u8; 64];
    let n = r.0.read(&mut buf).unwrap_or(0);
    assert!(n == 0 || buf[0] != 0x20, "{:?}", &buf[..n]);
}

/// The README's Tasmota and ESPHome configurations: what they make the firmware publish
/// (Tasmota's `Topic` under `FullTopic %prefix%/%topic%/`, ESPHome's node name as its
/// topic prefix), replayed as that firmware publishes it, reaches a household member.
#[test]
fn readme_tasmota_and_esphome_configurations() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("### From Tasmota or ESPHome (MQTT)")
        .nth(1)
        .expect("the README's MQTT section");
    let backlog = section
        .lines()
        .find(|l| l.starts_with("Backlog "))
        .expect("a Tasmota Backlog line");
    let setting = |name: &str| {
        backlog
            .trim_start_matches("Backlog ")
            .split("; ")
            .find_map(|c| c.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} in {backlog}"))
            .to_owned()
    };
    assert_eq!(setting("FullTopic"), "%prefix%/%topic%/");
    let topic = setting("Topic");
    assert_eq!(
        setting("MqttUser"),
        topic,
        "Topic must be the account's name"
    );
    let yaml = section
        .split("```yaml\n")
        .nth(1)
        .and_then(|y| y.split("```").next())
        .expect("an ESPHome yaml block");
    let yaml_value = |key: &str| {
        yaml.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
            .unwrap_or_else(|| panic!("{key} in {yaml}"))
            .to_owned()
    };
    let node = yaml_value("name");
    assert_eq!(yaml_value("username"), node);
    assert_eq!(yaml_value("discovery"), "true");

    let m = start("");
    for u in [&topic, &node] {
        if u != "thermo" {
            add_device(&m.server, u);
        }
    }
    wait_for_log(&m.server, "household: 1 joined");
    // Tasmota: its teleperiod message.
    let alice = watch(&m, &topic, "20.1 °C");
    let sensor = format!("tele/{topic}/SENSOR");
    let out = mosquitto_pub(
        &m,
        &[
            "-u",
            &topic,
            "-P",
            PW,
            "-t",
            &sensor,
            "-m",
            r#"{"Time":"2026-12-05T01:00:00","DS18B20":{"Id":"0316A2792EFF","Temperature":20.1},"TempUnit":"C"}"#,
        ],
        false,
    );
    assert!(out.status.success(), "{out:?}");
    alice.finish().assert_ok();
    // ESPHome: birth, discovery (retained), a state, then gone.
    let alice = watch(&m, &node, "4.5 °C");
    let script =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/mqtt_client.py");
    let mut cmd = Command::new(python());
    cmd.arg(script)
        .args(["--user", &node, "--password", PW, "--client-id", &node])
        .args(["--port", &m.plain.port().to_string()])
        .args(["--will", &format!("{node}/status=offline")])
        .args(["--publish", &format!("{node}/status=online")])
        .args([
            "--publish",
            &format!(
                r#"homeassistant/sensor/{node}/outside_temperature/config={{"unit_of_measurement":"°C","state_topic":"{node}/sensor/outside_temperature/state"}}"#
            ),
        ])
        .args([
            "--publish",
            &format!("{node}/sensor/outside_temperature/state=4.5"),
        ])
        .args(["--linger", "0.5", "--end", "drop"]);
    let mqtt = RunningClient::command(cmd);
    let run = alice.finish();
    assert_eq!(mqtt.finish().code(), Some(0));
    run.assert_ok();
    assert_eq!(
        run.expect_event("device_status")["values"][0]["name"],
        "outside_temperature"
    );
}

/// XEP-0205's admission applies to MQTT too: connections per address are counted with
/// the others, and one over the limit is closed at once.
#[test]
fn connections_per_address_are_limited() {
    let m = start("\n[limits]\nmax_connections_per_address = 3\n");
    // Three connections that have not sent CONNECT yet.
    let waiting: Vec<Raw> = (0..2).map(|_| Raw::open(m.plain)).collect();
    let mut device = Raw::login(m.plain, 4, "thermo");
    // The fourth: closed, its CONNECT unanswered.
    let mut r = Raw::open(m.plain);
    r.send(&connect(4, "plug", PW, 60));
    r.expect_closed();
    device.ping();
    drop(waiting);
    let log = m.server.log();
    assert!(log.contains("refused 127.0.0.1"), "{log}");
}

/// A device that reconnects before hearth noticed its old connection died takes its
/// session over: the old connection is told (5.0: DISCONNECT 0x8E) and closed.
#[test]
fn a_new_connection_takes_the_device_session_over() {
    let m = start("");
    let mut old = Raw::login(m.plain, 5, "thermo");
    let mut new = Raw::login(m.plain, 5, "thermo");
    assert_eq!(old.read(), Some((0xe0, vec![0x8e, 0])));
    old.expect_closed();
    new.ping();
}

/// What an XMPP user sends the sensor's session is answered, not lost: a ping (any iq
/// request) and a chat message get `service-unavailable` back.
#[test]
fn stanzas_for_the_sensor_are_answered() {
    let m = start("");
    let mut device = Raw::login(m.plain, 4, "thermo");
    let mut alice = xmpp_alice(&m);
    let reply = alice.ping("thermo@test.local/mqtt");
    assert_eq!(reply.attr("type"), Some("error"), "{reply}");
    assert!(reply.to_string().contains("service-unavailable"), "{reply}");
    alice.send(
        "<message to='thermo@test.local/mqtt' type='chat' id='m1'><body>are you warm?</body></message>",
    );
    let err = alice.expect_matching("the message's error", |el| {
        el.name == "message" && el.attr("type") == Some("error")
    });
    assert_eq!(err.attr("id"), Some("m1"), "{err}");
    device.ping();
}

/// A second XMPP library: aioxmpp parses hearth's telemetry element itself (declared as
/// an XSO on its Presence) while mosquitto_pub publishes over TLS with MQTT 5.
#[test]
fn aioxmpp_sees_the_telemetry_too() {
    let m = start("");
    let python = common::clients::aioxmpp_python();
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients/aioxmpp_telemetry.py");
    let mut cmd = Command::new(&python);
    cmd.arg(script)
        .args(["--port", &m.server.c2s_port().to_string()])
        .args(["--jid", &format!("{}/tablet", m.server.jid("alice"))])
        .args(["--password", PW, "--contact", &m.server.jid("thermo")])
        .args(["--expect-status", "70.7 °F · 48 %", "--expect-unavailable"]);
    let mut aio = RunningClient::command(cmd);
    aio.wait_for_event("ready", WAIT);
    let out = mosquitto_pub(
        &m,
        &[
            "-V",
            "mqttv5",
            "-u",
            "thermo",
            "-P",
            PW,
            "-t",
            "tele/thermo/SENSOR",
            "-m",
            r#"{"SHT3X":{"Temperature":70.7,"Humidity":48},"TempUnit":"F"}"#,
        ],
        true,
    );
    assert!(out.status.success(), "{out:?}");
    let run = aio.finish();
    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(
        run.expect_event("device_status")["values"],
        serde_json::json!([
            {"name": "temperature", "unit": "°F", "value": "70.7"},
            {"name": "humidity", "unit": "%", "value": "48"},
        ]),
        "{run}"
    );
}

/// A sleepy Tasmota (issue 21, "Sleepy devices" over MQTT): it publishes one reading and
/// goes. Its last reading is kept (`hearth device list`), and a household member who
/// logs in afterwards, also after a restart, gets it as unavailable presence with the
/// values and a XEP-0203 delay stamp from the server (tests/clients/device_slixmpp.py).
#[test]
fn an_mqtt_sensor_that_went_to_sleep_is_seen_with_its_last_reading() {
    let mut m = start("");
    let out = mosquitto_pub(
        &m,
        &[
            "-u",
            "thermo",
            "-P",
            PW,
            "-t",
            "tele/thermo/SENSOR",
            "-m",
            r#"{"AM2301":{"Temperature":21.5,"Humidity":48.0},"TempUnit":"C"}"#,
        ],
        true,
    );
    assert!(out.status.success(), "{out:?}");
    // The reading goes out after the coalescing window, then the disconnect stores it.
    let deadline = Instant::now() + WAIT;
    let listed = loop {
        let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
            .args(["device", "list", "--config"])
            .arg(m.server.config_path())
            .output()
            .unwrap();
        let listed = String::from_utf8_lossy(&out.stdout).into_owned();
        if listed.contains("21.5 °C · 48 %") || Instant::now() > deadline {
            break listed;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(listed.contains("21.5 °C · 48 %"), "{listed}");
    let seen = |m: &Mqtt| {
        let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/clients/device_slixmpp.py");
        let mut cmd = Command::new(python());
        cmd.arg(script)
            .args(["--port", &m.server.c2s_port().to_string()])
            .arg("--cafile")
            .arg(m.server.cert_path())
            .args(["--jid", &m.server.jid("alice"), "--password", PW])
            .args(["--do", "watch", "--device", &m.server.jid("thermo")])
            .args(["--expect-status", "21.5 °C · 48 %"]);
        let run = RunningClient::command(cmd).finish();
        run.assert_ok();
        let seen = run.expect_event("seen").clone();
        assert_eq!(seen["type"], "unavailable", "{run}");
        assert_eq!(seen["status"], "21.5 °C · 48 %", "{run}");
        assert_eq!(seen["telemetry"][0]["name"], "temperature", "{run}");
        assert_eq!(seen["telemetry"][0]["value"], "21.5", "{run}");
        assert_eq!(seen["delay_from"], m.server.domain(), "{run}");
        assert!(
            seen["delay"].as_str().is_some_and(|s| s.starts_with("20")),
            "{run}"
        );
    };
    seen(&m);
    m.server.stop();
    m.server.restart();
    seen(&m);
}

/// A device publishing faster than its presence rate (`[devices]`, here one presence per
/// 2 s): the reading the device module refuses is not lost but sent once the rate
/// allows, so the household ends with the device's latest reading.
#[test]
fn readings_over_the_presence_rate_go_out_later_not_never() {
    let m = start("[devices]\npresence_interval_secs = 2\npresence_burst = 1\n");
    let alice = watch(&m, "thermo", "21.5");
    let mut raw = Raw::login(m.plain, 4, "thermo");
    raw.send(&publish(
        4,
        "thermo/sensor/temperature/state",
        0,
        0,
        b"20.5",
    ));
    // Past the coalescing window (300 ms): 20.5 goes out and uses the burst.
    std::thread::sleep(Duration::from_millis(700));
    raw.send(&publish(
        4,
        "thermo/sensor/temperature/state",
        0,
        0,
        b"21.5",
    ));
    // 21.5 is refused at first (over the rate), then sent when the rate allows.
    std::thread::sleep(Duration::from_millis(3500));
    raw.ping();
    drop(raw);
    let run = alice.finish();
    run.assert_ok();
    let statuses: Vec<String> = device_presences(&run)
        .iter()
        .filter(|p| p["type"] != "unavailable")
        .map(|p| p["status"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(statuses.last().map(String::as_str), Some("21.5"), "{run}");
    assert!(statuses.iter().any(|s| s == "20.5"), "{run}");
}
