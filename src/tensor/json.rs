//! JSON <-> [`Tensor`] for TF Serving's REST API: row (`instances`) and columnar (`inputs`) formats.
//!
//! Request arrays are parsed straight into typed buffers with serde seeds (no
//! `serde_json::Value` tree); dtypes come from the signature, never from the JSON.
//! Responses are written straight into a byte buffer.

use std::fmt::Write as _;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};

use super::{DataType, Tensor, TensorData};
use crate::error::ServingError;
use crate::memory::RequestBudget;
use crate::model::TensorMap;

/// The rank limit, also a guard against deeply nested request bodies.
const MAX_DEPTH: usize = 254;

/// Typed values collected while parsing.
enum Values {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    Bool(Vec<bool>),
    Str(Vec<Bytes>),
}

impl Values {
    /// Bytes the buffers have reserved (string handles only; their bytes are charged as copied).
    fn reserved(&self) -> usize {
        fn bytes<T>(v: &Vec<T>) -> usize {
            v.capacity() * std::mem::size_of::<T>()
        }
        match self {
            Values::F32(v) => bytes(v),
            Values::F64(v) => bytes(v),
            Values::I8(v) => bytes(v),
            Values::I16(v) => bytes(v),
            Values::I32(v) => bytes(v),
            Values::I64(v) => bytes(v),
            Values::U8(v) => bytes(v),
            Values::U16(v) => bytes(v),
            Values::U32(v) => bytes(v),
            Values::U64(v) => bytes(v),
            Values::Bool(v) => bytes(v),
            Values::Str(v) => bytes(v),
        }
    }
}

/// One JSON scalar, for conversion and error messages.
#[derive(Clone, Copy)]
enum Scalar<'a> {
    F(f64),
    I(i64),
    U(u64),
    B(bool),
    S(&'a str),
}

impl Scalar<'_> {
    fn describe(&self) -> String {
        match self {
            Scalar::F(v) => format!("{v} Type: Number"),
            Scalar::I(v) => format!("{v} Type: Number"),
            Scalar::U(v) => format!("{v} Type: Number"),
            Scalar::B(v) => format!("{v} Type: Bool"),
            Scalar::S(v) => format!("\"{v}\" Type: String"),
        }
    }
}

/// Collects one input tensor: values plus the dims discovered at each depth.
pub struct TensorBuilder {
    /// The signature's dtype for this input.
    dtype: DataType,
    /// Size of each dimension, filled as arrays close.
    dims: Vec<Option<usize>>,
    /// Depth at which scalars sit; every scalar must sit at the same depth.
    leaf_depth: Option<usize>,
    /// The values, row-major.
    values: Values,
    /// Charged for every buffer growth and string copy, when parsing for a request.
    budget: Option<Arc<RequestBudget>>,
    /// The budget's refusal, kept so it reaches the client as itself and not as a parse error.
    refused: Option<ServingError>,
}

impl TensorBuilder {
    /// A builder for `dtype`; JSON cannot carry half/bfloat16, as in TF Serving.
    pub fn new(dtype: DataType) -> Result<Self, ServingError> {
        let values = match dtype {
            DataType::Float => Values::F32(Vec::new()),
            DataType::Double => Values::F64(Vec::new()),
            DataType::Int8 => Values::I8(Vec::new()),
            DataType::Int16 => Values::I16(Vec::new()),
            DataType::Int32 => Values::I32(Vec::new()),
            DataType::Int64 => Values::I64(Vec::new()),
            DataType::UInt8 => Values::U8(Vec::new()),
            DataType::UInt16 => Values::U16(Vec::new()),
            DataType::UInt32 => Values::U32(Vec::new()),
            DataType::UInt64 => Values::U64(Vec::new()),
            DataType::Bool => Values::Bool(Vec::new()),
            DataType::String => Values::Str(Vec::new()),
            DataType::Half | DataType::BFloat16 => {
                return Err(ServingError::unimplemented(format!("Conversion of JSON Value to type: {}", dtype.name())))
            }
        };
        Ok(TensorBuilder { dtype, dims: Vec::new(), leaf_depth: None, values, budget: None, refused: None })
    }

    /// Charges `bytes` about to be allocated; a refusal is kept for the caller.
    fn charge(&mut self, bytes: usize) -> Result<(), String> {
        let Some(budget) = &self.budget else { return Ok(()) };
        budget.charge(bytes, || format!("parsing {} values from JSON", self.dtype.name())).map_err(|e| {
            let message = e.message.clone();
            self.refused = Some(e);
            message
        })
    }

    fn close_dim(&mut self, depth: usize, len: usize) -> Result<(), String> {
        if self.dims.len() <= depth {
            self.dims.resize(depth + 1, None);
        }
        match self.dims[depth] {
            None => self.dims[depth] = Some(len),
            Some(prev) if prev != len => {
                return Err(format!(
                "Expecting tensor size of {prev} at depth {depth} but got {len}: every row must have the same shape"
            ))
            }
            _ => {}
        }
        Ok(())
    }

    fn leaf(&mut self, depth: usize) -> Result<(), String> {
        match self.leaf_depth {
            None => self.leaf_depth = Some(depth),
            Some(d) if d != depth => {
                return Err("Expecting a list of the same depth everywhere: ragged lists are not a tensor".into())
            }
            _ => {}
        }
        Ok(())
    }

    fn push(&mut self, s: Scalar<'_>) -> Result<(), String> {
        if let (Scalar::S(text), Values::Str(_)) = (s, &self.values) {
            self.charge(text.len())?;
        }
        let reserved = self.values.reserved();
        self.push_value(s)?;
        let grown = self.values.reserved().saturating_sub(reserved);
        self.charge(grown)
    }

    fn push_value(&mut self, s: Scalar<'_>) -> Result<(), String> {
        let dtype = self.dtype;
        let bad = || format!("JSON Value: {} is not of expected type: {}", s.describe(), dtype.name());
        fn int<T: TryFrom<i64> + TryFrom<u64>>(s: Scalar<'_>) -> Option<T> {
            match s {
                Scalar::I(v) => T::try_from(v).ok(),
                Scalar::U(v) => T::try_from(v).ok(),
                _ => None,
            }
        }
        let float = |s: Scalar<'_>| -> Option<f64> {
            match s {
                Scalar::F(v) => Some(v),
                Scalar::I(v) => Some(v as f64),
                Scalar::U(v) => Some(v as f64),
                Scalar::S("NaN") => Some(f64::NAN),
                Scalar::S("Infinity") => Some(f64::INFINITY),
                Scalar::S("-Infinity") => Some(f64::NEG_INFINITY),
                _ => None,
            }
        };
        match &mut self.values {
            Values::F32(v) => v.push(float(s).ok_or_else(bad)? as f32),
            Values::F64(v) => v.push(float(s).ok_or_else(bad)?),
            Values::I8(v) => v.push(int(s).ok_or_else(bad)?),
            Values::I16(v) => v.push(int(s).ok_or_else(bad)?),
            Values::I32(v) => v.push(int(s).ok_or_else(bad)?),
            Values::I64(v) => v.push(int(s).ok_or_else(bad)?),
            Values::U8(v) => v.push(int(s).ok_or_else(bad)?),
            Values::U16(v) => v.push(int(s).ok_or_else(bad)?),
            Values::U32(v) => v.push(int(s).ok_or_else(bad)?),
            Values::U64(v) => v.push(int(s).ok_or_else(bad)?),
            Values::Bool(v) => match s {
                Scalar::B(b) => v.push(b),
                _ => return Err(bad()),
            },
            Values::Str(v) => match s {
                Scalar::S(text) => v.push(Bytes::copy_from_slice(text.as_bytes())),
                _ => return Err(bad()),
            },
        }
        Ok(())
    }

    fn push_b64(&mut self, encoded: &str) -> Result<(), String> {
        if !matches!(self.values, Values::Str(_)) {
            return Err(format!("a {{\"b64\": ...}} value needs a string input, not {}", self.dtype.name()));
        }
        self.charge(encoded.len() / 4 * 3 + 3)?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| format!("Unable to base64 decode: {e}"))?;
        let reserved = self.values.reserved();
        if let Values::Str(v) = &mut self.values {
            v.push(Bytes::from(raw));
        }
        let grown = self.values.reserved().saturating_sub(reserved);
        self.charge(grown)
    }

    /// The finished tensor; `rows` sets the leading dimension for the row format.
    pub fn finish(self, rows: Option<usize>) -> Result<Tensor, ServingError> {
        let mut dims = self.dims;
        if let Some(n) = rows {
            if dims.is_empty() {
                dims.push(Some(n));
            }
            dims[0] = Some(n);
        }
        let depth = self.leaf_depth.unwrap_or(dims.len());
        let shape: Vec<usize> = (0..depth).map(|d| dims.get(d).copied().flatten().unwrap_or(0)).collect();
        let data = match self.values {
            Values::F32(v) => TensorData::Float(super::Buffer::from_vec(v)),
            Values::F64(v) => TensorData::Double(super::Buffer::from_vec(v)),
            Values::I8(v) => TensorData::Int8(super::Buffer::from_vec(v)),
            Values::I16(v) => TensorData::Int16(super::Buffer::from_vec(v)),
            Values::I32(v) => TensorData::Int32(super::Buffer::from_vec(v)),
            Values::I64(v) => TensorData::Int64(super::Buffer::from_vec(v)),
            Values::U8(v) => TensorData::UInt8(super::Buffer::from_vec(v)),
            Values::U16(v) => TensorData::UInt16(super::Buffer::from_vec(v)),
            Values::U32(v) => TensorData::UInt32(super::Buffer::from_vec(v)),
            Values::U64(v) => TensorData::UInt64(super::Buffer::from_vec(v)),
            Values::Bool(v) => TensorData::Bool(v),
            Values::Str(v) => TensorData::String(v),
        };
        Tensor::new(shape, data).map_err(|e| ServingError::invalid_argument(format!("Malformed tensor: {e}")))
    }
}

/// Parses one (possibly nested) value into a builder at `depth`.
struct Node<'a> {
    builder: &'a mut TensorBuilder,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

macro_rules! leaf {
    ($self:ident, $scalar:expr) => {{
        $self.builder.leaf($self.depth).map_err(E::custom)?;
        $self.builder.push($scalar).map_err(E::custom)
    }};
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a tensor value or list")
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        leaf!(self, Scalar::F(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        leaf!(self, Scalar::I(v))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        leaf!(self, Scalar::U(v))
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        leaf!(self, Scalar::B(v))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        leaf!(self, Scalar::S(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(A::Error::custom("lists are nested deeper than a tensor's rank limit"));
        }
        let builder = self.builder;
        let mut n = 0;
        while seq.next_element_seed(Node { builder: &mut *builder, depth: self.depth + 1 })?.is_some() {
            n += 1;
        }
        builder.close_dim(self.depth, n).map_err(A::Error::custom)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let key: Option<String> = map.next_key()?;
        if key.as_deref() != Some("b64") {
            return Err(A::Error::custom("an object value must be {\"b64\": \"...\"}"));
        }
        let encoded: String = map.next_value()?;
        if map.next_key::<String>()?.is_some() {
            return Err(A::Error::custom("a {\"b64\": ...} object must have exactly one key"));
        }
        self.builder.leaf(self.depth).map_err(A::Error::custom)?;
        self.builder.push_b64(&encoded).map_err(A::Error::custom)
    }
}

/// Input aliases and their builders, in signature order.
pub struct InputBuilders {
    /// (alias, builder) pairs.
    inputs: Vec<(String, TensorBuilder)>,
}

impl InputBuilders {
    /// Builders for the given (alias, dtype) inputs.
    pub fn new(specs: impl IntoIterator<Item = (String, DataType)>) -> Result<Self, ServingError> {
        let inputs = specs
            .into_iter()
            .map(|(alias, dtype)| TensorBuilder::new(dtype).map(|b| (alias, b)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(InputBuilders { inputs })
    }

    /// Charges every buffer the builders grow, and every string they copy, to `budget`.
    pub fn with_budget(mut self, budget: Arc<RequestBudget>) -> Self {
        for (_, b) in &mut self.inputs {
            b.budget = Some(budget.clone());
        }
        self
    }

    fn index(&self, alias: &str) -> Option<usize> {
        self.inputs.iter().position(|(a, _)| a == alias)
    }

    /// A parse error for the client: the budget's refusal when one stopped the parse.
    fn error(&mut self, e: serde_json::Error) -> ServingError {
        self.inputs.iter_mut().find_map(|(_, b)| b.refused.take()).unwrap_or_else(|| json_error(e))
    }
}

fn json_error(e: serde_json::Error) -> ServingError {
    ServingError::invalid_argument(format!("JSON Parse error: {e}"))
}

/// Row format: `instances` is a list with one entry per batch row.
pub fn parse_instances(raw: &str, mut builders: InputBuilders) -> Result<TensorMap, ServingError> {
    struct Rows<'a>(&'a mut InputBuilders);
    impl<'de> DeserializeSeed<'de> for Rows<'_> {
        type Value = usize;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
            d.deserialize_seq(self)
        }
    }
    impl<'de> Visitor<'de> for Rows<'_> {
        type Value = usize;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of instances")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
            let mut n = 0;
            while seq.next_element_seed(Row { builders: &mut *self.0 })?.is_some() {
                n += 1;
            }
            Ok(n)
        }
    }
    struct Row<'a> {
        builders: &'a mut InputBuilders,
    }
    impl<'de> DeserializeSeed<'de> for Row<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    impl Row<'_> {
        fn single<E: serde::de::Error>(&mut self) -> Result<&mut TensorBuilder, E> {
            if self.builders.inputs.len() != 1 {
                return Err(E::custom(
                    "instances must be objects keyed by input name when the signature has several inputs",
                ));
            }
            Ok(&mut self.builders.inputs[0].1)
        }
    }
    macro_rules! row_leaf {
        ($self:ident, $v:expr, $visit:ident) => {{
            let mut this = $self;
            let b = this.single::<E>()?;
            Node { builder: b, depth: 1 }.$visit($v)
        }};
    }
    impl<'de> Visitor<'de> for Row<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an instance")
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
            row_leaf!(self, v, visit_f64)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
            row_leaf!(self, v, visit_i64)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
            row_leaf!(self, v, visit_u64)
        }
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
            row_leaf!(self, v, visit_bool)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
            row_leaf!(self, v, visit_str)
        }
        fn visit_seq<A: SeqAccess<'de>>(mut self, seq: A) -> Result<(), A::Error> {
            let b = self.single::<A::Error>()?;
            Node { builder: b, depth: 1 }.visit_seq(seq)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = vec![false; self.builders.inputs.len()];
            let mut first = true;
            while let Some(key) = map.next_key::<String>()? {
                if first && key == "b64" && self.builders.inputs.len() == 1 {
                    // A lone {"b64": ...} row is a string value, not named inputs.
                    let encoded: String = map.next_value()?;
                    let b = &mut self.builders.inputs[0].1;
                    b.leaf(1).map_err(A::Error::custom)?;
                    return b.push_b64(&encoded).map_err(A::Error::custom);
                }
                first = false;
                let i = self.builders.index(&key).ok_or_else(|| {
                    A::Error::custom(format!("instance has an input {key} that is not in the signature"))
                })?;
                if std::mem::replace(&mut seen[i], true) {
                    return Err(A::Error::custom(format!("input {key} appears twice in one instance")));
                }
                map.next_value_seed(Node { builder: &mut self.builders.inputs[i].1, depth: 1 })?;
            }
            if let Some(i) = seen.iter().position(|s| !s) {
                return Err(A::Error::custom(format!(
                    "Failed to process element: {} of 'instances' list. Missing named input: {}",
                    0, self.builders.inputs[i].0
                )));
            }
            Ok(())
        }
    }

    let mut de = serde_json::Deserializer::from_str(raw);
    let rows = match Rows(&mut builders).deserialize(&mut de) {
        Ok(rows) => rows,
        Err(e) => return Err(builders.error(e)),
    };
    de.end().map_err(json_error)?;
    if rows == 0 {
        return Err(ServingError::invalid_argument("'instances' must be a non-empty list"));
    }
    builders.inputs.into_iter().map(|(alias, b)| Ok((alias, b.finish(Some(rows))?))).collect()
}

/// Columnar format: `inputs` is one value (single input) or an object keyed by input name.
pub fn parse_inputs(raw: &str, mut builders: InputBuilders) -> Result<TensorMap, ServingError> {
    struct Columns<'a>(&'a mut InputBuilders);
    impl<'de> DeserializeSeed<'de> for Columns<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    impl Columns<'_> {
        fn single<E: serde::de::Error>(&mut self) -> Result<Node<'_>, E> {
            if self.0.inputs.len() != 1 {
                return Err(E::custom(
                    "'inputs' must be an object keyed by input name when the signature has several inputs",
                ));
            }
            Ok(Node { builder: &mut self.0.inputs[0].1, depth: 0 })
        }
    }
    impl<'de> Visitor<'de> for Columns<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a value, a list, or an object keyed by input name")
        }
        fn visit_f64<E: serde::de::Error>(mut self, v: f64) -> Result<(), E> {
            self.single::<E>()?.visit_f64(v)
        }
        fn visit_i64<E: serde::de::Error>(mut self, v: i64) -> Result<(), E> {
            self.single::<E>()?.visit_i64(v)
        }
        fn visit_u64<E: serde::de::Error>(mut self, v: u64) -> Result<(), E> {
            self.single::<E>()?.visit_u64(v)
        }
        fn visit_bool<E: serde::de::Error>(mut self, v: bool) -> Result<(), E> {
            self.single::<E>()?.visit_bool(v)
        }
        fn visit_str<E: serde::de::Error>(mut self, v: &str) -> Result<(), E> {
            self.single::<E>()?.visit_str(v)
        }
        fn visit_seq<A: SeqAccess<'de>>(mut self, seq: A) -> Result<(), A::Error> {
            self.single::<A::Error>()?.visit_seq(seq)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = vec![false; self.0.inputs.len()];
            let mut first = true;
            while let Some(key) = map.next_key::<String>()? {
                if first && key == "b64" && self.0.inputs.len() == 1 {
                    let encoded: String = map.next_value()?;
                    let b = &mut self.0.inputs[0].1;
                    b.leaf(0).map_err(A::Error::custom)?;
                    return b.push_b64(&encoded).map_err(A::Error::custom);
                }
                first = false;
                let i = self.0.index(&key).ok_or_else(|| {
                    A::Error::custom(format!("'inputs' has {key}, which is not an input of the signature"))
                })?;
                seen[i] = true;
                map.next_value_seed(Node { builder: &mut self.0.inputs[i].1, depth: 0 })?;
            }
            if let Some(i) = seen.iter().position(|s| !s) {
                return Err(A::Error::custom(format!(
                    "Missing named input: {} in 'inputs' object",
                    self.0.inputs[i].0
                )));
            }
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_str(raw);
    if let Err(e) = Columns(&mut builders).deserialize(&mut de) {
        return Err(builders.error(e));
    }
    de.end().map_err(json_error)?;
    builders.inputs.into_iter().map(|(alias, b)| Ok((alias, b.finish(None)?))).collect()
}

/// Replaces the bare `NaN`, `Infinity` and `-Infinity` tokens TF Serving accepts with strings serde can read.
pub fn quote_non_finite(body: &str) -> std::borrow::Cow<'_, str> {
    if !body.contains("NaN") && !body.contains("Infinity") {
        return std::borrow::Cow::Borrowed(body);
    }
    let mut out = String::with_capacity(body.len() + 16);
    let (mut in_string, mut escaped) = (false, false);
    let mut rest = body;
    while let Some(c) = rest.chars().next() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else if let Some(token) = ["-Infinity", "Infinity", "NaN"].into_iter().find(|t| rest.starts_with(t)) {
            out.push('"');
            out.push_str(token);
            out.push('"');
            rest = &rest[token.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    std::borrow::Cow::Owned(out)
}

/// Formats a float like TF Serving: `%g` with 6 digits, more if that does not round-trip, `.0` for integers.
pub fn format_float(v: f64, single: bool) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    if let Some(s) = format_short(v, single) {
        return s;
    }
    let mut s = format_g(v, 6);
    let round_trips = if single { s.parse::<f32>().ok() == Some(v as f32) } else { s.parse::<f64>().ok() == Some(v) };
    if !round_trips {
        s = format_g(v, if single { 9 } else { 17 });
    }
    if !s.contains(['.', 'e']) {
        s.push_str(".0");
    }
    s
}

/// `%g` output built from the shortest round-trip digits, when they are 6 or fewer
/// (then `%.6g` yields the same digits); `None` when the slow exact path is needed.
fn format_short(v: f64, single: bool) -> Option<String> {
    let e = if single { format!("{:e}", v as f32) } else { format!("{v:e}") };
    let (mantissa, exp) = e.split_once('e')?;
    let exp: i32 = exp.parse().ok()?;
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if digits.len() > 6 || v == 0.0 {
        return None;
    }
    let mut out = String::with_capacity(16);
    if negative {
        out.push('-');
    }
    if !(-4..6).contains(&exp) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push_str(&format!("e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs()));
    } else if exp < 0 {
        out.push_str("0.");
        for _ in 0..(-exp - 1) {
            out.push('0');
        }
        out.push_str(&digits);
    } else {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            out.push_str(&digits);
            for _ in digits.len()..int_len {
                out.push('0');
            }
            out.push_str(".0");
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    }
    Some(out)
}

/// C's `%.{p}g`.
fn format_g(v: f64, p: usize) -> String {
    if v == 0.0 {
        return if v.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    let e = format!("{:.*e}", p - 1, v);
    let (mantissa, exp) = e.split_once('e').expect("exponent form");
    let exp: i32 = exp.parse().expect("exponent");
    if exp < -4 || exp >= p as i32 {
        let m = trim_zeros(mantissa);
        format!("{m}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    } else {
        let decimals = (p as i32 - 1 - exp).max(0) as usize;
        trim_zeros(&format!("{v:.decimals$}")).to_string()
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// Writes one element of a tensor as JSON.
fn write_value(out: &mut String, data: &TensorData, i: usize, as_b64: bool) {
    match data {
        TensorData::Float(b) => out.push_str(&format_float(b.as_slice()[i] as f64, true)),
        TensorData::Double(b) => out.push_str(&format_float(b.as_slice()[i], false)),
        TensorData::Half(b) => out.push_str(&format_float(b.as_slice()[i].to_f64(), true)),
        TensorData::BFloat16(b) => out.push_str(&format_float(b.as_slice()[i].to_f64(), true)),
        TensorData::Int8(b) => write!(out, "{}", b.as_slice()[i]).unwrap(),
        TensorData::Int16(b) => write!(out, "{}", b.as_slice()[i]).unwrap(),
        TensorData::Int32(b) => write!(out, "{}", b.as_slice()[i]).unwrap(),
        TensorData::Int64(b) => write!(out, "{}", b.as_slice()[i]).unwrap(),
        TensorData::UInt8(b) => write!(out, "{}", b.as_slice()[i]).unwrap(),
        TensorData::UInt16(b) => write!(out, "{}", b.as_slice()[i]).unwrap(),
        TensorData::UInt32(b) => write!(out, "{}", b.as_slice()[i]).unwrap(),
        TensorData::UInt64(b) => write!(out, "{}", b.as_slice()[i]).unwrap(),
        TensorData::Bool(v) => out.push_str(if v[i] { "true" } else { "false" }),
        TensorData::String(v) => {
            if as_b64 {
                out.push_str("{\"b64\": ");
                out.push_str(&serde_json::to_string(&base64::engine::general_purpose::STANDARD.encode(&v[i])).unwrap());
                out.push('}');
            } else {
                out.push_str(&serde_json::to_string(&String::from_utf8_lossy(&v[i])).unwrap());
            }
        }
    }
}

/// Writes the sub-tensor starting at flat index `start` with shape `shape` as nested lists.
fn write_nested(out: &mut String, data: &TensorData, start: usize, shape: &[usize], as_b64: bool) {
    let Some((&n, rest)) = shape.split_first() else {
        write_value(out, data, start, as_b64);
        return;
    };
    let stride: usize = rest.iter().product();
    out.push('[');
    for k in 0..n {
        if k > 0 {
            out.push_str(", ");
        }
        write_nested(out, data, start + k * stride, rest, as_b64);
    }
    out.push(']');
}

/// Writes a whole tensor; string outputs named `*_bytes` come out as `{"b64": ...}`.
pub fn write_tensor(out: &mut String, alias: &str, t: &Tensor) {
    write_nested(out, t.data(), 0, t.shape(), alias.ends_with("_bytes"));
}

/// `{"predictions": ...}` for a row-format request.
pub fn write_predictions(out: &mut String, outputs: &TensorMap) -> Result<(), ServingError> {
    let mut batch = None;
    for (alias, t) in outputs {
        let Some(&n) = t.shape().first() else {
            return Err(ServingError::invalid_argument(format!("Tensor name: {alias} has no shape information ")));
        };
        match batch {
            None => batch = Some(n),
            Some(b) if b != n => {
                return Err(ServingError::invalid_argument(format!(
                    "Tensor name: {alias} has inconsistent batch size: {n} expecting: {b}"
                )))
            }
            _ => {}
        }
    }
    let n = batch.unwrap_or(0);
    out.push_str("{\"predictions\": [");
    for row in 0..n {
        if row > 0 {
            out.push_str(", ");
        }
        if outputs.len() == 1 {
            let (alias, t) = outputs.iter().next().expect("one output");
            let stride: usize = t.shape()[1..].iter().product();
            write_nested(out, t.data(), row * stride, &t.shape()[1..], alias.ends_with("_bytes"));
        } else {
            out.push('{');
            for (k, (alias, t)) in outputs.iter().enumerate() {
                if k > 0 {
                    out.push_str(", ");
                }
                out.push_str(&serde_json::to_string(alias).unwrap());
                out.push_str(": ");
                let stride: usize = t.shape()[1..].iter().product();
                write_nested(out, t.data(), row * stride, &t.shape()[1..], alias.ends_with("_bytes"));
            }
            out.push('}');
        }
    }
    out.push_str("]}");
    Ok(())
}

/// `{"outputs": ...}` for a columnar request.
pub fn write_outputs(out: &mut String, outputs: &TensorMap) {
    out.push_str("{\"outputs\": ");
    if outputs.len() == 1 {
        let (alias, t) = outputs.iter().next().expect("one output");
        write_tensor(out, alias, t);
    } else {
        out.push('{');
        for (k, (alias, t)) in outputs.iter().enumerate() {
            if k > 0 {
                out.push_str(", ");
            }
            out.push_str(&serde_json::to_string(alias).unwrap());
            out.push_str(": ");
            write_tensor(out, alias, t);
        }
        out.push('}');
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(dtype: DataType) -> InputBuilders {
        InputBuilders::new([("x".to_string(), dtype)]).unwrap()
    }

    #[test]
    fn the_fast_path_agrees_with_the_exact_one() {
        let mut x = 1.234e-9f64;
        while x < 1e12 {
            for v in [x, -x, (x as f32) as f64, x * 3.0, 0.5 * x + 2.0] {
                for single in [true, false] {
                    if let Some(fast) = format_short(v, single) {
                        let mut slow = format_g(v, 6);
                        if !slow.contains(['.', 'e']) {
                            slow.push_str(".0");
                        }
                        assert_eq!(fast, slow, "{v} single={single}");
                    }
                }
            }
            x *= 1.7;
        }
    }

    #[test]
    fn floats_print_like_tf_serving() {
        assert_eq!(format_float(3.0, true), "3.0");
        assert_eq!(format_float(3.5, true), "3.5");
        assert_eq!(format_float(0.1, true), "0.1");
        assert_eq!(format_float(9e6, true), "9e+06");
        assert_eq!(format_float(1e-7, true), "1e-07");
        assert_eq!(format_float(123456789.0, false), "123456789.0");
        assert_eq!(format_float(f64::NAN, true), "NaN");
        assert_eq!(format_float(f64::NEG_INFINITY, true), "-Infinity");
        let v = 0.1f32 + 0.2f32;
        assert_eq!(format_float(v as f64, true).parse::<f32>().unwrap(), v);
    }

    #[test]
    fn row_format_single_input() {
        let t = parse_instances("[[1, 2], [3, 4.5]]", one(DataType::Float)).unwrap().remove("x").unwrap();
        assert_eq!(t.shape(), &[2, 2]);
        assert_eq!(t.as_slice::<f32>().unwrap(), &[1.0, 2.0, 3.0, 4.5]);
        let t = parse_instances("[2, 3, 4]", one(DataType::Float)).unwrap().remove("x").unwrap();
        assert_eq!(t.shape(), &[3]);
        assert!(parse_instances("[[1, 2], [3]]", one(DataType::Float)).is_err());
        assert!(parse_instances("[[1, 2], 3]", one(DataType::Float)).is_err());
        assert!(parse_instances("[]", one(DataType::Float)).is_err());
    }

    #[test]
    fn row_format_named_inputs_and_b64() {
        let b = InputBuilders::new([("a".to_string(), DataType::Int64), ("s".to_string(), DataType::String)]).unwrap();
        let m = parse_instances(r#"[{"a": [1, 2], "s": {"b64": "aGk="}}, {"s": "yo", "a": [3, 4]}]"#, b).unwrap();
        assert_eq!(m["a"].shape(), &[2, 2]);
        assert_eq!(m["a"].as_slice::<i64>().unwrap(), &[1, 2, 3, 4]);
        let s = m["s"].view_strings().unwrap();
        assert_eq!(s[[0]], Bytes::from_static(b"hi"));
        assert_eq!(s[[1]], Bytes::from_static(b"yo"));
        let b = InputBuilders::new([("a".to_string(), DataType::Int64), ("s".to_string(), DataType::String)]).unwrap();
        assert!(parse_instances(r#"[{"a": 1}]"#, b).unwrap_err().message.contains("Missing named input: s"));
    }

    #[test]
    fn columnar_format() {
        let t = parse_inputs("[[1], [2]]", one(DataType::Double)).unwrap().remove("x").unwrap();
        assert_eq!(t.shape(), &[2, 1]);
        let t = parse_inputs("7", one(DataType::Int32)).unwrap().remove("x").unwrap();
        assert!(t.shape().is_empty());
        let b = InputBuilders::new([("a".to_string(), DataType::Bool), ("b".to_string(), DataType::UInt8)]).unwrap();
        let m = parse_inputs(r#"{"a": [true, false], "b": [[1, 2, 3]]}"#, b).unwrap();
        assert_eq!(m["b"].shape(), &[1, 3]);
    }

    #[test]
    fn types_come_from_the_signature() {
        let e = parse_instances(r#"["x"]"#, one(DataType::Float)).unwrap_err();
        assert!(e.message.contains("JSON Value: \"x\" Type: String is not of expected type: float"), "{}", e.message);
        assert!(parse_instances("[1.5]", one(DataType::Int32)).is_err());
        assert!(parse_instances("[300]", one(DataType::UInt8)).is_err());
        assert_eq!(TensorBuilder::new(DataType::Half).err().unwrap().code, crate::error::Code::Unimplemented);
    }

    #[test]
    fn non_finite_tokens() {
        let body = quote_non_finite(r#"{"instances": [NaN, Infinity, -Infinity, "NaN"]}"#);
        assert_eq!(body, r#"{"instances": ["NaN", "Infinity", "-Infinity", "NaN"]}"#);
        let raw = quote_non_finite("[NaN, -Infinity, 1]");
        let t = parse_instances(&raw, one(DataType::Float)).unwrap().remove("x").unwrap();
        let v = t.as_slice::<f32>().unwrap();
        assert!(v[0].is_nan() && v[1] == f32::NEG_INFINITY && v[2] == 1.0);
    }

    #[test]
    fn writes_predictions_and_outputs() {
        let t = Tensor::from_vec(vec![3, 1], vec![3.0f32, 3.5, 4.0]).unwrap();
        let m = TensorMap::from([("y".to_string(), t)]);
        let mut s = String::new();
        write_predictions(&mut s, &m).unwrap();
        assert_eq!(s, r#"{"predictions": [[3.0], [3.5], [4.0]]}"#);
        let mut s = String::new();
        write_outputs(&mut s, &m);
        assert_eq!(s, r#"{"outputs": [[3.0], [3.5], [4.0]]}"#);
        let b = Tensor::from_strings(vec![1], vec![Bytes::from_static(b"hi")]).unwrap();
        let m = TensorMap::from([("out_bytes".to_string(), b)]);
        let mut s = String::new();
        write_outputs(&mut s, &m);
        assert_eq!(s, r#"{"outputs": [{"b64": "aGk="}]}"#);
    }
}
