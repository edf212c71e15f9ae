//! TF Serving's text-format `ModelServerConfig`: parsing (prost-reflect against our own
//! descriptors) and validation into [`ModelConfig`]s.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::policy::VersionPolicy;
use crate::error::ServingError;
use crate::proto::tensorflow::serving as pb;

/// The message TF Serving's `--model_config_file` holds.
const MODEL_SERVER_CONFIG: &str = "tensorflow.serving.ModelServerConfig";

/// The platform an empty `model_platform` means here (TF Serving's default is `tensorflow`,
/// which [`crate::repository::Platforms`] serves from converted ONNX files too).
pub const DEFAULT_PLATFORM: &str = "tensorflow";

/// One validated model entry of the config.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// Model name, as requests address it.
    pub name: String,
    /// Absolute directory holding `<version>/` subdirectories.
    pub base_path: PathBuf,
    /// Platform name (`onnx`, `tensorflow`, or one registered in code).
    pub platform: String,
    /// Which versions on disk to serve.
    pub policy: VersionPolicy,
    /// Version labels (`stable` -> 42), sorted for stable logs.
    pub labels: BTreeMap<String, i64>,
    /// Request logging (`logging_config`), when on.
    pub logging: Option<LoggingSpec>,
}

/// A model's checked `logging_config`.
#[derive(Clone, Debug, PartialEq)]
pub struct LoggingSpec {
    /// Share of requests logged, 0 to 1.
    pub sampling_rate: f64,
    /// Files are `<prefix>.<start time>.<n>.tfrecord`.
    pub filename_prefix: PathBuf,
}

fn logging_spec(name: &str, config: Option<&pb::LoggingConfig>) -> Result<Option<LoggingSpec>, ServingError> {
    let Some(config) = config else { return Ok(None) };
    let rate = config.sampling_config.as_ref().map_or(0.0, |s| s.sampling_rate);
    if !(0.0..=1.0).contains(&rate) {
        return Err(ServingError::invalid_argument(format!(
            "Model {name}: logging_config sampling_rate must be between 0 and 1; was {rate}"
        )));
    }
    let prefix = config.log_collector_config.as_ref().map_or("", |c| c.filename_prefix.as_str());
    if prefix.is_empty() {
        return Err(ServingError::invalid_argument(format!(
            "Model {name}: logging_config needs log_collector_config {{ filename_prefix: \"...\" }}"
        )));
    }
    Ok((rate > 0.0).then(|| LoggingSpec { sampling_rate: rate, filename_prefix: PathBuf::from(prefix) }))
}

/// Parses the text of a `ModelServerConfig`; errors name `origin`, the line and the column.
pub fn parse_text(text: &str, origin: &str) -> Result<pb::ModelServerConfig, ServingError> {
    crate::proto::parse_text_format(MODEL_SERVER_CONFIG, text, origin)
}

/// Reads and parses a config file.
pub fn read_file(path: &Path) -> Result<pb::ModelServerConfig, ServingError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ServingError::invalid_argument(format!("cannot read model config file {}: {e}", path.display()))
    })?;
    parse_text(&text, &path.display().to_string())
}

/// Checks a model or label name: it appears in URLs and logs, never in paths.
pub fn validate_name(kind: &str, name: &str) -> Result<(), ServingError> {
    let ok = !name.is_empty()
        && name.len() <= 256
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ServingError::invalid_argument(format!(
            "Invalid {kind} name {name:?}: use 1-256 characters from [A-Za-z0-9_.-], not starting with '.'"
        )))
    }
}

/// Validates a whole `ModelServerConfig` into model entries, in file order.
///
/// `known_platforms` lists the platforms this server can load.
pub fn validate(
    config: &pb::ModelServerConfig,
    known_platforms: &BTreeSet<String>,
) -> Result<Vec<ModelConfig>, ServingError> {
    let list = match &config.config {
        Some(pb::model_server_config::Config::ModelConfigList(list)) => list,
        Some(pb::model_server_config::Config::CustomModelConfig(_)) => {
            return Err(ServingError::invalid_argument("custom_model_config is not supported; use model_config_list"))
        }
        // An empty file is a valid config with no models, as in TF Serving.
        None => return Ok(Vec::new()),
    };
    let mut seen = HashMap::new();
    let mut models = Vec::with_capacity(list.config.len());
    for (index, entry) in list.config.iter().enumerate() {
        validate_name("model", &entry.name)?;
        if seen.insert(entry.name.clone(), index).is_some() {
            return Err(ServingError::invalid_argument(format!(
                "Illegal to list model {} multiple times in config list",
                entry.name
            )));
        }
        let base_path = PathBuf::from(&entry.base_path);
        if !base_path.is_absolute() {
            return Err(ServingError::invalid_argument(format!(
                "Expected model {} to have an absolute path; got base_path()={}",
                entry.name, entry.base_path
            )));
        }
        let platform =
            if entry.model_platform.is_empty() { DEFAULT_PLATFORM.to_string() } else { entry.model_platform.clone() };
        if !known_platforms.contains(&platform) {
            return Err(ServingError::invalid_argument(format!(
                "Model {} has unknown model_platform {platform:?}; this server knows {}",
                entry.name,
                known_platforms.iter().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        let policy = VersionPolicy::from_proto(entry.model_version_policy.as_ref())
            .map_err(|e| ServingError::invalid_argument(format!("Model {}: {e}", entry.name)))?;
        let mut labels = BTreeMap::new();
        for (label, version) in &entry.version_labels {
            validate_name("version label", label)?;
            labels.insert(label.clone(), *version);
        }
        let logging = logging_spec(&entry.name, entry.logging_config.as_ref())?;
        models.push(ModelConfig { name: entry.name.clone(), base_path, platform, policy, labels, logging });
    }
    Ok(models)
}

/// The one-model config `--model_name`/`--model_base_path` stand for.
pub fn single_model(name: &str, base_path: &Path) -> Result<Vec<ModelConfig>, ServingError> {
    validate_name("model", name)?;
    let base_path = if base_path.is_absolute() {
        base_path.to_path_buf()
    } else {
        // TF Serving wants absolute paths in a config file; a relative flag is resolved here for convenience.
        std::env::current_dir().map_err(|e| ServingError::internal(e.to_string()))?.join(base_path)
    };
    Ok(vec![ModelConfig {
        name: name.to_string(),
        base_path,
        platform: DEFAULT_PLATFORM.to_string(),
        policy: VersionPolicy::Latest(1),
        labels: BTreeMap::new(),
        logging: None,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platforms() -> BTreeSet<String> {
        ["onnx", "tensorflow"].into_iter().map(String::from).collect()
    }

    #[test]
    fn parses_tf_serving_example() {
        let text = r#"
model_config_list {
  config {
    name: 'my_first_model'
    base_path: '/tmp/my_first_model/'
    model_platform: 'tensorflow'
    model_version_policy { specific { versions: 42 versions: 43 } }
    version_labels { key: 'stable' value: 42 }
    version_labels { key: 'canary' value: 43 }
  }
  config {
    name: "my_second_model"
    base_path: "/tmp/my_second_model"
    model_platform: "tensorflow"
    model_version_policy: { latest: { num_versions: 2 } }
  }
}"#;
        let models = validate(&parse_text(text, "test.config").unwrap(), &platforms()).unwrap();
        assert_eq!(models.len(), 2);
        assert_eq!(models[0].policy, VersionPolicy::Specific([42, 43].into_iter().collect()));
        assert_eq!(models[0].labels, BTreeMap::from([("canary".to_string(), 43), ("stable".to_string(), 42)]));
        assert_eq!(models[1].policy, VersionPolicy::Latest(2));
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let text = "model_config_list {\n  config {\n    nmae: 'x'\n  }\n}\n";
        let e = parse_text(text, "/etc/models.config").unwrap_err();
        assert!(
            e.message.starts_with(
                "Error parsing text-format tensorflow.serving.ModelServerConfig: /etc/models.config:3:5: "
            ),
            "{}",
            e.message
        );
        assert!(e.message.contains("nmae"), "{}", e.message);
    }

    #[test]
    fn rejects_bad_entries() {
        let check = |body: &str, want: &str| {
            let text = format!("model_config_list {{ {body} }}");
            let e = validate(&parse_text(&text, "c").unwrap(), &platforms()).unwrap_err();
            assert!(e.message.contains(want), "{} does not contain {want}", e.message);
        };
        check("config { name: 'a' base_path: 'rel/path' }", "absolute path");
        check("config { name: 'a' base_path: '/x' } config { name: 'a' base_path: '/y' }", "multiple times");
        check("config { name: 'a' base_path: '/x' model_platform: 'pytorch' }", "unknown model_platform");
        check("config { name: '../etc' base_path: '/x' }", "Invalid model name");
        check("config { name: 'a' base_path: '/x' version_labels { key: 'a/b' value: 1 } }", "Invalid version label");
        check("config { name: 'a' base_path: '/x' model_version_policy { specific { } } }", "no versions");
    }

    #[test]
    fn deeply_nested_text_is_refused_before_parsing() {
        let text = "[a/tensorflow.Example]{".repeat(8000) + &"}".repeat(8000);
        // The manager's thread has a small stack; the parser must not recurse this deep.
        let e = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || parse_text(&text, "deep.config"))
            .unwrap()
            .join()
            .unwrap()
            .unwrap_err();
        assert_eq!(e.code, crate::Code::InvalidArgument);
        assert!(e.message.contains("deep.config:1:"), "{}", e.message);
        assert!(e.message.contains("nested more than 64 deep"), "{}", e.message);
        // Nesting in strings and comments does not count.
        let ok = format!(
            "# {}\nmodel_config_list {{ config {{ name: '{}' base_path: '/m' }} }}",
            "{".repeat(100),
            "{".repeat(100)
        );
        assert!(parse_text(&ok, "ok.config").is_ok());
    }
}
