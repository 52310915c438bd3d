//! bnnc as a library: the stages the `bnnc` command line runs, for the front ends that are not
//! a command line (the Python package in `python/`).
//!
//! A model goes through [`stages::import`] (or [`stages::import_bytes`]) and
//! [`stages::optimize`], then to a backend: [`native`] compiles it for a CPU and loads it,
//! [`fpga`] plans it as a dataflow design and writes an HLS or Verilog project. Errors are
//! [`anyhow::Error`]s whose chain holds the stage's own error; [`diagnostic::locate`] finds
//! the node, op and reason in it. Nothing here reads the environment: what the command line
//! reads from it reaches these functions as [`Tuning`].

pub mod diagnostic;
pub mod fpga;
pub mod inspect;
pub mod native;
pub mod npy;
pub mod stages;

pub use stages::Tuning;
