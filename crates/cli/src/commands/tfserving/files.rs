//! Reading the files flags name (model config, monitoring, SSL, text protos); errors name
//! the flag and the file.

use std::path::Path;

use anyhow::Context as _;
use soma_grpc::TlsSettings;
use soma_grpc::tls::TlsPart;
use soma_runtime::hub::ModelConfig;
use soma_serving::{parse_model_config_file, parse_monitoring_config, parse_ssl_config};

pub(super) fn read_monitoring_config(path: &Path) -> anyhow::Result<Option<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --monitoring_config_file {}", path.display()))?;
    let prometheus =
        parse_monitoring_config(&text).with_context(|| format!("{}", path.display()))?;
    if let Some(api) = prometheus
        .as_deref()
        .filter(|p| p.starts_with("/v1/") || p.starts_with("/v2/"))
    {
        anyhow::bail!(
            "{}: the Prometheus path {api} is under the API's own /v1/ or /v2/ paths",
            path.display()
        );
    }
    Ok(prometheus)
}

/// Reads and checks an `--ssl_config_file`; errors name the file and the field.
pub(super) fn read_ssl_config(path: &Path) -> anyhow::Result<TlsSettings> {
    let file = path.display();
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --ssl_config_file {file}"))?;
    let config = parse_ssl_config(&text).with_context(|| format!("{file}"))?;
    for (field, value) in [
        ("server_cert", &config.server_cert),
        ("server_key", &config.server_key),
    ] {
        anyhow::ensure!(
            !value.trim().is_empty(),
            "{file}: {field} is missing: gRPC over TLS needs the server's certificate and key"
        );
    }
    if config.client_verify && config.custom_ca.trim().is_empty() {
        anyhow::bail!(
            "{file}: client_verify is true but custom_ca is missing: give the CA that signs \
             the clients' certificates"
        );
    }
    if !config.client_verify && !config.custom_ca.trim().is_empty() {
        // TF Serving ignores it the same way: clients are not asked for certificates.
        tracing::info!(
            "{file}: custom_ca is used only with client_verify: true; clients are not asked \
             for certificates"
        );
    }
    let client_ca = config.client_verify.then_some(config.custom_ca.as_str());
    TlsSettings::new(&config.server_cert, &config.server_key, client_ca).map_err(|e| {
        let field = match e.part() {
            Some(TlsPart::ServerCertificate) => "server_cert",
            Some(TlsPart::PrivateKey) => "server_key",
            Some(TlsPart::ClientCa) => "custom_ca",
            None => "server_cert and server_key",
        };
        anyhow::anyhow!("{file}: {field}: {e}")
    })
}

/// The models a `--model_config_file` lists; `None` if it has no `model_config_list`.
pub(super) fn read_config_file(path: &Path) -> anyhow::Result<Option<Vec<ModelConfig>>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --model_config_file {}", path.display()))?;
    parse_model_config_file(&text).with_context(|| format!("{}", path.display()))
}

/// Reads the text-proto file a `flag` names and parses it; errors name the flag and the file
/// (a parse error adds its line and column).
pub(super) fn read_flag_file<T, E>(
    flag: &str,
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> anyhow::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {flag} {}", path.display()))?;
    parse(&text).with_context(|| format!("{flag} {}", path.display()))
}
