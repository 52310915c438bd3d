//! Hostile and broken files: external data that escapes the model's directory, sizes that do
//! not match, huge shapes, truncated and garbage protobuf. Every case is an error, never a
//! panic or a huge allocation.

mod model_builder;

use std::path::Path;

use bnnc_frontend_onnx::{import_model, load_model, FrontendError};
use model_builder::{external_tensor, f32_tensor, ModelBuilder, TempDir};

/// `y = x + w` with `w` (4 floats) as given.
fn add_model(w: bnnc_frontend_onnx::proto::TensorProto) -> ModelBuilder {
    ModelBuilder::new(13)
        .input("x", &[4])
        .initializer(w)
        .node("Add", &["x", "w"], &["y"], vec![])
        .output("y")
}

/// Writes `model` as `dir/model.onnx` next to a 32-byte `dir/weights.bin` (8 floats 0..8) and
/// loads it.
fn load_beside_weights(dir: &Path, model: &ModelBuilder) -> Result<bnnc_ir::Graph, FrontendError> {
    let weights: Vec<u8> = (0..8).flat_map(|i| (i as f32).to_le_bytes()).collect();
    std::fs::write(dir.join("weights.bin"), weights).unwrap();
    std::fs::write(dir.join("model.onnx"), model.to_bytes()).unwrap();
    load_model(&dir.join("model.onnx"))
}

#[test]
fn external_data_is_read_from_the_models_directory() {
    let dir = TempDir::new("external-ok");
    let g = load_beside_weights(
        dir.path(),
        &add_model(external_tensor("w", &[4], "weights.bin", 16, 16)),
    )
    .unwrap();
    let add = g.node(g.node_ids().next().unwrap());
    assert_eq!(
        g.const_data(add.inputs[1]).unwrap().as_f32().unwrap(),
        [4.0, 5.0, 6.0, 7.0]
    );
}

#[test]
fn external_data_may_not_escape() {
    let dir = TempDir::new("external-escape");
    let inner = dir.path().join("model");
    std::fs::create_dir(&inner).unwrap();
    std::fs::write(dir.path().join("secret.bin"), [0u8; 16]).unwrap();
    for location in ["../secret.bin", "sub/../../secret.bin", "/etc/passwd"] {
        let err = load_beside_weights(
            &inner,
            &add_model(external_tensor("w", &[4], location, 0, 16)),
        )
        .unwrap_err();
        assert!(
            matches!(err, FrontendError::ExternalData { .. }),
            "{location}: {err}"
        );
        assert!(
            err.to_string()
                .contains("tensor `w`: external data: location"),
            "{location}: {err}"
        );
    }
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(dir.path().join("secret.bin"), inner.join("link.bin")).unwrap();
        let err = load_beside_weights(
            &inner,
            &add_model(external_tensor("w", &[4], "link.bin", 0, 16)),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("leads outside the model's directory"),
            "{err}"
        );
    }
}

#[test]
fn external_ranges_are_checked() {
    let dir = TempDir::new("external-range");
    let cases = [
        (
            external_tensor("w", &[4], "weights.bin", 24, 16),
            "outside `weights.bin`",
        ),
        (
            external_tensor("w", &[4], "weights.bin", u64::MAX, 16),
            "past the end",
        ),
        (
            external_tensor("w", &[4], "weights.bin", 0, 12),
            "holds 12 bytes, the tensor's shape needs 16",
        ),
        (
            external_tensor("w", &[4], "missing.bin", 0, 16),
            "cannot open `missing.bin`",
        ),
    ];
    for (tensor, expected) in cases {
        let err = load_beside_weights(dir.path(), &add_model(tensor))
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{err}");
    }
    // From memory there is no directory to read from.
    let err = add_model(external_tensor("w", &[4], "weights.bin", 0, 16)).import_err();
    assert!(err.contains("without a directory"), "{err}");
}

#[test]
fn raw_data_length_must_match_the_shape() {
    let mut w = f32_tensor("w", &[4], &[1.0; 4]);
    w.raw_data.pop();
    let err = add_model(w).import_err();
    assert_eq!(
        err,
        "tensor `w`: raw_data holds 15 bytes, shape [4] of FLOAT needs 16"
    );
}

#[test]
fn huge_shapes_are_rejected_before_allocating() {
    for dims in [
        vec![1 << 40, 1 << 40],
        vec![3_000_000_000],
        vec![i64::MAX, 2],
        vec![-4],
    ] {
        let w = bnnc_frontend_onnx::proto::TensorProto {
            name: "w".into(),
            dims: dims.clone(),
            data_type: 1,
            ..Default::default()
        };
        let err = add_model(w).import_err();
        assert!(err.starts_with("tensor `w`: "), "{dims:?}: {err}");
    }
    // The same for external data, whose file is never opened.
    let err = add_model(external_tensor("w", &[1 << 33], "weights.bin", 0, 1 << 35)).import_err();
    assert!(err.contains("more than"), "{err}");
}

#[test]
fn truncated_models_are_errors_not_panics() {
    let bytes = add_model(f32_tensor("w", &[4], &[1.0; 4])).to_bytes();
    assert!(import_model(&bytes, None).is_ok());
    // Every prefix either decodes to a smaller model or fails; none panics.
    for len in 0..bytes.len() {
        let _ = import_model(&bytes[..len], None);
    }
    let err = import_model(&bytes[..bytes.len() / 2], None).unwrap_err();
    assert!(matches!(err, FrontendError::Decode(_)), "{err}");
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    assert!(matches!(
        import_model(&[0xff; 64], None),
        Err(FrontendError::Decode(_))
    ));
    assert!(matches!(
        import_model(&[], None),
        Err(FrontendError::MissingOpset)
    ));
    // A deterministic stream of pseudo-random bytes, and the model with random bytes flipped.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let model = add_model(f32_tensor("w", &[4], &[1.0; 4])).to_bytes();
    for round in 0..2000 {
        let bytes: Vec<u8> = if round % 2 == 0 {
            (0..(next() % 256)).map(|_| next() as u8).collect()
        } else {
            let mut m = model.clone();
            let at = (next() as usize) % m.len();
            m[at] = next() as u8;
            m
        };
        let _ = import_model(&bytes, None);
    }
}

#[test]
fn missing_files_and_graph_names() {
    let err = load_model(Path::new("/nonexistent/model.onnx")).unwrap_err();
    assert!(matches!(err, FrontendError::Read { .. }), "{err}");

    let dir = TempDir::new("names");
    let unnamed = add_model(f32_tensor("w", &[4], &[1.0; 4]))
        .with(|m| m.graph.as_mut().unwrap().name.clear());
    std::fs::write(dir.path().join("tiny_net.onnx"), unnamed.to_bytes()).unwrap();
    assert_eq!(
        load_model(&dir.path().join("tiny_net.onnx")).unwrap().name,
        "tiny_net"
    );
    assert_eq!(unnamed.import_ok().name, "model");
}

#[test]
fn undefined_operands_and_outputs_are_named() {
    let err = ModelBuilder::new(13)
        .input("x", &[4])
        .node("Add", &["x", "ghost"], &["y"], vec![])
        .output("y")
        .import_err();
    assert_eq!(
        err,
        "node `Add_y` (Add): operand `ghost` is not defined by any node, input or initializer"
    );
    let err = ModelBuilder::new(13)
        .input("x", &[4])
        .node("Relu", &["x"], &["y"], vec![])
        .output("z")
        .import_err();
    assert_eq!(
        err,
        "graph output `z`: is not defined by any node, input or initializer"
    );
    let err = ModelBuilder::new(13)
        .input("x", &[4])
        .node("Relu", &["x"], &["y"], vec![])
        .import_err();
    assert_eq!(err, "the graph has no outputs");
}

// Findings of the outside fuzzing run (issue 12): each is a test.

/// A Slice of a zero-extent constant with a negative step used to panic (`min > max` in the
/// clamp of the shape folder); it is an empty tensor.
#[test]
fn slice_of_nothing_backwards_is_empty() {
    use model_builder::{i64_tensor, int};
    let g = ModelBuilder::new(13)
        .input("x", &[1, 2])
        .initializer(f32_tensor("empty", &[0], &[]))
        .initializer(i64_tensor("starts", &[1], &[-1]))
        .initializer(i64_tensor("ends", &[1], &[i64::MIN]))
        .initializer(i64_tensor("axes", &[1], &[0]))
        .initializer(i64_tensor("steps", &[1], &[-1]))
        .node(
            "Slice",
            &["empty", "starts", "ends", "axes", "steps"],
            &["s"],
            vec![],
        )
        .node("Shape", &["s"], &["n"], vec![])
        .node("Concat", &["n", "n"], &["nn"], vec![int("axis", 0)])
        .node("Reshape", &["x", "nn"], &["y"], vec![])
        .output("y")
        .import();
    // Whatever the reshape makes of it, the result is a clean value or a clean error.
    if let Err(e) = g {
        assert!(!e.to_string().is_empty());
    }
}

/// A Pad whose result would hold 9e8 elements passed the import checks and aborted `bnnc
/// run` on a 3.6 GB allocation; the IR now refuses any tensor past its limit, naming it.
#[test]
fn a_huge_padded_result_is_refused_before_any_allocation() {
    use model_builder::{i64_tensor, string};
    let err = ModelBuilder::new(13)
        .input("x", &[1, 1, 2, 2])
        .initializer(i64_tensor("pads", &[8], &[0, 0, 0, 0, 0, 0, 30000, 30000]))
        .node(
            "Pad",
            &["x", "pads"],
            &["y"],
            vec![string("mode", "constant")],
        )
        .output("y")
        .import_err();
    assert!(
        err.contains("Pad_y") && err.contains("bnnc's limit for one tensor"),
        "{err}"
    );
}

/// A MultiThreshold whose declared type contradicts its levels: UINT1 with out_bias -1 gives
/// -1 and 0; BIPOLAR with scale 1 and bias 0 gives 0 and 1. The type follows the levels,
/// so no pass or backend takes -1/0 for bits (the bit-serial kernel used to negate the
/// result) or 0/1 for ±1 (the XNOR lowering used to refuse it).
#[test]
fn threshold_levels_decide_the_type_when_the_annotation_contradicts_them() {
    use bnnc_ir::{ElemType, IntType};
    use model_builder::{float, string};
    let model = |dtype: &str, scale: f32, bias: f32| {
        ModelBuilder::new(11)
            .input("x", &[1, 4])
            .initializer(f32_tensor("t", &[1, 1], &[0.5]))
            .domain_node(
                "qonnx.custom_op.general",
                "MultiThreshold",
                &["x", "t"],
                &["y"],
                vec![
                    string("out_dtype", dtype),
                    float("out_scale", scale),
                    float("out_bias", bias),
                ],
            )
            .output("y")
            .import_ok()
    };
    let ty = |g: &bnnc_ir::Graph| g.value(g.outputs()[0]).ty.elem.clone();
    assert_eq!(
        ty(&model("UINT1", 1.0, -1.0)),
        ElemType::Int(IntType::Signed(2))
    );
    assert_eq!(
        ty(&model("BIPOLAR", 1.0, 0.0)),
        ElemType::Int(IntType::Binary)
    );
    // Annotations that hold stay.
    assert_eq!(ty(&model("BIPOLAR", 2.0, -1.0)), ElemType::BIPOLAR);
    assert_eq!(
        ty(&model("UINT1", 1.0, 0.0)),
        ElemType::Int(IntType::Binary)
    );
}

/// Found by mutation fuzzing (`scripts/fuzz.sh compile`): a Resize scale of 1e30 made the
/// importer walk an output axis of `usize::MAX` elements (a hang), and a large whole factor
/// would make a Concat of that many copies. Both are refused before any work.
#[test]
fn resize_outputs_are_bounded_before_they_are_walked() {
    let resize = |scales: &[f32]| {
        ModelBuilder::new(13)
            .input("x", &[1, 1, 2, 2])
            .initializer(f32_tensor("scales", &[4], scales))
            .node("Resize", &["x", "", "scales"], &["y"], vec![])
            .output("y")
            .import_err()
    };
    let err = resize(&[1e30, 1.0, 2.0, 2.0]);
    assert!(err.contains("elements"), "{err}");
    let err = resize(&[1.0, 1.0, 1.0, 5000.0]);
    assert!(err.contains("is more than bnnc repeats"), "{err}");
}

/// Found by mutation fuzzing: an AveragePool whose kernel is 2^31 high (with pads just below it,
/// so the output keeps its size) made the interpreter list 2^31 taps per window and abort on a
/// 32 GiB allocation. A layer's windows may visit at most `MAX_WINDOW_TAPS` taps per plane.
#[test]
fn pooling_windows_are_bounded_before_they_are_listed() {
    use model_builder::ints;
    let err = ModelBuilder::new(13)
        .input("x", &[1, 3, 32, 32])
        .node(
            "AveragePool",
            &["x"],
            &["y"],
            vec![
                ints("kernel_shape", &[1 << 31, 2]),
                ints("pads", &[1 << 30, 1, (1 << 30) - 1, 0]),
            ],
        )
        .output("y")
        .import_err();
    assert!(err.contains("taps per channel, bnnc's limit"), "{err}");
}

/// Found by mutation fuzzing: a DepthToSpace block size of 2^40 overflowed `b * b`. Block
/// sizes are bounded before any shape arithmetic.
#[test]
fn block_sizes_are_bounded_before_shapes_are_computed() {
    use model_builder::int;
    for op in ["DepthToSpace", "SpaceToDepth"] {
        let err = ModelBuilder::new(13)
            .input("x", &[1, 4, 2, 2])
            .node(op, &["x"], &["y"], vec![int("blocksize", 1 << 40)])
            .output("y")
            .import_err();
        assert!(err.contains("is not in 1..="), "{op}: {err}");
    }
}
