//! Network heads: Softmax and TopK.

use bnnc_ir::Node;
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::types::F32;
use cranelift_codegen::ir::InstBuilder;

use super::{KernelBuilder, Operand};
use crate::BackendError;

/// Softmax over `axis` (or, with `coerce_2d`, everything from `axis` on): `exp(x - max) /
/// sum`, the sum in order, `exp` from the C library as in the interpreter.
pub(crate) fn softmax(
    kb: &mut KernelBuilder,
    _node: &Node,
    axis: usize,
    coerce_2d: bool,
    x: &Operand,
    out: &Operand,
) -> Result<(), BackendError> {
    let shape = &x.shape;
    // The lanes, as the interpreter has them: `outer` groups of `len` elements `inner` apart.
    let (outer, len, inner) = if coerce_2d {
        (
            shape[..axis].iter().product::<usize>(),
            shape[axis..].iter().product::<usize>(),
            1,
        )
    } else {
        (
            shape[..axis].iter().product(),
            shape[axis],
            shape[axis + 1..].iter().product(),
        )
    };
    let (src, dst) = (x.f32_ptr(kb), out.ptr);
    let step = (inner * 4) as i64;
    kb.for_range(outer, |kb, o| {
        kb.for_range(inner, |kb, i| {
            let lane = kb.b.ins().imul_imm_s(o, (len * inner) as i64);
            let lane = kb.b.ins().iadd(lane, i);
            let row = kb.addr(src, lane, 4, 0);
            let orow = kb.addr(dst, lane, 4, 0);
            let ninf = kb.fconst(f32::NEG_INFINITY);
            let max = kb.fold_range(len, vec![ninf], |kb, j, m| {
                let at = kb.addr(row, j, step, 0);
                let v = kb.load(F32, at, 0);
                let greater = kb.b.ins().fcmp(FloatCC::GreaterThan, v, m[0]);
                vec![kb.select(greater, v, m[0])]
            })[0];
            let zero = kb.fconst(0.0);
            let sum = kb.fold_range(len, vec![zero], |kb, j, s| {
                let at = kb.addr(row, j, step, 0);
                let v = kb.load(F32, at, 0);
                let d = kb.b.ins().fsub(v, max);
                let e = kb.call_c("expf", &[F32], F32, &[d]);
                let to = kb.addr(orow, j, step, 0);
                kb.store(e, to, 0);
                vec![kb.b.ins().fadd(s[0], e)]
            })[0];
            kb.for_range(len, |kb, j| {
                let at = kb.addr(orow, j, step, 0);
                let e = kb.b.ins().load(F32, super::builder::mem(), at, 0);
                let y = kb.b.ins().fdiv(e, sum);
                kb.store(y, at, 0);
            });
        })
    });
    Ok(())
}

/// TopK with k = 1 over the last axis: the first largest (or smallest) value and its index
/// (written as f32).
pub(crate) fn top_k(
    kb: &mut KernelBuilder,
    node: &Node,
    (k, axis, largest): (usize, usize, bool),
    x: &Operand,
    results: &[Operand],
) -> Result<(), BackendError> {
    if k != 1 || axis + 1 != x.shape.len() {
        return Err(BackendError::unsupported(
            node,
            "the native TopK takes k = 1 over the last axis",
        ));
    }
    let len = x.shape[axis];
    let rows = x.numel() / len.max(1);
    let src = x.f32_ptr(kb);
    let (values, indices) = (results[0].ptr, results[1].ptr);
    kb.for_range(rows, |kb, r| {
        let row = kb.addr(src, r, (len * 4) as i64, 0);
        let first = kb.load(F32, row, 0);
        let zero = kb.iconst(0);
        let best = kb.fold_range(len, vec![first, zero], |kb, i, s| {
            let v = kb.load_at(F32, row, i);
            // Strictly better only: ties keep the lower index (a stable sort's first).
            let cc = if largest {
                FloatCC::GreaterThan
            } else {
                FloatCC::LessThan
            };
            let better = kb.b.ins().fcmp(cc, v, s[0]);
            vec![kb.select(better, v, s[0]), kb.select(better, i, s[1])]
        });
        kb.store_at(best[0], values, r);
        let index = kb.b.ins().fcvt_from_sint(F32, best[1]);
        kb.store_at(index, indices, r);
    });
    Ok(())
}
