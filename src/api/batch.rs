//! The batch path: from an [`AdmittedBatch`] to its answer. Each entry is
//! converted and validated (a bad one gets its own result), checked against
//! its source's state, and the rest go through the [`Pipeline`]; the answer
//! has one result per entry, in request order.
//!
//! Unary calls and stream batches both come here once admitted; a stage
//! between admission and sending (a fair scheduler, a durable queue) takes
//! an [`AdmittedBatch`] and hands it on to [`BatchProcessor::answer`].

use std::sync::Arc;

use tokio::time::Instant;

use crate::{
    domain::delivery::Delivery,
    durable::{Durable, EnqueueError},
    proto::DeliveryMode,
};

use super::{
    admission::AdmittedBatch,
    convert::{entry_from_proto, result_to_proto},
    status::ApiError,
};
use crate::{
    domain::{
        entry::prepare,
        lifecycle::{InactivePolicy, SourceStates},
        outcome::{codes, EntryResult},
    },
    metrics::Metrics,
    pipeline::Pipeline,
    proto::{BatchError, PartnerEventResult, PutPartnerEventsRequest, PutPartnerEventsResponse},
};

/// The settings of [`BatchProcessor`] that come from the config.
#[derive(Debug, Clone)]
pub struct BatchSettings {
    /// The EventBridge call-size limit: an entry alone larger is refused.
    pub max_call_bytes: usize,
    /// Act on partner event source states (refuse or flag inactive ones).
    pub check_source_state: bool,
    pub on_inactive: InactivePolicy,
    /// How batches that do not choose are answered (a tenant's own
    /// `delivery` comes first).
    pub default_delivery: Delivery,
}

/// Answers admitted batches; shared by all calls.
pub struct BatchProcessor {
    pipeline: Pipeline,
    durable: Arc<Durable>,
    metrics: Arc<Metrics>,
    source_states: Arc<SourceStates>,
    settings: BatchSettings,
}

impl BatchProcessor {
    pub fn new(
        pipeline: Pipeline,
        durable: Arc<Durable>,
        metrics: Arc<Metrics>,
        source_states: Arc<SourceStates>,
        settings: BatchSettings,
    ) -> Self {
        Self {
            pipeline,
            durable,
            metrics,
            source_states,
            settings,
        }
    }

    /// Processes one admitted batch: per-entry validation, then the
    /// pipeline (SYNC) or the durable queue (DURABLE). Every entry gets a
    /// result; only a DURABLE batch the queue cannot take fails as a whole
    /// (nothing of it was queued).
    pub async fn answer(&self, batch: AdmittedBatch) -> Result<PutPartnerEventsResponse, ApiError> {
        let AdmittedBatch {
            request: req,
            tenants,
            sequence,
            deadline,
        } = batch;
        let started = Instant::now();
        let Some(tenant) = tenants.get(&req.tenant_id) else {
            // Admission found it in this same directory.
            let err = ApiError::UnknownTenant(req.tenant_id.clone());
            return Ok(refused(req, sequence, &err));
        };
        let delivery = Delivery::settle(
            requested_delivery(req.delivery),
            tenant.delivery(),
            self.settings.default_delivery,
        );
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
        let mut receipts: Vec<(u32, String)> = Vec::new();
        if !prepared.is_empty() {
            match delivery {
                Delivery::Sync => {
                    for (index, r) in self.pipeline.send(tenant.share(), prepared, deadline).await {
                        results[index as usize] = Some(r);
                    }
                }
                Delivery::Durable => {
                    let indices: Vec<u32> = prepared.iter().map(|p| p.index).collect();
                    let queued = self
                        .durable
                        .enqueue(&req.tenant_id, &req.batch_id, prepared)
                        .await
                        .map_err(|e| match e {
                            EnqueueError::Full {
                                limit,
                                value,
                                retry_after,
                            } => ApiError::QueueFull {
                                limit,
                                value,
                                retry_after,
                            },
                            EnqueueError::Store(e) => ApiError::QueueUnavailable(e.to_string()),
                        })?;
                    for (index, receipt) in indices.into_iter().zip(queued) {
                        // Answered below with the receipt instead.
                        results[index as usize] = Some(EntryResult::refused("", ""));
                        receipts.push((index, receipt.to_text()));
                    }
                }
            }
        }
        let mut entries: Vec<PartnerEventResult> = results
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
        for (index, receipt) in receipts {
            entries[index as usize].receipt_id = receipt;
        }
        // Counted per run of equal codes: one metric update per batch as a rule.
        fn label(r: &PartnerEventResult) -> &str {
            if r.receipt_id.is_empty() {
                r.error_code.as_str()
            } else {
                crate::metrics::QUEUED
            }
        }
        for run in entries.chunk_by(|a, b| label(a) == label(b)) {
            self.metrics
                .entries_with(label(&run[0]), &req.tenant_id, run.len() as u64);
        }
        for (i, warning) in warnings {
            if !entries[i].event_id.is_empty() || !entries[i].receipt_id.is_empty() {
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
        Ok(PutPartnerEventsResponse {
            batch_id: req.batch_id,
            sequence,
            failed_entry_count: failed as u32,
            entries,
            batch_error: None,
            delivery: delivery_to_proto(delivery) as i32,
        })
    }
}

/// The request's choice; None for UNSPECIFIED (admission refuses values
/// outside the enum).
pub fn requested_delivery(value: i32) -> Option<Delivery> {
    match DeliveryMode::try_from(value) {
        Ok(DeliveryMode::Sync) => Some(Delivery::Sync),
        Ok(DeliveryMode::Durable) => Some(Delivery::Durable),
        _ => None,
    }
}

fn delivery_to_proto(d: Delivery) -> DeliveryMode {
    match d {
        Delivery::Sync => DeliveryMode::Sync,
        Delivery::Durable => DeliveryMode::Durable,
    }
}

/// The answer to a stream batch refused whole: the error for the batch,
/// and the same for each of its entries.
pub fn refused(
    req: PutPartnerEventsRequest,
    sequence: u64,
    err: &ApiError,
) -> PutPartnerEventsResponse {
    refused_batch(req.batch_id, sequence, req.entries.len(), err)
}

/// [`refused`], from the parts of the request it needs.
pub fn refused_batch(
    batch_id: String,
    sequence: u64,
    n: usize,
    err: &ApiError,
) -> PutPartnerEventsResponse {
    let (code, batch_code) = err.codes();
    let message = err.to_string();
    PutPartnerEventsResponse {
        batch_id,
        sequence,
        failed_entry_count: n as u32,
        entries: (0..n)
            .map(|i| result_to_proto(i as u32, EntryResult::refused(batch_code, message.clone())))
            .collect(),
        batch_error: Some(BatchError {
            code: code as i32,
            message,
        }),
        delivery: DeliveryMode::Unspecified as i32,
    }
}
