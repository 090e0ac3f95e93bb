//! The HTTP API (actix-web). Handlers are thin, one file per resource: a validated request
//! in, a call into the gallery or the embedder, JSON out. Errors become status codes in
//! [`error`] only.

mod auth;
mod body;
pub mod error;
mod health;
mod images;
mod openapi;
mod page;
mod search;

pub use openapi::document as openapi_document;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use actix_web::dev::Service;
use actix_web::http::Method;
use actix_web::web;

use crate::embed::Embedder;
use crate::gallery::Gallery;
use crate::metrics::Metrics;
use crate::settings::Settings;

/// What every handler can reach.
pub struct AppState {
    pub gallery: Arc<Gallery>,
    pub embedder: Arc<Embedder>,
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    /// False before start-up completes and once shutdown begins.
    pub ready: Arc<AtomicBool>,
    pub started: Instant,
}

/// Every route: path pattern, method, handler. The one list the app is built from and
/// the OpenAPI document is checked against.
fn routes() -> Vec<(&'static str, Method, actix_web::Route)> {
    vec![
        ("/", Method::GET, web::get().to(page::page)),
        ("/docs", Method::GET, web::get().to(page::docs)),
        ("/search", Method::POST, web::post().to(search::search)),
        ("/search/batch", Method::POST, web::post().to(search::batch)),
        ("/images", Method::POST, web::post().to(images::add)),
        ("/images", Method::GET, web::get().to(images::list)),
        // Before `/images/{id}`, which would otherwise take these names as ids.
        ("/images/scroll", Method::POST, web::post().to(images::scroll)),
        ("/images/count", Method::POST, web::post().to(images::count)),
        ("/images/{id}", Method::GET, web::get().to(images::get)),
        ("/images/{id}", Method::PATCH, web::patch().to(images::patch)),
        ("/images/{id}", Method::DELETE, web::delete().to(images::delete)),
        ("/images/{id}/thumbnail", Method::GET, web::get().to(images::thumbnail)),
        ("/images/{id}/similar", Method::POST, web::post().to(search::similar)),
        ("/healthz", Method::GET, web::get().to(health::healthz)),
        ("/readyz", Method::GET, web::get().to(health::readyz)),
        ("/stats", Method::GET, web::get().to(health::stats)),
        ("/metrics", Method::GET, web::get().to(health::metrics)),
        ("/openapi.json", Method::GET, web::get().to(openapi::openapi)),
    ]
}

/// `(method, path pattern)` of every route the server answers, in registration order.
pub fn route_list() -> Vec<(String, &'static str)> {
    routes().into_iter().map(|(path, method, _)| (method.to_string(), path)).collect()
}

/// Registers every route, the extractor error handlers and the JSON 404.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::QueryConfig::default().error_handler(error::query_error))
        .app_data(web::PathConfig::default().error_handler(error::path_error));
    for (path, _, route) in routes() {
        cfg.route(path, route);
    }
    cfg.default_service(web::to(error::unknown_route));
}

/// Builds the app for one worker: state, metrics middleware, routes.
pub fn app(
    state: web::Data<AppState>,
) -> actix_web::App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let metrics = state.metrics.clone();
    actix_web::App::new().app_data(state).configure(configure).wrap_fn(move |req, srv| {
        let started = Instant::now();
        let method = req.method().to_string();
        let metrics = metrics.clone();
        let fut = srv.call(req);
        async move {
            let res = fut.await?;
            let route = res.request().match_pattern().unwrap_or_else(|| "(unmatched)".into());
            metrics.record_request(&route, &method, res.status().as_u16(), started.elapsed().as_secs_f64());
            Ok(res)
        }
    })
}
