//! The example models compiled into the binary, so `tensorserve` with no flags serves them.

use std::sync::Arc;

use crate::backend::onnx::{OnnxEngine, OnnxLoader, OnnxSource};
use crate::error::ServingError;
use crate::model::Model;
use crate::model::ModelRegistry;

/// `half_plus_two` v123: y = 0.5 x + 2 (plus TF Serving's test heads y2 = 0.5 x + 3, y3 = 0.5 x2 + 3).
pub const HALF_PLUS_TWO_ONNX: &[u8] = include_bytes!("../examples/models/half_plus_two/123/model.onnx");

/// The signatures of `half_plus_two`: TF Serving's test model's, incl. classify and regress.
pub const HALF_PLUS_TWO_SIGNATURES: &str = include_str!("../examples/models/half_plus_two/123/signatures.pbtxt");

/// `iris` v1: a logistic regression over four float features, with class names.
pub const IRIS_ONNX: &[u8] = include_bytes!("../examples/models/iris/1/model.onnx");

/// The signatures of `iris`: `serving_default` is a classify signature.
pub const IRIS_SIGNATURES: &str = include_str!("../examples/models/iris/1/signatures.pbtxt");

/// `digits_mlp` v1: a 64-32-10 MLP trained on scikit-learn's 8x8 digits.
pub const DIGITS_MLP_ONNX: &[u8] = include_bytes!("../examples/models/digits_mlp/1/model.onnx");

/// The bundled models: (name, version, ONNX bytes, signatures file text).
pub const BUNDLED: [(&str, i64, &[u8], Option<&str>); 3] = [
    ("half_plus_two", 123, HALF_PLUS_TWO_ONNX, Some(HALF_PLUS_TWO_SIGNATURES)),
    ("iris", 1, IRIS_ONNX, Some(IRIS_SIGNATURES)),
    ("digits_mlp", 1, DIGITS_MLP_ONNX, None),
];

/// Loads one bundled model with `loader`'s engine.
pub fn load_bundled(
    loader: &OnnxLoader,
    bytes: &[u8],
    signatures: Option<&str>,
) -> Result<Arc<dyn Model>, ServingError> {
    loader.load(&OnnxSource::from_bytes(bytes, signatures.map(|text| (text, "signatures.pbtxt")))?)
}

/// Loads every bundled model into `registry` with `loader`'s engine.
///
/// Under `auto` they run on tract when it is compiled in: these graphs are a few nodes, where
/// ONNX Runtime's fixed cost per run outweighs the work (half_plus_two Predict: 22.5 us of server
/// CPU on tract, 36.8 us on ONNX Runtime, `benches/load.sh`).
pub fn register_bundled_with(registry: &ModelRegistry, loader: &OnnxLoader) -> Result<(), ServingError> {
    let loader = match loader.engine {
        OnnxEngine::Auto if cfg!(feature = "tract") => OnnxLoader::new(OnnxEngine::Tract),
        _ => *loader,
    };
    for (name, version, bytes, signatures) in BUNDLED {
        let model = load_bundled(&loader, bytes, signatures)?;
        tracing::info!(model = name, version, "engine {}", model.engine().unwrap_or("native"));
        registry.insert(name, version, model);
    }
    Ok(())
}

/// Loads every bundled model into `registry` with the `auto` engine.
pub fn register_bundled(registry: &ModelRegistry) -> Result<(), ServingError> {
    register_bundled_with(registry, &OnnxLoader::default())
}
