//! Query strings, parsed as actix-web parses them (`serde_urlencoded`) into each route's
//! options, then checked as the handlers check them: search options (k, offset, ef,
//! distances, filters, re-ranking), ids, metadata, listing pages.

use server::http::images::{page_args, parse_metadata, AddParams, GetParams, ListParams, MAX_PAGE};
use server::http::search::{options, SearchParams, MAX_DEPTH, MAX_EF};

/// The largest `k` of the server's default settings.
pub const MAX_K: usize = 1000;

/// The `query` target.
pub const TARGET: crate::Target = crate::Target {
    name: "query",
    about: "query strings of the search, insert, get and list routes",
    seeds,
    dictionary,
    run,
};

fn seeds() -> Vec<Vec<u8>> {
    super::texts(&[
        "k=5&offset=10&ef=64&max_distance=0.5&filter=label:shoe,year>2020",
        "k=20&filter=%7B%22must%22%3A%5B%7B%22key%22%3A%22label%22%2C%22match%22%3A%22a%22%7D%5D%7D",
        "rerank=true&rerank_depth=50&rerank_k=5&rerank_weight=0.03&k=10",
        "id=cat-01.jpg&metadata=%7B%22label%22%3A%22cat%22%2C%22n%22%3A%5B1%2C2%5D%7D",
        "vector=true",
        "filter=!label:shoe|boot,size%3E%3D3,tags?&limit=50&cursor=abc_01",
        "filter=a.b.c:1&limit=1000",
    ])
}

fn dictionary() -> Vec<&'static [u8]> {
    let query: &[&[u8]] = &[
        b"&",
        b"=",
        b"%",
        b"%00",
        b"%FF",
        b"%7B",
        b"%22",
        b"+",
        b"k=",
        b"offset=",
        b"ef=",
        b"filter=",
        b"limit=",
        b"cursor=",
        b"id=",
        b"metadata=",
        b"rerank=",
        b"rerank_depth=",
        b"rerank_k=",
        b"rerank_weight=",
        b"max_distance=",
        b"vector=",
    ];
    [query, super::FILTER_OPERATORS].concat()
}

fn run(input: &[u8]) -> bool {
    let mut accepted = false;
    if let Ok(p) = serde_urlencoded::from_bytes::<SearchParams>(input) {
        if let Ok(q) = options(&p, None, MAX_K) {
            accepted = true;
            assert!((1..=MAX_K).contains(&q.k), "accepted k = {}", q.k);
            assert!(q.offset + q.k <= MAX_DEPTH, "accepted offset + k = {}", q.offset + q.k);
            assert!(q.ef.is_none_or(|ef| (1..=MAX_EF).contains(&ef)), "accepted ef = {:?}", q.ef);
            assert!(q.max_distance.is_none_or(|d| d.is_finite() && d >= 0.0));
        }
    }
    if let Ok(p) = serde_urlencoded::from_bytes::<AddParams>(input) {
        if let Some(id) = &p.id {
            let _ = server::gallery::validate_id(id);
        }
        accepted |= parse_metadata(p.metadata.as_deref()).is_ok();
    }
    accepted |= serde_urlencoded::from_bytes::<GetParams>(input).is_ok();
    if let Ok(p) = serde_urlencoded::from_bytes::<ListParams>(input) {
        let filter = p.filter.as_deref().map(server::filter::Filter::parse);
        if let Some(Ok(f)) = filter {
            if let Ok((_, _, limit)) = page_args(Some(f), p.cursor, p.limit) {
                assert!((1..=MAX_PAGE).contains(&limit));
                accepted = true;
            }
        }
    }
    accepted
}
