//! `TensorProto` bytes -> `tensor::proto::decode` (every dtype, typed fields and tensor_content),
//! then `encode` both ways (typed fields, tensor_content) and `encode_owned`: each must go through
//! the wire and decode back to the same dtype, shape and bit-identical values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tensorserve::proto::tensorflow::TensorProto;
use tensorserve::tensor::proto::{decode, encode, encode_owned, DecodeError};
use tensorserve::Tensor;

/// The target's one call of `tensor::proto::decode` (its signature is about to change).
fn decode_tensor(proto: TensorProto) -> Result<Tensor, DecodeError> {
    decode(proto, &tensorserve_fuzz::decode_limits())
}

/// The tensor's values as wire bytes: `tensor_content` for numbers and bools, `string_val` for strings.
fn bits(t: &Tensor) -> Vec<u8> {
    encode(t, true).encode_to_vec()
}

fuzz_target!(|data: &[u8]| {
    let Ok(proto) = TensorProto::decode(data) else { return };
    let Ok(tensor) = decode_tensor(proto) else { return };
    let want = bits(&tensor);
    for (how, encoded) in [
        ("typed fields", encode(&tensor, false)),
        ("tensor_content", encode(&tensor, true)),
        ("owned typed fields", encode_owned(tensor.clone(), false)),
        ("owned tensor_content", encode_owned(tensor.clone(), true)),
    ] {
        let wire = encoded.encode_to_vec();
        let back = TensorProto::decode(wire.as_slice()).expect("our own encoding decodes");
        let again = decode_tensor(back).unwrap_or_else(|e| panic!("{how}: the re-encoded tensor is refused: {e:?}"));
        assert_eq!(again.dtype(), tensor.dtype(), "{how}: dtype");
        assert_eq!(again.shape(), tensor.shape(), "{how}: shape");
        assert!(bits(&again) == want, "{how}: values differ after the round trip");
    }
});
