//! The tensor type every layer shares, and its codecs.
//!
//! A [`Tensor`] is a shape plus a typed flat buffer in row-major order; numeric
//! buffers can borrow the request's bytes (`tensor_content`) instead of copying
//! them. [`Tensor::view`] exposes any numeric tensor as an ndarray view.

pub mod batch;
pub mod example;
pub mod image;
pub mod json;
pub mod proto;
pub mod v2;

use bytes::Bytes;
use half::{bf16, f16};
use ndarray::{ArrayD, ArrayViewD, IxDyn};

/// The element types tensorserve carries (a subset of `tensorflow.DataType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataType {
    /// 32-bit float (`DT_FLOAT`).
    Float,
    /// 64-bit float (`DT_DOUBLE`).
    Double,
    /// Signed 8-bit integer.
    Int8,
    /// Signed 16-bit integer.
    Int16,
    /// Signed 32-bit integer.
    Int32,
    /// Signed 64-bit integer.
    Int64,
    /// Unsigned 8-bit integer.
    UInt8,
    /// Unsigned 16-bit integer.
    UInt16,
    /// Unsigned 32-bit integer.
    UInt32,
    /// Unsigned 64-bit integer.
    UInt64,
    /// Boolean.
    Bool,
    /// Byte string (`DT_STRING`; not necessarily UTF-8).
    String,
    /// IEEE 16-bit float (`DT_HALF`).
    Half,
    /// Brain 16-bit float (`DT_BFLOAT16`).
    BFloat16,
}

impl DataType {
    /// Every supported type, for tests and tables.
    pub const ALL: [DataType; 14] = [
        DataType::Float,
        DataType::Double,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::UInt8,
        DataType::UInt16,
        DataType::UInt32,
        DataType::UInt64,
        DataType::Bool,
        DataType::String,
        DataType::Half,
        DataType::BFloat16,
    ];

    /// The `tensorflow.DataType` wire value (`DT_FLOAT` = 1 ...).
    pub fn to_proto(self) -> i32 {
        match self {
            DataType::Float => 1,
            DataType::Double => 2,
            DataType::Int32 => 3,
            DataType::UInt8 => 4,
            DataType::Int16 => 5,
            DataType::Int8 => 6,
            DataType::String => 7,
            DataType::Int64 => 9,
            DataType::Bool => 10,
            DataType::BFloat16 => 14,
            DataType::UInt16 => 17,
            DataType::Half => 19,
            DataType::UInt32 => 22,
            DataType::UInt64 => 23,
        }
    }

    /// Parses a `tensorflow.DataType` wire value; `None` for types we do not carry.
    pub fn from_proto(v: i32) -> Option<DataType> {
        DataType::ALL.into_iter().find(|d| d.to_proto() == v)
    }

    /// TensorFlow's lower-case name (`float`, `int64`, `string`), used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            DataType::Float => "float",
            DataType::Double => "double",
            DataType::Int8 => "int8",
            DataType::Int16 => "int16",
            DataType::Int32 => "int32",
            DataType::Int64 => "int64",
            DataType::UInt8 => "uint8",
            DataType::UInt16 => "uint16",
            DataType::UInt32 => "uint32",
            DataType::UInt64 => "uint64",
            DataType::Bool => "bool",
            DataType::String => "string",
            DataType::Half => "half",
            DataType::BFloat16 => "bfloat16",
        }
    }

    /// Bytes per element in `tensor_content`; `None` for strings.
    pub fn size(self) -> Option<usize> {
        Some(match self {
            DataType::Int8 | DataType::UInt8 | DataType::Bool => 1,
            DataType::Int16 | DataType::UInt16 | DataType::Half | DataType::BFloat16 => 2,
            DataType::Float | DataType::Int32 | DataType::UInt32 => 4,
            DataType::Double | DataType::Int64 | DataType::UInt64 => 8,
            DataType::String => return None,
        })
    }
}

/// Name of a `tensorflow.DataType` wire value, for messages about types we do not carry.
pub fn proto_dtype_name(v: i32) -> String {
    match DataType::from_proto(v) {
        Some(d) => d.name().to_string(),
        None => match v {
            0 => "invalid".into(),
            8 => "complex64".into(),
            18 => "complex128".into(),
            20 => "resource".into(),
            21 => "variant".into(),
            other => format!("DataType({other})"),
        },
    }
}

/// A flat numeric buffer: owned, or borrowed from an aligned region of a request.
#[derive(Clone, Debug)]
pub struct Buffer<T: bytemuck::Pod>(Repr<T>);

#[derive(Clone, Debug)]
enum Repr<T> {
    /// Values decoded or produced by a model.
    Owned(Vec<T>),
    /// Little-endian bytes whose start is aligned for `T` (checked when built).
    Shared(Bytes),
}

impl<T: bytemuck::Pod> Buffer<T> {
    /// Wraps owned values.
    pub fn from_vec(v: Vec<T>) -> Self {
        Buffer(Repr::Owned(v))
    }

    /// Borrows `bytes` when they are aligned for `T` and a whole number of elements.
    pub fn from_bytes_aligned(bytes: Bytes) -> Option<Self> {
        #[cfg(target_endian = "little")]
        {
            bytemuck::try_cast_slice::<u8, T>(&bytes).ok()?;
            Some(Buffer(Repr::Shared(bytes)))
        }
        #[cfg(not(target_endian = "little"))]
        {
            let _ = bytes;
            None
        }
    }

    /// The values.
    pub fn as_slice(&self) -> &[T] {
        match &self.0 {
            Repr::Owned(v) => v,
            // Alignment and length were checked in `from_bytes_aligned`.
            Repr::Shared(b) => bytemuck::cast_slice(b),
        }
    }

    /// True when the buffer borrows request bytes rather than owning a copy.
    pub fn is_shared(&self) -> bool {
        matches!(self.0, Repr::Shared(_))
    }

    /// The values as little-endian bytes, without copying: an owned vector becomes the bytes' owner.
    #[cfg(target_endian = "little")]
    pub fn into_bytes(self) -> Bytes
    where
        T: Send,
    {
        /// Lends a vector's memory to `Bytes`, which frees it with the vector.
        struct Owner<T>(Vec<T>);
        impl<T: bytemuck::Pod> AsRef<[u8]> for Owner<T> {
            fn as_ref(&self) -> &[u8] {
                bytemuck::cast_slice(&self.0)
            }
        }
        match self.0 {
            Repr::Owned(v) => Bytes::from_owner(Owner(v)),
            Repr::Shared(b) => b,
        }
    }

    /// The values as an owned vector (moves when owned, copies when shared).
    pub fn into_vec(self) -> Vec<T> {
        match self.0 {
            Repr::Owned(v) => v,
            Repr::Shared(b) => bytemuck::cast_slice(&b).to_vec(),
        }
    }
}

/// The typed storage of a tensor.
#[derive(Clone, Debug)]
pub enum TensorData {
    /// 32-bit float (`DT_FLOAT`) values.
    Float(Buffer<f32>),
    /// 64-bit float (`DT_DOUBLE`) values.
    Double(Buffer<f64>),
    /// Signed 8-bit integer values.
    Int8(Buffer<i8>),
    /// Signed 16-bit integer values.
    Int16(Buffer<i16>),
    /// Signed 32-bit integer values.
    Int32(Buffer<i32>),
    /// Signed 64-bit integer values.
    Int64(Buffer<i64>),
    /// Unsigned 8-bit integer values.
    UInt8(Buffer<u8>),
    /// Unsigned 16-bit integer values.
    UInt16(Buffer<u16>),
    /// Unsigned 32-bit integer values.
    UInt32(Buffer<u32>),
    /// Unsigned 64-bit integer values.
    UInt64(Buffer<u64>),
    /// IEEE 16-bit float (`DT_HALF`) values.
    Half(Buffer<f16>),
    /// Brain 16-bit float (`DT_BFLOAT16`) values.
    BFloat16(Buffer<bf16>),
    /// Boolean values.
    Bool(Vec<bool>),
    /// Byte string (`DT_STRING`; not necessarily UTF-8) values.
    String(Vec<Bytes>),
}

/// Matches a [`TensorData`] by storage: `$b` binds the `Buffer<T>` of any numeric type, `$v`
/// the `Vec` of bools or strings; each arm's expression is compiled for its own element type.
#[macro_export]
macro_rules! dispatch_data {
    ($data:expr, $b:ident => $numeric:expr, $v:ident => $vec:expr) => {{
        use $crate::tensor::TensorData as D;
        match $data {
            D::Float($b) => $numeric,
            D::Double($b) => $numeric,
            D::Int8($b) => $numeric,
            D::Int16($b) => $numeric,
            D::Int32($b) => $numeric,
            D::Int64($b) => $numeric,
            D::UInt8($b) => $numeric,
            D::UInt16($b) => $numeric,
            D::UInt32($b) => $numeric,
            D::UInt64($b) => $numeric,
            D::Half($b) => $numeric,
            D::BFloat16($b) => $numeric,
            D::Bool($v) => $vec,
            D::String($v) => $vec,
        }
    }};
}

/// An element type stored in a plain vector (bool, strings) rather than a [`Buffer`].
pub(crate) trait VecElement: Clone + Sized {
    /// The matching dtype.
    const DTYPE: DataType;
    /// Wraps a vector of this type.
    fn wrap(values: Vec<Self>) -> TensorData;
    /// Borrows the vector when `data` holds this type.
    fn unwrap(data: &TensorData) -> Option<&Vec<Self>>;
}

macro_rules! vec_element {
    ($t:ty, $variant:ident) => {
        impl VecElement for $t {
            const DTYPE: DataType = DataType::$variant;
            fn wrap(values: Vec<Self>) -> TensorData {
                TensorData::$variant(values)
            }
            fn unwrap(data: &TensorData) -> Option<&Vec<Self>> {
                match data {
                    TensorData::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}

vec_element!(bool, Bool);
vec_element!(Bytes, String);

/// A numeric element type with a fixed-size little-endian encoding.
pub trait Element: bytemuck::Pod + Send + Sync + 'static {
    /// The matching dtype.
    const DTYPE: DataType;
    /// Wraps a buffer of this type.
    fn wrap(buffer: Buffer<Self>) -> TensorData;
    /// Borrows the buffer when `data` holds this type.
    fn unwrap(data: &TensorData) -> Option<&Buffer<Self>>;
    /// Takes the buffer when `data` holds this type.
    fn unwrap_owned(data: TensorData) -> Option<Buffer<Self>>;
}

macro_rules! element {
    ($t:ty, $variant:ident) => {
        impl Element for $t {
            const DTYPE: DataType = DataType::$variant;
            fn wrap(buffer: Buffer<Self>) -> TensorData {
                TensorData::$variant(buffer)
            }
            fn unwrap(data: &TensorData) -> Option<&Buffer<Self>> {
                match data {
                    TensorData::$variant(b) => Some(b),
                    _ => None,
                }
            }
            fn unwrap_owned(data: TensorData) -> Option<Buffer<Self>> {
                match data {
                    TensorData::$variant(b) => Some(b),
                    _ => None,
                }
            }
        }
    };
}

element!(f32, Float);
element!(f64, Double);
element!(i8, Int8);
element!(i16, Int16);
element!(i32, Int32);
element!(i64, Int64);
element!(u8, UInt8);
element!(u16, UInt16);
element!(u32, UInt32);
element!(u64, UInt64);
element!(f16, Half);
element!(bf16, BFloat16);

/// A dense tensor: a shape and row-major values.
#[derive(Clone, Debug)]
pub struct Tensor {
    /// Dimension sizes; empty for a scalar.
    shape: Vec<usize>,
    /// The values; their count is the product of `shape`.
    data: TensorData,
}

/// Why a tensor could not be built from parts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("shape {shape:?} holds {expected} elements but {actual} values were given")]
pub struct ShapeMismatch {
    /// The shape asked for.
    pub shape: Vec<usize>,
    /// The element count it needs.
    pub expected: usize,
    /// The values given.
    pub actual: usize,
}

fn element_count(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    /// Builds a tensor from a shape and storage, checking the element count.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Tensor, ShapeMismatch> {
        let expected = element_count(&shape);
        let actual = data.len();
        if expected != actual {
            return Err(ShapeMismatch { shape, expected, actual });
        }
        Ok(Tensor { shape, data })
    }

    /// Builds a numeric tensor from a shape and owned values.
    pub fn from_vec<T: Element>(shape: Vec<usize>, values: Vec<T>) -> Result<Tensor, ShapeMismatch> {
        Tensor::new(shape, T::wrap(Buffer::from_vec(values)))
    }

    /// Builds a numeric tensor from an ndarray (any layout).
    pub fn from_array<T: Element>(array: ArrayD<T>) -> Tensor {
        let shape = array.shape().to_vec();
        let values = if array.is_standard_layout() {
            array.into_raw_vec_and_offset().0
        } else {
            array.iter().copied().collect()
        };
        Tensor { shape, data: T::wrap(Buffer::from_vec(values)) }
    }

    /// Builds a string tensor.
    pub fn from_strings(shape: Vec<usize>, values: Vec<Bytes>) -> Result<Tensor, ShapeMismatch> {
        Tensor::new(shape, TensorData::String(values))
    }

    /// Builds a bool tensor.
    pub fn from_bools(shape: Vec<usize>, values: Vec<bool>) -> Result<Tensor, ShapeMismatch> {
        Tensor::new(shape, TensorData::Bool(values))
    }

    /// The element type.
    pub fn dtype(&self) -> DataType {
        self.data.dtype()
    }

    /// The dimension sizes.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when the tensor holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Memory the tensor holds: its values, and for strings their bytes plus one handle each.
    pub fn held_bytes(&self) -> usize {
        match &self.data {
            TensorData::String(v) => v.iter().map(|s| s.len() + std::mem::size_of::<Bytes>()).sum(),
            d => d.len() * d.dtype().size().unwrap_or(1),
        }
    }

    /// The storage.
    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// Splits into shape and storage.
    pub fn into_parts(self) -> (Vec<usize>, TensorData) {
        (self.shape, self.data)
    }

    /// The values as a flat slice, when the tensor holds `T`.
    pub fn as_slice<T: Element>(&self) -> Option<&[T]> {
        T::unwrap(&self.data).map(|b| b.as_slice())
    }

    /// An ndarray view of the values, when the tensor holds `T`; borrows, never copies.
    pub fn view<T: Element>(&self) -> Option<ArrayViewD<'_, T>> {
        let slice = self.as_slice::<T>()?;
        ArrayViewD::from_shape(IxDyn(&self.shape), slice).ok()
    }

    /// An ndarray view of a string tensor.
    pub fn view_strings(&self) -> Option<ArrayViewD<'_, Bytes>> {
        match &self.data {
            TensorData::String(v) => ArrayViewD::from_shape(IxDyn(&self.shape), v).ok(),
            _ => None,
        }
    }

    /// An ndarray view of a bool tensor.
    pub fn view_bools(&self) -> Option<ArrayViewD<'_, bool>> {
        match &self.data {
            TensorData::Bool(v) => ArrayViewD::from_shape(IxDyn(&self.shape), v).ok(),
            _ => None,
        }
    }
}

impl TensorData {
    /// The element type of this storage.
    pub fn dtype(&self) -> DataType {
        fn numeric<T: Element>(_: &Buffer<T>) -> DataType {
            T::DTYPE
        }
        fn vec<E: VecElement>(_: &[E]) -> DataType {
            E::DTYPE
        }
        crate::dispatch_data!(self, b => numeric(b), v => vec(v))
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        crate::dispatch_data!(self, b => b.as_slice().len(), v => v.len())
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_wire_values_round_trip() {
        for d in DataType::ALL {
            assert_eq!(DataType::from_proto(d.to_proto()), Some(d));
        }
        assert_eq!(DataType::from_proto(0), None);
        assert_eq!(DataType::from_proto(8), None);
    }

    #[test]
    fn shared_buffer_borrows_aligned_bytes() {
        let v: Vec<f32> = vec![1.0, 2.0, 3.0];
        let bytes = Bytes::from(bytemuck::cast_slice::<f32, u8>(&v).to_vec());
        let b = Buffer::<f32>::from_bytes_aligned(bytes.clone()).expect("Vec<u8> from a Vec copy is aligned");
        assert!(b.is_shared());
        assert_eq!(b.as_slice(), &[1.0, 2.0, 3.0]);
        assert_eq!(b.as_slice().as_ptr() as *const u8, bytes.as_ptr());
        // A one-byte offset breaks alignment, so the caller must copy.
        let odd = Bytes::from(vec![0u8; 9]).slice(1..9);
        if !(odd.as_ptr() as usize).is_multiple_of(4) {
            assert!(Buffer::<f32>::from_bytes_aligned(odd).is_none());
        }
    }

    #[test]
    fn views_have_the_tensor_shape() {
        let t = Tensor::from_vec(vec![2, 3], (0..6).map(|i| i as f32).collect()).unwrap();
        let v = t.view::<f32>().unwrap();
        assert_eq!(v.shape(), &[2, 3]);
        assert_eq!(v[[1, 2]], 5.0);
        assert!(t.view::<f64>().is_none());
        assert!(Tensor::from_vec(vec![2, 2], vec![1i32]).is_err());
    }
}
