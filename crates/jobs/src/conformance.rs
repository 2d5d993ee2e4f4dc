//! The behaviour every [`Backend`] must show, as public async functions (object_store's
//! `integration` pattern). Each case panics on a violation and uses its own freshly named
//! API, so the cases also work on a shared, non-empty store (e.g. a Redis + S3 backend in an
//! integration test). Only [`expire_removes_records_and_payloads`] reaches beyond its API:
//! it expires every workload that finished before it ran.
//!
//! Lease cases sleep for a few hundred milliseconds; [`run_all`] takes about 3 s.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::{
    ApiName, Backend, CancelResult, Deliveries, JobsError, Outcome, Popped, Status, Timestamp,
    WorkloadId, WorkloadRecord, payload_key,
};

/// Lease used where a case waits for expiry: long enough for the calls in between.
const SHORT_LEASE: Duration = Duration::from_millis(400);
/// Waiting this long after a [`SHORT_LEASE`] pop sees it expired.
const PAST_SHORT_LEASE: Duration = Duration::from_millis(600);
const LONG_LEASE: Duration = Duration::from_secs(300);

/// Runs every case in turn.
pub async fn run_all(backend: &Backend) {
    submit_status_round_trip(backend).await;
    unknown_id_is_none(backend).await;
    fifo_per_api(backend).await;
    push_is_idempotent(backend).await;
    lease_expiry_redelivers(backend).await;
    first_deliveries_leave_redeliveries(backend).await;
    release_delivers_again_at_once(backend).await;
    extend_keeps_lease(backend).await;
    ack_removes(backend).await;
    exactly_one_final(backend).await;
    complete_is_idempotent(backend).await;
    cancel_queued_vs_running(backend).await;
    claim_skips_final_and_missing(backend).await;
    gives_up_after_max_attempts(backend).await;
    duplicate_id_is_rejected(backend).await;
    stats_and_counts(backend).await;
    blobs_put_get_delete(backend).await;
    expire_removes_records_and_payloads(backend).await;
}

/// A fresh API name, unique per call, starting with `case`.
pub fn fresh_api(case: &str) -> ApiName {
    let suffix = WorkloadId::random();
    ApiName::parse(&format!("{case}-{}", &suffix.as_str()[..8]))
        .unwrap_or_else(|e| panic!("conformance api name for {case}: {e}"))
}

fn json(value: &str) -> Bytes {
    Bytes::copy_from_slice(value.as_bytes())
}

/// Submits a `text/plain` workload carrying `payload`; its id.
async fn submit_text(backend: &Backend, api: &ApiName, payload: &str) -> WorkloadId {
    backend
        .submit(api, "text/plain", json(payload))
        .await
        .expect("submit")
}

/// Asserts that a claim of `api` with `lease` takes nothing (`why`: what that shows).
async fn assert_nothing_to_claim(backend: &Backend, api: &ApiName, lease: Duration, why: &str) {
    let claimed = backend.claim(api, lease).await.expect("claim");
    assert!(claimed.is_none(), "{why}: {claimed:?}");
}

async fn claim_now(backend: &Backend, api: &ApiName, lease: Duration) -> crate::Claimed {
    backend
        .claim(api, lease)
        .await
        .expect("claim")
        .expect("a workload should be available")
}

/// submit → in_queue; claim → payload and in_progress; complete → completed with result and
/// the payload deleted.
pub async fn submit_status_round_trip(backend: &Backend) {
    let api = fresh_api("roundtrip");
    let before = Timestamp::now();
    let id = backend
        .submit(&api, "application/json", json(r#"{"x": [1, 2]}"#))
        .await
        .expect("submit");

    let (record, result) = backend
        .status(&api, &id)
        .await
        .expect("status")
        .expect("record");
    assert_eq!(record.id, id);
    assert_eq!(record.api, api);
    assert_eq!(record.status, Status::InQueue);
    assert_eq!(record.content_type, "application/json");
    assert!(record.created_at >= before, "created_at before submit");
    assert_eq!((record.started_at, record.finished_at), (None, None));
    assert_eq!(record.attempts, 0);
    assert_eq!(result, None);

    let claimed = claim_now(backend, &api, LONG_LEASE).await;
    assert_eq!(claimed.lease.id, id);
    assert_eq!(claimed.lease.attempt, 1);
    assert_eq!(claimed.payload, json(r#"{"x": [1, 2]}"#));
    assert_eq!(claimed.content_type, "application/json");
    assert_eq!(claimed.record.status, Status::InProgress);
    assert_eq!(claimed.record.attempts, 1);
    let (record, _) = backend
        .status(&api, &id)
        .await
        .expect("status")
        .expect("record");
    assert_eq!(record.status, Status::InProgress);
    assert!(record.started_at.is_some());

    let won = backend
        .complete(
            &claimed,
            Outcome::Completed {
                result: json(r#"{"y": 3}"#),
            },
        )
        .await
        .expect("complete");
    assert!(won, "the only finisher must win");
    let (record, result) = backend
        .status(&api, &id)
        .await
        .expect("status")
        .expect("record");
    assert_eq!(record.status, Status::Completed);
    assert!(record.finished_at.is_some());
    assert_eq!(record.error, None);
    assert_eq!(result, Some(json(r#"{"y": 3}"#)));
    let payload = backend
        .blobs
        .get(&payload_key(&api, &id))
        .await
        .expect("blob get");
    assert_eq!(payload, None, "payload must be deleted after completion");
    assert_nothing_to_claim(backend, &api, LONG_LEASE, "nothing should be claimable").await;
}

/// Unknown ids read as absent everywhere and writes to them change nothing.
pub async fn unknown_id_is_none(backend: &Backend) {
    let api = fresh_api("unknown");
    let id = WorkloadId::random();
    assert!(backend.status(&api, &id).await.expect("status").is_none());
    assert!(backend.states.get(&api, &id).await.expect("get").is_none());
    assert!(
        backend
            .states
            .result(&api, &id)
            .await
            .expect("result")
            .is_none()
    );
    let marked = backend
        .states
        .mark_in_progress(&api, &id, Timestamp::now())
        .await;
    assert!(marked.expect("mark_in_progress").is_none());
    let finished = backend
        .states
        .finish(&api, &id, Outcome::Cancelled, Timestamp::now())
        .await
        .expect("finish");
    assert!(!finished);
    assert!(backend.states.get(&api, &id).await.expect("get").is_none());
    assert!(!backend.queue.remove(&api, &id).await.expect("remove"));
    assert_eq!(
        backend.cancel(&api, &id).await.expect("cancel"),
        CancelResult::NotFound
    );
    assert_nothing_to_claim(backend, &api, LONG_LEASE, "nothing should be claimable").await;
}

/// Each API is its own FIFO.
pub async fn fifo_per_api(backend: &Backend) {
    let (a, b) = (fresh_api("fifo-a"), fresh_api("fifo-b"));
    let mut ids_a = Vec::new();
    let mut ids_b = Vec::new();
    for i in 0..5 {
        ids_a.push(submit_text(backend, &a, &format!("a{i}")).await);
        if i % 2 == 0 {
            ids_b.push(submit_text(backend, &b, &format!("b{i}")).await);
        }
    }
    for (i, id) in ids_a.iter().enumerate() {
        let claimed = claim_now(backend, &a, LONG_LEASE).await;
        assert_eq!(&claimed.lease.id, id, "FIFO order of api a at position {i}");
        assert_eq!(claimed.payload, json(&format!("a{i}")));
    }
    assert_nothing_to_claim(backend, &a, LONG_LEASE, "nothing should be claimable").await;
    for id in &ids_b {
        assert_eq!(
            &claim_now(backend, &b, LONG_LEASE).await.lease.id,
            id,
            "FIFO order of api b"
        );
    }
    assert_nothing_to_claim(backend, &b, LONG_LEASE, "nothing should be claimable").await;
}

/// Pushing an id that is queued or leased does not enqueue it twice.
pub async fn push_is_idempotent(backend: &Backend) {
    let api = fresh_api("push-twice");
    let id = WorkloadId::random();
    backend.queue.push(&api, &id).await.expect("push");
    backend.queue.push(&api, &id).await.expect("push again");
    let lease = backend
        .queue
        .pop(&api, LONG_LEASE, Deliveries::Any)
        .await
        .expect("pop")
        .into_item()
        .expect("an item");
    assert_eq!(lease.id, id);
    backend
        .queue
        .push(&api, &id)
        .await
        .expect("push while leased");
    assert!(
        backend
            .queue
            .pop(&api, LONG_LEASE, Deliveries::Any)
            .await
            .expect("pop")
            .into_item()
            .is_none()
    );
    assert!(backend.queue.ack(&lease).await.expect("ack"));
}

/// A lease hides the item; after it expires the item is delivered again with a new token
/// and the old token no longer acknowledges it.
pub async fn lease_expiry_redelivers(backend: &Backend) {
    let api = fresh_api("redeliver");
    let id = submit_text(backend, &api, "p").await;
    let first = claim_now(backend, &api, SHORT_LEASE).await;
    assert_eq!(first.lease.attempt, 1);
    assert_nothing_to_claim(backend, &api, SHORT_LEASE, "leased item visible").await;
    let stats = backend.queue.stats(&api).await.expect("stats");
    assert_eq!((stats.queued, stats.in_flight), (0, 1));

    tokio::time::sleep(PAST_SHORT_LEASE).await;
    let stats = backend.queue.stats(&api).await.expect("stats");
    assert_eq!(
        (stats.queued, stats.in_flight),
        (1, 0),
        "an expired lease is visible again"
    );
    let second = claim_now(backend, &api, LONG_LEASE).await;
    assert_eq!(second.lease.id, id);
    assert_eq!(second.lease.attempt, 2);
    assert_eq!(second.record.attempts, 2);
    assert_ne!(second.lease.token, first.lease.token);
    assert_eq!(second.payload, json("p"));

    assert!(
        !backend.queue.ack(&first.lease).await.expect("stale ack"),
        "stale token acked"
    );
    let stale = backend.queue.extend(&first.lease, LONG_LEASE).await;
    assert!(
        matches!(stale, Err(JobsError::LeaseLost { .. })),
        "stale extend: {stale:?}"
    );
    assert!(
        backend
            .complete(&second, Outcome::Completed { result: json("{}") })
            .await
            .expect("complete")
    );
    // The slow first worker finishing late changes nothing.
    let late = backend
        .complete(
            &first,
            Outcome::Failed {
                error: "late".into(),
            },
        )
        .await;
    assert!(!late.expect("late complete"));
    let (record, _) = backend
        .status(&api, &id)
        .await
        .expect("status")
        .expect("record");
    assert_eq!(record.status, Status::Completed);
}

/// A claim of first deliveries only takes nothing while a lease has run out (the
/// redelivery comes first), and says so; once the redelivery is taken by a claim of any
/// delivery, the never-delivered items follow.
pub async fn first_deliveries_leave_redeliveries(backend: &Backend) {
    let api = fresh_api("first-only");
    let lost = submit_text(backend, &api, "lost").await;
    let fresh = submit_text(backend, &api, "fresh").await;
    assert_eq!(claim_now(backend, &api, SHORT_LEASE).await.lease.id, lost);
    tokio::time::sleep(PAST_SHORT_LEASE).await;

    let claimed = backend
        .claim_only(&api, LONG_LEASE, Deliveries::FirstOnly)
        .await
        .expect("claim first only");
    assert!(
        matches!(claimed, Popped::RedeliveryWaiting),
        "first-only claim with a lease run out: {claimed:?}"
    );
    let popped = backend
        .queue
        .pop(&api, LONG_LEASE, Deliveries::FirstOnly)
        .await
        .expect("pop first only");
    assert_eq!(popped, Popped::RedeliveryWaiting);
    let (record, _) = backend
        .status(&api, &lost)
        .await
        .expect("status")
        .expect("record");
    assert_eq!(record.attempts, 1, "left in the queue without a delivery");
    let stats = backend.queue.stats(&api).await.expect("stats");
    assert_eq!((stats.queued, stats.in_flight), (2, 0));

    let again = claim_now(backend, &api, LONG_LEASE).await;
    assert_eq!((again.lease.id, again.record.attempts), (lost, 2));
    let next = backend
        .claim_only(&api, LONG_LEASE, Deliveries::FirstOnly)
        .await
        .expect("claim first only")
        .into_item()
        .expect("the never-delivered item");
    assert_eq!((next.lease.id, next.record.attempts), (fresh, 1));
    let none = backend
        .claim_only(&api, LONG_LEASE, Deliveries::FirstOnly)
        .await
        .expect("claim first only");
    assert!(matches!(none, Popped::Empty), "empty queue: {none:?}");
}

/// A released lease runs out at once: the item is delivered again (as a redelivery) by the
/// next claim, and the old lease can be released no more.
pub async fn release_delivers_again_at_once(backend: &Backend) {
    let api = fresh_api("release");
    let id = submit_text(backend, &api, "p").await;
    let first = claim_now(backend, &api, LONG_LEASE).await;
    assert!(backend.queue.release(&first.lease).await.expect("release"));
    // Given back: a late renewal must not take it again.
    let late = backend.queue.extend(&first.lease, LONG_LEASE).await;
    assert!(
        matches!(late, Err(JobsError::LeaseLost { .. })),
        "extend after release: {late:?}"
    );
    let again = claim_now(backend, &api, LONG_LEASE).await;
    assert_eq!((again.lease.id, again.record.attempts), (id, 2));
    assert!(
        !backend
            .queue
            .release(&first.lease)
            .await
            .expect("stale release"),
        "a stale lease was released"
    );
    assert_nothing_to_claim(backend, &api, LONG_LEASE, "the current lease was disturbed").await;
}

/// `extend` pushes the deadline out; a lost lease cannot be extended.
pub async fn extend_keeps_lease(backend: &Backend) {
    let api = fresh_api("extend");
    submit_text(backend, &api, "p").await;
    let claimed = claim_now(backend, &api, SHORT_LEASE).await;
    backend
        .queue
        .extend(&claimed.lease, Duration::from_secs(5))
        .await
        .expect("extend");
    tokio::time::sleep(PAST_SHORT_LEASE).await;
    assert!(
        backend
            .queue
            .pop(&api, LONG_LEASE, Deliveries::Any)
            .await
            .expect("pop")
            .into_item()
            .is_none(),
        "extended lease expired"
    );
    let stats = backend.queue.stats(&api).await.expect("stats");
    assert_eq!((stats.queued, stats.in_flight), (0, 1));
    assert!(backend.queue.ack(&claimed.lease).await.expect("ack"));
    let gone = backend.queue.extend(&claimed.lease, LONG_LEASE).await;
    assert!(
        matches!(gone, Err(JobsError::LeaseLost { .. })),
        "extend after ack: {gone:?}"
    );
}

/// An acknowledged item never comes back, also after its lease would have expired.
pub async fn ack_removes(backend: &Backend) {
    let api = fresh_api("ack");
    submit_text(backend, &api, "p").await;
    let lease = backend
        .queue
        .pop(&api, SHORT_LEASE, Deliveries::Any)
        .await
        .expect("pop")
        .into_item()
        .expect("an item");
    assert!(backend.queue.ack(&lease).await.expect("ack"));
    assert!(
        !backend.queue.ack(&lease).await.expect("second ack"),
        "acked twice"
    );
    tokio::time::sleep(PAST_SHORT_LEASE).await;
    assert!(
        backend
            .queue
            .pop(&api, LONG_LEASE, Deliveries::Any)
            .await
            .expect("pop")
            .into_item()
            .is_none()
    );
    let stats = backend.queue.stats(&api).await.expect("stats");
    assert_eq!(
        (stats.queued, stats.in_flight, stats.oldest_queued_age),
        (0, 0, None)
    );
}

/// Concurrent finishers with different outcomes: exactly one wins and the stored state is
/// the winner's.
pub async fn exactly_one_final(backend: &Backend) {
    let api = fresh_api("one-final");
    for round in 0..3 {
        let id = WorkloadId::random();
        let record = WorkloadRecord::new(api.clone(), id.clone(), "text/plain", Timestamp::now());
        backend.states.create(&record).await.expect("create");
        if round == 1 {
            backend
                .states
                .mark_in_progress(&api, &id, Timestamp::now())
                .await
                .expect("mark");
        }
        let mut tasks = Vec::new();
        for i in 0..12 {
            let outcome = match i % 3 {
                0 => Outcome::Completed {
                    result: json(&format!("{{\"by\": {i}}}")),
                },
                1 => Outcome::Failed {
                    error: format!("by {i}"),
                },
                _ => Outcome::Cancelled,
            };
            let (states, api, id) = (backend.states.clone(), api.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                let won = states
                    .finish(&api, &id, outcome.clone(), Timestamp::now())
                    .await;
                (won.expect("finish"), outcome)
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            let (won, outcome) = task.await.expect("finisher task");
            if won {
                winners.push(outcome);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let winner = &winners[0];
        let (record, result) = backend
            .status(&api, &id)
            .await
            .expect("status")
            .expect("record");
        assert_eq!(record.status, winner.status());
        match winner {
            Outcome::Completed { result: bytes } => assert_eq!(result.as_ref(), Some(bytes)),
            Outcome::Failed { error } => assert_eq!(record.error.as_ref(), Some(error)),
            Outcome::Cancelled => assert_eq!(record.error, None),
        }
        let stored = backend.states.result(&api, &id).await.expect("result");
        assert_eq!(
            stored.is_some(),
            matches!(winner, Outcome::Completed { .. })
        );
        // Once final, mark_in_progress is a no-op.
        let after = backend
            .states
            .mark_in_progress(&api, &id, Timestamp::now())
            .await;
        assert_eq!(after.expect("mark").expect("record"), record);
    }
}

/// `complete` repeated (e.g. by a worker retrying after an error) keeps the first outcome.
pub async fn complete_is_idempotent(backend: &Backend) {
    let api = fresh_api("complete-twice");
    let id = submit_text(backend, &api, "p").await;
    let claimed = claim_now(backend, &api, LONG_LEASE).await;
    assert!(
        backend
            .complete(
                &claimed,
                Outcome::Failed {
                    error: "handler raised".into()
                }
            )
            .await
            .expect("complete")
    );
    assert!(
        !backend
            .complete(&claimed, Outcome::Completed { result: json("{}") })
            .await
            .expect("again")
    );
    let (record, result) = backend
        .status(&api, &id)
        .await
        .expect("status")
        .expect("record");
    assert_eq!(record.status, Status::Failed);
    assert_eq!(record.error.as_deref(), Some("handler raised"));
    assert_eq!(result, None);
}

/// A queued workload is cancelled and never delivered; a running one is reported and left
/// to finish.
pub async fn cancel_queued_vs_running(backend: &Backend) {
    let api = fresh_api("cancel");
    let running = submit_text(backend, &api, "run").await;
    let queued = submit_text(backend, &api, "wait").await;
    let claimed = claim_now(backend, &api, LONG_LEASE).await;
    assert_eq!(claimed.lease.id, running);

    assert_eq!(
        backend.cancel(&api, &queued).await.expect("cancel"),
        CancelResult::Cancelled
    );
    let (record, _) = backend
        .status(&api, &queued)
        .await
        .expect("status")
        .expect("record");
    assert_eq!(record.status, Status::Cancelled);
    assert!(record.finished_at.is_some());
    let payload = backend
        .blobs
        .get(&payload_key(&api, &queued))
        .await
        .expect("blob get");
    assert_eq!(payload, None, "cancel must delete the payload");
    assert_nothing_to_claim(backend, &api, LONG_LEASE, "cancelled item delivered").await;
    assert_eq!(
        backend.cancel(&api, &queued).await.expect("cancel twice"),
        CancelResult::AlreadyFinal(Status::Cancelled)
    );

    assert_eq!(
        backend.cancel(&api, &running).await.expect("cancel"),
        CancelResult::Running
    );
    let (record, _) = backend
        .status(&api, &running)
        .await
        .expect("status")
        .expect("record");
    assert_eq!(record.status, Status::InProgress);
    assert!(
        backend
            .complete(&claimed, Outcome::Completed { result: json("{}") })
            .await
            .expect("complete")
    );
    assert_eq!(
        backend.cancel(&api, &running).await.expect("cancel"),
        CancelResult::AlreadyFinal(Status::Completed)
    );
}

/// `claim` drops entries that need no work: final records (crash between finish and ack)
/// and workloads whose payload is gone (marked failed with a message).
pub async fn claim_skips_final_and_missing(backend: &Backend) {
    let api = fresh_api("skip");
    let done = submit_text(backend, &api, "done").await;
    let lost = submit_text(backend, &api, "lost").await;
    let fine = submit_text(backend, &api, "fine").await;

    // Simulate a worker that finished `done` and died before deleting the payload and acking.
    let claimed = claim_now(backend, &api, SHORT_LEASE).await;
    assert_eq!(claimed.lease.id, done);
    let result = Outcome::Completed {
        result: json("{\"ok\": true}"),
    };
    assert!(
        backend
            .states
            .finish(&api, &done, result, Timestamp::now())
            .await
            .expect("finish")
    );
    backend
        .blobs
        .delete(&payload_key(&api, &lost))
        .await
        .expect("delete payload");
    tokio::time::sleep(PAST_SHORT_LEASE).await;

    let next = claim_now(backend, &api, LONG_LEASE).await;
    assert_eq!(
        next.lease.id, fine,
        "final and payload-less workloads must be skipped"
    );
    let (record, result) = backend
        .status(&api, &done)
        .await
        .expect("status")
        .expect("record");
    assert_eq!(
        (record.status, result),
        (Status::Completed, Some(json("{\"ok\": true}")))
    );
    assert_eq!(
        backend
            .blobs
            .get(&payload_key(&api, &done))
            .await
            .expect("blob"),
        None
    );
    let (record, _) = backend
        .status(&api, &lost)
        .await
        .expect("status")
        .expect("record");
    assert_eq!(record.status, Status::Failed);
    assert!(
        record
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("payload"),
        "{record:?}"
    );
    let stats = backend.queue.stats(&api).await.expect("stats");
    assert_eq!(
        (stats.queued, stats.in_flight),
        (0, 1),
        "skipped entries must be acked"
    );
}

/// A workload whose worker keeps disappearing is failed after `max_attempts` deliveries.
pub async fn gives_up_after_max_attempts(backend: &Backend) {
    let backend = backend.clone().with_max_attempts(2);
    let api = fresh_api("give-up");
    let id = submit_text(&backend, &api, "poison").await;
    for attempt in 1..=2 {
        let claimed = claim_now(&backend, &api, SHORT_LEASE).await;
        assert_eq!(claimed.record.attempts, attempt);
        tokio::time::sleep(PAST_SHORT_LEASE).await;
    }
    assert_nothing_to_claim(&backend, &api, LONG_LEASE, "nothing should be claimable").await;
    let (record, _) = backend
        .status(&api, &id)
        .await
        .expect("status")
        .expect("record");
    assert_eq!(record.status, Status::Failed);
    assert!(
        record
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("gave up"),
        "{record:?}"
    );
    assert_eq!(
        backend
            .blobs
            .get(&payload_key(&api, &id))
            .await
            .expect("blob"),
        None
    );
    let stats = backend.queue.stats(&api).await.expect("stats");
    assert_eq!((stats.queued, stats.in_flight), (0, 0));
}

/// A caller-chosen id can be used once; the duplicate leaves the original untouched.
pub async fn duplicate_id_is_rejected(backend: &Backend) {
    let api = fresh_api("duplicate");
    let id = WorkloadId::random();
    backend
        .submit_with_id(&api, &id, "text/plain", json("first"))
        .await
        .expect("submit");
    let again = backend
        .submit_with_id(&api, &id, "application/json", json("second"))
        .await;
    assert!(
        matches!(again, Err(JobsError::AlreadyExists { .. })),
        "{again:?}"
    );
    let record = WorkloadRecord::new(api.clone(), id.clone(), "text/plain", Timestamp::now());
    let created = backend.states.create(&record).await;
    assert!(
        matches!(created, Err(JobsError::AlreadyExists { .. })),
        "{created:?}"
    );
    let claimed = claim_now(backend, &api, LONG_LEASE).await;
    assert_eq!(
        (claimed.payload, claimed.content_type.as_str()),
        (json("first"), "text/plain")
    );
    assert_nothing_to_claim(backend, &api, LONG_LEASE, "nothing should be claimable").await;
}

/// Queue depth and per-status counts follow the workloads.
pub async fn stats_and_counts(backend: &Backend) {
    let api = fresh_api("stats");
    let other = fresh_api("stats-other");
    let empty = backend.queue.stats(&api).await.expect("stats");
    assert_eq!(
        (empty.queued, empty.in_flight, empty.oldest_queued_age),
        (0, 0, None)
    );
    assert_eq!(
        backend.states.counts(&api).await.expect("counts").total(),
        0
    );

    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(submit_text(backend, &api, &format!("{i}")).await);
    }
    submit_text(backend, &other, "x").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let first = claim_now(backend, &api, LONG_LEASE).await;
    let second = claim_now(backend, &api, LONG_LEASE).await;
    let third = claim_now(backend, &api, LONG_LEASE).await;
    backend
        .complete(&first, Outcome::Completed { result: json("{}") })
        .await
        .expect("complete");
    backend
        .complete(&second, Outcome::Failed { error: "e".into() })
        .await
        .expect("complete");
    assert_eq!(
        backend.cancel(&api, &ids[4]).await.expect("cancel"),
        CancelResult::Cancelled
    );

    let stats = backend.queue.stats(&api).await.expect("stats");
    assert_eq!((stats.queued, stats.in_flight), (1, 1), "{stats:?}");
    let age = stats.oldest_queued_age.expect("an item is queued");
    assert!(
        age >= Duration::from_millis(10) && age < Duration::from_secs(60),
        "age {age:?}"
    );
    let counts = backend.states.counts(&api).await.expect("counts");
    assert_eq!(
        (
            counts.in_queue,
            counts.in_progress,
            counts.completed,
            counts.failed,
            counts.cancelled
        ),
        (1, 1, 1, 1, 1),
        "{counts:?}"
    );
    assert_eq!(counts.get(Status::InProgress), 1);
    backend
        .complete(&third, Outcome::Completed { result: json("{}") })
        .await
        .expect("complete");
    let counts = backend.states.counts(&api).await.expect("counts");
    assert_eq!(
        (counts.in_progress, counts.completed, counts.total()),
        (0, 2, 5)
    );
    let other_counts = backend.states.counts(&other).await.expect("counts");
    assert_eq!((other_counts.in_queue, other_counts.total()), (1, 1));
}

/// Blob basics: overwrite, content type, idempotent delete.
pub async fn blobs_put_get_delete(backend: &Backend) {
    let key = payload_key(&fresh_api("blobs"), &WorkloadId::random());
    assert_eq!(backend.blobs.get(&key).await.expect("get"), None);
    backend
        .blobs
        .put(&key, json("one"), "text/plain")
        .await
        .expect("put");
    backend
        .blobs
        .put(
            &key,
            Bytes::from_static(&[0, 255, 7]),
            "application/octet-stream",
        )
        .await
        .expect("put");
    let stored = backend.blobs.get(&key).await.expect("get");
    assert_eq!(
        stored,
        Some((
            Bytes::from_static(&[0, 255, 7]),
            "application/octet-stream".into()
        ))
    );
    backend.blobs.delete(&key).await.expect("delete");
    backend.blobs.delete(&key).await.expect("delete absent");
    assert_eq!(backend.blobs.get(&key).await.expect("get"), None);
}

/// `expire` removes final records finished before the cutoff, with results and leftover
/// payloads, and keeps everything else.
pub async fn expire_removes_records_and_payloads(backend: &Backend) {
    let api = fresh_api("expire");
    let completed = submit_text(backend, &api, "a").await;
    let failed = submit_text(backend, &api, "b").await;
    let queued = submit_text(backend, &api, "c").await;
    let claimed = claim_now(backend, &api, LONG_LEASE).await;
    backend
        .complete(&claimed, Outcome::Completed { result: json("{}") })
        .await
        .expect("complete");
    // Finished directly, as if the worker died before deleting the payload.
    let outcome = Outcome::Failed { error: "e".into() };
    assert!(
        backend
            .states
            .finish(&api, &failed, outcome, Timestamp::now())
            .await
            .expect("finish")
    );
    tokio::time::sleep(Duration::from_millis(20)).await;

    let none = backend
        .expire(Duration::from_secs(3600))
        .await
        .expect("expire");
    let ours: Vec<_> = none.iter().filter(|(a, _)| a == &api).collect();
    assert!(ours.is_empty(), "expired too early: {ours:?}");

    let expired = backend.expire(Duration::ZERO).await.expect("expire");
    let ours: HashSet<_> = expired
        .iter()
        .filter(|(a, _)| a == &api)
        .map(|(_, id)| id.clone())
        .collect();
    assert_eq!(ours, HashSet::from([completed.clone(), failed.clone()]));
    for id in [&completed, &failed] {
        assert!(backend.status(&api, id).await.expect("status").is_none());
        assert!(
            backend
                .states
                .result(&api, id)
                .await
                .expect("result")
                .is_none()
        );
        assert_eq!(
            backend
                .blobs
                .get(&payload_key(&api, id))
                .await
                .expect("blob"),
            None
        );
    }
    let (record, _) = backend
        .status(&api, &queued)
        .await
        .expect("status")
        .expect("queued kept");
    assert_eq!(record.status, Status::InQueue);
    let counts = backend.states.counts(&api).await.expect("counts");
    assert_eq!(
        (counts.completed, counts.failed, counts.in_queue),
        (0, 0, 1)
    );
    let again = backend
        .states
        .expire(SystemTime::now())
        .await
        .expect("expire");
    assert!(
        again.iter().all(|(a, _)| a != &api),
        "expired twice: {again:?}"
    );
}
