//! Where in a model an error is: the node, op and reason that a stage's own error carries,
//! found in an [`anyhow::Error`]'s chain for front ends that report them as fields
//! (`bnnc.CompileError` in Python).

use bnnc_cranelift::BackendError;
use bnnc_dataflow::PlanError;
use bnnc_frontend_onnx::FrontendError;
use bnnc_ir::IrError;

/// The node an error is about, with its op (ONNX's `op_type` before import, the IR's op name
/// after) and the reason alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    pub node: String,
    pub op: String,
    pub reason: String,
}

/// The node, op and reason of the first error in `error`'s chain that names a node; `None`
/// when the error is about the model as a whole (a file, an opset, the graph).
pub fn locate(error: &anyhow::Error) -> Option<Located> {
    error.chain().find_map(|cause| {
        let located = |node: &str, op: &str, reason: &str| Located {
            node: node.to_owned(),
            op: op.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(IrError::Node { node, op, reason }) = cause.downcast_ref() {
            return Some(located(node, op, reason));
        }
        if let Some(FrontendError::Node {
            node,
            op_type,
            reason,
        }) = cause.downcast_ref()
        {
            return Some(located(node, op_type, reason));
        }
        if let Some(BackendError::Unsupported { node, op, reason }) = cause.downcast_ref() {
            return Some(located(node, op, reason));
        }
        if let Some(PlanError::Node { node, op, reason }) = cause.downcast_ref() {
            return Some(located(node, op, reason));
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn finds_the_node_under_context() {
        let error = Err::<(), _>(IrError::Node {
            node: "Conv_0".into(),
            op: "conv",
            reason: "weights of rank 3".into(),
        })
        .context("cannot optimize m")
        .unwrap_err();
        assert_eq!(
            locate(&error),
            Some(Located {
                node: "Conv_0".into(),
                op: "conv".into(),
                reason: "weights of rank 3".into()
            })
        );
        assert_eq!(locate(&anyhow::anyhow!("no node here")), None);
    }
}
