//! The data folder's owner: one service at a time.
//!
//! Two services writing one alert journal and one checkpoint folder would
//! interleave records and overwrite each other's checkpoints. So a service
//! takes an exclusive lock on `<data_dir>/LOCK` before it opens either,
//! and keeps it until it has stopped. The lock is the kernel's
//! ([`File::try_lock`], an `flock` on Linux):
//! a service that crashes or is killed lets go of it with its process, so
//! a stale file never blocks a restart. The file holds the owner's process
//! id, for the message a second service gives.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file's name in the data folder.
pub const LOCK_FILE: &str = "LOCK";

/// Why the data folder could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot create data_dir {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot lock data_dir {path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "data_dir {path} is in use by another airbag service{}; stop it or give this one another data_dir",
        holder.as_deref().map(|pid| format!(" (process {pid})")).unwrap_or_default()
    )]
    InUse { path: PathBuf, holder: Option<String> },
}

/// The data folder, held: released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Creates `dir` if need be and takes its lock without waiting.
    ///
    /// # Errors
    /// The folder cannot be created or its lock file opened or locked, or
    /// another service holds it ([`DataDirError::InUse`], naming that
    /// service's process id).
    pub fn acquire(dir: &Path) -> Result<DataDirLock, DataDirError> {
        std::fs::create_dir_all(dir).map_err(|source| DataDirError::Create {
            path: dir.to_path_buf(),
            source,
        })?;
        let lock_error = |source| DataDirError::Lock {
            path: dir.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))
            .map_err(lock_error)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::Error(e)) => return Err(lock_error(e)),
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(DataDirError::InUse {
                    path: dir.to_path_buf(),
                    holder: (!holder.is_empty()).then(|| holder.to_owned()),
                });
            }
        }
        file.set_len(0).map_err(lock_error)?;
        file.rewind().map_err(lock_error)?;
        writeln!(file, "{}", std::process::id()).map_err(lock_error)?;
        Ok(DataDirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = DataDirLock::acquire(&data).expect("first");
        let refused = DataDirLock::acquire(&data).expect_err("second");
        let message = refused.to_string();
        assert!(
            message.contains("in use by another airbag service")
                && message.contains(&format!("(process {})", std::process::id())),
            "{message}"
        );
        drop(first);
        let again = DataDirLock::acquire(&data).expect("free again");
        drop(again);
    }

    #[test]
    fn a_lock_file_left_behind_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOCK_FILE), "4242\n").unwrap();
        let _held = DataDirLock::acquire(dir.path()).expect("a file without a live lock");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap(),
            format!("{}\n", std::process::id())
        );
    }
}
