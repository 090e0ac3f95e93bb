//! Snapshots: a collection written to one file while images are being added holds whole
//! inserts only (one consistent moment); restored on another server it answers as the
//! original does.

mod common;

use common::{client, png, tiny_model, ServerProc, DIM};
use serde_json::{json, Value};

const KEY: &str = "snap-key";
const BATCH: usize = 10;

fn vector(i: usize) -> Vec<f32> {
    (0..DIM).map(|d| ((i * 31 + d * 17) as f32 * 0.618).sin()).collect()
}

fn batch(b: usize) -> Value {
    let images: Vec<Value> = (0..BATCH)
        .map(|j| {
            let i = b * BATCH + j;
            json!({ "id": format!("v-{i:04}"), "vector": vector(i), "metadata": { "batch": b } })
        })
        .collect();
    json!({ "images": images })
}

fn snapshot(http: &reqwest::blocking::Client, srv: &ServerProc) -> Value {
    let res = http.post(srv.url("/collections/default/snapshots")).bearer_auth(KEY).send().unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().unwrap());
    res.json().unwrap()
}

#[test]
fn snapshot_under_inserts_and_restore_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let a = ServerProc::start(&model, &dir.path().join("a"), &[("STML_SERVER_API_KEY", KEY)]);
    let http = client();
    // One uploaded image, so thumbnails travel too.
    let res = http
        .post(a.url("/images?id=photo"))
        .bearer_auth(KEY)
        .header("Content-Type", "image/png")
        .body(png(3, 40, 30))
        .send()
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(snapshot(&http, &a)["snapshot"]["items"], 1);

    // Inserts in batches of 10 (each one transaction) from another thread, a snapshot in
    // the middle.
    let base = a.base.clone();
    let writer = std::thread::spawn(move || {
        let http = client();
        for b in 0..40 {
            let res = http.post(format!("{base}/images")).bearer_auth(KEY).json(&batch(b)).send().unwrap();
            assert_eq!(res.status(), 201);
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(30));
    let mid = snapshot(&http, &a);
    writer.join().unwrap();
    let n = mid["snapshot"]["items"].as_u64().unwrap() as usize - 1;
    assert_eq!(n % BATCH, 0, "a snapshot holds whole inserts only: {mid}");
    eprintln!("the snapshot taken during the inserts holds {} of 40 batches", n / BATCH);

    // Restore the mid snapshot on another server: exactly the batches before it.
    let b = ServerProc::start(&model, &dir.path().join("b"), &[("STML_SERVER_API_KEY", KEY)]);
    let restore = |name: &str, file: &Value| {
        let res = b
            .url("/collections")
            .parse::<reqwest::Url>()
            .map(|u| http.post(u).bearer_auth(KEY).json(&json!({ "name": name, "snapshot": file })).send().unwrap())
            .unwrap();
        assert_eq!(res.status(), 201, "{}", res.text().unwrap());
        res.json::<Value>().unwrap()
    };
    let info = restore("mid", &mid["file"]);
    assert_eq!(info["index"]["images"].as_u64().unwrap() as usize, n + 1);
    let c: Value = http
        .post(b.url("/collections/mid/images/count"))
        .json(&json!({ "filter": format!("batch<{}", n / BATCH) }))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(c["count"].as_u64().unwrap() as usize, n, "the batches before the snapshot, whole");

    // A snapshot after the inserts, restored: the same answers, thumbnails included.
    let all = snapshot(&http, &a);
    assert_eq!(all["snapshot"]["items"], 401);
    restore("copy", &all["file"]);
    for q in [3usize, 77, 391] {
        let body = json!({ "vector": vector(q), "k": 8 });
        let x: Value = http.post(a.url("/search")).json(&body).send().unwrap().json().unwrap();
        let y: Value = http.post(b.url("/collections/copy/search")).json(&body).send().unwrap().json().unwrap();
        assert_eq!(x["hits"], y["hits"], "query {q}");
    }
    let thumb = http.get(b.url("/collections/copy/images/photo/thumbnail")).send().unwrap();
    assert_eq!(thumb.status(), 200);
    let original = http.get(a.url("/images/photo/thumbnail")).send().unwrap().bytes().unwrap();
    assert_eq!(thumb.bytes().unwrap(), original);

    // Bad snapshots are refused, naming the file, and leave nothing behind.
    let junk = dir.path().join("junk.tar");
    std::fs::write(&junk, b"not a tar file at all").unwrap();
    let res = http
        .post(b.url("/collections"))
        .bearer_auth(KEY)
        .json(&json!({ "name": "junk", "snapshot": junk }))
        .send()
        .unwrap();
    assert_eq!(res.status(), 400, "a damaged snapshot is bad input");
    let msg = res.text().unwrap();
    assert!(msg.contains("junk.tar"), "{msg}");
    assert_eq!(http.get(b.url("/collections/junk")).send().unwrap().status(), 404);
    let left: Vec<_> =
        std::fs::read_dir(dir.path().join("b/collections")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(left.len(), 2, "only the two restored collections, no half-made one: {left:?}");
    let res = http
        .post(b.url("/collections"))
        .bearer_auth(KEY)
        .json(&json!({ "name": "both", "snapshot": junk, "model": model }))
        .send()
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(http.post(a.url("/collections/default/snapshots")).send().unwrap().status(), 401);
}
