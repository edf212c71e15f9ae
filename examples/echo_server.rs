//! The load benchmark's ceiling: a bare tonic server answering Predict with a fixed-size reply.
//!
//! It decodes the request and returns a PredictResponse of the same shape as
//! half_plus_two's, without any model work, on the same transport settings as tensorserve.

use tensorserve::proto::tensorflow as tf;
use tensorserve::proto::tensorflow::serving as pb;
use tensorserve::proto::tensorflow::serving::prediction_service_server::{PredictionService, PredictionServiceServer};
use tonic::{Request, Response, Status};

// The same allocator as the tensorserve binary, so the comparison is like for like.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Echo;

#[tonic::async_trait]
impl PredictionService for Echo {
    async fn classify(
        &self,
        _: Request<pb::ClassificationRequest>,
    ) -> Result<Response<pb::ClassificationResponse>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn regress(&self, _: Request<pb::RegressionRequest>) -> Result<Response<pb::RegressionResponse>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn predict(&self, request: Request<pb::PredictRequest>) -> Result<Response<pb::PredictResponse>, Status> {
        let request = request.into_inner();
        // Echo each input back under the name "y" with the same shape, like a model would.
        let outputs = request
            .inputs
            .into_values()
            .map(|t| ("y".to_string(), tf::TensorProto { version_number: 0, ..t }))
            .collect();
        Ok(Response::new(pb::PredictResponse { outputs, model_spec: request.model_spec }))
    }
    async fn multi_inference(
        &self,
        _: Request<pb::MultiInferenceRequest>,
    ) -> Result<Response<pb::MultiInferenceResponse>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn get_model_metadata(
        &self,
        _: Request<pb::GetModelMetadataRequest>,
    ) -> Result<Response<pb::GetModelMetadataResponse>, Status> {
        Err(Status::unimplemented(""))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // echo_server [PORT] [THREADS]: THREADS > 0 mirrors --grpc_runtime_threads (one runtime and listener per thread).
    let port: u16 = std::env::args().nth(1).map(|p| p.parse()).transpose()?.unwrap_or(8600);
    let threads: usize = std::env::args().nth(2).map(|p| p.parse()).transpose()?.unwrap_or(0);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    eprintln!("echo ceiling on {addr}, threads={threads}");
    if threads == 0 {
        let runtime = tensorserve::server::runtime()?;
        return runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            serve(listener).await
        });
    }
    let mut handles = Vec::new();
    for _ in 0..threads {
        handles.push(std::thread::spawn(move || -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async move { serve(tensorserve::server::bind_reuseport(addr)?).await })
        }));
    }
    for h in handles {
        h.join().map_err(|_| "echo thread panicked")??;
    }
    Ok(())
}

async fn serve(listener: tokio::net::TcpListener) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tensorserve::server::transport()
        .add_service(PredictionServiceServer::new(Echo))
        .serve_with_incoming_shutdown(incoming, tensorserve::server::shutdown_signal())
        .await?;
    Ok(())
}
