//! The last minute of one version's traffic, for the status page: per-second slots of counts
//! and a latency histogram, written with relaxed atomics on the request path and summed on read.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Seconds the window covers.
pub const WINDOW_SECONDS: u64 = 60;
const SLOTS: usize = WINDOW_SECONDS as usize;
/// Latency buckets: four per power of two of microseconds, 1 us to about 70 minutes.
const SUB: u32 = 4;
const BUCKETS: usize = 32 * SUB as usize;

/// One second of traffic.
struct Slot {
    /// Which second (since [`epoch`], plus one) the counts belong to; 0 = never used.
    second: AtomicU64,
    requests: AtomicU32,
    errors: AtomicU32,
    executions: AtomicU32,
    execution_rows: AtomicU64,
    latency: [AtomicU32; BUCKETS],
}

impl Slot {
    fn new() -> Self {
        Slot {
            second: AtomicU64::new(0),
            requests: AtomicU32::new(0),
            errors: AtomicU32::new(0),
            executions: AtomicU32::new(0),
            execution_rows: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }
}

/// A version's last minute of requests and model runs.
pub struct RecentWindow {
    slots: Box<[Slot]>,
    /// The second this window started, so a young version's rate is not diluted.
    born: u64,
}

impl std::fmt::Debug for RecentWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecentWindow").field("summary", &self.summary()).finish()
    }
}

impl Default for RecentWindow {
    fn default() -> Self {
        RecentWindow { slots: (0..SLOTS).map(|_| Slot::new()).collect(), born: now_second() }
    }
}

/// What the last minute held.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct WindowSummary {
    /// Seconds covered (less than a minute for a version loaded less than a minute ago).
    pub seconds: u64,
    /// Requests answered or failed in the executor.
    pub requests: u64,
    /// Of them, failed.
    pub errors: u64,
    /// Requests per second.
    pub request_rate: f64,
    /// Failed requests per second.
    pub error_rate: f64,
    /// Median time in the executor, in milliseconds (`None` without requests).
    pub p50_ms: Option<f64>,
    /// 99th percentile, in milliseconds.
    pub p99_ms: Option<f64>,
    /// Model runs.
    pub executions: u64,
    /// Rows per model run (above 1 when requests were batched or carried several rows).
    pub mean_batch_size: Option<f64>,
}

/// The process's time origin for slot seconds.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_second() -> u64 {
    epoch().elapsed().as_secs() + 1
}

fn bucket(d: Duration) -> usize {
    let us = d.as_micros().clamp(1, u64::MAX as u128) as u64;
    let octave = 63 - us.leading_zeros();
    let sub = if octave >= 2 { (us >> (octave - 2)) & 3 } else { (us << (2 - octave)) & 3 } as u32;
    ((octave * SUB + sub) as usize).min(BUCKETS - 1)
}

/// The middle of bucket `i`'s range, in milliseconds.
fn bucket_ms(i: usize) -> f64 {
    let (octave, sub) = ((i as u32 / SUB) as i32, (i as u32 % SUB) as f64);
    let low = 2f64.powi(octave) * (1.0 + sub / SUB as f64);
    let high = 2f64.powi(octave) * (1.0 + (sub + 1.0) / SUB as f64);
    (low + high) / 2.0 / 1000.0
}

impl RecentWindow {
    /// This second's slot, emptied first when it last held a second a minute or more ago.
    fn slot(&self) -> &Slot {
        let now = now_second();
        let slot = &self.slots[(now % WINDOW_SECONDS) as usize];
        let seen = slot.second.load(Ordering::Acquire);
        // One thread wins the turnover; a count landing between its swap and its reset is lost,
        // which a status page can afford.
        if seen != now && slot.second.compare_exchange(seen, now, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            slot.requests.store(0, Ordering::Relaxed);
            slot.errors.store(0, Ordering::Relaxed);
            slot.executions.store(0, Ordering::Relaxed);
            slot.execution_rows.store(0, Ordering::Relaxed);
            for b in &slot.latency {
                b.store(0, Ordering::Relaxed);
            }
        }
        slot
    }

    /// Counts a request that spent `elapsed` in the executor.
    pub fn record_request(&self, ok: bool, elapsed: Duration) {
        let slot = self.slot();
        slot.requests.fetch_add(1, Ordering::Relaxed);
        if !ok {
            slot.errors.fetch_add(1, Ordering::Relaxed);
        }
        slot.latency[bucket(elapsed)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one model run over `rows` rows.
    pub fn record_execution(&self, rows: usize) {
        let slot = self.slot();
        slot.executions.fetch_add(1, Ordering::Relaxed);
        slot.execution_rows.fetch_add(rows as u64, Ordering::Relaxed);
    }

    /// The last minute, up to now.
    pub fn summary(&self) -> WindowSummary {
        let now = now_second();
        let mut latency = [0u64; BUCKETS];
        let (mut requests, mut errors, mut executions, mut rows) = (0u64, 0u64, 0u64, 0u64);
        for slot in self.slots.iter() {
            let second = slot.second.load(Ordering::Acquire);
            if second == 0 || second + WINDOW_SECONDS <= now {
                continue;
            }
            requests += slot.requests.load(Ordering::Relaxed) as u64;
            errors += slot.errors.load(Ordering::Relaxed) as u64;
            executions += slot.executions.load(Ordering::Relaxed) as u64;
            rows += slot.execution_rows.load(Ordering::Relaxed);
            for (sum, b) in latency.iter_mut().zip(&slot.latency) {
                *sum += b.load(Ordering::Relaxed) as u64;
            }
        }
        let seconds = (now + 1).saturating_sub(self.born).clamp(1, WINDOW_SECONDS);
        let percentile = |q: f64| {
            let total: u64 = latency.iter().sum();
            (total > 0).then(|| {
                let rank = ((total as f64) * q).ceil().max(1.0) as u64;
                let mut seen = 0;
                let i = latency.iter().position(|&n| {
                    seen += n;
                    seen >= rank
                });
                bucket_ms(i.unwrap_or(BUCKETS - 1))
            })
        };
        WindowSummary {
            seconds,
            requests,
            errors,
            request_rate: requests as f64 / seconds as f64,
            error_rate: errors as f64 / seconds as f64,
            p50_ms: percentile(0.5),
            p99_ms: percentile(0.99),
            executions,
            mean_batch_size: (executions > 0).then(|| rows as f64 / executions as f64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_close() {
        let mut last = 0;
        for us in [1u64, 2, 3, 5, 8, 13, 100, 1_000, 12_345, 1_000_000, 60_000_000] {
            let b = bucket(Duration::from_micros(us));
            assert!(b >= last, "{us}");
            last = b;
            let mid = bucket_ms(b) * 1000.0;
            assert!((mid / us as f64 - 1.0).abs() < 0.2, "{us} us -> {mid}");
        }
        assert_eq!(bucket(Duration::from_secs(1 << 40)), BUCKETS - 1);
    }

    #[test]
    fn summary_counts_rates_percentiles_and_batches() {
        let w = RecentWindow::default();
        assert_eq!(w.summary().requests, 0);
        assert_eq!(w.summary().p50_ms, None);
        for _ in 0..98 {
            w.record_request(true, Duration::from_millis(2));
        }
        w.record_request(false, Duration::from_millis(40));
        w.record_request(true, Duration::from_millis(40));
        w.record_execution(8);
        w.record_execution(4);
        let s = w.summary();
        assert_eq!((s.requests, s.errors, s.executions), (100, 1, 2));
        assert!((s.p50_ms.unwrap() - 2.0).abs() < 0.3, "{s:?}");
        assert!((s.p99_ms.unwrap() - 40.0).abs() < 6.0, "{s:?}");
        assert_eq!(s.mean_batch_size, Some(6.0));
        assert!(s.request_rate > 0.0 && s.request_rate <= 100.0);
    }
}
