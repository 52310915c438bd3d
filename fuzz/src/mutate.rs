//! Mutations of a model at the protobuf level: the changes an exporter's bug, a hand edit or an
//! attacker makes to a valid file, each leaving a model that still decodes.
//!
//! Byte-level mutation (libFuzzer's own) mostly breaks the encoding and tests the decoder; these
//! reach the importer, the passes and the backends with models that are almost right: a
//! dimension off, an attribute out of range, an op in the wrong domain, a tensor of the wrong
//! element type, an opset bnnc does not know.

use bnnc_frontend_onnx::proto::{
    tensor_shape_proto::dimension, type_proto, AttributeProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, TensorProto, ValueInfoProto,
};
use prost::Message;

/// A xorshift generator: the same seed mutates a model the same way on every machine.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (any value, zero included).
    pub fn new(seed: u64) -> Rng {
        // splitmix64's finaliser, so that neighbouring seeds start far apart.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Integers that sit on the edges importers get wrong: zero, one, negatives (ONNX's "from the
/// end" and "infer this"), extents past a tensor, and the ends of i32 and i64.
const INTERESTING_INTS: &[i64] = &[
    0,
    1,
    2,
    3,
    -1,
    -2,
    7,
    8,
    16,
    64,
    255,
    1 << 16,
    1 << 31,
    -(1 << 31),
    (1 << 31) - 1,
    1 << 40,
    i64::MAX,
    i64::MIN,
];

/// Floats for attributes (alpha, epsilon, scales): zero, signs, non-finite values, extremes.
const INTERESTING_FLOATS: &[f32] = &[
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    1e-30,
    1e30,
    f32::MAX,
    f32::MIN_POSITIVE,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::NAN,
];

/// String attribute values the importer reads somewhere (pads, data types, rounding, modes).
const INTERESTING_STRINGS: &[&str] = &[
    "",
    "NOTSET",
    "SAME_UPPER",
    "SAME_LOWER",
    "VALID",
    "BIPOLAR",
    "BINARY",
    "INT2",
    "UINT4",
    "INT32",
    "FLOAT32",
    "ROUND",
    "FLOOR",
    "CEIL",
    "ROUND_TO_ZERO",
    "nearest",
    "linear",
    "asymmetric",
    "half_pixel",
    "DCR",
    "CRD",
    "constant",
    "reflect",
];

/// Op types to put in a node's place: what bnnc imports, and some it does not.
const OP_TYPES: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Relu",
    "Sigmoid",
    "Conv",
    "Gemm",
    "MatMul",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "BatchNormalization",
    "Reshape",
    "Flatten",
    "Transpose",
    "Concat",
    "Slice",
    "Pad",
    "Squeeze",
    "Unsqueeze",
    "Gather",
    "Shape",
    "Constant",
    "Identity",
    "Clip",
    "Sign",
    "Softmax",
    "ReduceMean",
    "TopK",
    "ArgMax",
    "Resize",
    "Upsample",
    "DepthToSpace",
    "SpaceToDepth",
    "Cast",
    "QuantizeLinear",
    "DequantizeLinear",
    "Quant",
    "BipolarQuant",
    "Trunc",
    "MultiThreshold",
    "Einsum",
    "Loop",
];

/// Domains a node can claim.
const DOMAINS: &[&str] = &[
    "",
    "ai.onnx",
    "qonnx.custom_op.general",
    "finn.custom_op.general",
    "onnx.brevitas",
    "com.microsoft",
    "nonsense",
];

/// `TensorProto.DataType` codes, valid (1..=16, 19..=23) and not.
const DATA_TYPES: &[i32] = &[0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 16, 22, 99, -1];

/// Mutates the model encoded in `bytes` `count` times with `seed`; `None` if the bytes are
/// not a model or the result would be longer than `max_len`.
pub fn mutate_bytes(bytes: &[u8], seed: u64, count: usize, max_len: usize) -> Option<Vec<u8>> {
    let mut model = ModelProto::decode(bytes).ok()?;
    let mut rng = Rng::new(seed);
    for _ in 0..count {
        mutate(&mut model, &mut rng);
    }
    let out = model.encode_to_vec();
    (out.len() <= max_len).then_some(out)
}

/// Makes one change to `model`. Changes that find nothing to change (an attribute of a model
/// without attributes) leave it as it is.
pub fn mutate(model: &mut ModelProto, rng: &mut Rng) {
    match rng.below(12) {
        0 => mutate_opset(model, rng),
        _ => {
            let graph = model.graph.get_or_insert_with(GraphProto::default);
            match rng.below(11) {
                0 | 1 => mutate_value_info(graph, rng),
                2 => mutate_initializer(graph, rng),
                3..=5 => mutate_attribute(graph, rng),
                6 => mutate_op(graph, rng),
                7 | 8 => mutate_edges(graph, rng),
                9 => mutate_node_list(graph, rng),
                _ => mutate_graph_outputs(graph, rng),
            }
        }
    }
}

fn int(rng: &mut Rng) -> i64 {
    if rng.below(3) == 0 {
        rng.below(10) as i64 - 2
    } else {
        *rng.pick(INTERESTING_INTS)
    }
}

/// An opset version changed, added or removed.
fn mutate_opset(model: &mut ModelProto, rng: &mut Rng) {
    match (rng.below(4), model.opset_import.is_empty()) {
        (0, false) => {
            let i = rng.below(model.opset_import.len());
            model.opset_import.remove(i);
        }
        (1, _) | (_, true) => model.opset_import.push(OperatorSetIdProto {
            domain: rng.pick(DOMAINS).to_string(),
            version: rng.below(26) as i64,
        }),
        _ => {
            let i = rng.below(model.opset_import.len());
            model.opset_import[i].version = match rng.below(2) {
                0 => rng.below(26) as i64,
                _ => int(rng),
            };
        }
    }
}

/// A graph input's, output's or annotated value's element type or dimensions.
fn mutate_value_info(graph: &mut GraphProto, rng: &mut Rng) {
    let lists = [
        graph.input.len(),
        graph.output.len(),
        graph.value_info.len(),
    ];
    let total: usize = lists.iter().sum();
    if total == 0 {
        return;
    }
    let i = rng.below(total);
    let info: &mut ValueInfoProto = if i < lists[0] {
        &mut graph.input[i]
    } else if i - lists[0] < lists[1] {
        &mut graph.output[i - lists[0]]
    } else {
        &mut graph.value_info[i - lists[0] - lists[1]]
    };
    let Some(type_proto::Value::TensorType(tensor)) =
        info.r#type.as_mut().and_then(|t| t.value.as_mut())
    else {
        info.r#type = None;
        return;
    };
    match rng.below(5) {
        0 => tensor.elem_type = *rng.pick(DATA_TYPES),
        1 => tensor.shape = None,
        _ => {
            let shape = tensor.shape.get_or_insert_with(Default::default);
            let dims = &mut shape.dim;
            match rng.below(4) {
                0 => dims.push(Default::default()),
                1 if !dims.is_empty() => {
                    let d = rng.below(dims.len());
                    dims.remove(d);
                }
                _ if !dims.is_empty() => {
                    let d = rng.below(dims.len());
                    dims[d].value = Some(match rng.below(4) {
                        0 => dimension::Value::DimParam("batch".into()),
                        _ => dimension::Value::DimValue(int(rng)),
                    });
                }
                _ => {}
            }
        }
    }
}

/// A constant tensor's dimensions, element type or data.
fn mutate_initializer(graph: &mut GraphProto, rng: &mut Rng) {
    if graph.initializer.is_empty() {
        return;
    }
    let i = rng.below(graph.initializer.len());
    mutate_tensor(&mut graph.initializer[i], rng);
}

fn mutate_tensor(t: &mut TensorProto, rng: &mut Rng) {
    match rng.below(6) {
        0 => t.data_type = *rng.pick(DATA_TYPES),
        1 if !t.dims.is_empty() => {
            let d = rng.below(t.dims.len());
            t.dims[d] = int(rng);
        }
        1 | 2 => match rng.below(2) {
            0 => t.dims.push(int(rng)),
            _ => {
                t.dims.pop();
            }
        },
        3 => {
            // Cut the data short (or empty it).
            let keep = rng.below(t.raw_data.len() + 1);
            t.raw_data.truncate(keep);
            let keep = rng.below(t.float_data.len() + 1);
            t.float_data.truncate(keep);
            let keep = rng.below(t.int64_data.len() + 1);
            t.int64_data.truncate(keep);
        }
        _ => {
            // One element made extreme: a float (NaN, infinity, huge) in float data, or a
            // byte of raw data.
            if !t.float_data.is_empty() {
                let e = rng.below(t.float_data.len());
                t.float_data[e] = *rng.pick(INTERESTING_FLOATS);
            } else if t.raw_data.len() >= 4 {
                let e = rng.below(t.raw_data.len() / 4) * 4;
                let v = *rng.pick(INTERESTING_FLOATS);
                let bytes = match t.data_type {
                    // int64 data: an interesting integer's low half is as good as any.
                    7 => (int(rng) as i32).to_le_bytes(),
                    _ => v.to_le_bytes(),
                };
                t.raw_data[e..e + 4].copy_from_slice(&bytes);
            } else if !t.int64_data.is_empty() {
                let e = rng.below(t.int64_data.len());
                t.int64_data[e] = int(rng);
            }
        }
    }
}

/// One attribute of one node: its value, its declared type, removed, or a new one.
fn mutate_attribute(graph: &mut GraphProto, rng: &mut Rng) {
    if graph.node.is_empty() {
        return;
    }
    let n = rng.below(graph.node.len());
    let node = &mut graph.node[n];
    if node.attribute.is_empty() || rng.below(8) == 0 {
        // An attribute the node may not expect, or one it needs under a name it knows.
        let name = *rng.pick(&[
            "axis",
            "group",
            "pads",
            "strides",
            "kernel_shape",
            "perm",
            "alpha",
            "epsilon",
            "to",
            "out_dtype",
            "signed",
            "narrow",
            "rounding_mode",
            "mode",
            "blocksize",
        ]);
        node.attribute.push(AttributeProto {
            name: name.into(),
            i: int(rng),
            r#type: 2,
            ..Default::default()
        });
        return;
    }
    let a = rng.below(node.attribute.len());
    let attr = &mut node.attribute[a];
    match rng.below(9) {
        0 => {
            node.attribute.remove(a);
        }
        1 => attr.r#type = rng.below(15) as i32,
        2 => attr.i = int(rng),
        3 => attr.f = *rng.pick(INTERESTING_FLOATS),
        4 => attr.s = rng.pick(INTERESTING_STRINGS).as_bytes().to_vec(),
        5 if !attr.ints.is_empty() => {
            let e = rng.below(attr.ints.len());
            attr.ints[e] = int(rng);
        }
        5 | 6 => match rng.below(2) {
            0 => attr.ints.push(int(rng)),
            _ => {
                attr.ints.pop();
            }
        },
        7 if !attr.floats.is_empty() => {
            let e = rng.below(attr.floats.len());
            attr.floats[e] = *rng.pick(INTERESTING_FLOATS);
        }
        _ => match attr.t.as_mut() {
            Some(t) => mutate_tensor(t, rng),
            None => attr.floats.push(*rng.pick(INTERESTING_FLOATS)),
        },
    }
}

/// A node's op type or domain.
fn mutate_op(graph: &mut GraphProto, rng: &mut Rng) {
    if graph.node.is_empty() {
        return;
    }
    let n = rng.below(graph.node.len());
    let node = &mut graph.node[n];
    match rng.below(3) {
        0 => node.domain = rng.pick(DOMAINS).to_string(),
        _ => node.op_type = rng.pick(OP_TYPES).to_string(),
    }
}

/// Every name a node input can refer to: graph inputs, constants, node outputs, and nothing.
fn value_names(graph: &GraphProto) -> Vec<String> {
    let mut names: Vec<String> = graph.input.iter().map(|v| v.name.clone()).collect();
    names.extend(graph.initializer.iter().map(|t| t.name.clone()));
    names.extend(graph.node.iter().flat_map(|n| n.output.iter().cloned()));
    names.push(String::new());
    names.push("no_such_value".into());
    names
}

/// A node's inputs or outputs: rewired, swapped, dropped or added.
fn mutate_edges(graph: &mut GraphProto, rng: &mut Rng) {
    if graph.node.is_empty() {
        return;
    }
    let names = value_names(graph);
    let n = rng.below(graph.node.len());
    let node: &mut NodeProto = &mut graph.node[n];
    let list = if rng.below(4) == 0 {
        &mut node.output
    } else {
        &mut node.input
    };
    match rng.below(4) {
        0 => list.push(rng.pick(&names).clone()),
        1 => {
            list.pop();
        }
        2 if list.len() >= 2 => {
            let (i, j) = (rng.below(list.len()), rng.below(list.len()));
            list.swap(i, j);
        }
        _ if !list.is_empty() => {
            let i = rng.below(list.len());
            list[i] = rng.pick(&names).clone();
        }
        _ => {}
    }
}

/// Nodes removed, duplicated or moved out of topological order.
fn mutate_node_list(graph: &mut GraphProto, rng: &mut Rng) {
    if graph.node.is_empty() {
        return;
    }
    let n = rng.below(graph.node.len());
    match rng.below(3) {
        0 => {
            graph.node.remove(n);
        }
        1 => {
            let copy = graph.node[n].clone();
            graph.node.insert(n, copy);
        }
        _ => {
            let node = graph.node.remove(n);
            let to = rng.below(graph.node.len() + 1);
            graph.node.insert(to, node);
        }
    }
}

/// The graph's outputs: another value made an output, or one dropped.
fn mutate_graph_outputs(graph: &mut GraphProto, rng: &mut Rng) {
    let names = value_names(graph);
    match (rng.below(3), graph.output.len()) {
        (0, len) if len > 0 => {
            graph.output.pop();
        }
        (1, _) | (_, 0) => graph.output.push(ValueInfoProto {
            name: rng.pick(&names).clone(),
            ..Default::default()
        }),
        (_, len) => {
            let i = rng.below(len);
            graph.output[i].name = rng.pick(&names).clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Vec<u8> {
        let model = ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(GraphProto {
                node: vec![NodeProto {
                    input: vec!["x".into()],
                    output: vec!["y".into()],
                    op_type: "Relu".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        model.encode_to_vec()
    }

    #[test]
    fn a_seed_mutates_the_same_way_every_time() {
        let a = mutate_bytes(&tiny(), 7, 5, 1 << 20).unwrap();
        let b = mutate_bytes(&tiny(), 7, 5, 1 << 20).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn mutations_change_models_and_keep_them_decodable() {
        let changed = (0..64)
            .filter(|&seed| {
                let out = mutate_bytes(&tiny(), seed, 3, 1 << 20).unwrap();
                ModelProto::decode(&out[..]).unwrap();
                out != tiny()
            })
            .count();
        assert!(changed > 32, "only {changed} of 64 seeds changed the model");
    }

    #[test]
    fn garbage_and_long_results_are_refused() {
        assert!(mutate_bytes(&[0xff, 0xff, 0xff], 1, 1, 1 << 20).is_none());
        assert!(mutate_bytes(&tiny(), 1, 1, 4).is_none());
    }
}
