//! A version's own admission limits: `limits.pbtxt` in its directory, text-format
//! `tensorserve.ServableLimits`. TF Serving has no such file; Triton users know the idea from
//! `instance_group.count` and `max_queue_size` in a model's `config.pbtxt`.

use std::path::Path;

use crate::core::RunLimits;
use crate::error::ServingError;
use crate::proto::tensorserve as ts;

/// The per-version limits file, read whenever a version directory has one.
pub const LIMITS_FILE: &str = "limits.pbtxt";

/// Checked per-version limits; `None` keeps the server's flag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServableLimits {
    /// Runs of the version at once.
    pub max_concurrent_runs: Option<usize>,
    /// Requests of the version waiting for a run.
    pub max_queued_requests: Option<usize>,
}

impl ServableLimits {
    /// `server` with these limits put in; the server-wide queue bound still applies.
    pub fn apply(self, server: RunLimits) -> RunLimits {
        RunLimits {
            max_concurrent_runs: self.max_concurrent_runs.unwrap_or(server.max_concurrent_runs),
            max_queued_per_version: self.max_queued_requests.unwrap_or(server.max_queued_per_version),
            ..server
        }
    }
}

/// Reads and checks a `limits.pbtxt`.
pub fn read(path: &Path) -> Result<ServableLimits, ServingError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ServingError::invalid_argument(format!("cannot read limits {}: {e}", path.display())))?;
    parse(&text, &path.display().to_string())
}

/// Parses and checks text-format `ServableLimits`.
pub fn parse(text: &str, origin: &str) -> Result<ServableLimits, ServingError> {
    let p: ts::ServableLimits = crate::proto::parse_text_format("tensorserve.ServableLimits", text, origin)?;
    let check = |v: Option<i64>, name: &str, min: i64| -> Result<Option<usize>, ServingError> {
        match v {
            None => Ok(None),
            Some(v) if v >= min => usize::try_from(v)
                .map(Some)
                .map_err(|_| ServingError::invalid_argument(format!("{origin}: {name} {v} is too large"))),
            Some(v) => Err(ServingError::invalid_argument(format!("{origin}: {name} must be at least {min}; was {v}"))),
        }
    };
    Ok(ServableLimits {
        max_concurrent_runs: check(p.max_concurrent_runs, "max_concurrent_runs", 1)?,
        // 0 is allowed: every request that finds the run slots busy is refused at once.
        max_queued_requests: check(p.max_queued_requests, "max_queued_requests", 0)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_fields_replace_the_flags_and_unset_ones_keep_them() {
        let server = RunLimits::default();
        let limits = parse("max_concurrent_runs: 1", "t").unwrap();
        let applied = limits.apply(server.clone());
        assert_eq!(applied.max_concurrent_runs, 1);
        assert_eq!(applied.max_queued_per_version, server.max_queued_per_version);
        assert!(std::sync::Arc::ptr_eq(&applied.queued, &server.queued), "the server-wide count stays shared");
        let both = parse("max_concurrent_runs: 3\nmax_queued_requests: 0", "t").unwrap();
        assert_eq!(both, ServableLimits { max_concurrent_runs: Some(3), max_queued_requests: Some(0) });
    }

    #[test]
    fn bad_files_are_refused_with_their_origin() {
        let e = parse("max_concurrent_runs: 0", "v/limits.pbtxt").unwrap_err();
        assert!(e.message.contains("v/limits.pbtxt: max_concurrent_runs must be at least 1"), "{}", e.message);
        let e = parse("max_queued_requests: -1", "f").unwrap_err();
        assert!(e.message.contains("max_queued_requests must be at least 0"), "{}", e.message);
        let e = parse("max_concurent_runs: 2", "f").unwrap_err();
        assert!(e.message.starts_with("Error parsing text-format tensorserve.ServableLimits: f:1:"), "{}", e.message);
    }
}
