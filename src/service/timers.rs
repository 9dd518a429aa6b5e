//! The timer task: runs the engine's timers on the service clock (halts
//! ending, `for` holds completing without a tick, feeds gone silent) every
//! `timer_interval_ms`, and journal retention every minute, until
//! shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tracing::warn;

use super::Core;

/// How often journal retention runs besides when a segment fills: age
/// limits apply even when no alert comes.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// Runs timers every `every`, and journal retention every minute, until
/// shutdown.
///
/// Cancellation-safe: dropping it stops the loop between two runs.
pub async fn run(core: Arc<Core>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut retention = tokio::time::interval(RETENTION_EVERY);
    retention.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let journaled = core.bus().has_journal();
    let token = core.shutdown_token().clone();
    loop {
        tokio::select! {
            () = token.cancelled() => break,
            _ = ticker.tick() => core.run_timers(),
            _ = retention.tick(), if journaled => {
                let bus = core.bus().clone();
                match tokio::task::spawn_blocking(move || bus.enforce_journal_retention()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => warn!(%error, "Journal retention failed; will try again."),
                    Err(error) => warn!(%error, "Journal retention task failed; will try again."),
                }
            }
        }
    }
}
