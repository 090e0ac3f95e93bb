//! The manifest in an ONNX file: stored as JSON in `metadata_props` under
//! [`MANIFEST_KEY`], and read back and checked against the model's input and output.

use std::path::Path;

use onnx_protobuf::{Message, ModelProto, StringStringEntryProto};

use crate::manifest::MANIFEST_KEY;
use crate::{Error, Manifest, Result};

/// Stores `manifest` as JSON in the `metadata_props` of `model`.
pub(super) fn write_manifest(model: &mut ModelProto, manifest: &Manifest) {
    model.metadata_props.push(StringStringEntryProto {
        key: MANIFEST_KEY.to_string(),
        value: manifest.to_json(),
        ..Default::default()
    });
}

/// Reads the [`Manifest`] of an ONNX file written by [`export`](super::export), checking
/// that the model has the input and output the manifest names.
pub fn read_manifest(path: &Path) -> Result<Manifest> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    let bad = |reason: String| Error::Manifest { path: path.to_path_buf(), reason };
    let model = ModelProto::parse_from_bytes(&bytes).map_err(|e| {
        bad(format!(
            "it is not a readable ONNX file ({e}); it may be truncated or in another format. Re-export it with `trainer export`"
        ))
    })?;
    let entry = model.metadata_props.iter().find(|p| p.key == MANIFEST_KEY).ok_or_else(|| {
        bad(format!(
            "it has no `{MANIFEST_KEY}` entry in its metadata (the file may be truncated, or exported by another tool). Export the model with `trainer export`, which writes one"
        ))
    })?;
    let manifest = Manifest::from_json(&entry.value).map_err(|e| bad(e.to_string()))?;
    let graph =
        model.graph.as_ref().ok_or_else(|| bad("it has no graph; re-export it with `trainer export`".into()))?;
    if !graph.input.iter().any(|i| i.name == manifest.input_name) {
        return Err(bad(format!(
            "its manifest names input `{}`, which the graph does not have; re-export it with `trainer export`",
            manifest.input_name
        )));
    }
    if !graph.output.iter().any(|o| o.name == manifest.output_name) {
        return Err(bad(format!(
            "its manifest names output `{}`, which the graph does not have; re-export it with `trainer export`",
            manifest.output_name
        )));
    }
    Ok(manifest)
}
