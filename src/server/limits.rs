//! Stream and rate limits of the gRPC port: counting guards for open
//! ingest streams and subscriptions (in total and per connection), and
//! the per-connection ingest rate budget. A limit that is hit is a
//! `RESOURCE_EXHAUSTED` status naming the `[limits]` key and its value;
//! other clients carry on.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use tonic::Status;

use super::connection::Connection;
use crate::config::limits::LimitsConfig;

/// The kinds of long-lived stream that are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    Ingest,
    Subscribe,
}

impl StreamKind {
    fn name(self) -> &'static str {
        match self {
            StreamKind::Ingest => "ingest streams",
            StreamKind::Subscribe => "alert subscriptions",
        }
    }
}

/// Server-wide stream counts and the limits they are held to.
#[derive(Debug)]
pub struct StreamLimits {
    config: LimitsConfig,
    ingest: AtomicU32,
    subscribers: AtomicU32,
}

/// Holds one stream's place in the counts; gives it back when dropped.
#[derive(Debug)]
pub struct StreamGuard {
    limits: Arc<StreamLimits>,
    connection: Option<Arc<Connection>>,
    kind: StreamKind,
}

impl StreamLimits {
    pub fn new(config: LimitsConfig) -> Arc<Self> {
        Arc::new(StreamLimits {
            config,
            ingest: AtomicU32::new(0),
            subscribers: AtomicU32::new(0),
        })
    }

    /// Open streams of `kind` on the whole server.
    pub fn open(&self, kind: StreamKind) -> u32 {
        self.total(kind).load(Ordering::Relaxed)
    }

    fn total(&self, kind: StreamKind) -> &AtomicU32 {
        match kind {
            StreamKind::Ingest => &self.ingest,
            StreamKind::Subscribe => &self.subscribers,
        }
    }

    /// Takes a place for a new stream on `connection`.
    ///
    /// # Errors
    /// `RESOURCE_EXHAUSTED` naming the per-connection or total limit.
    pub fn acquire(
        self: &Arc<Self>,
        kind: StreamKind,
        connection: Option<&Arc<Connection>>,
    ) -> Result<StreamGuard, Status> {
        let (per_connection, per_connection_key, total, total_key) = match kind {
            StreamKind::Ingest => (
                self.config.max_ingest_streams_per_connection,
                "limits.max_ingest_streams_per_connection",
                self.config.max_ingest_streams,
                "limits.max_ingest_streams",
            ),
            StreamKind::Subscribe => (
                self.config.max_subscribers_per_connection,
                "limits.max_subscribers_per_connection",
                self.config.max_subscribers,
                "limits.max_subscribers",
            ),
        };
        if let Some(conn) = connection {
            if !take(connection_count(conn, kind), per_connection) {
                return Err(Status::resource_exhausted(format!(
                    "too many {} on this connection: the limit is {per_connection} ({per_connection_key})",
                    kind.name()
                )));
            }
        }
        if !take(self.total(kind), total) {
            if let Some(conn) = connection {
                connection_count(conn, kind).fetch_sub(1, Ordering::AcqRel);
            }
            return Err(Status::resource_exhausted(format!(
                "too many {} on this server: the limit is {total} ({total_key})",
                kind.name()
            )));
        }
        Ok(StreamGuard {
            limits: self.clone(),
            connection: connection.cloned(),
            kind,
        })
    }
}

fn connection_count(conn: &Connection, kind: StreamKind) -> &AtomicU32 {
    match kind {
        StreamKind::Ingest => &conn.ingest_streams,
        StreamKind::Subscribe => &conn.subscribers,
    }
}

/// Adds one to `count` unless it is at `limit`.
fn take(count: &AtomicU32, limit: u32) -> bool {
    count
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < limit).then_some(n + 1))
        .is_ok()
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.limits.total(self.kind).fetch_sub(1, Ordering::AcqRel);
        if let Some(conn) = &self.connection {
            connection_count(conn, self.kind).fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A connection's ingest budget: a token bucket of ticks that refills at
/// the configured rate and holds at most one second's worth.
#[derive(Debug)]
pub struct IngestRate {
    per_second: u32,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    ticks: f64,
    at: Instant,
}

impl IngestRate {
    pub fn new(per_second: u32) -> Self {
        IngestRate {
            per_second,
            bucket: Mutex::new(Bucket {
                ticks: f64::from(per_second),
                at: Instant::now(),
            }),
        }
    }

    /// Takes `ticks` from the budget for batch `batch_id`.
    ///
    /// # Errors
    /// `RESOURCE_EXHAUSTED` naming the limit when the budget holds fewer
    /// ticks; nothing is taken then.
    pub fn admit(&self, batch_id: u64, ticks: usize) -> Result<(), Status> {
        let now = Instant::now();
        let capacity = f64::from(self.per_second);
        let wanted = ticks as f64;
        let admitted = {
            let mut bucket = self.bucket.lock();
            let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * capacity;
            bucket.ticks = (bucket.ticks + refill).min(capacity);
            bucket.at = now;
            if bucket.ticks >= wanted {
                bucket.ticks -= wanted;
                true
            } else {
                false
            }
        };
        if admitted {
            return Ok(());
        }
        let limit = self.per_second;
        Err(Status::resource_exhausted(if wanted > capacity {
            format!(
                "batch {batch_id} has {ticks} ticks, more than this connection may send in a second: the limit is \
                 {limit} ticks per second (limits.max_ingest_rate_per_connection)"
            )
        } else {
            format!(
                "ingest rate over the limit of {limit} ticks per second per connection \
                 (limits.max_ingest_rate_per_connection) at batch {batch_id}; send more slowly"
            )
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(ingest_per_conn: u32, ingest_total: u32) -> Arc<StreamLimits> {
        StreamLimits::new(LimitsConfig {
            max_ingest_streams: ingest_total,
            max_ingest_streams_per_connection: ingest_per_conn,
            ..LimitsConfig::default()
        })
    }

    #[test]
    fn guards_count_per_connection_and_in_total() {
        let limits = limits(2, 3);
        let a = Arc::new(Connection::new(None, None));
        let b = Arc::new(Connection::new(None, None));
        let a1 = limits.acquire(StreamKind::Ingest, Some(&a)).unwrap();
        let _a2 = limits.acquire(StreamKind::Ingest, Some(&a)).unwrap();
        let refused = limits.acquire(StreamKind::Ingest, Some(&a)).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            refused.message(),
            "too many ingest streams on this connection: the limit is 2 (limits.max_ingest_streams_per_connection)"
        );
        let _b1 = limits.acquire(StreamKind::Ingest, Some(&b)).unwrap();
        let refused = limits.acquire(StreamKind::Ingest, Some(&b)).unwrap_err();
        assert_eq!(
            refused.message(),
            "too many ingest streams on this server: the limit is 3 (limits.max_ingest_streams)"
        );
        // The refusal gave b's place back.
        assert_eq!(b.ingest_streams.load(Ordering::Relaxed), 1);
        drop(a1);
        assert_eq!(limits.open(StreamKind::Ingest), 2);
        let _b2 = limits.acquire(StreamKind::Ingest, Some(&b)).unwrap();
        // Subscriptions are counted apart.
        let _s = limits.acquire(StreamKind::Subscribe, Some(&a)).unwrap();
        assert_eq!(limits.open(StreamKind::Subscribe), 1);
    }

    #[test]
    fn the_rate_budget_holds_one_second() {
        let rate = IngestRate::new(1_000);
        rate.admit(1, 600).unwrap();
        let refused = rate.admit(2, 600).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused
                .message()
                .contains("1000 ticks per second per connection (limits.max_ingest_rate_per_connection)"),
            "{}",
            refused.message()
        );
        // Nothing was taken by the refused batch.
        rate.admit(3, 300).unwrap();
        let too_big = rate.admit(4, 1_001).unwrap_err();
        assert!(
            too_big.message().starts_with("batch 4 has 1001 ticks"),
            "{}",
            too_big.message()
        );
    }
}
