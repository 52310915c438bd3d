//! Op import on small in-memory models: attributes, opset differences, folding.

mod model_builder;

use bnnc_ir::{ConvAttrs, ElemType, Graph, IntType, Node, Op, PoolAttrs, RoundingMode, TruncAttrs};
use model_builder::{
    f32_tensor, float, i64_tensor, int, int8_tensor, ints, string, ModelBuilder, INT8, UINT8,
};

/// The graph's nodes, in the order they were added.
fn nodes(g: &Graph) -> Vec<&Node> {
    g.node_ids().map(|n| g.node(n)).collect()
}

/// The op of the graph's only node.
fn only_op(g: &Graph) -> &Op {
    match nodes(g).as_slice() {
        [node] => &node.op,
        other => panic!("expected one node, found {}", other.len()),
    }
}

/// The shape of the graph's first output.
fn output_shape(g: &Graph) -> Vec<usize> {
    g.value(g.outputs()[0]).ty.shape.clone()
}

fn conv_model(input_hw: i64, auto_pad: &str) -> ModelBuilder {
    ModelBuilder::new(13)
        .input("x", &[1, 1, input_hw, input_hw])
        .initializer(f32_tensor("w", &[1, 1, 3, 3], &[1.0; 9]))
        .node(
            "Conv",
            &["x", "w"],
            &["y"],
            vec![string("auto_pad", auto_pad), ints("strides", &[2, 2])],
        )
        .output("y")
}

#[test]
fn conv_same_upper_resolves_pads() {
    let g = conv_model(5, "SAME_UPPER").import_ok();
    let expected = ConvAttrs {
        kernel: vec![3, 3],
        strides: vec![2, 2],
        dilations: vec![1, 1],
        pads: vec![1, 1, 1, 1],
        group: 1,
    };
    assert_eq!(only_op(&g), &Op::Conv(expected));
    assert_eq!(output_shape(&g), [1, 1, 3, 3]);

    // An even extent needs one pad: at the end for SAME_UPPER, at the beginning for SAME_LOWER.
    let Op::Conv(upper) = only_op(&conv_model(4, "SAME_UPPER").import_ok()).clone() else {
        panic!()
    };
    assert_eq!(upper.pads, [0, 0, 1, 1]);
    let Op::Conv(lower) = only_op(&conv_model(4, "SAME_LOWER").import_ok()).clone() else {
        panic!()
    };
    assert_eq!(lower.pads, [1, 1, 0, 0]);
    let Op::Conv(valid) = only_op(&conv_model(5, "VALID").import_ok()).clone() else {
        panic!()
    };
    assert_eq!(valid.pads, [0, 0, 0, 0]);
    assert!(conv_model(5, "SAME_MIDDLE")
        .import_err()
        .contains("unknown auto_pad `SAME_MIDDLE`"));
}

#[test]
fn reshape_resolves_zero_and_minus_one() {
    let model = |allowzero: i64| {
        ModelBuilder::new(14)
            .input("x", &[2, 3, 4])
            .initializer(i64_tensor("shape", &[2], &[0, -1]))
            .node(
                "Reshape",
                &["x", "shape"],
                &["y"],
                vec![int("allowzero", allowzero)],
            )
            .output("y")
    };
    let g = model(0).import_ok();
    assert_eq!(only_op(&g), &Op::Reshape { shape: vec![2, 12] });
    assert_eq!(output_shape(&g), [2, 12]);
    // With allowzero, 0 is a real extent: 24 elements cannot have one.
    assert!(model(1).import_err().contains("cannot reshape"));
}

/// `Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1]))`, as old PyTorch exports write
/// `x.view(x.size(0), -1)`.
fn dynamic_flatten(opset: i64) -> ModelBuilder {
    // Unsqueeze's axes: an attribute before opset 13, an operand from 13 on.
    let (unsqueeze_inputs, unsqueeze_attrs): (&[&str], _) = if opset < 13 {
        (&["batch"], vec![ints("axes", &[0])])
    } else {
        (&["batch", "axes"], vec![])
    };
    ModelBuilder::new(opset)
        .input("x", &[-1, 1, 28, 28])
        .initializer(i64_tensor("zero", &[], &[0]))
        .initializer(i64_tensor("minus_one", &[1], &[-1]))
        .initializer(i64_tensor("axes", &[1], &[0]))
        .node("Shape", &["x"], &["shape"], vec![])
        .node(
            "Gather",
            &["shape", "zero"],
            &["batch"],
            vec![int("axis", 0)],
        )
        .node(
            "Unsqueeze",
            unsqueeze_inputs,
            &["batch_1d"],
            unsqueeze_attrs,
        )
        .node(
            "Concat",
            &["batch_1d", "minus_one"],
            &["target"],
            vec![int("axis", 0)],
        )
        .node("Reshape", &["x", "target"], &["y"], vec![])
        .output("y")
}

#[test]
fn shape_arithmetic_folds_to_a_constant() {
    for opset in [9, 11, 13, 21] {
        let g = dynamic_flatten(opset).import_ok();
        assert_eq!(
            only_op(&g),
            &Op::Reshape {
                shape: vec![1, 784]
            },
            "opset {opset}"
        );
        // The folded chain leaves no constant behind.
        assert_eq!(g.num_values(), 2, "opset {opset}");
    }
}

#[test]
fn integer_arithmetic_on_shapes_folds_and_float_arithmetic_stays() {
    let g = ModelBuilder::new(13)
        .input("x", &[2, 6])
        .initializer(i64_tensor("divisors", &[2], &[2, 1]))
        .initializer(i64_tensor("two", &[], &[2]))
        .initializer(i64_tensor("batch_down", &[2], &[1, 0]))
        .initializer(f32_tensor("half", &[], &[0.5]))
        .node("Shape", &["x"], &["shape"], vec![])
        .node("Div", &["shape", "divisors"], &["halved"], vec![])
        .node("Mul", &["halved", "two"], &["doubled"], vec![])
        .node("Sub", &["doubled", "batch_down"], &["target"], vec![])
        .node("Reshape", &["x", "target"], &["y"], vec![])
        .node("Mul", &["y", "half"], &["z"], vec![])
        .output("z")
        .import_ok();
    let ops: Vec<&Op> = nodes(&g).iter().map(|n| &n.op).collect();
    assert_eq!(
        ops,
        [
            &Op::Reshape { shape: vec![1, 12] },
            &Op::Binary(bnnc_ir::BinaryOp::Mul)
        ]
    );
}

fn clip_model(opset: i64) -> ModelBuilder {
    let model = ModelBuilder::new(opset).input("x", &[1, 4]);
    if opset < 11 {
        model
            .node(
                "Clip",
                &["x"],
                &["y"],
                vec![float("min", -1.0), float("max", 1.0)],
            )
            .output("y")
    } else {
        model
            .initializer(f32_tensor("lo", &[], &[-1.0]))
            .node("Clip", &["x", "lo"], &["y"], vec![])
            .output("y")
    }
}

#[test]
fn clip_bounds_by_opset() {
    assert_eq!(
        only_op(&clip_model(9).import_ok()),
        &Op::Clip {
            min: -1.0,
            max: 1.0
        }
    );
    // From opset 11 the bounds are operands; an omitted one is infinite.
    assert_eq!(
        only_op(&clip_model(13).import_ok()),
        &Op::Clip {
            min: -1.0,
            max: f32::INFINITY
        }
    );
    let runtime_bound = ModelBuilder::new(13)
        .input("x", &[1, 4])
        .input("lo", &[1])
        .node("Clip", &["x", "lo"], &["y"], vec![])
        .output("y");
    assert!(runtime_bound
        .import_err()
        .contains("the lower bound (operand 1) must be a constant"));
}

#[test]
fn initializers_listed_as_inputs_are_constants() {
    let g = ModelBuilder::new(9)
        .input("x", &[1, 4])
        .input("w", &[4, 2])
        .initializer(f32_tensor("w", &[4, 2], &[0.5; 8]))
        .node("MatMul", &["x", "w"], &["y"], vec![])
        .output("y")
        .import_ok();
    assert_eq!(g.inputs().len(), 1);
    assert_eq!(g.value(g.inputs()[0]).name, "x");
    assert!(g.const_data(nodes(&g)[0].inputs[1]).is_some());
}

#[test]
fn symbolic_extents_become_one() {
    let g = ModelBuilder::new(13)
        .input("x", &[-1, 3])
        .node("Relu", &["x"], &["y"], vec![])
        .output("y")
        .import_ok();
    assert_eq!(g.value(g.inputs()[0]).ty.shape, [1, 3]);
}

#[test]
fn unsupported_ops_are_named() {
    let err = ModelBuilder::new(13)
        .input("x", &[1, 4])
        .node("Erf", &["x"], &["y"], vec![])
        .output("y")
        .import_err();
    assert_eq!(err, "node `Erf_y` (Erf): unsupported op");

    let unnamed = ModelBuilder::new(13)
        .input("x", &[1, 4])
        .node("Relu", &["x"], &["r"], vec![])
        .node("Erf", &["r"], &["y"], vec![])
        .output("y")
        .with(|m| m.graph.as_mut().unwrap().node[1].name.clear());
    assert_eq!(unnamed.import_err(), "node `Erf_1` (Erf): unsupported op");

    let err = ModelBuilder::new(13)
        .input("x", &[1, 4])
        .domain_node("com.microsoft", "Gelu", &["x"], &["y"], vec![])
        .output("y")
        .import_err();
    assert!(
        err.contains("node `Gelu_y` (Gelu): unsupported op (domain `com.microsoft`)"),
        "{err}"
    );
}

#[test]
fn opsets_out_of_range_are_rejected() {
    for opset in [6, 26] {
        let err = ModelBuilder::new(opset)
            .input("x", &[1])
            .node("Relu", &["x"], &["y"], vec![])
            .output("y")
            .import_err();
        assert!(
            err.contains(&format!(
                "opset {opset} of domain `ai.onnx` is not supported"
            )),
            "{err}"
        );
    }
}

#[test]
fn identity_keeps_the_output_name() {
    let g = ModelBuilder::new(13)
        .input("x", &[1, 4])
        .node("Relu", &["x"], &["r"], vec![])
        .node("Identity", &["r"], &["y"], vec![])
        .output("y")
        .import_ok();
    assert_eq!(g.num_nodes(), 1);
    assert_eq!(g.value(g.outputs()[0]).name, "y");
}

#[test]
fn quant_attributes_and_defaults() {
    let model = |attrs| {
        ModelBuilder::new(13)
            .input("x", &[1, 4])
            .initializer(f32_tensor("s", &[], &[0.5]))
            .initializer(f32_tensor("z", &[], &[0.0]))
            .initializer(f32_tensor("b", &[], &[4.0]))
            .domain_node(
                "onnx.brevitas",
                "Quant",
                &["x", "s", "z", "b"],
                &["y"],
                attrs,
            )
            .output("y")
    };
    let g = model(vec![]).import_ok();
    let Op::Quant(attrs) = only_op(&g) else {
        panic!()
    };
    assert!(attrs.signed && !attrs.narrow && attrs.rounding == RoundingMode::HalfEven);
    assert_eq!(
        g.value(g.outputs()[0]).ty.elem.int_type(),
        Some(IntType::Signed(4))
    );

    let g = model(vec![
        int("signed", 0),
        int("narrow", 1),
        string("rounding_mode", "FLOOR"),
    ])
    .import_ok();
    let Op::Quant(attrs) = only_op(&g) else {
        panic!()
    };
    assert!(!attrs.signed && attrs.narrow && attrs.rounding == RoundingMode::Floor);
    assert!(model(vec![string("rounding_mode", "STOCHASTIC")])
        .import_err()
        .contains("unknown rounding_mode `STOCHASTIC`"));
}

#[test]
fn trunc_v2_takes_the_output_scale_last() {
    let names = ["x", "s", "z", "ib", "os", "ob"];
    let mut model = ModelBuilder::new(13).input("x", &[1, 4]);
    for (name, v) in names[1..].iter().zip([0.5, 0.0, 8.0, 2.0, 4.0]) {
        model = model.initializer(f32_tensor(name, &[], &[v]));
    }
    let g = model
        .domain_node("qonnx.custom_op.general", "Trunc", &names, &["y"], vec![])
        .output("y")
        .import_ok();
    let node = nodes(&g)[0];
    assert_eq!(
        node.op,
        Op::Trunc(TruncAttrs {
            rounding: RoundingMode::Floor,
            signed: true,
            narrow: false,
            v2: true
        })
    );
    let operand_names: Vec<&str> = node
        .inputs
        .iter()
        .map(|&v| g.value(v).name.as_str())
        .collect();
    assert_eq!(operand_names, ["x", "s", "z", "ib", "ob", "os"]);
}

#[test]
fn multithreshold_layout_and_type() {
    let model = |layout: &str| {
        ModelBuilder::new(11)
            .input("x", &[1, 4, 4, 3])
            .initializer(f32_tensor(
                "t",
                &[3, 3],
                &[0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0, 1.0, 2.0],
            ))
            .domain_node(
                "finn",
                "MultiThreshold",
                &["x", "t"],
                &["y"],
                vec![string("out_dtype", "UINT2"), string("data_layout", layout)],
            )
            .output("y")
    };
    let g = model("NHWC").import_ok();
    let Op::MultiThreshold(attrs) = only_op(&g) else {
        panic!()
    };
    assert_eq!(
        (attrs.channel_axis, attrs.out_scale, attrs.out_bias),
        (3, 1.0, 0.0)
    );
    assert_eq!(attrs.out_type, ElemType::Int(IntType::Unsigned(2)));
    // NCHW would read 4 channels where the thresholds have 3 rows.
    let err = model("NCHW").import_err();
    assert!(
        err.starts_with("node `MultiThreshold_y` (MultiThreshold): "),
        "{err}"
    );
}

#[test]
fn quantize_linear_takes_its_type_from_the_zero_point() {
    let model = |zero_point: Option<(i32, i32)>| {
        let model = ModelBuilder::new(13)
            .input("x", &[1, 4])
            .initializer(f32_tensor("s", &[], &[0.1]));
        match zero_point {
            Some((data_type, v)) => model
                .initializer(int8_tensor("zp", data_type, &[], &[v]))
                .node("QuantizeLinear", &["x", "s", "zp"], &["q"], vec![]),
            None => model.node("QuantizeLinear", &["x", "s"], &["q"], vec![]),
        }
        .output("q")
    };
    let out_type = |g: &Graph| match only_op(g) {
        Op::QuantizeLinear { out, .. } => *out,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        out_type(&model(Some((INT8, 0))).import_ok()),
        IntType::Signed(8)
    );
    assert_eq!(
        out_type(&model(Some((UINT8, 128))).import_ok()),
        IntType::Unsigned(8)
    );
    assert_eq!(out_type(&model(None).import_ok()), IntType::Unsigned(8));
}

#[test]
fn softmax_axis_by_opset() {
    let model = |opset| {
        ModelBuilder::new(opset)
            .input("x", &[1, 2, 3])
            .node("Softmax", &["x"], &["y"], vec![])
            .output("y")
    };
    assert_eq!(
        only_op(&model(11).import_ok()),
        &Op::Softmax {
            axis: 1,
            coerce_2d: true
        }
    );
    assert_eq!(
        only_op(&model(13).import_ok()),
        &Op::Softmax {
            axis: 2,
            coerce_2d: false
        }
    );
}

#[test]
fn top_k_by_opset() {
    let attr_k = ModelBuilder::new(9)
        .input("x", &[1, 10])
        .node("TopK", &["x"], &["v", "i"], vec![int("k", 3)])
        .output("i");
    let g = attr_k.import_ok();
    assert_eq!(
        only_op(&g),
        &Op::TopK {
            k: 3,
            axis: 1,
            largest: true,
            sorted: true
        }
    );
    assert_eq!(g.value(g.outputs()[0]).ty.elem, ElemType::I64);

    let input_k = ModelBuilder::new(11)
        .input("x", &[1, 10])
        .initializer(i64_tensor("k", &[1], &[2]))
        .node("TopK", &["x", "k"], &["v", ""], vec![int("largest", 0)])
        .output("v");
    assert_eq!(
        only_op(&input_k.import_ok()),
        &Op::TopK {
            k: 2,
            axis: 1,
            largest: false,
            sorted: true
        }
    );
}

#[test]
fn pads_by_opset() {
    let attrs = ModelBuilder::new(9)
        .input("x", &[1, 2])
        .node(
            "Pad",
            &["x"],
            &["y"],
            vec![ints("pads", &[0, 1, 0, 2]), float("value", -1.0)],
        )
        .output("y");
    assert_eq!(
        only_op(&attrs.import_ok()),
        &Op::Pad {
            pads: vec![0, 1, 0, 2],
            value: -1.0
        }
    );

    let operands = |pads: &[i64]| {
        ModelBuilder::new(18)
            .input("x", &[1, 2, 3])
            .initializer(i64_tensor("pads", &[2], pads))
            .initializer(i64_tensor("axes", &[1], &[-1]))
            .node("Pad", &["x", "pads", "", "axes"], &["y"], vec![])
            .output("y")
    };
    assert_eq!(
        only_op(&operands(&[1, 2]).import_ok()),
        &Op::Pad {
            pads: vec![0, 0, 1, 0, 0, 2],
            value: 0.0
        }
    );
    assert!(operands(&[-1, 0]).import_err().contains("negative pad -1"));
}

#[test]
fn pools_and_reductions() {
    let g = ModelBuilder::new(13)
        .input("x", &[1, 2, 5, 5])
        .node(
            "MaxPool",
            &["x"],
            &["m"],
            vec![
                ints("kernel_shape", &[2, 2]),
                ints("strides", &[2, 2]),
                int("ceil_mode", 1),
            ],
        )
        .node(
            "ReduceMean",
            &["m"],
            &["y"],
            vec![ints("axes", &[-1, -2]), int("keepdims", 0)],
        )
        .output("y")
        .import_ok();
    let ops: Vec<&Op> = nodes(&g).iter().map(|n| &n.op).collect();
    let pool = PoolAttrs {
        kernel: vec![2, 2],
        strides: vec![2, 2],
        dilations: vec![1, 1],
        pads: vec![0; 4],
        ceil_mode: true,
        count_include_pad: false,
    };
    assert_eq!(
        ops,
        [
            &Op::MaxPool(pool),
            &Op::ReduceMean {
                axes: vec![2, 3],
                keep_dims: false
            }
        ]
    );
    assert_eq!(output_shape(&g), [1, 2]);

    let indices = ModelBuilder::new(13)
        .input("x", &[1, 1, 4, 4])
        .node(
            "MaxPool",
            &["x"],
            &["m", "idx"],
            vec![ints("kernel_shape", &[2, 2])],
        )
        .output("m");
    assert!(indices.import_err().contains("indices"));
}

#[test]
fn squeeze_unsqueeze_flatten_are_reshapes() {
    let g = ModelBuilder::new(11)
        .input("x", &[1, 3, 1, 2])
        .node("Squeeze", &["x"], &["s"], vec![ints("axes", &[2])])
        .node("Unsqueeze", &["s"], &["u"], vec![ints("axes", &[-1])])
        .node("Flatten", &["u"], &["y"], vec![int("axis", 2)])
        .output("y")
        .import_ok();
    let ops: Vec<&Op> = nodes(&g).iter().map(|n| &n.op).collect();
    assert_eq!(
        ops,
        [
            &Op::Reshape {
                shape: vec![1, 3, 2]
            },
            &Op::Reshape {
                shape: vec![1, 3, 2, 1]
            },
            &Op::Reshape { shape: vec![3, 2] }
        ]
    );
}

#[test]
fn finn_annotations_type_inputs_and_initializers() {
    let model = |weights: &[f32]| {
        ModelBuilder::new(11)
            .input("x", &[1, 2])
            .initializer(f32_tensor("w", &[2, 2], weights))
            .node("MatMul", &["x", "w"], &["y"], vec![])
            .output("y")
            .annotate("x", "BIPOLAR")
            .annotate("w", "BIPOLAR")
            .annotate("y", "INT32")
    };
    let g = model(&[1.0, -1.0, -1.0, 1.0]).import_ok();
    assert_eq!(g.value(g.inputs()[0]).ty.elem, ElemType::BIPOLAR);
    assert_eq!(g.value(nodes(&g)[0].inputs[1]).ty.elem, ElemType::BIPOLAR);
    let err = model(&[1.0, 0.5, -1.0, 1.0]).import_err();
    assert!(err.contains("`w`") && err.contains("0.5"), "{err}");
}

/// Integer and bool graph inputs: 8 and 16 bit integers and bools keep their range; wider
/// integers are their float32 rounding (what Cast to float computes). Their users may only be
/// Cast to float, or DequantizeLinear of integers up to 32 bits.
#[test]
fn integer_and_bool_inputs_feed_only_casts_and_dequantizers() {
    const BOOL: i32 = 9;
    const INT32: i32 = 6;
    const INT64: i32 = 7;
    const UINT32: i32 = 12;
    const UINT64: i32 = 13;
    let cast = |elem_type: i32| {
        ModelBuilder::new(13)
            .typed_input("x", elem_type, &[1, 4])
            .node("Cast", &["x"], &["y"], vec![int("to", 1)])
            .output("y")
    };
    for (elem_type, want) in [
        (UINT8, ElemType::Int(IntType::Unsigned(8))),
        (BOOL, ElemType::BINARY),
        (INT32, ElemType::F32),
        (INT64, ElemType::F32),
        (UINT32, ElemType::F32),
        (UINT64, ElemType::F32),
    ] {
        let g = cast(elem_type).import_ok();
        assert_eq!(g.value(g.inputs()[0]).ty.elem, want, "type {elem_type}");
        assert_eq!(g.declared_input_types.len(), 1);
    }
    assert_eq!(cast(UINT64).import_ok().declared_input_types, ["UINT64"]);
    let err = ModelBuilder::new(13)
        .typed_input("x", 10, &[1, 4])
        .node("Cast", &["x"], &["y"], vec![int("to", 1)])
        .output("y")
        .import_err();
    assert!(err.contains("FLOAT16"), "{err}");

    let dequantize = |elem_type: i32| {
        ModelBuilder::new(13)
            .typed_input("x", elem_type, &[1, 4])
            .initializer(f32_tensor("s", &[], &[0.5]))
            .node("DequantizeLinear", &["x", "s"], &["y"], vec![])
            .output("y")
    };
    dequantize(INT32).import_ok();
    for (elem_type, name) in [(INT64, "INT64"), (BOOL, "BOOL"), (UINT32, "UINT32")] {
        let err = dequantize(elem_type).import_err();
        assert!(
            err.contains(&format!("is {name} and feeds DequantizeLinear")),
            "{err}"
        );
    }
    for elem_type in [BOOL, INT64, UINT8] {
        let err = ModelBuilder::new(13)
            .typed_input("x", elem_type, &[1, 4])
            .node("Relu", &["x"], &["y"], vec![])
            .output("y")
            .import_err();
        assert!(err.contains("feeds Relu"), "{err}");
    }
}

#[test]
fn constant_nodes_and_casts_fold() {
    let g = ModelBuilder::new(13)
        .input("x", &[1, 6])
        .node("Constant", &[], &["c"], vec![ints("value_ints", &[3, 2])])
        .node("Cast", &["c"], &["cf"], vec![int("to", 1)])
        .node("Cast", &["cf"], &["ci"], vec![int("to", 7)])
        .node("Reshape", &["x", "ci"], &["y"], vec![])
        .output("y")
        .import_ok();
    assert_eq!(only_op(&g), &Op::Reshape { shape: vec![3, 2] });

    let runtime_gather = ModelBuilder::new(13)
        .input("x", &[2, 3])
        .initializer(i64_tensor("i", &[], &[0]))
        .node("Gather", &["x", "i"], &["y"], vec![])
        .output("y");
    assert!(runtime_gather
        .import_err()
        .contains("Gather of a value computed at run time is not supported"));
}

fn resize(attrs: Vec<bnnc_frontend_onnx::proto::AttributeProto>, scales: &[f32]) -> ModelBuilder {
    ModelBuilder::new(13)
        .input("x", &[1, 1, 2, 2])
        .initializer(f32_tensor("scales", &[4], scales))
        .node("Resize", &["x", "", "scales"], &["y"], attrs)
        .output("y")
}

/// Resize is imported only where it repeats elements (nearest, whole factors, a mapping that
/// reads `i / factor`); anything else is refused with the reason.
#[test]
fn resize_is_nearest_repetition_or_refused() {
    let g = resize(
        vec![
            string("coordinate_transformation_mode", "asymmetric"),
            string("nearest_mode", "floor"),
        ],
        &[1.0, 1.0, 2.0, 3.0],
    )
    .import_ok();
    let ops: Vec<&str> = nodes(&g).iter().map(|n| n.op.name()).collect();
    assert_eq!(ops, ["reshape", "concat", "concat", "reshape"]);
    let linear = resize(vec![string("mode", "linear")], &[1.0, 1.0, 2.0, 2.0]).import_err();
    assert!(
        linear.contains("mode `linear` is not supported"),
        "{linear}"
    );
    // Asymmetric with rounding up reads input 1 for output 1: not a repetition.
    let ceil = resize(
        vec![
            string("coordinate_transformation_mode", "asymmetric"),
            string("nearest_mode", "ceil"),
        ],
        &[1.0, 1.0, 2.0, 2.0],
    )
    .import_err();
    assert!(ceil.contains("not a repetition of each element"), "{ceil}");
    let down = resize(vec![], &[1.0, 1.0, 0.5, 0.5]).import_err();
    assert!(down.contains("not upsampling by a whole factor"), "{down}");
}

/// The quantizer of QKeras' `quantized_relu` as tf2onnx writes it: Neg, Round, Min / Max,
/// LessOrEqual, Not and Cast of the bool to float.
#[test]
fn tf2onnx_quantizer_ops_import() {
    use bnnc_ir::{BinaryOp, CompareOp};
    let g = ModelBuilder::new(13)
        .input("x", &[1, 4])
        .initializer(f32_tensor("top", &[], &[0.9375]))
        .initializer(f32_tensor("zero", &[], &[0.0]))
        .node("Neg", &["x"], &["n"], vec![])
        .node("Round", &["n"], &["r"], vec![])
        .node("Abs", &["r"], &["a"], vec![])
        .node("Min", &["a", "top", "x"], &["lo"], vec![])
        .node("Max", &["lo", "zero"], &["c"], vec![])
        .node("LessOrEqual", &["x", "top"], &["le"], vec![])
        .node("Not", &["le"], &["gt"], vec![])
        .node("Cast", &["gt"], &["gtf"], vec![int("to", 1)])
        .node("Mul", &["gtf", "c"], &["y"], vec![])
        .output("y")
        .import_ok();
    let ops: Vec<Op> = nodes(&g).iter().map(|n| n.op.clone()).collect();
    assert_eq!(
        ops,
        [
            Op::Binary(BinaryOp::Mul),
            Op::Round,
            Op::Abs,
            Op::Binary(BinaryOp::Min),
            Op::Binary(BinaryOp::Min),
            Op::Binary(BinaryOp::Max),
            Op::Compare(CompareOp::LessOrEqual),
            Op::Compare(CompareOp::Equal),
            Op::Binary(BinaryOp::Mul),
        ]
    );
    // Neg multiplies by -1; Not compares with 0; the comparisons are 0 / 1 values.
    let neg = nodes(&g)[0];
    assert_eq!(g.const_data(neg.inputs[1]).unwrap().to_f32_vec(), [-1.0]);
    let le = nodes(&g)[6];
    assert_eq!(g.value(le.outputs[0]).ty.elem, ElemType::BINARY);

    // One operand of Min is that operand; Not takes only a bool.
    let single = ModelBuilder::new(13)
        .input("x", &[1, 4])
        .node("Max", &["x"], &["y"], vec![])
        .output("y")
        .import_ok();
    assert_eq!(g.num_nodes(), 9);
    assert_eq!(single.num_nodes(), 0);
    let err = ModelBuilder::new(13)
        .input("x", &[1, 4])
        .node("Not", &["x"], &["y"], vec![])
        .output("y")
        .import_err();
    assert!(err.contains("Not of a f32 value"), "{err}");
}

/// FINN's lowered ops name what they cannot take: XnorPopcountMatMul on operands that are not
/// bits, Im2Col with a padding value other than 0.
#[test]
fn finn_lowered_ops_refuse_what_they_do_not_define() {
    let xnor = |annotation: &str, weights: &[f32]| {
        ModelBuilder::new(13)
            .input("x", &[1, 4])
            .initializer(f32_tensor("t", &[1, 1], &[0.0]))
            .initializer(f32_tensor("w", &[4, 2], weights))
            .domain_node(
                "qonnx.custom_op.general",
                "MultiThreshold",
                &["x", "t"],
                &["a"],
                vec![string("out_dtype", annotation)],
            )
            .domain_node(
                "qonnx.custom_op.general",
                "XnorPopcountMatMul",
                &["a", "w"],
                &["y"],
                vec![],
            )
            .output("y")
    };
    let bits = [0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0];
    let g = xnor("BINARY", &bits).import_ok();
    assert!(g.node_ids().any(|n| g.node(n).op == Op::BipolarQuant));
    let err = xnor("UINT2", &bits).import_err();
    assert!(
        err.contains("(XnorPopcountMatMul): operand 0 is u2, not BINARY"),
        "{err}"
    );
    let err = xnor("BINARY", &[0.0, 1.0, -1.0, 0.0, 1.0, 1.0, 0.0, 0.0]).import_err();
    assert!(err.contains("operand 1 holds -1"), "{err}");

    let im2col = |kernel: i64, pad_value: i64| {
        ModelBuilder::new(13)
            .input("x", &[1, 4, 4, 2])
            .domain_node(
                "qonnx.custom_op.general",
                "Im2Col",
                &["x"],
                &["y"],
                vec![
                    ints("stride", &[1, 1]),
                    ints("kernel_size", &[kernel, kernel]),
                    string("input_shape", "(1, 4, 4, 2)"),
                    ints("pad_amount", &[1, 1, 1, 1]),
                    int("pad_value", pad_value),
                ],
            )
            .output("y")
    };
    let g = im2col(3, 0).import_ok();
    let y = g.outputs()[0];
    assert_eq!(g.value(y).ty.shape, [1, 4, 4, 18]);
    // qonnx's order: per output pixel, taps row-major, channels innermost; zeros outside.
    let x: Vec<f32> = (0..32).map(|v| v as f32 + 1.0).collect();
    let input = bnnc_ir::Tensor::f32(vec![1, 4, 4, 2], x.clone());
    let got = bnnc_ir::interp::run(&g, &[input]).unwrap()[0].to_f32_vec();
    let mut want = Vec::new();
    for (oy, ox) in (0..4).flat_map(|oy| (0..4).map(move |ox| (oy, ox))) {
        for (ky, kx) in (0..3).flat_map(|ky| (0..3).map(move |kx| (ky, kx))) {
            let (iy, ix) = (oy + ky, ox + kx);
            for ch in 0..2 {
                let inside = (1..=4).contains(&iy) && (1..=4).contains(&ix);
                want.push(if inside {
                    x[((iy - 1) * 4 + ix - 1) * 2 + ch]
                } else {
                    0.0
                });
            }
        }
    }
    assert_eq!(got, want);
    let err = im2col(3, 1).import_err();
    assert!(err.contains("(Im2Col): a pad_value other than 0"), "{err}");

    // Untrusted sizes: errors, not overflow or unbounded memory.
    let huge = im2col(1 << 20, 0).import_err();
    assert!(
        huge.contains("more picks than bnnc's tensor limit"),
        "{huge}"
    );
    let pool = ModelBuilder::new(13)
        .input("x", &[1, 2, 4, 4])
        .domain_node(
            "qonnx.custom_op.general",
            "QuantAvgPool2d",
            &["x"],
            &["y"],
            vec![
                int("kernel", 1 << 40),
                int("stride", 1),
                int("ibits", 4),
                int("obits", 4),
                int("signed", 0),
            ],
        )
        .output("y")
        .import_err();
    assert!(pool.contains("overflows the accumulator's width"), "{pool}");
}
