//! `soma-bench async <host:port> <endpoint> <payload.json> [workloads] [concurrency]`:
//! end-to-end numbers of a running `soma serve`:
//!
//! * light load: one workload at a time, submit → poll (every 0.2 ms) → completed; p50/p99;
//! * sustained: `workloads` submitted by `concurrency` clients as fast as they can, and polled
//!   (every 2 ms until `completed`) by one more client that follows them in submission order;
//!   throughput from the first submit to the last completion it sees.
//!
//! Every client keeps one HTTP/1.1 connection open, as HTTP client libraries do.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;
use soma_testkit::HttpConnection;

pub(crate) fn run(
    addr: &str,
    endpoint: &str,
    payload: &[u8],
    workloads: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let mut connection = HttpConnection::connect(addr)?;
    let light: Vec<Duration> = (0..300)
        .map(|_| {
            let started = Instant::now();
            let id = submit(&mut connection, endpoint, payload)?;
            wait_completed(&mut connection, endpoint, &id, Duration::from_micros(200))?;
            Ok(started.elapsed())
        })
        .collect::<anyhow::Result<_>>()?;
    let (p50, p99) = percentiles(light);
    println!(
        "light load (1 at a time, 300 workloads): p50 {:.2} ms, p99 {:.2} ms submit→completed",
        ms(p50),
        ms(p99)
    );

    // Submitters hand each id to one poller as they get it; the poller follows them in
    // submission order, as a client waiting for its results would, so the run ends at the last
    // completion rather than after a walk over every id once submitting is over (which left the
    // server idle for the walk's length).
    let (submitted_ids, to_poll) = std::sync::mpsc::channel::<String>();
    let started = Instant::now();
    let per_client = workloads / concurrency;
    let (submitted, polled) = std::thread::scope(|scope| {
        let poller = scope.spawn(move || -> anyhow::Result<usize> {
            let mut connection = HttpConnection::connect(addr)?;
            let mut polled = 0;
            for id in to_poll {
                wait_completed(&mut connection, endpoint, &id, Duration::from_millis(2))?;
                polled += 1;
            }
            Ok(polled)
        });
        let clients: Vec<_> = (0..concurrency)
            .map(|_| {
                let submitted_ids = submitted_ids.clone();
                scope.spawn(move || -> anyhow::Result<()> {
                    let mut connection = HttpConnection::connect(addr)?;
                    for _ in 0..per_client {
                        let id = submit(&mut connection, endpoint, payload)?;
                        submitted_ids.send(id).context("poller stopped")?;
                    }
                    Ok(())
                })
            })
            .collect();
        drop(submitted_ids);
        let submitting = clients
            .into_iter()
            .try_for_each(|client| client.join().expect("client thread"));
        let submitted = started.elapsed();
        // The poller's error first: a failed workload also stops the submitters, whose own
        // error then only says that the poller stopped.
        let polled = poller.join().expect("poller thread")?;
        submitting?;
        anyhow::Ok((submitted, polled))
    })?;
    let total = started.elapsed();
    println!(
        "sustained ({} workloads, {concurrency} submitting clients): submitted in {:.2} s ({:.0}/s), all completed in {:.2} s: {:.0} workloads/s",
        polled,
        submitted.as_secs_f64(),
        polled as f64 / submitted.as_secs_f64(),
        total.as_secs_f64(),
        polled as f64 / total.as_secs_f64()
    );
    Ok(())
}

fn submit(
    connection: &mut HttpConnection,
    endpoint: &str,
    payload: &[u8],
) -> anyhow::Result<String> {
    let response = connection.request(
        "POST",
        endpoint,
        &[("Content-Type", "application/json")],
        payload,
    )?;
    if response.status != 200 {
        bail!("submit: HTTP {} {}", response.status, response.text());
    }
    let value: Value = serde_json::from_slice(&response.body)?;
    value["id"].as_str().map(str::to_string).context("no id")
}

fn wait_completed(
    connection: &mut HttpConnection,
    endpoint: &str,
    id: &str,
    poll: Duration,
) -> anyhow::Result<()> {
    let path = format!("{endpoint}/{id}");
    loop {
        let response = connection.request("GET", &path, &[], b"")?;
        let value: Value = serde_json::from_slice(&response.body)?;
        match value["status"].as_str() {
            Some("completed") => return Ok(()),
            Some("failed") => bail!("workload failed: {value}"),
            _ => std::thread::sleep(poll),
        }
    }
}

pub(crate) fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
    )
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
