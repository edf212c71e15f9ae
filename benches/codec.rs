//! TensorProto codec cost: decode and encode of 1, 1 k and 1 M floats, typed field vs tensor_content.
//!
//! `cargo bench --bench codec`

#![allow(missing_docs)] // criterion_group! generates an undocumented public function.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use prost::Message;
use tensorserve::proto::tensorflow::{tensor_shape_proto, TensorProto, TensorShapeProto};
use tensorserve::tensor::proto::{decode, encode, DecodeLimits};

fn proto(n: usize, as_content: bool) -> TensorProto {
    let values: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
    let mut p = TensorProto {
        dtype: 1,
        tensor_shape: Some(TensorShapeProto {
            dim: vec![tensor_shape_proto::Dim { size: n as i64, name: String::new() }],
            unknown_rank: false,
        }),
        ..Default::default()
    };
    if as_content {
        p.tensor_content = Bytes::copy_from_slice(bytemuck::cast_slice(&values));
    } else {
        p.float_val = values;
    }
    p
}

fn codec(c: &mut Criterion) {
    let limits = DecodeLimits::default();
    for &n in &[1usize, 1_000, 1_000_000] {
        for (label, as_content) in [("typed", false), ("tensor_content", true)] {
            let wire = Bytes::from(proto(n, as_content).encode_to_vec());
            let mut group = c.benchmark_group(format!("decode_{label}"));
            group.throughput(Throughput::Elements(n as u64));
            // Wire bytes -> prost message -> Tensor, as a request takes.
            group.bench_with_input(BenchmarkId::from_parameter(n), &wire, |b, wire| {
                b.iter(|| {
                    let p = TensorProto::decode(wire.clone()).unwrap();
                    black_box(decode(p, &limits).unwrap())
                })
            });
            group.finish();

            let tensor = decode(proto(n, false), &limits).unwrap();
            let mut group = c.benchmark_group(format!("encode_{label}"));
            group.throughput(Throughput::Elements(n as u64));
            // Tensor -> prost message -> wire bytes, as a response takes.
            group.bench_with_input(BenchmarkId::from_parameter(n), &tensor, |b, t| {
                b.iter(|| black_box(encode(t, as_content).encode_to_vec()))
            });
            group.finish();
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(2));
    targets = codec
}
criterion_main!(benches);
