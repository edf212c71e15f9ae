//! The real gRPC handlers (`GrpcApi`) on request bytes. The first byte picks the method
//! (low 3 bits: 0/6 Predict, 1 Classify, 2 Regress, 3 MultiInference, 4 GetModelMetadata,
//! 5 GetModelStatus, 7 HandleReloadConfigRequest) and the core (bit 7: strict options, i.e.
//! tensor_content outputs and the signature method-name check); the rest is the protobuf
//! request. A successful Predict's outputs must decode again, metadata must be a decodable
//! `SignatureDefMap`, and once answered a request must hold none of the memory pool.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tensorserve::proto::tensorflow::serving as pb;
use tensorserve::proto::tensorflow::TensorProto;
use tensorserve::tensor::proto::{decode, DecodeError, DecodeLimits};
use tensorserve::Tensor;
use tensorserve_fuzz::debug;
use tonic::Request;

use pb::model_service_server::ModelService;
use pb::prediction_service_server::PredictionService;

/// The target's one call of `tensor::proto::decode`, on the server's own outputs: no limit
/// (they were made from inputs that passed the server's limit).
fn decode_output(proto: TensorProto) -> Result<Tensor, DecodeError> {
    decode(proto, &DecodeLimits { max_tensor_bytes: usize::MAX, ..DecodeLimits::default() })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let fixture = tensorserve_fuzz::fixture();
    let api = &fixture.grpc[usize::from(selector >> 7)];
    tensorserve_fuzz::block_on(async {
        match selector & 7 {
            0 | 6 => {
                let Ok(request) = pb::PredictRequest::decode(body) else { return };
                let result = api.predict(Request::new(request)).await;
                debug(|| format!("predict: {result:?}"));
                if let Ok(response) = result {
                    for (alias, t) in response.into_inner().outputs {
                        if let Err(e) = decode_output(t) {
                            panic!("Predict output {alias} does not decode: {e:?}");
                        }
                    }
                }
            }
            1 => {
                let Ok(request) = pb::ClassificationRequest::decode(body) else { return };
                let result = api.classify(Request::new(request)).await;
                debug(|| format!("classify: {result:?}"));
            }
            2 => {
                let Ok(request) = pb::RegressionRequest::decode(body) else { return };
                let result = api.regress(Request::new(request)).await;
                debug(|| format!("regress: {result:?}"));
            }
            3 => {
                let Ok(request) = pb::MultiInferenceRequest::decode(body) else { return };
                let result = api.multi_inference(Request::new(request)).await;
                debug(|| format!("multi_inference: {result:?}"));
            }
            4 => {
                let Ok(request) = pb::GetModelMetadataRequest::decode(body) else { return };
                let result = api.get_model_metadata(Request::new(request)).await;
                debug(|| format!("get_model_metadata: {result:?}"));
                if let Ok(response) = result {
                    if let Some(any) = response.into_inner().metadata.get("signature_def") {
                        pb::SignatureDefMap::decode(any.value.as_slice()).expect("metadata is a SignatureDefMap");
                    }
                }
            }
            5 => {
                let Ok(request) = pb::GetModelStatusRequest::decode(body) else { return };
                let result = api.get_model_status(Request::new(request)).await;
                debug(|| format!("get_model_status: {result:?}"));
            }
            _ => {
                let Ok(request) = pb::ReloadConfigRequest::decode(body) else { return };
                let result = api.handle_reload_config_request(Request::new(request)).await;
                debug(|| format!("handle_reload_config_request: {result:?}"));
            }
        }
    });
    tensorserve_fuzz::assert_nothing_held(&fixture.cores[usize::from(selector >> 7)], "gRPC");
});
