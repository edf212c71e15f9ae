//! KServe V2 (Open Inference Protocol) tensors: datatype names, raw little-endian contents
//! (gRPC `raw_*_contents` and the REST binary extension), typed gRPC contents, and JSON `data`.
//!
//! Every decoder checks the declared shape against the tensor-size limit and charges the
//! request's budget before it allocates; raw numeric contents are borrowed when aligned.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use half::{bf16, f16};
use serde::de::{DeserializeSeed, Deserializer, SeqAccess, Visitor};

use super::proto::{from_content, DecodeLimits, MAX_DIMS};
use super::{DataType, Element, Tensor, TensorData};
use crate::error::{ErrorKind, ServingError};
use crate::memory::RequestBudget;
use crate::proto::inference::InferTensorContents;

/// The V2 datatype name of `dtype` (`FP32`, `BYTES`, ...).
pub fn datatype_name(dtype: DataType) -> &'static str {
    match dtype {
        DataType::Bool => "BOOL",
        DataType::UInt8 => "UINT8",
        DataType::UInt16 => "UINT16",
        DataType::UInt32 => "UINT32",
        DataType::UInt64 => "UINT64",
        DataType::Int8 => "INT8",
        DataType::Int16 => "INT16",
        DataType::Int32 => "INT32",
        DataType::Int64 => "INT64",
        DataType::Half => "FP16",
        DataType::Float => "FP32",
        DataType::Double => "FP64",
        DataType::String => "BYTES",
        DataType::BFloat16 => "BF16",
    }
}

/// The dtype a V2 datatype name stands for; `None` for names V2 does not define.
pub fn parse_datatype(name: &str) -> Option<DataType> {
    DataType::ALL.into_iter().find(|d| datatype_name(*d) == name)
}

/// The dtype of input `name` declared as `datatype`, or the error a client should see.
pub fn input_datatype(name: &str, datatype: &str) -> Result<DataType, ServingError> {
    parse_datatype(datatype)
        .ok_or_else(|| ServingError::invalid_argument(format!("input '{name}': invalid datatype '{datatype}'")))
}

/// Checks a declared V2 shape: dimensions non-negative, the element count within `limits`.
/// Returns the dims and the element count.
pub fn check_shape(
    name: &str,
    dtype: DataType,
    shape: &[i64],
    limits: &DecodeLimits,
) -> Result<(Vec<usize>, usize), ServingError> {
    if shape.len() > MAX_DIMS {
        return Err(ServingError::invalid_argument(format!(
            "input '{name}': shape has {} dimensions, more than the maximum of {MAX_DIMS}",
            shape.len()
        )));
    }
    let mut dims = Vec::with_capacity(shape.len());
    let mut count: u128 = 1;
    for &d in shape {
        if d < 0 {
            return Err(ServingError::invalid_argument(format!("input '{name}': dimension {d} is negative")));
        }
        count = count.saturating_mul(d as u128);
        dims.push(d as usize);
    }
    let element = dtype.size().unwrap_or(std::mem::size_of::<Bytes>()) as u128;
    if count.saturating_mul(element) > limits.max_tensor_bytes as u128 {
        return Err(ServingError::resource_exhausted(format!(
            "input '{name}': shape {shape:?} of {} needs {} bytes, more than the limit of {} bytes",
            datatype_name(dtype),
            count.saturating_mul(element),
            limits.max_tensor_bytes
        ))
        .with_kind(ErrorKind::TooLarge));
    }
    Ok((dims, count as usize))
}

/// Decodes raw little-endian contents of `shape` (BYTES: each element a 4-byte length, then
/// its bytes), borrowing aligned numeric contents from `raw`.
pub fn from_raw(
    name: &str,
    dtype: DataType,
    shape: &[i64],
    raw: Bytes,
    limits: &DecodeLimits,
    budget: &RequestBudget,
) -> Result<Tensor, ServingError> {
    let (dims, n) = check_shape(name, dtype, shape, limits)?;
    let invalid = |detail: String| ServingError::invalid_argument(format!("input '{name}': {detail}"));
    let data = match dtype {
        DataType::String => {
            budget.charge(n.saturating_mul(std::mem::size_of::<Bytes>()), || format!("the strings of input {name}"))?;
            TensorData::String(split_length_prefixed(&raw, n).map_err(invalid)?)
        }
        _ => {
            let aligned =
                dtype.size().is_some_and(|s| dtype != DataType::Bool && (raw.as_ptr() as usize).is_multiple_of(s));
            if !aligned {
                budget.charge(raw.len(), || format!("copying the raw contents of input {name}"))?;
            }
            from_content(dtype, raw, n, "the raw contents").map_err(|e| invalid(e.detail))?
        }
    };
    Tensor::new(dims, data).map_err(|e| invalid(e.to_string()))
}

/// Splits BYTES raw contents into exactly `n` elements, each borrowed from `raw`.
fn split_length_prefixed(raw: &Bytes, n: usize) -> Result<Vec<Bytes>, String> {
    // Each element takes at least its 4-byte length, so this bounds the vector by the body.
    if n > raw.len() / 4 {
        return Err(format!("{} bytes cannot hold {n} BYTES elements", raw.len()));
    }
    let mut out = Vec::with_capacity(n);
    let mut at = 0usize;
    while at < raw.len() {
        let Some(len) = raw.get(at..at + 4) else {
            return Err(format!("a BYTES element's 4-byte length is cut off at byte {at}"));
        };
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        at += 4;
        if len > raw.len() - at {
            return Err(format!("a BYTES element of {len} bytes runs past the end of the contents"));
        }
        if out.len() == n {
            return Err(format!("the contents hold more than the {n} BYTES elements of the shape"));
        }
        out.push(raw.slice(at..at + len));
        at += len;
    }
    if out.len() != n {
        return Err(format!("the contents hold {} BYTES elements, the shape needs {n}", out.len()));
    }
    Ok(out)
}

/// The raw little-endian form of `tensor` (BYTES length-prefixed, BOOL one byte each).
pub fn to_raw(tensor: &Tensor) -> Bytes {
    match tensor.data() {
        TensorData::String(values) => {
            let mut out = BytesMut::with_capacity(values.iter().map(|v| v.len() + 4).sum());
            for v in values {
                out.put_u32_le(v.len() as u32);
                out.put_slice(v);
            }
            out.freeze()
        }
        TensorData::Bool(values) => values.iter().map(|&b| b as u8).collect::<Vec<u8>>().into(),
        data => {
            crate::dispatch_data!(data, b => Bytes::copy_from_slice(bytemuck::cast_slice(b.as_slice())), _v => unreachable!())
        }
    }
}

/// Like [`to_raw`], consuming `tensor`: numeric values move into the bytes without a copy.
pub fn into_raw(tensor: Tensor) -> Bytes {
    #[cfg(target_endian = "little")]
    {
        if matches!(tensor.data(), TensorData::String(_) | TensorData::Bool(_)) {
            return to_raw(&tensor);
        }
        let (_, data) = tensor.into_parts();
        crate::dispatch_data!(data, b => b.into_bytes(), _v => unreachable!("handled above"))
    }
    #[cfg(not(target_endian = "little"))]
    to_raw(&tensor)
}

/// Decodes typed gRPC contents of `shape`; the field must be the one `dtype` uses.
pub fn from_contents(
    name: &str,
    dtype: DataType,
    shape: &[i64],
    contents: InferTensorContents,
    limits: &DecodeLimits,
    budget: &RequestBudget,
) -> Result<Tensor, ServingError> {
    let (dims, n) = check_shape(name, dtype, shape, limits)?;
    let c = contents;
    let given = [
        c.bool_contents.len(),
        c.int_contents.len(),
        c.int64_contents.len(),
        c.uint_contents.len(),
        c.uint64_contents.len(),
        c.fp32_contents.len(),
        c.fp64_contents.len(),
        c.bytes_contents.len(),
    ];
    let field = match dtype {
        DataType::Bool => 0,
        DataType::Int8 | DataType::Int16 | DataType::Int32 => 1,
        DataType::Int64 => 2,
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 => 3,
        DataType::UInt64 => 4,
        DataType::Float => 5,
        DataType::Double => 6,
        DataType::String => 7,
        DataType::Half | DataType::BFloat16 => {
            return Err(ServingError::invalid_argument(format!(
                "input '{name}': {} values must be sent in raw_input_contents",
                datatype_name(dtype)
            )))
        }
    };
    let invalid = |detail: String| ServingError::invalid_argument(format!("input '{name}': {detail}"));
    if let Some(other) = (0..given.len()).find(|&i| i != field && given[i] > 0) {
        return Err(invalid(format!(
            "{} contents cannot hold {} values",
            ["bool", "int", "int64", "uint", "uint64", "fp32", "fp64", "bytes"][other],
            datatype_name(dtype)
        )));
    }
    if given[field] != n {
        return Err(invalid(format!("{} values were sent for shape {shape:?}, which holds {n}", given[field])));
    }
    // Narrowed types are copied into their own width; the rest move.
    let narrowed = matches!(dtype, DataType::Int8 | DataType::Int16 | DataType::UInt8 | DataType::UInt16);
    if narrowed {
        budget.charge(n * dtype.size().unwrap_or(1), || format!("narrowing input {name}"))?;
    }
    let data = match dtype {
        DataType::Bool => TensorData::Bool(c.bool_contents),
        DataType::Int32 => TensorData::Int32(super::Buffer::from_vec(c.int_contents)),
        DataType::Int64 => TensorData::Int64(super::Buffer::from_vec(c.int64_contents)),
        DataType::UInt32 => TensorData::UInt32(super::Buffer::from_vec(c.uint_contents)),
        DataType::UInt64 => TensorData::UInt64(super::Buffer::from_vec(c.uint64_contents)),
        DataType::Float => TensorData::Float(super::Buffer::from_vec(c.fp32_contents)),
        DataType::Double => TensorData::Double(super::Buffer::from_vec(c.fp64_contents)),
        DataType::String => TensorData::String(c.bytes_contents),
        DataType::Int8 => narrow::<i32, i8>(&c.int_contents).map_err(invalid)?,
        DataType::Int16 => narrow::<i32, i16>(&c.int_contents).map_err(invalid)?,
        DataType::UInt8 => narrow::<u32, u8>(&c.uint_contents).map_err(invalid)?,
        DataType::UInt16 => narrow::<u32, u16>(&c.uint_contents).map_err(invalid)?,
        DataType::Half | DataType::BFloat16 => unreachable!("refused above"),
    };
    Tensor::new(dims, data).map_err(|e| invalid(e.to_string()))
}

fn narrow<W, T>(wide: &[W]) -> Result<TensorData, String>
where
    W: Copy + fmt::Display,
    T: Element + TryFrom<W>,
{
    let values = wide
        .iter()
        .map(|&v| T::try_from(v).map_err(|_| format!("{v} is out of range for {}", datatype_name(T::DTYPE))))
        .collect::<Result<Vec<T>, String>>()?;
    Ok(T::wrap(super::Buffer::from_vec(values)))
}

/// False for FP16 and BF16, which have no typed contents field and travel raw only.
pub fn has_typed_contents(dtype: DataType) -> bool {
    !matches!(dtype, DataType::Half | DataType::BFloat16)
}

/// Typed gRPC contents of `tensor`; `None` for FP16 and BF16, which travel raw only.
pub fn to_contents(tensor: &Tensor) -> Option<InferTensorContents> {
    let mut c = InferTensorContents::default();
    match tensor.data() {
        TensorData::Bool(v) => c.bool_contents = v.clone(),
        TensorData::Int8(b) => c.int_contents = b.as_slice().iter().map(|&v| v as i32).collect(),
        TensorData::Int16(b) => c.int_contents = b.as_slice().iter().map(|&v| v as i32).collect(),
        TensorData::Int32(b) => c.int_contents = b.as_slice().to_vec(),
        TensorData::Int64(b) => c.int64_contents = b.as_slice().to_vec(),
        TensorData::UInt8(b) => c.uint_contents = b.as_slice().iter().map(|&v| v as u32).collect(),
        TensorData::UInt16(b) => c.uint_contents = b.as_slice().iter().map(|&v| v as u32).collect(),
        TensorData::UInt32(b) => c.uint_contents = b.as_slice().to_vec(),
        TensorData::UInt64(b) => c.uint64_contents = b.as_slice().to_vec(),
        TensorData::Float(b) => c.fp32_contents = b.as_slice().to_vec(),
        TensorData::Double(b) => c.fp64_contents = b.as_slice().to_vec(),
        TensorData::String(v) => c.bytes_contents = v.clone(),
        TensorData::Half(_) | TensorData::BFloat16(_) => return None,
    }
    Some(c)
}

/// Decodes JSON `data` (flat or nested, row-major) of `shape`: no more than the shape's
/// element count is ever stored, and that is charged to `budget` first.
pub fn from_json(
    name: &str,
    dtype: DataType,
    shape: &[i64],
    data: &serde_json::value::RawValue,
    limits: &DecodeLimits,
    budget: &RequestBudget,
) -> Result<Tensor, ServingError> {
    let (dims, n) = check_shape(name, dtype, shape, limits)?;
    let element = dtype.size().unwrap_or(std::mem::size_of::<Bytes>());
    budget.charge(n.saturating_mul(element), || format!("the JSON data of input {name}"))?;
    let invalid = |detail: String| ServingError::invalid_argument(format!("input '{name}': {detail}"));
    fn collect<T: JsonLeaf>(raw: &str, n: usize) -> Result<Vec<T>, String> {
        let mut out = Vec::with_capacity(n);
        let mut de = serde_json::Deserializer::from_str(raw);
        Flatten { out: &mut out, max: n, depth: 0 }.deserialize(&mut de).map_err(|e| e.to_string())?;
        if out.len() != n {
            return Err(format!("{} values were sent for a shape that holds {n}", out.len()));
        }
        Ok(out)
    }
    let raw = data.get();
    let buffer = |d: Result<TensorData, String>| d.map_err(invalid);
    let data = buffer(match dtype {
        DataType::Bool => collect::<bool>(raw, n).map(TensorData::Bool),
        DataType::String => collect::<Bytes>(raw, n).map(TensorData::String),
        DataType::Float => collect::<f32>(raw, n).map(|v| f32::wrap(super::Buffer::from_vec(v))),
        DataType::Double => collect::<f64>(raw, n).map(|v| f64::wrap(super::Buffer::from_vec(v))),
        DataType::Half => collect::<f16>(raw, n).map(|v| f16::wrap(super::Buffer::from_vec(v))),
        DataType::Int8 => collect::<i8>(raw, n).map(|v| i8::wrap(super::Buffer::from_vec(v))),
        DataType::Int16 => collect::<i16>(raw, n).map(|v| i16::wrap(super::Buffer::from_vec(v))),
        DataType::Int32 => collect::<i32>(raw, n).map(|v| i32::wrap(super::Buffer::from_vec(v))),
        DataType::Int64 => collect::<i64>(raw, n).map(|v| i64::wrap(super::Buffer::from_vec(v))),
        DataType::UInt8 => collect::<u8>(raw, n).map(|v| u8::wrap(super::Buffer::from_vec(v))),
        DataType::UInt16 => collect::<u16>(raw, n).map(|v| u16::wrap(super::Buffer::from_vec(v))),
        DataType::UInt32 => collect::<u32>(raw, n).map(|v| u32::wrap(super::Buffer::from_vec(v))),
        DataType::UInt64 => collect::<u64>(raw, n).map(|v| u64::wrap(super::Buffer::from_vec(v))),
        DataType::BFloat16 => Err("BF16 values must be sent as binary data".to_string()),
    })?;
    Tensor::new(dims, data).map_err(|e| invalid(e.to_string()))
}

/// Nesting allowed in JSON `data`; a tensor has at most [`MAX_DIMS`] dimensions.
const MAX_JSON_DEPTH: usize = MAX_DIMS + 1;

/// One JSON leaf converted to an element type, or why it cannot be.
trait JsonLeaf: Sized {
    fn from_f64(v: f64) -> Result<Self, String> {
        Err(format!("{v} is not a valid {}", Self::NAME))
    }
    fn from_i64(v: i64) -> Result<Self, String>;
    fn from_u64(v: u64) -> Result<Self, String>;
    fn from_bool(v: bool) -> Result<Self, String> {
        Err(format!("{v} is not a valid {}", Self::NAME))
    }
    fn from_str(v: &str) -> Result<Self, String> {
        Err(format!("\"{v}\" is not a valid {}", Self::NAME))
    }
    const NAME: &'static str;
}

macro_rules! int_leaf {
    ($($t:ty => $name:literal),*) => {$(
        impl JsonLeaf for $t {
            const NAME: &'static str = $name;
            fn from_i64(v: i64) -> Result<Self, String> {
                <$t>::try_from(v).map_err(|_| format!("{v} is out of range for {}", $name))
            }
            fn from_u64(v: u64) -> Result<Self, String> {
                <$t>::try_from(v).map_err(|_| format!("{v} is out of range for {}", $name))
            }
        }
    )*};
}
int_leaf!(i8 => "INT8", i16 => "INT16", i32 => "INT32", i64 => "INT64", u8 => "UINT8", u16 => "UINT16", u32 => "UINT32", u64 => "UINT64");

macro_rules! float_leaf {
    ($($t:ty => $name:literal, $from:expr),*) => {$(
        impl JsonLeaf for $t {
            const NAME: &'static str = $name;
            fn from_f64(v: f64) -> Result<Self, String> {
                Ok($from(v))
            }
            fn from_i64(v: i64) -> Result<Self, String> {
                Ok($from(v as f64))
            }
            fn from_u64(v: u64) -> Result<Self, String> {
                Ok($from(v as f64))
            }
        }
    )*};
}
float_leaf!(f32 => "FP32", |v: f64| v as f32, f64 => "FP64", |v: f64| v, f16 => "FP16", f16::from_f64);

impl JsonLeaf for bool {
    const NAME: &'static str = "BOOL";
    fn from_i64(v: i64) -> Result<Self, String> {
        Err(format!("{v} is not a valid BOOL"))
    }
    fn from_u64(v: u64) -> Result<Self, String> {
        Err(format!("{v} is not a valid BOOL"))
    }
    fn from_bool(v: bool) -> Result<Self, String> {
        Ok(v)
    }
}

impl JsonLeaf for Bytes {
    const NAME: &'static str = "BYTES";
    fn from_i64(v: i64) -> Result<Self, String> {
        Err(format!("{v} is not a valid BYTES element (a string)"))
    }
    fn from_u64(v: u64) -> Result<Self, String> {
        Err(format!("{v} is not a valid BYTES element (a string)"))
    }
    fn from_str(v: &str) -> Result<Self, String> {
        Ok(Bytes::copy_from_slice(v.as_bytes()))
    }
}

/// Walks nested JSON arrays, pushing each leaf onto `out` (at most `max` of them).
struct Flatten<'a, T> {
    out: &'a mut Vec<T>,
    max: usize,
    depth: usize,
}

impl<T: JsonLeaf> Flatten<'_, T> {
    fn push<E: serde::de::Error>(self, v: Result<T, String>) -> Result<(), E> {
        if self.out.len() == self.max {
            return Err(E::custom(format!("more values were sent than the shape's {}", self.max)));
        }
        self.out.push(v.map_err(E::custom)?);
        Ok(())
    }
}

impl<'de, T: JsonLeaf> DeserializeSeed<'de> for Flatten<'_, T> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: JsonLeaf> Visitor<'de> for Flatten<'_, T> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a {} value or a list of them", T::NAME)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        self.push(T::from_f64(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.push(T::from_i64(v))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.push(T::from_u64(v))
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        self.push(T::from_bool(v))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.push(T::from_str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth >= MAX_JSON_DEPTH {
            return Err(serde::de::Error::custom(format!("data is nested more than {MAX_JSON_DEPTH} deep")));
        }
        let (out, max, depth) = (self.out, self.max, self.depth + 1);
        while seq.next_element_seed(Flatten { out: &mut *out, max, depth })?.is_some() {}
        Ok(())
    }
}

/// Appends `tensor`'s values to `out` as a flat JSON array (BYTES as strings, invalid UTF-8
/// replaced; non-finite floats as `NaN` / `Infinity`, which JSON itself cannot express).
pub fn write_json_data(out: &mut String, tensor: &Tensor) {
    use std::fmt::Write as _;
    out.push('[');
    fn list<T>(out: &mut String, values: &[T], mut one: impl FnMut(&mut String, &T)) {
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            one(out, v);
        }
    }
    let float = |out: &mut String, v: f64, single: bool| out.push_str(&super::json::format_float(v, single));
    match tensor.data() {
        TensorData::Bool(v) => list(out, v, |o, b| o.push_str(if *b { "true" } else { "false" })),
        TensorData::String(v) => list(out, v, |o, b| {
            o.push_str(&serde_json::Value::String(String::from_utf8_lossy(b).into_owned()).to_string())
        }),
        TensorData::Float(b) => list(out, b.as_slice(), |o, v| float(o, *v as f64, true)),
        TensorData::Double(b) => list(out, b.as_slice(), |o, v| float(o, *v, false)),
        TensorData::Half(b) => list(out, b.as_slice(), |o, v| float(o, v.to_f64(), true)),
        TensorData::BFloat16(b) => list(out, b.as_slice(), |o, v: &bf16| float(o, v.to_f64(), true)),
        // The integers (every other numeric arm is matched above) print as themselves.
        data => crate::dispatch_data!(data, b => list(out, b.as_slice(), |o, v| {
            let _ = write!(o, "{v}");
        }), _v => unreachable!("bool and string are matched above")),
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn limits() -> DecodeLimits {
        DecodeLimits::default()
    }

    #[test]
    fn every_datatype_name_round_trips() {
        for d in DataType::ALL {
            assert_eq!(parse_datatype(datatype_name(d)), Some(d));
        }
        assert_eq!(parse_datatype("FLOAT"), None);
    }

    #[test]
    fn raw_contents_round_trip_and_aligned_ones_are_borrowed() {
        let budget = RequestBudget::unlimited();
        let t = Tensor::from_vec(vec![2, 2], vec![1.5f32, -2.0, 3.25, 0.0]).unwrap();
        let raw = to_raw(&t);
        let back = from_raw("x", DataType::Float, &[2, 2], raw.clone(), &limits(), &budget).unwrap();
        assert_eq!(back.as_slice::<f32>(), t.as_slice::<f32>());
        let TensorData::Float(b) = back.data() else { panic!() };
        assert!(b.is_shared() || !(raw.as_ptr() as usize).is_multiple_of(4));
        let s = Tensor::from_strings(vec![2], vec![Bytes::from_static(b"ab"), Bytes::new()]).unwrap();
        let raw = to_raw(&s);
        assert_eq!(&raw[..], b"\x02\0\0\0ab\0\0\0\0");
        let back = from_raw("s", DataType::String, &[2], raw, &limits(), &budget).unwrap();
        assert_eq!(back.view_strings().unwrap().iter().cloned().collect::<Vec<_>>(), vec![&b"ab"[..], &b""[..]]);
    }

    #[test]
    fn bad_raw_contents_are_invalid_argument() {
        let budget = RequestBudget::unlimited();
        let e = from_raw("x", DataType::Float, &[3], Bytes::from_static(&[0; 8]), &limits(), &budget).unwrap_err();
        assert!(e.message.contains("has 8 bytes, expected 12"), "{}", e.message);
        for bad in [&b"\x05\0\0\0ab"[..], b"\x01\0", b"\x00\0\0\0\x00\0\0\0\x00\0\0\0"] {
            let e = from_raw("s", DataType::String, &[2], Bytes::from(bad), &limits(), &budget).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidInput, "{}", e.message);
        }
        let e = from_raw("x", DataType::Float, &[1 << 40, 1 << 30], Bytes::new(), &limits(), &budget).unwrap_err();
        assert_eq!(e.kind, ErrorKind::TooLarge);
        let e = from_raw("x", DataType::Float, &[-1], Bytes::new(), &limits(), &budget).unwrap_err();
        assert!(e.message.contains("negative"));
    }

    #[test]
    fn typed_contents_use_the_datatype_s_field_and_narrow_with_checks() {
        let budget = RequestBudget::unlimited();
        let c = InferTensorContents { int_contents: vec![1, -2, 127], ..Default::default() };
        let t = from_contents("x", DataType::Int8, &[3], c, &limits(), &budget).unwrap();
        assert_eq!(t.as_slice::<i8>().unwrap(), &[1, -2, 127]);
        assert_eq!(to_contents(&t).unwrap().int_contents, vec![1, -2, 127]);
        let c = InferTensorContents { int_contents: vec![300], ..Default::default() };
        assert!(from_contents("x", DataType::Int8, &[1], c, &limits(), &budget)
            .unwrap_err()
            .message
            .contains("out of range"));
        let c = InferTensorContents { fp32_contents: vec![1.0], ..Default::default() };
        assert!(from_contents("x", DataType::Int64, &[1], c, &limits(), &budget).is_err());
        let c = InferTensorContents { fp32_contents: vec![1.0], ..Default::default() };
        assert!(from_contents("x", DataType::Float, &[2], c, &limits(), &budget)
            .unwrap_err()
            .message
            .contains("holds 2"));
        let c = InferTensorContents::default();
        assert!(from_contents("x", DataType::Half, &[0], c, &limits(), &budget).unwrap_err().message.contains("raw"));
    }

    #[test]
    fn json_data_may_be_flat_or_nested_and_must_fill_the_shape() {
        let budget = RequestBudget::unlimited();
        let json = |s: &str| RawValue::from_string(s.to_string()).unwrap();
        let t = from_json("x", DataType::Float, &[2, 2], &json("[[1, 2.5], [3, 4]]"), &limits(), &budget).unwrap();
        assert_eq!(t.as_slice::<f32>().unwrap(), &[1.0, 2.5, 3.0, 4.0]);
        let t = from_json("x", DataType::Int64, &[3], &json("[1,2,3]"), &limits(), &budget).unwrap();
        assert_eq!(t.as_slice::<i64>().unwrap(), &[1, 2, 3]);
        let t = from_json("b", DataType::String, &[1], &json("[\"hi\"]"), &limits(), &budget).unwrap();
        let mut out = String::new();
        write_json_data(&mut out, &t);
        assert_eq!(out, "[\"hi\"]");
        for (dtype, shape, data) in [
            (DataType::Float, &[3][..], "[1, 2]"),
            (DataType::Float, &[1], "[1, 2]"),
            (DataType::Int32, &[1], "[1.5]"),
            (DataType::UInt8, &[1], "[256]"),
            (DataType::Bool, &[1], "[1]"),
            (DataType::Float, &[1], "[\"1\"]"),
            (DataType::Float, &[1], "[{\"a\": 1}]"),
            (DataType::BFloat16, &[1], "[1]"),
        ] {
            let e = from_json("x", dtype, shape, &json(data), &limits(), &budget).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidInput, "{data}: {}", e.message);
        }
        // Deeper than serde_json's recursion limit (128) is refused by the parser itself.
        let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        assert!(from_json("x", DataType::Float, &[1], &json(&deep), &limits(), &budget).is_ok());
    }
}
