//! `soma get` and `soma delete`: operations over the HTTP endpoints of running processes.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::http_client::{Reply, request};

/// Where the gateway lists its APIs (`soma_gateway::APIS_PATH`; the CLI does not link the
/// gateway crate).
const APIS_PATH: &str = "/_soma/apis";

#[derive(Debug, clap::Args)]
pub(crate) struct GetArgs {
    /// An API name: with an id, shows that workload; alone, limits the summary to the API.
    api: Option<String>,
    /// A workload id.
    id: Option<String>,
    /// A gateway (or `soma serve`) URL first, then optionally worker URLs whose /metrics add
    /// to the worker and latency columns. Repeatable or comma-separated.
    #[arg(
        long,
        env = "SOMA_URL",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8888"
    )]
    url: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct DeleteArgs {
    api: String,
    id: String,
    /// The gateway (or `soma serve`) URL.
    #[arg(long, env = "SOMA_URL", default_value = "http://127.0.0.1:8888")]
    url: String,
}

pub(crate) fn get(args: GetArgs) -> anyhow::Result<ExitCode> {
    let gateway = args.url.first().context("no --url given")?;
    let apis = list_apis(gateway)?;
    if let (Some(api), Some(id)) = (&args.api, &args.id) {
        let endpoint = endpoint_of(&apis, api)?;
        return print_reply(request(gateway, "GET", &format!("{endpoint}/{id}"))?);
    }
    let mut metrics = Vec::new();
    for url in &args.url {
        metrics.extend(parse_metrics(&request(url, "GET", "/metrics")?.body));
    }
    println!("{}", table_row(HEADINGS));
    for api in &apis {
        let name = api["api"].as_str().unwrap_or("");
        if args.api.as_deref().is_some_and(|wanted| wanted != name) {
            continue;
        }
        let workers = sum(&metrics, "soma_async_worker_slots", name, None)
            .map_or_else(|| "-".to_string(), |w| w.to_string());
        let p50 = p50(&metrics, name).map_or_else(|| "-".to_string(), |s| format!("{s:.3}s"));
        let state = api["state"].as_str().unwrap_or("");
        let state = state.split(':').next().unwrap_or(state);
        // JSON numbers as text: `Value`'s Display ignores the column widths.
        let count = |value: &Value| value.to_string();
        println!(
            "{}",
            table_row([
                name,
                state,
                &workers,
                &count(&api["queued"]),
                &count(&api["in_flight"]),
                &count(&api["counts"]["completed"]),
                &count(&api["counts"]["failed"]),
                &count(&api["counts"]["cancelled"]),
                &p50,
            ])
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The columns of `soma get`'s table.
const HEADINGS: [&str; 9] = [
    "API",
    "STATE",
    "WORKERS",
    "QUEUED",
    "IN_FLIGHT",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "P50",
];

/// One line of `soma get`'s table: names left-aligned, numbers right-aligned under their
/// headings.
fn table_row(cells: [&str; 9]) -> String {
    let [
        api,
        state,
        workers,
        queued,
        in_flight,
        completed,
        failed,
        cancelled,
        p50,
    ] = cells;
    format!(
        "{api:<24} {state:<9} {workers:>7} {queued:>7} {in_flight:>9} {completed:>9} \
         {failed:>6} {cancelled:>9} {p50:>8}"
    )
}

pub(crate) fn delete(args: DeleteArgs) -> anyhow::Result<ExitCode> {
    let apis = list_apis(&args.url)?;
    let endpoint = endpoint_of(&apis, &args.api)?;
    print_reply(request(
        &args.url,
        "DELETE",
        &format!("{endpoint}/{}", args.id),
    )?)
}

fn list_apis(url: &str) -> anyhow::Result<Vec<Value>> {
    let reply = request(url, "GET", APIS_PATH)?;
    if reply.status != 200 {
        bail!("{url}{APIS_PATH}: HTTP {}: {}", reply.status, reply.body);
    }
    let value: Value = serde_json::from_str(&reply.body).context("invalid JSON from soma")?;
    Ok(value["apis"].as_array().cloned().unwrap_or_default())
}

fn endpoint_of<'a>(apis: &'a [Value], api: &str) -> anyhow::Result<&'a str> {
    apis.iter()
        .find(|a| a["api"] == api)
        .and_then(|a| a["endpoint"].as_str())
        .with_context(|| {
            let known: Vec<_> = apis.iter().filter_map(|a| a["api"].as_str()).collect();
            format!("no API named {api:?} (APIs: {})", known.join(", "))
        })
}

/// Prints the JSON answer; a non-2xx answer is an error exit with its message.
fn print_reply(reply: Reply) -> anyhow::Result<ExitCode> {
    let pretty = serde_json::from_str::<Value>(&reply.body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or(reply.body);
    if (200..300).contains(&reply.status) {
        println!("{pretty}");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: HTTP {}: {pretty}", reply.status);
        Ok(ExitCode::FAILURE)
    }
}

/// One sample of the Prometheus text format.
#[derive(Debug)]
struct Metric {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse_metrics(text: &str) -> Vec<Metric> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    Some((k.to_string(), v.trim_matches('"').to_string()))
                })
                .collect();
            Some(Metric {
                name: name.to_string(),
                labels,
                value,
            })
        })
        .collect()
}

fn label_is(metric: &Metric, key: &str, value: &str) -> bool {
    metric.labels.get(key).is_some_and(|v| v == value)
}

/// Sum of `name` for `api` over every process (for histogram buckets: completed ones at `le`).
fn sum(metrics: &[Metric], name: &str, api: &str, le: Option<&str>) -> Option<f64> {
    let matching: Vec<f64> = metrics
        .iter()
        .filter(|m| m.name == name && label_is(m, "api_name", api))
        .filter(|m| le.is_none_or(|le| label_is(m, "le", le) && label_is(m, "status", "completed")))
        .map(|m| m.value)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

/// The median processing time of completed workloads, from every process's histogram,
/// interpolated within its bucket like Prometheus' `histogram_quantile`.
fn p50(metrics: &[Metric], api: &str) -> Option<f64> {
    let name = "soma_async_processing_seconds_bucket";
    let mut bounds: Vec<(f64, String)> = metrics
        .iter()
        .filter(|m| m.name == name && label_is(m, "api_name", api))
        .filter_map(|m| {
            let le = m.labels.get("le")?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, le.clone()))
        })
        .collect();
    bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    bounds.dedup_by(|a, b| a.1 == b.1);
    let cumulative: Vec<(f64, f64)> = bounds
        .iter()
        .map(|(bound, le)| (*bound, sum(metrics, name, api, Some(le)).unwrap_or(0.0)))
        .collect();
    let total = cumulative.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = total / 2.0;
    let mut previous = (0.0, 0.0);
    for (bound, count) in cumulative {
        if count >= rank {
            if bound.is_infinite() {
                return Some(previous.0);
            }
            let in_bucket = count - previous.1;
            let fraction = if in_bucket > 0.0 {
                (rank - previous.1) / in_bucket
            } else {
                1.0
            };
            return Some(previous.0 + (bound - previous.0) * fraction);
        }
        previous = (bound, count);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_columns_line_up() {
        let header = table_row(HEADINGS);
        let row = table_row(["iris", "ready", "1", "0", "0", "12", "3", "0", "0.001s"]);
        assert_eq!(header.len(), row.len(), "{header}\n{row}");
        // Right-aligned: each number ends where its heading does.
        for heading in ["QUEUED", "COMPLETED", "P50"] {
            let end = header.find(heading).unwrap() + heading.len();
            assert_ne!(row.as_bytes()[end - 1], b' ', "{heading}:\n{header}\n{row}");
        }
    }

    #[test]
    fn p50_sums_processes_and_interpolates() {
        let text = "# TYPE soma_async_processing_seconds histogram\n\
            soma_async_processing_seconds_bucket{api_name=\"echo\",status=\"completed\",le=\"0.01\"} 2\n\
            soma_async_processing_seconds_bucket{api_name=\"echo\",status=\"completed\",le=\"0.1\"} 4\n\
            soma_async_processing_seconds_bucket{api_name=\"echo\",status=\"completed\",le=\"+Inf\"} 4\n\
            soma_async_processing_seconds_bucket{api_name=\"echo\",status=\"failed\",le=\"0.01\"} 100\n\
            soma_async_worker_slots{api_name=\"echo\"} 2\n";
        let mut metrics = parse_metrics(text);
        metrics.extend(parse_metrics(text));
        // 8 completed over two processes: 4 within 10 ms, all 8 within 100 ms; the median
        // (rank 4) is the 10 ms bound. Failed workloads do not count.
        let p = p50(&metrics, "echo").unwrap();
        assert!((p - 0.01).abs() < 1e-9, "{p}");
        assert_eq!(
            sum(&metrics, "soma_async_worker_slots", "echo", None),
            Some(4.0)
        );
        assert_eq!(p50(&metrics, "other"), None);
    }
}
