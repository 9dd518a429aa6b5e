//! A subscriber's view of the bus (gRPC Subscribe): a [`super::reader`]
//! with a filter that is disconnected when it falls a whole queue behind
//! ([`WhenBehind::Disconnect`]), told the sequence number to resume from.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::reader::{AlertReader, SubscriptionEnd, WhenBehind};
use super::{PublishedAlert, SubscriptionFilter};

/// Why a subscription (or any reader) could not be opened.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    #[error("from_seq {from_seq} is no longer kept; the oldest available is {oldest}")]
    TooOld { from_seq: u64, oldest: u64 },
    #[error("from_seq {from_seq} is beyond the next alert, which will be {next}")]
    Ahead { from_seq: u64, next: u64 },
    #[error("server shutting down")]
    Closed,
}

/// A stream of matching alerts in sequence order, ending with one
/// `Err(SubscriptionEnd)`. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    reader: AlertReader,
}

impl Subscription {
    pub(super) fn new(reader: AlertReader) -> Self {
        debug_assert_eq!(reader.when_behind(), WhenBehind::Disconnect);
        Subscription { reader }
    }

    pub fn filter(&self) -> &SubscriptionFilter {
        self.reader.filter()
    }

    /// The next alert, or why the subscription ended (once), then `None`.
    pub fn poll_next_alert(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Arc<PublishedAlert>, SubscriptionEnd>>> {
        self.reader.poll_next_alert(cx)
    }

    /// The next alert, or why the subscription ended (once), then `None`.
    ///
    /// Cancellation-safe: an alert is taken from the queue only when the
    /// future completes.
    pub async fn next_alert(&mut self) -> Option<Result<Arc<PublishedAlert>, SubscriptionEnd>> {
        self.reader.next_alert().await
    }
}

impl tokio_stream::Stream for Subscription {
    type Item = Result<Arc<PublishedAlert>, SubscriptionEnd>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().reader.poll_next_alert(cx)
    }
}
