//! Running real XMPP clients as child processes: the slixmpp script
//! (`tests/clients/xmpp_client.py`) and go-sendxmpp.
//!
//! Every run has a deadline and is killed past it, so a hung client fails the test
//! instead of hanging it. A missing client is a failure with the install command in
//! the message, never a silent skip: `.ci/run` installs them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Server;

/// The deadline given to the script itself (`--timeout`), in seconds.
const CLIENT_TIMEOUT_SECS: u64 = 20;
/// How long the harness waits beyond that before killing the process.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// The Python with slixmpp: `HEARTH_TEST_PYTHON`, else Debian's `/usr/bin/python3`
/// (python3-slixmpp), else `python3` from PATH.
pub fn python() -> String {
    if let Ok(p) = std::env::var("HEARTH_TEST_PYTHON") {
        return p;
    }
    if std::path::Path::new("/usr/bin/python3").exists() {
        return "/usr/bin/python3".into();
    }
    "python3".into()
}

pub fn client_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/xmpp_client.py")
}

/// Which port and TLS mode a client uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// The c2s port with STARTTLS (RFC 6120 §5).
    StartTls,
    /// The direct TLS port (XEP-0368).
    DirectTls,
}

/// The finished run of a client process.
#[derive(Debug)]
pub struct ClientRun {
    pub status: Option<ExitStatus>,
    /// Each stdout line that parsed as JSON.
    pub events: Vec<Value>,
    pub stdout: String,
    pub stderr: String,
}

impl ClientRun {
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    pub fn succeeded(&self) -> bool {
        self.code() == Some(0)
    }

    /// The first event named `name`.
    pub fn event(&self, name: &str) -> Option<&Value> {
        self.events.iter().find(|e| e["event"] == name)
    }

    /// Like [`ClientRun::event`] but panics with the whole run when absent.
    pub fn expect_event(&self, name: &str) -> &Value {
        self.event(name)
            .unwrap_or_else(|| panic!("no {name:?} event in client run:\n{self}"))
    }

    /// Panics with the whole run unless the client exited 0.
    pub fn assert_ok(&self) -> &Self {
        assert!(self.succeeded(), "client failed:\n{self}");
        self
    }
}

impl std::fmt::Display for ClientRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit: {:?}\n--- stdout ---\n{}--- stderr ---\n{}--------------",
            self.status, self.stdout, self.stderr
        )
    }
}

/// A client process still running: read its events as they come.
pub struct RunningClient {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    seen: Vec<String>,
    deadline: Instant,
}

impl RunningClient {
    /// Runs `cmd` (a script that prints JSON event lines) as a client to wait on.
    pub fn command(cmd: Command) -> RunningClient {
        RunningClient::spawn(cmd, None)
    }

    fn spawn(mut cmd: Command, stdin: Option<String>) -> RunningClient {
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(input.as_bytes()).unwrap();
            // Dropping the pipe closes it: the client reads to end of input.
        }
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr_pipe = child.stderr.take().unwrap();
        let (etx, stderr) = mpsc::channel();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr_pipe.read_to_string(&mut s);
            let _ = etx.send(s);
        });
        RunningClient {
            child,
            lines,
            stderr,
            seen: Vec::new(),
            deadline: Instant::now() + Duration::from_secs(CLIENT_TIMEOUT_SECS) + KILL_GRACE,
        }
    }

    /// Waits until the client prints the event `name` (e.g. "ready") and returns it.
    pub fn wait_for_event(&mut self, name: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        if v["event"] == name {
                            return v;
                        }
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    let run = self.collect();
                    panic!("client never printed {name:?} within {timeout:?}:\n{run}");
                }
            }
        }
    }

    /// Waits for the client to exit (killing it past its deadline) and collects output.
    pub fn finish(mut self) -> ClientRun {
        loop {
            if self.child.try_wait().unwrap().is_some() {
                break;
            }
            if Instant::now() > self.deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.collect()
    }

    fn collect(&mut self) -> ClientRun {
        let status = self.child.wait().ok();
        // The reader thread ends at EOF, which follows the exit.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        let stderr = self
            .stderr
            .recv_timeout(Duration::from_secs(2))
            .unwrap_or_default();
        let events = self
            .seen
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let mut stdout = self.seen.join("\n");
        stdout.push('\n');
        ClientRun {
            status,
            events,
            stdout,
            stderr,
        }
    }
}

impl Drop for RunningClient {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One invocation of the slixmpp script as `user@domain[/resource]`.
pub struct Slixmpp {
    /// Where the STARTTLS (c2s) port listens.
    c2s: SocketAddr,
    /// Where the direct TLS port listens, if the server has one (a federation peer of
    /// `peers.rs` has none).
    direct_tls: Option<SocketAddr>,
    /// The certificate (or CA) the client trusts for the server's domain.
    cafile: PathBuf,
    jid: String,
    password: String,
    mech: String,
    transport: Transport,
}

/// A slixmpp client for `user` on `server`, forcing SASL mechanism `mech`.
pub fn slixmpp(server: &Server, user: &str, password: &str, mech: &str) -> Slixmpp {
    Slixmpp {
        c2s: server.c2s_addr(),
        direct_tls: Some(server.direct_tls_addr()),
        cafile: server.cert_path(),
        jid: server.jid(user),
        password: password.into(),
        mech: mech.into(),
        transport: Transport::StartTls,
    }
}

/// A slixmpp client for `jid` on any server with a STARTTLS port at `c2s` whose
/// certificate `cafile` verifies (the federation peers of `peers.rs`).
pub fn slixmpp_at(
    c2s: SocketAddr,
    cafile: &Path,
    jid: &str,
    password: &str,
    mech: &str,
) -> Slixmpp {
    Slixmpp {
        c2s,
        direct_tls: None,
        cafile: cafile.to_path_buf(),
        jid: jid.into(),
        password: password.into(),
        mech: mech.into(),
        transport: Transport::StartTls,
    }
}

impl Slixmpp {
    /// Asks for this resource instead of a server-generated one.
    pub fn resource(mut self, resource: &str) -> Self {
        self.jid = format!("{}/{resource}", self.jid.split('/').next().unwrap());
        self
    }

    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    fn command(&self, action: &[&str]) -> Command {
        let addr = match self.transport {
            Transport::StartTls => self.c2s,
            Transport::DirectTls => self.direct_tls.expect("this server has no direct TLS port"),
        };
        let mut cmd = Command::new(python());
        cmd.arg(client_script())
            .arg("--host")
            .arg(addr.ip().to_string())
            .arg("--port")
            .arg(addr.port().to_string())
            .args(["--tls"])
            .arg(match self.transport {
                Transport::StartTls => "starttls",
                Transport::DirectTls => "direct",
            })
            .arg("--cafile")
            .arg(&self.cafile)
            .args(["--jid", &self.jid, "--password", &self.password])
            .args(["--mech", &self.mech])
            .args(["--timeout", &CLIENT_TIMEOUT_SECS.to_string()])
            .args(action);
        cmd
    }

    /// Starts the client; read its events with [`RunningClient::wait_for_event`].
    pub fn spawn(&self, action: &[&str]) -> RunningClient {
        check_slixmpp();
        RunningClient::spawn(self.command(action), None)
    }

    /// Runs the client to completion.
    pub fn run(&self, action: &[&str]) -> ClientRun {
        self.spawn(action).finish()
    }
}

/// Fails with the install hint when the Python used has no slixmpp.
pub fn check_slixmpp() {
    let ok = can_import(python(), "slixmpp");
    assert!(
        ok,
        "{} cannot import slixmpp: run .ci/run, or `apt-get install python3-slixmpp` \
         (or set HEARTH_TEST_PYTHON to a Python that has it)",
        python()
    );
}

/// go-sendxmpp sending `body` to `to` as `user`, accepting the server's certificate
/// without verification (`-n`: go-sendxmpp cannot pin a file). Returns its run.
pub fn go_sendxmpp(
    server: &Server,
    user: &str,
    password: &str,
    to: &str,
    body: &str,
    transport: Transport,
) -> ClientRun {
    let found = Command::new("go-sendxmpp")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "go-sendxmpp is not installed: run .ci/run or `apt-get install go-sendxmpp`"
    );
    let port = match transport {
        Transport::StartTls => server.c2s_port(),
        Transport::DirectTls => server.direct_tls_port(),
    };
    let mut cmd = Command::new("go-sendxmpp");
    cmd.args(["-u", &server.jid(user), "-p", password])
        .args(["-j", &format!("127.0.0.1:{port}")])
        .args(["-n", "--timeout", "10"]);
    if transport == Transport::DirectTls {
        cmd.arg("-t");
    }
    // No config file: everything is on the command line.
    cmd.env("HOME", server.scratch_dir());
    cmd.arg(to);
    RunningClient::spawn(cmd, Some(format!("{body}\n"))).finish()
}

/// The Python with aioxmpp 0.13 (PyPI): `HEARTH_AIOXMPP_PYTHON`, else the virtualenv
/// `.ci/run` makes beside the build, `<target dir>/aioxmpp-venv` (Debian has no aioxmpp
/// package, and a venv keeps PyPI's packages away from Debian's slixmpp).
pub fn aioxmpp_python() -> PathBuf {
    if let Ok(p) = std::env::var("HEARTH_AIOXMPP_PYTHON") {
        return p.into();
    }
    // CARGO_TARGET_TMPDIR is `<target dir>/tmp`, wherever CARGO_TARGET_DIR put it.
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let target = target.parent().map(PathBuf::from).unwrap_or(target);
    target.join("aioxmpp-venv/bin/python3")
}

/// Runs `tests/clients/aioxmpp_client.py` as `user` to completion: its fixed list of
/// checks, each with its own deadline (a reply the library ignores fails, never hangs).
/// Fails with the install hint when aioxmpp cannot be imported.
pub fn aioxmpp(server: &Server, user: &str, password: &str) -> ClientRun {
    let python = aioxmpp_python();
    let ok = can_import(&python, "aioxmpp");
    assert!(
        ok,
        "{} cannot import aioxmpp: run .ci/run, or `python3 -m venv {venv} && \
         {venv}/bin/pip install 'aioxmpp==0.13.*' pytz` (or set HEARTH_AIOXMPP_PYTHON)",
        python.display(),
        venv = python
            .parent()
            .and_then(|p| p.parent())
            .unwrap_or(&python)
            .display(),
    );
    let mut cmd = Command::new(&python);
    cmd.arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/aioxmpp_client.py"))
        .args(["--host", "127.0.0.1", "--port"])
        .arg(server.c2s_port().to_string())
        .args(["--jid", &server.jid(user), "--password", password])
        .args(["--timeout", &CLIENT_TIMEOUT_SECS.to_string()]);
    RunningClient::spawn(cmd, None).finish()
}

/// Starts `tests/clients/aioxmpp_client.py` for `jid` (a full JID picks the resource)
/// with `args` (e.g. `--carbons`); read its events as they come.
pub fn aioxmpp_spawn(server: &Server, jid: &str, password: &str, args: &[&str]) -> RunningClient {
    let python = aioxmpp_python();
    assert!(
        can_import(&python, "aioxmpp"),
        "{} cannot import aioxmpp: run .ci/run (or set HEARTH_AIOXMPP_PYTHON)",
        python.display()
    );
    let mut cmd = Command::new(&python);
    cmd.arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/aioxmpp_client.py"))
        .args(["--host", "127.0.0.1", "--port"])
        .arg(server.c2s_port().to_string())
        .args(["--jid", jid, "--password", password])
        .args(["--timeout", &CLIENT_TIMEOUT_SECS.to_string()])
        .args(args);
    RunningClient::spawn(cmd, None)
}

/// Whether `python` can import `module`.
fn can_import(python: impl AsRef<std::ffi::OsStr>, module: &str) -> bool {
    Command::new(python)
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
