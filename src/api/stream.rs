//! The stream driver for `StreamPartnerEvents`: reads batches from one
//! stream, admits each (or answers it refused), hands admitted ones to the
//! [`BatchProcessor`](super::batch::BatchProcessor), and sends the answers
//! back in the order they finish; on half-close or shutdown it answers
//! every batch it read before ending (see the proto docs).

use std::sync::{atomic::Ordering, Arc};

use futures::{stream::FuturesUnordered, StreamExt};
use tokio::{
    sync::{mpsc, Semaphore},
    task::JoinSet,
    time::Instant,
};
use tonic::{Status, Streaming};

use super::{
    admission::{AdmittedBatch, InFlight},
    batch::{refused, refused_batch},
    metrics_layer::STREAM_PARTNER_EVENTS,
    service::Core,
    status::ApiError,
};
use crate::{
    auth::Caller,
    domain::limits::MAX_ENTRIES_PER_CALL,
    proto::{PutPartnerEventsRequest, PutPartnerEventsResponse},
};

/// Responses a stream may have waiting for the client to read them; beyond
/// it batch tasks wait, their entries stay in the window, and reading stops.
pub const STREAM_RESPONSE_BUFFER: usize = 64;

/// Where a stream's answers go (tonic's response stream reads the other end).
pub type Answers = mpsc::Sender<Result<PutPartnerEventsResponse, Status>>;

/// Counts an open stream for as long as it lives.
struct StreamGuard(Arc<Core>);

impl StreamGuard {
    fn new(core: Arc<Core>) -> Self {
        core.open_streams.fetch_add(1, Ordering::Relaxed);
        Self(core)
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.open_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a stream's read loop stopped.
enum StreamEnd {
    /// The client half-closed: answer everything, then end with OK.
    HalfClosed,
    /// The gateway is shutting down: answer what was read, then UNAVAILABLE.
    ShuttingDown,
    /// The client went away or broke the stream: drop everything.
    Gone,
}

/// Reads batches from one stream and answers each.
///
/// A small batch (fewer entries than one upstream call holds) is answered
/// from this stream's own task: its work is a few microseconds, less than
/// handing it to a task of its own would cost. Larger batches get a task
/// each, so that one stream's work can use every core.
pub async fn run_stream(
    core: Arc<Core>,
    caller: Option<Caller>,
    mut inbound: Streaming<PutPartnerEventsRequest>,
    tx: Answers,
    parent: opentelemetry::Context,
) {
    let _guard = StreamGuard::new(core.clone());
    let window = Arc::new(Semaphore::new(core.stream_window_entries));
    let mut shutdown = core.shutdown.clone();
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut small = FuturesUnordered::new();
    let mut sequence = 0u64;
    let end = loop {
        while tasks.try_join_next().is_some() {}
        if *shutdown.borrow() {
            break StreamEnd::ShuttingDown;
        }
        let msg = tokio::select! {
            Some(()) = small.next(), if !small.is_empty() => continue,
            _ = shutdown.changed() => continue,
            _ = tx.closed() => break StreamEnd::Gone,
            m = inbound.message() => m,
        };
        let req = match msg {
            Ok(Some(req)) => req,
            Ok(None) => break StreamEnd::HalfClosed,
            Err(status) => {
                tracing::info!(code = ?status.code(), "stream ended by the client");
                break StreamEnd::Gone;
            }
        };
        let seq = sequence;
        sequence += 1;
        // Messages are counted here: the metrics layer sees calls and their
        // status, not the gRPC messages inside the bodies.
        core.metrics
            .grpc_msg_received
            .get_or_create(&STREAM_PARTNER_EVENTS)
            .inc();
        let tenants = match core.admission.check(&req, caller.as_ref()).await {
            Ok(t) => t,
            Err(e) => {
                if !send_answer(&core, &tx, refused(req, seq, &e)).await {
                    break StreamEnd::Gone;
                }
                continue;
            }
        };
        // Admission: room in this stream's window, in its tenant's share and
        // in the gateway. While
        // waiting, nothing more is read from the stream; the batches in
        // hand go on (they are what frees the room).
        let n = req.entries.len() as u32;
        let tenant_room = core.admission.tenant_room(&req.tenant_id);
        let room = core.admission.wait_for_room(&window, tenant_room, n);
        tokio::pin!(room);
        let in_flight = loop {
            tokio::select! {
                Some(()) = small.next(), if !small.is_empty() => {}
                _ = tx.closed() => break Err(StreamEnd::Gone),
                p = &mut room => break p.ok_or(StreamEnd::ShuttingDown),
            }
        };
        let in_flight = match in_flight {
            Ok(p) => p,
            Err(end) => break end,
        };
        let batch = AdmittedBatch {
            request: req,
            tenants,
            sequence: seq,
            deadline: Instant::now() + core.default_deadline,
            parent: parent.clone(),
        };
        let answer = answer_batch(core.clone(), batch, in_flight, tx.clone());
        if (n as usize) < MAX_ENTRIES_PER_CALL {
            small.push(answer);
        } else {
            tasks.spawn(answer);
        }
    };
    match end {
        StreamEnd::Gone => tasks.abort_all(),
        StreamEnd::HalfClosed | StreamEnd::ShuttingDown => {
            // Every batch read is answered before the stream ends.
            while !(small.is_empty() && tasks.is_empty()) {
                tokio::select! {
                    Some(()) = small.next(), if !small.is_empty() => {}
                    Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                    _ = tx.closed() => { tasks.abort_all(); return; }
                }
            }
            if matches!(end, StreamEnd::ShuttingDown) {
                let _ = tx.send(Err(ApiError::StreamDrained.into())).await;
            }
        }
    }
}

/// Answers one admitted stream batch and sends the answer; its in-flight
/// permits are held until the answer is in the stream's buffer.
async fn answer_batch(core: Arc<Core>, batch: AdmittedBatch, in_flight: InFlight, tx: Answers) {
    let _in_flight = in_flight;
    let (batch_id, sequence, n) = (
        batch.request.batch_id.clone(),
        batch.sequence,
        batch.request.entries.len(),
    );
    let resp = match core.batches.answer(batch).await {
        Ok(resp) => resp,
        Err(e) => refused_batch(batch_id, sequence, n, &e),
    };
    send_answer(&core, &tx, resp).await;
}

/// Sends one answer, counting it as a message sent. False when the client
/// is gone.
async fn send_answer(core: &Core, tx: &Answers, answer: PutPartnerEventsResponse) -> bool {
    let sent = tx.send(Ok(answer)).await.is_ok();
    if sent {
        core.metrics
            .grpc_msg_sent
            .get_or_create(&STREAM_PARTNER_EVENTS)
            .inc();
    }
    sent
}
