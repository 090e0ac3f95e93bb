//! Server settings, layered like qdrant's: built-in defaults, then an optional TOML config
//! file, then `STML_SERVER_*` environment variables (nested keys joined by `__`, e.g.
//! `STML_SERVER_HNSW__EF_SEARCH=128`); command-line flags are applied last by the binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::index::{HnswParams, Quantization};
use crate::{Error, Result};

/// Prefix of the environment variables that override settings.
pub const ENV_PREFIX: &str = "STML_SERVER_";

/// Everything the server can be configured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The ONNX model written by `trainer export`.
    pub model: PathBuf,
    /// Directory holding the index database and the HNSW graph dump.
    pub index_dir: PathBuf,
    pub host: String,
    pub port: u16,
    /// ONNX Runtime shared library; when unset, `ORT_DYLIB_PATH` or the set-up's copy.
    pub ort_dylib_path: Option<PathBuf>,
    /// When set, mutating endpoints require `Authorization: Bearer <api_key>`.
    pub api_key: Option<String>,
    /// When set, searches and every read (items, thumbnails, listings, `/stats`,
    /// `/metrics`) require `Authorization: Bearer <read_api_key>` (or the `api_key`).
    pub read_api_key: Option<String>,
    /// How long clients may take, and how many may be connected (`[http]`).
    pub http: HttpLimits,
    /// Serve HTTPS with this certificate chain (PEM) and `tls_key`; both or neither.
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub tls_key: Option<PathBuf>,
    /// Requests per second (and burst) each client may make: each API key presented, or,
    /// without one, each client address. Off by default.
    pub rate_limit: RateLimit,
    /// Web origins (`https://app.example.com`, or `*` for any) whose pages may call this
    /// server from a browser (CORS). Empty, the default: no CORS headers, so browsers let
    /// only pages served by this server itself read its answers.
    pub cors_origins: Vec<String>,
    /// Largest accepted request body.
    pub max_upload_bytes: usize,
    /// Decompression-bomb guard: images with more pixels are refused before decoding.
    pub max_image_pixels: u64,
    /// Largest `k` a search may ask for.
    pub max_k: usize,
    /// HTTP worker threads (0: one per core).
    pub http_workers: usize,
    /// ONNX Runtime intra-op threads (0: ONNX Runtime's default).
    pub intra_threads: usize,
    /// Narrow inference sessions that run batches side by side under load, beside the
    /// wide one that runs a lone image on all `intra_threads` (0: one single-threaded
    /// session per core, at most 4; 1: the wide session only). CPU only.
    pub inference_streams: usize,
    /// Whether those threads spin waiting for work (see [`Spinning`]).
    pub intra_spinning: Spinning,
    pub batch: BatchSettings,
    pub hnsw: HnswParams,
    /// Where the items and vectors live (the `[index]` settings).
    pub index: IndexSettings,
    /// Where collections created through the API live (default: `index_dir/collections`).
    pub collections_dir: Option<PathBuf>,
    /// Keep each uploaded image file (besides its vector and thumbnail), so that the
    /// collection can be re-embedded with another model; `server index` needs none (it
    /// records the source path). Collections may say otherwise.
    pub keep_originals: bool,
    /// Where snapshots are written (default: `index_dir/snapshots`).
    pub snapshots_dir: Option<PathBuf>,
    /// Collections besides the default one, by name (`[collections.NAME]`).
    pub collections: BTreeMap<String, CollectionSettings>,
}

/// A collection declared in the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionSettings {
    /// Its ONNX model.
    pub model: PathBuf,
    /// Its index directory (default: `collections_dir/NAME`).
    pub index_dir: Option<PathBuf>,
    /// Keep uploaded files (default: the server's `keep_originals`).
    pub keep_originals: Option<bool>,
}

/// Whether ONNX Runtime's intra-op threads spin (busy-wait) for their next piece of work
/// instead of sleeping. Waking a sleeping thread costs tens of microseconds per operator,
/// which adds up over a network's many operators; a spinning thread burns a core that
/// image decoding and the HTTP workers could use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Spinning {
    /// Never spin.
    Off,
    /// Spin between the operators of an inference call, stop when it returns: a lone
    /// request is not slowed by thread wake-ups, and no core is burnt between requests.
    #[default]
    DuringRun,
    /// Spin between calls too (ONNX Runtime's own default).
    On,
}

/// Dynamic batching of concurrent embedding requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchSettings {
    /// Most images in one inference call.
    pub max_batch: usize,
    /// Longest a request waits for others to join its batch, in milliseconds. 0 (the
    /// default): never wait, take what is queued. Requests that arrive during an inference
    /// call queue up and form the next batch, so batches fill under load anyway; a wait only
    /// adds its length to every lone request (1 ms cost 1.1 ms of p50 at one client and
    /// about 10 % of throughput at eight, BENCHMARKS.md).
    pub max_wait_ms: u64,
    /// Requests waiting beyond this are refused with 503.
    pub queue_capacity: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            model: PathBuf::from("model.onnx"),
            index_dir: PathBuf::from("index"),
            host: "127.0.0.1".into(),
            port: 8080,
            ort_dylib_path: None,
            api_key: None,
            read_api_key: None,
            cors_origins: Vec::new(),
            rate_limit: RateLimit::default(),
            http: HttpLimits::default(),
            tls_cert: None,
            tls_key: None,
            max_upload_bytes: 16 * 1024 * 1024,
            max_image_pixels: 40_000_000,
            max_k: 1000,
            http_workers: 0,
            intra_threads: 0,
            inference_streams: 0,
            intra_spinning: Spinning::default(),
            batch: BatchSettings::default(),
            hnsw: HnswParams::default(),
            index: IndexSettings::default(),
            collections_dir: None,
            keep_originals: false,
            snapshots_dir: None,
            collections: BTreeMap::new(),
        }
    }
}

/// Bounds on slow and numerous clients (`[http]`), so that a few cannot hold the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpLimits {
    /// A request's head (line and headers) must arrive within this many milliseconds of
    /// the connection (408 otherwise, and the connection is closed).
    pub header_timeout_ms: u64,
    /// A request's body must arrive within this many seconds of its head.
    pub body_timeout_s: u64,
    /// An idle kept-alive connection is closed after this many seconds.
    pub keep_alive_s: u64,
    /// Connections each HTTP worker serves at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// API requests (searches, items, changes) answered at once, all workers together; one
    /// more is refused at once with 503 and `Retry-After: 1` rather than queued. A request
    /// counts once its body has come (a slow upload holds no place); health checks, the
    /// page and `/metrics` are not counted.
    pub max_in_flight: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout_ms: 5000,
            body_timeout_s: 60,
            keep_alive_s: 5,
            max_connections: 10_000,
            max_in_flight: 512,
        }
    }
}

/// A token bucket per client (`[rate_limit]`): `per_second` requests on average, up to
/// `burst` at once; `per_second = 0` (the default) turns limits off.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self { per_second: 0.0, burst: 20 }
    }
}

/// Where a server keeps its items and vectors.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IndexSettings {
    pub backend: Backend,
    /// Used when `backend = "milvus"`.
    pub milvus: MilvusSettings,
}

/// The storage and search backend of every collection of a server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// redb and the in-process HNSW graph in `index_dir` (one server per folder).
    #[default]
    Embedded,
    /// A Milvus collection, shared by any number of servers and `server index` workers.
    Milvus,
}

/// How to reach and lay out the Milvus collections (`[index.milvus]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MilvusSettings {
    /// The Milvus proxy's gRPC address.
    pub uri: String,
    /// The default collection's Milvus collection; a declared collection NAME uses
    /// `<collection>_<NAME>` (with `-` written `_`). Path records go to `<that>_paths`.
    pub collection: String,
    /// The vector index Milvus builds: `hnsw` (with the `[hnsw]` m, ef_construction and
    /// ef_search) or `flat` (exact).
    pub index: MilvusIndexKind,
    /// Credentials, when Milvus has authentication on.
    pub user: Option<String>,
    pub password: Option<String>,
    /// Longest wait for one Milvus call, in seconds.
    pub timeout_s: u64,
    /// What a read waits for (Milvus's consistency levels): `session` (the default) sees
    /// every write of this server at once and other replicas' writes about a time tick
    /// (200 ms) later; `strong` sees every acknowledged write of any replica, at the cost
    /// of waiting for the time tick on every read; `bounded` and `eventually` may miss
    /// this server's own latest writes too.
    pub consistency: MilvusConsistency,
}

/// Milvus's consistency levels, for reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MilvusConsistency {
    Strong,
    #[default]
    Session,
    Bounded,
    Eventually,
}

/// The vector index of a Milvus collection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MilvusIndexKind {
    #[default]
    Hnsw,
    Flat,
}

impl Default for MilvusSettings {
    fn default() -> Self {
        Self {
            uri: "http://127.0.0.1:19530".into(),
            collection: "stml".into(),
            index: MilvusIndexKind::default(),
            user: None,
            password: None,
            timeout_s: 30,
            consistency: MilvusConsistency::default(),
        }
    }
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self { max_batch: 16, max_wait_ms: 0, queue_capacity: 1024 }
    }
}

impl Settings {
    /// Where snapshots are written.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.snapshots_dir.clone().unwrap_or_else(|| self.index_dir.join("snapshots"))
    }

    /// Where API-created collections live.
    pub fn collections_dir(&self) -> PathBuf {
        self.collections_dir.clone().unwrap_or_else(|| self.index_dir.join("collections"))
    }

    /// Defaults, overridden by `config_file` (when given), overridden by the `STML_SERVER_*`
    /// variables among `env`.
    pub fn load(config_file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let mut merged = toml::Value::try_from(Settings::default())
            .map_err(|e| Error::Settings { source_name: "defaults".into(), reason: e.to_string() })?;
        if let Some(path) = config_file {
            let text = std::fs::read_to_string(path).map_err(|e| Error::Settings {
                source_name: path.display().to_string(),
                reason: format!("cannot read the config file: {e}"),
            })?;
            let file: toml::Value = toml::from_str(&text).map_err(|e| Error::Settings {
                source_name: path.display().to_string(),
                reason: format!("not valid TOML: {e}"),
            })?;
            merge(&mut merged, file);
            check(&merged, &path.display().to_string())?;
        }
        let mut vars: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
        vars.sort();
        for (key, value) in vars {
            let path: Vec<String> = key[ENV_PREFIX.len()..].split("__").map(|s| s.to_ascii_lowercase()).collect();
            merge(&mut merged, nest(&path, parse_env_value(&value)));
            check(&merged, &key)?;
        }
        let settings: Settings = merged.try_into().map_err(|e: toml::de::Error| Error::Settings {
            source_name: "the merged settings".into(),
            reason: e.to_string(),
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Rejects values that cannot work (zero batch size, k limit 0, ...).
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: &str| Err(Error::Settings { source_name: "settings".into(), reason: reason.into() });
        if self.batch.max_batch == 0 {
            return bad("batch.max_batch must be at least 1");
        }
        if self.batch.queue_capacity == 0 {
            return bad("batch.queue_capacity must be at least 1");
        }
        if self.max_k == 0 {
            return bad("max_k must be at least 1");
        }
        if !(2..=256).contains(&self.hnsw.m) || self.hnsw.ef_construction == 0 || self.hnsw.ef_search == 0 {
            return bad("hnsw.m must lie in 2 ..= 256 and hnsw.ef_construction, hnsw.ef_search be at least 1");
        }
        if !(0.0..=1.0).contains(&self.hnsw.rebuild_tombstone_ratio) {
            return bad("hnsw.rebuild_tombstone_ratio must lie in 0 ..= 1");
        }
        if self.index.backend == Backend::Milvus
            && !matches!(self.hnsw.quantization, Quantization::Auto | Quantization::F32)
        {
            return bad(
                "hnsw.quantization applies to the embedded graph; Milvus keeps its own vectors: remove it, or \
                        use backend = \"embedded\"",
            );
        }
        if !(self.rate_limit.per_second >= 0.0 && self.rate_limit.per_second.is_finite()) || self.rate_limit.burst == 0
        {
            return bad("rate_limit.per_second must be 0 (off) or positive and rate_limit.burst at least 1");
        }
        let h = &self.http;
        if h.header_timeout_ms == 0 || h.body_timeout_s == 0 || h.max_connections == 0 || h.max_in_flight == 0 {
            return bad(
                "http.header_timeout_ms, http.body_timeout_s, http.max_connections and http.max_in_flight must be at least 1",
            );
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return bad("tls_cert and tls_key go together: give both (PEM files) to serve HTTPS, or neither");
        }
        for origin in &self.cors_origins {
            let rest = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
            if origin != "*" && !rest.is_some_and(|r| !r.is_empty() && !r.contains('/')) {
                return bad(&format!(
                    "cors_origins: `{origin}` is not an origin; write scheme://host[:port] with no path (e.g. https://app.example.com), or `*` for any"
                ));
            }
        }
        let m = &self.index.milvus;
        let name_ok = m.collection.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && m.collection.len() <= 200
            && m.collection.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !name_ok {
            return bad("index.milvus.collection must start with a letter or '_' and hold only letters, digits and '_' (at most 200)");
        }
        if m.timeout_s == 0 {
            return bad("index.milvus.timeout_s must be at least 1");
        }
        if self.max_upload_bytes == 0 || self.max_image_pixels == 0 {
            return bad("max_upload_bytes and max_image_pixels must be positive");
        }
        Ok(())
    }
}

/// Deserialises the partially merged table so that a wrong key or type is reported
/// against the layer that introduced it.
fn check(merged: &toml::Value, source_name: &str) -> Result<()> {
    merged
        .clone()
        .try_into::<Settings>()
        .map(|_| ())
        .map_err(|e| Error::Settings { source_name: source_name.into(), reason: e.to_string() })
}

/// An environment value as TOML (numbers, booleans, arrays), else as a plain string.
fn parse_env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

fn nest(path: &[String], leaf: toml::Value) -> toml::Value {
    path.iter().rev().fold(leaf, |inner, key| {
        let mut t = toml::Table::new();
        t.insert(key.clone(), inner);
        toml::Value::Table(t)
    })
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.toml");
        std::fs::write(
            &file,
            "port = 9000\nhost = \"0.0.0.0\"\n[hnsw]\nm = 32\nef_search = 40\nquantization = \"f16\"\n",
        )
        .unwrap();
        let s = Settings::load(
            Some(&file),
            env(&[("STML_SERVER_PORT", "9100"), ("STML_SERVER_HNSW__EF_SEARCH", "77"), ("OTHER", "x")]),
        )
        .unwrap();
        assert_eq!(s.port, 9100, "env beats file");
        assert_eq!(s.host, "0.0.0.0", "file beats defaults");
        assert_eq!(s.hnsw.m, 32);
        assert_eq!(s.hnsw.ef_search, 77);
        assert_eq!(s.hnsw.ef_construction, HnswParams::default().ef_construction);
        assert_eq!(s.hnsw.quantization, crate::index::Quantization::F16);
    }

    #[test]
    fn collections_are_declared_in_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.toml");
        let text = "index_dir = \"/data\"\n[collections.birds]\nmodel = \"/m/birds.onnx\"\n\
                    [collections.cars]\nmodel = \"/m/cars.onnx\"\nindex_dir = \"/fast/cars\"\n";
        std::fs::write(&file, text).unwrap();
        let s = Settings::load(Some(&file), env(&[])).unwrap();
        assert_eq!(
            s.collections["birds"],
            CollectionSettings { model: "/m/birds.onnx".into(), index_dir: None, keep_originals: None }
        );
        assert_eq!(s.collections["cars"].index_dir, Some(PathBuf::from("/fast/cars")));
        assert_eq!(s.collections_dir(), PathBuf::from("/data/collections"));
        std::fs::write(&file, "[collections.birds]\nmodle = \"x\"\n").unwrap();
        let err = Settings::load(Some(&file), env(&[])).unwrap_err().to_string();
        assert!(err.contains("modle"), "{err}");
    }

    #[test]
    fn strings_and_options_come_from_env() {
        let s = Settings::load(None, env(&[("STML_SERVER_API_KEY", "s3cret"), ("STML_SERVER_MODEL", "/m/x.onnx")]))
            .unwrap();
        assert_eq!(s.api_key.as_deref(), Some("s3cret"));
        assert_eq!(s.model, PathBuf::from("/m/x.onnx"));
    }

    #[test]
    fn unknown_keys_and_bad_values_name_their_source() {
        let err = Settings::load(None, env(&[("STML_SERVER_PORTT", "1")])).unwrap_err().to_string();
        assert!(err.contains("STML_SERVER_PORTT"), "{err}");
        let err = Settings::load(None, env(&[("STML_SERVER_BATCH__MAX_BATCH", "0")])).unwrap_err().to_string();
        assert!(err.contains("max_batch"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "port = \"eighty\"").unwrap();
        let err = Settings::load(Some(&file), Vec::new()).unwrap_err().to_string();
        assert!(err.contains("bad.toml"), "{err}");
        let err = Settings::load(None, env(&[("STML_SERVER_HNSW__QUANTIZATION", "f8")])).unwrap_err().to_string();
        assert!(err.contains("f8") && err.contains("f16"), "{err}");
        let milvus = env(&[("STML_SERVER_INDEX__BACKEND", "milvus"), ("STML_SERVER_HNSW__QUANTIZATION", "i8")]);
        let err = Settings::load(None, milvus).unwrap_err().to_string();
        assert!(err.contains("hnsw.quantization") && err.contains("embedded"), "{err}");
        let milvus = Settings::load(None, env(&[("STML_SERVER_INDEX__BACKEND", "milvus")])).unwrap();
        assert_eq!(milvus.hnsw.quantization, Quantization::Auto, "the default quantization suits Milvus too");
    }
}
