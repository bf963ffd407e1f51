//! The load: what the harness sends and how, through the gateway (tonic
//! client, unary calls or bidirectional streams) and straight to the
//! emulator (the AWS SDK, one `PutPartnerEvents` call per caller batch, cut
//! into calls of 20). Every worker stops sending at the end of its
//! [`Window`] and abandons what is still in flight; each is also bounded in
//! count, so no loop runs on when time misbehaves.

use crate::sync::lock;
use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use aws_sdk_eventbridge::types::PutPartnerEventsRequestEntry;
use tokio::{sync::mpsc, task::JoinSet, time::Instant};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

use crate::{
    domain::limits::MAX_ENTRIES_PER_CALL,
    proto::{
        partner_event_entry::Body, partner_events_client::PartnerEventsClient, PartnerEventEntry,
        PutPartnerEventsRequest,
    },
};

/// The tenant the bench gateway is configured with.
pub const TENANT: &str = "bench";
/// Its one source (the baseline sends to it directly).
pub const SOURCE: &str = "aws.partner/example.com/bench/events";
/// The source's region.
pub const REGION: &str = "us-east-1";
/// The detail type of every bench entry.
pub const DETAIL_TYPE: &str = "BenchEvent";

/// Most batches one worker sends in a scenario, whatever the clock says.
const MAX_BATCHES_PER_WORKER: u64 = 50_000_000;

/// Calls or streams one gateway connection carries at most: below the
/// gateway's default `max_concurrent_streams` (256) per connection.
const STREAMS_PER_CONNECTION: usize = 128;

/// The time span whose answers count.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: Instant,
    pub end: Instant,
}

impl Window {
    fn contains(&self, t: Instant) -> bool {
        t >= self.start && t < self.end
    }
}

/// What workers saw: answers that arrived inside the window.
#[derive(Debug, Default)]
pub struct Tally {
    /// Send-to-answer time of each batch answered in the window, in µs.
    pub latencies_us: Vec<u32>,
    /// Fixed rate: how late each batch answered in the window started
    /// after it was due, in µs (the load generator's own delay).
    pub late_us: Vec<u32>,
    /// Batches answered in the window.
    pub batches: u64,
    /// Entries answered with an event id in the window.
    pub entries_ok: u64,
    /// Entries answered with an error code in the window.
    pub entries_failed: u64,
    /// Entries answered from an earlier entry with the same idempotency
    /// key (`deduplicated`) in the window, counted in `entries_ok` too.
    pub entries_deduplicated: u64,
    /// Calls or streams that failed whole (a gRPC status, an SDK error).
    pub errors: u64,
    /// Fixed rate: requests not sent because too many were outstanding.
    pub skipped: u64,
    /// Streams whose response headers arrived (the gateway took them).
    pub streams_opened: u64,
    /// Entries handed to the transport, at any time.
    pub entries_sent: u64,
    /// The first failure seen (an entry's error code and message, a
    /// status), to tell what went wrong.
    pub first_failure: Option<String>,
}

impl Tally {
    /// Counts an answer that arrived inside the window; whether it did.
    fn answered(
        &mut self,
        window: &Window,
        sent: Instant,
        done: Instant,
        ok: u64,
        failed: u64,
    ) -> bool {
        if !window.contains(done) {
            return false;
        }
        self.batches += 1;
        self.entries_ok += ok;
        self.entries_failed += failed;
        let us = done.saturating_duration_since(sent).as_micros();
        self.latencies_us
            .push(u32::try_from(us).unwrap_or(u32::MAX));
        true
    }

    /// Counts a batch sent at `sent` and answered now.
    fn count(&mut self, window: &Window, sent: Instant, a: Answer) {
        self.entries_sent += a.ok + a.failed;
        if self.answered(window, sent, Instant::now(), a.ok, a.failed) {
            self.entries_deduplicated += a.deduplicated;
        }
        if let Some(f) = a.failure {
            self.failure(|| f);
        }
    }

    fn error(&mut self, window: &Window, at: Instant) {
        if window.contains(at) {
            self.errors += 1;
        }
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, mut other: Tally) {
        self.latencies_us.append(&mut other.latencies_us);
        self.late_us.append(&mut other.late_us);
        self.batches += other.batches;
        self.entries_ok += other.entries_ok;
        self.entries_failed += other.entries_failed;
        self.entries_deduplicated += other.entries_deduplicated;
        self.errors += other.errors;
        self.skipped += other.skipped;
        self.streams_opened += other.streams_opened;
        self.entries_sent += other.entries_sent;
        if self.first_failure.is_none() {
            self.first_failure = other.first_failure;
        }
    }

    fn failure(&mut self, what: impl FnOnce() -> String) {
        if self.first_failure.is_none() {
            self.first_failure = Some(what());
        }
    }
}

/// A JSON object of about 250 bytes: an invoice, as a service would send.
pub fn detail() -> String {
    r#"{"invoice":"in_1MtHbELkdIwHu7ixl4OzzPMv","customer":"cus_NffrFeUfNV2Hib","currency":"eur","amount_due":125000,"paid":true,"lines":[{"id":"il_00000001","amount":1000,"quantity":2},{"id":"il_00000002","amount":1500,"quantity":1}]}"#
        .to_string()
}

/// A gateway request of `entries` entries for the bench tenant.
pub fn grpc_batch(entries: usize) -> PutPartnerEventsRequest {
    grpc_batch_for(TENANT, entries)
}

/// A gateway request of `entries` entries for the bench tenant, asking
/// for delivery `mode` (SYNC: answered once EventBridge took the entries;
/// DURABLE: once they are on the gateway's disk).
pub fn grpc_batch_as(entries: usize, mode: crate::proto::DeliveryMode) -> PutPartnerEventsRequest {
    let mut req = grpc_batch(entries);
    req.delivery = mode as i32;
    req
}

/// A gateway request of `entries` entries for `tenant`.
pub fn grpc_batch_for(tenant: &str, entries: usize) -> PutPartnerEventsRequest {
    let entry = PartnerEventEntry {
        time: None,
        detail_type: DETAIL_TYPE.into(),
        body: Some(Body::Detail(detail())),
        resources: vec![],
        source_key: String::new(),
        idempotency_key: String::new(),
        resend_if_unknown: false,
    };
    PutPartnerEventsRequest {
        tenant_id: tenant.into(),
        entries: vec![entry; entries],
        batch_id: String::new(),
        delivery: 0,
    }
}

/// The same `entries` entries as direct SDK calls of at most 20.
pub fn sdk_calls(entries: usize) -> Vec<Vec<PutPartnerEventsRequestEntry>> {
    let entry = PutPartnerEventsRequestEntry::builder()
        .source(SOURCE)
        .detail_type(DETAIL_TYPE)
        .detail(detail())
        .build();
    let all = vec![entry; entries];
    all.chunks(MAX_ENTRIES_PER_CALL)
        .map(<[_]>::to_vec)
        .collect()
}

/// Clients over several HTTP/2 connections to the gateway, and the
/// connections themselves (for the health service's client).
#[derive(Clone)]
pub struct GatewayClients(Vec<(PartnerEventsClient<Channel>, Channel)>);

impl GatewayClients {
    /// Enough connections for `concurrency` calls or streams (at least 4,
    /// so the gateway's connection tasks can use both cores).
    pub async fn connect(addr: SocketAddr, concurrency: usize) -> Result<Self, String> {
        let n = concurrency.div_ceil(STREAMS_PER_CONNECTION).max(4);
        let mut clients = Vec::with_capacity(n);
        for _ in 0..n {
            let channel = Channel::from_shared(format!("http://{addr}"))
                .map_err(|e| e.to_string())?
                .connect()
                .await
                .map_err(|e| format!("cannot connect to the gateway at {addr}: {e}"))?;
            let client = PartnerEventsClient::new(channel.clone())
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(64 * 1024 * 1024);
            clients.push((client, channel));
        }
        Ok(Self(clients))
    }

    fn get(&self, i: usize) -> PartnerEventsClient<Channel> {
        self.0[i % self.0.len()].0.clone()
    }

    /// A `grpc.health.v1.Health` client on the same connection as
    /// [`GatewayClients::get`]`(i)`.
    fn health(&self, i: usize) -> HealthClient<Channel> {
        HealthClient::new(self.0[i % self.0.len()].1.clone())
    }
}

/// A batch's answer: entries accepted, entries failed, entries answered
/// from an earlier one with their key, and the first failure's code and
/// message.
#[derive(Debug, Default)]
struct Answer {
    ok: u64,
    failed: u64,
    deduplicated: u64,
    failure: Option<String>,
}

/// Counts a gateway response's results.
fn grpc_answer(r: &crate::proto::PutPartnerEventsResponse) -> Answer {
    let failed = u64::from(r.failed_entry_count);
    Answer {
        ok: (r.entries.len() as u64).saturating_sub(failed),
        failed,
        deduplicated: r.entries.iter().filter(|e| e.deduplicated).count() as u64,
        failure: r
            .entries
            .iter()
            .find(|e| !e.error_code.is_empty())
            .map(|e| format!("{}: {}", e.error_code, e.error_message)),
    }
}

/// One unary call, or the status it failed with.
async fn unary_once(
    mut client: PartnerEventsClient<Channel>,
    req: PutPartnerEventsRequest,
) -> Result<Answer, String> {
    let r = client
        .put_partner_events(req)
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
    Ok(grpc_answer(r.get_ref()))
}

/// One caller batch sent directly: its calls of 20 at once, as a client
/// that splits a batch itself would send them.
async fn sdk_once(
    client: aws_sdk_eventbridge::Client,
    calls: Arc<Vec<Vec<PutPartnerEventsRequestEntry>>>,
) -> Result<Answer, String> {
    let sends = calls.iter().map(|entries| {
        let n = entries.len() as u64;
        let call = client
            .put_partner_events()
            .set_entries(Some(entries.clone()))
            .send();
        async move {
            let out = call.await.map_err(|e| {
                use aws_sdk_eventbridge::error::DisplayErrorContext;
                DisplayErrorContext(e).to_string()
            })?;
            let failed = u64::try_from(out.failed_entry_count()).unwrap_or(0);
            let failure = out.entries().iter().find_map(|e| {
                e.error_code()
                    .map(|c| format!("{c}: {}", e.error_message().unwrap_or_default()))
            });
            Ok::<_, String>(Answer {
                ok: n.saturating_sub(failed),
                failed,
                deduplicated: 0,
                failure,
            })
        }
    });
    let mut total = Answer::default();
    for r in futures::future::join_all(sends).await {
        let r = r?;
        total.ok += r.ok;
        total.failed += r.failed;
        total.failure = total.failure.or(r.failure);
    }
    Ok(total)
}

/// Closed loop: `workers` callers, each sending its next batch when the
/// last one is answered. `send(i)` sends one batch for worker `i`.
async fn closed_loop<F, Fut>(workers: usize, window: Window, send: F) -> Tally
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Answer, String>> + Send + 'static,
{
    let send = Arc::new(send);
    let mut set = JoinSet::new();
    for i in 0..workers {
        let send = send.clone();
        set.spawn(async move {
            let mut t = Tally::default();
            for _ in 0..MAX_BATCHES_PER_WORKER {
                let sent = Instant::now();
                if sent >= window.end {
                    break;
                }
                match tokio::time::timeout_at(window.end, send(i)).await {
                    Err(_elapsed) => break,
                    Ok(Ok(a)) => t.count(&window, sent, a),
                    Ok(Err(e)) => {
                        t.error(&window, Instant::now());
                        t.failure(|| e);
                        // A failing target must not turn this into a spin.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            t
        });
    }
    join_tallies(set).await
}

/// Open loop at `rate` batches per second from now to the window's end.
/// Latency counts from when each batch was due, so a lagging sender shows.
///
/// A thread of its own paces the batches (`std::thread::sleep` wakes within
/// tens of microseconds): the runtime's timer has a resolution of 1 ms, and
/// pacing with it sent each millisecond's batches together, a burst every
/// tick that queued in whatever path was measured. How late each batch
/// started after it was due is kept in [`Tally::late_us`].
async fn fixed_rate<F, Fut>(rate: f64, max_outstanding: usize, window: Window, send: F) -> Tally
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<Answer, String>> + Send + 'static,
{
    let tally = Arc::new(Mutex::new(Tally::default()));
    let outstanding = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    let start = Instant::now();
    let max_batches =
        (((window.end - start).as_secs_f64() * rate).ceil() as u64 + 1).min(MAX_BATCHES_PER_WORKER);
    let (due_tx, mut due_rx) = mpsc::unbounded_channel::<(usize, Instant)>();
    let pacer = {
        let (start, end) = (start.into_std(), window.end.into_std());
        std::thread::Builder::new()
            .name("bench-pacer".into())
            .spawn(move || {
                for i in 0..max_batches {
                    let due = start + Duration::from_secs_f64(i as f64 / rate);
                    if due >= end {
                        break;
                    }
                    let now = std::time::Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    if due_tx.send((i as usize, Instant::from_std(due))).is_err() {
                        break;
                    }
                }
            })
    };
    if let Err(e) = pacer {
        lock(&tally).failure(|| format!("cannot start the pacing thread: {e}"));
    }
    while let Some((i, intended)) = due_rx.recv().await {
        while set.try_join_next().is_some() {}
        if outstanding.load(Ordering::Relaxed) >= max_outstanding {
            lock(&tally).skipped += 1;
            continue;
        }
        outstanding.fetch_add(1, Ordering::Relaxed);
        let call = send(i);
        let tally = tally.clone();
        let outstanding = outstanding.clone();
        set.spawn(async move {
            let late = Instant::now().saturating_duration_since(intended);
            let r = tokio::time::timeout_at(window.end, call).await;
            outstanding.fetch_sub(1, Ordering::Relaxed);
            let done = Instant::now();
            let mut t = lock(&tally);
            match r {
                Err(_elapsed) => {}
                Ok(Ok(a)) => {
                    t.entries_sent += a.ok + a.failed;
                    if t.answered(&window, intended, done, a.ok, a.failed) {
                        t.late_us
                            .push(u32::try_from(late.as_micros()).unwrap_or(u32::MAX));
                    }
                    if let Some(f) = a.failure {
                        t.failure(|| f);
                    }
                }
                Ok(Err(e)) => {
                    t.error(&window, done);
                    t.failure(|| e);
                }
            }
        });
    }
    // Every task ends by the window's end (timeout_at above).
    while set.join_next().await.is_some() {}
    let out = std::mem::take(&mut *lock(&tally));
    out
}

async fn join_tallies(mut set: JoinSet<Tally>) -> Tally {
    let mut total = Tally::default();
    while let Some(t) = set.join_next().await {
        match t {
            Ok(t) => total.merge(t),
            Err(_) => total.errors += 1,
        }
    }
    total
}

/// Unary calls of `entries` entries through the gateway, closed loop.
pub async fn gateway_unary(
    clients: GatewayClients,
    entries: usize,
    workers: usize,
    window: Window,
) -> Tally {
    tenant_unary(clients, TENANT, entries, workers, window).await
}

/// Unary calls of `entries` entries through the gateway, closed loop,
/// each asking for delivery `mode` ([`grpc_batch_as`]).
pub async fn gateway_unary_as(
    clients: GatewayClients,
    entries: usize,
    workers: usize,
    window: Window,
    mode: crate::proto::DeliveryMode,
) -> Tally {
    let req = grpc_batch_as(entries, mode);
    closed_loop(workers, window, move |i| {
        unary_once(clients.get(i), req.clone())
    })
    .await
}

/// Unary calls of `entries` entries for `tenant` through the gateway,
/// closed loop.
pub async fn tenant_unary(
    clients: GatewayClients,
    tenant: &str,
    entries: usize,
    workers: usize,
    window: Window,
) -> Tally {
    let req = grpc_batch_for(tenant, entries);
    closed_loop(workers, window, move |i| {
        unary_once(clients.get(i), req.clone())
    })
    .await
}

/// `requests` unary calls of one entry for `tenant`, one every `every`
/// whatever the answers (each call is a task of its own), latency from
/// each call's send. Every answer counts, however late, up to
/// `answer_bound` after its send (beyond it the call counts as an error):
/// a window that dropped late answers would hide the slowest ones.
///
/// The runtime's timer (1 ms resolution) paces them: at one call every
/// tens of milliseconds, a millisecond early or late does not matter, and
/// the latency starts at the send, not at the tick.
pub async fn one_entry_every(
    clients: GatewayClients,
    tenant: &str,
    requests: usize,
    every: Duration,
    answer_bound: Duration,
) -> Tally {
    let req = grpc_batch_for(tenant, 1);
    let mut set = JoinSet::new();
    let mut tick = tokio::time::interval(every);
    // After a stall, the next call goes out at once and the ones after it
    // keep their spacing, rather than a burst of the missed ones.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for i in 0..requests {
        tick.tick().await;
        let call = unary_once(clients.get(i), req.clone());
        set.spawn(async move {
            let mut t = Tally::default();
            let sent = Instant::now();
            let bound = Window {
                start: sent,
                end: sent + answer_bound,
            };
            match tokio::time::timeout(answer_bound, call).await {
                Err(_elapsed) => {
                    t.errors += 1;
                    t.failure(|| format!("no answer within {answer_bound:?}"));
                }
                Ok(Ok(a)) => {
                    t.entries_sent += a.ok + a.failed;
                    t.answered(&bound, sent, Instant::now(), a.ok, a.failed);
                    if let Some(f) = a.failure {
                        t.failure(|| f);
                    }
                }
                Ok(Err(e)) => {
                    t.errors += 1;
                    t.failure(|| e);
                }
            }
            t
        });
    }
    join_tallies(set).await
}

/// What a fill of the gateway got.
#[derive(Debug, Default)]
pub struct Fill {
    /// Entries acknowledged: with a receipt (DURABLE), with an event id
    /// (SYNC).
    pub queued: u64,
    /// Entries answered with an error, and calls failed whole.
    pub failed: u64,
    pub errors: u64,
    pub first_failure: Option<String>,
}

/// Fills the durable queue: `workers` callers send DURABLE unary batches
/// of `entries` entries until `target` entries are claimed (the last batch
/// holds what is left) or `deadline` passes; a batch is claimed before it
/// is sent, so the fill never sends more than `target`.
pub async fn durable_fill(
    clients: GatewayClients,
    entries: usize,
    workers: usize,
    target: u64,
    deadline: Instant,
) -> Fill {
    fill(
        clients,
        entries,
        workers,
        target,
        deadline,
        crate::proto::DeliveryMode::Durable,
        None,
    )
    .await
}

/// [`durable_fill`] in `mode`, each entry with a key of its own when
/// `keys` are given.
pub async fn fill(
    clients: GatewayClients,
    entries: usize,
    workers: usize,
    target: u64,
    deadline: Instant,
    mode: crate::proto::DeliveryMode,
    keys: Option<Keys>,
) -> Fill {
    let claimed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut set = JoinSet::new();
    for i in 0..workers {
        let (claimed, client, keys) = (claimed.clone(), clients.get(i), keys.clone());
        set.spawn(async move {
            let mut f = Fill::default();
            let req = grpc_batch_as(entries, mode);
            for _ in 0..MAX_BATCHES_PER_WORKER {
                let from = claimed.fetch_add(entries as u64, Ordering::Relaxed);
                if from >= target || Instant::now() >= deadline {
                    break;
                }
                let n = (target - from).min(entries as u64) as usize;
                let mut batch = req.clone();
                batch.entries.truncate(n);
                if let Some(k) = &keys {
                    k.stamp(&mut batch);
                }
                match tokio::time::timeout_at(deadline, unary_once(client.clone(), batch)).await {
                    Err(_elapsed) => break,
                    Ok(Ok(a)) => {
                        f.queued += a.ok;
                        f.failed += a.failed;
                        if let (None, Some(e)) = (&f.first_failure, a.failure) {
                            f.first_failure = Some(e);
                        }
                    }
                    Ok(Err(e)) => {
                        f.errors += 1;
                        f.first_failure.get_or_insert(e);
                        // A refusing gateway must not turn this into a spin.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            f
        });
    }
    let mut total = Fill::default();
    while let Some(f) = set.join_next().await {
        match f {
            Ok(f) => {
                total.queued += f.queued;
                total.failed += f.failed;
                total.errors += f.errors;
                if total.first_failure.is_none() {
                    total.first_failure = f.first_failure;
                }
            }
            Err(_) => total.errors += 1,
        }
    }
    total
}

/// Idempotency keys for a run's entries: `<tag>-<n>`, `n` counting up
/// across the run's callers, so that every entry sent gets a key of its
/// own (the tag keeps runs that share one Redis apart).
#[derive(Debug, Clone)]
pub struct Keys {
    tag: Arc<str>,
    next: Arc<std::sync::atomic::AtomicU64>,
}

impl Keys {
    pub fn new(tag: &str) -> Self {
        Self {
            tag: tag.into(),
            next: Arc::default(),
        }
    }

    /// Characters in each key.
    pub fn key_chars(&self) -> usize {
        self.key(0).len()
    }

    fn key(&self, n: u64) -> String {
        format!("{}-{n:020}", self.tag)
    }

    /// Gives every entry of `req` a key no entry had before.
    fn stamp(&self, req: &mut PutPartnerEventsRequest) {
        let from = self
            .next
            .fetch_add(req.entries.len() as u64, Ordering::Relaxed);
        for (e, n) in req.entries.iter_mut().zip(from..) {
            e.idempotency_key = self.key(n);
        }
    }
}

/// Unary calls of `entries` entries through the gateway, closed loop;
/// with `keys`, every entry has a key of its own (none is deduplicated).
pub async fn gateway_unary_keyed(
    clients: GatewayClients,
    entries: usize,
    workers: usize,
    window: Window,
    keys: Option<Keys>,
) -> Tally {
    let req = grpc_batch(entries);
    closed_loop(workers, window, move |i| {
        let mut req = req.clone();
        if let Some(k) = &keys {
            k.stamp(&mut req);
        }
        unary_once(clients.get(i), req)
    })
    .await
}

/// What [`gateway_send_twice`] saw.
#[derive(Debug, Default)]
pub struct Twice {
    /// Each batch's first send (new keys: it goes to EventBridge)...
    pub first: Tally,
    /// ...and its resend at once after that answer (every entry should be
    /// answered from the first, `deduplicated`).
    pub resend: Tally,
    /// The batches whose first send was accepted whole, warm-up included.
    pub accepted: Vec<PutPartnerEventsRequest>,
}

/// Closed loop: `workers` callers each send a batch of `entries` entries
/// with fresh keys and, once it is answered, the same batch again. A cycle
/// under way at the window's end is finished (within `drain`), not
/// abandoned, so that nothing it sent is still going to EventBridge when
/// this returns.
pub async fn gateway_send_twice(
    clients: GatewayClients,
    entries: usize,
    workers: usize,
    window: Window,
    keys: Keys,
    drain: Duration,
) -> Twice {
    let base = grpc_batch(entries);
    let bound = window.end + drain;
    let mut set = JoinSet::new();
    for i in 0..workers {
        let (client, keys, base) = (clients.get(i), keys.clone(), base.clone());
        set.spawn(async move {
            let mut out = Twice::default();
            for _ in 0..MAX_BATCHES_PER_WORKER {
                let sent = Instant::now();
                if sent >= window.end {
                    break;
                }
                let mut req = base.clone();
                keys.stamp(&mut req);
                let once = unary_once(client.clone(), req.clone());
                let first = match tokio::time::timeout_at(bound, once).await {
                    Err(_elapsed) => break,
                    Ok(Ok(a)) => a,
                    Ok(Err(e)) => {
                        out.first.error(&window, Instant::now());
                        out.first.failure(|| e);
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                };
                let whole = first.failed == 0;
                out.first.count(&window, sent, first);
                let resent = Instant::now();
                let again = unary_once(client.clone(), req.clone());
                match tokio::time::timeout_at(bound, again).await {
                    Err(_elapsed) => break,
                    Ok(Ok(a)) => out.resend.count(&window, resent, a),
                    Ok(Err(e)) => {
                        out.resend.error(&window, Instant::now());
                        out.resend.failure(|| e);
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                if whole {
                    out.accepted.push(req);
                }
            }
            out
        });
    }
    let mut total = Twice::default();
    while let Some(t) = set.join_next().await {
        match t {
            Ok(mut t) => {
                total.first.merge(t.first);
                total.resend.merge(t.resend);
                total.accepted.append(&mut t.accepted);
            }
            Err(_) => total.first.errors += 1,
        }
    }
    total
}

/// Sends each of `batches` once more, from `workers` callers, closed loop,
/// until all are answered or `deadline` passes; with the seconds from the
/// start to the last answer.
pub async fn gateway_resend(
    clients: GatewayClients,
    batches: Vec<PutPartnerEventsRequest>,
    workers: usize,
    deadline: Instant,
) -> (Tally, f64) {
    let start = Instant::now();
    let window = Window {
        start,
        end: deadline,
    };
    let batches = Arc::new(batches);
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for i in 0..workers {
        let (client, batches, next) = (clients.get(i), batches.clone(), next.clone());
        set.spawn(async move {
            let mut t = Tally::default();
            let mut last = start;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(req) = batches.get(n) else { break };
                let sent = Instant::now();
                match tokio::time::timeout_at(deadline, unary_once(client.clone(), req.clone()))
                    .await
                {
                    Err(_elapsed) => break,
                    Ok(Ok(a)) => t.count(&window, sent, a),
                    Ok(Err(e)) => {
                        t.error(&window, Instant::now());
                        t.failure(|| e);
                    }
                }
                last = Instant::now();
            }
            (t, last)
        });
    }
    let mut total = Tally::default();
    let mut last = start;
    while let Some(r) = set.join_next().await {
        match r {
            Ok((t, at)) => {
                total.merge(t);
                last = last.max(at);
            }
            Err(_) => total.errors += 1,
        }
    }
    (total, (last - start).as_secs_f64())
}

/// Unary calls of `entries` entries through the gateway at a fixed rate.
pub async fn gateway_unary_at_rate(
    clients: GatewayClients,
    entries: usize,
    rate: f64,
    max_outstanding: usize,
    window: Window,
) -> Tally {
    unary_at_rate(clients, grpc_batch(entries), rate, max_outstanding, window).await
}

/// The same, each request asking for delivery `mode` ([`grpc_batch_as`]).
pub async fn gateway_unary_at_rate_as(
    clients: GatewayClients,
    entries: usize,
    mode: crate::proto::DeliveryMode,
    rate: f64,
    max_outstanding: usize,
    window: Window,
) -> Tally {
    let req = grpc_batch_as(entries, mode);
    unary_at_rate(clients, req, rate, max_outstanding, window).await
}

async fn unary_at_rate(
    clients: GatewayClients,
    req: PutPartnerEventsRequest,
    rate: f64,
    max_outstanding: usize,
    window: Window,
) -> Tally {
    fixed_rate(rate, max_outstanding, window, move |i| {
        unary_once(clients.get(i), req.clone())
    })
    .await
}

/// `grpc.health.v1.Health/Check` for `service` from `workers` callers,
/// closed loop, over the same connections as the other gateway loads: what
/// tonic itself costs per call (HTTP/2, routing, protobuf, the gateway's
/// server layers) with next to no handler. An answer SERVING counts as one
/// entry accepted, any other status as one failed.
pub async fn health_checks(
    clients: GatewayClients,
    service: &str,
    workers: usize,
    window: Window,
) -> Tally {
    let service = service.to_string();
    closed_loop(workers, window, move |i| {
        let mut client = clients.health(i);
        let req = HealthCheckRequest {
            service: service.clone(),
        };
        async move {
            let r = client
                .check(req)
                .await
                .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
            let status = r.get_ref().status;
            Ok(if status == ServingStatus::Serving as i32 {
                Answer {
                    ok: 1,
                    ..Answer::default()
                }
            } else {
                Answer {
                    failed: 1,
                    failure: Some(format!("health status {status}")),
                    ..Answer::default()
                }
            })
        }
    })
    .await
}

/// The same batches straight to the emulator with the SDK, closed loop.
pub async fn sdk_batches(
    client: aws_sdk_eventbridge::Client,
    entries: usize,
    workers: usize,
    window: Window,
) -> Tally {
    let calls = Arc::new(sdk_calls(entries));
    closed_loop(workers, window, move |_| {
        sdk_once(client.clone(), calls.clone())
    })
    .await
}

/// The same batches straight to the emulator at a fixed rate.
pub async fn sdk_batches_at_rate(
    client: aws_sdk_eventbridge::Client,
    entries: usize,
    rate: f64,
    max_outstanding: usize,
    window: Window,
) -> Tally {
    let calls = Arc::new(sdk_calls(entries));
    fixed_rate(rate, max_outstanding, window, move |_| {
        sdk_once(client.clone(), calls.clone())
    })
    .await
}

/// `streams` streams through the gateway, each keeping up to `in_flight`
/// batches of `entries` entries unanswered.
pub async fn gateway_streams(
    clients: GatewayClients,
    streams: usize,
    entries: usize,
    in_flight: usize,
    window: Window,
) -> Tally {
    let req = grpc_batch(entries);
    let mut set = JoinSet::new();
    for i in 0..streams {
        set.spawn(one_stream(clients.get(i), req.clone(), in_flight, window));
    }
    join_tallies(set).await
}

/// One stream: send while fewer than `in_flight` batches are unanswered,
/// match each answer to its batch by `sequence`.
async fn one_stream(
    mut client: PartnerEventsClient<Channel>,
    req: PutPartnerEventsRequest,
    in_flight: usize,
    window: Window,
) -> Tally {
    let mut t = Tally::default();
    let (tx, rx) = mpsc::channel(in_flight.max(1));
    let opened = tokio::time::timeout_at(
        window.end,
        client.stream_partner_events(ReceiverStream::new(rx)),
    )
    .await;
    let mut responses = match opened {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(s)) => {
            t.error(&window, Instant::now());
            t.failure(|| format!("stream refused: {:?}: {}", s.code(), s.message()));
            return t;
        }
        Err(_elapsed) => return t,
    };
    t.streams_opened = 1;
    let entries = req.entries.len() as u64;
    let mut sent_at: HashMap<u64, Instant> = HashMap::with_capacity(in_flight);
    let mut next_sequence = 0u64;
    while next_sequence < MAX_BATCHES_PER_WORKER {
        while sent_at.len() < in_flight && Instant::now() < window.end {
            // Never blocks: the channel holds at most `in_flight` batches
            // and fewer than that are unanswered.
            if tx.try_send(req.clone()).is_err() {
                break;
            }
            sent_at.insert(next_sequence, Instant::now());
            next_sequence += 1;
            t.entries_sent += entries;
        }
        match tokio::time::timeout_at(window.end, responses.message()).await {
            Err(_elapsed) => break,
            Ok(Ok(Some(r))) => {
                let done = Instant::now();
                let Some(sent) = sent_at.remove(&r.sequence) else {
                    t.error(&window, done);
                    t.failure(|| format!("an answer for unknown sequence {}", r.sequence));
                    break;
                };
                let a = grpc_answer(&r);
                t.answered(&window, sent, done, a.ok, a.failed);
                if let Some(f) = a.failure {
                    t.failure(|| f);
                }
            }
            Ok(Ok(None)) => {
                t.error(&window, Instant::now());
                t.failure(|| "the stream ended early".into());
                break;
            }
            Ok(Err(s)) => {
                t.error(&window, Instant::now());
                t.failure(|| format!("stream failed: {:?}: {}", s.code(), s.message()));
                break;
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_fixed_rate_sends_each_batch_once_and_none_before_it_is_due() {
        const RATE: f64 = 2_000.0;
        let start = Instant::now();
        let window = Window {
            start,
            end: start + Duration::from_millis(250),
        };
        let started = Arc::new(Mutex::new(Vec::new()));
        let seen = started.clone();
        let tally = fixed_rate(RATE, 10_000, window, move |i| {
            let seen = seen.clone();
            async move {
                lock(&seen).push((i, Instant::now()));
                Ok(Answer {
                    ok: 1,
                    ..Answer::default()
                })
            }
        })
        .await;
        let mut started = std::mem::take(&mut *lock(&started));
        started.sort_by_key(|(i, _)| *i);
        // Batch i is due i/RATE after the generator's start, which is no
        // earlier than `start`; the window holds 500 of them.
        for (n, (i, at)) in started.iter().enumerate() {
            assert_eq!(*i, n, "each batch once, in order of its index");
            let due = start + Duration::from_secs_f64(*i as f64 / RATE);
            assert!(*at >= due, "batch {i} started {:?} early", due - *at);
        }
        assert!(
            (450..=501).contains(&started.len()),
            "{} batches in a 250 ms window at 2,000/s",
            started.len()
        );
        assert_eq!(tally.batches as usize, tally.latencies_us.len());
        assert_eq!(tally.late_us.len(), tally.latencies_us.len());
        assert_eq!(tally.skipped, 0);
    }
}
