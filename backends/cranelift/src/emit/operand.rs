//! [`Operand`]: what a kernel knows of one of its tensors.

use std::sync::Arc;

use bnnc_ir::{ElemType, Graph, Tensor, ValueDef, ValueId};
use cranelift_codegen::ir::Value;

use super::KernelBuilder;
use crate::schedule::{Place, Step, StepKind, Storage};

/// A kernel's operand or result: its type, how it is stored, and either the pointer the
/// kernel received or, for a constant, the data the kernel embeds.
pub(crate) struct Operand {
    pub shape: Vec<usize>,
    pub elem: ElemType,
    pub storage: Storage,
    /// The pointer parameter (meaningless for constants).
    pub ptr: Value,
    pub data: Option<Arc<Tensor>>,
}

impl Operand {
    /// The operand `value`, stored as `storage` at `ptr`.
    pub fn new(graph: &Graph, value: ValueId, storage: Storage, ptr: Value) -> Operand {
        let v = graph.value(value);
        Operand {
            shape: v.ty.shape.clone(),
            elem: v.ty.elem.clone(),
            storage,
            ptr,
            data: match &v.def {
                ValueDef::Const(t) => Some(t.clone()),
                _ => None,
            },
        }
    }

    /// The operand's IR type.
    pub fn ty(&self) -> bnnc_ir::TensorType {
        bnnc_ir::TensorType::new(self.elem.clone(), self.shape.clone())
    }

    /// Operand `i` of `step`.
    pub fn of_step(
        graph: &Graph,
        step: &Step,
        i: usize,
        placed: &Option<(Place, Storage)>,
        ptr: Value,
    ) -> Operand {
        let value = match &step.kind {
            StepKind::Node(n) | StepKind::Fused { linear: n, .. } => graph.node(*n).inputs[i],
            StepKind::Chain { reads, .. } => reads[i],
            StepKind::Convert => step.value.expect("a conversion names its value"),
        };
        let storage = placed.map_or(Storage::F32, |(_, s)| s);
        Operand::new(graph, value, storage, ptr)
    }

    /// Result `j` of `step`.
    pub fn result(graph: &Graph, step: &Step, j: usize, storage: Storage, ptr: Value) -> Operand {
        let value = match &step.kind {
            StepKind::Node(n)
            | StepKind::Fused { pool: Some(n), .. }
            | StepKind::Fused {
                threshold: n,
                pool: None,
                ..
            } => graph.node(*n).outputs[j],
            StepKind::Chain { nodes, .. } => graph.node(*nodes.last().expect("a chain")).outputs[j],
            StepKind::Convert => step.value.expect("a conversion names its value"),
        };
        Operand::new(graph, value, storage, ptr)
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The constant's elements as f32.
    pub fn const_f32(&self) -> Option<Vec<f32>> {
        self.data.as_ref().map(|t| t.to_f32_vec())
    }

    /// The address of the f32 elements: the parameter, or the constant placed in a table.
    pub fn f32_ptr(&self, kb: &mut KernelBuilder) -> Value {
        match self.const_f32() {
            Some(data) => kb.table_f32(&data),
            None => self.ptr,
        }
    }
}
