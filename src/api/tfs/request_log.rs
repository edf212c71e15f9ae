//! TF Serving's request logging: a model's `logging_config` in the model config file samples
//! its requests into `PredictionLog` records, written as TFRecord files that rotate by size.
//! The format is the warmup file's, so a slice of real traffic becomes a version's
//! `assets.extra/tf_serving_warmup_requests` unchanged.
//!
//! The request path only draws a random number; sampled records are encoded and handed to a
//! writer thread through a bounded queue (a full queue drops the record and counts it).

use std::cell::Cell;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;

use arc_swap::ArcSwap;
use prost::Message;

use crate::proto::tensorflow::serving as pb;
use crate::repository::config::{LoggingSpec, ModelConfig};
use crate::repository::warmup::tfrecord_frame;

/// Records waiting for the writer per model; beyond it, records are dropped (and counted).
const QUEUE: usize = 1024;

/// The request logs of every model with a `logging_config`.
pub struct RequestLogs {
    models: ArcSwap<HashMap<String, Arc<ModelLog>>>,
    max_file_bytes: u64,
}

impl std::fmt::Debug for RequestLogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestLogs").field("models", &self.models.load().keys().collect::<Vec<_>>()).finish()
    }
}

/// One model's sampler and writer.
pub struct ModelLog {
    spec: LoggingSpec,
    sink: SyncSender<Vec<u8>>,
    dropped: AtomicU64,
}

impl RequestLogs {
    /// No model logged yet; files rotate past `max_file_bytes`.
    pub fn new(max_file_bytes: u64) -> Arc<Self> {
        Arc::new(RequestLogs { models: ArcSwap::from_pointee(HashMap::new()), max_file_bytes })
    }

    /// Follows a new model list: writers of unchanged settings go on, others start or stop
    /// (a stopped writer finishes its queue and closes its file).
    pub fn configure(&self, models: &[ModelConfig]) {
        let old = self.models.load();
        let mut next = HashMap::new();
        for m in models {
            let Some(spec) = &m.logging else { continue };
            let log = match old.get(&m.name) {
                Some(log) if log.spec == *spec => log.clone(),
                _ => match start_writer(&m.name, spec.clone(), self.max_file_bytes) {
                    Ok(log) => log,
                    Err(e) => {
                        tracing::error!(model = %m.name, "request logging off: {e}");
                        continue;
                    }
                },
            };
            next.insert(m.name.clone(), log);
        }
        self.models.store(Arc::new(next));
    }

    /// The log to write this request to, if `model` logs and this request is sampled.
    pub fn sample(&self, model: &str) -> Option<Arc<ModelLog>> {
        let models = self.models.load();
        if models.is_empty() {
            return None;
        }
        let log = models.get(model)?;
        (random_unit() < log.spec.sampling_rate).then(|| log.clone())
    }
}

impl ModelLog {
    /// Queues one record; never blocks the request.
    pub fn write(&self, log: &pb::PredictionLog) {
        match self.sink.try_send(log.encode_to_vec()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(prefix = %self.spec.filename_prefix.display(), "{n} request log records dropped (writer behind)");
                }
            }
        }
    }

    /// The metadata TF Serving puts on each record.
    pub fn metadata(&self, model_spec: Option<pb::ModelSpec>) -> Option<pb::LogMetadata> {
        Some(pb::LogMetadata {
            model_spec,
            sampling_config: Some(pb::SamplingConfig { sampling_rate: self.spec.sampling_rate, ..Default::default() }),
            ..Default::default()
        })
    }
}

fn start_writer(model: &str, spec: LoggingSpec, max_file_bytes: u64) -> Result<Arc<ModelLog>, String> {
    if let Some(dir) = spec.filename_prefix.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let (tx, rx) = sync_channel(QUEUE);
    let prefix = spec.filename_prefix.clone();
    std::thread::Builder::new()
        .name(format!("request-log-{model}"))
        .spawn(move || {
            if let Err(e) = write_records(&prefix, max_file_bytes, rx) {
                tracing::error!(prefix = %prefix.display(), "request log writer stopped: {e}");
            }
        })
        .map_err(|e| format!("cannot start the writer thread: {e}"))?;
    tracing::info!(model, prefix = %spec.filename_prefix.display(), rate = spec.sampling_rate, "request logging on");
    Ok(Arc::new(ModelLog { spec, sink: tx, dropped: AtomicU64::new(0) }))
}

/// The n-th file of a writer started at `stamp`: `<prefix>.<stamp>.<n>.tfrecord`.
fn file_name(prefix: &Path, stamp: u64, n: u32) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(format!(".{stamp}.{n:05}.tfrecord"));
    PathBuf::from(name)
}

fn write_records(prefix: &Path, max_file_bytes: u64, rx: Receiver<Vec<u8>>) -> std::io::Result<()> {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (mut n, mut file, mut written) = (0u32, None::<std::io::BufWriter<std::fs::File>>, 0u64);
    loop {
        let record = match rx.recv_timeout(std::time::Duration::from_millis(100)) {
            Ok(record) => record,
            // Idle: what was written reaches the file, so a crash loses at most the queue.
            Err(RecvTimeoutError::Timeout) => {
                if let Some(f) = file.as_mut() {
                    f.flush()?;
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let frame = tfrecord_frame(&record);
        if file.is_none() || (written > 0 && written + frame.len() as u64 > max_file_bytes) {
            if let Some(mut f) = file.take() {
                f.flush()?;
            }
            let path = file_name(prefix, stamp, n);
            n += 1;
            file = Some(std::io::BufWriter::new(std::fs::File::create(&path)?));
            written = 0;
        }
        file.as_mut().expect("opened above").write_all(&frame)?;
        written += frame.len() as u64;
    }
    if let Some(mut f) = file {
        f.flush()?;
    }
    Ok(())
}

thread_local! {
    static RNG: Cell<u64> = Cell::new({
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
        let here = &t as *const u64 as u64;
        (t ^ here.rotate_left(32)) | 1
    });
}

/// A uniform number in [0, 1) from a per-thread xorshift64* generator (sampling needs speed, not secrecy).
fn random_unit() -> f64 {
    RNG.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_rate_is_kept() {
        let n = 200_000;
        let hits = (0..n).filter(|_| random_unit() < 0.01).count();
        assert!((1_700..2_300).contains(&hits), "{hits} of {n} at 1 %");
        assert!((0..1000).all(|_| (0.0..1.0).contains(&random_unit())));
    }
}
