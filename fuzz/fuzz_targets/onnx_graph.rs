//! A version's `model.onnx` as tensorserve itself reads it: the wire-level graph edits of
//! `backend::onnx::graph` (`prune` to one signature's inputs and outputs, `relax_shapes`),
//! which run on the model file before any engine sees it. Byte 0 picks the signature's inputs
//! and byte 1 its outputs (bit masks over names the test models use); the rest is the model.
//! `relax_shapes` must be idempotent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tensorserve::backend::onnx::graph::{prune, relax_shapes};

const INPUTS: [&str; 8] = ["x", "x2", "bias", "cond", "sepal_length", "in_f16", "in_s", "in_i64"];
const OUTPUTS: [&str; 8] = ["y", "y2", "y3", "scores", "classes", "out_f16", "out_s", "out_i64"];

fn pick(names: &'static [&'static str; 8], mask: u8) -> Vec<&'static str> {
    names.iter().enumerate().filter(|(i, _)| mask >> i & 1 == 1).map(|(_, n)| *n).collect()
}

fuzz_target!(|data: &[u8]| {
    let [inputs, outputs, model @ ..] = data else { return };
    let _ = prune(model, &pick(&INPUTS, *inputs), &pick(&OUTPUTS, *outputs));
    if let Ok(relaxed) = relax_shapes(model) {
        let twice = relax_shapes(&relaxed).expect("a relaxed model relaxes again");
        assert!(twice == relaxed, "relax_shapes is not idempotent");
    }
});
