//! The one place where errors become HTTP status codes and JSON bodies
//! (`{"error": {"code": ..., "message": ...}}`), including the errors of actix's own
//! extractors.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde_json::json;

use crate::Error;

impl Error {
    /// A stable machine-readable name for the error.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Settings { .. } => "settings",
            Error::OrtLibraryMissing { .. } | Error::OrtLibraryBroken { .. } => "runtime",
            Error::Model { .. } => "model",
            Error::Inference(_) => "inference",
            Error::NotAnImage { .. } => "not_an_image",
            Error::ImageTooLarge { .. } => "image_too_large",
            Error::PayloadTooLarge { .. } => "payload_too_large",
            Error::UnsupportedContentType { .. } => "unsupported_content_type",
            Error::BadRequest(_) => "bad_request",
            Error::InvalidId { .. } => "invalid_id",
            Error::InvalidK { .. } => "invalid_k",
            Error::InvalidFilter { .. } => "invalid_filter",
            Error::MetadataFile { .. } => "metadata_file",
            Error::Snapshot { .. } => "snapshot",
            Error::DimensionMismatch { .. } => "dimension_mismatch",
            Error::UnknownRoute { .. } => "unknown_route",
            Error::NotFound { .. } => "not_found",
            Error::CollectionNotFound { .. } => "collection_not_found",
            Error::CollectionExists { .. } => "collection_exists",
            Error::InvalidCollection { .. } => "invalid_collection",
            Error::Unauthorized => "unauthorized",
            Error::Unavailable => "unavailable",
            Error::RateLimited { .. } => "rate_limited",
            Error::Overloaded { .. } => "overloaded",
            Error::Milvus { .. } => "backend",
            Error::NotOnBackend { .. } => "not_on_backend",
            Error::Upgrading => "upgrading",
            Error::Store { .. }
            | Error::IndexModelMismatch { .. }
            | Error::IndexFormatTooNew { .. }
            | Error::Io { .. } => "storage",
        }
    }
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        match self {
            Error::NotAnImage { .. }
            | Error::BadRequest(_)
            | Error::InvalidId { .. }
            | Error::InvalidK { .. }
            | Error::InvalidFilter { .. }
            | Error::MetadataFile { .. }
            | Error::Snapshot { .. }
            | Error::InvalidCollection { .. }
            | Error::DimensionMismatch { .. } => StatusCode::BAD_REQUEST,
            Error::ImageTooLarge { .. } | Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedContentType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::UnknownRoute { .. } | Error::NotFound { .. } | Error::CollectionNotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            Error::CollectionExists { .. } | Error::Upgrading => StatusCode::CONFLICT,
            Error::Unauthorized => StatusCode::UNAUTHORIZED,
            Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Unavailable | Error::Overloaded { .. } | Error::Milvus { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::NotOnBackend { .. } => StatusCode::NOT_IMPLEMENTED,
            Error::Settings { .. }
            | Error::OrtLibraryMissing { .. }
            | Error::OrtLibraryBroken { .. }
            | Error::Model { .. }
            | Error::Inference(_)
            | Error::Store { .. }
            | Error::IndexModelMismatch { .. }
            | Error::IndexFormatTooNew { .. }
            | Error::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if matches!(self, Error::Overloaded { .. }) {
            // Load shedding is the server working as told; one line per refusal at error
            // level would flood the log just when it is busiest.
            tracing::debug!("{self}");
        } else if status.is_server_error() {
            tracing::error!("{self}");
        }
        let mut res = HttpResponse::build(status);
        if matches!(self, Error::Unauthorized) {
            res.insert_header(("WWW-Authenticate", "Bearer"));
        }
        match self {
            Error::RateLimited { retry_after_s, .. } => {
                res.insert_header(("Retry-After", retry_after_s.to_string()));
            }
            // A full queue or a backend away: worth trying again shortly.
            Error::Unavailable | Error::Overloaded { .. } | Error::Milvus { .. } => {
                res.insert_header(("Retry-After", "1"));
            }
            _ => {}
        }
        res.json(json!({ "error": { "code": self.code(), "message": self.to_string() } }))
    }
}

/// Bad query strings (`k=abc`) answer like every other bad request.
pub fn query_error(err: actix_web::error::QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    Error::BadRequest(format!("bad query string: {err}")).into()
}

/// Bad path segments answer like every other bad request.
pub fn path_error(err: actix_web::error::PathError, _req: &HttpRequest) -> actix_web::Error {
    Error::BadRequest(format!("bad path: {err}")).into()
}

/// Any route that does not exist.
pub async fn unknown_route(req: HttpRequest) -> Result<HttpResponse, Error> {
    Err(Error::UnknownRoute { method: req.method().to_string(), path: req.path().chars().take(200).collect() })
}
