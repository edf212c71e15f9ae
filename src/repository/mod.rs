//! Model directories on disk (TF Serving's `BASE/<version>/` layout), the config file,
//! version policies, and the manager that loads and unloads versions.

pub mod batching;
pub mod config;
pub mod image_inputs;
pub mod limits;
pub mod manager;
pub mod monitoring;
pub mod platform;
pub mod policy;
pub mod warmup;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use config::ModelConfig;
pub use manager::{ManagerOptions, ModelManager};
pub use platform::{Platform, Platforms};
pub use policy::VersionPolicy;

/// Version directories under `base`: children whose names parse as int64 (`00000123` is 123).
///
/// A symlinked version directory counts only if it resolves inside `base`, so nothing
/// on disk can make the server read outside its configured base paths.
pub fn version_dirs(base: &Path) -> std::io::Result<BTreeMap<i64, PathBuf>> {
    let canonical_base = base.canonicalize()?;
    let mut versions = BTreeMap::new();
    for entry in std::fs::read_dir(&canonical_base)? {
        let entry = entry?;
        let Some(version) = entry.file_name().to_str().and_then(|n| n.parse::<i64>().ok()) else { continue };
        let kind = entry.file_type()?;
        let dir = if kind.is_dir() {
            entry.path()
        } else if kind.is_symlink() {
            match entry.path().canonicalize() {
                Ok(target) if target.is_dir() && target.starts_with(&canonical_base) => target,
                _ => {
                    tracing::debug!("ignoring {}: a link that leaves {}", entry.path().display(), base.display());
                    continue;
                }
            }
        } else {
            continue;
        };
        // Two spellings of one number (`7`, `007`): the first listed wins, as a map holds one.
        versions.entry(version).or_insert(dir);
    }
    Ok(versions)
}

/// `dir/name`, refused if it is a link that resolves outside `dir`.
pub fn confined_file(dir: &Path, name: &str) -> std::io::Result<PathBuf> {
    let path = dir.join(name);
    let resolved = path.canonicalize()?;
    if !resolved.starts_with(dir.canonicalize()?) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("{} resolves outside {}", path.display(), dir.display()),
        ));
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_integer_directories_inside_base_are_versions() {
        let root = std::env::temp_dir().join(format!("tensorserve-versions-{}", std::process::id()));
        let dir = root.join("base");
        for d in ["00000123", "7", "abc", "12x"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(dir.join("99"), b"a file, not a version").unwrap();
        std::fs::create_dir_all(root.join("outside")).unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(root.join("outside"), dir.join("500")).unwrap();
            std::os::unix::fs::symlink(dir.join("7"), dir.join("8")).unwrap();
        }
        let found: Vec<i64> = version_dirs(&dir).unwrap().into_keys().collect();
        #[cfg(unix)]
        assert_eq!(found, vec![7, 8, 123]);
        std::fs::write(root.join("outside/secret"), b"x").unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(root.join("outside/secret"), dir.join("7/model.onnx")).unwrap();
            assert!(confined_file(&dir.join("7"), "model.onnx").is_err());
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
}
