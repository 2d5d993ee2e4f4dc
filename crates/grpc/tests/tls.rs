//! TLS on the gRPC port (TF Serving's `--ssl_config_file`): clients that trust the CA get
//! answers from the real iris model; plaintext clients, and with client certificates
//! required, clients without one or with one from another CA, get none; and settings that
//! cannot work are refused before anything listens, naming the part that is wrong.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use soma_core::Tensor;
use soma_grpc::codec::tensor_into_content_proto;
use soma_grpc::tls::TlsPart;
use soma_grpc::{GrpcOptions, TlsError, TlsSettings};
use soma_grpc_proto::tensorflow::serving::model_spec::VersionChoice;
use soma_grpc_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use soma_grpc_proto::tensorflow::serving::{ModelSpec, PredictRequest};
use soma_runtime::ModelSet;
use soma_testkit::TestPki;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// Serves the iris fixture (real TensorFlow) with `tls` on both ways of serving a TCP port
/// (on the caller's runtime and on serving threads); their names and addresses.
async fn serve_iris(tls: TlsSettings, cache: &std::path::Path) -> Vec<(&'static str, String)> {
    let set = Arc::new(ModelSet::new("tls", false));
    common::load_iris(&set, cache).await;
    let options = GrpcOptions {
        tls: Some(tls),
        ..GrpcOptions::default()
    };
    let mut served = Vec::new();
    for (server, options) in common::both_servers(options) {
        let url = common::serve_set_at(Arc::clone(&set), options).await;
        served.push((server, url.trim_start_matches("http://").to_string()));
    }
    served
}

/// One iris Predict over a channel to `addr` with `tls` (plaintext when `None`); the
/// version that answered, or the error.
async fn predict(addr: &str, tls: Option<ClientTlsConfig>) -> Result<i64, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Channel::from_shared(format!("{scheme}://{addr}")).unwrap();
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).map_err(|e| e.to_string())?;
    }
    let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
    let x = Tensor::from_slice(vec![1, 4], &[5.1f32, 3.5, 1.4, 0.2]).unwrap();
    let request = PredictRequest {
        model_spec: Some(ModelSpec {
            name: "iris".into(),
            ..ModelSpec::default()
        }),
        inputs: [("x".to_string(), tensor_into_content_proto(x))].into(),
        output_filter: vec![],
    };
    let response = PredictionServiceClient::new(channel)
        .predict(request)
        .await
        .map_err(|status| format!("{status:?}"))?
        .into_inner();
    assert_eq!(response.outputs["output_0"].float_val.len(), 3);
    match response.model_spec.unwrap().version_choice {
        Some(VersionChoice::Version(version)) => Ok(version),
        other => panic!("no version in the answer: {other:?}"),
    }
}

fn trusting(pki: &TestPki) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_cert))
        .domain_name("localhost")
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_that_trust_the_ca_are_served_and_plaintext_clients_are_not() {
    let pki = TestPki::generate();
    let cache = tempfile::tempdir().unwrap();
    for key in [&pki.server_key, &pki.server_key_pkcs1] {
        let tls = TlsSettings::new(&pki.server_cert, key, None).unwrap();
        assert!(!tls.client_certificates_required());
        for (server, addr) in serve_iris(tls, cache.path()).await {
            assert_eq!(
                predict(&addr, Some(trusting(&pki))).await,
                Ok(10),
                "{server}"
            );
            // A client certificate is not asked for, and does no harm when offered.
            let offered =
                trusting(&pki).identity(Identity::from_pem(&pki.client_cert, &pki.client_key));
            assert_eq!(predict(&addr, Some(offered)).await, Ok(10), "{server}");
            // A plaintext HTTP/2 client gets no answer from a TLS port.
            assert!(predict(&addr, None).await.is_err(), "{server}");
            // Nor does a client that does not trust the server's CA.
            let other_ca = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&pki.stranger_cert))
                .domain_name("localhost");
            assert!(predict(&addr, Some(other_ca)).await.is_err(), "{server}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_client_ca_only_clients_with_its_certificates_are_served() {
    let pki = TestPki::generate();
    let cache = tempfile::tempdir().unwrap();
    let tls = TlsSettings::new(&pki.server_cert, &pki.server_key, Some(&pki.ca_cert)).unwrap();
    assert!(tls.client_certificates_required());
    let with = |cert: &str, key: &str| trusting(&pki).identity(Identity::from_pem(cert, key));
    for (server, addr) in serve_iris(tls, cache.path()).await {
        let client = || Some(with(&pki.client_cert, &pki.client_key));
        assert_eq!(predict(&addr, client()).await, Ok(10), "{server}");
        let without = predict(&addr, Some(trusting(&pki))).await;
        assert!(without.is_err(), "{server}: {without:?}");
        let stranger = predict(&addr, Some(with(&pki.stranger_cert, &pki.stranger_key))).await;
        assert!(stranger.is_err(), "{server}: {stranger:?}");
        // The refused handshakes did not hurt the server.
        assert_eq!(predict(&addr, client()).await, Ok(10), "{server}");
    }
}

/// A client that completes the TLS handshake and then sends nothing, or half of HTTP/2's
/// preface, is closed after the 10 s a plaintext one gets; so is one that never finishes
/// its handshake. A client that does start HTTP/2 is served meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn a_tls_connection_that_does_not_start_http2_is_closed() {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let pki = TestPki::generate();
    let cache = tempfile::tempdir().unwrap();
    let tls = TlsSettings::new(&pki.server_cert, &pki.server_key, None).unwrap();
    let served = serve_iris(tls, cache.path()).await;
    let connector = tls_connector(&pki);
    let mut closing = Vec::new();
    let starts = [None, Some(&b""[..]), Some(&PREFACE[..16])];
    for ((server, addr), start) in served
        .iter()
        .flat_map(|s| starts.map(|start| (s.clone(), start)))
    {
        let connector = connector.clone();
        closing.push(tokio::spawn(async move {
            let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let started = Instant::now();
            let mut read = Vec::new();
            let closed = match start {
                // A TLS ClientHello cut short: the handshake never ends.
                None => {
                    tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
                        .await
                        .unwrap();
                    tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut read))
                        .await
                        .is_ok()
                }
                Some(start) => {
                    let name = ServerName::try_from("localhost").unwrap();
                    let mut stream = connector.connect(name, tcp).await.unwrap();
                    stream.write_all(start).await.unwrap();
                    stream.flush().await.unwrap();
                    let read = tokio::time::timeout(
                        Duration::from_secs(20),
                        stream.read_to_end(&mut read),
                    );
                    read.await.is_ok()
                }
            };
            (server, start.map(<[u8]>::len), closed, started.elapsed())
        }));
    }
    for (server, addr) in &served {
        assert_eq!(
            predict(addr, Some(trusting(&pki))).await,
            Ok(10),
            "{server}"
        );
    }
    for closing in closing {
        let (server, sent, closed, after) = closing.await.unwrap();
        assert!(
            closed,
            "{server}, {sent:?} bytes: still open after {after:?}"
        );
        assert!(
            after >= Duration::from_secs(9),
            "{server}, {sent:?} bytes: closed after {after:?}"
        );
    }
}

/// A raw TLS client (rustls) that trusts the test CA and offers HTTP/2.
fn tls_connector(pki: &TestPki) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(pki.ca_cert.as_bytes()) {
        roots.add(certificate.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[test]
fn settings_that_cannot_work_are_refused_naming_the_part() {
    let pki = TestPki::generate();
    let part = |result: Result<TlsSettings, TlsError>| {
        let error = result.unwrap_err();
        (error.part(), error.to_string())
    };

    let (which, message) = part(TlsSettings::new("", &pki.server_key, None));
    assert_eq!(which, Some(TlsPart::ServerCertificate));
    assert!(message.contains("no certificate"), "{message}");

    // A key where the certificate should be.
    let (which, _) = part(TlsSettings::new(&pki.server_key, &pki.server_key, None));
    assert_eq!(which, Some(TlsPart::ServerCertificate));

    let (which, message) = part(TlsSettings::new(&pki.server_cert, &pki.server_cert, None));
    assert_eq!(which, Some(TlsPart::PrivateKey));
    assert!(message.contains("no private key"), "{message}");

    let broken = pki.server_cert.replacen("MII", "M!I", 1);
    let (which, message) = part(TlsSettings::new(&broken, &pki.server_key, None));
    assert_eq!(which, Some(TlsPart::ServerCertificate));
    assert!(message.contains("not valid PEM"), "{message}");

    let (which, message) = part(TlsSettings::new(
        &pki.server_cert,
        &pki.server_key,
        Some(""),
    ));
    assert_eq!(which, Some(TlsPart::ClientCa));
    assert!(message.contains("no certificate"), "{message}");

    // A key that does not belong to the certificate.
    let (which, message) = part(TlsSettings::new(&pki.server_cert, &pki.other_key, None));
    assert_eq!(which, None);
    assert!(message.contains("refused"), "{message}");
}
