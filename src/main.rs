//! The `partner-events-gateway` binary: flags -> config -> telemetry -> run.
//!
//! Each command is a function returning `Result<_, CliError>`; `main` turns
//! the result into an exit code in one place: 0 when the command did what it
//! was asked, 1 when it failed (or `send` had entries that failed, or
//! `dead-letters` did not find what it was asked for), 2 when `send` could
//! not stream to the gateway or `dead-letters` could not do its call.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use partner_events_gateway::{
    bench,
    config::{Config, ConfigError},
    dead_letters,
    emulator::{self, Emulator, EmulatorConfig, FaultFileError, Quota, QuotaError},
    send, server, sources,
    telemetry::{self, LogFormat},
};

/// mimalloc: the glibc allocator took a fifth of the gateway's CPU under
/// load (per-entry allocations across threads); see docs/performance.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "gRPC gateway for AWS EventBridge PutPartnerEvents")]
struct Cli {
    /// Log line format (the level comes from RUST_LOG, default info).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "PEG_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default). With no config file: 127.0.0.1:50051,
    /// the built-in emulator, and the `demo` and `demo-pending` tenants.
    Serve(ServeArgs),
    /// Run only the EventBridge emulator (AWS JSON 1.1 over HTTP), for the
    /// AWS CLI or SDKs with --endpoint-url.
    Emulator(EmulatorArgs),
    /// Send entries from a file or stdin (JSON lines, the AWS CLI's entry
    /// shape) through StreamPartnerEvents; prints one JSON result line per
    /// input line and exits 1 if any entry failed.
    Send(SendArgs),
    /// The durable queue's dead letters on a gateway (the DeadLetters
    /// service): list, show, replay, purge. Exits 1 when a receipt asked
    /// for is not a dead letter there, 2 on usage or connection errors.
    DeadLetters(dead_letters::DeadLettersArgs),
    /// Partner event sources: their states, and onboarding new tenants.
    Sources {
        #[command(subcommand)]
        command: SourcesCommand,
    },
    /// Load harness: the gateway against a direct-SDK baseline, loopback only.
    Bench(bench::BenchArgs),
    /// Validate a config file and explain what is wrong with it.
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum SourcesCommand {
    /// Every tenant's sources: region, customer account, state, expiry.
    List {
        /// TOML config file (the tenants and the EventBridge to ask).
        #[arg(long, short, env = "PEG_CONFIG")]
        config: Option<PathBuf>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create a partner event source for a customer account (PENDING until
    /// the customer associates it); prints the customer's steps and the
    /// config entry to add.
    Create {
        #[arg(long, short, env = "PEG_CONFIG")]
        config: Option<PathBuf>,
        /// The tenant the source is for.
        #[arg(long)]
        tenant: String,
        /// The customer's 12-digit AWS account id.
        #[arg(long)]
        account: String,
        /// The event name (last segment), or a whole aws.partner/... name.
        /// Default: aws.partner/<sources.partner_name>/<tenant>/events.
        #[arg(long)]
        name: Option<String>,
        /// The AWS region; default: the tenant's default source's region.
        #[arg(long)]
        region: Option<String>,
        /// The key of the source in the tenant directory.
        #[arg(long)]
        key: Option<String>,
        /// Add the entry to the config file given with --config.
        #[arg(long)]
        write: bool,
    },
}

#[derive(clap::Args, Default)]
struct ServeArgs {
    /// TOML config file (see deploy/gateway.example.toml).
    #[arg(long, short, env = "PEG_CONFIG")]
    config: Option<PathBuf>,
    /// Overrides `server.listen`.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Overrides `metrics.listen` (an empty value turns metrics off).
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Overrides `emulator.listen` (the built-in emulator's address).
    #[arg(long)]
    emulator_listen: Option<SocketAddr>,
}

#[derive(clap::Args)]
struct EmulatorArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4010")]
    listen: SocketAddr,
    /// Append every accepted event to this JSON-lines file.
    #[arg(long)]
    events_file: Option<PathBuf>,
    /// Log event payloads (off by default: payloads are customer data).
    #[arg(long)]
    log_payloads: bool,
    /// Size limit of one call by the AWS formula, in bytes.
    #[arg(long, default_value_t = partner_events_gateway::domain::limits::DEFAULT_MAX_CALL_BYTES)]
    max_call_bytes: usize,
    /// Inject EventBridge's failures from a fault plan (TOML or JSON:
    /// a seed and rules; see the README's "Failure semantics").
    #[arg(long)]
    faults: Option<PathBuf>,
    /// How many of the last accepted events (and received entries, and
    /// calls) to keep in memory; 0 keeps none.
    #[arg(
        long,
        default_value_t = partner_events_gateway::emulator::DEFAULT_MAX_RECORDED_EVENTS,
        value_parser = parse_max_recorded_events
    )]
    max_recorded_events: usize,
    /// EventBridge's PutPartnerEvents quota per region: calls per
    /// second before ThrottlingException (HTTP 400); 0 is unlimited.
    #[arg(
        long,
        default_value_t = partner_events_gateway::emulator::DEFAULT_QUOTA_CALLS_PER_SECOND,
        value_parser = parse_quota_calls_per_second
    )]
    quota_calls_per_second: f64,
    /// Calls per region that may come at once above that rate; at
    /// least 1 unless the rate is 0.
    #[arg(long, default_value_t = partner_events_gateway::emulator::DEFAULT_QUOTA_BURST)]
    quota_burst: u32,
}

/// `--quota-calls-per-second`: 0 (unlimited) or a positive number.
fn parse_quota_calls_per_second(text: &str) -> Result<f64, String> {
    let n: f64 = text.parse().map_err(|e| format!("`{text}`: {e}"))?;
    if !(n >= 0.0 && n.is_finite()) {
        return Err("must be 0 (unlimited) or a positive number".into());
    }
    Ok(n)
}

/// `--max-recorded-events`: a count up to the same ceiling as the config's
/// `emulator.max_recorded_events`.
fn parse_max_recorded_events(text: &str) -> Result<usize, String> {
    use partner_events_gateway::emulator::MAX_RECORDED_EVENTS_CEILING;
    let n: usize = text.parse().map_err(|e| format!("`{text}`: {e}"))?;
    if n > MAX_RECORDED_EVENTS_CEILING {
        return Err(format!(
            "must be 0 (keep none) to {MAX_RECORDED_EVENTS_CEILING}"
        ));
    }
    Ok(n)
}

#[derive(clap::Args)]
struct SendArgs {
    /// The tenant the entries belong to.
    #[arg(long)]
    tenant: String,
    /// JSON-lines file; stdin when absent or `-`.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Entries per stream message.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// DURABLE delivery: the gateway answers once the entries are on its
    /// disk, and each accepted line carries a `receipt_id`.
    #[arg(long)]
    durable: bool,
    #[command(flatten)]
    connect: send::ConnectArgs,
}

/// The command failed (or `send` had entries that failed).
const EXIT_FAILED: u8 = 1;
/// `send` could not stream to the gateway.
const EXIT_UNREACHABLE: u8 = 2;

/// Why a command failed; printed as `error: <this>`.
#[derive(Debug, thiserror::Error)]
enum CliError {
    /// A config file that cannot be read or does not hold.
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("--metrics-listen `{value}` is not an address: {source}")]
    MetricsListen {
        value: String,
        source: std::net::AddrParseError,
    },
    /// The gateway could not start or failed while serving.
    #[error(transparent)]
    Serve(#[from] server::ServeError),
    #[error(transparent)]
    FaultPlan(#[from] FaultFileError),
    #[error("--quota-burst {burst}: {source}")]
    Quota { burst: u32, source: QuotaError },
    #[error("cannot listen on {addr}: {source}")]
    EmulatorListen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("emulator failed: {0}")]
    Emulator(std::io::Error),
    #[error("cannot open {}: {source}", path.display())]
    SendInput {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `send` could not stream to the gateway (connection, TLS, the stream).
    #[error("{0}")]
    SendStream(String),
    #[error("--write needs --config FILE")]
    WriteNeedsConfig,
    /// EventBridge's control plane, or writing the output.
    #[error("{0}")]
    Sources(String),
    #[error("{0}")]
    Bench(String),
    #[error(transparent)]
    DeadLetters(#[from] dead_letters::DeadLettersError),
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::SendStream(_) => EXIT_UNREACHABLE,
            Self::DeadLetters(e) => e.exit_code(),
            _ => EXIT_FAILED,
        }
    }
}

/// How a command that did not fail ended.
enum Done {
    /// Everything it was asked to do.
    Complete,
    /// `send` streamed every line, and some entries failed.
    EntriesFailed,
    /// `dead-letters` was asked for receipts that are not dead letters.
    NotFound,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let command = cli.command.unwrap_or(Command::Serve(ServeArgs::default()));
    match runtime.block_on(run(command)) {
        Ok(Done::Complete) => ExitCode::SUCCESS,
        Ok(Done::EntriesFailed | Done::NotFound) => ExitCode::from(EXIT_FAILED),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run(command: Command) -> Result<Done, CliError> {
    match command {
        Command::Serve(args) => cmd_serve(args).await?,
        Command::Emulator(args) => cmd_emulator(args).await?,
        Command::Send(args) => {
            let summary = cmd_send(args).await?;
            eprintln!("{summary}");
            if summary.failed > 0 {
                return Ok(Done::EntriesFailed);
            }
        }
        Command::DeadLetters(args) => {
            if dead_letters::run(args, &mut std::io::stdout()).await?
                == dead_letters::Found::SomeMissing
            {
                return Ok(Done::NotFound);
            }
        }
        Command::Sources { command } => cmd_sources(command).await?,
        Command::Bench(args) => bench::run(args).await.map_err(CliError::Bench)?,
        Command::CheckConfig { file } => cmd_check_config(&file)?,
    }
    Ok(Done::Complete)
}

/// `serve`: the gateway, until SIGTERM or SIGINT.
async fn cmd_serve(args: ServeArgs) -> Result<(), CliError> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => {
            tracing::info!(
                "no config file given: local defaults (built-in emulator, tenants `demo` and `demo-pending`)"
            );
            Config::local_default()
        }
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(e) = args.emulator_listen {
        config.emulator_listen = e;
    }
    if let Some(m) = args.metrics_listen {
        config.metrics_listen = if m.is_empty() {
            None
        } else {
            Some(m.parse().map_err(|source| CliError::MetricsListen {
                value: m.clone(),
                source,
            })?)
        };
    }
    if !server::run(config, args.config, shutdown_signal()).await? {
        tracing::warn!("some calls did not finish within the grace period");
    }
    Ok(())
}

/// `emulator`: the built-in EventBridge alone, until SIGTERM or SIGINT.
async fn cmd_emulator(args: EmulatorArgs) -> Result<(), CliError> {
    let quota = Quota::new(args.quota_calls_per_second, args.quota_burst).map_err(|source| {
        CliError::Quota {
            burst: args.quota_burst,
            source,
        }
    })?;
    let mut config = EmulatorConfig {
        quota,
        max_call_bytes: args.max_call_bytes,
        log_payloads: args.log_payloads,
        events_file: args.events_file,
        max_recorded_events: args.max_recorded_events,
        ..EmulatorConfig::default()
    };
    if let Some(path) = args.faults {
        config = config.with_fault_plan(emulator::load_fault_file(&path)?);
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| CliError::EmulatorListen {
            addr: args.listen,
            source,
        })?;
    tracing::info!(addr = %args.listen, %quota, "EventBridge emulator listening");
    Emulator::serve(listener, config, shutdown_signal())
        .await
        .map_err(CliError::Emulator)
}

/// `send`: streams the input lines; the summary says how many entries failed.
async fn cmd_send(args: SendArgs) -> Result<send::Summary, CliError> {
    let input = send::open_input(args.file.as_deref()).map_err(|source| CliError::SendInput {
        path: args.file.clone().unwrap_or_default(),
        source,
    })?;
    let args = send::SendArgs {
        tls: args.connect.client_tls(),
        addr: args.connect.addr,
        tenant: args.tenant,
        batch_size: args.batch_size,
        input,
        token: args.connect.token,
        durable: args.durable,
    };
    send::run(args, &mut std::io::stdout())
        .await
        .map_err(CliError::SendStream)
}

/// `sources list` and `sources create`.
async fn cmd_sources(command: SourcesCommand) -> Result<(), CliError> {
    let mut out = std::io::stdout();
    match command {
        SourcesCommand::List { config, json } => {
            let config = sources::load_config(config.as_deref())?;
            sources::list(&config, json, &mut out).await
        }
        SourcesCommand::Create {
            config,
            tenant,
            account,
            name,
            region,
            key,
            write,
        } => {
            if write && config.is_none() {
                return Err(CliError::WriteNeedsConfig);
            }
            let loaded = sources::load_config(config.as_deref())?;
            let args = sources::CreateArgs {
                tenant,
                account,
                name,
                region,
                key,
                write_config: if write { config } else { None },
            };
            sources::create(&loaded, args, &mut out).await
        }
    }
    .map_err(CliError::Sources)
}

/// `check-config`: loads and validates the file, and summarizes it.
fn cmd_check_config(file: &std::path::Path) -> Result<(), CliError> {
    let c = Config::load(file)?;
    println!(
        "{}: OK ({} tenants, regions: {}; upstream: {:?}{})",
        file.display(),
        c.tenants.len(),
        c.tenants.regions().join(", "),
        c.sdk.kind,
        c.sdk
            .endpoint_url
            .as_deref()
            .map(|u| format!(" at {u}"))
            .unwrap_or_default()
    );
    Ok(())
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
