//! What every linear kernel reads, set up once per layer: the weights and how they sum
//! ([`Sums`]), a convolution's shapes and operands ([`ConvLayout`]), and a matrix product's
//! ([`Product`], [`ProductIo`]). The dispatch ([`super`]) builds these and the kernels
//! ([`super::exact`], [`super::mlas`]) read them; this module reads neither.

use bnnc_ir::interp::{integer_first, IntegerFirst};
use bnnc_ir::{ElemType, Node, TensorType};
use cranelift_codegen::ir::types::F32;
use cranelift_codegen::ir::{InstBuilder, Value};

use crate::column_conv::exact_in_any_order;
use crate::emit::window::Im2col;
use crate::emit::{KernelBuilder, Operand};
use crate::BackendError;

/// What every linear layer reads first: its weights (B), as integers when the layer sums
/// integers and scales once, that plan, and whether its sums are exact in any order.
pub(super) struct Sums {
    pub(super) weights: Vec<f32>,
    pub(super) plan: Option<IntegerFirst>,
    pub(super) exact: bool,
}

impl Sums {
    /// The sums of `node`, whose constant weights are operand 1 (`what` names them in the
    /// error when they are not constant).
    pub(super) fn of(
        node: &Node,
        operands: &[Operand],
        out: &Operand,
        what: &str,
    ) -> Result<Sums, BackendError> {
        let w = &operands[1];
        let plan = scaled_integers(node, operands, out);
        let mut weights = constant(node, w, what)?;
        if let Some(plan) = &plan {
            weights = plan.weight_integers(&weights, &w.shape);
        }
        Ok(Sums {
            weights,
            plan,
            exact: exact_in_any_order(&out.elem),
        })
    }
}

/// The interpreter's integer-first plan for this layer, if it has one.
fn scaled_integers(node: &Node, operands: &[Operand], out: &Operand) -> Option<IntegerFirst> {
    let types: Vec<TensorType> = operands.iter().map(Operand::ty).collect();
    let refs: Vec<&TensorType> = types.iter().collect();
    integer_first(&node.op, &refs, &out.shape)
}

/// The constant operand `op`'s elements (`what` names it in the error when it is not
/// constant).
pub(super) fn constant(node: &Node, op: &Operand, what: &str) -> Result<Vec<f32>, BackendError> {
    op.const_f32()
        .ok_or_else(|| BackendError::unsupported(node, format!("the {what} must be constant")))
}

/// A convolution's shapes (any number of spatial axes) and where its operands live, as both
/// ways of summing read them.
pub(super) struct ConvLayout {
    /// The input's shape: `(batch, c, spatial...)`.
    pub(super) input: Vec<usize>,
    /// The number of filters.
    pub(super) m: usize,
    pub(super) group: usize,
    /// Per group: `cg` input channels and `mg` filters.
    pub(super) cg: usize,
    pub(super) mg: usize,
    /// Output positions per channel, and the reduction's length per group.
    pub(super) positions: usize,
    pub(super) k: usize,
    pub(super) im2col: Im2col,
    pub(super) src: Value,
    pub(super) dst: Value,
    /// The bias's table, if there is one.
    pub(super) bias: Option<Value>,
}

impl ConvLayout {
    /// The input under tap `kk` of output position `p` of group `g` of image `n`, 0 in the
    /// padding.
    pub(super) fn load(
        &self,
        kb: &mut KernelBuilder,
        n: Value,
        g: usize,
        p: Value,
        kk: Value,
    ) -> Value {
        let plane: usize = self.input[2..].iter().product();
        let image_bytes = (self.input[1] * plane * 4) as i64;
        let group_bytes = (self.cg * plane * 4) as i64;
        let origin = self.im2col.origin(kb, p);
        let image = kb.addr(self.src, n, image_bytes, g as i64 * group_bytes);
        self.im2col.load(kb, image, &origin, kk)
    }

    /// `s` plus output channel `j`'s bias, if there is one.
    pub(super) fn add_bias(&self, kb: &mut KernelBuilder, j: Value, s: Value) -> Value {
        match self.bias {
            Some(t) => {
                let bv = kb.load_at(F32, t, j);
                kb.b.ins().fadd(s, bv)
            }
            None => s,
        }
    }
}

/// `alpha * op(a) @ b + start` for an activation `a` and a constant `b`, summed as the
/// interpreter's `gemm` and `mlas_gemm` do.
pub(super) struct Product<'d> {
    /// Row-major `(m, k)`, or `(k, m)` with `trans_a`.
    pub(super) a: Value,
    pub(super) trans_a: bool,
    /// Whether the model's B was transposed (it decides MLAS's M = 1 kernel).
    pub(super) trans_b: bool,
    /// B as a row-major `(k, n)` matrix.
    pub(super) b_kn: &'d [f32],
    pub(super) mkn: (usize, usize, usize),
    pub(super) alpha: f32,
    /// `beta * C`, row-major `(m, n)`.
    pub(super) start: Option<&'d [f32]>,
    /// MLAS takes its M = 1 kernels only with alpha 1 and beta 0 or 1.
    pub(super) m1_allowed: bool,
    pub(super) exact: bool,
    /// Sums of integers, scaled once (`b_kn` holds the weights' integers).
    pub(super) scaled: Option<&'d IntegerFirst>,
    /// The element types of A and of B.
    pub(super) a_elem: &'d ElemType,
    pub(super) w_elem: &'d ElemType,
}

/// A product's activation, start (C) and result in memory, as every way of summing
/// reads and writes them.
#[derive(Clone, Copy)]
pub(super) struct ProductIo {
    pub(super) a: Value,
    pub(super) trans_a: bool,
    pub(super) mkn: (usize, usize, usize),
    /// The table of `beta * C`, if there is one.
    pub(super) start: Option<Value>,
    pub(super) dst: Value,
}

impl ProductIo {
    /// Element `(i, kk)` of `op(a)`.
    pub(super) fn load_a(&self, kb: &mut KernelBuilder, i: Value, kk: Value) -> Value {
        let (m, k, _) = self.mkn;
        let (row, col, width) = if self.trans_a { (kk, i, m) } else { (i, kk, k) };
        let r = kb.b.ins().imul_imm_s(row, width as i64);
        let at = kb.b.ins().iadd(r, col);
        kb.load_at(F32, self.a, at)
    }

    /// Output `(i, j)`'s start, if there is one.
    pub(super) fn start_at(&self, kb: &mut KernelBuilder, i: Value, j: Value) -> Option<Value> {
        let n = self.mkn.2;
        self.start.map(|t| {
            let r = kb.b.ins().imul_imm_s(i, n as i64);
            let at = kb.b.ins().iadd(r, j);
            kb.load_at(F32, t, at)
        })
    }

    /// Stores output `(i, j)`.
    pub(super) fn store(&self, kb: &mut KernelBuilder, i: Value, j: Value, s: Value) {
        let n = self.mkn.2;
        let r = kb.b.ins().imul_imm_s(i, n as i64);
        let at = kb.b.ins().iadd(r, j);
        kb.store_at(s, self.dst, at);
    }
}
