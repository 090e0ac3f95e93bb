//! How an embedding is served: ONNX Runtime inference behind a dynamic batcher, a vector
//! index (HNSW, with an exact oracle) over a durable redb store, the HTTP API, and the
//! batch indexing job.

pub mod client;
pub mod collections;
pub mod compare;
pub mod embed;
pub mod error;
pub mod filter;
pub mod gallery;
pub mod http;
pub mod index;
pub mod indexer;
pub mod metrics;
pub mod rerank;
pub mod runtime;
pub mod serve;
pub mod settings;
pub mod snapshot;
pub mod store;
pub mod upgrade;

pub use error::{Error, Result};
pub use gallery::{Gallery, Hit, IndexKind, LocalGallery, NewImage};
pub use settings::Settings;
