//! Assembles and runs the gateway: the upstream (starting the built-in
//! emulator when configured), the pipeline, the `PartnerEvents` service,
//! health, and reflection; then serves until told to stop, and drains.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    net::TcpListener,
    sync::{oneshot, watch},
    task::JoinHandle,
};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;
use tonic_health::{server::HealthReporter, ServingStatus};

use crate::{
    api::service::{Core, Gauges, PartnerEventsService},
    config::{Config, UpstreamKind},
    emulator::{Emulator, EmulatorConfig, EmulatorHandle},
    pipeline::{Pipeline, PipelineSettings},
    proto::{self, partner_events_server::PartnerEventsServer},
    upstream::{eventbridge::EventBridgeUpstream, retry::RetryPolicy},
};

/// The name health checks use for the gateway's own service.
pub const SERVICE_NAME: &str = "partnerevents.v1.PartnerEvents";

/// Why the gateway could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
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
    #[error("reflection set-up failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A gateway serving in the background (what `main` and the tests hold).
pub struct RunningGateway {
    local_addr: SocketAddr,
    emulator: Option<EmulatorHandle>,
    core: Arc<Core>,
    shutdown: watch::Sender<bool>,
    health: HealthReporter,
    grace: Duration,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl RunningGateway {
    /// Where the gRPC server listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The in-process emulator, when the gateway started one.
    pub fn emulator(&self) -> Option<&EmulatorHandle> {
        self.emulator.as_ref()
    }

    /// Entries and streams in flight right now.
    pub fn gauges(&self) -> Gauges {
        self.core.gauges()
    }

    /// Stops accepting calls, tells open streams to finish (they answer
    /// every batch already read, then end with UNAVAILABLE), waits for
    /// in-flight calls up to the grace period, and stops the in-process
    /// emulator. Returns whether everything finished within the grace period.
    pub async fn shutdown(mut self) -> bool {
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
        if let Some(e) = &self.emulator {
            e.shutdown();
        }
        clean
    }
}

/// Builds everything from `config` and serves on `listener` in the background.
pub async fn start(config: Config, listener: TcpListener) -> Result<RunningGateway, ServeError> {
    let local_addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: config.listen,
        source,
    })?;

    let mut emulator = None;
    let endpoint_url = match (&config.upstream.kind, &config.upstream.endpoint_url) {
        (_, Some(url)) => Some(url.clone()),
        (UpstreamKind::Emulator, None) => {
            let handle = Emulator::spawn(
                config.emulator_listen,
                EmulatorConfig {
                    max_call_bytes: config.upstream.max_call_bytes,
                    log_payloads: config.emulator.log_payloads,
                    events_file: config.emulator.events_file.clone().map(Into::into),
                    ..EmulatorConfig::default()
                },
            )
            .await
            .map_err(|source| ServeError::Emulator {
                addr: config.emulator_listen,
                source,
            })?;
            let url = handle.endpoint_url();
            tracing::info!(endpoint = %url, "built-in EventBridge emulator started");
            emulator = Some(handle);
            Some(url)
        }
        (UpstreamKind::Aws, None) => None,
    };

    let regions = config.tenants.regions();
    let upstream =
        EventBridgeUpstream::new(&config.upstream, endpoint_url.as_deref(), &regions).await;
    let u = &config.upstream;
    let pipeline = Pipeline::new(
        Arc::new(upstream),
        PipelineSettings {
            max_call_bytes: u.max_call_bytes,
            linger: Duration::from_millis(u.linger_ms),
            max_concurrent_calls_per_region: u.max_concurrent_calls,
            retry: RetryPolicy {
                max_attempts: u.entry_max_attempts,
                base: Duration::from_millis(u.retry_base_ms),
                max: Duration::from_millis(u.retry_max_ms),
            },
        },
    );
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let core = Arc::new(Core::new(
        config.tenants.clone(),
        pipeline,
        config.max_entries_per_request,
        u.max_call_bytes,
        Duration::from_millis(u.default_deadline_ms),
        config.max_in_flight_entries,
        config.stream_window_entries,
        shutdown_rx,
    ));

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(SERVICE_NAME, ServingStatus::Serving)
        .await;

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
    let router = Server::builder()
        // Per connection: a client cannot open unbounded concurrent calls.
        .max_concurrent_streams(config.max_concurrent_streams)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(service);
    let task = tokio::spawn(router.serve_with_incoming_shutdown(
        TcpListenerStream::new(listener),
        async {
            let _ = stop_rx.await;
        },
    ));
    tracing::info!(addr = %local_addr, tenants = config.tenants.len(), "partner-events-gateway serving");
    Ok(RunningGateway {
        local_addr,
        emulator,
        core,
        shutdown: shutdown_tx,
        health,
        grace: config.shutdown_grace,
        stop: Some(stop_tx),
        task,
    })
}

/// Binds `config.listen`, serves until `shutdown` resolves, then drains.
/// Returns whether the drain finished within the grace period.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<bool, ServeError> {
    let addr = config.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let gateway = start(config, listener).await?;
    shutdown.await;
    tracing::info!("shutting down: no new calls; finishing those in flight");
    Ok(gateway.shutdown().await)
}
