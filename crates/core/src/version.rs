use std::fmt;

/// Which version of a model a request wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum VersionSpec {
    /// The highest version that is loaded and available.
    #[default]
    Latest,
    /// One exact version number.
    Number(i64),
}

/// A model version that is neither "latest" nor an integer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("model_version must be either a parse-able numeric value or 'latest', got {0:?}")]
pub struct VersionSpecError(pub String);

impl VersionSpec {
    /// Parses `"latest"`, `"10"` (Cortex passed versions as strings) or an empty string (= latest).
    pub fn parse(text: &str) -> Result<VersionSpec, VersionSpecError> {
        let trimmed = text.trim();
        if trimmed.is_empty() || trimmed.eq_ignore_ascii_case("latest") {
            return Ok(VersionSpec::Latest);
        }
        trimmed
            .parse::<i64>()
            .map(VersionSpec::Number)
            .map_err(|_| VersionSpecError(text.to_string()))
    }
}

impl std::str::FromStr for VersionSpec {
    type Err = VersionSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        VersionSpec::parse(s)
    }
}

impl fmt::Display for VersionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionSpec::Latest => f.write_str("latest"),
            VersionSpec::Number(n) => write!(f, "{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_latest_numbers_and_rejects_junk() {
        assert_eq!(VersionSpec::parse("latest"), Ok(VersionSpec::Latest));
        assert_eq!(VersionSpec::parse(""), Ok(VersionSpec::Latest));
        assert_eq!(VersionSpec::parse("10"), Ok(VersionSpec::Number(10)));
        assert_eq!(VersionSpec::parse(" 9 "), Ok(VersionSpec::Number(9)));
        assert!(VersionSpec::parse("v2").is_err());
        assert!(VersionSpec::parse("1.5").is_err());
    }
}
