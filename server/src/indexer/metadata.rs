//! Metadata an indexing job attaches to its items besides what it measures itself: the
//! rows of a side file (CSV with a header, or JSON Lines), matched to files by path, and
//! the name of each file's folder (`--label-from-folder`).
//!
//! A side file names each file by its path relative to the job's folder (`a/b.png`,
//! `./a/b.png`) or by its absolute path. CSV cells that read as numbers become JSON
//! numbers, empty cells are left out; JSON Lines rows are objects whose other members are
//! taken as they are.

use std::collections::HashMap;
use std::path::{Component, Path};

use serde_json::{Map, Value};

use crate::{Error, Result};

/// Keys the job sets itself, which a side file may not set.
pub const RESERVED: [&str; 3] = ["path", "bytes", "source"];
/// The key the folder name goes under.
pub const LABEL_KEY: &str = "label";

/// One row as read: its line, the path it names, the other fields.
type Row = (usize, String, Map<String, Value>);

/// Side-file rows by the relative, '/'-separated path of the file they describe.
#[derive(Debug, Default)]
pub struct SideFile {
    rows: HashMap<String, (usize, Map<String, Value>)>,
}

fn bad(file: &Path, line: usize, reason: impl Into<String>) -> Error {
    Error::MetadataFile { path: file.to_path_buf(), line, reason: reason.into() }
}

/// The '/'-separated form of `path` relative to `root`, or why it has none.
fn relative(path: &str, root: &Path) -> std::result::Result<String, String> {
    let p = Path::new(path);
    let below = if p.is_absolute() {
        p.strip_prefix(root).map_err(|_| format!("{path} is not under the folder being indexed, {}", root.display()))?
    } else {
        p
    };
    let mut parts = Vec::new();
    for c in below.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::CurDir => {}
            _ => return Err(format!("`{path}` is not a plain path (no `..`); name the file relative to the folder")),
        }
    }
    if parts.is_empty() {
        return Err("the path is empty".into());
    }
    Ok(parts.join("/"))
}

/// A CSV cell as JSON: a number when it reads as one, else text; `None` when empty.
fn cell(text: &str) -> Option<Value> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    if let Ok(i) = t.parse::<i64>() {
        return Some(Value::from(i));
    }
    match t.parse::<f64>() {
        Ok(x) if x.is_finite() && !t.starts_with('+') => Some(Value::from(x)),
        _ => Some(Value::String(text.to_string())),
    }
}

impl SideFile {
    /// Reads `file` (`.csv`, or `.jsonl` / `.ndjson`) for the folder `root` (canonical).
    pub fn read(file: &Path, root: &Path) -> Result<Self> {
        let ext = file.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        let text = std::fs::read_to_string(file).map_err(Error::io(file))?;
        let rows = match ext.as_deref() {
            Some("csv") => Self::csv_rows(file, &text)?,
            Some("jsonl") | Some("ndjson") => Self::jsonl_rows(file, &text)?,
            _ => return Err(bad(
                file,
                0,
                "a metadata file is .csv (a header row with a `path` column) or .jsonl (one object with `path` a line)",
            )),
        };
        let mut out = SideFile::default();
        for (line, path, fields) in rows {
            if let Some(key) = fields.keys().find(|k| RESERVED.contains(&k.as_str())) {
                return Err(bad(file, line, format!("`{key}` is set by the job itself; rename that column")));
            }
            let rel = relative(&path, root).map_err(|r| bad(file, line, r))?;
            if let Some((first, _)) = out.rows.get(&rel) {
                return Err(bad(file, line, format!("{rel} is described twice, also on line {first}; keep one row")));
            }
            out.rows.insert(rel, (line, fields));
        }
        Ok(out)
    }

    fn csv_rows(file: &Path, text: &str) -> Result<Vec<Row>> {
        let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(text.as_bytes());
        let headers = reader.headers().map_err(|e| bad(file, 1, format!("unreadable header: {e}")))?.clone();
        let Some(path_col) = headers.iter().position(|h| h.trim() == "path") else {
            return Err(bad(file, 1, "the header has no `path` column naming each image"));
        };
        let mut rows = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|e| {
                let line = e.position().map(|p| p.line() as usize).unwrap_or(0);
                bad(file, line, e.to_string())
            })?;
            let line = record.position().map(|p| p.line() as usize).unwrap_or(0);
            let mut fields = Map::new();
            for (i, (name, value)) in headers.iter().zip(record.iter()).enumerate() {
                if i != path_col {
                    if let Some(v) = cell(value) {
                        fields.insert(name.trim().to_string(), v);
                    }
                }
            }
            rows.push((line, record[path_col].trim().to_string(), fields));
        }
        Ok(rows)
    }

    fn jsonl_rows(file: &Path, text: &str) -> Result<Vec<Row>> {
        let mut rows = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            if raw.trim().is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(raw).map_err(|e| bad(file, line, format!("not JSON: {e}")))?;
            let Value::Object(mut fields) = value else {
                return Err(bad(file, line, "each line is a JSON object"));
            };
            let path = match fields.remove("path") {
                Some(Value::String(p)) => p,
                _ => return Err(bad(file, line, "the object has no string `path` naming the image")),
            };
            rows.push((line, path, fields));
        }
        Ok(rows)
    }

    /// The fields for the file at `rel`.
    pub fn fields(&self, rel: &str) -> Option<&Map<String, Value>> {
        self.rows.get(rel).map(|(_, f)| f)
    }

    /// The rows that describe none of `listed` (relative paths), as `(line, path)`.
    pub fn unmatched<'a>(&self, listed: impl IntoIterator<Item = &'a str>) -> Vec<(usize, String)> {
        let listed: std::collections::HashSet<&str> = listed.into_iter().collect();
        let mut out: Vec<(usize, String)> =
            self.rows.iter().filter(|(p, _)| !listed.contains(p.as_str())).map(|(p, (l, _))| (*l, p.clone())).collect();
        out.sort();
        out
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when the file had no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// The folder label of the file at `rel`: the name of the folder it is in, `None` for a
/// file directly in the job's folder.
pub fn folder_label(rel: &str) -> Option<&str> {
    let mut parts = rel.rsplit('/');
    parts.next();
    parts.next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(name: &str, text: &str) -> Result<SideFile> {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join(name);
        std::fs::write(&f, text).unwrap();
        SideFile::read(&f, Path::new("/data/gallery"))
    }

    #[test]
    fn csv_rows_are_typed_and_keyed_by_relative_path() {
        let s = side("m.csv", "path,label,year,price,note\n./shoes/a.png,shoe,2021,19.5,\n/data/gallery/b.png,\"boot, tall\",1999,x,\"said \"\"hi\"\"\"\n").unwrap();
        let a = s.fields("shoes/a.png").unwrap();
        assert_eq!(a["label"], "shoe");
        assert_eq!(a["year"], 2021);
        assert_eq!(a["price"], 19.5);
        assert!(!a.contains_key("note"), "empty cells are left out");
        let b = s.fields("b.png").unwrap();
        assert_eq!(b["label"], "boot, tall");
        assert_eq!(b["price"], "x");
        assert_eq!(b["note"], "said \"hi\"");
        assert_eq!(s.unmatched(["b.png"]), vec![(2, "shoes/a.png".to_string())]);
    }

    #[test]
    fn jsonl_rows_keep_their_json() {
        let s = side(
            "m.jsonl",
            "{\"path\": \"a.png\", \"tags\": [\"x\"], \"n\": {\"k\": 1}}\n\n{\"path\": \"b/c.png\", \"label\": 3}\n",
        )
        .unwrap();
        assert_eq!(s.fields("a.png").unwrap()["tags"][0], "x");
        assert_eq!(s.fields("b/c.png").unwrap()["label"], 3);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn bad_side_files_name_the_line_and_the_fix() {
        let msg = |name: &str, text: &str| side(name, text).unwrap_err().to_string();
        assert!(msg("m.csv", "file,label\na.png,x\n").contains("no `path` column"));
        assert!(
            msg("m.csv", "path,label\na.png,x\na.png,y\n").contains("line 3: a.png is described twice, also on line 2")
        );
        assert!(msg("m.csv", "path,bytes\na.png,3\n").contains("`bytes` is set by the job"));
        assert!(msg("m.csv", "path,label\na.png,x,extra\n").contains("line 2"));
        assert!(msg("m.csv", "path,label\n/elsewhere/a.png,x\n").contains("not under the folder"));
        assert!(msg("m.csv", "path,label\n../a.png,x\n").contains("no `..`"));
        assert!(msg("m.jsonl", "{\"path\": \"a.png\"}\n[1]\n").contains("line 2: each line is a JSON object"));
        assert!(msg("m.jsonl", "{\"label\": 1}\n").contains("no string `path`"));
        assert!(msg("m.jsonl", "{oops\n").contains("line 1: not JSON"));
        assert!(msg("m.txt", "").contains(".csv"));
    }

    #[test]
    fn folder_labels() {
        assert_eq!(folder_label("shoes/a.png"), Some("shoes"));
        assert_eq!(folder_label("x/shoes/a.png"), Some("shoes"));
        assert_eq!(folder_label("a.png"), None);
    }
}
