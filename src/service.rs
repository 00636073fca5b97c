//! Running as a system service: the systemd notification protocol (`sd_notify(3)`)
//! and the refusal to serve as root.
//!
//! The notification protocol is one datagram per state change, `KEY=VALUE` lines, sent to
//! the `AF_UNIX` socket named in `$NOTIFY_SOCKET` (a path, or `@name` for the abstract
//! namespace). It is small enough to speak with std's `UnixDatagram`, so hearth needs
//! neither libsystemd nor a crate for it. Without `$NOTIFY_SOCKET` (not started by
//! systemd, or `Type=` other than `notify`) every call here does nothing.

use std::ffi::OsStr;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::time::Duration;

/// The service manager's notification socket, if there is one.
pub struct Notifier {
    /// An unbound datagram socket and the manager's address; `None` when not under systemd.
    socket: Option<(UnixDatagram, SocketAddr)>,
    /// How often to send `WATCHDOG=1`, when the unit sets `WatchdogSec=`.
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID`. A socket that cannot
    /// be set up is logged once and treated as absent: serving matters more than telling.
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|s| match connect(&s) {
            Ok(pair) => Some(pair),
            Err(e) => {
                log::warn!("NOTIFY_SOCKET={s:?}: {e}; not notifying systemd");
                None
            }
        });
        let watchdog = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        Notifier {
            watchdog: watchdog.filter(|_| socket.is_some()),
            socket,
        }
    }

    /// A notifier for the socket at `path`, for tests.
    pub fn for_socket(path: &Path) -> std::io::Result<Notifier> {
        Ok(Notifier {
            socket: Some(connect(path.as_os_str())?),
            watchdog: None,
        })
    }

    /// Whether there is a service manager listening.
    pub fn is_active(&self) -> bool {
        self.socket.is_some()
    }

    /// `READY=1`: every listener is bound, clients can connect (`Type=notify` start-up
    /// ends here, and units ordered after hearth start).
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// `STOPPING=1`: shutdown has begun, so systemd shows "deactivating" rather than a
    /// service that stopped answering.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }

    /// `WATCHDOG=1`: still alive.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// How often [`Notifier::watchdog`] should be called: half of `WatchdogSec=`, as
    /// `sd_watchdog_enabled(3)` advises; `None` when the unit has no watchdog.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    fn send(&self, msg: &str) {
        if let Some((sock, addr)) = &self.socket {
            // A lost notification only costs a start-up timeout; it is no reason to stop.
            if let Err(e) = sock.send_to_addr(msg.as_bytes(), addr) {
                log::warn!("cannot notify systemd ({msg:?}): {e}");
            }
        }
    }
}

fn connect(name: &OsStr) -> std::io::Result<(UnixDatagram, SocketAddr)> {
    use std::os::unix::ffi::OsStrExt as _;
    let bytes = name.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        // sd_notify(3): a leading '@' names a socket in the abstract namespace.
        Some(abstract_name) => {
            use std::os::linux::net::SocketAddrExt as _;
            SocketAddr::from_abstract_name(abstract_name)?
        }
        None if bytes.first() == Some(&b'/') => SocketAddr::from_pathname(Path::new(name))?,
        None => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "neither an absolute path nor an abstract socket name",
            ));
        }
    };
    Ok((UnixDatagram::unbound()?, addr))
}

/// Status text goes in one `STATUS=` line; a newline would start another key.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// Half of `$WATCHDOG_USEC`, if it is set, positive, and meant for this process
/// (`$WATCHDOG_PID` absent or equal to `pid`), as `sd_watchdog_enabled(3)` decides.
pub fn watchdog_interval(usec: Option<&str>, for_pid: Option<&str>, pid: u32) -> Option<Duration> {
    if let Some(p) = for_pid {
        if p.trim().parse::<u32>().ok()? != pid {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    Some(Duration::from_micros(usec / 2))
}

/// The effective user id of this process, from `/proc/self/status` (std has no
/// `geteuid`, and the crate forbids the `unsafe` a libc call would need).
pub fn effective_uid() -> Option<u32> {
    parse_effective_uid(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// The second field of the `Uid:` line of a `/proc/PID/status` file (real, effective,
/// saved, filesystem; proc(5)).
fn parse_effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Whether serving must be refused: running as root without being told it is wanted.
/// A server that parses input from strangers has no business holding root; the systemd
/// unit runs it as its own user and binds no port below 1024.
pub fn refuse_root(allow_root: bool) -> bool {
    !allow_root && effective_uid() == Some(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_uid_is_the_second_field() {
        let status =
            "Name:\thearth\nUmask:\t0022\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(parse_effective_uid(status), Some(0));
        assert_eq!(parse_effective_uid("Uid:\t7\t8\t9\t10\n"), Some(8));
        assert_eq!(parse_effective_uid("Name:\tx\n"), None);
        assert_eq!(parse_effective_uid("Uid:\t7\n"), None);
        // This process has one.
        assert!(effective_uid().is_some());
    }

    #[test]
    fn watchdog_interval_follows_sd_watchdog_enabled() {
        let half = Some(Duration::from_secs(15));
        assert_eq!(watchdog_interval(Some("30000000"), None, 42), half);
        assert_eq!(watchdog_interval(Some("30000000"), Some("42"), 42), half);
        assert_eq!(watchdog_interval(Some("30000000"), Some("41"), 42), None);
        assert_eq!(watchdog_interval(Some("30000000"), Some("x"), 42), None);
        assert_eq!(watchdog_interval(Some("0"), None, 42), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 42), None);
        assert_eq!(watchdog_interval(None, Some("42"), 42), None);
    }

    #[test]
    fn messages_arrive_as_datagrams() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = Notifier::for_socket(&path).unwrap();
        assert!(n.is_active());
        n.ready("serving a.local\non 5222");
        n.watchdog();
        n.stopping();
        let mut buf = [0u8; 256];
        let mut next = || {
            let len = server.recv(&mut buf).unwrap();
            String::from_utf8(buf[..len].to_vec()).unwrap()
        };
        assert_eq!(next(), "READY=1\nSTATUS=serving a.local on 5222");
        assert_eq!(next(), "WATCHDOG=1");
        assert_eq!(next(), "STOPPING=1\nSTATUS=stopping");
    }

    #[test]
    fn abstract_socket_names() {
        let name = format!("hearth-test-{}", std::process::id());
        use std::os::linux::net::SocketAddrExt as _;
        let server =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let (sock, addr) = connect(OsStr::new(&format!("@{name}"))).unwrap();
        sock.send_to_addr(b"READY=1", &addr).unwrap();
        let mut buf = [0u8; 16];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
    }

    #[test]
    fn relative_socket_names_are_refused() {
        assert!(connect(OsStr::new("notify")).is_err());
        assert!(connect(OsStr::new("")).is_err());
    }
}
