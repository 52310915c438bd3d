//! bnnc's intermediate representation.
//!
//! A [`Graph`] holds values (tensors with a static shape and a quantized element type, each
//! defined once: a graph input, a constant, or a node's result) and nodes (an [`Op`] applied to
//! values). Around it: [`infer`] gives each op's result types, [`verify`] checks a graph's
//! invariants, [`text`] prints the readable form that snapshot tests compare, and [`interp`] is
//! the reference interpreter: the definition of what a graph computes.

pub mod broadcast;
pub mod error;
pub mod graph;
pub mod infer;
pub mod integer_threshold;
pub mod interp;
pub mod op;
pub mod packing;
pub mod summation_order;
pub mod tensor;
pub mod text;
pub mod types;
pub mod verify;
pub mod window;

pub use error::{IrError, Result};
pub use graph::{Graph, Node, NodeId, ValueData, ValueDef, ValueId};
pub use op::{
    BinaryOp, CompareOp, ConvAttrs, GemmAttrs, Op, PoolAttrs, QuantAttrs, RoundingMode,
    ThresholdAttrs, TruncAttrs,
};
pub use tensor::{Tensor, TensorData};
pub use types::{ElemType, IntType, Scale, Shape, TensorType};
