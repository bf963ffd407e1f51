//! `partnerevents.v1.DeadLetters`: the operators' API over the durable
//! queue's dead letters (list, show, replay, purge), for operator
//! identities only (`[auth] operators`).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{deliveries::timestamp, service::Core, status::ApiError};
use crate::{
    durable::{Receipt, StoredDead},
    proto::{
        dead_letters_server::DeadLetters, DeadLetter, DeadLetterSelection, GetDeadLetterRequest,
        ListDeadLettersRequest, ListDeadLettersResponse, PurgeDeadLettersRequest,
        PurgeDeadLettersResponse, ReplayDeadLettersRequest, ReplayDeadLettersResponse,
    },
};

/// Dead letters per page unless asked otherwise, and at most.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1_000;

/// The tonic service.
#[derive(Clone)]
pub struct DeadLettersService {
    core: Arc<Core>,
}

impl DeadLettersService {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    /// The caller, if it is an operator.
    fn operator<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let caller = self.core.admission.caller(request)?;
        self.core
            .admission
            .authorize_operator(caller.as_ref())
            .map_err(|e| Status::from(ApiError::from(e)))
    }

    /// The receipts a selection names: its receipt ids, or every dead
    /// letter matching its filter when `all` is set.
    fn select(&self, selection: Option<DeadLetterSelection>) -> Result<Vec<Receipt>, Status> {
        let s = selection.unwrap_or_default();
        if !s.receipt_ids.is_empty() {
            return parse_receipts(&s.receipt_ids);
        }
        if !s.all {
            return Err(ApiError::Invalid(vec![(
                "selection".into(),
                "name receipt_ids, or set `all` (with tenant_id or error_code to narrow it)".into(),
            )])
            .into());
        }
        self.core
            .durable
            .select_dead(|d| {
                let tenant_ok = s.tenant_id.is_empty()
                    || d.entry.as_ref().is_some_and(|e| e.tenant == s.tenant_id);
                let code_ok = s.error_code.is_empty() || d.error_code == s.error_code;
                tenant_ok && code_ok
            })
            .map_err(unavailable)
    }
}

fn unavailable(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("the durable queue: {e}"))
}

fn parse_receipts(ids: &[String]) -> Result<Vec<Receipt>, Status> {
    let mut out = Vec::with_capacity(ids.len());
    let mut bad = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        match Receipt::parse(id) {
            Some(r) => out.push(r),
            None => bad.push((
                format!("receipt_ids[{i}]"),
                "not a receipt id (32 hex digits)".to_string(),
            )),
        }
    }
    if bad.is_empty() {
        Ok(out)
    } else {
        Err(ApiError::Invalid(bad).into())
    }
}

fn to_proto(receipt: Receipt, d: StoredDead, include_detail: bool) -> DeadLetter {
    let e = d.entry.unwrap_or_default();
    let size = crate::domain::entry::entry_size(
        e.time,
        &e.source,
        &e.detail_type,
        &e.detail,
        &e.resources,
    );
    DeadLetter {
        receipt_id: receipt.to_text(),
        tenant_id: e.tenant,
        batch_id: e.batch_id,
        index: e.index,
        source: e.source,
        region: e.region,
        detail_type: e.detail_type,
        resources: e.resources,
        detail: if include_detail {
            e.detail
        } else {
            String::new()
        },
        size_bytes: size as u32,
        error_code: d.error_code,
        error_message: d.error_message,
        attempts: d.attempts,
        accepted_time: timestamp(e.accepted_ms),
        dead_lettered_time: timestamp(d.dead_ms),
        redelivered: d.redelivered,
    }
}

#[tonic::async_trait]
impl DeadLetters for DeadLettersService {
    async fn list_dead_letters(
        &self,
        request: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
        self.operator(&request)?;
        let req = request.into_inner();
        let limit = match req.page_size as usize {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let after = if req.page_token.is_empty() {
            None
        } else {
            Some(Receipt::parse(&req.page_token).ok_or_else(|| {
                Status::from(ApiError::Invalid(vec![(
                    "page_token".into(),
                    "not a page token this gateway gave".into(),
                )]))
            })?)
        };
        let durable = self.core.durable.clone();
        let tenant = req.tenant_id.clone();
        let (page, total) =
            tokio::task::spawn_blocking(move || durable.dead_letters(&tenant, after, limit))
                .await
                .map_err(unavailable)?
                .map_err(unavailable)?;
        let next_page_token = if page.len() == limit {
            page.last().map(|(r, _)| r.to_text()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListDeadLettersResponse {
            dead_letters: page
                .into_iter()
                .map(|(r, d)| to_proto(r, d, false))
                .collect(),
            next_page_token,
            total,
        }))
    }

    async fn get_dead_letter(
        &self,
        request: Request<GetDeadLetterRequest>,
    ) -> Result<Response<DeadLetter>, Status> {
        self.operator(&request)?;
        let req = request.into_inner();
        let receipt = parse_receipts(std::slice::from_ref(&req.receipt_id))?[0];
        match self
            .core
            .durable
            .dead_letter(receipt)
            .map_err(unavailable)?
        {
            Some(d) => Ok(Response::new(to_proto(receipt, d, req.include_detail))),
            None => Err(Status::not_found(format!(
                "no dead letter `{}` on this gateway",
                req.receipt_id
            ))),
        }
    }

    async fn replay_dead_letters(
        &self,
        request: Request<ReplayDeadLettersRequest>,
    ) -> Result<Response<ReplayDeadLettersResponse>, Status> {
        self.operator(&request)?;
        let receipts = self.select(request.into_inner().selection)?;
        let n = receipts.len();
        let (replayed, not_found) = self
            .core
            .durable
            .replay(receipts)
            .await
            .map_err(unavailable)?;
        tracing::info!(asked = n, replayed, "dead letters replayed");
        Ok(Response::new(ReplayDeadLettersResponse {
            replayed,
            not_found: not_found.into_iter().map(Receipt::to_text).collect(),
        }))
    }

    async fn purge_dead_letters(
        &self,
        request: Request<PurgeDeadLettersRequest>,
    ) -> Result<Response<PurgeDeadLettersResponse>, Status> {
        self.operator(&request)?;
        let receipts = self.select(request.into_inner().selection)?;
        let n = receipts.len();
        let (purged, not_found) = self
            .core
            .durable
            .purge(receipts)
            .await
            .map_err(unavailable)?;
        tracing::warn!(asked = n, purged, "dead letters purged");
        Ok(Response::new(PurgeDeadLettersResponse {
            purged,
            not_found: not_found.into_iter().map(Receipt::to_text).collect(),
        }))
    }
}
