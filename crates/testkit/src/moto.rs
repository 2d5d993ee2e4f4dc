use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, venv_bin};

/// A real `moto_server` (S3-compatible) on 127.0.0.1, killed on drop.
#[derive(Debug)]
pub struct MotoServer {
    child: Child,
    port: u16,
}

impl MotoServer {
    /// Starts `moto_server` from the project's venv (or `SOMA_MOTO_SERVER`) on a free port and
    /// waits until it answers.
    pub fn start() -> MotoServer {
        let program = std::env::var_os("SOMA_MOTO_SERVER")
            .map(Into::into)
            .unwrap_or_else(|| venv_bin("moto_server"));
        let port = free_port();
        let child = Command::new(program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start moto_server");
        let server = MotoServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.request("GET", "/", &[]).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not start within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server: while frozen, connections are
    /// accepted by the kernel and never answered, as by a hung or black-holed endpoint.
    pub fn freeze(&self, frozen: bool) {
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} moto_server");
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The AWS variables that point an S3 client at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    pub fn create_bucket(&self, bucket: &str) {
        let status = self
            .request("PUT", &format!("/{bucket}"), &[])
            .expect("create bucket");
        assert!(status < 300, "creating bucket {bucket}: HTTP {status}");
    }

    pub fn put_object(&self, bucket: &str, key: &str, body: &[u8]) {
        let status = self
            .request("PUT", &format!("/{bucket}/{key}"), body)
            .expect("put object");
        assert!(status < 300, "uploading {key}: HTTP {status}");
    }

    pub fn delete_object(&self, bucket: &str, key: &str) {
        let status = self
            .request("DELETE", &format!("/{bucket}/{key}"), &[])
            .expect("delete object");
        assert!(status < 300, "deleting {key}: HTTP {status}");
    }

    /// Uploads every file under `dir` to `s3://bucket/prefix/<relative path>`.
    pub fn upload_dir(&self, dir: &Path, bucket: &str, prefix: &str) {
        for file in walk(dir) {
            let relative = file.strip_prefix(dir).expect("inside dir");
            let key = format!("{}/{}", prefix.trim_end_matches('/'), relative.display());
            let body = std::fs::read(&file).expect("read fixture file");
            self.put_object(bucket, key.trim_start_matches('/'), &body);
        }
    }

    /// Every object key in `bucket`, sorted.
    pub fn list_keys(&self, bucket: &str) -> Vec<String> {
        let (status, body) = self
            .exchange("GET", &format!("/{bucket}?list-type=2"), &[])
            .expect("list objects");
        assert!(status < 300, "listing {bucket}: HTTP {status}");
        let mut keys: Vec<String> = body
            .split("<Key>")
            .skip(1)
            .filter_map(|part| part.split("</Key>").next())
            .map(str::to_string)
            .collect();
        keys.sort();
        keys
    }

    fn request(&self, method: &str, path: &str, body: &[u8]) -> std::io::Result<u16> {
        self.exchange(method, path, body).map(|(status, _)| status)
    }

    /// A bare HTTP/1.1 request, returning the status code and the response text. moto does
    /// not verify signatures, but it routes requests to its S3 backend by the shape of the
    /// Authorization header.
    fn exchange(&self, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, \
             SignedHeaders=host, Signature=0\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        );
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad HTTP response: {text}")))?;
        Ok((status, text))
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}
