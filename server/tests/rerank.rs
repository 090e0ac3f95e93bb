//! Query-time re-ranking over HTTP (`rerank=true`): the hits are the nearest candidates
//! re-ordered by STML's contextual similarity, each with its `score`; paging, filters and
//! more-like-this work with it; bad options are refused by name.

mod common;

use std::collections::HashSet;

use common::{client, clustered, tiny_model, ServerProc, DIM};
use serde_json::{json, Value};

const KEY: &str = "rr-key";

fn ids(v: &Value) -> Vec<String> {
    v["hits"].as_array().unwrap().iter().map(|h| h["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn rerank_reorders_the_nearest_candidates_by_contextual_score() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let srv = ServerProc::start(&model, &dir.path().join("index"), &[("STML_SERVER_API_KEY", KEY)]);
    let http = client();
    let points = clustered(400, DIM, 8, 1);
    let images: Vec<Value> = points
        .iter()
        .enumerate()
        .map(|(i, v)| json!({ "id": format!("p{i:03}"), "vector": v, "metadata": { "half": i % 2 } }))
        .collect();
    let res = http.post(srv.url("/images")).bearer_auth(KEY).json(&json!({ "images": images })).send().unwrap();
    assert_eq!(res.status(), 201);
    let post = |path: &str, body: Value| -> Value {
        let res = http.post(srv.url(path)).json(&body).send().unwrap();
        assert_eq!(res.status(), 200, "{path}: {}", res.text().unwrap());
        res.json().unwrap()
    };

    let queries = clustered(20, DIM, 8, 2);
    let mut reordered = 0;
    for q in &queries {
        let plain = post("/search?k=30", json!({ "vector": q }));
        let deep = post(
            "/search?k=30",
            json!({ "vector": q, "rerank": true, "rerank_depth": 30, "rerank_k": 10, "rerank_weight": 1.0 }),
        );
        assert!(plain["hits"][0].get("score").is_none(), "no score without rerank");
        // The same 30 candidates, re-ordered by a score that falls down the list.
        let (a, b) = (ids(&plain), ids(&deep));
        assert_eq!(a.iter().collect::<HashSet<_>>(), b.iter().collect::<HashSet<_>>());
        let scores: Vec<f64> = deep["hits"].as_array().unwrap().iter().map(|h| h["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
        assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)), "{scores:?}");
        reordered += usize::from(a != b);
        // Pages of a re-ranked search are slices of the whole re-ranked list.
        let whole = post("/search?k=20&rerank=true", json!({ "vector": q }));
        let page = post("/search?k=10&offset=10&rerank=true", json!({ "vector": q }));
        assert_eq!(ids(&page), ids(&whole)[10..].to_vec());
    }
    assert!(reordered > 0, "re-ranking changed the order of some queries");

    // With a filter, and for more like a stored item (itself left out).
    let r = post("/search?k=10&rerank=true&filter=half:1", json!({ "vector": queries[0] }));
    assert!(r["hits"].as_array().unwrap().iter().all(|h| h["metadata"]["half"] == 1), "{r}");
    let r = post("/images/p007/similar?k=5&rerank=true", json!({}));
    assert_eq!(r["hits"].as_array().unwrap().len(), 5);
    assert!(!ids(&r).contains(&"p007".to_string()));

    // Bad options name themselves.
    for (q, word) in [
        ("rerank_k=5", "need rerank=true"),
        ("rerank=true&rerank_depth=1", "rerank_depth"),
        ("rerank=true&rerank_k=80", "rerank_k"),
    ] {
        let res =
            http.post(srv.url(&format!("/search?k=5&{q}"))).json(&json!({ "vector": queries[0] })).send().unwrap();
        assert_eq!(res.status(), 400, "{q}");
        let text = res.text().unwrap();
        assert!(text.contains(word), "{q}: {text}");
    }
}
