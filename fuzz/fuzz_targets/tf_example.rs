//! tf.Example decoding: `Input` bytes (ExampleList or ExampleListWithContext) or a REST
//! `:classify`/`:regress` JSON body (`examples_from_json`), then `Examples` and `to_inputs`
//! against one signature of the fixture's models (features -> batched tensors, defaults, kinds).
//!
//! Byte 0: bit 0 picks the format (0 protobuf `Input`, 1 JSON), bit 1 the JSON verb
//! (classify/regress), bits 2-7 the signature (`all_signatures()`, by index). The tensors built
//! must be `[examples, per-example dims...]` of the signature's dtype.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tensorserve::proto::tensorflow::serving as pb;
use tensorserve::tensor::example::{examples_from_json, ExampleBatch, Examples};
use tensorserve_fuzz::{all_signatures, MAX_TENSOR_BYTES};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let signatures = all_signatures();
    let (name, signature) = &signatures[usize::from(selector >> 2) % signatures.len()];
    // Both formats end as owned examples, so one `Examples` borrows from either.
    let (input, batch) = if selector & 1 == 0 {
        let Ok(input) = pb::Input::decode(body) else { return };
        (Some(input), ExampleBatch::default())
    } else {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else { return };
        let verb = if selector & 2 == 0 { "classify" } else { "regress" };
        let Ok(batch) = examples_from_json(&value, verb) else { return };
        (None, batch)
    };
    let examples = match &input {
        Some(input) => Examples::of(Some(input)),
        None => batch.examples(),
    };
    let Ok(examples) = examples else { return };
    let budget = tensorserve_fuzz::budget();
    let tensors = examples.to_inputs(signature, MAX_TENSOR_BYTES, &budget);
    tensorserve_fuzz::debug(|| format!("{name}: {tensors:?}"));
    let Ok(tensors) = tensors else { return };
    for (alias, spec) in &signature.inputs {
        let t = tensors.get(alias).unwrap_or_else(|| panic!("no tensor for input {alias}"));
        assert_eq!(t.dtype(), spec.dtype, "{alias}: dtype");
        assert_eq!(t.shape().first().copied(), Some(examples.len()), "{alias}: batch dimension");
        let per_example: Vec<i64> = t.shape()[1..].iter().map(|d| *d as i64).collect();
        assert_eq!(Some(&per_example[..]), spec.shape.as_deref().map(|s| &s[1..]), "{alias}: per-example shape");
    }
});
