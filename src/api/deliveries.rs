//! `WatchDeliveries` and `GetDeliveries`: what became of DURABLE entries,
//! read from the durable queue, each caller seeing only the tenants it may
//! write for.

use std::{collections::HashSet, sync::Arc};

use futures::FutureExt;
use prost_types::Timestamp;
use tokio::sync::mpsc;
use tonic::Status;

use super::{service::Core, status::ApiError};
use crate::{
    auth::Caller,
    durable::{Receipt, Standing, StoredReport, REPORT_DEAD},
    proto::{
        DeliveryReport, DeliveryState, GetDeliveriesRequest, GetDeliveriesResponse,
        WatchDeliveriesRequest,
    },
};

/// Most receipt ids one GetDeliveries call may ask for.
pub const MAX_RECEIPTS_PER_GET: usize = 1_000;

/// Reports read from disk per pass of a watch.
const WATCH_PAGE: usize = 256;

/// Reports a watch may have queued toward its client.
pub const WATCH_BUFFER: usize = 256;

/// Epoch ms as a Timestamp (None for 0, "not set").
pub fn timestamp(ms: u64) -> Option<Timestamp> {
    (ms > 0).then(|| Timestamp {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    })
}

/// A cursor names the queue file and a report's sequence, so that one of
/// another file (after a damaged one was replaced) is not misread.
fn cursor(file_id: u64, seq: u64) -> String {
    format!("{file_id:016x}{seq:016x}")
}

fn parse_cursor(text: &str) -> Option<(u64, u64)> {
    if text.len() != 32 || !text.is_ascii() {
        return None;
    }
    let file = u64::from_str_radix(&text[..16], 16).ok()?;
    let seq = u64::from_str_radix(&text[16..], 16).ok()?;
    Some((file, seq))
}

fn report_to_proto(r: StoredReport, cursor: String) -> DeliveryReport {
    let receipt = Receipt::from_bytes(&r.receipt)
        .map(Receipt::to_text)
        .unwrap_or_default();
    DeliveryReport {
        cursor,
        receipt_id: receipt,
        state: if r.outcome == REPORT_DEAD {
            DeliveryState::DeadLettered
        } else {
            DeliveryState::Delivered
        } as i32,
        tenant_id: r.tenant,
        batch_id: r.batch_id,
        index: r.index,
        event_id: r.event_id,
        error_code: r.error_code,
        error_message: r.error_message,
        attempts: r.attempts,
        accepted_time: timestamp(r.accepted_ms),
        completed_time: timestamp(r.completed_ms),
        redelivered: r.redelivered,
        next_attempt_time: None,
    }
}

/// Checks a WatchDeliveries request; returns the sequence to start after
/// and the tenants asked for (empty: every one the caller may see).
pub fn start_watch(
    core: &Core,
    caller: Option<&Caller>,
    req: &WatchDeliveriesRequest,
) -> Result<(u64, HashSet<String>), ApiError> {
    for t in &req.tenant_ids {
        core.admission
            .authorize(caller, t)
            .map_err(ApiError::PermissionDenied)?;
    }
    let durable = &core.durable;
    let start = if !req.cursor.is_empty() {
        let (file, seq) = parse_cursor(&req.cursor).ok_or_else(|| {
            ApiError::Invalid(vec![(
                "cursor".into(),
                "not a cursor this gateway gave (32 hex digits)".into(),
            )])
        })?;
        // Another file's cursor: everything in this one is new to the caller.
        if file == durable.file_id() {
            seq
        } else {
            0
        }
    } else if req.from_now {
        *durable.subscribe().borrow()
    } else {
        0
    };
    Ok((start, req.tenant_ids.iter().cloned().collect()))
}

/// Sends reports after `after` to `tx`, then new ones as they are
/// committed, until the client goes or the gateway shuts down.
pub async fn run_watch(
    core: Arc<Core>,
    caller: Option<Caller>,
    mut after: u64,
    tenants: HashSet<String>,
    tx: mpsc::Sender<Result<DeliveryReport, Status>>,
) {
    let durable = core.durable.clone();
    let file_id = durable.file_id();
    let mut committed = durable.subscribe();
    let mut shutdown = core.shutdown.clone();
    loop {
        let d = durable.clone();
        let read = tokio::task::spawn_blocking(move || d.reports_after(after, WATCH_PAGE)).await;
        let page = match read {
            Ok(Ok(page)) => page,
            Ok(Err(e)) => {
                let _ = tx.send(Err(Status::unavailable(e.to_string()))).await;
                return;
            }
            Err(_) => return,
        };
        let full = page.len() == WATCH_PAGE;
        for (seq, report) in page {
            after = seq;
            let wanted = if tenants.is_empty() {
                core.admission
                    .authorize(caller.as_ref(), &report.tenant)
                    .is_ok()
            } else {
                tenants.contains(&report.tenant)
            };
            if !wanted {
                continue;
            }
            if tx
                .send(Ok(report_to_proto(report, cursor(file_id, seq))))
                .await
                .is_err()
            {
                return;
            }
        }
        if full {
            continue;
        }
        tokio::select! {
            open = committed.wait_for(|last| *last > after).map(|r| r.is_ok()) => {
                if !open {
                    return;
                }
            }
            () = shutdown.wait_for(|s| *s).map(|_| ()) => {
                let _ = tx.send(Err(ApiError::ShuttingDown.into())).await;
                return;
            }
            () = tx.closed() => return,
        }
    }
}

/// GetDeliveries: each receipt's standing, in the order asked.
pub async fn get(
    core: Arc<Core>,
    caller: Option<Caller>,
    req: GetDeliveriesRequest,
) -> Result<GetDeliveriesResponse, ApiError> {
    if req.receipt_ids.len() > MAX_RECEIPTS_PER_GET {
        return Err(ApiError::Invalid(vec![(
            "receipt_ids".into(),
            format!(
                "{} receipt ids; at most {MAX_RECEIPTS_PER_GET} per call",
                req.receipt_ids.len()
            ),
        )]));
    }
    let mut receipts = Vec::with_capacity(req.receipt_ids.len());
    let mut bad = Vec::new();
    for (i, id) in req.receipt_ids.iter().enumerate() {
        match Receipt::parse(id) {
            Some(r) => receipts.push(r),
            None => bad.push((
                format!("receipt_ids[{i}]"),
                "not a receipt id (32 hex digits)".to_string(),
            )),
        }
    }
    if !bad.is_empty() {
        return Err(ApiError::Invalid(bad));
    }
    let durable = core.durable.clone();
    let standings = tokio::task::spawn_blocking(move || {
        receipts
            .into_iter()
            .map(|r| (r, durable.standing(r)))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|_| ApiError::QueueUnavailable("the read was cancelled".into()))?;
    let mut deliveries = Vec::with_capacity(standings.len());
    for (receipt, standing) in standings {
        let standing = standing.map_err(|e| ApiError::QueueUnavailable(e.to_string()))?;
        let not_found = DeliveryReport {
            receipt_id: receipt.to_text(),
            state: DeliveryState::NotFound as i32,
            ..DeliveryReport::default()
        };
        let visible = |tenant: &str| core.admission.authorize(caller.as_ref(), tenant).is_ok();
        deliveries.push(match standing {
            Standing::NotFound => not_found,
            Standing::Final(r) if !visible(&r.tenant) => not_found,
            Standing::Final(r) => report_to_proto(r, String::new()),
            Standing::Queued { entry, .. } if !visible(&entry.tenant) => not_found,
            Standing::Queued {
                entry,
                attempts,
                last_code,
                last_message,
                next_ms,
                in_flight,
                redelivered,
            } => DeliveryReport {
                cursor: String::new(),
                receipt_id: receipt.to_text(),
                state: if in_flight {
                    DeliveryState::InFlight
                } else {
                    DeliveryState::Queued
                } as i32,
                tenant_id: entry.tenant,
                batch_id: entry.batch_id,
                index: entry.index,
                event_id: String::new(),
                error_code: last_code,
                error_message: last_message,
                attempts,
                accepted_time: timestamp(entry.accepted_ms),
                completed_time: None,
                redelivered,
                next_attempt_time: if in_flight { None } else { timestamp(next_ms) },
            },
        });
    }
    Ok(GetDeliveriesResponse { deliveries })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_back() {
        let c = cursor(0xabc, 42);
        assert_eq!(parse_cursor(&c), Some((0xabc, 42)));
        assert_eq!(parse_cursor("42"), None);
        assert!(cursor(1, 9) < cursor(1, 10));
    }
}
