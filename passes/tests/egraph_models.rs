//! `streamline` on every model of tests/data: the result verifies, computes the same bits as
//! the imported graph on the folder's input.npy, and leaves no BatchNorm between an integer
//! accumulator of a low-bit layer and the quantizer after it, except where the report says
//! why (a MaxPool or a residual add in between, which other passes handle).

use std::path::{Path, PathBuf};

use bnnc_ir::interp::run_batch;
use bnnc_ir::verify::verify;
use bnnc_ir::{ElemType, Graph, Op, Tensor, ValueId};
use bnnc_passes::egraph::{streamline, Limits, StreamlineReport};

/// How many chains each model folds, and, where a BatchNorm of a binarized or low-bit layer
/// stays, a phrase the report's reason must contain.
///
/// - bireal_small: its 8-bit stem folds; its binary convolutions feed residual adds of two
///   computed values;
/// - xnor_perchannel and zoo_kwsmlp_w3a3 fold although their scales are not powers of two:
///   their accumulators are integers scaled once (the interpreter's integer-first layers);
/// - zoo_jettagging: its float first layer feeds an add; zoo_unsw_nb15_mlp_w2a2: Gemms with a
///   bias, which the e-graph does not take apart.
const EXPECTED: &[(&str, usize, Option<&str>)] = &[
    ("bireal_small", 1, Some("add of two computed values")),
    ("cnv_w1a1", 8, None),
    ("cnv_w2a2", 8, None),
    ("finn_tfc_w1a1_streamlined", 3, None),
    ("lfc_w1a1", 3, None),
    ("tfc_w1a1", 3, None),
    ("tfc_w1a1_qonnx_ts", 3, None),
    ("tfc_w2a2_qcdq", 3, None),
    ("xnor_perchannel", 3, None),
    // Their ReLUs are chain steps now; what stops them is further down.
    ("zoo_jettagging", 0, Some("add of two computed values")),
    ("zoo_kwsmlp_w3a3", 3, None),
    ("zoo_tfc_1w1a", 3, None),
    ("zoo_tfc_1w2a", 3, None),
    ("zoo_tfc_2w2a", 3, None),
    ("zoo_unsw_nb15_mlp_w2a2", 0, Some("is a gemm, not a step")),
];

fn model_dirs() -> Vec<PathBuf> {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data");
    let mut dirs = Vec::new();
    for set in ["models", "external"] {
        let Ok(entries) = std::fs::read_dir(data.join(set)) else {
            continue;
        };
        dirs.extend(
            entries
                .map(|e| e.unwrap().path())
                .filter(|p| p.join("model.onnx").exists()),
        );
    }
    dirs.sort();
    dirs
}

fn read_input(path: &Path) -> Tensor {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let data: Vec<f32> = npy.into_vec().unwrap();
    Tensor::f32(shape, data)
}

/// Whether two runs agree: f32 outputs bit for bit (NaN-safe, sign of zero included);
/// integer-typed outputs (indices, quantized values) as numbers, where -0 and +0 are the same
/// integer (a folded Quant gives +0 for a level the Quant gave as -0: see
/// `bnnc_passes::threshold` on the sign of zero).
fn same_outputs(graph: &Graph, want: &[Tensor], got: &[Tensor]) -> bool {
    want.len() == got.len()
        && want
            .iter()
            .zip(got)
            .zip(graph.outputs())
            .all(|((w, g), &v)| {
                let same_kind =
                    std::mem::discriminant(w.data()) == std::mem::discriminant(g.data());
                let same_values = if graph.value(v).ty.elem == ElemType::F32 {
                    let bits = |t: &Tensor| -> Vec<u32> {
                        t.to_f32_vec().iter().map(|x| x.to_bits()).collect()
                    };
                    bits(w) == bits(g)
                } else {
                    w.to_f64_vec() == g.to_f64_vec()
                };
                w.shape() == g.shape() && same_kind && same_values
            })
}

/// Whether a value is a low-bit integer (at most 4 bits: binarized or 2/3-bit activations).
fn low_bit(graph: &Graph, v: ValueId) -> bool {
    graph
        .value(v)
        .ty
        .elem
        .int_type()
        .is_some_and(|t| t.bits() <= 4)
}

fn producer_op(graph: &Graph, v: ValueId) -> Option<&Op> {
    graph.producer(v).map(|n| &graph.node(n).op)
}

/// Steps a chain walks through: scale and bias by constants, BatchNorm, reshapes.
fn is_chain_node(graph: &Graph, node: &bnnc_ir::Node) -> bool {
    match node.op {
        Op::Binary(_) => node.inputs.iter().any(|&v| graph.const_data(v).is_some()),
        Op::Reshape { .. } | Op::BatchNorm { .. } => true,
        _ => false,
    }
}

fn is_quantizer(op: &Op) -> bool {
    matches!(
        op,
        Op::BipolarQuant
            | Op::Sign
            | Op::Quant(_)
            | Op::MultiThreshold(_)
            | Op::QuantizeLinear { .. }
    )
}

/// The BatchNorms whose input comes (through chain ops) from a linear layer with a low-bit
/// activation operand, and whose result goes (through chain ops) straight into a quantizer.
fn batchnorms_between_binarized_layers(graph: &Graph) -> Vec<String> {
    let users = |v: ValueId| -> Vec<&bnnc_ir::Node> {
        graph
            .node_ids()
            .map(|n| graph.node(n))
            .filter(|node| node.inputs.contains(&v))
            .collect()
    };
    let mut found = Vec::new();
    for n in graph.node_ids() {
        let node = graph.node(n);
        if !matches!(node.op, Op::BatchNorm { .. }) {
            continue;
        }
        // Down to the producer of the accumulator.
        let mut v = node.inputs[0];
        let from_low_bit_layer = loop {
            match producer_op(graph, v) {
                Some(op) if op.is_linear_layer() => {
                    let p = graph.producer(v).unwrap();
                    break low_bit(graph, graph.node(p).inputs[0]);
                }
                Some(_) if is_chain_node(graph, graph.node(graph.producer(v).unwrap())) => {
                    v = graph.node(graph.producer(v).unwrap()).inputs[0]
                }
                _ => break false,
            }
        };
        // Up to a quantizer, through chain ops with one user each.
        let mut v = node.outputs[0];
        let into_quantizer = loop {
            match users(v)[..] {
                [user] if is_quantizer(&user.op) => break true,
                [user]
                    if is_chain_node(graph, user) && !matches!(user.op, Op::BatchNorm { .. }) =>
                {
                    v = user.outputs[0]
                }
                _ => break false,
            }
        };
        if from_low_bit_layer && into_quantizer {
            found.push(node.name.clone());
        }
    }
    found
}

fn check_model(dir: &Path) -> Result<(String, StreamlineReport, Vec<String>), String> {
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    let graph = bnnc_frontend_onnx::load_model(&dir.join("model.onnx"))
        .map_err(|e| format!("{name}: import: {e}"))?;
    let (streamlined, report) =
        streamline(&graph, &Limits::default()).map_err(|e| format!("{name}: streamline: {e}"))?;
    verify(&streamlined).map_err(|e| format!("{name}: verify: {e}"))?;
    if report.stop.is_bound() {
        return Err(format!("{name}: the runner hit a bound: {}", report.stop));
    }
    // Same interface.
    let names = |g: &Graph, vs: &[ValueId]| -> Vec<(String, bnnc_ir::TensorType)> {
        vs.iter()
            .map(|&v| (g.value(v).name.clone(), g.value(v).ty.clone()))
            .collect()
    };
    if names(&graph, graph.inputs()) != names(&streamlined, streamlined.inputs())
        || names(&graph, graph.outputs()) != names(&streamlined, streamlined.outputs())
    {
        return Err(format!("{name}: inputs or outputs changed"));
    }
    // Same bits.
    let input = read_input(&dir.join("input.npy"));
    let want = run_batch(&graph, &input).map_err(|e| format!("{name}: run imported: {e}"))?;
    let got =
        run_batch(&streamlined, &input).map_err(|e| format!("{name}: run streamlined: {e}"))?;
    if !same_outputs(&graph, &want, &got) {
        return Err(format!(
            "{name}: streamlined outputs differ\nwant {:?}\ngot  {:?}\n{report}",
            want.iter().map(|t| t.to_f32_vec()).collect::<Vec<_>>(),
            got.iter().map(|t| t.to_f32_vec()).collect::<Vec<_>>(),
        ));
    }
    let remaining = batchnorms_between_binarized_layers(&streamlined);
    Ok((name, report, remaining))
}

#[test]
fn streamline_every_model() {
    let dirs = model_dirs();
    assert!(
        dirs.len() >= EXPECTED.len(),
        "expected the models of tests/data, found {}",
        dirs.len()
    );
    let mut failures = Vec::new();
    for dir in &dirs {
        let (name, report, remaining) = match check_model(dir) {
            Ok(checked) => checked,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        eprintln!("== {name}: {report}");
        let folds = report.count("fold-batchnorm-to-threshold");
        let Some(&(_, want_folds, why_kept)) = EXPECTED.iter().find(|(m, ..)| *m == name) else {
            // A new model is exact (checked above), but what it folds is only checked once
            // EXPECTED says what it should fold.
            failures.push(format!(
                "{name} is not in EXPECTED: add it with its {folds} folds (BatchNorms left: {remaining:?})"
            ));
            continue;
        };
        if folds != want_folds {
            failures.push(format!(
                "{name}: {folds} folds, expected {want_folds}\n{report}"
            ));
        }
        match why_kept {
            None if !remaining.is_empty() => failures.push(format!(
                "{name}: BatchNorms left between binarized layers: {remaining:?}\n{report}"
            )),
            Some(why) if !report.declined.iter().any(|d| d.reason.contains(why)) => {
                failures.push(format!("{name}: no decline says \"{why}\"\n{report}"))
            }
            _ => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Every BatchNorm of the binary MLPs folds, and the thresholds replace the BatchNorm and
/// quantizer: no float op is left between the first and the last layer.
#[test]
fn binary_mlp_folds_completely() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/models/tfc_w1a1");
    let graph = bnnc_frontend_onnx::load_model(&dir.join("model.onnx")).unwrap();
    let (streamlined, report) = streamline(&graph, &Limits::default()).unwrap();
    assert_eq!(report.count("fold-batchnorm-to-threshold"), 3, "{report}");
    let ops: Vec<&Op> = streamlined
        .node_ids()
        .map(|n| &streamlined.node(n).op)
        .collect();
    assert!(!ops.iter().any(|op| matches!(op, Op::BatchNorm { .. })));
    assert_eq!(
        ops.iter()
            .filter(|op| matches!(op, Op::Threshold(_)))
            .count(),
        3
    );
    // Each threshold reads an integer accumulator and gives bipolar values.
    for n in streamlined.node_ids() {
        let node = streamlined.node(n);
        if let Op::Threshold(attrs) = &node.op {
            assert_eq!(attrs.out_type, ElemType::BIPOLAR);
            assert!(matches!(
                streamlined.value(node.inputs[0]).ty.elem,
                ElemType::Int(_)
            ));
            assert!(
                node.name.starts_with("BatchNormalization_"),
                "{}",
                node.name
            );
        }
    }
}
