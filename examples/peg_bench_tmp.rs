//! TEMPORARY (bench author's test runner; deleted after use).
use clap::Parser;
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: partner_events_gateway::bench::BenchArgs,
}
#[tokio::main]
async fn main() {
    partner_events_gateway::telemetry::init(partner_events_gateway::telemetry::LogFormat::Text);
    if let Err(e) = partner_events_gateway::bench::run(Cli::parse().args).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
