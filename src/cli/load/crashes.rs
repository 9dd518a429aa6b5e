//! The crashes injected so far, and the subscriber that matches alerts to
//! them for tick-to-alert latency.

use super::*;

/// One injected crash.
#[derive(Debug)]
pub(super) struct CrashRecord {
    /// 0-based instrument index (`LOAD-000001` is 0).
    pub(super) instrument: u32,
    /// Sequence numbers of the crash's ticks.
    pub(super) first_seq: u64,
    pub(super) last_seq: u64,
    /// When the batch holding the crash was handed to the stream.
    pub(super) sent: Instant,
    pub(super) matched: bool,
}

/// Crashes injected so far, shared by the connections (which add) and the
/// alert collector (which matches). Locked briefly, never across an await.
#[derive(Debug, Default)]
pub(super) struct CrashBook {
    pub(super) records: Vec<CrashRecord>,
    pub(super) matched: u64,
    /// The alert stream has ended: waiting longer is pointless.
    pub(super) closed: bool,
}

/// What the alert collector saw.
pub(super) struct AlertStats {
    pub(super) matched: u64,
    pub(super) unexpected: u64,
    pub(super) unexpected_examples: Vec<String>,
    pub(super) other: u64,
    pub(super) latency_us: Histogram<u64>,
    /// The server's own part of it: the alert's `emitted_time_ns` minus
    /// its `received_time_ns` (receive of the batch to hand-off to
    /// subscribers, the journal's sync included), µs.
    pub(super) server_us: Histogram<u64>,
    /// From the server's receive of the batch (`received_time_ns`) to this
    /// subscriber's receipt, by the wall clock both share (same machine):
    /// the journal's sync and the way out included, µs.
    pub(super) delivered_us: Histogram<u64>,
    pub(super) error: Option<String>,
}

impl AlertStats {
    pub(super) fn new() -> Self {
        AlertStats {
            matched: 0,
            unexpected: 0,
            unexpected_examples: Vec::new(),
            other: 0,
            // 3 significant figures up to 60 s: about 200 KiB.
            latency_us: latency_histogram(),
            server_us: latency_histogram(),
            delivered_us: latency_histogram(),
            error: None,
        }
    }

    /// Matches a `fired` alert of the expected rule, received at
    /// `received`, to its crash.
    pub(super) fn on_fired(&mut self, alert: &proto::Alert, received: Instant, book: &Mutex<CrashBook>) {
        let crash_sent = match (parse_symbol(&alert.instrument), alert.tick_seq, book.lock()) {
            (Some(instrument), Some(seq), Ok(mut book)) => {
                let found =
                    book.records.iter_mut().rev().find(|c| {
                        c.instrument == instrument && (c.first_seq..=c.last_seq).contains(&seq) && !c.matched
                    });
                let sent = found.map(|c| {
                    c.matched = true;
                    c.sent
                });
                if sent.is_some() {
                    book.matched += 1;
                }
                sent
            }
            _ => None,
        };
        match crash_sent {
            Some(sent) => {
                self.matched += 1;
                let us = received.saturating_duration_since(sent).as_micros();
                let us = u64::try_from(us).unwrap_or(u64::MAX).clamp(1, LATENCY_MAX_US);
                let _ = self.latency_us.record(us);
                let server_ns = alert.emitted_time_ns.saturating_sub(alert.received_time_ns).max(0);
                let server_us = u64::try_from(server_ns / 1_000).unwrap_or(0).clamp(1, LATENCY_MAX_US);
                let _ = self.server_us.record(server_us);
                let now_ns = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
                let delivered_ns = now_ns.saturating_sub(alert.received_time_ns).max(0);
                let delivered_us = u64::try_from(delivered_ns / 1_000)
                    .unwrap_or(0)
                    .clamp(1, LATENCY_MAX_US);
                let _ = self.delivered_us.record(delivered_us);
            }
            None => {
                self.unexpected += 1;
                if self.unexpected_examples.len() < EXAMPLES {
                    self.unexpected_examples.push(format!(
                        "seq {} {} on {} tick_seq {:?}",
                        alert.seq, alert.kind, alert.instrument, alert.tick_seq
                    ));
                }
            }
        }
    }
}

/// Receives the expected rule's alerts until `stop`, matching each
/// `fired` alert to its crash.
pub(super) async fn collect_alerts(
    mut stream: Streaming<proto::Alert>,
    book: Arc<Mutex<CrashBook>>,
    rule: String,
    stop: CancellationToken,
) -> AlertStats {
    let mut stats = AlertStats::new();
    loop {
        let message = tokio::select! {
            biased;
            message = stream.message() => message,
            () = stop.cancelled() => break,
        };
        // Read the clock first: this is the moment the alert arrived.
        let received = Instant::now();
        match message {
            Ok(Some(alert)) => {
                if alert.rule_id == rule && alert.kind == "fired" {
                    stats.on_fired(&alert, received, &book);
                } else {
                    stats.other += 1;
                }
            }
            Ok(None) => {
                stats.error = Some("the server closed the alert stream".into());
                break;
            }
            Err(status) => {
                stats.error = Some(wire::status_text(&status));
                break;
            }
        }
    }
    if stats.error.is_some() {
        if let Ok(mut b) = book.lock() {
            b.closed = true;
        }
    }
    stats
}

/// `LOAD-000001` → instrument index 0.
pub(super) fn parse_symbol(symbol: &str) -> Option<u32> {
    let n: u32 = symbol.strip_prefix("LOAD-")?.parse().ok()?;
    n.checked_sub(1)
}

/// Instrument index 0 → `LOAD-000001`.
pub fn symbol(index: u32) -> String {
    format!("LOAD-{:06}", index + 1)
}
