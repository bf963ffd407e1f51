//! `partnerevents.v1.PartnerEvents`: request checks, tenant lookup, per-entry
//! validation, admission under the in-flight bounds, then the [`Pipeline`];
//! each answer carries one result per entry, in request order.

use arc_swap::ArcSwap;
use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, OnceLock,
    },
    time::Duration,
};

use futures::{stream::FuturesUnordered, Stream, StreamExt};
use tokio::{
    sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
    time::Instant,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_types::{ErrorDetails, StatusExt};
use tracing::Instrument;

use super::{
    convert::{entry_from_proto, result_to_proto},
    deadline::budget,
    status::RequestError,
};
use crate::{
    auth::{certificate_identities, AuthError, AuthPolicy, Caller},
    config::{AuthMode, QuotasSection},
    domain::{
        entry::prepare,
        lifecycle::{InactivePolicy, SourceStates},
        limits::MAX_ENTRIES_PER_CALL,
        outcome::{codes, EntryResult},
        tenant::TenantDirectory,
    },
    metrics::{grpc_code_name, GrpcCodeLabels, GrpcLabels, Metrics},
    pipeline::Pipeline,
    proto::{
        partner_events_server::PartnerEvents, BatchError, PartnerEventResult,
        PutPartnerEventsRequest, PutPartnerEventsResponse,
    },
    quota::KeyedLimiter,
};

/// Longest `batch_id` accepted: it is echoed and logged, so it stays small.
pub const MAX_BATCH_ID_CHARS: usize = 256;

/// Responses a stream may have waiting for the client to read them; beyond
/// it batch tasks wait, their entries stay in the window, and reading stops.
const STREAM_RESPONSE_BUFFER: usize = 64;

/// The settings of [`Core`] that come from the config.
#[derive(Debug, Clone)]
pub struct CoreSettings {
    pub max_entries_per_request: usize,
    pub max_call_bytes: usize,
    pub default_deadline: Duration,
    pub max_in_flight: usize,
    pub stream_window_entries: usize,
    pub quotas: QuotasSection,
    /// Act on partner event source states (refuse or flag inactive ones).
    pub check_source_state: bool,
    pub on_inactive: InactivePolicy,
}

/// What every request needs; shared by all calls.
pub struct Core {
    /// Swapped whole on reload; each batch uses the directory it started with.
    tenants: ArcSwap<TenantDirectory>,
    auth: ArcSwap<AuthPolicy>,
    pub pipeline: Pipeline,
    pub metrics: Arc<Metrics>,
    /// What the gateway knows of each partner event source's state.
    pub source_states: Arc<SourceStates>,
    settings: CoreSettings,
    tenant_limits: KeyedLimiter,
    caller_limits: KeyedLimiter,
    /// One permit per entry in flight, gateway-wide.
    in_flight: Arc<Semaphore>,
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
    pub fn new(
        tenants: TenantDirectory,
        auth: AuthPolicy,
        pipeline: Pipeline,
        metrics: Arc<Metrics>,
        settings: CoreSettings,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            source_states: Arc::default(),
            tenants: ArcSwap::from_pointee(tenants),
            auth: ArcSwap::from_pointee(auth),
            pipeline,
            metrics,
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight)),
            settings,
            tenant_limits: KeyedLimiter::default(),
            caller_limits: KeyedLimiter::default(),
            open_streams: AtomicUsize::new(0),
            shutdown,
        }
    }

    /// Puts a new tenant directory and authorization table in force. Calls
    /// and batches already admitted finish with the ones they started with.
    pub fn reload(&self, tenants: TenantDirectory, auth: AuthPolicy) {
        self.tenants.store(Arc::new(tenants));
        self.auth.store(Arc::new(auth));
    }

    /// The tenant directory in force.
    pub fn tenants(&self) -> Arc<TenantDirectory> {
        self.tenants.load_full()
    }

    /// Identifies the caller of a request from its metadata and TLS peer.
    fn caller<T>(&self, request: &Request<T>) -> Result<Option<Caller>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let cert_identities = crate::connections::peer_certs(request.extensions())
            .and_then(|chain| {
                chain
                    .first()
                    .map(|der| certificate_identities(der.as_ref()))
            })
            .unwrap_or_default();
        let auth = self.auth.load();
        let caller = auth
            .identify(authorization, cert_identities)
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        if caller.is_none() && auth.mode == AuthMode::Required {
            return Err(Status::unauthenticated(
                AuthError::Unauthenticated.to_string(),
            ));
        }
        Ok(caller)
    }

    pub fn gauges(&self) -> Gauges {
        Gauges {
            in_flight_entries: self.settings.max_in_flight - self.in_flight.available_permits(),
            open_streams: self.open_streams.load(Ordering::Relaxed),
        }
    }

    /// The request-level checks: a batch failing them is refused whole.
    /// Returns the tenant directory the batch is then processed with.
    fn check(
        &self,
        req: &PutPartnerEventsRequest,
        caller: Option<&Caller>,
    ) -> Result<Arc<TenantDirectory>, RequestError> {
        let mut violations = Vec::new();
        if req.tenant_id.is_empty() {
            violations.push(("tenant_id".to_string(), "required".to_string()));
        }
        if req.entries.is_empty() {
            violations.push((
                "entries".to_string(),
                "at least one entry is required".to_string(),
            ));
        } else if req.entries.len() > self.settings.max_entries_per_request {
            violations.push((
                "entries".to_string(),
                format!(
                    "{} entries; at most {} are allowed per request",
                    req.entries.len(),
                    self.settings.max_entries_per_request
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
        // Authorization before existence: a caller learns nothing about
        // tenants it may not write for.
        self.auth
            .load()
            .authorize(caller, &req.tenant_id)
            .map_err(|e| RequestError::PermissionDenied(e.to_string()))?;
        let tenants = self.tenants.load_full();
        if tenants.get(&req.tenant_id).is_none() {
            return Err(RequestError::UnknownTenant(req.tenant_id.clone()));
        }
        self.take_quota(&req.tenant_id, caller, req.entries.len())?;
        Ok(tenants)
    }

    /// When every region the request's entries go to has an open breaker,
    /// the soonest time one lets calls through again.
    fn all_regions_down(
        &self,
        req: &PutPartnerEventsRequest,
        tenants: &TenantDirectory,
    ) -> Option<Duration> {
        let tenant = tenants.get(&req.tenant_id)?;
        let mut soonest: Option<Duration> = None;
        for e in &req.entries {
            let region = tenant.source(&e.source_key)?.region();
            let after = self.pipeline.region_retry_after(region)?;
            soonest = Some(soonest.map_or(after, |s| s.min(after)));
        }
        soonest
    }

    /// Per-tenant and per-caller entries-per-second limits.
    fn take_quota(
        &self,
        tenant: &str,
        caller: Option<&Caller>,
        n: usize,
    ) -> Result<(), RequestError> {
        let q = &self.settings.quotas;
        if q.tenant_entries_per_second > 0.0 {
            self.tenant_limits
                .try_take(tenant, q.tenant_entries_per_second, q.burst_seconds, n)
                .map_err(|retry_after| RequestError::RateLimited {
                    scope: "tenant",
                    subject: tenant.to_string(),
                    retry_after,
                })?;
        }
        if let Some(caller) = caller {
            let rate = self
                .auth
                .load()
                .caller_rate(caller)
                .unwrap_or(q.caller_entries_per_second);
            if rate > 0.0 {
                self.caller_limits
                    .try_take(caller.name(), rate, q.burst_seconds, n)
                    .map_err(|retry_after| RequestError::RateLimited {
                        scope: "caller",
                        subject: caller.name().to_string(),
                        retry_after,
                    })?;
            }
        }
        Ok(())
    }

    /// Processes one admitted batch (it passed [`Core::check`] and holds its
    /// in-flight permits): per-entry validation, then the pipeline.
    async fn run(
        &self,
        req: PutPartnerEventsRequest,
        tenants: &TenantDirectory,
        sequence: u64,
        deadline: Instant,
    ) -> PutPartnerEventsResponse {
        let started = Instant::now();
        let Some(tenant) = tenants.get(&req.tenant_id) else {
            // check() found it in this same directory.
            let err = RequestError::UnknownTenant(req.tenant_id.clone());
            return refused_batch(req, sequence, &err);
        };
        let n = req.entries.len();
        let mut results: Vec<Option<EntryResult>> = vec![None; n];
        let mut prepared = Vec::with_capacity(n);
        for (i, e) in req.entries.into_iter().enumerate() {
            let index = i as u32;
            let checked = entry_from_proto(e)
                .map_err(|e| EntryResult::refused(codes::INVALID_ARGUMENT, e.0))
                .and_then(|e| {
                    prepare(index, e, tenant, self.settings.max_call_bytes)
                        .map_err(|e| EntryResult::refused(e.code, e.message))
                });
            match checked {
                Ok(p) => prepared.push(p),
                Err(r) => results[i] = Some(r),
            }
        }
        // Entries for a source EventBridge would not deliver to.
        let mut warnings: Vec<(usize, String)> = Vec::new();
        if self.settings.check_source_state {
            let policy = tenant
                .inactive_policy()
                .unwrap_or(self.settings.on_inactive);
            prepared.retain(|p| match self.source_states.check(p.source.name()) {
                None => true,
                Some(inactive) => match policy {
                    InactivePolicy::Refuse => {
                        results[p.index as usize] =
                            Some(EntryResult::refused(inactive.code, inactive.message));
                        false
                    }
                    InactivePolicy::SendAndFlag => {
                        warnings.push((
                            p.index as usize,
                            format!("{}: {}", inactive.code, inactive.message),
                        ));
                        true
                    }
                },
            });
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
        // Counted per run of equal codes: one metric update per batch as a rule.
        for run in entries.chunk_by(|a, b| a.error_code == b.error_code) {
            self.metrics
                .entries_with(&run[0].error_code, &req.tenant_id, run.len() as u64);
        }
        let mut entries = entries;
        for (i, warning) in warnings {
            if !entries[i].event_id.is_empty() {
                entries[i].warning = warning;
            }
        }
        let failed = entries.iter().filter(|e| !e.error_code.is_empty()).count();
        // One line per batch is too much at thousands of batches a second:
        // info only when something was refused or failed, debug otherwise.
        let elapsed_ms = started.elapsed().as_millis() as u64;
        if failed > 0 {
            tracing::info!(tenant = %req.tenant_id, batch_id = %req.batch_id, sequence, entries = n, refused, failed, elapsed_ms, "batch answered");
        } else {
            tracing::debug!(tenant = %req.tenant_id, batch_id = %req.batch_id, sequence, entries = n, elapsed_ms, "batch answered");
        }
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
        caller: Option<&Caller>,
        budget: Duration,
    ) -> Result<PutPartnerEventsResponse, Status> {
        let deadline = Instant::now() + budget;
        let tenants = self.check(&req, caller)?;
        if let Some(retry_after) = self.all_regions_down(&req, &tenants) {
            return Err(region_unavailable(retry_after));
        }
        let n = req.entries.len() as u32;
        let _permits =
            match tokio::time::timeout_at(deadline, self.in_flight.clone().acquire_many_owned(n))
                .await
            {
                Ok(Ok(p)) => p,
                Ok(Err(_closed)) => {
                    return Err(Status::unavailable("the gateway is shutting down"))
                }
                Err(_elapsed) => return Err(overloaded(self.settings.max_in_flight)),
            };
        Ok(self.run(req, &tenants, 0, deadline).await)
    }
}

/// UNAVAILABLE with a retry hint: every region the request needs has its
/// circuit breaker open.
fn region_unavailable(retry_after: Duration) -> Status {
    let details = ErrorDetails::with_retry_info(Some(retry_after));
    Status::with_error_details(
        Code::Unavailable,
        format!(
            "EventBridge keeps failing in the region(s) this request needs; calls there are paused: retry in {} ms",
            retry_after.as_millis()
        ),
        details,
    )
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
    let code = err.batch_code();
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
///
/// A small batch (fewer entries than one upstream call holds) is answered
/// from this stream's own task: its work is a few microseconds, less than
/// handing it to a task of its own would cost. Larger batches get a task
/// each, so that one stream's work can use every core.
async fn run_stream(
    core: Arc<Core>,
    caller: Option<Caller>,
    mut inbound: Streaming<PutPartnerEventsRequest>,
    tx: mpsc::Sender<Result<PutPartnerEventsResponse, Status>>,
) {
    let _guard = StreamGuard::new(core.clone());
    let started = Instant::now();
    let window = Arc::new(Semaphore::new(core.settings.stream_window_entries));
    let mut shutdown = core.shutdown.clone();
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut small = FuturesUnordered::new();
    let mut sequence = 0u64;
    let end = loop {
        while tasks.try_join_next().is_some() {}
        if *shutdown.borrow() {
            break StreamEnd::ShuttingDown;
        }
        let msg = tokio::select! {
            Some(()) = small.next(), if !small.is_empty() => continue,
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
        core.metrics
            .grpc_msg_received
            .get_or_create(&STREAM_LABELS)
            .inc();
        let tenants = match core.check(&req, caller.as_ref()) {
            Ok(t) => t,
            Err(e) => {
                if tx.send(Ok(refused_batch(req, seq, &e))).await.is_err() {
                    break StreamEnd::Gone;
                }
                continue;
            }
        };
        // Admission: room in this stream's window and in the gateway. While
        // waiting, nothing more is read from the stream; the batches in
        // hand go on (they are what frees the room).
        let n = req.entries.len() as u32;
        let admission = admit(&window, &core.in_flight, n);
        tokio::pin!(admission);
        let permits = loop {
            tokio::select! {
                Some(()) = small.next(), if !small.is_empty() => {}
                _ = tx.closed() => break Err(StreamEnd::Gone),
                p = &mut admission => break p.ok_or(StreamEnd::ShuttingDown),
            }
        };
        let permits = match permits {
            Ok(p) => p,
            Err(end) => break end,
        };
        let answer = answer_batch(core.clone(), req, tenants, seq, permits, tx.clone());
        if (n as usize) < MAX_ENTRIES_PER_CALL {
            small.push(answer);
        } else {
            tasks.spawn(answer);
        }
    };
    let code = match end {
        StreamEnd::HalfClosed => Code::Ok,
        StreamEnd::ShuttingDown => Code::Unavailable,
        StreamEnd::Gone => Code::Cancelled,
    };
    let m = &core.metrics;
    m.grpc_handled
        .get_or_create(&handled(&STREAM_LABELS, code))
        .inc();
    m.grpc_handling_seconds
        .get_or_create(&STREAM_LABELS)
        .observe(started.elapsed().as_secs_f64());
    match end {
        StreamEnd::Gone => tasks.abort_all(),
        StreamEnd::HalfClosed | StreamEnd::ShuttingDown => {
            // Every batch read is answered before the stream ends.
            while !(small.is_empty() && tasks.is_empty()) {
                tokio::select! {
                    Some(()) = small.next(), if !small.is_empty() => {}
                    Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
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

/// Processes one admitted stream batch and sends its answer.
async fn answer_batch(
    core: Arc<Core>,
    req: PutPartnerEventsRequest,
    tenants: Arc<TenantDirectory>,
    sequence: u64,
    permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
    tx: mpsc::Sender<Result<PutPartnerEventsResponse, Status>>,
) {
    let _permits = permits;
    let deadline = Instant::now() + core.settings.default_deadline;
    let resp = core.run(req, &tenants, sequence, deadline).await;
    if tx.send(Ok(resp)).await.is_ok() {
        core.metrics
            .grpc_msg_sent
            .get_or_create(&STREAM_LABELS)
            .inc();
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

const SERVICE: &str = "partnerevents.v1.PartnerEvents";
const UNARY_LABELS: GrpcLabels = GrpcLabels {
    grpc_type: "unary",
    grpc_service: SERVICE,
    grpc_method: "PutPartnerEvents",
};
const STREAM_LABELS: GrpcLabels = GrpcLabels {
    grpc_type: "bidi_stream",
    grpc_service: SERVICE,
    grpc_method: "StreamPartnerEvents",
};

fn handled(l: &GrpcLabels, code: Code) -> GrpcCodeLabels {
    GrpcCodeLabels {
        grpc_type: l.grpc_type,
        grpc_service: l.grpc_service,
        grpc_method: l.grpc_method,
        grpc_code: grpc_code_name(code),
    }
}

/// The caller's `x-request-id` when it is a short token, else a new one.
fn request_id(metadata: &tonic::metadata::MetadataMap) -> String {
    metadata
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_string)
        .unwrap_or_else(new_request_id)
}

/// A new request id: 32 hex digits, unique in this process (a counter)
/// and across replicas (added to a random 128-bit start). A fresh UUID per
/// call cost a `getrandom` system call on every request.
fn new_request_id() -> String {
    static START: OnceLock<u128> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let start = *START.get_or_init(|| uuid::Uuid::new_v4().as_u128());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{:032x}", start.wrapping_add(u128::from(n)))
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<PutPartnerEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl PartnerEvents for PartnerEventsService {
    async fn put_partner_events(
        &self,
        request: Request<PutPartnerEventsRequest>,
    ) -> Result<Response<PutPartnerEventsResponse>, Status> {
        let started = Instant::now();
        let m = &self.core.metrics;
        m.grpc_started.get_or_create(&UNARY_LABELS).inc();
        let request_id = request_id(request.metadata());
        let result = async {
            let caller = self.core.caller(&request)?;
            let budget = budget(request.metadata(), self.core.settings.default_deadline);
            let req = request.into_inner();
            let span = tracing::info_span!(
                "put_partner_events",
                %request_id,
                tenant = %req.tenant_id,
                caller = caller.as_ref().map(Caller::name).unwrap_or(""),
            );
            self.core
                .unary(req, caller.as_ref(), budget)
                .instrument(span)
                .await
        }
        .await;
        let code = result.as_ref().map_or_else(|s| s.code(), |_| Code::Ok);
        m.grpc_handled
            .get_or_create(&handled(&UNARY_LABELS, code))
            .inc();
        m.grpc_handling_seconds
            .get_or_create(&UNARY_LABELS)
            .observe(started.elapsed().as_secs_f64());
        if let Err(status) = &result {
            tracing::info!(%request_id, code = ?status.code(), message = status.message(), "call refused");
        }
        result.map(Response::new)
    }

    type StreamPartnerEventsStream = ResponseStream;

    async fn stream_partner_events(
        &self,
        request: Request<Streaming<PutPartnerEventsRequest>>,
    ) -> Result<Response<Self::StreamPartnerEventsStream>, Status> {
        let m = self.core.metrics.clone();
        m.grpc_started.get_or_create(&STREAM_LABELS).inc();
        let caller = match self.core.caller(&request) {
            Ok(c) => c,
            Err(status) => {
                m.grpc_handled
                    .get_or_create(&handled(&STREAM_LABELS, status.code()))
                    .inc();
                return Err(status);
            }
        };
        let request_id = request_id(request.metadata());
        let span = tracing::info_span!(
            "stream_partner_events",
            %request_id,
            caller = caller.as_ref().map(Caller::name).unwrap_or(""),
        );
        let (tx, rx) = mpsc::channel(STREAM_RESPONSE_BUFFER);
        tokio::spawn(
            run_stream(self.core.clone(), caller, request.into_inner(), tx).instrument(span),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_short_tokens_and_never_repeat() {
        let mut metadata = tonic::metadata::MetadataMap::new();
        let ids: std::collections::HashSet<String> =
            (0..1000).map(|_| request_id(&metadata)).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids
            .iter()
            .all(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())));
        // A caller's own id is kept when it is a short token, replaced otherwise.
        metadata.insert("x-request-id", "caller-42_a".parse().unwrap());
        assert_eq!(request_id(&metadata), "caller-42_a");
        metadata.insert("x-request-id", "no spaces".parse().unwrap());
        assert_eq!(request_id(&metadata).len(), 32);
    }
}
