//! Exports older than the QONNX domain: the custom ops with an empty domain (older FINN and
//! QONNX-zoo files) import as the same ops, recognised by name.

use std::path::Path;

use bnnc_frontend_onnx::{import_proto, proto::ModelProto};
use prost::Message;

#[test]
fn custom_ops_without_a_domain_import_as_with_it() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data");
    for model in [
        "models/tfc_w1a1",
        "models/cnv_w2a2",
        "external/zoo_tfc_2w2a",
    ] {
        let folder = dir.join(model);
        let bytes = std::fs::read(folder.join("model.onnx")).unwrap();
        let original = ModelProto::decode(&bytes[..]).unwrap();
        let mut bare = original.clone();
        let graph = bare.graph.as_mut().unwrap();
        let mut cleared = 0;
        for node in &mut graph.node {
            if !node.domain.is_empty() && node.domain != "ai.onnx" {
                node.domain.clear();
                cleared += 1;
            }
        }
        assert!(cleared > 0, "{model}: no custom op to clear");
        // Such files import no custom domain either.
        bare.opset_import
            .retain(|o| o.domain.is_empty() || o.domain == "ai.onnx");
        let want = import_proto(&original, Some(&folder)).unwrap();
        let got = import_proto(&bare, Some(&folder)).unwrap();
        assert_eq!(
            bnnc_ir::text::print_graph(&got),
            bnnc_ir::text::print_graph(&want),
            "{model}"
        );
    }
}

/// Opsets 7 and 8 (older FINN and Brevitas exports): the ops binary networks use read as in
/// opset 9, so a model re-declared at those versions imports as the same graph.
#[test]
fn opsets_7_and_8_import_as_opset_9() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data");
    let folder = dir.join("models/tfc_w1a1_qonnx_ts");
    let bytes = std::fs::read(folder.join("model.onnx")).unwrap();
    let at = |version: i64| {
        let mut model = ModelProto::decode(&bytes[..]).unwrap();
        for o in &mut model.opset_import {
            if o.domain.is_empty() || o.domain == "ai.onnx" {
                o.version = version;
            }
        }
        import_proto(&model, Some(&folder)).map(|g| bnnc_ir::text::print_graph(&g))
    };
    let nine = at(9).unwrap();
    for version in [7, 8] {
        assert_eq!(at(version).unwrap(), nine, "opset {version}");
    }
    let err = at(6).unwrap_err().to_string();
    assert!(err.contains("opset 6") && err.contains("7 to 25"), "{err}");
}

/// BatchNormalization's `spatial = 0` (opsets 7 and 8: statistics per element) is refused,
/// naming the node, rather than read as per-channel statistics.
#[test]
fn batchnorm_spatial_0_is_refused() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data");
    let folder = dir.join("models/tfc_w1a1_qonnx_ts");
    let bytes = std::fs::read(folder.join("model.onnx")).unwrap();
    let mut model = ModelProto::decode(&bytes[..]).unwrap();
    let graph = model.graph.as_mut().unwrap();
    let bn = graph
        .node
        .iter_mut()
        .find(|n| n.op_type == "BatchNormalization")
        .unwrap();
    let mut spatial = bn.attribute.first().cloned().unwrap_or_default();
    spatial.name = "spatial".into();
    spatial.r#type = 2; // INT
    spatial.i = 0;
    spatial.f = 0.0;
    bn.attribute.push(spatial);
    let name = bn.name.clone();
    let err = import_proto(&model, Some(&folder)).unwrap_err().to_string();
    assert!(err.contains(&name) && err.contains("spatial = 0"), "{err}");
}
