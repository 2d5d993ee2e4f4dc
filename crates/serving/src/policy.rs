//! Which of the versions present in the repository should be served.

use std::collections::BTreeSet;

use soma_runtime::VersionPolicy;

/// The versions `policy` asks for among `present` (ascending), skipping `failed` ones so
/// that a broken new version never displaces a good one: with `latest 1`, a failed N+1
/// leaves N wanted.
pub(crate) fn wanted(
    policy: &VersionPolicy,
    present: &BTreeSet<i64>,
    failed: &BTreeSet<i64>,
) -> BTreeSet<i64> {
    let usable = present.iter().filter(|v| !failed.contains(v)).copied();
    match policy {
        VersionPolicy::All => usable.collect(),
        VersionPolicy::Latest(n) => usable.rev().take(*n as usize).collect(),
        VersionPolicy::Specific(versions) => usable.filter(|v| versions.contains(v)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[i64]) -> BTreeSet<i64> {
        v.iter().copied().collect()
    }

    #[test]
    fn latest_skips_failed_versions() {
        let present = set(&[1, 2, 9, 10]);
        assert_eq!(
            wanted(&VersionPolicy::Latest(1), &present, &set(&[])),
            set(&[10])
        );
        assert_eq!(
            wanted(&VersionPolicy::Latest(2), &present, &set(&[10])),
            set(&[2, 9])
        );
        assert_eq!(
            wanted(&VersionPolicy::All, &present, &set(&[2])),
            set(&[1, 9, 10])
        );
        assert_eq!(
            wanted(&VersionPolicy::Specific(set(&[2, 3])), &present, &set(&[])),
            set(&[2])
        );
    }
}
