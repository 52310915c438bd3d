//! Concat: the inputs' blocks side by side along the axis, copied as they are (no
//! arithmetic, so exact in any element type stored as f32).

use bnnc_ir::Node;
use cranelift_codegen::ir::types::{F32, F32X4};
use cranelift_codegen::ir::Value;

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
