//! The checkpoint folder: numbered files written atomically, the newest
//! few kept, the newest valid one found on start.
//!
//! A file is `checkpoint-<number>-<unix ms>.ckpt`; numbers only grow
//! (the next continues from the highest on disk, whatever its state), so
//! the newest checkpoint is the highest number. A write goes to a hidden
//! temporary file in the same folder, is flushed to disk, renamed into
//! place, and the folder is flushed too: a crash leaves the old files and
//! at most a temporary file, removed at the next open.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tracing::warn;

use super::format::{self, FormatError};
use super::Checkpoint;

const PREFIX: &str = "checkpoint-";
const SUFFIX: &str = ".ckpt";
const TEMP_PREFIX: &str = ".checkpoint-";
const TEMP_SUFFIX: &str = ".tmp";

/// Why a checkpoint could not be written, or the folder not used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("checkpoint folder {path}: {source}")]
    Folder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write checkpoint {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Encode(#[from] FormatError),
}

/// Why one checkpoint file was passed over.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Format(#[from] FormatError),
}

/// A checkpoint file that could not be used, and why.
#[derive(Debug)]
pub struct Rejected {
    pub path: PathBuf,
    pub error: ReadError,
}

/// A checkpoint read back.
#[derive(Debug)]
pub struct Loaded {
    pub path: PathBuf,
    pub number: u64,
    pub bytes: usize,
    pub checkpoint: Checkpoint,
}

/// What [`CheckpointStore::load_newest`] found.
#[derive(Debug, Default)]
pub struct LoadOutcome {
    /// The newest checkpoint that reads back whole, if any.
    pub loaded: Option<Loaded>,
    /// Newer files passed over on the way, newest first.
    pub rejected: Vec<Rejected>,
}

/// A checkpoint just written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub path: PathBuf,
    pub number: u64,
    pub bytes: usize,
}

/// The checkpoint folder.
#[derive(Debug)]
pub struct CheckpointStore {
    dir: PathBuf,
    keep: usize,
    next: AtomicU64,
    /// One write (and its pruning) at a time.
    serial: Mutex<()>,
}

impl CheckpointStore {
    /// Opens (creating if needed) `dir`, keeping the newest `keep` files
    /// (at least one). Removes temporary files a crash left behind.
    ///
    /// # Errors
    /// The folder cannot be created or listed.
    pub fn open(dir: impl Into<PathBuf>, keep: usize) -> Result<Self, StoreError> {
        let dir = dir.into();
        let folder = |source| StoreError::Folder {
            path: dir.clone(),
            source,
        };
        fs::create_dir_all(&dir).map_err(folder)?;
        for entry in fs::read_dir(&dir).map_err(folder)? {
            let name = entry.map_err(folder)?.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX) {
                let path = dir.join(&*name);
                if let Err(error) = fs::remove_file(&path) {
                    warn!(path = %path.display(), %error, "Cannot remove an unfinished checkpoint file.");
                }
            }
        }
        let store = CheckpointStore {
            dir,
            keep: keep.max(1),
            next: AtomicU64::new(1),
            serial: Mutex::new(()),
        };
        let highest = store.list()?.first().map_or(0, |(n, _)| *n);
        store.next.store(highest + 1, Ordering::Relaxed);
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Checkpoint files by number, newest first.
    ///
    /// # Errors
    /// The folder cannot be listed.
    pub fn list(&self) -> Result<Vec<(u64, PathBuf)>, StoreError> {
        let folder = |source| StoreError::Folder {
            path: self.dir.clone(),
            source,
        };
        let mut files = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(folder)? {
            let entry = entry.map_err(folder)?;
            if let Some(number) = parse_number(&entry.file_name().to_string_lossy()) {
                files.push((number, entry.path()));
            }
        }
        files.sort_by(|a, b| b.cmp(a));
        Ok(files)
    }

    /// Writes `checkpoint` as the next file, atomically, then removes all
    /// but the newest `keep`. Blocking.
    ///
    /// # Errors
    /// Encoding or I/O failed; the files already there are untouched.
    pub fn write(&self, checkpoint: &Checkpoint) -> Result<Written, StoreError> {
        let bytes = format::encode(checkpoint)?;
        let _serial = self.serial.lock().unwrap_or_else(|p| p.into_inner());
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        let unix_ms = checkpoint.written_at_ns.div_euclid(1_000_000).max(0);
        let name = format!("{PREFIX}{number:020}-{unix_ms}{SUFFIX}");
        let path = self.dir.join(&name);
        let temp = self.dir.join(format!("{TEMP_PREFIX}{number:020}{TEMP_SUFFIX}"));
        let result = write_durably(&temp, &path, &self.dir, &bytes);
        if let Err(source) = result {
            let _ = fs::remove_file(&temp);
            return Err(StoreError::Write { path, source });
        }
        self.prune();
        Ok(Written {
            path,
            number,
            bytes: bytes.len(),
        })
    }

    /// The newest checkpoint that reads back whole. Each newer file that
    /// does not (truncated, corrupt, another format version, unreadable)
    /// is logged as a warning with its path and reason, and the next
    /// older one is tried.
    ///
    /// # Errors
    /// The folder cannot be listed.
    pub fn load_newest(&self) -> Result<LoadOutcome, StoreError> {
        let mut outcome = LoadOutcome::default();
        for (number, path) in self.list()? {
            match read(&path) {
                Ok((checkpoint, bytes)) => {
                    outcome.loaded = Some(Loaded {
                        path,
                        number,
                        bytes,
                        checkpoint,
                    });
                    break;
                }
                Err(error) => {
                    warn!(path = %path.display(), reason = %error, "Checkpoint unusable; trying the one before.");
                    outcome.rejected.push(Rejected { path, error });
                }
            }
        }
        Ok(outcome)
    }

    /// Removes every checkpoint file but the newest `keep`.
    fn prune(&self) {
        let files = match self.list() {
            Ok(files) => files,
            Err(error) => {
                warn!(%error, "Cannot list checkpoints to remove old ones.");
                return;
            }
        };
        for (_, path) in files.into_iter().skip(self.keep) {
            if let Err(error) = fs::remove_file(&path) {
                warn!(path = %path.display(), %error, "Cannot remove an old checkpoint.");
            }
        }
    }
}

/// Reads and decodes one checkpoint file; also returns its size.
///
/// # Errors
/// The file cannot be read or is not a valid checkpoint.
pub fn read(path: &Path) -> Result<(Checkpoint, usize), ReadError> {
    let bytes = fs::read(path)?;
    let checkpoint = format::decode(&bytes)?;
    Ok((checkpoint, bytes.len()))
}

/// The number of a checkpoint file name, `None` for any other name.
fn parse_number(name: &str) -> Option<u64> {
    let rest = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let (number, unix_ms) = rest.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(number) || !digits(unix_ms) {
        return None;
    }
    number.parse().ok()
}

/// temp: write, flush to disk; rename to path; flush the folder.
fn write_durably(temp: &Path, path: &Path, dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = File::create(temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(temp, path)?;
    sync_dir(dir)
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}
