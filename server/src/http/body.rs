//! Reading a request body under the upload limit and sorting it by content type: a raw
//! image (`image/*`, or `application/octet-stream`: the format is read from the bytes
//! either way), a multipart form, or JSON.

use actix_web::http::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::web::{Bytes, BytesMut, Payload};
use futures_util::{stream, FutureExt, StreamExt, TryStreamExt};

use crate::{Error, Result};

/// What we accept, for error messages.
pub const ACCEPTED: &str = "an image/* (or application/octet-stream) body, multipart/form-data, or application/json";
/// After the limit is hit, this much more is read and dropped so the client still gets
/// the 413 answer instead of a reset connection.
const DRAIN_BYTES: usize = 64 * 1024 * 1024;

/// One multipart field.
#[derive(Debug, Clone)]
pub struct Part {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: Bytes,
}

impl Part {
    /// True for file fields and image-typed fields.
    pub fn is_file(&self) -> bool {
        self.filename.is_some() || self.content_type.as_deref().is_some_and(|c| c.starts_with("image/"))
    }

    /// The field as UTF-8 text.
    pub fn text(&self) -> Result<&str> {
        std::str::from_utf8(&self.data)
            .map_err(|_| Error::BadRequest(format!("multipart field `{}` is not UTF-8 text", self.name)))
    }
}

/// A request body, sorted by content type.
#[derive(Debug)]
pub enum Upload {
    Image(Bytes),
    Multipart(Vec<Part>),
    Json(Bytes),
}

/// Lower-cased media type without parameters.
fn essence(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    Some(v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

/// Reads the body (at most `limit` bytes) and sorts it by its content type.
pub async fn read(headers: &HeaderMap, mut payload: Payload, limit: usize) -> Result<Upload> {
    let kind = essence(headers);
    let kind = match kind.as_deref() {
        Some(k) if k.starts_with("image/") || k == "application/octet-stream" => "image",
        Some("multipart/form-data") => "multipart",
        Some("application/json") => "json",
        other => {
            return Err(Error::UnsupportedContentType {
                got: other.unwrap_or("(none)").chars().take(100).collect(),
                expected: ACCEPTED.into(),
            })
        }
    };
    let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    let mut body = BytesMut::new();
    let mut too_large = declared.is_some_and(|n| n > limit);
    let mut seen = 0usize;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| Error::BadRequest(format!("cannot read the body: {e}")))?;
        seen += chunk.len();
        if seen > limit {
            too_large = true;
        }
        if too_large {
            if seen > limit + DRAIN_BYTES {
                break;
            }
            continue;
        }
        body.extend_from_slice(&chunk);
    }
    if too_large {
        return Err(Error::PayloadTooLarge { limit });
    }
    let body = body.freeze();
    Ok(match kind {
        "image" => Upload::Image(body),
        "json" => Upload::Json(body),
        _ => Upload::Multipart(multipart(headers, body)?),
    })
}

/// The fields of a multipart body (`headers` give its boundary), read whole.
///
/// Fuzzing found two faults of actix-multipart 0.7 that this guards against. The body is
/// in memory, so every step of the parser is ready at once; a step that is not means the
/// parser waits for bytes that will never come (it does so, without ever waking, when a
/// part's data ends in a carriage return with no proper boundary after it: a truncated or
/// malformed upload), and the body is refused as incomplete. And, given a boundary of one
/// to three characters, it panics on a line of under four bytes before the first boundary,
/// which would end the connection without an answer (and print a panic for each such
/// request): the panic is caught and the body refused as malformed.
pub fn multipart(headers: &HeaderMap, body: Bytes) -> Result<Vec<Part>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_multipart(headers, body))).unwrap_or_else(|_| {
        Err(Error::BadRequest("malformed multipart body: a line before the first boundary is cut short".into()))
    })
}

fn read_multipart(headers: &HeaderMap, body: Bytes) -> Result<Vec<Part>> {
    let bad = |e: actix_multipart::MultipartError| Error::BadRequest(format!("malformed multipart body: {e}"));
    let incomplete =
        || Error::BadRequest("malformed multipart body: it ends inside a part; send the whole form".into());
    let mut form = actix_multipart::Multipart::new(
        headers,
        stream::once(async move { Ok::<_, actix_web::error::PayloadError>(body) }),
    );
    let mut parts = Vec::new();
    while let Some(mut field) = form.try_next().now_or_never().ok_or_else(incomplete)?.map_err(bad)? {
        let name = field.name().unwrap_or("").to_string();
        let filename = field.content_disposition().and_then(|d| d.get_filename()).map(str::to_string);
        let content_type = field.content_type().map(|m| m.essence_str().to_ascii_lowercase());
        let mut data = BytesMut::new();
        while let Some(chunk) = field.try_next().now_or_never().ok_or_else(incomplete)?.map_err(bad)? {
            data.extend_from_slice(&chunk);
        }
        parts.push(Part { name, filename, content_type, data: data.freeze() });
    }
    Ok(parts)
}

/// Parses a JSON body into `T`, reporting malformed JSON as a bad request.
pub fn json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| Error::BadRequest(format!("malformed JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderValue;

    use super::*;

    fn parse(content_type: &str, body: &'static [u8]) -> Result<Vec<Part>> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
        multipart(&headers, Bytes::from_static(body))
    }

    /// Inputs the fuzzer found (fuzz/regressions/multipart/ has them as it found them).
    #[test]
    fn bodies_that_stall_or_crash_the_multipart_parser_are_refused() {
        let e =
            parse("multipart/form-data; boundary=XX", b"--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n\r")
                .unwrap_err();
        assert!(e.to_string().contains("ends inside a part"), "{e}");
        let e = parse("multipart/form-data; boundary=b", b"\n--b\r\n").unwrap_err();
        assert!(e.to_string().contains("cut short"), "{e}");
        let ok = parse(
            "multipart/form-data; boundary=b",
            b"--b\r\nContent-Disposition: form-data; name=\"id\"\r\n\r\nx\r\n--b--\r\n",
        )
        .unwrap();
        assert_eq!((ok.len(), ok[0].name.as_str(), &ok[0].data[..]), (1, "id", &b"x"[..]));
    }
}
