//! The load benchmark's ceiling: a bare tonic server answering Predict with a fixed-size reply.
//!
//! It decodes the request and returns a PredictResponse of the same shape as
//! half_plus_two's, without any model work, on the same transport settings as tensorserve.

use tensorserve::proto::tensorflow as tf;
use tensorserve::proto::tensorflow::serving as pb;
use tensorserve::proto::tensorflow::serving::prediction_service_server::{PredictionService, PredictionServiceServer};
use tonic::{Request, Response, Status};

struct Echo;

#[tonic::async_trait]
impl PredictionService for Echo {
    async fn classify(&self, _: Request<pb::ClassificationRequest>) -> Result<Response<pb::ClassificationResponse>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn regress(&self, _: Request<pb::RegressionRequest>) -> Result<Response<pb::RegressionResponse>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn predict(&self, request: Request<pb::PredictRequest>) -> Result<Response<pb::PredictResponse>, Status> {
        let request = request.into_inner();
        // Echo each input back under the name "y" with the same shape, like a model would.
        let outputs = request.inputs.into_iter().map(|(_, t)| ("y".to_string(), tf::TensorProto { version_number: 0, ..t })).collect();
        Ok(Response::new(pb::PredictResponse { outputs, model_spec: request.model_spec }))
    }
    async fn multi_inference(&self, _: Request<pb::MultiInferenceRequest>) -> Result<Response<pb::MultiInferenceResponse>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn get_model_metadata(&self, _: Request<pb::GetModelMetadataRequest>) -> Result<Response<pb::GetModelMetadataResponse>, Status> {
        Err(Status::unimplemented(""))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let port: u16 = std::env::args().nth(1).map(|p| p.parse()).transpose()?.unwrap_or(8600);
    let runtime = tensorserve::server::runtime()?;
    runtime.block_on(async move {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        eprintln!("echo ceiling on {addr}");
        tensorserve::server::transport()
            .add_service(PredictionServiceServer::new(Echo))
            .serve_with_shutdown(addr, tensorserve::server::shutdown_signal())
            .await?;
        Ok(())
    })
}
