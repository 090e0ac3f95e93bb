//! What a network is: backbone architectures defined once as op graphs, the STML heads,
//! weight loading from safetensors, and ONNX export. What the trainer and the server must
//! agree on (manifest, preprocessing, distance, output names) is the `contract` crate,
//! re-exported here.
//!
//! Without the `tch` feature this crate is plain Rust (graphs, weights, export); with it,
//! [`net`] runs the graphs on libtorch.

pub mod arch;
pub mod config;
pub mod error;
pub mod graph;
#[cfg(feature = "tch")]
pub mod net;
pub mod onnx;
pub mod weights;

pub use arch::Arch;
pub use config::{Head, ModelConfig, HEAD_F, HEAD_G, HEAD_PREFIX};
pub use contract::{manifest, preprocess};
pub use contract::{ChannelOrder, Distance, Manifest, Output, Preprocess, Provenance};
pub use error::{Error, Result};
