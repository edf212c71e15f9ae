//! Finding ONNX Runtime's shared library: the flag, `ORT_DYLIB_PATH`, where `pip install
//! onnxruntime` puts it, then the system's library path.

use std::path::{Path, PathBuf};

/// The file name the system's dynamic loader searches for.
const SYSTEM_NAME: &str = "libonnxruntime.so";

/// A library file to try and how it was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The file (or, for the system search, the bare name the loader resolves).
    pub path: PathBuf,
    /// Where it came from, for the log.
    pub origin: String,
}

/// Every place to try, in order: `explicit` (the flag), `ORT_DYLIB_PATH`, pip installs, the system.
pub fn candidates(explicit: Option<&Path>) -> Vec<Candidate> {
    let mut out = Vec::new();
    if let Some(path) = explicit {
        out.push(Candidate { path: path.to_path_buf(), origin: "--onnxruntime_library".into() });
        // A path named explicitly is the only one tried: a typo must not silently load another library.
        return out;
    }
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        out.push(Candidate { path: PathBuf::from(path), origin: "ORT_DYLIB_PATH".into() });
        return out;
    }
    for prefix in python_prefixes() {
        for file in pip_libraries(&prefix) {
            out.push(Candidate { path: file, origin: format!("pip install in {}", prefix.display()) });
        }
    }
    out.push(Candidate { path: PathBuf::from(SYSTEM_NAME), origin: "the system library path".into() });
    out
}

/// Python prefixes a `pip install` may have used: the active virtual environment or conda,
/// virtual environments in or beside the working directory, the user's and the system's.
fn python_prefixes() -> Vec<PathBuf> {
    let mut prefixes = Vec::new();
    for var in ["VIRTUAL_ENV", "CONDA_PREFIX"] {
        if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
            prefixes.push(PathBuf::from(p));
        }
    }
    if let Ok(cwd) = std::env::current_dir() {
        for dir in [".venv", "venv", ".ci/venv", "env"] {
            prefixes.push(cwd.join(dir));
        }
    }
    if let Some(home) = std::env::var_os("HOME").map(PathBuf::from) {
        prefixes.push(home.join(".local"));
        // pyenv keeps one prefix per interpreter version.
        if let Ok(entries) = std::fs::read_dir(home.join(".pyenv/versions")) {
            let mut versions: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            versions.sort();
            prefixes.extend(versions.into_iter().rev());
        }
    }
    prefixes.extend(["/usr/local", "/usr", "/opt/conda"].map(PathBuf::from));
    prefixes.dedup();
    prefixes.into_iter().filter(|p| p.is_dir()).collect()
}

/// `<prefix>/lib*/python3*/{site,dist}-packages/onnxruntime/capi/libonnxruntime.so*`, newest version first.
fn pip_libraries(prefix: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for lib in ["lib", "lib64"] {
        let Ok(entries) = std::fs::read_dir(prefix.join(lib)) else { continue };
        for python in entries.flatten() {
            if !python.file_name().to_string_lossy().starts_with("python3") {
                continue;
            }
            for packages in ["site-packages", "dist-packages"] {
                let capi = python.path().join(packages).join("onnxruntime").join("capi");
                let Ok(files) = std::fs::read_dir(&capi) else { continue };
                for file in files.flatten() {
                    let name = file.file_name().to_string_lossy().into_owned();
                    if name.starts_with(SYSTEM_NAME) {
                        found.push(file.path());
                    }
                }
            }
        }
    }
    found.sort_by_key(|p| std::cmp::Reverse(version_of(p)));
    found.dedup();
    found
}

/// The version in a file name such as `libonnxruntime.so.1.32.0` ([1, 32, 0]; empty when none).
fn version_of(path: &Path) -> Vec<u32> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    name.strip_prefix(SYSTEM_NAME)
        .unwrap_or("")
        .split('.')
        .filter(|p| !p.is_empty())
        .map_while(|p| p.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_path_is_the_only_candidate() {
        let c = candidates(Some(Path::new("/nowhere/libonnxruntime.so")));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].origin, "--onnxruntime_library");
    }

    #[test]
    fn pip_layout_is_found_newest_first() {
        let dir = std::env::temp_dir().join(format!("ts-ortlib-{}", std::process::id()));
        let capi = dir.join("lib/python3.11/site-packages/onnxruntime/capi");
        std::fs::create_dir_all(&capi).unwrap();
        for v in ["1.9.0", "1.31.1", "1.4.0"] {
            std::fs::write(capi.join(format!("libonnxruntime.so.{v}")), b"").unwrap();
        }
        let found = pip_libraries(&dir);
        let names: Vec<String> = found.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["libonnxruntime.so.1.31.1", "libonnxruntime.so.1.9.0", "libonnxruntime.so.1.4.0"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
