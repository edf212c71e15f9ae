//! The execution core: a request's run becomes an owned [`Job`], handed to the [`Executor`]
//! of the version it resolved to, which runs it inline, on the blocking pool or in a batch.

pub mod admission;
pub mod batching;
pub mod executor;
pub mod job;
pub mod metrics;
pub mod statistics;
pub mod window;

pub use admission::RunLimits;
pub use batching::BatchingParameters;
pub use executor::{Executor, ExecutorOptions, RunStats, INLINE_MAX_INPUT_BYTES};
pub use job::{Job, Origin, Outcome};
pub use statistics::VersionStatistics;
