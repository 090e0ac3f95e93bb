//! The search page at `/` in headless Chromium, driven over W3C WebDriver (chromedriver):
//! pick an image file and see its nearest gallery images with loaded thumbnails, paths and
//! distances; drop an image on the drop zone; pick a file that is not an image and see the
//! server's error; ask for fewer results; click a result for more like it; filter; page
//! through the gallery; add and delete images with the API key. Needs Debian's `chromium` and `chromium-driver`: run
//! `scripts/install_browser.sh`. Screenshots land in `target/tmp/web_page*.png`.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{client, png, tiny_model, ServerProc};
use serde_json::{json, Value};

/// The W3C name of the key that holds an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long the page may take to answer one action.
const WAIT: Duration = Duration::from_secs(20);
/// Gallery size; the page asks for 12 hits by default, so every gallery image comes back.
const GALLERY: u64 = 8;
const KEY: &str = "page-key";

/// `$env_var` if set, else `name` found on `PATH`; `None` when that file does not exist.
fn find_program(name: &str, env_var: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env_var) {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(name)).find(|p| p.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind a loopback port").local_addr().expect("local address").port()
}

/// A chromedriver process with one headless Chromium session.
struct Browser {
    driver: Child,
    http: reqwest::blocking::Client,
    session: String,
    profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a headless session, or fails
    /// saying how to install the browser.
    fn start() -> Self {
        let missing = "headless Chromium is needed for the web page test: run scripts/install_browser.sh \
                       (installs Debian's chromium and chromium-driver), or set CHROMIUM and CHROMEDRIVER";
        let chromium =
            find_program("chromium", "CHROMIUM").unwrap_or_else(|| panic!("`chromium` not found; {missing}"));
        let chromedriver = find_program("chromedriver", "CHROMEDRIVER")
            .unwrap_or_else(|| panic!("`chromedriver` not found; {missing}"));
        let port = free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}; {missing}", chromedriver.display()));
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().expect("http client");
        let profile = tempfile::tempdir().expect("a Chromium profile folder");
        let mut browser = Self { driver, http, session: String::new(), profile };
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            let ready = browser.http.get(format!("{base}/status")).send().ok().and_then(|r| r.json::<Value>().ok());
            if ready.is_some_and(|v| v["value"]["ready"] == true) {
                break;
            }
            assert!(started.elapsed() < WAIT, "chromedriver did not answer on port {port} within {WAIT:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--window-size=1200,1000".into(),
            format!("--user-data-dir={}", browser.profile.path().display()),
        ];
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args },
        }}});
        let res: Value =
            browser.http.post(format!("{base}/session")).json(&caps).send().expect("new session").json().unwrap();
        let session =
            res["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("cannot open a Chromium session: {res}"));
        browser.session = format!("{base}/session/{session}");
        browser
    }

    /// One WebDriver command; panics with the driver's error message on failure.
    fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().unwrap_or_else(|e| panic!("WebDriver {path}: {e}"));
        let ok = res.status().is_success();
        let v: Value = res.json().unwrap_or_else(|e| panic!("WebDriver {path}: unreadable answer: {e}"));
        assert!(ok, "WebDriver {path} failed: {}", v["value"]);
        v["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    fn js(&self, script: &str, args: Value) -> Value {
        self.command(reqwest::Method::POST, "/execute/sync", Some(json!({ "script": script, "args": args })))
    }

    /// Puts a file into the `<input type=file>` matched by `css`, as a person picking it would.
    fn pick_file(&self, css: &str, file: &Path) {
        let found =
            self.command(reqwest::Method::POST, "/element", Some(json!({ "using": "css selector", "value": css })));
        let element = found[ELEMENT_KEY].as_str().expect("an element reference");
        let path = file.canonicalize().expect("absolute path");
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({ "text": path.to_str().expect("UTF-8 path") })),
        );
    }

    /// Polls `script` until it returns something other than `null`/`false`.
    fn wait_for(&self, what: &str, script: &str) -> Value {
        let started = Instant::now();
        loop {
            let v = self.js(script, json!([]));
            if !v.is_null() && v != false {
                return v;
            }
            assert!(started.elapsed() < WAIT, "timed out after {WAIT:?} waiting for {what}; page:\n{}", self.summary());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The page's visible text, for failure messages.
    fn summary(&self) -> String {
        self.js("return document.body.innerText", json!([])).as_str().unwrap_or_default().to_string()
    }

    /// A PNG of the viewport, written to `target/tmp/{name}.png`.
    fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.command(reqwest::Method::GET, "/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64.as_str().expect("base64 text")).unwrap();
        let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).expect("a PNG screenshot");
        assert!(img.width() >= 800 && img.height() >= 600, "screenshot is {}x{}", img.width(), img.height());
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.png"));
        std::fs::write(&path, bytes).expect("write the screenshot");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.http.delete(&self.session).send();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// What the result grid shows once a search has finished and every thumbnail has loaded or
/// failed (a failed one is replaced by a "no thumbnail" box): per card, its path, id, score
/// and thumbnail.
const READ_RESULTS: &str = r#"
  const state = document.body.dataset.state;
  if (state !== 'done' && state !== 'error') return null;
  const cards = [...document.querySelectorAll('#hits .hit')];
  const thumbs = cards.map(c => c.querySelector('img.thumb'));
  if (thumbs.some(t => t && !t.complete)) return null;
  const preview = document.getElementById('query-preview');
  if (!preview.complete) return null;
  return {
    state,
    status: document.getElementById('status').textContent,
    info: document.getElementById('gallery-info').textContent,
    preview_width: preview.naturalWidth,
    cards: cards.map((c, i) => ({
      path: c.querySelector('.path').textContent,
      id: c.querySelector('.id') ? c.querySelector('.id').textContent : null,
      score: c.querySelector('.score').textContent,
      thumb_width: thumbs[i] ? thumbs[i].naturalWidth : 0,
      thumb_src: thumbs[i] ? thumbs[i].getAttribute('src') : null,
    })),
  };
"#;

/// Drops `arguments[0]` (PNG bytes) on the drop zone the way a browser does for a dragged file.
const DROP_FILE: &str = r#"
  const file = new File([new Uint8Array(arguments[0])], 'dropped.png', { type: 'image/png' });
  const data = new DataTransfer();
  data.items.add(file);
  const zone = document.getElementById('drop');
  zone.dispatchEvent(new DragEvent('dragover', { dataTransfer: data, bubbles: true, cancelable: true }));
  zone.dispatchEvent(new DragEvent('drop', { dataTransfer: data, bubbles: true, cancelable: true }));
"#;

/// Chooses "Show 6 results" as a person would with the select box.
const SHOW_SIX: &str = r#"
  const k = document.getElementById('k');
  k.value = '6';
  k.dispatchEvent(new Event('change', { bubbles: true }));
"#;

fn gallery_image(i: u64) -> Vec<u8> {
    png(i, 120, 90)
}

/// The results of one search, after asserting everything a person relies on: every card
/// has a loaded thumbnail from the server, a path, an id and a distance, sorted nearest first.
fn results(browser: &Browser, what: &str, expected: u64) -> Value {
    let v = browser.wait_for(what, READ_RESULTS);
    assert_eq!(v["state"], "done", "{what}: the page shows {}", v["status"]);
    assert!(v["preview_width"].as_u64().unwrap() > 0, "{what}: the query preview did not load");
    let cards = v["cards"].as_array().unwrap();
    assert_eq!(cards.len() as u64, expected, "{what}: {v}");
    assert!(v["status"].as_str().unwrap().starts_with(&format!("{expected} nearest images")), "{v}");
    let mut last = f64::NEG_INFINITY;
    for card in cards {
        assert!(card["thumb_width"].as_u64().unwrap() > 0, "{what}: a thumbnail did not load: {card}");
        assert!(card["thumb_src"].as_str().unwrap().ends_with("/thumbnail"), "{card}");
        assert!(card["path"].as_str().unwrap().starts_with("gallery/img"), "{card}");
        assert!(card["id"].as_str().unwrap().starts_with("id img"), "{card}");
        let score = card["score"].as_str().unwrap();
        let d: f64 = score
            .strip_prefix("distance ")
            .unwrap_or_else(|| panic!("score line `{score}`"))
            .parse()
            .unwrap_or_else(|_| panic!("score line `{score}`"));
        assert!(d >= last - 1e-4, "{what}: hits not sorted by distance: {v}");
        last = d;
    }
    v
}

fn distance(card: &Value) -> f64 {
    card["score"].as_str().unwrap().rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn search_page_in_headless_chromium() {
    let browser = Browser::start();
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let srv = ServerProc::start(&model, &dir.path().join("index"), &[("STML_SERVER_API_KEY", KEY)]);
    let http = client();
    for i in 0..GALLERY {
        let label = if i % 2 == 0 { "even" } else { "odd" };
        let meta = format!("%7B%22path%22%3A%22gallery%2Fimg{i}.png%22%2C%22label%22%3A%22{label}%22%7D");
        let res = http
            .post(srv.url(&format!("/images?id=img{i}&metadata={meta}")))
            .bearer_auth(KEY)
            .header("Content-Type", "image/png")
            .body(gallery_image(i))
            .send()
            .unwrap();
        assert_eq!(res.status(), 201, "{}", res.text().unwrap());
    }
    let query = dir.path().join("query.png");
    std::fs::write(&query, gallery_image(3)).unwrap();
    let not_image = dir.path().join("notes.txt");
    std::fs::write(&not_image, "these are notes, not pixels").unwrap();

    browser.goto(&srv.url("/"));
    let title = browser.js("return document.title", json!([]));
    assert_eq!(title, "Image similarity search");
    let info = browser.wait_for(
        "the gallery summary",
        "const t = document.getElementById('gallery-info').textContent; return t.startsWith('Gallery') && t",
    );
    let expected = format!("Gallery: {GALLERY} images · model tiny-test · ranked by euclidean distance");
    assert!(info.as_str().unwrap().starts_with(&expected), "{info}");

    // Pick a file: the same picture as gallery image 3 comes back first, at distance ~0.
    browser.pick_file("#pick", &query);
    let v = results(&browser, "results for a picked file", GALLERY);
    let top = &v["cards"][0];
    assert_eq!(top["path"], "gallery/img3.png", "{v}");
    assert_eq!(top["id"], "id img3");
    assert!(distance(top) < 1e-3, "{top}");
    assert!(distance(&v["cards"][1]) > 1e-3, "{v}");
    let shot = browser.screenshot("web_page");
    eprintln!("screenshot of the results: {}", shot.display());

    // Drop a file on the drop zone (the search starts within the event, so the old results
    // are gone when the script returns): gallery image 5 comes back first.
    browser.js(DROP_FILE, json!([gallery_image(5)]));
    let v = results(&browser, "results for a dropped file", GALLERY);
    assert_eq!(v["cards"][0]["path"], "gallery/img5.png", "{v}");

    // Asking for fewer results searches again with the same image.
    browser.js(SHOW_SIX, json!([]));
    let v = results(&browser, "six results", 6);
    assert_eq!(v["cards"][0]["path"], "gallery/img5.png", "{v}");

    // A file that is not an image: the server's error is shown and the old results go.
    browser.pick_file("#pick", &not_image);
    let status = browser.wait_for(
        "the error for a text file",
        "return document.body.dataset.state === 'error' && document.getElementById('status').textContent",
    );
    let status = status.as_str().unwrap();
    assert!(status.contains("notes.txt") && status.contains("not a readable image"), "{status}");
    assert_eq!(browser.js("return document.querySelectorAll('#hits .hit').length", json!([])), 0);
    browser.screenshot("web_page_error");

    // Click a result's thumbnail: more like that gallery image, itself left out.
    browser.js(SHOW_SIX, json!([]));
    browser.pick_file("#pick", &query);
    results(&browser, "results before clicking one", 6);
    browser.js("document.querySelector('#hits .hit:nth-child(2) img.thumb').click()", json!([]));
    let v = browser.wait_for(
        "more like the second result",
        &format!("const s = document.getElementById('status').textContent; return s.includes(' to gallery/') && (() => {{ {READ_RESULTS} }})()"),
    );
    let clicked = v["status"].as_str().unwrap().split(" to ").nth(1).unwrap().split(' ').next().unwrap().to_string();
    let v = results(&browser, "more like a result", 6);
    assert!(v["cards"].as_array().unwrap().iter().all(|c| c["path"] != clicked.as_str()), "{clicked} is left out: {v}");
    browser.screenshot("web_page_similar");

    // A filter applies to the search at once.
    browser.js(SET_FILTER, json!(["label:even"]));
    let v = browser.wait_for(
        "filtered results",
        &format!("const s = document.getElementById('status').textContent; return s.includes('matching label:even') && (() => {{ {READ_RESULTS} }})()"),
    );
    let cards = v["cards"].as_array().unwrap();
    assert!(!cards.is_empty() && cards.len() <= (GALLERY / 2) as usize, "{v}");
    for c in cards {
        let n: u64 =
            c["path"].as_str().unwrap().trim_start_matches("gallery/img").trim_end_matches(".png").parse().unwrap();
        assert_eq!(n % 2, 0, "only even images pass label:even: {v}");
    }
    browser.js(SET_FILTER, json!(["label:"]));
    let status = browser.wait_for(
        "a bad filter's error",
        "return document.body.dataset.state === 'error' && document.getElementById('status').textContent",
    );
    assert!(status.as_str().unwrap().contains("invalid filter"), "{status}");
    browser.js(SET_FILTER, json!([""]));

    // Page through the gallery, 6 to a page, in id order.
    browser.js("document.getElementById('browse').click()", json!([]));
    let page1 = browser.wait_for("gallery page 1", READ_PAGE);
    assert_eq!(page1["status"], "Gallery page 1: 6 images", "{page1}");
    assert_eq!(page1["paths"], json!((0..6).map(|i| format!("gallery/img{i}.png")).collect::<Vec<_>>()));
    assert_eq!((page1["prev"].clone(), page1["next"].clone()), (json!(true), json!(false)), "disabled states: {page1}");
    browser.js("document.getElementById('next').click()", json!([]));
    let page2 = browser.wait_for(
        "gallery page 2",
        &format!("const v = (() => {{ {READ_PAGE} }})(); return v && v.status.startsWith('Gallery page 2') && v"),
    );
    assert_eq!(page2["paths"], json!(["gallery/img6.png", "gallery/img7.png"]), "{page2}");
    assert_eq!(page2["next"], true, "the last page has no next");
    browser.js("document.getElementById('prev').click()", json!([]));
    browser.wait_for(
        "back on page 1",
        &format!("const v = (() => {{ {READ_PAGE} }})(); return v && v.status.startsWith('Gallery page 1') && v"),
    );
    browser.screenshot("web_page_gallery");

    // Without the key there are no Delete buttons; a wrong key is refused with the server's
    // message; the right one deletes, and adding an image brings the count back.
    assert_eq!(browser.js("return document.querySelectorAll('#hits button.delete').length", json!([])), 0);
    browser.js(SET_KEY, json!(["wrong"]));
    browser.wait_for("Delete buttons", "return document.body.dataset.state === 'done' && document.querySelectorAll('#hits button.delete').length === 6");
    browser.js("document.querySelector('#hits button.delete').click()", json!([]));
    let status = browser.wait_for(
        "the wrong key's error",
        "return document.body.dataset.state === 'error' && document.getElementById('status').textContent",
    );
    assert!(status.as_str().unwrap().contains("wrong API key"), "{status}");
    browser.js(SET_KEY, json!([KEY]));
    browser.wait_for("Delete buttons again", "return document.body.dataset.state === 'done' && document.querySelectorAll('#hits button.delete').length === 6");
    browser.js("document.querySelector('#hits button.delete').click()", json!([]));
    browser.wait_for("the deletion", "return document.getElementById('status').textContent === 'Deleted gallery/img0.png' && document.getElementById('gallery-info').textContent.startsWith('Gallery: 7 images')");
    assert_eq!(http.get(srv.url("/images/img0")).send().unwrap().status(), 404);
    let added = dir.path().join("added.png");
    std::fs::write(&added, gallery_image(40)).unwrap();
    browser.pick_file("#add", &added);
    browser.wait_for("the added image", "return document.getElementById('gallery-info').textContent.startsWith('Gallery: 8 images') && [...document.querySelectorAll('#hits .path')].some(p => p.textContent === 'added.png')");

    // The server keeps answering afterwards.
    assert_eq!(http.get(srv.url("/healthz")).send().unwrap().status(), 200);
}

/// Types `arguments[0]` into the filter box and commits it, as a person pressing Enter.
const SET_FILTER: &str = r#"
  const f = document.getElementById('filter');
  f.value = arguments[0];
  f.dispatchEvent(new Event('change', { bubbles: true }));
"#;

/// Types `arguments[0]` into the API key box.
const SET_KEY: &str = r#"
  const f = document.getElementById('key');
  f.value = arguments[0];
  f.dispatchEvent(new Event('change', { bubbles: true }));
"#;

/// A gallery page once shown and its thumbnails loaded: status, paths, pager buttons.
const READ_PAGE: &str = r#"
  if (document.body.dataset.state !== 'done' || document.getElementById('pager').hidden) return null;
  const thumbs = [...document.querySelectorAll('#hits img.thumb')];
  if (thumbs.some(t => !t.complete)) return null;
  return {
    status: document.getElementById('status').textContent,
    paths: [...document.querySelectorAll('#hits .path')].map(p => p.textContent),
    prev: document.getElementById('prev').disabled,
    next: document.getElementById('next').disabled,
  };
"#;
