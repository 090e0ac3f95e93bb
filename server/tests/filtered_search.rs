//! Filtered search against the exact oracle: on 20,000 clustered vectors, filters passing
//! 50 %, 5 % and 0.1 % of the items always give min(k, matches) hits, every hit passes
//! the filter, and the hits are the oracle's (recall@10 >= 0.95 where the graph is
//! walked, identical where the items are scanned). Also: paging, the distance cut, more
//! like an item, listing and counting.

mod common;

use common::clustered;
use contract::Distance;
use serde_json::json;
use server::filter::Filter;
use server::gallery::{IndexKind, Query, Strategy};
use server::index::HnswParams;
use server::store::IndexSpec;
use server::{Gallery, LocalGallery, NewImage};

const N: usize = 20_000;
const DIM: usize = 16;

/// Item `i` has `bucket = i % 1000` and `parity` "even" / "odd".
fn gallery(dir: &std::path::Path, kind: IndexKind) -> LocalGallery {
    let spec = IndexSpec { dim: DIM, distance: Distance::Euclidean, model: "test".into() };
    let params = HnswParams { m: 16, ef_construction: 100, ef_search: 64, ..HnswParams::default() };
    let g = LocalGallery::open(dir, spec, &params, kind).unwrap();
    let data = clustered(N, DIM, 50, 3);
    let images: Vec<NewImage> = data
        .into_iter()
        .enumerate()
        .map(|(i, vector)| NewImage {
            id: Some(format!("item-{i:05}")),
            metadata: json!({ "bucket": i % 1000, "parity": if i % 2 == 0 { "even" } else { "odd" } }),
            content_hash: None,
            vector,
            thumbnail: None,
            original: None,
        })
        .collect();
    for part in images.chunks(5000) {
        g.insert(part.to_vec()).unwrap();
    }
    g
}

fn ids(hits: &[server::Hit]) -> Vec<String> {
    hits.iter().map(|h| h.id.clone()).collect()
}

#[test]
fn filters_match_the_exact_oracle_at_every_selectivity() {
    let (hd, ed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (hnsw, exact) = (gallery(hd.path(), IndexKind::Hnsw), gallery(ed.path(), IndexKind::Exact));
    let queries = clustered(40, DIM, 50, 8);
    // (filter, items it passes, strategies allowed)
    let cases = [
        ("parity:even", N / 2, [Strategy::FilteredIndex, Strategy::FilteredIndexThenScan]),
        ("bucket<50", N / 20, [Strategy::FilteredIndex, Strategy::FilteredIndexThenScan]),
        ("bucket:7", N / 1000, [Strategy::Scan, Strategy::Scan]),
    ];
    for (text, passing, strategies) in cases {
        let filter = Filter::parse(text).unwrap();
        assert_eq!(hnsw.count(Some(&filter)).unwrap(), passing, "{text}");
        let mut found = 0usize;
        for k in [10, 25] {
            let mut recall = 0.0;
            for q in &queries {
                let query = Query { filter: Some(filter.clone()), ..Query::nearest(q.clone(), k) };
                let got = hnsw.find(&query).unwrap();
                let want = exact.find(&query).unwrap();
                assert!(strategies.contains(&got.strategy), "{text}: {:?}", got.strategy);
                assert_eq!(got.hits.len(), k.min(passing), "{text}, k = {k}: never fewer than k while k pass");
                assert!(got.hits.iter().all(|h| filter.matches(&h.metadata)), "{text}: a hit fails the filter");
                assert!(got.hits.windows(2).all(|w| w[0].distance <= w[1].distance), "{text}: nearest first");
                let want_ids = ids(&want.hits);
                if got.strategy == Strategy::Scan {
                    assert_eq!(ids(&got.hits), want_ids, "{text}: a scan is exact");
                }
                recall += got.hits.iter().filter(|h| want_ids.contains(&h.id)).count() as f64 / want_ids.len() as f64;
                found += got.hits.len();
            }
            let recall = recall / queries.len() as f64;
            assert!(recall >= 0.95, "{text}, k = {k}: recall {recall:.3} against the exact oracle");
        }
        assert!(found > 0);
    }
    // A filter that passes fewer items than k gives all of them.
    let few = Filter::parse("bucket:7,parity:odd").unwrap();
    let all = hnsw.find(&Query { filter: Some(few.clone()), ..Query::nearest(queries[0].clone(), 50) }).unwrap();
    assert_eq!(all.hits.len(), hnsw.count(Some(&few)).unwrap());
    assert_eq!(all.hits.len(), 20, "bucket 7 is always odd");
    // One that passes none gives none.
    let none = Filter::parse("bucket>5000").unwrap();
    assert!(hnsw.find(&Query { filter: Some(none), ..Query::nearest(queries[0].clone(), 5) }).unwrap().hits.is_empty());
}

#[test]
fn pages_distance_cut_and_more_like_an_item() {
    let dir = tempfile::tempdir().unwrap();
    let g = gallery(dir.path(), IndexKind::Exact);
    let q = clustered(1, DIM, 50, 9).remove(0);
    let filter = Some(Filter::parse("parity:odd").unwrap());
    let whole = g.find(&Query { filter: filter.clone(), ..Query::nearest(q.clone(), 30) }).unwrap().hits;
    let mut paged = Vec::new();
    for page in 0..3 {
        let query = Query { offset: page * 10, filter: filter.clone(), ..Query::nearest(q.clone(), 10) };
        paged.extend(g.find(&query).unwrap().hits);
    }
    assert_eq!(ids(&paged), ids(&whole), "three pages of 10 are the first 30");
    let cut = whole[4].distance;
    let near = g.find(&Query { max_distance: Some(cut), filter, ..Query::nearest(q.clone(), 30) }).unwrap().hits;
    assert_eq!(ids(&near), ids(&whole[..5]), "max_distance keeps the hits at most that far");
    // More like an item: the item itself is left out, the rest is the plain search.
    let first = &whole[0].id;
    let plain = g.search(&g.vector(first).unwrap().unwrap(), 11, None).unwrap();
    let like = g.similar(first, &Query::nearest(Vec::new(), 10)).unwrap().unwrap().hits;
    assert!(like.iter().all(|h| &h.id != first));
    assert_eq!(ids(&like), ids(&plain).into_iter().filter(|id| id != first).take(10).collect::<Vec<_>>());
    assert!(g.similar("no-such-item", &Query::nearest(Vec::new(), 10)).unwrap().is_none());
}

#[test]
fn listing_counting_and_patching_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let g = gallery(dir.path(), IndexKind::Exact);
    let filter = Filter::parse("bucket<3").unwrap();
    assert_eq!(g.count(Some(&filter)).unwrap(), 60);
    assert_eq!(g.count(None).unwrap(), N);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = g.list(Some(&filter), cursor.as_deref(), 25).unwrap();
        assert!(page.items.len() <= 25);
        seen.extend(page.items.into_iter().map(|i| i.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let mut want: Vec<String> = (0..N).filter(|i| i % 1000 < 3).map(|i| format!("item-{i:05}")).collect();
    want.sort();
    assert_eq!(seen, want, "the pages list every passing item once, in id order");
    // PATCH semantics: set, replace and remove keys; the filter sees the change at once.
    let rec = g.patch_metadata("item-00001", &json!({ "bucket": null, "label": "shoe" })).unwrap().unwrap();
    assert_eq!(rec.metadata, json!({ "parity": "odd", "label": "shoe" }));
    assert_eq!(g.count(Some(&Filter::parse("label:shoe").unwrap())).unwrap(), 1);
    assert_eq!(g.count(Some(&filter)).unwrap(), 59);
    assert!(g.patch_metadata("nope", &json!({})).unwrap().is_none());
    drop(g);
    // ... and is durable.
    let spec = IndexSpec { dim: DIM, distance: Distance::Euclidean, model: "test".into() };
    let g = LocalGallery::open(dir.path(), spec, &HnswParams::default(), IndexKind::Exact).unwrap();
    assert_eq!(g.get("item-00001").unwrap().unwrap().metadata["label"], "shoe");
}
