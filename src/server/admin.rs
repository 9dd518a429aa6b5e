//! `RuleAdmin`: list the ruleset in force, validate rules without applying
//! them, reload the rules folder (all or nothing), reset an instrument,
//! report status.
//!
//! Compiling reads files and may take a while for large rulesets, so it
//! runs on the blocking pool, never on a runtime worker. `Validate` reads
//! only the rules folder and the config's `validate_dirs`, and folders
//! below them ([`allowed_folder`]): an admin credential does not open the
//! server's file system.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::service::rulebook::{compile_texts_with, load_dir_with};
use crate::service::Core;
use crate::wire::{convert, proto};

/// The name a validated text's errors are reported under.
pub const TEXT_SOURCE_NAME: &str = "(text)";

/// The `RuleAdmin` service.
#[derive(Clone)]
pub struct AdminService {
    core: Arc<Core>,
    /// Reloaded with the rules.
    credentials: Option<super::auth::Credentials>,
}

impl AdminService {
    pub fn new(core: Arc<Core>) -> Self {
        AdminService {
            core,
            credentials: None,
        }
    }

    /// Reloads `credentials` (the token file) with every `Reload` call.
    pub fn with_credentials(self, credentials: super::auth::Credentials) -> Self {
        AdminService {
            credentials: Some(credentials),
            ..self
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("rule compilation failed: {e}")))
}

#[tonic::async_trait]
impl proto::rule_admin_server::RuleAdmin for AdminService {
    async fn list_rules(
        &self,
        _request: Request<proto::ListRulesRequest>,
    ) -> Result<Response<proto::ListRulesResponse>, Status> {
        let ruleset = self.core.engine().ruleset();
        Ok(Response::new(proto::ListRulesResponse {
            ruleset_version: ruleset.version,
            rules: ruleset.rules.iter().map(|r| convert::rule_info(r)).collect(),
            sources: ruleset.sources.iter().map(convert::source_file).collect(),
        }))
    }

    async fn validate(
        &self,
        request: Request<proto::ValidateRequest>,
    ) -> Result<Response<proto::ValidateResponse>, Status> {
        use proto::validate_request::Source;
        let limits = self.core.config().limits.rules();
        let config = self.core.config();
        let allow_empty = config.allow_empty_rules;
        let result = match request.into_inner().source {
            None => return Err(Status::invalid_argument("set `directory` or `text`")),
            Some(Source::Directory(dir)) => {
                let folder = allowed_folder(&dir, &config.rules, &config.validate_dirs)
                    .inspect_err(|_| self.core.refusals().count(crate::metrics::Refusal::ValidatePath))?;
                blocking(move || {
                    load_dir_with(&folder, &limits).and_then(|ruleset| {
                        if ruleset.is_empty() && !allow_empty {
                            return Err(vec![crate::rules::RuleError {
                                file: folder.display().to_string(),
                                line: 0,
                                column: 0,
                                message: format!(
                                    "the folder holds no rule ({} rule file(s) read): a reload of it would be \
                                     refused (allow_empty_rules is off)",
                                    ruleset.sources.len()
                                ),
                            }]);
                        }
                        Ok(ruleset)
                    })
                })
                .await?
            }
            Some(Source::Text(text)) => {
                blocking(move || compile_texts_with(&[(TEXT_SOURCE_NAME.to_string(), text)], &limits)).await?
            }
        };
        Ok(Response::new(match result {
            Ok(ruleset) => proto::ValidateResponse {
                valid: true,
                errors: Vec::new(),
                rule_count: convert::count_u32(ruleset.len()),
            },
            Err(errors) => proto::ValidateResponse {
                valid: false,
                errors: convert::rule_errors(&errors),
                rule_count: 0,
            },
        }))
    }

    async fn reload(&self, _request: Request<proto::ReloadRequest>) -> Result<Response<proto::ReloadResponse>, Status> {
        let core = self.core.clone();
        let credentials = self.credentials.clone();
        let result = blocking(move || {
            if let Some(credentials) = credentials {
                credentials.reload_logged();
            }
            core.reload(crate::service::ReloadTrigger::Api)
        })
        .await?;
        Ok(Response::new(match result {
            Ok(ruleset) => proto::ReloadResponse {
                applied: true,
                ruleset_version: ruleset.version,
                errors: Vec::new(),
            },
            Err(errors) => proto::ReloadResponse {
                applied: false,
                ruleset_version: self.core.engine().ruleset().version,
                errors: convert::rule_errors(&errors),
            },
        }))
    }

    async fn update_reference_data(
        &self,
        request: Request<proto::UpdateReferenceDataRequest>,
    ) -> Result<Response<proto::UpdateReferenceDataResponse>, Status> {
        let core = self.core.clone();
        let request = request.into_inner();
        let result = blocking(move || core.update_reference_data(&request.file, &request.text)).await?;
        Ok(Response::new(match result {
            Ok(ruleset) => proto::UpdateReferenceDataResponse {
                applied: true,
                ruleset_version: ruleset.version,
                errors: Vec::new(),
            },
            Err(errors) => proto::UpdateReferenceDataResponse {
                applied: false,
                ruleset_version: self.core.engine().ruleset().version,
                errors: convert::rule_errors(&errors),
            },
        }))
    }

    async fn reset_instrument(
        &self,
        request: Request<proto::ResetInstrumentRequest>,
    ) -> Result<Response<proto::ResetInstrumentResponse>, Status> {
        let instrument = request.into_inner().instrument;
        let reset = self
            .core
            .reset_instrument(&instrument)
            .map_err(|e| Status::not_found(e.to_string()))?;
        // The `resolved` alerts of the reset are journaled before it answers.
        self.core.bus().wait_durable(reset.last_alert_seq).await;
        let report = reset.report;
        Ok(Response::new(proto::ResetInstrumentResponse {
            instrument,
            previous_event_time_ns: report.previous_event_ns.unwrap_or(0),
            last_applied_seq: report.last_seq.unwrap_or(0),
            rules_closed: convert::count_u32(report.rules_closed),
            held_dropped: convert::count_u32(report.held_dropped),
        }))
    }

    async fn status(&self, _request: Request<proto::StatusRequest>) -> Result<Response<proto::StatusResponse>, Status> {
        let core = &self.core;
        let ruleset = core.engine().ruleset();
        let reload = core.reload_status();
        let metrics = core.metrics();
        Ok(Response::new(proto::StatusResponse {
            ruleset_version: ruleset.version,
            rule_count: convert::count_u32(ruleset.len()),
            sources: ruleset.sources.iter().map(convert::source_file).collect(),
            rules_dir: core.config().rules.display().to_string(),
            instruments: core.engine().instrument_count() as u64,
            ticks_applied: metrics.ticks_applied.load(std::sync::atomic::Ordering::Relaxed),
            ticks_rejected: metrics.rejected_total(),
            alerts_published: core.bus().last_seq(),
            subscribers: convert::count_u32(core.bus().subscriber_count()),
            last_reload_errors: convert::rule_errors(&reload.last_errors),
            last_reload_ok_time_ns: reload.last_ok_ns,
            reload_failures: reload.failures,
            started_time_ns: core.started_ns(),
            shared: core.shared_status().map(|s| proto::SharedPartitions {
                partitions: s
                    .partitions
                    .into_iter()
                    .map(|p| proto::OwnedPartition {
                        topic: p.topic,
                        partition: p.partition,
                        instruments: p.instruments,
                        applied_offset: p.applied_offset,
                        written_offset: p.written_offset,
                        lag: p.lag,
                    })
                    .collect(),
                rebalances: s.rebalances,
                last_rebalance_ns: s.last_rebalance_ns,
                states_written: s.states_written,
                state_write_failures: s.state_write_failures,
                last_state_bytes: s.last_state_bytes,
                restores: s.restores,
                last_restore_ns: s.last_restore_ns,
                last_restore_bytes: s.last_restore_bytes,
                handed_over_dropped: s.handed_over_dropped,
            }),
        }))
    }
}

/// The folder `requested` names, when `Validate` may read it: the rules
/// folder `rules`, one of `extra`, or a folder below one of them (a
/// relative path is taken from the rules folder). Decided on the path as
/// written, before the file system is looked at, so that a refusal says
/// nothing about what exists; then, for a folder that exists, again on
/// its real path, so that a link cannot lead out.
///
/// # Errors
/// `PERMISSION_DENIED` for any other path, and for any path with a `..`
/// component.
pub fn allowed_folder(requested: &str, rules: &Path, extra: &[PathBuf]) -> Result<PathBuf, Status> {
    let refused = || {
        Status::permission_denied(format!(
            "Validate reads only the rules folder ({}), the folders in validate_dirs, and folders below them; \
             `{requested}` is not one of them",
            rules.display()
        ))
    };
    let path = Path::new(requested);
    if requested.is_empty() || path.components().any(|c| c == Component::ParentDir) {
        return Err(refused());
    }
    let absolute = |p: &Path| -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir().map_or_else(|_| p.to_path_buf(), |cwd| cwd.join(p))
        }
    };
    let roots: Vec<PathBuf> = std::iter::once(rules)
        .chain(extra.iter().map(PathBuf::as_path))
        .map(absolute)
        .collect();
    let candidate = absolute(&rules.join(path));
    let within = |p: &Path, roots: &[PathBuf]| roots.iter().any(|root| p.starts_with(root));
    if !within(&candidate, &roots) {
        return Err(refused());
    }
    if let Ok(real) = candidate.canonicalize() {
        let real_roots: Vec<PathBuf> = roots.iter().filter_map(|r| r.canonicalize().ok()).collect();
        if !within(&real, &real_roots) {
            return Err(refused());
        }
    }
    Ok(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_reads_only_the_rules_folder_and_below() {
        let rules = tempfile::tempdir().unwrap();
        let extra = tempfile::tempdir().unwrap();
        std::fs::create_dir(rules.path().join("staging")).unwrap();
        let allowed = |p: &str| allowed_folder(p, rules.path(), &[extra.path().to_path_buf()]);
        assert_eq!(allowed("staging").unwrap(), rules.path().join("staging"));
        assert!(allowed(rules.path().to_str().unwrap()).is_ok());
        assert!(allowed(extra.path().join("x").to_str().unwrap()).is_ok());
        for outside in ["/etc", "/", "staging/../..", "../rules", ""] {
            let refused = allowed(outside).unwrap_err();
            assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{outside}");
            assert!(
                refused.message().contains("Validate reads only the rules folder"),
                "{outside}"
            );
        }
        // A link inside the rules folder that leads out is refused too.
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/etc", rules.path().join("etc")).unwrap();
            assert_eq!(allowed("etc").unwrap_err().code(), tonic::Code::PermissionDenied);
        }
    }
}
