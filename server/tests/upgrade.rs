//! A model upgrade without downtime: a gallery indexed by `server index` is re-embedded
//! with a new model (16-d instead of 8-d) beside the live index and swapped in while
//! searches run without pause: none fails. Changes wait (409) until the swap; the upgrade
//! survives a restart, and `server index` goes on with the new model.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{client, png, tiny_model, tiny_model_with, ServerProc, DIM};
use serde_json::{json, Value};

const KEY: &str = "up-key";

fn wait_done(http: &reqwest::blocking::Client, srv: &ServerProc, name: &str) -> Value {
    let started = Instant::now();
    loop {
        let v: Value = http.get(srv.url(&format!("/collections/{name}/upgrade"))).send().unwrap().json().unwrap();
        if v["upgrade"]["state"] != "running" {
            return v;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "the upgrade did not end: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn upgrade_under_search_load_with_zero_failed_queries() {
    let dir = tempfile::tempdir().unwrap();
    let old_model = tiny_model(dir.path());
    let new_model = tiny_model_with(dir.path(), "new.onnx", 16, 21, "new");
    let images = dir.path().join("photos");
    std::fs::create_dir_all(&images).unwrap();
    for i in 0..60u64 {
        std::fs::write(images.join(format!("img{i:02}.png")), png(i, 48, 36)).unwrap();
    }
    let index = dir.path().join("index");
    let run_index = || common::run_index(&old_model, &images, &index, &[]);
    run_index();
    let srv = ServerProc::start(&old_model, &index, &[("STML_SERVER_API_KEY", KEY)]);
    let http = client();
    let before: Value = http.get(srv.url("/stats")).send().unwrap().json().unwrap();
    assert_eq!((before["index"]["images"].as_u64(), before["index"]["dim"].as_u64()), (Some(60), Some(DIM as u64)));

    // Steady search load from two clients until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..2u64)
        .map(|c| {
            let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), srv.url("/search?k=5"));
            std::thread::spawn(move || {
                let http = client();
                let mut i = c;
                while !stop.load(Ordering::Relaxed) {
                    let res = http.post(&url).header("Content-Type", "image/png").body(png(i % 60, 48, 36)).send();
                    match res {
                        Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                    i += 2;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));

    let res = http.post(srv.url("/collections/default/upgrade")).json(&json!({ "model": new_model })).send().unwrap();
    assert_eq!(res.status(), 401, "upgrades need the key");
    let res = http
        .post(srv.url("/collections/default/upgrade"))
        .bearer_auth(KEY)
        .json(&json!({ "model": new_model }))
        .send()
        .unwrap();
    assert_eq!(res.status(), 202, "{}", res.text().unwrap());
    // While it runs, a change is refused with 409 (unless it already ended).
    let write = http
        .post(srv.url("/images"))
        .bearer_auth(KEY)
        .json(&json!({ "id": "late", "vector": vec![0.1f32; DIM] }))
        .send()
        .unwrap();
    let running = http.get(srv.url("/collections/default/upgrade")).send().unwrap().json::<Value>().unwrap()["upgrade"]
        ["state"]
        == "running";
    if running {
        assert_eq!(write.status(), 409);
    }
    let done = wait_done(&http, &srv, "default");
    assert_eq!(done["upgrade"]["state"], "done", "{done}");
    assert_eq!(done["upgrade"]["items"], 60);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("{ok} searches during the upgrade, {failed} failed");
    assert_eq!(failed, 0, "no query fails during the upgrade");
    assert!(ok > 20, "the load ran: {ok} searches");

    // The new model serves: 16-d vectors, the same items, the same top hit for an indexed image.
    let after: Value = http.get(srv.url("/stats")).send().unwrap().json().unwrap();
    assert_eq!((after["index"]["images"].as_u64(), after["index"]["dim"].as_u64()), (Some(60), Some(16)));
    let r: Value = http
        .post(srv.url("/search?k=1"))
        .header("Content-Type", "image/png")
        .body(png(7, 48, 36))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(r["hits"][0]["metadata"]["path"].as_str().unwrap().ends_with("img07.png"), "{r}");
    let w = http
        .post(srv.url("/images"))
        .bearer_auth(KEY)
        .json(&json!({ "id": "late", "vector": vec![0.1f32; 16] }))
        .send()
        .unwrap();
    assert_eq!(w.status(), 201, "changes are taken again after the swap");

    // A restart keeps the upgrade although the settings still name the old model, and
    // the index job goes on with the new one.
    srv.stop();
    let log = run_index();
    assert!(log.contains("skipped=60"), "{log}");
    let srv = ServerProc::start(&old_model, &index, &[("STML_SERVER_API_KEY", KEY)]);
    let again: Value = http.get(srv.url("/stats")).send().unwrap().json().unwrap();
    assert_eq!((again["index"]["images"].as_u64(), again["index"]["dim"].as_u64()), (Some(61), Some(16)));
    assert!(!index.join(server::store::DB_FILE).exists(), "the old index files are gone");

    // An item with no source file (added as a vector) stops an upgrade, which then fails
    // cleanly: the collection takes changes again and keeps its model.
    let res = http
        .post(srv.url("/collections/default/upgrade"))
        .bearer_auth(KEY)
        .json(&json!({ "model": old_model }))
        .send()
        .unwrap();
    assert_eq!(res.status(), 202);
    let failed = wait_done(&http, &srv, "default");
    assert_eq!(failed["upgrade"]["state"], "failed");
    assert!(failed["upgrade"]["message"].as_str().unwrap().contains("no source file"), "{failed}");
    let w =
        http.patch(srv.url("/images/late")).bearer_auth(KEY).json(&json!({ "metadata": { "x": 1 } })).send().unwrap();
    assert_eq!(w.status(), 200);
    let still: Value = http.get(srv.url("/stats")).send().unwrap().json().unwrap();
    assert_eq!(still["index"]["dim"], 16);
    // With skip_unreadable it goes through, leaving that item out.
    let res = http
        .post(srv.url("/collections/default/upgrade"))
        .bearer_auth(KEY)
        .json(&json!({ "model": old_model, "skip_unreadable": true }))
        .send()
        .unwrap();
    assert_eq!(res.status(), 202);
    let done = wait_done(&http, &srv, "default");
    assert_eq!((done["upgrade"]["items"].as_u64(), done["upgrade"]["skipped"].as_u64()), (Some(60), Some(1)), "{done}");
    let back: Value = http.get(srv.url("/stats")).send().unwrap().json().unwrap();
    assert_eq!(back["index"]["dim"].as_u64(), Some(DIM as u64));
}

#[test]
fn uploads_kept_as_originals_can_be_re_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let old_model = tiny_model(dir.path());
    let new_model = tiny_model_with(dir.path(), "new.onnx", 16, 21, "new");
    let srv = ServerProc::start(&old_model, &dir.path().join("index"), &[("STML_SERVER_API_KEY", KEY)]);
    let http = client();
    let create = |name: &str, keep: bool| {
        let body = json!({ "name": name, "model": old_model, "keep_originals": keep });
        let res = http.post(srv.url("/collections")).bearer_auth(KEY).json(&body).send().unwrap();
        assert_eq!(res.status(), 201, "{}", res.text().unwrap());
        let v: Value = res.json().unwrap();
        assert_eq!(v["keep_originals"], keep);
    };
    create("kept", true);
    create("thrown", false);
    for name in ["kept", "thrown"] {
        for i in 0..6u64 {
            let res = http
                .post(srv.url(&format!("/collections/{name}/images?id=up{i}")))
                .bearer_auth(KEY)
                .header("Content-Type", "image/png")
                .body(png(100 + i, 40, 30))
                .send()
                .unwrap();
            assert_eq!(res.status(), 201);
        }
    }
    let upgrade = |name: &str| {
        let res = http
            .post(srv.url(&format!("/collections/{name}/upgrade")))
            .bearer_auth(KEY)
            .json(&json!({ "model": new_model }))
            .send()
            .unwrap();
        assert_eq!(res.status(), 202);
        wait_done(&http, &srv, name)
    };
    let kept = upgrade("kept");
    assert_eq!(
        (kept["upgrade"]["state"].as_str(), kept["upgrade"]["items"].as_u64()),
        (Some("done"), Some(6)),
        "{kept}"
    );
    let r: Value = http
        .post(srv.url("/collections/kept/search?k=1"))
        .header("Content-Type", "image/png")
        .body(png(103, 40, 30))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r["hits"][0]["id"], "up3", "re-embedded from the kept originals: {r}");
    let thrown = upgrade("thrown");
    assert_eq!(thrown["upgrade"]["state"], "failed");
    assert!(thrown["upgrade"]["message"].as_str().unwrap().contains("keep_originals"), "{thrown}");
}

#[test]
fn judge_before_the_swap_then_discard_or_swap() {
    let dir = tempfile::tempdir().unwrap();
    let old_model = tiny_model(dir.path());
    let new_model = tiny_model_with(dir.path(), "new.onnx", 16, 21, "new");
    let srv = ServerProc::start(&old_model, &dir.path().join("index"), &[("STML_SERVER_API_KEY", KEY)]);
    let http = client();
    let body = json!({ "name": "pets", "model": old_model, "keep_originals": true });
    assert_eq!(http.post(srv.url("/collections")).bearer_auth(KEY).json(&body).send().unwrap().status(), 201);
    for i in 0..24u64 {
        let label = ["cat", "dog", "fish"][i as usize % 3];
        let meta = format!("%7B%22label%22%3A%22{label}%22%7D");
        let res = http
            .post(srv.url(&format!("/collections/pets/images?id=p{i:02}&metadata={meta}")))
            .bearer_auth(KEY)
            .header("Content-Type", "image/png")
            .body(png(200 + i, 40, 30))
            .send()
            .unwrap();
        assert_eq!(res.status(), 201);
    }
    let start = || {
        let res = http
            .post(srv.url("/collections/pets/upgrade"))
            .bearer_auth(KEY)
            .json(&json!({ "model": new_model, "swap": false }))
            .send()
            .unwrap();
        assert_eq!(res.status(), 202, "{}", res.text().unwrap());
        wait_done(&http, &srv, "pets")
    };
    let ready = start();
    assert_eq!(ready["upgrade"]["state"], "ready", "{ready}");
    let summary = &ready["upgrade"]["summary"];
    let overlap = summary["mean_overlap"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&overlap), "{summary}");
    assert_eq!(summary["queries"], 24);
    let recall = summary["recall"].as_array().expect("labels give Recall@K of both models");
    assert!(recall[0]["r1"].as_f64().unwrap() >= 0.0 && recall[1]["rk"].as_f64().unwrap() <= 1.0);
    // The page and the picture.
    let page = http.get(srv.url("/collections/pets/upgrade/report")).send().unwrap().text().unwrap();
    assert!(page.contains("24 sampled images") && page.contains("Recall@1") && page.contains("report.png"), "{page}");
    let png_bytes = http.get(srv.url("/collections/pets/upgrade/report.png")).send().unwrap().bytes().unwrap();
    let picture = image::load_from_memory(&png_bytes).expect("a PNG");
    assert!(picture.width() > 500 && picture.height() > 300, "{}x{}", picture.width(), picture.height());
    std::fs::write(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("upgrade_compare.png"), &png_bytes).unwrap();
    // Still the old model, and no changes while it waits.
    let stats: Value = http.get(srv.url("/collections/pets/stats")).send().unwrap().json().unwrap();
    assert_eq!(stats["index"]["dim"].as_u64(), Some(DIM as u64));
    let w = http
        .patch(srv.url("/collections/pets/images/p00"))
        .bearer_auth(KEY)
        .json(&json!({ "metadata": { "x": 1 } }))
        .send()
        .unwrap();
    assert_eq!(w.status(), 409);
    // Discard: the old model stays, changes are taken again.
    let res = http.delete(srv.url("/collections/pets/upgrade")).bearer_auth(KEY).send().unwrap();
    assert_eq!(res.status(), 200);
    let w = http
        .patch(srv.url("/collections/pets/images/p00"))
        .bearer_auth(KEY)
        .json(&json!({ "metadata": { "x": 1 } }))
        .send()
        .unwrap();
    assert_eq!(w.status(), 200);
    assert_eq!(http.post(srv.url("/collections/pets/upgrade/swap")).bearer_auth(KEY).send().unwrap().status(), 400);
    // Again, and swap.
    assert_eq!(start()["upgrade"]["state"], "ready");
    let res = http.post(srv.url("/collections/pets/upgrade/swap")).bearer_auth(KEY).send().unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().unwrap());
    let stats: Value = http.get(srv.url("/collections/pets/stats")).send().unwrap().json().unwrap();
    assert_eq!((stats["index"]["dim"].as_u64(), stats["index"]["images"].as_u64()), (Some(16), Some(24)));
    let done: Value = http.get(srv.url("/collections/pets/upgrade")).send().unwrap().json().unwrap();
    assert_eq!(done["upgrade"]["state"], "done");

    // An upgrade built but not swapped when the server stops is gone after the restart,
    // its folder too; the collection serves its live version.
    let old_again = tiny_model_with(dir.path(), "old-again.onnx", 8, 33, "again");
    let res = http
        .post(srv.url("/collections/pets/upgrade"))
        .bearer_auth(KEY)
        .json(&json!({ "model": old_again, "swap": false }))
        .send()
        .unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(wait_done(&http, &srv, "pets")["upgrade"]["state"], "ready");
    let home = dir.path().join("index").join("collections").join("pets");
    let versions = || {
        std::fs::read_dir(&home)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("v-"))
            .count()
    };
    assert_eq!(versions(), 2, "the live version and the one ready");
    srv.stop();
    let srv = ServerProc::start(&old_model, &dir.path().join("index"), &[("STML_SERVER_API_KEY", KEY)]);
    assert_eq!(versions(), 1, "the unswapped version was removed");
    let stats: Value = http.get(srv.url("/collections/pets/stats")).send().unwrap().json().unwrap();
    assert_eq!((stats["index"]["dim"].as_u64(), stats["index"]["images"].as_u64()), (Some(16), Some(24)));
}
