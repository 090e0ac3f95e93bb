//! `GET /openapi.json`: the API described in OpenAPI 3. A test checks that it describes
//! exactly the routes of [`super::route_list`].

use actix_web::HttpResponse;
use serde_json::{json, Value};

use super::images::MAX_PAGE;
use super::search::{MAX_BATCH, MAX_DEPTH, MAX_EF};
use super::{collection_paths, COLLECTION_PREFIX};

fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn error_response(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema("Error") } } })
}

fn json_response(description: &str, body: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": body } } })
}

fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "description": description, "schema": schema })
}

/// The options every search takes in its query string.
fn search_params() -> Vec<Value> {
    vec![
        query("k", "Hits wanted", json!({ "type": "integer", "minimum": 1, "default": 10 })),
        query(
            "offset",
            &format!("Hits to skip, for paging (offset + k <= {MAX_DEPTH})"),
            json!({ "type": "integer", "minimum": 0, "default": 0 }),
        ),
        query(
            "ef",
            "HNSW search breadth (default from the settings)",
            json!({ "type": "integer", "minimum": 1, "maximum": MAX_EF }),
        ),
        query("max_distance", "Only hits at most this far from the query", json!({ "type": "number", "minimum": 0 })),
        query("filter", "A filter: query-string form `label:shoe,year>2020` or JSON text", json!({ "type": "string" })),
        query(
            "rerank",
            "Re-rank the nearest candidates by STML's contextual similarity (k-reciprocal neighbourhoods); hits then carry `score`",
            json!({ "type": "boolean", "default": false }),
        ),
        query(
            "rerank_depth",
            "Candidates re-ranked (default 50, or offset + k if more)",
            json!({ "type": "integer", "minimum": 2, "maximum": crate::rerank::MAX_DEPTH, "default": crate::rerank::DEFAULT_DEPTH }),
        ),
        query(
            "rerank_k",
            "Neighbourhood size of the contextual similarity (at most rerank_depth)",
            json!({ "type": "integer", "minimum": 1, "default": crate::rerank::DEFAULT_K }),
        ),
        query(
            "rerank_weight",
            "Weight w of the contextual term: score (W_P + w W_C) / (1 + w); 1 is STML's pseudo label",
            json!({ "type": "number", "minimum": 0, "default": crate::rerank::DEFAULT_WEIGHT }),
        ),
    ]
}

/// The OpenAPI document: the paths below, and each collection route again under
/// [`COLLECTION_PREFIX`] with its `collection` parameter.
pub fn document() -> Value {
    let mut doc = base_document();
    let collection_param = json!({ "name": "collection", "in": "path", "required": true,
        "description": "A collection's name (the routes without the prefix use `default`)",
        "schema": { "type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,63}$" } });
    let paths = doc["paths"].as_object_mut().expect("paths is an object");
    for path in collection_paths() {
        let Some(ops) = paths.get(path).cloned() else { continue };
        let mut ops = ops;
        for op in ops.as_object_mut().expect("operations").values_mut() {
            let params = op.as_object_mut().expect("an operation").entry("parameters").or_insert(json!([]));
            params.as_array_mut().expect("parameters are a list").insert(0, collection_param.clone());
        }
        paths.insert(format!("{COLLECTION_PREFIX}{path}"), ops);
    }
    doc
}

fn base_document() -> Value {
    let id_param = json!({ "name": "id", "in": "path", "required": true,
        "schema": { "type": "string", "pattern": "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$" } });
    let image = json!({ "schema": { "type": "string", "format": "binary" } });
    let key = json!([ { "bearer": [] } ]);
    let (key_create, key_drop, key_snap) = (key.clone(), key.clone(), key.clone());
    let collection_name =
        json!({ "name": "collection", "in": "path", "required": true, "schema": { "type": "string" } });
    let collection_name_snap = collection_name.clone();
    let collection_name_up = collection_name.clone();
    let key_upgrade = key.clone();
    let similar_params: Vec<Value> = std::iter::once(id_param.clone()).chain(search_params()).collect();
    let searched = json!({
        "200": json_response("Hits, nearest first", schema("SearchResponse")),
        "400": error_response("Bad input: not an image, k, offset or filter out of range, malformed JSON, wrong dimension"),
        "404": error_response("Unknown id"),
        "413": error_response("Upload or image too large"),
        "415": error_response("Unsupported content type") });
    json!({
        "openapi": "3.0.3",
        "info": { "title": "stml-search server", "version": env!("CARGO_PKG_VERSION"),
                  "description": "Image similarity search: embed images with a self-taught (STML) model, search them with HNSW, filter on metadata." },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer",
                "description": "Writes (POST /images, PATCH and DELETE /images/{id}) need the server's API key when one is set" } },
            "schemas": {
                "Error": { "type": "object", "properties": { "error": { "type": "object", "properties": {
                    "code": { "type": "string" }, "message": { "type": "string", "description": "What was wrong and how to fix it" } } } } },
                "Hit": { "type": "object", "properties": {
                    "id": { "type": "string" }, "distance": { "type": "number" }, "metadata": { "type": "object" },
                    "score": { "type": "number", "description": "With rerank: the contextual score the hits are ordered by" } } },
                "Filter": {
                    "description": "Conditions on metadata keys (dotted paths), as in Qdrant. A condition is {key, match: value | {value} | {any: [...]}}, {key, range: {gt, gte, lt, lte}}, {key, exists: bool}, or a nested filter. Arrays match when any element does; text equals the number it spells. A string is read in the query-string form: terms `key:v`, `key:a|b`, `key>n`, `key>=n`, `key<n`, `key<=n`, `key?`, each negated by a leading `!`, joined by commas (and).",
                    "oneOf": [ { "type": "string" }, { "type": "object", "properties": {
                        "must": { "type": "array", "items": { "type": "object" }, "description": "All hold" },
                        "should": { "type": "array", "items": { "type": "object" }, "description": "At least one holds" },
                        "must_not": { "type": "array", "items": { "type": "object" }, "description": "None holds" } } } ] },
                "Query": { "type": "object", "description": "One search: `vector` or `id` (more like a stored item, left out of its hits), and options over the query string's",
                    "properties": {
                        "vector": { "type": "array", "items": { "type": "number" } },
                        "id": { "type": "string" },
                        "k": { "type": "integer", "minimum": 1 }, "offset": { "type": "integer", "minimum": 0 },
                        "ef": { "type": "integer", "minimum": 1 }, "max_distance": { "type": "number", "minimum": 0 },
                        "filter": schema("Filter"), "rerank": { "type": "boolean" },
                        "rerank_depth": { "type": "integer", "minimum": 2 }, "rerank_k": { "type": "integer", "minimum": 1 },
                        "rerank_weight": { "type": "number", "minimum": 0 } } },
                "Results": { "type": "object", "properties": {
                    "hits": { "type": "array", "items": schema("Hit") },
                    "k": { "type": "integer" }, "offset": { "type": "integer" }, "ef": { "type": "integer", "nullable": true },
                    "next_offset": { "type": "integer", "nullable": true, "description": "Offset of the next page; null when this page is not full" },
                    "strategy": { "type": "string", "enum": ["index", "filtered_index", "filtered_index_then_scan", "scan"],
                                  "description": "How the hits were found: the index alone, the graph walked with the filter, that walk topped up by a scan, or a scan of the items a selective filter passes" } } },
                "Timings": { "type": "object", "properties": {
                    "decode_ms": { "type": "number" }, "embed_ms": { "type": "number" },
                    "search_ms": { "type": "number" }, "total_ms": { "type": "number" } } },
                "SearchResponse": { "allOf": [ schema("Results"),
                    { "type": "object", "properties": { "timings": schema("Timings") } } ] },
                "Item": { "type": "object", "properties": { "id": { "type": "string" }, "metadata": { "type": "object" } } },
                "Record": { "type": "object", "properties": { "id": { "type": "string" }, "metadata": { "type": "object" },
                    "content_hash": { "type": "string", "nullable": true },
                    "vector": { "type": "array", "items": { "type": "number" }, "description": "With ?vector=true" } } },
                "Page": { "type": "object", "properties": {
                    "items": { "type": "array", "items": schema("Item") },
                    "next_cursor": { "type": "string", "nullable": true, "description": "Pass as `cursor` for the next page; null on the last" } } },
                "Scroll": { "type": "object", "properties": { "filter": schema("Filter"),
                    "cursor": { "type": "string" }, "limit": { "type": "integer", "minimum": 1, "maximum": MAX_PAGE } } },
                "Collection": { "type": "object", "properties": {
                    "name": { "type": "string" },
                    "origin": { "type": "string", "enum": ["default", "config", "api"], "description": "Only `api` collections can be dropped through the API" },
                    "model": { "type": "string", "description": "The model file on the server; only with `?paths=true` (and the API key where one is set)" }, "arch": { "type": "string" },
                    "index": { "type": "object", "description": "Images, graph points, tombstones, dimension, distance" } } },
                "Upgrade": { "type": "object", "properties": { "collection": { "type": "string" },
                    "upgrade": { "type": "object", "nullable": true, "properties": {
                        "state": { "type": "string", "enum": ["running", "ready", "done", "discarded", "failed"] },
                        "summary": { "type": "object", "description": "mean_overlap (share of the K nearest both models agree on), top1_changed, queries, recall (old, new) with labels" },
                        "done": { "type": "integer" }, "total": { "type": "integer" }, "items": { "type": "integer" },
                        "skipped": { "type": "integer" }, "model": { "type": "string" }, "message": { "type": "string" } } } } },
                "VectorItem": { "type": "object", "required": ["vector"], "properties": {
                    "id": { "type": "string" }, "metadata": { "type": "object" }, "vector": { "type": "array", "items": { "type": "number" } } } }
            }
        },
        "paths": {
            "/search": { "post": {
                "summary": "Nearest images to an uploaded image (raw or multipart), a vector, or a stored item (JSON)",
                "parameters": search_params(),
                "requestBody": { "required": true, "content": {
                    "image/*": image.clone(),
                    "application/octet-stream": image.clone(),
                    "multipart/form-data": { "schema": { "type": "object", "properties": { "image": { "type": "string", "format": "binary" } } } },
                    "application/json": { "schema": schema("Query") } } },
                "responses": searched.clone() } },
            "/search/batch": { "post": {
                "summary": format!("Up to {MAX_BATCH} searches in one request: JSON queries (each with its own options) or several uploaded images (the query string's options)"),
                "parameters": search_params(),
                "requestBody": { "required": true, "content": {
                    "multipart/form-data": { "schema": { "type": "object", "additionalProperties": { "type": "string", "format": "binary" } } },
                    "application/json": { "schema": { "type": "object", "required": ["searches"], "properties": {
                        "searches": { "type": "array", "items": schema("Query"), "maxItems": MAX_BATCH } } } } } },
                "responses": {
                    "200": json_response("One result per search, in order", json!({ "type": "object", "properties": {
                        "results": { "type": "array", "items": schema("Results") }, "timings": schema("Timings") } })),
                    "400": error_response("Bad input, naming the search (`searches[2]: ...`)"),
                    "404": error_response("Unknown id"),
                    "413": error_response("Upload or image too large"), "415": error_response("Unsupported content type") } } },
            "/images": {
                "post": {
                    "summary": "Add images (raw body with ?id=&metadata=, multipart with several images, or JSON vectors)",
                    "security": key.clone(),
                    "parameters": [
                        query("id", "Id of a raw-body image (default: a fresh random id)", json!({ "type": "string" })),
                        query("metadata", "Metadata of a raw-body image, as JSON text", json!({ "type": "string" })) ],
                    "requestBody": { "required": true, "content": {
                        "image/*": image.clone(),
                        "application/octet-stream": image,
                        "multipart/form-data": { "schema": { "type": "object", "properties": {
                            "image": { "type": "string", "format": "binary" }, "id": { "type": "string" },
                            "metadata": { "type": "string", "description": "JSON text, paired with the image of the same position" } } } },
                        "application/json": { "schema": { "oneOf": [ schema("VectorItem"),
                            { "type": "object", "properties": { "images": { "type": "array", "items": schema("VectorItem") } } } ] } } } },
                    "responses": {
                        "201": json_response("Stored (durably) and indexed", json!({ "type": "object", "properties": {
                            "ids": { "type": "array", "items": { "type": "string" } } } })),
                        "400": error_response("Bad input"), "401": error_response("Missing or wrong API key"),
                        "413": error_response("Too large"), "415": error_response("Unsupported content type") } },
                "get": {
                    "summary": "List images in id order, optionally filtered, one page at a time",
                    "parameters": [
                        query("filter", "A filter (query-string form or JSON text)", json!({ "type": "string" })),
                        query("cursor", "The previous page's next_cursor", json!({ "type": "string" })),
                        query("limit", "Items per page", json!({ "type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 100 })) ],
                    "responses": { "200": json_response("A page", schema("Page")), "400": error_response("Bad filter, cursor or limit") } } },
            "/images/scroll": { "post": {
                "summary": "The listing with a JSON body (filter in the JSON form)",
                "requestBody": { "content": { "application/json": { "schema": schema("Scroll") } } },
                "responses": { "200": json_response("A page", schema("Page")), "400": error_response("Bad filter, cursor or limit") } } },
            "/images/count": { "post": {
                "summary": "How many images a filter passes (all without one)",
                "requestBody": { "content": { "application/json": { "schema": { "type": "object", "properties": { "filter": schema("Filter") } } } } },
                "responses": { "200": json_response("The count", json!({ "type": "object", "properties": { "count": { "type": "integer" } } })),
                               "400": error_response("Bad filter") } } },
            "/images/{id}": {
                "get": { "summary": "An image's stored metadata (and vector with ?vector=true)",
                    "parameters": [ id_param.clone(), query("vector", "Include the stored vector", json!({ "type": "boolean" })) ],
                    "responses": { "200": json_response("The record", schema("Record")), "404": error_response("Unknown id") } },
                "patch": { "summary": "Change an image's metadata: {\"metadata\": {...}} merged in (JSON merge patch: null removes a key)",
                    "security": key.clone(), "parameters": [ id_param.clone() ],
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["metadata"],
                        "properties": { "metadata": { "type": "object" } } } } } },
                    "responses": { "200": json_response("The new record", schema("Record")), "400": error_response("Bad body"),
                                   "401": error_response("Missing or wrong API key"), "404": error_response("Unknown id") } },
                "delete": { "summary": "Delete an image", "security": key, "parameters": [ id_param.clone() ],
                    "responses": { "200": { "description": "Deleted" }, "401": error_response("Missing or wrong API key"),
                                   "404": error_response("Unknown id") } } },
            "/images/{id}/thumbnail": { "get": { "summary": "A small JPEG of the image (a small PNG or JPEG file is its own thumbnail)", "parameters": [ id_param ],
                "responses": { "200": { "description": "JPEG or PNG", "content": { "image/jpeg": {}, "image/png": {} } }, "404": error_response("Unknown id") } } },
            "/images/{id}/similar": { "post": {
                "summary": "More like a stored image (the image itself left out); options in the query string or an optional JSON body",
                "parameters": similar_params,
                "requestBody": { "content": { "application/json": { "schema": schema("Query") } } },
                "responses": searched } },
            "/collections": {
                "get": { "summary": "Every collection", "responses": { "200": json_response("The collections",
                    json!({ "type": "object", "properties": { "collections": { "type": "array", "items": schema("Collection") } } })) } },
                "post": { "summary": "Create a collection for a model file on the server (copied into the collection)",
                    "security": key_create,
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object",
                        "required": ["name"], "description": "`model` (a new, empty collection) or `snapshot` (restore one)",
                        "properties": { "name": { "type": "string" }, "model": { "type": "string", "description": "Path of an ONNX model on the server" },
                            "snapshot": { "type": "string", "description": "Path of a snapshot file on the server" } } } } } },
                    "responses": { "201": json_response("Created", schema("Collection")),
                        "400": error_response("Bad name or model"), "401": error_response("Missing or wrong API key"),
                        "409": error_response("The name is taken") } } },
            "/collections/{collection}": {
                "get": { "summary": "One collection", "parameters": [ collection_name.clone() ],
                    "responses": { "200": json_response("The collection", schema("Collection")), "404": error_response("Unknown collection") } },
                "delete": { "summary": "Drop a collection created through the API, with its index",
                    "security": key_drop, "parameters": [ collection_name ],
                    "responses": { "200": { "description": "Dropped" }, "400": error_response("The default or a configured collection"),
                        "401": error_response("Missing or wrong API key"), "404": error_response("Unknown collection") } } },
            "/collections/{collection}/snapshots": { "post": {
                "summary": "Write a snapshot of the collection (model, items, path records; one consistent moment) to a file on the server",
                "security": key_snap, "parameters": [ collection_name_snap ],
                "responses": { "201": json_response("The file written", json!({ "type": "object", "properties": {
                    "file": { "type": "string" }, "bytes": { "type": "integer" }, "snapshot": { "type": "object" } } })),
                    "401": error_response("Missing or wrong API key"), "404": error_response("Unknown collection") } } },
            "/collections/{collection}/upgrade": {
                "post": { "summary": "Re-embed the collection with a new model (from each item's source file), built beside the live index and swapped in at once; searches go on, changes are refused (409) until the swap",
                    "security": key_upgrade, "parameters": [ collection_name_up.clone() ],
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["model"],
                        "properties": { "model": { "type": "string", "description": "Path of the new model on the server" },
                            "skip_unreadable": { "type": "boolean", "default": false, "description": "Leave out items whose source is missing instead of failing" } } } } } },
                    "responses": { "202": json_response("Started", schema("Upgrade")), "400": error_response("Bad model"),
                        "401": error_response("Missing or wrong API key"), "404": error_response("Unknown collection"),
                        "409": error_response("An upgrade is already running") } },
                "get": { "summary": "The last upgrade's state: running (done of total), ready (built and compared, waiting), done, discarded or failed", "parameters": [ collection_name_up.clone() ],
                    "responses": { "200": json_response("The state", schema("Upgrade")), "404": error_response("Unknown collection") } },
                "delete": { "summary": "Throw a ready upgrade away; the collection takes changes again", "security": key.clone(),
                    "parameters": [ collection_name_up.clone() ],
                    "responses": { "200": json_response("Discarded", schema("Upgrade")), "400": error_response("No upgrade waiting"),
                        "401": error_response("Missing or wrong API key") } } },
            "/collections/{collection}/upgrade/swap": { "post": {
                "summary": "Swap a ready upgrade in (one started with \"swap\": false)", "security": key.clone(),
                "parameters": [ collection_name_up.clone() ],
                "responses": { "200": json_response("Swapped", schema("Upgrade")), "400": error_response("No upgrade waiting"),
                    "401": error_response("Missing or wrong API key") } } },
            "/collections/{collection}/upgrade/report": { "get": {
                "summary": "Judge before you swap: the old and new model's neighbours for a sample of the collection's images (how much they changed; with labels, Recall@K of both), as a page",
                "parameters": [ collection_name_up.clone() ],
                "responses": { "200": { "description": "HTML", "content": { "text/html": {} } }, "400": error_response("No built upgrade") } } },
            "/collections/{collection}/upgrade/report.png": { "get": {
                "summary": "The comparison picture: per row an image, its old neighbours, its new ones (new ones framed)",
                "parameters": [ collection_name_up ],
                "responses": { "200": { "description": "PNG", "content": { "image/png": {} } }, "400": error_response("No built upgrade") } } },
            "/": { "get": { "summary": "The search page", "responses": { "200": { "description": "HTML", "content": { "text/html": {} } } } } },
            "/docs": { "get": { "summary": "This API reference, browsable", "responses": { "200": { "description": "HTML", "content": { "text/html": {} } } } } },
            "/healthz": { "get": { "summary": "Liveness", "responses": { "200": { "description": "Alive" } } } },
            "/readyz": { "get": { "summary": "Readiness", "responses": { "200": { "description": "Ready" }, "503": error_response("Not ready") } } },
            "/stats": { "get": { "summary": "Index size, model and settings; `model.path` (a file on the server) only with `?paths=true` and, where one is set, the API key", "responses": { "200": { "description": "Statistics" }, "401": { "description": "`paths=true` without the API key" } } } },
            "/metrics": { "get": { "summary": "Prometheus metrics", "responses": { "200": { "description": "Text exposition format" } } } },
            "/openapi.json": { "get": { "summary": "This document", "responses": { "200": { "description": "OpenAPI 3" } } } }
        }
    })
}

/// `GET /openapi.json`
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(document())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn describes_exactly_the_routes_the_server_has() {
        let doc = document();
        let described: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, ops)| ops.as_object().unwrap().keys().map(move |m| (m.to_uppercase(), path.clone())))
            .collect();
        let served: BTreeSet<(String, String)> =
            super::super::route_list().into_iter().map(|(m, p)| (m, p.to_string())).collect();
        let undocumented: Vec<_> = served.difference(&described).collect();
        let phantom: Vec<_> = described.difference(&served).collect();
        assert!(undocumented.is_empty(), "routes missing from /openapi.json: {undocumented:?}");
        assert!(phantom.is_empty(), "/openapi.json describes routes the server lacks: {phantom:?}");
        // Every $ref points at a schema that exists.
        let text = doc.to_string();
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part.chars().take_while(|c| c.is_alphanumeric()).collect();
            assert!(doc["components"]["schemas"].get(&name).is_some(), "dangling $ref {name}");
        }
        // Every operation has a summary and a response.
        for ops in doc["paths"].as_object().unwrap().values() {
            for op in ops.as_object().unwrap().values() {
                assert!(op["summary"].is_string() && op["responses"].is_object(), "{op}");
            }
        }
    }
}
