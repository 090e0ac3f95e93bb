//! `server search`: a small command-line client of a running server, for scripts. It
//! uploads images (several go in one `/search/batch` request) or names a stored item, and
//! prints the hits as a table or as the server's JSON.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::blocking::{multipart, Client};
use serde_json::Value;

/// What to search near.
#[derive(Debug, Clone)]
pub enum Target {
    /// Image files on this machine.
    Images(Vec<PathBuf>),
    /// A stored item (more like it, itself left out).
    Item(String),
}

/// One search request.
#[derive(Debug, Clone)]
pub struct Request {
    /// Base URL of the server, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    pub target: Target,
    pub k: usize,
    pub filter: Option<String>,
    pub max_distance: Option<f32>,
    /// Re-rank by contextual similarity (`rerank=true`).
    pub rerank: bool,
    pub timeout: Duration,
}

/// Why a search failed, in words for the terminal.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot reach the server at {url}: {reason}. Is `server serve` running there? Pass its address with --url"
    )]
    Unreachable { url: String, reason: String },
    #[error("the server answered {status}: {message}")]
    Refused { status: u16, message: String },
    #[error("the server's answer is not the JSON expected: {0}")]
    Malformed(String),
}

fn mime(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("png") => "image/png",
        Some("jpg") | Some("jpeg") => "image/jpeg",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        Some("bmp") => "image/bmp",
        _ => "application/octet-stream",
    }
}

impl Request {
    fn endpoint(&self, path: &str) -> String {
        let mut url = format!("{}{path}?k={}", self.url.trim_end_matches('/'), self.k);
        if let Some(f) = &self.filter {
            url.push_str("&filter=");
            url.push_str(&urlencode(f));
        }
        if let Some(d) = self.max_distance {
            url.push_str(&format!("&max_distance={d}"));
        }
        if self.rerank {
            url.push_str("&rerank=true");
        }
        url
    }

    /// Sends the search; returns one result object (`hits`, ...) per query, in order.
    pub fn send(&self) -> Result<Vec<Value>, ClientError> {
        let http = Client::builder()
            .timeout(self.timeout)
            .build()
            .map_err(|e| ClientError::Unreachable { url: self.url.clone(), reason: e.to_string() })?;
        let (url, builder) = match &self.target {
            Target::Item(id) => {
                let url = self.endpoint(&format!("/images/{}/similar", urlencode(id)));
                (url.clone(), http.post(url))
            }
            Target::Images(paths) => {
                let mut form = multipart::Form::new();
                for (i, p) in paths.iter().enumerate() {
                    let bytes = std::fs::read(p).map_err(|source| ClientError::Read { path: p.clone(), source })?;
                    let name =
                        p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
                    let part =
                        multipart::Part::bytes(bytes).file_name(name).mime_str(mime(p)).expect("a valid mime type");
                    form = form.part(format!("image{i}"), part);
                }
                let url = self.endpoint(if paths.len() == 1 { "/search" } else { "/search/batch" });
                (url.clone(), http.post(url).multipart(form))
            }
        };
        let res = builder.send().map_err(|e| ClientError::Unreachable { url: url.clone(), reason: e.to_string() })?;
        let status = res.status().as_u16();
        let body: Value = res.json().map_err(|e| ClientError::Malformed(e.to_string()))?;
        if status != 200 {
            let message = body["error"]["message"].as_str().map(str::to_string).unwrap_or_else(|| body.to_string());
            return Err(ClientError::Refused { status, message });
        }
        match body.get("results") {
            Some(Value::Array(results)) => Ok(results.clone()),
            _ if body.get("hits").is_some() => Ok(vec![body]),
            _ => Err(ClientError::Malformed(format!("no `hits` in {body}"))),
        }
    }
}

/// Asks the server at `url` whether it is ready (`GET /readyz`): `Ok` once the model and
/// the index are loaded, for container health checks and scripts.
pub fn ready(url: &str, timeout: Duration) -> Result<(), ClientError> {
    let unreachable = |e: reqwest::Error| ClientError::Unreachable { url: url.to_string(), reason: e.to_string() };
    let http = Client::builder().timeout(timeout).build().map_err(unreachable)?;
    let res = http.get(format!("{}/readyz", url.trim_end_matches('/'))).send().map_err(unreachable)?;
    match res.status().as_u16() {
        200 => Ok(()),
        status => Err(ClientError::Refused { status, message: res.text().unwrap_or_default() }),
    }
}

/// The address a client on this machine reaches a server listening on `host:port` at
/// (a wildcard host is reached on loopback).
pub fn local_url(host: &str, port: u16) -> String {
    let host = match host {
        "0.0.0.0" | "" => "127.0.0.1",
        "::" | "[::]" => "[::1]",
        h if h.contains(':') && !h.starts_with('[') => return format!("http://[{h}]:{port}"),
        h => h,
    };
    format!("http://{host}:{port}")
}

/// Percent-encodes everything but unreserved characters.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The hits of one result as text lines: rank, distance, id, the item's path when known.
pub fn table(result: &Value) -> Vec<String> {
    let hits = result["hits"].as_array().map(Vec::as_slice).unwrap_or_default();
    if hits.is_empty() {
        return vec!["  (no hits)".into()];
    }
    hits.iter()
        .enumerate()
        .map(|(i, h)| {
            let path =
                h["metadata"]["source"]["path"].as_str().or_else(|| h["metadata"]["path"].as_str()).unwrap_or("");
            format!(
                "{:>4}  {:>9.5}  {:<32}  {path}",
                i + 1,
                h["distance"].as_f64().unwrap_or(f64::NAN),
                h["id"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_encoded_and_tables_show_paths() {
        assert_eq!(urlencode("label:shoe,year>2020"), "label%3Ashoe%2Cyear%3E2020");
        let r = serde_json::json!({ "hits": [
            { "id": "a", "distance": 0.5, "metadata": { "path": "x.png", "source": { "path": "/d/x.png" } } },
            { "id": "b", "distance": 1.0, "metadata": {} } ] });
        let t = table(&r);
        assert!(t[0].contains("0.50000") && t[0].ends_with("/d/x.png"), "{}", t[0]);
        assert!(t[1].contains(" b "), "{}", t[1]);
        assert_eq!(table(&serde_json::json!({ "hits": [] })), vec!["  (no hits)"]);
    }

    #[test]
    fn wildcard_hosts_are_reached_on_loopback() {
        assert_eq!(local_url("0.0.0.0", 8080), "http://127.0.0.1:8080");
        assert_eq!(local_url("127.0.0.1", 9), "http://127.0.0.1:9");
        assert_eq!(local_url("::", 80), "http://[::1]:80");
        assert_eq!(local_url("::1", 80), "http://[::1]:80");
    }
}
