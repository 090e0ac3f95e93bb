//! kill -9 in the middle of a stream of inserts: after a restart every acknowledged id
//! is there, and searchable.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{client, tiny_model, ServerProc, DIM};
use serde_json::{json, Value};

fn vector_for(n: usize) -> Vec<f32> {
    (0..DIM).map(|d| ((n * 31 + d * 7) % 101) as f32 / 101.0 + (n as f32) * 1e-3).collect()
}

#[test]
fn acknowledged_inserts_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let index = dir.path().join("index");
    let srv = ServerProc::start(&model, &index, &[]);
    let acked = Arc::new(Mutex::new(Vec::<(String, usize)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (url, acked, stop) = (srv.url("/images"), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let http = client();
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let n = w * 1_000_000 + i;
                    let id = format!("w{w}-{i}");
                    let body = json!({ "id": id, "metadata": { "n": n }, "vector": vector_for(n) });
                    match http.post(&url).json(&body).send() {
                        Ok(res) if res.status() == 201 => acked.lock().unwrap().push((id, n)),
                        Ok(res) => panic!("insert answered {}", res.status()),
                        Err(_) => break, // the server died mid-request: not acknowledged
                    }
                }
            })
        })
        .collect();
    // Let inserts flow, then kill without warning while they still do.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < 150 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    srv.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 150, "only {} inserts were acknowledged", acked.len());

    let srv = ServerProc::start(&model, &index, &[]);
    let http = client();
    for (id, n) in &acked {
        let res = http.get(srv.url(&format!("/images/{id}"))).send().unwrap();
        assert_eq!(res.status(), 200, "acknowledged id {id} is missing after kill -9");
        let v: Value = res.json().unwrap();
        assert_eq!(v["metadata"]["n"], *n);
    }
    // The rebuilt/caught-up index finds them too.
    for (id, n) in acked.iter().step_by(17) {
        let v: Value = http
            .post(srv.url("/search?k=1"))
            .json(&json!({ "vector": vector_for(*n) }))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(v["hits"][0]["id"], id.as_str());
    }
    let stats: Value = http.get(srv.url("/stats")).send().unwrap().json().unwrap();
    assert!(stats["index"]["images"].as_u64().unwrap() >= acked.len() as u64);
}
