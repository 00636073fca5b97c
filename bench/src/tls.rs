//! TLS for the load generator: rustls (ring) that accepts any certificate, because the
//! servers under test run on loopback with self-signed certificates. Handshake signatures
//! are still checked, so the server does the same private-key work as with a real client.

use std::sync::Arc;

use futures_rustls::TlsConnector;
use futures_rustls::rustls::client::Resumption;
use futures_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use futures_rustls::rustls::crypto::{
    CryptoProvider, ring, verify_tls12_signature, verify_tls13_signature,
};
use futures_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use futures_rustls::rustls::{ClientConfig, DigitallySignedStruct, Error, SignatureScheme};

/// Accepts every server certificate; checks handshake signatures with the provider.
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A connector that trusts any certificate and never resumes sessions: every simulated
/// client is a different device, so each login pays for a full handshake, as it would in
/// real life (and the comparison between servers stays fair).
///
/// `direct_tls` adds the `xmpp-client` ALPN protocol that XEP-0368 §3 asks for.
pub fn connector(direct_tls: bool) -> Result<TlsConnector, Error> {
    let provider = Arc::new(ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    if direct_tls {
        config.alpn_protocols = vec![b"xmpp-client".to_vec()];
    }
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The SNI name for `domain` (a DNS name or an IP address), if it is one.
pub fn server_name(domain: &str) -> Option<ServerName<'static>> {
    ServerName::try_from(domain.to_owned()).ok()
}
