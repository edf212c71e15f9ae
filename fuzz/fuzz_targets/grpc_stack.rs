//! The whole in-process gRPC stack under the handlers: the request guard (`server::guard`:
//! gRPC framing, the memory budget, the pre-decode estimate), then tonic's framing and prost
//! decoding, then `GrpcApi` and the fixture's models; what a socket would hand to the server.
//!
//! Byte 0: bits 0-2 the method (`METHODS`; 7 is a method we do not serve), bit 3 sends
//! `grpc-encoding: gzip`; byte 1 how the body is cut into chunks as it arrives (0: one chunk);
//! the rest is the HTTP/2 body: gRPC frames (a compression flag, a big-endian u32 length, the
//! message). Every answer must carry a grpc-status, and once answered the request must hold
//! none of the memory pool.
#![no_main]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use tensorserve::api::decode_cost::DecodeCost;
use tensorserve::api::grpc::{ModelServiceServer, PredictionServiceServer};
use tensorserve::server::guard::{GuardState, Guarded};
use tower::ServiceExt;

const METHODS: [&str; 8] = [
    "/tensorflow.serving.PredictionService/Predict",
    "/tensorflow.serving.PredictionService/Classify",
    "/tensorflow.serving.PredictionService/Regress",
    "/tensorflow.serving.PredictionService/MultiInference",
    "/tensorflow.serving.PredictionService/GetModelMetadata",
    "/tensorflow.serving.ModelService/GetModelStatus",
    "/tensorflow.serving.ModelService/HandleReloadConfigRequest",
    "/tensorflow.serving.PredictionService/Nope",
];

/// The largest message the fuzzed server takes (the server's default is 2 GiB).
const MAX_MESSAGE: usize = 1 << 20;

struct Stack {
    prediction: Guarded<PredictionServiceServer<tensorserve::api::grpc::GrpcApi>>,
    model: Guarded<ModelServiceServer<tensorserve::api::grpc::GrpcApi>>,
}

/// Built as `server::GrpcServices::new` builds it, over the fixture's default core.
fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        let fixture = tensorserve_fuzz::fixture();
        let state = Arc::new(GuardState {
            memory: fixture.cores[0].memory().clone(),
            cost: DecodeCost::for_tensorserve(),
            max_message_size: MAX_MESSAGE,
        });
        let api = fixture.grpc[0].clone();
        Stack {
            prediction: Guarded::new(
                PredictionServiceServer::new(api.clone())
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE),
                state.clone(),
            ),
            model: Guarded::new(
                ModelServiceServer::new(api)
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE),
                state,
            ),
        }
    })
}

/// A request body that yields its chunks one by one, as the network would.
struct Chunks(VecDeque<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

fuzz_target!(|data: &[u8]| {
    let [selector, chunking, body @ ..] = data else { return };
    let path = METHODS[usize::from(selector & 7)];
    let chunks: VecDeque<Bytes> = if *chunking == 0 {
        VecDeque::from([Bytes::copy_from_slice(body)])
    } else {
        body.chunks(usize::from(*chunking)).map(Bytes::copy_from_slice).collect()
    };
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if selector & 8 != 0 {
        request = request.header("grpc-encoding", "gzip");
    }
    let request = request.body(tonic::body::Body::new(Chunks(chunks))).expect("a request");
    let stack = stack();
    tensorserve_fuzz::block_on(async {
        let response = if path.contains("ModelService") {
            stack.model.clone().oneshot(request).await
        } else {
            stack.prediction.clone().oneshot(request).await
        };
        let response = response.expect("tonic services are infallible");
        let in_headers = response.headers().get("grpc-status").cloned();
        let collected = response.into_body().collect().await;
        let in_trailers =
            collected.as_ref().ok().and_then(|c| c.trailers()).and_then(|t| t.get("grpc-status")).cloned();
        let status = in_headers.or(in_trailers);
        tensorserve_fuzz::debug(|| format!("{path}: grpc-status {status:?}"));
        assert!(status.is_some(), "{path}: the answer has no grpc-status");
    });
    tensorserve_fuzz::assert_nothing_held(&tensorserve_fuzz::fixture().cores[0], path);
});
