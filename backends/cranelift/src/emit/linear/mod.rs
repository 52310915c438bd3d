//! Float Conv, Gemm and MatMul: each layer's shapes and constants, set up once (as the
//! types of [`layout`]), and the choice of how to sum, made per layer from the IR's types:
//! - When every product is an integer times one power-of-two scale and the result fits 24
//!   bits (the IR types it `iN` or `iN*2^e`), every partial sum is exact in f32 and any order
//!   gives the interpreter's result ([`exact`]).
//! - When the operands are integers with other scales, the interpreter sums the integers and
//!   scales once ([`bnnc_ir::interp::IntegerFirst`]): the same exact kernel runs on the
//!   integers (the weights' at compile time, the activations' as they are loaded) and scales
//!   each sum as it stores it ([`exact`]). Matrix products whose activations have at most 8
//!   bits and whose weights fit `i8` sum those integers on byte dot products instead
//!   ([`bytes`]), where the target has them.
//! - Otherwise the last bit depends on the order, and the sums follow the interpreter's,
//!   which is onnxruntime's MLAS ([`bnnc_ir::summation_order`]), product by product ([`mlas`]).
//!
//! A 2-D convolution whose sums are exact, or in MLAS's order one chain of fused
//! multiply-adds per output, runs four output columns to a vector ([`columns`], decided in
//! [`crate::column_conv`]); the kernels above take the others. The 8-bit first layer with
//! its threshold fused runs apart, on `i16` lanes ([`int16`]).
//!
//! Imports point one way: this dispatch reads the kernels, and the kernels read [`layout`].

mod bytes;
mod columns;
mod exact;
mod int16;
mod layout;
mod mlas;

use bnnc_ir::broadcast;
use bnnc_ir::{ConvAttrs, GemmAttrs, Node, TensorType};
use cranelift_codegen::ir::{InstBuilder, Value};

pub(crate) use int16::{conv_int16_bits, int16_kernel};

use super::window::Im2col;
use super::{KernelBuilder, Operand};
use crate::column_conv::ColumnConv;
use crate::BackendError;
use layout::{constant, ConvLayout, Product, ProductIo, Sums};

/// Conv (any number of spatial axes and of groups) with optional bias: exact integer sums, or
/// float sums in MLAS's order. `workspace` is the step's, for a column convolution that
/// stages its input.
pub(crate) fn conv(
    kb: &mut KernelBuilder,
    node: &Node,
    attrs: &ConvAttrs,
    operands: &[Operand],
    out: &Operand,
    workspace: Option<Value>,
) -> Result<(), BackendError> {
    let (x, w) = (&operands[0], &operands[1]);
    let sums = Sums::of(node, operands, out, "weights")?;
    let bias = match operands.get(2) {
        Some(b) => Some(constant(node, b, "bias")?),
        None => None,
    };
    // The column kernel, where it applies and has the workspace it stages into.
    let types: Vec<TensorType> = operands.iter().map(Operand::ty).collect();
    let refs: Vec<&TensorType> = types.iter().collect();
    let plan = ColumnConv::of(attrs, &refs, &out.ty()).and_then(|p| p.given(workspace.is_some()));
    if let Some(plan) = plan {
        let io = columns::ColumnIo {
            src: x.f32_ptr(kb),
            dst: out.ptr,
            workspace,
            bias: bias.as_ref().map(|b| kb.table_f32(b)),
        };
        columns::conv(kb, &plan, &sums.weights, &io);
        return Ok(());
    }
    let group = attrs.group.max(1);
    let (c, m) = (x.shape[1], w.shape[0]);
    if c % group != 0 || m % group != 0 {
        return Err(BackendError::unsupported(
            node,
            format!("{c} channels and {m} filters in {group} groups"),
        ));
    }
    let (cg, mg) = (c / group, m / group);
    let out_spatial = out.shape[2..].to_vec();
    let positions: usize = out_spatial.iter().product();
    let k = cg * attrs.kernel.iter().product::<usize>();
    let im2col = Im2col::new(kb, attrs, cg, &x.shape[2..], &out_spatial);
    let src = x.f32_ptr(kb);
    let bias = bias.as_ref().map(|b| kb.table_f32(b));
    let layout = ConvLayout {
        input: x.shape.clone(),
        m,
        group,
        cg,
        mg,
        positions,
        k,
        im2col,
        src,
        dst: out.ptr,
        bias,
    };
    if sums.exact || sums.plan.is_some() {
        exact::conv(kb, &layout, &sums);
    } else {
        mlas::conv(kb, attrs, &layout, &sums.weights);
    }
    Ok(())
}

/// The product `p` into `dst`, by the kernel its sums need.
fn product(kb: &mut KernelBuilder, p: &Product<'_>, dst: Value) {
    let io = ProductIo {
        a: p.a,
        trans_a: p.trans_a,
        mkn: p.mkn,
        start: p.start.map(|s| kb.table_f32(s)),
        dst,
    };
    if let Some(plan) = p.scaled {
        exact::product_scaled(kb, p, plan, &io);
    } else if p.exact && p.alpha == 1.0 {
        exact::product(kb, p, &io);
    } else {
        mlas::product(kb, p, &io);
    }
}

/// ONNX Gemm with a constant B (and C).
pub(crate) fn gemm(
    kb: &mut KernelBuilder,
    node: &Node,
    attrs: &GemmAttrs,
    operands: &[Operand],
    out: &Operand,
) -> Result<(), BackendError> {
    let (a, b) = (&operands[0], &operands[1]);
    let Sums {
        weights: b_data,
        plan,
        exact,
    } = Sums::of(node, operands, out, "B matrix")?;
    let (&[ar, ac], &[br, bc]) = (a.shape.as_slice(), b.shape.as_slice()) else {
        return Err(BackendError::unsupported(
            node,
            "Gemm operands must be matrices",
        ));
    };
    let (m, k) = if attrs.trans_a { (ac, ar) } else { (ar, ac) };
    let n = if attrs.trans_b { br } else { bc };
    let b_kn: Vec<f32> = if attrs.trans_b {
        (0..k * n).map(|i| b_data[(i % n) * bc + i / n]).collect()
    } else {
        b_data
    };
    let start = match operands.get(2).filter(|_| attrs.beta != 0.0) {
        Some(c) => {
            let c_data = constant(node, c, "C matrix")?;
            let strides = broadcast::strides(&c.shape, &[m, n])
                .map_err(|e| BackendError::unsupported(node, format!("C: {e}")))?;
            Some(
                (0..m * n)
                    .map(|i| {
                        let v = c_data[(i / n) * strides[0] + (i % n) * strides[1]];
                        if attrs.beta == 1.0 {
                            v
                        } else {
                            attrs.beta * v
                        }
                    })
                    .collect::<Vec<f32>>(),
            )
        }
        None => None,
    };
    let a_ptr = a.f32_ptr(kb);
    let p = Product {
        a: a_ptr,
        trans_a: attrs.trans_a,
        trans_b: attrs.trans_b,
        b_kn: &b_kn,
        mkn: (m, k, n),
        alpha: attrs.alpha,
        m1_allowed: attrs.alpha == 1.0 && (start.is_none() || attrs.beta == 1.0),
        start: start.as_deref(),
        exact,
        scaled: plan.as_ref(),
        a_elem: &a.elem,
        w_elem: &b.elem,
    };
    product(kb, &p, out.ptr);
    Ok(())
}

/// ONNX MatMul of an activation and a constant matrix (leading axes of A fold into rows).
pub(crate) fn matmul(
    kb: &mut KernelBuilder,
    node: &Node,
    operands: &[Operand],
    out: &Operand,
) -> Result<(), BackendError> {
    let (a, b) = (&operands[0], &operands[1]);
    let Sums {
        weights: b_data,
        plan,
        exact,
    } = Sums::of(node, operands, out, "B matrix")?;
    let a_ptr = a.f32_ptr(kb);
    let (a_elem, w_elem) = (&a.elem, &b.elem);
    let product_of = |kb: &mut KernelBuilder, a: Value, b_kn: &[f32], mkn, dst: Value| {
        let p = Product {
            a,
            trans_a: false,
            trans_b: false,
            b_kn,
            mkn,
            alpha: 1.0,
            start: None,
            m1_allowed: true,
            exact,
            scaled: plan.as_ref(),
            a_elem,
            w_elem,
        };
        product(kb, &p, dst);
    };
    match (a.shape.as_slice(), b.shape.as_slice()) {
        (_, &[k, n]) => {
            let m = a.numel() / k.max(1);
            product_of(kb, a_ptr, &b_data, (m, k, n), out.ptr);
        }
        // A vector B: each row of A on its own (M = 1 each), as onnxruntime does.
        (_, &[k]) if plan.is_none() => {
            kb.for_range(a.numel() / k.max(1), |kb, r| {
                let row = kb.addr(a_ptr, r, (k * 4) as i64, 0);
                let dst = kb.addr(out.ptr, r, 4, 0);
                product_of(kb, row, &b_data, (1, k, 1), dst);
            });
        }
        // Batches of matrices, broadcast against each other: one product per batch.
        (&[.., m, ka], &[.., k, n]) if plan.is_none() && ka == k => {
            let (batch_a, batch_b) = (&a.shape[..a.shape.len() - 2], &b.shape[..b.shape.len() - 2]);
            let batch = &out.shape[..out.shape.len() - 2];
            let count: usize = batch.iter().product();
            if count > MAX_UNROLLED_BATCHES {
                return Err(BackendError::unsupported(
                    node,
                    format!("{count} batched products are more than the native MatMul unrolls"),
                ));
            }
            let operand_strides = |own: &[usize]| {
                broadcast::strides(own, batch)
                    .map_err(|e| BackendError::unsupported(node, format!("batch axes: {e}")))
            };
            let (sa, sb) = (operand_strides(batch_a)?, operand_strides(batch_b)?);
            for i in 0..count {
                let (ia, ib) = (
                    broadcast::source_index(i, batch, &sa),
                    broadcast::source_index(i, batch, &sb),
                );
                let a_i = kb.b.ins().iadd_imm_s(a_ptr, (ia * m * k * 4) as i64);
                let dst = kb.b.ins().iadd_imm_s(out.ptr, (i * m * n * 4) as i64);
                product_of(
                    kb,
                    a_i,
                    &b_data[ib * k * n..(ib + 1) * k * n],
                    (m, k, n),
                    dst,
                );
            }
        }
        _ => {
            return Err(BackendError::unsupported(
                node,
                "the native MatMul takes a constant B of rank 1 or 2, or batches of matrices",
            ))
        }
    }
    Ok(())
}

/// Batched products a native MatMul unrolls at most.
const MAX_UNROLLED_BATCHES: usize = 256;

/// Whether Gemm or MatMul `node` runs on byte dot products on a target with VNNI (the
/// profile's and the fuzzer's account of the kernel; SSSE3 takes those of 7-bit weights).
pub(crate) fn on_byte_dots(graph: &bnnc_ir::Graph, node: &Node) -> bool {
    use bnnc_ir::interp::integer_first;
    use bnnc_ir::{Op, ValueDef};
    let ty = |i: usize| &graph.value(node.inputs[i]).ty;
    let (a, w, out) = (ty(0), ty(1), &graph.value(node.outputs[0]).ty);
    let ValueDef::Const(data) = &graph.value(node.inputs[1]).def else {
        return false;
    };
    let (k, alpha, trans_a) = match &node.op {
        Op::Gemm(g) => (a.shape[usize::from(!g.trans_a)], g.alpha, g.trans_a),
        Op::MatMul if w.shape.len() >= 2 => (w.shape[w.shape.len() - 2], 1.0, false),
        _ => return false,
    };
    let plan = integer_first(&node.op, &[a, w], &out.shape);
    let mut weights = data.to_f32_vec();
    if let Some(plan) = &plan {
        weights = plan.weight_integers(&weights, &w.shape);
    }
    let operands = bytes::ByteOperands {
        a_elem: &a.elem,
        w_elem: &w.elem,
        weights: &weights,
        kn: (k, 0),
        scaled: plan.as_ref(),
        exact: crate::column_conv::exact_in_any_order(&out.elem),
        alpha,
        trans_a,
    };
    operands.plan(crate::target::ByteDot::Vnni).is_some()
}
