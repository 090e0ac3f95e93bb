//! The HTTP API (actix-web). Handlers are thin, one file per resource: a validated request
//! in, a call into the collection's gallery or embedder, JSON out. Every collection route
//! is answered at the root for the default collection and under
//! `/collections/{collection}` for any. Errors become status codes in [`error`] only.

mod auth;
pub mod body;
pub mod collections;
mod cors;
pub mod error;
mod health;
pub mod images;
mod limit;
mod openapi;
mod page;
pub mod search;

pub use limit::{InFlight, RateLimiter};
pub use openapi::document as openapi_document;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use actix_web::http::Method;
use actix_web::HttpMessage;
use actix_web::{web, HttpRequest};

use crate::collections::{Collection, Collections};
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::Result;

/// Where a collection's routes are answered besides at the root (for the default one).
pub const COLLECTION_PREFIX: &str = "/collections/{collection}";

/// What every handler can reach.
pub struct AppState {
    pub collections: Arc<Collections>,
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    /// False before start-up completes and once shutdown begins.
    pub ready: Arc<AtomicBool>,
    pub started: Instant,
    /// The per-client rate limits, when on (shared by every worker).
    pub limiter: Option<Arc<limit::RateLimiter>>,
    /// API requests being answered, against `[http] max_in_flight`.
    pub in_flight: Arc<limit::InFlight>,
}

/// The `{id}` segment of an item route (with or without the collection prefix).
pub struct ItemId(String);

impl ItemId {
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl actix_web::FromRequest for ItemId {
    type Error = actix_web::Error;
    type Future = std::future::Ready<std::result::Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let id = req.match_info().get("id").map(|s| ItemId(s.to_string()));
        std::future::ready(id.ok_or_else(|| crate::Error::BadRequest("the route has no `{id}` segment".into()).into()))
    }
}

impl AppState {
    /// The collection a request names (`/collections/{collection}/...`), else the default.
    pub fn collection(&self, req: &HttpRequest) -> Result<Arc<Collection>> {
        match req.match_info().get("collection") {
            Some(name) => self.collections.get(name),
            None => Ok(self.collections.default_collection()),
        }
    }
}

/// Who may call a route (see [`auth::check`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: the page, the API description, health checks.
    Open,
    /// Searches, items, listings, statistics: the read key, where one is set.
    Read,
    /// Changes: the API key, where one is set.
    Write,
}

type RouteEntry = (&'static str, Method, Access, actix_web::Route);

/// The routes of one collection: answered at these paths for the default collection and
/// under [`COLLECTION_PREFIX`] for any.
fn collection_routes() -> Vec<RouteEntry> {
    use Access::{Open, Read, Write};
    vec![
        ("/", Method::GET, Open, web::get().to(page::page)),
        ("/search", Method::POST, Read, web::post().to(search::search)),
        ("/search/batch", Method::POST, Read, web::post().to(search::batch)),
        ("/images", Method::POST, Write, web::post().to(images::add)),
        ("/images", Method::GET, Read, web::get().to(images::list)),
        // Before `/images/{id}`, which would otherwise take these names as ids.
        ("/images/scroll", Method::POST, Read, web::post().to(images::scroll)),
        ("/images/count", Method::POST, Read, web::post().to(images::count)),
        ("/images/{id}", Method::GET, Read, web::get().to(images::get)),
        ("/images/{id}", Method::PATCH, Write, web::patch().to(images::patch)),
        ("/images/{id}", Method::DELETE, Write, web::delete().to(images::delete)),
        ("/images/{id}/thumbnail", Method::GET, Read, web::get().to(images::thumbnail)),
        ("/images/{id}/similar", Method::POST, Read, web::post().to(search::similar)),
        ("/stats", Method::GET, Read, web::get().to(health::stats)),
    ]
}

/// The routes of the server as a whole.
fn server_routes() -> Vec<RouteEntry> {
    use Access::{Open, Read, Write};
    vec![
        ("/docs", Method::GET, Open, web::get().to(page::docs)),
        ("/collections", Method::GET, Read, web::get().to(collections::list)),
        ("/collections", Method::POST, Write, web::post().to(collections::create)),
        (COLLECTION_PREFIX, Method::GET, Read, web::get().to(collections::get)),
        (COLLECTION_PREFIX, Method::DELETE, Write, web::delete().to(collections::drop)),
        ("/collections/{collection}/snapshots", Method::POST, Write, web::post().to(collections::snapshot)),
        ("/collections/{collection}/upgrade", Method::POST, Write, web::post().to(collections::upgrade)),
        ("/collections/{collection}/upgrade", Method::GET, Read, web::get().to(collections::upgrade_status)),
        ("/collections/{collection}/upgrade", Method::DELETE, Write, web::delete().to(collections::discard)),
        ("/collections/{collection}/upgrade/swap", Method::POST, Write, web::post().to(collections::swap)),
        ("/collections/{collection}/upgrade/report", Method::GET, Read, web::get().to(collections::report)),
        ("/collections/{collection}/upgrade/report.png", Method::GET, Read, web::get().to(collections::report_png)),
        ("/healthz", Method::GET, Open, web::get().to(health::healthz)),
        ("/readyz", Method::GET, Open, web::get().to(health::readyz)),
        ("/metrics", Method::GET, Read, web::get().to(health::metrics)),
        ("/openapi.json", Method::GET, Open, web::get().to(openapi::openapi)),
    ]
}

/// Every route: path pattern, method, handler. The one list the app is built from and
/// the OpenAPI document is checked against.
fn routes() -> Vec<(String, Method, Access, actix_web::Route)> {
    let plain = collection_routes().into_iter().map(|(p, m, a, r)| (p.to_string(), m, a, r));
    let prefixed = collection_routes().into_iter().map(|(p, m, a, r)| (format!("{COLLECTION_PREFIX}{p}"), m, a, r));
    let server = server_routes().into_iter().map(|(p, m, a, r)| (p.to_string(), m, a, r));
    server.chain(plain).chain(prefixed).collect()
}

/// The paths of [`collection_routes`] (each also served under [`COLLECTION_PREFIX`]).
pub fn collection_paths() -> Vec<&'static str> {
    let mut paths: Vec<&'static str> = collection_routes().into_iter().map(|(p, _, _, _)| p).collect();
    paths.dedup();
    paths
}

/// `(method, path pattern)` of every route the server answers, in registration order.
pub fn route_list() -> Vec<(String, String)> {
    routes().into_iter().map(|(path, method, _, _)| (method.to_string(), path)).collect()
}

/// The access of every route, by method and path pattern.
fn access_map() -> HashMap<(Method, String), Access> {
    routes().into_iter().map(|(path, method, access, _)| ((method, path), access)).collect()
}

/// Registers every route, the extractor error handlers and the JSON 404.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::QueryConfig::default().error_handler(error::query_error))
        .app_data(web::PathConfig::default().error_handler(error::path_error));
    for (path, _, _, route) in routes() {
        cfg.route(&path, route);
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
    let cors_origins = std::sync::Arc::new(state.settings.cors_origins.clone());
    let access = Arc::new(access_map());
    let settings = state.settings.clone();
    let limiter = state.limiter.clone();
    let in_flight = state.in_flight.clone();
    actix_web::App::new()
        .app_data(state)
        .configure(configure)
        // Innermost: each route's access, then the client's rate, then a place among the
        // requests in flight, checked before its handler runs (unknown routes and methods
        // go on to their JSON 404 / 405).
        .wrap_fn(move |req, srv| {
            let pattern = req.match_pattern();
            // Monitoring answers under any load: /metrics takes no place.
            let monitoring = pattern.as_deref() == Some("/metrics");
            let needed = pattern.and_then(|p| access.get(&(req.method().clone(), p)).copied());
            let counted = needed.is_some_and(|a| a != Access::Open) && !monitoring;
            // A request with a body takes its place once the body has come (see
            // `limit::place_when_complete`); one without, at once.
            let headers = req.headers();
            let has_body = headers.contains_key(TRANSFER_ENCODING)
                || headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim() != "0");
            let mut slot = None;
            let refused = needed.and_then(|a| auth::check(req.request(), a, &settings).err()).or_else(|| {
                // Health checks and the page are not counted: only the API's reads and changes.
                let limiter = limiter.as_ref().filter(|_| needed.is_some_and(|a| a != Access::Open))?;
                let wait = limiter.take(&limit::client_of(&req), Instant::now()).err()?;
                Some(crate::Error::RateLimited {
                    per_second: settings.rate_limit.per_second,
                    retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u64,
                })
            });
            let refused = refused.or_else(|| {
                if !counted || has_body {
                    return None;
                }
                slot = in_flight.enter();
                slot.is_none().then(|| crate::Error::Overloaded { limit: in_flight.limit() })
            });
            let body_place = (counted && has_body).then(|| Arc::new(limit::BodyPlace::default()));
            let (early, fut) = match refused {
                Some(e) => (Some(req.error_response(e)), None),
                None => {
                    let mut req = req;
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(settings.http.body_timeout_s);
                    let mut payload = limit::with_deadline(req.take_payload(), deadline);
                    if let Some(place) = &body_place {
                        payload = limit::place_when_complete(payload, in_flight.clone(), place.clone());
                    }
                    req.set_payload(payload);
                    (None, Some(srv.call(req)))
                }
            };
            let limit = in_flight.limit();
            async move {
                let _slot = slot;
                let res = match early {
                    Some(res) => return Ok(res.map_into_right_body()),
                    None => fut.expect("called when not refused").await?,
                };
                // The place the body took (if any) is given back when the answer is made.
                if body_place.is_some_and(|p| p.release()) {
                    // The body came when every place was taken: 503, whatever the handler
                    // made of the body's error.
                    let (request, _) = res.into_parts();
                    let answer = actix_web::ResponseError::error_response(&crate::Error::Overloaded { limit });
                    return Ok(ServiceResponse::new(request, answer).map_into_right_body());
                }
                Ok(res.map_into_left_body())
            }
        })
        .wrap_fn(move |req, srv| {
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
        // Outermost: an allowed origin's preflight is answered before routing.
        .wrap_fn(move |req, srv| {
            let origin = cors::allowed_origin(&cors_origins, req.headers());
            let (early, fut) = match &origin {
                Some(o) if cors::is_preflight(req.method(), req.headers()) => {
                    (Some(req.into_response(cors::preflight(o.clone()))), None)
                }
                _ => (None, Some(srv.call(req))),
            };
            async move {
                if let Some(res) = early {
                    return Ok(res.map_into_right_body());
                }
                let mut res = fut.expect("called when not answered early").await?;
                if let Some(o) = origin {
                    cors::allow(res.headers_mut(), o);
                }
                Ok(res.map_into_left_body())
            }
        })
}
