//! The Redis + S3 backend against a real `redis-server` and `moto_server`: the shared
//! conformance suite, fail-fast start-up checks, and outages of Redis and S3.

use std::time::Duration;

use soma_core::ErrorKind;
use soma_jobs::{ApiName, Backend, RedactedUrl, RemoteConfig, Status, conformance, connect_remote};
use soma_testkit::{MotoServer, RedisServer};

const BUCKET: &str = "soma-jobs";

fn config(redis: &RedisServer, moto: &MotoServer, bucket: &str) -> RemoteConfig {
    RemoteConfig {
        redis_url: RedactedUrl::parse_redis(&redis.url()).expect("redis url"),
        redis_key_prefix: "test".into(),
        bucket: bucket.into(),
        s3_prefix: "some/prefix".into(),
        s3_endpoint: Some(moto.endpoint()),
        s3_region: Some("us-east-1".into()),
        s3_credentials: Some(("test".into(), "test".into())),
        inline_payload_limit: soma_jobs::DEFAULT_INLINE_LIMIT,
    }
}

async fn servers() -> (RedisServer, MotoServer, Backend) {
    let (redis, moto) = tokio::task::spawn_blocking(|| (RedisServer::start(), MotoServer::start()))
        .await
        .expect("start servers");
    moto.create_bucket(BUCKET);
    let backend = connect_remote(&config(&redis, &moto, BUCKET))
        .await
        .expect("connect to redis + s3");
    (redis, moto, backend)
}

/// Every conformance case, in turn, on one shared Redis + S3 store (small payloads in Redis).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_redis_and_s3() {
    let (_redis, _moto, backend) = servers().await;
    conformance::run_all(&backend).await;
}

/// The same with every payload in S3 (`inline_payload_bytes: 0`, Cortex's layout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_with_every_payload_in_s3() {
    let (redis, moto) = tokio::task::spawn_blocking(|| (RedisServer::start(), MotoServer::start()))
        .await
        .expect("start servers");
    moto.create_bucket(BUCKET);
    let config = RemoteConfig {
        inline_payload_limit: 0,
        ..config(&redis, &moto, BUCKET)
    };
    let backend = connect_remote(&config).await.expect("connect");
    conformance::run_all(&backend).await;
}

/// Small payloads never touch S3; large ones are S3 objects in Cortex's layout, removed with
/// their workload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_payloads_stay_in_redis_and_large_ones_go_to_s3() {
    let (_redis, moto, backend) = servers().await;
    let api = ApiName::parse("tiers").unwrap();
    let small = backend
        .submit(&api, "application/json", bytes::Bytes::from_static(b"{}"))
        .await
        .unwrap();
    let large_body = bytes::Bytes::from(vec![b'x'; soma_jobs::DEFAULT_INLINE_LIMIT + 1]);
    let large = backend
        .submit(&api, "application/octet-stream", large_body.clone())
        .await
        .unwrap();
    let objects = moto.list_keys(BUCKET);
    let object = format!("some/prefix/workloads/tiers/{large}/payload");
    assert_eq!(
        objects,
        vec![object.clone()],
        "only the large payload is in S3"
    );
    assert!(!objects.iter().any(|k| k.contains(small.as_str())));
    let mut claimed = Vec::new();
    while let Some(c) = backend.claim(&api, Duration::from_secs(30)).await.unwrap() {
        claimed.push(c);
    }
    let big = claimed
        .iter()
        .find(|c| c.lease.id == large)
        .expect("large claimed");
    assert_eq!(big.payload, large_body);
    assert_eq!(big.content_type, "application/octet-stream");
    for c in &claimed {
        let done = soma_jobs::Outcome::Completed {
            result: bytes::Bytes::from_static(b"{}"),
        };
        backend.complete(c, done).await.unwrap();
    }
    assert!(
        moto.list_keys(BUCKET).is_empty(),
        "the payload object is deleted on completion"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_fails_fast_on_missing_bucket_or_redis() {
    let (redis, moto) = tokio::task::spawn_blocking(|| (RedisServer::start(), MotoServer::start()))
        .await
        .expect("start servers");
    let err = connect_remote(&config(&redis, &moto, "no-such-bucket"))
        .await
        .expect_err("missing bucket must fail");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.to_string().contains("no-such-bucket"), "{err}");

    let mut down = config(&redis, &moto, BUCKET);
    let port = soma_testkit::free_port();
    down.redis_url = RedactedUrl::parse_redis(&format!("redis://:pw@127.0.0.1:{port}")).unwrap();
    let started = std::time::Instant::now();
    let err = connect_remote(&down).await.expect_err("no redis must fail");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "not fast: {:?}",
        started.elapsed()
    );
    let message = err.to_string();
    assert!(message.contains(&port.to_string()), "{message}");
    assert!(!message.contains(":pw@"), "password leaked: {message}");
}

/// A Redis Cluster node or a read-only replica is refused at start-up with what to give
/// instead (they would fail every script, or every write, later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_refuses_a_cluster_node_or_a_replica_and_warns_of_risky_settings() {
    let (primary, moto) =
        tokio::task::spawn_blocking(|| (RedisServer::start(), MotoServer::start()))
            .await
            .expect("start servers");
    moto.create_bucket(BUCKET);
    let primary_port = primary.port().to_string();
    let (replica, cluster) = tokio::task::spawn_blocking(move || {
        let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &primary_port]);
        let cluster = RedisServer::start_with(&[
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
        ]);
        (replica, cluster)
    })
    .await
    .expect("start servers");
    connect_remote(&config(&primary, &moto, BUCKET))
        .await
        .expect("the primary is accepted");
    // Settings that may lose workloads are warned about (in the log), not refused.
    let risky = tokio::task::spawn_blocking(|| {
        RedisServer::start_with(&["--appendonly", "no", "--maxmemory-policy", "allkeys-lru"])
    })
    .await
    .expect("start server");
    connect_remote(&config(&risky, &moto, BUCKET))
        .await
        .expect("a server without an append-only file is accepted");
    for (server, expected) in [
        (
            &replica,
            "read-only replica (role:slave); give the URL of its primary",
        ),
        (&cluster, "it is a Redis Cluster node (cluster_enabled:1)"),
    ] {
        let err = connect_remote(&config(server, &moto, BUCKET))
            .await
            .expect_err("must be refused");
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
        let message = err.to_string();
        assert!(message.contains(expected), "{message}");
        assert!(message.contains(&server.port().to_string()), "{message}");
    }
}

/// While Redis is down calls fail as `Unavailable`; after a restart (append-only file on)
/// the same client works again and nothing accepted before the outage is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_is_unavailable_then_recovers() {
    let (mut redis, _moto, backend) = servers().await;
    let api = ApiName::parse("outage").unwrap();
    let before = backend
        .submit(&api, "application/json", "{}".into())
        .await
        .expect("submit");

    redis.stop();
    let err = backend
        .submit(&api, "application/json", "{}".into())
        .await
        .expect_err("submit while redis is down");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let err = backend
        .status(&api, &before)
        .await
        .expect_err("status while down");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");

    tokio::task::block_in_place(|| redis.restart());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let record = loop {
        match backend.status(&api, &before).await {
            Ok(found) => break found,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "no recovery: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let (record, _) = record.expect("workload accepted before the outage survived");
    assert_eq!(record.status, Status::InQueue);
    let claimed = backend
        .claim(&api, Duration::from_secs(30))
        .await
        .expect("claim after recovery")
        .expect("the queued workload");
    assert_eq!(claimed.lease.id, before);
}

/// An S3 that accepts connections and never answers (hung, or black-holed by the network)
/// fails a submission whose payload goes there with Unavailable within seconds, as a Redis
/// outage does (it took object_store's 180 s of retries), and the backend recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_s3_is_unavailable_within_seconds() {
    let (_redis, moto, backend) = servers().await;
    let api = ApiName::parse("hung").unwrap();
    let large = vec![b'x'; soma_jobs::DEFAULT_INLINE_LIMIT + 1];
    moto.freeze(true);
    let started = std::time::Instant::now();
    let err = backend
        .submit(&api, "application/octet-stream", large.clone().into())
        .await
        .expect_err("submit while S3 hangs");
    let waited = started.elapsed();
    moto.freeze(false);
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(waited < Duration::from_secs(30), "waited {waited:?}: {err}");
    backend
        .submit(&api, "application/octet-stream", large.into())
        .await
        .expect("submit once S3 answers again");
}
