//! The registry: model name -> versions -> servable, read without locks.
//!
//! Readers load an immutable snapshot (`arc_swap`); writers build a new one
//! under a mutex. A request holds an `Arc` to its model, so a version removed
//! from the registry finishes its in-flight requests before it is freed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use super::Model;
use crate::core::{Executor, ExecutorOptions};
use crate::error::{Code, ServingError};

/// Lifecycle states, numbered as in `ModelVersionStatus.State`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServableState {
    /// Known to the manager, not loading yet.
    Start = 10,
    /// Being loaded (and warmed up).
    Loading = 20,
    /// Serving requests.
    Available = 30,
    /// Draining its in-flight requests.
    Unloading = 40,
    /// Unloaded, or failed to load (the status says which).
    End = 50,
}

impl ServableState {
    /// The upper-case name used in status JSON.
    pub fn name(self) -> &'static str {
        match self {
            ServableState::Start => "START",
            ServableState::Loading => "LOADING",
            ServableState::Available => "AVAILABLE",
            ServableState::Unloading => "UNLOADING",
            ServableState::End => "END",
        }
    }
}

/// The status of one version, as `GetModelStatus` reports it.
#[derive(Clone, Debug)]
pub struct VersionStatus {
    /// The version number.
    pub version: i64,
    /// Its lifecycle state.
    pub state: ServableState,
    /// The load error, if loading failed.
    pub error: Option<ServingError>,
}

/// One version as stored in a snapshot.
#[derive(Clone)]
struct VersionEntry {
    /// State and error.
    status: VersionStatus,
    /// The version's executor (and model), present while the version can serve.
    runtime: Option<Arc<Executor>>,
}

/// One model name as stored in a snapshot.
#[derive(Clone, Default)]
struct ModelEntry {
    /// Versions by number.
    versions: BTreeMap<i64, VersionEntry>,
    /// Version labels (`stable` -> 1).
    labels: HashMap<String, i64>,
    /// Removed from the config: kept only so GetModelStatus can report END.
    retired: bool,
}

/// A model version resolved for one request; while any clone lives, the version counts it
/// in flight, and an unload waits for it.
pub struct Servable {
    /// The model name as requested.
    pub name: String,
    /// The resolved version.
    pub version: i64,
    /// The model (signatures); runs go through `runtime`.
    pub model: Arc<dyn Model>,
    /// The version's executor: the only place the model runs.
    pub runtime: Arc<Executor>,
}

impl Servable {
    /// A servable of `runtime`'s version, counted in flight.
    pub fn new(name: &str, version: i64, runtime: &Arc<Executor>) -> Servable {
        runtime.enter();
        Servable { name: name.to_string(), version, model: runtime.model().clone(), runtime: runtime.clone() }
    }
}

impl Clone for Servable {
    fn clone(&self) -> Self {
        Servable::new(&self.name, self.version, &self.runtime)
    }
}

impl Drop for Servable {
    fn drop(&mut self) {
        self.runtime.leave();
    }
}

/// Which version a request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VersionChoice {
    /// The highest available version.
    Latest,
    /// One version number.
    Specific(i64),
    /// A version label from the config.
    Label(String),
}

/// Name -> versions -> servable.
#[derive(Default)]
pub struct ModelRegistry {
    /// The current snapshot; replaced whole on every change.
    snapshot: ArcSwap<HashMap<String, Arc<ModelEntry>>>,
    /// Serialises writers so no update is lost.
    write: Mutex<()>,
    /// How executors of inserted versions run their models.
    executor_options: ExecutorOptions,
}

impl ModelRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty registry whose versions run with `options` (batching, inline threshold).
    pub fn with_executor_options(options: ExecutorOptions) -> Self {
        ModelRegistry { executor_options: options, ..Self::default() }
    }

    /// How executors of this registry's versions run.
    pub fn executor_options(&self) -> &ExecutorOptions {
        &self.executor_options
    }

    /// An executor for `model` with this registry's options.
    pub fn executor(&self, name: &str, version: i64, model: Arc<dyn Model>) -> Arc<Executor> {
        Executor::new(name, version, model, &self.executor_options)
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut ModelEntry)) {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.snapshot.load();
        let mut next: HashMap<String, Arc<ModelEntry>> = (**current).clone();
        let mut entry = next.get(name).map(|e| (**e).clone()).unwrap_or_default();
        f(&mut entry);
        next.insert(name.to_string(), Arc::new(entry));
        self.snapshot.store(Arc::new(next));
    }

    /// Adds (or replaces) a version that is ready to serve, batched when the options say so.
    pub fn insert(&self, name: &str, version: i64, model: Arc<dyn Model>) {
        let runtime = self.executor(name, version, model);
        self.insert_runtime(name, version, runtime);
    }

    /// Adds a version with its executor (which may have run warmup already).
    pub fn insert_runtime(&self, name: &str, version: i64, runtime: Arc<Executor>) {
        self.update(name, |e| {
            e.retired = false;
            e.versions.insert(
                version,
                VersionEntry {
                    status: VersionStatus { version, state: ServableState::Available, error: None },
                    runtime: Some(runtime),
                },
            );
        });
    }

    /// Marks a version UNLOADING and takes it out of service; returns its executor so the
    /// caller can wait for in-flight requests ([`Executor::wait_idle`]) before dropping it.
    pub fn begin_unload(&self, name: &str, version: i64) -> Option<Arc<Executor>> {
        let mut taken = None;
        self.update(name, |e| {
            if let Some(v) = e.versions.get_mut(&version) {
                v.status.state = ServableState::Unloading;
                taken = v.runtime.take();
            }
        });
        taken
    }

    /// Marks a model as removed from the config: unlisted, its version states kept for status.
    pub fn retire(&self, name: &str) {
        self.update(name, |e| {
            e.retired = true;
            e.labels.clear();
        });
    }

    /// Marks a model as configured (listed) even before any version loads.
    pub fn declare(&self, name: &str) {
        self.update(name, |e| e.retired = false);
    }

    /// Records a version that cannot serve (loading, failed, unloaded), dropping its model.
    pub fn set_status(&self, name: &str, version: i64, state: ServableState, error: Option<ServingError>) {
        self.update(name, |e| {
            e.versions.insert(version, VersionEntry { status: VersionStatus { version, state, error }, runtime: None });
        });
    }

    /// Replaces the version labels of a model.
    pub fn set_labels(&self, name: &str, labels: HashMap<String, i64>) {
        self.update(name, |e| e.labels = labels);
    }

    /// Removes a model and all its versions.
    pub fn remove(&self, name: &str) {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut next: HashMap<String, Arc<ModelEntry>> = (**self.snapshot.load()).clone();
        next.remove(name);
        self.snapshot.store(Arc::new(next));
    }

    /// The names of all configured models, sorted.
    pub fn model_names(&self) -> Vec<String> {
        let mut names: Vec<String> =
            self.snapshot.load().iter().filter(|(_, e)| !e.retired).map(|(k, _)| k.clone()).collect();
        names.sort();
        names
    }

    /// The measured average run of the highest version of `name` that serves, if any.
    pub fn latest_average(&self, name: &str) -> Option<Duration> {
        let snapshot = self.snapshot.load();
        let entry = snapshot.get(name)?;
        let runtime = entry.versions.values().rev().find_map(|v| v.runtime.as_ref())?;
        Some(runtime.stats().average()).filter(|d| !d.is_zero())
    }

    /// Every version of `name`, highest first; `None` for an unknown model.
    pub fn statuses(&self, name: &str) -> Option<Vec<VersionStatus>> {
        let snapshot = self.snapshot.load();
        let entry = snapshot.get(name)?;
        Some(entry.versions.values().rev().map(|v| v.status.clone()).collect())
    }

    /// Every version of `name`, highest first, with its executor while it can serve.
    pub fn versions(&self, name: &str) -> Option<Vec<(VersionStatus, Option<Arc<Executor>>)>> {
        let snapshot = self.snapshot.load();
        let entry = snapshot.get(name)?;
        Some(entry.versions.values().rev().map(|v| (v.status.clone(), v.runtime.clone())).collect())
    }

    /// True when `name` is a model the server was configured with (loaded or not).
    pub fn knows(&self, name: &str) -> bool {
        self.snapshot.load().contains_key(name)
    }

    /// Resolves a request's model and version to a loaded servable, with TF Serving's errors.
    pub fn resolve(&self, name: &str, choice: &VersionChoice) -> Result<Servable, ServingError> {
        let snapshot = self.snapshot.load();
        let entry = snapshot.get(name);
        let version = match choice {
            VersionChoice::Latest => {
                entry.and_then(|e| e.versions.iter().rev().find(|(_, v)| v.runtime.is_some()).map(|(k, _)| *k))
            }
            VersionChoice::Specific(v) => Some(*v),
            VersionChoice::Label(label) => match entry.and_then(|e| e.labels.get(label)) {
                Some(v) => Some(*v),
                None => {
                    return Err(ServingError::invalid_argument(format!("Unrecognized servable version label: {label}")))
                }
            },
        };
        let found = version.and_then(|v| {
            let runtime = entry?.versions.get(&v)?.runtime.as_ref()?;
            Some(Servable::new(name, v, runtime))
        });
        found.ok_or_else(|| {
            let request = match (choice, version) {
                (VersionChoice::Latest, _) | (_, None) => format!("Latest({name})"),
                (_, Some(v)) => format!("Specific({name}, {v})"),
            };
            ServingError::new(Code::NotFound, format!("Servable not found for request: {request}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Signature, TensorMap};
    use std::collections::BTreeMap;

    struct Nothing(BTreeMap<String, Signature>);
    impl Model for Nothing {
        fn signatures(&self) -> &BTreeMap<String, Signature> {
            &self.0
        }
        fn run(&self, _: &str, _: TensorMap, _: &[String]) -> Result<TensorMap, ServingError> {
            Ok(TensorMap::new())
        }
    }

    fn model() -> Arc<dyn Model> {
        Arc::new(Nothing(BTreeMap::new()))
    }

    #[test]
    fn resolves_latest_specific_and_labels() {
        let r = ModelRegistry::new();
        r.insert("m", 1, model());
        r.insert("m", 3, model());
        r.set_status("m", 4, ServableState::End, Some(ServingError::internal("bad")));
        r.set_labels("m", HashMap::from([("stable".to_string(), 1)]));
        assert_eq!(r.resolve("m", &VersionChoice::Latest).unwrap().version, 3);
        assert_eq!(r.resolve("m", &VersionChoice::Specific(1)).unwrap().version, 1);
        assert_eq!(r.resolve("m", &VersionChoice::Label("stable".into())).unwrap().version, 1);
        let e = r.resolve("m", &VersionChoice::Specific(4)).err().unwrap();
        assert_eq!(e.message, "Servable not found for request: Specific(m, 4)");
        let e = r.resolve("nope", &VersionChoice::Latest).err().unwrap();
        assert_eq!((e.code, e.message.as_str()), (Code::NotFound, "Servable not found for request: Latest(nope)"));
        let e = r.resolve("m", &VersionChoice::Label("canary".into())).err().unwrap();
        assert_eq!(
            (e.code, e.message.as_str()),
            (Code::InvalidArgument, "Unrecognized servable version label: canary")
        );
        let versions: Vec<i64> = r.statuses("m").unwrap().iter().map(|s| s.version).collect();
        assert_eq!(versions, vec![4, 3, 1]);
    }
}
