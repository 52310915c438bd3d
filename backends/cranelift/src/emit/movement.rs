//! Ops that move data without arithmetic, exact in any element type stored as f32: Concat
//! (the inputs' blocks side by side along the axis), Transpose and constant Pad.

use bnnc_ir::Node;
use cranelift_codegen::ir::types::{F32, F32X4};
use cranelift_codegen::ir::{InstBuilder, Value};

use super::{KernelBuilder, Operand};
use crate::BackendError;

/// Concat along `axis`: for every index before the axis, each input's block in turn.
pub(crate) fn concat(
    kb: &mut KernelBuilder,
    node: &Node,
    axis: usize,
    operands: &[Operand],
    out: &Operand,
) -> Result<(), BackendError> {
    if axis >= out.shape.len() {
        return Err(BackendError::unsupported(
            node,
            "the axis is past the result's rank",
        ));
    }
    let outer: usize = out.shape[..axis].iter().product();
    let out_block: usize = out.shape[axis..].iter().product();
    let mut offset = 0;
    for x in operands {
        let block: usize = x.shape[axis..].iter().product();
        let src = x.f32_ptr(kb);
        kb.for_range(outer, |kb, o| {
            let from = kb.addr(src, o, (block * 4) as i64, 0);
            let to = kb.addr(out.ptr, o, (out_block * 4) as i64, (offset * 4) as i64);
            copy(kb, from, to, block);
        });
        offset += block;
    }
    Ok(())
}

/// Copies `len` f32 from `from` to `to`, four at a time, then one at a time.
fn copy(kb: &mut KernelBuilder, from: Value, to: Value, len: usize) {
    kb.for_range(len / 4, |kb, i| {
        let (src, dst) = (kb.addr(from, i, 16, 0), kb.addr(to, i, 16, 0));
        let v = kb.load(F32X4, src, 0);
        kb.store(v, dst, 0);
    });
    for i in len / 4 * 4..len {
        let v = kb.load(F32, from, (i * 4) as i64);
        kb.store(v, to, (i * 4) as i64);
    }
}

/// Transpose by `perm`: output element `(i0, i1, ...)` is input element `i` with
/// `i[perm[d]] = id`, visited in the output's row-major order.
pub(crate) fn transpose(
    kb: &mut KernelBuilder,
    node: &Node,
    perm: &[usize],
    x: &Operand,
    out: &Operand,
) -> Result<(), BackendError> {
    let rank = x.shape.len();
    if perm.len() != rank || out.shape.len() != rank {
        return Err(BackendError::unsupported(
            node,
            "the permutation does not fit the input",
        ));
    }
    // Row-major element strides of the input, taken in the output's axis order.
    let in_strides: Vec<usize> = (0..rank)
        .map(|a| x.shape[a + 1..].iter().product())
        .collect();
    let strides: Vec<i64> = perm.iter().map(|&a| (in_strides[a] * 4) as i64).collect();
    let (src, dst) = (x.f32_ptr(kb), out.ptr);
    let first = kb.iconst(0);
    nest(kb, &out.shape, &strides, src, first, dst);
    Ok(())
}

/// The loops of [`transpose`], one per output axis: `from` is the input address of the
/// current element, `to` the index of the output's.
fn nest(
    kb: &mut KernelBuilder,
    shape: &[usize],
    strides: &[i64],
    from: Value,
    to: Value,
    dst: Value,
) {
    let Some((&extent, inner)) = shape.split_first() else {
        let v = kb.load(F32, from, 0);
        kb.store_at(v, dst, to);
        return;
    };
    let block: usize = inner.iter().product();
    kb.for_range(extent, |kb, i| {
        let from = kb.addr(from, i, strides[0], 0);
        let offset = kb.b.ins().imul_imm_s(i, block as i64);
        let to = kb.b.ins().iadd(to, offset);
        nest(kb, inner, &strides[1..], from, to, dst);
    });
}

/// Constant Pad: the result filled with `value`, then each input row copied into place.
pub(crate) fn pad(
    kb: &mut KernelBuilder,
    node: &Node,
    pads: &[usize],
    value: f32,
    x: &Operand,
    out: &Operand,
) -> Result<(), BackendError> {
    let rank = x.shape.len();
    if rank == 0 || pads.len() != 2 * rank || out.shape.len() != rank {
        return Err(BackendError::unsupported(
            node,
            "the pads do not fit the input",
        ));
    }
    let total: usize = out.shape.iter().product();
    let fill = kb.fconst(value);
    let fill4 = kb.b.ins().splat(F32X4, fill);
    let dst = out.ptr;
    kb.for_range(total / 4, |kb, i| {
        let at = kb.addr(dst, i, 16, 0);
        kb.store(fill4, at, 0);
    });
    for i in total / 4 * 4..total {
        kb.store(fill, dst, (i * 4) as i64);
    }
    // Output strides in bytes; each input row lands at its padded origin.
    let out_strides: Vec<i64> = (0..rank)
        .map(|a| (out.shape[a + 1..].iter().product::<usize>() * 4) as i64)
        .collect();
    let origin: i64 = (0..rank).map(|a| pads[a] as i64 * out_strides[a]).sum();
    let row = x.shape[rank - 1];
    let src = x.f32_ptr(kb);
    let to = kb.b.ins().iadd_imm_s(dst, origin);
    rows(kb, &x.shape[..rank - 1], &out_strides, src, to, row);
    Ok(())
}

/// The row loops of [`pad`]: input rows are contiguous, `row` f32 each; `to` advances by the
/// output's strides.
fn rows(
    kb: &mut KernelBuilder,
    outer: &[usize],
    out_strides: &[i64],
    from: Value,
    to: Value,
    row: usize,
) {
    let Some((&extent, inner)) = outer.split_first() else {
        copy(kb, from, to, row);
        return;
    };
    let block = (inner.iter().product::<usize>() * row * 4) as i64;
    kb.for_range(extent, |kb, i| {
        let from = kb.addr(from, i, block, 0);
        let to = kb.addr(to, i, out_strides[0], 0);
        rows(kb, inner, &out_strides[1..], from, to, row);
    });
}
