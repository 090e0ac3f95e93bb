//! `GET /openapi.json`: the API described in OpenAPI 3.

use actix_web::HttpResponse;
use serde_json::{json, Value};

fn error_response(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

/// The OpenAPI document.
pub fn document() -> Value {
    let id_param = json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "string", "pattern": "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$" } });
    let image_body = json!({
        "image/*": { "schema": { "type": "string", "format": "binary" } },
        "multipart/form-data": { "schema": { "type": "object", "properties": {
            "image": { "type": "string", "format": "binary" },
            "id": { "type": "string" },
            "metadata": { "type": "string", "description": "JSON text" } } } }
    });
    json!({
        "openapi": "3.0.3",
        "info": { "title": "stml-search server", "version": env!("CARGO_PKG_VERSION"),
                  "description": "Image similarity search: embed images with a self-taught (STML) model, search them with HNSW." },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": { "type": "object", "properties": { "error": { "type": "object", "properties": {
                    "code": { "type": "string" }, "message": { "type": "string" } } } } },
                "Hit": { "type": "object", "properties": {
                    "id": { "type": "string" }, "distance": { "type": "number" }, "metadata": {} } },
                "VectorItem": { "type": "object", "required": ["vector"], "properties": {
                    "id": { "type": "string" }, "metadata": {}, "vector": { "type": "array", "items": { "type": "number" } } } }
            }
        },
        "paths": {
            "/search": { "post": {
                "summary": "Nearest gallery images to an image (raw body or multipart) or to a vector (JSON)",
                "parameters": [
                    { "name": "k", "in": "query", "schema": { "type": "integer", "minimum": 1, "default": 10 } },
                    { "name": "ef", "in": "query", "schema": { "type": "integer", "minimum": 1 } } ],
                "requestBody": { "required": true, "content": {
                    "image/*": image_body["image/*"].clone(),
                    "multipart/form-data": image_body["multipart/form-data"].clone(),
                    "application/json": { "schema": { "type": "object", "required": ["vector"], "properties": {
                        "vector": { "type": "array", "items": { "type": "number" } } } } } } },
                "responses": {
                    "200": { "description": "Hits, nearest first, and timings", "content": { "application/json": { "schema": {
                        "type": "object", "properties": {
                            "hits": { "type": "array", "items": { "$ref": "#/components/schemas/Hit" } },
                            "k": { "type": "integer" }, "ef": { "type": "integer" },
                            "timings": { "type": "object" } } } } } },
                    "400": error_response("Bad input (not an image, k out of range, malformed JSON, wrong dimension)"),
                    "413": error_response("Upload or image too large"),
                    "415": error_response("Unsupported content type") } } },
            "/images": { "post": {
                "summary": "Add images (raw body with ?id=&metadata=, multipart with several images, or JSON vectors)",
                "security": [ { "bearer": [] } ],
                "parameters": [
                    { "name": "id", "in": "query", "schema": { "type": "string" } },
                    { "name": "metadata", "in": "query", "schema": { "type": "string", "description": "JSON text" } } ],
                "requestBody": { "required": true, "content": {
                    "image/*": image_body["image/*"].clone(),
                    "multipart/form-data": image_body["multipart/form-data"].clone(),
                    "application/json": { "schema": { "oneOf": [
                        { "$ref": "#/components/schemas/VectorItem" },
                        { "type": "object", "properties": { "images": { "type": "array", "items": { "$ref": "#/components/schemas/VectorItem" } } } } ] } } } },
                "responses": {
                    "201": { "description": "Stored (durably) and indexed", "content": { "application/json": { "schema": {
                        "type": "object", "properties": { "ids": { "type": "array", "items": { "type": "string" } } } } } } },
                    "400": error_response("Bad input"), "401": error_response("Missing or wrong API key"),
                    "413": error_response("Too large"), "415": error_response("Unsupported content type") } } },
            "/images/{id}": {
                "get": { "summary": "An image's stored metadata (and vector with ?vector=true)", "parameters": [ id_param.clone(),
                        { "name": "vector", "in": "query", "schema": { "type": "boolean" } } ],
                    "responses": { "200": { "description": "The record" }, "404": error_response("Unknown id") } },
                "delete": { "summary": "Delete an image", "security": [ { "bearer": [] } ], "parameters": [ id_param.clone() ],
                    "responses": { "200": { "description": "Deleted" }, "401": error_response("Missing or wrong API key"),
                                   "404": error_response("Unknown id") } } },
            "/images/{id}/thumbnail": { "get": { "summary": "A small JPEG of the image", "parameters": [ id_param ],
                "responses": { "200": { "description": "JPEG", "content": { "image/jpeg": {} } }, "404": error_response("Unknown id") } } },
            "/": { "get": { "summary": "The search page", "responses": { "200": { "description": "HTML", "content": { "text/html": {} } } } } },
            "/healthz": { "get": { "summary": "Liveness", "responses": { "200": { "description": "Alive" } } } },
            "/readyz": { "get": { "summary": "Readiness", "responses": { "200": { "description": "Ready" }, "503": error_response("Not ready") } } },
            "/stats": { "get": { "summary": "Index size, model and settings", "responses": { "200": { "description": "Statistics" } } } },
            "/metrics": { "get": { "summary": "Prometheus metrics", "responses": { "200": { "description": "Text exposition format" } } } },
            "/openapi.json": { "get": { "summary": "This document", "responses": { "200": { "description": "OpenAPI 3" } } } }
        }
    })
}

/// `GET /openapi.json`
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(document())
}
