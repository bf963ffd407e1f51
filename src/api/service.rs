//! `partnerevents.v1.PartnerEvents`: request checks, tenant lookup, per-entry
//! validation, admission under the in-flight bounds, then the [`Pipeline`];
//! each answer carries one result per entry, in request order.

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
    sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
    time::Instant,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_types::{ErrorDetails, StatusExt};

use super::{
    convert::{entry_from_proto, result_to_proto},
    deadline::budget,
    status::RequestError,
};
use crate::{
    domain::{
        entry::prepare,
        outcome::{codes, EntryResult},
        tenant::{Tenant, TenantDirectory},
    },
    pipeline::Pipeline,
    proto::{
        partner_events_server::PartnerEvents, BatchError, PartnerEventResult,
        PutPartnerEventsRequest, PutPartnerEventsResponse,
    },
};

/// Longest `batch_id` accepted: it is echoed and logged, so it stays small.
pub const MAX_BATCH_ID_CHARS: usize = 256;

/// Responses a stream may have waiting for the client to read them; beyond
/// it batch tasks wait, their entries stay in the window, and reading stops.
const STREAM_RESPONSE_BUFFER: usize = 64;

/// What every request needs; shared by all calls.
pub struct Core {
    pub tenants: TenantDirectory,
    pub pipeline: Pipeline,
    pub max_entries_per_request: usize,
    pub max_call_bytes: usize,
    pub default_deadline: Duration,
    pub stream_window_entries: usize,
    /// One permit per entry in flight, gateway-wide.
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    open_streams: AtomicUsize,
    /// Turns true when the gateway starts shutting down.
    shutdown: watch::Receiver<bool>,
}

/// Counts for tests and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gauges {
    pub in_flight_entries: usize,
    pub open_streams: usize,
}

impl Core {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tenants: TenantDirectory,
        pipeline: Pipeline,
        max_entries_per_request: usize,
        max_call_bytes: usize,
        default_deadline: Duration,
        max_in_flight: usize,
        stream_window_entries: usize,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            tenants,
            pipeline,
            max_entries_per_request,
            max_call_bytes,
            default_deadline,
            stream_window_entries,
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            open_streams: AtomicUsize::new(0),
            shutdown,
        }
    }

    pub fn gauges(&self) -> Gauges {
        Gauges {
            in_flight_entries: self.max_in_flight - self.in_flight.available_permits(),
            open_streams: self.open_streams.load(Ordering::Relaxed),
        }
    }

    /// The request-level checks: a batch failing them is refused whole.
    fn check<'a>(&'a self, req: &PutPartnerEventsRequest) -> Result<&'a Tenant, RequestError> {
        let mut violations = Vec::new();
        if req.tenant_id.is_empty() {
            violations.push(("tenant_id".to_string(), "required".to_string()));
        }
        if req.entries.is_empty() {
            violations.push((
                "entries".to_string(),
                "at least one entry is required".to_string(),
            ));
        } else if req.entries.len() > self.max_entries_per_request {
            violations.push((
                "entries".to_string(),
                format!(
                    "{} entries; at most {} are allowed per request",
                    req.entries.len(),
                    self.max_entries_per_request
                ),
            ));
        }
        if req.batch_id.chars().count() > MAX_BATCH_ID_CHARS {
            violations.push((
                "batch_id".to_string(),
                format!("at most {MAX_BATCH_ID_CHARS} characters"),
            ));
        }
        if !violations.is_empty() {
            return Err(RequestError::Invalid(violations));
        }
        self.tenants
            .get(&req.tenant_id)
            .ok_or_else(|| RequestError::UnknownTenant(req.tenant_id.clone()))
    }

    /// Processes one admitted batch (it passed [`Core::check`] and holds its
    /// in-flight permits): per-entry validation, then the pipeline.
    async fn run(
        &self,
        req: PutPartnerEventsRequest,
        tenant: &Tenant,
        sequence: u64,
        deadline: Instant,
    ) -> PutPartnerEventsResponse {
        let started = Instant::now();
        let n = req.entries.len();
        let mut results: Vec<Option<EntryResult>> = vec![None; n];
        let mut prepared = Vec::with_capacity(n);
        for (i, e) in req.entries.into_iter().enumerate() {
            let index = i as u32;
            let checked = entry_from_proto(e)
                .map_err(|e| EntryResult::refused(codes::INVALID_ARGUMENT, e.0))
                .and_then(|e| {
                    prepare(index, e, tenant, self.max_call_bytes)
                        .map_err(|e| EntryResult::refused(e.code, e.message))
                });
            match checked {
                Ok(p) => prepared.push(p),
                Err(r) => results[i] = Some(r),
            }
        }
        let refused = n - prepared.len();
        if !prepared.is_empty() {
            for (index, r) in self.pipeline.send(prepared, deadline).await {
                results[index as usize] = Some(r);
            }
        }
        let entries: Vec<PartnerEventResult> = results
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                // The pipeline answers every index it was given; should one
                // ever be missing, the caller still gets a result for it.
                let r = r.unwrap_or_else(|| {
                    tracing::error!(index = i, "entry had no result; reporting it unknown");
                    EntryResult::refused(
                        codes::OUTCOME_UNKNOWN,
                        "the gateway lost track of this entry",
                    )
                });
                result_to_proto(i as u32, r)
            })
            .collect();
        let failed = entries.iter().filter(|e| !e.error_code.is_empty()).count();
        tracing::info!(
            tenant = %req.tenant_id,
            batch_id = %req.batch_id,
            sequence,
            entries = n,
            refused,
            failed,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "batch answered"
        );
        PutPartnerEventsResponse {
            batch_id: req.batch_id,
            sequence,
            failed_entry_count: failed as u32,
            entries,
            batch_error: None,
        }
    }

    /// The unary call: refused whole, or answered entry by entry.
    async fn unary(
        &self,
        req: PutPartnerEventsRequest,
        budget: Duration,
    ) -> Result<PutPartnerEventsResponse, Status> {
        let deadline = Instant::now() + budget;
        let tenant = self.check(&req)?;
        let n = req.entries.len() as u32;
        let _permits =
            match tokio::time::timeout_at(deadline, self.in_flight.clone().acquire_many_owned(n))
                .await
            {
                Ok(Ok(p)) => p,
                Ok(Err(_closed)) => {
                    return Err(Status::unavailable("the gateway is shutting down"))
                }
                Err(_elapsed) => return Err(overloaded(self.max_in_flight)),
            };
        Ok(self.run(req, tenant, 0, deadline).await)
    }
}

/// RESOURCE_EXHAUSTED with a retry hint, for a call that waited its whole
/// deadline for room.
fn overloaded(max_in_flight: usize) -> Status {
    let mut details = ErrorDetails::with_retry_info(Some(Duration::from_secs(1)));
    details.set_error_info(
        "IN_FLIGHT_LIMIT",
        "partnerevents.v1",
        [(
            "max_in_flight_entries".to_string(),
            max_in_flight.to_string(),
        )],
    );
    Status::with_error_details(
        Code::ResourceExhausted,
        format!(
            "the gateway already has {max_in_flight} entries in flight and no room freed up before the deadline; retry later"
        ),
        details,
    )
}

/// A refused stream batch: the error for the batch and each of its entries.
fn refused_batch(
    req: PutPartnerEventsRequest,
    sequence: u64,
    err: &RequestError,
) -> PutPartnerEventsResponse {
    let code = match err {
        RequestError::Invalid(_) => codes::INVALID_BATCH,
        RequestError::UnknownTenant(_) => codes::UNKNOWN_TENANT,
    };
    let n = req.entries.len();
    PutPartnerEventsResponse {
        batch_id: req.batch_id,
        sequence,
        failed_entry_count: n as u32,
        entries: (0..n)
            .map(|i| result_to_proto(i as u32, EntryResult::refused(code, err.to_string())))
            .collect(),
        batch_error: Some(BatchError {
            code: err.code() as i32,
            message: err.to_string(),
        }),
    }
}

/// Counts an open stream for as long as it lives.
struct StreamGuard(Arc<Core>);

impl StreamGuard {
    fn new(core: Arc<Core>) -> Self {
        core.open_streams.fetch_add(1, Ordering::Relaxed);
        Self(core)
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.open_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a stream's read loop stopped.
enum StreamEnd {
    /// The client half-closed: answer everything, then end with OK.
    HalfClosed,
    /// The gateway is shutting down: answer what was read, then UNAVAILABLE.
    ShuttingDown,
    /// The client went away or broke the stream: drop everything.
    Gone,
}

/// Reads batches from one stream and answers each (see the proto docs).
async fn run_stream(
    core: Arc<Core>,
    mut inbound: Streaming<PutPartnerEventsRequest>,
    tx: mpsc::Sender<Result<PutPartnerEventsResponse, Status>>,
) {
    let _guard = StreamGuard::new(core.clone());
    let window = Arc::new(Semaphore::new(core.stream_window_entries));
    let mut shutdown = core.shutdown.clone();
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut sequence = 0u64;
    let end = loop {
        while tasks.try_join_next().is_some() {}
        if *shutdown.borrow() {
            break StreamEnd::ShuttingDown;
        }
        let msg = tokio::select! {
            _ = shutdown.changed() => continue,
            _ = tx.closed() => break StreamEnd::Gone,
            m = inbound.message() => m,
        };
        let req = match msg {
            Ok(Some(req)) => req,
            Ok(None) => break StreamEnd::HalfClosed,
            Err(status) => {
                tracing::info!(code = ?status.code(), "stream ended by the client");
                break StreamEnd::Gone;
            }
        };
        let seq = sequence;
        sequence += 1;
        if let Err(e) = core.check(&req) {
            if tx.send(Ok(refused_batch(req, seq, &e))).await.is_err() {
                break StreamEnd::Gone;
            }
            continue;
        }
        // Admission: room in this stream's window and in the gateway. While
        // waiting, nothing more is read from the stream.
        let n = req.entries.len() as u32;
        let permits = tokio::select! {
            _ = tx.closed() => break StreamEnd::Gone,
            p = admit(&window, &core.in_flight, n) => p,
        };
        let Some(permits) = permits else {
            break StreamEnd::ShuttingDown;
        };
        let core = core.clone();
        let tx = tx.clone();
        tasks.spawn(async move {
            let _permits = permits;
            let resp = match core.check(&req) {
                Ok(tenant) => {
                    let deadline = Instant::now() + core.default_deadline;
                    core.run(req, tenant, seq, deadline).await
                }
                Err(e) => refused_batch(req, seq, &e),
            };
            let _ = tx.send(Ok(resp)).await;
        });
    };
    match end {
        StreamEnd::Gone => tasks.abort_all(),
        StreamEnd::HalfClosed | StreamEnd::ShuttingDown => {
            // Every batch read is answered before the stream ends.
            loop {
                tokio::select! {
                    done = tasks.join_next() => if done.is_none() { break },
                    _ = tx.closed() => { tasks.abort_all(); return; }
                }
            }
            if matches!(end, StreamEnd::ShuttingDown) {
                let _ = tx
                    .send(Err(Status::unavailable(
                        "the gateway is shutting down: every batch it read on this stream was answered; \
                         send the rest on a new stream",
                    )))
                    .await;
            }
        }
    }
}

/// Takes `n` permits from the stream window and from the gateway-wide
/// bound, in that order. None when the gateway is closing.
async fn admit(
    window: &Arc<Semaphore>,
    global: &Arc<Semaphore>,
    n: u32,
) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
    let w = window.clone().acquire_many_owned(n).await.ok()?;
    let g = global.clone().acquire_many_owned(n).await.ok()?;
    Some((w, g))
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
        let budget = budget(request.metadata(), self.core.default_deadline);
        let resp = self.core.unary(request.into_inner(), budget).await?;
        Ok(Response::new(resp))
    }

    type StreamPartnerEventsStream = ResponseStream;

    async fn stream_partner_events(
        &self,
        request: Request<Streaming<PutPartnerEventsRequest>>,
    ) -> Result<Response<Self::StreamPartnerEventsStream>, Status> {
        let (tx, rx) = mpsc::channel(STREAM_RESPONSE_BUFFER);
        tokio::spawn(run_stream(self.core.clone(), request.into_inner(), tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
