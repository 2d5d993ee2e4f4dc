//! Throughput of the embedded backend on this machine. Ignored by default (it measures,
//! it does not check); run with
//! `cargo test -p soma-jobs --release --test throughput -- --ignored --nocapture`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use soma_jobs::{ApiName, EmbeddedBackend, Outcome};

const N: usize = 1000;
const TASKS: usize = 8;

fn rate(n: usize, elapsed: Duration) -> String {
    format!(
        "{n} in {elapsed:.2?} = {:.0} ops/s",
        n as f64 / elapsed.as_secs_f64()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, prints ops/s"]
async fn embedded_throughput() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = EmbeddedBackend::open(dir.path()).await.expect("open");
    let api = ApiName::parse("bench").expect("api");
    let body = Bytes::from(vec![b'x'; 1024]);

    let start = Instant::now();
    for _ in 0..N {
        backend
            .submit(&api, "application/json", body.clone())
            .await
            .expect("submit");
    }
    println!(
        "submit, 1 KiB payload, sequential:     {}",
        rate(N, start.elapsed())
    );

    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (backend, api, body) = (backend.clone(), api.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..N / TASKS {
                backend
                    .submit(&api, "application/json", body.clone())
                    .await
                    .expect("submit");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    println!(
        "submit, 1 KiB payload, {TASKS} concurrent:   {}",
        rate(N, start.elapsed())
    );

    let result = Bytes::from_static(b"{\"label\": \"setosa\", \"score\": 0.98}");
    let start = Instant::now();
    for _ in 0..N {
        let claimed = backend
            .claim(&api, Duration::from_secs(30))
            .await
            .expect("claim")
            .expect("queued");
        backend
            .complete(
                &claimed,
                Outcome::Completed {
                    result: result.clone(),
                },
            )
            .await
            .expect("complete");
    }
    println!(
        "claim+complete, sequential:            {}",
        rate(N, start.elapsed())
    );

    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (backend, api, result) = (backend.clone(), api.clone(), result.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            while let Some(c) = backend
                .claim(&api, Duration::from_secs(30))
                .await
                .expect("claim")
            {
                backend
                    .complete(
                        &c,
                        Outcome::Completed {
                            result: result.clone(),
                        },
                    )
                    .await
                    .expect("complete");
                done += 1;
            }
            done
        }));
    }
    let mut done = 0;
    for task in tasks {
        done += task.await.expect("task");
    }
    println!(
        "claim+complete, {TASKS} concurrent:          {}",
        rate(done, start.elapsed())
    );
    assert_eq!(done, N, "every submitted workload is claimed once");
}
