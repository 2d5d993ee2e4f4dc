//! Cortex layout detection and SavedModel checks over a listing of object keys.

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::error::RepositoryError;
use crate::tree::{
    NEURON_NON_VERSIONED, NEURON_VERSIONED, TF_NON_VERSIONED, TF_VERSIONED, TREE_LIMIT, render_tree,
};

/// Which files a model version must contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validator {
    /// `saved_model.pb`, `variables/variables.index` and at least one
    /// `variables/variables.data-00000-of-*`.
    TensorFlow,
    /// Inferentia (Neuron-compiled) SavedModels: only `saved_model.pb`.
    Neuron,
    /// TF Serving's rule (`soma tfserving`): `saved_model.pb`, and `variables/` only when
    /// the model has variables (a graph of constants has none, and TensorFlow loads it
    /// without), then with both its index and a data shard.
    SavedModel,
}

/// How the versions of a model are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Every top-level entry is an integer folder (a version).
    Versioned,
    /// The SavedModel is at the root; it is served as version 1.
    NonVersioned,
}

/// The files of one version.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionFiles {
    /// The version's folder as named in storage: the version number, possibly written with
    /// leading zeros (`007` is version 7, as TF Serving and Cortex read it); empty for a
    /// non-versioned model.
    pub folder: String,
    /// Path relative to the version folder (the model root if non-versioned) → size in bytes.
    pub files: BTreeMap<String, u64>,
    /// The newest modification time among the files, when the storage reports one.
    pub last_modified: Option<SystemTime>,
}

/// One listed object.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct FileMeta {
    pub(crate) size: u64,
    pub(crate) last_modified: Option<SystemTime>,
}

/// Keys relative to the model (or models.dir) folder.
pub(crate) type Listing = BTreeMap<String, FileMeta>;

/// The outcome of looking at a listing: the layout (or why there is none) and, per version,
/// its files (or what is wrong with it).
#[derive(Debug)]
pub(crate) struct Analysis {
    pub(crate) layout: Result<Layout, String>,
    pub(crate) versions: BTreeMap<i64, Result<VersionFiles, String>>,
}

const DATA_SHARD_PREFIX: &str = "variables/variables.data-00000-of-";

/// Parses a version folder name: decimal digits, leading zeros allowed (TF Serving and
/// Cortex read `007` as version 7). `Ok(None)`: not a number (a non-version entry); `Err`:
/// looks like a number but cannot name a version folder.
pub(crate) fn parse_version(name: &str) -> Result<Option<i64>, String> {
    match name.parse::<i64>() {
        Err(_) if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) => Err(format!(
            "{name:?} is not a valid version folder name (versions are 64-bit integers, at most {})",
            i64::MAX
        )),
        Err(_) => Ok(None),
        Ok(v) if name.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(v)),
        Ok(_) => Err(format!(
            "{name:?} is not a valid version folder name (use a non-negative integer without a sign)"
        )),
    }
}

/// Which required files are missing from one version's files.
pub(crate) fn missing_files(
    files: &BTreeMap<String, u64>,
    validator: Validator,
) -> Vec<&'static str> {
    let mut missing = Vec::new();
    if !files.contains_key("saved_model.pb") {
        missing.push("saved_model.pb");
    }
    let index = files.contains_key("variables/variables.index");
    let data = files.keys().any(|k| k.starts_with(DATA_SHARD_PREFIX));
    let variables_needed = match validator {
        Validator::TensorFlow => true,
        Validator::SavedModel => index || data,
        Validator::Neuron => false,
    };
    if variables_needed {
        if !index {
            missing.push("variables/variables.index");
        }
        if !data {
            missing.push("variables/variables.data-00000-of-*");
        }
    }
    missing
}

fn version_files(folder: &str, entries: &BTreeMap<String, FileMeta>) -> VersionFiles {
    VersionFiles {
        folder: folder.to_string(),
        files: entries.iter().map(|(k, m)| (k.clone(), m.size)).collect(),
        last_modified: entries.values().filter_map(|m| m.last_modified).max(),
    }
}

fn check(
    folder: &str,
    entries: &BTreeMap<String, FileMeta>,
    validator: Validator,
    what: &str,
) -> Result<VersionFiles, String> {
    let files = version_files(folder, entries);
    let missing = missing_files(&files.files, validator);
    if missing.is_empty() {
        Ok(files)
    } else {
        Err(format!("{what} is missing {}", missing.join(", ")))
    }
}

fn short_list(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(", ... {} more", names.len() - SHOWN));
    }
    text
}

/// Detects the layout (Cortex rules) and checks each version.
pub(crate) fn analyze(listing: &Listing, validator: Validator) -> Analysis {
    if listing.is_empty() {
        return Analysis {
            layout: Err("the directory is empty".into()),
            versions: BTreeMap::new(),
        };
    }
    let mut versions: BTreeMap<i64, BTreeMap<String, FileMeta>> = BTreeMap::new();
    // Each version's folder name. A version named by two folders (`7` and `007`) is read,
    // as TF Serving reads it, from the one whose name sorts last (`7`), and reported.
    let mut folders: BTreeMap<i64, &str> = BTreeMap::new();
    let mut named_twice: BTreeMap<i64, Vec<&str>> = BTreeMap::new();
    let mut version_names: Vec<String> = Vec::new();
    let mut version_files_at_top: Vec<String> = Vec::new();
    let mut others: Vec<String> = Vec::new();
    let mut bad_names: Vec<String> = Vec::new();
    for (key, meta) in listing {
        let (first, rest) = match key.split_once('/') {
            Some((first, rest)) => (first, Some(rest)),
            None => (key.as_str(), None),
        };
        match parse_version(first) {
            Ok(Some(v)) => {
                if !version_names.iter().any(|n| n == first) {
                    version_names.push(first.to_string());
                }
                let folder = folders.entry(v).or_insert(first);
                if *folder != first {
                    // Keys come sorted, and of two names of one version the one with fewer
                    // leading zeros sorts last: this folder replaces the one read so far.
                    named_twice
                        .entry(v)
                        .or_insert_with(|| vec![*folder])
                        .push(first);
                    *folder = first;
                    versions.remove(&v);
                }
                match rest {
                    Some(rest) => {
                        versions
                            .entry(v)
                            .or_default()
                            .insert(rest.to_string(), *meta);
                    }
                    None => version_files_at_top.push(first.to_string()),
                }
            }
            Ok(None) => {
                if !others.iter().any(|n| n == first) {
                    others.push(first.to_string());
                }
            }
            Err(problem) => {
                if !bad_names.contains(&problem) {
                    bad_names.push(problem);
                }
            }
        }
    }
    let check_version = |v: i64, entries: &BTreeMap<String, FileMeta>| {
        check(folders[&v], entries, validator, &format!("version {v}"))
    };
    let mut problems = bad_names;
    for (v, names) in &named_twice {
        let (read, ignored) = names.split_last().expect("two names at least");
        let ignored: Vec<String> = ignored.iter().map(|n| format!("{n:?}")).collect();
        problems.push(format!(
            "version {v} is named by more than one folder: read from {read:?}, {} ignored \
             (keep one)",
            ignored.join(", ")
        ));
    }
    if !version_names.is_empty() && !others.is_empty() {
        version_names.sort_by_key(|n| n.parse::<i64>().unwrap_or_default());
        problems.push(format!(
            "it mixes version folders ({}) with other entries ({})",
            short_list(&version_names),
            short_list(&others)
        ));
    }
    if !problems.is_empty() {
        return Analysis {
            layout: Err(problems.join("; ")),
            // Valid version folders are still reported: the watcher keeps serving them
            // while someone fixes a stray entry.
            versions: versions
                .iter()
                .map(|(v, e)| (*v, check_version(*v, e)))
                .collect(),
        };
    }
    if version_names.is_empty() {
        let mut out = BTreeMap::new();
        out.insert(1, check("", listing, validator, "the model folder"));
        return Analysis {
            layout: Ok(Layout::NonVersioned),
            versions: out,
        };
    }
    let mut out: BTreeMap<i64, Result<VersionFiles, String>> = versions
        .iter()
        .map(|(v, e)| (*v, check_version(*v, e)))
        .collect();
    for name in version_files_at_top {
        let v: i64 = name.parse().unwrap_or_default();
        out.entry(v)
            .or_insert_with(|| Err(format!("version {v} is a file, not a folder")));
    }
    Analysis {
        layout: Ok(Layout::Versioned),
        versions: out,
    }
}

/// The full Cortex-style error for an invalid model folder.
pub(crate) fn invalid_model(
    location: &str,
    problem: &str,
    keys: &[&str],
    validator: Validator,
) -> RepositoryError {
    let (name, handler, versioned, non_versioned) = match validator {
        Validator::TensorFlow | Validator::SavedModel => {
            ("TensorFlow", "tensorflow", TF_VERSIONED, TF_NON_VERSIONED)
        }
        Validator::Neuron => (
            "Neuron TensorFlow",
            "tensorflow",
            NEURON_VERSIONED,
            NEURON_NON_VERSIONED,
        ),
    };
    let current = if keys.is_empty() {
        "but its current directory is empty".to_string()
    } else {
        format!(
            "but its current structure is (limited to {TREE_LIMIT} sub-paths)\n\n{}",
            render_tree(keys.iter().copied(), TREE_LIMIT)
        )
    };
    let message = format!(
        "{location}: invalid {name} model path: {problem}. For models provided for the \
         {handler} handler type, the path must be a directory with one of the following \
         structures:\n\n{versioned}\nor like\n\n{non_versioned}\n{current}"
    );
    RepositoryError::InvalidLayout {
        location: location.to_string(),
        problem: problem.to_string(),
        message: message.trim_end().to_string(),
    }
}

/// Detects and validates a whole model: every version must pass.
pub(crate) fn validate(
    location: &str,
    listing: &Listing,
    validator: Validator,
) -> Result<(Layout, BTreeMap<i64, VersionFiles>), RepositoryError> {
    let analysis = analyze(listing, validator);
    let keys: Vec<&str> = listing.keys().map(String::as_str).collect();
    let layout = analysis
        .layout
        .map_err(|problem| invalid_model(location, &problem, &keys, validator))?;
    let mut versions = BTreeMap::new();
    let mut problems = Vec::new();
    for (v, result) in analysis.versions {
        match result {
            Ok(files) => {
                versions.insert(v, files);
            }
            Err(problem) => problems.push(problem),
        }
    }
    if !problems.is_empty() {
        return Err(invalid_model(
            location,
            &problems.join("; "),
            &keys,
            validator,
        ));
    }
    Ok((layout, versions))
}

/// Removes "directory marker" keys (a key that is also the prefix of other keys, as left by
/// S3 consoles creating empty folders) and empty keys.
pub(crate) fn drop_dir_markers(listing: &mut Listing) {
    let keys: Vec<String> = listing.keys().cloned().collect();
    for key in keys {
        if key.is_empty() || key.ends_with('/') {
            listing.remove(&key);
            continue;
        }
        let as_dir = format!("{key}/");
        let empty = listing.get(&key).is_some_and(|m| m.size == 0);
        if empty
            && listing
                .range(as_dir.clone()..)
                .next()
                .is_some_and(|(k, _)| k.starts_with(&as_dir))
        {
            listing.remove(&key);
        }
    }
}
