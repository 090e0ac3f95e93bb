//! Multipart forms, as the server reads them (actix-multipart, then the insert route's
//! pairing of files with `id` and `metadata` fields). An input is the Content-Type header
//! line (the boundary is the client's to choose), a newline, then the body.

use actix_web::http::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use actix_web::web::Bytes;

/// One form field: name, file name, content type, data.
type Field<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a [u8]);

fn form(boundary: &str, fields: &[Field<'_>]) -> Vec<u8> {
    let mut out = format!("multipart/form-data; boundary={boundary}\n").into_bytes();
    for (name, filename, content_type, data) in fields {
        out.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes());
        if let Some(f) = filename {
            out.extend_from_slice(format!("; filename=\"{f}\"").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        if let Some(c) = content_type {
            out.extend_from_slice(format!("Content-Type: {c}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

/// The `multipart` target.
pub const TARGET: crate::Target = crate::Target {
    name: "multipart",
    about: "multipart/form-data bodies (boundaries, headers, fields) and the insert route's pairing",
    seeds,
    dictionary,
    run,
};

fn seeds() -> Vec<Vec<u8>> {
    let png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00";
    vec![
        form(
            "XyZ",
            &[
                ("file", Some("a.png"), Some("image/png"), png),
                ("id", None, None, b"cat-01"),
                ("metadata", None, None, br#"{"label": "cat"}"#),
            ],
        ),
        form(
            "----WebKitFormBoundary7MA4YWxkTrZu0gW",
            &[
                ("a", Some("1.jpg"), Some("image/jpeg"), b"\xff\xd8\xff\xe0"),
                ("b", Some("2.jpg"), None, b"\xff\xd8"),
                ("id", None, Some("text/plain; charset=utf-8"), b"x"),
            ],
        ),
        form("b", &[("image", None, Some("image/webp"), b"RIFF\x00\x00\x00\x00WEBP")]),
    ]
}

fn dictionary() -> Vec<&'static [u8]> {
    vec![
        b"\r\n",
        b"--",
        b"\r\n\r\n",
        b"Content-Disposition: ",
        b"form-data",
        b"; name=",
        b"; filename=",
        b"; filename*=UTF-8''",
        b"Content-Type: ",
        b"image/png",
        b"multipart/mixed",
        b"boundary=",
        b"\"",
        b"metadata",
        b"id",
    ]
}

fn run(input: &[u8]) -> bool {
    let (header, body) = match input.iter().position(|&b| b == b'\n') {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (input, &input[..0]),
    };
    let Ok(value) = HeaderValue::from_bytes(header) else { return false };
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, value);
    let body = Bytes::copy_from_slice(body);
    let Ok(parts) = server::http::body::multipart(&headers, body) else { return false };
    let files = parts.iter().filter(|p| p.is_file()).count();
    let Ok(pending) = server::http::images::from_multipart(parts) else { return false };
    assert_eq!(pending.len(), files, "every file field is one image");
    true
}
