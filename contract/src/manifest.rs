//! The model manifest: everything the server needs to use an exported ONNX file,
//! stored as JSON in the file's `metadata_props` under [`MANIFEST_KEY`].

use serde::{Deserialize, Serialize};

use crate::{ContractError, Distance, Preprocess, Result};

/// Key of the manifest in the ONNX model's `metadata_props`.
pub const MANIFEST_KEY: &str = "stml.manifest";
/// Current manifest format.
pub const MANIFEST_FORMAT: &str = "stml-embedding/1";
/// Name of an exported model's input: `[batch, 3, crop, crop]` f32, preprocessed by the
/// manifest's [`Preprocess`].
pub const INPUT_NAME: &str = "image";

/// Names of the networks' outputs. The exported model has one, [`Output::Embedding`]; the
/// training graphs have the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Output {
    /// The backbone's pooled feature (global average + max pooling).
    Pooled,
    /// The student's target embedding head `f` (the paper's exported one).
    F,
    /// The auxiliary, larger head `g` (student and teacher).
    G,
    /// What an exported model outputs: the served head (`f` or `g`), or the pooled feature
    /// of a pretrained model.
    Embedding,
    /// ImageNet class scores of a pretrained backbone.
    Logits,
}

impl Output {
    /// The output's name in graphs and ONNX files.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Pooled => "pooled",
            Self::F => "f",
            Self::G => "g",
            Self::Embedding => "embedding",
            Self::Logits => "logits",
        }
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
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
    /// The model's identity: SHA-256 of its exported graph and weights, without this
    /// manifest, so the same checkpoint exported twice (at another time, by another
    /// version) is the same model. Set by the exporter; absent in models exported before
    /// it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_sha256: Option<String>,
}

impl Manifest {
    pub fn to_json(&self) -> String {
        // A struct of strings, numbers and enums: serialising it cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Parses and checks a manifest read from a model file.
    pub fn from_json(s: &str) -> Result<Self> {
        let bad = |reason: String| ContractError::Manifest { reason };
        let m: Manifest = serde_json::from_str(s).map_err(|e| bad(format!("manifest is not valid JSON: {e}")))?;
        if m.format != MANIFEST_FORMAT {
            return Err(bad(format!("manifest format `{}` is not supported (expected `{MANIFEST_FORMAT}`); re-export the model with this version's `trainer export`", m.format)));
        }
        if m.embedding_dim == 0 {
            return Err(bad("manifest says embedding_dim 0".into()));
        }
        m.preprocess.check().map_err(|reason| bad(format!("its preprocessing is unusable: {reason}")))?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(pre: Preprocess) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT.into(),
            arch: "resnet50".into(),
            embedding_dim: 8,
            normalized: true,
            distance: Distance::Cosine,
            input_name: INPUT_NAME.into(),
            output_name: "embedding".into(),
            preprocess: pre,
            provenance: Provenance::default(),
            weights_sha256: None,
        }
    }

    /// Manifests the fuzzer found accepted although their preprocessing gives infinities.
    #[test]
    fn unusable_preprocessing_is_refused_by_name() {
        let ok = manifest(Preprocess::imagenet(256, 224));
        assert_eq!(Manifest::from_json(&ok.to_json()).unwrap(), ok);
        let json = ok.to_json();
        let e = Manifest::from_json(&json.replacen("0.406", "1e39", 1)).unwrap_err().to_string();
        assert!(e.contains("preprocessing") && e.contains("finite"), "{e}");
        let base = Preprocess::imagenet(256, 224);
        for (pre, says) in [
            (Preprocess { scale: 3.9e36, ..base.clone() }, "overflows"),
            (Preprocess { std: [0.2, 0.0, 0.2], ..base.clone() }, "non-zero"),
            (Preprocess { crop: 0, ..base.clone() }, "crop 0"),
            (Preprocess { resize: 4_000_000_000, ..base.clone() }, "resize 4000000000"),
        ] {
            let e = Manifest::from_json(&manifest(pre).to_json()).unwrap_err().to_string();
            assert!(e.contains("preprocessing") && e.contains(says), "{e}");
        }
    }
}
