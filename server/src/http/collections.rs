//! `/collections`: list, create (behind the API key), describe and drop collections.

use std::path::PathBuf;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::auth::require_key;
use super::{body, AppState};
use crate::{Error, Result};

/// JSON body of `POST /collections`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    pub name: String,
    /// Path of the ONNX model on the server; it is copied into the collection.
    pub model: PathBuf,
}

/// `GET /collections`
pub async fn list(state: web::Data<AppState>) -> HttpResponse {
    let all: Vec<_> = state.collections.all().iter().map(|c| c.info()).collect();
    HttpResponse::Ok().json(json!({ "collections": all }))
}

/// `POST /collections`: `{"name": "birds", "model": "/models/birds.onnx"}`.
pub async fn create(req: HttpRequest, state: web::Data<AppState>, body: web::Bytes) -> Result<HttpResponse> {
    require_key(&req, state.settings.api_key.as_deref())?;
    let b: CreateBody = body::json(&body)?;
    let collections = state.collections.clone();
    let created = web::block(move || collections.create(&b.name, &b.model)).await.map_err(|_| Error::Unavailable)??;
    Ok(HttpResponse::Created().json(created.info()))
}

/// `GET /collections/{collection}`
pub async fn get(state: web::Data<AppState>, name: web::Path<String>) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(state.collections.get(&name)?.info()))
}

/// `DELETE /collections/{collection}`: drops an API-created collection and its files.
pub async fn drop(req: HttpRequest, state: web::Data<AppState>, name: web::Path<String>) -> Result<HttpResponse> {
    require_key(&req, state.settings.api_key.as_deref())?;
    let name = name.into_inner();
    let collections = state.collections.clone();
    let lookup = name.clone();
    let dropped = web::block(move || collections.drop_collection(&lookup)).await.map_err(|_| Error::Unavailable)??;
    if !dropped {
        return Err(Error::CollectionNotFound { name });
    }
    Ok(HttpResponse::Ok().json(json!({ "dropped": name })))
}
