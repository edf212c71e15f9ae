//! The tract engine: ONNX graphs planned and run by tract (pure Rust, compiled in).
//!
//! Each signature runs its own plan, pruned to the tensors it names; shapes the graph does not
//! declare get a plan of their own, built once.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use tract_onnx::prelude::{
    tvec, DatumType, Framework, InferenceModelExt, IntoArcTensor, IntoRunnable, IntoTValue, Tensor as TractTensor,
    TypedRunnableModel, TypedSimpleState,
};

use super::onnx::{load_error, GraphIo, GraphTensor, OnnxSource};
use crate::error::ServingError;
use crate::model::{Model, Signature, TensorMap, TensorSpec, DEFAULT_SIGNATURE};
use crate::tensor::{Buffer, DataType, Element, Tensor, TensorData};

/// One input of a plan, in the order tract expects it.
struct PlanInput {
    /// The signature alias requests use.
    alias: String,
    /// Declared dims: `Some(n)` fixed, `None` symbolic.
    dims: Vec<Option<usize>>,
}

/// One signature's runnable graph.
struct Head {
    /// The runnable plan; `run` takes `&self`, so requests share it without a lock.
    plan: Arc<TypedRunnableModel>,
    /// Plan inputs, in order.
    inputs: Vec<PlanInput>,
    /// Each output alias with the index of its tensor among the plan's outputs.
    outputs: Vec<(String, usize)>,
    /// The graph as loaded (pruned to this head), kept to plan for shapes the graph does not declare.
    source: tract_onnx::prelude::InferenceModel,
    /// Plans built for such shapes, by input shapes (TF Serving does not check shapes; we follow);
    /// shapes that cannot be planned are kept with their error, so a retry costs nothing.
    fallback_plans: std::sync::Mutex<std::collections::HashMap<Vec<Vec<usize>>, FallbackPlan>>,
    /// Held while a fallback plan is built, so concurrent misses build it once.
    planning: std::sync::Mutex<()>,
    /// Idle run states, reused so a run does not rebuild per-node state (tract resets them after each run).
    states: std::sync::Mutex<Vec<TypedSimpleState>>,
}

/// An ONNX model planned by tract.
pub struct TractModel {
    /// Runnable heads by signature name.
    heads: BTreeMap<String, Head>,
    /// The signatures, as served.
    signatures: BTreeMap<String, Signature>,
}

/// A shape-specific plan, or why those shapes cannot be planned.
type FallbackPlan = Result<Arc<TypedRunnableModel>, ServingError>;

/// Most shape-specific plans (and failures) kept per model; past this the request gets a clear error.
const MAX_FALLBACK_PLANS: usize = 16;

/// Idle states kept per model; more concurrent runs than this just build fresh ones.
const MAX_IDLE_STATES: usize = 16;

fn dtype_of(dt: DatumType) -> Option<DataType> {
    Some(match dt {
        DatumType::F32 => DataType::Float,
        DatumType::F64 => DataType::Double,
        DatumType::I8 => DataType::Int8,
        DatumType::I16 => DataType::Int16,
        DatumType::I32 => DataType::Int32,
        DatumType::I64 => DataType::Int64,
        DatumType::U8 => DataType::UInt8,
        DatumType::U16 => DataType::UInt16,
        DatumType::U32 => DataType::UInt32,
        DatumType::U64 => DataType::UInt64,
        DatumType::Bool => DataType::Bool,
        DatumType::F16 => DataType::Half,
        DatumType::String => DataType::String,
        _ => return None,
    })
}

impl TractModel {
    /// Plans the model with tract: the whole graph for `serving_default`, or one graph pruned
    /// to each declared signature's tensors.
    pub fn load(source: &OnnxSource) -> Result<TractModel, ServingError> {
        let mut reader = source.bytes.as_slice();
        let graph_source = tract_onnx::onnx().model_for_read(&mut reader).map_err(load_error)?;
        let typed = graph_source.clone().into_optimized().map_err(load_error)?;
        let full_plan = typed.into_runnable().map_err(load_error)?;
        let io = graph_io(full_plan.model())?;
        let signatures = io.signatures(source.declared.as_ref())?;
        let graph_inputs: BTreeMap<String, TensorSpec> =
            io.inputs.iter().map(|t| (t.name.clone(), TensorSpec::new(t.name.clone(), t.dtype, &t.shape))).collect();
        let Some((_, origin)) = &source.declared else {
            // No signature file: one head over the whole graph, aliases = tensor names.
            let input_order: Vec<String> = io.inputs.iter().map(|t| t.name.clone()).collect();
            let output_order: Vec<String> = io.outputs.iter().map(|t| t.name.clone()).collect();
            let head = Head::new(full_plan, graph_source, &input_order, &output_order, &graph_inputs)?;
            return Ok(TractModel { heads: BTreeMap::from([(DEFAULT_SIGNATURE.to_string(), head)]), signatures });
        };
        let mut heads = BTreeMap::new();
        for (name, sig) in &signatures {
            let head = Head::pruned(&graph_source, sig, &graph_inputs)
                .map_err(|e| load_error(format!("{origin}: signature {name}: {e}")))?;
            heads.insert(name.clone(), head);
        }
        Ok(TractModel { heads, signatures })
    }
}

/// The plan's inputs and outputs; tract folds initializer-backed inputs into constants, so none is optional.
fn graph_io(graph: &tract_onnx::prelude::TypedModel) -> Result<GraphIo, ServingError> {
    let mut io = GraphIo::default();
    for (i, outlet) in graph.input_outlets().map_err(load_error)?.iter().enumerate() {
        let fact = graph.input_fact(i).map_err(load_error)?;
        let name = graph.node(outlet.node).name.clone();
        let dtype = dtype_of(fact.datum_type)
            .ok_or_else(|| load_error(format!("input {name} has unsupported type {:?}", fact.datum_type)))?;
        let shape = fact.shape.iter().map(|d| d.as_i64().unwrap_or(-1)).collect();
        io.inputs.push(GraphTensor { name, dtype, shape });
    }
    for (i, outlet) in graph.output_outlets().map_err(load_error)?.iter().enumerate() {
        let fact = graph.output_fact(i).map_err(load_error)?;
        let name =
            graph.outlet_label(*outlet).map(str::to_string).unwrap_or_else(|| graph.node(outlet.node).name.clone());
        let dtype = dtype_of(fact.datum_type)
            .ok_or_else(|| load_error(format!("output {name} has unsupported type {:?}", fact.datum_type)))?;
        let shape = fact.shape.iter().map(|d| d.as_i64().unwrap_or(-1)).collect();
        io.outputs.push(GraphTensor { name, dtype, shape });
    }
    Ok(io)
}

impl Head {
    /// A head over a plan whose inputs and outputs are `inputs` / `outputs` (tensor names = aliases).
    fn new(
        plan: Arc<TypedRunnableModel>,
        source: tract_onnx::prelude::InferenceModel,
        inputs: &[String],
        outputs: &[String],
        graph_inputs: &BTreeMap<String, TensorSpec>,
    ) -> Result<Head, ServingError> {
        let inputs =
            inputs.iter().map(|name| PlanInput { alias: name.clone(), dims: dims_of(&graph_inputs[name]) }).collect();
        let outputs = outputs.iter().enumerate().map(|(i, name)| (name.clone(), i)).collect();
        Ok(Head {
            plan,
            inputs,
            outputs,
            source,
            fallback_plans: Default::default(),
            planning: Default::default(),
            states: Default::default(),
        })
    }

    /// A head for `sig`: the graph pruned to the tensors the signature names.
    fn pruned(
        source: &tract_onnx::prelude::InferenceModel,
        sig: &Signature,
        graph_inputs: &BTreeMap<String, TensorSpec>,
    ) -> Result<Head, String> {
        let mut model = source.clone();
        let input_names: Vec<&str> = sig.inputs.values().map(|s| s.name.as_str()).collect();
        // Two aliases may name one tensor; the plan computes it once.
        let mut tensors: Vec<&str> = Vec::new();
        let mut outputs = Vec::new();
        for (alias, spec) in &sig.outputs {
            let index = match tensors.iter().position(|t| *t == spec.name) {
                Some(i) => i,
                None => {
                    tensors.push(&spec.name);
                    tensors.len() - 1
                }
            };
            outputs.push((alias.clone(), index));
        }
        model.set_input_names(&input_names).map_err(|e| e.to_string())?;
        model.select_outputs_by_name(&tensors).map_err(|e| e.to_string())?;
        let plan = model.clone().into_optimized().and_then(|m| m.into_runnable()).map_err(|e| format!("{e:#}"))?;
        let inputs = sig
            .inputs
            .iter()
            .map(|(alias, spec)| PlanInput { alias: alias.clone(), dims: dims_of(&graph_inputs[&spec.name]) })
            .collect();
        Ok(Head {
            plan,
            inputs,
            outputs,
            source: model,
            fallback_plans: Default::default(),
            planning: Default::default(),
            states: Default::default(),
        })
    }
}

fn dims_of(spec: &TensorSpec) -> Vec<Option<usize>> {
    spec.shape.as_deref().unwrap_or(&[]).iter().map(|d| usize::try_from(*d).ok()).collect()
}

fn to_tract(alias: &str, tensor: &Tensor) -> Result<TractTensor, ServingError> {
    fn plain<T: Element + tract_onnx::prelude::Datum>(
        shape: &[usize],
        b: &Buffer<T>,
    ) -> tract_onnx::prelude::TractResult<TractTensor> {
        TractTensor::from_shape(shape, b.as_slice())
    }
    let shape = tensor.shape();
    let result = match tensor.data() {
        TensorData::Float(b) => plain(shape, b),
        TensorData::Double(b) => plain(shape, b),
        TensorData::Int8(b) => plain(shape, b),
        TensorData::Int16(b) => plain(shape, b),
        TensorData::Int32(b) => plain(shape, b),
        TensorData::Int64(b) => plain(shape, b),
        TensorData::UInt8(b) => plain(shape, b),
        TensorData::UInt16(b) => plain(shape, b),
        TensorData::UInt32(b) => plain(shape, b),
        TensorData::UInt64(b) => plain(shape, b),
        TensorData::Half(b) => plain(shape, b),
        TensorData::Bool(v) => TractTensor::from_shape(shape, v),
        TensorData::String(v) => {
            let strings =
                v.iter().map(|s| String::from_utf8(s.to_vec())).collect::<Result<Vec<String>, _>>().map_err(|_| {
                    ServingError::invalid_argument(format!("input {alias}: ONNX string tensors must be UTF-8"))
                })?;
            Ok(tract_onnx::prelude::tract_ndarray::ArrayD::from_shape_vec(shape.to_vec(), strings)
                .map(TractTensor::from)
                .map_err(|e| ServingError::invalid_argument(e.to_string()))?)
        }
        TensorData::BFloat16(_) => {
            return Err(ServingError::invalid_argument(format!(
                "input {alias}: bfloat16 is not supported by the ONNX backend"
            )))
        }
    };
    result.map_err(|e| ServingError::internal(format!("input {alias}: {e}")))
}

/// Lends a tract output's bytes to a `Bytes` without copying them.
struct TractBytes(Arc<TractTensor>);

impl AsRef<[u8]> for TractBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

fn from_tract(name: &str, t: Arc<TractTensor>) -> Result<Tensor, ServingError> {
    fn plain<T: Element + tract_onnx::prelude::Datum>(t: Arc<TractTensor>) -> tract_onnx::prelude::TractResult<Tensor> {
        let shape = t.shape().to_vec();
        t.try_as_plain_ram()?;
        // tract's buffers are aligned for their type, so this borrows; the copy is only a fallback.
        let bytes = Bytes::from_owner(TractBytes(t.clone()));
        let buffer = match Buffer::<T>::from_bytes_aligned(bytes) {
            Some(b) => b,
            None => Buffer::from_vec(t.to_plain_array_view::<T>()?.iter().copied().collect()),
        };
        Tensor::new(shape, T::wrap(buffer)).map_err(|e| tract_onnx::prelude::TractError::msg(e.to_string()))
    }
    let result = match t.datum_type() {
        DatumType::F32 => plain::<f32>(t),
        DatumType::F64 => plain::<f64>(t),
        DatumType::I8 => plain::<i8>(t),
        DatumType::I16 => plain::<i16>(t),
        DatumType::I32 => plain::<i32>(t),
        DatumType::I64 => plain::<i64>(t),
        DatumType::U8 => plain::<u8>(t),
        DatumType::U16 => plain::<u16>(t),
        DatumType::U32 => plain::<u32>(t),
        DatumType::U64 => plain::<u64>(t),
        DatumType::F16 => plain::<half::f16>(t),
        DatumType::Bool => t.to_plain_array_view::<bool>().map(|a| {
            let shape = a.shape().to_vec();
            Tensor::from_bools(shape, a.iter().copied().collect()).expect("shape from the array")
        }),
        DatumType::String => t.to_plain_array_view::<String>().map(|a| {
            let shape = a.shape().to_vec();
            Tensor::from_strings(shape, a.iter().map(|s| Bytes::from(s.clone())).collect())
                .expect("shape from the array")
        }),
        other => return Err(ServingError::internal(format!("output {name} has unsupported type {other:?}"))),
    };
    result.map_err(|e| ServingError::internal(format!("output {name}: {e}")))
}

impl Head {
    /// True when `inputs` fit the declared shapes or a fallback plan (or failure) is cached.
    fn is_prepared_for(&self, inputs: &TensorMap) -> bool {
        let shapes: Option<Vec<&[usize]>> =
            self.inputs.iter().map(|input| inputs.get(&input.alias).map(Tensor::shape)).collect();
        let Some(shapes) = shapes else { return true };
        let fit = shapes.iter().zip(&self.inputs).all(|(shape, input)| {
            shape.len() == input.dims.len()
                && shape.iter().zip(&input.dims).all(|(got, want)| want.is_none_or(|w| w == *got))
        });
        // Only an undeclared shape pays for building the cache key.
        fit || {
            let key: Vec<Vec<usize>> = shapes.iter().map(|s| s.to_vec()).collect();
            self.fallback_plans.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&key)
        }
    }

    /// A plan for input shapes that differ from the declared ones, built once per shape set;
    /// a failure (error or panic inside tract) is kept as the answer for those shapes.
    fn plan_for(&self, inputs: &[(&Tensor, &PlanInput)]) -> Result<Arc<TypedRunnableModel>, ServingError> {
        let key: Vec<Vec<usize>> = inputs.iter().map(|(t, _)| t.shape().to_vec()).collect();
        let cached = || self.fallback_plans.lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
        if let Some(plan) = cached() {
            return plan;
        }
        let _planning = self.planning.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(plan) = cached() {
            return plan;
        }
        if self.fallback_plans.lock().unwrap_or_else(|p| p.into_inner()).len() >= MAX_FALLBACK_PLANS {
            return Err(ServingError::invalid_argument(format!(
                "too many distinct undeclared input shapes for this model; send shapes matching its signature {:?}",
                self.inputs.iter().map(|i| &i.dims).collect::<Vec<_>>()
            )));
        }
        let describe = || -> String {
            inputs.iter().map(|(t, i)| format!("{} {:?}", i.alias, t.shape())).collect::<Vec<_>>().join(", ")
        };
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.build_plan(inputs))).unwrap_or_else(
            |payload| {
                Err(ServingError::invalid_argument(format!(
                    "the model cannot take input shapes {}: {}",
                    describe(),
                    crate::model::panic_message(payload.as_ref())
                )))
            },
        );
        self.fallback_plans.lock().unwrap_or_else(|p| p.into_inner()).insert(key, built.clone());
        built
    }

    fn build_plan(&self, inputs: &[(&Tensor, &PlanInput)]) -> Result<Arc<TypedRunnableModel>, ServingError> {
        let mismatch = |e: tract_onnx::prelude::TractError| {
            let got: Vec<String> = inputs.iter().map(|(t, i)| format!("{} {:?}", i.alias, t.shape())).collect();
            ServingError::invalid_argument(format!("the model cannot take input shapes {}: {e}", got.join(", ")))
        };
        let mut model = self.source.clone();
        for (i, (tensor, _)) in inputs.iter().enumerate() {
            let dt = tract_datum(tensor.dtype()).ok_or_else(|| {
                ServingError::invalid_argument(format!(
                    "{} is not supported by the ONNX backend",
                    tensor.dtype().name()
                ))
            })?;
            model
                .set_input_fact(i, tract_onnx::prelude::InferenceFact::dt_shape(dt, tensor.shape()))
                .map_err(mismatch)?;
        }
        model.into_optimized().and_then(|m| m.into_runnable()).map_err(mismatch)
    }

    fn run(&self, inputs: TensorMap, outputs: &[String]) -> Result<TensorMap, ServingError> {
        let mut values = tvec!();
        let mut all_fit = true;
        let mut pairs = Vec::with_capacity(self.inputs.len());
        for input in &self.inputs {
            let tensor = inputs
                .get(&input.alias)
                .ok_or_else(|| ServingError::invalid_argument(format!("missing input {}", input.alias)))?;
            let shape = tensor.shape();
            all_fit &= shape.len() == input.dims.len()
                && shape.iter().zip(&input.dims).all(|(got, want)| want.is_none_or(|w| w == *got));
            values.push(to_tract(&input.alias, tensor)?.into_tvalue());
            pairs.push((tensor, input));
        }
        let results = if all_fit {
            let pooled = self.states.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let mut state = match pooled {
                Some(s) => s,
                None => self.plan.spawn().map_err(|e| ServingError::internal(format!("model state: {e}")))?,
            };
            // A failed run drops its state rather than returning it to the pool.
            let results =
                state.run(values).map_err(|e| ServingError::invalid_argument(format!("model run failed: {e}")))?;
            let mut idle = self.states.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < MAX_IDLE_STATES {
                idle.push(state);
            }
            results
        } else {
            // Like TF Serving, do not refuse undeclared shapes; plan for them (e.g. x of shape [3] for [-1,1]).
            // tract panics on some shapes its ops cannot take (a rank-1 input to a matmul): that is the request's fault.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<_, ServingError> {
                let plan = self.plan_for(&pairs)?;
                plan.run(values).map_err(|e| ServingError::invalid_argument(format!("model run failed: {e}")))
            }))
            .unwrap_or_else(|payload| {
                let got: Vec<String> = pairs.iter().map(|(t, i)| format!("{} {:?}", i.alias, t.shape())).collect();
                Err(ServingError::invalid_argument(format!(
                    "the model cannot take input shapes {}: {}",
                    got.join(", "),
                    crate::model::panic_message(payload.as_ref())
                )))
            })?
        };
        // Each plan output becomes an Arc once; aliases sharing a tensor share it (from_tract borrows).
        let tensors: Vec<Arc<TractTensor>> = results.into_iter().map(|v| v.into_arc_tensor()).collect();
        let mut out = TensorMap::new();
        for (alias, index) in &self.outputs {
            if outputs.iter().any(|o| o == alias) {
                let value = tensors
                    .get(*index)
                    .cloned()
                    .ok_or_else(|| ServingError::internal(format!("model did not produce {alias}")))?;
                out.insert(alias.clone(), from_tract(alias, value)?);
            }
        }
        Ok(out)
    }
}

fn tract_datum(d: DataType) -> Option<DatumType> {
    Some(match d {
        DataType::Float => DatumType::F32,
        DataType::Double => DatumType::F64,
        DataType::Int8 => DatumType::I8,
        DataType::Int16 => DatumType::I16,
        DataType::Int32 => DatumType::I32,
        DataType::Int64 => DatumType::I64,
        DataType::UInt8 => DatumType::U8,
        DataType::UInt16 => DatumType::U16,
        DataType::UInt32 => DatumType::U32,
        DataType::UInt64 => DatumType::U64,
        DataType::Bool => DatumType::Bool,
        DataType::Half => DatumType::F16,
        DataType::String => DatumType::String,
        DataType::BFloat16 => return None,
    })
}

impl Model for TractModel {
    fn signatures(&self) -> &BTreeMap<String, Signature> {
        &self.signatures
    }

    fn engine(&self) -> Option<&'static str> {
        Some("tract")
    }

    fn run(&self, signature: &str, inputs: TensorMap, outputs: &[String]) -> Result<TensorMap, ServingError> {
        let head = self.heads.get(signature).ok_or_else(|| {
            ServingError::failed_precondition(format!("Serving signature key \"{signature}\" not found."))
        })?;
        head.run(inputs, outputs)
    }

    fn is_prepared_for(&self, signature: &str, inputs: &TensorMap) -> bool {
        self.heads.get(signature).is_none_or(|head| head.is_prepared_for(inputs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::onnx::OnnxSource;

    #[test]
    fn shapes_that_cannot_be_planned_are_refused_once_then_from_the_cache() {
        let source = OnnxSource::from_bytes(crate::examples::DIGITS_MLP_ONNX, None).unwrap();
        let model = TractModel::load(&source).unwrap();
        let signature = crate::model::DEFAULT_SIGNATURE;
        let alias = model.signatures()[signature].inputs.keys().next().unwrap().clone();
        let output = model.signatures()[signature].outputs.keys().next().unwrap().clone();
        let inputs = || TensorMap::from([(alias.clone(), Tensor::from_vec(vec![1, 5], vec![0f32; 5]).unwrap())]);
        assert!(!model.is_prepared_for(signature, &inputs()), "a new shape needs a plan first");
        let first = model.run(signature, inputs(), std::slice::from_ref(&output)).unwrap_err();
        assert_eq!(first.code, crate::Code::InvalidArgument);
        assert!(first.message.contains("cannot take input shapes"), "{}", first.message);
        assert!(model.is_prepared_for(signature, &inputs()), "the failure is cached");
        let again = model.run(signature, inputs(), std::slice::from_ref(&output)).unwrap_err();
        assert_eq!(again, first);
        let declared = TensorMap::from([(alias.clone(), Tensor::from_vec(vec![2, 64], vec![0f32; 128]).unwrap())]);
        assert!(model.is_prepared_for(signature, &declared));
    }
}
