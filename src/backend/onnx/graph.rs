//! Edits of a serialized ONNX `ModelProto` at the protobuf wire level, so every field we do not
//! touch (and every field of a newer ONNX) passes through byte for byte.
//!
//! Two edits: pruning a graph to one signature's inputs and outputs (engines that run whole
//! graphs then compute only what the signature names), and dropping declared shapes (so an
//! engine that checks them takes inputs of other shapes, as TF Serving does).

use std::collections::HashSet;

/// `ModelProto.graph`.
const MODEL_GRAPH: u32 = 7;
/// `GraphProto.node`, `.initializer`, `.input`, `.output`, `.value_info`.
const GRAPH_NODE: u32 = 1;
const GRAPH_INITIALIZER: u32 = 5;
const GRAPH_INPUT: u32 = 11;
const GRAPH_OUTPUT: u32 = 12;
const GRAPH_VALUE_INFO: u32 = 13;
/// `NodeProto.input`, `.output`, `.attribute`.
const NODE_INPUT: u32 = 1;
const NODE_OUTPUT: u32 = 2;
const NODE_ATTRIBUTE: u32 = 5;
/// `AttributeProto.g`, `.graphs`.
const ATTRIBUTE_GRAPH: u32 = 6;
const ATTRIBUTE_GRAPHS: u32 = 11;
/// `TensorProto.name`, `ValueInfoProto.name` and `.type`.
const TENSOR_NAME: u32 = 8;
const VALUE_INFO_NAME: u32 = 1;
const VALUE_INFO_TYPE: u32 = 2;
/// `TypeProto.tensor_type`, `TypeProto.Tensor.shape`.
const TYPE_TENSOR: u32 = 1;
const TENSOR_TYPE_SHAPE: u32 = 2;

/// One field of a message: its number, and its bytes (tag included) plus, when
/// length-delimited, its payload.
struct Field<'a> {
    number: u32,
    whole: &'a [u8],
    payload: Option<&'a [u8]>,
}

fn varint(buf: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*at).ok_or("truncated varint")?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint longer than 10 bytes".into())
}

fn fields(buf: &[u8]) -> Result<Vec<Field<'_>>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let start = at;
        let tag = varint(buf, &mut at)?;
        let number = u32::try_from(tag >> 3).map_err(|_| "field number out of range")?;
        let payload = match tag & 7 {
            0 => {
                varint(buf, &mut at)?;
                None
            }
            1 => {
                at = at.checked_add(8).ok_or("overflow")?;
                None
            }
            2 => {
                let len = usize::try_from(varint(buf, &mut at)?).map_err(|_| "length out of range")?;
                let end = at.checked_add(len).filter(|e| *e <= buf.len()).ok_or("truncated field")?;
                let payload = &buf[at..end];
                at = end;
                Some(payload)
            }
            5 => {
                at = at.checked_add(4).ok_or("overflow")?;
                None
            }
            other => return Err(format!("unsupported wire type {other}")),
        };
        if at > buf.len() {
            return Err("truncated field".into());
        }
        out.push(Field { number, whole: &buf[start..at], payload });
    }
    Ok(out)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends field `number` as a length-delimited field holding `payload`.
fn put_message(out: &mut Vec<u8>, number: u32, payload: &[u8]) {
    put_varint(out, (u64::from(number) << 3) | 2);
    put_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

fn strings(buf: &[u8], number: u32) -> Result<Vec<String>, String> {
    Ok(fields(buf)?
        .into_iter()
        .filter(|f| f.number == number)
        .filter_map(|f| f.payload.map(|p| String::from_utf8_lossy(p).into_owned()))
        .collect())
}

/// Rewrites the model's main graph with `edit`.
fn edit_graph(model: &[u8], edit: impl FnOnce(&[u8]) -> Result<Vec<u8>, String>) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(model.len());
    let mut edit = Some(edit);
    for f in fields(model)? {
        match (f.number, f.payload, edit.take_if(|_| f.number == MODEL_GRAPH)) {
            (MODEL_GRAPH, Some(graph), Some(edit)) => put_message(&mut out, MODEL_GRAPH, &edit(graph)?),
            _ => out.extend_from_slice(f.whole),
        }
    }
    if edit.is_some() {
        return Err("the model has no graph".into());
    }
    Ok(out)
}

/// Subgraphs nested deeper than this are refused: real models nest a few levels, and each level
/// costs stack.
const MAX_SUBGRAPH_DEPTH: usize = 64;

/// Every value name a node reads, including those its subgraphs (If, Loop, Scan bodies) read from outside.
fn node_reads(node: &[u8]) -> Result<Vec<String>, String> {
    node_reads_at(node, 0)
}

fn node_reads_at(node: &[u8], depth: usize) -> Result<Vec<String>, String> {
    if depth > MAX_SUBGRAPH_DEPTH {
        return Err(format!("subgraphs are nested more than {MAX_SUBGRAPH_DEPTH} deep"));
    }
    let mut names = strings(node, NODE_INPUT)?;
    for attr in fields(node)?.into_iter().filter(|f| f.number == NODE_ATTRIBUTE) {
        for g in fields(attr.payload.unwrap_or(&[]))? {
            if g.number == ATTRIBUTE_GRAPH || g.number == ATTRIBUTE_GRAPHS {
                for inner in fields(g.payload.unwrap_or(&[]))?.into_iter().filter(|f| f.number == GRAPH_NODE) {
                    names.extend(node_reads_at(inner.payload.unwrap_or(&[]), depth + 1)?);
                }
            }
        }
    }
    Ok(names)
}

/// The model pruned to compute `outputs` from `inputs`: other graph outputs, the nodes only
/// they need, and graph inputs the signature does not name are removed. A graph input backed
/// by an initializer stays when still needed. Fails when the outputs need an input left out.
pub fn prune(model: &[u8], inputs: &[&str], outputs: &[&str]) -> Result<Vec<u8>, String> {
    edit_graph(model, |graph| {
        let all = fields(graph)?;
        let mut initializers = HashSet::new();
        for f in all.iter().filter(|f| f.number == GRAPH_INITIALIZER) {
            initializers.extend(strings(f.payload.unwrap_or(&[]), TENSOR_NAME)?);
        }
        // ONNX nodes are topologically sorted: walking back from the outputs finds what they need.
        let nodes: Vec<(usize, Vec<String>, Vec<String>)> = all
            .iter()
            .enumerate()
            .filter(|(_, f)| f.number == GRAPH_NODE)
            .map(|(i, f)| {
                let node = f.payload.unwrap_or(&[]);
                Ok((i, node_reads(node)?, strings(node, NODE_OUTPUT)?))
            })
            .collect::<Result<_, String>>()?;
        let mut needed: HashSet<String> = outputs.iter().map(|s| s.to_string()).collect();
        let mut keep = HashSet::new();
        for (i, reads, writes) in nodes.iter().rev() {
            if writes.iter().any(|w| needed.contains(w)) {
                keep.insert(*i);
                needed.extend(reads.iter().filter(|r| !r.is_empty()).cloned());
            }
        }
        let mut out = Vec::with_capacity(graph.len());
        for (i, f) in all.iter().enumerate() {
            let keep_field = match f.number {
                GRAPH_NODE => keep.contains(&i),
                GRAPH_INPUT => {
                    let name = strings(f.payload.unwrap_or(&[]), VALUE_INFO_NAME)?.pop().unwrap_or_default();
                    if inputs.contains(&name.as_str()) {
                        true
                    } else if initializers.contains(&name) {
                        needed.contains(&name)
                    } else if needed.contains(&name) {
                        return Err(format!("the outputs need graph input {name}, which the signature does not name"));
                    } else {
                        false
                    }
                }
                GRAPH_OUTPUT => {
                    let name = strings(f.payload.unwrap_or(&[]), VALUE_INFO_NAME)?.pop().unwrap_or_default();
                    outputs.contains(&name.as_str())
                }
                _ => true,
            };
            if keep_field {
                out.extend_from_slice(f.whole);
            }
        }
        Ok(out)
    })
}

/// The model with the shapes of its graph inputs and outputs left out and its shape
/// annotations (`value_info`) dropped, so the engine infers shapes from each request.
pub fn relax_shapes(model: &[u8]) -> Result<Vec<u8>, String> {
    edit_graph(model, |graph| {
        let mut out = Vec::with_capacity(graph.len());
        for f in fields(graph)? {
            match (f.number, f.payload) {
                (GRAPH_VALUE_INFO, _) => {}
                (GRAPH_INPUT | GRAPH_OUTPUT, Some(info)) => put_message(&mut out, f.number, &without_shape(info)?),
                _ => out.extend_from_slice(f.whole),
            }
        }
        Ok(out)
    })
}

/// A `ValueInfoProto` whose tensor type has no shape.
fn without_shape(info: &[u8]) -> Result<Vec<u8>, String> {
    rewrite(info, VALUE_INFO_TYPE, |ty| rewrite(ty, TYPE_TENSOR, |tensor| drop_field(tensor, TENSOR_TYPE_SHAPE)))
}

fn rewrite(buf: &[u8], number: u32, edit: impl Fn(&[u8]) -> Result<Vec<u8>, String>) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(buf.len());
    for f in fields(buf)? {
        match f.payload {
            Some(p) if f.number == number => put_message(&mut out, number, &edit(p)?),
            _ => out.extend_from_slice(f.whole),
        }
    }
    Ok(out)
}

fn drop_field(buf: &[u8], number: u32) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(buf.len());
    for f in fields(buf)?.into_iter().filter(|f| f.number != number) {
        out.extend_from_slice(f.whole);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(parts: &[(u32, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, p) in parts {
            put_message(&mut out, *n, p);
        }
        out
    }

    fn value_info(name: &str, dims: &[u64]) -> Vec<u8> {
        let mut shape = Vec::new();
        for d in dims {
            let mut dim = Vec::new();
            put_varint(&mut dim, 8);
            put_varint(&mut dim, *d);
            put_message(&mut shape, 1, &dim);
        }
        let tensor = message(&[(TENSOR_TYPE_SHAPE, shape)]);
        message(&[(VALUE_INFO_NAME, name.into()), (VALUE_INFO_TYPE, message(&[(TYPE_TENSOR, tensor)]))])
    }

    fn node(inputs: &[&str], outputs: &[&str]) -> Vec<u8> {
        let mut parts: Vec<(u32, Vec<u8>)> = inputs.iter().map(|i| (NODE_INPUT, i.as_bytes().to_vec())).collect();
        parts.extend(outputs.iter().map(|o| (NODE_OUTPUT, o.as_bytes().to_vec())));
        message(&parts)
    }

    /// y = f(x), y2 = g(x2): two independent heads.
    fn two_heads() -> Vec<u8> {
        let graph = message(&[
            (GRAPH_NODE, node(&["x"], &["y"])),
            (GRAPH_NODE, node(&["x2"], &["y2"])),
            (GRAPH_INPUT, value_info("x", &[1])),
            (GRAPH_INPUT, value_info("x2", &[1])),
            (GRAPH_OUTPUT, value_info("y", &[1])),
            (GRAPH_OUTPUT, value_info("y2", &[1])),
            (GRAPH_VALUE_INFO, value_info("t", &[1])),
        ]);
        let mut model = Vec::new();
        put_varint(&mut model, 8); // ir_version = 8
        put_varint(&mut model, 8);
        put_message(&mut model, MODEL_GRAPH, &graph);
        model
    }

    fn graph_of(model: &[u8]) -> Vec<u8> {
        fields(model).unwrap().into_iter().find(|f| f.number == MODEL_GRAPH).unwrap().payload.unwrap().to_vec()
    }

    fn names(graph: &[u8], number: u32) -> Vec<String> {
        fields(graph)
            .unwrap()
            .into_iter()
            .filter(|f| f.number == number)
            .map(|f| strings(f.payload.unwrap(), VALUE_INFO_NAME).unwrap().pop().unwrap())
            .collect()
    }

    #[test]
    fn prune_keeps_one_head() {
        let pruned = prune(&two_heads(), &["x2"], &["y2"]).unwrap();
        let graph = graph_of(&pruned);
        assert_eq!(names(&graph, GRAPH_INPUT), ["x2"]);
        assert_eq!(names(&graph, GRAPH_OUTPUT), ["y2"]);
        let nodes: Vec<_> = fields(&graph).unwrap().into_iter().filter(|f| f.number == GRAPH_NODE).collect();
        assert_eq!(nodes.len(), 1);
        assert_eq!(strings(nodes[0].payload.unwrap(), NODE_INPUT).unwrap(), ["x2"]);
        // The field before the graph is untouched.
        assert_eq!(&pruned[..2], &[8, 8]);
    }

    #[test]
    fn prune_refuses_a_missing_input() {
        let e = prune(&two_heads(), &["x2"], &["y"]).unwrap_err();
        assert!(e.contains("graph input x"), "{e}");
    }

    #[test]
    fn relax_drops_shapes_and_annotations() {
        let relaxed = relax_shapes(&two_heads()).unwrap();
        let graph = graph_of(&relaxed);
        assert_eq!(names(&graph, GRAPH_INPUT), ["x", "x2"]);
        assert!(names(&graph, GRAPH_VALUE_INFO).is_empty());
        let input = fields(&graph).unwrap().into_iter().find(|f| f.number == GRAPH_INPUT).unwrap();
        let ty = fields(input.payload.unwrap()).unwrap().into_iter().find(|f| f.number == VALUE_INFO_TYPE).unwrap();
        let tensor = fields(ty.payload.unwrap()).unwrap().pop().unwrap();
        assert!(fields(tensor.payload.unwrap()).unwrap().iter().all(|f| f.number != TENSOR_TYPE_SHAPE));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [&[0x3a, 0xff, 0xff, 0xff, 0x0f][..], &[0x0b], &[0xff; 11]] {
            assert!(prune(bad, &[], &[]).is_err());
            assert!(relax_shapes(bad).is_err());
        }
    }

    #[test]
    fn subgraphs_nested_too_deep_are_an_error_not_a_stack_overflow() {
        // A node whose attribute holds a graph whose node holds a graph ..., 5,000 levels deep.
        let mut node = message(&[(NODE_OUTPUT, b"y".to_vec())]);
        for _ in 0..5_000 {
            let graph = message(&[(GRAPH_NODE, node)]);
            let attribute = message(&[(ATTRIBUTE_GRAPH, graph)]);
            node = message(&[(NODE_OUTPUT, b"y".to_vec()), (NODE_ATTRIBUTE, attribute)]);
        }
        let graph = message(&[(GRAPH_NODE, node), (GRAPH_OUTPUT, value_info("y", &[1]))]);
        let model = message(&[(MODEL_GRAPH, graph)]);
        // Run on a small stack, like the manager's thread.
        let e = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || prune(&model, &[], &["y"]))
            .unwrap()
            .join()
            .unwrap()
            .unwrap_err();
        assert!(e.contains("nested more than 64 deep"), "{e}");
    }
}
