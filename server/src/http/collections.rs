//! `/collections`: list, create (from a model or a snapshot) and drop collections, and
//! write snapshots; changes are behind the API key.

use std::path::PathBuf;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::auth::paths_asked;
use super::{body, AppState};
use crate::collections::Source;
use crate::{Error, Result};

/// JSON body of `POST /collections`: a name and one of `model` or `snapshot`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    pub name: String,
    /// Path of an ONNX model on the server; it is copied into the collection.
    pub model: Option<PathBuf>,
    /// Path of a snapshot on the server; the collection is restored from it.
    pub snapshot: Option<PathBuf>,
    /// Keep uploaded files to re-embed them later (default: the server's setting).
    pub keep_originals: Option<bool>,
}

/// `GET /collections`
pub async fn list(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse> {
    let paths = paths_asked(&req, state.settings.api_key.as_deref())?;
    let all: Vec<_> = state.collections.all().iter().map(|c| c.info(paths)).collect();
    Ok(HttpResponse::Ok().json(json!({ "collections": all })))
}

/// `POST /collections`: `{"name": "birds", "model": "/models/birds.onnx"}`.
pub async fn create(state: web::Data<AppState>, body: web::Bytes) -> Result<HttpResponse> {
    let b: CreateBody = body::json(&body)?;
    let collections = state.collections.clone();
    let created = web::block(move || {
        let source = match (&b.model, &b.snapshot) {
            (Some(m), None) => Source::Model(m),
            (None, Some(s)) => Source::Snapshot(s),
            _ => {
                return Err(Error::InvalidCollection {
                    name: b.name.clone(),
                    reason: "give `model` (a new, empty collection) or `snapshot` (restore one), not both".into(),
                })
            }
        };
        collections.create(&b.name, source, b.keep_originals)
    })
    .await
    .map_err(|_| Error::Unavailable)??;
    Ok(HttpResponse::Created().json(created.info(false)))
}

/// `POST /collections/{collection}/snapshots`: writes a snapshot file on the server.
pub async fn snapshot(state: web::Data<AppState>, name: web::Path<String>) -> Result<HttpResponse> {
    let collections = state.collections.clone();
    let (file, header) = web::block(move || collections.snapshot(&name)).await.map_err(|_| Error::Unavailable)??;
    let bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    Ok(HttpResponse::Created().json(json!({ "file": file, "bytes": bytes, "snapshot": header })))
}

/// `GET /collections/{collection}`
pub async fn get(req: HttpRequest, state: web::Data<AppState>, name: web::Path<String>) -> Result<HttpResponse> {
    let paths = paths_asked(&req, state.settings.api_key.as_deref())?;
    Ok(HttpResponse::Ok().json(state.collections.get(&name)?.info(paths)))
}

/// `DELETE /collections/{collection}`: drops an API-created collection and its files.
pub async fn drop(state: web::Data<AppState>, name: web::Path<String>) -> Result<HttpResponse> {
    let name = name.into_inner();
    let collections = state.collections.clone();
    let lookup = name.clone();
    let dropped = web::block(move || collections.drop_collection(&lookup)).await.map_err(|_| Error::Unavailable)??;
    if !dropped {
        return Err(Error::CollectionNotFound { name });
    }
    Ok(HttpResponse::Ok().json(json!({ "dropped": name })))
}

/// JSON body of `POST /collections/{collection}/upgrade`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeBody {
    /// Path of the new ONNX model on the server.
    pub model: PathBuf,
    /// Leave out items whose source file is missing or unreadable, instead of failing.
    #[serde(default)]
    pub skip_unreadable: bool,
    /// Swap as soon as it is built (default); `false` stops at `ready`, to look at the
    /// comparison first (`GET .../upgrade/report`), then `POST .../upgrade/swap` or
    /// `DELETE .../upgrade`.
    #[serde(default = "yes")]
    pub swap: bool,
}

fn yes() -> bool {
    true
}

/// `POST /collections/{collection}/upgrade`: starts re-embedding with a new model;
/// `202 Accepted`, then follow `GET` on the same path.
pub async fn upgrade(state: web::Data<AppState>, name: web::Path<String>, body: web::Bytes) -> Result<HttpResponse> {
    let b: UpgradeBody = body::json(&body)?;
    let name = name.into_inner();
    state.collections.start_upgrade(
        &name,
        crate::upgrade::Request { model: b.model, skip_unreadable: b.skip_unreadable, swap: b.swap },
    )?;
    let status = state.collections.upgrade_status(&name);
    Ok(HttpResponse::Accepted().json(json!({ "collection": name, "upgrade": status })))
}

/// `GET /collections/{collection}/upgrade`: the last upgrade's state.
pub async fn upgrade_status(state: web::Data<AppState>, name: web::Path<String>) -> Result<HttpResponse> {
    let name = name.into_inner();
    state.collections.get(&name)?;
    let status = state.collections.upgrade_status(&name);
    Ok(HttpResponse::Ok().json(json!({ "collection": name, "upgrade": status })))
}

/// `POST /collections/{collection}/upgrade/swap`: swaps a ready upgrade in.
pub async fn swap(state: web::Data<AppState>, name: web::Path<String>) -> Result<HttpResponse> {
    let name = name.into_inner();
    let collections = state.collections.clone();
    let lookup = name.clone();
    web::block(move || collections.swap(&lookup)).await.map_err(|_| Error::Unavailable)??;
    Ok(HttpResponse::Ok().json(json!({ "collection": name, "upgrade": state.collections.upgrade_status(&name) })))
}

/// `DELETE /collections/{collection}/upgrade`: throws a ready upgrade away.
pub async fn discard(state: web::Data<AppState>, name: web::Path<String>) -> Result<HttpResponse> {
    let name = name.into_inner();
    let collections = state.collections.clone();
    let lookup = name.clone();
    web::block(move || collections.discard(&lookup)).await.map_err(|_| Error::Unavailable)??;
    Ok(HttpResponse::Ok().json(json!({ "collection": name, "upgrade": state.collections.upgrade_status(&name) })))
}

/// The folder of the last upgrade's comparison files.
fn report_dir(state: &AppState, name: &str) -> Result<PathBuf> {
    state.collections.get(name)?;
    match state.collections.upgrade_status(name) {
        Some(crate::upgrade::Status::Ready { summary, .. } | crate::upgrade::Status::Done { summary, .. }) => {
            Ok(summary.dir)
        }
        _ => Err(Error::BadRequest(format!("collection `{name}` has no built upgrade to compare; start one first"))),
    }
}

/// `GET /collections/{collection}/upgrade/report`: the comparison page.
pub async fn report(state: web::Data<AppState>, name: web::Path<String>) -> Result<HttpResponse> {
    let dir = report_dir(&state, &name)?;
    let path = dir.join(crate::upgrade::REPORT_JSON);
    let bytes = std::fs::read(&path).map_err(Error::io(&path))?;
    let report: crate::compare::Report =
        serde_json::from_slice(&bytes).map_err(|e| Error::Store { path: path.clone(), reason: e.to_string() })?;
    let page = crate::compare::page(&name, &report, &format!("/collections/{name}/upgrade/report.png"));
    Ok(HttpResponse::Ok().content_type("text/html; charset=utf-8").body(page))
}

/// `GET /collections/{collection}/upgrade/report.png`: the comparison picture.
pub async fn report_png(state: web::Data<AppState>, name: web::Path<String>) -> Result<HttpResponse> {
    let dir = report_dir(&state, &name)?;
    let path = dir.join(crate::upgrade::REPORT_PNG);
    let bytes = std::fs::read(&path).map_err(Error::io(&path))?;
    Ok(HttpResponse::Ok().content_type("image/png").body(bytes))
}
