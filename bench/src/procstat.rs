//! Readings from the kernel: the server's CPU time and RSS from /proc/PID (proc(5)), the
//! generator's own CPU time, and the open-file limit.

use std::fs;
use std::io;

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use rustix::time::{ClockId, clock_gettime};

/// User + system CPU seconds of process `pid`, all threads included (proc(5) `stat`
/// fields 14 and 15, in clock ticks).
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces and parentheses: fields resume after the
    // last ')'. The first field after it is field 3 (state).
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other("malformed /proc/PID/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> io::Result<u64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::other("malformed /proc/PID/stat"))
    };
    let ticks = field(14)? + field(15)?;
    Ok(ticks as f64 / rustix::param::clock_ticks_per_second() as f64)
}

/// Resident set size of process `pid` in KiB (proc(5) `status`, `VmRSS`).
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    status_field(pid, "VmRSS:")
}

/// Threads of process `pid` (proc(5) `status`, `Threads`).
pub fn threads(pid: u32) -> io::Result<u64> {
    status_field(pid, "Threads:")
}

/// A numeric field of /proc/PID/status (kB for the memory ones).
fn status_field(pid: u32, field: &str) -> io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::other(format!("no {field} in /proc/PID/status")))
}

/// Bytes process `pid` caused to be written to the storage layer (proc(5) `io`,
/// `write_bytes`, counted when pages are dirtied). Reading another user's process needs
/// root (ptrace access mode).
pub fn write_bytes(pid: u32) -> io::Result<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/io"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::other("no write_bytes in /proc/PID/io"))
}

/// Established TCP connections (IPv4 and IPv6) that process `pid` holds: the inodes of
/// its socket descriptors (`/proc/PID/fd`, readable for another user's process only as
/// root) looked up in its network namespace's tables (`/proc/PID/net/tcp`, `tcp6`;
/// state `01` is ESTABLISHED).
pub fn tcp_established(pid: u32) -> io::Result<u64> {
    let mut inodes = std::collections::HashSet::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(target) = fs::read_link(entry?.path()) else {
            continue; // closed meanwhile
        };
        if let Some(ino) = target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:["))
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse::<u64>().ok())
        {
            inodes.insert(ino);
        }
    }
    let mut count = 0;
    for table in ["tcp", "tcp6"] {
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue; // no IPv6
        };
        // "sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid
        // timeout inode ...": the state is field 4, the inode field 10.
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let is_ours = fields
                .get(9)
                .and_then(|i| i.parse::<u64>().ok())
                .is_some_and(|i| inodes.contains(&i));
            if fields.get(3) == Some(&"01") && is_ours {
                count += 1;
            }
        }
    }
    Ok(count)
}

/// CPU seconds (user + system, all threads) this process has used so far: the same sum
/// `getrusage(RUSAGE_SELF)` gives, read from the process CPU-time clock.
pub fn own_cpu_seconds() -> f64 {
    let t = clock_gettime(ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// Raises the soft open-file limit to the hard limit so thousands of sessions fit.
/// Returns the soft limit now in force.
pub fn raise_nofile_limit() -> Option<u64> {
    let limit = getrlimit(Resource::Nofile);
    let new = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    if setrlimit(Resource::Nofile, new).is_ok() {
        new.current
    } else {
        limit.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
        assert!(rss_kib(pid).unwrap() > 0);
        assert!(threads(pid).unwrap() >= 1);
        assert!(own_cpu_seconds() > 0.0);
        assert!(write_bytes(pid).is_ok());
    }

    #[test]
    fn counts_own_tcp_connections() {
        let pid = std::process::id();
        let before = tcp_established(pid).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        // Both ends are ours; other tests of this binary may open connections meanwhile.
        assert!(tcp_established(pid).unwrap() >= before + 2);
        drop((client, server));
    }
}
