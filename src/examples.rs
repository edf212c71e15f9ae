//! The example models compiled into the binary, so `tensorserve` with no flags serves them.

use std::sync::Arc;

use crate::backend::onnx::OnnxModel;
use crate::error::ServingError;
use crate::model::ModelRegistry;

/// `half_plus_two` v123: y = 0.5 x + 2, TF Serving's classic test model.
pub const HALF_PLUS_TWO_ONNX: &[u8] = include_bytes!("../examples/models/half_plus_two/123/model.onnx");

/// `digits_mlp` v1: a 64-32-10 MLP trained on scikit-learn's 8x8 digits.
pub const DIGITS_MLP_ONNX: &[u8] = include_bytes!("../examples/models/digits_mlp/1/model.onnx");

/// The bundled models: (name, version, ONNX bytes).
pub const BUNDLED: [(&str, i64, &[u8]); 2] = [("half_plus_two", 123, HALF_PLUS_TWO_ONNX), ("digits_mlp", 1, DIGITS_MLP_ONNX)];

/// Loads every bundled model into `registry`.
pub fn register_bundled(registry: &ModelRegistry) -> Result<(), ServingError> {
    for (name, version, bytes) in BUNDLED {
        registry.insert(name, version, Arc::new(OnnxModel::from_bytes(bytes)?));
    }
    Ok(())
}
