//! Serving your own Rust model beside the bundled ONNX ones.
//!
//! `cargo run --release --example native_model` then call model `scale` with
//! input `x` (float, any shape): output `y` = x * factor, where the optional input
//! `factor` defaults to 3.

use std::collections::BTreeMap;
use std::sync::Arc;

use tensorserve::model::{ModelRegistry, Signature, TensorMap, TensorSpec};
use tensorserve::server::{serve, shutdown_signal, ServeConfig};
use tensorserve::{DataType, Model, ServingError, Tensor};

/// Multiplies its input by a factor.
struct Scale {
    /// `serving_default`.
    signatures: BTreeMap<String, Signature>,
}

impl Scale {
    fn new() -> Self {
        let mut sig = Signature::predict(
            [
                ("x".to_string(), TensorSpec::new("x", DataType::Float, &[-1])),
                ("factor".to_string(), TensorSpec::new("factor", DataType::Float, &[])),
            ],
            [("y".to_string(), TensorSpec::new("y", DataType::Float, &[-1]))],
        );
        sig.defaults.insert("factor".into(), Tensor::from_vec(vec![], vec![3.0f32]).unwrap());
        Scale { signatures: BTreeMap::from([("serving_default".to_string(), sig)]) }
    }
}

impl Model for Scale {
    fn signatures(&self) -> &BTreeMap<String, Signature> {
        &self.signatures
    }

    fn run(&self, _signature: &str, inputs: TensorMap, _outputs: &[String]) -> Result<TensorMap, ServingError> {
        let x = inputs["x"].view::<f32>().expect("dtype checked by the server");
        let factor = *inputs["factor"]
            .as_slice::<f32>()
            .and_then(|s| s.first())
            .ok_or_else(|| ServingError::invalid_argument("factor must hold one value"))?;
        let y = x.mapv(|v| v * factor);
        Ok(TensorMap::from([("y".to_string(), Tensor::from_array(y))]))
    }
}

#[tokio::main]
async fn main() -> Result<(), tensorserve::server::BoxError> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let registry = Arc::new(ModelRegistry::new());
    tensorserve::examples::register_bundled(&registry)?;
    registry.insert("scale", 1, Arc::new(Scale::new()));
    serve(registry, ServeConfig::default(), shutdown_signal()).await
}
