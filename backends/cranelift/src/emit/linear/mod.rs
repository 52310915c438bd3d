//! Float Conv, Gemm and MatMul: the shapes and constants every kernel reads, set up once
//! here, and the choice of how to sum, made per layer from the IR's types:
//! - When every product is an integer times one power-of-two scale and the result fits 24
//!   bits (the IR types it `iN` or `iN*2^e`), every partial sum is exact in f32 and any order
//!   gives the interpreter's result ([`exact`]).
//! - When the operands are integers with other scales, the interpreter sums the integers and
//!   scales once ([`bnnc_ir::interp::IntegerFirst`]): the same exact kernel runs on the
//!   integers (the weights' at compile time, the activations' as they are loaded) and scales
//!   each sum as it stores it ([`exact`]).
//! - Otherwise the last bit depends on the order, and the sums follow the interpreter's,
//!   which is onnxruntime's MLAS ([`bnnc_ir::summation_order`]), product by product ([`mlas`]).
//!
//! The 8-bit first layer with its threshold fused runs apart, on `i16` lanes ([`int16`]).

mod exact;
mod int16;
mod mlas;

use bnnc_ir::broadcast;
use bnnc_ir::interp::{integer_first, IntegerFirst};
use bnnc_ir::{ConvAttrs, ElemType, GemmAttrs, Node, TensorType};
use cranelift_codegen::ir::types::F32;
use cranelift_codegen::ir::{InstBuilder, Value};

pub(crate) use int16::{conv_int16_bits, int16_kernel};

use super::window::Im2col;
use super::{KernelBuilder, Operand};
use crate::BackendError;

/// What every linear layer reads first: its weights (B), as integers when the layer sums
/// integers and scales once, that plan, and whether its sums are exact in any order.
struct Sums {
    weights: Vec<f32>,
    plan: Option<IntegerFirst>,
    exact: bool,
}

impl Sums {
    /// The sums of `node`, whose constant weights are operand 1 (`what` names them in the
    /// error when they are not constant).
    fn of(
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

/// Whether sums of this result type are exact in f32 in any order.
fn exact_in_any_order(elem: &ElemType) -> bool {
    elem.exact_scaled().is_some_and(|(t, _)| t.bits() <= 24)
}

/// The interpreter's integer-first plan for this layer, if it has one.
fn scaled_integers(node: &Node, operands: &[Operand], out: &Operand) -> Option<IntegerFirst> {
    let types: Vec<TensorType> = operands
        .iter()
        .map(|o| TensorType::new(o.elem.clone(), o.shape.clone()))
        .collect();
    let refs: Vec<&TensorType> = types.iter().collect();
    integer_first(&node.op, &refs, &out.shape)
}

fn constant(node: &Node, op: &Operand, what: &str) -> Result<Vec<f32>, BackendError> {
    op.const_f32()
        .ok_or_else(|| BackendError::unsupported(node, format!("the {what} must be constant")))
}

/// A 2-D convolution's shapes and where its operands live, as both ways of summing read
/// them.
struct ConvLayout {
    /// `(batch, c, h, w)` of the input.
    image: (usize, usize, usize, usize),
    /// `(m, kh, kw)` of the filters.
    filters: (usize, usize, usize),
    out: (usize, usize),
    group: usize,
    /// Per group: `cg` input channels and `mg` filters.
    cg: usize,
    mg: usize,
    /// Output positions per channel, and the reduction's length per group.
    positions: usize,
    k: usize,
    im2col: Im2col,
    src: Value,
    dst: Value,
    /// The bias's table, if there is one.
    bias: Option<Value>,
}

impl ConvLayout {
    /// The input under tap `kk` of output position `p` of group `g` of image `n`, 0 in the
    /// padding.
    fn load(&self, kb: &mut KernelBuilder, n: Value, g: usize, p: Value, kk: Value) -> Value {
        let (_, c, h, wd) = self.image;
        let ow = self.out.1;
        let image_bytes = (c * h * wd * 4) as i64;
        let group_bytes = (self.cg * h * wd * 4) as i64;
        let oy = kb.b.ins().udiv_imm_s(p, ow as i64);
        let oyw = kb.b.ins().imul_imm_s(oy, ow as i64);
        let ox = kb.b.ins().isub(p, oyw);
        let origin = self.im2col.origin(kb, oy, ox);
        let image = kb.addr(self.src, n, image_bytes, g as i64 * group_bytes);
        self.im2col.load(kb, image, origin, kk)
    }

    /// `s` plus output channel `j`'s bias, if there is one.
    fn add_bias(&self, kb: &mut KernelBuilder, j: Value, s: Value) -> Value {
        match self.bias {
            Some(t) => {
                let bv = kb.load_at(F32, t, j);
                kb.b.ins().fadd(s, bv)
            }
            None => s,
        }
    }
}

/// Conv (2-D) with optional bias: exact integer sums with any number of groups, float sums
/// in MLAS's order with one.
pub(crate) fn conv(
    kb: &mut KernelBuilder,
    node: &Node,
    attrs: &ConvAttrs,
    operands: &[Operand],
    out: &Operand,
) -> Result<(), BackendError> {
    let (x, w) = (&operands[0], &operands[1]);
    let sums = Sums::of(node, operands, out, "weights")?;
    let bias = match operands.get(2) {
        Some(b) => Some(constant(node, b, "bias")?),
        None => None,
    };
    if x.shape.len() != 4 {
        return Err(BackendError::unsupported(
            node,
            "the native convolution is 2-D",
        ));
    }
    let group = attrs.group.max(1);
    if group != 1 && !(sums.exact || sums.plan.is_some()) {
        // onnxruntime sums a grouped float convolution per group and thread; the exact
        // kernels need no order.
        return Err(BackendError::unsupported(
            node,
            "a grouped convolution on floats (not exact integers) has no native kernel yet",
        ));
    }
    let (batch, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (m, kh, kw) = (w.shape[0], attrs.kernel[0], attrs.kernel[1]);
    if c % group != 0 || m % group != 0 {
        return Err(BackendError::unsupported(
            node,
            format!("{c} channels and {m} filters in {group} groups"),
        ));
    }
    let (cg, mg) = (c / group, m / group);
    let (oh, ow) = (out.shape[2], out.shape[3]);
    let k = cg * kh * kw;
    let im2col = Im2col::new(kb, attrs, (cg, h, wd));
    let src = x.f32_ptr(kb);
    let bias = bias.as_ref().map(|b| kb.table_f32(b));
    let layout = ConvLayout {
        image: (batch, c, h, wd),
        filters: (m, kh, kw),
        out: (oh, ow),
        group,
        cg,
        mg,
        positions: oh * ow,
        k,
        im2col,
        src,
        dst: out.ptr,
        bias,
    };
    if sums.exact || sums.plan.is_some() {
        exact::conv(kb, attrs, &layout, &sums);
    } else {
        mlas::conv(kb, attrs, &layout, &sums.weights);
    }
    Ok(())
}

/// `alpha * op(a) @ b + start` for an activation `a` and a constant `b`, summed as the
/// interpreter's `gemm` and `mlas_gemm` do.
struct Product<'d> {
    /// Row-major `(m, k)`, or `(k, m)` with `trans_a`.
    a: Value,
    trans_a: bool,
    /// Whether the model's B was transposed (it decides MLAS's M = 1 kernel).
    trans_b: bool,
    /// B as a row-major `(k, n)` matrix.
    b_kn: &'d [f32],
    mkn: (usize, usize, usize),
    alpha: f32,
    /// `beta * C`, row-major `(m, n)`.
    start: Option<&'d [f32]>,
    /// MLAS takes its M = 1 kernels only with alpha 1 and beta 0 or 1.
    m1_allowed: bool,
    exact: bool,
    /// Sums of integers, scaled once (`b_kn` holds the weights' integers).
    scaled: Option<&'d IntegerFirst>,
}

/// A product's activation, start (C) and result in memory, as every way of summing
/// reads and writes them.
#[derive(Clone, Copy)]
struct ProductIo {
    a: Value,
    trans_a: bool,
    mkn: (usize, usize, usize),
    /// The table of `beta * C`, if there is one.
    start: Option<Value>,
    dst: Value,
}

impl ProductIo {
    /// Element `(i, kk)` of `op(a)`.
    fn load_a(&self, kb: &mut KernelBuilder, i: Value, kk: Value) -> Value {
        let (m, k, _) = self.mkn;
        let (row, col, width) = if self.trans_a { (kk, i, m) } else { (i, kk, k) };
        let r = kb.b.ins().imul_imm_s(row, width as i64);
        let at = kb.b.ins().iadd(r, col);
        kb.load_at(F32, self.a, at)
    }

    /// Output `(i, j)`'s start, if there is one.
    fn start_at(&self, kb: &mut KernelBuilder, i: Value, j: Value) -> Option<Value> {
        let n = self.mkn.2;
        self.start.map(|t| {
            let r = kb.b.ins().imul_imm_s(i, n as i64);
            let at = kb.b.ins().iadd(r, j);
            kb.load_at(F32, t, at)
        })
    }

    /// Stores output `(i, j)`.
    fn store(&self, kb: &mut KernelBuilder, i: Value, j: Value, s: Value) {
        let n = self.mkn.2;
        let r = kb.b.ins().imul_imm_s(i, n as i64);
        let at = kb.b.ins().iadd(r, j);
        kb.store_at(s, self.dst, at);
    }
}

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
