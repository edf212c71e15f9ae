//! The real gRPC handlers (`GrpcApi`) on request bytes. The first byte picks the method
//! (low 3 bits: 0/6 Predict, 1 Classify, 2 Regress, 3 MultiInference, 4 GetModelMetadata,
//! 5 GetModelStatus, 7 HandleReloadConfigRequest) and the core (bit 7: strict options, i.e.
//! tensor_content outputs and the signature method-name check); the rest is the protobuf
//! request. A successful Predict's outputs must decode again, and metadata must be a
//! decodable `SignatureDefMap`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tensorserve::proto::tensorflow::serving as pb;
use tensorserve::proto::tensorflow::TensorProto;
use tensorserve::tensor::proto::{decode, DecodeError, DecodeLimits};
use tensorserve::Tensor;
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
    let api = &tensorserve_fuzz::fixture().grpc[usize::from(selector >> 7)];
    tensorserve_fuzz::block_on(async {
        match selector & 7 {
            0 | 6 => {
                let Ok(request) = pb::PredictRequest::decode(body) else { return };
                if let Ok(response) = api.predict(Request::new(request)).await {
                    for (alias, t) in response.into_inner().outputs {
                        if let Err(e) = decode_output(t) {
                            panic!("Predict output {alias} does not decode: {e:?}");
                        }
                    }
                }
            }
            1 => {
                let Ok(request) = pb::ClassificationRequest::decode(body) else { return };
                let _ = api.classify(Request::new(request)).await;
            }
            2 => {
                let Ok(request) = pb::RegressionRequest::decode(body) else { return };
                let _ = api.regress(Request::new(request)).await;
            }
            3 => {
                let Ok(request) = pb::MultiInferenceRequest::decode(body) else { return };
                let _ = api.multi_inference(Request::new(request)).await;
            }
            4 => {
                let Ok(request) = pb::GetModelMetadataRequest::decode(body) else { return };
                if let Ok(response) = api.get_model_metadata(Request::new(request)).await {
                    if let Some(any) = response.into_inner().metadata.get("signature_def") {
                        pb::SignatureDefMap::decode(any.value.as_slice()).expect("metadata is a SignatureDefMap");
                    }
                }
            }
            5 => {
                let Ok(request) = pb::GetModelStatusRequest::decode(body) else { return };
                let _ = api.get_model_status(Request::new(request)).await;
            }
            _ => {
                let Ok(request) = pb::ReloadConfigRequest::decode(body) else { return };
                let _ = api.handle_reload_config_request(Request::new(request)).await;
            }
        }
    });
});
