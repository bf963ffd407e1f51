//! The `partner-events-gateway` binary: flags -> config -> telemetry -> run.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use partner_events_gateway::{
    config::Config,
    emulator::{Emulator, EmulatorConfig, Quota},
    server,
    telemetry::{self, LogFormat},
};

/// mimalloc: the glibc allocator took a fifth of the gateway's CPU under
/// load (per-entry allocations across threads); see README "Performance".
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
    Emulator {
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
    },
    /// Send entries from a file or stdin (JSON lines, the AWS CLI's entry
    /// shape) through StreamPartnerEvents; prints one JSON result line per
    /// input line and exits 1 if any entry failed.
    Send {
        /// The tenant the entries belong to.
        #[arg(long)]
        tenant: String,
        /// JSON-lines file; stdin when absent or `-`.
        #[arg(long)]
        file: Option<PathBuf>,
        /// The gateway's address.
        #[arg(long, default_value = "127.0.0.1:50051", env = "PEG_ADDR")]
        addr: String,
        /// Entries per stream message.
        #[arg(long, default_value_t = 100)]
        batch_size: usize,
        /// Use TLS (implied by an https:// address or any TLS flag).
        #[arg(long)]
        tls: bool,
        /// CA certificate (PEM) that signed the gateway's certificate.
        #[arg(long)]
        ca_cert: Option<PathBuf>,
        /// Client certificate (PEM), for mutual TLS.
        #[arg(long)]
        client_cert: Option<PathBuf>,
        /// Client private key (PEM), for mutual TLS.
        #[arg(long)]
        client_key: Option<PathBuf>,
        /// The name expected in the gateway's certificate.
        #[arg(long)]
        tls_domain: Option<String>,
        /// Bearer token (prefer the environment variable).
        #[arg(long, env = "PEG_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Partner event sources: their states, and onboarding new tenants.
    Sources {
        #[command(subcommand)]
        command: SourcesCommand,
    },
    /// Load harness: the gateway against a direct-SDK baseline, loopback only.
    Bench(partner_events_gateway::bench::BenchArgs),
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let command = cli.command.unwrap_or(Command::Serve(ServeArgs::default()));
    runtime.block_on(async move {
        match command {
            Command::Serve(args) => serve(args).await,
            Command::Emulator {
                listen,
                events_file,
                log_payloads,
                max_call_bytes,
                faults,
                max_recorded_events,
                quota_calls_per_second,
                quota_burst,
            } => {
                let quota = match Quota::new(quota_calls_per_second, quota_burst) {
                    Ok(q) => q,
                    Err(e) => {
                        eprintln!("error: --quota-burst {quota_burst}: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                let mut config = EmulatorConfig {
                    max_call_bytes,
                    log_payloads,
                    events_file,
                    max_recorded_events,
                    quota,
                    ..EmulatorConfig::default()
                };
                if let Some(path) = faults {
                    match partner_events_gateway::emulator::load_fault_file(&path) {
                        Ok(plan) => config = config.with_fault_plan(plan),
                        Err(e) => {
                            eprintln!("error: {e}");
                            return ExitCode::FAILURE;
                        }
                    }
                }
                let listener = match tokio::net::TcpListener::bind(listen).await {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("error: cannot listen on {listen}: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                tracing::info!(addr = %listen, %quota, "EventBridge emulator listening");
                match Emulator::serve(listener, config, shutdown_signal()).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("error: emulator failed: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            Command::Send {
                tenant,
                file,
                addr,
                batch_size,
                tls,
                ca_cert,
                client_cert,
                client_key,
                tls_domain,
                token,
            } => {
                let wants_tls = tls
                    || addr.starts_with("https://")
                    || ca_cert.is_some()
                    || client_cert.is_some()
                    || tls_domain.is_some();
                let tls = wants_tls.then_some(partner_events_gateway::send::ClientTls {
                    ca_cert,
                    client_cert,
                    client_key,
                    domain: tls_domain,
                });
                send(tenant, file, addr, batch_size, tls, token).await
            }
            Command::Sources { command } => sources(command).await,
            Command::Bench(args) => match partner_events_gateway::bench::run(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            },
            Command::CheckConfig { file } => match Config::load(&file) {
                Ok(c) => {
                    println!(
                        "{}: OK ({} tenants, regions: {}; upstream: {:?}{})",
                        file.display(),
                        c.tenants.len(),
                        c.tenants.regions().join(", "),
                        c.upstream.kind,
                        c.upstream
                            .endpoint_url
                            .as_deref()
                            .map(|u| format!(" at {u}"))
                            .unwrap_or_default()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            },
        }
    })
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

/// `--quota-calls-per-second`: 0 (unlimited) or a positive number.
fn parse_quota_calls_per_second(text: &str) -> Result<f64, String> {
    let n: f64 = text.parse().map_err(|e| format!("`{text}`: {e}"))?;
    if !(n >= 0.0 && n.is_finite()) {
        return Err("must be 0 (unlimited) or a positive number".into());
    }
    Ok(n)
}

async fn serve(args: ServeArgs) -> ExitCode {
    let mut config = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
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
            match m.parse() {
                Ok(a) => Some(a),
                Err(e) => {
                    eprintln!("error: --metrics-listen `{m}` is not an address: {e}");
                    return ExitCode::FAILURE;
                }
            }
        };
    }
    match server::run(config, args.config.clone(), shutdown_signal()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            tracing::warn!("some calls did not finish within the grace period");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn send(
    tenant: String,
    file: Option<PathBuf>,
    addr: String,
    batch_size: usize,
    tls: Option<partner_events_gateway::send::ClientTls>,
    token: Option<String>,
) -> ExitCode {
    let input: Box<dyn std::io::BufRead + Send> = match file.as_deref() {
        None => Box::new(std::io::BufReader::new(std::io::stdin())),
        Some(p) if p.as_os_str() == "-" => Box::new(std::io::BufReader::new(std::io::stdin())),
        Some(p) => match std::fs::File::open(p) {
            Ok(f) => Box::new(std::io::BufReader::new(f)),
            Err(e) => {
                eprintln!("error: cannot open {}: {e}", p.display());
                return ExitCode::FAILURE;
            }
        },
    };
    let args = partner_events_gateway::send::SendArgs {
        addr,
        tenant,
        batch_size,
        input,
        tls,
        token,
    };
    let mut out = std::io::stdout();
    match partner_events_gateway::send::run(args, &mut out).await {
        Ok(s) => {
            eprintln!(
                "{} lines: {} accepted, {} failed",
                s.lines, s.accepted, s.failed
            );
            if s.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn load_or_default(path: Option<&std::path::Path>) -> Result<Config, String> {
    match path {
        Some(p) => Config::load(p).map_err(|e| e.to_string()),
        None => Ok(Config::local_default()),
    }
}

async fn sources(command: SourcesCommand) -> ExitCode {
    let mut out = std::io::stdout();
    let result = match command {
        SourcesCommand::List { config, json } => match load_or_default(config.as_deref()) {
            Ok(c) => partner_events_gateway::sources::list(&c, json, &mut out).await,
            Err(e) => Err(e),
        },
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
                Err("--write needs --config FILE".to_string())
            } else {
                match load_or_default(config.as_deref()) {
                    Ok(c) => {
                        let args = partner_events_gateway::sources::CreateArgs {
                            tenant,
                            account,
                            name,
                            region,
                            key,
                            write_config: if write { config } else { None },
                        };
                        partner_events_gateway::sources::create(&c, args, &mut out).await
                    }
                    Err(e) => Err(e),
                }
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
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
