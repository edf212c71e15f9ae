//! Per-version request statistics in the shape Triton's statistics extension reports:
//! counts and cumulative nanoseconds per phase, inferences vs model executions, batch sizes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Distinct batch sizes tracked per version; rarer sizes past this are left out of `batch_stats`.
const MAX_BATCH_SIZES: usize = 256;

/// A count and the total time of what was counted.
#[derive(Debug, Default)]
pub struct Tally {
    count: AtomicU64,
    nanos: AtomicU64,
}

impl Tally {
    /// Counts one event that took `d`.
    pub fn add(&self, d: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.nanos.fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    /// The count and total nanoseconds so far.
    pub fn get(&self) -> Counted {
        Counted { count: self.count.load(Ordering::Relaxed), ns: self.nanos.load(Ordering::Relaxed) }
    }
}

/// A read of a [`Tally`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counted {
    /// How many.
    pub count: u64,
    /// Their total time in nanoseconds.
    pub ns: u64,
}

/// What one version has served since it loaded.
#[derive(Debug, Default)]
pub struct VersionStatistics {
    /// Requests answered, and their time in the executor (queue and run).
    pub success: Tally,
    /// Requests that failed in the executor, and their time there.
    pub fail: Tally,
    /// Time answered requests waited for a batch or a run slot.
    pub queue: Tally,
    /// Time turning request tensors into model inputs.
    pub compute_input: Tally,
    /// Model time of answered requests (a batch's run counts for each of its requests).
    pub compute_infer: Tally,
    /// Time turning outputs into the response (front ends that measure it).
    pub compute_output: Tally,
    /// Rows of every answered request (a request of batch 8 is 8 inferences).
    inferences: AtomicU64,
    /// Model runs: a batch of many requests is one.
    executions: AtomicU64,
    /// Milliseconds since the epoch of the last answered request.
    last_inference_ms: AtomicU64,
    /// Model runs by batch size (rows): their count and run time.
    by_batch_size: Mutex<BTreeMap<u64, Counted>>,
    /// The last minute, for the status page.
    pub recent: super::window::RecentWindow,
}

impl VersionStatistics {
    /// Counts one request that reached the executor and took `total` there.
    pub fn record_request(&self, ok: bool, rows: usize, total: Duration, queued: Duration, run: Duration) {
        self.recent.record_request(ok, total);
        if !ok {
            self.fail.add(total);
            return;
        }
        self.success.add(total);
        self.queue.add(queued);
        self.compute_infer.add(run);
        self.inferences.fetch_add(rows as u64, Ordering::Relaxed);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        self.last_inference_ms.fetch_max(now, Ordering::Relaxed);
    }

    /// Counts one model run over `rows` rows that took `run`.
    pub fn record_execution(&self, rows: usize, run: Duration) {
        self.executions.fetch_add(1, Ordering::Relaxed);
        self.recent.record_execution(rows);
        let mut sizes = self.by_batch_size.lock().unwrap_or_else(|p| p.into_inner());
        let size = rows as u64;
        if sizes.len() < MAX_BATCH_SIZES || sizes.contains_key(&size) {
            let entry = sizes.entry(size).or_default();
            entry.count += 1;
            entry.ns = entry.ns.saturating_add(run.as_nanos().min(u64::MAX as u128) as u64);
        }
    }

    /// Rows answered so far.
    pub fn inference_count(&self) -> u64 {
        self.inferences.load(Ordering::Relaxed)
    }

    /// Model runs so far.
    pub fn execution_count(&self) -> u64 {
        self.executions.load(Ordering::Relaxed)
    }

    /// Milliseconds since the epoch of the last answered request; 0 before the first.
    pub fn last_inference(&self) -> u64 {
        self.last_inference_ms.load(Ordering::Relaxed)
    }

    /// Model runs by batch size, ascending.
    pub fn batch_sizes(&self) -> Vec<(u64, Counted)> {
        let sizes = self.by_batch_size.lock().unwrap_or_else(|p| p.into_inner());
        sizes.iter().map(|(k, v)| (*k, *v)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_executions_are_counted_apart() {
        let s = VersionStatistics::default();
        let ms = Duration::from_millis;
        s.record_request(true, 3, ms(5), ms(1), ms(4));
        s.record_request(true, 1, ms(5), ms(2), ms(4));
        s.record_request(false, 1, ms(7), ms(0), ms(0));
        s.record_execution(4, ms(4));
        assert_eq!(s.success.get(), Counted { count: 2, ns: 10_000_000 });
        assert_eq!(s.fail.get(), Counted { count: 1, ns: 7_000_000 });
        assert_eq!(s.queue.get().ns, 3_000_000);
        assert_eq!((s.inference_count(), s.execution_count()), (4, 1));
        assert_eq!(s.batch_sizes(), vec![(4, Counted { count: 1, ns: 4_000_000 })]);
        assert!(s.last_inference() > 0);
    }
}
