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

/// The loaded versions to unload once every wanted version has been tried: those the policy
/// no longer wants, except that, as TF Serving's availability-preserving policy, while the
/// policy asks for versions on disk but none of them serves (they failed to load), the newest
/// loaded version serves on. A model whose folder holds only a broken version (after a new
/// version replaced the old folder, or a move to a new base path) keeps answering. A base
/// path with no versions at all unloads nothing: an S3 prefix emptied to be uploaded again,
/// or storage that lists nothing for a while, is no reason to stop answering (TF Serving
/// keeps serving when its base path is missing, and an S3 prefix without objects is one;
/// taking the model out of the config unloads it).
pub(crate) fn to_unload(
    policy: &VersionPolicy,
    present: &BTreeSet<i64>,
    failed: &BTreeSet<i64>,
    loaded: &BTreeSet<i64>,
) -> BTreeSet<i64> {
    if present.is_empty() {
        return BTreeSet::new();
    }
    let serve = wanted(policy, present, failed);
    let mut unwanted: BTreeSet<i64> = loaded.difference(&serve).copied().collect();
    let asked_for = wanted(policy, present, &BTreeSet::new());
    if !asked_for.is_empty() && serve.is_disjoint(loaded) {
        unwanted.pop_last();
    }
    unwanted
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

    #[test]
    fn the_newest_loaded_version_serves_while_every_wanted_one_failed() {
        let latest = VersionPolicy::Latest(1);
        // Moved to a folder whose only version failed: 2 (from the old folder) serves on.
        assert_eq!(
            to_unload(&latest, &set(&[7]), &set(&[7]), &set(&[1, 2])),
            set(&[1])
        );
        // Once a wanted version serves, the old ones go.
        assert_eq!(
            to_unload(&latest, &set(&[7]), &set(&[]), &set(&[2, 7])),
            set(&[2])
        );
        // A base path emptied (an S3 prefix deleted to be uploaded again): what is loaded
        // serves on.
        assert_eq!(
            to_unload(&latest, &set(&[]), &set(&[]), &set(&[1, 2])),
            set(&[])
        );
        // A policy that asks for no version on disk: nothing to wait for.
        let specific = VersionPolicy::Specific(set(&[5]));
        assert_eq!(
            to_unload(&specific, &set(&[1]), &set(&[]), &set(&[1])),
            set(&[1])
        );
        // A failed newest version with an older one wanted and serving: nothing to keep.
        assert_eq!(
            to_unload(&latest, &set(&[1, 2]), &set(&[2]), &set(&[1])),
            set(&[])
        );
    }
}
