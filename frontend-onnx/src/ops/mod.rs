//! ONNX nodes to IR nodes, one module per op family.
//!
//! Each importer reads its node's operands and typed attributes (honouring the differences
//! between opset versions) and either adds an IR node, folds the node to a constant (shape and
//! index arithmetic on constants), or binds its result to an existing value (Identity).

mod constants;
mod elementwise;
mod finn_lowered;
pub(crate) use finn_lowered::Windows;
mod heads;
mod layout;
mod linear;
mod movement;
mod pooling;
mod quantizers;
mod window;

use bnnc_ir::{IrError, Tensor};

use crate::attributes::Attributes;
use crate::error::FrontendError;
use crate::import::{Binding, Importer};
use crate::proto::NodeProto;

/// Domains of the QONNX / FINN custom ops (older exports use the aliases).
const CUSTOM_DOMAINS: [&str; 4] = [
    "qonnx.custom_op.general",
    "onnx.brevitas",
    "finn",
    "finn.custom_op.general",
];

/// Whether `domain` names the standard ONNX operator set.
pub fn is_standard_domain(domain: &str) -> bool {
    domain.is_empty() || domain == "ai.onnx"
}

/// A node as the op importers see it.
#[derive(Clone, Debug)]
pub struct OnnxNode<'a> {
    /// The ONNX node name, or `<op_type>_<index>` where the file gives none.
    pub name: String,
    pub op_type: &'a str,
    pub domain: &'a str,
    pub inputs: &'a [String],
    pub outputs: &'a [String],
    pub attrs: Attributes<'a>,
}

impl<'a> OnnxNode<'a> {
    /// The node at position `index` of its graph.
    pub fn new(node: &'a NodeProto, index: usize) -> Self {
        let name = if node.name.is_empty() {
            format!("{}_{index}", node.op_type)
        } else {
            node.name.clone()
        };
        OnnxNode {
            name,
            op_type: &node.op_type,
            domain: &node.domain,
            inputs: &node.input,
            outputs: &node.output,
            attrs: Attributes::new(&node.attribute),
        }
    }

    /// An error about this node.
    pub fn error(&self, reason: String) -> FrontendError {
        FrontendError::Node {
            node: self.name.clone(),
            op_type: self.op_type.to_owned(),
            reason,
        }
    }

    /// The name of operand `i`, `None` where omitted (absent or `""`).
    pub fn input(&self, i: usize) -> Option<&'a str> {
        self.inputs
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// The name of result `i`, `None` where unused.
    pub fn output(&self, i: usize) -> Option<&'a str> {
        self.outputs
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// How many results the node names.
    pub fn used_outputs(&self) -> usize {
        self.outputs.iter().filter(|o| !o.is_empty()).count()
    }
}

/// Why an op importer failed: a reason about the node (given its name by [`NodeError::at`]),
/// or an error that already says where it is (a tensor, the IR).
#[derive(Debug)]
pub enum NodeError {
    Reason(String),
    Located(FrontendError),
}

impl NodeError {
    /// The frontend error, naming `node` where the error does not name its place yet.
    pub fn at(self, node: &OnnxNode) -> FrontendError {
        match self {
            NodeError::Reason(reason) => node.error(reason),
            NodeError::Located(e) => e,
        }
    }
}

impl From<String> for NodeError {
    fn from(reason: String) -> Self {
        NodeError::Reason(reason)
    }
}

impl From<&str> for NodeError {
    fn from(reason: &str) -> Self {
        NodeError::Reason(reason.to_owned())
    }
}

impl From<FrontendError> for NodeError {
    fn from(e: FrontendError) -> Self {
        NodeError::Located(e)
    }
}

impl From<IrError> for NodeError {
    fn from(e: IrError) -> Self {
        NodeError::Located(FrontendError::Ir(e))
    }
}

/// What an op importer returns.
pub type NodeResult<T = ()> = Result<T, NodeError>;

/// Imports one node.
pub fn import_node(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    if CUSTOM_DOMAINS.contains(&node.domain) {
        return import_custom(cx, node)
            .unwrap_or_else(|| Err(format!("unsupported op (domain `{}`)", node.domain).into()));
    }
    if !is_standard_domain(node.domain) {
        return Err(format!("unsupported op (domain `{}`)", node.domain).into());
    }
    // Older FINN and QONNX-zoo files leave the custom ops' domain empty; no standard op has
    // their names, so they are recognised by name, as qonnx's cleanup does.
    if let Some(result) = import_custom(cx, node) {
        return result;
    }
    match node.op_type {
        "QuantizeLinear" => quantizers::quantize_linear(cx, node),
        "DequantizeLinear" => quantizers::dequantize_linear(cx, node),
        "Clip" => quantizers::clip(cx, node),

        "Conv" => linear::conv(cx, node),
        "Gemm" => linear::gemm(cx, node),
        "MatMul" => linear::matmul(cx, node),
        "BatchNormalization" => linear::batch_norm(cx, node),

        "MaxPool" => pooling::max_pool(cx, node),
        "AveragePool" => pooling::average_pool(cx, node),
        "GlobalAveragePool" => pooling::global_average_pool(cx, node),
        "GlobalMaxPool" => pooling::global_max_pool(cx, node),
        "ReduceMean" => pooling::reduce_mean(cx, node),

        "Relu" => elementwise::unary(cx, node, bnnc_ir::Op::Relu),
        "Sign" => elementwise::unary(cx, node, bnnc_ir::Op::Sign),
        "Abs" => elementwise::unary(cx, node, bnnc_ir::Op::Abs),
        "Round" => elementwise::unary(cx, node, bnnc_ir::Op::Round),
        "Neg" => elementwise::neg(cx, node),
        "Min" | "Max" => elementwise::min_max(cx, node),
        "Less" => elementwise::compare(cx, node, bnnc_ir::CompareOp::Less),
        "LessOrEqual" => elementwise::compare(cx, node, bnnc_ir::CompareOp::LessOrEqual),
        "Greater" => elementwise::compare(cx, node, bnnc_ir::CompareOp::Greater),
        "GreaterOrEqual" => elementwise::compare(cx, node, bnnc_ir::CompareOp::GreaterOrEqual),
        "Not" => elementwise::not(cx, node),
        "Add" | "Sub" | "Mul" | "Div" | "Pow" => elementwise::arithmetic(cx, node),

        "Reshape" => layout::reshape(cx, node),
        "Flatten" => layout::flatten(cx, node),
        "Squeeze" => layout::squeeze(cx, node),
        "Unsqueeze" => layout::unsqueeze(cx, node),
        "Transpose" => layout::transpose(cx, node),
        "Pad" => layout::pad(cx, node),
        "Concat" => layout::concat(cx, node),
        "DepthToSpace" => movement::depth_to_space(cx, node),
        "SpaceToDepth" => movement::space_to_depth(cx, node),
        "Resize" | "Upsample" => movement::resize(cx, node),
        "Identity" => layout::identity(cx, node),
        "Dropout" => layout::dropout(cx, node),

        "Softmax" => heads::softmax(cx, node),
        "TopK" => heads::top_k(cx, node),

        "Constant" => constants::constant(cx, node),
        "Shape" => constants::shape(cx, node),
        "Size" => constants::size(cx, node),
        "Gather" => constants::gather(cx, node),
        "Slice" => constants::slice(cx, node),
        "Cast" => constants::cast(cx, node),
        "ConstantOfShape" => constants::constant_of_shape(cx, node),
        "Equal" => constants::equal(cx, node),
        "Where" => constants::where_select(cx, node),

        _ => Err("unsupported op".into()),
    }
}

/// Operand `i`, or `None` where the node omits it.
fn optional_operand(cx: &Importer, node: &OnnxNode, i: usize) -> NodeResult<Option<Binding>> {
    match node.input(i) {
        None => Ok(None),
        Some(name) => match cx.lookup(name) {
            Some(b) => Ok(Some(b)),
            None => Err(format!(
                "operand `{name}` is not defined by any node, input or initializer"
            )
            .into()),
        },
    }
}

/// Operand `i`, which the node must give.
fn operand(cx: &Importer, node: &OnnxNode, i: usize) -> NodeResult<Binding> {
    optional_operand(cx, node, i)?.ok_or_else(|| format!("operand {i} is missing").into())
}

/// The operands of a node that takes exactly `count`, all required.
fn operands(cx: &Importer, node: &OnnxNode, count: usize) -> NodeResult<Vec<Binding>> {
    let given = node.inputs.len();
    if given != count {
        return Err(format!("has {given} operands, the op takes {count}").into());
    }
    (0..count).map(|i| operand(cx, node, i)).collect()
}

/// The data of operand `i` (called `what` in messages), which must be a constant; `None` where
/// the node omits it.
fn const_operand<'c>(
    cx: &'c Importer,
    node: &OnnxNode,
    i: usize,
    what: &str,
) -> NodeResult<Option<&'c Tensor>> {
    match optional_operand(cx, node, i)? {
        None => Ok(None),
        Some(b) => match cx.const_data(b) {
            Some(t) => Ok(Some(t)),
            None => Err(format!("{what} (operand {i}) must be a constant").into()),
        },
    }
}

/// `axis` (negative counts from the end) as an index of a rank-`rank` tensor.
fn normalize_axis(axis: i64, rank: usize) -> Result<usize, String> {
    let rank_i = i64::try_from(rank).map_err(|_| "rank too large".to_string())?;
    let normalized = if axis < 0 { axis + rank_i } else { axis };
    if (0..rank_i).contains(&normalized) {
        Ok(normalized as usize)
    } else {
        Err(format!("axis {axis} is out of range for rank {rank}"))
    }
}

/// Several axes, normalized, sorted and checked for repeats.
fn normalize_axes(axes: &[i64], rank: usize) -> Result<Vec<usize>, String> {
    let mut normalized = axes
        .iter()
        .map(|&a| normalize_axis(a, rank))
        .collect::<Result<Vec<_>, _>>()?;
    normalized.sort_unstable();
    if normalized.windows(2).any(|w| w[0] == w[1]) {
        return Err(format!("axes {axes:?} repeat an axis"));
    }
    Ok(normalized)
}

/// A non-negative integer as an extent or count.
fn to_usize(v: i64, what: &str) -> Result<usize, String> {
    usize::try_from(v).map_err(|_| format!("{what} is {v}, expected a non-negative integer"))
}

/// Imports a QONNX / FINN custom op, or `None` for another op type.
fn import_custom(cx: &mut Importer, node: &OnnxNode) -> Option<NodeResult> {
    Some(match node.op_type {
        "Quant" | "IntQuant" => quantizers::quant(cx, node),
        "BipolarQuant" => quantizers::bipolar_quant(cx, node),
        "Trunc" => quantizers::trunc(cx, node),
        "MultiThreshold" => quantizers::multi_threshold(cx, node),
        "XnorPopcountMatMul" => finn_lowered::xnor_popcount_matmul(cx, node),
        "MaxPoolNHWC" => finn_lowered::max_pool_nhwc(cx, node),
        "Im2Col" => finn_lowered::im2col(cx, node),
        "QuantAvgPool2d" => finn_lowered::quant_avg_pool_2d(cx, node),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes() {
        assert_eq!(normalize_axis(-1, 4), Ok(3));
        assert_eq!(normalize_axis(3, 4), Ok(3));
        assert!(normalize_axis(4, 4).is_err());
        assert!(normalize_axis(-5, 4).is_err());
        assert!(normalize_axis(0, 0).is_err());
        assert_eq!(normalize_axes(&[-1, 0], 3), Ok(vec![0, 2]));
        assert!(normalize_axes(&[2, -1], 3).is_err());
    }
}
