//! `hearth check`: everything that can be known before serving, without changing
//! anything — the configuration (already parsed by `main.rs`), the certificate (key,
//! names, dates; federation's roots), the listening ports, and the database's integrity.
//!
//! Exit codes, so a script or the image's first boot can tell what is wrong:
//! 0 all good (warnings may be printed), 2 the configuration is invalid (`main.rs`),
//! 3 a certificate problem, 4 a port hearth would listen on is taken or not allowed,
//! 5 a database problem. With several problems, the first of that order.

use std::net::{SocketAddr, TcpListener};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::net::tls::inspect_certificate;
use crate::storage::SCHEMA_VERSION;
use crate::storage::Storage;

/// A certificate that expires sooner than this is worth a warning.
const EXPIRY_WARNING_DAYS: i64 = 14;

/// What `hearth check` found: lines to print, and the exit code.
#[derive(Debug)]
pub struct CheckReport {
    pub lines: Vec<String>,
    pub code: u8,
}

impl CheckReport {
    fn ok(&mut self, line: String) {
        self.lines.push(format!("ok       {line}"));
    }

    fn warn(&mut self, line: String) {
        self.lines.push(format!("warning  {line}"));
    }

    fn problem(&mut self, code: u8, line: String) {
        self.lines.push(format!("PROBLEM  {line}"));
        if self.code == 0 {
            self.code = code;
        }
    }
}

/// Runs every check for `cfg`.
pub fn check(cfg: &Config) -> CheckReport {
    let mut r = CheckReport {
        lines: Vec::new(),
        code: 0,
    };
    r.ok(format!(
        "configuration: serving {} with data in {}",
        cfg.domain,
        cfg.data_dir.display()
    ));
    certificate(cfg, &mut r);
    ports(cfg, &mut r);
    database(cfg, &mut r);
    r
}

fn certificate(cfg: &Config, r: &mut CheckReport) {
    let info = match inspect_certificate(cfg) {
        Ok(Some(info)) => info,
        Ok(None) => {
            return r.ok("certificate: a self-signed one will be made at the first start".into());
        }
        Err(e) => return r.problem(3, format!("certificate: {e}")),
    };
    let path = info.path.display();
    if info.is_for_domain {
        r.ok(format!("certificate {path} names {}", cfg.domain));
    } else {
        r.problem(
            3,
            format!(
                "certificate {path} does not name {}: clients will refuse it",
                cfg.domain
            ),
        );
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    match (info.not_before, info.not_after) {
        (Some(nb), _) if nb > now => r.problem(
            3,
            format!("certificate {path} is not valid yet (is the clock right?)"),
        ),
        (_, Some(na)) if na < now => r.problem(3, format!("certificate {path} has expired")),
        (_, Some(na)) if na - now < EXPIRY_WARNING_DAYS * 86_400 => r.warn(format!(
            "certificate {path} expires in {} days",
            (na - now) / 86_400
        )),
        (_, Some(na)) => r.ok(format!(
            "certificate valid for {} more days, SHA-256 {}",
            (na - now) / 86_400,
            info.fingerprint
        )),
        _ => r.warn(format!("certificate {path}: its dates could not be read")),
    }
}

fn ports(cfg: &Config, r: &mut CheckReport) {
    let mut all: Vec<(&str, SocketAddr)> = Vec::new();
    all.extend(cfg.c2s.listen.iter().map(|a| ("clients", *a)));
    all.extend(
        cfg.c2s
            .direct_tls_listen
            .iter()
            .map(|a| ("clients, direct TLS", *a)),
    );
    if cfg.s2s.enabled {
        all.extend(cfg.s2s.listen.iter().map(|a| ("servers", *a)));
        all.extend(
            cfg.s2s
                .direct_tls_listen
                .iter()
                .map(|a| ("servers, direct TLS", *a)),
        );
    }
    all.extend(cfg.components.listen.iter().map(|a| ("components", *a)));
    if cfg.http.enabled {
        all.extend(cfg.http.listen.iter().map(|a| ("HTTPS", *a)));
    }
    all.extend(
        cfg.websocket
            .listen
            .iter()
            .map(|a| ("web clients, WebSocket", *a)),
    );
    if cfg.mqtt.enabled {
        all.extend(cfg.mqtt.listen.iter().map(|a| ("MQTT", *a)));
        all.extend(cfg.mqtt.tls_listen.iter().map(|a| ("MQTT, TLS", *a)));
    }
    for (what, addr) in all {
        match crate::net::listen::bind_blocking(addr) {
            Ok(l) => {
                drop::<TcpListener>(l);
                r.ok(format!("port {addr} ({what}) is free"));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => r.problem(
                4,
                format!("port {addr} ({what}) is in use: is hearth (or another server) running?"),
            ),
            Err(e) => r.problem(4, format!("port {addr} ({what}): {e}")),
        }
    }
}

fn database(cfg: &Config, r: &mut CheckReport) {
    match Storage::inspect(&cfg.data_dir) {
        Ok(None) => r.ok("database: none yet, made at the first start".into()),
        Ok(Some((version, verdict))) if verdict == "ok" => {
            if version > SCHEMA_VERSION {
                r.problem(
                    5,
                    format!(
                        "database: schema version {version} is newer than this hearth ({SCHEMA_VERSION})"
                    ),
                );
            } else {
                r.ok(format!("database: intact (schema version {version})"));
            }
        }
        Ok(Some((_, verdict))) => r.problem(5, format!("database: damaged: {verdict}")),
        Err(e) => r.problem(5, format!("database: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(dir: &Path, extra: &str) -> Config {
        let toml = format!(
            "domain = \"check.example\"\ndata_dir = \"{}\"\nfederation = false\n{extra}",
            dir.display()
        );
        Config::from_toml_str(&toml, Path::new("/tmp/hearth.toml")).unwrap()
    }

    #[test]
    fn a_fresh_machine_passes() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(
            dir.path(),
            "[c2s]\nlisten = [\"127.0.0.1:0\"]\ndirect_tls_listen = []\n",
        );
        let r = check(&cfg);
        assert_eq!(r.code, 0, "{:?}", r.lines);
        assert!(
            r.lines
                .iter()
                .any(|l| l.contains("will be made at the first start"))
        );
        assert!(r.lines.iter().any(|l| l.contains("database: none yet")));
    }

    #[test]
    fn a_taken_port_is_exit_code_4() {
        let dir = tempfile::tempdir().unwrap();
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let cfg = config(
            dir.path(),
            &format!("[c2s]\nlisten = [\"127.0.0.1:{port}\"]\ndirect_tls_listen = []\n"),
        );
        let r = check(&cfg);
        assert_eq!(r.code, 4, "{:?}", r.lines);
        assert!(
            r.lines
                .iter()
                .any(|l| l.starts_with("PROBLEM") && l.contains("in use"))
        );
    }

    #[test]
    fn a_taken_mqtt_port_is_exit_code_4() {
        let dir = tempfile::tempdir().unwrap();
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let cfg = config(
            dir.path(),
            &format!(
                "[c2s]\nlisten = [\"127.0.0.1:0\"]\ndirect_tls_listen = []\n\
                 [mqtt]\nenabled = true\ntls_listen = [\"127.0.0.1:{port}\"]\n"
            ),
        );
        let r = check(&cfg);
        assert_eq!(r.code, 4, "{:?}", r.lines);
        assert!(r.lines.iter().any(|l| l.contains("(MQTT, TLS) is in use")));
    }

    #[test]
    fn a_damaged_database_is_exit_code_5() {
        let dir = tempfile::tempdir().unwrap();
        // A real database, then a page of it overwritten.
        drop(Storage::open(dir.path()).unwrap());
        let db = dir.path().join(crate::storage::DB_FILE_NAME);
        let mut bytes = std::fs::read(&db).unwrap();
        let len = bytes.len();
        for b in &mut bytes[len / 2..] {
            *b = 0x55;
        }
        std::fs::write(&db, bytes).unwrap();
        let cfg = config(
            dir.path(),
            "[c2s]\nlisten = [\"127.0.0.1:0\"]\ndirect_tls_listen = []\n",
        );
        let r = check(&cfg);
        assert_eq!(r.code, 5, "{:?}", r.lines);
    }

    #[test]
    fn a_certificate_for_another_domain_is_exit_code_3() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["other.example".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.path().join("c.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("k.pem"), key.serialize_pem()).unwrap();
        let cfg = config(
            dir.path(),
            &format!(
                "[c2s]\nlisten = [\"127.0.0.1:0\"]\ndirect_tls_listen = []\n[tls]\ncert = \"{0}/c.pem\"\nkey = \"{0}/k.pem\"\n",
                dir.path().display()
            ),
        );
        let r = check(&cfg);
        assert_eq!(r.code, 3, "{:?}", r.lines);
        assert!(
            r.lines
                .iter()
                .any(|l| l.contains("does not name check.example"))
        );
    }
}
