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
    node: &Node,
    axis: usize,
    coerce_2d: bool,
    x: &Operand,
    out: &Operand,
) -> Result<(), BackendError> {
    let shape = &x.shape;
    let inner: usize = shape[axis + 1..].iter().product();
    if !coerce_2d && inner != 1 {
        return Err(BackendError::unsupported(
            node,
            "the native Softmax runs over the last axis only",
        ));
    }
    let len: usize = if coerce_2d {
        shape[axis..].iter().product()
    } else {
        shape[axis]
    };
    let rows = x.numel() / len.max(1);
    let (src, dst) = (x.f32_ptr(kb), out.ptr);
    kb.for_range(rows, |kb, r| {
        let row = kb.addr(src, r, (len * 4) as i64, 0);
        let orow = kb.addr(dst, r, (len * 4) as i64, 0);
        let ninf = kb.fconst(f32::NEG_INFINITY);
        let max = kb.fold_range(len, vec![ninf], |kb, i, m| {
            let v = kb.load_at(F32, row, i);
            let greater = kb.b.ins().fcmp(FloatCC::GreaterThan, v, m[0]);
            vec![kb.select(greater, v, m[0])]
        })[0];
        let zero = kb.fconst(0.0);
        let sum = kb.fold_range(len, vec![zero], |kb, i, s| {
            let v = kb.load_at(F32, row, i);
            let d = kb.b.ins().fsub(v, max);
            let e = kb.call_c("expf", &[F32], F32, &[d]);
            kb.store_at(e, orow, i);
            vec![kb.b.ins().fadd(s[0], e)]
        })[0];
        kb.for_range(len, |kb, i| {
            let e = kb.load_written(F32, orow, i);
            let y = kb.b.ins().fdiv(e, sum);
            kb.store_at(y, orow, i);
        });
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
