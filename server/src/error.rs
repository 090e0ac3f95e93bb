//! The one error type of the server crate. HTTP status codes are derived from it in
//! exactly one place (`http::error`).

use std::path::PathBuf;

/// Everything that can go wrong while loading a model, embedding, indexing or serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid settings from {source_name}: {reason}")]
    Settings { source_name: String, reason: String },

    #[error("ONNX Runtime library not found at {path}. Run scripts/setup.sh to install it, or set ORT_DYLIB_PATH (or `ort_dylib_path` in the config file) to the path of libonnxruntime.so")]
    OrtLibraryMissing { path: PathBuf },

    #[error("cannot load the ONNX Runtime library {path}: {reason}. Re-run scripts/setup.sh to reinstall it, or set ORT_DYLIB_PATH to a working libonnxruntime.so")]
    OrtLibraryBroken { path: PathBuf, reason: String },

    #[error("cannot load model {path}: {reason}. Pass a model written by `trainer export`")]
    Model { path: PathBuf, reason: String },

    #[error("inference failed: {0}")]
    Inference(String),

    #[error("the request body is not a readable image: {reason}")]
    NotAnImage { reason: String },

    #[error(
        "image is {width}x{height} = {pixels} pixels, more than the limit of {limit} pixels; send a smaller image"
    )]
    ImageTooLarge { width: u32, height: u32, pixels: u64, limit: u64 },

    #[error("upload is larger than the limit of {limit} bytes; send a smaller file or raise `max_upload_bytes`")]
    PayloadTooLarge { limit: usize },

    #[error("unsupported content type `{got}`; expected {expected}")]
    UnsupportedContentType { got: String, expected: String },

    #[error("bad request: {0}")]
    BadRequest(String),

    #[error("invalid id `{id}`: {reason}")]
    InvalidId { id: String, reason: String },

    #[error("invalid filter `{filter}`: {reason}. Filters are JSON ({{\"must\": [{{\"key\": \"label\", \"match\": \"shoe\"}}]}}) or query-string terms (`label:shoe,year>2020`); see /docs")]
    InvalidFilter { filter: String, reason: String },

    #[error("k = {k} is out of range; expected 1 ..= {max}")]
    InvalidK { k: usize, max: usize },

    #[error("vector has {got} dimensions, the index holds {expected}-dimensional vectors")]
    DimensionMismatch { got: usize, expected: usize },

    #[error("no route for {method} {path}; see /openapi.json")]
    UnknownRoute { method: String, path: String },

    #[error("no image with id `{id}`")]
    NotFound { id: String },

    #[error("no collection `{name}`; GET /collections lists them, POST /collections creates one")]
    CollectionNotFound { name: String },

    #[error("collection `{name}` already exists; pick another name, or drop it first")]
    CollectionExists { name: String },

    #[error("collection `{name}`: {reason}")]
    InvalidCollection { name: String, reason: String },

    #[error("missing or wrong API key; send `Authorization: Bearer <key>`")]
    Unauthorized,

    #[error("the server is shutting down or overloaded; retry later")]
    Unavailable,

    #[error("the server is answering {limit} requests already (http.max_in_flight); retry in a second")]
    Overloaded { limit: usize },

    #[error("too many requests from this client ({per_second} a second); retry after {retry_after_s} s")]
    RateLimited { per_second: f64, retry_after_s: u64 },

    #[error("the collection is being re-embedded with a new model and takes no changes until the swap; searches go on; retry the change after it (GET /collections/{{name}}/upgrade)")]
    Upgrading,

    #[error("index store {path}: {reason}")]
    Store { path: PathBuf, reason: String },

    #[error("index {path} has format {found}, newer than this server's {supported}; run the server version that wrote it, or upgrade this one")]
    IndexFormatTooNew { path: PathBuf, found: u32, supported: u32 },

    #[error("index {path} was built with a different model ({reason}); use a fresh --index directory or the model it was built with")]
    IndexModelMismatch { path: PathBuf, reason: String },

    #[error("Milvus at {uri}, collection `{collection}`: {reason}")]
    Milvus { uri: String, collection: String, reason: String },

    #[error("{what} is not available on the {backend} backend; {instead}")]
    NotOnBackend { what: String, backend: &'static str, instead: String },

    #[error("snapshot {path}: {reason}")]
    Snapshot { path: PathBuf, reason: String },

    #[error("metadata file {path}, line {line}: {reason}")]
    MetadataFile { path: PathBuf, line: usize, reason: String },

    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<contract::ContractError> for Error {
    fn from(e: contract::ContractError) -> Self {
        match e {
            contract::ContractError::Io { path, source } => Error::Io { path, source },
            contract::ContractError::ImageTooLarge { width, height, pixels, limit, .. } => {
                Error::ImageTooLarge { width, height, pixels, limit }
            }
            contract::ContractError::NotAnImage { reason, .. } => Error::NotAnImage { reason },
            contract::ContractError::Manifest { reason } => Error::Model { path: PathBuf::new(), reason },
            contract::ContractError::Stored { path, reason } => Error::Store { path, reason },
        }
    }
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
