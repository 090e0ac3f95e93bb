//! JSON bodies of every route, parsed as the handlers parse them and checked as they
//! check them: searches and batches, vector inserts, scroll and count, metadata patches
//! (RFC 7396: applying a patch twice changes nothing more), collections and upgrades.

use server::gallery::{merge_patch, GalleryChange};
use server::http::body::json;
use server::http::collections::{CreateBody, UpgradeBody};
use server::http::images::{page_args, PatchBody, ScrollBody, VectorBody, VectorItem};
use server::http::search::{options, BatchBody, QueryBody, SearchParams};
use server::store::IndexSpec;

use super::query::MAX_K;

/// The `json` target.
pub const TARGET: crate::Target = crate::Target {
    name: "json",
    about: "JSON bodies: search, batch, insert, scroll, patch, collections, upgrades",
    seeds,
    dictionary,
    run,
};

fn seeds() -> Vec<Vec<u8>> {
    super::texts(&[
        r#"{"vector": [0.1, -0.2, 0.3], "k": 5, "offset": 5, "ef": 64, "filter": {"must": [{"key": "label", "match": "shoe"}, {"key": "year", "range": {"gte": 2020}}]}}"#,
        r#"{"id": "cat-01", "rerank": true, "rerank_depth": 40, "rerank_k": 4, "rerank_weight": 0.1, "max_distance": 1.5}"#,
        r#"{"searches": [{"vector": [1, 2, 3]}, {"id": "a", "filter": "label:shoe|boot,!size<3"}]}"#,
        r#"{"images": [{"id": "a", "vector": [1.0, 2.0, 3.0], "metadata": {"label": "x", "tags": ["p", "q"]}}, {"vector": [0, 0, 1]}]}"#,
        r#"{"id": "b", "vector": [1e-3, 2, 3], "metadata": {"n": 1}}"#,
        r#"{"filter": {"should": [{"key": "a.b", "exists": true}, {"key": "c", "match": {"any": [1, "2", true]}}], "must_not": [{"key": "d", "range": {"lt": 0}}]}, "cursor": "abc", "limit": 10}"#,
        r#"{"metadata": {"label": null, "nested": {"x": [1, {"y": null}], "z": {}}}}"#,
        r#"{"name": "birds", "model": "/models/birds.onnx", "keep_originals": true}"#,
        r#"{"model": "/models/new.onnx", "skip_unreadable": true, "swap": false}"#,
    ])
}

fn dictionary() -> Vec<&'static [u8]> {
    let syntax: &[&[u8]] = &[b"{", b"}", b"[", b"]", b"\"", b":", b",", b"\\u0000", b"\\ud800"];
    let rest: &[&[u8]] = &[
        b"\"gt\"",
        b"\"lte\"",
        b"\"exists\"",
        b"\"vector\"",
        b"\"filter\"",
        b"\"metadata\"",
        b"\"images\"",
        b"\"searches\"",
        b"\"id\"",
        b"\"k\"",
        b"\"limit\"",
        b"\"cursor\"",
        b"null",
        b"1e400",
        b"-0.0",
    ];
    [syntax, super::FILTER_FIELDS, rest].concat()
}

fn run(input: &[u8]) -> bool {
    let defaults = SearchParams::default();
    let mut accepted = false;
    if let Ok(b) = json::<QueryBody>(input) {
        if let Ok(q) = options(&defaults, Some(&b), MAX_K) {
            assert!((1..=MAX_K).contains(&q.k));
            accepted = true;
        }
    }
    if let Ok(b) = json::<BatchBody>(input) {
        accepted |= b.searches.iter().all(|s| options(&defaults, Some(s), MAX_K).is_ok());
    }
    if let Ok(body) = json::<VectorBody>(input) {
        let items = match body {
            VectorBody::Many { images } => images,
            VectorBody::One(item) => vec![item],
        };
        let dim = items.first().map_or(3, |i| i.vector.len());
        let insert = items.into_iter().map(VectorItem::into_new_image).collect();
        let change = GalleryChange { insert, ..Default::default() };
        let spec = IndexSpec { dim, distance: contract::Distance::Cosine, model: "fuzz".into() };
        accepted |= change.check(&spec).is_ok();
    }
    if let Ok(b) = json::<ScrollBody>(input) {
        let filter = b.filter.as_ref().map(server::filter::Filter::from_value);
        if let Some(Ok(f)) = filter {
            accepted |= page_args(Some(f), b.cursor, b.limit).is_ok();
        }
    }
    if let Ok(b) = json::<PatchBody>(input) {
        let mut once = serde_json::json!({"label": "shoe", "nested": {"x": 1, "keep": true}, "tags": ["a"]});
        merge_patch(&mut once, &b.metadata);
        let mut twice = once.clone();
        merge_patch(&mut twice, &b.metadata);
        assert_eq!(once, twice, "a merge patch applied twice changed more");
        accepted = true;
    }
    if let Ok(b) = json::<CreateBody>(input) {
        accepted |= server::collections::validate_name(&b.name).is_ok();
    }
    accepted | json::<UpgradeBody>(input).is_ok()
}
