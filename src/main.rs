//! The `airbag` binary: `serve` runs the service, `check` validates a
//! rules folder for CI, `check-config` (or `serve --check`) a
//! configuration file, `token hash` prints the hash a bearer token is
//! configured by. Client commands are a variant of [`Command`] with
//! their `clap::Args` and an arm calling [`block_on`] with their `run`.
//!
//! Startup order: parse flags, read and validate the configuration (exit
//! 2 before any port is bound), start logging, build the runtime, start
//! the service, wait for SIGINT or SIGTERM, drain, exit 0.
#![forbid(unsafe_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use airbag::app;
use airbag::config::ServiceConfig;
use airbag::service::rulebook::load_dir;

/// Real-time risk alerting for trading venues.
#[derive(Debug, Parser)]
#[command(name = "airbag", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service: gRPC ingest, alert subscriptions, rule admin,
    /// Prometheus metrics.
    Serve(ServeArgs),
    /// Compile a rules folder and report every error as file:line:col.
    Check(CheckArgs),
    /// Validate a configuration file, Kafka tables included: every problem
    /// under its key, exit 2 if any.
    CheckConfig(CheckConfigArgs),
    /// Stream a tick file (CSV, plain or gzip) to a server.
    Send(airbag::cli::send::SendArgs),
    /// Tail alerts as JSON lines.
    Subscribe(airbag::cli::subscribe::SubscribeArgs),
    /// What is halted, reduce-only or in limit state right now, since when
    /// and by which rule.
    State(airbag::cli::state::StateArgs),
    /// Ask the server's gRPC health service: exit 0 if it is serving, 1
    /// if not (for container health checks and probes).
    Health(airbag::cli::health::HealthArgs),
    /// Load generator: synthetic ticks with injected crashes; reports
    /// throughput and tick-to-alert latency.
    Load(airbag::cli::load::LoadArgs),
    /// Run rules over recorded ticks in event time (backtest), or compare
    /// two rules folders over the same ticks.
    Replay(Box<airbag::cli::replay::ReplayArgs>),
    /// Kafka client tools: `produce` a tick file to a topic, `tail` the
    /// alerts on a topic.
    Kafka {
        #[command(subcommand)]
        command: airbag::cli::kafka::KafkaCommand,
    },
    /// Bearer tokens: `airbag token hash` prints the SHA-256 that
    /// `[[auth.tokens]]` holds for a token read from stdin.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Read one token from stdin (a trailing newline is dropped) and print
    /// its SHA-256 as 64 hex digits.
    Hash,
}

/// Flags override the config file, which overrides the defaults.
#[derive(Debug, Args)]
struct ServeArgs {
    /// TOML configuration file (see `airbag::config`).
    #[arg(long, env = "AIRBAG_CONFIG")]
    config: Option<PathBuf>,
    /// gRPC address [default: 127.0.0.1:50051].
    #[arg(long, env = "AIRBAG_LISTEN")]
    listen: Option<SocketAddr>,
    /// Rules folder [default: rules].
    #[arg(long, env = "AIRBAG_RULES")]
    rules: Option<PathBuf>,
    /// Prometheus metrics address [default: 127.0.0.1:9090].
    #[arg(long, env = "AIRBAG_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Web console address [default: none, no console].
    #[arg(long, env = "AIRBAG_CONSOLE_LISTEN")]
    console_listen: Option<SocketAddr>,
    /// Folder for durable state.
    #[arg(long, env = "AIRBAG_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Log JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
    /// Serve plaintext gRPC on a non-loopback address (see
    /// `tls.allow_plaintext_non_loopback`).
    #[arg(long)]
    allow_plaintext_non_loopback: bool,
    /// Validate the configuration (file and flags) and exit: 0 when it is
    /// valid, 2 with every problem otherwise.
    #[arg(long)]
    check: bool,
}

#[derive(Debug, Args)]
struct CheckConfigArgs {
    /// The TOML configuration file.
    file: PathBuf,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// Rules folders (each checked on its own); a `.toml` file is checked
    /// alone, and other files (a README beside the folders) are skipped.
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Check(args) => check_all(&args.dirs),
        Command::CheckConfig(args) => check_config(service_config_of_file(&args.file)),
        Command::Kafka { command } => block_on(airbag::cli::kafka::run(command)),
        Command::Send(args) => block_on(airbag::cli::send::run(args)),
        Command::Subscribe(args) => block_on(airbag::cli::subscribe::run(args)),
        Command::State(args) => block_on(airbag::cli::state::run(args)),
        Command::Health(args) => block_on(airbag::cli::health::run(args)),
        Command::Load(args) => block_on(airbag::cli::load::run(args)),
        Command::Replay(args) => airbag::cli::replay::run(*args),
        Command::Token {
            command: TokenCommand::Hash,
        } => token_hash(),
    }
}

/// `airbag token hash`: the token from stdin, its hash on stdout. The
/// token itself is never printed.
fn token_hash() -> ExitCode {
    use std::io::Read as _;
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().take(64 * 1024).read_to_end(&mut input) {
        eprintln!("airbag: cannot read the token from stdin: {e}");
        return ExitCode::FAILURE;
    }
    let token = input.strip_suffix(b"\n").unwrap_or(&input);
    let token = token.strip_suffix(b"\r").unwrap_or(token);
    if token.is_empty() {
        eprintln!("airbag: no token on stdin; try: printf %s \"$TOKEN\" | airbag token hash");
        return ExitCode::FAILURE;
    }
    if token.iter().any(|&b| !(0x21..=0x7e).contains(&b)) {
        eprintln!("airbag: the token must be printable ASCII without spaces (it travels as gRPC metadata)");
        return ExitCode::FAILURE;
    }
    println!("{}", airbag::config::auth::token_sha256_hex(token));
    ExitCode::SUCCESS
}

/// The configuration from file, then flags.
fn service_config(args: &ServeArgs) -> Result<ServiceConfig, airbag::config::ConfigError> {
    let mut config = match &args.config {
        Some(path) => ServiceConfig::from_file(path)?,
        None => ServiceConfig::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(rules) = &args.rules {
        config.rules.clone_from(rules);
    }
    if let Some(metrics) = args.metrics_listen {
        config.metrics_listen = metrics;
    }
    if let Some(console) = args.console_listen {
        config.console.listen = Some(console);
    }
    if let Some(dir) = &args.data_dir {
        config.data_dir = Some(dir.clone());
    }
    if args.log_json {
        config.log_json = true;
    }
    if args.allow_plaintext_non_loopback {
        config.tls.allow_plaintext_non_loopback = true;
    }
    validated(config)
}

fn init_tracing(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

/// A configuration file alone, validated.
fn service_config_of_file(path: &Path) -> Result<ServiceConfig, airbag::config::ConfigError> {
    validated(ServiceConfig::from_file(path)?)
}

/// [`ServiceConfig::validate`], and what librdkafka says of the Kafka
/// tables' passed-through properties: every problem together.
fn validated(config: ServiceConfig) -> Result<ServiceConfig, airbag::config::ConfigError> {
    use airbag::config::ConfigError;
    let mut problems = match config.validate() {
        Ok(()) => Vec::new(),
        Err(ConfigError::Invalid(problems)) => problems,
        Err(e) => return Err(e),
    };
    problems.extend(airbag::kafka::client_problems(&config.kafka));
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

/// Prints why a configuration cannot be used, to stderr.
fn report_config_error(error: airbag::config::ConfigError) {
    match error {
        airbag::config::ConfigError::Invalid(problems) => {
            eprintln!("airbag: invalid configuration:");
            for p in problems {
                eprintln!("  {p}");
            }
        }
        e => eprintln!("airbag: {e}"),
    }
}

/// `airbag check-config FILE` and `serve --check`: `ok` and what the
/// configuration runs, exit 0; or every problem, exit 2.
fn check_config(config: Result<ServiceConfig, airbag::config::ConfigError>) -> ExitCode {
    match config {
        Ok(config) => {
            println!(
                "ok: gRPC on {}, rules from {}, {} Kafka sources, {} Kafka sinks",
                config.listen,
                config.rules.display(),
                config.kafka.source.len(),
                config.kafka.sink.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            report_config_error(e);
            ExitCode::from(2)
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    if args.check {
        return check_config(service_config(&args));
    }
    let config = match service_config(&args) {
        Ok(config) => config,
        Err(e) => {
            report_config_error(e);
            return ExitCode::from(2);
        }
    };
    init_tracing(config.log_json);
    block_on(async move {
        let running = app::start(config).await?;
        running.run_until(app::shutdown_signal()).await?;
        Ok(())
    })
}

/// Runs an async command on a multi-threaded runtime: exit 0, or the error
/// (with its causes) on stderr and exit 1.
fn block_on(command: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("airbag")
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(command));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("airbag: {}", airbag::cli::error_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// `airbag check DIR...`: each folder checked on its own (so
/// `airbag check rules/exchanges/*` checks every pack); a `.toml` file is
/// checked alone; any other file is skipped, saying so. Exit 1 if any
/// check failed.
fn check_all(paths: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for path in paths {
        if path.is_dir() {
            if paths.len() > 1 {
                println!("{}:", path.display());
            }
            failed |= check(path) != ExitCode::SUCCESS;
        } else if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            failed |= check_file(path) != ExitCode::SUCCESS;
        } else if path.is_file() {
            println!("skipped {}: not a rules folder or a .toml file", path.display());
        } else {
            eprintln!("cannot read rules folder {}: no such folder or file", path.display());
            failed = true;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `airbag check FILE.toml`: the file alone, as a folder of one.
fn check_file(path: &Path) -> ExitCode {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    match airbag::service::rulebook::compile_texts(&[(name, text)]) {
        Ok(ruleset) => {
            println!("ok: {} rules in {}", ruleset.len(), path.display());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for mut e in errors {
                e.file = path.display().to_string();
                eprintln!("{e}");
            }
            ExitCode::FAILURE
        }
    }
}

/// `airbag check DIR`: every error to stderr as `file:line:col: message`
/// (the file relative to the current folder), exit 1 if any.
fn check(dir: &Path) -> ExitCode {
    match load_dir(dir) {
        Ok(ruleset) => {
            println!("ok: {} rules in {} files", ruleset.len(), ruleset.sources.len());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for mut e in errors {
                let path = dir.join(&e.file);
                if path.is_file() {
                    e.file = path.display().to_string();
                }
                eprintln!("{e}");
            }
            ExitCode::FAILURE
        }
    }
}
