//! `RuleAdmin`: list the ruleset in force, validate rules without applying
//! them, reload the rules folder (all or nothing), report status.
//!
//! Compiling reads files and may take a while for large rulesets, so it
//! runs on the blocking pool, never on a runtime worker.

use std::path::PathBuf;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{convert, proto};
use crate::app::Core;
use crate::rules::{compile_texts_with, load_dir_with};

/// The name a validated text's errors are reported under.
pub const TEXT_SOURCE_NAME: &str = "(text)";

/// The `RuleAdmin` service.
#[derive(Clone)]
pub struct AdminService {
    core: Arc<Core>,
}

impl AdminService {
    pub fn new(core: Arc<Core>) -> Self {
        AdminService { core }
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
        let result = match request.into_inner().source {
            None => return Err(Status::invalid_argument("set `directory` or `text`")),
            Some(Source::Directory(dir)) => blocking(move || load_dir_with(&PathBuf::from(dir), &limits)).await?,
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
        let result = blocking(move || core.reload(crate::app::ReloadTrigger::Api)).await?;
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
        }))
    }
}
