//! Liveness, readiness, statistics and Prometheus metrics.

use std::sync::atomic::Ordering;

use actix_web::{web, HttpResponse};
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

/// `GET /stats`: index size, model and settings in use.
pub async fn stats(state: web::Data<AppState>) -> HttpResponse {
    let g = state.gallery.stats();
    let m = state.embedder.manifest();
    let s = &state.settings;
    HttpResponse::Ok().json(json!({
        "index": g,
        "model": {
            "path": state.embedder.model().path(),
            "arch": m.arch,
            "embedding_dim": m.embedding_dim,
            "distance": m.distance,
            "input_size": m.preprocess.crop,
            "provider": state.embedder.model().provider(),
            "provenance": m.provenance,
        },
        "hnsw": s.hnsw,
        "batch": s.batch,
        "uptime_s": state.started.elapsed().as_secs_f64(),
    }))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let g = state.gallery.stats();
    let text =
        state.metrics.render(Gauges { images: g.images, graph_points: g.graph_points, tombstones: g.tombstones });
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(text)
}
