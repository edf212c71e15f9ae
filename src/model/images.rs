//! A model whose pixel inputs requests send as encoded images: the wrapper shows each such
//! input as DT_STRING `[-1]` and decodes the images into the pixel tensor before the model runs.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::ServingError;
use crate::model::{Model, Signature, TensorMap, TensorSpec};
use crate::tensor::image::{decode_batch, decode_cost, ImageSpec};
use crate::tensor::{DataType, Tensor};

/// One signature input filled from encoded images.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageInput {
    /// The signature it belongs to.
    pub signature: String,
    /// The alias requests send the encoded images under.
    pub alias: String,
    /// The alias the wrapped model has for the pixel tensor.
    pub model_alias: String,
    /// How images become pixels.
    pub spec: ImageSpec,
}

/// `inner` with some of its inputs taking encoded images.
pub struct ImageInputModel {
    inner: Arc<dyn Model>,
    signatures: BTreeMap<String, Signature>,
    inputs: Vec<ImageInput>,
    max_pixels: u64,
}

impl ImageInputModel {
    /// Wraps `inner`; each input's `model_alias` must be an input of its signature and its
    /// `alias` must not name another input there.
    pub fn new(inner: Arc<dyn Model>, inputs: Vec<ImageInput>, max_pixels: u64) -> Result<Self, ServingError> {
        let mut signatures = inner.signatures().clone();
        for input in &inputs {
            let signature = signatures.get_mut(&input.signature).ok_or_else(|| {
                ServingError::invalid_argument(format!("image input {}: no signature {}", input.alias, input.signature))
            })?;
            let spec = signature.inputs.remove(&input.model_alias).ok_or_else(|| {
                ServingError::invalid_argument(format!(
                    "image input {}: signature {} has no input {}",
                    input.alias, input.signature, input.model_alias
                ))
            })?;
            if signature.inputs.contains_key(&input.alias) {
                return Err(ServingError::invalid_argument(format!(
                    "image input {}: signature {} already has an input of that name",
                    input.alias, input.signature
                )));
            }
            signature.defaults.remove(&input.model_alias);
            signature.optional.remove(&input.model_alias);
            signature.inputs.insert(input.alias.clone(), TensorSpec::new(spec.name, DataType::String, &[-1]));
        }
        Ok(ImageInputModel { inner, signatures, inputs, max_pixels })
    }

    /// The image inputs.
    pub fn image_inputs(&self) -> &[ImageInput] {
        &self.inputs
    }

    fn of<'a>(&'a self, signature: &'a str) -> impl Iterator<Item = &'a ImageInput> + 'a {
        self.inputs.iter().filter(move |i| i.signature == signature)
    }
}

/// The encoded images of one input, in row-major order.
fn images<'a>(alias: &str, tensor: &'a Tensor) -> Result<&'a [bytes::Bytes], ServingError> {
    match tensor.data() {
        crate::tensor::TensorData::String(values)
            if tensor.shape().len() <= 2 && tensor.shape().get(1).is_none_or(|&d| d == 1) =>
        {
            Ok(values)
        }
        crate::tensor::TensorData::String(_) => Err(ServingError::invalid_argument(format!(
            "{alias}: encoded images come as a list, one per instance; got shape {:?}",
            tensor.shape()
        ))),
        _ => Err(ServingError::invalid_argument(format!("{alias}: encoded images must be strings"))),
    }
}

impl Model for ImageInputModel {
    fn signatures(&self) -> &BTreeMap<String, Signature> {
        &self.signatures
    }

    fn run(&self, signature: &str, mut inputs: TensorMap, outputs: &[String]) -> Result<TensorMap, ServingError> {
        for input in self.of(signature) {
            let Some(encoded) = inputs.remove(&input.alias) else { continue };
            let pixels = decode_batch(&input.alias, &input.spec, images(&input.alias, &encoded)?, self.max_pixels)?;
            inputs.insert(input.model_alias.clone(), pixels);
        }
        self.inner.run(signature, inputs, outputs)
    }

    fn engine(&self) -> Option<&'static str> {
        self.inner.engine()
    }

    fn is_prepared_for(&self, signature: &str, inputs: &TensorMap) -> bool {
        // Decoding is never done on the async reactor.
        self.of(signature).next().is_none() && self.inner.is_prepared_for(signature, inputs)
    }

    fn reserve(&self, signature: &str, inputs: &TensorMap) -> Result<usize, ServingError> {
        let mut bytes = 0usize;
        for input in self.of(signature) {
            if let Some(encoded) = inputs.get(&input.alias) {
                let cost = decode_cost(&input.alias, &input.spec, images(&input.alias, encoded)?, self.max_pixels)?;
                bytes = bytes.saturating_add(cost);
            }
        }
        Ok(bytes)
    }
}
