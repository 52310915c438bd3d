//! The extractor's cost model: bit operations and integer thresholds over float work.
//!
//! An e-node costs `weight * elements of its result`, plus its operands (egg's tree cost).
//! The weight says what a backend pays per element:
//!
//! | weight | what |
//! |---|---|
//! | 1 | Threshold, XNOR-popcount ops, and moving 1-bit data (reshape, pad, pool, ..) |
//! | 2 | moving integer data; integer linear layers (their K is the same in every alternative) |
//! | 4 | moving f32 data |
//! | 8 | float arithmetic: BatchNorm, Mul/Add/Sub/Div on floats, quantizers (which compute on floats), float linear layers, heads |
//!
//! Constants and graph inputs cost nothing: they are there whatever is chosen. What the rules
//! add is chosen whenever it removes float work: a fold replaces at least a quantizer (8 per
//! element) by a Threshold (1 per element, 2 with a reshape after it) over the same
//! accumulator; an identity removes an op; `reshape(x)` costs less than `reshape(reshape(x))`.

use bnnc_ir::{ElemType, Op, TensorType};
use egg::{CostFunction, Id, Language};

use super::analysis::BnnEGraph;
use super::language::BnnLang;

/// The cost function over an e-graph (it reads each e-node's result type from its class).
pub struct BnnCost<'a> {
    egraph: &'a BnnEGraph,
}

impl<'a> BnnCost<'a> {
    /// The cost function for extracting from `egraph`.
    pub fn new(egraph: &'a BnnEGraph) -> Self {
        BnnCost { egraph }
    }
}

impl CostFunction<BnnLang> for BnnCost<'_> {
    type Cost = f64;

    fn cost<C>(&mut self, enode: &BnnLang, mut costs: C) -> f64
    where
        C: FnMut(Id) -> f64,
    {
        let own = match enode {
            BnnLang::Input(_) | BnnLang::Const(_) => 0.0,
            // The op's class carries the cost of computing it.
            BnnLang::Result(..) => 0.0,
            BnnLang::Op(key, _) => {
                let results = self
                    .egraph
                    .lookup(enode.clone())
                    .map(|c| &self.egraph[c].data.results[..])
                    .unwrap_or(&[]);
                let elements: f64 = results.iter().map(|t| t.numel().max(1) as f64).sum();
                weight(key.op(), results) * elements.max(1.0)
            }
        };
        enode.fold(own, |sum, child| sum + costs(child))
    }
}

/// Cost per result element of `op` with results `results`.
fn weight(op: &Op, results: &[TensorType]) -> f64 {
    let elem = results.first().map(|t| &t.elem);
    let bits = elem.map_or(32, ElemType::bits);
    let moving = match bits {
        1 => 1.0,
        32 => 4.0,
        _ => 2.0,
    };
    match op {
        Op::Threshold(_)
        | Op::XnorMatMul
        | Op::XnorConv(_)
        | Op::BitSerialMatMul { .. }
        | Op::BitSerialConv { .. } => 1.0,
        Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Pad { .. }
        | Op::Concat { .. }
        | Op::MaxPool(_)
        | Op::MinMaxPool { .. }
        | Op::Relu
        | Op::Clip { .. } => moving,
        Op::Gemm(_) | Op::MatMul | Op::Conv(_) if bits < 32 => 2.0,
        // A Binary op on two i64 operands (shape arithmetic) is integer work.
        Op::Binary(_) if elem == Some(&ElemType::I64) => 2.0,
        _ => 8.0,
    }
}
