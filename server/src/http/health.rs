//! Liveness, readiness, statistics (per collection) and Prometheus metrics (the index
//! gauges summed over the collections).

use std::sync::atomic::Ordering;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::AppState;
use crate::metrics::Gauges;
use crate::{Error, Result};

/// `GET /healthz`: the process answers.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// `GET /readyz`: the model and index are loaded and the server is not shutting down.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse> {
    if !state.ready.load(Ordering::Relaxed) {
        return Err(Error::Unavailable);
    }
    Ok(HttpResponse::Ok().json(json!({ "status": "ready" })))
}

/// `GET /stats`: index size, model and settings in use; the model's path only with
/// `?paths=true` (see [`super::auth::paths_asked`]).
pub async fn stats(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse> {
    let paths = super::auth::paths_asked(&req, state.settings.api_key.as_deref())?;
    let col = state.collection(&req)?;
    let g = col.gallery.stats();
    let m = col.embedder.manifest();
    let s = &state.settings;
    Ok(HttpResponse::Ok().json(json!({
        "collection": col.name,
        "index": g,
        "model": {
            "path": paths.then(|| col.embedder.model().path()),
            "arch": m.arch,
            "embedding_dim": m.embedding_dim,
            "distance": m.distance,
            "input_size": m.preprocess.crop,
            "provider": col.embedder.model().provider(),
            "provenance": m.provenance,
            "weights_sha256": m.weights_sha256,
        },
        "hnsw": s.hnsw,
        "batch": s.batch,
        "uptime_s": state.started.elapsed().as_secs_f64(),
    })))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let mut gauges = Gauges { in_flight: state.in_flight.current(), ..Gauges::default() };
    for c in state.collections.all() {
        let g = c.gallery.stats();
        gauges.images += g.images;
        gauges.graph_points += g.graph_points;
        gauges.tombstones += g.tombstones;
    }
    let text = state.metrics.render(gauges);
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(text)
}
