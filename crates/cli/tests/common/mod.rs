//! Drives the real `soma` binary as a black box.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use soma_testkit::{HttpResponse, free_port, http};

/// A running `soma serve`, killed on drop.
pub struct Soma {
    child: Option<Child>,
    pub addr: String,
    pub log: PathBuf,
}

impl Soma {
    /// Starts `soma serve <config>` on a free port with its data in `data_dir`.
    pub fn serve(config: &Path, data_dir: &Path, extra: &[&str]) -> Soma {
        let mut args = vec!["--data-dir", data_dir.to_str().expect("utf-8 path")];
        args.extend_from_slice(extra);
        Soma::start("serve", config, data_dir, &args, &[])
    }

    /// [`Soma::serve`] without waiting for it to listen (it may exit first).
    pub fn spawn_serve(config: &Path, data_dir: &Path, extra: &[&str]) -> Soma {
        let mut args = vec!["--data-dir", data_dir.to_str().expect("utf-8 path")];
        args.extend_from_slice(extra);
        Soma::spawn("serve", config, data_dir, &args, &[])
    }

    /// Starts `soma <command> <config> --listen <free port> <extra>` with `env` added, logging
    /// to a file beside `log_base`, and waits until `/healthz` answers.
    pub fn start(
        command: &str,
        config: &Path,
        log_base: &Path,
        extra: &[&str],
        env: &[(&str, String)],
    ) -> Soma {
        let soma = Soma::spawn(command, config, log_base, extra, env);
        soma.wait_until(Duration::from_secs(30), "listening", |s| {
            s.request("GET", "/healthz", &[], b"")
                .ok()
                .map(|r| r.status == 200)
        });
        soma
    }

    /// [`Soma::start`] without waiting for `/healthz`.
    fn spawn(
        command: &str,
        config: &Path,
        log_base: &Path,
        extra: &[&str],
        env: &[(&str, String)],
    ) -> Soma {
        let addr = format!("127.0.0.1:{}", free_port());
        let log = log_base.with_extension(format!("{}.log", addr.replace([':', '.'], "-")));
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_soma"))
            .arg(command)
            .arg(config)
            .args(["--listen", &addr])
            .args(extra)
            .env("SOMA_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .stdin(Stdio::null())
            .spawn()
            .expect("start soma");
        Soma {
            child: Some(child),
            addr,
            log,
        }
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<HttpResponse> {
        http(&self.addr, method, path, headers, body)
    }

    pub fn get_json(&self, path: &str) -> (u16, Value) {
        let r = self.request("GET", path, &[], b"").expect("GET");
        (
            r.status,
            serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        )
    }

    /// Waits until `/readyz` says ready, and returns its body.
    pub fn wait_ready(&self, timeout: Duration) -> Value {
        self.wait_until(timeout, "ready", |s| {
            let ready = s.request("GET", "/readyz", &[], b"").ok()?;
            Some(ready.status == 200)
        });
        self.get_json("/readyz").1
    }

    pub fn submit(&self, endpoint: &str, content_type: &str, body: &[u8]) -> String {
        let r = self
            .request("POST", endpoint, &[("Content-Type", content_type)], body)
            .expect("POST");
        assert_eq!(r.status, 200, "submit: {}", r.text());
        let value: Value = serde_json::from_slice(&r.body).expect("JSON");
        value["id"].as_str().expect("id").to_string()
    }

    /// Polls `GET endpoint/id` until the status is final.
    pub fn wait_final(&self, endpoint: &str, id: &str, timeout: Duration) -> Value {
        let path = format!("{endpoint}/{id}");
        let mut last = Value::Null;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let (status, body) = self.get_json(&path);
            assert_eq!(status, 200, "{body}");
            let state = body["status"].as_str().unwrap_or("").to_string();
            if ["completed", "failed", "cancelled"].contains(&state.as_str()) {
                return body;
            }
            last = body;
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{id} not final after {timeout:?}: {last}\n{}",
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Waits up to `timeout` for the process to exit by itself; whether it did.
    pub fn wait_exit(mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("running");
        while Instant::now() < deadline {
            if child.try_wait().expect("try_wait").is_some() {
                self.child = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the process to exit and returns whether it exited cleanly.
    pub fn terminate(mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait().map(|s| s.success()).unwrap_or(false)
    }

    fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&Soma) -> Option<bool>,
    ) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if check(self) == Some(true) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("soma not {what} after {timeout:?}\n{}", self.log_text());
    }
}

impl Drop for Soma {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Writes a project (cortex.yaml + files) into a new temp dir.
pub fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    dir
}

/// Polls `done` every 100 ms for up to a minute; fails the test naming `what` after that.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `(version, state)` pairs of a TF Serving model status response.
pub fn version_states(status: &Value) -> Vec<(String, String)> {
    status["model_version_status"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            (
                v["version"].as_str().unwrap_or_default().to_string(),
                v["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}
