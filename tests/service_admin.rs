//! Rule administration, health and reflection.

mod common;

use airbag::wire::proto;
use common::*;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

const CRASH: &str = r#"
[[rule]]
id = "btc-flash-crash"
kind = "drawdown"
description = "BTC falls 8% in 3 seconds"
instruments = ["BTC-USDT", "BTC-USDT-SWAP"]
window = "3s"
threshold = "8%"
severity = "critical"
actions = ["halt"]
labels = { team = "risk" }
"#;

const BAD_TEXT: &str = r#"[[rule]]
id = "broken"
kind = "drawdown"
window = "3s"
threshold = "eight percent"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_serves_and_reflection_lists_services() {
    let server = TestServer::builder().rule_file("crash.toml", CRASH).start().await;
    let mut health = HealthClient::new(server.channel().await);
    for service in ["", "airbag.v1.Ingest", "airbag.v1.Alerts", "airbag.v1.RuleAdmin"] {
        let reply = health
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(reply.status, ServingStatus::Serving as i32, "service {service:?}");
    }

    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection")
        .into_inner();
    let reply = within("reflection reply", replies.message())
        .await
        .expect("reflection reply")
        .expect("one reply");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply {reply:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "airbag.v1.Ingest",
        "airbag.v1.Alerts",
        "airbag.v1.RuleAdmin",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected} in {names:?}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_rules_shows_the_ruleset_in_force() {
    let server = TestServer::builder().rule_file("crash.toml", CRASH).start().await;
    let list = server
        .admin()
        .await
        .list_rules(proto::ListRulesRequest {})
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.ruleset_version, 1);
    assert_eq!(list.rules.len(), 1);
    let rule = &list.rules[0];
    assert_eq!(rule.id, "btc-flash-crash");
    assert_eq!(rule.kind, "drawdown");
    // The deprecated name is still filled for older clients; the enum beside it.
    #[allow(deprecated)]
    let severity = rule.severity.as_str();
    assert_eq!(severity, "critical");
    assert_eq!(rule.severity_level, proto::Severity::Critical as i32);
    assert_eq!(rule.actions, vec!["halt".to_string()]);
    assert_eq!(rule.mode, "active");
    assert_eq!(
        rule.instruments,
        vec!["BTC-USDT".to_string(), "BTC-USDT-SWAP".to_string()]
    );
    assert_eq!(rule.file, "crash.toml");
    assert_eq!(rule.line, 2);
    assert_eq!(rule.description, "BTC falls 8% in 3 seconds");
    assert_eq!(rule.labels.get("team").map(String::as_str), Some("risk"));
    assert_eq!(list.sources.len(), 1);
    assert_eq!(list.sources[0].name, "crash.toml");
    assert_eq!(list.sources[0].sha256.len(), 64);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_compiles_without_applying() {
    let server = TestServer::builder().rule_file("crash.toml", CRASH).start().await;
    let mut admin = server.admin().await;
    let text = |t: &str| proto::ValidateRequest {
        source: Some(proto::validate_request::Source::Text(t.to_string())),
    };

    let good = admin.validate(text(CRASH)).await.expect("validate").into_inner();
    assert!(good.valid, "{:?}", good.errors);
    assert_eq!(good.rule_count, 1);

    let bad = admin.validate(text(BAD_TEXT)).await.expect("validate").into_inner();
    assert!(!bad.valid);
    assert_eq!(bad.errors.len(), 1, "{:?}", bad.errors);
    let e = &bad.errors[0];
    assert_eq!((e.line, e.column), (5, 13), "{e:?}");
    assert!(e.message.contains("threshold"), "{e:?}");

    let dir = admin
        .validate(proto::ValidateRequest {
            source: Some(proto::validate_request::Source::Directory(
                server.rules_dir().display().to_string(),
            )),
        })
        .await
        .expect("validate")
        .into_inner();
    assert!(dir.valid && dir.rule_count == 1, "{dir:?}");

    let missing = admin
        .validate(proto::ValidateRequest {
            // Validate reads only the rules folder and below: a missing
            // folder there is an error, as before.
            source: Some(proto::validate_request::Source::Directory(
                server.rules_dir().join("no-such-folder").display().to_string(),
            )),
        })
        .await
        .expect("validate")
        .into_inner();
    assert!(
        !missing.valid && missing.errors[0].message.contains("cannot read"),
        "{missing:?}"
    );

    let none = admin.validate(proto::ValidateRequest { source: None }).await;
    assert_eq!(none.expect_err("no source").code(), tonic::Code::InvalidArgument);

    let status = admin
        .status(proto::StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.ruleset_version, 1, "validate applied nothing");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_is_all_or_nothing() {
    let server = TestServer::builder().rule_file("crash.toml", CRASH).start().await;
    let mut admin = server.admin().await;

    server.write_rule(
        "eth.toml",
        &drawdown_rule("eth-dip", "\"ETH-*\"", "5%", "warning", "\"notify\""),
    );
    let reply = admin
        .reload(proto::ReloadRequest {})
        .await
        .expect("reload")
        .into_inner();
    assert!(reply.applied, "{:?}", reply.errors);
    assert_eq!(reply.ruleset_version, 2);
    let list = admin
        .list_rules(proto::ListRulesRequest {})
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.ruleset_version, 2);
    let ids: Vec<&str> = list.rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, vec!["btc-flash-crash", "eth-dip"]);

    // The new rule is live.
    let mut alerts = server.subscribe(proto::SubscribeRequest::default()).await;
    let mut ingest = server.ingest().await;
    ingest
        .send(batch(
            1,
            vec![trade("ETH-USDT", 0, 1, "100"), trade("ETH-USDT", 100, 2, "94")],
        ))
        .await;
    let alert = next_alert(&mut alerts).await;
    assert_eq!((alert.rule_id.as_str(), alert.ruleset_version), ("eth-dip", 2));

    // A broken file changes nothing and reports every error.
    server.write_rule("broken.toml", BAD_TEXT);
    let reply = admin
        .reload(proto::ReloadRequest {})
        .await
        .expect("reload")
        .into_inner();
    assert!(!reply.applied);
    assert_eq!(reply.ruleset_version, 2);
    assert_eq!(reply.errors.len(), 1, "{:?}", reply.errors);
    assert_eq!(reply.errors[0].file, "broken.toml");
    assert_eq!(reply.errors[0].line, 5);
    let list = admin
        .list_rules(proto::ListRulesRequest {})
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.ruleset_version, 2);
    assert_eq!(list.rules.len(), 2);

    let status = admin
        .status(proto::StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.ruleset_version, 2);
    assert_eq!(status.rule_count, 2);
    assert_eq!(status.reload_failures, 1);
    assert_eq!(status.last_reload_errors.len(), 1);
    assert_eq!(status.rules_dir, server.rules_dir().display().to_string());
    assert_eq!(status.alerts_published, 1);
    assert_eq!(status.instruments, 1);
    assert!(status.started_time_ns > 0 && status.last_reload_ok_time_ns >= status.started_time_ns);

    let metrics = server.metrics_text().await;
    assert!(metrics.contains("airbag_reload_failures_total 1"), "{metrics}");
    assert!(metrics.contains("airbag_ruleset_version 2"), "{metrics}");
    assert!(
        metrics.contains("airbag_alerts_total{rule=\"eth-dip\",severity=\"warning\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("airbag_tick_to_alert_seconds_count 1"), "{metrics}");

    // Removing the broken file leaves exactly the ruleset in force: the
    // reload succeeds without a new version.
    std::fs::remove_file(server.rules_dir().join("broken.toml")).expect("remove");
    let reply = admin
        .reload(proto::ReloadRequest {})
        .await
        .expect("reload")
        .into_inner();
    assert!(reply.applied && reply.ruleset_version == 2, "{reply:?}");
    let status = admin
        .status(proto::StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert!(status.last_reload_errors.is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_rules_folder_is_reloaded_by_itself() {
    let server = TestServer::builder()
        .rule_file("crash.toml", CRASH)
        .configure(|c| c.watch_rules = true)
        .start()
        .await;
    let mut admin = server.admin().await;
    server.write_rule(
        "eth.toml",
        &drawdown_rule("eth-dip", "\"ETH-*\"", "5%", "warning", "\"notify\""),
    );
    within("the watcher to reload", async {
        loop {
            let list = admin
                .list_rules(proto::ListRulesRequest {})
                .await
                .expect("list")
                .into_inner();
            if list.rules.len() == 2 {
                assert!(list.ruleset_version >= 2);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    server.shutdown().await;
}
