//! Group commit: one thread owns the file's writes. Changes that arrive
//! while a commit is being made wait for the next one, which takes them
//! all: under load one fsync answers many batches, and alone a change
//! waits for no timer.

use std::{
    sync::{mpsc, Arc},
    time::Instant,
};

use tokio::sync::{oneshot, watch};

use super::store::{Change, Done, Store, StoreError};
use crate::metrics::Metrics;

/// Most changes one commit takes (each may carry many entries).
const MAX_CHANGES_PER_COMMIT: usize = 1_024;

struct Request {
    change: Change,
    reply: oneshot::Sender<Result<Done, StoreError>>,
}

/// Hands changes to the writer thread.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Request>,
}

impl Writer {
    /// Starts the thread. `last_seq` is the last report's sequence on
    /// disk; `reports` is told each new last one.
    pub fn start(
        store: Arc<Store>,
        last_seq: u64,
        reports: watch::Sender<u64>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("durable-writer".into())
            .spawn(move || run(&store, &rx, last_seq, &reports, &metrics))
            .expect("a thread starts");
        Self { tx }
    }

    /// Commits `change` (with whatever else is waiting) and says what it
    /// did. Returns once the commit is on disk, or failed.
    pub async fn commit(&self, change: Change) -> Result<Done, StoreError> {
        let (reply, done) = oneshot::channel();
        self.tx
            .send(Request { change, reply })
            .map_err(|_| StoreError::Closed)?;
        done.await.map_err(|_| StoreError::Closed)?
    }
}

fn run(
    store: &Store,
    rx: &mpsc::Receiver<Request>,
    mut seq: u64,
    reports: &watch::Sender<u64>,
    metrics: &Metrics,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_CHANGES_PER_COMMIT {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let (changes, replies): (Vec<Change>, Vec<_>) =
            batch.into_iter().map(|r| (r.change, r.reply)).unzip();
        let started = Instant::now();
        let result = store.apply(&changes, &mut seq);
        let m = &metrics.durable;
        m.commit_seconds.observe(started.elapsed().as_secs_f64());
        m.commit_changes.observe(changes.len() as f64);
        match result {
            Ok(done) => {
                m.commits
                    .get_or_create(&crate::metrics::ResultLabels { result: "ok" })
                    .inc();
                reports.send_if_modified(|last| {
                    let changed = *last != seq;
                    *last = seq;
                    changed
                });
                for (reply, done) in replies.into_iter().zip(done) {
                    let _ = reply.send(Ok(done));
                }
            }
            Err(e) => {
                m.commits
                    .get_or_create(&crate::metrics::ResultLabels { result: "error" })
                    .inc();
                tracing::error!(error = %e, changes = changes.len(), "a durable queue commit failed; nothing of it was acknowledged");
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}
