//! Security of the gRPC port, against a real server on 127.0.0.1: bearer
//! tokens and roles, TLS and mutual TLS with certificates made at test
//! time (rcgen), the configurations the server refuses, and every stream,
//! rate and rules limit, each hit while other clients carry on.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use airbag::app::{self, AppError};
use airbag::cli::wire::{ClientSecurity, Connection, Target};
use airbag::config::auth::{token_sha256_hex, CertificateEntry, Role, TokenEntry};
use airbag::config::limits::LimitsConfig;
use airbag::config::tls::TlsConfig;
use airbag::config::{ConfigError, ServiceConfig};
use airbag::server::tls::TlsError;
use airbag::server::SecurityError;
use airbag::wire::proto;
use common::*;
use proto::alerts_client::AlertsClient;
use proto::ingest_client::IngestClient;
use proto::rule_admin_client::RuleAdminClient;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

const FEED_TOKEN: &str = "feed-7d1c2a9e4b30f58c";
const DESK_TOKEN: &str = "desk-0b8e6f2d9a4c7135";
const OPS_TOKEN: &str = "ops-5e9a13c7d2f04b86";
const ALL_TOKEN: &str = "all-c4f1e8a20d7b6935";

fn token(name: &str, secret: &str, roles: &[Role]) -> TokenEntry {
    TokenEntry {
        name: name.into(),
        sha256: token_sha256_hex(secret.as_bytes()),
        roles: roles.to_vec(),
    }
}

fn tokens() -> Vec<TokenEntry> {
    vec![
        token("feed", FEED_TOKEN, &[Role::Ingest]),
        token("desk", DESK_TOKEN, &[Role::Subscribe]),
        token("ops", OPS_TOKEN, &[Role::Admin]),
        token("all", ALL_TOKEN, &[Role::Ingest, Role::Subscribe, Role::Admin]),
    ]
}

fn crash_rule() -> String {
    drawdown_rule("crash", "\"BTC-*\"", "5%", "critical", "\"halt\"")
}

// === Certificates ===

/// A certificate authority made for one test.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf certificate with subject CN `common_name`, and its key, as
    /// PEM. Server certificates name localhost and 127.0.0.1.
    fn issue(&self, common_name: &str, server: bool) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let names = if server {
            vec!["localhost".to_string(), "127.0.0.1".to_string()]
        } else {
            Vec::new()
        };
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        (cert.pem(), key.serialize_pem())
    }
}

/// Certificates of one test, written to a temporary folder.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
}

/// A client certificate's files.
struct ClientCert {
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        Pki {
            dir: tempfile::tempdir().expect("temp dir"),
            ca: Ca::new("Airbag test CA"),
        }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write PEM");
        path
    }

    fn ca_file(&self) -> PathBuf {
        self.write("ca.pem", &self.ca.pem)
    }

    /// The server's TLS settings (certificate for 127.0.0.1).
    fn server_tls(&self) -> TlsConfig {
        let (cert, key) = self.ca.issue("airbag server", true);
        TlsConfig {
            cert: Some(self.write("server.pem", &cert)),
            key: Some(self.write("server.key", &key)),
            ..TlsConfig::default()
        }
    }

    fn client(&self, ca: &Ca, common_name: &str) -> ClientCert {
        let (cert, key) = ca.issue(common_name, false);
        ClientCert {
            cert: self.write(&format!("{common_name}.pem"), &cert),
            key: self.write(&format!("{common_name}.key"), &key),
        }
    }

    /// Client settings that trust this CA, with an optional certificate
    /// and token.
    fn client_security(&self, cert: Option<&ClientCert>, token: Option<&str>) -> ClientSecurity {
        ClientSecurity {
            token: token.map(str::to_owned),
            tls_ca: Some(self.ca_file()),
            tls_cert: cert.map(|c| c.cert.clone()),
            tls_key: cert.map(|c| c.key.clone()),
            tls_domain: None,
        }
    }
}

// === Clients ===

async fn connect(addr: &str, security: &ClientSecurity) -> Connection {
    let target = Target::new(addr, security).expect("client settings");
    within("connect", target.connect()).await.expect("connects")
}

fn tls_url(server: &TestServer) -> String {
    format!("https://{}", server.addr)
}

/// Opens an ingest stream, sends one batch and reads its ack.
async fn try_ingest(conn: Connection, seq: u64) -> Result<(), Status> {
    let mut stream = open_ingest(conn).await?;
    stream
        .send(batch(seq, vec![trade("BTC-USDT", seq as i64, seq, "100")]))
        .await
}

/// An ingest stream the test drives batch by batch.
struct Ingest {
    tx: Option<mpsc::Sender<proto::TickBatch>>,
    acks: Streaming<proto::IngestAck>,
}

async fn open_ingest(conn: Connection) -> Result<Ingest, Status> {
    let mut client = IngestClient::new(conn);
    let (tx, rx) = mpsc::channel(8);
    let acks = within("ingest", client.ingest(ReceiverStream::new(rx)))
        .await?
        .into_inner();
    Ok(Ingest { tx: Some(tx), acks })
}

impl Ingest {
    /// Sends a batch; its ack, or the status that ended the stream.
    async fn send(&mut self, batch: proto::TickBatch) -> Result<(), Status> {
        let tx = self.tx.as_ref().expect("open");
        // The server may already have ended the stream; its status says why.
        let _ = within("send", tx.send(batch)).await;
        match within("ack", self.acks.message()).await? {
            Some(_) => Ok(()),
            None => Err(Status::internal("stream ended without a status")),
        }
    }

    /// Ends the client side and waits for the server to end its side.
    async fn close(mut self) {
        self.tx = None;
        let _ = within("stream end", self.acks.message()).await;
    }
}

async fn try_subscribe(conn: Connection) -> Result<Streaming<proto::Alert>, Status> {
    let mut client = AlertsClient::new(conn);
    Ok(
        within("subscribe", client.subscribe(proto::SubscribeRequest::default()))
            .await?
            .into_inner(),
    )
}

/// Every `RuleAdmin` call, by name, and its outcome.
async fn admin_calls(conn: Connection) -> Vec<(&'static str, Result<(), Status>)> {
    let mut admin = RuleAdminClient::new(conn);
    let validate = proto::ValidateRequest {
        source: Some(proto::validate_request::Source::Text(crash_rule())),
    };
    vec![
        (
            "ListRules",
            within("list", admin.list_rules(proto::ListRulesRequest {}))
                .await
                .map(drop),
        ),
        ("Validate", within("validate", admin.validate(validate)).await.map(drop)),
        (
            "Reload",
            within("reload", admin.reload(proto::ReloadRequest {})).await.map(drop),
        ),
        (
            "Status",
            within("status", admin.status(proto::StatusRequest {})).await.map(drop),
        ),
    ]
}

async fn health_and_reflection(conn: Connection) -> Result<(), Status> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut health = tonic_health::pb::health_client::HealthClient::new(conn.clone());
    let reply = within(
        "health",
        health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }),
    )
    .await?;
    assert_eq!(reply.into_inner().status, 1, "SERVING");
    let mut reflection = ServerReflectionClient::new(conn);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = within(
        "reflection",
        reflection.server_reflection_info(tokio_stream::iter([request])),
    )
    .await?
    .into_inner();
    let reply = within("reflection reply", replies.message()).await?;
    assert!(reply.is_some(), "reflection answered");
    Ok(())
}

/// Checks that a connection made with `security` may make exactly the
/// calls of `roles`, and is refused the others with `PERMISSION_DENIED`
/// naming the role it lacks.
async fn assert_calls(server: &TestServer, addr: &str, security: &ClientSecurity, roles: &[Role], who: &str) {
    let conn = connect(addr, security).await;
    let denied = |result: Result<(), Status>, call: &str, role: Role| {
        let status = result.expect_err(&format!("{who} may not call {call}"));
        assert_eq!(status.code(), Code::PermissionDenied, "{who} {call}: {status:?}");
        let needs = format!("it needs role `{}`", role.name());
        assert!(status.message().contains(&needs), "{who} {call}: {}", status.message());
        assert!(status.message().contains(who), "{who} {call}: {}", status.message());
    };
    let seq = server.addr.port() as u64 * 1000 + roles.len() as u64;
    let ingest = try_ingest(conn.clone(), seq).await;
    if roles.contains(&Role::Ingest) {
        ingest.unwrap_or_else(|s| panic!("{who} may ingest: {s:?}"));
    } else {
        denied(ingest, "Ingest", Role::Ingest);
    }
    let subscribe = try_subscribe(conn.clone()).await.map(drop);
    if roles.contains(&Role::Subscribe) {
        subscribe.unwrap_or_else(|s| panic!("{who} may subscribe: {s:?}"));
    } else {
        denied(subscribe, "Subscribe", Role::Subscribe);
    }
    for (call, result) in admin_calls(conn.clone()).await {
        if roles.contains(&Role::Admin) {
            result.unwrap_or_else(|s| panic!("{who} may call {call}: {s:?}"));
        } else {
            denied(result, call, Role::Admin);
        }
    }
    health_and_reflection(conn)
        .await
        .expect("health and reflection are open");
}

/// Connects and makes one call; the error, which must come within
/// [`WAIT`] rather than hang.
async fn refused_connection(addr: &str, security: &ClientSecurity) -> String {
    let target = Target::new(addr, security).expect("client settings");
    let attempt = async {
        let conn = target.connect().await.map_err(|e| format!("connect: {e}"))?;
        let mut admin = RuleAdminClient::new(conn);
        admin
            .status(proto::StatusRequest {})
            .await
            .map(drop)
            .map_err(|s| format!("call: {s:?}"))
    };
    match tokio::time::timeout(WAIT, attempt).await {
        Ok(Ok(())) => panic!("the call should have failed"),
        Ok(Err(e)) => e,
        Err(_) => panic!("the attempt hung for {WAIT:?} instead of failing"),
    }
}

/// The connection was refused by TLS (the client sees the connection
/// fail, with the TLS alert or a closed connection), not by auth. When
/// the server's close lands while the client is still waiting for the
/// connection to be ready, the call is cancelled with the transport error
/// as its source.
fn assert_refused_by_tls(error: &str) {
    for code in ["Unauthenticated", "PermissionDenied"] {
        assert!(!error.contains(code), "refused by auth rather than TLS: {error}");
    }
    assert!(
        error.contains("transport error")
            || error.contains("connection closed")
            || (error.contains("code: Cancelled") && error.contains("transport::Error(Transport")),
        "{error}"
    );
}

// === Tokens and roles ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_may_make_exactly_its_own_calls() {
    let server = TestServer::builder()
        .rule_file("crash.toml", &crash_rule())
        .configure(|c| c.auth.tokens = tokens())
        .start()
        .await;
    let url = server.url();
    assert_calls(
        &server,
        &url,
        &ClientSecurity::token(FEED_TOKEN),
        &[Role::Ingest],
        "token `feed`",
    )
    .await;
    assert_calls(
        &server,
        &url,
        &ClientSecurity::token(DESK_TOKEN),
        &[Role::Subscribe],
        "token `desk`",
    )
    .await;
    assert_calls(
        &server,
        &url,
        &ClientSecurity::token(OPS_TOKEN),
        &[Role::Admin],
        "token `ops`",
    )
    .await;
    assert_calls(
        &server,
        &url,
        &ClientSecurity::token(ALL_TOKEN),
        &Role::ALL,
        "token `all`",
    )
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_wrong_tokens_are_unauthenticated_and_never_echoed() {
    let server = TestServer::builder()
        .rule_file("crash.toml", &crash_rule())
        .configure(|c| c.auth.tokens = tokens())
        .start()
        .await;
    let url = server.url();
    for (security, expect) in [
        (
            ClientSecurity::default(),
            "no credentials: send `authorization: Bearer <token>` metadata",
        ),
        (
            ClientSecurity::token("guessed-token-123456"),
            "the bearer token is not known to this server",
        ),
        // Right token, with a trailing character: a different token.
        (
            ClientSecurity::token(format!("{FEED_TOKEN}x")),
            "the bearer token is not known to this server",
        ),
    ] {
        let conn = connect(&url, &security).await;
        let mut outcomes = vec![
            ("Ingest", try_ingest(conn.clone(), 1).await),
            ("Subscribe", try_subscribe(conn.clone()).await.map(drop)),
        ];
        outcomes.extend(admin_calls(conn.clone()).await);
        for (call, result) in outcomes {
            let status = result.expect_err(call);
            assert_eq!(status.code(), Code::Unauthenticated, "{call}: {status:?}");
            assert_eq!(status.message(), expect, "{call}");
            if let Some(sent) = &security.token {
                assert!(!status.message().contains(sent.as_str()), "{call} echoed the token");
            }
        }
        // Health and reflection stay open.
        health_and_reflection(conn).await.expect("open services");
    }
    // The refusals changed nothing: a good token still works.
    try_ingest(connect(&url, &ClientSecurity::token(FEED_TOKEN)).await, 5)
        .await
        .expect("feed ingests");
    server.shutdown().await;
}

// === TLS ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_token_holders_and_refuses_plaintext_and_untrusted_servers_cleanly() {
    let pki = Pki::new();
    let tls = pki.server_tls();
    let server = TestServer::builder()
        .rule_file("crash.toml", &crash_rule())
        .configure(|c| {
            c.tls = tls;
            c.auth.tokens = tokens();
        })
        .start()
        .await;
    let url = tls_url(&server);

    // Over TLS, with a token: the role's calls, and only those.
    let security = pki.client_security(None, Some(FEED_TOKEN));
    assert_calls(&server, &url, &security, &[Role::Ingest], "token `feed`").await;
    // An address without a scheme turns to TLS with --tls-ca.
    let bare = server.addr.to_string();
    try_ingest(connect(&bare, &security).await, 10)
        .await
        .expect("bare address, TLS");

    // TLS alone grants nothing.
    let conn = connect(&url, &pki.client_security(None, None)).await;
    let status = try_ingest(conn, 11).await.expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // A plaintext client fails, and does not hang.
    let error = refused_connection(&server.url(), &ClientSecurity::token(FEED_TOKEN)).await;
    println!("plaintext client: {error}");

    // A client that does not trust the server's CA fails too.
    let other = Ca::new("Some other CA");
    let other_ca = pki.write("other-ca.pem", &other.pem);
    let untrusting = ClientSecurity {
        tls_ca: Some(other_ca),
        ..ClientSecurity::token(FEED_TOKEN)
    };
    let error = refused_connection(&url, &untrusting).await;
    assert!(
        error.starts_with("connect: cannot connect to https://127.0.0.1:"),
        "{error}"
    );

    // The server carries on.
    try_ingest(connect(&url, &security).await, 12)
        .await
        .expect("still serving");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_maps_certificate_subjects_to_roles_and_refuses_untrusted_certificates() {
    let pki = Pki::new();
    let tls = TlsConfig {
        client_ca: Some(pki.ca_file()),
        ..pki.server_tls()
    };
    let server = TestServer::builder()
        .rule_file("crash.toml", &crash_rule())
        .configure(|c| {
            c.tls = tls;
            c.auth.tokens = tokens();
            c.auth.certificates = vec![
                CertificateEntry {
                    subject: "risk-desk".into(),
                    roles: vec![Role::Subscribe, Role::Admin],
                },
                CertificateEntry {
                    subject: "feed-handler".into(),
                    roles: vec![Role::Ingest],
                },
            ];
        })
        .start()
        .await;
    let url = tls_url(&server);

    let desk = pki.client(&pki.ca, "risk-desk");
    let desk_security = pki.client_security(Some(&desk), None);
    assert_calls(
        &server,
        &url,
        &desk_security,
        &[Role::Subscribe, Role::Admin],
        "certificate `risk-desk`",
    )
    .await;
    let feed = pki.client(&pki.ca, "feed-handler");
    assert_calls(
        &server,
        &url,
        &pki.client_security(Some(&feed), None),
        &[Role::Ingest],
        "certificate `feed-handler`",
    )
    .await;

    // A trusted certificate whose subject has no roles configured.
    let stranger = pki.client(&pki.ca, "stranger");
    let conn = connect(&url, &pki.client_security(Some(&stranger), None)).await;
    let status = try_subscribe(conn).await.expect_err("unknown subject");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(
        status.message(),
        "the client certificate subject `stranger` is not known to this server"
    );
    // With a token as well, the token decides.
    let conn = connect(&url, &pki.client_security(Some(&stranger), Some(OPS_TOKEN))).await;
    assert!(admin_calls(conn).await.into_iter().all(|(_, r)| r.is_ok()), "ops token");

    // A certificate from a CA the server does not trust: refused at the
    // handshake, cleanly.
    let rogue_ca = Ca::new("Rogue CA");
    let rogue = pki.client(&rogue_ca, "risk-desk-rogue");
    let error = refused_connection(&url, &pki.client_security(Some(&rogue), Some(OPS_TOKEN))).await;
    assert_refused_by_tls(&error);
    // No certificate at all, while one is required: refused too.
    let error = refused_connection(&url, &pki.client_security(None, Some(OPS_TOKEN))).await;
    assert_refused_by_tls(&error);

    // The trusted desk carries on.
    let conn = connect(&url, &desk_security).await;
    assert!(admin_calls(conn).await.into_iter().all(|(_, r)| r.is_ok()), "desk");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_client_certificates_let_token_holders_in_without_one() {
    let pki = Pki::new();
    let tls = TlsConfig {
        client_ca: Some(pki.ca_file()),
        require_client_cert: false,
        ..pki.server_tls()
    };
    let server = TestServer::builder()
        .rule_file("crash.toml", &crash_rule())
        .configure(|c| {
            c.tls = tls;
            c.auth.tokens = tokens();
            c.auth.certificates = vec![CertificateEntry {
                subject: "risk-desk".into(),
                roles: vec![Role::Subscribe],
            }];
        })
        .start()
        .await;
    let url = tls_url(&server);
    let conn = connect(&url, &pki.client_security(None, Some(FEED_TOKEN))).await;
    try_ingest(conn, 1).await.expect("token without certificate");
    let conn = connect(&url, &pki.client_security(None, None)).await;
    let status = try_subscribe(conn).await.expect_err("neither");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(
        status.message(),
        "no credentials: send `authorization: Bearer <token>` metadata or connect with a client certificate"
    );
    let desk = pki.client(&pki.ca, "risk-desk");
    let conn = connect(&url, &pki.client_security(Some(&desk), None)).await;
    try_subscribe(conn).await.expect("certificate");
    server.shutdown().await;
}

// === Configurations the server refuses ===

fn problems(config: &ServiceConfig) -> Vec<(String, String)> {
    match config.validate() {
        Ok(()) => Vec::new(),
        Err(ConfigError::Invalid(problems)) => problems.into_iter().map(|p| (p.key.to_string(), p.message)).collect(),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn loopback_config(rules: &std::path::Path) -> ServiceConfig {
    ServiceConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        rules: rules.to_path_buf(),
        watch_rules: false,
        ..ServiceConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_exposure_is_refused_before_any_port_is_bound() {
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(rules.path().join("crash.toml"), crash_rule()).unwrap();
    let any: std::net::SocketAddr = "0.0.0.0:0".parse().unwrap();

    // Plaintext on every interface: refused, saying how to fix it.
    let open = ServiceConfig {
        listen: any,
        ..loopback_config(rules.path())
    };
    let found = problems(&open);
    let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["auth", "listen"], "{found:?}");
    let listen = &found[1].1;
    assert!(
        listen.starts_with("0.0.0.0:0 is not a loopback address and TLS is off"),
        "{listen}"
    );
    assert!(listen.contains("tls.cert and tls.key"), "{listen}");
    assert!(listen.contains("tls.allow_plaintext_non_loopback = true"), "{listen}");
    match app::start(open.clone()).await {
        Err(AppError::Config(ConfigError::Invalid(p))) => assert_eq!(p.len(), 2),
        other => panic!("expected a configuration error, got {other:?}"),
    }

    // The override with credentials is accepted (not started: that would
    // listen on every interface of the test machine).
    let overridden = ServiceConfig {
        tls: TlsConfig {
            allow_plaintext_non_loopback: true,
            ..TlsConfig::default()
        },
        ..open.clone()
    };
    assert_eq!(problems(&overridden)[0].0, "auth", "credentials are still required");
    let mut with_tokens = overridden.clone();
    with_tokens.auth.tokens = tokens();
    assert!(problems(&with_tokens).is_empty());

    // TLS without credentials, and metrics on every interface.
    let pki = Pki::new();
    let tls_only = ServiceConfig {
        tls: pki.server_tls(),
        metrics_listen: any,
        ..loopback_config(rules.path())
    };
    let keys: Vec<String> = problems(&tls_only).into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["auth", "metrics_listen"]);

    // The binary says the same and exits 2.
    let out = Command::new(env!("CARGO_BIN_EXE_airbag"))
        .args([
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--rules",
        ])
        .arg(rules.path())
        .stdin(Stdio::null())
        .output()
        .expect("run airbag serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("listen: 0.0.0.0:0 is not a loopback address"),
        "{stderr}"
    );
    assert!(stderr.contains("--allow-plaintext-non-loopback"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_tls_files_and_token_files_are_named() {
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(rules.path().join("crash.toml"), crash_rule()).unwrap();
    let pki = Pki::new();
    let garbage = pki.write("garbage.pem", "hello\n");
    let mut config = loopback_config(rules.path());
    config.auth.tokens = tokens();
    config.tls = TlsConfig {
        cert: Some(garbage.clone()),
        key: Some(pki.dir.path().join("missing.key")),
        client_ca: Some(garbage.clone()),
        ..TlsConfig::default()
    };
    config.auth.token_file = Some(pki.write("tokens.toml", "[[tokens]]\nname = \"x\"\nsha256 = \"12\"\nroles = []\n"));
    let found = problems(&config);
    let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "tls.cert",
            "tls.key",
            "tls.client_ca",
            "auth.token_file",
            "auth.token_file"
        ],
        "{found:?}"
    );
    assert!(
        found[0]
            .1
            .contains("garbage.pem: no `-----BEGIN CERTIFICATE-----` block"),
        "{}",
        found[0].1
    );
    assert!(found[1].1.contains("missing.key"), "{}", found[1].1);
    assert!(found[3].1.contains("token `x`"), "{}", found[3].1);

    // A key that belongs to another certificate: the start fails, naming both files.
    let (cert, _) = pki.ca.issue("server", true);
    let (_, other_key) = pki.ca.issue("server", true);
    config.tls = TlsConfig {
        cert: Some(pki.write("mismatch.pem", &cert)),
        key: Some(pki.write("mismatch.key", &other_key)),
        ..TlsConfig::default()
    };
    config.auth.token_file = None;
    assert!(problems(&config).is_empty(), "the files themselves are fine");
    match app::start(config).await {
        Err(AppError::Security(error)) => {
            assert!(
                matches!(error, SecurityError::Tls(TlsError::Mismatch { .. })),
                "{error:?}"
            );
            let message = error.to_string();
            assert!(
                message.contains("mismatch.pem") && message.contains("mismatch.key"),
                "{message}"
            );
            assert!(!message.contains("PRIVATE KEY"), "{message}");
        }
        other => panic!("expected a security error, got {other:?}"),
    }
}

#[test]
fn token_hash_prints_the_sha256_of_stdin_and_never_the_token() {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_airbag"))
        .args(["token", "hash"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run airbag token hash");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{FEED_TOKEN}\n").as_bytes())
        .expect("write token");
    let out = child.wait_with_output().expect("exit");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.trim_end(), token_sha256_hex(FEED_TOKEN.as_bytes()));
    assert!(!stdout.contains(FEED_TOKEN));

    let out = Command::new(env!("CARGO_BIN_EXE_airbag"))
        .args(["token", "hash"])
        .stdin(Stdio::null())
        .output()
        .expect("run airbag token hash");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no token on stdin"));
}

// === Limits ===

/// Retries `attempt` until it succeeds (a closed stream gives its place
/// back as the server notices the end), within [`WAIT`].
async fn eventually<T, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match attempt().await {
            Ok(v) => return v,
            Err(status) if tokio::time::Instant::now() < deadline => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{what}: {status:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("{what}: still refused after {WAIT:?}: {status:?}"),
        }
    }
}

fn assert_exhausted(result: Result<impl std::fmt::Debug, Status>, message: &str) {
    let status = result.expect_err(message);
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(status.message(), message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_streams_are_limited_per_connection_and_in_total() {
    let server = TestServer::builder()
        .rule_file("crash.toml", &crash_rule())
        .configure(|c| {
            c.limits = LimitsConfig {
                max_ingest_streams: 3,
                max_ingest_streams_per_connection: 2,
                ..LimitsConfig::default()
            }
        })
        .start()
        .await;
    let url = server.url();
    let a = connect(&url, &ClientSecurity::default()).await;
    let b = connect(&url, &ClientSecurity::default()).await;
    let mut a1 = open_ingest(a.clone()).await.expect("a1");
    let mut a2 = open_ingest(a.clone()).await.expect("a2");
    assert_exhausted(
        open_ingest(a.clone()).await.map(drop),
        "too many ingest streams on this connection: the limit is 2 (limits.max_ingest_streams_per_connection)",
    );
    let mut b1 = open_ingest(b.clone()).await.expect("b1");
    assert_exhausted(
        open_ingest(b.clone()).await.map(drop),
        "too many ingest streams on this server: the limit is 3 (limits.max_ingest_streams)",
    );
    // The open streams carry on, and subscribers are counted apart.
    let mut alerts = try_subscribe(a.clone()).await.expect("subscribe");
    a1.send(batch(1, vec![trade("BTC-USDT", 0, 1, "100")]))
        .await
        .expect("a1 acks");
    a2.send(batch(1, vec![trade("BTC-USDT", 100, 2, "90")]))
        .await
        .expect("a2 acks");
    b1.send(batch(1, vec![trade("ETH-USDT", 0, 1, "10")]))
        .await
        .expect("b1 acks");
    assert_eq!(next_alert(&mut alerts).await.rule_id, "crash");

    // A closed stream gives its place back.
    a1.close().await;
    let mut b2 = eventually("b2 after a1 closed", || open_ingest(b.clone())).await;
    b2.send(batch(2, vec![trade("ETH-USDT", 10, 2, "10")]))
        .await
        .expect("b2 acks");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_limited_per_connection_and_in_total() {
    let server = TestServer::builder()
        .rule_file("crash.toml", &crash_rule())
        .configure(|c| {
            c.limits = LimitsConfig {
                max_subscribers: 3,
                max_subscribers_per_connection: 2,
                ..LimitsConfig::default()
            }
        })
        .start()
        .await;
    let url = server.url();
    let a = connect(&url, &ClientSecurity::default()).await;
    let b = connect(&url, &ClientSecurity::default()).await;
    let mut a1 = try_subscribe(a.clone()).await.expect("a1");
    let mut a2 = try_subscribe(a.clone()).await.expect("a2");
    assert_exhausted(
        try_subscribe(a.clone()).await,
        "too many alert subscriptions on this connection: the limit is 2 (limits.max_subscribers_per_connection)",
    );
    let mut b1 = try_subscribe(b.clone()).await.expect("b1");
    assert_exhausted(
        try_subscribe(b.clone()).await,
        "too many alert subscriptions on this server: the limit is 3 (limits.max_subscribers)",
    );
    // Every open subscription still gets the alert.
    let mut ingest = open_ingest(b.clone()).await.expect("ingest");
    ingest
        .send(batch(1, vec![trade("BTC-USDT", 0, 1, "100")]))
        .await
        .unwrap();
    ingest
        .send(batch(2, vec![trade("BTC-USDT", 100, 2, "90")]))
        .await
        .unwrap();
    for stream in [&mut a1, &mut a2, &mut b1] {
        assert_eq!(next_alert(stream).await.rule_id, "crash");
    }
    drop(a1);
    let mut b2 = eventually("b2 after a1 ended", || try_subscribe(b.clone())).await;
    ingest
        .send(batch(3, vec![trade("BTC-PERP", 0, 1, "100")]))
        .await
        .unwrap();
    ingest
        .send(batch(4, vec![trade("BTC-PERP", 100, 2, "90")]))
        .await
        .unwrap();
    let alert = next_alert(&mut b2).await;
    assert_eq!(
        (alert.rule_id.as_str(), alert.instrument.as_str()),
        ("crash", "BTC-PERP")
    );
    server.shutdown().await;
}

fn ticks(instrument: &str, from_seq: u64, n: u64) -> Vec<proto::Tick> {
    (from_seq..from_seq + n)
        .map(|seq| trade(instrument, seq as i64, seq, "100"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingest_rate_is_limited_per_connection() {
    let server = TestServer::builder()
        .rule_file("crash.toml", &crash_rule())
        .configure(|c| {
            c.limits = LimitsConfig {
                max_ingest_rate_per_connection: Some(1_000),
                ..LimitsConfig::default()
            }
        })
        .start()
        .await;
    let url = server.url();
    let a = connect(&url, &ClientSecurity::default()).await;
    let mut stream = open_ingest(a.clone()).await.expect("open");
    // A second's worth goes through at once.
    stream
        .send(batch(1, ticks("BTC-USDT", 1, 1_000)))
        .await
        .expect("the first second's worth");
    // Another second's worth right after is over the limit: the stream ends.
    let status = stream
        .send(batch(2, ticks("BTC-USDT", 1_001, 1_000)))
        .await
        .expect_err("over the rate");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        status.message(),
        "ingest rate over the limit of 1000 ticks per second per connection \
         (limits.max_ingest_rate_per_connection) at batch 2; send more slowly"
    );
    // The budget belongs to the connection: a new stream on it does not refill it.
    let mut again = open_ingest(a.clone()).await.expect("reopen");
    let status = again
        .send(batch(3, ticks("BTC-USDT", 2_001, 1_000)))
        .await
        .expect_err("still over");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    // Another connection has its own budget; a batch over a whole second's
    // worth can never pass.
    let b = connect(&url, &ClientSecurity::default()).await;
    let mut other = open_ingest(b.clone()).await.expect("b");
    other.send(batch(1, ticks("ETH-USDT", 1, 500))).await.expect("b sends");
    let mut big = open_ingest(connect(&url, &ClientSecurity::default()).await)
        .await
        .expect("c");
    let status = big
        .send(batch(9, ticks("SOL-USDT", 1, 1_001)))
        .await
        .expect_err("too big");
    assert_eq!(
        status.message(),
        "batch 9 has 1001 ticks, more than this connection may send in a second: the limit is 1000 ticks per \
         second (limits.max_ingest_rate_per_connection)"
    );
    let mut admin = RuleAdminClient::new(b);
    let status = within("status", admin.status(proto::StatusRequest {}))
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.ticks_applied, 1_500, "only the admitted batches were applied");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_name_max_message_bytes() {
    let server = TestServer::builder()
        .rule_file("crash.toml", &crash_rule())
        .configure(|c| c.max_message_bytes = 1024)
        .start()
        .await;
    let conn = connect(&server.url(), &ClientSecurity::default()).await;
    let mut stream = open_ingest(conn.clone()).await.expect("open");
    let status = stream
        .send(batch(1, ticks("BTC-USDT", 1, 100)))
        .await
        .expect_err("too large");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("message too large (max_message_bytes = 1024): "),
        "{}",
        status.message()
    );
    try_ingest(conn, 500).await.expect("a small batch still goes through");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_file_size_and_rule_count_are_limited() {
    let server = TestServer::builder()
        .rule_file("10-crash.toml", &crash_rule())
        .configure(|c| {
            c.limits = LimitsConfig {
                max_rule_file_bytes: 2_000,
                max_rules: 2,
                ..LimitsConfig::default()
            }
        })
        .start()
        .await;
    let conn = connect(&server.url(), &ClientSecurity::default()).await;
    let mut admin = RuleAdminClient::new(conn.clone());

    // A file over the size limit.
    let big = format!(
        "{}{}",
        drawdown_rule("big", "\"ETH-*\"", "5%", "warning", "\"notify\""),
        "# padding\n".repeat(250)
    );
    server.write_rule("20-big.toml", &big);
    let reload = within("reload", admin.reload(proto::ReloadRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(!reload.applied);
    assert_eq!(reload.ruleset_version, 1, "the old rules stay in force");
    let error = &reload.errors[0];
    assert_eq!(error.file, "20-big.toml");
    assert_eq!(
        error.message,
        format!(
            "file is {} bytes; the limit is 2000 (limits.max_rule_file_bytes)",
            big.len()
        )
    );
    // The same through Validate.
    let validate = proto::ValidateRequest {
        source: Some(proto::validate_request::Source::Text(big)),
    };
    let answer = within("validate", admin.validate(validate)).await.unwrap().into_inner();
    assert!(!answer.valid);
    assert!(
        answer.errors[0].message.ends_with("(limits.max_rule_file_bytes)"),
        "{:?}",
        answer.errors
    );

    // One rule too many.
    std::fs::remove_file(server.rules_dir().join("20-big.toml")).unwrap();
    server.write_rule(
        "20-more.toml",
        &format!(
            "{}{}",
            drawdown_rule("eth", "\"ETH-*\"", "5%", "warning", "\"notify\""),
            drawdown_rule("sol", "\"SOL-*\"", "5%", "warning", "\"notify\"")
        ),
    );
    let reload = within("reload", admin.reload(proto::ReloadRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(!reload.applied);
    let error = &reload.errors[0];
    // Line 11: the `[[rule]]` of `sol`, the third rule.
    assert_eq!((error.file.as_str(), error.line), ("20-more.toml", 11));
    assert_eq!(
        error.message,
        "the ruleset has 3 rules; the limit is 2 (limits.max_rules), and this is rule 3"
    );
    // Ingest carried on under the old rules.
    try_ingest(conn, 1).await.expect("ingest");
    server.shutdown().await;
}
