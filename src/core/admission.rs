//! Admission control for runs on the blocking pool: each version runs at most
//! `max_concurrent_runs` at once; requests waiting for a run are bounded per version and over
//! the server, so overload is answered at once (RESOURCE_EXHAUSTED, HTTP 429) instead of
//! growing queues, threads and latency.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Code, ServingError};

/// Limits on runs and waiting requests; one set for the server (flags).
#[derive(Clone, Debug)]
pub struct RunLimits {
    /// Runs of one version on the blocking pool at once.
    pub max_concurrent_runs: usize,
    /// Requests of one version waiting for a run.
    pub max_queued_per_version: usize,
    /// Requests waiting for a run, over every version.
    pub max_queued: usize,
    /// What waits now, over every version (shared by all executors of a server).
    pub queued: Arc<AtomicUsize>,
}

impl Default for RunLimits {
    fn default() -> Self {
        crate::config::ServerConfig::default().executor.limits
    }
}

/// One version's run slots and waiting count.
#[derive(Debug)]
pub struct Admission {
    limits: RunLimits,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
}

/// Counts one waiting request until dropped.
struct Waiting<'a>(&'a AtomicUsize, &'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        self.1.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Admission {
    /// Run slots for one version.
    pub fn new(limits: RunLimits) -> Admission {
        let slots = Arc::new(Semaphore::new(limits.max_concurrent_runs.max(1)));
        Admission { limits, slots, waiting: AtomicUsize::new(0) }
    }

    /// The limits this version was admitted with.
    pub fn limits(&self) -> &RunLimits {
        &self.limits
    }

    /// A run slot, held until the run ends (even if its caller has gone): at once when one is
    /// free, else after waiting in line unless the line is full (RESOURCE_EXHAUSTED) or the
    /// deadline passes first (DEADLINE_EXCEEDED).
    pub async fn slot(&self, deadline: Option<Instant>) -> Result<OwnedSemaphorePermit, ServingError> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let mine = self.waiting.fetch_add(1, Ordering::Relaxed);
        let all = self.limits.queued.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.waiting, &self.limits.queued);
        if mine >= self.limits.max_queued_per_version {
            return Err(overloaded(format!(
                "{mine} requests are already waiting for this model version to run (--max_queued_requests_per_version {})",
                self.limits.max_queued_per_version
            )));
        }
        if all >= self.limits.max_queued {
            return Err(overloaded(format!(
                "{all} requests are already waiting to run (--max_queued_requests {})",
                self.limits.max_queued
            )));
        }
        let acquire = self.slots.clone().acquire_owned();
        let permit = match deadline {
            Some(d) => tokio::time::timeout_at(d.into(), acquire).await.map_err(|_| {
                ServingError::new(Code::DeadlineExceeded, "Deadline exceeded while waiting for a run slot")
            })?,
            None => acquire.await,
        };
        permit.map_err(|_| ServingError::new(Code::Unavailable, "the model version is unloading"))
    }
}

fn overloaded(message: String) -> ServingError {
    ServingError::new(Code::ResourceExhausted, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn waits_in_a_bounded_line() {
        let shared = Arc::new(AtomicUsize::new(0));
        let limits =
            RunLimits { max_concurrent_runs: 1, max_queued_per_version: 1, max_queued: 10, queued: shared.clone() };
        let a = Admission::new(limits.clone());
        let first = a.slot(None).await.unwrap();
        // One may wait; the next is refused at once.
        let waiter = a.slot(None);
        tokio::pin!(waiter);
        assert!(tokio::time::timeout(Duration::from_millis(20), &mut waiter).await.is_err());
        let e = a.slot(None).await.unwrap_err();
        assert_eq!(e.code, Code::ResourceExhausted);
        assert!(e.message.contains("--max_queued_requests_per_version 1"), "{}", e.message);
        drop(first);
        let second = waiter.await.unwrap();
        assert_eq!(shared.load(Ordering::Relaxed), 0);
        // A deadline ends the wait.
        let e = a.slot(Some(Instant::now() + Duration::from_millis(10))).await.unwrap_err();
        assert_eq!(e.code, Code::DeadlineExceeded);
        drop(second);
        // The server-wide line counts every version's waiters.
        let b = Admission::new(RunLimits { max_queued: 0, ..limits });
        let _held = b.slot(None).await.unwrap();
        let e = b.slot(None).await.unwrap_err();
        assert!(e.message.contains("--max_queued_requests 0"), "{}", e.message);
        assert_eq!(shared.load(Ordering::Relaxed), 0);
    }
}
