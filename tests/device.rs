//! Device accounts (issue 21) end to end, with slixmpp (tests/clients/device_slixmpp.py)
//! on both sides: `hearth device add thermo --household` through the real binary, the
//! device logs in, reports a reading through presence with hearth's telemetry element,
//! and disconnects; household members who log in later (one put in the household only
//! after the reading) get the last reading as unavailable presence with slixmpp's
//! `xep_0203` delay stamp and the telemetry intact, also after a restart, and
//! `xep_0012` answers with the seconds since and the reading. The restricted role
//! refuses a message and a subscription outside the household and a message to another
//! server, and a presence flood gets `policy-violation`. The README's two sensor
//! examples (examples/sensors/) run against the server as written.

mod common;

use common::clients::{RunningClient, check_slixmpp, python};
use common::{Server, ServerOpts};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

const PW: &str = "a household password";
const READING: &str = "21.5 °C · 48 %";

/// Runs `hearth device …` on the server's configuration; its stdout.
fn device(server: &Server, args: &[&str]) -> String {
    hearth(server, "device", args)
}

fn hearth(server: &Server, cmd: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .arg(cmd)
        .args(args)
        .arg("--config")
        .arg(server.config_path())
        .stdin(Stdio::null())
        .output()
        .expect("cannot run hearth");
    assert!(
        out.status.success(),
        "hearth {cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `hearth device add NAME --household --password-file …`: the generated password.
fn add_device(server: &Server, name: &str, household: bool) -> String {
    let file = server.scratch_dir().join(format!("{name}.pw"));
    let file_arg = file.to_str().unwrap().to_owned();
    let mut args = vec!["add", name, "--password-file", &file_arg];
    if household {
        args.push("--household");
    }
    let out = device(server, &args);
    assert!(out.contains("password written to"), "{out}");
    let pw = std::fs::read_to_string(&file).expect("the password file");
    pw.trim_end().to_owned()
}

/// Runs tests/clients/device_slixmpp.py as `user` to completion.
fn run(server: &Server, user: &str, password: &str, args: &[&str]) -> common::clients::ClientRun {
    check_slixmpp();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/device_slixmpp.py");
    let mut cmd = Command::new(python());
    cmd.arg(script)
        .args(["--port", &server.c2s_port().to_string()])
        .arg("--cafile")
        .arg(server.cert_path())
        .args(["--jid", &server.jid(user), "--password", password])
        .args(args);
    RunningClient::command(cmd).finish()
}

/// What a member sees of the sleeping device: unavailable, the reading, the telemetry
/// element's two values and a delay stamp from the server, a moment ago.
fn check_last_reading(server: &Server, seen: &Value) {
    assert_eq!(seen["type"], "unavailable", "{seen}");
    assert_eq!(seen["status"], READING, "{seen}");
    let values = seen["telemetry"].as_array().expect("telemetry values");
    assert_eq!(values.len(), 2, "{seen}");
    assert_eq!(values[0]["name"], "temperature");
    assert_eq!(values[0]["unit"], "°C");
    assert_eq!(values[0]["value"], "21.5");
    assert_eq!(values[1]["name"], "humidity");
    assert_eq!(values[1]["value"], "48");
    assert_eq!(seen["delay_from"], server.domain(), "{seen}");
    let stamp = seen["delay"].as_str().expect("a delay stamp");
    assert!(stamp.starts_with("20"), "{stamp}");
}

fn watch(server: &Server, user: &str) -> common::clients::ClientRun {
    let thermo = server.jid("thermo");
    run(
        server,
        user,
        PW,
        &[
            "--do",
            "watch",
            "--device",
            &thermo,
            "--expect-status",
            READING,
            "--do",
            "last",
        ],
    )
}

#[test]
fn a_sleepy_thermometer_seen_by_the_household() {
    let mut server = Server::start(ServerOpts::default());
    for u in ["alice", "bob"] {
        server.add_user(u, PW);
    }
    hearth(&server, "household", &["add", "alice"]);
    let pw = add_device(&server, "thermo", true);
    let listed = device(&server, &["list"]);
    assert_eq!(
        listed,
        format!("thermo@{} (household) never reported\n", server.domain())
    );

    // The sensor wakes, reports, and goes.
    let r = run(
        &server,
        "thermo",
        &pw,
        &[
            "--do",
            "report",
            "--status",
            READING,
            "--value",
            "temperature=21.5:°C",
            "--value",
            "humidity=48:%",
        ],
    );
    r.assert_ok();
    assert!(device(&server, &["list"]).contains(READING));

    // bob joins the household only now, and logs in after the server noticed.
    hearth(&server, "household", &["add", "bob"]);
    std::thread::sleep(Duration::from_secs(3));
    for who in ["alice", "bob"] {
        let w = watch(&server, who);
        w.assert_ok();
        check_last_reading(&server, w.expect_event("seen"));
        let last = w.expect_event("last");
        assert_eq!(last["status"], READING, "{w}");
        assert!(last["seconds"].as_u64().is_some_and(|s| s < 60), "{w}");
    }

    // The reading survives a restart.
    server.stop();
    server.restart();
    let w = watch(&server, "alice");
    w.assert_ok();
    check_last_reading(&server, w.expect_event("seen"));
}

#[test]
fn a_device_stays_inside_the_household() {
    let server = Server::start(ServerOpts::default());
    for u in ["alice", "dave"] {
        server.add_user(u, PW);
    }
    hearth(&server, "household", &["add", "alice"]);
    let pw = add_device(&server, "thermo", true);
    let dave = server.jid("dave");
    let r = run(
        &server,
        "thermo",
        &pw,
        &[
            "--do",
            "message",
            "--to",
            &dave,
            "--do",
            "subscribe",
            "--to",
            &dave,
        ],
    );
    r.assert_ok();
    let m = r.expect_event("message");
    assert_eq!(m["condition"], "forbidden", "{r}");
    assert!(m["text"].as_str().unwrap().contains("household"), "{r}");
    let s = r.expect_event("subscribe");
    assert_eq!(s["condition"], "forbidden", "{r}");
    // Another server: no federation for a device.
    let r = run(
        &server,
        "thermo",
        &pw,
        &["--do", "message", "--to", "zed@elsewhere.example"],
    );
    r.assert_ok();
    let m = r.expect_event("message");
    assert_eq!(m["condition"], "not-allowed", "{r}");
    assert!(m["text"].as_str().unwrap().contains("other servers"), "{r}");
    // The presence rate: 3 at once pass, the rest get policy-violation (wait).
    let r = run(
        &server,
        "thermo",
        &pw,
        &[
            "--do",
            "flood",
            "--count",
            "6",
            "--expect-errors",
            "3",
            "--status",
            "loop",
        ],
    );
    r.assert_ok();
    let errors = r.expect_event("flood")["errors"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(errors.len(), 3, "{r}");
    for e in errors {
        assert_eq!(e["condition"], "policy-violation", "{r}");
        assert_eq!(e["type"], "wait", "{r}");
        assert!(e["text"].as_str().unwrap().contains("every 10 s"), "{r}");
    }
    // A person is not restricted: dave may still message alice.
    let r = run(
        &server,
        "dave",
        PW,
        &["--do", "message", "--to", "zed@elsewhere.example"],
    );
    assert_eq!(
        r.expect_event("message")["condition"],
        "remote-server-not-found",
        "{r}"
    );
}

/// The README's "Connect a sensor" scripts, run as they are written.
#[test]
fn the_readme_sensor_examples_report() {
    let server = Server::start(ServerOpts::default());
    server.add_user("alice", PW);
    hearth(&server, "household", &["add", "alice"]);
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/sensors");
    let pw = add_device(&server, "thermo", true);
    check_slixmpp();
    let out = Command::new(python())
        .arg(examples.join("slixmpp_sensor.py"))
        .args([&server.jid("thermo"), &pw])
        .args(["temperature=21.5:°C", "humidity=48:%"])
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &server.c2s_port().to_string(),
        ])
        .arg("--cafile")
        .arg(server.cert_path())
        .stdin(Stdio::null())
        .output()
        .expect("cannot run the slixmpp example");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let w = watch(&server, "alice");
    assert!(w.succeeded(), "{w}\n{}", server.log());
    check_last_reading(&server, w.expect_event("seen"));

    // The MicroPython sketch, under CPython (Debian has no MicroPython for Linux).
    let pw = add_device(&server, "door", true);
    let out = Command::new("/usr/bin/python3")
        .arg(examples.join("micropython_sensor.py"))
        .args(["127.0.0.1", &server.c2s_port().to_string(), server.domain()])
        .args(["door", &pw])
        .arg(server.cert_path())
        .args(["contact=open", "battery=3.71:V"])
        .stdin(Stdio::null())
        .output()
        .expect("cannot run the MicroPython sketch");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "reported open · 3.71 V"
    );
    let door = server.jid("door");
    let w = run(
        &server,
        "alice",
        PW,
        &[
            "--do",
            "watch",
            "--device",
            &door,
            "--expect-status",
            "open · 3.71 V",
        ],
    );
    w.assert_ok();
    let seen = w.expect_event("seen");
    assert_eq!(seen["type"], "unavailable", "{w}");
    assert_eq!(seen["telemetry"][1]["unit"], "V", "{w}");
}

/// Bad input from a device over a raw connection: telemetry over the limits (too many
/// values, a name or a value too long) gets a presence error `policy-violation` with a
/// text, is not broadcast, and the device stays connected; a member online sees only
/// what passed; unchanged, malformed-but-small telemetry (an uppercase name, an unknown
/// child) passes as sent.
#[test]
fn telemetry_over_the_limits_is_refused_and_the_rest_passes() {
    use common::client::{Conn, NS_CLIENT};
    use common::im::{drain, expect_presence};
    let server = Server::start(ServerOpts::default());
    server.add_user("alice", PW);
    hearth(&server, "household", &["add", "alice"]);
    let pw = add_device(&server, "thermo", true);
    // The server's household watcher reads the change.
    std::thread::sleep(Duration::from_secs(3));
    let login = |user: &str, pw: &str, res: &str| {
        Conn::login(
            server.c2s_addr(),
            server.domain(),
            &server.cert_path(),
            user,
            pw,
            Some(res),
        )
    };
    let mut alice = login("alice", PW, "phone");
    alice.send("<presence/>");
    expect_presence(&mut alice, &server.jid("alice"), None);
    let mut t = login("thermo", &pw, "esp32");
    let ns = "urn:hearth:telemetry:0";
    let many: String = (0..33)
        .map(|i| format!("<value name='v{i}'>{i}</value>"))
        .collect();
    let long_name = "n".repeat(65);
    let long_value = "9".repeat(257);
    for (id, inner, says) in [
        ("many", many, "at most 32"),
        (
            "name",
            format!("<value name='{long_name}'>1</value>"),
            "longer than 64",
        ),
        (
            "value",
            format!("<value name='t'>{long_value}</value>"),
            "longer than 256",
        ),
    ] {
        t.send(&format!(
            "<presence id='{id}'><telemetry xmlns='{ns}'>{inner}</telemetry></presence>"
        ));
        let e = t.expect_matching("a presence error", |n| {
            n.name == "presence" && n.attr("type") == Some("error")
        });
        assert_eq!(e.attr("id"), Some(id), "{e}");
        let error = e.child("error", NS_CLIENT).expect("an <error/>");
        let stanzas = "urn:ietf:params:xml:ns:xmpp-stanzas";
        assert!(error.child("policy-violation", stanzas).is_some(), "{e}");
        let text = &error.child("text", stanzas).expect("a text").text;
        assert!(text.contains(says), "{text}");
    }
    t.assert_alive();
    let odd = format!("<telemetry xmlns='{ns}'><value name='Temp'>1</value><extra/></telemetry>");
    t.send(&format!("<presence><status>odd</status>{odd}</presence>"));
    let seen = expect_presence(&mut alice, &server.jid("thermo"), None);
    assert_eq!(
        seen.child("status", NS_CLIENT).map(|s| s.text.as_str()),
        Some("odd")
    );
    let tel = seen.child("telemetry", ns).expect("telemetry as sent");
    assert_eq!(tel.children.len(), 2, "{seen}");
    assert_eq!(tel.children[0].attr("name"), Some("Temp"));
    // Nothing refused reached alice before it.
    assert!(
        drain(&mut alice)
            .iter()
            .all(|n| n.attr("type") != Some("error")),
    );
}

/// Runs tests/clients/aioxmpp_device.py as `user` to completion.
fn run_aioxmpp(
    server: &Server,
    user: &str,
    password: &str,
    args: &[&str],
) -> common::clients::ClientRun {
    let python = common::clients::aioxmpp_python();
    let mut cmd = Command::new(&python);
    cmd.arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/aioxmpp_device.py"))
        .args(["--port", &server.c2s_port().to_string()])
        .args(["--jid", &server.jid(user), "--password", password])
        .args(args);
    let run = RunningClient::command(cmd).finish();
    assert_ne!(
        run.code(),
        Some(2),
        "{} cannot run aioxmpp (run .ci/run, or set HEARTH_AIOXMPP_PYTHON):\n{run}",
        python.display()
    );
    run
}

/// The same flow with a second library: an aioxmpp device reports (hearth's element as
/// an aioxmpp XSO), and an aioxmpp member logging in later reads the last reading with
/// aioxmpp's own XEP-0203 `Delay`; a slixmpp member sees the same.
#[test]
fn aioxmpp_device_and_member() {
    let server = Server::start(ServerOpts::default());
    server.add_user("alice", PW);
    hearth(&server, "household", &["add", "alice"]);
    let pw = add_device(&server, "thermo", true);
    let r = run_aioxmpp(
        &server,
        "thermo",
        &pw,
        &[
            "--role",
            "device",
            "--status",
            READING,
            "--value",
            "temperature=21.5:°C",
            "--value",
            "humidity=48:%",
        ],
    );
    r.assert_ok();
    std::thread::sleep(Duration::from_secs(3));
    let thermo = server.jid("thermo");
    let w = run_aioxmpp(
        &server,
        "alice",
        PW,
        &[
            "--role",
            "watch",
            "--device",
            &thermo,
            "--expect-status",
            READING,
        ],
    );
    w.assert_ok();
    let seen = w.expect_event("seen");
    check_last_reading(&server, seen);
    let w = watch(&server, "alice");
    w.assert_ok();
    check_last_reading(&server, w.expect_event("seen"));
}
