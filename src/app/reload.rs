//! Reloading the rules folder: compiled as a whole and swapped in, or
//! refused with every error while the ruleset in force keeps running.
//! Every attempt leaves an audit record in the log: what triggered it, the
//! outcome, the versions, and the name and SHA-256 of every file.

use std::sync::{Arc, PoisonError};

use tracing::{info, warn};

use crate::alerts::PublishSink;
use crate::clock::{Clock, SystemClock};
use crate::rules::{load_dir_with, RuleError, RuleSet};

use super::Core;

/// What asked for a reload, for the audit trail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadTrigger {
    /// The rules folder changed.
    FileChange,
    /// SIGHUP.
    Signal,
    /// The `RuleAdmin.Reload` call.
    Api,
}

impl ReloadTrigger {
    pub fn name(self) -> &'static str {
        match self {
            ReloadTrigger::FileChange => "file_change",
            ReloadTrigger::Signal => "signal",
            ReloadTrigger::Api => "api",
        }
    }
}

/// Reloads by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReloadOutcomes {
    /// A new ruleset was installed.
    pub applied: u64,
    /// The folder held exactly the ruleset in force.
    pub unchanged: u64,
}

/// The outcome of reloads, for status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadStatus {
    /// Reloads that failed (the old ruleset kept running).
    pub failures: u64,
    pub outcomes: ReloadOutcomes,
    /// Errors of the last reload, if it failed; empty if it worked.
    pub last_errors: Vec<RuleError>,
    /// When a reload last succeeded (startup counts), ns.
    pub last_ok_ns: i64,
    /// When a reload last failed, ns; 0 if none has.
    pub last_failed_ns: i64,
}

/// `name@sha256-prefix` for every file, for audit records.
fn describe_sources(sources: &[crate::rules::ruleset::SourceFile]) -> String {
    sources
        .iter()
        .map(|s| format!("{}@{}", s.name, &s.sha256[..s.sha256.len().min(16)]))
        .collect::<Vec<_>>()
        .join(",")
}

impl Core {
    /// Reloads the rules folder: compiles it as a whole and installs it, or
    /// keeps the ruleset in force and returns every error. A folder whose
    /// files are byte for byte those of the ruleset in force is not
    /// installed again (no new version). Alerts that the swap raises
    /// (conditions of removed rules resolving) are published. Every
    /// outcome is logged as an audit record: trigger, version, and the
    /// name and SHA-256 of every file. Blocking: call from the blocking
    /// pool.
    ///
    /// # Errors
    /// Every problem in the folder; nothing changed.
    pub fn reload(&self, trigger: ReloadTrigger) -> Result<Arc<RuleSet>, Vec<RuleError>> {
        let _serial = self.reload_serial.lock().unwrap_or_else(PoisonError::into_inner);
        let dir = &self.config.rules;
        let now = SystemClock.now_ns();
        match load_dir_with(dir, &self.config.limits.rules()) {
            Ok(ruleset) => {
                let current = self.engine.ruleset();
                if current.sources == ruleset.sources {
                    let mut status = self.reload.lock().unwrap_or_else(PoisonError::into_inner);
                    status.last_errors.clear();
                    status.last_ok_ns = now;
                    status.outcomes.unchanged += 1;
                    info!(
                        audit = "reload",
                        outcome = "unchanged",
                        trigger = trigger.name(),
                        version = current.version,
                        files = %describe_sources(&current.sources),
                        "Rules reload found no change."
                    );
                    return Ok(current);
                }
                // Recorded before the swap: whoever sees the new version
                // also sees that the reload worked (never the errors of an
                // earlier failed one next to it).
                {
                    let mut status = self.reload.lock().unwrap_or_else(PoisonError::into_inner);
                    status.last_errors.clear();
                    status.last_ok_ns = now;
                    status.outcomes.applied += 1;
                }
                let mut sink = PublishSink::new(&self.bus, now);
                let installed = self.engine.install(ruleset, now, &mut sink);
                info!(
                    audit = "reload",
                    outcome = "applied",
                    trigger = trigger.name(),
                    version = installed.version,
                    previous_version = current.version,
                    rules = installed.len(),
                    files = %describe_sources(&installed.sources),
                    alerts = sink.published(),
                    "Rules reloaded."
                );
                Ok(installed)
            }
            Err(errors) => {
                let mut status = self.reload.lock().unwrap_or_else(PoisonError::into_inner);
                status.failures += 1;
                status.last_errors.clone_from(&errors);
                status.last_failed_ns = now;
                warn!(
                    audit = "reload",
                    outcome = "rejected",
                    trigger = trigger.name(),
                    dir = %dir.display(),
                    errors = errors.len(),
                    version = self.engine.ruleset().version,
                    files = %describe_sources(&crate::rules::load::source_files(dir)),
                    "Rules reload failed; the ruleset in force is kept."
                );
                for e in &errors {
                    warn!(error = %e, "Rule error.");
                }
                Err(errors)
            }
        }
    }
}
