//! `deploy/` holds to account: what an operator installs from it works
//! with this build of Airbag.
//!
//! - Every metric the Grafana dashboard and the Prometheus alerting rules
//!   name is on `/metrics` of a running server (a renamed metric fails
//!   here, naming the file, the panel or alert, and the metric); the
//!   alerting rules each have `for`, a severity and their annotations.
//! - The Kubernetes manifests pass `kubernetes-validate --strict` (from
//!   `scripts/setup.sh`'s venv, or `$AIRBAG_KUBERNETES_VALIDATE`), and the
//!   configuration and rules they carry load.
//! - The systemd unit passes `systemd-analyze verify` (its ExecStart
//!   pointed at this build's binary), and its `ExecReload` signal, SIGHUP,
//!   reloads the rules of a real `airbag serve` process.
//! - The container's configuration loads, and its HEALTHCHECK command
//!   passes against a serving server.
//! - The worked example of README's "Migrating from Flink CEP" compiles
//!   and passes its rule tests.
//!
//! A missing tool fails its test with what to install; nothing is skipped.

mod common;
#[path = "support/promql.rs"]
mod promql;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use airbag::config::ServiceConfig;
use airbag::service::rulebook::{compile_texts, load_dir};
use common::{batch, trade, within, TestServer};
use promql::{metric_names, parsed_names, Exposition};
use serde::Deserialize;

/// Metrics a query may name that Prometheus makes itself, per target.
const PROMETHEUS_OWN: &[&str] = &["up"];

/// A rule halting on an 8% fall within 3 s on `instruments` (a glob).
fn halt_rule(id: &str, instruments: &str) -> String {
    format!(
        "[[rule]]\nid = \"{id}\"\nkind = \"drawdown\"\ninstruments = [\"{instruments}\"]\n\
         window = \"3s\"\nthreshold = \"8%\"\nseverity = \"critical\"\nactions = [\"halt\"]\n"
    )
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

// === metrics named by the dashboard and the alerting rules ===

/// One query and where it is, for the failure message.
struct Query {
    place: String,
    expr: String,
}

/// Every PromQL query of the Grafana dashboard: panel targets (rows
/// included) and the templating variables' `label_values(metric, label)`.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<Query> {
    fn panels(list: &serde_json::Value, out: &mut Vec<Query>) {
        for panel in list.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("(untitled)");
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("panel `{title}`: a target without expr"));
                out.push(Query {
                    place: format!("panel `{title}`"),
                    expr: expr.to_string(),
                });
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if variable["type"] != "query" {
            continue;
        }
        let name = variable["name"].as_str().unwrap_or("?");
        let query = variable["query"]["query"]
            .as_str()
            .or_else(|| variable["query"].as_str())
            .unwrap_or_else(|| panic!("variable `{name}`: no query"));
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .and_then(|q| q.rsplit_once(','))
            .map(|(metric, _label)| metric.trim())
            .unwrap_or_else(|| panic!("variable `{name}`: expected label_values(metric, label), got {query}"));
        out.push(Query {
            place: format!("variable `{name}`"),
            expr: inner.to_string(),
        });
    }
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    rules: Vec<AlertRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertRule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

/// The alerting rules, checked for what every rule must carry.
fn alert_rules() -> Vec<AlertRule> {
    let file: RuleFile = serde_norway::from_str(&read("deploy/prometheus/airbag-alerts.yml"))
        .unwrap_or_else(|e| panic!("deploy/prometheus/airbag-alerts.yml: {e}"));
    let mut problems = Vec::new();
    let mut rules = Vec::new();
    for group in file.groups {
        assert!(!group.rules.is_empty(), "group {} has no rules", group.name);
        for rule in group.rules {
            let name = &rule.alert;
            match rule.for_.as_deref() {
                Some(d) if !d.is_empty() && d.trim_end_matches(['s', 'm', 'h']).parse::<u32>().is_ok() => {}
                other => problems.push(format!("{name}: `for` must be a duration, got {other:?}")),
            }
            match rule.labels.get("severity").map(String::as_str) {
                Some("critical" | "warning" | "info") => {}
                other => problems.push(format!(
                    "{name}: labels.severity must be critical, warning or info, got {other:?}"
                )),
            }
            for key in ["summary", "description", "runbook"] {
                if rule.annotations.get(key).is_none_or(|v| v.trim().is_empty()) {
                    problems.push(format!("{name}: annotations.{key} is missing"));
                }
            }
            rules.push(rule);
        }
    }
    assert!(
        problems.is_empty(),
        "deploy/prometheus/airbag-alerts.yml:\n{}",
        problems.join("\n")
    );
    rules
}

#[test]
fn the_alerting_rules_cover_what_the_issue_asks_for() {
    let names: Vec<String> = alert_rules().into_iter().map(|r| r.alert).collect();
    for wanted in [
        "AirbagIngestStalled",
        "AirbagJournalUnhealthy",
        "AirbagRuleReloadFailing",
        "AirbagSubscriberDrops",
        "AirbagTickToAlertP99OverBudget",
        "AirbagCheckpointFailing",
        "AirbagKafkaSinkLagging",
    ] {
        assert!(names.iter().any(|n| n == wanted), "no alert {wanted} in {names:?}");
    }
}

/// A server with a journal and checkpoints, a rule that fires, a
/// rejected tick and a subscriber: the metric families all have samples.
async fn scrape_a_busy_server() -> Exposition {
    let data = tempfile::tempdir().expect("temp dir");
    let data_dir = data.path().to_path_buf();
    let server = TestServer::builder()
        .rule_file("crash.toml", &halt_rule("crash", "BTC-*"))
        .configure(move |c| {
            c.data_dir = Some(data_dir);
            c.checkpoint.interval_ms = 100;
        })
        .start()
        .await;
    let subscription = server.subscribe(airbag::wire::proto::SubscribeRequest::default()).await;
    let mut ingest = server.ingest().await;
    let ack = ingest
        .send(batch(
            1,
            vec![
                trade("BTC-USDT", 0, 1, "65000"),
                trade("BTC-USDT", 2_000, 2, "59800"),
                trade("BTC-USDT", 2_100, 2, "59700"),
            ],
        ))
        .await;
    assert_eq!((ack.applied, ack.rejected.len()), (2, 1), "{ack:?}");
    let mut alerts = subscription;
    let alert = common::next_alert(&mut alerts).await;
    assert_eq!(alert.rule_id, "crash");
    // Wait for a checkpoint so that its gauges carry a value.
    let text = within("a checkpoint written", async {
        loop {
            let text = server.metrics_text().await;
            if text
                .lines()
                .any(|l| l.starts_with("airbag_checkpoints_written_total ") && !l.ends_with(" 0"))
            {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    drop(alerts);
    server.shutdown().await;
    let body = text.split_once("\r\n\r\n").map_or(text.as_str(), |(_, body)| body);
    let exposition = Exposition::parse(body);
    assert!(
        exposition.families.len() > 40,
        "too few metric families on /metrics:\n{body}"
    );
    exposition
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_the_alerting_rules_name_is_on_metrics() {
    let exposition = scrape_a_busy_server().await;

    let dashboard: serde_json::Value = serde_json::from_str(&read("deploy/grafana/airbag-dashboard.json"))
        .unwrap_or_else(|e| panic!("deploy/grafana/airbag-dashboard.json: {e}"));
    assert_eq!(dashboard["uid"], "airbag-service");
    let mut queries: Vec<(&str, Query)> = dashboard_queries(&dashboard)
        .into_iter()
        .map(|q| ("deploy/grafana/airbag-dashboard.json", q))
        .collect();
    assert!(queries.len() > 30, "the dashboard has only {} queries", queries.len());
    queries.extend(alert_rules().into_iter().map(|r| {
        (
            "deploy/prometheus/airbag-alerts.yml",
            Query {
                place: format!("alert {}", r.alert),
                expr: r.expr,
            },
        )
    }));

    let mut missing = Vec::new();
    let mut named = std::collections::BTreeSet::new();
    for (file, query) in &queries {
        let names = metric_names(&query.expr);
        match parsed_names(&query.expr) {
            Err(e) => missing.push(format!(
                "{file}: {}: not valid PromQL: {e}: {}",
                query.place, query.expr
            )),
            Ok(parsed) if parsed != names.iter().cloned().collect() => missing.push(format!(
                "{file}: {}: the name extractor read {names:?}, the parser {parsed:?}: {}",
                query.place, query.expr
            )),
            Ok(_) => {}
        }
        if names.is_empty() {
            missing.push(format!("{file}: {}: names no metric: {}", query.place, query.expr));
        }
        for name in names {
            if !exposition.has(&name) && !PROMETHEUS_OWN.contains(&name.as_str()) {
                missing.push(format!("{file}: {}: metric `{name}` is not on /metrics", query.place));
            }
            named.insert(name);
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
    // The dashboard shows every family the issue lists.
    for family in [
        "airbag_ticks_received_total",
        "airbag_ticks_rejected_total",
        "airbag_tick_to_alert_seconds",
        "airbag_alerts_total",
        "airbag_journal_fsync_seconds_sum",
        "airbag_checkpoint_success_ratio",
        "airbag_reload_last_failed",
        "airbag_subscribers",
        "airbag_subscribers_lagged_total",
        "airbag_kafka_rejected_total",
        "airbag_kafka_sink_produced_total",
        "airbag_kafka_sink_lag_alerts",
    ] {
        assert!(named.contains(family), "nothing in deploy/ reads {family}");
    }
}

// === Kubernetes ===

/// `$AIRBAG_KUBERNETES_VALIDATE`, or the venv `scripts/setup.sh` fills.
fn kubernetes_validate() -> PathBuf {
    let path = std::env::var_os("AIRBAG_KUBERNETES_VALIDATE").map_or_else(
        || {
            let home = std::env::var_os("HOME").expect("HOME is set");
            Path::new(&home).join(".cache/airbag-tools/venv/bin/kubernetes-validate")
        },
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "{} is missing: run scripts/setup.sh (it installs kubernetes-validate into \
         ~/.cache/airbag-tools/venv) or set AIRBAG_KUBERNETES_VALIDATE",
        path.display()
    );
    path
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

fn manifests() -> Vec<PathBuf> {
    let mut files = Vec::new();
    yaml_files(&repo("deploy/kubernetes"), &mut files);
    assert!(files.len() >= 8, "too few manifests: {files:?}");
    files
}

#[test]
fn the_kubernetes_manifests_pass_kubernetes_validate_strict() {
    let tool = kubernetes_validate();
    let out = Command::new(&tool)
        .arg("--strict")
        .args(manifests())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", tool.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // An unknown kind is only a warning to the tool (no schema to check
    // against): here it fails too.
    let complaints: Vec<&str> = text.lines().filter(|l| !l.starts_with("INFO ")).collect();
    assert!(
        out.status.success() && complaints.is_empty(),
        "kubernetes-validate --strict failed ({}):\n{text}",
        out.status
    );
    assert!(text.contains("statefulset/airbag "), "{text}");
    assert!(text.contains("statefulset/airbag-kafka "), "{text}");
}

/// Every document of every manifest, with its file.
fn documents() -> Vec<(PathBuf, serde_norway::Value)> {
    let mut out = Vec::new();
    for path in manifests() {
        let text = std::fs::read_to_string(&path).expect("read manifest");
        for document in serde_norway::Deserializer::from_str(&text) {
            let value =
                serde_norway::Value::deserialize(document).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push((path.clone(), value));
        }
    }
    out
}

fn config_maps() -> Vec<(String, serde_norway::Mapping)> {
    documents()
        .into_iter()
        .filter(|(_, d)| d["kind"] == "ConfigMap")
        .map(|(_, d)| {
            let name = d["metadata"]["name"].as_str().expect("a name").to_string();
            let data = d["data"].as_mapping().expect("data").clone();
            (name, data)
        })
        .collect()
}

#[test]
fn the_statefulsets_probe_grpc_health_and_run_unprivileged_on_a_read_only_root() {
    let sets: Vec<_> = documents()
        .into_iter()
        .filter(|(_, d)| d["kind"] == "StatefulSet")
        .collect();
    assert_eq!(sets.len(), 2);
    for (path, set) in sets {
        let place = path.display();
        let pod = &set["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{place}");
        let container = &pod["containers"][0];
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true, "{place}");
        assert_eq!(
            container["securityContext"]["allowPrivilegeEscalation"], false,
            "{place}"
        );
        for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
            assert_eq!(container[probe]["grpc"]["port"], 50051, "{place}: {probe}");
        }
        assert!(container["resources"]["requests"]["memory"].is_string(), "{place}");
        assert_eq!(
            set["spec"]["volumeClaimTemplates"][0]["metadata"]["name"], "data",
            "{place}"
        );
        let mounts = container["volumeMounts"].as_sequence().expect("mounts");
        let mount = |name: &str| {
            mounts
                .iter()
                .find(|m| m["name"] == name)
                .unwrap_or_else(|| panic!("{place}: no mount {name}"))
        };
        assert_eq!(mount("data")["mountPath"], "/var/lib/airbag", "{place}");
        // A folder, so the kubelet's `..data` swaps reach the watcher.
        assert_eq!(mount("rules")["mountPath"], "/etc/airbag/rules", "{place}");
        assert!(mount("rules").get("subPath").is_none(), "{place}");
    }
}

/// Credentials and TLS files for configurations that name them: a token
/// file and a self-signed certificate in `dir`.
fn with_test_secrets(mut config: ServiceConfig, dir: &Path) -> ServiceConfig {
    if config.auth.token_file.is_some() {
        let tokens = dir.join("tokens.toml");
        let hash = airbag::config::auth::token_sha256_hex(b"deploy-test-token");
        std::fs::write(
            &tokens,
            format!("[[tokens]]\nname = \"deploy-test\"\nsha256 = \"{hash}\"\nroles = [\"ingest\", \"subscribe\"]\n"),
        )
        .expect("write tokens");
        config.auth.token_file = Some(tokens);
    }
    if config.tls.cert.is_some() {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
        let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
        std::fs::write(&cert, certified.cert.pem()).expect("write cert");
        std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
        config.tls.cert = Some(cert);
        config.tls.key = Some(key);
    }
    config
}

fn assert_config_loads(place: &str, text: &str) -> ServiceConfig {
    let config = ServiceConfig::from_toml(text).unwrap_or_else(|e| panic!("{place}: {e:?}"));
    let secrets = tempfile::tempdir().expect("temp dir");
    with_test_secrets(config.clone(), secrets.path())
        .validate()
        .unwrap_or_else(|e| panic!("{place}: {e}"));
    config
}

#[test]
fn the_configurations_in_deploy_load_and_validate() {
    let maps = config_maps();
    let config_of = |name: &str| {
        let (_, data) = maps
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no ConfigMap {name}"));
        data["airbag.toml"].as_str().expect("airbag.toml").to_string()
    };
    let single = assert_config_loads("ConfigMap airbag-config", &config_of("airbag-config"));
    assert_eq!(single.rules, Path::new("/etc/airbag/rules"));
    assert_eq!(single.data_dir.as_deref(), Some(Path::new("/var/lib/airbag")));
    assert!(single.kafka.source.is_empty());

    let group = assert_config_loads("ConfigMap airbag-kafka-config", &config_of("airbag-kafka-config"));
    assert!(!group.kafka.source.is_empty() && !group.kafka.sink.is_empty());
    assert!(group.kafka.source.iter().all(|s| s.group_id == "airbag"));

    let container = assert_config_loads("deploy/container/airbag.toml", &read("deploy/container/airbag.toml"));
    assert_eq!(container.data_dir.as_deref(), Some(Path::new("/var/lib/airbag")));
    assert_config_loads("deploy/systemd/airbag.toml", &read("deploy/systemd/airbag.toml"));
}

#[test]
fn the_rules_config_map_compiles_with_its_tests() {
    let (_, data) = config_maps()
        .into_iter()
        .find(|(n, _)| n == "airbag-rules")
        .expect("ConfigMap airbag-rules");
    let files: Vec<(String, String)> = data
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().expect("key").to_string(),
                v.as_str().expect("text").to_string(),
            )
        })
        .collect();
    assert!(files.iter().all(|(name, _)| name.ends_with(".toml")), "{files:?}");
    let ruleset = compile_texts(&files).unwrap_or_else(|errors| {
        panic!(
            "ConfigMap airbag-rules:\n{}",
            errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
        )
    });
    assert!(ruleset.len() >= 2);
}

// === systemd ===

fn systemd_analyze() -> PathBuf {
    let path = std::env::var_os("AIRBAG_SYSTEMD_ANALYZE").map_or_else(
        || {
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
                .map(|dir| dir.join("systemd-analyze"))
                .find(|p| p.is_file())
                .unwrap_or_else(|| PathBuf::from("/usr/bin/systemd-analyze"))
        },
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "{} is missing: run scripts/setup.sh (apt package systemd) or set AIRBAG_SYSTEMD_ANALYZE",
        path.display()
    );
    path
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit = read("deploy/systemd/airbag.service");
    let installed = "ExecStart=/usr/local/bin/airbag serve ";
    assert!(
        unit.contains(installed),
        "the unit's ExecStart changed: update this test"
    );
    // The unit names where the binary is installed; verify checks that it
    // is an executable, so point it at this build's.
    let unit = unit.replace(installed, &format!("ExecStart={} serve ", env!("CARGO_BIN_EXE_airbag")));
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("airbag.service");
    std::fs::write(&path, unit).expect("write unit");
    let tool = systemd_analyze();
    let out = Command::new(&tool)
        .arg("verify")
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", tool.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify deploy/systemd/airbag.service ({}):\n{text}",
        out.status
    );
}

#[test]
fn the_systemd_unit_is_hardened() {
    let unit = read("deploy/systemd/airbag.service");
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    for wanted in [
        "DynamicUser=yes",
        "StateDirectory=airbag",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "SystemCallFilter=@system-service",
        "MemoryDenyWriteExecute=yes",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(lines.contains(&wanted), "deploy/systemd/airbag.service lacks {wanted}");
    }
    assert!(lines
        .iter()
        .any(|l| l.starts_with("RestrictAddressFamilies=AF_INET AF_INET6")));
    assert!(lines.iter().any(|l| l.contains("--data-dir ${STATE_DIRECTORY}")));
}

// === real processes: SIGHUP and the container's health check ===

/// `airbag serve` as a child process, killed on drop.
struct Served {
    child: std::process::Child,
    addr: String,
    log: PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    /// Serves `rules` with the rules watcher off, so only a signal or the
    /// API reloads.
    async fn start(dir: &Path, rules: &Path) -> Served {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let config = dir.join("airbag.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:0\"\nrules = {:?}\nwatch_rules = false\n",
                rules.display().to_string()
            ),
        )
        .expect("write config");
        let log = dir.join("server.log");
        let child = Command::new(env!("CARGO_BIN_EXE_airbag"))
            .args(["serve", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn airbag serve");
        let served = Served {
            child,
            addr: format!("127.0.0.1:{port}"),
            log,
        };
        served.await_serving().await;
        served
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn await_serving(&self) {
        let args = airbag::cli::health::HealthArgs {
            addr: self.addr.clone(),
            service: String::new(),
            timeout: 1.0,
            security: airbag::cli::wire::ClientSecurity::default(),
        };
        let deadline = Instant::now() + common::WAIT;
        while let Err(e) = airbag::cli::health::check(&args).await {
            assert!(
                Instant::now() < deadline,
                "airbag serve is not serving: {e}\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) on our own child, not yet reaped; no memory involved.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal})");
    }

    /// Sends SIGHUP and waits (bounded by `within`) for the first status
    /// that `reloaded` accepts.
    async fn sighup_until(
        &self,
        what: &str,
        reloaded: impl Fn(&airbag::wire::proto::StatusResponse) -> bool,
    ) -> airbag::wire::proto::StatusResponse {
        self.signal(libc::SIGHUP);
        within(what, async {
            loop {
                let status = self.status().await;
                if reloaded(&status) {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }

    async fn status(&self) -> airbag::wire::proto::StatusResponse {
        let channel = airbag::cli::wire::connect(&self.addr).await.expect("connect");
        airbag::wire::proto::rule_admin_client::RuleAdminClient::new(channel)
            .status(airbag::wire::proto::StatusRequest {})
            .await
            .expect("status")
            .into_inner()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_the_units_reload_signal_reloads_the_rules() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).expect("rules dir");
    let crash = halt_rule("btc-crash", "BTC-*");
    std::fs::write(rules.join("10-crash.toml"), &crash).expect("write rule");
    let mut served = Served::start(dir.path(), &rules).await;
    let before = served.status().await;
    assert_eq!(before.rule_count, 1);

    std::fs::write(rules.join("20-eth.toml"), halt_rule("eth-crash", "ETH-*")).expect("write rule");
    let after = served
        .sighup_until("the SIGHUP reload", |s| s.ruleset_version > before.ruleset_version)
        .await;
    assert_eq!(after.rule_count, 2, "{after:?}");
    assert!(after.last_reload_errors.is_empty());

    // A broken file: the reload fails, the rules in force stay.
    std::fs::write(rules.join("30-broken.toml"), "[[rule]]\nid = \"x\"\nkind = \"nope\"\n").expect("write rule");
    let failed = served
        .sighup_until("the failed SIGHUP reload", |s| {
            s.reload_failures > after.reload_failures
        })
        .await;
    assert_eq!(failed.ruleset_version, after.ruleset_version);
    assert_eq!(failed.rule_count, 2);
    assert!(
        failed
            .last_reload_errors
            .iter()
            .any(|e| e.file.ends_with("30-broken.toml")),
        "{failed:?}"
    );

    // The unit's stop signal: a clean exit.
    served.signal(libc::SIGTERM);
    let deadline = Instant::now() + common::WAIT;
    let status = loop {
        if let Some(status) = served.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "no exit after SIGTERM:\n{}",
            served.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}:\n{}", served.log_text());
}

/// The exec form of the Dockerfile's HEALTHCHECK: `CMD ["a", "b", ...]`.
fn dockerfile_healthcheck() -> Vec<String> {
    let dockerfile = read("deploy/Dockerfile");
    let joined = dockerfile.replace("\\\n", " ");
    let line = joined
        .lines()
        .find(|l| l.starts_with("HEALTHCHECK "))
        .expect("a HEALTHCHECK in deploy/Dockerfile");
    let (_, command) = line.split_once(" CMD ").expect("HEALTHCHECK ... CMD [...]");
    serde_json::from_str(command.trim()).unwrap_or_else(|e| panic!("HEALTHCHECK CMD is not exec form: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dockerfiles_healthcheck_passes_on_a_serving_server_and_fails_without_one() {
    let command = dockerfile_healthcheck();
    assert_eq!(command[0], "/usr/local/bin/airbag");
    let addr_at = command.iter().position(|a| a == "--addr").expect("--addr") + 1;
    assert_eq!(command[addr_at], "127.0.0.1:50051", "the image's listen port");

    let dir = tempfile::tempdir().expect("temp dir");
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).expect("rules dir");
    std::fs::write(rules.join("crash.toml"), halt_rule("crash", "*")).expect("write rule");
    let served = Served::start(dir.path(), &rules).await;
    let run = |addr: &str| {
        let mut args = command[1..].to_vec();
        args[addr_at - 1] = addr.to_string();
        Command::new(env!("CARGO_BIN_EXE_airbag"))
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("run the health check")
    };
    let ok = run(&served.addr);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let addr = served.addr.clone();
    drop(served);
    let down = run(&addr);
    assert_eq!(down.status.code(), Some(1), "{}", String::from_utf8_lossy(&down.stderr));
}

// === README: Migrating from Flink CEP ===

#[test]
fn the_flink_migration_example_rule_compiles_and_passes_its_tests() {
    let readme = read("README.md");
    let section = readme
        .split_once("\n## Migrating from Flink CEP\n")
        .map(|(_, rest)| rest.split("\n## ").next().unwrap_or(rest))
        .expect("README has a section `## Migrating from Flink CEP`");
    assert!(section.contains("```java"), "the section shows the Flink job");
    let toml = section
        .split_once("```toml\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .map(|(block, _)| block)
        .expect("the section has a ```toml block");
    assert!(toml.contains("[[rule.test]]"), "the example carries its own test");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("flink-migration.toml"), toml).expect("write rule");
    let ruleset = load_dir(dir.path()).unwrap_or_else(|errors| {
        panic!(
            "README's Flink example:\n{}",
            errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
        )
    });
    assert_eq!(ruleset.len(), 1);
}
