//! ONNX's own node tests (tests/data/onnx-node, from the ONNX project) through the frontend and
//! the reference interpreter: a peer's suite for bnnc's semantics of the standard ops.
//!
//! Each folder holds model.onnx and test_data_set_0/{input,output}_N.pb. The first graph input
//! is fed at run time; the other inputs are bound as constants (initializers), the shape of the
//! models bnnc compiles, whose weights, shapes and quantizer parameters are constants.
//!
//! Each graph also runs through the optimization pipeline, which must not change its outputs,
//! and, where it has the native ABI's one input and one output, as native code from the
//! Cranelift backend, which must give the reference outputs too. A graph with an op the
//! backend has no kernel for is listed in [`NATIVE_UNSUPPORTED`] and must fail to compile
//! with an error saying so.
//!
//! A test that bnnc cannot run is listed in [`REJECTED`] with the reason, and must then fail
//! to import with an error saying so: never a wrong answer, never a silent skip.

use std::path::{Path, PathBuf};

use bnnc_frontend_onnx::proto::{ModelProto, TensorProto};
use bnnc_frontend_onnx::{decode_tensor_proto, import_proto};
use bnnc_ir::{Tensor, TensorData};
use libtest_mimic::{Arguments, Failed, Trial};
use prost::Message;

/// Float outputs agree within this relative tolerance (onnxruntime's and bnnc's sums and
/// transcendental functions may round differently), with [`ABS_TOL`] for values near zero.
const REL_TOL: f64 = 1e-5;
const ABS_TOL: f64 = 1e-6;

/// Tests whose expected values ONNX's generator wrote by hand to four digits (the inputs too,
/// rounded independently): compared at ONNX's own backend-test tolerance instead.
const FOUR_DIGIT_REFERENCE: &[&str] = &["test_averagepool_2d_ceil_last_window_starts_on_pad"];
const FOUR_DIGIT_REL_TOL: f64 = 1e-3;

/// Tests bnnc rejects, with a fragment of the error each must give.
const REJECTED: &[(&str, &str)] = &[
    // bnnc takes integer inputs only into Cast to float and DequantizeLinear (it computes in
    // float32, not in ONNX's wrapping integer arithmetic).
    ("test_add_int8", "integer inputs only into Cast"),
    ("test_add_uint8", "integer inputs only into Cast"),
    (
        "test_clip_default_int8_inbounds",
        "integer inputs only into Cast",
    ),
    (
        "test_clip_default_int8_max",
        "integer inputs only into Cast",
    ),
    (
        "test_clip_default_int8_min",
        "integer inputs only into Cast",
    ),
    ("test_div_int32_trunc", "integer inputs only into Cast"),
    ("test_div_int8", "integer inputs only into Cast"),
    ("test_div_uint8", "integer inputs only into Cast"),
    ("test_mul_int8", "integer inputs only into Cast"),
    ("test_mul_uint8", "integer inputs only into Cast"),
    (
        "test_pow_types_int32_float32",
        "integer inputs only into Cast",
    ),
    (
        "test_pow_types_int32_int32",
        "integer inputs only into Cast",
    ),
    (
        "test_pow_types_int64_float32",
        "integer inputs only into Cast",
    ),
    (
        "test_pow_types_int64_int64",
        "integer inputs only into Cast",
    ),
    ("test_sub_int8", "integer inputs only into Cast"),
    ("test_sub_uint8", "integer inputs only into Cast"),
    ("test_maxpool_2d_uint8", "integer inputs only into Cast"),
    ("test_top_k_same_values", "integer inputs only into Cast"),
    ("test_top_k_same_values_2d", "integer inputs only into Cast"),
    (
        "test_top_k_same_values_largest",
        "integer inputs only into Cast",
    ),
    ("test_top_k_uint64", "integer inputs only into Cast"),
    // Gather is folded on constants and shapes (the Reshape arithmetic of old exports); a
    // Gather of activations is no layer of a binary network.
    (
        "test_gather_0",
        "Gather of a value computed at run time is not supported",
    ),
    (
        "test_gather_1",
        "Gather of a value computed at run time is not supported",
    ),
    (
        "test_gather_2d_indices",
        "Gather of a value computed at run time is not supported",
    ),
    (
        "test_gather_negative_indices",
        "Gather of a value computed at run time is not supported",
    ),
    // Optional and sequence values.
    ("test_identity_opt", "is not a tensor"),
    ("test_identity_sequence", "is not a tensor"),
    // An input with an extent of 0.
    (
        "test_reshape_allowzero_reordered",
        "empty tensors are not supported",
    ),
];

/// Tests whose graphs the native backend has no kernel for (ops no model of tests/data uses
/// after the passes), with a fragment of the error each must give.
const NATIVE_UNSUPPORTED: &[(&str, &str)] = &[];

fn main() {
    let args = Arguments::from_args();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/onnx-node");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("model.onnx").exists())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() > 100,
        "expected ONNX's node tests in {}",
        root.display()
    );
    let trials = dirs
        .into_iter()
        .map(|dir| {
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            let rejected = REJECTED
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, why)| *why);
            Trial::test(name, move || match rejected {
                Some(why) => check_rejected(&dir, why),
                None => check(&dir),
            })
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}

fn read_pb(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The folder's test data: the files `prefix_0.pb`, `prefix_1.pb`, ...
fn data_files(dir: &Path, prefix: &str) -> Vec<Vec<u8>> {
    (0..)
        .map(|i| dir.join(format!("test_data_set_0/{prefix}_{i}.pb")))
        .take_while(|p| p.exists())
        .map(|p| read_pb(&p))
        .collect()
}

/// What a test computed: the interpreter's outputs, and the native code's output (`None`
/// when the graph does not have the ABI's one input and one output).
struct Outputs {
    interpreted: Vec<Tensor>,
    native: Option<Result<Vec<f32>, String>>,
}

/// The optimized graph compiled for this machine and run on `input`.
fn run_native(graph: &bnnc_ir::Graph, input: &Tensor) -> Result<Vec<f32>, String> {
    let options = bnnc_cranelift::Options {
        triple: bnnc_cranelift::Triple::host(),
        cpu: bnnc_cranelift::Cpu::Native,
        name: "t".into(),
        input_type: bnnc_runtime::InputType::F32,
        profile: false,
        scalar_popcount: false,
        dump_clif: None,
    };
    let compiled = bnnc_cranelift::compile(graph, &options).map_err(|e| format!("native: {e}"))?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (obj, lib) = (dir.path().join("t.o"), dir.path().join("libt.so"));
    std::fs::write(&obj, &compiled.object).map_err(|e| e.to_string())?;
    bnnc::native::link_host_library(&obj, &lib).map_err(|e| e.to_string())?;
    let model = bnnc_runtime::Model::load(&lib, "t").map_err(|e| e.to_string())?;
    model
        .run_batch(&input.to_f32_vec())
        .map_err(|e| e.to_string())
}

/// Imports the model with every input but the first bound to its test value, and runs it.
fn run(dir: &Path) -> Result<Outputs, String> {
    let mut model =
        ModelProto::decode(&read_pb(&dir.join("model.onnx"))[..]).map_err(|e| e.to_string())?;
    let inputs = data_files(dir, "input");
    let graph = model.graph.as_mut().ok_or("no graph")?;
    for (i, bytes) in inputs.iter().enumerate().skip(1) {
        let mut proto = TensorProto::decode(&bytes[..]).map_err(|e| e.to_string())?;
        proto.name = graph.input[i].name.clone();
        graph.initializer.push(proto);
    }
    let graph = import_proto(&model, None).map_err(|e| e.to_string())?;
    bnnc_ir::verify::verify(&graph).map_err(|e| e.to_string())?;
    let runtime = match inputs.first() {
        Some(bytes) => vec![decode_tensor_proto(bytes).map_err(|e| e.to_string())?],
        None => Vec::new(),
    };
    let imported = bnnc_ir::interp::run(&graph, &runtime).map_err(|e| e.to_string())?;
    // The optimization pipeline must not change what any of these graphs computes.
    let optimized = bnnc_passes::run_pipeline(graph, &mut |_| {}).map_err(|e| format!("{e:#}"))?;
    let again = bnnc_ir::interp::run(&optimized, &runtime).map_err(|e| e.to_string())?;
    if !same_values(&imported, &again) {
        return Err("the optimized graph computes other values than the imported one".into());
    }
    let native = match (&runtime[..], optimized.outputs().len()) {
        ([input], 1) => Some(run_native(&optimized, input)),
        _ => None,
    };
    // Native code follows the interpreter's arithmetic: the same bits, not only the
    // reference's tolerance.
    if let (Some(Ok(native)), [want]) = (&native, &again[..]) {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        if bits(native) != bits(&want.to_f32_vec()) {
            return Err("native code computes other bits than the interpreter".into());
        }
    }
    Ok(Outputs {
        interpreted: imported,
        native,
    })
}

/// Equal shapes, kinds and values (NaN equal to NaN).
fn same_values(a: &[Tensor], b: &[Tensor]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.shape() == y.shape()
                && std::mem::discriminant(x.data()) == std::mem::discriminant(y.data())
                && x.to_f64_vec()
                    .iter()
                    .zip(y.to_f64_vec())
                    .all(|(&p, q)| p == q || p.is_nan() && q.is_nan())
        })
}

fn check(dir: &Path) -> Result<(), Failed> {
    let outputs = run(dir)?;
    let got = outputs.interpreted;
    let want: Vec<Tensor> = data_files(dir, "output")
        .iter()
        .map(|b| decode_tensor_proto(b).unwrap())
        .collect();
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let unsupported = NATIVE_UNSUPPORTED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, why)| *why);
    match (outputs.native, unsupported) {
        (None, None) => {}
        (None, Some(_)) => {
            return Err("listed in NATIVE_UNSUPPORTED but has no native ABI".into());
        }
        (Some(Ok(_)), Some(why)) => {
            return Err(format!(
                "listed in NATIVE_UNSUPPORTED ({why}) but compiles: move it out of the list"
            )
            .into());
        }
        (Some(Err(e)), Some(why)) if e.contains(why) => {}
        (Some(Err(e)), _) => return Err(format!("native code: {e}").into()),
        (Some(Ok(native)), None) => {
            let native = Tensor::f32(want[0].shape().to_vec(), native);
            compare(&name, &native, &want[0]).map_err(|e| format!("native code: {e}"))?;
        }
    }
    if got.len() != want.len() {
        return Err(format!("{} outputs, expected {}", got.len(), want.len()).into());
    }
    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
        if g.shape() != w.shape() {
            return Err(format!(
                "output {k}: shape {:?}, expected {:?}",
                g.shape(),
                w.shape()
            )
            .into());
        }
        compare(&name, g, w).map_err(|e| format!("output {k} {e}"))?;
    }
    Ok(())
}

/// Values within the tolerance (exactly for integer outputs).
fn compare(name: &str, got: &Tensor, want: &Tensor) -> Result<(), String> {
    let exact = matches!(want.data(), TensorData::I64(_));
    let rel_tol = if FOUR_DIGIT_REFERENCE.contains(&name) {
        FOUR_DIGIT_REL_TOL
    } else {
        REL_TOL
    };
    if got.len() != want.len() {
        return Err(format!("{} elements, expected {}", got.len(), want.len()));
    }
    for (i, (a, b)) in got
        .to_f64_vec()
        .into_iter()
        .zip(want.to_f64_vec())
        .enumerate()
    {
        let ok = if exact {
            a == b
        } else {
            a == b || (a - b).abs() <= ABS_TOL + rel_tol * b.abs() || (a.is_nan() && b.is_nan())
        };
        if !ok {
            return Err(format!("element {i}: got {a}, expected {b}"));
        }
    }
    Ok(())
}

fn check_rejected(dir: &Path, why: &str) -> Result<(), Failed> {
    match run(dir) {
        Ok(_) => {
            Err(format!("listed as rejected ({why}) but runs: move it out of REJECTED").into())
        }
        Err(e) if e.contains(why) => Ok(()),
        Err(e) => Err(format!("rejected with `{e}`, expected an error saying `{why}`").into()),
    }
}
