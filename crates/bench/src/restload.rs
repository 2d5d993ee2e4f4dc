//! `soma-bench rest <host:port> <model> <body.json> --connections N --seconds S [--warmup S]`:
//! N threads, each with one kept-alive HTTP/1.1 connection, POST
//! `/v1/models/<model>:predict` in a loop. Works against any server with TF Serving's REST
//! contract (soma, TF Serving, the FastAPI peer of `scripts/bench_fastapi.py`).
//!
//! A non-200 answer is an error; so is a broken connection (the client reconnects).

use soma_testkit::HttpConnection;

use crate::load::{self, ClientResult, LoadOptions, Window};

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let [addr, model, body, flags @ ..] = args else {
        anyhow::bail!(
            "usage: soma-bench rest <host:port> <model> <body.json> --connections N --seconds S"
        );
    };
    let options = LoadOptions::parse(flags, "--connections")?;
    let body = load::read_body(body)?;
    load::instances(&body)?;
    let path = format!("/v1/models/{model}:predict");
    // Fail fast on a wrong address, model or body instead of reporting only errors.
    let probe = HttpConnection::connect(addr)?.request("POST", &path, JSON, &body)?;
    if probe.status != 200 {
        anyhow::bail!("POST {path}: HTTP {} {}", probe.status, probe.text());
    }

    let window = Window::new(&options);
    let clients: Vec<ClientResult> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..options.clients)
            .map(|_| scope.spawn(|| client(addr, &path, &body, window)))
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("client thread"))
            .collect()
    });
    load::report(&format!("rest {model}"), &options, clients);
    Ok(())
}

const JSON: &[(&str, &str)] = &[("Content-Type", "application/json")];

fn client(addr: &str, path: &str, body: &[u8], window: Window) -> ClientResult {
    let mut connection: Option<HttpConnection> = None;
    window.run(|| {
        let conn = match connection.as_mut() {
            Some(c) => c,
            None => connection.insert(HttpConnection::connect(addr).map_err(|e| e.to_string())?),
        };
        match conn.request("POST", path, JSON, body) {
            Ok(response) if response.status == 200 => Ok(()),
            Ok(response) => Err(format!("HTTP {} {}", response.status, response.text())),
            Err(e) => {
                connection = None;
                Err(format!("connection: {e}"))
            }
        }
    })
}
