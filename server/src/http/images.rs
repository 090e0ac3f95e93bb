//! `/images`: add images (one or many), read one, fetch its thumbnail, change its
//! metadata, delete it; list, scroll and count them with a filter.

use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::body::{self, Upload};
use super::{AppState, ItemId};
use crate::collections::Collection;
use crate::filter::Filter;
use crate::gallery::{validate_id, NewImage};
use crate::{Error, Result};

/// Query string of `POST /images` with a raw image body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddParams {
    pub id: Option<String>,
    /// JSON text.
    pub metadata: Option<String>,
}

/// One JSON item: a precomputed vector.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorItem {
    pub id: Option<String>,
    #[serde(default)]
    pub metadata: serde_json::Value,
    pub vector: Vec<f32>,
}

impl VectorItem {
    /// The item to insert (no content hash, thumbnail or original: there is no file).
    pub fn into_new_image(self) -> NewImage {
        NewImage {
            id: self.id,
            metadata: self.metadata,
            content_hash: None,
            vector: self.vector,
            thumbnail: None,
            original: None,
        }
    }
}

/// JSON body of `POST /images`: one item or `{"images": [...]}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum VectorBody {
    Many { images: Vec<VectorItem> },
    One(VectorItem),
}

/// Query string of `GET /images/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetParams {
    /// Include the stored vector.
    #[serde(default)]
    pub vector: bool,
}

/// Answer of `POST /images`.
#[derive(Debug, Serialize)]
pub struct Added {
    pub ids: Vec<String>,
    pub embed_ms: f64,
    pub total_ms: f64,
}

/// An uploaded image waiting to be embedded.
pub struct Pending {
    pub id: Option<String>,
    pub metadata: serde_json::Value,
    pub bytes: web::Bytes,
}

/// The `metadata` of a query string or multipart field: JSON text (an empty object when absent).
pub fn parse_metadata(text: Option<&str>) -> Result<serde_json::Value> {
    match text {
        None => Ok(serde_json::Value::Object(Default::default())),
        Some(t) => serde_json::from_str(t).map_err(|e| Error::BadRequest(format!("metadata is not valid JSON: {e}"))),
    }
}

/// Pairs the i-th `id` and `metadata` fields with the i-th file field.
pub fn from_multipart(parts: Vec<body::Part>) -> Result<Vec<Pending>> {
    let mut files = Vec::new();
    let mut ids = Vec::new();
    let mut metas = Vec::new();
    for p in parts {
        if p.is_file() {
            files.push(p.data);
        } else if p.name == "id" {
            ids.push(p.text()?.to_string());
        } else if p.name == "metadata" {
            metas.push(parse_metadata(Some(p.text()?))?);
        } else {
            return Err(Error::BadRequest(format!(
                "unexpected multipart field `{}`; expected image files, `id` and `metadata`",
                p.name
            )));
        }
    }
    if files.is_empty() {
        return Err(Error::BadRequest("the multipart body has no image file field".into()));
    }
    if ids.len() > files.len() || metas.len() > files.len() {
        return Err(Error::BadRequest(format!(
            "{} images but {} ids and {} metadata fields",
            files.len(),
            ids.len(),
            metas.len()
        )));
    }
    let mut ids = ids.into_iter();
    let mut metas = metas.into_iter();
    Ok(files
        .into_iter()
        .map(|bytes| Pending {
            id: ids.next(),
            metadata: metas.next().unwrap_or_else(|| serde_json::Value::Object(Default::default())),
            bytes,
        })
        .collect())
}

/// `POST /images`
pub async fn add(
    req: HttpRequest,
    state: web::Data<AppState>,
    params: web::Query<AddParams>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let col = state.collection(&req)?;
    let started = Instant::now();
    let upload = body::read(req.headers(), payload, state.settings.max_upload_bytes).await?;
    let params = params.into_inner();
    if !matches!(upload, Upload::Image(_)) && (params.id.is_some() || params.metadata.is_some()) {
        return Err(Error::BadRequest("`id` and `metadata` query parameters go with a raw image body only".into()));
    }
    let mut embed_ms = 0.0;
    let images: Vec<NewImage> = match upload {
        Upload::Json(b) => {
            let items = match body::json::<VectorBody>(&b)? {
                VectorBody::Many { images } => images,
                VectorBody::One(item) => vec![item],
            };
            items.into_iter().map(VectorItem::into_new_image).collect()
        }
        Upload::Image(bytes) => {
            let pending = vec![Pending { id: params.id, metadata: parse_metadata(params.metadata.as_deref())?, bytes }];
            embed_all(&col, pending, &mut embed_ms).await?
        }
        Upload::Multipart(parts) => embed_all(&col, from_multipart(parts)?, &mut embed_ms).await?,
    };
    if images.is_empty() {
        return Err(Error::BadRequest("no images given".into()));
    }
    let gallery = col.gallery.clone();
    let ids = web::block(move || gallery.insert(images)).await.map_err(|_| Error::Unavailable)??;
    Ok(HttpResponse::Created().json(Added { ids, embed_ms, total_ms: started.elapsed().as_secs_f64() * 1e3 }))
}

async fn embed_all(col: &Collection, pending: Vec<Pending>, embed_ms: &mut f64) -> Result<Vec<NewImage>> {
    for p in &pending {
        if let Some(id) = &p.id {
            validate_id(id)?;
        }
    }
    let started = Instant::now();
    let embedded =
        futures_util::future::try_join_all(pending.iter().map(|p| col.embedder.embed_bytes(p.bytes.clone(), true)))
            .await?;
    *embed_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(pending
        .into_iter()
        .zip(embedded)
        .map(|(p, e)| NewImage {
            id: p.id,
            metadata: p.metadata,
            content_hash: Some(contract::sha256_hex(&p.bytes)),
            vector: e.vector,
            thumbnail: e.thumbnail,
            original: col.keep_originals.then(|| p.bytes.to_vec()),
        })
        .collect())
}

/// `GET /images/{id}`
pub async fn get(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: ItemId,
    params: web::Query<GetParams>,
) -> Result<HttpResponse> {
    let id = id.into_inner();
    let gallery = state.collection(&req)?.gallery.clone();
    let want_vector = params.vector;
    let lookup = id.clone();
    let (record, vector) = web::block(move || -> Result<_> {
        let record = gallery.get(&lookup)?;
        let vector = if want_vector && record.is_some() { gallery.vector(&lookup)? } else { None };
        Ok((record, vector))
    })
    .await
    .map_err(|_| Error::Unavailable)??;
    let record = record.ok_or(Error::NotFound { id })?;
    let mut body = json!({ "id": record.id, "metadata": record.metadata, "content_hash": record.content_hash });
    if let Some(v) = vector {
        body["vector"] = json!(v);
    }
    Ok(HttpResponse::Ok().json(body))
}

/// `GET /images/{id}/thumbnail`: a small JPEG (or a small PNG kept as it was), for result
/// pages.
pub async fn thumbnail(req: HttpRequest, state: web::Data<AppState>, id: ItemId) -> Result<HttpResponse> {
    let id = id.into_inner();
    let gallery = state.collection(&req)?.gallery.clone();
    let lookup = id.clone();
    let thumb = web::block(move || gallery.thumbnail(&lookup)).await.map_err(|_| Error::Unavailable)??;
    let thumb = thumb.ok_or(Error::NotFound { id })?;
    // A kept file is the uploader's bytes: browsers are told not to read them as anything
    // but the image type they decoded as.
    Ok(HttpResponse::Ok()
        .content_type(crate::embed::thumbnail_media_type(&thumb))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Cache-Control", "max-age=3600"))
        .body(thumb))
}

/// `DELETE /images/{id}`
pub async fn delete(req: HttpRequest, state: web::Data<AppState>, id: ItemId) -> Result<HttpResponse> {
    let id = id.into_inner();
    let gallery = state.collection(&req)?.gallery.clone();
    let lookup = id.clone();
    let deleted = web::block(move || gallery.delete(&lookup)).await.map_err(|_| Error::Unavailable)??;
    if !deleted {
        return Err(Error::NotFound { id });
    }
    Ok(HttpResponse::Ok().json(json!({ "deleted": id })))
}

/// Most items in one page of a listing.
pub const MAX_PAGE: usize = 1000;

/// Query string of `GET /images`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// A filter, in the query-string form or as JSON text.
    pub filter: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Items per page (default 100).
    pub limit: Option<usize>,
}

/// JSON body of `POST /images/scroll` and `POST /images/count`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrollBody {
    /// An object in the JSON form, or a string in the query-string form.
    pub filter: Option<serde_json::Value>,
    pub cursor: Option<String>,
    pub limit: Option<usize>,
}

/// JSON body of `PATCH /images/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchBody {
    /// Merged into the stored metadata (RFC 7396: `null` removes a key).
    pub metadata: serde_json::Value,
}

/// A listing's arguments, checked.
pub fn page_args(
    filter: Option<Filter>,
    cursor: Option<String>,
    limit: Option<usize>,
) -> Result<(Option<Filter>, Option<String>, usize)> {
    let limit = limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(Error::BadRequest(format!("limit = {limit} is out of range; expected 1 ..= {MAX_PAGE}")));
    }
    if let Some(c) = &cursor {
        validate_id(c).map_err(|_| Error::BadRequest("cursor is not a `next_cursor` this server gave".into()))?;
    }
    Ok((filter, cursor, limit))
}

async fn page(col: &Collection, filter: Option<Filter>, cursor: Option<String>, limit: usize) -> Result<HttpResponse> {
    let gallery = col.gallery.clone();
    let page = web::block(move || gallery.list(filter.as_ref(), cursor.as_deref(), limit))
        .await
        .map_err(|_| Error::Unavailable)??;
    Ok(HttpResponse::Ok().json(page))
}

/// `GET /images?filter=label:shoe&limit=100&cursor=...`: items in id order.
pub async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
    params: web::Query<ListParams>,
) -> Result<HttpResponse> {
    let params = params.into_inner();
    let filter = params.filter.as_deref().map(Filter::parse).transpose()?;
    let (filter, cursor, limit) = page_args(filter, params.cursor, params.limit)?;
    page(&*state.collection(&req)?, filter, cursor, limit).await
}

/// `POST /images/scroll`: the listing with a JSON body `{"filter", "cursor", "limit"}`.
pub async fn scroll(req: HttpRequest, state: web::Data<AppState>, body: web::Bytes) -> Result<HttpResponse> {
    let b: ScrollBody = if body.is_empty() { ScrollBody::default() } else { body::json(&body)? };
    let filter = b.filter.as_ref().map(Filter::from_value).transpose()?;
    let (filter, cursor, limit) = page_args(filter, b.cursor, b.limit)?;
    page(&*state.collection(&req)?, filter, cursor, limit).await
}

/// `POST /images/count`: how many items a filter (JSON body `{"filter"}`, or none) passes.
pub async fn count(req: HttpRequest, state: web::Data<AppState>, body: web::Bytes) -> Result<HttpResponse> {
    let b: ScrollBody = if body.is_empty() { ScrollBody::default() } else { body::json(&body)? };
    if b.cursor.is_some() || b.limit.is_some() {
        return Err(Error::BadRequest("count takes only `filter`".into()));
    }
    let filter = b.filter.as_ref().map(Filter::from_value).transpose()?;
    let gallery = state.collection(&req)?.gallery.clone();
    let n = web::block(move || gallery.count(filter.as_ref())).await.map_err(|_| Error::Unavailable)??;
    Ok(HttpResponse::Ok().json(json!({ "count": n })))
}

/// `PATCH /images/{id}`: JSON `{"metadata": {...}}` merged into the stored metadata.
pub async fn patch(req: HttpRequest, state: web::Data<AppState>, id: ItemId, body: web::Bytes) -> Result<HttpResponse> {
    let b: PatchBody = body::json(&body)?;
    if !b.metadata.is_object() {
        return Err(Error::BadRequest("`metadata` must be a JSON object of the keys to set (null removes one)".into()));
    }
    let id = id.into_inner();
    let gallery = state.collection(&req)?.gallery.clone();
    let lookup = id.clone();
    let record =
        web::block(move || gallery.patch_metadata(&lookup, &b.metadata)).await.map_err(|_| Error::Unavailable)??;
    let record = record.ok_or(Error::NotFound { id })?;
    Ok(HttpResponse::Ok()
        .json(json!({ "id": record.id, "metadata": record.metadata, "content_hash": record.content_hash })))
}
