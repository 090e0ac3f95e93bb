//! Cross-origin requests (CORS), for web pages served elsewhere that call this server.
//! Off unless `cors_origins` names the origins allowed: then an allowed origin's requests
//! get `Access-Control-Allow-Origin` with their own origin, and its preflight requests are
//! answered here, before any route, with the methods and headers the API uses.

use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::Method;
use actix_web::HttpResponse;

/// How long a browser may cache a preflight answer, in seconds.
const MAX_AGE_S: &str = "600";

/// The request's origin, when `allowed` lets it call.
pub fn allowed_origin(allowed: &[String], headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    allowed.iter().any(|a| a == "*" || a == text).then(|| origin.clone())
}

/// Whether a request is a browser's preflight (asking before a cross-origin call).
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The answer to an allowed origin's preflight.
pub fn preflight(origin: HeaderValue) -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin))
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST, PATCH, DELETE"))
        .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, "authorization, content-type"))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, MAX_AGE_S))
        .insert_header((header::VARY, "Origin"))
        .finish()
}

/// Marks an answer readable by the allowed `origin`.
pub fn allow(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_origin(o: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        h
    }

    #[test]
    fn only_listed_origins_are_allowed() {
        let listed = vec!["https://app.example.com".to_string()];
        assert!(allowed_origin(&listed, &with_origin("https://app.example.com")).is_some());
        assert!(allowed_origin(&listed, &with_origin("https://evil.example.com")).is_none());
        assert!(allowed_origin(&[], &with_origin("https://app.example.com")).is_none(), "off by default");
        assert!(allowed_origin(&listed, &HeaderMap::new()).is_none(), "same-origin requests carry none");
        assert!(allowed_origin(&["*".to_string()], &with_origin("http://localhost:3000")).is_some());
        let mut pre = with_origin("https://app.example.com");
        assert!(!is_preflight(&Method::OPTIONS, &pre));
        pre.insert(header::ACCESS_CONTROL_REQUEST_METHOD, HeaderValue::from_static("POST"));
        assert!(is_preflight(&Method::OPTIONS, &pre) && !is_preflight(&Method::POST, &pre));
    }
}
