//! Writer epochs: fencing off a writer's older connections.
//!
//! A client may abandon a connection the server still thinks alive (a
//! half-open TCP connection, a partitioned network) while batches of it are
//! still buffered there. It names itself in the `Ingest` call's metadata
//! ([`WRITER_KEY`]) and numbers each of its connections with a higher epoch
//! ([`EPOCH_KEY`]). The server keeps the highest epoch per writer: a stream
//! of an older epoch is refused at open, and an open stream whose epoch has
//! been overtaken applies no further batch. An epoch takes over when a
//! stream opens with it, or when `LastApplied` is asked with it.
//!
//! The check and a batch's apply are one step under the writer's lock, and
//! a takeover takes the same lock: once a takeover has returned (and so
//! once `LastApplied` has answered), no batch of an older epoch is applied.
//! The lock is the writer's own, uncontended unless two of its epochs meet.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use tonic::metadata::MetadataMap;
use tonic::Status;

/// Request metadata naming the writer of an `Ingest` stream.
pub const WRITER_KEY: &str = "airbag-writer";
/// Request metadata with the writer's epoch for the stream; also the
/// metadata of a refusal, with the epoch that took over.
pub const EPOCH_KEY: &str = "airbag-writer-epoch";
/// Longest writer name, in bytes.
pub const MAX_WRITER_BYTES: usize = 128;
/// Most writers remembered; a new one past this is refused.
pub const MAX_WRITERS: usize = 65_536;

/// One writer: the highest epoch seen.
#[derive(Debug, Default)]
struct Writer {
    epoch: Mutex<u64>,
}

/// Every writer's highest epoch.
#[derive(Debug, Default)]
pub struct WriterFences {
    writers: Mutex<HashMap<Arc<str>, Arc<Writer>>>,
}

/// A stream's place in its writer's fence.
#[derive(Debug)]
pub struct StreamFence {
    name: Arc<str>,
    epoch: u64,
    writer: Arc<Writer>,
}

impl WriterFences {
    /// Records that `name` writes with `epoch` from now on: older epochs
    /// apply nothing more once this returns.
    ///
    /// # Errors
    /// `FAILED_PRECONDITION` when a newer epoch already took over;
    /// `INVALID_ARGUMENT` for a bad name; `RESOURCE_EXHAUSTED` past
    /// [`MAX_WRITERS`].
    pub fn take_over(&self, name: &str, epoch: u64) -> Result<StreamFence, Status> {
        if name.is_empty() || name.len() > MAX_WRITER_BYTES {
            return Err(Status::invalid_argument(format!(
                "{WRITER_KEY} must be 1 to {MAX_WRITER_BYTES} bytes, got {}",
                name.len()
            )));
        }
        let writer = {
            let mut writers = self.writers.lock();
            match writers.get(name) {
                Some(writer) => writer.clone(),
                None if writers.len() >= MAX_WRITERS => {
                    return Err(Status::resource_exhausted(format!(
                        "too many writers named in {WRITER_KEY}: this server remembers at most {MAX_WRITERS}"
                    )))
                }
                None => writers.entry(Arc::from(name)).or_default().clone(),
            }
        };
        let fence = StreamFence {
            name: Arc::from(name),
            epoch,
            writer,
        };
        {
            let mut current = fence.writer.epoch.lock();
            if *current > epoch {
                return Err(fence.superseded(*current));
            }
            *current = epoch;
        }
        Ok(fence)
    }

    /// The fence an `Ingest` call asks for in its metadata, taking over
    /// for its epoch; `None` for a call that names no writer.
    ///
    /// # Errors
    /// As [`WriterFences::take_over`], and `INVALID_ARGUMENT` for a writer
    /// without a valid epoch.
    pub fn for_call(&self, metadata: &MetadataMap) -> Result<Option<StreamFence>, Status> {
        let Some(name) = metadata.get(WRITER_KEY) else {
            return Ok(None);
        };
        let name = name
            .to_str()
            .map_err(|_| Status::invalid_argument(format!("{WRITER_KEY} must be printable ASCII")))?;
        let epoch = metadata
            .get(EPOCH_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "{WRITER_KEY} needs {EPOCH_KEY}: a number, higher for each new connection of the writer"
                ))
            })?;
        self.take_over(name, epoch).map(Some)
    }
}

impl StreamFence {
    /// Holds the writer's lock while a batch is applied, if this stream's
    /// epoch is still the writer's newest.
    ///
    /// # Errors
    /// `FAILED_PRECONDITION` once a newer epoch took over.
    pub fn admit(&self) -> Result<MutexGuard<'_, u64>, Status> {
        let current = self.writer.epoch.lock();
        if *current > self.epoch {
            return Err(self.superseded(*current));
        }
        Ok(current)
    }

    fn superseded(&self, current: u64) -> Status {
        let mut status = Status::failed_precondition(format!(
            "writer `{}` epoch {} was superseded by epoch {current}: a newer connection of this writer took over, \
             and this one applies nothing more",
            self.name, self.epoch
        ));
        if let Ok(value) = current.to_string().parse() {
            status.metadata_mut().insert(EPOCH_KEY, value);
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_epoch_fences_off_the_older_ones() {
        let fences = WriterFences::default();
        let first = fences.take_over("feed-a", 1).unwrap();
        assert!(first.admit().is_ok());
        let again = fences.take_over("feed-a", 1).unwrap();
        assert!(again.admit().is_ok(), "the same epoch may open more streams");
        let second = fences.take_over("feed-a", 2).unwrap();
        let refused = first.admit().unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        assert_eq!(
            refused.message(),
            "writer `feed-a` epoch 1 was superseded by epoch 2: a newer connection of this writer took over, and \
             this one applies nothing more"
        );
        assert_eq!(refused.metadata().get(EPOCH_KEY).unwrap(), "2");
        assert!(second.admit().is_ok());
        assert_eq!(
            fences.take_over("feed-a", 1).unwrap_err().code(),
            tonic::Code::FailedPrecondition
        );
        // Other writers are their own.
        assert!(fences.take_over("feed-b", 1).is_ok());
        assert_eq!(
            fences.take_over("", 1).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
