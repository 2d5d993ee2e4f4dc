//! `--rest_api_num_threads`: requests beyond the limit wait for a running one to finish,
//! and one that cannot start within the request timeout gets TF Serving's 504.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use soma_core::runner::{ModelRunner, RunError};
use soma_core::{SignatureDef, Tensor};
use soma_rest::{RestOptions, router};
use soma_runtime::{ConcurrencyLimit, ModelHub, ModelSet, Servable, StaticHub};
use soma_testkit::{http, vector_signatures};

const RUN_TIME: Duration = Duration::from_millis(300);

/// Echoes its input after blocking the calling thread for RUN_TIME, like a TensorFlow run.
#[derive(Debug)]
struct SlowEcho(BTreeMap<String, SignatureDef>);

impl ModelRunner for SlowEcho {
    fn signatures(&self) -> &BTreeMap<String, SignatureDef> {
        &self.0
    }

    fn run(&self, _signature: &str, inputs: &[&Tensor]) -> Result<Vec<Tensor>, RunError> {
        std::thread::sleep(RUN_TIME);
        Ok(vec![inputs[0].clone()])
    }
}

async fn serve(options: RestOptions) -> String {
    let runner = SlowEcho(vector_signatures());
    let set = Arc::new(ModelSet::new("slow", false));
    set.insert(Arc::new(
        Servable::new("slow", 1, Box::new(runner), None).unwrap(),
    ));
    let hub: Arc<dyn ModelHub> = Arc::new(StaticHub::new(set));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let app = router(hub, options);
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Sends `n` predictions at once; their status codes and how long they all took.
async fn predict_at_once(addr: &str, n: usize) -> (Vec<u16>, Duration) {
    let started = Instant::now();
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let addr = addr.to_string();
            tokio::task::spawn_blocking(move || {
                let body = format!(r#"{{"instances": [{i}]}}"#);
                let path = "/v1/models/slow:predict";
                http(&addr, "POST", path, &[], body.as_bytes()).unwrap()
            })
        })
        .collect();
    let mut codes = Vec::new();
    for call in calls {
        codes.push(call.await.unwrap().status);
    }
    codes.sort();
    (codes, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_limit_wait_within_their_timeout() {
    let addr = serve(RestOptions::default()).await;
    let (codes, took) = predict_at_once(&addr, 4).await;
    assert_eq!(codes, [200; 4]);
    assert!(
        took < RUN_TIME * 2,
        "without a limit they run together: {took:?}"
    );

    let limited = RestOptions {
        max_concurrent: Some(ConcurrencyLimit::new(2)),
        ..RestOptions::default()
    };
    let addr = serve(limited).await;
    let (codes, took) = predict_at_once(&addr, 4).await;
    assert_eq!(codes, [200; 4]);
    assert!(
        took >= RUN_TIME * 2 && took < RUN_TIME * 4,
        "4 predictions of {RUN_TIME:?} with 2 permits took {took:?}"
    );

    // One permit and a timeout of 1.5 runs: the first request answers, the second starts
    // after it and runs past its deadline, the third times out waiting for the permit.
    let strict = RestOptions {
        max_concurrent: Some(ConcurrencyLimit::new(1)),
        timeout: RUN_TIME * 3 / 2,
        ..RestOptions::default()
    };
    let addr = serve(strict).await;
    let (codes, took) = predict_at_once(&addr, 3).await;
    assert_eq!(codes, [200, 504, 504], "{codes:?}");
    assert!(
        took < RUN_TIME * 2,
        "both 504s come at the deadline: {took:?}"
    );
}
