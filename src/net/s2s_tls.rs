//! TLS between servers (RFC 6120 §5, RFC 7590): rustls as server for incoming links and
//! as client for outgoing ones, with the same certificate as c2s.
//!
//! A peer's certificate is checked *after* the handshake, not during it:
//! - The name to check is only known from the stream header that follows (an incoming
//!   link's `from`), and a certificate that is not valid for it must not end the link:
//!   dialback (XEP-0220) may still authenticate the peer when policy allows.
//! - An incoming peer's certificate is a *server* certificate presented as a client
//!   certificate. Let's Encrypt no longer issues the clientAuth usage (2026), so rustls's
//!   stock client-certificate verifier would refuse what every public XMPP server now
//!   holds. hearth checks the chain for the serverAuth usage and the name with rustls's
//!   server-certificate verifier instead ([`S2sTls::is_valid_for`]), as Prosody does.
//!
//! During the handshake only the signature that proves the peer holds the certificate's
//! key is checked (rustls's own signature checks); the chain and the name are judged by
//! [`S2sTls::is_valid_for`] before the certificate is trusted for anything (SASL EXTERNAL
//! per XEP-0178, or skipping the dialback round trip per XEP-0344).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use futures_rustls::pki_types::pem::PemObject;
use futures_rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use futures_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use futures_rustls::rustls::client::{ClientSessionMemoryCache, WebPkiServerVerifier};
use futures_rustls::rustls::crypto::{
    CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
};
use futures_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use futures_rustls::rustls::server::{ResolvesServerCert, ServerSessionMemoryCache};
use futures_rustls::rustls::sign::CertifiedKey;
use futures_rustls::rustls::{
    self, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};

/// ALPN protocol name for direct TLS s2s connections (XEP-0368 §3).
pub const ALPN_XMPP_SERVER: &[u8] = b"xmpp-server";

/// Resumable sessions kept for links, each way: a home server talks to a handful of
/// others.
const SESSION_CACHE_ENTRIES: usize = 32;

/// The TLS configurations of federation, built with the certificate of a
/// [`super::tls::TlsSetup`].
pub struct S2sTls {
    /// Incoming STARTTLS links: asks for (never requires) a client certificate.
    server: Arc<ServerConfig>,
    /// Incoming direct TLS links (XEP-0368): `server` plus ALPN `xmpp-server`.
    direct_server: Arc<ServerConfig>,
    /// Outgoing links: presents our certificate as the client certificate.
    client: Arc<ClientConfig>,
    /// Outgoing direct TLS links: `client` plus ALPN `xmpp-server`.
    direct_client: Arc<ClientConfig>,
    /// Checks a chain and a name against the roots; `None` without roots (then no
    /// peer's certificate is valid, and dialback is the only way in).
    verifier: Option<Arc<WebPkiServerVerifier>>,
    /// How many roots were loaded, for the log.
    roots: usize,
}

impl fmt::Debug for S2sTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S2sTls")
            .field("roots", &self.roots)
            .finish_non_exhaustive()
    }
}

/// Why the federation TLS set-up failed.
#[derive(Debug)]
pub enum S2sTlsError {
    /// The root certificate file could not be read or holds no certificate.
    Roots { path: String, reason: String },
    /// rustls refused a configuration.
    Rustls(rustls::Error),
}

impl fmt::Display for S2sTlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            S2sTlsError::Roots { path, reason } => {
                write!(f, "{path}: cannot load root certificates: {reason}")
            }
            S2sTlsError::Rustls(e) => write!(f, "TLS: {e}"),
        }
    }
}

impl std::error::Error for S2sTlsError {}

impl S2sTls {
    /// Configurations presenting `key` (our certificate and its key), and trusting the
    /// roots in the PEM file `ca_file` for peers' certificates.
    pub fn new(
        provider: Arc<CryptoProvider>,
        key: Arc<CertifiedKey>,
        ca_file: Option<&Path>,
    ) -> Result<S2sTls, S2sTlsError> {
        let mut roots = RootCertStore::empty();
        if let Some(path) = ca_file {
            let bad = |reason: String| S2sTlsError::Roots {
                path: path.display().to_string(),
                reason,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(e.to_string()))?;
            // Bundles carry a few roots rustls cannot parse (old encodings): skipped, as
            // the platform verifiers do.
            let (added, _skipped) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(bad("no usable certificate in the file".into()));
            }
        }
        let n_roots = roots.len();
        let verifier = if roots.is_empty() {
            None
        } else {
            Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| S2sTlsError::Roots {
                        path: ca_file.map(|p| p.display().to_string()).unwrap_or_default(),
                        reason: e.to_string(),
                    })?,
            )
        };
        let algorithms = provider.signature_verification_algorithms;
        let deferred = Arc::new(Deferred { algorithms });

        let resolver: Arc<dyn ResolvesServerCert> = Arc::new(Single(key.clone()));
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(S2sTlsError::Rustls)?
            .with_client_cert_verifier(deferred.clone())
            .with_cert_resolver(resolver);
        server.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
        server.send_tls13_tickets = 1;
        server.max_early_data_size = 0;
        let mut direct_server = server.clone();
        direct_server.alpn_protocols = vec![ALPN_XMPP_SERVER.to_vec()];

        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(S2sTlsError::Rustls)?
            .dangerous()
            .with_custom_certificate_verifier(deferred)
            .with_client_cert_resolver(Arc::new(Single(key)));
        client.resumption = rustls::client::Resumption::store(Arc::new(
            ClientSessionMemoryCache::new(SESSION_CACHE_ENTRIES),
        ));
        let mut direct_client = client.clone();
        direct_client.alpn_protocols = vec![ALPN_XMPP_SERVER.to_vec()];

        Ok(S2sTls {
            server: Arc::new(server),
            direct_server: Arc::new(direct_server),
            client: Arc::new(client),
            direct_client: Arc::new(direct_client),
            verifier,
            roots: n_roots,
        })
    }

    /// For incoming STARTTLS links.
    pub fn server(&self) -> &Arc<ServerConfig> {
        &self.server
    }

    /// For incoming direct TLS links (XEP-0368).
    pub fn direct_server(&self) -> &Arc<ServerConfig> {
        &self.direct_server
    }

    /// For outgoing links: STARTTLS, or direct TLS (XEP-0368, with ALPN).
    pub fn client(&self, direct: bool) -> &Arc<ClientConfig> {
        if direct {
            &self.direct_client
        } else {
            &self.client
        }
    }

    /// Root certificates loaded.
    pub fn roots(&self) -> usize {
        self.roots
    }

    /// Whether `chain` (the peer's end-entity certificate first) is valid for `domain`:
    /// it chains to a root, is within its validity, allows the serverAuth usage, and
    /// names the domain (RFC 6125, RFC 7590 §3.2, XEP-0178 §3). The same test for a
    /// certificate that came as a TLS server's or as a TLS client's.
    pub fn is_valid_for(&self, chain: &[CertificateDer<'_>], domain: &str) -> bool {
        let (Some(verifier), Some((leaf, intermediates))) = (&self.verifier, chain.split_first())
        else {
            return false;
        };
        let Ok(name) = ServerName::try_from(domain) else {
            return false;
        };
        match verifier.verify_server_cert(leaf, intermediates, &name, &[], UnixTime::now()) {
            Ok(_) => true,
            Err(e) => {
                log::debug!("certificate not valid for {domain}: {e}");
                false
            }
        }
    }
}

/// Our certificate, whatever the peer asks for.
#[derive(Debug)]
struct Single(Arc<CertifiedKey>);

impl ResolvesServerCert for Single {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl rustls::client::ResolvesClientCert for Single {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The verifier for both ends of a link's handshake: it checks the handshake signature
/// (the peer holds the key of the certificate it sent) and leaves the chain and the name
/// to [`S2sTls::is_valid_for`], once the peer's domain is known.
#[derive(Debug)]
struct Deferred {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Deferred {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for Deferred {
    fn offer_client_auth(&self) -> bool {
        true
    }

    /// Dialback (XEP-0220) authenticates peers without a certificate.
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    /// No hints: a peer should send the certificate it has for its domain, whoever
    /// issued it.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
