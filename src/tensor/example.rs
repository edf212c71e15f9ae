//! tf.Example codec: a Classify/Regress `Input` becomes one batched tensor per signature input.
//!
//! Each input alias of the signature is a feature with FixedLenFeature semantics: a fixed
//! number of values per example (the input's shape after the batch dimension), of the kind
//! its dtype implies, or the signature's default when an example leaves it out.

use bytes::Bytes;

use super::{DataType, Tensor};
use crate::error::{Code, ServingError};
use crate::memory::RequestBudget;
use crate::model::{Signature, TensorMap, TensorSpec};
use crate::proto::tensorflow as tf;
use crate::proto::tensorflow::serving as pb;

use tf::feature::Kind;

/// The examples of an `Input` and the context merged into each, borrowed from the request.
pub struct Examples<'a> {
    /// The examples, in request order.
    pub examples: &'a [tf::Example],
    /// Features every example gets unless it has its own.
    pub context: Option<&'a tf::Example>,
}

impl<'a> Examples<'a> {
    /// The examples of a TF Serving `Input`; `Input is empty.` when there are none.
    pub fn of(input: Option<&'a pb::Input>) -> Result<Examples<'a>, ServingError> {
        use pb::input::Kind as InputKind;
        match input.and_then(|i| i.kind.as_ref()) {
            Some(InputKind::ExampleList(list)) => Examples::new(&list.examples, None),
            Some(InputKind::ExampleListWithContext(list)) => Examples::new(&list.examples, list.context.as_ref()),
            None => Examples::new(&[], None),
        }
    }

    /// `examples` with `context` merged into each; `Input is empty.` when there are none.
    pub fn new(examples: &'a [tf::Example], context: Option<&'a tf::Example>) -> Result<Examples<'a>, ServingError> {
        if examples.is_empty() {
            return Err(ServingError::invalid_argument("Input is empty."));
        }
        Ok(Examples { examples, context })
    }

    /// How many examples there are (the batch size).
    pub fn len(&self) -> usize {
        self.examples.len()
    }

    /// Always false: [`Examples::new`] refuses empty inputs.
    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// Feature `key` of example `i`: its own, else the context's. An empty `Feature` counts as absent.
    fn feature(&self, i: usize, key: &str) -> Option<&'a Kind> {
        let own = self.examples[i].features.as_ref().and_then(|f| f.feature.get(key)).and_then(|f| f.kind.as_ref());
        own.or_else(|| {
            self.context
                .and_then(|c| c.features.as_ref())
                .and_then(|f| f.feature.get(key))
                .and_then(|f| f.kind.as_ref())
        })
    }

    /// One tensor per signature input, batched over the examples.
    ///
    /// Nothing is allocated before the batch size times the per-example size is checked
    /// against `max_tensor_bytes` and charged to `budget`.
    pub fn to_inputs(
        &self,
        signature: &Signature,
        max_tensor_bytes: usize,
        budget: &RequestBudget,
    ) -> Result<TensorMap, ServingError> {
        let mut out = TensorMap::new();
        for (alias, spec) in &signature.inputs {
            let tensor = self.column(alias, spec, signature.defaults.get(alias), max_tensor_bytes, budget)?;
            out.insert(alias.clone(), tensor);
        }
        Ok(out)
    }

    fn column(
        &self,
        key: &str,
        spec: &TensorSpec,
        default: Option<&Tensor>,
        max_bytes: usize,
        budget: &RequestBudget,
    ) -> Result<Tensor, ServingError> {
        let per_example = per_example_shape(key, spec)?;
        let count: usize = per_example.iter().product();
        let n = self.len();
        let element = match spec.dtype {
            DataType::String => 32,
            d => d.size().unwrap_or(8),
        };
        if n.checked_mul(count).and_then(|c| c.checked_mul(element)).is_none_or(|b| b > max_bytes) {
            return Err(ServingError::new(
                Code::ResourceExhausted,
                format!("feature {key}: {n} examples x {count} values exceed the {max_bytes}-byte tensor limit"),
            ));
        }
        budget.charge(n * count * element, || format!("feature {key} of {n} examples"))?;
        let mut shape = Vec::with_capacity(per_example.len() + 1);
        shape.push(n);
        shape.extend_from_slice(&per_example);
        let ctx = Ctx { key, spec, per_example: &per_example, count, default };
        let tensor = match spec.dtype {
            DataType::Float => Tensor::from_vec(shape, self.collect(&ctx, floats(Ok))?),
            DataType::Double => Tensor::from_vec(shape, self.collect(&ctx, floats(|v| Ok(v as f64)))?),
            DataType::Int64 => Tensor::from_vec(shape, self.collect(&ctx, ints(Ok))?),
            DataType::Int32 => Tensor::from_vec(shape, self.collect(&ctx, ints(|v| i32::try_from(v).map_err(|_| v)))?),
            DataType::Bool => Tensor::from_bools(shape, self.collect(&ctx, ints(|v| Ok(v != 0)))?),
            DataType::String => Tensor::from_strings(shape, self.collect(&ctx, strings)?),
            other => {
                return Err(ServingError::failed_precondition(format!(
                    "signature input {key} is {}: tf.Example features fill float, double, int64, int32, bool or string inputs",
                    other.name()
                )))
            }
        };
        tensor.map_err(|e| ServingError::internal(format!("feature {key}: {e}")))
    }

    /// Gathers `ctx.count` values per example with `take`, falling back to the default.
    fn collect<T: Clone + FromDefault>(
        &self,
        ctx: &Ctx,
        take: impl Fn(&Kind, &Ctx, usize, &mut Vec<T>) -> Result<(), ServingError>,
    ) -> Result<Vec<T>, ServingError> {
        let mut values = Vec::with_capacity(self.len() * ctx.count);
        for i in 0..self.len() {
            match self.feature(i, ctx.key) {
                Some(kind) => take(kind, ctx, i, &mut values)?,
                None => match ctx.default {
                    Some(d) => T::extend_from(d, ctx, &mut values)?,
                    None => {
                        return Err(ServingError::invalid_argument(format!(
                            "Name: <unknown>, Key: {}, Index: {i}.  Feature: {} (data type: {}) is required but could not be found.",
                            ctx.key,
                            ctx.key,
                            kind_name(ctx.spec.dtype)
                        )))
                    }
                },
            }
        }
        Ok(values)
    }
}

/// What one feature column needs to know while it is filled.
struct Ctx<'a> {
    /// The feature (= input alias).
    key: &'a str,
    /// The signature input it fills.
    spec: &'a TensorSpec,
    /// Shape of one example's values.
    per_example: &'a [usize],
    /// Values per example.
    count: usize,
    /// The signature's default for the feature.
    default: Option<&'a Tensor>,
}

impl Ctx<'_> {
    fn mismatch(&self, i: usize, got: &str) -> ServingError {
        ServingError::invalid_argument(format!(
            "Name: <unknown>, Key: {}, Index: {i}.  Data types don't match. Data type: {got} but expected type: {}",
            self.key,
            kind_name(self.spec.dtype)
        ))
    }

    fn check_len(&self, i: usize, len: usize) -> Result<(), ServingError> {
        if len == self.count {
            return Ok(());
        }
        Err(ServingError::invalid_argument(format!(
            "Name: <unknown>, Key: {}, Index: {i}.  Number of {} values != expected.  Values size: {len} but output shape: {:?}",
            self.key,
            kind_name(self.spec.dtype),
            self.per_example
        )))
    }
}

/// TensorFlow's name for the feature kind a dtype is parsed from.
fn kind_name(dtype: DataType) -> &'static str {
    match dtype {
        DataType::Float | DataType::Double => "float",
        DataType::String => "string",
        _ => "int64",
    }
}

fn got_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::FloatList(_) => "float",
        Kind::Int64List(_) => "int64",
        Kind::BytesList(_) => "string",
    }
}

/// The fixed shape of one example's values: the input's shape after the batch dimension.
fn per_example_shape(key: &str, spec: &TensorSpec) -> Result<Vec<usize>, ServingError> {
    let bad = || {
        ServingError::failed_precondition(format!(
            "signature input {key} has shape {:?}; a tf.Example feature needs [batch, fixed dims...]",
            spec.shape
        ))
    };
    let shape = spec.shape.as_deref().ok_or_else(bad)?;
    let (_, rest) = shape.split_first().ok_or_else(bad)?;
    rest.iter().map(|d| usize::try_from(*d).map_err(|_| bad())).collect()
}

fn floats<T>(
    convert: impl Fn(f32) -> Result<T, f32>,
) -> impl Fn(&Kind, &Ctx, usize, &mut Vec<T>) -> Result<(), ServingError> {
    move |kind, ctx, i, out| match kind {
        Kind::FloatList(list) => {
            ctx.check_len(i, list.value.len())?;
            for v in &list.value {
                out.push(convert(*v).map_err(|_| ctx.mismatch(i, "float"))?);
            }
            Ok(())
        }
        other => Err(ctx.mismatch(i, got_name(other))),
    }
}

fn ints<T>(
    convert: impl Fn(i64) -> Result<T, i64>,
) -> impl Fn(&Kind, &Ctx, usize, &mut Vec<T>) -> Result<(), ServingError> {
    move |kind, ctx, i, out| match kind {
        Kind::Int64List(list) => {
            ctx.check_len(i, list.value.len())?;
            for v in &list.value {
                let value = convert(*v).map_err(|v| {
                    ServingError::invalid_argument(format!(
                        "Name: <unknown>, Key: {}, Index: {i}.  Value {v} does not fit {}",
                        ctx.key,
                        ctx.spec.dtype.name()
                    ))
                })?;
                out.push(value);
            }
            Ok(())
        }
        other => Err(ctx.mismatch(i, got_name(other))),
    }
}

fn strings(kind: &Kind, ctx: &Ctx, i: usize, out: &mut Vec<Bytes>) -> Result<(), ServingError> {
    match kind {
        Kind::BytesList(list) => {
            ctx.check_len(i, list.value.len())?;
            out.extend(list.value.iter().cloned());
            Ok(())
        }
        other => Err(ctx.mismatch(i, got_name(other))),
    }
}

/// Appends one example's worth of a signature default (its full value, or one value repeated).
trait FromDefault: Sized + Clone {
    fn values(t: &Tensor) -> Option<Vec<Self>>;

    fn extend_from(t: &Tensor, ctx: &Ctx, out: &mut Vec<Self>) -> Result<(), ServingError> {
        let bad = || {
            ServingError::failed_precondition(format!(
                "the default of feature {} has {} values of {}; it needs {} (or 1)",
                ctx.key,
                t.len(),
                t.dtype().name(),
                ctx.count
            ))
        };
        let values = Self::values(t).ok_or_else(bad)?;
        match values.len() {
            n if n == ctx.count => out.extend(values),
            1 => out.extend(std::iter::repeat_n(values[0].clone(), ctx.count)),
            _ => return Err(bad()),
        }
        Ok(())
    }
}

macro_rules! plain_default {
    ($($t:ty),*) => {$(
        impl FromDefault for $t {
            fn values(t: &Tensor) -> Option<Vec<Self>> {
                t.as_slice::<$t>().map(<[$t]>::to_vec)
            }
        }
    )*};
}
plain_default!(f32, f64, i64, i32);

impl FromDefault for bool {
    fn values(t: &Tensor) -> Option<Vec<Self>> {
        t.view_bools().map(|v| v.iter().copied().collect())
    }
}

impl FromDefault for Bytes {
    fn values(t: &Tensor) -> Option<Vec<Self>> {
        t.view_strings().map(|v| v.iter().cloned().collect())
    }
}

/// The examples of a REST `:classify` / `:regress` body, owned until the request is answered.
#[derive(Debug, Default)]
pub struct ExampleBatch {
    /// `signature_name`, empty when the body names none.
    pub signature_name: String,
    /// `examples`, in request order.
    pub examples: Vec<tf::Example>,
    /// `context`, merged into every example.
    pub context: Option<tf::Example>,
}

impl ExampleBatch {
    /// The batch as [`Examples`]; `Input is empty.` when there are none.
    pub fn examples(&self) -> Result<Examples<'_>, ServingError> {
        Examples::new(&self.examples, self.context.as_ref())
    }
}

/// Parses the request body of REST `:classify` / `:regress`.
///
/// Feature typing follows TF Serving: a number written with `.` or an exponent is a float
/// feature, an integer or bool is int64, a string or `{"b64": ...}` is bytes; a list takes
/// its kind from its elements (integers may sit in a float list).
pub fn examples_from_json(body: &serde_json::Value, verb: &str) -> Result<ExampleBatch, ServingError> {
    let object = body.as_object().ok_or_else(|| {
        ServingError::invalid_argument("JSON Value is not an object: the request body must be {\"examples\": [...]}")
    })?;
    let signature_name = match object.get("signature_name") {
        None => String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(_) => return Err(ServingError::invalid_argument("'signature_name' key must be a string value.")),
    };
    let examples = object
        .get("examples")
        .ok_or_else(|| {
            ServingError::invalid_argument(format!(
                "When method is {verb}, key 'examples' is expected and was not found"
            ))
        })?
        .as_array()
        .ok_or_else(|| ServingError::invalid_argument("'examples' must be an array of objects"))?;
    let examples = examples
        .iter()
        .enumerate()
        .map(|(i, e)| example_from_json(e).map_err(|m| ServingError::invalid_argument(format!("examples[{i}]: {m}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let context = match object.get("context") {
        None => None,
        Some(c) => Some(example_from_json(c).map_err(|m| ServingError::invalid_argument(format!("context: {m}")))?),
    };
    Ok(ExampleBatch { signature_name, examples, context })
}

fn example_from_json(value: &serde_json::Value) -> Result<tf::Example, String> {
    let object = value.as_object().ok_or("an example must be a JSON object of features")?;
    let mut feature = std::collections::BTreeMap::new();
    for (key, v) in object {
        let kind = feature_from_json(v).map_err(|m| format!("feature {key}: {m}"))?;
        feature.insert(key.clone(), tf::Feature { kind });
    }
    Ok(tf::Example { features: Some(tf::Features { feature }) })
}

/// One JSON value, as the feature kind TF Serving would give it.
enum Scalar {
    Float(f32),
    Int(i64),
    Bytes(Bytes),
}

fn scalar_from_json(v: &serde_json::Value) -> Result<Scalar, String> {
    use base64::Engine as _;
    use serde_json::Value;
    match v {
        Value::Number(n) if n.is_f64() => Ok(Scalar::Float(n.as_f64().unwrap_or(f64::NAN) as f32)),
        Value::Number(n) => n.as_i64().map(Scalar::Int).ok_or_else(|| format!("{n} does not fit int64")),
        Value::Bool(b) => Ok(Scalar::Int(*b as i64)),
        Value::String(s) => Ok(Scalar::Bytes(Bytes::from(s.clone().into_bytes()))),
        Value::Object(o) if o.len() == 1 && o.get("b64").is_some_and(Value::is_string) => {
            let text = o["b64"].as_str().unwrap_or_default();
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map(|b| Scalar::Bytes(Bytes::from(b)))
                .map_err(|e| format!("Unable to base64 decode: {e}"))
        }
        other => Err(format!("JSON Value: {other} is not a number, bool, string or {{\"b64\": ...}}")),
    }
}

fn feature_from_json(v: &serde_json::Value) -> Result<Option<Kind>, String> {
    let values: Vec<Scalar> = match v {
        serde_json::Value::Array(items) => items.iter().map(scalar_from_json).collect::<Result<_, _>>()?,
        single => vec![scalar_from_json(single)?],
    };
    let Some(first) = values.first() else { return Ok(None) };
    let any_float = values.iter().any(|s| matches!(s, Scalar::Float(_)));
    let mixed = || "a feature's values must all be numbers or all be strings".to_string();
    Ok(Some(match first {
        Scalar::Bytes(_) => Kind::BytesList(tf::BytesList {
            value: values
                .into_iter()
                .map(|s| if let Scalar::Bytes(b) = s { Ok(b) } else { Err(mixed()) })
                .collect::<Result<_, _>>()?,
        }),
        _ if any_float => Kind::FloatList(tf::FloatList {
            value: values
                .into_iter()
                .map(|s| match s {
                    Scalar::Float(f) => Ok(f),
                    Scalar::Int(i) => Ok(i as f32),
                    Scalar::Bytes(_) => Err(mixed()),
                })
                .collect::<Result<_, _>>()?,
        }),
        _ => Kind::Int64List(tf::Int64List {
            value: values
                .into_iter()
                .map(|s| if let Scalar::Int(i) = s { Ok(i) } else { Err(mixed()) })
                .collect::<Result<_, _>>()?,
        }),
    }))
}
