//! `--reload-storm`: rule files rewritten under load, and the time until
//! each is the server's active ruleset.

use super::*;

/// Write-to-active latency of `--reload-storm`'s writes.
#[derive(Debug)]
pub struct ReloadStats {
    /// Seconds between writes.
    pub every: f64,
    /// From each write to the server's ruleset version changing, µs.
    pub latency_us: Histogram<u64>,
    /// Writes whose reload did not show within [`STORM_TIMEOUT`].
    pub timeouts: u64,
    /// Files that could not be written or removed, calls that failed.
    pub errors: Vec<String>,
}

impl ReloadStats {
    pub(super) fn new(every: f64) -> Self {
        ReloadStats {
            every,
            latency_us: latency_histogram(),
            timeouts: 0,
            errors: Vec::new(),
        }
    }

    /// Latency at quantile `q`, µs; `None` without samples.
    pub fn at(&self, q: f64) -> Option<u64> {
        (!self.latency_us.is_empty()).then(|| self.latency_us.value_at_quantile(q))
    }

    pub fn max(&self) -> Option<u64> {
        (!self.latency_us.is_empty()).then(|| self.latency_us.max())
    }

    pub(super) fn error(&mut self, e: String) {
        if self.errors.len() < EXAMPLES {
            self.errors.push(e);
        }
    }
}

/// The storm file's `n`th contents: one rule that never fires (a stale
/// feed on an instrument no one sends) and changes with `n`.
pub fn storm_rule(n: u64) -> String {
    format!(
        "# Written by `airbag load --reload-storm`; removed when the run ends.\n\
         [[rule]]\n\
         id = \"zz-load-reload-storm\"\n\
         description = \"reload storm write {n}\"\n\
         kind = \"stale_feed\"\n\
         instruments = [\"ZZ-LOAD-RELOAD-STORM\"]\n\
         after = \"1h\"\n"
    )
}

/// Warns when the server's rules folder is not `dir`: the storm's writes
/// would then never become active.
pub(super) async fn warn_if_not_served(admin: &mut RuleAdminClient<Connection>, dir: &Path) {
    let Ok(Ok(status)) = tokio::time::timeout(ADMIN_TIMEOUT, admin.status(proto::StatusRequest {})).await else {
        return;
    };
    let served = PathBuf::from(status.into_inner().rules_dir);
    let same = match (served.canonicalize(), dir.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => served == dir,
    };
    if !same {
        eprintln!(
            "warning: the server reads its rules from {}, not {}; the reload storm's writes may never become active",
            served.display(),
            dir.display()
        );
    }
}

/// The server's ruleset version, if it answers in time.
pub(super) async fn ruleset_version(admin: &mut RuleAdminClient<Connection>) -> Result<u64, String> {
    match tokio::time::timeout(ADMIN_TIMEOUT, admin.list_rules(proto::ListRulesRequest {})).await {
        Ok(Ok(response)) => Ok(response.into_inner().ruleset_version),
        Ok(Err(status)) => Err(format!("ListRules failed: {}", wire::status_text(&status))),
        Err(_) => Err(format!("ListRules did not answer within {ADMIN_TIMEOUT:?}")),
    }
}

/// Polls until the ruleset version differs from `before`; the moment it
/// was seen, or `None` after [`STORM_TIMEOUT`] from `since`.
pub(super) async fn version_change(
    admin: &mut RuleAdminClient<Connection>,
    before: u64,
    since: Instant,
) -> Result<Option<Instant>, String> {
    let deadline = since + STORM_TIMEOUT;
    loop {
        let version = ruleset_version(admin).await?;
        let now = Instant::now();
        if version != before {
            return Ok(Some(now));
        }
        if now >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(STORM_POLL).await;
    }
}

/// Rewrites `dir/STORM_FILE` every `every` until `stop`, timing each write
/// until it is active; then removes the file and waits for that reload.
pub(super) async fn run_storm(
    dir: PathBuf,
    every: Duration,
    channel: Connection,
    stop: CancellationToken,
) -> ReloadStats {
    let mut stats = ReloadStats::new(every.as_secs_f64());
    let mut admin = RuleAdminClient::new(channel);
    let path = dir.join(STORM_FILE);
    let tmp = dir.join(format!(".{STORM_FILE}.tmp"));
    let mut written = false;
    let mut next = tokio::time::Instant::now() + every;
    for n in 1.. {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep_until(next) => {}
        }
        let before = match ruleset_version(&mut admin).await {
            Ok(v) => v,
            Err(e) => {
                stats.error(e);
                continue;
            }
        };
        // Whole or not at all: a temporary file renamed into place.
        let start = Instant::now();
        if let Err(e) = std::fs::write(&tmp, storm_rule(n)).and_then(|()| std::fs::rename(&tmp, &path)) {
            stats.error(format!("cannot write {}: {e}", path.display()));
            break;
        }
        written = true;
        match version_change(&mut admin, before, start).await {
            Ok(Some(active)) => {
                let us = u64::try_from(active.duration_since(start).as_micros()).unwrap_or(u64::MAX);
                let _ = stats.latency_us.record(us.clamp(1, LATENCY_MAX_US));
            }
            Ok(None) => stats.timeouts += 1,
            Err(e) => stats.error(e),
        }
        // The next write is due `every` after this one; a reload slower
        // than that delays it rather than bunching writes up.
        next = (next + every).max(tokio::time::Instant::now());
    }
    if written {
        let before = ruleset_version(&mut admin).await;
        match std::fs::remove_file(&path) {
            Ok(()) => {
                if let Ok(before) = before {
                    match version_change(&mut admin, before, Instant::now()).await {
                        Ok(Some(_)) => {}
                        Ok(None) => stats.error(format!(
                            "the server did not reload within {STORM_TIMEOUT:?} after {} was removed",
                            path.display()
                        )),
                        Err(e) => stats.error(e),
                    }
                }
            }
            Err(e) => stats.error(format!("cannot remove {}: {e}", path.display())),
        }
    }
    stats
}
