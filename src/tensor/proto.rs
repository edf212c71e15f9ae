//! `TensorProto` <-> [`Tensor`], with TensorFlow's rules (`Tensor::FromProto`).
//!
//! Decoding checks the declared shape and its byte size against a limit before
//! any buffer sized by the request is made, accepts both `tensor_content` and the
//! typed `*_val` fields, and borrows aligned `tensor_content` instead of copying.

use bytes::{Buf, Bytes};
use half::{bf16, f16};

use super::{proto_dtype_name, Buffer, DataType, Element, Tensor, TensorData};
use crate::error::{Code, ErrorKind, ServingError};
use crate::memory::RequestBudget;
use crate::proto::tensorflow::{tensor_shape_proto, TensorProto, TensorShapeProto};

/// TensorFlow's limit on the rank of a tensor.
pub const MAX_DIMS: usize = 254;

/// Why a `TensorProto` was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// INVALID_ARGUMENT for malformed protos, RESOURCE_EXHAUSTED for oversized ones.
    pub code: Code,
    /// What was wrong, for the client.
    pub detail: String,
    /// What went wrong (TooLarge when a limit refused the tensor).
    pub kind: ErrorKind,
}

impl DecodeError {
    fn invalid(detail: impl Into<String>) -> Self {
        DecodeError { code: Code::InvalidArgument, detail: detail.into(), kind: ErrorKind::InvalidInput }
    }

    /// The error for the client, its detail wrapped by `context` (TF's `tensor parsing error: x (...)`).
    pub fn into_serving(self, context: impl FnOnce(&str) -> String) -> ServingError {
        ServingError::new(self.code, context(&self.detail)).with_kind(self.kind)
    }
}

impl From<ServingError> for DecodeError {
    fn from(e: ServingError) -> Self {
        DecodeError { code: e.code, detail: e.message, kind: e.kind }
    }
}

/// Limits applied while decoding.
#[derive(Clone, Copy, Debug)]
pub struct DecodeLimits {
    /// Largest decoded size in bytes one tensor may have (strings count 32 bytes each).
    pub max_tensor_bytes: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits { max_tensor_bytes: i32::MAX as usize }
    }
}

/// Checks a proto shape and returns it with its element count.
pub fn decode_shape(shape: Option<&TensorShapeProto>) -> Result<(Vec<usize>, usize), DecodeError> {
    let Some(shape) = shape else { return Ok((Vec::new(), 1)) };
    if shape.dim.len() > MAX_DIMS {
        return Err(DecodeError::invalid(format!(
            "shape has {} dimensions, more than the maximum of {MAX_DIMS}",
            shape.dim.len()
        )));
    }
    let mut dims = Vec::with_capacity(shape.dim.len());
    let mut count: u64 = 1;
    for d in &shape.dim {
        if d.size < 0 {
            return Err(DecodeError::invalid(format!("dimension {} is negative", d.size)));
        }
        count = count
            .checked_mul(d.size as u64)
            .filter(|c| *c <= i64::MAX as u64)
            .ok_or_else(|| DecodeError::invalid("the shape's element count overflows int64"))?;
        dims.push(d.size as usize);
    }
    let count = usize::try_from(count).map_err(|_| DecodeError::invalid("the shape's element count overflows"))?;
    Ok((dims, count))
}

/// Builds the proto shape of `dims`.
pub fn encode_shape(dims: &[usize]) -> TensorShapeProto {
    TensorShapeProto {
        dim: dims.iter().map(|&size| tensor_shape_proto::Dim { size: size as i64, name: String::new() }).collect(),
        unknown_rank: false,
    }
}

/// Builds a proto shape from signed dims (-1 for unknown sizes).
pub fn encode_shape_i64(dims: &[i64]) -> TensorShapeProto {
    TensorShapeProto {
        dim: dims.iter().map(|&size| tensor_shape_proto::Dim { size, name: String::new() }).collect(),
        unknown_rank: false,
    }
}

/// Decodes a `TensorProto` outside any request (no memory budget); see [`decode_within`].
pub fn decode(proto: TensorProto, limits: &DecodeLimits) -> Result<Tensor, DecodeError> {
    decode_within(proto, limits, &RequestBudget::unlimited())
}

/// Decodes a `TensorProto`, taking its buffers to avoid copies; whatever it must allocate (a
/// typed-field fill, an unaligned copy, string and bool lists) is charged to `budget` first.
pub fn decode_within(proto: TensorProto, limits: &DecodeLimits, budget: &RequestBudget) -> Result<Tensor, DecodeError> {
    let dtype = DataType::from_proto(proto.dtype)
        .ok_or_else(|| DecodeError::invalid(format!("dtype {} is not supported", proto_dtype_name(proto.dtype))))?;
    let (shape, n) = decode_shape(proto.tensor_shape.as_ref())?;
    let elem_bytes = dtype.size().unwrap_or(std::mem::size_of::<Bytes>());
    let total = (n as u128) * (elem_bytes as u128);
    if total > limits.max_tensor_bytes as u128 {
        return Err(DecodeError {
            code: Code::ResourceExhausted,
            detail: format!(
                "shape {shape:?} of {} needs {total} bytes, more than the limit of {} bytes",
                dtype.name(),
                limits.max_tensor_bytes
            ),
            kind: ErrorKind::TooLarge,
        });
    }
    let total = total as usize;
    let data = if !proto.tensor_content.is_empty() {
        // Aligned numeric content is borrowed; anything else is built anew.
        let borrowed = dtype.size().is_some_and(|size| {
            dtype != DataType::Bool && (proto.tensor_content.as_ptr() as usize).is_multiple_of(size)
        });
        if !borrowed {
            budget.charge(total, || format!("decoding tensor_content of shape {shape:?}"))?;
        }
        from_content(dtype, proto.tensor_content, n, "tensor_content")?
    } else {
        // TensorFlow's rule repeats the last value to fill the shape: a few bytes can ask for gigabytes.
        budget.charge(total, || format!("filling {} values of shape {shape:?}", dtype.name()))?;
        from_typed_fields(dtype, proto, n)
    };
    Tensor::new(shape, data).map_err(|e| DecodeError::invalid(e.to_string()))
}

fn numeric_from_content<T: Element>(content: Bytes, n: usize, what: &str) -> Result<TensorData, DecodeError> {
    let size = std::mem::size_of::<T>();
    if content.len() != n * size {
        return Err(DecodeError::invalid(format!(
            "{what} has {} bytes, expected {} for {n} {} values",
            content.len(),
            n * size,
            T::DTYPE.name()
        )));
    }
    let buffer = match Buffer::<T>::from_bytes_aligned(content.clone()) {
        Some(b) => b,
        None => {
            // Unaligned (or big-endian host): one copy, element by element.
            let values = content.chunks_exact(size).map(|c| bytemuck::pod_read_unaligned::<T>(c)).collect::<Vec<T>>();
            #[cfg(not(target_endian = "little"))]
            compile_error!("tensor_content decoding assumes a little-endian host");
            Buffer::from_vec(values)
        }
    };
    Ok(T::wrap(buffer))
}

/// Little-endian `content` of `n` values of a fixed-size `dtype` (bools one 0/1 byte each),
/// borrowed when aligned; `what` names the field in errors. Strings are TF's varint list.
pub(crate) fn from_content(dtype: DataType, content: Bytes, n: usize, what: &str) -> Result<TensorData, DecodeError> {
    Ok(match dtype {
        DataType::Float => numeric_from_content::<f32>(content, n, what)?,
        DataType::Double => numeric_from_content::<f64>(content, n, what)?,
        DataType::Int8 => numeric_from_content::<i8>(content, n, what)?,
        DataType::Int16 => numeric_from_content::<i16>(content, n, what)?,
        DataType::Int32 => numeric_from_content::<i32>(content, n, what)?,
        DataType::Int64 => numeric_from_content::<i64>(content, n, what)?,
        DataType::UInt8 => numeric_from_content::<u8>(content, n, what)?,
        DataType::UInt16 => numeric_from_content::<u16>(content, n, what)?,
        DataType::UInt32 => numeric_from_content::<u32>(content, n, what)?,
        DataType::UInt64 => numeric_from_content::<u64>(content, n, what)?,
        DataType::Half => numeric_from_content::<f16>(content, n, what)?,
        DataType::BFloat16 => numeric_from_content::<bf16>(content, n, what)?,
        DataType::Bool => {
            if content.len() != n {
                return Err(DecodeError::invalid(format!(
                    "{what} has {} bytes, expected {n} for {n} bool values",
                    content.len()
                )));
            }
            let mut values = Vec::with_capacity(n);
            for &b in content.iter() {
                match b {
                    0 => values.push(false),
                    1 => values.push(true),
                    other => return Err(DecodeError::invalid(format!("bool {what} holds the byte {other}"))),
                }
            }
            TensorData::Bool(values)
        }
        DataType::String => TensorData::String(decode_string_list(content, n)?),
    })
}

/// Reads TensorFlow's string list encoding: `n` varint32 lengths, then the bytes.
fn decode_string_list(mut content: Bytes, n: usize) -> Result<Vec<Bytes>, DecodeError> {
    let bad = || DecodeError::invalid("string tensor_content is not a valid string list");
    // Each length takes at least one byte, so `n` is bounded by the content size.
    if n > content.len() {
        return Err(bad());
    }
    let mut lengths = Vec::with_capacity(n);
    for _ in 0..n {
        let len = prost::encoding::decode_varint(&mut content).map_err(|_| bad())?;
        if len > u32::MAX as u64 {
            return Err(bad());
        }
        lengths.push(len as usize);
    }
    let mut values = Vec::with_capacity(n);
    for len in lengths {
        if len > content.remaining() {
            return Err(bad());
        }
        values.push(content.split_to(len));
    }
    if content.has_remaining() {
        return Err(bad());
    }
    Ok(values)
}

/// Applies TensorFlow's count rule: none -> defaults, too few -> repeat the last, too many -> cut.
fn fit<T: Clone + Default>(mut values: Vec<T>, n: usize) -> Vec<T> {
    if values.len() >= n {
        values.truncate(n);
        return values;
    }
    let fill = values.last().cloned().unwrap_or_default();
    values.resize(n, fill);
    values
}

fn fit_map<S: Copy, T: Clone + Default>(values: &[S], n: usize, f: impl Fn(S) -> T) -> Vec<T> {
    let take = values.len().min(n);
    let mut out = Vec::with_capacity(n);
    out.extend(values[..take].iter().map(|&v| f(v)));
    fit(out, n)
}

fn from_typed_fields(dtype: DataType, p: TensorProto, n: usize) -> TensorData {
    fn wrap<T: Element>(v: Vec<T>) -> TensorData {
        T::wrap(Buffer::from_vec(v))
    }
    match dtype {
        DataType::Float => wrap(fit(p.float_val, n)),
        DataType::Double => wrap(fit(p.double_val, n)),
        DataType::Int32 => wrap(fit(p.int_val, n)),
        // Narrow integer types travel in int_val; TensorFlow truncates them with a cast.
        DataType::Int8 => wrap(fit_map(&p.int_val, n, |v| v as i8)),
        DataType::Int16 => wrap(fit_map(&p.int_val, n, |v| v as i16)),
        DataType::UInt8 => wrap(fit_map(&p.int_val, n, |v| v as u8)),
        DataType::UInt16 => wrap(fit_map(&p.int_val, n, |v| v as u16)),
        DataType::Int64 => wrap(fit(p.int64_val, n)),
        DataType::UInt32 => wrap(fit(p.uint32_val, n)),
        DataType::UInt64 => wrap(fit(p.uint64_val, n)),
        // Half and bfloat16 carry their 16-bit patterns in half_val.
        DataType::Half => wrap(fit_map(&p.half_val, n, |v| f16::from_bits(v as u16))),
        DataType::BFloat16 => wrap(fit_map(&p.half_val, n, |v| bf16::from_bits(v as u16))),
        DataType::Bool => TensorData::Bool(fit(p.bool_val, n)),
        DataType::String => TensorData::String(fit(p.string_val, n)),
    }
}

/// Encodes a tensor; `as_content` selects `tensor_content` over the typed fields.
pub fn encode(tensor: &Tensor, as_content: bool) -> TensorProto {
    let mut p = TensorProto {
        dtype: tensor.dtype().to_proto(),
        tensor_shape: Some(encode_shape(tensor.shape())),
        ..Default::default()
    };
    if as_content {
        if let Some(content) = content_bytes(tensor.data()) {
            p.tensor_content = content;
            return p;
        }
    }
    match tensor.data() {
        TensorData::Float(b) => p.float_val = b.as_slice().to_vec(),
        TensorData::Double(b) => p.double_val = b.as_slice().to_vec(),
        TensorData::Int32(b) => p.int_val = b.as_slice().to_vec(),
        TensorData::Int8(b) => p.int_val = b.as_slice().iter().map(|&v| v as i32).collect(),
        TensorData::Int16(b) => p.int_val = b.as_slice().iter().map(|&v| v as i32).collect(),
        TensorData::UInt8(b) => p.int_val = b.as_slice().iter().map(|&v| v as i32).collect(),
        TensorData::UInt16(b) => p.int_val = b.as_slice().iter().map(|&v| v as i32).collect(),
        TensorData::Int64(b) => p.int64_val = b.as_slice().to_vec(),
        TensorData::UInt32(b) => p.uint32_val = b.as_slice().to_vec(),
        TensorData::UInt64(b) => p.uint64_val = b.as_slice().to_vec(),
        TensorData::Half(b) => p.half_val = b.as_slice().iter().map(|v| v.to_bits() as i32).collect(),
        TensorData::BFloat16(b) => p.half_val = b.as_slice().iter().map(|v| v.to_bits() as i32).collect(),
        TensorData::Bool(v) => p.bool_val = v.clone(),
        TensorData::String(v) => p.string_val = v.clone(),
    }
    p
}

/// Encodes a tensor it owns: owned buffers move into the typed fields instead of being copied.
pub fn encode_owned(tensor: Tensor, as_content: bool) -> TensorProto {
    if as_content {
        return encode(&tensor, true);
    }
    let (shape, data) = tensor.into_parts();
    let mut p =
        TensorProto { dtype: data.dtype().to_proto(), tensor_shape: Some(encode_shape(&shape)), ..Default::default() };
    match data {
        TensorData::Float(b) => p.float_val = b.into_vec(),
        TensorData::Double(b) => p.double_val = b.into_vec(),
        TensorData::Int32(b) => p.int_val = b.into_vec(),
        TensorData::Int64(b) => p.int64_val = b.into_vec(),
        TensorData::UInt32(b) => p.uint32_val = b.into_vec(),
        TensorData::UInt64(b) => p.uint64_val = b.into_vec(),
        TensorData::Bool(v) => p.bool_val = v,
        TensorData::String(v) => p.string_val = v,
        other => {
            let t = Tensor::new(shape, other).expect("parts of a valid tensor");
            return encode(&t, false);
        }
    }
    p
}

/// Little-endian bytes of a numeric or bool tensor; strings keep string_val, which every client reads.
fn content_bytes(data: &TensorData) -> Option<Bytes> {
    fn le<T: Element>(b: &Buffer<T>) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(bytemuck::cast_slice(b.as_slice())))
    }
    match data {
        TensorData::Bool(v) => Some(Bytes::from(v.iter().map(|&b| b as u8).collect::<Vec<u8>>())),
        TensorData::String(_) => None,
        numeric => crate::dispatch_data!(numeric, b => le(b), _v => None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(dims: &[i64]) -> Option<TensorShapeProto> {
        Some(TensorShapeProto {
            dim: dims.iter().map(|&size| tensor_shape_proto::Dim { size, name: String::new() }).collect(),
            unknown_rank: false,
        })
    }

    fn limits() -> DecodeLimits {
        DecodeLimits::default()
    }

    #[test]
    fn typed_float_values_follow_the_count_rules() {
        let mut p = TensorProto { dtype: 1, tensor_shape: shape(&[2, 2]), ..Default::default() };
        // none -> zeros
        let t = decode(p.clone(), &limits()).unwrap();
        assert_eq!(t.as_slice::<f32>().unwrap(), &[0.0; 4]);
        // fewer -> repeat the last
        p.float_val = vec![1.0, 2.0];
        let t = decode(p.clone(), &limits()).unwrap();
        assert_eq!(t.as_slice::<f32>().unwrap(), &[1.0, 2.0, 2.0, 2.0]);
        // more -> extras dropped
        p.float_val = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let t = decode(p, &limits()).unwrap();
        assert_eq!(t.as_slice::<f32>().unwrap(), &[1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn a_missing_shape_is_a_scalar() {
        let p = TensorProto { dtype: 9, int64_val: vec![7], ..Default::default() };
        let t = decode(p, &limits()).unwrap();
        assert!(t.shape().is_empty());
        assert_eq!(t.as_slice::<i64>().unwrap(), &[7]);
    }

    #[test]
    fn zero_sized_dims_read_no_values() {
        let p = TensorProto { dtype: 1, tensor_shape: shape(&[0, 3]), float_val: vec![1.0], ..Default::default() };
        let t = decode(p, &limits()).unwrap();
        assert_eq!(t.shape(), &[0, 3]);
        assert!(t.is_empty());
    }

    #[test]
    fn tensor_content_must_match_the_shape_exactly() {
        let content = Bytes::from(bytemuck::cast_slice::<f32, u8>(&[1.0, 2.0, 3.0]).to_vec());
        let p =
            TensorProto { dtype: 1, tensor_shape: shape(&[3]), tensor_content: content.clone(), ..Default::default() };
        let t = decode(p, &limits()).unwrap();
        assert_eq!(t.as_slice::<f32>().unwrap(), &[1.0, 2.0, 3.0]);
        let p =
            TensorProto { dtype: 1, tensor_shape: shape(&[4]), tensor_content: content.clone(), ..Default::default() };
        assert_eq!(decode(p, &limits()).unwrap_err().code, Code::InvalidArgument);
        // tensor_content wins over the typed fields.
        let p = TensorProto {
            dtype: 1,
            tensor_shape: shape(&[3]),
            tensor_content: content,
            float_val: vec![9.0],
            ..Default::default()
        };
        assert_eq!(decode(p, &limits()).unwrap().as_slice::<f32>().unwrap(), &[1.0, 2.0, 3.0]);
    }

    #[test]
    fn unaligned_tensor_content_is_copied() {
        let mut raw = vec![0u8];
        raw.extend_from_slice(bytemuck::cast_slice::<f64, u8>(&[1.5, -2.5]));
        let content = Bytes::from(raw).slice(1..);
        let p = TensorProto { dtype: 2, tensor_shape: shape(&[2]), tensor_content: content, ..Default::default() };
        let t = decode(p, &limits()).unwrap();
        assert_eq!(t.as_slice::<f64>().unwrap(), &[1.5, -2.5]);
    }

    #[test]
    fn aligned_tensor_content_is_borrowed() {
        let values: Vec<i32> = (0..16).collect();
        let content = Bytes::from(bytemuck::cast_slice::<i32, u8>(&values).to_vec());
        let ptr = content.as_ptr();
        let p = TensorProto { dtype: 3, tensor_shape: shape(&[4, 4]), tensor_content: content, ..Default::default() };
        let t = decode(p, &limits()).unwrap();
        assert_eq!(t.as_slice::<i32>().unwrap().as_ptr() as *const u8, ptr);
        assert_eq!(t.view::<i32>().unwrap()[[3, 3]], 15);
    }

    #[test]
    fn every_dtype_round_trips_both_encodings() {
        for dtype in DataType::ALL {
            let p = TensorProto {
                dtype: dtype.to_proto(),
                tensor_shape: shape(&[3]),
                float_val: vec![1.0, 2.0, 3.0],
                double_val: vec![1.0, 2.0, 3.0],
                int_val: vec![1, 2, 3],
                int64_val: vec![1, 2, 3],
                uint32_val: vec![1, 2, 3],
                uint64_val: vec![1, 2, 3],
                bool_val: vec![true, false, true],
                string_val: vec![Bytes::from_static(b"a"), Bytes::from_static(b""), Bytes::from_static(b"ccc")],
                half_val: vec![0x3c00, 0x4000, 0x4200],
                ..Default::default()
            };
            let t = decode(p, &limits()).unwrap();
            assert_eq!(t.dtype(), dtype);
            for as_content in [false, true] {
                let encoded = encode(&t, as_content);
                assert_eq!(encoded.dtype, dtype.to_proto());
                if as_content && dtype != DataType::String {
                    assert!(!encoded.tensor_content.is_empty(), "{dtype:?}");
                }
                let back = decode(encoded, &limits()).unwrap();
                assert_eq!(format!("{:?}", back.data().len()), "3");
                assert_eq!(encode(&back, false), encode(&t, false), "{dtype:?} as_content={as_content}");
            }
        }
    }

    #[test]
    fn half_values_are_bit_patterns() {
        let p =
            TensorProto { dtype: 19, tensor_shape: shape(&[2]), half_val: vec![0x3c00, 0xc000], ..Default::default() };
        let t = decode(p, &limits()).unwrap();
        let v = t.as_slice::<f16>().unwrap();
        assert_eq!(v[0].to_f32(), 1.0);
        assert_eq!(v[1].to_f32(), -2.0);
        let p = TensorProto { dtype: 14, tensor_shape: shape(&[1]), half_val: vec![0x3f80], ..Default::default() };
        assert_eq!(decode(p, &limits()).unwrap().as_slice::<bf16>().unwrap()[0].to_f32(), 1.0);
    }

    #[test]
    fn string_lists_in_tensor_content() {
        let content = Bytes::from_static(b"\x02\x00\x03hiabc");
        let p = TensorProto { dtype: 7, tensor_shape: shape(&[3]), tensor_content: content, ..Default::default() };
        let t = decode(p, &limits()).unwrap();
        let s = t.view_strings().unwrap();
        assert_eq!(s[[0]], Bytes::from_static(b"hi"));
        assert_eq!(s[[1]], Bytes::new());
        assert_eq!(s[[2]], Bytes::from_static(b"abc"));
        let bad = TensorProto {
            dtype: 7,
            tensor_shape: shape(&[2]),
            tensor_content: Bytes::from_static(b"\x05ab"),
            ..Default::default()
        };
        assert!(decode(bad, &limits()).is_err());
    }

    #[test]
    fn bad_bools_and_shapes_are_refused() {
        let p = TensorProto {
            dtype: 10,
            tensor_shape: shape(&[2]),
            tensor_content: Bytes::from_static(b"\x01\x02"),
            ..Default::default()
        };
        assert!(decode(p, &limits()).is_err());
        let p = TensorProto { dtype: 1, tensor_shape: shape(&[-1]), ..Default::default() };
        assert_eq!(decode(p, &limits()).unwrap_err().code, Code::InvalidArgument);
        let p = TensorProto { dtype: 1, tensor_shape: shape(&vec![1; 255]), ..Default::default() };
        assert_eq!(decode(p, &limits()).unwrap_err().code, Code::InvalidArgument);
        let p = TensorProto { dtype: 1, tensor_shape: shape(&[1 << 40, 1 << 40]), ..Default::default() };
        assert_eq!(decode(p, &limits()).unwrap_err().code, Code::InvalidArgument);
        let p = TensorProto { dtype: 0, ..Default::default() };
        assert_eq!(decode(p, &limits()).unwrap_err().code, Code::InvalidArgument);
        let p = TensorProto { dtype: 8, ..Default::default() };
        assert!(decode(p, &limits()).unwrap_err().detail.contains("complex64"));
    }

    #[test]
    fn a_shape_bomb_is_refused_before_allocation() {
        let p =
            TensorProto { dtype: 1, tensor_shape: shape(&[1 << 40, 1]), float_val: vec![1.0], ..Default::default() };
        let e = decode(p, &limits()).unwrap_err();
        assert_eq!(e.code, Code::ResourceExhausted);
        let small = DecodeLimits { max_tensor_bytes: 1024 };
        let p = TensorProto { dtype: 7, tensor_shape: shape(&[1000]), ..Default::default() };
        assert_eq!(decode(p, &small).unwrap_err().code, Code::ResourceExhausted);
        let p = TensorProto { dtype: 1, tensor_shape: shape(&[256]), ..Default::default() };
        assert!(decode(p, &small).is_ok());
    }
}
