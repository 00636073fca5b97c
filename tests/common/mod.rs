//! The integration-test harness: start a real server on loopback, add users, stop it.
//!
//! ```ignore
//! let mut server = Server::start(ServerOpts::default());
//! server.add_user("alice", "secret");
//! let conn = client::Conn::login(server.c2s_addr(), server.domain(), &server.cert_path(),
//!                                "alice", "secret", Some("phone"));
//! server.stop(); // SIGTERM, asserts exit status 0
//! ```
//!
//! Each server gets its own temporary directory (config, data, stderr log) and its own
//! free loopback ports. If the test panics, the server's log is printed and the
//! directory is kept; otherwise it is removed.
//!
//! The server is hearth (`CARGO_BIN_EXE_hearth`). With `HEARTH_TEST_SERVER=prosody`
//! the same tests run against a private Prosody instead: that is how the client code
//! here was checked before hearth could run, and it stays useful for federation tests.
//! Prosody lacks some of what hearth offers (SCRAM-SHA-256, tls-exporter), so some
//! tests are expected to fail there: it validates the clients, not the expectations.

// Every test binary includes this module but uses only part of it.
#![allow(dead_code)]

pub mod client;
pub mod clients;
pub mod http;
pub mod im;
pub mod peers;
pub mod proxy;
pub mod sasl;
pub mod xml;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a server may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What to put in the server's configuration.
#[derive(Clone, Debug)]
pub struct ServerOpts {
    pub domain: String,
    /// `[c2s] max_stanza_bytes`; `None` leaves the server's default.
    pub max_stanza_bytes: Option<usize>,
    /// `[c2s] negotiation_timeout_secs`; `None` leaves the server's default.
    pub negotiation_timeout_secs: Option<u64>,
    /// `[auth] scram_keys`.
    pub scram_keys: bool,
    /// `threads` (executor threads); `None` leaves the server's default.
    pub threads: Option<usize>,
    /// The server's `RUST_LOG`; `None`: the test's own `RUST_LOG`, else `debug`.
    pub rust_log: Option<String>,
    /// The body of hearth's `[s2s]` table, which turns federation on; off (`None`)
    /// otherwise, since parallel tests must not all bind port 5269.
    pub s2s: Option<String>,
    /// `[tls] cert` and `key` (PEM files); `None`: the certificate hearth generates.
    /// Clients then pin the given certificate.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Appended verbatim to the end of hearth's TOML config, after the `[auth]` table:
    /// start it with a table header (e.g. `[tls]`). For keys this harness does not know.
    pub extra_toml: String,
    /// hearth's top-level `admins` (bare JIDs of accounts allowed the XEP-0133
    /// commands); not given to Prosody, whose admin commands say other things.
    pub admins: Vec<String>,
    /// Keys added to hearth's `[http]` table (which the harness writes, with a free
    /// port: parallel servers must not all bind 5443); `{http_port}` is replaced by
    /// that port.
    pub http_toml: String,
}

impl Default for ServerOpts {
    fn default() -> Self {
        ServerOpts {
            domain: "test.local".into(),
            max_stanza_bytes: None,
            negotiation_timeout_secs: None,
            scram_keys: true,
            threads: None,
            rust_log: None,
            s2s: None,
            tls: None,
            extra_toml: String::new(),
            admins: Vec::new(),
            http_toml: String::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Hearth,
    Prosody,
}

impl Backend {
    /// hearth unless `HEARTH_TEST_SERVER=prosody`.
    pub fn from_env() -> Backend {
        match std::env::var("HEARTH_TEST_SERVER").as_deref() {
            Ok("prosody") => Backend::Prosody,
            Ok("hearth") | Err(_) => Backend::Hearth,
            Ok(other) => panic!("HEARTH_TEST_SERVER={other:?}: expected hearth or prosody"),
        }
    }
}

/// A running server on loopback. Killed (SIGKILL) on drop if still running.
pub struct Server {
    backend: Backend,
    dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
    domain: String,
    c2s_port: u16,
    direct_tls_port: u16,
    /// The HTTPS listener's port (hearth's `[http]`).
    http_port: u16,
    /// The certificate clients pin, when given in [`ServerOpts::tls`].
    cert: Option<PathBuf>,
    child: Option<Child>,
}

/// Picks a free loopback port: bind port 0, read the port, close. Another process
/// could take it before the server binds it; on a test machine that is rare enough.
///
/// Never the same port twice in one test process: the kernel may hand a port just closed
/// out again at once, and a server given the same port for two listeners refuses to
/// start (tests run as threads of one process under `cargo test`).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("cannot bind a loopback port");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

fn unique_temp_dir() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "hearth-test-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("cannot create the test's temp dir");
    dir
}

fn write_file(path: &Path, contents: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, contents)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Server {
    /// Starts a server with `opts` and waits until both its ports accept connections.
    pub fn start(opts: ServerOpts) -> Server {
        let backend = Backend::from_env();
        let dir = unique_temp_dir();
        let log = dir.join("server.log");
        let mut server = Server {
            backend,
            config: dir.join(match backend {
                Backend::Hearth => "hearth.toml",
                Backend::Prosody => "prosody.cfg.lua",
            }),
            log,
            domain: opts.domain.clone(),
            c2s_port: free_port(),
            direct_tls_port: free_port(),
            http_port: free_port(),
            cert: opts.tls.as_ref().map(|(c, _)| c.clone()),
            child: None,
            dir,
        };
        let mut cmd = match backend {
            Backend::Hearth => server.hearth_command(&opts),
            Backend::Prosody => server.prosody_command(&opts),
        };
        let log_file = std::fs::File::create(&server.log).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
        server.child = Some(child);
        server.wait_until_listening();
        server
    }

    /// `Server::start(ServerOpts::default())`.
    pub fn start_default() -> Server {
        Server::start(ServerOpts::default())
    }

    fn hearth_command(&self, opts: &ServerOpts) -> Command {
        // No mDNS: a test server must not announce itself on the machine's network.
        let mut toml = format!(
            "domain = {}\ndata_dir = {}\nmdns = false\n\n[c2s]\nlisten = [\"127.0.0.1:{}\"]\n\
             direct_tls_listen = [\"127.0.0.1:{}\"]\n",
            toml_string(&opts.domain),
            toml_string(&self.data_dir().to_string_lossy()),
            self.c2s_port,
            self.direct_tls_port,
        );
        if let Some(n) = opts.threads {
            toml.insert_str(0, &format!("threads = {n}\n"));
        }
        if !opts.admins.is_empty() {
            let list: Vec<String> = opts.admins.iter().map(|a| toml_string(a)).collect();
            toml.insert_str(0, &format!("admins = [{}]\n", list.join(", ")));
        }
        if let Some(max) = opts.max_stanza_bytes {
            toml.push_str(&format!("max_stanza_bytes = {max}\n"));
        }
        if let Some(secs) = opts.negotiation_timeout_secs {
            toml.push_str(&format!("negotiation_timeout_secs = {secs}\n"));
        }
        match &opts.s2s {
            Some(body) => toml.push_str(&format!("\n[s2s]\n{body}")),
            None => toml.insert_str(0, "federation = false\n"),
        }
        if let Some((cert, key)) = &opts.tls {
            toml.push_str(&format!(
                "\n[tls]\ncert = {}\nkey = {}\n",
                toml_string(&cert.to_string_lossy()),
                toml_string(&key.to_string_lossy())
            ));
        }
        toml.push_str(&format!(
            "\n[http]\nlisten = [\"127.0.0.1:{}\"]\n{}",
            self.http_port,
            opts.http_toml
                .replace("{http_port}", &self.http_port.to_string())
        ));
        toml.push_str(&format!("\n[auth]\nscram_keys = {}\n", opts.scram_keys));
        toml.push_str(&opts.extra_toml);
        write_file(&self.config, &toml);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hearth"));
        // CI runs as root; hearth refuses that unless told (tests/systemd.rs checks it).
        cmd.args(["serve", "--allow-root", "--config"])
            .arg(&self.config);
        if let Some(level) = &opts.rust_log {
            cmd.env("RUST_LOG", level);
        } else if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "debug");
        }
        cmd
    }

    fn prosody_command(&self, opts: &ServerOpts) -> Command {
        let tls = self.data_dir().join("tls");
        std::fs::create_dir_all(&tls).unwrap();
        let status = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "2", "-subj"])
            .arg(format!("/CN={}", opts.domain))
            .arg("-addext")
            .arg(format!("subjectAltName=DNS:{}", opts.domain))
            .arg("-keyout")
            .arg(tls.join("key.pem"))
            .arg("-out")
            .arg(self.cert_path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl is needed for the Prosody backend");
        assert!(status.success(), "openssl could not make a certificate");
        let q = |p: &Path| toml_string(&p.to_string_lossy()); // Lua strings quote alike
        // PEP, private storage, bookmarks and vCards: what tests/pep_clients.rs's client
        // scripts were first checked against.
        let mut lua = format!(
            "run_as_root = true\ndaemonize = false\npidfile = {pid}\ndata_path = {data}\n\
             interfaces = {{ \"127.0.0.1\" }}\nc2s_ports = {{ {c2s} }}\n\
             c2s_direct_tls_ports = {{ {dtls} }}\ns2s_ports = {{}}\nhttp_ports = {{}}\n\
             https_ports = {{}}\ncomponent_ports = {{}}\n\
             modules_enabled = {{ \"roster\", \"saslauth\", \"tls\", \"disco\", \"ping\", \
             \"version\", \"time\", \"posix\", \"pep\", \"private\", \"bookmarks\", \
             \"vcard_legacy\" }}\n\
             modules_disabled = {{ \"s2s\", \"offline\", \"c2s_timeout\" }}\n\
             authentication = \"internal_hashed\"\nc2s_require_encryption = true\n\
             log = {{ debug = \"*console\" }}\n\
             ssl = {{ certificate = {cert}, key = {key} }}\n",
            pid = q(&self.dir.join("prosody.pid")),
            data = q(&self.data_dir()),
            c2s = self.c2s_port,
            dtls = self.direct_tls_port,
            cert = q(&self.cert_path()),
            key = q(&tls.join("key.pem")),
        );
        if let Some(max) = opts.max_stanza_bytes {
            lua.push_str(&format!("c2s_stanza_size_limit = {max}\n"));
        }
        lua.push_str(&format!("VirtualHost {}\n", toml_string(&opts.domain)));
        write_file(&self.config, &lua);
        let mut cmd = Command::new("prosody");
        cmd.arg("-F").arg("--config").arg(&self.config);
        cmd
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let addrs = [self.c2s_addr(), self.direct_tls_addr()];
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "{:?} exited during start-up with {status}; log:\n{}",
                    self.backend,
                    self.log()
                );
            }
            let listening = addrs
                .iter()
                .all(|a| TcpStream::connect_timeout(a, Duration::from_millis(200)).is_ok());
            if listening && self.cert_path().exists() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{:?} did not listen on {addrs:?} (with {} present) within {START_TIMEOUT:?}; log:\n{}",
                    self.backend,
                    self.cert_path().display(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Creates an account with the server's own admin command.
    pub fn add_user(&self, name: &str, password: &str) {
        let out = match self.backend {
            Backend::Hearth => {
                let file = self.dir.join(format!("password-{name}"));
                write_file(&file, password);
                Command::new(env!("CARGO_BIN_EXE_hearth"))
                    .args(["user", "add", name, "--password-file"])
                    .arg(&file)
                    .arg("--config")
                    .arg(&self.config)
                    .stdin(Stdio::null())
                    .output()
            }
            Backend::Prosody => Command::new("prosodyctl")
                .arg("--config")
                .arg(&self.config)
                .args(["register", name, &self.domain, password])
                .stdin(Stdio::null())
                .output(),
        }
        .expect("cannot run the add-user command");
        assert!(
            out.status.success(),
            "adding user {name} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `name@domain`.
    pub fn jid(&self, name: &str) -> String {
        format!("{name}@{}", self.domain)
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn c2s_port(&self) -> u16 {
        self.c2s_port
    }

    pub fn direct_tls_port(&self) -> u16 {
        self.direct_tls_port
    }

    /// The HTTPS listener's port.
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    pub fn c2s_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.c2s_port))
    }

    pub fn direct_tls_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.direct_tls_port))
    }

    /// The configuration file the server runs with (for admin commands).
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The certificate clients pin: `data_dir/tls/cert.pem`, generated on first start.
    pub fn cert_path(&self) -> PathBuf {
        if let Some(cert) = &self.cert {
            return cert.clone();
        }
        self.data_dir().join("tls").join("cert.pem")
    }

    /// A scratch directory for the test (inside the server's temp dir).
    pub fn scratch_dir(&self) -> &Path {
        &self.dir
    }

    /// Everything the server wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, then waits for the process: no shutdown at all, so only what the server
    /// had already committed survives (as after a crash or a power cut).
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("server already stopped");
        child.kill().expect("cannot SIGKILL the server");
        let _ = child.wait();
    }

    /// Starts the stopped (or killed) server again with the same configuration, data
    /// directory and ports, and waits until it listens. hearth only.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "server still running");
        assert_eq!(self.backend, Backend::Hearth, "restart is for hearth only");
        let log_file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hearth"));
        // Tests may run as root (CI containers); see `hearth_command`.
        cmd.args(["serve", "--allow-root", "--config"])
            .arg(&self.config);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "debug");
        }
        cmd.stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file);
        self.child = Some(cmd.spawn().expect("cannot restart hearth"));
        self.wait_until_listening();
    }

    /// Sends SIGTERM and asserts that the server exits with status 0 within
    /// [`STOP_TIMEOUT`] (killing it first if not, so the test ends either way).
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server already stopped");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("cannot run kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "server exited with {status} after SIGTERM; log:\n{}",
                    self.log()
                );
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "server still running {STOP_TIMEOUT:?} after SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let stderr = std::io::stderr();
            let mut err = stderr.lock();
            let _ = writeln!(
                err,
                "---- {:?} log ({}) ----\n{}\n---- end of log; files kept in {} ----",
                self.backend,
                self.log.display(),
                self.log(),
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
