//! Crash safety of the embedded backend with a real SIGKILL.
//!
//! The test re-runs this test binary as a child (the ignored `crash_child_helper` test,
//! selected by an environment variable) which submits, claims and completes workloads on a
//! database and prints each acknowledged step. The parent kills it with SIGKILL mid-flight,
//! reopens the file and checks that every acknowledged step survived, that the workloads the
//! child held come back at once (only one process can have the file open, so the leases the
//! reopened store finds are all of the dead child), and that no workload ends up with two
//! final states.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use soma_jobs::{
    ApiName, Backend, EmbeddedBackend, Outcome, Status, Timestamp, WorkloadId, payload_key,
};

const CHILD_DIR_ENV: &str = "SOMA_JOBS_CRASH_CHILD_DIR";
/// Lease the child takes: longer than the checks after the kill, which must see its
/// workloads come back without waiting for it.
const CHILD_LEASE: Duration = Duration::from_secs(60);

fn api() -> ApiName {
    ApiName::parse("crash").expect("api name")
}

/// Child mode: runs until killed, printing `submitted|claimed|completed|failed <id>` after
/// each step has returned (i.e. was committed).
#[test]
#[ignore = "helper process for `sigkill_loses_nothing_acknowledged`"]
fn crash_child_helper() {
    let dir = std::env::var(CHILD_DIR_ENV).expect("run by the crash test only");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let backend = EmbeddedBackend::open(Path::new(&dir)).await.expect("open");
        let api = api();
        for i in 0u64.. {
            let body = Bytes::from(format!("{{\"i\": {i}}}"));
            let id = backend
                .submit(&api, "application/json", body)
                .await
                .expect("submit");
            println!("submitted {id}");
            if i % 3 != 2 {
                continue;
            }
            let claimed = backend
                .claim(&api, CHILD_LEASE)
                .await
                .expect("claim")
                .expect("queued");
            println!("claimed {}", claimed.lease.id);
            match i % 9 {
                2 => {
                    let result = Outcome::Completed {
                        result: Bytes::from_static(b"{}"),
                    };
                    backend.complete(&claimed, result).await.expect("complete");
                    println!("completed {}", claimed.lease.id);
                }
                5 => {
                    let error = Outcome::Failed {
                        error: "handler error".into(),
                    };
                    backend.complete(&claimed, error).await.expect("complete");
                    println!("failed {}", claimed.lease.id);
                }
                _ => {} // left leased, as if the worker were still running it
            }
        }
    });
}

#[derive(Debug)]
struct ChildLog {
    /// Taken before the child started, so no lease of the child expires before
    /// `started + CHILD_LEASE`.
    started: Instant,
    /// Taken after the SIGKILL: every lease of the child expires by `killed + CHILD_LEASE`.
    killed: Instant,
    submitted: Vec<WorkloadId>,
    claimed: HashSet<WorkloadId>,
    finished: HashMap<WorkloadId, Status>,
}

/// Starts the child on `dir`, SIGKILLs it once it has printed `kill_after` submissions and
/// returns everything it printed before dying.
fn run_and_kill(dir: &Path, kill_after: usize) -> ChildLog {
    let exe = std::env::current_exe().expect("test binary path");
    let started = Instant::now();
    let mut child = Command::new(exe)
        .args([
            "--ignored",
            "--exact",
            "crash_child_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let (lines_tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut log = ChildLog {
        started,
        killed: started,
        submitted: Vec::new(),
        claimed: HashSet::new(),
        finished: HashMap::new(),
    };
    let record = |line: &str, log: &mut ChildLog| {
        // The step and id are the line's last two words: libtest prints "test <name> ... "
        // without a newline before the child's first line, so that line starts with it.
        let mut words = line.split_whitespace().rev();
        let (Some(id), Some(step)) = (words.next(), words.next()) else {
            return;
        };
        let Ok(id) = WorkloadId::parse(id) else {
            return;
        };
        match step {
            "submitted" => log.submitted.push(id),
            "claimed" => {
                log.claimed.insert(id);
            }
            "completed" => {
                log.finished.insert(id, Status::Completed);
            }
            "failed" => {
                log.finished.insert(id, Status::Failed);
            }
            _ => {}
        }
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while log.submitted.len() < kill_after {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => record(&line, &mut log),
            Err(e) => panic!(
                "child stopped early ({e:?}) after {} submissions",
                log.submitted.len()
            ),
        }
    }
    child.kill().expect("SIGKILL child"); // std's kill() is SIGKILL on Unix
    log.killed = Instant::now();
    let status = child.wait().expect("reap child");
    assert!(
        !status.success(),
        "child must die from the signal: {status:?}"
    );
    // Lines the child wrote before it died are still in the pipe.
    for line in lines.iter() {
        record(&line, &mut log);
    }
    reader.join().expect("reader thread");
    log
}

async fn drain(backend: &Backend, api: &ApiName) -> Vec<soma_jobs::Claimed> {
    let mut claimed = Vec::new();
    while let Some(c) = backend
        .claim(api, Duration::from_secs(600))
        .await
        .expect("claim")
    {
        claimed.push(c);
    }
    claimed
}

/// The status counts (kept in memory, written by durable commits only) match the records:
/// those of the acknowledged submissions, plus at most one submission the child did not
/// see acknowledged.
async fn check_counts(backend: &Backend, api: &ApiName, log: &ChildLog, when: &str) {
    let counts = backend.states.counts(api).await.expect("counts");
    let mut tally: HashMap<Status, u64> = HashMap::new();
    for id in &log.submitted {
        let (record, _) = backend
            .status(api, id)
            .await
            .expect("status")
            .expect("record");
        *tally.entry(record.status).or_default() += 1;
    }
    let mut extra = 0;
    for status in Status::ALL {
        let expected = tally.get(&status).copied().unwrap_or(0);
        let actual = counts.get(status);
        assert!(
            actual == expected || actual == expected + 1,
            "{when}: {status} counted {actual}, records {expected} ({counts:?})"
        );
        extra += actual - expected;
    }
    assert!(extra <= 1, "{when}: {counts:?} vs {tally:?}");
}

async fn check_after_crash(dir: &Path, log: &ChildLog) {
    let backend = EmbeddedBackend::open(dir)
        .await
        .expect("reopen after SIGKILL");
    let api = api();
    check_counts(&backend, &api, log, "after the SIGKILL").await;
    let submitted: HashSet<_> = log.submitted.iter().cloned().collect();

    // 1. Every acknowledged submission and outcome survived.
    let mut unreported_final = 0;
    for id in &log.submitted {
        let (record, result) = backend
            .status(&api, id)
            .await
            .expect("status")
            .unwrap_or_else(|| {
                panic!("acknowledged workload {id} lost");
            });
        match log.finished.get(id) {
            Some(status) => {
                assert_eq!(record.status, *status, "{id}");
                assert_eq!(result.is_some(), *status == Status::Completed, "{id}");
            }
            None if record.status.is_final() => unreported_final += 1,
            None => {
                let payload = backend
                    .blobs
                    .get(&payload_key(&api, id))
                    .await
                    .expect("blob");
                assert!(payload.is_some(), "payload of pending workload {id} lost");
            }
        }
    }
    // Only the step the kill interrupted can be committed without having been printed.
    assert!(
        unreported_final <= 1,
        "{unreported_final} final workloads never reported"
    );

    // 2. Every workload the child held comes back at once, delivered again, long before its
    //    lease would have run out; the others come as first deliveries.
    let leased: HashSet<_> = log
        .claimed
        .iter()
        .filter(|id| !log.finished.contains_key(*id))
        .cloned()
        .collect();
    let again = drain(&backend, &api).await;
    assert!(
        log.killed.elapsed() < CHILD_LEASE,
        "the checks took longer than the child's lease"
    );
    let again_ids: HashSet<_> = again.iter().map(|c| c.lease.id.clone()).collect();
    for id in &leased {
        let status = backend
            .status(&api, id)
            .await
            .expect("status")
            .expect("record")
            .0
            .status;
        // A leased workload the kill caught after `finish` is final and rightly skipped.
        assert!(
            again_ids.contains(id) || status.is_final(),
            "leased {id} not delivered again ({status})"
        );
    }
    for c in &again {
        assert!(
            submitted.contains(&c.lease.id) || c.lease.attempt == 1,
            "unknown {c:?}"
        );
        assert!(
            c.lease.attempt >= 2 || !leased.contains(&c.lease.id),
            "{c:?}"
        );
        backend
            .complete(
                c,
                Outcome::Completed {
                    result: Bytes::from_static(b"{\"parent\": 1}"),
                },
            )
            .await
            .expect("complete");
    }

    // 3. Everything is final now, exactly once: a further finisher never wins, and the
    //    child's reported outcomes were not overwritten.
    for id in &log.submitted {
        let won = backend
            .states
            .finish(&api, id, Outcome::Cancelled, Timestamp::now())
            .await
            .expect("finish");
        assert!(!won, "{id} took a second final state");
        let (record, _) = backend
            .status(&api, id)
            .await
            .expect("status")
            .expect("record");
        assert!(record.status.is_final(), "{id} still {}", record.status);
        if let Some(status) = log.finished.get(id) {
            assert_eq!(record.status, *status, "{id} outcome overwritten");
        }
    }
    let stats = backend.queue.stats(&api).await.expect("stats");
    assert_eq!(
        (stats.queued, stats.in_flight),
        (0, 0),
        "queue not drained: {stats:?}"
    );
    check_counts(&backend, &api, log, "after draining").await;
    drop(backend);
    // And once more from the file, after a clean close.
    let backend = EmbeddedBackend::open(dir).await.expect("reopen");
    check_counts(&backend, &api, log, "after a clean close").await;
}

#[test]
fn sigkill_loses_nothing_acknowledged() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // Different kill points land the signal in different steps of the child's loop.
    for kill_after in [40, 97] {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = run_and_kill(dir.path(), kill_after);
        assert!(log.submitted.len() >= kill_after);
        assert!(
            !log.claimed.is_empty() && !log.finished.is_empty(),
            "{log:?}"
        );
        eprintln!(
            "killed after {:?}: {} submitted, {} claimed, {} finished",
            log.started.elapsed(),
            log.submitted.len(),
            log.claimed.len(),
            log.finished.len()
        );
        runtime.block_on(check_after_crash(dir.path(), &log));
    }
}
