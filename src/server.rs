//! Assembles and runs the gateway: the upstream (starting the built-in
//! emulator when configured), the pipeline, the `PartnerEvents` service,
//! health, and reflection; then serves until told to stop, and drains.

use std::{future::Future, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use futures::{FutureExt, TryFutureExt};
use tokio::{
    net::TcpListener,
    sync::{oneshot, watch},
    task::JoinHandle,
};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::{server::HealthReporter, ServingStatus};

use crate::{
    api::{
        admin::DeadLettersService,
        service::{Core, CoreSettings, Gauges, PartnerEventsService, Stores},
    },
    cluster::Cluster,
    config::EMULATOR_ACCOUNT,
    config::{AuthMode, Config, TlsSection, UpstreamKind},
    connections::{CallTrackingLayer, Incoming, ListenerKind},
    durable::Durable,
    emulator::{
        Emulator, EmulatorConfig, EmulatorHandle, SeedSource, SourceState as EmulatorSourceState,
    },
    idempotency::Idempotency,
    metrics::Metrics,
    pipeline::Pipeline,
    proto::{
        self, dead_letters_server::DeadLettersServer, partner_events_server::PartnerEventsServer,
    },
    sources::{refresh_all, run_refresher},
    traces::Traces,
    upstream::eventbridge::EventBridgeUpstream,
    upstream::SourceAdmin,
};

/// Streams one connection may make the server reset with an error before
/// it is closed: hyper's default, which tonic would otherwise lift.
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// The name health checks use for the gateway's own service.
pub const SERVICE_NAME: &str = "partnerevents.v1.PartnerEvents";

/// The health service name of cluster mode's link to Redis.
pub const CLUSTER_HEALTH_NAME: &str = "cluster";

/// The health service name of a region's EventBridge.
pub fn region_health_name(region: &str) -> String {
    format!("eventbridge.{region}")
}

/// Why the gateway could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The config refuses the listener (protected mode).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the built-in emulator on {addr}: {source}")]
    Emulator {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS: cannot read {path}: {source}")]
    TlsFile {
        path: String,
        source: std::io::Error,
    },
    #[error("cluster: cannot use the Redis at {0}")]
    Cluster(String),
    #[error("durable queue: {0}")]
    Durable(#[from] crate::durable::StoreError),
    #[error("traces: {0}")]
    Traces(String),
    #[error("reflection set-up failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A gateway serving in the background (what `main` and the tests hold).
pub struct RunningGateway {
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    side_tasks: Vec<JoinHandle<()>>,
    emulator: Option<EmulatorHandle>,
    core: Arc<Core>,
    shutdown: watch::Sender<bool>,
    health: HealthReporter,
    grace: Duration,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
    /// Stops durable delivery, once the rest has stopped (or drained).
    durable_stop: watch::Sender<bool>,
    durable_task: JoinHandle<()>,
}

impl RunningGateway {
    /// Where the gRPC server listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where `/metrics` is served, when it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Puts the tenant directory and the authorization table of `config`
    /// in force (other settings need a restart). Open streams go on.
    pub fn reload(&self, config: &Config) {
        self.reloader().reload(config);
    }

    /// A handle that reloads this gateway, for a config watcher.
    pub fn reloader(&self) -> Reloader {
        Reloader(self.core.clone())
    }

    /// The in-process emulator, when the gateway started one.
    pub fn emulator(&self) -> Option<&EmulatorHandle> {
        self.emulator.as_ref()
    }

    /// Entries and streams in flight right now.
    pub fn gauges(&self) -> Gauges {
        self.core.gauges()
    }

    /// The durable queue.
    pub fn durable(&self) -> Arc<Durable> {
        self.core.durable.clone()
    }

    /// Stops accepting calls, tells open streams to finish (they answer
    /// every batch already read, then end with UNAVAILABLE), waits for
    /// in-flight calls up to the grace period, goes on delivering the
    /// durable queue for what is left of it (what is still queued then
    /// stays on disk for the next start), and stops the in-process
    /// emulator. Returns whether everything finished within the grace period.
    pub async fn shutdown(mut self) -> bool {
        let started = tokio::time::Instant::now();
        for name in ["", SERVICE_NAME] {
            self.health
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        let _ = self.shutdown.send(true);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let clean = match tokio::time::timeout(self.grace, &mut self.task).await {
            Ok(Ok(Ok(()))) => true,
            Ok(Ok(Err(e))) => {
                tracing::error!(error = %e, "gRPC server ended with an error");
                false
            }
            Ok(Err(join)) => {
                tracing::error!(error = %join, "gRPC server task failed");
                false
            }
            Err(_) => {
                tracing::warn!(
                    grace_ms = self.grace.as_millis() as u64,
                    "grace period over; abandoning calls still in flight"
                );
                self.task.abort();
                false
            }
        };
        let durable = self.core.durable.clone();
        let left = self.grace.saturating_sub(started.elapsed());
        let drained = durable.drain(left).await;
        if !drained {
            tracing::warn!(
                queued = durable.queued(),
                "shutting down with DURABLE entries still queued: they stay on disk and are delivered after the next start"
            );
        }
        let _ = self.durable_stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut self.durable_task).await;
        for t in self.side_tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
        }
        if let Some(e) = &self.emulator {
            e.shutdown();
        }
        // The last spans go out (bounded by the exporter's timeout).
        let traces = self.core.traces.clone();
        if traces.enabled() {
            let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
        }
        // Whoever still holds the queue (a connection task ending, the
        // writer thread) lets go of it shortly: a gateway started on the
        // same path once this returns finds the file free.
        let mut released = durable.released();
        drop(durable);
        drop(self);
        if tokio::time::timeout(Duration::from_secs(2), released.changed())
            .await
            .is_err()
        {
            tracing::warn!("the durable queue file is still open 2 s after shutdown");
        }
        clean
    }
}

/// Builds everything from `config` and serves on `listener` in the background.
pub async fn start(config: Config, listener: TcpListener) -> Result<RunningGateway, ServeError> {
    // Both of rustls' crypto providers are compiled in (the AWS SDK brings
    // aws-lc, tonic's TLS ring): name one for the process. An error only
    // means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let local_addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: config.listen,
        source,
    })?;
    // The address really listened on, whatever the file said.
    config.check_listener(local_addr)?;

    let mut emulator = None;
    let endpoint_url = match (&config.sdk.kind, &config.sdk.endpoint_url) {
        (_, Some(url)) => Some(url.clone()),
        (UpstreamKind::Emulator, None) => {
            // The emulator stands in for AWS, where the operator created
            // every configured source: those it is not told of are ACTIVE.
            let mut sources = config.emulator.sources.clone();
            for t in config.tenants.iter() {
                for (_, s) in t.sources() {
                    if !sources.iter().any(|seed| seed.name == s.name()) {
                        sources.push(SeedSource::new(
                            s.name(),
                            EMULATOR_ACCOUNT,
                            EmulatorSourceState::Active,
                        ));
                    }
                }
            }
            let handle = Emulator::spawn(
                config.emulator_listen,
                EmulatorConfig {
                    max_call_bytes: config.pipeline.max_call_bytes,
                    log_payloads: config.emulator.log_payloads,
                    events_file: config.emulator.events_file.clone().map(Into::into),
                    sources,
                    max_recorded_events: config.emulator.max_recorded_events,
                    quota: config.emulator_quota,
                    ..EmulatorConfig::default()
                },
            )
            .await
            .map_err(|source| ServeError::Emulator {
                addr: config.emulator_listen,
                source,
            })?;
            let url = handle.endpoint_url();
            tracing::info!(
                endpoint = %url,
                quota = %config.emulator_quota,
                "built-in EventBridge emulator started"
            );
            emulator = Some(handle);
            Some(url)
        }
        (UpstreamKind::Aws, None) => None,
    };

    let regions = config.tenants.regions();
    let upstream =
        Arc::new(EventBridgeUpstream::new(&config.sdk, endpoint_url.as_deref(), &regions).await);
    let metrics = Arc::new(Metrics::new(config.metrics_tenant_label));
    let cluster = match &config.cluster {
        Some(settings) => Some(
            Cluster::start(settings.clone(), metrics.clone())
                .map_err(|e| ServeError::Cluster(format!("`{}`: {e}", settings.url_for_logs)))?,
        ),
        None => None,
    };
    let pipeline = Pipeline::clustered(
        upstream.clone(),
        metrics.clone(),
        config.pipeline.clone(),
        cluster.clone(),
    );
    let (durable, durable_keys) = open_durable(&config, metrics.clone()).await?;
    let keys = Arc::new(Idempotency::new(
        config.idempotency.clone(),
        cluster.clone(),
        metrics.clone(),
    ));
    let loaded_keys = keys.load(
        durable_keys
            .into_iter()
            .map(|k| (k.hash, k.fingerprint, k.receipt, k.expires_ms)),
    );
    tracing::info!(
        window_ms = config.idempotency.window.as_millis() as u64,
        max_keys = config.idempotency.max_keys,
        durable_keys = loaded_keys,
        store = if cluster.is_some() { "redis" } else { "memory" },
        "idempotency keys ready"
    );
    let traces = Arc::new(Traces::start(&config.tracing).map_err(ServeError::Traces)?);
    if traces.enabled() {
        tracing::info!(
            endpoint = %config.tracing.otlp_endpoint,
            sample_ratio = config.tracing.sample_ratio,
            "traces exported over OTLP"
        );
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let core = Arc::new(Core::new(
        config.tenants.clone(),
        config.auth.clone(),
        pipeline,
        Stores {
            durable: durable.clone(),
            keys,
            traces: traces.clone(),
        },
        metrics.clone(),
        CoreSettings {
            max_entries_per_request: config.max_entries_per_request,
            max_call_bytes: config.pipeline.max_call_bytes,
            default_deadline: config.default_deadline,
            max_in_flight: config.max_in_flight_entries,
            max_in_flight_per_tenant: config.max_in_flight_per_tenant,
            stream_window_entries: config.stream_window_entries,
            quotas: config.quotas.clone(),
            check_source_state: config.sources.check_state,
            on_inactive: config.sources.on_inactive,
            default_delivery: config.durable.default_delivery,
        },
        shutdown_rx.clone(),
    ));
    let (durable_stop, durable_stop_rx) = watch::channel(false);
    let directory_core = core.clone();
    let durable_task = tokio::spawn(durable.clone().deliver(
        core.pipeline.clone(),
        Arc::new(move || directory_core.tenants()),
        durable_stop_rx,
    ));
    if config.sources.check_state {
        // Learn every source's state before serving, so the first calls are
        // protected too; bounded, since EventBridge may be slow or refuse.
        let admin: Arc<dyn SourceAdmin> = upstream.clone();
        let first = tokio::time::timeout(
            Duration::from_secs(10),
            refresh_all(
                admin.as_ref(),
                &config.tenants,
                &core.source_states,
                config.sources.calls_per_second,
            ),
        )
        .await;
        match first {
            // Counted like the periodic reads' failures.
            Ok(failed) => {
                metrics.source_refresh_errors.inc_by(failed as u64);
            }
            Err(_) => tracing::warn!(
                "reading source states took over 10 s; serving, and reading on in the background"
            ),
        }
        let tenants_core = core.clone();
        let errors = metrics.clone();
        tokio::spawn(run_refresher(
            admin,
            move || tenants_core.tenants(),
            core.source_states.clone(),
            config.sources.refresh,
            config.sources.calls_per_second,
            move |failed| {
                errors.source_refresh_errors.inc_by(failed as u64);
            },
            shutdown_rx.clone(),
        ));
    }
    if config.auth.mode == AuthMode::Off {
        tracing::warn!(
            "SECURITY OFF: [auth] mode = \"off\": any client that reaches this port may write \
             events for every tenant. Set [auth] mode = \"required\" with TLS in production."
        );
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(SERVICE_NAME, ServingStatus::Serving)
        .await;
    // Each region's EventBridge has a health entry of its own,
    // `eventbridge.<region>`, NOT_SERVING while its breaker is open. The
    // gateway's own entries stay SERVING: the other regions still work.
    for region in &regions {
        health
            .set_service_status(region_health_name(region), ServingStatus::Serving)
            .await;
    }
    // Cluster mode has an entry of its own, `cluster`: NOT_SERVING while
    // the replica paces alone because Redis is out of reach. The gateway's
    // own entries stay SERVING: it still works, at its fallback share.
    if let Some(cluster) = &cluster {
        let mut joined = cluster.subscribe();
        let status = |joined: bool| {
            if joined {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            }
        };
        let now = status(*joined.borrow_and_update());
        health.set_service_status(CLUSTER_HEALTH_NAME, now).await;
        // One task follows the state, so the entry always ends on the
        // latest one.
        let health = health.clone();
        tokio::spawn(async move {
            while joined.changed().await.is_ok() {
                let now = status(*joined.borrow_and_update());
                health.set_service_status(CLUSTER_HEALTH_NAME, now).await;
            }
        });
    }
    {
        let health = health.clone();
        let handle = tokio::runtime::Handle::current();
        core.pipeline
            .set_breaker_hook(Arc::new(move |region: &str, open: bool| {
                let health = health.clone();
                let name = region_health_name(region);
                handle.spawn(async move {
                    let status = if open {
                        ServingStatus::NotServing
                    } else {
                        ServingStatus::Serving
                    };
                    health.set_service_status(name, status).await;
                });
            }));
    }

    // Both reflection versions: grpcurl before 1.8.8 speaks only v1alpha.
    // The health and google.rpc descriptors are registered so that grpcurl
    // can describe the health service and decode error details.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let service = PartnerEventsServer::new(PartnerEventsService::new(core.clone()))
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes);

    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let mut builder = Server::builder()
        // Per connection: a client cannot open unbounded concurrent calls.
        .max_concurrent_streams(config.max_concurrent_streams)
        .http2_keepalive_interval(config.keepalive_interval)
        .http2_keepalive_timeout(Some(config.keepalive_timeout))
        // Left unset, tonic hands hyper `None`, which lifts hyper's bound on
        // streams a connection makes the server reset (the "MadeYouReset"
        // variant of rapid reset): keep hyper's own default.
        .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS));
    if let Some(age) = config.max_connection_age {
        // Clients reconnect now and then, which spreads them over replicas
        // behind an L4 balancer that would otherwise pin each connection.
        builder = builder
            .max_connection_age(age)
            .max_connection_age_grace(config.shutdown_grace);
    }
    if let Some(tls) = &config.tls {
        builder = builder.tls_config(load_tls(tls)?)?;
    }
    let mut side_tasks = Vec::new();
    if let Some(addr) = config.health_listen {
        // Kubernetes' gRPC probes cannot speak TLS: health alone, plaintext.
        let (listener, local) = bind(addr).await?;
        tracing::info!(addr = %local, "plaintext health port serving");
        let mut stop = shutdown_rx.clone();
        let incoming = Incoming::new(
            listener,
            config.connections.clone(),
            false,
            &metrics,
            ListenerKind::Health,
        );
        side_tasks.push(tokio::spawn(
            Server::builder()
                .http2_keepalive_interval(config.keepalive_interval)
                .http2_keepalive_timeout(Some(config.keepalive_timeout))
                // Knows which connections have a call open (idle timeout).
                .layer(CallTrackingLayer)
                .add_service(health_service.clone())
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .map_err(|e| tracing::error!(error = %e, "health port failed"))
                .map(|_| ()),
        ));
    }
    let mut metrics_addr = None;
    if let Some(addr) = config.metrics_listen {
        let (listener, local) = bind(addr).await?;
        metrics_addr = Some(local);
        tracing::info!(addr = %local, "metrics serving on /metrics");
        let gauges_core = core.clone();
        let refresh: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            let g = gauges_core.gauges();
            gauges_core
                .metrics
                .in_flight_entries
                .set(g.in_flight_entries as i64);
            gauges_core.metrics.open_streams.set(g.open_streams as i64);
            let counts = gauges_core.source_states.counts();
            for state in ["ACTIVE", "PENDING", "DELETED", "NOT_FOUND"] {
                gauges_core
                    .metrics
                    .sources
                    .get_or_create(&crate::metrics::StateLabels { state })
                    .set(counts.get(state).copied().unwrap_or(0) as i64);
            }
        });
        let mut stop = shutdown_rx.clone();
        side_tasks.push(tokio::spawn(
            crate::metrics::serve(listener, metrics.clone(), refresh, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .map(|r| {
                if let Err(e) = r {
                    tracing::error!(error = %e, "metrics port failed");
                }
            }),
        ));
    }
    let incoming = Incoming::new(
        listener,
        config.connections.clone(),
        config.tls.is_some(),
        &metrics,
        ListenerKind::Grpc,
    );
    let router = builder
        // gRPC metrics for every call of every service (health, reflection too), in one place.
        .layer(crate::api::metrics_layer::GrpcMetricsLayer::gateway(
            metrics.clone(),
        ))
        // Knows which connections have a call open (idle timeout).
        .layer(CallTrackingLayer)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(service)
        .add_service(DeadLettersServer::new(DeadLettersService::new(
            core.clone(),
        )));
    let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
        let _ = stop_rx.await;
    }));
    tracing::info!(addr = %local_addr, tenants = config.tenants.len(), "partner-events-gateway serving");
    Ok(RunningGateway {
        local_addr,
        metrics_addr,
        side_tasks,
        emulator,
        core,
        shutdown: shutdown_tx,
        health,
        grace: config.shutdown_grace,
        stop: Some(stop_tx),
        task,
        durable_stop,
        durable_task,
    })
}

/// Opens the durable queue (reading it back) and says at start where it is
/// and what it holds, and what was done about a damaged file.
/// Opens the durable queue; also returns the idempotency keys of its
/// entries.
async fn open_durable(
    config: &Config,
    metrics: Arc<Metrics>,
) -> Result<(Arc<Durable>, Vec<crate::durable::StoredKey>), ServeError> {
    let settings = config.durable.clone();
    let started = std::time::Instant::now();
    let (durable, mut opened) =
        tokio::task::spawn_blocking(move || Durable::open(settings, metrics))
            .await
            .map_err(|_| crate::durable::StoreError::Closed)??;
    let r = &opened.recovery;
    if let Some(aside) = &r.damaged_file {
        tracing::error!(
            damaged = %aside.display(),
            damage = r.damage.as_deref().unwrap_or(""),
            salvaged = r.salvaged,
            held = r.expected.map_or_else(|| "unknown".to_string(), |n| n.to_string()),
            "the durable queue file did not open: it was moved aside, and what could be read of it was copied into a new one"
        );
    }
    if r.repaired {
        tracing::warn!("the durable queue file was not closed cleanly (or was damaged); redb repaired it to its last intact commit");
    }
    if opened.unreadable > 0 {
        tracing::error!(
            records = opened.unreadable,
            "durable queue records that do not decode were kept aside (the `unreadable` table) and will not be delivered"
        );
    }
    tracing::info!(
        path = %opened.path.display(),
        queued = opened.queued,
        dead_letters = opened.dead,
        file_bytes = opened.file_bytes,
        open_ms = started.elapsed().as_millis() as u64,
        default_delivery = ?config.durable.default_delivery,
        "durable queue open"
    );
    Ok((durable, std::mem::take(&mut opened.keys)))
}

/// Binds `addr`; returns the listener and the address it got (port 0 picks one).
async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    Ok((listener, local))
}

fn load_tls(tls: &TlsSection) -> Result<ServerTlsConfig, ServeError> {
    let read = |path: &str| {
        std::fs::read(path).map_err(|source| ServeError::TlsFile {
            path: path.to_string(),
            source,
        })
    };
    let mut cfg = ServerTlsConfig::new().identity(Identity::from_pem(
        read(&tls.cert_file)?,
        read(&tls.key_file)?,
    ));
    if let Some(ca) = &tls.client_ca_file {
        cfg = cfg
            .client_ca_root(Certificate::from_pem(read(ca)?))
            .client_auth_optional(!tls.require_client_cert);
    }
    Ok(cfg)
}

/// Reloads a running gateway's tenants and authorization table.
#[derive(Clone)]
pub struct Reloader(Arc<Core>);

impl Reloader {
    pub fn reload(&self, config: &Config) {
        self.0.reload(config.tenants.clone(), config.auth.clone());
        tracing::info!(
            tenants = config.tenants.len(),
            "tenant directory and authorization table reloaded"
        );
    }
}

/// Reloads from `path` on SIGHUP and whenever the file's content changes
/// (checked every `poll`). A file that does not load is refused with a log
/// line naming the problem, and the config in force stays. Each reload of
/// the file is counted in `partner_events_config_reloads_total` by result.
/// The file as it is when this is called is taken as the one in force (not
/// as it is when the future is first polled: a change made in between is a
/// change). Runs until `stop` turns true.
pub fn watch_config(
    path: PathBuf,
    poll: Option<Duration>,
    reloader: Reloader,
    mut stop: watch::Receiver<bool>,
) -> impl Future<Output = ()> {
    let read = |p: &PathBuf| std::fs::read(p).ok();
    let mut last = read(&path);
    async move {
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<()>();
            let tick = async {
                match poll {
                    Some(p) => tokio::time::sleep(p).await,
                    None => std::future::pending::<()>().await,
                }
            };
            let forced = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = hangup => true,
                _ = tick => false,
            };
            let now = read(&path);
            if !forced && now == last {
                continue;
            }
            last = now;
            match Config::load(&path) {
                Ok(config) => {
                    reloader.reload(&config);
                    reloader.0.metrics.config_reload("ok");
                }
                Err(e) => {
                    tracing::error!(error = %e, "config reload refused; the config in force stays");
                    reloader.0.metrics.config_reload("refused");
                }
            }
        }
    }
}

/// Binds `config.listen`, serves until `shutdown` resolves, then drains.
/// Returns whether the drain finished within the grace period.
/// With `config_path`, the file is watched for reloads (see [`watch_config`]).
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    shutdown: impl Future<Output = ()>,
) -> Result<bool, ServeError> {
    let addr = config.listen;
    let poll = config.reload_poll;
    let (listener, _) = bind(addr).await?;
    let gateway = start(config, listener).await?;
    if let Some(path) = config_path {
        tokio::spawn(watch_config(
            path,
            poll,
            gateway.reloader(),
            gateway.shutdown.subscribe(),
        ));
    }
    shutdown.await;
    tracing::info!("shutting down: no new calls; finishing those in flight");
    Ok(gateway.shutdown().await)
}
