//! Locks on cached versions that hold across processes sharing a cache directory.
//!
//! Each cached version folder `<version>/` has a lock file `<version>.lock` beside it, locked
//! with `flock(2)` (through `std::fs::File::lock`): shared while a version is checked and
//! loaded from the folder, exclusive while the folder is downloaded, replaced or deleted. So a
//! process that downloads a changed version never moves the folder away while another
//! process' TensorFlow reads files from it. The locks are advisory and tied to the open file:
//! a process that dies lets go of its locks.
//!
//! A version's lock file is deleted with its folder, by the holder of the write lock. Another
//! process may be waiting on that file meanwhile, and gets its lock once the deleter lets go:
//! a lock on a file no longer at the path. So every lock, once taken, is checked against the
//! path (same device and inode; Unix), and taken again on the path's current file if it
//! does not match: two processes never both hold "the" lock of a version. (Elsewhere lock
//! files are not deleted.)

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use crate::error::RepositoryError;

/// A held lock on one cached version; released when dropped.
#[derive(Debug)]
pub struct VersionLock {
    /// Held, not read (but by tests): the lock lasts while the file is open.
    #[cfg_attr(not(test), allow(dead_code))]
    file: File,
    path: PathBuf,
}

impl VersionLock {
    /// Deletes the lock file, for a write lock whose version folder was just deleted (the
    /// last step of that change: a process waiting on the file then takes a new one). Not
    /// where locks cannot be checked against the path (not Unix): the file stays there.
    pub(crate) fn delete_file(&self) -> std::io::Result<()> {
        if !cfg!(unix) {
            return Ok(());
        }
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
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

/// Whether `path` still names the open `file` (it may have been deleted, and maybe created
/// again, while the lock was awaited).
#[cfg(unix)]
fn still_at(file: &File, path: &Path) -> Result<bool, RepositoryError> {
    use std::os::unix::fs::MetadataExt as _;
    let held = file.metadata().map_err(|e| RepositoryError::io(path, e))?;
    match std::fs::metadata(path) {
        Ok(now) => Ok(now.dev() == held.dev() && now.ino() == held.ino()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(RepositoryError::io(path, e)),
    }
}

#[cfg(not(unix))]
fn still_at(_file: &File, _path: &Path) -> Result<bool, RepositoryError> {
    Ok(true)
}

/// Waits for the lock of the version folder `target` (on a blocking thread).
pub(crate) async fn lock(target: &Path, access: Access) -> Result<VersionLock, RepositoryError> {
    let path = lock_path(target);
    tokio::task::spawn_blocking(move || {
        loop {
            let file = open(&path)?;
            let locked = match access {
                Access::Read => file.lock_shared(),
                Access::Write => file.lock(),
            };
            locked.map_err(|e| RepositoryError::io(&path, e))?;
            if still_at(&file, &path)? {
                return Ok(VersionLock { file, path });
            }
        }
    })
    .await
    .map_err(|e| RepositoryError::io(target, std::io::Error::other(e.to_string())))?
}

/// The write lock of `target` if nobody holds its lock now; `None` if someone does.
pub(crate) async fn try_write(target: &Path) -> Result<Option<VersionLock>, RepositoryError> {
    let path = lock_path(target);
    tokio::task::spawn_blocking(move || {
        loop {
            let file = open(&path)?;
            match file.try_lock() {
                Ok(()) if still_at(&file, &path)? => {
                    return Ok(Some(VersionLock { file, path }));
                }
                // Deleted by the holder before us: the path's file now is the lock.
                Ok(()) => continue,
                Err(TryLockError::WouldBlock) => return Ok(None),
                Err(TryLockError::Error(e)) => return Err(RepositoryError::io(&path, e)),
            }
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

    /// A reader waiting on a lock file that its writer deletes takes the lock of the file at
    /// the path after it, so it waits for a writer that took that one meanwhile too.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_deleted_lock_file_is_not_held_beside_its_successor() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("7");
        let deleter = lock(&target, Access::Write).await.unwrap();
        let waiting = tokio::spawn({
            let target = target.clone();
            async move { lock(&target, Access::Read).await.unwrap() }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        deleter.delete_file().unwrap();
        assert!(!lock_path(&target).exists());
        let next = try_write(&target).await.unwrap().expect("a new lock file");
        drop(deleter);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(
            !waiting.is_finished(),
            "read lock held beside the new writer"
        );
        drop(next);
        let reader = waiting.await.unwrap();
        assert!(still_at(&reader.file, &lock_path(&target)).unwrap());
    }
}
