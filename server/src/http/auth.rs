//! Bearer-token checks: the write key (`api_key`) for changes, the read key
//! (`read_api_key`, or the write key) for searches and reads where one is set; no-ops
//! without keys. Which routes need which is the route table's `Access` (`http/mod.rs`).

use actix_web::HttpRequest;

use super::Access;
use crate::settings::Settings;
use crate::{Error, Result};

/// Whether `req` may call a route of `access`. Reads need the read key or the write key
/// when a read key is set; changes need the write key, or, when only a read key is set,
/// that one (locking reads while leaving changes open would make no sense).
pub fn check(req: &HttpRequest, access: Access, settings: &Settings) -> Result<()> {
    let (write, read) = (settings.api_key.as_deref(), settings.read_api_key.as_deref());
    match access {
        Access::Open => Ok(()),
        Access::Read => match read {
            None => Ok(()),
            Some(r) => require_key(req, Some(r)).or_else(|_| require_key(req, Some(write.unwrap_or(r)))),
        },
        Access::Write => require_key(req, write.or(read)),
    }
}

/// Succeeds when no key is configured or the request carries `Authorization: Bearer <key>`.
pub fn require_key(req: &HttpRequest, api_key: Option<&str>) -> Result<()> {
    let Some(expected) = api_key else {
        return Ok(());
    };
    let given = bearer(req.headers()).unwrap_or("");
    if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(Error::Unauthorized)
    }
}

/// The key a request presents (`Authorization: Bearer <key>`), if any.
pub fn bearer(headers: &actix_web::http::header::HeaderMap) -> Option<&str> {
    headers
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Whether an answer may name files and folders on the server (model paths): only when
/// the request asks with `?paths=true` and, where an API key is configured, carries it.
/// Without the key, asking is refused (401) rather than silently ignored.
pub fn paths_asked(req: &HttpRequest, api_key: Option<&str>) -> Result<bool> {
    let asked = req.query_string().split('&').any(|pair| matches!(pair, "paths=true" | "paths=1"));
    if asked {
        require_key(req, api_key)?;
    }
    Ok(asked)
}

/// Compares without an early exit, so timing does not reveal how much of a key matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= (*x ^ b.get(i).copied().unwrap_or(0)) as usize;
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn checks_the_bearer_token() {
        let ok = TestRequest::default().insert_header(("Authorization", "Bearer k1")).to_http_request();
        let wrong = TestRequest::default().insert_header(("Authorization", "Bearer k2")).to_http_request();
        let prefix = TestRequest::default().insert_header(("Authorization", "Bearer k")).to_http_request();
        let none = TestRequest::default().to_http_request();
        assert!(require_key(&ok, Some("k1")).is_ok());
        assert!(require_key(&wrong, Some("k1")).is_err());
        assert!(require_key(&prefix, Some("k1")).is_err());
        assert!(require_key(&none, Some("k1")).is_err());
        assert!(require_key(&none, None).is_ok());
    }

    #[test]
    fn reads_and_writes_need_their_keys() {
        let req = |key: Option<&str>| {
            let r = TestRequest::default();
            match key {
                Some(k) => r.insert_header(("Authorization", format!("Bearer {k}"))).to_http_request(),
                None => r.to_http_request(),
            }
        };
        let keys = |write: Option<&str>, read: Option<&str>| Settings {
            api_key: write.map(str::to_string),
            read_api_key: read.map(str::to_string),
            ..Settings::default()
        };
        let both = keys(Some("w"), Some("r"));
        for (key, read_ok, write_ok) in [(None, false, false), (Some("r"), true, false), (Some("w"), true, true)] {
            assert_eq!(check(&req(key), Access::Read, &both).is_ok(), read_ok, "{key:?} reads");
            assert_eq!(check(&req(key), Access::Write, &both).is_ok(), write_ok, "{key:?} writes");
            assert!(check(&req(key), Access::Open, &both).is_ok());
        }
        let write_only = keys(Some("w"), None);
        assert!(check(&req(None), Access::Read, &write_only).is_ok(), "reads open without a read key");
        assert!(check(&req(None), Access::Write, &write_only).is_err());
        let read_only = keys(None, Some("r"));
        assert!(check(&req(None), Access::Write, &read_only).is_err(), "changes are never more open than reads");
        assert!(check(&req(Some("r")), Access::Write, &read_only).is_ok());
        assert!(check(&req(None), Access::Write, &Settings::default()).is_ok());
    }

    #[test]
    fn paths_only_when_asked_with_the_key() {
        let asked = |q: &str, key: Option<&str>| {
            let mut r = TestRequest::with_uri(&format!("/stats?{q}"));
            if let Some(k) = key {
                r = r.insert_header(("Authorization", format!("Bearer {k}")));
            }
            paths_asked(&r.to_http_request(), Some("k1"))
        };
        assert!(!asked("", None).unwrap());
        assert!(!asked("paths=false", None).unwrap());
        assert!(asked("paths=true", Some("k1")).unwrap());
        assert!(asked("x=1&paths=1", Some("k1")).unwrap());
        assert!(asked("paths=true", None).is_err());
        assert!(asked("paths=true", Some("k2")).is_err());
        let open = TestRequest::with_uri("/stats?paths=true").to_http_request();
        assert!(paths_asked(&open, None).unwrap(), "no key configured: asking is enough");
    }
}
