//! The `airbag` binary: `serve` runs the service, `check` validates a
//! rules folder for CI, `token hash` prints the hash a bearer token is
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
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// The rules folder.
    dir: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Check(args) => check(&args.dir),
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
    config.validate()?;
    Ok(config)
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

fn serve(args: ServeArgs) -> ExitCode {
    let config = match service_config(&args) {
        Ok(config) => config,
        Err(airbag::config::ConfigError::Invalid(problems)) => {
            eprintln!("airbag: invalid configuration:");
            for p in problems {
                eprintln!("  {p}");
            }
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("airbag: {e}");
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
