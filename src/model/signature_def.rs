//! Signatures declared in a file beside the model: a text-format `tensorflow.serving.SignatureDefMap`,
//! the structure GetModelMetadata returns, completed from the model's own graph.

use std::collections::{BTreeMap, BTreeSet};

use super::{Signature, TensorSpec};
use crate::error::ServingError;
use crate::proto::tensorflow as tf;
use crate::proto::tensorflow::serving as pb;
use crate::tensor::proto::{decode, DecodeLimits};
use crate::tensor::DataType;

/// The signature file a version directory may hold.
pub const SIGNATURES_FILE: &str = "signatures.pbtxt";

/// The message the signature file holds.
const SIGNATURE_DEF_MAP: &str = "tensorflow.serving.SignatureDefMap";

/// Parses a signature file's text; errors name `origin`, the line and the column.
pub fn parse_signature_defs(text: &str, origin: &str) -> Result<BTreeMap<String, tf::SignatureDef>, ServingError> {
    let map: pb::SignatureDefMap = crate::proto::parse_text_format(SIGNATURE_DEF_MAP, text, origin)?;
    if map.signature_def.is_empty() {
        return Err(ServingError::invalid_argument(format!("{origin}: declares no signature_def")));
    }
    Ok(map.signature_def)
}

/// Largest default tensor a signature may declare: one example's worth of an input, never gigabytes.
const MAX_DEFAULT_BYTES: usize = 16 << 20;

/// Turns declared signatures into [`Signature`]s over a graph whose inputs and outputs are
/// `graph_inputs` / `graph_outputs` (keyed by tensor name).
///
/// A `TensorInfo` names a graph tensor; its dtype and shape may be left out and are then the
/// graph's. A dtype that contradicts the graph is an error, so requests are checked against
/// what the model really takes. An alias naming a tensor in `optional` may be left out of requests.
pub fn signatures_from_defs(
    defs: &BTreeMap<String, tf::SignatureDef>,
    graph_inputs: &BTreeMap<String, TensorSpec>,
    graph_outputs: &BTreeMap<String, TensorSpec>,
    optional: &BTreeSet<String>,
) -> Result<BTreeMap<String, Signature>, ServingError> {
    let mut out = BTreeMap::new();
    for (name, def) in defs {
        let fail = |detail: String| ServingError::invalid_argument(format!("signature {name}: {detail}"));
        if name.is_empty() {
            return Err(ServingError::invalid_argument("a signature_def has an empty key"));
        }
        // Kept as declared: TF Serving checks method names per request, and only when asked to.
        let method_name = def.method_name.clone();
        if def.inputs.is_empty() || def.outputs.is_empty() {
            return Err(fail("needs at least one input and one output".into()));
        }
        let inputs = complete(&def.inputs, graph_inputs, "input").map_err(fail)?;
        let outputs = complete(&def.outputs, graph_outputs, "output").map_err(fail)?;
        let mut defaults = BTreeMap::new();
        for (alias, proto) in &def.defaults {
            let spec = inputs.get(alias).ok_or_else(|| fail(format!("default for unknown input {alias}")))?;
            let tensor = decode(proto.clone(), &DecodeLimits { max_tensor_bytes: MAX_DEFAULT_BYTES })
                .map_err(|e| fail(format!("default {alias}: {}", e.detail)))?;
            if tensor.dtype() != spec.dtype {
                return Err(fail(format!(
                    "default {alias} is {} but the input is {}",
                    tensor.dtype().name(),
                    spec.dtype.name()
                )));
            }
            defaults.insert(alias.clone(), tensor);
        }
        let optional =
            inputs.iter().filter(|(_, spec)| optional.contains(&spec.name)).map(|(a, _)| a.clone()).collect();
        out.insert(name.clone(), Signature { inputs, outputs, method_name, defaults, optional });
    }
    Ok(out)
}

fn complete(
    declared: &BTreeMap<String, tf::TensorInfo>,
    graph: &BTreeMap<String, TensorSpec>,
    kind: &str,
) -> Result<BTreeMap<String, TensorSpec>, String> {
    let mut out = BTreeMap::new();
    for (alias, info) in declared {
        let tensor = match &info.encoding {
            Some(tf::tensor_info::Encoding::Name(n)) => n,
            _ => return Err(format!("{kind} {alias}: only TensorInfo.name encodings are supported")),
        };
        let actual = graph.get(tensor).ok_or_else(|| {
            let names: Vec<&str> = graph.keys().map(String::as_str).collect();
            format!("{kind} {alias} names tensor {tensor}, which is not a graph {kind} ({})", names.join(", "))
        })?;
        let dtype = if info.dtype == 0 {
            actual.dtype
        } else {
            DataType::from_proto(info.dtype)
                .ok_or_else(|| format!("{kind} {alias}: unsupported dtype {}", info.dtype))?
        };
        if dtype != actual.dtype {
            return Err(format!(
                "{kind} {alias} is declared {} but the graph's {tensor} is {}",
                dtype.name(),
                actual.dtype.name()
            ));
        }
        let shape = match &info.tensor_shape {
            None => actual.shape.clone(),
            Some(s) if s.unknown_rank => None,
            Some(s) => Some(s.dim.iter().map(|d| d.size).collect()),
        };
        out.insert(alias.clone(), TensorSpec { name: tensor.clone(), dtype, shape });
    }
    Ok(out)
}
