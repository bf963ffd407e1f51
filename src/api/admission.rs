//! Admission: who the caller is, whether a request can be taken at all
//! (field checks, authorization, tenant lookup, entries-per-second quotas,
//! open circuit breakers), and room under the in-flight bounds.
//!
//! Everything here runs before any entry is looked at; what it lets through
//! is an [`AdmittedBatch`] plus the [`InFlight`] permits it holds. A refusal
//! is an [`ApiError`].

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use arc_swap::ArcSwap;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};
use tonic::Request;

use super::{batch::requested_delivery, status::ApiError};
use crate::{
    auth::{certificate_identities, AuthError, AuthPolicy, Caller},
    cluster::{Cluster, Take},
    config::{AuthMode, QuotasSection},
    domain::{delivery::Delivery, tenant::TenantDirectory},
    pipeline::Pipeline,
    proto::{DeliveryMode, PutPartnerEventsRequest},
    quota::KeyedLimiter,
    sync::lock,
};

/// Longest `batch_id` accepted: it is echoed and logged, so it stays small.
pub const MAX_BATCH_ID_CHARS: usize = 256;

/// The settings of [`Admission`] that come from the config.
#[derive(Debug, Clone)]
pub struct AdmissionSettings {
    pub max_entries_per_request: usize,
    /// Entries in flight gateway-wide, unary and streams together.
    pub max_in_flight: usize,
    /// Entries in flight one tenant may hold (its share of `max_in_flight`),
    /// so that a flooding tenant leaves room for the others.
    pub max_in_flight_per_tenant: usize,
    pub quotas: QuotasSection,
    /// For the batches that do not choose: a DURABLE batch is taken while
    /// EventBridge is down.
    pub default_delivery: Delivery,
}

/// A batch that passed every request-level check: the rest of its way is
/// entry by entry, and it is answered with one result per entry.
pub struct AdmittedBatch {
    pub request: PutPartnerEventsRequest,
    /// The directory it was checked against; it is processed with the same.
    pub tenants: Arc<TenantDirectory>,
    /// Its place on its stream (0 for a unary call).
    pub sequence: u64,
    /// Nothing is sent for it past this instant.
    pub deadline: Instant,
    /// The caller's trace context (empty when it sent none, or traces are
    /// off): the parent of the batch's span.
    pub parent: opentelemetry::Context,
}

/// The in-flight permits an admitted batch holds, one per entry, until it
/// is answered (on a stream: until its answer is handed to the stream).
pub struct InFlight {
    _gateway: OwnedSemaphorePermit,
    _tenant: OwnedSemaphorePermit,
    _window: Option<OwnedSemaphorePermit>,
}

/// Decides which calls and batches are taken; shared by all calls.
pub struct Admission {
    /// Swapped whole on reload; each batch uses the directory it started with.
    tenants: ArcSwap<TenantDirectory>,
    auth: ArcSwap<AuthPolicy>,
    settings: AdmissionSettings,
    tenant_limits: KeyedLimiter,
    caller_limits: KeyedLimiter,
    /// Cluster mode: the tenant and caller limits are shared through Redis
    /// (the local limiters, at the fallback share, while it is out of reach).
    cluster: Option<Arc<Cluster>>,
    /// One permit per entry in flight, gateway-wide.
    in_flight: Arc<Semaphore>,
    /// One permit per entry in flight, per tenant, up to its share.
    tenant_in_flight: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Admission {
    pub fn new(
        tenants: TenantDirectory,
        auth: AuthPolicy,
        settings: AdmissionSettings,
        cluster: Option<Arc<Cluster>>,
    ) -> Self {
        Self {
            cluster,
            tenants: ArcSwap::from_pointee(tenants),
            auth: ArcSwap::from_pointee(auth),
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight)),
            settings,
            tenant_limits: KeyedLimiter::default(),
            caller_limits: KeyedLimiter::default(),
            tenant_in_flight: Mutex::default(),
        }
    }

    /// `tenant`'s share of the in-flight bound, made on first use.
    pub fn tenant_room(&self, tenant: &str) -> Arc<Semaphore> {
        let mut rooms = lock(&self.tenant_in_flight);
        // Looked up once per batch: no key allocated unless it is new.
        if let Some(room) = rooms.get(tenant) {
            return room.clone();
        }
        rooms
            .entry(tenant.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.settings.max_in_flight_per_tenant)))
            .clone()
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

    /// Entries admitted and not yet answered, gateway-wide.
    pub fn in_flight_entries(&self) -> usize {
        self.settings.max_in_flight - self.in_flight.available_permits()
    }

    /// Whether `caller` may write for (and so see the deliveries of) `tenant`.
    pub fn authorize(&self, caller: Option<&Caller>, tenant: &str) -> Result<(), AuthError> {
        self.auth.load().authorize(caller, tenant)
    }

    /// Whether `caller` may use the operators' API.
    pub fn authorize_operator(&self, caller: Option<&Caller>) -> Result<(), AuthError> {
        self.auth.load().authorize_operator(caller)
    }

    /// Identifies the caller of a request from its metadata and TLS peer.
    pub fn caller<T>(&self, request: &Request<T>) -> Result<Option<Caller>, ApiError> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        // The connection info is the gateway's own (connections.rs), so
        // tonic's `Request::peer_certs` does not see it.
        let cert_identities = crate::connections::peer_certs(request.extensions())
            .and_then(|chain| {
                chain
                    .first()
                    .map(|der| certificate_identities(der.as_ref()))
            })
            .unwrap_or_default();
        let auth = self.auth.load();
        let caller = auth.identify(authorization, cert_identities)?;
        if caller.is_none() && auth.mode == AuthMode::Required {
            return Err(ApiError::Unauthenticated(AuthError::Unauthenticated));
        }
        Ok(caller)
    }

    /// The request-level checks: a batch failing them is refused whole.
    /// Takes the batch's entries from the tenant's and the caller's quotas.
    /// Returns the tenant directory the batch is then processed with.
    pub async fn check(
        &self,
        req: &PutPartnerEventsRequest,
        caller: Option<&Caller>,
    ) -> Result<Arc<TenantDirectory>, ApiError> {
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
        if DeliveryMode::try_from(req.delivery).is_err() {
            violations.push((
                "delivery".to_string(),
                format!(
                    "{} is not a DeliveryMode (0 UNSPECIFIED, 1 SYNC, 2 DURABLE)",
                    req.delivery
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
            return Err(ApiError::Invalid(violations));
        }
        // Authorization before existence: a caller learns nothing about
        // tenants it may not write for.
        self.auth
            .load()
            .authorize(caller, &req.tenant_id)
            .map_err(ApiError::PermissionDenied)?;
        let tenants = self.tenants.load_full();
        if tenants.get(&req.tenant_id).is_none() {
            return Err(ApiError::UnknownTenant(req.tenant_id.clone()));
        }
        self.take_quota(&req.tenant_id, caller, req.entries.len())
            .await?;
        Ok(tenants)
    }

    /// Per-tenant and per-caller entries-per-second limits.
    async fn take_quota(
        &self,
        tenant: &str,
        caller: Option<&Caller>,
        n: usize,
    ) -> Result<(), ApiError> {
        let q = &self.settings.quotas;
        if q.tenant_entries_per_second > 0.0 {
            self.take_limit(
                &self.tenant_limits,
                "tenant",
                tenant,
                q.tenant_entries_per_second,
                n,
            )
            .await?;
        }
        if let Some(caller) = caller {
            let rate = self
                .auth
                .load()
                .caller_rate(caller)
                .unwrap_or(q.caller_entries_per_second);
            if rate > 0.0 {
                self.take_limit(&self.caller_limits, "caller", caller.name(), rate, n)
                    .await?;
            }
        }
        Ok(())
    }

    /// Takes `n` entries from `subject`'s limit of `rate` a second: in
    /// Redis when the replicas share it, else (or while Redis is out of
    /// reach, at the fallback share of the rate) locally.
    async fn take_limit(
        &self,
        local: &KeyedLimiter,
        scope: &'static str,
        subject: &str,
        rate: f64,
        n: usize,
    ) -> Result<(), ApiError> {
        let burst_seconds = self.settings.quotas.burst_seconds;
        let refused = |retry_after| ApiError::RateLimited {
            scope,
            subject: subject.to_string(),
            retry_after,
        };
        let mut local_rate = rate;
        if let Some(cluster) = &self.cluster {
            let want = u32::try_from(n).unwrap_or(u32::MAX);
            let key = cluster.limit_key(scope, subject);
            let burst = rate * burst_seconds;
            match cluster
                .take("limit", &key, rate, burst, want, Take::All)
                .await
            {
                Some(grant) if grant.granted > 0 => return Ok(()),
                Some(grant) => return Err(refused(grant.wait.max(Duration::from_millis(1)))),
                None => local_rate = rate * cluster.fallback_share(),
            }
        }
        local
            .try_take(subject, local_rate, burst_seconds, n)
            .map_err(refused)
    }

    /// Admits a unary call: the request-level checks, then a refusal when
    /// every region it needs is paused, then room for its entries under the
    /// gateway-wide bound, waited for until `deadline`.
    pub async fn admit_call(
        &self,
        pipeline: &Pipeline,
        request: PutPartnerEventsRequest,
        caller: Option<&Caller>,
        deadline: Instant,
        parent: opentelemetry::Context,
    ) -> Result<(AdmittedBatch, InFlight), ApiError> {
        let tenants = self.check(&request, caller).await?;
        let delivery = Delivery::settle(
            requested_delivery(request.delivery),
            tenants.get(&request.tenant_id).and_then(|t| t.delivery()),
            self.settings.default_delivery,
        );
        // A DURABLE batch is what a caller sends precisely while
        // EventBridge is down: it is queued.
        if delivery == Delivery::Sync {
            if let Some(retry_after) = all_regions_down(pipeline, &request, &tenants) {
                return Err(ApiError::RegionUnavailable { retry_after });
            }
        }
        let n = request.entries.len() as u32;
        // The tenant's share first: a tenant over it waits (or is refused)
        // without holding room that other tenants could use.
        let tenant = tokio::time::timeout_at(
            deadline,
            self.tenant_room(&request.tenant_id).acquire_many_owned(n),
        )
        .await
        .map_err(|_elapsed| ApiError::TenantOverloaded {
            tenant: request.tenant_id.clone(),
            limit: self.settings.max_in_flight_per_tenant,
        })?
        .map_err(|_closed| ApiError::ShuttingDown)?;
        let permit =
            tokio::time::timeout_at(deadline, self.in_flight.clone().acquire_many_owned(n))
                .await
                .map_err(|_elapsed| ApiError::Overloaded {
                    max_in_flight: self.settings.max_in_flight,
                })?
                .map_err(|_closed| ApiError::ShuttingDown)?;
        let batch = AdmittedBatch {
            request,
            tenants,
            sequence: 0,
            deadline,
            parent,
        };
        let in_flight = InFlight {
            _gateway: permit,
            _tenant: tenant,
            _window: None,
        };
        Ok((batch, in_flight))
    }

    /// Room for `n` entries of a stream batch: first in the stream's own
    /// `window`, then in its tenant's share ([`Admission::tenant_room`]), then under the
    /// gateway-wide bound, waiting as long as it takes (a stream applies
    /// backpressure instead of shedding). None when the gateway is closing.
    pub async fn wait_for_room(
        &self,
        window: &Arc<Semaphore>,
        tenant_room: Arc<Semaphore>,
        n: u32,
    ) -> Option<InFlight> {
        let w = window.clone().acquire_many_owned(n).await.ok()?;
        let t = tenant_room.acquire_many_owned(n).await.ok()?;
        let g = self.in_flight.clone().acquire_many_owned(n).await.ok()?;
        Some(InFlight {
            _gateway: g,
            _tenant: t,
            _window: Some(w),
        })
    }
}

/// When every region the request's entries go to has an open breaker,
/// the soonest time one lets calls through again.
fn all_regions_down(
    pipeline: &Pipeline,
    req: &PutPartnerEventsRequest,
    tenants: &TenantDirectory,
) -> Option<Duration> {
    let tenant = tenants.get(&req.tenant_id)?;
    let mut soonest: Option<Duration> = None;
    for e in &req.entries {
        let region = tenant.source(&e.source_key)?.region();
        let after = pipeline.region_retry_after(region)?;
        soonest = Some(soonest.map_or(after, |s| s.min(after)));
    }
    soonest
}
