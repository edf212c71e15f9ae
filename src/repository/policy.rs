//! Which versions on disk a model serves: TF Serving's `ServableVersionPolicy`.

use std::collections::BTreeSet;

use crate::proto::tensorflow::serving::file_system_storage_path_source_config::servable_version_policy::PolicyChoice;
use crate::proto::tensorflow::serving::file_system_storage_path_source_config::ServableVersionPolicy;

/// A version policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VersionPolicy {
    /// The N highest versions (TF Serving's default is 1).
    Latest(usize),
    /// Every version found.
    All,
    /// Exactly these versions, when present.
    Specific(BTreeSet<i64>),
}

impl VersionPolicy {
    /// Reads the proto form; an absent policy is `latest { num_versions: 1 }`.
    pub fn from_proto(proto: Option<&ServableVersionPolicy>) -> Result<Self, String> {
        Ok(match proto.and_then(|p| p.policy_choice.as_ref()) {
            None => VersionPolicy::Latest(1),
            // num_versions 0 (an empty `latest {}`) means the default of 1.
            Some(PolicyChoice::Latest(l)) => VersionPolicy::Latest((l.num_versions as usize).max(1)),
            Some(PolicyChoice::All(_)) => VersionPolicy::All,
            Some(PolicyChoice::Specific(s)) => {
                if s.versions.is_empty() {
                    return Err("the specific version policy lists no versions".to_string());
                }
                VersionPolicy::Specific(s.versions.iter().copied().collect())
            }
        })
    }

    /// The versions to serve out of those present on disk.
    pub fn select(&self, present: &BTreeSet<i64>) -> BTreeSet<i64> {
        match self {
            VersionPolicy::Latest(n) => present.iter().rev().take(*n).copied().collect(),
            VersionPolicy::All => present.clone(),
            VersionPolicy::Specific(wanted) => present.intersection(wanted).copied().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_as_tf_serving() {
        let present: BTreeSet<i64> = [1, 2, 5, 9].into_iter().collect();
        assert_eq!(VersionPolicy::Latest(1).select(&present), [9].into_iter().collect());
        assert_eq!(VersionPolicy::Latest(3).select(&present), [2, 5, 9].into_iter().collect());
        assert_eq!(VersionPolicy::All.select(&present), present);
        let specific = VersionPolicy::Specific([2, 3].into_iter().collect());
        assert_eq!(specific.select(&present), [2].into_iter().collect());
        assert_eq!(VersionPolicy::from_proto(None).unwrap(), VersionPolicy::Latest(1));
    }
}
