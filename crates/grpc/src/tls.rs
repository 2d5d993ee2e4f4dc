//! TLS on the gRPC listeners (TF Serving's `--ssl_config_file`): the server's certificate
//! chain and private key, and optionally the CA whose certificates every client must present
//! (mutual TLS). HTTP/2 is negotiated by ALPN (`h2`), as gRPC clients expect; the crypto is
//! rustls on aws-lc-rs, the provider the S3 client already uses.
//!
//! Everything is checked when [`TlsSettings`] is built, so that a broken certificate or a key
//! that does not belong to it stops the server at start-up with a message that names the
//! part, instead of failing every client's handshake later.

use std::fmt;
use std::time::Duration;

use rustls_pki_types::pem::{self, PemObject as _};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

/// How long a client may take over its TLS handshake. A connection that stalls in the
/// handshake holds a socket and a task; real handshakes take a few round trips.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which PEM text an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPart {
    /// The server's certificate chain (end-entity first).
    ServerCertificate,
    /// The server's private key.
    PrivateKey,
    /// The CA that signs the clients' certificates.
    ClientCa,
}

impl fmt::Display for TlsPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsPart::ServerCertificate => "the server certificate",
            TlsPart::PrivateKey => "the private key",
            TlsPart::ClientCa => "the client CA",
        })
    }
}

/// Why TLS settings were refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// One PEM text is empty, holds no block of the expected kind, or does not decode.
    #[error("{part}: {message}")]
    Pem { part: TlsPart, message: String },
    /// The PEM texts decode, but rustls refused them together, e.g. a key that does not
    /// belong to the certificate.
    #[error("the certificate and key were refused: {0}")]
    Refused(String),
}

impl TlsError {
    /// The part the error is about, if it is about one.
    pub fn part(&self) -> Option<TlsPart> {
        match self {
            TlsError::Pem { part, .. } => Some(*part),
            TlsError::Refused(_) => None,
        }
    }
}

/// Checked TLS settings for [`crate::GrpcOptions::tls`].
#[derive(Clone)]
pub struct TlsSettings {
    config: ServerTlsConfig,
    mutual: bool,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No key material in logs.
        f.debug_struct("TlsSettings")
            .field("client_certificates_required", &self.mutual)
            .finish_non_exhaustive()
    }
}

impl TlsSettings {
    /// TLS with the server's certificate chain and private key (PEM). With `client_ca`,
    /// every client must present a certificate signed by it (a handshake without one
    /// fails); without, clients are not asked for certificates.
    pub fn new(
        certificate_chain: &str,
        private_key: &str,
        client_ca: Option<&str>,
    ) -> Result<TlsSettings, TlsError> {
        certificates(certificate_chain, TlsPart::ServerCertificate)?;
        PrivateKeyDer::from_pem_slice(private_key.as_bytes()).map_err(|e| TlsError::Pem {
            part: TlsPart::PrivateKey,
            message: match e {
                pem::Error::NoItemsFound => "no private key in it (expected a PEM block \
                     -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY; an \
                     encrypted key must be decrypted first, e.g. with `openssl pkey`)"
                    .to_string(),
                other => format!("not valid PEM: {other}"),
            },
        })?;
        let mut config = ServerTlsConfig::new()
            .identity(Identity::from_pem(certificate_chain, private_key))
            .timeout(HANDSHAKE_TIMEOUT);
        if let Some(ca) = client_ca {
            certificates(ca, TlsPart::ClientCa)?;
            config = config.client_ca_root(Certificate::from_pem(ca));
        }
        // Build the rustls configuration once now: this is where a key that does not match
        // the certificate, or a CA that is not a usable trust anchor, is found.
        Server::builder()
            .tls_config(config.clone())
            .map_err(|e| TlsError::Refused(error_chain(&e)))?;
        Ok(TlsSettings {
            config,
            mutual: client_ca.is_some(),
        })
    }

    /// Whether clients must present a certificate.
    pub fn client_certificates_required(&self) -> bool {
        self.mutual
    }

    pub(crate) fn server_config(&self) -> ServerTlsConfig {
        self.config.clone()
    }
}

/// The certificates in `text`; an error unless there is at least one and all decode.
fn certificates(text: &str, part: TlsPart) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let error = |message: String| TlsError::Pem { part, message };
    let certificates = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(format!("not valid PEM: {e}")))?;
    if certificates.is_empty() {
        return Err(error(
            "no certificate in it (expected a PEM block -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(certificates)
}

/// An error and its sources on one line (tonic's own message is only "transport error").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
