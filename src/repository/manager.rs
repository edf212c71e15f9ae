//! The model manager: keeps the registry in line with the config and the disk, the way
//! TF Serving's aspired-versions manager does.
//!
//! A version goes START -> LOADING -> AVAILABLE -> UNLOADING -> END. New versions load
//! (and warm up) before the versions they replace unload, so a model always has something
//! to serve; a failed load leaves the old version serving. All changes run on one thread
//! at a time (the state mutex); requests never wait for it, they read registry snapshots.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::batching::{self, BATCHING_PARAMS_FILE};
use super::config::{self, ModelConfig};
use super::image_inputs;
use super::limits;
use super::platform::Platforms;
use super::warmup;
use crate::api::tfs::request_log::RequestLogs;
use crate::core::{Executor, ExecutorOptions};
use crate::error::{Code, ServingError};
use crate::model::{ModelRegistry, Servable, ServableState};
use crate::proto::tensorflow::serving as pb;

/// How the manager polls, retries and warms up; named after TF Serving's flags.
#[derive(Clone, Debug)]
pub struct ManagerOptions {
    /// `--file_system_poll_wait_seconds`: how often base paths are listed (zero: only at start and reload).
    pub file_system_poll: Duration,
    /// `--model_config_file`, re-read every `config_file_poll` when that is not zero.
    pub config_file: Option<PathBuf>,
    /// `--model_config_file_poll_wait_seconds` (zero: read once).
    pub config_file_poll: Duration,
    /// `--max_num_load_retries`: extra attempts after a failed load.
    pub max_load_retries: u32,
    /// `--load_retry_interval_micros`: wait between attempts.
    pub load_retry_interval: Duration,
    /// `--allow_version_labels_for_unavailable_models`.
    pub allow_labels_for_unavailable: bool,
    /// `--enable_model_warmup`: replay `assets.extra/tf_serving_warmup_requests` before AVAILABLE.
    pub enable_warmup: bool,
    /// Warmup runs its requests with the front ends' settings and checks.
    pub serving: crate::serving::ServingOptions,
    /// How long an unloading version waits for its in-flight requests before it is let go.
    pub drain_timeout: Duration,
    /// `--model_repository` with `--model_control_mode=explicit`: the directory whose model
    /// subdirectories clients may load and unload at run time; `None` = model control is off.
    pub model_repository: Option<PathBuf>,
    /// Request log files rotate past this size (`--request_log_max_file_bytes`).
    pub request_log_max_file_bytes: u64,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        crate::config::ServerConfig::default().manager
    }
}

/// What the manager knows of one version directory.
#[derive(Clone, Debug)]
enum Tracked {
    /// Loaded and serving.
    Available,
    /// A load failed; another attempt is due at `next_try`.
    Retrying { attempts: u32, next_try: Instant, error: ServingError },
    /// Every attempt failed; not retried while the directory stays (status END with the error).
    Failed { error: ServingError },
}

/// One configured model.
struct Managed {
    /// Its config entry.
    config: ModelConfig,
    /// Versions the manager has acted on.
    versions: BTreeMap<i64, Tracked>,
    /// The last problem listing the base path, so a missing path is reported once, not every poll.
    listing_error: Option<String>,
}

/// Mutable state, changed under one lock.
#[derive(Default)]
struct State {
    /// Configured models by name.
    models: BTreeMap<String, Managed>,
    /// The config file text last applied, to notice edits.
    config_text: Option<String>,
}

/// Keeps a [`ModelRegistry`] in line with a model config and the version directories on disk.
pub struct ModelManager {
    /// Where servables are published.
    registry: Arc<ModelRegistry>,
    /// Loaders by platform name.
    platforms: Platforms,
    /// Polling and retry settings.
    options: ManagerOptions,
    /// Config and per-version bookkeeping.
    state: Mutex<State>,
    /// Wakes the poll thread early (a retry became due sooner); dropping it ends the thread.
    wake: Mutex<Option<mpsc::Sender<()>>>,
    /// Request logs, following the models' `logging_config`.
    logs: Arc<RequestLogs>,
}

impl std::fmt::Debug for ModelManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelManager").field("options", &self.options).finish_non_exhaustive()
    }
}

impl ModelManager {
    /// Applies `initial` (loading every aspired version before it returns, as TF Serving
    /// does before it opens its ports) and starts the poll thread.
    ///
    /// Problems with single models (a missing path, a failed load, a label on an
    /// unavailable version) are logged and the rest still load.
    pub fn start(
        registry: Arc<ModelRegistry>,
        platforms: Platforms,
        options: ManagerOptions,
        initial: Vec<ModelConfig>,
        config_text: Option<String>,
    ) -> Result<Arc<Self>, ServingError> {
        let logs = RequestLogs::new(options.request_log_max_file_bytes);
        let manager = Arc::new(ModelManager {
            registry,
            platforms,
            options,
            state: Mutex::default(),
            wake: Mutex::new(None),
            logs,
        });
        if let Err(e) = manager.apply(initial) {
            tracing::error!("{}", e.message);
        }
        manager.lock().config_text = config_text;
        let (tx, rx) = mpsc::channel();
        *manager.wake.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        let weak = Arc::downgrade(&manager);
        std::thread::Builder::new()
            .name("model-manager".into())
            .spawn(move || poll_thread(weak, rx))
            .map_err(|e| ServingError::internal(format!("cannot start the model manager thread: {e}")))?;
        Ok(manager)
    }

    /// Stops the poll thread; loaded models stay in the registry.
    pub fn stop(&self) {
        self.wake.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The registry this manager publishes to.
    pub fn registry(&self) -> &Arc<ModelRegistry> {
        &self.registry
    }

    /// The request logs of the configured models (`logging_config`).
    pub fn request_logs(&self) -> &Arc<RequestLogs> {
        &self.logs
    }

    /// `HandleReloadConfigRequest`: validates `config` and makes it the model list.
    pub fn reload(&self, config: &pb::ModelServerConfig) -> Result<(), ServingError> {
        let models = config::validate(config, &self.platforms.names())?;
        self.apply(models)
    }

    /// Replaces the model list: removed models unload, new ones load, labels are set last.
    ///
    /// Every model is handled even when one has a problem; the problems come back together.
    pub fn apply(&self, models: Vec<ModelConfig>) -> Result<(), ServingError> {
        let mut state = self.lock();
        for m in &models {
            if let Some(old) = state.models.get(&m.name) {
                if old.config.platform != m.platform {
                    return Err(ServingError::invalid_argument(format!(
                        "Illegal to change a model's platform. For model {} platform was {} and new platform requested is {}",
                        m.name, old.config.platform, m.platform
                    )));
                }
            }
        }
        self.logs.configure(&models);
        let wanted: BTreeSet<&str> = models.iter().map(|m| m.name.as_str()).collect();
        let removed: Vec<String> = state.models.keys().filter(|n| !wanted.contains(n.as_str())).cloned().collect();
        for name in removed {
            if let Some(mut gone) = state.models.remove(&name) {
                tracing::info!(model = %name, "removed from the config: unloading");
                let versions: Vec<i64> = gone.versions.keys().copied().collect();
                for v in versions {
                    self.forget(&mut gone, v);
                }
                self.registry.retire(&name);
            }
        }
        for m in models {
            self.registry.declare(&m.name);
            match state.models.get_mut(&m.name) {
                Some(existing) => existing.config = m,
                None => {
                    state
                        .models
                        .insert(m.name.clone(), Managed { config: m, versions: BTreeMap::new(), listing_error: None });
                }
            }
        }
        let mut problems = Vec::new();
        let now = Instant::now();
        for managed in state.models.values_mut() {
            if let Err(e) = self.reconcile(managed, now) {
                problems.push(e);
            }
            for (v, t) in &managed.versions {
                match t {
                    Tracked::Failed { error } | Tracked::Retrying { error, .. } => problems.push(ServingError::new(
                        error.code,
                        format!("version {v} of model {} failed to load: {}", managed.config.name, error.message),
                    )),
                    Tracked::Available => {}
                }
            }
            problems.extend(self.apply_labels(managed));
        }
        drop(state);
        self.wake_poller();
        match problems.first() {
            None => Ok(()),
            Some(first) => Err(ServingError::new(
                first.code,
                problems.iter().map(|p| p.message.as_str()).collect::<Vec<_>>().join("; "),
            )),
        }
    }

    /// True when clients may load and unload models (`--model_control_mode=explicit`).
    pub fn model_control_enabled(&self) -> bool {
        self.options.model_repository.is_some()
    }

    fn model_control_root(&self) -> Result<&Path, ServingError> {
        self.options.model_repository.as_deref().ok_or_else(|| {
            ServingError::new(
                Code::PermissionDenied,
                "model control is off: start tensorserve with --model_control_mode=explicit and --model_repository",
            )
        })
    }

    /// Model control: serves `name` from `<--model_repository>/<name>` (latest version, `onnx`),
    /// or re-reads it when it is already there. Blocks until its versions loaded or failed.
    pub fn load_model(&self, name: &str) -> Result<(), ServingError> {
        let root = self.model_control_root()?;
        // One path component of [A-Za-z0-9_.-], not starting with '.': never a path out of the root.
        config::validate_name("model", name)?;
        let base = root.join(name);
        // A symbolic link must not lead out of the repository.
        let (real_root, real_base) = match (root.canonicalize(), base.canonicalize()) {
            (Ok(r), Ok(b)) => (r, b),
            (_, Err(e)) => {
                return Err(ServingError::not_found(format!("model {name} is not in the model repository: {e}")))
            }
            (Err(e), _) => {
                return Err(ServingError::internal(format!(
                    "the model repository {} is unreadable: {e}",
                    root.display()
                )))
            }
        };
        if !real_base.starts_with(&real_root) || !real_base.is_dir() {
            return Err(ServingError::invalid_argument(format!(
                "model {name} is not a directory of the model repository"
            )));
        }
        let mut models: Vec<ModelConfig> = self.lock().models.values().map(|m| m.config.clone()).collect();
        match models.iter_mut().find(|m| m.name == name) {
            Some(existing) => existing.base_path = real_base,
            None => models.push(ModelConfig {
                name: name.to_string(),
                base_path: real_base,
                platform: config::DEFAULT_PLATFORM.to_string(),
                policy: crate::repository::VersionPolicy::Latest(1),
                labels: Default::default(),
                logging: None,
            }),
        }
        tracing::info!(model = name, "model control: load");
        // Other models' problems are theirs: this call reports only on `name`.
        let _ = self.apply(models);
        let statuses = self.registry.statuses(name).unwrap_or_default();
        if statuses.iter().any(|s| s.state == ServableState::Available) {
            return Ok(());
        }
        let why = statuses.iter().find_map(|s| s.error.clone());
        Err(why.unwrap_or_else(|| ServingError::not_found(format!("model {name} has no version directory to load"))))
    }

    /// Model control: stops serving `name`. Requests in flight finish first (the versions go
    /// UNLOADING, then END); new ones get NOT_FOUND at once.
    pub fn unload_model(&self, name: &str) -> Result<(), ServingError> {
        self.model_control_root()?;
        let managed = self.lock().models.contains_key(name);
        if managed {
            tracing::info!(model = name, "model control: unload");
            let models: Vec<ModelConfig> =
                self.lock().models.values().filter(|m| m.config.name != name).map(|m| m.config.clone()).collect();
            let _ = self.apply(models);
            return Ok(());
        }
        // A model registered in code (the bundled examples) has no config entry to drop.
        let serving: Vec<i64> = self
            .registry
            .statuses(name)
            .unwrap_or_default()
            .iter()
            .filter(|s| s.state == ServableState::Available)
            .map(|s| s.version)
            .collect();
        if serving.is_empty() {
            return Err(ServingError::not_found(format!("model {name} is not loaded")));
        }
        tracing::info!(model = name, "model control: unload");
        for v in serving {
            self.unload(name, v);
        }
        self.registry.retire(name);
        Ok(())
    }

    /// One poll: re-lists every base path and performs due retries.
    pub fn poll(&self) {
        let mut state = self.lock();
        let now = Instant::now();
        for managed in state.models.values_mut() {
            let _ = self.reconcile(managed, now);
            self.apply_labels(managed);
        }
    }

    /// Re-reads the config file and applies it when its text changed.
    fn poll_config_file(&self) {
        let Some(path) = &self.options.config_file else { return };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("cannot re-read model config file {}: {e}", path.display());
                return;
            }
        };
        if self.lock().config_text.as_deref() == Some(text.as_str()) {
            return;
        }
        tracing::info!("model config file {} changed: reloading", path.display());
        let parsed = config::parse_text(&text, &path.display().to_string())
            .and_then(|c| config::validate(&c, &self.platforms.names()));
        // A bad edit keeps the running config; the text is remembered so it is reported once.
        self.lock().config_text = Some(text);
        match parsed {
            Ok(models) => {
                if let Err(e) = self.apply(models) {
                    tracing::error!("model config reload: {}", e.message);
                }
            }
            Err(e) => tracing::error!("model config reload: {}", e.message),
        }
    }

    /// The earliest pending retry.
    fn next_retry(&self) -> Option<Instant> {
        let state = self.lock();
        state
            .models
            .values()
            .flat_map(|m| m.versions.values())
            .filter_map(|t| match t {
                Tracked::Retrying { next_try, .. } => Some(*next_try),
                _ => None,
            })
            .min()
    }

    fn wake_poller(&self) {
        if let Some(tx) = self.wake.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = tx.send(());
        }
    }

    /// Brings one model's versions in line with its policy and the directories on disk.
    fn reconcile(&self, managed: &mut Managed, now: Instant) -> Result<(), ServingError> {
        let name = managed.config.name.clone();
        let present = match super::version_dirs(&managed.config.base_path) {
            Ok(p) => {
                managed.listing_error = None;
                p
            }
            Err(e) => {
                // An unreadable base path changes nothing: what is loaded keeps serving.
                let message =
                    format!("Could not find base path {} for servable {name}: {e}", managed.config.base_path.display());
                if managed.listing_error.as_deref() != Some(message.as_str()) {
                    tracing::error!("{message}");
                    managed.listing_error = Some(message.clone());
                }
                return Err(ServingError::not_found(message));
            }
        };
        let on_disk: BTreeSet<i64> = present.keys().copied().collect();
        let aspired = managed.config.policy.select(&on_disk);

        // Failures are forgotten once their directory is gone or no longer aspired (a new copy may load).
        let stale: Vec<i64> = managed
            .versions
            .iter()
            .filter(|(v, t)| !matches!(t, Tracked::Available) && !aspired.contains(v))
            .map(|(v, _)| *v)
            .collect();
        for v in stale {
            self.forget(managed, v);
        }

        // Newest first, so the version `Latest` requests get is serving soonest.
        for v in aspired.iter().rev() {
            let attempts = match managed.versions.get(v) {
                None => 0,
                Some(Tracked::Retrying { attempts, next_try, .. }) if *next_try <= now => *attempts,
                Some(_) => continue,
            };
            let tracked = self.load(&managed.config.platform, &name, *v, &present[v], attempts);
            managed.versions.insert(*v, tracked);
        }

        // Unload what the policy dropped, but only once something aspired serves (or nothing is aspired).
        let aspired_serving = aspired.iter().any(|v| matches!(managed.versions.get(v), Some(Tracked::Available)));
        if aspired.is_empty() || aspired_serving {
            let unwanted: Vec<i64> = managed
                .versions
                .iter()
                .filter(|(v, t)| matches!(t, Tracked::Available) && !aspired.contains(v))
                .map(|(v, _)| *v)
                .collect();
            for v in unwanted {
                self.forget(managed, v);
            }
        }
        Ok(())
    }

    /// One load attempt of `name` version `v`.
    fn load(&self, platform: &str, name: &str, v: i64, dir: &Path, attempts: u32) -> Tracked {
        if attempts == 0 {
            self.registry.set_status(name, v, ServableState::Start, None);
        }
        self.registry.set_status(name, v, ServableState::Loading, None);
        let started = Instant::now();
        match self.load_version(platform, name, v, dir) {
            Ok(runtime) => {
                let engine = runtime.model().engine().unwrap_or("native code");
                // A new version of a model runs like its predecessor until measured, so a fast
                // model's successor starts inline instead of sending its first requests to new blocking threads.
                if let Some(previous) = self.registry.latest_average(name) {
                    runtime.stats().seed(previous);
                }
                if let Some(p) = runtime.batching() {
                    tracing::info!(model = name, version = v, "batching: {p:?}");
                }
                self.registry.insert_runtime(name, v, runtime);
                tracing::info!(
                    model = name,
                    version = v,
                    "available after {:.1} ms on {} ({})",
                    started.elapsed().as_secs_f64() * 1e3,
                    engine,
                    dir.display()
                );
                Tracked::Available
            }
            Err(error) if attempts < self.options.max_load_retries => {
                // Still LOADING, but the status says why it is taking so long.
                let waiting = ServingError::new(
                    error.code,
                    format!(
                        "load attempt {} of {} failed, next in {:?}: {}",
                        attempts + 1,
                        self.options.max_load_retries + 1,
                        self.options.load_retry_interval,
                        error.message
                    ),
                );
                self.registry.set_status(name, v, ServableState::Loading, Some(waiting));
                tracing::warn!(
                    model = name,
                    version = v,
                    "load attempt {} failed, retrying in {:?}: {}",
                    attempts + 1,
                    self.options.load_retry_interval,
                    error.message
                );
                Tracked::Retrying {
                    attempts: attempts + 1,
                    next_try: Instant::now() + self.options.load_retry_interval,
                    error,
                }
            }
            Err(error) => {
                tracing::error!(model = name, version = v, "failed to load: {}", error.message);
                self.registry.set_status(name, v, ServableState::End, Some(error.clone()));
                Tracked::Failed { error }
            }
        }
    }

    /// Loads and warms up a version without publishing it.
    fn load_version(
        &self,
        platform: &str,
        name: &str,
        version: i64,
        dir: &Path,
    ) -> Result<Arc<Executor>, ServingError> {
        let platform = self
            .platforms
            .get(platform)
            .ok_or_else(|| ServingError::internal(format!("unknown platform {platform}")))?;
        let options = self.executor_options_for(dir)?;
        let path = dir.display().to_string();
        let metrics = crate::core::metrics::get();
        let start = Instant::now();
        let loaded = platform
            .load(dir)
            .and_then(|model| image_inputs::wrap_from_dir(model, dir, self.options.serving.max_image_pixels));
        if let Some(m) = metrics {
            m.record_load(&path, loaded.is_ok(), start.elapsed());
        }
        let runtime = Executor::new(name, version, loaded?, &options);
        if self.options.enable_warmup {
            if let Some(file) = warmup::warmup_file(dir) {
                let servable = Servable::new(name, version, &runtime);
                let start = Instant::now();
                let replayed = warmup::replay(&servable, &file, &self.options.serving);
                if let Some(m) = metrics {
                    m.record_warmup(&path, replayed.is_ok(), start.elapsed());
                }
                let report = replayed?;
                tracing::info!(
                    model = name,
                    version,
                    "warmup: {} records in {:.1} ms",
                    report.records,
                    report.elapsed.as_secs_f64() * 1e3
                );
            }
        }
        Ok(runtime)
    }

    /// How a version runs: the server's executor options with the version directory's files
    /// applied (`batching_params.pbtxt` with `--enable_per_model_batching_parameters`, `limits.pbtxt`).
    fn executor_options_for(&self, dir: &Path) -> Result<ExecutorOptions, ServingError> {
        let mut options = self.registry.executor_options().clone();
        let file = dir.join(BATCHING_PARAMS_FILE);
        if options.per_model_batching && file.is_file() {
            options.batching = Some(batching::read(&file)?);
        }
        let file = dir.join(limits::LIMITS_FILE);
        if file.is_file() {
            options.limits = limits::read(&file)?.apply(options.limits);
        }
        Ok(options)
    }

    /// Takes version `v` out of the manager: unloads it if it serves, ends a pending retry.
    fn forget(&self, managed: &mut Managed, v: i64) {
        let name = managed.config.name.clone();
        match managed.versions.remove(&v) {
            Some(Tracked::Available) => self.unload(&name, v),
            Some(Tracked::Retrying { error, .. }) => {
                self.registry.set_status(&name, v, ServableState::End, Some(error))
            }
            Some(Tracked::Failed { .. }) | None => {}
        }
    }

    /// UNLOADING until in-flight requests finish (each holds the version), then END. The wait
    /// happens on its own thread, so the manager (and a reload RPC) is not held up by it.
    fn unload(&self, name: &str, v: i64) {
        let Some(runtime) = self.registry.begin_unload(name, v) else {
            self.registry.set_status(name, v, ServableState::End, None);
            return;
        };
        if runtime.in_flight() == 0 {
            drop(runtime);
            self.registry.set_status(name, v, ServableState::End, None);
            tracing::info!(model = name, version = v, "unloaded");
            return;
        }
        let (registry, name, timeout) = (self.registry.clone(), name.to_string(), self.options.drain_timeout);
        let wait = move || {
            if !runtime.wait_idle(timeout) {
                tracing::warn!(model = %name, version = v, "requests still running after {timeout:?}; freed when they end");
            }
            drop(runtime);
            // Unless the version was loaded again meanwhile.
            let still_unloading = registry
                .statuses(&name)
                .is_some_and(|s| s.iter().any(|st| st.version == v && st.state == ServableState::Unloading));
            if still_unloading {
                registry.set_status(&name, v, ServableState::End, None);
            }
            tracing::info!(model = %name, version = v, "unloaded");
        };
        if let Err(e) = std::thread::Builder::new().name(format!("unload-{v}")).spawn(wait) {
            tracing::warn!(version = v, "cannot start an unload thread: {e}");
        }
    }

    /// Publishes the config's labels; returns one error per label on a version that does not serve.
    fn apply_labels(&self, managed: &Managed) -> Vec<ServingError> {
        let mut labels = std::collections::HashMap::new();
        let mut errors = Vec::new();
        for (label, v) in &managed.config.labels {
            let serving = matches!(managed.versions.get(v), Some(Tracked::Available));
            if serving || self.options.allow_labels_for_unavailable {
                labels.insert(label.clone(), *v);
            } else {
                errors.push(ServingError::new(
                    Code::FailedPrecondition,
                    format!(
                        "Request to assign label to version {v} of model {}, which is not currently available for inference",
                        managed.config.name
                    ),
                ));
            }
        }
        self.registry.set_labels(&managed.config.name, labels);
        errors
    }
}

/// Waits for the next poll, retry or config check, until the manager is dropped or stopped.
fn poll_thread(manager: Weak<ModelManager>, wake: mpsc::Receiver<()>) {
    let mut next_fs_poll = Instant::now();
    let mut next_config_poll = Instant::now();
    loop {
        let Some(m) = manager.upgrade() else { return };
        let fs_every = m.options.file_system_poll;
        let config_every = if m.options.config_file.is_some() { m.options.config_file_poll } else { Duration::ZERO };
        let now = Instant::now();
        if !config_every.is_zero() && next_config_poll <= now {
            m.poll_config_file();
            next_config_poll = now + config_every;
        }
        let retry_due = m.next_retry().is_some_and(|t| t <= now);
        if (!fs_every.is_zero() && next_fs_poll <= now) || retry_due {
            m.poll();
            if next_fs_poll <= now {
                next_fs_poll = now + fs_every;
            }
        }
        let mut deadline: Option<Instant> = m.next_retry();
        if !fs_every.is_zero() {
            deadline = Some(deadline.map_or(next_fs_poll, |d| d.min(next_fs_poll)));
        }
        if !config_every.is_zero() {
            deadline = Some(deadline.map_or(next_config_poll, |d| d.min(next_config_poll)));
        }
        drop(m);
        let result = match deadline {
            Some(d) => wake.recv_timeout(d.saturating_duration_since(Instant::now())),
            None => wake.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        if let Err(mpsc::RecvTimeoutError::Disconnected) = result {
            return;
        }
    }
}
