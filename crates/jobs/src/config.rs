//! Where the Redis + S3 backend lives: a file section and environment variables.
//!
//! | setting | file key | environment (wins over the file) | default |
//! |---|---|---|---|
//! | Redis URL (`redis://[:password@]host:port[/db]`, `rediss://` for TLS) | `redis_url` | `SOMA_REDIS_URL` | required |
//! | Redis key prefix | `redis_key_prefix` | `SOMA_REDIS_KEY_PREFIX` | `soma` |
//! | payload location `s3://bucket[/prefix]` | `s3_url` | `SOMA_S3_URL` | required |
//! | S3 endpoint (MinIO, moto, ...) | `s3_endpoint` | `SOMA_S3_ENDPOINT`, then `AWS_ENDPOINT_URL(_S3)` | AWS |
//! | S3 region | `s3_region` | `SOMA_S3_REGION`, then `AWS_REGION` | `us-east-1` |
//! | payloads up to this many bytes are kept in Redis, larger ones in S3 (`0`: all in S3) | `inline_payload_bytes` | `SOMA_INLINE_PAYLOAD_BYTES` | 65536 |
//!
//! S3 credentials come only from the standard AWS variables (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), never from the file. A password in the
//! Redis URL is never logged: [`RedactedUrl`] prints it as `***`.

use serde::Deserialize;

/// The `jobs` section of a soma settings file (all keys optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSettings {
    pub redis_url: Option<String>,
    pub redis_key_prefix: Option<String>,
    pub s3_url: Option<String>,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub inline_payload_bytes: Option<String>,
}

/// A resolved Redis + S3 configuration.
#[derive(Clone)]
pub struct RemoteConfig {
    pub redis_url: RedactedUrl,
    pub redis_key_prefix: String,
    pub bucket: String,
    /// Folder inside the bucket, without leading or trailing `/` (may be empty).
    pub s3_prefix: String,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    /// Explicit S3 keys (tests, embedding programs); `None` = the AWS variables.
    pub s3_credentials: Option<(String, String)>,
    /// Payloads up to this size live in Redis (see [`TieredBlobStore`](crate::TieredBlobStore)).
    pub inline_payload_limit: usize,
}

impl std::fmt::Debug for RemoteConfig {
    // Never print credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteConfig")
            .field("redis_url", &self.redis_url)
            .field("redis_key_prefix", &self.redis_key_prefix)
            .field("bucket", &self.bucket)
            .field("s3_prefix", &self.s3_prefix)
            .field("s3_endpoint", &self.s3_endpoint)
            .field("s3_region", &self.s3_region)
            .field("inline_payload_limit", &self.inline_payload_limit)
            .field(
                "s3_credentials",
                &self.s3_credentials.as_ref().map(|_| "<set>"),
            )
            .finish()
    }
}

/// A bad or incomplete Redis + S3 configuration.
#[derive(Debug, thiserror::Error)]
pub enum RemoteConfigError {
    #[error("{missing} is not set (set it in the environment or the `jobs` settings section)")]
    Missing { missing: &'static str },
    #[error("invalid {what} '{value}': {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: String,
    },
}

impl RemoteSettings {
    /// Overlays the `SOMA_*` variables read through `env` on these settings.
    pub fn with_env(mut self, env: impl Fn(&str) -> Option<String>) -> RemoteSettings {
        let pick = |current: &mut Option<String>, var: &str| {
            if let Some(value) = env(var).filter(|v| !v.is_empty()) {
                *current = Some(value);
            }
        };
        pick(&mut self.redis_url, "SOMA_REDIS_URL");
        pick(&mut self.redis_key_prefix, "SOMA_REDIS_KEY_PREFIX");
        pick(&mut self.s3_url, "SOMA_S3_URL");
        pick(&mut self.s3_endpoint, "SOMA_S3_ENDPOINT");
        pick(&mut self.s3_region, "SOMA_S3_REGION");
        pick(&mut self.inline_payload_bytes, "SOMA_INLINE_PAYLOAD_BYTES");
        self
    }

    /// `true` when neither Redis nor S3 is configured (the embedded backend applies).
    pub fn is_empty(&self) -> bool {
        self.redis_url.is_none() && self.s3_url.is_none()
    }

    pub fn resolve(&self) -> Result<RemoteConfig, RemoteConfigError> {
        let redis_url = self
            .redis_url
            .as_deref()
            .ok_or(RemoteConfigError::Missing {
                missing: "SOMA_REDIS_URL",
            })?;
        let redis_url = RedactedUrl::parse_redis(redis_url)?;
        let s3_url = self.s3_url.as_deref().ok_or(RemoteConfigError::Missing {
            missing: "SOMA_S3_URL",
        })?;
        let (bucket, s3_prefix) = parse_s3_url(s3_url)?;
        let redis_key_prefix = self
            .redis_key_prefix
            .clone()
            .unwrap_or_else(|| "soma".to_string());
        let inline_payload_limit = match self.inline_payload_bytes.as_deref() {
            None => crate::DEFAULT_INLINE_LIMIT,
            Some(text) => text
                .trim()
                .parse()
                .map_err(|_| RemoteConfigError::Invalid {
                    what: "inline_payload_bytes",
                    value: text.to_string(),
                    reason: "expected a number of bytes".to_string(),
                })?,
        };
        Ok(RemoteConfig {
            inline_payload_limit,
            redis_url,
            redis_key_prefix,
            bucket,
            s3_prefix,
            s3_endpoint: self.s3_endpoint.clone(),
            s3_region: self.s3_region.clone(),
            s3_credentials: None,
        })
    }
}

fn parse_s3_url(value: &str) -> Result<(String, String), RemoteConfigError> {
    let invalid = |reason: &str| RemoteConfigError::Invalid {
        what: "S3 URL",
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let rest = value
        .strip_prefix("s3://")
        .ok_or_else(|| invalid("expected s3://bucket[/prefix]"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(invalid("the bucket name is empty"));
    }
    Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
}

/// A URL that may hold a password; [`Display`](std::fmt::Display) and `Debug` print the
/// password as `***`. Only [`expose`](Self::expose) gives the real text (to the client).
#[derive(Clone, PartialEq, Eq)]
pub struct RedactedUrl(String);

impl RedactedUrl {
    /// Accepts `redis://`, `rediss://` and `unix://` URLs.
    pub fn parse_redis(value: &str) -> Result<RedactedUrl, RemoteConfigError> {
        let parsed = url::Url::parse(value).map_err(|e| RemoteConfigError::Invalid {
            what: "Redis URL",
            // The value may hold a password: show only what is safe.
            value: redact(value),
            reason: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "redis" | "rediss" | "unix" | "redis+unix") {
            return Err(RemoteConfigError::Invalid {
                what: "Redis URL",
                value: redact(value),
                reason: "expected a redis:// or rediss:// URL".to_string(),
            });
        }
        Ok(RedactedUrl(value.to_string()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

fn redact(value: &str) -> String {
    match url::Url::parse(value) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            url.to_string()
        }
        // Cannot tell where a password would be: print nothing of it.
        Err(_) => "<unparseable URL>".to_string(),
    }
}

impl std::fmt::Display for RedactedUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

impl std::fmt::Debug for RedactedUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedactedUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        let url = RedactedUrl::parse_redis("redis://:s3cret@cache:6379/0").unwrap();
        assert_eq!(url.to_string(), "redis://:***@cache:6379/0");
        assert!(!format!("{url:?}").contains("s3cret"));
        assert_eq!(url.expose(), "redis://:s3cret@cache:6379/0");
        let err = RedactedUrl::parse_redis("http://u:s3cret@x").unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn env_wins_over_file_and_both_urls_are_required() {
        let file = RemoteSettings {
            redis_url: Some("redis://file:6379".into()),
            s3_url: Some("s3://file-bucket".into()),
            ..Default::default()
        };
        let resolved = file
            .clone()
            .with_env(|var| (var == "SOMA_S3_URL").then(|| "s3://b/some/prefix/".to_string()))
            .resolve()
            .unwrap();
        assert_eq!(resolved.redis_url.expose(), "redis://file:6379");
        assert_eq!(
            (resolved.bucket.as_str(), resolved.s3_prefix.as_str()),
            ("b", "some/prefix")
        );
        assert_eq!(resolved.redis_key_prefix, "soma");
        let missing = RemoteSettings {
            s3_url: Some("s3://b".into()),
            ..Default::default()
        };
        assert!(matches!(
            missing.resolve(),
            Err(RemoteConfigError::Missing {
                missing: "SOMA_REDIS_URL"
            })
        ));
        let bad = RemoteSettings {
            s3_url: Some("https://b".into()),
            ..file
        };
        assert!(matches!(
            bad.resolve(),
            Err(RemoteConfigError::Invalid { .. })
        ));
    }
}
