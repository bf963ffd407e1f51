//! The durable queue on disk: one redb file, its tables, every state change
//! as one atomic commit, and what start-up does with a damaged file.
//!
//! Tables (receipts are u128, see [`Receipt`]):
//! - `queue`: receipt -> [`StoredEntry`], written once at acceptance;
//! - `progress`: receipt -> [`Progress`], what delivery did so far;
//! - `reports`: commit sequence -> [`StoredReport`], the final outcomes in
//!   the order they were committed (WatchDeliveries reads it);
//! - `outcomes`: receipt -> sequence of its report (GetDeliveries);
//! - `dead`: receipt -> [`StoredDead`], the dead letters;
//! - `unreadable`: receipt -> the raw bytes of a record that did not
//!   decode at start-up, kept aside rather than dropped;
//! - `meta`: the file's id (cursors name it, so that a cursor of another
//!   file is not misread).
//!
//! Only the writer thread ([`super::writer`]) changes the file; readers
//! open read transactions of their own.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use prost::Message as _;
use redb::{
    Database, DatabaseError, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
};

use super::record::{Progress, Receipt, StoredDead, StoredEntry, StoredReport};

const QUEUE: TableDefinition<u128, &[u8]> = TableDefinition::new("queue");
const PROGRESS: TableDefinition<u128, &[u8]> = TableDefinition::new("progress");
const REPORTS: TableDefinition<u64, &[u8]> = TableDefinition::new("reports");
const OUTCOMES: TableDefinition<u128, u64> = TableDefinition::new("outcomes");
const DEAD: TableDefinition<u128, &[u8]> = TableDefinition::new("dead");
const UNREADABLE: TableDefinition<u128, &[u8]> = TableDefinition::new("unreadable");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Delivery rounds under way: a round's id to the receipts it carries
/// (16 bytes each). One row marks a whole round's entries as possibly sent
/// (a per-entry `progress` row each cost twice the writer's time); it goes
/// in the commit of the round's outcomes, and a row left by a crash turns
/// into its entries' `maybe_sent` progress at the next start.
const ROUNDS: TableDefinition<u64, &[u8]> = TableDefinition::new("rounds");
/// Idempotency keys of queued entries: (expires_ms, key hash) to the
/// entry's fingerprint and receipt (16 bytes each), so that they expire in
/// ranges and survive a restart with their entries.
const KEYS: TableDefinition<(u64, u128), &[u8]> = TableDefinition::new("idempotency_keys");

/// redb's page cache. Its default (1 GiB) is filled by the integrity
/// check at start-up with a large queue, more than a pod's memory; the
/// queue is read mostly in receipt order, which a small cache serves.
pub const CACHE_BYTES: usize = 32 << 20;

/// Reports removed per commit when they pass their retention: redb's
/// deletes are its slowest operation, so they go in bounded ranges.
pub const EXPIRE_PER_COMMIT: usize = 10_000;

/// Why the store could not do something.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the queue file {path} is in use by another process (another gateway with the same [durable] path?)")]
    InUse { path: String },
    #[error("the queue file {path} cannot be opened: {message}")]
    Open { path: String, message: String },
    #[error("the queue file could not be written: {0}")]
    Write(String),
    #[error("the queue file could not be read: {0}")]
    Read(String),
    #[error("the durable queue is closed")]
    Closed,
}

fn write_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Write(e.to_string())
}

fn read_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Read(e.to_string())
}

/// One state change; the writer applies many in one commit.
#[derive(Clone)]
pub enum Change {
    /// New entries, acknowledged once this commits.
    Enqueue(Vec<(Receipt, StoredEntry)>),
    /// New entries with the idempotency keys of some of them.
    EnqueueKeyed {
        entries: Vec<(Receipt, StoredEntry)>,
        keys: Vec<StoredKey>,
    },
    /// Idempotency keys whose window ended before this time deleted (at
    /// most [`EXPIRE_PER_COMMIT`]).
    ExpireKeys { before_ms: u64 },
    /// A delivery round starts: its entries may reach EventBridge from
    /// when this commits until its [`Change::Settle`] does.
    Start { round: u64, receipts: Vec<Receipt> },
    /// A round's outcomes, and the round's row gone (`round`, when the
    /// outcomes are a round's).
    Settle(Settle),
    /// Dead letters back into the queue.
    Replay { receipts: Vec<Receipt>, now_ms: u64 },
    /// Dead letters deleted.
    Purge(Vec<Receipt>),
    /// Reports completed before this time deleted (at most
    /// [`EXPIRE_PER_COMMIT`]).
    Expire { before_ms: u64 },
}

/// The idempotency key of a queued entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredKey {
    pub hash: u128,
    pub fingerprint: u128,
    pub receipt: Receipt,
    /// When its window ends (epoch ms).
    pub expires_ms: u64,
}

/// What a delivery round ended with.
#[derive(Clone, Default)]
pub struct Settle {
    /// The round whose row goes in the same commit.
    pub round: Option<u64>,
    /// Final outcomes: out of the queue, a report each, and a dead letter
    /// for those given up.
    pub finishes: Vec<Finish>,
    /// Entries to try again: their progress (skipped for an entry no
    /// longer queued: it finished meanwhile and stays finished).
    pub retries: Vec<(Receipt, Progress)>,
}

/// A final outcome to commit.
#[derive(Clone)]
pub struct Finish {
    pub receipt: Receipt,
    pub report: StoredReport,
    /// Set for a dead letter.
    pub dead: Option<StoredDead>,
    /// The entry has a `progress` row to delete (most entries, delivered
    /// in their first round, have none).
    pub progress_row: bool,
}

/// What a change did, once committed.
#[derive(Debug, Default)]
pub enum Done {
    #[default]
    Nothing,
    /// Replay: the entries put back (with their receipt), and the receipts
    /// that were no dead letters.
    Replayed {
        entries: Vec<(Receipt, StoredEntry, Progress)>,
        not_found: Vec<Receipt>,
    },
    /// Purge: the bytes freed per receipt purged, and those not found.
    Purged {
        freed: Vec<(Receipt, u64)>,
        not_found: Vec<Receipt>,
    },
    /// Expire: reports deleted.
    Expired(u64),
}

/// An entry read back at start-up (its detail stays on disk).
pub struct LoadedEntry {
    pub receipt: Receipt,
    pub tenant: String,
    pub age_from_ms: u64,
    /// Bytes it takes in the queue table.
    pub bytes: u64,
    pub progress: Progress,
    /// `progress` is from a row on disk (not the default).
    pub progress_row: bool,
}

/// What start-up found in the file.
#[derive(Default)]
pub struct Loaded {
    /// Entries handed to the caller's `on_entry`.
    pub queued: u64,
    pub dead: u64,
    pub dead_bytes: u64,
    /// Records that did not decode, moved to `unreadable`.
    pub unreadable: u64,
    /// The sequence of the last report committed (0: none).
    pub last_seq: u64,
    /// Idempotency keys whose window has not ended.
    pub keys: Vec<StoredKey>,
}

/// What start-up did about a damaged file, if anything.
#[derive(Debug, Default, Clone)]
pub struct Recovery {
    /// redb found the file unclean or damaged and repaired it (it goes back
    /// to the last commit whose pages check out).
    pub repaired: bool,
    /// The file could not be opened: it was moved here, and a new one made.
    pub damaged_file: Option<PathBuf>,
    /// Why it could not be opened.
    pub damage: Option<String>,
    /// Entries and dead letters read from the damaged file into the new one.
    pub salvaged: u64,
    /// Entries and dead letters the damaged file said it held, when that
    /// much of it could be read.
    pub expected: Option<u64>,
}

/// The queue file.
pub struct Store {
    db: Database,
    path: PathBuf,
    file_id: u64,
    /// Dropped after `db` (fields drop in order): its receivers learn
    /// that the file is closed and may be opened again.
    released: tokio::sync::watch::Sender<()>,
}

impl Store {
    /// Opens (or creates) `dir/queue.redb`, checking every page. A file
    /// that does not open is moved aside and what can be read of it is
    /// copied into a new one: start-up never stops on a damaged file.
    pub fn open(
        dir: &Path,
        on_entry: &mut dyn FnMut(LoadedEntry),
    ) -> Result<(Store, Loaded, Recovery), StoreError> {
        let path = dir.join(super::settings::QUEUE_FILE);
        let open_err = |message: String| StoreError::Open {
            path: path.display().to_string(),
            message,
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| open_err(format!("cannot create {}: {e}", dir.display())))?;
        let mut recovery = Recovery::default();
        let db = match open_checked(&path) {
            Ok((db, repaired)) => {
                recovery.repaired = repaired;
                db
            }
            Err(DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::InUse {
                    path: path.display().to_string(),
                })
            }
            Err(DatabaseError::Storage(redb::StorageError::Io(e)))
                if e.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                return Err(open_err(e.to_string()));
            }
            Err(damage) => {
                let aside = aside_name(&path);
                std::fs::rename(&path, &aside)
                    .map_err(|e| open_err(format!("{damage}; and moving it aside failed: {e}")))?;
                sync_dir(dir);
                recovery.damaged_file = Some(aside.clone());
                recovery.damage = Some(damage.to_string());
                let (db, _) = open_checked(&path).map_err(|e| open_err(e.to_string()))?;
                let (salvaged, expected) = salvage(&aside, &db);
                recovery.salvaged = salvaged;
                recovery.expected = expected;
                db
            }
        };
        let file_id = ensure_file_id(&db).map_err(|e| open_err(e.to_string()))?;
        let store = Store {
            db,
            path,
            file_id,
            released: tokio::sync::watch::channel(()).0,
        };
        let loaded = store.load(on_entry)?;
        Ok((store, loaded, recovery))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Ends (`changed()` fails) once the file is closed.
    pub fn released(&self) -> tokio::sync::watch::Receiver<()> {
        self.released.subscribe()
    }

    /// A random id fixed when the file was made.
    pub fn file_id(&self) -> u64 {
        self.file_id
    }

    /// Reads the queue's bookkeeping (not the entries' bodies), handing
    /// each entry to `on_entry` as it goes (a million entries are not held
    /// twice); moves records that do not decode to `unreadable`.
    fn load(&self, on_entry: &mut dyn FnMut(LoadedEntry)) -> Result<Loaded, StoreError> {
        let mut loaded = Loaded::default();
        let mut bad: Vec<(u128, Vec<u8>, &'static str)> = Vec::new();
        let mut round_ids: Vec<u64> = Vec::new();
        // Entries of those rounds still queued, with their progress.
        let mut marked: Vec<(u128, Progress)> = Vec::new();
        {
            let txn = self.db.begin_read().map_err(read_err)?;
            let queue = txn.open_table(QUEUE).map_err(read_err)?;
            let progress = txn.open_table(PROGRESS).map_err(read_err)?;
            // Rounds a stop (or crash) left open: their entries may have
            // been sent. A file from before the table has none.
            let mut in_round = std::collections::HashSet::new();
            match txn.open_table(ROUNDS) {
                Ok(rounds) => {
                    for row in rounds.iter().map_err(read_err)? {
                        let (k, v) = row.map_err(read_err)?;
                        round_ids.push(k.value());
                        in_round.extend(decode_receipts(v.value()));
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(read_err(e)),
            }
            for row in queue.iter().map_err(read_err)? {
                let (k, v) = row.map_err(read_err)?;
                let (receipt, bytes) = (k.value(), v.value());
                let Ok(entry) = StoredEntry::decode(bytes) else {
                    bad.push((receipt, bytes.to_vec(), "queue"));
                    continue;
                };
                let row = progress.get(receipt).map_err(read_err)?;
                let mut progress_row = row.is_some();
                let mut progress = match row {
                    None => Progress::default(),
                    Some(p) => Progress::decode(p.value()).unwrap_or_else(|_| {
                        // Only counts and flags: the entry itself is sound,
                        // so it is delivered, counted as possibly sent.
                        Progress {
                            maybe_sent: true,
                            ..Progress::default()
                        }
                    }),
                };
                if in_round.contains(&receipt) {
                    progress.in_round = true;
                    marked.push((receipt, progress.clone()));
                    progress_row = true;
                }
                loaded.queued += 1;
                on_entry(LoadedEntry {
                    receipt: Receipt(receipt),
                    tenant: entry.tenant,
                    age_from_ms: entry.age_from_ms,
                    bytes: bytes.len() as u64,
                    progress,
                    progress_row,
                });
            }
            let dead = txn.open_table(DEAD).map_err(read_err)?;
            for row in dead.iter().map_err(read_err)? {
                let (k, v) = row.map_err(read_err)?;
                if StoredDead::decode(v.value()).is_err() {
                    bad.push((k.value(), v.value().to_vec(), "dead"));
                    continue;
                }
                loaded.dead += 1;
                loaded.dead_bytes += v.value().len() as u64;
            }
            let reports = txn.open_table(REPORTS).map_err(read_err)?;
            loaded.last_seq = reports
                .last()
                .map_err(read_err)?
                .map_or(0, |(k, _)| k.value());
            // A file from before idempotency keys has no such table.
            match txn.open_table(KEYS) {
                Ok(keys) => {
                    let now = super::now_ms();
                    for row in keys.range((now, 0)..).map_err(read_err)? {
                        let (k, v) = row.map_err(read_err)?;
                        let ((expires_ms, hash), v) = (k.value(), v.value());
                        if let Some(key) = decode_key(hash, expires_ms, v) {
                            loaded.keys.push(key);
                        }
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(read_err(e)),
            }
        }
        if !round_ids.is_empty() {
            // The rounds' marks become their entries' own (`in_round`, so
            // every later start still counts them as possibly sent), and
            // the rows go: round ids start again with this process.
            let txn = self.db.begin_write().map_err(write_err)?;
            {
                let mut progress = txn.open_table(PROGRESS).map_err(write_err)?;
                let mut rounds = txn.open_table(ROUNDS).map_err(write_err)?;
                let mut buf = Vec::new();
                for (receipt, p) in &marked {
                    buf.clear();
                    p.encode(&mut buf).expect("a Vec grows");
                    progress
                        .insert(*receipt, buf.as_slice())
                        .map_err(write_err)?;
                }
                for id in &round_ids {
                    rounds.remove(*id).map_err(write_err)?;
                }
            }
            txn.commit().map_err(write_err)?;
        }
        if !bad.is_empty() {
            let txn = self.db.begin_write().map_err(write_err)?;
            {
                let mut unreadable = txn.open_table(UNREADABLE).map_err(write_err)?;
                let mut queue = txn.open_table(QUEUE).map_err(write_err)?;
                let mut dead = txn.open_table(DEAD).map_err(write_err)?;
                let mut progress = txn.open_table(PROGRESS).map_err(write_err)?;
                for (receipt, bytes, table) in &bad {
                    tracing::error!(
                        receipt = %Receipt(*receipt).to_text(),
                        table,
                        bytes = bytes.len(),
                        "a queue record does not decode; it is kept aside in the `unreadable` table and not delivered"
                    );
                    unreadable
                        .insert(*receipt, bytes.as_slice())
                        .map_err(write_err)?;
                    queue.remove(*receipt).map_err(write_err)?;
                    dead.remove(*receipt).map_err(write_err)?;
                    progress.remove(*receipt).map_err(write_err)?;
                }
            }
            txn.commit().map_err(write_err)?;
            loaded.unreadable = bad.len() as u64;
        }
        Ok(loaded)
    }

    /// Applies `changes` in one write transaction and commits it (fsync):
    /// all of them hold, or none. `next_seq` is the sequence the first new
    /// report takes; the result says what each change did.
    pub fn apply(&self, changes: &[Change], next_seq: &mut u64) -> Result<Vec<Done>, StoreError> {
        let mut seq = *next_seq;
        let txn = self.db.begin_write().map_err(write_err)?;
        let mut done = Vec::with_capacity(changes.len());
        {
            let mut queue = txn.open_table(QUEUE).map_err(write_err)?;
            let mut progress = txn.open_table(PROGRESS).map_err(write_err)?;
            let mut reports = txn.open_table(REPORTS).map_err(write_err)?;
            let mut outcomes = txn.open_table(OUTCOMES).map_err(write_err)?;
            let mut dead = txn.open_table(DEAD).map_err(write_err)?;
            let mut rounds = txn.open_table(ROUNDS).map_err(write_err)?;
            let mut keys_table = None;
            let mut buf = Vec::new();
            for change in changes {
                done.push(match change {
                    Change::Enqueue(entries) => {
                        for (receipt, entry) in entries {
                            buf.clear();
                            entry.encode(&mut buf).expect("a Vec grows");
                            queue.insert(receipt.0, buf.as_slice()).map_err(write_err)?;
                        }
                        Done::Nothing
                    }
                    Change::EnqueueKeyed { entries, keys } => {
                        for (receipt, entry) in entries {
                            buf.clear();
                            entry.encode(&mut buf).expect("a Vec grows");
                            queue.insert(receipt.0, buf.as_slice()).map_err(write_err)?;
                        }
                        if keys_table.is_none() {
                            keys_table = Some(txn.open_table(KEYS).map_err(write_err)?);
                        }
                        let table = keys_table.as_mut().expect("opened above");
                        for k in keys {
                            table
                                .insert((k.expires_ms, k.hash), encode_key(k).as_slice())
                                .map_err(write_err)?;
                        }
                        Done::Nothing
                    }
                    Change::ExpireKeys { before_ms } => {
                        if keys_table.is_none() {
                            keys_table = Some(txn.open_table(KEYS).map_err(write_err)?);
                        }
                        let table = keys_table.as_mut().expect("opened above");
                        let old: Vec<(u64, u128)> = table
                            .range(..(*before_ms, 0))
                            .map_err(write_err)?
                            .take(EXPIRE_PER_COMMIT)
                            .map(|row| row.map(|(k, _)| k.value()))
                            .collect::<Result<_, _>>()
                            .map_err(write_err)?;
                        for k in &old {
                            table.remove(*k).map_err(write_err)?;
                        }
                        Done::Expired(old.len() as u64)
                    }
                    Change::Start { round, receipts } => {
                        rounds
                            .insert(*round, encode_receipts(receipts).as_slice())
                            .map_err(write_err)?;
                        Done::Nothing
                    }
                    Change::Settle(settle) => {
                        for f in &settle.finishes {
                            queue.remove(f.receipt.0).map_err(write_err)?;
                            if f.progress_row {
                                progress.remove(f.receipt.0).map_err(write_err)?;
                            }
                            seq += 1;
                            buf.clear();
                            f.report.encode(&mut buf).expect("a Vec grows");
                            reports.insert(seq, buf.as_slice()).map_err(write_err)?;
                            outcomes.insert(f.receipt.0, seq).map_err(write_err)?;
                            if let Some(d) = &f.dead {
                                buf.clear();
                                d.encode(&mut buf).expect("a Vec grows");
                                dead.insert(f.receipt.0, buf.as_slice())
                                    .map_err(write_err)?;
                            }
                        }
                        for (receipt, p) in &settle.retries {
                            // An entry finished meanwhile stays finished.
                            if queue.get(receipt.0).map_err(write_err)?.is_none() {
                                continue;
                            }
                            buf.clear();
                            p.encode(&mut buf).expect("a Vec grows");
                            progress
                                .insert(receipt.0, buf.as_slice())
                                .map_err(write_err)?;
                        }
                        if let Some(round) = settle.round {
                            rounds.remove(round).map_err(write_err)?;
                        }
                        Done::Nothing
                    }
                    Change::Replay { receipts, now_ms } => {
                        let mut entries = Vec::new();
                        let mut not_found = Vec::new();
                        for r in receipts {
                            let letter = dead.remove(r.0).map_err(write_err)?;
                            let Some(letter) = letter else {
                                not_found.push(*r);
                                continue;
                            };
                            let Ok(letter) = StoredDead::decode(letter.value()) else {
                                not_found.push(*r);
                                continue;
                            };
                            let mut entry = letter.entry.unwrap_or_default();
                            entry.age_from_ms = *now_ms;
                            let p = Progress {
                                attempts: letter.attempts,
                                maybe_sent: letter.redelivered,
                                ..Progress::default()
                            };
                            buf.clear();
                            entry.encode(&mut buf).expect("a Vec grows");
                            queue.insert(r.0, buf.as_slice()).map_err(write_err)?;
                            buf.clear();
                            p.encode(&mut buf).expect("a Vec grows");
                            progress.insert(r.0, buf.as_slice()).map_err(write_err)?;
                            outcomes.remove(r.0).map_err(write_err)?;
                            entries.push((*r, entry, p));
                        }
                        Done::Replayed { entries, not_found }
                    }
                    Change::Purge(receipts) => {
                        let mut freed = Vec::new();
                        let mut not_found = Vec::new();
                        for r in receipts {
                            match dead.remove(r.0).map_err(write_err)? {
                                Some(v) => freed.push((*r, v.value().len() as u64)),
                                None => not_found.push(*r),
                            }
                        }
                        Done::Purged { freed, not_found }
                    }
                    Change::Expire { before_ms } => {
                        let mut old = Vec::new();
                        for row in reports.iter().map_err(write_err)? {
                            let (k, v) = row.map_err(write_err)?;
                            let report = StoredReport::decode(v.value()).unwrap_or_default();
                            if report.completed_ms >= *before_ms || old.len() >= EXPIRE_PER_COMMIT {
                                break;
                            }
                            old.push((k.value(), Receipt::from_bytes(&report.receipt)));
                        }
                        for (seq, receipt) in &old {
                            reports.remove(*seq).map_err(write_err)?;
                            if let Some(r) = receipt {
                                // Only if it still points here (a replayed
                                // entry's newer report keeps its index).
                                let current =
                                    outcomes.get(r.0).map_err(write_err)?.map(|g| g.value());
                                if current == Some(*seq) {
                                    outcomes.remove(r.0).map_err(write_err)?;
                                }
                            }
                        }
                        Done::Expired(old.len() as u64)
                    }
                });
            }
        }
        txn.commit().map_err(write_err)?;
        *next_seq = seq;
        Ok(done)
    }

    /// The entries of `receipts` (those still queued), with their progress.
    pub fn entries(&self, receipts: &[Receipt]) -> Result<Vec<(Receipt, StoredEntry)>, StoreError> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let queue = txn.open_table(QUEUE).map_err(read_err)?;
        let mut out = Vec::with_capacity(receipts.len());
        for r in receipts {
            if let Some(v) = queue.get(r.0).map_err(read_err)? {
                if let Ok(e) = StoredEntry::decode(v.value()) {
                    out.push((*r, e));
                }
            }
        }
        Ok(out)
    }

    /// The recorded progress of one queued entry.
    pub fn progress(&self, receipt: Receipt) -> Result<Option<Progress>, StoreError> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let progress = txn.open_table(PROGRESS).map_err(read_err)?;
        let p = progress.get(receipt.0).map_err(read_err)?;
        Ok(p.and_then(|v| Progress::decode(v.value()).ok()))
    }

    /// One queued entry.
    pub fn entry(&self, receipt: Receipt) -> Result<Option<StoredEntry>, StoreError> {
        Ok(self.entries(&[receipt])?.pop().map(|(_, e)| e))
    }

    /// Reports after `after`, at most `limit`, in commit order.
    pub fn reports_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, StoredReport)>, StoreError> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let reports = txn.open_table(REPORTS).map_err(read_err)?;
        let mut out = Vec::new();
        for row in reports.range(after.saturating_add(1)..).map_err(read_err)? {
            let (k, v) = row.map_err(read_err)?;
            if let Ok(r) = StoredReport::decode(v.value()) {
                out.push((k.value(), r));
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The report of `receipt`, while kept.
    pub fn report_of(&self, receipt: Receipt) -> Result<Option<StoredReport>, StoreError> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let outcomes = txn.open_table(OUTCOMES).map_err(read_err)?;
        let Some(seq) = outcomes
            .get(receipt.0)
            .map_err(read_err)?
            .map(|g| g.value())
        else {
            return Ok(None);
        };
        let reports = txn.open_table(REPORTS).map_err(read_err)?;
        let report = reports.get(seq).map_err(read_err)?;
        Ok(report.and_then(|v| StoredReport::decode(v.value()).ok()))
    }

    /// One dead letter.
    pub fn dead_letter(&self, receipt: Receipt) -> Result<Option<StoredDead>, StoreError> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let dead = txn.open_table(DEAD).map_err(read_err)?;
        let letter = dead.get(receipt.0).map_err(read_err)?;
        Ok(letter.and_then(|v| StoredDead::decode(v.value()).ok()))
    }

    /// Dead letters after `after` (oldest first) that `keep` keeps, at most
    /// `limit`; and how many `keep` keeps in all. With `all`, `keep` keeps
    /// every one: the page is read from `after` on and the total is the
    /// table's length, so listing page by page costs a page each.
    pub fn dead_letters(
        &self,
        after: Option<Receipt>,
        limit: usize,
        all: bool,
        keep: impl Fn(&StoredDead) -> bool,
    ) -> Result<(Vec<(Receipt, StoredDead)>, u64), StoreError> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let dead = txn.open_table(DEAD).map_err(read_err)?;
        let from = after.map_or(0, |a| a.0.saturating_add(1));
        let mut page = Vec::new();
        let mut total = 0;
        let rows = if all {
            total = dead.len().map_err(read_err)?;
            dead.range(from..).map_err(read_err)?
        } else {
            dead.iter().map_err(read_err)?
        };
        for row in rows {
            let (k, v) = row.map_err(read_err)?;
            let Ok(letter) = StoredDead::decode(v.value()) else {
                continue;
            };
            if !keep(&letter) {
                continue;
            }
            let receipt = Receipt(k.value());
            if !all {
                total += 1;
            }
            if receipt.0 >= from && page.len() < limit {
                page.push((receipt, letter));
            } else if all && page.len() >= limit {
                break;
            }
        }
        Ok((page, total))
    }

    /// The bytes of the file on disk.
    pub fn file_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }
}

/// Opens with every page's checksum verified; says whether the file was
/// not closed cleanly (and so redb repaired it).
fn open_checked(path: &Path) -> Result<(Database, bool), DatabaseError> {
    let repaired = Arc::new(Mutex::new(false));
    let flag = repaired.clone();
    let path = path.to_path_buf();
    // A damaged file may make redb panic rather than fail: that is a
    // damaged file too.
    let db = std::thread::spawn(move || {
        // The integrity check runs as a repair, so a repair callback would
        // fire for every file ever written: whether the file was closed
        // cleanly is asked first, by a read-only open (it writes nothing),
        // which refuses a file that needs a repair.
        if path.exists()
            && matches!(
                Database::builder().open_read_only(&path),
                Err(DatabaseError::RepairAborted)
            )
        {
            *flag.lock().unwrap_or_else(|p| p.into_inner()) = true;
        }
        let mut builder = Database::builder();
        builder.set_check_integrity_on_open(true);
        builder.set_cache_size(CACHE_BYTES);
        builder.create(&path)
    })
    .join()
    .unwrap_or_else(|_| {
        Err(DatabaseError::Storage(redb::StorageError::Corrupted(
            "reading the file panicked".into(),
        )))
    })?;
    let repaired = *repaired.lock().unwrap_or_else(|p| p.into_inner());
    Ok((db, repaired))
}

/// `queue.redb` -> `queue.redb.damaged-<epoch ms>`.
fn aside_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".damaged-{}", super::record::now_ms()));
    PathBuf::from(name)
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Copies what reads back of the damaged file's queue and dead letters
/// into `db`. Each table is read from both ends, each pass in a thread of
/// its own (reading a damaged file may panic): rows come out as they are
/// read, so a pass that stops at a damaged page (or panics there) keeps
/// what came before it, and the pass from the other end reads what lies
/// beyond. Returns how many were copied, and how many the file said it held.
fn salvage(damaged: &Path, db: &Database) -> (u64, Option<u64>) {
    use std::collections::BTreeMap;
    enum Row {
        Queue(u128, Vec<u8>),
        Dead(u128, Vec<u8>),
        Held(u64),
    }
    let (tx, rx) = std::sync::mpsc::channel::<Row>();
    for dead_table in [false, true] {
        for backwards in [false, true] {
            let path = damaged.to_path_buf();
            let tx = tx.clone();
            let pass = std::thread::spawn(move || {
                let Ok(file) = Database::builder().open_read_only(&path) else {
                    return;
                };
                let Ok(txn) = file.begin_read() else { return };
                let Ok(table) = txn.open_table(if dead_table { DEAD } else { QUEUE }) else {
                    return;
                };
                if !backwards {
                    if let Ok(n) = table.len() {
                        let _ = tx.send(Row::Held(n));
                    }
                }
                let Ok(iter) = table.iter() else { return };
                let rows: Box<dyn Iterator<Item = _>> = if backwards {
                    Box::new(iter.rev())
                } else {
                    Box::new(iter)
                };
                for row in rows {
                    let Ok((k, v)) = row else { break };
                    let (k, v) = (k.value(), v.value());
                    let row = if dead_table {
                        StoredDead::decode(v)
                            .is_ok()
                            .then(|| Row::Dead(k, v.to_vec()))
                    } else {
                        StoredEntry::decode(v)
                            .is_ok()
                            .then(|| Row::Queue(k, v.to_vec()))
                    };
                    if let Some(row) = row {
                        let _ = tx.send(row);
                    }
                }
            });
            let _ = pass.join();
        }
    }
    drop(tx);
    let (mut queue_rows, mut dead_rows) = (BTreeMap::new(), BTreeMap::new());
    let mut expected = None;
    for row in rx {
        match row {
            Row::Queue(k, v) => {
                queue_rows.insert(k, v);
            }
            Row::Dead(k, v) => {
                dead_rows.insert(k, v);
            }
            Row::Held(n) => *expected.get_or_insert(0) += n,
        }
    }
    let copied = (|| -> Result<u64, redb::Error> {
        let txn = db.begin_write()?;
        {
            let mut queue = txn.open_table(QUEUE)?;
            for (k, v) in &queue_rows {
                queue.insert(*k, v.as_slice())?;
            }
            let mut dead = txn.open_table(DEAD)?;
            for (k, v) in &dead_rows {
                dead.insert(*k, v.as_slice())?;
            }
            // Whatever was in flight may have been sent.
            let mut progress = txn.open_table(PROGRESS)?;
            let mut buf = Vec::new();
            Progress {
                maybe_sent: true,
                ..Progress::default()
            }
            .encode(&mut buf)
            .expect("a Vec grows");
            for k in queue_rows.keys() {
                progress.insert(*k, buf.as_slice())?;
            }
        }
        txn.commit()?;
        Ok((queue_rows.len() + dead_rows.len()) as u64)
    })();
    (copied.unwrap_or(0), expected)
}

/// Receipts packed 16 bytes each (big-endian), as a round's row holds them.
fn encode_receipts(receipts: &[Receipt]) -> Vec<u8> {
    receipts.iter().flat_map(|r| r.0.to_be_bytes()).collect()
}

/// The receipts of a round's row, each read as [`Receipt::from_bytes`]
/// reads one (a short tail, which no writer leaves, is ignored).
fn decode_receipts(bytes: &[u8]) -> impl Iterator<Item = u128> + '_ {
    bytes
        .chunks_exact(16)
        .filter_map(Receipt::from_bytes)
        .map(|r| r.0)
}

fn encode_key(k: &StoredKey) -> [u8; 32] {
    let mut v = [0; 32];
    v[..16].copy_from_slice(&k.fingerprint.to_be_bytes());
    v[16..].copy_from_slice(&k.receipt.0.to_be_bytes());
    v
}

fn decode_key(hash: u128, expires_ms: u64, v: &[u8]) -> Option<StoredKey> {
    let v: &[u8; 32] = v.try_into().ok()?;
    Some(StoredKey {
        hash,
        fingerprint: u128::from_be_bytes(v[..16].try_into().ok()?),
        receipt: Receipt(u128::from_be_bytes(v[16..].try_into().ok()?)),
        expires_ms,
    })
}

impl Store {
    /// The idempotency key that expires first, if any (for the sweep).
    pub fn first_key_expiry(&self) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read().map_err(read_err)?;
        match txn.open_table(KEYS) {
            Ok(keys) => Ok(keys.first().map_err(read_err)?.map(|(k, _)| k.value().0)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(read_err(e)),
        }
    }
}

fn ensure_file_id(db: &Database) -> Result<u64, redb::Error> {
    {
        let txn = db.begin_read()?;
        if let Ok(meta) = txn.open_table(META) {
            if let Some(id) = meta.get("file_id")? {
                return Ok(id.value());
            }
        }
    }
    let id = fastrand::u64(1..);
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        meta.insert("file_id", id)?;
        // Every table exists from the start, so readers never meet a
        // missing one.
        txn.open_table(QUEUE)?;
        txn.open_table(PROGRESS)?;
        txn.open_table(REPORTS)?;
        txn.open_table(OUTCOMES)?;
        txn.open_table(DEAD)?;
        txn.open_table(UNREADABLE)?;
        txn.open_table(KEYS)?;
    }
    txn.commit()?;
    Ok(id)
}
