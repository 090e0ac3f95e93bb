//! Start-up and shutdown of `server serve`: load ONNX Runtime and the model, open the
//! collections (each a gallery and a batcher), bind the HTTP server; on shutdown dump the
//! HNSW graphs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix_web::web;

use crate::collections::Collections;
use crate::gallery::{Gallery, IndexKind, LocalGallery};
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::runtime::{self, OnnxModel};
use crate::settings::{Backend, Settings};
use crate::store::IndexSpec;
use crate::{Error, Result};

/// Loads ONNX Runtime (from the settings, `ORT_DYLIB_PATH`, or the set-up's copy) and
/// opens the model of `settings`, checking it with one inference.
/// When an upgrade has replaced the model of `index_dir`, that model is opened instead.
pub fn open_model(settings: &Settings) -> Result<Arc<OnnxModel>> {
    let (_, upgraded) = crate::upgrade::resolve(&settings.index_dir)?;
    open_model_file(settings, upgraded.as_deref().unwrap_or(&settings.model))
}

/// Like [`open_model`], for the model file at `path`.
pub fn open_model_file(settings: &Settings, path: &Path) -> Result<Arc<OnnxModel>> {
    let dylib = runtime::resolve_dylib(settings.ort_dylib_path.as_deref());
    let env = runtime::environment(&dylib)?;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let streams = runtime::stream_plan(cores, settings.inference_streams);
    let model = OnnxModel::open(&env, path, settings.intra_threads, streams, settings.intra_spinning)?;
    model
        .embed(vec![0.0; model.input_len()], 1)
        .map_err(|e| Error::Model { path: path.to_path_buf(), reason: format!("a test inference failed: {e}") })?;
    Ok(Arc::new(model))
}

/// Opens the live gallery of `settings.index_dir` (the version an upgrade made, if any)
/// for `model`'s vectors: the default collection's, on the backend of the settings.
pub fn open_gallery(settings: &Settings, model: &OnnxModel, kind: IndexKind) -> Result<Arc<dyn Gallery>> {
    let (live, _) = crate::upgrade::resolve(&settings.index_dir)?;
    open_collection_gallery(settings, crate::collections::DEFAULT, &live, model, kind)
}

/// Opens the gallery of the collection `name` for `model`'s vectors: in `dir` on the
/// embedded backend, in its Milvus collection ([`milvus_collection`]) on the Milvus one.
pub fn open_collection_gallery(
    settings: &Settings,
    name: &str,
    dir: &Path,
    model: &OnnxModel,
    kind: IndexKind,
) -> Result<Arc<dyn Gallery>> {
    match settings.index.backend {
        Backend::Embedded => open_gallery_dir(settings, dir, model, kind),
        Backend::Milvus => open_milvus(settings, name, model, kind),
    }
}

/// The Milvus collection of the server's collection `name`: `index.milvus.collection` for
/// the default one, `<that>_<name>` (with `-` written `_`) for the others.
pub fn milvus_collection(settings: &Settings, name: &str) -> String {
    let base = &settings.index.milvus.collection;
    if name == crate::collections::DEFAULT {
        base.clone()
    } else {
        format!("{base}_{}", name.replace('-', "_"))
    }
}

/// Refuses server collections whose Milvus collections (or their `_paths` companions)
/// would be the same: `a-b` and `a_b`, or `x` beside `x_paths`, would share items.
pub fn check_milvus_names(settings: &Settings, names: &[&str]) -> Result<()> {
    let mut owner: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
    for name in names {
        let items = milvus_collection(settings, name);
        for used in [format!("{items}_paths"), items] {
            if let Some(other) = owner.insert(used.clone(), name) {
                return Err(Error::Settings {
                    source_name: format!("collections.{name}"),
                    reason: format!(
                        "on the milvus backend it would use the Milvus collection `{used}`, as `{other}` does; rename one of them"
                    ),
                });
            }
        }
    }
    Ok(())
}

#[cfg(feature = "milvus")]
fn open_milvus(settings: &Settings, name: &str, model: &OnnxModel, kind: IndexKind) -> Result<Arc<dyn Gallery>> {
    use crate::gallery::{MilvusGallery, MilvusIndex};
    use crate::settings::MilvusIndexKind;
    let spec = IndexSpec::for_manifest(model.manifest());
    let legacy = IndexSpec::legacy_model(model.manifest());
    // The exact index (tests) asks Milvus for brute force too.
    let index_kind = match kind {
        IndexKind::Exact => MilvusIndexKind::Flat,
        IndexKind::Hnsw => settings.index.milvus.index,
    };
    let collection = milvus_collection(settings, name);
    let started = Instant::now();
    let index = MilvusIndex { kind: index_kind, hnsw: settings.hnsw };
    let gallery = MilvusGallery::open(&settings.index.milvus, &collection, spec, Some(&legacy), index)?;
    tracing::info!(uri = %settings.index.milvus.uri, collection, images = gallery.stats().images, seconds = started.elapsed().as_secs_f64(), "opened the Milvus collection");
    Ok(Arc::new(gallery))
}

#[cfg(not(feature = "milvus"))]
fn open_milvus(settings: &Settings, name: &str, _model: &OnnxModel, _kind: IndexKind) -> Result<Arc<dyn Gallery>> {
    Err(Error::Settings {
        source_name: "index.backend".into(),
        reason: format!(
            "`milvus` (collection `{}`) needs a server built with the Milvus client: `cargo build --release -p server --features milvus`",
            milvus_collection(settings, name)
        ),
    })
}

/// Opens the gallery in `dir` for `model`'s vectors.
pub fn open_gallery_dir(
    settings: &Settings,
    dir: &Path,
    model: &OnnxModel,
    kind: IndexKind,
) -> Result<Arc<dyn Gallery>> {
    let spec = IndexSpec::for_manifest(model.manifest());
    let legacy = IndexSpec::legacy_model(model.manifest());
    let started = Instant::now();
    let gallery = LocalGallery::open_as(dir, spec, Some(&legacy), &settings.hnsw, kind)?;
    tracing::info!(dir = %dir.display(), images = gallery.stats().images, seconds = started.elapsed().as_secs_f64(), "opened the index");
    Ok(Arc::new(gallery))
}

/// A bound, running HTTP server.
pub struct Running {
    /// The address actually bound (port 0 picks a free port).
    pub addr: SocketAddr,
    /// `https` with `tls_cert` and `tls_key`, else `http`.
    pub scheme: &'static str,
    server: actix_web::dev::Server,
    state: web::Data<AppState>,
}

/// Loads everything and binds the HTTP server; call [`Running::wait`] to serve.
pub fn start(settings: Settings) -> Result<Running> {
    let metrics = Arc::new(Metrics::default());
    let settings = Arc::new(settings);
    let collections = Arc::new(Collections::open(settings.clone(), metrics.clone())?);
    let state = web::Data::new(AppState {
        collections,
        settings: settings.clone(),
        metrics,
        ready: Arc::new(AtomicBool::new(false)),
        started: Instant::now(),
        limiter: http::RateLimiter::new(&settings.rate_limit).map(Arc::new),
        in_flight: http::InFlight::new(settings.http.max_in_flight),
    });
    let address = format!("{}:{}", settings.host, settings.port);
    let app_state = state.clone();
    let limits = settings.http;
    let server = actix_web::HttpServer::new(move || http::app(app_state.clone()))
        .shutdown_timeout(5)
        .client_request_timeout(std::time::Duration::from_millis(limits.header_timeout_ms))
        .client_disconnect_timeout(std::time::Duration::from_secs(1))
        .keep_alive(std::time::Duration::from_secs(limits.keep_alive_s))
        .max_connections(limits.max_connections);
    let tls = tls_config(&settings)?;
    let mut server = match tls {
        Some(config) => server.bind_rustls_0_23(&address, config),
        None => server.bind(&address),
    }
    .map_err(Error::io(PathBuf::from(&address)))?;
    if settings.http_workers > 0 {
        server = server.workers(settings.http_workers);
    }
    let addr = *server.addrs().first().ok_or_else(|| Error::Io {
        path: PathBuf::from(&address),
        source: std::io::Error::other("bound to no address"),
    })?;
    let server = server.run();
    state.ready.store(true, Ordering::Relaxed);
    let scheme = if settings.tls_cert.is_some() { "https" } else { "http" };
    Ok(Running { addr, scheme, server, state })
}

/// The TLS set-up of `tls_cert` and `tls_key`, when given.
fn tls_config(settings: &Settings) -> Result<Option<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (Some(cert), Some(key)) = (&settings.tls_cert, &settings.tls_key) else {
        return Ok(None);
    };
    let bad = |what: &str, path: &Path, reason: String| Error::Settings {
        source_name: format!("{what} {}", path.display()),
        reason: format!("{reason}; give a PEM file"),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| bad("tls_cert", cert, format!("cannot read the certificates ({e})")))?;
    if chain.is_empty() {
        return Err(bad("tls_cert", cert, "it holds no certificate".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| bad("tls_key", key, format!("cannot read a private key ({e})")))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, private))
        .map_err(|e| bad("tls_cert", cert, format!("the certificate and key do not make a TLS set-up ({e})")))?;
    Ok(Some(config))
}

impl Running {
    /// A handle to stop the server from elsewhere (as SIGTERM does).
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGINT/SIGTERM, then dumps the HNSW graphs for a fast restart.
    pub async fn wait(self) -> Result<()> {
        let served = self.server.await;
        self.state.ready.store(false, Ordering::Relaxed);
        let collections = self.state.collections.clone();
        tokio::task::spawn_blocking(move || collections.snapshot_all()).await.map_err(|_| Error::Unavailable)??;
        served.map_err(Error::io("http server"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milvus_collection_names_may_not_collide() {
        let s = Settings::default();
        assert_eq!(milvus_collection(&s, crate::collections::DEFAULT), "stml");
        assert_eq!(milvus_collection(&s, "birds-2"), "stml_birds_2");
        check_milvus_names(&s, &["default", "birds", "cars"]).unwrap();
        let e = check_milvus_names(&s, &["default", "a-b", "a_b"]).unwrap_err().to_string();
        assert!(e.contains("stml_a_b") && e.contains("rename"), "{e}");
        assert!(
            check_milvus_names(&s, &["default", "paths"]).is_err(),
            "`paths` would take the default's path records"
        );
    }
}
