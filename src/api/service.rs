//! The tonic service for `partnerevents.v1.PartnerEvents`, kept thin: it
//! identifies the caller, names the call (request id, span) and hands over
//! to [`admission`](super::admission), [`batch`](super::batch) and
//! [`stream`](super::stream). [`Core`] is the state every call shares.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use futures::Stream;
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::{
    admission::{Admission, AdmissionSettings},
    batch::{BatchProcessor, BatchSettings},
    deadline::budget,
    deliveries::{run_watch, start_watch, WATCH_BUFFER},
    request_id::request_id,
    status::ApiError,
    stream::{run_stream, STREAM_RESPONSE_BUFFER},
};
use crate::{
    auth::{AuthPolicy, Caller},
    config::QuotasSection,
    domain::{
        delivery::Delivery,
        lifecycle::{InactivePolicy, SourceStates},
        tenant::TenantDirectory,
    },
    durable::Durable,
    metrics::Metrics,
    pipeline::Pipeline,
    proto::{
        partner_events_server::PartnerEvents, DeliveryReport, GetDeliveriesRequest,
        GetDeliveriesResponse, PutPartnerEventsRequest, PutPartnerEventsResponse,
        WatchDeliveriesRequest,
    },
};

/// The settings of [`Core`] that come from the config.
#[derive(Debug, Clone)]
pub struct CoreSettings {
    pub max_entries_per_request: usize,
    pub max_call_bytes: usize,
    pub default_deadline: Duration,
    pub max_in_flight: usize,
    /// One tenant's share of `max_in_flight`, in entries.
    pub max_in_flight_per_tenant: usize,
    pub stream_window_entries: usize,
    pub quotas: QuotasSection,
    /// Act on partner event source states (refuse or flag inactive ones).
    pub check_source_state: bool,
    pub on_inactive: InactivePolicy,
    /// For batches that do not choose and tenants that do not say.
    pub default_delivery: Delivery,
}

/// What the gateway keeps beyond a call: the durable queue and the
/// idempotency keys.
pub struct Stores {
    pub durable: Arc<Durable>,
    pub keys: Arc<crate::idempotency::Idempotency>,
    /// Where spans go (traces off: nowhere).
    pub traces: Arc<crate::traces::Traces>,
}

/// What every request needs; shared by all calls.
pub struct Core {
    pub(super) admission: Admission,
    pub(super) batches: BatchProcessor,
    pub pipeline: Pipeline,
    /// DURABLE batches go here; WatchDeliveries and GetDeliveries read it.
    pub durable: Arc<Durable>,
    pub metrics: Arc<Metrics>,
    pub traces: Arc<crate::traces::Traces>,
    /// What the gateway knows of each partner event source's state.
    pub source_states: Arc<SourceStates>,
    /// For a call without `grpc-timeout`, and for each stream batch.
    pub(super) default_deadline: Duration,
    /// Entries one stream may have in flight.
    pub(super) stream_window_entries: usize,
    pub(super) open_streams: AtomicUsize,
    /// Turns true when the gateway starts shutting down.
    pub(super) shutdown: watch::Receiver<bool>,
}

/// Counts for tests and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gauges {
    pub in_flight_entries: usize,
    pub open_streams: usize,
}

impl Core {
    pub fn new(
        tenants: TenantDirectory,
        auth: AuthPolicy,
        pipeline: Pipeline,
        stores: Stores,
        metrics: Arc<Metrics>,
        settings: CoreSettings,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let Stores {
            durable,
            keys,
            traces,
        } = stores;
        pipeline.set_traces(traces.clone());
        let source_states = Arc::<SourceStates>::default();
        let admission = Admission::new(
            tenants,
            auth,
            AdmissionSettings {
                max_entries_per_request: settings.max_entries_per_request,
                max_in_flight: settings.max_in_flight,
                max_in_flight_per_tenant: settings.max_in_flight_per_tenant,
                quotas: settings.quotas,
                default_delivery: settings.default_delivery,
            },
            pipeline.cluster(),
        );
        let batches = BatchProcessor::new(
            pipeline.clone(),
            durable.clone(),
            keys,
            traces.clone(),
            metrics.clone(),
            source_states.clone(),
            BatchSettings {
                max_call_bytes: settings.max_call_bytes,
                check_source_state: settings.check_source_state,
                on_inactive: settings.on_inactive,
                default_delivery: settings.default_delivery,
            },
        );
        Self {
            admission,
            batches,
            pipeline,
            durable,
            metrics,
            traces,
            source_states,
            default_deadline: settings.default_deadline,
            stream_window_entries: settings.stream_window_entries,
            open_streams: AtomicUsize::new(0),
            shutdown,
        }
    }

    /// Puts a new tenant directory and authorization table in force. Calls
    /// and batches already admitted finish with the ones they started with.
    pub fn reload(&self, tenants: TenantDirectory, auth: AuthPolicy) {
        self.admission.reload(tenants, auth);
    }

    /// The tenant directory in force.
    pub fn tenants(&self) -> Arc<TenantDirectory> {
        self.admission.tenants()
    }

    /// Entries and streams in flight right now.
    pub fn gauges(&self) -> Gauges {
        Gauges {
            in_flight_entries: self.admission.in_flight_entries(),
            open_streams: self.open_streams.load(Ordering::Relaxed),
        }
    }

    /// The unary call: refused whole, or answered entry by entry.
    async fn unary(
        &self,
        req: PutPartnerEventsRequest,
        caller: Option<&Caller>,
        budget: Duration,
        parent: opentelemetry::Context,
    ) -> Result<PutPartnerEventsResponse, ApiError> {
        let deadline = Instant::now() + budget;
        let (batch, _in_flight) = self
            .admission
            .admit_call(&self.pipeline, req, caller, deadline, parent)
            .await?;
        self.batches.answer(batch).await
    }
}

/// The tonic service.
#[derive(Clone)]
pub struct PartnerEventsService {
    core: Arc<Core>,
}

impl PartnerEventsService {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<PutPartnerEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl PartnerEvents for PartnerEventsService {
    async fn put_partner_events(
        &self,
        request: Request<PutPartnerEventsRequest>,
    ) -> Result<Response<PutPartnerEventsResponse>, Status> {
        let request_id = request_id(request.metadata());
        let result = async {
            let caller = self.core.admission.caller(&request)?;
            let budget = budget(request.metadata(), self.core.default_deadline);
            let parent = self.core.traces.extract(request.metadata());
            let req = request.into_inner();
            let span = tracing::info_span!(
                "put_partner_events",
                %request_id,
                tenant = %req.tenant_id,
                caller = caller.as_ref().map(Caller::name).unwrap_or(""),
            );
            self.core
                .unary(req, caller.as_ref(), budget, parent)
                .instrument(span)
                .await
        }
        .await;
        if let Err(e) = &result {
            tracing::info!(%request_id, code = ?e.code(), message = %e, "call refused");
        }
        result.map(Response::new).map_err(Status::from)
    }

    type StreamPartnerEventsStream = ResponseStream;

    async fn stream_partner_events(
        &self,
        request: Request<Streaming<PutPartnerEventsRequest>>,
    ) -> Result<Response<Self::StreamPartnerEventsStream>, Status> {
        let caller = self.core.admission.caller(&request)?;
        let request_id = request_id(request.metadata());
        let span = tracing::info_span!(
            "stream_partner_events",
            %request_id,
            caller = caller.as_ref().map(Caller::name).unwrap_or(""),
        );
        let (tx, rx) = mpsc::channel(STREAM_RESPONSE_BUFFER);
        let parent = self.core.traces.extract(request.metadata());
        tokio::spawn(
            run_stream(self.core.clone(), caller, request.into_inner(), tx, parent)
                .instrument(span),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type WatchDeliveriesStream = Pin<Box<dyn Stream<Item = Result<DeliveryReport, Status>> + Send>>;

    async fn watch_deliveries(
        &self,
        request: Request<WatchDeliveriesRequest>,
    ) -> Result<Response<Self::WatchDeliveriesStream>, Status> {
        let caller = self.core.admission.caller(&request)?;
        let req = request.into_inner();
        let (after, tenants) = start_watch(&self.core, caller.as_ref(), &req)?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        tokio::spawn(run_watch(self.core.clone(), caller, after, tenants, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_deliveries(
        &self,
        request: Request<GetDeliveriesRequest>,
    ) -> Result<Response<GetDeliveriesResponse>, Status> {
        let caller = self.core.admission.caller(&request)?;
        super::deliveries::get(self.core.clone(), caller, request.into_inner())
            .await
            .map(Response::new)
            .map_err(Status::from)
    }
}
