//! Helpers shared by the REST test files.

use serde_json::Value;
use soma_testkit::{HttpResponse, http};

/// POSTs `body` as JSON to `addr` + `path` from the blocking pool (the bare client blocks),
/// so that the server under test keeps the runtime's threads.
pub(crate) async fn post_json(addr: &str, path: &'static str, body: Value) -> HttpResponse {
    let addr = addr.to_string();
    tokio::task::spawn_blocking(move || {
        http(&addr, "POST", path, &[], body.to_string().as_bytes()).unwrap()
    })
    .await
    .unwrap()
}
