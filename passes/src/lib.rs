//! bnnc's optimization passes: they turn an imported network (float BatchNorm, fake
//! quantizers, scale multiplies) into the integer form binary hardware runs: XNOR-popcount
//! accumulators followed by exact integer thresholds.
//!
//! A pass is a function from IR to IR with a name users type (`--print-after cleanup`); the
//! [`manager`] runs them in order and verifies the IR after each. Rewrites that are local and
//! benefit from exploring alternatives run on an e-graph ([`egraph`]); steps that are not
//! local rewrites (exact threshold search, lowering, layout) are plain passes.

pub mod batchnorm;
pub mod bitserial;
pub mod cleanup;
pub mod egraph;
pub mod error;
pub mod fusion;
pub mod input_threshold;
mod integers;
mod layout;
pub mod manager;
pub mod pooling;
pub mod precision;
pub mod report;
pub mod scales;
pub mod threshold;
pub mod xnor;

pub use bitserial::BitSerial;
pub use error::PassError;
pub use manager::{run_pipeline, run_pipeline_with, Pass, PassEvent, PipelineOptions, PIPELINE};
pub use precision::FirstLastPolicy;
pub use report::PassReport;
