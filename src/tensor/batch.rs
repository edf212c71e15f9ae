//! Batch operations along dimension 0: requests are concatenated into one run (padded up to an
//! allowed batch size), and the run's outputs are split back into one tensor per request.
//!
//! Splitting never copies numeric values: an owned buffer becomes shared bytes once, and each
//! request's rows are a slice of them.

use bytes::Bytes;

use super::{Buffer, Element, Repr, Tensor, TensorData, VecElement};

/// Why tensors cannot be batched or split.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    /// A scalar has no batch dimension.
    #[error("a scalar tensor has no batch dimension")]
    Scalar,
    /// Nothing to concatenate.
    #[error("no tensors to concatenate")]
    Empty,
    /// Parts of different element types.
    #[error("element types differ: {0} and {1}")]
    DType(&'static str, &'static str),
    /// Parts whose dimensions after the first differ.
    #[error("shapes differ after dimension 0: {0:?} and {1:?}")]
    Shape(Vec<usize>, Vec<usize>),
    /// A split asks for more rows than the tensor has.
    #[error("{wanted} rows asked of a tensor with {rows}")]
    Rows {
        /// Rows asked for in all.
        wanted: usize,
        /// Rows the tensor has.
        rows: usize,
    },
    /// Padding with no row to repeat.
    #[error("cannot pad a batch of zero rows")]
    PadEmpty,
}

/// The number of rows (dimension 0) of a tensor, and the elements in one row.
fn rows_of(t: &Tensor) -> Result<(usize, usize), BatchError> {
    match t.shape().split_first() {
        None => Err(BatchError::Scalar),
        Some((rows, rest)) => Ok((*rows, rest.iter().product())),
    }
}

/// Concatenates `parts` along dimension 0, then pads to `rows` rows (when more than the parts
/// hold) by repeating the first row, as TF Serving's batcher pads to an allowed batch size.
pub fn concat_rows(parts: &[&Tensor], rows: usize) -> Result<Tensor, BatchError> {
    let first = parts.first().ok_or(BatchError::Empty)?;
    rows_of(first)?;
    let mut total = 0;
    for p in parts {
        if p.dtype() != first.dtype() {
            return Err(BatchError::DType(first.dtype().name(), p.dtype().name()));
        }
        if p.shape().is_empty() || p.shape()[1..] != first.shape()[1..] {
            return Err(BatchError::Shape(first.shape().to_vec(), p.shape().to_vec()));
        }
        total += p.shape()[0];
    }
    let rows = rows.max(total);
    let row_len: usize = first.shape()[1..].iter().product();
    if rows > total && total == 0 {
        return Err(BatchError::PadEmpty);
    }
    let data = crate::dispatch_data!(first.data(),
        b => concat_numeric(b, parts, rows * row_len, row_len),
        v => concat_vec(v, parts, rows * row_len, row_len));
    let mut shape = first.shape().to_vec();
    shape[0] = rows;
    Ok(Tensor { shape, data })
}

fn concat_numeric<T: Element>(_: &Buffer<T>, parts: &[&Tensor], len: usize, row_len: usize) -> TensorData {
    let mut out: Vec<T> = Vec::with_capacity(len);
    for p in parts {
        // Every part was checked to hold T.
        out.extend_from_slice(p.as_slice::<T>().unwrap_or_default());
    }
    pad(&mut out, len, row_len);
    T::wrap(Buffer::from_vec(out))
}

fn concat_vec<E: VecElement>(_: &[E], parts: &[&Tensor], len: usize, row_len: usize) -> TensorData {
    let mut out: Vec<E> = Vec::with_capacity(len);
    for p in parts {
        out.extend_from_slice(E::unwrap(p.data()).map(Vec::as_slice).unwrap_or_default());
    }
    pad(&mut out, len, row_len);
    E::wrap(out)
}

/// Repeats the first row of `out` until it holds `len` values.
fn pad<E: Clone>(out: &mut Vec<E>, len: usize, row_len: usize) {
    while out.len() < len && row_len > 0 {
        let take = row_len.min(len - out.len());
        out.extend_from_within(..take);
    }
}

/// Splits `t` along dimension 0 into tensors of `rows[i]` rows each, in order; rows past their
/// sum (padding) are dropped. Numeric values are shared, not copied.
pub fn split_rows(t: Tensor, rows: &[usize]) -> Result<Vec<Tensor>, BatchError> {
    let (have, row_len) = rows_of(&t)?;
    let wanted: usize = rows.iter().sum();
    if wanted > have {
        return Err(BatchError::Rows { wanted, rows: have });
    }
    let (shape, data) = t.into_parts();
    let parts: Vec<TensorData> = crate::dispatch_data!(data,
        b => split_numeric(b, rows, row_len),
        v => split_vec(v, rows, row_len));
    Ok(parts
        .into_iter()
        .zip(rows)
        .map(|(data, &n)| {
            let mut shape = shape.clone();
            shape[0] = n;
            Tensor { shape, data }
        })
        .collect())
}

/// An owned vector seen as bytes, so `Bytes` can share it without a copy.
struct VecBytes<T: bytemuck::Pod>(Vec<T>);

impl<T: bytemuck::Pod> AsRef<[u8]> for VecBytes<T> {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

fn split_numeric<T: Element>(b: Buffer<T>, rows: &[usize], row_len: usize) -> Vec<TensorData> {
    let bytes = match b.0 {
        Repr::Shared(bytes) => bytes,
        Repr::Owned(v) => Bytes::from_owner(VecBytes(v)),
    };
    let size = std::mem::size_of::<T>();
    let mut start = 0;
    rows.iter()
        .map(|&n| {
            let end = start + n * row_len * size;
            // Offsets are whole elements of an aligned start, so each slice stays aligned.
            let part = Buffer(Repr::Shared(bytes.slice(start..end)));
            start = end;
            T::wrap(part)
        })
        .collect()
}

fn split_vec<E: VecElement>(v: Vec<E>, rows: &[usize], row_len: usize) -> Vec<TensorData> {
    let mut values = v.into_iter();
    rows.iter().map(|&n| E::wrap(values.by_ref().take(n * row_len).collect())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::DataType;
    use half::{bf16, f16};

    fn numeric<T: Element + From<u8>>(shape: Vec<usize>, start: u8) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor::from_vec(shape, (0..n).map(|i| T::from(start + i as u8)).collect()).unwrap()
    }

    /// One tensor of each dtype with `rows` rows of 3 values, numbered from `start`.
    fn every_dtype(rows: usize, start: u8) -> Vec<Tensor> {
        let shape = vec![rows, 3];
        let n = rows * 3;
        let mut all = vec![
            numeric::<f32>(shape.clone(), start),
            numeric::<f64>(shape.clone(), start),
            Tensor::from_vec(shape.clone(), (0..n).map(|i| (start as usize + i) as i8).collect()).unwrap(),
            numeric::<i16>(shape.clone(), start),
            numeric::<i32>(shape.clone(), start),
            numeric::<i64>(shape.clone(), start),
            numeric::<u8>(shape.clone(), start),
            numeric::<u16>(shape.clone(), start),
            numeric::<u32>(shape.clone(), start),
            numeric::<u64>(shape.clone(), start),
            Tensor::from_vec(shape.clone(), (0..n).map(|i| f16::from_f32((start as usize + i) as f32)).collect())
                .unwrap(),
            Tensor::from_vec(shape.clone(), (0..n).map(|i| bf16::from_f32((start as usize + i) as f32)).collect())
                .unwrap(),
            Tensor::from_bools(shape.clone(), (0..n).map(|i| (start as usize + i).is_multiple_of(2)).collect())
                .unwrap(),
            Tensor::from_strings(shape, (0..n).map(|i| Bytes::from(format!("s{}", start as usize + i))).collect())
                .unwrap(),
        ];
        all.sort_by_key(|t| t.dtype().to_proto());
        all
    }

    fn same(a: &Tensor, b: &Tensor) -> bool {
        a.shape() == b.shape() && values(a) == values(b)
    }

    fn values(t: &Tensor) -> Vec<String> {
        crate::dispatch_data!(t.data(),
            b => b.as_slice().iter().map(|x| format!("{x:?}")).collect(),
            v => v.iter().map(|x| format!("{x:?}")).collect())
    }

    #[test]
    fn concat_then_split_round_trips_every_dtype() {
        let a = every_dtype(2, 0);
        let b = every_dtype(1, 6);
        let c = every_dtype(3, 9);
        assert_eq!(a.len(), DataType::ALL.len());
        for i in 0..a.len() {
            let joined = concat_rows(&[&a[i], &b[i], &c[i]], 0).unwrap();
            assert_eq!(joined.shape(), &[6, 3]);
            assert_eq!(joined.dtype(), a[i].dtype());
            assert_eq!(values(&joined), values(&every_dtype(6, 0)[i]), "{:?}", a[i].dtype());
            let parts = split_rows(joined, &[2, 1, 3]).unwrap();
            assert!(same(&parts[0], &a[i]) && same(&parts[1], &b[i]) && same(&parts[2], &c[i]), "{:?}", a[i].dtype());
        }
    }

    #[test]
    fn pads_with_the_first_row_and_split_drops_the_padding() {
        let a = Tensor::from_vec(vec![2, 2], vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
        let b = Tensor::from_vec(vec![1, 2], vec![5.0f32, 6.0]).unwrap();
        let padded = concat_rows(&[&a, &b], 5).unwrap();
        assert_eq!(padded.shape(), &[5, 2]);
        assert_eq!(padded.as_slice::<f32>().unwrap(), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 1.0, 2.0, 1.0, 2.0]);
        let parts = split_rows(padded, &[2, 1]).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].as_slice::<f32>().unwrap(), &[5.0, 6.0]);
        let s = Tensor::from_strings(vec![1], vec![Bytes::from_static(b"x")]).unwrap();
        let padded = concat_rows(&[&s], 3).unwrap();
        assert_eq!(values(&padded), vec!["b\"x\""; 3]);
    }

    #[test]
    fn split_shares_the_buffer() {
        let t = Tensor::from_vec(vec![4, 1], vec![1i64, 2, 3, 4]).unwrap();
        let parts = split_rows(t, &[1, 3]).unwrap();
        for p in &parts {
            let TensorData::Int64(b) = p.data() else { panic!() };
            assert!(b.is_shared());
        }
        assert_eq!(parts[1].as_slice::<i64>().unwrap(), &[2, 3, 4]);
        // Rows of zero values (shape [n, 0]) split too.
        let empty = Tensor::from_vec::<f32>(vec![3, 0], vec![]).unwrap();
        let parts = split_rows(empty, &[1, 2]).unwrap();
        assert_eq!(parts[1].shape(), &[2, 0]);
    }

    #[test]
    fn refuses_what_cannot_batch() {
        let a = Tensor::from_vec(vec![1, 2], vec![1.0f32, 2.0]).unwrap();
        let b = Tensor::from_vec(vec![1, 3], vec![1.0f32, 2.0, 3.0]).unwrap();
        let c = Tensor::from_vec(vec![1, 2], vec![1i32, 2]).unwrap();
        let scalar = Tensor::from_vec(vec![], vec![1.0f32]).unwrap();
        assert!(matches!(concat_rows(&[&a, &b], 0), Err(BatchError::Shape(..))));
        assert!(matches!(concat_rows(&[&a, &c], 0), Err(BatchError::DType(..))));
        assert_eq!(concat_rows(&[&scalar], 0).unwrap_err(), BatchError::Scalar);
        assert_eq!(concat_rows(&[], 0).unwrap_err(), BatchError::Empty);
        assert_eq!(split_rows(a.clone(), &[1, 1]).unwrap_err(), BatchError::Rows { wanted: 2, rows: 1 });
        let none = Tensor::from_vec::<f32>(vec![0, 2], vec![]).unwrap();
        assert_eq!(concat_rows(&[&none], 2).unwrap_err(), BatchError::PadEmpty);
    }
}
