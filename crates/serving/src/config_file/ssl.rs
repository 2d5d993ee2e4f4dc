//! `--ssl_config_file`: TF Serving's `SSLConfig`, the PEM texts themselves (not paths) in
//! strings:
//!
//! ```text
//! server_key: "-----BEGIN PRIVATE KEY-----\nMIIE...\n-----END PRIVATE KEY-----\n"
//! server_cert: "-----BEGIN CERTIFICATE-----\n"
//!              "MIID...\n"
//!              "-----END CERTIFICATE-----\n"
//! custom_ca: "..."          # the CA of the clients' certificates
//! client_verify: true       # require a client certificate signed by custom_ca
//! ```

use std::fmt;

use super::{ConfigFileError, Field, boolean, string, top_level_fields, unknown};

/// The fields of an `SSLConfig` file, unchecked: empty strings are what the file left out.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SslConfig {
    /// The server's private key (PEM).
    pub server_key: String,
    /// The server's certificate chain (PEM).
    pub server_cert: String,
    /// The CA certificate(s) that sign the clients' certificates (PEM).
    pub custom_ca: String,
    /// Require every client to present a certificate signed by `custom_ca`.
    pub client_verify: bool,
}

impl fmt::Debug for SslConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key stays out of logs and panic messages.
        f.debug_struct("SslConfig")
            .field(
                "server_key",
                &format_args!("<{} bytes>", self.server_key.len()),
            )
            .field("server_cert", &self.server_cert)
            .field("custom_ca", &self.custom_ca)
            .field("client_verify", &self.client_verify)
            .finish()
    }
}

const FIELDS: [&str; 4] = ["server_key", "server_cert", "custom_ca", "client_verify"];

/// Parses an `--ssl_config_file`. A field given twice is an error (protobuf's text format
/// refuses it for a non-repeated field).
pub fn parse_ssl_config(text: &str) -> Result<SslConfig, ConfigFileError> {
    let mut config = SslConfig::default();
    let mut seen: Vec<&Field> = Vec::new();
    let fields = top_level_fields(text)?;
    for field in &fields {
        if let Some(first) = seen.iter().find(|f| f.name == field.name) {
            return Err(field.pos.error(format!(
                "'{}' is given twice (first at line {}, column {})",
                field.name, first.pos.line, first.pos.column
            )));
        }
        seen.push(field);
        match field.name.as_str() {
            "server_key" => config.server_key = string(field)?,
            "server_cert" => config.server_cert = string(field)?,
            "custom_ca" => config.custom_ca = string(field)?,
            "client_verify" => config.client_verify = boolean(field)?,
            _ => return Err(unknown(field, "the SSL config", &FIELDS)),
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM_BODY: &str = "MIIBszCCAVmgAwIBAgIUQ";

    #[test]
    fn escaped_concatenated_and_single_line_forms() {
        let text = format!(
            "# escapes, as json.dumps writes them\n\
             server_key: \"-----BEGIN PRIVATE KEY-----\\n{PEM_BODY}\\n-----END PRIVATE KEY-----\\n\"\n\
             # one quoted string per line\n\
             server_cert: '-----BEGIN CERTIFICATE-----\\n'\n\
             \x20            '{PEM_BODY}\\r\\n'\n\
             \x20            '-----END CERTIFICATE-----\\n'\n\
             custom_ca: \"ca\"\n\
             client_verify: true\n"
        );
        let config = parse_ssl_config(&text).unwrap();
        assert_eq!(
            config.server_key,
            format!("-----BEGIN PRIVATE KEY-----\n{PEM_BODY}\n-----END PRIVATE KEY-----\n")
        );
        assert_eq!(
            config.server_cert,
            format!("-----BEGIN CERTIFICATE-----\n{PEM_BODY}\r\n-----END CERTIFICATE-----\n")
        );
        assert_eq!(config.custom_ca, "ca");
        assert!(config.client_verify);
        assert_eq!(parse_ssl_config("").unwrap(), SslConfig::default());
    }

    #[test]
    fn errors_name_the_field_and_its_place() {
        let error = |text: &str| parse_ssl_config(text).unwrap_err().to_string();
        assert_eq!(
            error("server_cert: 'a'\nserver_cert: 'b'"),
            "line 2, column 1: 'server_cert' is given twice (first at line 1, column 1)"
        );
        assert_eq!(
            error("client_verify: 'yes'"),
            "line 1, column 1: 'client_verify' must be true or false"
        );
        assert_eq!(
            error("server_crt: 'a'"),
            "line 1, column 1: unknown field 'server_crt' in the SSL config (expected \
             server_key, server_cert, custom_ca, client_verify)"
        );
        // A PEM pasted with its line breaks inside the quotes: protobuf refuses it too.
        assert_eq!(
            error("server_key: '-----BEGIN PRIVATE KEY-----\nMII'"),
            "line 1, column 13: unterminated string"
        );
    }

    #[test]
    fn debug_output_leaves_the_key_out() {
        let config = SslConfig {
            server_key: "SECRET".into(),
            ..SslConfig::default()
        };
        let debug = format!("{config:?}");
        assert!(!debug.contains("SECRET"), "{debug}");
        assert!(debug.contains("<6 bytes>"), "{debug}");
    }
}
