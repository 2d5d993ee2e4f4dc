use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// A real `redis-server` on 127.0.0.1 with its data (append-only file on) in a temporary
/// directory, killed on drop. [`stop`](Self::stop) and [`restart`](Self::restart) simulate an
/// outage on the same port and data.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// Given to `redis-server` after the usual ones, at every (re)start.
    extra_args: Vec<String>,
}

impl RedisServer {
    /// Starts `redis-server` (or `SOMA_REDIS_SERVER`) on a free port and waits for `PING`.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// [`start`](Self::start) with more `redis-server` options (e.g. `--replicaof`); a
    /// relative file name in them lands in the server's data directory.
    pub fn start_with(extra_args: &[&str]) -> RedisServer {
        let dir =
            std::env::temp_dir().join(format!("soma-redis-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).expect("create redis data dir");
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            dir,
            extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
        };
        server.restart();
        server
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// Kills the server (SIGKILL: no final save; the append-only file is what survives).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// (Re)starts the server on the same port and data directory and waits for `PING`.
    pub fn restart(&mut self) {
        self.stop();
        let program =
            std::env::var_os("SOMA_REDIS_SERVER").unwrap_or_else(|| "redis-server".into());
        let child = Command::new(program)
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--dir",
                &self.dir.to_string_lossy(),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start redis-server (install it: apt-get install -y redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.ping() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        if stream.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
