//! Cluster mode: the replicas of one deployment share, through Redis (or
//! Valkey), the pacing of EventBridge calls per region and the per-tenant
//! and per-caller limits. Without `[cluster]` nothing here runs.

mod settings;

pub use settings::{ClusterConfigError, ClusterSection, ClusterSettings};

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use redis::{aio::ConnectionManager, Script};
use tokio::{sync::watch, time::Instant};

use crate::metrics::Metrics;

/// How often a replica that fell back asks Redis whether it answers again.
const PROBE_EVERY: Duration = Duration::from_millis(250);

/// Tokens granted by one round trip, or when to ask again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub granted: u32,
    /// With nothing granted: how long until a token would be.
    pub wait: Duration,
}

/// What a limit's script is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// As many as fit, up to the count asked (pacing).
    Some,
    /// All or none (an entry limit: one request's entries).
    All,
}

/// A replica's link to the Redis the replicas share.
pub struct Cluster {
    settings: ClusterSettings,
    conn: ConnectionManager,
    script: Script,
    /// Sharing through Redis now; false: alone, at `fallback_share`.
    /// Followed by the prober (a fallback wakes it) and the health entry.
    joined: watch::Sender<bool>,
    metrics: Arc<Metrics>,
}

impl Cluster {
    /// Connects lazily (a Redis down at start-up leaves the replica alone
    /// until it answers) and starts the prober that joins and rejoins.
    pub fn start(
        settings: ClusterSettings,
        metrics: Arc<Metrics>,
    ) -> redis::RedisResult<Arc<Self>> {
        let client = redis::Client::open(settings.url.as_str())?;
        // A broken connection is made again in the background; calls in
        // the meantime fail at once and the replica paces alone.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout.max(Duration::from_millis(500))))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        metrics.cluster_joined.set(0);
        let cluster = Arc::new(Self {
            settings,
            conn,
            script: Script::new(include_str!("gcra.lua")),
            joined: watch::Sender::new(false),
            metrics,
        });
        tokio::spawn(probe(Arc::downgrade(&cluster), cluster.subscribe()));
        Ok(cluster)
    }

    /// Follows the changes between sharing through Redis (true) and
    /// pacing alone (false); it starts alone until Redis first answers.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.joined.subscribe()
    }

    /// Whether the replica shares through Redis now.
    pub fn joined(&self) -> bool {
        *self.joined.borrow()
    }

    /// Sets whether the replica shares through Redis; true when that
    /// changed it (only a change is told to those who follow it).
    fn set_joined(&self, joined: bool) -> bool {
        self.joined
            .send_if_modified(|now| std::mem::replace(now, joined) != joined)
    }

    /// The fraction of the quotas a replica uses alone.
    pub fn fallback_share(&self) -> f64 {
        self.settings.fallback_share
    }

    /// Most call tokens asked in one round trip.
    pub fn lease_calls(&self) -> u32 {
        self.settings.lease_calls
    }

    /// The key of the pacing of `region`'s calls. The prefix is a hash tag,
    /// so a Redis Cluster keeps every key of one deployment in one slot.
    pub fn pace_key(&self, region: &str) -> String {
        format!("{{{}}}:pace:{region}", self.settings.key_prefix)
    }

    /// The key of an entry limit (`scope` is `tenant` or `caller`).
    pub fn limit_key(&self, scope: &str, subject: &str) -> String {
        format!("{{{}}}:limit:{scope}:{subject}", self.settings.key_prefix)
    }

    /// Takes up to (or, with [`Take::All`], exactly) `want` tokens from the
    /// limit at `key` of `rate` per second and `burst`. None when Redis did
    /// not answer in time or failed: the replica has fallen back, and the
    /// caller goes on alone.
    pub async fn take(
        &self,
        op: &'static str,
        key: &str,
        rate: f64,
        burst: f64,
        want: u32,
        take: Take,
    ) -> Option<Grant> {
        if !self.joined() {
            return None;
        }
        let interval_us = (1e6 / rate).max(1.0);
        let mut invocation = self.script.key(key);
        invocation
            .arg(format!("{interval_us:.3}"))
            .arg(burst.max(1.0).floor() as u64)
            .arg(want)
            .arg(match take {
                Take::Some => "some",
                Take::All => "all",
            });
        let (granted, wait_us) = self.invoke::<(u64, u64)>(op, &invocation).await?;
        Some(Grant {
            granted: granted.min(u64::from(u32::MAX)) as u32,
            wait: Duration::from_micros(wait_us),
        })
    }

    /// The key of an idempotency key's record (`hash` names the tenant
    /// and the caller's key together).
    pub fn idempotency_key(&self, hash: u128) -> String {
        format!("{{{}}}:idem:{hash:032x}", self.settings.key_prefix)
    }

    /// Runs a script invocation within `timeout_ms`. None when Redis did
    /// not answer in time or failed: the replica has fallen back (logged
    /// once per outage), and the caller goes on alone.
    pub async fn invoke<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Option<T> {
        if !self.joined() {
            return None;
        }
        let mut conn = self.conn.clone();
        let started = Instant::now();
        let answer = tokio::time::timeout(
            self.settings.timeout,
            invocation.invoke_async::<T>(&mut conn),
        )
        .await;
        self.metrics
            .cluster_redis_seconds
            .observe(started.elapsed().as_secs_f64());
        match answer {
            Ok(Ok(value)) => {
                self.metrics.cluster_redis_call(op, "ok");
                Some(value)
            }
            Ok(Err(e)) => {
                self.metrics.cluster_redis_call(op, "error");
                self.fall_back(&format!("Redis failed: {e}"));
                None
            }
            Err(_) => {
                self.metrics.cluster_redis_call(op, "timeout");
                self.fall_back(&format!(
                    "Redis did not answer within {} ms",
                    self.settings.timeout.as_millis()
                ));
                None
            }
        }
    }

    /// Goes alone (once per outage: the first failure says why).
    fn fall_back(&self, why: &str) {
        if self.set_joined(false) {
            tracing::warn!(
                redis = %self.settings.url_for_logs,
                share = self.settings.fallback_share,
                "cluster: {why}; pacing alone at the fallback share of the quotas until Redis answers again"
            );
            self.metrics.cluster_joined.set(0);
            self.metrics.cluster_fallbacks.inc();
        }
    }

    fn join(&self, first: bool) {
        if self.set_joined(true) {
            tracing::info!(
                redis = %self.settings.url_for_logs,
                "cluster: {} Redis; pacing and limits are shared",
                if first { "joined through" } else { "rejoined through" }
            );
            self.metrics.cluster_joined.set(1);
        }
    }

    /// One PING, then the script loaded (a Redis that restarted has none:
    /// the first call after a rejoin would pay a second round trip), both
    /// bounded by `within`.
    async fn ping(&self, within: Duration) -> Result<(), String> {
        let mut conn = self.conn.clone();
        let ready = async {
            redis::cmd("PING").query_async::<String>(&mut conn).await?;
            self.script.load_async(&mut conn).await
        };
        match tokio::time::timeout(within, ready).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} ms", within.as_millis())),
        }
    }
}

/// Joins at start, then, each time the replica falls back, asks Redis
/// every [`PROBE_EVERY`] until it answers; while joined, PINGs it every
/// second, since an idle replica makes no calls that would notice Redis
/// going (and the health entry follows). Ends with the cluster.
async fn probe(cluster: Weak<Cluster>, mut joined: watch::Receiver<bool>) {
    let mut first = true;
    let mut said = false;
    loop {
        let Some(c) = cluster.upgrade() else { return };
        if c.joined() {
            drop(c);
            // Woken by a change (a fallback), or by the cluster going.
            if tokio::time::timeout(Duration::from_secs(1), joined.changed())
                .await
                .is_err()
            {
                let Some(c) = cluster.upgrade() else { return };
                if c.joined() {
                    if let Err(e) = c
                        .ping(c.settings.timeout.max(Duration::from_millis(200)))
                        .await
                    {
                        c.fall_back(&format!("Redis did not answer a PING ({e})"));
                    }
                }
            }
            continue;
        }
        let within = if first {
            c.settings.timeout.max(Duration::from_secs(1))
        } else {
            c.settings.timeout.max(Duration::from_millis(200))
        };
        match c.ping(within).await {
            Ok(()) => {
                c.join(first);
                first = false;
                said = false;
            }
            Err(e) => {
                if first && !said {
                    tracing::warn!(
                        redis = %c.settings.url_for_logs,
                        share = c.settings.fallback_share,
                        "cluster: cannot reach Redis ({e}); pacing alone at the fallback share of the quotas until it answers"
                    );
                    said = true;
                }
                drop(c);
                tokio::time::sleep(PROBE_EVERY).await;
            }
        }
    }
}
