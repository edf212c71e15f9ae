//! Dynamic batching, TF Serving's way: requests to one version and signature whose inputs agree
//! on every dimension but the first wait in a queue, are merged along dimension 0 into one run,
//! and get their own rows of the outputs back.
//!
//! A batch runs when it is full, when its oldest request has waited `batch_timeout_micros`, or
//! at once with a timeout of 0 whenever a batch thread is free (so batches grow with the load).
//! Batch threads are plain threads: model runs never touch the async reactor.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::job::{Job, Outcome};
use crate::error::{Code, ServingError};
use crate::model::{Model, RunStats, TensorMap};
use crate::tensor::batch::{concat_rows, split_rows};
use crate::tensor::{DataType, Tensor};

/// TF Serving's message for a request turned away by a full queue.
pub const QUEUE_FULL: &str = "The batch scheduling queue to which this task was submitted is full";

/// TF Serving's `BatchingParameters`, checked, with its defaults for fields a file leaves out
/// (read by [`crate::repository::batching`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchingParameters {
    /// Largest request, and (without splitting) largest batch, in rows.
    pub max_batch_size: usize,
    /// How long the oldest request of an unfilled batch waits.
    pub batch_timeout: Duration,
    /// Batches that may wait per queue; one more request is refused with UNAVAILABLE.
    pub max_enqueued_batches: usize,
    /// Batches run at once (threads per version).
    pub num_batch_threads: usize,
    /// Sizes a batch is padded up to; empty: run at its own size.
    pub allowed_batch_sizes: Vec<usize>,
    /// Split requests larger than `max_execution_batch_size` across batches.
    pub enable_large_batch_splitting: bool,
    /// Largest batch run (equals `max_batch_size` without splitting).
    pub max_execution_batch_size: usize,
}

impl Default for BatchingParameters {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        BatchingParameters {
            max_batch_size: 1000,
            batch_timeout: Duration::ZERO,
            max_enqueued_batches: 10,
            num_batch_threads: threads,
            allowed_batch_sizes: Vec::new(),
            enable_large_batch_splitting: false,
            max_execution_batch_size: 1000,
        }
    }
}

impl BatchingParameters {
    /// The size a batch of `rows` runs at: the smallest allowed size that holds it.
    fn padded(&self, rows: usize) -> usize {
        self.allowed_batch_sizes.iter().copied().find(|&s| s >= rows).unwrap_or(rows)
    }
}

/// Requests that may share a batch: one signature, and the same dtype and dimensions past the
/// first for every input.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct BatchKey {
    signature: String,
    inputs: Vec<(String, DataType, Vec<usize>)>,
}

impl BatchKey {
    /// The key and row count of `inputs`, or `None` when they cannot be batched (see [`batch_rows`]).
    fn of(signature: &str, inputs: &TensorMap) -> Option<(BatchKey, usize)> {
        let rows = batch_rows(inputs)?;
        let key = inputs.iter().map(|(alias, t)| (alias.clone(), t.dtype(), t.shape()[1..].to_vec())).collect();
        Some((BatchKey { signature: signature.to_string(), inputs: key }, rows))
    }
}

/// A task's outputs and how its batch ran, or why it did not.
type Answer = Result<(TensorMap, Outcome), ServingError>;

/// The rows (dimension 0) every input shares, or `None` when they cannot be batched: no
/// inputs, a scalar, inputs disagreeing on dimension 0, or no rows at all (nothing to pad with).
fn batch_rows(inputs: &TensorMap) -> Option<usize> {
    let mut rows = None;
    for t in inputs.values() {
        let n = *t.shape().first()?;
        if *rows.get_or_insert(n) != n {
            return None;
        }
    }
    rows.filter(|&n| n > 0)
}

/// Where a task's outputs go: the request itself, or one piece of a split request.
enum Reply {
    Whole(oneshot::Sender<Answer>),
    Piece(Arc<Split>, usize),
}

impl Reply {
    fn is_closed(&self) -> bool {
        match self {
            Reply::Whole(tx) => tx.is_closed(),
            Reply::Piece(split, _) => split.is_closed(),
        }
    }

    fn send(self, result: Answer) {
        match self {
            Reply::Whole(tx) => {
                let _ = tx.send(result);
            }
            Reply::Piece(split, i) => split.complete(i, result),
        }
    }
}

/// A request split across batches: its pieces' outputs are joined back in order.
struct Split {
    state: Mutex<SplitState>,
}

struct SplitState {
    pieces: Vec<Option<TensorMap>>,
    /// The pieces' runs added up (queue time: the longest).
    outcome: Outcome,
    reply: Option<oneshot::Sender<Answer>>,
}

impl Split {
    fn is_closed(&self) -> bool {
        lock(&self.state).reply.as_ref().is_none_or(|tx| tx.is_closed())
    }

    fn complete(&self, index: usize, result: Answer) {
        let mut state = lock(&self.state);
        match result {
            Err(e) => {
                if let Some(tx) = state.reply.take() {
                    let _ = tx.send(Err(e));
                }
            }
            Ok((outputs, outcome)) => {
                state.pieces[index] = Some(outputs);
                let total = &mut state.outcome;
                total.requests = total.requests.max(outcome.requests);
                total.batch_rows += outcome.batch_rows;
                total.padded_rows += outcome.padded_rows;
                total.queued = total.queued.max(outcome.queued);
                total.run += outcome.run;
                if state.pieces.iter().all(Option::is_some) {
                    let pieces: Vec<TensorMap> = state.pieces.iter_mut().filter_map(Option::take).collect();
                    let outcome = state.outcome;
                    if let Some(tx) = state.reply.take() {
                        let pieces: Vec<&TensorMap> = pieces.iter().collect();
                        let joined = concat_maps(&pieces, 0, "joining the pieces of output");
                        let _ = tx.send(joined.map(|o| (o, outcome)));
                    }
                }
            }
        }
    }
}

/// Concatenates every alias of `maps[0]` over `maps` along dimension 0, padded to `rows`.
fn concat_maps(maps: &[&TensorMap], rows: usize, what: &str) -> Result<TensorMap, ServingError> {
    let Some(first) = maps.first() else { return Ok(TensorMap::new()) };
    first
        .keys()
        .map(|alias| {
            let parts: Vec<&Tensor> = maps.iter().filter_map(|m| m.get(alias)).collect();
            let joined =
                concat_rows(&parts, rows).map_err(|e| ServingError::internal(format!("{what} {alias}: {e}")))?;
            Ok((alias.clone(), joined))
        })
        .collect()
}

/// One request (or piece of one) waiting in a queue.
struct Task {
    inputs: TensorMap,
    rows: usize,
    outputs: Vec<String>,
    deadline: Option<Instant>,
    enqueued: Instant,
    reply: Reply,
}

/// Tasks that run together.
struct Batch {
    tasks: Vec<Task>,
    rows: usize,
    opened: Instant,
}

#[derive(Default)]
struct Queues {
    by_key: HashMap<BatchKey, VecDeque<Batch>>,
    stopping: bool,
}

/// The queues and what the batch threads wait on.
struct Shared {
    params: BatchingParameters,
    queues: Mutex<Queues>,
    ready: Condvar,
    /// Tasks queued or running.
    busy: AtomicUsize,
}

/// A version's batcher: its queues and batch threads. Dropping it lets the threads finish
/// what is queued and exit.
pub struct Batcher {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").field("params", &self.shared.params).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Batcher {
    /// Starts `params.num_batch_threads` threads running batches of `model`.
    pub fn start(
        name: &str,
        version: i64,
        model: Arc<dyn Model>,
        stats: Arc<RunStats>,
        params: BatchingParameters,
    ) -> Result<Batcher, ServingError> {
        let shared =
            Arc::new(Shared { params, queues: Mutex::default(), ready: Condvar::new(), busy: AtomicUsize::new(0) });
        for i in 0..shared.params.num_batch_threads {
            let (shared, model, stats, name) = (shared.clone(), model.clone(), stats.clone(), name.to_string());
            std::thread::Builder::new()
                .name(format!("batch-{name}-{version}-{i}"))
                .spawn(move || batch_thread(&shared, model.as_ref(), &stats, &name))
                .map_err(|e| ServingError::internal(format!("cannot start a batch thread: {e}")))?;
        }
        Ok(Batcher { shared })
    }

    /// The parameters this batcher runs with.
    pub fn params(&self) -> &BatchingParameters {
        &self.shared.params
    }

    /// True when `job` would run alone, as sent, if queued now: no timeout to wait for
    /// company, nothing queued or running, and a size that needs no padding or splitting.
    pub fn runs_alone(&self, job: &Job) -> bool {
        let p = &self.shared.params;
        p.batch_timeout.is_zero()
            && self.shared.busy.load(Ordering::Relaxed) == 0
            && batch_rows(&job.inputs).is_some_and(|rows| rows <= p.max_execution_batch_size && p.padded(rows) == rows)
    }

    /// Queues `job` and waits for its outputs; `None` hands the job back when it cannot be
    /// batched (a scalar input, or inputs disagreeing on dimension 0).
    pub async fn submit(&self, job: Job) -> Result<Answer, Job> {
        let Some((key, rows)) = BatchKey::of(&job.signature, &job.inputs) else { return Err(job) };
        let deadline = job.deadline;
        let (tx, rx) = oneshot::channel();
        if let Err(e) = self.enqueue(key, rows, job, tx) {
            return Ok(Err(e));
        }
        let answer = match deadline {
            Some(d) => match tokio::time::timeout_at(d.into(), rx).await {
                Ok(r) => r,
                // Dropping the receiver takes the request out of the next batch.
                Err(_) => return Ok(Err(deadline_exceeded())),
            },
            None => rx.await,
        };
        Ok(answer.unwrap_or_else(|_| Err(ServingError::new(Code::Unavailable, "the batcher stopped"))))
    }

    fn enqueue(&self, key: BatchKey, rows: usize, job: Job, tx: oneshot::Sender<Answer>) -> Result<(), ServingError> {
        let p = &self.shared.params;
        if rows > p.max_batch_size {
            return Err(too_large(rows, p.max_batch_size));
        }
        let now = Instant::now();
        let mut queues = lock(&self.shared.queues);
        let queue = queues.by_key.entry(key).or_default();
        let room = queue.back().map_or(0, |b| p.max_execution_batch_size - b.rows);
        // Batches this request would open, refused as a whole when the queue cannot take them.
        let opens = if rows <= room { 0 } else { (rows - room).div_ceil(p.max_execution_batch_size) };
        if queue.len() + opens > p.max_enqueued_batches {
            return Err(ServingError::new(Code::Unavailable, QUEUE_FULL));
        }
        let Job { inputs, outputs, deadline, .. } = job;
        if rows <= p.max_execution_batch_size {
            let task = Task { inputs, rows, outputs, deadline, enqueued: now, reply: Reply::Whole(tx) };
            push(&self.shared, queue, task, now);
        } else {
            // A request larger than a batch: its first piece fills the open batch, the rest follow.
            let mut sizes = Vec::new();
            let mut left = rows;
            if room > 0 {
                sizes.push(room);
                left -= room;
            }
            while left > 0 {
                let n = left.min(p.max_execution_batch_size);
                sizes.push(n);
                left -= n;
            }
            let mut split_inputs: Vec<TensorMap> = vec![TensorMap::new(); sizes.len()];
            for (alias, t) in inputs {
                let parts = split_rows(t, &sizes)
                    .map_err(|e| ServingError::invalid_argument(format!("splitting input {alias}: {e}")))?;
                for (piece, part) in split_inputs.iter_mut().zip(parts) {
                    piece.insert(alias.clone(), part);
                }
            }
            let split = Arc::new(Split {
                state: Mutex::new(SplitState {
                    pieces: vec![None; sizes.len()],
                    outcome: Outcome::default(),
                    reply: Some(tx),
                }),
            });
            for (i, (inputs, n)) in split_inputs.into_iter().zip(sizes).enumerate() {
                let task = Task {
                    inputs,
                    rows: n,
                    outputs: outputs.clone(),
                    deadline,
                    enqueued: now,
                    reply: Reply::Piece(split.clone(), i),
                };
                push(&self.shared, queue, task, now);
            }
        }
        drop(queues);
        self.shared.ready.notify_one();
        Ok(())
    }
}

/// Adds `task` to the last batch of `queue` when it fits, else to a new batch.
fn push(shared: &Shared, queue: &mut VecDeque<Batch>, task: Task, now: Instant) {
    let max = shared.params.max_execution_batch_size;
    shared.busy.fetch_add(1, Ordering::Relaxed);
    match queue.back_mut() {
        Some(b) if b.rows + task.rows <= max => {
            b.rows += task.rows;
            b.tasks.push(task);
        }
        _ => queue.push_back(Batch { rows: task.rows, tasks: vec![task], opened: now }),
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        lock(&self.shared.queues).stopping = true;
        self.shared.ready.notify_all();
    }
}

/// TF Serving's error for a request with more rows than `max_batch_size`.
fn too_large(rows: usize, max: usize) -> ServingError {
    ServingError::invalid_argument(format!("Task size {rows} is larger than maximum input batch size {max}"))
}

fn deadline_exceeded() -> ServingError {
    ServingError::new(Code::DeadlineExceeded, "Deadline exceeded while waiting in the batch queue")
}

/// Takes the next batch to run: a full one, or one whose oldest task has waited long enough.
fn next_batch(shared: &Shared) -> Option<(BatchKey, Batch)> {
    let p = &shared.params;
    let mut queues = lock(&shared.queues);
    loop {
        let now = Instant::now();
        let mut due: Option<(&BatchKey, Instant)> = None;
        let mut wake: Option<Instant> = None;
        for (key, queue) in &queues.by_key {
            let Some(front) = queue.front() else { continue };
            // A batch with a successor is closed: nothing more can join it.
            let full = front.rows >= p.max_execution_batch_size || queue.len() > 1;
            let ready_at = front.opened + p.batch_timeout;
            if full || ready_at <= now || queues.stopping {
                if due.is_none_or(|(_, t)| front.opened < t) {
                    due = Some((key, front.opened));
                }
            } else {
                wake = Some(wake.map_or(ready_at, |w| w.min(ready_at)));
            }
        }
        if let Some((key, _)) = due {
            let key = key.clone();
            let queue = queues.by_key.get_mut(&key)?;
            let batch = queue.pop_front()?;
            if queue.is_empty() {
                queues.by_key.remove(&key);
            }
            return Some((key, batch));
        }
        if queues.stopping {
            return None;
        }
        queues = match wake {
            Some(at) => {
                let left = at.saturating_duration_since(now);
                shared.ready.wait_timeout(queues, left).unwrap_or_else(|p| p.into_inner()).0
            }
            None => shared.ready.wait(queues).unwrap_or_else(|p| p.into_inner()),
        };
    }
}

fn batch_thread(shared: &Shared, model: &dyn Model, stats: &RunStats, name: &str) {
    while let Some((key, batch)) = next_batch(shared) {
        let tasks = batch.tasks.len();
        run_batch(&shared.params, (name, model), stats, &key.signature, batch);
        shared.busy.fetch_sub(tasks, Ordering::Relaxed);
    }
}

/// Runs one batch: drops what expired or was cancelled, concatenates, pads, runs, splits.
fn run_batch(
    params: &BatchingParameters,
    (name, model): (&str, &dyn Model),
    stats: &RunStats,
    signature: &str,
    batch: Batch,
) {
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(batch.tasks.len());
    for task in batch.tasks {
        if task.reply.is_closed() {
            continue;
        }
        if task.deadline.is_some_and(|d| d <= started) {
            task.reply.send(Err(deadline_exceeded()));
            continue;
        }
        tasks.push(task);
    }
    if tasks.is_empty() {
        return;
    }
    let rows: usize = tasks.iter().map(|t| t.rows).sum();
    let padded = params.padded(rows);
    let wanted: BTreeSet<&String> = tasks.iter().flat_map(|t| t.outputs.iter()).collect();
    let outputs: Vec<String> = wanted.into_iter().cloned().collect();
    let inputs = if tasks.len() == 1 && padded == rows {
        std::mem::take(&mut tasks[0].inputs)
    } else {
        let inputs: Vec<&TensorMap> = tasks.iter().map(|t| &t.inputs).collect();
        match concat_maps(&inputs, padded, "batching input") {
            Ok(inputs) => inputs,
            Err(e) => return fail_all(tasks, e),
        }
    };
    let queued = tasks.iter().map(|t| started - t.enqueued).max().unwrap_or_default();
    let (result, run) = super::executor::run_once(model, stats, signature, inputs, &outputs);
    stats.statistics.record_execution(padded, run);
    if let Some(metrics) = super::metrics::get() {
        metrics.record_batch(name, rows, padded);
    }
    let outcome = Outcome { batch_rows: rows, padded_rows: padded, requests: tasks.len(), queued, run, inline: false };
    tracing::trace!(signature, rows, padded, requests = outcome.requests, ?queued, ?run, "batch ran");
    let result = match result {
        Ok(r) => r,
        Err(e) => return fail_all(tasks, e),
    };
    if tasks.len() == 1 && padded == rows {
        if let Some(task) = tasks.pop() {
            let answer = super::executor::exactly(result, &task.outputs).map(|o| (o, outcome));
            task.reply.send(answer);
        }
        return;
    }
    match split_outputs(result, &tasks, padded) {
        Ok(parts) => {
            for (task, outputs) in tasks.into_iter().zip(parts) {
                task.reply.send(Ok((outputs, outcome)));
            }
        }
        Err(e) => fail_all(tasks, e),
    }
}

/// Each task's requested outputs, cut from the batch's outputs by its rows.
fn split_outputs(mut result: TensorMap, tasks: &[Task], padded: usize) -> Result<Vec<TensorMap>, ServingError> {
    let rows: Vec<usize> = tasks.iter().map(|t| t.rows).collect();
    let mut per_task: Vec<TensorMap> = vec![TensorMap::new(); tasks.len()];
    let aliases: Vec<String> = result.keys().cloned().collect();
    for alias in aliases {
        let Some(t) = result.remove(&alias) else { continue };
        if t.shape().first() != Some(&padded) {
            return Err(ServingError::internal(format!(
                "Batched output tensor's 0th dimension does not equal the sum of the 0th dimension sizes of the input tensors: output {alias} has shape {:?} for a batch of {padded}",
                t.shape()
            )));
        }
        let parts =
            split_rows(t, &rows).map_err(|e| ServingError::internal(format!("splitting output {alias}: {e}")))?;
        for ((task, part), out) in tasks.iter().zip(parts).zip(per_task.iter_mut()) {
            if task.outputs.contains(&alias) {
                out.insert(alias.clone(), part);
            }
        }
    }
    for (task, out) in tasks.iter().zip(&per_task) {
        if let Some(alias) = task.outputs.iter().find(|a| !out.contains_key(*a)) {
            return Err(super::executor::missing_output(alias));
        }
    }
    Ok(per_task)
}

fn fail_all(tasks: Vec<Task>, e: ServingError) {
    for task in tasks {
        task.reply.send(Err(e.clone()));
    }
}
