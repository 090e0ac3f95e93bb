//! Several collections in one server: created and dropped through the API (behind the key)
//! or declared in the config file, each with its own model and index, answering side by
//! side; the routes without a prefix keep working on the default collection; API-created
//! collections come back after a restart.

mod common;

use common::{client, png, tiny_model, tiny_model_with, ServerProc, DIM};
use serde_json::{json, Value};

const KEY: &str = "c-key";

fn add_images(http: &reqwest::blocking::Client, url: &str, seeds: &[u64]) {
    for s in seeds {
        let meta = format!("%7B%22path%22%3A%22img{s}.png%22%7D");
        let res = http
            .post(format!("{url}?id=img{s}&metadata={meta}"))
            .bearer_auth(KEY)
            .header("Content-Type", "image/png")
            .body(png(*s, 48, 36))
            .send()
            .unwrap();
        assert_eq!(res.status(), 201, "{}", res.text().unwrap());
    }
}

fn search(http: &reqwest::blocking::Client, url: &str, seed: u64) -> Value {
    let res =
        http.post(format!("{url}?k=3")).header("Content-Type", "image/png").body(png(seed, 48, 36)).send().unwrap();
    assert_eq!(res.status(), 200);
    res.json().unwrap()
}

#[test]
fn collections_side_by_side_created_declared_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let default_model = tiny_model(dir.path());
    let wide = tiny_model_with(dir.path(), "wide.onnx", 16, 11, "wide");
    let declared = tiny_model_with(dir.path(), "declared.onnx", 4, 12, "declared");
    let index = dir.path().join("index");
    // `fixed` is declared in the settings (here through the environment, which layers
    // over the config file's `[collections.fixed] model = ...` the same way).
    let start = || {
        ServerProc::start(
            &default_model,
            &index,
            &[("STML_SERVER_API_KEY", KEY), ("STML_SERVER_COLLECTIONS__FIXED__MODEL", declared.to_str().unwrap())],
        )
    };
    let srv = start();
    let http = client();

    // Creating needs the key, a good name and a real model.
    let create = |body: Value, key: Option<&str>| {
        let mut req = http.post(srv.url("/collections")).json(&body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        req.send().unwrap()
    };
    let body = json!({ "name": "wide", "model": wide });
    assert_eq!(create(body.clone(), None).status(), 401);
    let res = create(json!({ "name": "Bad Name", "model": wide }), Some(KEY));
    assert_eq!(res.status(), 400);
    let res = create(json!({ "name": "nomodel", "model": dir.path().join("missing.onnx") }), Some(KEY));
    assert_eq!(res.status(), 400);
    assert!(res.text().unwrap().contains("not a file on the server"));
    let res = create(body.clone(), Some(KEY));
    assert_eq!(res.status(), 201, "{}", res.text().unwrap());
    let info: Value = res.json().unwrap();
    assert_eq!((info["origin"].as_str(), info["index"]["dim"].as_u64()), (Some("api"), Some(16)));
    assert_eq!(create(body, Some(KEY)).status(), 409, "the name is taken");

    // Each collection embeds with its own model and holds its own images.
    add_images(&http, &srv.url("/images"), &[1, 2, 3]);
    add_images(&http, &srv.url("/collections/wide/images"), &[4, 5, 6, 7]);
    add_images(&http, &srv.url("/collections/fixed/images"), &[8]);
    let d = search(&http, &srv.url("/search"), 2);
    let w = search(&http, &srv.url("/collections/wide/search"), 5);
    let f = search(&http, &srv.url("/collections/fixed/search"), 8);
    assert_eq!(d["hits"][0]["id"], "img2");
    assert_eq!(w["hits"][0]["id"], "img5");
    assert_eq!(f["hits"][0]["id"], "img8");
    assert_eq!(d["hits"].as_array().unwrap().len(), 3);
    assert_eq!(f["hits"].as_array().unwrap().len(), 1);
    let same = search(&http, &srv.url("/collections/default/search"), 2);
    assert_eq!(same["hits"], d["hits"], "`default` under the prefix is the unprefixed collection");
    let v: Value = http.get(srv.url("/collections/wide/images/img5?vector=true")).send().unwrap().json().unwrap();
    assert_eq!(v["vector"].as_array().unwrap().len(), 16);
    let v: Value = http.get(srv.url("/images/img1?vector=true")).send().unwrap().json().unwrap();
    assert_eq!(v["vector"].as_array().unwrap().len(), DIM);
    assert_eq!(http.get(srv.url("/collections/wide/images/img1")).send().unwrap().status(), 404);
    let page = http.get(srv.url("/collections/wide/")).send().unwrap().text().unwrap();
    assert!(page.contains("Image similarity search"));
    let stats: Value = http.get(srv.url("/collections/wide/stats")).send().unwrap().json().unwrap();
    assert_eq!((stats["collection"].as_str(), stats["index"]["images"].as_u64()), (Some("wide"), Some(4)));

    // Listing, and routes of unknown collections.
    let all: Value = http.get(srv.url("/collections")).send().unwrap().json().unwrap();
    let names: Vec<&str> = all["collections"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["default", "fixed", "wide"]);
    let res =
        http.post(srv.url("/collections/nope/search")).json(&json!({ "vector": vec![0.0f32; 4] })).send().unwrap();
    assert_eq!(res.status(), 404);
    assert!(res.text().unwrap().contains("no collection `nope`"));

    // Default and declared collections cannot be dropped through the API.
    for name in ["default", "fixed"] {
        let res = http.delete(srv.url(&format!("/collections/{name}"))).bearer_auth(KEY).send().unwrap();
        assert_eq!(res.status(), 400, "{name}");
    }

    // While the server is stopped, `server index --collection` fills a collection by name;
    // a restart reopens the API-created collection with its images.
    srv.stop();
    let folder = dir.path().join("more");
    std::fs::create_dir_all(&folder).unwrap();
    for i in 0..3u64 {
        std::fs::write(folder.join(format!("m{i}.png")), png(50 + i, 48, 36)).unwrap();
    }
    let out = std::process::Command::new(common::binary())
        .args(["index", "--collection", "wide", "--images"])
        .arg(&folder)
        .env("STML_SERVER_INDEX_DIR", &index)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = std::process::Command::new(common::binary())
        .args(["index", "--collection", "nope", "--images"])
        .arg(&folder)
        .env("STML_SERVER_INDEX_DIR", &index)
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no collection `nope`"));
    let srv = start();
    let w2 = search(&http, &srv.url("/collections/wide/search"), 5);
    assert_eq!(w2["hits"][0], w["hits"][0], "the API-added images are still there");
    let stats: Value = http.get(srv.url("/collections/wide/stats")).send().unwrap().json().unwrap();
    assert_eq!(stats["index"]["images"], 4 + 3, "the index job added to the collection");

    // Dropping needs the key, removes the routes and the files.
    assert_eq!(http.delete(srv.url("/collections/wide")).send().unwrap().status(), 401);
    assert_eq!(http.delete(srv.url("/collections/wide")).bearer_auth(KEY).send().unwrap().status(), 200);
    assert_eq!(
        http.post(srv.url("/collections/wide/search"))
            .json(&json!({ "vector": vec![0.0f32; 16] }))
            .send()
            .unwrap()
            .status(),
        404
    );
    assert!(!index.join("collections/wide").exists());
    assert_eq!(http.delete(srv.url("/collections/wide")).bearer_auth(KEY).send().unwrap().status(), 404);
    // The name is free again.
    let res = http
        .post(srv.url("/collections"))
        .bearer_auth(KEY)
        .json(&json!({ "name": "wide", "model": wide }))
        .send()
        .unwrap();
    assert_eq!(res.status(), 201);
    let fresh: Value = res.json().unwrap();
    assert_eq!(fresh["index"]["images"], 0);
    drop(srv);
}
