//! Runs the shared conformance suite against the memory and the embedded backend, one test
//! per case so a failure names the case and the backend.

use soma_jobs::conformance;
use soma_jobs::{Backend, EmbeddedBackend, MemoryBackend};

async fn embedded() -> (Backend, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = EmbeddedBackend::open(dir.path())
        .await
        .expect("open embedded backend");
    (backend, dir)
}

macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    conformance::$case(&MemoryBackend::backend()).await;
                }
            )*
        }
        mod embedded {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (backend, _dir) = embedded().await;
                    conformance::$case(&backend).await;
                }
            )*
        }
    };
}

cases!(
    submit_status_round_trip,
    unknown_id_is_none,
    fifo_per_api,
    push_is_idempotent,
    lease_expiry_redelivers,
    first_deliveries_leave_redeliveries,
    release_delivers_again_at_once,
    extend_keeps_lease,
    ack_removes,
    exactly_one_final,
    complete_is_idempotent,
    cancel_queued_vs_running,
    claim_skips_final_and_missing,
    gives_up_after_max_attempts,
    duplicate_id_is_rejected,
    stats_and_counts,
    blobs_put_get_delete,
    expire_removes_records_and_payloads,
);

/// `run_all` on one shared store: the cases must not disturb each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_on_one_embedded_store() {
    let (backend, _dir) = embedded().await;
    conformance::run_all(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_on_one_memory_store() {
    conformance::run_all(&MemoryBackend::backend()).await;
}

/// The retention loop expires finished workloads on its own and stops on shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_loop_expires_and_stops() {
    use std::time::Duration;

    use soma_jobs::{ApiName, Outcome, run_retention};

    let backend = MemoryBackend::backend();
    let api = ApiName::parse("retention").expect("api");
    let done = backend
        .submit(&api, "text/plain", "a".into())
        .await
        .expect("submit");
    let pending = backend
        .submit(&api, "text/plain", "b".into())
        .await
        .expect("submit");
    let claimed = backend
        .claim(&api, Duration::from_secs(60))
        .await
        .expect("claim")
        .expect("queued");
    assert_eq!(claimed.lease.id, done);
    backend
        .complete(&claimed, Outcome::Cancelled)
        .await
        .expect("complete");

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run_retention(
        backend.clone(),
        Duration::from_millis(50),
        Duration::from_millis(10),
        async move {
            let _ = stopped.await;
        },
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        backend.status(&api, &done).await.expect("status").is_none(),
        "not expired"
    );
    assert!(
        backend
            .status(&api, &pending)
            .await
            .expect("status")
            .is_some(),
        "pending expired"
    );
    stop.send(()).expect("loop still running");
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("loop stops")
        .expect("join");
}
