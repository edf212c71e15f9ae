//! Memory a request may make the server hold: a budget per request, charged before each
//! allocation the request causes, and one limit over every request in flight.
//!
//! A [`RequestBudget`] is taken from the server's [`MemoryPool`] when a request arrives; the
//! transport charges the body as it arrives, decoders charge what decoding will allocate before
//! allocating it, and the core charges model outputs before encoding them. Dropping the budget
//! gives everything back to the pool.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::error::{ErrorKind, ServingError};

/// The two memory limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryLimits {
    /// Most bytes one request may make the server hold (`--request_memory_budget_bytes`).
    pub per_request: usize,
    /// Most bytes all requests in flight may hold together (`--max_in_flight_memory_bytes`).
    pub in_flight: usize,
}

/// The per-request default: 1 GiB, several times any real model's input (a batch of 64
/// 1024x1024 RGB float images is 805 MB), far below what would hurt a 24 GiB machine.
pub const DEFAULT_REQUEST_BUDGET: usize = 1 << 30;

impl MemoryLimits {
    /// No limits (tests, tools).
    pub const UNLIMITED: MemoryLimits = MemoryLimits { per_request: usize::MAX, in_flight: usize::MAX };

    /// The defaults for this machine: 1 GiB per request, and half the memory the process may
    /// use (its cgroup's limit, else the machine's RAM) for all requests in flight.
    pub fn for_this_machine() -> MemoryLimits {
        let in_flight = available_memory().map_or(8 << 30, |m| m / 2).max(DEFAULT_REQUEST_BUDGET);
        MemoryLimits { per_request: DEFAULT_REQUEST_BUDGET, in_flight }
    }
}

impl Default for MemoryLimits {
    fn default() -> Self {
        MemoryLimits::for_this_machine()
    }
}

/// The memory this process may use: the cgroup's limit when one is set, else physical RAM.
pub fn available_memory() -> Option<usize> {
    let ram = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
        kib.checked_mul(1024)
    });
    // cgroup v2 first, then v1; "max" (or v1's huge sentinel) means no limit.
    let cgroup = ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok()?.trim().parse::<usize>().ok());
    match (cgroup, ram) {
        (Some(c), Some(r)) => Some(c.min(r)),
        (c, r) => c.or(r),
    }
}

/// What every request in flight holds, against the server-wide limit.
#[derive(Debug)]
pub struct MemoryPool {
    /// The limits.
    limits: MemoryLimits,
    /// Bytes held by live budgets.
    used: AtomicUsize,
}

impl MemoryPool {
    /// A pool with `limits`.
    pub fn new(limits: MemoryLimits) -> Arc<MemoryPool> {
        Arc::new(MemoryPool { limits, used: AtomicUsize::new(0) })
    }

    /// A pool that refuses nothing.
    pub fn unlimited() -> Arc<MemoryPool> {
        MemoryPool::new(MemoryLimits::UNLIMITED)
    }

    /// A new, empty budget for one request.
    pub fn budget(self: &Arc<Self>) -> RequestBudget {
        RequestBudget { pool: self.clone(), held: AtomicUsize::new(0) }
    }

    /// The limits.
    pub fn limits(&self) -> MemoryLimits {
        self.limits
    }

    /// Bytes held by requests in flight now.
    pub fn in_use(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// One request's share of the pool; everything charged is given back when it drops.
#[derive(Debug)]
pub struct RequestBudget {
    /// Where the bytes come from.
    pool: Arc<MemoryPool>,
    /// Bytes charged to this request and not released.
    held: AtomicUsize,
}

impl RequestBudget {
    /// A budget that refuses nothing (warmup, tests, in-process callers).
    pub fn unlimited() -> RequestBudget {
        MemoryPool::unlimited().budget()
    }

    /// Charges `bytes` that `what` is about to allocate; refuses when the request's budget or
    /// the server's in-flight limit would be passed. `what` names the allocation for the message.
    pub fn charge(&self, bytes: usize, what: impl FnOnce() -> String) -> Result<(), ServingError> {
        if bytes == 0 {
            return Ok(());
        }
        let limits = self.pool.limits;
        let held = self.held.load(Ordering::Relaxed);
        if held.saturating_add(bytes) > limits.per_request {
            return Err(ServingError::resource_exhausted(format!(
                "{} needs {bytes} bytes, which with the {held} bytes this request already holds is more than the per-request memory budget of {} bytes (--request_memory_budget_bytes)",
                what(),
                limits.per_request
            ))
            .with_kind(ErrorKind::TooLarge));
        }
        let before = self.pool.used.fetch_add(bytes, Ordering::Relaxed);
        if before.saturating_add(bytes) > limits.in_flight {
            self.pool.used.fetch_sub(bytes, Ordering::Relaxed);
            return Err(ServingError::resource_exhausted(format!(
                "the server is at its memory limit for requests in flight ({} bytes, --max_in_flight_memory_bytes): {} needs {bytes} bytes; retry later",
                limits.in_flight,
                what()
            ))
            .with_kind(ErrorKind::Overloaded));
        }
        self.held.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Gives back `bytes` charged earlier (memory freed before the request ends).
    pub fn release(&self, bytes: usize) {
        let bytes = bytes.min(self.held.load(Ordering::Relaxed));
        self.held.fetch_sub(bytes, Ordering::Relaxed);
        self.pool.used.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Bytes this request holds now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// The per-request limit.
    pub fn limit(&self) -> usize {
        self.pool.limits.per_request
    }
}

impl Drop for RequestBudget {
    fn drop(&mut self) {
        self.pool.used.fetch_sub(*self.held.get_mut(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_refused_past_its_budget_and_gives_back_on_drop() {
        let pool = MemoryPool::new(MemoryLimits { per_request: 100, in_flight: 150 });
        let a = pool.budget();
        a.charge(60, || "x".into()).unwrap();
        let e = a.charge(41, || "the typed fill of input x".into()).unwrap_err();
        assert_eq!(e.code, crate::Code::ResourceExhausted);
        assert_eq!(e.kind, ErrorKind::TooLarge);
        assert!(e.message.contains("per-request memory budget of 100 bytes"), "{}", e.message);
        assert!(e.message.starts_with("the typed fill of input x needs 41 bytes"), "{}", e.message);
        let b = pool.budget();
        assert_eq!(b.charge(91, || "y".into()).unwrap_err().kind, ErrorKind::Overloaded);
        assert_eq!(pool.in_use(), 60);
        b.charge(80, || "y".into()).unwrap();
        a.release(10);
        assert_eq!((a.held(), pool.in_use()), (50, 130));
        drop(a);
        assert_eq!(pool.in_use(), 80);
        drop(b);
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn machine_defaults_are_sane() {
        let l = MemoryLimits::for_this_machine();
        assert_eq!(l.per_request, 1 << 30);
        assert!(l.in_flight >= l.per_request);
        assert!(available_memory().unwrap_or(1) > 0);
    }
}
