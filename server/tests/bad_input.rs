//! Every kind of bad input gets a 4xx with a JSON error naming the problem, and the
//! server keeps answering correctly afterwards.

mod common;

use common::{client, png, tiny_model, ServerProc, DIM};
use serde_json::{json, Value};

fn expect_error(res: reqwest::blocking::Response, status: u16, code: &str) {
    assert_eq!(res.status().as_u16(), status, "expected {status} {code}");
    let body: Value = res.json().expect("a JSON error body");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(!body["error"]["message"].as_str().unwrap().is_empty());
}

#[test]
fn bad_inputs_get_json_4xx_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let env = [
        ("STML_SERVER_MAX_UPLOAD_BYTES", "200000"),
        ("STML_SERVER_MAX_IMAGE_PIXELS", "1000000"),
        ("STML_SERVER_MAX_K", "50"),
    ];
    let srv = ServerProc::start(&model, &dir.path().join("index"), &env);
    let http = client();
    let good = png(1, 40, 40);
    let res =
        http.post(srv.url("/images?id=good")).header("Content-Type", "image/png").body(good.clone()).send().unwrap();
    assert_eq!(res.status(), 201);

    let bomb = {
        let flat = image::DynamicImage::ImageLuma8(image::GrayImage::new(5000, 5000));
        let mut out = std::io::Cursor::new(Vec::new());
        flat.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    };
    let post_image = |path: &str, body: Vec<u8>| {
        http.post(srv.url(path)).header("Content-Type", "image/png").body(body).send().unwrap()
    };
    for path in ["/search", "/images"] {
        // Not an image, zero bytes, truncated, corrupt.
        expect_error(post_image(path, b"definitely not an image".to_vec()), 400, "not_an_image");
        expect_error(post_image(path, Vec::new()), 400, "not_an_image");
        expect_error(post_image(path, good[..good.len() / 2].to_vec()), 400, "not_an_image");
        let mut corrupt = good.clone();
        for b in corrupt.iter_mut().skip(60).take(200) {
            *b = 0x5A;
        }
        expect_error(post_image(path, corrupt), 400, "not_an_image");
        // Huge dimensions in a tiny file: refused from the header, before decoding.
        let bomb = bomb.clone();
        assert!(bomb.len() < 200_000, "the bomb is small: {}", bomb.len());
        expect_error(post_image(path, bomb), 413, "image_too_large");
        // Oversized upload.
        expect_error(post_image(path, vec![0u8; 300_000]), 413, "payload_too_large");
        // Wrong content type, and none at all.
        let res = http.post(srv.url(path)).header("Content-Type", "text/plain").body(good.clone()).send().unwrap();
        expect_error(res, 415, "unsupported_content_type");
        let res = http.post(srv.url(path)).body(good.clone()).send().unwrap();
        expect_error(res, 415, "unsupported_content_type");
        // application/octet-stream is a raw image whose format is read from the bytes.
        let octet = |body: Vec<u8>| {
            http.post(srv.url(path)).header("Content-Type", "application/octet-stream").body(body).send().unwrap()
        };
        if path == "/search" {
            let res = octet(good.clone());
            assert!(res.status().is_success(), "{path}: octet-stream image answered {}", res.status());
        }
        expect_error(octet(b"definitely not an image".to_vec()), 400, "not_an_image");
        // Malformed JSON, and JSON of the wrong shape.
        let res = http
            .post(srv.url(path))
            .header("Content-Type", "application/json")
            .body("{\"vector\": [1, 2")
            .send()
            .unwrap();
        expect_error(res, 400, "bad_request");
        let res = http.post(srv.url(path)).json(&json!({ "vectr": [1.0] })).send().unwrap();
        expect_error(res, 400, "bad_request");
        // A vector of the wrong length.
        let res = http.post(srv.url(path)).json(&json!({ "vector": [1.0, 2.0] })).send().unwrap();
        expect_error(res, 400, "dimension_mismatch");
        // A multipart form without an image.
        let form = reqwest::blocking::multipart::Form::new().text("id", "x");
        expect_error(http.post(srv.url(path)).multipart(form).send().unwrap(), 400, "bad_request");
    }
    // k out of range or not a number; ef out of range.
    let vector = json!({ "vector": vec![0.1f32; DIM] });
    for q in ["k=0", "k=51", "k=-1", "k=abc", "ef=0", "bogus=1"] {
        let res = http.post(srv.url(&format!("/search?{q}"))).json(&vector).send().unwrap();
        let code = if q.starts_with("k=0") || q == "k=51" { "invalid_k" } else { "bad_request" };
        expect_error(res, 400, code);
    }
    // Unknown ids, ids that try to escape, unknown routes.
    expect_error(http.get(srv.url("/images/nope")).send().unwrap(), 404, "not_found");
    expect_error(http.delete(srv.url("/images/nope")).send().unwrap(), 404, "not_found");
    expect_error(http.get(srv.url("/images/nope/thumbnail")).send().unwrap(), 404, "not_found");
    expect_error(http.get(srv.url("/images/..%2F..%2Fetc%2Fpasswd")).send().unwrap(), 400, "invalid_id");
    expect_error(http.get(srv.url("/images/.hidden")).send().unwrap(), 400, "invalid_id");
    let res = post_image("/images?id=..%2Fescape", good.clone());
    expect_error(res, 400, "invalid_id");
    let res = post_image("/images?id=ok&metadata=%7Bnot-json", good.clone());
    expect_error(res, 400, "bad_request");
    expect_error(http.get(srv.url("/no/such/route")).send().unwrap(), 404, "unknown_route");
    expect_error(http.put(srv.url("/search")).send().unwrap(), 404, "unknown_route");

    // Still answering correctly: the good image finds itself; nothing bad was stored.
    let res = post_image("/search?k=5", good.clone());
    assert_eq!(res.status(), 200);
    let v: Value = res.json().unwrap();
    assert_eq!(v["hits"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["hits"][0]["id"], "good");
    assert!(v["hits"][0]["distance"].as_f64().unwrap() < 1e-4);
    let stats: Value = http.get(srv.url("/stats")).send().unwrap().json().unwrap();
    assert_eq!(stats["index"]["images"], 1);
    let metrics = http.get(srv.url("/metrics")).send().unwrap().text().unwrap();
    assert!(metrics.contains("status=\"413\""), "{metrics}");
}
