//! Searches: `POST /search` (an uploaded image, a vector, or a stored item),
//! `POST /search/batch` (several in one request) and `POST /images/{id}/similar` (more
//! like a stored item, the item left out). Every search takes the same options: `k`,
//! `offset` (paging), `ef`, `max_distance` and `filter`, in the query string or in the
//! JSON body (the body's win).

use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::body::{self, Upload};
use super::{AppState, ItemId};
use crate::collections::Collection;
use crate::filter::Filter;
use crate::gallery::{Found, Hit, Query, Strategy};
use crate::rerank::Rerank;
use crate::{Error, Result};

/// Largest accepted `ef`.
pub const MAX_EF: usize = 100_000;
/// Largest accepted `offset + k`: deeper pages of an approximate search cost more than
/// they are worth; narrow the search with a filter instead.
pub const MAX_DEPTH: usize = 10_000;
/// Most queries in one batch.
pub const MAX_BATCH: usize = 256;

/// Query-string options of every search route.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// Number of hits (default 10).
    pub k: Option<usize>,
    /// Hits to skip (paging; default 0).
    pub offset: Option<usize>,
    /// HNSW search breadth (default from the settings).
    pub ef: Option<usize>,
    /// Only hits at most this far away.
    pub max_distance: Option<f32>,
    /// A filter, in the query-string form (`label:shoe,year>2020`) or as JSON text.
    pub filter: Option<String>,
    /// Re-rank the nearest candidates by contextual similarity (default false).
    pub rerank: Option<bool>,
    /// Candidates re-ranked (default 50, or offset + k if more).
    pub rerank_depth: Option<usize>,
    /// Neighbourhood size of the contextual similarity (default 5).
    pub rerank_k: Option<usize>,
    /// Weight of the contextual term against the pairwise one (default 0.03).
    pub rerank_weight: Option<f32>,
}

/// One query as JSON: what to search near (a `vector` or a stored item's `id`, unless an
/// image is uploaded) and options that override the query string's.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    pub vector: Option<Vec<f32>>,
    /// More like this stored item (the item itself is left out).
    pub id: Option<String>,
    pub k: Option<usize>,
    pub offset: Option<usize>,
    pub ef: Option<usize>,
    pub max_distance: Option<f32>,
    /// A filter: an object in the JSON form, or a string in the query-string form.
    pub filter: Option<serde_json::Value>,
    pub rerank: Option<bool>,
    pub rerank_depth: Option<usize>,
    pub rerank_k: Option<usize>,
    pub rerank_weight: Option<f32>,
}

/// JSON body of `/search/batch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    pub searches: Vec<QueryBody>,
}

/// Where the time of a search went, in milliseconds.
#[derive(Debug, Default, Serialize)]
pub struct SearchTimings {
    pub decode_ms: f64,
    pub embed_ms: f64,
    pub search_ms: f64,
    pub total_ms: f64,
}

/// The hits of one query.
#[derive(Debug, Serialize)]
pub struct Results {
    pub hits: Vec<Hit>,
    pub k: usize,
    pub offset: usize,
    pub ef: Option<usize>,
    /// The `offset` of the next page; `None` when this page is not full.
    pub next_offset: Option<usize>,
    pub strategy: Strategy,
}

/// Answer of `/search` and `/images/{id}/similar`.
#[derive(Debug, Serialize)]
pub struct SearchResponse {
    #[serde(flatten)]
    pub results: Results,
    pub timings: SearchTimings,
}

/// Answer of `/search/batch`: one result per query, in order.
#[derive(Debug, Serialize)]
pub struct BatchResponse {
    pub results: Vec<Results>,
    pub timings: SearchTimings,
}

/// A query's options, checked, with the body's over the query string's; the vector is
/// filled in later.
pub fn options(params: &SearchParams, body: Option<&QueryBody>, max_k: usize) -> Result<Query> {
    let k = body.and_then(|b| b.k).or(params.k).unwrap_or(10);
    if k == 0 || k > max_k {
        return Err(Error::InvalidK { k, max: max_k });
    }
    let offset = body.and_then(|b| b.offset).or(params.offset).unwrap_or(0);
    if offset.saturating_add(k) > MAX_DEPTH {
        return Err(Error::BadRequest(format!(
            "offset + k = {} is beyond the deepest page, {MAX_DEPTH}; narrow the search with a filter",
            offset.saturating_add(k)
        )));
    }
    let ef = body.and_then(|b| b.ef).or(params.ef);
    if let Some(ef) = ef {
        if ef == 0 || ef > MAX_EF {
            return Err(Error::BadRequest(format!("ef = {ef} is out of range; expected 1 ..= {MAX_EF}")));
        }
    }
    let max_distance = body.and_then(|b| b.max_distance).or(params.max_distance);
    if max_distance.is_some_and(|d| !d.is_finite() || d < 0.0) {
        return Err(Error::BadRequest("max_distance must be a finite number >= 0".into()));
    }
    let filter = match (body.and_then(|b| b.filter.as_ref()), &params.filter) {
        (Some(v), _) => Some(Filter::from_value(v)?),
        (None, Some(text)) => Some(Filter::parse(text)?),
        (None, None) => None,
    };
    let rerank_depth = body.and_then(|b| b.rerank_depth).or(params.rerank_depth);
    let rerank_k = body.and_then(|b| b.rerank_k).or(params.rerank_k);
    let rerank_weight = body.and_then(|b| b.rerank_weight).or(params.rerank_weight);
    let rerank = match body.and_then(|b| b.rerank).or(params.rerank) {
        Some(true) => Some(Rerank::new(rerank_depth, rerank_k, rerank_weight)?),
        _ if rerank_depth.is_some() || rerank_k.is_some() || rerank_weight.is_some() => {
            return Err(Error::BadRequest("rerank_depth, rerank_k and rerank_weight need rerank=true".into()))
        }
        _ => None,
    };
    Ok(Query { vector: Vec::new(), k, offset, ef, filter, max_distance, rerank })
}

/// What a query searches near.
enum Target {
    Vector(Vec<f32>),
    Item(String),
    Image(web::Bytes),
}

impl Target {
    fn of_body(body: &mut QueryBody) -> Result<Self> {
        match (body.vector.take(), body.id.take()) {
            (Some(v), None) => Ok(Target::Vector(v)),
            (None, Some(id)) => Ok(Target::Item(id)),
            (Some(_), Some(_)) => Err(Error::BadRequest("give `vector` or `id`, not both".into())),
            (None, None) => Err(Error::BadRequest(
                "a JSON search needs `vector` (a query vector) or `id` (more like a stored image)".into(),
            )),
        }
    }
}

fn results(found: Found, query: &Query) -> Results {
    let full = found.hits.len() == query.k;
    Results {
        next_offset: full.then_some(query.offset + query.k),
        hits: found.hits,
        k: query.k,
        offset: query.offset,
        ef: query.ef,
        strategy: found.strategy,
    }
}

/// Embeds uploaded images (concurrently, through the batcher) into their vectors.
async fn embed(col: &Collection, targets: Vec<Target>, timings: &mut SearchTimings) -> Result<Vec<Target>> {
    let started = Instant::now();
    let embedded = futures_util::future::try_join_all(targets.into_iter().map(|t| async move {
        match t {
            Target::Image(bytes) => {
                let e = col.embedder.embed_bytes(bytes, false).await?;
                Ok::<_, Error>((Target::Vector(e.vector), e.timings.decode_ms, e.timings.embed_ms))
            }
            other => Ok((other, 0.0, 0.0)),
        }
    }))
    .await?;
    let mut out = Vec::with_capacity(embedded.len());
    for (t, decode_ms, embed_ms) in embedded {
        timings.decode_ms += decode_ms;
        timings.embed_ms += embed_ms;
        out.push(t);
    }
    if out.len() > 1 {
        // Concurrent: report the wall time, not the sum.
        timings.embed_ms = started.elapsed().as_secs_f64() * 1e3;
    }
    Ok(out)
}

/// Largest `ef` and `offset + k` of a search run on the HTTP worker itself.
const INLINE_MAX_DEPTH: usize = 512;

/// A query whose cost is a bounded walk of the in-memory graph: near a vector, without a
/// filter (which may scan) or re-ranking (which reads stored vectors), and not deep.
fn is_light(target: &Target, query: &Query) -> bool {
    matches!(target, Target::Vector(_))
        && query.filter.is_none()
        && query.rerank.is_none()
        && query.offset + query.k <= INLINE_MAX_DEPTH
        && query.ef.is_none_or(|ef| ef <= INLINE_MAX_DEPTH)
}

/// Runs the queries: on the HTTP worker when each is a light walk of the graph (a hand-off
/// to the blocking pool costs more than such a search), else on a blocking thread.
async fn run(col: &Collection, queries: Vec<(Target, Query)>, timings: &mut SearchTimings) -> Result<Vec<Results>> {
    let searched = Instant::now();
    let gallery = col.gallery.clone();
    let light = queries.len() <= 8 && queries.iter().all(|(t, q)| is_light(t, q));
    let search = move || -> Result<Vec<Results>> {
        queries
            .into_iter()
            .map(|(target, mut opts)| {
                let found = match target {
                    Target::Vector(vector) => {
                        opts.vector = vector;
                        gallery.find(&opts)?
                    }
                    Target::Item(id) => {
                        gallery.similar(&id, &opts)?.ok_or_else(|| Error::NotFound { id: id.clone() })?
                    }
                    Target::Image(_) => unreachable!("images are embedded before the search"),
                };
                Ok(results(found, &opts))
            })
            .collect()
    };
    let out = if light { search()? } else { web::block(search).await.map_err(|_| Error::Unavailable)?? };
    timings.search_ms = searched.elapsed().as_secs_f64() * 1e3;
    Ok(out)
}

/// The image file fields of a multipart body (at least one).
fn files(parts: Vec<body::Part>) -> Result<Vec<web::Bytes>> {
    let files: Vec<web::Bytes> = parts.into_iter().filter(|p| p.is_file()).map(|p| p.data).collect();
    if files.is_empty() {
        return Err(Error::BadRequest("the multipart body has no image file field".into()));
    }
    Ok(files)
}

/// `POST /search?k=10&filter=label:shoe`: an image (raw or multipart), or JSON with a
/// `vector` or an `id`.
pub async fn search(
    req: HttpRequest,
    state: web::Data<AppState>,
    params: web::Query<SearchParams>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let started = Instant::now();
    let col = state.collection(&req)?;
    let max_k = state.settings.max_k;
    let (target, opts) = match body::read(req.headers(), payload, state.settings.max_upload_bytes).await? {
        Upload::Json(b) => {
            let mut q = body::json::<QueryBody>(&b)?;
            (Target::of_body(&mut q)?, options(&params, Some(&q), max_k)?)
        }
        Upload::Image(bytes) => (Target::Image(bytes), options(&params, None, max_k)?),
        Upload::Multipart(parts) => {
            let mut files = files(parts)?;
            if files.len() > 1 {
                return Err(Error::BadRequest(format!(
                    "{} images in one search; send one, or use /search/batch",
                    files.len()
                )));
            }
            (Target::Image(files.remove(0)), options(&params, None, max_k)?)
        }
    };
    let mut timings = SearchTimings::default();
    let targets = embed(&col, vec![target], &mut timings).await?;
    let mut results = run(&col, targets.into_iter().map(|t| (t, opts.clone())).collect(), &mut timings).await?;
    timings.total_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(HttpResponse::Ok().json(SearchResponse { results: results.remove(0), timings }))
}

/// `POST /search/batch`: JSON `{"searches": [{"vector": ...}, {"id": ...}, ...]}` (each with
/// its own options over the query string's), or a multipart body of several images
/// searched with the query string's options.
pub async fn batch(
    req: HttpRequest,
    state: web::Data<AppState>,
    params: web::Query<SearchParams>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let started = Instant::now();
    let col = state.collection(&req)?;
    let max_k = state.settings.max_k;
    let queries: Vec<(Target, Query)> =
        match body::read(req.headers(), payload, state.settings.max_upload_bytes).await? {
            Upload::Json(b) => body::json::<BatchBody>(&b)?
                .searches
                .into_iter()
                .enumerate()
                .map(|(i, mut q)| {
                    let at = |e: Error| Error::BadRequest(format!("searches[{i}]: {e}"));
                    Ok((Target::of_body(&mut q).map_err(at)?, options(&params, Some(&q), max_k).map_err(at)?))
                })
                .collect::<Result<_>>()?,
            Upload::Multipart(parts) => {
                let opts = options(&params, None, max_k)?;
                files(parts)?.into_iter().map(|f| (Target::Image(f), opts.clone())).collect()
            }
            Upload::Image(_) => return Err(Error::BadRequest(
                "a batch is JSON {\"searches\": [...]} or a multipart body of images; for one raw image use /search"
                    .into(),
            )),
        };
    if queries.is_empty() || queries.len() > MAX_BATCH {
        return Err(Error::BadRequest(format!("a batch holds 1 to {MAX_BATCH} searches, not {}", queries.len())));
    }
    let mut timings = SearchTimings::default();
    let (targets, opts): (Vec<Target>, Vec<Query>) = queries.into_iter().unzip();
    let targets = embed(&col, targets, &mut timings).await?;
    let results = run(&col, targets.into_iter().zip(opts).collect(), &mut timings).await?;
    timings.total_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(HttpResponse::Ok().json(BatchResponse { results, timings }))
}

/// `POST /images/{id}/similar?k=10`: the items nearest to a stored item, itself left out;
/// options in the query string or an optional JSON body.
pub async fn similar(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: ItemId,
    params: web::Query<SearchParams>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let started = Instant::now();
    let col = state.collection(&req)?;
    let has_body = req.headers().contains_key(actix_web::http::header::CONTENT_TYPE);
    let body = if has_body {
        match body::read(req.headers(), payload, state.settings.max_upload_bytes).await? {
            Upload::Json(b) if b.is_empty() => None,
            Upload::Json(b) => Some(body::json::<QueryBody>(&b)?),
            _ => return Err(Error::BadRequest("the body of /images/{id}/similar is JSON options, or empty".into())),
        }
    } else {
        None
    };
    if body.as_ref().is_some_and(|b| b.vector.is_some() || b.id.is_some()) {
        return Err(Error::BadRequest("the item is named in the path; the body takes options only".into()));
    }
    let opts = options(&params, body.as_ref(), state.settings.max_k)?;
    let mut timings = SearchTimings::default();
    let mut results = run(&col, vec![(Target::Item(id.into_inner()), opts)], &mut timings).await?;
    timings.total_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(HttpResponse::Ok().json(SearchResponse { results: results.remove(0), timings }))
}
