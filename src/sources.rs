//! Partner event source lifecycle: the refresher that keeps every configured
//! source's state (see [`crate::domain::lifecycle`]), and the `sources list`
//! and `sources create` commands for operators onboarding tenants.

use std::{
    collections::BTreeMap,
    io::{IsTerminal, Write},
    path::Path,
    sync::Arc,
    time::Duration,
};

use serde_json::json;
use tokio::sync::watch;

use crate::{
    config::{Config, ConfigError, UpstreamKind},
    domain::{
        lifecycle::{format_epoch, SourceState, SourceStates},
        source::is_valid_source_name,
        tenant::TenantDirectory,
    },
    quota::TokenBucket,
    upstream::{eventbridge::EventBridgeUpstream, SourceAccountInfo, SourceAdmin},
};

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Reads the state of every source in `tenants` once. Regions are read in
/// parallel, each paced at `calls_per_second`. Returns how many reads failed.
pub async fn refresh_all(
    admin: &dyn SourceAdmin,
    tenants: &TenantDirectory,
    states: &SourceStates,
    calls_per_second: f64,
) -> usize {
    let mut by_region: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in tenants.iter() {
        for (_, s) in t.sources() {
            by_region
                .entry(s.region().to_string())
                .or_default()
                .push(s.name().to_string());
        }
    }
    let reads = by_region.into_iter().map(|(region, mut names)| async move {
        names.sort();
        names.dedup();
        let pacer = TokenBucket::new(calls_per_second, 1.0);
        let mut failed = 0;
        for name in names {
            pacer.take().await;
            match admin.list_source_accounts(&region, &name).await {
                Ok(accounts) => {
                    let (state, account) = summarize(accounts.as_deref());
                    let before = states.get(&name).map(|k| k.state);
                    if before.as_ref() != Some(&state) {
                        tracing::info!(source = %name, region = %region, state = state.name(), "partner event source state");
                    }
                    states.set(&name, state, account, now_secs());
                }
                Err(e) => {
                    failed += 1;
                    tracing::warn!(source = %name, region = %region, error = %e, "cannot read the source's state; keeping the last known one");
                    states.set_error(&name, e.to_string());
                }
            }
        }
        failed
    });
    futures::future::join_all(reads).await.into_iter().sum()
}

fn summarize(accounts: Option<&[SourceAccountInfo]>) -> (SourceState, Option<String>) {
    match accounts {
        None => (SourceState::NotFound, None),
        Some(accounts) => {
            let pairs: Vec<(String, Option<i64>)> = accounts
                .iter()
                .map(|a| (a.state.clone(), a.expiration_time))
                .collect();
            (
                SourceState::from_accounts(&pairs),
                accounts.first().map(|a| a.account.clone()),
            )
        }
    }
}

/// Refreshes every `every` until `stop` turns true; the tenant directory is
/// read anew each time (it may have been reloaded).
pub async fn run_refresher(
    admin: Arc<dyn SourceAdmin>,
    tenants: impl Fn() -> Arc<TenantDirectory> + Send,
    states: Arc<SourceStates>,
    every: Duration,
    calls_per_second: f64,
    on_errors: impl Fn(usize) + Send,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(every) => {}
        }
        let failed = refresh_all(admin.as_ref(), &tenants(), &states, calls_per_second).await;
        on_errors(failed);
    }
}

/// The EventBridge a command-line operation talks to: the configured
/// endpoint, or, for the built-in emulator, the one a running gateway serves
/// on `emulator.listen`.
async fn admin_for(config: &Config) -> Result<EventBridgeUpstream, String> {
    let endpoint = match (&config.sdk.endpoint_url, config.sdk.kind) {
        (Some(url), _) => Some(url.clone()),
        (None, UpstreamKind::Emulator) => {
            if config.emulator_listen.port() == 0 {
                return Err("emulator.listen has port 0: give the emulator's address as upstream.endpoint_url".into());
            }
            Some(format!("http://{}", config.emulator_listen))
        }
        (None, UpstreamKind::Aws) => None,
    };
    Ok(EventBridgeUpstream::new(&config.sdk, endpoint.as_deref(), &config.tenants.regions()).await)
}

/// The config a `sources` command works on: the file given, or the local
/// default (the built-in emulator and the demo tenants).
pub fn load_config(path: Option<&Path>) -> Result<Config, ConfigError> {
    match path {
        Some(p) => Config::load(p),
        None => Ok(Config::local_default()),
    }
}

/// `sources list`: every tenant's sources with their state.
pub async fn list(config: &Config, as_json: bool, out: &mut dyn Write) -> Result<(), String> {
    let admin = admin_for(config).await?;
    let mut rows = Vec::new();
    let mut tenants: Vec<_> = config.tenants.iter().collect();
    tenants.sort_by(|a, b| a.id().cmp(b.id()));
    for t in tenants {
        for (key, s) in t.sources() {
            let (state, account, expires, error) =
                match admin.list_source_accounts(s.region(), s.name()).await {
                    Ok(accounts) => {
                        let expires = accounts
                            .as_deref()
                            .and_then(|a| a.iter().find_map(|a| a.expiration_time));
                        let (state, account) = summarize(accounts.as_deref());
                        (state.name().to_string(), account, expires, None)
                    }
                    Err(e) => ("UNKNOWN".to_string(), None, None, Some(e.to_string())),
                };
            rows.push(json!({
                "tenant": t.id(),
                "source_key": key,
                "default": t.source("").map(|d| d.name()) == Some(s.name()),
                "region": s.region(),
                "source": s.name(),
                "account": account,
                "state": state,
                "expires": expires.map(format_epoch),
                "error": error,
            }));
        }
    }
    let w = |e: std::io::Error| format!("cannot write output: {e}");
    if as_json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&rows).expect("json")
        )
        .map_err(w)?;
        return Ok(());
    }
    let cell = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    let headers = [
        "TENANT", "KEY", "REGION", "SOURCE", "ACCOUNT", "STATE", "EXPIRES",
    ];
    let fields = [
        "tenant",
        "source_key",
        "region",
        "source",
        "account",
        "state",
        "expires",
    ];
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, f) in fields.iter().enumerate() {
            widths[i] = widths[i].max(cell(&r[*f]).len());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    writeln!(
        out,
        "{}",
        line(headers.iter().map(|h| h.to_string()).collect())
    )
    .map_err(w)?;
    for r in &rows {
        writeln!(
            out,
            "{}",
            line(fields.iter().map(|f| cell(&r[*f])).collect())
        )
        .map_err(w)?;
        if let Some(e) = r["error"].as_str() {
            writeln!(out, "  ! {e}").map_err(w)?;
        }
    }
    if std::io::stdout().is_terminal() && rows.iter().any(|r| r["state"] != "ACTIVE") {
        writeln!(out, "\nSources that are not ACTIVE lose events: the gateway refuses them (SourceNotActive) until the customer associates the source.").map_err(w)?;
    }
    Ok(())
}

/// What `sources create` was asked.
pub struct CreateArgs {
    pub tenant: String,
    pub account: String,
    /// The event name segment, or a whole `aws.partner/...` name.
    pub name: Option<String>,
    pub region: Option<String>,
    /// The source key in the tenant directory (default: the name's last segment).
    pub key: Option<String>,
    /// Add the entry to this config file.
    pub write_config: Option<std::path::PathBuf>,
}

/// `sources create`: creates the source, prints the customer's steps and the
/// config entry (and adds it to the config file when asked).
pub async fn create(config: &Config, args: CreateArgs, out: &mut dyn Write) -> Result<(), String> {
    if args.account.len() != 12 || !args.account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "--account `{}` is not a 12-digit AWS account id",
            args.account
        ));
    }
    let name = match &args.name {
        Some(n) if n.starts_with("aws.partner/") => n.clone(),
        Some(n) => format!(
            "aws.partner/{}/{}/{n}",
            config.sources.partner_name, args.tenant
        ),
        None => format!(
            "aws.partner/{}/{}/events",
            config.sources.partner_name, args.tenant
        ),
    };
    if !is_valid_source_name(&name) {
        return Err(format!("`{name}` is not a valid partner event source name"));
    }
    let region = args
        .region
        .clone()
        .or_else(|| {
            config
                .tenants
                .get(&args.tenant)
                .and_then(|t| t.source(""))
                .map(|s| s.region().to_string())
        })
        .unwrap_or_else(|| "us-east-1".to_string());
    let key = args
        .key
        .clone()
        .unwrap_or_else(|| name.rsplit('/').next().unwrap_or("events").to_string());
    let admin = admin_for(config).await?;
    let arn = admin
        .create_source(&region, &name, &args.account)
        .await
        .map_err(|e| e.to_string())?;

    let existing_tenant = config.tenants.get(&args.tenant).is_some();
    let mut snippet = String::new();
    if !existing_tenant {
        snippet.push_str(&format!(
            "[tenants.{}]\ndefault_source = \"{key}\"\n\n",
            toml_key(&args.tenant)
        ));
    }
    snippet.push_str(&format!(
        "[tenants.{}.sources.{}]\nname = \"{name}\"\nregion = \"{region}\"\n",
        toml_key(&args.tenant),
        toml_key(&key)
    ));
    let w = |e: std::io::Error| format!("cannot write output: {e}");
    writeln!(
        out,
        "Created partner event source\n  name:    {name}\n  arn:     {arn}\n  account: {}\n  region:  {region}\n  state:   PENDING until the customer associates it\n\n\
         What the customer (AWS account {}) does, in region {region}:\n  \
         1. EventBridge console > Integration > Partner event sources > {name} > Associate with event bus,\n     \
         or: aws events create-event-bus --region {region} --name {name} --event-source-name {name}\n  \
         2. Add rules on that event bus to route the events where they want them.\n\
         Until then the gateway refuses this source's events (SourceNotActive): EventBridge would accept and drop them.\n\
         If the source is not associated before its expiration time, AWS deletes it.\n",
        args.account, args.account
    )
    .map_err(w)?;
    match &args.write_config {
        None => {
            writeln!(out, "Add to the gateway's config:\n\n{snippet}").map_err(w)?;
        }
        Some(path) => {
            add_to_config(path, &snippet)?;
            writeln!(
                out,
                "Added to {}:\n\n{snippet}\nThe gateway reloads it by itself (or on SIGHUP).",
                path.display()
            )
            .map_err(w)?;
        }
    }
    Ok(())
}

/// A TOML table key, quoted when it needs to be.
fn toml_key(k: &str) -> String {
    if !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        k.to_string()
    } else {
        format!("{k:?}")
    }
}

/// Appends `snippet` to the config file, keeping it only if the result still
/// loads.
fn add_to_config(path: &Path, snippet: &str) -> Result<(), String> {
    let before = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let after = format!("{}\n{snippet}", before.trim_end());
    Config::from_toml(&after, &path.display().to_string()).map_err(|e| {
        format!(
            "not adding to {}: the result would not load: {e}",
            path.display()
        )
    })?;
    std::fs::write(path, after).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
