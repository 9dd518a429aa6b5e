//! Reloading the rules folder: compiled as a whole and swapped in, or
//! refused with every error while the ruleset in force keeps running.
//!
//! A folder that compiles is still refused, like one with an error, when
//! swapping it in would switch protection off wholesale ([`refusal`]): no
//! rule left at all (an editor's temporary state, a bad deploy, a
//! ConfigMap mounted empty), or no rule left that can halt trading while
//! some are in force. `allow_empty_rules` and `allow_removing_halt_rules`
//! let such a reload through.
//! Every attempt leaves an audit record in the log: what triggered it, the
//! outcome, the versions, and the name and SHA-256 of every file.

use std::path::Path;
use std::sync::{Arc, PoisonError};

use tracing::{info, warn};

use crate::alerts::PublishSink;
use crate::config::ServiceConfig;
use crate::rules::{RuleError, RuleSet};
use crate::service::rulebook::load_dir_with;

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
        let now = self.clock.now_ns();
        let current = self.engine.ruleset();
        let loaded = load_dir_with(dir, &self.config.limits.rules()).and_then(|ruleset| {
            if current.sources == ruleset.sources {
                return Ok(ruleset);
            }
            match refusal(&self.config, dir, &current, &ruleset) {
                Some(refused) => Err(vec![refused]),
                None => Ok(ruleset),
            }
        });
        match loaded {
            Ok(ruleset) => {
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

impl Core {
    /// Replaces the reference-data file `name` of the rules folder with
    /// `text` and reloads: the folder is checked as a whole with the new
    /// text first (compiled, rule tests run), and on any error nothing is
    /// written. The file is replaced atomically (written beside it, then
    /// renamed), so the watcher never reads half of it. Blocking: call from
    /// the blocking pool.
    ///
    /// # Errors
    /// A name that is not a plain `*.toml` file name, text that holds
    /// `[[rule]]` tables or does not compile with the rest of the folder,
    /// or a write that failed.
    pub fn update_reference_data(&self, name: &str, text: &str) -> Result<Arc<RuleSet>, Vec<RuleError>> {
        let whole = |message: String| {
            vec![RuleError {
                file: name.to_string(),
                line: 0,
                column: 0,
                message,
            }]
        };
        let plain = name.ends_with(".toml")
            && !name.starts_with('.')
            && name.len() <= 128
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !plain {
            return Err(whole(
                "the file must be a plain name in the rules folder ending in .toml (letters, digits, `-`, `_`, `.`)"
                    .into(),
            ));
        }
        if let Ok(spec) = toml::from_str::<crate::rules::spec::RuleFileSpec>(text) {
            if !spec.rule.is_empty() {
                return Err(whole(
                    "reference data holds `[[instrument]]` and `[[group]]` tables only; rules are changed in their own files"
                        .into(),
                ));
            }
        }
        let _serial = self.reload_serial.lock().unwrap_or_else(PoisonError::into_inner);
        let dir = &self.config.rules;
        let limits = self.config.limits.rules();
        let crate::rules::load::FolderFiles { mut files, errors } = crate::rules::load::read_dir(dir, &limits)?;
        if !errors.is_empty() {
            return Err(errors);
        }
        match files.iter_mut().find(|(n, _)| n == name) {
            Some(file) => file.1 = text.to_string(),
            None => {
                files.push((name.to_string(), text.to_string()));
                files.sort_by(|a, b| a.0.cmp(&b.0));
            }
        }
        crate::service::rulebook::compile_texts_with(&files, &limits)?;
        let path = dir.join(name);
        let temp = dir.join(format!(".{name}.update"));
        let written = std::fs::write(&temp, text).and_then(|()| std::fs::rename(&temp, &path));
        if let Err(error) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(whole(format!("cannot write {}: {error}", path.display())));
        }
        info!(
            audit = "reference_data",
            file = name,
            bytes = text.len(),
            "Reference data file replaced; reloading."
        );
        drop(_serial);
        self.reload(ReloadTrigger::Api)
    }
}

/// Why swapping `next` in for `current` must not happen although it
/// compiled, unless the config allows it: it has no rule at all while
/// rules are in force, or none that can halt trading
/// ([`crate::rules::CompiledRule::can_halt`]) while some in force can.
/// The error names the folder and the setting that would allow it.
pub fn refusal(config: &ServiceConfig, dir: &Path, current: &RuleSet, next: &RuleSet) -> Option<RuleError> {
    let refused = |message: String| RuleError {
        file: dir.display().to_string(),
        line: 0,
        column: 0,
        message,
    };
    if next.is_empty() && !current.is_empty() {
        if config.allow_empty_rules {
            // Allowed outright: the halting rules go with the rest.
            return None;
        }
        return Some(refused(format!(
            "reload refused: the folder holds no rule ({} rule file(s) read), which would switch off all {} \
             rule(s) in force; the rules in force are kept (set allow_empty_rules = true to allow an empty ruleset)",
            next.sources.len(),
            current.len()
        )));
    }
    let halting: Vec<&str> = current.rules.iter().filter(|r| r.can_halt()).map(|r| &*r.id).collect();
    if !halting.is_empty() && !next.rules.iter().any(|r| r.can_halt()) && !config.allow_removing_halt_rules {
        return Some(refused(format!(
            "reload refused: it would remove every rule able to halt trading (critical, or action halt): {}; \
             the rules in force are kept (set allow_removing_halt_rules = true to allow it)",
            halting.join(", ")
        )));
    }
    None
}
