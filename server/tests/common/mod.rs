//! Shared test fixtures: those of `fixtures.rs` (a tiny model, synthetic images), and the
//! `server` binary run on a loopback port.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod fixtures;
pub mod milvus;
pub use fixtures::*;

/// A `server` process listening on a free loopback port.
pub struct ServerProc {
    child: Child,
    pub base: String,
    log: mpsc::Receiver<String>,
}

/// The built binary.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_server")
}

impl ServerProc {
    /// Starts `server serve` and waits until it listens. `env` adds `STML_SERVER_*` settings.
    pub fn start(model: &Path, index: &Path, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(binary());
        cmd.args(["serve", "--port", "0", "--model"]).arg(model).arg("--index").arg(index);
        cmd.env("RUST_LOG", "info").stdout(Stdio::null()).stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the server binary");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        let base = rest.trim().to_string();
                        return Self { child, base, log: rx };
                    }
                    seen.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("the server did not start:\n{}", seen.join("\n"));
                }
            }
        }
    }

    /// `base + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGKILL: no chance to flush or dump anything.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }

    /// SIGTERM and wait for a graceful exit; returns the log lines printed meanwhile.
    pub fn stop(mut self) -> Vec<String> {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("run kill");
        assert!(status.success());
        let exit = self.child.wait().expect("reap");
        assert!(exit.success(), "graceful exit, got {exit}");
        self.log.try_iter().collect()
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `server index --model MODEL --images IMAGES --index INDEX EXTRA...`, not yet run.
pub fn index_cmd(model: &Path, images: &Path, index: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(binary());
    cmd.args(["index", "--model"]).arg(model).arg("--images").arg(images).arg("--index").arg(index).args(extra);
    cmd
}

/// Runs the index job to completion, asserting success, and returns its log.
pub fn run_index(model: &Path, images: &Path, index: &Path, extra: &[&str]) -> String {
    let out = index_cmd(model, images, index, extra).output().expect("run server index");
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{log}");
    log
}

/// A blocking HTTP client with a generous timeout.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().expect("http client")
}
