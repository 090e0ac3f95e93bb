//! `server index` as a user runs it: every file is an item (byte-identical copies too), a
//! re-run skips what is indexed at each path, `--sync` follows deletions and edits, and a
//! run killed with SIGKILL then resumed ends with the items of one clean run.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use common::{client, index_cmd, png, run_index, tiny_model, ServerProc, DIM};
use serde_json::Value;
use server::indexer::{content_id, path_id};
use server::store::{NewRecord, Record, Store};

/// One item as the job stored it: relative path, absolute source path, content hash.
type Item = (String, String, String);

/// A count from the final `indexing done` line, e.g. `count(log, "skipped")`.
fn count(log: &str, key: &str) -> usize {
    let line = log.lines().find(|l| l.contains("indexing done")).unwrap_or_else(|| panic!("no summary in\n{log}"));
    let pat = format!("{key}=");
    let rest = line.split(&pat).nth(1).unwrap_or_else(|| panic!("no `{key}` in {line}"));
    rest.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
}

/// Every stored item by id, read in-process from the index directory.
fn items(index: &Path) -> BTreeMap<String, Item> {
    let store = Store::open(index).unwrap();
    store
        .all_records()
        .unwrap()
        .into_iter()
        .map(|r| {
            let m = &r.metadata;
            let item = (
                m["path"].as_str().unwrap().to_string(),
                m["source"]["path"].as_str().unwrap().to_string(),
                r.content_hash.clone().unwrap(),
            );
            (r.id, item)
        })
        .collect()
}

/// Writes `files` (relative path, seed) under `root`; equal seeds give byte-identical files.
fn write_images(root: &Path, files: &[(&str, u64)]) {
    for (rel, seed) in files {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, png(*seed, 40, 30)).unwrap();
    }
}

fn abs(root: &Path, rel: &str) -> PathBuf {
    root.canonicalize().unwrap().join(rel)
}

#[test]
fn kill_9_then_resume_matches_one_clean_run() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let images = dir.path().join("photos");
    let names: Vec<(String, u64)> = (0..40u64)
        .map(|i| {
            // Every fourth file is a byte-identical copy of an earlier one, elsewhere.
            let seed = if i % 4 == 3 { i - 3 } else { i };
            (format!("{}/img{i:02}.png", ["a", "b/c", "d"][i as usize % 3]), seed)
        })
        .collect();
    let files: Vec<(&str, u64)> = names.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    write_images(&images, &files);

    let clean = dir.path().join("clean");
    let log = run_index(&model, &images, &clean, &["--batch-size", "2"]);
    assert_eq!((count(&log, "indexed"), count(&log, "skipped"), count(&log, "failed")), (40, 0, 0), "{log}");

    // Start the same job into another index and kill it once a batch is committed.
    let resumed = dir.path().join("resumed");
    let mut child = index_cmd(&model, &images, &resumed, &["--batch-size", "2"])
        .env("RUST_LOG", "warn,server=debug")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        let committed = line.contains("batch committed") && !line.contains("done=0 ");
        seen.push(line);
        if committed {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(seen.iter().any(|l| l.contains("batch committed")), "{}", seen.join("\n"));
    let partial = items(&resumed).len();
    assert!(partial >= 2, "a committed batch is stored, found {partial} items");
    eprintln!("killed after {partial} of 40 items");

    let log = run_index(&model, &images, &resumed, &["--batch-size", "2"]);
    assert_eq!(count(&log, "indexed") + count(&log, "skipped"), 40, "{log}");
    assert_eq!(count(&log, "indexed"), 40 - partial, "partial run stored {partial}: {log}");
    assert_eq!(items(&resumed), items(&clean));
    assert_eq!(items(&clean).len(), 40);
    let log = run_index(&model, &images, &resumed, &["--batch-size", "7"]);
    assert_eq!((count(&log, "indexed"), count(&log, "skipped")), (0, 40), "{log}");
}

#[test]
fn identical_files_are_two_items_each_found_by_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let images = dir.path().join("photos");
    write_images(&images, &[("a.png", 1), ("sub/a-copy.png", 1), ("b.png", 2), ("c.png", 3)]);
    let index = dir.path().join("index");

    let log = run_index(&model, &images, &index, &[]);
    assert_eq!((count(&log, "indexed"), count(&log, "skipped")), (4, 0), "{log}");
    let log = run_index(&model, &images, &index, &[]);
    let counts = ["indexed", "updated", "skipped", "removed", "failed"].map(|k| count(&log, k));
    assert_eq!(counts, [0, 0, 4, 0, 0], "{log}");

    let stored = items(&index);
    assert_eq!(stored.len(), 4);
    for rel in ["a.png", "sub/a-copy.png", "b.png", "c.png"] {
        let a = abs(&images, rel);
        let (path, source, _) = &stored[&path_id(&a)];
        assert_eq!((path.as_str(), source.as_str()), (rel, a.to_str().unwrap()));
    }
    assert_eq!(stored[&path_id(&abs(&images, "a.png"))].2, stored[&path_id(&abs(&images, "sub/a-copy.png"))].2);

    // Over HTTP: the query finds both copies at distance ~0, each under its own path.
    let srv = ServerProc::start(&model, &index, &[]);
    let http = client();
    let res =
        http.post(srv.url("/search?k=2")).header("Content-Type", "image/png").body(png(1, 40, 30)).send().unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().unwrap();
    let mut found: Vec<&str> =
        v["hits"].as_array().unwrap().iter().map(|h| h["metadata"]["path"].as_str().unwrap()).collect();
    found.sort();
    assert_eq!(found, ["a.png", "sub/a-copy.png"], "{v}");
    assert!(v["hits"].as_array().unwrap().iter().all(|h| h["distance"].as_f64().unwrap() < 1e-3), "{v}");
    for hit in v["hits"].as_array().unwrap() {
        let id = hit["id"].as_str().unwrap();
        let got: Value = http.get(srv.url(&format!("/images/{id}"))).send().unwrap().json().unwrap();
        let rel = got["metadata"]["path"].as_str().unwrap();
        assert_eq!(id, path_id(&abs(&images, rel)));
        assert_eq!(got["metadata"]["source"]["root"], images.canonicalize().unwrap().to_str().unwrap());
        assert_eq!(got["metadata"]["bytes"], png(1, 40, 30).len());
    }
}

#[test]
fn sync_removes_deleted_files_and_reembeds_changed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let images = dir.path().join("photos");
    let files = [("keep.png", 1), ("gone.png", 2), ("edited.png", 3), ("touched.png", 4), ("x/y.png", 5)];
    write_images(&images, &files);
    let index = dir.path().join("index");
    run_index(&model, &images, &index, &[]);
    let before = items(&index);

    std::fs::remove_file(images.join("gone.png")).unwrap();
    std::fs::write(images.join("edited.png"), png(99, 41, 30)).unwrap();
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    std::fs::File::options().write(true).open(images.join("touched.png")).unwrap().set_modified(old).unwrap();

    // Without --sync the deleted file's item stays; the edited file is re-embedded anyway.
    let log = run_index(&model, &images, &index, &[]);
    let counts = ["indexed", "updated", "skipped", "removed", "failed"].map(|k| count(&log, k));
    assert_eq!(counts, [0, 1, 3, 0, 0], "{log}");
    assert!(items(&index).contains_key(&path_id(&abs(&images, "gone.png"))));

    std::fs::write(images.join("edited.png"), png(98, 42, 30)).unwrap();
    let log = run_index(&model, &images, &index, &["--sync"]);
    let counts = ["indexed", "updated", "skipped", "removed", "failed"].map(|k| count(&log, k));
    assert_eq!(counts, [0, 1, 3, 1, 0], "{log}");

    let after = items(&index);
    assert_eq!(after.len(), 4);
    assert!(!after.contains_key(&path_id(&abs(&images, "gone.png"))));
    let edited = path_id(&abs(&images, "edited.png"));
    assert_ne!(after[&edited].2, before[&edited].2, "the edited file's item carries its new content");
    assert_eq!(after[&edited].2, contract::sha256_hex(&png(98, 42, 30)));
    for rel in ["keep.png", "touched.png", "x/y.png"] {
        let id = path_id(&abs(&images, rel));
        assert_eq!(after[&id], before[&id]);
    }
    // The path records follow: the deleted file's is gone, the touched file's has its mtime.
    let store = Store::open(&index).unwrap();
    let records: BTreeMap<PathBuf, _> =
        store.paths_under(&images.canonicalize().unwrap()).unwrap().into_iter().collect();
    assert_eq!(records.len(), 4);
    assert!(!records.contains_key(&abs(&images, "gone.png")));
    assert_eq!(records[&abs(&images, "touched.png")].mtime_ns, Some(1_000_000_000_000_000_000));
    drop(store);

    let log = run_index(&model, &images, &index, &["--sync"]);
    let counts = ["indexed", "updated", "skipped", "removed", "failed"].map(|k| count(&log, k));
    assert_eq!(counts, [0, 0, 4, 0, 0], "{log}");
}

#[test]
fn an_item_from_the_content_id_era_is_replaced_not_duplicated() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let index = dir.path().join("index");
    run_index(&model, &empty, &index, &[]);
    // What an earlier version stored for photos/a.png: id = content hash, no source.
    let bytes = png(1, 40, 30);
    let hash = contract::sha256_hex(&bytes);
    let legacy = NewRecord {
        record: Record {
            id: content_id(&hash),
            metadata: serde_json::json!({ "path": "a.png", "bytes": bytes.len() }),
            content_hash: Some(hash.clone()),
        },
        vector: vec![0.5; DIM],
        thumbnail: None,
        original: None,
    };
    Store::open(&index).unwrap().insert(&[legacy]).unwrap();

    let images = dir.path().join("photos");
    write_images(&images, &[("a.png", 1), ("b.png", 2)]);
    let log = run_index(&model, &images, &index, &[]);
    assert_eq!((count(&log, "indexed"), count(&log, "updated")), (1, 1), "{log}");
    let stored = items(&index);
    let ids: BTreeSet<String> = stored.keys().cloned().collect();
    let want: BTreeSet<String> = ["a.png", "b.png"].iter().map(|rel| path_id(&abs(&images, rel))).collect();
    assert_eq!(ids, want, "the legacy item {} is replaced", content_id(&hash));
}

/// Every stored item's metadata by relative path.
fn metadata_by_path(index: &Path) -> BTreeMap<String, Value> {
    let store = Store::open(index).unwrap();
    store
        .all_records()
        .unwrap()
        .into_iter()
        .map(|r| (r.metadata["path"].as_str().unwrap().to_string(), r.metadata))
        .collect()
}

#[test]
fn metadata_from_a_side_file_and_the_folder_name() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let images = dir.path().join("photos");
    write_images(&images, &[("shoes/a.png", 1), ("shoes/b.png", 2), ("hats/c.png", 3), ("top.png", 4)]);
    std::fs::write(images.join("shoes/broken.png"), b"\x89PNG but not really").unwrap();
    let index = dir.path().join("index");

    // First run: folder labels only. A broken file is reported by path, as a file.
    let log = run_index(&model, &images, &index, &["--label-from-folder"]);
    assert_eq!(count(&log, "failed"), 1, "{log}");
    assert!(log.contains("broken.png: not a readable image"), "{log}");
    let m = metadata_by_path(&index);
    assert_eq!(m["shoes/a.png"]["label"], "shoes");
    assert_eq!(m["hats/c.png"]["label"], "hats");
    assert!(m["top.png"].get("label").is_none(), "a file directly in the folder has no folder label");

    // Second run, nothing re-embedded: a CSV side file adds typed fields and overrides
    // the folder label; a row naming no image is reported, not silently dropped.
    let csv = dir.path().join("meta.csv");
    let abs_c = abs(&images, "hats/c.png");
    std::fs::write(
        &csv,
        format!("path,label,year,price\nshoes/a.png,sneaker,2021,19.5\n{},,1999,\ngone.png,x,1,2\n", abs_c.display()),
    )
    .unwrap();
    let log = run_index(&model, &images, &index, &["--label-from-folder", "--metadata", csv.to_str().unwrap()]);
    assert_eq!((count(&log, "indexed"), count(&log, "skipped")), (0, 4), "{log}");
    assert!(log.contains("metadata rows name no image") && log.contains("line 4: gone.png"), "{log}");
    let m = metadata_by_path(&index);
    assert_eq!(m["shoes/a.png"]["label"], "sneaker");
    assert_eq!(m["shoes/a.png"]["year"], 2021);
    assert_eq!(m["shoes/a.png"]["price"], 19.5);
    assert_eq!(m["hats/c.png"]["label"], "hats", "an empty cell leaves the folder label");
    assert_eq!(m["hats/c.png"]["year"], 1999);
    assert_eq!(m["shoes/b.png"]["label"], "shoes");
    assert!(m["shoes/b.png"]["source"]["path"].as_str().unwrap().ends_with("shoes/b.png"));

    // The served index filters on them; a key PATCHed in survives the next run.
    let srv = ServerProc::start(&model, &index, &[]);
    let http = client();
    let q = serde_json::json!({ "vector": vec![0.1f32; DIM] });
    let r: Value = http.post(srv.url("/search?k=10&filter=year<2000")).json(&q).send().unwrap().json().unwrap();
    let hits: Vec<&str> =
        r["hits"].as_array().unwrap().iter().map(|h| h["metadata"]["path"].as_str().unwrap()).collect();
    assert_eq!(hits, vec!["hats/c.png"]);
    let id = path_id(&abs(&images, "shoes/b.png"));
    let patch = serde_json::json!({ "metadata": { "reviewed": true } });
    assert_eq!(http.patch(srv.url(&format!("/images/{id}"))).json(&patch).send().unwrap().status(), 200);
    drop(srv);
    run_index(&model, &images, &index, &["--label-from-folder", "--metadata", csv.to_str().unwrap()]);
    assert_eq!(metadata_by_path(&index)["shoes/b.png"]["reviewed"], true);

    // A bad side file stops the job before it does anything, naming the line.
    std::fs::write(&csv, "path,label\nshoes/a.png,x\nshoes/a.png,y\n").unwrap();
    let out = index_cmd(&model, &images, &index, &["--metadata", csv.to_str().unwrap()]).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(log.contains("line 3") && log.contains("described twice"), "{log}");
}
