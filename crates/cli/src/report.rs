//! How an error reaches the user: the message and its causes on one line.

/// The error and its causes, outermost first, joined by `: `, leaving out a cause whose
/// text the line already holds: errors that write their source into their own message (as
/// `#[error("...: {source}")]` does) would otherwise print it twice.
pub(crate) fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::one_line;

    /// Writes its source into its message, as the libraries' thiserror errors do.
    #[derive(Debug)]
    struct Unavailable {
        source: std::io::Error,
    }

    impl std::fmt::Display for Unavailable {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "storage unavailable: {}", self.source)
        }
    }

    impl std::error::Error for Unavailable {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::other("connection refused");
        let error = anyhow::Error::new(Unavailable { source: io }).context("cannot start");
        assert_eq!(
            one_line(&error),
            "cannot start: storage unavailable: connection refused"
        );
    }

    #[test]
    fn causes_that_add_something_are_all_kept() {
        let error = anyhow::anyhow!("the file is empty")
            .context("invalid settings")
            .context("cannot start");
        assert_eq!(
            one_line(&error),
            "cannot start: invalid settings: the file is empty"
        );
    }
}
