//! `GET /`: the search page, one static HTML file compiled into the binary. It posts the
//! dropped image to `/search` and shows thumbnails from `/images/{id}/thumbnail`.

use actix_web::HttpResponse;

const PAGE: &str = include_str!("index.html");

/// `GET /`
pub async fn page() -> HttpResponse {
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(PAGE)
}
