//! The whole server over real HTTP on loopback: index a folder with `server index`, search,
//! add, read and delete images, restart (gracefully and with kill -9), search again.

mod common;

use common::{client, png, tiny_model, ServerProc, DIM};
use reqwest::blocking::multipart;
use serde_json::{json, Value};

fn search_image(http: &reqwest::blocking::Client, srv: &ServerProc, bytes: Vec<u8>, k: usize) -> Value {
    let res =
        http.post(srv.url(&format!("/search?k={k}"))).header("Content-Type", "image/png").body(bytes).send().unwrap();
    assert_eq!(res.status(), 200);
    res.json().unwrap()
}

fn top_id(v: &Value) -> String {
    v["hits"][0]["id"].as_str().unwrap().to_string()
}

#[test]
fn index_search_delete_restart_search() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let images = dir.path().join("photos");
    std::fs::create_dir_all(images.join("sub/deeper")).unwrap();
    let mut files = Vec::new();
    for i in 0..12u64 {
        let rel = match i % 3 {
            0 => format!("img{i}.png"),
            1 => format!("sub/img{i}.png"),
            _ => format!("sub/deeper/img{i}.png"),
        };
        std::fs::write(images.join(&rel), png(i, 40 + i as u32, 30)).unwrap();
        files.push(rel);
    }
    std::fs::write(images.join("notes.txt"), "not an image").unwrap();
    let index = dir.path().join("index");

    // Batch indexing job, then again: the second run skips every file.
    let run_index = || common::run_index(&model, &images, &index, &["--batch-size", "5"]);
    let first = run_index();
    assert!(first.contains("indexed=12") && first.contains("skipped=0"), "{first}");
    let second = run_index();
    assert!(second.contains("indexed=0") && second.contains("skipped=12"), "{second}");

    let http = client();
    let srv = ServerProc::start(&model, &index, &[]);
    assert_eq!(http.get(srv.url("/healthz")).send().unwrap().status(), 200);
    assert_eq!(http.get(srv.url("/readyz")).send().unwrap().status(), 200);
    let stats: Value = http.get(srv.url("/stats")).send().unwrap().json().unwrap();
    assert_eq!(stats["index"]["images"], 12);
    assert_eq!(stats["model"]["embedding_dim"], DIM);

    // Each indexed file finds itself first, at distance ~0, with its relative path.
    for (i, rel) in files.iter().enumerate() {
        let v = search_image(&http, &srv, png(i as u64, 40 + i as u32, 30), 3);
        assert_eq!(v["hits"].as_array().unwrap().len(), 3);
        assert_eq!(v["hits"][0]["metadata"]["path"], rel.as_str(), "{v}");
        assert!(v["hits"][0]["distance"].as_f64().unwrap() < 1e-3, "{v}");
        assert!(v["timings"]["total_ms"].as_f64().unwrap() > 0.0);
    }

    // Multipart search answers like a raw body; a vector search like both.
    let form = multipart::Form::new()
        .part("image", multipart::Part::bytes(png(4, 44, 30)).file_name("q.png").mime_str("image/png").unwrap());
    let v: Value = http.post(srv.url("/search?k=1")).multipart(form).send().unwrap().json().unwrap();
    assert_eq!(v["hits"][0]["metadata"]["path"], files[4].as_str());
    let id4 = top_id(&v);
    let stored: Value = http.get(srv.url(&format!("/images/{id4}?vector=true"))).send().unwrap().json().unwrap();
    let by_vector: Value = http
        .post(srv.url("/search?k=1&ef=32"))
        .json(&json!({ "vector": stored["vector"] }))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(top_id(&by_vector), id4);

    // Add one image with an id and metadata, two by multipart, and a vector by JSON.
    let res = http
        .post(srv.url("/images?id=extra-1&metadata=%7B%22label%22%3A%22cat%22%7D"))
        .header("Content-Type", "image/png")
        .body(png(100, 50, 50))
        .send()
        .unwrap();
    assert_eq!(res.status(), 201);
    let form = multipart::Form::new()
        .part("image", multipart::Part::bytes(png(101, 30, 30)).file_name("a.png").mime_str("image/png").unwrap())
        .part("image", multipart::Part::bytes(png(102, 30, 30)).file_name("b.png").mime_str("image/png").unwrap())
        .text("id", "multi-a")
        .text("id", "multi-b")
        .text("metadata", r#"{"n": 1}"#);
    let added: Value = http.post(srv.url("/images")).multipart(form).send().unwrap().json().unwrap();
    assert_eq!(added["ids"], json!(["multi-a", "multi-b"]));
    let res =
        http.post(srv.url("/images")).json(&json!({ "id": "vec-1", "vector": vec![0.5f32; DIM] })).send().unwrap();
    assert_eq!(res.status(), 201);
    let got: Value = http.get(srv.url("/images/extra-1")).send().unwrap().json().unwrap();
    assert_eq!(got["metadata"]["label"], "cat");
    let thumb = http.get(srv.url("/images/extra-1/thumbnail")).send().unwrap();
    assert_eq!(thumb.headers()["content-type"], "image/png", "a small PNG is its own thumbnail");
    assert_eq!(thumb.headers()["x-content-type-options"], "nosniff");
    assert_eq!(thumb.bytes().unwrap(), png(100, 50, 50));
    assert_eq!(top_id(&search_image(&http, &srv, png(102, 30, 30), 1)), "multi-b");

    // Delete: gone from reads and from searches.
    assert_eq!(http.delete(srv.url("/images/extra-1")).send().unwrap().status(), 200);
    assert_eq!(http.get(srv.url("/images/extra-1")).send().unwrap().status(), 404);
    assert_eq!(http.delete(srv.url("/images/extra-1")).send().unwrap().status(), 404);
    let v = search_image(&http, &srv, png(100, 50, 50), 20);
    assert!(v["hits"].as_array().unwrap().iter().all(|h| h["id"] != "extra-1"), "{v}");
    assert_eq!(v["hits"].as_array().unwrap().len(), 15);

    let metrics = http.get(srv.url("/metrics")).send().unwrap().text().unwrap();
    assert!(
        metrics.contains("stml_http_requests_total{route=\"/search\",method=\"POST\",status=\"200\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("stml_inference_batch_size_count"));
    assert!(metrics.contains("stml_index_images 15"), "{metrics}");
    let page = http.get(srv.url("/")).send().unwrap();
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let page = page.text().unwrap();
    assert!(page.contains("'/search'") && page.contains("/thumbnail") && page.contains("/similar"));
    let api: Value = http.get(srv.url("/openapi.json")).send().unwrap().json().unwrap();
    assert!(api["paths"]["/search"]["post"].is_object());
    // Every documented route is really served: none answers with the unknown-route error.
    for (path, ops) in api["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let url = srv.url(&path.replace("{id}", "no-such-id"));
            let res = http.request(method.to_uppercase().parse().unwrap(), url).send().unwrap();
            let status = res.status().as_u16();
            let body = res.text().unwrap();
            assert!(status != 405 && !body.contains("unknown_route"), "{method} {path}: {status} {body}");
        }
    }
    let docs = http.get(srv.url("/docs")).send().unwrap().text().unwrap();
    assert!(docs.contains("/openapi.json") && !docs.contains("https://"), "docs are served from the binary");

    // Graceful restart: the saved graph is reloaded, answers are unchanged.
    let before = search_image(&http, &srv, png(7, 47, 30), 5);
    let log = srv.stop();
    assert!(log.iter().any(|l| l.contains("saved the HNSW graph")), "{log:?}");
    let srv = ServerProc::start(&model, &index, &[]);
    let after = search_image(&http, &srv, png(7, 47, 30), 5);
    assert_eq!(before["hits"], after["hits"]);
    assert_eq!(http.get(srv.url("/images/extra-1")).send().unwrap().status(), 404);

    // kill -9 after more changes: restart still has them.
    assert_eq!(http.delete(srv.url("/images/multi-a")).send().unwrap().status(), 200);
    let res =
        http.post(srv.url("/images")).json(&json!({ "id": "vec-2", "vector": vec![-0.5f32; DIM] })).send().unwrap();
    assert_eq!(res.status(), 201);
    srv.kill9();
    let srv = ServerProc::start(&model, &index, &[]);
    assert_eq!(http.get(srv.url("/images/multi-a")).send().unwrap().status(), 404);
    let v: Value = http
        .post(srv.url("/search?k=1"))
        .json(&json!({ "vector": vec![-0.5f32; DIM] }))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(top_id(&v), "vec-2");
    let v = search_image(&http, &srv, png(101, 30, 30), 20);
    assert!(v["hits"].as_array().unwrap().iter().all(|h| h["id"] != "multi-a"));
    assert_eq!(v["hits"].as_array().unwrap().len(), 15);
}

#[test]
fn api_key_guards_mutations_and_paths() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let srv = ServerProc::start(&model, &dir.path().join("index"), &[("STML_SERVER_API_KEY", "s3cret")]);
    let http = client();
    let body = json!({ "id": "a", "vector": vec![0.1f32; DIM] });
    let res = http.post(srv.url("/images")).json(&body).send().unwrap();
    assert_eq!(res.status(), 401);
    let err: Value = res.json().unwrap();
    assert_eq!(err["error"]["code"], "unauthorized");
    let res = http.post(srv.url("/images")).bearer_auth("wrong").json(&body).send().unwrap();
    assert_eq!(res.status(), 401);
    let res = http.post(srv.url("/images")).bearer_auth("s3cret").json(&body).send().unwrap();
    assert_eq!(res.status(), 201);
    // Reads need no key.
    assert_eq!(http.get(srv.url("/images/a")).send().unwrap().status(), 200);
    let res = http.post(srv.url("/search")).json(&json!({ "vector": vec![0.1f32; DIM] })).send().unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(http.delete(srv.url("/images/a")).send().unwrap().status(), 401);
    assert_eq!(http.delete(srv.url("/images/a")).bearer_auth("s3cret").send().unwrap().status(), 200);
    // Statistics and collection listings name no file on the server unless asked, with the key.
    let stats: Value = http.get(srv.url("/stats")).send().unwrap().json().unwrap();
    assert!(stats["model"]["path"].is_null() && stats["model"]["arch"].is_string(), "{stats}");
    let listed: Value = http.get(srv.url("/collections")).send().unwrap().json().unwrap();
    assert!(listed["collections"][0].get("model").is_none() && !listed.to_string().contains(".onnx"), "{listed}");
    let model_text = model.to_string_lossy().into_owned();
    assert!(!http.get(srv.url("/collections/default")).send().unwrap().text().unwrap().contains(&model_text));
    assert_eq!(http.get(srv.url("/stats?paths=true")).send().unwrap().status(), 401);
    let stats: Value = http.get(srv.url("/stats?paths=true")).bearer_auth("s3cret").send().unwrap().json().unwrap();
    assert_eq!(stats["model"]["path"], model_text.as_str());
    let listed: Value =
        http.get(srv.url("/collections?paths=true")).bearer_auth("s3cret").send().unwrap().json().unwrap();
    assert_eq!(listed["collections"][0]["model"], model_text.as_str());
}

/// Under concurrent load batches run on several inference streams at once (and a lone
/// image on the wide session): every answer must still reach its own request. Sixteen
/// clients each search their own images over and over; each must find its own file first.
#[test]
fn concurrent_searches_on_several_streams_each_get_their_own_answer() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let images = dir.path().join("photos");
    std::fs::create_dir_all(&images).unwrap();
    let n = 32u64;
    for i in 0..n {
        std::fs::write(images.join(format!("img{i:02}.png")), png(i, 48, 36)).unwrap();
    }
    let index = dir.path().join("index");
    let log = common::run_index(&model, &images, &index, &["--batch-size", "4"]);
    assert!(log.contains("indexed=32"), "{log}");
    let srv = ServerProc::start(&model, &index, &[("STML_SERVER_INFERENCE_STREAMS", "3")]);
    std::thread::scope(|s| {
        for client_no in 0..16u64 {
            let url = srv.url("/search?k=1");
            s.spawn(move || {
                let http = client();
                for round in 0..12u64 {
                    let i = (client_no * 2 + round % 2) % n;
                    let res = http.post(&url).header("Content-Type", "image/png").body(png(i, 48, 36)).send().unwrap();
                    assert_eq!(res.status(), 200);
                    let v: Value = res.json().unwrap();
                    assert_eq!(v["hits"][0]["metadata"]["path"], format!("img{i:02}.png"), "client {client_no}: {v}");
                    assert!(v["hits"][0]["distance"].as_f64().unwrap() < 1e-3, "{v}");
                }
            });
        }
    });
}

/// CORS is off by default; with `cors_origins`, only the listed origin may read answers
/// from a browser, and its preflight is answered before any route.
#[test]
fn cross_origin_calls_only_from_listed_origins() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let http = client();
    let allow = |res: &reqwest::blocking::Response| {
        res.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap().to_string())
    };
    {
        let srv = ServerProc::start(&model, &dir.path().join("a"), &[]);
        let res = http.get(srv.url("/stats")).header("Origin", "https://app.example.com").send().unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(allow(&res), None, "off by default");
    }
    let srv = ServerProc::start(
        &model,
        &dir.path().join("b"),
        &[("STML_SERVER_CORS_ORIGINS", r#"["https://app.example.com"]"#)],
    );
    let res = http.get(srv.url("/stats")).header("Origin", "https://app.example.com").send().unwrap();
    assert_eq!(allow(&res).as_deref(), Some("https://app.example.com"));
    let res = http.get(srv.url("/stats")).header("Origin", "https://evil.example.com").send().unwrap();
    assert_eq!(allow(&res), None);
    let preflight = |origin: &str| {
        http.request(reqwest::Method::OPTIONS, srv.url("/search"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "content-type, authorization")
            .send()
            .unwrap()
    };
    let res = preflight("https://app.example.com");
    assert_eq!(res.status(), 204);
    assert_eq!(allow(&res).as_deref(), Some("https://app.example.com"));
    let methods = res.headers()["access-control-allow-methods"].to_str().unwrap().to_string();
    assert!(methods.contains("POST") && methods.contains("DELETE"), "{methods}");
    assert!(res.headers()["access-control-allow-headers"].to_str().unwrap().contains("authorization"));
    assert_eq!(allow(&preflight("https://evil.example.com")), None);
    // A bad origin is refused at start, naming the setting.
    let out = std::process::Command::new(common::binary())
        .args(["serve", "--port", "0", "--model"])
        .arg(&model)
        .arg("--index")
        .arg(dir.path().join("c"))
        .env("STML_SERVER_CORS_ORIGINS", r#"["app.example.com/path"]"#)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cors_origins"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// With a read key too, every search and read needs it (or the write key), changes need
/// the write key, and the page, API description and health checks stay open.
#[test]
fn read_key_guards_reads_and_write_key_changes() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let env = [("STML_SERVER_API_KEY", "writer"), ("STML_SERVER_READ_API_KEY", "reader")];
    let srv = ServerProc::start(&model, &dir.path().join("index"), &env);
    let http = client();
    let add = |key: Option<&str>| {
        let req = http.post(srv.url("/images")).json(&json!({ "id": "a", "vector": vec![0.1f32; DIM] }));
        match key {
            Some(k) => req.bearer_auth(k),
            None => req,
        }
        .send()
        .unwrap()
        .status()
    };
    assert_eq!(add(None), 401);
    assert_eq!(add(Some("reader")), 401, "the read key changes nothing");
    assert_eq!(add(Some("writer")), 201);
    let search = json!({ "vector": vec![0.1f32; DIM] });
    let reads: Vec<reqwest::blocking::RequestBuilder> = vec![
        http.post(srv.url("/search")).json(&search),
        http.post(srv.url("/collections/default/search")).json(&search),
        http.get(srv.url("/images/a")),
        http.get(srv.url("/images/a/thumbnail")),
        http.get(srv.url("/images")),
        http.post(srv.url("/images/count")),
        http.get(srv.url("/stats")),
        http.get(srv.url("/metrics")),
        http.get(srv.url("/collections")),
    ];
    for read in reads {
        let (without, with_read, with_write) =
            (read.try_clone().unwrap(), read.try_clone().unwrap().bearer_auth("reader"), read.bearer_auth("writer"));
        let res = without.send().unwrap();
        assert_eq!(res.status(), 401, "{}", res.url());
        let code = with_read.send().unwrap().status().as_u16();
        assert!(code == 200 || code == 404, "the read key reads ({code})");
        assert_eq!(with_write.send().unwrap().status().as_u16(), code, "the write key reads too");
    }
    let err: Value = http.get(srv.url("/stats")).send().unwrap().json().unwrap();
    assert_eq!(err["error"]["code"], "unauthorized");
    for open in ["/", "/healthz", "/readyz", "/openapi.json", "/docs"] {
        assert_eq!(http.get(srv.url(open)).send().unwrap().status(), 200, "{open}");
    }
    assert_eq!(http.get(srv.url("/no-such-route")).send().unwrap().status(), 404);
    assert_eq!(http.delete(srv.url("/images/a")).bearer_auth("reader").send().unwrap().status(), 401);
    assert_eq!(http.delete(srv.url("/images/a")).bearer_auth("writer").send().unwrap().status(), 200);
}

/// Past its rate a client gets 429 with Retry-After; other clients (another key, or no
/// key from this address) and health checks are not slowed.
#[test]
fn rate_limits_are_per_client() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let env = [("STML_SERVER_RATE_LIMIT__PER_SECOND", "0.5"), ("STML_SERVER_RATE_LIMIT__BURST", "3")];
    let srv = ServerProc::start(&model, &dir.path().join("index"), &env);
    let http = client();
    let search = |key: Option<&str>| {
        let req = http.post(srv.url("/search")).json(&json!({ "vector": vec![0.1f32; DIM] }));
        match key {
            Some(k) => req.bearer_auth(k),
            None => req,
        }
        .send()
        .unwrap()
    };
    for _ in 0..3 {
        assert_eq!(search(Some("alice")).status(), 200);
    }
    let res = search(Some("alice"));
    assert_eq!(res.status(), 429);
    let wait: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    let err: Value = res.json().unwrap();
    assert_eq!(err["error"]["code"], "rate_limited");
    assert_eq!(search(Some("bob")).status(), 200, "another key has its own bucket");
    assert_eq!(search(None).status(), 200, "so has this address without a key");
    for _ in 0..10 {
        assert_eq!(http.get(srv.url("/healthz")).send().unwrap().status(), 200, "health checks are not counted");
    }
    std::thread::sleep(std::time::Duration::from_secs(wait));
    assert_eq!(search(Some("alice")).status(), 200, "the bucket refills");
}

/// With `tls_cert` and `tls_key` the server speaks HTTPS only (a certificate made here
/// with the `openssl` command, signed by a throw-away CA); a client trusting that CA searches, plain
/// HTTP on the same port gets no answer, and a bad key file stops the start naming it.
#[test]
fn serves_https_with_a_given_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let (cert, key, ca) = (dir.path().join("cert.pem"), dir.path().join("key.pem"), dir.path().join("ca.pem"));
    // A throw-away CA, and the server's certificate for 127.0.0.1 signed by it.
    std::fs::write(
        dir.path().join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let steps: [Vec<&str>; 3] = [
        [&["req", "-x509", "-days", "1", "-subj", "/CN=stml test CA", "-keyout", "ca.key", "-out", "ca.pem"][..], &ec]
            .concat(),
        [&["req", "-subj", "/CN=localhost", "-keyout", "key.pem", "-out", "cert.csr"][..], &ec].concat(),
        vec!["x509", "-req", "-in", "cert.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1"]
            .into_iter()
            .chain(["-extfile", "ext.cnf", "-out", "cert.pem"])
            .collect(),
    ];
    for args in steps {
        let made = std::process::Command::new("openssl")
            .args(&args)
            .current_dir(dir.path())
            .output()
            .expect("run openssl (Debian's openssl package)");
        assert!(made.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&made.stderr));
    }
    let env = [("STML_SERVER_TLS_CERT", cert.to_str().unwrap()), ("STML_SERVER_TLS_KEY", key.to_str().unwrap())];
    let srv = ServerProc::start(&model, &dir.path().join("index"), &env);
    assert!(srv.base.starts_with("https://127.0.0.1:"), "{}", srv.base);
    let trusted = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap();
    let res = trusted.post(srv.url("/search")).json(&json!({ "vector": vec![0.1f32; DIM] })).send().unwrap();
    assert_eq!(res.status(), 200);
    let untrusting = client();
    assert!(untrusting.get(srv.url("/healthz")).send().is_err(), "an unknown certificate is not trusted");
    let plain = srv.url("/healthz").replacen("https://", "http://", 1);
    assert!(client().get(plain).send().map(|r| !r.status().is_success()).unwrap_or(true), "no plain HTTP");
    // A key file that is not one stops the start, naming the setting.
    std::fs::write(dir.path().join("bad.pem"), "not a key").unwrap();
    let out = std::process::Command::new(common::binary())
        .args(["serve", "--port", "0", "--model"])
        .arg(&model)
        .arg("--index")
        .arg(dir.path().join("other"))
        .env("STML_SERVER_TLS_CERT", &cert)
        .env("STML_SERVER_TLS_KEY", dir.path().join("bad.pem"))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && log.contains("tls_key"), "{log}");
}

/// Slow clients (slowloris: a head sent a byte at a time; a body that never finishes)
/// are cut off at the limits, and meanwhile every other client is answered at once.
#[test]
fn slow_clients_do_not_starve_others() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let env = [("STML_SERVER_HTTP__HEADER_TIMEOUT_MS", "1000"), ("STML_SERVER_HTTP__BODY_TIMEOUT_S", "2")];
    let srv = ServerProc::start(&model, &dir.path().join("index"), &env);
    let addr = srv.base.trim_start_matches("http://").to_string();
    let connect = || {
        let s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    };
    let mut heads: Vec<std::net::TcpStream> = (0..100).map(|_| connect()).collect();
    let mut bodies: Vec<std::net::TcpStream> = (0..50).map(|_| connect()).collect();
    for s in &mut heads {
        s.write_all(b"POST /search HTTP/1.1\r\nHost: x\r\n").unwrap();
    }
    for s in &mut bodies {
        s.write_all(
            b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{",
        )
        .unwrap();
    }
    // Others are answered while the slow ones trickle.
    let http = client();
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    while started.elapsed() < Duration::from_millis(2500) {
        for s in heads.iter_mut().chain(bodies.iter_mut()) {
            let _ = s.write_all(b"a");
        }
        let t = Instant::now();
        let res = http.post(srv.url("/search")).json(&json!({ "vector": vec![0.1f32; DIM] })).send().unwrap();
        assert_eq!(res.status(), 200);
        slowest = slowest.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(slowest < Duration::from_millis(500), "a normal search took {slowest:?} among slow clients");
    // By now (2.5 s) the server has given up on every slow client: a 408 or a closed
    // connection, never a hang.
    for (kind, list) in [("head", &mut heads), ("body", &mut bodies)] {
        for s in list.iter_mut() {
            let mut buf = [0u8; 512];
            let t = Instant::now();
            let got = s.read(&mut buf);
            assert!(t.elapsed() < Duration::from_secs(3), "a slow {kind} was not cut off");
            if let Ok(n) = got {
                let text = String::from_utf8_lossy(&buf[..n]);
                assert!(n == 0 || text.starts_with("HTTP/1.1 4"), "slow {kind}: {text}");
            }
        }
    }
}

/// `[http] max_in_flight` (issue 14, item 3): past the cap an API request is refused at
/// once with 503 and `Retry-After`, not queued; a client still sending its body takes no
/// place, so slow uploads cannot crowd others out; health checks always answer.
#[test]
fn requests_past_the_in_flight_cap_get_503_at_once() {
    use std::io::Write;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let env = [("STML_SERVER_HTTP__MAX_IN_FLIGHT", "1"), ("STML_SERVER_HTTP__BODY_TIMEOUT_S", "30")];
    let srv = ServerProc::start(&model, &dir.path().join("index"), &env);
    let addr = srv.base.trim_start_matches("http://").to_string();
    let http = client();
    // More trickling uploads than places: they hold none while their bodies come.
    let slow: Vec<std::net::TcpStream> = (0..4)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.write_all(
                b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
            )
            .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        assert_eq!(http.get(srv.url("/images")).send().unwrap().status(), 200, "slow uploads took the place");
    }
    // Image searches at once (each waits for the inference batcher, holding the one
    // place): the ones that find it taken are refused at once.
    let answers: Vec<(u16, String, Value, Duration)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..16)
            .map(|t| {
                let (http, url) = (client(), srv.url("/search?k=3"));
                scope.spawn(move || {
                    (0..8)
                        .map(|i| {
                            let started = Instant::now();
                            let res = http
                                .post(&url)
                                .header("content-type", "image/png")
                                .body(png(t * 8 + i, 48, 40))
                                .send()
                                .unwrap();
                            let status = res.status().as_u16();
                            let retry = res.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
                            let body: Value = res.json().unwrap();
                            (status, retry.unwrap_or_default(), body, started.elapsed())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    let refused: Vec<_> = answers.iter().filter(|a| a.0 == 503).collect();
    assert!(answers.iter().all(|a| a.0 == 200 || a.0 == 503), "{:?}", answers.iter().map(|a| a.0).collect::<Vec<_>>());
    assert!(!refused.is_empty(), "128 concurrent searches with one place: none was refused");
    assert!(answers.iter().any(|a| a.0 == 200), "every search was refused");
    for (_, retry, body, took) in refused {
        assert_eq!(retry, "1");
        assert_eq!(body["error"]["code"], "overloaded", "{body}");
        assert!(*took < Duration::from_secs(5), "a refusal took {took:?}");
    }
    assert_eq!(http.get(srv.url("/healthz")).send().unwrap().status(), 200);
    // Every place is given back.
    assert_eq!(http.get(srv.url("/images")).send().unwrap().status(), 200);
    drop(slow);
}
