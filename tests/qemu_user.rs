//! A cross-built hearth (aarch64, armv7) under qemu-user: it starts, creates its
//! database, and clients log in (the test client, then slixmpp). Ignored by default (the build takes minutes);
//! `image/test-qemu.sh TARGET` builds the binary and runs this with
//!
//! - `HEARTH_CROSS_BINARY`: the binary to test,
//! - `HEARTH_CROSS_RUNNER`: the emulator, e.g. `qemu-aarch64-static`,
//!
//! and `QEMU_CPU` / `QEMU_LD_PREFIX` in the environment, which the emulator reads.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::client::Conn;
use common::free_port;

/// Emulation is slow: generating the certificate and hashing a password take seconds.
const START_TIMEOUT: Duration = Duration::from_secs(120);

fn env_path(name: &str) -> PathBuf {
    PathBuf::from(
        std::env::var_os(name)
            .unwrap_or_else(|| panic!("{name} is not set; run image/test-qemu.sh TARGET")),
    )
}

/// The binary under the emulator.
fn command(runner: &Path, binary: &Path) -> Command {
    let mut cmd = Command::new(runner);
    cmd.arg(binary);
    cmd
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

struct Running(Child, PathBuf);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.1).unwrap_or_default();
            eprintln!("---- hearth's log ----\n{log}---- end of log ----");
        }
    }
}

#[test]
#[ignore = "needs a cross-built binary and qemu-user: image/test-qemu.sh"]
fn cross_built_hearth_serves_a_login() {
    let binary = env_path("HEARTH_CROSS_BINARY");
    let runner = env_path("HEARTH_CROSS_RUNNER");
    let out = command(&runner, &binary).arg("--version").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    println!(
        "{} under {} (QEMU_CPU={:?})",
        String::from_utf8_lossy(&out.stdout).trim(),
        runner.display(),
        std::env::var("QEMU_CPU").ok()
    );

    let dir = tempfile::tempdir().unwrap();
    let (c2s, direct) = (free_port(), free_port());
    let config = dir.path().join("hearth.toml");
    std::fs::write(
        &config,
        format!(
            "domain = \"pi.local\"\nfederation = false\ndata_dir = \"data\"\nallow_root = true\nmdns = false\n[c2s]\n\
             listen = [\"127.0.0.1:{c2s}\"]\ndirect_tls_listen = [\"127.0.0.1:{direct}\"]\n\
             [http]\nlisten = [\"127.0.0.1:0\"]"
        ),
    )
    .unwrap();
    let log = dir.path().join("hearth.log");
    let started = Instant::now();
    let child = command(&runner, &binary)
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut run = Running(child, log);
    let addr = SocketAddr::from(([127, 0, 0, 1], c2s));
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(run.0.try_wait().unwrap().is_none(), "hearth exited");
        assert!(started.elapsed() < START_TIMEOUT, "not listening");
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("listening after {} ms", started.elapsed().as_millis());
    let data = dir.path().join("data");
    assert!(data.join("hearth.db").exists(), "no database created");
    // Let start-up settle before reading the resident set.
    std::thread::sleep(Duration::from_secs(1));
    println!(
        "RSS after start: {} KiB (the qemu-user process: emulator and translated code included)",
        rss_kib(run.0.id())
    );

    let pw = dir.path().join("pw");
    std::fs::write(&pw, "garden shed").unwrap();
    let out = command(&runner, &binary)
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

    let mut conn = Conn::login(
        addr,
        "pi.local",
        &data.join("tls/cert.pem"),
        "alice",
        "garden shed",
        Some("qemu"),
    );
    assert!(conn.full_jid().starts_with("alice@pi.local/qemu"));
    conn.assert_alive();
    println!(
        "RSS after a login: {} KiB (qemu-user process)",
        rss_kib(run.0.id())
    );
    drop(conn);

    // A third-party client's own implementation too: slixmpp (Debian's python3-slixmpp)
    // negotiates STARTTLS, verifies the certificate and logs in with SCRAM-SHA-256.
    let slix = common::clients::slixmpp_at(
        addr,
        &data.join("tls/cert.pem"),
        "alice@pi.local",
        "garden shed",
        "SCRAM-SHA-256",
    )
    .run(&["login"]);
    slix.assert_ok();
    println!("slixmpp: {}", slix.expect_event("session_start"));

    Command::new("kill")
        .args(["-TERM", &run.0.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = run.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}
