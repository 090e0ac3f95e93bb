//! The one error type of the models crate.

use std::path::PathBuf;

/// Everything that can go wrong while building, loading or exporting a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown architecture `{name}`; expected one of: {expected}")]
    UnknownArch { name: String, expected: String },

    #[error("cannot read weights file {path}: {reason}. Check the path, or run scripts/setup.sh to install the pretrained weights")]
    WeightsUnreadable { path: PathBuf, reason: String },

    #[error("weights file {path} does not match architecture `{arch}`:{details}\nUse a file saved from the same architecture (with torchvision names for ResNet/MobileNetV2), or pass --arch to match the file")]
    WeightsMismatch {
        path: PathBuf,
        arch: String,
        /// Missing, unexpected and mis-shaped tensors, one per line.
        details: String,
    },

    #[error(
        "the network has no output `{name}` (it has: {available}); the run's config.toml and checkpoint do not match"
    )]
    MissingOutput { name: String, available: String },

    #[error("invalid model configuration: {0}")]
    Config(String),

    #[error("ONNX export to {path} failed: {reason}")]
    Export { path: PathBuf, reason: String },

    #[error("{path} is not a model exported by `trainer export`: {reason}")]
    Manifest { path: PathBuf, reason: String },

    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[cfg(feature = "tch")]
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
