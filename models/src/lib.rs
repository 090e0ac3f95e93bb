//! What a network is: backbone architectures defined once as op graphs, the STML heads,
//! the preprocessing contract, weight loading from safetensors, and ONNX export.
//!
//! Without the `tch` feature this crate is plain Rust (the server uses the manifest and
//! preprocessing from here); with it, [`net`] runs the graphs on libtorch.

pub mod arch;
pub mod config;
pub mod error;
pub mod graph;
pub mod manifest;
#[cfg(feature = "tch")]
pub mod net;
pub mod onnx;
pub mod preprocess;
pub mod weights;

pub use arch::Arch;
pub use config::{ModelConfig, HEAD_F, HEAD_G};
pub use error::{Error, Result};
pub use manifest::{Distance, Manifest, Provenance};
pub use preprocess::{ChannelOrder, Preprocess};
