//! A Rust client doing what KServe's `grpc_client.py` does: one Predict with a deadline.
//!
//! `cargo run --release --example grpc_client -- [HOST:PORT] [MODEL]`
//! (defaults 127.0.0.1:8500 and half_plus_two, sending x = [[2.0]]).

use std::time::Duration;

use tensorserve::proto::tensorflow as tf;
use tensorserve::proto::tensorflow::serving as pb;
use tensorserve::proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8500".into());
    let model = args.next().unwrap_or_else(|| "half_plus_two".into());
    let mut client = PredictionServiceClient::connect(format!("http://{addr}")).await?;

    let x = tf::TensorProto {
        dtype: tf::DataType::DtFloat as i32,
        tensor_shape: Some(tf::TensorShapeProto {
            dim: vec![tf::tensor_shape_proto::Dim { size: 1, name: String::new() }; 2],
            unknown_rank: false,
        }),
        float_val: vec![2.0],
        ..Default::default()
    };
    let mut request = tonic::Request::new(pb::PredictRequest {
        model_spec: Some(pb::ModelSpec { name: model, signature_name: "serving_default".into(), ..Default::default() }),
        inputs: [("x".to_string(), x)].into_iter().collect(),
        ..Default::default()
    });
    // KServe's sample passes a 10 s deadline.
    request.set_timeout(Duration::from_secs(10));
    let response = client.predict(request).await?.into_inner();
    println!("model_spec: {:?}", response.model_spec);
    for (name, tensor) in &response.outputs {
        let dims: Vec<i64> = tensor.tensor_shape.iter().flat_map(|s| s.dim.iter().map(|d| d.size)).collect();
        println!("{name}: dtype={} shape={dims:?} float_val={:?}", tensor.dtype, tensor.float_val);
    }
    Ok(())
}
