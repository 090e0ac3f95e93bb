//! `POST /search`: the nearest gallery images to an uploaded image or a given vector.

use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::body::{self, Upload};
use super::AppState;
use crate::gallery::Hit;
use crate::{Error, Result};

/// Largest accepted `ef`.
pub const MAX_EF: usize = 100_000;

/// Query string of `/search`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// Number of hits (default 10).
    pub k: Option<usize>,
    /// HNSW search breadth (default from the settings).
    pub ef: Option<usize>,
}

/// JSON body of a search by vector.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorQuery {
    pub vector: Vec<f32>,
}

/// Where the time of a search went, in milliseconds.
#[derive(Debug, Default, Serialize)]
pub struct SearchTimings {
    pub decode_ms: f64,
    pub embed_ms: f64,
    pub search_ms: f64,
    pub total_ms: f64,
}

/// Answer of `/search`.
#[derive(Debug, Serialize)]
pub struct SearchResponse {
    pub hits: Vec<Hit>,
    pub k: usize,
    pub ef: Option<usize>,
    pub timings: SearchTimings,
}

impl SearchParams {
    fn validate(&self, max_k: usize) -> Result<(usize, Option<usize>)> {
        let k = self.k.unwrap_or(10);
        if k == 0 || k > max_k {
            return Err(Error::InvalidK { k, max: max_k });
        }
        if let Some(ef) = self.ef {
            if ef == 0 || ef > MAX_EF {
                return Err(Error::BadRequest(format!("ef = {ef} is out of range; expected 1 ..= {MAX_EF}")));
            }
        }
        Ok((k, self.ef))
    }
}

/// `POST /search?k=10&ef=64`
pub async fn search(
    req: HttpRequest,
    state: web::Data<AppState>,
    params: web::Query<SearchParams>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let started = Instant::now();
    let (k, ef) = params.validate(state.settings.max_k)?;
    let mut timings = SearchTimings::default();
    let vector = match body::read(req.headers(), payload, state.settings.max_upload_bytes).await? {
        Upload::Json(b) => body::json::<VectorQuery>(&b)?.vector,
        Upload::Image(bytes) => {
            let e = state.embedder.embed_bytes(bytes, false).await?;
            (timings.decode_ms, timings.embed_ms) = (e.timings.decode_ms, e.timings.embed_ms);
            e.vector
        }
        Upload::Multipart(parts) => {
            let part = parts
                .into_iter()
                .find(|p| p.is_file())
                .ok_or_else(|| Error::BadRequest("the multipart body has no image file field".into()))?;
            let e = state.embedder.embed_bytes(part.data, false).await?;
            (timings.decode_ms, timings.embed_ms) = (e.timings.decode_ms, e.timings.embed_ms);
            e.vector
        }
    };
    let searched = Instant::now();
    let gallery = state.gallery.clone();
    let hits = web::block(move || gallery.search(&vector, k, ef)).await.map_err(|_| Error::Unavailable)??;
    timings.search_ms = searched.elapsed().as_secs_f64() * 1e3;
    timings.total_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(HttpResponse::Ok().json(SearchResponse { hits, k, ef, timings }))
}
