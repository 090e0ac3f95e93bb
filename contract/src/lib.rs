//! The contract between the trainer and the server: whatever both must agree on for an
//! image to be embedded, compared and found the same way on both sides.
//!
//! - [`manifest`]: what an exported ONNX file promises ([`Manifest`], stored under
//!   [`MANIFEST_KEY`]) and the names of the graphs' inputs and outputs ([`Output`]);
//! - [`preprocess`]: how an image becomes the network's input tensor;
//! - [`distance`]: how two embeddings are compared;
//! - [`images`]: which files in a folder are images (one extension list, one walk);
//! - [`decode`]: decoding bytes or a file into pixels, with decompression-bomb limits;
//! - [`contextual`]: STML's contextual similarity on a few vectors (the server re-ranks
//!   with it);
//! - [`stored`]: the files a server stores a collection in (index folder, version folder,
//!   snapshot), and [`stored::StoredImages`], the images they hold;
//! - [`hash`] and [`progress`]: content hashes and progress bars, written one way.
//!
//! The crate is plain Rust: the server depends on it and not on `models` (graphs, export,
//! libtorch).

pub mod contextual;
pub mod decode;
pub mod distance;
pub mod error;
pub mod hash;
pub mod images;
pub mod manifest;
pub mod preprocess;
pub mod progress;
pub mod stored;

pub use decode::{decode_bytes, decode_bytes_scaled, decode_file, header_pixels, DecodeLimits};
pub use distance::Distance;
pub use error::{ContractError, Result};
pub use hash::sha256_hex;
pub use images::{find_images, is_image_name, IMAGE_EXTENSIONS};
pub use manifest::{Manifest, Output, Provenance, INPUT_NAME, MANIFEST_FORMAT, MANIFEST_KEY};
pub use preprocess::{into_rgb8, resize, resize_region, rgb8, ChannelOrder, Preprocess};
