//! The loop from a served gallery to a better model (issue 10, item 4): a model fitted on
//! a folder indexes that folder (`server index`), the server serves it and takes uploads
//! (their originals kept), a snapshot of the live collection is what `trainer fit
//! --from-index` learns from, and the new model is swapped in by an upgrade while the
//! server keeps serving. Afterwards the collection folder itself reads as training data
//! too (its live version).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use server::gallery::IndexKind;
use server::settings::Settings;
use trainer::data::{self, ImageSource, Split};

const KEY: &str = "loop-key";

/// A small, fast schedule on `data` (the format detected).
fn tiny_fit(data: &Path, run: &Path) -> trainer::commands::fit::FitSummary {
    trainer::commands::fit::fit(e2e::tiny_config(data, 1), run).expect("fit")
}

fn export(run: &Path, out: &Path) -> PathBuf {
    trainer::commands::export::export_run(run, out, false, None).expect("export");
    out.to_path_buf()
}

fn png(seed: u8) -> Vec<u8> {
    let img =
        image::RgbImage::from_fn(40, 40, |x, y| image::Rgb([seed.wrapping_mul(37), (x * 6) as u8, (y * 6) as u8]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// The server on a loopback port, in this process, until `stop`.
struct Served {
    url: String,
    handle: actix_web::dev::ServerHandle,
    thread: std::thread::JoinHandle<()>,
}

impl Served {
    fn start(settings: Settings) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let running = server::serve::start(settings).expect("serve");
                tx.send((running.addr, running.handle())).unwrap();
                running.wait().await.expect("served");
            })
        });
        let (addr, handle) = rx.recv_timeout(Duration::from_secs(60)).expect("the server starts");
        Self { url: format!("http://{addr}"), handle, thread }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    fn stop(self) {
        actix_web::rt::System::new().block_on(self.handle.stop(true));
        self.thread.join().unwrap();
    }
}

#[test]
fn index_a_gallery_fit_on_it_and_upgrade_the_collection() {
    let dir = tempfile::tempdir().unwrap();
    let gallery_dir = dir.path().join("gallery");
    e2e::write_shapes(&gallery_dir, 4, 10, 48);

    // A first model, fitted on the folder itself.
    let first =
        export(&PathBuf::from(tiny_fit(&gallery_dir, &dir.path().join("run-a")).run), &dir.path().join("a.onnx"));

    // `server index` the folder (labels from the subfolders), into a collection that keeps
    // the originals of what is uploaded later.
    let mut settings = Settings::load(None, std::env::vars()).unwrap();
    settings.model = first.clone();
    settings.index_dir = dir.path().join("index");
    settings.host = "127.0.0.1".into();
    settings.port = 0;
    settings.api_key = Some(KEY.into());
    settings.keep_originals = true;
    {
        let model = server::serve::open_model(&settings).unwrap();
        let gallery = server::serve::open_gallery(&settings, &model, IndexKind::Hnsw).unwrap();
        let opts = server::indexer::IndexOptions {
            batch: 8,
            max_pixels: settings.max_image_pixels,
            sync: false,
            metadata_file: None,
            label_from_folder: true,
            shard: None,
        };
        let report = server::indexer::index_folder(&model, gallery.as_ref(), &gallery_dir, &opts, &mut |_| {}).unwrap();
        assert_eq!(report.progress.indexed, 40);
        gallery.snapshot().unwrap();
    }

    let srv = Served::start(settings.clone());
    let http = reqwest::blocking::Client::new();
    // Uploads: kept as originals, so they can be trained on and re-embedded.
    for i in 0..4u8 {
        let meta = json!({ "label": format!("class_{}", i % 3) }).to_string();
        let res = http
            .post(srv.url("/images"))
            .query(&[("id", format!("upload{i}")), ("metadata", meta)])
            .bearer_auth(KEY)
            .header("Content-Type", "image/png")
            .body(png(i))
            .send()
            .unwrap();
        assert_eq!(res.status(), 201, "{}", res.text().unwrap());
    }

    // The served index is locked by the server: the trainer says to take a snapshot.
    let err = data::load(&settings.index_dir, data::Format::Auto, Split::All).unwrap_err().to_string();
    assert!(err.contains("snapshot"), "{err}");
    let res = http.post(srv.url("/collections/default/snapshots")).bearer_auth(KEY).send().unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().unwrap());
    let snap: Value = res.json().unwrap();
    let file = PathBuf::from(snap["file"].as_str().expect("the snapshot's file"));

    // Fit on the served gallery: 40 indexed files read from their paths, 4 uploads from
    // the kept originals in the snapshot.
    let loaded = data::load(&file, data::Format::Auto, Split::All).unwrap();
    assert_eq!(loaded.format, data::Format::Index);
    assert_eq!(loaded.len(), 44);
    assert_eq!(loaded.samples.iter().filter(|s| matches!(s.source, ImageSource::Stored { .. })).count(), 4);
    assert_eq!(loaded.classes, ["class_0", "class_1", "class_2", "class_3"], "labels come from the metadata");
    let fitted = tiny_fit(&file, &dir.path().join("run-b"));
    assert_eq!((fitted.train_images, fitted.skipped_images), (44, 0));
    let second = export(&PathBuf::from(&fitted.run), &dir.path().join("b.onnx"));

    // Upgrade the collection to the new model, judged on its own images, swapped at once.
    let res = http
        .post(srv.url("/collections/default/upgrade"))
        .bearer_auth(KEY)
        .json(&json!({ "model": second }))
        .send()
        .unwrap();
    assert_eq!(res.status(), 202, "{}", res.text().unwrap());
    let started = Instant::now();
    let done = loop {
        let v: Value = http.get(srv.url("/collections/default/upgrade")).send().unwrap().json().unwrap();
        if v["upgrade"]["state"] != "running" {
            break v;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "the upgrade did not end: {v}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        (done["upgrade"]["state"].as_str(), done["upgrade"]["items"].as_u64()),
        (Some("done"), Some(44)),
        "{done}"
    );
    let stats: Value = http.get(srv.url("/stats")).send().unwrap().json().unwrap();
    let identity = models::onnx::read_manifest(&second).unwrap().weights_sha256.unwrap();
    assert_eq!(stats["model"]["weights_sha256"], identity.as_str(), "the new model serves: {stats}");
    let r: Value = http
        .post(srv.url("/search?k=3"))
        .header("Content-Type", "image/png")
        .body(png(2))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r["hits"][0]["id"], "upload2", "the new model finds the upload itself: {r}");
    srv.stop();

    // With the server stopped, the collection folder reads directly, at its live version.
    let live = data::load(&settings.index_dir, data::Format::Auto, Split::All).unwrap();
    assert_eq!(live.format, data::Format::Index);
    assert_eq!(live.len(), 44);
    assert_eq!(live.samples.iter().filter(|s| matches!(s.source, ImageSource::Stored { .. })).count(), 4);
}
