//! The durable queue: DURABLE entries are acknowledged once they are on
//! disk, then delivered in the background through the same [`Pipeline`]
//! as SYNC batches (coalescing, fair share, pacing, breaker), resent with
//! backoff for as long as `max_delivery_age` allows, and reported.
//!
//! An entry's way: [`Durable::enqueue`] (one commit with every batch that
//! arrived meanwhile: [`writer`]) -> the receipt goes back to the caller ->
//! [`Durable::deliver`] picks due entries, tenant by tenant, records that
//! a round starts, and sends them through the pipeline -> each outcome is
//! one commit: delivered (a report), given up (a report and a dead letter),
//! or due again later (its progress).
//!
//! The guarantee: an acknowledged entry is on disk and is delivered at
//! least once, or dead-lettered with its reason. An entry whose round was
//! cut short (a crash, a send whose outcome is unknown) is sent again, and
//! its report says `redelivered`. Order is not kept (EventBridge does not
//! keep it either).
//!
//! # Layout
//! - `settings`: `[durable]`.
//! - `record`: the stored records and receipt ids.
//! - `store`: the redb file, its tables, start-up recovery.
//! - `writer`: the thread that commits, many changes at a time.

mod record;
mod settings;
mod store;
#[cfg(test)]
mod tests;
mod writer;

use std::{
    collections::{BTreeSet, HashMap},
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::{
    sync::{watch, Notify},
    time::Instant,
};

pub use self::{
    record::{
        now_ms, Receipt, StoredDead, StoredEntry, StoredReport, REPORT_DEAD, REPORT_DELIVERED,
    },
    settings::{DurableConfigError, DurableSection, DurableSettings, QUEUE_FILE},
    store::{Recovery, StoreError, StoredKey},
};
use self::{
    record::{Progress, Receipts},
    store::{Change, Done, Finish, Settle, Store},
    writer::Writer,
};
use crate::{
    domain::{
        delivery::codes as durable_codes,
        entry::{entry_size, PreparedEntry},
        limits::MAX_ENTRIES_PER_CALL,
        outcome::{codes, is_retryable_code, EntryResult, Outcome},
        tenant::{SourceRef, TenantDirectory, TenantShare},
    },
    metrics::Metrics,
    pipeline::{Origins, Pipeline},
    sync::lock,
};
use opentelemetry::trace::SpanContext;

/// Bytes a queued entry takes beyond its encoded record: its key and its
/// share of the tree's pages, roughly (the file's own figure is in
/// docs/durable.md).
const ENTRY_OVERHEAD_BYTES: u64 = 64;

/// Entries picked from one tenant per pass of the delivery loop, so that
/// tenants take turns (sent in rounds of one call's worth each).
const PICK_PER_TENANT: usize = 200;

/// What one pass of the delivery loop sends: receipts per tenant.
type Picked = Vec<(Arc<str>, Vec<Receipt>)>;

/// Why a DURABLE batch was not queued.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error(
        "the durable queue is full (durable.{limit} = {value}); nothing of the batch was queued"
    )]
    Full {
        /// `max_bytes` or `max_entries`.
        limit: &'static str,
        value: u64,
        retry_after: Duration,
    },
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// Where an entry stands now.
pub enum Standing {
    Queued {
        entry: Box<StoredEntry>,
        attempts: u32,
        last_code: String,
        last_message: String,
        next_ms: u64,
        in_flight: bool,
        redelivered: bool,
    },
    Final(StoredReport),
    NotFound,
}

/// What delivery knows of a queued entry: kept small, a million of them
/// may be queued (its body and its last failure stay on disk; when it was
/// accepted is in its receipt).
struct Pending {
    tenant: Arc<str>,
    bytes: u32,
    age_from_ms: u64,
    progress: Tally,
    /// A `progress` row is on disk for it (to delete when it finishes).
    progress_row: bool,
    in_flight: bool,
}

/// The counts and times of a [`Progress`], without its words.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    attempts: u32,
    rounds: u32,
    next_ms: u64,
    maybe_sent: bool,
}

impl From<&Progress> for Tally {
    fn from(p: &Progress) -> Self {
        Self {
            attempts: p.attempts,
            rounds: p.rounds,
            next_ms: p.next_ms,
            maybe_sent: p.maybe_sent,
        }
    }
}

#[derive(Default)]
struct State {
    pending: HashMap<Receipt, Pending>,
    /// Per tenant, the entries not in flight, by when they are due.
    ready: HashMap<Arc<str>, BTreeSet<(u64, Receipt)>>,
    /// Per tenant, entries in flight.
    delivering: HashMap<Arc<str>, usize>,
    delivering_total: usize,
    dead: u64,
    /// Where the last pass stopped, so the next starts with another tenant.
    turn: usize,
}

impl State {
    fn make_ready(&mut self, receipt: Receipt, due_ms: u64) {
        if let Some(p) = self.pending.get_mut(&receipt) {
            if p.in_flight {
                p.in_flight = false;
                self.delivering_total -= 1;
                if let Some(n) = self.delivering.get_mut(&p.tenant) {
                    *n -= 1;
                }
            }
            self.ready
                .entry(p.tenant.clone())
                .or_default()
                .insert((due_ms, receipt));
        }
    }

    fn remove(&mut self, receipt: Receipt) -> Option<Pending> {
        let p = self.pending.remove(&receipt)?;
        if p.in_flight {
            self.delivering_total -= 1;
            if let Some(n) = self.delivering.get_mut(&p.tenant) {
                *n -= 1;
            }
        } else if let Some(set) = self.ready.get_mut(&p.tenant) {
            set.retain(|(_, r)| *r != receipt);
        }
        Some(p)
    }
}

/// The durable queue of one gateway.
pub struct Durable {
    settings: DurableSettings,
    store: Arc<Store>,
    writer: Writer,
    receipts: Receipts,
    state: Mutex<State>,
    /// Told when entries become due now (new ones, replayed ones).
    wake: Notify,
    /// Bytes of queued entries and dead letters, against `max_bytes`.
    bytes: AtomicU64,
    /// Entries queued or being queued, against `max_entries` (what the
    /// queue's bookkeeping in memory is bounded by).
    entries: AtomicU64,
    reports: watch::Receiver<u64>,
    metrics: Arc<Metrics>,
    recovery: Recovery,
    /// The last delivery round's id (rounds under way have a row each).
    rounds: AtomicU64,
}

/// What the queue held at start-up.
#[derive(Debug, Clone)]
pub struct Opened {
    pub path: PathBuf,
    /// The file's size on disk.
    pub file_bytes: u64,
    pub queued: u64,
    pub dead: u64,
    pub unreadable: u64,
    pub recovery: Recovery,
    /// Idempotency keys of queued entries whose window has not ended.
    pub keys: Vec<StoredKey>,
}

impl Durable {
    /// Opens the queue file (blocking: reads the whole file), recovering
    /// from damage as [`Store::open`] says, and starts its writer.
    pub fn open(
        settings: DurableSettings,
        metrics: Arc<Metrics>,
    ) -> Result<(Arc<Durable>, Opened), StoreError> {
        let mut state = State::default();
        let mut bytes = 0;
        let mut tenants: HashMap<String, Arc<str>> = HashMap::new();
        let mut on_entry = |e: store::LoadedEntry| {
            let tenant = match tenants.get(&e.tenant) {
                Some(t) => t.clone(),
                None => {
                    let t: Arc<str> = e.tenant.as_str().into();
                    tenants.insert(e.tenant, t.clone());
                    t
                }
            };
            let mut progress = Tally::from(&e.progress);
            // A round that started and never ended: it may have reached
            // EventBridge before the gateway stopped.
            if e.progress.in_round {
                progress.maybe_sent = true;
            }
            bytes += e.bytes + ENTRY_OVERHEAD_BYTES;
            state
                .ready
                .entry(tenant.clone())
                .or_default()
                .insert((progress.next_ms, e.receipt));
            state.pending.insert(
                e.receipt,
                Pending {
                    tenant,
                    bytes: (e.bytes + ENTRY_OVERHEAD_BYTES) as u32,
                    age_from_ms: e.age_from_ms,
                    progress,
                    progress_row: e.progress_row,
                    in_flight: false,
                },
            );
        };
        let (store, mut loaded, recovery) = Store::open(&settings.dir, &mut on_entry)?;
        state.dead = loaded.dead;
        bytes += loaded.dead_bytes;
        let queued = loaded.queued;
        let store = Arc::new(store);
        let (reports_tx, reports) = watch::channel(loaded.last_seq);
        let writer = Writer::start(store.clone(), loaded.last_seq, reports_tx, metrics.clone());
        let m = &metrics.durable;
        m.unreadable_records.inc_by(loaded.unreadable);
        if recovery.damaged_file.is_some() {
            m.damaged_files.inc();
        }
        let opened = Opened {
            path: store.path().to_path_buf(),
            file_bytes: store.file_bytes(),
            queued,
            dead: loaded.dead,
            unreadable: loaded.unreadable,
            recovery: recovery.clone(),
            keys: std::mem::take(&mut loaded.keys),
        };
        let durable = Arc::new(Durable {
            settings,
            store,
            writer,
            receipts: Receipts::default(),
            state: Mutex::new(state),
            wake: Notify::new(),
            bytes: AtomicU64::new(bytes),
            entries: AtomicU64::new(queued),
            reports,
            metrics,
            recovery,
            rounds: AtomicU64::new(0),
        });
        durable.update_gauges();
        Ok((durable, opened))
    }

    pub fn settings(&self) -> &DurableSettings {
        &self.settings
    }

    /// What start-up did about a damaged file.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Queues `entries` of `tenant`'s batch in one commit (shared with
    /// every batch that arrived meanwhile) and returns each one's receipt,
    /// in order, once the commit is on disk. All or none.
    pub async fn enqueue(
        &self,
        tenant: &str,
        batch_id: &str,
        entries: Vec<PreparedEntry>,
    ) -> Result<Vec<Receipt>, EnqueueError> {
        self.enqueue_keyed(tenant, batch_id, entries, Vec::new(), None)
            .await
    }

    /// [`Durable::enqueue`], writing in the same commit the idempotency
    /// keys of the entries at those request indices: `(index, hash,
    /// fingerprint, expires_ms)`. `entries` are in request order.
    pub async fn enqueue_keyed(
        &self,
        tenant: &str,
        batch_id: &str,
        entries: Vec<PreparedEntry>,
        keys: Vec<(u32, u128, u128, u64)>,
        origin: Option<SpanContext>,
    ) -> Result<Vec<Receipt>, EnqueueError> {
        let (trace_id, span_id, trace_flags) = origin
            .as_ref()
            .map(crate::traces::to_stored)
            .unwrap_or_default();
        let now = now_ms();
        let mut records = Vec::with_capacity(entries.len());
        let mut sizes = Vec::with_capacity(entries.len());
        for e in entries {
            let record = StoredEntry {
                tenant: tenant.to_string(),
                batch_id: batch_id.to_string(),
                index: e.index,
                source: e.source.name().to_string(),
                region: e.source.region().to_string(),
                time: e.time,
                detail_type: e.detail_type,
                detail: e.detail,
                resources: e.resources,
                accepted_ms: now,
                age_from_ms: now,
                trace_id: trace_id.clone(),
                span_id: span_id.clone(),
                trace_flags,
            };
            sizes.push(prost::Message::encoded_len(&record) as u64 + ENTRY_OVERHEAD_BYTES);
            records.push((self.receipts.next(now), record));
        }
        let total: u64 = sizes.iter().sum();
        let n = records.len() as u64;
        self.reserve(n, total)?;
        let receipts: Vec<Receipt> = records.iter().map(|(r, _)| *r).collect();
        let change = if keys.is_empty() {
            Change::Enqueue(records)
        } else {
            let keys = keys
                .into_iter()
                .filter_map(|(index, hash, fingerprint, expires_ms)| {
                    // Entries come in request order.
                    let at = records
                        .binary_search_by_key(&index, |(_, e)| e.index)
                        .ok()?;
                    Some(StoredKey {
                        hash,
                        fingerprint,
                        receipt: records[at].0,
                        expires_ms,
                    })
                })
                .collect();
            Change::EnqueueKeyed {
                entries: records,
                keys,
            }
        };
        if let Err(e) = self.writer.commit(change).await {
            self.bytes.fetch_sub(total, Ordering::Relaxed);
            self.entries.fetch_sub(n, Ordering::Relaxed);
            self.metrics
                .durable
                .refused("unavailable", receipts.len() as u64);
            return Err(e.into());
        }
        {
            let tenant: Arc<str> = tenant.into();
            let mut state = lock(&self.state);
            let ready = state.ready.entry(tenant.clone()).or_default();
            for r in &receipts {
                ready.insert((0, *r));
            }
            for (r, bytes) in receipts.iter().zip(sizes) {
                state.pending.insert(
                    *r,
                    Pending {
                        tenant: tenant.clone(),
                        bytes: bytes as u32,
                        age_from_ms: now,
                        progress: Tally::default(),
                        progress_row: false,
                        in_flight: false,
                    },
                );
            }
        }
        self.metrics.durable.enqueued.inc_by(receipts.len() as u64);
        self.update_counts();
        self.wake.notify_one();
        Ok(receipts)
    }

    /// Takes room for `n` entries of `bytes` under `max_entries` and
    /// `max_bytes`, or says which is full.
    fn reserve(&self, n: u64, bytes: u64) -> Result<(), EnqueueError> {
        let full = |limit, value| {
            self.metrics.durable.refused("full", n);
            EnqueueError::Full {
                limit,
                value,
                // Room comes back as entries are delivered: a second is a
                // fair first guess at a paced queue's pace.
                retry_after: Duration::from_secs(1),
            }
        };
        let max_entries = self.settings.max_entries;
        self.entries
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                (used + n <= max_entries).then_some(used + n)
            })
            .map_err(|_| full("max_entries", max_entries))?;
        let max_bytes = self.settings.max_bytes;
        if self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                (used + bytes <= max_bytes).then_some(used + bytes)
            })
            .is_err()
        {
            self.entries.fetch_sub(n, Ordering::Relaxed);
            return Err(full("max_bytes", max_bytes));
        }
        Ok(())
    }

    /// Where `receipt` stands.
    pub fn standing(&self, receipt: Receipt) -> Result<Standing, StoreError> {
        let pending = {
            let state = lock(&self.state);
            state
                .pending
                .get(&receipt)
                .map(|p| (p.progress, p.in_flight))
        };
        if let Some((progress, in_flight)) = pending {
            if let Some(entry) = self.store.entry(receipt)? {
                let stored = self.store.progress(receipt)?.unwrap_or_default();
                return Ok(Standing::Queued {
                    entry: Box::new(entry),
                    attempts: progress.attempts,
                    last_code: stored.last_code,
                    last_message: stored.last_message,
                    next_ms: progress.next_ms,
                    in_flight,
                    redelivered: progress.maybe_sent,
                });
            }
        }
        if let Some(dead) = self.store.dead_letter(receipt)? {
            let entry = dead.entry.clone().unwrap_or_default();
            return Ok(Standing::Final(StoredReport {
                receipt: receipt.to_bytes(),
                outcome: REPORT_DEAD,
                tenant: entry.tenant,
                batch_id: entry.batch_id,
                index: entry.index,
                event_id: String::new(),
                error_code: dead.error_code,
                error_message: dead.error_message,
                attempts: dead.attempts,
                accepted_ms: entry.accepted_ms,
                completed_ms: dead.dead_ms,
                redelivered: dead.redelivered,
            }));
        }
        Ok(match self.store.report_of(receipt)? {
            Some(r) => Standing::Final(r),
            None => Standing::NotFound,
        })
    }

    /// Reports committed after `after`, at most `limit`.
    pub fn reports_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, StoredReport)>, StoreError> {
        self.store.reports_after(after, limit)
    }

    /// The sequence of the last report committed, and its changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.reports.clone()
    }

    /// Ends (`changed()` fails) once the queue file is closed: when the
    /// last holder of this queue (and its writer thread) let go of it.
    pub fn released(&self) -> watch::Receiver<()> {
        self.store.released()
    }

    /// The id of the queue file: cursors carry it.
    pub fn file_id(&self) -> u64 {
        self.store.file_id()
    }

    /// Entries queued (not yet final) now.
    pub fn queued(&self) -> usize {
        lock(&self.state).pending.len()
    }

    /// Dead letters after `after` of `tenant` (all when empty), a page;
    /// and how many match in all.
    pub fn dead_letters(
        &self,
        tenant: &str,
        after: Option<Receipt>,
        limit: usize,
    ) -> Result<(Vec<(Receipt, StoredDead)>, u64), StoreError> {
        self.store
            .dead_letters(after, limit, tenant.is_empty(), |d| {
                tenant.is_empty() || d.entry.as_ref().is_some_and(|e| e.tenant == tenant)
            })
    }

    pub fn dead_letter(&self, receipt: Receipt) -> Result<Option<StoredDead>, StoreError> {
        self.store.dead_letter(receipt)
    }

    /// Receipts of every dead letter that `keep` keeps.
    pub fn select_dead(
        &self,
        keep: impl Fn(&StoredDead) -> bool,
    ) -> Result<Vec<Receipt>, StoreError> {
        let (page, _) = self.store.dead_letters(None, usize::MAX, false, keep)?;
        Ok(page.into_iter().map(|(r, _)| r).collect())
    }

    /// Puts dead letters back in the queue; returns how many, and the
    /// receipts that were no dead letters.
    pub async fn replay(&self, receipts: Vec<Receipt>) -> Result<(u64, Vec<Receipt>), StoreError> {
        let Done::Replayed { entries, not_found } = self
            .writer
            .commit(Change::Replay {
                receipts,
                now_ms: now_ms(),
            })
            .await?
        else {
            return Err(StoreError::Closed);
        };
        let n = entries.len() as u64;
        {
            let mut state = lock(&self.state);
            for (receipt, entry, progress) in entries {
                let tenant: Arc<str> = entry.tenant.as_str().into();
                let bytes = prost::Message::encoded_len(&entry) as u64 + ENTRY_OVERHEAD_BYTES;
                state.dead = state.dead.saturating_sub(1);
                state.pending.insert(
                    receipt,
                    Pending {
                        tenant: tenant.clone(),
                        bytes: bytes as u32,
                        age_from_ms: entry.age_from_ms,
                        progress: Tally::from(&progress),
                        progress_row: true,
                        in_flight: false,
                    },
                );
                state.ready.entry(tenant).or_default().insert((0, receipt));
            }
        }
        // Replayed entries take room again (an operator's act: not refused).
        self.entries.fetch_add(n, Ordering::Relaxed);
        self.metrics.durable.replayed.inc_by(n);
        self.update_counts();
        self.wake.notify_one();
        Ok((n, not_found))
    }

    /// Deletes dead letters; returns how many, and the receipts that were
    /// no dead letters.
    pub async fn purge(&self, receipts: Vec<Receipt>) -> Result<(u64, Vec<Receipt>), StoreError> {
        let Done::Purged { freed, not_found } = self.writer.commit(Change::Purge(receipts)).await?
        else {
            return Err(StoreError::Closed);
        };
        let bytes: u64 = freed.iter().map(|(_, b)| b + ENTRY_OVERHEAD_BYTES).sum();
        let _ = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(bytes))
            });
        {
            let mut state = lock(&self.state);
            state.dead = state.dead.saturating_sub(freed.len() as u64);
        }
        self.update_counts();
        Ok((freed.len() as u64, not_found))
    }

    /// Waits until nothing is queued or `within` passes; says which.
    pub async fn drain(&self, within: Duration) -> bool {
        let until = Instant::now() + within;
        loop {
            if self.queued() == 0 {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The queue's counts, for the metrics: cheap, after every change.
    fn update_counts(&self) {
        let m = &self.metrics.durable;
        let (queued, dead) = {
            let state = lock(&self.state);
            (state.pending.len(), state.dead)
        };
        m.queued_entries.set(queued as i64);
        m.dead_letters.set(dead as i64);
        m.queued_bytes
            .set(self.bytes.load(Ordering::Relaxed) as i64);
    }

    /// The counts and the oldest entry's age: a pass over the queue, so
    /// once a second.
    fn update_gauges(&self) {
        self.update_counts();
        let oldest = lock(&self.state)
            .pending
            .keys()
            .map(|r| r.issued_ms())
            .min();
        let age = oldest.map_or(0.0, |o| now_ms().saturating_sub(o) as f64 / 1000.0);
        self.metrics.durable.oldest_age_seconds.set(age);
    }

    /// Delivers queued entries until `stop` turns true: picks due entries
    /// tenant by tenant (each tenant at most its share of
    /// `max_delivering_entries`), records the round's start, sends them
    /// through `pipeline`, and commits each outcome. Also expires old
    /// reports.
    pub async fn deliver(
        self: Arc<Self>,
        pipeline: Pipeline,
        directory: Arc<dyn Fn() -> Arc<TenantDirectory> + Send + Sync>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut expire_at = Instant::now();
        let mut gauges_at = Instant::now();
        // The rounds under way: each holds the queue (and so its file)
        // until it ends, so they end with delivery (as a crash would end
        // them: their entries are resent, `redelivered`, after the next
        // start), and the file is free for the next open once this returns.
        let mut rounds = tokio::task::JoinSet::new();
        loop {
            if *stop.borrow() {
                rounds.shutdown().await;
                return;
            }
            while rounds.try_join_next().is_some() {}
            let now = Instant::now();
            if now >= expire_at {
                expire_at = now + Duration::from_secs(10);
                self.expire_reports().await;
                self.expire_keys().await;
            }
            if now >= gauges_at {
                gauges_at = now + Duration::from_secs(1);
                self.update_gauges();
            }
            let (picked, next_due) = self.pick(now_ms());
            if picked.is_empty() {
                let wait = next_due
                    .map(|due| Duration::from_millis(due.saturating_sub(now_ms())))
                    .unwrap_or(Duration::from_secs(1))
                    .clamp(Duration::from_millis(1), Duration::from_secs(1));
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            let dir = directory();
            for (tenant, receipts) in picked {
                let share = dir
                    .get(&tenant)
                    .map(|t| t.share().clone())
                    .unwrap_or_else(|| TenantShare::new(&tenant, 1));
                rounds.spawn(self.clone().round(pipeline.clone(), share, receipts));
            }
        }
    }

    /// Due entries to send now, grouped by tenant, marked in flight; and
    /// when the next not-yet-due one is due.
    fn pick(&self, now: u64) -> (Picked, Option<u64>) {
        let max = self.settings.max_delivering_entries;
        let mut state = lock(&self.state);
        let mut tenants: Vec<Arc<str>> = state
            .ready
            .iter()
            .filter(|(_, set)| !set.is_empty())
            .map(|(t, _)| t.clone())
            .collect();
        if tenants.is_empty() {
            return (Vec::new(), None);
        }
        tenants.sort();
        let start = state.turn % tenants.len();
        tenants.rotate_left(start);
        state.turn = state.turn.wrapping_add(1);
        // Each tenant with entries waiting may hold its share of the room.
        let active = tenants
            .len()
            .max(state.delivering.values().filter(|n| **n > 0).count());
        let share = (max / active).max(1);
        let mut picked = Vec::new();
        let mut next_due: Option<u64> = None;
        for tenant in tenants {
            let room_total = max.saturating_sub(state.delivering_total);
            let holding = state.delivering.get(&tenant).copied().unwrap_or(0);
            let room = room_total
                .min(share.saturating_sub(holding))
                .min(PICK_PER_TENANT);
            let Some(set) = state.ready.get_mut(&tenant) else {
                continue;
            };
            let mut mine = Vec::new();
            while mine.len() < room {
                let Some(&(due, receipt)) = set.first() else {
                    break;
                };
                if due > now {
                    next_due = Some(next_due.map_or(due, |n| n.min(due)));
                    break;
                }
                set.pop_first();
                mine.push(receipt);
            }
            // Due later: the loop sleeps until then. Due now but no room:
            // a round that ends wakes the loop.
            if let Some(&(due, _)) = set.first() {
                if due > now {
                    next_due = Some(next_due.map_or(due, |n| n.min(due)));
                }
            }
            if mine.is_empty() {
                continue;
            }
            for r in &mine {
                if let Some(p) = state.pending.get_mut(r) {
                    p.in_flight = true;
                }
            }
            *state.delivering.entry(tenant.clone()).or_default() += mine.len();
            state.delivering_total += mine.len();
            // A round per call's worth: a round's outcomes are committed
            // when its last entry is answered, so small rounds keep a slow
            // entry from holding others' room, and after a crash only
            // entries whose call may have gone out are sent again.
            for round in mine.chunks(MAX_ENTRIES_PER_CALL) {
                picked.push((tenant.clone(), round.to_vec()));
            }
        }
        (picked, next_due)
    }

    /// One round for one tenant's entries: the start on disk, the send,
    /// each outcome committed.
    async fn round(
        self: Arc<Self>,
        pipeline: Pipeline,
        share: TenantShare,
        receipts: Vec<Receipt>,
    ) {
        // One row marks the round's entries as possibly sent from here on.
        let round = self.rounds.fetch_add(1, Ordering::Relaxed) + 1;
        let start = Change::Start {
            round,
            receipts: receipts.clone(),
        };
        if let Err(e) = self.writer.commit(start).await {
            tracing::warn!(error = %e, entries = receipts.len(), "could not record a delivery round's start; trying again in a second");
            self.requeue(&receipts, now_ms() + 1_000);
            return;
        }
        let store = self.store.clone();
        let wanted = receipts.clone();
        let read = tokio::task::spawn_blocking(move || store.entries(&wanted)).await;
        let entries = match read {
            Ok(Ok(entries)) => entries,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not read queued entries; trying again in a second");
                self.abandon(round, &receipts).await;
                return;
            }
            Err(_) => {
                self.abandon(round, &receipts).await;
                return;
            }
        };
        if entries.len() < receipts.len() {
            // Finished or purged meanwhile: nothing to send for those.
            let found: std::collections::HashSet<Receipt> =
                entries.iter().map(|(r, _)| *r).collect();
            let mut state = lock(&self.state);
            for r in receipts.iter().filter(|r| !found.contains(r)) {
                if let Some(p) = state.remove(*r) {
                    self.entries.fetch_sub(1, Ordering::Relaxed);
                    self.bytes.fetch_sub(u64::from(p.bytes), Ordering::Relaxed);
                }
            }
        }
        let mut order = Vec::with_capacity(entries.len());
        let mut prepared = Vec::with_capacity(entries.len());
        // Each entry's call links back to the batch that queued it.
        let mut origins = Vec::with_capacity(entries.len());
        for (i, (receipt, e)) in entries.into_iter().enumerate() {
            origins.push(crate::traces::from_stored(
                &e.trace_id,
                &e.span_id,
                e.trace_flags,
            ));
            let source = SourceRef::new(&e.source, &e.region);
            let size = entry_size(e.time, &e.source, &e.detail_type, &e.detail, &e.resources);
            prepared.push(PreparedEntry {
                index: i as u32,
                source,
                time: e.time,
                detail_type: e.detail_type,
                detail: e.detail,
                resources: e.resources,
                size,
            });
            order.push((receipt, e.tenant, e.batch_id, e.index, e.accepted_ms));
        }
        if prepared.is_empty() {
            self.abandon(round, &[]).await;
            return;
        }
        let deadline = Instant::now() + self.settings.attempt_timeout;
        let results = pipeline
            .send_traced(&share, prepared, deadline, Origins::PerEntry(origins))
            .await;
        let mut by_index: Vec<Option<EntryResult>> = vec![None; order.len()];
        for (i, r) in results {
            if let Some(slot) = by_index.get_mut(i as usize) {
                *slot = Some(r);
            }
        }
        self.settle(round, order, by_index).await;
    }

    /// A round that sent nothing: its entries are tried again in a second,
    /// and its row goes (if it cannot, they only count as possibly sent
    /// after the next start).
    async fn abandon(&self, round: u64, receipts: &[Receipt]) {
        if !receipts.is_empty() {
            self.requeue(receipts, now_ms() + 1_000);
        }
        let settle = Settle {
            round: Some(round),
            ..Settle::default()
        };
        let _ = self.writer.commit(Change::Settle(settle)).await;
    }

    /// Commits each entry's outcome after a round.
    async fn settle(
        &self,
        round: u64,
        order: Vec<(Receipt, String, String, u32, u64)>,
        results: Vec<Option<EntryResult>>,
    ) {
        let now = now_ms();
        let max_age = self.settings.max_delivery_age.as_millis() as u64;
        let mut finishes = Vec::new();
        let mut retries = Vec::new();
        let mut lags = Vec::new();
        {
            let state = lock(&self.state);
            for ((receipt, tenant, batch_id, index, accepted_ms), result) in
                order.into_iter().zip(results)
            {
                let Some(p) = state.pending.get(&receipt) else {
                    continue;
                };
                let result = result.unwrap_or_else(|| {
                    EntryResult::refused(codes::OUTCOME_UNKNOWN, "the round ended without a result")
                });
                let attempts = p.progress.attempts + result.attempts;
                let report =
                    |outcome, event_id: String, code: String, message: String, redelivered| {
                        StoredReport {
                            receipt: receipt.to_bytes(),
                            outcome,
                            tenant: tenant.clone(),
                            batch_id: batch_id.clone(),
                            index,
                            event_id,
                            error_code: code,
                            error_message: message,
                            attempts,
                            accepted_ms,
                            completed_ms: now,
                            redelivered,
                        }
                    };
                match result.outcome {
                    Outcome::Accepted { event_id } => {
                        lags.push(now.saturating_sub(accepted_ms));
                        finishes.push(Finish {
                            receipt,
                            report: report(
                                REPORT_DELIVERED,
                                event_id,
                                String::new(),
                                String::new(),
                                p.progress.maybe_sent,
                            ),
                            dead: None,
                            progress_row: p.progress_row,
                        });
                    }
                    Outcome::Failed { code, message } => {
                        let maybe_sent = p.progress.maybe_sent || code == codes::OUTCOME_UNKNOWN;
                        let retryable = is_retryable_code(&code)
                            || matches!(
                                code.as_str(),
                                codes::OUTCOME_UNKNOWN
                                    | codes::DEADLINE_EXCEEDED
                                    | codes::SHUTTING_DOWN
                                    | codes::REGION_UNAVAILABLE
                            );
                        let expired = now >= p.age_from_ms.saturating_add(max_age);
                        if retryable && !expired {
                            let rounds = p.progress.rounds + 1;
                            let next_ms = now + self.backoff(rounds).as_millis() as u64;
                            retries.push((
                                receipt,
                                Progress {
                                    attempts,
                                    maybe_sent,
                                    in_round: false,
                                    last_code: code,
                                    last_message: message,
                                    next_ms,
                                    rounds,
                                },
                            ));
                            continue;
                        }
                        let (code, message) = if retryable {
                            (
                                durable_codes::MAX_DELIVERY_AGE_EXCEEDED.to_string(),
                                format!(
                                    "still failing after durable.max_delivery_age_ms ({} s); the last failure: {code}: {message}",
                                    max_age / 1000
                                ),
                            )
                        } else {
                            (code, message)
                        };
                        let entry_dead = StoredDead {
                            entry: None,
                            error_code: code.clone(),
                            error_message: message.clone(),
                            attempts,
                            dead_ms: now,
                            redelivered: maybe_sent,
                        };
                        finishes.push(Finish {
                            receipt,
                            report: report(REPORT_DEAD, String::new(), code, message, maybe_sent),
                            dead: Some(entry_dead),
                            progress_row: p.progress_row,
                        });
                    }
                }
            }
        }
        // The dead letters carry their entries: read them before the
        // queue's copy goes in the same commit as the dead letter.
        if finishes.iter().any(|f| f.dead.is_some()) {
            let dead: Vec<Receipt> = finishes
                .iter()
                .filter(|f| f.dead.is_some())
                .map(|f| f.receipt)
                .collect();
            if let Ok(entries) = self.store.entries(&dead) {
                let by: HashMap<Receipt, StoredEntry> = entries.into_iter().collect();
                for f in &mut finishes {
                    if let Some(d) = &mut f.dead {
                        d.entry = by.get(&f.receipt).cloned();
                    }
                }
            }
        }
        let finished: Vec<(Receipt, bool)> = finishes
            .iter()
            .map(|f| (f.receipt, f.dead.is_some()))
            .collect();
        // Outcomes, retries and the round's end in one commit: until it
        // holds, a crash leaves every entry of the round possibly sent.
        let committed = self
            .commit_until_done(Change::Settle(Settle {
                round: Some(round),
                finishes,
                retries: retries.clone(),
            }))
            .await;
        let m = &self.metrics.durable;
        let (mut delivered, mut dead) = (0, 0);
        {
            let mut state = lock(&self.state);
            if committed.is_ok() {
                for (receipt, is_dead) in &finished {
                    let Some(p) = state.remove(*receipt) else {
                        continue;
                    };
                    self.entries.fetch_sub(1, Ordering::Relaxed);
                    if *is_dead {
                        // The dead letter keeps the entry's bytes on disk.
                        state.dead += 1;
                        dead += 1;
                    } else {
                        self.bytes.fetch_sub(u64::from(p.bytes), Ordering::Relaxed);
                        delivered += 1;
                    }
                }
            }
            for (receipt, progress) in &retries {
                let due = progress.next_ms;
                if let Some(p) = state.pending.get_mut(receipt) {
                    // The last failure's words stay on disk (GetDeliveries
                    // reads them there): memory holds counts and times.
                    p.progress = Tally::from(progress);
                    p.progress_row |= committed.is_ok();
                }
                state.make_ready(*receipt, due);
            }
        }
        for lag in &lags {
            m.delivery_lag_seconds.observe(*lag as f64 / 1000.0);
        }
        m.outcome("delivered", delivered);
        m.outcome("dead_lettered", dead);
        m.outcome("retried", retries.len() as u64);
        self.update_counts();
        // Room freed (and retries may be due): the loop picks again.
        self.wake.notify_one();
    }

    /// The wait before round `rounds + 1`: doubling, capped, jittered
    /// between half and all of it.
    fn backoff(&self, rounds: u32) -> Duration {
        let base = self.settings.retry_base.as_millis() as u64;
        let max = self.settings.retry_max.as_millis() as u64;
        let full = base
            .saturating_mul(1u64 << rounds.saturating_sub(1).min(20))
            .min(max);
        Duration::from_millis(full / 2 + fastrand::u64(0..=full / 2))
    }

    fn requeue(&self, receipts: &[Receipt], due_ms: u64) {
        {
            let mut state = lock(&self.state);
            for r in receipts {
                state.make_ready(*r, due_ms);
            }
        }
        self.wake.notify_one();
    }

    /// Commits a change that must not be lost (final outcomes: the entry
    /// reached EventBridge, and sending it again would duplicate it),
    /// trying again each second while the store refuses.
    async fn commit_until_done(&self, change: Change) -> Result<Done, StoreError> {
        loop {
            match self.writer.commit(change.clone()).await {
                Ok(done) => return Ok(done),
                Err(StoreError::Closed) => return Err(StoreError::Closed),
                Err(e) => {
                    tracing::error!(error = %e, "could not record final delivery outcomes; trying again in a second");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn expire_keys(&self) {
        let now = now_ms();
        // A read first: no commit while nothing has expired.
        if self
            .store
            .first_key_expiry()
            .ok()
            .flatten()
            .is_none_or(|first| first >= now)
        {
            return;
        }
        if let Err(e) = self
            .writer
            .commit(Change::ExpireKeys { before_ms: now })
            .await
        {
            tracing::warn!(error = %e, "could not delete idempotency keys past their window");
        }
    }

    async fn expire_reports(&self) {
        let before = now_ms().saturating_sub(self.settings.report_retention.as_millis() as u64);
        // A read first: no commit (no fsync) while nothing has expired.
        let oldest = self
            .store
            .reports_after(0, 1)
            .ok()
            .and_then(|r| r.into_iter().next());
        if oldest.is_none_or(|(_, r)| r.completed_ms >= before) {
            return;
        }
        match self
            .writer
            .commit(Change::Expire { before_ms: before })
            .await
        {
            Ok(Done::Expired(n)) if n > 0 => {
                tracing::debug!(reports = n, "delivery reports past their retention deleted");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not expire old delivery reports"),
        }
    }
}
