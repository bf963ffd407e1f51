//! The batch path: from an [`AdmittedBatch`] to its answer. Each entry is
//! converted and validated (a bad one gets its own result), checked against
//! its source's state, and the rest go through the [`Pipeline`]; the answer
//! has one result per entry, in request order.
//!
//! Unary calls and stream batches both come here once admitted; a stage
//! between admission and sending (a fair scheduler, a durable queue) takes
//! an [`AdmittedBatch`] and hands it on to [`BatchProcessor::answer`].

use std::sync::Arc;

use opentelemetry::{trace::SpanContext, KeyValue};
use tokio::{
    sync::{oneshot, watch},
    time::Instant,
};

use crate::{
    domain::{delivery::Delivery, entry::PreparedEntry, outcome::Outcome, tenant::TenantShare},
    durable::{Durable, EnqueueError, Receipt},
    idempotency::{self, Claim, First, Idempotency, Keyed, Settle, Token},
    pipeline::{LateResults, Origins},
    proto::DeliveryMode,
    traces::Traces,
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
    out: Outlets,
    source_states: Arc<SourceStates>,
    settings: BatchSettings,
}

/// Where a batch's entries go; cheap to clone into the task of a batch
/// with idempotency keys.
#[derive(Clone)]
struct Outlets {
    pipeline: Pipeline,
    durable: Arc<Durable>,
    keys: Arc<Idempotency>,
    traces: Arc<Traces>,
    metrics: Arc<Metrics>,
}

/// One entry's answer.
struct Answered {
    index: u32,
    result: EntryResult,
    /// DURABLE: queued under this receipt (`result` is then empty).
    receipt: Option<Receipt>,
    /// Answered from an earlier entry with the same idempotency key.
    deduplicated: bool,
}

impl Answered {
    fn result(index: u32, result: EntryResult) -> Self {
        Self {
            index,
            result,
            receipt: None,
            deduplicated: false,
        }
    }

    fn receipt(index: u32, receipt: Receipt) -> Self {
        Self {
            index,
            result: EntryResult::refused("", ""),
            receipt: Some(receipt),
            deduplicated: false,
        }
    }
}

impl BatchProcessor {
    pub fn new(
        pipeline: Pipeline,
        durable: Arc<Durable>,
        keys: Arc<Idempotency>,
        traces: Arc<Traces>,
        metrics: Arc<Metrics>,
        source_states: Arc<SourceStates>,
        settings: BatchSettings,
    ) -> Self {
        Self {
            out: Outlets {
                pipeline,
                durable,
                keys,
                traces,
                metrics,
            },
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
            parent,
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
        let mut span = self.out.traces.batch(&parent, "PartnerEvents/batch", || {
            vec![
                KeyValue::new("partner_events.tenant", req.tenant_id.clone()),
                KeyValue::new("partner_events.entries", n as i64),
                KeyValue::new("partner_events.sequence", sequence as i64),
                KeyValue::new(
                    "partner_events.delivery",
                    match delivery {
                        Delivery::Sync => "SYNC",
                        Delivery::Durable => "DURABLE",
                    },
                ),
            ]
        });
        let origin = span.context();
        let mut results: Vec<Option<EntryResult>> = vec![None; n];
        let mut prepared = Vec::with_capacity(n);
        // The idempotency keys, by request index (allocated at the first).
        let mut keys: Vec<Option<(String, bool)>> = Vec::new();
        for (i, mut e) in req.entries.into_iter().enumerate() {
            let index = i as u32;
            let key = std::mem::take(&mut e.idempotency_key);
            let resend_if_unknown = e.resend_if_unknown;
            let checked = if key.is_empty() {
                Ok(())
            } else {
                idempotency::check_key(&key)
                    .map_err(|m| EntryResult::refused(codes::INVALID_ARGUMENT, m))
            }
            .and_then(|()| {
                entry_from_proto(e).map_err(|e| EntryResult::refused(codes::INVALID_ARGUMENT, e.0))
            })
            .and_then(|e| {
                prepare(index, e, tenant, self.settings.max_call_bytes)
                    .map_err(|e| EntryResult::refused(e.code, e.message))
            });
            match checked {
                Ok(p) => {
                    if !key.is_empty() {
                        if keys.is_empty() {
                            keys.resize(n, None);
                        }
                        keys[i] = Some((key, resend_if_unknown));
                    }
                    prepared.push(p);
                }
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
        let mut answered: Vec<Answered> = Vec::new();
        if !prepared.is_empty() {
            answered = if keys.is_empty() {
                let to = Destination {
                    share: tenant.share(),
                    tenant_id: &req.tenant_id,
                    batch_id: &req.batch_id,
                    delivery,
                };
                self.out
                    .deliver(&to, prepared, Vec::new(), deadline, false, origin)
                    .await?
                    .0
            } else {
                // The keyed work runs in a task of its own, so that it
                // settles every key it claimed even if the caller goes away.
                let batch = KeyedBatch {
                    out: self.out.clone(),
                    share: tenant.share().clone(),
                    tenant_id: req.tenant_id.clone(),
                    batch_id: req.batch_id.clone(),
                    delivery,
                    deadline,
                    origin,
                };
                let (tx, rx) = oneshot::channel();
                tokio::spawn(batch.run(prepared, keys, tx));
                // Should the task fail, each of its entries is reported
                // unknown below.
                rx.await.unwrap_or_else(|_| {
                    tracing::error!("a batch's task ended without an answer");
                    Ok(Vec::new())
                })?
            };
        }
        let mut receipts: Vec<(u32, Receipt)> = Vec::new();
        let mut deduplicated: Vec<u32> = Vec::new();
        for a in answered {
            if let Some(r) = a.receipt {
                receipts.push((a.index, r));
            }
            if a.deduplicated {
                deduplicated.push(a.index);
            }
            results[a.index as usize] = Some(a.result);
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
            entries[index as usize].receipt_id = receipt.to_text();
        }
        for index in deduplicated {
            entries[index as usize].deduplicated = true;
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
            self.out
                .metrics
                .entries_with(label(&run[0]), &req.tenant_id, run.len() as u64);
        }
        for (i, warning) in warnings {
            if !entries[i].event_id.is_empty() || !entries[i].receipt_id.is_empty() {
                entries[i].warning = warning;
            }
        }
        let failed = entries.iter().filter(|e| !e.error_code.is_empty()).count();
        span.set(|| {
            vec![
                KeyValue::new("partner_events.refused", refused as i64),
                KeyValue::new("partner_events.failed", failed as i64),
                KeyValue::new(
                    "partner_events.deduplicated",
                    entries.iter().filter(|e| e.deduplicated).count() as i64,
                ),
            ]
        });
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

/// Whose entries these are and how they go.
struct Destination<'a> {
    share: &'a TenantShare,
    tenant_id: &'a str,
    batch_id: &'a str,
    delivery: Delivery,
}

impl Outlets {
    /// Sends (SYNC) or queues (DURABLE) `entries` (in request order);
    /// `keys` (`(index, hash, fingerprint, expires_ms)`) are written with
    /// DURABLE ones. With `track_late`, SYNC entries still in an
    /// EventBridge call at the deadline get their final results later.
    async fn deliver(
        &self,
        to: &Destination<'_>,
        entries: Vec<PreparedEntry>,
        keys: Vec<(u32, u128, u128, u64)>,
        deadline: Instant,
        track_late: bool,
        origin: Option<SpanContext>,
    ) -> Result<(Vec<Answered>, Option<LateResults>), ApiError> {
        match to.delivery {
            Delivery::Sync => {
                let origins = origin.map_or(Origins::None, Origins::Batch);
                let (results, late) = if track_late {
                    self.pipeline
                        .send_tracked(to.share, entries, deadline, origins)
                        .await
                } else {
                    let results = self
                        .pipeline
                        .send_traced(to.share, entries, deadline, origins)
                        .await;
                    (results, None)
                };
                let answered = results
                    .into_iter()
                    .map(|(index, r)| Answered::result(index, r))
                    .collect();
                Ok((answered, late))
            }
            Delivery::Durable => {
                let indices: Vec<u32> = entries.iter().map(|p| p.index).collect();
                let queued = self
                    .durable
                    .enqueue_keyed(to.tenant_id, to.batch_id, entries, keys, origin)
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
                let answered = indices
                    .into_iter()
                    .zip(queued)
                    .map(|(index, receipt)| Answered::receipt(index, receipt))
                    .collect();
                Ok((answered, None))
            }
        }
    }
}

/// A batch some of whose entries carry idempotency keys.
struct KeyedBatch {
    out: Outlets,
    share: TenantShare,
    tenant_id: String,
    batch_id: String,
    delivery: Delivery,
    deadline: Instant,
    /// The batch's span.
    origin: Option<SpanContext>,
}

/// An entry whose key this batch claimed: it is sent, then its key settled.
struct Owned {
    keyed: Keyed,
    token: Token,
    entry: PreparedEntry,
}

impl KeyedBatch {
    /// Claims the keys, sends what is new, waits for what others are
    /// sending, settles the keys it claimed, and answers on `tx`; then
    /// settles the keys of entries that were still in an EventBridge call
    /// at the deadline, once those calls come back.
    async fn run(
        self,
        prepared: Vec<PreparedEntry>,
        keys: Vec<Option<(String, bool)>>,
        tx: oneshot::Sender<Result<Vec<Answered>, ApiError>>,
    ) {
        let store = &self.out.keys;
        let metrics = &self.out.metrics.idempotency;
        // Subscribed before the first claim: no settle is missed.
        let changes = store.changes();
        let mut plain = Vec::new();
        let mut keyed: Vec<(Keyed, PreparedEntry)> = Vec::new();
        for p in prepared {
            match &keys[p.index as usize] {
                None => plain.push(p),
                Some((key, resend_if_unknown)) => keyed.push((
                    Keyed {
                        index: p.index,
                        hash: idempotency::key_hash(&self.tenant_id, key),
                        fingerprint: idempotency::fingerprint(&p),
                        resend_if_unknown: *resend_if_unknown,
                    },
                    p,
                )),
            }
        }
        let claims = store
            .claim(
                &keyed.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
                self.deadline,
            )
            .await;
        let mut answers = Vec::new();
        let mut owned = Vec::new();
        let mut waiting = Vec::new();
        for ((k, entry), claim) in keyed.into_iter().zip(claims) {
            match claim {
                Claim::InFlight => waiting.push((k, entry)),
                claim => {
                    if let Some(o) = self.take(k, entry, claim, &mut answers) {
                        owned.push(o);
                    }
                }
            }
        }
        // Ours go out while we wait for the entries others are sending
        // (an earlier request's, or an earlier entry of this batch).
        let (sent, waited) = tokio::join!(self.send(plain, owned), self.wait(waiting, changes));
        let mut late: Vec<LateKeys> = match sent {
            Ok((mut a, late)) => {
                answers.append(&mut a);
                late.into_iter().collect()
            }
            Err(e) => {
                // Refused whole (the durable queue): the keys claimed while
                // waiting are not sent either. Left in flight, each would
                // end unknown at its lease and answer every resend
                // OutcomeUnknown for an event never sent.
                let unsent = waited
                    .iter()
                    .filter_map(|(k, _, c)| match c {
                        Claim::Mine { token, .. } => Some((k.hash, *token, Settle::Release)),
                        _ => None,
                    })
                    .collect();
                store.settle(unsent).await;
                let _ = tx.send(Err(e));
                return;
            }
        };
        // Keys freed while waiting (their first entry failed): ours now.
        let mut owned = Vec::new();
        for (k, entry, claim) in waited {
            if claim == Claim::InFlight {
                metrics.count("in_flight_timeout", 1);
                answers.push(Answered::result(
                    k.index,
                    EntryResult::refused(
                        codes::IDEMPOTENCY_KEY_IN_FLIGHT,
                        "an earlier entry with this idempotency_key was still being sent when this request's deadline came; resend it to get that entry's result",
                    ),
                ));
            } else if let Some(o) = self.take(k, entry, claim, &mut answers) {
                owned.push(o);
            }
        }
        if !owned.is_empty() {
            match self.send(Vec::new(), owned).await {
                Ok((mut a, more)) => {
                    answers.append(&mut a);
                    late.extend(more);
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
        let _ = tx.send(Ok(answers));
        for (tokens, late) in late {
            let Ok(results) = late.results.await else {
                continue;
            };
            let settle = results
                .into_iter()
                .filter_map(|(index, r)| {
                    let (hash, token) = tokens
                        .iter()
                        .find(|(i, _, _)| *i == index)
                        .map(|t| (t.1, t.2))?;
                    Some((hash, token, settle_for(&r, None)))
                })
                .collect();
            store.settle(settle).await;
        }
    }

    /// Answers a keyed entry by its claim, or hands it back to be sent.
    fn take(
        &self,
        keyed: Keyed,
        entry: PreparedEntry,
        claim: Claim,
        answers: &mut Vec<Answered>,
    ) -> Option<Owned> {
        let metrics = &self.out.metrics.idempotency;
        let index = keyed.index;
        let dedup = |result: EntryResult, receipt: Option<Receipt>| Answered {
            index,
            result,
            receipt,
            deduplicated: true,
        };
        match claim {
            Claim::Mine { token, forced } => {
                metrics.count(if forced { "forced" } else { "new" }, 1);
                return Some(Owned {
                    keyed,
                    token,
                    entry,
                });
            }
            Claim::Seen(First::Accepted { event_id, attempts }) => {
                metrics.count("deduplicated", 1);
                answers.push(dedup(
                    EntryResult {
                        outcome: Outcome::Accepted {
                            event_id: event_id.into(),
                        },
                        attempts,
                    },
                    None,
                ));
            }
            Claim::Seen(First::Queued { receipt }) => {
                metrics.count("deduplicated", 1);
                let mut a = Answered::receipt(index, receipt);
                a.deduplicated = true;
                answers.push(a);
            }
            Claim::Seen(First::Unknown { attempts }) => {
                metrics.count("unknown", 1);
                answers.push(dedup(
                    EntryResult {
                        outcome: Outcome::failed(
                            codes::OUTCOME_UNKNOWN,
                            "an earlier entry with this idempotency_key ended with its outcome unknown (EventBridge may or may not hold it), so this one was not sent; set resend_if_unknown to send it anyway",
                        ),
                        attempts,
                    },
                    None,
                ));
            }
            Claim::Reused => {
                metrics.count("reused", 1);
                answers.push(Answered::result(
                    index,
                    EntryResult::refused(
                        codes::IDEMPOTENCY_KEY_REUSED,
                        "idempotency_key was used, within the idempotency window, for an event with another detail_type, detail, resources or source; a new event needs a new key",
                    ),
                ));
            }
            Claim::InFlight => unreachable!("waited for by the caller"),
        }
        None
    }

    /// Sends `plain` and `owned` entries together and settles the keys of
    /// the owned ones by their results (all of them released should the
    /// durable queue refuse the batch). Returns the answers and, for SYNC
    /// entries still in a call at the deadline, their keys and late results.
    async fn send(
        &self,
        plain: Vec<PreparedEntry>,
        owned: Vec<Owned>,
    ) -> Result<(Vec<Answered>, Option<LateKeys>), ApiError> {
        if plain.is_empty() && owned.is_empty() {
            return Ok((Vec::new(), None));
        }
        let store = &self.out.keys;
        let expires_ms = crate::durable::now_ms() + store.settings().window.as_millis() as u64;
        let mut tokens = Vec::with_capacity(owned.len());
        let mut durable_keys = Vec::new();
        let mut entries = plain;
        for o in owned {
            tokens.push((o.keyed.index, o.keyed.hash, o.token));
            if self.delivery == Delivery::Durable {
                durable_keys.push((o.keyed.index, o.keyed.hash, o.keyed.fingerprint, expires_ms));
            }
            entries.push(o.entry);
        }
        entries.sort_unstable_by_key(|e| e.index);
        let to = Destination {
            share: &self.share,
            tenant_id: &self.tenant_id,
            batch_id: &self.batch_id,
            delivery: self.delivery,
        };
        let sent = self
            .out
            .deliver(
                &to,
                entries,
                durable_keys,
                self.deadline,
                !tokens.is_empty(),
                self.origin.clone(),
            )
            .await;
        let (answers, late) = match sent {
            Ok(s) => s,
            Err(e) => {
                store
                    .settle(
                        tokens
                            .into_iter()
                            .map(|(_, hash, token)| (hash, token, Settle::Release))
                            .collect(),
                    )
                    .await;
                return Err(e);
            }
        };
        let late_indices: &[u32] = late.as_ref().map_or(&[], |l| &l.indices);
        let mut settle = Vec::with_capacity(tokens.len());
        let mut late_tokens = Vec::new();
        for a in &answers {
            let Some(&(index, hash, token)) = tokens.iter().find(|t| t.0 == a.index) else {
                continue;
            };
            if late_indices.contains(&index) {
                // Settled by the call's real outcome, when it comes back.
                late_tokens.push((index, hash, token));
                continue;
            }
            settle.push((hash, token, settle_for(&a.result, a.receipt)));
        }
        store.settle(settle).await;
        Ok((answers, late.map(|l| (late_tokens, l))))
    }

    /// Waits, within the deadline, for the outcome of entries others are
    /// sending with these keys: each ends seen, reused, ours (its first
    /// failed) or still in flight at the deadline.
    async fn wait(
        &self,
        mut waiting: Vec<(Keyed, PreparedEntry)>,
        mut changes: watch::Receiver<u64>,
    ) -> Vec<(Keyed, PreparedEntry, Claim)> {
        let store = &self.out.keys;
        let started = Instant::now();
        let mut done = Vec::with_capacity(waiting.len());
        while !waiting.is_empty() {
            let wake = (Instant::now() + store.poll_every(started.elapsed())).min(self.deadline);
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
            let asked: Vec<Keyed> = waiting.iter().map(|(k, _)| k.clone()).collect();
            let claims = store.claim(&asked, self.deadline).await;
            let past = Instant::now() >= self.deadline;
            let mut still = Vec::new();
            for ((k, e), c) in waiting.into_iter().zip(claims) {
                if c == Claim::InFlight && !past {
                    still.push((k, e));
                } else {
                    done.push((k, e, c));
                }
            }
            waiting = still;
        }
        done
    }
}

/// Keys to settle by late results: `(index, hash, token)` each.
type LateKeys = (Vec<(u32, u128, Token)>, LateResults);

/// What a claimed key becomes by its entry's result.
fn settle_for(result: &EntryResult, receipt: Option<Receipt>) -> Settle {
    if let Some(receipt) = receipt {
        return Settle::Keep(First::Queued { receipt });
    }
    match &result.outcome {
        Outcome::Accepted { event_id } => Settle::Keep(First::Accepted {
            event_id: event_id.as_str().into(),
            attempts: result.attempts,
        }),
        Outcome::Failed { code, .. } if code == codes::OUTCOME_UNKNOWN => {
            Settle::Keep(First::Unknown {
                attempts: result.attempts,
            })
        }
        // Not accepted, so not held: a resend is sent.
        Outcome::Failed { .. } => Settle::Release,
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
