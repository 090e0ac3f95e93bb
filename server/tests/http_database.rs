//! The search database over real HTTP: filters (query string and JSON), more like an
//! item, batch search, paging, the distance cut, listing, scrolling, counting and PATCH,
//! and the errors of each.

mod common;

use common::{client, png, tiny_model, ServerProc, DIM};
use reqwest::blocking::multipart;
use serde_json::{json, Value};

const KEY: &str = "s3cret";

fn vector(i: usize) -> Vec<f32> {
    (0..DIM).map(|d| ((i * 7 + d * 3) % 11) as f32 - 5.0 + i as f32 * 0.01).collect()
}

fn ids(v: &Value) -> Vec<String> {
    v["hits"].as_array().unwrap().iter().map(|h| h["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn filters_similar_batch_pages_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let srv = ServerProc::start(&model, &dir.path().join("index"), &[("STML_SERVER_API_KEY", KEY)]);
    let http = client();
    let post = |path: &str, body: Value| http.post(srv.url(path)).json(&body).send().unwrap();
    let labels = ["shoe", "boot", "hat"];
    let images: Vec<Value> = (0..60)
        .map(|i| {
            json!({ "id": format!("it-{i:02}"), "vector": vector(i),
                    "metadata": { "label": labels[i % 3], "year": 2000 + i, "tags": if i % 2 == 0 { json!(["even"]) } else { json!([]) } } })
        })
        .collect();
    let res = http.post(srv.url("/images")).bearer_auth(KEY).json(&json!({ "images": images })).send().unwrap();
    assert_eq!(res.status(), 201);

    // A filter in the query string: every hit passes it, k of them.
    let q = json!({ "vector": vector(5) });
    let r: Value = post("/search?k=5&filter=label:shoe,year%3E2010", q.clone()).json().unwrap();
    assert_eq!(r["hits"].as_array().unwrap().len(), 5);
    for h in r["hits"].as_array().unwrap() {
        assert_eq!(h["metadata"]["label"], "shoe");
        assert!(h["metadata"]["year"].as_i64().unwrap() > 2010);
    }
    // The same filter as JSON in the body gives the same hits.
    let body = json!({ "vector": vector(5), "k": 5, "filter": { "must": [
        { "key": "label", "match": "shoe" }, { "key": "year", "range": { "gt": 2010 } } ] } });
    let j: Value = post("/search", body).json().unwrap();
    assert_eq!(ids(&j), ids(&r));
    // Set membership and negation.
    let r: Value = post("/search?k=60&filter=label:boot|hat,!tags:even", q.clone()).json().unwrap();
    assert_eq!(r["hits"].as_array().unwrap().len(), 60 / 3 * 2 / 2);
    // A selective filter still gives every match (20 shoes, k = 30).
    let r: Value = post("/search?k=30&filter=label:shoe", q.clone()).json().unwrap();
    assert_eq!(r["hits"].as_array().unwrap().len(), 20);
    assert_eq!(r["next_offset"], Value::Null, "a page that is not full is the last");

    // Paging: two pages of 10 are the first 20; next_offset says where the next starts.
    let whole: Value = post("/search?k=20", q.clone()).json().unwrap();
    let p1: Value = post("/search?k=10", q.clone()).json().unwrap();
    assert_eq!(p1["next_offset"], 10);
    let p2: Value = post("/search?k=10&offset=10", q.clone()).json().unwrap();
    assert_eq!([ids(&p1), ids(&p2)].concat(), ids(&whole));
    // The distance cut.
    let cut = whole["hits"][3]["distance"].as_f64().unwrap();
    let near: Value = post(&format!("/search?k=20&max_distance={cut}"), q.clone()).json().unwrap();
    assert_eq!(ids(&near), ids(&whole)[..4].to_vec());

    // More like an item: the item itself left out; the same through /search with `id`.
    let like: Value = post("/images/it-05/similar?k=5", json!({})).json().unwrap();
    assert!(!ids(&like).contains(&"it-05".to_string()));
    assert_eq!(ids(&like), ids(&whole).into_iter().filter(|i| i != "it-05").take(5).collect::<Vec<_>>());
    let bare = http.post(srv.url("/images/it-05/similar?k=5")).send().unwrap();
    assert_eq!(bare.status(), 200, "no body at all is fine");
    let by_id: Value = post("/search", json!({ "id": "it-05", "k": 5 })).json().unwrap();
    assert_eq!(ids(&by_id), ids(&like));
    let filtered: Value = post("/images/it-05/similar?k=3&filter=label:hat", json!({})).json().unwrap();
    assert!(filtered["hits"].as_array().unwrap().iter().all(|h| h["metadata"]["label"] == "hat"));
    assert_eq!(post("/images/nope/similar", json!({})).status(), 404);

    // Batch: per-query options over the query string's.
    let b: Value = post(
        "/search/batch?k=3",
        json!({ "searches": [ { "vector": vector(5) }, { "id": "it-05", "k": 2 }, { "vector": vector(9), "filter": "label:boot" } ] }),
    )
    .json()
    .unwrap();
    let results = b["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(ids(&results[0]), ids(&whole)[..3].to_vec());
    assert_eq!(ids(&results[1]), ids(&like)[..2].to_vec());
    assert!(results[2]["hits"].as_array().unwrap().iter().all(|h| h["metadata"]["label"] == "boot"));
    // A batch of uploaded images, searched with the query string's options.
    let form = multipart::Form::new()
        .part("a", multipart::Part::bytes(png(1, 40, 30)).file_name("a.png").mime_str("image/png").unwrap())
        .part("b", multipart::Part::bytes(png(2, 30, 40)).file_name("b.png").mime_str("image/png").unwrap());
    let res = http.post(srv.url("/search/batch?k=4&filter=label:hat")).multipart(form).send().unwrap();
    assert_eq!(res.status(), 200);
    let b: Value = res.json().unwrap();
    assert_eq!(b["results"].as_array().unwrap().len(), 2);
    assert_eq!(b["results"][1]["hits"].as_array().unwrap().len(), 4);
    let err: Value =
        post("/search/batch", json!({ "searches": [ { "vector": vector(1) }, { "k": 2 } ] })).json().unwrap();
    assert!(err["error"]["message"].as_str().unwrap().contains("searches[1]"), "{err}");

    // Listing with a filter, page by page, then scrolling and counting.
    let mut seen = Vec::new();
    let mut url = srv.url("/images?filter=label:boot&limit=7");
    loop {
        let page: Value = http.get(&url).send().unwrap().json().unwrap();
        seen.extend(page["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => url = srv.url(&format!("/images?filter=label:boot&limit=7&cursor={c}")),
            None => break,
        }
    }
    let want: Vec<String> = (0..60).filter(|i| i % 3 == 1).map(|i| format!("it-{i:02}")).collect();
    assert_eq!(seen, want);
    let scroll: Value =
        post("/images/scroll", json!({ "filter": { "key": "year", "range": { "gte": 2055 } }, "limit": 3 }))
            .json()
            .unwrap();
    assert_eq!(scroll["items"].as_array().unwrap().len(), 3);
    assert_eq!(scroll["next_cursor"], "it-57");
    let c: Value = post("/images/count", json!({ "filter": "label:hat" })).json().unwrap();
    assert_eq!(c["count"], 20);
    let c: Value = http.post(srv.url("/images/count")).send().unwrap().json().unwrap();
    assert_eq!(c["count"], 60);

    // PATCH needs the key, merges, and the filter sees it at once.
    let patch = json!({ "metadata": { "label": "sandal", "year": null } });
    assert_eq!(http.patch(srv.url("/images/it-00")).json(&patch).send().unwrap().status(), 401);
    let res = http.patch(srv.url("/images/it-00")).bearer_auth(KEY).json(&patch).send().unwrap();
    assert_eq!(res.status(), 200);
    let rec: Value = res.json().unwrap();
    assert_eq!(rec["metadata"], json!({ "label": "sandal", "tags": ["even"] }));
    let c: Value = post("/images/count", json!({ "filter": "label:sandal" })).json().unwrap();
    assert_eq!(c["count"], 1);
    let res = http.patch(srv.url("/images/nope")).bearer_auth(KEY).json(&patch).send().unwrap();
    assert_eq!(res.status(), 404);

    // Errors name the input and the fix.
    for (path, body, needle) in [
        ("/search?filter=label", json!({ "vector": vector(1) }), "expected `key:value`"),
        (
            "/search",
            json!({ "vector": vector(1), "filter": { "must": [{ "key": "a", "mach": 1 }] } }),
            "unknown field `mach`",
        ),
        ("/search?offset=9999&k=10", json!({ "vector": vector(1) }), "deepest page"),
        ("/search?max_distance=-1", json!({ "vector": vector(1) }), "max_distance"),
        ("/search", json!({ "vector": vector(1), "id": "it-01" }), "not both"),
        ("/images/scroll", json!({ "limit": 0 }), "limit = 0"),
        ("/images/count", json!({ "filter": "year>soon" }), "not a number"),
    ] {
        let res = post(path, body);
        assert_eq!(res.status(), 400, "{path}");
        let v: Value = res.json().unwrap();
        assert!(v["error"]["message"].as_str().unwrap().contains(needle), "{path}: {v}");
    }
    let v: Value = http.get(srv.url("/images?filter=label:")).send().unwrap().json().unwrap();
    assert_eq!(v["error"]["code"], "invalid_filter");

    // The command-line client: images (two = one batch), an item, JSON out, and errors.
    let (a, b) = (dir.path().join("a.png"), dir.path().join("b.jpg"));
    std::fs::write(&a, png(1, 40, 30)).unwrap();
    std::fs::write(&b, png(2, 30, 40)).unwrap();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(common::binary())
            .arg("search")
            .args(["--url", &srv.base])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, out, err) = cli(&[a.to_str().unwrap(), b.to_str().unwrap(), "-k", "3", "--filter", "label:hat"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2 * (1 + 3), "{out}");
    assert!(lines[0].ends_with("a.png") && lines[4].ends_with("b.jpg"), "{out}");
    let (ok, out, err) = cli(&["--id", "it-05", "-k", "5", "--json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(ids(&v), ids(&like));
    let (ok, _, err) = cli(&["--id", "it-05", "--filter", "year>soon"]);
    assert!(!ok && err.contains("400") && err.contains("not a number"), "{err}");
    let (ok, _, err) = cli(&[dir.path().join("missing.png").to_str().unwrap()]);
    assert!(!ok && err.contains("missing.png"), "{err}");
    let out = std::process::Command::new(common::binary())
        .args(["search", "--url", "http://127.0.0.1:9", "--id", "x"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the server"));
}
