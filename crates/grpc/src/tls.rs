//! TLS on the gRPC listeners (TF Serving's `--ssl_config_file`): the server's certificate
//! chain and private key, and optionally the CA whose certificates every client must present
//! (mutual TLS). HTTP/2 is negotiated by ALPN (`h2`), as gRPC clients expect; the crypto is
//! rustls on aws-lc-rs, the provider the S3 client already uses.
//!
//! Everything is checked when [`TlsSettings`] is built, so that a broken certificate or a key
//! that does not belong to it stops the server at start-up with a message that names the
//! part, instead of failing every client's handshake later.
//!
//! soma's HTTP/2 server accepts the handshakes itself ([`TlsSettings::accept`]), each in its
//! connection's task with a deadline of its own, so that what comes after a handshake is
//! timed like a plaintext connection's opening.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::{self, PemObject as _};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

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
    acceptor: TlsAcceptor,
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
        let chain = certificates(certificate_chain, TlsPart::ServerCertificate)?;
        let key =
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
        let refused = |e: &dyn std::error::Error| TlsError::Refused(error_chain(e));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| refused(&e))?;
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for certificate in certificates(ca, TlsPart::ClientCa)? {
                    roots.add(certificate).map_err(|e| TlsError::Pem {
                        part: TlsPart::ClientCa,
                        message: format!("not a usable CA certificate: {e}"),
                    })?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| refused(&e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        // Where a key that does not belong to the certificate is found.
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| refused(&e))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(TlsSettings {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            mutual: client_ca.is_some(),
        })
    }

    /// Whether clients must present a certificate.
    pub fn client_certificates_required(&self) -> bool {
        self.mutual
    }

    /// The TLS connection over `io` once its handshake is done, within [`HANDSHAKE_TIMEOUT`];
    /// `None` if it failed or timed out (logged at debug level: scanners and clients with the
    /// wrong certificate make such handshakes).
    pub(crate) fn accept<S>(&self, io: S) -> impl Future<Output = Option<TlsStream<S>>> + use<S>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let accept = self.acceptor.accept(io);
        async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
                Ok(Ok(stream)) => Some(stream),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!("TLS handshake timed out");
                    None
                }
            }
        }
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
