//! `--model_config_file` text: `repository::config::parse_text` (prost-reflect text format
//! against our descriptors, errors with line and column), then `config::validate` (names,
//! paths, platforms, version policies, labels) and each model's policy applied to versions.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use tensorserve::repository::config::{parse_text, validate};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let config = parse_text(&text, "/etc/tensorserve/models.config");
    let platforms: BTreeSet<String> = ["onnx", "tensorflow"].into_iter().map(String::from).collect();
    let models = config.map(|c| validate(&c, &platforms));
    tensorserve_fuzz::debug(|| format!("{models:?}"));
    let Ok(Ok(models)) = models else { return };
    let present: BTreeSet<i64> = [1, 2, 3, 5, 8, 13, i64::MAX].into_iter().collect();
    for model in &models {
        let selected = model.policy.select(&present);
        assert!(selected.is_subset(&present), "{}: the policy selected versions not on disk", model.name);
    }
});
