//! Certificates for TLS tests, made by the `openssl` command line (Debian's `openssl`,
//! installed by `scripts/setup.sh`) in a temporary folder: nothing secret is committed and
//! nothing expires between runs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA, a server certificate it signed for `localhost` and `127.0.0.1`, a client
/// certificate it signed, and a client certificate signed by another CA. All PEM; keys are
/// unencrypted PKCS#8 except [`TestPki::server_key_pkcs1`], the same server key as PKCS#1
/// (`BEGIN RSA PRIVATE KEY`), as older tooling writes it.
#[derive(Debug)]
pub struct TestPki {
    dir: tempfile::TempDir,
    pub ca_cert: String,
    pub server_cert: String,
    pub server_key: String,
    pub server_key_pkcs1: String,
    pub client_cert: String,
    pub client_key: String,
    /// Signed by a CA the server does not trust.
    pub stranger_cert: String,
    pub stranger_key: String,
    /// A second, unrelated key (does not belong to `server_cert`).
    pub other_key: String,
}

impl TestPki {
    /// Makes the whole set (~0.5 s of RSA key generation).
    pub fn generate() -> TestPki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        ca(d, "ca", "soma test CA");
        ca(d, "stranger-ca", "another CA");
        leaf(
            d,
            "server",
            "ca",
            "localhost",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        );
        leaf(d, "client", "ca", "client", "extendedKeyUsage=clientAuth\n");
        leaf(
            d,
            "stranger",
            "stranger-ca",
            "stranger",
            "extendedKeyUsage=clientAuth\n",
        );
        key(d, "other");
        openssl(
            d,
            &[
                "rsa",
                "-in",
                "server.key",
                "-traditional",
                "-out",
                "server-pkcs1.key",
            ],
        );
        let read = |name: &str| std::fs::read_to_string(d.join(name)).unwrap();
        TestPki {
            ca_cert: read("ca.crt"),
            server_cert: read("server.crt"),
            server_key: read("server.key"),
            server_key_pkcs1: read("server-pkcs1.key"),
            client_cert: read("client.crt"),
            client_key: read("client.key"),
            stranger_cert: read("stranger.crt"),
            stranger_key: read("stranger.key"),
            other_key: read("other.key"),
            dir,
        }
    }

    /// Writes `text` to a file in the set's folder; its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

fn key(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            &format!("{name}.key"),
        ],
    );
}

/// A self-signed CA certificate (`openssl req -x509` adds CA:TRUE).
fn ca(dir: &Path, name: &str, common_name: &str) {
    key(dir, name);
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={common_name}"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

/// A certificate for `common_name` signed by the CA `issuer`, with the X.509 v3
/// `extensions` (rustls accepts v3 certificates only).
fn leaf(dir: &Path, name: &str, issuer: &str, common_name: &str, extensions: &str) {
    key(dir, name);
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-subj",
            &format!("/CN={common_name}"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    let ext = format!("{name}.ext");
    std::fs::write(
        dir.join(&ext),
        format!("basicConstraints=CA:FALSE\n{extensions}"),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{issuer}.crt"),
            "-CAkey",
            &format!("{issuer}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run openssl ({e}): the TLS tests need it (apt-get install openssl)")
        });
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
