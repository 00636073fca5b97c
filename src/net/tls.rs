//! TLS for client connections: the rustls server configuration, the certificate (from
//! files, or self-signed and generated on first start), and SASL channel bindings.
//!
//! - STARTTLS (RFC 6120 §5) and direct TLS (XEP-0368) share one certificate; the direct
//!   TLS configuration differs only in offering ALPN `xmpp-client`.
//! - TLS 1.3 and 1.2 only, with rustls's `ring` provider (small, cross-compiles with only a
//!   C compiler). No client certificates. rustls never renegotiates.
//! - Channel bindings for SCRAM-*-PLUS: `tls-exporter` (RFC 9266) from the connection, and
//!   `tls-server-end-point` (RFC 5929 §4.1), a hash of our certificate computed once per
//!   [`TlsSetup`], not once per connection.
//!
//! [`TlsSetup::load`] can be called again (on SIGHUP) to pick up renewed certificate files.
//! Each connection should keep the `Arc<TlsSetup>` it was accepted with, so that its
//! `tls-server-end-point` hash is that of the certificate its client actually saw.

use crate::stream::sasl::ChannelBindings;
use std::fmt;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_rustls::pki_types::pem::{self, PemObject};
use futures_rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use futures_rustls::rustls::{
    self, InconsistentKeys, ProtocolVersion, ServerConfig, ServerConnection,
};
use log::{info, warn};
use rustls::server::{ParsedCertificate, ServerSessionMemoryCache};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::config::{CertificateSource, Config};
use crate::net::s2s_tls::{S2sTls, S2sTlsError};

/// ALPN protocol name for direct TLS c2s connections (XEP-0368 §3).
pub const ALPN_XMPP_CLIENT: &[u8] = b"xmpp-client";

/// RFC 9266 §2: the exporter label of the `tls-exporter` channel binding.
const EXPORTER_LABEL: &[u8] = b"EXPORTER-Channel-Binding";

/// Resumable sessions kept in memory. A household has a few dozen devices at most; phones
/// reconnect often (network changes), and resumption spares the Pi a full handshake. Each
/// entry is a few hundred bytes.
const SESSION_CACHE_ENTRIES: usize = 64;

/// TLS 1.3 tickets sent after a full handshake: one is enough for the next reconnection.
const TLS13_TICKETS: usize = 1;

/// Validity of a generated certificate. Long, because users pin it on first use and a new
/// one means every device asks again.
const SELF_SIGNED_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// Where the generated certificate lives, under the data directory.
const SELF_SIGNED_DIR: &str = "tls";

/// Everything TLS that the listeners and the SASL layer need, built once per
/// (re)load of the certificate.
#[derive(Debug)]
pub struct TlsSetup {
    /// For STARTTLS listeners (RFC 6120 §5).
    config: Arc<ServerConfig>,
    /// For direct TLS listeners (XEP-0368): `config` plus ALPN.
    direct_config: Arc<ServerConfig>,
    /// RFC 5929 §4.1 hash of our end-entity certificate; `None` when the certificate's
    /// signature algorithm leaves it undefined (e.g. Ed25519, RSA-PSS).
    end_point_hash: Option<Box<[u8]>>,
    /// SHA-256 of the end-entity certificate, what users compare when pinning.
    fingerprint: [u8; 32],
    /// Whether the certificate names the configured domain; a warning, not an error, for
    /// configured files (the admin may know better), a reason to regenerate a generated one.
    is_for_domain: bool,
    /// The certificate and its key, for the federation configurations.
    certified: Arc<CertifiedKey>,
    /// Federation's configurations, when it is on ([`TlsSetup::with_s2s`]).
    s2s: Option<S2sTls>,
}

impl TlsSetup {
    /// Loads the configured certificate, or the generated one (generating it first if it
    /// is missing or made for another domain), and builds the server configurations.
    /// Logs the certificate's SHA-256 fingerprint.
    pub fn load(cfg: &Config) -> Result<TlsSetup, TlsError> {
        let setup = Self::load_certificate(cfg)?;
        if cfg.s2s.enabled {
            setup.with_s2s(cfg.s2s.ca_file.as_deref())
        } else {
            Ok(setup)
        }
    }

    fn load_certificate(cfg: &Config) -> Result<TlsSetup, TlsError> {
        match &cfg.tls.certificate {
            CertificateSource::Files { cert, key } => {
                let setup = Self::from_files(cert, key, &cfg.domain)?;
                if !setup.is_for_domain {
                    warn!(
                        "TLS certificate {} does not name {}; clients will reject it",
                        cert.display(),
                        cfg.domain
                    );
                }
                info!(
                    "TLS certificate {}, SHA-256 fingerprint {}",
                    cert.display(),
                    setup.fingerprint()
                );
                Ok(setup)
            }
            CertificateSource::SelfSigned => {
                Self::self_signed(&cfg.data_dir.join(SELF_SIGNED_DIR), &cfg.domain)
            }
        }
    }

    /// The configuration for STARTTLS listeners.
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.config
    }

    /// The configuration for direct TLS listeners (XEP-0368), with ALPN `xmpp-client`.
    pub fn direct_config(&self) -> &Arc<ServerConfig> {
        &self.direct_config
    }

    /// The `tls-server-end-point` channel binding data (RFC 5929 §4.1), if defined for
    /// our certificate.
    pub fn tls_server_end_point(&self) -> Option<&[u8]> {
        self.end_point_hash.as_deref()
    }

    /// Both channel bindings of a connection accepted with this setup's configuration.
    /// The channel bindings a SASL `-PLUS` mechanism may use on `conn`.
    pub fn channel_bindings(&self, conn: &ServerConnection) -> ChannelBindings {
        ChannelBindings {
            tls_exporter: tls_exporter(conn).map(|k| k.to_vec()),
            tls_server_end_point: self.end_point_hash.as_deref().map(<[u8]>::to_vec),
        }
    }

    /// The certificate's SHA-256 fingerprint as colon-separated hex (`AB:CD:…`), the form
    /// clients show when asking the user to trust a certificate.
    pub fn fingerprint(&self) -> String {
        let mut out = String::with_capacity(self.fingerprint.len() * 3);
        for (i, b) in self.fingerprint.iter().enumerate() {
            if i > 0 {
                out.push(':');
            }
            out.push_str(&format!("{b:02X}"));
        }
        out
    }

    fn from_files(cert_path: &Path, key_path: &Path, domain: &str) -> Result<TlsSetup, TlsError> {
        let certs = read_certs(cert_path)?;
        let key = read_key(key_path)?;
        Self::build(certs, key, cert_path, key_path, domain)
    }

    /// Whether the certificate names the configured domain (clients check that).
    pub fn is_for_domain(&self) -> bool {
        self.is_for_domain
    }

    fn build(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        cert_path: &Path,
        key_path: &Path,
        domain: &str,
    ) -> Result<TlsSetup, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let signing_key =
            provider
                .key_provider
                .load_private_key(key)
                .map_err(|e| TlsError::BadKey {
                    path: key_path.to_owned(),
                    reason: e.to_string(),
                })?;
        let leaf = certs
            .first()
            .cloned()
            .ok_or_else(|| TlsError::NoCertificate {
                path: cert_path.to_owned(),
            })?;
        let certified = Arc::new(CertifiedKey::new(certs, signing_key));
        match certified.keys_match() {
            // `Unknown`: the key type cannot tell its public key; rustls accepts that too.
            Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(_)) => {
                return Err(TlsError::KeyMismatch {
                    cert: cert_path.to_owned(),
                    key: key_path.to_owned(),
                });
            }
            Err(e) => {
                return Err(TlsError::BadCertificate {
                    path: cert_path.to_owned(),
                    reason: e.to_string(),
                });
            }
        }

        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(TlsError::Rustls)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified.clone())));
        // Bounded memory: a small stateful session cache and one ticket per handshake
        // (rustls's default ticketer issues no stateless tickets, so nothing else grows).
        config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
        config.send_tls13_tickets = TLS13_TICKETS;
        // No 0-RTT data (replayable) and the default record size; both are rustls's
        // defaults, stated here because they are decisions.
        config.max_early_data_size = 0;
        config.max_fragment_size = None;

        let direct_config = direct_tls_config(&config);
        Ok(TlsSetup {
            config: Arc::new(config),
            direct_config,
            end_point_hash: end_point_hash(&leaf),
            fingerprint: Sha256::digest(leaf.as_ref()).into(),
            is_for_domain: covers_domain(&leaf, domain),
            certified,
            s2s: None,
        })
    }

    /// Adds federation's configurations (incoming and outgoing links), trusting the roots
    /// in `ca_file` for peers' certificates.
    pub fn with_s2s(mut self, ca_file: Option<&Path>) -> Result<TlsSetup, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let s2s = S2sTls::new(provider, self.certified.clone(), ca_file).map_err(TlsError::S2s)?;
        self.s2s = Some(s2s);
        Ok(self)
    }

    /// Federation's configurations, when it is on.
    pub fn s2s(&self) -> Option<&S2sTls> {
        self.s2s.as_ref()
    }

    /// Loads `<dir>/cert.pem` and `<dir>/key.pem`, generating them when absent, incomplete
    /// (an interrupted first start) or made for another domain (the host was renamed).
    fn self_signed(dir: &Path, domain: &str) -> Result<TlsSetup, TlsError> {
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        let have_cert = exists(&cert_path)?;
        let have_key = exists(&key_path)?;
        if have_cert != have_key {
            warn!(
                "{}: only one of cert.pem and key.pem exists; generating both anew",
                dir.display()
            );
        }
        let mut setup = None;
        if have_cert && have_key {
            let existing = Self::from_files(&cert_path, &key_path, domain)?;
            if existing.is_for_domain {
                setup = Some(existing);
            } else {
                warn!(
                    "{}: generated certificate is not for {domain}; generating a new one \
                     (clients that pinned the old one will ask again)",
                    cert_path.display()
                );
            }
        }
        let (setup, generated) = match setup {
            Some(setup) => (setup, false),
            None => {
                generate_self_signed(dir, &cert_path, &key_path, domain)?;
                (Self::from_files(&cert_path, &key_path, domain)?, true)
            }
        };
        info!(
            "TLS certificate {} (self-signed{}), SHA-256 fingerprint {}",
            cert_path.display(),
            if generated { ", generated now" } else { "" },
            setup.fingerprint()
        );
        Ok(setup)
    }
}

/// What `hearth check` says about the certificate the server would use.
#[derive(Debug)]
pub struct CertificateInfo {
    /// The certificate file.
    pub path: PathBuf,
    /// SHA-256 of the end-entity certificate, as clients show it.
    pub fingerprint: String,
    /// Whether it names the configured domain.
    pub is_for_domain: bool,
    /// Its validity (RFC 5280 §4.1.2.5), seconds since the Unix epoch.
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
}

/// Loads and checks the configured certificate and key (or the generated ones, if they
/// exist yet) without generating or writing anything: the key matches, the names, the
/// validity. `None` when a self-signed one would be generated at the first start.
pub fn inspect_certificate(cfg: &Config) -> Result<Option<CertificateInfo>, TlsError> {
    let (cert, key) = match &cfg.tls.certificate {
        CertificateSource::Files { cert, key } => (cert.clone(), key.clone()),
        CertificateSource::SelfSigned => {
            let dir = cfg.data_dir.join(SELF_SIGNED_DIR);
            let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
            if !exists(&cert)? || !exists(&key)? {
                return Ok(None);
            }
            (cert, key)
        }
    };
    let setup = TlsSetup::from_files(&cert, &key, &cfg.domain)?;
    let leaf = read_certs(&cert)?.into_iter().next();
    let (not_before, not_after) = leaf
        .as_ref()
        .and_then(|c| validity_of(c.as_ref()))
        .map_or((None, None), |(a, b)| (Some(a), Some(b)));
    if cfg.s2s.enabled {
        // The roots federation would trust load too.
        setup
            .with_s2s(cfg.s2s.ca_file.as_deref())
            .map(|s| {
                let fingerprint = s.fingerprint();
                CertificateInfo {
                    path: cert.clone(),
                    fingerprint,
                    is_for_domain: s.is_for_domain,
                    not_before,
                    not_after,
                }
            })
            .map(Some)
    } else {
        Ok(Some(CertificateInfo {
            path: cert,
            fingerprint: setup.fingerprint(),
            is_for_domain: setup.is_for_domain,
            not_before,
            not_after,
        }))
    }
}

/// notBefore and notAfter of a DER certificate (RFC 5280 §4.1.2.5), in Unix seconds.
fn validity_of(der: &[u8]) -> Option<(i64, i64)> {
    const SEQUENCE: u8 = 0x30;
    let (SEQUENCE, certificate, _) = der_tlv(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = der_tlv(certificate)? else {
        return None;
    };
    let mut rest = tbs;
    // [0] EXPLICIT version, if present.
    if rest.first() == Some(&0xa0) {
        rest = der_tlv(rest)?.2;
    }
    let (_serial, _, rest) = der_tlv(rest)?;
    let (_signature, _, rest) = der_tlv(rest)?;
    let (_issuer, _, rest) = der_tlv(rest)?;
    let (SEQUENCE, validity, _) = der_tlv(rest)? else {
        return None;
    };
    let (t1, v1, rest) = der_tlv(validity)?;
    let (t2, v2, _) = der_tlv(rest)?;
    Some((der_time(t1, v1)?, der_time(t2, v2)?))
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) in Unix seconds.
fn der_time(tag: u8, v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        // RFC 5280 §4.1.2.5.1: YY < 50 is 20YY.
        0x17 if s.len() == 12 => {
            let yy: i64 = s.get(..2)?.parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, s.get(2..)?)
        }
        0x18 if s.len() == 14 => (s.get(..4)?.parse().ok()?, s.get(4..)?),
        _ => return None,
    };
    let n = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let (month, day, hour, min, sec) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?);
    // Days since 1970-01-01 (civil calendar; H. Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + min * 60 + sec)
}

/// The STARTTLS configuration, for callers that need nothing else from [`TlsSetup`].
pub fn server_config(cfg: &Config) -> Result<Arc<ServerConfig>, TlsError> {
    Ok(TlsSetup::load(cfg)?.config)
}

/// `base` plus ALPN `xmpp-client` for direct TLS listeners (XEP-0368 §3). rustls only
/// refuses clients whose ALPN list lacks it; clients that send no ALPN still connect.
pub fn direct_tls_config(base: &ServerConfig) -> Arc<ServerConfig> {
    let mut config = base.clone();
    config.alpn_protocols = vec![ALPN_XMPP_CLIENT.to_vec()];
    Arc::new(config)
}

/// The `tls-exporter` channel binding (RFC 9266 §2): 32 bytes of exported keying material
/// with label "EXPORTER-Channel-Binding" and no context.
///
/// Only for TLS 1.3: RFC 9266 allows it on TLS 1.2 only with the extended master secret
/// (RFC 7627), which rustls does not report, so TLS 1.2 gets `None` (the SASL layer then
/// does not offer `-PLUS` with this binding). `None` as well before the handshake ends.
pub fn tls_exporter(conn: &ServerConnection) -> Option<[u8; 32]> {
    if conn.is_handshaking() || conn.protocol_version() != Some(ProtocolVersion::TLSv1_3) {
        return None;
    }
    // In TLS 1.3 "no context" and an empty context give the same value (RFC 8446 §7.5).
    conn.export_keying_material([0u8; 32], EXPORTER_LABEL, None)
        .ok()
}

/// Why the TLS set-up failed; every variant names the file concerned.
#[derive(Debug)]
pub enum TlsError {
    /// A configured file does not exist.
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// A file exists but cannot be read (permissions, I/O error).
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        error: io::Error,
    },
    /// A file is not valid PEM (broken base64, unterminated section).
    BadPem {
        /// The file.
        path: PathBuf,
        /// The parser's reason.
        reason: String,
    },
    /// The certificate file holds no certificate.
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no private key.
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The certificate is not a valid X.509 certificate.
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// rustls's reason.
        reason: String,
    },
    /// The key is malformed or of an unsupported type.
    BadKey {
        /// The file.
        path: PathBuf,
        /// rustls's reason.
        reason: String,
    },
    /// The key is not the one the (first) certificate was issued for.
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The self-signed certificate could not be generated.
    Generate {
        /// The directory it was to be written to.
        dir: PathBuf,
        /// rcgen's reason.
        reason: String,
    },
    /// A generated file or its directory could not be written.
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's reason.
        error: io::Error,
    },
    /// rustls refused the configuration itself (a bug rather than bad input).
    Rustls(rustls::Error),
    /// Federation's roots or configurations.
    S2s(S2sTlsError),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Missing { path } => write!(f, "{}: file not found", path.display()),
            TlsError::Unreadable { path, error } => {
                write!(f, "{}: cannot read: {error}", path.display())
            }
            TlsError::BadPem { path, reason } => {
                write!(f, "{}: not a valid PEM file: {reason}", path.display())
            }
            TlsError::NoCertificate { path } => write!(
                f,
                "{}: no certificate found (expected a PEM \"BEGIN CERTIFICATE\" block)",
                path.display()
            ),
            TlsError::NoKey { path } => write!(
                f,
                "{}: no private key found (expected a PEM \"BEGIN PRIVATE KEY\", \
                 \"BEGIN EC PRIVATE KEY\" or \"BEGIN RSA PRIVATE KEY\" block)",
                path.display()
            ),
            TlsError::BadCertificate { path, reason } => {
                write!(f, "{}: unusable certificate: {reason}", path.display())
            }
            TlsError::BadKey { path, reason } => {
                write!(f, "{}: unusable private key: {reason}", path.display())
            }
            TlsError::KeyMismatch { cert, key } => write!(
                f,
                "{}: the private key does not match the certificate in {}",
                key.display(),
                cert.display()
            ),
            TlsError::Generate { dir, reason } => write!(
                f,
                "{}: cannot generate a self-signed certificate: {reason}",
                dir.display()
            ),
            TlsError::Write { path, error } => {
                write!(f, "{}: cannot write: {error}", path.display())
            }
            TlsError::Rustls(e) => write!(f, "TLS configuration: {e}"),
            TlsError::S2s(e) => write!(f, "federation: {e}"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Unreadable { error, .. } | TlsError::Write { error, .. } => Some(error),
            TlsError::Rustls(e) => Some(e),
            _ => None,
        }
    }
}

fn exists(path: &Path) -> Result<bool, TlsError> {
    path.try_exists().map_err(|error| TlsError::Unreadable {
        path: path.to_owned(),
        error,
    })
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|error| match error.kind() {
        io::ErrorKind::NotFound => TlsError::Missing {
            path: path.to_owned(),
        },
        _ => TlsError::Unreadable {
            path: path.to_owned(),
            error,
        },
    })
}

fn bad_pem(path: &Path, e: pem::Error) -> TlsError {
    TlsError::BadPem {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// The certificate chain in `path`, end-entity certificate first; never empty.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_pem(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, SEC1 or PKCS#1) in `path`.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_owned(),
        },
        e => bad_pem(path, e),
    })
}

/// Whether `cert` is valid for `domain` by the rules a client applies (SAN dNSName or
/// iPAddress, wildcards; RFC 6125 as implemented by webpki).
fn covers_domain(cert: &CertificateDer<'_>, domain: &str) -> bool {
    let Some(name) = san_form(domain) else {
        return false;
    };
    let (Ok(server_name), Ok(parsed)) = (
        ServerName::try_from(name.as_str()),
        ParsedCertificate::try_from(cert),
    ) else {
        return false;
    };
    rustls::client::verify_server_name(&parsed, &server_name).is_ok()
}

/// The domain as it appears in a certificate: A-labels for an internationalized name
/// (RFC 6125 §6.4.2), an IPv6 literal without its brackets.
fn san_form(domain: &str) -> Option<String> {
    if let Some(v6) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        return Some(v6.to_owned());
    }
    idna::domain_to_ascii(domain).ok()
}

/// The names and addresses a phone on the home network may reach this machine by, besides
/// the domain: its host name, that name under `.local` (mDNS, what `hearth` advertises),
/// and the addresses of its interfaces other than loopback, as they are when the
/// certificate is made (a DHCP address that changes later is not a name clients should
/// rely on; the `.local` name follows it).
fn lan_names(domain: &str) -> Vec<String> {
    let hostname = fs::read_to_string("/proc/sys/kernel/hostname").ok();
    let mut names = Vec::new();
    let local = crate::mdns::host_name(domain, hostname.as_deref());
    names.push(local.trim_end_matches('.').to_owned());
    if let Some(h) = hostname.as_deref().map(str::trim) {
        let ok = !h.is_empty()
            && h != "localhost"
            && h.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if ok {
            names.push(h.to_ascii_lowercase());
        }
    }
    if let Ok(interfaces) = if_addrs::get_if_addrs() {
        for i in interfaces.iter().filter(|i| !i.is_loopback()) {
            let ip = i.ip();
            // Link-local IPv6 needs a zone to be used, which a certificate cannot name.
            if matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local()) {
                continue;
            }
            names.push(ip.to_string());
        }
    }
    names
}

/// Generates an ECDSA P-256 key (small and quick on a Pi) and a self-signed certificate
/// for `domain` and its subdomains (`*.domain`, for components such as a MUC service),
/// and for the names and addresses of this machine on the LAN ([`lan_names`]), so a
/// client that connects by `pi.local` or `192.168.1.20` finds its name in it too; and
/// writes them: the directory 0700, the key 0600, each file atomically.
fn generate_self_signed(
    dir: &Path,
    cert_path: &Path,
    key_path: &Path,
    domain: &str,
) -> Result<(), TlsError> {
    let fail = |reason: String| TlsError::Generate {
        dir: dir.to_owned(),
        reason,
    };
    let name = san_form(domain).ok_or_else(|| fail(format!("{domain} is not a valid name")))?;
    let mut sans = if name.parse::<IpAddr>().is_ok() {
        vec![name.clone()]
    } else {
        vec![name.clone(), format!("*.{name}")]
    };
    for extra in lan_names(&name) {
        if !sans.contains(&extra) && sans.len() < 32 {
            sans.push(extra);
        }
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| fail(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(sans).map_err(|e| fail(e.to_string()))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "hearth (self-signed)");
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    // serverAuth for clients; clientAuth for when this server connects to others (s2s).
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let (not_before, not_after) = validity(SystemTime::now());
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + not_before;
    params.not_after = rcgen::date_time_ymd(1970, 1, 1) + not_after;
    let cert = params.self_signed(&key).map_err(|e| fail(e.to_string()))?;

    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|error| TlsError::Write {
            path: dir.to_owned(),
            error,
        })?;
    // Key first: a start interrupted between the two leaves a key without a certificate,
    // which the next start regenerates, never a certificate without its key.
    write_atomically(key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_atomically(cert_path, cert.pem().as_bytes(), 0o644)?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|error| TlsError::Write {
            path: dir.to_owned(),
            error,
        })?;
    Ok(())
}

/// The validity period of a generated certificate, as offsets from the Unix epoch.
///
/// A Raspberry Pi has no real-time clock: on a first boot before NTP the clock may say
/// 1970. Clients check validity with their own (correct) clocks, so a certificate dated
/// from a wrong clock would be "expired" for ever. Hence a floor on the start date.
fn validity(now: SystemTime) -> (Duration, Duration) {
    /// 2025-01-01T00:00:00Z, before any hearth release.
    const FLOOR: Duration = Duration::from_secs(1_735_689_600);
    /// Tolerance for clients whose clocks run a little behind.
    const SKEW: Duration = Duration::from_secs(24 * 60 * 60);
    let now = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let start = now.max(FLOOR + SKEW) - SKEW;
    (start, start + SKEW + SELF_SIGNED_VALIDITY)
}

/// Writes `contents` to a temporary file with `mode`, syncs it and renames it over `path`,
/// so a power cut leaves either the old file or the new one, never half of one.
fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    let write_err = |error| TlsError::Write {
        path: path.to_owned(),
        error,
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    // A leftover from an interrupted start; it may have the wrong mode, so never reuse it.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(write_err(e)),
        _ => {}
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(write_err)?;
    file.write_all(contents).map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    fs::rename(&tmp, path).map_err(write_err)
}

/// RFC 5929 §4.1: the hash of our end-entity certificate, with the hash function of the
/// certificate's signature algorithm, except that MD5 and SHA-1 become SHA-256. Undefined
/// (`None`) for algorithms with no single hash function, and for anything unrecognized.
fn end_point_hash(cert: &CertificateDer<'_>) -> Option<Box<[u8]>> {
    let der = cert.as_ref();
    let hash: Box<[u8]> = match signature_algorithm(der)? {
        // md5WithRSAEncryption, sha1WithRSAEncryption, sha256WithRSAEncryption,
        // ecdsa-with-SHA1, ecdsa-with-SHA256
        oid::MD5_RSA | oid::SHA1_RSA | oid::SHA256_RSA | oid::ECDSA_SHA1 | oid::ECDSA_SHA256 => {
            Box::from(Sha256::digest(der).as_slice())
        }
        oid::SHA384_RSA | oid::ECDSA_SHA384 => Box::from(Sha384::digest(der).as_slice()),
        oid::SHA512_RSA | oid::ECDSA_SHA512 => Box::from(Sha512::digest(der).as_slice()),
        _ => return None,
    };
    Some(hash)
}

/// DER encodings (contents octets) of the signature algorithm OIDs RFC 5929 §4.1 covers.
mod oid {
    pub const MD5_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x04];
    pub const SHA1_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05];
    pub const SHA256_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
    pub const SHA384_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
    pub const SHA512_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
    pub const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
    pub const ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    pub const ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
    pub const ECDSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];
}

/// The OID of `Certificate.signatureAlgorithm` (RFC 5280 §4.1.1.2):
/// `SEQUENCE { tbsCertificate SEQUENCE, signatureAlgorithm SEQUENCE { OID, … }, … }`.
fn signature_algorithm(der: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    let (SEQUENCE, certificate, _) = der_tlv(der)? else {
        return None;
    };
    let (SEQUENCE, _tbs, rest) = der_tlv(certificate)? else {
        return None;
    };
    let (SEQUENCE, algorithm, _) = der_tlv(rest)? else {
        return None;
    };
    match der_tlv(algorithm)? {
        (OID, oid, _) => Some(oid),
        _ => None,
    }
}

/// Splits one DER tag-length-value off `input`: `(tag, contents, rest)`. Only the
/// single-byte tags and definite lengths that X.509 uses at this level.
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        // 0 would be BER's indefinite length; more than 4 octets is no certificate.
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (octets, rest) = rest.split_at(n);
        let len = octets
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (contents, rest) = rest.split_at(len);
    Some((tag, contents, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{ClientConfig, ClientConnection, RootCertStore};
    use std::ops::DerefMut;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "hearth-tls-{name}-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn config(data_dir: &Path, domain: &str) -> Config {
        let mut c = Config::defaults();
        c.data_dir = data_dir.to_owned();
        c.domain = domain.to_owned();
        c
    }

    fn files_config(cert: &Path, key: &Path) -> Config {
        let mut c = Config::defaults();
        c.domain = "kitchen.local".into();
        c.tls.certificate = CertificateSource::Files {
            cert: cert.to_owned(),
            key: key.to_owned(),
        };
        c
    }

    fn generated_cert(dir: &Path) -> CertificateDer<'static> {
        read_certs(&dir.join("tls/cert.pem")).unwrap().remove(0)
    }

    fn client_config(
        trusted: CertificateDer<'static>,
        versions: &[&'static rustls::SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(trusted).unwrap();
        let mut c =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(versions)
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(c)
    }

    /// Moves all pending TLS records from `from` to `to`.
    fn transfer<A, B, DA, DB>(from: &mut A, to: &mut B)
    where
        A: DerefMut<Target = rustls::ConnectionCommon<DA>>,
        B: DerefMut<Target = rustls::ConnectionCommon<DB>>,
    {
        let mut buf = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut buf).unwrap();
        }
        let mut rest = &buf[..];
        while !rest.is_empty() {
            to.read_tls(&mut rest).unwrap();
        }
    }

    fn handshake(
        client: Arc<ClientConfig>,
        server: Arc<ServerConfig>,
        name: &str,
    ) -> Result<(ClientConnection, ServerConnection), rustls::Error> {
        let mut c = ClientConnection::new(client, ServerName::try_from(name.to_owned()).unwrap())?;
        let mut s = ServerConnection::new(server)?;
        for _ in 0..10 {
            transfer(&mut c, &mut s);
            s.process_new_packets()?;
            transfer(&mut s, &mut c);
            c.process_new_packets()?;
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok((c, s));
            }
        }
        panic!("handshake did not finish");
    }

    #[test]
    fn generates_into_data_dir_with_private_modes() {
        let tmp = TempDir::new("modes");
        let data = tmp.0.join("data");
        let setup = TlsSetup::load(&config(&data, "kitchen.local")).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data.join("tls/key.pem")), 0o600);
        assert_eq!(mode(&data.join("tls")), 0o700);
        assert!(!data.join("tls/key.pem.tmp").exists());
        let cert = generated_cert(&data);
        assert!(covers_domain(&cert, "kitchen.local"));
        assert!(covers_domain(&cert, "conference.kitchen.local"));
        assert!(!covers_domain(&cert, "other.local"));
        assert_eq!(setup.fingerprint().len(), 32 * 3 - 1);
    }

    /// Issue 21: a phone on the LAN may use the host's `.local` name, its host name or
    /// an address; the generated certificate names them all.
    #[test]
    fn the_generated_certificate_names_the_machine_on_the_lan() {
        let tmp = TempDir::new("lan");
        TlsSetup::load(&config(&tmp.0, "home.example")).unwrap();
        let cert = generated_cert(&tmp.0);
        let names = lan_names("home.example");
        assert!(names.iter().any(|n| n.ends_with(".local")), "{names:?}");
        for n in &names {
            assert!(covers_domain(&cert, n), "{n} is not in the certificate");
        }
        assert!(covers_domain(&cert, "home.example"));
        assert!(!covers_domain(&cert, "127.0.0.1"));
    }

    #[test]
    fn reload_reuses_the_generated_certificate() {
        let tmp = TempDir::new("reload");
        let cfg = config(&tmp.0, "kitchen.local");
        let first = TlsSetup::load(&cfg).unwrap();
        let second = TlsSetup::load(&cfg).unwrap();
        assert_eq!(first.fingerprint(), second.fingerprint());
        assert_eq!(first.tls_server_end_point(), second.tls_server_end_point());
    }

    #[test]
    fn renamed_domain_or_half_written_pair_regenerates() {
        let tmp = TempDir::new("regen");
        let first = TlsSetup::load(&config(&tmp.0, "kitchen.local")).unwrap();
        let renamed = TlsSetup::load(&config(&tmp.0, "den.local")).unwrap();
        assert_ne!(first.fingerprint(), renamed.fingerprint());
        assert!(covers_domain(&generated_cert(&tmp.0), "den.local"));

        fs::remove_file(tmp.0.join("tls/cert.pem")).unwrap();
        let again = TlsSetup::load(&config(&tmp.0, "den.local")).unwrap();
        assert_ne!(again.fingerprint(), renamed.fingerprint());
    }

    #[test]
    fn tls13_handshake_and_matching_exporters() {
        let tmp = TempDir::new("tls13");
        let setup = TlsSetup::load(&config(&tmp.0, "kitchen.local")).unwrap();
        let client = client_config(generated_cert(&tmp.0), &[&rustls::version::TLS13], &[]);
        let (c, s) = handshake(client, setup.config().clone(), "kitchen.local").unwrap();
        assert_eq!(s.protocol_version(), Some(ProtocolVersion::TLSv1_3));

        let cb = setup.channel_bindings(&s);
        let server_exporter = cb.tls_exporter.unwrap();
        let client_exporter = c
            .export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", None)
            .unwrap();
        assert_eq!(server_exporter, client_exporter);
        // A P-256/SHA-256 certificate: the end-point hash is SHA-256 of its DER.
        let expected: [u8; 32] = Sha256::digest(generated_cert(&tmp.0).as_ref()).into();
        assert_eq!(cb.tls_server_end_point.as_deref(), Some(&expected[..]));
    }

    #[test]
    fn tls12_has_no_exporter_binding() {
        let tmp = TempDir::new("tls12");
        let setup = TlsSetup::load(&config(&tmp.0, "kitchen.local")).unwrap();
        let client = client_config(generated_cert(&tmp.0), &[&rustls::version::TLS12], &[]);
        let (_c, s) = handshake(client, setup.config().clone(), "kitchen.local").unwrap();
        assert_eq!(s.protocol_version(), Some(ProtocolVersion::TLSv1_2));
        let cb = setup.channel_bindings(&s);
        assert_eq!(cb.tls_exporter, None);
        assert!(cb.tls_server_end_point.is_some());
    }

    #[test]
    fn direct_tls_negotiates_alpn_and_still_accepts_clients_without_it() {
        let tmp = TempDir::new("alpn");
        let setup = TlsSetup::load(&config(&tmp.0, "kitchen.local")).unwrap();
        let versions = &[&rustls::version::TLS13, &rustls::version::TLS12][..];
        let cert = generated_cert(&tmp.0);

        let with_alpn = client_config(cert.clone(), versions, &[b"xmpp-client"]);
        let (_c, s) = handshake(with_alpn, setup.direct_config().clone(), "kitchen.local").unwrap();
        assert_eq!(s.alpn_protocol(), Some(&b"xmpp-client"[..]));

        let without = client_config(cert.clone(), versions, &[]);
        let (_c, s) = handshake(without, setup.direct_config().clone(), "kitchen.local").unwrap();
        assert_eq!(s.alpn_protocol(), None);

        // STARTTLS listeners do not negotiate ALPN at all.
        let with_alpn = client_config(cert, versions, &[b"xmpp-client"]);
        let (_c, s) = handshake(with_alpn, setup.config().clone(), "kitchen.local").unwrap();
        assert_eq!(s.alpn_protocol(), None);
    }

    #[test]
    fn configured_files_are_used() {
        let tmp = TempDir::new("files");
        // Generate a pair elsewhere, then point the configuration at it.
        TlsSetup::load(&config(&tmp.0, "kitchen.local")).unwrap();
        let cert = tmp.0.join("tls/cert.pem");
        let key = tmp.0.join("tls/key.pem");
        let generated = TlsSetup::load(&config(&tmp.0, "kitchen.local")).unwrap();
        let from_files = TlsSetup::load(&files_config(&cert, &key)).unwrap();
        assert_eq!(generated.fingerprint(), from_files.fingerprint());
        let client = client_config(generated_cert(&tmp.0), &[&rustls::version::TLS13], &[]);
        handshake(
            client,
            server_config(&files_config(&cert, &key)).unwrap(),
            "kitchen.local",
        )
        .unwrap();
    }

    #[test]
    fn sha384_certificate_gets_a_sha384_end_point_hash() {
        let tmp = TempDir::new("p384");
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let params = rcgen::CertificateParams::new(vec!["kitchen.local".to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (cert_path, key_path) = (tmp.0.join("c.pem"), tmp.0.join("k.pem"));
        fs::write(&cert_path, cert.pem()).unwrap();
        fs::write(&key_path, key.serialize_pem()).unwrap();
        let setup = TlsSetup::load(&files_config(&cert_path, &key_path)).unwrap();
        let expected = Sha384::digest(cert.der().as_ref());
        assert_eq!(setup.tls_server_end_point(), Some(expected.as_slice()));
    }

    #[test]
    fn error_messages_name_the_file() {
        let tmp = TempDir::new("errors");
        TlsSetup::load(&config(&tmp.0, "kitchen.local")).unwrap();
        let cert = tmp.0.join("tls/cert.pem");
        let key = tmp.0.join("tls/key.pem");
        let load = |c: &Path, k: &Path| {
            TlsSetup::load(&files_config(c, k))
                .expect_err("load should fail")
                .to_string()
        };

        let missing = tmp.0.join("missing.pem");
        assert_eq!(
            load(&missing, &key),
            format!("{}: file not found", missing.display())
        );
        assert_eq!(
            load(&cert, &missing),
            format!("{}: file not found", missing.display())
        );

        let garbage = tmp.0.join("garbage.pem");
        fs::write(&garbage, "this is not a certificate\n").unwrap();
        assert!(
            load(&garbage, &key)
                .starts_with(&format!("{}: no certificate found", garbage.display()))
        );
        assert!(
            load(&cert, &garbage)
                .starts_with(&format!("{}: no private key found", garbage.display()))
        );
        // The key where the certificate belongs and vice versa.
        assert!(load(&key, &key).contains("no certificate found"));
        assert!(load(&cert, &cert).contains("no private key found"));

        let broken = tmp.0.join("broken.pem");
        fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(
            load(&broken, &key).starts_with(&format!("{}: not a valid PEM file", broken.display()))
        );
        let bad_der = tmp.0.join("bad-der.pem");
        fs::write(
            &bad_der,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(
            load(&bad_der, &key)
                .starts_with(&format!("{}: unusable certificate", bad_der.display()))
        );

        let other = TempDir::new("errors-other");
        TlsSetup::load(&config(&other.0, "kitchen.local")).unwrap();
        let other_key = other.0.join("tls/key.pem");
        assert_eq!(
            load(&cert, &other_key),
            format!(
                "{}: the private key does not match the certificate in {}",
                other_key.display(),
                cert.display()
            )
        );
    }

    #[test]
    fn unreadable_data_dir_is_reported() {
        let tmp = TempDir::new("unwritable");
        // A file where the data directory should be.
        let blocker = tmp.0.join("data");
        fs::write(&blocker, "").unwrap();
        let e = TlsSetup::load(&config(&blocker, "kitchen.local")).unwrap_err();
        assert!(
            matches!(e, TlsError::Write { .. } | TlsError::Unreadable { .. }),
            "{e}"
        );
        assert!(
            e.to_string().contains(&blocker.display().to_string()),
            "{e}"
        );
    }

    #[test]
    fn validity_survives_a_clock_at_the_epoch() {
        let (start, end) = validity(UNIX_EPOCH);
        assert!(start >= Duration::from_secs(1_735_689_600 - 86_400));
        assert!(end > start + Duration::from_secs(9 * 365 * 86_400));
        let now = SystemTime::now();
        let (start, end) = validity(now);
        let now = now.duration_since(UNIX_EPOCH).unwrap();
        assert!(start < now && end > now + Duration::from_secs(9 * 365 * 86_400));
    }

    #[test]
    fn certificate_validity_is_read_in_both_time_forms() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.example".into()]).unwrap();
        // UTCTime before 2050, GeneralizedTime from 2050 on (RFC 5280 §4.1.2.5).
        params.not_before =
            rcgen::date_time_ymd(2024, 1, 2) + Duration::from_secs(3 * 3600 + 4 * 60 + 5);
        params.not_after =
            rcgen::date_time_ymd(2051, 6, 7) + Duration::from_secs(8 * 3600 + 9 * 60 + 10);
        let cert = params.self_signed(&key).unwrap();
        // Unix times computed independently (Python's calendar.timegm).
        assert_eq!(
            validity_of(cert.der()),
            Some((1_704_164_645, 2_569_738_150))
        );
        assert_eq!(validity_of(&cert.der()[..40]), None);
        assert_eq!(der_time(0x17, b"991231235959Z"), Some(946_684_799));
        assert_eq!(der_time(0x17, b"9912312359Z"), None);
    }

    #[test]
    fn der_reader_rejects_truncated_input() {
        assert_eq!(der_tlv(&[0x30, 0x03, 1, 2]), None);
        assert_eq!(der_tlv(&[0x30, 0x80]), None);
        assert_eq!(
            der_tlv(&[0x30, 0x81, 0x01, 7, 9]),
            Some((0x30, &[7u8][..], &[9u8][..]))
        );
        assert_eq!(signature_algorithm(b"garbage"), None);
    }
}
