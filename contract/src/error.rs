//! The one error type of the contract crate.

use std::path::PathBuf;

/// A manifest that cannot be used, an image that cannot be decoded, a folder that cannot
/// be read.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("{reason}")]
    Manifest { reason: String },

    #[error("{name} is not a readable image: {reason}")]
    NotAnImage { name: String, reason: String },

    #[error(
        "{name} is {width}x{height} = {pixels} pixels, more than the limit of {limit} pixels; use a smaller image"
    )]
    ImageTooLarge { name: String, width: u32, height: u32, pixels: u64, limit: u64 },

    #[error("{path}: {reason}")]
    Stored { path: PathBuf, reason: String },

    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The crate's result type.
pub type Result<T, E = ContractError> = std::result::Result<T, E>;
