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

/// `digits_image` v1: KServe's image-classifier contract (image_bytes + key -> scores, prediction, key).
pub const DIGITS_IMAGE_ONNX: &[u8] = include_bytes!("../examples/models/digits_image/1/model.onnx");

/// The signatures of `digits_image`: the pixel input `image`, `key`, and the three outputs.
pub const DIGITS_IMAGE_SIGNATURES: &str = include_str!("../examples/models/digits_image/1/signatures.pbtxt");

/// How `digits_image` takes encoded images: `image_bytes` fills `image`.
pub const DIGITS_IMAGE_INPUTS: &str = include_str!("../examples/models/digits_image/1/image_inputs.pbtxt");

/// The bundled models: (name, version, ONNX bytes, signatures file text).
pub const BUNDLED: [(&str, i64, &[u8], Option<&str>); 4] = [
    ("half_plus_two", 123, HALF_PLUS_TWO_ONNX, Some(HALF_PLUS_TWO_SIGNATURES)),
    ("iris", 1, IRIS_ONNX, Some(IRIS_SIGNATURES)),
    ("digits_mlp", 1, DIGITS_MLP_ONNX, None),
    ("digits_image", 1, DIGITS_IMAGE_ONNX, Some(DIGITS_IMAGE_SIGNATURES)),
];

/// The image inputs file of a bundled model, if it has one.
pub fn bundled_image_inputs(name: &str) -> Option<&'static str> {
    (name == "digits_image").then_some(DIGITS_IMAGE_INPUTS)
}

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
    register_bundled_limited(registry, loader, crate::tensor::image::DEFAULT_MAX_IMAGE_PIXELS)
}

/// [`register_bundled_with`], with `--max_image_pixels` for the image model.
pub fn register_bundled_limited(
    registry: &ModelRegistry,
    loader: &OnnxLoader,
    max_image_pixels: u64,
) -> Result<(), ServingError> {
    let loader = match loader.engine {
        OnnxEngine::Auto if cfg!(feature = "tract") => OnnxLoader::new(OnnxEngine::Tract),
        _ => *loader,
    };
    for (name, version, bytes, signatures) in BUNDLED {
        let mut model = load_bundled(&loader, bytes, signatures)?;
        if let Some(text) = bundled_image_inputs(name) {
            model = crate::repository::image_inputs::wrap(model, text, "image_inputs.pbtxt", max_image_pixels)?;
        }
        tracing::info!(model = name, version, "engine {}", model.engine().unwrap_or("native"));
        registry.insert(name, version, model);
    }
    Ok(())
}

/// Loads every bundled model into `registry` with the `auto` engine.
pub fn register_bundled(registry: &ModelRegistry) -> Result<(), ServingError> {
    register_bundled_with(registry, &OnnxLoader::default())
}
