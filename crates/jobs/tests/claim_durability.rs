//! The attempt count that stops a payload from crashing the process forever must be on disk
//! before the payload is handed out: a handler can kill the process at once (an audit's
//! `os._exit` did, and was delivered as attempt 1 after every restart while claims were
//! committed lazily). Checked with a real SIGKILL: a child claims a workload and is killed as
//! soon as it says so; after the kill, the next delivery must be attempt 2. And it comes at
//! once when the store is opened again, however long the dead child's lease was: only one
//! process can have the file open, so the leases found then are all of one that is gone.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use soma_jobs::{ApiName, EmbeddedBackend};

const CHILD_DIR_ENV: &str = "SOMA_JOBS_CLAIM_CHILD_DIR";
/// The child's lease in milliseconds, if not [`LEASE`].
const CHILD_LEASE_ENV: &str = "SOMA_JOBS_CLAIM_CHILD_LEASE_MS";
const LEASE: Duration = Duration::from_millis(300);

fn api() -> ApiName {
    ApiName::parse("claims").expect("api name")
}

#[test]
#[ignore = "helper process for `a_claim_is_on_disk_when_the_payload_is_handed_out`"]
fn claiming_child_helper() {
    let dir = std::env::var(CHILD_DIR_ENV).expect("run by the claim durability test only");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let backend = EmbeddedBackend::open(Path::new(&dir)).await.expect("open");
        backend
            .submit(&api(), "text/plain", Bytes::from_static(b"x"))
            .await
            .expect("submit");
        let lease = std::env::var(CHILD_LEASE_ENV)
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map_or(LEASE, Duration::from_millis);
        let claimed = backend.claim(&api(), lease).await.expect("claim");
        let claimed = claimed.expect("queued");
        println!(
            "claimed {} attempt {}",
            claimed.lease.id, claimed.record.attempts
        );
        // Idle until killed, like a handler that is about to crash the process.
        tokio::time::sleep(Duration::from_secs(600)).await;
    });
}

/// Runs the child on `dir` with a lease of `lease`, waits for its claim (which must be the
/// first delivery) and kills it.
fn claim_and_kill(dir: &Path, lease: Duration) {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--ignored",
            "--exact",
            "claiming_child_helper",
            "--nocapture",
        ])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_LEASE_ENV, lease.as_millis().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    // `contains`, not `starts_with`: with one test thread libtest prints "test <name> ... "
    // without a newline before the child's own output.
    let claimed = stdout
        .lines()
        .map_while(Result::ok)
        .find(|line| line.contains("claimed "))
        .expect("the child claims the workload");
    assert!(claimed.ends_with(" attempt 1"), "{claimed}");
    // At once, as a handler that crashes the process on its payload.
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
}

#[tokio::test]
async fn a_claim_is_on_disk_when_the_payload_is_handed_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    claim_and_kill(dir.path(), LEASE);
    let backend = EmbeddedBackend::open(dir.path()).await.expect("reopen");
    tokio::time::sleep(LEASE).await;
    let again = backend.claim(&api(), LEASE).await.expect("claim");
    let again = again.expect("the killed delivery is handed out again");
    assert_eq!(
        again.record.attempts, 2,
        "the first delivery was lost in the crash, so a crashing payload would never be stopped"
    );
}

#[tokio::test]
async fn a_reopened_store_delivers_what_the_dead_process_held_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    claim_and_kill(dir.path(), Duration::from_secs(600));
    let backend = EmbeddedBackend::open(dir.path()).await.expect("reopen");
    let again = backend.claim(&api(), LEASE).await.expect("claim");
    let again = again.expect("the dead process' workload is handed out again at once");
    assert_eq!(again.record.attempts, 2);
    // Once: the lease of this delivery is a live one.
    assert!(backend.claim(&api(), LEASE).await.expect("claim").is_none());
}
