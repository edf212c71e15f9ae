//! A version directory's `signatures.pbtxt`: `model::parse_signature_defs` (text-format
//! `SignatureDefMap`), then `signatures_from_defs` against a graph with inputs and outputs of
//! every dtype (some optional), then each signature encoded back as GetModelMetadata does.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tensorserve::model::{parse_signature_defs, signatures_from_defs, TensorSpec};
use tensorserve::DataType;

struct Graph {
    inputs: BTreeMap<String, TensorSpec>,
    outputs: BTreeMap<String, TensorSpec>,
    optional: BTreeSet<String>,
}

fn graph() -> &'static Graph {
    static GRAPH: OnceLock<Graph> = OnceLock::new();
    GRAPH.get_or_init(|| {
        let spec = |n: &str, d: DataType, s: Option<&[i64]>| {
            (n.to_string(), TensorSpec { name: n.to_string(), dtype: d, shape: s.map(<[i64]>::to_vec) })
        };
        let mut inputs: BTreeMap<String, TensorSpec> = [
            spec("x", DataType::Float, Some(&[-1, 1])),
            spec("x2", DataType::Float, Some(&[-1, 1])),
            spec("sepal_length", DataType::Float, Some(&[-1, 1])),
            spec("sepal_width", DataType::Float, Some(&[-1, 1])),
            spec("petal_length", DataType::Float, Some(&[-1, 1])),
            spec("petal_width", DataType::Float, Some(&[-1, 1])),
            spec("any", DataType::Float, None),
        ]
        .into();
        let mut outputs: BTreeMap<String, TensorSpec> = [
            spec("y", DataType::Float, Some(&[-1, 1])),
            spec("y2", DataType::Float, Some(&[-1, 1])),
            spec("y3", DataType::Float, None),
            spec("scores", DataType::Float, Some(&[-1, 3])),
            spec("classes", DataType::String, Some(&[-1, 3])),
        ]
        .into();
        for d in DataType::ALL {
            inputs.extend([spec(&format!("in_{}", d.name()), d, Some(&[-1]))]);
            outputs.extend([spec(&format!("out_{}", d.name()), d, Some(&[-1]))]);
        }
        let optional = ["x2", "in_int64", "in_string"].into_iter().map(String::from).collect();
        Graph { inputs, outputs, optional }
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let defs = parse_signature_defs(&text, "/models/m/1/signatures.pbtxt");
    let Ok(defs) = defs.inspect_err(|e| tensorserve_fuzz::debug(|| format!("{e:?}"))) else { return };
    let g = graph();
    let signatures = signatures_from_defs(&defs, &g.inputs, &g.outputs, &g.optional);
    tensorserve_fuzz::debug(|| format!("{signatures:?}"));
    let Ok(signatures) = signatures else { return };
    for (name, signature) in &signatures {
        assert!(defs.contains_key(name), "signature {name} was not declared");
        for as_content in [false, true] {
            let def = tensorserve::api::grpc::signature_def(signature, as_content);
            assert_eq!(def.inputs.len(), signature.inputs.len());
        }
    }
});
