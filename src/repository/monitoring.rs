//! `--monitoring_config_file`: TF Serving's text-format `MonitoringConfig`.

use std::path::Path;

use crate::core::metrics::DEFAULT_PATH;
use crate::error::ServingError;
use crate::proto::tensorflow::serving as pb;

/// Where and how metrics are served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Monitoring {
    /// The REST path of the Prometheus exposition.
    pub path: String,
    /// Add the series labelled by version and signature (`--monitoring_per_version_labels`).
    pub per_version_labels: bool,
}

/// Reads a monitoring config file; `None` when Prometheus is not enabled in it.
pub fn read(path: &Path) -> Result<Option<Monitoring>, ServingError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ServingError::invalid_argument(format!("cannot read {}: {e}", path.display())))?;
    parse(&text, &path.display().to_string())
}

/// Parses and checks text-format `MonitoringConfig`.
pub fn parse(text: &str, origin: &str) -> Result<Option<Monitoring>, ServingError> {
    let config: pb::MonitoringConfig =
        crate::proto::parse_text_format("tensorflow.serving.MonitoringConfig", text, origin)?;
    let Some(prometheus) = config.prometheus_config.filter(|p| p.enable) else { return Ok(None) };
    let path = if prometheus.path.is_empty() { DEFAULT_PATH.to_string() } else { prometheus.path };
    if !path.starts_with('/') || path.contains(['?', '#']) {
        return Err(ServingError::invalid_argument(format!(
            "{origin}: prometheus_config.path must be an absolute URL path; was {path:?}"
        )));
    }
    if path.eq_ignore_ascii_case("/v1")
        || path.to_ascii_lowercase().starts_with("/v1/")
        || path.to_ascii_lowercase().starts_with("/v2")
    {
        return Err(ServingError::invalid_argument(format!(
            "{origin}: prometheus_config.path {path} would hide the inference API's routes"
        )));
    }
    Ok(Some(Monitoring { path, per_version_labels: false }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf_serving_files() {
        let on = parse("prometheus_config { enable: true }", "m").unwrap().unwrap();
        assert_eq!(on.path, DEFAULT_PATH);
        let custom = parse(r#"prometheus_config { enable: true, path: "/metrics" }"#, "m").unwrap().unwrap();
        assert_eq!(custom.path, "/metrics");
        assert_eq!(parse("prometheus_config { enable: false }", "m").unwrap(), None);
        assert_eq!(parse("", "m").unwrap(), None);
        assert!(parse(r#"prometheus_config { enable: true path: "metrics" }"#, "m")
            .unwrap_err()
            .message
            .contains("absolute"));
        assert!(parse(r#"prometheus_config { enable: true path: "/v1/models" }"#, "m").is_err());
        assert!(parse("prometheus_config { bogus: 1 }", "m").is_err());
    }
}
