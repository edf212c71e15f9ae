//! Model directories on disk: TF Serving's `BASE/<version>/` layout.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::onnx::{OnnxModel, MODEL_FILE};
use crate::error::ServingError;
use crate::model::{ModelRegistry, ServableState};

/// Version directories under `base`: children whose names parse as int64 (`00000123` is 123).
pub fn version_dirs(base: &Path) -> std::io::Result<Vec<(i64, PathBuf)>> {
    let mut versions = Vec::new();
    for entry in std::fs::read_dir(base)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        if let Some(v) = entry.file_name().to_str().and_then(|n| n.parse::<i64>().ok()) {
            versions.push((v, entry.path()));
        }
    }
    versions.sort();
    Ok(versions)
}

/// Loads the highest version under `base` (TF Serving's default policy) into `registry`.
///
/// A version that fails to load is recorded as END with its error, as
/// GetModelStatus shows it; the error is also returned.
pub fn load_latest(registry: &ModelRegistry, name: &str, base: &Path) -> Result<i64, ServingError> {
    let versions = version_dirs(base).map_err(|e| {
        ServingError::not_found(format!("Could not read model base path {}: {e}", base.display()))
    })?;
    let Some((version, dir)) = versions.last().cloned() else {
        return Err(ServingError::not_found(format!(
            "No versions of servable {name} found under base path {}; expected {}/<version>/{MODEL_FILE}",
            base.display(),
            base.display()
        )));
    };
    registry.set_status(name, version, ServableState::Loading, None);
    match OnnxModel::load_dir(&dir) {
        Ok(model) => {
            registry.insert(name, version, Arc::new(model));
            tracing::info!(model = name, version, "loaded {}", dir.display());
            Ok(version)
        }
        Err(e) => {
            registry.set_status(name, version, ServableState::End, Some(e.clone()));
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_integer_directories_are_versions() {
        let dir = std::env::temp_dir().join(format!("tensorserve-versions-{}", std::process::id()));
        for d in ["00000123", "7", "abc", "12x"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(dir.join("99"), b"a file, not a version").unwrap();
        let found: Vec<i64> = version_dirs(&dir).unwrap().into_iter().map(|(v, _)| v).collect();
        assert_eq!(found, vec![7, 123]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
