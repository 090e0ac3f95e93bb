//! The model manifest: everything the server needs to use an exported ONNX file,
//! stored as JSON in the file's `metadata_props` under [`MANIFEST_KEY`].

use serde::{Deserialize, Serialize};

use crate::Preprocess;

/// Key of the manifest in the ONNX model's `metadata_props`.
pub const MANIFEST_KEY: &str = "stml.manifest";
/// Current manifest format.
pub const MANIFEST_FORMAT: &str = "stml-embedding/1";

/// How embeddings are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distance {
    /// Euclidean (L2) distance on the raw embedding; the STML reference's choice.
    Euclidean,
    /// Cosine distance (1 - cos).
    Cosine,
}

impl std::str::FromStr for Distance {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "euclidean" | "l2" => Ok(Self::Euclidean),
            "cosine" => Ok(Self::Cosine),
            _ => Err(format!("unknown distance `{s}`; expected `euclidean` or `cosine`")),
        }
    }
}

/// Where a model came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub run_id: String,
    pub git_commit: String,
    /// RFC 3339 time of export.
    pub created: String,
    /// Free-form: the training data, the epoch exported, ...
    #[serde(default)]
    pub notes: String,
}

/// The contract between an exported model and whoever serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub arch: String,
    /// Length of the output vector.
    pub embedding_dim: usize,
    /// True when the output is L2-normalised inside the graph.
    pub normalized: bool,
    pub distance: Distance,
    /// Name of the graph's input (`[batch, 3, crop, crop]`, f32).
    pub input_name: String,
    /// Name of the graph's output (`[batch, embedding_dim]`, f32).
    pub output_name: String,
    pub preprocess: Preprocess,
    pub provenance: Provenance,
}

impl Manifest {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("manifest serialises")
    }

    pub fn from_json(s: &str) -> Result<Self, String> {
        let m: Manifest = serde_json::from_str(s).map_err(|e| format!("manifest is not valid JSON: {e}"))?;
        if m.format != MANIFEST_FORMAT {
            return Err(format!("manifest format `{}` is not supported (expected `{MANIFEST_FORMAT}`); re-export the model with this version's `trainer export`", m.format));
        }
        if m.embedding_dim == 0 {
            return Err("manifest says embedding_dim 0".into());
        }
        Ok(m)
    }
}
