//! A real Milvus (standalone, from the PyPI package `milvus`, which `scripts/setup.sh`
//! installs into `deps/milvus`) on a free loopback port, with its data in a temporary
//! folder; stopped by the pid of its process group when dropped.

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a fresh Milvus may take to answer (6-12 s on a quiet machine).
const START_TIMEOUT: Duration = Duration::from_secs(180);

pub struct MilvusProc {
    child: Child,
    _data: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`, for `index.milvus.uri`.
    pub uri: String,
}

/// The `milvus-server` launcher set-up installed, if any.
fn launcher() -> Result<PathBuf, String> {
    let deps = std::env::var("STML_DEPS").map_err(|_| "STML_DEPS is not set (run through cargo)".to_string())?;
    let path = PathBuf::from(deps).join("milvus/bin/milvus-server");
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: the PyPI package `milvus` could not be installed (scripts/setup.sh)",
            path.display()
        ))
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

impl MilvusProc {
    /// Starts Milvus and waits until its proxy answers; `Err` (the reason, to print) only
    /// where the package is not installed.
    pub fn start() -> Result<Self, String> {
        let launcher = launcher()?;
        let data = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let log = std::fs::File::create(data.path().join("launcher.log")).expect("log file");
        let mut cmd = Command::new(&launcher);
        cmd.arg("--data").arg(data.path().join("milvus")).args(["--proxy-port", &port.to_string()]);
        // Its own process group: the launcher is Python, Milvus its child; both go at stop.
        cmd.env("PYTHONUNBUFFERED", "1");
        cmd.process_group(0).stdin(Stdio::null()).stdout(log.try_clone().expect("log")).stderr(log);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("start {}: {e}", launcher.display()));
        let mut milvus = Self { child, _data: data, uri: format!("http://127.0.0.1:{port}") };
        let started = Instant::now();
        loop {
            // The launcher prints its banner once Milvus reports itself healthy.
            let up = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).is_ok();
            if up && milvus.log().contains("Ctrl+C to exit") {
                eprintln!("Milvus ready on port {port} after {:.1} s", started.elapsed().as_secs_f64());
                return Ok(milvus);
            }
            if let Ok(Some(status)) = milvus.child.try_wait() {
                panic!("Milvus exited ({status}) before answering:\n{}", milvus.log());
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "Milvus did not answer within {START_TIMEOUT:?}:\n{}",
                milvus.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn log(&self) -> String {
        let path = self._data.path().join("launcher.log");
        std::fs::read_to_string(path).unwrap_or_default()
    }
}

impl Drop for MilvusProc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self._data.path().join("milvus/logs/milvus-stderr.log");
            let text = std::fs::read_to_string(&logs).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let first = lines.iter().position(|l| l.contains("panic") || l.contains("fatal")).unwrap_or(lines.len());
            let shown = lines
                .iter()
                .skip(first)
                .take(20)
                .chain(lines.iter().skip(lines.len().saturating_sub(20).max(first + 20)));
            eprintln!(
                "{} (from the first panic, and its end):\n{}",
                logs.display(),
                shown.copied().collect::<Vec<_>>().join("\n")
            );
            eprintln!("launcher:\n{}", self.log());
        }
        // SIGTERM does not stop Milvus 2.3 within a minute; its data is thrown away anyway.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}
