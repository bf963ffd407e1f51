//! `partnerevents.v1.PartnerEvents`: request checks, tenant lookup, per-entry
//! validation, then the [`Pipeline`]; the answer carries one result per
//! entry, in request order.

use std::{pin::Pin, sync::Arc, time::Duration};

use futures::{stream::FuturesUnordered, Stream, StreamExt};
use tokio::{sync::mpsc, time::Instant};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{
    convert::{entry_from_proto, result_to_proto},
    deadline::budget,
    status::RequestError,
};
use crate::{
    domain::{
        entry::prepare,
        outcome::{codes, EntryResult},
        tenant::TenantDirectory,
    },
    pipeline::Pipeline,
    proto::{
        partner_events_server::PartnerEvents, BatchError, PartnerEventResult,
        PutPartnerEventsRequest, PutPartnerEventsResponse,
    },
};

/// Longest `batch_id` accepted: it is echoed and logged, so it stays small.
pub const MAX_BATCH_ID_CHARS: usize = 256;

/// Batches of one stream being processed at once; beyond it the gateway
/// stops reading the stream (HTTP/2 flow control pushes back on the client).
pub const STREAM_WINDOW_BATCHES: usize = 32;

/// What every request needs; shared by all calls.
pub struct Core {
    pub tenants: TenantDirectory,
    pub pipeline: Pipeline,
    pub max_entries_per_request: usize,
    pub max_call_bytes: usize,
    pub default_deadline: Duration,
}

impl Core {
    /// Processes one batch. Request-level problems are errors; everything
    /// else is a response with one result per entry.
    pub async fn process(
        &self,
        req: PutPartnerEventsRequest,
        sequence: u64,
        budget: Duration,
    ) -> Result<PutPartnerEventsResponse, RequestError> {
        let started = Instant::now();
        let deadline = started + budget;
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
        let tenant = self
            .tenants
            .get(&req.tenant_id)
            .ok_or_else(|| RequestError::UnknownTenant(req.tenant_id.clone()))?;

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
        Ok(PutPartnerEventsResponse {
            batch_id: req.batch_id,
            sequence,
            failed_entry_count: failed as u32,
            entries,
            batch_error: None,
        })
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

/// A refused stream batch: the error for the batch and each of its entries.
fn refused_batch(
    batch_id: String,
    sequence: u64,
    entries: usize,
    err: &RequestError,
) -> PutPartnerEventsResponse {
    let code = match err {
        RequestError::Invalid(_) => codes::INVALID_BATCH,
        RequestError::UnknownTenant(_) => codes::UNKNOWN_TENANT,
    };
    PutPartnerEventsResponse {
        batch_id,
        sequence,
        failed_entry_count: entries as u32,
        entries: (0..entries)
            .map(|i| result_to_proto(i as u32, EntryResult::refused(code, err.to_string())))
            .collect(),
        batch_error: Some(BatchError {
            code: err.code() as i32,
            message: err.to_string(),
        }),
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
        let resp = self.core.process(request.into_inner(), 0, budget).await?;
        Ok(Response::new(resp))
    }

    type StreamPartnerEventsStream = ResponseStream;

    async fn stream_partner_events(
        &self,
        request: Request<Streaming<PutPartnerEventsRequest>>,
    ) -> Result<Response<Self::StreamPartnerEventsStream>, Status> {
        let core = self.core.clone();
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_WINDOW_BATCHES);
        tokio::spawn(async move {
            let mut in_flight = FuturesUnordered::new();
            let mut sequence = 0u64;
            let mut reading = true;
            loop {
                tokio::select! {
                    msg = inbound.message(), if reading && in_flight.len() < STREAM_WINDOW_BATCHES => {
                        match msg {
                            Ok(Some(req)) => {
                                let core = core.clone();
                                let seq = sequence;
                                sequence += 1;
                                in_flight.push(async move {
                                    let batch_id = req.batch_id.clone();
                                    let n = req.entries.len();
                                    match core.process(req, seq, core.default_deadline).await {
                                        Ok(resp) => resp,
                                        Err(e) => refused_batch(batch_id, seq, n, &e),
                                    }
                                });
                            }
                            Ok(None) => reading = false,
                            Err(status) => {
                                tracing::info!(code = ?status.code(), "stream broken by the client");
                                return;
                            }
                        }
                    }
                    Some(resp) = in_flight.next(), if !in_flight.is_empty() => {
                        if tx.send(Ok(resp)).await.is_err() {
                            return; // the client went away
                        }
                    }
                    else => break,
                }
                if !reading && in_flight.is_empty() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
