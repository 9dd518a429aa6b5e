//! Sending a tick file so that it survives disconnects and server
//! restarts: nothing applied twice, nothing left out.
//!
//! Each attempt asks the server where every instrument stands
//! (`Ingest.LastApplied`), reads the file from the start and sends only
//! the ticks above those sequence numbers. A server that restarted from a
//! checkpoint reports the positions it restored, so the ticks applied after
//! that checkpoint are sent again and re-applied in their order; the
//! server's duplicate check drops any tick it has already applied. When
//! an attempt fails on the connection or the stream, the next one starts
//! after a short backoff, until `retry_for` passes with no tick applied.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cli::send::{send_file, SendError, SendFailure, SendOptions, SendSummary};
use crate::cli::wire::{self, ClientSecurity, ConnectError, Connection};
use crate::tick_file::TickReader;
use crate::wire::proto;
use crate::wire::proto::ingest_client::IngestClient;

/// The wait between reconnection attempts of `send`, `subscribe` and
/// `load`: 50 ms, doubling up to 1 s, back to 50 ms after progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff(Duration);

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(50);
    pub const MAX: Duration = Duration::from_secs(1);

    /// The wait the next [`Backoff::wait`] takes.
    pub fn current(&self) -> Duration {
        self.0
    }

    /// After progress: the next wait is the first one again.
    pub fn reset(&mut self) {
        self.0 = Self::FIRST;
    }

    /// Sleeps the current wait, then doubles it (up to [`Backoff::MAX`]).
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Self::MAX);
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff(Self::FIRST)
    }
}

/// The server's last applied sequence number of every instrument it has
/// applied a tick of.
///
/// # Errors
/// The call's status.
pub async fn last_applied(channel: Connection) -> Result<HashMap<String, u64>, tonic::Status> {
    let response = IngestClient::new(channel)
        .last_applied(proto::LastAppliedRequest::default())
        .await?
        .into_inner();
    Ok(response
        .last_applied
        .into_iter()
        .map(|p| (p.instrument, p.seq))
        .collect())
}

/// Whether a failed attempt may be resumed: the connection or stream
/// failed, not the file.
pub fn resumable(error: &SendError) -> bool {
    match error {
        SendError::Open(_)
        | SendError::Stream(_)
        | SendError::Closed
        | SendError::AckTimeout(_)
        | SendError::Connect(_) => true,
        SendError::File(_) => false,
    }
}

/// Sends `path` until every tick is applied or refused, resuming after
/// failures as the module docs say. `connect` makes a new connection for
/// each attempt. The summary adds up every attempt.
///
/// # Errors
/// A file error, or a failure after `retry_for` without progress; the
/// summary so far comes with it.
pub async fn send_resuming<C, F>(
    connect: C,
    path: &Path,
    options: &SendOptions,
    retry_for: Duration,
) -> Result<SendSummary, Box<SendFailure>>
where
    C: Fn() -> F,
    F: Future<Output = Result<Connection, ConnectError>>,
{
    let mut total = SendSummary::default();
    let mut backoff = Backoff::default();
    let mut progress_at = Instant::now();
    loop {
        let attempt = attempt(&connect, path, options).await;
        let failure = match attempt {
            Ok(summary) => {
                total.absorb(summary);
                return Ok(total);
            }
            Err(failure) => failure,
        };
        let SendFailure { summary, error } = *failure;
        if summary.applied > 0 {
            progress_at = Instant::now();
            backoff.reset();
        }
        total.absorb(summary);
        if !resumable(&error) || progress_at.elapsed() >= retry_for {
            return Err(Box::new(SendFailure { summary: total, error }));
        }
        eprintln!("airbag send: {error}; resuming in {} ms", backoff.current().as_millis());
        backoff.wait().await;
    }
}

/// One attempt: connect, ask where the server stands, send the rest.
async fn attempt<C, F>(connect: &C, path: &Path, options: &SendOptions) -> Result<SendSummary, Box<SendFailure>>
where
    C: Fn() -> F,
    F: Future<Output = Result<Connection, ConnectError>>,
{
    let fail = |error| {
        Box::new(SendFailure {
            summary: SendSummary {
                attempts: 1,
                ..SendSummary::default()
            },
            error,
        })
    };
    let channel = connect().await.map_err(|e| fail(SendError::Connect(e.to_string())))?;
    let positions = last_applied(channel.clone())
        .await
        .map_err(|status| fail(SendError::Open(status)))?;
    let reader = TickReader::open(path).map_err(|e| fail(SendError::File(e)))?;
    let options = SendOptions {
        skip_through: Some(Arc::new(positions)),
        ..options.clone()
    };
    send_file(channel, reader, &options).await
}

/// [`send_resuming`] connecting to `addr` with [`wire::connect_with`].
///
/// # Errors
/// As [`send_resuming`].
pub async fn send_resuming_to(
    addr: &str,
    security: &ClientSecurity,
    path: &Path,
    options: &SendOptions,
    retry_for: Duration,
) -> Result<SendSummary, Box<SendFailure>> {
    send_resuming(|| wire::connect_with(addr, security), path, options, retry_for).await
}
