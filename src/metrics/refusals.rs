//! Requests the server refused before they reached a service, or ended for
//! a limit, by reason: `airbag_requests_refused_total{reason}`. One fixed
//! list of reasons, so the series are bounded; a counter each, added once
//! per refusal.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a request (or a connection) was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No credential, or one the server does not know.
    Unauthenticated,
    /// A known principal without the role.
    PermissionDenied,
    /// A stream limit of `[limits]` (ingest streams, subscriptions).
    TooManyStreams,
    /// `limits.max_ingest_rate_per_connection`.
    IngestRate,
    /// `limits.max_connections`: the connection was closed at accept.
    TooManyConnections,
    /// `limits.idle_timeout_ms`: a connection without a call was closed.
    IdleTimeout,
    /// A plaintext client on the TLS port.
    PlaintextOnTls,
    /// An ingest stream of a writer epoch that a newer one took over.
    WriterSuperseded,
    /// `RuleAdmin.Validate` of a path outside the folders it may read.
    ValidatePath,
    /// A new stream during shutdown.
    ShuttingDown,
}

impl Refusal {
    pub const COUNT: usize = 10;

    pub const ALL: [Refusal; Refusal::COUNT] = [
        Refusal::Unauthenticated,
        Refusal::PermissionDenied,
        Refusal::TooManyStreams,
        Refusal::IngestRate,
        Refusal::TooManyConnections,
        Refusal::IdleTimeout,
        Refusal::PlaintextOnTls,
        Refusal::WriterSuperseded,
        Refusal::ValidatePath,
        Refusal::ShuttingDown,
    ];

    /// The `reason` label.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::PermissionDenied => "permission_denied",
            Refusal::TooManyStreams => "too_many_streams",
            Refusal::IngestRate => "ingest_rate",
            Refusal::TooManyConnections => "too_many_connections",
            Refusal::IdleTimeout => "idle_timeout",
            Refusal::PlaintextOnTls => "plaintext_on_tls",
            Refusal::WriterSuperseded => "writer_superseded",
            Refusal::ValidatePath => "validate_path",
            Refusal::ShuttingDown => "shutting_down",
        }
    }
}

/// Refusals counted by reason.
#[derive(Debug, Default)]
pub struct Refusals([AtomicU64; Refusal::COUNT]);

impl Refusals {
    #[inline]
    pub fn count(&self, why: Refusal) {
        self.0[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, why: Refusal) -> u64 {
        self.0[why as usize].load(Ordering::Relaxed)
    }

    /// `(reason, count)` for every reason, in [`Refusal::ALL`] order.
    pub fn all(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Refusal::ALL.into_iter().map(|r| (r.name(), self.get(r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_listed_once_in_order() {
        for (i, r) in Refusal::ALL.into_iter().enumerate() {
            assert_eq!(r as usize, i);
        }
        let refusals = Refusals::default();
        refusals.count(Refusal::IngestRate);
        assert_eq!(refusals.get(Refusal::IngestRate), 1);
        assert_eq!(refusals.all().map(|(_, n)| n).sum::<u64>(), 1);
    }
}
