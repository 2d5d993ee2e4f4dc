//! Model repositories on local disk or S3: discovery, layout checks, download cache, watcher.
//!
//! * [`discover_model`] / [`discover_dir`]: list a model folder (or a `models.dir` folder of
//!   model folders) and check it with Cortex's rules: the first path component of every key
//!   is either an integer (a version folder) or not; only versions → [`Layout::Versioned`],
//!   none → [`Layout::NonVersioned`] (served as version 1), both or nothing → error. Every
//!   version must hold a SavedModel ([`Validator::TensorFlow`]: `saved_model.pb`,
//!   `variables/variables.index`, `variables/variables.data-00000-of-*`;
//!   [`Validator::Neuron`]: `saved_model.pb`). Errors use Cortex's wording with the expected
//!   layouts and the actual tree (at most 50 paths), preceded by the specific problem.
//! * [`ModelCache::fetch`]: a local folder for one version — local models in place, S3
//!   versions downloaded atomically into the cache and reused while unchanged.
//! * [`Watcher`]: polls model folders and `models.dir` folders ([`WatchSource`]) and reports
//!   added/changed/removed versions once they are valid and settled (unchanged over two
//!   polls, so half-copied folders are skipped); failed listings never remove anything.
//!
//! S3 is reached through `object_store` ([`open_object_store`]) with the standard AWS
//! environment variables, or explicit [`S3Settings`] (the `*_with` variants). Local folders
//! go through `object_store`'s `LocalFileSystem`, so one listing/validation path serves
//! local disks, S3 and (in tests) `InMemory`.

mod cache;
mod discover;
mod error;
mod layout;
mod store;
mod tree;
mod version_lock;
mod watch;

pub use cache::{CachedVersion, MANIFEST_FILE, ModelCache};
pub use discover::{
    DirModel, DiscoveredModel, RESERVED_MODEL_NAME, discover_dir, discover_dir_each,
    discover_dir_with, discover_model, discover_model_with,
};
pub use error::RepositoryError;
pub use layout::{Layout, Validator, VersionFiles};
pub use store::{S3Settings, open_object_store};
pub use version_lock::VersionLock;
pub use watch::{RepositoryEvent, WatchSource, Watcher};
