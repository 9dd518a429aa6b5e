//! Pacing a sender to a rate: a token bucket refilled continuously.
//!
//! [`Pacer::wait`] is called once per batch with the batch's size and
//! returns when the batch may go. Batches are scheduled on an absolute
//! timeline (`start + ticks_sent / rate`), so a sender that falls behind —
//! the timer is millisecond-grained, the scheduler may be late — catches
//! up by sending without sleeping until it is back on schedule, and the
//! average rate holds. That is the coordinated-omission-safe choice for a
//! load generator: a stall shows up as a burst, not as a lower rate.

use std::time::{Duration, Instant};

/// Paces batches to `rate` ticks per second; a rate of 0 (or less, or not
/// finite) means as fast as possible.
#[derive(Debug)]
pub struct Pacer {
    start: Instant,
    /// Ticks per second; `None` when unpaced.
    rate: Option<f64>,
    /// Ticks released so far.
    released: u64,
}

impl Pacer {
    pub fn new(rate: f64, start: Instant) -> Self {
        Pacer {
            start,
            rate: (rate.is_finite() && rate > 0.0).then_some(rate),
            released: 0,
        }
    }

    /// When the next batch is due: after every tick released so far has
    /// had its time slot. `None` when unpaced.
    pub fn due(&self) -> Option<Instant> {
        self.rate
            .map(|rate| self.start + Duration::from_secs_f64(self.released as f64 / rate))
    }

    /// Waits until a batch of `ticks` may be sent, then counts it.
    ///
    /// Cancellation-safe: if dropped before it returns, nothing is counted.
    pub async fn wait(&mut self, ticks: usize) {
        if let Some(due) = self.due() {
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        self.released += ticks as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn holds_the_average_rate() {
        let start = Instant::now();
        let mut pacer = Pacer::new(100_000.0, start);
        for _ in 0..10 {
            pacer.wait(100).await;
        }
        // Ten batches of 100 at 100,000/s: the tenth went at 9 ms, the
        // next is due at 10 ms.
        assert!(start.elapsed() >= Duration::from_millis(9));
        assert_eq!(pacer.due().unwrap() - start, Duration::from_millis(10));
    }

    #[test]
    fn zero_means_unpaced() {
        assert!(Pacer::new(0.0, Instant::now()).due().is_none());
        assert!(Pacer::new(f64::NAN, Instant::now()).due().is_none());
    }
}
