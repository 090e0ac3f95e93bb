//! `GET /`: the search page, and `GET /docs`: the API reference rendered from
//! `/openapi.json`. Static HTML files compiled into the binary (no CDN, nothing fetched
//! from elsewhere).

use actix_web::HttpResponse;

const PAGE: &str = include_str!("index.html");
const DOCS: &str = include_str!("docs.html");

/// `GET /`
pub async fn page() -> HttpResponse {
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(PAGE)
}

/// `GET /docs`
pub async fn docs() -> HttpResponse {
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(DOCS)
}
