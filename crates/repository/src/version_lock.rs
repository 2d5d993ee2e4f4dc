//! Locks on cached versions that hold across processes sharing a cache directory.
//!
//! Each cached version folder `<version>/` has a lock file `<version>.lock` beside it, locked
//! with `flock(2)` (through `std::fs::File::lock`): shared while a version is checked and
//! loaded from the folder, exclusive while the folder is downloaded, replaced or deleted. So a
//! process that downloads a changed version never moves the folder away while another
//! process' TensorFlow reads files from it. The locks are advisory and tied to the open file:
//! a process that dies lets go of its locks. Lock files stay (they are empty): deleting one
//! while another process waits on it would let two processes hold "the" lock at once.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use crate::error::RepositoryError;

/// A held lock on one cached version; released when dropped.
#[derive(Debug)]
pub struct VersionLock {
    _file: File,
}

/// How a version's lock is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Reading the folder: checking it, loading from it.
    Read,
    /// Changing the folder: downloading into place, replacing, deleting.
    Write,
}

/// The lock file of the version folder `target`.
fn lock_path(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    target.with_file_name(name)
}

fn open(path: &Path) -> Result<File, RepositoryError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| RepositoryError::io(parent, e))?;
    }
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| RepositoryError::io(path, e))
}

/// Waits for the lock of the version folder `target` (on a blocking thread).
pub(crate) async fn lock(target: &Path, access: Access) -> Result<VersionLock, RepositoryError> {
    let path = lock_path(target);
    tokio::task::spawn_blocking(move || {
        let file = open(&path)?;
        let locked = match access {
            Access::Read => file.lock_shared(),
            Access::Write => file.lock(),
        };
        locked.map_err(|e| RepositoryError::io(&path, e))?;
        Ok(VersionLock { _file: file })
    })
    .await
    .map_err(|e| RepositoryError::io(target, std::io::Error::other(e.to_string())))?
}

/// The write lock of `target` if nobody holds its lock now; `None` if someone does.
pub(crate) async fn try_write(target: &Path) -> Result<Option<VersionLock>, RepositoryError> {
    let path = lock_path(target);
    tokio::task::spawn_blocking(move || {
        let file = open(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(VersionLock { _file: file })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(RepositoryError::io(&path, e)),
        }
    })
    .await
    .map_err(|e| RepositoryError::io(target, std::io::Error::other(e.to_string())))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_file_sits_beside_the_folder() {
        assert_eq!(
            lock_path(Path::new("/cache/bucket/iris/12")),
            Path::new("/cache/bucket/iris/12.lock")
        );
    }

    #[tokio::test]
    async fn readers_share_and_a_writer_waits_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("7");
        let first = lock(&target, Access::Read).await.unwrap();
        let second = lock(&target, Access::Read).await.unwrap();
        assert!(try_write(&target).await.unwrap().is_none());
        drop((first, second));
        let writer = try_write(&target).await.unwrap().expect("no reader left");
        let reader = lock(&target, Access::Read);
        let waited = tokio::time::timeout(std::time::Duration::from_millis(100), reader).await;
        assert!(waited.is_err(), "a reader got in beside the writer");
        drop(writer);
        lock(&target, Access::Read).await.unwrap();
    }
}
